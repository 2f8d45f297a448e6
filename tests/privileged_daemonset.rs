//! Privileged, end to end: the agent's image runs on a real dockerd exactly as
//! `deploy/kubernetes/daemonset.yaml` runs it — the same arguments, the host PID
//! namespace, the host's cgroup tree and the runtimes' state mounted read-only, the
//! least-privilege capability set, no `--privileged` — in the host cgroup
//! namespace and in a private one (Kubernetes' default on cgroup v2). From inside,
//! its /metrics must show cgroup metrics and eBPF exec and mount events, with the
//! right names and host-absolute `id`s, for another Docker container and for a
//! container made by `agent launch`. Run again without one capability, it must say
//! which in one start-up line and still serve the rest.
//!
//! The dockerd is the test's own (private socket, data root and network namespace);
//! its bridge is reached from a thread that enters that namespace.

use agent_test_support as common;

use common::daemonset::{PodSpec, manifest_path};
use common::docker::Dockerd;
use common::launch::Env;
use common::{require_root, sample};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A loop that execs (`sleep`) and tries a mount (refused: no CAP_SYS_ADMIN) every
/// half second.
const WORKLOAD: &str =
    "while true; do busybox mount -t tmpfs none /tmp 2>/dev/null; sleep 0.5; done";

/// The sum of `family` over the series of cgroup `id` (0 when none).
fn total(metrics: &str, family: &str, id: &str) -> f64 {
    let needle = format!("id=\"{id}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The line of `family` for cgroup `id`.
fn line<'a>(metrics: &'a str, family: &str, id: &str) -> Option<&'a str> {
    let needle = format!("id=\"{id}\"");
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(&needle))
}

struct Pod<'a> {
    dockerd: &'a Dockerd,
    name: String,
    addr: String,
}

