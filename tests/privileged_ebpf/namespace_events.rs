//! Execs and mounts in a fresh namespace, counted exactly per container, streamed
//! with their process, namespace and container, and exported as series.

use super::*;

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

    let cgroup = MemoryCgroup::new("agent-ebpf-test");
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
