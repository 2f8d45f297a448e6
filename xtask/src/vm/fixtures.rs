//! `--capture-fixtures`: the guest writes a tar of the captured cgroup files to a
//! raw disk; this unpacks it and replaces tests/fixtures/cgroup-v2-debian-6.1.

use anyhow::{Context, bail};
use std::path::Path;
use std::process::Command;

pub const FIXTURE_DIR: &str = "tests/fixtures/cgroup-v2-debian-6.1";

/// The files the parser tests read; a capture without them is refused.
const REQUIRED: &[&str] = &[
    "demo/cpu.stat",
    "demo/cpu.max",
    "demo/memory.current",
    "demo/memory.max",
    "demo/memory.stat",
    "demo/memory.events",
    "demo/pids.max",
    "demo/io.stat",
    "demo/holder/cgroup.procs",
    "demo/holder/io.stat",
    "demo/oomer/memory.events",
    "root/cgroup.controllers",
    "root/io.stat",
    "proc-self/cgroup",
    "uname",
];

/// A zeroed (sparse) raw disk image of `size` bytes for the guest.
pub fn blank_disk(path: &Path, size: u64) -> anyhow::Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)?;
    Ok(())
}

/// Unpacks the tar on `disk` and swaps it in for the fixture directory.
pub fn install(disk: &Path, workspace: &Path) -> anyhow::Result<()> {
    let dest = workspace.join(FIXTURE_DIR);
    let staging = dest.with_extension("new");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    let status = Command::new("tar")
        .arg("-xf")
        .arg(disk)
        .arg("-C")
        .arg(&staging)
        .arg("--no-same-owner")
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("the capture disk {} holds no readable tar", disk.display());
    }
    for f in REQUIRED {
        if !staging.join(f).is_file() {
            bail!("the capture lacks {f}; {} left as it was", dest.display());
        }
    }
    if dest.exists() {
        std::fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    std::fs::rename(&staging, &dest)
        .with_context(|| format!("moving the capture to {}", dest.display()))?;
    Ok(())
}
