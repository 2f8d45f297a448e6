//! The UI's live feed: exec, mount and OOM events as server-sent events.
//!
//! A page that opens `/events` subscribes to the tracer's broadcast channel and,
//! unless the tracer reports OOM kills itself, to the history's OOM notices, for
//! as long as it stays open, and only then: with no page open nobody is
//! subscribed, and the tracer builds no record for the UI.
//! Without authentication an event carries its type, time, container and the
//! executable's base name only; argv, paths and the rest need a request that
//! passed the web config's basic auth.

use super::history::{History, OomNotice};
use crate::container::ContainerLabels;
use crate::ebpf::{EventKind, EventRecord};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde::Serialize;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// A comment line this often keeps proxies and the idle timeout from closing a
/// quiet feed, and notices a page that went away.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// What the page receives for one event.
#[derive(Debug, Serialize)]
pub struct FeedItem<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub time_unix_ms: i64,
    pub container_id: &'a str,
    pub container_name: &'a str,
    /// The executable's base name (`comm` for events other than exec).
    pub exe: &'a str,
    /// Only for OOM: kills since the previous reading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kills: Option<u64>,
    /// The whole record (argv, paths, ids), only for authenticated requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full: Option<&'a EventRecord>,
}

/// The base name of an exec'd file.
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl<'a> FeedItem<'a> {
    /// The item for `ev`; with `full`, the record goes along.
    pub fn of(ev: &'a EventRecord, full: bool) -> Self {
        let exe = match (&ev.kind, &ev.exec) {
            (EventKind::Exec, Some(e)) => base_name(&e.filename),
            _ => ev.process.comm.as_str(),
        };
        FeedItem {
            kind: ev.kind.as_str(),
            time_unix_ms: (ev.time_unix_ns / 1_000_000) as i64,
            container_id: &ev.container.id,
            container_name: &ev.container.name,
            exe,
            kills: None,
            full: full.then_some(ev),
        }
    }

    fn oom(n: &'a OomNotice) -> Self {
        FeedItem {
            kind: "oom",
            time_unix_ms: n.time_unix_ms as i64,
            container_id: &n.id,
            container_name: &n.name,
            exe: "",
            kills: Some(n.kills),
            full: None,
        }
    }
}

/// Whether a feed for `key` (a container's link key; `None`: all) wants `c`.
fn wanted(key: Option<&str>, c: &ContainerLabels) -> bool {
    let Some(key) = key else { return true };
    let id = c.id.strip_prefix('/').unwrap_or(&c.id);
    key == id
        || (!c.name.is_empty() && key == c.name)
        || (key.len() >= 4 && id.rsplit('/').next().is_some_and(|l| l.starts_with(key)))
}

/// A server-sent event line for `item`.
fn frame(item: &FeedItem<'_>) -> Option<Bytes> {
    let json = serde_json::to_string(item).ok()?;
    Some(Bytes::from(format!("data: {json}\n\n")))
}

/// The response body of `/events`: what the feed task sends, until the page goes.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The feed's second source of OOM kills: the history's notices (memory.events
/// going up), unless `traced` (the tracer's OOM hook is live and its events go to
/// the feed), for then each kill would show twice.
pub fn oom_notices(history: &History, traced: bool) -> Option<broadcast::Receiver<OomNotice>> {
    (!traced).then(|| history.subscribe_oom())
}

/// Starts a feed for one page: subscribes now, and unsubscribes when the page
/// goes (its connection closes) or the sources end.
pub fn start(
    events: Option<&broadcast::Sender<Arc<EventRecord>>>,
    oom: Option<broadcast::Receiver<OomNotice>>,
    key: Option<String>,
    full: bool,
) -> EventStream {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let events = events.map(|s| s.subscribe());
    tokio::spawn(run(tx, events, oom, key, full));
    EventStream { rx }
}

