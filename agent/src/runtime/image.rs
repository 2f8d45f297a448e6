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
//! unpacked into `tmp/` and renamed into place only after its digests check out, so a
//! corrupt or interrupted import leaves nothing half-made in `overlay2/`.

use super::{Error, IoContext, Paths, Result, hex, sys};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

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
}

impl ImageRecord {
    /// The id without `sha256:`.
    pub fn hex_id(&self) -> &str {
        self.id.strip_prefix("sha256:").unwrap_or(&self.id)
    }
}

/// What kind of source an import read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    OciLayout,
    DockerArchive,
    RootfsTar,
}

/// Progress reporting for long imports.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

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
    let _lock = sys::lock_exclusive(&paths.lock_file())?;
    // Only imports use tmp/ and they hold the lock: anything there is left over from
    // an import that was killed.
    if let Ok(stale) = std::fs::read_dir(paths.tmp()) {
        for e in stale.flatten() {
            let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
        }
    }
    let scratch = Scratch::new(paths)?;
    let record = if meta.is_dir() {
        import_dir(
            paths,
            &source,
            &source,
            tag.as_deref(),
            name,
            &scratch,
            progress,
        )?
    } else {
        match sniff_archive(&source)? {
            SourceKind::RootfsTar => {
                let file = std::fs::File::open(&source).at("open", &source)?;
                import_rootfs_tar(paths, file, &source, default_name(&source, name), progress)?
            }
            _ => {
                let dir = scratch.path.join("archive");
                progress(&format!("extracting {}", source.display()));
                extract_plain(&source, &dir)?;
                import_dir(
                    paths,
                    &dir,
                    &source,
                    tag.as_deref(),
                    name,
                    &scratch,
                    progress,
                )
                .map_err(|e| relabel(e, &source))?
            }
        }
    };
    Ok(record)
}

fn relabel(e: Error, source: &Path) -> Error {
    match e {
        Error::Corrupt { reason, .. } => Error::Corrupt {
            path: source.to_path_buf(),
            reason,
        },
        e => e,
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
    if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
        import_oci_layout(paths, dir, origin, tag, name, progress)
    } else if dir.join("manifest.json").is_file() && !dir.join("bin").exists() {
        import_docker_archive(paths, dir, origin, name, progress)
    } else {
        let tar_path = scratch.path.join("rootfs.tar");
        progress(&format!("packing directory {}", dir.display()));
        pack_dir(dir, &tar_path)?;
        let file = std::fs::File::open(&tar_path).at("open", &tar_path)?;
        import_rootfs_tar(paths, file, origin, default_name(origin, name), progress)
    }
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

fn default_name(source: &Path, name: Option<&str>) -> String {
    if let Some(n) = name {
        return normalize_reference(n);
    }
    let stem = source
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("image")
        .split('.')
        .next()
        .unwrap_or("image")
        .to_ascii_lowercase();
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    normalize_reference(if stem.is_empty() { "image" } else { &stem })
}

/// Adds `:latest` when a reference has no tag.
pub fn normalize_reference(r: &str) -> String {
    let last = r.rsplit('/').next().unwrap_or(r);
    if last.contains(':') || r.contains('@') {
        r.to_string()
    } else {
        format!("{r}:latest")
    }
}

/// Accepts Docker-style references: lowercase path components, optional `:tag`.
pub fn validate_reference(r: &str) -> Result<()> {
    let bad = || Error::Invalid(format!("invalid image reference {r:?}"));
    if r.is_empty() || r.len() > 255 {
        return Err(bad());
    }
    let (repo, tag) = match r.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (r, None),
    };
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        return Err(bad());
    }
    let ok_component = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_alphanumeric())
    };
    // The first component may be a registry host with a port.
    let mut comps = repo.split('/').peekable();
    let mut first = true;
    while let Some(c) = comps.next() {
        let ok = if first && comps.peek().is_some() {
            c.split(':').all(|p| !p.is_empty())
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ".-:".contains(ch))
        } else {
            ok_component(c)
        };
        if !ok {
            return Err(bad());
        }
        first = false;
    }
    Ok(())
}

