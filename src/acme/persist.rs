//! dns-persist-01 (draft-ietf-acme-dns-persist): one standing TXT record at
//! `_validation-persist.<name>` authorises an account for a name, with no DNS change per order.
//!
//! Everything here is pure: reading what the CA offers ([`offer`]), computing the `accounturi`
//! the CA expects, building the record value ([`Record`]), and judging the TXT values found at
//! the name as the CA will ([`judge`]), with the time passed in.
//!
//! Two drafts are in use and they disagree, so nothing is hard-coded to one of them; the CA's
//! own objects say which applies:
//!
//! - draft -01 (Pebble 2.10, Let's Encrypt staging in 2026): the challenge carries
//!   `issuer-domain-names` and `accounturi`, and the record's `accounturi` is the account URL
//!   (compared as a string with the challenge's `accounturi`).
//! - draft -02: the challenge carries `issuerDomainNames` only; the directory's `meta` gives
//!   `issuerDomainNames` and `accountHashPrefix`, and the record's `accounturi` is
//!   `<prefix>sha-256/<base64url(SHA-256(len(domain) || domain || thumbprint || account URL))>`,
//!   with the domain `*` for one value that serves every name.
//!
//! The judge mirrors the CA's rules: the value is split on `;`; the first part (trimmed of
//! spaces and tabs) is the issuer, and a record for an issuer the CA does not accept is not
//! its business; tags are case-insensitive and may not repeat; values are printable ASCII
//! without spaces or `;`; `policy=wildcard` (any case) is needed for a wildcard; a
//! `persistUntil` that is not a decimal integer is malformed, one in the past refuses. Any
//! record that passes is enough; otherwise a malformed record of ours outranks a mismatch.

use std::fmt;

use serde_json::Value;

/// The label in front of the name that holds the record.
pub const RECORD_LABEL: &str = "_validation-persist";
/// Most issuer domain names a challenge may list (the drafts' bound).
pub const MAX_ISSUERS: usize = 10;
/// Longest record value acmekeep builds or reads (a DNS TXT record holds 64 KiB, but a value
/// this long is no record of ours).
pub const MAX_VALUE: usize = 2048;
/// TXT values at one name judged at most (the rest are ignored).
pub const MAX_RECORDS: usize = 64;

/// `_validation-persist.<base>` for an identifier (`*.` of a wildcard removed).
pub fn record_name(identifier: &str) -> String {
    let base = identifier.strip_prefix("*.").unwrap_or(identifier);
    format!("{RECORD_LABEL}.{base}")
}

/// The directory's fields that concern dns-persist-01 (all optional; read leniently).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistMeta {
    /// `meta.caaIdentities` (RFC 8555 §7.1.1).
    pub caa_identities: Vec<String>,
    /// `meta.issuerDomainNames` (draft -02).
    pub issuer_domain_names: Vec<String>,
    /// `meta.accountHashPrefix` (draft -02).
    pub account_hash_prefix: Option<String>,
}

impl PersistMeta {
    /// Reads the fields from a directory's `meta` object; a field of the wrong shape is left
    /// out (an unknown or odd field must never make the directory unusable).
    pub fn from_meta(meta: &Value) -> Self {
        let names = |key: &str| -> Vec<String> {
            meta.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .take(MAX_ISSUERS * 4)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            caa_identities: names("caaIdentities"),
            issuer_domain_names: names("issuerDomainNames"),
            account_hash_prefix: meta
                .get("accountHashPrefix")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty() && p.len() <= 512 && printable(p))
                .map(str::to_owned),
        }
    }

    /// The issuer to print a record for before any challenge is at hand: the first of
    /// `issuerDomainNames`, else of `caaIdentities` (the drafts' pre-provisioning advice).
    pub fn default_issuer(&self) -> Option<&str> {
        self.issuer_domain_names
            .iter()
            .chain(&self.caa_identities)
            .map(String::as_str)
            .find(|n| valid_issuer(n))
    }

    /// The form the record's `accounturi` takes at this CA when no challenge says otherwise.
    pub fn form(&self) -> AccountUriForm {
        match &self.account_hash_prefix {
            Some(prefix) => AccountUriForm::Hashed {
                prefix: prefix.clone(),
            },
            None => AccountUriForm::Plain { given: None },
        }
    }
}

