//! `agent exec`: a new process in a running container, confined exactly as the
//! container's first process is.
//!
//! The process description is the container's own `config.json` (`process`:
//! capabilities, `noNewPrivileges`, rlimits, user, env, cwd; `linux.seccomp`,
//! compiled from the store's cache) with the exec's command, `-e`, `-u` and `-w`
//! applied. The `agent exec` process joins the container's PID namespace (for
//! its children only, as setns(2) does for PID namespaces), forks, moves the
//! child into the container's cgroup (every hierarchy, by `cgroup.procs`) and
//! releases it; the child joins the user namespace first (when there is one),
//! then the mount, UTS, IPC, network and cgroup namespaces that differ from its
//! own, and applies the spec's confinement with the same code as the first
//! process before `execve`. `agent exec` waits, forwards signals (or relays a
//! terminal with `-t`) and returns the command's exit code.

use super::namespaces::{self, Exec, NS_KINDS};
use super::spec;
use super::state::{self, ContainerState};
use super::terminal::{self, Pty};
use super::{Error, IoContext, Paths, Result, supervisor, sys};
use crate::cgroup::ContainerCgroup;
use oci_spec::runtime::{Process, Spec};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

/// Signals `agent exec` forwards to the process.
const FORWARDED: &[i32] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// `agent exec`'s options.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Container id, id prefix or name.
    pub container: String,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// `-e KEY=VALUE`.
    pub env: Vec<String>,
    /// `-u USER[:GROUP]`.
    pub user: Option<String>,
    /// `-w DIR`.
    pub workdir: Option<String>,
    /// `-i`: keep stdin open.
    pub interactive: bool,
    /// `-t`: a pseudo-terminal.
    pub tty: bool,
}

/// The process of the exec: the container's with the exec's changes.
fn exec_process(config: &Spec, pid: i32, opts: &ExecOptions) -> Result<Process> {
    let mut process = config
        .process()
        .clone()
        .ok_or_else(|| Error::Invalid("the container's config.json has no process".into()))?;
    if opts.command.is_empty() || opts.command[0].is_empty() {
        return Err(Error::Invalid("exec needs a command".into()));
    }
    if opts.command.iter().any(|a| a.contains('\0')) {
        return Err(Error::Invalid("command contains a NUL byte".into()));
    }
    process.set_args(Some(opts.command.clone()));
    let mut env = process.env().clone().unwrap_or_default();
    if let Some(u) = &opts.user {
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let user = spec::resolve_user_under(&root, u)?;
        let mut spec_user = process.user().clone();
        spec_user.set_uid(user.uid);
        spec_user.set_gid(user.gid);
        spec_user.set_additional_gids(Some(user.groups.clone()));
        process.set_user(spec_user);
        env.retain(|e| !e.starts_with("HOME="));
        env.push(format!("HOME={}", user.home));
    }
    spec::merge_env(&mut env, &opts.env)?;
    process.set_env(Some(env));
    if let Some(w) = opts.workdir.as_deref().filter(|w| !w.is_empty()) {
        if !w.starts_with('/') {
            return Err(Error::Invalid(format!("-w {w}: must be an absolute path")));
        }
        process.set_cwd(PathBuf::from(w));
    }
    process.set_terminal(Some(opts.tty));
    Ok(process)
}

