//! Talking to the CA, behind our own small traits.
//!
//! The rest of acmekeep sees only [`Ca`] (find, register, re-key or deactivate an account) and
//! [`Issuer`] (one account's session: order, prove control, finalize, download). The instant-acme
//! implementation lives in [`instant`]; swapping the protocol crate, or putting a test
//! double in, touches nothing else.

pub mod connect;
pub mod dns_account;
pub mod error;
pub mod failover;
#[cfg(test)]
pub mod fake;
pub mod http;
pub mod instant;
pub mod jws;
pub mod nonces;
pub mod pace;
pub mod persist;
pub mod renewal;
pub mod types;
pub mod vet;

pub use error::{AcmeError, ErrorClass, Problem};
pub use types::{
    BoxFuture, Challenge, ChallengeKind, PersistWanted, Responder, UnusableChallenge, Window,
};

use std::future::Future;

use crate::name::Hostname;

/// What the directory tells us before we have an account.
#[derive(Clone, Debug, Default)]
pub struct DirectoryMeta {
    /// `meta.termsOfService`, the URL the response file's `acme-agreement:<url>` names.
    pub terms_of_service: Option<String>,
    /// The `renewalInfo` URL (RFC 9773), when the CA offers ARI.
    pub renewal_info: Option<String>,
    /// `meta.externalAccountRequired`: new accounts must carry an External Account Binding.
    pub external_account_required: bool,
    /// The fields that concern dns-persist-01 (`caaIdentities`, draft -02's
    /// `issuerDomainNames` and `accountHashPrefix`).
    pub persist: persist::PersistMeta,
}

/// How a new account is registered.
#[derive(Clone, Debug)]
pub struct Registration {
    /// Contact e-mail address, if any.
    pub email: Option<String>,
    /// External Account Binding credentials, for CAs that tie ACME accounts to accounts of
    /// their own (RFC 8555 §7.3.4).
    pub eab: Option<EabCredentials>,
}

/// The MAC algorithm of an External Account Binding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MacAlgorithm {
    /// HMAC-SHA-256, what every CA we know of uses.
    #[default]
    Hs256,
    /// HMAC-SHA-384.
    Hs384,
    /// HMAC-SHA-512.
    Hs512,
}

impl MacAlgorithm {
    /// Parses `hs256`, `HS384`, … (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HS256" => Some(Self::Hs256),
            "HS384" => Some(Self::Hs384),
            "HS512" => Some(Self::Hs512),
            _ => None,
        }
    }

    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
        }
    }
}

/// External Account Binding credentials: the key identifier and MAC key a CA hands out
/// (ZeroSSL, Google Trust Services, Sectigo, …), used once, when the account is registered.
#[derive(Clone, PartialEq, Eq)]
pub struct EabCredentials {
    /// The CA's key identifier (the inner JWS's `kid`).
    pub kid: String,
    /// The MAC algorithm.
    pub algorithm: MacAlgorithm,
    /// The MAC key, decoded.
    pub hmac_key: Vec<u8>,
}

impl std::fmt::Debug for EabCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The MAC key is a secret: never in logs or error messages.
        f.debug_struct("EabCredentials")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl EabCredentials {
    /// Credentials from their textual form: the MAC key as CAs print it, base64url (padding
    /// and the standard base64 alphabet are tolerated), the algorithm by name (default
    /// HS256). Errors say which part is wrong without repeating the key.
    pub fn parse(kid: &str, hmac_key: &str, algorithm: Option<&str>) -> anyhow::Result<Self> {
        let kid = kid.trim();
        if kid.is_empty() {
            anyhow::bail!("the EAB key identifier (kid) is empty");
        }
        let text = hmac_key.trim().trim_end_matches('=');
        if text.is_empty() {
            anyhow::bail!("the EAB MAC key is empty");
        }
        let decoded = data_encoding::BASE64URL_NOPAD
            .decode(text.as_bytes())
            .or_else(|_| data_encoding::BASE64_NOPAD.decode(text.as_bytes()))
            .map_err(|_| anyhow::anyhow!("the EAB MAC key is not base64url"))?;
        let algorithm = match algorithm.map(str::trim).filter(|a| !a.is_empty()) {
            None => MacAlgorithm::default(),
            Some(a) => MacAlgorithm::parse(a).ok_or_else(|| {
                anyhow::anyhow!("EAB algorithm {a:?} is not one of HS256, HS384, HS512")
            })?,
        };
        Ok(Self {
            kid: kid.to_owned(),
            algorithm,
            hmac_key: decoded,
        })
    }
}

