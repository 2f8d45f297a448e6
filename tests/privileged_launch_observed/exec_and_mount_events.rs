//! Exec and mount events of launched containers: counted per container, streamed with
//! the container's name, and labelled (issue 4).

use super::*;

/// `/bin/true` runs after the barrier.
const TRUES: usize = 3;
const BOGUS_FS: &str = "agentbogusfs";

#[test]
fn container_execs_and_mounts_are_counted_streamed_and_labelled() {
    let Some((env, agent)) = setup("container_execs_and_mounts") else {
        return;
    };
    let name = format!("observed-{}", std::process::id());
    let mut events = EventStream::connect(&env, &agent.control_socket());

    // The command (`/bin/sh`, its own exec) first blocks on `read` — an ash
    // builtin, no exec — so that the test can take a baseline after the
    // container's setup (its /proc, /dev, … mounts are made by the container's own
    // process, in its cgroup, before execve, and are attributed to it too).
    // Released, it execs exactly K = 9 programs, all by absolute path (busybox ash
    // would otherwise run applets without execve):
    //
    // - /bin/true three times;
    // - /bin/mount of a tmpfs and /bin/mount of a bogus fstype, directly in the
    //   container. It lacks CAP_SYS_ADMIN (Docker's default set, which `agent
    //   launch` applies; there is no flag to add capabilities), so mount(2) fails
    //   with EPERM before the fstype is even looked up: two failed mounts;
    // - /bin/busybox unshare, which makes a user + mount namespace (no capability
    //   needed, and no seccomp filter: see the launch below) and makes it private with one successful mount(2) call of its own
    //   (MS_REC|MS_PRIVATE on /; busybox's `--propagation unchanged` would instead
    //   call mount with flags 0 and fail with EINVAL), then execs /bin/sh, which
    //   execs /bin/mount of a tmpfs — allowed to the owner of the new mount
    //   namespace: a successful mount — and /bin/mount of the bogus fstype:
    //   ENODEV, a failed mount. These processes stay in the container's cgroup and
    //   pid namespace, so they are its events.
    //
    // Then the inner shell waits on stdin, so the container — and the nested
    // namespace — stay alive while we scrape. That wait matters: the agent
    // attributes an event through its mount namespace, resolved once (and then
    // cached) by reading /proc/<pid>/cgroup of the process or its parent in that
    // namespace. When every process of a short-lived nested namespace is gone
    // before the agent reads its events, they are counted to `/ns/mnt:<inode>`
    // instead of the container (seen here without the wait: 7 execs instead of
    // 10, the userns mounts missing) — a known gap, reported, not papered over.
    let inner = format!(
        "/bin/mount -t tmpfs none /tmp; echo userns-tmpfs=$?; \
         /bin/mount -t {BOGUS_FS} none /tmp; echo userns-bogus=$?; echo ready; read end"
    );
    let unshare = ["/bin/busybox", "unshare", "-r", "-m", "/bin/sh", "-c"];
    let script = format!(
        "read go; /bin/true {name}-0; /bin/true {name}-1; /bin/true {name}-2; \
         /bin/mount -t tmpfs none /tmp; echo tmpfs=$?; \
         /bin/mount -t {BOGUS_FS} none /tmp; echo bogus=$?; \
         {} \"$INNER\" 2>&1; exit 0",
        unshare.join(" ")
    );
    let inner_env = format!("INNER={inner}");
    // Docker's default seccomp profile (the agent's) refuses unshare(2) without
    // CAP_SYS_ADMIN, as `docker run` does: this container opts out as a Docker
    // user would.
    let mut launch = env.command(&[
        "launch",
        "-i",
        "--name",
        &name,
        "--security-opt",
        "seccomp=unconfined",
        "-e",
        &inner_env,
        "busybox",
        "/bin/sh",
        "-c",
        &script,
    ]);
    launch.stdin(Stdio::piped());
    let mut launch = KillOnDrop(launch.spawn().expect("agent launch"));
    let mut stdin = launch.0.stdin.take().expect("stdin");
    let stdout = launch.0.stdout.take().expect("stdout");
    let (tx, out_lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });

    // Baseline: the command's own exec has been counted, and nothing after it.
    events.wait_for(&name, 10, |es| {
        es.iter()
            .any(|e| e.exec.as_ref().is_some_and(|x| x.filename == "/bin/sh"))
    });
    let v = env.inspect(&name);
    let id = format!("/agent/{}", v["id"].as_str().unwrap());
    let pid_ns = v["namespaces"]["pid"].as_u64().expect("pid ns inode");
    let mnt_ns = v["namespaces"]["mnt"].as_u64().expect("mnt ns inode");
    let before = wait_metrics(&agent, 10, |m| {
        let execs = value(m, "agent_exec_events_total", &name, &[]);
        (execs == Some(1.0))
            .then(|| matching(m, "agent_mount_events_total", &[("name", &name)]))
            .ok_or(format!("exec counter of {name}: {execs:?}, want 1"))
    });
    let setup_mounts: f64 = before.iter().map(|(_, v)| v).sum();
    let was = |op: &str, result: &str| {
        before
            .iter()
            .find(|(l, _)| l["operation"] == op && l["result"] == result)
            .map_or(0.0, |(_, v)| *v)
    };
    assert!(
        out_lines.try_recv().is_err(),
        "the container ran past its barrier"
    );

    writeln!(stdin, "go").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut output = Vec::new();
    while !output.iter().any(|l| l == "ready") {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("container never got ready: {output:?}"));
        output.push(out_lines.recv_timeout(left).expect("container output"));
    }
    // busybox mount: 0 on success; 1 on EPERM (reported on the container's
    // stderr, not captured here); 255 on ENODEV (its message goes through 2>&1).
    assert_eq!(
        output,
        [
            "tmpfs=1",
            "bogus=1",
            "userns-tmpfs=0",
            "mount: mounting none on /tmp failed: No such device",
            "userns-bogus=255",
            "ready"
        ],
        "{output:?}"
    );

    // /metrics: exactly 1 + K = 10 execs (the command's own /bin/sh, 3 ×
    // /bin/true, 4 × /bin/mount, /bin/busybox unshare, the inner /bin/sh), exactly
    // 2 more successful (unshare's propagation change, the userns tmpfs) and 3
    // more failed (EPERM, EPERM, ENODEV) mount(2) calls, nothing else.
    let want_execs = (1 + TRUES + 4 + 2) as f64;
    let want_ok = was("mount", "ok") + 2.0;
    let want_failed = was("mount", "error") + 3.0;
    let after = wait_metrics(&agent, 10, |m| {
        let execs = value(m, "agent_exec_events_total", &name, &[]);
        let mount = |result| {
            value(
                m,
                "agent_mount_events_total",
                &name,
                &[("operation", "mount"), ("result", result)],
            )
        };
        let (ok, failed) = (mount("ok"), mount("error"));
        (execs == Some(want_execs) && ok == Some(want_ok) && failed == Some(want_failed))
            .then(|| m.to_owned())
            .ok_or(format!(
                "execs {execs:?}, mounts ok {ok:?} failed {failed:?}"
            ))
    });
    // Settle, and check that no more events of it trickle in.
    std::thread::sleep(Duration::from_millis(300));
    let m = scrape(&agent);
    let of_name = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("agent_exec_events") || l.starts_with("agent_mount_events"))
            .filter(|l| l.contains(&format!("name=\"{name}\"")))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(of_name(&m), of_name(&after));
    let (exec_labels, execs) = matching(&m, "agent_exec_events_total", &[("name", &name)])
        .pop()
        .unwrap();
    assert_eq!(execs, want_execs);
    assert_eq!(exec_labels["id"], id);
    let image = exec_labels["image"].clone();
    assert!(image.starts_with("busybox"), "image label {image}");
    let mounts_after = matching(&m, "agent_mount_events_total", &[("name", &name)]);
    for (l, v) in &mounts_after {
        assert_eq!((&l["id"], &l["image"]), (&id, &image));
        let delta = match (l["operation"].as_str(), l["result"].as_str()) {
            ("mount", "ok") => 2.0,
            ("mount", "error") => 3.0,
            _ => 0.0,
        };
        assert_eq!(*v - was(&l["operation"], &l["result"]), delta, "{l:?}");
    }
    assert_eq!(
        mounts_after.iter().map(|(_, v)| v).sum::<f64>(),
        setup_mounts + 5.0
    );

    // The stream: the same events, with the container's labels and fields.
    events.wait_for(&name, 10, |es| {
        es.iter().filter(|e| e.exec.is_some()).count() as f64 == want_execs
            && es.iter().filter(|e| e.mount.is_some()).count() as f64 == setup_mounts + 5.0
    });
    events.read_for(Duration::from_millis(300));
    let mine = events.of(&name);
    let userns_sh = mine
        .iter()
        .find(|e| {
            e.exec
                .as_ref()
                .is_some_and(|x| x.argv.get(2) == Some(&inner))
        })
        .expect("the inner /bin/sh exec");
    let userns_mnt = userns_sh.process.mnt_ns as u64;
    assert_ne!(userns_mnt, mnt_ns, "unshare made a new mount namespace");
    for e in &mine {
        assert_eq!(
            (&e.container.id, &e.container.image),
            (&id, &image),
            "{e:?}"
        );
        // Only processes of this container carry its labels: its pid namespace,
        // its mount namespace or the one nested by unshare.
        assert_eq!(e.process.pid_ns as u64, pid_ns, "{e:?}");
        let mnt = e.process.mnt_ns as u64;
        assert!(mnt == mnt_ns || mnt == userns_mnt, "{e:?}");
    }
    let execs: Vec<(String, Vec<String>, bool)> = mine
        .iter()
        .filter_map(|e| e.exec.as_ref())
        .map(|x| (x.filename.clone(), x.argv.clone(), x.argv_truncated))
        .collect();
    let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mount_argv = |fs: &str| argv(&["/bin/mount", "-t", fs, "none", "/tmp"]);
    let mut want = vec![("/bin/sh".into(), argv(&["/bin/sh", "-c", &script]), false)];
    for i in 0..TRUES {
        let marker = format!("{name}-{i}");
        want.push(("/bin/true".into(), argv(&["/bin/true", &marker]), false));
    }
    for fs in ["tmpfs", BOGUS_FS] {
        want.push(("/bin/mount".into(), mount_argv(fs), false));
    }
    let mut unshare_argv = argv(&unshare);
    unshare_argv.push(inner.clone());
    want.push(("/bin/busybox".into(), unshare_argv, false));
    want.push(("/bin/sh".into(), argv(&["/bin/sh", "-c", &inner]), false));
    for fs in ["tmpfs", BOGUS_FS] {
        want.push(("/bin/mount".into(), mount_argv(fs), false));
    }
    assert_eq!(execs, want);

    // Every mount event not from `mount` or `busybox` (unshare) came before the
    // command's exec: the container process setting up its own root.
    let sh_exec = mine.iter().find(|e| e.exec.is_some()).unwrap().time_unix_ns;
    let setup: Vec<_> = mine
        .iter()
        .filter(|e| e.mount.is_some() && !["mount", "busybox"].contains(&&*e.process.comm))
        .collect();
    assert_eq!(setup.len() as f64, setup_mounts);
    assert!(setup.iter().all(|e| e.time_unix_ns < sh_exec), "{setup:#?}");
    let command_mounts: Vec<_> = mine
        .iter()
        .filter(|e| ["mount", "busybox"].contains(&&*e.process.comm))
        .filter_map(|e| e.mount.as_ref().map(|m| (e.process.mnt_ns as u64, m)))
        .collect();
    assert_eq!(command_mounts.len(), 5, "{command_mounts:#?}");
    let private = libc::MS_REC | libc::MS_PRIVATE;
    let expected = [
        (mnt_ns, Some("tmpfs"), "/tmp", 0, Some(libc::EPERM)),
        (mnt_ns, Some(BOGUS_FS), "/tmp", 0, Some(libc::EPERM)),
        (userns_mnt, None, "/", private, None),
        (userns_mnt, Some("tmpfs"), "/tmp", 0, None),
        (userns_mnt, Some(BOGUS_FS), "/tmp", 0, Some(libc::ENODEV)),
    ];
    for ((ns, m), (want_ns, fs, target, flags, errno)) in command_mounts.iter().zip(expected) {
        assert_eq!(*ns, want_ns, "{m:?}");
        assert_eq!(m.info.operation, MountOp::Mount);
        assert_eq!(m.info.fstype.as_deref(), fs, "{m:?}");
        assert_eq!(m.info.target.as_deref(), Some(target));
        assert_eq!(m.info.flags & private, flags, "{m:?}");
        assert_eq!(m.info.source.as_deref(), Some("none"));
        assert_eq!(m.errno, errno, "{m:?}");
        assert_eq!(m.result, if errno.is_none() { "ok" } else { "error" });
    }

    // The host's events are the host's: our own `agent inspect` ran meanwhile.
    let (host_pid, host_mnt) = (host_ns("pid"), host_ns("mnt"));
    let host_events: Vec<&EventRecord> = events
        .seen
        .iter()
        .filter(|e| e.process.pid_ns as u64 == host_pid && e.process.mnt_ns as u64 == host_mnt)
        .collect();
    assert!(
        host_events
            .iter()
            .any(|e| exec_argv(e).iter().any(|a| a == "inspect") && e.container.name == "host"),
        "our host-side `agent inspect` exec is not attributed to the host"
    );
    assert!(host_events.iter().all(|e| e.container.name != name));
    let setup_umounts = setup
        .iter()
        .filter(|e| e.mount.as_ref().unwrap().info.operation == MountOp::Umount2)
        .count();
    eprintln!(
        "{name}: {} events; setup: {setup_mounts} mount-family calls ({setup_umounts} umount2) \
         by the container process before its exec; {} host events seen",
        mine.len(),
        host_events.len()
    );

    drop(stdin);
    let status = launch
        .wait_timeout(Duration::from_secs(10))
        .expect("container exits once stdin closes");
    assert_eq!(status.code(), Some(0));
    drop(events);
    assert_clean(&env, &[v]);
}
