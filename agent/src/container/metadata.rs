//! Container names, images and labels, from the runtimes' own records.
//!
//! Docker keeps `containers/<id>/config.v2.json` under its data root, and the
//! agent keeps `containers/<id>/state.json` (and the OCI `config.json` it runs,
//! with the environment) under its state root: both are read here. podman's
//! store is read by [`super::podman`]; containerd's records come from its API,
//! fetched in the background by [`super::containerd`], so a lookup here only
//! reads memory for them.

use super::containerd::Containerd;
use super::podman::Podman;
use crate::cgroup::discovery::{Discovered, Runtime};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the `name`, `image` and info-series labels of a cgroup say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// The container's environment variables named in
    /// [`MetadataSource::env_keys`], and no others.
    pub env: BTreeMap<String, String>,
    /// A Kubernetes container's (or pod's) labels, as kubelet gives them.
    pub kube: Option<KubeLabels>,
}

/// The `pod`, `namespace` and `container` labels kubelet's `/metrics/cadvisor`
/// puts on every series of a pod's cgroups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeLabels {
    pub pod: String,
    pub namespace: String,
    /// Empty for the pod's own cgroup and its sandbox, as kubelet gives them.
    pub container: String,
}

/// Where container metadata is found.
#[derive(Debug, Clone)]
pub struct MetadataSource {
    /// Docker's data root (`/var/lib/docker`).
    pub docker_root: PathBuf,
    /// The agent's state root (`/var/lib/agent`).
    pub state_dir: PathBuf,
    /// The environment variables to keep (`agent serve --container-env`); every
    /// other one is dropped as soon as it is read, since environments hold secrets.
    pub env_keys: Vec<String>,
    /// containerd's containers (`agent serve --containerd-state`), if followed.
    pub containerd: Option<Containerd>,
    /// podman's store (`agent serve --podman-root`), if followed.
    pub podman: Option<Podman>,
}

/// Docker's own config files can hold thousands of labels; keep the info series sane.
pub const MAX_LABELS: usize = 64;
/// Files bigger than this are not container configs; refuse to parse them.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

impl MetadataSource {
    /// Metadata from Docker's data root and the agent's state root, keeping no
    /// environment variable.
    pub fn new(docker_root: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        MetadataSource {
            docker_root: docker_root.into(),
            state_dir: state_dir.into(),
            env_keys: Vec::new(),
            containerd: None,
            podman: None,
        }
    }

    /// Also follows containerd, whose state directory (its `state`, where the
    /// shims' bundles are) is `state_dir` and whose API is on `socket`. Set
    /// [`Self::env_keys`] first: the environment is filtered as it is fetched.
    pub fn with_containerd(
        mut self,
        state_dir: impl Into<PathBuf>,
        socket: impl Into<PathBuf>,
    ) -> Self {
        self.containerd = Some(Containerd::new(state_dir, socket, &self.env_keys));
        self
    }

    /// Also follows podman, whose storage root is `root`.
    pub fn with_podman(mut self, root: impl Into<PathBuf>) -> Self {
        self.podman = Some(Podman::new(root));
        self
    }

    /// Whether any runtime's records could name `d`: a cgroup that only a
    /// pattern or the systemd naming found (or one whose runtime is not followed)
    /// is never looked up again.
    pub fn can_name(&self, d: &Discovered) -> bool {
        match (d.runtime, d.container_id.is_some()) {
            (Runtime::Docker | Runtime::Agent, true) => true,
            (Runtime::Podman, true) => self.podman.is_some(),
            (Runtime::Containerd | Runtime::Kubernetes, true) | (Runtime::Kubernetes, false) => {
                self.containerd.is_some()
            }
            _ => false,
        }
    }

    /// Looks up the metadata of a discovered cgroup; `None` when nothing is on disk
    /// (yet): the caller tries again on the next scan.
    pub fn lookup(&self, d: &Discovered) -> Option<ContainerMeta> {
        let containerd = self.containerd.as_ref();
        match (d.runtime, d.container_id.as_deref()) {
            (Runtime::Docker, Some(id)) => self.docker(id),
            (Runtime::Agent, Some(id)) => self.agent(id),
            (Runtime::Podman, Some(id)) => self.podman.as_ref()?.lookup(id),
            (Runtime::Containerd | Runtime::Kubernetes, Some(_)) => containerd?.lookup(&d.path),
            // A pod's own cgroup.
            (Runtime::Kubernetes, None) => containerd?.pod(&d.path),
            _ => None,
        }
    }

    fn docker(&self, id: &str) -> Option<ContainerMeta> {
        let path = self
            .docker_root
            .join("containers")
            .join(id)
            .join("config.v2.json");
        let bytes = read_capped(&path)?;
        docker_config(&bytes, &self.env_keys)
            .inspect_err(|e| {
                tracing::debug!(path = %path.display(), error = %e, "unreadable container config");
            })
            .ok()
    }

    /// The agent's own containers, through the runtime's typed state.
    fn agent(&self, id: &str) -> Option<ContainerMeta> {
        let paths = crate::runtime::Paths::new(&self.state_dir);
        let st = crate::runtime::state::load(&paths, id)
            .inspect_err(|e| tracing::debug!(error = %e, "unreadable container state"))
            .ok()?;
        // The environment is in the OCI config the container runs, not in its state.
        let env = if self.env_keys.is_empty() {
            BTreeMap::new()
        } else {
            let config = crate::runtime::state::load_config(&paths, id)
                .inspect_err(|e| tracing::debug!(error = %e, "unreadable container config"))
                .ok();
            let env = config
                .as_ref()
                .and_then(|c| c.process().as_ref())
                .and_then(|p| p.env().as_ref());
            allowed_env(
                &self.env_keys,
                env.into_iter().flatten().map(String::as_str),
            )
        };
        Some(ContainerMeta {
            name: st.name,
            image: st.image,
            labels: st.labels.into_iter().take(MAX_LABELS).collect(),
            env,
            kube: None,
        })
    }
}

