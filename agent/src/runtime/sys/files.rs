//! Files and descriptors: opens that never follow a link out, extended
//! attributes, owners, device nodes and FIFOs, locks, pipes and `dup2`.

use crate::runtime::{IoContext, Result, SysContext};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

/// `mknod(2)` for a device node; `mode` holds the file type and permissions.
pub fn mknod(path: &Path, mode: libc::mode_t, major: u32, minor: u32) -> Result<()> {
    let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
    let perm = Mode::from_bits_truncate(mode & !libc::S_IFMT);
    let dev = nix::sys::stat::makedev(major.into(), minor.into());
    nix::sys::stat::mknod(path, kind, perm, dev).at("mknod", path)
}

/// `openat(2)` of one name in the directory `dir`, never following a symbolic link
/// there: `O_NOFOLLOW | O_CLOEXEC` are added to `flags`, and a name with a `/` (which
/// would walk through further, unchecked, components) is refused. Returns the bare
/// `errno` so the caller can name the whole path it was opening.
pub fn openat_nofollow(
    dir: BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    flags: libc::c_int,
) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    if name.as_bytes().contains(&b'/') {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    loop {
        match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
            Err(Errno::EINTR) => continue,
            other => return other.map_err(std::io::Error::from),
        }
    }
}

/// `lsetxattr(2)`.
pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    xattr::set(path, name, value).at("set xattr on", path)
}

/// `lgetxattr(2)`: the attribute's value, `None` when it is not set (or the
/// filesystem has no extended attributes).
pub fn lgetxattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    match xattr::get(path, name) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(None),
        other => other.at("get xattr of", path),
    }
}

/// `lchown(2)`.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    nix::unistd::fchownat(
        AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .at("chown", path)
}

/// An exclusive `flock(2)` held until drop.
pub struct FileLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes an exclusive lock on `path` (created if missing), waiting for it.
pub fn lock_exclusive(path: &Path) -> Result<FileLock> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at("open lock file", path)?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive) {
            Ok(lock) => return Ok(FileLock { _lock: lock }),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(e).at("lock", path),
        }
    }
}

/// A pipe with both ends close-on-exec: (read, write).
pub fn pipe() -> Result<(std::fs::File, std::fs::File)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).sys("pipe2")?;
    Ok((r.into(), w.into()))
}

/// `dup2(2)` onto a descriptor number (stdio, or one being replaced in place);
/// nix's `dup2` wants the target as an `OwnedFd`, which these are not.
pub fn dup2(from: i32, to: i32) -> Result<()> {
    // SAFETY: plain descriptor numbers; dup2 validates them.
    let ret = unsafe { libc::dup2(from, to) };
    Errno::result(ret).map(drop).sys("dup2")
}

/// `dup3(from, to, O_CLOEXEC)`: `to` becomes `from`, closed again at `execve`.
/// By hand for the same reason as [`dup2`].
pub fn dup_cloexec(from: i32, to: i32) -> Result<()> {
    // SAFETY: plain descriptor numbers; dup3 validates them.
    let ret = unsafe { libc::dup3(from, to, libc::O_CLOEXEC) };
    Errno::result(ret).map(drop).sys("dup3")
}

/// Sets `O_NONBLOCK` on a descriptor.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).sys("fcntl O_NONBLOCK")?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags))
        .map(drop)
        .sys("fcntl O_NONBLOCK")
}

/// `mkfifo(3)`.
pub fn mkfifo(path: &Path, mode: libc::mode_t) -> Result<()> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(mode)).at("mkfifo", path)
}

/// `close(2)`, ignoring errors (the descriptor listing may include its own, now
/// closed, directory handle). Callers guarantee nothing will use `fd` again.
pub fn close(fd: i32) {
    let _ = nix::unistd::close(fd);
}

/// Reads `path` with every component, symbolic links included, resolved inside
/// the directory `root` (`openat2(RESOLVE_IN_ROOT)`): a container's file read
/// from the host through `/proc/<pid>/root` can never name a host file.
/// `Ok(None)` when it does not exist.
pub fn read_in_root(root: &Path, path: &str) -> Result<Option<Vec<u8>>> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    use std::io::Read;
    let dir = std::fs::File::open(root).at("open", root)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = match nix::fcntl::openat2(&dir, path, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e).at("open in container root", root.join(path)),
    };
    let mut out = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut out)
        .at("read", root.join(path))?;
    Ok(Some(out))
}
