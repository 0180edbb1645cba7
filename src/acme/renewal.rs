//! ARI (RFC 9773) over instant-acme: fetching a certificate's suggested window, and
//! ordering a replacement with `replaces`.
//!
//! Both are best effort. A CA without a `renewalInfo` endpoint, or a certificate without an
//! Authority Key Identifier, simply has no window (the local rule applies). A CA that refuses
//! `replaces` — already replaced, "requester account did not request the certificate being
//! replaced" (lego#2789, #2474), no ARI at all — gets the same order again without it:
//! `replaces` only buys rate-limit exemption, never correctness.

use std::borrow::Cow;
use std::time::Duration;

use instant_acme::{Account, CertificateIdentifier, Identifier, NewOrder, Order};

use super::AcmeError;
use super::Window;
use super::error::problem_of;
use super::http::CaHttp;
use super::instant::{NONCE_ATTEMPTS, ca_error, is_bad_nonce, rate_limit_pause};

/// instant-acme's form of an ARI id (`<AKI>.<serial>`, both already base64url).
fn identifier(ari_id: &str) -> Option<CertificateIdentifier<'static>> {
    let (aki, serial) = ari_id.split_once('.')?;
    Some(CertificateIdentifier {
        authority_key_identifier: Cow::Owned(aki.to_owned()),
        serial: Cow::Owned(serial.to_owned()),
    })
}

/// The CA's suggested window for the certificate with ARI id `ari_id` and how long to wait
/// before asking again; `None` when the CA has no ARI.
pub async fn renewal_info(
    account: &Account,
    ari_id: &str,
) -> Result<Option<(Window, Duration)>, AcmeError> {
    let Some(id) = identifier(ari_id) else {
        return Ok(None);
    };
    match account.renewal_info(&id).await {
        Ok((info, retry_after)) => Ok(Some((
            Window {
                start: info.suggested_window.start,
                end: info.suggested_window.end,
            },
            retry_after,
        ))),
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(ca_error(
            &format!("fetching the renewal information of {ari_id}"),
            e,
        )),
    }
}

/// Whether a failed new-order with `replaces` should be sent again without it.
fn replaces_refused(e: &instant_acme::Error) -> bool {
    if let Some(p) = problem_of(e) {
        return p.is("urn:ietf:params:acme:error:alreadyReplaced")
            || (!p.is(super::pace::RATE_LIMITED)
                && p.detail
                    .as_deref()
                    .is_some_and(|d| d.to_ascii_lowercase().contains("replace")));
    }
    match e {
        // No renewalInfo in the directory: instant-acme refuses before sending anything.
        instant_acme::Error::Unsupported(_) => true,
        // The CA accepted the order but did not echo `replaces` (instant-acme checks it).
        instant_acme::Error::Other(e) => e.to_string().contains("replaces"),
        _ => false,
    }
}

/// Whether the CA refused the order for the profile it names (`invalidProfile`, as in
/// draft-ietf-acme-profiles): the CA dropped a profile it listed before.
fn profile_refused(e: &instant_acme::Error) -> bool {
    problem_of(e).is_some_and(|p| p.is("urn:ietf:params:acme:error:invalidProfile"))
}

/// Creates the order for `identifiers`, naming `replaces` (an ARI id) when given; refused
/// `replaces` are dropped and the order sent again, and so is a `profile` the CA refuses
/// (the certificate then comes from its default profile, with a warning). badNonce rejections are retried, and so
/// are rate-limit refusals the CA asked this run to wait out (`http`, `directory_url`: the
/// client and the CA the account is at).
pub async fn new_order(
    account: &Account,
    (http, directory_url): (&CaHttp, &str),
    identifiers: &[Identifier],
    replaces: Option<&str>,
    profile: Option<&str>,
) -> Result<Order, AcmeError> {
    let base = |with_replaces: bool, with_profile: bool| {
        let mut o = NewOrder::new(identifiers);
        if let Some(id) = replaces.filter(|_| with_replaces).and_then(identifier) {
            o = o.replaces(id);
        }
        if let Some(p) = profile.filter(|_| with_profile) {
            o = o.profile(p);
        }
        o
    };
    let mut with_replaces = replaces.is_some();
    let mut with_profile = profile.is_some();
    let (mut attempt, mut waits) = (1, 0);
    loop {
        match account.new_order(&base(with_replaces, with_profile)).await {
            Ok(order) => {
                http.count_order();
                return Ok(order);
            }
            Err(e) if is_bad_nonce(&e) && attempt < NONCE_ATTEMPTS => attempt += 1,
            Err(e) if let Some(pause) = rate_limit_pause(http, directory_url, &e, &mut waits) => {
                tokio::time::sleep(pause).await;
            }
            Err(e) if with_profile && profile_refused(&e) => {
                tracing::warn!(
                    "the CA refused profile {:?} ({}); ordering with its default profile",
                    profile.unwrap_or_default(),
                    ca_error("new order", e)
                );
                with_profile = false;
            }
            Err(e) if with_replaces && replaces_refused(&e) => {
                tracing::warn!(
                    "the CA refused the order as a replacement of {} ({}); ordering without `replaces`",
                    replaces.unwrap_or_default(),
                    ca_error("new order", e)
                );
                with_replaces = false;
            }
            Err(e) => return Err(ca_error("creating the order", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str, detail: &str) -> instant_acme::Error {
        let p: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{kind}"),
            "detail": detail,
        }))
        .expect("problem");
        instant_acme::Error::Api(p)
    }

    #[test]
    fn only_invalid_profile_drops_the_profile() {
        assert!(profile_refused(&problem(
            "invalidProfile",
            "Order includes unrecognized profile name \"classic90\""
        )));
        assert!(!profile_refused(&problem("malformed", "profile")));
        assert!(!profile_refused(&problem("rateLimited", "x")));
    }

    #[test]
    fn which_refusals_drop_replaces() {
        assert!(replaces_refused(&problem("alreadyReplaced", "x")));
        assert!(replaces_refused(&problem(
            "malformed",
            "requester account did not request the certificate being replaced"
        )));
        assert!(replaces_refused(&instant_acme::Error::Unsupported("ARI")));
        assert!(!replaces_refused(&problem(
            "rateLimited",
            "too many replacements"
        )));
        assert!(!replaces_refused(&problem("badNonce", "stale")));
        assert!(!replaces_refused(&problem("unauthorized", "no")));
        // The same refusals as error answers (the problem as a value, not instant-acme's):
        // a rate limit whose text says "replaces" is still a rate limit.
        let answer = |kind: &str, detail: &str| {
            instant_acme::Error::Other(Box::new(crate::acme::error::Refusal(
                crate::acme::Problem {
                    kind: Some(format!("urn:ietf:params:acme:error:{kind}")),
                    detail: Some(detail.to_owned()),
                    status: Some(if kind == "rateLimited" { 429 } else { 409 }),
                    ..Default::default()
                },
            )))
        };
        assert!(replaces_refused(&answer("alreadyReplaced", "x")));
        assert!(!replaces_refused(&answer(
            "rateLimited",
            "too many replaces orders"
        )));
        assert!(profile_refused(&answer("invalidProfile", "x")));
    }

    #[test]
    fn ari_ids_split_once() {
        let id = identifier("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").expect("id");
        assert_eq!(id.to_string(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
        assert!(identifier("nodot").is_none());
    }
}
