//! A real containerd (Debian's, the one docker.io pulls in) of the test's own: its
//! root, state, socket and config in a temporary directory, the CRI plugin off, so it
//! shares nothing with a containerd already running on the host. Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// containerd on a private socket; `ctr` talks to it.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    /// Starts containerd; `None` (with the reason printed) when it is not installed.
    pub fn start() -> Option<Containerd> {
        if !Path::new("/usr/bin/containerd").exists() || !Path::new("/usr/bin/ctr").exists() {
            eprintln!(
                "SKIPPED: containerd or ctr missing (Debian's containerd; docker.io pulls it in)"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("agent-containerd")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
            opt = d.join("opt").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("containerd.log")).unwrap())
            .spawn()
            .expect("starting containerd");
        let me = Containerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.ctr(&["version"]).0 {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                std::fs::read_to_string(me.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(me)
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// Runs `ctr ARGS…` against this containerd; returns (success, stdout + stderr).
    pub fn ctr(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("/usr/bin/ctr")
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .output();
        match out {
            Ok(o) => (
                o.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
                .trim()
                .to_string(),
            ),
            Err(e) => (false, e.to_string()),
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots of imported images may be mounted below its root.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        for line in crate::launch::mounts_containing(&prefix) {
            if let Some(mp) = line.split_whitespace().nth(4) {
                let _ = Command::new("umount").args(["-l", mp]).status();
            }
        }
    }
}
