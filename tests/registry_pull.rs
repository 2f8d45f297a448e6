//! `agent pull` against a real registry (Debian's docker-registry) on 127.0.0.1
//! with htpasswd auth and TLS from a CA made here; skopeo pushes the images. Each
//! test pulls, launches what it pulled and reads its files.

use agent_test_support::launch::{
    self, Env, KillOnDrop, Layer, add_dir, add_file, build_busybox_oci, image_config, layer,
    list_dir, write_blob,
};
use agent_test_support::registry::{Auth, Registry};
use agent_test_support::require_privileges;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `agent pull` with the registry's CA and credentials, plus `extra` flags.
fn pull(env: &Env, reg: &Registry, reference: &str, extra: &[&str]) -> launch::Run {
    let flags = reg.pull_flags();
    let mut args: Vec<&str> = vec!["pull"];
    args.extend(flags.iter().map(String::as_str));
    args.extend_from_slice(extra);
    args.push(reference);
    env.agent(&args)
}

/// What the store holds besides its empty directories: layers, short links,
/// records, scratch.
fn store_contents(env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["overlay2", "overlay2/l", "images", "tmp"] {
        for name in list_dir(&env.state.join(dir)) {
            if !(dir == "overlay2" && name == "l") {
                out.push(format!("{dir}/{name}"));
            }
        }
    }
    out
}

/// A registry, an empty store, and the two-layer busybox OCI layout beside the
/// store; `None` (after saying why) when the registry cannot run here.
fn registry_and_busybox() -> Option<(Registry, Env, PathBuf)> {
    let reg = Registry::start()?;
    let env = Env::empty();
    let layout = env.dir.path().join("busybox-oci");
    build_busybox_oci(&layout);
    Some((reg, env, layout))
}

/// Pulls `reference` (two layers) into `env`, which has both: asserts that both
/// are "already present" and that the store gains no layer.
fn pull_adds_no_layer(env: &Env, reg: &Registry, reference: &str) -> launch::Run {
    let before = env.overlay_dirs();
    let run = pull(env, reg, reference, &[]).ok();
    assert_eq!(
        run.stderr.matches("already present").count(),
        2,
        "{}",
        run.stderr
    );
    assert_eq!(env.overlay_dirs(), before);
    run
}

/// `oci:LAYOUT:TAG`.
fn oci(layout: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", layout.display())
}

