//! `agent ps`: list containers.

use super::state_dir::StateDir;
use crate::runtime::now_unix;
use crate::runtime::state::{self, ContainerState, Status};
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct PsArgs {
    #[command(flatten)]
    state: StateDir,
    /// Show all containers (default: running only).
    #[arg(long, short = 'a')]
    all: bool,
    /// Print only the ids.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn ago(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s} seconds"),
        60..=3599 => format!("{} minutes", s / 60),
        3600..=86399 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

fn status(c: &ContainerState, now: f64) -> String {
    match c.status {
        Status::Running if c.is_running() => {
            format!("Up {}", ago(now - c.started_at.unwrap_or(now)))
        }
        Status::Restarting if c.supervisor_alive() => format!(
            "Restarting ({}) {} ago",
            c.exit_code.unwrap_or(-1),
            ago(now - c.finished_at.unwrap_or(now))
        ),
        Status::Running | Status::Restarting | Status::Dead => "Dead (supervisor gone)".into(),
        Status::Created => "Created".into(),
        Status::Exited => format!(
            "Exited ({}){} {} ago",
            c.exit_code.unwrap_or(-1),
            if c.oom_killed { " OOMKilled" } else { "" },
            ago(now - c.finished_at.unwrap_or(now))
        ),
    }
}

pub fn run(args: PsArgs) -> anyhow::Result<ExitCode> {
    let now = now_unix();
    let list: Vec<_> = state::list(args.state.open()?.root())?
        .into_iter()
        .filter(|c| args.all || c.is_running())
        .collect();
    if args.quiet {
        for c in &list {
            println!("{}", c.short_id());
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12}  {:<20}  {:<20}  {:<24}  {:<28}  CREATED",
        "CONTAINER ID", "NAME", "IMAGE", "COMMAND", "STATUS"
    );
    for c in &list {
        let mut cmd = c.command.join(" ");
        if cmd.chars().count() > 24 {
            cmd = cmd.chars().take(21).collect::<String>() + "...";
        }
        println!(
            "{:<12}  {:<20}  {:<20}  {:<24}  {:<28}  {} ago",
            c.short_id(),
            c.name,
            c.image,
            format!("{cmd:?}"),
            status(c, now),
            ago(now - c.created_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}
