//! `agent kill`: send a signal to a container's PID 1.

use super::state_dir::StateDir;
use crate::runtime::lifecycle;
use crate::runtime::units::Signal;
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    state: StateDir,
    /// Signal name or number.
    #[arg(long, short = 's', default_value = "KILL")]
    signal: Signal,
    /// Container ids, id prefixes or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(args: KillArgs) -> anyhow::Result<ExitCode> {
    let Signal(sig) = args.signal;
    let paths = args.state.open()?;
    for c in &args.containers {
        lifecycle::kill(&paths, c, sig)?;
        println!("{c}");
    }
    Ok(ExitCode::SUCCESS)
}
