//! `cargo xtask`: build helpers, the test suite, benchmarks.
//!
//! - `cargo xtask run [SERVE FLAGS…]`: install what is missing, build, run `agent serve`.
//! - `cargo xtask test`: install what is missing, then fmt, clippy and every test
//!   (privileged and end-to-end ones need root, as in CI), then `vm-test`, then
//!   `fuzz` with a short budget per target.
//! - `cargo xtask bench [scrape|exec [--vm]|fs-usage|launch|pull]`: the scrape, event and
//!   launch paths; `exec --vm` also in the VM rig, side by side (see `exec_bench.rs`).
//! - `cargo xtask image [--agent PATH] [--out DIR]`: the agent's OCI image (see
//!   `image.rs`), as an OCI layout and a tar that `docker load` reads.
//! - `cargo xtask manifests`: regenerate deploy/kubernetes/'s copies of dashboards/.
//! - `cargo xtask vm-test [--capture-fixtures]`: the privileged tests inside a qemu VM
//!   running Debian's cloud kernel on cgroup v2 (see `vm/mod.rs`).
//! - `cargo xtask fuzz [--seconds N] [TARGET…]`: the fuzz targets of `fuzz/` (see
//!   `fuzz.rs`).

mod exec_bench;
mod fuzz;
mod packages;
mod vm;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
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
    // Not quiet: a first build takes minutes, and cargo's progress says it is alive.
    cargo(&["build", "--release", "-p", "agent", "--bin", "agent"])?;
    Ok(workspace_root().join("target/release/agent"))
}

/// `cargo xtask bench [scrape [N…] | exec | fs-usage | launch | pull]`: installs what the
/// benchmarks need, builds the release agent and `agent-bench`, runs it.
fn bench(which: Option<Bench>) -> anyhow::Result<()> {
    packages::ensure(&packages::all())?;
    let agent = build_release_agent()?;
    cargo(&["build", "--release", "-p", "agent-bench"])?;
    let runs: Vec<Vec<String>> = match which {
        Some(ref b) => vec![b.args()],
        None => [
            Bench::Scrape { sizes: Vec::new() },
            Bench::Exec { vm: false },
            Bench::Launch,
            Bench::Pull,
        ]
        .iter()
        .map(Bench::args)
        .collect(),
    };
    if let Some(Bench::Exec { vm }) = which {
        return exec_bench::run(
            &workspace_root().join("target/release/agent-bench"),
            &agent,
            vm,
        );
    }
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
    packages::ensure_kubernetes_validate(&workspace_root())?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // One test binary at a time per file, tests inside it in parallel: privileged
    // tests use distinct cgroup names and ports, so they do not collide.
    let host = cargo(&["test", "--workspace", "--no-fail-fast"]);
    // The privileged tests again, on cgroup v2 and a stock Debian kernel under qemu
    // TCG. It reuses the test binaries just built; 3.5-4 min on 2 cores.
    let vm = vm::run(vm::Options::default());
    // Every fuzz target for a few seconds; the nightly build is most of it.
    let fuzz = fuzz::run(&fuzz::Options::smoke());
    host.and(vm).and(fuzz)
}

