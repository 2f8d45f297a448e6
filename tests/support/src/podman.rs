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
    /// `/libpod_parent` in each hierarchy: podman (cgroupfs) makes it on first
    /// use and never removes it.
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
        // Also those an earlier run left (it was killed, or lost the race
        // below): removed with ours once nothing is in them.
        let parents = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.path().is_symlink())
                    .map(|e| e.path().join("libpod_parent"))
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

impl Podman {
    /// The conmon processes of this podman (their command lines name its run
    /// root), wherever podman placed them.
    fn conmons(&self) -> Vec<i32> {
        let mine = self.dir.path().as_os_str().as_encoded_bytes();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    c.split(|b| *b == 0)
                        .next()
                        .is_some_and(|argv0| argv0.ends_with(b"conmon"))
                        && c.windows(mine.len()).any(|w| w == mine)
                })
            })
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        use std::time::{Duration, Instant};
        self.podman(&["rm", "--all", "--force", "--time", "0"]);
        // `rm` returns before each container's conmon has exited (it writes the
        // exit code, then goes), and conmon holds `/libpod_parent/conmon`: wait
        // for ours, then kill what is left, so the cgroups can go.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.conmons().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in self.conmons() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Unmounts and removes the store.
        self.podman(&["system", "reset", "--force"]);
        // Children first (`conmon`, `libpod-<id>`), then the parent; a cgroup
        // still in use (another podman's, running now) refuses rmdir and stays.
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in &self.parents {
            while p.exists() && Instant::now() < deadline {
                remove_empty_cgroups(p);
                if p.exists() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// Removes the cgroup `dir` and those below it, deepest first, where nothing
/// runs in them (rmdir refuses the others).
fn remove_empty_cgroups(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_cgroups(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
