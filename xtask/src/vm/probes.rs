//! Tiny eBPF objects, one per hook kind (fentry, fexit, kprobe, LSM, tp_btf, raw_tp),
//! and a libbpf loader that the guest runs on each: a direct answer to "which hooks
//! attach on this kernel", independent of how far the agent's own tracer has got.
//! (Debian 12's bpftool 7.1 can load but not attach tracing programs.)

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// (name printed on the console, preprocessor switch)
const HOOKS: &[(&str, &str)] = &[
    ("fentry", "HOOK_FENTRY"),
    ("fexit", "HOOK_FEXIT"),
    ("kprobe", "HOOK_KPROBE"),
    ("lsm", "HOOK_LSM"),
    ("tp_btf", "HOOK_TP_BTF"),
    ("raw_tp", "HOOK_RAW_TP"),
];

fn clang(args: &[&std::ffi::OsStr], what: &str) -> anyhow::Result<()> {
    let result = Command::new("clang-19")
        .args(args)
        .output()
        .context("running clang-19 (Debian package clang-19)")?;
    if !result.status.success() {
        bail!(
            "clang-19 failed on {what}: {}",
            String::from_utf8_lossy(&result.stderr).trim()
        );
    }
    Ok(())
}

/// Compiles the loader (against libbpf-dev) into `dir`.
pub fn build_loader(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let src = dir.join("hook_probe_loader.c");
    std::fs::write(&src, include_str!("hook_probe_loader.c"))?;
    let exe = dir.join("hook_probe_loader");
    let args = ["-O2", "-Wall", "-Werror", "-o"].map(std::ffi::OsStr::new);
    let mut all: Vec<&std::ffi::OsStr> = args.to_vec();
    all.extend([exe.as_os_str(), src.as_os_str(), "-lbpf".as_ref()]);
    clang(&all, "the hook probe loader")?;
    Ok(exe)
}

/// Compiles every probe object into `dir`; returns (hook name, object).
pub fn build(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let src = dir.join("hook_probe.bpf.c");
    std::fs::write(&src, include_str!("hook_probe.bpf.c"))?;
    let mut out = Vec::new();
    for (name, define) in HOOKS {
        let obj = dir.join(format!("{name}.bpf.o"));
        let define = format!("-D{define}");
        let mut args: Vec<&std::ffi::OsStr> = ["-target", "bpf", "-g", "-O2", "-Wall", "-Werror"]
            .map(std::ffi::OsStr::new)
            .to_vec();
        args.extend([
            define.as_ref(),
            "-I/usr/include/x86_64-linux-gnu".as_ref(),
            "-c".as_ref(),
            src.as_os_str(),
            "-o".as_ref(),
            obj.as_os_str(),
        ]);
        clang(&args, &format!("the {name} probe"))?;
        out.push((name.to_string(), obj));
    }
    Ok(out)
}
