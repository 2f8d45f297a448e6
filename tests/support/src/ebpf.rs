//! What the eBPF tests share: the skip rules, starting a tracer (on the mount
//! hook kind [`MOUNT_HOOK_ENV`] forces, if set), collecting its live events,
//! printing them for a comparison across hook kinds, and scraping its metric families.

use agent::container::ContainerLookup;
use agent::ebpf::{EbpfError, EventRecord, MountHook, Tracer, TracerConfig};
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

/// Names one mount hook (`fexit/mount_syscalls`, `tp_btf/sys_exit`,
/// `raw_tp/sys_exit`) that every tracer a test starts with the default chain
/// must use, so that the VM rig runs the same tests once per hook kind
/// (`cargo xtask vm-test`). A tracer on which the forced kind does not attach
/// fails the test: the rig forces only kinds its kernel allows.
pub const MOUNT_HOOK_ENV: &str = "AGENT_TEST_MOUNT_HOOK";

/// The mount hook [`MOUNT_HOOK_ENV`] forces, if any.
pub fn forced_mount_hook() -> Option<MountHook> {
    let name = std::env::var(MOUNT_HOOK_ENV)
        .ok()
        .filter(|v| !v.is_empty())?;
    let kind = MountHook::ALL.into_iter().find(|k| k.hook() == name);
    Some(kind.unwrap_or_else(|| {
        let known: Vec<&str> = MountHook::ALL.iter().map(|k| k.hook()).collect();
        panic!("{MOUNT_HOOK_ENV}={name:?} names no mount hook (known: {known:?})")
    }))
}

/// Starts the tracer, or explains why the test skips. A load failure on a
/// machine that should support it is a test failure, not a skip. A config
/// that keeps the default mount hook chain and tp_btf gets the kind
/// [`MOUNT_HOOK_ENV`] forces; one that chose its own kinds keeps them.
pub async fn start(mut config: TracerConfig, lookup: Arc<dyn ContainerLookup>) -> Option<Tracer> {
    if let Some(reason) = skip_reason() {
        skip(&reason);
        return None;
    }
    // A test that turned tp_btf off (the raw_tp fallback's) or chose its own
    // mount hooks keeps them.
    let forced = forced_mount_hook().filter(|_| {
        config.trace_mounts
            && config.prefer_tp_btf
            && config.mount_hooks.as_slice() == MountHook::ALL.as_slice()
    });
    if let Some(kind) = forced {
        eprintln!("mount hook forced to {} ({MOUNT_HOOK_ENV})", kind.hook());
        config.mount_hooks = vec![kind];
    }
    match Tracer::start(config, lookup).await {
        Ok(t) => {
            if let Some(kind) = forced {
                let status = t.programs().iter().find(|p| p.hook == kind.hook());
                assert!(
                    status.is_some_and(|p| p.attached),
                    "{MOUNT_HOOK_ENV}={} did not attach: {status:?}",
                    kind.hook()
                );
            }
            Some(t)
        }
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

/// Prints a test's events, reduced to what does not vary from run to run
/// (no pids, times or temporary paths), as one `EVENTS <test> <json>` line:
/// the VM rig compares these lines between its runs on each mount hook kind,
/// which must see the same events, event for event.
pub fn print_events(test: &str, rows: &[serde_json::Value]) {
    let line = serde_json::Value::Array(rows.to_vec());
    eprintln!("EVENTS {test} {line}");
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
