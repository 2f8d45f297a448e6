//! `cargo xtask bench fs-usage [LAYERS FILES]`: what the writable-layer walker of
//! `agent serve` costs, over LAYERS directories of FILES files each (default 1000
//! of 1000, one file in a hundred holding 4 KiB), against `du -s` over the same
//! directories in the same run.
//!
//! The walker runs in this process as the agent runs it (same rate cap), on one
//! thread whose CPU time is read from `CLOCK_THREAD_CPUTIME_ID`. CPU per minute is
//! one pass of every layer per `--fs-usage-interval` (1 minute by default); layers
//! found unchanged back off up to 8 intervals, so a quiet node costs less.

use agent::container::layer_usage::{self, MAX_BACKOFF, RateLimit};
use anyhow::{Context, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What `agent serve` allows the walker (`FS_USAGE_STATS_PER_SEC`).
const STATS_PER_SEC: u64 = 100_000;

fn thread_cpu() -> f64 {
    // SAFETY: all-zero is a valid timespec, filled by clock_gettime.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// User + system CPU seconds of this process's reaped children.
pub(crate) fn children_cpu() -> f64 {
    // SAFETY: all-zero is a valid rusage, filled by getrusage.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut r) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(r.ru_utime) + tv(r.ru_stime)
}

fn make_layers(root: &Path, layers: usize, files: usize) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::with_capacity(layers);
    let page = vec![7u8; 4096];
    for l in 0..layers {
        // A layer as containers leave them: a few directories, files spread over them.
        let dir = root.join(format!("layer{l:04}/diff"));
        for d in 0..10 {
            std::fs::create_dir_all(dir.join(format!("d{d}")))
                .with_context(|| format!("mkdir {}", dir.display()))?;
        }
        for f in 0..files {
            let path = dir.join(format!("d{}/f{f}", f % 10));
            let body: &[u8] = if f % 100 == 0 { &page } else { b"" };
            std::fs::write(&path, body).with_context(|| format!("write {}", path.display()))?;
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

/// One pass over every layer, as the walker does it: (thread CPU s, wall s, bytes).
fn pass(dirs: &[PathBuf], limiter: &mut RateLimit) -> anyhow::Result<(f64, f64, u64)> {
    let mut devices = HashMap::new();
    let (cpu, wall) = (thread_cpu(), Instant::now());
    let mut bytes = 0;
    for d in dirs {
        bytes += layer_usage::measure(d, &mut devices, limiter)?.usage_bytes;
    }
    Ok((thread_cpu() - cpu, wall.elapsed().as_secs_f64(), bytes))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let n = |i: usize, default: usize| -> anyhow::Result<usize> {
        args.get(i).map_or(Ok(default), |a| {
            a.parse().with_context(|| format!("{a:?} is not a count"))
        })
    };
    let (layers, files) = (n(0, 1000)?, n(1, 1000)?);
    let tmp = tempfile::Builder::new()
        .prefix("agent-bench-layers")
        .tempdir()?;
    let t = Instant::now();
    let dirs = make_layers(tmp.path(), layers, files)?;
    println!(
        "fs-usage benchmark: {layers} layers of {files} files (+11 directories) made in {:.1}s; walker capped at {STATS_PER_SEC} stats/s, as in `agent serve`",
        t.elapsed().as_secs_f64()
    );
    let mut limiter = RateLimit::new(STATS_PER_SEC);
    let (cold_cpu, cold_wall, bytes) = pass(&dirs, &mut limiter)?;
    let (warm_cpu, warm_wall, again) = pass(&dirs, &mut limiter)?;
    if again != bytes {
        bail!("two walks of an unchanged tree disagree: {bytes} then {again}");
    }
    let du_before = children_cpu();
    let t = Instant::now();
    let out = Command::new("du")
        .args(["-s", "-c", "--block-size=1"])
        .args(&dirs)
        .output()
        .context("running du")?;
    let du_wall = t.elapsed().as_secs_f64();
    let du_cpu = children_cpu() - du_before;
    let du_total: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .context("no total from du")?;
    // The walker also counts each layer's own top directory; du -c too.
    println!(
        "{:>10} {:>10} {:>12} {:>14} {:>10}",
        "pass", "cpu s", "wall s", "bytes", "vs du cpu"
    );
    println!(
        "{:>10} {:>10.2} {:>12.2} {:>14} {:>9.2}x",
        "first",
        cold_cpu,
        cold_wall,
        bytes,
        cold_cpu / du_cpu
    );
    println!(
        "{:>10} {:>10.2} {:>12.2} {:>14} {:>9.2}x",
        "again",
        warm_cpu,
        warm_wall,
        again,
        warm_cpu / du_cpu
    );
    println!(
        "{:>10} {:>10.2} {:>12.2} {:>14} {:>9.2}x",
        "du -s", du_cpu, du_wall, du_total, 1.0
    );
    println!(
        "CPU per minute at --fs-usage-interval 1m: {:.2} s while every layer changes ({:.1}% of a core), {:.2} s once all are quiet (backed off {MAX_BACKOFF}x, {:.2}% of a core)",
        warm_cpu,
        warm_cpu * 100.0 / 60.0,
        warm_cpu / MAX_BACKOFF as f64,
        warm_cpu * 100.0 / 60.0 / MAX_BACKOFF as f64
    );
    Ok(())
}
