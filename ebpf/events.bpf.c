// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Exec and mount-family events for the agent.
 *
 *   tp_btf/sched_process_exec   exec (preferred: BTF-typed, cheapest)
 *   raw_tp/sched_process_exec   exec fallback
 *   fexit/__x64_sys_<mount family>  the mount family (preferred: only those syscalls pay)
 *   tp_btf/sys_exit             the mount family where fexit is refused (every syscall pays)
 *   raw_tp/sys_exit             the mount family fallback (probe-reads pt_regs)
 *   tp_btf/cgroup_mkdir         new cgroup2 directories: id and path (optional)
 *   raw_tp/cgroup_mkdir         the same, fallback
 *   tp_btf/sched_process_exit   process exits: status and start time (optional)
 *   raw_tp/sched_process_exit   the same, fallback
 *   fentry/oom_kill_process     OOM kills: victim and the memcg whose limit was hit (exact)
 *   tp_btf/mark_victim          OOM kills, fallback: victim and its memcg chain (6.8+ prototype)
 *
 * The mount family is taken at sys_exit alone: on x86_64 the argument
 * registers in pt_regs are intact at exit, so arguments and result come in
 * one record from one hook. A sys_enter + sys_exit pair costs every syscall
 * of every process twice (measured: ~140 ns on getppid against ~70 ns), and
 * copying the strings at entry is no safer (the kernel copies them later
 * still). The fast path (not a mount syscall) is one load and a comparison.
 *
 * A record wakes the reader only when it is the first since the reader's last
 * drain and the last wake-up is AGENT_WAKE_BATCH_MS old, or when the ring
 * buffer is an eighth full; the reader drains again at the end of that window,
 * so a burst is drained in batches. One wake-up per exec would cost more than
 * the exec hook itself, and a reader on a timer costs an idle host twenty
 * wake-ups a second. cgroup mkdir and OOM records always wake it: a short-lived
 * container's metadata must be read while its files are still there, and that
 * must not wait for a batch.
 *
 * Arguments are taken BPF_PROG-style (ctx as an array of u64) rather than
 * through ctx->args[i]: aya 0.14 cannot relocate bpf_raw_tracepoint_args.
 * Kernel structures are read with CO-RE (BPF_CORE_READ) against the minimal
 * types below, which works for both tp_btf and raw_tp.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "agent_events.h"

char LICENSE[] SEC("license") = "GPL";

/* ---- Minimal CO-RE kernel types: only the fields read here. ---- */
#define __pai __attribute__((preserve_access_index))

struct ns_common {
	unsigned int inum;
} __pai;
struct mnt_namespace {
	struct ns_common ns;
} __pai;
struct pid_namespace {
	struct ns_common ns;
} __pai;
struct net {
	struct ns_common ns;
} __pai;
struct uts_namespace {
	struct ns_common ns;
} __pai;
struct nsproxy {
	struct uts_namespace *uts_ns;
	struct mnt_namespace *mnt_ns;
	struct net *net_ns;
} __pai;
struct upid {
	int nr;
	struct pid_namespace *ns;
} __pai;
struct pid {
	unsigned int level;
	struct upid numbers[1];
} __pai;
struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
} __pai;
struct signal_struct {
	struct {
		int counter;
	} live;
} __pai;
struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	__u64 start_boottime;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct signal_struct *signal;
	struct css_set *cgroups;
	const struct cred *cred;
	char comm[16];
	struct nsproxy *nsproxy;
	struct mm_struct *mm;
	struct pid *thread_pid;
} __pai;
struct linux_binprm {
	const char *filename;
} __pai;
struct kernfs_node {
	__u64 id;
	const char *name;
} __pai;
struct cgroup_root {
	int hierarchy_id;
} __pai;
struct cgroup {
	struct kernfs_node *kn;
	struct cgroup_root *root;
} __pai;
struct cgroup_subsys_state {
	struct cgroup *cgroup;
	struct cgroup_subsys_state *parent;
} __pai;
struct css_set {
	struct cgroup_subsys_state *subsys[12];
	struct cgroup *dfl_cgrp;
} __pai;
struct page_counter {
	struct {
		long counter;
	} usage;
	unsigned long max;
} __pai;
struct mem_cgroup {
	struct page_counter memory;
} __pai;
struct oom_control {
	struct mem_cgroup *memcg;
	struct task_struct *chosen;
} __pai;
struct cred {
	struct {
		unsigned int val;
	} uid;
	struct {
		unsigned int val;
	} gid;
} __pai;
enum cgroup_subsys_id {
	memory_cgrp_id = 4,
};
struct pt_regs {
	unsigned long di;
	unsigned long si;
	unsigned long dx;
	unsigned long r10;
	unsigned long r8;
	unsigned long orig_ax;
} __pai;

