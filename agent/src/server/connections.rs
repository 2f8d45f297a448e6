//! The open client connections of the HTTP server: how many there may be, when one is
//! closed for idling or for sending its headers too slowly, which one makes room for a
//! newcomer at the cap, the graceful close of them all at shutdown, and handing the
//! heap back to the system after a flood of them.

use hyper_util::server::graceful::GracefulConnection;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};

/// The server's limits on client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; at the cap, a newcomer makes the least recently
    /// active idle connection close.
    pub max_connections: usize,
    /// A connection waiting for its next request is closed after this long.
    pub idle_timeout: Duration,
    /// A request's headers must arrive within this long of its first byte; a new
    /// connection's first request (TLS handshake included) within this long of the
    /// connection, as Go's `ReadHeaderTimeout` does.
    pub header_read_timeout: Duration,
}

/// How long a closed connection may take to finish the response it is writing.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// A flood counts from this many open connections; when it has drained to an eighth of
/// its peak, the freed heap is handed back to the system.
const FLOOD: usize = 64;

/// Every open connection, by id (ids grow, so a smaller id is an older connection).
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    epoch: Instant,
    inner: Mutex<Inner>,
    /// The number of open connections, for waiting until they are all gone.
    count: watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Arc<Conn>>,
    /// The most connections open at once since the heap was last trimmed.
    high_water: usize,
}

/// One connection's state, shared by its task, its I/O and its request handler.
#[derive(Debug)]
pub struct Conn {
    /// Requests being handled right now.
    in_flight: AtomicU32,
    /// When it last did anything (ms since the registry's epoch).
    last_active: AtomicU64,
    /// When a request whose headers are not complete yet began: its first byte, or
    /// the connection for its first request (ms since the epoch, +1; 0 = none).
    head_since: AtomicU64,
    /// Told to close (evicted, or the server is shutting down).
    closing: AtomicBool,
    close: Notify,
    /// The deadlines changed (a request began arriving, or one was answered).
    rearm: Notify,
}

/// Why a connection was told to close, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    Idle,
    HeaderTimeout,
    Told,
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
            count: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Connections open now, including those told to close that have not yet.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Registers a newly accepted connection. At the cap, the least recently active
    /// idle connection (or, when none is idle, the oldest one, which finishes its
    /// request first) is told to close: a newcomer is always served, so idle sockets
    /// can never lock Prometheus out.
    pub fn admit(self: &Arc<Self>) -> Registered {
        let now = self.now_ms();
        let conn = Arc::new(Conn {
            in_flight: AtomicU32::new(0),
            last_active: AtomicU64::new(now),
            head_since: AtomicU64::new(now + 1),
            closing: AtomicBool::new(false),
            close: Notify::new(),
            rearm: Notify::new(),
        });
        let mut inner = self.lock();
        let live = inner
            .open
            .values()
            .filter(|c| !c.closing.load(Ordering::Relaxed))
            .count();
        if live >= self.limits.max_connections {
            evict(&inner, 1, true);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.open.insert(id, conn.clone());
        inner.high_water = inner.high_water.max(inner.open.len());
        self.count.send_replace(inner.open.len());
        Registered {
            registry: self.clone(),
            id,
            conn,
        }
    }

    /// Tells the least recently active idle connections to close, up to `n`; returns
    /// how many were told. For when the process runs out of file descriptors.
    pub fn evict_idle(&self, n: usize) -> usize {
        evict(&self.lock(), n, false)
    }

    /// Tells every connection to close: idle ones close at once, busy ones after
    /// their response.
    pub fn close_all(&self) {
        for conn in self.lock().open.values() {
            conn.tell_to_close();
        }
    }

    /// Waits until every connection has closed.
    pub async fn drained(&self) {
        let mut rx = self.count.subscribe();
        // The sender lives as long as `self`, so this only ends when the count is 0.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn remove(&self, id: u64) {
        let mut inner = self.lock();
        inner.open.remove(&id);
        let open = inner.open.len();
        self.count.send_replace(open);
        if inner.high_water >= FLOOD && open <= inner.high_water / 8 {
            tracing::debug!(
                peak = inner.high_water,
                open,
                "connection flood drained; returning freed memory"
            );
            inner.high_water = open;
            inner.open.shrink_to_fit();
            drop(inner);
            release_free_heap_in_background();
        }
    }
}

