//! Where the agent stands in the cgroup tree when it runs in a container.
//!
//! Series carry host-absolute cgroup paths (`id="/docker/<id>"`). The tree the agent
//! walks gives them when it is the host's whole hierarchy (a hostPath mount of
//! `/sys/fs/cgroup`). But `/proc/<pid>/cgroup` is written relative to the *reader's*
//! cgroup namespace: in a private one (Kubernetes' default on cgroup v2, Docker's
//! `--cgroupns private`) another container reads as `/../../kubepods/…/c2`. The
//! namespace's root is found once at start-up as the directory of the tree that holds
//! the agent's own process, less the path `/proc/self/cgroup` gives for it; paths
//! read from `/proc` are then resolved against it (`..` and all).
//!
//! When the tree itself is the namespace's view (the runtime's own cgroup mount, not
//! the host's), the host's cgroups are out of sight: [`NsView::Confined`].

use super::{Controller, Hierarchy};
use std::path::Path;

/// The inode of the initial cgroup namespace (`PROC_CGROUP_INIT_INO`).
const INIT_CGROUP_NS_INO: u64 = 0xEFFF_FFFB;

/// How `/proc/<pid>/cgroup` paths relate to the paths of the walked tree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NsView {
    /// The host's cgroup namespace: paths are the same.
    #[default]
    Host,
    /// A private namespace rooted at this tree path (e.g.
    /// `/kubepods/burstable/pod…/<id>`): paths from `/proc` are relative to it.
    Private { root: String },
    /// A private namespace, and the tree is its own view: the host's cgroups
    /// cannot be seen (mount the host's `/sys/fs/cgroup`, or use the host's
    /// cgroup namespace).
    Confined,
}

impl NsView {
    /// Finds the view of the process `pid` (the agent itself) whose
    /// `/proc/<pid>/cgroup` and cgroup namespace link are under `proc_root`.
    pub fn detect(hierarchy: &Hierarchy, proc_root: &Path, pid: u32) -> NsView {
        use std::os::unix::fs::MetadataExt;
        let own = proc_root.join(pid.to_string());
        let in_host_ns = std::fs::metadata(own.join("ns/cgroup"))
            .map(|m| m.ino() == INIT_CGROUP_NS_INO)
            // No cgroup namespaces (or no /proc): nothing to translate.
            .unwrap_or(true);
        let Some(ns_path) = std::fs::read_to_string(own.join("cgroup"))
            .ok()
            .and_then(|c| cgroup_path_from_proc(&c))
        else {
            return NsView::Host;
        };
        let Some(tree) = hierarchy
            .dir(Controller::Memory, "/")
            .filter(|_| !hierarchy.is_v2())
            .or_else(|| hierarchy.unified_dir("/"))
        else {
            return if in_host_ns {
                NsView::Host
            } else {
                NsView::Confined
            };
        };
        let pid = pid.to_string();
        if in_host_ns {
            // The tree is the host's when it shows the agent where /proc does. A
            // runtime's bind mount of the container's own cgroup shows it at the
            // root instead; a tree without the agent (a test's) tells nothing.
            if lists(&tree.join(ns_path.trim_start_matches('/')), &pid) {
                return NsView::Host;
            }
            return match find_process(&tree, &pid) {
                Some(at) if at != ns_path => NsView::Confined,
                _ => NsView::Host,
            };
        }
        match find_process(&tree, &pid) {
            Some(tree_path) => Self::from_paths(&tree_path, &ns_path),
            None => NsView::Confined,
        }
    }

    /// The view given the agent's own cgroup as the tree shows it (`tree_path`)
    /// and as its namespace does (`ns_path`, from `/proc/self/cgroup`).
    pub fn from_paths(tree_path: &str, ns_path: &str) -> NsView {
        let tree = components(tree_path);
        let ns = components(ns_path);
        if ns.contains(&"..") || !tree.ends_with(&ns) {
            return NsView::Confined;
        }
        let root = &tree[..tree.len() - ns.len()];
        if root.is_empty() {
            // The tree's root is the namespace's root: its own view.
            return NsView::Confined;
        }
        NsView::Private {
            root: format!("/{}", root.join("/")),
        }
    }

    /// A path from `/proc/<pid>/cgroup` as a path of the tree; `None` when it
    /// leads above the tree's root or the host's cgroups are out of sight.
    pub fn tree_path(&self, proc_path: &str) -> Option<String> {
        let root = match self {
            NsView::Host => return Some(proc_path.to_owned()),
            NsView::Confined => return None,
            NsView::Private { root } => root,
        };
        let mut out: Vec<&str> = components(root);
        for c in components(proc_path) {
            match c {
                "." => {}
                ".." => {
                    out.pop()?;
                }
                c => out.push(c),
            }
        }
        Some(format!("/{}", out.join("/")))
    }

    /// One line for the start-up report, when there is something to say.
    pub fn describe(&self) -> Option<String> {
        match self {
            NsView::Host => None,
            NsView::Private { root } => Some(format!("private cgroup namespace rooted at {root}")),
            NsView::Confined => Some(
                "the cgroup tree is this container's own cgroup namespace: mount the host's \
                 /sys/fs/cgroup (and point --cgroup-root at it) or use the host cgroup namespace"
                    .to_owned(),
            ),
        }
    }
}

