//! Container state on disk: `<state-dir>/containers/<id>/state.json`.
//!
//! This file is the contract between `agent launch` (which writes it) and
//! `agent serve`, `ps`, `inspect` (which read it). It is always replaced atomically
//! (temporary file in the same directory, `fsync` unless the container is `--rm`,
//! `rename`), so a reader sees either the old or the new document, never a torn one.
//!
//! # Schema (`version: 1`)
//!
//! ```json
//! {
//!   "version": 1,
//!   "id": "64 hex digits",
//!   "name": "web",                       // unique among containers
//!   "image": "busybox:latest",           // the reference given to launch
//!   "image_id": "sha256:…",              // image config digest
//!   "command": ["sh", "-c", "…"],        // entrypoint + cmd as executed
//!   "labels": {"k": "v"},
//!   "status": "created" | "running" | "restarting" | "exited" | "dead",
//!   "created_at": 1764290000.123,        // Unix seconds (float)
//!   "started_at": 1764290000.456,        // null until running
//!   "finished_at": null,                 // set when exited
//!   "pid": 12345,                        // host pid of the container's PID 1, null when not running
//!   "supervisor_pid": 12340,             // the `agent launch` process that waits for it
//!   "supervisor_started": 123456,        // its start time in clock ticks (pid-reuse guard)
//!   "exit_code": null,                   // 0-255; 128+signal when killed
//!   "signal": null,                      // the killing signal number, if any
//!   "oom_killed": false,                 // the memory cgroup recorded an OOM kill
//!   "error": null,                       // why the start failed, if it did
//!   "limits": {"memory_bytes": 268435456, "memory_swap_bytes": null,
//!              "cpu_quota_us": 50000, "cpu_period_us": 100000, "pids_max": 64},
//!   "cgroup": {"version": "v1" | "v2", "path": "/agent/<id>",
//!              "dirs": ["/sys/fs/cgroup/memory/agent/<id>", …]},
//!   "rootfs": {"upperdir": "…/overlay2/<id>/diff", "workdir": "…/work",
//!              "merged": "…/merged", "lowerdirs": ["…/overlay2/<layer>/diff", …]},
//!   "namespaces": {"mnt": 4026532000, "uts": …, "ipc": …, "pid": …, "net": …, "cgroup": …, "user": …},
//!   "network": "none" | "host",
//!   "hostname": "…",
//!   "detached": false, "auto_remove": false, "init": false,
//!   "log_path": "…/containers/<id>/container.log", // detached containers only
//!   "restart_policy": {"name": "no" | "on-failure" | "always" | "unless-stopped",
//!                      "max_retries": 2},       // on-failure:N only
//!   "restart_count": 0,                  // restarts done by the supervisor
//!   "volumes": ["pgdata"],               // named volumes it mounts
//!   "tty": false, "interactive": false,  // -t, -i
//!   "log_timestamps": true               // log lines start with an RFC 3339 time
//! }
//! ```
//!
//! `namespaces` is read while the process is alive; `cgroup` (entered only after the
//! process is released) can be missing for a command that exits at once.
//! A limit that is `null` is unlimited. `lowerdirs` is top-most layer first (as in
//! the overlay mount option). Unknown fields must be ignored by readers.

use super::restart::RestartPolicy;
use super::units::Network;
use super::{Error, IoContext, Paths, Result};
use crate::cgroup::{CgroupInfo, Limits};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The schema version written by this build.
pub const STATE_VERSION: u32 = 1;

/// Lifecycle of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Prepared on disk, process not started (or start failed: see `error`).
    Created,
    /// The process is running.
    Running,
    /// The process has ended.
    Exited,
    /// Exited, and its restart policy starts it again after a back-off.
    Restarting,
    /// Its supervisor died (killed, or a crash mid-launch): nobody watches it and
    /// its exit is unknown. Processes it left are killed by `rm`.
    Dead,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Restarting => "restarting",
            Status::Dead => "dead",
        })
    }
}

/// The container's overlay directories.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootfsInfo {
    /// The container's own writable layer.
    pub upperdir: PathBuf,
    /// overlayfs scratch directory.
    pub workdir: PathBuf,
    /// Mount point of the overlay (mounted only inside the container's mount namespace).
    pub merged: PathBuf,
    /// Image layers, top-most first.
    pub lowerdirs: Vec<PathBuf>,
}

