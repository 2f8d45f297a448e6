//! The image store, laid out like Docker's overlay2 driver:
//!
//! ```text
//! <state>/overlay2/<chain-id>/diff   the layer's files, whiteouts as 0:0 char devices,
//!                                    opaque dirs with trusted.overlay.opaque=y
//! <state>/overlay2/<chain-id>/link   the layer's short link name
//! <state>/overlay2/<chain-id>/lower  its parents as "l/<short>:l/<short>", top-most first
//! <state>/overlay2/l/<short>         -> ../<chain-id>/diff
//! <state>/images/<id>.json           one [`ImageRecord`] per image
//! ```
//!
//! A layer is identified by its OCI chain id (`sha256(parent-chain + " " + diff-id)`),
//! so identical layer stacks are unpacked once and shared between images. A layer is
//! unpacked into `tmp/`, completed there, and renamed into place only after its
//! digests check out. What an import killed half-way leaves (scratch, layers no
//! record names, short links to nowhere) the next import sweeps, under the store
//! lock, before it starts; a failed import sweeps its own layers.
//!
//! This file is the public face: importing (which source, which layers, which record),
//! listing, resolving and removing images. The rooms behind it:
//!
//! - `reference`: image references and the names imports give images.
//! - `archive`: what an archive holds; OCI layouts and `docker save` archives read
//!   down to one image's config and layer blobs.
//! - `unpack`: one layer's tar stream into a `diff` directory, whiteouts and digests.
//! - `store`: `overlay2/` layers, short links, and the records in `images/`.
//! - `pull`: an image from a registry, through `unpack` and `store` like an import.

mod archive;
mod files;
pub(crate) mod fuzzing;
pub mod pull;
mod reference;
mod safe_paths;
mod store;
mod unpack;

pub use reference::{
    RegistryRef, normalize_reference, parse_registry_reference, validate_reference,
};
pub(crate) use store::sweep;
pub use store::{chain_id, layer_dir, lower_links, register_layer, remove_layer_dir};

use super::{Error, IoContext, Paths, Result, sys};
use archive::SourceKind;
use oci_spec::image::ImageConfiguration;
use reference::default_name;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The parts of an image's config that a launch honours.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `KEY=VALUE` environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Default arguments.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Entrypoint prepended to the command.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Working directory (empty: `/`).
    #[serde(default)]
    pub working_dir: String,
    /// User spec (`name`, `uid`, `uid:gid`…; empty: root).
    #[serde(default)]
    pub user: String,
    /// Image labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One image in the store: `images/<hex id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<config digest>`.
    pub id: String,
    /// References (`name:tag`) pointing at it.
    pub names: Vec<String>,
    /// Layer chain ids, bottom-most first.
    pub layers: Vec<String>,
    /// Run configuration from the image config.
    pub config: RunConfig,
    /// Import time, Unix seconds.
    pub imported_at: f64,
    /// Unpacked size in bytes (sum of layer diffs).
    pub size: u64,
    /// The diff id each layer blob unpacked to, by the blob's digest (as a
    /// registry's manifest names it; Docker's diffid-by-digest): how a pull tells
    /// which layers the store has before the image config arrives. Empty for
    /// records of rootfs imports and of older agents.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub diff_ids_by_blob: BTreeMap<String, String>,
}

impl ImageRecord {
    /// The id without `sha256:`.
    pub fn hex_id(&self) -> &str {
        self.id.strip_prefix("sha256:").unwrap_or(&self.id)
    }
}

/// Progress reporting for long imports.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// `PATH` given to containers whose image sets none.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Imports an image from an OCI layout (`DIR` or `DIR:TAG`), a `docker save` archive,
/// an OCI archive, or a rootfs tarball/directory, naming it `name` (or a name from the
/// source). Returns the stored record.
pub fn import(
    paths: &Paths,
    source: &Path,
    name: Option<&str>,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    super::ensure_layout(paths)?;
    if let Some(n) = name {
        validate_reference(n)?;
    }
    let (source, tag) = split_source_tag(source);
    let meta = std::fs::metadata(&source).at("read image source", &source)?;
    if !meta.is_dir() && !meta.is_file() {
        // Reading /dev/zero or a FIFO as a tarball would never end.
        return Err(Error::Invalid(format!(
            "{}: a {}, not an image archive or directory",
            source.display(),
            safe_paths::kind_of(meta.file_type())
        )));
    }
    let _lock = sys::lock_exclusive(&paths.lock_file())?;
    let swept = store::sweep(paths)?;
    if swept > 0 {
        progress(&format!(
            "removed {swept} leftovers of an interrupted import from {}",
            paths.root().display()
        ));
    }
    let imported = import_source(paths, &source, &meta, tag.as_deref(), name, progress);
    if imported.is_err() {
        // Layers of this image that made it into overlay2/ before the failure are
        // named by no record: leave nothing half-created.
        let _ = store::sweep(paths);
    }
    imported
}

