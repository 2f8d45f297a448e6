//! Privileged tests of `agent launch` and the lifecycle commands: real namespaces,
//! overlay mounts and cgroups, run as root against the built `agent` binary, each in
//! its own temporary state dir with a busybox OCI image built here from
//! `/bin/busybox`. Every test cleans up in `Drop` (see `launch_support`), also when it
//! fails. Without root or overlayfs the tests print why and skip.

use agent_test_support::launch as support;
use agent_test_support::require_privileges;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Env, agent_cgroups};

fn cgroup_file(
    v: &serde_json::Value,
    v1_controller: &str,
    file_v1: &str,
    file_v2: &str,
) -> PathBuf {
    let dirs = v["cgroup"]["dirs"].as_array().expect("cgroup dirs");
    if v["cgroup"]["version"] == "v2" {
        return PathBuf::from(dirs[0].as_str().unwrap()).join(file_v2);
    }
    dirs.iter()
        .map(|d| PathBuf::from(d.as_str().unwrap()))
        .find(|d| {
            d.parent()
                .and_then(Path::parent)
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.split(',').any(|c| c == v1_controller))
        })
        .unwrap_or_else(|| panic!("no {v1_controller} hierarchy in {v:#}"))
        .join(file_v1)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn pid1_hostname_overlay_root_and_writes_land_in_diff() {
    require_privileges!();
    let env = Env::new();
    let run = env
        .launch(&[
            "--name",
            "first",
            "--hostname",
            "box1",
            "busybox",
            "sh",
            "-c",
            "echo pid=$$; hostname; grep ' / / ' /proc/self/mountinfo; \
             echo data > /written; cat /etc/motd; \
             test -e /etc/removed && echo whiteout-broken || echo whiteout-ok; \
             ls /opaque; echo env=$FROM_IMAGE",
        ])
        .ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "pid=1", "{run:#?}");
    assert_eq!(lines[1], "box1");
    assert!(
        lines[2].contains(" - overlay overlay "),
        "root is not the overlay: {}",
        lines[2]
    );
    assert!(
        lines[2].contains("lowerdir=l/"),
        "lowerdirs go through short links: {}",
        lines[2]
    );
    assert_eq!(lines[3], "layer two");
    assert_eq!(lines[4], "whiteout-ok");
    assert_eq!(
        lines[5], "new",
        "opaque dir must hide the lower layer's files"
    );
    assert_eq!(lines[6], "env=yes");

    let v = env.inspect("first");
    assert_eq!(v["status"], "exited");
    assert_eq!(v["exit_code"], 0);
    let upper = PathBuf::from(v["rootfs"]["upperdir"].as_str().unwrap());
    assert_eq!(read(&upper.join("written")), "data");
    let lowers = v["rootfs"]["lowerdirs"].as_array().unwrap();
    assert_eq!(lowers.len(), 2);
    for l in lowers {
        let l = Path::new(l.as_str().unwrap());
        assert!(l.join("bin/busybox").exists() || l.join("etc/motd").exists());
        assert!(
            !l.join("written").exists(),
            "a write reached image layer {}",
            l.display()
        );
    }
    // The overlay lived only in the container's mount namespace.
    assert!(support::mounts_containing(upper.to_str().unwrap()).is_empty());
    // Docker's overlay2 layout: link, lower through short links.
    let layer_dir = upper.parent().unwrap();
    let lower = read(&layer_dir.join("lower"));
    assert_eq!(lower.split(':').count(), 2);
    for short in lower.split(':') {
        let link = env.state.join("overlay2").join(short);
        assert!(
            link.join("bin").exists() || link.join("etc").exists(),
            "{short}"
        );
    }
    assert!(
        v["config"]["process"]["args"].is_array(),
        "config.json in inspect"
    );
    env.agent(&["rm", "first"]).ok();
    assert!(!layer_dir.exists());
    assert!(env.container_dirs().is_empty());
}

