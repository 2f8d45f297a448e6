//! State that tells the truth after crashes: a supervisor killed with SIGKILL
//! (and left a zombie by a parent that does not reap it) makes its container
//! `dead` in `ps`, `inspect` and the metrics alike; `launch` and `rm` killed at
//! 20 points each leave nothing that the next commands cannot see and remove:
//! no container directory, layer, cgroup, mount or process.
//!
//! This test binary makes itself a child subreaper, so the supervisors that
//! `agent launch -d` detaches are its children: killed, they stay zombies until
//! it reaps them, as under a parent that never does. Its tests run one at a time
//! (they take the host lock exclusively).

use agent_test_support::launch::{Env, KillOnDrop, agent_cgroups, mounts_containing};
use agent_test_support::require_privileges;
use agent_test_support::{AgentProcess, http_get, sample};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and changes
    // only which process adopts this one's orphaned descendants.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

fn supervisor_pid(env: &Env, name: &str) -> i32 {
    env.inspect(name)["supervisor_pid"]
        .as_i64()
        .expect("supervisor_pid") as i32
}

/// The state letter of a process (`Z` for a zombie), if it exists.
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// What must be gone once every container is removed.
fn assert_nothing_left(
    env: &Env,
    overlay_before: &[String],
    cgroups_before: &[std::path::PathBuf],
) {
    assert!(
        env.container_dirs().is_empty(),
        "{:?}",
        env.container_dirs()
    );
    assert_eq!(env.overlay_dirs(), overlay_before, "container layers left");
    assert_eq!(agent_cgroups(), cgroups_before, "cgroups left behind");
    let state = env.state.to_str().unwrap();
    assert!(
        mounts_containing(state).is_empty(),
        "{:?}",
        mounts_containing(state)
    );
}

/// Every container `ps -a` lists, removed with `rm -f`.
fn remove_all(env: &Env) {
    let ids = env.agent(&["ps", "-a", "-q"]).ok().stdout;
    for id in ids.split_whitespace() {
        env.agent(&["rm", "-f", id]).ok();
    }
}

#[test]
fn a_killed_supervisor_makes_its_container_dead_everywhere() {
    require_privileges!();
    become_subreaper();
    let env = Env::exclusive();
    let overlay_before = env.overlay_dirs();
    let cgroups_before = agent_cgroups();
    env.launch(&["-d", "--name", "orphan", "busybox", "sleep", "300"])
        .ok();
    let sup = supervisor_pid(&env, "orphan");
    let container_pid = env.inspect("orphan")["pid"].as_i64().expect("pid") as i32;
    // SAFETY: signalling a process this test started (through agent launch -d).
    assert_eq!(unsafe { libc::kill(sup, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_state(sup) != Some('Z') {
        assert!(Instant::now() < deadline, "supervisor {sup} not a zombie");
        std::thread::sleep(Duration::from_millis(10));
    }

    let ps = env.agent(&["ps", "-a"]).ok().stdout;
    let line = ps.lines().find(|l| l.contains("orphan")).expect("listed");
    assert!(line.contains("Dead"), "{ps}");
    assert!(
        env.agent(&["ps", "-q"]).ok().stdout.trim().is_empty(),
        "a dead container is not running"
    );
    let v = env.inspect("orphan");
    assert_eq!(v["status"], "dead", "{v:#}");
    assert_eq!(v["running"], false, "{v:#}");

    let agent = AgentProcess::start_in(&env.state, &[]);
    let (_, body) = http_get(&agent.addr, "/metrics", &[]).unwrap();
    let text = String::from_utf8(body).unwrap();
    let id = format!("/agent/{}", v["id"].as_str().unwrap());
    assert_eq!(
        sample(&text, "agent_container_running", &id),
        Some(0.0),
        "{text}"
    );
    drop(agent);

    // The container's own process outlived its supervisor; rm kills it.
    assert!(process_state(container_pid).is_some());
    env.agent(&["rm", "orphan"]).ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_state(container_pid).is_some_and(|s| s != 'Z') {
        assert!(Instant::now() < deadline, "container process survived rm");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reap what this subreaper adopted.
    // SAFETY: waiting for any child of this process, without blocking.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    assert_nothing_left(&env, &overlay_before, &cgroups_before);
}

/// How long a foreground `launch --rm … true` takes here, to spread the kills
/// over it.
fn launch_duration(env: &Env) -> Duration {
    let t0 = Instant::now();
    env.launch(&["--rm", "busybox", "true"]).ok();
    t0.elapsed()
}

/// Starts `agent ARGS` and SIGKILLs it after `after`.
fn kill_after(env: &Env, args: &[&str], after: Duration) {
    let child: Child = env
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent");
    let mut child = KillOnDrop(child);
    std::thread::sleep(after);
    let _ = child.0.kill();
    let _ = child.0.wait();
}

#[test]
fn launch_and_rm_killed_at_20_points_leave_nothing_unseen() {
    require_privileges!();
    become_subreaper();
    let env = Env::exclusive();
    let overlay_before = env.overlay_dirs();
    let cgroups_before = agent_cgroups();
    let span = launch_duration(&env).max(Duration::from_millis(10));
    for k in 0..20u32 {
        let after = span * k / 20;
        kill_after(
            &env,
            &[
                "launch",
                "--rm",
                "--name",
                &format!("l{k}"),
                "busybox",
                "sleep",
                "30",
            ],
            after,
        );
        // Whatever it left is listed, and rm removes it.
        remove_all(&env);
        // SAFETY: reaping adopted children without blocking.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        assert_nothing_left(&env, &overlay_before, &cgroups_before);
    }
    for k in 0..20u32 {
        let name = format!("r{k}");
        env.launch(&["-d", "--name", &name, "busybox", "sleep", "30"])
            .ok();
        let t0 = Instant::now();
        env.agent(&["rm", "-f", &name]).ok();
        let rm_span = t0.elapsed();
        env.launch(&["-d", "--name", &name, "busybox", "sleep", "30"])
            .ok();
        kill_after(&env, &["rm", "-f", &name], rm_span * k / 20);
        remove_all(&env);
        // SAFETY: reaping adopted children without blocking.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        assert_nothing_left(&env, &overlay_before, &cgroups_before);
    }
}
