//! What the container's first process does inside its fresh namespaces, between
//! `clone3` and `execve`: the cgroup namespace, the overlay and the special
//! filesystems, `pivot_root`, masked and read-only `/proc` paths, hostname,
//! loopback, capability bounding set, `no_new_privs`, user, working directory —
//! and, with `--init`, a tiny reaper that stays PID 1.
//!
//! This code runs in a forked copy of a single-threaded process. On any error it
//! writes one line to the error pipe (close-on-exec, so a successful `execve` closes
//! it with nothing written) and exits.

use super::rootfs::ContainerLayer;
use super::spec::{self, LaunchSpec, Network};
use super::{Error, IoContext, Paths, Result, sys};
use crate::cgroup::{Hierarchy, Version};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Namespaces created for every container (net only with `--network none`).
pub fn clone_flags(network: Network) -> u64 {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
    if network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    flags as u64
}

/// Namespace kinds recorded in `state.json`, as named under `/proc/<pid>/ns`.
pub const NS_KINDS: &[&str] = &["mnt", "uts", "ipc", "pid", "net", "cgroup"];

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

/// Everything the child needs, prepared by the parent before `clone3`.
pub struct ChildContext<'a> {
    /// The validated launch.
    pub spec: &'a LaunchSpec,
    /// The container's overlay layer.
    pub layer: &'a ContainerLayer,
    /// Store paths.
    pub paths: &'a Paths,
    /// `containers/<id>/` (holds hostname, hosts, resolv.conf).
    pub container_dir: PathBuf,
    /// How the host mounts cgroups (to mount the container's view of them).
    pub cgroup_hierarchy: Option<&'a Hierarchy>,
}

/// The child's entry point: waits for the parent to place it in its cgroup, sets the
/// container up and execs. Never returns.
pub fn child_main(ctx: &ChildContext<'_>, mut sync: File, mut errors: File) -> ! {
    // If the supervisor dies, so does the container: it never runs unsupervised.
    if sys::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        "pdeathsig",
    )
    .is_err()
    {
        sys::exit_now(1);
    }
    let mut go = [0u8; 1];
    if !matches!(sync.read(&mut go), Ok(1)) {
        // The parent gave up (or died) before releasing us.
        sys::exit_now(1);
    }
    drop(sync);
    // Nothing of the supervisor's (pipes, the lock file, the caller's descriptors)
    // may leak into the container, nor keep a pipe open in an `--init` that never
    // execs.
    {
        use std::os::fd::AsRawFd;
        close_fds_except(errors.as_raw_fd());
    }
    let err = setup_and_exec(ctx, &mut errors);
    let _ = writeln!(errors, "{err}");
    sys::exit_now(127)
}

/// Closes every descriptor above stderr except `keep`. Runs in the forked child,
/// which never returns to the frames owning those descriptors.
fn close_fds_except(keep: i32) {
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if fd > 2 && fd != keep {
            sys::close(fd);
        }
    }
}

fn setup_and_exec(ctx: &ChildContext<'_>, errors: &mut File) -> Error {
    match prepare(ctx) {
        Ok(exec) => {
            if ctx.spec.init {
                run_init(exec, errors)
            } else {
                exec.run()
            }
        }
        Err(e) => e,
    }
}

/// A resolved `execve`.
struct Exec {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl Exec {
    fn run(&self) -> Error {
        sys::reset_signal_handlers();
        if let Err(e) = sys::sigmask(libc::SIG_SETMASK, &[]) {
            return e;
        }
        sys::execve(&self.path, &self.argv, &self.env)
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Invalid(format!("NUL byte in {s:?}")))
}

fn prepare(ctx: &ChildContext<'_>) -> Result<Exec> {
    let spec = ctx.spec;
    sys::umask(0o022);
    // Now inside the container's cgroup: make it the cgroup namespace root.
    sys::unshare(libc::CLONE_NEWCGROUP)?;
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    ctx.layer.mount(ctx.paths)?;
    let root = ctx.layer.merged.clone();
    mount_filesystems(&root)?;
    if let Some(hierarchy) = ctx.cgroup_hierarchy {
        mount_cgroups(&root, hierarchy)?;
    }
    bind_etc_files(&root, &ctx.container_dir)?;
    enter_root(&root)?;
    mask_paths()?;
    sys::sethostname(&spec.hostname)?;
    if spec.network == Network::None {
        sys::loopback_up()?;
    }
    let cwd = Path::new(&spec.cwd);
    if !cwd.is_dir() {
        std::fs::create_dir_all(cwd).at("create working directory", cwd)?;
        sys::lchown(cwd, spec.uid, spec.gid)?;
    }
    std::env::set_current_dir(cwd).at("chdir", cwd)?;
    let path = find_executable(&spec.argv[0], &spec.env)?;
    let exec = Exec {
        path: cstring(&path)?,
        argv: spec
            .argv
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<_>>()?,
        env: spec.env.iter().map(|e| cstring(e)).collect::<Result<_>>()?,
    };
    drop_privileges(spec)?;
    Ok(exec)
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

fn mount_filesystems(root: &Path) -> Result<()> {
    use libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_STRICTATIME};
    let proc_dir = root.join("proc");
    ensure_dir(&proc_dir)?;
    sys::mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MS_NOSUID | MS_NOEXEC | MS_NODEV,
        None,
    )?;
    let dev = root.join("dev");
    ensure_dir(&dev)?;
    sys::mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MS_NOSUID | MS_NODEV | MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    // The device nodes are bind mounts of the host's: each is its own mount without
    // `nodev`, while `/dev` itself and the overlay root are `nodev`. So a node the
    // container makes with mknod(2) cannot be opened, on cgroup v1 and v2 alike,
    // without depending on a device cgroup.
    for (name, _, _) in spec::DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let p = dev.join(name);
        File::create(&p).at("create", &p)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).at("chmod", &p)?;
        sys::bind(&host, &p, 0)?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).at("create directory", &pts)?;
    sys::mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MS_NOSUID | MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).at("create directory", &shm)?;
    sys::mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MS_NOSUID | MS_NOEXEC | MS_NODEV,
        Some("mode=1777,size=65536k"),
    )?;
    let mqueue = dev.join("mqueue");
    std::fs::create_dir(&mqueue).at("create directory", &mqueue)?;
    sys::mount(
        Some("mqueue"),
        &mqueue,
        Some("mqueue"),
        MS_NOSUID | MS_NOEXEC | MS_NODEV,
        None,
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        let p = dev.join(link);
        std::os::unix::fs::symlink(target, &p).at("symlink", &p)?;
    }
    let sys_dir = root.join("sys");
    ensure_dir(&sys_dir)?;
    sys::mount(
        Some("sysfs"),
        &sys_dir,
        Some("sysfs"),
        MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY,
        None,
    )?;
    Ok(())
}

