//! The attributed event as the control socket streams it (one JSON object
//! per line) and `agent events` prints it.

use super::events::{
    Event, ExecInfo, ExitOutcome, MountInfo, OomHook, OomInfo, OomTrigger, ProcessInfo,
};
use crate::container::ContainerLabels;
use serde::{Deserialize, Serialize};
use std::fmt;

/// `exec`, `mount`, `exit` or `oom`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Exec,
    Mount,
    Exit,
    Oom,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Exec => "exec",
            EventKind::Mount => "mount",
            EventKind::Exit => "exit",
            EventKind::Oom => "oom",
        }
    }
}

/// An event with everything known about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_unix_ns: i128,
    pub container: ContainerLabels,
    pub process: ProcessInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<MountResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom: Option<OomResult>,
}

/// An OOM kill: `process` is the victim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomResult {
    /// Which program saw it: `fentry/oom_kill_process` knows the cgroup whose
    /// limit was hit, `tp_btf/mark_victim` infers it from usage and limit.
    pub hook: OomHook,
    /// The victim's memory cgroup.
    pub memory_cgroup: String,
    /// The cgroup whose limit was hit; absent for a global (whole-machine) OOM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<OomLimit>,
    /// The process whose allocation failed and that ran the OOM killer.
    pub killer_pid: u32,
}

/// The memory limit an OOM kill enforced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomLimit {
    pub cgroup: String,
    /// `container`: the victim's container's own cgroup (or one inside it);
    /// `ancestor`: a cgroup above it; `cgroup` when the victim is in no container.
    pub scope: String,
    pub limit_bytes: u64,
    pub usage_bytes: u64,
    /// Inferred from usage against limit (the hook could not say).
    pub inferred: bool,
}

impl OomResult {
    fn new(o: &OomInfo) -> Self {
        let trigger = o.trigger_level().and_then(|i| {
            let m = &o.chain[i];
            Some(OomLimit {
                cgroup: o.path(i),
                scope: "cgroup".to_owned(),
                limit_bytes: m.limit_bytes?,
                usage_bytes: m.usage_bytes,
                inferred: o.trigger == OomTrigger::Unknown,
            })
        });
        OomResult {
            hook: o.hook,
            memory_cgroup: o.path(0),
            trigger,
            killer_pid: o.killer_tgid,
        }
    }

    /// Sets `trigger.scope` against the victim's container's cgroup path.
    pub fn set_scope(&mut self, container_cgroup: &str) {
        if let Some(t) = &mut self.trigger {
            let inside = t.cgroup == container_cgroup
                || t.cgroup
                    .strip_prefix(container_cgroup)
                    .is_some_and(|rest| rest.starts_with('/'));
            t.scope = if inside { "container" } else { "ancestor" }.to_owned();
        }
    }
}

/// A process exit with its outcome spelled out. It pairs with the exec
/// records of the same `process.tgid` whose time lies between
/// `start_time_unix_ns` and the exit's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitResult {
    /// `ok` (exit code 0), `error` (another exit code) or `signal`.
    pub outcome: ExitOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub core_dumped: bool,
    /// When the process started, nanoseconds since the Unix epoch.
    pub start_time_unix_ns: i128,
    /// From its start to its exit.
    pub runtime_ns: u64,
}

