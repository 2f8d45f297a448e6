//! The Prometheus exposition: cgroup families named as cAdvisor names them, the
//! machine's `machine_*` families, plus the agent's own `agent_*` families.
//! Everything is read at scrape time, except the machine facts (read at start).

mod cgroup_families;
mod cgroup_series;
pub mod exposition;
mod launched;
#[cfg(test)]
mod tests;

pub use cgroup_families::{FAMILIES, Family, Series};
pub use exposition::Format;
pub use launched::LaunchedCollector;

use crate::cgroup::{MetricGroups, Runtime, ScrapeErrorKind};
use crate::container::{Sample, Tracker};
use crate::machine::MachineFacts;
use cgroup_series::{DeviceLabels, device_labels, write_cgroup_families};
use exposition::{Kind, Writer, push_label};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Which container labels are copied onto every container series as
/// `container_label_<key>` (`agent serve --container-labels`), as cAdvisor's
/// `--whitelisted_container_labels` does. The info series carries them all anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LabelKeys {
    /// None: the default.
    #[default]
    None,
    /// Every label of each container.
    All,
    /// These keys (a container without one of them just lacks that label).
    Only(BTreeSet<String>),
}

impl LabelKeys {
    /// From the flag's values: `all` (anywhere in the list) or keys; none given, none.
    pub fn from_keys(keys: &[String]) -> Self {
        if keys.iter().any(|k| k == "all") {
            LabelKeys::All
        } else if keys.is_empty() {
            LabelKeys::None
        } else {
            LabelKeys::Only(keys.iter().cloned().collect())
        }
    }

    fn wants(&self, key: &str) -> bool {
        match self {
            LabelKeys::None => false,
            LabelKeys::All => true,
            LabelKeys::Only(keys) => keys.contains(key),
        }
    }
}

/// How the exposition is shaped: the `agent serve` flags that bear on it.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The metric groups exported (`--disable-metrics` takes some away).
    pub groups: MetricGroups,
    /// Container labels copied onto every container series.
    pub container_labels: LabelKeys,
    /// The machine's CPU, memory and identity, read once at start.
    pub machine: MachineFacts,
    /// Where sysfs is mounted, to name block devices.
    pub sys_root: PathBuf,
}

impl ExportOptions {
    /// Every group, no extra labels, this machine's facts from `/`.
    pub fn host() -> Self {
        ExportOptions {
            groups: MetricGroups::ALL,
            container_labels: LabelKeys::None,
            machine: MachineFacts::read(std::path::Path::new("/")),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

/// Produces the whole exposition on each scrape: the per-container families from the
/// cgroup [`Tracker`], the agent's own families, then whatever other collectors
/// (eBPF) registered in `registry`.
#[derive(Debug)]
pub struct Exporter {
    tracker: Mutex<Tracker>,
    registry: Registry,
    options: ExportOptions,
    /// `boot_id`, `machine_id` and `system_uuid` of the `machine_*` series.
    machine_labels: String,
    /// Block device label text by device number, resolved once per device.
    devices: Mutex<HashMap<(u32, u32), DeviceLabels>>,
    cgroup_version: String,
    /// Duration of the previous scrape, as f64 bits.
    last_duration: AtomicU64,
    /// Size of the previous exposition, to allocate the next one in one go.
    last_size: AtomicUsize,
    /// Gets every complete reading (the web UI's history), if set.
    sink: Option<std::sync::Arc<dyn ReadingSink>>,
}

/// Wants every complete reading of the tracked cgroups, as a scrape makes it (the
/// web UI's history): called under the tracker's lock, so it must be quick.
pub trait ReadingSink: Send + Sync + std::fmt::Debug {
    fn record(&self, samples: &[Sample<'_>]);
}

const RUNTIMES: [Runtime; 8] = [
    Runtime::Agent,
    Runtime::Docker,
    Runtime::Kubernetes,
    Runtime::Containerd,
    Runtime::Podman,
    Runtime::Systemd,
    Runtime::Other,
    Runtime::Root,
];

impl Exporter {
    /// An exporter over `tracker`, shaped by `options`; `registry` holds further
    /// collectors.
    pub fn new(tracker: Tracker, registry: Registry, options: ExportOptions) -> Self {
        let mut machine_labels = String::new();
        push_label(&mut machine_labels, "boot_id", &options.machine.boot_id);
        push_label(
            &mut machine_labels,
            "machine_id",
            &options.machine.machine_id,
        );
        push_label(
            &mut machine_labels,
            "system_uuid",
            &options.machine.system_uuid,
        );
        Exporter {
            cgroup_version: tracker.hierarchy().version().to_string(),
            tracker: Mutex::new(tracker),
            registry,
            options,
            machine_labels,
            devices: Mutex::new(HashMap::new()),
            last_duration: AtomicU64::new(0f64.to_bits()),
            last_size: AtomicUsize::new(64 * 1024),
            sink: None,
        }
    }

    /// Hands every reading, the scrapes' and [`Exporter::read_for_sink`]'s, to `sink`.
    pub fn with_sink(mut self, sink: std::sync::Arc<dyn ReadingSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Reads every tracked cgroup for the sink alone, encoding nothing (for when no
    /// scrape came recently). Blocking: call it off the async runtime.
    pub fn read_for_sink(&self) {
        let Some(sink) = &self.sink else { return };
        let mut tracker = self.tracker.lock();
        sink.record(&tracker.collect_cgroup_files());
    }

    /// Runs a discovery scan now (at start-up, so the first scrape is complete).
    pub fn refresh(&self) {
        self.tracker.lock().refresh(true);
    }

    /// Whether [`Exporter::refresh_if_due`] has anything to do (false while a
    /// scrape holds the tracker: it refreshes first anyway).
    pub fn refresh_wanted(&self) -> bool {
        self.tracker.try_lock().is_some_and(|t| t.refresh_wanted())
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
        self.write_machine_families(&mut w);
        {
            let mut tracker = self.tracker.lock();
            let samples = tracker.collect();
            if let Some(sink) = &self.sink {
                sink.record(&samples);
            }
            let mut devices = self.devices.lock();
            for d in samples.iter().flat_map(|s| &s.stats.io) {
                devices
                    .entry((d.major, d.minor))
                    .or_insert_with(|| device_labels(&self.options.sys_root, d.major, d.minor));
            }
            write_cgroup_families(&mut w, &samples, &self.options, &devices);
            drop(devices);
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

    /// cAdvisor's machine families, with its labels (`boot_id`, `machine_id`,
    /// `system_uuid`).
    fn write_machine_families(&self, w: &mut Writer<'_>) {
        let m = &self.options.machine;
        let families = [
            (
                "machine_cpu_cores",
                "Number of logical CPU cores",
                None,
                m.cpu_cores,
            ),
            (
                "machine_cpu_physical_cores",
                "Number of physical CPU cores",
                None,
                m.cpu_physical_cores,
            ),
            (
                "machine_cpu_sockets",
                "Number of CPU sockets",
                None,
                m.cpu_sockets,
            ),
            (
                "machine_memory",
                "Amount of memory installed on the machine",
                Some("bytes"),
                m.memory_bytes,
            ),
        ];
        for (name, help, unit, value) in families {
            let Some(v) = value else { continue };
            let name = w.header(name, help, Kind::Gauge, unit);
            w.sample(&name, &self.machine_labels, "", v as f64);
        }
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
