//! The container cgroups `agent serve` follows: what discovery found, their
//! identity from the runtimes' files, and open stats readers, refreshed by
//! rescans and read on each scrape.

use super::layer_usage::{LayerUsage, UsageWalker, WalkerConfig};
use super::network::{InterfaceStats, Member, NetnsOf, NetnsTable};
use super::{ContainerIndex, ContainerLabels, ContainerMeta, MetadataSource};
use crate::cgroup::discovery::{self, Discovered, Filter, Runtime};
use crate::cgroup::stats::KeepOpen;
use crate::cgroup::watch::TreeWatch;
use crate::cgroup::{
    CgroupStats, Hierarchy, MetricGroup, MetricGroups, ScrapeErrorKind, StatsError, StatsReader,
};
use std::collections::HashSet;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A cgroup without metadata is looked up again this long after it was found, then
/// after twice as long each time: a runtime writes its files a moment after making
/// the cgroup, and a cgroup no runtime names (a synthetic tree, a service that
/// looks like a container) must not cost a failed open per second forever.
const META_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two lookups of missing metadata.
const META_RETRY_MAX: Duration = Duration::from_secs(60);

/// A cgroup the agent follows: what discovery said, its metadata and open files.
#[derive(Debug)]
pub struct Tracked {
    pub discovered: Discovered,
    pub meta: ContainerMeta,
    meta_found: bool,
    /// While `meta` is not found: when to look again, and the wait after that.
    meta_retry: (Instant, Duration),
    reader: StatsReader,
    /// Its network namespace, as last resolved.
    netns: Option<NetnsOf>,
    /// The label text of its series, rendered by the exposition once per metadata
    /// lookup; emptied whenever `meta` changes.
    series_labels: OnceLock<String>,
}

impl Tracked {
    fn new(discovered: Discovered, meta: Option<ContainerMeta>, reader: StatsReader) -> Self {
        Tracked {
            meta_found: meta.is_some(),
            meta_retry: (Instant::now() + META_RETRY_FIRST, META_RETRY_FIRST),
            meta: meta.unwrap_or_default(),
            discovered,
            reader,
            netns: None,
            series_labels: OnceLock::new(),
        }
    }

    /// Sets the metadata found for it; its series labels are rendered anew.
    fn found_meta(&mut self, meta: ContainerMeta) {
        self.meta = meta;
        self.meta_found = true;
        self.series_labels = OnceLock::new();
    }

    /// Whether a lookup of its missing metadata is due at `now`; when it is, the
    /// next one is scheduled twice as far off (up to [`META_RETRY_MAX`]).
    fn meta_retry_due(&mut self, now: Instant) -> bool {
        let (at, wait) = self.meta_retry;
        if self.meta_found || now < at {
            return false;
        }
        let wait = (wait * 2).min(META_RETRY_MAX);
        self.meta_retry = (now + wait, wait);
        true
    }

    /// The label text every series of this cgroup carries, rendered by `render` the
    /// first time it is asked for after the metadata was (re)read.
    pub fn series_labels(&self, render: impl FnOnce(&Tracked) -> String) -> &str {
        self.series_labels.get_or_init(|| render(self))
    }
}

/// One cgroup's readings from a scrape.
#[derive(Debug)]
pub struct Sample<'a> {
    pub tracked: &'a Tracked,
    pub stats: CgroupStats,
    /// The interfaces of its network namespace, where it reports them.
    pub network: Arc<Vec<InterfaceStats>>,
    /// Its writable layer, once the walker measured it.
    pub layer: Option<LayerUsage>,
}

