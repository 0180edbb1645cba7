//! The part of the ARI proxy ([`super::AriProxy`]) that offers challenge types Debian's
//! Pebble 2.4 does not know: dns-account-01 (draft-ietf-acme-dns-account-label) and
//! dns-persist-01 (draft-ietf-acme-dns-persist-01), validated with the drafts' rules against
//! the DNS server the client publishes to (a test's Knot), while Pebble's own state machine
//! and validation stay real.
//!
//! - Authorizations: next to Pebble's dns-01 challenge, a `dns-account-01` copy (same URL and
//!   token) and a `dns-persist-01` one (same URL, no token, `accounturi` = the requesting
//!   account's URL, `issuer-domain-names`) are offered, as Pebble 2.10 offers them; their
//!   status and error mirror the dns-01 challenge's.
//! - A POST to such a challenge URL: the double reads the client's record in the client's
//!   DNS — `_<account label>._acme-challenge.<name>` (copied as it is) or the standing
//!   `_validation-persist.<name>` record (judged by the draft's rules; when usable, the dns-01
//!   value is computed from the token and the account key's thumbprint, which the double took
//!   from the account's newAccount request) — and puts the value at
//!   `_acme-challenge.<name>` in challtestsrv, Pebble's DNS. Pebble then validates its dns-01
//!   challenge for real; with no usable record nothing is copied and Pebble fails it.
//! - Every validation is logged ([`Validation`]).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// What the double offers, and where the client's records are read.
#[derive(Debug, Clone, Default)]
pub struct ChallengeOffer {
    /// The DNS server the client publishes to (read over UDP, non-recursive).
    pub client_dns: Option<SocketAddr>,
    /// Offer dns-account-01.
    pub dns_account: bool,
    /// Offer dns-persist-01 with these issuer domain names (empty: not offered).
    pub persist_issuers: Vec<String>,
    /// Offer only the added types (Pebble's own are removed from authorizations).
    pub only_added: bool,
    /// The TSIG key of `client_dns` when that server is Pebble's DNS too: values are then
    /// put at `_acme-challenge.<name>` there by RFC 2136 (several at once, as real DNS holds
    /// them) instead of into challtestsrv.
    pub pebble_dns_key: Option<super::KnotKey>,
}

/// One validation the double made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// `dns-account-01` or `dns-persist-01`; `dns-01` when neither record was found.
    pub kind: String,
    /// The authorization's identifier.
    pub name: String,
    /// The record name read.
    pub record: String,
    /// The TXT values found there.
    pub found: Vec<String>,
    /// Whether the double passed it on to Pebble as valid.
    pub usable: bool,
}

/// The double's state, kept inside the proxy's.
#[derive(Debug, Default)]
pub struct DoubleState {
    pub offer: ChallengeOffer,
    /// Account URL → RFC 7638 thumbprint of its key (from newAccount requests).
    pub thumbprints: HashMap<String, String>,
    /// dns-01 challenge path → (identifier, wildcard, token).
    pub challenges: HashMap<String, (String, bool, String)>,
    pub validations: Vec<Validation>,
}

/// The protected header of a flattened JSON JWS (`{}` when it is not one).
pub fn jws_protected(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|jws| {
            let p = jws["protected"].as_str()?.to_owned();
            data_encoding::BASE64URL_NOPAD.decode(p.as_bytes()).ok()
        })
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .unwrap_or_else(|| serde_json::json!({}))
}

/// RFC 7638 thumbprint of a JWK (EC or RSA).
pub fn thumbprint(jwk: &serde_json::Value) -> Option<String> {
    let s = |k: &str| jwk[k].as_str().map(str::to_owned);
    let canonical = match jwk["kty"].as_str()? {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv")?,
            s("x")?,
            s("y")?
        ),
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e")?, s("n")?),
        _ => return None,
    };
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    Some(data_encoding::BASE64URL_NOPAD.encode(d.as_ref()))
}

/// `_<label>` of draft-ietf-acme-dns-account-label for `account_url`.
pub fn account_label(account_url: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, account_url.as_bytes());
    format!(
        "_{}",
        data_encoding::BASE32
            .encode(&d.as_ref()[..10])
            .to_ascii_lowercase()
    )
}

/// The dns-01 TXT value for `token` and account key `thumbprint`.
pub fn dns01_value(token: &str, thumbprint: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{token}.{thumbprint}").as_bytes(),
    );
    data_encoding::BASE64URL_NOPAD.encode(d.as_ref())
}

