//! An HTTPS reverse proxy in front of a harness [`Pebble`] that adds what Debian's Pebble 2.4
//! lacks: ARI (RFC 9773) and profiles.
//!
//! - `GET /dir`: Pebble's directory plus `renewalInfo` and (if set) `meta.profiles`.
//! - `GET /renewal-info/<cert id>`: the window the test set for that id (or the default),
//!   with `Retry-After`; every fetch is counted.
//! - `POST` new-order: the JWS payload's `replaces`/`profile` are recorded (no signature
//!   check), the request goes to Pebble unchanged (Pebble 2.4 decodes new-order with Go's
//!   `encoding/json`, which ignores unknown fields), and both are echoed into that order's
//!   JSON from then on, as RFC 9773 §5 requires of the CA (instant-acme checks the echo).
//!   [`AriProxy::reject_replaces_once`] makes the next order with `replaces` fail with
//!   `alreadyReplaced` (409) instead, and [`AriProxy::rate_limit_new_orders`] makes new orders
//!   for some names fail with `rateLimited` (429) and a `Retry-After`, as a CA's rate limits
//!   answer. Every new-order request is logged with its arrival time
//!   ([`AriProxy::order_attempts`]).
//! - Everything else is forwarded byte for byte. The `Host` header is kept, so Pebble (which
//!   builds its URLs and checks the JWS `url` from it) already speaks in proxy URLs; any
//!   `https://127.0.0.1:<pebble port>` left in headers or bodies is rewritten anyway.
//!
//! - Challenge types Pebble 2.4 lacks (dns-account-01, dns-persist-01) can be offered
//!   ([`AriProxy::offer_challenges`], see [`super::challenge_double`]).
//! - Any kind of exchange can be answered hostilely ([`AriProxy::tamper`], see
//!   [`super::hostile`]): slowly, endlessly, malformed, with edited JSON, headers or chains.
//! - A request can be held instead of forwarded ([`AriProxy::hold_requests`]): it never
//!   reaches Pebble while held (a client stopped before its request got through), and is
//!   then dropped unanswered or sent on late ([`AriProxy::release_held`]).
//!
//! One std thread per connection, one request per connection (`Connection: close`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Pebble;
use super::challenge_double::{self, ChallengeOffer, DoubleState, Validation};
use super::hostile::{self, Exchange, Tamper};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A window the proxy serves for a certificate.
#[derive(Debug, Clone, Copy)]
pub struct AriWindow {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    /// `Retry-After` in seconds.
    pub retry_after: u64,
}

/// A new-order request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenOrder {
    pub replaces: Option<String>,
    pub profile: Option<String>,
    /// Answered with `alreadyReplaced` instead of being forwarded.
    pub rejected: bool,
}

/// How the proxy answers new orders for their rate.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Only orders with an identifier containing this are refused (`None`: every order).
    pub names_containing: Option<String>,
    /// How many orders are refused before the limit lifts (`None`: all).
    pub times: Option<usize>,
    /// The `Retry-After` header (`None`: no header).
    pub retry_after: Option<String>,
    /// The problem document's detail.
    pub detail: String,
}

impl RateLimit {
    /// Whether an order for `names` is refused (counting it if so).
    fn refuses(&mut self, names: &[String]) -> bool {
        let matches = self
            .names_containing
            .as_deref()
            .is_none_or(|part| names.iter().any(|n| n.contains(part)));
        if !matches || self.times == Some(0) {
            return false;
        }
        if let Some(t) = &mut self.times {
            *t -= 1;
        }
        true
    }
}

/// A CA failing new orders for reasons of its own (an outage), see
/// [`AriProxy::fail_new_orders`].
#[derive(Debug, Clone)]
pub struct Failing {
    /// The HTTP status, e.g. 500 or 503.
    pub status: u16,
    /// The problem document's type (`None`: an HTML error page instead of a problem).
    pub problem: Option<String>,
    /// The `Retry-After` header (`None`: no header).
    pub retry_after: Option<String>,
}

/// A new-order request as it arrived, whatever became of it.
#[derive(Debug, Clone)]
pub struct OrderAttempt {
    /// When it arrived.
    pub at: std::time::Instant,
    /// Its identifiers.
    pub names: Vec<String>,
    /// Refused by [`RateLimit`].
    pub rate_limited: bool,
}

