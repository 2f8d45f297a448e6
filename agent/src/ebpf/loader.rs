//! Loads and attaches the eBPF programs: the cheapest hook of each kind the
//! kernel allows, with its fallback, and the [`Tracer`] that owns them.

use super::attribution::Attributor;
use super::hooks::{
    HOOK_CGROUP_MKDIR, HOOK_EXEC, HOOK_EXIT, HOOK_MOUNT, MOUNT_FEXIT, NOT_CHOSEN, NOT_TRIED,
    OOM_HOOKS, PROGRAMS, attach_btf, attach_either, attach_fentry, attach_mount, event_of, status,
    turned_off,
};
pub use super::hooks::{HOOKS, MOUNT_FEXIT_HOOK, MountHook};
use super::metrics::EventCounters;
use super::reader::{Shared, boot_to_unix_offset_ns, read_loop};
use super::record::EventRecord;
use super::wire::{LOST_CGROUP, LOST_EXEC, LOST_EXIT, LOST_MOUNT, LOST_OOM};
use crate::container::ContainerLookup;
use aya::maps::{PerCpuArray, RingBuf};
use aya::{Btf, Ebpf, EbpfLoader};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The compiled programs (empty only when built with AGENT_EBPF_STUB=1 and no clang: see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/events.bpf.o"));

/// Errors of loading and attaching the tracer.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "this agent was built without its eBPF programs (AGENT_EBPF_STUB=1 and no clang at build time)"
    )]
    NotBuilt,
    #[error("cannot load the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("ring buffer size {0} is not a power of two of at least one page")]
    RingSize(u32),
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("no exec hook could be attached: {0}")]
    NoExecHook(String),
    #[error("cannot register the ring buffer with tokio")]
    Register(#[source] std::io::Error),
    #[error("cannot enable BPF run-time statistics")]
    Stats(#[source] aya::sys::SyscallError),
    #[error("the loader task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// Settings of the tracer.
#[derive(Clone, Debug)]
pub struct TracerConfig {
    /// Try `tp_btf/sched_process_exec` before `raw_tp/sched_process_exec`.
    /// Off forces the raw_tp fallback (tests use this to prove it works).
    pub prefer_tp_btf: bool,
    /// Trace the mount family. Where fexit is refused the hook is `sys_exit`,
    /// which runs on every syscall of every process (measured here: about
    /// 100 ns on a null syscall), so it can be turned off.
    pub trace_mounts: bool,
    /// The mount hooks to try, cheapest first; the first that attaches is used.
    /// Tests and benchmarks narrow it to prove each kind.
    pub mount_hooks: Vec<MountHook>,
    /// Trace process exits at `sched_process_exit` (runs once per exiting thread).
    pub trace_exits: bool,
    /// Ring buffer size in bytes: a power of two, a multiple of the page size.
    pub ring_buffer_bytes: u32,
    /// Series of containers and namespaces that are gone are dropped this
    /// long after their last event.
    pub series_grace: Duration,
    /// Capacity of the broadcast channel for live event subscribers.
    pub subscriber_queue: usize,
    /// Where /proc is (tests may point elsewhere).
    pub proc_root: PathBuf,
    /// How `/proc/<pid>/cgroup` paths map to the cgroup tree's.
    pub ns_view: crate::cgroup::NsView,
}

impl Default for TracerConfig {
    fn default() -> Self {
        TracerConfig {
            prefer_tp_btf: true,
            trace_mounts: true,
            mount_hooks: MountHook::ALL.to_vec(),
            trace_exits: true,
            ring_buffer_bytes: 1 << 20,
            series_grace: Duration::from_secs(300),
            subscriber_queue: 4096,
            proc_root: PathBuf::from("/proc"),
            ns_view: crate::cgroup::NsView::Host,
        }
    }
}

/// One program and whether it is live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStatus {
    /// The hook, e.g. `tp_btf/sched_process_exec`.
    pub hook: &'static str,
    pub attached: bool,
    /// Why it is not attached, when it was tried.
    pub error: Option<String>,
}

/// The running tracer. Dropping it stops the reader and detaches the programs.
///
/// Share it (`Arc<Tracer>`) between the metrics collector and the control socket.
pub struct Tracer {
    pub(super) shared: Arc<Shared>,
    reader: JoinHandle<()>,
    // Owns the programs and their links: keep it until the reader is stopped.
    ebpf: Ebpf,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("programs", &self.shared.programs)
            .field("received", &self.received())
            .finish_non_exhaustive()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// An error with its causes, on one line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

impl Tracer {
    /// Loads (off the async runtime), attaches, logs which hooks are live and
    /// starts the ring-buffer reader. Must be called inside a tokio runtime.
    pub async fn start(
        config: TracerConfig,
        lookup: Arc<dyn ContainerLookup>,
    ) -> Result<Tracer, EbpfError> {
        let cfg = config.clone();
        let (ebpf, programs) = tokio::task::spawn_blocking(move || load(&cfg))
            .await
            .map_err(EbpfError::Join)??;
        Self::finish(ebpf, programs, config, lookup)
    }

    /// Like [`Tracer::start`], but logs the start-up line (see
    /// `machine::privileges::startup_line`, with `missing` in it), and a failure is
    /// `None`: the agent goes on without event tracing.
    pub async fn start_or_warn(
        config: TracerConfig,
        lookup: Arc<dyn ContainerLookup>,
        missing: &[crate::machine::privileges::Missing],
    ) -> Option<Tracer> {
        use crate::machine::privileges::{Tracing, startup_line};
        let ns_view = config.ns_view.clone();
        let result = Self::start(config, lookup).await;
        let why;
        let tracing = match &result {
            Ok(t) => {
                for p in t.programs() {
                    if let Some(e) = &p.error {
                        tracing::debug!(hook = p.hook, "eBPF hook not attached: {e}");
                    }
                }
                Tracing::Attached(hooks_summary(t.programs()))
            }
            Err(err) => {
                why = error_chain(err);
                Tracing::Off(&why)
            }
        };
        let (warn, line) = startup_line(&tracing, missing, &ns_view);
        if warn {
            tracing::warn!("{line}");
        } else {
            tracing::info!("{line}");
        }
        result.ok()
    }

    fn finish(
        mut ebpf: Ebpf,
        programs: Vec<ProgramStatus>,
        config: TracerConfig,
        lookup: Arc<dyn ContainerLookup>,
    ) -> Result<Tracer, EbpfError> {
        let ring = ebpf
            .take_map("events")
            .ok_or(EbpfError::Missing("map events"))?;
        let ring = RingBuf::try_from(ring).map_err(|source| EbpfError::Map {
            name: "events",
            source,
        })?;
        let lost = ebpf
            .take_map("lost_events")
            .ok_or(EbpfError::Missing("map lost_events"))?;
        let lost = PerCpuArray::try_from(lost).map_err(|source| EbpfError::Map {
            name: "lost_events",
            source,
        })?;
        // SAFETY: the ring buffer owns its file descriptor, which stays open
        // and the same until the AsyncFd (and with it the RingBuf) is dropped.
        let fd = unsafe { AsyncFd::register(ring) }.map_err(|e| EbpfError::Register(e.into()))?;
        let (events_tx, _) = broadcast::channel(config.subscriber_queue.max(1));
        let shared = Arc::new(Shared {
            counters: Mutex::new(EventCounters::default()),
            attributor: Mutex::new(
                Attributor::new(Arc::clone(&lookup), &config.proc_root)
                    .with_ns_view(config.ns_view.clone()),
            ),
            lookup,
            lost: Mutex::new(lost),
            events_tx,
            programs,
            received: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            grace: config.series_grace,
            boot_to_unix_ns: boot_to_unix_offset_ns(),
        });
        let reader = tokio::spawn(read_loop(fd, Arc::clone(&shared)));
        Ok(Tracer {
            shared,
            reader,
            ebpf,
        })
    }

    /// Every program the tracer knows, attached or not.
    pub fn programs(&self) -> &[ProgramStatus] {
        &self.shared.programs
    }

    /// Whether one of the OOM hooks is live, so that OOM kills arrive as events.
    pub fn traces_oom_kills(&self) -> bool {
        self.shared
            .programs
            .iter()
            .any(|p| p.attached && OOM_HOOKS.contains(&p.hook))
    }

    /// Run count and time of each attached program (zero unless
    /// [`enable_run_time_stats`] is in force).
    pub fn program_stats(&self) -> Vec<ProgramRunStats> {
        self.shared
            .programs
            .iter()
            .filter(|p| p.attached)
            .filter_map(|p| {
                let names: Vec<&str> = if p.hook == MOUNT_FEXIT_HOOK {
                    MOUNT_FEXIT.iter().map(|(prog, _)| *prog).collect()
                } else {
                    vec![PROGRAMS[HOOKS.iter().position(|h| *h == p.hook)?]]
                };
                let mut stats = ProgramRunStats {
                    hook: p.hook,
                    run_count: 0,
                    run_time: Duration::ZERO,
                };
                for name in names {
                    let info = self.ebpf.program(name)?.info().ok()?;
                    stats.run_count += info.run_count();
                    stats.run_time += info.run_time();
                }
                Some(stats)
            })
            .collect()
    }

    /// A live feed of attributed events. A subscriber that falls behind by
    /// more than the queue gets `RecvError::Lagged` and goes on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.shared.events_tx.subscribe()
    }

    /// The sending side, for servers that subscribe per connection.
    pub fn event_sender(&self) -> broadcast::Sender<Arc<EventRecord>> {
        self.shared.events_tx.clone()
    }

    /// Records taken from the ring buffer so far.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Records the kernel could not deliver (ring buffer full), as (exec, mount).
    pub fn lost(&self) -> (u64, u64) {
        let lost = self.shared.lost.lock();
        let sum = |slot| lost.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0);
        (sum(LOST_EXEC), sum(LOST_MOUNT))
    }

    /// Exec and mount counts per container, namespace and host.
    pub fn with_counters<R>(&self, f: impl FnOnce(&EventCounters) -> R) -> R {
        f(&self.shared.counters.lock())
    }

    /// cgroup mkdir records the kernel could not deliver (ring buffer full).
    pub fn lost_cgroup_mkdir(&self) -> u64 {
        self.lost_slot(LOST_CGROUP)
    }

    /// Exit records the kernel could not deliver (ring buffer full).
    pub fn lost_exits(&self) -> u64 {
        self.lost_slot(LOST_EXIT)
    }

    /// OOM-kill records the kernel could not deliver (ring buffer full).
    pub fn lost_oom_kills(&self) -> u64 {
        self.lost_slot(LOST_OOM)
    }

    fn lost_slot(&self, slot: u32) -> u64 {
        let lost = self.shared.lost.lock();
        lost.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    pub(super) fn decode_errors(&self) -> u64 {
        self.shared.decode_errors.load(Ordering::Relaxed)
    }
}

/// The hooks that are live, those refused that another hook stands in for, and
/// those refused with nothing in their place: the start-up line says all three
/// (`machine::privileges::startup_line`) and warns only of the last.
pub fn hooks_summary(programs: &[ProgramStatus]) -> HooksSummary {
    let live: Vec<&'static str> = programs
        .iter()
        .filter(|p| p.attached)
        .map(|p| p.hook)
        .collect();
    let mut summary = HooksSummary {
        live,
        replaced: Vec::new(),
        not_attached: Vec::new(),
    };
    for p in programs {
        let Some(e) = &p.error else { continue };
        let why = format!("{} ({})", p.hook, short_reason(e));
        let event = event_of(p.hook);
        if summary.live.iter().any(|l| event_of(l) == event) {
            summary.replaced.push(why);
        } else {
            summary.not_attached.push(why);
        }
    }
    summary
}

/// A refusal as the start-up line gives it: EPERM, the usual one (kernels that
/// forbid fentry/fexit programs), in one word rather than aya's load error and
/// its empty verifier output; any other reason whole. The whole reasons are
/// logged at debug level.
fn short_reason(error: &str) -> &str {
    if error.contains("Operation not permitted") {
        "EPERM"
    } else {
        error
    }
}

/// The start-up line's account of the hooks (see [`hooks_summary`]).
#[derive(Debug, Default, PartialEq)]
pub struct HooksSummary {
    /// Attached hooks.
    pub live: Vec<&'static str>,
    /// Hooks refused (and why) whose event a live hook reports instead.
    pub replaced: Vec<String>,
    /// Hooks refused (and why) whose event no hook reports.
    pub not_attached: Vec<String>,
}

/// How often an attached program ran and for how long, as the kernel counts
/// it while run-time statistics are on ([`enable_run_time_stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramRunStats {
    pub hook: &'static str,
    pub run_count: u64,
    pub run_time: Duration,
}

