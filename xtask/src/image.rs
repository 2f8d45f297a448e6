//! The agent's OCI image, written without a daemon: one layer holding the agent
//! (debug info stripped) and the shared libraries `ldd` names for it (glibc,
//! libseccomp, libgcc_s and the ELF interpreter), nothing else — no shell, no
//! package manager.
//!
//! Two outputs with the same blobs:
//! - `<out>/oci/`: an OCI image layout (what `skopeo copy oci:…` and `umoci` read);
//! - `<out>/agent-image.tar`: that layout as a tar, with Docker's `manifest.json`
//!   beside `index.json`, as `docker save` writes it since Docker 25. `docker load`
//!   reads the `manifest.json`; `podman load`, `ctr images import` and
//!   `agent image import` read either.
//!
//! Every timestamp is 0 and entries are sorted, so the same inputs give the same
//! digests.

use anyhow::{Context, bail};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the agent is in the image.
pub const AGENT_PATH: &str = "usr/local/bin/agent";
/// The port `agent serve` listens on by default.
pub const METRICS_PORT: u16 = 9810;

/// What [`build`] wrote.
#[derive(Debug, Clone)]
pub struct Image {
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// The tar (docker-archive and OCI layout in one).
    pub archive: PathBuf,
    /// The reference the image carries, e.g. `agent:0.1.0`.
    pub reference: String,
    /// `sha256:<hex>` of the config: the image id Docker and podman show.
    pub id: String,
    /// Bytes of the one (uncompressed) layer.
    pub layer_bytes: u64,
    /// Bytes of the layer gzip-compressed, as a registry would store it.
    pub layer_gzip_bytes: u64,
    /// Files in the layer (the agent and each library), as (image path, bytes).
    pub files: Vec<(String, u64)>,
}

/// Builds the image of the executable `agent` into `out` (created; an old layout
/// there is replaced), named `reference` (e.g. `agent:0.1.0`).
pub fn build(agent: &Path, out: &Path, reference: &str) -> anyhow::Result<Image> {
    let stage = out.join("stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    std::fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    // Debug info is for the developer's machine; symbols stay, for backtraces.
    let stripped = stage.join("agent");
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(agent)
        .status()
        .context("running strip (Debian package binutils)")?;
    if !status.success() {
        bail!("strip --strip-debug {} failed ({status})", agent.display());
    }
    let mut files: Vec<(String, PathBuf)> = vec![(AGENT_PATH.to_owned(), stripped)];
    for lib in crate::shared_libraries(agent)? {
        let in_image = lib
            .to_str()
            .context("library path is not UTF-8")?
            .trim_start_matches('/')
            .to_owned();
        files.push((in_image, lib));
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);

    let sizes = files
        .iter()
        .map(|(name, host)| {
            let len = std::fs::metadata(host).map(|m| m.len()).unwrap_or(0);
            (format!("/{name}"), len)
        })
        .collect();
    let layer = layer_tar(&files)?;
    let layer_gzip_bytes = gzip_len(&layer)?;
    let diff_id = format!("sha256:{}", hex_sha256(&layer));
    let config = serde_json::to_vec(&config_json(reference, &diff_id))?;
    let config_digest = format!("sha256:{}", hex_sha256(&config));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": diff_id,
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = format!("sha256:{}", hex_sha256(&manifest));
    let full_name = full_reference(reference);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                // containerd names the image by this; podman and the agent by ref.name.
                "io.containerd.image.name": full_name,
                "org.opencontainers.image.ref.name": reference,
            },
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }))?;
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let docker_manifest = serde_json::to_vec(&json!([{
        "Config": blob(&config_digest),
        "RepoTags": [reference],
        "Layers": [blob(&diff_id)],
    }]))?;
    let oci_layout = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();

    // The layout directory.
    let layout = out.join("oci");
    if layout.exists() {
        std::fs::remove_dir_all(&layout)
            .with_context(|| format!("removing {}", layout.display()))?;
    }
    let entries: Vec<(String, &[u8])> = vec![
        ("oci-layout".into(), &oci_layout),
        ("index.json".into(), &index),
        (blob(&config_digest), &config),
        (blob(&manifest_digest), &manifest),
        (blob(&diff_id), &layer),
    ];
    for (rel, data) in &entries {
        let p = layout.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
    }
    // The archive: the same files, plus Docker's manifest.json.
    let archive = out.join("agent-image.tar");
    let mut tar = tar::Builder::new(std::io::BufWriter::new(
        std::fs::File::create(&archive)
            .with_context(|| format!("creating {}", archive.display()))?,
    ));
    for dir in ["blobs/", "blobs/sha256/"] {
        append(&mut tar, dir, tar::EntryType::Directory, 0o755, &[])?;
    }
    for (rel, data) in entries
        .iter()
        .map(|(r, d)| (r.as_str(), *d))
        .chain([("manifest.json", docker_manifest.as_slice())])
    {
        append(&mut tar, rel, tar::EntryType::Regular, 0o644, data)?;
    }
    tar.into_inner()?.flush()?;
    std::fs::remove_dir_all(&stage).ok();

    Ok(Image {
        layout,
        archive,
        reference: reference.to_owned(),
        id: config_digest,
        layer_bytes: layer.len() as u64,
        layer_gzip_bytes,
        files: sizes,
    })
}

