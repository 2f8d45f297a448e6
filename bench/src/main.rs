//! `agent-bench`: the benchmarks behind `cargo xtask bench`, kept out of xtask so
//! that building xtask never builds the agent (and its eBPF objects) before
//! xtask has installed the toolchain.
//!
//! - `agent-bench scrape [N…]`: the scrape path over N real cgroups.
//! - `agent-bench exec`: what eBPF exec and mount tracing cost.
//! - `agent-bench fs-usage [LAYERS FILES]`: the writable-layer walker's CPU.
//! - `agent-bench launch`: `agent launch --rm` side by side with `runc run`.
//! - `agent-bench ui [N]`: what the web UI costs (scrape p50, RSS with history for
//!   N containers, idle CPU), against `--no-web-ui` in the same run.
//! - `agent-bench pull`: `agent pull` side by side with `skopeo copy` from a local registry.
//! - `agent-bench soak [CYCLES]`: launch/rm cycles under a scraping Prometheus;
//!   what grew (`cargo xtask soak`).
//! - `agent-bench fleet [K] [N] [SECS]`: K agents over synthetic trees of N
//!   containers under one real Prometheus.
//!
//! Run through `cargo xtask bench …`, which builds the release agent first and
//! passes its path in `AGENT_BIN`.

mod exec;
mod fleet;
mod fs_usage;
mod launch;
mod pull;
mod scrape;
mod soak;
mod syscall_cost;
mod ui;

use std::path::PathBuf;

/// The release `agent` binary that `cargo xtask bench` built (`AGENT_BIN`).
fn agent_binary() -> anyhow::Result<PathBuf> {
    std::env::var_os("AGENT_BIN")
        .map(PathBuf::from)
        .ok_or_else(|| {
            anyhow::anyhow!("AGENT_BIN is not set: run this through `cargo xtask bench`")
        })
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("scrape") => scrape::run(&args[1..]),
        Some("exec") => exec::run(),
        Some("fs-usage") => fs_usage::run(&args[1..]),
        Some("launch") => launch::run(),
        Some("pull") => pull::run(),
        Some("soak") => soak::run(&args[1..]),
        Some("ui") => ui::run(&args[1..]),
        Some("fleet") => fleet::run(&args[1..]),
        _ => Err(anyhow::anyhow!(
            "usage: agent-bench <scrape [N…] | exec | fs-usage [LAYERS FILES] | launch | pull | ui [N] | soak [CYCLES] | fleet [K] [N] [SECS]>"
        )),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
