//! `cargo xtask bench exec [--vm]`: `agent-bench exec` on this host, and with
//! `--vm` in the VM rig's guest too (stock Debian kernel, where fexit attaches),
//! then the getppid results of both side by side: which mount hook was live, the
//! per-syscall cost with and without it, and the spread over the rounds.

use anyhow::{Context, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SUMMARY: &str = "exec-summary ";

pub fn run(agent_bench: &Path, agent: &Path, vm: bool) -> anyhow::Result<()> {
    let host_load = host_uptime();
    eprintln!("xtask: bench exec on this host ({host_load})");
    let host = host_run(agent_bench, agent)?;
    if !vm {
        return Ok(());
    }
    eprintln!("xtask: bench exec in the VM rig (host {})", host_uptime());
    let guest = crate::vm::bench::exec(agent_bench, Duration::from_secs(1800))?;
    let guest_summary = summary_of(&guest.output).context("the guest's bench output")?;
    println!();
    println!("bench exec, getppid: this host against the VM rig (host {host_load} before)");
    if let Some(b) = &guest.booted {
        println!("  guest: {b}, qemu TCG (emulated: absolute ns are not comparable, ratios are)");
    }
    for h in guest.hooks.iter().filter(|h| h.starts_with("attach-")) {
        println!("  guest hook probe: {h}");
    }
    print!(
        "{}",
        side_by_side(&[("host", &host), ("VM", &guest_summary)])
    );
    Ok(())
}

/// Runs `agent-bench exec` with its output shown as it comes; returns its summary.
fn host_run(agent_bench: &Path, agent: &Path) -> anyhow::Result<Value> {
    let mut child = Command::new(agent_bench)
        .arg("exec")
        .env("AGENT_BIN", agent)
        .stdout(Stdio::piped())
        .spawn()
        .context("running agent-bench")?;
    let stdout = child.stdout.take().context("agent-bench stdout")?;
    let mut output = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading agent-bench's output")?;
        println!("{line}");
        output.push_str(&line);
        output.push('\n');
    }
    let status = child.wait().context("waiting for agent-bench")?;
    if !status.success() {
        bail!("bench exec failed ({status})");
    }
    summary_of(&output)
}

fn summary_of(output: &str) -> anyhow::Result<Value> {
    let line = output
        .lines()
        .rev()
        .find_map(|l| l.trim_end().strip_prefix(SUMMARY))
        .context("no exec-summary line")?;
    serde_json::from_str(line).context("the exec-summary line is not JSON")
}

/// `up 6:19, load average: 15.17, 12.04, 5.90` from /proc.
fn host_uptime() -> String {
    let up = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("?".to_owned(), |s| {
            let m = (s / 60.0) as u64;
            format!("{}:{:02}", m / 60, m % 60)
        });
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "?".to_owned());
    format!("up {up}, load average: {load}")
}

/// The table: one column per run.
fn side_by_side(runs: &[(&str, &Value)]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&Value) -> String| {
        rows.push((label.to_owned(), runs.iter().map(|(_, v)| f(v)).collect()));
    };
    row("kernel", &|v| {
        v["kernel"].as_str().unwrap_or("?").to_owned()
    });
    row("load average before → after", &|v| {
        format!(
            "{} → {}",
            v["loadavg_before"].as_str().unwrap_or("?"),
            v["loadavg_after"].as_str().unwrap_or("?")
        )
    });
    row("rounds × calls", &|v| {
        format!("{} × {}", v["rounds"], v["calls_per_round"])
    });
    row("mount hook live (cheapest)", &|v| {
        setup(v, "mount")["mount_hook"]
            .as_str()
            .unwrap_or("?")
            .to_owned()
    });
    for (key, label) in [
        ("none", "no tracing"),
        ("exec", "exec hooks, no mount hook"),
        ("mount", "+ mount hook (cheapest)"),
        ("sys_exit", "+ mount hook on sys_exit"),
    ] {
        row(&format!("{label}, ns/call"), &|v| {
            let s = &setup(v, key)["ns_per_call"];
            format!(
                "{:.1} (sd {:.1}, {:.1}-{:.1})",
                num(&s["median"]),
                num(&s["sd"]),
                num(&s["min"]),
                num(&s["max"])
            )
        });
    }
    for (key, label) in [
        ("none", "no tracing"),
        ("exec", "exec hooks, no mount hook"),
        ("mount", "+ mount hook (cheapest)"),
        ("sys_exit", "+ mount hook on sys_exit"),
    ] {
        row(&format!("{label}, best batch ns/call"), &|v| {
            format!("{:.1}", num(&setup(v, key)["best_batch"]["median"]))
        });
    }
    // Each cost over the rounds' means, then over their best batches.
    for (field, base_field, suffix) in [
        ("ns", "ns_per_call", ""),
        ("best_batch", "best_batch", " (best batch)"),
    ] {
        for (what, label) in [
            ("A/A noise", "A/A noise: exec - none"),
            ("mount hook (cheapest)", "mount hook (cheapest) - exec"),
            ("mount hook on sys_exit", "mount hook on sys_exit - exec"),
            ("cheapest against sys_exit", "cheapest - sys_exit"),
        ] {
            row(&format!("{label}{suffix}"), &|v| {
                let Some(c) = v["costs"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["what"] == what))
                else {
                    return "?".to_owned();
                };
                let base = num(&setup(v, "none")[base_field]["median"]);
                let (mean, ci95) = (num(&c[field]["mean"]), num(&c[field]["ci95"]));
                format!(
                    "{mean:+.1} ± {ci95:.1} ns ({:+.1}%) {}",
                    if base > 0.0 { 100.0 * mean / base } else { 0.0 },
                    if mean.abs() <= ci95 {
                        "within noise"
                    } else {
                        "measurable"
                    }
                )
            });
        }
    }
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let col = rows
        .iter()
        .flat_map(|(_, cells)| cells.first())
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0)
        .max(runs.first().map_or(0, |(n, _)| n.len()));
    let mut out = format!("  {:<width$}  {:<col$}", "", runs[0].0);
    for (name, _) in &runs[1..] {
        out.push_str(&format!("  {name}"));
    }
    out.push('\n');
    for (label, cells) in rows {
        out.push_str(&format!("  {label:<width$}"));
        for (i, c) in cells.iter().enumerate() {
            if i + 1 < cells.len() {
                out.push_str(&format!("  {c:<col$}"));
            } else {
                out.push_str(&format!("  {c}"));
            }
        }
        out.push('\n');
    }
    out.push_str(
        "  (± is the 95% confidence interval of the mean paired difference over the rounds;\n   \
         within noise: the interval holds 0)\n",
    );
    out
}

