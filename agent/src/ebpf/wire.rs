//! The wire format of the ring buffer: a `#[repr(C)]` mirror of
//! `ebpf/include/agent_events.h`, its constants, and compile-time asserts of
//! every size and offset (`header_mirror_tests` checks them against the header).
//!
//! The mirror is never handed out: bytes from the kernel are copied into it
//! only after their length was checked, and every field is a plain integer or
//! byte array, so any bit pattern is a valid value.

use std::mem::{offset_of, size_of};

pub const COMM_LEN: usize = 16;
pub const FILENAME_LEN: usize = 256;
pub const ARGS_LEN: usize = 512;
pub const PATH_LEN: usize = 256;
pub const FSTYPE_LEN: usize = 32;
pub const CGROUP_NAME_LEN: usize = 64;
/// Memory cgroups of an OOM victim's chain that a record holds.
pub const OOM_LEVELS: usize = 8;

pub const EVENT_EXEC: u32 = 1;
pub const EVENT_MOUNT: u32 = 2;
pub const EVENT_CGROUP_MKDIR: u32 = 3;
pub const EVENT_EXIT: u32 = 4;
pub const EVENT_OOM: u32 = 5;

/// `agent_oom_event.hook`: fentry on `oom_kill_process` (the trigger is exact).
pub const OOM_HOOK_OOM_KILL_PROCESS: u32 = 1;
/// `agent_oom_event.hook`: the `mark_victim` tracepoint (the trigger is inferred).
pub const OOM_HOOK_MARK_VICTIM: u32 = 2;

/// Index of the exec slot in the kernel's `lost_events` per-CPU array.
pub const LOST_EXEC: u32 = 0;
/// Index of the mount slot in the kernel's `lost_events` per-CPU array.
pub const LOST_MOUNT: u32 = 1;
/// Index of the cgroup-mkdir slot in the kernel's `lost_events` per-CPU array.
pub const LOST_CGROUP: u32 = 2;
/// Index of the process-exit slot in the kernel's `lost_events` per-CPU array.
pub const LOST_EXIT: u32 = 3;
/// Index of the OOM-kill slot in the kernel's `lost_events` per-CPU array.
pub const LOST_OOM: u32 = 4;
/// Number of slots in `lost_events`.
pub const LOST_SLOTS: u32 = 5;
/// Records of one burst wake the reader at most once per this many ms.
pub const WAKE_BATCH_MS: u64 = 50;

/// `agent_mount_event.op`, one per traced syscall of the mount family.
pub const MOUNT_OP_MOUNT: u32 = 1;
pub const MOUNT_OP_UMOUNT2: u32 = 2;
pub const MOUNT_OP_FSOPEN: u32 = 3;
pub const MOUNT_OP_FSCONFIG: u32 = 4;
pub const MOUNT_OP_FSMOUNT: u32 = 5;
pub const MOUNT_OP_MOVE_MOUNT: u32 = 6;
pub const MOUNT_OP_OPEN_TREE: u32 = 7;
pub const MOUNT_OP_MOUNT_SETATTR: u32 = 8;

/// `struct agent_event_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawHeader {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub kind: u32,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub ns_pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub mnt_ns: u32,
    pub pid_ns: u32,
    pub net_ns: u32,
    pub uts_ns: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// `struct agent_exec_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawExecEvent {
    pub hdr: RawHeader,
    pub args_len: u32,
    pub args_truncated: u32,
    pub filename: [u8; FILENAME_LEN],
    pub args: [u8; ARGS_LEN],
}

/// `struct agent_mount_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawMountEvent {
    pub hdr: RawHeader,
    pub ret: i64,
    pub flags: u64,
    pub attr: u64,
    pub dfd: i32,
    pub dfd2: i32,
    pub op: u32,
    pub _pad: u32,
    pub source: [u8; PATH_LEN],
    pub target: [u8; PATH_LEN],
    pub fstype: [u8; FSTYPE_LEN],
}

/// `struct agent_cgroup_mkdir_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawCgroupMkdirEvent {
    pub hdr: RawHeader,
    pub id: u64,
    pub path: [u8; PATH_LEN],
}

/// `struct agent_exit_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawExitEvent {
    pub hdr: RawHeader,
    pub start_ns: u64,
    pub status: u32,
    pub _pad: u32,
}

