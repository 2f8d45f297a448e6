//! The one place that answers "which container owns this cgroup path?" for the event
//! path: an in-memory table the [`Tracker`](super::Tracker) refreshes on every scan,
//! with a fallback for containers that started since the last scan.

use super::discovery::{Filter, classify};
use super::metadata::MetadataSource;
use super::{Discovered, Hierarchy};
use crate::ebpf::{ContainerLabels, ContainerLookup};
use std::collections::HashMap;
use std::sync::RwLock;

/// cgroup path → container labels, shared between the tracker and the eBPF reader.
#[derive(Debug)]
pub struct ContainerIndex {
    known: RwLock<HashMap<String, ContainerLabels>>,
    hierarchy: Hierarchy,
    filter: Filter,
    metadata: MetadataSource,
}

impl ContainerIndex {
    pub fn new(hierarchy: Hierarchy, filter: Filter, metadata: MetadataSource) -> Self {
        ContainerIndex {
            known: RwLock::new(HashMap::new()),
            hierarchy,
            filter,
            metadata,
        }
    }

    /// Replaces the table with what the latest scan found.
    pub fn replace(&self, entries: HashMap<String, ContainerLabels>) {
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = entries;
    }

    fn known(&self, path: &str) -> Option<ContainerLabels> {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
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
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.path, labels.clone());
        Some(labels)
    }
}

/// Every ancestor of a cgroup path, deepest first: `/a/b/c`, `/a/b`, `/a`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut cur = Some(path.trim_end_matches('/'));
    std::iter::from_fn(move || {
        let p = cur.filter(|p| !p.is_empty())?;
        cur = p.rfind('/').map(|i| &p[..i]);
        Some(p)
    })
}

impl ContainerLookup for ContainerIndex {
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

    #[test]
    fn known_then_discovered_then_gone() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("memory/agent/web/sub")).unwrap();
        fs::write(t.path().join("memory/cgroup.procs"), "").unwrap();
        let state = t.path().join("state");
        fs::create_dir_all(state.join("containers/web")).unwrap();
        fs::write(
            state.join("containers/web/state.json"),
            r#"{"name":"web","image":"busybox"}"#,
        )
        .unwrap();
        let idx = ContainerIndex::new(
            Hierarchy::detect(t.path()).unwrap(),
            Filter::default(),
            MetadataSource {
                docker_root: t.path().join("docker"),
                state_dir: state,
            },
        );
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
}
