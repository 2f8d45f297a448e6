//! `agent image import` against hostile and broken input, run as the built binary on
//! real files: OCI layouts whose blobs point at `/dev/zero`, `/etc/shadow`, a FIFO or
//! a directory elsewhere; imports killed with SIGKILL half-way; malformed whiteouts.
//! Every layout and layer is written here, into temporary directories. Tests that
//! unpack layers (mknod, chown) need root and skip with a printed reason without it.

use agent_test_support as common;
use agent_test_support::launch as support;

use agent::runtime::{Paths, image};
use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{KillOnDrop, add_dir, add_file, layer, list_dir, sha256_hex};

/// A temporary state root and the agent run against it. Everything lives in the
/// tempdir (imports make no mounts), so dropping it cleans up.
struct Store {
    dir: tempfile::TempDir,
    state: PathBuf,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::Builder::new()
            .prefix("agent-image-test")
            .tempdir()
            .expect("tempdir");
        let state = dir.path().join("state");
        Store { dir, state }
    }

    /// `agent ARGS` against this store, not yet started.
    fn command(&self, args: &[&str]) -> Command {
        support::agent_command(&self.state, args)
    }

    /// `agent image import --quiet ARGS`.
    fn import(&self, args: &[&str]) -> Output {
        let mut all = vec!["image", "import", "--quiet"];
        all.extend_from_slice(args);
        self.command(&all).output().expect("run agent")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Entries of the store's `tmp/`.
    fn tmp(&self) -> Vec<String> {
        list_dir(&self.state.join("tmp"))
    }

    /// Layer directories in `overlay2/` (without `l`).
    fn layer_dirs(&self) -> BTreeSet<String> {
        list_dir(&self.state.join("overlay2"))
            .into_iter()
            .filter(|n| n != "l")
            .collect()
    }

    /// The images the store lists.
    fn images(&self) -> Vec<image::ImageRecord> {
        image::list(&Paths::new(&self.state)).expect("list images")
    }

    /// The store holds exactly the layers of the images it lists, each complete
    /// (`link` file, a short link that resolves), and no other short link.
    fn assert_only_listed_layers(&self) {
        let wanted: BTreeSet<String> = self
            .images()
            .iter()
            .flat_map(|r| r.layers.iter())
            .map(|l| l.trim_start_matches("sha256:").to_string())
            .collect();
        assert_eq!(self.layer_dirs(), wanted, "overlay2/ holds other layers");
        let overlay = self.state.join("overlay2");
        let mut shorts = BTreeSet::new();
        for l in &wanted {
            let short = std::fs::read_to_string(overlay.join(l).join("link"))
                .unwrap_or_else(|e| panic!("layer {l} has no link file: {e}"));
            assert!(
                overlay.join("l").join(short.trim()).join(".").is_dir(),
                "short link of {l} does not resolve"
            );
            shorts.insert(short.trim().to_string());
        }
        let links: BTreeSet<String> = list_dir(&overlay.join("l")).into_iter().collect();
        assert_eq!(links, shorts, "overlay2/l/ holds other short links");
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failed run with exactly one line on stderr, which contains every `needle`.
fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "succeeded: {out:?}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    err
}

/// `oci-layout` and an `index.json` naming one manifest, `digest` of `size` bytes.
fn layout_with_manifest(dir: &Path, digest: &str, size: u64) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// The hex digests of the layers of the one image in `layout`.
fn layer_digests(layout: &Path) -> Vec<String> {
    let blob = |digest: &serde_json::Value| {
        let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
        let data = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
        serde_json::from_slice::<serde_json::Value>(&data).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(&index["manifests"][0]["digest"]);
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap();
            d.trim_start_matches("sha256:").to_string()
        })
        .collect()
}

/// How a child process ended, how long it took and its peak resident set.
struct Measured {
    output: Output,
    elapsed: Duration,
    peak_rss_kib: i64,
    timed_out: bool,
}

