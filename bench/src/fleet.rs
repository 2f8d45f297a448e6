//! `cargo xtask bench fleet [K] [N] [SECS]`: K agents (default 20), each over its own
//! synthetic cgroup v2 tree of N containers (default 200; `--cgroup-root`), all
//! scraped every 5 s by one real Prometheus that also evaluates
//! `dashboards/recording.yml` — a fleet of K nodes on one machine. Reports series
//! per node and per container, Prometheus' ingestion (samples/s) and RSS, the p99
//! scrape duration, and the agents' CPU and RSS; then checks that the cluster-level
//! recording rules answer for all K nodes.
//!
//! The baseline, in the same run: one agent alone under the same Prometheus
//! settings. The ratios say what running K at once costs each of them (on this
//! shared machine, K agents and Prometheus compete for the same cores).
//!
//! The synthetic trees are regular files copied from a real cgroup v2 capture
//! (`tests/fixtures/cgroup-v2-debian-6.1/demo/holder`), so every container exports
//! what a real one does except network series (its `cgroup.procs` is empty: no
//! network namespace to read) and eBPF (the agents run `--no-ebpf`: K tracers on
//! one kernel would each see every event of the machine).

use crate::scrape::{cpu_seconds, percentile, rss_mib};
use agent_test_support::prometheus::{Config, Prometheus, value_of};
use anyhow::{Context, bail};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRAPE_INTERVAL: Duration = Duration::from_secs(5);
/// How long the baseline (one agent) is measured.
const BASELINE_SECS: u64 = 30;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cgroup-v2-debian-6.1")
}

/// A cgroup v2 tree of `n` Docker containers (`/docker/<64 hex>`) under `root`.
fn synthetic_tree(root: &Path, node: usize, n: usize) -> anyhow::Result<()> {
    let fixture = fixture_dir();
    let copy_files = |from: &Path, to: &Path| -> anyhow::Result<()> {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::copy(e.path(), to.join(e.file_name()))?;
            }
        }
        Ok(())
    };
    copy_files(&fixture.join("root"), root)?;
    copy_files(&fixture.join("demo"), &root.join("docker"))?;
    std::fs::write(root.join("docker/cgroup.procs"), "")?;
    for i in 0..n {
        let dir = root.join(format!("docker/{:064x}", (node << 32) | i));
        copy_files(&fixture.join("demo/holder"), &dir)?;
        // No process: nothing on this machine is the container's.
        std::fs::write(dir.join("cgroup.procs"), "")?;
        std::fs::write(dir.join("cgroup.threads"), "")?;
    }
    Ok(())
}

struct FleetAgent {
    child: Child,
    addr: String,
}

