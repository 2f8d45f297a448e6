//! The Rust mirror of `ebpf/include/agent_events.h` checked against the header
//! itself: every constant, and every field offset and size as the host C
//! compiler lays the structs out.

use super::events::MountOp;
use super::wire::*;

const HEADER: &str = include_str!("../../../ebpf/include/agent_events.h");

/// Every `#define AGENT_*` of the C header has its Rust twin with the same
/// value (a constant added on one side only fails here), and every mount
/// operation decodes to the syscall it is named after.
#[test]
fn every_header_constant_has_its_rust_twin() {
    let rust: &[(&str, u64)] = &[
        ("AGENT_COMM_LEN", COMM_LEN as u64),
        ("AGENT_FILENAME_LEN", FILENAME_LEN as u64),
        ("AGENT_ARGS_LEN", ARGS_LEN as u64),
        ("AGENT_PATH_LEN", PATH_LEN as u64),
        ("AGENT_FSTYPE_LEN", FSTYPE_LEN as u64),
        ("AGENT_CGROUP_NAME_LEN", CGROUP_NAME_LEN as u64),
        ("AGENT_OOM_LEVELS", OOM_LEVELS as u64),
        ("AGENT_EVENT_EXEC", EVENT_EXEC.into()),
        ("AGENT_EVENT_MOUNT", EVENT_MOUNT.into()),
        ("AGENT_EVENT_CGROUP_MKDIR", EVENT_CGROUP_MKDIR.into()),
        ("AGENT_EVENT_EXIT", EVENT_EXIT.into()),
        ("AGENT_EVENT_OOM", EVENT_OOM.into()),
        (
            "AGENT_OOM_HOOK_OOM_KILL_PROCESS",
            OOM_HOOK_OOM_KILL_PROCESS.into(),
        ),
        ("AGENT_OOM_HOOK_MARK_VICTIM", OOM_HOOK_MARK_VICTIM.into()),
        ("AGENT_MOUNT_OP_MOUNT", MOUNT_OP_MOUNT.into()),
        ("AGENT_MOUNT_OP_UMOUNT2", MOUNT_OP_UMOUNT2.into()),
        ("AGENT_MOUNT_OP_FSOPEN", MOUNT_OP_FSOPEN.into()),
        ("AGENT_MOUNT_OP_FSCONFIG", MOUNT_OP_FSCONFIG.into()),
        ("AGENT_MOUNT_OP_FSMOUNT", MOUNT_OP_FSMOUNT.into()),
        ("AGENT_MOUNT_OP_MOVE_MOUNT", MOUNT_OP_MOVE_MOUNT.into()),
        ("AGENT_MOUNT_OP_OPEN_TREE", MOUNT_OP_OPEN_TREE.into()),
        (
            "AGENT_MOUNT_OP_MOUNT_SETATTR",
            MOUNT_OP_MOUNT_SETATTR.into(),
        ),
        ("AGENT_LOST_EXEC", LOST_EXEC.into()),
        ("AGENT_LOST_MOUNT", LOST_MOUNT.into()),
        ("AGENT_LOST_CGROUP", LOST_CGROUP.into()),
        ("AGENT_LOST_EXIT", LOST_EXIT.into()),
        ("AGENT_LOST_OOM", LOST_OOM.into()),
        ("AGENT_LOST_SLOTS", LOST_SLOTS.into()),
        ("AGENT_WAKE_BATCH_MS", WAKE_BATCH_MS),
    ];
    let defines: Vec<(&str, u64)> = HEADER
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("#define ")?.split_whitespace();
            let name = w.next()?;
            Some((name, w.next()?.parse().ok()?))
        })
        .collect();
    assert_eq!(defines.len(), rust.len(), "header defines: {defines:?}");
    for (name, value) in &defines {
        let twin = rust.iter().find(|(n, _)| n == name);
        assert_eq!(twin.map(|t| t.1), Some(*value), "{name}");
        if let Some(op) = name.strip_prefix("AGENT_MOUNT_OP_") {
            let decoded = MountOp::from_wire(*value as u32).map(|m| m.as_str().to_uppercase());
            assert_eq!(decoded.as_deref(), Some(op), "{name}");
        }
    }
    assert_eq!(MountOp::from_wire(0), None);
    assert_eq!(MountOp::from_wire(MOUNT_OP_MOUNT_SETATTR + 1), None);
}

/// Every field offset and struct size of the C header, as the host C
/// compiler lays it out, equals the Rust mirror's.
#[test]
fn every_field_offset_matches_the_c_header() {
    use std::mem::{offset_of, size_of};
    macro_rules! fields {
        ($c:literal, $t:ty, [$($f:ident),*]) => {
            vec![
                (format!("{} sizeof", $c), size_of::<$t>()),
                $((format!("{} {}", $c, stringify!($f)), offset_of!($t, $f)),)*
            ]
        };
    }
    let mut want = fields!(
        "agent_event_header",
        RawHeader,
        [
            ts_ns, cgroup_id, kind, pid, tgid, ppid, ns_pid, uid, gid, mnt_ns, pid_ns, net_ns,
            uts_ns, _pad, comm
        ]
    );
    want.extend(fields!(
        "agent_exec_event",
        RawExecEvent,
        [hdr, args_len, args_truncated, filename, args]
    ));
    want.extend(fields!(
        "agent_mount_event",
        RawMountEvent,
        [
            hdr, ret, flags, attr, dfd, dfd2, op, _pad, source, target, fstype
        ]
    ));
    want.extend(fields!(
        "agent_cgroup_mkdir_event",
        RawCgroupMkdirEvent,
        [hdr, id, path]
    ));
    want.extend(fields!(
        "agent_exit_event",
        RawExitEvent,
        [hdr, start_ns, status, _pad]
    ));
    want.extend(fields!(
        "agent_oom_memcg",
        RawOomMemcg,
        [id, usage_pages, max_pages, name]
    ));
    want.extend(fields!(
        "agent_oom_event",
        RawOomEvent,
        [
            hdr,
            hook,
            levels,
            trigger,
            truncated,
            killer_tgid,
            _pad,
            memcg
        ]
    ));

    let dir = tempfile::tempdir().unwrap();
    let header = dir.path().join("agent_events.h");
    std::fs::write(&header, HEADER).unwrap();
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include \"agent_events.h\"\nint main(void) {\n",
    );
    for (key, _) in &want {
        let (st, field) = key.split_once(' ').unwrap();
        let expr = if field == "sizeof" {
            format!("sizeof(struct {st})")
        } else {
            format!("offsetof(struct {st}, {field})")
        };
        c.push_str(&format!("printf(\"{key} %zu\\n\", {expr});\n"));
    }
    c.push_str("return 0; }\n");
    let src = dir.path().join("layout.c");
    std::fs::write(&src, c).unwrap();
    let bin = dir.path().join("layout");
    let cc = std::process::Command::new("cc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status();
    let Ok(status) = cc else {
        eprintln!("SKIPPED every_field_offset_matches_the_c_header: no C compiler (cc)");
        return;
    };
    assert!(status.success(), "cc failed on the header");
    let out = std::process::Command::new(&bin).output().unwrap();
    let got: Vec<(String, usize)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(got, want);
}
