//! Unpacking one layer's tar stream into a `diff` directory: OCI whiteouts become
//! overlayfs ones, no entry may land outside the directory, and the stream's digests
//! are checked as it is read.

use super::super::{Error, IoContext, Result, hex, sys};
use super::files::FileWriter;
use super::safe_paths::sanitize;
use super::{archive, corrupt};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;

use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A reader that hashes what passes through it.
pub(super) struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashReader<R> {
    pub(super) fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// `sha256:<hex>` of what has been read so far.
    pub(super) fn digest(&self) -> String {
        format!("sha256:{}", hex(&self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// How much of a layer's uncompressed stream is decoded at a time.
const DECODE_CHUNK: usize = 256 << 10;
/// How much of its raw stream the decoder takes at a time, at most.
const RAW_CHUNK: usize = 64 << 10;

/// What a layer's bytes must be, as far as its source says.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Expected<'a> {
    /// `sha256:<hex>` of the blob as stored (compressed).
    pub blob_digest: Option<&'a str>,
    /// Size of the blob as stored.
    pub blob_size: Option<u64>,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: Option<&'a str>,
}

/// Which layer of which source is being unpacked, for messages.
pub(super) struct LayerRef<'a> {
    /// The file the layer is read from, named in I/O errors.
    pub file: &'a Path,
    /// The image source, named in verdicts on the layer's content.
    pub source: &'a Path,
    /// Which layer: `layer 2/3 (sha256:…)`.
    pub label: String,
}

impl LayerRef<'_> {
    /// A verdict on this layer's content.
    fn corrupt(&self, what: impl std::fmt::Display) -> Error {
        corrupt(self.source, format!("{}: {what}", self.label))
    }
}

/// Unpacks a (possibly compressed) layer stream into `diff` and checks it against
/// `expected`: digest and size over the raw bytes, diff id over the uncompressed tar.
/// Returns the diff id.
///
/// Two threads: this one runs tar and writes the files while a decoder thread
/// hashes the raw stream and inflates it, a few chunks ahead (this one hashes the
/// tar).
/// A layer's CPU (inflate and two hashes, then the kernel's file writes) is then
/// spread over two cores instead of one, where a pull's biggest layer is what it
/// waits for.
pub(super) fn unpack_verified(
    reader: impl Read + Send,
    diff: &Path,
    layer: &LayerRef<'_>,
    expected: Expected<'_>,
) -> Result<String> {
    let file = layer.file;
    let check_blob = expected.blob_digest.is_some() || expected.blob_size.is_some();
    let (tx, rx) = tokio::sync::mpsc::channel(DECODED_AHEAD);
    let (recycle, spare) = std::sync::mpsc::channel();
    let (unpacked, decoded) = std::thread::scope(|scope| {
        let decoder = std::thread::Builder::new()
            .name("agent-inflate".into())
            .spawn_scoped(scope, move || decode(reader, tx, spare, check_blob))
            .map_err(|e| Error::Task {
                what: format!("start the decoder of {}", layer.label),
                source: Box::new(e),
            })?;
        let mut chunks = ChannelReader::new(rx);
        chunks.recycle = Some(recycle);
        // The diff id is hashed here, not by the decoder, which has more to do.
        let mut inner = HashReader::new(chunks);
        let unpacked = unpack_layer(&mut inner, diff, layer).and_then(|()| {
            // Read to the end so the digests cover every byte (tar padding included).
            std::io::copy(&mut inner, &mut std::io::sink())
                .map(drop)
                .at("read layer", file)
        });
        let diff_id = inner.digest();
        // A decoder still sending stops at its next chunk.
        drop(inner);
        let decoded = decoder.join().map_err(|_| Error::Task {
            what: format!("decode {}", layer.label),
            source: "the decoder thread panicked".into(),
        })?;
        Ok::<_, Error>((unpacked.map(|()| diff_id), decoded))
    })?;
    if check_blob {
        // A blob that is not what its descriptor says is the real cause of
        // whatever the decoder or tar made of it, so that is checked first.
        if let Some(size) = expected.blob_size
            && decoded.blob_bytes != size
        {
            return Err(layer.corrupt(format!(
                "size mismatch: its descriptor says {size} bytes, read {}",
                decoded.blob_bytes
            )));
        }
        let got = &decoded.blob_digest;
        if let Some(want) = expected.blob_digest
            && got != want
        {
            return Err(layer.corrupt(format!("digest mismatch: expected {want}, got {got}")));
        }
        decoded.rest.at("read layer", file)?;
    }
    let diff_id = unpacked?;
    if let Some(want) = expected.diff_id
        && want != diff_id
    {
        return Err(layer.corrupt(diff_id_mismatch(want, &diff_id)));
    }
    Ok(diff_id)
}

/// What a layer whose tar is not the one its image config names gets told.
pub(super) fn diff_id_mismatch(config_says: &str, got: &str) -> String {
    format!("diff id mismatch: the image config says {config_says}, the layer unpacks to {got}")
}

/// Decoded chunks a decoder thread may run ahead of tar.
const DECODED_AHEAD: usize = 4;
/// Decoded chunks a decoder thread allocates: those queued for tar, the one tar
/// reads and the one being filled. Reused from then on: 256 KiB allocations are
/// above glibc's mmap threshold, so each fresh one cost 64 page faults and a
/// munmap (some 450 of the 6,800 page faults of `cargo xtask bench pull`'s pull).
const DECODE_BUFFERS: usize = DECODED_AHEAD + 2;

/// What a decoder thread found.
struct Decoded {
    /// Bytes of the raw stream read.
    blob_bytes: u64,
    /// `sha256:<hex>` of them.
    blob_digest: String,
    /// How reading the rest of the raw stream ended (when asked to).
    rest: std::io::Result<()>,
}

/// The decoder thread of [`unpack_verified`]: sends `reader` decoded, in chunks of
/// [`DECODE_CHUNK`] (inflating into tar's 8 KiB reads took zlib-rs 1.7 times as
/// long: it copies each output chunk into its window and restarts its fast loop),
/// then an error if decoding failed. With `drain`, reads the raw stream to its
/// end even when tar stopped early, so its size and digest are whole.
fn decode(
    reader: impl Read,
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    spare: std::sync::mpsc::Receiver<bytes::Bytes>,
    drain: bool,
) -> Decoded {
    let mut outer = HashReader::new(reader);
    let sent = (|| -> std::io::Result<()> {
        let input = BufReader::with_capacity(RAW_CHUNK, &mut outer);
        let mut inner = archive::decompress(input)?;
        let mut made = 0;
        loop {
            // A chunk tar is done with, filled again: no fresh pages to fault in
            // and zero for every chunk. Past [`DECODE_BUFFERS`] the decoder waits
            // for one (tar is behind anyway); a closed pool means tar stopped.
            let recycled = match spare.try_recv() {
                Ok(b) => Some(b),
                Err(_) if made < DECODE_BUFFERS => None,
                Err(_) => match spare.recv() {
                    Ok(b) => Some(b),
                    Err(_) => return Ok(()), // tar stopped; its result says why
                },
            };
            let mut buf = match recycled.map(bytes::Bytes::try_into_mut) {
                Some(Ok(b)) => b,
                _ => {
                    made += 1;
                    bytes::BytesMut::with_capacity(DECODE_CHUNK)
                }
            };
            buf.resize(DECODE_CHUNK, 0);
            let n = inner.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            if tx.blocking_send(Ok(buf.freeze())).is_err() {
                return Ok(()); // tar stopped; its result says why
            }
        }
    })();
    if let Err(e) = sent {
        let _ = tx.blocking_send(Err(e));
    }
    drop(tx);
    let rest = if drain {
        std::io::copy(&mut outer, &mut std::io::sink()).map(drop)
    } else {
        Ok(())
    };
    Decoded {
        blob_bytes: outer.bytes,
        blob_digest: outer.digest(),
        rest,
    }
}

/// Chunks sent over a channel, read as a stream on a thread that may block: a
/// pull's download task sends a blob to its unpacker, a decoder thread sends the
/// decoded layer to tar. A read takes all the chunks already there that fit (the
/// decoder inflates faster from larger input); a chunk read whole goes back to
/// `recycle`, when given, for the sender to fill again.
pub(super) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
    pos: usize,
    /// An error that came after bytes the last read returned.
    error: Option<std::io::Error>,
    recycle: Option<std::sync::mpsc::Sender<bytes::Bytes>>,
}

