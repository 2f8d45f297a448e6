//! Keeping the tracker's set of cgroups up to date: the changes the inotify
//! watch reports, walks of new subtrees, and full walks when they cannot stand
//! in for one.

use super::*;
use crate::cgroup::watch::Changes;
use std::collections::BTreeSet;
use std::ops::Bound;

impl Tracker {
    /// Brings the set of cgroups up to date. With the tree watched (inotify),
    /// each call reads the watch's events and walks only the subtrees made since
    /// (a burst costs one walk per new subtree, nothing changing costs one
    /// `read`), so a container made before a scrape is in it; a full walk comes
    /// at start (`force`), when events were lost, and every
    /// [`SAFETY_NET_RESCAN`]. Without a complete watch the tree is polled:
    /// walked when the last walk is older than the rescan interval.
    pub fn refresh(&mut self, force: bool) {
        if !force {
            if let Some(changes) = self.watched_changes() {
                self.apply(changes);
                // A runtime may write a container's metadata after making its
                // cgroup: look again for those still unnamed, backing off.
                self.retry_missing_metadata();
                return;
            }
            if self.watch_is_complete()
                && self
                    .last_walk
                    .is_some_and(|t| t.elapsed() < SAFETY_NET_RESCAN)
            {
                // Events were lost: walk now.
            } else if self
                .last_walk
                .is_some_and(|t| t.elapsed() < self.rescan_interval)
            {
                return;
            }
        }
        self.walk_all();
    }

    /// Whether [`Tracker::refresh`] has anything to do now: without a complete
    /// watch it always may; with one, only when the watch holds events, a
    /// metadata lookup or a pending cgroup may be due, or the safety-net walk
    /// is. The 1 s background rescan asks first, so an idle agent wakes no
    /// blocking thread.
    pub fn refresh_wanted(&self) -> bool {
        let Some(watch) = self.watch.as_ref().filter(|w| w.complete()) else {
            return true;
        };
        self.meta_pending
            || !self.pending.is_empty()
            || self
                .last_walk
                .is_none_or(|t| t.elapsed() >= SAFETY_NET_RESCAN)
            || watch.has_events()
    }

    fn watch_is_complete(&self) -> bool {
        self.watch.as_ref().is_some_and(TreeWatch::complete)
    }

    /// The watch's changes, when they can stand for a walk: it watches the whole
    /// tree, lost no event, and the safety-net walk is not due.
    fn watched_changes(&mut self) -> Option<Changes> {
        let due = self
            .last_walk
            .is_none_or(|t| t.elapsed() >= SAFETY_NET_RESCAN);
        let w = self.watch.as_mut().filter(|w| w.complete())?;
        if due {
            return None;
        }
        let changes = w.changes();
        (!changes.lost).then_some(changes)
    }

