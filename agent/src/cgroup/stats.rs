//! Reads one cgroup's accounting files, keeping them open between scrapes.
//!
//! Each stat file is opened once when the cgroup is first tracked and re-read with
//! `pread` at offset 0 on every scrape (cgroupfs regenerates the contents), which saves
//! an open and a close per file per scrape. Files a kernel lacks (`memory.peak`,
//! `memory.swap.current`, PSI) are simply absent from the set, and so are the files
//! of metric groups that are turned off.

use super::ScrapeErrorKind;
use super::groups::{MetricGroup, MetricGroups};
use super::hierarchy::{Controller, Hierarchy, Version};
use super::parse::{self, ParseError};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Everything the metrics contract exports for one cgroup, in base units.
/// `None` means the source file is absent on this kernel or layout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    pub cpu_usage_seconds: Option<f64>,
    pub cpu_user_seconds: Option<f64>,
    pub cpu_system_seconds: Option<f64>,
    pub cpu_cfs_periods: Option<f64>,
    pub cpu_cfs_throttled_periods: Option<f64>,
    pub cpu_cfs_throttled_seconds: Option<f64>,
    pub memory_usage_bytes: Option<f64>,
    pub memory_working_set_bytes: Option<f64>,
    pub memory_rss: Option<f64>,
    pub memory_cache: Option<f64>,
    pub memory_mapped_file: Option<f64>,
    pub memory_swap: Option<f64>,
    pub memory_max_usage_bytes: Option<f64>,
    pub memory_failcnt: Option<f64>,
    /// Page faults (`memory.stat` `pgfault`, `pgmajfault`) of the cgroup itself, and
    /// of it with its descendants (v1 `total_pgfault`, `total_pgmajfault`; v2
    /// counters already include descendants, so both scopes carry the same value).
    pub memory_pgfault: Option<f64>,
    pub memory_pgmajfault: Option<f64>,
    pub memory_hierarchy_pgfault: Option<f64>,
    pub memory_hierarchy_pgmajfault: Option<f64>,
    pub oom_events: Option<f64>,
    pub processes: Option<f64>,
    /// The first task listed in `cgroup.procs` (not exported: the network and
    /// layer readers find the container's namespaces through it).
    pub first_pid: Option<u32>,
    pub threads: Option<f64>,
    pub threads_max: Option<f64>,
    pub spec_memory_limit_bytes: Option<f64>,
    pub spec_memory_reservation_limit_bytes: Option<f64>,
    pub spec_memory_swap_limit_bytes: Option<f64>,
    pub spec_cpu_quota: Option<f64>,
    pub spec_cpu_period: Option<f64>,
    pub spec_cpu_shares: Option<f64>,
    pub pressure_cpu_waiting_seconds: Option<f64>,
    pub pressure_cpu_stalled_seconds: Option<f64>,
    pub pressure_memory_waiting_seconds: Option<f64>,
    pub pressure_memory_stalled_seconds: Option<f64>,
    pub pressure_io_waiting_seconds: Option<f64>,
    pub pressure_io_stalled_seconds: Option<f64>,
    /// Block I/O per device, in the order the kernel lists the devices; empty when
    /// the cgroup did none (or the disk group is off).
    pub io: Vec<DeviceIo>,
    /// Creation time of the cgroup directory (Unix seconds).
    pub start_time_seconds: Option<f64>,
}

/// A block I/O operation, as cAdvisor (and v1's blkio files) spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    Read,
    Write,
    Sync,
    Async,
    Discard,
    Total,
}

impl IoOp {
    /// Every operation, in the order v1 lists them.
    pub const ALL: [IoOp; 6] = [
        IoOp::Read,
        IoOp::Write,
        IoOp::Sync,
        IoOp::Async,
        IoOp::Discard,
        IoOp::Total,
    ];

    /// The `operation` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            IoOp::Read => "Read",
            IoOp::Write => "Write",
            IoOp::Sync => "Sync",
            IoOp::Async => "Async",
            IoOp::Discard => "Discard",
            IoOp::Total => "Total",
        }
    }

    fn from_v1(op: &str) -> Option<IoOp> {
        IoOp::ALL.into_iter().find(|o| o.as_str() == op)
    }

    /// v2 `io.stat` keys: (operation, true for bytes / false for I/Os). v2 has no
    /// sync/async split and no total, as runc (and so cAdvisor) reports it.
    fn from_v2(key: &str) -> Option<(IoOp, bool)> {
        Some(match key {
            "rbytes" => (IoOp::Read, true),
            "wbytes" => (IoOp::Write, true),
            "dbytes" => (IoOp::Discard, true),
            "rios" => (IoOp::Read, false),
            "wios" => (IoOp::Write, false),
            "dios" => (IoOp::Discard, false),
            _ => return None,
        })
    }
}

/// One block device's I/O counters for a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u32,
    pub minor: u32,
    /// Bytes transferred, by [`IoOp`] (`IoOp as usize`); `None` where the kernel
    /// gave no figure.
    pub bytes: [Option<u64>; 6],
    /// I/O operations completed, by [`IoOp`].
    pub ios: [Option<u64>; 6],
}

impl DeviceIo {
    /// Bytes of `op`, if the kernel gave them.
    pub fn bytes(&self, op: IoOp) -> Option<u64> {
        self.bytes[op as usize]
    }

