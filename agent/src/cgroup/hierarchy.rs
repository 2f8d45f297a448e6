//! Which cgroup layout this host has (v1, hybrid, v2) and where each controller lives.
//! The one detector: the exporter reads through it and the runtime's cgroup manager
//! creates through it.
//!
//! Detection looks only at the files under a given root, so tests point it at a
//! fixture tree and the daemon at `/sys/fs/cgroup`. A v1 hierarchy is a directory of
//! the root holding `cgroup.procs`; its name says its controllers, as systemd and
//! Docker mount them (`cpu,cpuacct`, `memory`, a named `systemd`).

use super::CgroupError;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The layout of the cgroup mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// Legacy: one mount per controller, no cgroup2.
    V1,
    /// Controllers on v1 mounts plus a cgroup2 mount at `unified/` (systemd's hybrid mode).
    Hybrid,
    /// A single cgroup2 mount holding every controller.
    V2,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::Hybrid => "hybrid",
            Version::V2 => "v2",
        })
    }
}

/// The controllers whose files the agent reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Cpu,
    Cpuacct,
    Pids,
    /// Block I/O: `blkio` on v1, `io` on the cgroup2 mount.
    Blkio,
}

impl Controller {
    /// Every controller the agent reads or writes.
    pub const ALL: [Controller; 5] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Pids,
        Controller::Blkio,
    ];

    /// The controller's name as the kernel spells it on v1 (`io` is blkio's v2 name).
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Pids => "pids",
            Controller::Blkio => "blkio",
        }
    }
}

/// The default root of the cgroup mounts.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// The kernel's v1 controllers; any other v1 hierarchy is a named one
/// (`name=systemd`).
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
    "debug",
];

/// One v1 hierarchy: its mount directory and what is mounted there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// The mount directory, e.g. `/sys/fs/cgroup/cpu,cpuacct`.
    pub dir: PathBuf,
    /// Its controllers (`cpu`, `cpuacct`), or `name=<name>` for a named hierarchy.
    pub controllers: Vec<String>,
}

impl V1Mount {
    /// The `-o` data that mounts this hierarchy again (in a container).
    pub fn mount_data(&self) -> String {
        if self.controllers.iter().all(|c| c.starts_with("name=")) {
            format!("none,{}", self.controllers.join(","))
        } else {
            self.controllers.join(",")
        }
    }

    /// True when `controller` is mounted here.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// A detected cgroup hierarchy rooted at a directory.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    root: PathBuf,
    version: Version,
    /// Every v1 hierarchy under the root (none on v2), each once.
    v1: Vec<V1Mount>,
    memory: Option<PathBuf>,
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    pids: Option<PathBuf>,
    blkio: Option<PathBuf>,
    /// The cgroup2 mount: the root itself on v2, `unified/` on hybrid.
    unified: Option<PathBuf>,
    /// Mount directories held open, shared by every clone.
    held: Arc<HeldMounts>,
}

/// The mount directories of a hierarchy held open, each opened on first use.
#[derive(Debug, Default)]
struct HeldMounts(Mutex<Vec<Arc<HeldMount>>>);

/// A mount directory held open (`O_PATH`): a file opened relative to it makes
/// the kernel walk only the path below the mount. On cgroupfs every component of
/// a walk takes the hierarchy's kernfs locks, which the scrape's reading threads
/// contend on, so the walk from `/` through `/sys/fs/cgroup/<controller>` is the
/// dearer part of opening a cgroup file. Shared: a cgroup's reader holds its
/// mounts, not paths of its own.
#[derive(Debug)]
pub struct HeldMount {
    path: PathBuf,
    /// `None` when it could not be opened: files are then opened by full path.
    fd: Option<OwnedFd>,
}

impl HeldMount {
    /// The path of file `name` of cgroup `rel` (e.g. `/docker/abc`).
    pub fn file_path(&self, rel: &str, name: &str) -> PathBuf {
        join_rel(&self.path, rel).join(name)
    }

