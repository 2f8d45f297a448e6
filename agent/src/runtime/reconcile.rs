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

use super::state::{self, Status};
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
            Ok(mut st) => {
                if matches!(
                    st.status,
                    Status::Created | Status::Running | Status::Restarting
                ) && !st.supervisor_alive()
                {
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
}
