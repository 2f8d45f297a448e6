//! The exposition over real cgroup files and fixture containers.

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
            Series::PerDeviceOperation => want.extend(["device", "major", "minor", "operation"]),
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
