//! Privileged: `agent launch` is confined like Docker's defaults, and the OCI spec
//! is the program.
//!
//! - A static C program (tests/support/probe/syscall_probe.c) tries syscalls
//!   Docker's default seccomp profile blocks and some it allows, under `agent
//!   launch`, under a real `docker run` (the test's own dockerd, its built-in
//!   profile) and under `podman run` (which needs its rlimits lowered here: this
//!   host's bounding set lacks CAP_SYS_RESOURCE). Agent and Docker agree on every
//!   outcome; podman's own profile is weaker on exactly `keyctl`, `setns` and
//!   `unshare(CLONE_NEWUSER)`, and the agent given podman's profile agrees with
//!   podman on every outcome.
//! - CapEff/CapBnd equal Docker's, `--privileged` gives the host's bounding set.
//! - `--read-only`, `--userns-remap`, and `agent run --bundle` on `runc spec`
//!   bundles.
//!
//! Every test cleans up in `Drop`; without root (or a tool) it prints why and skips.

use agent_test_support as common;
use agent_test_support::launch as support;
use agent_test_support::require_privileges;

use agent::runtime::seccomp::{DEFAULT_PROFILE, PROFILE_PACKAGE};
use common::docker::Dockerd;
use common::podman::Podman;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{Env, SubidEntry};

/// Podman's default profile (containers/common).
const PODMAN_PROFILE: &str = "/usr/share/containers/seccomp.json";
/// What podman's profile allows and Docker's (the agent's default) blocks.
const ONLY_PODMAN_ALLOWS: [&str; 3] = ["keyctl", "setns", "unshare(CLONE_NEWUSER)"];

/// Builds the probe with `cc -static`; `None` (reason printed) without a compiler.
fn build_probe(dir: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/probe/syscall_probe.c");
    let out = dir.join("syscall_probe");
    match Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => {
            eprintln!(
                "SKIPPED: cc -static failed (apt-get install gcc libc6-dev): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED: no cc ({e}); apt-get install gcc libc6-dev");
            None
        }
    }
}

/// A rootfs directory holding the probe at `/probe`, busybox, and `/tmp`.
fn probe_rootfs(dir: &Path, probe: &Path) -> PathBuf {
    let root = dir.join("probe-rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy(probe, root.join("probe")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in ["sh", "grep", "cat", "touch", "echo", "id", "ls", "stat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    root
}

/// `name → outcome` from the probe's output.
fn outcomes(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(n, o)| (n.to_string(), o.to_string()))
        .collect()
}

/// `name → passed?`: whether the call got past the filter (allowed, or failed
/// on its own merits like `setns` on a bad fd), whatever errno a block answers.
fn allowed(m: &BTreeMap<String, String>) -> BTreeMap<String, bool> {
    m.iter()
        .map(|(k, v)| (k.clone(), v != "EPERM" && v != "ENOSYS"))
        .collect()
}

