//! Volumes with Docker's semantics: `-v HOST:CTR[:ro]` bind mounts, named volumes
//! `-v NAME:CTR[:ro]` kept under `<state>/volumes/<name>/_data` (and kept after
//! `rm`; an empty one is first filled with what the image holds at `CTR`, as
//! Docker does, unless `nocopy`), `--tmpfs CTR[:OPTIONS]`, and `--mount type=bind|volume|tmpfs,…`.
//!
//! Each is parsed once at the edge into a [`MountRequest`], becomes one entry of
//! the spec's `mounts` (bind or tmpfs), and is applied by the container's first
//! process like every other mount of the spec. A container path must be absolute,
//! without `..`, not `/` and not under `/proc` or `/sys`; symbolic links of the
//! image on the way are resolved inside the root, and one that climbs out of it
//! is refused when the mount is made.

use super::units::ByteSize;
use super::userns::IdMap;
use super::{Error, IoContext, Paths, Result};
use oci_spec::runtime::{Mount, MountBuilder};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

/// What a volume flag asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A host path (`-v /host:/ctr`, `--mount type=bind`).
    Bind {
        /// Absolute host path.
        path: PathBuf,
        /// `-v` creates a missing host directory; `--mount` refuses it (Docker).
        create: bool,
    },
    /// A named volume of the store; `copy`: an empty one is first filled with
    /// what the image has at the container path (Docker's default; `nocopy`).
    Volume { name: String, copy: bool },
    /// A fresh tmpfs.
    Tmpfs {
        /// `size=`, in bytes (unlimited when absent, as Docker).
        size: Option<u64>,
        /// `mode=`, octal.
        mode: Option<u32>,
    },
}

/// One volume of a launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    /// Where it comes from.
    pub source: MountSource,
    /// Absolute container path, normalised.
    pub target: PathBuf,
    /// Read-only.
    pub read_only: bool,
    /// Extra mount options (`noexec`, propagation…).
    pub options: Vec<String>,
}

/// Checks a container path: absolute, no `..`, not `/`, `/proc` or `/sys`.
pub fn validate_target(target: &str) -> Result<PathBuf> {
    let bad = |why: &str| Error::Invalid(format!("invalid container path {target:?}: {why}"));
    let path = Path::new(target);
    if !path.is_absolute() {
        return Err(bad("must be absolute"));
    }
    if target.contains('\0') {
        return Err(bad("NUL byte"));
    }
    let mut clean = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(bad("\"..\" climbs out of the container")),
            Component::Normal(n) => clean.push(n),
            Component::Prefix(_) => return Err(bad("not a Unix path")),
        }
    }
    if clean == Path::new("/") {
        return Err(bad("cannot mount over the root"));
    }
    if clean.starts_with("/proc") || clean.starts_with("/sys") {
        return Err(bad("inside /proc or /sys"));
    }
    Ok(clean)
}

/// Validates a volume name as Docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_volume_name(name: &str) -> Result<()> {
    if super::state::docker_name(name, 2..=255) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid volume name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]+ (a host path must be absolute)"
        )))
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("mode {s:?}: use octal, e.g. 1777"))
}

fn host_path(s: &str) -> Result<PathBuf, String> {
    if s.contains('\0') {
        return Err("NUL byte in the host path".into());
    }
    Ok(PathBuf::from(s))
}

/// `-v HOST:CTR[:OPTS]` or `-v NAME:CTR[:OPTS]` (OPTS: `ro`, `rw`, propagation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeArg(pub MountRequest);

