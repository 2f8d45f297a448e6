//! `cargo xtask bench ui`: what the web UI costs. Over N real cgroups (default
//! 1000), the release agent runs with `--no-web-ui` (before) and with the UI on but
//! no page open (after), alternately, and each prints its scrape p50/p99, its
//! resident size once the history holds a ring for every cgroup, and its CPU while
//! nobody scrapes (when the UI reads the cgroups itself every 20 s).

use crate::scrape::{
    BenchCgroups, Client, PARENT_PREFIX, cpu_seconds, percentile, rss_mib, start_agent_with,
    sweep_stale,
};
use agent::cgroup::Hierarchy;
use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const SCRAPES: usize = 50;
const WARMUP: usize = 3;
const ROUNDS: usize = 3;
/// Seconds the idle CPU is measured over: two of the UI's idle readings.
const IDLE_SECS: u64 = 41;

struct Run {
    p50_ms: f64,
    p99_ms: f64,
    rss_mib: f64,
    /// Containers in the table on `/` (UI on only).
    rows: Option<usize>,
    rss_after_page_mib: Option<f64>,
    idle_pct: Option<f64>,
}

fn page_rows(addr: &str) -> anyhow::Result<usize> {
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body.matches("<tr data-name=").count())
}

fn one(bin: &std::path::PathBuf, parent: &str, ui: bool, idle: bool) -> anyhow::Result<Run> {
    let mut flags = vec!["--no-ebpf"];
    if !ui {
        flags.push("--no-web-ui");
    }
    let agent = start_agent_with(bin, parent, &flags)?;
    let pid = agent.child.id();
    let mut client = Client::connect(&agent.addr)?;
    for _ in 0..WARMUP {
        client.scrape(false)?;
    }
    let mut lat = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let t = Instant::now();
        client.scrape(false)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let (rss, _) = rss_mib(pid)?;
    let (rows, rss_after_page_mib) = if ui {
        let rows = page_rows(&agent.addr)?;
        (Some(rows), Some(rss_mib(pid)?.0))
    } else {
        (None, None)
    };
    let idle_pct = if idle {
        let before = cpu_seconds(pid)?;
        std::thread::sleep(Duration::from_secs(IDLE_SECS));
        Some((cpu_seconds(pid)? - before) * 100.0 / IDLE_SECS as f64)
    } else {
        None
    };
    Ok(Run {
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        rss_mib: rss,
        rows,
        rss_after_page_mib,
        idle_pct,
    })
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the UI benchmark creates real cgroups: run it as root");
    }
    let n: usize = match args.first() {
        Some(a) => a
            .parse()
            .with_context(|| format!("{a:?} is not a cgroup count"))?,
        None => 1000,
    };
    let bin = crate::agent_binary()?;
    let h = Hierarchy::detect("/sys/fs/cgroup")?;
    sweep_stale(&h);
    let parent = format!("/{PARENT_PREFIX}{}", std::process::id());
    let cgroups = BenchCgroups::create(&h, &parent, n)?;
    println!(
        "web UI benchmark: {n} cgroups ({} layout), {SCRAPES} scrapes per run, {ROUNDS} rounds alternating --no-web-ui (before) and the UI on with no page open (after); this machine is shared with other builds, so compare within a run",
        h.version()
    );
    println!(
        "{:>5} {:>7} {:>8} {:>8} {:>9} {:>10} {:>11} {:>9}",
        "round", "ui", "p50 ms", "p99 ms", "RSS MiB", "table rows", "RSS+page", "idle CPU%"
    );
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut runs = Vec::new();
    for round in 0..ROUNDS {
        let last = round + 1 == ROUNDS;
        for ui in [false, true] {
            let r = one(&bin, &parent, ui, last)?;
            let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
            println!(
                "{:>5} {:>7} {:>8.2} {:>8.2} {:>9.1} {:>10} {:>11} {:>9}",
                round + 1,
                if ui { "on" } else { "off" },
                r.p50_ms,
                r.p99_ms,
                r.rss_mib,
                r.rows.map_or("-".to_owned(), |v| v.to_string()),
                opt(r.rss_after_page_mib),
                opt(r.idle_pct),
            );
            if ui {
                after.push(r.p50_ms);
            } else {
                before.push(r.p50_ms);
            }
            runs.push((ui, r));
        }
    }
    let (record_ms, read_ms) = record_in_process(&h, &parent)?;
    drop(cgroups);
    before.sort_by(f64::total_cmp);
    after.sort_by(f64::total_cmp);
    let (b, a) = (percentile(&before, 0.5), percentile(&after, 0.5));
    let rss = |ui: bool| {
        let mut v: Vec<f64> = runs
            .iter()
            .filter(|(u, _)| *u == ui)
            .map(|(_, r)| r.rss_mib)
            .collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    };
    let ring = n as f64 * agent::server::ui::history::RING_BYTES as f64 / 1048576.0;
    println!(
        "scrape p50 (median of rounds): before {b:.2} ms, after {a:.2} ms, ratio after/before {:.3}",
        a / b
    );
    println!(
        "RSS (median of rounds): before {:.1} MiB, after {:.1} MiB (+{:.1} MiB; the rings alone are {ring:.1} MiB for {n} containers); budget 64 MiB",
        rss(false),
        rss(true),
        rss(true) - rss(false)
    );
    println!(
        "in-process, what the UI adds to a scrape: History::record p50 {record_ms:.3} ms for {n} cgroups, {:.2}% of reading them ({read_ms:.2} ms p50)",
        record_ms * 100.0 / read_ms
    );
    if let Some((_, r)) = runs.iter().rev().find(|(ui, _)| *ui) {
        if r.rows != Some(n) {
            bail!("the UI's table lists {:?} containers, not {n}", r.rows);
        }
        if r.rss_mib > 64.0 {
            bail!(
                "RSS {:.1} MiB with the UI is over the 64 MiB budget",
                r.rss_mib
            );
        }
    }
    Ok(())
}

/// What feeding the history adds to one scrape, timed inside this process (free of
/// the HTTP round trip and the machine's noise): `History::record` over one reading
/// of every cgroup, next to the reading itself.
fn record_in_process(h: &Hierarchy, parent: &str) -> anyhow::Result<(f64, f64)> {
    use agent::cgroup::Filter;
    use agent::container::{MetadataSource, Tracker};
    use agent::server::ui::history::History;
    let filter = Filter::new(&[format!("{parent}/*")], &[])?;
    let meta = MetadataSource::new("/nonexistent", "/nonexistent");
    let mut tracker = Tracker::new(h.clone(), filter, meta, Duration::from_secs(3600));
    tracker.refresh(true);
    let mut read = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let t = Instant::now();
        std::hint::black_box(tracker.collect().len());
        read.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let history = History::default();
    let samples = tracker.collect();
    history.record(&samples);
    let mut record = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let t = Instant::now();
        history.record(&samples);
        record.push(t.elapsed().as_secs_f64() * 1e3);
    }
    read.sort_by(f64::total_cmp);
    record.sort_by(f64::total_cmp);
    Ok((percentile(&record, 0.5), percentile(&read, 0.5)))
}
