//! The agent's own web UI on the `/metrics` port: the container table on `/`, a
//! page per container with 15 minutes of charts (`/containers/<id-or-name>`), and
//! a live feed of exec, mount and OOM events (`/events`, server-sent events).
//!
//! Self-contained: the script and the style sheet are compiled in
//! (`include_str!`), nothing is fetched from elsewhere, and the table reads the
//! same without JavaScript. Cost: the history is fed by the scrapes Prometheus
//! makes anyway; only when no scrape came for [`IDLE_SAMPLE`] (or, while no page
//! was opened for the history's 15 minutes, for [`UNVIEWED_SAMPLE`]) does a
//! background task read the cgroups itself (one read of every cgroup, no
//! encoding). The feed subscribes to the tracer only while a page is open.

pub mod feed;
pub mod history;
pub mod html;

use super::ServerState;
use crate::ebpf::EventRecord;
use crate::metrics::ReadingSink;
use crate::runtime::{Paths, inspect, state};
use bytes::Bytes;
use history::{Field, History, STEP, Series};
use html::Capacity;
use http_body_util::{Either, Full};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// What every response of the server carries: a whole body, or the live feed.
pub type Body = Either<Full<Bytes>, feed::EventStream>;

/// With no reading for this long (nobody scrapes), the background task reads.
pub const IDLE_SAMPLE: Duration = Duration::from_secs(20);
/// The same while no page was opened for the history's whole span: a sparser
/// history (one point a minute) for whoever opens the first page, at a third of
/// the cost (at 1000 cgroups a reading is ~13,000 file reads).
pub const UNVIEWED_SAMPLE: Duration = Duration::from_secs(60);
/// A page asked for with readings older than this reads first.
const PAGE_FRESH: Duration = Duration::from_secs(10);

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// No script from elsewhere, no inline script; inline styles only for the bars.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The UI's state.
#[derive(Debug)]
pub struct Ui {
    pub history: Arc<History>,
    /// The tracer's broadcast sender, when tracing runs.
    events: Option<broadcast::Sender<Arc<EventRecord>>>,
    /// The tracer reports OOM kills itself (an OOM hook is live).
    oom_traced: bool,
    /// The agent's state root, for its own containers' pages.
    state: Paths,
    capacity: Capacity,
    version: &'static str,
    /// `--flag`, value: what `agent serve` runs with.
    flags: Vec<(String, String)>,
}

impl ReadingSink for History {
    fn record(&self, samples: &[crate::container::Sample<'_>]) {
        History::record(self, samples);
    }
}

impl Ui {
    pub fn new(
        history: Arc<History>,
        events: Option<broadcast::Sender<Arc<EventRecord>>>,
        oom_traced: bool,
        state_dir: PathBuf,
        machine: &crate::machine::MachineFacts,
        flags: Vec<(String, String)>,
    ) -> Self {
        Ui {
            history,
            events,
            oom_traced,
            state: Paths::new(state_dir),
            capacity: Capacity {
                cores: machine.cpu_cores.unwrap_or(0) as f64,
                memory: machine.memory_bytes.unwrap_or(0) as f64,
            },
            version: env!("CARGO_PKG_VERSION"),
            flags,
        }
    }

