//! Memory, CPU and pids limits written and enforced (OOM kill, throttling, fork bomb),
//! and the cgroup v2 code path.

use super::*;

fn cgroup_file(
    v: &serde_json::Value,
    v1_controller: &str,
    file_v1: &str,
    file_v2: &str,
) -> PathBuf {
    let dirs = v["cgroup"]["dirs"].as_array().expect("cgroup dirs");
    if v["cgroup"]["version"] == "v2" {
        return PathBuf::from(dirs[0].as_str().unwrap()).join(file_v2);
    }
    dirs.iter()
        .map(|d| PathBuf::from(d.as_str().unwrap()))
        .find(|d| {
            d.parent()
                .and_then(Path::parent)
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.split(',').any(|c| c == v1_controller))
        })
        .unwrap_or_else(|| panic!("no {v1_controller} hierarchy in {v:#}"))
        .join(file_v1)
}

#[test]
fn memory_limit_is_enforced_and_the_oom_kill_recorded() {
    require_privileges!();
    let env = Env::new();
    let run = env.launch(&[
        "--name",
        "hog",
        "--memory",
        "16Mi",
        "--memory-swap",
        "16Mi",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(run.code, 137, "{run:#?}");
    let v = env.inspect("hog");
    assert_eq!(v["oom_killed"], true, "{v:#}");
    assert_eq!(v["signal"], 9);
    assert_eq!(v["limits"]["memory_bytes"], 16 << 20);
    // The cgroup is gone once the container exited.
    for d in v["cgroup"]["dirs"].as_array().unwrap() {
        assert!(!Path::new(d.as_str().unwrap()).exists());
    }
    assert!(env.agent(&["ps", "-a"]).ok().stdout.contains("OOMKilled"));
}

#[test]
fn limits_are_written_and_cpu_throttling_shows() {
    require_privileges!();
    let env = Env::new();
    env.launch(&[
        "-d",
        "--name",
        "lim",
        "--memory",
        "32Mi",
        "--cpus",
        "0.2",
        "--pids-limit",
        "20",
        "busybox",
        "sh",
        "-c",
        "while :; do :; done",
    ])
    .ok();
    let v = env.inspect("lim");
    let mem = cgroup_file(&v, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(read(&mem), (32u64 << 20).to_string());
    let pids = cgroup_file(&v, "pids", "pids.max", "pids.max");
    assert_eq!(read(&pids), "20");
    if v["cgroup"]["version"] == "v2" {
        assert_eq!(read(&cgroup_file(&v, "cpu", "", "cpu.max")), "20000 100000");
    } else {
        assert_eq!(
            read(&cgroup_file(&v, "cpu", "cpu.cfs_quota_us", "")),
            "20000"
        );
        assert_eq!(
            read(&cgroup_file(&v, "cpu", "cpu.cfs_period_us", "")),
            "100000"
        );
    }
    // Inside, the container sees its own cgroup (read-only) at /sys/fs/cgroup.
    let run = env
        .launch(&[
            "--rm",
            "--memory",
            "48Mi",
            "busybox",
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
             touch /sys/fs/cgroup/x 2>/dev/null && echo cg-rw || echo cg-ro",
        ])
        .ok();
    assert_eq!(run.stdout, format!("{}\ncg-ro\n", 48u64 << 20), "{run:#?}");
    let stat = cgroup_file(&v, "cpu", "cpu.stat", "cpu.stat");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let throttled: u64 = read(&stat)
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if throttled > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never throttled: {}",
            read(&stat)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dirs: Vec<PathBuf> = v["cgroup"]["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| PathBuf::from(d.as_str().unwrap()))
        .collect();
    env.agent(&["rm", "-f", "lim"]).ok();
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    require_privileges!();
    let env = Env::new();
    // The inner shell forks until fork fails (bounded, in case the limit were missing);
    // PID 1 then keeps the survivors alive.
    env.launch(&[
        "-d",
        "--name",
        "bomb",
        "--pids-limit",
        "16",
        "busybox",
        "sh",
        "-c",
        "sh -c 'i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done' 2>/dev/null; echo stopped; sleep 60",
    ])
    .ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.agent(&["logs", "bomb"]).ok().stdout.contains("stopped") {
        assert!(
            Instant::now() < deadline,
            "the fork loop never hit the limit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = env.inspect("bomb");
    let current: u64 = read(&cgroup_file(&v, "pids", "pids.current", "pids.current"))
        .parse()
        .unwrap();
    assert!(current <= 16, "pids.current {current} above the limit");
    let events = read(&cgroup_file(&v, "pids", "pids.events", "pids.events"));
    let max_hits: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(max_hits > 0, "pids.events: {events}");
    env.agent(&["rm", "-f", "bomb"]).ok();
}

/// On a hybrid host the unified (v2) hierarchy is mounted beside the v1 ones, usually
/// without the memory/cpu/pids controllers. Pointing the runtime at it exercises the
/// v2 code path here: subtree_control, the cgroup namespace, cgroup.kill, removal,
/// and a clean refusal of a limit whose controller is missing.
#[test]
fn cgroup_v2_code_path_on_the_unified_hierarchy() {
    require_privileges!();
    let root = Path::new("/sys/fs/cgroup/unified");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup/unified ") && l.contains(" - cgroup2 "));
    if !mounted {
        eprintln!("SKIPPED: no cgroup2 at /sys/fs/cgroup/unified (a pure v1 or v2 host)");
        return;
    }
    let env = Env::new();
    let out = env
        .command(&[
            "launch",
            "--name",
            "v2",
            "busybox",
            "sh",
            "-c",
            "grep '^0::' /proc/self/cgroup",
        ])
        .env("AGENT_CGROUP_ROOT", root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout.trim(),
        "0::/",
        "the cgroup namespace is rooted at the container"
    );
    let v = env.inspect("v2");
    assert_eq!(v["cgroup"]["version"], "v2");
    let dir = PathBuf::from(v["cgroup"]["dirs"][0].as_str().unwrap());
    assert!(dir.starts_with(root.join("agent")), "{}", dir.display());
    assert!(!dir.exists(), "the v2 cgroup was not removed");
    env.agent(&["rm", "v2"]).ok();

    let controllers = read(&root.join("cgroup.controllers"));
    if !controllers.split_whitespace().any(|c| c == "pids") {
        let out = env
            .command(&["launch", "--pids-limit", "5", "busybox", "true"])
            .env("AGENT_CGROUP_ROOT", root)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("pids.max"), "{stderr}");
        assert!(
            env.container_dirs().is_empty(),
            "a refused launch left state"
        );
        assert_eq!(env.overlay_dirs().len(), 2, "a refused launch left a layer");
    }
}
