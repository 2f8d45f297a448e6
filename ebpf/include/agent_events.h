/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The event records that the agent's eBPF programs put into the ring buffer.
 *
 * This is the ONE definition of the wire format. agent/src/ebpf/events.rs
 * mirrors it with #[repr(C)] structs whose sizes and field offsets are checked
 * at compile time; change both together.
 *
 * Every record starts with struct agent_event_header; `kind` says which
 * record follows. Strings are NUL-terminated (or truncated at the bound);
 * argv is the process's argument block, arguments separated by NUL bytes.
 */
#ifndef AGENT_EVENTS_H
#define AGENT_EVENTS_H

#define AGENT_COMM_LEN 16
#define AGENT_FILENAME_LEN 256
#define AGENT_ARGS_LEN 512
#define AGENT_PATH_LEN 256
#define AGENT_FSTYPE_LEN 32
#define AGENT_CGROUP_NAME_LEN 64
#define AGENT_OOM_LEVELS 8

/* agent_event_header.kind */
#define AGENT_EVENT_EXEC 1
#define AGENT_EVENT_MOUNT 2
#define AGENT_EVENT_CGROUP_MKDIR 3
#define AGENT_EVENT_EXIT 4
#define AGENT_EVENT_OOM 5

/* agent_oom_event.hook: which program saw the kill */
#define AGENT_OOM_HOOK_OOM_KILL_PROCESS 1
#define AGENT_OOM_HOOK_MARK_VICTIM 2

/* agent_mount_event.op: one per traced syscall of the mount family */
#define AGENT_MOUNT_OP_MOUNT 1
#define AGENT_MOUNT_OP_UMOUNT2 2
#define AGENT_MOUNT_OP_FSOPEN 3
#define AGENT_MOUNT_OP_FSCONFIG 4
#define AGENT_MOUNT_OP_FSMOUNT 5
#define AGENT_MOUNT_OP_MOVE_MOUNT 6
#define AGENT_MOUNT_OP_OPEN_TREE 7
#define AGENT_MOUNT_OP_MOUNT_SETATTR 8

/* Indexes into the per-CPU `lost_events` counter array (records the ring buffer could not take). */
#define AGENT_LOST_EXEC 0
#define AGENT_LOST_MOUNT 1
#define AGENT_LOST_CGROUP 2
#define AGENT_LOST_EXIT 3
#define AGENT_LOST_OOM 4
#define AGENT_LOST_SLOTS 5

/* Records of the same burst wake the reader at most once per this many ms (a
 * cgroup mkdir or OOM record, or an eighth-full ring, wakes it at once). */
#define AGENT_WAKE_BATCH_MS 50

struct agent_event_header {
	__u64 ts_ns;     /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id; /* bpf_get_current_cgroup_id(): the cgroup2 (unified) id */
	__u32 kind;      /* AGENT_EVENT_* */
	__u32 pid;       /* thread id, as the host sees it */
	__u32 tgid;      /* process id, as the host sees it */
	__u32 ppid;      /* real parent's tgid */
	__u32 ns_pid;    /* thread id inside its own pid namespace */
	__u32 uid;
	__u32 gid;
	__u32 mnt_ns;    /* namespace inode numbers, as in /proc/<pid>/ns/<kind> */
	__u32 pid_ns;
	__u32 net_ns;
	__u32 uts_ns;
	__u32 _pad;
	char comm[AGENT_COMM_LEN];
};

/* From sched_process_exec: the exec has succeeded. */
struct agent_exec_event {
	struct agent_event_header hdr;
	__u32 args_len;  /* bytes of `args` that are valid */
	__u32 args_truncated; /* 1 when the argument block was longer than AGENT_ARGS_LEN */
	char filename[AGENT_FILENAME_LEN];
	char args[AGENT_ARGS_LEN];
};

/*
 * From sys_exit of the mount family: arguments (still in pt_regs) and result.
 * Which of source/target/fstype/flags are set depends on the syscall:
 *   mount(source, target, fstype, flags, data)
 *   umount2(target, flags)
 *   fsopen(fstype, flags)
 *   fsconfig(fd, cmd, key -> target, value -> source, aux -> dfd)
 *   fsmount(fd, flags, attr_flags -> attr)
 *   move_mount(from_dfd -> dfd, from_path -> source, to_dfd -> dfd2, to_path -> target, flags)
 *   open_tree(dfd, path -> source, flags)
 *   mount_setattr(dfd, path -> target, flags)
 */
struct agent_mount_event {
	struct agent_event_header hdr;
	__s64 ret;       /* syscall return value: >= 0 ok, -errno on failure */
	__u64 flags;
	__u64 attr;      /* fsmount attr_flags, fsconfig cmd */
	__s32 dfd;
	__s32 dfd2;
	__u32 op;        /* AGENT_MOUNT_OP_* */
	__u32 _pad;
	char source[AGENT_PATH_LEN];
	char target[AGENT_PATH_LEN];
	char fstype[AGENT_FSTYPE_LEN];
};

