//! The Prometheus exposition: cgroup families named as cAdvisor names them, the
//! machine's `machine_*` families, plus the agent's own `agent_*` families.
//! Everything is read at scrape time, except the machine facts (read at start).

mod cgroup_families;
pub mod exposition;
mod launched;

pub use cgroup_families::{FAMILIES, Family, Series};
pub use exposition::Format;
pub use launched::LaunchedCollector;

use crate::cgroup::{IoOp, MetricGroups, Runtime, ScrapeErrorKind};
use crate::container::{Sample, Tracked, Tracker};
use crate::machine::{MachineFacts, block_device_name};
use exposition::{Kind, Writer, container_label_names, push_label};
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

/// A block device's label text, rendered once per device.
#[derive(Debug)]
struct DeviceLabels {
    /// `device="/dev/vda"`
    device: String,
    /// `device="/dev/vda",major="254",minor="0"`
    numbers: String,
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

fn device_labels(sys: &std::path::Path, major: u32, minor: u32) -> DeviceLabels {
    let name = block_device_name(sys, major, minor);
    let mut device = String::new();
    push_label(&mut device, "device", &name);
    let mut numbers = device.clone();
    push_label(&mut numbers, "major", &major.to_string());
    push_label(&mut numbers, "minor", &minor.to_string());
    DeviceLabels { device, numbers }
}

/// The label text of every series of `t`: `id`, `name`, `image`, for a Kubernetes
/// pod's cgroups `container`, `namespace` and `pod` (as kubelet's
/// `/metrics/cadvisor` has them), then the chosen container labels and the
/// allow-listed environment variables. Label names are
/// made as on the info series, over all of the container's labels, so a key gets
/// the same `container_label_*` name in both places.
fn series_labels(t: &Tracked, keys: &LabelKeys) -> String {
    let mut l = String::with_capacity(t.discovered.path.len() + 48);
    push_label(&mut l, "id", &t.discovered.path);
    push_label(&mut l, "name", &t.meta.name);
    push_label(&mut l, "image", &t.meta.image);
    if let Some(k) = &t.meta.kube {
        push_label(&mut l, "container", &k.container);
        push_label(&mut l, "namespace", &k.namespace);
        push_label(&mut l, "pod", &k.pod);
    }
    if *keys != LabelKeys::None {
        let labels = t.meta.labels.iter().map(|(k, v)| (k, (k, v)));
        for (name, (key, value)) in container_label_names("container_label_", labels) {
            if keys.wants(key) {
                push_label(&mut l, &name, value);
            }
        }
    }
    for (name, value) in container_label_names("container_env_", &t.meta.env) {
        push_label(&mut l, &name, value);
    }
    l
}

/// The `operation` label of `container_blkio_device_usage_total`.
fn operation_label(op: IoOp) -> &'static str {
    match op {
        IoOp::Read => "operation=\"Read\"",
        IoOp::Write => "operation=\"Write\"",
        IoOp::Sync => "operation=\"Sync\"",
        IoOp::Async => "operation=\"Async\"",
        IoOp::Discard => "operation=\"Discard\"",
        IoOp::Total => "operation=\"Total\"",
    }
}