/// `agent:0.1.0` → `docker.io/library/agent:0.1.0`, as Docker and containerd
/// spell a short name in full.
pub fn full_reference(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or("");
    let has_registry = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_registry, reference.contains('/')) {
        (true, _) => reference.to_owned(),
        (false, true) => format!("docker.io/{reference}"),
        (false, false) => format!("docker.io/library/{reference}"),
    }
}

/// The image config: `agent serve` as the command, the metrics port, no
/// environment but PATH.
fn config_json(reference: &str, diff_id: &str) -> serde_json::Value {
    json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": [format!("/{AGENT_PATH}")],
            "Cmd": ["serve"],
            "Env": ["PATH=/usr/local/bin"],
            "ExposedPorts": {format!("{METRICS_PORT}/tcp"): {}},
            "Labels": {
                "org.opencontainers.image.title": "agent",
                "org.opencontainers.image.description":
                    "Node agent: cgroup accounting under cAdvisor's names, exec/mount events traced with eBPF",
                "org.opencontainers.image.ref.name": reference,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "cargo xtask image"}],
    })
}

/// The layer: every file at its image path, the directories above them, and
/// empty `/tmp` (1777) and `/run` (the control socket's directory).
fn layer_tar(files: &[(String, PathBuf)]) -> anyhow::Result<Vec<u8>> {
    let mut dirs = std::collections::BTreeSet::new();
    for (name, _) in files {
        let mut p = Path::new(name).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(format!("{}/", d.display()));
            p = d.parent();
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    for d in &dirs {
        append(&mut tar, d, tar::EntryType::Directory, 0o755, &[])?;
    }
    append(&mut tar, "run/", tar::EntryType::Directory, 0o755, &[])?;
    append(&mut tar, "tmp/", tar::EntryType::Directory, 0o1777, &[])?;
    for (name, host) in files {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        append(&mut tar, name, tar::EntryType::Regular, 0o755, &data)?;
    }
    Ok(tar.into_inner()?)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    tar.append_data(&mut header, path, data)
        .with_context(|| format!("adding {path} to the tar"))
}

fn gzip_len(data: &[u8]) -> anyhow::Result<u64> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data)?;
    Ok(gz.finish()?.len() as u64)
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::full_reference;

    #[test]
    fn short_names_are_spelled_in_full() {
        assert_eq!(full_reference("agent:1"), "docker.io/library/agent:1");
        assert_eq!(full_reference("me/agent:1"), "docker.io/me/agent:1");
        assert_eq!(full_reference("localhost/agent:1"), "localhost/agent:1");
        assert_eq!(
            full_reference("registry.example:5000/a/agent:1"),
            "registry.example:5000/a/agent:1"
        );
    }
}
