//! The DaemonSet of `deploy/kubernetes/daemonset.yaml`, run as a `docker run`: the
//! same command line, capabilities, seccomp profile, host PID namespace, read-only
//! root and hostPath mounts (each host path may be mapped to a test's own stand-in,
//! e.g. its dockerd's data root). What Kubernetes would do with the manifest,
//! translated flag by flag, so the test runs the pod as shipped.

use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The agent container of the DaemonSet manifest.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// `docker run` flags for everything but the image and its arguments.
    pub flags: Vec<String>,
    /// The container's `args`.
    pub args: Vec<String>,
    /// Capabilities the manifest adds (without `CAP_`).
    pub cap_add: Vec<String>,
}

/// The repository's DaemonSet manifest.
pub fn manifest_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/daemonset.yaml")
}

impl PodSpec {
    /// Reads the manifest; `host_paths` maps a hostPath to the directory that stands
    /// in for it (others are mounted as they are).
    pub fn from_manifest(path: &Path, host_paths: &BTreeMap<&str, PathBuf>) -> PodSpec {
        let text = std::fs::read_to_string(path).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        let pod = &doc["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let strings = |v: &Value| -> Vec<String> {
            v.as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut flags = Vec::new();
        if pod["hostPID"].as_bool() == Some(true) {
            flags.extend(["--pid".into(), "host".into()]);
        }
        if pod["hostNetwork"].as_bool() == Some(true) {
            flags.extend(["--network".into(), "host".into()]);
        }
        let sc = &container["securityContext"];
        assert_ne!(
            sc["privileged"].as_bool(),
            Some(true),
            "the pod must not be privileged"
        );
        for cap in strings(&sc["capabilities"]["drop"]) {
            flags.extend(["--cap-drop".into(), cap]);
        }
        let cap_add = strings(&sc["capabilities"]["add"]);
        for cap in &cap_add {
            flags.extend(["--cap-add".into(), cap.clone()]);
        }
        match sc["seccompProfile"]["type"].as_str() {
            Some("Unconfined") => {
                flags.extend(["--security-opt".into(), "seccomp=unconfined".into()])
            }
            Some("RuntimeDefault") | None => {}
            Some(other) => panic!("seccompProfile {other} is not translated"),
        }
        if sc["readOnlyRootFilesystem"].as_bool() == Some(true) {
            flags.push("--read-only".into());
        }
        if sc["allowPrivilegeEscalation"].as_bool() == Some(false) {
            flags.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        if let Some(uid) = sc["runAsUser"].as_u64() {
            flags.extend(["--user".into(), uid.to_string()]);
        }
        if let Some(mem) = container["resources"]["limits"]["memory"].as_str() {
            flags.extend(["--memory".into(), kube_bytes(mem).to_string()]);
        }
        let volumes: BTreeMap<&str, &str> = pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
            .collect();
        for m in container["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let name = m["name"].as_str().unwrap();
            let host = volumes
                .get(name)
                .unwrap_or_else(|| panic!("volume {name} is not a hostPath"));
            let source = host_paths
                .get(host)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(host));
            let ro = if m["readOnly"].as_bool() == Some(true) {
                ":ro"
            } else {
                ""
            };
            flags.extend([
                "-v".into(),
                format!(
                    "{}:{}{ro}",
                    source.display(),
                    m["mountPath"].as_str().unwrap()
                ),
            ]);
        }
        PodSpec {
            flags,
            args: strings(&container["args"]),
            cap_add,
        }
    }

    /// The same pod without capability `cap` (e.g. `SYS_PTRACE`).
    pub fn without_cap(&self, cap: &str) -> PodSpec {
        let mut flags = Vec::new();
        let mut it = self.flags.iter();
        while let Some(f) = it.next() {
            if f == "--cap-add" {
                let c = it.next().unwrap();
                if c != cap {
                    flags.extend([f.clone(), c.clone()]);
                }
            } else {
                flags.push(f.clone());
            }
        }
        assert_ne!(flags, self.flags, "{cap} is not in the pod's capabilities");
        PodSpec {
            flags,
            args: self.args.clone(),
            cap_add: self.cap_add.iter().filter(|c| *c != cap).cloned().collect(),
        }
    }
}

/// `64Mi`, `1Gi`, `500M` → bytes.
fn kube_bytes(q: &str) -> u64 {
    let (num, mult) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
    .unwrap_or((q, 1));
    num.parse::<u64>()
        .unwrap_or_else(|_| panic!("quantity {q:?}"))
        * mult
}
