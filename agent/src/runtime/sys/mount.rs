//! Mounts: `mount`, bind mounts and their flags, `umount2`, `pivot_root`, and the
//! idmapped mount of a layer.

use crate::runtime::{Error, IoContext, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

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

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Replaces the directory `dir` (in this mount namespace) by an idmapped mount of
/// itself, mapped through the user namespace at `userns`: `open_tree` clones it,
/// `mount_setattr(MOUNT_ATTR_IDMAP)` maps it, `move_mount` puts it over `dir`
/// (nix has none of the three; rustix has all but `mount_setattr`). A refused
/// `mount_setattr` is [`Error::Idmap`]: the caller falls back on it.
pub fn idmap_over(dir: &Path, userns: &str) -> Result<()> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};
    let userns_file = std::fs::File::open(userns).at("open user namespace", userns)?;
    let tree = open_tree(
        rustix::fs::CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .at("open_tree", dir)?;
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
    move_mount(
        &tree,
        "",
        rustix::fs::CWD,
        dir,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .at("move_mount onto", dir)
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
