mod bench_exec;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["bench", "exec"] => bench_exec::run(),
        _ => anyhow::bail!("usage: cargo xtask bench exec"),
    }
}