#[test]
fn pulls_over_tls_with_basic_auth_then_launches() {
    require_privileges!();
    let Some((reg, env, layout)) = registry_and_busybox() else {
        return;
    };
    reg.push(&oci(&layout, "latest"), "agent/busybox:1", &[]);
    let reference = reg.reference("agent/busybox:1");

    // Without the test's CA, the registry's certificate is not trusted.
    let config = reg.auth_config.display().to_string();
    let run = env.agent(&["pull", "--registry-config", &config, &reference]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("certificate"), "{}", run.stderr);
    assert_eq!(
        run.stderr.lines().count(),
        2,
        "one note and one error line: {}",
        run.stderr
    );
    // Without credentials (or with wrong ones) the registry says no.
    let ca = reg.ca.display().to_string();
    let anonymous = env.dir.path().join("anonymous.json");
    std::fs::write(&anonymous, "{}").unwrap();
    let wrong = env.dir.path().join("wrong.json");
    std::fs::write(
        &wrong,
        format!(
            r#"{{"auths": {{"{}": {{"username": "puller", "password": "nope"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    for creds in [&anonymous, &wrong] {
        let creds = creds.display().to_string();
        let run = env.agent(&[
            "pull",
            "--tls-ca",
            &ca,
            "--registry-config",
            &creds,
            &reference,
        ]);
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(run.stderr.contains("Not authorized"), "{}", run.stderr);
    }
    // Plain HTTP is used only when asked for, and a TLS registry refuses it.
    let run = pull(&env, &reg, &reference, &["--insecure-registry", &reg.addr]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        store_contents(&env).is_empty(),
        "{:?}",
        store_contents(&env)
    );

    let run = pull(&env, &reg, &reference, &[]).ok();
    assert!(
        run.stdout.starts_with(&format!("{reference} sha256:")),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("layer 1/2"), "{}", run.stderr);
    assert!(run.stderr.contains("pull complete"), "{}", run.stderr);
    let ls = env.agent(&["image", "ls"]).ok();
    assert!(ls.stdout.contains(&reference), "{}", ls.stdout);

    // Launched like an imported image: the whiteout and the opaque dir hold.
    let run = env.launch(&["--rm", &reference, "cat", "/etc/motd"]).ok();
    assert_eq!(run.stdout, "layer two\n");
    env.launch(&["--rm", &reference, "test", "-e", "/etc/removed"])
        .expect_code(1);
    let run = env.launch(&["--rm", &reference, "ls", "/opaque"]).ok();
    assert_eq!(run.stdout, "new\n");

    // The same layers as `image import` of the same layout makes.
    let imported = Env::new();
    assert_eq!(env.overlay_dirs(), imported.overlay_dirs());
    // A pull into the store of that import downloads nothing either: its record
    // names the diff id of each blob, so the pull knows the layers it has
    // before the image config arrives.
    let run = pull_adds_no_layer(&imported, &reg, &reference);
    assert!(!run.stderr.contains("downloading"), "{}", run.stderr);

    // A second pull downloads nothing.
    let run = pull_adds_no_layer(&env, &reg, &reference);
    assert!(!run.stderr.contains("downloading"), "{}", run.stderr);

    // `launch` pulls on demand into an empty store.
    let fresh = Env::empty();
    let flags = reg.pull_flags();
    let mut args: Vec<&str> = vec!["--rm"];
    args.extend(flags.iter().map(String::as_str));
    args.extend([reference.as_str(), "cat", "/etc/motd"]);
    let run = fresh.launch(&args).ok();
    assert_eq!(run.stdout, "layer two\n");
    assert!(run.stderr.contains("pull complete"), "{}", run.stderr);
    // ... and not when told never to.
    let fresh = Env::empty();
    let run = fresh.launch(&["--rm", "--pull", "never", &reference, "true"]);
    assert!(run.stderr.contains("no such image"), "{run:#?}");
}

#[test]
fn pulls_with_a_bearer_token_from_the_registrys_token_server() {
    require_privileges!();
    let Some(reg) = Registry::start_with(Auth::Token) else {
        return;
    };
    let tokens = reg.tokens.as_ref().expect("a token server");
    let env = Env::empty();
    let layout = env.dir.path().join("busybox-oci");
    build_busybox_oci(&layout);
    reg.push(&oci(&layout, "latest"), "agent/token:1", &[]);
    let reference = reg.reference("agent/token:1");

    // Credentials the token server refuses.
    let wrong = env.dir.path().join("wrong.json");
    std::fs::write(
        &wrong,
        format!(
            r#"{{"auths": {{"{}": {{"username": "puller", "password": "nope"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let ca = reg.ca.display().to_string();
    let wrong = wrong.display().to_string();
    let run = env.agent(&[
        "pull",
        "--tls-ca",
        &ca,
        "--registry-config",
        &wrong,
        &reference,
    ]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("Not authorized"), "{}", run.stderr);

    let before = tokens.issued.load(std::sync::atomic::Ordering::SeqCst);
    pull(&env, &reg, &reference, &[]).ok();
    assert!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst) > before);
    let run = env.launch(&["--rm", &reference, "cat", "/etc/motd"]).ok();
    assert_eq!(run.stdout, "layer two\n");
}

/// A one-file layer: `/etc/arch` saying `arch`.
fn arch_layer(arch: &str) -> Layer {
    layer(|b| {
        add_dir(b, "etc", 0o755);
        add_file(b, "etc/arch", 0o644, format!("{arch}\n").as_bytes());
    })
}

/// Writes an image of `layers` for `arch` into `layout`'s blobs; returns its
/// manifest's descriptor with its platform.
fn platform_image(layout: &Path, layers: &[&Layer], arch: &str) -> serde_json::Value {
    let mut descs = Vec::new();
    for l in layers {
        let blob = launch::gzip(&l.tar);
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": write_blob(layout, &blob),
            "size": blob.len(),
        }));
    }
    let mut config = image_config(layers, None);
    config["architecture"] = arch.into();
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": write_blob(layout, &config),
            "size": config.len(),
        },
        "layers": descs,
    }))
    .unwrap();
    serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": write_blob(layout, &manifest),
        "size": manifest.len(),
        "platform": {"architecture": arch, "os": "linux"},
    })
}

