//! Removing what the fleet no longer needs from etcd: certificates that expired and are no
//! target's certificate now, the sealed private keys nothing refers to any more, renewal
//! windows (`d/ari/`) of certificates that are no target's now or have expired, and the
//! heads of targets no node wants, once their certificate is gone.
//!
//! Without it `d/` only grows: every renewal adds a certificate, its key and its renewal
//! window, and every run of every node that syncs reads them all. A node's run collects at
//! most once a day for the whole fleet (`x/gc` says when and by whom; the node that
//! changes it first does it). Mirrors keep their own `certs/` and `keys/` as acmetool
//! does: what goes here is only the fleet's copy.
//!
//! **Never a new head's.** Everything is read at one revision, decided by [`plan`] (pure,
//! the clock passed in), and each key is deleted in a transaction that compares its
//! `mod_revision` with the one read: a key written since (a node sharing a renewal window
//! again, sealing a key for an order it records or a certificate it records, a target
//! wanted again) is not deleted. A certificate is deleted only when expired, and a node
//! moves a head only to a certificate it just obtained (never an expired one): a head
//! recorded after the read never names a certificate being deleted.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::fleet::Fleet;
use super::kv::{Cmp, Kv, Op, Range, range_all};
use super::layout::{self, CertEntry, DataKey, Head, Layout, OrderRecord};

/// How often the fleet collects.
pub const EVERY: time::Duration = time::Duration::days(1);

/// `P/x/gc`: the fleet's last collection.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastGc {
    /// When (RFC 3339).
    pub at: String,
    /// Which node.
    pub node: String,
}

/// What the fleet holds that a collection looks at, read at one revision.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Target files wanted now.
    pub targets: BTreeSet<String>,
    /// Each target file's head: its revision and certificate.
    pub heads: BTreeMap<String, (i64, String)>,
    /// Each certificate's revision, and its key id and expiry (`None`: it does not parse).
    pub certs: BTreeMap<String, (i64, Option<(String, OffsetDateTime)>)>,
    /// Each sealed private key's revision.
    pub keys: BTreeMap<String, i64>,
    /// Each renewal window's revision.
    pub ari: BTreeMap<String, i64>,
    /// The key ids orders in progress (`x/orders/`) name; `None`: one did not parse.
    pub order_keys: Option<BTreeSet<String>>,
}

/// One key to delete, if its `mod_revision` is still `revision`; `absent`: only if that key
/// (a target file) still does not exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    /// The key.
    pub key: String,
    /// Its revision when read.
    pub revision: i64,
    /// A key that must still be absent.
    pub absent: Option<String>,
}

/// What a collection removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Certificates.
    pub certs: usize,
    /// Sealed private keys.
    pub keys: usize,
    /// Renewal windows.
    pub ari: usize,
    /// Heads of targets no node wants.
    pub heads: usize,
    /// Removals refused because the key changed since it was read.
    pub kept: usize,
}

impl Collected {
    /// Anything removed.
    pub fn any(&self) -> bool {
        self.certs + self.keys + self.ari + self.heads > 0
    }
}

/// What to remove from `s` at `now` (see the module's preamble): in the order certificates,
/// keys, renewal windows, heads.
pub fn plan(l: &Layout, s: &Snapshot, now: OffsetDateTime) -> Vec<Removal> {
    let mut out = Vec::new();
    let removal = |key: String, revision: i64| Removal {
        key,
        revision,
        absent: None,
    };
    // A target's certificate now, for the targets still wanted.
    let current: BTreeSet<&str> = s
        .heads
        .iter()
        .filter(|(f, _)| s.targets.contains(*f))
        .map(|(_, (_, c))| c.as_str())
        .collect();
    let expired = |id: &str| {
        s.certs
            .get(id)
            .is_some_and(|(_, e)| e.as_ref().is_some_and(|(_, at)| *at <= now))
    };
    let mut gone = BTreeSet::new();
    for (id, (rev, _)) in &s.certs {
        if expired(id) && !current.contains(id.as_str()) {
            out.push(removal(l.cert(id), *rev));
            gone.insert(id.as_str());
        }
    }
    // Keys: only when every certificate and order in progress says which key it uses.
    let kept_certs = s.certs.iter().filter(|(id, _)| !gone.contains(id.as_str()));
    let used: Option<BTreeSet<&str>> = kept_certs
        .map(|(_, (_, e))| e.as_ref().map(|(k, _)| k.as_str()))
        .collect();
    if let (Some(used), Some(orders)) = (used, &s.order_keys) {
        for (id, rev) in &s.keys {
            if !used.contains(id.as_str()) && !orders.contains(id) {
                out.push(removal(l.private_key(id), *rev));
            }
        }
    }
    for (id, rev) in &s.ari {
        if !current.contains(id.as_str()) || expired(id) || !s.certs.contains_key(id) {
            out.push(removal(l.ari(id), *rev));
        }
    }
    // A head of a target no node wants, once its certificate is gone: a target wanted again
    // (the file recreated) keeps it.
    for (file, (rev, cert)) in &s.heads {
        if !s.targets.contains(file)
            && (gone.contains(cert.as_str()) || !s.certs.contains_key(cert))
        {
            out.push(Removal {
                key: l.head(file),
                revision: *rev,
                absent: Some(l.target(file)),
            });
        }
    }
    out
}