impl ChannelReader {
    pub(super) fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> Self {
        ChannelReader {
            rx,
            chunk: bytes::Bytes::new(),
            pos: 0,
            error: None,
            recycle: None,
        }
    }

    fn next_chunk(&mut self, block: bool) -> Option<std::io::Result<bytes::Bytes>> {
        let done = std::mem::take(&mut self.chunk);
        self.pos = 0;
        if let Some(recycle) = &self.recycle
            && !done.is_empty()
        {
            let _ = recycle.send(done);
        }
        if block {
            self.rx.blocking_recv()
        } else {
            self.rx.try_recv().ok()
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut filled = 0;
        while filled < buf.len() {
            if self.pos == self.chunk.len() {
                match self.next_chunk(filled == 0) {
                    None => break,
                    Some(Err(e)) if filled == 0 => return Err(e),
                    Some(Err(e)) => {
                        self.error = Some(e);
                        break;
                    }
                    Some(Ok(chunk)) => self.chunk = chunk,
                }
                continue;
            }
            let n = (buf.len() - filled).min(self.chunk.len() - self.pos);
            buf[filled..filled + n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
            filled += n;
            self.pos += n;
        }
        Ok(filled)
    }
}

/// The OCI whiteout prefix: `.wh.NAME` hides `NAME` of the layers below.
const WHITEOUT: &[u8] = b".wh.";
/// The opaque whiteout: its directory hides everything of the layers below.
const OPAQUE: &[u8] = b".wh..wh..opq";

/// What a layer entry's name makes of it.
#[derive(Debug, PartialEq)]
pub(super) enum Whiteout<'a> {
    /// An ordinary entry.
    No,
    /// `DIR/.wh..wh..opq`: `DIR` is opaque.
    Opaque,
    /// `DIR/.wh.NAME`: `NAME` is hidden.
    Hide(&'a OsStr),
}

/// Classifies entry `rel` (sanitized, not empty) of type `kind`, or says why it is a
/// malformed whiteout. Whiteouts are empty regular files (or hard links to one)
/// named `.wh.` and a file name; names starting `.wh..wh.` are reserved for the opaque
/// marker (AUFS kept its own metadata there); nothing lies below a whiteout.
pub(super) fn whiteout(
    rel: &Path,
    kind: tar::EntryType,
) -> std::result::Result<Whiteout<'_>, String> {
    let mut names = rel.iter().map(OsStr::as_bytes);
    let last = names.next_back().unwrap_or_default();
    if let Some(dir) = names.find(|n| n.starts_with(WHITEOUT)) {
        return Err(format!(
            "an entry below {:?}, which is a whiteout's name",
            OsStr::from_bytes(dir)
        ));
    }
    if !last.starts_with(WHITEOUT) {
        return Ok(Whiteout::No);
    }
    if !(kind.is_file() || kind.is_hard_link()) {
        return Err("a whiteout must be an empty regular file".into());
    }
    if last == OPAQUE {
        return Ok(Whiteout::Opaque);
    }
    let hidden = &last[WHITEOUT.len()..];
    match hidden {
        b"" => Err("it names no file to hide".into()),
        b"." | b".." => Err(format!(
            "it would hide {:?}, which is not a file",
            OsStr::from_bytes(hidden)
        )),
        _ if hidden.starts_with(WHITEOUT) => Err(
            "names starting with .wh..wh. are reserved (only .wh..wh..opq is a whiteout)".into(),
        ),
        _ => Ok(Whiteout::Hide(OsStr::from_bytes(hidden))),
    }
}

/// Unpacks one layer's tar stream into `dest`, converting OCI whiteouts to overlayfs
/// ones (`.wh.NAME` → 0:0 char device, `.wh..wh..opq` → opaque xattr).
pub(super) fn unpack_layer<R: Read>(reader: R, dest: &Path, layer: &LayerRef<'_>) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entries = archive.entries().at("read layer", layer.file)?;
    let mut files = FileWriter::new();
    for entry in entries {
        let mut entry = entry.at("read layer", layer.file)?;
        let raw = entry.path().at("read layer", layer.file)?.into_owned();
        let escapes = || layer.corrupt(format!("entry {raw:?} escapes the layer"));
        let rel = sanitize(&raw).ok_or_else(escapes)?;
        let (Some(file_name), Some(rel_parent)) = (rel.file_name(), rel.parent()) else {
            continue;
        };
        let kind = entry.header().entry_type();
        let device = kind.is_character_special() || kind.is_block_special() || kind.is_fifo();
        let wh = whiteout(&rel, kind)
            .map_err(|why| layer.corrupt(format!("malformed whiteout {raw:?}: {why}")))?;
        if kind == tar::EntryType::Regular
            && wh == Whiteout::No
            && files.write(&mut entry, dest, &rel)?
        {
            continue;
        }
        files.forget();
        // Entries handled here (not by tar's own checked unpacking) must not reach
        // through a symlink out of the layer.
        let parent = if wh != Whiteout::No || device {
            safe_parent(dest, rel_parent, layer)?
        } else {
            dest.join(rel_parent)
        };
        match wh {
            Whiteout::Opaque => {
                sys::lsetxattr(&parent, "trusted.overlay.opaque", b"y")?;
                continue;
            }
            Whiteout::Hide(hidden) => {
                let target = parent.join(hidden);
                remove_tree(&target)?;
                sys::mknod(&target, libc::S_IFCHR | 0o600, 0, 0)?;
                continue;
            }
            Whiteout::No => {}
        }
        if device {
            let target = parent.join(file_name);
            remove_tree(&target)?;
            let header = entry.header();
            let mode = header.mode().at("read layer", layer.file)? & 0o7777;
            let ftype = if kind.is_character_special() {
                libc::S_IFCHR
            } else if kind.is_block_special() {
                libc::S_IFBLK
            } else {
                libc::S_IFIFO
            };
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            sys::mknod(&target, ftype | mode, major, minor)?;
            let uid = header.uid().unwrap_or(0) as u32;
            let gid = header.gid().unwrap_or(0) as u32;
            sys::lchown(&target, uid, gid)?;
            continue;
        }
        if !entry.unpack_in(dest).at("unpack", dest.join(&rel))? {
            return Err(escapes());
        }
    }
    Ok(())
}

/// `dest/rel`, creating missing directories, refusing any component that is not a
/// real directory (a symlink could point out of the layer).
fn safe_parent(dest: &Path, rel: &Path, layer: &LayerRef<'_>) -> Result<PathBuf> {
    if !real_dirs(dest, rel)? {
        return Err(layer.corrupt(format!("entry below a non-directory: {:?}", rel)));
    }
    Ok(dest.join(rel))
}

/// Whether every component of `dest/rel` below `dest` is a real directory (not a
/// symbolic link), creating those that are missing; false at the first that is
/// something else.
pub(super) fn real_dirs(dest: &Path, rel: &Path) -> Result<bool> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(_) => std::fs::create_dir(&cur).at("create directory", &cur)?,
        }
    }
    Ok(true)
}

