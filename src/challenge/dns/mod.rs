//! dns-01 without hooks: RFC 2136 dynamic updates signed with TSIG (RFC 8945).
//!
//! The flow for one identifier is [`locate`] (follow a CNAME on `_acme-challenge.<name>` to
//! the name that really holds the record, find its zone), [`add`] (one UPDATE to the primary),
//! [`wait_propagated`] (every authoritative server of that zone answers the value), then after
//! the CA has looked, [`unpublish`] (delete exactly that value). [`publish`] is locate + add.
//! [`Dns01`] wires these into the present/cleanup shape the issuer uses, and remembers what it
//! published *before* sending the update, so a cleanup after any failure, even an update whose
//! answer was lost, removes the record.
//!
//! Boundaries:
//!
//! - Everything that reaches DNS is checked here first: names through [`Hostname`], the TXT
//!   value as 43 characters of base64url (a SHA-256 digest), and an update only ever touches a
//!   name that starts with `_acme-challenge.` or that such a name points to by CNAME.
//! - Lookups (CNAME, SOA, NS, addresses) go to the recursive resolvers of [`ResolverConfig`];
//!   the propagation check asks each authoritative server directly (no recursion, so no cache
//!   can answer for it). `ResolverConfig::nameserver_addresses` replaces the address lookup of
//!   named NS hosts: that is the seam tests use to point at servers on loopback ports, and it
//!   serves split-horizon and hidden-primary setups too.
//! - The wire format and TSIG are hickory-proto's; the transport (UDP with retransmission and
//!   TCP fallback, TCP for updates) is the small `wire` module.
//! - TSIG needs the wall clock (the server refuses a signature more than 5 minutes off), so
//!   `wire` reads it when it signs, as TLS certificate checks do; nothing else here does.

mod keyfile;
mod lookup;
pub mod persist;
mod propagation;
pub mod settings;
mod update;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::name::Hostname;

pub use keyfile::parse_key_file;
pub use propagation::wait_propagated;
pub use settings::{Dns01Settings, RawDns01};
pub use update::{add, locate, publish, unpublish};

/// Label in front of the identifier that holds the dns-01 TXT record (RFC 8555 §8.4).
pub const CHALLENGE_LABEL: &str = "_acme-challenge";
/// TTL of the published TXT record, unless configured.
pub const DEFAULT_TTL: u32 = 60;
/// How long one DNS exchange (with its retransmissions) may take, unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Dns01::present`] waits for every authoritative server, unless configured.
pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);
/// CNAMEs followed from `_acme-challenge.<name>` before giving up.
pub const MAX_CNAME_HOPS: usize = 8;
/// The TSIG fudge (allowed clock difference) we sign with, as BIND and Knot do.
pub const TSIG_FUDGE: u16 = 300;

/// `_acme-challenge.<identifier>`, with a wildcard's `*.` removed (RFC 8555 §8.4).
pub fn challenge_name(identifier: &Hostname) -> Result<Hostname> {
    let base = identifier
        .as_str()
        .strip_prefix("*.")
        .unwrap_or(identifier.as_str());
    Ok(Hostname::parse(&format!("{CHALLENGE_LABEL}.{base}"))?)
}

/// Checks a dns-01 TXT value: the unpadded base64url SHA-256 digest, 43 characters.
pub fn validate_txt_value(value: &str) -> Result<()> {
    if value.len() != 43
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!(
            "dns-01 TXT value {:?} is not 43 characters of base64url (a SHA-256 digest)",
            value.chars().take(64).collect::<String>()
        );
    }
    Ok(())
}

