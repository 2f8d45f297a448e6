//! Paths that come from outside data: an entry path made relative (refused when it
//! climbs with `..`), and a source's regular file opened below its directory
//! without following a symbolic link.

use super::super::{Error, IoContext, Result, sys};
use super::corrupt;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// What a file is, for messages.
pub(super) fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        "symbolic link"
    } else if t.is_dir() {
        "directory"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else {
        "regular file"
    }
}

/// Opens the regular file `rel` below the directory `root`, following no symbolic
/// link below `root` (each component is opened with `O_NOFOLLOW`, directories with
/// `O_DIRECTORY`, the file with `O_NONBLOCK` so a FIFO cannot block the open).
/// Returns the file and its size. What is not a directory or a regular file where
/// one is needed is refused as corrupt data of `root`.
pub(super) fn open_regular(root: &Path, rel: &Path) -> Result<(File, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let names = rel
        .components()
        .map(|c| match c {
            std::path::Component::Normal(n) => Ok(n),
            _ => Err(corrupt(
                root,
                format!("{}: not a plain relative path", rel.display()),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let Some((file_name, dirs)) = names.split_last() else {
        return Err(corrupt(root, "an empty path where a file was expected"));
    };
    let refuse = |walked: &Path, err: std::io::Error, wanted: &str| -> Error {
        let full = root.join(walked);
        let not = matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR));
        match std::fs::symlink_metadata(&full) {
            Ok(m) if not => corrupt(
                root,
                format!(
                    "{}: a {}, not a {wanted}",
                    walked.display(),
                    kind_of(m.file_type())
                ),
            ),
            _ => Error::Io {
                op: "open",
                path: full,
                source: err,
            },
        }
    };
    let mut dir: std::os::fd::OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(root)
        .at("open", root)?
        .into();
    let mut walked = PathBuf::new();
    for name in dirs {
        walked.push(name);
        dir = sys::openat_nofollow(dir.as_fd(), name, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| refuse(&walked, e, "directory"))?;
    }
    walked.push(file_name);
    let fd = sys::openat_nofollow(dir.as_fd(), file_name, libc::O_RDONLY | libc::O_NONBLOCK)
        .map_err(|e| refuse(&walked, e, "regular file"))?;
    let file = File::from(fd);
    let meta = file.metadata().at("stat", root.join(&walked))?;
    if !meta.is_file() {
        return Err(corrupt(
            root,
            format!(
                "{}: a {}, not a regular file",
                walked.display(),
                kind_of(meta.file_type())
            ),
        ));
    }
    Ok((file, meta.len()))
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
    fn sanitize_rejects_parent_components() {
        assert_eq!(sanitize(Path::new("/./a/b")).unwrap(), PathBuf::from("a/b"));
        assert!(sanitize(Path::new("a/../../etc")).is_none());
    }
}
