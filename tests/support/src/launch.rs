//! Helpers for the privileged launch tests: a temporary state dir, a busybox OCI
//! image built here from Debian's static busybox, a runner for the real `agent`
//! binary, and cleanup in `Drop` that holds even when a test fails.

use agent::cgroup::{AGENT_SUBTREE, ContainerCgroup};
use agent::runtime::state;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Tests that check "nothing was left behind" host-wide take this exclusively;
/// every other test shares it.
static HOST: RwLock<()> = RwLock::new(());

/// The applets linked into the test image.
pub const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "true", "false", "hostname", "id", "ps", "mount", "dd",
    "head", "tr", "wc", "kill", "env", "pwd", "touch", "mkdir", "stat", "grep", "seq", "test",
    "ip", "nproc", "rm", "readlink", "mknod",
];

/// Why privileged tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox missing (apt-get install busybox-static)".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.contains("overlay") {
        return Some("the kernel has no overlayfs".into());
    }
    None
}

/// Returns early from a test, saying why, when it cannot run here.
#[macro_export]
macro_rules! require_privileges {
    () => {
        if let Some(reason) = $crate::launch::skip_reason() {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

/// Output of one `agent` invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Run {
            code: out
                .status
                .code()
                .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with the output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }

    /// Panics unless it succeeded.
    pub fn ok(self) -> Self {
        self.expect_code(0)
    }
}

enum Guard {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// One test's world: its own state dir with the busybox image imported.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    _guard: Guard,
}

impl Env {
    /// A fresh state dir with `busybox:latest` imported, sharing the host.
    // Not `Default`: it builds a state dir and an image on the host.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let guard = Guard::Shared(HOST.read().unwrap_or_else(|e| e.into_inner()));
        Self::with_guard(guard, true)
    }

    /// A fresh, empty state dir (no image), sharing the host.
    pub fn empty() -> Self {
        let guard = Guard::Shared(HOST.read().unwrap_or_else(|e| e.into_inner()));
        Self::with_guard(guard, false)
    }

    /// Like `new`, but no other test runs meanwhile (for host-wide leak checks).
    pub fn exclusive() -> Self {
        let guard = Guard::Exclusive(HOST.write().unwrap_or_else(|e| e.into_inner()));
        Self::with_guard(guard, true)
    }

    fn with_guard(guard: Guard, busybox: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("agent-launch-test")
            .tempdir()
            .expect("tempdir");
        let state = dir.path().join("state");
        let env = Env {
            state,
            dir,
            _guard: guard,
        };
        if !busybox {
            return env;
        }
        let layout = env.dir.path().join("busybox-oci");
        build_busybox_oci(&layout);
        env.agent(&[
            "image",
            "import",
            "--name",
            "busybox",
            &format!("{}:latest", layout.display()),
        ])
        .ok();
        env
    }

    /// Runs `agent ARGS` against this state dir.
    pub fn agent(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run agent"))
    }

    /// The `agent ARGS` command, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        agent_command(&self.state, args)
    }

    /// `agent launch ARGS`.
    pub fn launch(&self, args: &[&str]) -> Run {
        let mut all = vec!["launch"];
        all.extend_from_slice(args);
        self.agent(&all)
    }

    /// `agent inspect NAME` parsed.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let run = self.agent(&["inspect", name]).ok();
        serde_json::from_str(&run.stdout).expect("inspect prints JSON")
    }

    /// Waits until the container no longer runs.
    pub fn wait_exited(&self, name: &str, secs: u64) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let v = self.inspect(name);
            if v["status"] == "exited" {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} still running: {v:#}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits until the container has created `/rel` (seen in its upper dir).
    pub fn wait_file(&self, name: &str, rel: &str) {
        let v = self.inspect(name);
        let path = PathBuf::from(v["rootfs"]["upperdir"].as_str().expect("upperdir")).join(rel);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !path.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never created /{rel}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Directories in the store's `overlay2/` (excluding `l`).
    pub fn overlay_dirs(&self) -> Vec<String> {
        list_dir(&self.state.join("overlay2"))
            .into_iter()
            .filter(|n| n != "l")
            .collect()
    }

    /// Container directories in the store.
    pub fn container_dirs(&self) -> Vec<String> {
        list_dir(&self.state.join("containers"))
    }
}

/// `agent ARGS` on the state root `state`, output piped, not yet started.
pub fn agent_command(state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(crate::agent_bin());
    cmd.args(args)
        .env("AGENT_STATE_DIR", state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A child process killed (and reaped) if the test ends before it does.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// Waits up to `timeout` for the child; `None` if it is still running.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Names in a directory (empty if missing), sorted.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every container cgroup directory under the agent's subtree, host-wide (only
/// container ids: other tests on a shared machine may keep their own cgroups there).
pub fn agent_cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for hierarchy in list_dir(Path::new("/sys/fs/cgroup")) {
        let sub = Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join(AGENT_SUBTREE);
        for id in list_dir(&sub) {
            let p = sub.join(id);
            if p.is_dir() {
                out.push(p);
            }
        }
    }
    if let Ok(v2) = std::fs::read_dir("/sys/fs/cgroup/agent") {
        out.extend(v2.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    out.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 64 && n.chars().all(|c| c.is_ascii_hexdigit()))
    });
    out.sort();
    out.dedup();
    out
}

/// Host mounts whose path mentions `needle`.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

impl Drop for Env {
    fn drop(&mut self) {
        // Force-remove every container, then make sure nothing survived: kill
        // supervisors and container processes, remove cgroups and mounts.
        let containers = state::list(&self.state).unwrap_or_default();
        for c in &containers {
            let _ = self.agent(&["rm", "-f", &c.id]);
        }
        for c in &containers {
            if let Some(pid) = c.pid {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if let Some(pid) = c.supervisor_pid
                && pid != std::process::id() as i32
                && Path::new(&format!("/proc/{pid}")).exists()
                && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmd| cmd.contains("agent"))
            {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if let Some(cg) = &c.cgroup {
                ContainerCgroup::from_info(cg).destroy();
            }
        }
        let prefix = self.dir.path().to_string_lossy().into_owned();
        for line in mounts_containing(&prefix) {
            if let Some(mp) = line.split_whitespace().nth(4) {
                let _ = Command::new("umount").args(["-l", mp]).status();
            }
        }
    }
}

/// A test entry in /etc/subuid and /etc/subgid, removed on drop (only if this
/// test added it).
pub struct SubidEntry {
    added: Vec<(PathBuf, String)>,
}

impl SubidEntry {
    pub fn ensure(name: &str, start: u32, count: u32) -> SubidEntry {
        let mut added = Vec::new();
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if text.lines().any(|l| l.starts_with(&format!("{name}:"))) {
                continue;
            }
            let line = format!("{name}:{start}:{count}\n");
            let mut new = text.clone();
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str(&line);
            std::fs::write(file, new).unwrap();
            added.push((PathBuf::from(file), line));
        }
        SubidEntry { added }
    }
}

impl Drop for SubidEntry {
    fn drop(&mut self) {
        for (file, line) in &self.added {
            if let Ok(text) = std::fs::read_to_string(file) {
                let _ = std::fs::write(file, text.replacen(line.as_str(), "", 1));
            }
        }
    }
}

// ---- building the busybox OCI image ------------------------------------------------

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

/// A layer as (uncompressed tar, gzip of it).
pub struct Layer {
    pub tar: Vec<u8>,
}

/// Builds an uncompressed tar layer from entries.
pub fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    Layer {
        tar: b.into_inner().unwrap(),
    }
}

