//! What `cargo xtask` shares with the tests: the agent's OCI image ([`image`]), the
//! generated Kubernetes manifests ([`manifests`]) and
//! the shared libraries an executable needs ([`shared_libraries`]).
//!
//! The tests build the image from the binary they test (so an image is never stale),
//! with the same code `cargo xtask image` uses for the release binary.

pub mod image;
pub mod manifests;

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared libraries (and the ELF interpreter) `ldd` reports for `exe`; none for
/// a static executable.
pub fn shared_libraries(exe: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable") || out.stderr.starts_with(b"\tnot a dynamic") {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let p = rest.split_whitespace().next().unwrap_or("");
                if p == "not" {
                    bail!(
                        "{}: shared library {} not found",
                        exe.display(),
                        name.trim()
                    );
                }
                p
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}
