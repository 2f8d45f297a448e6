//! The ring-buffer records decoded into owned, typed events, once their length
//! and `kind` were checked against the wire format of [`super::wire`].

use super::wire::read_pod;
use serde::{Deserialize, Serialize};

// The raw records and their constants are part of this module's API: the fuzz
// target and the exec bench build records from them to feed the decoder.
pub use super::wire::*;

/// Why a record from the ring buffer was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is too short for a {what}")]
    TooShort { what: &'static str, len: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("unknown mount operation {0}")]
    UnknownMountOp(u32),
    #[error("unknown OOM hook {0}")]
    UnknownOomHook(u32),
}

/// Which traced syscall of the mount family a mount event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountOp {
    Mount,
    Umount2,
    Fsopen,
    Fsconfig,
    Fsmount,
    MoveMount,
    OpenTree,
    MountSetattr,
}

impl MountOp {
    pub(super) fn from_wire(op: u32) -> Option<Self> {
        Some(match op {
            MOUNT_OP_MOUNT => MountOp::Mount,
            MOUNT_OP_UMOUNT2 => MountOp::Umount2,
            MOUNT_OP_FSOPEN => MountOp::Fsopen,
            MOUNT_OP_FSCONFIG => MountOp::Fsconfig,
            MOUNT_OP_FSMOUNT => MountOp::Fsmount,
            MOUNT_OP_MOVE_MOUNT => MountOp::MoveMount,
            MOUNT_OP_OPEN_TREE => MountOp::OpenTree,
            MOUNT_OP_MOUNT_SETATTR => MountOp::MountSetattr,
            _ => return None,
        })
    }

    /// The syscall's name, used as the `operation` label.
    pub fn as_str(self) -> &'static str {
        match self {
            MountOp::Mount => "mount",
            MountOp::Umount2 => "umount2",
            MountOp::Fsopen => "fsopen",
            MountOp::Fsconfig => "fsconfig",
            MountOp::Fsmount => "fsmount",
            MountOp::MoveMount => "move_mount",
            MountOp::OpenTree => "open_tree",
            MountOp::MountSetattr => "mount_setattr",
        }
    }
}

/// The process that caused an event, as the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Nanoseconds since boot (CLOCK_BOOTTIME).
    pub boot_ns: u64,
    /// Thread id, as seen from the host.
    pub pid: u32,
    /// Process id, as seen from the host.
    pub tgid: u32,
    pub ppid: u32,
    /// Thread id inside its own pid namespace.
    pub ns_pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// cgroup2 id (on a v1 hybrid host: of the nearly empty unified hierarchy).
    pub cgroup_id: u64,
    pub mnt_ns: u32,
    pub pid_ns: u32,
    pub net_ns: u32,
    pub uts_ns: u32,
}

/// A successful exec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecInfo {
    pub filename: String,
    pub argv: Vec<String>,
    /// The argument block was longer than the kernel side copies.
    pub argv_truncated: bool,
}

/// One syscall of the mount family, with its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    pub operation: MountOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    pub flags: u64,
    /// fsmount's attr_flags, fsconfig's cmd; 0 otherwise.
    pub attr: u64,
    pub dfd: i32,
    pub dfd2: i32,
    /// The syscall's return value: ≥ 0 on success, `-errno` on failure.
    pub ret: i64,
}

impl MountInfo {
    pub fn ok(&self) -> bool {
        self.ret >= 0
    }
}

/// A process exit: its wait status and when it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// When the process started (its thread-group leader), CLOCK_BOOTTIME ns.
    pub start_boot_ns: u64,
    /// The status as wait(2) reports it.
    pub status: u32,
}

/// How a process ended, the `outcome` label of `agent_process_exits_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitOutcome {
    /// Exit code 0.
    Ok,
    /// A non-zero exit code.
    Error,
    /// Killed by a signal.
    Signal,
}

impl ExitOutcome {
    pub const ALL: [ExitOutcome; 3] = [ExitOutcome::Ok, ExitOutcome::Error, ExitOutcome::Signal];

    pub fn as_str(self) -> &'static str {
        match self {
            ExitOutcome::Ok => "ok",
            ExitOutcome::Error => "error",
            ExitOutcome::Signal => "signal",
        }
    }
}

