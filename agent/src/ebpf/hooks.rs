//! The hook points and how each is attached: every hook the tracer knows
//! ([`HOOKS`]), the tp_btf-then-raw_tp fallback of each tracepoint, and the
//! mount family's chain from fexit (only its syscalls pay) to `sys_exit`.

use super::loader::{ProgramStatus, error_chain};
use aya::programs::{BtfTracePoint, FEntry, FExit, RawTracePoint};
use aya::{Btf, Ebpf};

/// How the mount family is traced. Every kind writes the same record from
/// the same arguments and result, so events and attribution do not depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountHook {
    /// fexit on each of the eight syscalls' `__x64_sys_*` functions: only
    /// mount-family syscalls pay. Needs a kernel that allows fexit.
    Fexit,
    /// `tp_btf/sys_exit`: every syscall of every process pays (~100 ns here).
    SysExitBtf,
    /// `raw_tp/sys_exit`: the same, for kernels without tp_btf.
    SysExitRaw,
}

impl MountHook {
    /// Cheapest first: the default order.
    pub const ALL: [MountHook; 3] = [
        MountHook::Fexit,
        MountHook::SysExitBtf,
        MountHook::SysExitRaw,
    ];

    /// Its entry in [`HOOKS`] (the `program` label of `agent_ebpf_program_attached`).
    pub fn hook(self) -> &'static str {
        match self {
            MountHook::Fexit => MOUNT_FEXIT_HOOK,
            MountHook::SysExitBtf => "tp_btf/sys_exit",
            MountHook::SysExitRaw => "raw_tp/sys_exit",
        }
    }
}

/// The hook name under which the eight fexit programs are listed, live or not together.
pub const MOUNT_FEXIT_HOOK: &str = "fexit/mount_syscalls";

/// The fexit programs (events.bpf.c) and the kernel functions they attach to.
pub(super) const MOUNT_FEXIT: [(&str, &str); 8] = [
    ("mount_fexit___x64_sys_mount", "__x64_sys_mount"),
    ("mount_fexit___x64_sys_umount", "__x64_sys_umount"),
    ("mount_fexit___x64_sys_fsopen", "__x64_sys_fsopen"),
    ("mount_fexit___x64_sys_fsconfig", "__x64_sys_fsconfig"),
    ("mount_fexit___x64_sys_fsmount", "__x64_sys_fsmount"),
    ("mount_fexit___x64_sys_move_mount", "__x64_sys_move_mount"),
    ("mount_fexit___x64_sys_open_tree", "__x64_sys_open_tree"),
    (
        "mount_fexit___x64_sys_mount_setattr",
        "__x64_sys_mount_setattr",
    ),
];

/// Every hook the tracer knows, in the order [`Tracer::programs`] lists them.
pub const HOOKS: [&str; 11] = [
    "tp_btf/sched_process_exec",
    "raw_tp/sched_process_exec",
    MOUNT_FEXIT_HOOK,
    "tp_btf/sys_exit",
    "raw_tp/sys_exit",
    "tp_btf/cgroup_mkdir",
    "raw_tp/cgroup_mkdir",
    "tp_btf/sched_process_exit",
    "raw_tp/sched_process_exit",
    "fentry/oom_kill_process",
    "tp_btf/mark_victim",
];

/// The event each of [`HOOKS`] reports: hooks of one event stand in for each
/// other, so a refused hook whose event another one reports loses nothing.
pub fn event_of(hook: &str) -> &'static str {
    match hook {
        "tp_btf/sched_process_exec" | "raw_tp/sched_process_exec" => "exec",
        MOUNT_FEXIT_HOOK | "tp_btf/sys_exit" | "raw_tp/sys_exit" => "mount",
        "tp_btf/cgroup_mkdir" | "raw_tp/cgroup_mkdir" => "cgroup_mkdir",
        "tp_btf/sched_process_exit" | "raw_tp/sched_process_exit" => "exit",
        "fentry/oom_kill_process" | "tp_btf/mark_victim" => "oom_kill",
        _ => "other",
    }
}

/// The hooks that report OOM kills (fentry where allowed, else the tracepoint).
pub const OOM_HOOKS: [&str; 2] = ["fentry/oom_kill_process", "tp_btf/mark_victim"];

/// The program (C function in events.bpf.c) behind each of [`HOOKS`]
/// (the fexit hook is eight: [`MOUNT_FEXIT`]).
pub(super) const PROGRAMS: [&str; 11] = [
    "exec_btf",
    "exec_raw",
    "mount_fexit___x64_sys_mount",
    "mount_exit_btf",
    "mount_exit_raw",
    "cgroup_mkdir_btf",
    "cgroup_mkdir_raw",
    "exit_btf",
    "exit_raw",
    "oom_kill_fentry",
    "oom_mark_victim_btf",
];

pub(super) const NOT_TRIED: &str = "not tried (prefer_tp_btf is off)";
pub(super) const NOT_CHOSEN: &str = "not chosen (TracerConfig::mount_hooks)";

/// Lists both programs of a hook point as not attached, and why.
pub(super) fn turned_off(programs: &mut Vec<ProgramStatus>, h: Hooks, why: &str) {
    for hook in [h.btf_hook, h.raw_hook] {
        programs.push(ProgramStatus {
            hook,
            attached: false,
            error: Some(why.to_owned()),
        });
    }
}

pub(super) fn status(hook: &'static str, r: Result<(), String>) -> ProgramStatus {
    ProgramStatus {
        hook,
        attached: r.is_ok(),
        error: r.err(),
    }
}

/// One hook point with its tp_btf program and its raw_tp fallback.
#[derive(Clone, Copy)]
pub(super) struct Hooks {
    btf_prog: &'static str,
    btf_hook: &'static str,
    raw_prog: &'static str,
    raw_hook: &'static str,
    tracepoint: &'static str,
}