/// The namespaces to join: every kind of the container's that differs from
/// ours, user first, PID apart (joined by the parent).
struct Joined {
    user: Option<File>,
    pid: Option<File>,
    others: Vec<(&'static str, libc::c_int, File)>,
}

fn open_namespaces(pid: i32) -> Result<Joined> {
    let theirs = namespaces::namespace_inodes(pid);
    let ours = namespaces::namespace_inodes(std::process::id() as i32);
    let mut joined = Joined {
        user: None,
        pid: None,
        others: Vec::new(),
    };
    for kind in NS_KINDS {
        let Some(ino) = theirs.get(*kind) else {
            continue;
        };
        if ours.get(*kind) == Some(ino) {
            continue;
        }
        let path = format!("/proc/{pid}/ns/{kind}");
        let file = File::open(&path).at("open namespace", &path)?;
        let flag = match *kind {
            "user" => {
                joined.user = Some(file);
                continue;
            }
            "pid" => {
                joined.pid = Some(file);
                continue;
            }
            "mnt" => libc::CLONE_NEWNS,
            "uts" => libc::CLONE_NEWUTS,
            "ipc" => libc::CLONE_NEWIPC,
            "net" => libc::CLONE_NEWNET,
            _ => libc::CLONE_NEWCGROUP,
        };
        joined.others.push((kind, flag, file));
    }
    // The cgroup namespace last: it is entered once the process is in the cgroup.
    joined.others.sort_by_key(|(k, _, _)| *k == "cgroup");
    Ok(joined)
}

/// Runs a command in a running container; returns its exit code (128+signal
/// when killed, 126 when it cannot be executed, 127 when it is not found).
pub fn exec(paths: &Paths, opts: &ExecOptions) -> Result<i32> {
    supervisor::ensure_single_threaded()?;
    let st = state::find(paths, &opts.container)?;
    let pid = running_pid(&st)?;
    let config = state::load_config(paths, &st.id)?;
    let process = exec_process(&config, pid, opts)?;
    let pty = if opts.tty {
        Some(terminal::openpty()?)
    } else {
        None
    };
    let mut blocked = FORWARDED.to_vec();
    blocked.extend([libc::SIGCHLD, libc::SIGWINCH]);
    sys::sigmask(libc::SIG_BLOCK, &blocked)?;
    let child = spawn(
        paths,
        &st,
        &config,
        &process,
        Spawn {
            pty: pty.as_ref(),
            interactive: opts.interactive,
            die_with_parent: true,
        },
    )?;
    let exit = match pty {
        Some(Pty { master, slave }) => {
            // Only the process holds the slave now: its exit ends the relay.
            drop(slave);
            terminal::relay_caller(&master, child, opts.interactive, FORWARDED)?.exit
        }
        None => wait_forwarding(child)?,
    };
    Ok(match exit {
        sys::Exit::Code(c) => c,
        sys::Exit::Signal(s) => 128 + s,
    })
}

/// How an exec's process is started.
pub(super) struct Spawn<'a> {
    /// Its terminal (`-t`).
    pub pty: Option<&'a Pty>,
    /// Keep the caller's stdin (otherwise `/dev/null`).
    pub interactive: bool,
    /// Dies with this process (`agent exec` waits for it); `false` for
    /// `agent-runc exec --detach`, whose caller reaps it.
    pub die_with_parent: bool,
}

/// Starts `process` in the running container `st` (its namespaces, cgroup and
/// confinement) and returns its host pid once it has exec'd.
pub(super) fn spawn(
    paths: &Paths,
    st: &ContainerState,
    config: &Spec,
    process: &Process,
    how: Spawn<'_>,
) -> Result<i32> {
    let pid = running_pid(st)?;
    let seccomp_bpf = super::spawn::compile_seccomp(paths, config)?;
    let seccomp = config.linux().as_ref().and_then(|l| l.seccomp().clone());
    let cgroup = st.cgroup.as_ref().map(ContainerCgroup::from_info);
    let joined = open_namespaces(pid)?;
    if let Some(pidns) = &joined.pid {
        sys::setns_fd(pidns.as_fd(), libc::CLONE_NEWPID, "pid")?;
    }
    let (sync_r, mut sync_w) = sys::pipe()?;
    let (mut err_r, err_w) = sys::pipe()?;
    let child = sys::fork()?;
    if child == 0 {
        drop(sync_w);
        drop(err_r);
        let ctx = ChildExec {
            process,
            joined: &joined,
            pty: how.pty,
            interactive: how.interactive,
            seccomp: seccomp.as_ref(),
            seccomp_bpf: seccomp_bpf.as_deref(),
            die_with_parent: how.die_with_parent,
        };
        child_main(&ctx, sync_r, err_w);
    }
    drop(sync_r);
    drop(err_w);
    if let Some(cg) = &cgroup
        && let Err(e) = cg.add_process(child)
    {
        let _ = sys::kill(child, libc::SIGKILL);
        let _ = sys::waitpid(child, 0);
        return Err(e.into());
    }
    sync_w
        .write_all(b"1")
        .at("release exec process", "sync pipe")?;
    drop(sync_w);
    let mut msg = String::new();
    let _ = err_r.read_to_string(&mut msg);
    if !msg.trim().is_empty() {
        let exit = sys::waitpid(child, 0)?;
        let code = match exit {
            Some((_, sys::Exit::Code(c))) => c,
            _ => 126,
        };
        return Err(Error::Exec {
            code,
            message: msg.trim().to_string(),
        });
    }
    Ok(child)
}

