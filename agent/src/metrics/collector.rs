//! Scrape-time encoding of the cgroup families and the agent's own families.

use super::cgroup_families::FAMILIES;
use crate::cgroup::{Runtime, Sample, Tracker};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Which text format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0` (Prometheus asks for this first).
    OpenMetrics,
    /// The classic `text/plain; version=0.0.4` (curl, promtool, older scrapers).
    Text,
}

impl Format {
    /// Picks the format from an `Accept` header.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Encodes a registry in `format`; `size_hint` pre-sizes the buffer.
pub fn encode(registry: &Registry, format: Format, size_hint: usize) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(size_hint);
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry)?,
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?,
    }
    Ok(out)
}

/// Reads every tracked cgroup at scrape time and encodes the cgroup families plus
/// `agent_build_info`, `agent_scrape_duration_seconds`, `agent_scrape_errors_total`
/// and `agent_tracked_cgroups`.
#[derive(Debug)]
pub struct CgroupCollector {
    tracker: Mutex<Tracker>,
    /// Duration of the previous collection, as f64 bits.
    last_duration: AtomicU64,
    cgroup_version: String,
}

impl CgroupCollector {
    pub fn new(tracker: Tracker) -> Self {
        CgroupCollector {
            cgroup_version: tracker.hierarchy().version().to_string(),
            tracker: Mutex::new(tracker),
            last_duration: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Runs a discovery scan now (at start-up, so the first scrape is complete).
    pub fn refresh(&self) {
        self.lock().refresh(true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        // A panic while holding the lock cannot leave the tracker inconsistent in a
        // way that matters for reading files; keep serving.
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

const ERROR_KINDS: [&str; 4] = ["discovery", "parse", "read", "vanished"];
const RUNTIMES: [Runtime; 6] = [
    Runtime::Agent,
    Runtime::Docker,
    Runtime::Kubernetes,
    Runtime::Podman,
    Runtime::Systemd,
    Runtime::Other,
];

impl Collector for CgroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let start = Instant::now();
        let mut tracker = self.lock();
        let samples = tracker.collect();
        encode_cgroup_families(&samples, &mut encoder)?;
        drop(samples);

        let build = Info::new([
            ("version", env!("CARGO_PKG_VERSION")),
            ("cgroup_version", self.cgroup_version.as_str()),
        ]);
        build.encode(encoder.encode_descriptor(
            "agent_build",
            "Agent version and the cgroup layout it detected",
            None,
            MetricType::Info,
        )?)?;

        let counts = tracker.counts();
        let mut me = encoder.encode_descriptor(
            "agent_tracked_cgroups",
            "Cgroups the agent currently reads, by the runtime that created them",
            None,
            MetricType::Gauge,
        )?;
        for runtime in RUNTIMES {
            let n = counts.get(&runtime).copied().unwrap_or(0) as i64;
            ConstGauge::new(n).encode(me.encode_family(&[("runtime", runtime.as_str())])?)?;
        }

        let mut me = encoder.encode_descriptor(
            "agent_scrape_errors",
            "Errors while reading cgroups, by kind (vanished cgroups are skipped, not failed)",
            None,
            MetricType::Counter,
        )?;
        for kind in ERROR_KINDS {
            let n = tracker.errors.get(kind).copied().unwrap_or(0);
            ConstCounter::new(n).encode(me.encode_family(&[("kind", kind)])?)?;
        }
        drop(tracker);

        let previous = f64::from_bits(self.last_duration.load(Ordering::Relaxed));
        ConstGauge::new(previous).encode(encoder.encode_descriptor(
            "agent_scrape_duration",
            "Time the previous scrape spent reading cgroups and encoding them",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?)?;
        self.last_duration
            .store(start.elapsed().as_secs_f64().to_bits(), Ordering::Relaxed);
        Ok(())
    }
}

/// Label keys of container labels on the info series: `container_label_<sanitized>`.
fn label_key(key: &str) -> String {
    let mut out = String::with_capacity(16 + key.len());
    out.push_str("container_label_");
    out.extend(
        key.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    out
}

fn encode_cgroup_families(
    samples: &[Sample<'_>],
    encoder: &mut DescriptorEncoder,
) -> Result<(), fmt::Error> {
    for (index, family) in FAMILIES.iter().enumerate() {
        let unit = family.unit.unit();
        let mut me =
            encoder.encode_descriptor(family.name, family.help, unit.as_ref(), family.kind)?;
        for s in samples {
            let Some(v) = (family.value)(&s.stats) else {
                continue;
            };
            let t = s.tracked;
            let id = t.discovered.path.as_str();
            let (name, image) = (t.meta.name.as_str(), t.meta.image.as_str());
            // Only container_cpu_usage_seconds_total carries cpu="total", as in cAdvisor.
            if index == 0 {
                let labels = [
                    ("id", id),
                    ("name", name),
                    ("image", image),
                    ("cpu", "total"),
                ];
                ConstCounter::new(v).encode(me.encode_family(&labels)?)?;
                continue;
            }
            let labels = [("id", id), ("name", name), ("image", image)];
            let fe = me.encode_family(&labels)?;
            match family.kind {
                MetricType::Counter => ConstCounter::new(v).encode(fe)?,
                _ => ConstGauge::new(v).encode(fe)?,
            }
        }
    }

    let mut me = encoder.encode_descriptor(
        "agent_container",
        "One series per tracked container carrying its runtime labels",
        None,
        MetricType::Info,
    )?;
    for s in samples {
        let t = s.tracked;
        let mut labels: Vec<(String, String)> = vec![
            ("id".into(), t.discovered.path.clone()),
            ("name".into(), t.meta.name.clone()),
            ("image".into(), t.meta.image.clone()),
            ("runtime".into(), t.discovered.runtime.as_str().into()),
        ];
        labels.extend(t.meta.labels.iter().map(|(k, v)| (label_key(k), v.clone())));
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|a, b| a.0 == b.0);
        me.encode_info(&labels)?;
    }
    Ok(())
}
