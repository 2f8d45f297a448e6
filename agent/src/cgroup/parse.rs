//! Parsers for the contents of cgroup control files (v1 and v2).
//!
//! Every parser takes the raw bytes a read returned and either yields a value or a
//! [`ParseError`]; none of them panics on truncated, empty or garbage input.

use std::fmt;

/// Why the contents of a cgroup file could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The file was empty where a value was expected.
    Empty,
    /// A token was not the number (or keyword) the format requires.
    BadValue(String),
    /// The line structure did not match the format.
    BadFormat(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty file"),
            ParseError::BadValue(v) => write!(f, "not a number: {v:?}"),
            ParseError::BadFormat(v) => write!(f, "unexpected format: {v:?}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// v1 writes "no limit" as the largest page-aligned signed 64-bit value
/// (9223372036854771712 with 4 KiB pages); anything at or above this is unlimited.
const V1_UNLIMITED_THRESHOLD: u64 = 0x7FFF_FFFF_FFFF_0000;

fn text(buf: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(buf).map_err(|_| ParseError::BadFormat("not UTF-8".into()))
}

fn number(token: &str) -> Result<u64, ParseError> {
    token
        .parse::<u64>()
        .map_err(|_| ParseError::BadValue(clip(token)))
}

/// Keeps error messages one short line even when the input is garbage.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// A file holding one unsigned number, such as `memory.current` or `cpuacct.usage`.
pub fn single_u64(buf: &[u8]) -> Result<u64, ParseError> {
    let s = text(buf)?.trim();
    if s.is_empty() {
        return Err(ParseError::Empty);
    }
    number(s)
}

/// A v2 limit file holding a number or `max` (`memory.max`, `pids.max`, v1 `pids.max`).
/// Returns 0 for `max`: unlimited is exported as 0, as cAdvisor does.
pub fn limit_or_max(buf: &[u8]) -> Result<u64, ParseError> {
    let s = text(buf)?.trim();
    match s {
        "" => Err(ParseError::Empty),
        "max" => Ok(0),
        n => number(n),
    }
}

/// A v1 limit file (`memory.limit_in_bytes`): the huge sentinel means unlimited (0).
pub fn v1_limit(buf: &[u8]) -> Result<u64, ParseError> {
    let v = single_u64(buf)?;
    Ok(if v >= V1_UNLIMITED_THRESHOLD { 0 } else { v })
}

/// A signed value where -1 means unlimited (`cpu.cfs_quota_us`); unlimited becomes 0.
pub fn signed_or_unlimited(buf: &[u8]) -> Result<u64, ParseError> {
    let s = text(buf)?.trim();
    if s.is_empty() {
        return Err(ParseError::Empty);
    }
    let v: i64 = s.parse().map_err(|_| ParseError::BadValue(clip(s)))?;
    Ok(if v < 0 { 0 } else { v as u64 })
}

/// Visits every `key value` line of a flat-keyed file (`memory.stat`, `cpu.stat`,
/// `memory.events`, `cpuacct.stat`, `memory.oom_control`).
///
/// Lines whose value is not a number are an error; blank lines are skipped. An empty
/// file is an error, since every flat-keyed cgroup file has at least one line.
pub fn flat_keyed<'a>(
    buf: &'a [u8],
    mut visit: impl FnMut(&'a str, u64),
) -> Result<(), ParseError> {
    let s = text(buf)?;
    let mut seen = false;
    for line in s.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_ascii_whitespace();
        let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ParseError::BadFormat(clip(line)));
        };
        visit(key, number(value)?);
        seen = true;
    }
    if seen { Ok(()) } else { Err(ParseError::Empty) }
}

/// v2 `cpu.max`: `"$QUOTA $PERIOD"` where quota may be `max`. Returns (quota, period)
/// in microseconds with an unlimited quota as 0.
pub fn cpu_max(buf: &[u8]) -> Result<(u64, u64), ParseError> {
    let s = text(buf)?.trim();
    if s.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut parts = s.split_ascii_whitespace();
    let (Some(quota), Some(period), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::BadFormat(clip(s)));
    };
    let quota = if quota == "max" { 0 } else { number(quota)? };
    Ok((quota, number(period)?))
}

/// Converts a v2 `cpu.weight` (1..=10000) to the v1 `cpu.shares` scale (2..=262144),
/// with the formula runc and cAdvisor use, so dashboards compare across versions.
pub fn weight_to_shares(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    2 + ((weight - 1) * 262_142) / 9_999
}