/// Reads what [`plan`] needs, at one revision.
pub async fn read<K: Kv + 'static>(fleet: &Fleet<K>) -> Result<Snapshot> {
    let l = fleet.layout();
    let kv = fleet.kv().as_ref();
    let data = range_all(kv, Range::prefix(l.data()), 256).await?;
    let mut s = Snapshot::default();
    for e in data.entries {
        match l.parse_data(&e.key) {
            Some(DataKey::Target(f)) => {
                s.targets.insert(f);
            }
            Some(DataKey::Head(f)) => {
                if let Ok(h) = layout::decode::<Head>(&e.key, &e.value) {
                    s.heads.insert(f, (e.mod_revision, h.cert));
                }
            }
            Some(DataKey::Cert(id)) => {
                let parsed = layout::decode::<CertEntry>(&e.key, &e.value)
                    .ok()
                    .and_then(|c| Some((c.key.clone(), not_after(&c.fullchain)?)));
                s.certs.insert(id, (e.mod_revision, parsed));
            }
            Some(DataKey::Key(id)) => {
                s.keys.insert(id, e.mod_revision);
            }
            Some(DataKey::Ari(id)) => {
                s.ari.insert(id, e.mod_revision);
            }
            _ => {}
        }
    }
    let orders = range_all(
        kv,
        Range {
            revision: data.revision,
            ..Range::prefix(l.order(""))
        },
        256,
    )
    .await?;
    s.order_keys = orders
        .entries
        .iter()
        .map(|e| {
            layout::decode::<OrderRecord>(&e.key, &e.value)
                .ok()
                .map(|o| o.key)
        })
        .collect();
    Ok(s)
}

/// The leaf's expiry.
fn not_after(fullchain: &str) -> Option<OffsetDateTime> {
    let ders = crate::cert::split_chain(fullchain).ok()?;
    crate::cert::leaf_info(ders.first()?)
        .ok()
        .map(|l| l.not_after)
}

/// Deletes each of `removals` that still holds.
pub async fn apply<K: Kv + 'static>(fleet: &Fleet<K>, removals: &[Removal]) -> Result<Collected> {
    let l = fleet.layout();
    let mut out = Collected::default();
    for r in removals {
        let mut cmps = vec![Cmp::Modified(r.key.clone(), r.revision)];
        cmps.extend(r.absent.iter().map(|k| Cmp::Created(k.clone(), 0)));
        let done = fleet
            .kv()
            .txn(cmps, vec![Op::Delete(r.key.clone())], vec![])
            .await?;
        if !done.succeeded {
            out.kept += 1;
            continue;
        }
        match l.parse_data(&r.key) {
            Some(DataKey::Cert(_)) => out.certs += 1,
            Some(DataKey::Key(_)) => out.keys += 1,
            Some(DataKey::Ari(_)) => out.ari += 1,
            Some(DataKey::Head(_)) => out.heads += 1,
            _ => {}
        }
    }
    Ok(out)
}

/// Collects now.
pub async fn collect<K: Kv + 'static>(fleet: &Fleet<K>, now: OffsetDateTime) -> Result<Collected> {
    let s = read(fleet).await?;
    apply(fleet, &plan(fleet.layout(), &s, now)).await
}

