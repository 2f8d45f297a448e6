//! The cgroup layer: detect the hierarchy, discover container cgroups, read their
//! accounting files.

pub mod discovery;
pub mod hierarchy;
pub mod index;
pub mod manager;
pub mod metadata;
pub mod parse;
pub mod stats;

pub use discovery::{Discovered, Filter, Runtime};
pub use hierarchy::{Controller, Hierarchy, V1Mount, Version};
pub use index::ContainerIndex;
pub use manager::{AGENT_SUBTREE, CgroupInfo, ContainerCgroup, Limits};
pub use metadata::{ContainerMeta, MetadataSource};
pub use stats::{CgroupStats, StatsError, StatsReader};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors of the cgroup layer that are not per-file stats errors.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{0} is not a cgroup mount (no cgroup.controllers, no v1 controller directories)")]
    NotCgroupRoot(PathBuf),
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad cgroup pattern {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("cannot apply {option}: {} is missing (controller not enabled)", path.display())]
    MissingControllerFile { option: &'static str, path: PathBuf },
    #[error("cannot apply the {0} limit: no {0} cgroup hierarchy is mounted")]
    NoHierarchy(&'static str),
}

/// Names the operation and path of a failed I/O call as a [`CgroupError::Io`].
pub(crate) fn io_error(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

/// A cgroup the agent follows: what discovery said, its metadata and open files.
#[derive(Debug)]
pub struct Tracked {
    pub discovered: Discovered,
    pub meta: ContainerMeta,
    meta_found: bool,
    reader: StatsReader,
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
    index: Option<Arc<ContainerIndex>>,
    /// Errors since start, by kind (`vanished`, `read`, `parse`, `discovery`).
    pub errors: HashMap<&'static str, u64>,
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
            index: None,
            errors: HashMap::new(),
        }
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
                        crate::ebpf::ContainerLabels {
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
        for t in self.tracked.values() {
            *counts.entry(t.discovered.runtime).or_insert(0) += 1;
        }
        counts
    }

    fn count_error(&mut self, kind: &'static str) {
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
        let found = match discovery::scan(&self.hierarchy, &self.filter) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cgroup discovery failed");
                self.count_error("discovery");
                return;
            }
        };
        let mut next = BTreeMap::new();
        for d in found {
            if let Some(mut t) = self.tracked.remove(&d.path) {
                if !t.meta_found
                    && let Some(m) = self.metadata.lookup(&d)
                {
                    t.meta = m;
                    t.meta_found = true;
                }
                next.insert(d.path.clone(), t);
                continue;
            }
            match StatsReader::open(&self.hierarchy, &d.path) {
                Ok(reader) => {
                    let meta = self.metadata.lookup(&d);
                    tracing::debug!(cgroup = %d.path, runtime = d.runtime.as_str(), "tracking");
                    next.insert(
                        d.path.clone(),
                        Tracked {
                            meta_found: meta.is_some(),
                            meta: meta.unwrap_or_default(),
                            discovered: d,
                            reader,
                        },
                    );
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

    /// Refreshes if due, then reads every tracked cgroup. Vanished cgroups are
    /// dropped and skipped; per-file errors are counted and that family omitted.
    ///
    /// Large sets are read by a few threads at once: the cost is the kernel
    /// generating each file, which parallelises across cores.
    pub fn collect(&mut self) -> Vec<Sample<'_>> {
        self.refresh(false);
        let entries: Vec<&Tracked> = self.tracked.values().collect();
        let threads = if entries.len() < PARALLEL_MIN {
            1
        } else {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, MAX_READ_THREADS)
        };
        let chunk = entries.len().div_ceil(threads).max(1);
        let results: Vec<(Result<CgroupStats, StatsError>, Vec<&'static str>)> = if threads == 1 {
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
                Some(Sample {
                    tracked: self.tracked.get(&path)?,
                    stats,
                })
            })
            .collect()
    }
}

/// Below this many cgroups one thread reads them all.
const PARALLEL_MIN: usize = 64;
/// Reading threads per scrape, at most.
const MAX_READ_THREADS: usize = 4;

fn read_chunk(entries: &[&Tracked]) -> Vec<(Result<CgroupStats, StatsError>, Vec<&'static str>)> {
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
