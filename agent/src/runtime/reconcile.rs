//! Makes the state directory tell the truth after a crash, before a command
//! reads or changes it. Under the store lock (so no launch is half-way through
//! creating a container, and no import through storing a layer):
//!
//! - a container directory without `state.json` is what a launch killed before
//!   its first save left (an empty one, what a host crash left of a `--rm`
//!   container's unsynced state): it and its layer are removed;
//! - a container whose supervisor is gone (killed, or a zombie) while its state
//!   says created or running becomes `dead`, so `ps`, `inspect` and the metrics
//!   agree; `rm` then removes it and kills what it left in its cgroup;
//! - a container made through the OCI runtime command line whose first process
//!   is gone has simply exited (its caller reaps it and knows the code);
//! - the image store's leftovers (scratch, unnamed layers) are swept.

use super::state::{self, ContainerState, Status};
use super::{Paths, Result, image, rootfs, sys};
use std::io::ErrorKind;

/// What a reconcile changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Container directories removed (no state: a launch killed early).
    pub orphans_removed: usize,
    /// Containers marked dead (their supervisor is gone).
    pub marked_dead: usize,
    /// Image store leftovers removed.
    pub swept: usize,
}

/// Reconciles the state under `paths`. A state root that does not exist yet
/// needs nothing; one this user may not lock (a non-root `agent ps` on root's
/// store) is left as it is.
pub fn reconcile(paths: &Paths) -> Result<Reconciled> {
    let mut done = Reconciled::default();
    if !paths.containers().is_dir() {
        return Ok(done);
    }
    let _lock = match sys::lock_exclusive(&paths.lock_file()) {
        Ok(lock) => lock,
        Err(super::Error::Io { source, .. })
            if matches!(
                source.kind(),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            return Ok(done);
        }
        Err(e) => return Err(e),
    };
    let entries = std::fs::read_dir(paths.containers()).map_err(|source| super::Error::Io {
        op: "read directory",
        path: paths.containers(),
        source,
    })?;
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match state::load(paths, &id) {
            Ok(st) => {
                let Some(mut st) = unfinished(st, || state::load(paths, &id).ok()) else {
                    continue;
                };
                if st.oci.is_some() {
                    st.status = Status::Exited;
                    st.pid = None;
                    st.finished_at.get_or_insert_with(super::now_unix);
                    state::save(paths, &st)?;
                    continue;
                }
                st.status = Status::Dead;
                st.finished_at.get_or_insert_with(super::now_unix);
                st.error.get_or_insert_with(|| {
                    format!(
                        "its supervisor (pid {}) is gone",
                        st.supervisor_pid.unwrap_or(0)
                    )
                });
                state::save(paths, &st)?;
                done.marked_dead += 1;
            }
            Err(_) if state::is_unwritten(paths, &id) => {
                // Killed before its first save: nothing else was made yet but
                // its layer (the cgroup comes after the save). Or an empty file:
                // a `--rm` container's unsynced state after a host crash, which
                // left neither its supervisor nor its cgroup.
                rootfs::remove(paths, &id)?;
                let dir = paths.container(&id);
                std::fs::remove_dir_all(&dir).map_err(|source| super::Error::Io {
                    op: "remove",
                    path: dir,
                    source,
                })?;
                done.orphans_removed += 1;
            }
            // An unreadable state is shown by `ps`/`inspect` as the error it is.
            Err(_) => {}
        }
    }
    done.swept = image::sweep(paths)?;
    Ok(done)
}

/// The state of a container whose supervisor is gone without finishing it, or
/// `None`. `first` is the state as read; `reload` reads it again. A supervisor
/// saves the exit and then ends, without the store lock, so a state read while
/// it was still alive may predate its last save (or name the `launch -d` that
/// has since handed over to its supervisor): only a state read again once its
/// supervisor is seen gone, and still live with its own supervisor gone, is one
/// that was never finished.
fn unfinished(
    first: ContainerState,
    reload: impl FnOnce() -> Option<ContainerState>,
) -> Option<ContainerState> {
    let live = |st: &ContainerState| {
        matches!(
            st.status,
            Status::Created | Status::Running | Status::Restarting
        ) && !st.supervisor_alive()
    };
    if !live(&first) {
        return None;
    }
    reload().filter(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_state_is_an_orphan_and_a_torn_one_stays() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::new(t.path());
        super::super::ensure_layout(&paths).unwrap();
        let make = |id: &str, state: Option<&[u8]>| {
            std::fs::create_dir_all(paths.container(id)).unwrap();
            std::fs::create_dir_all(paths.overlay().join(id).join("diff")).unwrap();
            if let Some(s) = state {
                std::fs::write(state::state_path(&paths, id), s).unwrap();
            }
        };
        let (missing, empty, torn) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        make(&missing, None);
        // What a host crash leaves of a `--rm` container's unsynced save.
        make(&empty, Some(b""));
        // Not something a save leaves: shown by `ps` as the error it is.
        make(&torn, Some(b"{\"version\""));
        let done = reconcile(&paths).unwrap();
        assert_eq!(done.orphans_removed, 2);
        for id in [&missing, &empty] {
            assert!(!paths.container(id).exists(), "{id}");
            assert!(!paths.overlay().join(id).exists(), "{id}");
        }
        assert!(paths.container(&torn).exists());
    }
    #[test]
    fn a_state_saved_by_a_supervisor_that_then_ended_is_not_marked_dead() {
        // No process has this pid (above pid_max), so its supervisor is gone.
        let gone = |status| ContainerState {
            status,
            supervisor_pid: Some(i32::MAX),
            ..ContainerState::for_test(&"d".repeat(64), "d", "i")
        };
        let running = gone(Status::Running);
        // Read while running; the supervisor saved its exit before the check.
        assert!(unfinished(running.clone(), || Some(gone(Status::Exited))).is_none());
        // Read as `launch -d` left it; its supervisor, alive, has taken over.
        let handed_over = ContainerState {
            supervisor_pid: Some(std::process::id() as i32),
            supervisor_started: None,
            ..running.clone()
        };
        assert!(unfinished(running.clone(), || Some(handed_over)).is_none());
        // Removed meanwhile.
        assert!(unfinished(running.clone(), || None).is_none());
        // Still running on the second read: never finished.
        let dead = unfinished(running.clone(), || Some(running.clone()));
        assert_eq!(dead.map(|s| s.status), Some(Status::Running));
        // Settled states are not read again.
        assert!(unfinished(gone(Status::Exited), || panic!("read again")).is_none());
    }
}
