//! The agent as an OCI runtime: what `runc create/start/state/kill/delete`
//! (and the extras containerd's runc shim calls: `exec`, `ps`, `pause`,
//! `resume`, `features`) do, on the same store, cgroups and child code as
//! `agent launch`, so dockerd and containerd can run containers through the
//! agent and `agent ps`/`agent serve` list them by the id their caller gave.
//!
//! The create/start split, as runc makes it: `create` clones the container's
//! first process into its namespaces and cgroup, runs the prestart and
//! createRuntime hooks, lets it apply the whole spec (mounts, `pivot_root`,
//! capabilities, seccomp) and returns once it is set up and blocked reading
//! `containers/<key>/exec.fifo`; the caller (containerd's shim, a subreaper)
//! becomes its parent and reaps it. `start` writes one byte to the FIFO, which
//! releases it into `execve`.
//!
//! No agent process supervises such a container: its state's `pid` and
//! `supervisor_pid` are its own first process, so it is running while that
//! process lives and stopped once it is gone (its exit code is the caller's
//! to know). The store key is a hash of the caller's `--root` and id, so the
//! same id under two roots (two containerd namespaces) are two containers.

pub mod hooks;

use super::bundle;
use super::lifecycle;
use super::spawn::{self, OciStart, Prepared};
use super::state::{self, ContainerState, OciRecord, Status};
use super::supervisor::{self, Creation};
use super::terminal;
use super::{Error, IoContext, Paths, Result, restart, spec, sys};
use crate::cgroup::{ContainerCgroup, Hierarchy};
use hooks::Stage;
use oci_spec::runtime::Spec;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The OCI runtime-spec version this runtime implements (as `runc` prints it).
pub const OCI_VERSION: &str = "1.0.2-dev";

/// The message runc gives for an id it does not know.
pub const NO_SUCH_CONTAINER: &str = "container does not exist";

/// A container as the caller names it: its `--root` and id.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's `--root`.
    pub root: PathBuf,
    /// The container id.
    pub id: String,
}

impl Caller {
    /// The container's key in the store (its directory under `containers/`).
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.root.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(self.id.as_bytes());
        super::hex(&h.finalize())
    }

    /// The container's recorded state, or runc's "container does not exist".
    pub fn load(&self, paths: &Paths) -> Result<ContainerState> {
        validate_id(&self.id)?;
        match state::load(paths, &self.key()) {
            Ok(st) if st.oci.is_some() => Ok(st),
            Ok(_) => Err(Error::NotFound(NO_SUCH_CONTAINER.into())),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(NO_SUCH_CONTAINER.into()))
            }
            Err(e) => Err(e),
        }
    }
}

/// runc's rule for ids: letters, digits, `_`, `+`, `-`, `.`; not `.` or `..`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid container id format: {id}")))
    }
}

/// The runtime-spec status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OciStatus {
    /// Set up, waiting for `start`.
    Created,
    /// Released into its program.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// Its first process has exited.
    Stopped,
}

impl std::fmt::Display for OciStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OciStatus::Created => "created",
            OciStatus::Running => "running",
            OciStatus::Paused => "paused",
            OciStatus::Stopped => "stopped",
        })
    }
}

/// What the process and its cgroup say now (a zombie is stopped).
pub fn status(st: &ContainerState) -> OciStatus {
    if !st.supervisor_alive() {
        return OciStatus::Stopped;
    }
    match st.status {
        Status::Created => OciStatus::Created,
        Status::Running if frozen(st) => OciStatus::Paused,
        Status::Running => OciStatus::Running,
        _ => OciStatus::Stopped,
    }
}

/// The state JSON of `runc state` (the runtime spec's, plus runc's `rootfs`,
/// `created` and `owner`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// [`OCI_VERSION`].
    pub oci_version: String,
    /// The caller's id.
    pub id: String,
    /// The first process's host pid (0 once stopped).
    pub pid: i32,
    /// Its status.
    pub status: OciStatus,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The root filesystem.
    pub rootfs: PathBuf,
    /// When it was created, RFC 3339.
    pub created: String,
    /// The spec's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Always empty (runc's rootless owner).
    pub owner: String,
}

