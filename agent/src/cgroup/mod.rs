//! The cgroup layer: detect the hierarchy, discover container cgroups, read their
//! accounting files.

pub mod discovery;
pub mod groups;
pub mod hierarchy;
pub mod manager;
pub mod namespace;
pub mod parse;
pub mod stats;
pub mod watch;

pub use discovery::{Discovered, Filter, Runtime};
pub use groups::{MetricGroup, MetricGroups};
pub use hierarchy::{Controller, HeldMount, Hierarchy, V1Mount, Version};
pub use manager::{AGENT_SUBTREE, CgroupInfo, ContainerCgroup, Limits, SelfPlacement};
pub use namespace::{NsView, cgroup_path_from_proc};
pub use stats::{CgroupStats, DeviceIo, IoOp, StatsError, StatsReader};

use std::path::{Path, PathBuf};

/// What went wrong while following cgroups: the `kind` label of
/// `agent_scrape_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScrapeErrorKind {
    /// The tree walk failed.
    Discovery,
    /// A stats file held something unparsable.
    Parse,
    /// A stats file could not be read.
    Read,
    /// A cgroup vanished between discovery and reading (skipped, not failed).
    Vanished,
    /// A cgroup whose name is not UTF-8, so it cannot be a label: not followed.
    NonUtf8Name,
}

impl ScrapeErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ScrapeErrorKind; 5] = [
        ScrapeErrorKind::Discovery,
        ScrapeErrorKind::NonUtf8Name,
        ScrapeErrorKind::Parse,
        ScrapeErrorKind::Read,
        ScrapeErrorKind::Vanished,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ScrapeErrorKind::Discovery => "discovery",
            ScrapeErrorKind::Parse => "parse",
            ScrapeErrorKind::Read => "read",
            ScrapeErrorKind::Vanished => "vanished",
            ScrapeErrorKind::NonUtf8Name => "non_utf8_name",
        }
    }
}

/// Errors of the cgroup layer that are not per-file stats errors.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{0} is not a cgroup mount (no cgroup.controllers, no v1 controller directories)")]
    NotCgroupRoot(PathBuf),
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad cgroup pattern {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("cannot apply {option}: {} is missing (controller not enabled)", path.display())]
    MissingControllerFile { option: &'static str, path: PathBuf },
    #[error("cannot apply the {0} limit: no {0} cgroup hierarchy is mounted")]
    NoHierarchy(&'static str),
}

/// Names the operation and path of a failed I/O call as a [`CgroupError::Io`].
pub(crate) fn io_error(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}
