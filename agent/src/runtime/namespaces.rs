//! What the container's first process does inside its fresh namespaces, between
//! `clone3` and `execve`: it applies the OCI runtime spec, and only the spec —
//! the cgroup namespace, the root filesystem, `linux.devices`, every entry of
//! `mounts`, `pivot_root`, `maskedPaths` and `readonlyPaths`, a read-only root,
//! hostname, loopback, `rlimits`, working directory, the user, the five
//! capability sets, `noNewPrivileges` and the seccomp program compiled from
//! `linux.seccomp` — and, with `--init`, a tiny reaper that stays PID 1.
//!
//! This code runs in a forked copy of a single-threaded process. On any error it
//! writes one line to the error pipe (close-on-exec, so a successful `execve` closes
//! it with nothing written) and exits.

use super::capabilities;
use super::rootfs::ContainerLayer;
use super::{Error, IoContext, Paths, Result, SysContext, sys};
use crate::cgroup::{Hierarchy, Version};
use nix::sys::prctl;
use nix::sys::resource::Resource;
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, Mount, PosixRlimitType, Process, Spec};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// The namespaces a spec asks for, as clone flags. The cgroup namespace is left
/// out: the child enters it once it is in its cgroup. Joining an existing
/// namespace (`path`) is not supported.
pub fn clone_flags(config: &Spec) -> Result<u64> {
    let mut flags = 0;
    for ns in config
        .linux()
        .iter()
        .flat_map(|l| l.namespaces().iter().flatten())
    {
        if let Some(path) = ns.path() {
            return Err(Error::Invalid(format!(
                "joining the namespace {} is not supported",
                path.display()
            )));
        }
        flags |= match ns.typ() {
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::User => libc::CLONE_NEWUSER,
            LinuxNamespaceType::Cgroup => 0,
            LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
        };
    }
    if flags & libc::CLONE_NEWNS == 0 {
        return Err(Error::Invalid(
            "the spec must ask for a mount namespace".into(),
        ));
    }
    Ok(flags as u64)
}

/// Whether the spec asks for a namespace of this kind.
pub fn has_namespace(config: &Spec, kind: LinuxNamespaceType) -> bool {
    config
        .linux()
        .iter()
        .flat_map(|l| l.namespaces().iter().flatten())
        .any(|n| n.typ() == kind)
}

/// Namespace kinds recorded in `state.json`, as named under `/proc/<pid>/ns`.
pub const NS_KINDS: &[&str] = &["mnt", "uts", "ipc", "pid", "net", "cgroup", "user"];

/// The inode numbers of `pid`'s namespaces.
pub fn namespace_inodes(pid: i32) -> std::collections::BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    NS_KINDS
        .iter()
        .filter_map(|k| {
            let m = std::fs::metadata(format!("/proc/{pid}/ns/{k}")).ok()?;
            Some((k.to_string(), m.ino()))
        })
        .collect()
}

/// How the root filesystem at `root.path` comes to be.
pub enum Rootfs<'a> {
    /// The container's overlay, mounted by the child.
    Overlay(&'a ContainerLayer, &'a Paths),
    /// Already mounted in the child's mount namespace (the user-namespace helper
    /// did it).
    Premounted,
    /// A directory (an OCI bundle's `rootfs`), bind-mounted onto itself.
    Directory,
}

/// Everything the child needs, prepared by the parent before `clone3`.
pub struct ChildContext<'a> {
    /// The spec to apply; `root.path` is absolute.
    pub config: &'a Spec,
    /// How the root filesystem is made.
    pub rootfs: Rootfs<'a>,
    /// Relative bind-mount sources are relative to this (the bundle).
    pub base_dir: PathBuf,
    /// How the host mounts cgroups (for `cgroup` mounts).
    pub cgroup_hierarchy: Option<&'a Hierarchy>,
    /// The program compiled from `linux.seccomp`.
    pub seccomp_bpf: Option<&'a [u8]>,
    /// `--init`.
    pub init: bool,
    /// Its stdin, stdout and stderr.
    pub stdio: ChildStdio,
    /// The OCI create/start split (`agent-runc create`): the container's
    /// `exec.fifo`, open read-write. The process outlives the command that
    /// made it (no parent-death signal), sets everything up, reports success
    /// by closing the error pipe, and blocks reading this until `start`
    /// writes a byte.
    pub exec_fifo: Option<std::os::fd::RawFd>,
}

