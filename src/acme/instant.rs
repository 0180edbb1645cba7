//! [`Ca`] and [`Issuer`] on top of instant-acme.
//!
//! instant-acme 0.8 signs only with ECDSA P-256 account keys; RSA and P-384 account keys
//! (acmetool's defaults) are handled by re-signing at the HTTP layer ([`super::jws`]). The
//! same layer (`Intercept`) adds the External Account Binding to the newAccount request and
//! puts our own new key into the keyChange request. Every error answer but badNonce reaches
//! instant-acme as an error carrying the CA's problem ([`super::error::Refusal`]), so that a
//! refusal instant-acme would ignore (its deactivation does) is one, and [`ca_error`] reads
//! the problem and its retry time as values.
//!
//! Alternate chains (RFC 8555 §7.4.2) are out of instant-acme's reach altogether: it returns
//! only the body of a certificate download. [`CaHttp`] remembers the download's alternate
//! links and fresh nonce, and the session fetches each alternate with a POST-as-GET it signs
//! itself ([`super::jws::post_as_get`]).

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, OrderStatus, RetryPolicy,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::error::{ACCOUNT_DOES_NOT_EXIST, ALREADY_REVOKED, BAD_NONCE, Problem, problem_of};
use super::http::CaHttp;
use super::jws::{AccountSigner, ForeignKey};
use super::{AcmeError, Ca, Chains, DirectoryMeta, Issued, Issuer, OrderOptions, Registration};
use super::{Challenge, ChallengeKind, Responder};
use crate::keys::first_private_key_der;
use crate::name::Hostname;

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

    /// The key instant-acme signs with, the HTTP client to use, and the thumbprint for key
    /// authorizations. P-256 keys are used directly; RSA and P-384 keys get a placeholder
    /// P-256 key in instant-acme and a client that re-signs with the real key.
    fn key(&self, key_pem: &str) -> Result<AccountKey, AcmeError> {
        let der = key_der(key_pem)?;
        let signer = Arc::new(AccountSigner::from_der(&der)?);
        if let Some(foreign) = ForeignKey::from_der(&der)? {
            let (_, pkcs8) = instant_acme::Key::generate_pkcs8().map_err(|e| anyhow!("{e}"))?;
            let thumbprint = foreign.thumbprint();
            return Ok(AccountKey {
                pkcs8: pkcs8.secret_pkcs8_der().to_vec(),
                http: self.http.with_resigner(Arc::new(foreign)),
                thumbprint: Some(thumbprint),
                signer,
            });
        }
        let pkcs8 = match &der {
            PrivateKeyDer::Pkcs8(p) => p.secret_pkcs8_der().to_vec(),
            PrivateKeyDer::Sec1(sec1) => {
                let pair = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    sec1.secret_sec1_der(),
                )
                .map_err(|_| anyhow!("cannot read the P-256 account key"))?;
                pair.to_pkcs8v1()
                    .map_err(|_| anyhow!("cannot convert the P-256 account key"))?
                    .as_ref()
                    .to_vec()
            }
            _ => return Err(anyhow!("unsupported account key encoding").into()),
        };
        let me = AccountKey {
            pkcs8,
            http: self.http.clone(),
            thumbprint: None,
            signer,
        };
        me.pair()
            .map_err(|e| anyhow!("cannot use the account key: {e}"))?;
        Ok(me)
    }

    /// The directory's resources and metadata (RFC 8555 §7.1.1), as far as we need them.
    async fn directory(&self) -> Result<Directory, AcmeError> {
        let body = self.http.get(&self.directory_url).await?;
        let dir: Directory = serde_json::from_slice(&body).with_context(|| {
            format!("the directory at {} is not valid JSON", self.directory_url)
        })?;
        Ok(dir)
    }
}

/// The DER of the first private key in a PEM text.
fn key_der(key_pem: &str) -> Result<PrivateKeyDer<'static>, AcmeError> {
    let der = first_private_key_der(key_pem)?;
    Ok(PrivateKeyDer::try_from(der.as_slice())
        .map_err(|e| anyhow!("unrecognised account key encoding: {e}"))?
        .clone_key())
}

/// The parts of the directory object acmekeep reads itself (instant-acme reads the rest).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Directory {
    new_account: String,
    new_nonce: Option<String>,
    key_change: Option<String>,
    #[serde(default)]
    meta: Meta,
    renewal_info: Option<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    terms_of_service: Option<String>,
    #[serde(default)]
    external_account_required: bool,
    /// Everything else, read leniently (see [`super::persist::PersistMeta::from_meta`]).
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// A JWS body rewriter; see [`Intercept`].
type Rewrite = Arc<dyn Fn(&[u8]) -> anyhow::Result<Vec<u8>> + Send + Sync>;

/// The HTTP client for requests instant-acme cannot make as they must be made: the POST whose
/// JWS is for `url` is rewritten (and re-signed) before it goes out through `inner` (see
/// [`super::jws`]). Every other request passes through untouched.
#[derive(Clone)]
struct Intercept {
    inner: CaHttp,
    url: String,
    rewrite: Rewrite,
}

impl HttpClient for Intercept {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let me = self.clone();
        Box::pin(async move {
            if req.method() != http::Method::POST {
                return me.inner.request(req).await;
            }
            let (parts, body) = req.into_parts();
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(never) => match never {},
            };
            let bytes = if super::jws::jws_url(&bytes).as_deref() == Some(me.url.as_str()) {
                (me.rewrite)(&bytes).map_err(|e| instant_acme::Error::Other(e.into()))?
            } else {
                bytes.to_vec()
            };
            me.inner
                .request(http::Request::from_parts(parts, BodyWrapper::from(bytes)))
                .await
        })
    }
}