pub(super) const HOOK_EXEC: Hooks = Hooks {
    btf_prog: "exec_btf",
    btf_hook: "tp_btf/sched_process_exec",
    raw_prog: "exec_raw",
    raw_hook: "raw_tp/sched_process_exec",
    tracepoint: "sched_process_exec",
};
pub(super) const HOOK_MOUNT: Hooks = Hooks {
    btf_prog: "mount_exit_btf",
    btf_hook: "tp_btf/sys_exit",
    raw_prog: "mount_exit_raw",
    raw_hook: "raw_tp/sys_exit",
    tracepoint: "sys_exit",
};
pub(super) const HOOK_CGROUP_MKDIR: Hooks = Hooks {
    btf_prog: "cgroup_mkdir_btf",
    btf_hook: "tp_btf/cgroup_mkdir",
    raw_prog: "cgroup_mkdir_raw",
    raw_hook: "raw_tp/cgroup_mkdir",
    tracepoint: "cgroup_mkdir",
};

pub(super) const HOOK_EXIT: Hooks = Hooks {
    btf_prog: "exit_btf",
    btf_hook: "tp_btf/sched_process_exit",
    raw_prog: "exit_raw",
    raw_hook: "raw_tp/sched_process_exit",
    tracepoint: "sched_process_exit",
};

/// Attaches the tp_btf program, or the raw_tp one if that is refused; records
/// both outcomes and returns whether either attached.
pub(super) fn attach_either(
    ebpf: &mut Ebpf,
    btf: &Result<Btf, String>,
    programs: &mut Vec<ProgramStatus>,
    h: Hooks,
) -> bool {
    let first = btf
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|btf| attach_btf(ebpf, h.btf_prog, h.tracepoint, btf));
    let btf_ok = first.is_ok();
    programs.push(status(h.btf_hook, first));
    if btf_ok {
        // No error: the fallback was simply not needed (logged at debug).
        programs.push(ProgramStatus {
            hook: h.raw_hook,
            attached: false,
            error: None,
        });
        return true;
    }
    let raw = attach_raw(ebpf, h.raw_prog, h.tracepoint);
    let raw_ok = raw.is_ok();
    programs.push(status(h.raw_hook, raw));
    raw_ok
}

pub(super) fn attach_btf(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    btf: &Btf,
) -> Result<(), String> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("no program {name}"))?;
    let prog: &mut BtfTracePoint = prog.try_into().map_err(|e| error_chain(&e))?;
    prog.load(tracepoint, btf).map_err(|e| error_chain(&e))?;
    prog.attach().map_err(|e| error_chain(&e))?;
    Ok(())
}

/// The mount hooks in `wanted`'s order of cost (fexit, tp_btf, raw_tp): the
/// first that attaches is live, the others are listed as not needed.
pub(super) fn attach_mount(
    ebpf: &mut Ebpf,
    btf: &Result<Btf, String>,
    programs: &mut Vec<ProgramStatus>,
    wanted: &[MountHook],
) {
    let mut live = false;
    for kind in MountHook::ALL {
        if live {
            programs.push(ProgramStatus {
                hook: kind.hook(),
                attached: false,
                error: None,
            });
            continue;
        }
        let r = if !wanted.contains(&kind) {
            Err(NOT_CHOSEN.to_owned())
        } else {
            match kind {
                MountHook::Fexit => btf
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|btf| attach_mount_fexit(ebpf, btf)),
                MountHook::SysExitBtf => btf.as_ref().map_err(Clone::clone).and_then(|btf| {
                    attach_btf(ebpf, HOOK_MOUNT.btf_prog, HOOK_MOUNT.tracepoint, btf)
                }),
                MountHook::SysExitRaw => {
                    attach_raw(ebpf, HOOK_MOUNT.raw_prog, HOOK_MOUNT.tracepoint)
                }
            }
        };
        live = r.is_ok();
        programs.push(status(kind.hook(), r));
    }
}

/// All eight fexit programs, or none: a family traced in part would miss events.
pub(super) fn attach_mount_fexit(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    for (i, (name, function)) in MOUNT_FEXIT.iter().enumerate() {
        let attached = (|| {
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("no program {name}"))?;
            let prog: &mut FExit = prog.try_into().map_err(|e| error_chain(&e))?;
            prog.load(function, btf).map_err(|e| error_chain(&e))?;
            prog.attach().map_err(|e| error_chain(&e))?;
            Ok::<(), String>(())
        })();
        if let Err(e) = attached {
            for (done, _) in &MOUNT_FEXIT[..=i] {
                if let Some(p) = ebpf.program_mut(done) {
                    let p: Result<&mut FExit, _> = p.try_into();
                    if let Ok(p) = p {
                        let _ = p.unload();
                    }
                }
            }
            return Err(format!("{function}: {e}"));
        }
    }
    Ok(())
}

pub(super) fn attach_fentry(
    ebpf: &mut Ebpf,
    name: &str,
    function: &str,
    btf: &Btf,
) -> Result<(), String> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("no program {name}"))?;
    let prog: &mut FEntry = prog.try_into().map_err(|e| error_chain(&e))?;
    prog.load(function, btf).map_err(|e| error_chain(&e))?;
    prog.attach().map_err(|e| error_chain(&e))?;
    Ok(())
}

pub(super) fn attach_raw(ebpf: &mut Ebpf, name: &str, tracepoint: &str) -> Result<(), String> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("no program {name}"))?;
    let prog: &mut RawTracePoint = prog.try_into().map_err(|e| error_chain(&e))?;
    prog.load().map_err(|e| error_chain(&e))?;
    prog.attach(tracepoint).map_err(|e| error_chain(&e))?;
    Ok(())
}
