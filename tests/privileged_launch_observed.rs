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

/// `/bin/true` runs after the barrier.
const TRUES: usize = 3;
const BOGUS_FS: &str = "agentbogusfs";

#[test]
fn container_execs_and_mounts_are_counted_streamed_and_labelled() {
    let Some((env, agent)) = setup("container_execs_and_mounts") else {
        return;
    };
    let name = format!("observed-{}", std::process::id());
    let mut events = EventStream::connect(&env, &agent.control_socket());

    // The command (`/bin/sh`, its own exec) first blocks on `read` — an ash
    // builtin, no exec — so that the test can take a baseline after the
    // container's setup (its /proc, /dev, … mounts are made by the container's own
    // process, in its cgroup, before execve, and are attributed to it too).
    // Released, it execs exactly K = 9 programs, all by absolute path (busybox ash
    // would otherwise run applets without execve):
    //
    // - /bin/true three times;
    // - /bin/mount of a tmpfs and /bin/mount of a bogus fstype, directly in the
    //   container. It lacks CAP_SYS_ADMIN (Docker's default set, which `agent
    //   launch` applies; there is no flag to add capabilities), so mount(2) fails
    //   with EPERM before the fstype is even looked up: two failed mounts;
    // - /bin/busybox unshare, which makes a user + mount namespace (no capability
    //   needed, and no seccomp filter: see the launch below) and makes it private with one successful mount(2) call of its own
    //   (MS_REC|MS_PRIVATE on /; busybox's `--propagation unchanged` would instead
    //   call mount with flags 0 and fail with EINVAL), then execs /bin/sh, which
    //   execs /bin/mount of a tmpfs — allowed to the owner of the new mount
    //   namespace: a successful mount — and /bin/mount of the bogus fstype:
    //   ENODEV, a failed mount. These processes stay in the container's cgroup and
    //   pid namespace, so they are its events.
    //
    // Then the inner shell waits on stdin, so the container — and the nested
    // namespace — stay alive while we scrape. That wait matters: the agent
    // attributes an event through its mount namespace, resolved once (and then
    // cached) by reading /proc/<pid>/cgroup of the process or its parent in that
    // namespace. When every process of a short-lived nested namespace is gone
    // before the agent reads its events, they are counted to `/ns/mnt:<inode>`
    // instead of the container (seen here without the wait: 7 execs instead of
    // 10, the userns mounts missing) — a known gap, reported, not papered over.
    let inner = format!(
        "/bin/mount -t tmpfs none /tmp; echo userns-tmpfs=$?; \
         /bin/mount -t {BOGUS_FS} none /tmp; echo userns-bogus=$?; echo ready; read end"
    );
    let unshare = ["/bin/busybox", "unshare", "-r", "-m", "/bin/sh", "-c"];
    let script = format!(
        "read go; /bin/true {name}-0; /bin/true {name}-1; /bin/true {name}-2; \
         /bin/mount -t tmpfs none /tmp; echo tmpfs=$?; \
         /bin/mount -t {BOGUS_FS} none /tmp; echo bogus=$?; \
         {} \"$INNER\" 2>&1; exit 0",
        unshare.join(" ")
    );
    let inner_env = format!("INNER={inner}");
    // Docker's default seccomp profile (the agent's) refuses unshare(2) without
    // CAP_SYS_ADMIN, as `docker run` does: this container opts out as a Docker
    // user would.
    let mut launch = env.command(&[
        "launch",
        "-i",
        "--name",
        &name,
        "--security-opt",
        "seccomp=unconfined",
        "-e",
        &inner_env,
        "busybox",
        "/bin/sh",
        "-c",
        &script,
    ]);
    launch.stdin(Stdio::piped());
    let mut launch = KillOnDrop(launch.spawn().expect("agent launch"));
    let mut stdin = launch.0.stdin.take().expect("stdin");
    let stdout = launch.0.stdout.take().expect("stdout");
    let (tx, out_lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });

    // Baseline: the command's own exec has been counted, and nothing after it.
    events.wait_for(&name, 10, |es| {
        es.iter()
            .any(|e| e.exec.as_ref().is_some_and(|x| x.filename == "/bin/sh"))
    });
    let v = env.inspect(&name);
    let id = format!("/agent/{}", v["id"].as_str().unwrap());
    let pid_ns = v["namespaces"]["pid"].as_u64().expect("pid ns inode");
    let mnt_ns = v["namespaces"]["mnt"].as_u64().expect("mnt ns inode");
    let before = wait_metrics(&agent, 10, |m| {
        let execs = value(m, "agent_exec_events_total", &name, &[]);
        (execs == Some(1.0))
            .then(|| matching(m, "agent_mount_events_total", &[("name", &name)]))
            .ok_or(format!("exec counter of {name}: {execs:?}, want 1"))
    });
    let setup_mounts: f64 = before.iter().map(|(_, v)| v).sum();
    let was = |op: &str, result: &str| {
        before
            .iter()
            .find(|(l, _)| l["operation"] == op && l["result"] == result)
            .map_or(0.0, |(_, v)| *v)
    };
    assert!(
        out_lines.try_recv().is_err(),
        "the container ran past its barrier"
    );

    writeln!(stdin, "go").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut output = Vec::new();
    while !output.iter().any(|l| l == "ready") {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("container never got ready: {output:?}"));
        output.push(out_lines.recv_timeout(left).expect("container output"));
    }
    // busybox mount: 0 on success; 1 on EPERM (reported on the container's
    // stderr, not captured here); 255 on ENODEV (its message goes through 2>&1).
    assert_eq!(
        output,
        [
            "tmpfs=1",
            "bogus=1",
            "userns-tmpfs=0",
            "mount: mounting none on /tmp failed: No such device",
            "userns-bogus=255",
            "ready"
        ],
        "{output:?}"
    );

    // /metrics: exactly 1 + K = 10 execs (the command's own /bin/sh, 3 ×
    // /bin/true, 4 × /bin/mount, /bin/busybox unshare, the inner /bin/sh), exactly
    // 2 more successful (unshare's propagation change, the userns tmpfs) and 3
    // more failed (EPERM, EPERM, ENODEV) mount(2) calls, nothing else.
    let want_execs = (1 + TRUES + 4 + 2) as f64;
    let want_ok = was("mount", "ok") + 2.0;
    let want_failed = was("mount", "error") + 3.0;
    let after = wait_metrics(&agent, 10, |m| {
        let execs = value(m, "agent_exec_events_total", &name, &[]);
        let mount = |result| {
            value(
                m,
                "agent_mount_events_total",
                &name,
                &[("operation", "mount"), ("result", result)],
            )
        };
        let (ok, failed) = (mount("ok"), mount("error"));
        (execs == Some(want_execs) && ok == Some(want_ok) && failed == Some(want_failed))
            .then(|| m.to_owned())
            .ok_or(format!(
                "execs {execs:?}, mounts ok {ok:?} failed {failed:?}"
            ))
    });
    // Settle, and check that no more events of it trickle in.
    std::thread::sleep(Duration::from_millis(300));
    let m = scrape(&agent);
    let of_name = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("agent_exec_events") || l.starts_with("agent_mount_events"))
            .filter(|l| l.contains(&format!("name=\"{name}\"")))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(of_name(&m), of_name(&after));
    let (exec_labels, execs) = matching(&m, "agent_exec_events_total", &[("name", &name)])
        .pop()
        .unwrap();
    assert_eq!(execs, want_execs);
    assert_eq!(exec_labels["id"], id);
    let image = exec_labels["image"].clone();
    assert!(image.starts_with("busybox"), "image label {image}");
    let mounts_after = matching(&m, "agent_mount_events_total", &[("name", &name)]);
    for (l, v) in &mounts_after {
        assert_eq!((&l["id"], &l["image"]), (&id, &image));
        let delta = match (l["operation"].as_str(), l["result"].as_str()) {
            ("mount", "ok") => 2.0,
            ("mount", "error") => 3.0,
            _ => 0.0,
        };
        assert_eq!(*v - was(&l["operation"], &l["result"]), delta, "{l:?}");
    }
    assert_eq!(
        mounts_after.iter().map(|(_, v)| v).sum::<f64>(),
        setup_mounts + 5.0
    );

    // The stream: the same events, with the container's labels and fields.
    events.wait_for(&name, 10, |es| {
        es.iter().filter(|e| e.exec.is_some()).count() as f64 == want_execs
            && es.iter().filter(|e| e.mount.is_some()).count() as f64 == setup_mounts + 5.0
    });
    events.read_for(Duration::from_millis(300));
    let mine = events.of(&name);
    let userns_sh = mine
        .iter()
        .find(|e| {
            e.exec
                .as_ref()
                .is_some_and(|x| x.argv.get(2) == Some(&inner))
        })
        .expect("the inner /bin/sh exec");
    let userns_mnt = userns_sh.process.mnt_ns as u64;
    assert_ne!(userns_mnt, mnt_ns, "unshare made a new mount namespace");
    for e in &mine {
        assert_eq!(
            (&e.container.id, &e.container.image),
            (&id, &image),
            "{e:?}"
        );
        // Only processes of this container carry its labels: its pid namespace,
        // its mount namespace or the one nested by unshare.
        assert_eq!(e.process.pid_ns as u64, pid_ns, "{e:?}");
        let mnt = e.process.mnt_ns as u64;
        assert!(mnt == mnt_ns || mnt == userns_mnt, "{e:?}");
    }
    let execs: Vec<(String, Vec<String>, bool)> = mine
        .iter()
        .filter_map(|e| e.exec.as_ref())
        .map(|x| (x.filename.clone(), x.argv.clone(), x.argv_truncated))
        .collect();
    let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mount_argv = |fs: &str| argv(&["/bin/mount", "-t", fs, "none", "/tmp"]);
    let mut want = vec![("/bin/sh".into(), argv(&["/bin/sh", "-c", &script]), false)];
    for i in 0..TRUES {
        let marker = format!("{name}-{i}");
        want.push(("/bin/true".into(), argv(&["/bin/true", &marker]), false));
    }
    for fs in ["tmpfs", BOGUS_FS] {
        want.push(("/bin/mount".into(), mount_argv(fs), false));
    }
    let mut unshare_argv = argv(&unshare);
    unshare_argv.push(inner.clone());
    want.push(("/bin/busybox".into(), unshare_argv, false));
    want.push(("/bin/sh".into(), argv(&["/bin/sh", "-c", &inner]), false));
    for fs in ["tmpfs", BOGUS_FS] {
        want.push(("/bin/mount".into(), mount_argv(fs), false));
    }
    assert_eq!(execs, want);

    // Every mount event not from `mount` or `busybox` (unshare) came before the
    // command's exec: the container process setting up its own root.
    let sh_exec = mine.iter().find(|e| e.exec.is_some()).unwrap().time_unix_ns;
    let setup: Vec<_> = mine
        .iter()
        .filter(|e| e.mount.is_some() && !["mount", "busybox"].contains(&&*e.process.comm))
        .collect();
    assert_eq!(setup.len() as f64, setup_mounts);
    assert!(setup.iter().all(|e| e.time_unix_ns < sh_exec), "{setup:#?}");
    let command_mounts: Vec<_> = mine
        .iter()
        .filter(|e| ["mount", "busybox"].contains(&&*e.process.comm))
        .filter_map(|e| e.mount.as_ref().map(|m| (e.process.mnt_ns as u64, m)))
        .collect();
    assert_eq!(command_mounts.len(), 5, "{command_mounts:#?}");
    let private = libc::MS_REC | libc::MS_PRIVATE;
    let expected = [
        (mnt_ns, Some("tmpfs"), "/tmp", 0, Some(libc::EPERM)),
        (mnt_ns, Some(BOGUS_FS), "/tmp", 0, Some(libc::EPERM)),
        (userns_mnt, None, "/", private, None),
        (userns_mnt, Some("tmpfs"), "/tmp", 0, None),
        (userns_mnt, Some(BOGUS_FS), "/tmp", 0, Some(libc::ENODEV)),
    ];
    for ((ns, m), (want_ns, fs, target, flags, errno)) in command_mounts.iter().zip(expected) {
        assert_eq!(*ns, want_ns, "{m:?}");
        assert_eq!(m.info.operation, MountOp::Mount);
        assert_eq!(m.info.fstype.as_deref(), fs, "{m:?}");
        assert_eq!(m.info.target.as_deref(), Some(target));
        assert_eq!(m.info.flags & private, flags, "{m:?}");
        assert_eq!(m.info.source.as_deref(), Some("none"));
        assert_eq!(m.errno, errno, "{m:?}");
        assert_eq!(m.result, if errno.is_none() { "ok" } else { "error" });
    }

    // The host's events are the host's: our own `agent inspect` ran meanwhile.
    let (host_pid, host_mnt) = (host_ns("pid"), host_ns("mnt"));
    let host_events: Vec<&EventRecord> = events
        .seen
        .iter()
        .filter(|e| e.process.pid_ns as u64 == host_pid && e.process.mnt_ns as u64 == host_mnt)
        .collect();
    assert!(
        host_events
            .iter()
            .any(|e| exec_argv(e).iter().any(|a| a == "inspect") && e.container.name == "host"),
        "our host-side `agent inspect` exec is not attributed to the host"
    );
    assert!(host_events.iter().all(|e| e.container.name != name));
    let setup_umounts = setup
        .iter()
        .filter(|e| e.mount.as_ref().unwrap().info.operation == MountOp::Umount2)
        .count();
    eprintln!(
        "{name}: {} events; setup: {setup_mounts} mount-family calls ({setup_umounts} umount2) \
         by the container process before its exec; {} host events seen",
        mine.len(),
        host_events.len()
    );

    drop(stdin);
    let status = launch
        .wait_timeout(Duration::from_secs(10))
        .expect("container exits once stdin closes");
    assert_eq!(status.code(), Some(0));
    drop(events);
    assert_clean(&env, &[v]);
}

