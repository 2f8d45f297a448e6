//! The container's filesystem as the spec describes it, made from inside its
//! mount namespace: every entry of `mounts` (options parsed, bind sources
//! resolved inside the root), `linux.devices`, the cgroup filesystem,
//! `pivot_root`, `maskedPaths` and `readonlyPaths`.

use super::ChildContext;
use crate::cgroup::{Hierarchy, Version};
use crate::runtime::{Error, IoContext, Result, sys};
use oci_spec::runtime::Mount;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// `path` under `root` with every symbolic link on the way resolved inside
/// `root` (an absolute target starts again at `root`), so a link in the image can
/// never send a mount out of the container. A `..` that would climb above `root`,
/// in the path or in a link's target, is refused: a mount there is an attack,
/// not a mistake to quietly correct.
fn secure_join(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut out = root.to_path_buf();
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            if out == root {
                return Err(Error::Invalid(format!(
                    "mount point {} climbs out of the container's root",
                    path.display()
                )));
            }
            out.pop();
            continue;
        }
        let next = out.join(&name);
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(Error::Invalid(format!(
                        "too many symbolic links under {}",
                        path.display()
                    )));
                }
                let target = std::fs::read_link(&next).at("read link", &next)?;
                if target.is_absolute() {
                    out = root.to_path_buf();
                }
                pending.extend(target.components().rev().filter_map(|c| match c {
                    Component::Normal(n) => Some(n.to_os_string()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                }));
            }
            _ => out = next,
        }
    }
    Ok(out)
}

fn ensure_dir(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if std::fs::symlink_metadata(path).is_ok() {
        std::fs::remove_file(path).at("remove", path)?;
    }
    std::fs::create_dir_all(path).at("create directory", path)
}

fn ensure_file(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => return Ok(()),
        Ok(m) if m.is_dir() => {
            return Err(Error::Invalid(format!(
                "cannot bind a file onto the directory {}",
                path.display()
            )));
        }
        Ok(_) => std::fs::remove_file(path).at("remove", path)?,
        Err(_) => {}
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).at("create directory", parent)?;
    }
    File::create(path).at("create", path).map(drop)
}

/// A mount's options split as mount(2) takes them.
#[derive(Debug, Default, PartialEq)]
struct MountOptions {
    flags: libc::c_ulong,
    propagation: libc::c_ulong,
    data: Vec<String>,
    bind: bool,
    recursive: bool,
    /// `copyup`: fill an empty bind source from what the image has at the
    /// destination (Docker's new-volume copy; like crun's `tmpcopyup`).
    copy_up: bool,
}

