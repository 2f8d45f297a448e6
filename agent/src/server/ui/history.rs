//! The web UI's memory of the last 15 minutes: a fixed-size ring of `f32` samples
//! per container, fed by every scrape (and by a background sample only when no
//! scrape came recently), plus each container's latest readings for the table.
//!
//! Bytes per container: [`SLOTS`] × ([`FIELDS`] × 2 + 4) = 180 × 24 = 4,320 bytes of
//! ring, allocated once when the container is first seen, plus its name, image and
//! id strings and ~250 bytes of bookkeeping.

use crate::cgroup::CgroupStats;
use crate::container::Sample;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// The ring's resolution: a slot is written at most this often.
pub const STEP: Duration = Duration::from_secs(5);
/// Readings closer than this to the last recorded one are not recorded: the
/// table's values are at most this old, and scrapes in quick succession (two
/// Prometheus replicas, a benchmark) pay for one record.
pub const MIN_RECORD_GAP: Duration = Duration::from_secs(1);
/// Slots per container: 15 minutes at [`STEP`].
pub const SLOTS: usize = 180;

/// What one slot holds, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Bytes in use (`memory.current` / `memory.usage_in_bytes`).
    MemoryUsage,
    /// Bytes allowed; 0 = unlimited.
    MemoryLimit,
    /// CPU time used per second (cores) since the previous slot.
    CpuCores,
    /// Cores the quota allows; 0 = unlimited.
    CpuQuotaCores,
    /// Tasks (`pids.current`).
    Pids,
    /// Tasks allowed; 0 = unlimited.
    PidsMax,
    /// Throttled time per second since the previous slot.
    ThrottledPerSecond,
    /// PSI `some` waiting time per second (CPU, memory, I/O).
    PressureCpu,
    PressureMemory,
    PressureIo,
}

impl Field {
    pub const ALL: [Field; 10] = [
        Field::MemoryUsage,
        Field::MemoryLimit,
        Field::CpuCores,
        Field::CpuQuotaCores,
        Field::Pids,
        Field::PidsMax,
        Field::ThrottledPerSecond,
        Field::PressureCpu,
        Field::PressureMemory,
        Field::PressureIo,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Field::MemoryUsage => "memory_usage",
            Field::MemoryLimit => "memory_limit",
            Field::CpuCores => "cpu_cores",
            Field::CpuQuotaCores => "cpu_quota_cores",
            Field::Pids => "pids",
            Field::PidsMax => "pids_max",
            Field::ThrottledPerSecond => "throttled_per_second",
            Field::PressureCpu => "pressure_cpu",
            Field::PressureMemory => "pressure_memory",
            Field::PressureIo => "pressure_io",
        }
    }
}

/// Values per slot.
pub const FIELDS: usize = Field::ALL.len();

/// The ring's bytes per container.
pub const RING_BYTES: usize = SLOTS * (FIELDS * 2 + 4);

/// A chart value in 16 bits: the top half of its `f32` (bfloat16), rounded to
/// nearest. It keeps `f32`'s range (bytes of memory need it) with 3 significant
/// digits, finer than a chart's pixel; the table shows exact values from
/// [`Latest`]. Half the bytes of `f32` rings: at [`MAX_RINGS`] that is 7 MiB.
fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return 0x7fc0;
    }
    // Round half to even on the 16 bits dropped; values near f32::MAX round to
    // infinity, as they should.
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