fn sniff_archive(path: &Path) -> Result<SourceKind> {
    let file = std::fs::File::open(path).at("open", path)?;
    let mut archive = tar::Archive::new(decompress(BufReader::new(file)).at("read", path)?);
    let mut names = BTreeSet::new();
    let entries = archive.entries().map_err(|e| corrupt(path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| corrupt(path, e))?;
        let p = entry.path().map_err(|e| corrupt(path, e))?;
        let p = p.to_string_lossy();
        let p = p.trim_start_matches("./").trim_end_matches('/');
        if !p.contains('/') {
            names.insert(p.to_string());
        }
    }
    if names.contains("oci-layout") && names.contains("index.json") {
        Ok(SourceKind::OciLayout)
    } else if names.contains("manifest.json") && !names.contains("bin") && !names.contains("etc") {
        Ok(SourceKind::DockerArchive)
    } else {
        Ok(SourceKind::RootfsTar)
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// An error and its sources on one line (tar wraps the real cause).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// Extracts an (uncompressed or compressed) archive of image files into `dir`.
fn extract_plain(archive: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).at("create directory", dir)?;
    let file = std::fs::File::open(archive).at("open", archive)?;
    let mut tar = tar::Archive::new(decompress(BufReader::new(file)).at("read", archive)?);
    tar.set_preserve_permissions(false);
    tar.unpack(dir).map_err(|e| corrupt(archive, e))
}

/// Wraps `reader` in a gzip or zstd decoder when its magic bytes say so.
fn decompress<'a, R: BufRead + 'a>(mut reader: R) -> std::io::Result<Box<dyn Read + 'a>> {
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(reader)?))
    } else {
        Ok(Box::new(reader))
    }
}

/// A reader that hashes what passes through it.
struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashReader<R> {
    fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Shared handle so the digest can be read after the decoder consumed the reader.
struct SharedHash<R>(std::rc::Rc<std::cell::RefCell<HashReader<R>>>);

impl<R: Read> Read for SharedHash<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// OCI chain id of a layer given its parent's chain id.
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(p) => format!("sha256:{}", sha256_hex(format!("{p} {diff_id}").as_bytes())),
    }
}

fn layer_dir_name(chain: &str) -> &str {
    chain.strip_prefix("sha256:").unwrap_or(chain)
}

/// `overlay2/<chain>` of a layer.
pub fn layer_dir(paths: &Paths, chain: &str) -> PathBuf {
    paths.overlay().join(layer_dir_name(chain))
}

/// `lowerdir` entries of `layers` (bottom-most first) as short links relative to
/// `overlay2/`, top-most first.
pub fn lower_links(paths: &Paths, layers: &[String]) -> Result<Vec<String>> {
    layers
        .iter()
        .rev()
        .map(|l| {
            let link = layer_dir(paths, l).join("link");
            let short = std::fs::read_to_string(&link).at("read", &link)?;
            Ok(format!("l/{}", short.trim()))
        })
        .collect()
}

fn new_short_link() -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut buf = [0u8; 26];
    sys::getrandom(&mut buf)?;
    Ok(buf
        .iter()
        .map(|b| ALPHABET[(*b % 32) as usize] as char)
        .collect())
}

/// Creates `overlay2/<id>/{link,lower}` and the short link for a diff directory that
/// is already at `overlay2/<id>/diff`. `parents` are bottom-most first.
pub fn register_layer(paths: &Paths, id: &str, parents: &[String]) -> Result<String> {
    let dir = paths.overlay().join(id);
    let short = new_short_link()?;
    let link_path = paths.links().join(&short);
    std::os::unix::fs::symlink(format!("../{id}/diff"), &link_path)
        .at("create short link", &link_path)?;
    std::fs::write(dir.join("link"), &short).at("write", dir.join("link"))?;
    if !parents.is_empty() {
        let lower = lower_links(paths, parents)?.join(":");
        std::fs::write(dir.join("lower"), lower).at("write", dir.join("lower"))?;
    }
    Ok(short)
}

/// Removes a layer directory and its short link.
pub fn remove_layer_dir(paths: &Paths, id: &str) -> Result<()> {
    let dir = paths.overlay().join(layer_dir_name(id));
    if let Ok(short) = std::fs::read_to_string(dir.join("link")) {
        let short = short.trim();
        if !short.is_empty() && !short.contains('/') {
            let _ = std::fs::remove_file(paths.links().join(short));
        }
    }
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at("remove", &dir),
        _ => Ok(()),
    }
}