/// Tells up to `n` connections to close, least recently active idle ones first; with
/// `busy_too`, the oldest busy one when no idle one is left.
fn evict(inner: &Inner, n: usize, busy_too: bool) -> usize {
    let mut idle: Vec<(u64, u64, &Arc<Conn>)> = inner
        .open
        .iter()
        .filter(|(_, c)| !c.closing.load(Ordering::Relaxed))
        .filter(|(_, c)| c.in_flight.load(Ordering::Relaxed) == 0)
        .map(|(id, c)| (c.last_active.load(Ordering::Relaxed), *id, c))
        .collect();
    if idle.is_empty() && busy_too {
        let oldest = inner
            .open
            .iter()
            .filter(|(_, c)| !c.closing.load(Ordering::Relaxed))
            .min_by_key(|(id, _)| **id);
        if let Some((_, c)) = oldest {
            c.tell_to_close();
            return 1;
        }
        return 0;
    }
    let n = n.min(idle.len());
    if n == 0 {
        return 0;
    }
    idle.select_nth_unstable_by_key(n - 1, |(active, id, _)| (*active, *id));
    for (_, _, c) in &idle[..n] {
        c.tell_to_close();
    }
    n
}

/// Hands the heap that freed connections leave behind back to the system, off the
/// async workers (with hundreds of megabytes to walk it takes milliseconds).
fn release_free_heap_in_background() {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(super::release_free_heap);
        }
        Err(_) => super::release_free_heap(),
    }
}

impl Conn {
    fn tell_to_close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.close.notify_one();
    }
}

/// A connection's place in the registry; leaving it (drop) removes the connection.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Connections>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

impl Registered {
    pub fn limits(&self) -> Limits {
        self.registry.limits
    }

    /// Marks a request as being handled until the returned guard drops.
    pub fn busy(&self) -> Busy {
        let now = self.registry.now_ms();
        self.conn.in_flight.fetch_add(1, Ordering::Relaxed);
        self.conn.head_since.store(0, Ordering::Relaxed);
        self.conn.last_active.store(now, Ordering::Relaxed);
        Busy {
            registry: self.registry.clone(),
            conn: self.conn.clone(),
        }
    }

    /// Wraps the connection's I/O so that arriving bytes start the header timeout and
    /// written bytes count as activity.
    pub fn watch_io<T>(&self, io: T) -> WatchedIo<T> {
        WatchedIo {
            inner: io,
            registry: self.registry.clone(),
            conn: self.conn.clone(),
        }
    }

    /// Completes when the connection is told to close.
    pub async fn told_to_close(&self) {
        if !self.conn.closing.load(Ordering::Relaxed) {
            self.conn.close.notified().await;
        }
    }

    /// Drives `connection` to its end, closing it when it idles longer than the idle
    /// timeout, takes longer than the header timeout over a request's headers, or is
    /// told to close; a closing connection that does not finish its response within
    /// [`CLOSE_GRACE`] is dropped.
    pub async fn serve<C>(&self, connection: C) -> Result<(), C::Error>
    where
        C: GracefulConnection,
    {
        let mut connection = std::pin::pin!(connection);
        let mut closing: Option<tokio::time::Instant> = None;
        loop {
            let deadline = closing.unwrap_or_else(|| self.next_deadline());
            tokio::select! {
                result = connection.as_mut() => return result,
                _ = self.conn.close.notified(), if closing.is_none() => {
                    if self.half_sent_request() {
                        return Ok(());
                    }
                    connection.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                _ = self.conn.rearm.notified(), if closing.is_none() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    if closing.is_some() {
                        tracing::debug!("connection did not finish closing; dropping it");
                        return Ok(());
                    }
                    if let Some(reason) = self.expired() {
                        tracing::debug!(?reason, "closing connection");
                        if self.half_sent_request() {
                            return Ok(());
                        }
                        self.conn.closing.store(true, Ordering::Relaxed);
                        connection.as_mut().graceful_shutdown();
                        closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                    }
                }
            }
        }
    }

    /// Whether a request has begun to arrive and not yet reached the handler: hyper
    /// would wait for the rest before closing gracefully, so such a connection is
    /// dropped instead (there is no response to finish).
    fn half_sent_request(&self) -> bool {
        self.conn.in_flight.load(Ordering::Relaxed) == 0
            && self.conn.head_since.load(Ordering::Relaxed) != 0
    }