/// Everything recorded about one container. See the module docs for the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Schema version.
    pub version: u32,
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Image reference as given to launch.
    pub image: String,
    /// Image id (`sha256:` config digest).
    pub image_id: String,
    /// The argv that is executed.
    pub command: Vec<String>,
    /// User labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Lifecycle status.
    pub status: Status,
    /// Creation time, Unix seconds.
    pub created_at: f64,
    /// Start time, Unix seconds.
    pub started_at: Option<f64>,
    /// Exit time, Unix seconds.
    pub finished_at: Option<f64>,
    /// Host pid of the container's PID 1 while running.
    pub pid: Option<i32>,
    /// Pid of the supervising `agent` process.
    pub supervisor_pid: Option<i32>,
    /// Its start time (clock ticks since boot, `/proc/<pid>/stat` field 22), so a
    /// reused pid is not mistaken for it.
    #[serde(default)]
    pub supervisor_started: Option<u64>,
    /// Exit code (128+signal when killed by a signal).
    pub exit_code: Option<i32>,
    /// Signal that killed the process.
    pub signal: Option<i32>,
    /// The memory cgroup recorded an OOM kill.
    #[serde(default)]
    pub oom_killed: bool,
    /// Why starting failed.
    pub error: Option<String>,
    /// Resource limits.
    pub limits: Limits,
    /// The container's cgroup, once created.
    pub cgroup: Option<CgroupInfo>,
    /// Overlay directories.
    pub rootfs: RootfsInfo,
    /// Namespace inode numbers by kind (`mnt`, `uts`, `ipc`, `pid`, `net`, `cgroup`,
    /// `user`).
    #[serde(default)]
    pub namespaces: BTreeMap<String, u64>,
    /// `none` or `host`.
    pub network: Network,
    /// The container's hostname.
    pub hostname: String,
    /// Launched with `-d`.
    #[serde(default)]
    pub detached: bool,
    /// Launched with `--rm`.
    #[serde(default)]
    pub auto_remove: bool,
    /// Launched with `--init`.
    #[serde(default)]
    pub init: bool,
    /// Log file of a detached container.
    pub log_path: Option<PathBuf>,
    /// `--restart`.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// How many times the supervisor has restarted it.
    #[serde(default)]
    pub restart_count: u32,
    /// The named volumes it mounts (`agent volume rm` refuses them).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// `-t`: its process has a pseudo-terminal.
    #[serde(default)]
    pub tty: bool,
    /// `-i`: its stdin stays open.
    #[serde(default)]
    pub interactive: bool,
    /// Its log prefixes every line with a timestamp ([`super::logs`]).
    #[serde(default)]
    pub log_timestamps: bool,
    /// Made through the OCI runtime command line (`agent-runc create`) by
    /// dockerd, containerd or another caller: no agent process supervises it,
    /// `pid`/`supervisor_pid` are its own first process, which the caller reaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciRecord>,
}

/// What the OCI runtime command line records of a container it created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OciRecord {
    /// The caller's `--root` (its namespace of ids).
    pub root: PathBuf,
    /// The id the caller gave (also the container's name).
    pub id: String,
    /// `create --bundle`.
    pub bundle: PathBuf,
    /// `process.terminal` with a `--console-socket`.
    #[serde(default)]
    pub console: bool,
}

impl ContainerState {
    /// A stopped container with these names, for tests of code that reads state.
    #[cfg(test)]
    pub(crate) fn for_test(id: &str, name: &str, image: &str) -> ContainerState {
        ContainerState {
            version: STATE_VERSION,
            id: id.into(),
            name: name.into(),
            image: image.into(),
            image_id: "sha256:00".into(),
            command: vec!["true".into()],
            labels: BTreeMap::new(),
            status: Status::Exited,
            created_at: 0.0,
            started_at: None,
            finished_at: None,
            pid: None,
            supervisor_pid: None,
            supervisor_started: None,
            exit_code: Some(0),
            signal: None,
            oom_killed: false,
            error: None,
            limits: Limits::default(),
            cgroup: None,
            rootfs: RootfsInfo::default(),
            namespaces: BTreeMap::new(),
            network: Network::None,
            hostname: "h".into(),
            detached: false,
            auto_remove: false,
            init: false,
            log_path: None,
            restart_policy: RestartPolicy::No,
            restart_count: 0,
            volumes: Vec::new(),
            tty: false,
            interactive: false,
            log_timestamps: false,
            oci: None,
        }
    }

