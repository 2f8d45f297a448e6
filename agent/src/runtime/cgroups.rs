//! The container's cgroup, under the agent's own subtree: `/agent/<id>` in every v1
//! hierarchy, or `<root>/agent/<id>` on the unified (v2) hierarchy with the
//! controllers enabled in `cgroup.subtree_control` on the way down. On a hybrid
//! host (v1 controllers plus a cgroup2 mount such as `unified/`) the cgroup is also
//! created on the cgroup2 mount, without limits, as runc does: that is where the
//! kernel keeps the container's PSI files.
//!
//! Limits are written before the container's process is moved in, so the command
//! never runs unbounded.

use super::state::{CgroupInfo, CgroupVersion, Limits};
use super::{Error, IoContext, Result, sys};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Default cgroup mount root.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";
/// The agent's subtree below each hierarchy root.
pub const SUBTREE: &str = "agent";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// How cgroups are mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Unified hierarchy at this root.
    V2 { root: PathBuf },
    /// Per-controller hierarchies: mount point → controllers on it.
    V1 {
        hierarchies: BTreeMap<PathBuf, Vec<String>>,
        /// The cgroup2 mount of a hybrid host (`<root>/unified`), if any.
        unified: Option<PathBuf>,
    },
}

/// Detects the layout under `root` (normally `/sys/fs/cgroup`). v1 hierarchies are
/// read from `/proc/self/mountinfo`.
pub fn detect(root: &Path) -> Result<Layout> {
    if sys::fs_magic(root)? == CGROUP2_SUPER_MAGIC {
        return Ok(Layout::V2 {
            root: root.to_path_buf(),
        });
    }
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").at("read", "/proc/self/mountinfo")?;
    let hierarchies = parse_v1_mounts(&mountinfo, root);
    if hierarchies.is_empty() {
        return Err(Error::NotFound(format!(
            "no cgroup hierarchies mounted under {}",
            root.display()
        )));
    }
    let unified = parse_unified_mount(&mountinfo, root);
    Ok(Layout::V1 {
        hierarchies,
        unified,
    })
}

/// The cgroup2 mount point below `root` on a hybrid host, from mountinfo text.
pub fn parse_unified_mount(mountinfo: &str, root: &Path) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        let mp = PathBuf::from(pre.split_whitespace().nth(4)?);
        (mp.starts_with(root) && mp != root).then_some(mp)
    })
}

/// v1 mount points under `root` and their controllers, from mountinfo text.
pub fn parse_v1_mounts(mountinfo: &str, root: &Path) -> BTreeMap<PathBuf, Vec<String>> {
    let mut out = BTreeMap::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split_whitespace();
        if post.next() != Some("cgroup") {
            continue;
        }
        let _source = post.next();
        let opts = post.next().unwrap_or("");
        let Some(mount_point) = pre.split_whitespace().nth(4) else {
            continue;
        };
        let mp = PathBuf::from(mount_point);
        if !mp.starts_with(root) {
            continue;
        }
        let controllers: Vec<String> = opts
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro" | "relatime" | "nosuid" | "nodev" | "noexec"))
            .map(str::to_string)
            .collect();
        out.insert(mp, controllers);
    }
    out
}

/// The container's cgroup once created.
#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    info: CgroupInfo,
    memory_dir: Option<PathBuf>,
    layout: Option<Layout>,
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).at("write", path)
}

fn mkdir_retry(dir: &Path) -> Result<()> {
    // A concurrent cleanup may remove the empty `agent` parent between the two steps.
    for _ in 0..3 {
        match std::fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at("create cgroup", dir),
        }
    }
    std::fs::create_dir_all(dir).at("create cgroup", dir)
}

