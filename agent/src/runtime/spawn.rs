//! Starting a container's first process: its stdio, `clone3` into the spec's
//! namespaces, the user namespace's maps and rootfs, the cgroup, the release and
//! the wait for its `execve` (or, for `agent-runc create`, for its set-up). Shared
//! by the supervisor (`agent launch`, `agent run`) and the OCI runtime command
//! line ([`super::oci_runtime`]).

use super::namespaces::{self, ChildContext, ChildStdio, Rootfs};
use super::restart::RestartPolicy;
use super::rootfs::ContainerLayer;
use super::state::{self, ContainerState, Status};
use super::terminal;
use super::userns::{self, IdMap};
use super::{Error, IoContext, Paths, Result, seccomp, sys};
use crate::cgroup::ContainerCgroup;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

/// A container ready to start: its spec and how its root comes to be.
pub(super) struct Prepared {
    /// The spec the child applies (`root.path` absolute, `cgroupsPath` set); it
    /// is also `config.json`.
    pub(super) config: Spec,
    /// The overlay layer (image launches); `None` for a bundle's rootfs.
    pub(super) layer: Option<ContainerLayer>,
    /// Relative bind sources are relative to this.
    pub(super) base_dir: PathBuf,
    /// The compiled `linux.seccomp`.
    pub(super) seccomp_bpf: Option<Vec<u8>>,
    /// `--init`.
    pub(super) init: bool,
    /// `-d`.
    pub(super) detach: bool,
    /// `--rm`.
    pub(super) auto_remove: bool,
    /// `--restart`.
    pub(super) restart: RestartPolicy,
    /// `-i`.
    pub(super) interactive: bool,
    /// `-t`.
    pub(super) tty: bool,
    /// The OCI create/start split: the exec FIFO the process waits on, and what
    /// runs between placing it in its cgroup and releasing it (the prestart and
    /// createRuntime hooks, given its pid).
    pub(super) oci: Option<OciStart>,
}

/// How `agent-runc create` starts a container: stdio inherited from the caller,
/// the process left waiting on its exec FIFO, hooks run before its set-up.
pub(super) struct OciStart {
    /// The FIFO, open read-write (so it never reads end-of-file).
    pub exec_fifo: OwnedFd,
    /// Runs with the process's pid, in its namespaces, before its set-up.
    pub before_release: Box<dyn Fn(i32) -> Result<()>>,
    /// The pty slave of `process.terminal` (its master went to the console socket).
    pub terminal: Option<OwnedFd>,
}

/// The compiled program of the spec's `linux.seccomp`, from the store's cache.
pub(super) fn compile_seccomp(paths: &Paths, config: &Spec) -> Result<Option<Vec<u8>>> {
    config
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(|s| seccomp::compiled(&paths.root().join("seccomp"), s))
        .transpose()
}
/// A started container process and the supervisor's ends of its stdio.
pub(super) struct Started {
    pub(super) pid: i32,
    /// The pty master (`-t`).
    pub(super) master: Option<OwnedFd>,
    /// The read end of its stdout and stderr (detached, no terminal).
    pub(super) output: Option<OwnedFd>,
    /// The write end of its stdin (detached with `-i`, no terminal).
    pub(super) input: Option<OwnedFd>,
}

/// The container process's stdio and the supervisor's ends of it.
fn make_stdio(prepared: &Prepared) -> Result<(ChildStdio, [Option<OwnedFd>; 3], Vec<OwnedFd>)> {
    let mut stdio = ChildStdio {
        inherit_stdin: prepared.interactive && !prepared.detach || prepared.oci.is_some(),
        ..ChildStdio::default()
    };
    if let Some(oci) = &prepared.oci {
        // The caller's stdio, or the terminal whose master it was sent.
        stdio.terminal = oci.terminal.as_ref().map(|t| t.as_raw_fd());
        return Ok((stdio, [None, None, None], Vec::new()));
    }
    // The child's ends, closed here once it has them.
    let mut theirs = Vec::new();
    let mut master = None;
    let mut output = None;
    let mut input = None;
    if prepared.tty {
        let pty = terminal::openpty()?;
        stdio.terminal = Some(pty.slave.as_raw_fd());
        theirs.push(pty.slave);
        master = Some(pty.master);
    } else if prepared.detach {
        let (r, w) = sys::pipe()?;
        stdio.output = Some(w.as_raw_fd());
        theirs.push(OwnedFd::from(w));
        output = Some(OwnedFd::from(r));
        if prepared.interactive {
            let (r, w) = sys::pipe()?;
            stdio.input = Some(r.as_raw_fd());
            theirs.push(OwnedFd::from(r));
            input = Some(OwnedFd::from(w));
        }
    }
    Ok((stdio, [master, output, input], theirs))
}

