//! `agent rm`: remove containers (their layer, cgroup and state).

use super::state_dir::StateDir;
use crate::runtime::lifecycle;
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct RmArgs {
    #[command(flatten)]
    state: StateDir,
    /// Kill a running container first.
    #[arg(long, short = 'f')]
    force: bool,
    /// Container ids, id prefixes or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn run(args: RmArgs) -> anyhow::Result<ExitCode> {
    let paths = args.state.open()?;
    for c in &args.containers {
        lifecycle::remove(&paths, c, args.force)?;
        println!("{c}");
    }
    Ok(ExitCode::SUCCESS)
}