/// What the container process gets as stdin, stdout and stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChildStdio {
    /// A pty slave: its controlling terminal and all three.
    pub terminal: Option<std::os::fd::RawFd>,
    /// stdout and stderr (otherwise the supervisor's).
    pub output: Option<std::os::fd::RawFd>,
    /// stdin (otherwise `/dev/null`, or the supervisor's with `inherit_stdin`).
    pub input: Option<std::os::fd::RawFd>,
    /// `-i` in the foreground: the supervisor's own stdin.
    pub inherit_stdin: bool,
}

impl ChildStdio {
    /// Puts the descriptors in place (before the others are closed).
    fn apply(&self) -> Result<()> {
        if let Some(t) = self.terminal {
            return super::terminal::become_controlling(t);
        }
        if let Some(out) = self.output {
            sys::dup2(out, 1)?;
            sys::dup2(out, 2)?;
        }
        match self.input {
            Some(i) => sys::dup2(i, 0),
            None if self.inherit_stdin => Ok(()),
            None => {
                use std::os::fd::AsRawFd;
                let null = File::open("/dev/null").at("open", "/dev/null")?;
                sys::dup2(null.as_raw_fd(), 0)
            }
        }
    }
}

/// The first step of a forked child (a container's first process, an exec):
/// it dies with its parent, and waits on `sync` for the parent to release it
/// (after placing it in its cgroup); exits when the parent gave up or died.
pub(super) fn die_with_parent_once_released(sync: File) {
    // If the supervisor dies, so does the child: it never runs unsupervised.
    if prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err() {
        sys::exit_now(1);
    }
    wait_released(sync);
}

/// Waits on `sync` for the parent to release the child; exits when the parent
/// gave up or died first.
pub(super) fn wait_released(mut sync: File) {
    let mut go = [0u8; 1];
    if !matches!(sync.read(&mut go), Ok(1)) {
        sys::exit_now(1);
    }
}

/// The child's entry point: waits for the parent to place it in its cgroup, sets the
/// container up and execs. Never returns.
pub fn child_main(ctx: &ChildContext<'_>, sync: File, mut errors: File) -> ! {
    if ctx.exec_fifo.is_some() {
        // Its caller (containerd's shim, as a subreaper) becomes its parent
        // once `create` returns.
        wait_released(sync);
    } else {
        die_with_parent_once_released(sync);
    }
    if let Err(e) = ctx.stdio.apply() {
        let _ = writeln!(errors, "{e}");
        sys::exit_now(127);
    }
    // Nothing of the supervisor's (pipes, the lock file, the caller's descriptors)
    // may leak into the container, nor keep a pipe open in an `--init` that never
    // execs.
    {
        use std::os::fd::AsRawFd;
        close_fds_except(&[Some(errors.as_raw_fd()), ctx.exec_fifo]);
    }
    let err = setup_and_exec(ctx, &mut errors);
    let _ = writeln!(errors, "{err}");
    sys::exit_now(127)
}

/// Closes every descriptor above stderr except `keep`. Runs in the forked child,
/// which never returns to the frames owning those descriptors.
pub(super) fn close_fds_except(keep: &[Option<i32>]) {
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if fd > 2 && !keep.contains(&Some(fd)) {
            sys::close(fd);
        }
    }
}

