//! Minimal blocking HTTP/1.0 clients: HTTPS GET (rustls, trusting one given CA) for Pebble's
//! ACME and management interfaces, and plain HTTP POST for challtestsrv's management API.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};

const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Splits `scheme://host:port/path` into (host, port, path).
fn split_url(url: &str, scheme: &str) -> io::Result<(String, u16, String)> {
    let parsed = url::Url::parse(url).map_err(|e| other(format!("bad URL {url}: {e}")))?;
    if parsed.scheme() != scheme {
        return Err(other(format!("{url}: expected a {scheme} URL")));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| other(format!("{url}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| other(format!("{url}: no port")))?;
    let mut path = parsed.path().to_owned();
    if let Some(q) = parsed.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok((host, port, path))
}

fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| other(format!("cannot resolve {host}")))?;
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| other("no end of HTTP headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if body.len() < len {
            return Err(other(format!(
                "truncated body: {} of {len} bytes",
                body.len()
            )));
        }
        body.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Reads until EOF; an unclean TLS close after a complete response is tolerated.
fn read_all(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match r.read_to_end(&mut buf) {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(buf),
        Err(e) => Err(e),
    }
}

/// `GET url` over HTTPS, trusting only `ca_der` (the CA that signed the server's certificate).
pub fn https_get(url: &str, ca_der: &[u8]) -> io::Result<HttpResponse> {
    let (host, port, path) = split_url(url, "https")?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| other(format!("bad CA certificate: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name =
        ServerName::try_from(host.clone()).map_err(|e| other(format!("{host}: {e}")))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), server_name)
        .map_err(|e| other(e.to_string()))?;
    let mut tls = rustls::StreamOwned::new(conn, connect(&host, port)?);
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: acmekeep-tests\r\nAccept: */*\r\n\r\n",
        host_header(&host, port)
    );
    tls.write_all(request.as_bytes())?;
    tls.flush()?;
    parse_response(&read_all(&mut tls)?)
}

/// `POST url` over plain HTTP with a JSON body (challtestsrv's management API).
pub fn http_post(url: &str, json_body: &str) -> io::Result<HttpResponse> {
    let (host, port, path) = split_url(url, "http")?;
    let mut stream = connect(&host, port)?;
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: acmekeep-tests\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json_body}",
        host_header(&host, port),
        json_body.len()
    );
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    parse_response(&read_all(&mut stream)?)
}

/// `GET url` over plain HTTP.
pub fn http_get(url: &str) -> io::Result<HttpResponse> {
    let (host, port, path) = split_url(url, "http")?;
    let mut stream = connect(&host, port)?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: acmekeep-tests\r\n\r\n",
        host_header(&host, port)
    );
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    parse_response(&read_all(&mut stream)?)
}