/// A mount-family syscall with its outcome spelled out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountResult {
    #[serde(flatten)]
    pub info: MountInfo,
    /// `ok` or `error`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl EventRecord {
    pub fn new(event: &Event, container: ContainerLabels, boot_to_unix_ns: i128) -> Self {
        let process = event.process().clone();
        let time_unix_ns = i128::from(process.boot_ns) + boot_to_unix_ns;
        match event {
            Event::Exec(_, e) => EventRecord {
                kind: EventKind::Exec,
                time_unix_ns,
                container,
                process,
                exec: Some(e.clone()),
                mount: None,
                exit: None,
                oom: None,
            },
            Event::Oom(_, o) => EventRecord {
                kind: EventKind::Oom,
                time_unix_ns,
                container,
                process,
                exec: None,
                mount: None,
                exit: None,
                oom: Some(OomResult::new(o)),
            },
            Event::Exit(p, x) => EventRecord {
                kind: EventKind::Exit,
                time_unix_ns,
                container,
                exec: None,
                mount: None,
                oom: None,
                exit: Some(ExitResult {
                    outcome: x.outcome(),
                    code: x.code(),
                    signal: x.signal(),
                    core_dumped: x.core_dumped(),
                    start_time_unix_ns: i128::from(x.start_boot_ns) + boot_to_unix_ns,
                    runtime_ns: p.boot_ns.saturating_sub(x.start_boot_ns),
                }),
                process,
            },
            Event::Mount(_, m) => {
                let errno = (m.ret < 0).then(|| i32::try_from(-m.ret).unwrap_or(i32::MAX));
                EventRecord {
                    kind: EventKind::Mount,
                    time_unix_ns,
                    container,
                    process,
                    exec: None,
                    exit: None,
                    oom: None,
                    mount: Some(MountResult {
                        info: m.clone(),
                        result: if m.ok() { "ok" } else { "error" }.to_owned(),
                        errno,
                        error: errno.map(errno_text),
                    }),
                }
            }
        }
    }

    /// Whether `filter` names this event's container: its id, its name, or
    /// a prefix (4+ characters) of the id's last path component.
    pub fn matches_container(&self, filter: &str) -> bool {
        let c = &self.container;
        if filter == c.id || (!c.name.is_empty() && filter == c.name) {
            return true;
        }
        filter.len() >= 4
            && c.id
                .rsplit('/')
                .next()
                .is_some_and(|last| last.starts_with(filter))
    }
}

