//! The OOM kill, exit code, throttling and limits of launched containers in /metrics
//! (issue 3).

use super::*;

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