/// `struct agent_oom_memcg`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawOomMemcg {
    pub id: u64,
    pub usage_pages: u64,
    pub max_pages: u64,
    pub name: [u8; CGROUP_NAME_LEN],
}

/// `struct agent_oom_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawOomEvent {
    pub hdr: RawHeader,
    pub hook: u32,
    pub levels: u32,
    pub trigger: i32,
    pub truncated: u32,
    pub killer_tgid: u32,
    pub _pad: u32,
    pub memcg: [RawOomMemcg; OOM_LEVELS],
}

// The same numbers are asserted with _Static_assert in agent_events.h.
const _: () = {
    assert!(size_of::<RawHeader>() == 80);
    assert!(offset_of!(RawHeader, kind) == 16);
    assert!(offset_of!(RawHeader, mnt_ns) == 44);
    assert!(offset_of!(RawHeader, comm) == 64);
    assert!(size_of::<RawExecEvent>() == 856);
    assert!(offset_of!(RawExecEvent, filename) == 88);
    assert!(offset_of!(RawExecEvent, args) == 344);
    assert!(size_of::<RawMountEvent>() == 664);
    assert!(offset_of!(RawMountEvent, ret) == 80);
    assert!(offset_of!(RawMountEvent, op) == 112);
    assert!(offset_of!(RawMountEvent, source) == 120);
    assert!(offset_of!(RawMountEvent, target) == 376);
    assert!(offset_of!(RawMountEvent, fstype) == 632);
    assert!(size_of::<RawCgroupMkdirEvent>() == 344);
    assert!(offset_of!(RawCgroupMkdirEvent, id) == 80);
    assert!(offset_of!(RawCgroupMkdirEvent, path) == 88);
    assert!(size_of::<RawExitEvent>() == 96);
    assert!(offset_of!(RawExitEvent, start_ns) == 80);
    assert!(offset_of!(RawExitEvent, status) == 88);
    assert!(size_of::<RawOomMemcg>() == 88);
    assert!(size_of::<RawOomEvent>() == 808);
    assert!(offset_of!(RawOomEvent, trigger) == 88);
    assert!(offset_of!(RawOomEvent, memcg) == 104);
};

/// Plain-old-data records: every bit pattern of `size_of::<Self>()` bytes is a
/// valid value.
///
/// # Safety
/// Implement only for `#[repr(C)]` types made of integers and integer arrays.
pub(super) unsafe trait Pod: Copy {}
// SAFETY: all three are #[repr(C)] structs of integers and byte arrays.
unsafe impl Pod for RawHeader {}
// SAFETY: as above.
unsafe impl Pod for RawExecEvent {}
// SAFETY: as above.
unsafe impl Pod for RawMountEvent {}
// SAFETY: as above.
unsafe impl Pod for RawCgroupMkdirEvent {}
// SAFETY: as above.
unsafe impl Pod for RawExitEvent {}
// SAFETY: as above.
unsafe impl Pod for RawOomEvent {}

/// The bytes of a record, as the kernel would write them.
pub(super) fn pod_bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: T is Pod and has no padding (its fields tile it exactly: the
    // size asserts above equal the sum of the field sizes), so every byte is
    // initialised; the slice borrows `v`.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

impl RawExecEvent {
    /// The record's bytes (for tests and benchmarks of the decoder).
    pub fn as_bytes(&self) -> &[u8] {
        pod_bytes(self)
    }
}

impl RawMountEvent {
    /// The record's bytes (for tests and benchmarks of the decoder).
    pub fn as_bytes(&self) -> &[u8] {
        pod_bytes(self)
    }
}

impl RawCgroupMkdirEvent {
    /// The record's bytes (for tests of the decoder).
    pub fn as_bytes(&self) -> &[u8] {
        pod_bytes(self)
    }
}

impl RawExitEvent {
    /// The record's bytes (for tests of the decoder).
    pub fn as_bytes(&self) -> &[u8] {
        pod_bytes(self)
    }
}

impl RawOomEvent {
    /// The record's bytes (for tests of the decoder).
    pub fn as_bytes(&self) -> &[u8] {
        pod_bytes(self)
    }
}

pub(super) fn read_pod<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked above, `read_unaligned` has no alignment
    // requirement, and `T: Pod` accepts any bit pattern.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}