/// The body of [`import`], run under the store lock.
fn import_source(
    paths: &Paths,
    source: &Path,
    meta: &std::fs::Metadata,
    tag: Option<&str>,
    name: Option<&str>,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    let scratch = Scratch::new(paths)?;
    if meta.is_dir() {
        return import_dir(paths, source, source, tag, name, &scratch, progress);
    }
    match archive::sniff_archive(source)? {
        SourceKind::RootfsTar => {
            let file = std::fs::File::open(source).at("open", source)?;
            import_rootfs_tar(paths, file, source, default_name(source, name), progress)
        }
        _ => {
            let dir = scratch.path.join("archive");
            progress(&format!("extracting {}", source.display()));
            archive::extract_plain(source, &dir)?;
            import_dir(paths, &dir, source, tag, name, &scratch, progress)
                .map_err(|e| relabel(e, source))
        }
    }
}

/// Names the archive the user gave, not the scratch copy, in a corrupt-data error.
fn relabel(e: Error, archive: &Path) -> Error {
    match e {
        Error::Corrupt { reason, source, .. } => Error::Corrupt {
            path: archive.to_path_buf(),
            reason,
            source,
        },
        e => e,
    }
}

/// A verdict that the image data at `path` is broken.
fn corrupt(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
        source: None,
    }
}

/// Like [`corrupt`], for a verdict that rests on a reader's error (kept as the source).
fn corrupt_by(
    path: &Path,
    reason: impl std::fmt::Display,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
        source: Some(Box::new(source)),
    }
}

fn import_dir(
    paths: &Paths,
    dir: &Path,
    origin: &Path,
    tag: Option<&str>,
    name: Option<&str>,
    scratch: &Scratch,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    let image = match archive::dir_kind(dir) {
        SourceKind::OciLayout => archive::read_oci_layout(dir, origin, tag)?,
        SourceKind::DockerArchive => archive::read_docker_archive(dir)?,
        SourceKind::RootfsTar => {
            let tar_path = scratch.path.join("rootfs.tar");
            progress(&format!("packing directory {}", dir.display()));
            archive::pack_dir(dir, &tar_path)?;
            let file = std::fs::File::open(&tar_path).at("open", &tar_path)?;
            return import_rootfs_tar(paths, file, origin, default_name(origin, name), progress);
        }
    };
    let diff_ids = image.config.rootfs().diff_ids().clone();
    let (layers, diff_ids_by_blob) = import_layers(paths, &image.layers, &diff_ids, progress)?;
    let name = name
        .map(normalize_reference)
        .or(image.name)
        .unwrap_or_else(|| default_name(origin, None));
    save_record(
        paths,
        NewRecord {
            id: image.id,
            name,
            layers,
            diff_ids_by_blob,
            config: run_config_from(&image.config),
        },
    )
}

/// A scratch directory under `tmp/`, removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(paths: &Paths) -> Result<Self> {
        let path = paths
            .tmp()
            .join(format!("import-{}", &super::random_id()?[..16]));
        std::fs::create_dir_all(&path).at("create directory", &path)?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `DIR:TAG` → (`DIR`, `TAG`) when `DIR:TAG` itself does not exist.
fn split_source_tag(source: &Path) -> (PathBuf, Option<String>) {
    if source.exists() {
        return (source.to_path_buf(), None);
    }
    let s = source.to_string_lossy();
    if let Some((base, tag)) = s.rsplit_once(':')
        && !tag.contains('/')
        && Path::new(base).exists()
    {
        return (PathBuf::from(base), Some(tag.to_string()));
    }
    (source.to_path_buf(), None)
}

