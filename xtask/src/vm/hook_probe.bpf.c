// SPDX-License-Identifier: GPL-2.0
// One empty program per hook kind the agent could trace mounts and execs with.
// xtask/src/vm/probes.rs compiles it once per -DHOOK_* and the guest loads and
// attaches each object with `bpftool prog loadall … autoattach`: whether it
// attaches is the answer, so the programs do nothing.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#if defined(HOOK_FENTRY)
SEC("fentry/path_mount")
int fentry_path_mount(unsigned long long *ctx) { return 0; }
#elif defined(HOOK_FEXIT)
SEC("fexit/do_move_mount")
int fexit_do_move_mount(unsigned long long *ctx) { return 0; }
#elif defined(HOOK_KPROBE)
SEC("kprobe/path_mount")
int kprobe_path_mount(void *ctx) { return 0; }
#elif defined(HOOK_LSM)
SEC("lsm/sb_mount")
int lsm_sb_mount(unsigned long long *ctx) { return 0; }
#elif defined(HOOK_TP_BTF)
SEC("tp_btf/sched_process_exec")
int tp_btf_exec(unsigned long long *ctx) { return 0; }
#elif defined(HOOK_RAW_TP)
SEC("raw_tp/sys_enter")
int raw_tp_sys_enter(void *ctx) { return 0; }
#else
#error "define one HOOK_*"
#endif

char LICENSE[] SEC("license") = "GPL";