    /// The rows of what `agent inspect` shows of the agent's own container `name`:
    /// status, limits, namespaces and overlay directories (its command only with
    /// `full`: argv is sensitive). `None` when it is not one of the agent's.
    fn inspect_rows(&self, name: &str, full: bool) -> Option<String> {
        let st = state::find(&self.state, name).ok()?;
        let doc = inspect::document(&self.state, &st).ok()?;
        let mut out = String::new();
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "none".to_owned(),
            v => v.to_string(),
        };
        html::row(&mut out, "container id", &st.id);
        html::row(&mut out, "status", &st.status.to_string());
        if let Some(pid) = st.pid {
            html::row(&mut out, "pid", &pid.to_string());
        }
        if full {
            html::row(&mut out, "command", &st.command.join(" "));
        }
        if let Some(limits) = doc.get("limits").and_then(|l| l.as_object()) {
            for (k, v) in limits {
                html::row(&mut out, &format!("limit {k}"), &text(v));
            }
        }
        let ns = doc
            .get("live_namespaces")
            .or_else(|| doc.get("namespaces"))
            .and_then(|n| n.as_object());
        for (k, v) in ns.into_iter().flatten() {
            html::row(
                &mut out,
                &format!("namespace {k}"),
                &format!("{k}:[{}]", text(v)),
            );
        }
        let r = &st.rootfs;
        html::row(&mut out, "overlay upperdir", &r.upperdir.to_string_lossy());
        html::row(&mut out, "overlay workdir", &r.workdir.to_string_lossy());
        html::row(&mut out, "overlay merged", &r.merged.to_string_lossy());
        for (i, l) in r.lowerdirs.iter().enumerate() {
            html::row(
                &mut out,
                &format!("overlay lowerdir {i}"),
                &l.to_string_lossy(),
            );
        }
        if let Some(lower) = doc.get("overlay_lower").and_then(|v| v.as_str()) {
            html::row(&mut out, "overlay lower file", lower);
        }
        Some(out)
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(body.into())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn not_found(what: &str) -> Response<Body> {
    let mut out = String::from("no such container: ");
    html::escape(&mut out, what);
    out.push('\n');
    respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", out)
}

/// Reads the cgroups now unless a reading is recent (blocking, off the runtime).
async fn ensure_fresh(state: &Arc<ServerState>, ui: &Ui, fresh: Duration) {
    ui.history.viewed();
    if ui.history.since_last_record().is_some_and(|d| d < fresh) {
        return;
    }
    let st = state.clone();
    if tokio::task::spawn_blocking(move || st.exporter.read_for_sink())
        .await
        .is_err()
    {
        tracing::error!("UI reading panicked");
    }
}

/// The query parameter `name`, decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| html::url_decode(v))
}

/// Serves the UI's paths; `None` for paths that are not the UI's. `full` says the
/// request passed the web config's basic auth (argv and paths may be shown).
pub async fn route(
    state: &Arc<ServerState>,
    ui: &Ui,
    path: &str,
    query: Option<&str>,
    full: bool,
) -> Option<Response<Body>> {
    let response = match path {
        "/" => {
            ensure_fresh(state, ui, PAGE_FRESH).await;
            let page = ui.history.with_series(|all| {
                let mut series: Vec<&Series> =
                    all.values().map(|s| &**s).filter(|s| s.id != "/").collect();
                html::index(&mut series, ui.capacity, ui.version, &ui.flags, full)
            });
            respond(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        "/ui/app.js" => {
            let mut r = respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS);
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
            r
        }
        "/ui/style.css" => {
            let mut r = respond(StatusCode::OK, "text/css; charset=utf-8", STYLE_CSS);
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
            r
        }
        "/events" => {
            let key = query_param(query, "container");
            let oom = feed::oom_notices(&ui.history, ui.events.is_some() && ui.oom_traced);
            let stream = feed::start(ui.events.as_ref(), oom, key, full);
            let mut r = Response::new(Either::Right(stream));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        _ => {
            if let Some(rest) = path.strip_prefix("/api/containers/")
                && let Some(key) = rest.strip_suffix("/history")
            {
                let key = html::url_decode(key)?;
                ensure_fresh(state, ui, STEP * 2).await;
                let json = ui.history.with_series(|all| {
                    all.values()
                        .find(|s| s.matches(&key))
                        .map(|s| history_json(s))
                });
                return Some(match json {
                    Some(json) => respond(StatusCode::OK, "application/json", json),
                    None => not_found(&key),
                });
            }
            let key = html::url_decode(path.strip_prefix("/containers/")?)?;
            ensure_fresh(state, ui, PAGE_FRESH).await;
            let found = ui.history.with_series(|all| {
                all.values()
                    .find(|s| s.matches(&key))
                    .map(|s| (s.name.clone(), s.runtime))
            });
            let Some((name, runtime)) = found else {
                return Some(not_found(&key));
            };
            // Reads the state dir: off the lock.
            let inspect = (runtime == "agent" && !name.is_empty())
                .then(|| ui.inspect_rows(&name, full))
                .flatten();
            let page = ui.history.with_series(|all| {
                all.values()
                    .find(|s| s.matches(&key))
                    .map(|s| html::container(s, &key, inspect.as_deref(), ui.version, full))
            });
            match page {
                Some(page) => respond(StatusCode::OK, "text/html; charset=utf-8", page),
                None => not_found(&key),
            }
        }
    };
    Some(response)
}

/// A container's ring as JSON: `times` (Unix s) and one array per field.
fn history_json(s: &Series) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "{{\"step_seconds\":{},\"bytes_per_container\":{},\"times\":[",
        STEP.as_secs(),
        history::RING_BYTES
    );
    for (i, (t, _)) in s.slots().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{t}");
    }
    out.push(']');
    for (f, field) in Field::ALL.iter().enumerate() {
        let _ = write!(out, ",\"{}\":[", field.key());
        for (i, (_, v)) in s.slots().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = v[f];
            if v.is_finite() {
                let _ = write!(out, "{v}");
            } else {
                out.push('0');
            }
        }
        out.push(']');
    }
    out.push('}');
    out
}

/// Keeps the history going while nobody scrapes: reads every cgroup when no
/// reading came for [`IDLE_SAMPLE`] ([`UNVIEWED_SAMPLE`] while nobody opened a
/// page in the history's span). With Prometheus scraping more often than that,
/// it never reads.
pub async fn sample_when_idle(state: Arc<ServerState>, ui_history: Arc<History>) {
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let span = STEP * history::SLOTS as u32;
        let wait = match ui_history.since_last_view() {
            Some(d) if d < span => IDLE_SAMPLE,
            _ => UNVIEWED_SAMPLE,
        };
        if ui_history.since_last_record().is_some_and(|d| d < wait) {
            continue;
        }
        let st = state.clone();
        if tokio::task::spawn_blocking(move || st.exporter.read_for_sink())
            .await
            .is_err()
        {
            tracing::error!("background UI reading panicked");
        }
    }
}
