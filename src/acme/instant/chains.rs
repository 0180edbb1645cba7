//! The requests acmekeep signs itself, out of instant-acme's reach: a POST-as-GET (RFC 8555
//! §6.3) of an alternate chain (§7.4.2) or of a resource read as JSON.

use anyhow::anyhow;

use super::InstantSession;
use super::errors::{NONCE_ATTEMPTS, refusal};
use crate::acme::error::BAD_NONCE;
use crate::acme::http::JoseResponse;
use crate::acme::{AcmeError, Chains};

impl InstantSession {
    /// The chains of the certificate at `cert_url`, just downloaded as `default`: with the
    /// alternates its download named when `want_alternates` is set (each fetched with a
    /// POST-as-GET; one that fails is a warning, never a failure: the default chain is a
    /// valid result), else only the default.
    pub(super) async fn chains(
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
    async fn post_as_get(
        &self,
        url: &str,
        nonce: &mut Option<String>,
    ) -> Result<String, AcmeError> {
        self.post_as_get_of(url, nonce, false).await
    }

    /// [`post_as_get`](Self::post_as_get) of a JSON resource (`json`) or a chain. An error
    /// answer is the CA's problem as a value ([`refusal`], its context the HTTP status);
    /// an answer of the wrong type is [`AcmeError::Other`].
    pub(super) async fn post_as_get_of(
        &self,
        url: &str,
        nonce: &mut Option<String>,
        json: bool,
    ) -> Result<String, AcmeError> {
        let mut attempt = 1;
        loop {
            let fresh = match nonce.take() {
                Some(n) => n,
                None => self.fresh_nonce().await?,
            };
            let jws = crate::acme::jws::post_as_get(&self.signer, self.account.id(), &fresh, url)?;
            let rsp = self.http.post_jose(url, jws).await?;
            nonce.clone_from(&rsp.nonce);
            if rsp.status.is_success() {
                return answer_text(&rsp, json).map_err(AcmeError::Other);
            }
            let bad_nonce = rsp.problem.as_ref().is_some_and(|p| p.is(BAD_NONCE));
            if bad_nonce && attempt < NONCE_ATTEMPTS {
                tracing::debug!("badNonce from the CA; retrying (attempt {attempt})");
                attempt += 1;
                continue;
            }
            return Err(match rsp.problem {
                Some(p) => refusal(&format!("HTTP {}", rsp.status), p),
                None => anyhow!("HTTP {} without a problem document", rsp.status).into(),
            });
        }
    }
}

/// The text of a successful answer: JSON (`json`) or a PEM chain, as its type must say.
fn answer_text(rsp: &JoseResponse, json: bool) -> anyhow::Result<String> {
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
    if !crate::acme::http::is_pem_chain_type(kind) {
        return Err(anyhow!(
            "the CA answered with {:?}, not a certificate chain",
            kind.chars().take(100).collect::<String>()
        ));
    }
    String::from_utf8(rsp.body.to_vec()).map_err(|_| anyhow!("the chain is not UTF-8 text"))
}