    /// Opens file `name` of cgroup `rel` for reading.
    pub fn open(&self, rel: &str, name: &str) -> std::io::Result<std::fs::File> {
        use std::os::unix::ffi::OsStrExt;
        let Some(fd) = &self.fd else {
            return std::fs::File::open(self.file_path(rel, name));
        };
        let below = rel.trim_start_matches('/');
        let mut path = Vec::with_capacity(below.len() + 1 + name.len());
        if !below.is_empty() {
            path.extend_from_slice(below.as_bytes());
            path.push(b'/');
        }
        path.extend_from_slice(name.as_bytes());
        let file = rustix::fs::openat(
            fd,
            std::ffi::OsStr::from_bytes(&path),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(std::fs::File::from(file))
    }
}

impl Hierarchy {
    /// Detects the layout under `root` (normally `/sys/fs/cgroup`).
    pub fn detect(root: impl Into<PathBuf>) -> Result<Self, CgroupError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(CgroupError::NotCgroupRoot(root));
        }
        if root.join("cgroup.controllers").is_file() {
            return Ok(Hierarchy {
                version: Version::V2,
                v1: Vec::new(),
                memory: None,
                cpu: None,
                cpuacct: None,
                pids: None,
                blkio: None,
                unified: Some(root.clone()),
                root,
                held: Arc::default(),
            });
        }
        let v1 = v1_mounts(&root)?;
        let find = |controller: &str| {
            // The directory named after the controller alone when there is one
            // (systemd links `cpu` to `cpu,cpuacct`), else the combined one.
            let alone = root.join(controller);
            if alone.join("cgroup.procs").is_file() {
                return Some(alone);
            }
            v1.iter().find(|m| m.has(controller)).map(|m| m.dir.clone())
        };
        let memory = find("memory");
        let cpu = find("cpu");
        let cpuacct = find("cpuacct");
        let pids = find("pids");
        let blkio = find("blkio");
        if memory.is_none() && cpu.is_none() && cpuacct.is_none() && pids.is_none() {
            return Err(CgroupError::NotCgroupRoot(root));
        }
        let unified = Some(root.join("unified")).filter(|u| u.join("cgroup.controllers").is_file());
        Ok(Hierarchy {
            version: if unified.is_some() {
                Version::Hybrid
            } else {
                Version::V1
            },
            root,
            v1,
            memory,
            cpu,
            cpuacct,
            pids,
            blkio,
            unified,
            held: Arc::default(),
        })
    }

    /// Detects the layout under `AGENT_CGROUP_ROOT`, or `/sys/fs/cgroup`.
    pub fn detect_host() -> Result<Self, CgroupError> {
        Self::detect(
            std::env::var_os("AGENT_CGROUP_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
        )
    }

    /// Every v1 hierarchy (empty on v2), each once.
    pub fn v1_mounts(&self) -> &[V1Mount] {
        &self.v1
    }

    /// The cgroup2 mount: the root on v2, `unified/` on hybrid, none on v1.
    pub fn unified_root(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// The directory detection started from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// v1, hybrid or v2.
    pub fn version(&self) -> Version {
        self.version
    }

    /// True when controllers live on the cgroup2 mount.
    pub fn is_v2(&self) -> bool {
        self.version == Version::V2
    }

    /// The directory of cgroup `rel` (e.g. `/docker/abc`) for `controller`, if that
    /// controller is mounted.
    pub fn dir(&self, controller: Controller, rel: &str) -> Option<PathBuf> {
        Some(join_rel(self.mount_dir(controller)?, rel))
    }

    /// The mount directory `controller`'s cgroups are under, if it is mounted.
    pub fn mount_dir(&self, controller: Controller) -> Option<&Path> {
        match (self.version, controller) {
            (Version::V2, _) => self.unified.as_deref(),
            (_, Controller::Memory) => self.memory.as_deref(),
            (_, Controller::Cpu) => self.cpu.as_deref(),
            (_, Controller::Cpuacct) => self.cpuacct.as_deref(),
            (_, Controller::Pids) => self.pids.as_deref(),
            (_, Controller::Blkio) => self.blkio.as_deref(),
        }
    }

    /// Mount directory `mount` (one of [`Hierarchy::mount_dir`] or the cgroup2
    /// mount) held open, opened once for this hierarchy and its clones.
    pub fn held_mount(&self, mount: &Path) -> Arc<HeldMount> {
        let mut held = self.held.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = held.iter().find(|m| m.path == mount) {
            return Arc::clone(m);
        }
        let fd = rustix::fs::open(
            mount,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok();
        let m = Arc::new(HeldMount {
            path: mount.to_path_buf(),
            fd,
        });
        held.push(Arc::clone(&m));
        m
    }

    /// Directory of cgroup `rel` on the cgroup2 mount (PSI files live there), if any.
    pub fn unified_dir(&self, rel: &str) -> Option<PathBuf> {
        self.unified.as_ref().map(|u| join_rel(u, rel))
    }

    /// The tree discovery walks: the cgroup2 root on v2, else the first mounted of
    /// memory, pids, cpu (every container runtime creates its cgroups in all of them).
    pub fn walk_root(&self) -> Option<&Path> {
        match self.version {
            Version::V2 => self.unified.as_deref(),
            _ => self
                .memory
                .as_deref()
                .or(self.pids.as_deref())
                .or(self.cpu.as_deref()),
        }
    }

    /// Every directory in which a cgroup named `rel` must be created for the agent's
    /// controllers: one per v1 controller, or the single v2 directory.
    pub fn controller_dirs(&self, rel: &str) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Controller::ALL
            .into_iter()
            .filter_map(|c| self.dir(c, rel))
            .collect();
        dirs.dedup();
        dirs
    }
}

/// The v1 hierarchies under `root`: directories holding `cgroup.procs`, other
/// than the cgroup2 `unified/`, deduplicated through their links.
fn v1_mounts(root: &Path) -> Result<Vec<V1Mount>, CgroupError> {
    let entries = std::fs::read_dir(root).map_err(super::io_error("read", root))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut names: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    // Real directories before links to them, so `cpu,cpuacct` is the one kept.
    names.sort_by_key(|(_, p)| (p.is_symlink(), p.clone()));
    for (name, dir) in names {
        if name == "unified" || !dir.join("cgroup.procs").is_file() {
            continue;
        }
        let real = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        if !seen.insert(real) {
            continue;
        }
        let controllers = name
            .split(',')
            .map(|c| {
                if V1_CONTROLLERS.contains(&c) {
                    c.to_owned()
                } else {
                    format!("name={c}")
                }
            })
            .collect();
        out.push(V1Mount { dir, controllers });
    }
    Ok(out)
}

/// Joins a cgroup path like `/docker/abc` under a mount directory.
fn join_rel(base: &Path, rel: &str) -> PathBuf {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "").unwrap();
    }

    #[test]
    fn detects_v2() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("cgroup.controllers"));
        touch(&t.path().join("cgroup.procs"));
        let h = Hierarchy::detect(t.path()).unwrap();
        assert_eq!(h.version(), Version::V2);
        assert_eq!(
            h.dir(Controller::Memory, "/a/b"),
            Some(t.path().join("a/b"))
        );
        assert_eq!(h.walk_root(), Some(t.path()));
        assert_eq!(h.controller_dirs("/x"), vec![t.path().join("x")]);
        assert_eq!(h.dir(Controller::Blkio, "/x"), Some(t.path().join("x")));
    }

    #[test]
    fn detects_hybrid_with_separate_cpu_and_cpuacct() {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "cpuacct", "pids", "blkio"] {
            touch(&t.path().join(c).join("cgroup.procs"));
        }
        touch(&t.path().join("unified/cgroup.controllers"));
        let h = Hierarchy::detect(t.path()).unwrap();
        assert_eq!(h.version(), Version::Hybrid);
        assert_eq!(
            h.dir(Controller::Cpuacct, "/docker/x"),
            Some(t.path().join("cpuacct/docker/x"))
        );
        assert_eq!(
            h.dir(Controller::Blkio, "/docker/x"),
            Some(t.path().join("blkio/docker/x"))
        );
        assert_eq!(
            h.unified_dir("/docker/x"),
            Some(t.path().join("unified/docker/x"))
        );
        assert_eq!(h.walk_root(), Some(t.path().join("memory").as_path()));
        assert_eq!(h.controller_dirs("/a").len(), 5);
        assert_eq!(h.v1_mounts().len(), 5, "unified/ is not a v1 hierarchy");
    }

    #[test]
    fn v1_mounts_are_listed_once_through_links_with_named_hierarchies() {
        let t = tempfile::tempdir().unwrap();
        for c in ["cpu,cpuacct", "memory", "systemd", "net_cls,net_prio"] {
            touch(&t.path().join(c).join("cgroup.procs"));
        }
        std::os::unix::fs::symlink("cpu,cpuacct", t.path().join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", t.path().join("cpuacct")).unwrap();
        let h = Hierarchy::detect(t.path()).unwrap();
        let mut data: Vec<String> = h.v1_mounts().iter().map(V1Mount::mount_data).collect();
        data.sort();
        assert_eq!(
            data,
            [
                "cpu,cpuacct",
                "memory",
                "net_cls,net_prio",
                "none,name=systemd"
            ]
        );
        assert_eq!(h.dir(Controller::Cpu, "/x"), Some(t.path().join("cpu/x")));
    }

    #[test]
    fn detects_v1_with_combined_cpu_cpuacct() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("cpu,cpuacct/cgroup.procs"));
        touch(&t.path().join("memory/cgroup.procs"));
        let h = Hierarchy::detect(t.path()).unwrap();
        assert_eq!(h.version(), Version::V1);
        assert_eq!(h.dir(Controller::Cpu, "/"), h.dir(Controller::Cpuacct, "/"));
        assert_eq!(
            h.controller_dirs("/a").len(),
            2,
            "cpu and cpuacct share a dir"
        );
        assert_eq!(h.dir(Controller::Pids, "/a"), None);
    }

    #[test]
    fn rejects_non_cgroup_dirs() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            Hierarchy::detect(t.path()),
            Err(CgroupError::NotCgroupRoot(_))
        ));
        assert!(Hierarchy::detect(t.path().join("missing")).is_err());
    }

    #[test]
    fn detects_this_host() {
        if !Path::new("/sys/fs/cgroup").is_dir() {
            eprintln!("skipped: no /sys/fs/cgroup on this machine");
            return;
        }
        let h = Hierarchy::detect("/sys/fs/cgroup").unwrap();
        assert!(h.walk_root().is_some());
    }
}
