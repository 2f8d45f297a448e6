//! Privileged: containerd and podman (Debian's, each started by the test on a
//! private root and socket) run real containers, and `agent serve` must name
//! them from the runtimes' own records:
//! - a pod made through containerd's CRI API exactly as kubelet makes one
//!   (RunPodSandbox, CreateContainer, StartContainer over gRPC, with kubelet's
//!   labels) gets `pod`, `namespace`, `container`, `name` and `image` on every
//!   series as kubelet's `/metrics/cadvisor` shows them, its pod cgroup and
//!   sandbox included;
//! - a plain `ctr run` container in a namespace of its own gets its id as name
//!   and the image of containerd's record;
//! - `podman run -d --name X` gets `name="X"` and its image.

use agent_test_support as common;

use common::containerd::Containerd;
use common::podman::Podman;
use common::{AgentProcess, http_get, require_root};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const SANDBOX_IMAGE: &str = "docker.io/agenttest/pause:1";
const APP_IMAGE: &str = "docker.io/agenttest/app:1";

/// An OCI layout of the busybox test image at `dir` running `cmd`, named
/// `reference` for containerd (`io.containerd.image.name`).
fn image_layout(dir: &Path, reference: &str, cmd: &[&str]) {
    use common::launch::{base_layer, build_oci};
    build_oci(dir, &[&base_layer()], Some(cmd), "1");
    let path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["io.containerd.image.name"] = reference.into();
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// The label set of the first series of `family` whose `id` is `id`.
fn series_labels(exposition: &str, family: &str, id: &str) -> Option<BTreeMap<String, String>> {
    let needle = format!("id=\"{id}\"");
    let line = exposition
        .lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(&needle))?;
    let body = &line[line.find('{')? + 1..line.rfind('}')?];
    let mut out = BTreeMap::new();
    // Values here hold no escaped quotes.
    for pair in body.split("\",") {
        let (k, v) = pair.split_once("=\"")?;
        out.insert(k.to_string(), v.trim_end_matches('"').to_string());
    }
    Some(out)
}

