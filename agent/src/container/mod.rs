//! Container identity, shared by the cgroup exporter, the eBPF event path and the
//! metrics: which container owns a cgroup, and the labels (`id`, `name`, `image`)
//! its series carry.
//!
//! - [`metadata`]: names, images and labels from the runtimes' own records
//!   (Docker's and the agent's files here, [`containerd`] and [`podman`] beside it);
//! - [`index`]: the cgroup path / cgroup id → container table the event path asks;
//! - [`tracker`]: the set of container cgroups `agent serve` follows and reads.

pub mod containerd;
pub mod index;
pub mod metadata;
pub mod podman;
pub mod tracker;

pub use index::ContainerIndex;
pub use metadata::{ContainerMeta, KubeLabels, MetadataSource};
pub use tracker::{Sample, Tracked, Tracker};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

/// The labels every per-container series carries, as the cgroup families do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerLabels {
    /// cgroup path of a container (`/docker/<id>`), `/` for the host, or
    /// `/ns/mnt:<inode>` for a mount namespace that belongs to no known container.
    pub id: String,
    /// Container name; `host` for the host; empty when unknown.
    pub name: String,
    pub image: String,
}

impl ContainerLabels {
    /// The host's own namespace.
    pub fn host() -> Self {
        ContainerLabels {
            id: "/".to_owned(),
            name: "host".to_owned(),
            image: String::new(),
        }
    }

    /// A mount namespace that maps to no container.
    pub fn namespace(mnt_ns: u32) -> Self {
        ContainerLabels {
            id: format!("/ns/mnt:{mnt_ns}"),
            name: String::new(),
            image: String::new(),
        }
    }
}

/// Container discovery, as seen from the event path: which container (if any)
/// owns a cgroup. Implemented by the cgroup discovery of `agent serve`.
///
/// Called from the ring-buffer reader on the first event of each mount
/// namespace (and when a cached answer needs checking): answer from memory,
/// never block or do I/O here.
pub trait ContainerLookup: Send + Sync {
    /// `path` is the cgroup path as `/proc/<pid>/cgroup` shows it, e.g.
    /// `/docker/0123…` or `/system.slice/docker-0123….scope`.
    fn container_for_cgroup_path(&self, path: &str) -> Option<ContainerLabels>;

    /// The container whose cgroup2 directory has inode `id` (what
    /// `bpf_get_current_cgroup_id()` recorded), with its cgroup path. This needs
    /// no live process, so it also attributes the events of a container that
    /// exited before they were read. `None` when unknown.
    fn container_for_cgroup_id(&self, _id: u64) -> Option<(ContainerLabels, String)> {
        None
    }

    /// A cgroup2 directory was made: `id` is its inode (the id its processes'
    /// events will carry), `path` its path relative to the cgroup2 root.
    /// Called in ring-buffer order, so before that cgroup's events are
    /// attributed, even when the directory is gone by then.
    fn learn_cgroup(&self, _id: u64, _path: &str) {}
}

/// Knows no containers: every namespace other than the host's gets its own series.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoContainers;

impl ContainerLookup for NoContainers {
    fn container_for_cgroup_path(&self, _path: &str) -> Option<ContainerLabels> {
        None
    }
}

/// A table of cgroup path → container, matched on the path or any parent of
/// it. The simple implementation for tests and for callers that register
/// containers as they learn of them.
#[derive(Debug, Default)]
pub struct StaticLookup {
    entries: RwLock<Vec<(String, ContainerLabels)>>,
}

impl StaticLookup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the container whose cgroup is `path`.
    pub fn insert(&self, path: impl Into<String>, labels: ContainerLabels) {
        let path = path.into();
        let mut entries = self.entries.write();
        entries.retain(|(p, _)| *p != path);
        entries.push((path, labels));
    }

    /// Forgets the container whose cgroup is `path`.
    pub fn remove(&self, path: &str) {
        let mut entries = self.entries.write();
        entries.retain(|(p, _)| p != path);
    }
}

impl ContainerLookup for StaticLookup {
    fn container_for_cgroup_path(&self, path: &str) -> Option<ContainerLabels> {
        let entries = self.entries.read();
        entries
            .iter()
            .filter(|(p, _)| {
                path == p
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/') || p.ends_with('/'))
            })
            .max_by_key(|(p, _)| p.len())
            .map(|(_, labels)| labels.clone())
    }
}
