//! The OCI runtime command line, runc's argv exactly as dockerd and
//! containerd's runc shim (`containerd-shim-runc-v2`, `BinaryName`) call it:
//!
//! ```text
//! agent-runc [--root R] [--log L] [--log-format text|json] [--systemd-cgroup]
//!            create --bundle B [--pid-file P] [--console-socket S] ID
//!            start ID | state ID | kill [--all] ID [SIGNAL] | delete [--force] ID
//!            exec --process F [--detach] [--pid-file P] [--console-socket S] ID
//!            ps [--format table|json] ID | pause ID | resume ID | features
//! ```
//!
//! Reached as `agent-runc` (a symbolic link to the agent binary: the callers
//! run one path with no subcommand of ours in front, and runc's `exec`, `kill`
//! and `ps` would otherwise clash with the agent's own) or as `agent oci …`.
//! Errors are one line as runc writes them: `time=… level=error msg=…` on
//! stderr, or with `--log` a line of `--log-format` in that file (the shim
//! reads the last one back into its error) and the bare message on stderr.

use super::state_dir::StateDir;
use crate::runtime::Error;
use crate::runtime::oci_runtime::{self, Caller, CreateRequest, ExecRequest};
use crate::runtime::units::Signal;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The name the callers invoke the agent by.
pub const PROGRAM: &str = "agent-runc";

/// `agent oci ARGS…`: the same command line after `oci`.
#[derive(Debug, Args)]
pub struct OciArgs {
    /// runc's arguments: `--root R create --bundle B ID`, `state ID`, … (see
    /// `agent oci --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// The agent as an OCI runtime (runc's command line).
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version)]
struct OciCli {
    /// The caller's state root: a namespace for container ids (the state
    /// itself lives in the agent's store, --state-dir).
    #[arg(long, default_value = "/run/agent-runc")]
    root: PathBuf,
    /// Where errors are logged (the bare message still goes to stderr).
    #[arg(long)]
    log: Option<PathBuf>,
    /// `text` or `json`.
    #[arg(long = "log-format", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Refused: the agent makes cgroupfs cgroups under /agent.
    #[arg(long = "systemd-cgroup")]
    systemd_cgroup: bool,
    /// Accepted, no effect.
    #[arg(long)]
    debug: bool,
    #[command(flatten)]
    state: StateDir,
    #[command(subcommand)]
    command: OciCommand,
}

#[derive(Debug, Subcommand)]
enum OciCommand {
    /// Create a container from a bundle, waiting before its program.
    Create {
        /// The bundle directory.
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        /// Write the container's first pid here.
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// Send the terminal's master to this unix socket.
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        /// Accepted, no effect (the agent always pivots).
        #[arg(long = "no-pivot")]
        no_pivot: bool,
        /// Accepted, no effect (the agent makes no session keyring).
        #[arg(long = "no-new-keyring")]
        no_new_keyring: bool,
        id: String,
    },
    /// Release a created container into its program.
    Start { id: String },
    /// Print the container's state JSON.
    State { id: String },
    /// Send a signal to the container's first process (all its processes with --all).
    Kill {
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        #[arg(default_value = "TERM")]
        signal: Signal,
    },
    /// Delete a container (--force: a running one too).
    Delete {
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// Run a process in a running container.
    Exec {
        /// The process JSON (the spec's `process`).
        #[arg(long, short = 'p')]
        process: PathBuf,
        /// Return once it runs.
        #[arg(long, short = 'd')]
        detach: bool,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        id: String,
    },
    /// List the container's processes.
    Ps {
        /// `table` or `json`.
        #[arg(long, short = 'f', default_value = "table", value_parser = ["table", "json"])]
        format: String,
        id: String,
    },
    /// Freeze every process of the container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Print what this runtime implements (JSON).
    Features,
}

impl OciCommand {
    fn name(&self) -> &'static str {
        match self {
            OciCommand::Create { .. } => "create",
            OciCommand::Start { .. } => "start",
            OciCommand::State { .. } => "state",
            OciCommand::Kill { .. } => "kill",
            OciCommand::Delete { .. } => "delete",
            OciCommand::Exec { .. } => "exec",
            OciCommand::Ps { .. } => "ps",
            OciCommand::Pause { .. } => "pause",
            OciCommand::Resume { .. } => "resume",
            OciCommand::Features => "features",
        }
    }
}

