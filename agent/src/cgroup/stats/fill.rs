//! Turns the contents of one stat file into the fields of [`CgroupStats`] it
//! gives, in base units.

use super::sources::Source;
use super::{CgroupStats, DeviceIo, IoOp};
use crate::cgroup::parse::{self, ParseError};
use std::sync::OnceLock;

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

pub(super) fn apply(
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
