//! Privileged eBPF tests: load the real programs into this kernel, make real
//! namespaces, cgroups and mounts, and check what the tracer saw.
//!
//! Needs root and a kernel with BTF; otherwise each test prints why it skips.
//! Every test cleans up in `Drop` (child processes, the test cgroup, temp dirs),
//! also when an assertion fails.

use agent_test_support as common;
use common::ebpf::{
    BUSYBOX, collect, drain, sample_u64 as sample, scrape, skip, skip_reason, start,
};

use agent::container::{ContainerLabels, NoContainers, StaticLookup};
use agent::ebpf::events::MountOp;
use agent::ebpf::{EbpfError, EventKind, EventRecord, MountHook, Tracer, TracerConfig};
use std::ffi::{CString, c_char};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BOGUS_FS: &str = "agentbogusfs";

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// A v1 memory cgroup (or a v2 cgroup) made for one test, removed on drop.
struct TestCgroup {
    dir: PathBuf,
    /// The path as /proc/<pid>/cgroup shows it.
    path: String,
}

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        let root = if Path::new("/sys/fs/cgroup/memory").is_dir() {
            PathBuf::from("/sys/fs/cgroup/memory")
        } else {
            PathBuf::from("/sys/fs/cgroup")
        };
        let path = format!("/{name}-{}", std::process::id());
        let dir = root.join(&path[1..]);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup { dir, path }
    }

    fn procs(&self) -> OwnedFd {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
            .expect("open cgroup.procs");
        f.into()
    }
}