/// An account key ready for instant-acme (see [`InstantCa::key`]).
struct AccountKey {
    /// PKCS#8 of the key instant-acme holds (the real one, or a placeholder).
    pkcs8: Vec<u8>,
    /// The client to send with (re-signing for foreign keys).
    http: CaHttp,
    /// Thumbprint of the real key when instant-acme holds a placeholder.
    thumbprint: Option<String>,
    /// The real key, for requests acmekeep re-signs itself.
    signer: Arc<AccountSigner>,
}

impl AccountKey {
    /// A fresh instant-acme key (it is consumed by each account call).
    fn pair(&self) -> Result<(instant_acme::Key, PrivateKeyDer<'static>), instant_acme::Error> {
        let key = instant_acme::Key::from_pkcs8_der(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))?;
        Ok((
            key,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone())),
        ))
    }
}

/// Timed-out requests after which a CA counts as not answering for the rest of the run
/// (each has waited [`super::http::REQUEST_TIMEOUT`]); one may be a blip.
const UNRESPONSIVE_AFTER: u64 = 2;

/// How often a request rejected for a stale nonce is sent again. instant-acme retries a
/// bad nonce only twice; a CA that rejects many nonces (Pebble does so at random, on
/// purpose) would then fail whole orders. A badNonce rejection means the CA did not act on
/// the request, so repeating any step is safe.
pub(super) const NONCE_ATTEMPTS: u32 = 12;

pub(crate) fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    problem_of(e).is_some_and(|p| p.is(BAD_NONCE))
}

/// Whether the CA refused a request for its rate: a `rateLimited` problem, HTTP 429, or HTTP
/// 503 (overloaded).
pub(crate) fn is_rate_limited(e: &instant_acme::Error) -> bool {
    problem_of(e).is_some_and(|p| p.asks_to_slow_down())
}

/// After a failed request to the CA at `directory_url`: how long to wait before sending it
/// again because the CA asked this run to slow down for a short while (`waits` counts the
/// waits so far, at most [`super::pace::RATE_LIMIT_RETRIES`]); `None`: give up.
pub(super) fn rate_limit_pause(
    http: &CaHttp,
    directory_url: &str,
    e: &instant_acme::Error,
    waits: &mut u32,
) -> Option<Duration> {
    if !is_rate_limited(e) || *waits >= super::pace::RATE_LIMIT_RETRIES {
        return None;
    }
    let pause = http.pause(directory_url)?;
    *waits += 1;
    if let Some(p) = problem_of(e) {
        tracing::info!(
            "the CA refused a request for its rate ({}); sending it again in {pause:.1?}",
            p.describe()
        );
    }
    Some(pause)
}

/// Evaluates the async expression again while it fails with badNonce, or is refused for its
/// rate while the CA's pause is short (`$me` has the `http` client and `directory_url`).
macro_rules! ca_retry {
    ($me:expr, $op:expr) => {{
        let mut attempt = 1;
        let mut waits = 0;
        loop {
            match $op.await {
                Err(e) if is_bad_nonce(&e) && attempt < NONCE_ATTEMPTS => {
                    tracing::debug!("badNonce from the CA; retrying (attempt {attempt})");
                    attempt += 1;
                }
                Err(e) => match rate_limit_pause(&$me.http, &$me.directory_url, &e, &mut waits) {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => break Err(e),
                },
                other => break other,
            }
        }
    }};
}

/// The error a failed request for `context` is: the CA's problem as a value
/// ([`AcmeError::RateLimited`] when it refused for its rate and said when to come back, or
/// only asked to slow down without being overloaded), or [`AcmeError::Other`] with the cause.
pub(crate) fn ca_error(context: &str, e: instant_acme::Error) -> AcmeError {
    let Some(problem) = problem_of(&e) else {
        // Kept as a cause, not flattened: the network error's own causes (DNS, TLS) are
        // what the operator needs (see crate::cause).
        return AcmeError::Other(anyhow::Error::new(e).context(context.to_owned()));
    };
    if problem.is(ACCOUNT_DOES_NOT_EXIST) {
        return AcmeError::AccountDoesNotExist;
    }
    let context = context.to_owned();
    // An overloaded CA (503) counts only when it said when to come back.
    if problem.asks_to_slow_down() && (problem.status != Some(503) || problem.retry_at.is_some()) {
        AcmeError::RateLimited { context, problem }
    } else {
        AcmeError::Ca { context, problem }
    }
}

/// Like [`ca_error`], for fetching what an earlier run ordered: a 403, 404 or 410 answer
/// is [`AcmeError::Gone`].
fn fetch_error(context: &str, e: instant_acme::Error) -> AcmeError {
    match problem_of(&e) {
        Some(problem) if matches!(problem.status, Some(403 | 404 | 410)) => AcmeError::Gone {
            context: context.to_owned(),
            problem,
        },
        _ => ca_error(context, e),
    }
}

/// Renders a problem document (RFC 7807) with its subproblems, for error messages.
pub fn describe_problem(p: &instant_acme::Problem) -> String {
    Problem::of(p).describe()
}

impl Ca for InstantCa {
    type Session = InstantSession;

    fn unresponsive(&self) -> bool {
        super::nonces::origin(&self.directory_url)
            .is_some_and(|o| self.http.timeouts(&o) >= UNRESPONSIVE_AFTER)
    }

    async fn directory_meta(&self) -> Result<DirectoryMeta, AcmeError> {
        let dir = self.directory().await?;
        Ok(DirectoryMeta {
            terms_of_service: dir.meta.terms_of_service,
            renewal_info: dir.renewal_info,
            external_account_required: dir.meta.external_account_required,
            persist: super::persist::PersistMeta::from_meta(&serde_json::Value::Object(
                dir.meta.other,
            )),
        })
    }

