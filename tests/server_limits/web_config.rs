//! TLS, basic auth and client certificates from a web config file, checked with curl
//! and a real Prometheus; certificate reload; a bad config is one clear line.

use super::*;

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
