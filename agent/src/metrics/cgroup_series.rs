//! The per-container families of a scrape: each cgroup's label text, rendered
//! once, then every family of [`FAMILIES`] over every sample, and the info series.

use super::cgroup_families::{self, FAMILIES, Series};
use super::exposition::{Kind, Writer, container_label_names, push_label};
use super::{ExportOptions, LabelKeys};
use crate::cgroup::{IoOp, Runtime};
use crate::container::{Sample, Tracked};
use crate::machine::block_device_name;
use std::collections::HashMap;

/// A block device's label text, rendered once per device.
#[derive(Debug)]
pub(super) struct DeviceLabels {
    /// `device="/dev/vda"`
    device: String,
    /// `device="/dev/vda",major="254",minor="0"`
    numbers: String,
}

pub(super) fn device_labels(sys: &std::path::Path, major: u32, minor: u32) -> DeviceLabels {
    let name = block_device_name(sys, major, minor);
    let mut device = String::new();
    push_label(&mut device, "device", &name);
    let mut numbers = device.clone();
    push_label(&mut numbers, "major", &major.to_string());
    push_label(&mut numbers, "minor", &minor.to_string());
    DeviceLabels { device, numbers }
}

/// `id`, `name`, `image`, and for a Kubernetes pod's cgroups `container`,
/// `namespace` and `pod`: what every series and the info series of `t` start with.
fn push_identity(l: &mut String, t: &Tracked) {
    push_label(l, "id", &t.discovered.path);
    push_label(l, "name", &t.meta.name);
    push_label(l, "image", &t.meta.image);
    if let Some(k) = &t.meta.kube {
        push_label(l, "container", &k.container);
        push_label(l, "namespace", &k.namespace);
        push_label(l, "pod", &k.pod);
    }
}

/// The label text of every series of `t`: `id`, `name`, `image`, for a Kubernetes
/// pod's cgroups `container`, `namespace` and `pod` (as kubelet's
/// `/metrics/cadvisor` has them), then the chosen container labels and the
/// allow-listed environment variables. Label names are
/// made as on the info series, over all of the container's labels, so a key gets
/// the same `container_label_*` name in both places.
fn series_labels(t: &Tracked, keys: &LabelKeys) -> String {
    let mut l = String::with_capacity(t.discovered.path.len() + 48);
    push_identity(&mut l, t);
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

pub(super) fn write_cgroup_families(
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
        push_identity(&mut l, t);
        push_label(&mut l, "runtime", t.discovered.runtime.as_str());
        for (key, v) in container_label_names("container_label_", &t.meta.labels) {
            push_label(&mut l, &key, v);
        }
        w.sample(&name, &l, "", 1.0);
    }
}