/// Unpacks one layer's tar stream into `dest`, converting OCI whiteouts to overlayfs
/// ones (`.wh.NAME` → 0:0 char device, `.wh..wh..opq` → opaque xattr).
fn unpack_layer<R: Read>(reader: R, dest: &Path, origin: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entries = archive.entries().map_err(|e| corrupt(origin, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(origin, e))?;
        let raw = entry.path().map_err(|e| corrupt(origin, e))?.into_owned();
        let rel = sanitize(&raw).ok_or_else(|| {
            corrupt(
                origin,
                format!("layer entry escapes the root: {}", raw.display()),
            )
        })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let file_name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let rel_parent = rel.parent().unwrap_or(Path::new(""));
        let special = file_name.starts_with(".wh.") || {
            let k = entry.header().entry_type();
            k.is_character_special() || k.is_block_special() || k.is_fifo()
        };
        // Entries handled here (not by tar's own checked unpacking) must not reach
        // through a symlink out of the layer.
        let parent = if special {
            safe_parent(dest, rel_parent, origin)?
        } else {
            dest.join(rel_parent)
        };
        if file_name == ".wh..wh..opq" {
            sys::lsetxattr(&parent, "trusted.overlay.opaque", b"y")?;
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            let target = parent.join(hidden);
            remove_any(&target)?;
            sys::mknod(&target, libc::S_IFCHR | 0o600, 0, 0)?;
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let target = parent.join(file_name);
            remove_any(&target)?;
            let header = entry.header();
            let mode = header.mode().map_err(|e| corrupt(origin, e))? & 0o7777;
            let ftype = if kind.is_character_special() {
                libc::S_IFCHR
            } else if kind.is_block_special() {
                libc::S_IFBLK
            } else {
                libc::S_IFIFO
            };
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            sys::mknod(&target, ftype | mode, major, minor)?;
            let uid = header.uid().unwrap_or(0) as u32;
            let gid = header.gid().unwrap_or(0) as u32;
            sys::lchown(&target, uid, gid)?;
            continue;
        }
        let inside = entry
            .unpack_in(dest)
            .map_err(|e| corrupt(origin, format!("{}: {}", rel.display(), chain(&e))))?;
        if !inside {
            return Err(corrupt(
                origin,
                format!("layer entry escapes the root: {}", raw.display()),
            ));
        }
    }
    Ok(())
}

/// `dest/rel`, creating missing directories, refusing any component that is not a
/// real directory (a symlink could point out of the layer).
fn safe_parent(dest: &Path, rel: &Path, origin: &Path) -> Result<PathBuf> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(corrupt(
                    origin,
                    format!("layer entry below a non-directory: {}", rel.display()),
                ));
            }
            Err(_) => std::fs::create_dir(&cur).at("create directory", &cur)?,
        }
    }
    Ok(cur)
}

fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).at("remove", path),
        Ok(_) => std::fs::remove_file(path).at("remove", path),
        Err(_) => Ok(()),
    }
}

/// Strips `/` and `.` components; `None` if the path climbs with `..`.
fn sanitize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// Unpacks a layer stream into a fresh scratch dir, checks its digests, and moves it
/// into `overlay2/<chain>`. `compressed_digest` is checked over the raw bytes, the
/// diff id over the uncompressed tar. Returns the diff id.
fn store_layer(
    paths: &Paths,
    reader: impl Read,
    origin: &Path,
    compressed_digest: Option<&str>,
    expected_diff_id: Option<&str>,
    parents: &[String],
    parent_chain: Option<&str>,
) -> Result<(String, String)> {
    let outer = std::rc::Rc::new(std::cell::RefCell::new(HashReader::new(reader)));
    let decoded = decompress(BufReader::new(SharedHash(outer.clone()))).at("read", origin)?;
    let mut inner = HashReader::new(decoded);
    let tmp = paths
        .tmp()
        .join(format!("layer-{}", &super::random_id()?[..16]));
    let diff = tmp.join("diff");
    std::fs::create_dir_all(&diff).at("create directory", &diff)?;
    let cleanup = TmpDir(tmp.clone());
    unpack_layer(&mut inner, &diff, origin)?;
    // Read to the end so the digests cover every byte (tar padding included).
    std::io::copy(&mut inner, &mut std::io::sink()).map_err(|e| corrupt(origin, e))?;
    let HashReader { hasher, .. } = inner;
    let diff_id = format!("sha256:{}", hex(&hasher.finalize()));
    if let Some(expected) = compressed_digest {
        let mut outer = outer.borrow_mut();
        std::io::copy(&mut *outer, &mut std::io::sink()).at("read", origin)?;
        let got = format!("sha256:{}", hex(&outer.hasher.clone().finalize()));
        if got != expected {
            return Err(corrupt(
                origin,
                format!("layer digest mismatch: expected {expected}, got {got}"),
            ));
        }
    }
    if let Some(expected) = expected_diff_id
        && expected != diff_id
    {
        return Err(corrupt(
            origin,
            format!("layer diff id mismatch: expected {expected}, got {diff_id}"),
        ));
    }
    let chain = chain_id(parent_chain, &diff_id);
    let final_dir = layer_dir(paths, &chain);
    if final_dir.join("link").exists() {
        return Ok((diff_id, chain));
    }
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir).at("move layer into", &final_dir)?;
    std::mem::forget(cleanup);
    if let Err(e) = register_layer(paths, layer_dir_name(&chain), parents) {
        let _ = remove_layer_dir(paths, &chain);
        return Err(e);
    }
    Ok((diff_id, chain))
}

struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(m) = e.metadata() {
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    total += m.size();
                }
            }
        }
    }
    total
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let data = std::fs::read(path).at("read", path)?;
    serde_json::from_slice(&data).map_err(|e| corrupt(path, e))
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

/// Imports the layers listed by `diff_ids` from `blobs` (path, compressed digest).
fn import_layers(
    paths: &Paths,
    blobs: &[(PathBuf, Option<String>)],
    diff_ids: &[String],
    progress: Progress<'_>,
) -> Result<Vec<String>> {
    if blobs.len() != diff_ids.len() {
        return Err(Error::Corrupt {
            path: blobs.first().map(|b| b.0.clone()).unwrap_or_default(),
            reason: format!(
                "{} layers but {} diff ids in the image config",
                blobs.len(),
                diff_ids.len()
            ),
        });
    }
    let mut chains: Vec<String> = Vec::new();
    for (i, ((blob, digest), diff_id)) in blobs.iter().zip(diff_ids).enumerate() {
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
        let size = std::fs::metadata(blob).at("read layer", blob)?.len();
        progress(&format!(
            "layer {}/{} {short}: unpacking {:.1} MiB",
            i + 1,
            blobs.len(),
            size as f64 / (1024.0 * 1024.0)
        ));
        let file = std::fs::File::open(blob).at("open layer", blob)?;
        let (_, got_chain) = store_layer(
            paths,
            file,
            blob,
            digest.as_deref(),
            Some(diff_id),
            &chains,
            parent.as_deref(),
        )?;
        chains.push(got_chain);
    }
    Ok(chains)
}

fn blob_path(layout: &Path, digest: &oci_spec::image::Digest) -> PathBuf {
    layout
        .join("blobs")
        .join(digest.algorithm().to_string())
        .join(digest.digest())
}

fn read_blob_verified(layout: &Path, digest: &oci_spec::image::Digest) -> Result<Vec<u8>> {
    let path = blob_path(layout, digest);
    let data = std::fs::read(&path).at("read blob", &path)?;
    let got = sha256_hex(&data);
    if got != digest.digest() {
        return Err(corrupt(
            &path,
            format!("digest mismatch: expected {digest}, got sha256:{got}"),
        ));
    }
    Ok(data)
}

const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