fn write_cgroup_families(
    w: &mut Writer<'_>,
    samples: &[Sample<'_>],
    options: &ExportOptions,
    devices: &HashMap<(u32, u32), DeviceLabels>,
) {
    // Each cgroup's label text, rendered once per metadata lookup for all of its
    // series.
    let labels: Vec<&str> = samples
        .iter()
        .map(|s| {
            s.tracked
                .series_labels(|t| series_labels(t, &options.container_labels))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs() as f64);
    let device = |d: &crate::cgroup::DeviceIo| devices.get(&(d.major, d.minor));
    // The `interface` and `device` label text of each cgroup's interfaces and
    // layer, rendered once for all their families.
    let interfaces: Vec<Vec<String>> = samples
        .iter()
        .map(|s| {
            s.network
                .iter()
                .map(|i| {
                    let mut l = String::new();
                    push_label(&mut l, "interface", &i.name);
                    l
                })
                .collect()
        })
        .collect();
    let layer_devices: Vec<Option<String>> = samples
        .iter()
        .map(|s| {
            s.layer.as_ref().map(|layer| {
                let mut l = String::new();
                push_label(&mut l, "device", &layer.device);
                l
            })
        })
        .collect();
    for family in FAMILIES {
        if family.group.is_some_and(|g| !options.groups.has(g)) {
            continue;
        }
        let name = w.header(family.name, family.help, family.kind, family.unit.suffix());
        for (i, (s, l)) in samples.iter().zip(&labels).enumerate() {
            match family.series {
                Series::One { value, extra } => {
                    if let Some(v) = value(&s.stats) {
                        w.sample(&name, l, extra, v);
                    }
                }
                Series::PerDevice(value) => {
                    for d in &s.stats.io {
                        if let (Some(v), Some(dev)) = (value(d), device(d)) {
                            w.sample(&name, l, &dev.device, v as f64);
                        }
                    }
                }
                Series::PerDeviceOperation => {
                    for d in &s.stats.io {
                        let Some(dev) = device(d) else { continue };
                        for op in IoOp::ALL {
                            if let Some(v) = d.bytes(op) {
                                w.sample_parts(
                                    &name,
                                    &[l, &dev.numbers, operation_label(op)],
                                    v as f64,
                                );
                            }
                        }
                    }
                }
                Series::MemoryFailures => {
                    for (extra, v) in cgroup_families::memory_failures(&s.stats) {
                        if let Some(v) = v {
                            w.sample(&name, l, extra, v);
                        }
                    }
                }
                Series::LastSeen => w.sample(&name, l, "", now),
                Series::PerInterface(value) => {
                    for (iface, extra) in s.network.iter().zip(&interfaces[i]) {
                        w.sample(&name, l, extra, value(iface) as f64);
                    }
                }
                Series::Layer(value) => {
                    if let (Some(layer), Some(extra)) = (&s.layer, &layer_devices[i]) {
                        w.sample(&name, l, extra, value(layer) as f64);
                    }
                }
            }
        }
    }

    let name = w.header(
        "agent_container",
        "One series per tracked container carrying its runtime and its labels",
        Kind::Info,
        None,
    );
    for s in samples
        .iter()
        .filter(|s| s.tracked.discovered.runtime != Runtime::Root)
    {
        let t = s.tracked;
        let mut l = String::new();
        push_label(&mut l, "id", &t.discovered.path);
        push_label(&mut l, "name", &t.meta.name);
        push_label(&mut l, "image", &t.meta.image);
        if let Some(k) = &t.meta.kube {
            push_label(&mut l, "container", &k.container);
            push_label(&mut l, "namespace", &k.namespace);
            push_label(&mut l, "pod", &k.pod);
        }
        push_label(&mut l, "runtime", t.discovered.runtime.as_str());
        for (key, v) in container_label_names("container_label_", &t.meta.labels) {
            push_label(&mut l, &key, v);
        }
        w.sample(&name, &l, "", 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{Filter, Hierarchy, MetricGroup};
    use crate::container::MetadataSource;
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    const ID: &str = "a2c13bad3808eb2673f71b881f61ad18d6a24e509cdf4e1c48975bd036f41f6a";

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
    }

    /// A hybrid v1 tree whose Docker container `/docker/<ID>` holds the captured
    /// files of fx1 (and the direct-I/O capture's blkio files), with a Docker
    /// config naming it and giving it labels and an environment.
    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let v1 = fixtures().join("cgroup-v1-hybrid-6.18");
        for c in ["memory", "cpu", "cpuacct", "pids", "blkio"] {
            let to = t.path().join("cgroup").join(c).join("docker").join(ID);
            fs::create_dir_all(&to).unwrap();
            fs::write(t.path().join("cgroup").join(c).join("cgroup.procs"), "").unwrap();
            let from = if c == "blkio" {
                v1.join("io")
            } else {
                v1.join("fx1")
            };
            for e in fs::read_dir(from.join(c)).unwrap() {
                let e = e.unwrap();
                fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
        let config = t.path().join("docker/containers").join(ID);
        fs::create_dir_all(&config).unwrap();
        fs::write(
            config.join("config.v2.json"),
            r#"{"Name":"/web","Config":{"Image":"nginx:1.25",
                "Labels":{"tier":"front","a.b":"dot","a-b":"dash"},
                "Env":["TIER=front","SECRET=hunter2"]}}"#,
        )
        .unwrap();
        t
    }

    fn scrape(t: &Path, options: ExportOptions, env_keys: &[&str]) -> String {
        let tracker = Tracker::new(
            Hierarchy::detect(t.join("cgroup")).unwrap(),
            Filter::default(),
            MetadataSource {
                env_keys: env_keys.iter().map(|k| k.to_string()).collect(),
                ..MetadataSource::new(t.join("docker"), t.join("state"))
            },
            Duration::ZERO,
        )
        .with_groups(options.groups);
        let exporter = Exporter::new(tracker, Registry::default(), options);
        exporter.refresh();
        exporter.scrape(Format::Text)
    }

    fn options(groups: MetricGroups, labels: LabelKeys) -> ExportOptions {
        let machine = fixtures().join("machine-6.18");
        ExportOptions {
            groups,
            container_labels: labels,
            machine: MachineFacts::read(&machine),
            sys_root: machine.join("sys"),
        }
    }

    /// (name, labels) of every sample line.
    fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, rest) = l
                    .split_once('{')
                    .unwrap_or((l.split(' ').next().unwrap(), "}"));
                let mut labels = BTreeMap::new();
                let mut rest = rest;
                while let Some((key, after)) = rest.split_once("=\"") {
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next().unwrap() {
                            (_, '\\') => value.push(chars.next().unwrap().1),
                            (i, '"') => break i,
                            (_, c) => value.push(c),
                        }
                    };
                    labels.insert(key.trim_start_matches(',').to_string(), value);
                    rest = &after[end + 1..];
                }
                (name.to_string(), labels)
            })
            .collect()
    }

    fn keys(labels: &BTreeMap<String, String>) -> Vec<&str> {
        labels.keys().map(String::as_str).collect()
    }

    #[test]
    fn every_family_has_exactly_its_labels() {
        let t = tree();
        let text = scrape(t.path(), options(MetricGroups::ALL, LabelKeys::None), &[]);
        let id = format!("/docker/{ID}");
        let mut seen = BTreeSet::new();
        for (name, labels) in samples(&text) {
            if name.starts_with("machine_") {
                assert_eq!(keys(&labels), ["boot_id", "machine_id", "system_uuid"]);
                continue;
            }
            if !name.starts_with("container_") {
                continue;
            }
            let mut want = vec!["id", "image", "name"];
            // What the family table says the family adds (tests/e2e_prometheus.rs
            // checks the same against cAdvisor's label sets).
            let family = FAMILIES
                .iter()
                .find(|f| f.sample_name() == name)
                .unwrap_or_else(|| panic!("{name} is in no family"));
            match family.series {
                Series::One { extra, .. } => want.extend(extra.split_once('=').map(|(k, _)| k)),
                Series::PerDevice(_) => want.push("device"),
                Series::PerDeviceOperation => {
                    want.extend(["device", "major", "minor", "operation"])
                }
                Series::MemoryFailures => want.extend(["failure_type", "scope"]),
                Series::LastSeen => {}
                Series::PerInterface(_) => want.push("interface"),
                Series::Layer(_) => want.push("device"),
            }
            want.sort();
            assert_eq!(keys(&labels), want, "{name} {labels:?}");
            if labels.get("id") == Some(&id) {
                seen.insert(name.clone());
                assert_eq!(labels["name"], "web");
                assert_eq!(labels["image"], "nginx:1.25");
                if let Some(device) = labels.get("device") {
                    assert_eq!(device, "/dev/vda", "named from sysfs");
                }
            }
        }
        for family in [
            "container_fs_reads_bytes_total",
            "container_fs_reads_total",
            "container_fs_writes_bytes_total",
            "container_fs_writes_total",
            "container_blkio_device_usage_total",
            "container_last_seen",
            "container_spec_memory_reservation_limit_bytes",
            "container_spec_memory_swap_limit_bytes",
            "container_memory_failures_total",
        ] {
            assert!(seen.contains(family), "{family} missing for {id}:\n{text}");
        }
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix) && l.contains(&id))
                .unwrap_or_else(|| panic!("no {prefix}"))
                .to_string()
        };
        assert!(line("container_fs_writes_bytes_total").ends_with(" 8388608"));
        assert!(
            line("container_blkio_device_usage_total{")
                .contains(r#"device="/dev/vda",major="254",minor="0",operation="Read""#)
        );
        assert!(text.contains("container_memory_failures_total{id=\"/docker/"));
        assert!(text.contains(r#"failure_type="pgmajfault",scope="hierarchy"} 1"#));
        // The machine, from the captured files.
        assert!(
            text.lines()
                .any(|l| l.starts_with("machine_cpu_cores{") && l.ends_with(" 2"))
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("machine_memory_bytes{") && l.ends_with(" 25276059648"))
        );
        // The root cgroup: id "/", no name, not an info series.
        assert!(
            text.contains(r#"container_last_seen{id="/",name="",image=""}"#),
            "{text}"
        );
        assert!(!text.contains(r#"agent_container_info{id="/""#));
        assert!(text.contains(r#"agent_tracked_cgroups{runtime="root"} 1"#));
    }

    #[test]
    fn chosen_labels_and_environment_go_on_every_container_series() {
        let t = tree();
        let only = LabelKeys::from_keys(&["tier".into(), "a.b".into()]);
        let text = scrape(t.path(), options(MetricGroups::ALL, only), &["TIER"]);
        let id = format!("/docker/{ID}");
        let ours: Vec<_> = samples(&text)
            .into_iter()
            .filter(|(n, l)| n.starts_with("container_") && l.get("id") == Some(&id))
            .collect();
        assert!(ours.len() > 30);
        for (name, labels) in &ours {
            assert_eq!(
                labels.get("container_label_tier").map(String::as_str),
                Some("front"),
                "{name}"
            );
            // `a-b` sorts first and takes the plain name, as on the info series.
            assert_eq!(
                labels.get("container_label_a_b_2").map(String::as_str),
                Some("dot")
            );
            assert!(
                !labels.contains_key("container_label_a_b"),
                "a-b was not chosen"
            );
            assert_eq!(
                labels.get("container_env_TIER").map(String::as_str),
                Some("front")
            );
        }
        assert!(!text.contains("hunter2"), "only allow-listed variables");
        let info = samples(&text)
            .into_iter()
            .find(|(n, l)| n == "agent_container_info" && l.get("id") == Some(&id))
            .unwrap();
        assert_eq!(info.1["container_label_a_b_2"], "dot");
        assert_eq!(info.1["container_label_a_b"], "dash");

        let all = scrape(t.path(), options(MetricGroups::ALL, LabelKeys::All), &[]);
        let (_, labels) = samples(&all)
            .into_iter()
            .find(|(n, l)| n == "container_memory_rss" && l.get("id") == Some(&id))
            .unwrap();
        assert_eq!(
            keys(&labels),
            [
                "container_label_a_b",
                "container_label_a_b_2",
                "container_label_tier",
                "id",
                "image",
                "name"
            ]
        );
        // By default, no container label and no environment on any series.
        let plain = scrape(t.path(), options(MetricGroups::ALL, LabelKeys::None), &[]);
        assert!(
            plain
                .lines()
                .filter(|l| l.contains("container_label_"))
                .all(|l| l.starts_with("agent_container_info")),
            "labels only on the info series"
        );
        assert!(!plain.contains("container_env_"));
    }

    #[test]
    fn disabled_groups_leave_their_families_out() {
        let t = tree();
        let all = scrape(t.path(), options(MetricGroups::ALL, LabelKeys::None), &[]);
        let no_disk = scrape(
            t.path(),
            options(MetricGroups::without(&[MetricGroup::Disk]), LabelKeys::None),
            &[],
        );
        for family in [
            "container_fs_reads",
            "container_fs_writes",
            "container_blkio_",
        ] {
            assert!(all.contains(family));
            assert!(!no_disk.contains(family), "{family} with disk off");
        }
        assert!(no_disk.contains("container_memory_rss{"));
        let nothing = scrape(
            t.path(),
            options(MetricGroups::without(&MetricGroup::ALL), LabelKeys::None),
            &[],
        );
        let families: BTreeSet<String> = samples(&nothing)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with("container_"))
            .collect();
        let always: BTreeSet<String> = ["container_last_seen", "container_start_time_seconds"]
            .map(String::from)
            .into();
        assert_eq!(families, always);
    }
}