/// Turns on the kernel's BPF run-time statistics (run count and time of
/// every program) while the returned descriptor is open. They cost two clock
/// reads per program run: for measurements, not for production.
pub fn enable_run_time_stats() -> Result<std::os::fd::OwnedFd, EbpfError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(EbpfError::Stats)
}

fn load(config: &TracerConfig) -> Result<(Ebpf, Vec<ProgramStatus>), EbpfError> {
    if OBJECT.is_empty() {
        return Err(EbpfError::NotBuilt);
    }
    // SAFETY: sysconf has no preconditions.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let size = config.ring_buffer_bytes;
    if !size.is_power_of_two() || size < page {
        return Err(EbpfError::RingSize(size));
    }
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("events", config.ring_buffer_bytes)
        .load(OBJECT)
        .map_err(EbpfError::Load)?;
    let mut programs = Vec::new();
    // The kernel's BTF is megabytes: parse it once for every tp_btf program.
    let btf = if config.prefer_tp_btf {
        Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {}", error_chain(&e)))
    } else {
        Err(NOT_TRIED.to_owned())
    };

    // exec: tp_btf first, raw_tp if the kernel refuses it. Without it, nothing.
    if !attach_either(&mut ebpf, &btf, &mut programs, HOOK_EXEC) {
        return Err(EbpfError::NoExecHook(format!(
            "tp_btf: {}; raw_tp: {}",
            programs[0].error.as_deref().unwrap_or("?"),
            programs[1].error.as_deref().unwrap_or("?")
        )));
    }

    // the mount family: fexit on its syscalls where allowed, else sys_exit.
    if config.trace_mounts {
        attach_mount(&mut ebpf, &btf, &mut programs, &config.mount_hooks);
    } else {
        programs.push(ProgramStatus {
            hook: MOUNT_FEXIT_HOOK,
            attached: false,
            error: Some("mount tracing is turned off".to_owned()),
        });
        turned_off(&mut programs, HOOK_MOUNT, "mount tracing is turned off");
    }

    // New cgroup2 directories, so that the ids of containers gone before
    // their events are read can still be attributed. Optional: without it,
    // ids are learned by stat'ing the cgroup2 tree.
    attach_either(&mut ebpf, &btf, &mut programs, HOOK_CGROUP_MKDIR);

    // Process exits. Optional: without them, `agent events` shows no exits
    // and agent_process_exits_total stays empty.
    if config.trace_exits {
        attach_either(&mut ebpf, &btf, &mut programs, HOOK_EXIT);
    } else {
        turned_off(&mut programs, HOOK_EXIT, "exit tracing is turned off");
    }

    // OOM kills: fentry on oom_kill_process knows which cgroup's limit was
    // hit; where fentry is refused, the mark_victim tracepoint (6.8+) names
    // the victim and the limit is inferred. Optional: memory.events still counts.
    let fentry = btf
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|btf| attach_fentry(&mut ebpf, "oom_kill_fentry", "oom_kill_process", btf));
    let fentry_ok = fentry.is_ok();
    programs.push(status(OOM_HOOKS[0], fentry));
    if fentry_ok {
        programs.push(ProgramStatus {
            hook: OOM_HOOKS[1],
            attached: false,
            error: None,
        });
    } else {
        let tp = btf
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|btf| attach_btf(&mut ebpf, "oom_mark_victim_btf", "mark_victim", btf));
        programs.push(status(OOM_HOOKS[1], tp));
    }

    // A fallback that was not needed, or a hook not tried, is no error.
    for p in &mut programs {
        if p.error
            .as_deref()
            .is_some_and(|e| e == NOT_TRIED || e == NOT_CHOSEN || e == "not needed")
        {
            p.error = None;
        }
    }
    Ok((ebpf, programs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;
    use prometheus_client::registry::Registry;

    #[test]
    fn a_refused_hook_is_replaced_only_when_its_event_has_a_live_hook() {
        let p = |hook, attached, error: Option<&str>| ProgramStatus {
            hook,
            attached,
            error: error.map(str::to_owned),
        };
        let summary = hooks_summary(&[
            p("tp_btf/sched_process_exec", true, None),
            p("raw_tp/sched_process_exec", false, None),
            p(MOUNT_FEXIT_HOOK, false, Some("EPERM")),
            p("tp_btf/sys_exit", true, None),
            p(OOM_HOOKS[0], false, Some("EPERM")),
            p(OOM_HOOKS[1], false, Some("no such tracepoint")),
        ]);
        assert_eq!(
            summary,
            HooksSummary {
                live: vec!["tp_btf/sched_process_exec", "tp_btf/sys_exit"],
                replaced: vec![format!("{MOUNT_FEXIT_HOOK} (EPERM)")],
                not_attached: vec![
                    "fentry/oom_kill_process (EPERM)".to_owned(),
                    "tp_btf/mark_victim (no such tracepoint)".to_owned()
                ],
            }
        );
        assert!(HOOKS.iter().all(|h| event_of(h) != "other"));
    }

    #[derive(Debug)]
    struct Off;

    impl Collector for Off {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            Tracer::encode_unavailable(&mut encoder)
        }
    }

    #[test]
    fn without_a_tracer_every_hook_reads_zero() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Off));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for hook in HOOKS {
            assert!(
                out.contains(&format!(
                    "agent_ebpf_program_attached{{program=\"{hook}\"}} 0\n"
                )),
                "{out}"
            );
        }
    }

    #[test]
    fn an_eperm_refusal_is_one_word_in_the_start_up_line() {
        let aya = "__x64_sys_mount: the BPF_PROG_LOAD syscall returned Operation not \
                   permitted (os error 1). Verifier output: : Operation not permitted (os error 1)";
        assert_eq!(short_reason(aya), "EPERM");
        assert_eq!(short_reason("no such tracepoint"), "no such tracepoint");
    }

    #[test]
    fn error_chain_is_one_line() {
        let err = EbpfError::Map {
            name: "events",
            source: aya::maps::MapError::InvalidName {
                name: "x".to_owned(),
            },
        };
        let line = error_chain(&err);
        assert!(line.starts_with("map events: "), "{line}");
        assert!(!line.contains('\n'));
    }
}
