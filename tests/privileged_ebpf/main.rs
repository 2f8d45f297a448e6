//! Privileged eBPF tests: load the real programs into this kernel, make real
//! namespaces, cgroups and mounts, and check what the tracer saw.
//!
//! Needs root and a kernel with BTF; otherwise each test prints why it skips.
//! Every test cleans up in `Drop` (child processes, the test cgroup, temp dirs),
//! also when an assertion fails.

use agent_test_support as common;
use common::ebpf::{
    BUSYBOX, collect, drain, sample_u64 as sample, scrape, skip, skip_reason, start,
};

use agent::container::{ContainerLabels, NoContainers, StaticLookup};
use agent::ebpf::events::MountOp;
use agent::ebpf::record::MountResult;
use agent::ebpf::{EbpfError, EventKind, EventRecord, MountHook, Tracer, TracerConfig};
use std::ffi::{CString, c_char};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::{MemoryCgroup, NsWorkload, workload_mounts};

mod control_socket;
mod mount_hooks;
mod namespace_events;
mod ring_buffer;
mod tracer_start;
mod wakeups;
mod workload;

const BOGUS_FS: &str = "agentbogusfs";

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}
