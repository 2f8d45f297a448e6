//! containerd's containers, in every containerd namespace: which cgroup each
//! owns, and its name, image and labels from containerd's own record.
//!
//! Two sources, each for what only it has, both off the scrape path:
//! - the shim bundles under containerd's state directory
//!   (`<state>/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`): a
//!   directory listing says which containers run now, and each bundle's
//!   `linux.cgroupsPath` says which cgroup is theirs (read once per container);
//! - containerd's API on its socket (`containers.v1.Containers/Get`): the image
//!   and the labels are kept only in containerd's metadata store, so a background
//!   thread asks for each new container once and caches the answer. Reading the
//!   store's bbolt file directly would race containerd's writes.
//!
//! Names follow what kubelet's `/metrics/cadvisor` shows: a container made by
//! containerd's CRI plugin (it carries the `io.kubernetes.pod.*` labels kubelet
//! sets) is `k8s_<container>_<pod>_<namespace>_<pod uid>_<attempt>`, its pod
//! sandbox `k8s_POD_…_0` (cAdvisor's containerd handler), and both get `pod`,
//! `namespace` and `container` labels (empty `container` for the sandbox, as
//! kubelet gives). Any other container (`ctr run`) is named by its containerd id.

use super::metadata::{
    ContainerMeta, KubeLabels, MAX_LABELS, allowed_env, json_strings, read_capped,
};
use crate::cgroup::discovery::{Runtime, classify};
use containerd_client::services::v1::GetContainerRequest;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::tonic;
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The v2 runtime's bundles, under containerd's state directory.
const TASK_DIR: &str = "io.containerd.runtime.v2.task";
/// kubelet's labels on the containers and sandboxes it asks the CRI for.
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_UID: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// containerd's CRI plugin: `sandbox` or `container`, and its own record of the
/// CRI request (where the restart attempt is).
const CRI_KIND: &str = "io.cri-containerd.kind";
const CRI_METADATA: &str = "io.cri-containerd.container.metadata";
/// One API call, at most.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A failed lookup is tried again after this, doubling up to RETRY_MAX.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Containers tracked at most (a bound on memory against a flood of bundles).
const MAX_TASKS: usize = 65536;

/// containerd's containers as the agent knows them; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Containerd {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// containerd's `state` directory (`/run/containerd`).
    state_dir: PathBuf,
    /// containerd's API socket (`/run/containerd/containerd.sock`).
    socket: PathBuf,
    /// The environment variables kept (`--container-env`).
    env_keys: Vec<String>,
    tasks: Mutex<Tasks>,
    /// Wakes the fetcher thread when a container needs looking up.
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Tasks {
    by_key: HashMap<Key, Task>,
    /// cgroup path → container.
    by_cgroup: HashMap<String, Key>,
    fetcher: bool,
}

/// A container: (containerd namespace, id).
type Key = (String, String);

#[derive(Debug)]
struct Task {
    cgroup: String,
    meta: Fetch,
}

#[derive(Debug)]
enum Fetch {
    /// Not known yet: ask at `next`.
    Pending {
        next: Instant,
        backoff: Duration,
    },
    Done(ContainerMeta),
    /// Another runtime's container run through containerd (Docker's, in the
    /// `moby` namespace): that runtime's own records name it; never fetched.
    Elsewhere,
}

