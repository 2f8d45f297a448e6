//! The `agent serve` command line: bad input gets one clear line and a non-zero exit;
//! JSON logs are JSON; SIGTERM ends it cleanly; gzip is honoured. Also the reading
//! commands' output into a closed pipe. Needs no root.

use agent_test_support as common;

use common::{AgentProcess, http_get};
use std::io::Read;
use std::process::Command;

fn agent(args: &[&str]) -> (i32, String) {
    let out = Command::new(common::agent_bin())
        .args(args)
        .output()
        .expect("running agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_are_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--listen", "nonsense"], "invalid socket address"),
        (&["serve", "--rescan-interval", "fast"], "not a duration"),
        (&["serve", "--log-format", "xml"], "invalid value 'xml'"),
        (
            &["serve", "--web.max-connections", "0"],
            "invalid value '0' for '--web.max-connections <N>'",
        ),
        (
            &["serve", "--web.idle-timeout", "0s"],
            "must be more than 0",
        ),
        (
            &["serve", "--web.read-header-timeout", "soon"],
            "not a duration",
        ),
        (
            &["serve", "--cgroup-root", "/nonexistent"],
            "/nonexistent is not a cgroup mount",
        ),
        (
            &["serve", "--cgroup-root", "/tmp"],
            "/tmp is not a cgroup mount",
        ),
        (
            &["serve", "--include", "/a/[", "--listen", "127.0.0.1:0"],
            "bad cgroup pattern",
        ),
        (
            &["serve", "--disable-metrics", "cpu,bogus"],
            "invalid value 'bogus' for '--disable-metrics <GROUP>'",
        ),
        (
            &["serve", "--container-labels", "tier,"],
            "a label key cannot be empty",
        ),
        (
            &["serve", "--container-env", "TOKEN=x"],
            "\"TOKEN=x\" is not an environment variable name",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = agent(args);
        assert_ne!(code, 0, "{args:?} should fail");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        let error_lines = stderr.lines().filter(|l| l.contains("error")).count();
        assert_eq!(error_lines, 1, "{args:?}: one error line, got:\n{stderr}");
    }
}

/// `agent ps -a | head -1`: a reader that went away ends the command quietly,
/// with no panic message.
#[test]
fn closed_stdout_ends_reading_commands_quietly() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["ps", "-a", "--state-dir", state],
        &["image", "ls", "--state-dir", state],
    ];
    for args in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        // The reader is gone before the command writes its first line.
        drop(reader);
        let out = Command::new(common::agent_bin())
            .args(*args)
            .stdout(writer)
            .output()
            .expect("running agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?}",
            out.status
        );
    }
}

#[test]
fn listen_address_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = agent(&["serve", "--listen", &addr]);
    assert_ne!(code, 0);
    assert!(stderr.contains(&format!("listening on {addr}")), "{stderr}");
}

#[test]
fn json_logs_and_clean_shutdown() {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(common::agent_bin())
        .args(["serve", "--listen", &addr, "--log-format", "json"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while http_get(&addr, "/healthz", &[]).is_err() {
        assert!(std::time::Instant::now() < deadline, "agent did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends with exit 0, got {status}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "serving /metrics")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "SIGTERM received")
    );
}

/// `--disable-metrics`: a group's families are gone (not even their `# TYPE`); the
/// others stay. Needs no root: headers are written whatever the cgroups hold.
#[test]
fn disabled_metric_groups_are_not_exported() {
    let families = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(String::from)
            .collect()
    };
    let all = AgentProcess::start(&[]);
    let (_, body) = http_get(&all.addr, "/metrics", &[]).unwrap();
    let all = families(&String::from_utf8(body).unwrap());
    for f in [
        "container_fs_reads_bytes_total",
        "container_fs_writes_total",
        "container_blkio_device_usage_total",
        "container_pressure_io_stalled_seconds_total",
        "container_memory_rss",
        "container_last_seen",
        "machine_cpu_cores",
        "container_network_receive_bytes_total",
        "container_fs_usage_bytes",
        "container_fs_inodes_free",
    ] {
        assert!(
            all.iter().any(|a| a == f),
            "{f} missing by default: {all:?}"
        );
    }
    let some = AgentProcess::start(&["--disable-metrics", "disk,pressure"]);
    let (_, body) = http_get(&some.addr, "/metrics", &[]).unwrap();
    let some = families(&String::from_utf8(body).unwrap());
    let gone: Vec<&String> = all.iter().filter(|f| !some.contains(f)).collect();
    assert!(!gone.is_empty());
    for f in &gone {
        assert!(
            f.starts_with("container_fs_reads")
                || f.starts_with("container_fs_writes")
                || f.starts_with("container_blkio_")
                || f.starts_with("container_pressure_"),
            "{f} went with disk and pressure off"
        );
    }
    assert!(some.iter().all(|f| all.contains(f)));
    assert!(
        !some
            .iter()
            .any(|f| f.starts_with("container_fs_reads") || f.starts_with("container_pressure_"))
    );
    assert!(
        some.iter().any(|f| f == "container_fs_usage_bytes"),
        "fs is not disk"
    );
    // network and fs (cAdvisor's `network` and `disk`) go on their own.
    let other = AgentProcess::start(&["--disable-metrics", "network,fs"]);
    let (_, body) = http_get(&other.addr, "/metrics", &[]).unwrap();
    let other = families(&String::from_utf8(body).unwrap());
    for f in all.iter().filter(|f| !other.contains(f)) {
        assert!(
            f.starts_with("container_network_")
                || ["container_fs_usage_bytes", "container_fs_limit_bytes"].contains(&f.as_str())
                || f.starts_with("container_fs_inodes_"),
            "{f} went with network and fs off"
        );
    }
    assert!(
        !other
            .iter()
            .any(|f| f.starts_with("container_network_") || f.starts_with("container_fs_inodes_"))
    );
    assert!(other.iter().any(|f| f == "container_fs_reads_bytes_total"));
}

#[test]
fn gzip_and_formats() {
    let agent = AgentProcess::start(&[]);
    let (status, plain) = http_get(&agent.addr, "/metrics", &[]).unwrap();
    assert_eq!(status, 200);
    let plain = String::from_utf8(plain).unwrap();
    assert!(plain.contains("# TYPE container_cpu_usage_seconds_total counter"));
    assert!(plain.contains("# TYPE container_memory_failcnt untyped"));
    assert!(!plain.contains("# EOF"));

    let (_, om) = http_get(
        &agent.addr,
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    )
    .unwrap();
    let om = String::from_utf8(om).unwrap();
    assert!(om.contains("# TYPE container_cpu_usage_seconds counter"));
    assert!(om.contains("# UNIT container_cpu_usage_seconds seconds"));
    assert!(om.ends_with("# EOF\n"));

    let (_, gz) = http_get(&agent.addr, "/metrics", &[("Accept-Encoding", "gzip")]).unwrap();
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut unzipped)
        .expect("a gzip body");
    assert!(unzipped.contains("agent_build_info{"));
    let (_, refused) =
        http_get(&agent.addr, "/metrics", &[("Accept-Encoding", "gzip;q=0")]).unwrap();
    assert!(refused.starts_with(b"# HELP"), "q=0 means no gzip");

    let (status, _) = http_get(&agent.addr, "/nope", &[]).unwrap();
    assert_eq!(status, 404);
}