#[test]
fn two_containers_from_one_image_are_isolated() {
    require_privileges!();
    let env = Env::new();
    env.launch(&[
        "-d",
        "--name",
        "a",
        "busybox",
        "sh",
        "-c",
        "echo a > /only-a; sleep 60",
    ])
    .ok();
    // Wait until a has written its file.
    let va = env.inspect("a");
    let upper_a = PathBuf::from(va["rootfs"]["upperdir"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !upper_a.join("only-a").exists() {
        assert!(
            Instant::now() < deadline,
            "container a never wrote its file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = env
        .launch(&[
            "--name",
            "b",
            "busybox",
            "sh",
            "-c",
            "test -e /only-a && echo visible || echo hidden; ps -o pid,comm | grep -c sleep; \
             cat /proc/net/dev | grep -c ':'; cat /sys/class/net/lo/operstate",
        ])
        .ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "hidden", "{run:#?}");
    assert_eq!(lines[1], "0", "b sees a's processes");
    assert_eq!(lines[2], "1", "network none has only loopback");
    assert_eq!(lines[3], "unknown", "loopback is up");
    let vb = env.inspect("b");
    assert_ne!(va["namespaces"]["pid"], vb["namespaces"]["pid"]);
    assert_ne!(va["namespaces"]["mnt"], vb["namespaces"]["mnt"]);
    assert_ne!(va["namespaces"]["net"], vb["namespaces"]["net"]);
    assert!(va["live_namespaces"].is_object());
    // --network host shares the host's network namespace.
    env.launch(&["--name", "h", "--network", "host", "busybox", "true"])
        .ok();
    use std::os::unix::fs::MetadataExt;
    let host_net = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_eq!(env.inspect("h")["namespaces"]["net"], host_net);
    assert_ne!(vb["namespaces"]["net"], host_net);
    env.agent(&["rm", "-f", "a"]).ok();
    env.agent(&["rm", "b", "h"]).ok();
    assert!(env.container_dirs().is_empty());
}

#[test]
fn memory_limit_is_enforced_and_the_oom_kill_recorded() {
    require_privileges!();
    let env = Env::new();
    let run = env.launch(&[
        "--name",
        "hog",
        "--memory",
        "16Mi",
        "--memory-swap",
        "16Mi",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(run.code, 137, "{run:#?}");
    let v = env.inspect("hog");
    assert_eq!(v["oom_killed"], true, "{v:#}");
    assert_eq!(v["signal"], 9);
    assert_eq!(v["limits"]["memory_bytes"], 16 << 20);
    // The cgroup is gone once the container exited.
    for d in v["cgroup"]["dirs"].as_array().unwrap() {
        assert!(!Path::new(d.as_str().unwrap()).exists());
    }
    assert!(env.agent(&["ps", "-a"]).ok().stdout.contains("OOMKilled"));
}

#[test]
fn limits_are_written_and_cpu_throttling_shows() {
    require_privileges!();
    let env = Env::new();
    env.launch(&[
        "-d",
        "--name",
        "lim",
        "--memory",
        "32Mi",
        "--cpus",
        "0.2",
        "--pids-limit",
        "20",
        "busybox",
        "sh",
        "-c",
        "while :; do :; done",
    ])
    .ok();
    let v = env.inspect("lim");
    let mem = cgroup_file(&v, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(read(&mem), (32u64 << 20).to_string());
    let pids = cgroup_file(&v, "pids", "pids.max", "pids.max");
    assert_eq!(read(&pids), "20");
    if v["cgroup"]["version"] == "v2" {
        assert_eq!(read(&cgroup_file(&v, "cpu", "", "cpu.max")), "20000 100000");
    } else {
        assert_eq!(
            read(&cgroup_file(&v, "cpu", "cpu.cfs_quota_us", "")),
            "20000"
        );
        assert_eq!(
            read(&cgroup_file(&v, "cpu", "cpu.cfs_period_us", "")),
            "100000"
        );
    }
    // Inside, the container sees its own cgroup (read-only) at /sys/fs/cgroup.
    let run = env
        .launch(&[
            "--rm",
            "--memory",
            "48Mi",
            "busybox",
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
             touch /sys/fs/cgroup/x 2>/dev/null && echo cg-rw || echo cg-ro",
        ])
        .ok();
    assert_eq!(run.stdout, format!("{}\ncg-ro\n", 48u64 << 20), "{run:#?}");
    let stat = cgroup_file(&v, "cpu", "cpu.stat", "cpu.stat");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let throttled: u64 = read(&stat)
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if throttled > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never throttled: {}",
            read(&stat)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dirs: Vec<PathBuf> = v["cgroup"]["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| PathBuf::from(d.as_str().unwrap()))
        .collect();
    env.agent(&["rm", "-f", "lim"]).ok();
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    require_privileges!();
    let env = Env::new();
    // The inner shell forks until fork fails (bounded, in case the limit were missing);
    // PID 1 then keeps the survivors alive.
    env.launch(&[
        "-d",
        "--name",
        "bomb",
        "--pids-limit",
        "16",
        "busybox",
        "sh",
        "-c",
        "sh -c 'i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done' 2>/dev/null; echo stopped; sleep 60",
    ])
    .ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.agent(&["logs", "bomb"]).ok().stdout.contains("stopped") {
        assert!(
            Instant::now() < deadline,
            "the fork loop never hit the limit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = env.inspect("bomb");
    let current: u64 = read(&cgroup_file(&v, "pids", "pids.current", "pids.current"))
        .parse()
        .unwrap();
    assert!(current <= 16, "pids.current {current} above the limit");
    let events = read(&cgroup_file(&v, "pids", "pids.events", "pids.events"));
    let max_hits: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(max_hits > 0, "pids.events: {events}");
    env.agent(&["rm", "-f", "bomb"]).ok();
}

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

#[test]
fn image_store_shares_layers_and_reads_all_formats() {
    require_privileges!();
    let env = Env::new();
    let layers_before = env.overlay_dirs();
    assert_eq!(layers_before.len(), 2);
    // The whiteout and the opaque dir are stored the way overlayfs reads them.
    let top = env.state.join("overlay2").join(
        layers_before
            .iter()
            .find(|d| env.state.join("overlay2").join(d).join("lower").exists())
            .unwrap(),
    );
    let wh = std::fs::symlink_metadata(top.join("diff/etc/removed")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);

    // The same layers under another name are not unpacked again.
    let layout = env.dir.path().join("busybox-oci");
    let run = env
        .agent(&[
            "image",
            "import",
            "--name",
            "again:v2",
            layout.to_str().unwrap(),
        ])
        .ok();
    assert!(run.stderr.contains("already present"), "{run:#?}");
    assert_eq!(env.overlay_dirs(), layers_before);

    // A docker save archive with a Cmd.
    let archive = env.dir.path().join("saved.tar");
    support::build_docker_archive(
        &archive,
        &[&support::base_layer()],
        &["echo", "from-docker"],
        "saved:1",
    );
    env.agent(&["image", "import", archive.to_str().unwrap()])
        .ok();
    let run = env.launch(&["--rm", "saved:1"]).ok();
    assert_eq!(run.stdout, "from-docker\n");

    // A gzip rootfs tarball and a plain directory.
    let rootfs = env.dir.path().join("rootfs.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&rootfs).unwrap(),
            flate2::Compression::fast(),
        );
        let mut w = gz;
        std::io::Write::write_all(&mut w, &support::base_layer().tar).unwrap();
        w.finish().unwrap();
    }
    env.agent(&[
        "image",
        "import",
        "--name",
        "tarball",
        rootfs.to_str().unwrap(),
    ])
    .ok();
    env.launch(&["--rm", "tarball", "cat", "/etc/removed"]).ok();
    let zst = env.dir.path().join("rootfs.tar.zst");
    std::fs::write(
        &zst,
        zstd::encode_all(&support::top_layer().tar[..], 3).unwrap(),
    )
    .unwrap();
    env.agent(&["image", "import", "--name", "zst", zst.to_str().unwrap()])
        .ok();
    let zst_layers = env.overlay_dirs();
    assert_eq!(
        zst_layers.len(),
        3,
        "a zstd layer was added: {zst_layers:?}"
    );
    let dir = env.dir.path().join("rootdir");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    env.agent(&[
        "image",
        "import",
        "--name",
        "fromdir",
        dir.to_str().unwrap(),
    ])
    .ok();
    let run = env
        .launch(&["--rm", "fromdir", "sh", "-c", "echo dir-ok"])
        .ok();
    assert_eq!(run.stdout, "dir-ok\n");
    let ls = env.agent(&["image", "ls"]).ok().stdout;
    for name in [
        "busybox:latest",
        "again:v2",
        "saved:1",
        "tarball:latest",
        "fromdir:latest",
    ] {
        assert!(ls.contains(name), "{ls}");
    }

    // image rm is refused while a container uses the image.
    env.launch(&["--name", "user", "busybox", "true"]).ok();
    let r = env.agent(&["image", "rm", "-f", "busybox"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("used by"), "{r:#?}");
    env.agent(&["rm", "user"]).ok();
    env.agent(&["image", "rm", "-f", "busybox"]).ok();
    // The tarball image shares the base layer's chain id; it keeps it alive.
    env.agent(&["image", "rm", "saved:1", "tarball", "fromdir", "zst"])
        .ok();
    assert!(env.overlay_dirs().is_empty(), "{:?}", env.overlay_dirs());
    assert!(support::list_dir(&env.state.join("overlay2/l")).is_empty());
}

/// One line on stderr, non-zero exit.
fn assert_one_line_error(run: &support::Run, needle: &str) {
    assert_ne!(run.code, 0, "{run:#?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(run.stderr.contains(needle), "expected {needle:?}: {run:#?}");
}

#[test]
fn bad_input_leaves_nothing_behind() {
    require_privileges!();
    let env = Env::exclusive();
    let cgroups_before = agent_cgroups();
    env.launch(&["-d", "--name", "taken", "busybox", "sleep", "60"])
        .ok();
    let overlay_before = env.overlay_dirs();
    let containers_before = env.container_dirs();
    let cases: &[(&[&str], &str)] = &[
        (&["nosuchimage", "true"], "no such image"),
        (&["--memory", "12xb", "busybox", "true"], "--memory"),
        (&["--cpus", "-1", "busybox", "true"], "--cpus"),
        // Docker's range is 0.01 to the number of CPUs.
        (&["--cpus", "1e-9", "busybox", "true"], "from 0.01"),
        (
            &["--cpus", "100000", "busybox", "true"],
            "CPUs are available",
        ),
        (&["--pids-limit", "0", "busybox", "true"], "--pids-limit"),
        (&["--name", "taken", "busybox", "true"], "already in use"),
        (
            &["--name", "bad/name", "busybox", "true"],
            "invalid container name",
        ),
        (&["busybox"], "no command"),
        (&["--user", "ghost", "busybox", "true"], "unknown user"),
        (&["--network", "bridge", "busybox", "true"], "--network"),
        (&["busybox", "/no/such/binary"], "/no/such/binary"),
        (
            &["--cap-add", "NOT_A_CAP", "busybox", "true"],
            "unknown capability",
        ),
        (
            &["--security-opt", "apparmor=x", "busybox", "true"],
            "--security-opt",
        ),
        (
            &["--security-opt", "seccomp=/no/such.json", "busybox", "true"],
            "/no/such.json",
        ),
        (
            &["--userns-remap", "agent-no-such-remap", "busybox", "true"],
            "/etc/subuid",
        ),
        (&["busybox", "no-such-command"], "not found"),
        (&["-d", "busybox", "no-such-command"], "not found"),
    ];
    for (args, needle) in cases {
        let run = env.launch(args);
        assert_one_line_error(&run, needle);
        assert_eq!(env.overlay_dirs(), overlay_before, "{args:?} left a layer");
        assert_eq!(
            env.container_dirs(),
            containers_before,
            "{args:?} left state"
        );
        assert!(
            support::list_dir(&env.state.join("tmp")).is_empty(),
            "{args:?} left scratch files"
        );
    }
    let taken = env.inspect("taken");
    assert_eq!(taken["status"], "running", "the first 'taken' survives");
    env.agent(&["rm", "-f", "taken"]).ok();
    assert_eq!(agent_cgroups(), cgroups_before, "cgroups left behind");

    // A corrupt layer: flip a byte in a copy of the layout's biggest blob.
    let layout = env.dir.path().join("busybox-oci");
    let bad = env.dir.path().join("corrupt-oci");
    std::fs::create_dir_all(bad.join("blobs/sha256")).unwrap();
    std::fs::copy(layout.join("oci-layout"), bad.join("oci-layout")).unwrap();
    std::fs::copy(layout.join("index.json"), bad.join("index.json")).unwrap();
    let mut biggest = (0, PathBuf::new());
    for name in support::list_dir(&layout.join("blobs/sha256")) {
        let p = layout.join("blobs/sha256").join(&name);
        let len = std::fs::metadata(&p).unwrap().len();
        let mut data = std::fs::read(&p).unwrap();
        if len > biggest.0 {
            biggest = (len, bad.join("blobs/sha256").join(&name));
        }
        std::fs::write(bad.join("blobs/sha256").join(&name), &mut data).unwrap();
    }
    let mut data = std::fs::read(&biggest.1).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&biggest.1, data).unwrap();
    // Import into a fresh store so no layer is already present.
    let fresh = env.dir.path().join("fresh");
    let run = env
        .command(&["image", "import", "--quiet", bad.to_str().unwrap()])
        .env("AGENT_STATE_DIR", &fresh)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("corrupt") || stderr.contains("mismatch"),
        "{stderr}"
    );
    let left: Vec<_> = support::list_dir(&fresh.join("overlay2"))
        .into_iter()
        .filter(|n| n != "l")
        .collect();
    assert!(left.is_empty(), "corrupt import left layers {left:?}");
    assert!(support::list_dir(&fresh.join("tmp")).is_empty());
    assert!(support::list_dir(&fresh.join("images")).is_empty());
    assert!(support::mounts_containing(env.dir.path().to_str().unwrap()).is_empty());
}

/// On a hybrid host the unified (v2) hierarchy is mounted beside the v1 ones, usually
/// without the memory/cpu/pids controllers. Pointing the runtime at it exercises the
/// v2 code path here: subtree_control, the cgroup namespace, cgroup.kill, removal,
/// and a clean refusal of a limit whose controller is missing.
#[test]
fn cgroup_v2_code_path_on_the_unified_hierarchy() {
    require_privileges!();
    let root = Path::new("/sys/fs/cgroup/unified");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup/unified ") && l.contains(" - cgroup2 "));
    if !mounted {
        eprintln!("SKIPPED: no cgroup2 at /sys/fs/cgroup/unified (a pure v1 or v2 host)");
        return;
    }
    let env = Env::new();
    let out = env
        .command(&[
            "launch",
            "--name",
            "v2",
            "busybox",
            "sh",
            "-c",
            "grep '^0::' /proc/self/cgroup",
        ])
        .env("AGENT_CGROUP_ROOT", root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout.trim(),
        "0::/",
        "the cgroup namespace is rooted at the container"
    );
    let v = env.inspect("v2");
    assert_eq!(v["cgroup"]["version"], "v2");
    let dir = PathBuf::from(v["cgroup"]["dirs"][0].as_str().unwrap());
    assert!(dir.starts_with(root.join("agent")), "{}", dir.display());
    assert!(!dir.exists(), "the v2 cgroup was not removed");
    env.agent(&["rm", "v2"]).ok();

    let controllers = read(&root.join("cgroup.controllers"));
    if !controllers.split_whitespace().any(|c| c == "pids") {
        let out = env
            .command(&["launch", "--pids-limit", "5", "busybox", "true"])
            .env("AGENT_CGROUP_ROOT", root)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("pids.max"), "{stderr}");
        assert!(
            env.container_dirs().is_empty(),
            "a refused launch left state"
        );
        assert_eq!(env.overlay_dirs().len(), 2, "a refused launch left a layer");
    }
}
