//! The `getppid` part of `bench exec`: what the mount hook costs every other
//! syscall. Four tracer setups run in interleaved rounds:
//!
//! - `none`: no tracer;
//! - `exec`: every hook but the mount family's (none of them runs on getppid,
//!   so `exec` against `none` shows the noise of an A/A comparison);
//! - `mount`: every hook, the mount family on the cheapest hook the kernel
//!   allows (fexit on its syscalls, else `sys_exit`);
//! - `sys_exit`: every hook, the mount family forced onto `sys_exit` (today's
//!   fallback, so that a kernel with fexit shows both).
//!
//! Round r runs the setups in that order rotated by r.
//!
//! A hook's cost is the paired difference of two setups' rounds (round r of one
//! against round r of the other, so drift in the machine's load cancels), with
//! its mean and a 95% confidence interval over the rounds: a hook whose interval
//! holds 0 costs nothing measurable. The last line (`exec-summary {json}`) is
//! what `cargo xtask bench exec --vm` reads from the host's run and the guest's.
//!
//! Each round is timed twice over: its mean per call, and its best batch of
//! [`BATCH`] calls. A batch that no other process interrupted shows the
//! syscall's own path, hook included; on a loaded machine, and under qemu's
//! emulation where a round's mean swings by half, the best batch is the
//! sharper estimate of a fixed per-call cost, so both are compared.

use agent::ebpf::{MountHook, Tracer, TracerConfig};
use std::time::Instant;

/// Calls per timed batch (the best batch of each round is its second estimate).
const BATCH: u64 = 2000;
/// Pause between a setup's start and its loop.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    None,
    Exec,
    Mount,
    SysExit,
}

impl Setup {
    const ALL: [Setup; 4] = [Setup::None, Setup::Exec, Setup::Mount, Setup::SysExit];

    fn key(self) -> &'static str {
        match self {
            Setup::None => "none",
            Setup::Exec => "exec",
            Setup::Mount => "mount",
            Setup::SysExit => "sys_exit",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Setup::None => "no tracing",
            Setup::Exec => "exec hooks, no mount hook",
            Setup::Mount => "+ mount hook (cheapest)",
            Setup::SysExit => "+ mount hook on sys_exit",
        }
    }

    fn config(self) -> Option<TracerConfig> {
        let all = TracerConfig::default();
        match self {
            Setup::None => None,
            Setup::Exec => Some(TracerConfig {
                trace_mounts: false,
                ..all
            }),
            Setup::Mount => Some(all),
            Setup::SysExit => Some(TracerConfig {
                mount_hooks: vec![MountHook::SysExitBtf, MountHook::SysExitRaw],
                ..all
            }),
        }
    }
}

/// Mean, standard deviation, median, min and max of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub mean: f64,
    pub sd: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Half-width of the 95% confidence interval of the mean (Student's t).
    pub ci95: f64,
}

impl Spread {
    pub fn of(xs: &[f64]) -> Spread {
        let n = xs.len().max(1) as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = if xs.len() > 1 {
            xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        let sd = var.sqrt();
        let mut sorted = xs.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => 0.0,
            l if l % 2 == 1 => sorted[l / 2],
            l => (sorted[l / 2 - 1] + sorted[l / 2]) / 2.0,
        };
        Spread {
            mean,
            sd,
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            ci95: t95(xs.len().saturating_sub(1)) * sd / n.sqrt(),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mean": self.mean, "sd": self.sd, "median": self.median,
            "min": self.min, "max": self.max, "ci95": self.ci95,
        })
    }

    /// The 95% interval of the mean holds 0: no cost that the noise would not explain.
    pub fn within_noise(&self) -> bool {
        self.mean.abs() <= self.ci95
    }
}

/// Two-sided 95% quantile of Student's t with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= T.len() => T[d - 1],
        _ => 1.96,
    }
}

/// One setup's rounds.
struct SetupResult {
    key: &'static str,
    name: &'static str,
    /// The mount family's live hook in this setup ("" when there is none).
    mount_hook: String,
    ns_per_call: Spread,
    rounds_ns: Vec<f64>,
    /// Each round's best batch, ns per call.
    best_batch: Spread,
    best_ns: Vec<f64>,
}

/// A paired difference of two setups.
struct Cost {
    what: &'static str,
    of: &'static str,
    against: &'static str,
    ns: Spread,
    within_noise: bool,
    /// The same difference over each round's best batch.
    best: Spread,
}