/// The C library's text for an errno, without the "(os error N)" suffix.
fn errno_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Formats the wall-clock time of day (UTC) with milliseconds.
fn time_of_day(unix_ns: i128) -> String {
    let ms = unix_ns.div_euclid(1_000_000);
    let day_ms = ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

/// A readable line: time, type, container, process, and what happened.
impl fmt::Display for EventRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.process;
        let who = if self.container.name.is_empty() {
            self.container.id.as_str()
        } else {
            self.container.name.as_str()
        };
        write!(
            f,
            "{} {:<5} {} pid={} ppid={} uid={} comm={}",
            time_of_day(self.time_unix_ns),
            self.kind.as_str(),
            who,
            p.tgid,
            p.ppid,
            p.uid,
            p.comm
        )?;
        if let Some(e) = &self.exec {
            write!(f, " {}", e.filename)?;
            if !e.argv.is_empty() {
                write!(f, " [{}]", e.argv.join(" "))?;
            }
            if e.argv_truncated {
                f.write_str("…")?;
            }
        }
        if let Some(m) = &self.mount {
            let i = &m.info;
            write!(f, " {}", i.operation.as_str())?;
            if let Some(t) = &i.fstype {
                write!(f, " type={t}")?;
            }
            if let Some(s) = &i.source {
                write!(f, " source={s}")?;
            }
            if let Some(t) = &i.target {
                write!(f, " target={t}")?;
            }
            if i.flags != 0 {
                write!(f, " flags={:#x}", i.flags)?;
            }
            match &m.error {
                Some(err) => write!(f, " -> error: {err}")?,
                None => write!(f, " -> ok ({})", i.ret)?,
            }
        }
        if let Some(x) = &self.exit {
            match (x.code, x.signal) {
                (_, Some(sig)) => write!(f, " signal={sig}")?,
                (Some(code), None) => write!(f, " code={code}")?,
                (None, None) => {}
            }
            if x.core_dumped {
                f.write_str(" (core dumped)")?;
            }
            write!(f, " after {:.3}s", x.runtime_ns as f64 / 1e9)?;
        }
        if let Some(o) = &self.oom {
            write!(f, " killed in {}", o.memory_cgroup)?;
            match &o.trigger {
                Some(t) => write!(
                    f,
                    " by the limit of {} ({}): {} of {} bytes{}",
                    t.cgroup,
                    t.scope,
                    t.usage_bytes,
                    t.limit_bytes,
                    if t.inferred { " (inferred)" } else { "" }
                )?,
                None => f.write_str(" by a global OOM")?,
            }
            write!(f, " [oom killer ran in pid {}]", o.killer_pid)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::events::MountOp;

    fn process() -> ProcessInfo {
        ProcessInfo {
            boot_ns: 1_000_000,
            pid: 42,
            tgid: 42,
            ppid: 1,
            ns_pid: 2,
            uid: 0,
            gid: 0,
            comm: "mount".into(),
            cgroup_id: 1,
            mnt_ns: 4026532000,
            pid_ns: 4026532001,
            net_ns: 1,
            uts_ns: 1,
        }
    }

    #[test]
    fn failed_mount_round_trips_through_json_with_its_errno() {
        let event = Event::Mount(
            process(),
            MountInfo {
                operation: MountOp::Mount,
                source: Some("none".into()),
                target: Some("/mnt".into()),
                fstype: Some("bogusfs".into()),
                flags: 0,
                attr: 0,
                dfd: 0,
                dfd2: 0,
                ret: -19,
            },
        );
        let rec = EventRecord::new(&event, ContainerLabels::namespace(4026532000), 0);
        let json = serde_json::to_string(&rec).unwrap();
        assert!(json.contains(r#""type":"mount""#), "{json}");
        assert!(json.contains(r#""operation":"mount""#), "{json}");
        assert!(json.contains(r#""result":"error""#), "{json}");
        let back: EventRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
        // On the control socket, the same line is told apart from the other replies.
        use crate::server::control::{Notice, Reply};
        let reply = Reply::parse(&json).unwrap();
        assert_eq!(reply, Reply::Event(Box::new(rec.clone())));
        let lagged = Reply::parse(r#"{"notice":"lagged","missed":3}"#).unwrap();
        assert_eq!(
            lagged,
            Reply::Notice {
                notice: Notice::Lagged,
                missed: 3
            }
        );
        let error = Reply::parse(r#"{"error":"no"}"#).unwrap();
        assert_eq!(error, Reply::Error { error: "no".into() });
        assert_eq!(back.mount.as_ref().unwrap().errno, Some(19));
        let line = rec.to_string();
        assert!(line.contains("type=bogusfs"), "{line}");
        assert!(line.contains("-> error: No such device"), "{line}");
    }

    #[test]
    fn exit_reads_its_outcome_and_runtime() {
        let mut p = process();
        p.boot_ns = 3_500_000_000;
        let event = Event::Exit(
            p,
            crate::ebpf::events::ExitInfo {
                start_boot_ns: 1_000_000_000,
                status: 9,
            },
        );
        let rec = EventRecord::new(&event, ContainerLabels::host(), 10);
        let x = rec.exit.as_ref().unwrap();
        assert_eq!(x.outcome, ExitOutcome::Signal);
        assert_eq!((x.code, x.signal), (None, Some(9)));
        assert_eq!(x.runtime_ns, 2_500_000_000);
        assert_eq!(x.start_time_unix_ns, 1_000_000_010);
        let json = serde_json::to_string(&rec).unwrap();
        assert!(json.contains(r#""type":"exit""#), "{json}");
        assert!(json.contains(r#""outcome":"signal""#), "{json}");
        assert_eq!(serde_json::from_str::<EventRecord>(&json).unwrap(), rec);
        let line = rec.to_string();
        assert!(line.contains("exit "), "{line}");
        assert!(line.ends_with(" signal=9 after 2.500s"), "{line}");
    }

    #[test]
    fn container_filter() {
        let rec = EventRecord::new(
            &Event::Exec(
                process(),
                ExecInfo {
                    filename: "/bin/true".into(),
                    argv: vec!["true".into()],
                    argv_truncated: false,
                },
            ),
            ContainerLabels {
                id: "/docker/0123456789ab".into(),
                name: "web".into(),
                image: "nginx".into(),
            },
            0,
        );
        assert!(rec.matches_container("web"));
        assert!(rec.matches_container("/docker/0123456789ab"));
        assert!(rec.matches_container("0123"));
        assert!(!rec.matches_container("012"));
        assert!(!rec.matches_container("db"));
        assert_eq!(time_of_day(3_600_000_000_000 + 1_500_000), "01:00:00.001");
    }
}
