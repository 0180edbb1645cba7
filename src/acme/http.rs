//! The HTTPS client used for the CA: rustls with the system roots (or `SSL_CERT_FILE`) plus
//! an optional extra bundle, one connection pool for the whole run, one deadline for every
//! exchange (connect, send, the answer's head and its whole body) and a cap on every response
//! body, because the CA is untrusted input: a CA that answers slowly, or never stops
//! answering, costs one `--ca-timeout` per request, never the run. Every body is read whole
//! within that deadline before instant-acme sees it, so nothing reads from the CA later
//! without one. URLs are vetted before any request is made and the directory before
//! instant-acme reads it ([`super::vet`]).
//!
//! Every request instant-acme makes passes through here, which is how acmekeep sees what
//! instant-acme does not hand out: a certificate download's `Link: rel="alternate"` headers
//! (RFC 8555 §7.4.2) and its fresh nonce are remembered for [`CaHttp::take_download`].

use crate::clock::{Clock, SystemClock};
use std::collections::VecDeque;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::error::{Problem, Refusal};
use super::jws::ForeignKey;

/// Largest response body accepted from the CA.
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;
/// Deadline for one exchange (connect, send, receive the head and the whole body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most alternate chains taken from one certificate download's `Link` headers.
pub const MAX_ALTERNATES: usize = 8;
/// Certificate downloads remembered until [`CaHttp::take_download`] collects them (the
/// oldest are forgotten first; only downloads that offer alternates are remembered).
const MAX_REMEMBERED: usize = 32;
/// Longest `Replay-Nonce` kept (RFC 8555 nonces are short base64url strings).
const MAX_NONCE: usize = 256;
/// The media type of a certificate download (RFC 8555 §9.1).
pub const PEM_CHAIN: &str = "application/pem-certificate-chain";

type Inner = Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// What a certificate download said besides the chain: the URLs of the alternate chains
/// (already vetted, see [`alternate_links`]) and the response's fresh nonce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertDownload {
    /// Alternate chain URLs, in the CA's order.
    pub alternates: Vec<String>,
    /// The `Replay-Nonce` of the download response.
    pub nonce: Option<String>,
}

/// The answer to a request acmekeep signs itself ([`CaHttp::post_jose`]).
#[derive(Debug)]
pub struct JoseResponse {
    /// HTTP status.
    pub status: http::StatusCode,
    /// `Content-Type`, if readable.
    pub content_type: Option<String>,
    /// `Replay-Nonce`, if any.
    pub nonce: Option<String>,
    /// The CA's problem, when the answer is an error.
    pub problem: Option<Problem>,
    /// The body (at most [`MAX_RESPONSE`] bytes).
    pub body: Bytes,
}

/// A pooled HTTPS client that counts its requests.
#[derive(Clone)]
pub struct CaHttp {
    inner: Inner,
    /// Deadline for one request ([`REQUEST_TIMEOUT`] unless a test shortens it).
    timeout: Duration,
    requests: Arc<AtomicU64>,
    /// Orders the CAs accepted (newOrder answered with an order).
    orders: Arc<AtomicU64>,
    /// Requests that got no answer within [`REQUEST_TIMEOUT`], by origin (CAs reached with
    /// the same trusted roots share this client).
    timeouts: Arc<Mutex<std::collections::HashMap<String, u64>>>,
    resigner: Option<Arc<ForeignKey>>,
    downloads: Arc<Mutex<VecDeque<(String, CertDownload)>>>,
    /// Nonces of finished orders, for the next order's first request.
    nonces: Arc<Mutex<super::nonces::NoncePool>>,
    /// Directory documents fetched in this run, by URL: a directory does not change while a
    /// run lasts, and both acmekeep and instant-acme read it.
    directories: Arc<Mutex<std::collections::HashMap<String, Bytes>>>,
    /// Pauses the CAs asked for (rate limits, overload), waited out by every request.
    pauses: Arc<Mutex<super::pace::Pauses>>,
    /// The directory of the CA this client talks to ([`CaHttp::for_directory`]): every URL
    /// requested must be on its origin ([`super::vet::ca_url`]).
    directory: Option<Arc<url::Url>>,
    /// The wall clock the pauses are measured against.
    clock: Arc<dyn Clock>,
}

