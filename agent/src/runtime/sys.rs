//! Thin, safe wrappers over the raw syscalls the runtime needs. All of the runtime's
//! `unsafe` lives here, each block with the reason it is sound.

use super::{Error, IoContext, Result};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("path contains a NUL byte: {}", path.display())))
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Invalid(format!("string contains a NUL byte: {s:?}")))
}

fn check(ret: libc::c_int, op: &'static str, path: &Path) -> Result<()> {
    if ret < 0 {
        Err(std::io::Error::last_os_error()).at(op, path)
    } else {
        Ok(())
    }
}

fn check_sys(ret: libc::c_long, op: &str) -> Result<libc::c_long> {
    if ret < 0 {
        Err(Error::last_os(op))
    } else {
        Ok(ret)
    }
}

/// Fills `buf` from the kernel's random pool.
pub fn getrandom(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Sys {
                op: "getrandom".into(),
                source: err,
            });
        }
        filled += n as usize;
    }
    Ok(())
}

/// `mount(2)`.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let source = source.map(cstr).transpose()?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    let target_c = cpath(target)?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: all pointers are NUL-terminated strings that outlive the call, or null
    // where mount(2) accepts null.
    let ret = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    check(ret, "mount", target)
}

/// `mount(2)` with a path as the source (bind mounts).
pub fn bind(source: &Path, target: &Path, flags: libc::c_ulong) -> Result<()> {
    let src = cpath(source)?;
    let tgt = cpath(target)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; fstype and data
    // may be null for bind mounts.
    let ret = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            std::ptr::null(),
            flags | libc::MS_BIND,
            std::ptr::null(),
        )
    };
    check(ret, "bind mount onto", target)
}

/// `umount2(2)`.
pub fn umount2(target: &Path, flags: libc::c_int) -> Result<()> {
    let tgt = cpath(target)?;
    // SAFETY: `tgt` is a NUL-terminated string that outlives the call.
    let ret = unsafe { libc::umount2(tgt.as_ptr(), flags) };
    check(ret, "unmount", target)
}

/// `pivot_root(2)`.
pub fn pivot_root(new_root: &Path, put_old: &Path) -> Result<()> {
    let new = cpath(new_root)?;
    let old = cpath(put_old)?;
    // SAFETY: both arguments are NUL-terminated strings that outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, new.as_ptr(), old.as_ptr()) };
    check(ret as libc::c_int, "pivot_root", new_root)
}

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    check_sys(ret as libc::c_long, "sethostname").map(drop)
}

/// `mknod(2)` for a device node.
pub fn mknod(path: &Path, mode: libc::mode_t, major: u32, minor: u32) -> Result<()> {
    let p = cpath(path)?;
    // SAFETY: `p` is NUL-terminated and outlives the call.
    let ret = unsafe { libc::mknod(p.as_ptr(), mode, libc::makedev(major, minor)) };
    check(ret, "mknod", path)
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
    if name.as_bytes().contains(&b'/') {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    let c = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    loop {
        // SAFETY: `dir` is an open descriptor borrowed for the call, `c` is
        // NUL-terminated and outlives it.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: `fd` was just returned by openat and is owned by nothing else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `lsetxattr(2)`.
pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let p = cpath(path)?;
    let n = cstr(name)?;
    // SAFETY: the strings are NUL-terminated; value pointer/length describe `value`.
    let ret = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(ret, "set xattr on", path)
}

/// `lchown(2)`.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    let p = cpath(path)?;
    // SAFETY: `p` is NUL-terminated and outlives the call.
    let ret = unsafe { libc::lchown(p.as_ptr(), uid, gid) };
    check(ret, "chown", path)
}

/// `unshare(2)`.
pub fn unshare(flags: libc::c_int) -> Result<()> {
    // SAFETY: unshare takes only flags.
    let ret = unsafe { libc::unshare(flags) };
    check_sys(ret as libc::c_long, "unshare").map(drop)
}

/// `prctl(2)` with integer arguments.
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong, what: &str) -> Result<()> {
    // SAFETY: the options used by the runtime take integer arguments only.
    let ret = unsafe { libc::prctl(option, arg2, 0, 0, 0) };
    check_sys(ret as libc::c_long, what).map(drop)
}

