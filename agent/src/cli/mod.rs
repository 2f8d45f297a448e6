//! Command line: one file per subcommand, each returning `anyhow::Result`.

mod attach;
mod events;
mod exec;
mod image;
mod inspect;
mod kill;
mod launch;
mod logs;
mod oci;
mod ps;
mod pull;
mod rm;
mod run;
pub(crate) mod serve;
mod state_dir;
mod stop;
mod volume;

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
    Serve(Box<serve::ServeArgs>),
    /// Stream exec and mount events from the running `agent serve`.
    Events(events::EventsArgs),
    /// Run a command in a new container from an image.
    Launch(Box<launch::LaunchArgs>),
    /// Run a command in a running container.
    Exec(exec::ExecArgs),
    /// Run an OCI bundle (config.json and its rootfs, as `runc spec` makes them).
    Run(run::RunArgs),
    /// List containers.
    Ps(ps::PsArgs),
    /// Show a container's config, state, namespaces, cgroup and overlay dirs as JSON.
    Inspect(inspect::InspectArgs),
    /// Stop containers: SIGTERM, then SIGKILL after a grace period.
    Stop(stop::StopArgs),
    /// Send a signal to containers.
    Kill(kill::KillArgs),
    /// Remove containers.
    Rm(rm::RmArgs),
    /// Attach this terminal to a detached container (its output, and its input
    /// with -i).
    Attach(attach::AttachArgs),
    /// Print a detached container's output.
    Logs(logs::LogsArgs),
    /// Import, list and remove images.
    Image(image::ImageArgs),
    /// Create, list and remove named volumes.
    Volume(volume::VolumeArgs),
    /// Pull an image from a registry into the store.
    Pull(pull::PullArgs),
    /// The OCI runtime command line (runc's: create, start, state, kill,
    /// delete, exec, ps, pause, resume, features), as `agent-runc` too.
    Oci(oci::OciArgs),
}

impl Command {
    /// Commands that only print what they read: safe to end at any point.
    fn only_reads(&self) -> bool {
        matches!(
            self,
            Command::Events(_) | Command::Ps(_) | Command::Inspect(_) | Command::Logs(_)
        ) || matches!(self, Command::Image(args) if args.only_reads())
            || matches!(self, Command::Volume(args) if args.only_reads())
    }
}

/// `agent ps | head -1`: Rust ignores SIGPIPE, so a closed stdout would make
/// `println!` panic. Commands that only read take the default action instead
/// and end quietly, as `ls` does. Commands that change state (launch, rm,
/// import, serve) keep ignoring it and finish their work.
fn end_quietly_on_closed_stdout() {
    // SAFETY: resetting a signal's disposition to the default has no
    // preconditions; no handler is installed for SIGPIPE anywhere.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Entry point of the binary: run the subcommand, print errors as one line.
pub fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if oci::invoked_as_runtime(argv.first()) {
        return oci::main(argv);
    }
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        // --help and --version go to stdout, whole.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // A malformed flag is one line, like every other error.
            // clap's first paragraph, joined (the usage and hint that follow are dropped).
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("agent: {}", first.join(" "));
            return ExitCode::from(2);
        }
    };
    if cli.command.only_reads() {
        end_quietly_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Events(args) => events::run(args),
        Command::Launch(args) => launch::run(*args),
        Command::Run(args) => run::run(args),
        Command::Exec(args) => exec::run(args),
        Command::Ps(args) => ps::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Stop(args) => stop::run(args),
        Command::Kill(args) => kill::run(args),
        Command::Rm(args) => rm::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Attach(args) => attach::run(args),
        Command::Image(args) => image::run(args),
        Command::Volume(args) => volume::run(args),
        Command::Pull(args) => pull::run(args),
        Command::Oci(args) => oci::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("agent: error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once. The runtime's errors print
/// their cause in their own message and keep it as their source too (so `{:#}` would
/// say it twice); a cause whose text is already on the line is left out. Control
/// characters are escaped (`\n`, `\u{1b}`): messages quote what archives, images
/// and files hold, which must not break the line or reach the terminal raw.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if msg.is_empty() || line.contains(&msg) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&msg);
    }
    if !line.contains(char::is_control) {
        return line;
    }
    let mut escaped = String::with_capacity(line.len());
    for c in line.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::one_line;
    use crate::runtime::{Error, IoContext};

    #[test]
    fn errors_print_each_cause_once() {
        let io = std::fs::read("/no/such/file").at("read", "/no/such/file");
        let err = anyhow::Error::from(io.unwrap_err()).context("importing");
        let line = one_line(&err);
        assert_eq!(
            line,
            "importing: read /no/such/file: No such file or directory (os error 2)"
        );
        let corrupt = Error::Corrupt {
            path: "/x".into(),
            reason: "invalid JSON".into(),
            source: Some(Box::new(std::io::Error::other("line 1"))),
        };
        assert_eq!(
            one_line(&corrupt.into()),
            "corrupt image data /x: invalid JSON: line 1"
        );
    }

    #[test]
    fn control_characters_from_the_input_are_escaped() {
        // Found by the layer_unpack fuzz target: tar quotes a header field of the
        // layer in its error, newlines and terminal escapes included.
        let tar = std::io::Error::other(
            "numeric field was not a number: 1\n2 when getting cksum for \u{1b}[2Jx",
        );
        let err = anyhow::Error::from(tar).context("read layer /l.tar");
        let line = one_line(&err);
        assert_eq!(
            line,
            "read layer /l.tar: numeric field was not a number: 1\\n2 when getting cksum for \\u{1b}[2Jx"
        );
        assert!(!line.contains(char::is_control), "{line}");
    }
}
