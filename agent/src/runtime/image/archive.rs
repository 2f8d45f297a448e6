//! Reading image sources: sniffing what an archive holds, extracting it, and reading
//! an OCI image layout or a `docker save` directory down to one image's config and
//! layer blobs.
//!
//! A layout or archive is hostile input. Its files are opened below the directory
//! that holds them without following a symbolic link on the way, must be regular
//! files, and are read no further than their descriptor's size (a blob linked to
//! `/dev/zero` once made an import read without end). JSON read into memory is
//! capped: [`MANIFEST_MAX`] for `index.json`, indexes and manifests, [`CONFIG_MAX`]
//! for image configs.

use super::super::{Error, IoContext, Result};
use super::reference::{self, REF_ANNOTATION};
use super::safe_paths::{open_regular, sanitize};
use super::{corrupt, corrupt_by, store::sha256_hex};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fs::File;
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

/// One layer's blob: the regular file `rel` below the directory `root`.
pub(super) struct LayerBlob {
    root: PathBuf,
    rel: PathBuf,
    /// `sha256:<hex>` of the blob as stored (compressed), when the source says.
    pub digest: Option<String>,
    /// Its size in bytes, when the source says.
    pub size: Option<u64>,
}

impl LayerBlob {
    /// Where the blob is.
    pub fn path(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    /// The layout or archive directory it is in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What the source calls it: its digest, or its path in the archive.
    pub fn name(&self) -> String {
        match &self.digest {
            Some(d) => d.clone(),
            None => self.rel.display().to_string(),
        }
    }

    /// Opens the blob (see `safe_paths::open_regular`) and checks its size against the
    /// descriptor's; returns the file and its size.
    pub fn open(&self) -> Result<(File, u64)> {
        let (file, len) = open_regular(&self.root, &self.rel)?;
        if let Some(size) = self.size
            && size != len
        {
            return Err(corrupt(
                &self.root,
                format!(
                    "{}: {len} bytes, but its descriptor says {size}",
                    self.rel.display()
                ),
            ));
        }
        Ok((file, len))
    }
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

/// Largest `index.json`, nested index, image manifest or docker `manifest.json` read
/// into memory: 4 MiB, the limit of the distribution registry and of skopeo's
/// containers/image, so no image that can be pushed or pulled is refused. Real ones
/// are a few KiB.
pub(super) const MANIFEST_MAX: u64 = 4 << 20;

/// Largest image config read into memory: 16 MiB. Configs carry the build history
/// and labels and are the one JSON that grows with an image's age; containers/image
/// stops at 4 MiB, so this refuses nothing it accepts while still bounding memory.
pub(super) const CONFIG_MAX: u64 = 16 << 20;

/// What a small file read into memory must be: at most `max` bytes, and when a
/// descriptor names it, exactly its size and digest.
struct Expect<'a> {
    what: &'a str,
    max: u64,
    descriptor: Option<&'a oci_spec::image::Descriptor>,
}

/// Reads the JSON file `rel` below `root` (see `safe_paths::open_regular`) into memory, reading
/// at most one byte more than allowed and checking size and digest as it streams.
fn read_small(root: &Path, rel: &Path, expect: Expect<'_>) -> Result<Vec<u8>> {
    let Expect {
        what,
        max,
        descriptor,
    } = expect;
    let limit = descriptor.map_or(max, |d| d.size());
    if limit > max {
        return Err(corrupt(
            root,
            format!(
                "{}: a {limit}-byte {what} by its descriptor, over the {} MiB limit",
                rel.display(),
                max >> 20
            ),
        ));
    }
    let (file, len) = open_regular(root, rel)?;
    let too_big = |len: u64| {
        corrupt(
            root,
            format!(
                "{}: {len} bytes, more than {}",
                rel.display(),
                match descriptor {
                    Some(_) => format!("the {limit} its descriptor says"),
                    None => format!("the {} MiB allowed for a {what}", max >> 20),
                }
            ),
        )
    };
    if len > limit {
        return Err(too_big(len));
    }
    let mut reader = super::unpack::HashReader::new(file.take(limit + 1));
    let mut data = Vec::with_capacity(len as usize);
    reader.read_to_end(&mut data).at("read", root.join(rel))?;
    let read = data.len() as u64;
    if read > limit {
        return Err(too_big(read));
    }
    if let Some(d) = descriptor {
        if read != limit {
            return Err(corrupt(
                root,
                format!(
                    "{}: {read} bytes, but its descriptor says {limit}",
                    rel.display()
                ),
            ));
        }
        let got = reader.digest();
        if got != d.digest().to_string() {
            return Err(corrupt(
                root,
                format!(
                    "{}: digest mismatch: expected {}, got {got}",
                    rel.display(),
                    d.digest()
                ),
            ));
        }
    }
    Ok(data)
}

/// Reads and parses a small JSON file (see [`read_small`]).
fn read_json<T: serde::de::DeserializeOwned>(
    root: &Path,
    rel: &Path,
    expect: Expect<'_>,
) -> Result<T> {
    let what = expect.what;
    let data = read_small(root, rel, expect)?;
    serde_json::from_slice(&data)
        .map_err(|e| corrupt_by(root, format!("{}: invalid {what}", rel.display()), e))
}

/// `blobs/sha256/<hex>` of a digest; other algorithms are refused.
fn blob_rel(layout: &Path, digest: &oci_spec::image::Digest) -> Result<PathBuf> {
    if *digest.algorithm() != oci_spec::image::DigestAlgorithm::Sha256 {
        return Err(corrupt(
            layout,
            format!("{digest}: unsupported digest algorithm (only sha256 is)"),
        ));
    }
    Ok(Path::new("blobs/sha256").join(digest.digest()))
}

/// Reads and parses the blob a descriptor names (see [`read_small`]).
fn read_blob_json<T: serde::de::DeserializeOwned>(
    layout: &Path,
    desc: &oci_spec::image::Descriptor,
    what: &str,
    max: u64,
) -> Result<T> {
    let rel = blob_rel(layout, desc.digest())?;
    read_json(
        layout,
        &rel,
        Expect {
            what,
            max,
            descriptor: Some(desc),
        },
    )
}

/// Reads the image `tag` (or the only image) of the OCI layout at `layout`; `origin`
/// is what the user named (the layout or the archive it came in).
pub(super) fn read_oci_layout(
    layout: &Path,
    origin: &Path,
    tag: Option<&str>,
) -> Result<SourceImage> {
    let index: ImageIndex = read_json(
        layout,
        Path::new("index.json"),
        Expect {
            what: "image index",
            max: MANIFEST_MAX,
            descriptor: None,
        },
    )?;
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
        let nested: ImageIndex = read_blob_json(layout, &desc, "image index", MANIFEST_MAX)?;
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
            .ok_or_else(|| corrupt(layout, format!("{}: empty image index", desc.digest())))?;
        desc = pick;
    }
    let manifest: ImageManifest = read_blob_json(layout, &desc, "image manifest", MANIFEST_MAX)?;
    let config: ImageConfiguration =
        read_blob_json(layout, manifest.config(), "image config", CONFIG_MAX)?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| {
            Ok(LayerBlob {
                root: layout.to_path_buf(),
                rel: blob_rel(layout, l.digest())?,
                digest: Some(l.digest().to_string()),
                size: Some(l.size()),
            })
        })
        .collect::<Result<_>>()?;
    Ok(SourceImage {
        id: format!("sha256:{}", manifest.config().digest().digest()),
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
    let entries: Vec<DockerManifestEntry> = read_json(
        dir,
        Path::new("manifest.json"),
        Expect {
            what: "docker manifest",
            max: MANIFEST_MAX,
            descriptor: None,
        },
    )?;
    let entry = match entries.as_slice() {
        [one] => one,
        [] => return Err(corrupt(dir, "manifest.json: no image in it")),
        _ => {
            return Err(Error::Invalid(format!(
                "{} holds several images; save one image per archive",
                dir.join("manifest.json").display()
            )));
        }
    };
    // `docker save` links a layer that two images share (`<id>/layer.tar ->
    // ../<other>/layer.tar`): links are followed while they stay in the archive.
    let root = std::fs::canonicalize(dir).at("open", dir)?;
    let inside = |rel: &str| -> Result<PathBuf> {
        let escapes = || corrupt(dir, format!("manifest.json: {rel} is outside the archive"));
        let rel = sanitize(Path::new(rel)).ok_or_else(escapes)?;
        let real = std::fs::canonicalize(root.join(&rel)).at("open", root.join(&rel))?;
        real.strip_prefix(&root)
            .map(Path::to_path_buf)
            .map_err(|_| escapes())
    };
    let config_rel = inside(&entry.config)?;
    let config_bytes = read_small(
        &root,
        &config_rel,
        Expect {
            what: "image config",
            max: CONFIG_MAX,
            descriptor: None,
        },
    )?;
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes).map_err(|e| {
        corrupt_by(
            dir,
            format!("{}: invalid image config", config_rel.display()),
            e,
        )
    })?;
    let layers = entry
        .layers
        .iter()
        .map(|l| {
            Ok(LayerBlob {
                root: root.clone(),
                rel: inside(l)?,
                digest: None,
                size: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SourceImage {
        id: format!("sha256:{}", sha256_hex(&config_bytes)),
        config,
        layers,
        name: entry.repo_tags.as_ref().and_then(|t| t.first().cloned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(data: &[u8]) -> String {
        format!("sha256:{}", sha256_hex(data))
    }

    /// Writes `data` as a blob; returns its digest.
    fn blob(layout: &Path, data: &[u8]) -> String {
        let dir = layout.join("blobs/sha256");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(sha256_hex(data)), data).unwrap();
        sha256(data)
    }

    /// Makes `dir` a layout whose index names a manifest of `digest` and `size`.
    fn index(dir: &Path, digest: &str, size: u64) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size}]});
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    }

    /// A layout whose index names a manifest of `digest` and `size`.
    fn layout(digest: &str, size: u64) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        index(t.path(), digest, size);
        t
    }

    /// A layout with a valid manifest; its index says the manifest has `size + delta`
    /// bytes.
    fn valid_layout(delta: i64) -> (tempfile::TempDir, String) {
        let t = tempfile::tempdir().unwrap();
        let m = manifest(t.path());
        let digest = blob(t.path(), &m);
        index(t.path(), &digest, (m.len() as i64 + delta) as u64);
        (t, digest)
    }

    /// A valid manifest with an empty config and no layers.
    fn manifest(layout: &Path) -> Vec<u8> {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = blob(layout, config);
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest, "size": config.len()},
            "layers": []}))
        .unwrap()
    }

    fn refusal(layout: &Path) -> String {
        match read_oci_layout(layout, layout, None) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_valid_layout_reads() {
        let (l, _) = valid_layout(0);
        let image = read_oci_layout(l.path(), l.path(), None).unwrap();
        assert!(image.layers.is_empty());
    }

    #[test]
    fn oversized_descriptors_are_refused_before_reading() {
        // The blob does not even exist: the descriptor alone is refused.
        let l = layout(&sha256(b"x"), MANIFEST_MAX + 1);
        let err = refusal(l.path());
        assert!(err.contains("over the 4 MiB limit"), "{err}");
    }

    #[test]
    fn a_blob_longer_than_its_descriptor_is_refused() {
        let (l, _) = valid_layout(-1);
        let err = refusal(l.path());
        assert!(err.contains("more than the"), "{err}");
    }

    #[test]
    fn a_blob_with_another_digest_is_refused() {
        let (l, digest) = valid_layout(0);
        let path = l.path().join("blobs/sha256").join(&digest[7..]);
        let mut data = std::fs::read(&path).unwrap();
        data[0] = b' ';
        std::fs::write(&path, data).unwrap();
        let err = refusal(l.path());
        assert!(err.contains("digest mismatch"), "{err}");
    }

    #[test]
    fn a_huge_or_linked_index_is_refused() {
        let l = layout(&sha256(b"x"), 1);
        let index = l.path().join("index.json");
        std::fs::File::create(&index)
            .unwrap()
            .set_len(MANIFEST_MAX + 1)
            .unwrap();
        let err = refusal(l.path());
        assert!(err.contains("more than the 4 MiB allowed"), "{err}");
        std::fs::remove_file(&index).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &index).unwrap();
        let err = refusal(l.path());
        assert!(err.contains("index.json: a symbolic link"), "{err}");
    }

    #[test]
    fn other_digest_algorithms_are_refused() {
        let l = layout(&format!("sha512:{}", "a".repeat(128)), 2);
        let err = refusal(l.path());
        assert!(err.contains("unsupported digest algorithm"), "{err}");
    }

    #[test]
    fn a_missing_blob_is_an_io_error_with_its_path_and_source() {
        let l = layout(&sha256(b"{}"), 2);
        match read_oci_layout(l.path(), l.path(), None) {
            Err(Error::Io { path, source, .. }) => {
                assert_eq!(path, l.path().join("blobs/sha256").join(sha256_hex(b"{}")));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn docker_archives_follow_links_only_inside() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        std::fs::write(dir.join("c.json"), config).unwrap();
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        std::fs::write(dir.join("a/layer.tar"), b"").unwrap();
        // How `docker save` stores a layer two images share.
        std::os::unix::fs::symlink("../a/layer.tar", dir.join("b/layer.tar")).unwrap();
        let manifest = |layers: &[&str]| {
            let m = serde_json::json!([{"Config": "c.json", "Layers": layers}]);
            std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
        };
        manifest(&["a/layer.tar", "b/layer.tar"]);
        let image = read_docker_archive(dir).unwrap();
        assert_eq!(image.layers[1].rel, Path::new("a/layer.tar"));
        assert_eq!(image.id, sha256(config));

        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.tar")).unwrap();
        manifest(&["zero.tar"]);
        let err = read_docker_archive(dir)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("zero.tar is outside the archive"), "{err}");
    }
}
