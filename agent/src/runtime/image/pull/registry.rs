//! How a pull reaches a registry: plain HTTP only for registries named insecure,
//! TLS trusting the system's CAs plus the user's (`--tls-ca`, and Docker's
//! `/etc/docker/certs.d/<host>/*.crt`), and credentials from a docker-style
//! `config.json`.

use super::super::super::{Error, IoContext, Result};
use base64::Engine;
use oci_client::Reference;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where Docker looks for per-registry CA certificates.
pub const DEFAULT_CERTS_DIR: &str = "/etc/docker/certs.d";

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries (`HOST[:PORT]`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// PEM files of CAs to trust besides the system's.
    pub tls_ca: Vec<PathBuf>,
    /// Docker's `certs.d`: `<dir>/<host[:port]>/*.crt` are trusted for that registry.
    pub certs_dir: PathBuf,
    /// A docker-style `config.json`; `None`: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`, when they exist.
    pub auth_config: Option<PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            tls_ca: Vec::new(),
            certs_dir: PathBuf::from(DEFAULT_CERTS_DIR),
            auth_config: None,
        }
    }
}

/// The host (`HOST[:PORT]`) requests go to; `docker.io` is `index.docker.io`.
pub(super) fn host(reference: &Reference) -> &str {
    reference.resolve_registry()
}

/// The client configuration for pulling `reference`.
pub(super) fn client_config(opts: &RegistryOptions, reference: &Reference) -> Result<ClientConfig> {
    let registry = host(reference);
    let insecure = opts
        .insecure
        .iter()
        .any(|h| h == registry || h == reference.registry());
    let protocol = if insecure {
        ClientProtocol::HttpsExcept(vec![registry.to_string()])
    } else {
        ClientProtocol::Https
    };
    let mut cas: Vec<PathBuf> = opts.tls_ca.clone();
    cas.extend(certs_d(&opts.certs_dir, registry)?);
    let extra_root_certificates = cas
        .iter()
        .map(|path| {
            let data = std::fs::read(path).at("read CA certificate", path)?;
            if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE") {
                return Err(Error::Invalid(format!(
                    "{}: not a PEM certificate",
                    path.display()
                )));
            }
            Ok(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            })
        })
        .collect::<Result<_>>()?;
    Ok(ClientConfig {
        protocol,
        extra_root_certificates,
        // The host's os/architecture out of an index or a manifest list.
        platform_resolver: Some(Box::new(oci_client::client::current_platform_resolver)),
        // Docker's default for max-concurrent-downloads.
        max_concurrent_download: super::PARALLEL_LAYERS,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(120)),
        ..Default::default()
    })
}

/// The `*.crt` files of `certs_dir/<registry>/`, as Docker reads them.
fn certs_d(certs_dir: &Path, registry: &str) -> Result<Vec<PathBuf>> {
    if registry.contains('/') || registry.starts_with('.') {
        return Ok(Vec::new());
    }
    let dir = certs_dir.join(registry);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at("read directory", &dir),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e.at("read directory", &dir)?.path();
        if path.extension().is_some_and(|x| x == "crt") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "registrytoken")]
    registry_token: Option<String>,
}

/// The config.json a pull reads credentials from, if there is one.
fn auth_config_path(opts: &RegistryOptions) -> Option<PathBuf> {
    if let Some(p) = &opts.auth_config {
        return Some(p.clone());
    }
    let candidates = [
        std::env::var_os("DOCKER_CONFIG").map(|d| PathBuf::from(d).join("config.json")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// The hosts an `auths` key may name for Docker Hub.
const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// `https://host:port/v1/` → `host:port`, as Docker matches `auths` keys.
fn auth_key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// The credentials config.json holds for `reference`'s registry; anonymous when it
/// holds none. An explicitly named config that cannot be read is an error.
pub(super) fn credentials(opts: &RegistryOptions, reference: &Reference) -> Result<RegistryAuth> {
    let Some(path) = auth_config_path(opts) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let data = std::fs::read(&path).at("read registry credentials", &path)?;
    let config: DockerConfig = serde_json::from_slice(&data).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    let registry = host(reference);
    let hub = DOCKER_HUB.contains(&registry);
    let entry = config.auths.iter().find_map(|(key, entry)| {
        let h = auth_key_host(key);
        (h == registry || h == reference.registry() || (hub && DOCKER_HUB.contains(&h)))
            .then_some(entry)
    });
    let Some(entry) = entry else {
        return Ok(RegistryAuth::Anonymous);
    };
    let bad = |why: &str| {
        Error::Invalid(format!(
            "{}: the credentials for {registry}: {why}",
            path.display()
        ))
    };
    if let Some(token) = &entry.registry_token {
        return Ok(RegistryAuth::Bearer(token.clone()));
    }
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("\"auth\" is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("\"auth\" is not UTF-8"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| bad("\"auth\" is not USER:PASSWORD"))?;
        return Ok(RegistryAuth::Basic(user.to_string(), pass.to_string()));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(RegistryAuth::Basic(u.clone(), p.clone())),
        _ => Ok(RegistryAuth::Anonymous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(config: &Path) -> RegistryOptions {
        RegistryOptions {
            auth_config: Some(config.to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_come_from_the_matching_auths_entry() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        std::fs::write(
            &path,
            serde_json::json!({"auths": {
                "127.0.0.1:5000": {"auth": auth},
                "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
            }})
            .to_string(),
        )
        .unwrap();
        let r: Reference = "127.0.0.1:5000/a/b:1".parse().unwrap();
        match credentials(&opts(&path), &r).unwrap() {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("alice", "s3:cret")),
            other => panic!("{other:?}"),
        }
        let hub: Reference = "busybox".parse().unwrap();
        assert!(
            matches!(credentials(&opts(&path), &hub).unwrap(), RegistryAuth::Basic(u, _) if u == "bob")
        );
        let other: Reference = "example.org/x".parse().unwrap();
        assert!(matches!(
            credentials(&opts(&path), &other).unwrap(),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn a_broken_config_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("config.json");
        std::fs::write(&path, r#"{"auths": {"h:1": {"auth": "!!"}}}"#).unwrap();
        let r: Reference = "h:1/x".parse().unwrap();
        let err = credentials(&opts(&path), &r).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("not base64"),
            "{err}"
        );
    }

    #[test]
    fn certs_d_gives_the_registrys_crt_files() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("reg.example:5000");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["ca.crt", "client.cert", "client.key", "other.pem"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        assert_eq!(
            certs_d(t.path(), "reg.example:5000").unwrap(),
            vec![dir.join("ca.crt")]
        );
        assert!(certs_d(t.path(), "elsewhere").unwrap().is_empty());
        // A CA file that is not PEM is refused before any connection.
        let r: Reference = "reg.example:5000/x".parse().unwrap();
        let o = RegistryOptions {
            certs_dir: t.path().to_path_buf(),
            ..Default::default()
        };
        let err = client_config(&o, &r).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("not a PEM certificate"), "{err}");
    }

    #[test]
    fn only_named_registries_are_plain_http() {
        let r: Reference = "127.0.0.1:5000/x".parse().unwrap();
        let mut o = RegistryOptions::default();
        assert_eq!(
            client_config(&o, &r).unwrap().protocol,
            ClientProtocol::Https
        );
        o.insecure = vec!["127.0.0.1:5000".into()];
        assert_eq!(
            client_config(&o, &r).unwrap().protocol,
            ClientProtocol::HttpsExcept(vec!["127.0.0.1:5000".into()])
        );
    }
}
