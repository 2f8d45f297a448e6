//! The per-container families of the metrics contract (DESIGN.md), as one table.

use super::exposition::Kind;
use crate::cgroup::CgroupStats;

/// A family's unit, appended to its name.
#[derive(Debug, Clone, Copy)]
pub enum FamilyUnit {
    None,
    Seconds,
    Bytes,
}

impl FamilyUnit {
    /// The unit suffix appended to the family name.
    pub fn suffix(self) -> Option<&'static str> {
        match self {
            FamilyUnit::None => None,
            FamilyUnit::Seconds => Some("seconds"),
            FamilyUnit::Bytes => Some("bytes"),
        }
    }
}

/// One exported family: its name without unit or `_total` suffix, help, type and
/// which field of [`CgroupStats`] it shows.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: FamilyUnit,
    pub kind: Kind,
    pub value: fn(&CgroupStats) -> Option<f64>,
}

impl Family {
    /// The sample name as Prometheus stores it (`container_cpu_usage_seconds_total`).
    pub fn sample_name(&self) -> String {
        let mut n = self.name.to_string();
        match self.unit {
            FamilyUnit::Seconds => n.push_str("_seconds"),
            FamilyUnit::Bytes => n.push_str("_bytes"),
            FamilyUnit::None => {}
        }
        if self.kind == Kind::Counter {
            n.push_str("_total");
        }
        n
    }
}

macro_rules! family {
    ($name:literal, $unit:ident, $kind:ident, $field:ident, $help:literal) => {
        Family {
            name: $name,
            help: $help,
            unit: FamilyUnit::$unit,
            kind: Kind::$kind,
            value: |s| s.$field,
        }
    };
}

/// Every per-cgroup family, in exposition order. `container_cpu_usage_seconds_total`
/// is first and is the only one with the extra `cpu="total"` label (as in cAdvisor).
pub static FAMILIES: &[Family] = &[
    family!(
        "container_cpu_usage",
        Seconds,
        Counter,
        cpu_usage_seconds,
        "Cumulative CPU time consumed, in seconds"
    ),
    family!(
        "container_cpu_user",
        Seconds,
        Counter,
        cpu_user_seconds,
        "Cumulative user CPU time consumed, in seconds"
    ),
    family!(
        "container_cpu_system",
        Seconds,
        Counter,
        cpu_system_seconds,
        "Cumulative system CPU time consumed, in seconds"
    ),
    family!(
        "container_cpu_cfs_periods",
        None,
        Counter,
        cpu_cfs_periods,
        "Number of elapsed CFS enforcement period intervals"
    ),
    family!(
        "container_cpu_cfs_throttled_periods",
        None,
        Counter,
        cpu_cfs_throttled_periods,
        "Number of throttled CFS period intervals"
    ),
    family!(
        "container_cpu_cfs_throttled",
        Seconds,
        Counter,
        cpu_cfs_throttled_seconds,
        "Total time duration the container has been throttled, in seconds"
    ),
    family!(
        "container_memory_usage",
        Bytes,
        Gauge,
        memory_usage_bytes,
        "Current memory usage in bytes, including all memory regardless of when it was accessed"
    ),
    family!(
        "container_memory_working_set",
        Bytes,
        Gauge,
        memory_working_set_bytes,
        "Current working set in bytes: usage minus inactive file cache"
    ),
    family!(
        "container_memory_rss",
        None,
        Gauge,
        memory_rss,
        "Size of RSS (anonymous memory) in bytes"
    ),
    family!(
        "container_memory_cache",
        None,
        Gauge,
        memory_cache,
        "Number of bytes of page cache memory"
    ),
    family!(
        "container_memory_mapped_file",
        None,
        Gauge,
        memory_mapped_file,
        "Size of memory mapped files in bytes"
    ),
    family!(
        "container_memory_swap",
        None,
        Gauge,
        memory_swap,
        "Container swap usage in bytes"
    ),
    family!(
        "container_memory_max_usage",
        Bytes,
        Gauge,
        memory_max_usage_bytes,
        "Maximum memory usage recorded in bytes"
    ),
    family!(
        "container_memory_failcnt",
        None,
        Unknown,
        memory_failcnt,
        "Number of times memory usage hit the limit (a counter; untyped to keep cAdvisor's name)"
    ),
    family!(
        "container_oom_events",
        None,
        Counter,
        oom_events,
        "Count of out-of-memory kills in the container"
    ),
    family!(
        "container_processes",
        None,
        Gauge,
        processes,
        "Number of processes running inside the container"
    ),
    family!(
        "container_threads",
        None,
        Gauge,
        threads,
        "Number of threads (tasks) running inside the container"
    ),
    family!(
        "container_threads_max",
        None,
        Gauge,
        threads_max,
        "Maximum number of threads allowed inside the container, 0 if unlimited"
    ),
    family!(
        "container_spec_memory_limit",
        Bytes,
        Gauge,
        spec_memory_limit_bytes,
        "Memory limit for the container in bytes, 0 if unlimited"
    ),
    family!(
        "container_spec_cpu_quota",
        None,
        Gauge,
        spec_cpu_quota,
        "CPU quota of the container in microseconds per period, 0 if unlimited"
    ),
    family!(
        "container_spec_cpu_period",
        None,
        Gauge,
        spec_cpu_period,
        "CPU period of the container in microseconds"
    ),
    family!(
        "container_spec_cpu_shares",
        None,
        Gauge,
        spec_cpu_shares,
        "CPU share of the container (v2 cpu.weight converted to the shares scale)"
    ),
    family!(
        "container_pressure_cpu_waiting",
        Seconds,
        Counter,
        pressure_cpu_waiting_seconds,
        "Total time duration tasks in the container have waited due to CPU congestion"
    ),
    family!(
        "container_pressure_cpu_stalled",
        Seconds,
        Counter,
        pressure_cpu_stalled_seconds,
        "Total time duration no tasks in the container could make progress due to CPU congestion"
    ),
    family!(
        "container_pressure_memory_waiting",
        Seconds,
        Counter,
        pressure_memory_waiting_seconds,
        "Total time duration tasks in the container have waited due to memory congestion"
    ),
    family!(
        "container_pressure_memory_stalled",
        Seconds,
        Counter,
        pressure_memory_stalled_seconds,
        "Total time duration no tasks in the container could make progress due to memory congestion"
    ),
    family!(
        "container_pressure_io_waiting",
        Seconds,
        Counter,
        pressure_io_waiting_seconds,
        "Total time duration tasks in the container have waited due to IO congestion"
    ),
    family!(
        "container_pressure_io_stalled",
        Seconds,
        Counter,
        pressure_io_stalled_seconds,
        "Total time duration no tasks in the container could make progress due to IO congestion"
    ),
    family!(
        "container_start_time",
        Seconds,
        Gauge,
        start_time_seconds,
        "Start time of the container since unix epoch in seconds"
    ),
];