fn status_line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn seccomp_and_capabilities_match_docker_and_podman() {
    require_privileges!();
    for (profile, package) in [
        (DEFAULT_PROFILE, PROFILE_PACKAGE),
        (PODMAN_PROFILE, "golang-github-containers-common"),
    ] {
        if !Path::new(profile).exists() {
            eprintln!("SKIPPED: {profile} missing (apt-get install {package})");
            return;
        }
    }
    let env = Env::new();
    let Some(probe) = build_probe(env.dir.path()) else {
        return;
    };
    let root = probe_rootfs(env.dir.path(), &probe);
    env.agent(&[
        "image",
        "import",
        "--quiet",
        "--name",
        "probe",
        root.to_str().unwrap(),
    ])
    .ok();
    let agent = env.launch(&["--rm", "probe", "/probe"]).ok();
    let agent_out = outcomes(&agent.stdout);
    assert!(agent_out.len() >= 20, "{agent:#?}");
    let unconfined = env
        .launch(&[
            "--rm",
            "--security-opt",
            "seccomp=unconfined",
            "probe",
            "/probe",
        ])
        .ok();
    let unconfined_out = outcomes(&unconfined.stdout);

    let podman_profile = format!("seccomp={PODMAN_PROFILE}");
    let agent_podman_profile = outcomes(
        &env.launch(&["--rm", "--security-opt", &podman_profile, "probe", "/probe"])
            .ok()
            .stdout,
    );

    // Docker's profile answers EPERM to everything it does not allow.
    for (name, want) in [
        ("add_key", "EPERM"),
        ("keyctl", "EPERM"),
        ("setns", "EPERM"),
        ("unshare(CLONE_NEWUSER)", "EPERM"),
        ("personality(PER_BSD)", "EPERM"),
        ("kexec_load", "EPERM"),
        ("bpf", "EPERM"),
        ("swapon", "EPERM"),
        ("userfaultfd", "EPERM"),
        ("getpid", "allowed"),
        ("uname", "allowed"),
        ("personality(PER_LINUX)", "allowed"),
        ("clone", "allowed"),
    ] {
        assert_eq!(
            agent_out[name], want,
            "{name} under agent launch: {agent_out:#?}"
        );
    }
    // Podman's profile: ENOSYS by default action, and the three it allows.
    assert_eq!(agent_podman_profile["add_key"], "ENOSYS");
    for name in ONLY_PODMAN_ALLOWS {
        assert_ne!(
            agent_podman_profile[name], "EPERM",
            "{name} under podman's profile"
        );
    }
    // Unconfined lifts what only seccomp blocked.
    assert_eq!(unconfined_out["add_key"], "allowed", "{unconfined_out:#?}");
    assert_eq!(unconfined_out["personality(PER_BSD)"], "allowed");

    let caps_cmd = ["/bin/grep", "-E", "^Cap(Eff|Bnd)", "/proc/self/status"];
    let mut args = vec!["--rm", "probe"];
    args.extend(caps_cmd);
    let agent_default_caps = env.launch(&args).ok().stdout;
    assert!(
        agent_default_caps.contains("CapEff:\t00000000a80425fb"),
        "{agent_default_caps}"
    );
    let mut args = vec![
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        "probe",
    ];
    args.extend(caps_cmd);
    let agent_min_caps = env.launch(&args).ok().stdout;
    assert!(
        agent_min_caps.contains("CapBnd:\t0000000000000400"),
        "{agent_min_caps}"
    );
    // --privileged: the host's whole bounding set.
    let mut args = vec!["--rm", "--privileged", "probe"];
    args.extend(caps_cmd);
    let privileged = env.launch(&args).ok().stdout;
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(
        status_line(&privileged, "CapBnd:"),
        status_line(&host, "CapBnd:"),
        "--privileged"
    );

    let mut table: Vec<(String, Vec<String>)> = agent_out
        .iter()
        .map(|(k, v)| (k.clone(), vec![v.clone(), unconfined_out[k].clone()]))
        .collect();
    for (k, v) in table.iter_mut() {
        v.push(agent_podman_profile.get(k).cloned().unwrap_or_default());
    }
    let mut columns = vec!["agent", "agent unconfined", "agent (podman's profile)"];

    // Docker, with its built-in default profile and with podman's.
    let docker_ran = if let Some(dockerd) = Dockerd::start() {
        dockerd.import_dir(&root, "agent-test/probe:1");
        let run = |extra: &[&str], cmd: &[&str]| {
            let mut a = vec!["run", "--rm", "--network", "none"];
            a.extend(extra);
            a.push("agent-test/probe:1");
            a.extend(cmd);
            let (ok, out) = dockerd.docker(&a);
            assert!(ok, "docker {a:?} failed");
            out
        };
        let docker_podman_profile =
            outcomes(&run(&["--security-opt", &podman_profile], &["/probe"]));
        let docker_builtin = outcomes(&run(&[], &["/probe"]));
        // The agent's default is the profile built into dockerd: every outcome,
        // errno included, is the same.
        assert_eq!(
            agent_out, docker_builtin,
            "agent launch and docker run (its built-in profile) disagree"
        );
        // Docker 20.10 ignores a profile's defaultErrnoRet (ENOSYS) and answers
        // EPERM for every syscall the profile does not name: with podman's profile
        // the verdicts must agree everywhere, and so must every errno once both run
        // a copy of the profile without that field.
        assert_eq!(
            allowed(&agent_podman_profile),
            allowed(&docker_podman_profile),
            "agent launch and docker run allow different syscalls under podman's profile"
        );
        let mut eperm_profile: serde_json::Value =
            serde_json::from_slice(&std::fs::read(PODMAN_PROFILE).unwrap()).unwrap();
        let obj = eperm_profile.as_object_mut().unwrap();
        obj.remove("defaultErrnoRet");
        obj.remove("defaultErrno");
        let eperm_path = env.dir.path().join("profile-eperm.json");
        std::fs::write(&eperm_path, serde_json::to_vec(&eperm_profile).unwrap()).unwrap();
        let eperm = format!("seccomp={}", eperm_path.display());
        let agent_eperm = outcomes(
            &env.launch(&["--rm", "--security-opt", &eperm, "probe", "/probe"])
                .ok()
                .stdout,
        );
        let docker_eperm = outcomes(&run(&["--security-opt", &eperm], &["/probe"]));
        assert_eq!(
            agent_eperm, docker_eperm,
            "agent launch and docker run disagree on the same profile"
        );
        for (k, v) in table.iter_mut() {
            v.push(docker_builtin.get(k).cloned().unwrap_or_default());
            v.push(docker_podman_profile.get(k).cloned().unwrap_or_default());
        }
        columns.extend(["docker (built-in profile)", "docker (podman's profile)"]);
        // Capabilities: the same as Docker's, default and minimal.
        assert_eq!(run(&[], &caps_cmd), agent_default_caps.trim());
        assert_eq!(
            run(
                &["--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE"],
                &caps_cmd
            ),
            agent_min_caps.trim()
        );
        true
    } else {
        false
    };
    assert!(docker_ran || !Path::new("/usr/sbin/dockerd").exists());

    // Podman, given Docker's capability set (its own default drops three) and
    // rlimits lowered below this host's (raising them needs CAP_SYS_RESOURCE,
    // which this host's bounding set lacks).
    if let Some(podman) = Podman::new() {
        let tar = env.dir.path().join("probe-rootfs.tar");
        common::docker::tar_dir(&root, &tar);
        let imported = podman.output(&[
            "import",
            "-q",
            tar.to_str().unwrap(),
            "localhost/agent-probe:1",
        ]);
        assert!(imported.status.success(), "{imported:?}");
        let out = podman.output(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--cap-add",
            "NET_RAW,MKNOD,AUDIT_WRITE",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "localhost/agent-probe:1",
            "/probe",
        ]);
        if out.status.success() {
            let podman_out = outcomes(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(
                agent_podman_profile, podman_out,
                "agent launch and podman run disagree on podman's profile"
            );
            // With its own default the agent blocks what podman blocks, and
            // allows what podman allows but for Docker's three.
            let differ: Vec<&str> = agent_out
                .keys()
                .filter(|k| allowed(&agent_out)[*k] != allowed(&podman_out)[*k])
                .map(String::as_str)
                .collect();
            assert_eq!(differ, ONLY_PODMAN_ALLOWS, "agent default vs podman run");
            for (k, v) in table.iter_mut() {
                v.push(podman_out.get(k).cloned().unwrap_or_default());
            }
            columns.push("podman");
        } else {
            eprintln!(
                "podman could not run here, comparing agent and docker only: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    println!("{:<24} {}", "syscall", columns.join(" | "));
    for (k, v) in &table {
        println!("{k:<24} {}", v.join(" | "));
    }
}

#[test]
fn read_only_root_with_writable_tmpfs() {
    require_privileges!();
    let env = Env::new();
    let run = env
        .launch(&[
            "--rm",
            "--read-only",
            "busybox",
            "sh",
            "-c",
            "touch /x 2>&1; echo rc=$?; touch /tmp/x /run/x && echo tmp-ok; \
             mkdir -p /var/tmp 2>/dev/null; grep ' / ' /proc/self/mounts | grep -c ' ro,'; \
             echo h > /etc/hostname && echo etc-ok",
        ])
        .ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].contains("Read-only file system"), "{run:#?}");
    assert_eq!(lines[1], "rc=1");
    assert_eq!(lines[2], "tmp-ok");
    assert_eq!(lines[3], "1", "the root mount is ro");
    // Without --read-only the root is writable.
    env.launch(&["--rm", "busybox", "touch", "/x"]).ok();
}

#[test]
fn userns_remap_maps_root_and_keeps_metrics() {
    require_privileges!();
    let user = "agent-test-remap";
    let (start, count) = (1_800_000u32, 65_536u32);
    let _subid = SubidEntry::ensure(user, start, count);
    let env = Env::new();
    // The container's root is an unprivileged uid on the host: like /var/lib under
    // Docker's userns-remap, the directories above the store must be traversable.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    env.launch(&[
        "-d",
        "--name",
        "remapped",
        "--userns-remap",
        user,
        "--memory",
        "64Mi",
        "busybox",
        "sh",
        "-c",
        "cat /proc/self/uid_map; id -u; echo hi > /made-by-root; cat /etc/motd; \
         stat -c %u /bin/busybox; touch /done; sleep 60",
    ])
    .ok();
    env.wait_file("remapped", "done");
    let logs = env.agent(&["logs", "remapped"]).ok().stdout;
    let lines: Vec<&str> = logs.lines().collect();
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(map, ["0", &start.to_string(), &count.to_string()], "{logs}");
    assert_eq!(lines[1], "0", "root inside: {logs}");
    assert_eq!(
        lines[2], "layer two",
        "the image's files are readable: {logs}"
    );
    assert_eq!(
        lines[3], "0",
        "the image's root-owned files belong to root inside: {logs}"
    );
    let v = env.inspect("remapped");
    let upper = PathBuf::from(v["rootfs"]["upperdir"].as_str().unwrap());
    // Which way the image's layers reached the container's root, and what it cost.
    let mode = if upper.parent().unwrap().join("lowers").exists() {
        "shifted copies (the layers' filesystem refused idmapped mounts)"
    } else {
        "idmapped mounts"
    };
    let time = |extra: &[&str]| {
        let mut args = vec!["--rm"];
        args.extend(extra);
        args.extend(["busybox", "true"]);
        let t = std::time::Instant::now();
        env.launch(&args).ok();
        t.elapsed()
    };
    let (plain, remapped) = (time(&[]), time(&["--userns-remap", user]));
    println!("userns lowers: {mode}; launch --rm true: {plain:?} plain, {remapped:?} remapped");
    use std::os::unix::fs::MetadataExt;
    let made = std::fs::metadata(upper.join("made-by-root")).unwrap();
    assert_eq!(
        (made.uid(), made.gid()),
        (start, start),
        "owner on the host"
    );
    assert_ne!(v["namespaces"]["user"], v["namespaces"]["mnt"]);

    // agent serve still exports its cgroup's metrics under its name.
    let agent = common::AgentProcess::start_in(&env.state, &[]);
    let (_, body) = common::http_get(&agent.addr, "/metrics", &[]).unwrap();
    let m = String::from_utf8(body).unwrap();
    let line = m
        .lines()
        .find(|l| {
            l.starts_with("container_spec_memory_limit_bytes{") && l.contains("name=\"remapped\"")
        })
        .unwrap_or_else(|| panic!("no memory limit series for remapped"));
    assert!(
        line.ends_with(&format!(" {}", 64u64 << 20)) || line.contains("6.7108864e7"),
        "{line}"
    );
    drop(agent);
    env.agent(&["rm", "-f", "remapped"]).ok();
    assert!(env.container_dirs().is_empty());

    // A user with no range is one clear line, and leaves nothing behind.
    let run = env.launch(&[
        "--rm",
        "--userns-remap",
        "agent-no-such-user",
        "busybox",
        "true",
    ]);
    assert_ne!(run.code, 0);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(run.stderr.contains("/etc/subuid"), "{run:#?}");
}

