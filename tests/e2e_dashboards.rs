//! End to end for issue 5: Debian's real Prometheus scrapes the real agent (eBPF
//! tracing on) while real `agent launch -d` containers from a busybox image misbehave:
//! one near its memory limit, one whose child gets OOM-killed (and which execs and
//! mounts a tmpfs), one CPU-throttled, and one that exits non-zero and is launched
//! again under the same name. Every query of `dashboards/agent.json`, with the Grafana
//! variables substituted, must run without error and return data, and the memory, OOM,
//! throttling, exit-code and restart alerts of `dashboards/alerts.yml` must reach the
//! firing state.
//!
//! Needs root (containers, eBPF), `/bin/busybox`, overlayfs and `/usr/bin/prometheus`
//! (or `$PROMETHEUS`). The containers live in a temporary state root that the agent
//! under test reads; `launch_support::Env` force-removes them (processes, cgroups,
//! mounts) on drop, also when the test fails.

use agent_test_support as common;
use agent_test_support::dashboard_queries;
use agent_test_support::launch as launch_support;

use common::prometheus::{Config, Prometheus, value_of};
use common::{AgentProcess, require_root};
use dashboard_queries::{Variables, metric_names};
use launch_support::Env;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// PSI families: exported only where the kernel offers per-cgroup pressure files.
fn is_psi_metric(name: &str) -> bool {
    name.starts_with("container_pressure_")
}

/// Disk I/O families: the containers do block I/O only where their state root is
/// on a disk. (The writable-layer families, `container_fs_usage_bytes` and the
/// rest, need no disk.)
fn is_disk_metric(name: &str) -> bool {
    name.starts_with("container_fs_reads")
        || name.starts_with("container_fs_writes")
        || name.starts_with("container_blkio_")
}

/// Network families: the throttled container shares the host's network, which
/// has an interface cAdvisor would count only where the machine has a network
/// device (the VM rig's guest has loopback alone).
fn is_network_metric(name: &str) -> bool {
    name.starts_with("container_network_")
}