    async fn login(&self, key_pem: &str) -> Result<InstantSession, AcmeError> {
        let key = self.key(key_pem)?;
        let (account, _) = ca_retry!(self, async {
            Account::builder_with_http(Box::new(key.http.clone()))
                .from_key(key.pair()?, self.directory_url.clone())
                .await
        })
        .map_err(|e| ca_error("looking up the account", e))?;
        Ok(InstantSession::new(account, &key, &self.directory_url))
    }

    async fn register(
        &self,
        key_pem: &str,
        reg: &Registration,
    ) -> Result<InstantSession, AcmeError> {
        let key = self.key(key_pem)?;
        let intercept = match &reg.eab {
            None => None,
            Some(eab) => {
                // The binding goes into the newAccount request, MACed over our key's JWK.
                let (eab, signer) = (eab.clone(), key.signer.clone());
                Some(Intercept {
                    inner: key.http.clone(),
                    url: self.directory().await?.new_account,
                    rewrite: Arc::new(move |body| {
                        super::jws::bind_external_account(body, &eab, &signer)
                    }),
                })
            }
        };
        let http = || -> Box<dyn HttpClient> {
            match &intercept {
                Some(i) => Box::new(i.clone()),
                None => Box::new(key.http.clone()),
            }
        };
        let (account, _) = ca_retry!(self, async {
            Account::builder_with_http(http())
                .create_from_key(key.pair()?, self.directory_url.clone())
                .await
        })
        .map_err(|e| ca_error("registering the account", e))?;
        if let Some(email) = reg.email.as_deref().filter(|e| !e.is_empty()) {
            let contact = format!("mailto:{email}");
            ca_retry!(self, account.update_contacts(&[contact.as_str()]))
                .map_err(|e| ca_error("setting the account's contact address", e))?;
        }
        Ok(InstantSession::new(account, &key, &self.directory_url))
    }

    async fn change_key(&self, old_key_pem: &str, new_key_pem: &str) -> Result<String, AcmeError> {
        let old = self.key(old_key_pem)?;
        let new = Arc::new(AccountSigner::from_der(&key_der(new_key_pem)?)?);
        let key_change = self.directory().await?.key_change.ok_or_else(|| {
            anyhow!(
                "the CA at {} does not support account key rollover (its directory has no keyChange)",
                self.directory_url
            )
        })?;
        // instant-acme sends the keyChange request (nonce, retries, outer signature by the
        // account); its inner JWS is replaced by one made with our new key.
        let old_signer = old.signer.clone();
        let http = Intercept {
            inner: old.http.clone(),
            url: key_change,
            rewrite: Arc::new(move |body| super::jws::replace_key_change(body, &old_signer, &new)),
        };
        let (mut account, _) = ca_retry!(self, async {
            Account::builder_with_http(Box::new(http.clone()))
                .from_key(old.pair()?, self.directory_url.clone())
                .await
        })
        .map_err(|e| ca_error("looking up the account", e))?;
        // The credentials returned hold instant-acme's own new key, which the CA never saw.
        let _unused = ca_retry!(self, account.update_key())
            .map_err(|e| ca_error("rolling the account key over", e))?;
        Ok(account.id().to_owned())
    }

    async fn deactivate(&self, key_pem: &str) -> Result<String, AcmeError> {
        let key = self.key(key_pem)?;
        let http = key.http.clone();
        let (account, _) = ca_retry!(self, async {
            Account::builder_with_http(Box::new(http.clone()))
                .from_key(key.pair()?, self.directory_url.clone())
                .await
        })
        .map_err(|e| ca_error("looking up the account", e))?;
        ca_retry!(self, account.clone().deactivate())
            .map_err(|e| ca_error("deactivating the account", e))?;
        Ok(account.id().to_owned())
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

impl InstantSession {
    /// Answers every pending authorization with the first challenge type (in the
    /// responder's order) the CA offers, then waits until the order is ready. All the
    /// challenges are chosen first, presented at the same time (their hooks run in
    /// parallel), and only then announced to the CA one by one. `presented` collects what
    /// was set up, for the caller to clean up.
    async fn prove_control(
        &self,
        order: &mut instant_acme::Order,
        responder: &dyn Responder,
        presented: &mut Vec<Challenge>,
    ) -> Result<(), AcmeError> {
        let chosen = self.choose_challenges(order, responder).await?;
        presented.extend(chosen.iter().map(|(_, _, c)| c.clone()));
        responder
            .present_all(presented)
            .await
            .map_err(AcmeError::Other)?;
        announce(order, &chosen).await?;
        let policy = retry_policy();
        let status = ca_retry!(self, order.poll_ready(&policy))
            .map_err(|e| ca_error("waiting for validation", e))?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Refused(failed_validation(order).await));
        }
        Ok(())
    }

