//! Privileged: the agent as an OCI runtime (`agent-runc`, runc's command line).
//!
//! - The runtime-spec contract, run against Debian's runc and the agent with the
//!   same bundle and compared step by step: create → state "created" → start →
//!   "running" → pause/resume → kill → "stopped" → delete, `exec --detach
//!   --pid-file`, `ps --format json`, and the errors for unknown ids, duplicate
//!   ids and wrong states. The test process is a subreaper, as containerd's
//!   shim is, so the containers `create` leaves behind become its children.
//! - dockerd (a daemon of the test's own) with the agent as a runtime.
//! - containerd (of the test's own) running a container through its runc shim
//!   with `BinaryName` set to the agent.

use agent_test_support as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `DIR/agent-runc`, a symbolic link to the agent binary under test.
fn agent_runc(dir: &Path) -> PathBuf {
    let link = dir.join("agent-runc");
    if !link.exists() {
        std::os::unix::fs::symlink(common::agent_bin(), &link).unwrap();
    }
    link
}

/// An OCI bundle at `dir`: `runc spec`'s config (no terminal) running `args`
/// in a rootfs of Debian's static busybox.
fn bundle(dir: &Path, args: &[&str]) {
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in ["sh", "sleep", "true", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let ok = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "runc spec");
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = args.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// One runtime under test: its binary, `--root`, and environment.
struct Runtime {
    name: &'static str,
    binary: PathBuf,
    root: PathBuf,
    env: Vec<(String, PathBuf)>,
}

/// What one command did: exit code, stdout, and the message of its error line.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    ok: bool,
    stdout: String,
    error: String,
}

impl Runtime {
    fn run(&self, args: &[&str]) -> Outcome {
        // Files, not pipes: a created container keeps its stdio open, and a
        // pipe's reader would wait for it.
        let (mut stdout, mut stderr) =
            (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        let status = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().unwrap())
            .stderr(stderr.try_clone().unwrap())
            .status()
            .unwrap();
        let read = |f: &mut std::fs::File| {
            use std::io::{Read, Seek};
            f.rewind().unwrap();
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            s
        };
        let (stdout, stderr) = (read(&mut stdout), read(&mut stderr));
        // `time="…" level=error msg="…"`: the message, unquoted.
        let error = stderr
            .lines()
            .filter_map(|l| l.split_once("msg=").map(|(_, m)| m))
            .map(|m| serde_json::from_str::<String>(m).unwrap_or_else(|_| m.to_string()))
            .collect::<Vec<_>>()
            .join("\n")
            // Each names itself where runc says "runc".
            .replace("agent-runc", "runc");
        Outcome {
            ok: status.success(),
            stdout,
            error,
        }
    }

    /// `state ID` as JSON (panics unless it succeeds).
    fn state(&self, id: &str) -> serde_json::Value {
        let out = self.run(&["state", id]);
        assert!(out.ok, "{} state {id}: {out:?}", self.name);
        serde_json::from_str(&out.stdout).unwrap()
    }