    /// Operations of `op`, if the kernel gave them.
    pub fn ios(&self, op: IoOp) -> Option<u64> {
        self.ios[op as usize]
    }
}

/// The entry of device `(major, minor)` in `io`, added when new (a few devices at
/// most: a linear search).
fn device_entry(io: &mut Vec<DeviceIo>, (major, minor): (u32, u32)) -> &mut DeviceIo {
    let i = match io.iter().position(|d| d.major == major && d.minor == minor) {
        Some(i) => i,
        None => {
            io.push(DeviceIo {
                major,
                minor,
                ..DeviceIo::default()
            });
            io.len() - 1
        }
    };
    &mut io[i]
}

/// Which file a descriptor belongs to, and so how to parse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
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

/// One file the reader may open: where it lives, its names (the first that exists
/// is opened: older kernels lack the `_recursive` blkio files) and the metric
/// groups that need it (it is opened when any of them is on).
struct SourceFile {
    source: Source,
    controller: Controller,
    names: &'static [&'static str],
    groups: MetricGroups,
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
const PSI_SOURCES: &[(Source, &str)] = &[
    (Source::CpuPressure, "cpu.pressure"),
    (Source::MemoryPressure, "memory.pressure"),
    (Source::IoPressure, "io.pressure"),
];

/// Why a read of a cgroup failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The cgroup was removed: not an error for the scrape, the cgroup is dropped.
    #[error("cgroup {0} vanished")]
    Vanished(String),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

impl StatsError {
    /// What `agent_scrape_errors_total{kind}` counts it as.
    pub fn kind(&self) -> ScrapeErrorKind {
        match self {
            StatsError::Vanished(_) => ScrapeErrorKind::Vanished,
            StatsError::Read { .. } => ScrapeErrorKind::Read,
            StatsError::Parse { .. } => ScrapeErrorKind::Parse,
        }
    }
}

/// Lists the files [`StatsReader`] reads for cgroup `rel` with every group on,
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

fn sources_for(version: Version) -> &'static [SourceFile] {
    match version {
        Version::V2 => V2_SOURCES,
        Version::V1 | Version::Hybrid => V1_SOURCES,
    }
}

/// One cgroup's stat files: kept open between scrapes (read with `pread`), or,
/// when the process's descriptor budget is spent, opened for each read.
///
/// Its directories are held once and each file names one of them, not a path of
/// its own: at 10,000 cgroups of ~20 files each, per-file paths were megabytes.
#[derive(Debug)]
pub struct StatsReader {
    rel: String,
    /// The cgroup's directories its files are in (one per controller mount).
    dirs: Vec<PathBuf>,
    files: Vec<StatFile>,
    start_time: Option<f64>,
}

/// One file a [`StatsReader`] reads.
#[derive(Debug)]
struct StatFile {
    source: Source,
    /// Index of its directory in the reader's `dirs`.
    dir: u8,
    name: &'static str,
    /// Its descriptor, `None` when it is opened per read.
    kept: Option<File>,
}

/// Whether a [`StatsReader`] keeps its files open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepOpen {
    /// Keep a descriptor per file (the fast path).
    Yes,
    /// Open, read and close each file at every read (no descriptors held).
    No,
}

impl StatsReader {
    /// Opens every stat file of cgroup `rel` that exists and that one of `groups`
    /// needs, keeping the descriptors or not. Fails with
    /// [`StatsError::Vanished`] if the cgroup directory is gone, and with
    /// [`StatsError::Read`] (EMFILE) when descriptors run out while keeping them.
    pub fn open(
        hierarchy: &Hierarchy,
        rel: &str,
        groups: MetricGroups,
        keep: KeepOpen,
    ) -> Result<Self, StatsError> {
        Self::open_inner(hierarchy, rel, groups, keep, |_| true)
    }

    /// Opens the root cgroup (`/`, the whole machine) the same way, leaving out
    /// `cgroup.procs`: at the root it lists only the processes placed in the root
    /// cgroup itself, not the machine's, so it would be a misleading count.
    pub fn open_root(
        hierarchy: &Hierarchy,
        groups: MetricGroups,
        keep: KeepOpen,
    ) -> Result<Self, StatsError> {
        Self::open_inner(hierarchy, "/", groups, keep, |s| s != Source::Procs)
    }

    fn open_inner(
        hierarchy: &Hierarchy,
        rel: &str,
        groups: MetricGroups,
        keep: KeepOpen,
        wanted: impl Fn(Source) -> bool,
    ) -> Result<Self, StatsError> {
        let sources = sources_for(hierarchy.version());
        // The cgroup exists if its directory does in any mounted controller; the
        // first one found dates it.
        let start_time = Controller::ALL
            .into_iter()
            .filter_map(|c| hierarchy.dir(c, rel))
            .find_map(|dir| std::fs::metadata(dir).ok())
            .map(|meta| meta.ctime() as f64 + meta.ctime_nsec() as f64 / 1e9);
        if start_time.is_none() {
            return Err(StatsError::Vanished(rel.to_string()));
        }
        let mut reader = StatsReader {
            rel: rel.to_string(),
            dirs: Vec::new(),
            files: Vec::new(),
            start_time,
        };
        for f in sources {
            if !f.groups.intersects(groups) || !wanted(f.source) {
                continue;
            }
            let Some(dir) = hierarchy.dir(f.controller, rel) else {
                continue;
            };
            for name in f.names {
                if reader.open_file(f.source, &dir, name, keep)? {
                    break;
                }
            }
        }
        if groups.has(MetricGroup::Pressure)
            && let Some(dir) = hierarchy.unified_dir(rel)
        {
            for (source, name) in PSI_SOURCES {
                reader.open_file(*source, &dir, name, keep)?;
            }
        }
        reader.files.shrink_to_fit();
        reader.dirs.shrink_to_fit();
        Ok(reader)
    }

