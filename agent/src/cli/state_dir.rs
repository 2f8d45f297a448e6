//! The `--state-dir` option shared by the runtime subcommands.

use crate::runtime::{DEFAULT_STATE_DIR, Paths};
use clap::Args;
use std::path::PathBuf;

/// Where images, layers and containers live.
#[derive(Debug, Clone, Args)]
pub struct StateDir {
    /// State root (images, overlay2 layers, containers).
    #[arg(long = "state-dir", env = "AGENT_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

impl StateDir {
    /// The store paths under this root.
    pub fn paths(&self) -> Paths {
        Paths::new(&self.state_dir)
    }
}
