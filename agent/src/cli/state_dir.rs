//! The `--state-dir` option shared by the runtime subcommands.

use crate::runtime::reconcile::reconcile;
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
    /// The store under this root, once its state tells the truth: what a crashed
    /// command left is completed or removed first (see [`reconcile`]), so every
    /// command sees the same containers as `ps`, `inspect` and the metrics.
    pub fn open(&self) -> anyhow::Result<Paths> {
        let paths = Paths::new(&self.state_dir);
        reconcile(&paths)?;
        Ok(paths)
    }
}