fn from_bf16(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// One container's ring: slot `i` holds the values at `times[i]` (Unix seconds).
#[derive(Debug)]
struct Ring {
    times: Box<[u32]>,
    values: Box<[[u16; FIELDS]]>,
    /// The next slot to write, and how many are filled.
    head: usize,
    len: usize,
}

impl Ring {
    /// Every slot is written now, so the resident size is the full ring from the
    /// start, as the cost figures say (`vec![0; n]` would ask calloc for pages the
    /// kernel only provides when first written).
    #[allow(clippy::slow_vector_initialization)]
    fn new() -> Self {
        let mut times = Vec::with_capacity(SLOTS);
        times.resize(SLOTS, 0);
        let mut values = Vec::with_capacity(SLOTS);
        values.resize(SLOTS, [0; FIELDS]);
        Ring {
            times: times.into_boxed_slice(),
            values: values.into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, time: u32, values: [f32; FIELDS]) {
        self.times[self.head] = time;
        self.values[self.head] = values.map(to_bf16);
        self.head = (self.head + 1) % SLOTS;
        self.len = (self.len + 1).min(SLOTS);
    }

    /// Slots oldest first.
    fn iter(&self) -> impl Iterator<Item = (u32, [f32; FIELDS])> + '_ {
        let start = (self.head + SLOTS - self.len) % SLOTS;
        (0..self.len).map(move |i| {
            let j = (start + i) % SLOTS;
            (self.times[j], self.values[j].map(from_bf16))
        })
    }
}

/// The counters rates are computed from, as of the last slot written.
#[derive(Debug, Clone, Copy)]
struct Counters {
    at: Instant,
    cpu: Option<f64>,
    throttled: Option<f64>,
    pressure: [Option<f64>; 3],
}

impl Counters {
    fn of(s: &CgroupStats, at: Instant) -> Self {
        Counters {
            at,
            cpu: s.cpu_usage_seconds,
            throttled: s.cpu_cfs_throttled_seconds,
            pressure: [
                s.pressure_cpu_waiting_seconds,
                s.pressure_memory_waiting_seconds,
                s.pressure_io_waiting_seconds,
            ],
        }
    }
}

/// A container's latest readings, for the table on `/`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latest {
    pub memory_usage: f64,
    /// 0 = unlimited.
    pub memory_limit: f64,
    /// Cores used over the last slot; `None` until two slots exist.
    pub cpu_cores: Option<f64>,
    /// 0 = unlimited.
    pub cpu_quota_cores: f64,
    pub pids: f64,
    /// 0 = unlimited.
    pub pids_max: f64,
    pub processes: f64,
    pub throttled_periods: f64,
    pub throttled_seconds: f64,
    pub oom_events: f64,
}

/// One container as the UI knows it.
#[derive(Debug)]
pub struct Series {
    /// The cgroup path (the `id` label).
    pub id: String,
    pub name: String,
    pub image: String,
    pub runtime: &'static str,
    pub latest: Latest,
    counters: Option<Counters>,
    /// `None` past [`MAX_RINGS`] containers.
    ring: Option<Ring>,
}

/// Containers that keep a ring, at most: 8.2 MiB of history, whatever the number
/// of containers (at 10,000 every container's ring would be 41 MiB). Those past
/// it show their latest values, and get a ring when one frees up.
pub const MAX_RINGS: usize = 2_000;

impl Series {
    /// Slots oldest first: Unix time and values in [`Field::ALL`] order.
    pub fn slots(&self) -> impl Iterator<Item = (u32, [f32; FIELDS])> + '_ {
        self.ring.iter().flat_map(Ring::iter)
    }

    /// Whether it keeps a history (see [`MAX_RINGS`]).
    pub fn has_history(&self) -> bool {
        self.ring.is_some()
    }

    /// Whether `key` names it: its id (with or without the leading `/`), its name,
    /// or a prefix (4+ characters) of the id's last component.
    pub fn matches(&self, key: &str) -> bool {
        if key.is_empty() {
            return false;
        }
        if self.id == key || self.id.strip_prefix('/') == Some(key) || self.name == key {
            return true;
        }
        key.len() >= 4
            && self
                .id
                .rsplit('/')
                .next()
                .is_some_and(|last| last.starts_with(key))
    }
}

/// A container's OOM kill count went up (seen by comparing two readings).
#[derive(Debug, Clone, Serialize)]
pub struct OomNotice {
    pub id: String,
    pub name: String,
    /// Kills since the previous reading.
    pub kills: u64,
    pub time_unix_ms: u64,
}

/// Every container's series.
#[derive(Debug)]
pub struct History {
    inner: Mutex<Inner>,
    oom: broadcast::Sender<OomNotice>,
}

