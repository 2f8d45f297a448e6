//! `agent inspect`: everything known about a container, as JSON.

use super::state_dir::StateDir;
use crate::runtime::{inspect, state};
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    state: StateDir,
    /// Container id, id prefix or name.
    container: String,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let paths = args.state.open()?;
    let st = state::find(&paths, &args.container)?;
    let doc = inspect::document(&paths, &st)?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}
