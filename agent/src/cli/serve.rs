//! `agent serve`: the node daemon.

use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ServeArgs {}

pub fn run(_args: ServeArgs) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
