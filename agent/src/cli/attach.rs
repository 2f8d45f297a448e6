//! `agent attach`: this terminal to a detached container's terminal or output.

use super::state_dir::StateDir;
use crate::runtime::attach;
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct AttachArgs {
    #[command(flatten)]
    state: StateDir,
    /// Container id, id prefix or name (started with -d; -i to send input,
    /// -t for a terminal).
    container: String,
}

pub fn run(args: AttachArgs) -> anyhow::Result<ExitCode> {
    let code = attach::attach(&args.state.open()?, &args.container)?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
