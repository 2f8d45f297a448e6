//! User namespaces (`--userns-remap USER[:GROUP]`, Docker's daemon option made a
//! launch flag): root in the container is an unprivileged uid on the host, the
//! first of `USER`'s range in `/etc/subuid` (and `GROUP`'s, or `USER`'s, in
//! `/etc/subgid`).
//!
//! The image layers belong to host root, who is nobody inside the namespace. They
//! are shown to the container as owned by its own root through idmapped mounts
//! (`mount_setattr(MOUNT_ATTR_IDMAP)`) of each lower layer, made in the
//! container's mount namespace by a short-lived helper that still has the host's
//! privileges; the overlay is then mounted there on top. The container's own
//! `diff` and `work` are chowned to the mapped root, so what it writes is owned by
//! the mapped uid on the host. Where the layers' filesystem cannot be idmapped
//! (tmpfs before Linux 6.3, for one), the lowers are copied with their owners
//! shifted into the container's layer directory instead.

use super::rootfs::ContainerLayer;
use super::{Error, IoContext, Paths, Result, sys};
use nix::errno::Errno;
use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where subordinate ids are delegated.
pub const SUBUID: &str = "/etc/subuid";
/// Where subordinate gids are delegated.
pub const SUBGID: &str = "/etc/subgid";

/// A user namespace's map: container ids `0..size` are host ids `host..host+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First host uid (container uid 0).
    pub uid: u32,
    /// First host gid (container gid 0).
    pub gid: u32,
    /// Number of uids mapped.
    pub uid_count: u32,
    /// Number of gids mapped.
    pub gid_count: u32,
}

/// `name`'s first range in a subordinate id file (`name:start:count` lines).
fn subid_range(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| {
            let mut f = l.trim().split(':');
            if f.next()? != name {
                return None;
            }
            let start = f.next()?.parse().ok()?;
            let count: u32 = f.next()?.parse().ok()?;
            (count > 0).then_some((start, count))
        })
}

impl IdMap {
    /// The map of `USER[:GROUP]` from `/etc/subuid` and `/etc/subgid`.
    pub fn from_subid_files(spec: &str) -> Result<IdMap> {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Self::from_subid_text(spec, &read(SUBUID), &read(SUBGID))
    }

    fn from_subid_text(spec: &str, subuid: &str, subgid: &str) -> Result<IdMap> {
        let (user, group) = spec.split_once(':').unwrap_or((spec, spec));
        if user.is_empty() || group.is_empty() {
            return Err(Error::Invalid(format!(
                "--userns-remap {spec:?}: expected USER or USER:GROUP"
            )));
        }
        let missing = |file: &str, name: &str| {
            Error::NotFound(format!(
                "--userns-remap: no range for {name:?} in {file} (add a line {name}:100000:65536)"
            ))
        };
        let (uid, uid_count) = subid_range(subuid, user).ok_or_else(|| missing(SUBUID, user))?;
        let (gid, gid_count) = subid_range(subgid, group).ok_or_else(|| missing(SUBGID, group))?;
        if uid == 0 || gid == 0 {
            return Err(Error::Invalid(format!(
                "--userns-remap {spec}: a range starting at host id 0 maps container root to host root"
            )));
        }
        Ok(IdMap {
            uid,
            gid,
            uid_count,
            gid_count,
        })
    }

    fn mapping(host: u32, size: u32) -> Result<LinuxIdMapping> {
        LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(host)
            .size(size)
            .build()
            .map_err(|source| Error::Spec {
                what: "id mapping".into(),
                source,
            })
    }

    /// The spec's `linux.uidMappings` entry.
    pub fn uid_mapping(&self) -> Result<LinuxIdMapping> {
        Self::mapping(self.uid, self.uid_count)
    }

    /// The spec's `linux.gidMappings` entry.
    pub fn gid_mapping(&self) -> Result<LinuxIdMapping> {
        Self::mapping(self.gid, self.gid_count)
    }

    /// The map a spec asks for (its first uid and gid mappings of container id 0).
    pub fn from_spec(linux: &oci_spec::runtime::Linux) -> Option<IdMap> {
        let first = |m: &Option<Vec<LinuxIdMapping>>| {
            m.iter()
                .flatten()
                .find(|m| m.container_id() == 0)
                .map(|m| (m.host_id(), m.size()))
        };
        let (uid, uid_count) = first(linux.uid_mappings())?;
        let (gid, gid_count) = first(linux.gid_mappings())?;
        Some(IdMap {
            uid,
            gid,
            uid_count,
            gid_count,
        })
    }

