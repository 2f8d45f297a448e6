//! Turns a web config's `tls_server_config` into a rustls server (ring as the crypto
//! provider): the certificate chain and key, the TLS versions, and client
//! certificates verified against `client_ca_file` when asked. Only HTTP/1.1 is offered
//! by ALPN, as that is what the server speaks. The certificate and key are read again
//! when their files change, so a renewed certificate is served without a restart.

use super::web_config::{ClientAuth, Problem, TlsServerConfig, TlsVersion};
use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;

/// The TLS acceptor `config` describes; `None` when it names neither a certificate nor
/// a key (the exporters then serve plain HTTP too).
pub fn acceptor(config: &TlsServerConfig) -> Result<Option<TlsAcceptor>, Problem> {
    let (cert_file, key_file) = match (&config.cert_file, &config.key_file) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(Problem::MissingKeyFile),
        (None, Some(_)) => return Err(Problem::MissingCertFile),
        (Some(c), Some(k)) => (c, k),
    };
    let versions = versions(config.min_version, config.max_version)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(Problem::CertAndKey)?;
    let builder = match (config.client_auth_type, &config.client_ca_file) {
        (ClientAuth::NoClientCert, None) => builder.with_no_client_auth(),
        (ClientAuth::NoClientCert, Some(_)) => return Err(Problem::CaWithoutClientAuth),
        (auth @ (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert), _) => {
            return Err(Problem::Unverified(auth));
        }
        (auth, None) => return Err(Problem::ClientAuthWithoutCa(auth)),
        (auth, Some(ca_file)) => {
            let roots = Arc::new(client_roots(ca_file)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let verifier = if auth == ClientAuth::VerifyClientCertIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(Problem::Verifier)?)
        }
    };
    let certificate = ReloadingCert::new(cert_file, key_file, provider)?;
    let mut server = builder.with_cert_resolver(Arc::new(certificate));
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// The protocol versions from `min` to `max` (default: TLS 1.2 to 1.3).
fn versions(
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Result<Vec<&'static SupportedProtocolVersion>, Problem> {
    let min = min.unwrap_or(TlsVersion::TLS12);
    let max = max.unwrap_or(TlsVersion::TLS13);
    for v in [min, max] {
        if v < TlsVersion::TLS12 {
            return Err(Problem::OldTls(v));
        }
    }
    if min > max {
        return Err(Problem::VersionRange);
    }
    Ok([
        (TlsVersion::TLS12, &rustls::version::TLS12),
        (TlsVersion::TLS13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (min..=max).contains(v))
    .map(|(_, p)| p)
    .collect())
}

/// What a file looked like when it was read: modification time and size.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The server certificate and key, read again at a handshake when either file has
/// changed (the exporters read theirs at every handshake). A changed pair that cannot
/// be used (half-written, mismatched) is reported once and the previous one served.
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<([Stamp; 2], Arc<CertifiedKey>)>,
}

impl ReloadingCert {
    fn new(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, Problem> {
        let stamps = [stamp(cert_file), stamp(key_file)];
        let key = certified_key(cert_file, key_file, &provider)?;
        Ok(ReloadingCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            current: Mutex::new((stamps, Arc::new(key))),
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamps = [stamp(&self.cert_file), stamp(&self.key_file)];
        let mut current = self.current.lock();
        if current.0 != stamps {
            current.0 = stamps;
            match certified_key(&self.cert_file, &self.key_file, &self.provider) {
                Ok(key) => {
                    current.1 = Arc::new(key);
                    tracing::info!(cert_file = %self.cert_file.display(), "TLS certificate reloaded");
                }
                Err(e) => tracing::warn!(
                    error = %super::error_chain(&e),
                    "TLS certificate files changed but cannot be used; serving the previous certificate"
                ),
            }
        }
        Some(current.1.clone())
    }
}

fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Problem> {
    CertifiedKey::from_der(certificates(cert_file)?, private_key(key_file)?, provider)
        .map_err(Problem::CertAndKey)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Problem::Certs(path.to_path_buf(), e))?;
    if certs.is_empty() {
        return Err(Problem::NoCerts(path.to_path_buf()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Problem> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Problem::Key(path.to_path_buf(), e))
}

fn client_roots(path: &Path) -> Result<RootCertStore, Problem> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| Problem::ClientCa(path.to_path_buf(), e))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ranges() {
        let names =
            |min, max| versions(min, max).map(|v| v.iter().map(|p| p.version).collect::<Vec<_>>());
        assert_eq!(names(None, None).unwrap().len(), 2);
        assert_eq!(
            names(Some(TlsVersion::TLS13), None).unwrap(),
            vec![rustls::ProtocolVersion::TLSv1_3]
        );
        assert!(matches!(
            names(Some(TlsVersion::TLS13), Some(TlsVersion::TLS12)),
            Err(Problem::VersionRange)
        ));
        assert!(matches!(
            names(Some(TlsVersion::TLS10), None),
            Err(Problem::OldTls(TlsVersion::TLS10))
        ));
    }
}
