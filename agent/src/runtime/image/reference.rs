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

/// Accepts Docker-style references by the distribution grammar
/// ([`parse_registry_reference`]): lowercase path components, optional `:tag`,
/// optional `@sha256:<hex>` (what a pull by digest names its image; the store
/// knows sha256 digests only).
pub fn validate_reference(r: &str) -> Result<()> {
    let bad = || Error::Invalid(format!("invalid image reference {r:?}"));
    let parts = parse_registry_reference(r).map_err(|_| bad())?;
    let sha256_hex = |d: &str| {
        d.strip_prefix("sha256:")
            .is_some_and(|h| h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    };
    if parts.digest.as_deref().is_some_and(|d| !sha256_hex(d)) {
        return Err(bad());
    }
    Ok(())
}

/// A registry reference split into its parts, as the distribution grammar and
/// Docker read it: `busybox` is `docker.io` / `library/busybox` / tag `latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Parses `[DOMAIN/]PATH[:TAG][@DIGEST]` by the distribution reference grammar
/// (what `oci_client::Reference`'s parser accepts, tags in ASCII). Hand-written:
/// that parser's regex (a Unicode `\w` repeated 128 times) took ~40 ms to compile,
/// a fifth of a whole pull of a small image.
pub fn parse_registry_reference(
    r: &str,
) -> std::result::Result<RegistryRef, oci_client::ParseError> {
    use oci_client::ParseError as E;
    if r.is_empty() {
        return Err(E::NameEmpty);
    }
    let (rest, digest) = match r.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (r, None),
    };
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (rest, None),
    };
    let tag_ok = |t: &str| {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let b = t.as_bytes();
        (1..=128).contains(&b.len())
            && word(b[0])
            && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
    };
    if !valid_name(name) || tag.is_some_and(|t| !tag_ok(t)) {
        return Err(E::ReferenceInvalidFormat);
    }
    if let Some(d) = digest {
        let Some((algorithm, hex)) = d.split_once(':') else {
            return Err(E::ReferenceInvalidFormat);
        };
        let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
            part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                && part.bytes().all(|c| c.is_ascii_alphanumeric())
        });
        if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(E::ReferenceInvalidFormat);
        }
        let want = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(E::DigestUnsupported),
        };
        if hex.len() != want {
            return Err(E::DigestInvalidLength);
        }
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > 255 {
        return Err(E::NameTooLong);
    }
    let tag = match (tag, digest) {
        (None, None) => Some("latest".to_string()),
        (tag, _) => tag.map(str::to_string),
    };
    Ok(RegistryRef {
        registry,
        repository,
        tag,
        digest: digest.map(str::to_string),
    })
}

/// `[DOMAIN/]PATH(/PATH)*`: path components are lowercase alphanumeric runs joined
/// by `.`, `_`, `__` or dashes; a domain is dot-separated host labels with an
/// optional `:port`.
fn valid_name(name: &str) -> bool {
    let path_ok = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        let (mut i, mut prev_alnum) = (0, false);
        while i < b.len() {
            if alnum(b[i]) {
                prev_alnum = true;
                i += 1;
                continue;
            }
            // A separator must sit between two alphanumeric runs.
            let start = i;
            match b[i] {
                b'.' => i += 1,
                b'_' if b.get(i + 1) == Some(&b'_') => i += 2,
                b'_' => i += 1,
                b'-' => {
                    while b.get(i) == Some(&b'-') {
                        i += 1;
                    }
                }
                _ => return false,
            }
            if !prev_alnum || start == 0 || !b.get(i).copied().is_some_and(alnum) {
                return false;
            }
            prev_alnum = false;
        }
        prev_alnum
    };
    let domain_ok = |d: &str| {
        let (host, port) = match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        };
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        };
        host.split('.').all(label_ok)
            && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
    };
    let mut comps = name.split('/');
    let Some(first) = comps.next() else {
        return false;
    };
    let rest: Vec<&str> = comps.collect();
    rest.iter().all(|c| path_ok(c)) && (path_ok(first) || (!rest.is_empty() && domain_ok(first)))
}

/// Docker's reading of a name's first component: a registry when it has a `.` or a
/// `:` or is `localhost`, else the path on Docker Hub (`library/` for one-word names).
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, remainder) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".to_string();
    }
    if domain == "docker.io" && !remainder.contains('/') {
        return (domain, format!("library/{remainder}"));
    }
    (domain, remainder)
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

    /// The hand-written parser agrees with `oci_client::Reference`'s regex.
    #[test]
    fn registry_references_parse_as_oci_client_parses_them() {
        let d64 = "a".repeat(64);
        let cases = [
            "busybox".to_string(),
            "busybox:1.36".into(),
            "library/busybox".into(),
            "docker.io/busybox".into(),
            "index.docker.io/library/busybox:latest".into(),
            "localhost/a".into(),
            "localhost:5000/a/b:c".into(),
            "127.0.0.1:5000/bench/three:1".into(),
            "quay.io/a/b".into(),
            "reg-1.example.com:443/x_y/z__w/v--u.t:V1.2_3-4".into(),
            format!("a/b@sha256:{d64}"),
            format!("a/b:t@sha256:{d64}"),
            format!("a@sha512:{}", "0".repeat(128)),
            format!("a@sha384:{}", "0".repeat(96)),
            format!("a@md5:{}", "0".repeat(32)),
            format!("a@sha256:{}", "0".repeat(40)),
            "a@sha256:00".into(),
            format!("a@sha256:{}", "g".repeat(64)),
            format!("a@sha256{d64}"),
            "".into(),
            "A".into(),
            "Host.com/a".into(),
            "host:5000".into(),
            "host:5000/A".into(),
            "a:".into(),
            ":a".into(),
            "a:b:c".into(),
            "a/:b".into(),
            "a//b".into(),
            "/a".into(),
            "a/".into(),
            "a..b".into(),
            "a._b".into(),
            "a___b".into(),
            "a__b".into(),
            "a-".into(),
            "-a".into(),
            "a.".into(),
            ".a".into(),
            "_a".into(),
            "a-_b".into(),
            "a.b/c".into(),
            "-host.com/a".into(),
            "host-.com/a".into(),
            "h_st.com/a".into(),
            "host.com:/a".into(),
            "host.com:x/a".into(),
            "a:b/c".into(),
            "a:-x".into(),
            "a:.x".into(),
            "a:_x".into(),
            format!("a:{}", "t".repeat(128)),
            format!("a:{}", "t".repeat(129)),
            format!("a/{}", "b".repeat(260)),
            "a b".into(),
            "a@b@c".into(),
        ];
        for case in &cases {
            let ours = parse_registry_reference(case);
            let theirs = oci_client::Reference::try_from(case.as_str());
            match (&ours, &theirs) {
                (Ok(o), Ok(t)) => assert_eq!(
                    (
                        o.registry.as_str(),
                        o.repository.as_str(),
                        o.tag.as_deref(),
                        o.digest.as_deref()
                    ),
                    (t.registry(), t.repository(), t.tag(), t.digest()),
                    "{case}"
                ),
                (Err(o), Err(t)) => assert_eq!(o, t, "{case}"),
                _ => panic!("{case:?}: ours {ours:?}, oci-client's {theirs:?}"),
            }
        }
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