/// Why an exchange with the CA failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The URL is not one acmekeep requests.
    #[error(transparent)]
    Url(#[from] super::vet::UrlRefused),
    /// The directory document is refused.
    #[error(transparent)]
    Directory(#[from] super::vet::DirectoryRefused),
    /// No complete answer (head and body) within the deadline.
    #[error("{method} {url} timed out: no complete answer within {timeout:?} (--ca-timeout)")]
    TimedOut {
        /// The request method.
        method: http::Method,
        /// The URL.
        url: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The request could not be sent or its answer's head not read.
    #[error("{method} {url}")]
    Send {
        /// The request method.
        method: http::Method,
        /// The URL.
        url: String,
        /// What went wrong.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The answer's body is larger than [`MAX_RESPONSE`].
    #[error("the answer to {method} {url} is larger than {} MiB", MAX_RESPONSE >> 20)]
    TooLarge {
        /// The request method.
        method: http::Method,
        /// The URL.
        url: String,
    },
    /// The answer's body could not be read.
    #[error("reading the answer to {method} {url}")]
    Body {
        /// The request method.
        method: http::Method,
        /// The URL.
        url: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ExchangeError {
    fn into_acme(self) -> instant_acme::Error {
        instant_acme::Error::Other(Box::new(self))
    }
}

impl std::fmt::Debug for CaHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaHttp")
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Builds the root store: the system's (rustls-native-certs follows `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`, the OpenSSL and Go convention) plus `extra`, a PEM bundle.
pub fn root_store(extra: Option<&Path>) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // Skip the odd unparseable system certificate rather than failing the run.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading CA bundle {}", path.display()))?
        {
            let cert = cert.with_context(|| format!("parsing CA bundle {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("adding a certificate from {}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(anyhow!("CA bundle {} holds no certificate", path.display()));
        }
    }
    if roots.is_empty() {
        return Err(anyhow!(
            "no trusted CA certificates found (install ca-certificates, or set SSL_CERT_FILE or request.provider-ca-bundle)"
        ));
    }
    Ok(roots)
}

impl CaHttp {
    /// A client trusting `roots`. Plain `http://` is allowed at this layer; URLs are
    /// vetted when targets are resolved (only loopback may use it).
    pub fn new(roots: rustls::RootCertStore) -> Result<Self> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("configuring TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        // TCP_NODELAY: every ACME exchange is a small request answered by a small response;
        // with Nagle's algorithm on, the second write of a request (HTTP/2 headers, then its
        // body) waits for the peer's delayed ACK — about 40 ms per round trip.
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            inner,
            timeout: REQUEST_TIMEOUT,
            requests: Arc::new(AtomicU64::new(0)),
            orders: Arc::default(),
            timeouts: Arc::default(),
            resigner: None,
            downloads: Arc::new(Mutex::new(VecDeque::new())),
            nonces: Arc::default(),
            directories: Arc::default(),
            pauses: Arc::default(),
            directory: None,
            clock: Arc::new(SystemClock),
        })
    }

    /// The same client, reading the time from `clock` (tests set it).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// The clock this client reads the time from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The same client (same pool, counters and pauses) for the CA whose directory is at
    /// `directory_url`: it requests nothing off that directory's origin.
    pub fn for_directory(&self, directory_url: &str) -> Result<Self, super::vet::UrlRefused> {
        Ok(Self {
            directory: Some(Arc::new(super::vet::directory_url(directory_url)?)),
            ..self.clone()
        })
    }

    /// Refuses a URL this client must not request (see [`super::vet`]).
    fn vet(&self, url: &str) -> Result<(), super::vet::UrlRefused> {
        match &self.directory {
            Some(d) => super::vet::ca_url(url, d),
            None => super::vet::directory_url(url).map(drop),
        }
    }

    /// Refuses a directory document fetched from `url` that names a URL this client must not
    /// request, or lacks what instant-acme needs.
    fn vet_directory(&self, url: &str, body: &Bytes) -> Result<(), ExchangeError> {
        let base = match &self.directory {
            Some(d) => d.as_ref().clone(),
            None => super::vet::directory_url(url)?,
        };
        Ok(super::vet::directory(body, &base)?)
    }

    /// Whether `url` is this client's directory.
    fn is_directory(&self, url: &str) -> bool {
        self.directory
            .as_deref()
            .is_some_and(|d| url::Url::parse(url).is_ok_and(|u| u == *d))
    }

    /// One exchange with the CA: the request, the answer's head and its whole body (at most
    /// [`MAX_RESPONSE`] bytes), within one deadline. The URL is vetted first, and the CA's
    /// pause, if any, is waited out before the deadline starts. A `Retry-After` in the
    /// answer is rewritten into bounded delay-seconds ([`super::vet::retry_after`]).
    async fn exchange(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), ExchangeError> {
        let method = req.method().clone();
        let url = req.uri().to_string();
        self.vet(&url)?;
        self.paced(&url).await;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let answer = async {
            let rsp = self
                .inner
                .request(req)
                .await
                .map_err(|source| ExchangeError::Send {
                    method: method.clone(),
                    url: url.clone(),
                    source,
                })?;
            let (mut parts, body) = rsp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|source| {
                    if source.is::<http_body_util::LengthLimitError>() {
                        ExchangeError::TooLarge {
                            method: method.clone(),
                            url: url.clone(),
                        }
                    } else {
                        ExchangeError::Body {
                            method: method.clone(),
                            url: url.clone(),
                            source,
                        }
                    }
                })?
                .to_bytes();
            bound_retry_after(&mut parts.headers);
            Ok((parts, body))
        };
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(done) => done,
            Err(_) => {
                self.count_timeout(&url);
                Err(ExchangeError::TimedOut {
                    method,
                    url,
                    timeout: self.timeout,
                })
            }
        }
    }

    /// The same client (same pool, same counter) re-signing every JWS it posts with `key`.
    pub fn with_resigner(&self, key: Arc<ForeignKey>) -> Self {
        Self {
            resigner: Some(key),
            ..self.clone()
        }
    }

    /// The same client with another deadline per request.
    pub fn with_request_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// The same client waiting at most `budget` per CA in a run for the CA's pauses (see
    /// [`super::pace`]). Meant for a new client: the pauses recorded so far are forgotten.
    pub fn with_rate_limit_wait(&self, budget: Duration) -> Self {
        Self {
            pauses: Arc::new(Mutex::new(super::pace::Pauses::with_budget(budget))),
            ..self.clone()
        }
    }

    /// The end of the pause the CA at `url` asked for, when this run will not wait it out.
    pub fn pause_not_waited(&self, url: &str) -> Option<std::time::SystemTime> {
        self.pause_of(url, super::pace::Pauses::spent)
    }

    /// Asks the pause table about the CA at `url`, now.
    fn pause_of<T>(
        &self,
        url: &str,
        ask: impl FnOnce(&super::pace::Pauses, &str, std::time::SystemTime) -> Option<T>,
    ) -> Option<T> {
        let origin = super::nonces::origin(url)?;
        let pauses = self.pauses.lock().unwrap_or_else(|e| e.into_inner());
        ask(&pauses, &origin, self.clock.now())
    }

    /// Number of requests to `origin` (`scheme://host:port`) that timed out so far.
    pub fn timeouts(&self, origin: &str) -> u64 {
        self.timeouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(origin)
            .copied()
            .unwrap_or(0)
    }

    /// Counts a timeout of a request to `url`.
    fn count_timeout(&self, url: &str) {
        if let Some(origin) = super::nonces::origin(url) {
            *self
                .timeouts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(origin)
                .or_default() += 1;
        }
    }

    /// Number of requests sent so far.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Counts an order the CA accepted.
    pub fn count_order(&self) {
        self.orders.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of orders the CAs accepted so far.
    pub fn order_count(&self) -> u64 {
        self.orders.load(Ordering::Relaxed)
    }

    /// How long the next request to the CA at `url` waits because the CA asked this run to
    /// slow down (see [`super::pace`]); `None`: it goes at once.
    pub fn pause(&self, url: &str) -> Option<Duration> {
        self.pause_of(url, super::pace::Pauses::wait)
    }

    /// Waits out the CA's pause, if any, before a request to `url`.
    async fn paced(&self, url: &str) {
        if let Some(d) = self.pause(url) {
            tracing::debug!("the CA asked to slow down: waiting {d:.1?} before {url}");
            tokio::time::sleep(d).await;
        }
    }

    /// Reads an error answer from `url`: a pause it asks for is recorded, and it is returned
    /// as the CA's [`Problem`] (naming the status, with the time to retry after).
    fn error_answer(&self, url: &str, parts: &http::response::Parts, body: &Bytes) -> Problem {
        let now = self.clock.now();
        let retry_after = parts
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok());
        let (until, problem) = read_error_answer(parts.status, retry_after, body, now);
        if let (Some(until), Some(origin)) = (until, super::nonces::origin(url)) {
            let waited = self
                .pauses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(&origin, until, now);
            if waited {
                let secs = until.duration_since(now).unwrap_or_default().as_secs_f64();
                tracing::info!(
                    "{origin} asked to slow down (HTTP {}): no requests to it for {secs:.0} s",
                    parts.status.as_u16()
                );
            }
        }
        problem
    }

    /// The directory document at `url`, if this run has fetched it already.
    fn cached_directory(&self, url: &str) -> Option<Bytes> {
        self.directories
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(url)
            .cloned()
    }

    /// Keeps `body` fetched from `url` if it is a directory document (it names `newNonce`).
    fn keep_if_directory(&self, url: &str, body: &Bytes) {
        let is_directory = serde_json::from_slice::<serde_json::Value>(body)
            .is_ok_and(|v| v.get("newNonce").is_some_and(|n| n.is_string()));
        if is_directory {
            self.directories
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(url.to_owned(), body.clone());
        }
    }

    /// A plain GET of the directory document (fetched once per run), vetted.
    pub async fn get(&self, url: &str) -> Result<Bytes> {
        if let Some(body) = self.cached_directory(url) {
            return Ok(body);
        }
        let req = http::Request::get(url)
            .header(http::header::USER_AGENT, user_agent())
            .body(BodyWrapper::default())?;
        let (parts, body) = self.exchange(req).await?;
        if !parts.status.is_success() {
            return Err(anyhow!("GET {url} returned HTTP {}", parts.status));
        }
        self.vet_directory(url, &body)?;
        self.keep_if_directory(url, &body);
        Ok(body)
    }

    /// A HEAD on the CA's newNonce resource (RFC 8555 §7.2): a fresh nonce.
    pub async fn new_nonce(&self, url: &str) -> Result<String> {
        let req = http::Request::head(url)
            .header(http::header::USER_AGENT, user_agent())
            .body(BodyWrapper::default())?;
        let (parts, _) = self.exchange(req).await?;
        replay_nonce(&parts.headers).ok_or_else(|| anyhow!("HEAD {url} returned no Replay-Nonce"))
    }

    /// POSTs a JWS acmekeep signed itself (`application/jose+json`), as it is: never
    /// re-signed. The body is read up to [`MAX_RESPONSE`] bytes whatever the status.
    pub async fn post_jose(&self, url: &str, jws: Vec<u8>) -> Result<JoseResponse> {
        let req = http::Request::post(url)
            .header(http::header::USER_AGENT, user_agent())
            .header(http::header::CONTENT_TYPE, "application/jose+json")
            .body(BodyWrapper::from(jws))?;
        let (parts, body) = self.exchange(req).await?;
        let problem = (parts.status.is_client_error() || parts.status.is_server_error())
            .then(|| self.error_answer(url, &parts, &body));
        Ok(JoseResponse {
            status: parts.status,
            problem,
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            nonce: replay_nonce(&parts.headers),
            body,
        })
    }

    /// What the download of the certificate at `cert_url` offered besides its chain, if it
    /// offered alternates; forgotten once taken.
    pub fn take_download(&self, cert_url: &str) -> Option<CertDownload> {
        let key = uri_key(cert_url);
        let mut downloads = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        let at = downloads.iter().rposition(|(url, _)| *url == key)?;
        downloads.remove(at).map(|(_, d)| d)
    }

    /// Remembers a successful response that is a certificate chain and names alternates.
    fn observe(&self, url: &str, parts: &http::response::Parts) {
        if !parts.status.is_success() || !is_pem_chain(&parts.headers) {
            return;
        }
        let links = parts
            .headers
            .get_all(http::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let alternates = alternate_links(links, url);
        if alternates.is_empty() {
            // The order is finished and nobody will use this nonce: keep it for the next.
            if let (Some(origin), Some(nonce)) =
                (super::nonces::origin(url), replay_nonce(&parts.headers))
            {
                self.nonces.lock().unwrap_or_else(|e| e.into_inner()).put(
                    &origin,
                    nonce,
                    std::time::Instant::now(),
                );
            }
            return;
        }
        let download = CertDownload {
            alternates,
            nonce: replay_nonce(&parts.headers),
        };
        let mut downloads = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        downloads.retain(|(u, _)| u != url);
        if downloads.len() >= MAX_REMEMBERED {
            downloads.pop_front();
        }
        downloads.push_back((url.to_owned(), download));
    }
}

/// The form a URL is remembered under: as `http::Uri` prints it, so the URL instant-acme
/// requested and the one the order object names compare equal.
fn uri_key(url: &str) -> String {
    url.parse::<http::Uri>()
        .map_or_else(|_| url.to_owned(), |u| u.to_string())
}

pub(crate) fn is_pem_chain(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_pem_chain_type)
}

/// Whether a `Content-Type` value is [`PEM_CHAIN`] (parameters such as `charset` aside).
pub fn is_pem_chain_type(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(PEM_CHAIN))
}