pub fn add_dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = header(path, tar::EntryType::Directory, mode, 0);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
}

pub fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(path, tar::EntryType::Regular, mode, data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

pub fn add_symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = header(path, tar::EntryType::Symlink, 0o777, 0);
    h.set_link_name(target).unwrap();
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
}

/// The base layer: busybox, its applets, /etc/passwd and /etc/group, and two
/// files the second layer hides (one by whiteout, one by an opaque directory).
pub fn base_layer() -> Layer {
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox");
    layer(|b| {
        for d in ["bin", "etc", "tmp", "opaque", "root"] {
            add_dir(b, d, if d == "tmp" { 0o1777 } else { 0o755 });
        }
        add_file(b, "bin/busybox", 0o755, &busybox);
        for a in APPLETS {
            add_symlink(b, &format!("bin/{a}"), "busybox");
        }
        add_file(
            b,
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        );
        add_file(b, "etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n");
        add_file(b, "etc/removed", 0o644, b"hidden by a whiteout\n");
        add_file(b, "opaque/old", 0o644, b"hidden by an opaque dir\n");
    })
}

/// The top layer: a new file, a whiteout and an opaque directory.
pub fn top_layer() -> Layer {
    layer(|b| {
        add_file(b, "etc/motd", 0o644, b"layer two\n");
        add_file(b, "etc/.wh.removed", 0o644, b"");
        add_dir(b, "opaque", 0o755);
        add_file(b, "opaque/.wh..wh..opq", 0o644, b"");
        add_file(b, "opaque/new", 0o644, b"new\n");
    })
}