impl Drop for TestCgroup {
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
struct NsWorkload {
    child: libc::pid_t,
    release: Option<OwnedFd>,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl NsWorkload {
    fn spawn(
        k: usize,
        marker: &str,
        cgroup: Option<&TestCgroup>,
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
        let procs = cgroup.map(TestCgroup::procs);
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
    fn finish(&mut self) -> i32 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_execs_and_mounts_are_counted_exactly_and_streamed() {
    const K: usize = 7;
    let lookup = Arc::new(StaticLookup::new());
    let Some(tracer) = start(TracerConfig::default(), lookup.clone()).await else {
        return;
    };
    let tracer = Arc::new(tracer);
    for p in tracer.programs() {
        eprintln!("program {}: attached={} {:?}", p.hook, p.attached, p.error);
    }
    let hooks: Vec<_> = tracer.programs().iter().map(|p| p.hook).collect();
    assert_eq!(hooks, agent::ebpf::loader::HOOKS);
    assert!(
        tracer
            .programs()
            .iter()
            .any(|p| p.hook.ends_with("sched_process_exec") && p.attached)
    );
    let mount_hooks: Vec<&str> = MountHook::ALL.iter().map(|k| k.hook()).collect();
    let mounts_live = tracer
        .programs()
        .iter()
        .any(|p| mount_hooks.contains(&p.hook) && p.attached);
    assert!(
        mounts_live,
        "mount hooks did not attach: {:?}",
        tracer.programs()
    );

    let cgroup = TestCgroup::new("agent-ebpf-test");
    let labels = ContainerLabels {
        id: cgroup.path.clone(),
        name: "ebpf-test".into(),
        image: "busybox".into(),
    };
    lookup.insert(cgroup.path.clone(), labels.clone());
    let mut rx = tracer.subscribe();

    let mut work = NsWorkload::spawn(K, "exec", Some(&cgroup), true, false);
    let dir = work.dir.to_str().unwrap().to_owned();
    // Host: one exec of our own, with a marker argument.
    let mut host = std::process::Command::new(BUSYBOX)
        .arg0("true")
        .arg("host-marker")
        .spawn()
        .expect("spawn busybox");
    let host_pid = host.id();
    assert!(host.wait().expect("wait").success());

    // Everything from namespace B, plus our host exec.
    // G's failed mount is its last event; the ring buffer keeps order, so
    // once it is here, every earlier event of G's is too.
    let seen = collect(&mut rx, Duration::from_secs(20), |seen| {
        let bogus_seen = seen.iter().any(|e| {
            e.mount.as_ref().is_some_and(|m| {
                m.info.fstype.as_deref() == Some(BOGUS_FS)
                    && m.info.target.as_deref() == Some(dir.as_str())
            })
        });
        bogus_seen && seen.iter().any(|e| e.process.tgid == host_pid)
    })
    .await;
    let text = scrape(&tracer);
    assert_eq!(
        work.finish(),
        0,
        "workload failed (exit code = step that failed)"
    );

    let tmpfs = seen
        .iter()
        .find(|e| {
            e.mount.as_ref().is_some_and(|m| {
                m.info.fstype.as_deref() == Some("tmpfs")
                    && m.info.target.as_deref() == Some(dir.as_str())
            })
        })
        .expect("tmpfs mount event");
    let ns_b = tmpfs.process.mnt_ns;
    let g = tmpfs.process.tgid;
    // Namespace B's events are G's and its children's. (Matching on the inode
    // alone could also catch a namespace that died just before, whose inode
    // number B reuses; the counters below are checked per container.)
    let in_b: Vec<_> = seen
        .iter()
        .filter(|e| e.process.mnt_ns == ns_b && (e.process.tgid == g || e.process.ppid == g))
        .collect();
    let execs: Vec<_> = in_b.iter().filter(|e| e.kind == EventKind::Exec).collect();
    let mounts: Vec<_> = in_b.iter().filter(|e| e.kind == EventKind::Mount).collect();
    assert_eq!(execs.len(), K, "execs in namespace B: {execs:#?}");
    assert_eq!(mounts.len(), 2, "mounts in namespace B: {mounts:#?}");

    // G is pid 1 of the new pid namespace; the execs are its children.
    assert_eq!(tmpfs.process.ns_pid, 1);
    assert_ne!(tmpfs.process.pid_ns, 0);
    assert_eq!(tmpfs.process.uid, 0);
    let m = tmpfs.mount.as_ref().unwrap();
    assert_eq!(
        (m.info.operation, m.info.ret, m.result.as_str()),
        (MountOp::Mount, 0, "ok")
    );
    assert_eq!(m.info.source.as_deref(), Some("none"));
    assert_eq!(tmpfs.container, labels);

    let bogus = mounts
        .iter()
        .find(|e| e.mount.as_ref().unwrap().info.fstype.as_deref() == Some(BOGUS_FS))
        .expect("bogus mount event");
    let bm = bogus.mount.as_ref().unwrap();
    assert_eq!(bm.info.ret, -i64::from(libc::ENODEV));
    assert_eq!(
        (bm.result.as_str(), bm.errno),
        ("error", Some(libc::ENODEV))
    );
    assert_eq!(bm.info.target.as_deref(), Some(dir.as_str()));
    assert_eq!(bogus.process.tgid, g);

    let mut argvs: Vec<String> = execs
        .iter()
        .map(|e| {
            let x = e.exec.as_ref().unwrap();
            assert_eq!(x.filename, BUSYBOX);
            assert_eq!(e.process.ppid, g, "exec'd by G");
            assert_eq!(e.process.pid_ns, tmpfs.process.pid_ns);
            assert!(
                (2..=K as u32 + 1).contains(&e.process.ns_pid),
                "ns pid {}",
                e.process.ns_pid
            );
            assert_eq!(e.process.comm, "busybox");
            assert_eq!(e.container, labels, "attributed through G's cgroup");
            x.argv.join(" ")
        })
        .collect();
    argvs.sort();
    let mut want: Vec<String> = (0..K).map(|i| format!("true exec-{i}")).collect();
    want.sort();
    assert_eq!(argvs, want);

    // The host's own exec is the host's, and not in namespace B.
    let host_ev = seen
        .iter()
        .find(|e| e.process.tgid == host_pid)
        .expect("host exec event");
    assert_eq!(host_ev.container, ContainerLabels::host());
    assert_ne!(host_ev.process.mnt_ns, ns_b);
    assert_eq!(host_ev.exec.as_ref().unwrap().argv, ["true", "host-marker"]);
    // Namespace A (C's make-private step) maps to no container: its own series.
    let private = seen
        .iter()
        .find(|e| {
            e.mount.as_ref().is_some_and(|m| {
                m.info.target.as_deref() == Some("/")
                    && m.info.flags == (libc::MS_REC | libc::MS_PRIVATE)
            }) && e.process.tgid == tmpfs.process.ppid
        })
        .expect("make-private mount of namespace A");
    assert_ne!(private.process.mnt_ns, ns_b);
    assert_eq!(
        private.container,
        ContainerLabels::namespace(private.process.mnt_ns)
    );

    // Namespace B's execs and mounts (its exits may still be on their way),
    // reduced to what every mount hook kind must agree on, for the VM rig's
    // comparison across its runs (`print_events`).
    let mut rows: Vec<serde_json::Value> = in_b
        .iter()
        .filter_map(|e| match (&e.exec, &e.mount) {
            (Some(x), _) => Some(serde_json::json!([
                "exec",
                x.filename,
                x.argv,
                e.container.name
            ])),
            (_, Some(m)) => Some(serde_json::json!([
                "mount",
                m.info.operation.as_str(),
                m.info.source,
                m.info.target.as_deref().map(|t| t.replace(&dir, "DIR")),
                m.info.fstype,
                m.info.flags,
                m.info.attr,
                m.result,
                m.errno,
                e.container.name
            ])),
            _ => None,
        })
        .collect();
    rows.sort_by_key(|r| r.to_string());
    common::ebpf::print_events("namespace_execs_and_mounts", &rows);

    // Counters: exactly K execs, 1 ok and 1 failed mount for the container.
    tracer.with_counters(|c| {
        assert_eq!(c.execs(&labels), K as u64);
        assert_eq!(c.mounts(&labels, MountOp::Mount, true), 1);
        assert_eq!(c.mounts(&labels, MountOp::Mount, false), 1);
    });
    let id = &cgroup.path;
    let base = format!(r#"id="{id}",name="ebpf-test",image="busybox""#);
    assert_eq!(
        sample(&text, &format!("agent_exec_events_total{{{base}}}")),
        Some(K as u64),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"agent_mount_events_total{{{base},operation="mount",result="ok"}}"#)
        ),
        Some(1),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"agent_mount_events_total{{{base},operation="mount",result="error"}}"#)
        ),
        Some(1),
        "{text}"
    );
    let live_mount_hooks: u64 = mount_hooks
        .iter()
        .map(|h| {
            sample(
                &text,
                &format!(r#"agent_ebpf_program_attached{{program="{h}"}}"#),
            )
            .expect("every mount hook is listed")
        })
        .sum();
    assert_eq!(live_mount_hooks, 1, "exactly one mount hook: {text}");
    assert!(
        text.contains(r#"agent_ebpf_events_lost_total{type="exec"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"id="/",name="host""#),
        "host series: {text}"
    );
}

fn is_marked_exec(e: &EventRecord, marker: &str) -> bool {
    e.exec.as_ref().is_some_and(|x| {
        x.filename == BUSYBOX && x.argv.len() == 2 && x.argv[1].starts_with(&format!("{marker}-"))
    })
}

// A current-thread runtime: while the test thread runs the workload, the
// reader task cannot run, so nothing drains the (one page) ring buffer.
#[tokio::test(flavor = "current_thread")]
async fn full_ring_buffer_loses_and_counts_events_without_harm() {
    const K: usize = 64;
    let config = TracerConfig {
        ring_buffer_bytes: 4096,
        trace_mounts: false,
        // Exits would fill the one-page ring too: this test counts execs.
        trace_exits: false,
        ..TracerConfig::default()
    };
    let Some(tracer) = start(config, Arc::new(NoContainers)).await else {
        return;
    };
    let mut rx = tracer.subscribe();
    let (lost_before, _) = tracer.lost();
    let mut work = NsWorkload::spawn(K, "ring", None, false, false);
    assert_eq!(work.finish(), 0, "workload failed");
    let (lost_after, lost_mount) = tracer.lost();
    let lost = lost_after - lost_before;

    let first = drain(&mut rx, Duration::from_millis(500)).await;
    let seen = &first;
    let ours = seen.iter().filter(|e| is_marked_exec(e, "ring")).count() as u64;
    eprintln!(
        "delivered {ours} of {K} marked execs, {lost} lost ({} records in all)",
        seen.len()
    );
    // A 4096-byte ring holds at most four 856-byte exec records.
    assert!(ours <= 4, "{ours} delivered through a one-page ring");
    assert!(lost >= K as u64 - 4, "lost {lost}");
    assert!(
        ours + lost >= K as u64,
        "every exec is delivered or counted lost"
    );
    assert_eq!(lost_mount, 0, "mount hooks are off");
    assert_eq!(
        tracer.received() as usize,
        seen.len(),
        "nothing dropped in user space"
    );

    // The tracer goes on normally once drained. This namespace's processes
    // have all exited before their events are read: they still count, to the
    // namespace's own series.
    let mut work = NsWorkload::spawn(3, "late", None, false, false);
    assert_eq!(work.finish(), 0, "workload failed");
    let seen = drain(&mut rx, Duration::from_millis(500)).await;
    let marked: Vec<_> = seen.iter().filter(|e| is_marked_exec(e, "late")).collect();
    assert_eq!(marked.len(), 3, "{marked:#?}");
    let ns = marked[0].process.mnt_ns;
    let labels = ContainerLabels::namespace(ns);
    assert!(marked.iter().all(|e| e.container == labels));
    // Namespace inodes are reused: an earlier namespace (ours or another
    // test's) may have had the same number, and then shares the series. The
    // counter is exactly what the stream showed under these labels.
    let want = first
        .iter()
        .chain(seen.iter())
        .filter(|e| e.container == labels && e.kind == EventKind::Exec)
        .count() as u64;
    assert!(want >= 3);
    assert_eq!(tracer.with_counters(|c| c.execs(&labels)), want);
    let text = scrape(&Arc::new(tracer));
    assert_eq!(
        sample(
            &text,
            &format!(r#"agent_exec_events_total{{id="/ns/mnt:{ns}",name="",image=""}}"#)
        ),
        Some(want),
        "{text}"
    );
    assert!(
        sample(&text, r#"agent_ebpf_events_lost_total{type="exec"}"#).is_some_and(|n| n >= lost),
        "{text}"
    );
}

/// Start, stop, start again (with the raw_tp exec fallback): the second
/// tracer sees events, the first one's programs are gone with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracer_restarts_and_raw_tp_fallback_works() {
    async fn one_exec(tracer: &Tracer, marker: &str) -> Arc<EventRecord> {
        let mut rx = tracer.subscribe();
        let mut child = std::process::Command::new(BUSYBOX)
            .arg0("true")
            .arg(marker)
            .spawn()
            .expect("spawn busybox");
        let pid = child.id();
        assert!(child.wait().expect("wait").success());
        let seen = collect(&mut rx, Duration::from_secs(10), |s| {
            s.iter().any(|e| e.process.tgid == pid)
        })
        .await;
        let ev = seen
            .into_iter()
            .find(|e| e.process.tgid == pid)
            .expect("exec event");
        assert_eq!(ev.exec.as_ref().unwrap().argv, ["true", marker]);
        assert_eq!(ev.container, ContainerLabels::host());
        ev
    }

    let Some(first) = start(TracerConfig::default(), Arc::new(NoContainers)).await else {
        return;
    };
    one_exec(&first, "first").await;
    drop(first);

    let config = TracerConfig {
        prefer_tp_btf: false,
        ..TracerConfig::default()
    };
    let second = start(config, Arc::new(NoContainers))
        .await
        .expect("the first start worked, so must the second");
    let attached: Vec<_> = second
        .programs()
        .iter()
        .filter(|p| p.attached)
        .map(|p| p.hook)
        .collect();
    assert_eq!(
        attached,
        [
            "raw_tp/sched_process_exec",
            "raw_tp/sys_exit",
            "raw_tp/cgroup_mkdir",
            "raw_tp/sched_process_exit"
        ]
    );
    let ev = one_exec(&second, "second").await;
    assert_eq!(ev.exec.as_ref().unwrap().filename, BUSYBOX);
    assert_ne!(ev.process.mnt_ns, 0);
    // The raw_tp mount hook reports the same as the tp_btf one.
    let mut rx = second.subscribe();
    let mut work = NsWorkload::spawn(1, "raw", None, false, true);
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
    let mounts: Vec<_> = seen
        .iter()
        .filter(|e| e.process.tgid == g)
        .filter_map(|e| e.mount.as_ref())
        .map(|m| {
            let i = &m.info;
            (
                i.operation.as_str(),
                i.fstype.clone().unwrap_or_default(),
                i.target.clone().unwrap_or_default(),
                i.ret >= 0,
                m.errno,
            )
        })
        .collect();
    let t = |s: &str| s.to_owned();
    assert_eq!(
        mounts,
        [
            ("mount", t("tmpfs"), dir.clone(), true, None),
            ("mount", t(BOGUS_FS), dir.clone(), false, Some(libc::ENODEV)),
            ("fsopen", t("tmpfs"), t(""), true, None),
            ("fsconfig", t(""), t(""), true, None),
            ("fsmount", t(""), t(""), true, None),
            ("move_mount", t(""), dir.clone(), true, None),
            ("umount2", t(""), dir.clone(), true, None),
        ]
    );
    let fsconfig = seen
        .iter()
        .filter(|e| e.process.tgid == g)
        .filter_map(|e| e.mount.as_ref())
        .find(|m| m.info.operation == MountOp::Fsconfig)
        .unwrap();
    assert_eq!(fsconfig.info.attr, 6, "FSCONFIG_CMD_CREATE");
}

/// Kills and reaps a child process on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent_events(socket: &Path, extra: &[&str]) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new(common::agent_bin())
            .arg("events")
            .arg("--socket")
            .arg(socket)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn agent events"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_events_streams_over_the_control_socket() {
    use agent::server::control;
    let Some(tracer) = start(TracerConfig::default(), Arc::new(NoContainers)).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/control.sock");
    let listener = control::bind(&socket).expect("bind");
    let server = tokio::spawn(control::serve(listener, Some(tracer.event_sender())));
    assert!(matches!(
        control::bind(&socket),
        Err(control::ControlError::InUse { .. })
    ));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let mut json = agent_events(&socket, &["--json", "--type", "exec"]);
    let mut plain = agent_events(&socket, &["--container", "host"]);
    let json_lines = common::stdout_lines(&mut json.0);
    let plain_lines = common::stdout_lines(&mut plain.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tracer.event_sender().receiver_count() < 2 {
        assert!(Instant::now() < deadline, "clients did not subscribe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut child = std::process::Command::new(BUSYBOX)
        .arg0("true")
        .arg("cli-marker")
        .spawn()
        .unwrap();
    let pid = child.id();
    child.wait().unwrap();

    let found = tokio::task::spawn_blocking(move || {
        let find = |rx: &std::sync::mpsc::Receiver<String>, pred: &dyn Fn(&str) -> bool| loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        };
        let j = find(&json_lines, &|l: &str| l.contains("cli-marker"));
        let p = find(&plain_lines, &|l: &str| l.contains("cli-marker"));
        (j, p)
    })
    .await
    .unwrap();
    let json_line = found.0.expect("JSON line for the marker exec");
    let rec: EventRecord = serde_json::from_str(&json_line).expect("an EventRecord");
    assert_eq!(rec.kind, EventKind::Exec);
    assert_eq!(rec.process.tgid, pid);
    assert_eq!(rec.container, ContainerLabels::host());
    assert_eq!(rec.exec.unwrap().argv, ["true", "cli-marker"]);
    let plain_line = found.1.expect("readable line for the marker exec");
    assert!(
        plain_line.contains(&format!("exec  host pid={pid} "))
            && plain_line.contains("/bin/busybox [true cli-marker]"),
        "{plain_line}"
    );
    // Clients that hang up are noticed at once, even with no events flowing.
    drop(json);
    drop(plain);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tracer.event_sender().receiver_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "server kept subscriptions of gone clients"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
}

/// Without a tracer the socket still answers, with a clear one-line error.
#[tokio::test(flavor = "current_thread")]
async fn agent_events_without_tracing_is_one_clear_error() {
    use agent::server::control;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let listener = control::bind(&socket).expect("bind");
    let server = tokio::spawn(control::serve(listener, None));
    let sock = socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::agent_bin())
            .args(["events", "--socket"])
            .arg(&sock)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "agent: error: event tracing is not running (eBPF unavailable on this host)"
    );
    server.abort();
    let _ = server.await;
    // The socket file outlives its server: the next bind replaces it.
    assert!(socket.exists());
    drop(control::bind(&socket).expect("a stale socket is replaced"));
    let out = std::process::Command::new(common::agent_bin())
        .args(["events", "--socket", "/nonexistent/agent.sock"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("agent: error: cannot connect to /nonexistent/agent.sock"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// A tracer that cannot load is `None` and one warning, never a panic.
#[tokio::test(flavor = "current_thread")]
async fn a_tracer_that_cannot_load_is_none() {
    if let Some(reason) = skip_reason() {
        skip(&reason);
        return;
    }
    let config = TracerConfig {
        // Not a power of two: refused before anything is loaded.
        ring_buffer_bytes: 12345,
        ..TracerConfig::default()
    };
    assert!(
        Tracer::start_or_warn(config.clone(), Arc::new(NoContainers), &[])
            .await
            .is_none()
    );
    let err = Tracer::start(config, Arc::new(NoContainers))
        .await
        .expect_err("a bad ring size must fail");
    assert!(matches!(err, EbpfError::RingSize(12345)), "{err:?}");
}

/// Each kind of mount hook this kernel allows, alone, over the same workload
/// (the old and the new mount API): the same mount events, field for field.
/// A kind the kernel refuses is reported and left out (fexit, here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mount_hook_kind_sees_the_same_events() {
    type Row = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        u64,
        u64,
        i64,
    );
    let mut runs: Vec<(MountHook, Vec<Row>)> = Vec::new();
    for kind in MountHook::ALL {
        let config = TracerConfig {
            mount_hooks: vec![kind],
            trace_exits: false,
            ..TracerConfig::default()
        };
        let Some(tracer) = start(config, Arc::new(NoContainers)).await else {
            return;
        };
        let status = tracer
            .programs()
            .iter()
            .find(|p| p.hook == kind.hook())
            .expect("listed")
            .clone();
        if !status.attached {
            skip(&format!(
                "mount hook {} does not attach here: {}",
                kind.hook(),
                status.error.as_deref().unwrap_or("?")
            ));
            continue;
        }
        let others = tracer
            .programs()
            .iter()
            .filter(|p| p.attached && p.hook != kind.hook())
            .filter(|p| MountHook::ALL.iter().any(|k| k.hook() == p.hook))
            .count();
        assert_eq!(others, 0, "only {} is live", kind.hook());
        let mut rx = tracer.subscribe();
        let mut work = NsWorkload::spawn(1, "kinds", None, false, true);
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
        let rows: Vec<Row> = seen
            .iter()
            .filter(|e| e.process.tgid == g)
            .filter_map(|e| e.mount.as_ref())
            .map(|m| {
                let i = &m.info;
                (
                    i.operation.as_str().to_owned(),
                    i.source.clone(),
                    i.target.clone().map(|t| t.replace(&dir, "DIR")),
                    i.fstype.clone(),
                    i.flags,
                    i.attr,
                    // fds differ from run to run only in number, not in sign
                    i.ret.signum(),
                )
            })
            .collect();
        assert_eq!(rows.len(), 7, "{} saw {rows:#?}", kind.hook());
        eprintln!("{}: {} mount events", kind.hook(), rows.len());
        runs.push((kind, rows));
    }
    assert!(!runs.is_empty());
    for (kind, rows) in &runs[1..] {
        assert_eq!(
            rows,
            &runs[0].1,
            "{} and {} differ",
            kind.hook(),
            runs[0].0.hook()
        );
    }
}
