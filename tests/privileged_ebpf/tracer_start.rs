//! Starting the tracer: a restart with the raw_tp fallback, and a tracer that
//! cannot load.

use super::*;

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
    let (dir, seen) = workload_mounts(&second, "raw").await;
    let mounts: Vec<_> = seen
        .iter()
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
        .find(|m| m.info.operation == MountOp::Fsconfig)
        .unwrap();
    assert_eq!(fsconfig.info.attr, 6, "FSCONFIG_CMD_CREATE");
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
