//! `agent kill`: send a signal to a container's PID 1.

use super::state_dir::StateDir;
use crate::runtime::supervisor;
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    state: StateDir,
    /// Signal name or number.
    #[arg(long, short = 's', default_value = "KILL")]
    signal: String,
    /// Container ids, id prefixes or names.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Parses `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        anyhow::ensure!((1..=64).contains(&n), "invalid signal number {n}");
        return Ok(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ABRT" => libc::SIGABRT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        _ => anyhow::bail!("unknown signal {s:?}"),
    };
    Ok(n)
}

pub fn run(args: KillArgs) -> anyhow::Result<ExitCode> {
    let sig = parse_signal(&args.signal)?;
    let paths = args.state.paths();
    for c in &args.containers {
        supervisor::kill(&paths, c, sig)?;
        println!("{c}");
    }
    Ok(ExitCode::SUCCESS)
}