fn run_config_from(cfg: &ImageConfiguration) -> RunConfig {
    let Some(c) = cfg.config() else {
        return RunConfig::default();
    };
    RunConfig {
        env: c.env().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().unwrap_or_default(),
        user: c.user().clone().unwrap_or_default(),
        labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
    }
}

/// Imports the layers listed by `diff_ids` from `blobs`, bottom-most first; returns
/// their chain ids, and the diff id of each blob digest unpacked and checked here
/// (for [`ImageRecord::diff_ids_by_blob`]; blobs of layers already present were
/// not read, so the layout's word on them is not taken).
fn import_layers(
    paths: &Paths,
    blobs: &[archive::LayerBlob],
    diff_ids: &[String],
    progress: Progress<'_>,
) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    if blobs.len() != diff_ids.len() {
        return Err(corrupt(
            &blobs.first().map(|b| b.path()).unwrap_or_default(),
            format!(
                "{} layers but {} diff ids in the image config",
                blobs.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut chains: Vec<String> = Vec::new();
    let mut seen = BTreeMap::new();
    for (i, (blob, diff_id)) in blobs.iter().zip(diff_ids).enumerate() {
        let parent = chains.last().cloned();
        let chain = chain_id(parent.as_deref(), diff_id);
        let short = &diff_id[diff_id.len().saturating_sub(64)..][..12.min(diff_id.len())];
        if layer_dir(paths, &chain).join("link").exists() {
            progress(&format!(
                "layer {}/{} {short}: already present",
                i + 1,
                blobs.len()
            ));
            chains.push(chain);
            continue;
        }
        let (file, size) = blob.open()?;
        progress(&format!(
            "layer {}/{} {short}: unpacking {:.1} MiB",
            i + 1,
            blobs.len(),
            size as f64 / (1024.0 * 1024.0)
        ));
        let expected = unpack::Expected {
            blob_digest: blob.digest.as_deref(),
            blob_size: blob.size,
            diff_id: Some(diff_id),
        };
        let path = blob.path();
        let layer = unpack::LayerRef {
            file: &path,
            source: blob.root(),
            label: format!("layer {}/{} ({})", i + 1, blobs.len(), blob.name()),
        };
        // Never more than one byte past what the file held when it was opened.
        let (_, got_chain) = store::store_layer(
            paths,
            file.take(size.saturating_add(1)),
            &layer,
            expected,
            &chains,
            parent.as_deref(),
        )?;
        if let Some(digest) = &blob.digest {
            seen.insert(digest.clone(), diff_id.clone());
        }
        chains.push(got_chain);
    }
    Ok((chains, seen))
}

fn import_rootfs_tar(
    paths: &Paths,
    reader: impl Read + Send,
    origin: &Path,
    name: String,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    progress(&format!("layer 1/1: unpacking {}", origin.display()));
    let layer = unpack::LayerRef {
        file: origin,
        source: origin,
        label: "layer 1/1".into(),
    };
    let (diff_id, chain) = store::store_layer(
        paths,
        reader,
        &layer,
        unpack::Expected::default(),
        &[],
        None,
    )?;
    let config = RunConfig {
        env: vec![DEFAULT_PATH_ENV.to_string()],
        ..Default::default()
    };
    let id_source = serde_json::json!({"rootfs": [diff_id], "env": config.env});
    let id = format!(
        "sha256:{}",
        store::sha256_hex(id_source.to_string().as_bytes())
    );
    save_record(
        paths,
        NewRecord {
            id,
            name,
            layers: vec![chain],
            diff_ids_by_blob: BTreeMap::new(),
            config,
        },
    )
}

/// What an import or a pull knows of the image it stored.
struct NewRecord {
    /// `sha256:<config digest>`.
    id: String,
    /// The reference it is stored under.
    name: String,
    /// Layer chain ids, bottom-most first.
    layers: Vec<String>,
    /// See [`ImageRecord::diff_ids_by_blob`].
    diff_ids_by_blob: BTreeMap<String, String>,
    config: RunConfig,
}

fn save_record(paths: &Paths, new: NewRecord) -> Result<ImageRecord> {
    let NewRecord {
        id,
        name,
        layers,
        diff_ids_by_blob,
        config,
    } = new;
    validate_reference(&name)?;
    // The name moves to the new image (like `docker tag`).
    for mut other in list(paths)? {
        if other.id != id && other.names.contains(&name) {
            other.names.retain(|n| n != &name);
            store::write_record(paths, &other)?;
        }
    }
    let mut record = match store::load_record(paths, &id) {
        Ok(existing) => existing,
        Err(_) => ImageRecord {
            id: id.clone(),
            names: Vec::new(),
            size: layers
                .iter()
                .map(|l| store::dir_size(&layer_dir(paths, l).join("diff")))
                .sum(),
            layers,
            config,
            imported_at: super::now_unix(),
            diff_ids_by_blob: BTreeMap::new(),
        },
    };
    if !record.names.contains(&name) {
        record.names.push(name);
    }
    record.diff_ids_by_blob.extend(diff_ids_by_blob);
    store::write_record(paths, &record)?;
    Ok(record)
}

/// All images, oldest first.
pub fn list(paths: &Paths) -> Result<Vec<ImageRecord>> {
    let mut out = store::records(paths)?;
    out.sort_by(|a, b| a.imported_at.total_cmp(&b.imported_at));
    Ok(out)
}

/// Finds an image by reference (`name`, `name:tag`), id, or unique id prefix.
pub fn resolve(paths: &Paths, reference: &str) -> Result<ImageRecord> {
    let all = list(paths)?;
    let normalized = normalize_reference(reference);
    // Docker Hub names may be stored fully qualified (`docker save`, skopeo).
    let candidates = [
        reference.to_string(),
        normalized.clone(),
        format!("docker.io/{normalized}"),
        format!("docker.io/library/{normalized}"),
    ];
    for c in &candidates {
        if let Some(r) = all.iter().find(|r| r.names.contains(c)) {
            return Ok(r.clone());
        }
    }
    let key = reference.strip_prefix("sha256:").unwrap_or(reference);
    if key.len() >= 4 && key.chars().all(|c| c.is_ascii_hexdigit()) {
        let hits: Vec<_> = all.iter().filter(|r| r.hex_id().starts_with(key)).collect();
        if let [one] = hits.as_slice() {
            return Ok((*one).clone());
        }
    }
    Err(Error::NoSuchImage {
        reference: reference.to_owned(),
    })
}

/// Removes an image (or just one of its names when it has several). Refused while a
/// container uses it. Layers no other image uses are deleted.
pub fn remove(paths: &Paths, reference: &str, force: bool) -> Result<ImageRecord> {
    let _lock = sys::lock_exclusive(&paths.lock_file())?;
    let mut record = resolve(paths, reference)?;
    let normalized = normalize_reference(reference);
    let by_name = record
        .names
        .iter()
        .any(|n| *n == normalized || n == reference);
    if by_name && record.names.len() > 1 && !force {
        record.names.retain(|n| *n != normalized && n != reference);
        store::write_record(paths, &record)?;
        return Ok(record);
    }
    let users: Vec<_> = super::state::list(paths.root())?
        .into_iter()
        .filter(|c| c.image_id == record.id)
        .map(|c| c.name)
        .collect();
    if !users.is_empty() {
        return Err(Error::Conflict(format!(
            "image {reference} is used by container(s) {}; remove them first",
            users.join(", ")
        )));
    }
    store::remove_record(paths, &record.id)?;
    let in_use: BTreeSet<String> = list(paths)?.into_iter().flat_map(|r| r.layers).collect();
    for layer in record.layers.iter().rev() {
        if !in_use.contains(layer) {
            remove_layer_dir(paths, layer)?;
        }
    }
    Ok(record)
}

/// Finds `rel` (e.g. `etc/passwd`) in the merged view of `layers` (bottom-most first)
/// without mounting: the top-most layer that has it wins, a whiteout hides it.
pub fn find_in_layers(paths: &Paths, layers: &[String], rel: &str) -> Option<PathBuf> {
    for layer in layers.iter().rev() {
        let p = layer_dir(paths, layer).join("diff").join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => return None,
            Ok(_) => return Some(p),
            Err(_) => {}
        }
    }
    None
}
