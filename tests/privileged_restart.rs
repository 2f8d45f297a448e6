//! Privileged tests of `agent launch --restart`: the supervisor restarts the real
//! container with back-off, counts it in `state.json` and in
//! `agent_container_restarts_total`, keeps its name and layer, and never restarts
//! a container the user stopped.

use agent_test_support::launch as support;
use agent_test_support::{AgentProcess, http_get, require_privileges, sample};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::Env;

fn upper(v: &serde_json::Value) -> PathBuf {
    PathBuf::from(v["rootfs"]["upperdir"].as_str().expect("upperdir"))
}

#[test]
fn on_failure_2_runs_a_failing_command_three_times_and_the_metric_says_2() {
    require_privileges!();
    let env = Env::new();
    let started = Instant::now();
    let run = env.launch(&[
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "-v",
        "kept:/v",
        "busybox",
        "sh",
        "-c",
        "echo run >> /runs; echo run >> /v/runs; echo attempt; exit 1",
    ]);
    let took = started.elapsed();
    assert_eq!(run.code, 1, "the last run's exit code: {run:#?}");
    assert_eq!(run.stdout.matches("attempt").count(), 3, "{run:#?}");
    let v = env.inspect("flaky");
    assert_eq!(v["status"], "exited", "{v:#}");
    assert_eq!(v["restart_count"], 2, "{v:#}");
    assert_eq!(v["restart_policy"]["name"], "on-failure");
    // The three runs wrote into one writable layer: the same container.
    let runs = std::fs::read_to_string(upper(&v).join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 3, "{runs:?}");
    // And each run had its volume.
    let in_volume = std::fs::read_to_string(env.state.join("volumes/kept/_data/runs")).unwrap();
    assert_eq!(in_volume.lines().count(), 3, "{in_volume:?}");
    // Back-off: 100 ms, then 200 ms.
    assert!(took >= Duration::from_millis(300), "{took:?}");

    let agent = AgentProcess::start_in(&env.state, &[]);
    let (status, body) = http_get(&agent.addr, "/metrics", &[]).expect("GET /metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let id = format!("/agent/{}", v["id"].as_str().unwrap());
    assert_eq!(
        sample(&text, "agent_container_restarts_total", &id),
        Some(2.0),
        "{text}"
    );
    env.agent(&["rm", "flaky"]).ok();
}

#[test]
fn success_ends_on_failure_and_no_never_restarts() {
    require_privileges!();
    let env = Env::new();
    let run = env.launch(&[
        "--name",
        "ok",
        "--restart",
        "on-failure",
        "busybox",
        "sh",
        "-c",
        "echo run >> /runs; test $(cat /runs | wc -l) -ge 2",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let v = env.inspect("ok");
    assert_eq!(v["restart_count"], 1, "{v:#}");
    let run = env.launch(&["--name", "once", "busybox", "false"]);
    assert_eq!(run.code, 1);
    assert_eq!(env.inspect("once")["restart_count"], 0);
    // --rm and a restart policy conflict, as in Docker; nothing is created.
    let run = env.launch(&["--rm", "--restart", "always", "busybox", "true"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("conflict"), "{run:#?}");
    assert_eq!(env.container_dirs().len(), 2);
}

#[test]
fn always_restarts_until_stopped_and_keeps_its_name_and_id() {
    require_privileges!();
    let env = Env::new();
    let out = env
        .launch(&[
            "-d",
            "--name",
            "svc",
            "--restart",
            "always",
            "busybox",
            "sh",
            "-c",
            "echo run >> /runs; sleep 0.2",
        ])
        .ok();
    let id = out.stdout.trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = env.inspect("svc");
        if v["restart_count"].as_u64().unwrap_or(0) >= 3 {
            break v;
        }
        assert!(Instant::now() < deadline, "never restarted 3 times: {v:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v["id"], id.as_str());
    assert!(v["status"] == "running" || v["status"] == "restarting");
    env.agent(&["stop", "-t", "1", "svc"]).ok();
    let v = env.wait_exited("svc", 10);
    let count = v["restart_count"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let after = env.inspect("svc");
    assert_eq!(
        after["status"], "exited",
        "stopped stays stopped: {after:#}"
    );
    assert_eq!(after["restart_count"].as_u64().unwrap(), count);
    let runs = std::fs::read_to_string(upper(&after).join("runs")).unwrap();
    assert_eq!(runs.lines().count() as u64, count + 1, "{runs:?}");
    let ps = env.agent(&["ps", "-a"]).ok();
    assert!(ps.stdout.contains("svc"), "{ps:#?}");
    env.agent(&["rm", "svc"]).ok();
    assert!(env.container_dirs().is_empty());
}
