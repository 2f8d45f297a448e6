//! The reader on real cgroup files (v1 and v2 captured from real kernels).

use super::*;
use crate::cgroup::parse;
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
        let text =
            fs::read_to_string(fixtures().join("cgroup-v2-debian-6.1/root").join(file)).unwrap();
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
    let stat = fs::read_to_string(fixtures().join("cgroup-v1-hybrid-6.18/fx1/memory/memory.stat"))
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
        reader.files(),
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

#[test]
fn limits_are_read_again_only_when_due_and_their_files_not_kept() {
    let t = v2_tree();
    let h = Hierarchy::detect(t.path()).unwrap();
    let reader = StatsReader::open(&h, "/demo", MetricGroups::ALL, KeepOpen::Yes).unwrap();
    let limits = reader.files.iter().filter(|f| f.source.is_limit()).count();
    assert!(limits >= 5, "the fixture has the v2 limit files");
    assert_eq!(reader.open_files(), reader.files() - limits);

    let read = |at| {
        reader
            .read_at(at, &mut Vec::new(), |e| panic!("{e:#}"))
            .unwrap()
    };
    let t0 = Instant::now();
    let first = read(t0);
    assert_eq!(first.spec_memory_limit_bytes, Some(67_108_864.0));
    // `docker update --memory 128m` meanwhile: a counter is read anew at once,
    // the limit once it is due.
    fs::write(t.path().join("demo/memory.max"), "134217728\n").unwrap();
    fs::write(t.path().join("demo/pids.current"), "7\n").unwrap();
    let soon = read(t0 + Duration::from_secs(1));
    assert_eq!(soon.threads, Some(7.0));
    assert_eq!(soon.spec_memory_limit_bytes, Some(67_108_864.0));
    assert_eq!(soon.spec_cpu_quota, first.spec_cpu_quota);
    assert_eq!(soon.threads_max, first.threads_max);
    let due = read(t0 + LIMITS_MAX_AGE);
    assert_eq!(due.spec_memory_limit_bytes, Some(134_217_728.0));
}