fn setup_and_exec(ctx: &ChildContext<'_>, errors: &mut File) -> Error {
    match prepare(ctx) {
        Ok(exec) => {
            if let Some(fifo) = ctx.exec_fifo
                && let Err(e) = wait_for_start(fifo, errors)
            {
                return e;
            }
            if ctx.init {
                run_init(exec, errors)
            } else {
                exec.run()
            }
        }
        Err(e) => e,
    }
}

/// The created container's wait for `start`: the error pipe is replaced by
/// stderr (closing it tells `create` that the set-up succeeded, and an `execve`
/// that fails after `start` is said on the container's stderr), then one byte
/// read from the exec FIFO releases it.
fn wait_for_start(fifo: std::os::fd::RawFd, errors: &File) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    sys::dup_cloexec(2, errors.as_raw_fd())?;
    // SAFETY: the FIFO's descriptor was inherited from `create` and nothing
    // else in this process uses it; it is close-on-exec.
    let mut fifo = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fifo) });
    let mut go = [0u8; 1];
    loop {
        match fifo.read(&mut go) {
            Ok(1) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(_) => return Err(Error::Invalid("the exec FIFO was closed".into())),
            Err(source) => {
                return Err(Error::Io {
                    op: "read",
                    path: "the exec FIFO".into(),
                    source,
                });
            }
        }
    }
}

/// A resolved `execve`.
pub(super) struct Exec {
    pub(super) path: CString,
    pub(super) argv: Vec<CString>,
    pub(super) env: Vec<CString>,
}

impl Exec {
    pub(super) fn run(&self) -> Error {
        sys::reset_signal_handlers();
        if let Err(e) = sys::sigmask(libc::SIG_SETMASK, &[]) {
            return e;
        }
        sys::execve(&self.path, &self.argv, &self.env)
    }
}

pub(super) fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|source| Error::Nul {
        what: "an argument or environment variable",
        value: s.to_string(),
        source,
    })
}

fn prepare(ctx: &ChildContext<'_>) -> Result<Exec> {
    let spec = ctx.config;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid("the spec has no process".into()))?;
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| Error::Invalid("the spec has no root".into()))?;
    let linux = spec.linux().clone().unwrap_or_default();
    sys::umask(process.user().umask().unwrap_or(0o022));
    if has_namespace(spec, LinuxNamespaceType::Cgroup) {
        // Now inside the container's cgroup: make it the cgroup namespace root.
        sys::unshare(libc::CLONE_NEWCGROUP)?;
    }
    sys::make_rprivate()?;
    match &ctx.rootfs {
        Rootfs::Overlay(layer, paths) => layer.mount(paths)?,
        Rootfs::Premounted => {}
        Rootfs::Directory => sys::bind(&root, &root, libc::MS_REC)?,
    }
    let mounts = spec.mounts().clone().unwrap_or_default();
    // In a user namespace the process becomes the namespace's root (the mapped
    // uid) before it makes anything, as files made by an unmapped uid are
    // refused. Bind sources it could no longer reach (the container's own
    // directory is root's, mode 0700) are opened first and bound through
    // `/proc/self/fd`, as runc does.
    let mut sources: Vec<Option<std::os::fd::OwnedFd>> = Vec::new();
    if has_namespace(spec, LinuxNamespaceType::User) {
        for m in &mounts {
            sources.push(if is_bind(m) {
                Some(sys::open_path(&bind_source(m, ctx))?)
            } else {
                None
            });
        }
        sys::set_ids(0, 0, &[])?;
    }
    for (i, m) in mounts.iter().enumerate() {
        let via = sources.get(i).and_then(|fd| fd.as_ref()).map(|fd| {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        });
        apply_mount(&root, m, ctx, via)?;
    }
    drop(sources);
    create_devices(&root, &linux)?;
    enter_root(&root)?;
    for p in linux.masked_paths().iter().flatten() {
        mask_path(Path::new(p))?;
    }
    for p in linux.readonly_paths().iter().flatten() {
        readonly_path(Path::new(p))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let flags = sys::mount_flags(Path::new("/"))?;
        sys::mount(
            None,
            Path::new("/"),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | flags,
            None,
        )?;
    }
    if has_namespace(spec, LinuxNamespaceType::Uts)
        && let Some(h) = spec.hostname()
    {
        sys::sethostname(h)?;
    }
    if has_namespace(spec, LinuxNamespaceType::Network) {
        sys::loopback_up()?;
    }
    for r in process.rlimits().iter().flatten() {
        sys::setrlimit(rlimit_resource(r.typ()), r.soft(), r.hard())?;
    }
    let user = process.user();
    let cwd = process.cwd();
    if !cwd.is_dir() {
        std::fs::create_dir_all(cwd).at("create working directory", cwd)?;
        sys::lchown(cwd, user.uid(), user.gid())?;
    }
    std::env::set_current_dir(cwd).at("chdir", cwd)?;
    let argv = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let first = argv
        .first()
        .ok_or_else(|| Error::Invalid("the spec's process has no args".into()))?;
    let path = find_executable(first, &env)?;
    let exec = Exec {
        path: cstring(&path)?,
        argv: argv.iter().map(|a| cstring(a)).collect::<Result<_>>()?,
        env: env.iter().map(|e| cstring(e)).collect::<Result<_>>()?,
    };
    confine(process, linux.seccomp().as_ref(), ctx.seccomp_bpf)?;
    Ok(exec)
}

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

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind") || parse_options(m.options().as_deref().unwrap_or(&[])).bind
}