impl Containerd {
    /// containerd with its state under `state_dir` and its API on `socket`,
    /// keeping the environment variables named in `env_keys`.
    pub fn new(
        state_dir: impl Into<PathBuf>,
        socket: impl Into<PathBuf>,
        env_keys: &[String],
    ) -> Self {
        Containerd {
            shared: Arc::new(Shared {
                state_dir: state_dir.into(),
                socket: socket.into(),
                env_keys: env_keys.to_vec(),
                tasks: Mutex::new(Tasks::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// Lists the running containers (their bundles) and returns each one's
    /// cgroup path and id. A new bundle costs one read of its `config.json`; a
    /// new container's metadata is asked for in the background. Without
    /// containerd this is one failed `read_dir`.
    pub fn scan(&self) -> Vec<(String, String)> {
        let live = list_bundles(&self.shared.state_dir.join(TASK_DIR));
        let mut tasks = self.shared.tasks.lock();
        let tasks = &mut *tasks;
        let live_keys: HashSet<&Key> = live.iter().collect();
        let before = tasks.by_key.len();
        tasks.by_key.retain(|k, _| live_keys.contains(k));
        let mut changed = tasks.by_key.len() != before;
        let mut wanted = false;
        for key in &live {
            if tasks.by_key.contains_key(key) || tasks.by_key.len() >= MAX_TASKS {
                continue;
            }
            let bundle = self
                .shared
                .state_dir
                .join(TASK_DIR)
                .join(&key.0)
                .join(&key.1);
            let Some(cgroup) = read_capped(&bundle.join("config.json"))
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .as_ref()
                .and_then(|c| c.pointer("/linux/cgroupsPath"))
                .and_then(|p| p.as_str())
                .and_then(cgroup_path)
            else {
                // Being written, or not a Linux container: looked at again next scan.
                continue;
            };
            let meta = match classify(&cgroup) {
                Some((runtime, _)) if runtime != Runtime::Kubernetes => Fetch::Elsewhere,
                _ => {
                    wanted = true;
                    Fetch::Pending {
                        next: Instant::now(),
                        backoff: RETRY_MIN,
                    }
                }
            };
            tasks.by_key.insert(key.clone(), Task { cgroup, meta });
            changed = true;
        }
        if changed {
            tasks.by_cgroup = tasks
                .by_key
                .iter()
                .map(|(k, t)| (t.cgroup.clone(), k.clone()))
                .collect();
        }
        if wanted {
            if !tasks.fetcher {
                tasks.fetcher = spawn_fetcher(Arc::downgrade(&self.shared));
            }
            self.shared.wake.notify_one();
        }
        tasks
            .by_key
            .iter()
            .map(|(k, t)| (t.cgroup.clone(), k.1.clone()))
            .collect()
    }

    /// The metadata of the container whose cgroup is `path`, once fetched.
    pub fn lookup(&self, path: &str) -> Option<ContainerMeta> {
        let tasks = self.shared.tasks.lock();
        let key = tasks.by_cgroup.get(path)?;
        match &tasks.by_key.get(key)?.meta {
            Fetch::Done(m) => Some(m.clone()),
            Fetch::Pending { .. } | Fetch::Elsewhere => None,
        }
    }

    /// A Kubernetes pod's own cgroup (`…/pod<uid>`): named after the pod of the
    /// containers below it, as kubelet names it (pod and namespace, no
    /// container, name or image).
    pub fn pod(&self, path: &str) -> Option<ContainerMeta> {
        let tasks = self.shared.tasks.lock();
        let kube = tasks.by_key.values().find_map(|t| {
            let below = t
                .cgroup
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('/'));
            match &t.meta {
                Fetch::Done(m) if below => m.kube.clone(),
                _ => None,
            }
        })?;
        Some(ContainerMeta {
            kube: Some(KubeLabels {
                container: String::new(),
                ..kube
            }),
            ..ContainerMeta::default()
        })
    }
}

#[cfg(test)]
impl Containerd {
    /// As if containerd had answered for container `id` of namespace `ns`.
    pub(crate) fn answer_for_test(&self, ns: &str, id: &str, meta: ContainerMeta) {
        let mut tasks = self.shared.tasks.lock();
        if let Some(t) = tasks.by_key.get_mut(&(ns.to_string(), id.to_string())) {
            t.meta = Fetch::Done(meta);
        }
    }
}

/// `(namespace, id)` of every bundle directory. Names that are not UTF-8 are
/// not containerd's (it refuses them): skipped.
fn list_bundles(dir: &Path) -> Vec<Key> {
    let mut out = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(dir) else {
        return out;
    };
    for ns in namespaces.flatten() {
        let Ok(ns_name) = ns.file_name().into_string() else {
            continue;
        };
        let Ok(ids) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for id in ids.flatten() {
            if let Ok(id) = id.file_name().into_string() {
                out.push((ns_name.clone(), id));
            }
        }
    }
    out
}

/// The cgroup path (relative to the hierarchy's root, leading `/`) of an OCI
/// `linux.cgroupsPath`, as runc reads it: `/a/b` for the cgroupfs driver, or
/// `slice:prefix:name` for the systemd driver (`/system.slice/prefix-name.scope`,
/// a nested slice `a-b.slice` expanded to `/a.slice/a-b.slice`).
pub fn cgroup_path(spec: &str) -> Option<String> {
    if spec.is_empty() {
        return None;
    }
    let parts: Vec<&str> = spec.split(':').collect();
    if let [slice, prefix, name] = parts[..]
        && !spec.starts_with('/')
    {
        // Unit names: no `/` (a path with one would be another cgroup).
        if spec.contains('/') || name.is_empty() {
            return None;
        }
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        let mut path = String::new();
        if slice != "-.slice" {
            let stem = slice.strip_suffix(".slice")?;
            let mut acc = String::new();
            for part in stem.split('-') {
                if part.is_empty() {
                    return None;
                }
                if !acc.is_empty() {
                    acc.push('-');
                }
                acc.push_str(part);
                path.push('/');
                path.push_str(&acc);
                path.push_str(".slice");
            }
        }
        let unit = if name.ends_with(".slice") {
            name.to_string()
        } else if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        return clean_path(&format!("{path}/{unit}"));
    }
    clean_path(spec)
}

/// `path` as the cgroup walker spells it (`/a/b`: one `/` between components,
/// none at the end), or `None` for the root or a path that climbs (`.`, `..`):
/// it becomes a label and is joined to the hierarchy's root.
fn clean_path(path: &str) -> Option<String> {
    let mut out = String::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return None;
        }
        out.push('/');
        out.push_str(c);
    }
    (!out.is_empty()).then_some(out)
}

/// Starts the thread that asks containerd for new containers' records; it ends
/// when the last [`Containerd`] is dropped. False when no thread could start.
fn spawn_fetcher(shared: Weak<Shared>) -> bool {
    std::thread::Builder::new()
        .name("containerd-meta".into())
        .spawn(move || fetch_loop(shared))
        .inspect_err(|e| tracing::warn!(error = %e, "cannot start the containerd metadata thread"))
        .is_ok()
}

fn fetch_loop(weak: Weak<Shared>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "no runtime for the containerd client");
            return;
        }
    };
    let mut client: Option<ContainersClient<tonic::transport::Channel>> = None;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let due: Vec<Key> = {
            let mut tasks = shared.tasks.lock();
            let now = Instant::now();
            let due = |tasks: &Tasks| -> Vec<Key> {
                tasks
                    .by_key
                    .iter()
                    .filter(|(_, t)| matches!(t.meta, Fetch::Pending { next, .. } if next <= now))
                    .map(|(k, _)| k.clone())
                    .collect()
            };
            let mut keys = due(&tasks);
            if keys.is_empty() {
                let soonest = tasks
                    .by_key
                    .values()
                    .filter_map(|t| match t.meta {
                        Fetch::Pending { next, .. } => Some(next.saturating_duration_since(now)),
                        Fetch::Done(_) | Fetch::Elsewhere => None,
                    })
                    .min()
                    .unwrap_or(Duration::from_secs(5))
                    .min(Duration::from_secs(5));
                shared.wake.wait_for(&mut tasks, soonest);
                keys = due(&tasks);
            }
            keys
        };
        for key in due {
            let result = rt.block_on(fetch(&shared.socket, &mut client, &key, &shared.env_keys));
            let mut tasks = shared.tasks.lock();
            let Some(task) = tasks.by_key.get_mut(&key) else {
                continue;
            };
            task.meta = match (result, &task.meta) {
                (Ok(meta), _) => Fetch::Done(meta),
                (Err(e), Fetch::Pending { backoff, .. }) => {
                    tracing::debug!(namespace = %key.0, id = %key.1, error = %e, "containerd lookup failed");
                    if e.is_transport() {
                        client = None;
                    }
                    Fetch::Pending {
                        next: Instant::now() + *backoff,
                        backoff: (*backoff * 2).min(RETRY_MAX),
                    }
                }
                // Answered meanwhile (not by this thread): keep that.
                (Err(_), Fetch::Done(m)) => Fetch::Done(m.clone()),
                (Err(_), Fetch::Elsewhere) => Fetch::Elsewhere,
            };
        }
    }
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("connecting to {0}: {1}")]
    Connect(PathBuf, #[source] tonic::transport::Error),
    #[error("containerd answered: {0}")]
    Status(#[from] tonic::Status),
    #[error("no answer within {CALL_TIMEOUT:?}")]
    Timeout,
    #[error("namespace {0:?} is not a valid header value")]
    Namespace(String),
    #[error("containerd returned no container")]
    Empty,
}

impl FetchError {
    /// The connection is bad: make a new one next time.
    fn is_transport(&self) -> bool {
        matches!(self, FetchError::Connect(..) | FetchError::Timeout)
    }
}

async fn fetch(
    socket: &Path,
    client: &mut Option<ContainersClient<tonic::transport::Channel>>,
    (ns, id): &Key,
    env_keys: &[String],
) -> Result<ContainerMeta, FetchError> {
    let c = match client {
        Some(c) => c,
        None => {
            let channel = tokio::time::timeout(CALL_TIMEOUT, containerd_client::connect(socket))
                .await
                .map_err(|_| FetchError::Timeout)?
                .map_err(|e| FetchError::Connect(socket.to_path_buf(), e))?;
            client.insert(ContainersClient::new(channel))
        }
    };
    let mut req = tonic::Request::new(GetContainerRequest { id: id.clone() });
    let ns_value = ns.parse().map_err(|_| FetchError::Namespace(ns.clone()))?;
    req.metadata_mut().insert("containerd-namespace", ns_value);
    req.set_timeout(CALL_TIMEOUT);
    let container = tokio::time::timeout(CALL_TIMEOUT, c.get(req))
        .await
        .map_err(|_| FetchError::Timeout)??
        .into_inner()
        .container
        .ok_or(FetchError::Empty)?;
    // The OCI spec (JSON) is parsed only when environment variables are wanted.
    let spec = container
        .spec
        .as_ref()
        .filter(|_| !env_keys.is_empty())
        .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.value).ok());
    let attempt = container
        .extensions
        .get(CRI_METADATA)
        .and_then(|a| serde_json::from_slice::<serde_json::Value>(&a.value).ok())
        .and_then(|m| m.pointer("/Metadata/Config/metadata/attempt")?.as_u64())
        .unwrap_or(0);
    let env = allowed_env(
        env_keys,
        json_strings(spec.as_ref().and_then(|s| s.pointer("/process/env"))),
    );
    Ok(meta_of(
        &container.id,
        container.image,
        container.labels.into_iter().collect(),
        attempt,
        env,
    ))
}

