//! What the fuzz targets share: scratch directories that outlive no run.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes the scratch directories when libFuzzer ends the process with `exit`
/// (which runs no destructors). Where it ends with `_exit` or a crash, the next run
/// sweeps them (see [`sweep_dead`]).
extern "C" fn cleanup() {
    let dirs = SCRATCH.lock().map(|d| d.clone()).unwrap_or_default();
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes `PREFIX<pid>-…` directories in `parent` whose process is gone.
fn sweep_dead(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A fresh directory `PREFIX<pid>-…` on tmpfs when there is one (fast; device nodes
/// and trusted xattrs work there as root), removed at exit.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    sweep_dead(&parent, prefix);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir_in(parent)
        .expect("a scratch directory")
        .keep();
    let mut dirs = SCRATCH.lock().expect("the scratch list");
    if dirs.is_empty() {
        // SAFETY: registers a plain function without arguments to run at exit.
        unsafe { libc::atexit(cleanup) };
    }
    dirs.push(dir.clone());
    dir
}