impl Pod<'_> {
    fn run<'a>(
        dockerd: &'a Dockerd,
        spec: &PodSpec,
        image: &str,
        name: &str,
        cgroupns: &str,
    ) -> Pod<'a> {
        let mut args: Vec<&str> = vec!["run", "-d", "--name", name, "--cgroupns", cgroupns];
        args.extend(spec.flags.iter().map(String::as_str));
        args.push(image);
        args.extend(spec.args.iter().map(String::as_str));
        let (ok, out) = dockerd.docker(&args);
        assert!(ok, "docker run {args:?}: {out}");
        let (_, ip) = dockerd.docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name]);
        assert!(!ip.is_empty(), "no bridge address for {name}");
        Pod {
            dockerd,
            name: name.to_owned(),
            addr: format!("{ip}:9810"),
        }
    }

    fn logs(&self) -> String {
        let out = std::process::Command::new("docker")
            .arg(format!("--host=unix://{}", self.dockerd.socket().display()))
            .args(["logs", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// /metrics once `ready` holds of it (or panics with the logs after 60 s).
    fn metrics_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = self.dockerd.http_get_inside(&self.addr, "/metrics");
            if let Ok(m) = &m
                && ready(m)
            {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "pod {}: /metrics never got ready ({:?}); logs:\n{}",
                self.name,
                m.as_ref().map(|m| m.len()).map_err(|e| e.to_string()),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        self.dockerd.docker(&["rm", "-f", &self.name]);
    }
}

#[test]
fn the_daemonset_pod_sees_containers_and_their_events_and_names_a_missing_capability() {
    if !require_root(
        "the_daemonset_pod_sees_containers_and_their_events_and_names_a_missing_capability",
    ) {
        return;
    }
    if common::host_hierarchy().is_v2() {
        eprintln!(
            "SKIPPED: the test's dockerd uses cgroupfs paths, written for the v1/hybrid host layout"
        );
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("agent-ds-test")
        .tempdir()
        .unwrap();
    let img = common::agent_image(&dir.path().join("image"));
    let Some(dockerd) = Dockerd::start() else {
        return;
    };
    let (ok, out) = dockerd.docker(&["load", "-i", img.archive.to_str().unwrap()]);
    assert!(ok, "docker load: {out}");
    dockerd.import_busybox("agent-test/busybox:1");

    // A Docker container, and a container of `agent launch`, each execing and
    // trying mounts.
    let docker_name = format!("agent-ds-workload-{}", std::process::id());
    let (ok, docker_id) = dockerd.docker(&[
        "run",
        "-d",
        "--name",
        &docker_name,
        "--network",
        "none",
        "--security-opt",
        "seccomp=unconfined",
        "agent-test/busybox:1",
        "sh",
        "-c",
        WORKLOAD,
    ]);
    assert!(ok, "docker run: {docker_id}");
    let docker_cgroup = format!("/docker/{docker_id}");
    let env = Env::new();
    let launch_name = format!("agent-ds-launched-{}", std::process::id());
    env.launch(&[
        "-d",
        "--name",
        &launch_name,
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
        "sh",
        "-c",
        WORKLOAD,
    ])
    .ok();
    let launched = env.inspect(&launch_name);
    let launch_cgroup = launched["cgroup"]["path"]
        .as_str()
        .expect("cgroup path")
        .to_owned();

    let run_dir = dir.path().join("run-agent");
    std::fs::create_dir_all(&run_dir).unwrap();
    let host_paths = BTreeMap::from([
        ("/var/lib/docker", dockerd.data_root()),
        ("/var/lib/agent", env.state.clone()),
        ("/run/agent", run_dir),
    ]);
    let spec = PodSpec::from_manifest(&manifest_path(), &host_paths);
    eprintln!(
        "the pod as docker runs it: {:?} {} {:?}",
        spec.flags, img.reference, spec.args
    );

    let both_traced = |m: &str| {
        [docker_cgroup.as_str(), launch_cgroup.as_str()]
            .iter()
            .all(|id| {
                total(m, "agent_exec_events_total", id) > 0.0
                    && total(m, "agent_mount_events_total", id) > 0.0
            })
    };
    for cgroupns in ["host", "private"] {
        let pod = Pod::run(
            &dockerd,
            &spec,
            &img.reference,
            &format!("agent-ds-{cgroupns}"),
            cgroupns,
        );
        let m = pod.metrics_when(both_traced);
        for (id, name, image) in [
            (&docker_cgroup, &docker_name, "agent-test/busybox:1"),
            (&launch_cgroup, &launch_name, "busybox"),
        ] {
            let usage = line(&m, "container_memory_usage_bytes", id)
                .unwrap_or_else(|| panic!("cgroupns {cgroupns}: no memory series for {id}"));
            assert!(
                usage.contains(&format!("name=\"{name}\""))
                    && usage.contains(&format!("image=\"{image}\"")),
                "cgroupns {cgroupns}: {usage}"
            );
            assert!(
                sample(&m, "container_processes", id).unwrap_or(0.0) >= 1.0,
                "{id}: no processes seen"
            );
            let exec = line(&m, "agent_exec_events_total", id).unwrap();
            assert!(
                exec.contains(&format!("name=\"{name}\"")),
                "cgroupns {cgroupns}: {exec}"
            );
            let mount = line(&m, "agent_mount_events_total", id).unwrap();
            assert!(
                mount.contains("operation=\"mount\"") && mount.contains("result=\"error\""),
                "cgroupns {cgroupns}: {mount}"
            );
        }
        // No series under a namespace-relative path.
        assert!(
            !m.contains("id=\"/..") && !m.contains("/../"),
            "a relative cgroup path leaked"
        );
        let logs = pod.logs();
        let startup: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("eBPF hooks attached"))
            .collect();
        assert_eq!(startup.len(), 1, "one start-up line:\n{logs}");
        eprintln!("cgroupns {cgroupns}: {}", startup[0]);
        assert!(
            !startup[0].contains("missing"),
            "cgroupns {cgroupns}: {}",
            startup[0]
        );
        if cgroupns == "private" {
            assert!(
                startup[0].contains("private cgroup namespace rooted at /docker/"),
                "{}",
                startup[0]
            );
        }
    }

    // The same pod without CAP_SYS_PTRACE: one line says so, the rest is served.
    let weaker = spec.without_cap("SYS_PTRACE");
    let pod = Pod::run(
        &dockerd,
        &weaker,
        &img.reference,
        "agent-ds-no-ptrace",
        "host",
    );
    let m = pod.metrics_when(|m| line(m, "container_memory_usage_bytes", &docker_cgroup).is_some());
    assert!(sample(&m, "container_processes", &docker_cgroup).unwrap_or(0.0) >= 1.0);
    let logs = pod.logs();
    let naming: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("CAP_SYS_PTRACE"))
        .collect();
    eprintln!("without SYS_PTRACE: {}", naming.first().unwrap_or(&""));
    assert_eq!(
        naming.len(),
        1,
        "exactly one line names the missing capability:\n{logs}"
    );
    assert!(
        naming[0].contains("missing") && naming[0].contains("eBPF hooks attached"),
        "{}",
        naming[0]
    );
    for cap in ["CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "hostPID"] {
        assert!(
            !naming[0].contains(&format!("{cap} (")),
            "{cap} is not missing: {}",
            naming[0]
        );
    }
    drop(pod);
    env.agent(&["rm", "-f", &launch_name]).ok();
}