/// `agent oci ARGS…`.
pub fn run(args: OciArgs) -> anyhow::Result<ExitCode> {
    let mut argv = vec![OsString::from(PROGRAM)];
    argv.extend(args.args);
    Ok(main(argv))
}

/// Whether the binary was invoked as `agent-runc`.
pub fn invoked_as_runtime(argv0: Option<&OsString>) -> bool {
    argv0
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == PROGRAM)
}

/// Entry point of `agent-runc`.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    let cli = match OciCli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default().trim().to_string();
            eprintln!("{PROGRAM}: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let log = Log {
        file: cli.log.clone(),
        json: cli.log_format == "json",
    };
    let verb = cli.command.name();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // runc's prefixes: its create's own, and exec's.
            let msg = match verb {
                "create" => format!("{PROGRAM} create failed: {e}"),
                "exec" => format!("exec failed: {e}"),
                _ => e.to_string(),
            };
            log.error(&msg);
            match e {
                Error::Exec { code, .. } => ExitCode::from(code.clamp(1, 255) as u8),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Where errors go, as runc's logrus writes them.
struct Log {
    file: Option<PathBuf>,
    json: bool,
}

impl Log {
    fn error(&self, msg: &str) {
        let time = crate::runtime::logs::rfc3339_nanos(std::time::SystemTime::now());
        let text = format!(
            "time={} level=error msg={}",
            serde_json::Value::from(time.clone()),
            serde_json::Value::from(msg)
        );
        let Some(path) = &self.file else {
            eprintln!("{text}");
            return;
        };
        eprintln!("{msg}");
        let line = if self.json {
            serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
        } else {
            text
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn dispatch(cli: OciCli) -> Result<ExitCode, Error> {
    if cli.systemd_cgroup {
        return Err(Error::Invalid(
            "--systemd-cgroup is not supported: the agent manages cgroupfs cgroups under /agent \
             (configure the caller for cgroupfs: dockerd --exec-opt native.cgroupdriver=cgroupfs, \
             containerd SystemdCgroup = false)"
                .into(),
        ));
    }
    let paths = cli
        .state
        .open()
        .map_err(|e| Error::Invalid(super::one_line(&e)))?;
    let caller = |id: String| Caller {
        root: cli.root.clone(),
        id,
    };
    match cli.command {
        OciCommand::Create {
            bundle,
            pid_file,
            console_socket,
            id,
            ..
        } => {
            oci_runtime::create(
                &paths,
                &CreateRequest {
                    caller: caller(id),
                    bundle,
                    pid_file,
                    console_socket,
                },
            )?;
        }
        OciCommand::Start { id } => {
            oci_runtime::start(&paths, &caller(id))?;
        }
        OciCommand::State { id } => {
            let st = caller(id).load(&paths)?;
            let json = serde_json::to_string_pretty(&oci_runtime::oci_state(&st))
                .map_err(|e| Error::Invalid(e.to_string()))?;
            print!("{json}");
        }
        OciCommand::Kill { all, id, signal } => {
            oci_runtime::kill(&paths, &caller(id), signal.0, all)?;
        }
        OciCommand::Delete { force, id } => {
            oci_runtime::delete(&paths, &caller(id), force)?;
        }
        OciCommand::Exec {
            process,
            detach,
            pid_file,
            console_socket,
            id,
        } => {
            let code = oci_runtime::exec(
                &paths,
                &ExecRequest {
                    caller: caller(id),
                    process,
                    detach,
                    pid_file,
                    console_socket,
                },
            )?;
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        OciCommand::Ps { format, id } => {
            let pids = oci_runtime::pids(&paths, &caller(id))?;
            if format == "json" {
                println!("{}", serde_json::Value::from(pids));
            } else {
                println!("PID");
                for pid in pids {
                    println!("{pid}");
                }
            }
        }
        OciCommand::Pause { id } => oci_runtime::pause(&paths, &caller(id), true)?,
        OciCommand::Resume { id } => oci_runtime::pause(&paths, &caller(id), false)?,
        OciCommand::Features => {
            let json = serde_json::to_string_pretty(&oci_runtime::features())
                .map_err(|e| Error::Invalid(e.to_string()))?;
            println!("{json}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
