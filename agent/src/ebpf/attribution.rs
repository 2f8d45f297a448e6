//! Who did it: maps an event's mount namespace (and, through a pid, its
//! cgroup) to a container, the host, or a namespace of its own.
//!
//! On a v1 hybrid host `bpf_get_current_cgroup_id()` names the nearly empty
//! unified hierarchy, so it cannot tell containers apart. Attribution works
//! from the mount namespace inode instead: the first event of a namespace
//! reads `/proc/<pid>/cgroup` (v1: the memory controller's line; v2: the
//! `0::` line), asks a [`ContainerLookup`] which container owns that cgroup,
//! and caches the answer per namespace.

use crate::cgroup::{NsView, cgroup_path_from_proc};
use crate::container::{ContainerLabels, ContainerLookup};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a "no container" answer is trusted before asking again: discovery
/// may learn of a fresh container a moment after its first exec.
const RECHECK_AFTER: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Host,
    /// A container, found through this cgroup path.
    Container {
        cgroup_path: String,
    },
    /// A namespace of no known container, last seen with this process.
    Namespace {
        pid: u32,
    },
}

/// The process a cache entry was resolved through. While it lives, the
/// namespace lives, so its inode number has not been reused. Watched through
/// a pidfd: "still alive?" is then one poll(2), not a /proc lookup (~8 µs).
#[derive(Debug)]
struct Holder {
    pid: u32,
    pidfd: Option<OwnedFd>,
}

impl Holder {
    fn open(pid: u32, use_pidfd: bool) -> Holder {
        let pidfd = use_pidfd.then(|| pidfd_open(pid)).flatten();
        Holder { pid, pidfd }
    }