/*
 * From the cgroup_mkdir tracepoint, for the default (cgroup2) hierarchy only:
 * a new cgroup's id (its kernfs node id, what bpf_get_current_cgroup_id()
 * records for its processes) and its path relative to the cgroup2 root. It is
 * in the ring buffer before any event of a process in that cgroup, so the
 * reader learns the id even when the directory is gone by the time it reads.
 * The header describes the process that made the directory.
 */
struct agent_cgroup_mkdir_event {
	struct agent_event_header hdr;
	__u64 id;        /* cgrp->kn->id */
	char path[AGENT_PATH_LEN];
};

/*
 * From sched_process_exit, once per process: when its last thread exits
 * (signal->live has dropped to 0), not for every thread. The header describes
 * that thread; `tgid` is the process.
 */
struct agent_exit_event {
	struct agent_event_header hdr;
	__u64 start_ns;  /* the process's start: group_leader->start_boottime (CLOCK_BOOTTIME ns) */
	__u32 status;    /* as wait(2) reports it: exit code << 8, or the signal (| 0x80 with a core dump) */
	__u32 _pad;
};

/* One memory cgroup of an OOM victim's chain, at the kill. */
struct agent_oom_memcg {
	__u64 id;          /* cgrp->kn->id: the directory's inode in its hierarchy */
	__u64 usage_pages; /* page_counter usage (memory.current / memory.usage_in_bytes) */
	__u64 max_pages;   /* page_counter max (memory.max / memory.limit_in_bytes); PAGE_COUNTER_MAX: none */
	char name[AGENT_CGROUP_NAME_LEN]; /* the directory's name */
};

/*
 * An OOM kill. The header describes the victim (not the task that ran the
 * OOM killer). memcg[0] is the victim's memory cgroup, memcg[1] its parent,
 * and so on up to (not including) the root.
 *   trigger >= 0: memcg[trigger] is the cgroup whose limit was hit (exact:
 *                 oom_kill_process's oc->memcg);
 *   trigger == -1: a global (whole-machine) OOM, no cgroup's limit;
 *   trigger == -2: the hook cannot know (mark_victim): user space infers it
 *                 from usage against limit.
 */
struct agent_oom_event {
	struct agent_event_header hdr;
	__u32 hook;       /* AGENT_OOM_HOOK_* */
	__u32 levels;     /* entries of memcg[] filled */
	__s32 trigger;
	__u32 truncated;  /* 1 when the chain is deeper than AGENT_OOM_LEVELS */
	__u32 killer_tgid; /* the process that ran the OOM killer (the one that allocated) */
	__u32 _pad;
	struct agent_oom_memcg memcg[AGENT_OOM_LEVELS];
};

/*
 * The layout is pinned: agent/src/ebpf/events.rs asserts the same numbers on
 * its #[repr(C)] mirror, so a change on one side fails the build of both.
 */
_Static_assert(sizeof(struct agent_event_header) == 80, "header size");
_Static_assert(__builtin_offsetof(struct agent_event_header, kind) == 16, "kind offset");
_Static_assert(__builtin_offsetof(struct agent_event_header, mnt_ns) == 44, "mnt_ns offset");
_Static_assert(__builtin_offsetof(struct agent_event_header, comm) == 64, "comm offset");
_Static_assert(sizeof(struct agent_exec_event) == 856, "exec size");
_Static_assert(__builtin_offsetof(struct agent_exec_event, filename) == 88, "filename offset");
_Static_assert(__builtin_offsetof(struct agent_exec_event, args) == 344, "args offset");
_Static_assert(sizeof(struct agent_mount_event) == 664, "mount size");
_Static_assert(__builtin_offsetof(struct agent_mount_event, ret) == 80, "ret offset");
_Static_assert(__builtin_offsetof(struct agent_mount_event, op) == 112, "op offset");
_Static_assert(__builtin_offsetof(struct agent_mount_event, source) == 120, "source offset");
_Static_assert(__builtin_offsetof(struct agent_mount_event, target) == 376, "target offset");
_Static_assert(__builtin_offsetof(struct agent_mount_event, fstype) == 632, "fstype offset");
_Static_assert(sizeof(struct agent_cgroup_mkdir_event) == 344, "cgroup mkdir size");
_Static_assert(__builtin_offsetof(struct agent_cgroup_mkdir_event, id) == 80, "cgroup id offset");
_Static_assert(__builtin_offsetof(struct agent_cgroup_mkdir_event, path) == 88, "cgroup path offset");
_Static_assert(sizeof(struct agent_exit_event) == 96, "exit size");
_Static_assert(__builtin_offsetof(struct agent_exit_event, start_ns) == 80, "exit start offset");
_Static_assert(__builtin_offsetof(struct agent_exit_event, status) == 88, "exit status offset");
_Static_assert(sizeof(struct agent_oom_memcg) == 88, "oom memcg size");
_Static_assert(sizeof(struct agent_oom_event) == 808, "oom size");
_Static_assert(__builtin_offsetof(struct agent_oom_event, trigger) == 88, "oom trigger offset");
_Static_assert(__builtin_offsetof(struct agent_oom_event, memcg) == 104, "oom memcg offset");

#endif /* AGENT_EVENTS_H */
