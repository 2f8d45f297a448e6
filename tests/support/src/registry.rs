//! A real OCI distribution registry (Debian's `docker-registry`) on 127.0.0.1 for
//! pull tests and benchmarks: TLS from a CA made here with openssl, htpasswd
//! (bcrypt) auth, its own storage directory, and skopeo to push images to it. The
//! registry is killed and its files removed on drop.

use crate::token_server::{self, TokenServer};
use base64::Engine;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user the registry lets in.
pub const USER: &str = "puller";
/// Its password.
pub const PASSWORD: &str = "s3cret:with-colon";

/// A running registry.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The CA that signed the registry's certificate (PEM).
    pub ca: PathBuf,
    /// A directory holding `ca.crt`, as skopeo's `--dest-cert-dir` wants it.
    pub cert_dir: PathBuf,
    /// A docker-style config.json with the registry's credentials.
    pub auth_config: PathBuf,
    /// The registry's storage root.
    pub storage: PathBuf,
    /// The bearer-token server, when the registry wants tokens.
    pub tokens: Option<TokenServer>,
}

/// How the registry authenticates clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Basic auth against an htpasswd file (bcrypt).
    Htpasswd,
    /// Bearer tokens from a token server that takes the same user and password.
    Token,
}

/// Why a registry cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    for (bin, pkg) in [
        ("/usr/bin/docker-registry", "docker-registry"),
        ("/usr/bin/skopeo", "skopeo"),
        ("/usr/bin/openssl", "openssl"),
    ] {
        if !Path::new(bin).exists() {
            return Some(format!("{bin} missing (apt-get install {pkg})"));
        }
    }
    None
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA and a certificate for 127.0.0.1 signed by it in `dir`; returns
/// (ca.crt, server.crt, server.key).
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509"])
        .args(ec)
        .args(["-days", "2", "-subj", "/CN=agent pull test CA"])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    run(Command::new("openssl")
        .arg("req")
        .args(ec)
        .args(["-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.crt")));
    (p("ca.crt"), p("server.crt"), p("server.key"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Registry {
    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a registry with htpasswd auth; `None` (after printing why) when it
    /// cannot run here.
    pub fn start() -> Option<Registry> {
        Self::start_with(Auth::Htpasswd)
    }

    /// Starts a registry that authenticates as `auth` says.
    pub fn start_with(auth: Auth) -> Option<Registry> {
        if let Some(reason) = skip_reason() {
            eprintln!("SKIPPED: {reason}");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("agent-registry")
            .tempdir()
            .expect("tempdir");
        let (ca, cert, key) = make_certs(dir.path());
        let cert_dir = dir.path().join("skopeo-certs");
        std::fs::create_dir_all(&cert_dir).unwrap();
        std::fs::copy(&ca, cert_dir.join("ca.crt")).unwrap();
        let hash = bcrypt::hash_with_result(PASSWORD, 4)
            .expect("bcrypt")
            .format_for_version(bcrypt::Version::TwoY);
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{USER}:{hash}\n")).unwrap();
        let tokens = (auth == Auth::Token).then(|| TokenServer::start(dir.path(), USER, PASSWORD));
        let auth_section = match &tokens {
            None => format!(
                "  htpasswd:\n    realm: agent-test\n    path: {}\n",
                htpasswd.display()
            ),
            Some(t) => format!(
                "  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                token_server::SERVICE,
                token_server::ISSUER,
                t.cert.display()
            ),
        };
        let storage = dir.path().join("storage");
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n\
                 auth:\n{auth_section}",
                storage.display(),
                cert.display(),
                key.display(),
            ),
        )
        .unwrap();
        let auth_config = dir.path().join("docker-config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        std::fs::write(
            &auth_config,
            format!(r#"{{"auths": {{"{addr}": {{"auth": "{auth}"}}}}}}"#),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Registry {
            child,
            dir,
            addr,
            ca,
            cert_dir,
            auth_config,
            storage,
            tokens,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!(
                    "docker-registry exited ({status}): {}",
                    std::fs::read_to_string(registry.dir.path().join("registry.log"))
                        .unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "docker-registry never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }

    /// `ADDR/REPO:TAG`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// `skopeo copy SOURCE docker://ADDR/REPO_TAG` with the registry's credentials
    /// and CA, plus `extra` flags (e.g. `--all`, `--dest-compress-format zstd`).
    pub fn push(&self, source: &str, repo_tag: &str, extra: &[&str]) {
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--retry-times", "0"])
            .args(extra)
            .arg("--dest-creds")
            .arg(format!("{USER}:{PASSWORD}"))
            .arg("--dest-cert-dir")
            .arg(&self.cert_dir)
            .arg(source)
            .arg(format!("docker://{}", self.reference(repo_tag))));
    }

    /// The manifest of `repo_tag` as the registry serves it (`skopeo inspect --raw`).
    pub fn raw_manifest(&self, repo_tag: &str) -> serde_json::Value {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--creds"])
            .arg(format!("{USER}:{PASSWORD}"))
            .arg("--cert-dir")
            .arg(&self.cert_dir)
            .arg(format!("docker://{}", self.reference(repo_tag)))
            .output()
            .expect("skopeo inspect");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("manifest JSON")
    }

    /// Where the registry keeps the blob `sha256:<hex>`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The flags `agent pull` needs to reach this registry.
    pub fn pull_flags(&self) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.ca.display().to_string(),
            "--registry-config".into(),
            self.auth_config.display().to_string(),
        ]
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