#[derive(Debug, Default)]
struct ProxyState {
    windows: HashMap<String, AriWindow>,
    default_window: Option<AriWindow>,
    fetches: Vec<String>,
    orders: Vec<SeenOrder>,
    /// Order id (last path segment of its URL) → (`replaces`, `profile`) to echo.
    echo: HashMap<String, (Option<String>, Option<String>)>,
    reject_replaces: bool,
    /// New-order requests are held unanswered (a CA that stopped answering).
    hang_orders: bool,
    rate_limit: Option<RateLimit>,
    /// Account registrations are refused so ([`AriProxy::rate_limit_registrations`]).
    registration_limit: Option<RateLimit>,
    /// Account registrations (newAccount without `onlyReturnExisting`) as they arrived:
    /// whether each was refused.
    registrations: Vec<bool>,
    /// New orders are answered with this failure instead ([`AriProxy::fail_new_orders`]).
    failing: Option<Failing>,
    attempts: Vec<OrderAttempt>,
    profiles: Option<serde_json::Map<String, serde_json::Value>>,
    tampers: hostile::Tampers,
    double: DoubleState,
    /// Requests of this kind to hold, and how many more ([`AriProxy::hold_requests`]).
    hold: Option<(Exchange, usize)>,
    /// The requests held so far, in order.
    held: Vec<Exchange>,
    /// What becomes of the requests held now: `None` while they are held.
    release: Option<Release>,
}

/// What becomes of a held request when the test lets it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The connection is closed without an answer: the request never reached Pebble.
    Drop,
    /// The request goes to Pebble now, and its answer to the client.
    Forward,
}

struct Shared {
    state: Mutex<ProxyState>,
    pebble_port: u16,
    pebble_ca: Vec<u8>,
    new_order_path: String,
    new_account_path: String,
    challtestsrv_url: String,
    proxy_base: String,
    pebble_base: String,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running proxy; stopped on drop.
pub struct AriProxy {
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AriProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AriProxy")
            .field("port", &self.port)
            .finish()
    }
}

