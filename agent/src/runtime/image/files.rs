//! A layer's regular files, written straight from the tar stream: what tar's own
//! unpacking does for them (a new file, never written through an old one or a
//! link; mode, owner, mtime and xattrs from the header), with 256 KiB writes
//! instead of its 8 KiB ones and without its per-file path resolution.

use super::super::{IoContext, Result};
use super::unpack::real_dirs;
use std::ffi::OsStr;
use std::fs::{File, FileTimes, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Bytes of a file read from the stream and written at a time. ext4 caches large
/// writes in large folios, so fewer and larger writes cost the kernel less per
/// byte as well as per call.
const WRITE_CHUNK: usize = 256 << 10;

/// The pax records that carry extended attributes.
const PAX_XATTR: &[u8] = b"SCHILY.xattr.";

/// Writes one layer's regular files.
pub(super) struct FileWriter {
    buf: Vec<u8>,
    /// The parent (relative to the layer) of the last file written, known to be
    /// real directories all the way down: files come grouped by directory.
    checked: Option<PathBuf>,
}

impl FileWriter {
    pub(super) fn new() -> Self {
        FileWriter {
            buf: vec![0; WRITE_CHUNK],
            checked: None,
        }
    }

    /// Something other than a regular file was unpacked, which may have changed
    /// the directories: check them again.
    pub(super) fn forget(&mut self) {
        self.checked = None;
    }

    /// Writes regular-file `entry` at `dest/rel` (`rel` sanitized, not empty), as
    /// tar's unpacking would, creating missing parents. Returns false, having
    /// written nothing, when a parent is not a real directory (a symbolic link
    /// the layer made): tar's unpacking, which resolves such links only inside
    /// the layer, takes those.
    pub(super) fn write<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dest: &Path,
        rel: &Path,
    ) -> Result<bool> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if self.checked.as_deref() != Some(parent) {
            if !real_dirs(dest, parent)? {
                return Ok(false);
            }
            self.checked = Some(parent.to_path_buf());
        }
        let path = dest.join(rel);
        let header = entry.header();
        let mode = header.mode().at("unpack", &path)? & 0o7777;
        let owner = |id: std::io::Result<u64>| {
            id.and_then(|id| u32::try_from(id).map_err(std::io::Error::other))
                .at("unpack", &path)
        };
        let (uid, gid) = (owner(header.uid())?, owner(header.gid())?);
        // As tar does: no file comes out with mtime 0, which some tools mistake.
        let mtime = header.mtime().at("unpack", &path)?.max(1);
        let mtime = SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(mtime))
            .ok_or_else(|| std::io::Error::other(format!("mtime {mtime} out of range")))
            .at("unpack", &path)?;

        let mut file = create_new(&path).at("create", &path)?;
        let mut left = entry.size();
        while left > 0 {
            let n = entry.read(&mut self.buf).at("unpack", &path)?;
            if n == 0 {
                let eof = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the layer ends inside this file",
                );
                return Err(eof).at("unpack", &path);
            }
            file.write_all(&self.buf[..n]).at("write", &path)?;
            left = left.saturating_sub(n as u64);
        }
        file.set_times(FileTimes::new().set_accessed(mtime).set_modified(mtime))
            .at("set the times of", &path)?;
        // The owner first: chown clears the set-id bits that the mode then sets.
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).at("chown", &path)?;
        file.set_permissions(Permissions::from_mode(mode))
            .at("chmod", &path)?;
        // Records that do not parse are skipped, as tar's unpacking skips them.
        if let Some(records) = entry.pax_extensions().at("unpack", &path)? {
            for record in records.flatten() {
                if let Some(name) = record.key_bytes().strip_prefix(PAX_XATTR) {
                    xattr::FileExt::set_xattr(&file, OsStr::from_bytes(name), record.value_bytes())
                        .at("set xattr on", &path)?;
                }
            }
        }
        Ok(true)
    }
}

/// A new file at `path` (mode 0600 until its own is set). Whatever was there,
/// a file or a link, is removed rather than written through; a directory stays
/// and is an error, as with tar.
fn create_new(path: &Path) -> std::io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::super::unpack::tests::test_layer as layer;
    use super::super::unpack::unpack_layer;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path(path).unwrap();
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_000_000);
        h
    }

    fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &Path) {
        let mut h = header(path, tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name(target).unwrap();
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }

    #[test]
    fn files_get_their_content_mode_owner_mtime_and_xattrs() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("diff");
        std::fs::create_dir(&dest).unwrap();
        let body: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.user.agent", &b"yes"[..])])
            .unwrap();
        let mut h = header(
            "usr/bin/tool",
            tar::EntryType::Regular,
            0o4755,
            body.len() as u64,
        );
        h.set_cksum();
        b.append(&h, &body[..]).unwrap();
        let data = b.into_inner().unwrap();
        unpack_layer(&data[..], &dest, &layer()).unwrap();

        let path = dest.join("usr/bin/tool");
        assert_eq!(std::fs::read(&path).unwrap(), body);
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(m.mtime(), 1_000_000);
        if nix::unistd::geteuid().is_root() {
            // The set-uid bit survives the chown that would have cleared it.
            assert_eq!(m.mode() & 0o7777, 0o4755);
            assert_eq!((m.uid(), m.gid()), (1234, 5678));
        }
        match xattr::get(&path, "user.agent") {
            Ok(v) => assert_eq!(v.as_deref(), Some(&b"yes"[..])),
            Err(e) => eprintln!("no user xattrs here ({e}): not checked"),
        }
    }

    #[test]
    fn a_file_replaces_a_link_and_never_writes_through_one() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("diff");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir(&dest).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        // A link where a file comes next: the file replaces the link.
        symlink(&mut b, "f", &outside.join("victim"));
        let mut h = header("f", tar::EntryType::Regular, 0o644, 3);
        h.set_cksum();
        b.append(&h, &b"new"[..]).unwrap();
        let data = b.into_inner().unwrap();
        unpack_layer(&data[..], &dest, &layer()).unwrap();
        assert!(!outside.join("victim").exists());
        let f = dest.join("f");
        assert!(std::fs::symlink_metadata(&f).unwrap().is_file());
        assert_eq!(std::fs::read(&f).unwrap(), b"new");

        // A file below a link that leads out of the layer is refused.
        let dest = t.path().join("diff2");
        std::fs::create_dir(&dest).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        symlink(&mut b, "out", &outside);
        let mut h = header("out/passwd", tar::EntryType::Regular, 0o644, 3);
        h.set_cksum();
        b.append(&h, &b"bad"[..]).unwrap();
        let data = b.into_inner().unwrap();
        assert!(unpack_layer(&data[..], &dest, &layer()).is_err());
        assert!(!outside.join("passwd").exists());
    }

    #[test]
    fn a_layer_that_ends_inside_a_file_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("diff");
        std::fs::create_dir(&dest).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header("big", tar::EntryType::Regular, 0o644, 1 << 20);
        h.set_cksum();
        b.append(&h, std::io::Read::take(std::io::repeat(7), 1 << 20))
            .unwrap();
        let data = b.into_inner().unwrap();
        let cut = &data[..600_000];
        let err = unpack_layer(cut, &dest, &layer()).unwrap_err().to_string();
        assert!(err.contains("big"), "{err}");
    }
}
