//! Launching and supervising a container (its first process is started by
//! [`super::spawn`]).
//!
//! Process model: the `agent launch` process is the supervisor. It validates the
//! request, creates the container (state dir, overlay layer, cgroup with limits),
//! `clone3`s the container's first process into new namespaces, moves it into the
//! cgroup, releases it, and waits — forwarding SIGINT/SIGTERM/SIGHUP/SIGQUIT — until
//! it exits; then it records the exit code, signal and OOM kill, removes the cgroup
//! and, with `--rm`, everything else. With `-d` a forked, `setsid` supervisor does the
//! waiting while the command line returns once the container runs.
//!
//! Everything here runs before any thread exists: `clone3`/`fork` in a
//! multi-threaded process would copy locks held by threads that do not exist in the
//! child.

use super::attach::{self, AttachServer};
use super::bundle;
use super::logs;
use super::restart::{self, Backoff, RestartPolicy};
use super::rootfs::{self, ContainerLayer};
use super::spawn::{Prepared, Started, compile_seccomp, start};
use super::spec::{self, LaunchOptions, LaunchSpec};
use super::state::{self, ContainerState, RootfsInfo, STATE_VERSION, Status};
use super::terminal::{self, Ended, Relay};
use super::userns;
use super::{Error, IoContext, Paths, Result, sys};
use crate::cgroup::{ContainerCgroup, Hierarchy};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// Signals the supervisor forwards to the container.
const FORWARDED: &[i32] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Result of `launch`.
#[derive(Debug)]
pub enum Launched {
    /// Attached run finished: the container's exit code (128+signal when killed).
    Exited { id: String, exit_code: i32 },
    /// Detached: the container is running under a background supervisor.
    Detached { id: String },
}

/// A container being created; removes everything it made unless disarmed.
pub(super) struct Creation<'a> {
    pub paths: &'a Paths,
    pub id: String,
    pub cgroup: Option<ContainerCgroup>,
    pub armed: bool,
}

impl Creation<'_> {
    /// Creates the container's cgroup with `config`'s resources and records it in
    /// `st` and in this guard (so a later failure removes it). Returns the cgroup
    /// and whether it is the one `st` had planned (then `st` needs no new save).
    pub fn create_cgroup(
        &mut self,
        hierarchy: &Hierarchy,
        config: &oci_spec::runtime::Spec,
        st: &mut ContainerState,
    ) -> Result<(ContainerCgroup, bool)> {
        let resources = config.linux().as_ref().and_then(|l| l.resources().clone());
        let cg = ContainerCgroup::create(hierarchy, &self.id, resources.as_ref())?;
        let planned = st.cgroup.as_ref() == Some(cg.info());
        st.cgroup = Some(cg.info().clone());
        self.cgroup = Some(cg.clone());
        Ok((cg, planned))
    }
}

impl Drop for Creation<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(cg) = &self.cgroup {
                cg.destroy();
            }
            let _ = rootfs::remove(self.paths, &self.id);
            let _ = std::fs::remove_dir_all(self.paths.container(&self.id));
        }
    }
}

/// Fails unless this process has exactly one thread (forking a multi-threaded
/// process can deadlock the child on a lock held by a thread that was not copied).
pub fn ensure_single_threaded() -> Result<()> {
    let tasks = std::fs::read_dir("/proc/self/task")
        .at("read", "/proc/self/task")?
        .count();
    if tasks == 1 {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "launch must run before any thread starts (this process has {tasks} threads)"
        )))
    }
}

/// The start of every launch: single-threaded, the store laid out, a fresh id
/// whose leftovers are removed unless the launch gets far enough, the host's
/// cgroup layout.
fn begin(paths: &Paths) -> Result<(String, Creation<'_>, Hierarchy)> {
    ensure_single_threaded()?;
    super::ensure_layout(paths)?;
    let id = super::random_id()?;
    let creation = Creation {
        paths,
        id: id.clone(),
        cgroup: None,
        armed: true,
    };
    Ok((id, creation, Hierarchy::detect_host()?))
}