impl ExitInfo {
    /// The signal that killed the process, if one did.
    pub fn signal(&self) -> Option<i32> {
        let sig = (self.status & 0x7f) as i32;
        (sig != 0).then_some(sig)
    }

    /// The exit code, when the process exited rather than being killed.
    pub fn code(&self) -> Option<i32> {
        self.signal()
            .is_none()
            .then_some(((self.status >> 8) & 0xff) as i32)
    }

    /// Whether the kernel dumped core when the signal killed it.
    pub fn core_dumped(&self) -> bool {
        self.signal().is_some() && self.status & 0x80 != 0
    }

    pub fn outcome(&self) -> ExitOutcome {
        match (self.signal(), self.code()) {
            (Some(_), _) => ExitOutcome::Signal,
            (None, Some(0)) => ExitOutcome::Ok,
            _ => ExitOutcome::Error,
        }
    }
}

pub use super::oom::{OOM_TRIGGER_SLACK_BYTES, OomHook, OomInfo, OomMemcg, OomTrigger};

/// A new directory in the cgroup2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupMkdir {
    /// Its id (kernfs node id = directory inode), as `bpf_get_current_cgroup_id()`
    /// records it for the processes in it.
    pub id: u64,
    /// Its path relative to the cgroup2 root, e.g. `/agent/web`.
    pub path: String,
}

/// A decoded exec, mount or exit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Exec(ProcessInfo, ExecInfo),
    Mount(ProcessInfo, MountInfo),
    Exit(ProcessInfo, ExitInfo),
    /// The process is the victim.
    Oom(ProcessInfo, OomInfo),
}

impl Event {
    pub fn process(&self) -> &ProcessInfo {
        match self {
            Event::Exec(p, _) | Event::Mount(p, _) | Event::Exit(p, _) | Event::Oom(p, _) => p,
        }
    }
}

/// A decoded ring-buffer record: an event of a process, or a cgroup2
/// directory that the reader should learn before the events that follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Event(Event),
    CgroupMkdir(ProcessInfo, CgroupMkdir),
}

/// Decodes one ring-buffer record of any kind.
pub fn decode_record(bytes: &[u8]) -> Result<Record, DecodeError> {
    let hdr: RawHeader = read_pod(bytes).ok_or(DecodeError::TooShort {
        what: "header",
        len: bytes.len(),
    })?;
    if hdr.kind != EVENT_CGROUP_MKDIR {
        return decode(bytes).map(Record::Event);
    }
    let raw: RawCgroupMkdirEvent = read_pod(bytes).ok_or(DecodeError::TooShort {
        what: "cgroup mkdir record",
        len: bytes.len(),
    })?;
    Ok(Record::CgroupMkdir(
        process(&raw.hdr),
        CgroupMkdir {
            id: raw.id,
            path: c_string(&raw.path),
        },
    ))
}