/// Whether this host's network namespace has an interface the agent reports:
/// not `lo`, and not the `veth*`/`docker*` ones cAdvisor skips.
fn host_has_counted_interface() -> bool {
    std::fs::read_to_string("/proc/self/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .any(|n| n != "lo" && !n.starts_with("veth") && !n.starts_with("docker"))
}

/// The alerts this test drives to the firing state, with the role of the container
/// that must fire each.
const ALERTS: &[(&str, Role)] = &[
    ("ContainerMemoryNearLimit", Role::NearLimit),
    ("ContainerOOMKilled", Role::Oom),
    ("ContainerCPUThrottled", Role::Throttled),
    ("LaunchedContainerExitedNonZero", Role::Exits),
    ("LaunchedContainerRestarting", Role::Exits),
    ("LaunchedContainerRestarting", Role::Restarts),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    NearLimit,
    Oom,
    Throttled,
    Exits,
    /// Exits non-zero every few seconds under `--restart always`: its supervisor
    /// restarts it under the same id.
    Restarts,
}

/// The exit code of the container that exits non-zero.
const EXIT_CODE: i32 = 3;

/// A container launched for this test.
struct Container {
    role: Role,
    name: String,
    /// Its current id (a relaunch under the same name gets a new one).
    id: String,
}

impl Container {
    /// The cgroup path the agent exports as the `id` label.
    fn cgroup(&self) -> String {
        format!("/agent/{}", self.id)
    }
}

/// Prints a phase and the time since the start of the test.
fn phase(start: Instant, what: &str) {
    eprintln!("[{:>6.2}s] {what}", start.elapsed().as_secs_f64());
}

/// `agent launch -d --name NAME ARGS… busybox sh -c SCRIPT`; returns the container.
fn launch(env: &Env, role: Role, name: String, limits: &[&str], script: &str) -> Container {
    let mut args = vec!["-d", "--name", &name, "--pids-limit", "16"];
    args.extend_from_slice(limits);
    args.extend_from_slice(&["busybox", "sh", "-c", script]);
    let id = env.launch(&args).ok().stdout.trim().to_string();
    assert_eq!(id.len(), 64, "launch -d prints the id: {id:?}");
    Container { role, name, id }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn dashboards_and_alerts_against_real_prometheus() {
    if !require_root("dashboards_and_alerts_against_real_prometheus") {
        return;
    }
    if let Some(reason) = launch_support::skip_reason() {
        eprintln!("SKIPPED dashboards_and_alerts_against_real_prometheus: {reason}");
        return;
    }
    let start = Instant::now();
    let pid = std::process::id();

    // Declared first, so dropped last: after Prometheus and the agent, `Env` removes
    // every container of its state root (rm -f, then kills, cgroups and mounts).
    let env = Env::new();
    phase(start, "busybox image built and imported");
    // The near-limit container reads and writes its root filesystem with direct
    // I/O: on a disk here, counted by the kernel (on v1 once blk-throttle knows
    // the disk).
    let disk = common::block_device_of(env.dir.path());
    match &disk {
        Ok(device) => common::enable_v1_blkio_counting(&common::host_hierarchy(), *device),
        Err(why) => eprintln!("NOTE: the containers' disk I/O goes to no disk: {why}"),
    }
    let agent = AgentProcess::start_traced_in(&env.state, &[]);
    phase(start, "traced agent is up");

    // Near its memory limit: 59 MiB in a tmpfs file (shmem: charged to the cgroup,
    // never reclaimable without swap) under a 64 MiB limit, kept alive, idle. First
    // it writes 8 MiB to its root filesystem and reads them back, with O_DIRECT (the
    // disk I/O panels; no page cache taken).
    let near = launch(
        &env,
        Role::NearLimit,
        format!("dash-mem-{pid}"),
        &["--memory", "64Mi", "--memory-swap", "64Mi"],
        "dd if=/dev/zero of=/io bs=1M count=8 oflag=direct 2>/dev/null; \
         dd if=/io of=/dev/null bs=1M iflag=direct 2>/dev/null; \
         dd if=/dev/zero of=/dev/shm/fill bs=1M count=59 2>/dev/null; exec sleep 1000000",
    );
    // OOM: PID 1 waits for /tmp/go, then execs and mounts a tmpfs in a user and
    // mount namespace of its own (the container has no CAP_SYS_ADMIN, as under
    // Docker), then runs a child that asks for 64 MiB under a 32 MiB limit. The
    // child volunteers for the OOM killer (raising oom_score_adj needs no
    // privilege), is killed, and PID 1 stays. Docker's default seccomp profile,
    // the agent's default, refuses unshare(2) without CAP_SYS_ADMIN, as `docker
    // run` does: this container opts out as a Docker user would.
    let oom = launch(
        &env,
        Role::Oom,
        format!("dash-oom-{pid}"),
        &[
            "--memory",
            "32Mi",
            "--memory-swap",
            "32Mi",
            "--security-opt",
            "seccomp=unconfined",
        ],
        "while [ ! -e /tmp/go ]; do sleep 0.1; done; \
         busybox unshare -Urm sh -c 'mount -t tmpfs tmpfs /tmp && echo mounted'; \
         sh -c 'echo 1000 > /proc/self/oom_score_adj; exec dd if=/dev/zero of=/dev/null bs=64M count=1'; \
         echo child=$?; exec sleep 1000000",
    );
    // Throttled: a busy loop under a tenth of a CPU. On the host's network, so the
    // network panels have interfaces to show (the others have loopback only,
    // which is left out as cAdvisor leaves it out).
    let cpu = launch(
        &env,
        Role::Throttled,
        format!("dash-cpu-{pid}"),
        &["--cpus", "0.1", "--network", "host"],
        "while :; do :; done",
    );
    // Exits non-zero at once; launched again under the same name below.
    let exit_script = format!("exit {EXIT_CODE}");
    let mut exits = launch(
        &env,
        Role::Exits,
        format!("dash-exit-{pid}"),
        &[],
        &exit_script,
    );
    // Restarted by its supervisor (same id): agent_container_restarts_total rises.
    let restarts = launch(
        &env,
        Role::Restarts,
        format!("dash-restart-{pid}"),
        &["--restart", "always"],
        "sleep 2; exit 1",
    );
    phase(start, "five containers launched");
    let oom_pid = env.inspect(&oom.name)["pid"]
        .as_i64()
        .expect("the OOM container's pid") as i32;
    let first_exit = env.wait_exited(&exits.name, 10);
    assert_eq!(first_exit["exit_code"], EXIT_CODE, "{first_exit:#}");

    let rules_yaml =
        std::fs::read_to_string(dashboard_queries::dashboards_dir().join("alerts.yml")).unwrap();
    let config = Config::new(&agent.addr)
        .with_rules(dashboard_queries::alert_rules_with_for(&rules_yaml, "5s"));
    assert_eq!(config.scrape_interval, Duration::from_secs(1));
    assert_eq!(config.evaluation_interval, Duration::from_secs(1));
    let prom = Prometheus::start_with(&config);
    phase(start, "prometheus is up");

    // Prometheus must have seen the OOM container, named, with no OOM kill yet, before
    // the kill: the counter then rises while it watches (increase() sees 0 → 1). The
    // first run of the exiting container must have been scraped too, so its relaunch
    // counts as a restart.
    let oom_sel = format!(
        "container_oom_events_total{{id=\"{}\",name=\"{}\"}}",
        oom.cgroup(),
        oom.name
    );
    prom.wait_for(
        Duration::from_secs(20),
        "scraping the named OOM container and the exit code",
        |p| {
            p.query(&oom_sel)
                .first()
                .is_some_and(|s| value_of(s) == 0.0)
                && p.query(&format!(
                    "agent_container_exit_code{{id=\"{}\",name=\"{}\"}}",
                    exits.cgroup(),
                    exits.name
                ))
                .first()
                .is_some_and(|s| value_of(s) == f64::from(EXIT_CODE))
        },
    );
    phase(
        start,
        "prometheus has scraped the OOM container before the kill, and the exit code",
    );

    // The same name again, as a restart policy would do.
    env.agent(&["rm", &exits.name]).ok();
    exits = launch(&env, Role::Exits, exits.name.clone(), &[], &exit_script);
    let second_exit = env.wait_exited(&exits.name, 10);
    assert_eq!(second_exit["exit_code"], EXIT_CODE, "{second_exit:#}");
    phase(
        start,
        "the exiting container was launched again under its name",
    );

    // Trigger the OOM container: exec, tmpfs mount, OOM kill of a child.
    std::fs::write(format!("/proc/{oom_pid}/root/tmp/go"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = env.agent(&["logs", &oom.name]).ok().stdout;
        if log.contains("child=") {
            break log;
        }
        assert!(Instant::now() < deadline, "OOM container log: {log:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        log.contains("mounted") && log.contains(&format!("child={}", 128 + libc::SIGKILL)),
        "the tmpfs mount should succeed and the child be killed by SIGKILL: {log:?}"
    );
    assert!(alive(oom_pid), "the OOM container must keep its PID 1");
    assert_eq!(env.inspect(&oom.name)["status"], "running");
    phase(
        start,
        "the OOM container mounted a tmpfs and its child was OOM-killed",
    );

    let containers = [&near, &oom, &cpu, &exits, &restarts];
    let ids: Vec<String> = [&first_exit["id"], &second_exit["id"]]
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .chain([&near, &oom, &cpu].iter().map(|c| c.id.clone()))
        .collect();
    assert_eq!(ids.len(), 5);
    // The alerts reach the firing state, each for its own container.
    let mut fired: Vec<(&str, Role, f64)> = Vec::new();
    let alerts_deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let alerts = prom.alerts();
        for (alert, role) in ALERTS {
            if fired.iter().any(|(a, r, _)| a == alert && r == role) {
                continue;
            }
            let c = containers.iter().find(|c| c.role == *role).unwrap();
            if let Some(a) = alerts.iter().find(|a| {
                a["labels"]["alertname"] == *alert
                    && a["labels"]["name"] == c.name.as_str()
                    && a["state"] == "firing"
            }) {
                let summary = a["annotations"]["summary"].as_str().unwrap_or_default();
                assert!(
                    summary.contains(&c.name),
                    "{alert}: summary does not name the container {}: {a}",
                    c.name
                );
                // The exiting container ran under two ids; either may fire.
                if c.role != Role::Exits {
                    assert_eq!(a["labels"]["id"], c.cgroup().as_str(), "{alert}: {a}");
                }
                phase(
                    start,
                    &format!("{alert} firing (value {}): {summary}", a["value"]),
                );
                fired.push((alert, *role, start.elapsed().as_secs_f64()));
            }
        }
        if fired.len() == ALERTS.len() {
            break;
        }
        if Instant::now() > alerts_deadline {
            let missing: Vec<_> = ALERTS
                .iter()
                .filter(|(a, r)| !fired.iter().any(|(f, fr, _)| f == a && fr == r))
                .map(|(a, r)| format!("{a} ({r:?})"))
                .collect();
            let states: Vec<String> = alerts
                .iter()
                .map(|a| {
                    format!(
                        "{} {} {} {}",
                        a["labels"]["alertname"],
                        a["labels"]["name"],
                        a["labels"]["id"],
                        a["state"]
                    )
                })
                .collect();
            panic!("alerts not firing after 40s: {missing:?}; alerts now: {states:#?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for c in [&near, &oom, &cpu] {
        assert_eq!(
            env.inspect(&c.name)["status"],
            "running",
            "{} still runs",
            c.name
        );
    }

    // The near-limit container holds more than 90 % of its limit.
    let share = prom.query(&format!(
        "container_memory_working_set_bytes{{id=\"{0}\"}} / container_spec_memory_limit_bytes{{id=\"{0}\"}}",
        near.cgroup()
    ));
    let share = share.first().map(value_of).unwrap_or(0.0);
    assert!(share > 0.9, "working set / limit = {share}");
    eprintln!(
        "near-limit container: working set {:.1} MiB = {:.1} % of 64 MiB",
        share * 64.0,
        share * 100.0
    );

    // The exec and the mount of the OOM container are counted under its name (they
    // happened in a mount namespace of its own, found through its cgroup).
    for (family, what) in [
        ("agent_exec_events_total", "exec"),
        ("agent_mount_events_total", "mount"),
    ] {
        let sel = format!("sum({family}{{name=\"{}\"}})", oom.name);
        prom.wait_for(
            Duration::from_secs(10),
            &format!("counting the OOM container's {what} events"),
            |p| p.query(&sel).first().is_some_and(|s| value_of(s) >= 1.0),
        );
    }
    let mounts = prom.query(&format!(
        "agent_mount_events_total{{name=\"{}\",operation=\"mount\",result=\"ok\"}}",
        oom.name
    ));
    assert!(
        mounts.first().is_some_and(|s| value_of(s) >= 1.0),
        "the tmpfs mount is counted as a successful mount: {mounts:?}"
    );
    phase(
        start,
        "exec and mount events counted under the container's name",
    );

    // Every dashboard query, with the variables as Grafana would set them: this agent's
    // instance, and the four containers selected (a multi-value regex).
    let dashboard = dashboard_queries::load_dashboard();
    let mut vars = Variables::new(&agent.addr, config.scrape_interval);
    vars.container = format!(
        "({})",
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join("|")
    );
    // PSI lives on the cgroup2 mount (the root on v2, `unified/` on a hybrid host).
    let h = common::host_hierarchy();
    let psi_available = h
        .unified_dir(&oom.cgroup())
        .is_some_and(|d| d.join("cpu.pressure").exists());
    // Where the cgroup2 mount has PSI (v2, or this kind of hybrid host), `agent
    // launch` must place its containers there too, as runc does.
    let host_psi = h
        .unified_dir("/")
        .is_some_and(|d| d.join("cpu.pressure").exists());
    assert!(
        psi_available || !host_psi,
        "the cgroup2 mount has PSI files but the launched container has none there"
    );
    if !psi_available {
        eprintln!(
            "NOTE: the launched containers have no PSI files on this host (no cgroup2 \
             mount with pressure files): the pressure panels may return no data"
        );
    }

    let queries = dashboard_queries::panel_queries(&dashboard);
    let mut failures = Vec::new();
    let mut checked = 0;
    let query_start = Instant::now();
    for q in &queries {
        let promql = vars
            .substitute(&q.expr)
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        let result = if q.instant {
            prom.try_query(&promql)
        } else {
            prom.try_query_range(&promql, Duration::from_secs(60), vars.interval)
        };
        let series = match result {
            Ok(series) => series,
            Err(e) => {
                failures.push(format!("{q}: error: {e}\n    {promql}"));
                continue;
            }
        };
        let has_data = series.iter().any(|s| {
            s.get("value").is_some()
                || s["values"].as_array().is_some_and(|v| !v.is_empty())
                || s.is_string()
                || s.is_array()
        });
        let psi_only = !psi_available && metric_names(&promql).iter().all(|n| is_psi_metric(n));
        if !has_data && psi_only {
            eprintln!("SKIPPED {q}: this host's containers have no PSI files");
            continue;
        }
        let network_only = !host_has_counted_interface()
            && metric_names(&promql).iter().all(|n| is_network_metric(n));
        if !has_data && network_only {
            eprintln!("SKIPPED {q}: this host has no network interface but loopback");
            continue;
        }
        let disk_only = disk.is_err() && metric_names(&promql).iter().all(|n| is_disk_metric(n));
        if !has_data && disk_only {
            eprintln!("SKIPPED {q}: the containers' state root is on no disk");
            continue;
        }
        checked += 1;
        if !has_data {
            failures.push(format!("{q}: no data\n    {promql}"));
        }
    }
    for v in dashboard_queries::variable_queries(&dashboard) {
        let promql = vars
            .substitute(&v.promql().unwrap())
            .unwrap_or_else(|e| panic!("variable {}: {e}", v.name));
        checked += 1;
        match prom.try_query(&promql) {
            Err(e) => failures.push(format!("variable {}: error: {e}\n    {promql}", v.name)),
            Ok(series) => {
                // `count by (label) (…)`: each series carries one value of the label.
                let label = promql
                    .strip_prefix("count by (")
                    .and_then(|r| r.split_once(')'))
                    .map(|(l, _)| l.trim())
                    .unwrap_or_else(|| panic!("variable {}: {promql}", v.name));
                let values: BTreeSet<String> = series
                    .iter()
                    .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
                    .collect();
                // The variable must offer what this test selects (of the containers,
                // those with a cgroup now: the exited one has none).
                let wanted: Vec<&str> = match v.name.as_str() {
                    "instance" => vec![agent.addr.as_str()],
                    "container" => [&near, &oom, &cpu]
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect(),
                    _ => vec![],
                };
                if values.is_empty() || wanted.iter().any(|w| !values.contains(*w)) {
                    failures.push(format!(
                        "variable {}: values {values:?}, want {wanted:?}\n    {promql}",
                        v.name
                    ));
                }
            }
        }
    }
    phase(
        start,
        &format!(
            "{checked} panel and variable queries checked in {:.2}s",
            query_start.elapsed().as_secs_f64(),
        ),
    );
    assert!(
        failures.is_empty(),
        "{} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // A few panels must show exactly what this test did.
    let instant = |title: &str| -> Vec<serde_json::Value> {
        let q = queries
            .iter()
            .find(|q| q.panel_title == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        prom.query(&vars.substitute(&q.expr).unwrap())
    };
    let first = |title: &str| instant(title).first().map(value_of).unwrap_or(f64::NAN);
    assert_eq!(
        first("Containers"),
        4.0,
        "four containers with a cgroup selected (the restarting one keeps its cgroup between runs)"
    );
    assert!(first("OOM kills in range") >= 1.0, "the OOM kill is shown");
    assert_eq!(
        first("Near memory limit"),
        1.0,
        "exactly one container near its limit"
    );
    let by_name = |title: &str, name: &str| -> f64 {
        instant(title)
            .iter()
            .find(|s| s["metric"]["name"] == name)
            .map(value_of)
            .unwrap_or(f64::NAN)
    };
    assert_eq!(
        by_name("Restarts (15m)", &exits.name),
        1.0,
        "one relaunch under the same name"
    );
    assert_eq!(
        by_name("Restarts (15m)", &near.name),
        0.0,
        "no restart of a container launched once"
    );
    // The panel's second query: the supervisor's restarts, from
    // agent_container_restarts_total.
    let policy = queries
        .iter()
        .find(|q| q.panel_title == "Restarts (15m)" && q.ref_id == "B")
        .expect("the restart-policy query of the Restarts panel");
    let policy = prom.query(&vars.substitute(&policy.expr).unwrap());
    let value = |name: &str| {
        policy
            .iter()
            .find(|s| s["metric"]["name"] == name)
            .map(value_of)
            .unwrap_or(f64::NAN)
    };
    assert!(value(&restarts.name) >= 1.0, "{policy:?}");
    assert_eq!(value(&near.name), 0.0, "{policy:?}");
    let count = env.inspect(&restarts.name)["restart_count"]
        .as_f64()
        .unwrap();
    assert!(value(&restarts.name) <= count, "{policy:?} vs {count}");
    assert_eq!(
        by_name("Last exit code", &exits.name),
        f64::from(EXIT_CODE),
        "the exit code is shown"
    );
    let attached: Vec<String> = instant("eBPF programs attached")
        .iter()
        .filter(|s| value_of(s) == 1.0)
        .map(|s| s["metric"].to_string())
        .collect();
    assert!(
        !attached.is_empty(),
        "the traced agent has eBPF programs attached"
    );
    eprintln!("eBPF programs attached: {attached:?}");
    if disk.is_ok() {
        // The near-limit container's direct I/O, as the disk panels show it.
        for family in [
            "container_fs_writes_bytes_total",
            "container_fs_reads_bytes_total",
        ] {
            let sum = prom.query(&format!("sum({family}{{id=\"{}\"}})", near.cgroup()));
            let bytes = sum.first().map(value_of).unwrap_or(0.0);
            assert!(
                (8.0 * 1048576.0..=8.4 * 1048576.0).contains(&bytes),
                "{family} of the near-limit container: {bytes} for 8 MiB"
            );
        }
    }
    let throttled = prom.query(&format!(
        "rate(container_cpu_cfs_throttled_periods_total{{id=\"{0}\"}}[5s]) / rate(container_cpu_cfs_periods_total{{id=\"{0}\"}}[5s])",
        cpu.cgroup()
    ));
    assert!(
        throttled.first().map(value_of).unwrap_or(0.0) > 0.5,
        "the throttled container is throttled in most periods: {throttled:?}"
    );

    for (alert, role, at) in &fired {
        eprintln!("{alert} ({role:?}) fired at {at:.1}s");
    }
    phase(start, "done");
    drop(prom);
    drop(agent);
    let state_root = env.dir.path().to_string_lossy().into_owned();
    drop(env);
    // Nothing of the containers is left: no cgroup in any hierarchy, no mount, no
    // process (a process would keep its cgroup).
    let cgroups: Vec<_> = launch_support::agent_cgroups()
        .into_iter()
        .filter(|p| ids.iter().any(|id| p.ends_with(id)))
        .collect();
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    let mounts = launch_support::mounts_containing(&state_root);
    assert!(mounts.is_empty(), "mounts left behind: {mounts:#?}");
    phase(start, "cleaned up");
}
