//! What the eBPF tests share: the skip rules, starting a tracer, collecting
//! its live events, and scraping its metric families.

use agent::container::ContainerLookup;
use agent::ebpf::{EbpfError, EventRecord, Tracer, TracerConfig};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

pub const BUSYBOX: &str = "/bin/busybox";

/// Why this machine cannot run the eBPF tests, if it cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!(
            "{BUSYBOX} missing (apt-get install busybox-static)"
        ));
    }
    None
}

/// Says why a test skips, past the test harness's output capture (which
/// takes `eprintln!`), so that a skip is never silent.
pub fn skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP: {reason}");
}

/// Starts the tracer, or explains why the test skips. A load failure on a
/// machine that should support it is a test failure, not a skip.
pub async fn start(config: TracerConfig, lookup: Arc<dyn ContainerLookup>) -> Option<Tracer> {
    if let Some(reason) = skip_reason() {
        skip(&reason);
        return None;
    }
    match Tracer::start(config, lookup).await {
        Ok(t) => Some(t),
        Err(EbpfError::NotBuilt) => {
            skip("eBPF programs not built (no clang at build time)");
            None
        }
        Err(e) => panic!(
            "tracer failed to start: {}",
            agent::ebpf::loader::error_chain(&e)
        ),
    }
}

/// Collects events from `rx` until `done` says so or `timeout` passes.
pub async fn collect(
    rx: &mut broadcast::Receiver<Arc<EventRecord>>,
    timeout: Duration,
    mut done: impl FnMut(&[Arc<EventRecord>]) -> bool,
) -> Vec<Arc<EventRecord>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(ev)) => seen.push(ev),
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => panic!("subscriber lagged by {n}"),
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
        }
    }
    seen
}

/// Receives until nothing arrives for `quiet` (or 10 s pass: a busy host
/// may never be quiet).
pub async fn drain(
    rx: &mut broadcast::Receiver<Arc<EventRecord>>,
    quiet: Duration,
) -> Vec<Arc<EventRecord>> {
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        match tokio::time::timeout(quiet, rx.recv()).await {
            Ok(Ok(ev)) => seen.push(ev),
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => panic!("subscriber lagged by {n}"),
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return seen,
        }
    }
    seen
}

#[derive(Debug)]
struct TracerFamilies(Arc<Tracer>);

impl Collector for TracerFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.0.encode_metrics(&mut encoder)
    }
}

/// The tracer's families as a scrape shows them (classic text format).
pub fn scrape(tracer: &Arc<Tracer>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(TracerFamilies(Arc::clone(tracer))));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
    out
}

/// The value of the series written exactly as `series` (name and labels).
pub fn sample_u64(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
