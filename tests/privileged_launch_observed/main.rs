//! The real `agent serve` (with its eBPF tracing) watching real `agent launch`
//! containers that share its state dir: exec and mount events counted per
//! container and streamed with the container's name (issue 4), the OOM kill,
//! exit code, throttling and limits in /metrics (issue 3), and an agent restart
//! that leaves the containers and their series alone.
//!
//! Needs root, overlayfs, busybox-static and BPF; otherwise each test prints why it
//! skips. Cleanup is in `Drop` (the launch support's `Env` force-removes every
//! container, kills what is left, destroys cgroups and unmounts; the agent and the
//! `agent events` client are killed), so it holds when an assertion fails too; the
//! end of each test also checks that nothing was left behind.

use agent_test_support::launch as support;

use agent_test_support as common;

use agent::ebpf::EventRecord;
use agent::ebpf::events::MountOp;
use common::{AgentProcess, http_get};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{Env, KillOnDrop};

/// Says why a test skips past the harness's output capture, so a skip is never silent.
fn skip(reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

/// The shared state dir and an agent traced on it, or `None` (printed) when this
/// machine cannot run the test.
fn setup(test: &str) -> Option<(Env, AgentProcess)> {
    if let Some(reason) = support::skip_reason() {
        skip(&format!("{test}: {reason}"));
        return None;
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        skip(&format!(
            "{test}: kernel has no BTF (/sys/kernel/btf/vmlinux)"
        ));
        return None;
    }
    let env = Env::new();
    let agent = AgentProcess::start_traced_in(&env.state, &[]);
    let metrics = scrape(&agent);
    let attached: Vec<_> = series(&metrics, "agent_ebpf_program_attached")
        .into_iter()
        .filter(|(_, v)| *v == 1.0)
        .collect();
    if attached.is_empty() {
        skip(&format!(
            "{test}: agent serve attached no eBPF program (no BPF here, or built without clang)"
        ));
        return None;
    }
    Some((env, agent))
}

fn scrape(agent: &AgentProcess) -> String {
    let (status, body) = http_get(&agent.addr, "/metrics", &[]).expect("GET /metrics");
    assert_eq!(status, 200);
    String::from_utf8(body).expect("utf-8 metrics")
}

type Labels = BTreeMap<String, String>;

/// Every sample of `family` with its labels (classic text or OpenMetrics).
fn series(exposition: &str, family: &str) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let mut labels = Labels::new();
        let mut chars = rest.chars().peekable();
        loop {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "bad line {line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.push(chars.next().unwrap_or('\\')),
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key.trim_start_matches(',').to_owned(), value);
            match chars.next() {
                Some(',') if chars.peek() != Some(&'}') => continue,
                Some(',') => {
                    chars.next();
                    break;
                }
                _ => break,
            }
        }
        let tail: String = chars.collect();
        let value = tail
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad value in {line}"));
        out.push((labels, value));
    }
    out
}

/// Samples of `family` whose labels include all of `want`.
fn matching(exposition: &str, family: &str, want: &[(&str, &str)]) -> Vec<(Labels, f64)> {
    series(exposition, family)
        .into_iter()
        .filter(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The one sample of `family` for container `name` (plus `more` labels), if present.
fn value(exposition: &str, family: &str, name: &str, more: &[(&str, &str)]) -> Option<f64> {
    let mut want = vec![("name", name)];
    want.extend_from_slice(more);
    let found = matching(exposition, family, &want);
    assert!(
        found.len() <= 1,
        "{family} {want:?}: several series {found:?}"
    );
    found.first().map(|(_, v)| *v)
}

/// Polls /metrics until `check` returns `Ok`; panics with its last complaint.
fn wait_metrics<T>(
    agent: &AgentProcess,
    secs: u64,
    mut check: impl FnMut(&str) -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let m = scrape(agent);
        match check(&m) {
            Ok(t) => return t,
            Err(why) if Instant::now() >= deadline => panic!("after {secs}s: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `agent events --json` on the agent's control socket, read on a thread.
struct EventStream {
    _child: KillOnDrop,
    lines: mpsc::Receiver<String>,
    seen: Vec<EventRecord>,
}

impl EventStream {
    /// Connects and waits until the stream demonstrably carries live events: a
    /// marker exec on the host comes through.
    fn connect(env: &Env, socket: &Path) -> EventStream {
        let mut child = env
            .command(&["events", "--json", "--socket", socket.to_str().unwrap()])
            .spawn()
            .expect("spawn agent events");
        let lines = common::stdout_lines(&mut child);
        let mut s = EventStream {
            _child: KillOnDrop(child),
            lines,
            seen: Vec::new(),
        };
        let marker = format!("observed-sync-{}", std::process::id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            std::process::Command::new("/bin/busybox")
                .args(["true", &marker])
                .status()
                .expect("run busybox true");
            s.read_for(Duration::from_millis(200));
            if s.seen
                .iter()
                .any(|e| exec_argv(e).iter().any(|a| a == &marker))
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "agent events never showed a host exec"
            );
        }
    }

    /// Reads what arrives during `d`.
    fn read_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("bad event line {line}: {e}")),
                ),
                Err(mpsc::RecvTimeoutError::Timeout) => return,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("agent events ended")
                }
            }
        }
    }

    /// Reads until `done` holds for the events of container `name` (or panics).
    fn wait_for(&mut self, name: &str, secs: u64, done: impl Fn(&[&EventRecord]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let mine: Vec<&EventRecord> = self.of(name);
            if done(&mine) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "events of {name} never complete: {mine:#?}"
            );
            self.read_for(Duration::from_millis(100));
        }
    }

    fn of(&self, name: &str) -> Vec<&EventRecord> {
        self.seen
            .iter()
            .filter(|e| e.container.name == name)
            .collect()
    }
}

fn exec_argv(e: &EventRecord) -> Vec<String> {
    e.exec.as_ref().map(|x| x.argv.clone()).unwrap_or_default()
}

/// The inode of a namespace of this (host) process.
fn host_ns(kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .ino()
}

/// Removes the containers and checks that none of their cgroups, mounts or
/// processes is left (the rest of `Drop`'s cleanup is a safety net).
fn assert_clean(env: &Env, inspected: &[serde_json::Value]) {
    for v in inspected {
        let id = v["id"].as_str().unwrap();
        let _ = env.agent(&["rm", "-f", id]);
    }
    for v in inspected {
        let id = v["id"].as_str().unwrap();
        for hierarchy in support::list_dir(Path::new("/sys/fs/cgroup")) {
            let dir = Path::new("/sys/fs/cgroup")
                .join(hierarchy)
                .join("agent")
                .join(id);
            assert!(!dir.exists(), "cgroup left behind: {}", dir.display());
        }
        assert!(
            !Path::new("/sys/fs/cgroup/agent").join(id).exists(),
            "v2 cgroup left behind"
        );
        if let Some(pid) = v["pid"].as_i64() {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(id));
            assert!(!alive, "process {pid} of {id} still runs");
        }
        assert!(
            support::mounts_containing(id).is_empty()
                && support::mounts_containing(&env.state.to_string_lossy()).is_empty(),
            "mounts left behind"
        );
    }
    assert!(
        env.container_dirs().is_empty(),
        "{:?}",
        env.container_dirs()
    );
}

mod exec_and_mount_events;
mod oom_and_limits;
mod restart;
mod short_lived;
