//! What the fleet keeps under its prefix `P`, key by key, and the values' types.
//!
//! Two subtrees: `P/d/` (data: what every mirror holds; an idle run asks only what changed
//! in it) and `P/x/` (exchange: locks, orders in progress, tokens, nodes; short-lived or per
//! node, never scanned by an idle run).
//!
//! | key | value |
//! |---|---|
//! | `P/v` | layout version, `1` |
//! | `P/d/conf/target` | the fleet's conf/target, without `request.challenge` |
//! | `P/d/targets/<file>` | a desired/ file, verbatim |
//! | `P/d/accounts/<urlpart>/<key id>` | sealed account key |
//! | `P/d/keys/<key id>` | sealed private key |
//! | `P/d/certs/<cert id>` | [`CertEntry`] (JSON) |
//! | `P/d/heads/<file>` | [`Head`]: the certificate a target has now |
//! | `P/d/runs/<file>` | the target's run record (backoff, shared by the fleet) |
//! | `P/d/ari/<cert id>` | the CA's last renewal window for the certificate ([`crate::store::renewal_cache::AriRecord`]) |
//! | `P/x/locks/<file>` | [`LockInfo`], bound to the holder's run lease |
//! | `P/x/orders/<file>` | [`OrderRecord`]: an order in progress (outlives its holder) |
//! | `P/x/pauses/<origin hash>` | [`Pause`], bound to a lease of the pause's length |
//! | `P/x/challenges/http/<token>` | key authorization, bound to the orderer's lease |
//! | `P/x/challenges/acks/<token>/<node>` | empty, bound to the agent's lease |
//! | `P/x/agents/<node>` | [`AgentInfo`], bound to the agent's lease |
//! | `P/x/nodes/<node>` | [`NodeInfo`]: what a node last did |
//! | `P/x/gc` | [`super::gc::LastGc`]: when and by which node the fleet last removed what it no longer needs |
//!
//! Ids are acmetool's (52 characters of base32), target files follow the `desired/` rules:
//! everything read back from etcd is validated like a name read from disk, and values are
//! bounded in size.

use serde::{Deserialize, Serialize};

use crate::keys::ids::is_well_formed_id;

/// The layout version under `P/v`.
pub const VERSION: &str = "1";
/// Largest value read from the fleet (a certificate chain is far below it).
pub const MAX_VALUE: usize = 64 * 1024;

