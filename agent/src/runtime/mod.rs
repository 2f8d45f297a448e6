//! The container runtime behind `agent launch`: what Docker's overlay2 driver and
//! runc do underneath, in one place.
//!
//! - [`image`]: the image store. OCI layouts, `docker save` archives, rootfs tarballs
//!   and directories become content-addressed layers under `overlay2/<chain-id>/diff`
//!   with Docker's `link`/`lower` files and `overlay2/l/` short links.
//! - [`rootfs`]: a container's own overlay layer (`diff`, `work`, `merged`) and the
//!   overlay mount itself.
//! - [`spec`]: launch options validated into the OCI runtime spec
//!   (`oci_spec::runtime::Spec`, built with its builders): the one description
//!   that is written as `config.json` and that the container applies.
//! - [`namespaces`]: the container's first process applying that spec before
//!   `execve`: mounts, devices, masked paths, `pivot_root`, hostname, loopback,
//!   rlimits, user, the five capability sets, `no_new_privs`, seccomp.
//! - [`capabilities`], [`seccomp`], [`userns`]: Docker's default capabilities and
//!   `--cap-add`/`--cap-drop`; the containers/common seccomp profile resolved and
//!   compiled with libseccomp; `--userns-remap` with idmapped layers.
//! - [`volumes`]: `-v`, `--tmpfs`, `--mount` and the store's named volumes, as
//!   entries of the spec's `mounts`.
//! - [`exec`]: `agent exec`, a process joining a running container's
//!   namespaces and cgroup under its spec's confinement; [`terminal`]: the
//!   pseudo-terminals of `-t`; [`attach`]: `agent attach` through a detached
//!   supervisor; [`logs`]: the timestamped log of a detached container.
//! - [`bundle`]: `agent run --bundle`, a foreign OCI bundle run the same way.
//! - [`spawn`]: a container's first process cloned into its namespaces and
//!   cgroup and released (for `agent launch`, `agent run` and `agent-runc create`);
//!   [`oci_runtime`]: runc's command line (`agent-runc`) on the same store.
//! - [`supervisor`]: wait, forward signals, record the exit,
//!   and restart the container as its [`restart`] policy says; [`lifecycle`]:
//!   `kill`, `stop`, `rm` of a supervised container.
//! - [`state`]: `containers/<id>/state.json` (the schema `agent serve` reads) and the
//!   store lock.
//!
//! The whole runtime shares one error type: its modules hand paths and state to each
//! other constantly and the CLI only needs one line per failure.

pub mod attach;
pub mod bundle;
pub mod capabilities;
pub mod exec;
pub mod image;
pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod namespaces;
pub mod oci_runtime;
pub mod reconcile;
pub mod restart;
pub mod rootfs;
pub mod seccomp;
pub mod spawn;
pub mod spec;
pub mod state;
pub mod supervisor;
mod sys;
pub mod terminal;
pub mod units;
pub mod userns;
pub mod volumes;

use std::path::{Path, PathBuf};

/// Default state root (overridden by `--state-dir` / `AGENT_STATE_DIR`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/agent";

