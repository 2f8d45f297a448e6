//! Privileged: a real Docker daemon (Debian's docker.io, started by the test on a
//! private socket and data root) runs a real container; `agent serve` must find its
//! cgroup and label it with the name, image and labels from Docker's own files.
//!
//! The test's dockerd runs in a network namespace of its own: its bridge, its
//! iptables rules and its cleanup of them never touch the host's network, or a
//! Docker that already runs on the machine (its `docker0` among them).

use agent_test_support as common;

use common::docker::Dockerd;
use common::{AgentProcess, http_get, require_root, sample};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn docker_containers_are_found_and_named() {
    if !require_root("docker_containers_are_found_and_named") {
        return;
    }
    if common::host_hierarchy().is_v2() {
        // dockerd here uses cgroupfs paths; on v2 hosts the same code path is covered
        // by the systemd-driver classification unit tests.
        eprintln!("SKIPPED docker_containers_are_found_and_named: written for the v1 host layout");
        return;
    }
    // A Docker already running on the host has its docker0 bridge; stand one in
    // when there is none, so the test shows the test's dockerd leaves it alone.
    let _docker0 = HostBridge::ensure("docker0");
    let host_links_before = host_network_links();
    let Some(dockerd) = Dockerd::start() else {
        return;
    };
    assert_eq!(
        host_network_links(),
        host_links_before,
        "the test's dockerd changed the host's network interfaces"
    );
    dockerd.import_busybox("agent-test/busybox:1");
    let name = format!("agent-test-{}", std::process::id());
    let (ok, id) = dockerd.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--memory",
        "64m",
        "--label",
        "tier=web",
        "--label",
        "com.example/owner=a\"b",
        "agent-test/busybox:1",
        "sleep",
        "300",
    ]);
    assert!(ok, "docker run failed");
    assert_eq!(id.len(), 64, "container id {id:?}");

    let data_root = dockerd.data_root();
    let agent = AgentProcess::start(&["--docker-root", data_root.to_str().unwrap()]);
    let cgroup = format!("/docker/{id}");
    let (_, body) = http_get(&agent.addr, "/metrics", &[]).unwrap();
    let m = String::from_utf8(body).unwrap();
    let line = m
        .lines()
        .find(|l| l.starts_with("container_memory_usage_bytes{") && l.contains(&cgroup))
        .unwrap_or_else(|| panic!("no series for {cgroup}"));
    assert!(
        line.contains(&format!("name=\"{name}\""))
            && line.contains("image=\"agent-test/busybox:1\""),
        "{line}"
    );
    assert_eq!(
        sample(&m, "container_spec_memory_limit_bytes", &cgroup),
        Some(64.0 * 1024.0 * 1024.0)
    );
    assert_eq!(sample(&m, "container_processes", &cgroup), Some(1.0));
    let info = m
        .lines()
        .find(|l| l.starts_with("agent_container_info{") && l.contains(&cgroup))
        .expect("info series");
    assert!(info.contains("runtime=\"docker\""), "{info}");
    assert!(info.contains("container_label_tier=\"web\""), "{info}");
    assert!(
        info.contains("container_label_com_example_owner=\"a\\\"b\""),
        "{info}"
    );

    // Removing the container removes its series at the next rescan.
    let (ok, _) = dockerd.docker(&["rm", "-f", &name]);
    assert!(ok);
    std::thread::sleep(Duration::from_millis(400));
    let (_, body) = http_get(&agent.addr, "/metrics", &[]).unwrap();
    let m = String::from_utf8(body).unwrap();
    assert!(sample(&m, "container_memory_usage_bytes", &cgroup).is_none());
    drop(agent);
    drop(dockerd);
    assert_eq!(
        host_network_links(),
        host_links_before,
        "the test's dockerd left the host's network interfaces changed"
    );
}

/// A bridge on the host that this test created, removed on drop; none when the
/// host already had one of that name.
struct HostBridge(Option<String>);

impl HostBridge {
    fn ensure(name: &str) -> HostBridge {
        if Path::new("/sys/class/net").join(name).exists() {
            return HostBridge(None);
        }
        let ok = Command::new("ip")
            .args(["link", "add", name, "type", "bridge"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip link add {name} type bridge failed");
        HostBridge(Some(name.to_owned()))
    }
}

impl Drop for HostBridge {
    fn drop(&mut self) {
        if let Some(name) = &self.0 {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
}

/// The host's network interfaces (a Docker already running keeps its `docker0`).
fn host_network_links() -> Vec<String> {
    let mut links: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    links.sort();
    links
}
