//! The tests' fixtures: a cgroup made for one test, and a process tree in fresh
//! mount and pid namespaces that execs and mounts a known number of times.

use super::*;

/// A v1 memory cgroup (or a v2 cgroup) made for one test, removed on drop. Not the
/// support crate's `TestCgroup`: this one is a single directory at the top of the
/// tree, whose `cgroup.procs` the workload writes through a descriptor opened
/// before it forks, and the tracer names it through a `StaticLookup`.
pub(crate) struct MemoryCgroup {
    pub(crate) dir: PathBuf,
    /// The path as /proc/<pid>/cgroup shows it.
    pub(crate) path: String,
}

impl MemoryCgroup {
    pub(crate) fn new(name: &str) -> MemoryCgroup {
        let root = if Path::new("/sys/fs/cgroup/memory").is_dir() {
            PathBuf::from("/sys/fs/cgroup/memory")
        } else {
            PathBuf::from("/sys/fs/cgroup")
        };
        let path = format!("/{name}-{}", std::process::id());
        let dir = root.join(&path[1..]);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        MemoryCgroup { dir, path }
    }

    fn procs(&self) -> OwnedFd {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
            .expect("open cgroup.procs");
        f.into()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// A process tree in fresh namespaces:
///
/// - C (host pid ns) unshares a mount namespace A and makes it private
///   (so nothing below propagates to the host), then unshares mount
///   namespace B and a pid namespace, and forks
/// - G: pid 1 in the new pid namespace, in mount namespace B. It joins the
///   test cgroup (if any), forks and execs `busybox true <marker>-<i>` K times,
///   mounts a tmpfs on `dir`, tries a mount of a bogus fstype on `dir`
///   (ENODEV), optionally mounts a tmpfs again through the new mount API
///   (fsopen, fsconfig, fsmount, move_mount) and unmounts it (umount2), then
///   waits for the release pipe (if held) and exits.
///
/// Namespace B thus sees exactly K execs, 1 successful and 1 failed mount.
pub(crate) struct NsWorkload {
    child: libc::pid_t,
    release: Option<OwnedFd>,
    _tmp: tempfile::TempDir,
    pub(crate) dir: PathBuf,
}

impl NsWorkload {
    pub(crate) fn spawn(
        k: usize,
        marker: &str,
        cgroup: Option<&MemoryCgroup>,
        hold: bool,
        new_api: bool,
    ) -> NsWorkload {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        // Everything the children use is built before fork: after it, only
        // async-signal-safe calls (this process has other threads).
        let busybox = cstr(BUSYBOX);
        let argvs: Vec<[CString; 2]> = (0..k)
            .map(|i| [cstr("true"), cstr(&format!("{marker}-{i}"))])
            .collect();
        let argv_ptrs: Vec<[*const c_char; 3]> = argvs
            .iter()
            .map(|a| [a[0].as_ptr(), a[1].as_ptr(), std::ptr::null()])
            .collect();
        let envp: [*const c_char; 1] = [std::ptr::null()];
        let none = cstr("none");
        let tmpfs = cstr("tmpfs");
        let bogus = cstr(BOGUS_FS);
        let root = cstr("/");
        let empty = cstr("");
        let target = cstr(dir.to_str().expect("utf-8 temp dir"));
        let procs = cgroup.map(MemoryCgroup::procs);
        let procs_fd = procs.as_ref().map_or(-1, |f| f.as_raw_fd());

        let mut fds = [0; 2];
        assert_eq!(
            // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
            0,
            "pipe2"
        );
        // SAFETY: pipe2 just returned these two fresh descriptors; each is owned once.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let (rfd, wfd) = (read_end.as_raw_fd(), write_end.as_raw_fd());

        // SAFETY: the child only makes async-signal-safe syscalls on data
        // prepared above, and leaves with _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
        if child == 0 {
            // SAFETY: raw syscalls on valid, NUL-terminated buffers; see above.
            unsafe {
                libc::close(wfd);
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    libc::_exit(11);
                }
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ) != 0
                {
                    libc::_exit(12);
                }
                if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID) != 0 {
                    libc::_exit(13);
                }
                let g = libc::fork();
                if g < 0 {
                    libc::_exit(14);
                }
                if g == 0 {
                    if procs_fd >= 0 && libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                        libc::_exit(15);
                    }
                    for argv in &argv_ptrs {
                        let c = libc::fork();
                        if c == 0 {
                            libc::execve(busybox.as_ptr(), argv.as_ptr(), envp.as_ptr());
                            libc::_exit(127);
                        }
                        let mut status = 0;
                        if c < 0 || libc::waitpid(c, &mut status, 0) != c || status != 0 {
                            libc::_exit(16);
                        }
                    }
                    if libc::mount(
                        none.as_ptr(),
                        target.as_ptr(),
                        tmpfs.as_ptr(),
                        0,
                        std::ptr::null(),
                    ) != 0
                    {
                        libc::_exit(17);
                    }
                    let rc = libc::mount(
                        none.as_ptr(),
                        target.as_ptr(),
                        bogus.as_ptr(),
                        0,
                        std::ptr::null(),
                    );
                    if rc == 0 || *libc::__errno_location() != libc::ENODEV {
                        libc::_exit(18);
                    }
                    if new_api {
                        // The same tmpfs again through the new mount API,
                        // stacked on `dir`, then unmounted.
                        let fs = libc::syscall(libc::SYS_fsopen, tmpfs.as_ptr(), 0) as libc::c_int;
                        if fs < 0 {
                            libc::_exit(19);
                        }
                        // FSCONFIG_CMD_CREATE = 6
                        if libc::syscall(
                            libc::SYS_fsconfig,
                            fs,
                            6,
                            std::ptr::null::<c_char>(),
                            std::ptr::null::<c_char>(),
                            0,
                        ) != 0
                        {
                            libc::_exit(20);
                        }
                        let mnt = libc::syscall(libc::SYS_fsmount, fs, 0, 0) as libc::c_int;
                        if mnt < 0 {
                            libc::_exit(21);
                        }
                        // MOVE_MOUNT_F_EMPTY_PATH = 4
                        if libc::syscall(
                            libc::SYS_move_mount,
                            mnt,
                            empty.as_ptr(),
                            libc::AT_FDCWD,
                            target.as_ptr(),
                            4,
                        ) != 0
                        {
                            libc::_exit(22);
                        }
                        // The descriptors pin the mount: close them first.
                        libc::close(mnt);
                        libc::close(fs);
                        if libc::umount2(target.as_ptr(), 0) != 0 {
                            libc::_exit(23);
                        }
                    }
                    if hold {
                        let mut b = 0u8;
                        libc::read(rfd, (&mut b as *mut u8).cast(), 1);
                    }
                    libc::_exit(0);
                }
                let mut status = 0;
                libc::waitpid(g, &mut status, 0);
                libc::_exit(if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    99
                });
            }
        }
        drop(read_end);
        drop(procs);
        NsWorkload {
            child,
            release: Some(write_end),
            _tmp: tmp,
            dir,
        }
    }

    /// Lets G exit and returns C's exit code (0 when every step worked).
    pub(crate) fn finish(&mut self) -> i32 {
        if let Some(w) = self.release.take() {
            // SAFETY: writes one byte from a valid buffer to our pipe.
            unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        }
        if self.child <= 0 {
            return -1;
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is writable.
        let rc = unsafe { libc::waitpid(self.child, &mut status, 0) };
        self.child = -1;
        if rc < 0 {
            return -1;
        }
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            100
        }
    }
}

