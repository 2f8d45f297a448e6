//! The runtime's syscalls: a thin layer over nix that names each failure (the
//! path, or the operation) in the runtime's [`Error`].
//!
//! What stays hand-written is what nix lacks: `clone3`, `capset`'s v3 layout,
//! `open_tree` + `mount_setattr` + `move_mount`, `seccomp(2)`, the loopback
//! ioctls, and the calls that must carry real-time signals (nix's `Signal` has
//! none, so its `kill`, `waitpid`, `SigSet` and `signal` cannot stand for
//! `SIGRTMIN+n`, which `agent kill` and the supervisor's forwarding send).
//! Each such `unsafe` block says why it is sound.

use super::{Error, IoContext, Result, SysContext};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Fills `buf` from the kernel's random pool.
pub fn getrandom(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(Error::Random)
}

/// `mount(2)`; `flags` are `MS_*` bits.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    nix::mount::mount(
        source,
        target,
        fstype,
        MsFlags::from_bits_retain(flags),
        data,
    )
    .at("mount", target)
}

/// `mount(2)` with a path as the source (bind mounts).
pub fn bind(source: &Path, target: &Path, flags: libc::c_ulong) -> Result<()> {
    let flags = MsFlags::from_bits_retain(flags) | MsFlags::MS_BIND;
    nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>)
        .at("bind mount onto", target)
}

/// `umount2(2)`.
pub fn umount2(target: &Path, flags: libc::c_int) -> Result<()> {
    nix::mount::umount2(target, MntFlags::from_bits_retain(flags)).at("unmount", target)
}

/// `pivot_root(2)`.
pub fn pivot_root(new_root: &Path, put_old: &Path) -> Result<()> {
    nix::unistd::pivot_root(new_root, put_old).at("pivot_root", new_root)
}

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> Result<()> {
    nix::unistd::sethostname(name).sys("sethostname")
}

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

/// `unshare(2)`.
pub fn unshare(flags: libc::c_int) -> Result<()> {
    nix::sched::unshare(CloneFlags::from_bits_retain(flags)).sys("unshare")
}

/// Sets the effective, permitted and inheritable capability sets at once
/// (`capset(2)`, v3). nix has no capset, and the caps crate sets one set per
/// call, which the kernel refuses in some orders.
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
    let data = [0, 1].map(|w| Data {
        effective: e[w],
        permitted: p[w],
        inheritable: i[w],
    });
    // SAFETY: header and a two-element data array are the v3 layout capset expects;
    // both outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    Errno::result(ret).map(drop).sys("capset")
}

/// `setgroups`, `setgid`, `setuid`, in that order.
pub fn set_ids(uid: u32, gid: u32, groups: &[u32]) -> Result<()> {
    let groups: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
    nix::unistd::setgroups(&groups).sys("setgroups")?;
    let gid = Gid::from_raw(gid);
    nix::unistd::setresgid(gid, gid, gid).sys("setgid")?;
    let uid = Uid::from_raw(uid);
    nix::unistd::setresuid(uid, uid, uid).sys("setuid")
}

/// `kill(2)`, any signal number (real-time ones too). `Ok(false)` when the
/// process no longer exists.
pub fn kill(pid: i32, sig: i32) -> Result<bool> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::kill(pid, sig) };
    match Errno::result(ret) {
        Ok(_) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(source) => Err(Error::Kill {
            pid,
            signal: sig,
            source,
        }),
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by a signal (real-time ones included).
    Signal(i32),
}

/// `waitpid(pid, flags)`; `Ok(None)` when `WNOHANG` found nothing. By hand, as
/// nix's `WaitStatus` refuses a death by a real-time signal.
pub fn waitpid(pid: i32, flags: libc::c_int) -> Result<Option<(i32, Exit)>> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        let ret = match Errno::result(ret) {
            Err(Errno::EINTR) => continue,
            other => other.sys("waitpid")?,
        };
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
/// nix has no clone3 (its `clone` needs a stack of its own).
pub fn clone_fork(flags: u64) -> Result<i32> {
    clone_fork_into(flags, None)
}

