//! `cargo xtask bench launch`: create + start + wait + delete of `/bin/true` with the
//! release `agent launch --rm`, side by side with Debian's `runc run` on the same
//! rootfs and the same namespaces (pid, net, ipc, uts, mount, cgroup). Both run
//! confined the same way: Docker's default capabilities and Docker's default seccomp
//! profile (the agent's default, `agent::runtime::seccomp::DEFAULT_PROFILE`), which runc gets in its
//! `config.json` converted exactly as the agent converts it. Runs are interleaved
//! (agent, runc, agent, …) so machine noise hits both alike; prints the medians
//! and the ratio (the target is 0.6 or less). Needs root.

use anyhow::{Context, bail};
use oci_spec::runtime as oci_caps;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 50;
const WARMUP: usize = 3;
const RUNC: &str = "/usr/sbin/runc";

/// Scratch directory removed on drop (with whatever runc may have left).
struct Scratch {
    dir: PathBuf,
    runc_root: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(out) = Command::new(RUNC)
            .arg("--root")
            .arg(&self.runc_root)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new(RUNC)
                    .arg("--root")
                    .arg(&self.runc_root)
                    .args(["delete", "-f", id])
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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

fn make_rootfs(root: &Path) -> anyhow::Result<()> {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("mkdir {}", bin.display()))?;
    std::fs::create_dir_all(root.join("etc"))?;
    for d in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", bin.join("busybox")).context("copy /bin/busybox")?;
    for applet in ["true", "sh"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

fn runc_bundle(bundle: &Path, rootfs: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(bundle)?;
    let status = Command::new(RUNC)
        .args(["spec"])
        .current_dir(bundle)
        .status()
        .context("runc spec")?;
    if !status.success() {
        bail!("runc spec failed ({status})");
    }
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
    spec["root"]["readonly"] = true.into();
    spec["linux"]["namespaces"] = serde_json::json!([
        {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
        {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
    ]);
    // The agent's default confinement: Docker's capabilities, the same seccomp.
    use agent::runtime::capabilities::{self, DOCKER_DEFAULT};
    use agent::runtime::seccomp::Profile;
    let caps: oci_caps::Capabilities = DOCKER_DEFAULT.iter().copied().collect();
    let seccomp = Profile::load_default()?.resolve(&caps)?;
    spec["linux"]["seccomp"] = serde_json::to_value(&seccomp)?;
    spec["process"]["capabilities"] = serde_json::to_value(capabilities::oci(&caps)?)?;
    spec["process"]["noNewPrivileges"] = true.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

pub(crate) fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the benchmark and prints medians and the agent/runc ratio.
pub fn run() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench launch needs root (namespaces, overlay mounts, cgroups)");
    }
    if !Path::new(RUNC).exists() {
        bail!("{RUNC} is missing (apt-get install runc)");
    }
    let agent = crate::agent_binary()?;
    let dir = std::env::temp_dir().join(format!("agent-bench-launch-{}", std::process::id()));
    let scratch = Scratch {
        runc_root: dir.join("runc-root"),
        dir: dir.clone(),
    };
    let rootfs = dir.join("rootfs");
    make_rootfs(&rootfs)?;
    let state = dir.join("state");
    run_quiet(
        Command::new(&agent)
            .args(["image", "import", "--quiet", "--name", "bench"])
            .arg(&rootfs)
            .env("AGENT_STATE_DIR", &state),
        "agent image import",
    )?;
    let bundle = dir.join("bundle");
    runc_bundle(&bundle, &rootfs)?;

    let agent_once = || {
        run_quiet(
            Command::new(&agent)
                .args(["launch", "--rm", "bench", "/bin/true"])
                .env("AGENT_STATE_DIR", &state),
            "agent launch",
        )
    };
    let mut n = 0;
    let mut runc_once = || {
        n += 1;
        run_quiet(
            Command::new(RUNC)
                .arg("--root")
                .arg(&scratch.runc_root)
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(format!("bench-{}-{n}", std::process::id())),
            "runc run",
        )
    };
    for _ in 0..WARMUP {
        agent_once()?;
        runc_once()?;
    }
    let (mut ours, mut theirs) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    for _ in 0..RUNS {
        ours.push(agent_once()?);
        theirs.push(runc_once()?);
    }
    let (m_ours, m_runc) = (median(&mut ours), median(&mut theirs));
    println!("launch benchmark: create + start + wait + delete of /bin/true, {RUNS} runs each");
    println!(
        "  agent launch --rm   median {:8.2} ms   (min {:.2}, max {:.2})",
        ms(m_ours),
        ms(ours[0]),
        ms(ours[RUNS - 1])
    );
    println!(
        "  runc run            median {:8.2} ms   (min {:.2}, max {:.2})",
        ms(m_runc),
        ms(theirs[0]),
        ms(theirs[RUNS - 1])
    );
    let ratio = m_ours.as_secs_f64() / m_runc.as_secs_f64();
    println!(
        "  ratio agent/runc    {ratio:.2}  ({}; the target is 0.6 or less)",
        if ratio <= 0.6 {
            "on target"
        } else if m_ours <= m_runc {
            "no slower than runc, above the target"
        } else {
            "agent is SLOWER than runc"
        }
    );
    crate::launch_docker::run(&agent)
}
