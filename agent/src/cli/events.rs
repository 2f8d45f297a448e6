//! `agent events`: a live stream of exec, mount, exit and OOM-kill events from the running
//! `agent serve`, read over its root-only control socket.

use crate::ebpf::EventKind;
use crate::server::control::{DEFAULT_SOCKET, Notice, Reply, Request};
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events of this container: its id, name, or a prefix of its id.
    #[arg(long)]
    pub container: Option<String>,
    /// Only events of this type.
    #[arg(long = "type", value_enum)]
    pub kind: Option<TypeArg>,
    /// Print JSON lines with every field instead of readable lines.
    #[arg(long)]
    pub json: bool,
    /// The control socket of `agent serve`.
    #[arg(long, env = "AGENT_CONTROL_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TypeArg {
    Exec,
    Mount,
    Exit,
    Oom,
}

pub fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let stream = UnixStream::connect(&args.socket).with_context(|| {
        format!(
            "cannot connect to {} (is `agent serve` running, and are you root?)",
            args.socket.display()
        )
    })?;
    let request = Request::Events {
        container: args.container.clone(),
        kind: args.kind.map(|k| match k {
            TypeArg::Exec => EventKind::Exec,
            TypeArg::Mount => EventKind::Mount,
            TypeArg::Exit => EventKind::Exit,
            TypeArg::Oom => EventKind::Oom,
        }),
    };
    let mut line = serde_json::to_string(&request)?;
    line.push('\n');
    (&stream)
        .write_all(line.as_bytes())
        .with_context(|| format!("cannot write to {}", args.socket.display()))?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in BufReader::new(&stream).lines() {
        let line = line.with_context(|| format!("reading {}", args.socket.display()))?;
        let reply =
            Reply::parse(&line).with_context(|| format!("bad line from the agent: {line}"))?;
        let printed = match reply {
            Reply::Error { error } => bail!("{error}"),
            Reply::Notice {
                notice: Notice::Lagged,
                missed,
            } => writeln!(
                std::io::stderr(),
                "agent events: fell behind, {missed} events skipped"
            ),
            Reply::Event(_) if args.json => writeln!(out, "{line}"),
            Reply::Event(record) => writeln!(out, "{record}"),
        };
        match printed.and_then(|()| out.flush()) {
            Ok(()) => {}
            // `agent events | head`: the reader is gone, so are we.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
