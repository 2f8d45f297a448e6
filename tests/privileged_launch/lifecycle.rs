//! Exit codes and signals, stop, init/user/workdir/env and hardening, and detached
//! output.

use super::*;

#[test]
fn exit_codes_and_signals() {
    require_privileges!();
    let env = Env::new();
    env.launch(&["--rm", "busybox", "sh", "-c", "exit 42"])
        .expect_code(42);
    env.launch(&["--rm", "busybox", "false"]).expect_code(1);

    // agent kill delivers the signal; the exit code is 128+signal.
    env.launch(&["-d", "--name", "k", "busybox", "sleep", "60"])
        .ok();
    env.agent(&["kill", "k"]).ok();
    let v = env.wait_exited("k", 10);
    assert_eq!(v["exit_code"], 137);
    assert_eq!(v["signal"], 9);
    assert_eq!(v["oom_killed"], false);

    // A handled signal: the container decides its exit code.
    env.launch(&[
        "-d",
        "--name",
        "t",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 7' TERM; touch /ready; while :; do sleep 0.1; done",
    ])
    .ok();
    env.wait_file("t", "ready");
    env.agent(&["kill", "-s", "TERM", "t"]).ok();
    assert_eq!(env.wait_exited("t", 10)["exit_code"], 7);

    // SIGTERM to an attached `agent launch` is forwarded to the container.
    let child = env
        .command(&[
            "launch",
            "--name",
            "fwd",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 9' TERM; touch /ready; while :; do sleep 0.1; done",
        ])
        .spawn()
        .unwrap();
    let mut child = support::KillOnDrop(child);
    let pid = child.0.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.agent(&["inspect", "fwd"]).code != 0 {
        assert!(Instant::now() < deadline, "fwd never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    env.wait_file("fwd", "ready");
    // SAFETY: plain signal to our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait_timeout(Duration::from_secs(15));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(9),
        "SIGTERM was not forwarded"
    );
    for name in ["k", "t", "fwd"] {
        env.agent(&["rm", name]).ok();
    }
}

#[test]
fn stop_kills_a_process_that_ignores_sigterm() {
    require_privileges!();
    let env = Env::new();
    env.launch(&[
        "-d",
        "--name",
        "stubborn",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 0.1; done",
    ])
    .ok();
    let start = Instant::now();
    env.agent(&["stop", "-t", "1", "stubborn"]).ok();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "stop returned after {took:?}"
    );
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    let v = env.inspect("stubborn");
    assert_eq!(v["status"], "exited");
    assert_eq!(v["exit_code"], 137);

    // A process that exits on SIGTERM stops at once.
    env.launch(&[
        "-d",
        "--name",
        "polite",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; touch /ready; while :; do sleep 0.1; done",
    ])
    .ok();
    env.wait_file("polite", "ready");
    let start = Instant::now();
    env.agent(&["stop", "-t", "10", "polite"]).ok();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(env.inspect("polite")["exit_code"], 0);
    // rm refuses nothing now; a running one needs -f.
    env.launch(&["-d", "--name", "busy", "busybox", "sleep", "60"])
        .ok();
    let r = env.agent(&["rm", "busy"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("running"), "{r:#?}");
    for name in ["stubborn", "polite"] {
        env.agent(&["rm", name]).ok();
    }
    env.agent(&["rm", "-f", "busy"]).ok();
    assert!(env.container_dirs().is_empty());
}

#[test]
fn init_user_workdir_env_and_hardening() {
    require_privileges!();
    let env = Env::new();
    let run = env
        .launch(&[
            "--rm",
            "--init",
            "busybox",
            "sh",
            "-c",
            "echo $$; cat /proc/1/cmdline | head -c 100 >/dev/null; ps -o pid | wc -l",
        ])
        .ok();
    assert_ne!(
        run.stdout.lines().next(),
        Some("1"),
        "with --init the command is not PID 1"
    );
    env.launch(&["--rm", "--init", "busybox", "sh", "-c", "exit 5"])
        .expect_code(5);
    // Detached with --init: launch returns at once, and no descriptor of ours leaks in.
    let start = Instant::now();
    env.launch(&[
        "-d",
        "--init",
        "--name",
        "di",
        "busybox",
        "sh",
        "-c",
        "ls /proc/self/fd | wc -l; sleep 60",
    ])
    .ok();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "launch -d --init blocked"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut logs = String::new();
    while logs.is_empty() {
        assert!(Instant::now() < deadline, "no output from di");
        std::thread::sleep(Duration::from_millis(20));
        logs = env.agent(&["logs", "di"]).ok().stdout;
    }
    // stdin, stdout, stderr and ls's own directory handle.
    assert_eq!(logs.trim(), "4", "descriptors leaked into the container");
    env.agent(&["rm", "-f", "di"]).ok();

    let run = env
        .launch(&[
            "--rm",
            "--user",
            "nobody",
            "--workdir",
            "/tmp/work",
            "-e",
            "GREETING=hi",
            "busybox",
            "sh",
            "-c",
            "id -u; id -g; pwd; echo $GREETING",
        ])
        .ok();
    assert_eq!(run.stdout, "65534\n65534\n/tmp/work\nhi\n");

    let run = env
        .launch(&[
            "--rm",
            "busybox",
            "sh",
            "-c",
            "grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status; \
             wc -c < /proc/timer_list; touch /sys/x 2>/dev/null && echo sys-rw || echo sys-ro; \
             echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo procsys-rw || echo procsys-ro; \
             mknod /tmp/kmsg c 1 11; head -c 1 /tmp/kmsg >/dev/null 2>&1 && echo mknod-open || echo mknod-inert; \
             echo x > /dev/null && head -c 4 /dev/zero | wc -c",
        ])
        .ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "CapEff:\t00000000a80425fb", "{run:#?}");
    assert_eq!(lines[1], "CapBnd:\t00000000a80425fb");
    assert_eq!(lines[2], "NoNewPrivs:\t1");
    assert_eq!(lines[3], "0", "/proc/timer_list is masked");
    assert_eq!(lines[4], "sys-ro");
    assert_eq!(lines[5], "procsys-ro");
    assert_eq!(
        lines[6], "mknod-inert",
        "a device node made in the container opened"
    );
    assert_eq!(lines[7], "4", "/dev/null and /dev/zero work");
    assert!(env.container_dirs().is_empty(), "--rm leaves nothing");
}

#[test]
fn detached_output_goes_to_logs() {
    require_privileges!();
    let env = Env::new();
    env.launch(&[
        "-d",
        "--name",
        "talk",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ])
    .ok();
    env.wait_exited("talk", 10);
    let logs = env.agent(&["logs", "talk"]).ok().stdout;
    assert!(logs.contains("out\n") && logs.contains("err\n"), "{logs}");
    assert!(
        env.agent(&["ps"]).ok().stdout.lines().count() == 1,
        "ps hides exited"
    );
    assert!(env.agent(&["ps", "-a"]).ok().stdout.contains("talk"));
    env.agent(&["rm", "talk"]).ok();
}