/// The file's bytes, or `None` when it cannot be read or is over [`MAX_CONFIG_BYTES`].
pub(crate) fn read_capped(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        tracing::warn!(path = %path.display(), "container config too large; ignored");
        return None;
    }
    Some(bytes)
}

/// What Docker's `config.v2.json` says of a container: `Name` (without its leading
/// `/`), `Config.Image` and the string values of `Config.Labels` (at most
/// [`MAX_LABELS`]), and the variables of `Config.Env` named in `env_keys`. Missing
/// or mistyped fields are empty; only bytes that are not JSON are an error.
pub fn docker_config(bytes: &[u8], env_keys: &[String]) -> serde_json::Result<ContainerMeta> {
    let v: serde_json::Value = serde_json::from_slice(bytes)?;
    let config = v.get("Config");
    Ok(ContainerMeta {
        name: v
            .get("Name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config
            .and_then(|c| c.get("Image"))
            .and_then(|i| i.as_str())
            .unwrap_or_default()
            .to_string(),
        labels: string_map(config.and_then(|c| c.get("Labels"))),
        env: allowed_env(env_keys, json_strings(config.and_then(|c| c.get("Env")))),
        kube: None,
    })
}

/// The allow-listed variables of `KEY=VALUE` strings (Docker's `Config.Env`, OCI
/// `process.env`); none when `keys` is empty.
pub(crate) fn allowed_env<'a>(
    keys: &[String],
    env: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, String> {
    if keys.is_empty() {
        return BTreeMap::new();
    }
    env.into_iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| keys.iter().any(|want| want == k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The strings of a JSON array (nothing when `v` is not one).
pub(crate) fn json_strings(v: Option<&serde_json::Value>) -> impl Iterator<Item = &str> {
    v.and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str())
}

fn string_map(v: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    v.and_then(|v| v.as_object())
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .take(MAX_LABELS)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const ID: &str = "a2c13bad3808eb2673f71b881f61ad18d6a24e509cdf4e1c48975bd036f41f6a";

    #[test]
    fn reads_docker_config() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("containers").join(ID);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("config.v2.json"),
            r#"{"Name":"/web","Config":{"Image":"nginx:1.25","Labels":{"team":"a\"b","n":3},
                "Env":["PATH=/bin","TIER=front=end","SECRET=hunter2","TIER2"]}}"#,
        )
        .unwrap();
        let mut src = MetadataSource::new(t.path(), t.path().join("none"));
        let d = Discovered {
            path: format!("/docker/{ID}"),
            runtime: Runtime::Docker,
            container_id: Some(ID.into()),
        };
        let m = src.lookup(&d).unwrap();
        assert_eq!(m.name, "web");
        assert_eq!(m.image, "nginx:1.25");
        assert_eq!(m.labels.get("team").map(String::as_str), Some("a\"b"));
        assert_eq!(m.labels.len(), 1, "non-string label values are dropped");
        assert!(m.env.is_empty(), "no environment unless asked for");
        src.env_keys = vec!["TIER".into(), "TIER2".into(), "MISSING".into()];
        let m = src.lookup(&d).unwrap();
        let env: Vec<(&str, &str)> = m
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [("TIER", "front=end")],
            "only the named ones, split at the first ="
        );
    }

    #[test]
    fn agent_containers_env_comes_from_their_oci_config() {
        let t = tempfile::tempdir().unwrap();
        let paths = crate::runtime::Paths::new(t.path());
        std::fs::create_dir_all(paths.container("c1")).unwrap();
        crate::runtime::state::save(
            &paths,
            &crate::runtime::state::ContainerState::for_test("c1", "web", "busybox"),
        )
        .unwrap();
        // The spec as the runtime writes it: oci-spec's defaults, with an environment.
        let mut spec = oci_spec::runtime::Spec::default();
        let mut process = spec.process().clone().unwrap();
        process.set_env(Some(
            ["PATH=/bin", "LANG=C.UTF-8", "TOKEN=s3cret"]
                .map(String::from)
                .to_vec(),
        ));
        spec.set_process(Some(process));
        spec.save(paths.container("c1").join("config.json"))
            .unwrap();
        let d = Discovered {
            path: "/agent/c1".into(),
            runtime: Runtime::Agent,
            container_id: Some("c1".into()),
        };
        let src = |keys: &[&str]| MetadataSource {
            env_keys: keys.iter().map(|k| k.to_string()).collect(),
            ..MetadataSource::new(t.path().join("docker"), t.path())
        };
        let m = src(&["LANG"]).lookup(&d).unwrap();
        assert_eq!(m.name, "web");
        assert_eq!(m.env.get("LANG").map(String::as_str), Some("C.UTF-8"));
        assert_eq!(m.env.len(), 1);
        assert!(src(&[]).lookup(&d).unwrap().env.is_empty());
    }

    #[test]
    fn missing_or_corrupt_config_is_none() {
        let t = tempfile::tempdir().unwrap();
        let src = MetadataSource {
            env_keys: vec!["A".into()],
            ..MetadataSource::new(t.path(), t.path())
        };
        let d = Discovered {
            path: format!("/docker/{ID}"),
            runtime: Runtime::Docker,
            container_id: Some(ID.into()),
        };
        assert_eq!(src.lookup(&d), None);
        let dir = t.path().join("containers").join(ID);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("config.v2.json"), "{\"Name\": ").unwrap();
        assert_eq!(src.lookup(&d), None);
    }
}
