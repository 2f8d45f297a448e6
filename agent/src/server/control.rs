//! The local control socket: a root-only unix socket that speaks JSON lines.
//!
//! A client sends one request line, e.g.
//! `{"op":"events","container":"web","type":"exec"}`, and gets JSON lines
//! back: for `events`, one [`EventRecord`] per line until it hangs up. A
//! line `{"notice":"lagged","missed":N}` says the client fell behind and N
//! events were skipped; `{"error":"…"}` ends a failed request.
//!
//! Access: the socket file is mode 0600, and every peer's credentials
//! (SO_PEERCRED) are checked: only root, or the user the agent runs as.

use crate::ebpf::{EventKind, EventRecord};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

/// Where `agent serve` listens and `agent events` connects by default.
pub const DEFAULT_SOCKET: &str = "/run/agent/control.sock";

/// Errors of setting up the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is in use by another agent")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket")]
    NotSocket { path: PathBuf },
    #[error("cannot remove stale socket {path}")]
    Stale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot restrict {path} to its owner")]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A request: the first line a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Stream events, optionally only those of one container or one type.
    Events {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        kind: Option<EventKind>,
    },
}

/// A line the agent sends back. Untagged, so each kind is told by its fields:
/// `{"error":"…"}`, `{"notice":"lagged","missed":N}`, or an [`EventRecord`].
/// Read with [`Reply::parse`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// The request failed; the agent hangs up after it.
    Error { error: String },
    /// The client fell behind and `missed` events were skipped.
    Notice { notice: Notice, missed: u64 },
    /// One event.
    Event(Box<EventRecord>),
}

impl Reply {
    /// Reads one line. (serde's untagged enums buffer values in a form that
    /// cannot hold the record's 128-bit timestamp, so the record is read on its own.)
    pub fn parse(line: &str) -> serde_json::Result<Reply> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Control {
            Error { error: String },
            Notice { notice: Notice, missed: u64 },
        }
        match serde_json::from_str::<Control>(line) {
            Ok(Control::Error { error }) => Ok(Reply::Error { error }),
            Ok(Control::Notice { notice, missed }) => Ok(Reply::Notice { notice, missed }),
            Err(_) => serde_json::from_str(line).map(|r| Reply::Event(Box::new(r))),
        }
    }
}

/// What a [`Reply::Notice`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Lagged,
}

/// Binds the socket: creates its directory (mode 0700 when it creates it),
/// replaces a stale socket file, refuses a live one, and makes it mode 0600.
/// Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ControlError::Dir {
                path: dir.to_owned(),
                source,
            })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse {
                    path: path.to_owned(),
                });
            }
            std::fs::remove_file(path).map_err(|source| ControlError::Stale {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(ControlError::NotSocket {
                path: path.to_owned(),
            });
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|source| ControlError::Bind {
        path: path.to_owned(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ControlError::Permissions {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(listener)
}

/// Serves clients until the task is dropped. `events` is the tracer's sender
/// (`Tracer::event_sender`), or `None` when tracing is off.
pub async fn serve(listener: UnixListener, events: Option<broadcast::Sender<Arc<EventRecord>>>) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own_uid = unsafe { libc::geteuid() };
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(err) => {
                tracing::warn!(error = %err, "control socket: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == 0 || cred.uid() == own_uid => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "control socket: refused a non-root client"
                );
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "control socket: no peer credentials; refused");
                continue;
            }
        }
        let events = events.clone();
        tokio::spawn(async move {
            if let Err(err) = handle(stream, events).await {
                tracing::debug!(error = %err, "control socket: client gone");
            }
        });
    }
}

async fn handle(
    stream: UnixStream,
    events: Option<broadcast::Sender<Arc<EventRecord>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Some(line) = lines.next_line().await? else {
        return Ok(());
    };
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(err) => return send_error(&mut write, &format!("bad request: {err}")).await,
    };
    match request {
        Request::Events { container, kind } => {
            let Some(events) = events else {
                return send_error(
                    &mut write,
                    "event tracing is not running (eBPF unavailable on this host)",
                )
                .await;
            };
            let mut rx = events.subscribe();
            loop {
                // Watch the read side too (next_line is cancel-safe), so a
                // client that hangs up is noticed even while no events flow.
                let record = tokio::select! {
                    r = rx.recv() => r,
                    line = lines.next_line() => match line {
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => return Ok(()),
                    },
                };
                let line = match record {
                    Ok(ev) => {
                        if kind.is_some_and(|k| k != ev.kind)
                            || container
                                .as_deref()
                                .is_some_and(|c| !ev.matches_container(c))
                        {
                            continue;
                        }
                        // The same JSON as `Reply::Event`, without copying the record.
                        serde_json::to_string(&*ev).map_err(std::io::Error::other)?
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let notice = Reply::Notice {
                            notice: Notice::Lagged,
                            missed,
                        };
                        serde_json::to_string(&notice).map_err(std::io::Error::other)?
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                };
                write.write_all(line.as_bytes()).await?;
                write.write_all(b"\n").await?;
            }
        }
    }
}

async fn send_error(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    message: &str,
) -> std::io::Result<()> {
    let reply = Reply::Error {
        error: message.to_owned(),
    };
    let line = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
    write.write_all(line.as_bytes()).await?;
    write.write_all(b"\n").await
}