/// The cgroup path of a process from the contents of `/proc/<pid>/cgroup`:
/// on v1 (and hybrid) the memory controller's line, else the unified `0::` line.
pub fn cgroup_path_from_proc(content: &str) -> Option<String> {
    let mut unified = None;
    for line in content.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_owned());
        }
        if id == "0" && controllers.is_empty() {
            unified = Some(path.to_owned());
        }
    }
    unified
}

fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

/// Whether the `cgroup.procs` of the cgroup directory `dir` lists `pid`.
fn lists(dir: &Path, pid: &str) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|procs| procs.lines().any(|l| l.trim() == pid))
}

/// The tree path (`/a/b`) of the cgroup at or below `root` whose `cgroup.procs`
/// lists `pid` (a process is in one cgroup of a hierarchy), through the one tree
/// walker. Runs once, at start-up.
fn find_process(root: &Path, pid: &str) -> Option<String> {
    if lists(root, pid) {
        return Some("/".into());
    }
    let mut found = None;
    // An unreadable root finds nothing, as an empty one does.
    let _ = super::discovery::walk(root, |rel, entry| {
        if found.is_none() && lists(&entry.path(), pid) {
            found = Some(rel.to_owned());
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use super::NsView;

    #[test]
    fn a_private_namespace_is_resolved_against_its_root() {
        // The agent in /kubepods/burstable/podA/agent, its namespace rooted there.
        let view = NsView::from_paths("/kubepods/burstable/podA/agent", "/");
        assert_eq!(
            view,
            NsView::Private {
                root: "/kubepods/burstable/podA/agent".into()
            }
        );
        // Another pod's container, as /proc/<pid>/cgroup shows it from there.
        assert_eq!(
            view.tree_path("/../../podB/c2").as_deref(),
            Some("/kubepods/burstable/podB/c2")
        );
        assert_eq!(
            view.tree_path("/../../../../docker/abc").as_deref(),
            Some("/docker/abc")
        );
        assert_eq!(
            view.tree_path("/").as_deref(),
            Some("/kubepods/burstable/podA/agent")
        );
        assert_eq!(view.tree_path("/../../../../.."), None, "above the root");
        // The agent in a child of its namespace root (nsdelegate-style init.scope).
        assert_eq!(
            NsView::from_paths("/docker/abc/init", "/init"),
            NsView::Private {
                root: "/docker/abc".into()
            }
        );
    }

    #[test]
    fn the_host_namespace_changes_nothing_and_a_confined_view_sees_nothing() {
        assert_eq!(
            NsView::Host.tree_path("/docker/abc").as_deref(),
            Some("/docker/abc")
        );
        // The tree is the namespace's own view: the agent's cgroup is at its root.
        assert_eq!(NsView::from_paths("/", "/"), NsView::Confined);
        assert_eq!(NsView::from_paths("/x", "/y"), NsView::Confined);
        assert_eq!(NsView::Confined.tree_path("/docker/abc"), None);
        assert!(
            NsView::Confined
                .describe()
                .unwrap()
                .contains("/sys/fs/cgroup")
        );
    }

    /// A cgroup v2 tree holding process 4242 at `at`, and a /proc whose
    /// `4242/cgroup` says `ns_path` in a namespace of its own.
    fn fake(at: &str, ns_path: &str) -> (tempfile::TempDir, crate::cgroup::Hierarchy) {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("cgroup");
        std::fs::create_dir_all(tree.join(at.trim_start_matches('/'))).unwrap();
        std::fs::write(tree.join("cgroup.controllers"), "memory\n").unwrap();
        std::fs::write(
            tree.join(at.trim_start_matches('/')).join("cgroup.procs"),
            "1\n4242\n",
        )
        .unwrap();
        let own = t.path().join("proc/4242");
        std::fs::create_dir_all(own.join("ns")).unwrap();
        // Not the initial namespace's inode: a private cgroup namespace.
        std::fs::write(own.join("ns/cgroup"), "").unwrap();
        std::fs::write(own.join("cgroup"), format!("0::{ns_path}\n")).unwrap();
        let h = crate::cgroup::Hierarchy::detect(&tree).unwrap();
        (t, h)
    }

    #[test]
    fn detect_finds_the_namespace_root_in_the_host_tree() {
        let (t, h) = fake("/kubepods/burstable/podA/agent", "/");
        assert_eq!(
            NsView::detect(&h, &t.path().join("proc"), 4242),
            NsView::Private {
                root: "/kubepods/burstable/podA/agent".into()
            }
        );
        // The runtime's own mount: the agent at the root of what it sees.
        let (t, h) = fake("/", "/");
        assert_eq!(
            NsView::detect(&h, &t.path().join("proc"), 4242),
            NsView::Confined
        );
    }

    #[test]
    fn detect_in_the_host_namespace_is_host() {
        let h = crate::cgroup::Hierarchy::detect("/sys/fs/cgroup");
        let in_host = std::fs::metadata("/proc/self/ns/cgroup")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == super::INIT_CGROUP_NS_INO)
            .unwrap_or(false);
        if let (Ok(h), true) = (h, in_host) {
            assert_eq!(
                NsView::detect(&h, std::path::Path::new("/proc"), std::process::id()),
                NsView::Host
            );
        }
    }
}