/// The character-strings of a TXT record holding `value`: at most 255 octets each (RFC 1035
/// §3.3); a longer value is split, and readers join the strings again.
pub fn txt_strings(value: &str) -> Vec<String> {
    if value.is_empty() {
        return vec![String::new()];
    }
    value
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// A TSIG MAC algorithm (the ones RFC 8945 says to implement, minus SHA-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlgorithm {
    /// Parses `hmac-sha256` and friends, in any case, with or without a trailing dot (as
    /// BIND key files and Knot configs write them).
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim().trim_end_matches('.').to_ascii_lowercase();
        Ok(match t.as_str() {
            "hmac-sha256" => Self::HmacSha256,
            "hmac-sha384" => Self::HmacSha384,
            "hmac-sha512" => Self::HmacSha512,
            "hmac-md5" | "hmac-md5.sig-alg.reg.int" | "hmac-sha1" | "hmac-sha224" => bail!(
                "TSIG algorithm {text:?} is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512"
            ),
            _ => bail!(
                "unknown TSIG algorithm {text:?}; use hmac-sha256, hmac-sha384 or hmac-sha512"
            ),
        })
    }

    /// The algorithm's name as written in configs and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha384 => "hmac-sha384",
            Self::HmacSha512 => "hmac-sha512",
        }
    }
}

impl fmt::Display for TsigAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TSIG key: its name (as the server knows it), algorithm and secret. `Debug` never shows
/// the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    name: Hostname,
    algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

impl TsigKey {
    /// A key from its name, algorithm and base64 secret (as `tsig-keygen` prints it).
    pub fn new(name: &str, algorithm: TsigAlgorithm, secret_base64: &str) -> Result<Self> {
        let name = Hostname::parse(name)
            .map_err(|e| anyhow::anyhow!("TSIG key name: {e}"))
            .and_then(|n| {
                if n.is_wildcard() {
                    bail!("TSIG key name {n} must not be a wildcard")
                }
                Ok(n)
            })?;
        let secret =
            decode_secret(secret_base64).map_err(|e| anyhow::anyhow!("TSIG key {name}: {e}"))?;
        Ok(Self {
            name,
            algorithm,
            secret,
        })
    }

    /// The key's name (normalised: lowercase, no trailing dot).
    pub fn name(&self) -> &Hostname {
        &self.name
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> TsigAlgorithm {
        self.algorithm
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Decodes a base64 TSIG secret; whitespace inside is allowed (long secrets get wrapped).
fn decode_secret(text: &str) -> Result<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let secret = data_encoding::BASE64
        .decode(compact.as_bytes())
        .or_else(|_| data_encoding::BASE64_NOPAD.decode(compact.as_bytes()))
        .map_err(|_| anyhow::anyhow!("the secret is not valid base64"))?;
    if secret.is_empty() {
        bail!("the secret is empty");
    }
    Ok(secret)
}

/// Where the TSIG key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// Given in the settings.
    Inline(TsigKey),
    /// Read from a BIND `key "name" { algorithm ...; secret "..."; };` file or a Knot `key:`
    /// section when an update is sent; `name` picks one key when the file has several.
    File { path: PathBuf, name: Option<String> },
}

impl KeySource {
    /// The key, reading the file if it is one.
    pub async fn load(&self) -> Result<TsigKey> {
        match self {
            Self::Inline(k) => Ok(k.clone()),
            Self::File { path, name } => {
                use anyhow::Context as _;
                let text = tokio::fs::read_to_string(path)
                    .await
                    .with_context(|| format!("reading TSIG key file {}", path.display()))?;
                parse_key_file(&text, name.as_deref())
                    .with_context(|| format!("in TSIG key file {}", path.display()))
            }
        }
    }
}

/// Which servers answer our lookups, and how to reach the authoritative ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Recursive resolvers for CNAME, SOA, NS and address lookups, tried in order. Empty means
    /// the `nameserver` lines of `/etc/resolv.conf`, read when a lookup is made.
    pub servers: Vec<SocketAddr>,
    /// Addresses for NS host names, used instead of looking the names up (normalised names).
    pub nameserver_addresses: BTreeMap<Hostname, Vec<SocketAddr>>,
    /// The port authoritative servers found by lookup are asked on.
    pub authoritative_port: u16,
    /// How long one DNS exchange may take.
    pub timeout: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            nameserver_addresses: BTreeMap::new(),
            authoritative_port: 53,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl ResolverConfig {
    /// Asks only `server` for lookups (tests; or a local validating resolver).
    pub fn with_server(server: SocketAddr) -> Self {
        Self {
            servers: vec![server],
            ..Self::default()
        }
    }
}

/// The `nameserver` addresses of a resolv.conf text (port 53; scoped IPv6 ones are skipped).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Where and how to send dynamic updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rfc2136Config {
    /// The primary server that accepts updates.
    pub server: SocketAddr,
    /// The TSIG key updates are signed with.
    pub key: KeySource,
    /// The zone to update; found from the record's name (SOA lookup) when `None`.
    pub zone: Option<Hostname>,
    /// TTL of the TXT record.
    pub ttl: u32,
    /// How long one exchange with the server may take.
    pub timeout: Duration,
    /// Lookups: CNAME following and zone finding.
    pub resolver: ResolverConfig,
}

