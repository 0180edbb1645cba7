//! [`Ca`](super::Ca) and [`Issuer`](super::Issuer) on top of instant-acme.
//!
//! instant-acme 0.8 signs only with ECDSA P-256 account keys; RSA and P-384 account keys
//! (acmetool's defaults) are handled by re-signing at the HTTP layer ([`super::jws`]). The
//! same layer (`Intercept`) adds the External Account Binding to the newAccount request and
//! puts our own new key into the keyChange request. Every error answer but badNonce reaches
//! instant-acme as an error carrying the CA's problem ([`super::error::Refusal`]), so that a
//! refusal instant-acme would ignore (its deactivation does) is one, and `ca_error` reads
//! the problem and its retry time as values.
//!
//! Alternate chains (RFC 8555 §7.4.2) are out of instant-acme's reach altogether: it returns
//! only the body of a certificate download. [`CaHttp`] remembers the download's alternate
//! links and fresh nonce, and the session fetches each alternate with a POST-as-GET it signs
//! itself ([`super::jws::post_as_get`]).
//!
//! By concern: `account` (the directory, nonces, account keys, and the [`Ca`](super::Ca)
//! steps: login, registration, key rollover, deactivation), `authorizations` (proving control
//! of an order's identifiers and explaining a failed validation), `challenges` (choosing the
//! challenge to answer for one authorization), `order` (the [`Issuer`](super::Issuer) steps:
//! order, finalize, download, revoke; renewal information is [`super::renewal`]'s), `chains`
//! (the POST-as-GET requests acmekeep signs itself: alternate chains, raw authorizations) and
//! `errors` (what a failed request is, and when to send it again).

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{Account, RetryPolicy};

use super::http::CaHttp;
use super::jws::AccountSigner;

/// How long to wait for the CA to validate and to issue. Polling starts after 10 ms and
/// doubles (10, 20, 40 … ms: seven polls in the first 1.3 s, one fewer than starting at 25 ms
/// and growing by half), so a fast CA is never waited on for whole seconds and a slow one is
/// not asked more often. A Retry-After from the CA replaces the next pause.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(10))
        .backoff(2.0)
        .timeout(Duration::from_secs(600))
}

/// Evaluates the async expression again while it fails with badNonce, or is refused for its
/// rate while the CA's pause is short (`$me` has the `http` client and `directory_url`).
macro_rules! ca_retry {
    ($me:expr, $op:expr) => {{
        let mut attempt = 1;
        let mut waits = 0;
        loop {
            match $op.await {
                Err(e)
                    if $crate::acme::instant::is_bad_nonce(&e)
                        && attempt < $crate::acme::instant::NONCE_ATTEMPTS =>
                {
                    tracing::debug!("badNonce from the CA; retrying (attempt {attempt})");
                    attempt += 1;
                }
                Err(e) => match $crate::acme::instant::rate_limit_pause(
                    &$me.http,
                    &$me.directory_url,
                    &e,
                    &mut waits,
                ) {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => break Err(e),
                },
                other => break other,
            }
        }
    }};
}

mod account;
mod authorizations;
mod chains;
mod challenges;
mod errors;
mod order;

pub use errors::describe_problem;
pub(super) use errors::{NONCE_ATTEMPTS, rate_limit_pause};
pub(crate) use errors::{ca_error, is_bad_nonce, is_rate_limited};

/// A CA at one directory URL, reached through a shared HTTP client.
#[derive(Clone, Debug)]
pub struct InstantCa {
    directory_url: String,
    http: CaHttp,
}

impl InstantCa {
    /// A CA at `directory_url`, reached through `http`, which will request nothing off that
    /// directory's origin. A directory URL that is no URL to request is refused here, before
    /// instant-acme (which panics on one) sees it.
    pub fn new(directory_url: &str, http: CaHttp) -> Result<Self, super::vet::UrlRefused> {
        Ok(Self {
            directory_url: directory_url.to_owned(),
            http: http.for_directory(directory_url)?,
        })
    }
}

/// An account session.
#[derive(Clone)]
pub struct InstantSession {
    account: Account,
    thumbprint: String,
    /// The client instant-acme sends through, for what acmekeep fetches itself.
    http: CaHttp,
    /// The real account key, for the requests acmekeep signs itself.
    signer: Arc<AccountSigner>,
    /// The CA's directory (for a fresh nonce, should a response lack one).
    directory_url: String,
}

impl std::fmt::Debug for InstantSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstantSession")
            .field("id", &self.account.id())
            .finish()
    }
}