/// Totals of a PSI file (`cpu.pressure`, `memory.pressure`, `io.pressure`), in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    /// Time at least one task was stalled (`some`).
    pub some_total_us: u64,
    /// Time all non-idle tasks were stalled (`full`); absent for cpu on older kernels.
    pub full_total_us: Option<u64>,
}

/// Parses a PSI file: lines `some avg10=… avg60=… avg300=… total=N` and `full …`.
pub fn pressure(buf: &[u8]) -> Result<Pressure, ParseError> {
    let s = text(buf)?;
    let mut some = None;
    let mut full = None;
    for line in s.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_ascii_whitespace();
        let kind = parts.next().unwrap_or_default();
        let total = parts
            .find_map(|p| p.strip_prefix("total="))
            .ok_or_else(|| ParseError::BadFormat(clip(line)))?;
        let total = number(total)?;
        match kind {
            "some" => some = Some(total),
            "full" => full = Some(total),
            _ => return Err(ParseError::BadFormat(clip(line))),
        }
    }
    let some_total_us = some.ok_or(ParseError::Empty)?;
    Ok(Pressure {
        some_total_us,
        full_total_us: full,
    })
}

/// A block device as cgroup files name it: `MAJ:MIN`.
pub fn device_number(token: &str) -> Result<(u32, u32), ParseError> {
    let bad = || ParseError::BadValue(clip(token));
    let (major, minor) = token.split_once(':').ok_or_else(bad)?;
    Ok((
        major.parse().map_err(|_| bad())?,
        minor.parse().map_err(|_| bad())?,
    ))
}

/// Visits every numeric `key=value` of v2 `io.stat`, one line per device:
/// `8:0 rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…`, called with the device
/// number, the key and the value. No allocation.
///
/// An empty file is fine (no I/O yet). Values that are not numbers are skipped:
/// controllers append their own keys (iolatency's `depth=max`), which are not
/// this parser's business.
pub fn io_stat(buf: &[u8], mut visit: impl FnMut((u32, u32), &str, u64)) -> Result<(), ParseError> {
    let s = text(buf)?;
    for line in s.lines() {
        let mut parts = line.split_ascii_whitespace();
        let Some(device) = parts.next() else {
            continue;
        };
        let device = device_number(device)?;
        for pair in parts {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| ParseError::BadFormat(clip(line)))?;
            if let Ok(v) = value.parse::<u64>() {
                visit(device, key, v);
            }
        }
    }
    Ok(())
}

/// Visits every `MAJ:MIN Operation value` line of a v1 blkio file
/// (`blkio.throttle.io_service_bytes_recursive`, `…io_serviced_recursive`): the
/// device number, the operation as the kernel spells it (`Read`, `Write`, `Sync`,
/// `Async`, `Discard`, `Total`) and the value. The closing `Total N` line (all
/// devices) is skipped. No allocation.
pub fn blkio_v1(
    buf: &[u8],
    mut visit: impl FnMut((u32, u32), &str, u64),
) -> Result<(), ParseError> {
    let s = text(buf)?;
    for line in s.lines() {
        let mut parts = line.split_ascii_whitespace();
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (None, ..) => {}
            (Some("Total"), Some(v), None, None) => {
                number(v)?;
            }
            (Some(device), Some(op), Some(v), None) => {
                visit(device_number(device)?, op, number(v)?)
            }
            _ => return Err(ParseError::BadFormat(clip(line))),
        }
    }
    Ok(())
}

/// Counts the non-empty lines of a list file (`cgroup.procs`, `tasks`).
pub fn count_lines(buf: &[u8]) -> Result<u64, ParseError> {
    let s = text(buf)?;
    let mut n = 0;
    for line in s.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        number(line)?;
        n += 1;
    }
    Ok(n)
}

