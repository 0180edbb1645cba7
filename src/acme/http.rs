//! The HTTPS client used for the CA: rustls with the system roots (or `SSL_CERT_FILE`) plus
//! an optional extra bundle, one connection pool for the whole run, a deadline on every
//! request and a cap on every response body, because the CA is untrusted input.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

use super::jws::ForeignKey;

/// Largest response body accepted from the CA.
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;
/// Deadline for one request (connect, send, receive headers).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

type Inner = Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// A pooled HTTPS client that counts its requests.
#[derive(Clone)]
pub struct CaHttp {
    inner: Inner,
    requests: Arc<AtomicU64>,
    resigner: Option<Arc<ForeignKey>>,
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
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            inner,
            requests: Arc::new(AtomicU64::new(0)),
            resigner: None,
        })
    }

    /// The same client (same pool, same counter) re-signing every JWS it posts with `key`.
    pub fn with_resigner(&self, key: Arc<ForeignKey>) -> Self {
        Self {
            resigner: Some(key),
            ..self.clone()
        }
    }

    /// Number of requests sent so far.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A plain GET returning the (bounded) body, for the directory document.
    pub async fn get(&self, url: &str) -> Result<Bytes> {
        let req = http::Request::get(url)
            .header(http::header::USER_AGENT, user_agent())
            .body(BodyWrapper::default())?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let rsp = tokio::time::timeout(REQUEST_TIMEOUT, self.inner.request(req))
            .await
            .map_err(|_| anyhow!("GET {url} timed out"))?
            .with_context(|| format!("GET {url}"))?;
        if !rsp.status().is_success() {
            return Err(anyhow!("GET {url} returned HTTP {}", rsp.status()));
        }
        let body = Limited::new(rsp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| anyhow!("reading {url}: {e}"))?;
        Ok(body.to_bytes())
    }
}

/// `acmekeep/<version>`.
pub fn user_agent() -> &'static str {
    concat!("acmekeep/", env!("CARGO_PKG_VERSION"))
}

impl HttpClient for CaHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        let resigner = self.resigner.clone();
        Box::pin(async move {
            let req = match resigner {
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
            match tokio::time::timeout(REQUEST_TIMEOUT, inner.request(req)).await {
                Err(_) => Err(instant_acme::Error::Str("request to the CA timed out")),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                Ok(Ok(rsp)) => {
                    let (parts, body) = rsp.into_parts();
                    Ok(BytesResponse::from(http::Response::from_parts(
                        parts,
                        Limited::new(body, MAX_RESPONSE),
                    )))
                }
            }
        })
    }
}