#[derive(Debug, Default)]
struct Inner {
    series: HashMap<String, Box<Series>>,
    /// Series with a ring.
    rings: usize,
    /// When readings were last recorded (by a scrape or the background sample).
    last_record: Option<Instant>,
    /// When a page last asked for readings.
    last_view: Option<Instant>,
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn rate(now: Option<f64>, then: Option<f64>, secs: f64) -> f32 {
    match (now, then) {
        (Some(a), Some(b)) if secs > 0.0 && a >= b => ((a - b) / secs) as f32,
        _ => 0.0,
    }
}

/// Cores a quota allows (0 when unlimited or unknown).
fn quota_cores(s: &CgroupStats) -> f64 {
    match (s.spec_cpu_quota, s.spec_cpu_period) {
        (Some(q), Some(p)) if q > 0.0 && p > 0.0 => q / p,
        _ => 0.0,
    }
}

impl Default for History {
    fn default() -> Self {
        History {
            inner: Mutex::new(Inner::default()),
            oom: broadcast::channel(64).0,
        }
    }
}

impl History {
    /// Records one complete reading of every tracked cgroup (a scrape's): updates
    /// each container's latest values, writes a ring slot where [`STEP`] has passed
    /// since its last one, and forgets containers that are no longer tracked.
    pub fn record(&self, samples: &[Sample<'_>]) {
        let now = Instant::now();
        let unix = unix_now();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if inner
            .last_record
            .is_some_and(|t| now.duration_since(t) < MIN_RECORD_GAP)
        {
            return;
        }
        inner.last_record = Some(now);
        let mut seen = std::collections::HashSet::with_capacity(samples.len());
        for sample in samples {
            let t = sample.tracked;
            let id = &t.discovered.path;
            seen.insert(id.as_str());
            let series = match inner.series.get_mut(id) {
                Some(s) => s,
                None => inner.series.entry(id.clone()).or_insert_with(|| {
                    // Boxed: the map's spare slots then cost a pointer each, not a Series.
                    Box::new(Series {
                        id: id.clone(),
                        name: String::new(),
                        image: String::new(),
                        runtime: t.discovered.runtime.as_str(),
                        latest: Latest::default(),
                        counters: None,
                        ring: None,
                    })
                }),
            };
            if series.ring.is_none() && inner.rings < MAX_RINGS {
                series.ring = Some(Ring::new());
                inner.rings += 1;
            }
            if series.name != t.meta.name {
                series.name.clone_from(&t.meta.name);
            }
            if series.image != t.meta.image {
                series.image.clone_from(&t.meta.image);
            }
            let s = &sample.stats;
            let oom = s.oom_events.unwrap_or(0.0);
            if oom > series.latest.oom_events
                && series.counters.is_some()
                && self.oom.receiver_count() > 0
            {
                self.notify_oom(OomNotice {
                    id: series.id.clone(),
                    name: series.name.clone(),
                    kills: (oom - series.latest.oom_events) as u64,
                    time_unix_ms: unix.as_millis() as u64,
                });
            }
            let mut latest = Latest {
                memory_usage: s.memory_usage_bytes.unwrap_or(0.0),
                memory_limit: s.spec_memory_limit_bytes.unwrap_or(0.0),
                cpu_cores: series.latest.cpu_cores,
                cpu_quota_cores: quota_cores(s),
                pids: s.threads.unwrap_or(0.0),
                pids_max: s.threads_max.unwrap_or(0.0),
                processes: s.processes.unwrap_or(0.0),
                throttled_periods: s.cpu_cfs_throttled_periods.unwrap_or(0.0),
                throttled_seconds: s.cpu_cfs_throttled_seconds.unwrap_or(0.0),
                oom_events: oom,
            };
            let due = series
                .counters
                .is_none_or(|c| now.duration_since(c.at) >= STEP.mul_f32(0.9));
            if due {
                let current = Counters::of(s, now);
                if let Some(prev) = series.counters {
                    let secs = now.duration_since(prev.at).as_secs_f64();
                    let cpu = rate(current.cpu, prev.cpu, secs);
                    latest.cpu_cores = Some(f64::from(cpu));
                    let mut values = [0.0f32; FIELDS];
                    for (i, f) in Field::ALL.iter().enumerate() {
                        values[i] = match f {
                            Field::MemoryUsage => latest.memory_usage as f32,
                            Field::MemoryLimit => latest.memory_limit as f32,
                            Field::CpuCores => cpu,
                            Field::CpuQuotaCores => latest.cpu_quota_cores as f32,
                            Field::Pids => latest.pids as f32,
                            Field::PidsMax => latest.pids_max as f32,
                            Field::ThrottledPerSecond => {
                                rate(current.throttled, prev.throttled, secs)
                            }
                            Field::PressureCpu => rate(current.pressure[0], prev.pressure[0], secs),
                            Field::PressureMemory => {
                                rate(current.pressure[1], prev.pressure[1], secs)
                            }
                            Field::PressureIo => rate(current.pressure[2], prev.pressure[2], secs),
                        };
                    }
                    if let Some(ring) = &mut series.ring {
                        ring.push(unix.as_secs() as u32, values);
                    }
                }
                series.counters = Some(current);
            }
            series.latest = latest;
        }
        let mut freed = 0;
        inner.series.retain(|id, s| {
            let keep = seen.contains(id.as_str());
            if !keep && s.ring.is_some() {
                freed += 1;
            }
            keep
        });
        inner.rings -= freed;
    }

    /// How long ago readings were last recorded (`None`: never).
    pub fn since_last_record(&self) -> Option<Duration> {
        self.inner.lock().last_record.map(|t| t.elapsed())
    }

    /// Notes that a page asked for readings now.
    pub fn viewed(&self) {
        self.inner.lock().last_view = Some(Instant::now());
    }

    /// How long ago a page last asked for readings (`None`: never).
    pub fn since_last_view(&self) -> Option<Duration> {
        self.inner.lock().last_view.map(|t| t.elapsed())
    }

    /// Calls `f` with every container's series, under the lock (keep it short).
    pub fn with_series<R>(&self, f: impl FnOnce(&HashMap<String, Box<Series>>) -> R) -> R {
        f(&self.inner.lock().series)
    }

    /// Containers with a series.
    pub fn len(&self) -> usize {
        self.inner.lock().series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// OOM kills as they are noticed; nothing is sent while nobody listens.
    pub fn subscribe_oom(&self) -> broadcast::Receiver<OomNotice> {
        self.oom.subscribe()
    }

    /// Sends a notice to the subscribers, if any.
    pub(super) fn notify_oom(&self, notice: OomNotice) {
        let _ = self.oom.send(notice);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_slots_oldest_first() {
        let mut ring = Ring::new();
        assert_eq!(ring.iter().count(), 0);
        for t in 0..(SLOTS as u32 + 7) {
            ring.push(t, [t as f32; FIELDS]);
        }
        let times: Vec<u32> = ring.iter().map(|(t, _)| t).collect();
        assert_eq!(times.len(), SLOTS);
        assert_eq!(times[0], 7, "the 7 oldest were overwritten");
        assert_eq!(*times.last().unwrap(), SLOTS as u32 + 6);
        // Small integers are exact in bfloat16 (8 significant bits).
        assert!(ring.iter().all(|(t, v)| v[0] == t as f32));
    }

    #[test]
    fn chart_values_keep_three_significant_digits_and_f32_range() {
        for x in [0.0f32, 1.0, 0.37, 123_456.0, 3.5e9, 6.4e10, 1.2e-6] {
            let back = from_bf16(to_bf16(x));
            assert!((back - x).abs() <= x * 0.004, "{x} came back as {back}");
        }
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn ring_bytes_are_what_the_page_states() {
        let ring = Ring::new();
        let bytes = std::mem::size_of_val(&*ring.times) + std::mem::size_of_val(&*ring.values);
        assert_eq!(bytes, RING_BYTES);
        assert_eq!(RING_BYTES, 4320);
    }
}
