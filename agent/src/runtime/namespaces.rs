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
//!
//! [`mounts`] makes the container's filesystem; [`confine`] sets its
//! credentials, capabilities and seccomp last.

mod confine;
mod mounts;

pub(super) use confine::{confine, rlimit_resource};
use mounts::{
    apply_mount, bind_source, create_devices, enter_root, is_bind, mask_path, readonly_path,
};

use super::rootfs::ContainerLayer;
use super::{Error, IoContext, Paths, Result, sys};
use crate::cgroup::Hierarchy;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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
    /// The cgroup v1 `tasks` files it writes `0` into once released, placing
    /// itself (see `ContainerCgroup::self_placement`); empty when the parent
    /// placed it.
    pub cgroup_tasks: Vec<PathBuf>,
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
    if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err() {
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

/// The child's entry point: waits for the parent to place it in its cgroup (or to
/// release it to place itself), sets the container up and execs. Never returns.
pub fn child_main(ctx: &ChildContext<'_>, sync: File, mut errors: File) -> ! {
    if ctx.exec_fifo.is_some() {
        // Its caller (containerd's shim, as a subreaper) becomes its parent
        // once `create` returns.
        wait_released(sync);
    } else {
        die_with_parent_once_released(sync);
    }
    if let Err(e) = join_cgroup(&ctx.cgroup_tasks) {
        let _ = writeln!(errors, "{e}");
        sys::exit_now(127);
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

/// Moves this (single-threaded) process into its cgroup on each v1 hierarchy,
/// before anything else it does is accounted.
fn join_cgroup(tasks: &[PathBuf]) -> Result<()> {
    for file in tasks {
        std::fs::write(file, "0").at("join cgroup", file)?;
    }
    Ok(())
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