/// Adds TXT `value` at `name` on `server` by RFC 2136, signed with `key`.
pub fn publish_in_knot(
    server: SocketAddr,
    key: &super::KnotKey,
    name: &str,
    value: &str,
) -> std::io::Result<()> {
    use acmekeep::challenge::dns::{
        KeySource, ResolverConfig, Rfc2136Config, TsigAlgorithm, TsigKey, publish,
    };
    let other = |e: anyhow::Error| std::io::Error::other(format!("{e:#}"));
    let tsig = TsigKey::new(
        &key.name,
        TsigAlgorithm::parse(&key.algorithm).map_err(other)?,
        &key.secret,
    )
    .map_err(other)?;
    let mut resolver = ResolverConfig::with_server(server);
    resolver.authoritative_port = server.port();
    resolver.timeout = Duration::from_secs(3);
    let mut cfg = Rfc2136Config::new(server, KeySource::Inline(tsig), resolver);
    cfg.timeout = Duration::from_secs(5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(publish(&cfg, name, value)).map_err(other)?;
    Ok(())
}

/// The TXT values at `name` on `server` (strings of a record joined), sorted; empty on no
/// answer.
pub fn txt_at(server: SocketAddr, name: &str) -> Vec<String> {
    let Ok(qname) = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))) else {
        return Vec::new();
    };
    let mut msg = Message::query();
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(qname, RecordType::TXT));
    let answer = (|| {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        sock.connect(server).ok()?;
        sock.send(&msg.to_vec().ok()?).ok()?;
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).ok()?;
        Message::from_vec(&buf[..n]).ok()
    })();
    let mut out: Vec<String> = answer
        .map(|m| {
            m.answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Whether one of `values` authorizes `account_url` by draft-ietf-acme-dns-persist-01 (an
/// independent reading of the draft, not acmekeep's): issuer one of `issuers`, tags
/// case-insensitive and not repeated, `accounturi` equal, `policy=wildcard` for a wildcard,
/// `persistUntil` not past.
pub fn persist_usable(
    values: &[String],
    issuers: &[String],
    account_url: &str,
    wildcard: bool,
    now_unix: i64,
) -> bool {
    values.iter().any(|v| {
        let mut parts = v.split(';');
        let issuer = parts.next().unwrap_or_default().trim_matches([' ', '\t']);
        if !issuers.iter().any(|i| i == issuer) {
            return false;
        }
        let mut tags: HashMap<String, String> = HashMap::new();
        for p in parts {
            let p = p.trim_matches([' ', '\t']);
            let Some((k, val)) = p.split_once('=') else {
                return false;
            };
            if k.is_empty()
                || tags
                    .insert(k.to_ascii_lowercase(), val.to_owned())
                    .is_some()
            {
                return false;
            }
        }
        tags.get("accounturi").map(String::as_str) == Some(account_url)
            && (!wildcard
                || tags
                    .get("policy")
                    .is_some_and(|p| p.eq_ignore_ascii_case("wildcard")))
            && tags
                .get("persistuntil")
                .is_none_or(|u| u.parse::<i64>().is_ok_and(|u| u >= now_unix))
    })
}

/// Adds the offered types to an authorization `json` (asked for by account `kid`).
pub fn relabel_authz(st: &mut DoubleState, json: &mut serde_json::Value, kid: Option<&str>) {
    let ident = json["identifier"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let wildcard = json["wildcard"].as_bool().unwrap_or(false);
    let Some(list) = json["challenges"].as_array_mut() else {
        return;
    };
    let Some(dns01) = list.iter().find(|c| c["type"] == "dns-01").cloned() else {
        return;
    };
    let url = dns01["url"].as_str().unwrap_or_default().to_owned();
    let path = url::Url::parse(&url)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let token = dns01["token"].as_str().unwrap_or_default().to_owned();
    st.challenges.insert(path, (ident, wildcard, token));
    let offer = st.offer.clone();
    if offer.only_added {
        list.clear();
    }
    if offer.dns_account {
        let mut c = dns01.clone();
        c["type"] = "dns-account-01".into();
        list.push(c);
    }
    if !offer.persist_issuers.is_empty() {
        let mut c = dns01.clone();
        c["type"] = "dns-persist-01".into();
        if let Some(o) = c.as_object_mut() {
            o.remove("token");
        }
        c["issuer-domain-names"] = offer.persist_issuers.clone().into();
        if let Some(kid) = kid {
            c["accounturi"] = kid.into();
        }
        list.push(c);
    }
}

/// What the double made of a POST to a challenge path.
#[derive(Default)]
pub struct ChallengePost {
    /// The record read; counted only once Pebble accepts the POST (a POST refused for a bad
    /// nonce is sent again by the client and is the same validation).
    pub validation: Option<Validation>,
    /// The dns-01 values to put into Pebble's DNS at `_acme-challenge.<name>`.
    pub copy: Option<(String, Vec<String>)>,
}

/// Before a POST to a challenge path is forwarded: reads the client's record and, when it is
/// usable, says which dns-01 values to put into Pebble's DNS.
pub fn before_challenge_post(st: &DoubleState, path: &str, kid: &str) -> ChallengePost {
    let mut post = ChallengePost::default();
    let Some((name, wildcard, token)) = st.challenges.get(path).cloned() else {
        return post;
    };
    let Some(server) = st.offer.client_dns else {
        return post;
    };
    if st.offer.dns_account {
        let record = format!("{}._acme-challenge.{name}", account_label(kid));
        let found = txt_at(server, &record);
        if !found.is_empty() {
            post.validation = Some(Validation {
                kind: "dns-account-01".into(),
                name: name.clone(),
                record,
                found: found.clone(),
                usable: true,
            });
            post.copy = Some((name, found));
            return post;
        }
    }
    if !st.offer.persist_issuers.is_empty() {
        let record = format!("_validation-persist.{name}");
        let found = txt_at(server, &record);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let usable = persist_usable(&found, &st.offer.persist_issuers, kid, wildcard, now);
        post.validation = Some(Validation {
            kind: "dns-persist-01".into(),
            name: name.clone(),
            record,
            found,
            usable,
        });
        if let Some(thumb) = st.thumbprints.get(kid).filter(|_| usable) {
            post.copy = Some((name, vec![dns01_value(&token, thumb)]));
        }
    }
    post
}