/// The `Replay-Nonce` header, when it is a plausible nonce (base64url, bounded).
pub(crate) fn replay_nonce(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get("replay-nonce")?.to_str().ok()?.trim();
    let ok = !v.is_empty()
        && v.len() <= MAX_NONCE
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| v.to_owned())
}

/// The targets of the `rel="alternate"` links among `Link` header values (RFC 8288 §3:
/// comma-separated `<URI-Reference>; param=value` entries; a relation type is matched
/// case-insensitively among the space-separated types of the first `rel`), resolved against
/// `base`, the http(s) URL that was requested. Only URLs on the same origin (scheme, host,
/// port) as `base` are kept — acmekeep signs a request to each, and the CA is no reason to
/// send one elsewhere — without duplicates or `base` itself, at most [`MAX_ALTERNATES`];
/// malformed entries are skipped.
pub fn alternate_links<'a>(values: impl IntoIterator<Item = &'a str>, base: &str) -> Vec<String> {
    let Ok(base_url) = url::Url::parse(base) else {
        return Vec::new();
    };
    if !matches!(base_url.scheme(), "https" | "http") {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for value in values {
        for (target, rel) in link_entries(value) {
            if out.len() >= MAX_ALTERNATES {
                return out;
            }
            let alternate = rel.is_some_and(|r| {
                r.split_ascii_whitespace()
                    .any(|t| t.eq_ignore_ascii_case("alternate"))
            });
            if !alternate {
                continue;
            }
            let Ok(url) = base_url.join(target.trim()) else {
                continue;
            };
            if url.origin() != base_url.origin() {
                continue;
            }
            let url = url.to_string();
            if url != base_url.as_str() && !out.contains(&url) {
                out.push(url);
            }
        }
    }
    out
}

/// The entries of one `Link` header value: each target and its first `rel` value.
fn link_entries(value: &str) -> Vec<(&str, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return out;
        }
        let target = rest
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .map(|(t, after)| {
                rest = after;
                t
            });
        // Parameters up to the next comma outside a quoted string.
        let mut rel = None;
        loop {
            rest = rest.trim_start();
            match rest.chars().next() {
                None => break,
                Some(',') => break,
                Some(';') => {
                    rest = &rest[1..];
                    let (name, value, after) = link_param(rest);
                    rest = after;
                    if rel.is_none() && name.eq_ignore_ascii_case("rel") {
                        rel = Some(value.unwrap_or_default());
                    }
                }
                Some(_) => {
                    // Malformed: skip to the next comma.
                    let skip = rest.find(',').unwrap_or(rest.len());
                    rest = &rest[skip..];
                }
            }
        }
        if let Some(t) = target {
            out.push((t, rel));
        }
    }
}

