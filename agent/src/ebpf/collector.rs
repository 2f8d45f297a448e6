//! The tracer's families in a scrape: which hooks are live, events lost and
//! received, and the per-container exec and mount counters.

use super::loader::{HOOKS, Tracer};
use super::metrics::{encode_counter_by, encode_gauge_by};
use prometheus_client::encoding::DescriptorEncoder;

impl Tracer {
    /// Writes `agent_ebpf_program_attached 0` for every hook: call at scrape
    /// time instead of [`Tracer::encode_metrics`] when the tracer could not
    /// start, so that "tracing is off" can be alerted on.
    pub fn encode_unavailable(encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let hooks: Vec<(&str, i64)> = HOOKS.iter().map(|h| (*h, 0)).collect();
        encode_attached(encoder, &hooks)
    }

    /// Writes every `agent_ebpf_*`, `agent_exec_events_total` and
    /// `agent_mount_events_total` family. Call from a prometheus-client
    /// `Collector::encode` at scrape time.
    pub fn encode_metrics(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let hooks: Vec<(&str, i64)> = self
            .shared
            .programs
            .iter()
            .map(|p| (p.hook, i64::from(p.attached)))
            .collect();
        encode_attached(encoder, &hooks)?;
        let (lost_exec, lost_mount) = self.lost();
        encode_counter_by(
            encoder,
            "agent_ebpf_events_lost",
            "Events dropped in the kernel because the ring buffer was full",
            "type",
            &[
                ("exec", lost_exec),
                ("mount", lost_mount),
                ("cgroup_mkdir", self.lost_cgroup_mkdir()),
                ("exit", self.lost_exits()),
                ("oom", self.lost_oom_kills()),
            ],
        )?;
        encode_counter_by(
            encoder,
            "agent_ebpf_events_received",
            "Records read from the ring buffer, and records that failed to decode",
            "outcome",
            &[
                (
                    "decoded",
                    self.received().saturating_sub(self.decode_errors()),
                ),
                ("invalid", self.decode_errors()),
            ],
        )?;
        self.shared.prune();
        self.shared.counters.lock().encode(encoder)
    }
}

/// `agent_ebpf_program_attached{program}`: 1 per live hook, 0 otherwise.
fn encode_attached(encoder: &mut DescriptorEncoder, hooks: &[(&str, i64)]) -> std::fmt::Result {
    encode_gauge_by(
        encoder,
        "agent_ebpf_program_attached",
        "1 when the eBPF program on this hook is attached",
        "program",
        hooks,
    )
}

/// Puts the tracer's families into a scrape: its counters when it runs, the
/// "nothing attached" families when it could not start.
#[derive(Debug, Clone)]
pub struct TracerCollector(pub Option<std::sync::Arc<Tracer>>);

impl prometheus_client::collector::Collector for TracerCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        match &self.0 {
            Some(t) => t.encode_metrics(&mut encoder),
            None => Tracer::encode_unavailable(&mut encoder),
        }
    }
}