/// Follows the set of container cgroups and reads them on demand.
#[derive(Debug)]
pub struct Tracker {
    hierarchy: Hierarchy,
    filter: Filter,
    metadata: MetadataSource,
    tracked: BTreeMap<String, Tracked>,
    /// When the tree was last checked for changes, and last walked.
    last_check: Option<Instant>,
    last_walk: Option<Instant>,
    /// Walks of the tree since start.
    walks: u64,
    /// Descriptors the stats readers may keep open, and keep now.
    fd_budget: usize,
    kept_fds: usize,
    budget_warned: bool,
    rescan_interval: Duration,
    /// The metric groups whose files are opened.
    groups: MetricGroups,
    /// The root cgroup (`/`, the machine), unless `--exclude /`.
    root: Option<Tracked>,
    index: Option<Arc<ContainerIndex>>,
    /// Errors since start, by kind.
    pub errors: HashMap<ScrapeErrorKind, u64>,
    /// Non-UTF-8 cgroup paths already counted.
    non_utf8_seen: HashSet<String>,
    /// Says when the tree changed; `None` without inotify (then it is polled).
    watch: Option<TreeWatch>,
    /// The network namespaces being read.
    netns: NetnsTable,
    /// The writable-layer walker (`with_layer_usage`), and the tasks it was told.
    walker: Option<UsageWalker>,
    walker_told: HashMap<String, u32>,
}

impl Tracker {
    /// A tracker over `hierarchy`; it rescans the tree at most every `rescan_interval`.
    pub fn new(
        hierarchy: Hierarchy,
        filter: Filter,
        metadata: MetadataSource,
        rescan_interval: Duration,
    ) -> Self {
        Tracker {
            hierarchy,
            filter,
            metadata,
            tracked: BTreeMap::new(),
            last_check: None,
            last_walk: None,
            walks: 0,
            fd_budget: fd_budget(),
            kept_fds: 0,
            budget_warned: false,
            rescan_interval,
            groups: MetricGroups::ALL,
            root: None,
            index: None,
            errors: HashMap::new(),
            non_utf8_seen: HashSet::new(),
            watch: TreeWatch::new()
                .inspect_err(|e| tracing::warn!(error = %e, "no inotify; polling the cgroup tree"))
                .ok(),
            netns: NetnsTable::new("/proc"),
            walker: None,
            walker_told: HashMap::new(),
        }
    }

    /// Measures each container's writable layer in the background, walking each
    /// at most every `interval` (when the fs group is on). The overlay roots of
    /// Docker and the agent come from the metadata source.
    pub fn with_layer_usage(mut self, interval: Duration, max_stats_per_sec: u64) -> Self {
        if !self.groups.has(MetricGroup::Fs) {
            return self;
        }
        let config = WalkerConfig {
            proc_root: "/proc".into(),
            interval,
            overlay_roots: vec![
                self.metadata.docker_root.join("overlay2"),
                self.metadata.state_dir.join("overlay2"),
                "/var/lib/containers/storage/overlay".into(),
            ],
            max_stats_per_sec,
        };
        match UsageWalker::start(config) {
            Ok(w) => self.walker = Some(w),
            Err(e) => tracing::warn!(error = %e, "cannot start the writable-layer walker"),
        }
        self
    }

    /// Reads only the files of `groups` (every group by default).
    pub fn with_groups(mut self, groups: MetricGroups) -> Self {
        self.groups = groups;
        self
    }

    /// The index of containers for the event path, kept in step with every scan.
    pub fn container_index(&mut self) -> Arc<ContainerIndex> {
        let index = self.index.get_or_insert_with(|| {
            Arc::new(ContainerIndex::new(
                self.hierarchy.clone(),
                self.filter.clone(),
                self.metadata.clone(),
            ))
        });
        let index = index.clone();
        self.publish_index();
        index
    }

    fn publish_index(&self) {
        let Some(index) = &self.index else { return };
        index.replace(
            self.tracked
                .values()
                .map(|t| {
                    (
                        t.discovered.path.clone(),
                        ContainerLabels {
                            id: t.discovered.path.clone(),
                            name: t.meta.name.clone(),
                            image: t.meta.image.clone(),
                        },
                    )
                })
                .collect(),
        );
    }

    /// The hierarchy being followed.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Number of tracked cgroups per runtime.
    pub fn counts(&self) -> BTreeMap<Runtime, usize> {
        let mut counts = BTreeMap::new();
        for t in self.tracked.values().chain(&self.root) {
            *counts.entry(t.discovered.runtime).or_insert(0) += 1;
        }
        counts
    }

