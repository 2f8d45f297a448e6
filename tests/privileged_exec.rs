//! Privileged tests of `agent exec`: the process joins every namespace and the
//! cgroup of the running container, runs under the same capabilities, seccomp
//! filter and no_new_privs as its first process, takes `-e`, `-w` and `-u`,
//! returns the command's exit code, and works in a user namespace.

use agent_test_support::launch as support;
use agent_test_support::require_privileges;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{Env, SubidEntry};

/// `readlink /proc/<pid>/ns/<kind>` inodes, as `inspect` records them.
fn host_ns(pid: i64, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

const PRINT_NS: &str =
    "for n in mnt uts ipc pid net cgroup user; do readlink /proc/self/ns/$n; done";

fn launch_sleeper(env: &Env, name: &str, extra: &[&str]) -> i64 {
    let mut args = vec!["-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sleep", "600"]);
    env.launch(&args).ok();
    env.inspect(name)["pid"].as_i64().expect("running pid")
}

fn exec(env: &Env, args: &[&str]) -> support::Run {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    env.agent(&all)
}

fn assert_joins_everything(env: &Env, name: &str, pid: i64) {
    let run = exec(env, &[name, "sh", "-c", PRINT_NS]).ok();
    let inside: Vec<&str> = run.stdout.lines().collect();
    let want: Vec<String> = ["mnt", "uts", "ipc", "pid", "net", "cgroup", "user"]
        .iter()
        .map(|k| host_ns(pid, k))
        .collect();
    assert_eq!(inside, want, "exec's namespaces are the container's");
    // The cgroup: the same view as PID 1's, and from the host, the exec'd process
    // is listed in the container's cgroup in every hierarchy.
    let run = exec(
        env,
        &[
            name,
            "sh",
            "-c",
            "cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup",
        ],
    )
    .ok();
    let (mine, theirs) = run.stdout.split_once("---\n").unwrap();
    assert_eq!(mine, theirs, "{run:#?}");
    let v = env.inspect(name);
    let dirs: Vec<PathBuf> = v["cgroup"]["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| PathBuf::from(d.as_str().unwrap()))
        .collect();
    let mut child = env
        .command(&["exec", name, "sleep", "31"])
        .spawn()
        .expect("spawn exec");
    let deadline = Instant::now() + Duration::from_secs(10);
    let sleeper = loop {
        let procs = std::fs::read_to_string(dirs[0].join("cgroup.procs")).unwrap();
        let found = procs.lines().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\x0031\x00")
        });
        if let Some(p) = found {
            break p.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "exec never showed up in {dirs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    for d in &dirs {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|p| p == sleeper),
            "{} lacks {sleeper}",
            d.display()
        );
    }
    for kind in ["mnt", "pid", "net", "ipc", "uts", "cgroup", "user"] {
        assert_eq!(
            host_ns(sleeper.parse().unwrap(), kind),
            host_ns(pid, kind),
            "{kind}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn exec_joins_the_namespaces_and_cgroup_under_the_same_confinement() {
    require_privileges!();
    let env = Env::new();
    let pid = launch_sleeper(&env, "target", &["--memory", "64Mi"]);
    assert_joins_everything(&env, "target", pid);
    // Same capabilities, no_new_privs and seccomp mode as PID 1.
    let status = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):'";
    let run = exec(
        &env,
        &[
            "target",
            "sh",
            "-c",
            &format!("{status} /proc/self/status; echo ---; {status} /proc/1/status"),
        ],
    )
    .ok();
    let (mine, theirs) = run.stdout.split_once("---\n").unwrap();
    assert_eq!(mine, theirs, "{run:#?}");
    assert!(
        mine.contains("NoNewPrivs:\t1") && mine.contains("Seccomp:\t2"),
        "{mine}"
    );
    assert!(mine.contains("CapEff:\t00000000a80425fb"), "{mine}");
}