/// Sets the effective, permitted and inheritable capability sets (`capset(2)`, v3).
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |v: u64| [(v & 0xffff_ffff) as u32, (v >> 32) as u32];
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let data = [
        Data {
            effective: e[0],
            permitted: p[0],
            inheritable: i[0],
        },
        Data {
            effective: e[1],
            permitted: p[1],
            inheritable: i[1],
        },
    ];
    // SAFETY: header and a two-element data array are the v3 layout capset expects;
    // both outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    check_sys(ret, "capset").map(drop)
}

/// `setgroups`, `setgid`, `setuid`, in that order.
pub fn set_ids(uid: u32, gid: u32, groups: &[u32]) -> Result<()> {
    // SAFETY: the pointer and length describe `groups`.
    let ret = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
    check_sys(ret as libc::c_long, "setgroups")?;
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::setresgid(gid, gid, gid) };
    check_sys(ret as libc::c_long, "setgid")?;
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::setresuid(uid, uid, uid) };
    check_sys(ret as libc::c_long, "setuid").map(drop)
}

/// `kill(2)`. `Ok(false)` when the process no longer exists.
pub fn kill(pid: i32, sig: i32) -> Result<bool> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::kill(pid, sig) };
    if ret == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(Error::Sys {
            op: format!("kill({pid}, {sig})"),
            source: err,
        })
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

/// `waitpid(pid, flags)`; `Ok(None)` when `WNOHANG` found nothing.
pub fn waitpid(pid: i32, flags: libc::c_int) -> Result<Option<(i32, Exit)>> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ret < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Sys {
                op: format!("waitpid({pid})"),
                source: err,
            });
        }
        if ret == 0 {
            return Ok(None);
        }
        if libc::WIFEXITED(status) {
            return Ok(Some((ret, Exit::Code(libc::WEXITSTATUS(status)))));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Some((ret, Exit::Signal(libc::WTERMSIG(status)))));
        }
        // Stopped/continued: keep waiting.
    }
}

/// Arguments of `clone3(2)`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Fork-like `clone3(2)` into new namespaces: returns 0 in the child, the child's
/// pid in the parent. Must only be called while the process is single-threaded.
pub fn clone_fork(flags: u64) -> Result<i32> {
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: with a null stack clone3 behaves like fork(2): the child continues on a
    // copy of this stack. The caller guarantees no other threads exist, so no lock can
    // be held by a thread missing in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    check_sys(ret, "clone3").map(|pid| pid as i32)
}

/// `fork(2)`: 0 in the child. Must only be called while single-threaded.
pub fn fork() -> Result<i32> {
    // SAFETY: the caller guarantees the process is single-threaded.
    let ret = unsafe { libc::fork() };
    check_sys(ret as libc::c_long, "fork").map(|pid| pid as i32)
}

/// `setsid(2)`.
pub fn setsid() -> Result<()> {
    // SAFETY: no arguments.
    let ret = unsafe { libc::setsid() };
    check_sys(ret as libc::c_long, "setsid").map(drop)
}

/// Leaves the process immediately with `code`, without running destructors or
/// flushing stdio (used in forked children).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Blocks (`how = SIG_BLOCK`), unblocks or sets the signal mask to `sigs`; an empty
/// slice with `SIG_SETMASK` clears the mask.
pub fn sigmask(how: libc::c_int, sigs: &[i32]) -> Result<()> {
    let set = sigset(sigs);
    // SAFETY: `set` is an initialised sigset; the old-set pointer may be null.
    let ret = unsafe { libc::sigprocmask(how, &set, std::ptr::null_mut()) };
    check_sys(ret as libc::c_long, "sigprocmask").map(drop)
}

pub(super) fn sigset(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset only writes into it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Every catchable signal (for blocking all of them in an init process).
pub fn all_signals() -> Vec<i32> {
    (1..=64)
        .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP && !(32..=33).contains(&s))
        .collect()
}

/// Waits up to `timeout` for one of the blocked `sigs`; `Ok(None)` on timeout.
pub fn sigtimedwait(sigs: &[i32], timeout: std::time::Duration) -> Result<Option<i32>> {
    let set = sigset(sigs);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are initialised and outlive the call; siginfo may be null.
    let ret = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if ret < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(Error::Sys {
                op: "sigtimedwait".into(),
                source: err,
            }),
        };
    }
    Ok(Some(ret))
}

