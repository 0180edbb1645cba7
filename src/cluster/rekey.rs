//! `acmekeep cluster-rekey`: every secret the fleet holds sealed (certificate keys under
//! `P/d/keys/`, account keys under `P/d/accounts/`) is sealed again under this node's first
//! cluster key, the step of a rotation that lets the old key go (doc/cluster.md).
//!
//! Each secret is opened with whichever key of the file sealed it and written back sealed
//! under the first key in a transaction that compares the value's revision: a secret another
//! node wrote meanwhile is read again, never overwritten. A secret sealed under a key this
//! node lacks stays as it is and is named; the run then fails, so that the old key is not
//! removed while something still needs it.

use anyhow::Result;

use super::fleet::Fleet;
use super::kv::{Cmp, Entry, Kv, Op, Range, range_all};
use super::layout::{self, DataKey};
use super::seal::ClusterKeys;

/// What a re-keying did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rekeyed {
    /// The key every secret is sealed under now.
    pub key: String,
    /// Secrets sealed again.
    pub resealed: usize,
    /// Secrets that were sealed under it already.
    pub already: usize,
    /// Secrets that could not be opened here, with why (`P/d/…` key: reason).
    pub failed: Vec<String>,
}

/// How many times a secret changed by another node meanwhile is read again.
const RETRIES: usize = 3;

/// Seals every secret of the fleet again under this node's first key (see the module).
pub async fn rekey<K: Kv + 'static>(fleet: &Fleet<K>) -> Result<Rekeyed> {
    let l = fleet.layout();
    let mut out = Rekeyed {
        key: fleet.keys().sealing_id(),
        ..Rekeyed::default()
    };
    for dir in [l.private_key(""), l.account("")] {
        let found = range_all(fleet.kv().as_ref(), Range::prefix(dir), 256).await?;
        for e in found.entries {
            let slot = match l.parse_data(&e.key) {
                Some(DataKey::Key(id)) => layout::key_slot(&id),
                Some(DataKey::Account(a)) => layout::account_slot(&a),
                _ => continue,
            };
            match reseal(fleet, &slot, e).await {
                Ok(true) => out.resealed += 1,
                Ok(false) => out.already += 1,
                Err(why) => out.failed.push(why),
            }
        }
    }
    Ok(out)
}

/// Seals one secret again unless its sealing key is the first one already (`false`).
async fn reseal<K: Kv + 'static>(
    fleet: &Fleet<K>,
    slot: &str,
    mut e: Entry,
) -> Result<bool, String> {
    for _ in 0..RETRIES {
        if ClusterKeys::sealed_by(&e.value).as_deref() == Some(fleet.keys().sealing_id().as_str()) {
            return Ok(false);
        }
        let plain = fleet
            .open(&e.key, slot, &e.value)
            .map_err(|err| format!("{err:#}"))?;
        let sealed = fleet
            .keys()
            .seal(slot, plain.as_bytes())
            .map_err(|err| format!("{}: {err:#}", e.key))?;
        let r = fleet
            .kv()
            .txn(
                vec![Cmp::Modified(e.key.clone(), e.mod_revision)],
                vec![Op::put(e.key.clone(), sealed)],
                vec![Op::Get(e.key.clone())],
            )
            .await
            .map_err(|err| format!("{}: {err}", e.key))?;
        if r.succeeded {
            return Ok(true);
        }
        // Written by another node meanwhile: read it again.
        match r.got.into_iter().next().flatten() {
            Some(now) => e = now,
            None => return Ok(false),
        }
    }
    Err(format!(
        "{}: changed by other nodes while it was sealed again; run cluster-rekey again",
        e.key
    ))
}

#[cfg(test)]
mod tests {
    use super::super::kv::mem::MemKv;
    use super::*;

    fn fleet(kv: &MemKv, keys: &str) -> Fleet<MemKv> {
        let conf = super::super::config::parse(
            std::path::Path::new("conf/cluster"),
            "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\nnode: a\n",
            std::path::Path::new("conf"),
            "",
        )
        .expect("conf");
        Fleet::new(kv.clone(), conf, ClusterKeys::parse(keys).expect("keys"))
    }

    #[tokio::test]
    async fn every_secret_is_sealed_again_under_the_first_key_and_one_it_cannot_open_is_named() {
        let kv = MemKv::default();
        let (old, new, stranger) = (
            ClusterKeys::new_line().expect("key"),
            ClusterKeys::new_line().expect("key"),
            ClusterKeys::new_line().expect("key"),
        );
        let before = fleet(&kv, &old);
        let (k1, k2) = ("k".repeat(52), "m".repeat(52));
        let part = crate::store::layout::account_url_part("https://ca.example/dir").expect("url");
        let account = format!("{part}/{}", "a".repeat(52));
        let pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let l = before.layout().clone();
        let puts = vec![
            Op::put(l.private_key(&k1), before.seal_key(&k1, pem).expect("seal")),
            Op::put(
                l.account(&account),
                before.seal_account(&account, pem).expect("seal"),
            ),
            Op::put(
                l.private_key(&k2),
                fleet(&kv, &stranger).seal_key(&k2, pem).expect("seal"),
            ),
        ];
        kv.txn(vec![], puts, vec![]).await.expect("put");
        let after = fleet(&kv, &format!("{new}\n{old}\n"));
        let done = rekey(&after).await.expect("rekey");
        assert_eq!(done.resealed, 2);
        assert_eq!(done.already, 0);
        assert_eq!(done.failed.len(), 1, "{:?}", done.failed);
        assert!(done.failed[0].contains(&k2), "{:?}", done.failed);
        // Only the new key is needed now for what this node could open.
        let only_new = fleet(&kv, &new);
        assert_eq!(
            only_new
                .private_key(&k1)
                .await
                .expect("opens")
                .as_deref()
                .map(|s| s.as_str()),
            Some(pem)
        );
        let sealed = kv.get(&l.account(&account)).expect("account").value;
        assert_eq!(
            ClusterKeys::sealed_by(&sealed),
            Some(only_new.keys().sealing_id())
        );
        // Again: nothing to do.
        let again = rekey(&after).await.expect("rekey");
        assert_eq!((again.resealed, again.already), (0, 2));
    }
}