/// A containerd container's metadata from its record: see the module docs.
fn meta_of(
    id: &str,
    image: String,
    labels: BTreeMap<String, String>,
    attempt: u64,
    env: BTreeMap<String, String>,
) -> ContainerMeta {
    let label = |k: &str| labels.get(k).cloned();
    let kube = match (label(POD_NAME), label(POD_NAMESPACE)) {
        (Some(pod), Some(namespace)) => Some(KubeLabels {
            pod,
            namespace,
            container: label(CONTAINER_NAME).unwrap_or_default(),
        }),
        _ => None,
    };
    let name = match &kube {
        Some(k) => {
            let sandbox = label(CRI_KIND).as_deref() == Some("sandbox");
            let (container, attempt) = if sandbox {
                ("POD", 0)
            } else {
                (k.container.as_str(), attempt)
            };
            let uid = label(POD_UID).unwrap_or_default();
            format!("k8s_{container}_{}_{}_{uid}_{attempt}", k.pod, k.namespace)
        }
        None => id.to_string(),
    };
    ContainerMeta {
        name,
        image,
        labels: labels.into_iter().take(MAX_LABELS).collect(),
        env,
        kube,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_paths_as_runc_reads_them() {
        let cases = [
            ("/agentns/web", Some("/agentns/web")),
            (
                "/kubepods/besteffort/pod12/abc/",
                Some("/kubepods/besteffort/pod12/abc"),
            ),
            ("default/x", Some("/default/x")),
            (
                "system.slice:cri-containerd:abc",
                Some("/system.slice/cri-containerd-abc.scope"),
            ),
            (
                "kubepods-besteffort-pod12.slice:cri-containerd:abc",
                Some(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope",
                ),
            ),
            (
                ":cri-containerd:abc",
                Some("/system.slice/cri-containerd-abc.scope"),
            ),
            ("-.slice:p:abc", Some("/p-abc.scope")),
            ("", None),
            ("/", None),
            ("/a/../b", None),
            ("//a//b/", Some("/a/b")),
            ("system.slice:p:a/../../etc", None),
            ("x/../y.slice:p:z", None),
            ("system.slice:p:", None),
            ("system.slice:p:..", Some("/system.slice/p-...scope")),
            ("bad-.slice:p:x", None),
            ("noslice:p:x", None),
        ];
        for (spec, want) in cases {
            assert_eq!(cgroup_path(spec).as_deref(), want, "{spec:?}");
        }
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn named_as_kubelet_names_them() {
        let pod = [
            (POD_NAME, "web-0"),
            (POD_NAMESPACE, "shop"),
            (POD_UID, "u-1"),
        ];
        let mut c = labels(&pod);
        c.insert(CONTAINER_NAME.into(), "nginx".into());
        c.insert(CRI_KIND.into(), "container".into());
        let m = meta_of(
            "abc",
            "docker.io/library/nginx:1".into(),
            c,
            2,
            BTreeMap::new(),
        );
        assert_eq!(m.name, "k8s_nginx_web-0_shop_u-1_2");
        assert_eq!(m.image, "docker.io/library/nginx:1");
        assert_eq!(
            m.kube,
            Some(KubeLabels {
                pod: "web-0".into(),
                namespace: "shop".into(),
                container: "nginx".into()
            })
        );
        let mut s = labels(&pod);
        s.insert(CRI_KIND.into(), "sandbox".into());
        let m = meta_of("def", "pause:1".into(), s, 5, BTreeMap::new());
        assert_eq!(m.name, "k8s_POD_web-0_shop_u-1_0");
        assert_eq!(
            m.kube.unwrap().container,
            "",
            "kubelet gives the sandbox no container"
        );
        let m = meta_of(
            "plain",
            "busybox:1".into(),
            labels(&[("a", "b")]),
            0,
            BTreeMap::new(),
        );
        assert_eq!((m.name.as_str(), m.kube), ("plain", None));
        let many: BTreeMap<String, String> =
            (0..1000).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(
            meta_of("x", String::new(), many, 0, BTreeMap::new())
                .labels
                .len(),
            MAX_LABELS
        );
    }

    #[test]
    fn bundles_give_cgroups_and_pods_are_named_from_their_containers() {
        let t = tempfile::tempdir().unwrap();
        let write = |ns: &str, id: &str, config: &str| {
            let dir = t.path().join(TASK_DIR).join(ns).join(id);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config.json"), config).unwrap();
        };
        write(
            "k8s.io",
            "c1",
            r#"{"linux":{"cgroupsPath":"/kubepods/pod9/c1"}}"#,
        );
        write("other", "web", r#"{"linux":{"cgroupsPath":"/other/web"}}"#);
        write("other", "broken", r#"{"linux":"#);
        let docker_id = "a".repeat(64);
        write(
            "moby",
            &docker_id,
            &format!(r#"{{"linux":{{"cgroupsPath":"/docker/{docker_id}"}}}}"#),
        );
        use std::os::unix::ffi::OsStrExt;
        std::fs::create_dir_all(
            t.path()
                .join(TASK_DIR)
                .join("other")
                .join(std::ffi::OsStr::from_bytes(b"\xff")),
        )
        .unwrap();
        // No socket: nothing is fetched, the cgroups are known all the same.
        let c = Containerd::new(t.path(), t.path().join("none.sock"), &[]);
        let mut found = c.scan();
        found.sort();
        assert_eq!(
            found,
            [
                (format!("/docker/{docker_id}"), docker_id.clone()),
                ("/kubepods/pod9/c1".to_string(), "c1".to_string()),
                ("/other/web".to_string(), "web".to_string())
            ]
        );
        assert!(
            matches!(
                c.shared.tasks.lock().by_key[&("moby".to_string(), docker_id.clone())].meta,
                Fetch::Elsewhere
            ),
            "Docker's containers are named from Docker's files, not fetched"
        );
        assert_eq!(c.lookup("/other/web"), None, "not fetched (no containerd)");
        // As if the fetcher had answered.
        {
            let mut tasks = c.shared.tasks.lock();
            let key = ("k8s.io".to_string(), "c1".to_string());
            let mut l = labels(&[
                (POD_NAME, "p"),
                (POD_NAMESPACE, "n"),
                (CONTAINER_NAME, "app"),
            ]);
            l.insert(CRI_KIND.into(), "container".into());
            tasks.by_key.get_mut(&key).unwrap().meta =
                Fetch::Done(meta_of("c1", "img".into(), l, 0, BTreeMap::new()));
        }
        assert_eq!(c.lookup("/kubepods/pod9/c1").unwrap().image, "img");
        let pod = c.pod("/kubepods/pod9").unwrap();
        assert_eq!((pod.name.as_str(), pod.image.as_str()), ("", ""));
        assert_eq!(
            pod.kube,
            Some(KubeLabels {
                pod: "p".into(),
                namespace: "n".into(),
                container: String::new()
            })
        );
        assert_eq!(c.pod("/kubepods/pod"), None, "a prefix is not a parent");
        // A bundle that goes is forgotten.
        std::fs::remove_dir_all(t.path().join(TASK_DIR).join("k8s.io/c1")).unwrap();
        assert_eq!(c.scan().len(), 2);
        assert_eq!(c.lookup("/kubepods/pod9/c1"), None);
    }
}
