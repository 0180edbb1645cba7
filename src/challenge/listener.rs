//! The built-in http-01 listener (acmetool's `listen`/`proxy` methods).
//!
//! One set of sockets per run serves every order's tokens from a shared map. Only
//! `GET`/`HEAD /.well-known/acme-challenge/<token>` is answered; everything else is a 404.
//! Slow or numerous clients cannot pin it: headers must arrive within a deadline, each
//! connection is bounded in time, and the number of connections is capped, with idle ones
//! making room for new ones ([`super::slots`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::slots::Slots;

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
pub struct Listeners {
    tasks: Vec<JoinHandle<()>>,
    bound: Vec<SocketAddr>,
}

impl Listeners {
    /// Binds every address it can. Failures are logged (acmetool ignores them too: port 80
    /// is often taken by a web server that serves the webroot instead).
    pub async fn start(addrs: &[(String, bool)], tokens: Arc<TokenMap>) -> Listeners {
        let limit = Slots::new(MAX_CONNECTIONS);
        let mut tasks = Vec::new();
        let mut bound = Vec::new();
        for (addr, explicit) in addrs {
            match TcpListener::bind(addr.as_str()).await {
                Ok(listener) => {
                    if let Ok(a) = listener.local_addr() {
                        bound.push(a);
                    }
                    tracing::debug!("http-01 listener on {addr}");
                    tasks.push(tokio::spawn(serve(listener, tokens.clone(), limit.clone())));
                }
                Err(e) if *explicit => tracing::warn!("cannot listen on {addr} for http-01: {e}"),
                Err(e) => tracing::debug!("cannot listen on {addr} for http-01: {e}"),
            }
        }
        Listeners { tasks, bound }
    }

    /// Addresses actually listening.
    pub fn bound(&self) -> &[SocketAddr] {
        &self.bound
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve(listener: TcpListener, tokens: Arc<TokenMap>, limit: Arc<Slots>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some((slot, evicted)) = limit.admit() else {
            continue; // every slot busy answering: drop the connection
        };
        let tokens = tokens.clone();
        tokio::spawn(async move {
            let answering = slot.clone();
            let service = hyper::service::service_fn(move |req| {
                answering.busy();
                let tokens = tokens.clone();
                async move { Ok::<_, Infallible>(answer(&req, &tokens)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => {}
                () = evicted.wait() => {}
            }
            drop(slot);
        });
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