    /// The challenge chosen for each pending authorization of `order`, by the
    /// authorization's URL. Authorizations are walked again after a badNonce rejection; `done`
    /// keeps each from being counted twice (instant-acme keeps the authorizations it fetched,
    /// so the second walk sends nothing until a challenge is announced).
    async fn choose_challenges(
        &self,
        order: &mut instant_acme::Order,
        responder: &dyn Responder,
    ) -> Result<Vec<(String, ChallengeType, Challenge)>, AcmeError> {
        let mut chosen = Vec::new();
        let mut done: HashSet<String> = HashSet::new();
        let mut attempt = 1;
        'walk: loop {
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = match authz {
                    Ok(a) => a,
                    Err(e) if is_bad_nonce(&e) && attempt < NONCE_ATTEMPTS => {
                        attempt += 1;
                        continue 'walk;
                    }
                    Err(e) => return Err(ca_error("fetching an authorization", e)),
                };
                let url = authz.url().to_owned();
                if !done.insert(url.clone()) {
                    continue;
                }
                // The bare identifier: `*.` is what `wildcard` says (RFC 8555 §7.1.4), and
                // the dns-01 record of `*.a.example` is `_acme-challenge.a.example`.
                let ident = authz.identifier().identifier.authorized(false).to_string();
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(AcmeError::Refused(format!(
                            "the authorization for {ident} is {other:?}"
                        )));
                    }
                }
                let offer = Offer {
                    url: &url,
                    ident: &ident,
                    wildcard: authz.wildcard,
                    challenges: &authz.challenges,
                };
                let challenge = self.choose(&offer, responder).await?;
                if let Err(e) = responder.usable(&challenge) {
                    // Given up for good, so the next order gets a fresh authorization (and
                    // token) rather than this one again.
                    if let Err(d) = authz.deactivate().await {
                        tracing::debug!(
                            "deactivating the authorization for {}: {d}",
                            challenge.identifier
                        );
                    }
                    return Err(AcmeError::Other(e.into()));
                }
                chosen.push((url, instant_type(challenge.kind), challenge));
            }
            return Ok(chosen);
        }
    }

    /// The challenge to answer for one pending authorization: the first type the responder
    /// allows that the CA offers usably; a type whose pre-check fails (a dns-persist-01 offer
    /// that is malformed, a standing record the CA would refuse) is given up and the next
    /// one tried.
    async fn choose(
        &self,
        offer: &Offer<'_>,
        responder: &dyn Responder,
    ) -> Result<Challenge, AcmeError> {
        let which = format!("{}{}", if offer.wildcard { "*." } else { "" }, offer.ident);
        let mut excluded: Vec<ChallengeKind> = Vec::new();
        let mut reasons: Vec<String> = Vec::new();
        loop {
            let allowed: Vec<ChallengeKind> = responder
                .kinds()
                .iter()
                .copied()
                .filter(|k| !excluded.contains(k))
                .collect();
            let pick = match pick_challenge(&allowed, offer.challenges) {
                Ok(pick) => pick,
                // (An empty reason is a type given up quietly, as expected.)
                Err(why) if reasons.iter().all(String::is_empty) => {
                    return Err(AcmeError::Refused(format!("{why} for {which}")));
                }
                // Nothing else to try: why the types were given up is what counts.
                Err(_) => {
                    reasons.retain(|r| !r.is_empty());
                    return Err(AcmeError::Other(anyhow!("{}", reasons.join("; "))));
                }
            };
            for why in reasons
                .drain(..)
                .chain(pick.passed_over.iter().map(|w| format!("{which}: {w}")))
                .filter(|w| !w.is_empty())
            {
                tracing::warn!("{why}; using {} instead", pick.kind.name());
            }
            let kind = pick.kind;
            let persist = if kind == ChallengeKind::DnsPersist01 {
                match self.persist_wanted(offer.url, offer.ident).await {
                    Ok(w) => Some(w),
                    Err(e) => {
                        excluded.push(kind);
                        reasons.push(format!(
                            "{which}: the CA's dns-persist-01 challenge cannot be used: {e:#}"
                        ));
                        continue;
                    }
                }
            } else {
                None
            };
            let challenge = self.challenge(offer, pick, persist);
            let now = time::OffsetDateTime::from(self.http.clock().now()).unix_timestamp();
            if let Err(e) = responder.precheck(&challenge, now).await {
                excluded.push(kind);
                reasons.push(e.0);
                continue;
            }
            return Ok(challenge);
        }
    }

    /// What the responder is given for the challenge `pick` of `offer`: its key
    /// authorization and, for the DNS types, the name of its record.
    fn challenge(
        &self,
        offer: &Offer<'_>,
        pick: Pick,
        persist: Option<super::PersistWanted>,
    ) -> Challenge {
        let (kind, token, ident) = (pick.kind, pick.token, offer.ident);
        let record_name = match kind {
            ChallengeKind::Dns01 => format!("_acme-challenge.{ident}"),
            ChallengeKind::DnsAccount01 => {
                super::dns_account::record_name(self.account.id(), ident)
            }
            ChallengeKind::DnsPersist01 => super::persist::record_name(ident),
            _ => String::new(),
        };
        Challenge {
            kind,
            identifier: ident.to_owned(),
            wildcard: offer.wildcard,
            key_authorization: if token.is_empty() {
                String::new()
            } else {
                format!("{token}.{}", self.thumbprint)
            },
            token,
            record_name,
            persist,
        }
    }

    fn new(account: Account, key: &AccountKey, directory_url: &str) -> Self {
        let thumbprint = key
            .thumbprint
            .clone()
            .unwrap_or_else(|| account.key_thumbprint().to_owned());
        Self {
            account,
            thumbprint,
            http: key.http.clone(),
            signer: key.signer.clone(),
            directory_url: directory_url.to_owned(),
        }
    }

    /// The chains of the certificate at `cert_url`, just downloaded as `default`: with the
    /// alternates its download named when `want_alternates` is set (each fetched with a
    /// POST-as-GET; one that fails is a warning, never a failure: the default chain is a
    /// valid result), else only the default.
    async fn chains(
        &self,
        default: String,
        cert_url: Option<&str>,
        want_alternates: bool,
    ) -> Chains {
        // Taken in any case, so nothing stays remembered for a download nobody asked about.
        let download = cert_url.and_then(|u| self.http.take_download(u));
        let mut chains = Chains {
            default,
            alternates: Vec::new(),
        };
        let Some(download) = download.filter(|_| want_alternates) else {
            return chains;
        };
        let mut nonce = download.nonce;
        for url in &download.alternates {
            match self.post_as_get(url, &mut nonce).await {
                Ok(pem) => chains.alternates.push(pem),
                Err(e) => tracing::warn!("alternate chain {url} not downloaded: {e:#}"),
            }
        }
        chains
    }

    /// A POST-as-GET (RFC 8555 §6.3) of a certificate chain at `url`, signed here with the
    /// account key, using `nonce` (or a fresh one) and leaving the next one in it. Stale
    /// nonces are retried as instant-acme's requests are.
    async fn post_as_get(&self, url: &str, nonce: &mut Option<String>) -> anyhow::Result<String> {
        self.post_as_get_of(url, nonce, false).await
    }

    /// [`post_as_get`](Self::post_as_get) of a JSON resource (`json`) or a chain.
    async fn post_as_get_of(
        &self,
        url: &str,
        nonce: &mut Option<String>,
        json: bool,
    ) -> anyhow::Result<String> {
        let mut attempt = 1;
        loop {
            let fresh = match nonce.take() {
                Some(n) => n,
                None => self.fresh_nonce().await?,
            };
            let jws = super::jws::post_as_get(&self.signer, self.account.id(), &fresh, url)?;
            let rsp = self.http.post_jose(url, jws).await?;
            nonce.clone_from(&rsp.nonce);
            if rsp.status.is_success() {
                let kind = rsp.content_type.as_deref().unwrap_or("no content type");
                if json {
                    if !kind.starts_with("application/json") {
                        return Err(anyhow!(
                            "the CA answered with {:?}, not JSON",
                            kind.chars().take(100).collect::<String>()
                        ));
                    }
                    return String::from_utf8(rsp.body.to_vec())
                        .map_err(|_| anyhow!("the answer is not UTF-8 text"));
                }
                if !super::http::is_pem_chain_type(kind) {
                    return Err(anyhow!(
                        "the CA answered with {:?}, not a certificate chain",
                        kind.chars().take(100).collect::<String>()
                    ));
                }
                return String::from_utf8(rsp.body.to_vec())
                    .map_err(|_| anyhow!("the chain is not UTF-8 text"));
            }
            let bad_nonce = rsp.problem.as_ref().is_some_and(|p| p.is(BAD_NONCE));
            if bad_nonce && attempt < NONCE_ATTEMPTS {
                tracing::debug!("badNonce from the CA; retrying (attempt {attempt})");
                attempt += 1;
                continue;
            }
            return Err(match rsp.problem {
                Some(p) => anyhow!("HTTP {}: {}", rsp.status, p.describe()),
                None => anyhow!("HTTP {} without a problem document", rsp.status),
            });
        }
    }

    /// What the dns-persist-01 challenge of the authorization at `authz_url` asks of the
    /// record for `identifier`. instant-acme drops the fields it does not know (the issuer
    /// domain names, the account URI), so the authorization is fetched once more here and
    /// read as JSON; the directory is read too when the challenge names no account URI
    /// (draft -02's hashed form needs its `accountHashPrefix`).
    async fn persist_wanted(
        &self,
        authz_url: &str,
        identifier: &str,
    ) -> anyhow::Result<super::PersistWanted> {
        use super::persist;
        let mut nonce = None;
        let body = self.post_as_get_of(authz_url, &mut nonce, true).await?;
        let authz: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| anyhow!("the authorization is not valid JSON: {e}"))?;
        let challenge = authz["challenges"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["type"] == "dns-persist-01"))
            .ok_or_else(|| anyhow!("the authorization has no dns-persist-01 challenge"))?;
        let meta = if challenge.get("accounturi").is_some() {
            persist::PersistMeta::default()
        } else {
            let dir = self.http.get(&self.directory_url).await?;
            let dir: serde_json::Value = serde_json::from_slice(&dir).with_context(|| {
                format!("the directory at {} is not valid JSON", self.directory_url)
            })?;
            persist::PersistMeta::from_meta(&dir["meta"])
        };
        let offer = persist::offer(challenge, &meta).map_err(|e| anyhow!("{e}"))?;
        Ok(super::PersistWanted {
            account_uris: offer.account_uris(identifier, &self.thumbprint, self.account.id()),
            issuers: offer.issuers,
        })
    }

    /// A nonce from the CA's newNonce resource, for when the last response carried none.
    async fn fresh_nonce(&self) -> anyhow::Result<String> {
        let body = self.http.get(&self.directory_url).await?;
        let dir: Directory = serde_json::from_slice(&body).with_context(|| {
            format!("the directory at {} is not valid JSON", self.directory_url)
        })?;
        let url = dir
            .new_nonce
            .ok_or_else(|| anyhow!("the directory at {} has no newNonce", self.directory_url))?;
        self.http.new_nonce(&url).await
    }
}

