//! Choosing the challenge to answer for one authorization: the first type the target allows
//! that the CA offers usably, its key authorization and record name, and what a
//! dns-persist-01 challenge asks of its standing record.

use anyhow::{Context, anyhow};
use instant_acme::ChallengeType;

use super::InstantSession;
use crate::acme::{AcmeError, Challenge, ChallengeKind, Responder};

impl InstantSession {
    /// The challenge to answer for one pending authorization: the first type the responder
    /// allows that the CA offers usably; a type whose pre-check fails (a dns-persist-01 offer
    /// that is malformed, a standing record the CA would refuse) is given up and the next
    /// one tried.
    pub(super) async fn choose(
        &self,
        offer: &Offer<'_>,
        responder: &dyn Responder,
    ) -> Result<Challenge, AcmeError> {
        let which = format!("{}{}", if offer.wildcard { "*." } else { "" }, offer.ident);
        let mut excluded: Vec<ChallengeKind> = Vec::new();
        let mut reasons: Vec<String> = Vec::new();
        loop {
            let allowed: Vec<ChallengeKind> = responder
                .kinds()
                .iter()
                .copied()
                .filter(|k| !excluded.contains(k))
                .collect();
            let pick = match pick_challenge(&allowed, offer.challenges) {
                Ok(pick) => pick,
                // (An empty reason is a type given up quietly, as expected.)
                Err(why) if reasons.iter().all(String::is_empty) => {
                    return Err(AcmeError::Refused(format!("{why} for {which}")));
                }
                // Nothing else to try: why the types were given up is what counts.
                Err(_) => {
                    reasons.retain(|r| !r.is_empty());
                    return Err(AcmeError::Other(anyhow!("{}", reasons.join("; "))));
                }
            };
            for why in reasons
                .drain(..)
                .chain(pick.passed_over.iter().map(|w| format!("{which}: {w}")))
                .filter(|w| !w.is_empty())
            {
                tracing::warn!("{why}; using {} instead", pick.kind.name());
            }
            let kind = pick.kind;
            let persist = if kind == ChallengeKind::DnsPersist01 {
                match self.persist_wanted(offer.url, offer.ident).await {
                    Ok(w) => Some(w),
                    Err(e) => {
                        excluded.push(kind);
                        reasons.push(format!(
                            "{which}: the CA's dns-persist-01 challenge cannot be used: {e:#}"
                        ));
                        continue;
                    }
                }
            } else {
                None
            };
            let challenge = self.challenge(offer, pick, persist);
            let now = time::OffsetDateTime::from(self.http.clock().now()).unix_timestamp();
            if let Err(e) = responder.precheck(&challenge, now).await {
                excluded.push(kind);
                reasons.push(e.0);
                continue;
            }
            return Ok(challenge);
        }
    }

    /// What the responder is given for the challenge `pick` of `offer`: its key
    /// authorization and, for the DNS types, the name of its record.
    fn challenge(
        &self,
        offer: &Offer<'_>,
        pick: Pick,
        persist: Option<crate::acme::PersistWanted>,
    ) -> Challenge {
        let (kind, token, ident) = (pick.kind, pick.token, offer.ident);
        let record_name = match kind {
            ChallengeKind::Dns01 => format!("_acme-challenge.{ident}"),
            ChallengeKind::DnsAccount01 => {
                crate::acme::dns_account::record_name(self.account.id(), ident)
            }
            ChallengeKind::DnsPersist01 => crate::acme::persist::record_name(ident),
            _ => String::new(),
        };
        Challenge {
            kind,
            identifier: ident.to_owned(),
            wildcard: offer.wildcard,
            key_authorization: if token.is_empty() {
                String::new()
            } else {
                format!("{token}.{}", self.thumbprint)
            },
            token,
            record_name,
            persist,
        }
    }

    /// What the dns-persist-01 challenge of the authorization at `authz_url` asks of the
    /// record for `identifier`. instant-acme drops the fields it does not know (the issuer
    /// domain names, the account URI), so the authorization is fetched once more here and
    /// read as JSON; the directory is read too when the challenge names no account URI
    /// (draft -02's hashed form needs its `accountHashPrefix`).
    async fn persist_wanted(
        &self,
        authz_url: &str,
        identifier: &str,
    ) -> anyhow::Result<crate::acme::PersistWanted> {
        use crate::acme::persist;
        let mut nonce = None;
        let body = self.post_as_get_of(authz_url, &mut nonce, true).await?;
        let authz: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| anyhow!("the authorization is not valid JSON: {e}"))?;
        let challenge = authz["challenges"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["type"] == "dns-persist-01"))
            .ok_or_else(|| anyhow!("the authorization has no dns-persist-01 challenge"))?;
        let meta = if challenge.get("accounturi").is_some() {
            persist::PersistMeta::default()
        } else {
            let dir = self.http.get(&self.directory_url).await?;
            let dir: serde_json::Value = serde_json::from_slice(&dir).with_context(|| {
                format!("the directory at {} is not valid JSON", self.directory_url)
            })?;
            persist::PersistMeta::from_meta(&dir["meta"])
        };
        let offer = persist::offer(challenge, &meta).map_err(|e| anyhow!("{e}"))?;
        Ok(crate::acme::PersistWanted {
            account_uris: offer.account_uris(identifier, &self.thumbprint, self.account.id()),
            issuers: offer.issuers,
        })
    }
}