/// Key names under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// The layout under `prefix` (ends with '/').
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// `P/v`.
    pub fn version(&self) -> String {
        self.key("v")
    }
    /// `P/d/`: everything mirrored.
    pub fn data(&self) -> String {
        self.key("d/")
    }
    /// `P/d/conf/target`.
    pub fn conf_target(&self) -> String {
        self.key("d/conf/target")
    }
    /// `P/d/targets/`.
    pub fn targets(&self) -> String {
        self.key("d/targets/")
    }
    /// `P/d/targets/<file>`.
    pub fn target(&self, file: &str) -> String {
        self.key(&format!("d/targets/{file}"))
    }
    /// `P/d/accounts/<urlpart>/<key id>` (`account` is acmetool's account id).
    pub fn account(&self, account: &str) -> String {
        self.key(&format!("d/accounts/{account}"))
    }
    /// `P/d/keys/<id>`.
    pub fn private_key(&self, id: &str) -> String {
        self.key(&format!("d/keys/{id}"))
    }
    /// `P/d/certs/<id>`.
    pub fn cert(&self, id: &str) -> String {
        self.key(&format!("d/certs/{id}"))
    }
    /// `P/d/heads/<file>`.
    pub fn head(&self, file: &str) -> String {
        self.key(&format!("d/heads/{file}"))
    }
    /// `P/d/heads/`.
    pub fn heads(&self) -> String {
        self.key("d/heads/")
    }
    /// `P/d/runs/<file>`.
    pub fn run(&self, file: &str) -> String {
        self.key(&format!("d/runs/{file}"))
    }
    /// `P/d/ari/<cert id>`.
    pub fn ari(&self, id: &str) -> String {
        self.key(&format!("d/ari/{id}"))
    }
    /// `P/x/locks/<file>`.
    pub fn lock(&self, file: &str) -> String {
        self.key(&format!("x/locks/{file}"))
    }
    /// `P/x/locks/`.
    pub fn locks(&self) -> String {
        self.key("x/locks/")
    }
    /// The lock of account registration at a CA (`.account/<urlpart>`: no target file
    /// begins with a dot).
    pub fn account_lock(&self, urlpart: &str) -> String {
        self.key(&format!("x/locks/.account/{urlpart}"))
    }
    /// `P/x/orders/<file>`.
    pub fn order(&self, file: &str) -> String {
        self.key(&format!("x/orders/{file}"))
    }
    /// `P/x/pauses/`.
    pub fn pauses(&self) -> String {
        self.key("x/pauses/")
    }
    /// `P/x/pauses/<origin hash>`.
    pub fn pause(&self, origin: &str) -> String {
        let hash = crate::keys::ids::cert_id(origin);
        self.key(&format!("x/pauses/{hash}"))
    }
    /// `P/x/challenges/http/`.
    pub fn tokens(&self) -> String {
        self.key("x/challenges/http/")
    }
    /// `P/x/challenges/http/<token>`.
    pub fn token(&self, token: &str) -> String {
        self.key(&format!("x/challenges/http/{token}"))
    }
    /// `P/x/challenges/acks/<token>/`.
    pub fn acks(&self, token: &str) -> String {
        self.key(&format!("x/challenges/acks/{token}/"))
    }
    /// `P/x/challenges/acks/<token>/<node>`.
    pub fn ack(&self, token: &str, node: &str) -> String {
        self.key(&format!("x/challenges/acks/{token}/{node}"))
    }
    /// `P/x/agents/`.
    pub fn agents(&self) -> String {
        self.key("x/agents/")
    }
    /// `P/x/agents/<node>`.
    pub fn agent(&self, node: &str) -> String {
        self.key(&format!("x/agents/{node}"))
    }
    /// `P/x/gc`: the fleet's last collection ([`super::gc`]).
    pub fn gc(&self) -> String {
        self.key("x/gc")
    }
    /// `P/x/nodes/`.
    pub fn nodes(&self) -> String {
        self.key("x/nodes/")
    }
    /// `P/x/nodes/<node>`.
    pub fn node(&self, node: &str) -> String {
        self.key(&format!("x/nodes/{node}"))
    }

    /// What a key under `P/d/` names, validated; `None` for anything else (a key this
    /// version does not know, or a malformed one, which is then ignored).
    pub fn parse_data(&self, key: &str) -> Option<DataKey> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix("d/")?;
        let (kind, name) = rest.split_once('/')?;
        match kind {
            "conf" => (name == "target").then_some(DataKey::ConfTarget),
            "targets" => valid_target_file(name).then(|| DataKey::Target(name.to_owned())),
            "heads" => valid_target_file(name).then(|| DataKey::Head(name.to_owned())),
            "runs" => valid_target_file(name).then(|| DataKey::Run(name.to_owned())),
            "keys" => is_well_formed_id(name).then(|| DataKey::Key(name.to_owned())),
            "certs" => is_well_formed_id(name).then(|| DataKey::Cert(name.to_owned())),
            "ari" => is_well_formed_id(name).then(|| DataKey::Ari(name.to_owned())),
            "accounts" => {
                let (part, id) = name.split_once('/')?;
                (valid_url_part(part) && is_well_formed_id(id))
                    .then(|| DataKey::Account(name.to_owned()))
            }
            _ => None,
        }
    }

    /// The last component of `key` under `dir` (a prefix this layout made), if it is one
    /// plain name.
    pub fn name_under<'k>(&self, dir: &str, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(dir)
            .filter(|n| !n.is_empty() && !n.contains('/'))
    }
}