impl FromStr for VolumeArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (src, dst, opts) = match parts.as_slice() {
            [src, dst] => (*src, *dst, ""),
            [src, dst, opts] => (*src, *dst, *opts),
            [_] => {
                return Err(format!(
                    "-v {s}: anonymous volumes are not supported; name one (-v NAME:{s})"
                ));
            }
            _ => return Err(format!("-v {s}: use HOST:CTR[:ro] or NAME:CTR[:ro]")),
        };
        let target = validate_target(dst).map_err(|e| e.to_string())?;
        let source = if src.starts_with('/') {
            MountSource::Bind {
                path: host_path(src)?,
                create: true,
            }
        } else {
            validate_volume_name(src).map_err(|e| e.to_string())?;
            MountSource::Volume {
                name: src.to_string(),
                copy: true,
            }
        };
        let mut req = MountRequest {
            source,
            target,
            read_only: false,
            options: Vec::new(),
        };
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => req.read_only = true,
                "rw" => req.read_only = false,
                "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {
                    req.options.push(o.to_string())
                }
                "nocopy" => {
                    if let MountSource::Volume { copy, .. } = &mut req.source {
                        *copy = false;
                    }
                }
                // SELinux relabelling has nothing to do here.
                "z" | "Z" => {}
                _ => return Err(format!("-v {s}: unknown option {o:?}")),
            }
        }
        Ok(VolumeArg(req))
    }
}

/// Options of a tmpfs: `size=`, `mode=` and mount flags.
fn tmpfs_options(
    opts: &str,
    size: &mut Option<u64>,
    mode: &mut Option<u32>,
    read_only: &mut bool,
    options: &mut Vec<String>,
) -> Result<(), String> {
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => *size = Some(v.parse::<ByteSize>()?.0),
            Some(("mode", v)) => *mode = Some(parse_mode(v)?),
            Some(_) => {
                return Err(format!(
                    "tmpfs option {o:?}: only size= and mode= take a value"
                ));
            }
            None => match o {
                "ro" => *read_only = true,
                "rw" => *read_only = false,
                "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev" | "atime" | "noatime"
                | "relatime" | "strictatime" => options.push(o.to_string()),
                _ => return Err(format!("unknown tmpfs option {o:?}")),
            },
        }
    }
    Ok(())
}

/// `--tmpfs CTR[:size=64m,mode=1777,…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsArg(pub MountRequest);

impl FromStr for TmpfsArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (dst, opts) = s.split_once(':').unwrap_or((s, ""));
        let target = validate_target(dst).map_err(|e| e.to_string())?;
        let (mut size, mut mode, mut read_only) = (None, None, false);
        // Docker's defaults for --tmpfs.
        let mut options = vec!["noexec".into(), "nosuid".into(), "nodev".into()];
        tmpfs_options(opts, &mut size, &mut mode, &mut read_only, &mut options)
            .map_err(|e| format!("--tmpfs {s}: {e}"))?;
        Ok(TmpfsArg(MountRequest {
            source: MountSource::Tmpfs { size, mode },
            target,
            read_only,
            options,
        }))
    }
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountArg(pub MountRequest);

