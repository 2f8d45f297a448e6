//! Everything known about one of the agent's containers, as one JSON document:
//! its recorded state, its OCI `config.json`, whether it runs, its overlay's
//! `lower` file and its live namespaces. What `agent inspect` prints and what the
//! web UI's container page shows parts of.

use super::namespaces::namespace_inodes;
use super::state::ContainerState;
use super::{Error, Paths, Result};

/// The inspect document of `st` (stored under `paths`).
pub fn document(paths: &Paths, st: &ContainerState) -> Result<serde_json::Value> {
    let invalid = |what: &str, source: serde_json::Error| Error::Encode {
        what: what.to_string(),
        source,
    };
    let mut doc = serde_json::to_value(st).map_err(|e| invalid("container state", e))?;
    let config_path = super::state::config_path(paths, &st.id);
    let config: serde_json::Value = match std::fs::read(&config_path) {
        Ok(data) => serde_json::from_slice(&data)
            .map_err(|e| invalid(&format!("reading {}", config_path.display()), e))?,
        Err(_) => serde_json::Value::Null,
    };
    let lower_file = st
        .rootfs
        .upperdir
        .parent()
        .map(|d| d.join("lower"))
        .and_then(|p| std::fs::read_to_string(p).ok());
    let Some(obj) = doc.as_object_mut() else {
        return Err(Error::Invalid(
            "a container's state is not a JSON object".into(),
        ));
    };
    obj.insert("config".into(), config);
    obj.insert("running".into(), st.is_running().into());
    if let Some(lower) = lower_file {
        obj.insert("overlay_lower".into(), lower.trim().into());
    }
    if let (true, Some(pid)) = (st.is_running(), st.pid) {
        let live =
            serde_json::to_value(namespace_inodes(pid)).map_err(|e| invalid("namespaces", e))?;
        obj.insert("live_namespaces".into(), live);
    }
    Ok(doc)
}
