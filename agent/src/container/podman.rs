//! podman's containers: name and image from the state podman writes through
//! containers/storage (`<root>/overlay-containers/containers.json`, and
//! `overlay-images/images.json` for an image known only by id).
//!
//! Both files hold every container (image) of the store, so they are parsed
//! again only when their modification time or size changes, and the parsed
//! table is shared by every lookup in between.

use super::metadata::ContainerMeta;
use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// A store's files past this size are refused (1000 containers take ~1 MiB).
const MAX_STORE_BYTES: u64 = 64 << 20;

/// podman's storage root (`/var/lib/containers/storage`), with the tables last
/// read from it; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Podman {
    root: PathBuf,
    cache: Arc<Mutex<Cache>>,
}

#[derive(Debug, Default)]
struct Cache {
    containers: Table<StoredContainer>,
    images: Table<StoredImage>,
}

/// One JSON array of records, by id, with the file stamp it was read at.
#[derive(Debug)]
struct Table<T> {
    stamp: Option<(SystemTime, u64)>,
    by_id: HashMap<String, T>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            stamp: None,
            by_id: HashMap::new(),
        }
    }
}

/// What is kept of a record of `containers.json`.
#[derive(Debug, Clone, Deserialize)]
struct StoredContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    /// The image's id.
    #[serde(default)]
    image: String,
    /// podman's own JSON, a string: `{"image-name":…,"name":…}`.
    #[serde(default)]
    metadata: String,
}

#[derive(Debug, Clone, Deserialize)]
struct StoredImage {
    id: String,
    #[serde(default)]
    names: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PodmanMetadata {
    #[serde(rename = "image-name", default)]
    image_name: String,
    #[serde(default)]
    name: String,
}

impl<T: Clone + for<'de> Deserialize<'de>> Table<T> {
    /// Re-reads `path` if it changed since last time; keeps the old table when
    /// it is unreadable (being rewritten).
    fn refresh(&mut self, path: &Path, id: impl Fn(&T) -> &str) {
        let Ok(file) = std::fs::File::open(path) else {
            return;
        };
        let Ok(md) = file.metadata() else { return };
        let stamp = (md.modified().unwrap_or(SystemTime::UNIX_EPOCH), md.len());
        if self.stamp == Some(stamp) {
            return;
        }
        if md.len() > MAX_STORE_BYTES {
            tracing::warn!(path = %path.display(), "podman store file too large; ignored");
            self.stamp = Some(stamp);
            return;
        }
        match serde_json::from_reader::<_, Vec<T>>(std::io::BufReader::new(file)) {
            Ok(records) => {
                self.by_id = records
                    .into_iter()
                    .map(|r| (id(&r).to_string(), r))
                    .collect();
                self.stamp = Some(stamp);
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "unreadable podman store file")
            }
        }
    }
}

impl Podman {
    /// podman's storage under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Podman {
            root: root.into(),
            cache: Arc::default(),
        }
    }

    /// The name and image of container `id`; `None` when the store does not
    /// (yet) have it.
    pub fn lookup(&self, id: &str) -> Option<ContainerMeta> {
        let mut cache = self.cache.lock();
        cache.containers.refresh(
            &self.root.join("overlay-containers/containers.json"),
            |c: &StoredContainer| &c.id,
        );
        let c = cache.containers.by_id.get(id)?.clone();
        let meta: PodmanMetadata = serde_json::from_str(&c.metadata).unwrap_or_default();
        let name = if meta.name.is_empty() {
            c.names.first().cloned().unwrap_or_default()
        } else {
            meta.name
        };
        let image = if !meta.image_name.is_empty() {
            meta.image_name
        } else {
            cache.images.refresh(
                &self.root.join("overlay-images/images.json"),
                |i: &StoredImage| &i.id,
            );
            cache
                .images
                .by_id
                .get(&c.image)
                .and_then(|i| i.names.first().cloned())
                .unwrap_or(c.image)
        };
        Some(ContainerMeta {
            name,
            image,
            ..ContainerMeta::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "63c5f8f66c5ed1b976e1c7a975cb945dfe6b2f7b5b19ec1e6c6c05456d9da32d";
    const IMAGE: &str = "55c3557663a95330766dad5737d84baf6b714e5c7a79bc8cfab4bf9eb136844c";

    #[test]
    fn reads_the_store_as_podman_4_writes_it() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("overlay-containers")).unwrap();
        std::fs::create_dir_all(t.path().join("overlay-images")).unwrap();
        // As podman 4.3 wrote them for `podman run -d --name rtz localhost/agent-bb:1`.
        std::fs::write(
            t.path().join("overlay-containers/containers.json"),
            format!(
                r#"[{{"id":"{ID}","names":["rtz"],"image":"{IMAGE}","layer":"7c2c","metadata":"{{\"image-name\":\"localhost/agent-bb:1\",\"image-id\":\"{IMAGE}\",\"name\":\"rtz\",\"created-at\":1796044482}}","created":"2026-11-30T13:14:42.936897416Z","flags":{{"MountLabel":"","ProcessLabel":""}}}},
                {{"id":"b2","names":["bare"],"image":"{IMAGE}"}},
                {{"id":"b3","names":["\u0007ctl\n"],"image":"gone"}}]"#
            ),
        )
        .unwrap();
        std::fs::write(
            t.path().join("overlay-images/images.json"),
            format!(r#"[{{"id":"{IMAGE}","names":["localhost/agent-bb:1"]}}]"#),
        )
        .unwrap();
        let p = Podman::new(t.path());
        let m = p.lookup(ID).unwrap();
        assert_eq!(
            (m.name.as_str(), m.image.as_str()),
            ("rtz", "localhost/agent-bb:1")
        );
        let m = p.lookup("b2").unwrap();
        assert_eq!(
            (m.name.as_str(), m.image.as_str()),
            ("bare", "localhost/agent-bb:1"),
            "image by id"
        );
        let m = p.lookup("b3").unwrap();
        assert_eq!(
            (m.name.as_str(), m.image.as_str()),
            ("\u{7}ctl\n", "gone"),
            "kept as is; the exposition escapes"
        );
        assert_eq!(p.lookup("nope"), None);
        // Rewritten (a new container): read again.
        std::fs::write(
            t.path().join("overlay-containers/containers.json"),
            r#"[{"id":"n1","names":["later"],"image":"x"}, {"id":"n2"}]"#,
        )
        .unwrap();
        assert_eq!(p.lookup("n1").unwrap().name, "later");
        assert_eq!(p.lookup(ID), None);
        // Corrupt (half written): the last good table stays.
        std::fs::write(
            t.path().join("overlay-containers/containers.json"),
            "[{\"id\":",
        )
        .unwrap();
        assert_eq!(p.lookup("n1").unwrap().name, "later");
        // Not UTF-8: refused like any bad JSON.
        std::fs::write(
            t.path().join("overlay-containers/containers.json"),
            b"[{\"id\":\"n1\",\"names\":[\"\xff\"]}]",
        )
        .unwrap();
        assert_eq!(p.lookup("n1").unwrap().name, "later");
    }
}