    /// `Some(alive)` when watched through a pidfd.
    fn alive(&self) -> Option<bool> {
        let fd = self.pidfd.as_ref()?;
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout; poll only writes `revents`.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        // A pidfd turns readable when its process exits.
        Some(n == 0)
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    let fd = libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[derive(Debug)]
struct CacheEntry {
    labels: ContainerLabels,
    holder: Holder,
    subject: Subject,
    resolved_at: Instant,
    last_used: Instant,
}

/// The per-namespace attribution cache.
pub struct Attributor {
    lookup: std::sync::Arc<dyn ContainerLookup>,
    proc_root: PathBuf,
    host_mnt_ns: Option<u32>,
    /// pidfds name processes of the real /proc only.
    use_pidfd: bool,
    /// How `/proc/<pid>/cgroup` paths map to the tree's (the agent may run in a
    /// private cgroup namespace).
    ns_view: NsView,
    cache: HashMap<u32, CacheEntry>,
}

impl Attributor {
    /// `proc_root` is normally `/proc`. The host's mount namespace is init's
    /// (`<proc_root>/1/ns/mnt`), or the agent's own when init's cannot be read.
    pub fn new(lookup: std::sync::Arc<dyn ContainerLookup>, proc_root: impl Into<PathBuf>) -> Self {
        let proc_root = proc_root.into();
        let host_mnt_ns = ns_inode(&proc_root.join("1/ns/mnt"))
            .or_else(|| ns_inode(&proc_root.join("self/ns/mnt")));
        Attributor {
            use_pidfd: proc_root == Path::new("/proc"),
            lookup,
            proc_root,
            host_mnt_ns,
            ns_view: NsView::Host,
            cache: HashMap::new(),
        }
    }

    /// Reads `/proc/<pid>/cgroup` paths through `view` (see [`NsView`]).
    pub fn with_ns_view(mut self, view: NsView) -> Self {
        self.ns_view = view;
        self
    }

    /// The host's mount namespace inode, if it could be read.
    pub fn host_mnt_ns(&self) -> Option<u32> {
        self.host_mnt_ns
    }

    /// Labels for an event of process `tgid` (child of `ppid`) in mount
    /// namespace `mnt_ns`.
    ///
    /// A short-lived command has often exited before its exec event is read;
    /// its parent, when it lives in the same mount namespace, stands in for it.
    pub fn attribute(
        &mut self,
        mnt_ns: u32,
        tgid: u32,
        ppid: u32,
        cgroup_id: u64,
    ) -> (ContainerLabels, Subject) {
        if Some(mnt_ns) == self.host_mnt_ns {
            return (ContainerLabels::host(), Subject::Host);
        }
        // The recorded cgroup2 id names the container directly (always on v2; on
        // hybrid hosts for containers that also live on the unified mount, as the
        // agent's own and runc's do): no process needs to be alive to ask.
        if let Some((labels, cgroup_path)) = self.lookup.container_for_cgroup_id(cgroup_id) {
            return (labels, Subject::Container { cgroup_path });
        }
        let now = Instant::now();
        if let Some(entry) = self.cache.get(&mnt_ns) {
            let settled = matches!(entry.subject, Subject::Container { .. });
            let fresh = settled || now.duration_since(entry.resolved_at) < RECHECK_AFTER;
            // Namespace inodes are reused once a namespace dies: trust the
            // entry only while the process it was resolved through is still
            // in this namespace.
            let held = entry
                .holder
                .alive()
                .unwrap_or_else(|| self.in_namespace(entry.holder.pid, mnt_ns));
            if fresh && held {
                // A container's name can arrive after its first event (its
                // runtime writes it a moment later): take the current labels.
                let current = match &entry.subject {
                    Subject::Container { cgroup_path } => {
                        self.lookup.container_for_cgroup_path(cgroup_path)
                    }
                    _ => None,
                };
                if let Some(entry) = self.cache.get_mut(&mnt_ns) {
                    if let Some(labels) = current {
                        entry.labels = labels;
                    }
                    entry.last_used = now;
                    return (entry.labels.clone(), entry.subject.clone());
                }
            }
        }
        // The parent usually outlives the child (a shell, an init): prefer it
        // as the process the cache entry is checked against. Either must still
        // be in the namespace: an exit's process is gone by now, and its pid
        // may already be another process's.
        let Some((holder, content)) = self
            .read_cgroup(ppid, Some(mnt_ns))
            .or_else(|| self.read_cgroup(tgid, Some(mnt_ns)))
        else {
            // Every process that could tell is gone (its events were still in
            // flight): count it to its namespace, and do not cache the guess.
            let labels = self
                .cache
                .get(&mnt_ns)
                .map(|e| e.labels.clone())
                .unwrap_or_else(|| ContainerLabels::namespace(mnt_ns));
            return (labels, Subject::Namespace { pid: tgid });
        };
        let (labels, subject) = match cgroup_path_from_proc(&content)
            .and_then(|p| self.ns_view.tree_path(&p))
            .and_then(|cg| self.lookup.container_for_cgroup_path(&cg).map(|l| (l, cg)))
        {
            Some((labels, cgroup_path)) => (labels, Subject::Container { cgroup_path }),
            None => (
                ContainerLabels::namespace(mnt_ns),
                Subject::Namespace { pid: holder.pid },
            ),
        };
        self.cache.insert(
            mnt_ns,
            CacheEntry {
                labels: labels.clone(),
                subject: subject.clone(),
                holder,
                resolved_at: now,
                last_used: now,
            },
        );
        (labels, subject)
    }

    fn in_namespace(&self, pid: u32, mnt_ns: u32) -> bool {
        ns_inode(&self.proc_root.join(pid.to_string()).join("ns/mnt")) == Some(mnt_ns)
    }

    /// `/proc/<pid>/cgroup`, if the process exists (and, when asked, lives in
    /// mount namespace `want_ns`), with the process as a [`Holder`].
    fn read_cgroup(&self, pid: u32, want_ns: Option<u32>) -> Option<(Holder, String)> {
        if pid == 0 {
            return None;
        }
        // The pidfd first: if the pid is recycled after this, the checks
        // below see the new process, which the pidfd does not watch.
        let holder = Holder::open(pid, self.use_pidfd);
        let dir = self.proc_root.join(pid.to_string());
        if let Some(ns) = want_ns
            && !self.in_namespace(pid, ns)
        {
            return None;
        }
        std::fs::read_to_string(dir.join("cgroup"))
            .ok()
            .map(|c| (holder, c))
    }

    /// Whether the subject of a series still exists.
    pub fn alive(&self, subject: &Subject, mnt_ns: u32) -> bool {
        match subject {
            Subject::Host => true,
            Subject::Container { cgroup_path } => {
                self.lookup.container_for_cgroup_path(cgroup_path).is_some()
            }
            Subject::Namespace { pid } => self.in_namespace(*pid, mnt_ns),
        }
    }

    /// Drops cache entries unused for `grace`.
    pub fn expire(&mut self, grace: Duration) {
        let now = Instant::now();
        self.cache
            .retain(|_, e| now.duration_since(e.last_used) < grace);
    }
}

/// The inode of a namespace link such as `/proc/<pid>/ns/mnt`.
pub fn ns_inode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::StaticLookup;
    use std::sync::Arc;

    const V1_HYBRID: &str =
        "9:name=systemd:/\n8:pids:/docker/abc\n4:memory:/docker/abc\n1:cpu:/\n0::/\n";
    const V2: &str = "0::/system.slice/docker-abc.scope\n";

    #[test]
    fn picks_memory_line_on_v1_and_unified_line_on_v2() {
        assert_eq!(
            cgroup_path_from_proc(V1_HYBRID).as_deref(),
            Some("/docker/abc")
        );
        assert_eq!(
            cgroup_path_from_proc(V2).as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(cgroup_path_from_proc("garbage"), None);
    }

    #[test]
    fn static_lookup_matches_path_and_children_only() {
        let l = StaticLookup::new();
        let c = ContainerLabels {
            id: "/docker/abc".into(),
            name: "web".into(),
            image: "nginx".into(),
        };
        l.insert("/docker/abc", c.clone());
        assert_eq!(l.container_for_cgroup_path("/docker/abc"), Some(c.clone()));
        assert_eq!(l.container_for_cgroup_path("/docker/abc/sub"), Some(c));
        assert_eq!(l.container_for_cgroup_path("/docker/abcd"), None);
        l.remove("/docker/abc");
        assert_eq!(l.container_for_cgroup_path("/docker/abc"), None);
    }

    /// A fake `/proc/<pid>` with its cgroup file and an `ns/mnt` whose inode
    /// stands for its mount namespace (returned).
    fn fake_proc(dir: &Path, pid: u32, cgroup: &str) -> u32 {
        use std::os::unix::fs::MetadataExt;
        let p = dir.join(pid.to_string());
        std::fs::create_dir_all(p.join("ns")).unwrap();
        std::fs::write(p.join("cgroup"), cgroup).unwrap();
        std::fs::write(p.join("ns/mnt"), "").unwrap();
        u32::try_from(std::fs::metadata(p.join("ns/mnt")).unwrap().ino()).unwrap()
    }

    #[test]
    fn attributes_containers_namespaces_and_host() {
        let proc = tempfile::tempdir().unwrap();
        let ns10 = fake_proc(proc.path(), 10, V1_HYBRID);
        let ns11 = fake_proc(proc.path(), 11, "4:memory:/user.slice\n0::/\n");
        let lookup = Arc::new(StaticLookup::new());
        let web = ContainerLabels {
            id: "/docker/abc".into(),
            name: "web".into(),
            image: "nginx".into(),
        };
        lookup.insert("/docker/abc", web.clone());
        let mut a = Attributor::new(lookup, proc.path());
        // No 1/ns/mnt or self/ns/mnt under the fake root: no host namespace.
        assert_eq!(a.host_mnt_ns(), None);
        a.host_mnt_ns = Some(1);
        assert_eq!(a.attribute(1, 10, 0, 0).0, ContainerLabels::host());
        // A process of another namespace is not asked (its pid may be reused).
        assert_eq!(
            a.attribute(100, 10, 0, 0).0,
            ContainerLabels::namespace(100)
        );
        assert_eq!(a.attribute(ns10, 10, 0, 0).0, web);
        // Cached per namespace: a pid that is gone still maps to the container.
        assert_eq!(a.attribute(ns10, 999, 0, 0).0, web);
        assert_eq!(
            a.attribute(ns11, 11, 0, 0).0,
            ContainerLabels::namespace(ns11)
        );
        // A namespace first seen through a process that already exited, whose
        // parent cannot be checked to share its namespace.
        assert_eq!(
            a.attribute(300, 998, 10, 0).0,
            ContainerLabels::namespace(300)
        );
        assert!(a.alive(
            &Subject::Container {
                cgroup_path: "/docker/abc".into()
            },
            100
        ));
        assert!(!a.alive(&Subject::Namespace { pid: 998 }, 300));
    }

    #[test]
    fn proc_cgroup_lines_from_real_kernels() {
        let v1 = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/cgroup-v1-hybrid-6.18/fx1/proc-pid-cgroup"
        ))
        .unwrap();
        let path = cgroup_path_from_proc(&v1).unwrap();
        assert!(path.starts_with("/docker/"), "{path}");
        let v2 = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/cgroup-v2-debian-6.1/proc-self/cgroup"
        ))
        .unwrap();
        assert!(cgroup_path_from_proc(&v2).is_some());
        assert_eq!(cgroup_path_from_proc("garbage"), None);
        assert_eq!(cgroup_path_from_proc(""), None);
    }
}
