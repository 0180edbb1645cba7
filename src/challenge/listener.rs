//! The built-in http-01 listener (acmetool's `listen`/`proxy` methods).
//!
//! One set of sockets per run serves every order's tokens from a shared map. Only
//! `GET`/`HEAD /.well-known/acme-challenge/<token>` is answered; everything else is a 404.
//! Slow or numerous clients cannot pin it: headers must arrive within a deadline, each
//! connection is bounded in time, and the number of connections is capped, with idle ones
//! making room for new ones (the accept loop shared with the other servers, [`super::accept`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpStream;

use super::accept::{self, Running};
use super::slots::{Slot, Slots};

const PREFIX: &str = "/.well-known/acme-challenge/";
const MAX_CONNECTIONS: usize = 256;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// Tokens currently being answered: token → key authorization.
#[derive(Debug, Default)]
pub struct TokenMap(RwLock<HashMap<String, String>>);

impl TokenMap {
    /// Starts answering `token`.
    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Stops answering `token`.
    pub fn remove(&self, token: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    fn get(&self, token: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }
}

/// Running listeners; they stop when this is dropped.
#[derive(Debug)]
pub struct Listeners(Running);

impl Listeners {
    /// Binds every address it can. Failures are logged (acmetool ignores them too: port 80
    /// is often taken by a web server that serves the webroot instead).
    pub async fn start(addrs: &[(String, bool)], tokens: Arc<TokenMap>) -> Listeners {
        let listeners = accept::bind_all(addrs, "http-01").await;
        let handle = move |stream: TcpStream, _peer: SocketAddr, slot: Arc<Slot>| {
            let tokens = tokens.clone();
            accept::serve_http1(stream, slot, HEADER_TIMEOUT, move |req| {
                std::future::ready(answer(&req, &tokens))
            })
        };
        let slots = Slots::new(MAX_CONNECTIONS);
        Listeners(Running::spawn(
            listeners,
            &slots,
            CONNECTION_TIMEOUT,
            "http-01",
            handle,
        ))
    }

    /// Addresses actually listening.
    pub fn bound(&self) -> &[SocketAddr] {
        self.0.bound()
    }
}

fn answer<B>(req: &Request<B>, tokens: &TokenMap) -> Response<Full<Bytes>> {
    let found = (req.method() == hyper::Method::GET || req.method() == hyper::Method::HEAD)
        .then(|| req.uri().path().strip_prefix(PREFIX))
        .flatten()
        .and_then(|token| tokens.get(token));
    let mut rsp = match found {
        Some(ka) => Response::new(Full::new(Bytes::from(ka))),
        None => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    rsp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_connections_at_the_cap_no_longer_lock_real_clients_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpStream;
        let tokens = Arc::new(TokenMap::default());
        tokens.insert("tok", "tok.thumb");
        let listeners = Listeners::start(&[("127.0.0.1:0".to_owned(), true)], tokens).await;
        let addr = listeners.bound()[0];
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut rsp = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut rsp))
            .await
            .expect("answered while the idle connections are open")
            .expect("read");
        let rsp = String::from_utf8_lossy(&rsp);
        assert!(
            rsp.starts_with("HTTP/1.1 200") && rsp.ends_with("tok.thumb"),
            "{rsp}"
        );
    }

    #[test]
    fn answers_only_known_tokens_on_the_challenge_path() {
        let tokens = TokenMap::default();
        tokens.insert("tok", "tok.thumb");
        let get = |uri: &str| Request::get(uri).body(()).expect("request");
        assert_eq!(
            answer(&get("/.well-known/acme-challenge/tok"), &tokens).status(),
            StatusCode::OK
        );
        assert_eq!(
            answer(&get("/.well-known/acme-challenge/other"), &tokens).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(&get("/tok"), &tokens).status(),
            StatusCode::NOT_FOUND
        );
        let post = Request::post("/.well-known/acme-challenge/tok")
            .body(())
            .expect("request");
        assert_eq!(answer(&post, &tokens).status(), StatusCode::NOT_FOUND);
        tokens.remove("tok");
        assert_eq!(
            answer(&get("/.well-known/acme-challenge/tok"), &tokens).status(),
            StatusCode::NOT_FOUND
        );
    }
}