/// A `runc spec` bundle with a busybox rootfs, edited by `edit`.
fn runc_bundle(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> Option<PathBuf> {
    if Command::new("runc").arg("--version").output().is_err() {
        eprintln!("SKIPPED: runc missing (apt-get install runc)");
        return None;
    }
    let bundle = dir.join(format!("bundle-{}", rand_suffix()));
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for a in ["sh", "echo", "cat", "grep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
    }
    let ok = Command::new("runc")
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .unwrap()
        .success();
    assert!(ok, "runc spec failed");
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    edit(&mut spec);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    Some(bundle)
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn runc_spec_bundles_run_as_their_spec_says() {
    require_privileges!();
    let env = Env::new();
    // As runc spec makes it, with only the command changed.
    let Some(bundle) = runc_bundle(env.dir.path(), |s| {
        s["process"]["args"] = serde_json::json!([
            "sh",
            "-c",
            "echo hello from $(cat /etc/hostname 2>/dev/null || hostname); exit 3"
        ]);
    }) else {
        return;
    };
    let run = env.agent(&[
        "run",
        "--bundle",
        bundle.to_str().unwrap(),
        "--name",
        "plain",
    ]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stdout.starts_with("hello from"), "{run:#?}");
    let v = env.inspect("plain");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(
        v["config"]["hostname"], "runc",
        "config.json is the bundle's spec"
    );
    env.agent(&["rm", "plain"]).ok();

    // rlimits and an extra read-only bind mount, and the spec's hostname.
    let shared = env.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("greeting"), "from the host\n").unwrap();
    let Some(bundle) = runc_bundle(env.dir.path(), |s| {
        s["process"]["args"] = serde_json::json!([
            "sh",
            "-c",
            "ulimit -n; cat /mnt/shared/greeting; echo x > /mnt/shared/new 2>/dev/null && echo bind-rw || echo bind-ro; hostname"
        ]);
        s["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 123}]);
        s["hostname"] = "bundled".into();
        s["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/mnt/shared", "type": "bind",
            "source": shared, "options": ["rbind", "ro"]
        }));
    }) else {
        return;
    };
    let run = env
        .agent(&[
            "run",
            "--bundle",
            bundle.to_str().unwrap(),
            "--name",
            "limited",
        ])
        .ok();
    assert_eq!(
        run.stdout, "123\nfrom the host\nbind-ro\nbundled\n",
        "{run:#?}"
    );
    // The read-only rootfs of runc's spec.
    assert!(!shared.join("new").exists());
    env.agent(&["rm", "limited"]).ok();
    assert!(env.container_dirs().is_empty());
}