impl Drop for NsWorkload {
    fn drop(&mut self) {
        if self.child > 0 {
            // Closing the pipe also ends G's wait.
            self.release.take();
            // SAFETY: signals and reaps our own child.
            unsafe {
                libc::kill(self.child, libc::SIGKILL);
                libc::waitpid(self.child, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Runs a one-exec workload that also mounts through the new mount API, under
/// `tracer`: its directory, and G's mount events in the order they came.
pub(crate) async fn workload_mounts(tracer: &Tracer, marker: &str) -> (String, Vec<MountResult>) {
    let mut rx = tracer.subscribe();
    let mut work = NsWorkload::spawn(1, marker, None, false, true);
    let dir = work.dir.to_str().unwrap().to_owned();
    assert_eq!(work.finish(), 0, "workload failed");
    let seen = drain(&mut rx, Duration::from_millis(500)).await;
    let g = seen
        .iter()
        .find(|e| {
            e.mount
                .as_ref()
                .is_some_and(|m| m.info.target.as_deref() == Some(dir.as_str()))
        })
        .expect("a mount event on the workload's directory")
        .process
        .tgid;
    let mounts = seen
        .iter()
        .filter(|e| e.process.tgid == g)
        .filter_map(|e| e.mount.clone())
        .collect();
    (dir, mounts)
}
