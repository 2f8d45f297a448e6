//! OOM-kill records: the victim's memory cgroup chain at the kill, and which
//! cgroup's limit was hit (said by the kernel, or inferred from usage).

use super::events::{DecodeError, ProcessInfo, c_string};
use super::wire::{
    OOM_HOOK_MARK_VICTIM, OOM_HOOK_OOM_KILL_PROCESS, OOM_LEVELS, RawHeader, RawOomEvent,
};
use serde::{Deserialize, Serialize};

/// The kernel's page size on x86_64, the only architecture the programs are built for.
const PAGE_SIZE: u64 = 4096;
/// `PAGE_COUNTER_MAX`: a page counter with this max (or more) has no limit.
const PAGE_COUNTER_MAX: u64 = i64::MAX as u64 / PAGE_SIZE;
/// How close to its limit a memory cgroup must be to have been the one that
/// hit it, when the hook cannot say: the failed charge was at most a huge page.
pub const OOM_TRIGGER_SLACK_BYTES: u64 = 4 << 20;

/// Which program saw an OOM kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OomHook {
    /// fentry on `oom_kill_process`: the cgroup whose limit was hit is exact.
    #[serde(rename = "fentry/oom_kill_process")]
    OomKillProcess,
    /// The `mark_victim` tracepoint: that cgroup is inferred from usage and limit.
    #[serde(rename = "tp_btf/mark_victim")]
    MarkVictim,
}

/// One memory cgroup of an OOM victim's chain, at the kill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomMemcg {
    /// Its directory's inode in its hierarchy.
    pub id: u64,
    pub name: String,
    pub usage_bytes: u64,
    /// `None`: no limit.
    pub limit_bytes: Option<u64>,
}

/// What the kernel said about the cgroup whose limit was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OomTrigger {
    /// `chain[i]` (exact).
    Level(usize),
    /// A global OOM: no cgroup's limit.
    Global,
    /// The hook cannot tell.
    Unknown,
}

/// An OOM kill: the victim's memory cgroups from its own up to (not
/// including) the root, and which of them hit its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomInfo {
    pub hook: OomHook,
    pub chain: Vec<OomMemcg>,
    /// The chain is deeper than [`OOM_LEVELS`]: its top is missing.
    pub truncated: bool,
    pub trigger: OomTrigger,
    /// The process that ran the OOM killer (the one whose allocation failed).
    pub killer_tgid: u32,
}

impl OomInfo {
    /// The cgroup path of `chain[level]`, as `/proc/<pid>/cgroup` shows it
    /// (for a truncated chain, `…` stands for the missing top).
    pub fn path(&self, level: usize) -> String {
        let mut path = String::new();
        if self.truncated {
            path.push('…');
        }
        for m in self.chain.iter().skip(level).rev() {
            path.push('/');
            path.push_str(&m.name);
        }
        if path.is_empty() {
            path.push('/');
        }
        path
    }

    /// The level whose limit was hit: what the kernel said, or else the
    /// lowest cgroup whose usage was within [`OOM_TRIGGER_SLACK_BYTES`] of
    /// its limit. `None`: a global OOM, or no cgroup of the chain was at its limit.
    pub fn trigger_level(&self) -> Option<usize> {
        match self.trigger {
            OomTrigger::Level(i) => Some(i),
            OomTrigger::Global => None,
            OomTrigger::Unknown => self.chain.iter().position(|m| {
                m.limit_bytes
                    .is_some_and(|l| m.usage_bytes.saturating_add(OOM_TRIGGER_SLACK_BYTES) >= l)
            }),
        }
    }
}