impl FromStr for MountArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: String| format!("--mount {s}: {why}");
        let (mut typ, mut source, mut target) = (None, None, None);
        let (mut read_only, mut options) = (false, Vec::new());
        let (mut size, mut mode) = (None, None);
        let mut copy = true;
        for field in s.split(',').filter(|f| !f.is_empty()) {
            let (k, v) = match field.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (field, None),
            };
            match (k, v) {
                ("type", Some(v)) => typ = Some(v.to_string()),
                ("source" | "src", Some(v)) => source = Some(v.to_string()),
                ("target" | "destination" | "dst", Some(v)) => target = Some(v.to_string()),
                ("readonly" | "ro", None | Some("true" | "1")) => read_only = true,
                ("readonly" | "ro", Some("false" | "0")) => read_only = false,
                ("bind-propagation", Some(p)) => match p {
                    "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {
                        options.push(p.to_string())
                    }
                    _ => return Err(bad(format!("unknown bind-propagation {p:?}"))),
                },
                ("tmpfs-size", Some(v)) => size = Some(v.parse::<ByteSize>().map_err(bad)?.0),
                ("tmpfs-mode", Some(v)) => mode = Some(parse_mode(v).map_err(bad)?),
                ("volume-nocopy", None | Some("true" | "1")) => copy = false,
                ("volume-nocopy", Some("false" | "0")) => copy = true,
                _ => return Err(bad(format!("unknown field {field:?}"))),
            }
        }
        let target = target.ok_or_else(|| bad("target= is required".into()))?;
        let target = validate_target(&target).map_err(|e| bad(e.to_string()))?;
        let typ = typ.unwrap_or_else(|| "volume".into());
        let source = match (typ.as_str(), source) {
            ("bind", Some(src)) if src.starts_with('/') => MountSource::Bind {
                path: host_path(&src).map_err(bad)?,
                create: false,
            },
            ("bind", _) => return Err(bad("a bind needs an absolute source=".into())),
            ("volume", Some(name)) => {
                validate_volume_name(&name).map_err(|e| bad(e.to_string()))?;
                MountSource::Volume { name, copy }
            }
            ("volume", None) => {
                return Err(bad(
                    "anonymous volumes are not supported; give source=NAME".into()
                ));
            }
            ("tmpfs", None) => {
                options.extend(["nosuid".to_string(), "nodev".to_string()]);
                MountSource::Tmpfs { size, mode }
            }
            ("tmpfs", Some(_)) => return Err(bad("a tmpfs takes no source".into())),
            (other, _) => {
                return Err(bad(format!(
                    "unknown type {other:?}: use bind, volume or tmpfs"
                )));
            }
        };
        if !matches!(source, MountSource::Tmpfs { .. }) && (size.is_some() || mode.is_some()) {
            return Err(bad("tmpfs-size and tmpfs-mode are for type=tmpfs".into()));
        }
        Ok(MountArg(MountRequest {
            source,
            target,
            read_only,
            options,
        }))
    }
}

/// `volumes/<name>`.
pub fn volume_dir(paths: &Paths, name: &str) -> PathBuf {
    paths.volumes().join(name)
}

/// `volumes/<name>/_data`: what the container sees (Docker's layout).
pub fn volume_data(paths: &Paths, name: &str) -> PathBuf {
    volume_dir(paths, name).join("_data")
}

/// Refuses two volumes on one container path (Docker's "duplicate mount point").
pub fn check_duplicates(requests: &[MountRequest]) -> Result<()> {
    for (i, r) in requests.iter().enumerate() {
        if requests[..i].iter().any(|o| o.target == r.target) {
            return Err(Error::Invalid(format!(
                "duplicate mount point {}",
                r.target.display()
            )));
        }
    }
    Ok(())
}

/// The spec's `mounts` entries of `requests`, parents before children.
pub fn oci_mounts(paths: &Paths, requests: &[MountRequest]) -> Result<Vec<Mount>> {
    let mut sorted: Vec<&MountRequest> = requests.iter().collect();
    sorted.sort_by_key(|r| r.target.components().count());
    sorted
        .into_iter()
        .map(|r| {
            let mut options = r.options.clone();
            options.push(if r.read_only { "ro" } else { "rw" }.into());
            let (typ, source) = match &r.source {
                MountSource::Bind { path, .. } => {
                    options.extend(["rbind".to_string(), "rprivate".to_string()]);
                    ("bind", path.clone())
                }
                MountSource::Volume { name, copy } => {
                    options.extend(["rbind".to_string(), "rprivate".to_string()]);
                    if *copy {
                        options.push("copyup".into());
                    }
                    ("bind", volume_data(paths, name))
                }
                MountSource::Tmpfs { size, mode } => {
                    if let Some(s) = size {
                        options.push(format!("size={s}"));
                    }
                    if let Some(m) = mode {
                        options.push(format!("mode={m:o}"));
                    }
                    ("tmpfs", PathBuf::from("tmpfs"))
                }
            };
            MountBuilder::default()
                .destination(&r.target)
                .typ(typ)
                .source(source)
                .options(options)
                .build()
                .map_err(|source| Error::Spec {
                    what: format!("mount {}", r.target.display()),
                    source,
                })
        })
        .collect()
}

