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

/// Bytes the sender container pushes over TCP to the listener container.
const SENT: u64 = 8 << 20;
/// Bytes the sender container writes into its writable layer.
const WRITTEN: u64 = 16 << 20;

#[test]
fn docker_network_and_writable_layer_are_measured() {
    if !require_root("docker_network_and_writable_layer_are_measured") {
        return;
    }
    if common::host_hierarchy().is_v2() {
        eprintln!(
            "SKIPPED docker_network_and_writable_layer_are_measured: written for the v1 host layout"
        );
        return;
    }
    let Some(dockerd) = Dockerd::start() else {
        return;
    };
    dockerd.import_busybox("agent-test/busybox:1");
    let tag = std::process::id();
    // A bridge network of Docker's with jumbo frames: at 1500 bytes the TCP/IP and
    // Ethernet headers alone are ~5% of each full segment, so the interface's byte
    // count could not be held to 5% of the payload.
    let net = format!("agent-test-net-{tag}");
    let (ok, _) = dockerd.docker(&[
        "network",
        "create",
        "--driver",
        "bridge",
        "--opt",
        "com.docker.network.driver.mtu=9000",
        &net,
    ]);
    assert!(ok, "docker network create failed");
    // The listener: counts what arrives, then stays up to be scraped.
    let listener = format!("agent-test-listen-{tag}");
    let (ok, listener_id) = dockerd.docker(&[
        "run",
        "-d",
        "--name",
        &listener,
        "--network",
        &net,
        "agent-test/busybox:1",
        "sh",
        "-c",
        // nc's stdin is a fifo held open and never written: an EOF there would
        // end busybox nc before the peer is done.
        "busybox mkfifo /f; (busybox nc -l -p 5000 < /f | busybox wc -c > /got; echo received) & \
         exec 3>/f; sleep 300",
    ]);
    assert!(ok, "docker run (listener) failed");
    let (ok, ip) = dockerd.docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
        &listener,
    ]);
    assert!(
        ok && !ip.is_empty(),
        "listener has no bridge address: {ip:?}"
    );
    // A container sharing the listener's namespace (`--network container:`).
    let (ok, sharer_id) = dockerd.docker(&[
        "run",
        "-d",
        "--network",
        &format!("container:{listener}"),
        "agent-test/busybox:1",
        "sleep",
        "300",
    ]);
    assert!(ok, "docker run (sharer) failed");
    // The sender: writes a known amount into its layer, then a known amount to
    // the listener.
    let script = format!(
        "busybox dd if=/dev/urandom of=/blob bs=1048576 count={} 2>/dev/null && sync && \
         busybox dd if=/dev/zero bs=65536 count={} 2>/dev/null | busybox nc {ip} 5000; \
         echo sent; sleep 300",
        WRITTEN >> 20,
        SENT / 65536
    );
    let sender = format!("agent-test-send-{tag}");
    let (ok, sender_id) = dockerd.docker(&[
        "run",
        "-d",
        "--name",
        &sender,
        "--network",
        &net,
        "agent-test/busybox:1",
        "sh",
        "-c",
        &script,
    ]);
    assert!(ok, "docker run (sender) failed");
    wait_for_log(&dockerd, &sender, "sent");
    wait_for_log(&dockerd, &listener, "received");
    let (_, got) = dockerd.docker(&["exec", &listener, "cat", "/got"]);
    assert_eq!(got.trim(), SENT.to_string(), "the listener got every byte");

    let data_root = dockerd.data_root();
    let agent = AgentProcess::start(&[
        "--docker-root",
        data_root.to_str().unwrap(),
        "--fs-usage-interval",
        "1s",
    ]);
    let listen_cg = format!("/docker/{listener_id}");
    let send_cg = format!("/docker/{sender_id}");
    let share_cg = format!("/docker/{sharer_id}");
    let eth0 = |m: &str, family: &str, cg: &str| -> Option<f64> {
        m.lines().find_map(|l| {
            let rest = l.strip_prefix(family)?.strip_prefix('{')?;
            (rest.contains(&format!("id=\"{cg}\"")) && rest.contains("interface=\"eth0\""))
                .then(|| rest.rsplit(' ').next()?.parse().ok())?
        })
    };
    // Docker's own word for the layer, against which the agent (which finds it
    // from the container's root mount) is checked.
    let (ok, upper) = dockerd.docker(&["inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", &sender]);
    let upper = std::path::PathBuf::from(upper);
    assert!(
        ok && upper.is_dir(),
        "no overlay2 upper dir {}",
        upper.display()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let m = loop {
        let (_, body) = http_get(&agent.addr, "/metrics", &[]).unwrap();
        let m = String::from_utf8(body).unwrap();
        if sample(&m, "container_fs_usage_bytes", &send_cg).is_some() {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no container_fs_usage_bytes for {send_cg} within 30s:\n{}",
            m.lines()
                .filter(|l| l.starts_with("container_fs_") || l.starts_with("container_network"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(300));
    };

    // Network: what the containers themselves moved, from their own namespace.
    let sent = SENT as f64;
    let tx = eth0(&m, "container_network_transmit_bytes_total", &send_cg).expect("sender tx");
    let rx = eth0(&m, "container_network_receive_bytes_total", &listen_cg).expect("listener rx");
    eprintln!("payload {sent}, sender transmitted {tx}, listener received {rx}");
    for (what, v) in [("sender transmit", tx), ("listener receive", rx)] {
        assert!(
            v >= sent && v <= sent * 1.05,
            "{what} bytes {v} not within 5% of the {sent} payload"
        );
    }
    assert!(eth0(&m, "container_network_transmit_packets_total", &send_cg).unwrap() > 0.0);
    assert!(eth0(&m, "container_network_receive_packets_total", &listen_cg).unwrap() > 0.0);
    for family in [
        "container_network_receive_errors_total",
        "container_network_receive_packets_dropped_total",
        "container_network_transmit_errors_total",
        "container_network_transmit_packets_dropped_total",
    ] {
        assert!(eth0(&m, family, &send_cg).is_some(), "{family}");
    }
    // lo is left out; the shared namespace is reported once, by its owner.
    assert!(!m.contains("interface=\"lo\""), "lo is skipped");
    assert!(
        !m.lines()
            .any(|l| l.starts_with("container_network_") && l.contains(&share_cg)),
        "the container in the listener's namespace reports no network of its own"
    );

    // The writable layer, against du on the upper dir.
    let usage = sample(&m, "container_fs_usage_bytes", &send_cg).unwrap();
    let du = du_bytes(&upper);
    eprintln!("written {WRITTEN}, du {du}, container_fs_usage_bytes {usage}");
    assert!(
        (usage - du).abs() <= du * 0.05,
        "usage {usage} not within 5% of du {du}"
    );
    assert!(
        usage >= WRITTEN as f64,
        "usage {usage} below the {WRITTEN} written"
    );
    let line = m
        .lines()
        .find(|l| l.starts_with("container_fs_usage_bytes{") && l.contains(&send_cg))
        .unwrap();
    assert!(
        line.contains("device=\"/dev/"),
        "cAdvisor's device label: {line}"
    );
    assert!(sample(&m, "container_fs_limit_bytes", &send_cg).unwrap() > usage);
    assert!(sample(&m, "container_fs_inodes_total", &send_cg).unwrap() >= 2.0);
    assert!(sample(&m, "container_fs_inodes_free", &send_cg).unwrap() > 0.0);

    // Growth is seen on a later walk, without the scrape walking anything.
    let (ok, _) = dockerd.docker(&[
        "exec",
        &sender,
        "sh",
        "-c",
        "busybox dd if=/dev/urandom of=/blob2 bs=1048576 count=8 2>/dev/null && sync",
    ]);
    assert!(ok);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(&agent.addr, "/metrics", &[]).unwrap();
        let m = String::from_utf8(body).unwrap();
        let now = sample(&m, "container_fs_usage_bytes", &send_cg).unwrap_or(0.0);
        if now >= usage + (8 << 20) as f64 {
            let du = du_bytes(&upper);
            assert!((now - du).abs() <= du * 0.05, "usage {now}, du {du}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "growth to {now} not seen"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(agent);
}

/// Waits until the container's log shows `word`.
fn wait_for_log(dockerd: &Dockerd, container: &str, word: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, log) = dockerd.docker(&["logs", container]);
        if log.contains(word) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{container} did not log {word:?}: {log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `du -s --block-size=1` of `dir`.
fn du_bytes(dir: &Path) -> f64 {
    let out = Command::new("du")
        .args(["-s", "--block-size=1"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "du {}", dir.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
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