/// What goes into the record's `accounturi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountUriForm {
    /// Draft -01: the account URL; `given` is the challenge's own `accounturi` when it
    /// carries one (the exact string the CA compares with).
    Plain { given: Option<String> },
    /// Draft -02: a hash of the domain, the account key's thumbprint and the account URL,
    /// after the directory's `accountHashPrefix`.
    Hashed { prefix: String },
}

/// What a dns-persist-01 challenge offers: the issuers the CA accepts and the form of the
/// account URI it expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The accepted issuer domain names, in the CA's order.
    pub issuers: Vec<String>,
    /// How the record names the account.
    pub form: AccountUriForm,
}

/// Reads a dns-persist-01 challenge object (either draft's field names) with the directory's
/// `meta`. An error says what is wrong with the offer; the caller then treats the challenge
/// as not offered (the drafts say a client MUST reject such an offer).
pub fn offer(challenge: &Value, meta: &PersistMeta) -> Result<Offer, String> {
    let (field, list) = match (
        challenge.get("issuerDomainNames"),
        challenge.get("issuer-domain-names"),
    ) {
        (Some(l), _) => ("issuerDomainNames", l),
        (None, Some(l)) => ("issuer-domain-names", l),
        (None, None) => return Err("the challenge names no issuer domain names".to_owned()),
    };
    let Some(list) = list.as_array() else {
        return Err(format!("its {field} is not a list"));
    };
    if list.is_empty() || list.len() > MAX_ISSUERS {
        return Err(format!(
            "its {field} lists {} names (1 to {MAX_ISSUERS} are allowed)",
            list.len()
        ));
    }
    let mut issuers = Vec::with_capacity(list.len());
    for v in list {
        match v.as_str() {
            Some(n) if valid_issuer(n) => issuers.push(n.to_owned()),
            Some(n) => {
                return Err(format!(
                    "its {field} entry {:?} is not a lowercase domain name without a trailing dot",
                    shorten(n)
                ));
            }
            None => return Err(format!("its {field} has an entry that is not a string")),
        }
    }
    let given = match challenge.get("accounturi") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 && value_chars(s) => {
            Some(s.clone())
        }
        Some(_) => return Err("its accounturi is not a usable URI".to_owned()),
    };
    let form = match given {
        Some(uri) => AccountUriForm::Plain { given: Some(uri) },
        None => meta.form(),
    };
    if matches!(form, AccountUriForm::Hashed { .. }) {
        // Draft -02's consistency rules, which a client must check.
        if let Some(missing) = meta
            .issuer_domain_names
            .iter()
            .find(|d| !issuers.contains(d))
        {
            return Err(format!(
                "the directory's issuerDomainNames has {missing:?}, which the challenge does not list"
            ));
        }
        if !meta.caa_identities.is_empty()
            && let Some(extra) = issuers.iter().find(|i| !meta.caa_identities.contains(i))
        {
            return Err(format!(
                "the challenge lists {extra:?}, which is not among the directory's caaIdentities"
            ));
        }
    }
    Ok(Offer { issuers, form })
}

impl Offer {
    /// The `accounturi` values the CA accepts from this account for `domain` (the record's
    /// owner without `_validation-persist.`): the one to publish first.
    pub fn account_uris(&self, domain: &str, thumbprint: &str, account_url: &str) -> Vec<String> {
        self.form.account_uris(domain, thumbprint, account_url)
    }
}

impl AccountUriForm {
    /// The `accounturi` values that name this account for `domain` (the first is the one to
    /// publish; a -02 CA also accepts the any-domain hash).
    pub fn account_uris(&self, domain: &str, thumbprint: &str, account_url: &str) -> Vec<String> {
        match self {
            Self::Plain { given } => vec![given.clone().unwrap_or_else(|| account_url.to_owned())],
            Self::Hashed { prefix } => vec![
                hashed_account_uri(prefix, Some(domain), thumbprint, account_url),
                hashed_account_uri(prefix, None, thumbprint, account_url),
            ],
        }
    }