pub fn run(
    start: impl Fn(Option<TracerConfig>) -> anyhow::Result<Option<Tracer>>,
    syscalls: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let batches = (syscalls / rounds as u64 / BATCH).max(1);
    let n = batches * BATCH;
    let loadavg_before = loadavg();
    println!(
        "getppid: {} calls per setup, {rounds} interleaved rounds (load average {loadavg_before})",
        n * rounds as u64
    );
    let mut per_round: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); Setup::ALL.len()];
    let mut best_of_round: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); Setup::ALL.len()];
    let mut mount_hook = vec![String::new(); Setup::ALL.len()];
    for round in 0..rounds {
        // Each round starts one setup later, so that no setup always follows the
        // same one (whose tracer's teardown the kernel may still be finishing).
        for k in 0..Setup::ALL.len() {
            let i = (round + k) % Setup::ALL.len();
            let setup = Setup::ALL[i];
            let tracer = start(setup.config())?;
            if let Some(t) = &tracer {
                mount_hook[i] = live_mount_hook(t);
            }
            // Deferred work of the previous setup's teardown and this one's
            // attach (RCU callbacks, trampoline frees) runs now, not in the loop.
            std::thread::sleep(SETTLE);
            let t0 = Instant::now();
            let mut best = f64::INFINITY;
            let mut sink = 0u32;
            for _ in 0..batches {
                let b0 = Instant::now();
                for _ in 0..BATCH {
                    sink = sink.wrapping_add(std::os::unix::process::parent_id());
                }
                best = best.min(b0.elapsed().as_nanos() as f64 / BATCH as f64);
            }
            std::hint::black_box(sink);
            per_round[i].push(t0.elapsed().as_nanos() as f64 / n as f64);
            best_of_round[i].push(best);
            drop(tracer);
        }
    }
    let setups: Vec<SetupResult> = Setup::ALL
        .into_iter()
        .zip(per_round)
        .zip(best_of_round)
        .zip(mount_hook)
        .map(|(((s, rounds_ns), best_ns), mount_hook)| SetupResult {
            key: s.key(),
            name: s.name(),
            mount_hook,
            ns_per_call: Spread::of(&rounds_ns),
            rounds_ns,
            best_batch: Spread::of(&best_ns),
            best_ns,
        })
        .collect();
    let cost = |what, of: Setup, against: Setup| {
        let paired = |a: &[f64], b: &[f64]| {
            let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
            Spread::of(&d)
        };
        let (a, b) = (&setups[of as usize], &setups[against as usize]);
        let ns = paired(&a.rounds_ns, &b.rounds_ns);
        Cost {
            what,
            of: of.key(),
            against: against.key(),
            within_noise: ns.within_noise(),
            ns,
            best: paired(&a.best_ns, &b.best_ns),
        }
    };
    let costs = vec![
        cost("A/A noise", Setup::Exec, Setup::None),
        cost("mount hook (cheapest)", Setup::Mount, Setup::Exec),
        cost("mount hook on sys_exit", Setup::SysExit, Setup::Exec),
        cost("cheapest against sys_exit", Setup::Mount, Setup::SysExit),
    ];

    println!(
        "{:<28} {:<22} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "setup", "mount hook", "median", "sd", "min", "max", "best batch"
    );
    for s in &setups {
        let h = &s.ns_per_call;
        println!(
            "{:<28} {:<22} {:>6.1} ns {:>6.1} ns {:>6.1} ns {:>6.1} ns {:>9.1} ns",
            s.name,
            if s.mount_hook.is_empty() {
                "-"
            } else {
                &s.mount_hook
            },
            h.median,
            h.sd,
            h.min,
            h.max,
            s.best_batch.median
        );
    }
    let verdict = |s: &Spread| {
        if s.within_noise() {
            "within noise"
        } else {
            "measurable"
        }
    };
    for c in &costs {
        println!(
            "{:<26} {:>5} - {:<8} {:+7.1} ns/call ± {:.1}, best batch {:+.1} ± {:.1} (95% CI over {rounds} paired rounds): {}; best batch {}",
            c.what,
            c.of,
            c.against,
            c.ns.mean,
            c.ns.ci95,
            c.best.mean,
            c.best.ci95,
            verdict(&c.ns),
            verdict(&c.best),
        );
    }
    let summary = serde_json::json!({
        "kernel": kernel_release(),
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg(),
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "rounds": rounds,
        "calls_per_round": n,
        "calls_per_batch": BATCH,
        "setups": setups.iter().map(|s| serde_json::json!({
            "key": s.key, "name": s.name, "mount_hook": s.mount_hook,
            "ns_per_call": s.ns_per_call.json(), "rounds_ns": s.rounds_ns,
            "best_batch": s.best_batch.json(), "best_ns": s.best_ns,
        })).collect::<Vec<_>>(),
        "costs": costs.iter().map(|c| serde_json::json!({
            "what": c.what, "of": c.of, "against": c.against,
            "ns": c.ns.json(), "within_noise": c.within_noise,
            "best_batch": c.best.json(), "best_batch_within_noise": c.best.within_noise(),
        })).collect::<Vec<_>>(),
    });
    println!("exec-summary {summary}");
    Ok(())
}

/// The mount family's hook that is live in `tracer`, or "" when none is.
fn live_mount_hook(tracer: &Tracer) -> String {
    let mount_hooks: Vec<&str> = MountHook::ALL.iter().map(|k| k.hook()).collect();
    tracer
        .programs()
        .iter()
        .find(|p| p.attached && mount_hooks.contains(&p.hook))
        .map_or_else(String::new, |p| p.hook.to_owned())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.split_whitespace().take(3).collect();
            (f.len() == 3).then(|| f.join(" "))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn spread_of_a_sample() {
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.mean, 2.5);
        assert_eq!(s.median, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
        assert!((s.sd - 1.290_994).abs() < 1e-5, "{s:?}");
        // t(3) = 3.182: 3.182 * 1.291 / 2
        assert!((s.ci95 - 2.054).abs() < 1e-2, "{s:?}");
        assert!(!s.within_noise());
        assert!(Spread::of(&[-1.0, 1.0, -0.5, 0.6]).within_noise());
    }
}
