//! Bad input: one clear line, and nothing left behind.

use super::*;

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