/// Removes a directory tree or a file; a missing one is fine.
pub(super) fn remove_tree(path: &Path) -> Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at("remove", path),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn whiteouts_cannot_reach_through_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), "keep").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "etc", tar::EntryType::Symlink, Some(&outside));
        entry(&mut b, "etc/.wh.victim", tar::EntryType::Regular, None);
        let data = b.into_inner().unwrap();
        let dest = t.path().join("diff");
        std::fs::create_dir(&dest).unwrap();
        let err = unpack_layer(&data[..], &dest, &test_layer()).unwrap_err();
        assert!(err.to_string().contains("non-directory"), "{err}");
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "keep"
        );
    }

    /// Appends an empty entry owned by root.
    fn entry(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, link: Option<&Path>) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_path(path).unwrap();
        if let Some(link) = link {
            h.set_link_name(link).unwrap();
        }
        h.set_size(0);
        h.set_mode(if kind.is_symlink() { 0o777 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }

    pub(in super::super) fn test_layer() -> LayerRef<'static> {
        LayerRef {
            file: Path::new("/src/layer.tar"),
            source: Path::new("/src"),
            label: "layer 1/1".into(),
        }
    }

    #[test]
    fn whiteout_names() {
        let file = tar::EntryType::Regular;
        fn ok(p: &str) -> Whiteout<'_> {
            whiteout(Path::new(p), tar::EntryType::Regular).unwrap()
        }
        assert_eq!(ok("etc/passwd"), Whiteout::No);
        assert_eq!(ok("etc/.wh.passwd"), Whiteout::Hide(OsStr::new("passwd")));
        assert_eq!(ok("etc/.wh....x"), Whiteout::Hide(OsStr::new("...x")));
        assert_eq!(ok("etc/.wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(ok(".wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(
            whiteout(Path::new("etc/.wh.x"), tar::EntryType::Link).unwrap(),
            Whiteout::Hide(OsStr::new("x"))
        );
        for (bad, why) in [
            (".wh.", "names no file"),
            ("etc/.wh.", "names no file"),
            ("etc/.wh..", "\".\", which is not a file"),
            ("etc/.wh...", "\"..\", which is not a file"),
            ("etc/.wh..wh.plnk", "reserved"),
            (".wh..wh.aufs", "reserved"),
            ("etc/.wh..wh..opq/x", "below \".wh..wh..opq\""),
            ("etc/.wh.gone/x", "below \".wh.gone\""),
        ] {
            let err = whiteout(Path::new(bad), file).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        for kind in [
            tar::EntryType::Directory,
            tar::EntryType::Symlink,
            tar::EntryType::Char,
            tar::EntryType::Fifo,
        ] {
            for name in ["etc/.wh.x", "etc/.wh..wh..opq"] {
                let err = whiteout(Path::new(name), kind).unwrap_err();
                assert!(err.contains("empty regular file"), "{name} {kind:?}: {err}");
            }
        }
    }

    #[test]
    fn a_malformed_whiteout_is_one_line_naming_entry_and_layer() {
        let t = tempfile::tempdir().unwrap();
        for (i, name) in [".wh.", ".wh..", ".wh...", "a/.wh..", "a/.wh..wh.plnk"]
            .iter()
            .enumerate()
        {
            let mut b = tar::Builder::new(Vec::new());
            entry(&mut b, name, tar::EntryType::Regular, None);
            let data = b.into_inner().unwrap();
            // `.wh.` and `.wh...` used to remove the layer's directory and its parent.
            let dest = t.path().join(i.to_string()).join("diff");
            std::fs::create_dir_all(&dest).unwrap();
            let err = unpack_layer(&data[..], &dest, &test_layer()).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!(
                    "corrupt image data /src: layer 1/1: malformed whiteout {name:?}: "
                )),
                "{msg}"
            );
            assert!(!msg.contains('\n'), "{msg}");
            assert!(dest.is_dir(), "{name} removed the layer directory");
        }
    }

    #[test]
    fn the_channel_reader_hands_on_chunks_and_errors() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(Ok(bytes::Bytes::from_static(b"abc"))).unwrap();
        tx.try_send(Ok(bytes::Bytes::from_static(b"de"))).unwrap();
        tx.try_send(Err(std::io::Error::other("cut"))).unwrap();
        let mut r = ChannelReader::new(rx);
        let mut buf = [0u8; 2];
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf, b"ab");
        // What is there already fills a read across chunks.
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf, b"cd");
        // An error after bytes comes with the next read.
        assert_eq!(r.read(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'e');
        assert_eq!(r.read(&mut buf).unwrap_err().to_string(), "cut");
        drop(tx);
        assert_eq!(r.read(&mut buf).unwrap(), 0);
    }
}
