//! `cargo xtask`: build helpers and benchmarks.
//!
//! - `cargo xtask bench launch`: `agent launch` against `runc run`.

mod bench_launch;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["bench", "launch"] => bench_launch::run(),
        _ => Err(anyhow::anyhow!("usage: cargo xtask bench launch")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