impl std::fmt::Debug for InstantSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstantSession")
            .field("id", &self.account.id())
            .finish()
    }
}

/// One pending authorization, as [`InstantSession::choose`] needs it.
struct Offer<'a> {
    /// The authorization's URL.
    url: &'a str,
    /// Its bare identifier (`*.` is `wildcard`).
    ident: &'a str,
    wildcard: bool,
    /// The challenges the CA offers.
    challenges: &'a [instant_acme::Challenge],
}

/// Tells the CA that each chosen challenge (by its authorization's URL) is ready to be
/// validated; after a badNonce rejection the authorizations are walked again, and a challenge
/// announced already is not announced twice.
async fn announce(
    order: &mut instant_acme::Order,
    chosen: &[(String, ChallengeType, Challenge)],
) -> Result<(), AcmeError> {
    let mut announced: HashSet<&str> = HashSet::new();
    let mut attempt = 1;
    'announce: loop {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = match authz {
                Ok(a) => a,
                Err(e) if is_bad_nonce(&e) && attempt < NONCE_ATTEMPTS => {
                    attempt += 1;
                    continue 'announce;
                }
                Err(e) => return Err(ca_error("fetching an authorization", e)),
            };
            let Some((url, r#type, challenge)) =
                chosen.iter().find(|(url, _, _)| url == authz.url())
            else {
                continue;
            };
            if !announced.insert(url) {
                continue;
            }
            let ident = &challenge.identifier;
            let Some(mut ch) = authz.challenge(r#type.clone()) else {
                continue;
            };
            let mut tries = 1;
            loop {
                match ch.set_ready().await {
                    Ok(()) => break,
                    Err(e) if is_bad_nonce(&e) && tries < NONCE_ATTEMPTS => tries += 1,
                    Err(e) => return Err(ca_error(&format!("the challenge for {ident}"), e)),
                }
            }
        }
        return Ok(());
    }
}

