//! The protocol's vocabulary, shared by the layers above: the challenge types and one
//! challenge to answer (RFC 8555 §8), the [`Responder`] seam that answers them, and a
//! renewal window (RFC 9773). It lives here, at the bottom, so that `challenge/`, `target`
//! and the planner depend on the protocol layer and never the other way round.

use std::future::Future;
use std::pin::Pin;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A challenge type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChallengeKind {
    /// http-01 (RFC 8555 §8.3).
    Http01,
    /// dns-01 (RFC 8555 §8.4).
    Dns01,
    /// tls-alpn-01 (RFC 8737).
    TlsAlpn01,
    /// dns-account-01 (draft-ietf-acme-dns-account-label): dns-01 at a per-account name.
    DnsAccount01,
    /// dns-persist-01 (draft-ietf-acme-dns-persist): a standing TXT record at
    /// `_validation-persist.<name>`, no DNS change per order.
    DnsPersist01,
}

impl ChallengeKind {
    /// The RFC name.
    pub fn name(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::Dns01 => "dns-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::DnsAccount01 => "dns-account-01",
            ChallengeKind::DnsPersist01 => "dns-persist-01",
        }
    }
}

/// One challenge to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Its type.
    pub kind: ChallengeKind,
    /// The authorization's identifier (for a wildcard order, the base name without `*.`).
    pub identifier: String,
    /// Whether the authorization is for a wildcard name.
    pub wildcard: bool,
    /// The challenge token (validated base64url).
    pub token: String,
    /// `token.thumbprint`.
    pub key_authorization: String,
    /// The TXT record name for dns-01 (`_acme-challenge.<identifier>`), dns-account-01
    /// (`_<account label>._acme-challenge.<identifier>`) and dns-persist-01
    /// (`_validation-persist.<identifier>`); empty for the other types.
    pub record_name: String,
    /// dns-persist-01 only: what the CA asks of the standing record.
    pub persist: Option<PersistWanted>,
}

/// What a dns-persist-01 challenge asks of the record at `_validation-persist.<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistWanted {
    /// The issuer domain names the CA accepts.
    pub issuers: Vec<String>,
    /// The `accounturi` values that name this account (the first is the one to publish).
    pub account_uris: Vec<String>,
}

impl Challenge {
    /// The dns-01 TXT value: base64url(SHA-256(key authorization)).
    pub fn dns_value(&self) -> String {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            self.key_authorization.as_bytes(),
        );
        data_encoding::BASE64URL_NOPAD.encode(digest.as_ref())
    }

    /// The TXT record name (dns-01 and dns-account-01).
    pub fn dns_name(&self) -> String {
        if self.record_name.is_empty() {
            format!("_acme-challenge.{}", self.identifier)
        } else {
            self.record_name.clone()
        }
    }
}

/// Boxed future, so the trait can be used as `&dyn Responder`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A challenge a responder will not answer as the CA sent it; another order (with another
/// authorization and token) may do. An empty text means the type is given up quietly: another allowed type is the expected
/// answer (a hook-only site without a dns-account-01 hook uses dns-01, as it always did).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnusableChallenge(pub String);

/// Sets up and tears down challenge responses.
pub trait Responder: Send + Sync {
    /// Challenge types this responder answers, in order of preference.
    fn kinds(&self) -> &[ChallengeKind];
    /// Whether `ch` can be answered as it is, asked before anything is set up.
    fn usable(&self, _ch: &Challenge) -> Result<(), UnusableChallenge> {
        Ok(())
    }
    /// Whether `ch` can succeed as things stand, found out without changing anything (for
    /// dns-persist-01: the standing record read from DNS and judged as the CA will), asked
    /// before the type is settled on, so that another allowed type can be used instead and
    /// the CA is not asked to validate what would fail. `now` is Unix seconds.
    fn precheck<'a>(
        &'a self,
        _ch: &'a Challenge,
        _now: i64,
    ) -> BoxFuture<'a, Result<(), UnusableChallenge>> {
        Box::pin(async { Ok(()) })
    }
    /// Makes the responses to all of an order's challenges available, at the same time;
    /// fails if any could not be set up (the error names each that could not).
    fn present_all<'a>(&'a self, chs: &'a [Challenge]) -> BoxFuture<'a, Result<()>>;
    /// Removes the responses, at the same time. Never fails: leftovers are logged.
    fn cleanup_all<'a>(&'a self, chs: &'a [Challenge]) -> BoxFuture<'a, ()>;
    /// Control is proved and the order at `order_url` is about to be finalized: the last
    /// moment at which no certificate can exist for it. A fleet node records the order here
    /// (doc/cluster.md), so that a node taking over never orders the same certificate again;
    /// an error abandons the order before finalize.
    fn finalizing<'a>(&'a self, _order_url: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// A suggested renewal window (`suggestedWindow`), both ends inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Start of the window.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// End of the window.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
}