    /// Host id of container id `id` (ids outside the map stay as they are, which
    /// inside shows as nobody).
    fn shift(id: u32, host: u32, count: u32) -> u32 {
        if id < count { host + id } else { id }
    }
}

/// Writes `pid`'s `uid_map` and `gid_map` from the spec's mappings (all of them).
pub fn write_maps(pid: i32, linux: &oci_spec::runtime::Linux) -> Result<()> {
    for (file, maps) in [
        ("uid_map", linux.uid_mappings()),
        ("gid_map", linux.gid_mappings()),
    ] {
        let text: String = maps
            .iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect();
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::write(&path, text).at("write", &path)?;
    }
    Ok(())
}

/// Gives the container's root its own layer: `diff` and `work` owned by the mapped
/// root, so copy-ups and new files land as the mapped ids.
pub fn chown_own_layer(layer: &ContainerLayer, map: &IdMap) -> Result<()> {
    for d in [&layer.upper, &layer.work, &layer.dir] {
        sys::lchown(d, map.uid, map.gid)?;
    }
    Ok(())
}

/// How the lowers were made visible to the container's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowerMode {
    /// Idmapped mounts of the image layers themselves.
    Idmapped,
    /// Copies with shifted owners (the layers' filesystem refused idmapping).
    ShiftedCopy,
}

/// In the mount namespace of `pid` (whose user namespace is already mapped), from
/// a forked helper with the host's privileges: makes the tree private, idmaps
/// every lower layer over itself and mounts the overlay. Falls back to shifted
/// copies when idmapping is refused.
pub fn mount_rootfs(
    pid: i32,
    paths: &Paths,
    layer: &ContainerLayer,
    map: &IdMap,
) -> Result<LowerMode> {
    match in_mount_namespace(pid, || {
        for lower in &layer.lowerdirs {
            sys::idmap_over(lower, &format!("/proc/{pid}/ns/user"))?;
        }
        layer.mount(paths)
    }) {
        Ok(()) => Ok(LowerMode::Idmapped),
        Err(Error::Idmap {
            source: Errno::EINVAL | Errno::EPERM | Errno::ENOSYS | Errno::EOPNOTSUPP,
            ..
        }) => {
            let copies = shifted_copies(paths, layer, map)?;
            in_mount_namespace(pid, || layer.mount_with_lowers(paths, &copies))?;
            Ok(LowerMode::ShiftedCopy)
        }
        Err(e) => Err(e),
    }
}

/// Runs `f` in a forked helper that has joined `pid`'s mount namespace (after
/// making its tree private). The helper's error comes back as this error.
fn in_mount_namespace(pid: i32, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let (mut r, mut w) = sys::pipe()?;
    match sys::fork()? {
        0 => {
            drop(r);
            let result = (|| {
                sys::setns_path(Path::new(&format!("/proc/{pid}/ns/mnt")), libc::CLONE_NEWNS)?;
                sys::make_rprivate()?;
                f()
            })();
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    // An idmap refusal crosses as its errno and layer, so the
                    // parent can fall back on it; anything else as its text.
                    let (errno, dir) = match &e {
                        Error::Idmap { dir, source } => (*source as i32, dir.display().to_string()),
                        Error::Sys { source, .. } | Error::Setns { source, .. } => {
                            (*source as i32, String::new())
                        }
                        Error::Io { source, .. } => {
                            (source.raw_os_error().unwrap_or(0), String::new())
                        }
                        _ => (0, String::new()),
                    };
                    let _ = write!(w, "{errno}\n{dir}\n{e}");
                    1
                }
            };
            sys::exit_now(code)
        }
        child => {
            drop(w);
            let mut msg = String::new();
            let _ = r.read_to_string(&mut msg);
            let status = sys::waitpid(child, 0)?;
            if msg.is_empty() && matches!(status, Some((_, sys::Exit::Code(0)))) {
                return Ok(());
            }
            let mut lines = msg.splitn(3, '\n');
            let errno: i32 = lines.next().and_then(|e| e.parse().ok()).unwrap_or(0);
            let dir = lines.next().unwrap_or("");
            let message = lines.next().unwrap_or("it failed").to_string();
            let source = (errno != 0).then(|| Errno::from_raw(errno));
            match source {
                Some(source) if !dir.is_empty() => Err(Error::Idmap {
                    dir: dir.into(),
                    source,
                }),
                _ => Err(Error::Helper {
                    what: "the rootfs helper",
                    message,
                    source,
                }),
            }
        }
    }
}