impl ContainerCgroup {
    /// Creates the cgroup of container `id` and writes `limits`. On failure nothing
    /// is left behind.
    pub fn create(layout: &Layout, id: &str, limits: &Limits) -> Result<Self> {
        let rel = format!("/{SUBTREE}/{id}");
        let mut cg = match layout {
            Layout::V2 { root } => ContainerCgroup {
                info: CgroupInfo {
                    version: CgroupVersion::V2,
                    path: rel.clone(),
                    dirs: vec![root.join(SUBTREE).join(id)],
                },
                memory_dir: Some(root.join(SUBTREE).join(id)),
                layout: Some(layout.clone()),
            },
            Layout::V1 { .. } => ContainerCgroup {
                info: CgroupInfo {
                    version: CgroupVersion::V1,
                    path: rel.clone(),
                    dirs: Vec::new(),
                },
                memory_dir: None,
                layout: Some(layout.clone()),
            },
        };
        let result = match layout {
            Layout::V2 { root } => cg.create_v2(root, id, limits),
            Layout::V1 {
                hierarchies,
                unified,
            } => cg.create_v1(hierarchies, unified.as_deref(), id, limits),
        };
        if let Err(e) = result {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    fn create_v2(&mut self, root: &Path, id: &str, limits: &Limits) -> Result<()> {
        let parent = root.join(SUBTREE);
        let dir = parent.join(id);
        let available = std::fs::read_to_string(root.join("cgroup.controllers"))
            .at("read", root.join("cgroup.controllers"))?;
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
        std::fs::create_dir(&dir).at("create cgroup", &dir)?;
        let need = |file: &str, what: &str| -> Result<PathBuf> {
            let p = dir.join(file);
            if p.exists() {
                Ok(p)
            } else {
                Err(Error::NotFound(format!(
                    "cannot apply {what}: {} is missing (controller not enabled)",
                    p.display()
                )))
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

    fn create_v1(
        &mut self,
        hierarchies: &BTreeMap<PathBuf, Vec<String>>,
        unified: Option<&Path>,
        id: &str,
        limits: &Limits,
    ) -> Result<()> {
        for (mount, controllers) in hierarchies {
            let parent = mount.join(SUBTREE);
            let dir = parent.join(id);
            mkdir_retry(&parent)?;
            std::fs::create_dir(&dir).at("create cgroup", &dir)?;
            self.info.dirs.push(dir.clone());
            let has = |c: &str| controllers.iter().any(|x| x == c);
            if has("cpuset") {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    for (from, to) in [(mount.as_path(), &parent), (&parent, &dir)] {
                        let cur = std::fs::read_to_string(to.join(f)).unwrap_or_default();
                        if cur.trim().is_empty() {
                            let v =
                                std::fs::read_to_string(from.join(f)).at("read", from.join(f))?;
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
        if let Some(unified) = unified {
            // No limits here (the v1 controllers hold them); processes are moved in
            // with the rest, so the kernel accounts their pressure to this cgroup.
            let parent = unified.join(SUBTREE);
            let dir = parent.join(id);
            mkdir_retry(&parent)?;
            std::fs::create_dir(&dir).at("create cgroup", &dir)?;
            self.info.dirs.push(dir);
        }
        let present = |c: &str| hierarchies.values().flatten().any(|x| x == c);
        for (c, wanted) in [
            ("memory", limits.memory_bytes.is_some()),
            ("cpu", limits.cpu_quota_us.is_some()),
            ("pids", limits.pids_max.is_some()),
        ] {
            if wanted && !present(c) {
                return Err(Error::NotFound(format!(
                    "cannot apply the {c} limit: no {c} cgroup hierarchy is mounted"
                )));
            }
        }
        Ok(())
    }

    /// Re-opens a container's cgroup from its recorded state.
    pub fn from_info(info: &CgroupInfo) -> Self {
        let memory_dir = match info.version {
            CgroupVersion::V2 => info.dirs.first().cloned(),
            CgroupVersion::V1 => info
                .dirs
                .iter()
                .find(|d| d.join("memory.limit_in_bytes").exists())
                .cloned(),
        };
        ContainerCgroup {
            info: info.clone(),
            memory_dir,
            layout: None,
        }
    }

    /// The host layout it was created in (`None` when re-opened from state).
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.as_ref()
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

    /// Number of OOM kills the memory controller recorded.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory_dir else {
            return 0;
        };
        let file = match self.info.version {
            CgroupVersion::V2 => dir.join("memory.events"),
            CgroupVersion::V1 => dir.join("memory.oom_control"),
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
                if self.info.version == CgroupVersion::V2 && dir.join("cgroup.kill").exists() {
                    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
                }
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = sys::kill(pid, libc::SIGKILL);
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

/// The cgroup root in use: `AGENT_CGROUP_ROOT` or `/sys/fs/cgroup`.
pub fn root() -> PathBuf {
    std::env::var_os("AGENT_CGROUP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_mounts_from_mountinfo() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 1 0:40 / /other/cgroup rw - cgroup cgroup rw,pids
";
        let m = parse_v1_mounts(text, Path::new("/sys/fs/cgroup"));
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[Path::new("/sys/fs/cgroup/cpu,cpuacct")],
            ["cpu", "cpuacct"]
        );
        assert_eq!(m[Path::new("/sys/fs/cgroup/systemd")], ["name=systemd"]);
        assert_eq!(
            parse_unified_mount(text, Path::new("/sys/fs/cgroup")),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let v2_root = "41 23 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_unified_mount(v2_root, Path::new("/sys/fs/cgroup")),
            None
        );
    }

    #[test]
    fn v2_create_names_missing_controller_files_and_cleans_up() {
        // A plain directory stands in for the cgroup2 root.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let layout = Layout::V2 {
            root: root.to_path_buf(),
        };
        let id = "c0ffee";
        let cg_dir = root.join(SUBTREE).join(id);
        // A plain directory has none of the files a real controller would create, so
        // asking for limits must fail with the missing file named, leaving nothing.
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            memory_swap_bytes: Some(64 << 20),
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            pids_max: Some(10),
        };
        let err = ContainerCgroup::create(&layout, id, &limits).unwrap_err();
        assert!(err.to_string().contains("memory.max"), "{err}");
        assert!(!cg_dir.exists(), "failed create must clean up");
        // Without limits the cgroup is created and removable.
        let cg = ContainerCgroup::create(&layout, id, &Limits::default()).unwrap();
        assert!(cg_dir.is_dir());
        assert_eq!(cg.info().path, "/agent/c0ffee");
        cg.destroy();
        assert!(!cg_dir.exists());
    }
}