    /// The `accounturi` to publish for `domain`; `any_domain` (-02 only) picks the value that
    /// serves every name.
    pub fn account_uri(
        &self,
        domain: &str,
        thumbprint: &str,
        account_url: &str,
        any_domain: bool,
    ) -> String {
        let mut all = self.account_uris(domain, thumbprint, account_url);
        if any_domain && all.len() > 1 {
            all.swap_remove(1)
        } else {
            all.swap_remove(0)
        }
    }

    /// Which draft this form is, for messages.
    pub fn draft(&self) -> &'static str {
        match self {
            Self::Plain { .. } => "draft -01",
            Self::Hashed { .. } => "draft -02",
        }
    }
}

/// Draft -02's `accounturi`: `<prefix>sha-256/<base64url(SHA-256(len || domain || thumbprint
/// || account URL))>`, where `domain` is lowercase without a trailing dot, and `None` stands
/// for the any-domain form (the one octet `*`).
pub fn hashed_account_uri(
    prefix: &str,
    domain: Option<&str>,
    thumbprint: &str,
    account_url: &str,
) -> String {
    let domain = domain
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_else(|| "*".to_owned());
    let mut input = Vec::with_capacity(1 + domain.len() + thumbprint.len() + account_url.len());
    // A DNS name is at most 253 octets, so its length fits the one octet the draft gives it.
    input.push(u8::try_from(domain.len()).unwrap_or(u8::MAX));
    input.extend_from_slice(domain.as_bytes());
    input.extend_from_slice(thumbprint.as_bytes());
    input.extend_from_slice(account_url.as_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    format!(
        "{prefix}sha-256/{}",
        data_encoding::BASE64URL_NOPAD.encode(digest.as_ref())
    )
}

/// A record to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The issuer domain name (one the CA accepts).
    pub issuer: String,
    /// The `accounturi` value.
    pub account_uri: String,
    /// `policy=wildcard`: the record also authorises the name's wildcard and subdomains.
    pub wildcard: bool,
    /// `persistUntil`: Unix seconds after which the CA no longer accepts it.
    pub persist_until: Option<i64>,
}

impl Record {
    /// The TXT value: `<issuer>; accounturi=<uri>[; policy=wildcard][; persistUntil=<secs>]`.
    /// Refused when a part could not be read back by the CA (a value with spaces or `;`).
    pub fn value(&self) -> Result<String, String> {
        if !valid_issuer(&self.issuer) {
            return Err(format!(
                "issuer {:?} is not a lowercase domain name",
                shorten(&self.issuer)
            ));
        }
        if self.account_uri.is_empty() || !value_chars(&self.account_uri) {
            return Err(format!(
                "account URI {:?} cannot be written in a record (spaces, ';' or non-ASCII)",
                shorten(&self.account_uri)
            ));
        }
        let mut v = format!("{}; accounturi={}", self.issuer, self.account_uri);
        if self.wildcard {
            v.push_str("; policy=wildcard");
        }
        if let Some(t) = self.persist_until {
            v.push_str(&format!("; persistUntil={t}"));
        }
        if v.len() > MAX_VALUE {
            return Err(format!("the record would be {} octets long", v.len()));
        }
        Ok(v)
    }
}

/// A record value read as the CA reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueValue {
    /// The issuer domain name (trimmed, as written).
    pub issuer: String,
    /// `accounturi`, if present.
    pub account_uri: Option<String>,
    /// `policy=wildcard` (any case).
    pub wildcard: bool,
    /// `persistUntil`, if present.
    pub persist_until: Option<i64>,
}

/// The issuer part of a value: what precedes the first `;`, trimmed of spaces and tabs.
pub fn issuer_of(value: &str) -> &str {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim_matches([' ', '\t'])
}

