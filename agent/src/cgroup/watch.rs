//! Change-driven discovery: inotify watches on the directories of the walked
//! cgroup tree say which cgroups were made or removed (cgroupfs reports the
//! `mkdir` and `rmdir` that runtimes do), so only those subtrees are walked
//! again, and only then, not on a timer. When the kernel runs out of watches,
//! the caller falls back to polling; when events were lost, to a full walk.

use super::discovery::ancestors;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Watches on a cgroup tree's directories.
#[derive(Debug)]
pub struct TreeWatch {
    inotify: Inotify,
    /// Each watched directory's cgroup path (`/docker`; empty for the root). The
    /// kernel drops a removed directory's watch itself (`IN_IGNORED`).
    watched: HashMap<WatchDescriptor, String>,
    /// Set when a watch could not be added (no watches left): changes below that
    /// directory would go unseen, so the caller must poll.
    incomplete: bool,
}

/// What changed in the watched tree since the last [`TreeWatch::changes`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Cgroups made (their paths, like `/docker/<id>`), none below another one
    /// listed: walking each finds the rest.
    pub made: BTreeSet<String>,
    /// Cgroups removed: they and everything below them are gone.
    pub removed: BTreeSet<String>,
    /// Names that are not UTF-8 (shown lossily); not followed.
    pub non_utf8: Vec<String>,
    /// Events were lost (the queue overflowed, or could not be read): only a
    /// walk of the whole tree tells what is there.
    pub lost: bool,
}

impl Changes {
    /// True when nothing was made, removed or lost.
    pub fn is_empty(&self) -> bool {
        self.made.is_empty() && self.removed.is_empty() && self.non_utf8.is_empty() && !self.lost
    }
}

const EVENTS: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_ONLYDIR);

impl TreeWatch {
    /// An empty watch set (add directories with [`TreeWatch::add`]).
    pub fn new() -> nix::Result<TreeWatch> {
        Ok(TreeWatch {
            inotify: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?,
            watched: HashMap::new(),
            incomplete: false,
        })
    }

    /// Watches directory `dir`, the cgroup `rel` (`""` for the root), for cgroups
    /// made or removed in it. Adding a directory twice is cheap (the kernel
    /// returns the same descriptor).
    pub fn add(&mut self, dir: &Path, rel: &str) {
        match self.inotify.add_watch(dir, EVENTS) {
            Ok(wd) => {
                if self.watched.get(&wd).is_none_or(|r| r != rel) {
                    self.watched.insert(wd, rel.to_owned());
                }
            }
            // Gone already: a removal its parent's watch reports.
            Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                if !self.incomplete {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the cgroup tree (raise fs.inotify.max_user_watches); polling it instead");
                }
                self.incomplete = true;
            }
        }
    }

    /// True when every directory asked for is watched.
    pub fn complete(&self) -> bool {
        !self.incomplete
    }

    /// Whether the kernel holds events not yet taken by [`TreeWatch::changes`]
    /// (a poll that does not wait and consumes nothing).
    pub fn has_events(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(&self.inotify, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // A failed poll says "maybe": the caller then looks for itself.
        poll(&mut fds, Some(&now)).map_or(true, |n| n > 0)
    }

    /// Drains the pending events: which cgroups were made and removed since the
    /// last call. A burst of any size costs one walk per new subtree; a cgroup
    /// made and removed in between is listed in both (walking it finds nothing).
    pub fn changes(&mut self) -> Changes {
        let mut changes = Changes::default();
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => break,
                Ok(events) => {
                    for e in events {
                        if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            changes.lost = true;
                            continue;
                        }
                        if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                            self.watched.remove(&e.wd);
                            continue;
                        }
                        // Cgroups are directories; files come and go in them.
                        if !e.mask.contains(AddWatchFlags::IN_ISDIR) {
                            continue;
                        }
                        let (Some(parent), Some(name)) = (self.watched.get(&e.wd), &e.name) else {
                            continue;
                        };
                        let Some(name) = name.to_str() else {
                            changes
                                .non_utf8
                                .push(format!("{parent}/{}", name.to_string_lossy()));
                            continue;
                        };
                        let path = format!("{parent}/{name}");
                        if e.mask
                            .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                        {
                            changes.made.insert(path);
                        } else {
                            changes.removed.insert(path);
                        }
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "reading cgroup tree events");
                    changes.lost = true;
                    break;
                }
            }
        }
        // A walk of a new cgroup covers the ones made below it.
        let below_another: Vec<String> = changes
            .made
            .iter()
            .filter(|p| ancestors(p).skip(1).any(|a| changes.made.contains(a)))
            .cloned()
            .collect();
        for p in below_another {
            changes.made.remove(&p);
        }
        changes
    }

    /// Number of directories watched.
    pub fn len(&self) -> usize {
        self.watched.len()
    }

    /// True when nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn made_and_removed_directories_are_named() {
        let t = tempfile::tempdir().unwrap();
        let mut w = TreeWatch::new().unwrap();
        w.add(t.path(), "");
        assert!(w.changes().is_empty(), "nothing happened yet");
        std::fs::create_dir(t.path().join("a")).unwrap();
        assert_eq!(w.changes().made, set(&["/a"]));
        assert!(w.changes().is_empty(), "drained");
        w.add(&t.path().join("a"), "/a");
        std::fs::create_dir(t.path().join("a/b")).unwrap();
        assert_eq!(
            w.changes().made,
            set(&["/a/b"]),
            "below a watched child too"
        );
        std::fs::remove_dir(t.path().join("a/b")).unwrap();
        std::fs::remove_dir(t.path().join("a")).unwrap();
        let c = w.changes();
        assert_eq!((c.made, c.removed), (set(&[]), set(&["/a", "/a/b"])));
        assert_eq!(
            w.len(),
            1,
            "the kernel dropped the removed directory's watch"
        );
        // Files are not cgroups.
        std::fs::write(t.path().join("memory.max"), "1").unwrap();
        assert!(w.changes().is_empty());
        assert!(w.complete());
    }

    #[test]
    fn a_burst_is_one_walk_per_new_subtree() {
        let t = tempfile::tempdir().unwrap();
        let mut w = TreeWatch::new().unwrap();
        w.add(t.path(), "");
        for i in 0..50 {
            std::fs::create_dir(t.path().join(format!("c{i}"))).unwrap();
        }
        std::fs::create_dir(t.path().join("x")).unwrap();
        w.add(&t.path().join("x"), "/x");
        std::fs::create_dir(t.path().join("x/y")).unwrap();
        // `/x-1` sorts between `/x` and `/x/y`.
        std::fs::create_dir(t.path().join("x-1")).unwrap();
        let c = w.changes();
        assert_eq!(c.made.len(), 52, "{c:?}");
        assert!(c.made.contains("/x") && !c.made.contains("/x/y"), "{c:?}");
        // Made and removed before anyone looked: listed as both.
        std::fs::create_dir(t.path().join("brief")).unwrap();
        std::fs::remove_dir(t.path().join("brief")).unwrap();
        let c = w.changes();
        assert_eq!((c.made, c.removed), (set(&["/brief"]), set(&["/brief"])));
    }
}