/// One `name[=value]` link parameter at the start of `s` (after its `;`): the name, the
/// value (a token, or a quoted string with its escapes resolved) and what follows.
fn link_param(s: &str) -> (&str, Option<String>, &str) {
    let end = s.find(['=', ';', ',']).unwrap_or(s.len());
    let name = s[..end].trim();
    let rest = &s[end..];
    let Some(rest) = rest.strip_prefix('=') else {
        return (name, None, rest);
    };
    let rest = rest.trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (name, Some(value), &quoted[i + 1..]),
                c => value.push(c),
            }
        }
        // Unterminated: the value runs to the end.
        return (name, Some(value), "");
    }
    let end = rest.find([';', ',']).unwrap_or(rest.len());
    (name, Some(rest[..end].trim().to_owned()), &rest[end..])
}

/// Bounds a `Retry-After` given in seconds to [`super::pace::MAX_RETRY_AFTER`] before
/// instant-acme reads it: it adds the seconds to the clock unchecked (ARI and order polling),
/// so a CA's `Retry-After: 18446744073709551615` overflowed `SystemTime`, a panic that
/// aborted the run. An HTTP-date cannot overflow (its year is at most 9999).
pub(crate) fn bound_retry_after(headers: &mut http::HeaderMap) {
    let max = super::pace::MAX_RETRY_AFTER.as_secs();
    // As instant-acme reads it: the first value, trimmed, as a u64 (which allows a `+`).
    let too_long = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|secs| secs > max);
    if too_long {
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(max));
    }
}