    /// The first 12 hex digits of the id.
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// Whether the recorded process is really still alive (guards against a crashed
    /// supervisor leaving `running` behind).
    pub fn is_running(&self) -> bool {
        self.status == Status::Running && self.supervisor_alive()
    }

    /// Whether the supervising process still runs (a zombie does not: it was
    /// killed and its parent has not reaped it yet).
    pub fn supervisor_alive(&self) -> bool {
        let Some(pid) = self.supervisor_pid else {
            return false;
        };
        match process_stat(pid) {
            Some(stat) if matches!(stat.state, 'Z' | 'X' | 'x') => false,
            Some(stat) => self
                .supervisor_started
                .is_none_or(|t| t == stat.start_ticks),
            None => false,
        }
    }
}

/// What `/proc/<pid>/stat` says of a process that the state needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStat {
    /// R, S, D, Z (zombie), X (dead)…
    pub state: char,
    /// Start time in clock ticks since boot (field 22).
    pub start_ticks: u64,
}

fn process_stat(pid: i32) -> Option<ProcessStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses the contents of `/proc/<pid>/stat`; `None` when it is not in that format.
pub fn parse_stat(stat: &str) -> Option<ProcessStat> {
    // Fields after the command name (which may hold spaces and parentheses), and
    // the space the kernel writes after it.
    let rest = stat[stat.rfind(')')? + 1..].strip_prefix(' ')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(ProcessStat { state, start_ticks })
}

/// Start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    process_stat(pid).map(|s| s.start_ticks)
}

/// Path of a container's `state.json`.
pub fn state_path(paths: &Paths, id: &str) -> PathBuf {
    paths.container(id).join("state.json")
}

/// Path of a container's OCI `config.json`: the spec it runs.
pub fn config_path(paths: &Paths, id: &str) -> PathBuf {
    paths.container(id).join("config.json")
}

/// Reads container `id`'s `config.json`.
pub fn load_config(paths: &Paths, id: &str) -> Result<oci_spec::runtime::Spec> {
    let path = config_path(paths, id);
    let data = std::fs::read(&path).at("read", &path)?;
    serde_json::from_slice(&data).map_err(|source| Error::Json { path, source })
}

/// Writes `state` atomically to `containers/<id>/state.json`.
///
/// The state of a `--rm` container is not fsynced: like its overlay (mounted
/// `volatile`) it has nothing to keep after a host crash, which leaves no
/// supervisor and no cgroup behind. Such a crash may leave its `state.json`
/// missing or empty, which [`is_unwritten`] tells and reconcile removes. The
/// three fsyncs were the largest part of a short `launch --rm` (several ms each,
/// tens under I/O load). The rename keeps the write atomic for every reader.
pub fn save(paths: &Paths, state: &ContainerState) -> Result<()> {
    let path = state_path(paths, &state.id);
    let data = serde_json::to_vec_pretty(state).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    replace(&path, &data, !state.auto_remove)
}