/// An OCI layout whose `multi` tag is an index of an arm64 and an amd64 image
/// (in that order, so picking the first would be wrong here).
fn build_multi_platform(layout: &Path) {
    std::fs::create_dir_all(layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let base = launch::base_layer();
    let manifests = vec![
        platform_image(layout, &[&base, &arch_layer("arm64")], "arm64"),
        platform_image(layout, &[&base, &arch_layer("amd64")], "amd64"),
    ];
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": write_blob(layout, &nested),
            "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
}

#[test]
fn pulls_zstd_docker_schema2_and_the_hosts_platform_of_an_index() {
    require_privileges!();
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("SKIPPED: the multi-platform image is built for amd64 hosts");
        return;
    }
    let Some((reg, env, layout)) = registry_and_busybox() else {
        return;
    };

    // zstd layers.
    reg.push(
        &oci(&layout, "latest"),
        "agent/zstd:1",
        &["--dest-compress-format", "zstd"],
    );
    let m = reg.raw_manifest("agent/zstd:1");
    for l in m["layers"].as_array().unwrap() {
        assert!(l["mediaType"].as_str().unwrap().ends_with("+zstd"), "{m:#}");
    }
    // A Docker schema2 manifest.
    reg.push(
        &oci(&layout, "latest"),
        "agent/v2s2:1",
        &["--format", "v2s2"],
    );
    let m = reg.raw_manifest("agent/v2s2:1");
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    for repo in ["agent/zstd:1", "agent/v2s2:1"] {
        let reference = reg.reference(repo);
        pull(&env, &reg, &reference, &[]).ok();
        let run = env.launch(&["--rm", &reference, "cat", "/etc/motd"]).ok();
        assert_eq!(run.stdout, "layer two\n", "{repo}");
    }

    // An OCI index, and the same as a Docker manifest list: the host's platform.
    let multi = env.dir.path().join("multi-oci");
    build_multi_platform(&multi);
    reg.push(&oci(&multi, "multi"), "agent/multi:oci", &["--all"]);
    reg.push(
        &oci(&multi, "multi"),
        "agent/multi:list",
        &["--all", "--format", "v2s2"],
    );
    for (tag, media_type) in [
        ("oci", "application/vnd.oci.image.index.v1+json"),
        (
            "list",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ),
    ] {
        let m = reg.raw_manifest(&format!("agent/multi:{tag}"));
        assert_eq!(m["mediaType"], media_type, "{m:#}");
        assert_eq!(m["manifests"].as_array().unwrap().len(), 2, "{m:#}");
        let reference = reg.reference(&format!("agent/multi:{tag}"));
        pull(&env, &reg, &reference, &[]).ok();
        let run = env.launch(&["--rm", &reference, "cat", "/etc/arch"]).ok();
        assert_eq!(run.stdout, "amd64\n", "{tag}");
    }
}

