//! Entry points for the fuzz targets in `fuzz/`: the parsers of outside input that
//! are private to their modules, re-exported or wrapped here. Not an API: hidden
//! from the docs and free to change with the targets. The parsers that are public
//! anyway (`cgroup::parse`, `ebpf::events::decode_record`, `runtime::units`,
//! `server::control`, `server::web_config`…) are called where they are.
//!
//! Errors come back as the line the `agent` binary would print for them.

use crate::runtime::image::fuzzing as image;
use std::path::Path;

pub use crate::cli::serve::parse_duration;
pub use image::{SourceSummary, Whiteout, classify_entry};

fn line(e: crate::runtime::Error) -> String {
    crate::cli::one_line(&e.into())
}

/// Unpacks a (possibly compressed) layer stream into the existing directory `dest`,
/// as an import does. Returns the diff id.
pub fn unpack_layer(layer: &[u8], dest: &Path) -> Result<String, String> {
    image::unpack_layer(layer, dest).map_err(line)
}

/// Reads the OCI layout at `layout` (`tag`: the image of that reference) and opens
/// each layer blob it names.
pub fn read_oci_layout(layout: &Path, tag: Option<&str>) -> Result<SourceSummary, String> {
    image::read_oci_layout(layout, tag, line)
}

/// Reads the `docker save` directory `dir` and opens each layer file it names.
pub fn read_docker_archive(dir: &Path) -> Result<SourceSummary, String> {
    image::read_docker_archive(dir, line)
}

/// The user and password of an HTTP `Authorization: Basic` header value, as the
/// server reads them; `None` when it is not one.
pub fn basic_auth_credentials(header: &[u8]) -> Option<(String, String)> {
    let value = hyper::header::HeaderValue::from_bytes(header).ok()?;
    crate::server::basic_auth::credentials(&value)
}
