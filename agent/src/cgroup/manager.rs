//! The container's cgroup, under the agent's own subtree: `/agent/<id>` in every v1
//! hierarchy, or `<root>/agent/<id>` on the unified (v2) hierarchy with the
//! controllers enabled in `cgroup.subtree_control` on the way down. On a hybrid
//! host (v1 controllers plus a cgroup2 mount such as `unified/`) the cgroup is also
//! created on the cgroup2 mount, without limits, as runc does: that is where the
//! kernel keeps the container's PSI files.
//!
//! Limits are written before the container's process is moved in, so the command
//! never runs unbounded.

use super::hierarchy::{Hierarchy, Version};
use super::{CgroupError, io_error};
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The agent's subtree below each hierarchy root: containers live at
/// `/agent/<id>`. The one place that names it.
pub const AGENT_SUBTREE: &str = "agent";

/// The cgroup path of the agent's container `id`.
pub fn agent_cgroup_path(id: &str) -> String {
    format!("/{AGENT_SUBTREE}/{id}")
}

/// Resource limits of a container; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Memory + swap limit in bytes (Docker's `--memory-swap`).
    pub memory_swap_bytes: Option<u64>,
    /// CFS quota per period, microseconds.
    pub cpu_quota_us: Option<u64>,
    /// CFS period, microseconds (set whenever a quota is).
    pub cpu_period_us: Option<u64>,
    /// Maximum number of tasks.
    pub pids_max: Option<u64>,
}

impl Limits {
    /// What an OCI spec's `linux.resources` asks of memory, cpu and pids (the
    /// only controllers this manager writes): `memory.swap` is memory plus swap
    /// (-1: unlimited), `cpu.quota`/`cpu.period` the CFS bandwidth.
    pub fn from_resources(resources: Option<&LinuxResources>) -> Limits {
        let Some(r) = resources else {
            return Limits::default();
        };
        let positive = |v: Option<i64>| v.filter(|v| *v > 0).map(|v| v as u64);
        let memory = r.memory().as_ref();
        let cpu = r.cpu().as_ref();
        let memory_bytes = positive(memory.and_then(|m| m.limit()));
        let cpu_quota_us = positive(cpu.and_then(|c| c.quota()));
        Limits {
            memory_bytes,
            memory_swap_bytes: positive(memory.and_then(|m| m.swap())),
            cpu_quota_us,
            cpu_period_us: cpu_quota_us.map(|_| cpu.and_then(|c| c.period()).unwrap_or(100_000)),
            pids_max: positive(r.pids().as_ref().map(|p| p.limit())),
        }
    }
}

/// The container's cgroup, as `state.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupInfo {
    /// The host's layout when it was made (`v1`, `hybrid` or `v2`).
    pub version: Version,
    /// Path relative to each hierarchy root, e.g. `/agent/<id>`.
    pub path: String,
    /// Absolute directories created for it (one per v1 hierarchy, one on v2).
    pub dirs: Vec<PathBuf>,
}

/// The container's cgroup once created.
#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    info: CgroupInfo,
    memory_dir: Option<PathBuf>,
    /// The hierarchy it was created in (`None` when re-opened from state).
    hierarchy: Option<Hierarchy>,
}

/// See [`ContainerCgroup::self_placement`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfPlacement {
    /// The cgroup2 directory to clone the process into.
    pub clone_into: Option<PathBuf>,
    /// The v1 `tasks` files the process writes `0` into.
    pub v1_tasks: Vec<PathBuf>,
}

type Result<T> = std::result::Result<T, CgroupError>;

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(io_error("write", path))
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir(dir).map_err(io_error("create cgroup", dir))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_error("read", path))
}

fn mkdir_retry(dir: &Path) -> Result<()> {
    // A concurrent cleanup may remove the empty `agent` parent between the two
    // steps, or between mkdir's EEXIST and create_dir_all's check that it is there.
    for _ in 0..3 {
        match std::fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::AlreadyExists
                ) =>
            {
                continue;
            }
            Err(e) => return Err(io_error("create cgroup", dir)(e)),
        }
    }
    std::fs::create_dir_all(dir).map_err(io_error("create cgroup", dir))
}

impl ContainerCgroup {
    /// The directories [`ContainerCgroup::create`] makes for container `id`, as
    /// `state.json` records them before they exist: a launch killed half-way
    /// through creating them leaves state that `rm` can clean up.
    pub fn planned(hierarchy: &Hierarchy, id: &str) -> CgroupInfo {
        let dirs = match (hierarchy.version(), hierarchy.unified_root()) {
            (Version::V2, Some(root)) => vec![root.join(AGENT_SUBTREE).join(id)],
            _ => hierarchy
                .v1_mounts()
                .iter()
                .map(|m| m.dir.join(AGENT_SUBTREE).join(id))
                .chain(
                    hierarchy
                        .unified_root()
                        .map(|u| u.join(AGENT_SUBTREE).join(id)),
                )
                .collect(),
        };
        CgroupInfo {
            version: hierarchy.version(),
            path: agent_cgroup_path(id),
            dirs,
        }
    }