    /// How often the tree was walked since start.
    pub fn walks(&self) -> u64 {
        self.walks
    }

    fn retry_missing_metadata(&mut self) {
        let mut found = false;
        let now = Instant::now();
        for t in self.tracked.values_mut() {
            if t.meta_retry_due(now)
                && let Some(m) = self.metadata.lookup(&t.discovered)
            {
                t.found_meta(m);
                found = true;
            }
        }
        if found {
            self.publish_index();
        }
    }

    fn count_error(&mut self, kind: ScrapeErrorKind) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    /// Rescans the tree (or only with `force`) when the last scan is older than
    /// the interval and a cgroup was made or removed since (the inotify watch
    /// says so), or the safety-net interval passed, or the watch is incomplete:
    /// opens readers for new cgroups and closes those of vanished ones. With
    /// nothing changing, nothing is walked.
    pub fn refresh(&mut self, force: bool) {
        if !force {
            if self
                .last_check
                .is_some_and(|t| t.elapsed() < self.rescan_interval)
            {
                return;
            }
            self.last_check = Some(Instant::now());
            let quiet = self
                .watch
                .as_mut()
                .is_some_and(|w| w.complete() && !w.changed());
            if quiet
                && self
                    .last_walk
                    .is_some_and(|t| t.elapsed() < SAFETY_NET_RESCAN)
            {
                // A runtime may write a container's metadata after making its
                // cgroup: look again for those still unnamed.
                self.retry_missing_metadata();
                return;
            }
        }
        self.last_check = Some(Instant::now());
        self.last_walk = self.last_check;
        self.walks += 1;
        self.track_root();
        let found = match discovery::scan(&self.hierarchy, &self.filter, self.watch.as_mut()) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cgroup discovery failed");
                self.count_error(ScrapeErrorKind::Discovery);
                return;
            }
        };
        for path in found.non_utf8 {
            // Counted once per cgroup, not once per rescan.
            if self.non_utf8_seen.len() < NON_UTF8_REMEMBERED
                && self.non_utf8_seen.insert(path.clone())
            {
                tracing::warn!(cgroup = %path, "cgroup name is not UTF-8; not followed");
                self.count_error(ScrapeErrorKind::NonUtf8Name);
            }
        }
        let mut found = found.found;
        self.add_containerd(&mut found);
        let mut next = BTreeMap::new();
        for d in found {
            if let Some(mut t) = self.tracked.remove(&d.path) {
                if !t.meta_found
                    && let Some(m) = self.metadata.lookup(&d)
                {
                    t.found_meta(m);
                }
                next.insert(d.path.clone(), t);
                continue;
            }
            match self.open_reader(&d.path) {
                Ok(reader) => {
                    let meta = self.metadata.lookup(&d);
                    tracing::debug!(cgroup = %d.path, runtime = d.runtime.as_str(), "tracking");
                    next.insert(d.path.clone(), Tracked::new(d, meta, reader));
                }
                Err(StatsError::Vanished(_)) => {}
                Err(e) => {
                    tracing::warn!(cgroup = %d.path, error = %format!("{e:#}"), "cannot open cgroup");
                    self.count_error(e.kind());
                }
            }
        }
        for gone in self.tracked.keys() {
            tracing::debug!(cgroup = %gone, "cgroup gone");
        }
        self.tracked = next;
        self.kept_fds = self
            .tracked
            .values()
            .map(|t| t.reader.open_files())
            .sum::<usize>()
            + self.netns.open_files();
        self.publish_index();
    }

    /// Adds the cgroups of containerd's running containers that no naming
    /// scheme recognises (`ctr run` puts them at `/<namespace>/<id>`), and marks
    /// those only an `--include` pattern found as containerd's.
    fn add_containerd(&self, found: &mut Vec<Discovered>) {
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

    /// A reader that keeps its descriptors while the budget allows, and opens
    /// its files per read past it (or when the process runs out anyway), so
    /// every cgroup is exported and the server keeps descriptors to accept with.
    fn open_reader(&mut self, rel: &str) -> Result<StatsReader, StatsError> {
        // A cgroup's files, at most (v1 with PSI): checked before opening them.
        const PER_CGROUP: usize = 24;
        if self.kept_fds + PER_CGROUP <= self.fd_budget {
            match StatsReader::open(&self.hierarchy, rel, self.groups, KeepOpen::Yes) {
                Ok(r) => {
                    self.kept_fds += r.open_files();
                    return Ok(r);
                }
                Err(StatsError::Read { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) =>
                {
                    // Out of descriptors before the budget says so: the budget
                    // is what is kept now.
                    self.fd_budget = self.kept_fds;
                }
                Err(e) => return Err(e),
            }
        }
        if !self.budget_warned {
            self.budget_warned = true;
            tracing::warn!(
                kept = self.kept_fds,
                "descriptor budget spent: further cgroups are read by opening their files at each scrape (raise the open-files limit to keep them open)"
            );
        }
        StatsReader::open(&self.hierarchy, rel, self.groups, KeepOpen::No)
    }

    /// Tracked cgroups whose files are opened at each read (past the budget).
    pub fn read_by_path(&self) -> usize {
        self.tracked
            .values()
            .filter(|t| t.reader.open_files() == 0 && t.reader.files() > 0)
            .count()
    }

    /// Opens the root cgroup once (again after a failure), unless excluded.
    fn track_root(&mut self) {
        if self.root.is_some() || self.filter.excludes("/") {
            return;
        }
        match StatsReader::open_root(&self.hierarchy, self.groups, KeepOpen::Yes) {
            Ok(reader) => {
                let d = Discovered {
                    path: "/".to_string(),
                    runtime: Runtime::Root,
                    container_id: None,
                };
                self.root = Some(Tracked::new(d, Some(ContainerMeta::default()), reader));
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot open the root cgroup");
                self.count_error(e.kind());
            }
        }
    }

    /// Refreshes if due, then reads every tracked cgroup (the root first). Vanished
    /// cgroups are dropped and skipped; per-file errors are counted and that family
    /// omitted.
    ///
    /// Large sets are read by a few threads at once: the cost is the kernel
    /// generating each file, which parallelises across cores.
    pub fn collect(&mut self) -> Vec<Sample<'_>> {
        self.refresh(false);
        let entries: Vec<&Tracked> = self.root.iter().chain(self.tracked.values()).collect();
        let results: Vec<(Result<CgroupStats, StatsError>, Vec<ScrapeErrorKind>)> =
            read_in_parallel(&entries, read_chunk);
        let mut vanished = Vec::new();
        let mut kinds = Vec::new();
        let mut readings = Vec::with_capacity(entries.len());
        for (t, (result, errors)) in entries.iter().zip(results) {
            kinds.extend(errors);
            match result {
                Ok(stats) => readings.push((t.discovered.path.clone(), stats)),
                Err(StatsError::Vanished(_)) => vanished.push(t.discovered.path.clone()),
                Err(e) => kinds.push(e.kind()),
            }
        }
        drop(entries);
        for kind in kinds {
            self.count_error(kind);
        }
        for path in vanished {
            self.tracked.remove(&path);
        }
        let network = self.read_network(&readings);
        let layers = self.layer_results(&readings);
        readings
            .into_iter()
            .zip(network.into_iter().zip(layers))
            .filter_map(|((path, stats), (network, layer))| {
                let tracked = match path.as_str() {
                    "/" => self.root.as_ref()?,
                    _ => self.tracked.get(&path)?,
                };
                Some(Sample {
                    tracked,
                    stats,
                    network,
                    layer,
                })
            })
            .collect()
    }

    /// Each reading's network interfaces (empty where not reported, or with the
    /// network group off).
    fn read_network(
        &mut self,
        readings: &[(String, CgroupStats)],
    ) -> Vec<Arc<Vec<InterfaceStats>>> {
        if !self.groups.has(MetricGroup::Network) {
            return vec![Arc::default(); readings.len()];
        }
        let mut members = Vec::with_capacity(readings.len());
        let mut cache = Vec::with_capacity(readings.len());
        for (path, stats) in readings {
            match self.tracked.get(path) {
                Some(t) if path != "/" => {
                    members.push(Some(Member {
                        first_pid: stats.first_pid,
                        start_time: stats.start_time_seconds.unwrap_or(0.0),
                        runtime: t.discovered.runtime,
                    }));
                    cache.push(t.netns);
                }
                _ => {
                    members.push(None);
                    cache.push(None);
                }
            }
        }
        let before = self.netns.open_files();
        let mut room = self.fd_budget.saturating_sub(self.kept_fds);
        let mut failed = 0;
        let network = self.netns.read(
            &members,
            &mut cache,
            || {
                let keep = room > 0;
                room = room.saturating_sub(1);
                keep
            },
            |e| {
                tracing::debug!(error = %e, "network namespace");
                failed += 1;
            },
        );
        for ((path, _), netns) in readings.iter().zip(cache) {
            if let Some(t) = self.tracked.get_mut(path) {
                t.netns = netns;
            }
        }
        self.kept_fds = (self.kept_fds + self.netns.open_files()).saturating_sub(before);
        for _ in 0..failed {
            self.count_error(ScrapeErrorKind::Read);
        }
        network
    }

    /// Tells the walker which containers there are, and takes its last results.
    fn layer_results(&mut self, readings: &[(String, CgroupStats)]) -> Vec<Option<LayerUsage>> {
        let Some(walker) = &self.walker else {
            return vec![None; readings.len()];
        };
        let tasks = || {
            readings
                .iter()
                .filter(|(path, _)| path != "/")
                .filter_map(|(path, s)| Some((path.as_str(), s.first_pid?)))
        };
        let changed = tasks().count() != self.walker_told.len()
            || tasks().any(|(path, pid)| self.walker_told.get(path) != Some(&pid));
        if changed {
            walker.want(tasks());
            self.walker_told = tasks().map(|(p, pid)| (p.to_string(), pid)).collect();
        }
        walker.with_results(|r| {
            readings
                .iter()
                .map(|(path, _)| r.get(path).cloned())
                .collect()
        })
    }
}

