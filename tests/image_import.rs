//! `agent image import` against hostile and broken input, run as the built binary on
//! real files: OCI layouts whose blobs point at `/dev/zero`, `/etc/shadow`, a FIFO or
//! a directory elsewhere; imports killed with SIGKILL half-way; malformed whiteouts.
//! Every layout and layer is written here, into temporary directories. Tests that
//! unpack layers (mknod, chown) need root and skip with a printed reason without it.

mod common;
#[path = "launch_support/mod.rs"]
mod support;

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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent"));
        cmd.args(args)
            .env("AGENT_STATE_DIR", &self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
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

/// Defect 4: an I/O error names its path and its cause once, on one line.
#[test]
fn io_errors_name_the_path_once() {
    let store = Store::new();
    let missing = store.path("no-such-image.tar");
    let out = store.import(&[missing.to_str().unwrap()]);
    let err = assert_one_line_error(&out, &[missing.to_str().unwrap(), "No such file"]);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");

    // A layout without index.json's manifest blob.
    let layout = store.path("empty-oci");
    let hex = sha256_hex(b"{}");
    layout_with_manifest(&layout, &format!("sha256:{hex}"), 2);
    let out = store.import(&[layout.to_str().unwrap()]);
    let err = assert_one_line_error(&out, &[&hex, "No such file"]);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}
