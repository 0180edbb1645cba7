//! The [`Issuer`] steps of a session: ordering (with `replaces` and a profile), proving
//! control, finalizing and downloading; finishing or fetching what an earlier run ordered;
//! revocation.

use std::time::Duration;

use anyhow::anyhow;
use instant_acme::{Identifier, OrderStatus};

use super::errors::{UNRESPONSIVE_AFTER, ca_error, fetch_error};
use super::{InstantSession, retry_policy};
use crate::acme::error::{ALREADY_REVOKED, problem_of};
use crate::acme::{AcmeError, Chains, Issued, Issuer, OrderOptions, Responder};
use crate::name::Hostname;

impl InstantSession {
    /// `profile` if the CA offers it. A profile the CA no longer lists (CAs retire profiles)
    /// is not worth failing the target over: the certificate comes from the CA's default
    /// profile instead (`None`, with a warning), and the planner, which compares the
    /// target's profile with the one asked for, does not order again on every run because
    /// of it.
    fn offered_profile<'a>(&self, profile: Option<&'a str>) -> Option<&'a str> {
        match profile {
            Some(p) if !self.account.profiles().any(|m| m.name == p) => {
                let mut offered: Vec<String> =
                    self.account.profiles().map(|m| m.name.to_owned()).collect();
                // instant-acme keeps them in a hash map: name them in a stable order.
                offered.sort();
                tracing::warn!(
                    "request.profile {p:?} is not offered by {} (its directory offers: {}); ordering with the CA's default profile",
                    self.directory_url,
                    if offered.is_empty() {
                        "no profiles".to_owned()
                    } else {
                        offered.join(", ")
                    }
                );
                None
            }
            other => other,
        }
    }
}

impl Issuer for InstantSession {
    async fn issue(
        &self,
        names: &[Hostname],
        csr_der: &[u8],
        options: OrderOptions<'_>,
        responder: &dyn Responder,
        on_finalized: &(dyn Fn(&str) -> anyhow::Result<()> + Sync),
    ) -> Result<Issued, AcmeError> {
        let OrderOptions {
            replaces,
            profile,
            alternate_chains,
        } = options;
        let identifiers: Vec<Identifier> = names
            .iter()
            .map(|n| match n.ip() {
                Some(ip) => Identifier::Ip(ip),
                None => Identifier::Dns(n.to_string()),
            })
            .collect();
        let profile = self.offered_profile(profile);
        // A challenge the responder cannot use as the CA sent it (a token a hook would take
        // for an option) gets a bounded number of fresh orders, with fresh authorizations.
        let identifiers = &identifiers;
        let mut order = crate::acme::order_with_usable_challenges(move || async move {
            let mut order = crate::acme::renewal::new_order(
                &self.account,
                (&self.http, &self.directory_url),
                identifiers,
                replaces,
                profile,
            )
            .await?;
            // Whatever happens while proving control, every response set up is taken down.
            let mut presented = Vec::new();
            let proved = self
                .prove_control(&mut order, responder, &mut presented)
                .await;
            responder.cleanup_all(&presented).await;
            proved.map(|()| order)
        })
        .await?;
        responder
            .finalizing(order.url())
            .await
            .map_err(AcmeError::Other)?;
        ca_retry!(self, order.finalize_csr(csr_der))
            .map_err(|e| ca_error("finalizing the order", e))?;
        on_finalized(order.url()).map_err(AcmeError::Other)?;
        let policy = retry_policy();
        let chain_pem = ca_retry!(self, order.poll_certificate(&policy))
            .map_err(|e| ca_error("downloading the certificate", e))?;
        let cert_url = order.state().certificate.clone();
        Ok(Issued {
            order_url: order.url().to_owned(),
            chains: self
                .chains(chain_pem, cert_url.as_deref(), alternate_chains)
                .await,
        })
    }