/// Mounts the container's own view of its cgroups, read-only, at `/sys/fs/cgroup`
/// (the cgroup namespace makes each hierarchy's root the container's cgroup), so
/// programs can read their limits as under Docker.
fn mount_cgroups(root: &Path, hierarchy: &Hierarchy) -> Result<()> {
    use libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT};
    let target = root.join("sys/fs/cgroup");
    if !target.is_dir() {
        return Ok(());
    }
    let flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY;
    match hierarchy.version() {
        Version::V2 => sys::mount(Some("cgroup2"), &target, Some("cgroup2"), flags, None),
        Version::V1 | Version::Hybrid => {
            sys::mount(
                Some("tmpfs"),
                &target,
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
            sys::mount(None, &target, None, MS_REMOUNT | flags, None)
        }
    }
}

/// Bind-mounts the container's `hostname`, `hosts` and `resolv.conf` over `/etc`.
fn bind_etc_files(root: &Path, container_dir: &Path) -> Result<()> {
    let etc = root.join("etc");
    ensure_dir(&etc)?;
    for name in ["hostname", "hosts", "resolv.conf"] {
        let target = etc.join(name);
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                std::fs::remove_file(&target).at("remove", &target)?;
                File::create(&target).at("create", &target)?;
            }
            Err(_) => {
                File::create(&target).at("create", &target)?;
            }
        }
        sys::bind(&container_dir.join(name), &target, 0)?;
    }
    Ok(())
}

/// `pivot_root` into `root` and detach the old root.
fn enter_root(root: &Path) -> Result<()> {
    std::env::set_current_dir(root).at("chdir", root)?;
    sys::pivot_root(Path::new("."), Path::new("."))?;
    sys::umount2(Path::new("."), libc::MNT_DETACH)?;
    std::env::set_current_dir("/").at("chdir", "/")
}

fn mask_paths() -> Result<()> {
    for p in spec::MASKED_PATHS {
        let path = Path::new(p);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => sys::mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                libc::MS_RDONLY,
                Some("size=0"),
            )?,
            Ok(_) => sys::bind(Path::new("/dev/null"), path, 0)?,
            Err(_) => {}
        }
    }
    for p in spec::READONLY_PATHS {
        let path = Path::new(p);
        if std::fs::symlink_metadata(path).is_err() {
            continue;
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
        )?;
    }
    Ok(())
}

/// Finds `cmd` on the container's `PATH` (after `pivot_root`).
fn find_executable(cmd: &str, env: &[String]) -> Result<String> {
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

/// Reduces the capability bounding set to Docker's defaults, sets `no_new_privs`,
/// switches user, and leaves root with only the default capabilities.
fn drop_privileges(spec: &LaunchSpec) -> Result<()> {
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let keep: u64 = spec::DEFAULT_CAPS
        .iter()
        .fold(0, |acc, (_, n)| acc | 1u64 << n);
    for cap in 0..=last_cap {
        if keep & (1u64 << cap) == 0 {
            sys::prctl(
                libc::PR_CAPBSET_DROP,
                cap as libc::c_ulong,
                "drop capability",
            )?;
        }
    }
    sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        "clear ambient capabilities",
    )?;
    sys::set_ids(spec.uid, spec.gid, &spec.groups)?;
    if spec.uid == 0 {
        sys::capset(keep, keep, 0)?;
    }
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")?;
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
