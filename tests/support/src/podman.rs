//! A real podman for tests: Debian's podman (rootful, cgroupfs, runc) on a
//! storage root and run root of its own, so it never touches the host's
//! `/var/lib/containers`. Everything is removed on drop.
//!
//! This host's capability bounding set lacks CAP_SYS_RESOURCE, so runc cannot
//! raise a container's rlimits above its own: podman's default (nofile
//! 1048576) fails with "error setting rlimit type 7". [`Podman::run`] asks for
//! limits below the host's instead.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Podman {
    dir: tempfile::TempDir,
    /// `/libpod_parent` in each hierarchy, when podman made it.
    parents: Vec<PathBuf>,
}

impl Podman {
    /// `None` (with the reason printed) when podman is not installed.
    pub fn new() -> Option<Podman> {
        if !Path::new("/usr/bin/podman").exists() {
            eprintln!("SKIPPED: podman missing (Debian's podman; .ci/run installs it)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("agent-podman")
            .tempdir()
            .unwrap();
        let parents = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| {
                d.flatten()
                    .map(|e| e.path().join("libpod_parent"))
                    .filter(|p| !p.exists())
                    .collect()
            })
            .unwrap_or_default();
        Some(Podman { dir, parents })
    }

    /// Its storage root (`--root`), where containers.json is.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Runs podman on this root; returns (success, stdout or stderr).
    pub fn podman(&self, args: &[&str]) -> (bool, String) {
        let o = self.output(args);
        if o.status.success() {
            (true, String::from_utf8_lossy(&o.stdout).trim().into())
        } else {
            (false, String::from_utf8_lossy(&o.stderr).trim().into())
        }
    }

    /// Runs podman on this root with `args`, as it is.
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        Command::new("/usr/bin/podman")
            .arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(args)
            .output()
            .expect("run podman")
    }

    /// Imports the directory `root` as image `reference` (`podman import`).
    pub fn import_dir(&self, root: &Path, reference: &str) {
        let tar = self.dir.path().join("image.tar");
        super::docker::tar_dir(root, &tar);
        let (ok, out) = self.podman(&["import", tar.to_str().unwrap(), reference]);
        assert!(ok, "podman import: {out}");
    }

    /// `podman run -d --name NAME IMAGE ARGS…` without a network; returns the id.
    pub fn run(&self, name: &str, image: &str, args: &[&str]) -> String {
        let mut argv = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            // See the module docs: limits runc can set without CAP_SYS_RESOURCE.
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            image,
        ];
        argv.extend_from_slice(args);
        let (ok, out) = self.podman(&argv);
        assert!(ok, "podman run: {out}");
        out
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.podman(&["rm", "--all", "--force", "--time", "0"]);
        // Unmounts and removes the store.
        self.podman(&["system", "reset", "--force"]);
        // podman keeps its conmon processes in `/libpod_parent/conmon`: children
        // first, once the last conmon has exited (shortly after `rm`). A cgroup
        // still in use (another podman's) refuses rmdir and stays.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for p in &self.parents {
            while std::fs::remove_dir(p.join("conmon")).is_err()
                && p.join("conmon").exists()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = std::fs::remove_dir(p);
        }
    }
}