/* ---- Maps ---- */

/* Size is overridden by the loader (EbpfLoader::map_max_entries). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* Records that did not fit in the ring buffer, per AGENT_LOST_* slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AGENT_LOST_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} lost_events SEC(".maps");

/* When a record last woke the reader, and its consumer position (plus one) then. */
struct agent_wake {
	__u64 cons;
	__u64 at_ns;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct agent_wake);
} woken_at SEC(".maps");

/* ---- Helpers ---- */

/* Wake the reader when the ring is an eighth full, or when it has consumed
 * since the last wake-up (it went back to waiting) and that wake-up is at least
 * AGENT_WAKE_BATCH_MS old: the first record after a drain wakes it, the rest of
 * a burst does not, and a busy host wakes it at most once per window (the
 * reader drains at the end of each window for what came meanwhile). An idle
 * host so costs the reader no timer. */
static __always_inline __u64 wakeup_flags(void)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	if (avail >= size / 8)
		return BPF_RB_FORCE_WAKEUP;
	__u64 cons = bpf_ringbuf_query(&events, BPF_RB_CONS_POS) + 1;
	__u32 key = 0;
	struct agent_wake *woken = bpf_map_lookup_elem(&woken_at, &key);
	if (!woken || woken->cons == cons)
		return BPF_RB_NO_WAKEUP;
	__u64 now = bpf_ktime_get_ns();
	if (now - woken->at_ns < AGENT_WAKE_BATCH_MS * 1000000ULL)
		return BPF_RB_NO_WAKEUP;
	woken->cons = cons;
	woken->at_ns = now;
	return BPF_RB_FORCE_WAKEUP;
}

static __always_inline void count_lost(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&lost_events, &slot);
	if (n)
		*n += 1;
}

/* The task's own pid namespace is the one at its struct pid's level
 * (nsproxy->pid_ns_for_children is where its *children* go). */
static __always_inline void fill_ns_pid(struct agent_event_header *h, struct task_struct *task)
{
	struct pid *tp = BPF_CORE_READ(task, thread_pid);
	unsigned int level = BPF_CORE_READ(tp, level);
	struct upid up = {};
	if (tp && level < 64) {
		void *at = (void *)tp + bpf_core_field_offset(struct pid, numbers) +
			   (__u64)level * sizeof(struct upid);
		bpf_probe_read_kernel(&up, sizeof(up), at);
	}
	h->ns_pid = up.nr;
	h->pid_ns = up.ns ? BPF_CORE_READ(up.ns, ns.inum) : 0;
}

static __always_inline void fill_header(struct agent_event_header *h, __u32 kind)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	h->ts_ns = bpf_ktime_get_boot_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->kind = kind;
	h->pid = (__u32)pid_tgid;
	h->tgid = pid_tgid >> 32;
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->uid = (__u32)uid_gid;
	h->gid = uid_gid >> 32;
	h->mnt_ns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	h->net_ns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	h->uts_ns = BPF_CORE_READ(task, nsproxy, uts_ns, ns.inum);
	h->_pad = 0;
	fill_ns_pid(h, task);
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* The same header for another task than the current one (an OOM victim). */
static __always_inline void fill_task_header(struct agent_event_header *h, __u32 kind,
					     struct task_struct *task)
{
	h->ts_ns = bpf_ktime_get_boot_ns();
	h->cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	h->kind = kind;
	h->pid = BPF_CORE_READ(task, pid);
	h->tgid = BPF_CORE_READ(task, tgid);
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->uid = BPF_CORE_READ(task, cred, uid.val);
	h->gid = BPF_CORE_READ(task, cred, gid.val);
	h->mnt_ns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	h->net_ns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	h->uts_ns = BPF_CORE_READ(task, nsproxy, uts_ns, ns.inum);
	h->_pad = 0;
	fill_ns_pid(h, task);
	BPF_CORE_READ_STR_INTO(&h->comm, task, comm);
}

/* ---- exec ---- */

