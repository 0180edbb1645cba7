//! The HTTP self-test (acmetool §5.2): before asking the CA, fetch our own challenge
//! response the way the CA will, on port 80, and stop early if it is not served. It can be
//! turned off per target (`http-self-test: false`) for NAT and split-horizon setups.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches `http://<name>/.well-known/acme-challenge/<token>` and compares the body.
/// Redirects are not followed: a redirect is reported as inconclusive and does not fail.
pub async fn check(name: &str, token: &str, key_authorization: &str) -> Result<()> {
    let host = match name.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => name.to_owned(),
    };
    let url = format!("http://{host}/.well-known/acme-challenge/{token}");
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::get(&url)
        .header(http::header::USER_AGENT, crate::acme::http::user_agent())
        .body(Empty::new())?;
    // One deadline for the whole exchange: a server that answers the head and then trickles
    // its body costs TIMEOUT, not more.
    let exchange = async {
        let rsp = client.request(req).await.map_err(|e| {
            // The client's own message is "client error (Connect)"; what failed is below.
            let cause = crate::cause::render_dyn(&e);
            let cause = if e.is_connect() {
                format!("connecting to {name}: {cause}")
            } else {
                cause
            };
            anyhow!("self-test of {url}: {cause} (set http-self-test: false if the CA reaches this host differently)")
        })?;
        if rsp.status().is_redirection() {
            return Ok(None);
        }
        let status = rsp.status();
        let body = Limited::new(rsp.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| anyhow!("self-test of {url}: {e}"))?
            .to_bytes();
        anyhow::Ok(Some((status, body)))
    };
    let Some((status, body)) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("self-test of {url} timed out (set http-self-test: false if the CA reaches this host differently)"))??
    else {
        tracing::info!("self-test of {url}: redirected; leaving the check to the CA");
        return Ok(());
    };
    if !status.is_success() || String::from_utf8_lossy(&body).trim() != key_authorization {
        bail!(
            "self-test of {url} failed: HTTP {status} without the expected response (set http-self-test: false to skip this check)"
        );
    }
    Ok(())
}
