//! `agent logs`: output of a detached container.

use super::state_dir::StateDir;
use crate::runtime::{lifecycle, logs, state};
use anyhow::Context;
use clap::Args;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    state: StateDir,
    /// Keep printing new output until the container exits.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Start each line with the time it was written (RFC 3339, UTC).
    #[arg(long, short = 't')]
    timestamps: bool,
    /// Container id, id prefix or name.
    container: String,
}

pub fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let paths = args.state.open()?;
    let (st, path) = lifecycle::log_path(&paths, &args.container)?;
    if args.timestamps && !st.log_timestamps {
        anyhow::bail!(
            "the log of {} has no timestamps (started by an older agent)",
            st.name
        );
    }
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    // Bytes of a line not yet complete (a later read ends it).
    let mut partial: Vec<u8> = Vec::new();
    let mut emit = |data: &[u8], out: &mut dyn Write, last: bool| -> std::io::Result<()> {
        if !st.log_timestamps {
            return out.write_all(data);
        }
        partial.extend_from_slice(data);
        let end = if last {
            partial.len()
        } else {
            partial
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1)
        };
        for line in partial[..end].split_inclusive(|b| *b == b'\n') {
            let (ts, content) = logs::split_line(line);
            if args.timestamps
                && let Some(ts) = ts
            {
                out.write_all(ts)?;
                out.write_all(b" ")?;
            }
            out.write_all(content)?;
        }
        partial.drain(..end);
        Ok(())
    };
    loop {
        buf.clear();
        file.read_to_end(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        let running = args.follow
            && state::load(&paths, &st.id)
                .map(|s| s.is_running() || s.status == state::Status::Restarting)
                .unwrap_or(false);
        let last = !args.follow || (!running && buf.is_empty());
        emit(&buf, &mut out, last)?;
        out.flush()?;
        if last {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ExitCode::SUCCESS)
}
