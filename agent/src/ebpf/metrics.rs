//! Per-container exec and mount counters, and their encoding at scrape time.
//!
//! Counting happens in user space as records arrive; the kernel counts what
//! it could not deliver (`agent_ebpf_events_lost_total`). Series of containers
//! and namespaces that are gone are dropped after a grace period, so the
//! number of series stays bounded by what lives on the node.

use super::attribution::{Attributor, ContainerLabels, Subject};
use super::events::{Event, MountOp};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Series {
    exec: u64,
    /// (operation, ok) → count
    mounts: BTreeMap<(MountOp, bool), u64>,
    last_event: Instant,
    subject: Subject,
    mnt_ns: u32,
}

/// The counters, keyed by the container (or namespace, or host) they belong to.
#[derive(Debug, Default)]
pub struct EventCounters {
    series: HashMap<ContainerLabels, Series>,
}

impl EventCounters {
    /// Counts one event for `labels`.
    pub fn record(&mut self, labels: &ContainerLabels, subject: &Subject, event: &Event) {
        let now = Instant::now();
        let mnt_ns = event.process().mnt_ns;
        let series = match self.series.get_mut(labels) {
            Some(s) => s,
            None => self.series.entry(labels.clone()).or_insert(Series {
                exec: 0,
                mounts: BTreeMap::new(),
                last_event: now,
                subject: subject.clone(),
                mnt_ns,
            }),
        };
        series.last_event = now;
        series.subject = subject.clone();
        series.mnt_ns = mnt_ns;
        match event {
            Event::Exec(..) => series.exec += 1,
            Event::Mount(_, m) => *series.mounts.entry((m.operation, m.ok())).or_insert(0) += 1,
        }
    }

    /// Drops the series whose last event is older than `grace` and whose
    /// container or namespace no longer exists.
    pub fn prune(&mut self, grace: Duration, attributor: &Attributor) {
        let now = Instant::now();
        self.series.retain(|_, s| {
            now.duration_since(s.last_event) < grace || attributor.alive(&s.subject, s.mnt_ns)
        });
    }

    /// Number of series (containers, namespaces and the host) counted.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Exec count of one series (0 if it has none).
    pub fn execs(&self, labels: &ContainerLabels) -> u64 {
        self.series.get(labels).map_or(0, |s| s.exec)
    }

    /// Mount count of one series for `operation`, successful or failed.
    pub fn mounts(&self, labels: &ContainerLabels, operation: MountOp, ok: bool) -> u64 {
        self.series
            .get(labels)
            .and_then(|s| s.mounts.get(&(operation, ok)))
            .copied()
            .unwrap_or(0)
    }

    /// Writes `agent_exec_events_total` and `agent_mount_events_total`.
    pub fn encode(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut sorted: Vec<_> = self.series.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));

        let mut family = encoder.encode_descriptor(
            "agent_exec_events",
            "Successful execs seen by the sched_process_exec hook, per container, namespace or host",
            None,
            MetricType::Counter,
        )?;
        for (labels, s) in &sorted {
            let set = label_set(labels);
            let mut metric = family.encode_family(&set)?;
            metric.encode_counter::<NoLabelSet, _, u64>(&s.exec, None)?;
        }

        let mut family = encoder.encode_descriptor(
            "agent_mount_events",
            "Mount-family syscalls (mount, umount2, fsopen, fsconfig, fsmount, move_mount, open_tree, mount_setattr) by operation and result",
            None,
            MetricType::Counter,
        )?;
        for (labels, s) in &sorted {
            for ((op, ok), n) in &s.mounts {
                let set = [
                    ("id", labels.id.as_str()),
                    ("name", labels.name.as_str()),
                    ("image", labels.image.as_str()),
                    ("operation", op.as_str()),
                    ("result", if *ok { "ok" } else { "error" }),
                ];
                let mut metric = family.encode_family(&set)?;
                metric.encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        Ok(())
    }
}

fn label_set(labels: &ContainerLabels) -> [(&'static str, &str); 3] {
    [
        ("id", labels.id.as_str()),
        ("name", labels.name.as_str()),
        ("image", labels.image.as_str()),
    ]
}

/// Encodes a single counter family with one bounded label.
pub(crate) fn encode_counter_by(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        let set = [(label, *value)];
        let mut metric = family.encode_family(&set)?;
        metric.encode_counter::<NoLabelSet, _, u64>(n, None)?;
    }
    Ok(())
}

/// Encodes a gauge family with one bounded label.
pub(crate) fn encode_gauge_by(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, i64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, n) in values {
        let set = [(label, *value)];
        let mut metric = family.encode_family(&set)?;
        metric.encode_gauge(n)?;
    }
    Ok(())
}