/// A CA reachable at a directory URL.
pub trait Ca: Send + Sync {
    /// One account's session.
    type Session: Issuer;
    /// Fetches the directory metadata (terms of service).
    fn directory_meta(&self) -> impl Future<Output = Result<DirectoryMeta, AcmeError>> + Send;
    /// Looks the account up by its key (newAccount with onlyReturnExisting).
    fn login(&self, key_pem: &str)
    -> impl Future<Output = Result<Self::Session, AcmeError>> + Send;
    /// Registers the key as a new account, agreeing to the terms of service.
    fn register(
        &self,
        key_pem: &str,
        reg: &Registration,
    ) -> impl Future<Output = Result<Self::Session, AcmeError>> + Send;
    /// Rolls the key of the account `old_key_pem` belongs to over to `new_key_pem` (RFC 8555
    /// §7.3.5): from then on the CA knows the account by the new key only. Returns the
    /// account URL.
    fn change_key(
        &self,
        old_key_pem: &str,
        new_key_pem: &str,
    ) -> impl Future<Output = Result<String, AcmeError>> + Send;
    /// Deactivates the account `key_pem` belongs to (RFC 8555 §7.3.6). Irreversible: the CA
    /// refuses every later request signed by the key. Returns the account URL.
    fn deactivate(&self, key_pem: &str) -> impl Future<Output = Result<String, AcmeError>> + Send;
    /// True once requests to this CA have gone unanswered often enough in this run that
    /// asking it anything more would only wait on it again (see [`Issuer::ca_unresponsive`]).
    fn unresponsive(&self) -> bool {
        false
    }
}

/// What to order, besides the names and the CSR.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrderOptions<'a> {
    /// The ARI id (RFC 9773) of the certificate this order replaces, sent if the CA accepts
    /// it.
    pub replaces: Option<&'a str>,
    /// The ACME profile to order with.
    pub profile: Option<&'a str>,
    /// Also download the alternate chains the CA offers (RFC 8555 §7.4.2). Asked only when
    /// a chain is preferred: it costs a request per alternate.
    pub alternate_chains: bool,
}

/// A certificate as the CA offers it (PEM, untrusted until validated).
#[derive(Clone, Debug, Default)]
pub struct Chains {
    /// The chain of the certificate download itself.
    pub default: String,
    /// The alternate chains that could be downloaded, in the CA's order (only when asked for;
    /// one that fails to download is left out with a warning).
    pub alternates: Vec<String>,
}

/// The result of a finished order.
#[derive(Debug)]
pub struct Issued {
    /// The order URL (acmetool's `url` file, from which the certificate id is derived).
    pub order_url: String,
    /// The chains the CA returned.
    pub chains: Chains,
}

/// An account's session with a CA.
pub trait Issuer: Send + Sync {
    /// Orders a certificate for `names` as `options` say, proves control through
    /// `responder`, finalizes with `csr_der`, calls `on_finalized(order_url)` (so the order
    /// can be recorded before the download), then downloads the chain (and the alternates,
    /// if asked for).
    fn issue(
        &self,
        names: &[Hostname],
        csr_der: &[u8],
        options: OrderOptions<'_>,
        responder: &dyn Responder,
        on_finalized: &(dyn Fn(&str) -> anyhow::Result<()> + Sync),
    ) -> impl Future<Output = Result<Issued, AcmeError>> + Send;

    /// Downloads the certificate of an order that finished earlier (an "uncached" cert
    /// directory), with its alternate chains if `alternate_chains`. `Ok(None)` means the CA
    /// is still processing it.
    fn fetch_order_certificate(
        &self,
        order_url: &str,
        alternate_chains: bool,
    ) -> impl Future<Output = Result<Option<Chains>, AcmeError>> + Send;

    /// Finishes an order another process recorded as finalizing and may not have finalized
    /// (a fleet node that died or lost its lock, doc/cluster.md): finalizes it with `csr_der`
    /// if the CA still waits for that, waits while the CA processes it, and downloads its
    /// certificate. `Ok(None)`: still processing. An order the CA gave up is an error the
    /// target backs off from: [`AcmeError::Gone`] when the CA answers that it is gone,
    /// [`AcmeError::Refused`] when it is invalid. The default only downloads (an order
    /// already finalized).
    fn finish_order(
        &self,
        order_url: &str,
        csr_der: &[u8],
        alternate_chains: bool,
    ) -> impl Future<Output = Result<Option<Chains>, AcmeError>> + Send {
        let _ = csr_der;
        self.fetch_order_certificate(order_url, alternate_chains)
    }

    /// The CA's suggested renewal window for the certificate with ARI id `ari_id`
    /// (`<AKI>.<serial>`, RFC 9773 §4.1) and how long to wait before asking again; `Ok(None)`
    /// when the CA has no ARI.
    fn renewal_info(
        &self,
        ari_id: &str,
    ) -> impl Future<Output = Result<Option<(Window, std::time::Duration)>, AcmeError>> + Send;

