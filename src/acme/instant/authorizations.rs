//! Proving control of an order's identifiers: a challenge chosen for every pending
//! authorization, all presented at once, announced to the CA, and the order awaited; a failed
//! validation is read back from the authorizations as [`AcmeError::Validation`].

use std::collections::HashSet;

use instant_acme::{AuthorizationStatus, ChallengeType, OrderStatus};

use super::challenges::{Offer, instant_type};
use super::errors::{NONCE_ATTEMPTS, ca_error, is_bad_nonce};
use super::{InstantSession, retry_policy};
use crate::acme::error::{FailedChallenge, Problem};
use crate::acme::{AcmeError, Challenge, Responder};

impl InstantSession {
    /// Answers every pending authorization with the first challenge type (in the
    /// responder's order) the CA offers, then waits until the order is ready. All the
    /// challenges are chosen first, presented at the same time (their hooks run in
    /// parallel), and only then announced to the CA one by one. `presented` collects what
    /// was set up, for the caller to clean up.
    pub(super) async fn prove_control(
        &self,
        order: &mut instant_acme::Order,
        responder: &dyn Responder,
        presented: &mut Vec<Challenge>,
    ) -> Result<(), AcmeError> {
        let chosen = self.choose_challenges(order, responder).await?;
        presented.extend(chosen.iter().map(|(_, _, c)| c.clone()));
        responder
            .present_all(presented)
            .await
            .map_err(AcmeError::Other)?;
        announce(order, &chosen).await?;
        let policy = retry_policy();
        let status = ca_retry!(self, order.poll_ready(&policy))
            .map_err(|e| ca_error("waiting for validation", e))?;
        if status != OrderStatus::Ready {
            return Err(failed_validation(order).await);
        }
        Ok(())
    }

    /// The challenge chosen for each pending authorization of `order`, by the
    /// authorization's URL. Authorizations are walked again after a badNonce rejection; `done`
    /// keeps each from being counted twice (instant-acme keeps the authorizations it fetched,
    /// so the second walk sends nothing until a challenge is announced).
    async fn choose_challenges(
        &self,
        order: &mut instant_acme::Order,
        responder: &dyn Responder,
    ) -> Result<Vec<(String, ChallengeType, Challenge)>, AcmeError> {
        let mut chosen = Vec::new();
        let mut done: HashSet<String> = HashSet::new();
        let mut attempt = 1;
        'walk: loop {
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = match authz {
                    Ok(a) => a,
                    Err(e) if is_bad_nonce(&e) && attempt < NONCE_ATTEMPTS => {
                        attempt += 1;
                        continue 'walk;
                    }
                    Err(e) => return Err(ca_error("fetching an authorization", e)),
                };
                let url = authz.url().to_owned();
                if !done.insert(url.clone()) {
                    continue;
                }
                // The bare identifier: `*.` is what `wildcard` says (RFC 8555 §7.1.4), and
                // the dns-01 record of `*.a.example` is `_acme-challenge.a.example`.
                let ident = authz.identifier().identifier.authorized(false).to_string();
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(AcmeError::Refused(format!(
                            "the authorization for {ident} is {other:?}"
                        )));
                    }
                }
                let offer = Offer {
                    url: &url,
                    ident: &ident,
                    wildcard: authz.wildcard,
                    challenges: &authz.challenges,
                };
                let challenge = self.choose(&offer, responder).await?;
                if let Err(e) = responder.usable(&challenge) {
                    // Given up for good, so the next order gets a fresh authorization (and
                    // token) rather than this one again.
                    if let Err(d) = authz.deactivate().await {
                        tracing::debug!(
                            "deactivating the authorization for {}: {d}",
                            challenge.identifier
                        );
                    }
                    return Err(AcmeError::Other(e.into()));
                }
                chosen.push((url, instant_type(challenge.kind), challenge));
            }
            return Ok(chosen);
        }
    }
}

/// Tells the CA that each chosen challenge (by its authorization's URL) is ready to be
/// validated; after a badNonce rejection the authorizations are walked again, and a challenge
/// announced already is not announced twice.
async fn announce(
    order: &mut instant_acme::Order,
    chosen: &[(String, ChallengeType, Challenge)],
) -> Result<(), AcmeError> {
    let mut announced: HashSet<&str> = HashSet::new();
    let mut attempt = 1;
    'announce: loop {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = match authz {
                Ok(a) => a,
                Err(e) if is_bad_nonce(&e) && attempt < NONCE_ATTEMPTS => {
                    attempt += 1;
                    continue 'announce;
                }
                Err(e) => return Err(ca_error("fetching an authorization", e)),
            };
            let Some((url, r#type, challenge)) =
                chosen.iter().find(|(url, _, _)| url == authz.url())
            else {
                continue;
            };
            if !announced.insert(url) {
                continue;
            }
            let ident = &challenge.identifier;
            let Some(mut ch) = authz.challenge(r#type.clone()) else {
                continue;
            };
            let mut tries = 1;
            loop {
                match ch.set_ready().await {
                    Ok(()) => break,
                    Err(e) if is_bad_nonce(&e) && tries < NONCE_ATTEMPTS => tries += 1,
                    Err(e) => return Err(ca_error(&format!("the challenge for {ident}"), e)),
                }
            }
        }
        return Ok(());
    }
}

/// Why an order went invalid: its authorizations' challenge errors, as values.
async fn failed_validation(order: &mut instant_acme::Order) -> AcmeError {
    let mut failed = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(Ok(mut authz)) = authzs.next().await {
        let identifier = authz.identifier().to_string();
        if let Ok(state) = authz.refresh().await {
            for ch in &state.challenges {
                if let Some(p) = &ch.error {
                    failed.push(FailedChallenge {
                        identifier: identifier.clone(),
                        problem: Problem::of(p),
                    });
                }
            }
        }
    }
    AcmeError::Validation { failed }
}
