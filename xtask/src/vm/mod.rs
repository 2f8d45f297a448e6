//! `cargo xtask vm-test`: the privileged tests on real cgroup v2 and a stock
//! distribution kernel (Debian's cloud kernel) under qemu TCG.
//!
//! - `kernel`: fetch and unpack the kernel package, resolve modules, read its config
//! - `build`: build the test binaries and the agent (`cargo test --no-run`)
//! - `initramfs`: busybox, init.sh, binaries and their libraries into a cpio archive
//! - `qemu`: boot it, stream the serial console, enforce the timeout
//! - `probes`: one tiny eBPF object per hook kind and a libbpf loader that attaches
//!   them in the guest
//! - `results`: parse the console into per-binary and per-test results
//! - `fixtures`: `--capture-fixtures` unpacks the guest's capture into tests/fixtures
//! - `bench`: `cargo xtask bench exec --vm` runs `agent-bench exec` in the guest
//!
//! A new privileged test binary joins by adding its `[[test]]` name to [`TESTS`].

pub mod bench;
mod build;
mod fixtures;
mod initramfs;
mod kernel;
mod probes;
mod qemu;
mod results;

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The test binaries the guest runs, in this order (`[[test]]` names in agent/Cargo.toml):
/// those whose outcome depends on the kernel or on a pure cgroup v2 host, which this
/// host (6.18, cgroup v1 hybrid, fentry/fexit/LSM refused) cannot show. The rest run
/// on the host only (`cargo xtask test`), because the guest would repeat them under
/// emulation at ten times the cost: privileged_restart, privileged_tty,
/// privileged_exec and privileged_volumes (supervisor, terminals, setns and bind
/// mounts: the same on any kernel), privileged_docker (no dockerd in the guest; it
/// skips on v2), cli_serve (command-line handling, needs no root) and e2e_dashboards
/// (PromQL over the families that privileged_cgroup and e2e_prometheus prove on v2).
pub const TESTS: &[&str] = &[
    // cgroup v2 readers on a real v2 tree
    "privileged_cgroup",
    // limits, cgroup.kill and namespaces on v2 and a stock overlay module
    "privileged_launch",
    // every hook kind: fexit, fentry (OOM) and the sys_exit fallbacks
    "privileged_ebpf",
    "privileged_ebpf_lifecycle",
    "privileged_launch_observed",
    // seccomp, capabilities and user namespaces on a stock kernel
    "privileged_confinement",
    // every family with its labels, scraped by Prometheus, on v2
    "e2e_prometheus",
];

/// Tests of a kept binary that do not depend on the kernel (libtest `--skip`
/// filters): image formats and input validation, and an agent restart.
const SKIPPED_HERE: &[(&str, &[&str])] = &[
    ("privileged_launch", &["images::", "bad_input::"]),
    ("privileged_launch_observed", &["restart::"]),
];

fn skipped_here(binary: &str) -> &'static [&'static str] {
    SKIPPED_HERE
        .iter()
        .find(|(b, _)| *b == binary)
        .map_or(&[], |(_, s)| s)
}

/// The eBPF test binaries the guest runs again with the mount family forced onto
/// each fallback hook (`AGENT_TEST_MOUNT_HOOK`, read by tests/support's eBPF
/// `start`). The stock kernel allows every kind, so each one runs here; the
/// first run takes the cheapest (fexit), and every run's `EVENTS` lines must
/// match the first's, event for event.
const MOUNT_HOOK_PASSES: &[(&str, &[&str])] =
    &[("privileged_ebpf", &["tp_btf/sys_exit", "raw_tp/sys_exit"])];
const MOUNT_HOOK_ENV: &str = "AGENT_TEST_MOUNT_HOOK";

/// One entry of the plan's TESTS (see init.sh): `label=binary`, then `|` and
/// comma-separated words, each an environment variable for this run or one more
/// libtest argument.
fn run_entry(label: &str, exe: &Path, words: &[String]) -> String {
    if words.is_empty() {
        format!("{label}={}", exe.display())
    } else {
        format!("{label}={}|{}", exe.display(), words.join(","))
    }
}

/// The mount hooks `binary` runs again on (see [`MOUNT_HOOK_PASSES`]).
fn mount_hook_passes(binary: &str) -> &'static [&'static str] {
    MOUNT_HOOK_PASSES
        .iter()
        .find(|(b, _)| *b == binary)
        .map_or(&[], |(_, hooks)| hooks)
}

/// Workspace directories tests read at run time (through `CARGO_MANIFEST_DIR`),
/// copied to the same paths in the guest.
const DATA_DIRS: &[&str] = &["dashboards"];

/// Host programs some tests run, copied in (with their libraries) when the host has
/// them; a test that finds one missing skips or fails on its own terms.
const HOST_PROGRAMS: &[&str] = &["/usr/bin/prometheus"];