static __always_inline int handle_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	struct agent_exec_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(AGENT_LOST_EXEC);
		return 0;
	}
	fill_header(&e->hdr, AGENT_EVENT_EXEC);

	const char *filename = BPF_CORE_READ(bprm, filename);
	if (bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename) < 0)
		e->filename[0] = 0;

	/* The new image's argument block is in place when sched_process_exec fires. */
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start);
	unsigned long end = BPF_CORE_READ(mm, arg_end);
	__u64 len = end > start ? end - start : 0;
	e->args_truncated = len > AGENT_ARGS_LEN;
	if (len > AGENT_ARGS_LEN)
		len = AGENT_ARGS_LEN;
	if (bpf_probe_read_user(e->args, len, (const void *)start) != 0)
		len = 0;
	e->args_len = len;

	bpf_ringbuf_submit(e, wakeup_flags());
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_btf, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	return handle_exec(p, bprm);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(exec_raw, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	return handle_exec(p, bprm);
}

/* ---- the mount family ---- */

#if !defined(__TARGET_ARCH_x86)
#error "only x86_64 is supported: syscall numbers and pt_regs below are x86_64's"
#endif
#define NR_mount 165
#define NR_umount2 166
/* The new mount API has the same numbers on every architecture. */
#define NR_open_tree 428
#define NR_move_mount 429
#define NR_fsopen 430
#define NR_fsconfig 431
#define NR_fsmount 432
#define NR_mount_setattr 442

static __always_inline __u32 mount_op(long id)
{
	switch (id) {
	case NR_mount:
		return AGENT_MOUNT_OP_MOUNT;
	case NR_umount2:
		return AGENT_MOUNT_OP_UMOUNT2;
	case NR_fsopen:
		return AGENT_MOUNT_OP_FSOPEN;
	case NR_fsconfig:
		return AGENT_MOUNT_OP_FSCONFIG;
	case NR_fsmount:
		return AGENT_MOUNT_OP_FSMOUNT;
	case NR_move_mount:
		return AGENT_MOUNT_OP_MOVE_MOUNT;
	case NR_open_tree:
		return AGENT_MOUNT_OP_OPEN_TREE;
	case NR_mount_setattr:
		return AGENT_MOUNT_OP_MOUNT_SETATTR;
	default:
		return 0;
	}
}

static __always_inline void read_user_str(char *dst, __u32 size, unsigned long src)
{
	if (!src || bpf_probe_read_user_str(dst, size, (const void *)src) < 0)
		dst[0] = 0;
}

/* One record per mount-family syscall, written straight into the ring buffer. */
static __always_inline int mount_event(__u32 op, long ret, unsigned long a0, unsigned long a1,
				       unsigned long a2, unsigned long a3, unsigned long a4)
{
	struct agent_mount_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(AGENT_LOST_MOUNT);
		return 0;
	}
	fill_header(&e->hdr, AGENT_EVENT_MOUNT);
	e->op = op;
	e->ret = ret;
	e->flags = 0;
	e->attr = 0;
	e->dfd = 0;
	e->dfd2 = 0;
	e->_pad = 0;
	e->source[0] = 0;
	e->target[0] = 0;
	e->fstype[0] = 0;

	switch (op) {
	case AGENT_MOUNT_OP_MOUNT:
		read_user_str(e->source, sizeof(e->source), a0);
		read_user_str(e->target, sizeof(e->target), a1);
		read_user_str(e->fstype, sizeof(e->fstype), a2);
		e->flags = a3;
		break;
	case AGENT_MOUNT_OP_UMOUNT2:
		read_user_str(e->target, sizeof(e->target), a0);
		e->flags = a1;
		break;
	case AGENT_MOUNT_OP_FSOPEN:
		read_user_str(e->fstype, sizeof(e->fstype), a0);
		e->flags = a1;
		break;
	case AGENT_MOUNT_OP_FSCONFIG:
		e->dfd = (int)a0;
		e->attr = a1; /* cmd */
		read_user_str(e->target, sizeof(e->target), a2); /* key */
		/* value is a string only for FSCONFIG_SET_STRING (1) and _SET_PATH(_EMPTY) (3, 4) */
		if (a1 == 1 || a1 == 3 || a1 == 4)
			read_user_str(e->source, sizeof(e->source), a3);
		e->dfd2 = (int)a4;
		break;
	case AGENT_MOUNT_OP_FSMOUNT:
		e->dfd = (int)a0;
		e->flags = a1;
		e->attr = a2;
		break;
	case AGENT_MOUNT_OP_MOVE_MOUNT:
		e->dfd = (int)a0;
		read_user_str(e->source, sizeof(e->source), a1);
		e->dfd2 = (int)a2;
		read_user_str(e->target, sizeof(e->target), a3);
		e->flags = a4;
		break;
	case AGENT_MOUNT_OP_OPEN_TREE:
		e->dfd = (int)a0;
		read_user_str(e->source, sizeof(e->source), a1);
		e->flags = a2;
		break;
	case AGENT_MOUNT_OP_MOUNT_SETATTR:
		e->dfd = (int)a0;
		read_user_str(e->target, sizeof(e->target), a1);
		e->flags = a2;
		break;
	}

	bpf_ringbuf_submit(e, wakeup_flags());
	return 0;
}

