//! PID 1, hostname and overlay root of a container, and two containers from one image
//! kept apart.

use super::*;

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
