//! The redirector daemon (acmetool's `redirector` method, §5.3): it owns port 80, serves
//! `/.well-known/acme-challenge/<token>` from the challenge directory that reconcile writes
//! into, and redirects every other request to `https://` on the same host.
//!
//! Deciding is separate from doing. [`respond`] maps one request head to one response and reads
//! nothing itself: challenge files come through a lookup the caller passes in, which in the
//! daemon is [`read_challenge`] (no symlinks, regular files of at most 4 KiB). [`serve`] runs
//! the accept loop it shares with the built-in listeners (`challenge::accept`): request headers
//! must arrive within the read timeout, each connection has an overall deadline, the number of
//! connections is capped (over the cap the oldest connection that has sent no request yet is
//! closed to make room, so idle connections cannot lock real clients out; see
//! `challenge::slots`), request bodies are never read, and there is no keep-alive.
//!
//! Running as root is refused unless the caller names an unprivileged user: the process binds
//! its sockets first ([`bind`]), then `system::privileges` drops root for good. The redirector
//! never takes the state directory lock and never reads a key: it needs nothing from the state
//! directory except, when no path is given, the first webroot of `conf/target` (read by the
//! command, `commands::redirector`). Its systemd unit is rendered by `system::units`.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};

use crate::challenge::accept;
use crate::challenge::slots::{Slot, Slots};

/// The challenge path prefix (RFC 8555 §8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// `Server:` on every response (acmetool's was `acmetool-redirector`).
pub const SERVER_NAME: &str = "acmekeep-redirector";
/// `Content-Security-Policy:` on every response, as acmetool sends it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'";
/// `Cache-Control:` on redirects of GET requests, exactly as acmetool spells it.
pub const REDIRECT_CACHE_CONTROL: &str = "public; max-age=31536000";
/// The largest challenge file served; a key authorization is under 100 bytes.
pub const MAX_CHALLENGE_FILE: u64 = 4096;
/// Concurrent connections. Over the cap the oldest idle one (no request yet) is closed to
/// make room; when all are answering a request, new ones are closed as soon as accepted.
pub const MAX_CONNECTIONS: usize = 512;
/// Tokens are base64url (RFC 8555 §8.3); anything longer than a file name can be is not one.
const MAX_TOKEN_LEN: usize = 255;
/// A request line or Host longer than this is logged truncated.
const MAX_LOGGED_CHARS: usize = 200;

/// A redirect status acmetool allows: 301, 302, 303, 307 or 308.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedirectStatus(StatusCode);

impl RedirectStatus {
    /// acmetool's default, 308 Permanent Redirect (keeps the method and body).
    pub const DEFAULT: RedirectStatus = RedirectStatus(StatusCode::PERMANENT_REDIRECT);

    /// The status, if `code` is one of the five redirects.
    pub fn new(code: u16) -> Option<RedirectStatus> {
        matches!(code, 301 | 302 | 303 | 307 | 308)
            .then(|| StatusCode::from_u16(code).ok().map(RedirectStatus))
            .flatten()
    }

    /// The HTTP status code.
    pub fn code(self) -> StatusCode {
        self.0
    }
}

impl Default for RedirectStatus {
    fn default() -> Self {
        RedirectStatus::DEFAULT
    }
}

impl fmt::Display for RedirectStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_u16())
    }
}

impl FromStr for RedirectStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<u16>()
            .ok()
            .and_then(RedirectStatus::new)
            .ok_or_else(|| format!("{s:?} is not a redirect status (301, 302, 303, 307 or 308)"))
    }
}

/// What the lookup found for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The file's contents.
    Found(Bytes),
    /// No such file (or not a regular file): 404.
    Missing,
}

