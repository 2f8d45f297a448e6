//! The `agent` binary: parses the command line and hands off to one file per subcommand.

fn main() -> std::process::ExitCode {
    agent::cli::main()
}
