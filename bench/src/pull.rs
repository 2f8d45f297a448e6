//! `cargo xtask bench pull`: the release `agent pull` of a 3-layer image from a real
//! registry (Debian's docker-registry on 127.0.0.1, TLS and htpasswd auth, as in
//! `tests/registry_pull.rs`), side by side with `skopeo copy` of the same image to
//! an OCI layout. Each run starts from an empty store / layout, so every layer is
//! downloaded; the agent also unpacks every layer (skopeo only stores the blobs).
//! Runs are interleaved so machine noise hits both alike; prints the medians and
//! the ratio (the target is 1.0 or less).

use agent_test_support::launch::{self, Layer, add_dir, add_file, layer};
use agent_test_support::registry::{self, Registry};
use anyhow::{Context, bail};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 9;

fn run_quiet(cmd: &mut Command, what: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {what}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// Text-like bytes: random words and numbers, which gzip takes to about half
/// (real binaries and libraries compress a little better, 2.3-2.7:1, and cost
/// inflate about as much per byte).
fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "container",
        "layer",
        "overlay",
        "registry",
        "manifest",
        "digest",
        "cgroup",
        "namespace",
        "mount",
        "exec",
        "agent",
        "metric",
        "\n",
    ];
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
        out.push(if x & 0x100 == 0 { b' ' } else { b'_' });
        out.extend_from_slice(format!("{:x}", x & 0xfff).as_bytes());
    }
    out.truncate(len);
    out
}

/// Three layers: busybox, 24 MiB of text files in one, 16 MiB in the other.
fn layers() -> Vec<Layer> {
    let files = |dir: &'static str, count: usize, size: usize, seed: u64| {
        layer(move |b| {
            add_dir(b, dir, 0o755);
            for i in 0..count {
                add_file(
                    b,
                    &format!("{dir}/f{i}"),
                    0o644,
                    &text(size, seed + i as u64),
                );
            }
        })
    };
    vec![
        launch::base_layer(),
        files("usr", 96, 256 << 10, 1),
        files("opt", 16, 1 << 20, 1000),
    ]
}

pub fn run() -> anyhow::Result<()> {
    let agent = crate::agent_binary()?;
    if let Some(reason) = registry::skip_reason() {
        bail!("{reason}");
    }
    let reg = Registry::start().context("starting docker-registry")?;
    let work = tempfile::Builder::new()
        .prefix("agent-bench-pull")
        .tempdir()?;
    let layout = work.path().join("src-oci");
    let layers = layers();
    let refs: Vec<&Layer> = layers.iter().collect();
    launch::build_oci(&layout, &refs, None, "latest");
    reg.push(
        &format!("oci:{}:latest", layout.display()),
        "bench/three:1",
        &[],
    );
    let reference = reg.reference("bench/three:1");
    let manifest = reg.raw_manifest("bench/three:1");
    let blob_bytes: i64 = manifest["layers"]
        .as_array()
        .map(|l| l.iter().filter_map(|d| d["size"].as_i64()).sum())
        .unwrap_or(0);
    let unpacked: usize = layers.iter().map(|l| l.tar.len()).sum();
    println!(
        "pull: {reference}: 3 layers, {:.1} MiB of gzip blobs, {:.1} MiB unpacked; {RUNS} runs each, interleaved",
        blob_bytes as f64 / (1 << 20) as f64,
        unpacked as f64 / (1 << 20) as f64
    );

    if std::env::var_os("AGENT_BENCH_PULL_HOLD").is_some() {
        // For profiling one pull: the registry stays up until stdin closes.
        println!(
            "pull: registry up; try:\n  {} pull {} --state-dir {}/state-x {reference}\n  skopeo copy --quiet --src-creds '{}:{}' --src-cert-dir {} docker://{reference} oci:{}/copy-x:latest\nclose stdin to stop",
            agent.display(),
            reg.pull_flags().join(" "),
            work.path().display(),
            registry::USER,
            registry::PASSWORD,
            reg.cert_dir.display(),
            work.path().display(),
        );
        std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
        return Ok(());
    }
    let pull = |n: usize| -> anyhow::Result<Duration> {
        let state = work.path().join(format!("state-{n}"));
        let took = run_quiet(
            Command::new(&agent)
                .arg("pull")
                .args(reg.pull_flags())
                .arg("--state-dir")
                .arg(&state)
                .arg(&reference),
            "agent pull",
        );
        std::fs::remove_dir_all(&state).ok();
        took
    };
    let copy = |n: usize| -> anyhow::Result<Duration> {
        let dest = work.path().join(format!("copy-{n}"));
        let took = run_quiet(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--src-creds"])
                .arg(format!("{}:{}", registry::USER, registry::PASSWORD))
                .arg("--src-cert-dir")
                .arg(&reg.cert_dir)
                .arg(format!("docker://{reference}"))
                .arg(format!("oci:{}:latest", dest.display())),
            "skopeo copy",
        );
        std::fs::remove_dir_all(&dest).ok();
        took
    };
    // One of each first, not counted: the page cache and the registry warm up.
    pull(0)?;
    copy(0)?;
    let (mut agent_runs, mut skopeo_runs) = (Vec::new(), Vec::new());
    // CPU seconds: [agent, skopeo, the registry serving the agent, serving skopeo].
    let mut cpu = [0.0f64; 4];
    let registry_cpu = || crate::scrape::cpu_seconds(reg.pid()).unwrap_or(0.0);
    for n in 1..=RUNS {
        let (tool, served) = (crate::fs_usage::children_cpu(), registry_cpu());
        agent_runs.push(pull(n)?);
        let (tool2, served2) = (crate::fs_usage::children_cpu(), registry_cpu());
        skopeo_runs.push(copy(n)?);
        cpu[0] += tool2 - tool;
        cpu[2] += served2 - served;
        cpu[1] += crate::fs_usage::children_cpu() - tool2;
        cpu[3] += registry_cpu() - served2;
    }
    let ms = cpu.map(|s| s * 1e3 / RUNS as f64);
    // Both tools and the registry share the host's cores, so a pull's time is
    // bounded below by the CPU all of them spend on it.
    println!(
        "pull: CPU per pull (means): agent {:.0} ms, skopeo {:.0} ms; the registry serving them {:.0} and {:.0} ms; {} cores",
        ms[0],
        ms[1],
        ms[2],
        ms[3],
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let a = median(&mut agent_runs);
    let s = median(&mut skopeo_runs);
    println!(
        "pull: agent pull {:.1} ms, skopeo copy to an OCI layout {:.1} ms (medians); ratio {:.2} (target <= 1.0)",
        a.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        a.as_secs_f64() / s.as_secs_f64()
    );
    Ok(())
}
