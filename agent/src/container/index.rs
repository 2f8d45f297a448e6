//! The one place that answers "which container owns this cgroup path?" for the event
//! path: an in-memory table the [`Tracker`](super::Tracker) refreshes on every scan,
//! with a fallback for containers that started since the last scan.

use super::metadata::MetadataSource;
use super::{ContainerLabels, ContainerLookup};
use crate::cgroup::discovery::{Filter, ancestors, classify, walk};
use crate::cgroup::{Discovered, Hierarchy};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// cgroup path → container labels, shared between the tracker and the eBPF reader.
#[derive(Debug)]
pub struct ContainerIndex {
    known: RwLock<HashMap<String, ContainerLabels>>,
    /// cgroup2 directory inode → container cgroup path.
    by_id: RwLock<CgroupIds>,
    /// Ids asked for and not found since the last scan, and when the cgroup2 tree
    /// was last walked for one: a miss costs a hash lookup, not a walk.
    misses: Mutex<(HashSet<u64>, Option<Instant>)>,
    /// Container cgroups learned from cgroup2 mkdir records: id → (container
    /// path, labels looked up at learn time, when). They outlive scans and the
    /// directory, so a container gone before its events were read still has
    /// its name.
    learned: Mutex<HashMap<u64, Learned>>,
    hierarchy: Hierarchy,
    filter: Filter,
    metadata: MetadataSource,
}

#[derive(Debug, Clone)]
struct Learned {
    path: String,
    labels: ContainerLabels,
    at: Instant,
}

/// Learned ids are kept this long, and at most LEARNED_MAX of them.
const LEARNED_TTL: Duration = Duration::from_secs(600);
const LEARNED_MAX: usize = 8192;

impl ContainerIndex {
    pub fn new(hierarchy: Hierarchy, filter: Filter, metadata: MetadataSource) -> Self {
        ContainerIndex {
            known: RwLock::new(HashMap::new()),
            by_id: RwLock::new(CgroupIds::default()),
            misses: Mutex::new((HashSet::new(), None)),
            learned: Mutex::new(HashMap::new()),
            hierarchy,
            filter,
            metadata,
        }
    }

    /// Replaces the table with what the latest scan found.
    pub fn replace(&self, entries: HashMap<String, ContainerLabels>) {
        if let Some(unified) = self.hierarchy.unified_dir("/") {
            let old = std::mem::take(&mut *self.by_id.write());
            let mut ids = CgroupIds::default();
            for path in entries.keys() {
                // Only new paths cost a stat; known ones keep their inode, and
                // those with no cgroup2 directory (v1 controllers only) stay so.
                let id = match old.by_path.get(path) {
                    Some(id) => Some(*id),
                    None if old.absent.contains(path) => None,
                    None => inode(&unified, path),
                };
                match id {
                    Some(id) => ids.insert(id, path.clone()),
                    None => {
                        ids.absent.insert(path.clone());
                    }
                }
            }
            *self.by_id.write() = ids;
        }
        self.misses.lock().0.clear();
        *self.known.write() = entries;
    }

    fn learned(&self, id: u64) -> Option<Learned> {
        self.learned.lock().get(&id).cloned()
    }

    /// The labels of a learned container whose metadata was not there yet at
    /// learn time: looked up again (once found, remembered).
    fn learned_labels(&self, id: u64, l: Learned) -> ContainerLabels {
        if !l.labels.name.is_empty() {
            return l.labels;
        }
        let Some(meta) = self
            .filter
            .select(&l.path)
            .and_then(|d| self.metadata.lookup(&d))
        else {
            return l.labels;
        };
        let labels = ContainerLabels {
            id: l.path.clone(),
            name: meta.name,
            image: meta.image,
        };
        if let Some(e) = self.learned.lock().get_mut(&id) {
            e.labels = labels.clone();
        }
        labels
    }

