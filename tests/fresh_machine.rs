//! The README's run command on a fresh machine: a clean clone (so no `target/`),
//! clang removed, then `cargo xtask run`. The agent it starts must have its eBPF
//! programs attached: xtask installs clang before anything builds the agent, and
//! the agent's build script refuses to leave a stub behind silently.
//!
//! It really removes Debian's clang-19 (xtask installs it again, and so does this
//! test's cleanup if xtask did not), and builds the release agent from nothing,
//! 3-5 minutes on 2 cores. So it runs only as root and only where asked: in CI
//! (`CI=true`) or with `AGENT_TEST_FRESH_MACHINE=1`. It clones the committed HEAD.

use agent_test_support as common;

use common::{free_port, http_get, require_root};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLANG: &str = "/usr/bin/clang-19";

/// `cargo xtask run` in its own process group, killed with its children on drop;
/// clang-19 put back if it is still missing.
struct FreshRun {
    child: Option<Child>,
    log: PathBuf,
}

impl Drop for FreshRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the process group this test started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: as above.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        if !Path::new(CLANG).exists() {
            let _ = Command::new("apt-get")
                .args(["-o", "DPkg::Lock::Timeout=300"])
                .args(["install", "-y", "-q", "--no-install-recommends", "clang-19"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
        }
    }
}

impl FreshRun {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[test]
fn fresh_clone_without_clang_runs_the_whole_agent() {
    if !require_root("fresh_clone_without_clang_runs_the_whole_agent") {
        return;
    }
    let asked = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("AGENT_TEST_FRESH_MACHINE").is_ok_and(|v| v == "1");
    if !asked {
        eprintln!(
            "SKIPPED fresh_clone_without_clang_runs_the_whole_agent: removes clang-19 and builds from nothing; runs in CI or with AGENT_TEST_FRESH_MACHINE=1"
        );
        return;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("agent-fresh")
        .tempdir()
        .unwrap();
    let clone = dir.path().join("agent");
    let ok = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(workspace)
        .arg(&clone)
        .status()
        .expect("git")
        .success();
    assert!(ok, "git clone of the workspace failed");
    assert!(!clone.join("target").exists());

    let mut run = FreshRun {
        child: None,
        log: dir.path().join("run.log"),
    };
    if Path::new(CLANG).exists() {
        // A dpkg run that was killed half-way must be finished before any other.
        let _ = Command::new("dpkg")
            .args(["--configure", "-a"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        let ok = Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(["remove", "-y", "-q", "clang-19"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .expect("apt-get")
            .success();
        assert!(ok, "apt-get remove clang-19 failed");
    }
    assert!(!Path::new(CLANG).exists(), "clang-19 is still there");

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(&run.log).unwrap();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["xtask", "run", "--listen", &addr, "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--control-socket")
        .arg(dir.path().join("control.sock"))
        .current_dir(&clone)
        // The clone's own target/, as on a fresh machine.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0);
    run.child = Some(cmd.spawn().expect("cargo xtask run"));

    // Building from nothing takes minutes; the agent answers once it serves.
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    let metrics = loop {
        if let Ok((200, body)) = http_get(&addr, "/metrics", &[]) {
            break String::from_utf8(body).unwrap();
        }
        if let Some(Ok(Some(status))) = run.child.as_mut().map(Child::try_wait) {
            panic!("cargo xtask run ended ({status}):\n{}", run.log());
        }
        assert!(
            Instant::now() < deadline,
            "no agent after 20 min:\n{}",
            run.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };

    assert!(Path::new(CLANG).exists(), "xtask did not install clang-19");
    let attached: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("agent_ebpf_program_attached{") && l.ends_with(" 1"))
        .collect();
    assert!(
        attached.iter().any(|l| l.contains("sched_process_exec")),
        "no exec hook attached: {attached:?}\n{}",
        run.log()
    );
    let log = run.log();
    assert!(
        log.lines()
            .any(|l| l.contains("eBPF hooks attached") && l.contains("sched_process_exec")),
        "no start-up line naming the live hooks:\n{log}"
    );
    assert!(!log.contains("without its eBPF programs"), "{log}");
}
