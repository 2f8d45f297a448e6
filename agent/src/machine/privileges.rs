//! What the agent may see and do from where it runs: on the host as root it has
//! everything; in a container (a DaemonSet pod) it needs the host's PID namespace,
//! the host's cgroup tree, a few capabilities and read-only mounts. Each one that
//! is missing is named once, in the start-up line that also says which eBPF hooks
//! are live ([`startup_line`]), with what the agent serves without it.
//!
//! The least privilege, and why:
//! - CAP_BPF and CAP_PERFMON (Linux 5.8+), or CAP_SYS_ADMIN where the kernel or the
//!   runtime predates them (Docker 20.10 does not know their names): loading and
//!   attaching the tracing programs;
//! - CAP_SYS_PTRACE: reading other processes' `/proc/<pid>/ns/*` (which container an
//!   event came from, and which mount namespace is the host's);
//! - CAP_DAC_READ_SEARCH: entering directories of other users while sizing
//!   containers' writable layers and reading the runtimes' state;
//! - the host's PID namespace (`hostPID`), so the pids the kernel reports and
//!   `cgroup.procs` lists are the ones `/proc` shows;
//! - the host's cgroup tree, read-only (the host cgroup namespace, or a hostPath
//!   mount of `/sys/fs/cgroup` passed as `--cgroup-root`).