/// Resets every catchable signal's disposition to the default.
pub fn reset_signal_handlers() {
    for s in all_signals() {
        // SAFETY: setting SIG_DFL is always valid for catchable signals; errors for
        // reserved numbers are ignored.
        unsafe {
            libc::signal(s, libc::SIG_DFL);
        }
    }
}

/// `execve(2)`; returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> Error {
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    // SAFETY: path, argv and envp are NUL-terminated strings in null-terminated arrays
    // that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr()) };
    Error::Sys {
        op: format!("exec {}", path.to_string_lossy()),
        source: std::io::Error::last_os_error(),
    }
}

/// Brings the loopback interface up in the current network namespace.
pub fn loopback_up() -> Result<()> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os("socket"));
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `fd` is a socket and `req` a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS;
    // the union field written is the one these ioctls use.
    let res = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(Error::last_os("ioctl SIOCGIFFLAGS lo"))
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(Error::last_os("ioctl SIOCSIFFLAGS lo"))
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: `fd` is owned here and closed once.
    unsafe { libc::close(fd) };
    res
}

/// An exclusive `flock(2)` held until drop.
pub struct FileLock {
    _file: std::fs::File,
}

/// Takes an exclusive lock on `path` (created if missing), waiting for it.
pub fn lock_exclusive(path: &Path) -> Result<FileLock> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at("open lock file", path)?;
    loop {
        // SAFETY: the descriptor is open for the duration of the call.
        let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if ret == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).at("lock", path);
        }
    }
    Ok(FileLock { _file: file })
}

/// A pipe with both ends close-on-exec: (read, write).
pub fn pipe() -> Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-element out array.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check_sys(ret as libc::c_long, "pipe2")?;
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

/// `dup2(2)`.
pub fn dup2(from: i32, to: i32) -> Result<()> {
    // SAFETY: plain descriptor numbers; dup2 validates them.
    let ret = unsafe { libc::dup2(from, to) };
    check_sys(ret as libc::c_long, "dup2").map(drop)
}

/// `dup3(from, to, O_CLOEXEC)`: `to` becomes `from`, closed again at `execve`.
pub fn dup_cloexec(from: i32, to: i32) -> Result<()> {
    // SAFETY: plain descriptor numbers; dup3 validates them.
    let ret = unsafe { libc::dup3(from, to, libc::O_CLOEXEC) };
    check_sys(ret as libc::c_long, "dup3").map(drop)
}

/// Sets `O_NONBLOCK` on a descriptor.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: fcntl on a descriptor the caller holds open; F_GETFL/F_SETFL take
    // and return plain integers.
    let ret = unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    check_sys(ret as libc::c_long, "fcntl O_NONBLOCK").map(drop)
}

/// `mkfifo(3)`.
pub fn mkfifo(path: &Path, mode: libc::mode_t) -> Result<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let ret = unsafe { libc::mkfifo(c.as_ptr(), mode) };
    check(ret, "mkfifo", path)
}

/// `close(2)`, ignoring errors (the descriptor listing may include its own, now
/// closed, directory handle).
pub fn close(fd: i32) {
    // SAFETY: closing a descriptor number; callers guarantee nothing will use it again.
    unsafe { libc::close(fd) };
}

/// Sets the process's umask.
pub fn umask(mask: libc::mode_t) {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask) };
}

/// `setns(2)` into the namespace at `path` (e.g. `/proc/<pid>/ns/mnt`).
pub fn setns_path(path: &Path, nstype: libc::c_int) -> Result<()> {
    let file = std::fs::File::open(path).at("open namespace", path)?;
    // SAFETY: the descriptor is open for the duration of the call.
    let ret = unsafe { libc::setns(file.as_raw_fd(), nstype) };
    check(ret, "setns", path)
}

/// `setns(2)` into the namespace behind `fd`.
pub fn setns_fd(fd: BorrowedFd<'_>, nstype: libc::c_int, what: &str) -> Result<()> {
    // SAFETY: the descriptor is borrowed, so open for the duration of the call.
    let ret = unsafe { libc::setns(fd.as_raw_fd(), nstype) };
    check_sys(ret as libc::c_long, &format!("setns {what}")).map(drop)
}

