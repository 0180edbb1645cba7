//! The one accept loop of the servers strangers connect to: the http-01 listener, the
//! tls-alpn-01 responder and the redirector. Each used to have its own copy; their hardening
//! now lives here once, so a fix to one is a fix to all three:
//!
//! - the number of open connections is capped ([`Slots`]: over the cap the oldest connection
//!   that has not sent its request yet makes room, and only when every connection is being
//!   answered is a new one closed at once);
//! - each connection, request and answer included, has a deadline;
//! - a failing `accept` (out of descriptors) backs off instead of spinning;
//! - for HTTP ([`serve_http1`]): request headers within a deadline, at most 8 KiB of head and
//!   64 headers, no keep-alive; bodies are never read (the handlers drop them).
//!
//! What a connection is answered with stays with each server.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::slots::{Slot, Slots};

/// Largest request head (request line and headers) an HTTP server reads: hyper's smallest
/// read buffer.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Request headers beyond this many fail the request (hyper answers 431).
pub const MAX_HEADERS: usize = 64;
/// How long to wait after a failed `accept` before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Binds every address it can. A failure is logged, as a warning when the address was
/// configured explicitly (`explicit`), else at debug level: acmetool ignores them too, since
/// ports 80 and 443 are often a web server's, which then answers the challenges instead.
pub async fn bind_all(addrs: &[(String, bool)], what: &str) -> Vec<TcpListener> {
    let mut listeners = Vec::new();
    for (addr, explicit) in addrs {
        match TcpListener::bind(addr.as_str()).await {
            Ok(listener) => {
                tracing::debug!("{what} listener on {addr}");
                listeners.push(listener);
            }
            Err(e) if *explicit => tracing::warn!("cannot listen on {addr} for {what}: {e}"),
            Err(e) => tracing::debug!("cannot listen on {addr} for {what}: {e}"),
        }
    }
    listeners
}

/// Accept loops that stop when this is dropped.
#[derive(Debug, Default)]
pub struct Running {
    tasks: Vec<JoinHandle<()>>,
    bound: Vec<SocketAddr>,
}

impl Running {
    /// Runs an [`accept_loop`] on each listener, all sharing `slots`.
    pub fn spawn<H, F>(
        listeners: Vec<TcpListener>,
        slots: &Arc<Slots>,
        deadline: Duration,
        what: &'static str,
        handle: H,
    ) -> Running
    where
        H: Fn(TcpStream, SocketAddr, Arc<Slot>) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = Arc::new(handle);
        let mut running = Running::default();
        for listener in listeners {
            if let Ok(a) = listener.local_addr() {
                running.bound.push(a);
            }
            let (slots, handle) = (slots.clone(), handle.clone());
            running.tasks.push(tokio::spawn(accept_loop(
                listener, slots, deadline, what, handle,
            )));
        }
        running
    }

    /// Addresses actually listening.
    pub fn bound(&self) -> &[SocketAddr] {
        &self.bound
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Accepts connections until the task is aborted. Each admitted connection runs
/// `handle(stream, peer, slot)` in its own task, bounded by `deadline` and closed early if a
/// newer connection needs its slot while it is still idle; the handler marks the slot busy
/// ([`Slot::busy`]) once the client has sent its request. The slot is freed when the task
/// ends, whichever way.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    slots: Arc<Slots>,
    deadline: Duration,
    what: &'static str,
    handle: Arc<H>,
) where
    H: Fn(TcpStream, SocketAddr, Arc<Slot>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors or the like: back off instead of spinning.
                tracing::debug!("{what}: accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some((slot, evicted)) = slots.admit() else {
            tracing::debug!("{what}: {peer}: every connection is answering a request, closing");
            continue; // dropping the stream closes it
        };
        let served = handle(stream, peer, slot.clone());
        tokio::spawn(async move {
            tokio::select! {
                done = tokio::time::timeout(deadline, served) => if done.is_err() {
                    tracing::debug!("{what}: {peer}: connection deadline reached, closing");
                },
                () = evicted.wait() => {
                    tracing::debug!("{what}: {peer}: idle, closed to make room for a new connection");
                }
            }
            drop(slot);
        });
    }
}

/// Serves one HTTP/1.1 connection with `answer`: headers must arrive within
/// `header_timeout`, the head is bounded ([`MAX_HEAD_BYTES`], [`MAX_HEADERS`]) and there is no
/// keep-alive, so the connection closes after one answer. The slot is marked busy when the
/// request head has arrived. Protocol errors (a malformed or slow request) just end the
/// connection.
pub async fn serve_http1<A, F>(
    stream: TcpStream,
    slot: Arc<Slot>,
    header_timeout: Duration,
    answer: A,
) where
    A: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        slot.busy();
        let rsp = answer(req);
        async move { Ok::<_, Infallible>(rsp.await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(false)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::trace!("http connection: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Whether the server closes `stream` within `d` (EOF or reset).
    async fn closed_within(stream: &mut TcpStream, d: Duration) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(d, stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn busy_connections_hold_the_cap_until_their_deadline_and_loops_stop_when_dropped() {
        let listeners = bind_all(&[("127.0.0.1:0".to_owned(), true)], "test").await;
        // The handler says it is answering at once and then never finishes.
        let running = Running::spawn(
            listeners,
            &Slots::new(1),
            Duration::from_millis(500),
            "test",
            |stream: TcpStream, _peer, slot: Arc<Slot>| async move {
                let _open = stream;
                slot.busy();
                std::future::pending::<()>().await;
            },
        );
        let addr = running.bound()[0];
        let mut first = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Over the cap with every slot busy: closed at once.
        let mut second = TcpStream::connect(addr).await.expect("connect");
        assert!(closed_within(&mut second, Duration::from_millis(200)).await);
        assert!(!closed_within(&mut first, Duration::from_millis(100)).await);
        // The deadline ends the first and frees its slot.
        assert!(closed_within(&mut first, Duration::from_secs(2)).await);
        let mut third = TcpStream::connect(addr).await.expect("connect");
        assert!(!closed_within(&mut third, Duration::from_millis(100)).await);
        drop(running);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }

    #[tokio::test]
    async fn http_heads_over_the_limit_are_refused() {
        let listeners = bind_all(&[("127.0.0.1:0".to_owned(), true)], "test").await;
        let running = Running::spawn(
            listeners,
            &Slots::new(4),
            Duration::from_secs(5),
            "test",
            |stream, _peer, slot| {
                serve_http1(stream, slot, Duration::from_secs(2), |_req| async {
                    Response::new(Full::new(Bytes::from_static(b"ok")))
                })
            },
        );
        let addr = running.bound()[0];
        let ask = |head: String| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(head.as_bytes()).await.expect("write");
            let mut rsp = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rsp)).await;
            String::from_utf8_lossy(&rsp).into_owned()
        };
        let ok = ask("GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned()).await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("ok"), "{ok}");
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        let rsp = ask(format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")).await;
        assert!(!rsp.starts_with("HTTP/1.1 200"), "{rsp}");
        let long = "a".repeat(MAX_HEAD_BYTES);
        let rsp = ask(format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(!rsp.starts_with("HTTP/1.1 200"), "{rsp}");
    }
}
