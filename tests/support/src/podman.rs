//! podman (Debian's) on a private root and run root, with the cgroupfs manager
//! and no events backend, so it shares nothing with a podman already in use on
//! the host. Its containers are removed and its mounts unmounted on drop.

use std::process::Command;

/// podman with its storage in a temporary directory.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// `None` (with the reason printed) when podman is not installed.
    pub fn new() -> Option<Podman> {
        if Command::new("podman").arg("--version").output().is_err() {
            eprintln!("podman: not installed (apt-get install podman)");
            return None;
        }
        Some(Podman {
            dir: tempfile::Builder::new()
                .prefix("agent-podman")
                .tempdir()
                .unwrap(),
        })
    }

    /// Runs `podman ARGS…` against this storage.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("podman")
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("run podman")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af"]);
        let prefix = self.dir.path().to_string_lossy().into_owned();
        for line in crate::launch::mounts_containing(&prefix) {
            if let Some(mp) = line.split_whitespace().nth(4) {
                let _ = Command::new("umount").args(["-l", mp]).status();
            }
        }
    }
}