impl Rfc2136Config {
    /// Updates to `server` signed with `key`; lookups through `resolver`; defaults otherwise.
    pub fn new(server: SocketAddr, key: KeySource, resolver: ResolverConfig) -> Self {
        Self {
            server,
            key,
            zone: None,
            ttl: DEFAULT_TTL,
            timeout: DEFAULT_TIMEOUT,
            resolver,
        }
    }
}

/// One TXT record as it is (or is about to be) published: what [`unpublish`] removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The name asked for, `_acme-challenge.<identifier>`.
    pub requested: Hostname,
    /// The CNAME targets followed from `requested`, in order (empty without delegation).
    pub cnames: Vec<Hostname>,
    /// The record's owner: `requested`, or the last CNAME target.
    pub name: Hostname,
    /// The zone the update went to.
    pub zone: Hostname,
    /// The TXT value.
    pub value: String,
    /// The TTL it was published with.
    pub ttl: u32,
}

/// Errors a caller may want to tell apart from the rest (wrapped in `anyhow::Error`; use
/// `downcast_ref`).
#[derive(Debug, thiserror::Error)]
pub enum Dns01Error {
    /// The server did not accept our TSIG signature: a configuration problem, not transient.
    #[error("{server} rejected TSIG key {key}: {reason}")]
    TsigRejected {
        server: SocketAddr,
        key: Hostname,
        reason: String,
    },
    /// The server answered the update with an error rcode.
    #[error("{server} refused the update of zone {zone}: {rcode}{hint}")]
    UpdateFailed {
        server: SocketAddr,
        zone: Hostname,
        rcode: String,
        hint: &'static str,
    },
    /// Some authoritative servers still did not serve the value when the wait ended.
    #[error(
        "TXT {value} at {name} is not served by every authoritative server of {zone} after {waited:.1?}: {}",
        lagging.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    NotPropagated {
        name: Hostname,
        zone: Hostname,
        value: String,
        waited: Duration,
        lagging: Vec<Lagging>,
    },
}

/// One authoritative server that did not (yet) serve the value, and what it said instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lagging {
    /// The NS name.
    pub nameserver: Hostname,
    /// The address asked (`None` if the NS name had no address).
    pub address: Option<SocketAddr>,
    /// What it answered, or why there was no answer.
    pub answer: String,
}

impl fmt::Display for Lagging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            Some(a) => write!(f, "{} ({a}) {}", self.nameserver, self.answer),
            None => write!(f, "{} {}", self.nameserver, self.answer),
        }
    }
}

/// The dns-01 responder for one target: publishes through RFC 2136, waits for propagation,
/// and removes everything it published on [`cleanup`](Dns01::cleanup).
#[derive(Debug)]
pub struct Dns01 {
    config: Rfc2136Config,
    propagation_timeout: Option<Duration>,
    published: Mutex<Vec<Published>>,
}

