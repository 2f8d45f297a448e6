//! The files a [`StatsReader`](super::StatsReader) reads, per cgroup layout:
//! where each lives, its names, and the metric groups that need it.

use super::super::groups::{MetricGroup, MetricGroups};
use super::super::hierarchy::{Controller, Hierarchy, Version};
use std::path::PathBuf;

/// Which file a descriptor belongs to, and so how to parse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    // v2
    CpuStat,
    MemoryCurrent,
    MemoryStatV2,
    MemorySwapCurrent,
    MemoryPeak,
    MemoryEvents,
    MemoryMax,
    MemoryLow,
    MemorySwapMax,
    CpuMax,
    CpuWeight,
    IoStat,
    // v1
    CpuacctUsage,
    CpuacctStat,
    CpuStatV1,
    MemoryUsage,
    MemoryStatV1,
    MemoryMaxUsage,
    MemoryFailcnt,
    MemoryOomControl,
    MemoryLimit,
    MemorySoftLimit,
    MemswLimit,
    CfsQuota,
    CfsPeriod,
    CpuShares,
    BlkioBytes,
    BlkioServiced,
    // both
    Procs,
    PidsCurrent,
    PidsMax,
    CpuPressure,
    MemoryPressure,
    IoPressure,
}

impl Source {
    /// A limit (the container's spec): it changes only when someone sets it, so it
    /// is read again at most every [`LIMITS_MAX_AGE`](super::LIMITS_MAX_AGE) and its
    /// file is not kept open.
    pub(super) fn is_limit(self) -> bool {
        matches!(
            self,
            Source::MemoryMax
                | Source::MemoryLow
                | Source::MemorySwapMax
                | Source::CpuMax
                | Source::CpuWeight
                | Source::MemoryLimit
                | Source::MemorySoftLimit
                | Source::MemswLimit
                | Source::CfsQuota
                | Source::CfsPeriod
                | Source::CpuShares
                | Source::PidsMax
        )
    }
}

/// One file the reader may open: where it lives, its names (the first that exists
/// is opened: older kernels lack the `_recursive` blkio files) and the metric
/// groups that need it (it is opened when any of them is on).
pub(super) struct SourceFile {
    pub(super) source: Source,
    pub(super) controller: Controller,
    pub(super) names: &'static [&'static str],
    pub(super) groups: MetricGroups,
}

const fn file(
    source: Source,
    controller: Controller,
    names: &'static [&'static str],
    group: MetricGroup,
) -> SourceFile {
    SourceFile {
        source,
        controller,
        names,
        groups: MetricGroups::of(group),
    }
}

use Controller as C;
use MetricGroup as G;

const V2_SOURCES: &[SourceFile] = &[
    file(Source::CpuStat, C::Cpu, &["cpu.stat"], G::Cpu),
    file(
        Source::MemoryCurrent,
        C::Memory,
        &["memory.current"],
        G::Memory,
    ),
    file(Source::MemoryStatV2, C::Memory, &["memory.stat"], G::Memory),
    file(
        Source::MemorySwapCurrent,
        C::Memory,
        &["memory.swap.current"],
        G::Memory,
    ),
    file(Source::MemoryPeak, C::Memory, &["memory.peak"], G::Memory),
    // `max` is the limit hits (memory group), `oom_kill` the OOM kills (events).
    SourceFile {
        source: Source::MemoryEvents,
        controller: C::Memory,
        names: &["memory.events"],
        groups: MetricGroups::of(G::Memory).and(G::Events),
    },
    file(Source::MemoryMax, C::Memory, &["memory.max"], G::Memory),
    file(Source::MemoryLow, C::Memory, &["memory.low"], G::Memory),
    file(
        Source::MemorySwapMax,
        C::Memory,
        &["memory.swap.max"],
        G::Memory,
    ),
    file(Source::CpuMax, C::Cpu, &["cpu.max"], G::Cpu),
    file(Source::CpuWeight, C::Cpu, &["cpu.weight"], G::Cpu),
    file(Source::IoStat, C::Blkio, &["io.stat"], G::Disk),
    PROCS,
    file(Source::PidsCurrent, C::Pids, &["pids.current"], G::Process),
    file(Source::PidsMax, C::Pids, &["pids.max"], G::Process),
];