#[test]
fn a_tampered_blob_is_refused_and_nothing_is_kept() {
    require_privileges!();
    let Some((reg, env, layout)) = registry_and_busybox() else {
        return;
    };
    reg.push(&oci(&layout, "latest"), "agent/tampered:1", &[]);
    let reference = reg.reference("agent/tampered:1");
    // Corrupt the top layer in the registry's storage: the bottom one arrives
    // whole and is committed before the top one fails.
    let m = reg.raw_manifest("agent/tampered:1");
    let digest = m["layers"][1]["digest"].as_str().unwrap().to_string();
    let blob = reg.blob_path(&digest);
    let mut data = std::fs::read(&blob).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&blob, data).unwrap();

    let run = pull(&env, &reg, &reference, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    let error = run.stderr.lines().last().unwrap_or_default();
    assert!(error.starts_with("agent: error: "), "{}", run.stderr);
    assert!(
        error.contains("layer 2/2") && error.contains(&digest),
        "{error}"
    );
    assert!(
        error.contains(&format!("digest mismatch: expected {digest}, got sha256:")),
        "{error}"
    );
    assert!(
        store_contents(&env).is_empty(),
        "{:?}",
        store_contents(&env)
    );
    let run = env.launch(&["--rm", "--pull", "never", &reference, "true"]);
    assert!(run.stderr.contains("no such image"), "{run:#?}");
}

