//! Reads one cgroup's accounting files, keeping them open between scrapes.
//!
//! Each stat file is opened once when the cgroup is first tracked and re-read with
//! `pread` at offset 0 on every scrape (cgroupfs regenerates the contents), which saves
//! an open and a close per file per scrape. Files a kernel lacks (`memory.peak`,
//! `memory.swap.current`, PSI) are simply absent from the set.

use super::ScrapeErrorKind;
use super::hierarchy::{Controller, Hierarchy, Version};
use super::parse::{self, ParseError};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
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
    pub oom_events: Option<f64>,
    pub processes: Option<f64>,
    pub threads: Option<f64>,
    pub threads_max: Option<f64>,
    pub spec_memory_limit_bytes: Option<f64>,
    pub spec_cpu_quota: Option<f64>,
    pub spec_cpu_period: Option<f64>,
    pub spec_cpu_shares: Option<f64>,
    pub pressure_cpu_waiting_seconds: Option<f64>,
    pub pressure_cpu_stalled_seconds: Option<f64>,
    pub pressure_memory_waiting_seconds: Option<f64>,
    pub pressure_memory_stalled_seconds: Option<f64>,
    pub pressure_io_waiting_seconds: Option<f64>,
    pub pressure_io_stalled_seconds: Option<f64>,
    /// Creation time of the cgroup directory (Unix seconds).
    pub start_time_seconds: Option<f64>,
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
    CpuMax,
    CpuWeight,
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
    CfsQuota,
    CfsPeriod,
    CpuShares,
    // both
    Procs,
    PidsCurrent,
    PidsMax,
    CpuPressure,
    MemoryPressure,
    IoPressure,
}

/// Where each source lives: (source, controller, file name). PSI files are on the
/// cgroup2 mount, which is the only mount on v2 and `unified/` on hybrid hosts.
const V2_SOURCES: &[(Source, Controller, &str)] = &[
    (Source::CpuStat, Controller::Cpu, "cpu.stat"),
    (Source::MemoryCurrent, Controller::Memory, "memory.current"),
    (Source::MemoryStatV2, Controller::Memory, "memory.stat"),
    (
        Source::MemorySwapCurrent,
        Controller::Memory,
        "memory.swap.current",
    ),
    (Source::MemoryPeak, Controller::Memory, "memory.peak"),
    (Source::MemoryEvents, Controller::Memory, "memory.events"),
    (Source::MemoryMax, Controller::Memory, "memory.max"),
    (Source::CpuMax, Controller::Cpu, "cpu.max"),
    (Source::CpuWeight, Controller::Cpu, "cpu.weight"),
    (Source::Procs, Controller::Pids, "cgroup.procs"),
    (Source::PidsCurrent, Controller::Pids, "pids.current"),
    (Source::PidsMax, Controller::Pids, "pids.max"),
];

const V1_SOURCES: &[(Source, Controller, &str)] = &[
    (Source::CpuacctUsage, Controller::Cpuacct, "cpuacct.usage"),
    (Source::CpuacctStat, Controller::Cpuacct, "cpuacct.stat"),
    (Source::CpuStatV1, Controller::Cpu, "cpu.stat"),
    (Source::CfsQuota, Controller::Cpu, "cpu.cfs_quota_us"),
    (Source::CfsPeriod, Controller::Cpu, "cpu.cfs_period_us"),
    (Source::CpuShares, Controller::Cpu, "cpu.shares"),
    (
        Source::MemoryUsage,
        Controller::Memory,
        "memory.usage_in_bytes",
    ),
    (Source::MemoryStatV1, Controller::Memory, "memory.stat"),
    (
        Source::MemoryMaxUsage,
        Controller::Memory,
        "memory.max_usage_in_bytes",
    ),
    (Source::MemoryFailcnt, Controller::Memory, "memory.failcnt"),
    (
        Source::MemoryOomControl,
        Controller::Memory,
        "memory.oom_control",
    ),
    (
        Source::MemoryLimit,
        Controller::Memory,
        "memory.limit_in_bytes",
    ),
    (Source::Procs, Controller::Pids, "cgroup.procs"),
    (Source::PidsCurrent, Controller::Pids, "pids.current"),
    (Source::PidsMax, Controller::Pids, "pids.max"),
];

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

/// Lists the files [`StatsReader`] reads for cgroup `rel`, existing or not: the
/// benchmark's baseline reads exactly these.
pub fn stat_files(hierarchy: &Hierarchy, rel: &str) -> Vec<PathBuf> {
    let (sources, _) = sources_for(hierarchy.version());
    let mut files: Vec<PathBuf> = sources
        .iter()
        .filter_map(|(_, c, name)| hierarchy.dir(*c, rel).map(|d| d.join(name)))
        .collect();
    if let Some(u) = hierarchy.unified_dir(rel) {
        files.extend(PSI_SOURCES.iter().map(|(_, name)| u.join(name)));
    }
    files
}

fn sources_for(version: Version) -> (&'static [(Source, Controller, &'static str)], bool) {
    match version {
        Version::V2 => (V2_SOURCES, true),
        Version::V1 | Version::Hybrid => (V1_SOURCES, false),
    }
}

