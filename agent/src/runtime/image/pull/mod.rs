//! Pulling an image from an OCI distribution registry into the store that
//! `image import` fills, through the same unpack, digest checks and records, so a
//! pulled image is launched exactly like an imported one.
//!
//! The protocol (manifests, indexes, blobs, bearer-token and basic auth) is
//! `oci-client`'s. An index or a Docker manifest list resolves to the host's
//! platform. The image config downloads beside the layers, as Docker's does.
//! Layers the store has are not fetched: the image records name the diff id each
//! blob they were made from unpacked to, which gives their chain ids before the
//! config arrives. The others download side by side ([`PARALLEL_LAYERS`] at a
//! time), each streamed straight into `unpack` in a scratch directory under
//! `tmp/`, where its blob digest and size are checked and its diff id hashed as
//! the bytes go by. A layer enters `overlay2/` (a rename) only once its diff id is
//! the config's, bottom-most first; the record is written last. A pull killed half-way leaves scratch and perhaps layers that no
//! record names, which the next pull, import or launch sweeps under the store lock,
//! as an interrupted import's.

mod blobs;
mod registry;

pub use registry::{DEFAULT_CERTS_DIR, RegistryOptions};

use super::super::{Error, Paths, Result, sys};
use super::archive::CONFIG_MAX;
use super::store;
use super::{ImageRecord, layer_dir, unpack, validate_reference};
use blobs::{Job, Jobs, LayerFetch, fetch_config};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::Semaphore;

/// Layers downloaded at once: Docker's default `max-concurrent-downloads`.
pub const PARALLEL_LAYERS: usize = 3;

/// What a pull reports as it goes.
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// A line of its own: what is pulled from where, leftovers swept.
    Note(String),
    /// Layer `index` (bottom-most is 0) of `count`, blob `digest`, is now `state`.
    Layer {
        index: usize,
        count: usize,
        digest: String,
        state: LayerState,
    },
}

/// Where one layer of a pull is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    /// Already in the store: not downloaded.
    Present,
    /// Waiting for a download slot.
    Waiting,
    /// `done` of `total` bytes downloaded (and unpacked as they came).
    Downloading { done: u64, total: u64 },
    /// Downloaded (its digest and size checked) and unpacked in scratch; waiting
    /// for the image config to confirm its diff id, and for the layers below it.
    Unpacked,
    /// In the store.
    Done,
}

/// Where a pull's events go; called from several threads.
pub type PullProgress = Arc<dyn Fn(PullEvent) + Send + Sync>;

/// The parts of a reference a pull uses.
pub struct PullRef {
    parsed: Reference,
    /// The name the record gets: `registry/repository:tag` (or `@digest`).
    name: String,
}

impl PullRef {
    /// Parses `reference` as Docker does (`busybox` is
    /// `docker.io/library/busybox:latest`).
    pub fn parse(reference: &str) -> Result<Self> {
        let parts =
            super::parse_registry_reference(reference).map_err(|source| Error::Reference {
                reference: reference.to_string(),
                source,
            })?;
        let parsed = match (parts.tag, parts.digest) {
            (Some(tag), Some(digest)) => {
                Reference::with_tag_and_digest(parts.registry, parts.repository, tag, digest)
            }
            (None, Some(digest)) => {
                Reference::with_digest(parts.registry, parts.repository, digest)
            }
            (tag, None) => Reference::with_tag(
                parts.registry,
                parts.repository,
                tag.unwrap_or_else(|| "latest".into()),
            ),
        };
        let base = format!("{}/{}", parsed.registry(), parsed.repository());
        let name = match (parsed.tag(), parsed.digest()) {
            (Some(tag), _) => format!("{base}:{tag}"),
            (None, Some(digest)) => format!("{base}@{digest}"),
            (None, None) => format!("{base}:latest"),
        };
        validate_reference(&name)?;
        Ok(PullRef { parsed, name })
    }