/// `acmekeep/<version>`.
pub fn user_agent() -> &'static str {
    concat!("acmekeep/", env!("CARGO_PKG_VERSION"))
}

/// What an error answer with `status`, `Retry-After` value `retry_after` and `body` says at
/// `now`: until when it asks the client to slow down (see [`super::pace`]), and the CA's
/// [`Problem`] (which carries that time).
pub fn read_error_answer(
    status: http::StatusCode,
    retry_after: Option<&str>,
    body: &Bytes,
    now: std::time::SystemTime,
) -> (Option<std::time::SystemTime>, Problem) {
    let problem = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
    let until = super::pace::slow_down_until(status, retry_after, &problem, now);
    (until, Problem::from_answer(status, body, until))
}

impl HttpClient for CaHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        // The form `take_download` looks it up by.
        let url = req.uri().to_string();
        // instant-acme sends HEAD only to newNonce: answer from the pool when it can.
        if req.method() == http::Method::HEAD
            && let Some(nonce) = super::nonces::origin(&url).and_then(|o| {
                self.nonces
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(&o, std::time::Instant::now())
            })
        {
            let rsp = http::Response::builder()
                .status(http::StatusCode::OK)
                .header("replay-nonce", nonce)
                .body(http_body_util::Empty::<Bytes>::new());
            return Box::pin(async move {
                Ok(BytesResponse::from(
                    rsp.map_err(|e| instant_acme::Error::Other(e.into()))?,
                ))
            });
        }
        if req.method() == http::Method::GET
            && let Some(body) = self.cached_directory(&url)
        {
            let rsp = http::Response::builder()
                .status(http::StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(body));
            return Box::pin(async move {
                Ok(BytesResponse::from(
                    rsp.map_err(|e| instant_acme::Error::Other(e.into()))?,
                ))
            });
        }
        let me = self.clone();
        Box::pin(async move { me.send(req, url).await })
    }
}

