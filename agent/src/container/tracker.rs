//! The container cgroups `agent serve` follows: what discovery found, their
//! identity from the runtimes' files, and open stats readers; kept up to date
//! by [`refresh`] and read on each scrape by [`read`].

use super::layer_usage::{LayerUsage, UsageWalker, WalkerConfig};
use super::network::{InterfaceStats, Member, NetnsOf, NetnsTable};
use super::{ContainerIndex, ContainerLabels, ContainerMeta, MetadataSource};
use crate::cgroup::discovery::{self, Discovered, Filter, Runtime};
use crate::cgroup::stats::KeepOpen;
use crate::cgroup::watch::TreeWatch;
use crate::cgroup::{
    CgroupStats, Hierarchy, MetricGroup, MetricGroups, ScrapeErrorKind, StatsError, StatsReader,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod read;
mod refresh;

pub(crate) use read::read_in_parallel;

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
    tracked: BTreeMap<String, Box<Tracked>>,
    /// Whether some tracked cgroup may still have a metadata lookup due: without
    /// one, the 1 s refresh does not go through them all (at 1000 cgroups that
    /// walk through cold memory was most of an idle agent's CPU).
    meta_pending: bool,
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
            meta_pending: false,
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

    /// Keeps at most `n` stat files open between scrapes (past them, files are
    /// opened at each read), as well as within the descriptor limit. A kept
    /// file of cgroupfs or /proc holds its seq_file page, ~3.5 KiB of kernel
    /// memory charged to the agent's own cgroup while it is open: without a
    /// cap, a high descriptor limit lets that grow with the number of cgroups.
    pub fn with_max_kept_files(mut self, n: usize) -> Self {
        self.fd_budget = self.fd_budget.min(n);
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
        for t in self.tracked.values().map(|t| &**t).chain(&self.root) {
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
        if !self.meta_pending {
            return;
        }
        let mut found = false;
        let mut left = false;
        let now = Instant::now();
        for t in self.tracked.values_mut() {
            if t.meta_retry_due(now)
                && let Some(m) = self.metadata.lookup(&t.discovered)
            {
                t.found_meta(m);
                found = true;
            }
            left |= t.meta_retry.is_some();
        }
        self.meta_pending = left;
        if found {
            self.publish_index();
        }
    }

    fn count_error(&mut self, kind: ScrapeErrorKind) {
        *self.errors.entry(kind).or_insert(0) += 1;
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
                "open stat files at their cap: further cgroups are read by opening their files at each scrape (raise --max-open-stat-files and the open-files limit to keep them open)"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_kept_files_cap_every_cgroup_is_still_read() {
        let t = tempfile::tempdir().unwrap();
        let memory = t.path().join("memory");
        std::fs::write(t.path().join("cgroup.procs"), "").unwrap();
        for i in 0..5 {
            let dir = memory.join(format!("c{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("memory.usage_in_bytes"),
                format!("{}\n", 4096 * (i + 1)),
            )
            .unwrap();
        }
        std::fs::write(memory.join("cgroup.procs"), "").unwrap();
        let mut tracker = Tracker::new(
            Hierarchy::detect(t.path()).unwrap(),
            Filter::new(&["/c*".to_owned()], &[]).unwrap(),
            MetadataSource::new(t.path().join("docker"), t.path().join("state")),
            Duration::ZERO,
        )
        .with_max_kept_files(25);
        let mut usage: Vec<(String, f64)> = tracker
            .collect()
            .iter()
            .filter(|s| s.tracked.discovered.path != "/")
            .map(|s| {
                let usage = s.stats.memory_usage_bytes.unwrap();
                (s.tracked.discovered.path.clone(), usage)
            })
            .collect();
        usage.sort_by(|a, b| a.0.cmp(&b.0));
        let want: Vec<(String, f64)> = (0..5)
            .map(|i| (format!("/c{i}"), 4096.0 * f64::from(i + 1)))
            .collect();
        assert_eq!(usage, want);
        // A cgroup is kept while the most files a cgroup can have (24) still
        // fit under the cap of 25: two of these one-file cgroups; the other
        // three are read by path.
        assert_eq!(tracker.read_by_path(), 3);
        assert!(tracker.kept_fds <= 25, "{}", tracker.kept_fds);
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
