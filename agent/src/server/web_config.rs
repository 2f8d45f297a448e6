//! The web config file of `--web.config.file`, in the format the Prometheus exporters
//! read (their exporter-toolkit): TLS for the listener and basic-auth users with bcrypt
//! hashes. Relative paths in it are relative to the file's directory; unknown keys
//! are errors, as they are there.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional
//!   client_ca_file: ca.crt                         # with a verifying client_auth_type
//!   min_version: TLS12                             # TLS12 (default) or TLS13
//!   max_version: TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...                         # bcrypt hash
//! ```

use super::basic_auth::{BadHash, BasicAuth};
use super::tls;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio_rustls::TlsAcceptor;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebConfigFile {
    tls_server_config: Option<TlsServerConfig>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

/// `tls_server_config`, with its paths made absolute.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_auth_type: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
}

/// Whether and how client certificates are checked (Go's `tls.ClientAuthType` names).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClientAuth {
    #[default]
    #[serde(alias = "")]
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

/// A TLS protocol version as the file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

/// What the server does with the file: TLS, basic auth, both or neither.
#[derive(Default)]
pub struct WebConfig {
    pub tls: Option<TlsAcceptor>,
    pub basic_auth: Option<BasicAuth>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("basic_auth", &self.basic_auth)
            .finish()
    }
}

/// Why a web config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("reading web config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("web config file {}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: Problem,
    },
}

/// What is wrong inside a web config file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("not a web config")]
    Yaml(#[source] serde_yaml_ng::Error),
    #[error("tls_server_config: cert_file is set but key_file is not")]
    MissingKeyFile,
    #[error("tls_server_config: key_file is set but cert_file is not")]
    MissingCertFile,
    #[error("tls_server_config: reading certificates from {}", .0.display())]
    Certs(PathBuf, #[source] rustls_pki_types::pem::Error),
    #[error("tls_server_config: no certificate in {}", .0.display())]
    NoCerts(PathBuf),
    #[error("tls_server_config: reading the private key from {}", .0.display())]
    Key(PathBuf, #[source] rustls_pki_types::pem::Error),
    #[error("tls_server_config: client CA {}", .0.display())]
    ClientCa(PathBuf, #[source] rustls::Error),
    #[error(
        "tls_server_config: client_ca_file needs a client_auth_type that verifies \
         client certificates (VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
    )]
    CaWithoutClientAuth,
    #[error("tls_server_config: client_auth_type {0:?} needs client_ca_file")]
    ClientAuthWithoutCa(ClientAuth),
    #[error(
        "tls_server_config: client_auth_type {0:?} (client certificates that nobody \
         verifies) is not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
    )]
    Unverified(ClientAuth),
    #[error("tls_server_config: {0:?} is not supported (TLS12 and TLS13 are)")]
    OldTls(TlsVersion),
    #[error("tls_server_config: min_version is above max_version")]
    VersionRange,
    #[error("tls_server_config: the certificate and key")]
    CertAndKey(#[source] rustls::Error),
    #[error("tls_server_config: client certificate verification")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error(transparent)]
    BadHash(#[from] BadHash),
}

impl WebConfig {
    /// Reads and checks the file, loading its certificates and keys now, so that a bad
    /// file stops the agent at start-up rather than at the first scrape.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).map_err(|source| WebConfigError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Builds the configuration from the file's text; `dir` anchors relative paths.
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, Problem> {
        // An empty file, like a missing one in the exporters, means plain HTTP.
        let file: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(Problem::Yaml)?
        };
        let tls = match file.tls_server_config {
            Some(mut t) => {
                for p in [&mut t.cert_file, &mut t.key_file, &mut t.client_ca_file]
                    .into_iter()
                    .flatten()
                {
                    *p = dir.join(&*p);
                }
                tls::acceptor(&t)?
            }
            None => None,
        };
        let basic_auth = match file.basic_auth_users {
            Some(users) if !users.is_empty() => Some(BasicAuth::new(users)?),
            _ => None,
        };
        Ok(WebConfig { tls, basic_auth })
    }

    /// A few words for the start-up log.
    pub fn describe(&self) -> &'static str {
        match (self.tls.is_some(), self.basic_auth.is_some()) {
            (true, true) => "https, basic auth",
            (true, false) => "https",
            (false, true) => "http, basic auth",
            (false, false) => "http",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(yaml: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        match WebConfig::parse(yaml, dir.path()) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => crate::server::error_chain(&e),
        }
    }

    #[test]
    fn empty_and_auth_only_files() {
        let dir = Path::new("/");
        let c = WebConfig::parse("", dir).unwrap();
        assert_eq!(c.describe(), "http");
        let hash = bcrypt::hash("pw", 4).unwrap();
        let c = WebConfig::parse(&format!("basic_auth_users:\n  prom: {hash}\n"), dir);
        assert_eq!(c.unwrap().describe(), "http, basic auth");
    }

    #[test]
    fn mistakes_are_named() {
        for (yaml, want) in [
            ("tls_server_config: [", "not a web config"),
            ("tls_sever_config: {}", "unknown field `tls_sever_config`"),
            (
                "tls_server_config:\n  cert_file: a.crt\n",
                "key_file is not",
            ),
            (
                "tls_server_config:\n  key_file: a.key\n",
                "cert_file is not",
            ),
            (
                "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n",
                "reading certificates from",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n",
                "TLS11 is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n",
                "unknown variant `Sometimes`",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: ca\n",
                "client_ca_file needs a client_auth_type",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            ("basic_auth_users:\n  prom: hunter2\n", "not a bcrypt hash"),
        ] {
            let got = problem(yaml);
            assert!(got.contains(want), "{yaml:?}: {got}");
            assert!(!got.contains('\n'), "one line: {got}");
        }
    }
}