/// Launches a container. Must be called while the process is single-threaded (it
/// checks): from the `agent launch` command, never from inside an async runtime.
pub fn launch(paths: &Paths, opts: &LaunchOptions) -> Result<Launched> {
    let (id, mut creation, hierarchy) = begin(paths)?;
    let (spec, mut st, layer) = {
        let _lock = sys::lock_exclusive(&paths.lock_file())?;
        let spec = spec::validate(paths, opts, id.clone())?;
        if state::list(paths.root())?
            .iter()
            .any(|c| c.name == spec.name)
        {
            creation.armed = false;
            return Err(Error::NameInUse {
                name: spec.name.clone(),
            });
        }
        super::volumes::prepare(paths, &spec.volumes, spec.idmap.as_ref())?;
        let dir = paths.container(&id);
        std::fs::create_dir(&dir).at("create container directory", &dir)?;
        let mut layer = ContainerLayer::create(paths, &id, &spec.image)?;
        layer.volatile = spec.auto_remove;
        let mut st = initial_state(&spec, &layer);
        // Recorded before they exist, so whatever a crash leaves, `rm` removes.
        st.cgroup = Some(ContainerCgroup::planned(&hierarchy, &id));
        state::save(paths, &st)?;
        (spec, st, layer)
    };
    let dir = paths.container(&id);
    write_etc_files(&dir, &spec)?;
    let mut config = spec.config.clone();
    // Saved again only when the cgroup is not what the first save planned.
    let (cg, planned) = creation.create_cgroup(&hierarchy, &config, &mut st)?;
    spec::place(&mut config, &layer.merged, &cg.info().path)?;
    if let Some(map) = &spec.idmap {
        userns::chown_own_layer(&layer, map)?;
    }
    spec::write_oci_config(&dir, &config)?;
    let seccomp_bpf = compile_seccomp(paths, &config)?;
    if !planned {
        state::save(paths, &st)?;
    }
    let prepared = Prepared {
        config,
        layer: Some(layer),
        base_dir: dir,
        seccomp_bpf,
        init: spec.init,
        detach: spec.detach,
        auto_remove: spec.auto_remove,
        restart: spec.restart,
        interactive: spec.interactive,
        tty: spec.tty,
        oci: None,
    };
    creation.armed = false;
    run(paths, &prepared, cg, st)
}

/// `agent run --bundle DIR`: runs an OCI bundle (its `config.json` and the rootfs
/// it names) exactly as its spec says, under the agent's supervision: its cgroup
/// is `/agent/<id>` whatever `cgroupsPath` says (the agent's subtree is where
/// `agent serve` and `rm` look), with the spec's `linux.resources`.
pub fn run_bundle(paths: &Paths, opts: &bundle::BundleOptions) -> Result<Launched> {
    let mut config = bundle::load(&opts.bundle, false)?;
    let (id, mut creation, hierarchy) = begin(paths)?;
    let name = match &opts.name {
        Some(n) => {
            state::validate_name(n)?;
            n.clone()
        }
        None => format!("agent-{}", &id[..12]),
    };
    let mut st = {
        let _lock = sys::lock_exclusive(&paths.lock_file())?;
        if state::list(paths.root())?.iter().any(|c| c.name == name) {
            creation.armed = false;
            return Err(Error::NameInUse { name: name.clone() });
        }
        let dir = paths.container(&id);
        std::fs::create_dir(&dir).at("create container directory", &dir)?;
        let st = bundle::initial_state(&id, &name, &opts.bundle, &config, opts.detach);
        let mut st = ContainerState {
            supervisor_pid: Some(std::process::id() as i32),
            supervisor_started: state::process_start_ticks(std::process::id() as i32),
            ..st
        };
        st.cgroup = Some(ContainerCgroup::planned(&hierarchy, &id));
        state::save(paths, &st)?;
        st
    };
    let (cg, _) = creation.create_cgroup(&hierarchy, &config, &mut st)?;
    let root = st.rootfs.merged.clone();
    spec::place(&mut config, &root, &cg.info().path)?;
    let dir = paths.container(&id);
    spec::write_oci_config(&dir, &config)?;
    let seccomp_bpf = compile_seccomp(paths, &config)?;
    state::save(paths, &st)?;
    let prepared = Prepared {
        config,
        layer: None,
        base_dir: opts.bundle.clone(),
        seccomp_bpf,
        init: false,
        detach: opts.detach,
        auto_remove: false,
        restart: RestartPolicy::No,
        interactive: false,
        tty: false,
        oci: None,
    };
    creation.armed = false;
    run(paths, &prepared, cg, st)
}

/// Starts a prepared container and supervises it: here, or with `-d` in a
/// forked, `setsid` supervisor.
fn run(
    paths: &Paths,
    prepared: &Prepared,
    cg: ContainerCgroup,
    mut st: ContainerState,
) -> Result<Launched> {
    let id = st.id.clone();
    if prepared.detach {
        let log = paths.container(&id).join("container.log");
        st.log_path = Some(log.clone());
        // The supervisor writes it, each line with its time (runtime::logs).
        st.log_timestamps = true;
        state::save(paths, &st)?;
        let (mut ready_r, ready_w) = sys::pipe()?;
        match sys::fork()? {
            0 => {
                drop(ready_r);
                let code = detached_supervisor(paths, prepared, cg, st, &log, ready_w);
                sys::exit_now(code);
            }
            _child => {
                drop(ready_w);
                // One line: "ok" or the error.
                let mut msg = String::new();
                let _ = std::io::BufRead::read_line(
                    &mut std::io::BufReader::new(&mut ready_r),
                    &mut msg,
                );
                if msg.trim() == "ok" {
                    Ok(Launched::Detached { id })
                } else {
                    let msg = msg.trim();
                    Err(Error::Invalid(if msg.is_empty() {
                        "the container supervisor exited before starting the container".into()
                    } else {
                        msg.to_string()
                    }))
                }
            }
        }
    } else {
        let exit_code = supervise(paths, prepared, &cg, &mut st, |_| {})?;
        Ok(Launched::Exited { id, exit_code })
    }
}

