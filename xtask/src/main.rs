//! `cargo xtask`: build helpers, the test suite, benchmarks.
//!
//! - `cargo xtask run [SERVE FLAGS…]`: install what is missing, build, run `agent serve`.
//! - `cargo xtask test`: install what is missing, then fmt, clippy and every test
//!   (privileged and end-to-end ones need root, as in CI), then `vm-test`.
//! - `cargo xtask bench [scrape|exec|launch]`: the scrape, event and launch paths.
//! - `cargo xtask vm-test [--capture-fixtures]`: the privileged tests inside a qemu VM
//!   running Debian's cloud kernel on cgroup v2 (see `vm/mod.rs`).

mod packages;
mod vm;

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Command;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds the release binary and returns its path. xtask itself does not depend
/// on the agent crate, so this is the first build of it: the toolchain that
/// its eBPF programs need is installed before it (see `run`).
pub fn build_release_agent() -> anyhow::Result<PathBuf> {
    cargo(&["build", "--release", "-q", "-p", "agent", "--bin", "agent"])?;
    Ok(workspace_root().join("target/release/agent"))
}

/// `cargo xtask bench [scrape [N…] | exec | launch]`: installs what the
/// benchmarks need, builds the release agent and `agent-bench`, runs it.
fn bench(args: &[String]) -> anyhow::Result<()> {
    packages::ensure(&packages::all())?;
    let agent = build_release_agent()?;
    cargo(&["build", "--release", "-q", "-p", "agent-bench"])?;
    let runs: Vec<Vec<String>> = if args.is_empty() {
        ["scrape", "exec", "launch"]
            .iter()
            .map(|b| vec![b.to_string()])
            .collect()
    } else {
        vec![args.to_vec()]
    };
    for run in runs {
        let status = Command::new(workspace_root().join("target/release/agent-bench"))
            .args(&run)
            .env("AGENT_BIN", &agent)
            .status()
            .context("running agent-bench")?;
        if !status.success() {
            bail!("bench {} failed ({status})", run.join(" "));
        }
    }
    Ok(())
}

fn test() -> anyhow::Result<()> {
    packages::ensure(&packages::all())?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "-q",
        "--",
        "-D",
        "warnings",
    ])?;
    // One test binary at a time per file, tests inside it in parallel: privileged
    // tests use distinct cgroup names and ports, so they do not collide.
    let host = cargo(&["test", "--workspace", "--no-fail-fast"]);
    // The privileged tests again, on cgroup v2 and a stock Debian kernel under qemu
    // TCG. It reuses the test binaries just built; 3.5-4 min on 2 cores.
    let vm = vm::run(&[]);
    host.and(vm)
}

fn run(args: &[String]) -> anyhow::Result<()> {
    packages::ensure(packages::SERVE_PACKAGES)?;
    let bin = build_release_agent()?;
    let err = {
        use std::os::unix::process::CommandExt;
        Command::new(&bin).arg("serve").args(args).exec()
    };
    Err(err).with_context(|| format!("executing {}", bin.display()))
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("run") => run(&args[1..]),
        Some("vm-test") => vm::run(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => Err(anyhow::anyhow!(
            "usage: cargo xtask <run [serve flags…] | test | bench [scrape|exec|launch] | vm-test [TEST…] [--capture-fixtures]>"
        )),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
