//! The Prometheus exposition: cgroup families named as cAdvisor names them, plus the
//! agent's own `agent_*` families. Everything is read at scrape time.

mod cgroup_families;
pub mod exposition;
mod launched;

pub use cgroup_families::{FAMILIES, Family};
pub use exposition::Format;
pub use launched::LaunchedCollector;

use crate::cgroup::{Runtime, ScrapeErrorKind};
use crate::container::{Sample, Tracker};
use exposition::{Kind, Writer, container_label_names, push_label};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Produces the whole exposition on each scrape: the per-container families from the
/// cgroup [`Tracker`], the agent's own families, then whatever other collectors
/// (eBPF) registered in `registry`.
#[derive(Debug)]
pub struct Exporter {
    tracker: Mutex<Tracker>,
    registry: Registry,
    cgroup_version: String,
    /// Duration of the previous scrape, as f64 bits.
    last_duration: AtomicU64,
    /// Size of the previous exposition, to allocate the next one in one go.
    last_size: AtomicUsize,
}

const RUNTIMES: [Runtime; 6] = [
    Runtime::Agent,
    Runtime::Docker,
    Runtime::Kubernetes,
    Runtime::Podman,
    Runtime::Systemd,
    Runtime::Other,
];

impl Exporter {
    /// An exporter over `tracker`; `registry` holds further collectors.
    pub fn new(tracker: Tracker, registry: Registry) -> Self {
        Exporter {
            cgroup_version: tracker.hierarchy().version().to_string(),
            tracker: Mutex::new(tracker),
            registry,
            last_duration: AtomicU64::new(0f64.to_bits()),
            last_size: AtomicUsize::new(64 * 1024),
        }
    }

    /// Runs a discovery scan now (at start-up, so the first scrape is complete).
    pub fn refresh(&self) {
        self.tracker.lock().refresh(true);
    }

    /// Runs a discovery scan if the rescan interval has passed.
    pub fn refresh_if_due(&self) {
        self.tracker.lock().refresh(false);
    }

    /// Reads every tracked cgroup and encodes the full exposition in `format`.
    /// Blocking: call it off the async runtime.
    pub fn scrape(&self, format: Format) -> String {
        let start = Instant::now();
        let mut out = String::with_capacity(self.last_size.load(Ordering::Relaxed));
        let mut w = Writer {
            out: &mut out,
            format,
        };
        {
            let mut tracker = self.tracker.lock();
            let samples = tracker.collect();
            write_cgroup_families(&mut w, &samples);
            drop(samples);
            self.write_self_families(&mut w, &tracker);
        }
        let previous = f64::from_bits(self.last_duration.load(Ordering::Relaxed));
        let name = w.header(
            "agent_scrape_duration",
            "Time the previous scrape took to read cgroups and encode them",
            Kind::Gauge,
            Some("seconds"),
        );
        w.sample(&name, "", "", previous);
        // Other collectors (eBPF). In OpenMetrics this also writes the final `# EOF`.
        let encoded = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        if encoded.is_err() {
            tracing::error!("encoding registered collectors failed; their families are incomplete");
            if format == Format::OpenMetrics && !out.ends_with("# EOF\n") {
                out.push_str("# EOF\n");
            }
        }
        self.last_size
            .store(out.len() + out.len() / 8, Ordering::Relaxed);
        self.last_duration
            .store(start.elapsed().as_secs_f64().to_bits(), Ordering::Relaxed);
        out
    }

    fn write_self_families(&self, w: &mut Writer<'_>, tracker: &Tracker) {
        let name = w.header(
            "agent_build",
            "Agent version and the cgroup layout it detected",
            Kind::Info,
            None,
        );
        let mut labels = String::new();
        push_label(&mut labels, "version", env!("CARGO_PKG_VERSION"));
        push_label(&mut labels, "cgroup_version", &self.cgroup_version);
        w.sample(&name, &labels, "", 1.0);

        let counts = tracker.counts();
        let name = w.header(
            "agent_tracked_cgroups",
            "Cgroups the agent currently reads, by the runtime that created them",
            Kind::Gauge,
            None,
        );
        for runtime in RUNTIMES {
            let n = counts.get(&runtime).copied().unwrap_or(0);
            let mut l = String::new();
            push_label(&mut l, "runtime", runtime.as_str());
            w.sample(&name, &l, "", n as f64);
        }

        let name = w.header(
            "agent_cgroups_read_by_path",
            "Tracked cgroups whose files are opened at each scrape because the descriptor budget is spent (0 while every reader keeps its files open)",
            Kind::Gauge,
            None,
        );
        w.sample(&name, "", "", tracker.read_by_path() as f64);

        let name = w.header(
            "agent_scrape_errors",
            "Errors while reading cgroups, by kind (vanished cgroups are skipped, not failed)",
            Kind::Counter,
            None,
        );
        for kind in ScrapeErrorKind::ALL {
            let n = tracker.errors.get(&kind).copied().unwrap_or(0);
            let mut l = String::new();
            push_label(&mut l, "kind", kind.as_str());
            w.sample(&name, &l, "", n as f64);
        }
    }
}

fn write_cgroup_families(w: &mut Writer<'_>, samples: &[Sample<'_>]) {
    // Each cgroup's label text, escaped once for all of its ~30 series.
    let labels: Vec<String> = samples
        .iter()
        .map(|s| {
            let t = s.tracked;
            let mut l = String::with_capacity(t.discovered.path.len() + 48);
            push_label(&mut l, "id", &t.discovered.path);
            push_label(&mut l, "name", &t.meta.name);
            push_label(&mut l, "image", &t.meta.image);
            l
        })
        .collect();
    for (index, family) in FAMILIES.iter().enumerate() {
        let name = w.header(family.name, family.help, family.kind, family.unit.suffix());
        // Only container_cpu_usage_seconds_total carries cpu="total", as in cAdvisor.
        let extra = if index == 0 { "cpu=\"total\"" } else { "" };
        for (s, l) in samples.iter().zip(&labels) {
            if let Some(v) = (family.value)(&s.stats) {
                w.sample(&name, l, extra, v);
            }
        }
    }

    let name = w.header(
        "agent_container",
        "One series per tracked container carrying its runtime and its labels",
        Kind::Info,
        None,
    );
    for s in samples {
        let t = s.tracked;
        let mut l = String::new();
        push_label(&mut l, "id", &t.discovered.path);
        push_label(&mut l, "name", &t.meta.name);
        push_label(&mut l, "image", &t.meta.image);
        push_label(&mut l, "runtime", t.discovered.runtime.as_str());
        for (key, v) in container_label_names("container_label_", &t.meta.labels) {
            push_label(&mut l, &key, v);
        }
        w.sample(&name, &l, "", 1.0);
    }
}
