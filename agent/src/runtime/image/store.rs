//! The overlay2 layer store and the image records on disk: chain ids, `overlay2/<id>`
//! with its `link`/`lower` files, the `overlay2/l/` short links, and
//! `images/<id>.json`.

use super::super::{Error, IoContext, Paths, Result, hex, sys};
use super::ImageRecord;
use super::unpack::{self, remove_tree};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Lower-case hex SHA-256 of `data`.
pub(super) fn sha256_hex(data: &[u8]) -> String {
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
    write_layer_meta(paths, &paths.overlay().join(id), id, parents)
}

/// Writes layer `id`'s `lower` file (when it has parents), its short link
/// `overlay2/l/<short>` -> `../<id>/diff`, and last its `link` file, into `dir`: the
/// layer's own directory, or the scratch directory that becomes it by a rename. A
/// layer is complete once it has `link`; [`sweep`] removes the rest.
fn write_layer_meta(paths: &Paths, dir: &Path, id: &str, parents: &[String]) -> Result<String> {
    if !parents.is_empty() {
        let lower = lower_links(paths, parents)?.join(":");
        std::fs::write(dir.join("lower"), lower).at("write", dir.join("lower"))?;
    }
    let short = new_short_link()?;
    let link_path = paths.links().join(&short);
    std::os::unix::fs::symlink(format!("../{id}/diff"), &link_path)
        .at("create short link", &link_path)?;
    if let Err(e) = std::fs::write(dir.join("link"), &short).at("write", dir.join("link")) {
        let _ = std::fs::remove_file(&link_path);
        return Err(e);
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

/// Unpacks a layer stream into a fresh scratch dir, checks it against `expected`, and
/// moves it into `overlay2/<chain>`. Returns the diff id and the chain id.
pub(super) fn store_layer(
    paths: &Paths,
    reader: impl Read + Send,
    layer: &unpack::LayerRef<'_>,
    expected: unpack::Expected<'_>,
    parents: &[String],
    parent_chain: Option<&str>,
) -> Result<(String, String)> {
    let unpacked = unpack_to_scratch(paths, reader, layer, expected)?;
    commit_layer(paths, unpacked, parents, parent_chain)
}

/// A layer unpacked into `tmp/` and verified, not yet in the store; its scratch
/// directory goes when this is dropped uncommitted.
pub(super) struct Unpacked {
    tmp: TmpDir,
    diff_id: String,
}

impl Unpacked {
    /// `sha256:<hex>` of the layer's uncompressed tar.
    pub(super) fn diff_id(&self) -> &str {
        &self.diff_id
    }
}

/// The first half of [`store_layer`]: unpacks and verifies a layer into scratch.
/// Layers of one image may be unpacked side by side; they are committed in order.
pub(super) fn unpack_to_scratch(
    paths: &Paths,
    reader: impl Read + Send,
    layer: &unpack::LayerRef<'_>,
    expected: unpack::Expected<'_>,
) -> Result<Unpacked> {
    let tmp = paths
        .tmp()
        .join(format!("layer-{}", &super::super::random_id()?[..16]));
    let diff = tmp.join("diff");
    std::fs::create_dir_all(&diff).at("create directory", &diff)?;
    let tmp = TmpDir(tmp);
    let diff_id = unpack::unpack_verified(reader, &diff, layer, expected)?;
    Ok(Unpacked { tmp, diff_id })
}

/// The second half of [`store_layer`]: moves a verified layer into
/// `overlay2/<chain>` on top of `parents` (already in the store, bottom-most first).
/// Returns the diff id and the chain id.
pub(super) fn commit_layer(
    paths: &Paths,
    unpacked: Unpacked,
    parents: &[String],
    parent_chain: Option<&str>,
) -> Result<(String, String)> {
    let Unpacked { tmp, diff_id } = unpacked;
    let chain = chain_id(parent_chain, &diff_id);
    let name = layer_dir_name(&chain);
    let final_dir = paths.overlay().join(name);
    if final_dir.join("link").exists() {
        return Ok((diff_id, chain));
    }
    // Complete the layer in scratch; the rename below is what makes it exist. An
    // import killed before it leaves scratch and perhaps a short link to nowhere,
    // both of which the next import sweeps.
    let short = write_layer_meta(paths, &tmp.0, name, parents)?;
    let moved = remove_tree(&final_dir)
        .and_then(|()| std::fs::rename(&tmp.0, &final_dir).at("move layer into", &final_dir));
    if let Err(e) = moved {
        let _ = std::fs::remove_file(paths.links().join(short));
        return Err(e);
    }
    drop(tmp);
    Ok((diff_id, chain))
}

/// Removes what an import (or launch) killed half-way left behind; returns how many
/// things it removed. Called with the store lock held, which every change to `tmp/`
/// and `overlay2/` takes, so nothing it sees is still being made:
///
/// - everything in `tmp/` (only imports and pulls use it);
/// - every layer directory in `overlay2/` that no image record names, unless it is
///   named after a container in `containers/` (a container's layer is its own):
///   the finished layers of an import killed before it wrote its record, and
///   layers an older agent moved into place but never linked;
/// - short links in `overlay2/l/` that lead nowhere (made for a layer that was
///   never moved into place);
/// - record files in `images/` that `write_atomic` never renamed into place.
pub(crate) fn sweep(paths: &Paths) -> Result<usize> {
    let mut removed = 0;
    for name in dir_names(&paths.tmp())? {
        remove_tree(&paths.tmp().join(name))?;
        removed += 1;
    }
    for name in dir_names(&paths.images())? {
        if name.starts_with('.') && name.contains(".json.tmp") {
            remove_tree(&paths.images().join(name))?;
            removed += 1;
        }
    }
    let named: BTreeSet<String> = records(paths)?
        .into_iter()
        .flat_map(|r| r.layers)
        .map(|l| layer_dir_name(&l).to_string())
        .collect();
    let containers: BTreeSet<String> = dir_names(&paths.containers())?.into_iter().collect();
    for name in dir_names(&paths.overlay())? {
        let is_layer = name.len() == 64
            && name.bytes().all(|b| b.is_ascii_hexdigit())
            && std::fs::symlink_metadata(paths.overlay().join(&name)).is_ok_and(|m| m.is_dir());
        if is_layer && !named.contains(&name) && !containers.contains(&name) {
            remove_layer_dir(paths, &name)?;
            removed += 1;
        }
    }
    for name in dir_names(&paths.links())? {
        let link = paths.links().join(&name);
        let dangling = std::fs::symlink_metadata(&link).is_ok_and(|m| m.is_symlink())
            && std::fs::metadata(&link).is_err();
        if dangling {
            std::fs::remove_file(&link).at("remove", &link)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Names in a directory; none if it does not exist.
fn dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at("read directory", dir),
    };
    entries
        .map(|e| {
            let e = e.at("read directory", dir)?;
            Ok(e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// A directory removed on drop.
pub(super) struct TmpDir(pub(super) PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes of the regular files below `path`.
pub(super) fn dir_size(path: &Path) -> u64 {
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
    serde_json::from_slice(&data).map_err(|e| super::corrupt_by(path, "invalid JSON", e))
}

fn record_path(paths: &Paths, id: &str) -> PathBuf {
    paths
        .images()
        .join(format!("{}.json", id.strip_prefix("sha256:").unwrap_or(id)))
}

/// Writes `images/<id>.json` atomically.
pub(super) fn write_record(paths: &Paths, record: &ImageRecord) -> Result<()> {
    let path = record_path(paths, &record.id);
    let data = serde_json::to_vec_pretty(record).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    super::super::state::write_atomic(&path, &data)
}

/// Removes `images/<id>.json`.
pub(super) fn remove_record(paths: &Paths, id: &str) -> Result<()> {
    let path = record_path(paths, id);
    std::fs::remove_file(&path).at("remove", &path)
}

/// The record of image `id`.
pub(super) fn load_record(paths: &Paths, id: &str) -> Result<ImageRecord> {
    read_json(&record_path(paths, id))
}

/// Every record in `images/`, in directory order.
pub(super) fn records(paths: &Paths) -> Result<Vec<ImageRecord>> {
    let dir = paths.images();
    dir_names(&dir)?
        .into_iter()
        .filter(|n| Path::new(n).extension().is_some_and(|x| x == "json"))
        .map(|n| read_json(&dir.join(n)))
        .collect()
}

/// The diff id each layer blob the records name unpacked to (each pair seen by
/// the pull or import that wrote it). A blob two records disagree on is left
/// out: a pull then fetches it and sees for itself.
pub(super) fn diff_ids_by_blob(paths: &Paths) -> Result<BTreeMap<String, String>> {
    let mut known: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (blob, diff_id) in records(paths)?
        .into_iter()
        .flat_map(|record| record.diff_ids_by_blob)
    {
        known
            .entry(blob)
            .and_modify(|had| {
                if had.as_ref() != Some(&diff_id) {
                    *had = None;
                }
            })
            .or_insert_with(|| Some(diff_id.clone()));
    }
    Ok(known
        .into_iter()
        .filter_map(|(blob, diff_id)| Some((blob, diff_id?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = "sha256:aa";
        assert_eq!(chain_id(None, a), a);
        let expected = format!("sha256:{}", sha256_hex(b"sha256:aa sha256:bb"));
        assert_eq!(chain_id(Some(a), "sha256:bb"), expected);
    }
}