fn import_oci_layout(
    paths: &Paths,
    layout: &Path,
    origin: &Path,
    tag: Option<&str>,
    name: Option<&str>,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    let index_path = layout.join("index.json");
    let index: ImageIndex = read_json(&index_path)?;
    let candidates: Vec<_> = index
        .manifests()
        .iter()
        .filter(|d| {
            tag.is_none_or(|t| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_ANNOTATION))
                    .is_some_and(|r| r == t || r.rsplit(':').next() == Some(t))
            })
        })
        .collect();
    let desc = match candidates.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(Error::NotFound(format!(
                "no image {} in OCI layout {}",
                tag.unwrap_or("at all"),
                layout.display()
            )));
        }
        many => {
            let refs: Vec<_> = many
                .iter()
                .filter_map(|d| d.annotations().as_ref()?.get(REF_ANNOTATION).cloned())
                .collect();
            return Err(Error::Invalid(format!(
                "OCI layout {} holds several images; pick one with {}:TAG (tags: {})",
                layout.display(),
                layout.display(),
                refs.join(", ")
            )));
        }
    };
    let ref_name = desc
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_ANNOTATION).cloned());
    // Follow nested indexes to a linux/amd64 (or the first) manifest.
    let mut desc = desc;
    for _ in 0..4 {
        if *desc.media_type() != MediaType::ImageIndex {
            break;
        }
        let data = read_blob_verified(layout, desc.digest())?;
        let nested: ImageIndex = serde_json::from_slice(&data)
            .map_err(|e| corrupt(&blob_path(layout, desc.digest()), e))?;
        let pick = nested
            .manifests()
            .iter()
            .find(|d| {
                d.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
                })
            })
            .or_else(|| nested.manifests().first())
            .cloned()
            .ok_or_else(|| corrupt(&blob_path(layout, desc.digest()), "empty image index"))?;
        desc = pick;
    }
    let manifest_path = blob_path(layout, desc.digest());
    let manifest: ImageManifest =
        serde_json::from_slice(&read_blob_verified(layout, desc.digest())?)
            .map_err(|e| corrupt(&manifest_path, e))?;
    let config_digest = manifest.config().digest();
    let config_path = blob_path(layout, config_digest);
    let config: ImageConfiguration =
        serde_json::from_slice(&read_blob_verified(layout, config_digest)?)
            .map_err(|e| corrupt(&config_path, e))?;
    let blobs: Vec<_> = manifest
        .layers()
        .iter()
        .map(|l| (blob_path(layout, l.digest()), Some(l.digest().to_string())))
        .collect();
    let diff_ids = config.rootfs().diff_ids().clone();
    let layers = import_layers(paths, &blobs, &diff_ids, progress)?;
    let dir_name = origin
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("image");
    let name = match (name, ref_name) {
        (Some(n), _) => normalize_reference(n),
        (None, Some(r)) if r.contains(':') || r.contains('/') => normalize_reference(&r),
        (None, Some(r)) => format!(
            "{}:{r}",
            default_name(Path::new(dir_name), None).trim_end_matches(":latest")
        ),
        (None, None) => default_name(origin, None),
    };
    save_record(
        paths,
        format!("sha256:{}", config_digest.digest()),
        name,
        layers,
        run_config_from(&config),
    )
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn import_docker_archive(
    paths: &Paths,
    dir: &Path,
    origin: &Path,
    name: Option<&str>,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    let manifest_path = dir.join("manifest.json");
    let entries: Vec<DockerManifestEntry> = read_json(&manifest_path)?;
    let entry = match entries.as_slice() {
        [one] => one,
        [] => return Err(corrupt(&manifest_path, "no image in manifest.json")),
        _ => {
            return Err(Error::Invalid(format!(
                "{} holds several images; save one image per archive",
                manifest_path.display()
            )));
        }
    };
    let inside = |rel: &str| -> Result<PathBuf> {
        sanitize(Path::new(rel))
            .map(|r| dir.join(r))
            .ok_or_else(|| corrupt(&manifest_path, format!("path escapes the archive: {rel}")))
    };
    let config_path = inside(&entry.config)?;
    let config_bytes = std::fs::read(&config_path).at("read", &config_path)?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| corrupt(&config_path, e))?;
    let blobs = entry
        .layers
        .iter()
        .map(|l| inside(l).map(|p| (p, None)))
        .collect::<Result<Vec<_>>>()?;
    let diff_ids = config.rootfs().diff_ids().clone();
    let layers = import_layers(paths, &blobs, &diff_ids, progress)?;
    let name = name
        .map(normalize_reference)
        .or_else(|| entry.repo_tags.as_ref()?.first().cloned())
        .unwrap_or_else(|| default_name(origin, None));
    save_record(
        paths,
        format!("sha256:{}", sha256_hex(&config_bytes)),
        name,
        layers,
        run_config_from(&config),
    )
}

fn import_rootfs_tar(
    paths: &Paths,
    reader: impl Read,
    origin: &Path,
    name: String,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    progress(&format!("layer 1/1: unpacking {}", origin.display()));
    let (diff_id, chain) = store_layer(paths, reader, origin, None, None, &[], None)?;
    let config = RunConfig {
        env: vec![DEFAULT_PATH_ENV.to_string()],
        ..Default::default()
    };
    let id_source = serde_json::json!({"rootfs": [diff_id], "env": config.env});
    let id = format!("sha256:{}", sha256_hex(id_source.to_string().as_bytes()));
    save_record(paths, id, name, vec![chain], config)
}

