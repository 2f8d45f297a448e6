//! Checks `deploy/kubernetes/`: the kustomize base builds (`kubectl kustomize`), every
//! built-in resource validates against the Kubernetes OpenAPI schemas (PyPI's
//! `kubernetes-validate`, which bundles them, `--strict`), the PrometheusRule holds
//! exactly the groups of `dashboards/alerts.yml` and `recording.yml` and passes
//! promtool, the dashboard ConfigMap is `dashboards/agent.json` labelled for
//! Grafana's sidecar, the plain Prometheus job passes `promtool check config`, and
//! the recording rules pass their promtool unit tests, and so do the remote_write
//! and federation examples of `deploy/prometheus/`.
//!
//! Needs neither root nor a cluster. kubectl (Debian's kubernetes-client) and
//! kubernetes-validate (`cargo xtask test` installs it into target/tools/venv; or
//! set KUBERNETES_VALIDATE) are skipped with a printed reason when absent.

use agent_test_support::dashboard_queries::dashboards_dir;
use agent_test_support::promtool;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

/// `kubectl kustomize deploy/kubernetes`, or `None` (printed) without kubectl.
fn kustomize() -> Option<String> {
    let out = match Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir())
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            eprintln!("SKIPPED: kubectl not installed (Debian's kubernetes-client)");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn kubernetes_validate() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("KUBERNETES_VALIDATE").map(PathBuf::from),
        Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/tools/venv/bin/kubernetes-validate"),
        ),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "SKIPPED schema validation: kubernetes-validate not installed (cargo xtask test \
             installs it into target/tools/venv, or: pip install kubernetes-validate)"
        );
    }
    found
}

#[test]
fn the_kustomize_base_builds_and_validates_against_the_kubernetes_schemas() {
    let Some(built) = kustomize() else {
        return;
    };
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&built)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "DaemonSet",
        "ServiceAccount",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
    ] {
        assert!(
            kinds.contains(&kind),
            "{kind} missing from the base: {kinds:?}"
        );
    }
    let by_kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap();
    // The headless Service selects the DaemonSet's pods, on the port the
    // ServiceMonitor scrapes.
    let ds = by_kind("DaemonSet");
    let svc = by_kind("Service");
    assert_eq!(svc["spec"]["clusterIP"], "None", "the Service is headless");
    assert_eq!(
        svc["spec"]["selector"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    let port = svc["spec"]["ports"][0]["name"].as_str().unwrap();
    assert_eq!(
        by_kind("ServiceMonitor")["spec"]["endpoints"][0]["port"],
        port
    );
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["name"], port);
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());
    // The dashboard ConfigMap, for Grafana's sidecar.
    let cm = by_kind("ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        cm["data"]["agent-dashboard.json"].as_str().unwrap(),
        read(&dashboards_dir().join("agent.json"))
    );

    let Some(validator) = kubernetes_validate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, &built).unwrap();
    let out = Command::new(validator)
        .arg("--strict")
        .arg(&file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubernetes-validate:\n{text}");
    for kind in [
        "serviceaccount/agent",
        "service/agent",
        "daemonset/agent",
        "configmap/agent-dashboard",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind} not validated:\n{text}"
        );
    }
    eprintln!("{text}");
}

#[test]
fn the_prometheus_rule_is_the_rule_files_and_passes_promtool() {
    let dashboards = dashboards_dir();
    let alerts = read(&dashboards.join("alerts.yml"));
    let recording = read(&dashboards.join("recording.yml"));
    let rule_text = read(&deploy_dir().join("prometheusrule.yaml"));
    assert_eq!(
        rule_text,
        xtask::manifests::prometheus_rule(&alerts, &recording),
        "deploy/kubernetes/prometheusrule.yaml is stale: run `cargo xtask manifests`"
    );
    // And semantically: its groups are the two files' groups.
    let rule = yaml(&rule_text);
    let mut groups = yaml(&alerts)["groups"].as_sequence().unwrap().clone();
    groups.extend(
        yaml(&recording)["groups"]
            .as_sequence()
            .unwrap()
            .iter()
            .cloned(),
    );
    assert_eq!(rule["spec"]["groups"].as_sequence().unwrap(), &groups);
    assert_eq!(
        read(&deploy_dir().join("agent-dashboard.json")),
        read(&dashboards.join("agent.json")),
        "deploy/kubernetes/agent-dashboard.json is stale: run `cargo xtask manifests`"
    );
    // The rule file the operator would load passes promtool.
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_yaml_ng::to_string(&rule["spec"]).unwrap();
    std::fs::write(dir.path().join("rules.yml"), spec).unwrap();
    promtool(dir.path(), &["check", "rules", "rules.yml"]);
}

#[test]
fn recording_rules_pass_promtool_check_and_unit_tests() {
    promtool(&dashboards_dir(), &["check", "rules", "recording.yml"]);
    promtool(&dashboards_dir(), &["test", "rules", "recording_test.yml"]);
}

#[test]
fn the_plain_prometheus_job_passes_promtool_check_config() {
    let job = yaml(&read(&deploy_dir().join("prometheus-job.yml")));
    let scrape = &job["scrape_configs"][0];
    assert_eq!(
        scrape["job_name"], "agent",
        "alerts and recording rules expect job=\"agent\""
    );
    let sd = &scrape["kubernetes_sd_configs"][0];
    assert_eq!(sd["role"], "pod");
    let relabel = scrape["relabel_configs"].as_sequence().unwrap();
    assert!(
        relabel.iter().any(
            |r| r["source_labels"][0] == "__meta_kubernetes_pod_node_name"
                && r["target_label"] == "node"
        ),
        "the node name must become the `node` label"
    );
    // Debian's Prometheus is built without Kubernetes service discovery, so its
    // promtool refuses `kubernetes_sd_configs`: the rest of the job (relabeling,
    // rule files) is checked with a static target in its place.
    let mut checked = job.clone();
    let scrape = &mut checked["scrape_configs"][0];
    let map = scrape.as_mapping_mut().unwrap();
    map.remove("kubernetes_sd_configs");
    map.insert(
        Value::from("static_configs"),
        yaml("- targets: ['127.0.0.1:9810']"),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        serde_yaml_ng::to_string(&checked).unwrap(),
    )
    .unwrap();
    // promtool resolves rule_files relative to the config: check it beside them.
    for f in ["alerts.yml", "recording.yml"] {
        std::fs::copy(dashboards_dir().join(f), dir.path().join(f)).unwrap();
    }
    promtool(dir.path(), &["check", "config", "prometheus.yml"]);
}

#[test]
fn the_remote_write_and_federation_examples_pass_promtool_check_config() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    for example in ["remote-write.yml", "federate.yml"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(examples.join(example), dir.path().join("prometheus.yml")).unwrap();
        for f in ["alerts.yml", "recording.yml"] {
            std::fs::copy(dashboards_dir().join(f), dir.path().join(f)).unwrap();
        }
        promtool(dir.path(), &["check", "config", "prometheus.yml"]);
    }
}
