//! Reading image sources: sniffing what an archive holds, extracting it, and reading
//! an OCI image layout or a `docker save` directory down to one image's config and
//! layer blobs.

use super::super::{Error, IoContext, Result};
use super::reference::{self, REF_ANNOTATION};
use super::{corrupt, corrupt_by, store::sha256_hex, unpack::sanitize};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// What kind of source an import read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SourceKind {
    OciLayout,
    DockerArchive,
    RootfsTar,
}

/// One image as an OCI layout or a `docker save` archive describes it.
pub(super) struct SourceImage {
    /// `sha256:<hex>` of the config: the image id.
    pub id: String,
    pub config: ImageConfiguration,
    /// Layer blobs, bottom-most first.
    pub layers: Vec<LayerBlob>,
    /// The reference the source gives the image, if any.
    pub name: Option<String>,
}

/// One layer's blob.
pub(super) struct LayerBlob {
    pub path: PathBuf,
    /// `sha256:<hex>` of the blob as stored (compressed), when the source says.
    pub digest: Option<String>,
}

/// What an archive holds, from the names at its top level.
pub(super) fn sniff_archive(path: &Path) -> Result<SourceKind> {
    let file = std::fs::File::open(path).at("open", path)?;
    let mut archive = tar::Archive::new(decompress(BufReader::new(file)).at("read", path)?);
    let mut names = BTreeSet::new();
    let entries = archive.entries().at("read archive", path)?;
    for entry in entries {
        let entry = entry.at("read archive", path)?;
        let p = entry.path().at("read archive", path)?;
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

/// What kind of image a directory holds.
pub(super) fn dir_kind(dir: &Path) -> SourceKind {
    if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
        SourceKind::OciLayout
    } else if dir.join("manifest.json").is_file() && !dir.join("bin").exists() {
        SourceKind::DockerArchive
    } else {
        SourceKind::RootfsTar
    }
}

/// Extracts an (uncompressed or compressed) archive of image files into `dir`.
pub(super) fn extract_plain(archive: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).at("create directory", dir)?;
    let file = std::fs::File::open(archive).at("open", archive)?;
    let mut tar = tar::Archive::new(decompress(BufReader::new(file)).at("read", archive)?);
    tar.set_preserve_permissions(false);
    tar.unpack(dir).at("extract archive", archive)
}

/// Wraps `reader` in a gzip or zstd decoder when its magic bytes say so.
pub(super) fn decompress<'a, R: BufRead + 'a>(
    mut reader: R,
) -> std::io::Result<Box<dyn Read + 'a>> {
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(reader)?))
    } else {
        Ok(Box::new(reader))
    }
}

/// Packs a directory into an uncompressed tar at `out` (ownership, modes, symlinks,
/// hard links and device nodes preserved).
pub(super) fn pack_dir(dir: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::create(out).at("create", out)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    builder.append_dir_all(".", dir).at("pack directory", dir)?;
    let inner = builder.into_inner().at("write", out)?;
    inner
        .into_inner()
        .map_err(|e| e.into_error())
        .at("write", out)?
        .sync_all()
        .at("fsync", out)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let data = std::fs::read(path).at("read", path)?;
    serde_json::from_slice(&data).map_err(|e| corrupt_by(path, "invalid JSON", e))
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

/// Reads the image `tag` (or the only image) of the OCI layout at `layout`; `origin`
/// is what the user named (the layout or the archive it came in).
pub(super) fn read_oci_layout(
    layout: &Path,
    origin: &Path,
    tag: Option<&str>,
) -> Result<SourceImage> {
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
            .map_err(|e| corrupt_by(&blob_path(layout, desc.digest()), "invalid image index", e))?;
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
            .map_err(|e| corrupt_by(&manifest_path, "invalid image manifest", e))?;
    let config_digest = manifest.config().digest();
    let config_path = blob_path(layout, config_digest);
    let config: ImageConfiguration =
        serde_json::from_slice(&read_blob_verified(layout, config_digest)?)
            .map_err(|e| corrupt_by(&config_path, "invalid image config", e))?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| LayerBlob {
            path: blob_path(layout, l.digest()),
            digest: Some(l.digest().to_string()),
        })
        .collect();
    Ok(SourceImage {
        id: format!("sha256:{}", config_digest.digest()),
        config,
        layers,
        name: ref_name.map(|r| reference::from_ref_annotation(&r, origin)),
    })
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

/// Reads the one image of a `docker save` archive extracted at `dir`.
pub(super) fn read_docker_archive(dir: &Path) -> Result<SourceImage> {
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
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| corrupt_by(&config_path, "invalid image config", e))?;
    let layers = entry
        .layers
        .iter()
        .map(|l| inside(l).map(|path| LayerBlob { path, digest: None }))
        .collect::<Result<Vec<_>>>()?;
    Ok(SourceImage {
        id: format!("sha256:{}", sha256_hex(&config_bytes)),
        config,
        layers,
        name: entry.repo_tags.as_ref().and_then(|t| t.first().cloned()),
    })
}
