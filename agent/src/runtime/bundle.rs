//! Foreign OCI bundles (`agent run --bundle DIR`): a `config.json` and the rootfs
//! it names, as `runc spec` makes them. The spec is read as it is and run by the
//! same child code as `agent launch`, which proves that the spec is the program.

use super::namespaces;
use super::state::{ContainerState, RootfsInfo, STATE_VERSION, Status};
use super::units::Network;
use super::{Error, IoContext, Result};
use crate::cgroup::Limits;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::path::{Path, PathBuf};

/// `agent run` options.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// `--name`.
    pub name: Option<String>,
    /// `-d`.
    pub detach: bool,
}

/// Reads `DIR/config.json`, with `root.path` made absolute (relative to the
/// bundle), and checks what this runtime cannot honour. `console` says whether
/// a terminal can be given (the OCI command line's `--console-socket`).
pub fn load(bundle: &Path, console: bool) -> Result<Spec> {
    let path = bundle.join("config.json");
    let mut spec = Spec::load(&path).map_err(|source| Error::Spec {
        what: format!("reading {}", path.display()),
        source,
    })?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("{}: no process", path.display())))?;
    if process.terminal() == Some(true) && !console {
        return Err(Error::Invalid(format!(
            "{}: process.terminal is true; agent run has no console (set it to false)",
            path.display()
        )));
    }
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::Invalid(format!(
            "{}: process.args is empty",
            path.display()
        )));
    }
    let mut root = spec
        .root()
        .clone()
        .ok_or_else(|| Error::Invalid(format!("{}: no root", path.display())))?;
    let abs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let abs = abs.canonicalize().at("find the bundle's rootfs", &abs)?;
    root.set_path(abs);
    spec.set_root(Some(root));
    namespaces::clone_flags(&spec)?;
    Ok(spec)
}

/// The state of a bundle's container before it starts.
pub fn initial_state(
    id: &str,
    name: &str,
    bundle: &Path,
    config: &Spec,
    detach: bool,
) -> ContainerState {
    let args = config
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    let resources = config.linux().as_ref().and_then(|l| l.resources().as_ref());
    ContainerState {
        version: STATE_VERSION,
        id: id.to_string(),
        name: name.to_string(),
        image: bundle.display().to_string(),
        image_id: String::new(),
        command: args,
        labels: config
            .annotations()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        status: Status::Created,
        created_at: super::now_unix(),
        started_at: None,
        finished_at: None,
        pid: None,
        supervisor_pid: None,
        supervisor_started: None,
        exit_code: None,
        signal: None,
        oom_killed: false,
        error: None,
        limits: Limits::from_resources(resources),
        cgroup: None,
        rootfs: RootfsInfo {
            merged: config
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_default(),
            ..RootfsInfo::default()
        },
        namespaces: Default::default(),
        network: if namespaces::has_namespace(config, LinuxNamespaceType::Network) {
            Network::None
        } else {
            Network::Host
        },
        hostname: config.hostname().clone().unwrap_or_default(),
        detached: detach,
        auto_remove: false,
        init: false,
        log_path: None,
        restart_policy: Default::default(),
        restart_count: 0,
        volumes: Vec::new(),
        tty: false,
        interactive: false,
        log_timestamps: false,
        oci: None,
    }
}
