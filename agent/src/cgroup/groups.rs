//! Metric groups, as cAdvisor's `--disable_metrics` has them: a disabled group's
//! families are not exported, and the cgroup files only they need are never opened.

/// A group of per-container families (`agent serve --disable-metrics GROUP,…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum MetricGroup {
    /// CPU time, CFS throttling and the CPU limits (`container_cpu_*`,
    /// `container_spec_cpu_*`).
    Cpu,
    /// Memory usage, limits, limit hits and page faults (`container_memory_*`,
    /// `container_spec_memory_*`).
    Memory,
    /// Per-interface network counters (`container_network_*`), read from each
    /// container's network namespace.
    Network,
    /// Block I/O per device: `container_fs_{reads,writes}{,_bytes}_total`,
    /// `container_blkio_device_usage_total` (cAdvisor's `diskIO`).
    Disk,
    /// Writable-layer usage (`container_fs_usage_bytes`, `_limit_bytes`,
    /// `container_fs_inodes_{total,free}`; cAdvisor's `disk`), measured by a
    /// background walker.
    Fs,
    /// PSI stall times (`container_pressure_*`).
    Pressure,
    /// Processes, threads and the pids limit (`container_processes`,
    /// `container_threads`, `container_threads_max`).
    Process,
    /// OOM kills (`container_oom_events_total`; cAdvisor's `oom_event`).
    Events,
}

impl MetricGroup {
    /// Every group.
    pub const ALL: [MetricGroup; 8] = [
        MetricGroup::Cpu,
        MetricGroup::Memory,
        MetricGroup::Network,
        MetricGroup::Disk,
        MetricGroup::Fs,
        MetricGroup::Pressure,
        MetricGroup::Process,
        MetricGroup::Events,
    ];

    /// The group's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricGroup::Cpu => "cpu",
            MetricGroup::Memory => "memory",
            MetricGroup::Network => "network",
            MetricGroup::Disk => "disk",
            MetricGroup::Fs => "fs",
            MetricGroup::Pressure => "pressure",
            MetricGroup::Process => "process",
            MetricGroup::Events => "events",
        }
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of metric groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricGroups(u16);

impl MetricGroups {
    /// Every group: the default, since every family is cheap to read.
    pub const ALL: MetricGroups = MetricGroups((1 << MetricGroup::ALL.len()) - 1);

    /// The set holding `group` alone.
    pub const fn of(group: MetricGroup) -> Self {
        MetricGroups(group.bit())
    }

    /// This set and `group`.
    pub const fn and(self, group: MetricGroup) -> Self {
        MetricGroups(self.0 | group.bit())
    }

    /// Every group but the `disabled` ones.
    pub fn without(disabled: &[MetricGroup]) -> Self {
        MetricGroups(
            disabled
                .iter()
                .fold(Self::ALL.0, |set, group| set & !group.bit()),
        )
    }

    /// True when `group` is in the set.
    pub fn has(self, group: MetricGroup) -> bool {
        self.0 & group.bit() != 0
    }

    /// True when the two sets share a group.
    pub fn intersects(self, other: MetricGroups) -> bool {
        self.0 & other.0 != 0
    }
}

impl Default for MetricGroups {
    fn default() -> Self {
        Self::ALL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets() {
        let all = MetricGroups::default();
        assert!(MetricGroup::ALL.iter().all(|g| all.has(*g)));
        let some = MetricGroups::without(&[MetricGroup::Disk, MetricGroup::Pressure]);
        assert!(!some.has(MetricGroup::Disk) && !some.has(MetricGroup::Pressure));
        assert!(some.has(MetricGroup::Cpu) && some.has(MetricGroup::Events));
        let memory_or_events = MetricGroups::of(MetricGroup::Memory).and(MetricGroup::Events);
        assert!(MetricGroups::without(&[MetricGroup::Memory]).intersects(memory_or_events));
        assert!(
            !MetricGroups::without(&[MetricGroup::Memory, MetricGroup::Events])
                .intersects(memory_or_events)
        );
        let names: Vec<&str> = MetricGroup::ALL.iter().map(|g| g.as_str()).collect();
        assert_eq!(
            names,
            [
                "cpu", "memory", "network", "disk", "fs", "pressure", "process", "events"
            ]
        );
    }
}
