//! The HTTP endpoint: `/metrics` (OpenMetrics or classic text, gzip on request) and
//! `/healthz`, served with hyper 1.x until a shutdown signal.

pub mod control;

use crate::metrics::{Exporter, Format};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// What the handlers share.
#[derive(Debug)]
pub struct ServerState {
    exporter: Exporter,
}

impl ServerState {
    pub fn new(exporter: Exporter) -> Self {
        ServerState { exporter }
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
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
        ));
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
    Ok(response)
}

/// Serves HTTP on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let st = state.clone();
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service_fn(move |req| handle(st.clone(), req)));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10s; closing");
        }
    }
}