async fn run(
    tx: mpsc::Sender<Bytes>,
    mut events: Option<broadcast::Receiver<Arc<EventRecord>>>,
    mut oom: Option<broadcast::Receiver<OomNotice>>,
    key: Option<String>,
    full: bool,
) {
    let hello = if events.is_some() {
        ": live\n\n"
    } else {
        "event: notice\ndata: event tracing is not running; only OOM kills are shown\n\n"
    };
    if tx.send(Bytes::from_static(hello.as_bytes())).await.is_err() {
        return;
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        let next_event = async {
            match events.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let next_notice = async {
            match oom.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let bytes = tokio::select! {
            _ = tx.closed() => return,
            _ = heartbeat.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
            ev = next_event => match ev {
                Ok(ev) if wanted(key.as_deref(), &ev.container) => frame(&FeedItem::of(&ev, full)),
                Ok(_) => None,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Some(Bytes::from(format!("event: notice\ndata: {n} events skipped (the page fell behind)\n\n")))
                }
                Err(broadcast::error::RecvError::Closed) => { events = None; None }
            },
            n = next_notice => match n {
                Ok(n) if wanted(key.as_deref(), &ContainerLabels { id: n.id.clone(), name: n.name.clone(), image: String::new() }) => frame(&FeedItem::oom(&n)),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => { oom = None; None }
            },
        };
        if let Some(bytes) = bytes
            && tx.send(bytes).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::events::{ExecInfo, ProcessInfo};

    fn exec() -> EventRecord {
        EventRecord {
            kind: EventKind::Exec,
            time_unix_ns: 1_700_000_000_123_000_000,
            container: ContainerLabels {
                id: "/agent/web".into(),
                name: "web".into(),
                image: "busybox".into(),
            },
            process: ProcessInfo {
                boot_ns: 1,
                pid: 10,
                tgid: 10,
                ppid: 1,
                ns_pid: 2,
                uid: 0,
                gid: 0,
                comm: "cat".into(),
                cgroup_id: 7,
                mnt_ns: 1,
                pid_ns: 2,
                net_ns: 3,
                uts_ns: 4,
            },
            exec: Some(ExecInfo {
                filename: "/bin/cat".into(),
                argv: vec!["cat".into(), "/etc/secret-token".into()],
                argv_truncated: false,
            }),
            mount: None,
            exit: None,
            oom: None,
        }
    }

    #[test]
    fn without_auth_only_type_container_and_base_name() {
        let ev = exec();
        let plain = serde_json::to_string(&FeedItem::of(&ev, false)).unwrap();
        assert_eq!(
            plain,
            r#"{"type":"exec","time_unix_ms":1700000000123,"container_id":"/agent/web","container_name":"web","exe":"cat"}"#
        );
        let full = serde_json::to_string(&FeedItem::of(&ev, true)).unwrap();
        assert!(full.contains("/etc/secret-token"), "{full}");
    }

    #[test]
    fn a_container_feed_takes_its_id_name_or_prefix() {
        let c = exec().container;
        for key in [None, Some("agent/web"), Some("web")] {
            assert!(wanted(key, &c), "{key:?}");
        }
        assert!(!wanted(Some("db"), &c));
    }

    /// The data lines the feed sends until it is quiet for 300 ms.
    async fn items(stream: &mut EventStream) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Some(b)) =
            tokio::time::timeout(Duration::from_millis(300), stream.rx.recv()).await
        {
            let text = String::from_utf8_lossy(&b).into_owned();
            if let Some(data) = text.strip_prefix("data: ") {
                out.push(data.trim_end().to_owned());
            }
        }
        out
    }

    #[tokio::test]
    async fn an_oom_kill_shows_once_whichever_source_reports_it() {
        let history = History::default();
        let (events, _) = broadcast::channel(16);
        let kill = Arc::new(EventRecord {
            kind: EventKind::Oom,
            exec: None,
            ..exec()
        });
        let notice = OomNotice {
            id: "/agent/web".into(),
            name: "web".into(),
            kills: 1,
            time_unix_ms: 1_700_000_000_500,
        };

        // The tracer's OOM hook is live: the kill arrives as its event, and
        // memory.events going up at the next reading is the same kill.
        let mut feed = start(Some(&events), oom_notices(&history, true), None, false);
        events.send(kill.clone()).unwrap();
        history.notify_oom(notice.clone());
        let seen = items(&mut feed).await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].starts_with(r#"{"type":"oom","#) && seen[0].contains(r#""exe":"cat""#),
            "the tracer's event, which names the process: {seen:?}"
        );

        // No OOM hook (or no tracer): memory.events is the only source.
        let mut feed = start(Some(&events), oom_notices(&history, false), None, false);
        history.notify_oom(notice);
        let seen = items(&mut feed).await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].contains(r#""kills":1"#), "{seen:?}");
    }
}
