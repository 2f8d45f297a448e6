//! The image readers' entry points for the fuzz targets (wrapped by
//! `crate::fuzzing`): layer unpacking, whiteout and path classification, and OCI
//! layout and `docker save` reading, each behind a signature that needs none of
//! this module's private types.

use super::{Result, archive, unpack};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Unpacks a (possibly compressed) layer stream into the existing directory `dest`,
/// as an import does (whiteouts, device nodes, digests; no expected digest).
/// Returns the diff id.
pub fn unpack_layer(layer: &[u8], dest: &Path) -> Result<String> {
    let layer_ref = unpack::LayerRef {
        file: Path::new("fuzz/layer.tar"),
        source: Path::new("fuzz"),
        label: "layer 1/1".into(),
    };
    unpack::unpack_verified(layer, dest, &layer_ref, unpack::Expected::default())
}

/// What a layer entry's name makes of it, as the unpacker decides.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout {
    /// An ordinary entry.
    No,
    /// The opaque marker: its directory hides the layers below.
    Opaque,
    /// A whiteout hiding this name in the entry's directory.
    Hide(OsString),
}

/// Classifies a layer entry path: sanitized (`None`: it climbs with `..`), then, when
/// not empty, as a whiteout or not for an entry of type `kind`.
pub fn classify_entry(
    raw: &Path,
    kind: tar::EntryType,
) -> Option<(PathBuf, Option<std::result::Result<Whiteout, String>>)> {
    let rel = super::safe_paths::sanitize(raw)?;
    let class = (rel.file_name().is_some()).then(|| {
        unpack::whiteout(&rel, kind).map(|w| match w {
            unpack::Whiteout::No => Whiteout::No,
            unpack::Whiteout::Opaque => Whiteout::Opaque,
            unpack::Whiteout::Hide(name) => Whiteout::Hide(name.to_owned()),
        })
    });
    Some((rel, class))
}

/// What an image source was read down to.
#[derive(Debug)]
pub struct SourceSummary {
    /// `sha256:<hex>` of the config.
    pub id: String,
    /// The reference the source gives the image.
    pub name: Option<String>,
    /// Each layer blob's path, and what opening it (size checked) gave.
    pub layers: Vec<(PathBuf, std::result::Result<u64, String>)>,
}

/// How the caller renders an error (the CLI's one line).
pub type Render = fn(super::Error) -> String;

/// Reads the OCI layout at `layout` (`tag`: pick the image of that reference) and
/// opens each layer blob it names.
pub fn read_oci_layout(
    layout: &Path,
    tag: Option<&str>,
    render: Render,
) -> std::result::Result<SourceSummary, String> {
    summary(archive::read_oci_layout(layout, layout, tag), render)
}

/// Reads the `docker save` directory `dir` and opens each layer file it names.
pub fn read_docker_archive(
    dir: &Path,
    render: Render,
) -> std::result::Result<SourceSummary, String> {
    summary(archive::read_docker_archive(dir), render)
}

fn summary(
    read: Result<archive::SourceImage>,
    render: Render,
) -> std::result::Result<SourceSummary, String> {
    let image = read.map_err(render)?;
    Ok(SourceSummary {
        id: image.id,
        name: image.name,
        layers: image
            .layers
            .iter()
            .map(|l| (l.path(), l.open().map(|(_, len)| len).map_err(render)))
            .collect(),
    })
}