fn wait_forwarding(pid: i32) -> Result<sys::Exit> {
    let mut waited = FORWARDED.to_vec();
    waited.push(libc::SIGCHLD);
    loop {
        if let Some((_, exit)) = sys::waitpid(pid, libc::WNOHANG)? {
            return Ok(exit);
        }
        match sys::sigtimedwait(&waited, std::time::Duration::from_secs(1))? {
            Some(libc::SIGCHLD) | None => {}
            Some(sig) => {
                let _ = sys::kill(pid, sig);
            }
        }
    }
}

fn running_pid(st: &ContainerState) -> Result<i32> {
    if !st.is_running() {
        return Err(Error::NotRunning {
            name: st.name.clone(),
        });
    }
    super::lifecycle::pid_is_container(st).ok_or_else(|| Error::NotRunning {
        name: st.name.clone(),
    })
}

/// What the forked child needs.
struct ChildExec<'a> {
    process: &'a Process,
    joined: &'a Joined,
    pty: Option<&'a Pty>,
    interactive: bool,
    seccomp: Option<&'a oci_spec::runtime::LinuxSeccomp>,
    seccomp_bpf: Option<&'a [u8]>,
    die_with_parent: bool,
}

fn child_main(ctx: &ChildExec<'_>, sync: File, mut errors: File) -> ! {
    if ctx.die_with_parent {
        super::namespaces::die_with_parent_once_released(sync);
    } else {
        super::namespaces::wait_released(sync);
    }
    let (code, err) = match prepare(ctx) {
        Ok(exec) => {
            let e = exec.run();
            let code = match &e {
                Error::Io {
                    op: "exec", source, ..
                } if source.kind() == std::io::ErrorKind::NotFound => 127,
                _ => 126,
            };
            (code, e)
        }
        Err(e @ Error::NotFound(_)) => (127, e),
        Err(e) => (126, e),
    };
    let _ = writeln!(errors, "{err}");
    sys::exit_now(code)
}

fn prepare(ctx: &ChildExec<'_>) -> Result<Exec> {
    if let Some(user) = &ctx.joined.user {
        sys::setns_fd(user.as_fd(), libc::CLONE_NEWUSER, "user")?;
    }
    for (kind, flag, file) in &ctx.joined.others {
        sys::setns_fd(file.as_fd(), *flag, kind)?;
    }
    match ctx.pty {
        Some(pty) => terminal::become_controlling(pty.slave.as_raw_fd())?,
        None if !ctx.interactive => {
            let null = File::open("/dev/null").at("open", "/dev/null")?;
            sys::dup2(null.as_raw_fd(), 0)?;
        }
        None => {}
    }
    let process = ctx.process;
    sys::umask(process.user().umask().unwrap_or(0o022));
    for r in process.rlimits().iter().flatten() {
        sys::setrlimit(namespaces::rlimit_resource(r.typ()), r.soft(), r.hard())?;
    }
    let cwd = process.cwd();
    std::env::set_current_dir(cwd).at("chdir", cwd)?;
    let argv = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let first = argv
        .first()
        .ok_or_else(|| Error::Invalid("exec needs a command".into()))?;
    let path = namespaces::find_executable(first, &env)?;
    let exec = Exec {
        path: namespaces::cstring(&path)?,
        argv: argv
            .iter()
            .map(|a| namespaces::cstring(a))
            .collect::<Result<_>>()?,
        env: env
            .iter()
            .map(|e| namespaces::cstring(e))
            .collect::<Result<_>>()?,
    };
    namespaces::confine(process, ctx.seccomp, ctx.seccomp_bpf)?;
    Ok(exec)
}
