//! The guest's root: a `newc` cpio archive (the kernel unpacks it into RAM) holding
//! busybox as `/bin/busybox`, `/init` (init.sh), the plan, kernel modules, and each
//! executable at its host path with the shared libraries `ldd` names.

use anyhow::{Context, bail};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BUSYBOX: &str = "/bin/busybox";

/// A root tree being assembled in a staging directory.
pub struct Initramfs {
    stage: PathBuf,
    libraries: BTreeSet<PathBuf>,
}

impl Initramfs {
    /// Starts an empty tree in `stage` (removed first) with busybox and the init script.
    pub fn new(stage: &Path) -> anyhow::Result<Initramfs> {
        if stage.exists() {
            std::fs::remove_dir_all(stage)
                .with_context(|| format!("removing {}", stage.display()))?;
        }
        for d in [
            "bin",
            "sbin",
            "usr/bin",
            "usr/sbin",
            "proc",
            "sys",
            "dev",
            "tmp",
            "run",
            "root",
            "etc",
            "vmtest/modules",
        ] {
            std::fs::create_dir_all(stage.join(d))
                .with_context(|| format!("creating {}", stage.join(d).display()))?;
        }
        let mut fs = Initramfs {
            stage: stage.to_path_buf(),
            libraries: BTreeSet::new(),
        };
        if !Path::new(BUSYBOX).exists() {
            bail!("{BUSYBOX} missing (Debian package busybox-static)");
        }
        fs.copy(Path::new(BUSYBOX), Path::new(BUSYBOX), false)?;
        fs.write("init", include_str!("init.sh"), 0o755)?;
        fs.write("vmtest/capture.sh", include_str!("capture.sh"), 0o644)?;
        fs.write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)?;
        fs.write("etc/group", "root:x:0:\n", 0o644)?;
        fs.write(
            "etc/hosts",
            "127.0.0.1 localhost vmtest\n::1 localhost\n",
            0o644,
        )?;
        Ok(fs)
    }

    fn dest(&self, guest_path: &Path) -> PathBuf {
        self.stage
            .join(guest_path.strip_prefix("/").unwrap_or(guest_path))
    }

    /// Writes a file at a guest path (relative to the root).
    pub fn write(&self, guest_path: &str, contents: &str, mode: u32) -> anyhow::Result<()> {
        let dest = self.stage.join(guest_path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dest, contents).with_context(|| format!("writing {}", dest.display()))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// Copies a host file to `guest_path`; `strip` drops its debug info (test
    /// binaries carry hundreds of MB of it, which the guest would have to unpack).
    pub fn copy(&mut self, host: &Path, guest_path: &Path, strip: bool) -> anyhow::Result<()> {
        let dest = self.dest(guest_path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if strip {
            let status = Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&dest)
                .arg(host)
                .status()
                .context("running strip (Debian package binutils)")?;
            if !status.success() {
                bail!("strip --strip-debug {} failed", host.display());
            }
        } else {
            std::fs::copy(host, &dest)
                .with_context(|| format!("copying {} into the initramfs", host.display()))?;
        }
        Ok(())
    }

    /// Copies an executable to the same path in the guest, with its shared libraries.
    pub fn add_executable(&mut self, host: &Path, strip: bool) -> anyhow::Result<()> {
        self.copy(host, host, strip)?;
        self.add_libraries(host)
    }

    /// Copies the shared libraries `exe` needs to their host paths in the guest.
    pub fn add_libraries(&mut self, exe: &Path) -> anyhow::Result<()> {
        for lib in xtask::shared_libraries(exe)? {
            if self.libraries.insert(lib.clone()) {
                // The libraries' own dependencies are in ldd's (transitive) list.
                self.copy(&lib, &lib, false)?;
            }
        }
        Ok(())
    }

    /// Copies a directory tree (regular files and directories) to `guest_path`.
    pub fn copy_tree(&mut self, host: &Path, guest_path: &Path) -> anyhow::Result<()> {
        self.mkdir(guest_path)?;
        for entry in
            std::fs::read_dir(host).with_context(|| format!("reading {}", host.display()))?
        {
            let entry = entry?;
            let (from, to) = (entry.path(), guest_path.join(entry.file_name()));
            let kind = entry.file_type()?;
            if kind.is_dir() {
                self.copy_tree(&from, &to)?;
            } else if kind.is_file() {
                self.copy(&from, &to, false)?;
            }
        }
        Ok(())
    }

    /// Copies a kernel module into /vmtest/modules/<name>.ko.
    pub fn add_module(&mut self, name: &str, host: &Path) -> anyhow::Result<()> {
        self.copy(
            host,
            &PathBuf::from(format!("/vmtest/modules/{name}.ko")),
            false,
        )
    }

    /// Creates a directory in the guest.
    pub fn mkdir(&self, guest_path: &Path) -> anyhow::Result<()> {
        let d = self.dest(guest_path);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))
    }

    /// Packs the tree into `out` with `cpio -o -H newc`.
    pub fn pack(&self, out: &Path) -> anyhow::Result<u64> {
        let mut names = Vec::new();
        list(&self.stage, Path::new("."), &mut names)?;
        let file =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut child = Command::new("cpio")
            .args(["-o", "-H", "newc", "--quiet", "--reproducible"])
            .current_dir(&self.stage)
            .stdin(Stdio::piped())
            .stdout(file)
            .spawn()
            .context("running cpio (Debian package cpio)")?;
        {
            let mut stdin = child.stdin.take().expect("piped stdin");
            for n in &names {
                writeln!(stdin, "{}", n.display())?;
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("cpio failed ({status})");
        }
        Ok(std::fs::metadata(out)?.len())
    }
}

/// Every path under `dir`, parents before children, sorted (a reproducible archive).
fn list(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    out.push(rel.to_path_buf());
    let full = root.join(rel);
    if std::fs::symlink_metadata(&full)?.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(&full)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        entries.sort();
        for e in entries {
            list(root, &rel.join(e), out)?;
        }
    }
    Ok(())
}
