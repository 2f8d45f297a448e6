//! Privileged tests of volumes under `agent launch`: named volumes that outlive
//! `rm`, host binds with `:ro` enforced by the kernel, `--tmpfs` and `--mount`,
//! `agent volume ls/rm`, and container paths that try to climb out of the root.

use agent_test_support::launch as support;
use agent_test_support::require_privileges;
use std::path::Path;
use support::Env;

#[test]
fn a_named_volume_outlives_rm_and_is_refused_removal_while_used() {
    require_privileges!();
    let env = Env::new();
    env.launch(&[
        "--name",
        "writer",
        "-v",
        "data1:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f; grep ' /data ' /proc/mounts",
    ])
    .ok();
    env.agent(&["rm", "writer"]).ok();
    let data = env.state.join("volumes/data1/_data");
    assert_eq!(std::fs::read_to_string(data.join("f")).unwrap(), "kept\n");
    let run = env
        .launch(&[
            "--name",
            "reader",
            "--mount",
            "type=volume,source=data1,target=/srv/d",
            "busybox",
            "cat",
            "/srv/d/f",
        ])
        .ok();
    assert_eq!(run.stdout, "kept\n");
    let ls = env.agent(&["volume", "ls"]).ok();
    let line = ls
        .stdout
        .lines()
        .find(|l| l.starts_with("data1 "))
        .unwrap_or_else(|| panic!("{ls:#?}"));
    assert!(line.contains("reader"), "{line}");
    let refused = env.agent(&["volume", "rm", "data1"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("in use by"), "{refused:#?}");
    env.agent(&["rm", "reader"]).ok();
    env.agent(&["volume", "rm", "data1"]).ok();
    assert!(!env.state.join("volumes/data1").exists());
    assert!(env.agent(&["volume", "ls"]).ok().stdout.lines().count() == 1);
}

#[test]
fn host_binds_ro_is_enforced_tmpfs_and_mount_work() {
    require_privileges!();
    let env = Env::new();
    let host = env.dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("f"), "from host\n").unwrap();
    let host_s = host.to_str().unwrap();
    let rw = env.dir.path().join("made-by-v");
    let rw_s = rw.to_str().unwrap();
    let run = env.launch(&[
        "--name",
        "binds",
        "-v",
        &format!("{host_s}:/ro:ro"),
        "-v",
        &format!("{rw_s}:/rw"),
        "--tmpfs",
        "/scratch:size=1m,mode=1770",
        "--mount",
        &format!("type=bind,source={host_s},target=/also,readonly"),
        "busybox",
        "sh",
        "-c",
        "cat /ro/f; touch /ro/new 2>&1 && echo WROTE; echo out > /rw/g; \
         grep ' /scratch ' /proc/mounts; echo x > /scratch/y && echo tmpfs-ok; \
         touch /also/z 2>&1 || echo also-ro",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let out = run.stdout;
    assert!(out.starts_with("from host\n"), "{out}");
    assert!(!out.contains("WROTE"), ":ro must be enforced: {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!host.join("new").exists());
    // -v made the missing host directory, and writes reach it.
    assert_eq!(std::fs::read_to_string(rw.join("g")).unwrap(), "out\n");
    let tmpfs = out.lines().find(|l| l.contains(" /scratch ")).unwrap();
    assert!(
        tmpfs.starts_with("tmpfs /scratch tmpfs")
            && tmpfs.contains("size=1024k")
            && tmpfs.contains("mode=1770")
            && tmpfs.contains("noexec"),
        "{tmpfs}"
    );
    assert!(out.contains("tmpfs-ok") && out.contains("also-ro"), "{out}");
    // config.json holds the mounts: the spec is what ran.
    let v = env.inspect("binds");
    let mounts = v["config"]["mounts"].as_array().unwrap();
    assert!(
        mounts.iter().any(|m| m["destination"] == "/ro"
            && m["options"].as_array().unwrap().iter().any(|o| o == "ro"))
    );
    // --mount type=bind does not make a missing source; nothing is left behind.
    let before = env.container_dirs();
    let missing = env.dir.path().join("missing");
    let run = env.launch(&[
        "--mount",
        &format!("type=bind,source={},target=/m", missing.display()),
        "busybox",
        "true",
    ]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("does not exist"), "{run:#?}");
    assert!(!missing.exists());
    assert_eq!(env.container_dirs(), before);
}

#[test]
fn container_paths_that_climb_out_are_refused() {
    require_privileges!();
    let env = Env::new();
    // On the command line: `..`, relative paths, /proc.
    for bad in [
        "v1:/../../etc",
        "v1:/data/../../../etc",
        "v1:data",
        "v1:/proc/sys/kernel",
        "v1:/",
    ] {
        let run = env.launch(&["-v", bad, "busybox", "true"]);
        assert_eq!(run.code, 2, "{bad}: {run:#?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    }
    // In the image: a symbolic link whose target climbs above the root, and one
    // that is absolute (resolved inside the root, as Docker does).
    let outside = env.dir.path().join("outside");
    let depth = "../".repeat(outside.components().count() + 2);
    let climb = format!(
        "{depth}{}",
        outside.display().to_string().trim_start_matches('/')
    );
    let layout = env.dir.path().join("hostile-oci");
    let links = support::layer(|b| {
        support::add_dir(b, "inside", 0o755);
        support::add_symlink(b, "escape", &climb);
        support::add_symlink(b, "abs", "/inside");
    });
    support::build_oci(&layout, &[&support::base_layer(), &links], None, "latest");
    env.agent(&[
        "image",
        "import",
        "--name",
        "hostile",
        &format!("{}:latest", layout.display()),
    ])
    .ok();
    for target in ["/escape", "/escape/deeper"] {
        let run = env.launch(&["-v", &format!("v2:{target}"), "hostile", "true"]);
        assert_ne!(run.code, 0, "{target}: {run:#?}");
        assert!(run.stderr.contains("climbs out"), "{run:#?}");
        assert!(!outside.exists(), "a mount point was made outside the root");
        assert!(support::mounts_containing(outside.to_str().unwrap()).is_empty());
    }
    let run = env
        .launch(&[
            "-v",
            "v3:/abs",
            "hostile",
            "sh",
            "-c",
            "echo in > /abs/f; cat /inside/f",
        ])
        .ok();
    assert_eq!(run.stdout, "in\n");
    assert!(Path::new(&env.state.join("volumes/v3/_data/f")).exists());
}

#[test]
fn a_new_named_volume_starts_with_what_the_image_has_there() {
    require_privileges!();
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let run = env
        .launch(&[
            "--rm",
            "-v",
            "seeded:/opaque",
            "-v",
            "tmpvol:/tmp",
            "-v",
            "bare:/etc:nocopy",
            "busybox",
            "sh",
            "-c",
            "cat /opaque/new; ls /etc | wc -l; echo mine > /opaque/new",
        ])
        .ok();
    assert_eq!(run.stdout, "new\n0\n", "{run:#?}");
    let vols = env.state.join("volumes");
    let mode = std::fs::metadata(vols.join("tmpvol/_data"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o1777,
        "the image directory's mode is copied"
    );
    // A volume that holds data is not filled again.
    let run = env
        .launch(&[
            "--rm",
            "-v",
            "seeded:/opaque",
            "busybox",
            "cat",
            "/opaque/new",
        ])
        .ok();
    assert_eq!(run.stdout, "mine\n");
    assert!(
        std::fs::read_dir(vols.join("bare/_data"))
            .unwrap()
            .next()
            .is_none(),
        "nocopy leaves it empty"
    );
}
