//! Privileged: the agent's OCI image (`cargo xtask image`, built here from the
//! binary under test) loads into every consumer it is meant for — a real dockerd
//! (`docker load`), podman (`podman load`), a real containerd (`ctr images
//! import`) and the agent's own store (`agent image import`) — and each sees the
//! same image. Under Docker it also runs: the libraries it carries are enough.
//!
//! Each daemon is the test's own (private sockets, roots and network namespace) and
//! is removed on drop.

use agent_test_support as common;

use common::containerd::Containerd;
use common::docker::Dockerd;
use common::launch::agent_command;
use common::podman::Podman;
use common::require_root;

#[test]
fn the_image_loads_in_docker_podman_containerd_and_the_agent() {
    if !require_root("the_image_loads_in_docker_podman_containerd_and_the_agent") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("agent-image-test")
        .tempdir()
        .unwrap();
    let img = common::agent_image(dir.path());
    let archive = img.archive.to_str().unwrap();
    let names: Vec<&str> = img.files.iter().map(|(p, _)| p.as_str()).collect();
    assert!(names.contains(&"/usr/local/bin/agent"), "{names:?}");
    assert!(
        names.iter().any(|n| n.contains("libseccomp.so")),
        "the agent links libseccomp: {names:?}"
    );
    eprintln!(
        "image {}: layer {} bytes ({} gzip)",
        img.reference, img.layer_bytes, img.layer_gzip_bytes
    );
    let hex = img.id.trim_start_matches("sha256:");

    // docker load, and the image runs.
    if let Some(dockerd) = Dockerd::start() {
        let (ok, out) = dockerd.docker(&["load", "-i", archive]);
        assert!(ok, "docker load: {out}");
        assert!(
            out.contains(&format!("Loaded image: {}", img.reference)),
            "{out}"
        );
        let (ok, id) = dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", &img.reference]);
        assert!(
            ok && id == img.id,
            "docker sees {id:?}, the image is {}",
            img.id
        );
        let (ok, version) = dockerd.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            &img.reference,
            "--version",
        ]);
        assert!(ok, "the image's agent does not run under docker: {version}");
        assert!(version.starts_with("agent "), "{version:?}");
    }

    // podman load.
    if let Some(podman) = Podman::new() {
        let out = podman.output(&["load", "-i", archive]);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "podman load: {text}");
        let out = podman.output(&["image", "inspect", "--format", "{{.Id}}", &img.reference]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && id == hex,
            "podman sees {id:?}, the image is {hex}"
        );
    }

    // ctr images import, on a containerd of the test's own.
    if let Some(containerd) = Containerd::start("agent-test/pause:1") {
        let (ok, out) = containerd.ctr("agent-test", &["images", "import", archive]);
        assert!(ok, "ctr images import: {out}");
        let full = xtask::image::full_reference(&img.reference);
        let (ok, listed) = containerd.ctr("agent-test", &["images", "ls", "-q"]);
        assert!(
            ok && listed.lines().any(|l| l == full),
            "{full} not in {listed:?}"
        );
        // Its content is all there: unpacking it into a snapshot works.
        let (ok, out) = containerd.ctr("agent-test", &["images", "check"]);
        assert!(ok && out.contains("complete"), "ctr images check: {out}");
    }

    // agent image import, of the archive and of the layout.
    let state = dir.path().join("agent-state");
    for (source, name) in [
        (archive.to_owned(), None),
        (
            img.layout.display().to_string(),
            Some("agent-test/layout:1"),
        ),
    ] {
        let mut args = vec!["image", "import", "--quiet"];
        if let Some(n) = name {
            args.extend(["--name", n]);
        }
        args.push(&source);
        let out = agent_command(&state, &args).output().unwrap();
        assert!(
            out.status.success(),
            "agent image import {source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = agent_command(&state, &["image", "ls"]).output().unwrap();
    let ls = String::from_utf8_lossy(&out.stdout).to_string();
    for name in [img.reference.as_str(), "agent-test/layout"] {
        assert!(ls.contains(name), "{name} not in agent image ls:\n{ls}");
    }
    assert!(ls.contains(&hex[..12]), "image id {hex} not in:\n{ls}");
}