    /// Walks the whole tree: opens readers for new cgroups and closes those of
    /// vanished ones.
    fn walk_all(&mut self) {
        self.last_walk = Some(Instant::now());
        self.walks += 1;
        // What the watch reported so far, this walk sees for itself.
        if let Some(w) = self.watch.as_mut() {
            let earlier = w.changes();
            self.count_non_utf8(earlier.non_utf8);
        }
        self.track_root();
        let found = match discovery::scan(&self.hierarchy, &self.filter, self.watch.as_mut()) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cgroup discovery failed");
                self.count_error(ScrapeErrorKind::Discovery);
                return;
            }
        };
        self.count_non_utf8(found.non_utf8);
        let mut found = found.found;
        self.add_containerd(&mut found, None);
        let mut next = BTreeMap::new();
        for d in found {
            if let Some(t) = self.tracked.remove(&d.path) {
                next.insert(d.path.clone(), t);
                continue;
            }
            // What a walk finds was not just made (those the watch reports):
            // no waiting for its other directories.
            let path = d.path.clone();
            match self.open_new(d, None) {
                Opened::Tracked(t) => {
                    next.insert(path, t);
                }
                Opened::Pending(..) | Opened::Skipped => {}
            }
        }
        for gone in self.tracked.keys() {
            tracing::debug!(cgroup = %gone, "cgroup gone");
        }
        self.tracked = next;
        self.pending.clear();
        self.kept_fds = self
            .tracked
            .values()
            .map(|t| t.reader.open_files())
            .sum::<usize>()
            + self.netns.open_files();
        self.publish_index();
    }

    /// Applies what the watch reported: drops the removed cgroups (and those
    /// below them), walks each new subtree, and opens the cgroups left pending.
    fn apply(&mut self, changes: Changes) {
        self.count_non_utf8(changes.non_utf8);
        let mut changed = false;
        // Removals first: a cgroup removed and made again under the same path is
        // a new cgroup, read through new descriptors.
        for gone in &changes.removed {
            let below: Vec<String> = self
                .tracked
                .range::<str, _>((Bound::Included(gone.as_str()), Bound::Unbounded))
                .take_while(|(p, _)| p.starts_with(gone.as_str()))
                .filter(|(p, _)| *p == gone || discovery::is_below(p, gone))
                .map(|(p, _)| p.clone())
                .collect();
            for p in below {
                if let Some(t) = self.tracked.remove(&p) {
                    tracing::debug!(cgroup = %p, "cgroup gone");
                    self.kept_fds = self.kept_fds.saturating_sub(t.reader.open_files());
                    changed = true;
                }
            }
            self.pending
                .retain(|p, _| p != gone && !discovery::is_below(p, gone));
        }
        let mut found = Vec::new();
        for top in &changes.made {
            self.subtree_walks += 1;
            match discovery::scan_below(&self.hierarchy, &self.filter, top, self.watch.as_mut()) {
                Ok(scan) => {
                    self.count_non_utf8(scan.non_utf8);
                    found.extend(scan.found);
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cgroup discovery failed");
                    self.count_error(ScrapeErrorKind::Discovery);
                }
            }
        }
        if !changes.made.is_empty() {
            self.add_containerd(&mut found, Some(&changes.made));
        }
        // Cgroups left pending by an earlier call are looked at again.
        let mut first_seen = HashMap::new();
        for (path, (d, at)) in std::mem::take(&mut self.pending) {
            if !found.iter().any(|f| f.path == path) {
                found.push(d);
            }
            first_seen.insert(path, at);
        }
        for d in found {
            if self.tracked.contains_key(&d.path) {
                continue;
            }
            let first_seen = first_seen.get(&d.path).copied().unwrap_or(Instant::now());
            let path = d.path.clone();
            match self.open_new(d, Some(first_seen)) {
                Opened::Tracked(t) => {
                    self.tracked.insert(path, t);
                    changed = true;
                }
                Opened::Pending(d, at) => {
                    self.pending.insert(path, (d, at));
                }
                Opened::Skipped => {}
            }
        }
        if changed {
            self.publish_index();
        }
    }

    /// A cgroup not tracked yet: its reader and metadata. On v1 a runtime makes
    /// a cgroup's directory in one controller after another; one just made
    /// (`made`: first seen then) and missing some of them waits up to
    /// [`SETTLE`], so that no family is left out for its whole life.
    fn open_new(&mut self, d: Discovered, made: Option<Instant>) -> Opened {
        let now = Instant::now();
        if let Some(first_seen) = made
            && now.duration_since(first_seen) < SETTLE
            && !self.hierarchy.is_v2()
            && !self
                .hierarchy
                .controller_dirs(&d.path)
                .iter()
                .all(|dir| dir.is_dir())
        {
            return Opened::Pending(d, first_seen);
        }
        match self.open_reader(&d.path) {
            Ok(reader) => {
                let meta = self.metadata.lookup(&d);
                let retry = self.metadata.can_name(&d);
                self.meta_pending |= meta.is_none() && retry;
                tracing::debug!(cgroup = %d.path, runtime = d.runtime.as_str(), "tracking");
                Opened::Tracked(Box::new(Tracked::new(d, meta, retry, reader)))
            }
            Err(StatsError::Vanished(_)) => Opened::Skipped,
            Err(e) => {
                tracing::warn!(cgroup = %d.path, error = %format!("{e:#}"), "cannot open cgroup");
                self.count_error(e.kind());
                Opened::Skipped
            }
        }
    }

    /// Counts cgroups whose names are not UTF-8, once per cgroup, not once per walk.
    fn count_non_utf8(&mut self, paths: Vec<String>) {
        for path in paths {
            if self.non_utf8_seen.len() < NON_UTF8_REMEMBERED
                && self.non_utf8_seen.insert(path.clone())
            {
                tracing::warn!(cgroup = %path, "cgroup name is not UTF-8; not followed");
                self.count_error(ScrapeErrorKind::NonUtf8Name);
            }
        }
    }

    /// Adds the cgroups of containerd's running containers that no naming
    /// scheme recognises (`ctr run` puts them at `/<namespace>/<id>`), and marks
    /// those only an `--include` pattern found as containerd's. With `within`,
    /// only those at or below these cgroups (the subtrees just walked).
    fn add_containerd(&self, found: &mut Vec<Discovered>, within: Option<&BTreeSet<String>>) {
        let Some(containerd) = &self.metadata.containerd else {
            return;
        };
        let Some(root) = self.hierarchy.walk_root() else {
            return;
        };
        let mut added = false;
        for (path, id) in containerd.scan() {
            if self.filter.excludes(&path) || discovery::classify(&path).is_some() {
                continue;
            }
            if within.is_some_and(|tops| !discovery::ancestors(&path).any(|a| tops.contains(a))) {
                continue;
            }
            match found.iter_mut().find(|d| d.path == path) {
                Some(d) => {
                    d.runtime = Runtime::Containerd;
                    d.container_id = Some(id);
                }
                None if root.join(path.trim_start_matches('/')).is_dir() => {
                    found.push(Discovered {
                        path,
                        runtime: Runtime::Containerd,
                        container_id: Some(id),
                    });
                    added = true;
                }
                None => {}
            }
        }
        if added {
            found.sort_by(|a, b| a.path.cmp(&b.path));
        }
    }
}

