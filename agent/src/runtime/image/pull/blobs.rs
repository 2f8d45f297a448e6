//! Downloading a pull's blobs: the image config whole, each layer streamed into
//! an unpacker on a blocking thread (scratch under `tmp/`, blob digest and size
//! checked and diff id hashed as the bytes go by).

use super::super::super::{Error, Paths, Result};
use super::super::store::{self, Unpacked};
use super::super::unpack;
use super::{LayerState, PullEvent, PullProgress, registry_error};
use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};
use oci_spec::image::ImageConfiguration;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Semaphore, mpsc};

/// Chunks of a blob (as the HTTP client hands them over, up to a few hundred KiB)
/// queued between a download and its unpacker.
const RAW_QUEUE: usize = 8;

/// Downloads, verifies and parses an image config.
pub(super) async fn fetch_config(
    client: Arc<Client>,
    reference: Reference,
    desc: OciDescriptor,
    size: u64,
    registry: String,
    source: String,
) -> Result<ImageConfiguration> {
    let bytes = fetch_small(&client, &reference, &desc, size, &registry, &source).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        super::super::corrupt_by(
            std::path::Path::new(&source),
            format!("{}: invalid image config", desc.digest),
            e,
        )
    })
}

/// Downloads a small blob (an image config) whole, at most `size` bytes, checking
/// its size and digest.
async fn fetch_small(
    client: &Client,
    reference: &Reference,
    desc: &OciDescriptor,
    size: u64,
    registry: &str,
    source: &str,
) -> Result<Vec<u8>> {
    let op = || format!("download {} of {source}", desc.digest);
    let mut stream = client
        .pull_blob_stream(reference, desc)
        .await
        .map_err(|e| registry_error(op(), registry, e))?;
    let mut data = Vec::with_capacity(size as usize);
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Registry {
            op: op(),
            registry: registry.to_string(),
            source: Box::new(e),
        })?;
        hasher.update(&chunk);
        data.extend_from_slice(&chunk);
        if data.len() as u64 > size {
            break;
        }
    }
    let got = format!("sha256:{}", super::super::super::hex(&hasher.finalize()));
    if data.len() as u64 != size || got != desc.digest {
        return Err(super::super::corrupt(
            std::path::Path::new(source),
            format!(
                "{}: the registry sent {} bytes with digest {got}, not the {size} its descriptor says",
                desc.digest,
                data.len()
            ),
        ));
    }
    Ok(data)
}

/// A layer's download and unpack, running.
pub(super) struct Job {
    pub(super) handle: tokio::task::JoinHandle<Result<Unpacked>>,
    /// Set when it is stopped: it reports nothing more.
    cancelled: Arc<AtomicBool>,
}

impl Job {
    pub(super) fn spawn(fetch: LayerFetch, slots: &Arc<Semaphore>) -> Job {
        let cancelled = fetch.cancelled.clone();
        Job {
            handle: tokio::spawn(fetch.run(slots.clone())),
            cancelled,
        }
    }

    /// Stops it; its scratch goes when its unpacker sees the stream end.
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        self.handle.abort();
    }
}

/// The layer downloads of a pull; those still running when it fails are aborted.
pub(super) struct Jobs(pub(super) Vec<Option<Job>>);

impl Drop for Jobs {
    fn drop(&mut self) {
        for job in self.0.iter().flatten() {
            job.cancel();
        }
    }
}

/// One layer to download and unpack.
pub(super) struct LayerFetch {
    pub(super) client: Arc<Client>,
    pub(super) reference: Reference,
    pub(super) desc: OciDescriptor,
    pub(super) size: u64,
    pub(super) paths: Paths,
    pub(super) source: String,
    pub(super) registry: String,
    pub(super) index: usize,
    pub(super) count: usize,
    pub(super) progress: PullProgress,
    pub(super) cancelled: Arc<AtomicBool>,
}

impl LayerFetch {
    fn event(&self, state: LayerState) {
        if self.cancelled.load(Ordering::Relaxed) {
            return;
        }
        (self.progress)(PullEvent::Layer {
            index: self.index,
            count: self.count,
            digest: self.desc.digest.clone(),
            state,
        });
    }

    /// Streams the blob into an unpacker on a blocking thread; returns the layer
    /// unpacked and verified in scratch.
    async fn run(self, slots: Arc<Semaphore>) -> Result<Unpacked> {
        let _slot = slots.acquire_owned().await.map_err(|e| Error::Task {
            what: "wait for a download slot".into(),
            source: Box::new(e),
        })?;
        let total = self.size;
        self.event(LayerState::Downloading { done: 0, total });
        let op = || {
            format!(
                "download layer {}/{} ({})",
                self.index + 1,
                self.count,
                self.desc.digest
            )
        };
        // Asked for as the range from byte 0, which a registry answers with a 206
        // whose bytes oci-client hands over unverified: the unpacker hashes the blob
        // anyway (with its size, and the diff id in the same pass), so this hashes
        // it once instead of twice. A registry that ignores ranges answers 200, and
        // oci-client checks that stream as well.
        let mut stream = match self
            .client
            .pull_blob_stream_partial(&self.reference, &self.desc, 0, None)
            .await
            .map_err(|e| registry_error(op(), &self.registry, e))?
        {
            BlobResponse::Full(stream) | BlobResponse::Partial(stream) => stream,
        };
        // A short queue: the registry sends faster than a layer inflates, and a
        // deep one held much of the blob in buffers faulted in once and dropped
        // (1,500 of the bench's 6,800 page faults); a full queue holds the
        // download back instead, and the allocator reuses the buffers it frees.
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(RAW_QUEUE);
        let unpacker = {
            let paths = self.paths.clone();
            let source = PathBuf::from(&self.source);
            let label = format!(
                "layer {}/{} ({})",
                self.index + 1,
                self.count,
                self.desc.digest
            );
            let digest = self.desc.digest.clone();
            tokio::task::spawn_blocking(move || {
                let layer = unpack::LayerRef {
                    file: &source,
                    source: &source,
                    label,
                };
                let expected = unpack::Expected {
                    blob_digest: Some(&digest),
                    blob_size: Some(total),
                    // Checked against the image config's once it is here.
                    diff_id: None,
                };
                store::unpack_to_scratch(&paths, unpack::ChannelReader::new(rx), &layer, expected)
            })
        };
        let mut done = 0u64;
        let mut reported = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    // The unpacker's verdict on what it got comes first (a digest
                    // mismatch is what a verifying stream's error means).
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            };
            done += chunk.len() as u64;
            if tx.send(Ok(chunk)).await.is_err() {
                break; // the unpacker stopped; its result says why
            }
            if done > total {
                break; // more than the descriptor says: the unpacker refuses it
            }
            if done - reported >= 256 << 10 || done == total {
                reported = done;
                self.event(LayerState::Downloading { done, total });
            }
        }
        drop(tx);
        let unpacked = unpacker.await.map_err(|e| Error::Task {
            what: op(),
            source: Box::new(e),
        })??;
        self.event(LayerState::Unpacked);
        Ok(unpacked)
    }
}