    fn path_of_id(&self, id: u64) -> Option<String> {
        if let Some(p) = self.by_id.read().by_id.get(&id) {
            return Some(p.clone());
        }
        if let Some(l) = self.learned(id) {
            return Some(l.path);
        }
        let unified = self.hierarchy.unified_dir("/")?;
        let mut misses = self.misses.lock();
        if misses.0.contains(&id) {
            return None;
        }
        // A container started since the last scan: walk the cgroup2 tree for
        // container cgroups, at most every WALK_EVERY.
        if misses.1.is_some_and(|t| t.elapsed() < WALK_EVERY) {
            return None;
        }
        misses.1 = Some(Instant::now());
        let found = walk_containers(&unified, &self.filter);
        let mut ids = self.by_id.write();
        for (path, ino) in found {
            ids.insert(ino, path);
        }
        let hit = ids.by_id.get(&id).cloned();
        if hit.is_none() {
            misses.0.insert(id);
        }
        hit
    }

    fn known(&self, path: &str) -> Option<ContainerLabels> {
        self.known.read().get(path).cloned()
    }

    /// A container cgroup the last scan has not seen yet (a container whose first
    /// exec is being traced right now): recognised by its path, confirmed by its
    /// directory, named from the runtime's files — once, then remembered.
    fn discover(&self, path: &str) -> Option<ContainerLabels> {
        let d: Discovered = self.filter.select(path)?;
        classify(path)?;
        let root = self.hierarchy.walk_root()?;
        if !root.join(path.trim_start_matches('/')).is_dir() {
            return None;
        }
        let meta = self.metadata.lookup(&d).unwrap_or_default();
        let labels = ContainerLabels {
            id: d.path.clone(),
            name: meta.name,
            image: meta.image,
        };
        self.known.write().insert(d.path, labels.clone());
        Some(labels)
    }
}

/// Both directions of cgroup2 inode ↔ cgroup path.
#[derive(Debug, Default)]
struct CgroupIds {
    by_id: HashMap<u64, String>,
    by_path: HashMap<String, u64>,
    /// Container paths without a cgroup2 directory (found so at a replace).
    absent: HashSet<String>,
}

impl CgroupIds {
    fn insert(&mut self, id: u64, path: String) {
        self.by_path.insert(path.clone(), id);
        self.by_id.insert(id, path);
    }
}

/// How often a miss may trigger a walk of the cgroup2 tree.
const WALK_EVERY: Duration = Duration::from_millis(20);

fn inode(unified: &Path, path: &str) -> Option<u64> {
    std::fs::metadata(unified.join(path.trim_start_matches('/')))
        .ok()
        .map(|m| m.ino())
}

/// Container cgroups on the cgroup2 mount with their inodes (the ids BPF records).
fn walk_containers(unified: &Path, filter: &Filter) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let _ = walk(unified, |rel, e| {
        if filter.select(rel).is_some()
            && let Ok(m) = e.metadata()
        {
            out.push((rel.to_owned(), m.ino()));
        }
    });
    out
}

impl ContainerLookup for ContainerIndex {
    fn container_for_cgroup_id(&self, id: u64) -> Option<(ContainerLabels, String)> {
        let path = self.path_of_id(id)?;
        let current = self.container_for_cgroup_path(&path);
        if current.as_ref().is_some_and(|l| !l.name.is_empty()) {
            return current.map(|l| (l, path));
        }
        // A learned container may be gone (directory and state file): it keeps
        // the labels it was learned with. Those also stand in while the scan's
        // entry has no name yet (its metadata was looked up before it was there).
        let learned = self.learned(id).map(|l| self.learned_labels(id, l));
        let labels = match (current, learned) {
            (_, Some(l)) if !l.name.is_empty() => l,
            (Some(c), _) => c,
            (None, l) => l?,
        };
        Some((labels, path))
    }

    fn learn_cgroup(&self, id: u64, path: &str) {
        // The container's own cgroup or one below it (its nearest selected ancestor).
        let Some(d) = ancestors(path).find_map(|p| self.filter.select(p)) else {
            return;
        };
        // Named now: a short-lived container's state file may be gone by the
        // time its events are attributed. A scan's entry without a name (its
        // metadata was not there yet when the scan looked) is looked up afresh.
        let labels = match self.known(&d.path) {
            Some(known) if !known.name.is_empty() => known,
            known => match self.metadata.lookup(&d) {
                Some(meta) => ContainerLabels {
                    id: d.path.clone(),
                    name: meta.name,
                    image: meta.image,
                },
                None => known.unwrap_or_else(|| ContainerLabels {
                    id: d.path.clone(),
                    ..ContainerLabels::default()
                }),
            },
        };
        let mut learned = self.learned.lock();
        if learned.len() >= LEARNED_MAX {
            learned.retain(|_, l| l.at.elapsed() < LEARNED_TTL);
            if learned.len() >= LEARNED_MAX {
                // Still full: forget the oldest half.
                let mut ats: Vec<Instant> = learned.values().map(|l| l.at).collect();
                ats.sort_unstable();
                let cut = ats[ats.len() / 2];
                learned.retain(|_, l| l.at > cut);
            }
        }
        learned.insert(
            id,
            Learned {
                path: d.path,
                labels,
                at: Instant::now(),
            },
        );
        drop(learned);
        self.misses.lock().0.remove(&id);
    }