#[test]
fn exit_codes_env_workdir_and_user() {
    require_privileges!();
    let env = Env::new();
    launch_sleeper(&env, "box", &["-e", "FROM_LAUNCH=1"]);
    assert_eq!(exec(&env, &["box", "sh", "-c", "exit 42"]).code, 42);
    assert_eq!(exec(&env, &["box", "true"]).code, 0);
    let missing = exec(&env, &["box", "no-such-command"]);
    assert_eq!(missing.code, 127, "{missing:#?}");
    assert!(missing.stderr.contains("not found"), "{missing:#?}");
    let not_exec = exec(&env, &["box", "/etc/passwd"]);
    assert_eq!(not_exec.code, 126, "{not_exec:#?}");
    let killed = exec(&env, &["box", "sh", "-c", "kill -9 $$"]);
    assert_eq!(killed.code, 137, "{killed:#?}");
    let run = exec(
        &env,
        &[
            "-e",
            "FOO=bar",
            "-w",
            "/tmp",
            "-u",
            "nobody",
            "box",
            "sh",
            "-c",
            "echo $FOO $FROM_LAUNCH $HOME; pwd; id -u; id -g",
        ],
    )
    .ok();
    assert_eq!(
        run.stdout, "bar 1 /nonexistent\n/tmp\n65534\n65534\n",
        "{run:#?}"
    );
    // Stdin is /dev/null without -i, the caller's with it.
    use std::io::Write;
    let mut child = env
        .command(&["exec", "-i", "box", "cat"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped in\n");
    assert_eq!(exec(&env, &["box", "cat"]).ok().stdout, "");
    // Not running: a clear error.
    env.agent(&["stop", "-t", "1", "box"]).ok();
    let run = exec(&env, &["box", "true"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("is not running"), "{run:#?}");
}

#[test]
fn exec_works_in_a_user_namespace() {
    require_privileges!();
    let user = "agent-test-exec-remap";
    let (start, count) = (1_900_000u32, 65_536u32);
    let _subid = SubidEntry::ensure(user, start, count);
    let env = Env::new();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let pid = launch_sleeper(&env, "remapped", &["--userns-remap", user]);
    assert_ne!(
        host_ns(pid, "user"),
        host_ns(i64::from(std::process::id()), "user")
    );
    assert_joins_everything(&env, "remapped", pid);
    let run = exec(
        &env,
        &[
            "remapped",
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map; echo hi > /by-exec",
        ],
    )
    .ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "0");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(map, ["0", &start.to_string(), &count.to_string()]);
    let upper = PathBuf::from(
        env.inspect("remapped")["rootfs"]["upperdir"]
            .as_str()
            .unwrap(),
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(upper.join("by-exec")).unwrap().uid(),
        start
    );
}

#[test]
fn exec_u_reads_the_containers_passwd_through_its_own_links() {
    require_privileges!();
    let env = Env::new();
    // An image whose /etc/passwd is an absolute link: it must resolve inside the
    // container's root, never to a host file.
    let layout = env.dir.path().join("linked-passwd-oci");
    let top = support::layer(|b| {
        support::add_dir(b, "secret", 0o755);
        support::add_file(
            b,
            "secret/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\neve:x:4242:4243:eve:/home/eve:/bin/sh\n",
        );
        support::add_symlink(b, "etc/passwd", "/secret/passwd");
    });
    support::build_oci(&layout, &[&support::base_layer(), &top], None, "latest");
    env.agent(&[
        "image",
        "import",
        "--name",
        "linked",
        &format!("{}:latest", layout.display()),
    ])
    .ok();
    assert!(!std::path::Path::new("/secret/passwd").exists());
    env.launch(&["-d", "--name", "l", "linked", "sleep", "600"])
        .ok();
    let run = exec(
        &env,
        &["-u", "eve", "l", "sh", "-c", "id -u; id -g; echo $HOME"],
    )
    .ok();
    assert_eq!(run.stdout, "4242\n4243\n/home/eve\n", "{run:#?}");
}