#[test]
fn oom_kills_throttling_and_limits_are_in_the_metrics() {
    let Some((env, agent)) = setup("oom_kills_throttling_and_limits") else {
        return;
    };
    let p = std::process::id();
    let (oomed, child_oom, busy, limited) = (
        format!("oomed-{p}"),
        format!("childoom-{p}"),
        format!("busy-{p}"),
        format!("limited-{p}"),
    );
    let dd = [
        "/bin/dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ];
    let mut args = vec!["-d", "--name", &oomed, "--memory", "16Mi"];
    args.extend(["--memory-swap", "16Mi", "busybox"]);
    args.extend(dd);
    env.launch(&args).ok();
    let child_script = format!("{}; exec /bin/sleep 60", dd.join(" "));
    env.launch(&[
        "-d",
        "--name",
        &child_oom,
        "--memory",
        "16Mi",
        "--memory-swap",
        "16Mi",
        "busybox",
        "/bin/sh",
        "-c",
        &child_script,
    ])
    .ok();
    env.launch(&[
        "-d",
        "--name",
        &busy,
        "--cpus",
        "0.1",
        "busybox",
        "/bin/sh",
        "-c",
        "while :; do :; done",
    ])
    .ok();
    env.launch(&[
        "-d",
        "--name",
        &limited,
        "--memory",
        "64Mi",
        "--pids-limit",
        "32",
        "busybox",
        "/bin/sleep",
        "60",
    ])
    .ok();
    let inspected: Vec<serde_json::Value> = [&oomed, &child_oom, &busy, &limited]
        .iter()
        .map(|n| env.inspect(n))
        .collect();

    let m = wait_metrics(&agent, 15, |m| {
        let checks = [
            (
                value(m, "agent_container_oom_killed", &oomed, &[]),
                "oomed oom_killed",
            ),
            (
                value(m, "agent_container_exit_code", &oomed, &[]),
                "oomed exit code",
            ),
            (
                value(m, "container_oom_events_total", &child_oom, &[]),
                "child oom events",
            ),
            (
                value(m, "container_cpu_cfs_throttled_periods_total", &busy, &[]),
                "busy throttled periods",
            ),
            (
                value(m, "container_threads_max", &limited, &[]),
                "threads max",
            ),
        ];
        let ok = checks[0].0 == Some(1.0)
            && checks[1].0 == Some(137.0)
            && checks[2].0.is_some_and(|v| v >= 1.0)
            && checks[3].0.is_some_and(|v| v > 0.0)
            && checks[4].0.is_some();
        ok.then(|| m.to_owned()).ok_or(format!("{checks:?}"))
    });
    // The OOM-killed container: exited, 137, OOM kill recorded.
    assert_eq!(value(&m, "agent_container_running", &oomed, &[]), Some(0.0));
    assert_eq!(
        value(&m, "agent_container_exit_code", &oomed, &[]),
        Some(137.0)
    );
    assert_eq!(
        value(&m, "agent_container_oom_killed", &oomed, &[]),
        Some(1.0)
    );
    // A child OOM kill in a running container: counted by its cgroup, and the
    // container still runs (its PID 1 survived).
    let child_oom_events = value(&m, "container_oom_events_total", &child_oom, &[]).unwrap();
    assert!(child_oom_events >= 1.0);
    assert_eq!(
        value(&m, "agent_container_running", &child_oom, &[]),
        Some(1.0)
    );
    // Exit code and OOM kill of the container itself are exported once it exited.
    assert_eq!(
        value(&m, "agent_container_oom_killed", &child_oom, &[]),
        None
    );
    assert_eq!(
        value(&m, "agent_container_exit_code", &child_oom, &[]),
        None
    );
    assert_eq!(
        value(&m, "container_spec_memory_limit_bytes", &child_oom, &[]),
        Some(16.0 * 1024.0 * 1024.0)
    );
    // --cpus 0.1: quota 10000 µs per 100000 µs period, and it throttles.
    let throttled = value(&m, "container_cpu_cfs_throttled_periods_total", &busy, &[]).unwrap();
    assert!(throttled > 0.0);
    assert_eq!(
        value(&m, "container_spec_cpu_quota", &busy, &[]),
        Some(10000.0)
    );
    assert_eq!(
        value(&m, "container_spec_cpu_period", &busy, &[]),
        Some(100000.0)
    );
    // --memory 64Mi --pids-limit 32.
    assert_eq!(
        value(&m, "container_spec_memory_limit_bytes", &limited, &[]),
        Some(67_108_864.0)
    );
    assert_eq!(
        value(&m, "container_threads_max", &limited, &[]),
        Some(32.0)
    );
    // Every one of these series carries the container's id, name and image.
    for (n, v) in [&child_oom, &busy, &limited].iter().zip(&inspected[1..]) {
        let (l, _) = matching(&m, "container_spec_memory_limit_bytes", &[("name", n)])
            .pop()
            .unwrap();
        assert_eq!(l["id"], format!("/agent/{}", v["id"].as_str().unwrap()));
        assert!(l["image"].starts_with("busybox"), "{l:?}");
    }
    eprintln!("child OOM events {child_oom_events}, throttled periods {throttled}");
    assert_clean(&env, &inspected);
}

#[test]
fn an_agent_restart_leaves_containers_and_their_series_alone() {
    let Some((env, mut agent)) = setup("agent_restart") else {
        return;
    };
    let name = format!("survivor-{}", std::process::id());
    // Execs a short sleep five times a second, so that its exec counter moves.
    env.launch(&[
        "-d",
        "--name",
        &name,
        "--memory",
        "64Mi",
        "busybox",
        "/bin/sh",
        "-c",
        "while :; do /bin/sleep 0.2; done",
    ])
    .ok();
    let v = env.inspect(&name);
    let id = format!("/agent/{}", v["id"].as_str().unwrap());
    let labels_of = |m: &str| -> Result<Vec<Labels>, String> {
        let mut out = Vec::new();
        for family in [
            "container_spec_memory_limit_bytes",
            "agent_container_running",
            "agent_exec_events_total",
        ] {
            let (l, value) = matching(m, family, &[("name", &name)])
                .pop()
                .ok_or(format!("no {family} for {name}"))?;
            if value < 1.0 {
                return Err(format!("{family} is {value}"));
            }
            out.push(l);
        }
        Ok(out)
    };
    let first = wait_metrics(&agent, 10, labels_of);
    for l in &first {
        assert_eq!(l["id"], id);
    }
    assert!(agent.stop(), "agent serve did not stop cleanly");
    // serve never owned the container: it runs on, same process.
    std::thread::sleep(Duration::from_millis(300));
    let during = env.inspect(&name);
    assert_eq!(during["status"], "running");
    assert_eq!(during["pid"], v["pid"]);

    let agent = AgentProcess::start_traced_in(&env.state, &[]);
    let again = wait_metrics(&agent, 10, labels_of);
    assert_eq!(first, again, "same labels after the restart");
    assert_eq!(env.inspect(&name)["pid"], v["pid"]);
    drop(agent);
    assert_clean(&env, &[v]);
}

/// Containers that live shorter than the reader's batch interval (~50 ms): their
/// cgroup directory and state file are gone before their events are read. The
/// cgroup_mkdir record, read first from the same ring buffer, still names them:
/// each one's execs (its command's own exec and three `/bin/busybox true`) are
/// counted under its name, and none lands on a `/ns/mnt:` series.
#[test]
fn short_lived_rm_containers_keep_their_names() {
    let Some((env, agent)) = setup("short_lived_rm_containers") else {
        return;
    };
    let attached = scrape(&agent);
    if value_of_hook(&attached, "tp_btf/cgroup_mkdir") != Some(1.0)
        && value_of_hook(&attached, "raw_tp/cgroup_mkdir") != Some(1.0)
    {
        skip("short_lived_rm_containers: no cgroup_mkdir program attached");
        return;
    }
    let mut events = EventStream::connect(&env, &agent.control_socket());
    let tag = format!("q{}", std::process::id());
    let names: Vec<String> = (1..=5).map(|i| format!("{tag}-{i}")).collect();
    for name in &names {
        let script =
            format!("/bin/busybox true {name}; /bin/busybox true {name}; /bin/busybox true {name}");
        env.launch(&["--rm", "--name", name, "busybox", "/bin/sh", "-c", &script])
            .ok();
    }
    // Each: /bin/sh (the command) + three /bin/busybox true.
    wait_metrics(&agent, 10, |m| {
        for name in &names {
            let execs = value(m, "agent_exec_events_total", name, &[]);
            if execs != Some(4.0) {
                return Err(format!(
                    "exec counter of {name}: {execs:?}, want 4\n{}",
                    m.lines()
                        .filter(|l| l.starts_with("agent_exec_events_total"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
        }
        Ok(())
    });
    // The stream agrees, and names the exact events. It may trail the counters
    // (a client process and a pipe further on): read until every container's
    // four are in, for up to 10 s.
    let inside = |e: &&EventRecord, name: &str| {
        // Inside the container (not our host-side `agent launch NAME`).
        e.exec
            .as_ref()
            .is_some_and(|x| x.filename.starts_with("/bin/"))
            && exec_argv(e).iter().any(|a| a.contains(name))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && names
            .iter()
            .any(|n| events.seen.iter().filter(|e| inside(e, n)).count() < 4)
    {
        events.read_for(Duration::from_millis(100));
    }
    events.read_for(Duration::from_millis(100));
    for name in &names {
        let ours: Vec<&EventRecord> = events.seen.iter().filter(|e| inside(e, name)).collect();
        assert_eq!(ours.len(), 4, "{name}: {ours:#?}");
        for e in ours {
            assert_eq!(e.container.name, *name, "{e:#?}");
            assert!(e.container.id.starts_with("/agent/"), "{e:#?}");
        }
    }
    assert!(
        !events
            .seen
            .iter()
            .any(|e| e.container.id.starts_with("/ns/mnt:")
                && exec_argv(e).iter().any(|a| a.contains(&tag))),
        "an exec of the short-lived containers went to a /ns/mnt: series"
    );
    drop(events);
    assert!(
        env.container_dirs().is_empty(),
        "{:?}",
        env.container_dirs()
    );
}

fn value_of_hook(exposition: &str, hook: &str) -> Option<f64> {
    matching(
        exposition,
        "agent_ebpf_program_attached",
        &[("program", hook)],
    )
    .first()
    .map(|(_, v)| *v)
}
