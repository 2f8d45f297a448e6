//! The container cgroups `agent serve` follows: what discovery found, their
//! identity from the runtimes' files, and open stats readers, refreshed by
//! rescans and read on each scrape.

use super::{ContainerIndex, ContainerLabels, ContainerMeta, MetadataSource};
use crate::cgroup::discovery::{self, Discovered, Filter, Runtime};
use crate::cgroup::{
    CgroupStats, Hierarchy, MetricGroups, ScrapeErrorKind, StatsError, StatsReader,
};
use std::collections::HashSet;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A cgroup the agent follows: what discovery said, its metadata and open files.
#[derive(Debug)]
pub struct Tracked {
    pub discovered: Discovered,
    pub meta: ContainerMeta,
    meta_found: bool,
    reader: StatsReader,
    /// The label text of its series, rendered by the exposition once per metadata
    /// lookup; emptied whenever `meta` changes.
    series_labels: OnceLock<String>,
}

impl Tracked {
    fn new(discovered: Discovered, meta: Option<ContainerMeta>, reader: StatsReader) -> Self {
        Tracked {
            meta_found: meta.is_some(),
            meta: meta.unwrap_or_default(),
            discovered,
            reader,
            series_labels: OnceLock::new(),
        }
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
}

/// Follows the set of container cgroups and reads them on demand.
#[derive(Debug)]
pub struct Tracker {
    hierarchy: Hierarchy,
    filter: Filter,
    metadata: MetadataSource,
    tracked: BTreeMap<String, Tracked>,
    last_scan: Option<Instant>,
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
            last_scan: None,
            rescan_interval,
            groups: MetricGroups::ALL,
            root: None,
            index: None,
            errors: HashMap::new(),
            non_utf8_seen: HashSet::new(),
        }
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

    fn count_error(&mut self, kind: ScrapeErrorKind) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    /// Rescans the tree if the last scan is older than the interval (or `force`):
    /// opens readers for new cgroups and closes those of vanished ones.
    pub fn refresh(&mut self, force: bool) {
        if !force
            && self
                .last_scan
                .is_some_and(|t| t.elapsed() < self.rescan_interval)
        {
            return;
        }
        self.last_scan = Some(Instant::now());
        self.track_root();
        let found = match discovery::scan(&self.hierarchy, &self.filter) {
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
        let mut next = BTreeMap::new();
        for d in found.found {
            if let Some(mut t) = self.tracked.remove(&d.path) {
                if !t.meta_found
                    && let Some(m) = self.metadata.lookup(&d)
                {
                    t.meta = m;
                    t.meta_found = true;
                    t.series_labels = OnceLock::new();
                }
                next.insert(d.path.clone(), t);
                continue;
            }
            match StatsReader::open(&self.hierarchy, &d.path, self.groups) {
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
        self.publish_index();
    }

    /// Opens the root cgroup once (again after a failure), unless excluded.
    fn track_root(&mut self) {
        if self.root.is_some() || self.filter.excludes("/") {
            return;
        }
        match StatsReader::open_root(&self.hierarchy, self.groups) {
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
        let threads = if entries.len() < PARALLEL_MIN {
            1
        } else {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, MAX_READ_THREADS)
        };
        let chunk = entries.len().div_ceil(threads).max(1);
        let results: Vec<(Result<CgroupStats, StatsError>, Vec<ScrapeErrorKind>)> = if threads == 1
        {
            read_chunk(&entries)
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = entries
                    .chunks(chunk)
                    .map(|c| scope.spawn(move || read_chunk(c)))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            })
        };
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
        readings
            .into_iter()
            .filter_map(|(path, stats)| {
                let tracked = match path.as_str() {
                    "/" => self.root.as_ref()?,
                    _ => self.tracked.get(&path)?,
                };
                Some(Sample { tracked, stats })
            })
            .collect()
    }
}

/// Non-UTF-8 cgroup names remembered (so counted once each), at most.
const NON_UTF8_REMEMBERED: usize = 1024;

/// Below this many cgroups one thread reads them all.
const PARALLEL_MIN: usize = 64;
/// Reading threads per scrape, at most.
const MAX_READ_THREADS: usize = 4;

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