#[test]
fn layers_that_are_not_what_the_image_config_says_are_refused() {
    require_privileges!();
    let Some((reg, env, layout)) = registry_and_busybox() else {
        return;
    };
    // The config names another diff id for the top layer; the blobs themselves
    // are what their digests say, so only the diff id can tell.
    let read_json = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(digest.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let mut index = read_json(&layout.join("index.json"));
    let mut manifest = read_json(&blob(&index["manifests"][0]["digest"]));
    let mut config = read_json(&blob(&manifest["config"]["digest"]));
    let wrong = format!("sha256:{}", "0".repeat(64));
    config["rootfs"]["diff_ids"][1] = serde_json::json!(wrong);
    let config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = serde_json::json!(write_blob(&layout, &config));
    manifest["config"]["size"] = serde_json::json!(config.len());
    let manifest = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = serde_json::json!(write_blob(&layout, &manifest));
    index["manifests"][0]["size"] = serde_json::json!(manifest.len());
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    reg.push(&oci(&layout, "latest"), "agent/mislabelled:1", &[]);
    let reference = reg.reference("agent/mislabelled:1");

    let run = pull(&env, &reg, &reference, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    let error = run.stderr.lines().last().unwrap_or_default();
    assert!(
        error.contains("layer 2/2") && error.contains(&format!("the image config says {wrong}")),
        "{error}"
    );
    assert!(
        store_contents(&env).is_empty(),
        "{:?}",
        store_contents(&env)
    );
}

/// `len` bytes that do not compress (xorshift).
fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn a_pull_killed_halfway_then_rerun_succeeds() {
    require_privileges!();
    let Some(reg) = Registry::start() else {
        return;
    };
    let env = Env::empty();
    let layout = env.dir.path().join("big-oci");
    const BIG: usize = 96 << 20;
    let big = layer(|b| add_file(b, "big", 0o644, &incompressible(BIG)));
    launch::build_oci(&layout, &[&launch::base_layer(), &big], None, "latest");
    reg.push(&oci(&layout, "latest"), "agent/big:1", &[]);
    let reference = reg.reference("agent/big:1");

    let flags = reg.pull_flags();
    let mut args: Vec<&str> = vec!["pull"];
    args.extend(flags.iter().map(String::as_str));
    args.push(&reference);
    let mut child = KillOnDrop(env.command(&args).spawn().expect("start agent pull"));
    // Kill it once the big layer is partly unpacked in scratch.
    let tmp = env.state.join("tmp");
    let deadline = Instant::now() + Duration::from_secs(60);
    let halfway = loop {
        let partial = list_dir(&tmp).into_iter().find_map(|d| {
            let size = std::fs::metadata(tmp.join(d).join("diff/big")).ok()?.len();
            (size > 0).then_some(size)
        });
        if let Some(size) = partial {
            break size;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the pull ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "the big layer never started");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "{status}");
    assert!(
        halfway < BIG as u64,
        "killed after the whole layer was written"
    );
    // Scratch is left, but nothing a launch would trust: no record, so no image
    // (and the launch's start-up sweep removes the scratch).
    assert!(!list_dir(&tmp).is_empty());
    assert!(list_dir(&env.state.join("images")).is_empty());
    let run = env.launch(&["--rm", "--pull", "never", &reference, "true"]);
    assert!(run.stderr.contains("no such image"), "{run:#?}");

    assert!(list_dir(&tmp).is_empty(), "{:?}", list_dir(&tmp));
    pull(&env, &reg, &reference, &[]).ok();
    let run = env.launch(&["--rm", &reference, "wc", "-c", "/big"]).ok();
    assert_eq!(
        run.stdout.split_whitespace().next(),
        Some(BIG.to_string().as_str())
    );
    assert!(list_dir(&tmp).is_empty(), "{:?}", list_dir(&tmp));
}

/// A registry holding the busybox image as `agent/busybox:1` (its reference is
/// returned), and a store that imported the same layout.
fn busybox_pushed_and_imported() -> Option<(Registry, String, Env)> {
    let (reg, _pushed_from, layout) = registry_and_busybox()?;
    reg.push(&oci(&layout, "latest"), "agent/busybox:1", &[]);
    let reference = reg.reference("agent/busybox:1");
    Some((reg, reference, Env::new()))
}

/// The image records of `env`'s store, as JSON, with their paths.
fn records(env: &Env) -> Vec<(PathBuf, serde_json::Value)> {
    list_dir(&env.state.join("images"))
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .map(|n| {
            let path = env.state.join("images").join(n);
            let json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            (path, json)
        })
        .collect()
}

#[test]
fn a_store_whose_records_name_no_blobs_keeps_what_it_has() {
    require_privileges!();
    let Some((reg, reference, env)) = busybox_pushed_and_imported() else {
        return;
    };
    // As an older agent or a `docker save` import leaves it: layers, no blob names.
    for (path, mut record) in records(&env) {
        record.as_object_mut().unwrap().remove("diff_ids_by_blob");
        std::fs::write(path, serde_json::to_vec(&record).unwrap()).unwrap();
    }
    pull_adds_no_layer(&env, &reg, &reference);
    assert!(list_dir(&env.state.join("tmp")).is_empty());
}

#[test]
fn a_record_that_misnames_a_blob_is_only_a_hint() {
    require_privileges!();
    let Some((reg, reference, env)) = busybox_pushed_and_imported() else {
        return;
    };
    // Another one-layer image, whose layer the busybox record then claims its
    // bottom blob unpacks to.
    let other = env.dir.path().join("other.tar");
    let tar = layer(|b| add_file(b, "other", 0o644, b"other\n"));
    std::fs::write(&other, &tar.tar).unwrap();
    env.agent(&[
        "image",
        "import",
        "--name",
        "other",
        other.to_str().unwrap(),
    ])
    .ok();
    let mut all = records(&env);
    let other_diff_id = all
        .iter()
        .find(|(_, r)| r["names"][0] == "other:latest")
        .map(|(_, r)| r["layers"][0].as_str().unwrap().to_string())
        .unwrap();
    let (path, busybox) = all
        .iter_mut()
        .find(|(_, r)| r["names"][0] == "busybox:latest")
        .unwrap();
    let bottom = reg.raw_manifest("agent/busybox:1")["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    busybox["diff_ids_by_blob"][&bottom] = serde_json::json!(other_diff_id);
    std::fs::write(path, serde_json::to_vec(&busybox).unwrap()).unwrap();

    pull_adds_no_layer(&env, &reg, &reference);
    let run = env.launch(&["--rm", &reference, "cat", "/etc/motd"]).ok();
    assert!(!run.stdout.is_empty(), "{run:#?}");
}