/// The first pid of a list file (`cgroup.procs`), if any.
pub fn first_pid(buf: &[u8]) -> Option<u32> {
    text(buf)
        .ok()?
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(rel: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn keyed(buf: &[u8]) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        flat_keyed(buf, |k, v| out.push((k.to_string(), v))).unwrap();
        out
    }

    fn get(pairs: &[(String, u64)], key: &str) -> u64 {
        pairs.iter().find(|(k, _)| k == key).unwrap().1
    }

    const V2: &str = "cgroup-v2-debian-6.1/demo";
    const V1: &str = "cgroup-v1-hybrid-6.18/fx1";
    const V1_OOM: &str = "cgroup-v1-hybrid-6.18/fx2";

    /// The value of `key` in a flat-keyed fixture file, read the simplest way, to
    /// check the parser against. The v2 fixtures are recaptured by `cargo xtask
    /// vm-test --capture-fixtures`, so kernel-measured values are compared with the
    /// file and with what the capture did, never with numbers copied from one capture.
    fn naive(rel: &str, key: &str) -> u64 {
        let text = String::from_utf8(fixture(rel)).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {rel}"))
    }

    #[test]
    fn v2_cpu_stat() {
        let file = format!("{V2}/cpu.stat");
        let s = keyed(&fixture(&file));
        for key in [
            "usage_usec",
            "user_usec",
            "system_usec",
            "nr_periods",
            "nr_throttled",
            "throttled_usec",
        ] {
            assert_eq!(get(&s, key), naive(&file, key), "{key}");
        }
        // The holder burned CPU for 3 s under a half-CPU quota: throttled.
        let usage = get(&s, "usage_usec");
        assert!(usage >= 500_000, "usage {usage} us");
        assert!(
            usage.abs_diff(get(&s, "user_usec") + get(&s, "system_usec")) <= 2,
            "usage is user + system"
        );
        assert!(get(&s, "nr_throttled") > 0);
        assert!(get(&s, "nr_throttled") <= get(&s, "nr_periods"));
        assert!(get(&s, "throttled_usec") > 0);
    }

    #[test]
    fn v2_memory_files() {
        let current = single_u64(&fixture(&format!("{V2}/memory.current"))).unwrap();
        let text = String::from_utf8(fixture(&format!("{V2}/memory.current"))).unwrap();
        assert_eq!(current.to_string(), text.trim());
        assert_eq!(
            limit_or_max(&fixture(&format!("{V2}/memory.max"))),
            Ok(64 << 20)
        );
        let peak = single_u64(&fixture(&format!("{V2}/memory.peak"))).unwrap();
        assert!(peak >= current, "peak {peak} < current {current}");
        let stat_file = format!("{V2}/memory.stat");
        let stat = keyed(&fixture(&stat_file));
        for key in ["anon", "file", "shmem", "file_mapped", "inactive_file"] {
            assert_eq!(get(&stat, key), naive(&stat_file, key), "{key}");
        }
        // The holder keeps 12 MiB of tmpfs and an 8 MiB shell variable.
        assert!(get(&stat, "shmem") >= 12 << 20);
        assert!(get(&stat, "file") >= get(&stat, "shmem"));
        assert!(get(&stat, "anon") >= 8 << 20);
        assert!(current >= (20 << 20), "current {current}");
        let events = keyed(&fixture(&format!("{V2}/memory.events")));
        assert!(get(&events, "max") > 0, "the oomer hit its limit");
        assert_eq!(get(&events, "oom_kill"), 1);
        let oomer = keyed(&fixture(&format!("{V2}/oomer/memory.events")));
        assert_eq!(get(&oomer, "oom_kill"), 1);
        assert_eq!(
            limit_or_max(&fixture(&format!("{V2}/oomer/memory.max"))),
            Ok(16 << 20)
        );
    }

    #[test]
    fn v2_cpu_and_pids_limits() {
        assert_eq!(
            cpu_max(&fixture(&format!("{V2}/cpu.max"))),
            Ok((50_000, 100_000))
        );
        assert_eq!(cpu_max(b"max 100000\n"), Ok((0, 100_000)));
        assert_eq!(single_u64(&fixture(&format!("{V2}/cpu.weight"))), Ok(100));
        assert_eq!(weight_to_shares(100), 2_597);
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(10_000), 262_144);
        assert_eq!(limit_or_max(&fixture(&format!("{V2}/pids.max"))), Ok(40));
        assert_eq!(limit_or_max(b"max\n"), Ok(0));
        assert_eq!(single_u64(&fixture(&format!("{V2}/pids.current"))), Ok(1));
    }

    #[test]
    fn v2_pressure() {
        let p = pressure(&fixture(&format!("{V2}/cpu.pressure"))).unwrap();
        // Throttling stalls the holder: CPU pressure, some and full.
        assert!(p.some_total_us > 0);
        assert!(
            p.full_total_us
                .is_some_and(|f| f > 0 && f <= p.some_total_us)
        );
        let text = String::from_utf8(fixture(&format!("{V2}/cpu.pressure"))).unwrap();
        assert!(text.contains(&format!("total={}\n", p.some_total_us)));
        let m = pressure(&fixture(&format!("{V2}/memory.pressure"))).unwrap();
        assert!(m.full_total_us.is_some());
        pressure(&fixture(&format!("{V2}/io.pressure"))).unwrap();
    }

    #[test]
    fn v2_procs() {
        assert_eq!(count_lines(&fixture(&format!("{V2}/cgroup.procs"))), Ok(0));
        let holder = count_lines(&fixture(&format!("{V2}/holder/cgroup.procs"))).unwrap();
        assert_eq!(holder, 1);
    }

    #[test]
    fn v1_cpu_files() {
        let usage = single_u64(&fixture(&format!("{V1}/cpuacct/cpuacct.usage"))).unwrap();
        assert!(usage > 0);
        let stat = keyed(&fixture(&format!("{V1}/cpuacct/cpuacct.stat")));
        assert!(get(&stat, "user") + get(&stat, "system") > 0);
        let cpu = keyed(&fixture(&format!("{V1}/cpu/cpu.stat")));
        assert!(get(&cpu, "nr_throttled") > 0);
        assert!(get(&cpu, "throttled_time") > 0);
        assert_eq!(
            signed_or_unlimited(&fixture(&format!("{V1}/cpu/cpu.cfs_quota_us"))),
            Ok(50_000)
        );
        assert_eq!(
            single_u64(&fixture(&format!("{V1}/cpu/cpu.cfs_period_us"))),
            Ok(100_000)
        );
        assert_eq!(signed_or_unlimited(b"-1\n"), Ok(0));
        assert_eq!(
            single_u64(&fixture(&format!("{V1}/cpu/cpu.shares"))),
            Ok(1024)
        );
    }

    #[test]
    fn v1_memory_files() {
        assert_eq!(
            v1_limit(&fixture(&format!("{V1}/memory/memory.limit_in_bytes"))),
            Ok(64 << 20)
        );
        assert_eq!(v1_limit(b"9223372036854771712\n"), Ok(0));
        let usage = single_u64(&fixture(&format!("{V1}/memory/memory.usage_in_bytes"))).unwrap();
        let stat = keyed(&fixture(&format!("{V1}/memory/memory.stat")));
        assert!(get(&stat, "total_cache") >= 12 << 20, "tmpfs held ~12 MiB");
        assert!(get(&stat, "total_rss") >= 7 << 20, "shell held ~8 MiB");
        assert!(usage >= get(&stat, "total_inactive_file"));
        let oom = keyed(&fixture(&format!("{V1_OOM}/memory/memory.oom_control")));
        assert_eq!(get(&oom, "oom_kill"), 1);
        assert_eq!(
            v1_limit(&fixture(&format!("{V1_OOM}/memory/memory.limit_in_bytes"))),
            Ok(16 << 20)
        );
        let failcnt = single_u64(&fixture(&format!("{V1_OOM}/memory/memory.failcnt"))).unwrap();
        assert_eq!(
            failcnt, 0,
            "as captured: the OOM kill came without a recorded failcnt"
        );
    }

    #[test]
    fn v1_pids_files() {
        assert_eq!(
            limit_or_max(&fixture(&format!("{V1}/pids/pids.max"))),
            Ok(40)
        );
        assert!(single_u64(&fixture(&format!("{V1}/pids/pids.current"))).unwrap() >= 1);
        assert!(count_lines(&fixture(&format!("{V1}/pids/cgroup.procs"))).unwrap() >= 1);
    }

    #[test]
    fn v2_io_stat() {
        let file = format!("{V2}/holder/io.stat");
        let text = String::from_utf8(fixture(&file)).unwrap();
        let mut seen = Vec::new();
        io_stat(text.as_bytes(), |dev, key, v| {
            seen.push((dev, key.to_string(), v))
        })
        .unwrap();
        // Every numeric key=value of every line, device by device.
        let naive: Vec<((u32, u32), String, u64)> = text
            .lines()
            .flat_map(|l| {
                let mut w = l.split_whitespace();
                let (ma, mi) = w.next().unwrap().split_once(':').unwrap();
                let dev = (ma.parse().unwrap(), mi.parse().unwrap());
                w.filter_map(move |kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((dev, k.to_string(), v.parse().ok()?))
                })
            })
            .collect();
        assert_eq!(seen, naive);
        // The holder wrote 8 MiB and read 4 MiB with O_DIRECT.
        let get = |k: &str| seen.iter().find(|(_, key, _)| key == k).unwrap().2;
        assert!(get("wbytes") >= 8 << 20 && get("rbytes") >= 4 << 20);
        assert!(get("wios") >= 1 && get("rios") >= 1);
        // A cgroup that did no I/O has an empty io.stat.
        assert_eq!(io_stat(b"", |_, _, _| panic!("no devices")), Ok(()));
        // Keys other controllers add, some not numbers, are skipped.
        let mut keys = Vec::new();
        io_stat(
            b"8:16 rbytes=1 wbytes=2 depth=max avg_lat=3\n",
            |d, k, v| keys.push((d, k.to_string(), v)),
        )
        .unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0], ((8, 16), "rbytes".to_string(), 1));
    }

    #[test]
    fn v1_blkio_files() {
        for file in [
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_serviced",
        ] {
            let rel = format!("cgroup-v1-hybrid-6.18/io/blkio/{file}");
            let mut seen = Vec::new();
            blkio_v1(&fixture(&rel), |dev, op, v| {
                seen.push((dev, op.to_string(), v))
            })
            .unwrap();
            let ops: Vec<&str> = seen.iter().map(|(_, op, _)| op.as_str()).collect();
            assert_eq!(
                ops,
                ["Read", "Write", "Sync", "Async", "Discard", "Total"],
                "{file}"
            );
            assert!(seen.iter().all(|(dev, ..)| *dev == (254, 0)));
        }
        // The Docker containers did no block I/O: only the closing total.
        let idle = fixture(&format!("{V1}/blkio/blkio.throttle.io_service_bytes"));
        assert_eq!(blkio_v1(&idle, |_, _, _| panic!("no devices")), Ok(()));
        assert_eq!(device_number("259:12"), Ok((259, 12)));
        assert!(device_number("259").is_err() && device_number("a:1").is_err());
    }

    #[test]
    fn empty_input_is_an_error() {
        assert_eq!(single_u64(b""), Err(ParseError::Empty));
        assert_eq!(single_u64(b"\n"), Err(ParseError::Empty));
        assert_eq!(limit_or_max(b""), Err(ParseError::Empty));
        assert_eq!(cpu_max(b""), Err(ParseError::Empty));
        assert_eq!(signed_or_unlimited(b""), Err(ParseError::Empty));
        assert_eq!(flat_keyed(b"", |_, _| ()), Err(ParseError::Empty));
        assert_eq!(pressure(b""), Err(ParseError::Empty));
        assert_eq!(count_lines(b""), Ok(0), "an empty cgroup has no processes");
        assert_eq!(first_pid(b""), None);
        assert_eq!(first_pid(b"\n 412\n77\n"), Some(412));
        assert_eq!(first_pid(b"x\n"), None);
    }

    #[test]
    fn truncated_input_is_an_error() {
        // A read cut off mid-line: the key without its value, a half PSI line.
        assert!(flat_keyed(b"usage_usec 3115300\nuser_usec", |_, _| ()).is_err());
        assert!(pressure(b"some avg10=18.53 avg60=4.").is_err());
        assert!(cpu_max(b"50000").is_err());
        let full = fixture(&format!("{V2}/memory.stat"));
        for cut in [1, 5, 17, full.len() / 2] {
            // Never a panic, whatever the cut point; a cut inside a number still parses.
            let _ = flat_keyed(&full[..cut], |_, _| ());
        }
    }

    #[test]
    fn garbage_input_is_an_error() {
        assert!(matches!(single_u64(b"12xb"), Err(ParseError::BadValue(_))));
        assert!(single_u64(b"-5").is_err());
        assert!(single_u64(&[0xff, 0xfe, 0x00]).is_err());
        assert!(limit_or_max(b"maxx").is_err());
        assert!(cpu_max(b"max max").is_err());
        assert!(cpu_max(b"1 2 3").is_err());
        assert!(flat_keyed(b"anon lots\n", |_, _| ()).is_err());
        assert!(flat_keyed(b"a 1 2\n", |_, _| ()).is_err());
        assert!(pressure(b"some avg10=1 total=x\n").is_err());
        assert!(pressure(b"weird total=1\n").is_err());
        assert!(count_lines(b"12\nabc\n").is_err());
        assert!(io_stat(b"8:0 rbytes\n", |_, _, _| ()).is_err());
        assert!(io_stat(b"sda rbytes=1\n", |_, _, _| ()).is_err());
        assert!(blkio_v1(b"8:0 Read\n", |_, _, _| ()).is_err());
        assert!(blkio_v1(b"8:0 Read x\n", |_, _, _| ()).is_err());
        assert!(blkio_v1(b"Total many\n", |_, _, _| ()).is_err());
        let long = "9".repeat(500);
        let err = single_u64(long.as_bytes()).unwrap_err().to_string();
        assert!(err.len() < 80, "error stays one short line: {err}");
    }
}
