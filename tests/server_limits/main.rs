//! `agent serve` against hostile and careless clients, and behind a web config file:
//! thousands of idle connections (a scrape still answers at once, and the memory they
//! took is handed back), file-descriptor exhaustion (survived, and logged once, not as
//! a flood), idle and slow clients closed on time, the connection cap, SIGTERM with
//! connections open; TLS and basic auth checked with curl and a real Prometheus.
//! Needs no root.

use agent_test_support as common;

use common::prometheus::{Config, Prometheus, value_of};
use common::{AgentOptions, AgentProcess, http_get};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod connections;
mod flood;
mod shutdown;
mod web_config;

/// Opens `n` connections that never send anything.
fn open_idle(addr: &str, n: usize) -> Vec<TcpStream> {
    let addr = addr.parse().unwrap();
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("idle connection {i} of {n}: {e}"))
        })
        .collect()
}

/// GETs /metrics on a fresh connection, giving up after 10 s; returns how long it took.
fn timed_scrape(addr: &str) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(10))
        .expect("connecting for a scrape");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).expect("reading the scrape");
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:.200}");
    assert!(text.contains("agent_build_info"), "{text:.200}");
    took
}

/// Reads one HTTP response (headers and a Content-Length body) off a keep-alive
/// connection; returns its status.
fn read_response(s: &mut TcpStream) -> u16 {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed mid-response"
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn request(s: &mut TcpStream, path: &str) -> u16 {
    write!(s, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").unwrap();
    read_response(s)
}

fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).unwrap()
}