    /// Opens `dir/name` as one of its files; `Ok(false)` when it does not exist.
    fn open_file(
        &mut self,
        source: Source,
        dir: &Path,
        name: &'static str,
        keep: KeepOpen,
    ) -> Result<bool, StatsError> {
        let path = dir.join(name);
        match File::open(&path) {
            Ok(f) => {
                let i = match self.dirs.iter().position(|d| d == dir) {
                    Some(i) => i,
                    None => {
                        self.dirs.push(dir.to_path_buf());
                        self.dirs.len() - 1
                    }
                };
                self.files.push(StatFile {
                    source,
                    // At most one directory per controller and the cgroup2 one.
                    dir: u8::try_from(i).unwrap_or(u8::MAX),
                    name,
                    kept: (keep == KeepOpen::Yes).then_some(f),
                });
                Ok(true)
            }
            // Absent on this kernel (memory.peak, swap, PSI) or the controller is
            // not enabled for this cgroup: that family is just not exported for it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                Err(StatsError::Vanished(path.display().to_string()))
            }
            Err(source) => Err(StatsError::Read { path, source }),
        }
    }

    /// The path of one of its files.
    fn path_of(&self, f: &StatFile) -> PathBuf {
        self.dirs
            .get(usize::from(f.dir))
            .map_or_else(|| PathBuf::from(f.name), |d| d.join(f.name))
    }

    /// The cgroup path this reader serves.
    pub fn path(&self) -> &str {
        &self.rel
    }

    /// Number of descriptors it holds (for the descriptor budget).
    pub fn open_files(&self) -> usize {
        self.files.iter().filter(|f| f.kept.is_some()).count()
    }

    /// Number of files it reads.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// The paths of the files it reads.
    pub fn open_paths(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.files.iter().map(|f| self.path_of(f))
    }

    /// Reads and parses every file. `buf` is scratch space reused across cgroups.
    ///
    /// A cgroup that vanished returns [`StatsError::Vanished`]; a file that cannot be
    /// parsed leaves its fields `None` and is reported through `on_error`, so one bad
    /// file costs one family, not the whole cgroup.
    pub fn read(
        &self,
        buf: &mut Vec<u8>,
        mut on_error: impl FnMut(StatsError),
    ) -> Result<CgroupStats, StatsError> {
        let mut stats = CgroupStats {
            start_time_seconds: self.start_time,
            ..CgroupStats::default()
        };
        let mut inactive_file = None;
        for f in &self.files {
            let read = match &f.kept {
                Some(file) => read_all(file, buf),
                None => match File::open(self.path_of(f)) {
                    Ok(file) => read_all(&file, buf),
                    Err(e) => Err(e),
                },
            };
            let data = match read {
                Ok(d) => d,
                Err(e) if super::discovery::is_vanished(&e) => {
                    return Err(StatsError::Vanished(self.rel.clone()));
                }
                Err(source) => {
                    on_error(StatsError::Read {
                        path: self.path_of(f),
                        source,
                    });
                    continue;
                }
            };
            if let Err(source) = apply(f.source, data, &mut stats, &mut inactive_file) {
                on_error(StatsError::Parse {
                    path: self.path_of(f),
                    source,
                });
            }
        }
        if let (Some(usage), Some(inactive)) = (stats.memory_usage_bytes, inactive_file) {
            stats.memory_working_set_bytes = Some((usage - inactive).max(0.0));
        } else {
            stats.memory_working_set_bytes = stats.memory_usage_bytes;
        }
        Ok(stats)
    }
}

/// The kernel's seq_file page: a read of a cgroup or proc file stops short of the
/// buffer only at the end of the file or when this page cannot take the next record.
const SEQ_PAGE: usize = 4096;
/// The longest record of the multi-record files read here (a pid of
/// `cgroup.procs`, a line of `net/dev`: 16 counters of at most 20 digits).
const MAX_RECORD: usize = 512;

