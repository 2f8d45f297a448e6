//! Per-container exec and mount counters, and their encoding at scrape time.
//!
//! Counting happens in user space as records arrive; the kernel counts what
//! it could not deliver (`agent_ebpf_events_lost_total`). Series of containers
//! and namespaces that are gone are dropped after a grace period, so the
//! number of series stays bounded by what lives on the node.

use super::attribution::{Attributor, Subject};
use super::events::{Event, ExitOutcome, MountOp};
use crate::container::ContainerLabels;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Series {
    exec: u64,
    /// (operation, ok) → count
    mounts: BTreeMap<(MountOp, bool), u64>,
    /// Process exits, indexed like [`ExitOutcome::ALL`].
    exits: [u64; 3],
    oom_kills: u64,
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
                exits: [0; 3],
                oom_kills: 0,
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
            Event::Exit(_, x) => series.exits[x.outcome() as usize] += 1,
            Event::Oom(..) => series.oom_kills += 1,
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

    /// Process exits of one series with `outcome`.
    pub fn exits(&self, labels: &ContainerLabels, outcome: ExitOutcome) -> u64 {
        self.series
            .get(labels)
            .map_or(0, |s| s.exits[outcome as usize])
    }

    /// OOM kills of one series' processes.
    pub fn oom_kills(&self, labels: &ContainerLabels) -> u64 {
        self.series.get(labels).map_or(0, |s| s.oom_kills)
    }

    /// Writes `agent_exec_events_total`, `agent_mount_events_total`,
    /// `agent_process_exits_total` and `agent_oom_kills_total`.
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

        let mut family = encoder.encode_descriptor(
            "agent_process_exits",
            "Process exits (the last thread of a process) seen by the sched_process_exit hook, by outcome: ok (code 0), error (another code), signal",
            None,
            MetricType::Counter,
        )?;
        for (labels, s) in &sorted {
            if s.exits == [0; 3] {
                continue;
            }
            for outcome in ExitOutcome::ALL {
                let set = [
                    ("id", labels.id.as_str()),
                    ("name", labels.name.as_str()),
                    ("image", labels.image.as_str()),
                    ("outcome", outcome.as_str()),
                ];
                let mut metric = family.encode_family(&set)?;
                metric.encode_counter::<NoLabelSet, _, u64>(&s.exits[outcome as usize], None)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "agent_oom_kills",
            "Processes killed by the OOM killer, per container of the victim (the same count as memory.events oom_kill)",
            None,
            MetricType::Counter,
        )?;
        for (labels, s) in sorted.iter().filter(|(_, s)| s.oom_kills > 0) {
            let set = label_set(labels);
            let mut metric = family.encode_family(&set)?;
            metric.encode_counter::<NoLabelSet, _, u64>(&s.oom_kills, None)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::NoContainers;
    use crate::ebpf::events::{ExecInfo, MountInfo, ProcessInfo};
    use parking_lot::Mutex;
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;
    use std::sync::Arc;

    fn process(mnt_ns: u32) -> ProcessInfo {
        ProcessInfo {
            boot_ns: 0,
            pid: 7,
            tgid: 7,
            ppid: 1,
            ns_pid: 7,
            uid: 0,
            gid: 0,
            comm: "sh".into(),
            cgroup_id: 1,
            mnt_ns,
            pid_ns: 1,
            net_ns: 1,
            uts_ns: 1,
        }
    }

    fn exec(mnt_ns: u32) -> Event {
        Event::Exec(
            process(mnt_ns),
            ExecInfo {
                filename: "/bin/sh".into(),
                argv: vec!["sh".into()],
                argv_truncated: false,
            },
        )
    }

    fn mount(mnt_ns: u32, ret: i64) -> Event {
        Event::Mount(
            process(mnt_ns),
            MountInfo {
                operation: MountOp::Mount,
                source: None,
                target: Some("/mnt".into()),
                fstype: Some("tmpfs".into()),
                flags: 0,
                attr: 0,
                dfd: 0,
                dfd2: 0,
                ret,
            },
        )
    }

    #[derive(Debug)]
    struct C(Arc<Mutex<EventCounters>>);

    impl Collector for C {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            self.0.lock().encode(&mut encoder)
        }
    }

    fn text(c: &Arc<Mutex<EventCounters>>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(C(Arc::clone(c))));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn encodes_per_container_counters_with_bounded_labels() {
        let c = Arc::new(Mutex::new(EventCounters::default()));
        let web = ContainerLabels {
            id: "/docker/abc".into(),
            name: "web".into(),
            image: "nginx:1".into(),
        };
        let subject = Subject::Container {
            cgroup_path: "/docker/abc".into(),
        };
        {
            let mut g = c.lock();
            g.record(&web, &subject, &exec(10));
            g.record(&web, &subject, &exec(10));
            g.record(&web, &subject, &mount(10, 0));
            g.record(&web, &subject, &mount(10, -19));
            g.record(&ContainerLabels::host(), &Subject::Host, &exec(1));
            for status in [0, 0, 1 << 8, 9] {
                let x = crate::ebpf::events::ExitInfo {
                    start_boot_ns: 0,
                    status,
                };
                g.record(&web, &subject, &Event::Exit(process(10), x));
            }
        }
        let out = text(&c);
        assert!(out.contains("# TYPE agent_exec_events counter"), "{out}");
        assert!(
            out.contains(
                r#"agent_exec_events_total{id="/docker/abc",name="web",image="nginx:1"} 2"#
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"agent_exec_events_total{id="/",name="host",image=""} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"agent_mount_events_total{id="/docker/abc",name="web",image="nginx:1",operation="mount",result="ok"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"agent_mount_events_total{id="/docker/abc",name="web",image="nginx:1",operation="mount",result="error"} 1"#),
            "{out}"
        );
        for (outcome, n) in [("ok", 2), ("error", 1), ("signal", 1)] {
            let series = format!(
                r#"agent_process_exits_total{{id="/docker/abc",name="web",image="nginx:1",outcome="{outcome}"}} {n}"#
            );
            assert!(out.contains(&series), "{out}");
        }
        // The host had no exits: no series.
        assert!(
            !out.contains(r#"agent_process_exits_total{id="/""#),
            "{out}"
        );
    }

    #[test]
    fn series_of_vanished_subjects_go_after_the_grace_period() {
        let proc = tempfile::tempdir().unwrap();
        let attributor = Attributor::new(Arc::new(NoContainers), proc.path());
        let mut c = EventCounters::default();
        let gone = ContainerLabels::namespace(4026532999);
        c.record(&gone, &Subject::Namespace { pid: 4242 }, &exec(4026532999));
        c.record(&ContainerLabels::host(), &Subject::Host, &exec(1));
        let container = ContainerLabels {
            id: "/docker/old".into(),
            ..ContainerLabels::default()
        };
        let old = Subject::Container {
            cgroup_path: "/docker/old".into(),
        };
        c.record(&container, &old, &exec(4026533000));
        // Within the grace period everything stays.
        c.prune(Duration::from_secs(60), &attributor);
        assert_eq!(c.len(), 3);
        // After it, only the host (always alive) stays: the namespace's last
        // process is gone and no container owns /docker/old any more.
        c.prune(Duration::ZERO, &attributor);
        assert_eq!(c.len(), 1);
        assert_eq!(c.execs(&ContainerLabels::host()), 1);
        assert_eq!(c.execs(&gone), 0);
    }
}