/// Parses a TXT value's parameters (the CA's rules; see the module docs). The error is the
/// syntax problem, worded for an operator.
pub fn parse_value(value: &str) -> Result<IssueValue, String> {
    let mut parts = value.split(';');
    let issuer = parts.next().unwrap_or("").trim_matches([' ', '\t']);
    if issuer.is_empty() {
        return Err("no issuer domain name before the first ';'".to_owned());
    }
    let mut out = IssueValue {
        issuer: issuer.to_owned(),
        account_uri: None,
        wildcard: false,
        persist_until: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for param in parts {
        let param = param.trim_matches([' ', '\t']);
        if param.is_empty() {
            return Err("an empty parameter or a trailing ';'".to_owned());
        }
        let Some((tag, val)) = param.split_once('=') else {
            return Err(format!("parameter {:?} is not tag=value", shorten(param)));
        };
        let (tag, val) = (tag.trim_matches([' ', '\t']), val.trim_matches([' ', '\t']));
        if tag.is_empty() {
            return Err(format!("parameter {:?} has an empty tag", shorten(param)));
        }
        let lower = tag.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(format!("parameter {tag:?} appears twice"));
        }
        seen.push(lower.clone());
        if !value_chars(val) {
            return Err(format!(
                "the value of {tag:?} has spaces, control or non-ASCII characters"
            ));
        }
        match lower.as_str() {
            "accounturi" if val.is_empty() => {
                return Err("accounturi is empty".to_owned());
            }
            "accounturi" => out.account_uri = Some(val.to_owned()),
            "policy" => out.wildcard = val.eq_ignore_ascii_case("wildcard"),
            "persistuntil" => {
                out.persist_until = Some(val.parse::<i64>().map_err(|_| {
                    format!(
                        "persistUntil {:?} is not a Unix time in seconds",
                        shorten(val)
                    )
                })?);
            }
            _ => {}
        }
    }
    if out.account_uri.is_none() {
        return Err("it has no accounturi".to_owned());
    }
    Ok(out)
}

/// Why the record at a name will not do for this account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersistProblem {
    /// No TXT record at the name (`nxdomain`: the name does not exist at all).
    NoRecord { nxdomain: bool },
    /// Records only for issuers this CA does not accept.
    OnlyOtherIssuers {
        found: Vec<String>,
        accepted: Vec<String>,
    },
    /// A record for this CA that names another account.
    OtherAccount { found: Vec<String>, ours: String },
    /// Ours, but without `policy=wildcard`, and a wildcard is wanted.
    NoWildcardPolicy,
    /// Ours, but its `persistUntil` has passed (or passes before the CA can look).
    Expired { until: i64 },
    /// A record for this CA that it cannot read.
    Malformed { why: String },
}

impl PersistProblem {
    /// Whether the CA would answer `malformed` rather than `unauthorized`.
    pub fn is_malformed(&self) -> bool {
        matches!(self, Self::Malformed { .. })
    }
}

impl fmt::Display for PersistProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRecord { nxdomain: true } => f.write_str("the name does not exist"),
            Self::NoRecord { nxdomain: false } => f.write_str("it has no TXT record"),
            Self::OnlyOtherIssuers { found, accepted } => write!(
                f,
                "its records are for {} but this CA accepts only {}",
                quoted(found),
                quoted(accepted)
            ),
            Self::OtherAccount { found, ours } => write!(
                f,
                "its accounturi is {} but this account is {ours}",
                found.join(", ")
            ),
            Self::NoWildcardPolicy => {
                f.write_str("it has no policy=wildcard, which a wildcard certificate needs")
            }
            Self::Expired { until } => write!(
                f,
                "its persistUntil {} has passed",
                time::OffsetDateTime::from_unix_timestamp(*until)
                    .ok()
                    .and_then(|t| t
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok())
                    .unwrap_or_else(|| until.to_string())
            ),
            Self::Malformed { why } => write!(f, "the CA cannot read it: {why}"),
        }
    }
}

