//! `agent volume create|ls|rm`: the store's named volumes.

use super::state_dir::StateDir;
use crate::runtime::volumes;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct VolumeArgs {
    #[command(subcommand)]
    command: VolumeCommand,
}

impl VolumeArgs {
    /// `volume ls` only prints what it reads.
    pub fn only_reads(&self) -> bool {
        matches!(self.command, VolumeCommand::Ls { .. })
    }
}

#[derive(Debug, Subcommand)]
enum VolumeCommand {
    /// Create an empty named volume (launch -v NAME:CTR also makes one).
    Create {
        #[command(flatten)]
        state: StateDir,
        /// Volume name: [a-zA-Z0-9][a-zA-Z0-9_.-]+.
        name: String,
    },
    /// List named volumes.
    Ls {
        #[command(flatten)]
        state: StateDir,
    },
    /// Remove named volumes and their data (refused while a container uses one).
    Rm {
        #[command(flatten)]
        state: StateDir,
        /// Volume names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub fn run(args: VolumeArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        VolumeCommand::Create { state, name } => {
            volumes::create(&state.open()?, &name)?;
            println!("{name}");
        }
        VolumeCommand::Ls { state } => {
            let list = volumes::list(&state.open()?)?;
            println!("{:<32} {:<24} MOUNTPOINT", "VOLUME NAME", "USED BY");
            for v in list {
                let used = if v.used_by.is_empty() {
                    "-".to_string()
                } else {
                    v.used_by.join(",")
                };
                println!("{:<32} {:<24} {}", v.name, used, v.mountpoint.display());
            }
        }
        VolumeCommand::Rm { state, names } => {
            let paths = state.open()?;
            for n in &names {
                volumes::remove(&paths, n)?;
                println!("{n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