fn detached_supervisor(
    paths: &Paths,
    prepared: &Prepared,
    cg: ContainerCgroup,
    mut st: ContainerState,
    log: &Path,
    mut ready: std::fs::File,
) -> i32 {
    let setup = (|| -> Result<()> {
        sys::setsid()?;
        let null = std::fs::File::open("/dev/null").at("open", "/dev/null")?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .at("open log", log)?;
        sys::dup2(null.as_raw_fd(), 0)?;
        sys::dup2(out.as_raw_fd(), 1)?;
        sys::dup2(out.as_raw_fd(), 2)?;
        Ok(())
    })();
    if let Err(e) = setup {
        let _ = writeln!(ready, "{e}");
        fail_start(paths, &cg, &mut st, &e);
        return 1;
    }
    st.supervisor_pid = Some(std::process::id() as i32);
    st.supervisor_started = state::process_start_ticks(std::process::id() as i32);
    let mut ready = Some(ready);
    let result = supervise(paths, prepared, &cg, &mut st, |outcome| {
        if let Some(mut r) = ready.take() {
            let _ = match outcome {
                Ok(()) => writeln!(r, "ok"),
                Err(e) => writeln!(r, "{e}"),
            };
        }
    });
    result.unwrap_or(1)
}

fn initial_state(spec: &LaunchSpec, layer: &ContainerLayer) -> ContainerState {
    ContainerState {
        version: STATE_VERSION,
        id: spec.id.clone(),
        name: spec.name.clone(),
        image: spec.image_ref.clone(),
        image_id: spec.image.id.clone(),
        command: spec.argv.clone(),
        labels: spec.labels.clone(),
        status: Status::Created,
        created_at: super::now_unix(),
        started_at: None,
        finished_at: None,
        pid: None,
        supervisor_pid: Some(std::process::id() as i32),
        supervisor_started: state::process_start_ticks(std::process::id() as i32),
        exit_code: None,
        signal: None,
        oom_killed: false,
        error: None,
        limits: spec.limits.clone(),
        cgroup: None,
        rootfs: RootfsInfo {
            upperdir: layer.upper.clone(),
            workdir: layer.work.clone(),
            merged: layer.merged.clone(),
            lowerdirs: layer.lowerdirs.clone(),
        },
        namespaces: Default::default(),
        network: spec.network,
        hostname: spec.hostname.clone(),
        detached: spec.detach,
        auto_remove: spec.auto_remove,
        init: spec.init,
        log_path: None,
        restart_policy: spec.restart,
        restart_count: 0,
        volumes: super::volumes::names(&spec.volumes),
        tty: spec.tty,
        interactive: spec.interactive,
        log_timestamps: false,
        oci: None,
    }
}

fn write_etc_files(dir: &Path, spec: &LaunchSpec) -> Result<()> {
    let hostname = format!("{}\n", spec.hostname);
    let hosts = match spec.network {
        spec::Network::Host => std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        spec::Network::None => format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
            spec.hostname
        ),
    };
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for (name, content) in [
        ("hostname", hostname),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, content).at("write", &p)?;
    }
    Ok(())
}

/// Records a failed start and removes what the start created.
fn fail_start(paths: &Paths, cg: &ContainerCgroup, st: &mut ContainerState, err: &Error) {
    cg.destroy();
    let _ = rootfs::remove(paths, &st.id);
    let _ = std::fs::remove_dir_all(paths.container(&st.id));
    st.error = Some(err.to_string());
}