/// Clones the container process, places it in its cgroup, releases it and waits
/// until it has exec'd.
pub(super) fn start(
    paths: &Paths,
    prepared: &Prepared,
    cg: &ContainerCgroup,
    st: &mut ContainerState,
) -> Result<Started> {
    let (stdio, [master, output, input], theirs) = make_stdio(prepared)?;
    let config = &prepared.config;
    let linux = config.linux().clone().unwrap_or_default();
    let user_ns = namespaces::has_namespace(config, LinuxNamespaceType::User);
    let flags = namespaces::clone_flags(config)?;
    let (sync_r, mut sync_w) = sys::pipe()?;
    let (mut err_r, err_w) = sys::pipe()?;
    let rootfs = match &prepared.layer {
        Some(_) if user_ns => Rootfs::Premounted,
        Some(layer) => Rootfs::Overlay(layer, paths),
        None => Rootfs::Directory,
    };
    // The process places itself in its cgroup (no parent write to a
    // `cgroup.procs`, see `ContainerCgroup::self_placement`), except in a user
    // namespace, whose root may not write the host's cgroup files, and for
    // `agent-runc create`, whose hooks expect it placed before they run.
    let placement = if user_ns || prepared.oci.is_some() {
        None
    } else {
        cg.self_placement()
    };
    let self_placed = placement.is_some();
    let into_dir = placement.as_ref().and_then(|p| p.clone_into.clone());
    let into = match &into_dir {
        Some(dir) => Some(std::fs::File::open(dir).at("open cgroup", dir)?),
        None => None,
    };
    let ctx = ChildContext {
        config,
        rootfs,
        base_dir: prepared.base_dir.clone(),
        cgroup_hierarchy: cg.hierarchy(),
        seccomp_bpf: prepared.seccomp_bpf.as_deref(),
        init: prepared.init,
        stdio,
        exec_fifo: prepared.oci.as_ref().map(|o| o.exec_fifo.as_raw_fd()),
        cgroup_tasks: placement.map(|p| p.v1_tasks).unwrap_or_default(),
    };
    // A kernel before 5.7 refuses CLONE_INTO_CGROUP: then the pid is written.
    let (pid, write_into) = match sys::clone_fork_into(flags, into.as_ref().map(|f| f.as_fd())) {
        Ok(pid) => (pid, None),
        Err(_) if into.is_some() => (sys::clone_fork(flags)?, into_dir.as_ref()),
        Err(e) => return Err(e),
    };
    if pid == 0 {
        drop(sync_w);
        drop(err_r);
        namespaces::child_main(&ctx, sync_r, err_w);
    }
    drop(sync_r);
    drop(err_w);
    drop(theirs);
    let placed = (|| -> Result<()> {
        if user_ns {
            userns::write_maps(pid, &linux)?;
            if let Some(layer) = &prepared.layer {
                let map = IdMap::from_spec(&linux).ok_or_else(|| {
                    Error::Invalid("a user namespace needs uid and gid mappings of root".into())
                })?;
                userns::mount_rootfs(pid, paths, layer, &map)?;
            }
        }
        if !self_placed {
            cg.add_process(pid)?;
        } else if let Some(dir) = write_into {
            let procs = dir.join("cgroup.procs");
            std::fs::write(&procs, pid.to_string()).at("write", &procs)?;
        }
        if let Some(oci) = &prepared.oci {
            (oci.before_release)(pid)?;
        }
        Ok(())
    })();
    if let Err(e) = placed {
        let _ = sys::kill(pid, libc::SIGKILL);
        let _ = sys::waitpid(pid, 0);
        return Err(e);
    }
    // Record the pid before releasing the child, so `stop`/`kill` can find it, and
    // its namespaces while it is sure to be alive (a short command may be gone by
    // the time exec is confirmed). It enters its cgroup namespace only once released.
    st.pid = Some(pid);
    let mut ns = namespaces::namespace_inodes(pid);
    ns.remove("cgroup");
    sync_w
        .write_all(b"1")
        .at("release container process", "sync pipe")?;
    drop(sync_w);
    let mut msg = String::new();
    let _ = err_r.read_to_string(&mut msg);
    if !msg.trim().is_empty() {
        let _ = sys::waitpid(pid, 0);
        st.pid = None;
        return Err(Error::Invalid(format!(
            "starting the container: {}",
            msg.trim()
        )));
    }
    if prepared.oci.is_some() {
        // Waiting on its exec FIFO until `agent-runc start`.
        st.status = Status::Created;
        st.supervisor_pid = Some(pid);
        st.supervisor_started = state::process_start_ticks(pid);
    } else {
        st.status = Status::Running;
        st.started_at = Some(super::now_unix());
    }
    // Only its cgroup namespace is new since the read above (a process that
    // has already ended is being torn down, and keeps what was read then).
    if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/cgroup")) {
        use std::os::unix::fs::MetadataExt;
        ns.insert("cgroup".into(), m.ino());
    }
    st.namespaces = ns;
    state::save(paths, st)?;
    Ok(Started {
        pid,
        master,
        output,
        input,
    })
}