/// A bind mount's source, relative ones taken from the bundle.
fn bind_source(m: &Mount, ctx: &ChildContext<'_>) -> PathBuf {
    let source = m.source().clone().unwrap_or_default();
    if source.is_absolute() {
        source
    } else {
        ctx.base_dir.join(source)
    }
}

/// Applies one entry of `mounts`; a bind mount's source is read through `via`
/// when given (an `O_PATH` descriptor's `/proc/self/fd` link).
fn apply_mount(root: &Path, m: &Mount, ctx: &ChildContext<'_>, via: Option<PathBuf>) -> Result<()> {
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
            super::userns::copy_contents(&dest, &source)?;
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
fn create_devices(root: &Path, linux: &oci_spec::runtime::Linux) -> Result<()> {
    let dev = secure_join(root, Path::new("/dev"))?;
    let mut nodes: Vec<PathBuf> = super::spec::DEVICES
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
fn enter_root(root: &Path) -> Result<()> {
    std::env::set_current_dir(root).at("chdir", root)?;
    sys::pivot_root(Path::new("."), Path::new("."))?;
    sys::umount2(Path::new("."), libc::MNT_DETACH)?;
    std::env::set_current_dir("/").at("chdir", "/")
}

fn mask_path(path: &Path) -> Result<()> {
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

fn readonly_path(path: &Path) -> Result<()> {
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

pub(super) fn rlimit_resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Finds `cmd` on the container's `PATH` (after `pivot_root`).
pub(super) fn find_executable(cmd: &str, env: &[String]) -> Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    if cmd.contains('/') {
        return Ok(cmd.to_string());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(cmd);
        if let Ok(m) = std::fs::metadata(&candidate)
            && m.is_file()
            && m.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate.to_string_lossy().into_owned());
        }
    }
    Err(Error::NotFound(format!(
        "executable {cmd:?} not found in the container's PATH ({path})"
    )))
}

fn caps_error(op: &'static str) -> impl Fn(caps::errors::CapsError) -> Error {
    move |source| Error::Caps { op, source }
}

/// The spec's process credentials and confinement, in runc's order: the bounding
/// set, then (keeping the permitted set across the switch) the user and groups,
/// then effective, permitted and inheritable, then ambient, then
/// `no_new_privs`, and the seccomp program last — or, without `no_new_privs`,
/// first, while the process still holds CAP_SYS_ADMIN to install it.
pub(super) fn confine(
    process: &Process,
    seccomp: Option<&LinuxSeccomp>,
    bpf: Option<&[u8]>,
) -> Result<()> {
    let nnp = process.no_new_privileges().unwrap_or(false);
    let load = |bpf: &[u8]| {
        let flags = seccomp.map_or(0, super::seccomp::filter_flags);
        sys::seccomp_load(bpf, flags)
    };
    if let Some(b) = bpf
        && !nnp
    {
        load(b)?;
    }
    let spec_caps = process.capabilities().clone().unwrap_or_default();
    let bounding = capabilities::kernel_set(spec_caps.bounding().as_ref())?;
    let current =
        caps::read(None, caps::CapSet::Bounding).map_err(caps_error("read the bounding set"))?;
    for cap in current.difference(&bounding) {
        caps::drop(None, caps::CapSet::Bounding, *cap)
            .map_err(caps_error("drop from the bounding set"))?;
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(caps_error("clear ambient capabilities"))?;
    prctl::set_keepcaps(true).sys("keep capabilities")?;
    let user = process.user();
    let groups = user.additional_gids().clone().unwrap_or_default();
    sys::set_ids(user.uid(), user.gid(), &groups)?;
    prctl::set_keepcaps(false).sys("keep capabilities")?;
    let mask = |set: &caps::CapsHashSet| set.iter().fold(0u64, |a, c| a | c.bitmask());
    let effective = capabilities::kernel_set(spec_caps.effective().as_ref())?;
    let permitted = capabilities::kernel_set(spec_caps.permitted().as_ref())?;
    let inheritable = capabilities::kernel_set(spec_caps.inheritable().as_ref())?;
    sys::capset(mask(&effective), mask(&permitted), mask(&inheritable))?;
    for cap in capabilities::kernel_set(spec_caps.ambient().as_ref())? {
        // As in runc, an ambient capability the kernel refuses (one missing from
        // the inheritable set, as in `runc spec`'s own config) is not fatal: the
        // ambient set can only ever hold what is already permitted and inheritable.
        let _ = caps::raise(None, caps::CapSet::Ambient, cap);
    }
    if nnp {
        prctl::set_no_new_privs().sys("set no_new_privs")?;
        if let Some(b) = bpf {
            load(b)?;
        }
    }
    Ok(())
}

/// `--init`: fork the command, stay PID 1, forward signals to it, reap every orphan,
/// and exit with the command's status (like `docker run --init`).
fn run_init(exec: Exec, errors: &mut File) -> Error {
    let all = sys::all_signals();
    if let Err(e) = sys::sigmask(libc::SIG_BLOCK, &all) {
        return e;
    }
    let child = match sys::fork() {
        Ok(0) => return exec.run(),
        Ok(pid) => pid,
        Err(e) => return e,
    };
    // Drop our copy of the error pipe (by putting /dev/null on its descriptor), so the
    // parent sees EOF as soon as the command execs.
    if let Ok(null) = File::open("/dev/null") {
        use std::os::fd::AsRawFd;
        let _ = sys::dup2(null.as_raw_fd(), errors.as_raw_fd());
    }
    loop {
        let sig = match sys::sigtimedwait(&all, std::time::Duration::from_secs(3600)) {
            Ok(s) => s,
            Err(e) => return e,
        };
        match sig {
            Some(libc::SIGCHLD) | None => loop {
                match sys::waitpid(-1, libc::WNOHANG) {
                    Ok(Some((pid, exit))) if pid == child => {
                        // Reap the rest, then leave with the command's status.
                        while let Ok(Some(_)) = sys::waitpid(-1, libc::WNOHANG) {}
                        sys::exit_now(match exit {
                            sys::Exit::Code(c) => c,
                            sys::Exit::Signal(s) => 128 + s,
                        });
                    }
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            },
            Some(s) => {
                let _ = sys::kill(child, s);
            }
        }
    }
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