/// Whether container `id`'s `state.json` was never written: missing, or empty
/// (what a host crash leaves of an unsynced write, see [`save`]).
pub fn is_unwritten(paths: &Paths, id: &str) -> bool {
    match std::fs::metadata(state_path(paths, id)) {
        Ok(m) => m.len() == 0,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Replaces `path` with `data` atomically (temp file in the same dir, fsync, rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    replace(path, data, true)
}

/// Replaces `path` with `data` through a temporary file in the same directory
/// and a rename, so readers see the old or the new content; `durable` fsyncs it
/// first, so a host crash cannot leave it empty.
fn replace(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Invalid(format!("no parent directory: {}", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).at("create", &tmp)?;
    f.write_all(data).at("write", &tmp)?;
    if durable {
        f.sync_all().at("fsync", &tmp)?;
    }
    drop(f);
    std::fs::rename(&tmp, path).at("rename into place", path)
}

/// Reads one container's state.
pub fn load(paths: &Paths, id: &str) -> Result<ContainerState> {
    read_state_file(&state_path(paths, id))
}

fn read_state_file(path: &Path) -> Result<ContainerState> {
    let data = std::fs::read(path).at("read", path)?;
    serde_json::from_slice(&data).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// All containers under `state_dir`, oldest first. Directories without a readable
/// `state.json` (a launch in progress) are skipped.
///
/// This is the entry point for `agent serve`: it needs nothing else from the runtime.
pub fn list(state_dir: &Path) -> Result<Vec<ContainerState>> {
    let dir = state_dir.join("containers");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at("read directory", &dir),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.at("read directory", &dir)?;
        let path = entry.path().join("state.json");
        match read_state_file(&path) {
            Ok(s) => out.push(s),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
    Ok(out)
}

/// Like [`list`], but a corrupt or unreadable `state.json` is returned as an error
/// beside the others instead of hiding them all: what `agent serve` wants.
pub fn list_lenient(state_dir: &Path) -> (Vec<ContainerState>, Vec<Error>) {
    let dir = state_dir.join("containers");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), Vec::new()),
        Err(e) => {
            return (
                Vec::new(),
                vec![Error::Io {
                    op: "read directory",
                    path: dir,
                    source: e,
                }],
            );
        }
    };
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    for entry in entries.flatten() {
        match read_state_file(&entry.path().join("state.json")) {
            Ok(s) => out.push(s),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(e),
        }
    }
    out.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
    (out, errors)
}

/// Finds a container by full id, unique id prefix, or name.
pub fn find(paths: &Paths, key: &str) -> Result<ContainerState> {
    let all = list(paths.root())?;
    if let Some(s) = all.iter().find(|s| s.id == key || s.name == key) {
        return Ok(s.clone());
    }
    let matches: Vec<_> = all.iter().filter(|s| s.id.starts_with(key)).collect();
    match matches.as_slice() {
        [one] if !key.is_empty() => Ok((*one).clone()),
        [] | [_] => Err(Error::NoSuchContainer {
            key: key.to_owned(),
        }),
        _ => Err(Error::Invalid(format!(
            "container id prefix {key} is ambiguous"
        ))),
    }
}

/// Whether `name` is a name as Docker spells container and volume names,
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, with a length in `len`.
pub(crate) fn docker_name(name: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Validates a container name the way Docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn validate_name(name: &str) -> Result<()> {
    if docker_name(name, 1..=128) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid container name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most 128)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, name: &str, created: f64) -> ContainerState {
        ContainerState {
            created_at: created,
            ..ContainerState::for_test(id, name, "busybox:latest")
        }
    }

    #[test]
    fn save_list_find_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        for (id, name, t) in [("abc123", "one", 2.0), ("abd456", "two", 1.0)] {
            std::fs::create_dir_all(paths.container(id)).unwrap();
            save(&paths, &sample(id, name, t)).unwrap();
        }
        // A directory still being created has no state.json and is skipped.
        std::fs::create_dir_all(paths.container("partial")).unwrap();
        let all = list(dir.path()).unwrap();
        assert_eq!(
            all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["two", "one"]
        );
        assert_eq!(find(&paths, "one").unwrap().id, "abc123");
        assert_eq!(find(&paths, "abd").unwrap().name, "two");
        assert!(matches!(find(&paths, "ab"), Err(Error::Invalid(_))));
        assert!(matches!(
            find(&paths, "zzz"),
            Err(Error::NoSuchContainer { .. })
        ));
    }

    #[test]
    fn own_start_time_is_read() {
        let me = std::process::id() as i32;
        let mut s = sample("x", "x", 0.0);
        s.supervisor_pid = Some(me);
        s.supervisor_started = process_start_ticks(me);
        assert!(s.supervisor_started.is_some());
        assert!(s.supervisor_alive());
        s.supervisor_started = s.supervisor_started.map(|t| t + 1);
        assert!(
            !s.supervisor_alive(),
            "a different start time is another process"
        );
    }

    #[test]
    fn stat_lines_are_parsed_past_the_command_name() {
        // Field 22 (start time) is 19 fields after the state; the command name may
        // hold spaces and parentheses.
        let tail = "1 1 0 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 4242 1000 200";
        let stat = parse_stat(&format!("77 (a) (b c) S {tail}\n")).unwrap();
        assert_eq!(
            stat,
            ProcessStat {
                state: 'S',
                start_ticks: 4242
            }
        );
        assert_eq!(parse_stat(&format!("77 (x) Z {tail}")).unwrap().state, 'Z');
        for bad in ["", "77 (x)", "77 (x) S 1 2", "77 x S", "77 (x)\u{e9}S"] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
        // Found by the proc_files fuzz target: the byte after the command name was
        // skipped unseen, so `)0S` read as state S.
        assert_eq!(parse_stat(&format!("77 (x)0S {tail}")), None);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("web-1.a_b").is_ok());
        for bad in ["", "-x", "a/b", "a b", "ä"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