/// Starts the container and waits for it. `on_start` is told whether it started.
/// Returns the exit code (128+signal when killed).
fn supervise(
    paths: &Paths,
    prepared: &Prepared,
    cg: &ContainerCgroup,
    st: &mut ContainerState,
    mut on_start: impl FnMut(std::result::Result<(), &Error>),
) -> Result<i32> {
    let mut blocked = FORWARDED.to_vec();
    blocked.extend([libc::SIGCHLD, libc::SIGWINCH]);
    sys::sigmask(libc::SIG_BLOCK, &blocked)?;
    let mut attach = if prepared.detach {
        match AttachServer::bind(&attach::socket_path(paths, &st.id)) {
            Ok(a) => Some(a),
            Err(e) => {
                fail_start(paths, cg, st, &e);
                on_start(Err(&e));
                return Err(e);
            }
        }
    } else {
        None
    };
    let mut started = match start(paths, prepared, cg, st) {
        Ok(started) => {
            on_start(Ok(()));
            started
        }
        Err(e) => {
            fail_start(paths, cg, st, &e);
            on_start(Err(&e));
            return Err(e);
        }
    };
    let mut backoff = Backoff::new();
    loop {
        let began = Instant::now();
        let Ended { exit, signalled } = wait_for(prepared, &started, attach.as_mut())?;
        if let Some(a) = attach.as_mut() {
            a.disconnect_all();
        }
        let (code, signal) = match exit {
            sys::Exit::Code(c) => (c, None),
            sys::Exit::Signal(s) => (128 + s, Some(s)),
        };
        st.status = Status::Exited;
        st.exit_code = Some(code);
        st.signal = signal;
        st.oom_killed = cg.oom_kills() > 0;
        st.finished_at = Some(super::now_unix());
        st.pid = None;
        // A signal forwarded from the supervisor's terminal is the user stopping it.
        let stopped = signalled || restart::stopped_by_user(paths, &st.id);
        if !prepared.restart.restarts(code, st.restart_count, stopped) {
            break;
        }
        st.status = Status::Restarting;
        state::save(paths, st)?;
        if !wait_backoff(paths, &st.id, backoff.delay(began.elapsed()))? {
            st.status = Status::Exited;
            break;
        }
        st.restart_count += 1;
        match start(paths, prepared, cg, st) {
            Ok(next) => {
                started = next;
                // `stop` may have come while it was starting.
                if restart::stopped_by_user(paths, &st.id) {
                    let _ = sys::kill(started.pid, libc::SIGKILL);
                }
            }
            Err(e) => {
                // The container keeps its layer and state: its last exit stays
                // recorded with why it could not run again.
                st.status = Status::Exited;
                st.error = Some(format!("restart {}: {e}", st.restart_count));
                break;
            }
        }
    }
    drop(attach);
    let code = st.exit_code.unwrap_or(1);
    cg.destroy();
    if prepared.auto_remove {
        rootfs::remove(paths, &st.id)?;
        let dir = paths.container(&st.id);
        std::fs::remove_dir_all(&dir).at("remove", &dir)?;
    } else {
        state::save(paths, st)?;
    }
    Ok(code)
}

/// Waits for a run of the container: relaying its terminal to the caller
/// (`-t` in the foreground), its output to the timestamped log and attached
/// clients (`-d`), or only forwarding signals (the output is the caller's).
fn wait_for(
    prepared: &Prepared,
    started: &Started,
    attach: Option<&mut AttachServer>,
) -> Result<Ended> {
    let pid = started.pid;
    if let Some(master) = &started.master
        && !prepared.detach
    {
        return terminal::relay_caller(master, pid, prepared.interactive, FORWARDED);
    }
    let from = match (&started.master, &started.output) {
        (Some(m), _) | (None, Some(m)) => m,
        (None, None) => {
            let (exit, signalled) = wait_forwarding(pid)?;
            return Ok(Ended { exit, signalled });
        }
    };
    // The detached supervisor's stdout is the log file.
    let mut log = logs::TimestampedWriter::new(std::io::stdout().lock());
    terminal::relay(
        pid,
        FORWARDED,
        Relay {
            from: from.as_fd(),
            tty: started.master.as_ref().map(|m| m.as_fd()),
            input: None,
            input_to: started
                .master
                .as_ref()
                .or(started.input.as_ref())
                .map(|f| f.as_fd()),
            output: &mut log,
            size_from: None,
            attach,
        },
    )
}

/// Waits for `pid`, forwarding the blocked signals to it. Says whether a
/// signal was forwarded.
fn wait_forwarding(pid: i32) -> Result<(sys::Exit, bool)> {
    let mut waited = FORWARDED.to_vec();
    waited.push(libc::SIGCHLD);
    let mut signalled = false;
    loop {
        if let Some((_, exit)) = sys::waitpid(pid, libc::WNOHANG)? {
            return Ok((exit, signalled));
        }
        match sys::sigtimedwait(&waited, Duration::from_secs(1))? {
            Some(libc::SIGCHLD) | None => {}
            Some(sig) => {
                signalled = true;
                let _ = sys::kill(pid, sig);
            }
        }
    }
}

/// Sleeps `delay` before a restart; `false` when the user stopped the container
/// meanwhile (stop, kill, rm, or a signal to the supervisor).
fn wait_backoff(paths: &Paths, id: &str, delay: Duration) -> Result<bool> {
    let deadline = Instant::now() + delay;
    loop {
        if restart::stopped_by_user(paths, id) {
            return Ok(false);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(true);
        }
        if sys::sigtimedwait(FORWARDED, left.min(Duration::from_millis(50)))?.is_some() {
            return Ok(false);
        }
    }
}