impl CaHttp {
    /// Sends a request of instant-acme's to `url` (a POST re-signed first when this client
    /// signs for a foreign key) and reads the answer: an error answer becomes a [`Refusal`]
    /// (but badNonce, which instant-acme retries itself), a directory is vetted and kept, and
    /// every URL in an order, authorization or account is vetted before instant-acme follows
    /// one.
    async fn send(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
        url: String,
    ) -> Result<BytesResponse, instant_acme::Error> {
        let is_get = req.method() == http::Method::GET;
        let req = match self.resigner.clone() {
            Some(key) if req.method() == http::Method::POST => {
                let (parts, body) = req.into_parts();
                let bytes = match body.collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(never) => match never {},
                };
                let signed = key
                    .resign(&bytes)
                    .map_err(|e| instant_acme::Error::Other(e.into()))?;
                http::Request::from_parts(parts, BodyWrapper::from(signed))
            }
            _ => req,
        };
        let (parts, body) = self.exchange(req).await.map_err(ExchangeError::into_acme)?;
        if parts.status.is_client_error() || parts.status.is_server_error() {
            self.observe(&url, &parts);
            let problem = self.error_answer(&url, &parts, &body);
            // instant-acme retries a badNonce rejection itself, with the nonce of the answer:
            // that one must reach it as an answer. Every other refusal goes up as a value
            // (instant-acme passes its client's errors on untouched).
            if !(parts.status == http::StatusCode::BAD_REQUEST
                && problem.is(super::error::BAD_NONCE))
            {
                return Err(instant_acme::Error::Other(Box::new(Refusal(problem))));
            }
        } else if is_get {
            // The directory (instant-acme reads it first) or renewal information.
            if self.is_directory(&url) || looks_like_directory(&body) {
                self.vet_directory(&url, &body)
                    .map_err(ExchangeError::into_acme)?;
                self.keep_if_directory(&url, &body);
            }
        } else {
            // Order, authorization, account: every URL in it is vetted before instant-acme
            // follows one.
            if let Some(d) = &self.directory {
                let location = parts
                    .headers
                    .get(http::header::LOCATION)
                    .map(|l| l.to_str().unwrap_or("(not text)"));
                super::vet::answer_urls(&body, location, d)
                    .map_err(|e| ExchangeError::from(e).into_acme())?;
            }
            self.observe(&url, &parts);
        }
        Ok(BytesResponse::from(http::Response::from_parts(
            parts,
            http_body_util::Full::new(body),
        )))
    }
}

