//! An OCI image layout and a `docker save` directory, read down to one image's
//! config and layer blobs: `index.json`, nested indexes, manifests and configs
//! through the capped, digest-checked readers, and the layer files they name.
//!
//! The input is parts separated by `\n---\n`. Part 0 is both `index.json` (OCI)
//! and `manifest.json` (Docker); part N ≥ 1 is stored as the blob of its digest and
//! as the file `N`, or, when it starts with `@link:`, as a symbolic link `N` (and
//! blob) to the rest. So that the fuzzer can name blobs, `$DN` in a part becomes
//! `sha256:<hex>` of part N and `$SN` its size (parts refer to later parts).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const SEPARATOR: &[u8] = b"\n---\n";
const LINK: &[u8] = b"@link:";
const MAX_PARTS: usize = 10;
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < MAX_PARTS {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces `$DN` and `$SN` for the parts already final (`done[N]`).
fn substitute(part: &[u8], done: &[Option<(String, usize)>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(part.len());
    let mut i = 0;
    while i < part.len() {
        if part[i] == b'$'
            && let Some(&[kind @ (b'D' | b'S'), digit]) = part.get(i + 1..i + 3)
            && let Some(n) = (digit as char).to_digit(10)
            && let Some(Some((digest, size))) = done.get(n as usize)
        {
            match kind {
                b'D' => out.extend_from_slice(digest.as_bytes()),
                _ => out.extend_from_slice(size.to_string().as_bytes()),
            }
            i += 3;
            continue;
        }
        out.push(part[i]);
        i += 1;
    }
    out
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| agent_fuzz::scratch_dir("agent-fuzz-image-"))
}

fn one_line(r: &Result<agent::fuzzing::SourceSummary, String>) {
    if let Err(e) = r {
        assert!(!e.contains(char::is_control), "not one plain line: {e}");
    }
}

fuzz_target!(|data: &[u8]| {
    let parts = split(data);
    // Final bytes of each part, last first, so a part can name the ones after it.
    let mut done: Vec<Option<(String, usize)>> = vec![None; parts.len()];
    let mut bytes: Vec<Vec<u8>> = vec![Vec::new(); parts.len()];
    for i in (0..parts.len()).rev() {
        let b = substitute(parts[i], &done);
        done[i] = Some((format!("sha256:{}", hex(&Sha256::digest(&b))), b.len()));
        bytes[i] = b;
    }

    let layout = scratch().join("layout");
    let _ = std::fs::remove_dir_all(&layout);
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("create the layout");
    std::fs::write(layout.join("oci-layout"), OCI_LAYOUT).expect("write oci-layout");
    std::fs::write(layout.join("index.json"), &bytes[0]).expect("write index.json");
    std::fs::write(layout.join("manifest.json"), &bytes[0]).expect("write manifest.json");
    for (n, b) in bytes.iter().enumerate().skip(1) {
        let (digest, _) = done[n].as_ref().expect("final");
        let blob = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
        let file = layout.join(n.to_string());
        match b.strip_prefix(LINK) {
            Some(target) => {
                let target = Path::new(OsStr::from_bytes(target));
                let _ = std::os::unix::fs::symlink(target, &blob);
                let _ = std::os::unix::fs::symlink(target, &file);
            }
            None => {
                std::fs::write(&blob, b).expect("write a blob");
                std::fs::write(&file, b).expect("write a file");
            }
        }
    }
    let real_root = std::fs::canonicalize(&layout).expect("the layout's real path");
    let sizes: Vec<u64> = bytes.iter().map(|b| b.len() as u64).collect();

    for tag in [None, Some("latest")] {
        let oci = agent::fuzzing::read_oci_layout(&layout, tag);
        one_line(&oci);
        if let Ok(image) = &oci {
            // The image id is the digest of a config it read, and so of a part.
            assert!(
                done.iter().flatten().any(|(d, _)| *d == image.id),
                "{}",
                image.id
            );
            for (path, opened) in &image.layers {
                assert!(path.starts_with(&layout), "{}", path.display());
                if let Ok(len) = opened {
                    assert!(sizes.contains(len));
                }
            }
        }
    }
    let docker = agent::fuzzing::read_docker_archive(&layout);
    one_line(&docker);
    if let Ok(image) = &docker {
        assert!(
            image.id.starts_with("sha256:") && image.id.len() == 71,
            "{}",
            image.id
        );
        for (path, opened) in &image.layers {
            assert!(
                path.starts_with(&real_root),
                "{} is outside",
                path.display()
            );
            if let Ok(len) = opened {
                assert!(
                    sizes.contains(len) || *len == OCI_LAYOUT.len() as u64,
                    "{len} bytes"
                );
            }
        }
    }
});