/// Copies each lower layer into `overlay2/<id>/lowers/<n>` with owners shifted by
/// `map`; returns the copies as paths relative to `overlay2/`, top-most first.
fn shifted_copies(paths: &Paths, layer: &ContainerLayer, map: &IdMap) -> Result<Vec<String>> {
    let base = layer.dir.join("lowers");
    std::fs::create_dir_all(&base).at("create directory", &base)?;
    let mut out = Vec::new();
    for (n, lower) in layer.lowerdirs.iter().enumerate() {
        let dst = base.join(n.to_string());
        if !dst.exists() {
            copy_shifted(lower, &dst, map)?;
        }
        let rel = dst
            .strip_prefix(paths.overlay())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| dst.to_string_lossy().into_owned());
        out.push(rel);
    }
    Ok(out)
}

/// Copies what the directory `src` holds into the existing directory `dst`,
/// owners, modes and links as they are, and gives `dst` the owner and mode of
/// `src` (Docker's copy of an image directory into a new volume).
pub(super) fn copy_contents(src: &Path, dst: &Path) -> Result<()> {
    let same = IdMap {
        uid: 0,
        gid: 0,
        uid_count: 0,
        gid_count: 0,
    };
    for entry in std::fs::read_dir(src).at("read directory", src)? {
        let entry = entry.at("read directory", src)?;
        copy_shifted(&entry.path(), &dst.join(entry.file_name()), &same)?;
    }
    let meta = std::fs::metadata(src).at("stat", src)?;
    sys::lchown(dst, meta.uid(), meta.gid())?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .at("chmod", dst)
}

fn copy_shifted(src: &Path, dst: &Path, map: &IdMap) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).at("stat", src)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        std::fs::create_dir(dst).at("create directory", dst)?;
        for entry in std::fs::read_dir(src).at("read directory", src)? {
            let entry = entry.at("read directory", src)?;
            copy_shifted(&entry.path(), &dst.join(entry.file_name()), map)?;
        }
        if let Some(v) = sys::lgetxattr(src, "trusted.overlay.opaque")? {
            sys::lsetxattr(dst, "trusted.overlay.opaque", &v)?;
        }
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).at("read link", src)?;
        std::os::unix::fs::symlink(&target, dst).at("symlink", dst)?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        sys::mknod(
            dst,
            meta.mode(),
            libc::major(meta.rdev()),
            libc::minor(meta.rdev()),
        )?;
    } else if ft.is_file() {
        std::fs::copy(src, dst).at("copy", src)?;
    } else {
        // Sockets have no place in an image layer.
        return Ok(());
    }
    sys::lchown(
        dst,
        IdMap::shift(meta.uid(), map.uid, map.uid_count),
        IdMap::shift(meta.gid(), map.gid, map.gid_count),
    )?;
    if !ft.is_symlink() {
        // chown cleared set-id bits; put the mode back.
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .at("chmod", dst)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_ranges_resolve() {
        let subuid = "# comment\nalice:100000:65536\nbob:200000:1000\n";
        let subgid = "alice:300000:65536\nstaff:400000:10\n";
        let m = IdMap::from_subid_text("alice", subuid, subgid).unwrap();
        assert_eq!(
            (m.uid, m.uid_count, m.gid, m.gid_count),
            (100000, 65536, 300000, 65536)
        );
        let m = IdMap::from_subid_text("bob:staff", subuid, subgid).unwrap();
        assert_eq!((m.uid, m.gid), (200000, 400000));
        let e = IdMap::from_subid_text("carol", subuid, subgid).unwrap_err();
        assert!(e.to_string().contains("/etc/subuid"), "{e}");
        assert!(IdMap::from_subid_text("", subuid, subgid).is_err());
        assert!(IdMap::from_subid_text("root", "root:0:10\n", "root:0:10\n").is_err());
        assert_eq!(IdMap::shift(0, 100000, 65536), 100000);
        assert_eq!(IdMap::shift(70000, 100000, 65536), 70000);
    }
}