/// instant-acme's name for a challenge type.
fn instant_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::Dns01 => ChallengeType::Dns01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        ChallengeKind::DnsAccount01 => ChallengeType::Unknown("dns-account-01".to_owned()),
        ChallengeKind::DnsPersist01 => ChallengeType::Unknown("dns-persist-01".to_owned()),
    }
}

/// The challenge type chosen for one authorization, with its token.
#[derive(Debug, PartialEq, Eq)]
struct Pick {
    kind: ChallengeKind,
    token: String,
    /// Why each allowed type before it was passed over (the CA sent it unusable).
    passed_over: Vec<String>,
}

/// The name the CA gave a challenge type.
fn type_name(t: &ChallengeType) -> &str {
    match t {
        ChallengeType::Http01 => "http-01",
        ChallengeType::Dns01 => "dns-01",
        ChallengeType::TlsAlpn01 => "tls-alpn-01",
        ChallengeType::DeviceAttest01 => "device-attest-01",
        ChallengeType::Unknown(name) => name,
        _ => "an unnamed type",
    }
}

/// Chooses, for one authorization, the first allowed type (in the target's order) the CA
/// offers usably. The CA's list is read as untrusted and open-ended: types acmekeep does not
/// know and challenges without a token are simply not chosen (CAs began offering token-less
/// types such as dns-persist-01 to every client, and clients that choked on them broke), and
/// an allowed type whose token is malformed gives way to the next allowed type the CA offers.
/// The error says what was offered and what was allowed.
fn pick_challenge(
    allowed: &[ChallengeKind],
    offered: &[instant_acme::Challenge],
) -> Result<Pick, String> {
    let mut passed_over = Vec::new();
    for &kind in allowed {
        let Some(ch) = offered.iter().find(|c| c.r#type == instant_type(kind)) else {
            continue;
        };
        // dns-persist-01 has no token: the standing record is the proof.
        if kind == ChallengeKind::DnsPersist01 {
            return Ok(Pick {
                kind,
                token: String::new(),
                passed_over,
            });
        }
        if !valid_token(&ch.token) {
            passed_over.push(if ch.token.is_empty() {
                format!("the CA sent no token in its {} challenge", kind.name())
            } else {
                format!(
                    "the CA sent a malformed challenge token in its {} challenge",
                    kind.name()
                )
            });
            continue;
        }
        return Ok(Pick {
            kind,
            token: ch.token.clone(),
            passed_over,
        });
    }
    if !passed_over.is_empty() {
        return Err(passed_over.join("; "));
    }
    let mut names: Vec<&str> = offered.iter().map(|c| type_name(&c.r#type)).collect();
    names.dedup();
    Err(format!(
        "the CA offers no challenge type this target may use (offered: {}; allowed: {})",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        },
        allowed
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// A token is used as a file name and URL path segment: it must be base64url (RFC 8555 §8.1).
fn valid_token(token: &str) -> bool {
    (16..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Issuer for InstantSession {
    async fn issue(
        &self,
        names: &[Hostname],
        csr_der: &[u8],
        options: OrderOptions<'_>,
        responder: &dyn Responder,
        on_finalized: &(dyn Fn(&str) -> anyhow::Result<()> + Sync),
    ) -> Result<Issued, AcmeError> {
        let OrderOptions {
            replaces,
            profile,
            alternate_chains,
        } = options;
        let identifiers: Vec<Identifier> = names
            .iter()
            .map(|n| match n.ip() {
                Some(ip) => Identifier::Ip(ip),
                None => Identifier::Dns(n.to_string()),
            })
            .collect();
        // A profile the CA no longer lists (CAs retire profiles) is not worth failing the
        // target over: the certificate comes from the CA's default profile instead, and the
        // planner, which compares the target's profile with the one asked for, does not
        // order again on every run because of it.
        let profile = match profile {
            Some(p) if !self.account.profiles().any(|m| m.name == p) => {
                let mut offered: Vec<String> =
                    self.account.profiles().map(|m| m.name.to_owned()).collect();
                // instant-acme keeps them in a hash map: name them in a stable order.
                offered.sort();
                tracing::warn!(
                    "request.profile {p:?} is not offered by {} (its directory offers: {}); ordering with the CA's default profile",
                    self.directory_url,
                    if offered.is_empty() {
                        "no profiles".to_owned()
                    } else {
                        offered.join(", ")
                    }
                );
                None
            }
            other => other,
        };
        // A challenge the responder cannot use as the CA sent it (a token a hook would take
        // for an option) gets a bounded number of fresh orders, with fresh authorizations.
        let identifiers = &identifiers;
        let mut order = super::order_with_usable_challenges(move || async move {
            let mut order = super::renewal::new_order(
                &self.account,
                (&self.http, &self.directory_url),
                identifiers,
                replaces,
                profile,
            )
            .await?;
            // Whatever happens while proving control, every response set up is taken down.
            let mut presented = Vec::new();
            let proved = self
                .prove_control(&mut order, responder, &mut presented)
                .await;
            responder.cleanup_all(&presented).await;
            proved.map(|()| order)
        })
        .await?;
        responder
            .finalizing(order.url())
            .await
            .map_err(AcmeError::Other)?;
        ca_retry!(self, order.finalize_csr(csr_der))
            .map_err(|e| ca_error("finalizing the order", e))?;
        on_finalized(order.url()).map_err(AcmeError::Other)?;
        let policy = retry_policy();
        let chain_pem = ca_retry!(self, order.poll_certificate(&policy))
            .map_err(|e| ca_error("downloading the certificate", e))?;
        let cert_url = order.state().certificate.clone();
        Ok(Issued {
            order_url: order.url().to_owned(),
            chains: self
                .chains(chain_pem, cert_url.as_deref(), alternate_chains)
                .await,
        })
    }

    async fn fetch_order_certificate(
        &self,
        order_url: &str,
        alternate_chains: bool,
    ) -> Result<Option<Chains>, AcmeError> {
        let mut order = ca_retry!(self, self.account.order(order_url.to_owned()))
            .map_err(|e| fetch_error("fetching the order", e))?;
        let Some(chain_pem) = ca_retry!(self, order.certificate())
            .map_err(|e| fetch_error("downloading the certificate", e))?
        else {
            return Ok(None);
        };
        let cert_url = order.state().certificate.clone();
        Ok(Some(
            self.chains(chain_pem, cert_url.as_deref(), alternate_chains)
                .await,
        ))
    }

    async fn finish_order(
        &self,
        order_url: &str,
        csr_der: &[u8],
        alternate_chains: bool,
    ) -> Result<Option<Chains>, AcmeError> {
        let mut order = ca_retry!(self, self.account.order(order_url.to_owned()))
            .map_err(|e| fetch_error("fetching the order", e))?;
        if order.state().status == OrderStatus::Ready {
            // Its holder was stopped before its finalize reached the CA. Should that finalize
            // arrive after ours, the CA refuses it (orderNotReady): still one certificate.
            if let Err(e) = ca_retry!(self, order.finalize_csr(csr_der)) {
                let not_ready = problem_of(&e)
                    .is_some_and(|p| p.is("urn:ietf:params:acme:error:orderNotReady"));
                if !not_ready {
                    return Err(ca_error("finalizing the order", e));
                }
                ca_retry!(self, order.refresh())
                    .map_err(|e| fetch_error("fetching the order", e))?;
            }
        }
        match order.state().status {
            OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid => {}
            other => {
                return Err(AcmeError::Refused(format!(
                    "order {order_url} is {} at the CA: it will not give a certificate",
                    format!("{other:?}").to_lowercase()
                )));
            }
        }
        let chain_pem = ca_retry!(self, order.poll_certificate(&retry_policy()))
            .map_err(|e| fetch_error("downloading the certificate", e))?;
        let cert_url = order.state().certificate.clone();
        Ok(Some(
            self.chains(chain_pem, cert_url.as_deref(), alternate_chains)
                .await,
        ))
    }

    async fn renewal_info(
        &self,
        ari_id: &str,
    ) -> Result<Option<(super::Window, Duration)>, AcmeError> {
        super::renewal::renewal_info(&self.account, ari_id).await
    }

    fn thumbprint(&self) -> String {
        self.thumbprint.clone()
    }

    fn ca_unresponsive(&self) -> bool {
        super::nonces::origin(&self.directory_url)
            .is_some_and(|o| self.http.timeouts(&o) >= UNRESPONSIVE_AFTER)
    }

    fn ca_paused_until(&self) -> Option<std::time::SystemTime> {
        self.http.pause_not_waited(&self.directory_url)
    }

    fn account_url(&self) -> String {
        self.account.id().to_owned()
    }

    async fn revoke(&self, cert_der: &[u8], reason: u8) -> Result<(), AcmeError> {
        let reason = match reason {
            0 => instant_acme::RevocationReason::Unspecified,
            1 => instant_acme::RevocationReason::KeyCompromise,
            3 => instant_acme::RevocationReason::AffiliationChanged,
            4 => instant_acme::RevocationReason::Superseded,
            5 => instant_acme::RevocationReason::CessationOfOperation,
            other => {
                return Err(AcmeError::Other(anyhow!(
                    "revocation reason code {other} is not one a subscriber may use"
                )));
            }
        };
        let cert = rustls_pki_types::CertificateDer::from(cert_der.to_vec());
        let request = instant_acme::RevocationRequest {
            certificate: &cert,
            reason: Some(reason),
        };
        match ca_retry!(self, self.account.revoke(&request)) {
            Ok(()) => Ok(()),
            Err(e) if problem_of(&e).is_some_and(|p| p.is(ALREADY_REVOKED)) => Ok(()),
            Err(e) => Err(ca_error("revoking the certificate", e)),
        }
    }
}

/// Explains why an order went invalid, from its authorizations' challenge errors.
async fn failed_validation(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(Ok(mut authz)) = authzs.next().await {
        let ident = authz.identifier().to_string();
        if let Ok(state) = authz.refresh().await {
            for ch in &state.challenges {
                if let Some(p) = &ch.error {
                    reasons.push(format!("{ident}: {}", describe_problem(p)));
                }
            }
        }
    }
    if reasons.is_empty() {
        "the order became invalid (the CA gave no reason)".to_owned()
    } else {
        format!("validation failed: {}", reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::{Pick, describe_problem, pick_challenge, valid_token};
    use crate::acme::ChallengeKind::{self, Dns01, Http01, TlsAlpn01};
    use crate::acme::error::MAX_PROBLEM_TEXT;

    /// A pending authorization as Pebble 2.10.1 answered it (recorded): five types in a
    /// shuffled order, dns-persist-01 without a token but with fields of its own; plus a
    /// made-up type with an unknown object inside, as a future CA might send.
    fn recorded_authz() -> instant_acme::AuthorizationState {
        serde_json::from_value(serde_json::json!({
            "status": "pending",
            "identifier": {"type": "dns", "value": "all-581468.example.test"},
            "challenges": [
                {"type": "dns-account-01", "url": "https://127.0.0.1:14400/chalZ/LwJt",
                 "token": "8s6KWlAoiM5DY6nt04Rxfx9ATIvOA43Q3wLiLN2QAHU", "status": "pending"},
                {"type": "tls-alpn-01", "url": "https://127.0.0.1:14400/chalZ/JwQe",
                 "token": "5158cYiPuSaTbYeqxABGrmH1duMY9-YiRMiR3oGRCi4", "status": "pending"},
                {"type": "dns-01", "url": "https://127.0.0.1:14400/chalZ/PbCW",
                 "token": "ivJ1Hq5q-FBWpPCujWLCbolIxpki5mr1HFirp_axwGk", "status": "pending"},
                {"type": "dns-persist-01", "url": "https://127.0.0.1:14400/chalZ/mjpq",
                 "status": "pending",
                 "accounturi": "https://127.0.0.1:14400/my-account/454a292520429d7f",
                 "issuer-domain-names": ["pebble.letsencrypt.org", "ca.pebble.example"]},
                {"type": "foo-99", "url": "https://127.0.0.1:14400/chalZ/foo",
                 "status": "pending", "weird": {"a": [1, {"b": null}]}},
                {"type": "http-01", "url": "https://127.0.0.1:14400/chalZ/TrUe",
                 "token": "hWuIA5iL3XYdCfSFGatUjkhx2u1o9mKktE49WO9lv_8", "status": "pending"}
            ],
            "expires": "2026-12-06T19:24:28Z",
            "futureField": {"x": 1}
        }))
        .expect("a recorded authorization deserializes")
    }

    fn pick(allowed: &[ChallengeKind], authz: &instant_acme::AuthorizationState) -> Pick {
        pick_challenge(allowed, &authz.challenges).expect("a challenge is chosen")
    }

    #[test]
    fn unknown_and_tokenless_challenge_types_leave_an_authorization_answerable() {
        let authz = recorded_authz();
        let p = pick(&[Http01, Dns01], &authz);
        assert_eq!(p.kind, Http01);
        assert_eq!(p.token, "hWuIA5iL3XYdCfSFGatUjkhx2u1o9mKktE49WO9lv_8");
        assert!(p.passed_over.is_empty());
        assert_eq!(pick(&[Dns01, Http01], &authz).kind, Dns01);
        assert_eq!(pick(&[TlsAlpn01], &authz).kind, TlsAlpn01);
    }

    #[test]
    fn an_allowed_type_sent_unusable_gives_way_to_the_next_allowed_one() {
        let mut authz = recorded_authz();
        for c in &mut authz.challenges {
            if c.r#type == instant_acme::ChallengeType::Http01 {
                c.token = "../../etc/passwd-aaaaaaaaaaa".into();
            }
        }
        let p = pick(&[Http01, Dns01], &authz);
        assert_eq!(p.kind, Dns01);
        assert_eq!(
            p.passed_over,
            ["the CA sent a malformed challenge token in its http-01 challenge"]
        );
        for c in &mut authz.challenges {
            c.token.clear();
        }
        let err = pick_challenge(&[Http01, Dns01], &authz.challenges).expect_err("no token");
        assert_eq!(
            err,
            "the CA sent no token in its http-01 challenge; \
             the CA sent no token in its dns-01 challenge"
        );
    }

    #[test]
    fn no_allowed_type_offered_names_what_was_offered() {
        let mut authz = recorded_authz();
        authz
            .challenges
            .retain(|c| c.r#type != instant_acme::ChallengeType::TlsAlpn01);
        let err = pick_challenge(&[TlsAlpn01], &authz.challenges).expect_err("none allowed");
        assert_eq!(
            err,
            "the CA offers no challenge type this target may use (offered: dns-account-01, \
             dns-01, dns-persist-01, foo-99, http-01; allowed: tls-alpn-01)"
        );
    }

    #[test]
    fn a_long_problem_detail_in_another_script_is_cut_between_characters() {
        // String::truncate(1000) panicked when byte 1000 fell inside a character: any CA
        // answering with a long non-ASCII detail aborted the run.
        let p: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:malformed",
            "detail": "é".repeat(2000),
        }))
        .expect("problem");
        let text = describe_problem(&p);
        assert_eq!(text.chars().count(), MAX_PROBLEM_TEXT);
        assert!(text.starts_with("malformed: éé"), "{text}");
    }

    #[test]
    fn tokens_are_base64url_only() {
        assert!(valid_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        for bad in [
            "",
            "short",
            "../../../../etc/passwd-aaaaaaaaa",
            "a/b-cccccccccccccccc",
            "a.b-cccccccccccccccccc",
            "ä-ccccccccccccccccccc",
        ] {
            assert!(!valid_token(bad), "{bad}");
        }
    }
}