fn parse_options(options: &[String]) -> MountOptions {
    use libc::*;
    let mut o = MountOptions::default();
    for opt in options {
        let (set, clear): (c_ulong, c_ulong) = match opt.as_str() {
            "ro" => (MS_RDONLY, 0),
            "rw" => (0, MS_RDONLY),
            "nosuid" => (MS_NOSUID, 0),
            "suid" => (0, MS_NOSUID),
            "nodev" => (MS_NODEV, 0),
            "dev" => (0, MS_NODEV),
            "noexec" => (MS_NOEXEC, 0),
            "exec" => (0, MS_NOEXEC),
            "sync" => (MS_SYNCHRONOUS, 0),
            "async" => (0, MS_SYNCHRONOUS),
            "dirsync" => (MS_DIRSYNC, 0),
            "remount" => (MS_REMOUNT, 0),
            "mand" => (MS_MANDLOCK, 0),
            "nomand" => (0, MS_MANDLOCK),
            "atime" => (0, MS_NOATIME),
            "noatime" => (MS_NOATIME, 0),
            "diratime" => (0, MS_NODIRATIME),
            "nodiratime" => (MS_NODIRATIME, 0),
            "relatime" => (MS_RELATIME, 0),
            "norelatime" => (0, MS_RELATIME),
            "strictatime" => (MS_STRICTATIME, 0),
            "nostrictatime" => (0, MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                (0, 0)
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                (0, 0)
            }
            "copyup" => {
                o.copy_up = true;
                (0, 0)
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let p = match opt.trim_start_matches('r') {
                    "private" => MS_PRIVATE,
                    "shared" => MS_SHARED,
                    "slave" => MS_SLAVE,
                    _ => MS_UNBINDABLE,
                };
                o.propagation |= p | if opt.starts_with('r') { MS_REC } else { 0 };
                (0, 0)
            }
            _ => {
                o.data.push(opt.clone());
                (0, 0)
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    o
}

pub(super) fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind") || parse_options(m.options().as_deref().unwrap_or(&[])).bind
}

/// A bind mount's source, relative ones taken from the bundle.
pub(super) fn bind_source(m: &Mount, ctx: &ChildContext<'_>) -> PathBuf {
    let source = m.source().clone().unwrap_or_default();
    if source.is_absolute() {
        source
    } else {
        ctx.base_dir.join(source)
    }
}

/// Applies one entry of `mounts`; a bind mount's source is read through `via`
/// when given (an `O_PATH` descriptor's `/proc/self/fd` link).
pub(super) fn apply_mount(
    root: &Path,
    m: &Mount,
    ctx: &ChildContext<'_>,
    via: Option<PathBuf>,
) -> Result<()> {
    let dest = secure_join(root, m.destination())?;
    let typ = m.typ().as_deref().unwrap_or("none");
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    if typ == "cgroup" {
        ensure_dir(&dest)?;
        return match ctx.cgroup_hierarchy {
            Some(h) => mount_cgroups(&dest, h, opts.flags & libc::MS_RDONLY != 0),
            None => Ok(()),
        };
    }
    if opts.bind || typ == "bind" {
        let source = via.unwrap_or_else(|| bind_source(m, ctx));
        if opts.copy_up
            && dest.is_dir()
            && source.is_dir()
            && std::fs::read_dir(&source)
                .at("read directory", &source)?
                .next()
                .is_none()
        {
            crate::runtime::userns::copy_contents(&dest, &source)?;
        }
        if source.is_dir() {
            ensure_dir(&dest)?;
        } else {
            ensure_file(&dest)?;
        }
        let rec = if opts.recursive { libc::MS_REC } else { 0 };
        sys::bind(&source, &dest, rec)?;
        let want = opts.flags & !libc::MS_REMOUNT;
        if want != 0 {
            sys::mount(
                None,
                &dest,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | want | sys::mount_flags(&dest)?,
                None,
            )?;
        }
    } else {
        ensure_dir(&dest)?;
        let source = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| typ.to_string());
        let data = opts.data.join(",");
        sys::mount(
            Some(&source),
            &dest,
            Some(typ),
            opts.flags,
            (!data.is_empty()).then_some(data.as_str()),
        )?;
    }
    if opts.propagation != 0 {
        sys::mount(None, &dest, None, opts.propagation, None)?;
    }
    Ok(())
}

/// The device nodes of `linux.devices` plus the defaults every container gets,
/// as bind mounts of the host's nodes: each is its own mount without `nodev`,
/// while `/dev` itself and the overlay root are `nodev`. So a node the container
/// makes with mknod(2) cannot be opened, on cgroup v1 and v2 alike, without
/// depending on a device cgroup (and it works the same in a user namespace).
/// Then the `/dev` symbolic links runc makes.
pub(super) fn create_devices(root: &Path, linux: &oci_spec::runtime::Linux) -> Result<()> {
    let dev = secure_join(root, Path::new("/dev"))?;
    let mut nodes: Vec<PathBuf> = crate::runtime::spec::DEVICES
        .iter()
        .map(|(name, _, _)| PathBuf::from("/dev").join(name))
        .collect();
    for d in linux.devices().iter().flatten() {
        if !nodes.contains(d.path()) {
            nodes.push(d.path().clone());
        }
    }
    for node in nodes {
        let host = Path::new("/dev").join(node.strip_prefix("/dev").unwrap_or(&node));
        if !host.exists() {
            continue;
        }
        let p = secure_join(root, &node)?;
        ensure_file(&p)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).at("chmod", &p)?;
        sys::bind(&host, &p, 0)?;
    }
    let mut links = vec![
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ];
    if dev.join("pts/ptmx").exists() {
        links.push(("ptmx", "pts/ptmx"));
    }
    for (link, target) in links {
        let p = dev.join(link);
        if std::fs::symlink_metadata(&p).is_err() {
            std::os::unix::fs::symlink(target, &p).at("symlink", &p)?;
        }
    }
    Ok(())
}