/// A key under `P/d/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DataKey {
    /// `d/conf/target`.
    ConfTarget,
    /// `d/targets/<file>`.
    Target(String),
    /// `d/heads/<file>`.
    Head(String),
    /// `d/runs/<file>`.
    Run(String),
    /// `d/keys/<id>`.
    Key(String),
    /// `d/certs/<id>`.
    Cert(String),
    /// `d/ari/<cert id>`.
    Ari(String),
    /// `d/accounts/<urlpart>/<key id>`.
    Account(String),
}

/// A `desired/` file name as the fleet accepts it: what `want` writes and acmetool reads,
/// no directory part, not hidden, printable, at most 255 bytes.
pub fn valid_target_file(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.chars().any(|c| c.is_control())
}

/// An account directory name (acmetool's escaped directory URL).
fn valid_url_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 1024
        && !part.starts_with('.')
        && part.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'%' | b'+')
        })
}

/// The slot a sealed account key is bound to.
pub fn account_slot(account: &str) -> String {
    format!("accounts/{account}")
}

/// The slot a sealed private key is bound to.
pub fn key_slot(id: &str) -> String {
    format!("keys/{id}")
}

/// `P/d/certs/<id>`: a certificate the fleet obtained.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertEntry {
    /// The order URL (the id is derived from it, as acmetool does).
    pub url: String,
    /// The account id (`<urlpart>/<key id>`) that ordered it.
    pub account: Option<String>,
    /// The key id of its private key (`P/d/keys/<key>`).
    pub key: String,
    /// The target file it was ordered for.
    pub target: String,
    /// The node that ordered it.
    pub node: String,
    /// When it was recorded (RFC 3339).
    pub issued: String,
    /// Leaf and chain, PEM.
    pub fullchain: String,
    /// The ACME profile it was ordered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Revoked (acmetool's `revoked` file).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
    /// How its names were validated, where that is kept (its `.validations` file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<crate::challenge::Validation>,
}

/// `P/d/heads/<file>`: the certificate a target has now.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Head {
    /// Certificate id.
    pub cert: String,
    /// When it became the head (RFC 3339).
    pub at: String,
    /// The node that recorded it.
    pub node: String,
}

/// `P/x/locks/<file>`: who is working on a target.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    /// Node name.
    pub node: String,
    /// Its process.
    pub pid: u32,
    /// Since when (RFC 3339).
    pub since: String,
}

/// The state of an order in progress.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OrderState {
    /// A key is chosen; newOrder may or may not have reached the CA.
    Ordering,
    /// The CA created the order (URL known); finalize not sent.
    Ordered,
    /// Finalize is (about to be) sent: a certificate may exist for this order.
    Finalizing,
}

/// `P/x/orders/<file>`: an order in progress, written (fenced) before each step that the
/// next holder of the lock must know about.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrderRecord {
    /// How far it got.
    pub state: OrderState,
    /// The order URL, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Account id.
    pub account: String,
    /// Key id of the certificate key.
    pub key: String,
    /// The node working on it.
    pub node: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// How its names were validated, where the certificate keeps that
    /// ([`crate::challenge::Validation`]), for the node that finishes the order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<crate::challenge::Validation>,
}

/// `P/x/pauses/<hash>`: a CA asked the fleet to slow down.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pause {
    /// The CA's origin.
    pub origin: String,
    /// Until when (RFC 3339).
    pub until: String,
    /// Who was told.
    pub node: String,
}

/// `P/x/agents/<node>`: a running `cluster-agent`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentInfo {
    /// Its process.
    pub pid: u32,
    /// Since when (RFC 3339).
    pub since: String,
    /// Webroots it writes tokens to.
    pub webroots: Vec<String>,
    /// Addresses it answers http-01 on.
    pub listens: Vec<String>,
}

