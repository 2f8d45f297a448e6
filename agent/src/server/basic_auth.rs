//! HTTP basic authentication against the bcrypt hashes of a web config file, as the
//! Prometheus exporters check it. bcrypt is slow on purpose (tens of milliseconds at
//! cost 10), so a scraper's repeated good credentials are answered from a small
//! cache of successes, and hashes are compared one at a time: a client sending wrong
//! passwords can keep at most one core busy, and never delays a cached scraper.

use base64::Engine as _;
use hyper::header::HeaderValue;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// How many successful (user, password) pairs are remembered.
const CACHE_SIZE: usize = 64;

/// A valid bcrypt hash (cost 10) of a password nobody has: checked for unknown
/// users, so that their answer takes as long as a known user's.
const UNKNOWN_USER_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// A user whose hash is not a bcrypt hash.
#[derive(Debug, thiserror::Error)]
#[error("basic_auth_users: the hash of user {user:?} is not a bcrypt hash")]
pub struct BadHash {
    pub user: String,
    #[source]
    pub source: bcrypt::BcryptError,
}

/// The users allowed in, and what has been verified already.
#[derive(Debug)]
pub struct BasicAuth {
    /// User name → bcrypt hash.
    users: BTreeMap<String, String>,
    /// SHA-256 digests of (user, password, hash) that bcrypt accepted, most recently
    /// used last.
    verified: Arc<Mutex<VecDeque<[u8; 32]>>>,
    /// One bcrypt comparison at a time, also when the client that asked has left.
    bcrypt: Arc<Semaphore>,
}

impl BasicAuth {
    /// Checks that every hash is a bcrypt hash.
    pub fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, BadHash> {
        for (user, hash) in &users {
            hash.parse::<bcrypt::HashParts>()
                .map_err(|source| BadHash {
                    user: user.clone(),
                    source,
                })?;
        }
        Ok(BasicAuth {
            users,
            verified: Arc::new(Mutex::new(VecDeque::with_capacity(CACHE_SIZE))),
            bcrypt: Arc::new(Semaphore::new(1)),
        })
    }

    /// Whether the `Authorization` header names a user and their password.
    pub async fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let known = self.users.get(&user);
        let hash = known.map_or(UNKNOWN_USER_HASH, String::as_str);
        let key = cache_key(&user, &password, hash);
        if self.remembered(&key) {
            return true;
        }
        let Ok(permit) = self.bcrypt.clone().acquire_owned().await else {
            return false;
        };
        // Another request may have verified the same credentials while this one waited.
        if self.remembered(&key) {
            return true;
        }
        // The comparison finishes, and remembers a success, even if the client gives
        // up meanwhile: a scraper whose first try timed out is answered from the cache
        // next time, and clients that hang up cannot start comparisons side by side.
        let hash = hash.to_string();
        let known = known.is_some();
        let verified = self.verified.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Unknown users are compared too (against a hash nobody matches), so the
            // answer's timing does not tell which users exist.
            let matches = bcrypt::verify(password, &hash).unwrap_or(false);
            let ok = matches && known;
            if ok {
                remember(&verified, key);
            }
            ok
        })
        .await
        .unwrap_or(false)
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        let mut cache = self.verified.lock();
        let Some(pos) = cache.iter().position(|k| k == key) else {
            return false;
        };
        // Most recently used last, so a busy scraper's entry is never the one dropped.
        if let Some(k) = cache.remove(pos) {
            cache.push_back(k);
        }
        true
    }
}

fn remember(cache: &Mutex<VecDeque<[u8; 32]>>, key: [u8; 32]) {
    let mut cache = cache.lock();
    if cache.len() == CACHE_SIZE {
        cache.pop_front();
    }
    cache.push_back(key);
}

/// The user and password of a `Basic` authorization header.
pub(crate) fn credentials(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A digest of the credentials, so the cache never holds a password.
fn cache_key(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [user, password, hash] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {b64}")).unwrap()
    }

    fn auth() -> BasicAuth {
        // Cost 4, the least bcrypt allows, to keep the test quick.
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        BasicAuth::new(BTreeMap::from([("prom".to_string(), hash)])).unwrap()
    }

    #[tokio::test]
    async fn right_password_only() {
        let a = auth();
        assert!(a.allows(Some(&header("prom", "s3cret"))).await);
        assert!(!a.allows(Some(&header("prom", "wrong"))).await);
        assert!(!a.allows(Some(&header("nobody", "s3cret"))).await);
        assert!(!a.allows(None).await);
        assert!(
            !a.allows(Some(&HeaderValue::from_static("Bearer abc")))
                .await
        );
        assert!(!a.allows(Some(&HeaderValue::from_static("Basic !!!"))).await);
    }

    #[tokio::test]
    async fn successes_are_cached_and_bounded() {
        let a = auth();
        assert!(a.allows(Some(&header("prom", "s3cret"))).await);
        assert_eq!(a.verified.lock().len(), 1);
        assert!(a.allows(Some(&header("prom", "s3cret"))).await);
        assert_eq!(a.verified.lock().len(), 1, "a hit is not stored twice");
        assert!(!a.allows(Some(&header("prom", "wrong"))).await);
        assert_eq!(a.verified.lock().len(), 1, "failures are not cached");
        for i in 0..CACHE_SIZE + 10 {
            remember(&a.verified, cache_key("u", &i.to_string(), "h"));
        }
        assert_eq!(a.verified.lock().len(), CACHE_SIZE);
    }

    #[test]
    fn bad_hashes_are_refused_and_the_unknown_user_hash_is_valid() {
        let err =
            BasicAuth::new(BTreeMap::from([("u".to_string(), "plain".to_string())])).unwrap_err();
        assert!(err.to_string().contains("\"u\""), "{err}");
        assert!(UNKNOWN_USER_HASH.parse::<bcrypt::HashParts>().is_ok());
    }
}