    fn container_for_cgroup_path(&self, path: &str) -> Option<ContainerLabels> {
        // A process may sit in a child cgroup of its container (systemd inside a
        // container, a pod's pause process): the nearest tracked ancestor owns it.
        ancestors(path)
            .find_map(|p| self.known(p))
            .or_else(|| ancestors(path).find_map(|p| self.discover(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn ancestors_deepest_first() {
        let a: Vec<&str> = ancestors("/a/b/c").collect();
        assert_eq!(a, vec!["/a/b/c", "/a/b", "/a"]);
        assert_eq!(ancestors("/").count(), 0);
    }

    /// An index over the fixture tree `root`, with the agent's state in `state`
    /// holding container `id` named `id` from `image`.
    /// Writes the state file of container `id` (named `id`) under `state`.
    fn save_container(state: &Path, id: &str, image: &str) {
        fs::create_dir_all(state.join("containers").join(id)).unwrap();
        crate::runtime::state::save(
            &crate::runtime::Paths::new(state),
            &crate::runtime::state::ContainerState::for_test(id, id, image),
        )
        .unwrap();
    }

    /// A hybrid hierarchy (memory and unified) under `root`, with nothing in it.
    fn hybrid_root(root: &Path) {
        fs::create_dir_all(root.join("memory")).unwrap();
        fs::create_dir_all(root.join("unified")).unwrap();
        fs::write(root.join("memory/cgroup.procs"), "").unwrap();
        fs::write(root.join("unified/cgroup.controllers"), "").unwrap();
    }

    fn index_with_container(root: &Path, state: &Path, id: &str, image: &str) -> ContainerIndex {
        save_container(state, id, image);
        ContainerIndex::new(
            Hierarchy::detect(root).unwrap(),
            Filter::default(),
            MetadataSource::new(root.join("docker"), state),
        )
    }

    #[test]
    fn known_then_discovered_then_gone() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("memory/agent/web/sub")).unwrap();
        fs::write(t.path().join("memory/cgroup.procs"), "").unwrap();
        let idx = index_with_container(t.path(), &t.path().join("state"), "web", "busybox");
        // Not scanned yet: found by path, named from its state file.
        let l = idx.container_for_cgroup_path("/agent/web/sub").unwrap();
        assert_eq!(
            (l.id.as_str(), l.name.as_str(), l.image.as_str()),
            ("/agent/web", "web", "busybox")
        );
        assert_eq!(idx.container_for_cgroup_path("/user.slice"), None);
        assert_eq!(
            idx.container_for_cgroup_path("/agent/gone"),
            None,
            "no directory, no container"
        );
        // A scan that no longer has it forgets it.
        idx.replace(HashMap::new());
        fs::remove_dir_all(t.path().join("memory/agent/web")).unwrap();
        assert_eq!(idx.container_for_cgroup_path("/agent/web"), None);
    }

    #[test]
    fn learned_ids_outlive_their_directory_and_state() {
        let t = tempfile::tempdir().unwrap();
        hybrid_root(t.path());
        let state = t.path().join("state");
        let idx = index_with_container(t.path(), &state, "q1", "bb:1");
        // Not a container: ignored.
        idx.learn_cgroup(7, "/user.slice");
        assert!(idx.container_for_cgroup_id(7).is_none());
        // Learned (named at learn time), then its state file goes: no
        // directory ever existed here, yet the id resolves with its name.
        idx.learn_cgroup(42, "/agent/q1");
        idx.learn_cgroup(43, "/agent/q1/sub");
        fs::remove_dir_all(state.join("containers/q1")).unwrap();
        let want = ContainerLabels {
            id: "/agent/q1".into(),
            name: "q1".into(),
            image: "bb:1".into(),
        };
        assert_eq!(
            idx.container_for_cgroup_id(42),
            Some((want.clone(), "/agent/q1".into()))
        );
        assert_eq!(idx.container_for_cgroup_id(43).unwrap().0, want);
        // A scan does not forget it.
        idx.replace(HashMap::new());
        assert_eq!(idx.container_for_cgroup_id(42).unwrap().0, want);
        // Learned before its state file was written: named once it is there.
        idx.learn_cgroup(44, "/agent/q2");
        assert_eq!(idx.container_for_cgroup_id(44).unwrap().0.name, "");
        save_container(&state, "q2", "bb:1");
        assert_eq!(idx.container_for_cgroup_id(44).unwrap().0.name, "q2");
    }

    /// The scan found the cgroup before its runtime wrote the container's files,
    /// so its entry has no name: a cgroup mkdir record learned once they are
    /// there names the container's events, and keeps naming them after the
    /// files are gone (a `--rm` container) while the scan's entry is still nameless.
    #[test]
    fn learned_names_stand_in_for_a_scan_entry_without_one() {
        let t = tempfile::tempdir().unwrap();
        hybrid_root(t.path());
        let state = t.path().join("state");
        let idx = index_with_container(t.path(), &state, "q1", "bb:1");
        let nameless = ContainerLabels {
            id: "/agent/q3".into(),
            ..ContainerLabels::default()
        };
        idx.replace(HashMap::from([("/agent/q3".to_string(), nameless.clone())]));
        save_container(&state, "q3", "bb:3");
        idx.learn_cgroup(45, "/agent/q3");
        fs::remove_dir_all(state.join("containers/q3")).unwrap();
        let want = ContainerLabels {
            id: "/agent/q3".into(),
            name: "q3".into(),
            image: "bb:3".into(),
        };
        assert_eq!(
            idx.container_for_cgroup_id(45),
            Some((want, "/agent/q3".into()))
        );
        // Learned with no name anywhere: the scan's entry, as before.
        idx.replace(HashMap::from([
            ("/agent/q3".to_string(), nameless.clone()),
            (
                "/agent/q4".to_string(),
                ContainerLabels {
                    id: "/agent/q4".into(),
                    ..ContainerLabels::default()
                },
            ),
        ]));
        idx.learn_cgroup(46, "/agent/q4");
        assert_eq!(idx.container_for_cgroup_id(46).unwrap().0.id, "/agent/q4");
        assert_eq!(idx.container_for_cgroup_id(46).unwrap().0.name, "");
    }

    #[test]
    fn by_cgroup2_inode_without_a_live_process() {
        let t = tempfile::tempdir().unwrap();
        for dir in ["memory/agent/web", "unified/agent/web", "unified/docker"] {
            fs::create_dir_all(t.path().join(dir)).unwrap();
        }
        fs::write(t.path().join("memory/cgroup.procs"), "").unwrap();
        fs::write(t.path().join("unified/cgroup.controllers"), "").unwrap();
        let idx = ContainerIndex::new(
            Hierarchy::detect(t.path()).unwrap(),
            Filter::default(),
            MetadataSource::new(t.path().join("docker"), t.path().join("state")),
        );
        let ino = |p: &str| fs::metadata(t.path().join(p)).unwrap().ino();
        // Not scanned yet: found by walking the cgroup2 tree.
        let (labels, path) = idx
            .container_for_cgroup_id(ino("unified/agent/web"))
            .unwrap();
        assert_eq!(
            (labels.id.as_str(), path.as_str()),
            ("/agent/web", "/agent/web")
        );
        // Not a container, and asked twice: the second answer comes from the miss set.
        assert!(idx.container_for_cgroup_id(ino("unified/docker")).is_none());
        assert!(idx.container_for_cgroup_id(ino("unified/docker")).is_none());
        // After a scan it is known directly.
        let mut known = HashMap::new();
        known.insert("/agent/web".to_string(), labels.clone());
        idx.replace(known);
        assert_eq!(
            idx.container_for_cgroup_id(ino("unified/agent/web"))
                .unwrap()
                .0,
            labels
        );
    }
}
