//! Unpacking one layer's tar stream into a `diff` directory: OCI whiteouts become
//! overlayfs ones, no entry may land outside the directory, and the stream's digests
//! are checked as it is read.

use super::super::{IoContext, Result, hex, sys};
use super::{archive, corrupt};
use sha2::{Digest, Sha256};
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// A reader that hashes what passes through it.
pub(super) struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashReader<R> {
    pub(super) fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// `sha256:<hex>` of what has been read so far.
    pub(super) fn digest(&self) -> String {
        format!("sha256:{}", hex(&self.hasher.clone().finalize()))
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

/// Unpacks a (possibly compressed) layer stream into `diff` and checks its digests:
/// `compressed_digest` over the raw bytes, `expected_diff_id` over the uncompressed
/// tar. Returns the diff id.
pub(super) fn unpack_verified(
    reader: impl Read,
    diff: &Path,
    origin: &Path,
    compressed_digest: Option<&str>,
    expected_diff_id: Option<&str>,
) -> Result<String> {
    let outer = std::rc::Rc::new(std::cell::RefCell::new(HashReader::new(reader)));
    let decoded =
        archive::decompress(BufReader::new(SharedHash(outer.clone()))).at("read", origin)?;
    let mut inner = HashReader::new(decoded);
    let unpacked = unpack_layer(&mut inner, diff, origin).and_then(|()| {
        // Read to the end so the digests cover every byte (tar padding included).
        std::io::copy(&mut inner, &mut std::io::sink())
            .map(drop)
            .at("read layer", origin)
    });
    if let Some(expected) = compressed_digest {
        // A blob that is not what its digest says is the real cause of whatever
        // the decoder or tar made of it, so the digest is checked first.
        let mut outer = outer.borrow_mut();
        let rest = std::io::copy(&mut *outer, &mut std::io::sink());
        let got = outer.digest();
        if got != expected {
            return Err(corrupt(
                origin,
                format!("layer digest mismatch: expected {expected}, got {got}"),
            ));
        }
        rest.at("read layer", origin)?;
    }
    unpacked?;
    let diff_id = inner.digest();
    if let Some(expected) = expected_diff_id
        && expected != diff_id
    {
        return Err(corrupt(
            origin,
            format!("layer diff id mismatch: expected {expected}, got {diff_id}"),
        ));
    }
    Ok(diff_id)
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
    let entries = archive.entries().at("read layer", origin)?;
    for entry in entries {
        let mut entry = entry.at("read layer", origin)?;
        let raw = entry.path().at("read layer", origin)?.into_owned();
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
            let mode = header.mode().at("read layer", origin)? & 0o7777;
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
        let inside = entry.unpack_in(dest).at("unpack", dest.join(&rel))?;
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
pub(super) fn sanitize(p: &Path) -> Option<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