/// What is asked of a record: the CA's accepted issuers, the `accounturi` values that name
/// this account, whether a wildcard is wanted, and when the CA will look (Unix seconds).
#[derive(Clone, Copy, Debug)]
pub struct Wanted<'a> {
    pub issuers: &'a [String],
    pub account_uris: &'a [String],
    pub wildcard: bool,
    pub at: i64,
}

/// Judges the TXT values at `_validation-persist.<name>` as the CA will: `Ok` with the
/// `persistUntil` of the record that passes (the latest, if several do), or the problem.
/// `values` are the TXT records' strings, each record's strings already joined;
/// `nxdomain` says the name does not exist.
pub fn judge(
    values: &[String],
    nxdomain: bool,
    w: Wanted<'_>,
) -> Result<Option<i64>, PersistProblem> {
    if values.is_empty() {
        return Err(PersistProblem::NoRecord { nxdomain });
    }
    let mut good: Option<Option<i64>> = None;
    let mut malformed: Vec<String> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    let mut foreign_accounts: Vec<String> = Vec::new();
    let mut no_policy = false;
    let mut expired: Option<i64> = None;
    for v in values.iter().take(MAX_RECORDS) {
        let issuer = issuer_of(v);
        if !w.issuers.iter().any(|i| i == issuer) {
            if !issuer.is_empty() && !others.iter().any(|o| o == issuer) {
                others.push(shorten(issuer));
            }
            continue;
        }
        let parsed = match parse_value(v) {
            Ok(p) => p,
            Err(why) => {
                malformed.push(format!("{issuer}: {why}"));
                continue;
            }
        };
        let uri = parsed.account_uri.unwrap_or_default();
        if !w.account_uris.contains(&uri) {
            if !foreign_accounts.contains(&uri) {
                foreign_accounts.push(shorten(&uri));
            }
            continue;
        }
        if w.wildcard && !parsed.wildcard {
            no_policy = true;
            continue;
        }
        match parsed.persist_until {
            Some(t) if t < w.at => {
                expired = Some(expired.map_or(t, |e: i64| e.max(t)));
            }
            until => {
                // Several good records: the one lasting longest is what the CA can use.
                // `Some(None)`: a good record without an end.
                good = Some(match (good, until) {
                    (Some(None), _) | (_, None) => None,
                    (Some(Some(a)), Some(b)) => Some(a.max(b)),
                    (None, Some(b)) => Some(b),
                });
            }
        }
    }
    if let Some(until) = good {
        return Ok(until);
    }
    if !malformed.is_empty() {
        return Err(PersistProblem::Malformed {
            why: malformed.join("; "),
        });
    }
    if let Some(until) = expired {
        return Err(PersistProblem::Expired { until });
    }
    if no_policy {
        return Err(PersistProblem::NoWildcardPolicy);
    }
    if !foreign_accounts.is_empty() {
        return Err(PersistProblem::OtherAccount {
            found: foreign_accounts,
            ours: w.account_uris.first().cloned().unwrap_or_default(),
        });
    }
    Err(PersistProblem::OnlyOtherIssuers {
        found: others,
        accepted: w.issuers.to_vec(),
    })
}

/// An issuer domain name as the drafts want it: lowercase A-labels, no trailing dot, at most
/// 253 octets.
pub fn valid_issuer(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Characters a parameter value may hold: printable ASCII without space and `;`.
fn value_chars(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, 0x21..=0x3A | 0x3C..=0x7E))
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x21..=0x7E).contains(&b))
}

/// At most 100 characters of untrusted text, for messages.
fn shorten(s: &str) -> String {
    let cut: String = s.chars().filter(|c| !c.is_control()).take(100).collect();
    if cut.len() < s.len() && s.chars().count() > 100 {
        format!("{cut}…")
    } else {
        cut
    }
}

