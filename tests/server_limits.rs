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

/// The flood tests hold thousands of descriptors each and load both cores: one at a time.
static FLOOD: Mutex<()> = Mutex::new(());

const IDLE_CONNECTIONS: usize = 5_000;

/// Lets this test process hold the flood's sockets.
fn raise_own_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur as usize > IDLE_CONNECTIONS + 500,
        "this test needs {} open files; the hard limit is {}",
        IDLE_CONNECTIONS + 500,
        lim.rlim_cur
    );
}

/// The resident size of `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

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

/// What a flood of idle connections did to the agent.
#[derive(Debug)]
struct Flood {
    rss_before: f64,
    rss_during: f64,
    rss_after: f64,
    scrape_during: Duration,
}

/// Holds [`IDLE_CONNECTIONS`] idle connections to `agent`, scrapes while they are
/// open, closes them and waits (up to 10 s) for the resident size to fall under
/// `rss_goal` MiB.
fn flood(agent: &AgentProcess, rss_goal: f64) -> Flood {
    raise_own_nofile();
    timed_scrape(&agent.addr);
    let rss_before = rss_mib(agent.pid());
    let conns = open_idle(&agent.addr, IDLE_CONNECTIONS);
    // Let the agent accept (and, at its cap, turn over) all of them.
    std::thread::sleep(Duration::from_millis(1500));
    let scrape_during = timed_scrape(&agent.addr);
    let rss_during = rss_mib(agent.pid());
    drop(conns);
    // Let the agent see them close before the first look.
    std::thread::sleep(Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rss_after = rss_mib(agent.pid());
    while rss_after >= rss_goal && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        rss_after = rss_mib(agent.pid());
    }
    let f = Flood {
        rss_before,
        rss_during,
        rss_after,
        scrape_during,
    };
    eprintln!("{IDLE_CONNECTIONS} idle connections: {f:?}");
    f
}

/// Starts an agent with `extra` flags as `options` say, floods it, and checks that
/// the scrape during the flood took under 1 s and that its resident size fell back
/// under 40 MiB after.
fn flood_checked(extra: &[&str], options: AgentOptions) -> (AgentProcess, Flood) {
    let agent = AgentProcess::start_with_options(extra, &options);
    let f = flood(&agent, 40.0);
    assert!(
        f.scrape_during < Duration::from_secs(1),
        "scrape took {:?}",
        f.scrape_during
    );
    assert!(
        f.rss_after < 40.0,
        "RSS {:.1} MiB after the flood",
        f.rss_after
    );
    (agent, f)
}

fn nofile(n: u64) -> AgentOptions {
    AgentOptions {
        nofile: Some(n),
        ..AgentOptions::default()
    }
}

/// 5,000 idle connections with the default limits and plenty of descriptors: a
/// scrape is answered at once, and the agent's memory is small afterwards.
#[test]
fn idle_flood_neither_blocks_a_scrape_nor_keeps_memory() {
    let _one = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    flood_checked(&[], nofile(20_000));
}

/// With a cap high enough to let all 5,000 in, the agent's memory grows with them
/// and is handed back to the system once they close.
#[test]
fn memory_taken_by_a_flood_is_returned() {
    let _one = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let (_agent, f) = flood_checked(&["--web.max-connections", "20000"], nofile(20_000));
    assert!(
        f.rss_during > f.rss_before + 20.0,
        "the flood should have cost memory: {f:?}"
    );
}

