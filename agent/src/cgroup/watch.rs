//! Change-driven discovery: inotify watches on the directories of the walked
//! cgroup tree say when a cgroup was made or removed (cgroupfs reports the
//! `mkdir` and `rmdir` that runtimes do), so the tree is walked again only then,
//! not on a timer. When the kernel runs out of watches, the caller falls back to
//! polling.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::HashSet;
use std::path::Path;

/// Watches on a cgroup tree's directories.
#[derive(Debug)]
pub struct TreeWatch {
    inotify: Inotify,
    /// Descriptors added; the kernel drops a removed directory's watch itself.
    watched: HashSet<WatchDescriptor>,
    /// Set when a watch could not be added (no watches left): changes below that
    /// directory would go unseen, so the caller must poll.
    incomplete: bool,
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
            watched: HashSet::new(),
            incomplete: false,
        })
    }

    /// Watches directory `dir` for cgroups made or removed in it. Adding a
    /// directory twice is cheap (the kernel returns the same descriptor).
    pub fn add(&mut self, dir: &Path) {
        match self.inotify.add_watch(dir, EVENTS) {
            Ok(wd) => {
                self.watched.insert(wd);
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

    /// Drains the pending events; true when any cgroup was made or removed
    /// since the last call (or the event queue overflowed).
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => return changed,
                Ok(events) => {
                    for e in events {
                        if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                            self.watched.remove(&e.wd);
                        }
                        // Cgroups are directories; a lost event could be one.
                        changed |= e.mask.contains(AddWatchFlags::IN_ISDIR)
                            || e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW);
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return changed,
                Err(e) => {
                    tracing::debug!(error = %e, "reading cgroup tree events");
                    return true;
                }
            }
        }
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

    #[test]
    fn made_and_removed_directories_are_seen() {
        let t = tempfile::tempdir().unwrap();
        let mut w = TreeWatch::new().unwrap();
        w.add(t.path());
        assert!(!w.changed(), "nothing happened yet");
        std::fs::create_dir(t.path().join("a")).unwrap();
        assert!(w.changed());
        assert!(!w.changed(), "drained");
        w.add(&t.path().join("a"));
        std::fs::create_dir(t.path().join("a/b")).unwrap();
        assert!(w.changed(), "below a watched child too");
        std::fs::remove_dir(t.path().join("a/b")).unwrap();
        std::fs::remove_dir(t.path().join("a")).unwrap();
        assert!(w.changed());
        // Files are not cgroups.
        std::fs::write(t.path().join("memory.max"), "1").unwrap();
        assert!(!w.changed());
        assert!(w.complete());
    }
}
