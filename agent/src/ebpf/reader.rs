//! The ring-buffer reader: waits on the buffer from tokio (woken by the first
//! record of a burst, see `wakeup_flags` in events.bpf.c), decodes each record,
//! attributes it to a container and counts it, and hands it to the control
//! socket's subscribers.

use super::ProgramStatus;
use super::attribution::{Attributor, Subject};
use super::events::{self, Event, Record, WAKE_BATCH_MS};
use super::metrics::EventCounters;
use super::record::EventRecord;
use crate::container::ContainerLookup;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// What the tracer, its reader task and its collector share.
pub(super) struct Shared {
    pub(super) counters: Mutex<EventCounters>,
    pub(super) attributor: Mutex<Attributor>,
    /// Learns cgroup2 ids from cgroup mkdir records.
    pub(super) lookup: Arc<dyn ContainerLookup>,
    pub(super) lost: Mutex<PerCpuArray<MapData, u64>>,
    pub(super) events_tx: broadcast::Sender<Arc<EventRecord>>,
    pub(super) programs: Vec<ProgramStatus>,
    pub(super) received: AtomicU64,
    pub(super) decode_errors: AtomicU64,
    pub(super) grace: Duration,
    pub(super) boot_to_unix_ns: i128,
}

/// After a wake-up the reader drains, and again once this window has passed with
/// no other wake-up: the rest of a burst does not wake it (`wakeup_flags` in
/// events.bpf.c wakes it at most once per window), so a busy host's records are
/// drained in batches. A cgroup mkdir or OOM record still wakes it at once, even
/// inside a window: a short-lived container's name is read from its runtime's
/// files while they are still there.
const BATCH_WINDOW: Duration = Duration::from_millis(WAKE_BATCH_MS);
/// Drains even without a wake-up this often: a record whose wake-up raced with
/// a drain (its flags were chosen while the reader was still consuming) waits at
/// most this long. An idle host costs one wake-up a second, not twenty.
const SAFETY_DRAIN: Duration = Duration::from_secs(1);
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

pub(super) async fn read_loop(mut fd: AsyncFd<RingBuf<MapData>>, shared: Arc<Shared>) {
    // Pruning also runs at scrape time; this bounds memory when nobody scrapes.
    let mut last_prune = std::time::Instant::now();
    // The end of the batch window after the last wake-up, if one is open.
    let mut window_end: Option<Instant> = None;
    loop {
        if last_prune.elapsed() >= PRUNE_INTERVAL {
            shared.prune();
            last_prune = std::time::Instant::now();
        }
        let timer = window_end.unwrap_or_else(|| Instant::now() + SAFETY_DRAIN);
        tokio::select! {
            ready = fd.readable_mut() => match ready {
                Ok(mut guard) => {
                    // Cleared before draining: a wake-up for a record that
                    // comes during the drain is kept for the next round.
                    guard.clear_ready();
                    drain(guard.get_inner_mut(), &shared);
                    window_end = Some(Instant::now() + BATCH_WINDOW);
                }
                Err(err) => {
                    tracing::error!(error = %err, "eBPF ring buffer: cannot wait; event tracing stops");
                    return;
                }
            },
            () = tokio::time::sleep_until(timer) => {
                // The window's records, which woke nobody (or the safety drain).
                drain(fd.get_mut(), &shared);
                window_end = None;
            }
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, shared: &Shared) {
    while let Some(item) = ring.next() {
        shared.handle(&item);
    }
}

impl Shared {
    /// Drops series and cache entries of containers and namespaces gone for
    /// longer than the grace period.
    pub(super) fn prune(&self) {
        let mut counters = self.counters.lock();
        let mut attributor = self.attributor.lock();
        counters.prune(self.grace, &attributor);
        attributor.expire(self.grace);
    }

    fn handle(&self, bytes: &[u8]) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let event = match events::decode_record(bytes) {
            Ok(Record::Event(e)) => e,
            Ok(Record::CgroupMkdir(_, m)) => {
                // Not an event of its own: it only tells the lookup which
                // cgroup path an id is, before that cgroup's events follow.
                self.lookup.learn_cgroup(m.id, &m.path);
                return;
            }
            Err(err) => {
                let n = self.decode_errors.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(error = %err, count = n + 1, "invalid eBPF record dropped");
                }
                return;
            }
        };
        let p = event.process();
        // An OOM record names the victim's memory cgroup: the container that
        // owns it, if any, needs no live process.
        let by_memcg = match &event {
            Event::Oom(_, o) if !o.truncated => {
                let path = o.path(0);
                self.lookup
                    .container_for_cgroup_path(&path)
                    .map(|l| (l, Subject::Container { cgroup_path: path }))
            }
            _ => None,
        };
        let (labels, subject) = by_memcg.unwrap_or_else(|| {
            self.attributor
                .lock()
                .attribute(p.mnt_ns, p.tgid, p.ppid, p.cgroup_id)
        });
        self.counters.lock().record(&labels, &subject, &event);
        if self.events_tx.receiver_count() > 0 {
            let mut record = EventRecord::new(&event, labels, self.boot_to_unix_ns);
            if let (Some(oom), Subject::Container { cgroup_path }) = (&mut record.oom, &subject) {
                oom.set_scope(cgroup_path);
            }
            // No subscriber left in between is fine.
            let _ = self.events_tx.send(Arc::new(record));
        }
    }
}

/// CLOCK_REALTIME − CLOCK_BOOTTIME, to turn the kernel's boot-time stamps into
/// wall-clock time.
pub(super) fn boot_to_unix_offset_ns() -> i128 {
    fn now(clock: libc::clockid_t) -> i128 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
        let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
        if rc != 0 {
            return 0;
        }
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    }
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME)
}
