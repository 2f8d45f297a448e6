//! A real containerd for tests: Debian's containerd, started with its own root,
//! state, sockets and config (the CRI plugin on, as kubelet's nodes have it), so
//! it never meets a containerd already running on the host. Images come in
//! offline with `ctr images import`. On drop every container of every
//! namespace is removed, the daemon stopped, and the cgroups its containers'
//! parents left behind are removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// containerd on a temporary root and socket.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    /// Parent cgroups (relative paths) its containers will make, removed on drop
    /// when they were not there before.
    parents: Vec<(PathBuf, bool)>,
}

impl Containerd {
    /// Starts containerd with the CRI plugin, `sandbox_image` as the pod sandbox
    /// image; `None` (with the reason printed) when it is not installed.
    pub fn start(sandbox_image: &str) -> Option<Containerd> {
        Self::start_with_env(sandbox_image, &[])
    }

    /// Like [`Containerd::start`], with extra environment (inherited by its
    /// shims and the runtimes they run).
    pub fn start_with_env(sandbox_image: &str, env: &[(&str, &Path)]) -> Option<Containerd> {
        if !Path::new("/usr/bin/containerd").exists() || !Path::new("/usr/bin/ctr").exists() {
            eprintln!("SKIPPED: containerd missing (Debian's containerd; .ci/run installs it)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("agent-containerd")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        // The sandbox shares the node's network (NamespaceMode NODE, as
        // hostNetwork pods do), so no CNI plugin or config is needed; the CNI
        // directories are empty ones of the test's own.
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # A pod sandbox asks for oom_score_adj -998; lowering it needs
  # CAP_SYS_RESOURCE, which this host's bounding set lacks (runc init dies).
  # containerd's own answer for such hosts: no lower than containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("containerd.log")).unwrap())
            .spawn()
            .expect("starting containerd");
        let me = Containerd {
            dir,
            child,
            parents: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.ctr("default", &["version"]).0 {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(me)
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Its API socket (the CRI is served there too).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// Its state directory, where the shims' bundles are.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A scratch directory of its own (logs, images), removed on drop.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Runs `ctr` in containerd namespace `ns`; returns (success, stdout).
    pub fn ctr(&self, ns: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new("/usr/bin/ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", ns])
            .args(args)
            .output();
        match out {
            Ok(o) => (
                o.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    if o.status.success() {
                        String::new()
                    } else {
                        String::from_utf8_lossy(&o.stderr).into_owned()
                    }
                )
                .trim()
                .to_string(),
            ),
            Err(e) => (false, e.to_string()),
        }
    }

    /// Imports the OCI image layout `layout` (one image, whose
    /// `io.containerd.image.name` annotation names it) into namespace `ns`.
    pub fn import(&self, ns: &str, layout: &Path) {
        let tar = self.dir.path().join(format!(
            "{}.tar",
            layout.file_name().unwrap().to_string_lossy()
        ));
        let ok = Command::new("tar")
            .arg("-C")
            .arg(layout)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar of {}", layout.display());
        let (ok, out) = self.ctr(ns, &["images", "import", tar.to_str().unwrap()]);
        assert!(ok, "ctr images import: {out}");
    }

    /// Notes that containers will make the cgroup `rel` (e.g. `/kubepods`) as a
    /// parent: removed on drop, in every hierarchy, unless it is there already.
    pub fn parent_cgroup(&mut self, rel: &str) {
        for dir in cgroup_dirs(rel) {
            let existed = dir.exists();
            self.parents.push((dir, existed));
        }
    }

    /// The container ids of namespace `ns`.
    fn containers(&self, ns: &str) -> Vec<String> {
        let (_, out) = self.ctr(ns, &["containers", "ls", "-q"]);
        out.split_whitespace().map(str::to_string).collect()
    }
}

/// `rel` in every mounted cgroup hierarchy (every v1 controller, or the one v2 tree).
fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(rel)];
    }
    std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir() && !e.path().is_symlink())
                .map(|e| e.path().join(rel))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the cgroup directory `dir` and everything below it, deepest first
/// (empty cgroups only: their processes are gone by now).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let (_, namespaces) = self.ctr("default", &["namespaces", "ls", "-q"]);
        for ns in namespaces.split_whitespace() {
            for id in self.containers(ns) {
                self.ctr(ns, &["tasks", "kill", "--signal", "SIGKILL", &id]);
                let deadline = Instant::now() + Duration::from_secs(10);
                while !self.ctr(ns, &["tasks", "delete", &id]).0
                    && self.ctr(ns, &["tasks", "ls", "-q"]).1.contains(id.as_str())
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                self.ctr(ns, &["containers", "delete", &id]);
            }
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
        // Mounts containerd left under its own directory (rootfs of a container
        // whose task could not be deleted, the CRI's sandbox /dev/shm).
        let me = self.dir.path().display().to_string();
        let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .filter(|m| m.starts_with(&me))
            .collect();
        for m in mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        for (dir, existed) in self.parents.iter().rev() {
            if !existed {
                remove_cgroup_tree(dir);
            }
        }
    }
}