/// Reads a whole cgroup (or proc) file from offset 0 into `buf`, growing it as
/// needed: one pread loop, so a kept descriptor needs no seek.
///
/// A read that ends more than [`MAX_RECORD`] bytes inside the seq_file page is
/// the end of the file, so the read that would return 0 is not made: one system
/// call per file instead of two, for all but files near a page long.
pub(crate) fn read_all<'b>(file: &File, buf: &'b mut Vec<u8>) -> std::io::Result<&'b [u8]> {
    if buf.len() < SEQ_PAGE {
        buf.resize(SEQ_PAGE, 0);
    }
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let asked = buf.len() - n;
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => return Ok(&buf[..n]),
            Ok(k) => {
                n += k;
                if k < asked && k + MAX_RECORD <= SEQ_PAGE {
                    return Ok(&buf[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn usec(v: u64) -> f64 {
    v as f64 / 1e6
}

fn nsec(v: u64) -> f64 {
    v as f64 / 1e9
}

/// Clock ticks per second, the unit of `cpuacct.stat`.
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions and only reads a constant.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 { t as f64 } else { 100.0 }
    })
}

fn apply(
    source: Source,
    data: &[u8],
    s: &mut CgroupStats,
    inactive_file: &mut Option<f64>,
) -> Result<(), ParseError> {
    let f = |v: u64| Some(v as f64);
    match source {
        Source::CpuStat => parse::flat_keyed(data, |k, v| match k {
            "usage_usec" => s.cpu_usage_seconds = Some(usec(v)),
            "user_usec" => s.cpu_user_seconds = Some(usec(v)),
            "system_usec" => s.cpu_system_seconds = Some(usec(v)),
            "nr_periods" => s.cpu_cfs_periods = f(v),
            "nr_throttled" => s.cpu_cfs_throttled_periods = f(v),
            "throttled_usec" => s.cpu_cfs_throttled_seconds = Some(usec(v)),
            _ => {}
        })?,
        Source::CpuStatV1 => parse::flat_keyed(data, |k, v| match k {
            "nr_periods" => s.cpu_cfs_periods = f(v),
            "nr_throttled" => s.cpu_cfs_throttled_periods = f(v),
            "throttled_time" => s.cpu_cfs_throttled_seconds = Some(nsec(v)),
            _ => {}
        })?,
        Source::CpuacctUsage => s.cpu_usage_seconds = Some(nsec(parse::single_u64(data)?)),
        Source::CpuacctStat => parse::flat_keyed(data, |k, v| match k {
            "user" => s.cpu_user_seconds = Some(v as f64 / clock_ticks()),
            "system" => s.cpu_system_seconds = Some(v as f64 / clock_ticks()),
            _ => {}
        })?,
        Source::MemoryCurrent | Source::MemoryUsage => {
            s.memory_usage_bytes = f(parse::single_u64(data)?)
        }
        Source::MemoryStatV2 => parse::flat_keyed(data, |k, v| match k {
            "anon" => s.memory_rss = f(v),
            "file" => s.memory_cache = f(v),
            "file_mapped" => s.memory_mapped_file = f(v),
            "inactive_file" => *inactive_file = f(v),
            // v2 event counters include the descendants: the cgroup's own and
            // its hierarchy's are the same figure.
            "pgfault" => {
                s.memory_pgfault = f(v);
                s.memory_hierarchy_pgfault = f(v);
            }
            "pgmajfault" => {
                s.memory_pgmajfault = f(v);
                s.memory_hierarchy_pgmajfault = f(v);
            }
            _ => {}
        })?,
        Source::MemoryStatV1 => parse::flat_keyed(data, |k, v| match k {
            "total_rss" => s.memory_rss = f(v),
            "total_cache" => s.memory_cache = f(v),
            "total_mapped_file" => s.memory_mapped_file = f(v),
            "total_swap" => s.memory_swap = f(v),
            "total_inactive_file" => *inactive_file = f(v),
            "pgfault" => s.memory_pgfault = f(v),
            "pgmajfault" => s.memory_pgmajfault = f(v),
            "total_pgfault" => s.memory_hierarchy_pgfault = f(v),
            "total_pgmajfault" => s.memory_hierarchy_pgmajfault = f(v),
            _ => {}
        })?,
        Source::MemorySwapCurrent => s.memory_swap = f(parse::single_u64(data)?),
        Source::MemoryPeak | Source::MemoryMaxUsage => {
            s.memory_max_usage_bytes = f(parse::single_u64(data)?)
        }
        Source::MemoryEvents => parse::flat_keyed(data, |k, v| match k {
            "max" => s.memory_failcnt = f(v),
            "oom_kill" => s.oom_events = f(v),
            _ => {}
        })?,
        Source::MemoryFailcnt => s.memory_failcnt = f(parse::single_u64(data)?),
        Source::MemoryOomControl => {
            // Kernels before 4.13 have no oom_kill line: then no OOM family at all.
            parse::flat_keyed(data, |k, v| {
                if k == "oom_kill" {
                    s.oom_events = f(v)
                }
            })?
        }
        Source::MemoryMax => s.spec_memory_limit_bytes = f(parse::limit_or_max(data)?),
        Source::MemoryLimit => s.spec_memory_limit_bytes = f(parse::v1_limit(data)?),
        Source::MemoryLow => s.spec_memory_reservation_limit_bytes = f(parse::limit_or_max(data)?),
        Source::MemorySoftLimit => {
            s.spec_memory_reservation_limit_bytes = f(parse::v1_limit(data)?)
        }
        Source::MemorySwapMax => s.spec_memory_swap_limit_bytes = f(parse::limit_or_max(data)?),
        Source::MemswLimit => s.spec_memory_swap_limit_bytes = f(parse::v1_limit(data)?),
        Source::IoStat => parse::io_stat(data, |device, key, v| {
            if let Some((op, bytes)) = IoOp::from_v2(key) {
                let d = device_entry(&mut s.io, device);
                let table = if bytes { &mut d.bytes } else { &mut d.ios };
                table[op as usize] = Some(v);
            }
        })?,
        Source::BlkioBytes => parse::blkio_v1(data, |device, op, v| {
            if let Some(op) = IoOp::from_v1(op) {
                device_entry(&mut s.io, device).bytes[op as usize] = Some(v);
            }
        })?,
        Source::BlkioServiced => parse::blkio_v1(data, |device, op, v| {
            if let Some(op) = IoOp::from_v1(op) {
                device_entry(&mut s.io, device).ios[op as usize] = Some(v);
            }
        })?,
        Source::CpuMax => {
            let (quota, period) = parse::cpu_max(data)?;
            s.spec_cpu_quota = f(quota);
            s.spec_cpu_period = f(period);
        }
        Source::CpuWeight => {
            s.spec_cpu_shares = f(parse::weight_to_shares(parse::single_u64(data)?))
        }
        Source::CfsQuota => s.spec_cpu_quota = f(parse::signed_or_unlimited(data)?),
        Source::CfsPeriod => s.spec_cpu_period = f(parse::single_u64(data)?),
        Source::CpuShares => s.spec_cpu_shares = f(parse::single_u64(data)?),
        Source::Procs => {
            s.processes = f(parse::count_lines(data)?);
            s.first_pid = parse::first_pid(data);
        }
        Source::PidsCurrent => s.threads = f(parse::single_u64(data)?),
        Source::PidsMax => s.threads_max = f(parse::limit_or_max(data)?),
        Source::CpuPressure => {
            let p = parse::pressure(data)?;
            s.pressure_cpu_waiting_seconds = Some(usec(p.some_total_us));
            s.pressure_cpu_stalled_seconds = p.full_total_us.map(usec);
        }
        Source::MemoryPressure => {
            let p = parse::pressure(data)?;
            s.pressure_memory_waiting_seconds = Some(usec(p.some_total_us));
            s.pressure_memory_stalled_seconds = p.full_total_us.map(usec);
        }
        Source::IoPressure => {
            let p = parse::pressure(data)?;
            s.pressure_io_waiting_seconds = Some(usec(p.some_total_us));
            s.pressure_io_stalled_seconds = p.full_total_us.map(usec);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    /// A v2 tree whose `/demo` cgroup holds the captured v2 files.
    fn v2_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        copy_dir(
            &fixtures().join("cgroup-v2-debian-6.1/demo"),
            &t.path().join("demo"),
        );
        t
    }

    /// A hybrid v1 tree whose `/docker/fx` cgroup holds the captured v1 files of
    /// Docker container `fx` (fx1, fx2), with the blkio files of the direct-I/O
    /// capture (`io/`; the Docker containers did no block I/O).
    fn v1_tree(fx: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let v1 = fixtures().join("cgroup-v1-hybrid-6.18");
        for c in ["memory", "cpu", "cpuacct", "pids", "blkio"] {
            fs::create_dir_all(t.path().join(c)).unwrap();
            fs::write(t.path().join(c).join("cgroup.procs"), "").unwrap();
            let from = if c == "blkio" {
                v1.join("io")
            } else {
                v1.join(fx)
            };
            copy_dir(&from.join(c), &t.path().join(c).join("docker/fx"));
        }
        t
    }

    /// `MAJ:MIN op value` of a v1 blkio fixture, read the simplest way.
    fn v1_blkio(file: &str, device: &str, op: &str) -> u64 {
        let path = fixtures().join("cgroup-v1-hybrid-6.18/io/blkio").join(file);
        fs::read_to_string(&path)
            .unwrap()
            .lines()
            .find_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() == 3 && w[0] == device && w[1] == op).then(|| w[2].parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no {device} {op} in {}", path.display()))
    }

    /// `key=value` of device `device` in a v2 `io.stat` fixture.
    fn v2_io(file: &str, device: &str, key: &str) -> u64 {
        let path = fixtures().join("cgroup-v2-debian-6.1").join(file);
        let text = fs::read_to_string(&path).unwrap();
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(device))
            .unwrap_or_else(|| panic!("no {device} in {}", path.display()));
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key} for {device} in {}", path.display()))
            .parse()
            .unwrap()
    }

    /// The first device of a v2 `io.stat` fixture (the capture disk, `vda`).
    fn v2_io_device(file: &str) -> String {
        let path = fixtures().join("cgroup-v2-debian-6.1").join(file);
        fs::read_to_string(&path)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("{} is empty", path.display()))
            .to_string()
    }

    /// Reads `rel` with descriptors kept open, and checks that opening the
    /// files per read (past the descriptor budget) gives the same, holding none.
    fn read(h: &Hierarchy, rel: &str) -> CgroupStats {
        let reader = StatsReader::open(h, rel, MetricGroups::ALL, KeepOpen::Yes).unwrap();
        let mut errors = Vec::new();
        let stats = reader.read(&mut Vec::new(), |e| errors.push(e)).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let by_path = StatsReader::open(h, rel, MetricGroups::ALL, KeepOpen::No).unwrap();
        assert_eq!(by_path.open_files(), 0);
        assert_eq!(by_path.files(), reader.files());
        let again = by_path.read(&mut Vec::new(), |e| errors.push(e)).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(format!("{again:?}"), format!("{stats:?}"));
        stats
    }

    /// `key`'s value in a flat-keyed v2 fixture file, read the simplest way. The v2
    /// fixtures are recaptured by `cargo xtask vm-test --capture-fixtures`: kernel
    /// measurements are checked against the files, limits against what was written.
    fn v2_field(file: &str, key: &str) -> f64 {
        let path = fixtures().join("cgroup-v2-debian-6.1/demo").join(file);
        let text = fs::read_to_string(&path).unwrap();
        text.lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                if w.next()? != key {
                    return None;
                }
                // "key value", or a PSI line "some avg10=… total=N".
                let rest: Vec<&str> = w.collect();
                let v = rest
                    .iter()
                    .find_map(|t| t.strip_prefix("total="))
                    .or(rest.first().copied())?;
                v.parse().ok()
            })
            .unwrap_or_else(|| panic!("no {key} in {}", path.display()))
    }

    fn v2_single(file: &str) -> f64 {
        let path = fixtures().join("cgroup-v2-debian-6.1/demo").join(file);
        fs::read_to_string(&path).unwrap().trim().parse().unwrap()
    }

    #[test]
    fn v2_stats_from_real_files() {
        let t = v2_tree();
        let h = Hierarchy::detect(t.path()).unwrap();
        let s = read(&h, "/demo");
        let secs = |us: f64| Some(us / 1e6);
        assert_eq!(
            s.cpu_usage_seconds,
            secs(v2_field("cpu.stat", "usage_usec"))
        );
        assert_eq!(s.cpu_user_seconds, secs(v2_field("cpu.stat", "user_usec")));
        assert_eq!(
            s.cpu_system_seconds,
            secs(v2_field("cpu.stat", "system_usec"))
        );
        assert_eq!(s.cpu_cfs_periods, Some(v2_field("cpu.stat", "nr_periods")));
        assert_eq!(
            s.cpu_cfs_throttled_periods,
            Some(v2_field("cpu.stat", "nr_throttled"))
        );
        assert_eq!(
            s.cpu_cfs_throttled_seconds,
            secs(v2_field("cpu.stat", "throttled_usec"))
        );
        assert!(s.cpu_cfs_throttled_periods.unwrap() > 0.0, "throttled");
        let usage = v2_single("memory.current");
        assert_eq!(s.memory_usage_bytes, Some(usage));
        assert_eq!(s.memory_cache, Some(v2_field("memory.stat", "file")));
        assert_eq!(s.memory_rss, Some(v2_field("memory.stat", "anon")));
        assert_eq!(
            s.memory_mapped_file,
            Some(v2_field("memory.stat", "file_mapped"))
        );
        assert_eq!(s.memory_swap, Some(v2_single("memory.swap.current")));
        assert_eq!(s.memory_max_usage_bytes, Some(v2_single("memory.peak")));
        assert_eq!(s.memory_failcnt, Some(v2_field("memory.events", "max")));
        assert!(s.memory_failcnt.unwrap() > 0.0);
        assert_eq!(s.oom_events, Some(1.0));
        assert_eq!(s.spec_memory_limit_bytes, Some(67_108_864.0));
        assert_eq!(s.spec_cpu_quota, Some(50_000.0));
        assert_eq!(s.spec_cpu_period, Some(100_000.0));
        assert_eq!(s.spec_cpu_shares, Some(2_597.0));
        assert_eq!(s.threads_max, Some(40.0));
        assert_eq!(s.processes, Some(0.0));
        assert_eq!(
            s.pressure_cpu_waiting_seconds,
            secs(v2_field("cpu.pressure", "some"))
        );
        assert_eq!(
            s.pressure_cpu_stalled_seconds,
            secs(v2_field("cpu.pressure", "full"))
        );
        let ws = s.memory_working_set_bytes.unwrap();
        let inactive = v2_field("memory.stat", "inactive_file");
        assert_eq!(ws, (usage - inactive).max(0.0));
        assert!(s.start_time_seconds.unwrap() > 0.0);
        // As the capture wrote them: memory.low 8 MiB, memory.swap.max 32 MiB.
        assert_eq!(s.spec_memory_reservation_limit_bytes, Some(8.0 * 1048576.0));
        assert_eq!(s.spec_memory_swap_limit_bytes, Some(32.0 * 1048576.0));
        // v2 counters include descendants: both scopes are memory.stat's figure.
        let pgfault = v2_field("memory.stat", "pgfault");
        assert_eq!(s.memory_pgfault, Some(pgfault));
        assert_eq!(s.memory_hierarchy_pgfault, Some(pgfault));
        assert!(pgfault > 0.0);
        let pgmajfault = Some(v2_field("memory.stat", "pgmajfault"));
        assert_eq!(s.memory_pgmajfault, pgmajfault);
        assert_eq!(s.memory_hierarchy_pgmajfault, pgmajfault);
        // The holder wrote 8 MiB and read 4 MiB with O_DIRECT; io.stat is
        // hierarchical, so demo counts them.
        let dev = v2_io_device("demo/io.stat");
        let (major, minor) = parse::device_number(&dev).unwrap();
        assert_eq!(s.io.len(), 1, "{:?}", s.io);
        let d = &s.io[0];
        assert_eq!((d.major, d.minor), (major, minor));
        for (op, bytes, ios) in [
            (IoOp::Read, "rbytes", "rios"),
            (IoOp::Write, "wbytes", "wios"),
            (IoOp::Discard, "dbytes", "dios"),
        ] {
            assert_eq!(
                d.bytes(op),
                Some(v2_io("demo/io.stat", &dev, bytes)),
                "{op:?}"
            );
            assert_eq!(d.ios(op), Some(v2_io("demo/io.stat", &dev, ios)), "{op:?}");
        }
        assert!(d.bytes(IoOp::Write).unwrap() >= 8 << 20, "{d:?}");
        assert!(d.bytes(IoOp::Read).unwrap() >= 4 << 20, "{d:?}");
        assert!(d.ios(IoOp::Write).unwrap() >= 1 && d.ios(IoOp::Read).unwrap() >= 1);
        assert_eq!(d.bytes(IoOp::Total), None, "v2 has no total");
        assert_eq!(d.bytes(IoOp::Sync), None, "v2 has no sync/async split");
    }

    #[test]
    fn v2_root_gives_what_its_files_give() {
        let t = tempfile::tempdir().unwrap();
        copy_dir(&fixtures().join("cgroup-v2-debian-6.1/root"), t.path());
        let h = Hierarchy::detect(t.path()).unwrap();
        let reader = StatsReader::open_root(&h, MetricGroups::ALL, KeepOpen::Yes).unwrap();
        let s = reader.read(&mut Vec::new(), |e| panic!("{e:#}")).unwrap();
        let root = |file: &str, key: &str| {
            let text = fs::read_to_string(fixtures().join("cgroup-v2-debian-6.1/root").join(file))
                .unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse::<f64>().ok())
                .unwrap()
        };
        assert_eq!(
            s.cpu_usage_seconds,
            Some(root("cpu.stat", "usage_usec") / 1e6)
        );
        assert_eq!(s.memory_rss, Some(root("memory.stat", "anon")));
        assert_eq!(s.memory_usage_bytes, None, "no memory.current at the root");
        assert_eq!(s.memory_working_set_bytes, None);
        assert_eq!(s.spec_memory_limit_bytes, None);
        assert_eq!(
            s.processes, None,
            "cgroup.procs at the root is not the machine's"
        );
        // The root's io.stat is the disks' own counters: at least the holder's I/O.
        assert!(!s.io.is_empty());
        assert!(
            s.io.iter()
                .map(|d| d.bytes(IoOp::Write).unwrap_or(0))
                .sum::<u64>()
                >= 8 << 20
        );
    }

    #[test]
    fn v1_stats_from_real_files() {
        let t = v1_tree("fx1");
        let h = Hierarchy::detect(t.path()).unwrap();
        let s = read(&h, "/docker/fx");
        assert!(s.cpu_usage_seconds.unwrap() > 0.0);
        assert!(s.cpu_user_seconds.is_some() && s.cpu_system_seconds.is_some());
        assert!(s.cpu_cfs_throttled_periods.unwrap() > 0.0);
        assert_eq!(s.spec_memory_limit_bytes, Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(s.spec_cpu_quota, Some(50_000.0));
        assert_eq!(s.spec_cpu_period, Some(100_000.0));
        assert_eq!(s.spec_cpu_shares, Some(1024.0));
        assert_eq!(s.threads_max, Some(40.0));
        assert!(s.memory_cache.unwrap() >= 12.0 * 1024.0 * 1024.0);
        let usage = s.memory_usage_bytes.unwrap();
        let ws = s.memory_working_set_bytes.unwrap();
        assert!(ws <= usage && ws > 0.0);
        assert_eq!(s.pressure_cpu_waiting_seconds, None, "no PSI on plain v1");

        // Docker's defaults: no reservation (the unlimited sentinel), memory+swap
        // twice the memory limit.
        assert_eq!(s.spec_memory_reservation_limit_bytes, Some(0.0));
        assert_eq!(
            s.spec_memory_swap_limit_bytes,
            Some(128.0 * 1024.0 * 1024.0)
        );
        let stat =
            fs::read_to_string(fixtures().join("cgroup-v1-hybrid-6.18/fx1/memory/memory.stat"))
                .unwrap();
        let field = |key: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse::<f64>().ok())
        };
        assert_eq!(s.memory_pgfault, field("pgfault"));
        assert_eq!(s.memory_pgmajfault, field("pgmajfault"));
        assert_eq!(s.memory_hierarchy_pgfault, field("total_pgfault"));
        assert_eq!(s.memory_hierarchy_pgmajfault, field("total_pgmajfault"));
        assert!(s.memory_pgfault.unwrap() > 0.0);

        // The direct-I/O capture: 8 MiB written, then read back.
        assert_eq!(s.io.len(), 1, "{:?}", s.io);
        let d = &s.io[0];
        assert_eq!((d.major, d.minor), (254, 0));
        for op in IoOp::ALL {
            let name = op.as_str();
            let recursive = "blkio.throttle.io_service_bytes_recursive";
            assert_eq!(
                d.bytes(op),
                Some(v1_blkio(recursive, "254:0", name)),
                "{name}"
            );
            let ios = "blkio.throttle.io_serviced_recursive";
            assert_eq!(d.ios(op), Some(v1_blkio(ios, "254:0", name)), "{name}");
        }
        assert_eq!(d.bytes(IoOp::Write), Some(8 << 20));
        assert!(d.bytes(IoOp::Read).unwrap() >= 8 << 20);
        assert!((1..=64).contains(&d.ios(IoOp::Write).unwrap()), "{d:?}");

        let t2 = v1_tree("fx2");
        let s2 = read(&Hierarchy::detect(t2.path()).unwrap(), "/docker/fx");
        assert_eq!(s2.oom_events, Some(1.0));
        assert_eq!(s2.spec_memory_limit_bytes, Some(16.0 * 1024.0 * 1024.0));
        assert_eq!(
            s2.spec_memory_swap_limit_bytes,
            Some(16.0 * 1024.0 * 1024.0)
        );
    }

    #[test]
    fn v1_blkio_falls_back_to_the_plain_files() {
        let t = v1_tree("fx1");
        let blkio = t.path().join("blkio/docker/fx");
        for f in ["io_service_bytes", "io_serviced"] {
            fs::remove_file(blkio.join(format!("blkio.throttle.{f}_recursive"))).unwrap();
        }
        let h = Hierarchy::detect(t.path()).unwrap();
        let s = read(&h, "/docker/fx");
        assert_eq!(s.io[0].bytes(IoOp::Write), Some(8 << 20));
        // A device-less file (the kernel keeps no counts yet): no devices, no error.
        fs::write(blkio.join("blkio.throttle.io_service_bytes"), "Total 0\n").unwrap();
        fs::write(blkio.join("blkio.throttle.io_serviced"), "Total 0\n").unwrap();
        assert!(read(&h, "/docker/fx").io.is_empty());
    }

    #[test]
    fn disabled_groups_open_no_files() {
        let t = v2_tree();
        let h = Hierarchy::detect(t.path()).unwrap();
        let all = StatsReader::open(&h, "/demo", MetricGroups::ALL, KeepOpen::Yes).unwrap();
        let no_disk = StatsReader::open(
            &h,
            "/demo",
            MetricGroups::without(&[MetricGroup::Disk]),
            KeepOpen::Yes,
        )
        .unwrap();
        assert_eq!(no_disk.open_files(), all.open_files() - 1);
        assert!(no_disk.open_paths().all(|p| !p.ends_with("io.stat")));
        let s = no_disk.read(&mut Vec::new(), |e| panic!("{e:#}")).unwrap();
        assert!(s.io.is_empty() && s.memory_usage_bytes.is_some());

        // Memory off, events on: memory.events stays open for the OOM kills alone.
        let events = MetricGroups::without(&[MetricGroup::Memory]);
        let r = StatsReader::open(&h, "/demo", events, KeepOpen::Yes).unwrap();
        let names: Vec<String> = r
            .open_paths()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n == "memory.events"), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n == "memory.stat" || n == "memory.current")
        );

        let nothing = MetricGroups::without(&MetricGroup::ALL);
        let r = StatsReader::open(&h, "/demo", nothing, KeepOpen::Yes).unwrap();
        assert_eq!(r.open_files(), 0);
        let s = r.read(&mut Vec::new(), |e| panic!("{e:#}")).unwrap();
        assert!(s.start_time_seconds.is_some(), "still dated");
        assert_eq!(s.cpu_usage_seconds, None);
    }

    #[test]
    fn stat_files_match_what_is_read() {
        let t = v2_tree();
        let h = Hierarchy::detect(t.path()).unwrap();
        let listed = stat_files(&h, "/demo");
        let reader = StatsReader::open(&h, "/demo", MetricGroups::ALL, KeepOpen::Yes).unwrap();
        assert_eq!(
            listed.len(),
            reader.open_files(),
            "every listed file exists here"
        );
    }

    #[test]
    fn garbage_file_costs_one_family_not_the_cgroup() {
        let t = v2_tree();
        fs::write(t.path().join("demo/memory.current"), "garbage\n").unwrap();
        fs::write(t.path().join("demo/cpu.stat"), "usage_usec").unwrap();
        let h = Hierarchy::detect(t.path()).unwrap();
        let reader = StatsReader::open(&h, "/demo", MetricGroups::ALL, KeepOpen::Yes).unwrap();
        let mut kinds = Vec::new();
        let s = reader
            .read(&mut Vec::new(), |e| kinds.push(e.kind()))
            .unwrap();
        assert_eq!(kinds, vec![ScrapeErrorKind::Parse, ScrapeErrorKind::Parse]);
        assert_eq!(s.memory_usage_bytes, None);
        assert_eq!(s.spec_memory_limit_bytes, Some(67_108_864.0));
    }

    #[test]
    fn missing_cgroup_is_vanished() {
        let t = v2_tree();
        let h = Hierarchy::detect(t.path()).unwrap();
        assert!(matches!(
            StatsReader::open(&h, "/nope", MetricGroups::ALL, KeepOpen::Yes),
            Err(StatsError::Vanished(_))
        ));
    }

    #[test]
    fn a_seq_file_of_many_pages_is_read_whole() {
        // A real kernel seq_file of short records, megabytes long: a read stops
        // short at every page, and none of those may be taken for the end. It can
        // change between two reads (a BPF program loaded meanwhile): try thrice.
        let path = Path::new("/proc/kallsyms");
        let Ok(file) = File::open(path) else {
            eprintln!("skipped: no /proc/kallsyms");
            return;
        };
        let mut buf = Vec::new();
        let same = (0..3).any(|_| {
            let ours = read_all(&file, &mut buf).unwrap().to_vec();
            assert!(ours.len() > 4 * SEQ_PAGE, "{} bytes", ours.len());
            ours == fs::read(path).unwrap()
        });
        assert!(
            same,
            "read_all and std::fs::read disagree on {}",
            path.display()
        );
    }

    #[test]
    fn large_files_are_read_whole() {
        let t = v2_tree();
        let pids: String = (1..3000).map(|p| format!("{p}\n")).collect();
        fs::write(t.path().join("demo/cgroup.procs"), pids).unwrap();
        let h = Hierarchy::detect(t.path()).unwrap();
        assert_eq!(read(&h, "/demo").processes, Some(2999.0));
    }
}