impl AriProxy {
    /// Starts a proxy for `pebble` on a free loopback port, with Pebble's own HTTPS
    /// certificate (so `pebble.ca_bundle_path()` is the bundle to trust).
    pub fn start(pebble: &Pebble) -> AriProxy {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pebble.dir().join("server-cert.pem"))
                .expect("Pebble's server certificate")
                .collect::<Result<_, _>>()
                .expect("PEM certificate");
        let key = PrivateKeyDer::from_pem_file(pebble.dir().join("server-key.pem"))
            .expect("Pebble's server key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = Arc::new(tls);

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let new_order = pebble.directory()["newOrder"]
            .as_str()
            .expect("newOrder URL")
            .to_owned();
        let new_order_path = url::Url::parse(&new_order)
            .expect("newOrder URL")
            .path()
            .to_owned();
        let new_account_path = url::Url::parse(
            pebble.directory()["newAccount"]
                .as_str()
                .expect("newAccount URL"),
        )
        .expect("newAccount URL")
        .path()
        .to_owned();
        let shared = Arc::new(Shared {
            state: Mutex::new(ProxyState::default()),
            pebble_port: pebble.acme_port(),
            pebble_ca: pebble.ca_der().to_vec(),
            new_order_path,
            new_account_path,
            challtestsrv_url: pebble.challtestsrv_url(),
            proxy_base: format!("https://127.0.0.1:{port}"),
            pebble_base: format!("https://127.0.0.1:{}", pebble.acme_port()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (shared2, stop2) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (shared, tls) = (shared2.clone(), tls.clone());
                        std::thread::spawn(move || {
                            if let Err(e) = serve(stream, tls, &shared) {
                                eprintln!("ari proxy: {e}");
                            }
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => eprintln!("ari proxy: accept: {e}"),
                }
            }
        });
        AriProxy {
            port,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:<proxy port>/dir`.
    pub fn directory_url(&self) -> String {
        format!("{}/dir", self.shared.proxy_base)
    }

    /// Serves `window` for the certificate with ARI id `cert_id`.
    pub fn set_window(&self, cert_id: &str, window: AriWindow) {
        self.shared
            .state()
            .windows
            .insert(cert_id.to_owned(), window);
    }

    /// Serves `window` for every certificate without one of its own (`None`: 404).
    pub fn set_default_window(&self, window: Option<AriWindow>) {
        self.shared.state().default_window = window;
    }

    /// Advertises `meta.profiles` (name → description); `None` advertises none.
    pub fn set_profiles(&self, profiles: Option<&[(&str, &str)]>) {
        self.shared.state().profiles = profiles.map(|ps| {
            ps.iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect()
        });
    }

    /// The next new-order carrying `replaces` is refused with `alreadyReplaced`.
    pub fn reject_replaces_once(&self) {
        self.shared.state().reject_replaces = true;
    }

    /// From now on new-order requests get no answer for [`IO_TIMEOUT`] (they are still
    /// counted in [`AriProxy::orders`]), then the connection is closed.
    pub fn hang_new_orders(&self) {
        self.shared.state().hang_orders = true;
    }

    /// Refuses account registrations (newAccount requests without `onlyReturnExisting`) as
    /// `limit` says (its `names_containing` is ignored), e.g. Let's Encrypt's "too many new
    /// registrations from this IP address".
    pub fn rate_limit_registrations(&self, limit: Option<RateLimit>) {
        self.shared.state().registration_limit = limit;
    }

    /// Every account registration that arrived (lookups excluded): whether it was refused.
    pub fn registrations(&self) -> Vec<bool> {
        self.shared.state().registrations.clone()
    }

    /// From now on new orders are answered as `limit` says (`None`: no limit).
    pub fn rate_limit_new_orders(&self, limit: Option<RateLimit>) {
        self.shared.state().rate_limit = limit;
    }

    /// From now on new orders fail as `failing` says (`None`: they are forwarded again).
    pub fn fail_new_orders(&self, failing: Option<Failing>) {
        self.shared.state().failing = failing;
    }

    /// From now on the exchanges `t` names are answered as it says (the first tamper set
    /// for a kind of exchange wins).
    pub fn tamper(&self, t: Tamper) {
        self.shared.state().tampers.add(t);
    }

    /// Removes every tamper and forgets their hits.
    pub fn clear_tampers(&self) {
        self.shared.state().tampers.clear();
    }

    /// The exchanges answered by a tamper so far, in order.
    pub fn tampered(&self) -> Vec<Exchange> {
        self.shared.state().tampers.hits.clone()
    }

    /// From now on the next `times` requests of kind `exchange` are held: read, counted in
    /// [`AriProxy::held`], not forwarded, and left unanswered until [`AriProxy::release_held`]
    /// (at most [`IO_TIMEOUT`]; then dropped).
    pub fn hold_requests(&self, exchange: Exchange, times: usize) {
        let mut st = self.shared.state();
        st.hold = Some((exchange, times));
        st.release = None;
    }

    /// The requests held so far, in order.
    pub fn held(&self) -> Vec<Exchange> {
        self.shared.state().held.clone()
    }

    /// Lets the requests held now (and any held later) go as `release` says.
    pub fn release_held(&self, release: Release) {
        let mut st = self.shared.state();
        st.hold = None;
        st.release = Some(release);
    }

    /// Every new-order request that arrived, in order, with the time it did.
    pub fn order_attempts(&self) -> Vec<OrderAttempt> {
        self.shared.state().attempts.clone()
    }

    /// The certificate ids whose renewal information was fetched, in order.
    pub fn fetches(&self) -> Vec<String> {
        self.shared.state().fetches.clone()
    }

    /// Every new-order request seen, in order.
    pub fn orders(&self) -> Vec<SeenOrder> {
        self.shared.state().orders.clone()
    }

    /// From now on authorizations also offer what `offer` says.
    pub fn offer_challenges(&self, offer: ChallengeOffer) {
        self.shared.state().double.offer = offer;
    }

    /// The validations of offered challenge types made so far, in order.
    pub fn validations(&self) -> Vec<Validation> {
        self.shared.state().double.validations.clone()
    }
}

impl Drop for AriProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A parsed HTTP/1.x message head plus body.
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Splits raw bytes into head and body (the body is whatever follows, up to Content-Length).
fn parse(raw: &[u8]) -> io::Result<(Message, usize)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let msg = Message {
        start,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    Ok((msg, end + 4))
}

/// Reads one request (head, then Content-Length bytes of body).
fn read_request(r: &mut impl Read) -> io::Result<Option<Message>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Ok((mut msg, _)) = parse(&raw) {
            let len: usize = msg
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if msg.body.len() >= len {
                msg.body.truncate(len);
                return Ok(Some(msg));
            }
        }
        let n = r.read(&mut buf)?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(other("connection closed mid-request"))
            };
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn serve(stream: TcpStream, tls: Arc<rustls::ServerConfig>, shared: &Shared) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let conn = rustls::ServerConnection::new(tls).map_err(|e| other(e.to_string()))?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let Some(req) = read_request(&mut tls)? else {
        return Ok(());
    };
    let mut parts = req.start.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let exchange = Exchange::of(method, path);
    if let Some(x) = exchange
        && hold(x, shared) == Some(Release::Drop)
    {
        return Ok(());
    }
    if exchange == Some(Exchange::Finalize)
        && let Some(csr) = hostile::finalize_csr(&order_payload(&req.body))
    {
        shared.state().tampers.last_csr = Some(csr);
    }
    let mut rsp = handle(&req, shared)?;
    // Only successful answers are tampered with: Pebble rejects some nonces on purpose, and
    // a tamper for one exchange must not be spent on such a rejection.
    let success = rsp
        .start
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    let answer = exchange
        .filter(|_| success)
        .and_then(|x| shared.state().tampers.take(x));
    if let Some(a) = &answer {
        let csr = shared.state().tampers.last_csr.clone().unwrap_or_default();
        hostile::edit(a, &mut rsp.headers, &mut rsp.body, &csr);
    }
    let head_only = req.start.starts_with("HEAD ");
    let mut head = rsp.start.clone().into_bytes();
    head.extend_from_slice(b"\r\n");
    for (k, v) in &rsp.headers {
        if ["content-length", "connection", "transfer-encoding"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        {
            continue;
        }
        head.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    // A client that stops reading a hostile answer is what the test wants.
    let sent = hostile::send(&mut tls, &head, &rsp.body, head_only, answer.as_ref());
    if answer.is_some() && sent.is_err() {
        return Ok(());
    }
    sent?;
    tls.conn.send_close_notify();
    tls.flush()
}

/// Holds a request of kind `x` if the proxy is told to: waits until the test lets it go
/// (at most [`IO_TIMEOUT`], then it is dropped) and says how; `None` when it is not held.
fn hold(x: Exchange, shared: &Shared) -> Option<Release> {
    {
        let mut st = shared.state();
        match &mut st.hold {
            Some((kind, n)) if *kind == x && *n > 0 => *n -= 1,
            _ => return None,
        }
        st.held.push(x);
    }
    let started = std::time::Instant::now();
    loop {
        if let Some(r) = shared.state().release {
            return Some(r);
        }
        if started.elapsed() > IO_TIMEOUT {
            return Some(Release::Drop);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json_response(
    status: &str,
    mut headers: Vec<(String, String)>,
    body: &serde_json::Value,
) -> Message {
    if !headers.iter().any(|(k, _)| k == "Content-Type") {
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }
    Message {
        start: format!("HTTP/1.1 {status}"),
        headers,
        body: serde_json::to_vec_pretty(body).expect("JSON"),
    }
}

/// The CA's 429 answer for `limit`.
fn rate_limited(limit: &RateLimit) -> Message {
    let problem = serde_json::json!({
        "type": "urn:ietf:params:acme:error:rateLimited",
        "detail": limit.detail,
        "status": 429,
    });
    let mut headers = vec![(
        "Content-Type".to_owned(),
        "application/problem+json".to_owned(),
    )];
    if let Some(r) = &limit.retry_after {
        headers.push(("Retry-After".to_owned(), r.clone()));
    }
    json_response("429 Too Many Requests", headers, &problem)
}

fn handle(req: &Message, shared: &Shared) -> io::Result<Message> {
    let mut parts = req.start.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));

    if let Some(id) = path.strip_prefix("/renewal-info/") {
        let mut st = shared.state();
        st.fetches.push(id.to_owned());
        let Some(w) = st.windows.get(id).copied().or(st.default_window) else {
            let problem = serde_json::json!({
                "type": "urn:ietf:params:acme:error:malformed",
                "detail": format!("no renewal information for {id}"),
            });
            return Ok(json_response("404 Not Found", Vec::new(), &problem));
        };
        let fmt = |t: OffsetDateTime| t.format(&Rfc3339).expect("RFC 3339");
        let body = serde_json::json!({
            "suggestedWindow": { "start": fmt(w.start), "end": fmt(w.end) },
        });
        let headers = vec![("Retry-After".to_owned(), w.retry_after.to_string())];
        return Ok(json_response("200 OK", headers, &body));
    }

    if method == "POST" && path == shared.new_account_path {
        let payload = order_payload(&req.body);
        if payload["onlyReturnExisting"] != serde_json::Value::Bool(true) {
            let mut st = shared.state();
            let limit = st.registration_limit.as_mut().and_then(|l| {
                l.names_containing = None;
                l.refuses(&[]).then(|| l.clone())
            });
            st.registrations.push(limit.is_some());
            if let Some(limit) = limit {
                return Ok(rate_limited(&limit));
            }
        }
    }
    let mut seen = None;
    if method == "POST" && path == shared.new_order_path {
        let payload = order_payload(&req.body);
        let field = |k: &str| payload[k].as_str().map(str::to_owned);
        let order = SeenOrder {
            replaces: field("replaces"),
            profile: field("profile"),
            rejected: false,
        };
        let mut st = shared.state();
        let names: Vec<String> = payload["identifiers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["value"].as_str().map(str::to_owned))
            .collect();
        let limit = st
            .rate_limit
            .as_mut()
            .and_then(|l| l.refuses(&names).then(|| l.clone()));
        st.attempts.push(OrderAttempt {
            at: std::time::Instant::now(),
            names,
            rate_limited: limit.is_some(),
        });
        if let Some(f) = st.failing.clone() {
            let reason = if f.status == 503 {
                "Service Unavailable"
            } else {
                "Internal Server Error"
            };
            let mut headers = Vec::new();
            if let Some(r) = f.retry_after {
                headers.push(("Retry-After".to_owned(), r));
            }
            let status = format!("{} {reason}", f.status);
            return Ok(match f.problem {
                Some(kind) => {
                    headers.push((
                        "Content-Type".to_owned(),
                        "application/problem+json".to_owned(),
                    ));
                    let problem = serde_json::json!({
                        "type": kind,
                        "detail": "the CA is having trouble (ari proxy)",
                        "status": f.status,
                    });
                    json_response(&status, headers, &problem)
                }
                None => {
                    headers.push(("Content-Type".to_owned(), "text/html".to_owned()));
                    Message {
                        start: format!("HTTP/1.1 {status}"),
                        headers,
                        body: b"<html><body>outage</body></html>".to_vec(),
                    }
                }
            });
        }
        if let Some(limit) = limit {
            return Ok(rate_limited(&limit));
        }
        if st.hang_orders {
            st.orders.push(order);
            drop(st);
            std::thread::sleep(IO_TIMEOUT);
            return Err(other("new-order held unanswered (ari proxy)"));
        }
        if order.replaces.is_some() && std::mem::take(&mut st.reject_replaces) {
            st.orders.push(SeenOrder {
                rejected: true,
                ..order
            });
            let problem = serde_json::json!({
                "type": "urn:ietf:params:acme:error:alreadyReplaced",
                "detail": "the certificate has already been replaced (ari proxy)",
                "status": 409,
            });
            let headers = vec![(
                "Content-Type".to_owned(),
                "application/problem+json".to_owned(),
            )];
            return Ok(json_response("409 Conflict", headers, &problem));
        }
        seen = Some(order);
    }
    let kid = challenge_double::jws_protected(&req.body)["kid"]
        .as_str()
        .map(str::to_owned);
    let mut validation = None;
    if method == "POST"
        && let Some(kid) = &kid
    {
        let post = challenge_double::before_challenge_post(&shared.state().double, path, kid);
        validation = post.validation;
        let offer = shared.state().double.offer.clone();
        for (name, values) in post.copy.into_iter() {
            for value in values {
                if let (Some(key), Some(server)) = (&offer.pebble_dns_key, offer.client_dns) {
                    challenge_double::publish_in_knot(
                        server,
                        key,
                        &format!("_acme-challenge.{name}"),
                        &value,
                    )?;
                    continue;
                }
                let url = format!("{}/set-txt", shared.challtestsrv_url);
                let body =
                    serde_json::json!({"host": format!("_acme-challenge.{name}."), "value": value});
                super::http::http_post(&url, &body.to_string())?;
            }
        }
    }

    let mut rsp = forward(req, shared)?;
    // Only a POST Pebble accepted counts as a validation (a badNonce one is sent again).
    if let Some(v) = validation
        && rsp
            .start
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('2'))
    {
        shared.state().double.validations.push(v);
    }
    // Only orders Pebble created count (a badNonce rejection is retried by the client).
    if let Some(order) = &seen
        && rsp.header("location").is_some()
    {
        shared.state().orders.push(order.clone());
    }
    let rewrite = |s: &str| s.replace(&shared.pebble_base, &shared.proxy_base);
    for (_, v) in rsp.headers.iter_mut() {
        *v = rewrite(v);
    }
    if method == "POST"
        && path == shared.new_account_path
        && let Some(loc) = rsp.header("location")
        && let Some(thumb) =
            challenge_double::thumbprint(&challenge_double::jws_protected(&req.body)["jwk"])
    {
        let loc = loc.to_owned();
        shared.state().double.thumbprints.insert(loc, thumb);
    }
    rsp.body = rewrite(&String::from_utf8_lossy(&rsp.body)).into_bytes();

    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&rsp.body) else {
        return Ok(rsp);
    };
    if method == "GET" && path == "/dir" {
        json["renewalInfo"] = format!("{}/renewal-info", shared.proxy_base).into();
        if let Some(p) = shared.state().profiles.clone() {
            json["meta"]["profiles"] = p.into();
        }
        let issuers = shared.state().double.offer.persist_issuers.clone();
        if !issuers.is_empty() {
            json["meta"]["caaIdentities"] = issuers.into();
        }
    } else if json.get("challenges").is_some() {
        let mut st = shared.state();
        let offer = &st.double.offer;
        if !offer.dns_account && offer.persist_issuers.is_empty() {
            return Ok(rsp);
        }
        challenge_double::relabel_authz(&mut st.double, &mut json, kid.as_deref());
    } else if json.get("finalize").is_some() {
        // An order object: echo what its new-order carried.
        let id_of = |url: &str| url.rsplit('/').next().unwrap_or_default().to_owned();
        let mut st = shared.state();
        if let Some(order) = seen
            && let Some(loc) = rsp.header("location")
        {
            st.echo.insert(id_of(loc), (order.replaces, order.profile));
        }
        let id = id_of(json["finalize"].as_str().unwrap_or_default());
        if let Some((replaces, profile)) = st.echo.get(&id) {
            if let Some(r) = replaces {
                json["replaces"] = r.clone().into();
            }
            if let Some(p) = profile {
                json["profile"] = p.clone().into();
            }
        }
    } else {
        return Ok(rsp);
    }
    rsp.body = serde_json::to_vec_pretty(&json).expect("JSON");
    Ok(rsp)
}

/// The decoded JWS payload of a flattened JSON JWS (`{}` when it is not one).
fn order_payload(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|jws| {
            let p = jws["payload"].as_str()?.to_owned();
            data_encoding::BASE64URL_NOPAD.decode(p.as_bytes()).ok()
        })
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .unwrap_or_else(|| serde_json::json!({}))
}

/// Sends `req` to Pebble as HTTP/1.0 (so the answer ends at EOF, never chunked), with the
/// client's `Host` header, and returns Pebble's answer.
fn forward(req: &Message, shared: &Shared) -> io::Result<Message> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(shared.pebble_ca.clone()))
        .map_err(|e| other(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").map_err(|e| other(e.to_string()))?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| other(e.to_string()))?;
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, shared.pebble_port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut tls = rustls::StreamOwned::new(conn, stream);

    let mut parts = req.start.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("GET"), parts.next().unwrap_or("/"));
    let mut out = format!("{method} {path} HTTP/1.0\r\n").into_bytes();
    for (k, v) in &req.headers {
        if ["connection", "keep-alive", "content-length"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", req.body.len()).as_bytes());
    out.extend_from_slice(&req.body);
    tls.write_all(&out)?;
    tls.flush()?;

    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let (mut msg, _) = parse(&raw)?;
    // Our answer to the client is HTTP/1.1 whatever Pebble answered the HTTP/1.0 request.
    if let Some(rest) = msg.start.strip_prefix("HTTP/1.0 ") {
        msg.start = format!("HTTP/1.1 {rest}");
    }
    if let Some(len) = msg.header("content-length").and_then(|v| v.parse().ok()) {
        msg.body.truncate(len);
    }
    Ok(msg)
}