/// Runs `cmd` under a 1 GiB address-space limit (so a runaway read fails instead of
/// eating the machine), killing it after `limit`; reaps it with `wait4` to read its
/// peak RSS (`ru_maxrss`).
fn run_measured(mut cmd: Command, limit: Duration) -> Measured {
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped below by wait4, for its rusage"
    )]
    let mut child = cmd.spawn().expect("spawn agent");
    let pid = child.id() as i32;
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is valid and wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut timed_out = false;
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if start.elapsed() > limit && !timed_out {
            timed_out = true;
            // SAFETY: signalling our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    use std::os::unix::process::ExitStatusExt;
    Measured {
        output: Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout: Vec::new(),
            stderr: reader.join().unwrap_or_default(),
        },
        elapsed,
        peak_rss_kib: usage.ru_maxrss,
        timed_out,
    }
}

/// Defect 1: a manifest blob that is a symlink to `/dev/zero` made the import read
/// without bound. It must be refused at once, in little memory, in one line.
#[test]
fn a_dev_zero_blob_is_refused_fast_and_small() {
    let store = Store::new();
    let layout = store.path("zero-oci");
    let hex = sha256_hex(b"{}");
    layout_with_manifest(&layout, &format!("sha256:{hex}"), 2);
    std::os::unix::fs::symlink("/dev/zero", layout.join("blobs/sha256").join(&hex)).unwrap();

    let cmd = store.command(&["image", "import", "--quiet", layout.to_str().unwrap()]);
    let m = run_measured(cmd, Duration::from_secs(10));
    eprintln!(
        "/dev/zero manifest blob: exit {:?} after {:?}, peak RSS {} KiB: {}",
        m.output.status,
        m.elapsed,
        m.peak_rss_kib,
        stderr(&m.output).trim()
    );
    assert!(!m.timed_out, "still reading after 10 s");
    assert_one_line_error(&m.output, &[&hex, "not a regular file"]);
    assert!(m.elapsed < Duration::from_secs(1), "took {:?}", m.elapsed);
    assert!(
        m.peak_rss_kib < 64 * 1024,
        "peak RSS {} KiB",
        m.peak_rss_kib
    );
    assert!(store.images().is_empty());
    assert!(store.tmp().is_empty(), "{:?}", store.tmp());
}

/// Defect 1: blobs are regular files inside the layout, reached through no symlink:
/// not `/etc/shadow` (even with the right digest), not a FIFO (which would block the
/// open), not a blob directory elsewhere.
#[test]
fn blobs_must_be_regular_files_inside_the_layout() {
    if !common::require_root("blobs_must_be_regular_files_inside_the_layout") {
        return;
    }
    let store = Store::new();

    // A manifest blob that is /etc/shadow, with its true digest and size: only the
    // file type can refuse it.
    let shadow = std::fs::read("/etc/shadow").expect("read /etc/shadow as root");
    let hex = sha256_hex(&shadow);
    let layout = store.path("shadow-oci");
    layout_with_manifest(&layout, &format!("sha256:{hex}"), shadow.len() as u64);
    std::os::unix::fs::symlink("/etc/shadow", layout.join("blobs/sha256").join(&hex)).unwrap();
    let out = store.import(&[layout.to_str().unwrap()]);
    let err = assert_one_line_error(&out, &[&hex, "not a regular file", "symbolic link"]);
    assert!(
        !err.contains("digest"),
        "refused by digest, not by type: {err}"
    );

    // A FIFO: today's open(2) would wait for a writer forever.
    let layout = store.path("fifo-oci");
    let hex = sha256_hex(b"{}");
    layout_with_manifest(&layout, &format!("sha256:{hex}"), 2);
    let fifo = layout.join("blobs/sha256").join(&hex);
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let cmd = store.command(&["image", "import", "--quiet", layout.to_str().unwrap()]);
    let m = run_measured(cmd, Duration::from_secs(5));
    assert!(!m.timed_out, "blocked on a FIFO blob");
    assert_one_line_error(&m.output, &[&hex, "not a regular file", "FIFO"]);

    // A valid image whose blobs/ directory is a symlink to another layout's blobs,
    // and one whose layer blob is a symlink to the same blob elsewhere.
    let real = store.path("real-oci");
    let l = layer(|b| add_file(b, "hello", 0o644, b"hi\n"));
    support::build_oci(&real, &[&l], None, "latest");
    let linked_dir = store.path("linked-dir-oci");
    std::fs::create_dir(&linked_dir).unwrap();
    for f in ["oci-layout", "index.json"] {
        std::fs::copy(real.join(f), linked_dir.join(f)).unwrap();
    }
    std::os::unix::fs::symlink(real.join("blobs"), linked_dir.join("blobs")).unwrap();
    let out = store.import(&[linked_dir.to_str().unwrap()]);
    assert_one_line_error(&out, &["blobs", "symbolic link"]);

    let linked_layer = store.path("linked-layer-oci");
    support::build_oci(&linked_layer, &[&l], None, "latest");
    let gz_hex = layer_digests(&linked_layer).remove(0);
    let blob = linked_layer.join("blobs/sha256").join(&gz_hex);
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(real.join("blobs/sha256").join(&gz_hex), &blob).unwrap();
    let out = store.import(&[linked_layer.to_str().unwrap()]);
    assert_one_line_error(&out, &[&gz_hex, "not a regular file"]);

    assert!(store.images().is_empty());
    assert!(store.layer_dirs().is_empty(), "{:?}", store.layer_dirs());
    assert!(store.tmp().is_empty(), "{:?}", store.tmp());
}

