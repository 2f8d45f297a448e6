//! Families of the containers `agent launch` started, from their `state.json`: they
//! outlive the cgroup, which is removed when a container exits, so a stopped
//! container's exit code and OOM kill stay visible until `agent rm`.

use crate::runtime::state::{self, ContainerState};
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::collections::HashSet;
use std::path::PathBuf;

/// Reads `<state_dir>/containers/*/state.json` at scrape time.
#[derive(Debug)]
pub struct LaunchedCollector {
    state_dir: PathBuf,
    /// Files already reported as unreadable: warn once, not on every scrape.
    warned: Mutex<HashSet<String>>,
}

impl LaunchedCollector {
    pub fn new(state_dir: PathBuf) -> Self {
        LaunchedCollector {
            state_dir,
            warned: Mutex::new(HashSet::new()),
        }
    }
}

/// The labels of a launched container, the same as its cgroup series.
fn labels(c: &ContainerState) -> [(&'static str, String); 3] {
    [
        ("id", crate::cgroup::manager::agent_cgroup_path(&c.id)),
        ("name", c.name.clone()),
        ("image", c.image.clone()),
    ]
}

impl Collector for LaunchedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (containers, errors) = state::list_lenient(&self.state_dir);
        let mut warned = self.warned.lock();
        for e in &errors {
            if warned.insert(e.to_string()) {
                tracing::warn!(error = %e, "unreadable container state; skipped");
            }
        }
        drop(warned);
        type Value = fn(&ContainerState) -> Option<i64>;
        let families: [(&str, &str, Value); 3] = [
            (
                "agent_container_running",
                "1 while a launched container's process runs, else 0",
                |c| Some(c.is_running() as i64),
            ),
            (
                "agent_container_exit_code",
                "Exit code of a launched container that has exited (128+signal when killed)",
                |c| {
                    if c.is_running() {
                        None
                    } else {
                        c.exit_code.map(i64::from)
                    }
                },
            ),
            (
                "agent_container_oom_killed",
                "1 if the OOM killer ended a launched container, else 0",
                |c| (!c.is_running()).then_some(c.oom_killed as i64),
            ),
        ];
        for (name, help, value) in families {
            let mut me = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for c in &containers {
                if let Some(v) = value(c) {
                    let l = labels(c);
                    ConstGauge::new(v).encode(me.encode_family(&l)?)?;
                }
            }
        }
        // The restarts its supervisor made under `--restart` (0 without a policy).
        let mut me = encoder.encode_descriptor(
            "agent_container_restarts",
            "Times the restart policy of a launched container started it again",
            None,
            MetricType::Counter,
        )?;
        for c in &containers {
            let l = labels(c);
            ConstCounter::new(u64::from(c.restart_count)).encode(me.encode_family(&l)?)?;
        }
        Ok(())
    }
}
