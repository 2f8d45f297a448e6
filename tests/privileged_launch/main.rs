//! Privileged tests of `agent launch` and the lifecycle commands: real namespaces,
//! overlay mounts and cgroups, run as root against the built `agent` binary, each in
//! its own temporary state dir with a busybox OCI image built here from
//! `/bin/busybox`. Every test cleans up in `Drop` (see `launch_support`), also when it
//! fails. Without root or overlayfs the tests print why and skip.

use agent_test_support::launch as support;
use agent_test_support::require_privileges;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{Env, agent_cgroups};

mod bad_input;
mod images;
mod isolation;
mod lifecycle;
mod limits;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}
