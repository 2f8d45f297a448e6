//! `cargo xtask bench scrape`: scrape latency, size, CPU and memory of the release
//! agent over N real cgroups, against a baseline that reads the same files once
//! (open, read, close) in the same run; how many of the N it exported; and its
//! CPU while nobody scrapes (idle).
//!
//! Each cgroup holds one task in a network namespace of its own with one exported
//! interface (`eth0`, one end of a veth pair whose other end, `veth0`, is left out
//! as cAdvisor leaves it), as a container on a bridge has, so every group is read:
//! the network counters too. The baseline reads each task's `/proc/<pid>/net/dev`
//! as well.
//!
//! The agent runs with a 20,000 descriptor limit, as a DaemonSet commonly has, in a
//! memory cgroup of its own: the `cgroup MiB` column is what that cgroup is charged
//! after the scrapes, RSS plus the kernel memory the agent holds (each stat file it
//! keeps open holds a seq_file page), i.e. what a container memory limit sees.
//! The cgroups are removed on every exit this process sees; those of a run that
//! was killed (`agent-bench-<pid>` of a pid that is gone) are removed by the next.

use agent::cgroup::Hierarchy;
use agent::cgroup::stats::stat_files;
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRAPES: usize = 50;
const WARMUP: usize = 3;
/// Seconds the idle CPU is measured over.
const IDLE_SECS: u64 = 20;
/// Seconds left to settle first: the scrapes before handed the layer walker
/// N new containers, whose layers it looks up once (a read of each task's
/// mountinfo), which is start-up work, not the steady cost of idling.
const IDLE_SETTLE_SECS: u64 = 10;
/// The agent's descriptor limit.
const FD_LIMIT: u64 = 20_000;
pub(crate) const PARENT_PREFIX: &str = "agent-bench-";

/// Removes the cgroups of earlier runs whose process is gone.
pub(crate) fn sweep_stale(h: &Hierarchy) {
    let mut roots: Vec<PathBuf> = h.controller_dirs("/");
    roots.extend(h.unified_dir("/"));
    roots.sort();
    roots.dedup();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(PARENT_PREFIX) else {
                continue;
            };
            if Path::new("/proc").join(pid).exists() {
                continue;
            }
            if let Ok(children) = std::fs::read_dir(e.path()) {
                for c in children.flatten() {
                    if c.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(c.path());
                    }
                }
            }
            if std::fs::remove_dir(e.path()).is_ok() {
                eprintln!("bench: removed {} left by a killed run", e.path().display());
            }
        }
    }
}

/// N empty cgroups in every controller, removed on drop.
pub(crate) struct BenchCgroups {
    parent_dirs: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    paths: Vec<String>,
}

impl BenchCgroups {
    pub(crate) fn create(h: &Hierarchy, parent: &str, n: usize) -> anyhow::Result<Self> {
        let mut me = BenchCgroups {
            parent_dirs: h.controller_dirs(parent),
            dirs: Vec::new(),
            paths: Vec::new(),
        };
        if h.is_v2() {
            for c in ["+memory", "+cpu", "+pids", "+io"] {
                let _ = std::fs::write(h.root().join("cgroup.subtree_control"), c);
            }
        }
        for d in &me.parent_dirs {
            std::fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
            if h.is_v2() {
                for c in ["+memory", "+cpu", "+pids", "+io"] {
                    let _ = std::fs::write(d.join("cgroup.subtree_control"), c);
                }
            }
        }
        for i in 0..n {
            let path = format!("{parent}/c{i:04}");
            for d in h.controller_dirs(&path) {
                std::fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
                me.dirs.push(d);
            }
            me.paths.push(path);
        }
        Ok(me)
    }
}