/// One pending authorization, as [`InstantSession::choose`] needs it.
pub(super) struct Offer<'a> {
    /// The authorization's URL.
    pub(super) url: &'a str,
    /// Its bare identifier (`*.` is `wildcard`).
    pub(super) ident: &'a str,
    pub(super) wildcard: bool,
    /// The challenges the CA offers.
    pub(super) challenges: &'a [instant_acme::Challenge],
}

/// instant-acme's name for a challenge type.
pub(super) fn instant_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::Dns01 => ChallengeType::Dns01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        ChallengeKind::DnsAccount01 => ChallengeType::Unknown("dns-account-01".to_owned()),
        ChallengeKind::DnsPersist01 => ChallengeType::Unknown("dns-persist-01".to_owned()),
    }
}

/// The challenge type chosen for one authorization, with its token.
#[derive(Debug, PartialEq, Eq)]
struct Pick {
    kind: ChallengeKind,
    token: String,
    /// Why each allowed type before it was passed over (the CA sent it unusable).
    passed_over: Vec<String>,
}

/// The name the CA gave a challenge type.
fn type_name(t: &ChallengeType) -> &str {
    match t {
        ChallengeType::Http01 => "http-01",
        ChallengeType::Dns01 => "dns-01",
        ChallengeType::TlsAlpn01 => "tls-alpn-01",
        ChallengeType::DeviceAttest01 => "device-attest-01",
        ChallengeType::Unknown(name) => name,
        _ => "an unnamed type",
    }
}