/// Collects if no node of the fleet did in the last [`EVERY`] (this node takes the turn by
/// a revision-compared write of `x/gc`, so one node collects); `None` when it was not due.
pub async fn collect_daily<K: Kv + 'static>(
    fleet: &Fleet<K>,
    now: OffsetDateTime,
) -> Result<Option<Collected>> {
    let key = fleet.layout().gc();
    let last = fleet.get(&key).await?;
    let revision = last.as_ref().map_or(0, |e| e.mod_revision);
    let when = last
        .and_then(|e| layout::decode::<LastGc>(&e.key, &e.value).ok())
        .and_then(|g| OffsetDateTime::parse(&g.at, &Rfc3339).ok());
    if when.is_some_and(|at| at + EVERY > now && at <= now) {
        return Ok(None);
    }
    let mine = LastGc {
        at: now.format(&Rfc3339).unwrap_or_default(),
        node: fleet.node().to_owned(),
    };
    let turn = fleet
        .kv()
        .txn(
            vec![Cmp::Modified(key.clone(), revision)],
            vec![Op::put(key, layout::encode(&mine))],
            vec![],
        )
        .await?;
    if !turn.succeeded {
        return Ok(None);
    }
    collect(fleet, now).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn id(c: char) -> String {
        c.to_string().repeat(52)
    }

    #[test]
    fn only_what_no_wanted_target_uses_goes_and_expired_certificates_only() {
        let l = Layout::new("/p/");
        let now = datetime!(2026-12-01 04:00 UTC);
        let (past, future) = (
            now - time::Duration::days(1),
            now + time::Duration::days(30),
        );
        let (cur, old, kept, exp_head, gone_target) = (id('a'), id('b'), id('c'), id('d'), id('e'));
        let key = |c| id(c);
        let s = Snapshot {
            targets: ["shop".to_owned(), "mail".to_owned()].into(),
            heads: [
                ("shop".to_owned(), (10, cur.clone())),
                ("mail".to_owned(), (11, exp_head.clone())),
                ("unwanted".to_owned(), (12, gone_target.clone())),
            ]
            .into(),
            certs: [
                // shop's now; its expired predecessor; a valid one no head names;
                // mail's expired one (still its head); the unwanted target's expired one.
                (cur.clone(), (1, Some((key('k'), future)))),
                (old.clone(), (2, Some((key('l'), past)))),
                (kept.clone(), (3, Some((key('m'), future)))),
                (exp_head.clone(), (4, Some((key('n'), past)))),
                (gone_target.clone(), (5, Some((key('o'), past)))),
            ]
            .into(),
            keys: [
                (key('k'), 20),
                (key('l'), 21),
                (key('m'), 22),
                (key('n'), 23),
                (key('o'), 24),
                // Sealed for an order in progress, and for one abandoned before finalize.
                (key('p'), 25),
                (key('q'), 26),
            ]
            .into(),
            ari: [
                (cur.clone(), 30),
                (old.clone(), 31),
                (kept.clone(), 32),
                (exp_head.clone(), 33),
            ]
            .into(),
            order_keys: Some([key('p')].into()),
        };
        let plain = |key: String, revision| Removal {
            key,
            revision,
            absent: None,
        };
        assert_eq!(
            plan(&l, &s, now),
            vec![
                plain(l.cert(&old), 2),
                plain(l.cert(&gone_target), 5),
                plain(l.private_key(&key('l')), 21),
                plain(l.private_key(&key('o')), 24),
                plain(l.private_key(&key('q')), 26),
                plain(l.ari(&old), 31),
                plain(l.ari(&kept), 32),
                plain(l.ari(&exp_head), 33),
                Removal {
                    key: l.head("unwanted"),
                    revision: 12,
                    absent: Some(l.target("unwanted")),
                },
            ]
        );
        // A certificate or order that cannot be read: no key is removed.
        let mut unsure = Snapshot {
            order_keys: None,
            ..Snapshot::default()
        };
        unsure.keys.insert(key('q'), 26);
        assert!(plan(&l, &unsure, now).is_empty());
        unsure.order_keys = Some(BTreeSet::new());
        unsure.certs.insert(old.clone(), (2, None));
        assert!(plan(&l, &unsure, now).is_empty());
    }
}
