//! Reads one cgroup's accounting files, keeping them open between scrapes.
//!
//! Each stat file is opened once when the cgroup is first tracked and re-read with
//! `pread` at offset 0 on every scrape (cgroupfs regenerates the contents), which saves
//! an open and a close per file per scrape. Files a kernel lacks (`memory.peak`,
//! `memory.swap.current`, PSI) are simply absent from the set, and so are the files
//! of metric groups that are turned off.

mod fill;
mod sources;
#[cfg(test)]
mod tests;

pub use sources::stat_files;

use super::ScrapeErrorKind;
use super::groups::{MetricGroup, MetricGroups};
use super::hierarchy::{Controller, HeldMount, Hierarchy};
use super::parse::ParseError;
use sources::{PSI_SOURCES, Source, sources_for};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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

/// One cgroup's stat files: kept open between scrapes (read with `pread`), or,
/// when the process's descriptor budget is spent, opened for each read.
///
/// Its limits (the container's spec: `memory.max`, `cpu.max`, `pids.max`…) are
/// read again at most every [`LIMITS_MAX_AGE`], as cAdvisor refreshes a
/// container's spec, and their files are opened per read rather than kept: the
/// descriptor budget goes to the counters, which change on every scrape. On v1
/// that is 7 of a cgroup's 19 files.
///
/// Its directories are held once and each file names one of them, not a path of
/// its own: at 10,000 cgroups of ~20 files each, per-file paths were megabytes.
#[derive(Debug)]
pub struct StatsReader {
    rel: String,
    /// The mounts its files are under (one per controller mount and the
    /// cgroup2 one): a file is `rel` under one of them.
    mounts: Vec<Arc<HeldMount>>,
    files: Vec<StatFile>,
    start_time: Option<f64>,
    /// The limits last read, and when.
    limits: Mutex<Option<(Instant, Limits)>>,
}

/// How long a cgroup's limits are reused before their files are read again:
/// cAdvisor refreshes a container's spec at most every 5 s too.
pub const LIMITS_MAX_AGE: Duration = Duration::from_secs(5);

/// The fields of [`CgroupStats`] that the limit files fill.
#[derive(Debug, Clone, Copy)]
struct Limits {
    memory: Option<f64>,
    memory_reservation: Option<f64>,
    memory_swap: Option<f64>,
    cpu_quota: Option<f64>,
    cpu_period: Option<f64>,
    cpu_shares: Option<f64>,
    threads_max: Option<f64>,
}

impl Limits {
    fn of(s: &CgroupStats) -> Self {
        Limits {
            memory: s.spec_memory_limit_bytes,
            memory_reservation: s.spec_memory_reservation_limit_bytes,
            memory_swap: s.spec_memory_swap_limit_bytes,
            cpu_quota: s.spec_cpu_quota,
            cpu_period: s.spec_cpu_period,
            cpu_shares: s.spec_cpu_shares,
            threads_max: s.threads_max,
        }
    }

    fn fill(self, s: &mut CgroupStats) {
        s.spec_memory_limit_bytes = self.memory;
        s.spec_memory_reservation_limit_bytes = self.memory_reservation;
        s.spec_memory_swap_limit_bytes = self.memory_swap;
        s.spec_cpu_quota = self.cpu_quota;
        s.spec_cpu_period = self.cpu_period;
        s.spec_cpu_shares = self.cpu_shares;
        s.threads_max = self.threads_max;
    }
}

/// One file a [`StatsReader`] reads.
#[derive(Debug)]
struct StatFile {
    source: Source,
    /// Index of its mount in the reader's `mounts`.
    mount: u8,
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
            mounts: Vec::new(),
            files: Vec::new(),
            start_time,
            limits: Mutex::new(None),
        };
        for f in sources {
            if !f.groups.intersects(groups) || !wanted(f.source) {
                continue;
            }
            let Some(mount) = hierarchy.mount_dir(f.controller) else {
                continue;
            };
            let mount = hierarchy.held_mount(mount);
            for name in f.names {
                if reader.open_file(&mount, f.source, name, keep)? {
                    break;
                }
            }
        }
        if groups.has(MetricGroup::Pressure)
            && let Some(mount) = hierarchy.unified_root()
        {
            let mount = hierarchy.held_mount(mount);
            for (source, name) in PSI_SOURCES {
                reader.open_file(&mount, *source, name, keep)?;
            }
        }
        reader.files.shrink_to_fit();
        reader.mounts.shrink_to_fit();
        Ok(reader)
    }

    /// Opens its file `name` under `mount` as one of its files; `Ok(false)` when
    /// it does not exist.
    fn open_file(
        &mut self,
        mount: &Arc<HeldMount>,
        source: Source,
        name: &'static str,
        keep: KeepOpen,
    ) -> Result<bool, StatsError> {
        match mount.open(&self.rel, name) {
            Ok(f) => {
                let i = match self.mounts.iter().position(|m| Arc::ptr_eq(m, mount)) {
                    Some(i) => i,
                    None => {
                        self.mounts.push(Arc::clone(mount));
                        self.mounts.len() - 1
                    }
                };
                self.files.push(StatFile {
                    source,
                    // At most one mount per controller and the cgroup2 one.
                    mount: u8::try_from(i).unwrap_or(u8::MAX),
                    name,
                    kept: (keep == KeepOpen::Yes && !source.is_limit()).then_some(f),
                });
                Ok(true)
            }
            // Absent on this kernel (memory.peak, swap, PSI) or the controller is
            // not enabled for this cgroup: that family is just not exported for it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Err(StatsError::Vanished(
                mount.file_path(&self.rel, name).display().to_string(),
            )),
            Err(source) => Err(StatsError::Read {
                path: mount.file_path(&self.rel, name),
                source,
            }),
        }
    }

    /// The path of one of its files.
    fn path_of(&self, f: &StatFile) -> PathBuf {
        self.mounts
            .get(usize::from(f.mount))
            .map_or_else(|| PathBuf::from(f.name), |m| m.file_path(&self.rel, f.name))
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
        on_error: impl FnMut(StatsError),
    ) -> Result<CgroupStats, StatsError> {
        self.read_at(Instant::now(), buf, on_error)
    }

    /// [`StatsReader::read`] as of `now` (whether the limits are due again).
    fn read_at(
        &self,
        now: Instant,
        buf: &mut Vec<u8>,
        mut on_error: impl FnMut(StatsError),
    ) -> Result<CgroupStats, StatsError> {
        let mut stats = CgroupStats {
            start_time_seconds: self.start_time,
            ..CgroupStats::default()
        };
        let mut inactive_file = None;
        let mut cached = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = cached.filter(|(at, _)| now.duration_since(*at) < LIMITS_MAX_AGE);
        for f in &self.files {
            if fresh.is_some() && f.source.is_limit() {
                continue;
            }
            let read = match &f.kept {
                Some(file) => read_all(file, buf),
                None => match self
                    .mounts
                    .get(usize::from(f.mount))
                    .map(|m| m.open(&self.rel, f.name))
                {
                    Some(Ok(file)) => read_all(&file, buf),
                    Some(Err(e)) => Err(e),
                    None => Err(std::io::ErrorKind::NotFound.into()),
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
            if let Err(source) = fill::apply(f.source, data, &mut stats, &mut inactive_file) {
                on_error(StatsError::Parse {
                    path: self.path_of(f),
                    source,
                });
            }
        }
        match fresh {
            Some((_, limits)) => limits.fill(&mut stats),
            None => *cached = Some((now, Limits::of(&stats))),
        }
        drop(cached);
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