/// Chooses, for one authorization, the first allowed type (in the target's order) the CA
/// offers usably. The CA's list is read as untrusted and open-ended: types acmekeep does not
/// know and challenges without a token are simply not chosen (CAs began offering token-less
/// types such as dns-persist-01 to every client, and clients that choked on them broke), and
/// an allowed type whose token is malformed gives way to the next allowed type the CA offers.
/// The error says what was offered and what was allowed.
fn pick_challenge(
    allowed: &[ChallengeKind],
    offered: &[instant_acme::Challenge],
) -> Result<Pick, String> {
    let mut passed_over = Vec::new();
    for &kind in allowed {
        let Some(ch) = offered.iter().find(|c| c.r#type == instant_type(kind)) else {
            continue;
        };
        // dns-persist-01 has no token: the standing record is the proof.
        if kind == ChallengeKind::DnsPersist01 {
            return Ok(Pick {
                kind,
                token: String::new(),
                passed_over,
            });
        }
        if !valid_token(&ch.token) {
            passed_over.push(if ch.token.is_empty() {
                format!("the CA sent no token in its {} challenge", kind.name())
            } else {
                format!(
                    "the CA sent a malformed challenge token in its {} challenge",
                    kind.name()
                )
            });
            continue;
        }
        return Ok(Pick {
            kind,
            token: ch.token.clone(),
            passed_over,
        });
    }
    if !passed_over.is_empty() {
        return Err(passed_over.join("; "));
    }
    let mut names: Vec<&str> = offered.iter().map(|c| type_name(&c.r#type)).collect();
    names.dedup();
    Err(format!(
        "the CA offers no challenge type this target may use (offered: {}; allowed: {})",
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        },
        allowed
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// A token is used as a file name and URL path segment: it must be base64url (RFC 8555 §8.1).
fn valid_token(token: &str) -> bool {
    (16..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::{Pick, pick_challenge, valid_token};
    use crate::acme::ChallengeKind::{self, Dns01, Http01, TlsAlpn01};
    use crate::acme::error::MAX_PROBLEM_TEXT;
    use crate::acme::instant::describe_problem;

    /// A pending authorization as Pebble 2.10.1 answered it (recorded): five types in a
    /// shuffled order, dns-persist-01 without a token but with fields of its own; plus a
    /// made-up type with an unknown object inside, as a future CA might send.
    fn recorded_authz() -> instant_acme::AuthorizationState {
        serde_json::from_value(serde_json::json!({
            "status": "pending",
            "identifier": {"type": "dns", "value": "all-581468.example.test"},
            "challenges": [
                {"type": "dns-account-01", "url": "https://127.0.0.1:14400/chalZ/LwJt",
                 "token": "8s6KWlAoiM5DY6nt04Rxfx9ATIvOA43Q3wLiLN2QAHU", "status": "pending"},
                {"type": "tls-alpn-01", "url": "https://127.0.0.1:14400/chalZ/JwQe",
                 "token": "5158cYiPuSaTbYeqxABGrmH1duMY9-YiRMiR3oGRCi4", "status": "pending"},
                {"type": "dns-01", "url": "https://127.0.0.1:14400/chalZ/PbCW",
                 "token": "ivJ1Hq5q-FBWpPCujWLCbolIxpki5mr1HFirp_axwGk", "status": "pending"},
                {"type": "dns-persist-01", "url": "https://127.0.0.1:14400/chalZ/mjpq",
                 "status": "pending",
                 "accounturi": "https://127.0.0.1:14400/my-account/454a292520429d7f",
                 "issuer-domain-names": ["pebble.letsencrypt.org", "ca.pebble.example"]},
                {"type": "foo-99", "url": "https://127.0.0.1:14400/chalZ/foo",
                 "status": "pending", "weird": {"a": [1, {"b": null}]}},
                {"type": "http-01", "url": "https://127.0.0.1:14400/chalZ/TrUe",
                 "token": "hWuIA5iL3XYdCfSFGatUjkhx2u1o9mKktE49WO9lv_8", "status": "pending"}
            ],
            "expires": "2026-12-06T19:24:28Z",
            "futureField": {"x": 1}
        }))
        .expect("a recorded authorization deserializes")
    }

    fn pick(allowed: &[ChallengeKind], authz: &instant_acme::AuthorizationState) -> Pick {
        pick_challenge(allowed, &authz.challenges).expect("a challenge is chosen")
    }

    #[test]
    fn unknown_and_tokenless_challenge_types_leave_an_authorization_answerable() {
        let authz = recorded_authz();
        let p = pick(&[Http01, Dns01], &authz);
        assert_eq!(p.kind, Http01);
        assert_eq!(p.token, "hWuIA5iL3XYdCfSFGatUjkhx2u1o9mKktE49WO9lv_8");
        assert!(p.passed_over.is_empty());
        assert_eq!(pick(&[Dns01, Http01], &authz).kind, Dns01);
        assert_eq!(pick(&[TlsAlpn01], &authz).kind, TlsAlpn01);
    }

    #[test]
    fn an_allowed_type_sent_unusable_gives_way_to_the_next_allowed_one() {
        let mut authz = recorded_authz();
        for c in &mut authz.challenges {
            if c.r#type == instant_acme::ChallengeType::Http01 {
                c.token = "../../etc/passwd-aaaaaaaaaaa".into();
            }
        }
        let p = pick(&[Http01, Dns01], &authz);
        assert_eq!(p.kind, Dns01);
        assert_eq!(
            p.passed_over,
            ["the CA sent a malformed challenge token in its http-01 challenge"]
        );
        for c in &mut authz.challenges {
            c.token.clear();
        }
        let err = pick_challenge(&[Http01, Dns01], &authz.challenges).expect_err("no token");
        assert_eq!(
            err,
            "the CA sent no token in its http-01 challenge; \
             the CA sent no token in its dns-01 challenge"
        );
    }

    #[test]
    fn no_allowed_type_offered_names_what_was_offered() {
        let mut authz = recorded_authz();
        authz
            .challenges
            .retain(|c| c.r#type != instant_acme::ChallengeType::TlsAlpn01);
        let err = pick_challenge(&[TlsAlpn01], &authz.challenges).expect_err("none allowed");
        assert_eq!(
            err,
            "the CA offers no challenge type this target may use (offered: dns-account-01, \
             dns-01, dns-persist-01, foo-99, http-01; allowed: tls-alpn-01)"
        );
    }

    #[test]
    fn a_long_problem_detail_in_another_script_is_cut_between_characters() {
        // String::truncate(1000) panicked when byte 1000 fell inside a character: any CA
        // answering with a long non-ASCII detail aborted the run.
        let p: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:malformed",
            "detail": "é".repeat(2000),
        }))
        .expect("problem");
        let text = describe_problem(&p);
        assert_eq!(text.chars().count(), MAX_PROBLEM_TEXT);
        assert!(text.starts_with("malformed: éé"), "{text}");
    }

    #[test]
    fn tokens_are_base64url_only() {
        assert!(valid_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        for bad in [
            "",
            "short",
            "../../../../etc/passwd-aaaaaaaaa",
            "a/b-cccccccccccccccc",
            "a.b-cccccccccccccccccc",
            "ä-ccccccccccccccccccc",
        ] {
            assert!(!valid_token(bad), "{bad}");
        }
    }
}