/// Scrapes `agent` until `id`'s series has the label `key` (the runtime's
/// record is fetched in the background), then returns its labels.
fn wait_named(agent: &AgentProcess, id: &str, key: &str) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(&agent.addr, "/metrics", &[]).unwrap();
        let m = String::from_utf8(body).unwrap();
        if let Some(l) = series_labels(&m, "container_memory_usage_bytes", id)
            && l.get(key).is_some_and(|v| !v.is_empty())
        {
            // Every series of the cgroup carries the same labels.
            let cpu = series_labels(&m, "container_cpu_usage_seconds_total", id).unwrap();
            for (k, v) in &l {
                assert_eq!(cpu.get(k), Some(v), "{k} differs between families of {id}");
            }
            eprintln!("{id}: {l:?}");
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never got a {key:?} label; its series: {:?}",
            m.lines()
                .filter(|l| l.contains(id))
                .take(3)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn labels(kv: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn containerd_cri_pods_and_ctr_containers_are_named_as_kubelet_names_them() {
    const TEST: &str = "containerd_cri_pods_and_ctr_containers_are_named_as_kubelet_names_them";
    if !require_root(TEST) {
        return;
    }
    if common::host_hierarchy().is_v2() {
        eprintln!("SKIPPED {TEST}: the test's cgroup parents are written for the v1 layout");
        return;
    }
    let Some(mut containerd) = Containerd::start(SANDBOX_IMAGE) else {
        return;
    };
    let pid = std::process::id();
    let uid = format!("0e7c1a2b-agent-{pid}");
    let pod_cgroup = format!("/kubepods/besteffort/pod{uid}");
    let ctr_ns = format!("agent-rt-{pid}");
    for parent in [
        "/kubepods",
        "/kubepods/besteffort",
        &pod_cgroup,
        &format!("/{ctr_ns}"),
    ] {
        containerd.parent_cgroup(parent);
    }
    let images = containerd.scratch().join("images");
    // Two distinct images (the same content would be one image with two names).
    image_layout(&images.join("pause"), SANDBOX_IMAGE, &["sleep", "3600"]);
    image_layout(&images.join("app"), APP_IMAGE, &["sleep", "300"]);
    containerd.import("k8s.io", &images.join("pause"));
    containerd.import("k8s.io", &images.join("app"));
    containerd.import(&ctr_ns, &images.join("app"));

    // kubelet's side of a pod: its labels on the sandbox and the container,
    // a host-network sandbox under the pod's cgroup parent.
    let (pod, namespace, container) = ("web-0", "agent-test", "app");
    let pod_labels = labels(&[
        ("io.kubernetes.pod.name", pod),
        ("io.kubernetes.pod.namespace", namespace),
        ("io.kubernetes.pod.uid", &uid),
        ("app", "web"),
    ]);
    let node_network = Some(cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Pod as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    });
    let logs = containerd.scratch().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: pod.into(),
            uid: uid.clone(),
            namespace: namespace.into(),
            attempt: 0,
        }),
        // kubelet sets no hostname for a host-network pod (it shares the node's).
        log_directory: logs.display().to_string(),
        labels: pod_labels.clone(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: pod_cgroup.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: node_network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let socket = containerd.socket();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (sandbox_id, container_id) = rt.block_on(async {
        let channel = containerd_client::connect(&socket).await.unwrap();
        let mut cri = RuntimeServiceClient::new(channel);
        let sandbox_id = cri
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()))
            .into_inner()
            .pod_sandbox_id;
        let mut container_labels = pod_labels.clone();
        container_labels.remove("app");
        container_labels.insert("io.kubernetes.container.name".into(), container.into());
        let container_id = cri
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(cri::ContainerConfig {
                    // Its second run, as after a restart: kubelet's name ends in
                    // the attempt, which only the CRI's own record holds.
                    metadata: Some(cri::ContainerMetadata {
                        name: container.into(),
                        attempt: 1,
                    }),
                    image: Some(cri::ImageSpec {
                        image: APP_IMAGE.into(),
                        ..Default::default()
                    }),
                    command: vec!["sleep".into(), "300".into()],
                    labels: container_labels,
                    log_path: "app/0.log".into(),
                    linux: Some(cri::LinuxContainerConfig {
                        security_context: Some(cri::LinuxContainerSecurityContext {
                            namespace_options: node_network.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", containerd.log()))
            .into_inner()
            .container_id;
        cri.start_container(cri::StartContainerRequest {
            container_id: container_id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", containerd.log()));
        (sandbox_id, container_id)
    });

    // A plain containerd container in a namespace of its own.
    let ctr_id = format!("plain-{pid}");
    // A hostile label (quote, newline, bell, 3000 bytes: containerd allows 4096
    // per label) must come out escaped, the exposition still well-formed.
    let hostile = format!("a\"b\nc\u{7}{}", "x".repeat(3000));
    let (ok, out) = containerd.ctr(
        &ctr_ns,
        &[
            "run",
            "-d",
            "--label",
            &format!("note={hostile}"),
            "--env",
            "AGENT_TEST_TIER=front",
            "--env",
            "AGENT_TEST_SECRET=hunter2",
            APP_IMAGE,
            &ctr_id,
            "sleep",
            "300",
        ],
    );
    assert!(ok, "ctr run: {out}");

    // What containerd's own records say the images are (kubelet's cAdvisor
    // shows exactly these).
    let image_of = |ns: &str, id: &str| {
        let (ok, info) = containerd.ctr(ns, &["containers", "info", id]);
        assert!(ok, "ctr containers info {id}: {info}");
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        v["Image"].as_str().unwrap_or_default().to_string()
    };
    let sandbox_image = image_of("k8s.io", &sandbox_id);
    let app_image = image_of("k8s.io", &container_id);
    assert_eq!(app_image, APP_IMAGE, "the CRI records the image asked for");
    assert_eq!(
        sandbox_image, SANDBOX_IMAGE,
        "and the sandbox image for a sandbox"
    );

    let state = containerd.state_dir();
    let agent = AgentProcess::start(&[
        "--containerd-state",
        state.to_str().unwrap(),
        "--containerd-socket",
        socket.to_str().unwrap(),
        "--container-env",
        "AGENT_TEST_TIER",
    ]);

    let app = wait_named(&agent, &format!("{pod_cgroup}/{container_id}"), "name");
    let want = |name: &str, image: &str, container: &str| -> Vec<(&str, String)> {
        vec![
            ("container", container.to_string()),
            ("image", image.to_string()),
            ("name", name.to_string()),
            ("namespace", namespace.to_string()),
            ("pod", pod.to_string()),
        ]
    };
    let check = |what: &str, got: &BTreeMap<String, String>, want: Vec<(&str, String)>| {
        for (k, v) in want {
            assert_eq!(got.get(k), Some(&v), "{k} of {what}: {got:?}");
        }
    };
    let app_name = format!("k8s_{container}_{pod}_{namespace}_{uid}_1");
    check(
        "the app container",
        &app,
        want(&app_name, APP_IMAGE, container),
    );
    let sandbox = wait_named(&agent, &format!("{pod_cgroup}/{sandbox_id}"), "name");
    let sandbox_name = format!("k8s_POD_{pod}_{namespace}_{uid}_0");
    check(
        "the sandbox",
        &sandbox,
        want(&sandbox_name, &sandbox_image, ""),
    );
    let pod_level = wait_named(&agent, &pod_cgroup, "pod");
    check("the pod cgroup", &pod_level, want("", "", ""));

    let plain = wait_named(&agent, &format!("/{ctr_ns}/{ctr_id}"), "name");
    assert_eq!(
        plain.get("name").map(String::as_str),
        Some(ctr_id.as_str()),
        "{plain:?}"
    );
    assert_eq!(
        plain.get("image").map(String::as_str),
        Some(APP_IMAGE),
        "{plain:?}"
    );
    assert_eq!(image_of(&ctr_ns, &ctr_id), APP_IMAGE);
    assert_eq!(
        plain
            .get("container_env_AGENT_TEST_TIER")
            .map(String::as_str),
        Some("front"),
        "the allow-listed variable, from the OCI spec in containerd's record: {plain:?}"
    );
    assert!(
        !plain.keys().any(|k| k.contains("SECRET")),
        "no other variable: {plain:?}"
    );
    assert!(
        !plain.contains_key("pod"),
        "not a Kubernetes container: {plain:?}"
    );
    let (_, body) = http_get(&agent.addr, "/metrics", &[]).unwrap();
    let m = String::from_utf8(body).unwrap();
    let info = m
        .lines()
        .find(|l| l.starts_with("agent_container_info{") && l.contains(&ctr_id))
        .expect("an info series for the ctr container");
    let escaped = format!(
        "container_label_note=\"a\\\"b\\nc\u{7}{}\"",
        "x".repeat(3000)
    );
    assert!(info.contains(&escaped), "{}", &info[..info.len().min(300)]);
    assert!(
        info.contains("runtime=\"containerd\""),
        "{}",
        &info[..info.len().min(300)]
    );
    let app_info = m
        .lines()
        .find(|l| l.starts_with("agent_container_info{") && l.contains(&container_id))
        .expect("an info series for the CRI container");
    assert!(
        app_info.contains("container_label_io_kubernetes_pod_name=\"web-0\"")
            && app_info.contains("pod=\"web-0\"")
            && app_info.contains("runtime=\"kubernetes\""),
        "{app_info}"
    );
}

#[test]
fn podman_containers_are_named_from_podman_state() {
    const TEST: &str = "podman_containers_are_named_from_podman_state";
    if !require_root(TEST) {
        return;
    }
    if common::host_hierarchy().is_v2() {
        eprintln!("SKIPPED {TEST}: podman's cgroupfs parent is written for the v1 layout");
        return;
    }
    let Some(podman) = Podman::new() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.path().join("bin/busybox")).expect("busybox-static");
    std::os::unix::fs::symlink("busybox", root.path().join("bin/sleep")).unwrap();
    podman.import_dir(root.path(), "localhost/agent-test-bb:1");
    let name = format!("agent-podman-{}", std::process::id());
    let id = podman.run(&name, "localhost/agent-test-bb:1", &["sleep", "300"]);
    assert_eq!(id.len(), 64, "container id {id:?}");

    let store = podman.root();
    let agent = AgentProcess::start(&["--podman-root", store.to_str().unwrap()]);
    let l = wait_named(&agent, &format!("/libpod_parent/libpod-{id}"), "name");
    assert_eq!(l.get("name"), Some(&name), "{l:?}");
    assert_eq!(
        l.get("image").map(String::as_str),
        Some("localhost/agent-test-bb:1"),
        "{l:?}"
    );
}