/// Decodes the OOM part of a record; `process` decodes its header (the victim).
pub(super) fn decode(
    raw: &RawOomEvent,
    process: fn(&RawHeader) -> ProcessInfo,
) -> Result<(ProcessInfo, OomInfo), DecodeError> {
    let hook = match raw.hook {
        OOM_HOOK_OOM_KILL_PROCESS => OomHook::OomKillProcess,
        OOM_HOOK_MARK_VICTIM => OomHook::MarkVictim,
        other => return Err(DecodeError::UnknownOomHook(other)),
    };
    let levels = (raw.levels as usize).min(OOM_LEVELS);
    let chain: Vec<OomMemcg> = raw.memcg[..levels]
        .iter()
        .map(|m| OomMemcg {
            id: m.id,
            name: c_string(&m.name),
            usage_bytes: m.usage_pages.saturating_mul(PAGE_SIZE),
            limit_bytes: (m.max_pages < PAGE_COUNTER_MAX)
                .then(|| m.max_pages.saturating_mul(PAGE_SIZE)),
        })
        .collect();
    let trigger = match usize::try_from(raw.trigger) {
        Ok(i) if i < chain.len() => OomTrigger::Level(i),
        _ if raw.trigger == -1 => OomTrigger::Global,
        _ => OomTrigger::Unknown,
    };
    Ok((
        process(&raw.hdr),
        OomInfo {
            hook,
            chain,
            truncated: raw.truncated != 0,
            trigger,
            killer_tgid: raw.killer_tgid,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::events::{CGROUP_NAME_LEN, EVENT_OOM, Event, RawOomMemcg, decode};

    fn header(kind: u32) -> RawHeader {
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
            mnt_ns: 1,
            pid_ns: 1,
            net_ns: 1,
            uts_ns: 1,
            _pad: 0,
            comm: [0; 16],
        }
    }

    fn memcg(name: &str, usage_pages: u64, max_pages: u64) -> RawOomMemcg {
        let mut m = RawOomMemcg {
            id: 1,
            usage_pages,
            max_pages,
            name: [0; CGROUP_NAME_LEN],
        };
        m.name[..name.len()].copy_from_slice(name.as_bytes());
        m
    }

    #[test]
    fn decodes_oom_kills_and_finds_the_limit_that_was_hit() {
        let none = memcg("", 0, 0);
        let mut raw = RawOomEvent {
            hdr: header(EVENT_OOM),
            hook: OOM_HOOK_MARK_VICTIM,
            levels: 3,
            trigger: -2,
            truncated: 0,
            killer_tgid: 100,
            _pad: 0,
            memcg: [none; OOM_LEVELS],
        };
        // The victim's own cgroup has room; its parent is at its 32 MiB limit.
        raw.memcg[0] = memcg("child", 8192, 1 << 20);
        raw.memcg[1] = memcg("parent", 8190, 8192);
        raw.memcg[2] = memcg("agent", 9000, PAGE_COUNTER_MAX);
        let Event::Oom(p, o) = decode(raw.as_bytes()).unwrap() else {
            panic!("not an OOM");
        };
        assert_eq!(p.tgid, 100);
        assert_eq!(o.hook, OomHook::MarkVictim);
        assert_eq!(o.trigger, OomTrigger::Unknown);
        assert_eq!(o.path(0), "/agent/parent/child");
        assert_eq!(o.path(1), "/agent/parent");
        assert_eq!(o.trigger_level(), Some(1));
        assert_eq!(o.chain[1].limit_bytes, Some(32 << 20));
        assert_eq!(o.chain[1].usage_bytes, 8190 * 4096);
        assert_eq!(o.chain[2].limit_bytes, None);
        // The exact hook's word stands, a global OOM included.
        raw.hook = OOM_HOOK_OOM_KILL_PROCESS;
        raw.trigger = 0;
        let Event::Oom(_, o) = decode(raw.as_bytes()).unwrap() else {
            panic!("not an OOM");
        };
        assert_eq!(
            (o.hook, o.trigger_level()),
            (OomHook::OomKillProcess, Some(0))
        );
        raw.trigger = -1;
        let Event::Oom(_, o) = decode(raw.as_bytes()).unwrap() else {
            panic!("not an OOM");
        };
        assert_eq!((o.trigger, o.trigger_level()), (OomTrigger::Global, None));
        // Levels past the array and a bad hook are bounded or refused.
        raw.levels = 99;
        raw.truncated = 1;
        let Event::Oom(_, o) = decode(raw.as_bytes()).unwrap() else {
            panic!("not an OOM");
        };
        assert_eq!(o.chain.len(), OOM_LEVELS);
        assert!(o.path(7).starts_with('…'));
        raw.hook = 7;
        assert_eq!(decode(raw.as_bytes()), Err(DecodeError::UnknownOomHook(7)));
    }
}