/// Whether `token` can be a challenge token: 1 to 255 base64url characters. This alone keeps
/// `/`, `.` and `%` (so `..` and encoded separators) out of the file name.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `host` is a plausible `Host` value: a DNS name or IPv4 address of letters, digits,
/// `-`, `.` and `_`, or a bracketed IPv6 address, optionally followed by `:port`. No user info,
/// no spaces, no control characters: it is copied into `Location:`.
pub fn valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 262 {
        return false;
    }
    let port = if let Some(rest) = host.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        }
    } else {
        let (name, port) = match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 253
            && !name.starts_with(['.', '-'])
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !name_ok {
            return false;
        }
        port
    };
    match port {
        None => true,
        Some(p) => {
            p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n != 0)
        }
    }
}

/// The token a request asks for, if it is a GET or HEAD under the challenge prefix. The
/// token may still be invalid (then the answer is 404, never a redirect).
fn challenge_token<B>(req: &Request<B>) -> Option<&str> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    req.uri().path().strip_prefix(CHALLENGE_PREFIX)
}

/// The host to redirect to: the request target's authority (absolute-form), else the one `Host`
/// header. `Err` means a 400.
fn redirect_host<B>(req: &Request<B>) -> Result<&str, ()> {
    if let Some(authority) = req.uri().authority() {
        return Ok(authority.as_str());
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err(()); // none, or several
    };
    host.to_str().map_err(|_| ())
}

/// `https://<host><path>[?<query>]`, or `None` (400) if the request gives no usable host or is
/// not in origin or absolute form. Anything outside printable ASCII is percent-encoded, so the
/// result is always a valid header value.
pub fn redirect_location<B>(req: &Request<B>) -> Option<String> {
    let host = redirect_host(req).ok()?;
    if !valid_host(host) {
        return None;
    }
    let path = req.uri().path();
    if !path.starts_with('/') {
        return None; // `*` (OPTIONS) or authority-form (CONNECT)
    }
    let mut location = String::with_capacity(8 + host.len() + path.len());
    location.push_str("https://");
    location.push_str(host);
    push_encoded(&mut location, path);
    if let Some(query) = req.uri().query() {
        location.push('?');
        push_encoded(&mut location, query);
    }
    Some(location)
}

fn push_encoded(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// The whole policy, for one request head (the body is never looked at).
///
/// - GET/HEAD `/.well-known/acme-challenge/<token>`: `lookup(token)` as `text/plain` (HEAD:
///   no body, the length in `Content-Length`), or 404 when the token is not base64url or the
///   lookup finds nothing. Nothing under the prefix is ever redirected or listed.
/// - Anything else: `status` with `Location: https://<host><path>?<query>`; GET also gets
///   acmetool's `Cache-Control` and a short HTML body. No usable host: 400.
/// - Always: `Server:` and `Content-Security-Policy:`.
pub fn respond<B>(
    req: &Request<B>,
    status: RedirectStatus,
    lookup: impl FnOnce(&str) -> Lookup,
) -> Response<Full<Bytes>> {
    let mut rsp = match challenge_token(req) {
        Some(token) => {
            let found = if valid_token(token) {
                lookup(token)
            } else {
                Lookup::Missing
            };
            match found {
                Lookup::Found(body) => {
                    let len = body.len();
                    let body = if req.method() == Method::HEAD {
                        Bytes::new()
                    } else {
                        body
                    };
                    let mut r = Response::new(Full::new(body));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    r.headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                    r
                }
                Lookup::Missing => plain(StatusCode::NOT_FOUND, "not found\n"),
            }
        }
        None => redirect(req, status),
    };
    let h = rsp.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static(SERVER_NAME));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    rsp
}