/// `cargo xtask image`: builds the release agent (unless one is given) and writes
/// its OCI image; prints where, its size and what is in it.
fn image(agent: Option<PathBuf>, out: Option<PathBuf>) -> anyhow::Result<()> {
    let agent = match agent {
        Some(a) => a,
        None => {
            packages::ensure(packages::SERVE_PACKAGES)?;
            build_release_agent()?
        }
    };
    packages::ensure(&["binutils"])?;
    let out = out.unwrap_or_else(|| workspace_root().join("target/image"));
    let reference = format!("agent:{}", env!("CARGO_PKG_VERSION"));
    let img = xtask::image::build(&agent, &out, &reference)?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("image {} ({})", img.reference, img.id);
    for (path, bytes) in &img.files {
        println!("  {path:<45} {:>7.2} MiB", mib(*bytes));
    }
    println!(
        "layer {:.2} MiB ({:.2} MiB gzip-compressed, as a registry stores it)",
        mib(img.layer_bytes),
        mib(img.layer_gzip_bytes)
    );
    println!("OCI layout:  {}", img.layout.display());
    println!(
        "archive:     {}  (docker load -i / podman load -i / ctr images import / agent image import)",
        img.archive.display()
    );
    Ok(())
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

/// Build helpers, the test suite, benchmarks and the VM rig of the agent.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing, build the release agent, run `agent serve` with these flags.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        serve_flags: Vec<String>,
    },
    /// Install what is missing, then fmt, clippy, every test (as root), vm-test and fuzz.
    Test,
    /// Benchmarks (all three when none is named).
    Bench {
        #[command(subcommand)]
        bench: Option<Bench>,
    },
    /// Build the agent's OCI image: an OCI layout and a tar for docker/podman load.
    Image {
        /// The agent binary to put in it (default: build the release binary).
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Output directory (default target/image).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Regenerate deploy/kubernetes/'s copies of dashboards/ (PrometheusRule, dashboard JSON).
    Manifests,
    /// The privileged tests inside a qemu VM on Debian's cloud kernel and cgroup v2.
    VmTest(vm::Options),
    /// Launch/rm cycles while a real Prometheus scrapes every second: what grew.
    Soak {
        /// Cycles (default 2000).
        cycles: Option<usize>,
    },
    /// Every fuzz target (or those named) for a while, over its corpus.
    Fuzz(fuzz::Options),
}

#[derive(Debug, Clone, Subcommand)]
enum Bench {
    /// The scrape path over N real cgroups (default 100 and 1000).
    Scrape { sizes: Vec<usize> },
    /// What eBPF exec and mount tracing cost.
    Exec {
        /// Also run it in the VM rig (stock Debian kernel, fexit attaches) and
        /// print both side by side.
        #[arg(long)]
        vm: bool,
    },
    /// The writable-layer walker's CPU over LAYERS layers of FILES files (default
    /// 1000 of 1000), against `du`.
    FsUsage { counts: Vec<usize> },
    /// `agent launch --rm` side by side with `runc run`, and `docker run --runtime
    /// agent` side by side with `docker run` (runc).
    Launch,
    /// `agent pull` side by side with `skopeo copy` from a local registry.
    Pull,
    /// Launch/rm cycles under a scraping Prometheus (also `cargo xtask soak`).
    Soak { cycles: Option<usize> },
    /// What the web UI costs over N cgroups (default 1000), against --no-web-ui.
    Ui { n: Option<usize> },
    /// K agents (default 20) over synthetic trees of N containers (default 200), one
    /// Prometheus scraping every 5 s for SECS (default 60).
    Fleet {
        agents: Option<usize>,
        containers: Option<usize>,
        secs: Option<u64>,
    },
}

impl Bench {
    /// The `agent-bench` command line.
    fn args(&self) -> Vec<String> {
        match self {
            Bench::Scrape { sizes } => std::iter::once("scrape".to_owned())
                .chain(sizes.iter().map(usize::to_string))
                .collect(),
            Bench::Exec { .. } => vec!["exec".into()],
            Bench::FsUsage { counts } => std::iter::once("fs-usage".to_owned())
                .chain(counts.iter().map(usize::to_string))
                .collect(),
            Bench::Launch => vec!["launch".into()],
            Bench::Pull => vec!["pull".into()],
            Bench::Soak { cycles } => std::iter::once("soak".to_owned())
                .chain(cycles.map(|c| c.to_string()))
                .collect(),
            Bench::Ui { n } => std::iter::once("ui".to_owned())
                .chain(n.map(|n| n.to_string()))
                .collect(),
            Bench::Fleet {
                agents,
                containers,
                secs,
            } => {
                // Positional: clap gives a later one only after the earlier ones.
                std::iter::once("fleet".to_owned())
                    .chain(agents.map(|x| x.to_string()))
                    .chain(containers.map(|x| x.to_string()))
                    .chain(secs.map(|x| x.to_string()))
                    .collect()
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().task {
        Task::Run { serve_flags } => run(&serve_flags),
        Task::Test => test(),
        Task::Bench { bench } => self::bench(bench),
        Task::Image { agent, out } => image(agent, out),
        Task::Manifests => xtask::manifests::write(&workspace_root()),
        Task::VmTest(options) => vm::run(options),
        Task::Soak { cycles } => self::bench(Some(Bench::Soak { cycles })),
        Task::Fuzz(options) => fuzz::run(&options),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
