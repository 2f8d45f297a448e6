//! `cargo xtask bench exec`: what the agent's eBPF tracing costs.
//!
//! - A fork+exec loop of a static binary (`/bin/busybox true`), N execs per
//!   mode, with no tracer, with the exec (and exit) hooks only, and with the
//!   mount-family hook too: the cheapest the kernel allows (fexit on the
//!   mount syscalls, else `sys_exit`; the `attached:` lines say which). Modes run
//!   in interleaved rounds (this machine is noisy) and are compared with the
//!   baseline of the same run. Events delivered and lost are reported.
//! - A `getppid` loop, the cheapest syscall, shows what the mount hook costs
//!   every other syscall: ~100 ns at `sys_exit`, nothing with fexit (see
//!   `syscall_cost`, which also prints the `exec-summary` line that
//!   `cargo xtask bench exec --vm` reads).
//!
//! Needs root. `AGENT_BENCH_EXECS` (default 20000), `AGENT_BENCH_SYSCALLS`
//! (default 5000000) and `AGENT_BENCH_SYSCALL_ROUNDS` (default 20) set the sizes.

use agent::container::{ContainerLabels, NoContainers};
use agent::ebpf::{Tracer, TracerConfig};
use anyhow::{Context, bail};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BUSYBOX: &str = "/bin/busybox";
/// Modes alternate in this many rounds; the best round of each mode is the
/// least disturbed by the rest of the machine.
const ROUNDS: u64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Baseline,
    Exec,
    ExecAndMount,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Baseline, Mode::Exec, Mode::ExecAndMount];

    fn name(self) -> &'static str {
        match self {
            Mode::Baseline => "no tracing",
            Mode::Exec => "exec hook",
            Mode::ExecAndMount => "exec + mount hook",
        }
    }

    fn config(self) -> Option<TracerConfig> {
        match self {
            Mode::Baseline => None,
            Mode::Exec => Some(TracerConfig {
                trace_mounts: false,
                ..TracerConfig::default()
            }),
            Mode::ExecAndMount => Some(TracerConfig::default()),
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Totals {
    elapsed: Duration,
    /// CPU time of this process (spawner and ring-buffer reader) and of its
    /// reaped children (the execs, including the exec hook run in them).
    cpu: Duration,
    best: Option<Duration>,
    delivered: u64,
    lost: u64,
}

impl Totals {
    fn add_round(&mut self, d: Duration) {
        self.elapsed += d;
        self.best = Some(self.best.map_or(d, |b| b.min(d)));
    }

    fn best_secs(&self) -> f64 {
        self.best.unwrap_or_default().as_secs_f64()
    }
}

fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

pub fn run() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench exec needs root (it loads eBPF programs)");
    }
    if !std::path::Path::new(BUSYBOX).exists() {
        bail!("{BUSYBOX} is missing (apt-get install busybox-static)");
    }
    let execs = env_u64("AGENT_BENCH_EXECS", 20_000)?.max(ROUNDS);
    let syscalls = env_u64("AGENT_BENCH_SYSCALLS", 5_000_000)?.max(ROUNDS);
    let rounds = env_u64("AGENT_BENCH_SYSCALL_ROUNDS", 20)?.max(2) as usize;
    let per_round = execs / ROUNDS;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("tokio runtime")?;

    println!(
        "exec: {} fork+exec of {BUSYBOX} true per mode, {ROUNDS} interleaved rounds{}",
        per_round * ROUNDS,
        if cfg!(debug_assertions) {
            " (agent built without optimisation)"
        } else {
            ""
        }
    );
    let mut totals = [Totals::default(); 3];
    let mut hooks = Vec::new();
    for _ in 0..ROUNDS {
        for (i, mode) in Mode::ALL.into_iter().enumerate() {
            let tracer = start(&rt, mode)?;
            if let Some(t) = &tracer
                && hooks.len() < 2
            {
                hooks.push(
                    t.programs()
                        .iter()
                        .filter(|p| p.attached)
                        .map(|p| p.hook)
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
            let before = counts(tracer.as_ref());
            let cpu0 = cpu_time();
            let t0 = Instant::now();
            for _ in 0..per_round {
                let status = Command::new(BUSYBOX)
                    .arg0("true")
                    .status()
                    .context("spawn busybox")?;
                if !status.success() {
                    bail!("busybox true failed: {status}");
                }
            }
            totals[i].add_round(t0.elapsed());
            if let Some(t) = &tracer {
                settle(&rt, t, before.0 + per_round);
            }
            totals[i].cpu += cpu_time().saturating_sub(cpu0);
            let after = counts(tracer.as_ref());
            totals[i].delivered += after.0 - before.0;
            totals[i].lost += after.1 - before.1;
            drop(tracer);
        }
    }
    for h in &hooks {
        println!("  attached: {h}");
    }
    println!(
        "{:<20} {:>9} {:>9} {:>7} {:>11} {:>12} {:>10} {:>11} {:>6}",
        "mode",
        "time",
        "execs/s",
        "ratio",
        "best ratio",
        "cpu µs/exec",
        "cpu ratio",
        "delivered",
        "lost"
    );
    let base = totals[0].elapsed.as_secs_f64();
    let base_cpu = totals[0].cpu.as_secs_f64();
    let base_best = totals[0].best_secs();
    for (mode, t) in Mode::ALL.into_iter().zip(totals) {
        let secs = t.elapsed.as_secs_f64();
        let (delivered, lost) = if mode == Mode::Baseline {
            ("-".to_owned(), "-".to_owned())
        } else {
            (t.delivered.to_string(), t.lost.to_string())
        };
        println!(
            "{:<20} {:>8.2}s {:>9.0} {:>7.3} {:>11.3} {:>12.1} {:>10.3} {:>11} {:>6}",
            mode.name(),
            secs,
            (per_round * ROUNDS) as f64 / secs,
            secs / base,
            t.best_secs() / base_best,
            t.cpu.as_secs_f64() * 1e6 / (per_round * ROUNDS) as f64,
            t.cpu.as_secs_f64() / base_cpu,
            delivered,
            lost
        );
    }
    println!("  (delivered counts every host exec in the window, so it can exceed the loop's own)");

    burst(&rt, execs)?;
    program_cost(&rt)?;
    reader_cost()?;

    crate::syscall_cost::run(|config| start_config(&rt, config), syscalls, rounds)
}

/// As many execs per second as the machine gives (one spawner per CPU, plus
/// one), with every hook attached: are events lost at that rate?
fn burst(rt: &tokio::runtime::Runtime, execs: u64) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get() as u64 + 1);
    let tracer = start(rt, Mode::ExecAndMount)?.context("tracer")?;
    let before = counts(Some(&tracer));
    let t0 = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || -> anyhow::Result<()> {
                    for _ in 0..execs / threads {
                        Command::new(BUSYBOX)
                            .arg0("true")
                            .status()
                            .context("spawn busybox")?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("spawner panicked"))??;
        }
        Ok(())
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let n = execs / threads * threads;
    settle(rt, &tracer, before.0 + n);
    let after = counts(Some(&tracer));
    println!(
        "burst: {n} execs from {threads} threads in {secs:.2}s = {:.0} execs/s, all hooks: {} delivered, {} lost",
        n as f64 / secs,
        after.0 - before.0,
        after.1 - before.1
    );
    Ok(())
}