fn redirect<B>(req: &Request<B>, status: RedirectStatus) -> Response<Full<Bytes>> {
    let Some((location, value)) =
        redirect_location(req).and_then(|l| HeaderValue::from_str(&l).ok().map(|v| (l, v)))
    else {
        return plain(StatusCode::BAD_REQUEST, "bad request: no valid Host\n");
    };
    let get = req.method() == Method::GET;
    let body = if get {
        let l = html_escape(&location);
        let reason = status.code().canonical_reason().unwrap_or("Moved");
        Bytes::from(format!(
            "<!DOCTYPE html>\n<html><head><title>{reason}</title></head><body><p>This page is at <a href=\"{l}\">{l}</a>.</p></body></html>\n"
        ))
    } else {
        Bytes::new()
    };
    let mut rsp = Response::new(Full::new(body));
    *rsp.status_mut() = status.code();
    let h = rsp.headers_mut();
    h.insert(header::LOCATION, value);
    if get {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(REDIRECT_CACHE_CONTROL),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    rsp
}

/// Why a challenge file was not served although something is there.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeFileError {
    /// Larger than [`MAX_CHALLENGE_FILE`].
    #[error("{} is larger than {MAX_CHALLENGE_FILE} bytes", .0.display())]
    TooLarge(PathBuf),
    /// Reading failed (permissions, I/O).
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Reads `<dir>/<token>` for serving: only a regular file, never through a symlink in the last
/// component (checked before opening, and again on the open file with `O_NOFOLLOW`, so a file
/// swapped for a symlink in between is refused too), at most [`MAX_CHALLENGE_FILE`] bytes.
/// Missing files, directories, symlinks, FIFOs and devices are [`Lookup::Missing`]. `token`
/// must have passed [`valid_token`].
pub fn read_challenge(dir: &Path, token: &str) -> Result<Lookup, ChallengeFileError> {
    debug_assert!(valid_token(token));
    let path = dir.join(token);
    let io_err = |source: io::Error| ChallengeFileError::Io {
        path: path.clone(),
        source,
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Lookup::Missing);
        }
        Err(e) => return Err(io_err(e)),
    };
    if !meta.file_type().is_file() {
        return Ok(Lookup::Missing);
    }
    // O_NONBLOCK: opening a FIFO that replaced the file must not hang the worker.
    let file = match File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Missing),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(Lookup::Missing),
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    if !meta.file_type().is_file() {
        return Ok(Lookup::Missing);
    }
    if meta.len() > MAX_CHALLENGE_FILE {
        return Err(ChallengeFileError::TooLarge(path));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CHALLENGE_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() as u64 > MAX_CHALLENGE_FILE {
        return Err(ChallengeFileError::TooLarge(path));
    }
    Ok(Lookup::Found(Bytes::from(buf)))
}

/// One `--bind` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSpec {
    /// `:PORT`: every address, IPv6 and IPv4 (Go's meaning, and acmetool's default `:80`).
    Any(u16),
    /// `HOST:PORT` or `[V6]:PORT`: exactly these addresses.
    Addrs(String, Vec<SocketAddr>),
}

impl BindSpec {
    /// Parses `:PORT`, `IP:PORT`, `[IPV6]:PORT` or `NAME:PORT` (resolved now).
    pub fn parse(s: &str) -> Result<BindSpec> {
        if let Some(port) = s.strip_prefix(':') {
            let port = port
                .parse::<u16>()
                .with_context(|| format!("--bind {s:?}: bad port"))?;
            return Ok(BindSpec::Any(port));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(BindSpec::Addrs(s.to_owned(), vec![addr]));
        }
        let addrs: Vec<SocketAddr> = s
            .to_socket_addrs()
            .with_context(|| format!("--bind {s:?}: expected :PORT, HOST:PORT or [IPV6]:PORT"))?
            .collect();
        if addrs.is_empty() {
            bail!("--bind {s:?}: the name has no address");
        }
        Ok(BindSpec::Addrs(s.to_owned(), addrs))
    }
}

impl fmt::Display for BindSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindSpec::Any(port) => write!(f, ":{port}"),
            BindSpec::Addrs(s, _) => f.write_str(s),
        }
    }
}