/// The state of `st` as `runc state` prints it.
pub fn oci_state(st: &ContainerState) -> OciState {
    let status = status(st);
    let record = st.oci.clone();
    let created = std::time::UNIX_EPOCH + Duration::from_secs_f64(st.created_at.max(0.0));
    OciState {
        oci_version: OCI_VERSION.into(),
        id: record.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
        pid: if status == OciStatus::Stopped {
            0
        } else {
            st.pid.unwrap_or(0)
        },
        status,
        bundle: record.map(|r| r.bundle).unwrap_or_default(),
        rootfs: st.rootfs.merged.clone(),
        created: super::logs::rfc3339_nanos(created),
        annotations: st.labels.clone(),
        owner: String::new(),
    }
}

/// The state JSON given to hooks (the runtime spec's fields only).
fn hook_state(id: &str, status: &str, pid: i32, bundle: &Path, config: &Spec) -> Vec<u8> {
    let annotations = config.annotations().clone().unwrap_or_default();
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": OCI_VERSION,
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations,
    }))
    .unwrap_or_default()
}

/// `create`'s arguments.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Who names it.
    pub caller: Caller,
    /// `--bundle`.
    pub bundle: PathBuf,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
}

/// `create`: the container set up and waiting for `start`. Must run while the
/// process is single-threaded (it checks).
pub fn create(paths: &Paths, req: &CreateRequest) -> Result<ContainerState> {
    supervisor::ensure_single_threaded()?;
    validate_id(&req.caller.id)?;
    super::ensure_layout(paths)?;
    let bundle_dir = req.bundle.canonicalize().at("chdir", &req.bundle)?;
    let mut config = bundle::load(&bundle_dir, req.console_socket.is_some())?;
    hooks::check_supported(&config)?;
    let terminal = config
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if !terminal && req.console_socket.is_some() {
        return Err(Error::Invalid(
            "cannot use console socket if runc will not provide a terminal".into(),
        ));
    }
    let key = req.caller.key();
    let hierarchy = Hierarchy::detect_host()?;
    let mut creation = Creation {
        paths,
        id: key.clone(),
        cgroup: None,
        armed: true,
    };
    let mut st = {
        let _lock = sys::lock_exclusive(&paths.lock_file())?;
        let dir = paths.container(&key);
        if dir.exists() {
            creation.armed = false;
            return Err(Error::Conflict(
                "container with given ID already exists".into(),
            ));
        }
        std::fs::create_dir(&dir).at("create container directory", &dir)?;
        let mut st = bundle::initial_state(&key, &req.caller.id, &bundle_dir, &config, true);
        st.oci = Some(OciRecord {
            root: req.caller.root.clone(),
            id: req.caller.id.clone(),
            bundle: bundle_dir.clone(),
            console: terminal,
        });
        st.tty = terminal;
        st.cgroup = Some(ContainerCgroup::planned(&hierarchy, &key));
        state::save(paths, &st)?;
        st
    };
    let (cg, _) = creation.create_cgroup(&hierarchy, &config, &mut st)?;
    let root = st.rootfs.merged.clone();
    spec::place(&mut config, &root, &cg.info().path)?;
    let dir = paths.container(&key);
    spec::write_oci_config(&dir, &config)?;
    let seccomp_bpf = spawn::compile_seccomp(paths, &config)?;
    let fifo_path = dir.join("exec.fifo");
    sys::mkfifo(&fifo_path, 0o600)?;
    let exec_fifo: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo_path)
        .at("open", &fifo_path)?
        .into();
    let terminal = match &req.console_socket {
        Some(socket) => {
            let pty = terminal::openpty()?;
            terminal::send_to_console_socket(socket, pty.master.as_fd())?;
            Some(pty.slave)
        }
        None => None,
    };
    let hook_config = config.clone();
    let (id, hook_bundle) = (req.caller.id.clone(), bundle_dir.clone());
    let before_release = Box::new(move |pid: i32| -> Result<()> {
        let state = hook_state(&id, "creating", pid, &hook_bundle, &hook_config);
        hooks::run(&hook_config, Stage::Prestart, &state)?;
        hooks::run(&hook_config, Stage::CreateRuntime, &state)
    });
    let prepared = Prepared {
        config,
        layer: None,
        base_dir: bundle_dir,
        seccomp_bpf,
        init: false,
        detach: true,
        auto_remove: false,
        restart: restart::RestartPolicy::No,
        interactive: true,
        tty: terminal.is_some(),
        oci: Some(OciStart {
            exec_fifo,
            before_release,
            terminal,
        }),
    };
    let started = spawn::start(paths, &prepared, &cg, &mut st)?;
    if let Some(pid_file) = &req.pid_file {
        state::write_atomic(pid_file, started.pid.to_string().as_bytes())?;
    }
    creation.armed = false;
    Ok(st)
}

