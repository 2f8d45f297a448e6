//! The container cgroups `agent serve` follows: what discovery found, their
//! identity from the runtimes' files, and open stats readers, refreshed by
//! rescans and read on each scrape.

use super::layer_usage::{LayerUsage, UsageWalker, WalkerConfig};
use super::network::{InterfaceStats, Member, NetnsOf, NetnsTable};
use super::{ContainerIndex, ContainerLabels, ContainerMeta, MetadataSource};
use crate::cgroup::discovery::{self, Discovered, Filter, Runtime};
use crate::cgroup::stats::KeepOpen;
use crate::cgroup::watch::{Changes, TreeWatch};
use crate::cgroup::{
    CgroupStats, Hierarchy, MetricGroup, MetricGroups, ScrapeErrorKind, StatsError, StatsReader,
};
use std::collections::HashSet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
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
    /// While `meta` is not found and a runtime could name it: when to look
    /// again, and the wait after that.
    meta_retry: Option<(Instant, Duration)>,
    reader: StatsReader,
    /// Its network namespace, as last resolved.
    netns: Option<NetnsOf>,
    /// The label text of its series, rendered by the exposition once per metadata
    /// lookup; emptied whenever `meta` changes.
    series_labels: OnceLock<String>,
}

impl Tracked {
    /// `retry`: whether a later lookup could find metadata `meta` lacks.
    fn new(
        discovered: Discovered,
        meta: Option<ContainerMeta>,
        retry: bool,
        reader: StatsReader,
    ) -> Self {
        Tracked {
            meta_retry: (meta.is_none() && retry)
                .then(|| (Instant::now() + META_RETRY_FIRST, META_RETRY_FIRST)),
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
        self.meta_retry = None;
        self.series_labels = OnceLock::new();
    }

    /// Whether a lookup of its missing metadata is due at `now`; when it is, the
    /// next one is scheduled twice as far off (up to [`META_RETRY_MAX`]).
    fn meta_retry_due(&mut self, now: Instant) -> bool {
        let Some((at, wait)) = self.meta_retry else {
            return false;
        };
        if now < at {
            return false;
        }
        let wait = (wait * 2).min(META_RETRY_MAX);
        self.meta_retry = Some((now + wait, wait));
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
    /// When the whole tree was last walked.
    last_walk: Option<Instant>,
    /// Walks of the whole tree since start, and of subtrees the watch reported.
    walks: u64,
    subtree_walks: u64,
    /// New cgroups waiting for their other controllers' directories (v1), with
    /// when they were first seen.
    pending: BTreeMap<String, (Discovered, Instant)>,
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
            last_walk: None,
            walks: 0,
            subtree_walks: 0,
            pending: BTreeMap::new(),
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

    /// How often the whole tree was walked since start.
    pub fn walks(&self) -> u64 {
        self.walks
    }

    /// How many new subtrees the watch had walked since start.
    pub fn subtree_walks(&self) -> u64 {
        self.subtree_walks
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
                tracing::debug!(cgroup = %d.path, runtime = d.runtime.as_str(), "tracking");
                Opened::Tracked(Tracked::new(d, meta, retry, reader))
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
                self.root = Some(Tracked::new(
                    d,
                    Some(ContainerMeta::default()),
                    false,
                    reader,
                ));
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
        self.collect_with(true)
    }

    /// [`Tracker::collect`] of the cgroup files alone: no network namespace is
    /// read and no layer usage taken, for a reader that shows neither (the web
    /// UI's history while nobody scrapes).
    pub fn collect_cgroup_files(&mut self) -> Vec<Sample<'_>> {
        self.collect_with(false)
    }

    fn collect_with(&mut self, network_and_layers: bool) -> Vec<Sample<'_>> {
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
        let (network, layers) = if network_and_layers {
            (self.read_network(&readings), self.layer_results(&readings))
        } else {
            (
                vec![Arc::default(); readings.len()],
                vec![None; readings.len()],
            )
        };
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

/// How long a new v1 cgroup may wait for its directories in every controller.
const SETTLE: Duration = Duration::from_secs(1);

/// What became of a cgroup not tracked before.
enum Opened {
    Tracked(Tracked),
    /// Not in every controller yet: looked at again on the next refresh.
    Pending(Discovered, Instant),
    /// Gone already, or unreadable (counted).
    Skipped,
}

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
        let start = tracked.meta_retry.unwrap().0 - META_RETRY_FIRST;
        assert!(!tracked.meta_retry_due(start));
        let mut waits = Vec::new();
        for _ in 0..8 {
            let at = tracked.meta_retry.unwrap().0;
            assert!(tracked.meta_retry_due(at));
            assert!(!tracked.meta_retry_due(at), "not twice at once");
            waits.push((tracked.meta_retry.unwrap().0 - at).as_secs());
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
        tracker.tracked.get_mut(&path).unwrap().meta_retry = Some((start, META_RETRY_FIRST));
        tracker.retry_missing_metadata();
        assert_eq!(labels(&tracker), "late");
    }
}
