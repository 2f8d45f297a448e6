//! Image references (`name`, `name:tag`, `host:port/path:tag`): validation, the
//! `:latest` default, and the names an import gives an image when the user gives none.

use super::super::{Error, Result};
use std::path::Path;

/// The OCI annotation that names an image in a layout's `index.json`.
pub(super) const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Adds `:latest` when a reference has no tag.
pub fn normalize_reference(r: &str) -> String {
    let last = r.rsplit('/').next().unwrap_or(r);
    if last.contains(':') || r.contains('@') {
        r.to_string()
    } else {
        format!("{r}:latest")
    }
}

/// Accepts Docker-style references: lowercase path components, optional `:tag`,
/// optional `@sha256:<hex>` (what a pull by digest names its image).
pub fn validate_reference(r: &str) -> Result<()> {
    let bad = || Error::Invalid(format!("invalid image reference {r:?}"));
    if let Some((name, digest)) = r.split_once('@') {
        let hex = digest.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        return validate_reference(name).map_err(|_| bad());
    }
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

/// The reference for an import: `name` when given, else one made from the source's
/// file name (`busybox.tar.gz` → `busybox:latest`).
pub(super) fn default_name(source: &Path, name: Option<&str>) -> String {
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

/// The reference an OCI layout's `ref.name` annotation gives: a full reference as it
/// is, a bare tag (`latest`, `1.36`) on the layout directory's name.
pub(super) fn from_ref_annotation(ref_name: &str, layout: &Path) -> String {
    if ref_name.contains(':') || ref_name.contains('/') {
        return normalize_reference(ref_name);
    }
    let dir_name = layout
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("image");
    format!(
        "{}:{ref_name}",
        default_name(Path::new(dir_name), None).trim_end_matches(":latest")
    )
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
            format!("127.0.0.1:5000/a@sha256:{}", "0".repeat(64)).as_str(),
        ] {
            validate_reference(ok).unwrap();
        }
        for bad in [
            "",
            "Busybox",
            "a:",
            "a b",
            "a:b/c:",
            "-a",
            "a@sha256:00",
            "@sha256:",
        ] {
            assert!(validate_reference(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_reference("a"), "a:latest");
        assert_eq!(normalize_reference("host:5000/a"), "host:5000/a:latest");
        assert_eq!(normalize_reference("a:1"), "a:1");
    }

    #[test]
    fn names_from_sources() {
        assert_eq!(
            default_name(Path::new("/x/Busy Box.tar.gz"), None),
            "busy-box:latest"
        );
        assert_eq!(default_name(Path::new("/x/a.tar"), Some("b")), "b:latest");
        assert_eq!(
            from_ref_annotation("1.36", Path::new("/x/busybox-oci")),
            "busybox-oci:1.36"
        );
        assert_eq!(
            from_ref_annotation("docker.io/library/busybox", Path::new("/x/l")),
            "docker.io/library/busybox:latest"
        );
    }
}
