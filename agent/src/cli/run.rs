//! `agent run --bundle DIR`: run a foreign OCI bundle exactly as its spec says.

use super::state_dir::StateDir;
use crate::runtime::bundle::BundleOptions;
use crate::runtime::supervisor;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    state: StateDir,
    /// The bundle: a directory with config.json and the rootfs it names.
    #[arg(long, short = 'b')]
    bundle: PathBuf,
    /// Container name (unique).
    #[arg(long)]
    name: Option<String>,
    /// Run in the background; output goes to `agent logs`.
    #[arg(long, short = 'd')]
    detach: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let opts = BundleOptions {
        bundle: args.bundle,
        name: args.name,
        detach: args.detach,
    };
    Ok(super::launch::report(supervisor::run_bundle(
        &args.state.open()?,
        &opts,
    )?))
}