/// With the tree watched, a full walk at least this often all the same: the
/// safety net for an event the watch could not deliver.
const SAFETY_NET_RESCAN: Duration = Duration::from_secs(60);

/// How long a new v1 cgroup may wait for its directories in every controller.
const SETTLE: Duration = Duration::from_secs(1);

/// What became of a cgroup not tracked before.
enum Opened {
    Tracked(Box<Tracked>),
    /// Not in every controller yet: looked at again on the next refresh.
    Pending(Discovered, Instant),
    /// Gone already, or unreadable (counted).
    Skipped,
}

/// Non-UTF-8 cgroup names remembered (so counted once each), at most.
const NON_UTF8_REMEMBERED: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn only_what_changed_is_walked_and_every_change_is_seen_at_once() {
        let t = tempfile::tempdir().unwrap();
        let memory = t.path().join("memory");
        std::fs::create_dir_all(memory.join("agent/one")).unwrap();
        std::fs::write(memory.join("cgroup.procs"), "").unwrap();
        // An hour-long rescan interval: nothing below depends on it.
        let mut tracker = Tracker::new(
            Hierarchy::detect(t.path()).unwrap(),
            Filter::default(),
            MetadataSource::new(t.path().join("docker"), t.path().join("state")),
            Duration::from_secs(3600),
        );
        let agents = |tr: &Tracker| tr.counts().get(&Runtime::Agent).copied();
        tracker.refresh(false);
        assert_eq!((tracker.walks(), agents(&tracker)), (1, Some(1)));
        for _ in 0..5 {
            tracker.refresh(false);
        }
        assert_eq!(
            (tracker.walks(), tracker.subtree_walks()),
            (1, 0),
            "nothing changed, nothing walked"
        );
        std::fs::create_dir(memory.join("agent/two")).unwrap();
        tracker.refresh(false);
        assert_eq!(
            (tracker.walks(), tracker.subtree_walks(), agents(&tracker)),
            (1, 1, Some(2)),
            "the new cgroup alone is walked, on the next refresh"
        );
        std::fs::create_dir(memory.join("agent/two/nested")).unwrap();
        tracker.refresh(false);
        assert_eq!(tracker.subtree_walks(), 2, "below a new cgroup too");
        // A burst: one refresh, one walk per new subtree, no walk of the tree.
        for i in 0..40 {
            std::fs::create_dir_all(memory.join(format!("agent/b{i}/inner"))).unwrap();
        }
        tracker.refresh(false);
        assert_eq!(
            (tracker.walks(), tracker.subtree_walks(), agents(&tracker)),
            (1, 42, Some(42))
        );
        // Removed: gone at once, with what was below it.
        std::fs::remove_dir(memory.join("agent/two/nested")).unwrap();
        std::fs::remove_dir(memory.join("agent/two")).unwrap();
        tracker.refresh(false);
        assert_eq!(agents(&tracker), Some(41));
        assert!(!tracker.tracked.contains_key("/agent/two"));
        // Removed and made again under the same name before anyone looked: a
        // new cgroup.
        std::fs::remove_dir(memory.join("agent/b0/inner")).unwrap();
        std::fs::remove_dir(memory.join("agent/b0")).unwrap();
        std::fs::create_dir(memory.join("agent/b0")).unwrap();
        tracker.refresh(false);
        assert_eq!(agents(&tracker), Some(41));
        assert_eq!(tracker.walks(), 1);
    }

    #[test]
    fn a_removed_parent_takes_its_tracked_children_along() {
        let t = tempfile::tempdir().unwrap();
        let memory = t.path().join("memory");
        std::fs::create_dir_all(memory.join("batch/a/x")).unwrap();
        std::fs::create_dir_all(memory.join("batch-b/y")).unwrap();
        std::fs::write(memory.join("cgroup.procs"), "").unwrap();
        let mut tracker = Tracker::new(
            Hierarchy::detect(t.path()).unwrap(),
            Filter::new(&["/batch/**".into(), "/batch-b/*".into()], &[]).unwrap(),
            MetadataSource::new(t.path().join("docker"), t.path().join("state")),
            Duration::from_secs(3600),
        );
        tracker.refresh(true);
        let paths = |tr: &Tracker| tr.tracked.keys().cloned().collect::<Vec<_>>();
        assert_eq!(paths(&tracker), ["/batch-b/y", "/batch/a", "/batch/a/x"]);
        std::fs::remove_dir(memory.join("batch/a/x")).unwrap();
        std::fs::remove_dir(memory.join("batch/a")).unwrap();
        tracker.refresh(false);
        assert_eq!(paths(&tracker), ["/batch-b/y"], "a sibling's prefix stays");
    }

    #[test]
    fn a_v1_cgroup_is_opened_once_it_is_in_every_controller() {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "pids"] {
            std::fs::create_dir_all(t.path().join(c).join("agent")).unwrap();
            std::fs::write(t.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        std::fs::write(t.path().join("pids/agent/pids.current"), "0\n").unwrap();
        let mut tracker = Tracker::new(
            Hierarchy::detect(t.path()).unwrap(),
            Filter::default(),
            MetadataSource::new(t.path().join("docker"), t.path().join("state")),
            Duration::from_secs(3600),
        );
        tracker.refresh(true);
        // A runtime makes the memory directory first, the pids one a moment later.
        std::fs::create_dir(t.path().join("memory/agent/c")).unwrap();
        tracker.refresh(false);
        assert!(!tracker.tracked.contains_key("/agent/c"), "not in pids yet");
        std::fs::create_dir(t.path().join("pids/agent/c")).unwrap();
        std::fs::write(t.path().join("pids/agent/c/pids.current"), "1\n").unwrap();
        tracker.refresh(false);
        let t = &tracker.tracked["/agent/c"];
        assert!(
            t.reader.files() > 0,
            "opened with the pids files: {:?}",
            t.reader
        );
    }

    #[test]
    fn containerd_containers_are_found_from_their_bundles_and_named_when_known() {
        const CID: &str = "2d06dcee6c059bb568d9fc5156b118320dc636ddcec42a5e4fcbfc31178aba66";
        let t = tempfile::tempdir().unwrap();
        let memory = t.path().join("memory");
        let pod = "/kubepods/besteffort/pod9";
        for dir in [
            "agentns/web".to_string(),
            format!("{pod}/{CID}"),
            "other/x".into(),
        ] {
            std::fs::create_dir_all(memory.join(dir.trim_start_matches('/'))).unwrap();
        }
        std::fs::write(memory.join("cgroup.procs"), "").unwrap();
        let state = t.path().join("containerd");
        for (ns, id, cgroup) in [
            ("agentns", "web", "/agentns/web".to_string()),
            ("k8s.io", CID, format!("{pod}/{CID}")),
            // Its cgroup is not there (yet): not tracked.
            ("agentns", "later", "/agentns/later".to_string()),
        ] {
            let bundle = state
                .join("io.containerd.runtime.v2.task")
                .join(ns)
                .join(id);
            std::fs::create_dir_all(&bundle).unwrap();
            std::fs::write(
                bundle.join("config.json"),
                format!(r#"{{"linux":{{"cgroupsPath":"{cgroup}"}}}}"#),
            )
            .unwrap();
        }
        let metadata = MetadataSource::new(t.path().join("docker"), t.path().join("state"))
            .with_containerd(&state, state.join("no.sock"));
        let containerd = metadata.containerd.clone().unwrap();
        let mut tracker = Tracker::new(
            Hierarchy::detect(t.path()).unwrap(),
            Filter::default(),
            metadata,
            Duration::ZERO,
        );
        tracker.refresh(true);
        let runtime = |tr: &Tracker, p: &str| tr.tracked.get(p).map(|t| t.discovered.runtime);
        assert_eq!(runtime(&tracker, "/agentns/web"), Some(Runtime::Containerd));
        assert_eq!(
            runtime(&tracker, &format!("{pod}/{CID}")),
            Some(Runtime::Kubernetes)
        );
        assert_eq!(runtime(&tracker, pod), Some(Runtime::Kubernetes));
        assert_eq!(runtime(&tracker, "/other/x"), None, "no bundle names it");
        assert_eq!(runtime(&tracker, "/agentns/later"), None);
        assert!(
            tracker.tracked.values().all(|t| t.meta.name.is_empty()),
            "nothing fetched yet"
        );
        // containerd answers (in the background); the next refresh names them.
        containerd.answer_for_test(
            "agentns",
            "web",
            ContainerMeta {
                name: "web".into(),
                image: "busybox:1".into(),
                ..ContainerMeta::default()
            },
        );
        let kube = crate::container::KubeLabels {
            pod: "p\"0\n".into(),
            namespace: "ns".into(),
            container: "app".into(),
        };
        containerd.answer_for_test(
            "k8s.io",
            CID,
            ContainerMeta {
                name: "k8s_app_p_ns_u_0".into(),
                kube: Some(kube.clone()),
                ..ContainerMeta::default()
            },
        );
        // Their retries fall due (they back off from 1 s).
        for t in tracker.tracked.values_mut() {
            t.meta_retry = t.meta_retry.map(|(_, w)| (Instant::now(), w));
        }
        tracker.refresh(false);
        let meta = |p: &str| tracker.tracked[p].meta.clone();
        assert_eq!(meta("/agentns/web").image, "busybox:1");
        assert_eq!(meta(&format!("{pod}/{CID}")).kube, Some(kube.clone()));
        let pod_meta = meta(pod);
        assert_eq!((pod_meta.name.as_str(), pod_meta.image.as_str()), ("", ""));
        assert_eq!(
            pod_meta.kube,
            Some(crate::container::KubeLabels {
                container: String::new(),
                ..kube
            })
        );
    }

    #[test]
    fn non_utf8_cgroup_names_are_counted_once_and_skipped() {
        let t = tempfile::tempdir().unwrap();
        let memory = t.path().join("memory");
        std::fs::create_dir_all(memory.join("agent/ok")).unwrap();
        std::fs::write(memory.join("cgroup.procs"), "").unwrap();
        let bad = std::ffi::OsStr::from_bytes(b"bad\xff");
        std::fs::create_dir_all(memory.join("agent").join(bad).join("inner")).unwrap();
        let mut tracker = Tracker::new(
            Hierarchy::detect(t.path()).unwrap(),
            Filter::default(),
            MetadataSource::new(t.path().join("docker"), t.path().join("state")),
            Duration::ZERO,
        );
        tracker.refresh(true);
        tracker.refresh(true);
        assert_eq!(
            tracker.errors.get(&ScrapeErrorKind::NonUtf8Name),
            Some(&1),
            "one bad name, counted once over two rescans"
        );
        assert_eq!(tracker.counts().get(&Runtime::Agent), Some(&1));
    }
}
