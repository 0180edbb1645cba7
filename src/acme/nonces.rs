//! Nonces left over from finished orders, kept for the next order's first request.
//!
//! Every ACME POST needs a fresh nonce (RFC 8555 §7.2). instant-acme takes a nonce from each
//! response for the next request of the same order, but starts every new order with a HEAD
//! on newNonce: one round trip per certificate that carries nothing. The nonce of the last
//! response of an order (the certificate download) is never used by anyone, so it is kept
//! here and handed out instead of the next HEAD. A nonce the CA has expired meanwhile only
//! costs the `badNonce` retry every request already has, so the pool keeps them briefly.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Nonces older than this are not handed out (CAs expire unused nonces).
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// Nonces kept per CA.
pub const MAX_PER_ORIGIN: usize = 32;

/// Unused nonces by origin (`scheme://host:port` of the CA).
#[derive(Debug, Default)]
pub struct NoncePool {
    by_origin: HashMap<String, Vec<(Instant, String)>>,
}

impl NoncePool {
    /// Keeps `nonce`, received from `origin` at `now`.
    pub fn put(&mut self, origin: &str, nonce: String, now: Instant) {
        let list = self.by_origin.entry(origin.to_owned()).or_default();
        list.retain(|(at, _)| now.saturating_duration_since(*at) < MAX_AGE);
        if list.len() >= MAX_PER_ORIGIN {
            list.remove(0);
        }
        list.push((now, nonce));
    }

    /// The newest unused nonce from `origin` that is still young enough, removed from the
    /// pool (a nonce is good for one request only).
    pub fn take(&mut self, origin: &str, now: Instant) -> Option<String> {
        let list = self.by_origin.get_mut(origin)?;
        list.retain(|(at, _)| now.saturating_duration_since(*at) < MAX_AGE);
        list.pop().map(|(_, n)| n)
    }
}

/// The origin (`scheme://authority`) of a URL, the key nonces are kept under: a nonce is
/// only ever offered to the server that issued it.
pub fn origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_handed_out_once_and_only_to_its_origin() {
        let t0 = Instant::now();
        let mut pool = NoncePool::default();
        pool.put("https://a:443", "n1".into(), t0);
        pool.put("https://a:443", "n2".into(), t0);
        assert_eq!(pool.take("https://b:443", t0), None);
        assert_eq!(pool.take("https://a:443", t0).as_deref(), Some("n2"));
        assert_eq!(pool.take("https://a:443", t0).as_deref(), Some("n1"));
        assert_eq!(pool.take("https://a:443", t0), None);
    }

    #[test]
    fn old_nonces_are_dropped_and_the_pool_is_bounded() {
        let t0 = Instant::now();
        let mut pool = NoncePool::default();
        pool.put("o", "old".into(), t0);
        assert_eq!(pool.take("o", t0 + MAX_AGE), None);
        for i in 0..(MAX_PER_ORIGIN + 5) {
            pool.put("o", format!("n{i}"), t0);
        }
        let mut n = 0;
        while pool.take("o", t0).is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_PER_ORIGIN);
    }

    #[test]
    fn origins_include_scheme_and_port() {
        assert_eq!(
            origin("https://127.0.0.1:14000/certZ/abc").as_deref(),
            Some("https://127.0.0.1:14000")
        );
        assert_eq!(
            origin("https://acme.example/dir").as_deref(),
            Some("https://acme.example")
        );
        assert_eq!(origin("not a url"), None);
    }
}