impl Dns01 {
    /// A responder updating DNS per `config`, waiting up to `propagation_timeout` for every
    /// authoritative server (`None`: do not check).
    pub fn new(config: Rfc2136Config, propagation_timeout: Option<Duration>) -> Self {
        Self {
            config,
            propagation_timeout,
            published: Mutex::new(Vec::new()),
        }
    }

    /// Publishes `value` for `identifier` and waits until it is served everywhere.
    pub async fn present(&self, identifier: &Hostname, value: &str) -> Result<Published> {
        self.present_at(&challenge_name(identifier)?, value).await
    }

    /// Publishes `value` at the record name `name` (dns-01's `_acme-challenge.<name>` or
    /// dns-account-01's `_<label>._acme-challenge.<name>`) and waits until it is served
    /// everywhere.
    pub async fn present_at(&self, name: &Hostname, value: &str) -> Result<Published> {
        let p = locate(&self.config, name.as_str(), value).await?;
        // Remembered before the update is sent: if its answer is lost, the record may exist.
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(p.clone());
        add(&self.config, &p).await?;
        if let Some(bound) = self.propagation_timeout.filter(|d| !d.is_zero()) {
            wait_propagated(&self.config.resolver, p.name.as_str(), value, bound).await?;
        }
        Ok(p)
    }

    /// Removes every record [`present`](Dns01::present) published or tried to. Never fails:
    /// a record that could not be removed is logged.
    pub async fn cleanup(&self) {
        let all = std::mem::take(
            &mut *self
                .published
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for p in &all {
            match unpublish(&self.config, p).await {
                Ok(()) => tracing::debug!("removed TXT {} at {}", p.value, p.name),
                Err(e) => tracing::warn!(
                    "could not remove the dns-01 TXT record {} at {} (zone {}): {e:#}",
                    p.value,
                    p.name,
                    p.zone
                ),
            }
        }
    }
}

/// Reads `raw` as each DNS answer acmekeep acts on, as a fuzz target does (`crate::fuzz`):
/// the answer to a lookup (CNAME, zone, NS and addresses), to the propagation check, and to
/// a signed UPDATE. The question is taken from the answer itself so that the checks that an
/// answer belongs to its question let it through. Returns what the readers concluded, one
/// line each, for the tests of the seed corpus.
#[doc(hidden)]
pub fn read_answer(raw: &[u8]) -> Vec<String> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::{Name, RecordType};

    const VALUE: &str = "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i_X336eUOQZo";
    let server = SocketAddr::from(([127, 0, 0, 1], 53));
    let Ok(answer) = Message::from_vec(raw) else {
        return vec!["malformed".to_owned()];
    };
    let mut question = Message::query();
    question.metadata.id = answer.metadata.id;
    question.metadata.op_code = answer.metadata.op_code;
    for q in &answer.queries {
        question.add_query(q.clone());
    }
    let mut seen = Vec::new();
    let mut note = |what: &str, r: &dyn fmt::Debug| seen.push(format!("{what}: {r:?}"));
    note(
        "belongs",
        &wire::check_answer(server, &question, &answer).map_err(|e| e.to_string()),
    );
    let qname = answer
        .queries
        .first()
        .map_or_else(Name::root, |q| q.name().clone());
    note("propagation", &propagation::judge(&answer, &qname, VALUE));
    note(
        "zone",
        &lookup::zone_in_answer(&answer, &qname).map(|z| z.map_err(|e| e.to_string())),
    );
    note(
        "zone at",
        &lookup::zone_at(&answer, &qname).map(|z| z.map_err(|e| e.to_string())),
    );
    for rtype in [RecordType::A, RecordType::AAAA] {
        note(
            "addresses",
            &lookup::addresses_in(&answer, &qname, rtype, 53),
        );
    }
    if let Ok(owner) = wire::to_hostname(&qname) {
        note(
            "cname",
            &lookup::cname_target(&answer, &owner).map_err(|e| e.to_string()),
        );
        note(
            "ns",
            &lookup::ns_names(&answer, &owner).map_err(|e| e.to_string()),
        );
    }
    // The answer to an UPDATE signed now with a fixed key: it cannot carry a valid signature
    // unless it is a real server's answer to that very message, so this reads the TSIG
    // record and its error paths.
    let signed = TsigKey::new("acme-update", TsigAlgorithm::HmacSha256, "c2VjcmV0c2VjcmV0")
        .and_then(|key| {
            let zone = Hostname::parse("example.org")?;
            let mut update = question.clone();
            let mut verifier = wire::sign(&mut update, &key, 1_700_000_000)?;
            wire::read_update_answer(server, &update, raw, &mut verifier, &key, &zone)
        });
    note("update", &signed.map_err(|e| e.to_string()));
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_name_drops_the_wildcard() {
        let h = |s| Hostname::parse(s).expect("valid");
        assert_eq!(
            challenge_name(&h("*.example.org")).expect("ok").as_str(),
            "_acme-challenge.example.org"
        );
        assert_eq!(
            challenge_name(&h("www.example.org")).expect("ok").as_str(),
            "_acme-challenge.www.example.org"
        );
    }

