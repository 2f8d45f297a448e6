//! Where a container's writable layer is: the `upperdir=` of the overlay mounted
//! on `/` in its mount namespace, and the device that holds it, from mountinfo.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub(super) fn mnt_ns(proc_root: &Path, pid: u32) -> Option<u64> {
    std::fs::metadata(proc_root.join(pid.to_string()).join("ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// The upper dir of the overlay on `/` in the mount namespace of `pid`; `None`
/// while the task is still in the host's mount namespace, or its root is no
/// overlay with an upper dir.
pub fn upper_dir(
    proc_root: &Path,
    pid: u32,
    host_mnt: Option<u64>,
    overlay_roots: &[PathBuf],
) -> Option<PathBuf> {
    let own = mnt_ns(proc_root, pid)?;
    if Some(own) == host_mnt {
        return None;
    }
    let text = std::fs::read(proc_root.join(pid.to_string()).join("mountinfo")).ok()?;
    let upper = root_upper_dir(&text)?;
    // The path is the mounter's, and a task may have mounted an overlay of its own
    // in a namespace of its own: take only what the runtimes make (`…/diff` of
    // Docker, podman and the agent, `…/fs` of containerd's snapshots), so a
    // container cannot point the walker at some other host directory it names.
    if !matches!(
        upper.file_name().and_then(OsStr::to_str),
        Some("diff" | "fs")
    ) {
        return None;
    }
    if upper.is_absolute() {
        return Some(upper);
    }
    overlay_roots
        .iter()
        .map(|r| r.join(&upper))
        .find(|p| p.is_dir())
}

/// The fields of a mountinfo line: (major:minor, mount point, fstype, source,
/// super options), unescaped where the kernel escapes.
fn mountinfo_fields(line: &str) -> Option<(&str, String, &str, String, &str)> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let dev = l.nth(2)?;
    let point = unescape(l.nth(1)?);
    let mut r = right.split(' ');
    let fstype = r.next()?;
    let source = unescape(r.next()?);
    let options = r.next().unwrap_or("");
    Some((dev, point, fstype, source, options))
}

/// `upperdir=` of the last overlay mounted on `/` in a mountinfo text.
pub(super) fn root_upper_dir(text: &[u8]) -> Option<PathBuf> {
    let text = std::str::from_utf8(text).ok()?;
    let mut upper = None;
    for line in text.lines() {
        let Some((_, point, fstype, _, options)) = mountinfo_fields(line) else {
            continue;
        };
        if point != "/" {
            continue;
        }
        upper = None;
        if fstype != "overlay" {
            continue;
        }
        // overlayfs escapes a comma inside a path as `\,`.
        let mut rest = options;
        while !rest.is_empty() {
            let mut end = rest.len();
            let b = rest.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i] == b',' {
                    end = i;
                    break;
                }
                i += 1;
            }
            let opt = &rest[..end];
            if let Some(v) = opt.strip_prefix("upperdir=") {
                upper = Some(PathBuf::from(unescape(&v.replace("\\,", ","))));
            }
            rest = rest.get(end + 1..).unwrap_or("");
        }
    }
    upper
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsStr::from_bytes(&out).to_string_lossy().into_owned()
}

/// The source of the mount whose device is `dev` (cAdvisor's `device` label), or
/// `major:minor` when no mount shows it.
pub(super) fn mount_source(mountinfo: &Path, dev: u64) -> String {
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    std::fs::read_to_string(mountinfo)
        .ok()
        .and_then(|text| {
            text.lines()
                .filter_map(mountinfo_fields)
                .find(|(d, ..)| *d == want)
                .map(|(_, _, _, source, _)| source)
        })
        .unwrap_or(want)
}