const V1_SOURCES: &[SourceFile] = &[
    file(Source::CpuacctUsage, C::Cpuacct, &["cpuacct.usage"], G::Cpu),
    file(Source::CpuacctStat, C::Cpuacct, &["cpuacct.stat"], G::Cpu),
    file(Source::CpuStatV1, C::Cpu, &["cpu.stat"], G::Cpu),
    file(Source::CfsQuota, C::Cpu, &["cpu.cfs_quota_us"], G::Cpu),
    file(Source::CfsPeriod, C::Cpu, &["cpu.cfs_period_us"], G::Cpu),
    file(Source::CpuShares, C::Cpu, &["cpu.shares"], G::Cpu),
    file(
        Source::MemoryUsage,
        C::Memory,
        &["memory.usage_in_bytes"],
        G::Memory,
    ),
    file(Source::MemoryStatV1, C::Memory, &["memory.stat"], G::Memory),
    file(
        Source::MemoryMaxUsage,
        C::Memory,
        &["memory.max_usage_in_bytes"],
        G::Memory,
    ),
    file(
        Source::MemoryFailcnt,
        C::Memory,
        &["memory.failcnt"],
        G::Memory,
    ),
    file(
        Source::MemoryOomControl,
        C::Memory,
        &["memory.oom_control"],
        G::Events,
    ),
    file(
        Source::MemoryLimit,
        C::Memory,
        &["memory.limit_in_bytes"],
        G::Memory,
    ),
    file(
        Source::MemorySoftLimit,
        C::Memory,
        &["memory.soft_limit_in_bytes"],
        G::Memory,
    ),
    // Absent when the kernel does not account swap (swapaccount=0).
    file(
        Source::MemswLimit,
        C::Memory,
        &["memory.memsw.limit_in_bytes"],
        G::Memory,
    ),
    // The `_recursive` files include descendants, as v2's io.stat does and as runc
    // (so cAdvisor) reads them; kernels before 4.12 have only the plain ones.
    file(
        Source::BlkioBytes,
        C::Blkio,
        &[
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes",
        ],
        G::Disk,
    ),
    file(
        Source::BlkioServiced,
        C::Blkio,
        &[
            "blkio.throttle.io_serviced_recursive",
            "blkio.throttle.io_serviced",
        ],
        G::Disk,
    ),
    PROCS,
    file(Source::PidsCurrent, C::Pids, &["pids.current"], G::Process),
    file(Source::PidsMax, C::Pids, &["pids.max"], G::Process),
];

/// `cgroup.procs`: the process count, and a task to find the container's network
/// namespace and writable layer through.
const PROCS: SourceFile = SourceFile {
    source: Source::Procs,
    controller: C::Pids,
    names: &["cgroup.procs"],
    groups: MetricGroups::of(G::Process).and(G::Network).and(G::Fs),
};

/// PSI files live on the cgroup2 mount: the only mount on v2, `unified/` on hybrid
/// hosts.
pub(super) const PSI_SOURCES: &[(Source, &str)] = &[
    (Source::CpuPressure, "cpu.pressure"),
    (Source::MemoryPressure, "memory.pressure"),
    (Source::IoPressure, "io.pressure"),
];

/// Lists the files [`StatsReader`](super::StatsReader) reads for cgroup `rel` with every group on,
/// existing or not (of alternative names, the one that exists): the benchmark's
/// baseline reads exactly these.
pub fn stat_files(hierarchy: &Hierarchy, rel: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = sources_for(hierarchy.version())
        .iter()
        .filter_map(|f| {
            let dir = hierarchy.dir(f.controller, rel)?;
            let existing = f.names.iter().map(|n| dir.join(n)).find(|p| p.exists());
            existing.or_else(|| f.names.first().map(|n| dir.join(n)))
        })
        .collect();
    if let Some(u) = hierarchy.unified_dir(rel) {
        files.extend(PSI_SOURCES.iter().map(|(_, name)| u.join(name)));
    }
    files
}

pub(super) fn sources_for(version: Version) -> &'static [SourceFile] {
    match version {
        Version::V2 => V2_SOURCES,
        Version::V1 | Version::Hybrid => V1_SOURCES,
    }
}
