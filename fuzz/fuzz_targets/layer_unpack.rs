//! A layer's tar stream (plain, gzip or zstd) unpacked as an import unpacks it:
//! whiteouts, opaque markers, device nodes, links. Whatever the entries say,
//! nothing is created, changed or linked outside the layer's directory.
//!
//! The unpacking runs on a worker thread that has its own root (`unshare(CLONE_FS)`
//! and `chroot`, as root) in a scratch directory holding `/diff`, the layer's
//! directory, and `/outside`, a sentinel: an escape through an absolute symbolic
//! link or `../..` lands inside the scratch directory, where it is seen, and never
//! on the host. libFuzzer's thread keeps the real root for its corpus and
//! artifacts. Without root there is no chroot; the checks are the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock};

const SENTINEL: &[u8] = b"keep";

const WORKER_NAME: &str = "unpack-worker";

/// What the worker found: nothing, or the message of the check that failed.
type Verdict = Result<(), String>;

struct Worker {
    jobs: SyncSender<Vec<u8>>,
    done: Receiver<Verdict>,
}

fn worker() -> &'static Mutex<Worker> {
    static WORKER: OnceLock<Mutex<Worker>> = OnceLock::new();
    WORKER.get_or_init(|| {
        let scratch = agent_fuzz::scratch_dir("agent-fuzz-unpack-");
        let outside = scratch.join("outside");
        std::fs::create_dir(&outside).expect("create outside");
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755))
            .expect("chmod outside");
        std::fs::write(outside.join("keep"), SENTINEL).expect("write the sentinel");
        std::fs::set_permissions(outside.join("keep"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod the sentinel");
        // libFuzzer writes the crashing input from the thread that crashes, relative
        // to that thread's root: a panic on the worker must not abort there (as
        // libfuzzer-sys's hook does) but come back to libFuzzer's thread.
        let libfuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(WORKER_NAME) {
                eprintln!("{info}");
            } else {
                libfuzzer_hook(info);
            }
        }));
        let (jobs, job_rx) = sync_channel::<Vec<u8>>(0);
        let (done_tx, done) = sync_channel(0);
        std::thread::Builder::new()
            .name(WORKER_NAME.into())
            .spawn(move || {
                block_signals();
                let root = enter(&scratch);
                for data in job_rx {
                    let verdict = std::panic::catch_unwind(|| unpack_and_check(&root, &data))
                        .map_err(|panic| {
                            panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default()
                        });
                    if done_tx.send(verdict).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the worker");
        Mutex::new(Worker { jobs, done })
    })
}

/// Leaves asynchronous signals (libFuzzer's timeout alarm, ^C) to libFuzzer's thread,
/// whose handlers write files relative to the real root.
fn block_signals() {
    // SAFETY: a zeroed sigset_t is filled by sigfillset; pthread_sigmask changes only
    // this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Gives this thread its own root at `scratch`; returns the path the scratch
/// directory has for it.
fn enter(scratch: &Path) -> PathBuf {
    // SAFETY: unshare(CLONE_FS) only detaches this thread's root, working directory
    // and umask from the rest of the process.
    if unsafe { libc::unshare(libc::CLONE_FS) } == 0
        && std::os::unix::fs::chroot(scratch).is_ok()
        && std::env::set_current_dir("/").is_ok()
    {
        PathBuf::from("/")
    } else {
        eprintln!("layer_unpack: no chroot (not root?): escapes are checked, not contained");
        scratch.to_path_buf()
    }
}

fn names(dir: &Path) -> BTreeSet<Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .as_bytes()
                .to_vec()
        })
        .collect()
}

fn has_opaque_xattr(path: &Path) -> bool {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    let name = c"trusted.overlay.opaque";
    // SAFETY: both strings are NUL-terminated; a null buffer of size 0 asks for the size.
    unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

fn unpack_and_check(root: &Path, data: &[u8]) {
    let diff = root.join("diff");
    match std::fs::remove_dir_all(&diff) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            panic!("reset {}: {e}", diff.display())
        }
        _ => {}
    }
    std::fs::create_dir(&diff).expect("create diff");
    let root_before = std::fs::symlink_metadata(root).expect("stat root");

    let result = agent::fuzzing::unpack_layer(data, &diff);
    match &result {
        Ok(id) => {
            let hex = id.strip_prefix("sha256:").expect("a sha256 diff id");
            assert!(
                hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
        }
        Err(e) => assert!(!e.contains(char::is_control), "not one plain line: {e}"),
    }

    // Nothing new beside the layer's directory, nothing changed outside it.
    let wanted: BTreeSet<Vec<u8>> = [b"diff".to_vec(), b"outside".to_vec()].into();
    assert_eq!(
        names(root),
        wanted,
        "an entry escaped into the scratch root ({result:?})"
    );
    let root_after = std::fs::symlink_metadata(root).expect("stat root");
    assert_eq!(
        root_before.mode(),
        root_after.mode(),
        "the scratch root's mode changed"
    );
    assert_eq!(
        (root_before.uid(), root_before.gid()),
        (root_after.uid(), root_after.gid())
    );
    let outside = root.join("outside");
    assert_eq!(
        names(&outside),
        [b"keep".to_vec()].into(),
        "an entry escaped into /outside"
    );
    let dir = std::fs::symlink_metadata(&outside).expect("stat outside");
    assert!(dir.is_dir() && dir.mode() & 0o7777 == 0o755 && dir.uid() == root_before.uid());
    let keep = outside.join("keep");
    let meta = std::fs::symlink_metadata(&keep).expect("stat the sentinel");
    assert!(meta.is_file(), "the sentinel was replaced");
    assert_eq!(
        meta.nlink(),
        1,
        "the sentinel was hard-linked from the layer"
    );
    assert_eq!(meta.mode() & 0o7777, 0o644, "the sentinel's mode changed");
    assert_eq!(
        meta.uid(),
        root_before.uid(),
        "the sentinel's owner changed"
    );
    assert_eq!(std::fs::read(&keep).expect("read the sentinel"), SENTINEL);
    for p in [root, &outside, &keep] {
        assert!(!has_opaque_xattr(p), "{} was marked opaque", p.display());
    }

    // Hard links inside the layer link only to each other.
    let mut links: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
    let mut stack = vec![diff];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a layer directory") {
            let path = entry.expect("an entry").path();
            let m = std::fs::symlink_metadata(&path).expect("stat an entry");
            if m.is_dir() {
                stack.push(path);
            } else if m.nlink() > 1 {
                links.entry((m.dev(), m.ino())).or_insert((m.nlink(), 0)).1 += 1;
            }
        }
    }
    for ((_, ino), (nlink, seen)) in links {
        assert_eq!(nlink, seen, "inode {ino} has links outside the layer");
    }
}

fuzz_target!(|data: &[u8]| {
    let worker = worker().lock().expect("the worker lock");
    worker
        .jobs
        .send(data.to_vec())
        .expect("the worker is alive");
    if let Err(failed) = worker.done.recv().expect("the worker is alive") {
        panic!("{failed}");
    }
});