fn setup<'a>(v: &'a Value, key: &str) -> &'a Value {
    v["setups"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["key"] == key))
        .unwrap_or(&Value::Null)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn summary(mount_hook: &str, cheapest: f64) -> serde_json::Value {
        let spread = |m: f64| json!({"mean": m, "sd": 1.0, "median": m, "min": m - 1.0, "max": m + 1.0, "ci95": 0.5});
        let best =
            |m: f64| json!({"mean": m, "sd": 0.2, "median": m, "min": m, "max": m, "ci95": 0.1});
        json!({
            "kernel": "6.1.0-test", "loadavg_before": "1 1 1", "loadavg_after": "2 2 2",
            "rounds": 20, "calls_per_round": 1000,
            "setups": [
                {"key": "none", "mount_hook": "", "ns_per_call": spread(100.0), "best_batch": best(90.0)},
                {"key": "exec", "mount_hook": "", "ns_per_call": spread(100.0), "best_batch": best(90.0)},
                {"key": "mount", "mount_hook": mount_hook, "ns_per_call": spread(100.0 + cheapest), "best_batch": best(90.0 + cheapest)},
                {"key": "sys_exit", "mount_hook": "tp_btf/sys_exit", "ns_per_call": spread(200.0), "best_batch": best(190.0)},
            ],
            "costs": [
                {"what": "A/A noise", "ns": spread(0.1), "best_batch": best(0.05)},
                {"what": "mount hook (cheapest)", "ns": spread(cheapest), "best_batch": best(cheapest)},
                {"what": "mount hook on sys_exit", "ns": spread(100.0), "best_batch": best(100.0)},
                {"what": "cheapest against sys_exit", "ns": spread(cheapest - 100.0), "best_batch": best(cheapest - 100.0)},
            ],
        })
    }

    #[test]
    fn table_names_the_hooks_and_costs_of_both_runs() {
        let host = summary("tp_btf/sys_exit", 100.0);
        let vm = summary("fexit/mount_syscalls", 0.2);
        let out = super::side_by_side(&[("host", &host), ("VM", &vm)]);
        let line = |label: &str| {
            out.lines()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("no {label} row in\n{out}"))
                .to_owned()
        };
        let hooks = line("mount hook live");
        assert!(
            hooks.contains("tp_btf/sys_exit") && hooks.contains("fexit/mount_syscalls"),
            "{out}"
        );
        let cost = line("mount hook (cheapest) - exec");
        assert!(
            cost.contains("+100.0 ± 0.5 ns (+100.0%) measurable"),
            "{out}"
        );
        assert!(cost.contains("+0.2 ± 0.5 ns (+0.2%) within noise"), "{out}");
        let best = line("mount hook (cheapest) - exec (best batch)");
        assert!(
            best.contains("+100.0 ± 0.1 ns (+111.1%) measurable")
                && best.contains("+0.2 ± 0.1 ns (+0.2%) measurable"),
            "{out}"
        );
        assert!(line("no tracing, best batch").contains("90.0"), "{out}");
        assert!(
            line("no tracing").contains("100.0 (sd 1.0, 99.0-101.0)"),
            "{out}"
        );
    }

    #[test]
    fn summary_is_the_last_summary_line() {
        let out = "x\nexec-summary {\"a\": 1}\nexec-summary {\"a\": 2}\r\ny\n";
        assert_eq!(super::summary_of(out).unwrap()["a"], 2);
        assert!(super::summary_of("nothing\n").is_err());
    }
}
