//! `agent stop`: SIGTERM, then SIGKILL after a grace period.

use super::state_dir::StateDir;
use crate::runtime::lifecycle;
use clap::Args;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    state: StateDir,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long = "time", short = 't', default_value_t = 10)]
    time: u64,
    /// Container ids, id prefixes or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(args: StopArgs) -> anyhow::Result<ExitCode> {
    let paths = args.state.open()?;
    for c in &args.containers {
        lifecycle::stop(&paths, c, Duration::from_secs(args.time))?;
        println!("{c}");
    }
    Ok(ExitCode::SUCCESS)
}
