//! `cargo xtask bench exec --vm`: `agent-bench exec` in the guest, on the stock
//! Debian kernel, where fexit (and fentry) attach, so the mount hook's cheapest
//! kind is measured where it is live. The guest runs the bench as init.sh runs a
//! test binary (between BEGIN and END lines); its output comes back from the console.

use super::{CONTROLLERS, Guest, results};
use anyhow::{Context, bail};
use std::path::Path;
use std::time::Duration;

/// The bench's sizes in the guest, unless the caller's environment sets them:
/// under TCG a fork+exec costs milliseconds, so the exec loops are smaller; the
/// getppid loop keeps enough rounds for a confidence interval.
const GUEST_SIZES: &[(&str, &str)] = &[
    ("AGENT_BENCH_EXECS", "600"),
    ("AGENT_BENCH_SYSCALLS", "2000000"),
    ("AGENT_BENCH_SYSCALL_ROUNDS", "20"),
];

/// What the guest printed.
pub struct GuestBench {
    /// The bench's own output (stdout and stderr, as the console carried it).
    pub output: String,
    /// `HOOK` lines: which hook kinds the guest kernel allowed.
    pub hooks: Vec<String>,
    pub booted: Option<String>,
}

/// Boots the guest and runs `agent_bench exec` in it.
pub fn exec(agent_bench: &Path, timeout: Duration) -> anyhow::Result<GuestBench> {
    let mut guest = Guest::prepare("test", CONTROLLERS)?;
    guest.fs.add_executable(agent_bench, true)?;
    let mut plan = format!(
        "TEST_TIMEOUT={}\nTEST_ARGS=\"exec\"\nWORKDIR=\"/tmp\"\nTESTS=\"bench_exec={}\"\n",
        timeout.as_secs(),
        agent_bench.display()
    );
    for (name, default) in GUEST_SIZES {
        let value = std::env::var(name).unwrap_or_else(|_| (*default).to_owned());
        if value.parse::<u64>().is_err() {
            bail!("{name}={value:?} is not a number");
        }
        plan.push_str(&format!("{name}={value}\n"));
    }
    guest.plan.push_str(&plan);
    let (outcome, log) = guest.boot(2048, 2, None, timeout + Duration::from_secs(120))?;
    let report = results::parse(&outcome.console);
    if let Some(f) = &report.fatal {
        bail!("guest init failed: {f} (console log {})", log.display());
    }
    let output = between(
        &outcome.console,
        "@@VMTEST BEGIN bench_exec",
        "@@VMTEST END ",
    );
    match report.binaries.iter().find(|b| b.name == "bench_exec") {
        Some(b) if b.rc == Some(0) => {}
        Some(b) => bail!(
            "agent-bench exec in the guest: {} (console log {})",
            b.rc.map_or("no result".to_owned(), |rc| format!("exit status {rc}")),
            log.display()
        ),
        None => bail!(
            "agent-bench exec never started in the guest (console log {})",
            log.display()
        ),
    }
    Ok(GuestBench {
        output: output.context("no bench output on the console")?,
        hooks: report.hooks,
        booted: report.booted,
    })
}

/// The console lines after the one starting with `begin`, up to the one starting with `end`.
fn between(console: &str, begin: &str, end: &str) -> Option<String> {
    let mut lines = console.lines().skip_while(|l| !l.starts_with(begin));
    lines.next()?;
    Some(
        lines
            .take_while(|l| !l.starts_with(end))
            .map(|l| format!("{l}\n"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn between_begin_and_end() {
        let console = "boot\n@@VMTEST BEGIN bench_exec\na\nexec-summary {}\n@@VMTEST END bench_exec rc=0\n@@VMTEST DONE\n";
        assert_eq!(
            super::between(console, "@@VMTEST BEGIN bench_exec", "@@VMTEST END ").as_deref(),
            Some("a\nexec-summary {}\n")
        );
        assert_eq!(
            super::between("x\n", "@@VMTEST BEGIN", "@@VMTEST END "),
            None
        );
    }
}