/// Out of descriptors (256, below the connection cap): the agent closes idle
/// connections to make room, answers the scrape at once, and says so once, not
/// once per failed accept.
#[test]
fn fd_exhaustion_is_survived_and_logged_once() {
    let _one = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let options = AgentOptions {
        stderr: Some(log.clone()),
        ..nofile(256)
    };
    let (mut agent, _) = flood_checked(&[], options);
    // And another one after a burst of new connections that all need descriptors.
    let more = open_idle(&agent.addr, 1_000);
    let again = timed_scrape(&agent.addr);
    drop(more);
    assert!(
        again < Duration::from_secs(1),
        "second scrape took {again:?}"
    );
    assert!(agent.stop(), "clean exit after the flood");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().filter(|l| l.contains("accept failed")).count();
    eprintln!("\"accept failed\" lines: {lines}");
    assert!(
        lines >= 1,
        "the flood should have exhausted descriptors:\n{text}"
    );
    assert!(lines <= 3, "{lines} \"accept failed\" lines:\n{text}");
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

fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).unwrap()
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

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with
/// Debian's `openssl`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let p = Pki { dir };
        p.new_key(
            "ca",
            &[
                "-x509",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=agent test CA",
            ],
        );
        p.leaf(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        p.leaf("client", "extendedKeyUsage=clientAuth\n");
        p
    }

    /// `openssl req` making the P-256 key `<name>.key`, with `args` saying what else.
    fn new_key(&self, name: &str, args: &[&str]) {
        let key = format!("{name}.key");
        let mut all = vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ];
        all.extend(["-nodes", "-keyout", &key]);
        all.extend(args);
        self.openssl(&all);
    }

    /// A key and a certificate signed by the CA, with `extensions` (openssl's syntax).
    fn leaf(&self, name: &str, extensions: &str) {
        let file = |ext: &str| format!("{name}.{ext}");
        std::fs::write(self.path(&file("ext")), extensions).unwrap();
        let subject = format!("/CN={name}");
        self.new_key(name, &["-out", &file("csr"), "-subj", &subject]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &file("csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &file("crt"),
            "-extfile",
            &file("ext"),
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("running openssl (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Writes a web config file next to the certificates (relative paths, as they
    /// are resolved against the file's directory) and returns its path.
    fn web_config(&self, yaml: &str) -> String {
        let path = self.path("web.yml");
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

/// `curl` over HTTPS trusting the test CA: the status code, or `None` when no HTTP
/// response came (TLS refused).
fn curl(url: &str, ca: &str, extra: &[&str]) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "20",
            "--cacert",
            ca,
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("running curl");
    let code: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code != 0).then_some(code)
}

fn tls_agent(web_config: &str) -> AgentProcess {
    AgentProcess::start_with_options(
        &["--web.config.file", web_config],
        &AgentOptions {
            ready_when_listening: true,
            ..AgentOptions::default()
        },
    )
}

/// TLS and basic auth from a web config file: curl gets in with the password and is
/// refused without it; plain HTTP gets nothing; a real Prometheus scrapes through
/// both.
#[test]
fn web_config_tls_and_basic_auth() {
    let pki = Pki::new();
    let hash = bcrypt::hash("scrape-pw", bcrypt::DEFAULT_COST).unwrap();
    let config = pki.web_config(&format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
         basic_auth_users:\n  prometheus: '{hash}'\n"
    ));
    let agent = tls_agent(&config);
    let url = format!("https://{}/metrics", agent.addr);
    let ca = pki.path("ca.crt");
    assert_eq!(curl(&url, &ca, &["-u", "prometheus:scrape-pw"]), Some(200));
    assert_eq!(curl(&url, &ca, &[]), Some(401), "no password");
    assert_eq!(curl(&url, &ca, &["-u", "prometheus:wrong"]), Some(401));
    assert_eq!(curl(&url, &ca, &["-u", "nobody:scrape-pw"]), Some(401));
    let healthz = format!("https://{}/healthz", agent.addr);
    assert_eq!(curl(&healthz, &ca, &[]), Some(401), "every path needs auth");
    // Cached: the second good request costs no bcrypt.
    let start = Instant::now();
    assert_eq!(curl(&url, &ca, &["-u", "prometheus:scrape-pw"]), Some(200));
    eprintln!(
        "a cached authenticated scrape with curl: {:?}",
        start.elapsed()
    );

    // Plain HTTP to the TLS port gets no HTTP response.
    let plain = http_get(&agent.addr, "/metrics", &[]);
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // A real Prometheus, with tls_config and basic_auth.
    let mut prom_config = Config::new(&agent.addr);
    prom_config.tls_ca_file = Some(ca.clone());
    prom_config.basic_auth = Some(("prometheus".into(), "scrape-pw".into()));
    let prom = Prometheus::start_with(&prom_config);
    prom.wait_for(
        Duration::from_secs(30),
        "scraping over TLS with auth",
        |p| {
            p.query("up{job=\"agent\"}")
                .first()
                .is_some_and(|s| value_of(s) == 1.0)
        },
    );
    let build = prom.query("agent_build_info");
    assert_eq!(build.len(), 1, "{build:?}");

    // The same Prometheus with a wrong password sees a 401.
    let mut wrong = prom_config.clone();
    wrong.basic_auth = Some(("prometheus".into(), "nope".into()));
    let prom_wrong = Prometheus::start_with(&wrong);
    prom_wrong.wait_for(Duration::from_secs(30), "reporting the 401", |p| {
        p.api("/api/v1/targets")["activeTargets"]
            .as_array()
            .and_then(|t| t.first())
            .and_then(|t| t["lastError"].as_str())
            .is_some_and(|e| e.contains("401"))
    });
}

/// A renewed certificate written over the old files is served from the next
/// handshake on, without a restart; a half-written one leaves the old one in place.
#[test]
fn web_config_certificate_is_reloaded_when_renewed() {
    let pki = Pki::new();
    let config =
        pki.web_config("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
    let agent = tls_agent(&config);
    let url = format!("https://{}/healthz", agent.addr);
    let renewed = Pki::new();
    let (old_ca, new_ca) = (pki.path("ca.crt"), renewed.path("ca.crt"));
    assert_eq!(curl(&url, &old_ca, &[]), Some(200));
    assert_eq!(curl(&url, &new_ca, &[]), None, "not yet renewed");

    // Half-written: the new certificate with the old key is not used.
    std::fs::copy(renewed.path("server.crt"), pki.path("server.crt")).unwrap();
    assert_eq!(
        curl(&url, &old_ca, &[]),
        Some(200),
        "the old pair still served"
    );
    std::fs::copy(renewed.path("server.key"), pki.path("server.key")).unwrap();
    assert_eq!(
        curl(&url, &new_ca, &[]),
        Some(200),
        "the renewed pair served"
    );
    assert_eq!(curl(&url, &old_ca, &[]), None);
}

/// `RequireAndVerifyClientCert`: only clients with a certificate from the CA get in.
#[test]
fn web_config_client_certificates() {
    let pki = Pki::new();
    let config = pki.web_config(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
         min_version: TLS13\n",
    );
    let agent = tls_agent(&config);
    let url = format!("https://{}/metrics", agent.addr);
    let ca = pki.path("ca.crt");
    let with_cert = [
        "--cert",
        &pki.path("client.crt"),
        "--key",
        &pki.path("client.key"),
    ];
    assert_eq!(curl(&url, &ca, &with_cert), Some(200));
    assert_eq!(curl(&url, &ca, &[]), None, "no client certificate, no TLS");
    assert_eq!(
        curl(&url, &ca, &["--tls-max", "1.2"]),
        None,
        "TLS 1.2 refused"
    );
}

/// A web config the agent cannot use stops it at start-up with one line.
#[test]
fn bad_web_config_is_one_clear_line() {
    let pki = Pki::new();
    let cases = [
        ("tls_server_config: [\n", "not a web config"),
        (
            "tls_server_config:\n  cert_file: server.crt\n",
            "key_file is not",
        ),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
            "missing.crt",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: ca.key\n",
            "the certificate and key",
        ),
        (
            "basic_auth_users:\n  prometheus: hunter2\n",
            "not a bcrypt hash",
        ),
        (
            "basic_auth_user:\n  prometheus: x\n",
            "unknown field `basic_auth_user`",
        ),
    ];
    for (yaml, want) in cases {
        let config = pki.web_config(yaml);
        let out = Command::new(common::agent_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--no-ebpf"])
            .args(["--web.config.file", &config])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{yaml:?} accepted");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{yaml:?}: one error line, got:\n{stderr}");
        assert!(errors[0].contains(want), "{yaml:?}: {}", errors[0]);
        assert!(
            errors[0].contains("web.yml"),
            "names the file: {}",
            errors[0]
        );
    }
    let out = Command::new(common::agent_bin())
        .args(["serve", "--web.config.file", "/nonexistent/web.yml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("reading web config file /nonexistent/web.yml"),
        "{stderr}"
    );
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
