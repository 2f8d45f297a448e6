//! Command line: one file per subcommand, each returning `anyhow::Result`.

mod events;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Node agent: launches containers, reads their cgroup accounting, traces exec and
/// mount events, and serves it all to Prometheus.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon: discover cgroups, serve /metrics and /healthz.
    Serve(serve::ServeArgs),
    /// Stream exec and mount events from the running `agent serve`.
    Events(events::EventsArgs),
}

/// Entry point of the binary: run the subcommand, print errors as one line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Events(args) => events::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agent: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