/// `data` gzip-compressed (fast).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Writes `data` as a blob of `layout`; returns its digest.
pub fn write_blob(layout: &Path, data: &[u8]) -> String {
    let hex = sha256_hex(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&hex), data).unwrap();
    format!("sha256:{hex}")
}

/// Image config JSON for `layers` with optional Cmd/Env/WorkingDir.
pub fn image_config(layers: &[&Layer], cmd: Option<&[&str]>) -> serde_json::Value {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(&l.tar)))
        .collect();
    let mut config = serde_json::json!({
        "Env": ["PATH=/bin", "FROM_IMAGE=yes"],
        "Labels": {"org.example.test": "busybox"},
    });
    if let Some(cmd) = cmd {
        config["Cmd"] = serde_json::json!(cmd);
    }
    serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
}

/// Writes an OCI image layout with the two busybox layers (gzip-compressed) at
/// `layout`, tagged `latest`.
pub fn build_busybox_oci(layout: &Path) {
    build_oci(layout, &[&base_layer(), &top_layer()], None, "latest");
}

/// Writes an OCI image layout of `layers`.
pub fn build_oci(layout: &Path, layers: &[&Layer], cmd: Option<&[&str]>, tag: &str) {
    write_oci(layout, layers, cmd, tag, true);
}

/// Writes an OCI image layout of `layers`, gzip-compressed or as plain tar blobs.
pub fn write_oci(layout: &Path, layers: &[&Layer], cmd: Option<&[&str]>, tag: &str, gz: bool) {
    std::fs::create_dir_all(layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut descs = Vec::new();
    for l in layers {
        let (blob, media_type) = if gz {
            (gzip(&l.tar), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (l.tar.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let digest = write_blob(layout, &blob);
        descs.push(serde_json::json!({
            "mediaType": media_type,
            "digest": digest,
            "size": blob.len(),
        }));
    }
    let config = serde_json::to_vec(&image_config(layers, cmd)).unwrap();
    let config_digest = write_blob(layout, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": descs,
    }))
    .unwrap();
    let manifest_digest = write_blob(layout, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// Writes a `docker save` style archive of `layers` at `path`.
pub fn build_docker_archive(path: &Path, layers: &[&Layer], cmd: &[&str], tag: &str) {
    let config = serde_json::to_vec(&image_config(layers, Some(cmd))).unwrap();
    let config_name = format!("{}.json", sha256_hex(&config));
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, &config_name, 0o644, &config);
    let mut names = Vec::new();
    for l in layers {
        let dir = sha256_hex(&l.tar);
        add_dir(&mut b, &dir, 0o755);
        let name = format!("{dir}/layer.tar");
        add_file(&mut b, &name, 0o644, &l.tar);
        names.push(name);
    }
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": names,
    }]))
    .unwrap();
    add_file(&mut b, "manifest.json", 0o644, &manifest);
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}
