//! The HTTP endpoint: `/metrics` (OpenMetrics or classic text, gzip on request) and
//! `/healthz`, served with hyper 1.x until a shutdown signal, within the limits of
//! [`connections`], over TLS and behind basic auth when a [`web_config`] asks.

mod accept;
pub(crate) mod basic_auth;
pub mod connections;
pub mod control;
pub mod events_file;
mod tls;
pub mod ui;
pub mod web_config;

use crate::metrics::{Exporter, Format};
use accept::{AcceptFailures, Failure};
use bytes::Bytes;
use connections::{Connections, Limits, Registered};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue,
    WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use web_config::WebConfig;

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How many finished handshakes may wait for accept(2). The kernel caps it at
/// `net.core.somaxconn` (4096 on current kernels), as Go servers ask for; tokio's
/// default of 128 overflows in a burst of connections, and a dropped SYN costs the
/// client a one-second retransmit (a scrape that misses its deadline).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the HTTP listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// An error and its sources on one line, `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Hands the heap that freed allocations leave behind back to the system, so the
/// daemon's resident size falls back after a burst (eBPF loading, a connection flood).
pub fn release_free_heap() {
    // SAFETY: malloc_trim only releases free heap memory; no pointers change.
    unsafe { libc::malloc_trim(0) };
}

/// What the handlers share.
#[derive(Debug)]
pub struct ServerState {
    exporter: Exporter,
    /// The web UI, unless `--no-web-ui`.
    ui: Option<ui::Ui>,
}

impl ServerState {
    pub fn new(exporter: Exporter) -> Self {
        ServerState { exporter, ui: None }
    }

    /// Serves the web UI on `/` too.
    pub fn with_ui(mut self, ui: ui::Ui) -> Self {
        self.ui = Some(ui);
        self
    }

    /// Whether [`ServerState::refresh`] has anything to do (cheap: no blocking
    /// work, one poll of the watch).
    pub fn refresh_wanted(&self) -> bool {
        self.exporter.refresh_wanted()
    }

    /// Rescans the cgroup tree if the rescan interval has passed (blocking).
    pub fn refresh(&self) {
        self.exporter.refresh_if_due();
    }

    /// Scrapes (blocking: reads cgroup files). Returns the body and whether it is
    /// gzip-compressed.
    pub fn scrape(&self, format: Format, gzip: bool) -> Result<(Vec<u8>, bool), std::io::Error> {
        let text = self.exporter.scrape(format);
        if !gzip {
            return Ok((text.into_bytes(), false));
        }
        // Fast compression: exposition text compresses ~20x even at level 1, and the
        // scrape path is what must stay cheap.
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(text.len() / 8),
            flate2::Compression::fast(),
        );
        enc.write_all(text.as_bytes())?;
        Ok((enc.finish()?, true))
    }
}

fn accepts_gzip(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

const INDEX: &str = "<html><head><title>agent</title></head><body><h1>agent</h1>\
<p><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/healthz\">/healthz</a></p></body></html>\n";

async fn handle(
    state: Arc<ServerState>,
    web: Arc<WebConfig>,
    req: Request<Incoming>,
) -> Result<Response<ui::Body>, Infallible> {
    // As in the exporters: with users configured, every path needs them.
    if let Some(auth) = &web.basic_auth
        && !auth.allows(req.headers().get(AUTHORIZATION)).await
    {
        let mut r = plain(StatusCode::UNAUTHORIZED, "unauthorized\n");
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        return Ok(r.map(ui::Body::Left));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(
            plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").map(ui::Body::Left),
        );
    }
    if let Some(ui) = &state.ui {
        // Having passed the check above, a request is authenticated exactly when
        // users are configured: only then may argv and paths reach the page.
        let authenticated = web.basic_auth.is_some();
        if let Some(r) = ui::route(
            &state,
            ui,
            req.uri().path(),
            req.uri().query(),
            authenticated,
        )
        .await
        {
            return Ok(r);
        }
    }
    let response = match req.uri().path() {
        "/metrics" => {
            let format =
                Format::from_accept(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
            let gzip = accepts_gzip(&req);
            let st = state.clone();
            match tokio::task::spawn_blocking(move || st.scrape(format, gzip)).await {
                Ok(Ok((body, gzipped))) => {
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(format.content_type()),
                    );
                    if gzipped {
                        r.headers_mut()
                            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    }
                    r
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "scrape failed");
                    plain(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n")
                }
                Err(e) => {
                    tracing::error!(error = %e, "scrape task panicked");
                    plain(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n")
                }
            }
        }
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/" => {
            let mut r = plain(StatusCode::OK, INDEX);
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response.map(ui::Body::Left))
}

/// Serves HTTP (or HTTPS, per `web`) on `listener` until `shutdown` completes, then
/// lets in-flight requests finish (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    web: Arc<WebConfig>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Connections::new(limits);
    let mut failures = AcceptFailures::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let e = match accepted {
            Ok((stream, peer)) => {
                failures.succeeded();
                let registered = connections.admit();
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    registered,
                    state.clone(),
                    web.clone(),
                ));
                continue;
            }
            Err(e) => e,
        };
        let failure = Failure::of(&e);
        let (pause, report) = failures.failed(failure, Instant::now());
        if failure == Failure::Exhausted {
            // Idle connections hold the descriptors a scrape needs: make room.
            connections.evict_idle((connections.open() / 4).max(1));
        }
        if let Some(report) = report {
            tracing::warn!(
                error = %e,
                failures = report.failures,
                open_connections = connections.open(),
                "accept failed; backing off, closing idle connections if out of descriptors (reported at most once a minute)"
            );
        }
        if let Some(pause) = pause {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down");
    connections.close_all();
    tokio::select! {
        _ = connections.drained() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!(open = connections.open(), "connections still open after 10s; closing");
        }
    }
}

/// One client connection, from accept to close: the TLS handshake when configured
/// (bounded by the header timeout), then HTTP/1.1.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    registered: Registered,
    state: Arc<ServerState>,
    web: Arc<WebConfig>,
) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = web.tls.clone() else {
        let io = registered.watch_io(stream);
        return serve_http(io, peer, &registered, state, web).await;
    };
    let handshake = tokio::time::timeout(
        registered.limits().header_read_timeout,
        acceptor.accept(stream),
    );
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = registered.told_to_close() => return,
    };
    let io = registered.watch_io(stream);
    serve_http(io, peer, &registered, state, web).await;
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    registered: &Registered,
    state: Arc<ServerState>,
    web: Arc<WebConfig>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|req| {
        let busy = registered.busy();
        let (state, web) = (state.clone(), web.clone());
        async move {
            let response = handle(state, web, req).await;
            drop(busy);
            response
        }
    });
    // hyper's own header timeout also runs while a keep-alive connection waits for
    // its next request, which would cut the idle timeout short: the registry times
    // headers from their first byte instead. Headers over 16 KiB are refused (431):
    // Prometheus sends under 1 KiB, and it bounds what one connection can make the
    // server buffer.
    let connection = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .max_header_size(16 * 1024)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = registered.serve(connection).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