/// The programs' own cost, as the kernel's BPF run-time statistics count it
/// (without the tracepoint dispatch, which the getppid loop shows).
fn program_cost(rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let tracer = start(rt, Mode::ExecAndMount)?.context("tracer")?;
    let stats = agent::ebpf::loader::enable_run_time_stats()
        .map_err(|e| anyhow::anyhow!(agent::ebpf::loader::error_chain(&e)))?;
    let before = tracer.program_stats();
    for _ in 0..1000 {
        Command::new(BUSYBOX).arg0("true").status()?;
    }
    let mut sink = 0u32;
    for _ in 0..1_000_000 {
        sink = sink.wrapping_add(std::os::unix::process::parent_id());
    }
    std::hint::black_box(sink);
    let after = tracer.program_stats();
    drop(stats);
    for (b, a) in before.iter().zip(&after) {
        let runs = a.run_count - b.run_count;
        let ns = (a.run_time - b.run_time).as_nanos() as f64;
        println!(
            "program {:<26} {:>9} runs {:>7.1} ns/run (BPF run-time stats)",
            a.hook,
            runs,
            if runs > 0 { ns / runs as f64 } else { 0.0 }
        );
    }
    Ok(())
}

/// The user-space side of one event: decode, attribute, count.
fn reader_cost() -> anyhow::Result<()> {
    use agent::ebpf::attribution::{Attributor, ns_inode};
    use agent::ebpf::events::{self, RawExecEvent, RawHeader};
    use agent::ebpf::metrics::EventCounters;

    let host_ns = ns_inode(std::path::Path::new("/proc/self/ns/mnt")).context("own mnt ns")?;
    let pid = std::process::id();
    let mut raw = RawExecEvent {
        hdr: RawHeader {
            ts_ns: 1,
            cgroup_id: 1,
            kind: events::EVENT_EXEC,
            pid,
            tgid: pid,
            ppid: std::os::unix::process::parent_id(),
            ns_pid: pid,
            uid: 0,
            gid: 0,
            mnt_ns: host_ns,
            pid_ns: 1,
            net_ns: 1,
            uts_ns: 1,
            _pad: 0,
            comm: *b"busybox\0\0\0\0\0\0\0\0\0",
        },
        args_len: 0,
        args_truncated: 0,
        filename: [0; events::FILENAME_LEN],
        args: [0; events::ARGS_LEN],
    };
    raw.filename[..BUSYBOX.len()].copy_from_slice(BUSYBOX.as_bytes());
    let args = b"true\0bench\0";
    raw.args[..args.len()].copy_from_slice(args);
    raw.args_len = args.len() as u32;

    let mut attributor = Attributor::new(Arc::new(NoContainers), "/proc");
    let mut counters = EventCounters::default();
    let mut run = |mnt_ns: u32, pid: u32, n: u32| -> anyhow::Result<f64> {
        raw.hdr.mnt_ns = mnt_ns;
        raw.hdr.tgid = pid;
        raw.hdr.ppid = pid;
        let bytes = raw.as_bytes().to_vec();
        let t0 = Instant::now();
        for _ in 0..n {
            let ev = events::decode(&bytes).context("decode")?;
            let p = ev.process();
            let (labels, subject) = attributor.attribute(p.mnt_ns, p.tgid, p.ppid, p.cgroup_id);
            counters.record(&labels, &subject, &ev);
        }
        Ok(t0.elapsed().as_nanos() as f64 / f64::from(n))
    };
    let host = run(host_ns, pid, 1_000_000)?;
    // A live process in a mount namespace of its own: the cached answer is
    // confirmed per event by polling its holder's pidfd.
    let mut child = Command::new("unshare")
        .args(["--mount", "sleep", "60"])
        .spawn()
        .context("unshare --mount sleep (util-linux)")?;
    let child_pid = child.id();
    let ns_path = format!("/proc/{child_pid}/ns/mnt");
    let deadline = Instant::now() + Duration::from_secs(5);
    let ns = loop {
        match ns_inode(std::path::Path::new(&ns_path)) {
            Some(ns) if ns != host_ns => break Some(ns),
            _ if Instant::now() > deadline => break None,
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let hit = match ns {
        Some(ns) => run(ns, child_pid, 200_000),
        None => Err(anyhow::anyhow!(
            "the child never entered its own mount namespace"
        )),
    };
    let _ = child.kill();
    let _ = child.wait();
    let hit = hit?;
    println!(
        "reader: decode + attribute + count per event: {host:.0} ns (host), {hit:.0} ns (other mount namespace, cached; holder checked by pidfd)"
    );
    Ok(())
}

fn start(rt: &tokio::runtime::Runtime, mode: Mode) -> anyhow::Result<Option<Tracer>> {
    start_config(rt, mode.config())
}

fn start_config(
    rt: &tokio::runtime::Runtime,
    config: Option<TracerConfig>,
) -> anyhow::Result<Option<Tracer>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let tracer = rt
        .block_on(Tracer::start(config, Arc::new(NoContainers)))
        .map_err(|e| anyhow::anyhow!(agent::ebpf::loader::error_chain(&e)))
        .context("start the tracer")?;
    Ok(Some(tracer))
}

/// User + system CPU time of this process and its reaped children.
fn cpu_time() -> Duration {
    fn get(who: libc::c_int) -> Duration {
        // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage.
        if unsafe { libc::getrusage(who, &mut ru) } != 0 {
            return Duration::ZERO;
        }
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
    get(libc::RUSAGE_SELF) + get(libc::RUSAGE_CHILDREN)
}

/// (host execs counted, exec records lost)
fn counts(tracer: Option<&Tracer>) -> (u64, u64) {
    tracer.map_or((0, 0), |t| {
        (
            t.with_counters(|c| c.execs(&ContainerLabels::host())),
            t.lost().0,
        )
    })
}

/// Gives the reader up to a second to catch up with the loop.
fn settle(rt: &tokio::runtime::Runtime, tracer: &Tracer, want: u64) {
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(1);
        while counts(Some(tracer)).0 < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}