/// Errors of the container runtime. Every I/O error names the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem or syscall operation on a path failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A syscall that is not about one path failed.
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    /// A signal could not be sent.
    #[error("kill({pid}, {signal}): {source}")]
    Kill {
        pid: i32,
        signal: i32,
        #[source]
        source: nix::errno::Errno,
    },
    /// A process could not join one of a container's namespaces.
    #[error("setns {kind}: {source}")]
    Setns {
        kind: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    /// A passwd or group entry whose id is not a number.
    #[error("bad {file} entry for {name}")]
    BadEntry {
        file: &'static str,
        name: String,
        #[source]
        source: std::num::ParseIntError,
    },
    /// A string handed to a syscall holds a NUL byte.
    #[error("{what} contains a NUL byte: {value:?}")]
    Nul {
        what: &'static str,
        value: String,
        #[source]
        source: std::ffi::NulError,
    },
    /// `mount_setattr(MOUNT_ATTR_IDMAP)` refused to idmap a layer (callers fall
    /// back on shifted copies).
    #[error("idmap {}: {source}", dir.display())]
    Idmap {
        dir: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    /// A forked helper failed; its error crossed the process boundary as text.
    #[error("{what}: {message}")]
    Helper {
        what: &'static str,
        message: String,
        #[source]
        source: Option<nix::errno::Errno>,
    },
    /// An OCI spec (config.json, or one part of it) could not be built or read.
    #[error("{what}: {source}")]
    Spec {
        what: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// libseccomp refused a step of compiling the seccomp filter.
    #[error("seccomp: {what}: {source}")]
    Seccomp {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// The process's capability sets could not be read or changed.
    #[error("{op}: {source}")]
    Caps {
        op: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    /// A JSON document that is not about one file could not be encoded or decoded.
    #[error("{what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// An image reference that does not parse.
    #[error("invalid image reference {reference:?}: {source}")]
    Reference {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    /// A background task of the runtime failed or was cancelled.
    #[error("{what}: {source}")]
    Task {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Randomness for an id could not be drawn from the kernel.
    #[error("getrandom: {0}")]
    Random(#[source] getrandom::Error),
    /// The user asked for something malformed.
    #[error("{0}")]
    Invalid(String),
    /// No container has this id, id prefix or name.
    #[error("no such container: {key}")]
    NoSuchContainer { key: String },
    /// No image has this name, id or id prefix.
    #[error(
        "no such image: {reference} (import it with `agent image import` or pull it with `agent pull`)"
    )]
    NoSuchImage { reference: String },
    /// No named volume has this name.
    #[error("no such volume: {name}")]
    NoSuchVolume { name: String },
    /// The container is not running (what was asked needs it to be).
    #[error("container {name} is not running")]
    NotRunning { name: String },
    /// Another container already has this name.
    #[error("the container name {name} is already in use")]
    NameInUse { name: String },
    /// An image, container or layer that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with existing state (duplicate name, image in use…).
    #[error("{0}")]
    Conflict(String),
    /// An image or layer whose content is broken.
    #[error("corrupt image data {}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        reason: String,
        /// What the reader said, when the verdict rests on its error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The container's cgroup could not be made or changed.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// `agent exec` could not start its command (the code to exit with: 126 when
    /// it cannot be run, 127 when it is not found).
    #[error("{message}")]
    Exec { code: i32, message: String },
    /// A registry refused a request, or could not be reached.
    #[error("{op} from {registry}")]
    Registry {
        op: String,
        registry: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// JSON that could not be read or written.
    #[error("{} : {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Result of the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the failing path to an [`std::io::Result`].
pub trait IoContext<T> {
    /// Wraps the error as [`Error::Io`] with `op` and `path`.
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(std::io::Error::from).at(op, path)
    }
}

/// Names the syscall behind a [`nix::Result`].
pub trait SysContext<T> {
    /// Wraps the error as [`Error::Sys`] with `op`.
    fn sys(self, op: &'static str) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn sys(self, op: &'static str) -> Result<T> {
        self.map_err(|source| Error::Sys { op, source })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(std::io::Error::from).at(op, path)
    }
}

impl<T> SysContext<T> for rustix::io::Result<T> {
    fn sys(self, op: &'static str) -> Result<T> {
        self.map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error()))
            .sys(op)
    }
}

impl Error {
    /// A syscall failure with the current `errno`.
    pub(crate) fn last_os(op: &'static str) -> Self {
        Error::Sys {
            op,
            source: nix::errno::Errno::last(),
        }
    }
}

/// Paths of a state root. Every other module derives its paths from here.
#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// A state root at `root` (not created until needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Paths { root: root.into() }
    }
    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `overlay2/`: one directory per layer (images' and containers').
    pub fn overlay(&self) -> PathBuf {
        self.root.join("overlay2")
    }
    /// `overlay2/l/`: short links to each layer's `diff`.
    pub fn links(&self) -> PathBuf {
        self.overlay().join("l")
    }
    /// `images/`: one JSON record per image.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    /// `containers/`: one directory per container.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }
    /// `containers/<id>/`.
    pub fn container(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }
    /// `volumes/`: named volumes, `volumes/<name>/_data` (kept after `rm`).
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }
    /// `tmp/`: scratch space for imports, on the same filesystem as the store.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// The lock file serialising changes to the store.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }
}

/// Creates the store's directories if missing. Only root may look inside
/// `containers/` (logs, environment in `config.json`) and `tmp/`; the rest is
/// traversable like Docker's `/var/lib/docker`.
pub fn ensure_layout(paths: &Paths) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    for (dir, mode) in [
        (paths.root().to_path_buf(), 0o711),
        (paths.overlay(), 0o711),
        (paths.links(), 0o700),
        (paths.images(), 0o700),
        (paths.containers(), 0o700),
        (paths.tmp(), 0o700),
        (paths.volumes(), 0o711),
    ] {
        if dir.is_dir() {
            continue;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&dir)
            .at("create directory", &dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).at("chmod", &dir)?;
    }
    Ok(())
}

/// A random 64-hex-digit id (like Docker's container ids).
pub fn random_id() -> Result<String> {
    let mut buf = [0u8; 32];
    sys::getrandom(&mut buf)?;
    Ok(hex(&buf))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Seconds since the Unix epoch, as a float.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
