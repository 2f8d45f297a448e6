//! The second half of `cargo xtask bench launch`: `docker run --rm` of a
//! busybox `sh -c true` with the agent as Docker's runtime (`--runtime agent`,
//! `agent-runc` behind containerd's runc shim) against Docker's own runc, on
//! one dockerd of the bench's own (private data root, socket and network
//! namespace, as the tests start it). Both go through the same daemon,
//! containerd and shim; only the OCI runtime differs. Runs are interleaved so
//! machine noise hits both alike; prints the medians and the ratio (the target
//! is 1.0 or less).

use agent_test_support::docker::Dockerd;
use anyhow::{Context, bail};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 20;
const WARMUP: usize = 2;

fn docker_run(d: &Dockerd, runtime: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = Command::new("docker")
        .arg(format!("--host=unix://{}", d.socket().display()))
        .args(["run", "--rm", "--network", "none", "--runtime", runtime])
        .args(["bench:1", "sh", "-c", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running docker")?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "docker run --runtime {runtime} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

/// Runs the Docker half of the launch benchmark with `agent` as the runtime.
pub fn run(agent: &Path) -> anyhow::Result<()> {
    if !Path::new("/usr/sbin/dockerd").exists() {
        println!("docker run: skipped, /usr/sbin/dockerd is missing (apt-get install docker.io)");
        return Ok(());
    }
    let dir = tempfile::Builder::new()
        .prefix("agent-bench-docker")
        .tempdir()
        .context("tempdir")?;
    let link = dir.path().join("agent-runc");
    std::os::unix::fs::symlink(agent, &link).context("link agent-runc")?;
    let state = dir.path().join("state");
    let d = Dockerd::start_with(
        &[format!("--add-runtime=agent={}", link.display())],
        &[("AGENT_STATE_DIR", &state)],
    )
    .context("starting dockerd")?;
    d.import_busybox("bench:1");
    for _ in 0..WARMUP {
        docker_run(&d, "agent")?;
        docker_run(&d, "runc")?;
    }
    let (mut ours, mut theirs) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    for _ in 0..RUNS {
        ours.push(docker_run(&d, "agent")?);
        theirs.push(docker_run(&d, "runc")?);
    }
    let (m_ours, m_runc) = (
        crate::launch::median(&mut ours),
        crate::launch::median(&mut theirs),
    );
    println!("docker run --rm of sh -c true through one dockerd, {RUNS} runs each");
    println!(
        "  docker run --runtime agent  median {:8.2} ms   (min {:.2}, max {:.2})",
        crate::launch::ms(m_ours),
        crate::launch::ms(ours[0]),
        crate::launch::ms(ours[RUNS - 1])
    );
    println!(
        "  docker run (runc)           median {:8.2} ms   (min {:.2}, max {:.2})",
        crate::launch::ms(m_runc),
        crate::launch::ms(theirs[0]),
        crate::launch::ms(theirs[RUNS - 1])
    );
    let ratio = m_ours.as_secs_f64() / m_runc.as_secs_f64();
    println!(
        "  ratio agent/runc            {ratio:.2}  ({}; the target is 1.0 or less)",
        if ratio <= 1.0 {
            "on target"
        } else {
            "agent is SLOWER than runc"
        }
    );
    Ok(())
}
