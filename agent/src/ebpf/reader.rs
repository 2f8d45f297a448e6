//! The ring-buffer reader: waits on the buffer from tokio (and drains it on a
//! short tick too), decodes each record, attributes it to a container and
//! counts it, and hands it to the control socket's subscribers.

use super::ProgramStatus;
use super::attribution::{Attributor, Subject};
use super::events::{self, Event, Record};
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

/// How often the reader drains the ring buffer when the kernel did not wake
/// it (it only wakes it when the buffer is an eighth full).
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

pub(super) async fn read_loop(mut fd: AsyncFd<RingBuf<MapData>>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Pruning also runs at scrape time; this bounds memory when nobody scrapes.
    let mut last_prune = std::time::Instant::now();
    loop {
        if last_prune.elapsed() >= PRUNE_INTERVAL {
            shared.prune();
            last_prune = std::time::Instant::now();
        }
        tokio::select! {
            ready = fd.readable_mut() => match ready {
                Ok(mut guard) => {
                    drain(guard.get_inner_mut(), &shared);
                    guard.clear_ready();
                }
                Err(err) => {
                    tracing::error!(error = %err, "eBPF ring buffer: cannot wait; event tracing stops");
                    return;
                }
            },
            _ = tick.tick() => drain(fd.get_mut(), &shared),
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
