//! The seam between the fleet protocol and etcd: the few etcd v3 calls acmekeep makes, in
//! our own types.
//!
//! [`Kv`] is implemented by [`super::etcd::EtcdKv`] (the real cluster, through etcd-client)
//! and, for unit tests of the protocol, by an in-memory double with etcd's semantics for
//! these calls (revisions, `create_revision` compares, leases that take their keys with
//! them). Every behaviour that matters is also tested against a real three-member etcd.

use std::future::Future;
use std::time::Duration;

/// An etcd lease id.
pub type LeaseId = i64;

/// A key and its value, as etcd holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Key.
    pub key: String,
    /// Value (empty in keys-only ranges).
    pub value: Vec<u8>,
    /// Revision at which the key was created (its incarnation: the fencing token of a lock).
    pub create_revision: i64,
    /// Revision of its last change.
    pub mod_revision: i64,
    /// The lease it is bound to (0: none).
    pub lease: LeaseId,
}

/// A transaction's guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// The key's `create_revision` equals this (0: the key does not exist).
    Created(String, i64),
    /// The key's `mod_revision` equals this (0: the key does not exist).
    Modified(String, i64),
}

/// A transaction's operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Puts a value, bound to a lease if given.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Lease to bind it to.
        lease: Option<LeaseId>,
    },
    /// Reads one key (its result is in [`TxnOutcome::got`], in order).
    Get(String),
    /// Deletes one key.
    Delete(String),
}

impl Op {
    /// A put without a lease.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    /// A put bound to `lease`.
    pub fn put_leased(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: LeaseId) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }
}

/// What a transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether the guard held (the `then` branch ran).
    pub succeeded: bool,
    /// The store's revision after it.
    pub revision: i64,
    /// The results of the branch's [`Op::Get`]s, in order.
    pub got: Vec<Option<Entry>>,
}

/// A range read over the keys beginning with `prefix`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// Keys beginning with this.
    pub prefix: String,
    /// Start at this key (paging), else at `prefix`.
    pub from: Option<String>,
    /// Only keys changed at or after this revision (0: all).
    pub min_mod_revision: i64,
    /// Read at this revision (0: the latest).
    pub revision: i64,
    /// At most this many keys (0: no limit).
    pub limit: i64,
    /// Keys and revisions only, no values.
    pub keys_only: bool,
    /// The count only.
    pub count_only: bool,
}

impl Range {
    /// Every key under `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Range {
        Range {
            prefix: prefix.into(),
            ..Range::default()
        }
    }
}

/// A range read's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// The keys, in key order.
    pub entries: Vec<Entry>,
    /// More keys follow (the limit cut the answer).
    pub more: bool,
    /// Number of keys in the range at that revision, before `min_mod_revision` filtering.
    pub count: i64,
    /// The revision it was read at.
    pub revision: i64,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or changed.
    Put(Entry),
    /// A key was deleted (or its lease ended), at `revision`.
    Delete {
        /// Key.
        key: String,
        /// Revision of the deletion.
        revision: i64,
    },
}