/// The descriptors stats readers may keep: the open-files limit less a reserve
/// for the server's connections, the control socket, eBPF maps and the rest.
fn fd_budget() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the plain struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let soft = usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX);
    soft.saturating_sub((soft / 8).max(1024))
}

/// With the tree watched, a full walk at least this often all the same: the
/// safety net for an event the watch could not deliver.
const SAFETY_NET_RESCAN: Duration = Duration::from_secs(60);

/// Non-UTF-8 cgroup names remembered (so counted once each), at most.
const NON_UTF8_REMEMBERED: usize = 1024;

/// Below this many items (cgroups, network namespaces) one thread reads them all.
const PARALLEL_MIN: usize = 64;
/// Reading threads per scrape, at most.
const MAX_READ_THREADS: usize = 4;

/// `read` over `items` in chunks, on up to [`MAX_READ_THREADS`] scoped threads
/// when there are at least [`PARALLEL_MIN`] of them; the results in the items'
/// order. The scrape's file reads (cgroups, network namespaces) go through here.
pub(crate) fn read_in_parallel<T: Sync, R: Send>(
    items: &[T],
    read: impl Fn(&[T]) -> Vec<R> + Sync,
) -> Vec<R> {
    if items.len() < PARALLEL_MIN {
        return read(items);
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_READ_THREADS);
    let chunk = items.len().div_ceil(threads).max(1);
    let read = &read;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| scope.spawn(move || read(c)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn read_chunk(
    entries: &[&Tracked],
) -> Vec<(Result<CgroupStats, StatsError>, Vec<ScrapeErrorKind>)> {
    let mut buf = Vec::with_capacity(8192);
    entries
        .iter()
        .map(|t| {
            let mut errors = Vec::new();
            let r = t.reader.read(&mut buf, |e| {
                tracing::debug!(error = %format!("{e:#}"), "stats file");
                errors.push(e.kind());
            });
            (r, errors)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn the_tree_is_walked_again_only_when_a_cgroup_comes_or_goes() {
        let t = tempfile::tempdir().unwrap();
        let memory = t.path().join("memory");
        std::fs::create_dir_all(memory.join("agent/one")).unwrap();
        std::fs::write(memory.join("cgroup.procs"), "").unwrap();
        let mut tracker = Tracker::new(
            Hierarchy::detect(t.path()).unwrap(),
            Filter::default(),
            MetadataSource::new(t.path().join("docker"), t.path().join("state")),
            Duration::ZERO,
        );
        tracker.refresh(false);
        assert_eq!(
            (tracker.walks(), tracker.counts().get(&Runtime::Agent)),
            (1, Some(&1))
        );
        for _ in 0..5 {
            tracker.refresh(false);
        }
        assert_eq!(tracker.walks(), 1, "nothing changed, nothing walked");
        std::fs::create_dir(memory.join("agent/two")).unwrap();
        tracker.refresh(false);
        assert_eq!(
            (tracker.walks(), tracker.counts().get(&Runtime::Agent)),
            (2, Some(&2))
        );
        std::fs::create_dir(memory.join("agent/two/nested")).unwrap();
        tracker.refresh(false);
        assert_eq!(tracker.walks(), 3, "below a new cgroup too");
        std::fs::remove_dir(memory.join("agent/two/nested")).unwrap();
        std::fs::remove_dir(memory.join("agent/two")).unwrap();
        tracker.refresh(false);
        assert_eq!(tracker.counts().get(&Runtime::Agent), Some(&1));
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
        let kube = super::super::KubeLabels {
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
            t.meta_retry.0 = Instant::now();
        }
        tracker.refresh(false);
        let meta = |p: &str| tracker.tracked[p].meta.clone();
        assert_eq!(meta("/agentns/web").image, "busybox:1");
        assert_eq!(meta(&format!("{pod}/{CID}")).kube, Some(kube.clone()));
        let pod_meta = meta(pod);
        assert_eq!((pod_meta.name.as_str(), pod_meta.image.as_str()), ("", ""));
        assert_eq!(
            pod_meta.kube,
            Some(super::super::KubeLabels {
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

    #[test]
    fn metadata_written_after_the_cgroup_is_found_with_backoff() {
        const ID: &str = "a2c13bad3808eb2673f71b881f61ad18d6a24e509cdf4e1c48975bd036f41f6a";
        let t = tempfile::tempdir().unwrap();
        let memory = t.path().join("memory");
        std::fs::create_dir_all(memory.join("docker").join(ID)).unwrap();
        std::fs::write(memory.join("cgroup.procs"), "").unwrap();
        let mut tracker = Tracker::new(
            Hierarchy::detect(t.path()).unwrap(),
            Filter::default(),
            MetadataSource::new(t.path().join("docker"), t.path().join("state")),
            Duration::ZERO,
        );
        tracker.refresh(false);
        let path = format!("/docker/{ID}");
        let labels = |tracker: &Tracker| {
            tracker.tracked[&path]
                .series_labels(|t| t.meta.name.clone())
                .to_owned()
        };
        assert_eq!(labels(&tracker), "", "no config yet");

        // Not due before a second has passed, then at 2 s, 4 s, … up to a minute.
        let tracked = tracker.tracked.get_mut(&path).unwrap();
        let start = tracked.meta_retry.0 - META_RETRY_FIRST;
        assert!(!tracked.meta_retry_due(start));
        let mut waits = Vec::new();
        for _ in 0..8 {
            let at = tracked.meta_retry.0;
            assert!(tracked.meta_retry_due(at));
            assert!(!tracked.meta_retry_due(at), "not twice at once");
            waits.push((tracked.meta_retry.0 - at).as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);

        // The runtime writes its config; the next due lookup names the cgroup and
        // its series labels are rendered anew.
        let dir = t.path().join("docker/containers").join(ID);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.v2.json"),
            r#"{"Name":"/late","Config":{"Image":"busybox"}}"#,
        )
        .unwrap();
        tracker.tracked.get_mut(&path).unwrap().meta_retry.0 = start;
        tracker.retry_missing_metadata();
        assert_eq!(labels(&tracker), "late");
    }
}