/// `CLONE_INTO_CGROUP` (libc declares it as a `c_int`, which cannot hold it).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`clone_fork`], the child born in the cgroup2 directory open at `cgroup`
/// (`CLONE_INTO_CGROUP`, Linux 5.7) when given.
pub fn clone_fork_into(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> Result<i32> {
    let mut args = CloneArgs {
        flags: flags | cgroup.map_or(0, |_| CLONE_INTO_CGROUP),
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |fd| fd.as_raw_fd() as u64),
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
    Errno::result(ret).map(|pid| pid as i32).sys("clone3")
}

/// `fork(2)`: 0 in the child. Must only be called while single-threaded.
pub fn fork() -> Result<i32> {
    use nix::unistd::ForkResult;
    // SAFETY: the caller guarantees the process is single-threaded, so the child
    // inherits no lock held by a thread that does not exist there.
    match unsafe { nix::unistd::fork() }.sys("fork")? {
        ForkResult::Child => Ok(0),
        ForkResult::Parent { child } => Ok(child.as_raw()),
    }
}

/// `setsid(2)`.
pub fn setsid() -> Result<()> {
    nix::unistd::setsid().map(drop).sys("setsid")
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
    Errno::result(ret).map(drop).sys("sigprocmask")
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
    match Errno::result(ret) {
        Ok(sig) => Ok(Some(sig)),
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
        Err(source) => Err(Error::Sys {
            op: "sigtimedwait",
            source,
        }),
    }
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
    let source = match nix::unistd::execve(path, argv, envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    use std::os::unix::ffi::OsStrExt;
    Error::Io {
        op: "exec",
        path: std::ffi::OsStr::from_bytes(path.to_bytes()).into(),
        source: source.into(),
    }
}

/// Brings the loopback interface up in the current network namespace (nix
/// offers neither these interface ioctls nor, as built here, sockets).
pub fn loopback_up() -> Result<()> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let fd = Errno::result(fd).sys("socket")?;
    // SAFETY: socket returned a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sock` is a socket and `req` a valid ifreq for SIOCGIFFLAGS; the
    // kernel writes the flags into the union.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(ret).sys("ioctl SIOCGIFFLAGS lo")?;
    // SAFETY: SIOCGIFFLAGS filled the union's flags field, which is read and
    // written here and is the one SIOCSIFFLAGS reads.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above, with `req` read by the kernel.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(ret).map(drop).sys("ioctl SIOCSIFFLAGS lo")
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
pub fn dup_cloexec(from: i32, to: i32) -> Result<()> {
    // SAFETY: plain descriptor numbers; dup3 validates them.
    let ret = unsafe { libc::dup3(from, to, libc::O_CLOEXEC) };
    Errno::result(ret).map(drop).sys("dup3")
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
    Errno::result(ret).map(drop).sys("fcntl O_NONBLOCK")
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

/// Sets the process's umask.
pub fn umask(mask: libc::mode_t) {
    nix::sys::stat::umask(Mode::from_bits_truncate(mask));
}

/// `setns(2)` into the namespace at `path` (e.g. `/proc/<pid>/ns/mnt`).
pub fn setns_path(path: &Path, nstype: libc::c_int) -> Result<()> {
    let file = std::fs::File::open(path).at("open namespace", path)?;
    nix::sched::setns(&file, CloneFlags::from_bits_retain(nstype)).at("setns", path)
}

/// `setns(2)` into the `kind` namespace behind `fd`.
pub fn setns_fd(fd: BorrowedFd<'_>, nstype: libc::c_int, kind: &'static str) -> Result<()> {
    nix::sched::setns(fd, CloneFlags::from_bits_retain(nstype))
        .map_err(|source| Error::Setns { kind, source })
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
/// `mount_setattr(MOUNT_ATTR_IDMAP)` maps it, `move_mount` puts it over `dir`
/// (none of the three is in nix). A refused `mount_setattr` is [`Error::Idmap`]:
/// the caller falls back on it.
pub fn idmap_over(dir: &Path, userns: &str) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let userns_file = std::fs::File::open(userns).at("open user namespace", userns)?;
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|source| Error::Nul {
        what: "a layer path",
        value: dir.display().to_string(),
        source,
    })?;
    // SAFETY: `c` is NUL-terminated and outlives the call; flags are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    let fd = Errno::result(fd).at("open_tree", dir)?;
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
    Errno::result(ret).map_err(|source| Error::Idmap {
        dir: dir.to_path_buf(),
        source,
    })?;
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
    Errno::result(ret).map(drop).at("move_mount onto", dir)
}

/// `setrlimit(2)`.
pub fn setrlimit(resource: nix::sys::resource::Resource, soft: u64, hard: u64) -> Result<()> {
    nix::sys::resource::setrlimit(resource, soft, hard).sys("setrlimit")
}

/// Installs a classic BPF seccomp program (`struct sock_filter` array, as
/// libseccomp exports it) on this thread with seccomp(2), which nix lacks.
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
    Errno::result(ret).map(drop).sys("seccomp")
}

/// The mount flags of the mount at `path` that a bind remount must repeat
/// (`statvfs(3)`'s `f_flag` as `MS_*`): a remount that left out a flag the kernel
/// locked (in a user namespace) would be refused.
pub fn mount_flags(path: &Path) -> Result<libc::c_ulong> {
    use nix::sys::statvfs::FsFlags;
    let f = nix::sys::statvfs::statvfs(path)
        .at("statvfs", path)?
        .flags();
    let mut flags = MsFlags::empty();
    for (st_flag, ms_flag) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(st_flag) {
            flags |= ms_flag;
        }
    }
    Ok(flags.bits())
}

/// An `O_PATH | O_CLOEXEC` descriptor of `path` (for binding it later through
/// `/proc/self/fd` once the path itself is out of reach).
pub fn open_path(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).at("open", path)
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
