//! The `du` of a writable layer: allocated blocks and inodes (hard links once),
//! at a capped rate of stat calls, and the size of the filesystem holding it.

use super::LayerUsage;
use super::upper::mount_source;
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Directories deeper than this are not descended into.
const MAX_DEPTH: usize = 128;

/// Measures the layer at `upper`: walk, device and filesystem size.
pub fn measure(
    upper: &Path,
    devices: &mut HashMap<u64, String>,
    limiter: &mut RateLimit,
) -> std::io::Result<LayerUsage> {
    let (usage_bytes, inodes_used) = walk(upper, limiter)?;
    let dev = std::fs::metadata(upper)?.dev();
    let device = devices
        .entry(dev)
        .or_insert_with(|| mount_source(Path::new("/proc/self/mountinfo"), dev))
        .clone();
    let (limit_bytes, inodes_free) = fs_size(upper)?;
    Ok(LayerUsage {
        device,
        usage_bytes,
        limit_bytes,
        inodes_used,
        inodes_free,
    })
}

/// Caps stat calls per second by sleeping when ahead of the rate.
#[derive(Debug)]
pub struct RateLimit {
    per_sec: u64,
    window: Instant,
    done: u64,
}

impl RateLimit {
    pub fn new(per_sec: u64) -> Self {
        RateLimit {
            per_sec: per_sec.max(1),
            window: Instant::now(),
            done: 0,
        }
    }

    fn tick(&mut self) {
        self.done += 1;
        if !self.done.is_multiple_of(256) {
            return;
        }
        let allowed = Duration::from_secs_f64(self.done as f64 / self.per_sec as f64);
        let spent = self.window.elapsed();
        if allowed > spent {
            std::thread::sleep(allowed - spent);
        }
        if spent > Duration::from_secs(1) {
            self.window = Instant::now();
            self.done = 0;
        }
    }
}

/// Walks the tree at `root` as `du` would: (bytes allocated, inodes), hard links
/// counted once, symlinks not followed, other filesystems not entered.
pub fn walk(root: &Path, limiter: &mut RateLimit) -> std::io::Result<(u64, u64)> {
    let c = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut acc = Acc {
        bytes: 0,
        inodes: 0,
        linked: HashSet::new(),
        dev: std::fs::symlink_metadata(root)?.dev(),
        limiter,
    };
    walk_dir(libc::AT_FDCWD, &c, 0, &mut acc)?;
    Ok((acc.bytes, acc.inodes))
}

struct Acc<'a> {
    bytes: u64,
    inodes: u64,
    linked: HashSet<u64>,
    dev: u64,
    limiter: &'a mut RateLimit,
}

impl Acc<'_> {
    fn count(&mut self, st: &libc::stat) {
        if st.st_nlink > 1
            && (st.st_mode & libc::S_IFMT) != libc::S_IFDIR
            && !self.linked.insert(st.st_ino)
        {
            return;
        }
        self.bytes += st.st_blocks as u64 * 512;
        self.inodes += 1;
    }
}

fn stat_at(dirfd: libc::c_int, name: &CStr) -> std::io::Result<libc::stat> {
    // SAFETY: all-zero is a valid `stat`; fstatat writes it fully on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated, `st` is a valid out pointer.
    let r = unsafe { libc::fstatat(dirfd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// Counts directory `name` (relative to `parent`) and everything below it.
fn walk_dir(
    parent: libc::c_int,
    name: &CStr,
    depth: usize,
    acc: &mut Acc<'_>,
) -> std::io::Result<()> {
    // SAFETY: `name` is NUL-terminated; the flags open a directory only.
    let fd = unsafe {
        libc::openat(
            parent,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is an open directory we own; fdopendir takes it over.
    let dir = unsafe { libc::fdopendir(fd) };
    if dir.is_null() {
        let e = std::io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let result = walk_open_dir(dir, fd, depth, acc);
    // SAFETY: `dir` came from fdopendir and is closed once (closing `fd` too).
    unsafe { libc::closedir(dir) };
    result
}

fn walk_open_dir(
    dir: *mut libc::DIR,
    fd: libc::c_int,
    depth: usize,
    acc: &mut Acc<'_>,
) -> std::io::Result<()> {
    let own = stat_at(fd, c".")?;
    acc.count(&own);
    acc.limiter.tick();
    let mut subdirs: Vec<CString> = Vec::new();
    loop {
        // SAFETY: `dir` is an open DIR stream, read by this thread only.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated
        // and lives until the next readdir on `dir`.
        let (name, kind) = unsafe { (CStr::from_ptr((*entry).d_name.as_ptr()), (*entry).d_type) };
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        if kind == libc::DT_DIR {
            subdirs.push(name.to_owned());
            continue;
        }
        let Ok(st) = stat_at(fd, name) else {
            continue; // removed meanwhile
        };
        acc.limiter.tick();
        if (st.st_mode & libc::S_IFMT) == libc::S_IFDIR {
            subdirs.push(name.to_owned());
        } else {
            acc.count(&st);
        }
    }
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    for sub in subdirs {
        // A mount point inside the layer is another filesystem: not the layer's.
        match stat_at(fd, &sub) {
            Ok(st) if st.st_dev == acc.dev => {}
            _ => continue,
        }
        match walk_dir(fd, &sub, depth + 1, acc) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// (size in bytes, free inodes) of the filesystem holding `path`.
fn fs_size(path: &Path) -> std::io::Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: all-zero is a valid `statvfs`; statvfs fills it on success.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `s` a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((s.f_blocks as u64 * s.f_frsize as u64, s.f_ffree as u64))
}