    /// Whether the connection has outstayed a timeout, and which.
    fn expired(&self) -> Option<CloseReason> {
        let now = self.registry.now_ms();
        let limits = self.registry.limits;
        if self.conn.closing.load(Ordering::Relaxed) {
            return Some(CloseReason::Told);
        }
        if self.conn.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head_since = self.conn.head_since.load(Ordering::Relaxed);
        if head_since != 0 {
            let waited = now.saturating_sub(head_since - 1);
            return (waited >= limits.header_read_timeout.as_millis() as u64)
                .then_some(CloseReason::HeaderTimeout);
        }
        let idle = now.saturating_sub(self.conn.last_active.load(Ordering::Relaxed));
        (idle >= limits.idle_timeout.as_millis() as u64).then_some(CloseReason::Idle)
    }

    /// When to look at the connection's timeouts next.
    fn next_deadline(&self) -> tokio::time::Instant {
        let limits = self.registry.limits;
        let head_since = self.conn.head_since.load(Ordering::Relaxed);
        let (from, after) = if self.conn.in_flight.load(Ordering::Relaxed) > 0 {
            // Our own handler is running; look again later.
            (self.registry.now_ms(), limits.idle_timeout)
        } else if head_since != 0 {
            (head_since - 1, limits.header_read_timeout)
        } else {
            (
                self.conn.last_active.load(Ordering::Relaxed),
                limits.idle_timeout,
            )
        };
        let at = self.registry.epoch + Duration::from_millis(from) + after;
        tokio::time::Instant::from_std(at)
    }
}

/// A request in progress; dropping it ends it.
#[derive(Debug)]
pub struct Busy {
    registry: Arc<Connections>,
    conn: Arc<Conn>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .last_active
            .store(self.registry.now_ms(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        // The idle timeout starts now: recompute the connection's deadline.
        self.conn.rearm.notify_one();
    }
}

/// A connection's I/O, watched: the first bytes of a request start its header
/// timeout; bytes written count as activity.
#[derive(Debug)]
pub struct WatchedIo<T> {
    inner: T,
    registry: Arc<Connections>,
    conn: Arc<Conn>,
}

impl<T> WatchedIo<T> {
    /// Bytes written count as activity.
    fn wrote(&self, polled: &Poll<std::io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            let now = self.registry.now_ms();
            self.conn.last_active.store(now, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let conn = &self.conn;
            if conn.in_flight.load(Ordering::Relaxed) == 0
                && conn.head_since.load(Ordering::Relaxed) == 0
            {
                let now = self.registry.now_ms();
                conn.head_since.store(now + 1, Ordering::Relaxed);
                conn.last_active.store(now, Ordering::Relaxed);
                conn.rearm.notify_one();
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            max_connections: max,
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn at_the_cap_the_least_recently_active_idle_connection_makes_room() {
        let reg = Connections::new(limits(2));
        let a = reg.admit();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = reg.admit();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // `a` serves a request now, so `b` is the least recently active idle one.
        let busy = a.busy();
        drop(busy);
        let _c = reg.admit();
        assert!(!a.conn.closing.load(Ordering::Relaxed));
        assert!(b.conn.closing.load(Ordering::Relaxed));
        assert_eq!(reg.open(), 3, "b stays open until its task ends");
        drop(b);
        assert_eq!(reg.open(), 2);
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_the_oldest_finishes_and_closes() {
        let reg = Connections::new(limits(2));
        let a = reg.admit();
        let b = reg.admit();
        let _ba = a.busy();
        let _bb = b.busy();
        let _c = reg.admit();
        assert!(a.conn.closing.load(Ordering::Relaxed));
        assert!(!b.conn.closing.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn evict_idle_skips_busy_connections() {
        let reg = Connections::new(limits(100));
        let conns: Vec<Registered> = (0..4).map(|_| reg.admit()).collect();
        let _busy = conns[0].busy();
        assert_eq!(reg.evict_idle(10), 3);
        assert!(!conns[0].conn.closing.load(Ordering::Relaxed));
        assert_eq!(reg.evict_idle(10), 0, "already told");
    }

    #[tokio::test]
    async fn drained_completes_when_the_last_connection_leaves() {
        let reg = Connections::new(limits(10));
        let a = reg.admit();
        let waiter = tokio::spawn({
            let reg = reg.clone();
            async move { reg.drained().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("drained")
            .expect("no panic");
    }
}