/// Binds every spec (blocking, before any thread or runtime exists, so privileges can be
/// dropped right after). For `:PORT`, `[::]:PORT` is bound first; on Linux it usually accepts
/// IPv4 too, and then `0.0.0.0:PORT` failing with "address in use" is expected. Either one
/// alone is enough (a host without IPv6 still works); any other failure is an error.
pub fn bind(specs: &[BindSpec]) -> Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::new();
    for spec in specs {
        match spec {
            BindSpec::Any(port) => {
                let v6 = std::net::TcpListener::bind((Ipv6Addr::UNSPECIFIED, *port));
                let v4 = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, *port));
                match (v6, v4) {
                    (Ok(a), Ok(b)) => out.extend([a, b]),
                    (Ok(a), Err(e)) if e.kind() == io::ErrorKind::AddrInUse => out.push(a),
                    (Err(e), Ok(b)) if ipv6_unavailable(&e) => out.push(b),
                    (Err(e), _) | (_, Err(e)) => {
                        return Err(anyhow!(e).context(format!("cannot listen on {spec}")));
                    }
                }
            }
            BindSpec::Addrs(_, addrs) => {
                for addr in addrs {
                    out.push(
                        std::net::TcpListener::bind(addr)
                            .with_context(|| format!("cannot listen on {addr} (--bind {spec})"))?,
                    );
                }
            }
        }
    }
    Ok(out)
}

fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EAFNOSUPPORT | nix::libc::EADDRNOTAVAIL | nix::libc::EPROTONOSUPPORT)
    )
}

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where challenge files are read from.
    pub challenge_dir: PathBuf,
    /// The redirect status.
    pub status: RedirectStatus,
    /// Deadline for a request's headers.
    pub read_timeout: Duration,
    /// Deadline for a whole connection, response included.
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// A string safe for one log line: escaped, and cut at [`MAX_LOGGED_CHARS`].
fn loggable(s: &str) -> String {
    let mut out: String = s.chars().take(MAX_LOGGED_CHARS).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out.escape_debug().to_string()
}

