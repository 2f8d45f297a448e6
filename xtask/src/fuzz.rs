//! `cargo xtask fuzz [--seconds N] [TARGET…]`: the fuzz targets of `fuzz/` (cargo-fuzz,
//! libFuzzer, nightly Rust), each for N seconds over its corpus, with a summary line
//! per target. cargo-fuzz is installed into cargo's bin directory when missing.
//!
//! Each target reads the seeds in `fuzz/corpus/<target>/` (committed) and writes what
//! it discovers to `fuzz/target/corpus/<target>/` (not committed; kept between runs
//! on one machine). A crash, a panic, a failed assertion, a leak or an input slower
//! than [`INPUT_TIMEOUT_SECS`] fails the run, naming the reproducer in
//! `fuzz/artifacts/<target>/`.

use crate::workspace_root;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// One input taking longer than this is a failure (a hang, in practice).
const INPUT_TIMEOUT_SECS: u64 = 10;

/// Seconds per target by default.
const DEFAULT_SECONDS: u64 = 20;

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds each target runs.
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    pub seconds: u64,
    /// Build without optimisation: half the build time of a cold build (about six
    /// CPU-minutes instead of twelve), a fifth to a tenth of the executions.
    #[arg(long)]
    pub dev: bool,
    /// Targets to run (all of `fuzz/fuzz_targets/` when none is named).
    pub targets: Vec<String>,
}

impl Options {
    /// What `cargo xtask test` runs: every target from the seeds for a few seconds,
    /// unoptimised, since on a fresh clone the build is most of the time.
    pub fn smoke() -> Options {
        Options {
            seconds: 5,
            dev: true,
            targets: Vec::new(),
        }
    }
}

/// What a target's run printed, read from libFuzzer's final statistics.
#[derive(Debug, Default)]
struct Stats {
    executions: Option<u64>,
    exec_per_sec: Option<u64>,
    /// Inputs and bytes of the corpus at the end (`corp: N/SIZE`).
    corpus: Option<String>,
    /// `Test unit written to PATH`: the input that failed.
    reproducer: Option<String>,
}

impl Stats {
    fn parse(log: &str) -> Stats {
        let mut stats = Stats::default();
        for line in log.lines() {
            if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
                stats.executions = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
                stats.exec_per_sec = v.trim().parse().ok();
            } else if let Some(v) = line.split("Test unit written to ").nth(1) {
                stats.reproducer = Some(v.trim().to_owned());
            }
            if let Some(corp) = line.split(" corp: ").nth(1) {
                stats.corpus = corp.split_whitespace().next().map(str::to_owned);
            }
        }
        stats
    }
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

/// The targets: one file each in `fuzz/fuzz_targets/`.
fn all_targets() -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut targets = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            targets.push(stem.to_owned());
        }
    }
    targets.sort();
    Ok(targets)
}

/// `cargo +nightly …` from the workspace root, in the environment a shell would give
/// it. The rustup proxy picks the toolchain, so the stable cargo that runs xtask
/// (`$CARGO`) is not used, and what `cargo run` set for xtask (`CARGO_PKG_NAME`…) is
/// removed: build scripts that watch those variables would otherwise run again, and
/// rebuild their crates, whenever the targets are built outside xtask.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly").current_dir(workspace_root());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_by_cargo_run = matches!(
            &*key,
            "CARGO"
                | "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "RUSTUP_TOOLCHAIN"
        ) || key.starts_with("CARGO_PKG_");
        if set_by_cargo_run {
            cmd.env_remove(&*key);
        }
    }
    // The targets do not load eBPF programs: no clang needed for this build.
    cmd.env("AGENT_EBPF_STUB", "1");
    cmd
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The nightly toolchain, and cargo-fuzz (installed when missing).
fn ensure_tools() -> anyhow::Result<()> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        bail!(
            "the nightly toolchain is missing (cargo-fuzz needs it): rustup toolchain install nightly"
        );
    }
    if succeeds(nightly_cargo().args(["fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .env_remove("CARGO")
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz --locked failed ({status})");
    }
    Ok(())
}

/// Flags of both `cargo fuzz build` and `run` (the same, so `run` builds nothing):
/// overflow checks and debug assertions on, AddressSanitizer (the default), and
/// `--dev` when asked for.
fn build_flags(options: &Options) -> Vec<&'static str> {
    let mut flags = vec!["--debug-assertions"];
    if options.dev {
        flags.push("--dev");
    }
    flags
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let all = all_targets()?;
    let targets = if options.targets.is_empty() {
        all.clone()
    } else {
        for t in &options.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?} (targets: {})", all.join(", "));
            }
        }
        options.targets.clone()
    };
    ensure_tools()?;

    let started = Instant::now();
    eprintln!("xtask: cargo +nightly fuzz build");
    let mut build = nightly_cargo();
    build.args(["fuzz", "build"]).args(build_flags(options));
    if let [one] = targets.as_slice() {
        build.arg(one);
    }
    let status = build.status().context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let logs = fuzz_dir().join("target/logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut failed = Vec::new();
    for target in &targets {
        match run_target(target, options, &logs) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("xtask: fuzz {target}: {e:#}");
                failed.push(target.as_str());
            }
        }
    }
    eprintln!(
        "xtask: fuzzing took {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

fn run_target(target: &str, options: &Options, logs: &Path) -> anyhow::Result<()> {
    let seeds = Path::new("fuzz/corpus").join(target);
    let found = Path::new("fuzz/target/corpus").join(target);
    std::fs::create_dir_all(workspace_root().join(&found))
        .with_context(|| format!("creating {}", found.display()))?;
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let status = nightly_cargo()
        .args(["fuzz", "run"])
        .args(build_flags(options))
        .arg(target)
        // New inputs go to the first directory; the committed seeds stay as they are.
        .arg(&found)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", options.seconds))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log)
        .status()
        .context("running cargo fuzz run")?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let stats = Stats::parse(&text);
    let show = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
    let verdict = if status.success() { "ok" } else { "FAILED" };
    println!(
        "fuzz {target:<18} {verdict:<6} executions {:>9}  exec/s {:>7}  corpus {}",
        show(stats.executions),
        show(stats.exec_per_sec),
        stats.corpus.as_deref().unwrap_or("?"),
    );
    if status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    for line in tail.iter().rev() {
        eprintln!("  | {line}");
    }
    match stats.reproducer {
        Some(path) => bail!(
            "{status}; reproducer: {path} (rerun: cargo +nightly fuzz run {} {target} {path}); log: {}",
            build_flags(options).join(" "),
            log_path.display()
        ),
        None => bail!("{status}; log: {}", log_path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn libfuzzer_output_is_summarised() {
        let log = "\
#90\tINITED cov: 276 ft: 551 corp: 70/47Kb exec/s: 0 rss: 60Mb
#424853\tDONE   cov: 276 ft: 555 corp: 73/48Kb lim: 4096 exec/s: 6964 rss: 428Mb
stat::number_of_executed_units: 424853
stat::average_exec_per_sec:     6964
";
        let s = Stats::parse(log);
        assert_eq!(s.executions, Some(424_853));
        assert_eq!(s.exec_per_sec, Some(6964));
        assert_eq!(s.corpus.as_deref(), Some("73/48Kb"));
        assert_eq!(s.reproducer, None);
        let crash =
            "artifact_prefix='/f/artifacts/t/'; Test unit written to /f/artifacts/t/crash-1f\n";
        assert_eq!(
            Stats::parse(crash).reproducer.as_deref(),
            Some("/f/artifacts/t/crash-1f")
        );
    }
}
