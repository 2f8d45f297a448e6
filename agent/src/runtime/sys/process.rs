//! Processes: fork and `clone3`, exec, kill and wait, identity, capabilities,
//! limits and the seccomp program.

use crate::runtime::{Error, Result, SysContext};
use nix::errno::Errno;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};

/// `setgroups`, `setgid`, `setuid`, in that order.
pub fn set_ids(uid: u32, gid: u32, groups: &[u32]) -> Result<()> {
    let groups: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
    nix::unistd::setgroups(&groups).sys("setgroups")?;
    let gid = Gid::from_raw(gid);
    nix::unistd::setresgid(gid, gid, gid).sys("setgid")?;
    let uid = Uid::from_raw(uid);
    nix::unistd::setresuid(uid, uid, uid).sys("setuid")
}

/// Sets the effective, permitted and inheritable capability sets at once
/// (`capset(2)`, v3, through rustix). nix has no capset, and the caps crate sets
/// one set per call, which the kernel refuses in some orders.
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets, set_capabilities};
    let sets = CapabilitySets {
        effective: CapabilitySet::from_bits_retain(effective),
        permitted: CapabilitySet::from_bits_retain(permitted),
        inheritable: CapabilitySet::from_bits_retain(inheritable),
    };
    set_capabilities(None, sets).sys("capset")
}

/// `kill(2)`, any signal number (real-time ones too, which nix's `Signal` cannot
/// name and rustix's only through an `unsafe` constructor). `Ok(false)` when the
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

/// `waitpid(pid, flags)`, where a `pid` of -1 (or any other below 1: process
/// groups are not waited for here) means any child; `Ok(None)` when `WNOHANG`
/// found nothing. Through rustix, as nix's `WaitStatus` refuses a death by a
/// real-time signal.
pub fn waitpid(pid: i32, flags: libc::c_int) -> Result<Option<(i32, Exit)>> {
    use rustix::process::{Pid, WaitOptions};
    let options = WaitOptions::from_bits_retain(flags as u32);
    let which = if pid > 0 { Pid::from_raw(pid) } else { None };
    loop {
        let (child, status) = match rustix::process::waitpid(which, options) {
            Err(rustix::io::Errno::INTR) => continue,
            other => match other.sys("waitpid")? {
                Some(found) => found,
                None => return Ok(None),
            },
        };
        let child = child.as_raw_nonzero().get();
        if let Some(code) = status.exit_status() {
            return Ok(Some((child, Exit::Code(code))));
        }
        if let Some(signal) = status.terminating_signal() {
            return Ok(Some((child, Exit::Signal(signal))));
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
/// flushing stdio (used in forked children). nix has no `_exit`.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
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

/// `setrlimit(2)`.
pub fn setrlimit(resource: nix::sys::resource::Resource, soft: u64, hard: u64) -> Result<()> {
    nix::sys::resource::setrlimit(resource, soft, hard).sys("setrlimit")
}

/// Installs a classic BPF seccomp program (`struct sock_filter` array, as
/// libseccomp exports it) on this thread with seccomp(2), which neither nix nor
/// rustix has.
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

/// Sets the process's umask.
pub fn umask(mask: libc::mode_t) {
    nix::sys::stat::umask(Mode::from_bits_truncate(mask));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child killed by a real-time signal is reported with its number (nix's
    /// `WaitStatus` cannot hold one).
    #[test]
    fn waitpid_reports_a_death_by_a_real_time_signal() {
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "kill -s 40 $$; sleep 5"])
            .spawn()
            .expect("spawn sh");
        let pid = child.id() as i32;
        let (reaped, exit) = waitpid(pid, 0).expect("waitpid").expect("a child");
        assert_eq!((reaped, exit), (pid, Exit::Signal(40)));
        // Reaped above: std's own wait now finds no child, which is the point.
        assert!(child.wait_with_output().is_err());
    }
}
