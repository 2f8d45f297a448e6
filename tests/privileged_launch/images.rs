//! The image store: shared layers and every image format it reads.

use super::*;

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
