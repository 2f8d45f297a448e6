//! What the fuzz targets share: scratch directories that outlive no run.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes the scratch directories when libFuzzer ends the process: `exit` runs no
/// destructors. A crash leaves them for inspection.
extern "C" fn cleanup() {
    let dirs = SCRATCH.lock().map(|d| d.clone()).unwrap_or_default();
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A fresh directory named `prefix…` on tmpfs when there is one (fast; device nodes
/// and trusted xattrs work there as root), removed at exit.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix(prefix)
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
