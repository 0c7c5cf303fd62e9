//! Single-use, expiring tokens for streaming URLs.
//!
//! `Exec`, `Attach` and `PortForward` store their request under a fresh
//! token and return `/{exec,attach,portforward}/{token}`; the streaming
//! server takes the request back exactly once. Tokens are 32 random bytes in
//! URL-safe base64 (43 characters), live for a minute by default, and at most
//! a fixed number may be outstanding, so a client that asks for URLs without
//! using them cannot grow the table without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::time::Instant;

/// Default token lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Default bound on outstanding tokens.
pub const DEFAULT_CAPACITY: usize = 1000;
/// Random bytes per token.
pub const TOKEN_BYTES: usize = 32;
/// Characters of an encoded token.
pub const TOKEN_LEN: usize = 43;

/// Errors from a [`TokenStore`].
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Too many tokens are outstanding.
    #[error("too many streaming requests in flight (limit {limit})")]
    Full {
        /// The bound.
        limit: usize,
    },
    /// Unknown, already used or expired.
    #[error("unknown or expired streaming token")]
    NotFound,
    /// The system random source failed.
    #[error("cannot generate a random token: {0}")]
    Random(getrandom::Error),
}

/// Outstanding tokens mapping to requests of type `T`.
#[derive(Debug)]
pub struct TokenStore<T> {
    entries: Mutex<HashMap<String, (Instant, T)>>,
    ttl: Duration,
    capacity: usize,
}

impl<T> Default for TokenStore<T> {
    fn default() -> Self {
        Self::new(DEFAULT_TTL, DEFAULT_CAPACITY)
    }
}

impl<T> TokenStore<T> {
    /// A store whose tokens live `ttl`, at most `capacity` at a time.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, T)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `request` and returns its new token; refused when
    /// `capacity` unexpired tokens are outstanding.
    pub fn insert(&self, request: T) -> Result<String, TokenError> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, (expires, _)| *expires > now);
        if entries.len() >= self.capacity {
            return Err(TokenError::Full {
                limit: self.capacity,
            });
        }
        loop {
            let mut raw = [0u8; TOKEN_BYTES];
            getrandom::fill(&mut raw).map_err(TokenError::Random)?;
            let token = URL_SAFE_NO_PAD.encode(raw);
            if !entries.contains_key(&token) {
                entries.insert(token.clone(), (now + self.ttl, request));
                return Ok(token);
            }
        }
    }

    /// Takes the request for `token`: succeeds once, before expiry.
    pub fn take(&self, token: &str) -> Result<T, TokenError> {
        if token.len() != TOKEN_LEN {
            return Err(TokenError::NotFound);
        }
        let now = Instant::now();
        let mut entries = self.lock();
        match entries.remove(token) {
            Some((expires, request)) if expires > now => Ok(request),
            _ => Err(TokenError::NotFound),
        }
    }

    /// Outstanding, unexpired tokens.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, (expires, _)| *expires > now);
        entries.len()
    }

    /// Whether no token is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn single_use() {
        let store = TokenStore::default();
        let t = store.insert("exec c1").expect("insert");
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(store.take(&t).expect("first use"), "exec c1");
        assert!(matches!(store.take(&t), Err(TokenError::NotFound)));
        assert!(matches!(store.take("nope"), Err(TokenError::NotFound)));
        let t2 = store.insert("again").expect("insert");
        assert_ne!(t, t2);
    }

    #[tokio::test(start_paused = true)]
    async fn expires_after_a_minute() {
        let store = TokenStore::default();
        let t = store.insert(1).expect("insert");
        let t2 = store.insert(2).expect("insert");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(store.take(&t).expect("still valid"), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(store.take(&t2), Err(TokenError::NotFound)));
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_is_bounded() {
        let store = TokenStore::new(DEFAULT_TTL, 3);
        let toks: Vec<_> = (0..3).map(|i| store.insert(i).expect("insert")).collect();
        assert!(matches!(
            store.insert(9),
            Err(TokenError::Full { limit: 3 })
        ));
        // Using one frees a slot.
        store.take(&toks[0]).expect("take");
        store.insert(4).expect("slot freed");
        assert!(store.insert(5).is_err());
        // Expiry frees them all.
        tokio::time::advance(DEFAULT_TTL + Duration::from_secs(1)).await;
        store.insert(6).expect("expired ones purged");
        assert_eq!(store.len(), 1);
    }
}
