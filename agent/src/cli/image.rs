//! `agent image import|ls|rm`: the image store.

use super::state_dir::StateDir;
use crate::runtime::image;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

impl ImageArgs {
    /// `image ls` only prints what it reads.
    pub fn only_reads(&self) -> bool {
        matches!(self.command, ImageCommand::Ls { .. })
    }
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Import an OCI layout (DIR or DIR:TAG), a docker save / OCI archive, or a
    /// rootfs tarball or directory.
    Import {
        #[command(flatten)]
        state: StateDir,
        /// Name to give the image (default: from the source).
        #[arg(long)]
        name: Option<String>,
        /// Do not print progress.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// What to import.
        path: PathBuf,
    },
    /// List images.
    Ls {
        #[command(flatten)]
        state: StateDir,
    },
    /// Remove an image (refused while a container uses it).
    Rm {
        #[command(flatten)]
        state: StateDir,
        /// Remove the image even when it has several names.
        #[arg(long, short = 'f')]
        force: bool,
        /// Image references or ids.
        #[arg(required = true)]
        images: Vec<String>,
    },
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1}MB", b / 1e6)
    } else {
        format!("{:.1}kB", b / 1e3)
    }
}

pub fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ImageCommand::Import {
            state,
            name,
            quiet,
            path,
        } => {
            let mut progress = |msg: &str| {
                if !quiet {
                    eprintln!("{msg}");
                }
            };
            let rec = image::import(&state.open()?, &path, name.as_deref(), &mut progress)?;
            println!("{} {}", rec.id, rec.names.join(" "));
        }
        ImageCommand::Ls { state } => {
            println!(
                "{:<40}  {:<12}  {:>8}  SIZE",
                "REFERENCE", "IMAGE ID", "LAYERS"
            );
            for rec in image::list(&state.open()?)? {
                let names = if rec.names.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    rec.names.clone()
                };
                for n in names {
                    println!(
                        "{:<40}  {:<12}  {:>8}  {}",
                        n,
                        &rec.hex_id()[..12.min(rec.hex_id().len())],
                        rec.layers.len(),
                        human(rec.size)
                    );
                }
            }
        }
        ImageCommand::Rm {
            state,
            force,
            images,
        } => {
            for i in &images {
                let rec = image::remove(&state.open()?, i, force)?;
                println!("removed {i} ({})", rec.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