/// Decodes one exec, mount or exit record (a cgroup mkdir record is
/// [`DecodeError::UnknownKind`] here: see [`decode_record`]).
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let hdr: RawHeader = read_pod(bytes).ok_or(DecodeError::TooShort {
        what: "header",
        len: bytes.len(),
    })?;
    match hdr.kind {
        EVENT_EXEC => {
            let raw: RawExecEvent = read_pod(bytes).ok_or(DecodeError::TooShort {
                what: "exec record",
                len: bytes.len(),
            })?;
            let len = (raw.args_len as usize).min(ARGS_LEN);
            Ok(Event::Exec(
                process(&raw.hdr),
                ExecInfo {
                    filename: c_string(&raw.filename),
                    argv: split_args(&raw.args[..len]),
                    argv_truncated: raw.args_truncated != 0,
                },
            ))
        }
        EVENT_MOUNT => {
            let raw: RawMountEvent = read_pod(bytes).ok_or(DecodeError::TooShort {
                what: "mount record",
                len: bytes.len(),
            })?;
            let operation =
                MountOp::from_wire(raw.op).ok_or(DecodeError::UnknownMountOp(raw.op))?;
            Ok(Event::Mount(
                process(&raw.hdr),
                MountInfo {
                    operation,
                    source: non_empty(c_string(&raw.source)),
                    target: non_empty(c_string(&raw.target)),
                    fstype: non_empty(c_string(&raw.fstype)),
                    flags: raw.flags,
                    attr: raw.attr,
                    dfd: raw.dfd,
                    dfd2: raw.dfd2,
                    ret: raw.ret,
                },
            ))
        }
        EVENT_EXIT => {
            let raw: RawExitEvent = read_pod(bytes).ok_or(DecodeError::TooShort {
                what: "exit record",
                len: bytes.len(),
            })?;
            Ok(Event::Exit(
                process(&raw.hdr),
                ExitInfo {
                    start_boot_ns: raw.start_ns,
                    status: raw.status,
                },
            ))
        }
        EVENT_OOM => {
            let raw: RawOomEvent = read_pod(bytes).ok_or(DecodeError::TooShort {
                what: "OOM record",
                len: bytes.len(),
            })?;
            let (process, info) = super::oom::decode(&raw, process)?;
            Ok(Event::Oom(process, info))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

fn process(h: &RawHeader) -> ProcessInfo {
    ProcessInfo {
        boot_ns: h.ts_ns,
        pid: h.pid,
        tgid: h.tgid,
        ppid: h.ppid,
        ns_pid: h.ns_pid,
        uid: h.uid,
        gid: h.gid,
        comm: c_string(&h.comm),
        cgroup_id: h.cgroup_id,
        mnt_ns: h.mnt_ns,
        pid_ns: h.pid_ns,
        net_ns: h.net_ns,
        uts_ns: h.uts_ns,
    }
}

/// The bytes up to the first NUL (or all of them), lossily as UTF-8.
pub(super) fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Splits a NUL-separated argument block; a trailing NUL ends the last one.
fn split_args(block: &[u8]) -> Vec<String> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return Vec::new();
    }
    block
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::wire::{Pod, pod_bytes};
    use super::*;
    use std::mem::offset_of;

    fn as_bytes<T: Pod>(v: &T) -> Vec<u8> {
        pod_bytes(v).to_vec()
    }

    fn header(kind: u32) -> RawHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"true");
        RawHeader {
            ts_ns: 5,
            cgroup_id: 7,
            kind,
            pid: 100,
            tgid: 100,
            ppid: 99,
            ns_pid: 1,
            uid: 0,
            gid: 0,
            mnt_ns: 4026532000,
            pid_ns: 4026532001,
            net_ns: 4026531840,
            uts_ns: 4026531838,
            _pad: 0,
            comm,
        }
    }

    #[test]
    fn decodes_exec_with_argv() {
        let mut raw = RawExecEvent {
            hdr: header(EVENT_EXEC),
            args_len: 0,
            args_truncated: 0,
            filename: [0; FILENAME_LEN],
            args: [0xAA; ARGS_LEN],
        };
        raw.filename[..12].copy_from_slice(b"/bin/busybox");
        let block = b"busybox\0true\0";
        raw.args[..block.len()].copy_from_slice(block);
        raw.args_len = block.len() as u32;
        let Event::Exec(p, e) = decode(&as_bytes(&raw)).unwrap() else {
            panic!("not an exec");
        };
        assert_eq!(p.comm, "true");
        assert_eq!(p.mnt_ns, 4026532000);
        assert_eq!(e.filename, "/bin/busybox");
        assert_eq!(e.argv, ["busybox", "true"]);
        assert!(!e.argv_truncated);
    }

    #[test]
    fn decodes_failed_mount() {
        let mut raw = RawMountEvent {
            hdr: header(EVENT_MOUNT),
            ret: -19,
            flags: 0,
            attr: 0,
            dfd: 0,
            dfd2: 0,
            op: 1,
            _pad: 0,
            source: [0; PATH_LEN],
            target: [0; PATH_LEN],
            fstype: [0; FSTYPE_LEN],
        };
        raw.source[..4].copy_from_slice(b"none");
        raw.target[..4].copy_from_slice(b"/mnt");
        raw.fstype[..5].copy_from_slice(b"bogus");
        let Event::Mount(_, m) = decode(&as_bytes(&raw)).unwrap() else {
            panic!("not a mount");
        };
        assert_eq!(m.operation, MountOp::Mount);
        assert_eq!(m.fstype.as_deref(), Some("bogus"));
        assert_eq!(m.target.as_deref(), Some("/mnt"));
        assert!(!m.ok());
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(matches!(
            decode(&[0; 10]),
            Err(DecodeError::TooShort { .. })
        ));
        let exec_hdr_only = as_bytes(&header(EVENT_EXEC));
        assert!(matches!(
            decode(&exec_hdr_only),
            Err(DecodeError::TooShort { .. })
        ));
        assert_eq!(
            decode(&as_bytes(&header(9))),
            Err(DecodeError::UnknownKind(9))
        );
        let mut raw = as_bytes(&RawMountEvent {
            hdr: header(EVENT_MOUNT),
            ret: 0,
            flags: 0,
            attr: 0,
            dfd: 0,
            dfd2: 0,
            op: 0,
            _pad: 0,
            source: [0; PATH_LEN],
            target: [0; PATH_LEN],
            fstype: [0; FSTYPE_LEN],
        });
        assert_eq!(decode(&raw), Err(DecodeError::UnknownMountOp(0)));
        raw[offset_of!(RawMountEvent, op)] = 42;
        assert_eq!(decode(&raw), Err(DecodeError::UnknownMountOp(42)));
    }

    #[test]
    fn decodes_cgroup_mkdir() {
        let mut raw = RawCgroupMkdirEvent {
            hdr: header(EVENT_CGROUP_MKDIR),
            id: 12345,
            path: [0xAA; PATH_LEN],
        };
        raw.path[..11].copy_from_slice(b"/agent/web\0");
        let bytes = as_bytes(&raw);
        let Record::CgroupMkdir(p, m) = decode_record(&bytes).unwrap() else {
            panic!("not a cgroup mkdir");
        };
        assert_eq!(p.comm, "true");
        assert_eq!(
            m,
            CgroupMkdir {
                id: 12345,
                path: "/agent/web".into()
            }
        );
        // Not an exec or mount event.
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::UnknownKind(EVENT_CGROUP_MKDIR))
        );
        // Truncated, or without a NUL: bounded.
        assert!(matches!(
            decode_record(&bytes[..100]),
            Err(DecodeError::TooShort { .. })
        ));
        raw.path = [b'a'; PATH_LEN];
        let Record::CgroupMkdir(_, m) = decode_record(&as_bytes(&raw)).unwrap() else {
            panic!("not a cgroup mkdir");
        };
        assert_eq!(m.path.len(), PATH_LEN);
        // Other kinds go through decode.
        let Record::Event(Event::Mount(..)) = decode_record(&as_bytes(&RawMountEvent {
            hdr: header(EVENT_MOUNT),
            ret: 0,
            flags: 0,
            attr: 0,
            dfd: 0,
            dfd2: 0,
            op: 1,
            _pad: 0,
            source: [0; PATH_LEN],
            target: [0; PATH_LEN],
            fstype: [0; FSTYPE_LEN],
        }))
        .unwrap() else {
            panic!("not a mount");
        };
    }

    #[test]
    fn decodes_exits_by_outcome() {
        let exit = |status| {
            let raw = RawExitEvent {
                hdr: header(EVENT_EXIT),
                start_ns: 3,
                status,
                _pad: 0,
            };
            let Event::Exit(p, e) = decode(raw.as_bytes()).unwrap() else {
                panic!("not an exit");
            };
            assert_eq!((p.tgid, e.start_boot_ns), (100, 3));
            e
        };
        let ok = exit(0);
        assert_eq!(
            (ok.outcome(), ok.code(), ok.signal()),
            (ExitOutcome::Ok, Some(0), None)
        );
        let err = exit(3 << 8);
        assert_eq!((err.outcome(), err.code()), (ExitOutcome::Error, Some(3)));
        let killed = exit(9);
        assert_eq!(
            (
                killed.outcome(),
                killed.signal(),
                killed.code(),
                killed.core_dumped()
            ),
            (ExitOutcome::Signal, Some(9), None, false)
        );
        let core = exit(0x80 | 11);
        assert_eq!((core.signal(), core.core_dumped()), (Some(11), true));
        assert!(matches!(
            decode(&as_bytes(&header(EVENT_EXIT))),
            Err(DecodeError::TooShort { .. })
        ));
    }

    #[test]
    fn splits_argument_blocks() {
        assert!(split_args(b"").is_empty());
        assert_eq!(split_args(b"a\0\0b\0"), ["a", "", "b"]);
        assert_eq!(split_args(b"trunc"), ["trunc"]);
    }
}