    /// RFC 7638 thumbprint of the account key.
    fn thumbprint(&self) -> String;

    /// True once the CA has left requests unanswered (timeouts) often enough that starting
    /// more orders in this run would only wait on it too.
    fn ca_unresponsive(&self) -> bool {
        false
    }

    /// When the CA asked to slow down until a time this run will not wait for (its
    /// `--rate-limit-wait` is spent): starting more orders would only be refused.
    fn ca_paused_until(&self) -> Option<std::time::SystemTime> {
        None
    }

    /// The account URL (the `kid` the CA knows the account by).
    fn account_url(&self) -> String;

    /// Revokes a certificate (DER) with an RFC 5280 reason code.
    fn revoke(
        &self,
        cert_der: &[u8],
        reason: u8,
    ) -> impl Future<Output = Result<(), AcmeError>> + Send;
}

/// How many fresh orders may follow an order whose challenge the responder refused as the
/// CA sent it ([`Responder::usable`]: a token a hook would take for an option, which an
/// honest CA sends for 1 name in 64). One fresh order left a one-name target failing once in
/// 4,096 orders; with six, a one-name target fails so only once in 64^7 (about 4 * 10^12)
/// orders, and a CA that keeps sending such tokens is still given up on after seven.
pub const FRESH_ORDERS: usize = 6;

/// Places an order through `order` (which proves control and cleans up, but does not
/// finalize: the fake does it all) until one is not refused with an [`UnusableChallenge`], at most
/// 1 + [`FRESH_ORDERS`] times; `order` deactivates the refused authorization, so the CA's
/// next order brings a fresh one (and a fresh token) instead of the same again. Any other
/// error ends it at once. Shared by the instant-acme adapter and the test double, so the
/// tables exercise the same budget.
pub async fn order_with_usable_challenges<T, F, Fut>(mut order: F) -> Result<T, AcmeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AcmeError>>,
{
    let mut fresh = 0;
    loop {
        match order().await {
            Err(AcmeError::Other(e)) if e.downcast_ref::<UnusableChallenge>().is_some() => {
                if fresh == FRESH_ORDERS {
                    return Err(AcmeError::Other(anyhow::anyhow!(
                        "{e:#} (so in each of {} orders in a row)",
                        FRESH_ORDERS + 1
                    )));
                }
                fresh += 1;
                tracing::info!("{e:#}; ordering again for another challenge");
            }
            other => return other,
        }
    }
}

/// Connects to the CA of a provider; the seam tests and other protocol crates plug into.
pub trait Connector: Send + Sync {
    /// CA type.
    type Ca: Ca + 'static;
    /// A CA handle for `directory_url`, trusting `extra_roots` in addition to the system's.
    fn connect(
        &self,
        directory_url: &str,
        extra_roots: Option<&std::path::PathBuf>,
    ) -> anyhow::Result<Self::Ca>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eab_credentials_parse_as_cas_print_them() {
        // base64url without padding (ZeroSSL, Google), with padding, or standard base64.
        for key in ["-_8", "-_8=", "+/8=", " -_8\n"] {
            let c = EabCredentials::parse(" kid-1 ", key, None).expect(key);
            assert_eq!(c.kid, "kid-1");
            assert_eq!(c.hmac_key, [0xfb, 0xff], "{key:?}");
            assert_eq!(c.algorithm, MacAlgorithm::Hs256);
        }
        let c = EabCredentials::parse("k", "AAAA", Some("hs512")).expect("hs512");
        assert_eq!(c.algorithm, MacAlgorithm::Hs512);
        assert_eq!(c.hmac_key, [0, 0, 0]);
        assert_eq!(
            EabCredentials::parse("k", "AAAA", Some("HS384"))
                .expect("HS384")
                .algorithm
                .name(),
            "HS384"
        );
        for (kid, key, alg, why) in [
            ("", "AAAA", None, "kid"),
            ("k", "", None, "empty"),
            ("k", "not base64!", None, "base64url"),
            ("k", "AAAA", Some("RS256"), "HS256, HS384, HS512"),
        ] {
            let err = format!("{:#}", EabCredentials::parse(kid, key, alg).expect_err(why));
            assert!(err.contains(why), "{err} should mention {why}");
        }
    }

    #[test]
    fn eab_debug_never_shows_the_mac_key() {
        let c = EabCredentials::parse("kid-1", "c2VjcmV0LXNlY3JldA", None).expect("ok");
        let shown = format!("{c:?}");
        assert!(shown.contains("kid-1"), "{shown}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("115"),
            "{shown}"
        );
    }
}