/// The named volumes among `requests`.
pub fn names(requests: &[MountRequest]) -> Vec<String> {
    let mut out: Vec<String> = requests
        .iter()
        .filter_map(|r| match &r.source {
            MountSource::Volume { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Makes what the mounts need on the host: named volumes that do not exist yet
/// (owned by the container's root under `--userns-remap`), and `-v` host
/// directories that are missing. A `--mount type=bind` source must exist.
pub fn prepare(paths: &Paths, requests: &[MountRequest], idmap: Option<&IdMap>) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for r in requests {
        match &r.source {
            MountSource::Bind { path, create } => {
                if std::fs::symlink_metadata(path).is_err() {
                    if !create {
                        return Err(Error::NotFound(format!(
                            "bind source path does not exist: {}",
                            path.display()
                        )));
                    }
                    std::fs::create_dir_all(path).at("create bind source", path)?;
                }
            }
            MountSource::Volume { name, .. } => {
                let data = volume_data(paths, name);
                if data.is_dir() {
                    continue;
                }
                let dir = volume_dir(paths, name);
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o711)
                    .create(&dir)
                    .at("create volume", &dir)?;
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&data)
                    .at("create volume", &data)?;
                if let Some(map) = idmap {
                    super::sys::lchown(&data, map.uid, map.gid)?;
                }
            }
            MountSource::Tmpfs { .. } => {}
        }
    }
    Ok(())
}

/// A named volume as `agent volume ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Its name.
    pub name: String,
    /// `volumes/<name>/_data`.
    pub mountpoint: PathBuf,
    /// Containers (names) that use it.
    pub used_by: Vec<String>,
}