impl Drop for BenchCgroups {
    fn drop(&mut self) {
        for d in self.dirs.iter().chain(self.parent_dirs.iter()) {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// One sleeping task per cgroup, each in a network namespace of its own holding a
/// veth `eth0`; killed on drop (before the cgroups are removed).
struct BenchTasks {
    children: Vec<Child>,
}

impl BenchTasks {
    fn start(h: &Hierarchy, paths: &[String]) -> anyhow::Result<Self> {
        let mut me = BenchTasks {
            children: Vec::with_capacity(paths.len()),
        };
        for path in paths {
            let child = Command::new("unshare")
                .args(["--net", "--", "sh", "-c"])
                .arg("ip link add eth0 type veth peer name veth0 && ip link set eth0 up && exec sleep 1000000")
                .stdin(Stdio::null())
                .spawn()
                .context("unshare --net (util-linux) and ip (iproute2)")?;
            let pid = child.id();
            me.children.push(child);
            for dir in h.controller_dirs(path) {
                std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                    .with_context(|| format!("moving {pid} into {}", dir.display()))?;
            }
        }
        // Ready once each has made its interface and become `sleep`.
        let deadline = Instant::now() + Duration::from_secs(120);
        for c in &mut me.children {
            let comm = format!("/proc/{}/comm", c.id());
            while std::fs::read_to_string(&comm).map_or(true, |s| s.trim() != "sleep") {
                if let Some(status) = c.try_wait()? {
                    bail!("a bench task exited: {status}");
                }
                if Instant::now() > deadline {
                    bail!("bench tasks not ready in 120s");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(me)
    }

    fn net_dev_files(&self) -> Vec<PathBuf> {
        self.children
            .iter()
            .map(|c| PathBuf::from(format!("/proc/{}/net/dev", c.id())))
            .collect()
    }
}

impl Drop for BenchTasks {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// The release agent as a child; killed on drop.
pub(crate) struct Agent {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keep-alive HTTP/1.1 client, as Prometheus scrapes: one connection, many GETs.
pub(crate) struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub(crate) fn connect(addr: &str) -> anyhow::Result<Self> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(s),
        })
    }

    /// GETs /metrics and returns the body.
    pub(crate) fn scrape(&mut self, gzip: bool) -> anyhow::Result<Vec<u8>> {
        let enc = if gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept: application/openmetrics-text;version=1.0.0\r\n{enc}\r\n"
        );
        self.reader.get_mut().write_all(req.as_bytes())?;
        let mut len = None;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("connection closed");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = Some(v.trim().parse::<usize>()?);
            }
        }
        let len = len.context("no content-length")?;
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(body)
    }
}

/// A memory cgroup of the agent's own (`/agent-bench-<pid>-self`), so that what it
/// is charged, kernel memory included, can be read; removed on drop.
struct AgentCgroup {
    dir: PathBuf,
    usage: PathBuf,
}

impl AgentCgroup {
    fn create(h: &Hierarchy) -> anyhow::Result<Self> {
        let rel = format!("/{PARENT_PREFIX}{}-self", std::process::id());
        let dir = h
            .dir(agent::cgroup::Controller::Memory, &rel)
            .context("no memory controller")?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let usage = ["memory.current", "memory.usage_in_bytes"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .context("no memory usage file")?;
        Ok(AgentCgroup { dir, usage })
    }

    /// What the cgroup is charged now (user and kernel memory), in MiB.
    fn charged_mib(&self) -> anyhow::Result<f64> {
        Ok(std::fs::read_to_string(&self.usage)?
            .trim()
            .parse::<f64>()?
            / 1048576.0)
    }
}

impl Drop for AgentCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn start_agent(bin: &PathBuf, parent: &str, cgroup: &AgentCgroup) -> anyhow::Result<Agent> {
    start_agent_in(bin, parent, &[], Some(&cgroup.dir.join("cgroup.procs")))
}

/// The release agent over the cgroups under `parent`, with `extra` flags.
pub(crate) fn start_agent_with(
    bin: &PathBuf,
    parent: &str,
    extra: &[&str],
) -> anyhow::Result<Agent> {
    start_agent_in(bin, parent, extra, None)
}

/// [`start_agent_with`], in the cgroup whose `cgroup.procs` is `procs` from its
/// first instruction (everything it is charged is charged there).
fn start_agent_in(
    bin: &PathBuf,
    parent: &str,
    extra: &[&str],
    procs: Option<&Path>,
) -> anyhow::Result<Agent> {
    let procs = procs
        .map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()))
        .transpose()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let state = std::env::temp_dir().join(format!("agent-bench-state-{}", std::process::id()));
    let mut child = Command::new(bin);
    child
        .args([
            "serve",
            "--listen",
            &addr,
            "--include",
            &format!("{parent}/*"),
        ])
        .arg("--state-dir")
        .arg(&state)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the closure only calls open, write, close and
    // setrlimit, which are async-signal-safe, on data made before the fork.
    unsafe {
        child.pre_exec(move || {
            if let Some(procs) = &procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            let lim = libc::rlimit {
                rlim_cur: FD_LIMIT,
                rlim_max: FD_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = child.spawn().context("starting the agent")?;
    let agent = Agent { child, addr };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&agent.addr).is_err() {
        if Instant::now() > deadline {
            bail!("agent did not listen within 10s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(agent)
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((f[11].parse::<f64>()? + f[12].parse::<f64>()?) / hz)
}

/// (VmRSS, VmHWM) in MiB.
pub(crate) fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Reads every stat file of every cgroup once: open, read to the end, close.
fn baseline_once(files: &[PathBuf], buf: &mut Vec<u8>) -> usize {
    let mut bytes = 0;
    for f in files {
        if let Ok(mut file) = std::fs::File::open(f) {
            buf.clear();
            if file.read_to_end(buf).is_ok() {
                bytes += buf.len();
            }
        }
    }
    bytes
}

struct Row {
    n: usize,
    p50_ms: f64,
    p99_ms: f64,
    bytes: usize,
    gzip_bytes: usize,
    cpu_ms: f64,
    rss: f64,
    hwm: f64,
    /// What the agent's memory cgroup is charged after the scrapes, MiB: its
    /// resident memory and the kernel memory it holds (a kept file's seq_file
    /// page, the dentries and inodes of the files it opened first).
    charged: f64,
    base_p50_ms: f64,
    read_p50_ms: f64,
    /// The same read with the network group off.
    read_no_net_p50_ms: f64,
    encode_p50_ms: f64,
    /// Cgroups with a `container_cpu_usage_seconds_total` series.
    exported: usize,
    /// Cgroups with a `container_network_receive_bytes_total` series.
    with_network: usize,
    /// Agent CPU while nobody scrapes, percent of one core.
    idle_pct: f64,
    /// The same over the settling seconds before.
    settle_pct: f64,
}

fn bench_n(bin: &PathBuf, h: &Hierarchy, n: usize) -> anyhow::Result<Row> {
    let parent = format!("/{PARENT_PREFIX}{}", std::process::id());
    let cgroups = BenchCgroups::create(h, &parent, n)?;
    let tasks = BenchTasks::start(h, &cgroups.paths)?;
    let mut files: Vec<PathBuf> = cgroups
        .paths
        .iter()
        .flat_map(|p| stat_files(h, p))
        .collect();
    files.extend(tasks.net_dev_files());
    if std::env::var_os("AGENT_BENCH_SCRAPE_HOLD").is_some() {
        hold(&parent, bin)?;
    }
    let agent_cgroup = AgentCgroup::create(h)?;
    let agent = start_agent(bin, &parent, &agent_cgroup)?;
    let pid = agent.child.id();
    let mut client = Client::connect(&agent.addr)?;
    let first = client.scrape(false)?;
    let first = String::from_utf8_lossy(&first);
    let count = |family: &str| {
        first
            .lines()
            .filter(|l| l.starts_with(family) && l.contains(&parent))
            .count()
    };
    let exported = count("container_cpu_usage_seconds_total{");
    let with_network = count("container_network_receive_bytes_total{");
    for _ in 0..WARMUP {
        client.scrape(false)?;
    }
    // Nobody scrapes: what the background rescans cost, once settled.
    let settle_before = cpu_seconds(pid)?;
    std::thread::sleep(Duration::from_secs(IDLE_SETTLE_SECS));
    let idle_before = cpu_seconds(pid)?;
    let settle_pct = (idle_before - settle_before) * 100.0 / IDLE_SETTLE_SECS as f64;
    std::thread::sleep(Duration::from_secs(IDLE_SECS));
    let idle_pct = (cpu_seconds(pid)? - idle_before) * 100.0 / IDLE_SECS as f64;
    let cpu_before = cpu_seconds(pid)?;
    let mut lat = Vec::with_capacity(SCRAPES);
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        let t = Instant::now();
        bytes = client.scrape(false)?.len();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cpu_ms = (cpu_seconds(pid)? - cpu_before) * 1e3 / SCRAPES as f64;
    let gzip_bytes = client.scrape(true)?.len();
    let (rss, hwm) = rss_mib(pid)?;
    let charged = agent_cgroup.charged_mib()?;
    lat.sort_by(f64::total_cmp);

    let mut buf = Vec::with_capacity(64 * 1024);
    let mut base = Vec::with_capacity(SCRAPES);
    for _ in 0..WARMUP {
        baseline_once(&files, &mut buf);
    }
    for _ in 0..SCRAPES {
        let t = Instant::now();
        std::hint::black_box(baseline_once(&files, &mut buf));
        base.push(t.elapsed().as_secs_f64() * 1e3);
    }
    base.sort_by(f64::total_cmp);
    drop(agent);
    drop(agent_cgroup);
    let (read_p50_ms, encode_p50_ms, read_no_net_p50_ms) = in_process(h, &parent)?;
    drop(tasks);
    drop(cgroups);
    Ok(Row {
        n,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        bytes,
        gzip_bytes,
        cpu_ms,
        rss,
        hwm,
        charged,
        base_p50_ms: percentile(&base, 0.5),
        read_p50_ms,
        read_no_net_p50_ms,
        encode_p50_ms,
        exported,
        with_network,
        idle_pct,
        settle_pct,
    })
}

/// `AGENT_BENCH_SCRAPE_HOLD=1`: keeps the N cgroups and their tasks until a line
/// arrives on stdin, and prints how to serve them, so one agent can be profiled
/// (`perf record -p`, `strace -c -p`) against the same rig again and again.
fn hold(parent: &str, bin: &Path) -> anyhow::Result<()> {
    println!(
        "rig ready under {parent}; serve it with:\n  ulimit -n {FD_LIMIT}; {} serve --state-dir /tmp/agent-hold-state --listen 127.0.0.1:9101 --include '{parent}/*'\npress Enter to tear it down and go on with the run",
        bin.display()
    );
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}

/// The same scrape inside this process, split into reading the files and encoding
/// the exposition, to show where the time goes.
fn in_process(h: &Hierarchy, parent: &str) -> anyhow::Result<(f64, f64, f64)> {
    use agent::cgroup::{Filter, MetricGroup, MetricGroups};
    use agent::container::{MetadataSource, Tracker};
    let filter = Filter::new(&[format!("{parent}/*")], &[])?;
    let meta = MetadataSource::new("/nonexistent", "/nonexistent");
    // The read without the network group, for what the network counters cost.
    let mut tracker = Tracker::new(
        h.clone(),
        filter.clone(),
        meta.clone(),
        Duration::from_secs(3600),
    )
    .with_groups(MetricGroups::without(&[MetricGroup::Network]));
    tracker.refresh(true);
    let mut no_net = Vec::new();
    for _ in 0..SCRAPES {
        let t = Instant::now();
        std::hint::black_box(tracker.collect().len());
        no_net.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(tracker);
    no_net.sort_by(f64::total_cmp);
    let mut tracker = Tracker::new(h.clone(), filter, meta, Duration::from_secs(3600));
    tracker.refresh(true);
    let mut read = Vec::new();
    for _ in 0..SCRAPES {
        let t = Instant::now();
        std::hint::black_box(tracker.collect().len());
        read.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let exporter = agent::metrics::Exporter::new(
        tracker,
        Default::default(),
        agent::metrics::ExportOptions::host(),
    );
    let mut total = Vec::new();
    for _ in 0..SCRAPES {
        let t = Instant::now();
        let text = exporter.scrape(agent::metrics::Format::OpenMetrics);
        std::hint::black_box(text.len());
        total.push(t.elapsed().as_secs_f64() * 1e3);
    }
    read.sort_by(f64::total_cmp);
    total.sort_by(f64::total_cmp);
    let r = percentile(&read, 0.5);
    Ok((
        r,
        (percentile(&total, 0.5) - r).max(0.0),
        percentile(&no_net, 0.5),
    ))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the scrape benchmark creates real cgroups: run it as root");
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![100, 1000]
    } else {
        args.iter()
            .map(|a| {
                a.parse()
                    .with_context(|| format!("{a:?} is not a cgroup count"))
            })
            .collect::<Result<_, _>>()?
    };
    let bin = crate::agent_binary()?;
    let h = Hierarchy::detect("/sys/fs/cgroup")?;
    sweep_stale(&h);
    println!(
        "scrape benchmark: {} cgroups layout, {SCRAPES} scrapes per size (OpenMetrics, keep-alive), baseline = open+read+close of the same files once",
        h.version()
    );
    println!(
        "{:>6} {:>8} {:>5} {:>9} {:>9} {:>10} {:>9} {:>11} {:>9} {:>9} {:>11} {:>12} {:>7} {:>9} {:>11} {:>9} {:>8} {:>9}",
        "N",
        "exported",
        "net",
        "p50 ms",
        "p99 ms",
        "bytes",
        "gz bytes",
        "cpu ms/scr",
        "RSS MiB",
        "HWM MiB",
        "cgroup MiB",
        "base p50 ms",
        "ratio",
        "read ms",
        "no-net ms",
        "encode ms",
        "idle %",
        "settle %"
    );
    for n in sizes {
        let r = bench_n(&bin, &h, n)?;
        println!(
            "{:>6} {:>8} {:>5} {:>9.2} {:>9.2} {:>10} {:>9} {:>11.2} {:>9.1} {:>9.1} {:>11.1} {:>12.2} {:>6.2}x {:>9.2} {:>11.2} {:>9.2} {:>8.2} {:>9.2}",
            r.n,
            r.exported,
            r.with_network,
            r.p50_ms,
            r.p99_ms,
            r.bytes,
            r.gzip_bytes,
            r.cpu_ms,
            r.rss,
            r.hwm,
            r.charged,
            r.base_p50_ms,
            r.p50_ms / r.base_p50_ms,
            r.read_p50_ms,
            r.read_no_net_p50_ms,
            r.encode_p50_ms,
            r.idle_pct,
            r.settle_pct
        );
    }
    println!(
        "targets: every cgroup exported, with its network; p50 at N=1000 within 0.3x of baseline and under 30 ms; RSS under 30 MiB (64 MiB at 10,000; the cgroup column adds the kernel memory it holds); idle CPU at 1000 at most 0.2% of a core (idle: 20 s after 10 s to settle, whose CPU is the settle column)"
    );
    Ok(())
}
