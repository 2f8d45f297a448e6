//! Builds the privileged test binaries and the agent binary they run, with the same
//! profile as `cargo test` (so `cargo xtask test` and `vm-test` share one build), and
//! finds their paths in cargo's JSON messages.

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What the guest runs.
pub struct Built {
    /// (test target name, executable)
    pub tests: Vec<(String, PathBuf)>,
    /// The `agent` executable the tests find through `CARGO_BIN_EXE_agent`.
    pub agent: PathBuf,
    /// The package directory `cargo test` runs tests in.
    pub workdir: PathBuf,
}

pub fn build(tests: &[&str]) -> anyhow::Result<Built> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .args(["-p", "agent"]);
    for t in tests {
        cmd.args(["--test", t]);
    }
    eprintln!(
        "xtask: vm: cargo test --no-run -p agent --test {}",
        tests.join(" --test ")
    );
    let out = cmd
        .current_dir(crate::workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed ({})", out.status);
    }

    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let mut agent = None;
    let mut workdir = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        let kinds = msg["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let is = |k: &str| kinds.iter().any(|v| v == k);
        if is("test") && tests.contains(&name) {
            found.push((name.to_string(), PathBuf::from(exe)));
            if let Some(manifest) = msg["manifest_path"].as_str() {
                workdir = PathBuf::from(manifest).parent().map(PathBuf::from);
            }
        } else if is("bin") && name == "agent" {
            agent = Some(PathBuf::from(exe));
        }
    }
    // Keep the order of the list, which is the order the guest runs them in.
    let mut ordered = Vec::new();
    for t in tests {
        let (_, path) = found
            .iter()
            .find(|(n, _)| n == t)
            .with_context(|| format!("cargo built no test binary named {t}"))?;
        ordered.push((t.to_string(), path.clone()));
    }
    Ok(Built {
        tests: ordered,
        agent: agent.context("cargo built no agent binary")?,
        workdir: workdir.context("cargo reported no manifest path for the tests")?,
    })
}