/*
 * fexit on each syscall of the family (its __x64_sys_* function, which takes
 * the user's pt_regs): the same record as at sys_exit, but only these
 * syscalls pay for it; every other syscall runs untouched. Used where the
 * kernel allows fexit; the loader attaches all eight or none.
 */
#define MOUNT_FEXIT(fn, op)                                                                   \
	SEC("fexit/" #fn)                                                                     \
	int BPF_PROG(mount_fexit_##fn, struct pt_regs *regs, long ret)                        \
	{                                                                                     \
		return mount_event(op, ret, BPF_CORE_READ(regs, di), BPF_CORE_READ(regs, si), \
				   BPF_CORE_READ(regs, dx), BPF_CORE_READ(regs, r10),          \
				   BPF_CORE_READ(regs, r8));                                   \
	}
MOUNT_FEXIT(__x64_sys_mount, AGENT_MOUNT_OP_MOUNT)
MOUNT_FEXIT(__x64_sys_umount, AGENT_MOUNT_OP_UMOUNT2)
MOUNT_FEXIT(__x64_sys_fsopen, AGENT_MOUNT_OP_FSOPEN)
MOUNT_FEXIT(__x64_sys_fsconfig, AGENT_MOUNT_OP_FSCONFIG)
MOUNT_FEXIT(__x64_sys_fsmount, AGENT_MOUNT_OP_FSMOUNT)
MOUNT_FEXIT(__x64_sys_move_mount, AGENT_MOUNT_OP_MOVE_MOUNT)
MOUNT_FEXIT(__x64_sys_open_tree, AGENT_MOUNT_OP_OPEN_TREE)
MOUNT_FEXIT(__x64_sys_mount_setattr, AGENT_MOUNT_OP_MOUNT_SETATTR)

/* tp_btf: pt_regs is a trusted BTF pointer, read with plain (CO-RE) loads. */
SEC("tp_btf/sys_exit")
int BPF_PROG(mount_exit_btf, struct pt_regs *regs, long ret)
{
	__u32 op = mount_op(regs->orig_ax);
	if (!op)
		return 0;
	return mount_event(op, ret, regs->di, regs->si, regs->dx, regs->r10, regs->r8);
}

/* raw_tp: pt_regs must be probe-read. */
SEC("raw_tp/sys_exit")
int BPF_PROG(mount_exit_raw, struct pt_regs *regs, long ret)
{
	__u32 op = mount_op(BPF_CORE_READ(regs, orig_ax));
	if (!op)
		return 0;
	return mount_event(op, ret, BPF_CORE_READ(regs, di), BPF_CORE_READ(regs, si),
			   BPF_CORE_READ(regs, dx), BPF_CORE_READ(regs, r10),
			   BPF_CORE_READ(regs, r8));
}

/* ---- cgroup2 directories ---- */

/*
 * Only the default hierarchy (cgroup2, hierarchy_id 0) is reported: its ids
 * are the ones bpf_get_current_cgroup_id() records. The path comes from the
 * tracepoint (the kernel formats it relative to the hierarchy's root).
 */
static __always_inline int handle_cgroup_mkdir(struct cgroup *cgrp, const char *path)
{
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	struct agent_cgroup_mkdir_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(AGENT_LOST_CGROUP);
		return 0;
	}
	fill_header(&e->hdr, AGENT_EVENT_CGROUP_MKDIR);
	e->id = BPF_CORE_READ(cgrp, kn, id);
	if (bpf_probe_read_kernel_str(e->path, sizeof(e->path), path) < 0)
		e->path[0] = 0;
	/* Wake the reader now (mkdirs are rare): it looks the container's
	 * metadata up while its state file is still there, which for a
	 * short-lived container may not be so a batch interval later. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(cgroup_mkdir_btf, struct cgroup *cgrp, const char *path)
{
	return handle_cgroup_mkdir(cgrp, path);
}

SEC("raw_tp/cgroup_mkdir")
int BPF_PROG(cgroup_mkdir_raw, struct cgroup *cgrp, const char *path)
{
	return handle_cgroup_mkdir(cgrp, path);
}

/* ---- process exits ---- */

/*
 * Fires for every exiting thread; only the last one of a process is reported
 * (signal->live is decremented before the tracepoint), so a process exit is
 * one record whichever thread ends it. exit_code is already set then.
 */
static __always_inline int handle_exit(struct task_struct *task)
{
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	struct agent_exit_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(AGENT_LOST_EXIT);
		return 0;
	}
	fill_header(&e->hdr, AGENT_EVENT_EXIT);
	e->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	e->status = BPF_CORE_READ(task, exit_code);
	e->_pad = 0;
	bpf_ringbuf_submit(e, wakeup_flags());
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(exit_btf, struct task_struct *p)
{
	return handle_exit(p);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(exit_raw, struct task_struct *p)
{
	return handle_exit(p);
}

/* ---- OOM kills ---- */

/*
 * The victim, and its memory cgroup chain with usage and limit at the kill.
 * `trigger` is the memcg whose limit was hit, when the hook knows it: then
 * the level whose mem_cgroup is that one (-1 for a global OOM).
 */
static __always_inline int handle_oom(struct task_struct *victim, __u32 hook,
				      struct mem_cgroup *trigger, int trigger_known)
{
	struct agent_oom_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(AGENT_LOST_OOM);
		return 0;
	}
	fill_task_header(&e->hdr, AGENT_EVENT_OOM, victim);
	e->hook = hook;
	e->trigger = trigger_known ? -1 : -2;
	e->truncated = 0;
	e->killer_tgid = bpf_get_current_pid_tgid() >> 32;
	e->_pad = 0;

	struct cgroup_subsys_state *css = BPF_CORE_READ(
		victim, cgroups, subsys[bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id)]);
	__u32 n = 0;
	for (__u32 i = 0; i < AGENT_OOM_LEVELS; i++) {
		struct cgroup_subsys_state *parent = BPF_CORE_READ(css, parent);
		/* The root (no parent) has no limit: not recorded. */
		if (!css || !parent)
			break;
		struct agent_oom_memcg *m = &e->memcg[i];
		struct mem_cgroup *memcg = (struct mem_cgroup *)css; /* css is its first member */
		m->id = BPF_CORE_READ(css, cgroup, kn, id);
		m->usage_pages = BPF_CORE_READ(memcg, memory.usage.counter);
		m->max_pages = BPF_CORE_READ(memcg, memory.max);
		const char *name = BPF_CORE_READ(css, cgroup, kn, name);
		if (bpf_probe_read_kernel_str(m->name, sizeof(m->name), name) < 0)
			m->name[0] = 0;
		if (trigger_known && memcg == trigger)
			e->trigger = i;
		n = i + 1;
		css = parent;
	}
	if (n == AGENT_OOM_LEVELS && css && BPF_CORE_READ(css, parent))
		e->truncated = 1;
	e->levels = n;
	for (__u32 i = n; i < AGENT_OOM_LEVELS; i++) {
		e->memcg[i].id = 0;
		e->memcg[i].usage_pages = 0;
		e->memcg[i].max_pages = 0;
		e->memcg[i].name[0] = 0;
	}
	/* OOM kills are rare and the victim's container may go soon: wake the reader. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

/* Exact: oc->memcg is the cgroup whose limit was hit (NULL: a global OOM). */
SEC("fentry/oom_kill_process")
int BPF_PROG(oom_kill_fentry, struct oom_control *oc, const char *message)
{
	struct task_struct *victim = BPF_CORE_READ(oc, chosen);
	if (!victim || (long)victim == -1)
		return 0;
	return handle_oom(victim, AGENT_OOM_HOOK_OOM_KILL_PROCESS, BPF_CORE_READ(oc, memcg), 1);
}

/*
 * Where fentry is refused: the tracepoint (6.8+ passes the task; older
 * kernels only a pid, and then the direct read of task->pid below fails
 * verification, so this program does not load there).
 */
SEC("tp_btf/mark_victim")
int BPF_PROG(oom_mark_victim_btf, struct task_struct *task)
{
	if (task->pid <= 0)
		return 0;
	return handle_oom(task, AGENT_OOM_HOOK_MARK_VICTIM, 0, 0);
}