/// Whether a body names `newNonce`, as a directory document does.
fn looks_like_directory(body: &Bytes) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.get("newNonce").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://ca.example/cert/abc";

    /// A pause the CA asks for is measured on the client's clock: it lasts until the clock
    /// reaches the CA's time, not a moment longer, whatever the machine's clock says.
    #[test]
    fn pauses_follow_the_clock() {
        let start = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let clock = Arc::new(crate::clock::FakeClock::at(start));
        let http = CaHttp::new(rustls::RootCertStore::empty())
            .expect("client")
            .with_clock(clock.clone());
        let url = "https://ca.example/acme/new-order";
        assert_eq!(http.pause(url), None);
        let (parts, ()) = http::Response::builder()
            .status(429)
            .header(http::header::RETRY_AFTER, "50")
            .body(())
            .expect("response")
            .into_parts();
        let body = Bytes::from_static(
            br#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"slow down"}"#,
        );
        http.error_answer(url, &parts, &body);
        assert_eq!(http.pause(url), Some(Duration::from_secs(50)));
        clock.advance(Duration::from_secs(30));
        assert_eq!(http.pause(url), Some(Duration::from_secs(20)));
        clock.advance(Duration::from_secs(21));
        assert_eq!(http.pause(url), None);
    }

    #[test]
    fn a_retry_after_beyond_the_end_of_time_is_bounded_before_instant_acme_reads_it() {
        // instant-acme computes `SystemTime::now() + Duration::from_secs(value)`: these
        // overflowed it, a panic that aborted the run.
        let max = super::super::pace::MAX_RETRY_AFTER.as_secs().to_string();
        for (value, bounded) in [
            ("18446744073709551615", max.as_str()),
            (" +9300000000000000000 ", max.as_str()),
            ("604801", max.as_str()),
            ("604800", "604800"),
            ("120", "120"),
            (
                "Fri, 31 Dec 9999 23:59:59 GMT",
                "Fri, 31 Dec 9999 23:59:59 GMT",
            ),
            ("999999999999999999999999", "999999999999999999999999"),
        ] {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_str(value).expect("header"),
            );
            bound_retry_after(&mut headers);
            assert_eq!(headers[http::header::RETRY_AFTER], bounded, "{value}");
            // What instant-acme then does with it must not overflow.
            if let Ok(secs) = headers[http::header::RETRY_AFTER]
                .to_str()
                .expect("text")
                .trim()
                .parse::<u64>()
            {
                let _ = std::time::SystemTime::now() + Duration::from_secs(secs);
            }
        }
    }

    /// The time to retry after travels as a value (rounded up to the second: never earlier
    /// than the CA's), and the text people read says it once.
    #[test]
    fn the_time_to_retry_after_is_a_value_and_said_once() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_435_200_250);
        let read = |retry_after: Option<&str>, body: &str| {
            read_error_answer(
                http::StatusCode::TOO_MANY_REQUESTS,
                retry_after,
                &Bytes::from(body.to_owned()),
                now,
            )
            .1
        };
        let limited =
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders"}"#;
        let p = read(Some("30"), limited);
        assert_eq!(
            p.retry_at,
            Some(time::macros::datetime!(2026-11-23 12:00:31 UTC))
        );
        assert_eq!(
            p.detail.as_deref(),
            Some("too many new orders"),
            "the CA's own"
        );
        assert_eq!(
            p.describe(),
            "rateLimited: too many new orders (retry after 2026-11-23T12:00:31Z)"
        );
        assert_eq!(
            read(Some("30"), "").describe(),
            "error: HTTP 429 Too Many Requests (retry after 2026-11-23T12:00:31Z)"
        );
        // The CA's own "retry after" is the time when there is no header, and is not repeated.
        let le = r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"limited, retry after 2026-11-23 13:00:00 UTC: see the docs"}"#;
        let p = read(None, le);
        assert_eq!(
            p.retry_at,
            Some(time::macros::datetime!(2026-11-23 13:00 UTC))
        );
        assert_eq!(
            p.describe(),
            "rateLimited: limited, retry after 2026-11-23 13:00:00 UTC: see the docs"
        );
        // With both, the detail's time (when the limit refills) is kept, as the run record
        // always took it; the header's is only the pause within the run.
        assert_eq!(
            read(Some("30"), le).retry_at,
            Some(time::macros::datetime!(2026-11-23 13:00 UTC))
        );
        assert_eq!(read(None, limited).retry_at, None);
    }

    #[test]
    fn timeouts_are_counted_per_origin() {
        // A server that accepts connections and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let origin = format!("http://{}", silent.local_addr().expect("addr"));
        let rt = crate::commands::runtime().expect("runtime");
        let http = CaHttp::new(root_store(None).expect("roots"))
            .expect("client")
            .with_request_timeout(Duration::from_millis(200));
        rt.block_on(async {
            for _ in 0..2 {
                let err = http
                    .get(&format!("{origin}/dir"))
                    .await
                    .expect_err("no answer");
                assert!(format!("{err:#}").contains("timed out"), "{err:#}");
            }
            let req = http::Request::head(format!("{origin}/nonce"))
                .body(BodyWrapper::default())
                .expect("request");
            assert!(HttpClient::request(&http, req).await.is_err());
        });
        assert_eq!(http.timeouts(&origin), 3);
        assert_eq!(http.timeouts("https://other.example"), 0);
        drop(silent);
    }

    /// A plain-HTTP server on loopback that answers every connection with `head`, then
    /// `body` a chunk at a time, `pause` apart, for as long as the client reads.
    fn dribbling_server(
        head: &'static str,
        chunk: &'static [u8],
        pause: Duration,
    ) -> (String, std::thread::JoinHandle<()>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let origin = format!("http://{}", listener.local_addr().expect("addr"));
        let t = std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            if s.write_all(head.as_bytes()).is_err() {
                return;
            }
            for _ in 0..100_000 {
                if s.write_all(chunk).is_err() {
                    return;
                }
                std::thread::sleep(pause);
            }
        });
        (origin, t)
    }

    #[test]
    fn a_body_sent_slowly_times_out_with_its_exchange() {
        let rt = crate::commands::runtime().expect("runtime");
        let timeout = Duration::from_millis(600);
        let http = CaHttp::new(root_store(None).expect("roots"))
            .expect("client")
            .with_request_timeout(timeout);
        // The head at once, then a byte every 200 ms of a 100-byte body: never complete
        // within the deadline, though the CA is never silent for long.
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
        for how in ["get", "post_jose", "instant-acme"] {
            let (origin, server) = dribbling_server(head, b" ", Duration::from_millis(200));
            let url = format!("{origin}/x");
            let started = std::time::Instant::now();
            let err = rt.block_on(async {
                match how {
                    "get" => http.get(&url).await.map(drop),
                    "post_jose" => http.post_jose(&url, b"{}".to_vec()).await.map(drop),
                    _ => {
                        let req = http::Request::post(&url)
                            .body(BodyWrapper::from(b"{}".to_vec()))
                            .expect("request");
                        match HttpClient::request(&http, req).await {
                            Ok(mut rsp) => rsp
                                .body
                                .into_bytes()
                                .await
                                .map(drop)
                                .map_err(|e| anyhow!(e)),
                            Err(e) => Err(anyhow!(e)),
                        }
                    }
                }
            });
            let took = started.elapsed();
            let err = format!("{:#}", err.expect_err(how));
            assert!(err.contains("no complete answer within"), "{how}: {err}");
            assert!(took < timeout * 3, "{how}: took {took:?}");
            drop(server);
        }
        assert_eq!(http.timeouts("http://127.0.0.1"), 0, "counted by port");
    }

    #[test]
    fn an_endless_body_is_cut_at_the_cap() {
        let rt = crate::commands::runtime().expect("runtime");
        let http = CaHttp::new(root_store(None).expect("roots"))
            .expect("client")
            .with_request_timeout(Duration::from_secs(20));
        // No length: the body runs until the connection closes, which it never does.
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
        let (origin, server) = dribbling_server(head, &[b'x'; 65536], Duration::ZERO);
        let err = rt
            .block_on(http.post_jose(&format!("{origin}/x"), Vec::new()))
            .expect_err("too large");
        assert!(format!("{err:#}").contains("larger than 4 MiB"), "{err:#}");
        drop(server);
    }

    #[test]
    fn requests_off_the_directory_origin_are_refused_before_they_are_sent() {
        let rt = crate::commands::runtime().expect("runtime");
        let base = CaHttp::new(root_store(None).expect("roots")).expect("client");
        let http = base
            .for_directory("https://ca.example/dir")
            .expect("directory");
        for url in [
            "https://elsewhere.example/x",
            "http://ca.example/x",
            "http://127.0.0.1:2379/v3/kv/range",
        ] {
            let req = http::Request::post(url)
                .body(BodyWrapper::from(b"{}".to_vec()))
                .expect("request");
            let err = rt
                .block_on(HttpClient::request(&http, req))
                .err()
                .expect(url);
            assert!(
                err.to_string().contains("not on the origin"),
                "{url}: {err}"
            );
        }
        assert_eq!(base.request_count(), 0, "nothing was sent");
        assert!(base.for_directory("ftp://ca.example/dir").is_err());
    }

    #[test]
    fn pebble_style_alternate_links_are_found() {
        let got = alternate_links(
            [
                r#"<https://ca.example/cert/abc/alternate/1>;rel="alternate""#,
                r#"<https://ca.example/cert/abc/alternate/2>;rel="alternate""#,
            ],
            BASE,
        );
        assert_eq!(
            got,
            [
                "https://ca.example/cert/abc/alternate/1",
                "https://ca.example/cert/abc/alternate/2"
            ]
        );
    }

    #[test]
    fn link_values_are_parsed_as_rfc8288_says() {
        let got = alternate_links(
            [
                // Several entries in one value, other relations, a quoted comma, a relative
                // reference, a token value, a list of relation types in any case.
                r#"<https://ca.example/dir>;rel="index", </cert/abc/1>; rel=alternate, <https://ca.example/x,y>;title="a, \"b\"";rel="up ALTERNATE""#,
                // Only the first rel counts; no rel at all; a malformed entry; a bare word.
                r#"<https://ca.example/2>;rel="up";rel="alternate", <https://ca.example/3>, garbage;rel=alternate, <https://ca.example/4>;rel=alternate"#,
                // Not http(s), another origin, the certificate itself, a duplicate, an
                // unterminated quote.
                r#"<ftp://ca.example/5>;rel=alternate, <data:text/plain,x>;rel=alternate, <https://elsewhere.example/cert/abc/1>;rel=alternate, <http://ca.example/cert/abc/1>;rel=alternate, <https://ca.example:8443/1>;rel=alternate, <https://ca.example/cert/abc>;rel=alternate, </cert/abc/1>;rel=alternate, <https://ca.example/6>;rel="alternate"#,
            ],
            BASE,
        );
        assert_eq!(
            got,
            [
                "https://ca.example/cert/abc/1",
                "https://ca.example/x,y",
                "https://ca.example/4",
                "https://ca.example/6",
            ]
        );
        assert!(alternate_links([""], BASE).is_empty());
        assert!(alternate_links([",,; ;<"], BASE).is_empty());
        assert!(alternate_links(["<https://a/b>;rel=alternate"], "not a url").is_empty());
        assert!(alternate_links(["<file:///b>;rel=alternate"], "file:///a").is_empty());
    }

    #[test]
    fn alternate_links_are_bounded() {
        let many: Vec<String> = (0..100)
            .map(|i| format!("<https://ca.example/alt/{i}>;rel=alternate"))
            .collect();
        let joined = many.join(", ");
        assert_eq!(
            alternate_links([joined.as_str()], BASE).len(),
            MAX_ALTERNATES
        );
        assert_eq!(
            alternate_links(many.iter().map(String::as_str), BASE).len(),
            MAX_ALTERNATES
        );
    }

    fn response(content_type: &str, links: &[&str], nonce: &str) -> http::response::Parts {
        let mut b = http::Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, content_type)
            .header("Replay-Nonce", nonce);
        for l in links {
            b = b.header(http::header::LINK, *l);
        }
        b.body(()).expect("response").into_parts().0
    }

    #[test]
    fn certificate_downloads_with_alternates_are_remembered_until_taken() {
        let http = CaHttp::new(rustls::RootCertStore::empty()).expect("client");
        let link = r#"<https://ca.example/cert/abc/alternate/1>;rel="alternate""#;
        // Not a certificate, or no alternates: nothing remembered.
        http.observe(BASE, &response("application/json", &[link], "n1"));
        http.observe(BASE, &response(PEM_CHAIN, &[], "n2"));
        assert_eq!(http.take_download(BASE), None);

        http.observe(
            BASE,
            &response(
                "application/pem-certificate-chain; charset=utf-8",
                &[link],
                "n-3_",
            ),
        );
        let clone = http.clone();
        assert_eq!(
            clone.take_download(BASE),
            Some(CertDownload {
                alternates: vec!["https://ca.example/cert/abc/alternate/1".to_owned()],
                nonce: Some("n-3_".to_owned()),
            }),
            "shared between clones"
        );
        assert_eq!(http.take_download(BASE), None, "taken once");

        // A nonce that is not base64url is not kept; old entries make room for new ones.
        http.observe(BASE, &response(PEM_CHAIN, &[link], "bad nonce\""));
        assert_eq!(http.take_download(BASE).expect("kept").nonce, None);
        for i in 0..=MAX_REMEMBERED {
            http.observe(&format!("{BASE}{i}"), &response(PEM_CHAIN, &[link], "n"));
        }
        assert_eq!(http.take_download(&format!("{BASE}0")), None);
        assert!(
            http.take_download(&format!("{BASE}{MAX_REMEMBERED}"))
                .is_some()
        );
    }
}
