//! `agent inspect`: everything known about a container, as JSON.

use super::state_dir::StateDir;
use crate::runtime::namespaces::namespace_inodes;
use crate::runtime::state;
use anyhow::Context;
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    state: StateDir,
    /// Container id, id prefix or name.
    container: String,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let paths = args.state.open()?;
    let st = state::find(&paths, &args.container)?;
    let mut doc = serde_json::to_value(&st)?;
    let config_path = paths.container(&st.id).join("config.json");
    let config: serde_json::Value = match std::fs::read(&config_path) {
        Ok(data) => serde_json::from_slice(&data)
            .with_context(|| format!("reading {}", config_path.display()))?,
        Err(_) => serde_json::Value::Null,
    };
    let lower_file = st
        .rootfs
        .upperdir
        .parent()
        .map(|d| d.join("lower"))
        .and_then(|p| std::fs::read_to_string(p).ok());
    let obj = doc
        .as_object_mut()
        .context("a container's state is not a JSON object")?;
    obj.insert("config".into(), config);
    obj.insert("running".into(), st.is_running().into());
    if let Some(lower) = lower_file {
        obj.insert("overlay_lower".into(), lower.trim().into());
    }
    if let (true, Some(pid)) = (st.is_running(), st.pid) {
        obj.insert(
            "live_namespaces".into(),
            serde_json::to_value(namespace_inodes(pid))?,
        );
    }
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}
