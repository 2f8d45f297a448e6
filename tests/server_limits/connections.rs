//! Idle and slow clients closed on time, and the connection cap.

use super::*;

/// How long until the server closes `s` (at most `wait`); `None` if it stays open.
fn closed_after(s: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => Some(start.elapsed()),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Some(start.elapsed()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        other => panic!("unexpected read: {other:?}"),
    }
}

/// Between requests, a connection is closed after the idle timeout; one in use is not.
#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let agent = AgentProcess::start(&["--web.idle-timeout", "1s"]);
    let mut kept_alive = connect(&agent.addr);
    assert_eq!(request(&mut kept_alive, "/healthz"), 200);
    let answered = Instant::now();
    let closed = closed_after(&mut kept_alive, Duration::from_secs(5)).map(|_| answered.elapsed());
    eprintln!("idle timeout 1s: kept-alive connection closed {closed:?} after its response");
    let t = closed.expect("closed by the server");
    assert!(
        t > Duration::from_millis(900) && t < Duration::from_secs(3),
        "closed after {t:?}"
    );

    // A connection in use is not idle: a request every 400 ms keeps it for 2.4 s.
    let mut busy = connect(&agent.addr);
    for _ in 0..6 {
        assert_eq!(request(&mut busy, "/healthz"), 200);
        std::thread::sleep(Duration::from_millis(400));
    }
    assert_eq!(request(&mut busy, "/healthz"), 200);
}

/// The header timeout runs from a request's first byte, and for a new connection's
/// first request from the connection (as Go's ReadHeaderTimeout): half-sent headers
/// and silent new connections are cut off after it; a kept-alive connection between
/// requests is left to the (longer) idle timeout.
#[test]
fn slow_headers_are_cut_off_by_the_header_timeout() {
    let agent = AgentProcess::start(&[
        "--web.idle-timeout",
        "1m",
        "--web.read-header-timeout",
        "1s",
    ]);
    let mut kept_alive = connect(&agent.addr);
    assert_eq!(request(&mut kept_alive, "/healthz"), 200);
    let since = Instant::now();
    let mut silent = connect(&agent.addr);
    let mut slow = connect(&agent.addr);
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n")
        .unwrap();
    let slow_closed = closed_after(&mut slow, Duration::from_secs(5)).map(|_| since.elapsed());
    let silent_closed = closed_after(&mut silent, Duration::from_secs(5)).map(|_| since.elapsed());
    assert_eq!(
        closed_after(&mut kept_alive, Duration::from_millis(200)),
        None,
        "between requests the idle timeout (1m) applies"
    );
    // The same connection sending half a request after 1.2 s idle is cut off 1 s later.
    let started = Instant::now();
    kept_alive.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let kept_alive_closed =
        closed_after(&mut kept_alive, Duration::from_secs(5)).map(|_| started.elapsed());
    eprintln!(
        "header timeout 1s: half-sent headers closed after {slow_closed:?}, a silent new \
         connection after {silent_closed:?}, half a request on a kept-alive one {kept_alive_closed:?} after its first byte"
    );
    for closed in [slow_closed, silent_closed, kept_alive_closed] {
        let t = closed.expect("closed by the server");
        assert!(
            t > Duration::from_millis(900) && t < Duration::from_secs(3),
            "closed after {t:?}"
        );
    }
}

/// At the cap, a newcomer is served and the connection idle the longest makes room.
#[test]
fn at_the_cap_the_longest_idle_connection_makes_room() {
    let agent = AgentProcess::start(&["--web.max-connections", "3"]);
    let mut oldest_idle = connect(&agent.addr);
    let mut also_idle = connect(&agent.addr);
    let mut active = connect(&agent.addr);
    std::thread::sleep(Duration::from_millis(100));
    // Opened first, but used since: the scraper's keep-alive connection.
    assert_eq!(request(&mut active, "/healthz"), 200);
    std::thread::sleep(Duration::from_millis(100));
    let took = timed_scrape(&agent.addr);
    assert!(took < Duration::from_secs(1), "scrape took {took:?}");
    assert!(
        closed_after(&mut oldest_idle, Duration::from_secs(2)).is_some(),
        "the longest idle connection was closed"
    );
    assert_eq!(
        closed_after(&mut also_idle, Duration::from_millis(300)),
        None
    );
    assert_eq!(
        request(&mut active, "/healthz"),
        200,
        "the active one stays"
    );
}