/// One cgroup's stat files: kept open between scrapes (read with `pread`), or,
/// when the process's descriptor budget is spent, opened for each read.
#[derive(Debug)]
pub struct StatsReader {
    rel: String,
    /// The descriptor of each file, `None` when it is opened per read.
    files: Vec<(Source, Option<File>, PathBuf)>,
    start_time: Option<f64>,
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
    /// Opens every stat file of cgroup `rel` that exists, keeping the
    /// descriptors or not. Fails with [`StatsError::Vanished`] if the cgroup
    /// directory is gone, and with [`StatsError::Read`] (EMFILE) when
    /// descriptors run out while keeping them.
    pub fn open(hierarchy: &Hierarchy, rel: &str, keep: KeepOpen) -> Result<Self, StatsError> {
        let (sources, _) = sources_for(hierarchy.version());
        let mut files = Vec::with_capacity(sources.len() + PSI_SOURCES.len());
        let mut start_time = None;
        let mut any_dir = false;
        for (source, controller, name) in sources {
            let Some(dir) = hierarchy.dir(*controller, rel) else {
                continue;
            };
            if start_time.is_none()
                && let Ok(meta) = std::fs::metadata(&dir)
            {
                any_dir = true;
                start_time = Some(meta.ctime() as f64 + meta.ctime_nsec() as f64 / 1e9);
            }
            open_into(&mut files, *source, dir.join(name), keep)?;
        }
        if !any_dir {
            return Err(StatsError::Vanished(rel.to_string()));
        }
        if let Some(dir) = hierarchy.unified_dir(rel) {
            for (source, name) in PSI_SOURCES {
                open_into(&mut files, *source, dir.join(name), keep)?;
            }
        }
        Ok(StatsReader {
            rel: rel.to_string(),
            files,
            start_time,
        })
    }

    /// The cgroup path this reader serves.
    pub fn path(&self) -> &str {
        &self.rel
    }

    /// Number of descriptors it holds (for the descriptor budget).
    pub fn open_files(&self) -> usize {
        self.files.iter().filter(|(_, f, _)| f.is_some()).count()
    }

    /// Number of files it reads.
    pub fn files(&self) -> usize {
        self.files.len()
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
        for (source, kept, path) in &self.files {
            let opened;
            let file = match kept {
                Some(f) => f,
                None => match File::open(path) {
                    Ok(f) => {
                        opened = f;
                        &opened
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(StatsError::Vanished(self.rel.clone()));
                    }
                    Err(source) => {
                        on_error(StatsError::Read {
                            path: path.clone(),
                            source,
                        });
                        continue;
                    }
                },
            };
            let data = match read_all(file, buf) {
                Ok(d) => d,
                Err(e) if super::discovery::is_vanished(&e) => {
                    return Err(StatsError::Vanished(self.rel.clone()));
                }
                Err(source) => {
                    on_error(StatsError::Read {
                        path: path.clone(),
                        source,
                    });
                    continue;
                }
            };
            if let Err(source) = apply(*source, data, &mut stats, &mut inactive_file) {
                on_error(StatsError::Parse {
                    path: path.clone(),
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

fn open_into(
    files: &mut Vec<(Source, Option<File>, PathBuf)>,
    source: Source,
    path: PathBuf,
    keep: KeepOpen,
) -> Result<(), StatsError> {
    match File::open(&path) {
        Ok(f) => files.push((source, (keep == KeepOpen::Yes).then_some(f), path)),
        // Absent on this kernel (memory.peak, swap, PSI) or the controller is not
        // enabled for this cgroup: that family is just not exported for it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
            return Err(StatsError::Vanished(path.display().to_string()));
        }
        Err(source) => return Err(StatsError::Read { path, source }),
    }
    Ok(())
}

/// Reads a whole cgroup file from offset 0 into `buf`, growing it as needed.
fn read_all<'b>(file: &File, buf: &'b mut Vec<u8>) -> std::io::Result<&'b [u8]> {
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => return Ok(&buf[..n]),
            Ok(k) => n += k,
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
            _ => {}
        })?,
        Source::MemoryStatV1 => parse::flat_keyed(data, |k, v| match k {
            "total_rss" => s.memory_rss = f(v),
            "total_cache" => s.memory_cache = f(v),
            "total_mapped_file" => s.memory_mapped_file = f(v),
            "total_swap" => s.memory_swap = f(v),
            "total_inactive_file" => *inactive_file = f(v),
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
        Source::Procs => s.processes = f(parse::count_lines(data)?),
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
    use std::path::Path;

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

    /// A hybrid v1 tree whose `/docker/fx1` cgroup holds the captured v1 files.
    fn v1_tree(fx: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "cpuacct", "pids"] {
            fs::create_dir_all(t.path().join(c)).unwrap();
            fs::write(t.path().join(c).join("cgroup.procs"), "").unwrap();
            copy_dir(
                &fixtures().join("cgroup-v1-hybrid-6.18").join(fx).join(c),
                &t.path().join(c).join("docker/fx"),
            );
        }
        t
    }

    /// Reads `rel` with descriptors kept open, and checks that opening the
    /// files per read (past the descriptor budget) gives the same, holding none.
    fn read(h: &Hierarchy, rel: &str) -> CgroupStats {
        let reader = StatsReader::open(h, rel, KeepOpen::Yes).unwrap();
        let mut errors = Vec::new();
        let stats = reader.read(&mut Vec::new(), |e| errors.push(e)).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let by_path = StatsReader::open(h, rel, KeepOpen::No).unwrap();
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

        let t2 = v1_tree("fx2");
        let s2 = read(&Hierarchy::detect(t2.path()).unwrap(), "/docker/fx");
        assert_eq!(s2.oom_events, Some(1.0));
        assert_eq!(s2.spec_memory_limit_bytes, Some(16.0 * 1024.0 * 1024.0));
    }

    #[test]
    fn stat_files_match_what_is_read() {
        let t = v2_tree();
        let h = Hierarchy::detect(t.path()).unwrap();
        let listed = stat_files(&h, "/demo");
        let reader = StatsReader::open(&h, "/demo", KeepOpen::Yes).unwrap();
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
        let reader = StatsReader::open(&h, "/demo", KeepOpen::Yes).unwrap();
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
            StatsReader::open(&h, "/nope", KeepOpen::Yes),
            Err(StatsError::Vanished(_))
        ));
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