fn quoted(list: &[String]) -> String {
    if list.is_empty() {
        return "no issuer".to_owned();
    }
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ACCT: &str = "https://127.0.0.1:14400/my-account/454a292520429d7f";
    const ISSUERS: [&str; 2] = ["pebble.letsencrypt.org", "ca.pebble.example"];

    fn issuers() -> Vec<String> {
        ISSUERS.iter().map(|s| (*s).to_owned()).collect()
    }

    fn judge_at(values: &[&str], wildcard: bool, at: i64) -> Result<Option<i64>, PersistProblem> {
        let values: Vec<String> = values.iter().map(|s| (*s).to_owned()).collect();
        judge(
            &values,
            false,
            Wanted {
                issuers: &issuers(),
                account_uris: &[ACCT.to_owned()],
                wildcard,
                at,
            },
        )
    }

    #[test]
    fn draft_02_hash_vectors() {
        let thumb = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        let url = "https://ca.example/acct/123";
        assert_eq!(
            hashed_account_uri("", Some("example.com"), thumb, url),
            "sha-256/5SQm7n6tPh2-PlLbCKGnViTXX5z19SCN4cPGQHSk-kw"
        );
        assert_eq!(
            hashed_account_uri("", None, thumb, url),
            "sha-256/NpDnSwUthQK8zCgFdefYxAdAVPnygMLbs9US6oO-5ug"
        );
        assert_eq!(
            hashed_account_uri(
                "https://ca.example/account-hash/",
                Some("Example.COM."),
                thumb,
                url
            ),
            "https://ca.example/account-hash/sha-256/5SQm7n6tPh2-PlLbCKGnViTXX5z19SCN4cPGQHSk-kw"
        );
    }

    #[test]
    fn offers_of_both_drafts_are_read() {
        // Draft -01 as Pebble 2.10.1 sends it.
        let c01 = json!({
            "type": "dns-persist-01", "url": "https://ca/chalZ/1", "status": "pending",
            "accounturi": ACCT, "issuer-domain-names": ISSUERS,
        });
        let o = offer(&c01, &PersistMeta::default()).expect("-01");
        assert_eq!(o.issuers, issuers());
        assert_eq!(
            o.form,
            AccountUriForm::Plain {
                given: Some(ACCT.to_owned())
            }
        );
        assert_eq!(o.account_uris("a.example", "t", "other"), vec![ACCT]);

        // Draft -02: camelCase, no accounturi, the prefix from the directory.
        let meta = PersistMeta::from_meta(&json!({
            "caaIdentities": ISSUERS,
            "issuerDomainNames": ["pebble.letsencrypt.org"],
            "accountHashPrefix": "https://ca/account-hash/",
            "exoticFeature": {"x": [1]},
        }));
        let c02 = json!({"type": "dns-persist-01", "url": "u", "status": "pending",
                         "issuerDomainNames": ISSUERS});
        let o = offer(&c02, &meta).expect("-02");
        let uris = o.account_uris("a.example", "thumb", ACCT);
        assert_eq!(uris.len(), 2);
        assert!(uris[0].starts_with("https://ca/account-hash/sha-256/"));
        assert_ne!(uris[0], uris[1]);
        assert_eq!(
            o.form.account_uri("a.example", "thumb", ACCT, true),
            uris[1]
        );

        // -01 without accounturi: the account URL.
        let bare = json!({"issuer-domain-names": ["ca.example"]});
        let o = offer(&bare, &PersistMeta::default()).expect("bare");
        assert_eq!(o.account_uris("a", "t", ACCT), vec![ACCT]);
    }

    #[test]
    fn unusable_offers_are_refused_with_the_reason() {
        let meta02 = PersistMeta {
            caa_identities: vec!["ca.example".into()],
            issuer_domain_names: vec!["ca.example".into()],
            account_hash_prefix: Some("https://ca/h/".into()),
        };
        for (challenge, meta, why) in [
            (json!({}), PersistMeta::default(), "no issuer"),
            (
                json!({"issuerDomainNames": []}),
                PersistMeta::default(),
                "0 names",
            ),
            (
                json!({"issuerDomainNames": (0..11).map(|i| format!("c{i}.example")).collect::<Vec<_>>()}),
                PersistMeta::default(),
                "11 names",
            ),
            (
                json!({"issuerDomainNames": ["CA.example"]}),
                PersistMeta::default(),
                "lowercase",
            ),
            (
                json!({"issuerDomainNames": ["ca.example."]}),
                PersistMeta::default(),
                "lowercase",
            ),
            (
                json!({"issuerDomainNames": "ca.example"}),
                PersistMeta::default(),
                "not a list",
            ),
            (
                json!({"issuerDomainNames": [7]}),
                PersistMeta::default(),
                "not a string",
            ),
            (
                json!({"issuer-domain-names": ["ca.example"], "accounturi": "a b"}),
                PersistMeta::default(),
                "accounturi",
            ),
            // -02: the directory's names must be in the challenge's list ...
            (
                json!({"issuerDomainNames": ["other.example"]}),
                meta02.clone(),
                "does not list",
            ),
            // ... and the challenge's within caaIdentities.
            (
                json!({"issuerDomainNames": ["ca.example", "other.example"]}),
                meta02.clone(),
                "caaIdentities",
            ),
        ] {
            let e = offer(&challenge, &meta).expect_err(why);
            assert!(e.contains(why), "{e} should say {why}");
        }
    }

    #[test]
    fn record_values_are_built_as_the_drafts_write_them() {
        let r = Record {
            issuer: "letsencrypt.org".into(),
            account_uri: "https://acme-v02.api.letsencrypt.org/acme/acct/123".into(),
            wildcard: true,
            persist_until: Some(1_798_675_200),
        };
        assert_eq!(
            r.value().expect("value"),
            "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/123; policy=wildcard; persistUntil=1798675200"
        );
        let plain = Record {
            wildcard: false,
            persist_until: None,
            ..r.clone()
        };
        assert_eq!(
            plain.value().expect("value"),
            "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/123"
        );
        // What we build, we read back as the CA would.
        let back = parse_value(&r.value().expect("value")).expect("parses");
        assert!(back.wildcard);
        assert_eq!(back.persist_until, Some(1_798_675_200));
        for bad in [
            Record {
                account_uri: "a;b".into(),
                ..plain.clone()
            },
            Record {
                account_uri: "a b".into(),
                ..plain.clone()
            },
            Record {
                issuer: "Letsencrypt.org".into(),
                ..plain.clone()
            },
        ] {
            assert!(bad.value().is_err(), "{bad:?}");
        }
    }

    /// Every outcome Pebble 2.10.1 gave for these records (see the samples the design
    /// recorded), plus combinations.
    #[test]
    fn judge_table() {
        let now = 1_800_000_000;
        let a = ACCT;
        type Case = (Vec<String>, bool, Result<Option<i64>, &'static str>);
        let cases: Vec<Case> = vec![
            (
                vec![format!("pebble.letsencrypt.org; accounturi={a}")],
                false,
                Ok(None),
            ),
            (
                vec![format!(
                    "ca.pebble.example;ACCOUNTURI={a} ; PersistUntil={}",
                    now + 5
                )],
                false,
                Ok(Some(now + 5)),
            ),
            (
                vec![format!(
                    "pebble.letsencrypt.org; accounturi={a}; policy=WILDCARD"
                )],
                true,
                Ok(None),
            ),
            (
                vec![
                    "other.example; accounturi=x".to_owned(),
                    format!("pebble.letsencrypt.org; accounturi={a}"),
                ],
                false,
                Ok(None),
            ),
            (vec![], false, Err("it has no TXT record")),
            (
                vec![format!("letsencrypt.org; accounturi={a}")],
                false,
                Err("its records are for letsencrypt.org"),
            ),
            // The issuer comparison is exact, as the CA's.
            (
                vec![format!("Pebble.letsencrypt.org; accounturi={a}")],
                false,
                Err("its records are for Pebble.letsencrypt.org"),
            ),
            (
                vec![
                    "pebble.letsencrypt.org; accounturi=https://127.0.0.1:14400/my-account/999999"
                        .to_owned(),
                ],
                false,
                Err("its accounturi is https://127.0.0.1:14400/my-account/999999"),
            ),
            (
                vec![format!("pebble.letsencrypt.org; accounturi={a}")],
                true,
                Err("no policy=wildcard"),
            ),
            (
                vec![format!(
                    "pebble.letsencrypt.org; accounturi={a}; policy=subdomains"
                )],
                true,
                Err("no policy=wildcard"),
            ),
            (
                vec![format!(
                    "pebble.letsencrypt.org; accounturi={a}; persistUntil={}",
                    now - 1
                )],
                false,
                Err("has passed"),
            ),
            (
                vec![format!(
                    "pebble.letsencrypt.org; accounturi={a}; AccountURI={a}"
                )],
                false,
                Err("appears twice"),
            ),
            (
                vec!["pebble.letsencrypt.org; policy=wildcard".to_owned()],
                false,
                Err("no accounturi"),
            ),
            (
                vec!["pebble.letsencrypt.org".to_owned()],
                false,
                Err("no accounturi"),
            ),
            (
                vec![format!("pebble.letsencrypt.org; accounturi={a};")],
                false,
                Err("trailing ';'"),
            ),
            (
                vec![format!(
                    "pebble.letsencrypt.org; accounturi={a}; persistUntil=2027-01-01"
                )],
                false,
                Err("not a Unix time"),
            ),
            (
                vec!["pebble.letsencrypt.org; accounturi".to_owned()],
                false,
                Err("not tag=value"),
            ),
            (
                vec![format!("pebble.letsencrypt.org; accounturi={a}; note=a b")],
                false,
                Err("spaces"),
            ),
            // Malformed outranks a mismatch (the CA answers malformed).
            (
                vec![
                    "pebble.letsencrypt.org; accounturi=https://other/1".to_owned(),
                    format!("ca.pebble.example; accounturi={a}; accounturi={a}"),
                ],
                false,
                Err("the CA cannot read it"),
            ),
            // One good record among bad ones is enough; an expired one and a good one too.
            (
                vec![
                    format!(
                        "pebble.letsencrypt.org; accounturi={a}; persistUntil={}",
                        now - 10
                    ),
                    format!(
                        "ca.pebble.example; accounturi={a}; persistUntil={}",
                        now + 99
                    ),
                    format!("ca.pebble.example; accounturi={a}; a=b; a=c"),
                ],
                false,
                Ok(Some(now + 99)),
            ),
            // persistUntil parses as the CA's ParseInt does (a sign is allowed).
            (
                vec![format!(
                    "pebble.letsencrypt.org; accounturi={a}; persistUntil=+{}",
                    now + 7
                )],
                false,
                Ok(Some(now + 7)),
            ),
        ];
        for (values, wildcard, want) in cases {
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let got = judge_at(&refs, wildcard, now);
            match (&got, want) {
                (Ok(u), Ok(w)) => assert_eq!(*u, w, "{values:?}"),
                (Err(p), Err(text)) => {
                    assert!(
                        p.to_string().contains(text),
                        "{values:?}: {p} lacks {text:?}"
                    )
                }
                _ => panic!("{values:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(
            judge(
                &[],
                true,
                Wanted {
                    issuers: &issuers(),
                    account_uris: &[ACCT.to_owned()],
                    wildcard: false,
                    at: now,
                }
            ),
            Err(PersistProblem::NoRecord { nxdomain: true })
        );
    }

    #[test]
    fn a_long_value_split_into_strings_is_judged_joined() {
        // CAs join a record's character-strings with nothing between them.
        let long = format!(
            "pebble.letsencrypt.org; accounturi={ACCT}/{}",
            "x".repeat(300)
        );
        let ours = [format!("{ACCT}/{}", "x".repeat(300))];
        let got = judge(
            &[long],
            false,
            Wanted {
                issuers: &issuers(),
                account_uris: &ours,
                wildcard: false,
                at: 0,
            },
        );
        assert_eq!(got, Ok(None));
    }

    #[test]
    fn record_names_drop_the_wildcard() {
        assert_eq!(
            record_name("*.example.org"),
            "_validation-persist.example.org"
        );
        assert_eq!(
            record_name("www.example.org"),
            "_validation-persist.www.example.org"
        );
    }
}
