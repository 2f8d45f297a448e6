//! `cargo xtask soak` (`agent-bench soak [CYCLES]`): launch/rm cycles of the
//! release agent while a real Prometheus scrapes a running `agent serve` every
//! second. Reports how the server's RSS and descriptors, the host's mounts and
//! the agent's cgroups, and the state's container and layer entries grew from
//! start to end (expected: not at all), and the scrape duration's p99 as
//! Prometheus measured it.
//!
//! Every tenth cycle is `launch -d` then `rm -f`; the others are a foreground
//! `launch --rm`. Needs root.

use agent_test_support::prometheus::{Config, Prometheus, value_of};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What is counted at the start and at the end.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    rss_kib: u64,
    fds: usize,
    mounts: usize,
    cgroups: usize,
    containers: usize,
    layers: usize,
}

/// `agent serve` as a child; killed on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn count_dir(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

fn snapshot(serve_pid: u32, state: &Path) -> anyhow::Result<Snapshot> {
    let status = std::fs::read_to_string(format!("/proc/{serve_pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")?;
    let h = agent::cgroup::Hierarchy::detect_host()?;
    let cgroups = h
        .controller_dirs(&format!("/{}", agent::cgroup::AGENT_SUBTREE))
        .iter()
        .chain(
            h.unified_dir(&format!("/{}", agent::cgroup::AGENT_SUBTREE))
                .iter(),
        )
        .map(|d| {
            std::fs::read_dir(d).map_or(0, |e| {
                e.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .count()
            })
        })
        .sum();
    Ok(Snapshot {
        rss_kib,
        fds: count_dir(Path::new(&format!("/proc/{serve_pid}/fd"))),
        mounts: std::fs::read_to_string("/proc/mounts")?.lines().count(),
        cgroups,
        containers: count_dir(&state.join("containers")),
        layers: count_dir(&state.join("overlay2")),
    })
}

fn agent(bin: &Path, state: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .args(args)
        .env("AGENT_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("agent {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "agent {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A one-binary busybox rootfs, imported as `busybox`.
fn import_busybox(bin: &Path, dir: &Path, state: &Path) -> anyhow::Result<()> {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("/bin/busybox")?;
    for applet in ["sh", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    agent(
        bin,
        state,
        &[
            "image",
            "import",
            "--name",
            "busybox",
            root.to_str().context("path")?,
        ],
    )
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the soak launches real containers: run it as root");
    }
    let cycles: usize = match args.first() {
        Some(n) => n.parse().with_context(|| format!("{n:?} is not a count"))?,
        None => 2000,
    };
    let bin = crate::agent_binary()?;
    let dir = tempfile::Builder::new().prefix("agent-soak").tempdir()?;
    let state: PathBuf = dir.path().join("state");
    import_busybox(&bin, dir.path(), &state)?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let serve = Serve(
        Command::new(&bin)
            .args(["serve", "--listen", &addr, "--state-dir"])
            .arg(&state)
            .arg("--control-socket")
            .arg(dir.path().join("control.sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("agent serve")?,
    );
    let pid = serve.0.id();
    // One scrape a second, as Config::new has it.
    let prom = Prometheus::start_with(&Config::new(&addr));
    prom.wait_for(Duration::from_secs(30), "scraping the agent", |p| {
        p.query("up{job=\"agent\"} == 1").len() == 1
    });
    // A few cycles first, so one-time allocations (the first launch, the first
    // scrape of a container) are not counted as growth.
    for _ in 0..20 {
        agent(&bin, &state, &["launch", "--rm", "busybox", "true"])?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let start = snapshot(pid, &state)?;
    let t0 = Instant::now();
    // RSS at each tenth of the run: event series of a vanished container are kept
    // for 5 minutes (so its last counts get scraped), so RSS may grow until the
    // first ones expire and must level off after that.
    let mut checkpoints = Vec::new();
    for i in 0..cycles {
        if cycles >= 10 && i % (cycles / 10) == 0 && i > 0 {
            checkpoints.push((t0.elapsed().as_secs(), snapshot(pid, &state)?.rss_kib));
        }
        if i % 10 == 0 {
            let name = format!("soak{i}");
            agent(
                &bin,
                &state,
                &["launch", "-d", "--name", &name, "busybox", "sleep", "30"],
            )?;
            agent(&bin, &state, &["rm", "-f", &name])?;
        } else {
            agent(&bin, &state, &["launch", "--rm", "busybox", "true"])?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    let end = snapshot(pid, &state)?;
    let window = (secs.ceil() as u64 + 3).max(10);
    let p99 = prom
        .query(&format!(
            "quantile_over_time(0.99, scrape_duration_seconds{{job=\"agent\"}}[{window}s])"
        ))
        .first()
        .map(value_of)
        .unwrap_or(f64::NAN);
    let scrapes = prom
        .query(&format!("count_over_time(up{{job=\"agent\"}}[{window}s])"))
        .first()
        .map(value_of)
        .unwrap_or(0.0);
    let failed = prom
        .query(&format!(
            "count_over_time((up{{job=\"agent\"}} == 0)[{window}s:1s])"
        ))
        .first()
        .map(value_of)
        .unwrap_or(0.0);
    drop(prom);
    drop(serve);

    println!(
        "soak: {cycles} launch/rm cycles in {secs:.1}s ({:.1} ms each) while Prometheus scraped every 1s",
        secs * 1e3 / cycles as f64
    );
    println!("{:<22} {:>10} {:>10} {:>10}", "", "start", "end", "growth");
    let rows: [(&str, u64, u64); 6] = [
        ("serve RSS KiB", start.rss_kib, end.rss_kib),
        ("serve fds", start.fds as u64, end.fds as u64),
        ("host mounts", start.mounts as u64, end.mounts as u64),
        ("agent cgroups", start.cgroups as u64, end.cgroups as u64),
        (
            "state containers",
            start.containers as u64,
            end.containers as u64,
        ),
        (
            "state overlay2 dirs",
            start.layers as u64,
            end.layers as u64,
        ),
    ];
    for (what, a, b) in rows {
        println!("{what:<22} {a:>10} {b:>10} {:>+10}", b as i64 - a as i64);
    }
    let points: Vec<String> = checkpoints
        .iter()
        .map(|(at, kib)| format!("{at}s {kib}"))
        .collect();
    println!("serve RSS KiB at each tenth: {}", points.join(", "));
    println!(
        "scrapes: {scrapes:.0} in the window, {failed:.0} failed; scrape duration p99 {:.1} ms",
        p99 * 1e3
    );
    Ok(())
}