/// `P/x/nodes/<node>`: what a node last did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// acmekeep version.
    pub version: String,
    /// The fleet revision its mirror was last synced to.
    pub synced_revision: i64,
    /// When (RFC 3339).
    pub synced_at: String,
    /// When its last run ended (RFC 3339), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// What that run came to ("ok", "failed", …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    /// The ids of its cluster secret keys, the sealing one first.
    pub key_ids: Vec<String>,
    /// Its subscription (`None`: every target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Vec<String>>,
}

/// Reads a JSON value of the fleet, bounded.
pub fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> anyhow::Result<T> {
    if value.len() > MAX_VALUE {
        anyhow::bail!(
            "{key}: a value of {} bytes is larger than the limit of {MAX_VALUE}",
            value.len()
        );
    }
    serde_json::from_slice(value).map_err(|e| anyhow::anyhow!("{key}: unreadable value: {e}"))
}

/// Writes a JSON value for the fleet.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own plain types: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Whether a target with `labels` is one a node subscribed to `subscribe` keeps: every
/// target when the node subscribes to everything, else targets with one of its labels and
/// targets with no labels (fleet-wide).
pub fn subscribed(subscribe: Option<&[String]>, labels: &[String]) -> bool {
    match subscribe {
        None => true,
        Some(want) => labels.is_empty() || labels.iter().any(|l| want.contains(l)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst";

    #[test]
    fn data_keys_read_back_and_anything_malformed_is_ignored() {
        let l = Layout::new("/acmekeep/");
        assert_eq!(l.parse_data(&l.conf_target()), Some(DataKey::ConfTarget));
        assert_eq!(
            l.parse_data(&l.target("example.org-abc")),
            Some(DataKey::Target("example.org-abc".into()))
        );
        assert_eq!(l.parse_data(&l.cert(ID)), Some(DataKey::Cert(ID.into())));
        assert_eq!(l.parse_data(&l.ari(ID)), Some(DataKey::Ari(ID.into())));
        assert_eq!(
            l.parse_data(&l.private_key(ID)),
            Some(DataKey::Key(ID.into()))
        );
        assert_eq!(
            l.parse_data(&l.account(&format!("acme-staging.example%2fdirectory/{ID}"))),
            Some(DataKey::Account(format!(
                "acme-staging.example%2fdirectory/{ID}"
            )))
        );
        for bad in [
            "/acmekeep/d/targets/.hidden".to_owned(),
            "/acmekeep/d/targets/a/b".to_owned(),
            "/acmekeep/d/targets/".to_owned(),
            "/acmekeep/d/certs/short".to_owned(),
            "/acmekeep/d/ari/short".to_owned(),
            format!("/acmekeep/d/certs/{}", ID.to_uppercase()),
            format!("/acmekeep/d/accounts/../{ID}"),
            format!("/acmekeep/d/accounts/x/{ID}/more"),
            "/acmekeep/d/targets/a\nb".to_owned(),
            "/acmekeep/d/new-kind/x".to_owned(),
            "/other/d/targets/a".to_owned(),
            "/acmekeep/x/locks/a".to_owned(),
        ] {
            assert_eq!(l.parse_data(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn subscriptions_keep_unlabelled_targets_and_matching_labels() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(subscribed(None, &s(&["mail"])));
        assert!(subscribed(Some(&s(&["web"])), &s(&[])));
        assert!(subscribed(Some(&s(&["web"])), &s(&["mail", "web"])));
        assert!(!subscribed(Some(&s(&["web"])), &s(&["mail"])));
        assert!(!subscribed(Some(&s(&[])), &s(&["mail"])));
    }

    #[test]
    fn oversized_and_malformed_values_are_named() {
        let e = decode::<Head>("k", &vec![b' '; MAX_VALUE + 1]).expect_err("big");
        assert!(e.to_string().contains("larger than the limit"), "{e}");
        let e = decode::<Head>("k", b"{").expect_err("bad");
        assert!(e.to_string().starts_with("k: unreadable value"), "{e}");
    }
}