    fn wait_status(&self, id: &str, want: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The killed PID 1 finishes exiting only once the processes of its
            // namespace are reaped, which is the subreaper's job.
            reap_orphans();
            let st = self.state(id);
            if st["status"] == want {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {id} never became {want}: {st}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reaps (without blocking) the processes this subreaper inherited.
fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

/// Deletes the test's containers from both runtimes even when it fails.
struct Cleanup<'a> {
    runtimes: &'a [Runtime],
    ids: &'a [&'a str],
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for rt in self.runtimes {
            for id in self.ids {
                let _ = rt.run(&["delete", "--force", id]);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        reap_orphans();
    }
}

/// The transcript of the contract on one runtime: every step's outcome, with
/// what differs by nature (pids, times) reduced to what must agree.
fn contract(rt: &Runtime, bundle: &Path, scratch: &Path) -> Vec<(String, Outcome)> {
    let mut steps = Vec::new();
    let mut step = |name: &str, mut out: Outcome| {
        // The state JSON: the fields that must agree; pids only as "some" or 0.
        if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&out.stdout)
            && let Some(obj) = v.as_object_mut()
        {
            if let Some(pid) = obj.get("pid").and_then(|p| p.as_i64()) {
                obj.insert("pid".into(), (pid > 0).into());
            }
            obj.remove("created");
            out.stdout = v.to_string();
        }
        steps.push((name.to_string(), out));
    };
    let b = bundle.to_str().unwrap();
    let pid_file = scratch.join(format!("{}.pid", rt.name));
    step("state unknown", rt.run(&["state", "nope"]));
    step("start unknown", rt.run(&["start", "nope"]));
    step("kill unknown", rt.run(&["kill", "nope", "KILL"]));
    step("delete unknown", rt.run(&["delete", "nope"]));
    step(
        "create",
        rt.run(&[
            "create",
            "--bundle",
            b,
            "--pid-file",
            pid_file.to_str().unwrap(),
            "c1",
        ]),
    );
    let st = rt.state("c1");
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(st["pid"], pid, "{}: --pid-file is the state's pid", rt.name);
    step("state created", rt.run(&["state", "c1"]));
    step("create duplicate", rt.run(&["create", "--bundle", b, "c1"]));
    step("start", rt.run(&["start", "c1"]));
    step("state running", rt.run(&["state", "c1"]));
    step("start again", rt.run(&["start", "c1"]));
    step("delete running", rt.run(&["delete", "c1"]));
    let ps = rt.run(&["ps", "--format", "json", "c1"]);
    let pids: Vec<i64> = serde_json::from_str(&ps.stdout).unwrap();
    assert_eq!(pids, vec![pid], "{}: ps --format json", rt.name);
    // exec: a detached process, its pid written, inside the container's cgroup.
    let process = scratch.join(format!("{}-process.json", rt.name));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let mut p = config["process"].clone();
    p["args"] = serde_json::json!(["sleep", "60"]);
    std::fs::write(&process, p.to_string()).unwrap();
    let exec_pid_file = scratch.join(format!("{}-exec.pid", rt.name));
    step(
        "exec detached",
        rt.run(&[
            "exec",
            "--process",
            process.to_str().unwrap(),
            "--detach",
            "--pid-file",
            exec_pid_file.to_str().unwrap(),
            "c1",
        ]),
    );
    let exec_pid: i64 = std::fs::read_to_string(&exec_pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ps = rt.run(&["ps", "--format", "json", "c1"]);
    let mut pids: Vec<i64> = serde_json::from_str(&ps.stdout).unwrap();
    pids.sort();
    let mut want = vec![pid, exec_pid];
    want.sort();
    assert_eq!(
        pids, want,
        "{}: the exec'd process is in the container",
        rt.name
    );
    let ns = |p: i64| std::fs::read_link(format!("/proc/{p}/ns/pid")).unwrap();
    assert_eq!(
        ns(pid),
        ns(exec_pid),
        "{}: exec joins the pid namespace",
        rt.name
    );
    step("pause", rt.run(&["pause", "c1"]));
    step("state paused", rt.run(&["state", "c1"]));
    step("resume", rt.run(&["resume", "c1"]));
    step("state resumed", rt.run(&["state", "c1"]));
    step("kill", rt.run(&["kill", "c1", "KILL"]));
    rt.wait_status("c1", "stopped");
    step("state stopped", rt.run(&["state", "c1"]));
    step("kill stopped", rt.run(&["kill", "c1", "KILL"]));
    step("start stopped", rt.run(&["start", "c1"]));
    step("delete", rt.run(&["delete", "c1"]));
    step("state deleted", rt.run(&["state", "c1"]));
    // A created container is deleted without --force, as runc does.
    step("create again", rt.run(&["create", "--bundle", b, "c2"]));
    step("delete created", rt.run(&["delete", "c2"]));
    step("state c2 deleted", rt.run(&["state", "c2"]));
    reap_orphans();
    steps
}

/// The set-up both runc comparisons share: `None` (with a line) where runc is
/// missing, else a scratch directory, with this test process made the subreaper
/// of the containers `create` leaves behind, as containerd's shim is.
fn runc_test_dir(prefix: &str) -> Option<tempfile::TempDir> {
    if Command::new("runc").arg("--version").output().is_err() {
        eprintln!("SKIPPED: runc missing (Debian's runc; .ci/run installs it)");
        return None;
    }
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    Some(tempfile::Builder::new().prefix(prefix).tempdir().unwrap())
}

#[test]
fn the_oci_command_line_matches_runc_step_by_step() {
    common::require_privileges!();
    let Some(dir) = runc_test_dir("agent-oci-contract") else {
        return;
    };
    let d = dir.path();
    bundle(&d.join("bundle"), &["sleep", "100"]);
    let state = d.join("agent-state");
    let runtimes = [
        Runtime {
            name: "runc",
            binary: "runc".into(),
            root: d.join("runc-root"),
            env: Vec::new(),
        },
        Runtime {
            name: "agent",
            binary: agent_runc(d),
            root: d.join("agent-root"),
            env: vec![("AGENT_STATE_DIR".into(), state.clone())],
        },
    ];
    let _cleanup = Cleanup {
        runtimes: &runtimes,
        ids: &["c1", "c2"],
    };
    let runc = contract(&runtimes[0], &d.join("bundle"), d);
    let agent = contract(&runtimes[1], &d.join("bundle"), d);
    for ((step, want), (_, got)) in runc.iter().zip(&agent) {
        eprintln!("{step}: runc {want:?}");
        assert_eq!(got, want, "step {step:?}: the agent differs from runc");
    }
    assert_eq!(runc.len(), agent.len());
    // Nothing of the agent's is left: no container directory, no cgroup.
    let left = common::launch::list_dir(&state.join("containers"));
    assert!(left.is_empty(), "left in the store: {left:?}");
}

/// `docker ARGS` against `d`: (exit code, stdout, stderr).
fn docker(d: &common::docker::Dockerd, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("docker")
        .arg(format!("--host=unix://{}", d.socket().display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// A field of `/proc/<pid>/status`.
fn proc_status(pid: &str, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// The lines of `agent ps -a` on `state` after its header.
fn agent_ps(state: &Path) -> Vec<String> {
    let out = common::launch::agent_command(state, &["ps", "-a"])
        .output()
        .unwrap();
    assert!(out.status.success(), "agent ps: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

#[test]
fn dockerd_runs_containers_through_the_agent() {
    common::require_privileges!();
    let dir = tempfile::Builder::new()
        .prefix("agent-oci-docker")
        .tempdir()
        .unwrap();
    let state = dir.path().join("state");
    let runtime = agent_runc(dir.path());
    let Some(d) = common::docker::Dockerd::start_with(
        &[format!("--add-runtime=agent={}", runtime.display())],
        &[("AGENT_STATE_DIR", &state)],
    ) else {
        return;
    };
    d.import_busybox("busybox:agent");

    // Foreground: its output and its exit code come back through the shim.
    let (code, out, err) = docker(
        &d,
        &[
            "run",
            "--runtime",
            "agent",
            "--name",
            "fg",
            "busybox:agent",
            "sh",
            "-c",
            "echo hello from the agent; exit 3",
        ],
    );
    assert_eq!(
        (code, out.as_str()),
        (3, "hello from the agent"),
        "{err}\n{}",
        d.log()
    );

    // Detached, confined by Docker's defaults as the agent applies them.
    let (code, id, err) = docker(
        &d,
        &[
            "run",
            "-d",
            "--runtime",
            "agent",
            "--name",
            "web",
            "busybox:agent",
            "sleep",
            "300",
        ],
    );
    assert_eq!(code, 0, "{err}\n{}", d.log());
    let (_, pid, _) = docker(&d, &["inspect", "-f", "{{.State.Pid}}", "web"]);
    assert_eq!(
        proc_status(&pid, "Seccomp"),
        "2",
        "Docker's seccomp profile is loaded"
    );
    // Docker's default capability set.
    assert_eq!(proc_status(&pid, "CapEff"), "00000000a80425fb");
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroup.contains("/agent/"),
        "in the agent's cgroup: {cgroup}"
    );
    let ps = agent_ps(&state);
    assert!(
        ps.iter()
            .any(|l| l.contains(&format!(" {id} ")) && l.contains(" Up ")),
        "agent ps lists it running by Docker's id: {ps:?}"
    );

    // agent serve names its series, and its exec events, by the id Docker gave.
    let agent = common::AgentProcess::start_traced_in(&state, &[]);
    wait_for_series_named(&agent.addr, "container_memory_usage_bytes", &id);

    // docker exec: the exit code, inside the container's pid namespace.
    let (code, _, err) = docker(&d, &["exec", "web", "sh", "-c", "exit 7"]);
    assert_eq!(code, 7, "{err}");
    // The exec was traced and attributed to the container by Docker's id.
    wait_for_series_named(&agent.addr, "agent_exec_events_total", &id);
    drop(agent);
    let (code, out, err) = docker(&d, &["exec", "web", "cat", "/proc/1/cmdline"]);
    assert_eq!(
        (code, out.replace('\0', " ").trim()),
        (0, "sleep 300"),
        "{err}"
    );

    // docker stop: TERM is ignored by a PID 1 without a handler, KILL after 1 s.
    let (code, _, err) = docker(&d, &["stop", "-t", "1", "web"]);
    assert_eq!(code, 0, "{err}\n{}", d.log());
    let (_, status, _) = docker(
        &d,
        &[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "web",
        ],
    );
    assert_eq!(status, "exited 137");
    let (code, _, err) = docker(&d, &["rm", "web", "fg"]);
    assert_eq!(code, 0, "{err}");
    let ps = agent_ps(&state);
    assert!(
        ps.is_empty(),
        "docker rm deletes the agent's record: {ps:?}"
    );
    let left = common::launch::list_dir(&state.join("containers"));
    assert!(left.is_empty(), "left in the store: {left:?}");
}

/// Waits (up to 30 s) until `agent serve` at `addr` exports a `family` series
/// whose `name` label is `name`.
fn wait_for_series_named(addr: &str, family: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (prefix, label) = (format!("{family}{{"), format!("name=\"{name}\""));
    loop {
        let (_, body) = common::http_get(addr, "/metrics", &[]).unwrap();
        let m = String::from_utf8_lossy(&body);
        if m.lines()
            .any(|l| l.starts_with(&prefix) && l.contains(&label))
        {
            return;
        }
        assert!(Instant::now() < deadline, "no {family} series named {name}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn containerd_runs_a_container_through_the_runc_shim_with_the_agent_as_binary_name() {
    common::require_privileges!();
    const IMAGE: &str = "docker.io/agenttest/oci-runtime:1";
    let dir = tempfile::Builder::new()
        .prefix("agent-oci-containerd")
        .tempdir()
        .unwrap();
    let state = dir.path().join("state");
    let runtime = agent_runc(dir.path());
    let Some(c) =
        common::containerd::Containerd::start_with_env(IMAGE, &[("AGENT_STATE_DIR", &state)])
    else {
        return;
    };
    let layout = dir.path().join("image");
    common::launch::build_oci(
        &layout,
        &[&common::launch::base_layer()],
        Some(&["sleep", "300"]),
        "1",
    );
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = IMAGE.into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let ns = format!("agent-oci-{}", std::process::id());
    c.import(&ns, &layout);
    let runtime = runtime.to_str().unwrap();

    // io.containerd.runc.v2 with BinaryName = agent-runc (ctr's --runc-binary).
    let (ok, out) = c.ctr(
        &ns,
        &[
            "run",
            "-d",
            "--runtime",
            "io.containerd.runc.v2",
            "--runc-binary",
            runtime,
            IMAGE,
            "ctr1",
        ],
    );
    assert!(ok, "ctr run: {out}\n{}", c.log());
    let (_, tasks) = c.ctr(&ns, &["task", "ls"]);
    let line = tasks
        .lines()
        .find(|l| l.starts_with("ctr1 "))
        .unwrap_or_else(|| panic!("no task ctr1: {tasks}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[2], "RUNNING", "{tasks}");
    let pid = fields[1];
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroup.contains("/agent/"),
        "in the agent's cgroup: {cgroup}"
    );
    // containerd's default capability set (Docker's).
    assert_eq!(proc_status(pid, "CapEff"), "00000000a80425fb");
    let ps = agent_ps(&state);
    assert!(
        ps.iter()
            .any(|l| l.contains(" ctr1 ") && l.contains(" Up ")),
        "agent ps lists it by containerd's id: {ps:?}"
    );
    // agent serve names its series, and its exec events, by containerd's id.
    let agent = common::AgentProcess::start_traced_in(&state, &[]);
    wait_for_series_named(&agent.addr, "container_memory_usage_bytes", "ctr1");

    // An exec through the shim (runc exec --process --detach --pid-file).
    let (ok, out) = c.ctr(
        &ns,
        &[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "ctr1",
            "cat",
            "/proc/1/cmdline",
        ],
    );
    assert!(ok, "ctr task exec: {out}");
    assert_eq!(out.replace('\0', " ").trim(), "sleep 300");
    wait_for_series_named(&agent.addr, "agent_exec_events_total", "ctr1");
    drop(agent);

    let (ok, out) = c.ctr(&ns, &["task", "kill", "-s", "SIGKILL", "ctr1"]);
    assert!(ok, "ctr task kill: {out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, tasks) = c.ctr(&ns, &["task", "ls"]);
        if tasks
            .lines()
            .any(|l| l.starts_with("ctr1 ") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "ctr1 never stopped: {tasks}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = c.ctr(&ns, &["task", "rm", "ctr1"]);
    assert!(ok, "ctr task rm: {out}");
    let (ok, out) = c.ctr(&ns, &["containers", "rm", "ctr1"]);
    assert!(ok, "ctr containers rm: {out}");
    let left = common::launch::list_dir(&state.join("containers"));
    assert!(left.is_empty(), "left in the store: {left:?}");
}

#[test]
fn hooks_run_with_the_state_as_runc_runs_them() {
    common::require_privileges!();
    let Some(dir) = runc_test_dir("agent-oci-hooks") else {
        return;
    };
    let d = dir.path();
    let runtimes = [
        Runtime {
            name: "runc",
            binary: "runc".into(),
            root: d.join("runc-root"),
            env: Vec::new(),
        },
        Runtime {
            name: "agent",
            binary: agent_runc(d),
            root: d.join("agent-root"),
            env: vec![("AGENT_STATE_DIR".into(), d.join("agent-state"))],
        },
    ];
    let _cleanup = Cleanup {
        runtimes: &runtimes,
        ids: &["h1"],
    };
    const STAGES: &[&str] = &["prestart", "createRuntime", "poststart", "poststop"];
    let mut seen = Vec::new();
    for rt in &runtimes {
        let b = d.join(format!("{}-bundle", rt.name));
        bundle(&b, &["sleep", "100"]);
        let path = b.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for stage in STAGES {
            // Each hook saves the state it was given, and its own environment.
            let out = d.join(format!("{}-{stage}", rt.name));
            config["hooks"][stage] = serde_json::json!([{
                "path": "/bin/sh",
                "args": ["sh", "-c", format!("cat > {0}.json; echo \"$HOOK_ENV\" > {0}.env", out.display())],
                "env": [format!("HOOK_ENV={stage}")],
                "timeout": 10,
            }]);
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let b = b.to_str().unwrap();
        for args in [&["create", "--bundle", b, "h1"][..], &["start", "h1"]] {
            let out = rt.run(args);
            assert!(out.ok, "{} {args:?}: {out:?}", rt.name);
        }
        let pid = rt.state("h1")["pid"].as_i64().unwrap();
        assert!(rt.run(&["kill", "h1", "KILL"]).ok);
        rt.wait_status("h1", "stopped");
        assert!(rt.run(&["delete", "h1"]).ok);
        let mut of_rt = Vec::new();
        for stage in STAGES {
            let file = d.join(format!("{}-{stage}.json", rt.name));
            let state: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&file).unwrap_or_else(|e| panic!("{} {stage}: {e}", rt.name)),
            )
            .unwrap();
            assert_eq!(state["id"], "h1");
            assert_eq!(state["bundle"], b);
            // The pid while it lives (runc gives none after it is gone).
            if *stage != "poststop" {
                assert_eq!(state["pid"], pid, "{} {stage}: {state}", rt.name);
            }
            let env = std::fs::read_to_string(d.join(format!("{}-{stage}.env", rt.name))).unwrap();
            assert_eq!(env.trim(), *stage, "{} {stage}: the hook's env", rt.name);
            of_rt.push((stage.to_string(), state["status"].clone()));
        }
        seen.push(of_rt);
    }
    assert_eq!(seen[1], seen[0], "the agent gives hooks runc's statuses");
}