/// Host files the agent reads at run time, copied to the same paths: the default
/// seccomp profile (without it every launch is refused, by design).
const HOST_FILES: &[&str] = &[
    "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json",
    "/usr/share/containers/seccomp.json",
];

/// Kernel modules the guest loads (with their dependencies): overlay for container
/// root filesystems, virtio-blk for the capture disk and the tests' scratch disk.
const MODULES: &[&str] = &["overlay", "virtio_pci", "virtio_blk"];

/// The Debian packages the rig runs on the host (the kernel package is downloaded,
/// not installed; see `kernel`).
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "kmod",
    "binutils",
    "clang-19",
    "libbpf-dev",
    "prometheus",
    "libseccomp-dev",
    "protobuf-compiler",
    "golang-github-docker-docker-dev",
    "golang-github-containers-common",
];

/// Controllers enabled in the root's subtree_control (the capture adds cpuset, as the
/// original capture had it).
const CONTROLLERS: &str = "memory cpu io pids";
const CAPTURE_CONTROLLERS: &str = "memory cpu io pids cpuset";

/// libtest flags for every binary: the output of passing tests shown so their skip
/// reasons reach the console. Tests run two at a time, one per vCPU, unless
/// `--test-threads N`: measured, privileged_launch takes 110-160 s that way against
/// 190 s one at a time, and the suite passed every run; `--test-threads 1` gives
/// unmixed output when chasing a failure.
const TEST_ARGS: &str = "--show-output";

/// `cargo xtask vm-test` options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Test binaries to run (default: every one in the VM list).
    #[arg(value_parser = test_binary)]
    tests: Vec<&'static str>,
    /// Recapture tests/fixtures/cgroup-v2-debian-6.1 instead of testing.
    #[arg(long = "capture-fixtures")]
    capture: bool,
    /// Seconds the whole VM run may take.
    #[arg(long = "timeout", default_value = "900", value_parser = seconds)]
    timeout: Duration,
    /// Seconds one test binary may take.
    #[arg(long = "test-timeout", default_value = "600", value_parser = seconds)]
    test_timeout: Duration,
    /// Guest memory, MiB.
    #[arg(long = "memory", default_value_t = 2048)]
    memory_mib: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Tests run at once inside each binary.
    #[arg(long, default_value_t = 2)]
    test_threads: u64,
}

/// The defaults, as an empty `vm-test` command line gives them.
impl Default for Options {
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Standalone {
            #[command(flatten)]
            options: Options,
        }
        <Standalone as clap::Parser>::parse_from(["vm-test"]).options
    }
}