/// `start`: releases a created container into its program.
pub fn start(paths: &Paths, caller: &Caller) -> Result<ContainerState> {
    let mut st = caller.load(paths)?;
    match status(&st) {
        OciStatus::Created => {}
        OciStatus::Stopped => {
            return Err(Error::Conflict(
                "cannot start a container that has stopped".into(),
            ));
        }
        OciStatus::Running | OciStatus::Paused => {
            return Err(Error::Conflict(
                "cannot start an already running container".into(),
            ));
        }
    }
    let fifo = paths.container(&st.id).join("exec.fifo");
    // Non-blocking: the container holds the FIFO open for reading, so the open
    // succeeds at once unless the container is gone (ENXIO).
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) | Some(libc::ENOENT) => {
                Error::Conflict("cannot start a container that has stopped".into())
            }
            _ => Error::Io {
                op: "open",
                path: fifo.clone(),
                source: e,
            },
        })?;
    std::io::Write::write_all(&mut w, b"0").at("write", &fifo)?;
    drop(w);
    let _ = std::fs::remove_file(&fifo);
    st.status = Status::Running;
    st.started_at = Some(super::now_unix());
    state::save(paths, &st)?;
    if let Ok(config) = state::load_config(paths, &st.id) {
        let record = st.oci.clone();
        // runc gives poststart hooks the status it read before the release.
        let state = hook_state(
            &caller.id,
            "created",
            st.pid.unwrap_or(0),
            &record.map(|r| r.bundle).unwrap_or_default(),
            &config,
        );
        if let Err(e) = hooks::run(&config, Stage::Poststart, &state) {
            eprintln!("warning: {e}");
        }
    }
    Ok(st)
}

/// `kill [--all] ID SIGNAL`.
pub fn kill(paths: &Paths, caller: &Caller, signal: i32, all: bool) -> Result<()> {
    let st = caller.load(paths)?;
    if status(&st) == OciStatus::Stopped && !all {
        return Err(Error::Conflict("container not running".into()));
    }
    if all {
        let Some(info) = &st.cgroup else {
            return Ok(());
        };
        let cg = ContainerCgroup::from_info(info);
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            // A frozen task does not die until thawed.
            set_frozen(&st, false)?;
        }
        for pid in cg.pids() {
            let _ = sys::kill(pid, signal);
        }
        return Ok(());
    }
    let pid = st
        .pid
        .ok_or_else(|| Error::Conflict("container not running".into()))?;
    sys::kill(pid, signal)?;
    Ok(())
}

