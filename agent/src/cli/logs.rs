//! `agent logs`: output of a detached container.

use super::state_dir::StateDir;
use crate::runtime::supervisor;
use anyhow::Context;
use clap::Args;
use std::io::{Read, Seek, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    state: StateDir,
    /// Keep printing new output until the container exits.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Container id, id prefix or name.
    container: String,
}

pub fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let paths = args.state.open()?;
    let (st, path) = supervisor::log_path(&paths, &args.container)?;
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        file.read_to_end(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        out.write_all(&buf)?;
        out.flush()?;
        if !args.follow {
            break;
        }
        let running = crate::runtime::state::load(&paths, &st.id)
            .map(|s| s.is_running())
            .unwrap_or(false);
        if !running && buf.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        file.stream_position()?;
    }
    Ok(ExitCode::SUCCESS)
}