    /// Creates the cgroup of container `id` in `hierarchy` and writes the limits
    /// of the spec's `linux.resources`. On failure nothing is left behind.
    pub fn create(
        hierarchy: &Hierarchy,
        id: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<Self> {
        let limits = &Limits::from_resources(resources);
        let path = agent_cgroup_path(id);
        let mut cg = ContainerCgroup {
            info: CgroupInfo {
                version: hierarchy.version(),
                path,
                dirs: Vec::new(),
            },
            memory_dir: None,
            hierarchy: Some(hierarchy.clone()),
        };
        let result = match (hierarchy.version(), hierarchy.unified_root()) {
            (Version::V2, Some(root)) => cg.create_v2(root, id, limits),
            _ => cg.create_v1(hierarchy, id, limits),
        };
        if let Err(e) = result {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    fn create_v2(&mut self, root: &Path, id: &str, limits: &Limits) -> Result<()> {
        let parent = root.join(AGENT_SUBTREE);
        let dir = parent.join(id);
        self.info.dirs.push(dir.clone());
        self.memory_dir = Some(dir.clone());
        let available = read(&root.join("cgroup.controllers"))?;
        let wanted: Vec<&str> = ["cpu", "memory", "pids", "io"]
            .into_iter()
            .filter(|c| available.split_whitespace().any(|a| a == *c))
            .collect();
        for c in &wanted {
            // Already enabled is fine; failures surface below as missing limit files.
            let _ = write(&root.join("cgroup.subtree_control"), &format!("+{c}"));
        }
        mkdir_retry(&parent)?;
        for c in &wanted {
            let _ = write(&parent.join("cgroup.subtree_control"), &format!("+{c}"));
        }
        create_dir(&dir)?;
        let need = |file: &str, option: &'static str| -> Result<PathBuf> {
            let path = dir.join(file);
            if path.exists() {
                Ok(path)
            } else {
                Err(CgroupError::MissingControllerFile { option, path })
            }
        };
        if let Some(m) = limits.memory_bytes {
            write(&need("memory.max", "--memory")?, &m.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                let value = match limits.memory_swap_bytes {
                    Some(total) => total.saturating_sub(m).to_string(),
                    None => "max".to_string(),
                };
                write(&swap, &value)?;
            }
        }
        if let (Some(q), Some(p)) = (limits.cpu_quota_us, limits.cpu_period_us) {
            write(&need("cpu.max", "--cpus")?, &format!("{q} {p}"))?;
        }
        if let Some(p) = limits.pids_max {
            write(&need("pids.max", "--pids-limit")?, &p.to_string())?;
        }
        Ok(())
    }

    fn create_v1(&mut self, hierarchy: &Hierarchy, id: &str, limits: &Limits) -> Result<()> {
        for m in hierarchy.v1_mounts() {
            let mount = &m.dir;
            let parent = mount.join(AGENT_SUBTREE);
            let dir = parent.join(id);
            mkdir_retry(&parent)?;
            create_dir(&dir)?;
            self.info.dirs.push(dir.clone());
            let has = |c: &str| m.has(c);
            if has("cpuset") {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    for (from, to) in [(mount.as_path(), &parent), (&parent, &dir)] {
                        let cur = std::fs::read_to_string(to.join(f)).unwrap_or_default();
                        if cur.trim().is_empty() {
                            let v = read(&from.join(f))?;
                            write(&to.join(f), v.trim())?;
                        }
                    }
                }
            }
            if has("memory") {
                self.memory_dir = Some(dir.clone());
                if let Some(m) = limits.memory_bytes {
                    write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        let v = limits
                            .memory_swap_bytes
                            .map_or("-1".to_string(), |s| s.to_string());
                        write(&memsw, &v)?;
                    }
                }
            }
            if has("cpu")
                && let (Some(q), Some(p)) = (limits.cpu_quota_us, limits.cpu_period_us)
            {
                write(&dir.join("cpu.cfs_period_us"), &p.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
            }
            if has("pids")
                && let Some(p) = limits.pids_max
            {
                write(&dir.join("pids.max"), &p.to_string())?;
            }
        }
        if let Some(unified) = hierarchy.unified_root() {
            // No limits here (the v1 controllers hold them); processes are moved in
            // with the rest, so the kernel accounts their pressure to this cgroup.
            let parent = unified.join(AGENT_SUBTREE);
            let dir = parent.join(id);
            mkdir_retry(&parent)?;
            create_dir(&dir)?;
            self.info.dirs.push(dir);
        }
        let present = |c: &str| hierarchy.v1_mounts().iter().any(|m| m.has(c));
        for (c, wanted) in [
            ("memory", limits.memory_bytes.is_some()),
            ("cpu", limits.cpu_quota_us.is_some()),
            ("pids", limits.pids_max.is_some()),
        ] {
            if wanted && !present(c) {
                return Err(CgroupError::NoHierarchy(c));
            }
        }
        Ok(())
    }

    /// Re-opens a container's cgroup from its recorded state.
    pub fn from_info(info: &CgroupInfo) -> Self {
        let memory_dir = match info.version {
            Version::V2 => info.dirs.first().cloned(),
            Version::V1 | Version::Hybrid => info
                .dirs
                .iter()
                .find(|d| d.join("memory.limit_in_bytes").exists())
                .cloned(),
        };
        ContainerCgroup {
            info: info.clone(),
            memory_dir,
            hierarchy: None,
        }
    }

    /// The hierarchy it was created in (`None` when re-opened from state).
    pub fn hierarchy(&self) -> Option<&Hierarchy> {
        self.hierarchy.as_ref()
    }

    /// What goes into `state.json`.
    pub fn info(&self) -> &CgroupInfo {
        &self.info
    }

    /// Moves `pid` into the cgroup (every hierarchy on v1).
    pub fn add_process(&self, pid: i32) -> Result<()> {
        for dir in &self.info.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// How a process about to be cloned can enter this cgroup by itself, so that
    /// nobody writes its pid into a `cgroup.procs`: every such write takes the
    /// kernel's global threadgroup lock for writing, which waits for an RCU
    /// grace period (10–20 ms for the ten hierarchies of a hybrid host here).
    /// The cgroup2 directory is entered at birth (`clone3`'s
    /// `CLONE_INTO_CGROUP`), and the process writes `0` into each v1 `tasks`
    /// file itself, which moves only the calling thread and takes no global
    /// lock. `None` when the hierarchy is unknown (a cgroup re-opened from
    /// state): then [`Self::add_process`].
    pub fn self_placement(&self) -> Option<SelfPlacement> {
        let hierarchy = self.hierarchy.as_ref()?;
        let unified = hierarchy.unified_root();
        let mut placement = SelfPlacement::default();
        for dir in &self.info.dirs {
            if unified.is_some_and(|u| dir.starts_with(u)) {
                placement.clone_into = Some(dir.clone());
            } else {
                placement.v1_tasks.push(dir.join("tasks"));
            }
        }
        Some(placement)
    }

    /// Number of OOM kills the memory controller recorded.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory_dir else {
            return 0;
        };
        let file = match self.info.version {
            Version::V2 => dir.join("memory.events"),
            Version::V1 | Version::Hybrid => dir.join("memory.oom_control"),
        };
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Pids still in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for dir in &self.info.dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kills whatever is left in the cgroup and removes its directories (and the
    /// agent's parent directory when it is empty). Best effort; waits up to 5 s.
    pub fn destroy(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in self.info.dirs.iter().rev() {
            if !dir.exists() {
                continue;
            }
            loop {
                if dir.join("cgroup.kill").exists() {
                    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
                }
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) takes plain integers; a pid that has gone is ESRCH.
                    let _ = unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => break,
                }
            }
            if let Some(parent) = dir.parent() {
                // Fails harmlessly (EBUSY) while other containers' cgroups live there.
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_create_names_missing_controller_files_and_cleans_up() {
        // A plain directory stands in for the cgroup2 root.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let layout = Hierarchy::detect(root).unwrap();
        let id = "c0ffee";
        let cg_dir = root.join(AGENT_SUBTREE).join(id);
        // A plain directory has none of the files a real controller would create, so
        // asking for limits must fail with the missing file named, leaving nothing.
        use oci_spec::runtime::{
            LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
        };
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(64i64 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(10i64).build().unwrap())
            .build()
            .unwrap();
        assert_eq!(
            Limits::from_resources(Some(&resources)),
            Limits {
                memory_bytes: Some(64 << 20),
                memory_swap_bytes: Some(64 << 20),
                cpu_quota_us: Some(50_000),
                cpu_period_us: Some(100_000),
                pids_max: Some(10),
            }
        );
        let err = ContainerCgroup::create(&layout, id, Some(&resources)).unwrap_err();
        assert!(err.to_string().contains("memory.max"), "{err}");
        assert!(!cg_dir.exists(), "failed create must clean up");
        // Without limits the cgroup is created and removable.
        let cg = ContainerCgroup::create(&layout, id, None).unwrap();
        assert!(cg_dir.is_dir());
        assert_eq!(cg.info(), &ContainerCgroup::planned(&layout, id));
        assert_eq!(cg.info().path, "/agent/c0ffee");
        // On v2 a new process is cloned straight into it, with nothing to write.
        assert_eq!(
            cg.self_placement(),
            Some(SelfPlacement {
                clone_into: Some(cg_dir.clone()),
                v1_tasks: Vec::new(),
            })
        );
        // Re-opened from state, the hierarchy is unknown: the pid is written.
        assert_eq!(ContainerCgroup::from_info(cg.info()).self_placement(), None);
        cg.destroy();
        assert!(!cg_dir.exists());
    }
}