/// Why an etcd call failed, as far as acmekeep must tell the cases apart.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KvError {
    /// No member answers, or none has a leader: the cluster is unavailable (nothing is
    /// ordered; exit 69).
    #[error("{0}")]
    Unavailable(String),
    /// The cluster refused us (authentication, permissions, TLS): a configuration error.
    #[error("{0}")]
    Refused(String),
    /// The lease is gone (expired or revoked): every lock bound to it is lost.
    #[error("the lease expired (this process was paused or cut off longer than the lock TTL)")]
    LeaseGone,
    /// A history older than the cluster keeps was asked for (a watch after compaction).
    #[error("{0}")]
    Compacted(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// The etcd calls acmekeep makes.
pub trait Kv: Send + Sync {
    /// A watch's stream of changes.
    type Watch: Watch;

    /// `if all(when) then … else …`, atomically.
    fn txn(
        &self,
        when: Vec<Cmp>,
        then: Vec<Op>,
        otherwise: Vec<Op>,
    ) -> impl Future<Output = Result<TxnOutcome, KvError>> + Send;

    /// One page of a range read.
    fn range(&self, range: Range) -> impl Future<Output = Result<RangeResult, KvError>> + Send;

    /// A new lease of `ttl`.
    fn grant(&self, ttl: Duration) -> impl Future<Output = Result<LeaseId, KvError>> + Send;

    /// Keeps `lease` alive; [`KvError::LeaseGone`] once it is gone.
    fn keep_alive(&self, lease: LeaseId) -> impl Future<Output = Result<(), KvError>> + Send;

    /// Ends `lease`: every key bound to it goes.
    fn revoke(&self, lease: LeaseId) -> impl Future<Output = Result<(), KvError>> + Send;

    /// Watches the keys under `prefix` from revision `from` (0: from now).
    fn watch(
        &self,
        prefix: &str,
        from: i64,
    ) -> impl Future<Output = Result<Self::Watch, KvError>> + Send;
}

/// A stream of watch events.
pub trait Watch: Send {
    /// The next batch of events; `None` when the watch ended.
    fn next(&mut self) -> impl Future<Output = Result<Option<Vec<WatchEvent>>, KvError>> + Send;
}

/// Reads every key under `range.prefix` (respecting its filters) in pages of `page` keys,
/// all at one revision; returns them and that revision. The count is of the whole range.
pub async fn range_all<K: Kv>(kv: &K, range: Range, page: i64) -> Result<RangeResult, KvError> {
    let mut out = RangeResult::default();
    let mut r = Range {
        limit: page,
        ..range
    };
    loop {
        let got = kv.range(r.clone()).await?;
        if out.revision == 0 {
            out.revision = got.revision;
            out.count = got.count;
            r.revision = got.revision;
        }
        let last = got.entries.last().map(|e| e.key.clone());
        out.entries.extend(got.entries);
        match (got.more, last) {
            (true, Some(mut last)) => {
                // The next key after `last`.
                last.push('\0');
                r.from = Some(last);
            }
            _ => break,
        }
    }
    Ok(out)
}

/// The in-memory double of [`Kv`], for unit tests of the protocol.
#[cfg(test)]
pub mod mem {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    #[derive(Default)]
    struct State {
        revision: i64,
        map: BTreeMap<String, Entry>,
        leases: HashMap<LeaseId, bool>,
        next_lease: LeaseId,
        watchers: Vec<(String, mpsc::UnboundedSender<Vec<WatchEvent>>)>,
        down: bool,
    }

    /// etcd in a mutex.
    #[derive(Clone, Default)]
    pub struct MemKv(Arc<Mutex<State>>);

    impl std::fmt::Debug for MemKv {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("MemKv")
        }
    }

    impl MemKv {
        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Ends a lease as its expiry would.
        pub fn expire(&self, lease: LeaseId) {
            let mut s = self.state();
            s.leases.remove(&lease);
            let gone: Vec<String> = s
                .map
                .values()
                .filter(|e| e.lease == lease)
                .map(|e| e.key.clone())
                .collect();
            if gone.is_empty() {
                return;
            }
            s.revision += 1;
            let rev = s.revision;
            let events: Vec<WatchEvent> = gone
                .iter()
                .map(|k| {
                    s.map.remove(k);
                    WatchEvent::Delete {
                        key: k.clone(),
                        revision: rev,
                    }
                })
                .collect();
            notify(&mut s, &events);
        }

        /// Makes every call fail as a cluster without quorum does.
        pub fn set_down(&self, down: bool) {
            self.state().down = down;
        }

        /// The value of `key`.
        pub fn get(&self, key: &str) -> Option<Entry> {
            self.state().map.get(key).cloned()
        }

        /// Every key.
        pub fn keys(&self) -> Vec<String> {
            self.state().map.keys().cloned().collect()
        }

        fn check(&self) -> Result<(), KvError> {
            if self.state().down {
                Err(KvError::Unavailable("etcdserver: no leader".into()))
            } else {
                Ok(())
            }
        }
    }

    fn notify(s: &mut State, events: &[WatchEvent]) {
        s.watchers.retain(|(prefix, tx)| {
            let mine: Vec<WatchEvent> = events
                .iter()
                .filter(|e| match e {
                    WatchEvent::Put(e) => e.key.starts_with(prefix.as_str()),
                    WatchEvent::Delete { key, .. } => key.starts_with(prefix.as_str()),
                })
                .cloned()
                .collect();
            mine.is_empty() || tx.send(mine).is_ok()
        });
    }

    fn holds(s: &State, c: &Cmp) -> bool {
        match c {
            Cmp::Created(k, r) => s.map.get(k).map_or(0, |e| e.create_revision) == *r,
            Cmp::Modified(k, r) => s.map.get(k).map_or(0, |e| e.mod_revision) == *r,
        }
    }

    impl Kv for MemKv {
        type Watch = MemWatch;

        async fn txn(
            &self,
            when: Vec<Cmp>,
            then: Vec<Op>,
            otherwise: Vec<Op>,
        ) -> Result<TxnOutcome, KvError> {
            self.check()?;
            let mut s = self.state();
            let succeeded = when.iter().all(|c| holds(&s, c));
            let ops = if succeeded { then } else { otherwise };
            for op in &ops {
                if let Op::Put { lease: Some(l), .. } = op
                    && !s.leases.contains_key(l)
                {
                    return Err(KvError::LeaseGone);
                }
            }
            let writes = ops.iter().any(|o| !matches!(o, Op::Get(_)));
            if writes {
                s.revision += 1;
            }
            let rev = s.revision;
            let mut got = Vec::new();
            let mut events = Vec::new();
            for op in ops {
                match op {
                    Op::Get(k) => got.push(s.map.get(&k).cloned()),
                    Op::Put { key, value, lease } => {
                        let create = s.map.get(&key).map_or(rev, |e| e.create_revision);
                        let e = Entry {
                            key: key.clone(),
                            value,
                            create_revision: create,
                            mod_revision: rev,
                            lease: lease.unwrap_or(0),
                        };
                        events.push(WatchEvent::Put(e.clone()));
                        s.map.insert(key, e);
                    }
                    Op::Delete(k) => {
                        if s.map.remove(&k).is_some() {
                            events.push(WatchEvent::Delete {
                                key: k,
                                revision: rev,
                            });
                        }
                    }
                }
            }
            notify(&mut s, &events);
            Ok(TxnOutcome {
                succeeded,
                revision: rev,
                got,
            })
        }

        async fn range(&self, r: Range) -> Result<RangeResult, KvError> {
            self.check()?;
            let s = self.state();
            let start = r.from.clone().unwrap_or_else(|| r.prefix.clone());
            let all: Vec<&Entry> = s
                .map
                .range(start..)
                .take_while(|(k, _)| k.starts_with(&r.prefix))
                .map(|(_, e)| e)
                .collect();
            let count = s.map.keys().filter(|k| k.starts_with(&r.prefix)).count() as i64;
            let mut entries: Vec<Entry> = all
                .into_iter()
                .filter(|e| e.mod_revision >= r.min_mod_revision)
                .cloned()
                .collect();
            let mut more = false;
            if r.limit > 0 && entries.len() as i64 > r.limit {
                entries.truncate(r.limit as usize);
                more = true;
            }
            if r.keys_only {
                for e in &mut entries {
                    e.value.clear();
                }
            }
            if r.count_only {
                entries.clear();
            }
            Ok(RangeResult {
                entries,
                more,
                count,
                revision: s.revision,
            })
        }

        async fn grant(&self, _ttl: Duration) -> Result<LeaseId, KvError> {
            self.check()?;
            let mut s = self.state();
            s.next_lease += 1;
            let id = s.next_lease + 0x1000;
            s.leases.insert(id, true);
            Ok(id)
        }

        async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError> {
            self.check()?;
            if self.state().leases.contains_key(&lease) {
                Ok(())
            } else {
                Err(KvError::LeaseGone)
            }
        }

        async fn revoke(&self, lease: LeaseId) -> Result<(), KvError> {
            self.check()?;
            self.expire(lease);
            Ok(())
        }

        async fn watch(&self, prefix: &str, _from: i64) -> Result<MemWatch, KvError> {
            self.check()?;
            let (tx, rx) = mpsc::unbounded_channel();
            self.state().watchers.push((prefix.to_owned(), tx));
            Ok(MemWatch(rx))
        }
    }

    /// A watch on [`MemKv`] (changes from the moment it was made).
    pub struct MemWatch(mpsc::UnboundedReceiver<Vec<WatchEvent>>);

    impl Watch for MemWatch {
        async fn next(&mut self) -> Result<Option<Vec<WatchEvent>>, KvError> {
            Ok(self.0.recv().await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mem::MemKv;
    use super::*;

    #[tokio::test]
    async fn paged_ranges_read_everything_at_one_revision() {
        let kv = MemKv::default();
        for i in 0..25 {
            kv.txn(vec![], vec![Op::put(format!("/p/k{i:03}"), "v")], vec![])
                .await
                .expect("put");
        }
        kv.txn(vec![], vec![Op::put("/q", "other")], vec![])
            .await
            .expect("put");
        let all = range_all(&kv, Range::prefix("/p/"), 7)
            .await
            .expect("range");
        assert_eq!(all.entries.len(), 25);
        assert_eq!(all.count, 25);
        assert_eq!(all.entries[24].key, "/p/k024");
        let changed = range_all(
            &kv,
            Range {
                min_mod_revision: 20,
                ..Range::prefix("/p/")
            },
            4,
        )
        .await
        .expect("range");
        assert_eq!(changed.entries.len(), 6, "{changed:?}");
        assert_eq!(changed.count, 25);
    }
}