/// Serves `listeners` until `shutdown` completes, then stops accepting and gives open
/// connections up to the write timeout to finish.
pub async fn serve(
    listeners: Vec<std::net::TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let config = Arc::new(config);
    let limit = Slots::new(config.max_connections);
    let handle = {
        let config = config.clone();
        Arc::new(
            move |stream: TcpStream, peer: SocketAddr, slot: Arc<Slot>| {
                let config = config.clone();
                accept::serve_http1(stream, slot, config.read_timeout, move |req| {
                    answer(req, peer, config.clone())
                })
            },
        )
    };
    let mut accept_loops = tokio::task::JoinSet::new();
    for l in listeners {
        l.set_nonblocking(true).context("configuring a listener")?;
        let l = TcpListener::from_std(l).context("registering a listener")?;
        accept_loops.spawn(accept::accept_loop(
            l,
            limit.clone(),
            config.write_timeout,
            "redirector",
            handle.clone(),
        ));
    }
    shutdown.await;
    accept_loops.shutdown().await;
    let drained = async {
        while !limit.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(config.write_timeout, drained)
        .await
        .is_err()
    {
        tracing::debug!("closing connections still open after the write timeout");
    }
    Ok(())
}

/// Answers one request. The body is dropped unread; with keep-alive off, hyper then closes
/// the connection after the response. File reads run on the blocking pool.
async fn answer(
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
    config: Arc<Config>,
) -> Response<Full<Bytes>> {
    let (parts, _body) = req.into_parts();
    let head = Request::from_parts(parts, ());
    let worker = tokio::task::spawn_blocking(move || {
        let rsp = respond(&head, config.status, |token| {
            match read_challenge(&config.challenge_dir, token) {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!("not serving a challenge file: {e}");
                    Lookup::Missing
                }
            }
        });
        let host = head
            .headers()
            .get(header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default();
        tracing::debug!(
            "{peer} {} \"{}\" host \"{}\" -> {}",
            head.method(),
            loggable(&head.uri().to_string()),
            loggable(&host),
            rsp.status().as_u16()
        );
        rsp
    });
    match worker.await {
        Ok(rsp) => rsp,
        Err(e) => {
            tracing::warn!("{peer}: request handler failed: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

/// Completes on SIGTERM or SIGINT (systemd stops units with SIGTERM).
pub async fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use http_body_util::BodyExt;

    use super::*;

    const TOKEN: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";

    fn req(method: Method, uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).expect("request")
    }

    fn get(uri: &str) -> Request<()> {
        req(Method::GET, uri, Some("example.org"))
    }

    fn files(map: &[(&str, &str)]) -> impl Fn(&str) -> Lookup {
        let map: HashMap<String, Bytes> = map
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Bytes::from((*v).to_owned())))
            .collect();
        move |t| map.get(t).cloned().map_or(Lookup::Missing, Lookup::Found)
    }

    fn body(rsp: Response<Full<Bytes>>) -> Vec<u8> {
        let fut = rsp.into_body().collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(fut).expect("body").to_bytes().to_vec()
    }

    fn hdr(rsp: &Response<Full<Bytes>>, name: header::HeaderName) -> Option<&str> {
        rsp.headers().get(name).and_then(|v| v.to_str().ok())
    }

    fn never(_: &str) -> Lookup {
        panic!("no file may be looked up for this request")
    }

    #[test]
    fn challenge_is_served_as_text_plain() {
        let ka = format!("{TOKEN}.thumbprint");
        let rsp = respond(
            &get(&format!("{CHALLENGE_PREFIX}{TOKEN}")),
            RedirectStatus::DEFAULT,
            files(&[(TOKEN, &ka)]),
        );
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(hdr(&rsp, header::CONTENT_TYPE), Some("text/plain"));
        assert_eq!(hdr(&rsp, header::SERVER), Some(SERVER_NAME));
        assert_eq!(
            hdr(&rsp, header::CONTENT_SECURITY_POLICY),
            Some("default-src 'none'")
        );
        assert_eq!(hdr(&rsp, header::CACHE_CONTROL), None);
        assert_eq!(body(rsp), ka.as_bytes());
    }

    #[test]
    fn head_gets_headers_and_length_but_no_body() {
        let rsp = respond(
            &req(Method::HEAD, &format!("{CHALLENGE_PREFIX}{TOKEN}"), None),
            RedirectStatus::DEFAULT,
            files(&[(TOKEN, "abc.def")]),
        );
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(hdr(&rsp, header::CONTENT_LENGTH), Some("7"));
        assert!(body(rsp).is_empty());

        let rsp = respond(
            &req(Method::HEAD, "/page", Some("example.org")),
            RedirectStatus::DEFAULT,
            never,
        );
        assert_eq!(rsp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            hdr(&rsp, header::LOCATION),
            Some("https://example.org/page")
        );
        assert_eq!(hdr(&rsp, header::CACHE_CONTROL), None, "only GET is cached");
        assert!(body(rsp).is_empty());
    }

    #[test]
    fn odd_tokens_are_404_and_never_looked_up_or_redirected() {
        for path in [
            "",
            "..",
            "../../etc/passwd",
            "%2e%2e",
            "a/b",
            "a.b",
            "tok%00",
            "tok~",
            "a b",
            &"a".repeat(256),
        ] {
            let uri = format!("{CHALLENGE_PREFIX}{path}");
            let Ok(r) = Request::get(uri.as_str()).body(()) else {
                continue; // not even a valid request target
            };
            let rsp = respond(&r, RedirectStatus::DEFAULT, never);
            assert_eq!(rsp.status(), StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(hdr(&rsp, header::SERVER), Some(SERVER_NAME), "{uri}");
        }
        let rsp = respond(
            &get(&format!("{CHALLENGE_PREFIX}unknown")),
            RedirectStatus::DEFAULT,
            files(&[]),
        );
        assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
        assert_eq!(hdr(&rsp, header::LOCATION), None);
    }

    #[test]
    fn redirects_with_the_configured_status_host_port_path_and_query() {
        for code in [301, 302, 303, 307, 308] {
            let status = RedirectStatus::new(code).expect("redirect status");
            let r = req(Method::GET, "/a/b?c=1&d=%20", Some("Example.org:8080"));
            let rsp = respond(&r, status, never);
            assert_eq!(rsp.status().as_u16(), code);
            assert_eq!(
                hdr(&rsp, header::LOCATION),
                Some("https://Example.org:8080/a/b?c=1&d=%20")
            );
            assert_eq!(
                hdr(&rsp, header::CACHE_CONTROL),
                Some(REDIRECT_CACHE_CONTROL)
            );
            assert_eq!(hdr(&rsp, header::SERVER), Some(SERVER_NAME));
            assert_eq!(
                hdr(&rsp, header::CONTENT_SECURITY_POLICY),
                Some(CONTENT_SECURITY_POLICY)
            );
            let html = String::from_utf8(body(rsp)).expect("utf-8");
            assert!(
                html.contains("href=\"https://Example.org:8080/a/b?c=1&amp;d=%20\""),
                "{html}"
            );
        }
        // No query: no "?"; the challenge directory itself and other methods are redirected.
        let rsp = respond(&get("/"), RedirectStatus::DEFAULT, never);
        assert_eq!(hdr(&rsp, header::LOCATION), Some("https://example.org/"));
        let rsp = respond(
            &get("/.well-known/acme-challenge"),
            RedirectStatus::DEFAULT,
            never,
        );
        assert_eq!(rsp.status(), StatusCode::PERMANENT_REDIRECT);
        let post = req(
            Method::POST,
            &format!("{CHALLENGE_PREFIX}{TOKEN}"),
            Some("example.org"),
        );
        let rsp = respond(&post, RedirectStatus::DEFAULT, never);
        assert_eq!(rsp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(hdr(&rsp, header::CACHE_CONTROL), None);
        assert!(body(rsp).is_empty());
        // Absolute-form: the request target's authority wins over Host.
        let abs = req(
            Method::GET,
            "http://other.example:81/x",
            Some("example.org"),
        );
        let rsp = respond(&abs, RedirectStatus::DEFAULT, never);
        assert_eq!(
            hdr(&rsp, header::LOCATION),
            Some("https://other.example:81/x")
        );
    }

    #[test]
    fn bad_or_missing_host_is_400() {
        for host in [
            None,
            Some(""),
            Some(" "),
            Some("exa mple.org"),
            Some("user@example.org"),
            Some("example.org:"),
            Some("example.org:99999"),
            Some("example.org:0"),
            Some("example.org:80:80"),
            Some("[::1"),
            Some("[nothex]:80"),
            Some("evil.org/path"),
            Some("a\"b"),
            Some(".example.org"),
            Some("example.org\\x"),
        ] {
            let mut b = Request::get("/x");
            if let Some(h) = host {
                b = b.header(header::HOST, h);
            }
            let r = b.body(()).expect("request");
            let rsp = respond(&r, RedirectStatus::DEFAULT, never);
            assert_eq!(rsp.status(), StatusCode::BAD_REQUEST, "{host:?}");
            assert_eq!(hdr(&rsp, header::LOCATION), None, "{host:?}");
            assert_eq!(hdr(&rsp, header::SERVER), Some(SERVER_NAME));
        }
        // Two Host headers.
        let r = Request::get("/x")
            .header(header::HOST, "a.example")
            .header(header::HOST, "b.example")
            .body(())
            .expect("request");
        assert_eq!(
            respond(&r, RedirectStatus::DEFAULT, never).status(),
            StatusCode::BAD_REQUEST
        );
        // A Host with bytes outside ASCII (HeaderValue allows obs-text) is refused, not echoed.
        let r = Request::get("/x")
            .header(
                header::HOST,
                HeaderValue::from_bytes(b"ex\xe9mple.org").expect("obs-text"),
            )
            .body(())
            .expect("request");
        assert_eq!(
            respond(&r, RedirectStatus::DEFAULT, never).status(),
            StatusCode::BAD_REQUEST
        );
        for ok in [
            "example.org",
            "EXAMPLE.org.",
            "127.0.0.1:8080",
            "[::1]:80",
            "[2001:db8::1]",
            "a_b.example",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
    }

    #[test]
    fn location_never_carries_control_characters() {
        // http::Uri refuses CR/LF itself; whatever it accepts ends up printable.
        for uri in ["/a\r\nSet-Cookie: x", "/a\nb", "/a b"] {
            assert!(Request::get(uri).body(()).is_err(), "{uri:?} was accepted");
        }
        let rsp = respond(&get("/{\"x\"}"), RedirectStatus::DEFAULT, never);
        let loc = hdr(&rsp, header::LOCATION).expect("location");
        assert!(loc.bytes().all(|b| b.is_ascii_graphic()), "{loc:?}");
        let html = String::from_utf8(body(rsp)).expect("utf-8");
        assert!(!html.contains("\"x\""), "quotes must be escaped: {html}");
        // `*` (OPTIONS) is no path to redirect to.
        let star = req(Method::OPTIONS, "*", Some("example.org"));
        assert_eq!(
            respond(&star, RedirectStatus::DEFAULT, never).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn status_codes_are_limited_to_redirects() {
        for ok in ["301", "302", "303", "307", "308"] {
            assert!(ok.parse::<RedirectStatus>().is_ok(), "{ok}");
        }
        for bad in ["200", "300", "304", "305", "306", "309", "404", "x", ""] {
            assert!(bad.parse::<RedirectStatus>().is_err(), "{bad}");
        }
    }

    #[test]
    fn challenge_files_are_read_without_following_symlinks() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("challenges");
        std::fs::create_dir(&dir).expect("mkdir");
        let secret = d.path().join("secret");
        std::fs::write(&secret, "do not serve").expect("write");
        std::fs::write(dir.join("good"), "good.thumb").expect("write");
        std::os::unix::fs::symlink(&secret, dir.join("link")).expect("symlink");
        std::os::unix::fs::symlink("good", dir.join("rel")).expect("symlink");
        std::fs::create_dir(dir.join("subdir")).expect("mkdir");
        std::fs::write(dir.join("subdir").join("x"), "x").expect("write");
        std::fs::write(dir.join("big"), vec![b'a'; MAX_CHALLENGE_FILE as usize + 1])
            .expect("write");
        std::fs::write(dir.join("max"), vec![b'a'; MAX_CHALLENGE_FILE as usize]).expect("write");
        // A FIFO must not hang the reader, a socket is no file either.
        let _ = std::process::Command::new("mkfifo")
            .arg(dir.join("fifo"))
            .status();
        let _sock = std::os::unix::net::UnixListener::bind(dir.join("sock")).expect("socket");

        let read = |t: &str| read_challenge(&dir, t).expect("no I/O error");
        assert_eq!(
            read("good"),
            Lookup::Found(Bytes::from_static(b"good.thumb"))
        );
        assert_eq!(read("missing"), Lookup::Missing);
        assert_eq!(read("link"), Lookup::Missing, "absolute symlink followed");
        assert_eq!(read("rel"), Lookup::Missing, "relative symlink followed");
        assert_eq!(read("subdir"), Lookup::Missing, "directory served");
        assert_eq!(read("fifo"), Lookup::Missing);
        assert_eq!(read("sock"), Lookup::Missing);
        assert!(matches!(read("max"), Lookup::Found(b) if b.len() == 4096));
        assert!(matches!(
            read_challenge(&dir, "big"),
            Err(ChallengeFileError::TooLarge(_))
        ));
        // A missing challenge directory is just "no file".
        assert_eq!(
            read_challenge(&d.path().join("nope"), "good").expect("ok"),
            Lookup::Missing
        );

        // Through `respond`, as the daemon wires it.
        let serve = |uri: &str| {
            respond(&get(uri), RedirectStatus::DEFAULT, |t| {
                read_challenge(&dir, t).unwrap_or(Lookup::Missing)
            })
        };
        assert_eq!(
            serve(&format!("{CHALLENGE_PREFIX}good")).status(),
            StatusCode::OK
        );
        for t in ["link", "subdir", "big", "fifo", "missing"] {
            assert_eq!(
                serve(&format!("{CHALLENGE_PREFIX}{t}")).status(),
                StatusCode::NOT_FOUND,
                "{t}"
            );
        }
        // No listing of the directory itself.
        assert_eq!(serve(CHALLENGE_PREFIX).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn idle_connections_at_the_cap_no_longer_lock_real_clients_out_and_headers_time_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpStream;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = l.local_addr().expect("addr");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let config = Config {
                challenge_dir: PathBuf::from("/nonexistent"),
                status: RedirectStatus::DEFAULT,
                read_timeout: Duration::from_millis(300),
                write_timeout: Duration::from_secs(5),
                max_connections: 2,
            };
            let server = tokio::spawn(serve(vec![l], config, async {
                let _ = stopped.await;
            }));
            let eof_within = |mut s: TcpStream, d: Duration| async move {
                let mut buf = [0u8; 64];
                matches!(
                    tokio::time::timeout(d, s.read(&mut buf)).await,
                    Ok(Ok(0) | Err(_))
                )
            };

            // Two idle connections take both slots. A real client is still answered at once:
            // the oldest idle connection is closed to make room (idle connections used to
            // lock real clients out until their header deadline).
            let a = TcpStream::connect(addr).await.expect("connect");
            let b = TcpStream::connect(addr).await.expect("connect");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut c = TcpStream::connect(addr).await.expect("connect");
            c.write_all(b"GET /q HTTP/1.1\r\nHost: example.org\r\n\r\n")
                .await
                .expect("write");
            let mut rsp = Vec::new();
            tokio::time::timeout(Duration::from_secs(1), c.read_to_end(&mut rsp))
                .await
                .expect("answered at once")
                .expect("read");
            assert!(String::from_utf8_lossy(&rsp).starts_with("HTTP/1.1 308"));
            assert!(
                eof_within(a, Duration::from_millis(200)).await,
                "the oldest idle connection made room"
            );
            // The other idle one is closed by the header deadline.
            assert!(
                eof_within(b, Duration::from_secs(2)).await,
                "no header deadline"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut d = TcpStream::connect(addr).await.expect("connect");
            d.write_all(b"GET /p HTTP/1.1\r\nHost: example.org\r\n\r\n")
                .await
                .expect("write");
            let mut rsp = Vec::new();
            d.read_to_end(&mut rsp).await.expect("read");
            let rsp = String::from_utf8_lossy(&rsp);
            assert!(rsp.starts_with("HTTP/1.1 308"), "{rsp}");
            assert!(rsp.contains("location: https://example.org/p\r\n"), "{rsp}");

            stop.send(()).expect("server running");
            tokio::time::timeout(Duration::from_secs(3), server)
                .await
                .expect("server stops on shutdown")
                .expect("no panic")
                .expect("no error");
            assert!(TcpStream::connect(addr).await.is_err(), "still listening");
        });
    }

    #[test]
    fn bind_specs() {
        assert_eq!(BindSpec::parse(":80").expect("ok"), BindSpec::Any(80));
        assert_eq!(
            BindSpec::parse("127.0.0.1:8080").expect("ok"),
            BindSpec::Addrs(
                "127.0.0.1:8080".to_owned(),
                vec!["127.0.0.1:8080".parse().expect("addr")]
            )
        );
        assert!(matches!(
            BindSpec::parse("[::1]:80").expect("ok"),
            BindSpec::Addrs(_, a) if a == vec!["[::1]:80".parse::<SocketAddr>().expect("addr")]
        ));
        for bad in [":", ":x", ":70000", "80", "127.0.0.1", "[::1]"] {
            assert!(BindSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bind_any_port_takes_both_families_or_the_dual_stack_one() {
        // Find a free port, then bind :port: whatever the host's IPv6 setup, it succeeds
        // and the port is reachable over IPv4.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let listeners = bind(&[BindSpec::Any(port)]).expect("bind :port");
        assert!(!listeners.is_empty());
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("IPv4 reachable");
    }
}