    #[test]
    fn txt_value_table() {
        let good = "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i_X336eUOQZo";
        assert!(validate_txt_value(good).is_ok());
        for bad in [
            "",
            "short",
            &good[1..],
            &format!("{good}x"),
            "LPsIwTo7o8BoG0+vjCyGQGBWSVIPxI/i_X336eUOQZo",
            "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i_X336eUOQZ=",
            "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i X336eUOQZo",
            "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i\"X336eUOQZo",
        ] {
            assert!(validate_txt_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn algorithm_names() {
        for (text, alg) in [
            ("hmac-sha256", TsigAlgorithm::HmacSha256),
            ("HMAC-SHA384.", TsigAlgorithm::HmacSha384),
            (" hmac-sha512 ", TsigAlgorithm::HmacSha512),
        ] {
            assert_eq!(TsigAlgorithm::parse(text).expect(text), alg);
        }
        for bad in ["hmac-md5", "hmac-sha1", "sha256", ""] {
            assert!(TsigAlgorithm::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_debug_hides_the_secret() {
        let k = TsigKey::new(
            "acme-key.",
            TsigAlgorithm::HmacSha256,
            "c2VjcmV0LXNlY3JldA==",
        )
        .expect("valid key");
        assert_eq!(k.name().as_str(), "acme-key");
        let dbg = format!("{k:?}");
        assert!(
            !dbg.contains("c2Vj") && !dbg.contains("secret-secret"),
            "{dbg}"
        );
        assert!(TsigKey::new("k", TsigAlgorithm::HmacSha256, "not base64!").is_err());
        assert!(TsigKey::new("k", TsigAlgorithm::HmacSha256, "").is_err());
        assert!(TsigKey::new("*.k", TsigAlgorithm::HmacSha256, "c2VjcmV0").is_err());
    }

    #[test]
    fn responder_futures_are_send() {
        // The issuer boxes them as `Send` futures (see `challenge::BoxFuture`).
        fn assert_send<T: Send>(_: &T) {}
        let key = TsigKey::new("k", TsigAlgorithm::HmacSha256, "c2VjcmV0").expect("key");
        let cfg = Rfc2136Config::new(
            "127.0.0.1:53".parse().expect("addr"),
            KeySource::Inline(key),
            ResolverConfig::default(),
        );
        let r = Dns01::new(cfg, None);
        let id = Hostname::parse("example.org").expect("name");
        assert_send(&r.present(&id, "x"));
        assert_send(&r.cleanup());
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example.org\nnameserver 127.0.0.53\nnameserver ::1\n\
                    nameserver fe80::1%eth0\noptions edns0\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "127.0.0.53:53".parse::<SocketAddr>().expect("addr"),
                "[::1]:53".parse().expect("addr"),
            ]
        );
    }
}
