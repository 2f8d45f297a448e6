//! Namespaces: `unshare`, `setns`, the hostname and the loopback interface of a
//! new network namespace.

use crate::runtime::{Error, IoContext, Result, SysContext};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> Result<()> {
    nix::unistd::sethostname(name).sys("sethostname")
}

/// `unshare(2)`.
pub fn unshare(flags: libc::c_int) -> Result<()> {
    nix::sched::unshare(CloneFlags::from_bits_retain(flags)).sys("unshare")
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