use crate::cgroup::NsView;
use crate::ebpf::HooksSummary;
use std::path::Path;

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO`).
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// One thing the agent lacks, and what it costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What to grant, e.g. `CAP_SYS_PTRACE` or `hostPID`.
    pub what: &'static str,
    /// What does not work without it.
    pub effect: &'static str,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.what, self.effect)
    }
}

/// The process's effective capabilities, as a bit mask (`CapEff`).
fn effective_caps(proc_root: &Path) -> u64 {
    std::fs::read_to_string(proc_root.join("self/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What of the agent's needs this process lacks. `ebpf`: whether tracing was asked for.
pub fn check(proc_root: &Path, ns_view: &NsView, ebpf: bool) -> Vec<Missing> {
    use std::os::unix::fs::MetadataExt;
    let eff = effective_caps(proc_root);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    let host_pid = std::fs::metadata(proc_root.join("self/ns/pid"))
        .map(|m| m.ino() == INIT_PID_NS_INO)
        .unwrap_or(true);
    if !host_pid {
        missing.push(Missing {
            what: "hostPID",
            effect: "other containers' processes are invisible: no process counts or \
                     network metrics, events not attributed",
        });
    }
    if *ns_view == NsView::Confined {
        missing.push(Missing {
            what: "the host's cgroup tree",
            effect: "only this container's own cgroup namespace is visible: mount the \
                     host's /sys/fs/cgroup and point --cgroup-root at it, or use the host \
                     cgroup namespace",
        });
    }
    if ebpf && !has(CAP_SYS_ADMIN) && !(has(CAP_BPF) && has(CAP_PERFMON)) {
        missing.push(Missing {
            what: "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)",
            effect: "no exec or mount tracing",
        });
    }
    if !has(CAP_SYS_PTRACE) {
        missing.push(Missing {
            what: "CAP_SYS_PTRACE",
            effect: "other processes' /proc/<pid>/ns cannot be read: events are \
                     attributed by cgroup id alone, host events may count to a namespace",
        });
    }
    if !has(CAP_DAC_READ_SEARCH) && !has(CAP_DAC_OVERRIDE) {
        missing.push(Missing {
            what: "CAP_DAC_READ_SEARCH",
            effect: "directories of other users are skipped: container_fs_usage_bytes \
                     may undercount",
        });
    }
    missing
}

/// What became of eBPF tracing at start-up.
pub enum Tracing<'a> {
    /// `--no-ebpf`.
    Disabled,
    /// Loaded: which hooks are live, which stand in for refused ones, and which
    /// are missing and why.
    Attached(HooksSummary),
    /// Could not be loaded: why.
    Off(&'a str),
}

/// The one start-up line: which eBPF hooks are live, what is missing (each thing
/// once, with its effect) and the cgroup namespace when it is a private one.
/// Returns whether it is a warning, and the line.
pub fn startup_line(
    tracing: &Tracing<'_>,
    missing: &[Missing],
    ns_view: &NsView,
) -> (bool, String) {
    let (mut warn, mut line) = match tracing {
        Tracing::Disabled => (false, "eBPF tracing disabled (--no-ebpf)".to_owned()),
        Tracing::Attached(h) => {
            let mut line = format!("eBPF hooks attached: {}", h.live.join(", "));
            if !h.replaced.is_empty() {
                // Said plainly first, so no one reads the refusals as a failure.
                if h.not_attached.is_empty() {
                    line.push_str("; every event is traced");
                }
                line.push_str(&format!(
                    "; the kernel refused {}, whose events the hooks above report",
                    h.replaced.join(", ")
                ));
            }
            if !h.not_attached.is_empty() {
                line.push_str(&format!("; not attached {}", h.not_attached.join("; ")));
            }
            (!h.not_attached.is_empty(), line)
        }
        Tracing::Off(why) => (
            true,
            format!("eBPF event tracing is off ({why}); serving cgroup metrics only"),
        ),
    };
    if !missing.is_empty() {
        warn = true;
        let list: Vec<String> = missing.iter().map(Missing::to_string).collect();
        line.push_str(&format!(
            "; missing, serving what it can without: {}",
            list.join("; ")
        ));
    }
    if let (NsView::Private { .. }, Some(d)) = (ns_view, ns_view.describe()) {
        line.push_str(&format!("; {d}"));
    }
    (warn, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_each_missing_thing_once() {
        let missing = vec![Missing {
            what: "CAP_SYS_PTRACE",
            effect: "x",
        }];
        let tracing = Tracing::Attached(HooksSummary {
            live: vec!["tp_btf/sched_process_exec"],
            ..HooksSummary::default()
        });
        let (warn, line) = startup_line(&tracing, &missing, &NsView::Host);
        assert!(warn);
        assert_eq!(
            line,
            "eBPF hooks attached: tp_btf/sched_process_exec; missing, serving what it can \
             without: CAP_SYS_PTRACE (x)"
        );
        let (warn, line) = startup_line(&tracing, &[], &NsView::Host);
        assert!(!warn && !line.contains("missing"), "{line}");
        let (warn, line) = startup_line(
            &Tracing::Off("no permission"),
            &[],
            &NsView::Private {
                root: "/a/b".into(),
            },
        );
        assert!(
            warn && line.contains("no permission") && line.ends_with("rooted at /a/b"),
            "{line}"
        );
    }

    #[test]
    fn a_refused_hook_with_a_live_stand_in_is_no_warning() {
        let replaced = Tracing::Attached(HooksSummary {
            live: vec!["tp_btf/sched_process_exec", "tp_btf/sys_exit"],
            replaced: vec!["fexit/mount_syscalls (EPERM)".into()],
            not_attached: vec![],
        });
        let (warn, line) = startup_line(&replaced, &[], &NsView::Host);
        assert!(!warn, "{line}");
        assert_eq!(
            line,
            "eBPF hooks attached: tp_btf/sched_process_exec, tp_btf/sys_exit; every event \
             is traced; the kernel refused fexit/mount_syscalls (EPERM), whose events the \
             hooks above report"
        );
        let missing = Tracing::Attached(HooksSummary {
            live: vec!["tp_btf/sched_process_exec"],
            replaced: vec![],
            not_attached: vec!["fentry/oom_kill_process (EPERM)".into()],
        });
        let (warn, line) = startup_line(&missing, &[], &NsView::Host);
        assert!(warn && line.ends_with("; not attached fentry/oom_kill_process (EPERM)"));
    }

    #[test]
    fn root_on_the_host_misses_nothing() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let full = effective_caps(Path::new("/proc")) & (1 << CAP_SYS_ADMIN) != 0;
        let host_pid = std::fs::metadata("/proc/self/ns/pid")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == INIT_PID_NS_INO)
            .unwrap_or(false);
        if root && full && host_pid {
            assert_eq!(check(Path::new("/proc"), &NsView::Host, true), vec![]);
        }
    }
}
