//! Containers gone before their events are read keep their names.

use super::*;

/// Containers that live shorter than the reader's batch interval (~50 ms): their
/// cgroup directory and state file are gone before their events are read. The
/// cgroup_mkdir record, read first from the same ring buffer, still names them:
/// each one's execs (its command's own exec and three `/bin/busybox true`) are
/// counted under its name, and none lands on a `/ns/mnt:` series.
#[test]
fn short_lived_rm_containers_keep_their_names() {
    let Some((env, agent)) = setup("short_lived_rm_containers") else {
        return;
    };
    let attached = scrape(&agent);
    if value_of_hook(&attached, "tp_btf/cgroup_mkdir") != Some(1.0)
        && value_of_hook(&attached, "raw_tp/cgroup_mkdir") != Some(1.0)
    {
        skip("short_lived_rm_containers: no cgroup_mkdir program attached");
        return;
    }
    let mut events = EventStream::connect(&env, &agent.control_socket());
    let tag = format!("q{}", std::process::id());
    let names: Vec<String> = (1..=5).map(|i| format!("{tag}-{i}")).collect();
    for name in &names {
        let script =
            format!("/bin/busybox true {name}; /bin/busybox true {name}; /bin/busybox true {name}");
        env.launch(&["--rm", "--name", name, "busybox", "/bin/sh", "-c", &script])
            .ok();
    }
    // Each: /bin/sh (the command) + three /bin/busybox true.
    wait_metrics(&agent, 10, |m| {
        for name in &names {
            let execs = value(m, "agent_exec_events_total", name, &[]);
            if execs != Some(4.0) {
                return Err(format!(
                    "exec counter of {name}: {execs:?}, want 4\n{}",
                    m.lines()
                        .filter(|l| l.starts_with("agent_exec_events_total"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
        }
        Ok(())
    });
    // The stream agrees, and names the exact events. It may trail the counters
    // (a client process and a pipe further on): read until every container's
    // four are in, for up to 10 s.
    let inside = |e: &&EventRecord, name: &str| {
        // Inside the container (not our host-side `agent launch NAME`).
        e.exec
            .as_ref()
            .is_some_and(|x| x.filename.starts_with("/bin/"))
            && exec_argv(e).iter().any(|a| a.contains(name))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && names
            .iter()
            .any(|n| events.seen.iter().filter(|e| inside(e, n)).count() < 4)
    {
        events.read_for(Duration::from_millis(100));
    }
    events.read_for(Duration::from_millis(100));
    for name in &names {
        let ours: Vec<&EventRecord> = events.seen.iter().filter(|e| inside(e, name)).collect();
        assert_eq!(ours.len(), 4, "{name}: {ours:#?}");
        for e in ours {
            assert_eq!(e.container.name, *name, "{e:#?}");
            assert!(e.container.id.starts_with("/agent/"), "{e:#?}");
        }
    }
    assert!(
        !events
            .seen
            .iter()
            .any(|e| e.container.id.starts_with("/ns/mnt:")
                && exec_argv(e).iter().any(|a| a.contains(&tag))),
        "an exec of the short-lived containers went to a /ns/mnt: series"
    );
    drop(events);
    assert!(
        env.container_dirs().is_empty(),
        "{:?}",
        env.container_dirs()
    );
}

fn value_of_hook(exposition: &str, hook: &str) -> Option<f64> {
    matching(
        exposition,
        "agent_ebpf_program_attached",
        &[("program", hook)],
    )
    .first()
    .map(|(_, v)| *v)
}
