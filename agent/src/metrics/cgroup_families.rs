//! The per-container families of the metrics contract (DESIGN.md), as one table.

use super::exposition::Kind;
use crate::cgroup::{CgroupStats, DeviceIo, IoOp, MetricGroup};
use crate::container::{InterfaceStats, LayerUsage};

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

/// Which series a family has per cgroup, and the labels beyond the cgroup's own.
#[derive(Debug, Clone, Copy)]
pub enum Series {
    /// One series, with the fixed label text `extra` (`cpu="total"`, or none).
    One {
        value: fn(&CgroupStats) -> Option<f64>,
        extra: &'static str,
    },
    /// One per block device: `device`.
    PerDevice(fn(&DeviceIo) -> Option<u64>),
    /// One per block device and operation, of bytes: `device`, `major`, `minor`,
    /// `operation`.
    PerDeviceOperation,
    /// Page faults: `failure_type` (`pgfault`, `pgmajfault`) by `scope`
    /// (`container`, `hierarchy`).
    MemoryFailures,
    /// The time of the scrape, for every cgroup.
    LastSeen,
    /// One per network interface of the cgroup's namespace: `interface`.
    PerInterface(fn(&InterfaceStats) -> u64),
    /// The writable layer, when measured: `device`.
    Layer(fn(&LayerUsage) -> u64),
}

/// One exported family: its name without unit or `_total` suffix, help, type, the
/// metric group that turns it off (`None`: always on) and its series.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: FamilyUnit,
    pub kind: Kind,
    pub group: Option<MetricGroup>,
    pub series: Series,
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
    ($name:literal, $unit:ident, $kind:ident, $group:ident, $field:ident, $help:literal) => {
        family!($name, $unit, $kind, $group, $field, "", $help)
    };
    ($name:literal, $unit:ident, $kind:ident, $group:ident, $field:ident, $extra:literal, $help:literal) => {
        Family {
            name: $name,
            help: $help,
            unit: FamilyUnit::$unit,
            kind: Kind::$kind,
            group: Some(MetricGroup::$group),
            series: Series::One {
                value: |s| s.$field,
                extra: $extra,
            },
        }
    };
}

/// A per-device counter of disk I/O: `$table` (`bytes`, `ios`) of `$op`.
macro_rules! device_family {
    ($name:literal, $unit:ident, $table:ident, $op:ident, $help:literal) => {
        Family {
            name: $name,
            help: $help,
            unit: FamilyUnit::$unit,
            kind: Kind::Counter,
            group: Some(MetricGroup::Disk),
            series: Series::PerDevice(|d| d.$table(IoOp::$op)),
        }
    };
}

/// A per-interface network counter.
macro_rules! network_family {
    ($name:literal, $unit:ident, $field:ident, $help:literal) => {
        Family {
            name: $name,
            help: $help,
            unit: FamilyUnit::$unit,
            kind: Kind::Counter,
            group: Some(MetricGroup::Network),
            series: Series::PerInterface(|i| i.$field),
        }
    };
}

/// A writable-layer gauge.
macro_rules! layer_family {
    ($name:literal, $unit:ident, $field:ident, $help:literal) => {
        Family {
            name: $name,
            help: $help,
            unit: FamilyUnit::$unit,
            kind: Kind::Gauge,
            group: Some(MetricGroup::Fs),
            series: Series::Layer(|l| l.$field),
        }
    };
}