/// `PATH` given to containers whose image sets none.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn save_record(
    paths: &Paths,
    id: String,
    name: String,
    layers: Vec<String>,
    config: RunConfig,
) -> Result<ImageRecord> {
    validate_reference(&name)?;
    // The name moves to the new image (like `docker tag`).
    for mut other in list(paths)? {
        if other.id != id && other.names.contains(&name) {
            other.names.retain(|n| n != &name);
            write_record(paths, &other)?;
        }
    }
    let mut record = match load(paths, &id) {
        Ok(existing) => existing,
        Err(_) => ImageRecord {
            id: id.clone(),
            names: Vec::new(),
            size: layers
                .iter()
                .map(|l| dir_size(&layer_dir(paths, l).join("diff")))
                .sum(),
            layers,
            config,
            imported_at: super::now_unix(),
        },
    };
    if !record.names.contains(&name) {
        record.names.push(name);
    }
    write_record(paths, &record)?;
    Ok(record)
}

fn record_path(paths: &Paths, id: &str) -> PathBuf {
    paths
        .images()
        .join(format!("{}.json", id.strip_prefix("sha256:").unwrap_or(id)))
}

fn write_record(paths: &Paths, record: &ImageRecord) -> Result<()> {
    let path = record_path(paths, &record.id);
    let data = serde_json::to_vec_pretty(record).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    super::state::write_atomic(&path, &data)
}

fn load(paths: &Paths, id: &str) -> Result<ImageRecord> {
    read_json(&record_path(paths, id))
}

/// All images, oldest first.
pub fn list(paths: &Paths) -> Result<Vec<ImageRecord>> {
    let dir = paths.images();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at("read directory", &dir),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e.at("read directory", &dir)?.path();
        if path.extension().is_some_and(|x| x == "json") {
            out.push(read_json::<ImageRecord>(&path)?);
        }
    }
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
    Err(Error::NotFound(format!(
        "no such image: {reference} (import it with `agent image import`)"
    )))
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
        write_record(paths, &record)?;
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
    let path = record_path(paths, &record.id);
    std::fs::remove_file(&path).at("remove", &path)?;
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

/// Packs a directory into an uncompressed tar at `out` (ownership, modes, symlinks,
/// hard links and device nodes preserved).
fn pack_dir(dir: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::create(out).at("create", out)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    builder.append_dir_all(".", dir).map_err(|e| Error::Io {
        op: "pack directory",
        path: dir.to_path_buf(),
        source: e,
    })?;
    let inner = builder.into_inner().at("write", out)?;
    inner
        .into_inner()
        .map_err(|e| e.into_error())
        .at("write", out)?
        .sync_all()
        .at("fsync", out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        for ok in [
            "busybox",
            "busybox:1.36",
            "library/busybox:latest",
            "localhost:5000/a/b:c",
        ] {
            validate_reference(ok).unwrap();
        }
        for bad in ["", "Busybox", "a:", "a b", "a:b/c:", "-a"] {
            assert!(validate_reference(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_reference("a"), "a:latest");
        assert_eq!(normalize_reference("host:5000/a"), "host:5000/a:latest");
        assert_eq!(normalize_reference("a:1"), "a:1");
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = "sha256:aa";
        assert_eq!(chain_id(None, a), a);
        let expected = format!("sha256:{}", sha256_hex(b"sha256:aa sha256:bb"));
        assert_eq!(chain_id(Some(a), "sha256:bb"), expected);
    }

    #[test]
    fn whiteouts_cannot_reach_through_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), "keep").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_path("etc").unwrap();
        h.set_link_name(&outside).unwrap();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("etc/.wh.victim").unwrap();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
        let data = b.into_inner().unwrap();
        let dest = t.path().join("diff");
        std::fs::create_dir(&dest).unwrap();
        let err = unpack_layer(&data[..], &dest, Path::new("layer.tar")).unwrap_err();
        assert!(err.to_string().contains("non-directory"), "{err}");
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn sanitize_rejects_parent_components() {
        assert_eq!(sanitize(Path::new("/./a/b")).unwrap(), PathBuf::from("a/b"));
        assert!(sanitize(Path::new("a/../../etc")).is_none());
    }
}