    /// The name the pulled image is recorded under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the reference names its registry (`host.domain/…`, `host:port/…`,
    /// `localhost/…`) rather than meaning Docker Hub by default.
    pub fn names_registry(reference: &str) -> bool {
        match reference.split_once('/') {
            Some((first, _)) => first.contains(['.', ':']) || first == "localhost",
            None => false,
        }
    }
}

/// Pulls `reference` into the store under `paths`; returns its record.
pub fn pull(
    paths: &Paths,
    reference: &PullRef,
    opts: &RegistryOptions,
    progress: PullProgress,
) -> Result<ImageRecord> {
    // reqwest's rustls takes the process's crypto provider; the agent's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_lock, runtime) = prepare(paths, &progress)?;
    let client = Arc::new(new_client(opts, &reference.parsed)?);
    let pulled = runtime.block_on(pull_image(paths, reference, opts, client, progress));
    // Dropping the runtime waits for the unpackers still running, so nothing is
    // writing to tmp/ when the sweep below runs (and no thread outlives a pull
    // that `launch` makes before it forks).
    drop(runtime);
    if pulled.is_err() {
        // Layers of this image committed before the failure are named by no
        // record: leave nothing half-created.
        let _ = store::sweep(paths);
    }
    pulled
}

/// Locks and sweeps the store and starts a pull's runtime.
fn prepare(
    paths: &Paths,
    progress: &PullProgress,
) -> Result<(sys::FileLock, tokio::runtime::Runtime)> {
    super::super::ensure_layout(paths)?;
    let lock = sys::lock_exclusive(&paths.lock_file())?;
    let swept = store::sweep(paths)?;
    if swept > 0 {
        progress(PullEvent::Note(format!(
            "removed {swept} leftovers of an interrupted import or pull from {}",
            paths.root().display()
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("agent-pull")
        .enable_all()
        .build()
        .map_err(|e| Error::Task {
            what: "start the pull's runtime".into(),
            source: Box::new(e),
        })?;
    Ok((lock, runtime))
}

/// A client for the registry `reference` names.
fn new_client(opts: &RegistryOptions, reference: &Reference) -> Result<Client> {
    let config = registry::client_config(opts, reference)?;
    Client::try_from(config)
        .map_err(|e| registry_error("set up a client for pulling", registry::host(reference), e))
}

/// A registry error: what was asked, of which registry, and the client's error.
fn registry_error(op: impl Into<String>, registry: &str, e: OciDistributionError) -> Error {
    Error::Registry {
        op: op.into(),
        registry: registry.to_string(),
        source: Box::new(e),
    }
}

/// The blob part of `sha256:<hex>`; other algorithms are refused.
fn sha256_hex_of(digest: &str, source: &str) -> Result<String> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h.to_string()),
        _ => Err(super::corrupt(
            std::path::Path::new(source),
            format!("{digest}: unsupported digest (only sha256 is)"),
        )),
    }
}

/// A descriptor's size, refused when negative or over `max`.
fn checked_size(desc: &OciDescriptor, what: &str, max: u64, source: &str) -> Result<u64> {
    match u64::try_from(desc.size) {
        Ok(size) if size <= max => Ok(size),
        _ => Err(super::corrupt(
            std::path::Path::new(source),
            format!(
                "{}: a {what} of {} bytes by its descriptor (at most {max})",
                desc.digest, desc.size
            ),
        )),
    }
}

async fn pull_image(
    paths: &Paths,
    reference: &PullRef,
    opts: &RegistryOptions,
    client: Arc<Client>,
    progress: PullProgress,
) -> Result<ImageRecord> {
    let r = &reference.parsed;
    let source = reference.name.as_str();
    let registry = registry::host(r).to_string();
    let auth = registry::credentials(opts, r)?;
    progress(PullEvent::Note(format!("pulling {source}")));
    let (manifest, _digest) = client
        .pull_image_manifest(r, &auth)
        .await
        .map_err(|e| registry_error(format!("pull the manifest of {source}"), &registry, e))?;
    let count = manifest.layers.len();
    let config_desc = manifest.config.clone();
    let config_size = checked_size(&config_desc, "image config", CONFIG_MAX, source)?;
    let id = format!("sha256:{}", sha256_hex_of(&config_desc.digest, source)?);
    let mut sizes = Vec::with_capacity(count);
    for desc in &manifest.layers {
        check_layer_media_type(desc, source)?;
        sha256_hex_of(&desc.digest, source)?;
        sizes.push(checked_size(desc, "layer", u64::MAX >> 1, source)?);
    }
    // The config is fetched beside the layers, as Docker does: its diff ids are
    // needed only to commit them.
    let config = tokio::spawn(fetch_config(
        client.clone(),
        r.clone(),
        config_desc,
        config_size,
        registry.clone(),
        source.to_string(),
    ));
    let _config_guard = AbortOnDrop(config.abort_handle());
    // Until it is here, the records tell which layers the store has: the chain ids
    // of the bottom-most layers whose blobs they name (a chain id needs every
    // layer below). A hint only: the config has the last word.
    let known = store::diff_ids_by_blob(paths)?;
    let known_chains: Vec<String> = manifest
        .layers
        .iter()
        .map_while(|desc| known.get(&desc.digest))
        .scan(None::<String>, |below, diff_id| {
            let chain = super::chain_id(below.as_deref(), diff_id);
            *below = Some(chain.clone());
            Some(chain)
        })
        .collect();
    let present = |chain: &str| layer_dir(paths, chain).join("link").exists();
    let event = |index: usize, state| {
        progress(PullEvent::Layer {
            index,
            count,
            digest: manifest.layers[index].digest.clone(),
            state,
        })
    };
    let fetch = |index: usize| LayerFetch {
        client: client.clone(),
        reference: r.clone(),
        desc: manifest.layers[index].clone(),
        size: sizes[index],
        paths: paths.clone(),
        source: source.to_string(),
        registry: registry.clone(),
        index,
        count,
        progress: progress.clone(),
        cancelled: Arc::new(AtomicBool::new(false)),
    };

    let mut jobs = Jobs((0..count).map(|_| None).collect());
    let mut fetches = Vec::with_capacity(count);
    for index in 0..count {
        if known_chains.get(index).is_some_and(|chain| present(chain)) {
            event(index, LayerState::Present);
        } else {
            event(index, LayerState::Waiting);
            fetches.push(fetch(index));
        }
    }
    // Largest first: the biggest layer takes longest to unpack and is what a
    // pull waits for. Spawned first, it takes the connection the manifest came
    // over while the others open theirs (whose first answers came 20-70 ms
    // later in the bench, the registry sharing two busy cores with the
    // unpackers), and past PARALLEL_LAYERS it takes the first slots.
    fetches.sort_by_key(|f| std::cmp::Reverse(f.size));
    let slots = Arc::new(Semaphore::new(PARALLEL_LAYERS));
    for fetch in fetches {
        let index = fetch.index;
        jobs.0[index] = Some(Job::spawn(fetch, &slots));
    }

    let image_config = config.await.map_err(|e| Error::Task {
        what: format!("download the image config of {source}"),
        source: Box::new(e),
    })??;
    let diff_ids = image_config.rootfs().diff_ids().clone();
    if diff_ids.len() != count {
        return Err(super::corrupt(
            std::path::Path::new(source),
            format!(
                "{count} layers but {} diff ids in the image config",
                diff_ids.len()
            ),
        ));
    }
    let mut chains: Vec<String> = Vec::with_capacity(count);
    for diff_id in &diff_ids {
        chains.push(super::chain_id(chains.last().map(String::as_str), diff_id));
    }
    // Downloads of layers the store has after all (the records did not name
    // their blobs: `docker save` imports, older records) stop now, not when the
    // commits below get to them.
    for (index, chain) in chains.iter().enumerate() {
        if present(chain)
            && let Some(job) = jobs.0[index].take()
        {
            job.cancel();
            event(index, LayerState::Present);
        }
    }

    // Commit bottom-most first: a layer's `lower` file names the layers below it.
    // The record names only blobs whose diff id this pull or an earlier one saw.
    let mut stored: Vec<String> = Vec::with_capacity(count);
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (index, chain) in chains.iter().enumerate() {
        let desc = &manifest.layers[index];
        let job = match jobs.0[index].take() {
            Some(job) => Some(job),
            None if present(chain) => {
                if known_chains.get(index) == Some(chain) {
                    seen.insert(desc.digest.clone(), diff_ids[index].clone());
                }
                None
            }
            None => {
                // The records named this blob, the config another diff id, whose
                // layer the store lacks: the blob is fetched and checked.
                event(index, LayerState::Waiting);
                Some(Job::spawn(fetch(index), &slots))
            }
        };
        if let Some(job) = job {
            let unpacked = job.handle.await.map_err(|e| Error::Task {
                what: format!("download layer {}/{count}", index + 1),
                source: Box::new(e),
            })??;
            if unpacked.diff_id() != diff_ids[index] {
                return Err(super::corrupt(
                    std::path::Path::new(source),
                    format!(
                        "layer {}/{count} ({}): {}",
                        index + 1,
                        desc.digest,
                        unpack::diff_id_mismatch(&diff_ids[index], unpacked.diff_id())
                    ),
                ));
            }
            store::commit_layer(paths, unpacked, &stored, stored.last().map(String::as_str))?;
            seen.insert(desc.digest.clone(), diff_ids[index].clone());
            event(index, LayerState::Done);
        }
        stored.push(chain.clone());
    }
    super::save_record(
        paths,
        super::NewRecord {
            id,
            name: reference.name.clone(),
            layers: stored,
            diff_ids_by_blob: seen,
            config: super::run_config_from(&image_config),
        },
    )
}

/// Aborts a spawned task when a pull returns early.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Layer media types a pull unpacks: plain, gzip or zstd tars, OCI's and Docker's.
fn check_layer_media_type(desc: &OciDescriptor, source: &str) -> Result<()> {
    let m = desc.media_type.as_str();
    let known = m.starts_with("application/vnd.oci.image.layer.")
        || m.starts_with("application/vnd.docker.image.rootfs.");
    let tar = [".tar", ".tar+gzip", ".tar+zstd", ".tar.gzip", ".tar.zstd"]
        .iter()
        .any(|suffix| m.ends_with(suffix));
    if known && tar {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{source}: layer {} has media type {m:?}, which agent cannot unpack (plain, gzip and zstd tars only)",
        desc.digest
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_records() {
        assert_eq!(
            PullRef::parse("busybox").unwrap().name(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            PullRef::parse("127.0.0.1:5000/a/b:1").unwrap().name(),
            "127.0.0.1:5000/a/b:1"
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            PullRef::parse(&format!("localhost:5000/a@{d}"))
                .unwrap()
                .name(),
            format!("localhost:5000/a@{d}")
        );
        assert!(PullRef::parse("UPPER/case").is_err());
        assert!(PullRef::names_registry("127.0.0.1:5000/a"));
        assert!(PullRef::names_registry("quay.io/a/b"));
        assert!(PullRef::names_registry("localhost/a"));
        assert!(!PullRef::names_registry("library/busybox"));
        assert!(!PullRef::names_registry("busybox"));
    }

    #[test]
    fn only_tar_layers_are_unpacked() {
        let desc = |m: &str| OciDescriptor {
            media_type: m.into(),
            digest: "sha256:x".into(),
            ..Default::default()
        };
        for ok in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ] {
            check_layer_media_type(&desc(ok), "x").unwrap();
        }
        let err = check_layer_media_type(
            &desc("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot unpack"), "{err}");
    }
}