/// Mounts the container's own view of its cgroups at `target` (the cgroup
/// namespace makes each hierarchy's root the container's cgroup), so programs can
/// read their limits as under Docker.
fn mount_cgroups(target: &Path, hierarchy: &Hierarchy, read_only: bool) -> Result<()> {
    use libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT};
    let ro = if read_only { MS_RDONLY } else { 0 };
    let flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | ro;
    match hierarchy.version() {
        Version::V2 => sys::mount(Some("cgroup2"), target, Some("cgroup2"), flags, None),
        Version::V1 | Version::Hybrid => {
            sys::mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                MS_NOSUID | MS_NODEV | MS_NOEXEC,
                Some("mode=755,size=64k"),
            )?;
            for m in hierarchy.v1_mounts() {
                let Some(name) = m.dir.file_name() else {
                    continue;
                };
                let dir = target.join(name);
                std::fs::create_dir(&dir).at("create directory", &dir)?;
                let data = m.mount_data();
                sys::mount(Some("cgroup"), &dir, Some("cgroup"), flags, Some(&data))?;
            }
            sys::mount(None, target, None, MS_REMOUNT | flags, None)
        }
    }
}

/// `pivot_root` into `root` and detach the old root.
pub(super) fn enter_root(root: &Path) -> Result<()> {
    std::env::set_current_dir(root).at("chdir", root)?;
    sys::pivot_root(Path::new("."), Path::new("."))?;
    sys::umount2(Path::new("."), libc::MNT_DETACH)?;
    std::env::set_current_dir("/").at("chdir", "/")
}

pub(super) fn mask_path(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => sys::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            libc::MS_RDONLY,
            Some("size=0"),
        ),
        Ok(_) => sys::bind(Path::new("/dev/null"), path, 0),
        Err(_) => Ok(()),
    }
}

pub(super) fn readonly_path(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    sys::bind(path, path, libc::MS_REC)?;
    sys::mount(
        None,
        path,
        None,
        libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o = parse_options(
            &[
                "nosuid",
                "noexec",
                "mode=755",
                "size=65536k",
                "ro",
                "rbind",
                "rprivate",
            ]
            .map(String::from),
        );
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_RDONLY);
        assert_eq!(o.data, ["mode=755", "size=65536k"]);
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(parse_options(&["ro", "rw"].map(String::from)).flags, 0);
    }

    #[test]
    fn secure_join_stays_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/outside/file", root.join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../x", root.join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("../tmp", root.join("etc/up")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/etc/abs")).unwrap(),
            root.join("outside/file")
        );
        assert_eq!(
            secure_join(root, Path::new("/etc/up/x")).unwrap(),
            root.join("tmp/x")
        );
        assert!(secure_join(root, Path::new("/etc/rel")).is_err());
        assert!(secure_join(root, Path::new("/etc/rel/deeper")).is_err());
        assert!(secure_join(root, Path::new("/a/../../b")).is_err());
        assert_eq!(
            secure_join(root, Path::new("/a/../b")).unwrap(),
            root.join("b")
        );
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(secure_join(root, Path::new("/loop")).is_err());
    }
}
