//! Privileged: a real Docker daemon (Debian's docker.io, started by the test on a
//! private socket and data root) runs a real container; `agent serve` must find its
//! cgroup and label it with the name, image and labels from Docker's own files.
//!
//! The test's dockerd runs in a network namespace of its own: its bridge, its
//! iptables rules and its cleanup of them never touch the host's network, or a
//! Docker that already runs on the machine (its `docker0` among them).

use agent_test_support as common;

use common::{AgentProcess, http_get, require_root, sample};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// dockerd on a temporary socket and data root; on drop, every container is removed
/// and the daemon (with the containerd it started) is stopped.
struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
    created_parent_cgroups: Vec<PathBuf>,
}

impl Dockerd {
    fn start() -> Option<Dockerd> {
        if !Path::new("/usr/sbin/dockerd").exists() {
            eprintln!(
                "SKIPPED: /usr/sbin/dockerd missing (Debian's docker.io; .ci/run installs it)"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("agent-dockerd")
            .tempdir()
            .unwrap();
        // dockerd makes a `docker` parent in every hierarchy; remove those it adds.
        let parents: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path().join("docker"))
            .filter(|p| !p.exists())
            .collect();
        let d = dir.path();
        let child = Command::new("unshare")
            .args(["--net", "--", "/usr/sbin/dockerd"])
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("dockerd.pid").display()))
            .arg(format!("--host=unix://{}", d.join("docker.sock").display()))
            .args(["--iptables=false", "--ip6tables=false", "--ip-masq=false"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("dockerd.log")).unwrap())
            .spawn()
            .expect("starting dockerd");
        let me = Dockerd {
            dir,
            child,
            created_parent_cgroups: parents,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.docker(&["info", "--format", "{{.ServerVersion}}"]).0 {
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up: {}",
                std::fs::read_to_string(me.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(me)
    }

    fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs the docker CLI against this daemon; returns (success, stdout).
    fn docker(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("docker")
            .arg(format!(
                "--host=unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .args(args)
            .output();
        match out {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).trim().to_string(),
            ),
            Err(_) => (false, String::new()),
        }
    }

    /// Imports a one-binary busybox image made from the host's busybox-static.
    fn import_busybox(&self, reference: &str) {
        let root = self.dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("busybox-static is installed");
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.path().join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar failed");
        let (ok, _) = self.docker(&["import", tar.to_str().unwrap(), reference]);
        assert!(ok, "docker import failed");
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let (_, ids) = self.docker(&["ps", "-aq"]);
        for id in ids.split_whitespace() {
            self.docker(&["rm", "-f", id]);
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in &self.created_parent_cgroups {
            let _ = std::fs::remove_dir(p);
        }
    }
}

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
