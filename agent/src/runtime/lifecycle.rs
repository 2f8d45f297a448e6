//! The lifecycle commands that act on a container someone else supervises:
//! `kill`, `stop`, `rm` (each tells a restart policy that the user stopped it),
//! and finding its log.

use super::restart;
use super::state::{self, ContainerState, Status};
use super::{Error, IoContext, Paths, Result, namespaces, rootfs, sys};
use crate::cgroup::ContainerCgroup;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Whether `st`'s recorded pid is still the container's PID 1 (guards against pid
/// reuse after the container exited).
pub fn pid_is_container(st: &ContainerState) -> Option<i32> {
    let pid = st.pid?;
    let want = st.namespaces.get("pid")?;
    let now = namespaces::namespace_inodes(pid);
    (now.get("pid") == Some(want)).then_some(pid)
}

/// Sends `signal` to a running container's PID 1.
pub fn kill(paths: &Paths, key: &str, signal: i32) -> Result<ContainerState> {
    let st = state::find(paths, key)?;
    // Docker's rule: a killed container is not restarted by its policy.
    restart::mark_stopped_by_user(paths, &st.id)?;
    if !st.is_running() {
        return Err(Error::NotRunning {
            name: st.name.clone(),
        });
    }
    let pid = pid_is_container(&st).ok_or_else(|| Error::NotRunning {
        name: st.name.clone(),
    })?;
    sys::kill(pid, signal)?;
    Ok(st)
}

/// Waits until the container is no longer running; `false` on timeout.
pub fn wait_exited(paths: &Paths, id: &str, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        match state::load(paths, id) {
            Ok(st)
                if st.is_running()
                    || matches!(st.status, Status::Created | Status::Restarting)
                        && st.supervisor_alive() => {}
            Ok(_) => return Ok(true),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(true);
            }
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then SIGKILL after `timeout`, like `docker stop`.
pub fn stop(paths: &Paths, key: &str, timeout: Duration) -> Result<ContainerState> {
    let st = state::find(paths, key)?;
    restart::mark_stopped_by_user(paths, &st.id)?;
    if st.status == Status::Restarting {
        // Between two runs: the supervisor sees the marker and ends.
        wait_exited(paths, &st.id, Duration::from_secs(10))?;
        return state::load(paths, &st.id).or(Ok(st));
    }
    if !st.is_running() {
        return Ok(st);
    }
    if let Some(pid) = pid_is_container(&st) {
        sys::kill(pid, libc::SIGTERM)?;
        if !wait_exited(paths, &st.id, timeout)?
            && let Some(pid) = pid_is_container(&st)
        {
            sys::kill(pid, libc::SIGKILL)?;
        }
    }
    if !wait_exited(paths, &st.id, Duration::from_secs(10))? {
        return Err(Error::Conflict(format!(
            "container {} did not exit after SIGKILL",
            st.name
        )));
    }
    state::load(paths, &st.id).or(Ok(st))
}

/// Removes a container: refused while running unless `force` (which kills it).
pub fn remove(paths: &Paths, key: &str, force: bool) -> Result<ContainerState> {
    let st = state::find(paths, key)?;
    let restarting = st.status == Status::Restarting && st.supervisor_alive();
    if st.is_running() || restarting {
        if !force {
            return Err(Error::Conflict(format!(
                "container {} is running; stop it first or use rm -f",
                st.name
            )));
        }
        restart::mark_stopped_by_user(paths, &st.id)?;
        if let Some(pid) = pid_is_container(&st) {
            sys::kill(pid, libc::SIGKILL)?;
        }
        wait_exited(paths, &st.id, Duration::from_secs(10))?;
    }
    let _lock = sys::lock_exclusive(&paths.lock_file())?;
    // A supervisor that died leaves its cgroup; destroying it kills what is left.
    if let Some(info) = &st.cgroup {
        ContainerCgroup::from_info(info).destroy();
    }
    rootfs::remove(paths, &st.id)?;
    let dir = paths.container(&st.id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at("remove", &dir),
        _ => {}
    }
    Ok(st)
}

/// The log file of a container (detached containers only).
pub fn log_path(paths: &Paths, key: &str) -> Result<(ContainerState, PathBuf)> {
    let st = state::find(paths, key)?;
    let path = st.log_path.clone().ok_or_else(|| {
        Error::NotFound(format!(
            "container {} was not detached: its output went to the terminal",
            st.name
        ))
    })?;
    Ok((st, path))
}
