//! `agent exec`: run a command in a running container.

use super::state_dir::StateDir;
use crate::runtime::Error;
use crate::runtime::exec::{self, ExecOptions};
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    state: StateDir,
    /// Keep stdin open (with -t: the terminal's input).
    #[arg(long, short = 'i')]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(long, short = 't')]
    tty: bool,
    /// Environment variable KEY=VALUE (or KEY to copy it from here).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// User (name, uid, name:group or uid:gid) from the container's /etc/passwd.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(long, short = 'w')]
    workdir: Option<String>,
    /// Container id, id prefix or name.
    container: String,
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let opts = ExecOptions {
        container: args.container,
        command: args.command,
        env: args.env,
        user: args.user,
        workdir: args.workdir,
        interactive: args.interactive,
        tty: args.tty,
    };
    match exec::exec(&args.state.open()?, &opts) {
        Ok(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        // As docker exec: the reason on one line, 126 or 127 as the exit code.
        Err(Error::Exec { code, message }) => {
            eprintln!("agent: error: {message}");
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Err(e) => Err(e.into()),
    }
}
