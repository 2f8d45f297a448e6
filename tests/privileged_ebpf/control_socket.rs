//! `agent events` over the control socket, with and without a tracer.

use super::*;

/// Kills and reaps a child process on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent_events(socket: &Path, extra: &[&str]) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new(common::agent_bin())
            .arg("events")
            .arg("--socket")
            .arg(socket)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn agent events"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_events_streams_over_the_control_socket() {
    use agent::server::control;
    let Some(tracer) = start(TracerConfig::default(), Arc::new(NoContainers)).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/control.sock");
    let listener = control::bind(&socket).expect("bind");
    let server = tokio::spawn(control::serve(listener, Some(tracer.event_sender())));
    assert!(matches!(
        control::bind(&socket),
        Err(control::ControlError::InUse { .. })
    ));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let mut json = agent_events(&socket, &["--json", "--type", "exec"]);
    let mut plain = agent_events(&socket, &["--container", "host"]);
    let json_lines = common::stdout_lines(&mut json.0);
    let plain_lines = common::stdout_lines(&mut plain.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tracer.event_sender().receiver_count() < 2 {
        assert!(Instant::now() < deadline, "clients did not subscribe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut child = std::process::Command::new(BUSYBOX)
        .arg0("true")
        .arg("cli-marker")
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();

    let found = tokio::task::spawn_blocking(move || {
        let find = |rx: &std::sync::mpsc::Receiver<String>, pred: &dyn Fn(&str) -> bool| loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        };
        let j = find(&json_lines, &|l: &str| l.contains("cli-marker"));
        let p = find(&plain_lines, &|l: &str| l.contains("cli-marker"));
        (j, p)
    })
    .await
    .unwrap();
    let json_line = found.0.expect("JSON line for the marker exec");
    let rec: EventRecord = serde_json::from_str(&json_line).expect("an EventRecord");
    assert_eq!(rec.kind, EventKind::Exec);
    assert_eq!(rec.process.tgid, pid);
    assert_eq!(rec.container, ContainerLabels::host());
    assert_eq!(rec.exec.unwrap().argv, ["true", "cli-marker"]);
    let plain_line = found.1.expect("readable line for the marker exec");
    assert!(
        plain_line.contains(&format!("exec  host pid={pid} "))
            && plain_line.contains("/bin/busybox [true cli-marker]"),
        "{plain_line}"
    );
    // Clients that hang up are noticed at once, even with no events flowing.
    drop(json);
    drop(plain);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tracer.event_sender().receiver_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "server kept subscriptions of gone clients"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
}

/// Without a tracer the socket still answers, with a clear one-line error.
#[tokio::test(flavor = "current_thread")]
async fn agent_events_without_tracing_is_one_clear_error() {
    use agent::server::control;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let listener = control::bind(&socket).expect("bind");
    let server = tokio::spawn(control::serve(listener, None));
    let sock = socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::agent_bin())
            .args(["events", "--socket"])
            .arg(&sock)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "agent: error: event tracing is not running (eBPF unavailable on this host)"
    );
    server.abort();
    let _ = server.await;
    // The socket file outlives its server: the next bind replaces it.
    assert!(socket.exists());
    drop(control::bind(&socket).expect("a stale socket is replaced"));
    let out = std::process::Command::new(common::agent_bin())
        .args(["events", "--socket", "/nonexistent/agent.sock"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("agent: error: cannot connect to /nonexistent/agent.sock"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