fn test_binary(name: &str) -> Result<&'static str, String> {
    TESTS.iter().find(|t| **t == name).copied().ok_or_else(|| {
        format!(
            "no test binary {name:?} in the VM list (have: {})",
            TESTS.join(", ")
        )
    })
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.parse()
        .map(Duration::from_secs)
        .map_err(|_| format!("{s:?} is not a number of seconds"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

/// The guest being assembled: its kernel, its root (busybox, init, modules, the hook
/// probes) and the start of its plan; holds the rig's lock while it lives.
struct Guest {
    work: PathBuf,
    kernel: kernel::Kernel,
    fs: initramfs::Initramfs,
    plan: String,
    _lock: std::fs::File,
}

impl Guest {
    /// Fetches the kernel and starts the root: `mode` and `controllers` go into the plan.
    fn prepare(mode: &str, controllers: &str) -> anyhow::Result<Guest> {
        crate::packages::ensure(PACKAGES)?;
        let work = target_dir().join("vm");
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let lock = lock(&work)?;

        let kernel = kernel::fetch(&work.join("kernel"))?;
        eprintln!("xtask: vm: kernel {} ({})", kernel.release, kernel.package);
        eprintln!("xtask: vm: hook options in {}:", kernel.config.display());
        for line in kernel.hook_config()? {
            eprintln!("xtask: vm:   {line}");
        }

        let mut fs = initramfs::Initramfs::new(&work.join("root"))?;
        let mut plan = format!("MODE={mode}\nCONTROLLERS=\"{controllers}\"\n");
        let modules = kernel.modules_in_load_order(MODULES)?;
        for (name, path) in &modules {
            fs.add_module(name, path)?;
        }
        plan.push_str(&format!(
            "MODULES=\"{}\"\n",
            modules
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        let hook_probes = probes::build(&work.join("probes"))?;
        for (name, obj) in &hook_probes {
            fs.copy(
                obj,
                Path::new(&format!("/vmtest/probes/{name}.bpf.o")),
                false,
            )?;
        }
        let loader = probes::build_loader(&work.join("probes"))?;
        fs.copy(&loader, Path::new("/vmtest/hook_probe_loader"), false)?;
        fs.add_libraries(&loader)?;
        plan.push_str(&format!(
            "PROBES=\"{}\"\n",
            hook_probes
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        Ok(Guest {
            work,
            kernel,
            fs,
            plan,
            _lock: lock,
        })
    }

    /// Packs the root with the plan and boots it; the console streams live.
    fn boot(
        self,
        memory_mib: u32,
        cpus: u32,
        disk: Option<PathBuf>,
        timeout: Duration,
    ) -> anyhow::Result<(qemu::Outcome, PathBuf)> {
        self.fs.write("vmtest/plan", &self.plan, 0o644)?;
        let image = self.work.join("initramfs.cpio");
        let size = self.fs.pack(&image)?;
        eprintln!(
            "xtask: vm: initramfs {} ({} MiB); booting (timeout {}s)",
            image.display(),
            size >> 20,
            timeout.as_secs()
        );
        let log = self.work.join("console.log");
        let machine = qemu::Machine {
            kernel: &self.kernel.vmlinuz,
            initramfs: &image,
            memory_mib,
            cpus,
            disk,
            timeout,
            log: &log,
        };
        Ok((machine.run()?, log))
    }
}

pub fn run(mut opts: Options) -> anyhow::Result<()> {
    if opts.tests.is_empty() {
        opts.tests = TESTS.to_vec();
    }
    let started = Instant::now();
    let mut guest = Guest::prepare(
        if opts.capture { "capture" } else { "test" },
        if opts.capture {
            CAPTURE_CONTROLLERS
        } else {
            CONTROLLERS
        },
    )?;
    guest.plan.push_str(&format!(
        "TEST_TIMEOUT={}\nTEST_ARGS=\"{TEST_ARGS} --test-threads={}\"\n",
        opts.test_timeout.as_secs(),
        opts.test_threads,
    ));
    let fs = &mut guest.fs;
    // What the guest runs, in order: each binary, then its runs on other mount hooks.
    let mut runs: Vec<String> = Vec::new();

    if !opts.capture {
        let built = build::build(&opts.tests)?;
        fs.add_executable(&built.agent, true)?;
        let mut entries = Vec::new();
        for (name, exe) in &built.tests {
            fs.add_executable(exe, true)?;
            let skips: Vec<String> = skipped_here(name)
                .iter()
                .flat_map(|s| ["--skip".to_owned(), (*s).to_owned()])
                .collect();
            entries.push(run_entry(name, exe, &skips));
            runs.push(name.clone());
            for hook in mount_hook_passes(name) {
                let label = format!("{name}[{hook}]");
                let mut words = vec![format!("{MOUNT_HOOK_ENV}={hook}")];
                words.extend(skips.iter().cloned());
                entries.push(run_entry(&label, exe, &words));
                runs.push(label);
            }
        }
        for p in HOST_PROGRAMS {
            let p = Path::new(p);
            if p.exists() {
                fs.add_executable(p, false)?;
            } else {
                eprintln!(
                    "xtask: vm: {} not on the host; tests that need it will say so",
                    p.display()
                );
            }
        }
        for f in HOST_FILES {
            let f = Path::new(f);
            if f.exists() {
                fs.copy(f, f, false)?;
            } else {
                eprintln!(
                    "xtask: vm: {} not on the host; launches in the guest will be refused",
                    f.display()
                );
            }
        }
        for d in DATA_DIRS {
            let dir = crate::workspace_root().join(d);
            fs.copy_tree(&dir, &dir)?;
        }
        fs.mkdir(&built.workdir)?;
        guest.plan.push_str(&format!(
            "WORKDIR=\"{}\"\nTESTS=\"{}\"\n",
            built.workdir.display(),
            entries.join(" ")
        ));
    }

    // Capture mode: the disk the guest writes its tar to. Test mode: a scratch disk
    // the guest formats and mounts for the tests that need real block I/O
    // (AGENT_TEST_BLOCK_DIR; the initramfs root is no block device).
    let disk = guest.work.join(if opts.capture {
        "capture.img"
    } else {
        "scratch.img"
    });
    fixtures::blank_disk(&disk, if opts.capture { 16 << 20 } else { 256 << 20 })?;
    let (outcome, log) =
        guest.boot(opts.memory_mib, opts.cpus, Some(disk.clone()), opts.timeout)?;
    let report = results::parse(&outcome.console);

    eprintln!();
    eprintln!(
        "xtask: vm: ===== summary ({:.0}s in the VM, {:.0}s in all; console log {}) =====",
        outcome.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        log.display()
    );
    let mut problems = Vec::new();
    match &report.booted {
        Some(b) => eprintln!("xtask: vm: guest kernel {b}"),
        None => problems.push("the VM did not come up (no BOOTED line on the console)".to_string()),
    }
    if let Some(c) = &report.cgroup {
        eprintln!("xtask: vm: cgroup2 {c}");
    }
    if let Some(s) = &report.scratch {
        eprintln!("xtask: vm: scratch disk {s}");
    }
    for h in &report.hooks {
        eprintln!("xtask: vm: hook {h}");
    }
    if let Some(f) = &report.fatal {
        problems.push(format!("guest init failed: {f}"));
    }

    if opts.capture {
        match &report.capture {
            Some(Ok(())) => {
                fixtures::install(&disk, &crate::workspace_root())?;
                eprintln!(
                    "xtask: vm: recaptured {}; check it with: cargo test -p agent --lib",
                    fixtures::FIXTURE_DIR
                );
            }
            Some(Err(why)) => problems.push(format!("fixture capture failed: {why}")),
            None => problems.push("the guest never reported a capture".into()),
        }
    } else {
        for name in &runs {
            let Some(b) = report.binaries.iter().find(|b| b.name == *name) else {
                problems.push(format!("{name}: never started"));
                eprintln!("xtask: vm: NOT RUN   {name}");
                continue;
            };
            let skipped = |t: &str| b.skipped.iter().any(|(s, _)| s == t);
            let passed = b
                .tests
                .iter()
                .filter(|(t, r)| r == "ok" && !skipped(t))
                .count();
            let failed: Vec<&str> = b
                .tests
                .iter()
                .filter(|(_, r)| r == "FAILED")
                .map(|(t, _)| t.as_str())
                .collect();
            let verdict = match b.rc {
                Some(0) => "PASS",
                Some(_) => "FAIL",
                None => "HUNG",
            };
            eprintln!(
                "xtask: vm: {verdict:<7} {name}: {passed} passed, {} failed, {} skipped{}",
                failed.len(),
                b.skipped.len(),
                if b.timed_out {
                    " (killed by the per-binary timeout)"
                } else {
                    ""
                }
            );
            for (t, r) in &b.tests {
                let skip = b.skipped.iter().find(|(s, _)| s == t);
                match skip {
                    Some((_, why)) => eprintln!("xtask: vm:     SKIP {t}: {why}"),
                    None => eprintln!("xtask: vm:     {r:<4} {t}"),
                }
                for (_, what) in b.partial.iter().filter(|(p, _)| p == t) {
                    eprintln!("xtask: vm:            skipped part: {what}");
                }
            }
            for l in &b.leftovers {
                eprintln!("xtask: vm:     left behind: cgroup {l}");
            }
            match b.rc {
                Some(0) => {}
                Some(rc) => problems.push(format!(
                    "{name}: exit status {rc}{}",
                    if failed.is_empty() {
                        String::new()
                    } else {
                        format!(" (failed: {})", failed.join(", "))
                    }
                )),
                None => problems.push(format!("{name}: no result (the guest stopped or hung)")),
            }
        }
    }
    if !opts.capture {
        compare_mount_hook_runs(&report, &runs, &mut problems);
    }
    if outcome.timed_out {
        problems.push(format!("timed out after {}s", opts.timeout.as_secs()));
    } else if !report.done {
        problems.push("the guest stopped before finishing (no DONE line)".into());
    }
    if let Some(status) = outcome.exit
        && !status.success()
    {
        problems.push(format!("qemu exited with {status}"));
    }
    if problems.is_empty() {
        eprintln!(
            "xtask: vm: all passed ({:.0}s)",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        bail!("vm-test: {}", problems.join("; "))
    }
}

/// Each binary's runs on other mount hooks against its first run: the same
/// `EVENTS` lines, or a problem that says which test differs.
fn compare_mount_hook_runs(report: &results::Report, runs: &[String], problems: &mut Vec<String>) {
    let find = |name: &str| report.binaries.iter().find(|b| b.name == name);
    for (name, hooks) in MOUNT_HOOK_PASSES {
        let Some(first) = find(name) else { continue };
        for hook in *hooks {
            let label = format!("{name}[{hook}]");
            if !runs.contains(&label) {
                continue;
            }
            let Some(again) = find(&label) else { continue };
            match results::same_events(first, again) {
                Ok(same) if same.is_empty() => eprintln!(
                    "xtask: vm: events: {label} and {name} printed none to compare (skipped?)"
                ),
                Ok(same) => {
                    for (test, n) in same {
                        eprintln!(
                            "xtask: vm: events: {test}: {label} saw the same {n} events as {name}"
                        );
                    }
                }
                Err(why) => problems.push(format!("mount hook runs differ: {why}")),
            }
        }
    }
}

/// Holds an exclusive lock on `dir/.lock` for the life of the returned file: two
/// vm-test runs would otherwise build their initramfs in the same staging tree.
fn lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!(
            "xtask: vm: another vm-test is using {}; waiting for it",
            dir.display()
        );
        // SAFETY: as above, now blocking.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(file)
}