/// The store's named volumes, by name.
pub fn list(paths: &Paths) -> Result<Vec<VolumeInfo>> {
    let dir = paths.volumes();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at("read directory", &dir),
    };
    let containers = super::state::list(paths.root())?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.at("read directory", &dir)?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if validate_volume_name(&name).is_err() || !entry.path().join("_data").is_dir() {
            continue;
        }
        let used_by = containers
            .iter()
            .filter(|c| c.volumes.contains(&name))
            .map(|c| c.name.clone())
            .collect();
        out.push(VolumeInfo {
            mountpoint: volume_data(paths, &name),
            name,
            used_by,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Creates an empty named volume (`agent volume create`); an existing one is kept.
pub fn create(paths: &Paths, name: &str) -> Result<PathBuf> {
    validate_volume_name(name)?;
    super::ensure_layout(paths)?;
    let _lock = super::sys::lock_exclusive(&paths.lock_file())?;
    prepare(
        paths,
        &[MountRequest {
            source: MountSource::Volume {
                name: name.to_string(),
                copy: false,
            },
            target: PathBuf::from("/unused"),
            read_only: false,
            options: Vec::new(),
        }],
        None,
    )?;
    Ok(volume_data(paths, name))
}

/// Removes a named volume and its data; refused while a container (running or
/// not) uses it, as Docker does.
pub fn remove(paths: &Paths, name: &str) -> Result<()> {
    validate_volume_name(name)?;
    let _lock = super::sys::lock_exclusive(&paths.lock_file())?;
    let dir = volume_dir(paths, name);
    if !dir.join("_data").is_dir() {
        return Err(Error::NoSuchVolume {
            name: name.to_owned(),
        });
    }
    let users: Vec<String> = super::state::list(paths.root())?
        .into_iter()
        .filter(|c| c.volumes.iter().any(|v| v == name))
        .map(|c| c.name)
        .collect();
    if !users.is_empty() {
        return Err(Error::Conflict(format!(
            "volume {name} is in use by container(s) {}",
            users.join(", ")
        )));
    }
    std::fs::remove_dir_all(&dir).at("remove volume", &dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Result<MountRequest, String> {
        s.parse::<VolumeArg>().map(|a| a.0)
    }

    #[test]
    fn dash_v_binds_and_named_volumes() {
        let r = v("/srv/data:/data:ro").unwrap();
        assert_eq!(
            r.source,
            MountSource::Bind {
                path: "/srv/data".into(),
                create: true
            }
        );
        assert_eq!(r.target, Path::new("/data"));
        assert!(r.read_only);
        let r = v("pgdata:/var/lib/postgresql/data/").unwrap();
        assert_eq!(
            r.source,
            MountSource::Volume {
                name: "pgdata".into(),
                copy: true
            }
        );
        assert_eq!(r.target, Path::new("/var/lib/postgresql/data"));
        assert!(!r.read_only);
        let r = v("pgdata:/data:ro,nocopy").unwrap();
        assert_eq!(
            r.source,
            MountSource::Volume {
                name: "pgdata".into(),
                copy: false
            }
        );
        assert!(r.read_only);
        for bad in [
            "/data",
            "x:/data",
            "./rel:/data",
            "vol:data",
            "vol:/",
            "vol:/a/../../etc",
            "vol:/proc/sys",
            "vol:/sys",
            "vol:/data:rx",
            "a:b:c:d",
        ] {
            assert!(v(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tmpfs_and_mount_flags() {
        let t: TmpfsArg = "/run:size=64m,mode=1777".parse().unwrap();
        assert_eq!(
            t.0.source,
            MountSource::Tmpfs {
                size: Some(64 << 20),
                mode: Some(0o1777)
            }
        );
        assert!(t.0.options.contains(&"noexec".to_string()));
        assert!("/run:size=lots".parse::<TmpfsArg>().is_err());
        assert!("/run:uid=5".parse::<TmpfsArg>().is_err());
        let m: MountArg = "type=bind,source=/srv,target=/srv,readonly"
            .parse()
            .unwrap();
        assert_eq!(
            m.0.source,
            MountSource::Bind {
                path: "/srv".into(),
                create: false
            }
        );
        assert!(m.0.read_only);
        let m: MountArg = "type=volume,src=cache,dst=/cache".parse().unwrap();
        assert_eq!(
            m.0.source,
            MountSource::Volume {
                name: "cache".into(),
                copy: true
            }
        );
        let m: MountArg = "type=tmpfs,target=/scratch,tmpfs-size=1m".parse().unwrap();
        assert_eq!(
            m.0.source,
            MountSource::Tmpfs {
                size: Some(1 << 20),
                mode: None
            }
        );
        for bad in [
            "type=bind,target=/x",
            "type=bind,source=rel,target=/x",
            "type=volume,target=/x",
            "type=tmpfs,source=x,target=/x",
            "type=nfs,source=x,target=/x",
            "type=volume,source=v",
            "type=volume,source=v,target=/x,tmpfs-size=1m",
            "type=volume,source=v,target=/../x",
            "type=volume,source=v,target=/x,colour=blue",
        ] {
            assert!(bad.parse::<MountArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mounts_become_spec_entries_parents_first() {
        let paths = Paths::new("/var/lib/agent");
        let reqs = vec![
            v("cache:/data/cache").unwrap(),
            v("/srv:/data:ro").unwrap(),
            "/data/tmp:size=1k".parse::<TmpfsArg>().unwrap().0,
        ];
        check_duplicates(&reqs).unwrap();
        let m = oci_mounts(&paths, &reqs).unwrap();
        assert_eq!(m[0].destination(), Path::new("/data"));
        assert_eq!(m[0].typ().as_deref(), Some("bind"));
        assert!(m[0].options().as_ref().unwrap().contains(&"ro".to_string()));
        assert_eq!(
            m[1].source().as_deref(),
            Some(Path::new("/var/lib/agent/volumes/cache/_data"))
        );
        assert_eq!(m[2].typ().as_deref(), Some("tmpfs"));
        assert!(
            m[2].options()
                .as_ref()
                .unwrap()
                .contains(&"size=1024".to_string())
        );
        let dup = vec![v("a1:/d").unwrap(), v("/x:/d/").unwrap()];
        assert!(check_duplicates(&dup).is_err());
        assert_eq!(names(&reqs), ["cache"]);
    }
}
