//! SIGTERM with connections open: idle ones closed at once, an in-flight request
//! answered, exit 0.

use super::*;

/// SIGTERM with idle connections open: they are closed at once (no 10 s wait) and
/// the agent exits 0.
#[test]
fn sigterm_closes_idle_connections_at_once() {
    let mut agent = AgentProcess::start(&[]);
    let mut conns = open_idle(&agent.addr, 200);
    let mut kept_alive = connect(&agent.addr);
    assert_eq!(request(&mut kept_alive, "/healthz"), 200);
    conns.push(kept_alive);
    let start = Instant::now();
    assert!(agent.stop(), "exit 0 on SIGTERM");
    let took = start.elapsed();
    eprintln!("SIGTERM with 201 idle connections: exited after {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// SIGTERM while a request is being handled: it is answered, then the agent exits 0.
#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    // A slow handler: the first check of a costly bcrypt hash (cost 12, a quarter
    // second optimised and longer in a debug build) holds the request in flight.
    let made = Instant::now();
    let hash = bcrypt::hash("pw", 12).unwrap();
    eprintln!("bcrypt cost 12 here: {:?}", made.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("web.yml");
    std::fs::write(&config, format!("basic_auth_users:\n  prom: '{hash}'\n")).unwrap();
    let mut agent = AgentProcess::start_with_options(
        &["--web.config.file", config.to_str().unwrap()],
        &AgentOptions {
            ready_when_listening: true,
            ..AgentOptions::default()
        },
    );
    let addr = agent.addr.clone();
    let scrape = std::thread::spawn(move || {
        let start = Instant::now();
        let got = http_get(
            &addr,
            "/metrics",
            &[("Authorization", "Basic cHJvbTpwdw==")],
        );
        (got.map(|(status, _)| status), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    let sent = Instant::now();
    assert!(agent.stop(), "exit 0 on SIGTERM");
    let (status, took) = scrape.join().unwrap();
    eprintln!(
        "in-flight request: answered {status:?} after {took:?}; the agent exited {:?} after SIGTERM",
        sent.elapsed()
    );
    assert_eq!(status.unwrap(), 200);
    assert!(
        took > Duration::from_millis(100),
        "the request was still in flight at SIGTERM ({took:?})"
    );
}