/// Reads `path` with every component, symbolic links included, resolved inside
/// the directory `root` (`openat2(RESOLVE_IN_ROOT)`): a container's file read
/// from the host through `/proc/<pid>/root` can never name a host file.
/// `Ok(None)` when it does not exist.
pub fn read_in_root(root: &Path, path: &str) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let dir = std::fs::File::open(root).at("open", root)?;
    let p = cstr(path)?;
    // SAFETY: open_how is plain data; zeroed is a valid value before the fields are set.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: `p` is NUL-terminated, `how` is a valid open_how of the given size,
    // and `dir` is open for the duration of the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            p.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(err).at("open in container root", root.join(path));
    }
    // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd as libc::c_int) };
    let mut out = Vec::new();
    file.read_to_end(&mut out).at("read", root.join(path))?;
    Ok(Some(out))
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// Replaces the directory `dir` (in this mount namespace) by an idmapped mount of
/// itself, mapped through the user namespace at `userns`: `open_tree` clones it,
/// `mount_setattr(MOUNT_ATTR_IDMAP)` maps it, `move_mount` puts it over `dir`.
/// The error of `mount_setattr` says `mount_setattr` (the caller falls back on it).
pub fn idmap_over(dir: &Path, userns: &str) -> Result<()> {
    let userns_file = std::fs::File::open(userns).at("open user namespace", userns)?;
    let c = cpath(dir)?;
    // SAFETY: `c` is NUL-terminated and outlives the call; flags are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).at("open_tree", dir);
    }
    // SAFETY: open_tree returned a fresh descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns_file.as_raw_fd() as u64,
    };
    // SAFETY: `tree` is an open detached mount, the empty path is a NUL-terminated
    // literal and `attr` a valid mount_attr whose size is passed; all outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(Error::last_os(format!("mount_setattr {}", dir.display())));
    }
    // SAFETY: as above; `c` names the target directory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(ret as libc::c_int, "move_mount onto", dir)
}

/// `lgetxattr(2)`: the attribute's value, `None` when it is not set.
pub fn lgetxattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let p = cpath(path)?;
    let n = cstr(name)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: the strings are NUL-terminated; the buffer pointer/length describe `buf`.
    let ret =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if ret < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(err).at("get xattr of", path),
        };
    }
    buf.truncate(ret as usize);
    Ok(Some(buf))
}

/// `setrlimit(2)`.
pub fn setrlimit(resource: libc::c_int, soft: u64, hard: u64) -> Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is an initialised rlimit that outlives the call.
    let ret = unsafe { libc::setrlimit(resource as _, &lim) };
    check_sys(ret as libc::c_long, "setrlimit").map(drop)
}

/// Installs a classic BPF seccomp program (`struct sock_filter` array, as
/// libseccomp exports it) on this thread with seccomp(2).
pub fn seccomp_load(bpf: &[u8], flags: libc::c_ulong) -> Result<()> {
    if bpf.is_empty()
        || !bpf
            .len()
            .is_multiple_of(std::mem::size_of::<libc::sock_filter>())
    {
        return Err(Error::Invalid(format!(
            "a seccomp program of {} bytes is not a whole number of instructions",
            bpf.len()
        )));
    }
    // Copied into properly aligned instructions.
    let filter: Vec<libc::sock_filter> = bpf
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `filter`, both alive for the call; the kernel copies
    // the program.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    check_sys(ret, "seccomp").map(drop)
}

/// The mount flags of the mount at `path` that a bind remount must repeat
/// (`statvfs(3)`'s `f_flag` as `MS_*`): a remount that left out a flag the kernel
/// locked (in a user namespace) would be refused.
pub fn mount_flags(path: &Path) -> Result<libc::c_ulong> {
    let p = cpath(path)?;
    // SAFETY: statvfs is plain data; zeroed is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is NUL-terminated and `st` a valid out-pointer, both outlive the call.
    let ret = unsafe { libc::statvfs(p.as_ptr(), &mut st) };
    check(ret, "statvfs", path)?;
    let f = st.f_flag;
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

/// An `O_PATH | O_CLOEXEC` descriptor of `path` (for binding it later through
/// `/proc/self/fd` once the path itself is out of reach).
pub fn open_path(path: &Path) -> Result<OwnedFd> {
    let p = cpath(path)?;
    // SAFETY: `p` is NUL-terminated and outlives the call; flags are plain integers.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).at("open", path);
    }
    // SAFETY: open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes every mount of this mount namespace private, recursively, so nothing
/// mounted here propagates back to the host.
pub fn make_rprivate() -> Result<()> {
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
}
