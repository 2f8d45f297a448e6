//! Which cgroup layout this host has (v1, hybrid, v2) and where each controller lives.
//!
//! Detection looks only at the files under a given root, so tests point it at a
//! fixture tree and the daemon at `/sys/fs/cgroup`.

use super::CgroupError;
use std::path::{Path, PathBuf};

/// The layout of the cgroup mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
}

impl Controller {
    /// The controller's name as the kernel spells it.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Pids => "pids",
        }
    }
}

/// A detected cgroup hierarchy rooted at a directory.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    root: PathBuf,
    version: Version,
    memory: Option<PathBuf>,
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    pids: Option<PathBuf>,
    /// The cgroup2 mount: the root itself on v2, `unified/` on hybrid.
    unified: Option<PathBuf>,
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
                memory: None,
                cpu: None,
                cpuacct: None,
                pids: None,
                unified: Some(root.clone()),
                root,
            });
        }
        let find = |names: &[&str]| {
            names
                .iter()
                .map(|n| root.join(n))
                .find(|p| p.join("cgroup.procs").is_file())
        };
        let memory = find(&["memory"]);
        let cpu = find(&["cpu", "cpu,cpuacct", "cpuacct,cpu"]);
        let cpuacct = find(&["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]);
        let pids = find(&["pids"]);
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
            memory,
            cpu,
            cpuacct,
            pids,
            unified,
        })
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
        let base = match (self.version, controller) {
            (Version::V2, _) => self.unified.as_ref(),
            (_, Controller::Memory) => self.memory.as_ref(),
            (_, Controller::Cpu) => self.cpu.as_ref(),
            (_, Controller::Cpuacct) => self.cpuacct.as_ref(),
            (_, Controller::Pids) => self.pids.as_ref(),
        }?;
        Some(join_rel(base, rel))
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
        let mut dirs: Vec<PathBuf> = [
            Controller::Memory,
            Controller::Cpu,
            Controller::Cpuacct,
            Controller::Pids,
        ]
        .into_iter()
        .filter_map(|c| self.dir(c, rel))
        .collect();
        dirs.dedup();
        dirs
    }
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
    }

    #[test]
    fn detects_hybrid_with_separate_cpu_and_cpuacct() {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "cpuacct", "pids"] {
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
            h.unified_dir("/docker/x"),
            Some(t.path().join("unified/docker/x"))
        );
        assert_eq!(h.walk_root(), Some(t.path().join("memory").as_path()));
        assert_eq!(h.controller_dirs("/a").len(), 4);
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
