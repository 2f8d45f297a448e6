//! Reading the tracked cgroups for a scrape: their files on a few threads, then
//! their network namespaces and writable layers.

use super::*;

impl Tracker {
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
        let entries: Vec<&Tracked> = self
            .root
            .iter()
            .chain(self.tracked.values().map(|t| &**t))
            .collect();
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

/// Below this many items (cgroups, network namespaces) one thread reads them all.
const PARALLEL_MIN: usize = 64;
/// Reading threads per scrape, at most.
const MAX_READ_THREADS: usize = 4;

/// `read` over `items` in chunks, on up to [`MAX_READ_THREADS`] scoped threads
/// when there are at least [`PARALLEL_MIN`] of them; the results in the items'
/// order. The scrape's file reads (cgroups, network namespaces) go through here.
///
/// One contiguous chunk a thread. Chunks of 32 taken in turn from a shared queue
/// (to even out cgroups kept open and cgroups opened per read) were tried; `bench
/// scrape` could not tell them from this split through the noise of the kernel
/// tearing down earlier runs' namespaces, so the simpler split stays.
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
            // A panicking read panics the scrape, as it does on one thread.
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
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

    #[test]
    fn parallel_reads_keep_the_items_order() {
        let items: Vec<usize> = (0..1000).collect();
        let out = read_in_parallel(&items, |chunk| {
            chunk
                .iter()
                .map(|&i| {
                    // The first items are dear, as the cgroups kept open are
                    // cheap: the threads finish at different times.
                    if i < 200 {
                        std::thread::sleep(std::time::Duration::from_micros(50));
                    }
                    i * 2
                })
                .collect()
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(read_in_parallel(&items[..3], |c| c.to_vec()), vec![0, 1, 2]);
    }
}