/// A layer of `dirs` read-only directories, each holding a mode-000 directory with a
/// whiteout, an opaque marker and `files` read-only files of `size` bytes.
fn hard_to_remove_layer(dirs: usize, files: usize, size: usize) -> support::Layer {
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    layer(|b| {
        for d in 0..dirs {
            add_dir(b, &format!("d{d}"), 0o555);
            add_dir(b, &format!("d{d}/locked"), 0o000);
            add_file(b, &format!("d{d}/locked/.wh.gone"), 0o644, b"");
            add_file(b, &format!("d{d}/locked/.wh..wh..opq"), 0o644, b"");
            for f in 0..files {
                add_file(b, &format!("d{d}/locked/f{f}"), 0o400, &data);
            }
        }
    })
}

/// Defect 2: an import killed by SIGKILL in the middle of its second layer leaves its
/// scratch directory and its finished first layer; the next import sweeps both.
#[test]
fn the_next_import_sweeps_what_a_killed_one_left() {
    if !common::require_root("the_next_import_sweeps_what_a_killed_one_left") {
        return;
    }
    let store = Store::new();
    let layout = store.path("big-oci");
    let first = layer(|b| add_file(b, "first", 0o644, b"first layer\n"));
    let big = hard_to_remove_layer(48, 4, 256 * 1024);
    support::write_oci(&layout, &[&first, &big], None, "latest", false);

    let child = store
        .command(&["image", "import", "--name", "big", layout.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn agent");
    let mut child = KillOnDrop(child);
    // Wait until the first layer is in place and the second is being unpacked.
    let deadline = Instant::now() + Duration::from_secs(60);
    let unpacking = || {
        store.layer_dirs().len() == 1
            && store.tmp().iter().any(|t| {
                t.starts_with("layer-")
                    && list_dir(&store.state.join("tmp").join(t).join("diff")).len() > 2
            })
    };
    while !unpacking() {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the import ended before it could be killed; make the layer bigger"
        );
        assert!(Instant::now() < deadline, "the second layer never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: signalling our own, not yet reaped, child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGKILL) };
    let status = child.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let left_tmp = store.tmp();
    let left_layers = store.layer_dirs();
    eprintln!("killed import left tmp/{left_tmp:?} and overlay2/{left_layers:?}");
    assert!(!left_tmp.is_empty() && !left_layers.is_empty());

    let second = store.path("second.tar");
    let l = layer(|b| add_file(b, "second", 0o644, b"second image\n"));
    std::fs::write(&second, &l.tar).unwrap();
    let out = store.import(&["--name", "second", second.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    assert!(store.tmp().is_empty(), "tmp/ still holds {:?}", store.tmp());
    let names: Vec<_> = store.images().into_iter().flat_map(|r| r.names).collect();
    assert_eq!(names, ["second:latest"]);
    let ls = store.command(&["image", "ls"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ls.stdout).contains("big"));
    store.assert_only_listed_layers();
}

/// Defect 2, the states a SIGKILL can leave that are too brief to hit by timing:
/// scratch trees with read-only and mode-000 directories, whiteout devices and opaque
/// xattrs; a layer moved into `overlay2/` but not yet linked; a short link made for
/// a layer that never arrived; a finished layer no image record names; a record
/// written but never renamed into place.
#[test]
fn the_sweep_clears_every_state_a_killed_import_can_leave() {
    if !common::require_root("the_sweep_clears_every_state_a_killed_import_can_leave") {
        return;
    }
    let store = Store::new();
    let keep = store.path("keep.tar");
    std::fs::write(&keep, layer(|b| add_file(b, "keep", 0o644, b"k\n")).tar).unwrap();
    let out = store.import(&["--name", "keep", keep.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A container's layer is not the image store's to sweep, even half-made.
    let container = "c".repeat(64);
    common::write_container_state(&store.state, &container, "c", "keep", "{}");
    std::fs::create_dir_all(store.state.join("overlay2").join(&container).join("diff")).unwrap();

    let tmp = store.state.join("tmp");
    for scratch in [
        "import-0123456789abcdef/archive",
        "layer-0123456789abcdef/diff",
    ] {
        let root = tmp.join(scratch);
        let locked = root.join("ro/locked");
        std::fs::create_dir_all(&locked).unwrap();
        std::fs::write(locked.join("file"), "x").unwrap();
        let wh = std::ffi::CString::new(locked.join("gone").to_str().unwrap()).unwrap();
        // SAFETY: `wh` is a NUL-terminated path that outlives the call.
        let made = unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR | 0o600, 0) };
        assert_eq!(made, 0);
        let dir = std::ffi::CString::new(locked.to_str().unwrap()).unwrap();
        // SAFETY: NUL-terminated strings and a value buffer that outlive the call.
        let r = unsafe {
            libc::lsetxattr(
                dir.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        for (p, mode) in [
            (locked.join("file"), 0o400),
            (locked, 0o000),
            (root.join("ro"), 0o555),
        ] {
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
        }
    }
    let overlay = store.state.join("overlay2");
    let unlinked = "a".repeat(64);
    std::fs::create_dir_all(overlay.join(&unlinked).join("diff/etc")).unwrap();
    let never = "b".repeat(64);
    std::os::unix::fs::symlink(format!("../{never}/diff"), overlay.join("l/DANGLING")).unwrap();
    let half_written = store.state.join("images").join(format!(
        ".{orphan_hex}.json.tmp4242",
        orphan_hex = "e".repeat(64)
    ));
    std::fs::write(&half_written, "{").unwrap();
    let orphan = "d".repeat(64);
    std::fs::create_dir_all(overlay.join(&orphan).join("diff")).unwrap();
    std::fs::write(overlay.join(&orphan).join("link"), "ORPHAN").unwrap();
    std::os::unix::fs::symlink(format!("../{orphan}/diff"), overlay.join("l/ORPHAN")).unwrap();

    let next = store.path("next.tar");
    std::fs::write(&next, layer(|b| add_file(b, "next", 0o644, b"n\n")).tar).unwrap();
    let out = store.import(&["--name", "next", next.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    assert!(store.tmp().is_empty(), "tmp/ still holds {:?}", store.tmp());
    let dirs = store.layer_dirs();
    for gone in [&unlinked, &orphan] {
        assert!(!dirs.contains(gone), "{gone} survived: {dirs:?}");
    }
    assert!(dirs.contains(&container), "the container's layer was swept");
    assert!(!half_written.exists(), "a half-written record survived");
    std::fs::remove_dir_all(overlay.join(&container)).unwrap();
    let names: BTreeSet<_> = store.images().into_iter().flat_map(|r| r.names).collect();
    assert_eq!(
        names,
        BTreeSet::from(["keep:latest".to_string(), "next:latest".to_string()])
    );
    store.assert_only_listed_layers();
}

/// Defect 3: malformed whiteouts get one line naming the entry and the layer, and
/// leave nothing behind (`.wh.` alone used to remove the layer's own directory).
#[test]
fn malformed_whiteouts_get_one_clear_line() {
    if !common::require_root("malformed_whiteouts_get_one_clear_line") {
        return;
    }
    let store = Store::new();
    let cases: &[(&str, &str)] = &[
        ("etc/.wh..", "etc/.wh.."),
        ("etc/.wh...", "etc/.wh..."),
        (".wh.", ".wh."),
        ("etc/.wh..wh.plnk", "etc/.wh..wh.plnk"),
        ("etc/.wh..wh..opq/x", "etc/.wh..wh..opq/x"),
        ("etc/.wh.gone/x", "etc/.wh.gone/x"),
    ];
    for (i, (entry, shown)) in cases.iter().enumerate() {
        let tarball = store.path(&format!("wh{i}.tar"));
        let l = layer(|b| {
            add_dir(b, "etc", 0o755);
            add_file(b, "etc/keep", 0o644, b"k\n");
            add_file(b, entry, 0o644, b"");
        });
        std::fs::write(&tarball, &l.tar).unwrap();
        let out = store.import(&[tarball.to_str().unwrap()]);
        let err = assert_one_line_error(&out, &[shown, "whiteout", "layer 1/1"]);
        assert!(err.contains(tarball.to_str().unwrap()), "{err}");
        let quoted = format!("{shown:?}");
        assert_eq!(err.matches(&quoted).count(), 1, "not said once: {err}");
    }
    // In an OCI image the line names the layer by position and digest.
    let layout = store.path("wh-oci");
    let good = layer(|b| add_file(b, "ok", 0o644, b"ok\n"));
    let bad = layer(|b| add_file(b, "etc/.wh..", 0o644, b""));
    support::write_oci(&layout, &[&good, &bad], None, "latest", false);
    let bad_digest = format!("sha256:{}", sha256_hex(&bad.tar));
    let out = store.import(&[layout.to_str().unwrap()]);
    assert_one_line_error(&out, &["layer 2/2", &bad_digest, "etc/.wh..", "whiteout"]);

    assert!(store.images().is_empty());
    assert!(store.tmp().is_empty(), "{:?}", store.tmp());
    assert!(store.layer_dirs().is_empty(), "{:?}", store.layer_dirs());
    assert!(store.state.join("tmp").is_dir(), "tmp/ itself was removed");
}

/// Defect 4: an I/O error names its path and its cause once, on one line.
#[test]
fn io_errors_name_the_path_once() {
    let store = Store::new();
    let missing = store.path("no-such-image.tar");
    let out = store.import(&[missing.to_str().unwrap()]);
    let err = assert_one_line_error(&out, &[missing.to_str().unwrap(), "No such file"]);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");

    // A device is no tarball: reading /dev/zero as one would never end.
    let out = store.import(&["/dev/zero"]);
    assert_one_line_error(&out, &["/dev/zero", "character device"]);

    // A layout without index.json's manifest blob.
    let layout = store.path("empty-oci");
    let hex = sha256_hex(b"{}");
    layout_with_manifest(&layout, &format!("sha256:{hex}"), 2);
    let out = store.import(&[layout.to_str().unwrap()]);
    let err = assert_one_line_error(&out, &[&hex, "No such file"]);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn a_record_names_only_the_blobs_its_import_read() {
    common::require_privileges!();
    let store = Store::new();
    let (base, top) = (support::base_layer(), support::top_layer());
    let gz = store.path("gz-oci");
    support::write_oci(&gz, &[&base, &top], None, "latest", true);
    let out = store.import(&["--name", "img", gz.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let blobs = |layout: &Path| -> BTreeSet<String> {
        layer_digests(layout)
            .into_iter()
            .map(|hex| format!("sha256:{hex}"))
            .collect()
    };
    let named = |store: &Store| -> BTreeSet<String> {
        let images = store.images();
        assert_eq!(images.len(), 1);
        images[0].diff_ids_by_blob.keys().cloned().collect()
    };
    assert_eq!(named(&store), blobs(&gz));
    // The same image with plain tar blobs: its layers are present, so its blobs
    // are never read, and the record does not take the layout's word for them.
    let plain = store.path("plain-oci");
    support::write_oci(&plain, &[&base, &top], None, "latest", false);
    let out = store.import(&["--name", "img", plain.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(named(&store), blobs(&gz));
    assert!(blobs(&plain).is_disjoint(&blobs(&gz)));
}