/// `delete [--force] ID`: the container, its cgroup and state gone, then the
/// poststop hooks.
pub fn delete(paths: &Paths, caller: &Caller, force: bool) -> Result<()> {
    let st = caller.load(paths)?;
    let now = status(&st);
    match now {
        OciStatus::Stopped | OciStatus::Created => {}
        OciStatus::Running | OciStatus::Paused if force => {}
        OciStatus::Running | OciStatus::Paused => {
            return Err(Error::Conflict(format!(
                "cannot delete container {} that is not stopped: {now}",
                caller.id
            )));
        }
    }
    if now != OciStatus::Stopped {
        set_frozen(&st, false)?;
        if let Some(pid) = st.pid {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
    }
    let config = state::load_config(paths, &st.id).ok();
    lifecycle::remove(paths, &st.id, true)?;
    if let Some(config) = config {
        let bundle = st
            .oci
            .as_ref()
            .map(|r| r.bundle.clone())
            .unwrap_or_default();
        let state = hook_state(&caller.id, "stopped", 0, &bundle, &config);
        if let Err(e) = hooks::run(&config, Stage::Poststop, &state) {
            eprintln!("warning: {e}");
        }
    }
    Ok(())
}

/// `pause` (`true`) or `resume` (`false`).
pub fn pause(paths: &Paths, caller: &Caller, paused: bool) -> Result<()> {
    let st = caller.load(paths)?;
    match (status(&st), paused) {
        (OciStatus::Running, true) | (OciStatus::Paused, false) => set_frozen(&st, paused),
        (OciStatus::Paused, true) => Ok(()),
        (_, true) => Err(Error::Conflict("container not running".into())),
        (_, false) => Err(Error::Conflict("container not paused".into())),
    }
}

/// The freezer file of the container's cgroup and the values it takes.
fn freezer(st: &ContainerState) -> Option<(PathBuf, &'static str, &'static str)> {
    st.cgroup.as_ref()?.dirs.iter().find_map(|d| {
        if d.join("freezer.state").exists() {
            Some((d.join("freezer.state"), "FROZEN", "THAWED"))
        } else if d.join("cgroup.freeze").exists() {
            Some((d.join("cgroup.freeze"), "1", "0"))
        } else {
            None
        }
    })
}

fn frozen(st: &ContainerState) -> bool {
    freezer(st)
        .is_some_and(|(file, on, _)| std::fs::read_to_string(file).is_ok_and(|s| s.trim() == on))
}

/// Freezes or thaws the container's cgroup and waits until the kernel says so.
fn set_frozen(st: &ContainerState, on: bool) -> Result<()> {
    let Some((file, frozen_value, thawed)) = freezer(st) else {
        return if on {
            Err(Error::Invalid(
                "the container's cgroup has no freezer".into(),
            ))
        } else {
            Ok(())
        };
    };
    let want = if on { frozen_value } else { thawed };
    std::fs::write(&file, want).at("write", &file)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if std::fs::read_to_string(&file).is_ok_and(|s| s.trim() == want) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(Error::Invalid(format!(
        "{}: did not become {want}",
        file.display()
    )))
}

/// `ps`: the host pids in the container's cgroup.
pub fn pids(paths: &Paths, caller: &Caller) -> Result<Vec<i32>> {
    let st = caller.load(paths)?;
    Ok(st
        .cgroup
        .as_ref()
        .map(|c| ContainerCgroup::from_info(c).pids())
        .unwrap_or_default())
}

/// `features`: what this runtime implements, in runc's schema.
pub fn features() -> serde_json::Value {
    let mut caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    caps.sort();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": [
            "bind", "rbind", "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
            "private", "rprivate", "shared", "rshared", "slave", "rslave", "relatime",
            "norelatime", "strictatime", "nostrictatime", "noatime", "atime", "mode", "size"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": { "enabled": true },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "false"
        }
    })
}

use std::os::unix::fs::OpenOptionsExt;

/// `exec`'s arguments.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Who names the container.
    pub caller: Caller,
    /// `--process`: the process's JSON (the spec's `process`).
    pub process: PathBuf,
    /// `--detach`: return once it runs; the caller reaps it.
    pub detach: bool,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
}

/// `exec`: a process in the running container, confined as its spec says.
/// Returns its exit code, or 0 once it runs with `--detach`.
pub fn exec(paths: &Paths, req: &ExecRequest) -> Result<i32> {
    supervisor::ensure_single_threaded()?;
    let st = req.caller.load(paths)?;
    if status(&st) != OciStatus::Running {
        return Err(Error::Conflict(
            "cannot exec in a stopped or paused container".into(),
        ));
    }
    let config = state::load_config(paths, &st.id)?;
    let data = std::fs::read(&req.process).at("read", &req.process)?;
    let process: oci_spec::runtime::Process =
        serde_json::from_slice(&data).map_err(|source| Error::Json {
            path: req.process.clone(),
            source,
        })?;
    let pty = match (&req.console_socket, process.terminal() == Some(true)) {
        (Some(socket), true) => {
            let pty = terminal::openpty()?;
            terminal::send_to_console_socket(socket, pty.master.as_fd())?;
            Some(pty)
        }
        (None, true) => {
            return Err(Error::Invalid("a terminal needs --console-socket".into()));
        }
        (_, false) => None,
    };
    let child = super::exec::spawn(
        paths,
        &st,
        &config,
        &process,
        super::exec::Spawn {
            pty: pty.as_ref(),
            interactive: true,
            die_with_parent: !req.detach,
        },
    )?;
    drop(pty);
    if let Some(pid_file) = &req.pid_file {
        state::write_atomic(pid_file, child.to_string().as_bytes())?;
    }
    if req.detach {
        return Ok(0);
    }
    Ok(match sys::waitpid(child, 0)? {
        Some((_, sys::Exit::Code(c))) => c,
        Some((_, sys::Exit::Signal(s))) => 128 + s,
        None => 0,
    })
}
