//! A real Docker daemon for tests: Debian's docker.io, started on a private
//! socket, data root and exec root, in a network namespace of its own (its
//! bridge, iptables rules and their cleanup never touch the host's network or a
//! Docker already running there). Everything is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// dockerd on a temporary socket and data root; on drop, every container is removed
/// and the daemon (with the containerd it started) is stopped.
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
    created_parent_cgroups: Vec<PathBuf>,
}

impl Dockerd {
    /// Starts dockerd; `None` (with the reason printed) when it is not installed.
    pub fn start() -> Option<Dockerd> {
        Self::start_with(&[], &[])
    }

    /// Starts dockerd with extra arguments (e.g. `--add-runtime`) and
    /// environment (inherited by its containerd, shims and runtimes).
    pub fn start_with(extra: &[String], env: &[(&str, &Path)]) -> Option<Dockerd> {
        if !Path::new("/usr/sbin/dockerd").exists() {
            eprintln!(
                "SKIPPED: /usr/sbin/dockerd missing (Debian's docker.io; .ci/run installs it)"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("agent-dockerd")
            .tempdir()
            .unwrap();
        // dockerd makes a `docker` parent in every hierarchy; remove those it adds.
        let parents: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path().join("docker"))
            .filter(|p| !p.exists())
            .collect();
        let d = dir.path();
        let child = Command::new("unshare")
            .args(["--net", "--", "/usr/sbin/dockerd"])
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("dockerd.pid").display()))
            .arg(format!("--host=unix://{}", d.join("docker.sock").display()))
            .args(["--iptables=false", "--ip6tables=false", "--ip-masq=false"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("dockerd.log")).unwrap())
            .spawn()
            .expect("starting dockerd");
        let me = Dockerd {
            dir,
            child,
            created_parent_cgroups: parents,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.docker(&["info", "--format", "{{.ServerVersion}}"]).0 {
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up: {}",
                std::fs::read_to_string(me.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(me)
    }

    /// The daemon's pid (it runs in the network namespace of its own that its
    /// containers' bridge lives in).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET path` from `addr` (e.g. a container's bridge address), made from
    /// inside the daemon's network namespace; the body.
    pub fn http_get_inside(&self, addr: &str, path: &str) -> std::io::Result<String> {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid()))?;
        let (addr, path) = (addr.to_owned(), path.to_owned());
        // setns changes the calling thread only: a thread of its own, ended after.
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a namespace fd we hold open; it affects only this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let (status, body) = crate::http_get(&addr, &path, &[])?;
            if status != 200 {
                return Err(std::io::Error::other(format!("{path}: HTTP {status}")));
            }
            Ok(String::from_utf8_lossy(&body).into_owned())
        })
        .join()
        .map_err(|_| std::io::Error::other("the request thread panicked"))?
    }

    /// Its API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Its `--data-root`.
    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs the docker CLI against this daemon; returns (success, stdout).
    pub fn docker(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("docker")
            .arg(format!(
                "--host=unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .args(args)
            .output();
        match out {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).trim().to_string(),
            ),
            Err(_) => (false, String::new()),
        }
    }

    /// Imports a one-binary busybox image made from the host's busybox-static.
    pub fn import_busybox(&self, reference: &str) {
        let root = self.dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("busybox-static is installed");
        for applet in ["sh", "sleep", "grep", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        self.import_dir(&root, reference);
    }

    /// Imports the directory `root` as the image `reference` (`docker import`).
    pub fn import_dir(&self, root: &Path, reference: &str) {
        let tar = self
            .dir
            .path()
            .join(format!("{}.tar", reference.replace(['/', ':'], "_")));
        tar_dir(root, &tar);
        let (ok, _) = self.docker(&["import", tar.to_str().unwrap(), reference]);
        assert!(ok, "docker import failed");
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let (_, ids) = self.docker(&["ps", "-aq"]);
        for id in ids.split_whitespace() {
            self.docker(&["rm", "-f", id]);
        }
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
        for p in &self.created_parent_cgroups {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// Packs the directory `root` into the tar archive `tar` (as `docker import` and
/// `podman import` read them).
pub fn tar_dir(root: &Path, tar: &Path) {
    let ok = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .status()
        .expect("run tar")
        .success();
    assert!(
        ok,
        "tar -C {} -cf {} . failed",
        root.display(),
        tar.display()
    );
}