    async fn fetch_order_certificate(
        &self,
        order_url: &str,
        alternate_chains: bool,
    ) -> Result<Option<Chains>, AcmeError> {
        let mut order = ca_retry!(self, self.account.order(order_url.to_owned()))
            .map_err(|e| fetch_error("fetching the order", e))?;
        let Some(chain_pem) = ca_retry!(self, order.certificate())
            .map_err(|e| fetch_error("downloading the certificate", e))?
        else {
            return Ok(None);
        };
        let cert_url = order.state().certificate.clone();
        Ok(Some(
            self.chains(chain_pem, cert_url.as_deref(), alternate_chains)
                .await,
        ))
    }

    async fn finish_order(
        &self,
        order_url: &str,
        csr_der: &[u8],
        alternate_chains: bool,
    ) -> Result<Option<Chains>, AcmeError> {
        let mut order = ca_retry!(self, self.account.order(order_url.to_owned()))
            .map_err(|e| fetch_error("fetching the order", e))?;
        if order.state().status == OrderStatus::Ready {
            // Its holder was stopped before its finalize reached the CA. Should that finalize
            // arrive after ours, the CA refuses it (orderNotReady): still one certificate.
            if let Err(e) = ca_retry!(self, order.finalize_csr(csr_der)) {
                let not_ready = problem_of(&e)
                    .is_some_and(|p| p.is("urn:ietf:params:acme:error:orderNotReady"));
                if !not_ready {
                    return Err(ca_error("finalizing the order", e));
                }
                ca_retry!(self, order.refresh())
                    .map_err(|e| fetch_error("fetching the order", e))?;
            }
        }
        match order.state().status {
            OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid => {}
            other => {
                return Err(AcmeError::Refused(format!(
                    "order {order_url} is {} at the CA: it will not give a certificate",
                    format!("{other:?}").to_lowercase()
                )));
            }
        }
        let chain_pem = ca_retry!(self, order.poll_certificate(&retry_policy()))
            .map_err(|e| fetch_error("downloading the certificate", e))?;
        let cert_url = order.state().certificate.clone();
        Ok(Some(
            self.chains(chain_pem, cert_url.as_deref(), alternate_chains)
                .await,
        ))
    }

    async fn renewal_info(
        &self,
        ari_id: &str,
    ) -> Result<Option<(crate::acme::Window, Duration)>, AcmeError> {
        crate::acme::renewal::renewal_info(&self.account, ari_id).await
    }

    fn thumbprint(&self) -> String {
        self.thumbprint.clone()
    }

    fn ca_unresponsive(&self) -> bool {
        crate::acme::nonces::origin(&self.directory_url)
            .is_some_and(|o| self.http.timeouts(&o) >= UNRESPONSIVE_AFTER)
    }

    fn ca_paused_until(&self) -> Option<std::time::SystemTime> {
        self.http.pause_not_waited(&self.directory_url)
    }

    fn account_url(&self) -> String {
        self.account.id().to_owned()
    }

    async fn revoke(&self, cert_der: &[u8], reason: u8) -> Result<(), AcmeError> {
        let reason = match reason {
            0 => instant_acme::RevocationReason::Unspecified,
            1 => instant_acme::RevocationReason::KeyCompromise,
            3 => instant_acme::RevocationReason::AffiliationChanged,
            4 => instant_acme::RevocationReason::Superseded,
            5 => instant_acme::RevocationReason::CessationOfOperation,
            other => {
                return Err(AcmeError::Other(anyhow!(
                    "revocation reason code {other} is not one a subscriber may use"
                )));
            }
        };
        let cert = rustls_pki_types::CertificateDer::from(cert_der.to_vec());
        let request = instant_acme::RevocationRequest {
            certificate: &cert,
            reason: Some(reason),
        };
        match ca_retry!(self, self.account.revoke(&request)) {
            Ok(()) => Ok(()),
            Err(e) if problem_of(&e).is_some_and(|p| p.is(ALREADY_REVOKED)) => Ok(()),
            Err(e) => Err(ca_error("revoking the certificate", e)),
        }
    }
}