impl Drop for FleetAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(bin: &Path, dir: &Path, node: usize, n: usize) -> anyhow::Result<FleetAgent> {
    let tree = dir.join(format!("node-{node}/cgroup"));
    synthetic_tree(&tree, node, n)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let node_dir = dir.join(format!("node-{node}"));
    let child = Command::new(bin)
        .args(["serve", "--no-ebpf", "--listen", &addr])
        .arg("--cgroup-root")
        .arg(&tree)
        .arg("--docker-root")
        .arg(node_dir.join("docker"))
        .arg("--state-dir")
        .arg(node_dir.join("state"))
        .arg("--control-socket")
        .arg(node_dir.join("control.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting an agent")?;
    let agent = FleetAgent { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&agent.addr).is_err() {
        if Instant::now() > deadline {
            bail!("agent {node} did not listen within 20s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(agent)
}

/// What one phase measured.
struct Phase {
    /// The synthetic trees: removing 50 files per container takes a while on a
    /// busy disk, so it happens after the report.
    _trees: tempfile::TempDir,
    agents: usize,
    series_per_node: f64,
    samples_per_sec: f64,
    prometheus_rss_mib: f64,
    p99_scrape_ms: f64,
    scrapes: usize,
    agents_cpu_cores: f64,
    agent_cpu_ms_per_scrape: f64,
    agent_rss_mib_max: f64,
}

/// `prometheus_tsdb_head_samples_appended_total` from the server's own /metrics.
fn samples_appended(prom: &Prometheus) -> anyhow::Result<f64> {
    let (_, body) = agent_test_support::http_get(&prom.addr, "/metrics", &[])?;
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("prometheus_tsdb_head_samples_appended_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn run_phase(
    bin: &Path,
    k: usize,
    n: usize,
    secs: u64,
    check_rules: bool,
) -> anyhow::Result<Phase> {
    let dir = tempfile::Builder::new()
        .prefix("agent-bench-fleet")
        .tempdir()?;
    let agents: Vec<FleetAgent> = (0..k)
        .map(|node| start_agent(bin, dir.path(), node, n))
        .collect::<anyhow::Result<_>>()?;
    let recording = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/recording.yml"),
    )?;
    let mut config = Config::new(&agents[0].addr).with_rules(recording);
    config.targets = agents.iter().map(|a| a.addr.clone()).collect();
    config.nodes = Some((0..k).map(|i| format!("node-{i}")).collect());
    config.scrape_interval = SCRAPE_INTERVAL;
    config.evaluation_interval = SCRAPE_INTERVAL;
    let prom = Prometheus::start_with(&config);
    // Two scrapes of every target before measuring: discovery and first reads done.
    std::thread::sleep(SCRAPE_INTERVAL * 2 + Duration::from_secs(1));
    let cpu0: Vec<f64> = agents
        .iter()
        .map(|a| cpu_seconds(a.child.id()))
        .collect::<Result<_, _>>()?;
    let samples0 = samples_appended(&prom)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = t0.elapsed().as_secs_f64();
    let samples1 = samples_appended(&prom)?;
    let cpu1: Vec<f64> = agents
        .iter()
        .map(|a| cpu_seconds(a.child.id()))
        .collect::<Result<_, _>>()?;
    let cpu: f64 = cpu1.iter().zip(&cpu0).map(|(b, a)| b - a).sum();

    let per_target = prom.query("scrape_samples_scraped{job=\"agent\"}");
    if per_target.len() != k {
        bail!("Prometheus sees {} of {k} targets", per_target.len());
    }
    let series_per_node = per_target.iter().map(value_of).sum::<f64>() / k as f64;
    let durations = prom
        .try_query(&format!(
            "scrape_duration_seconds{{job=\"agent\"}}[{secs}s]"
        ))
        .map_err(anyhow::Error::msg)?;
    let mut all: Vec<f64> = durations
        .iter()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v[1].as_str()?.parse::<f64>().ok())
        .collect();
    all.sort_by(f64::total_cmp);
    if all.is_empty() {
        bail!("no scrape durations recorded");
    }
    let scrapes = all.len();
    let (prom_rss, _) = rss_mib(prom.pid())?;
    let agent_rss_max = agents
        .iter()
        .map(|a| rss_mib(a.child.id()).map(|r| r.0))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .fold(0.0, f64::max);
    if check_rules {
        check_recording_rules(&prom, k)?;
    }
    drop(prom);
    drop(agents);
    Ok(Phase {
        _trees: dir,
        agents: k,
        series_per_node,
        samples_per_sec: (samples1 - samples0) / elapsed,
        prometheus_rss_mib: prom_rss,
        p99_scrape_ms: percentile(&all, 0.99) * 1000.0,
        scrapes,
        agents_cpu_cores: cpu / elapsed,
        agent_cpu_ms_per_scrape: cpu * 1000.0 / scrapes as f64,
        agent_rss_mib_max: agent_rss_max,
    })
}

/// Every cluster-level recording rule answers, for all `k` nodes.
fn check_recording_rules(prom: &Prometheus, k: usize) -> anyhow::Result<()> {
    // Rules are evaluated every 30 s (the group's interval): wait for one.
    let deadline = Instant::now() + Duration::from_secs(70);
    let nodes = |q: &str| prom.try_query(q).map(|r| r.len()).unwrap_or(0);
    while nodes("node:container_memory_working_set_bytes:sum") < k
        || nodes("cluster:agent_tracked_cgroups:sum") < 1
    {
        if Instant::now() > deadline {
            bail!("the recording rules did not answer within 70 s");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    println!("  recording rules (dashboards/recording.yml):");
    for (rule, want_series) in [
        ("node:container_cpu_usage_seconds:rate5m", k),
        ("node:container_memory_working_set_bytes:sum", k),
        ("node:agent_tracked_cgroups:sum", k),
        ("cluster:container_cpu_usage_seconds:rate5m", 1),
        ("cluster:container_memory_working_set_bytes:sum", 1),
        ("cluster:agent_tracked_cgroups:sum", 1),
        ("cluster:agent_nodes_up:count", 1),
    ] {
        let r = prom.try_query(rule).map_err(anyhow::Error::msg)?;
        let shown = if r.len() == 1 {
            format!("{}", value_of(&r[0]))
        } else {
            format!("{} series", r.len())
        };
        println!("    {rule:<48} {shown}");
        if r.len() != want_series {
            bail!("{rule}: {} series, want {want_series}", r.len());
        }
    }
    let up = value_of(&prom.query("cluster:agent_nodes_up:count")[0]);
    if up as usize != k {
        bail!("cluster:agent_nodes_up:count is {up}, want {k}");
    }
    Ok(())
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let num = |i: usize, default: usize| -> anyhow::Result<usize> {
        args.get(i)
            .map(|s| s.parse().with_context(|| format!("{s:?} is not a number")))
            .unwrap_or(Ok(default))
    };
    let (k, n, secs) = (num(0, 20)?, num(1, 200)?, num(2, 60)? as u64);
    if k == 0 || n == 0 || secs < 10 {
        bail!("usage: fleet [K agents ≥ 1] [N containers ≥ 1] [SECS ≥ 10]");
    }
    let bin = crate::agent_binary()?;
    println!(
        "fleet: {k} agents × {n} synthetic containers (cgroup v2, --no-ebpf), one Prometheus \
         scraping every {}s; this machine is shared with other work, so absolute figures drift",
        SCRAPE_INTERVAL.as_secs()
    );
    // Series a node costs with no container: the per-container cost is the rest.
    let empty = run_phase(&bin, 1, 1, 10, false)?;
    let base = run_phase(&bin, 1, n, BASELINE_SECS, false)?;
    let fleet = run_phase(&bin, k, n, secs, true)?;
    let per_container = (base.series_per_node - empty.series_per_node) / (n - 1) as f64;
    println!(
        "  {:<34} {:>12} {:>12} {:>8}",
        "",
        "1 agent",
        format!("{k} agents"),
        "ratio"
    );
    let row = |what: &str, a: f64, b: f64| {
        println!("  {what:<34} {a:>12.3} {b:>12.3} {:>8.2}", b / a);
    };
    row(
        "series per node",
        base.series_per_node,
        fleet.series_per_node,
    );
    row(
        "Prometheus samples/s",
        base.samples_per_sec,
        fleet.samples_per_sec,
    );
    row(
        "Prometheus RSS (MiB)",
        base.prometheus_rss_mib,
        fleet.prometheus_rss_mib,
    );
    row(
        "p99 scrape duration (ms)",
        base.p99_scrape_ms,
        fleet.p99_scrape_ms,
    );
    row(
        "agents' CPU (cores, all agents)",
        base.agents_cpu_cores,
        fleet.agents_cpu_cores,
    );
    row(
        "CPU per agent per scrape (ms)",
        base.agent_cpu_ms_per_scrape,
        fleet.agent_cpu_ms_per_scrape,
    );
    row(
        "agent RSS (MiB, largest)",
        base.agent_rss_mib_max,
        fleet.agent_rss_mib_max,
    );
    println!(
        "  series per container: {per_container:.1} (+ 8 per network interface on a real one); \
         per node with no container: {:.0}; scrapes measured: {} and {}; agents: {} and {}",
        empty.series_per_node, base.scrapes, fleet.scrapes, base.agents, fleet.agents
    );
    Ok(())
}