/// Every per-cgroup family, in exposition order. Only
/// `container_cpu_usage_seconds_total` has the extra `cpu="total"` label (as in
/// cAdvisor without per-CPU usage).
pub static FAMILIES: &[Family] = &[
    family!(
        "container_cpu_usage",
        Seconds,
        Counter,
        Cpu,
        cpu_usage_seconds,
        "cpu=\"total\"",
        "Cumulative CPU time consumed, in seconds"
    ),
    family!(
        "container_cpu_user",
        Seconds,
        Counter,
        Cpu,
        cpu_user_seconds,
        "Cumulative user CPU time consumed, in seconds"
    ),
    family!(
        "container_cpu_system",
        Seconds,
        Counter,
        Cpu,
        cpu_system_seconds,
        "Cumulative system CPU time consumed, in seconds"
    ),
    family!(
        "container_cpu_cfs_periods",
        None,
        Counter,
        Cpu,
        cpu_cfs_periods,
        "Number of elapsed CFS enforcement period intervals"
    ),
    family!(
        "container_cpu_cfs_throttled_periods",
        None,
        Counter,
        Cpu,
        cpu_cfs_throttled_periods,
        "Number of throttled CFS period intervals"
    ),
    family!(
        "container_cpu_cfs_throttled",
        Seconds,
        Counter,
        Cpu,
        cpu_cfs_throttled_seconds,
        "Total time duration the container has been throttled, in seconds"
    ),
    family!(
        "container_memory_usage",
        Bytes,
        Gauge,
        Memory,
        memory_usage_bytes,
        "Current memory usage in bytes, including all memory regardless of when it was accessed"
    ),
    family!(
        "container_memory_working_set",
        Bytes,
        Gauge,
        Memory,
        memory_working_set_bytes,
        "Current working set in bytes: usage minus inactive file cache"
    ),
    family!(
        "container_memory_rss",
        None,
        Gauge,
        Memory,
        memory_rss,
        "Size of RSS (anonymous memory) in bytes"
    ),
    family!(
        "container_memory_cache",
        None,
        Gauge,
        Memory,
        memory_cache,
        "Number of bytes of page cache memory"
    ),
    family!(
        "container_memory_mapped_file",
        None,
        Gauge,
        Memory,
        memory_mapped_file,
        "Size of memory mapped files in bytes"
    ),
    family!(
        "container_memory_swap",
        None,
        Gauge,
        Memory,
        memory_swap,
        "Container swap usage in bytes"
    ),
    family!(
        "container_memory_max_usage",
        Bytes,
        Gauge,
        Memory,
        memory_max_usage_bytes,
        "Maximum memory usage recorded in bytes"
    ),
    Family {
        name: "container_memory_failures",
        help: "Cumulative count of memory allocation failures (page faults), by type and scope",
        unit: FamilyUnit::None,
        kind: Kind::Counter,
        group: Some(MetricGroup::Memory),
        series: Series::MemoryFailures,
    },
    family!(
        "container_memory_failcnt",
        None,
        Unknown,
        Memory,
        memory_failcnt,
        "Number of times memory usage hit the limit (a counter; untyped to keep cAdvisor's name)"
    ),
    family!(
        "container_oom_events",
        None,
        Counter,
        Events,
        oom_events,
        "Count of out-of-memory kills in the container"
    ),
    family!(
        "container_processes",
        None,
        Gauge,
        Process,
        processes,
        "Number of processes running inside the container"
    ),
    family!(
        "container_threads",
        None,
        Gauge,
        Process,
        threads,
        "Number of threads (tasks) running inside the container"
    ),
    family!(
        "container_threads_max",
        None,
        Gauge,
        Process,
        threads_max,
        "Maximum number of threads allowed inside the container, 0 if unlimited"
    ),
    family!(
        "container_spec_memory_limit",
        Bytes,
        Gauge,
        Memory,
        spec_memory_limit_bytes,
        "Memory limit for the container in bytes, 0 if unlimited"
    ),
    family!(
        "container_spec_memory_reservation_limit",
        Bytes,
        Gauge,
        Memory,
        spec_memory_reservation_limit_bytes,
        "Memory reservation (v2 memory.low, v1 soft limit) of the container in bytes, 0 if none"
    ),
    family!(
        "container_spec_memory_swap_limit",
        Bytes,
        Gauge,
        Memory,
        spec_memory_swap_limit_bytes,
        "Memory swap limit of the container in bytes (v1: memory plus swap), 0 if unlimited"
    ),
    family!(
        "container_spec_cpu_quota",
        None,
        Gauge,
        Cpu,
        spec_cpu_quota,
        "CPU quota of the container in microseconds per period, 0 if unlimited"
    ),
    family!(
        "container_spec_cpu_period",
        None,
        Gauge,
        Cpu,
        spec_cpu_period,
        "CPU period of the container in microseconds"
    ),
    family!(
        "container_spec_cpu_shares",
        None,
        Gauge,
        Cpu,
        spec_cpu_shares,
        "CPU share of the container (v2 cpu.weight converted to the shares scale)"
    ),
    family!(
        "container_pressure_cpu_waiting",
        Seconds,
        Counter,
        Pressure,
        pressure_cpu_waiting_seconds,
        "Total time duration tasks in the container have waited due to CPU congestion"
    ),
    family!(
        "container_pressure_cpu_stalled",
        Seconds,
        Counter,
        Pressure,
        pressure_cpu_stalled_seconds,
        "Total time duration no tasks in the container could make progress due to CPU congestion"
    ),
    family!(
        "container_pressure_memory_waiting",
        Seconds,
        Counter,
        Pressure,
        pressure_memory_waiting_seconds,
        "Total time duration tasks in the container have waited due to memory congestion"
    ),
    family!(
        "container_pressure_memory_stalled",
        Seconds,
        Counter,
        Pressure,
        pressure_memory_stalled_seconds,
        "Total time duration no tasks in the container could make progress due to memory congestion"
    ),
    family!(
        "container_pressure_io_waiting",
        Seconds,
        Counter,
        Pressure,
        pressure_io_waiting_seconds,
        "Total time duration tasks in the container have waited due to IO congestion"
    ),
    family!(
        "container_pressure_io_stalled",
        Seconds,
        Counter,
        Pressure,
        pressure_io_stalled_seconds,
        "Total time duration no tasks in the container could make progress due to IO congestion"
    ),
    device_family!(
        "container_fs_reads",
        Bytes,
        bytes,
        Read,
        "Cumulative count of bytes read"
    ),
    device_family!(
        "container_fs_reads",
        None,
        ios,
        Read,
        "Cumulative count of reads completed"
    ),
    device_family!(
        "container_fs_writes",
        Bytes,
        bytes,
        Write,
        "Cumulative count of bytes written"
    ),
    device_family!(
        "container_fs_writes",
        None,
        ios,
        Write,
        "Cumulative count of writes completed"
    ),
    Family {
        name: "container_blkio_device_usage",
        help: "Blkio device bytes usage, by operation",
        unit: FamilyUnit::None,
        kind: Kind::Counter,
        group: Some(MetricGroup::Disk),
        series: Series::PerDeviceOperation,
    },
    network_family!(
        "container_network_receive",
        Bytes,
        rx_bytes,
        "Cumulative count of bytes received"
    ),
    network_family!(
        "container_network_receive_packets",
        None,
        rx_packets,
        "Cumulative count of packets received"
    ),
    network_family!(
        "container_network_receive_errors",
        None,
        rx_errors,
        "Cumulative count of errors encountered while receiving"
    ),
    network_family!(
        "container_network_receive_packets_dropped",
        None,
        rx_dropped,
        "Cumulative count of packets dropped while receiving"
    ),
    network_family!(
        "container_network_transmit",
        Bytes,
        tx_bytes,
        "Cumulative count of bytes transmitted"
    ),
    network_family!(
        "container_network_transmit_packets",
        None,
        tx_packets,
        "Cumulative count of packets transmitted"
    ),
    network_family!(
        "container_network_transmit_errors",
        None,
        tx_errors,
        "Cumulative count of errors encountered while transmitting"
    ),
    network_family!(
        "container_network_transmit_packets_dropped",
        None,
        tx_dropped,
        "Cumulative count of packets dropped while transmitting"
    ),
    layer_family!(
        "container_fs_usage",
        Bytes,
        usage_bytes,
        "Number of bytes that are consumed by the container on this filesystem (its writable layer)"
    ),
    layer_family!(
        "container_fs_limit",
        Bytes,
        limit_bytes,
        "Number of bytes that can be consumed by the container on this filesystem (its size)"
    ),
    layer_family!(
        "container_fs_inodes_total",
        None,
        inodes_used,
        "Number of inodes the container's writable layer uses (cAdvisor's meaning for a container)"
    ),
    layer_family!(
        "container_fs_inodes_free",
        None,
        inodes_free,
        "Number of available inodes on the filesystem of the container's writable layer"
    ),
    Family {
        name: "container_start_time",
        help: "Start time of the container since unix epoch in seconds",
        unit: FamilyUnit::Seconds,
        kind: Kind::Gauge,
        group: None,
        series: Series::One {
            value: |s| s.start_time_seconds,
            extra: "",
        },
    },
    Family {
        name: "container_last_seen",
        help: "Last time a container was seen by the exporter",
        unit: FamilyUnit::None,
        kind: Kind::Gauge,
        group: None,
        series: Series::LastSeen,
    },
];

/// The memory failure series: (`failure_type`, `scope`) label text and value.
pub fn memory_failures(s: &CgroupStats) -> [(&'static str, Option<f64>); 4] {
    [
        (
            "failure_type=\"pgfault\",scope=\"container\"",
            s.memory_pgfault,
        ),
        (
            "failure_type=\"pgmajfault\",scope=\"container\"",
            s.memory_pgmajfault,
        ),
        (
            "failure_type=\"pgfault\",scope=\"hierarchy\"",
            s.memory_hierarchy_pgfault,
        ),
        (
            "failure_type=\"pgmajfault\",scope=\"hierarchy\"",
            s.memory_hierarchy_pgmajfault,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let names: Vec<String> = FAMILIES.iter().map(Family::sample_name).collect();
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }
}
