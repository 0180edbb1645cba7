//! The fleet protocol over [`Kv`]: run leases, per-target locks, fenced writes, sealed
//! secrets, http-01 tokens.
//!
//! A lock is `P/x/locks/<file>`, created only if absent and bound to the run's lease: a node
//! that dies (or is paused, or cut off) loses it when the lease runs out. The lock key's
//! `create_revision` is the fencing token: every write that matters is a transaction that
//! compares it, so a node whose lease ran out while it was paused can never overwrite what
//! the next holder recorded (certmagic recommends fencing tokens and uses none; its stale and
//! racing locks are the failures a fleet meets most). Taking a lock also returns, in the same
//! transaction, what the target looks like now (head, order in progress, run record), so the
//! re-check after locking is done on the same snapshot as the lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::config::ClusterConf;
use super::kv::{Cmp, Entry, Kv, KvError, LeaseId, Op, Range};
use super::layout::{self, Head, Layout, LockInfo, OrderRecord};
use super::seal::ClusterKeys;
use crate::store::TargetRecord;

/// One node's handle on the fleet.
pub struct Fleet<K> {
    kv: Arc<K>,
    layout: Layout,
    node: String,
    keys: ClusterKeys,
    conf: ClusterConf,
}

impl<K> std::fmt::Debug for Fleet<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("prefix", &self.layout.prefix())
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The outcome of trying to lock a target.
#[derive(Debug)]
pub enum Lock {
    /// We hold it.
    Held(Box<Held>),
    /// Another node holds it.
    Elsewhere(LockInfo),
}

/// A lock we hold, with the target as it was when we took it.
#[derive(Debug, Clone)]
pub struct Held {
    /// Target file.
    pub file: String,
    /// The fencing token (the lock key's `create_revision`).
    pub token: i64,
    /// The target's head then.
    pub head: Option<Head>,
    /// An order a previous holder left.
    pub order: Option<OrderRecord>,
    /// The fleet's run record of the target.
    pub run: Option<TargetRecord>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl<K: Kv + 'static> Fleet<K> {
    /// The fleet of `conf`, reached through `kv`, with this node's secret keys.
    pub fn new(kv: K, conf: ClusterConf, keys: ClusterKeys) -> Fleet<K> {
        Fleet {
            kv: Arc::new(kv),
            layout: Layout::new(&conf.prefix),
            node: conf.node.clone(),
            keys,
            conf,
        }
    }

    /// The store.
    pub fn kv(&self) -> &Arc<K> {
        &self.kv
    }

    /// Key names.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `conf/cluster`.
    pub fn conf(&self) -> &ClusterConf {
        &self.conf
    }

    /// The cluster secret keys.
    pub fn keys(&self) -> &ClusterKeys {
        &self.keys
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        Ok(self
            .kv
            .txn(vec![], vec![Op::Get(key.to_owned())], vec![])
            .await?
            .got
            .pop()
            .flatten())
    }

    /// Reads several keys in one round trip (at most 128, etcd's limit per transaction).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, KvError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_TXN_OPS) {
            let ops = chunk.iter().map(|k| Op::Get(k.clone())).collect();
            out.extend(self.kv.txn(vec![], ops, vec![]).await?.got);
        }
        Ok(out)
    }

    /// Whether the fleet is initialised under the prefix (`P/v`), and with which layout.
    pub async fn version(&self) -> Result<Option<String>, KvError> {
        Ok(self
            .get(&self.layout.version())
            .await?
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// Checks that the prefix holds a fleet of a layout this version reads.
    pub async fn check_initialised(&self) -> Result<()> {
        match self.version().await? {
            Some(v) if v == layout::VERSION => Ok(()),
            Some(v) => Err(crate::exit::config_error(anyhow!(
                "the fleet under {} has layout version {v:?}, which this acmekeep does not read (it reads {})",
                self.layout.prefix(),
                layout::VERSION
            ))),
            None => Err(crate::exit::config_error(anyhow!(
                "there is no fleet under {} yet: run `acmekeep cluster-init` on the first node",
                self.layout.prefix()
            ))),
        }
    }

    /// Tries to lock `file` for the run holding `lease`.
    pub async fn try_lock(&self, file: &str, lease: LeaseId, now: OffsetDateTime) -> Result<Lock> {
        let key = self.layout.lock(file);
        let info = LockInfo {
            node: self.node.clone(),
            pid: std::process::id(),
            since: rfc3339(now),
        };
        let out = self
            .kv
            .txn(
                vec![Cmp::Created(key.clone(), 0)],
                vec![
                    Op::put_leased(key.clone(), layout::encode(&info), lease),
                    Op::Get(key.clone()),
                    Op::Get(self.layout.head(file)),
                    Op::Get(self.layout.order(file)),
                    Op::Get(self.layout.run(file)),
                ],
                vec![
                    Op::Get(key.clone()),
                    Op::Get(self.layout.head(file)),
                    Op::Get(self.layout.order(file)),
                    Op::Get(self.layout.run(file)),
                ],
            )
            .await?;
        let mut got = out.got.into_iter();
        let lock = got
            .next()
            .flatten()
            .ok_or_else(|| anyhow!("{key}: the lock vanished as it was taken"))?;
        let holder: LockInfo = layout::decode(&key, &lock.value)?;
        // A retried transaction whose first attempt took the lock finds it ours.
        let ours = out.succeeded || (lock.lease == lease && holder.node == self.node);
        if !ours {
            return Ok(Lock::Elsewhere(holder));
        }
        let head = got
            .next()
            .flatten()
            .map(|e| layout::decode::<Head>(&e.key, &e.value))
            .transpose()?;
        let order = got
            .next()
            .flatten()
            .map(|e| layout::decode::<OrderRecord>(&e.key, &e.value))
            .transpose()?;
        let run = got
            .next()
            .flatten()
            .map(|e| layout::decode::<TargetRecord>(&e.key, &e.value))
            .transpose()?;
        Ok(Lock::Held(Box::new(Held {
            file: file.to_owned(),
            token: lock.create_revision,
            head,
            order,
            run,
        })))
    }

    /// Runs `ops` only while we still hold the lock `held` (the fencing check). `false`: the
    /// lock is gone (our lease ran out) and nothing was written.
    pub async fn fenced(&self, held: &Held, ops: Vec<Op>) -> Result<bool, KvError> {
        let out = self
            .kv
            .txn(
                vec![Cmp::Created(self.layout.lock(&held.file), held.token)],
                ops,
                vec![],
            )
            .await?;
        Ok(out.succeeded)
    }

    /// [`Fleet::fenced`], as an error naming what could not be recorded when the lock is
    /// gone.
    pub async fn fenced_or_lost(&self, held: &Held, ops: Vec<Op>, what: &str) -> Result<()> {
        match self.fenced(held, ops).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(anyhow::Error::new(LostLock {
                file: held.file.clone(),
                what: what.to_owned(),
            })),
            Err(e) => Err(anyhow::Error::new(e).context(format!("recording {what}"))),
        }
    }

    /// Releases a lock we hold (if it is still ours).
    pub async fn release(&self, held: &Held) {
        let key = self.layout.lock(&held.file);
        if let Err(e) = self
            .kv
            .txn(
                vec![Cmp::Created(key.clone(), held.token)],
                vec![Op::Delete(key)],
                vec![],
            )
            .await
        {
            // The lease ends with the run anyway.
            tracing::debug!("releasing the lock on desired/{}: {e}", held.file);
        }
    }

    /// Who holds the lock of each of `files` now (`None`: nobody).
    pub async fn holders(&self, files: &[String]) -> Result<Vec<Option<LockInfo>>, KvError> {
        let keys: Vec<String> = files.iter().map(|f| self.layout.lock(f)).collect();
        Ok(self
            .get_many(&keys)
            .await?
            .into_iter()
            .map(|e| e.and_then(|e| layout::decode(&e.key, &e.value).ok()))
            .collect())
    }

    /// The sealed form of a private key for `P/d/keys/<id>`.
    pub fn seal_key(&self, id: &str, pem: &str) -> Result<Vec<u8>> {
        self.keys.seal(&layout::key_slot(id), pem.as_bytes())
    }

    /// The sealed form of an account key for `P/d/accounts/<account>`.
    pub fn seal_account(&self, account: &str, pem: &str) -> Result<Vec<u8>> {
        self.keys
            .seal(&layout::account_slot(account), pem.as_bytes())
    }

    /// Opens a sealed value of `slot`, read from `key`, as PEM text.
    pub fn open(&self, key: &str, slot: &str, sealed: &[u8]) -> Result<Zeroizing<String>> {
        let plain = self
            .keys
            .open(slot, sealed)
            .map_err(|e| anyhow!("{key}: {e}"))?;
        let text = std::str::from_utf8(&plain).map_err(|_| anyhow!("{key}: not PEM text"))?;
        Ok(Zeroizing::new(text.to_owned()))
    }

    /// The private key `id`, from `P/d/keys/<id>`, if the fleet has it.
    pub async fn private_key(&self, id: &str) -> Result<Option<Zeroizing<String>>> {
        let key = self.layout.private_key(id);
        match self.get(&key).await? {
            None => Ok(None),
            Some(e) => self.open(&key, &layout::key_slot(id), &e.value).map(Some),
        }
    }

    /// The pause the CA at `origin` asked the fleet for, if one is in force at `now` (a
    /// pause past its time is ignored even before its lease takes it away).
    pub async fn ca_pause(
        &self,
        origin: &str,
        now: OffsetDateTime,
    ) -> Result<Option<layout::Pause>> {
        let key = self.layout.pause(origin);
        let Some(e) = self.get(&key).await? else {
            return Ok(None);
        };
        let p: layout::Pause = layout::decode(&e.key, &e.value)?;
        Ok(pause_until(&p, origin)
            .filter(|until| *until > now)
            .map(|_| p))
    }

    /// Records that the CA at `origin` told this node at `now` to slow down until `until`,
    /// for every order there: bound to a lease of the pause's length, so it goes by itself.
    /// A longer pause already recorded is kept.
    pub async fn pause_ca(
        &self,
        origin: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<()> {
        if let Some(p) = self.ca_pause(origin, now).await?
            && pause_until(&p, origin).is_some_and(|u| u >= until)
        {
            return Ok(());
        }
        // Whole seconds, rounded up, and at least etcd's shortest useful lease.
        let secs = (until - now).whole_seconds().max(0) as u64 + 1;
        let lease = self.kv.grant(Duration::from_secs(secs.max(5))).await?;
        let p = layout::Pause {
            origin: origin.to_owned(),
            until: until
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            node: self.node.clone(),
        };
        self.kv
            .txn(
                vec![],
                vec![Op::put_leased(
                    self.layout.pause(origin),
                    layout::encode(&p),
                    lease,
                )],
                vec![],
            )
            .await?;
        Ok(())
    }

    /// Publishes an http-01 token for the fleet's agents, bound to `lease` (it vanishes with
    /// the orderer).
    pub async fn publish_token(&self, lease: LeaseId, token: &str, key_auth: &str) -> Result<()> {
        self.kv
            .txn(
                vec![],
                vec![Op::put_leased(
                    self.layout.token(token),
                    key_auth.as_bytes().to_vec(),
                    lease,
                )],
                vec![],
            )
            .await
            .context("publishing an http-01 token to the fleet")?;
        Ok(())
    }

    /// Withdraws a published token.
    pub async fn withdraw_token(&self, token: &str) {
        if let Err(e) = self
            .kv
            .txn(vec![], vec![Op::Delete(self.layout.token(token))], vec![])
            .await
        {
            tracing::debug!("withdrawing http-01 token {token}: {e}");
        }
    }

    /// The nodes whose agents run now.
    pub async fn agents(&self) -> Result<Vec<String>, KvError> {
        let dir = self.layout.agents();
        let r = self
            .kv
            .range(Range {
                keys_only: true,
                ..Range::prefix(dir.clone())
            })
            .await?;
        Ok(r.entries
            .iter()
            .filter_map(|e| self.layout.name_under(&dir, &e.key).map(str::to_owned))
            .collect())
    }

    /// Waits until every agent of `agents` acknowledged `token`, at most `wait`; returns
    /// those that did not.
    pub async fn wait_acks(&self, token: &str, agents: &[String], wait: Duration) -> Vec<String> {
        let dir = self.layout.acks(token);
        let deadline = tokio::time::Instant::now() + wait;
        let mut missing: Vec<String> = agents.to_vec();
        loop {
            if let Ok(r) = self
                .kv
                .range(Range {
                    keys_only: true,
                    ..Range::prefix(dir.clone())
                })
                .await
            {
                let acked: Vec<&str> = r
                    .entries
                    .iter()
                    .filter_map(|e| self.layout.name_under(&dir, &e.key))
                    .collect();
                missing.retain(|n| !acked.contains(&n.as_str()));
            }
            if missing.is_empty() || tokio::time::Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// etcd's default limit of operations in one transaction (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// A fenced write was refused: the lock is gone.
#[derive(Debug, thiserror::Error)]
#[error(
    "lost the lock on desired/{file} before recording {what} (this process was paused or cut off from etcd longer than the lock TTL); the node that holds it now finishes the target"
)]
pub struct LostLock {
    /// Target file.
    pub file: String,
    /// What was not recorded.
    pub what: String,
}

/// A run's lease, kept alive by a task every TTL/3 until the run ends. When keep-alives
/// fail for longer than the TTL allows, or etcd says the lease is gone, [`RunLease::lost`]
/// turns true and the run starts nothing new (fencing makes that a matter of wasted work,
/// not of correctness).
#[derive(Debug)]
pub struct RunLease {
    id: LeaseId,
    lost: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunLease {
    /// Grants a lease of `ttl` and starts keeping it alive.
    pub async fn grant<K: Kv + 'static>(kv: &Arc<K>, ttl: Duration) -> Result<RunLease, KvError> {
        let id = kv.grant(ttl).await?;
        let lost = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(keep_alive(kv.clone(), id, ttl, lost.clone()));
        Ok(RunLease { id, lost, task })
    }

    /// The lease id.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// Whether the lease is (probably) gone.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Ends the lease: every lock and token of the run goes at once.
    pub async fn revoke<K: Kv>(self, kv: &K) {
        self.task.abort();
        if let Err(e) = kv.revoke(self.id).await {
            tracing::debug!("revoking the run's lease: {e} (it runs out by itself)");
        }
    }
}

impl Drop for RunLease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_alive<K: Kv>(kv: Arc<K>, id: LeaseId, ttl: Duration, lost: Arc<AtomicBool>) {
    let every = ttl / 3;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match kv.keep_alive(id).await {
            Ok(()) => last_ok = tokio::time::Instant::now(),
            Err(KvError::LeaseGone) => {
                lost.store(true, Ordering::Relaxed);
                tracing::warn!("the run's etcd lease expired: starting nothing new");
                return;
            }
            Err(e) => {
                tracing::debug!("etcd lease keep-alive: {e}");
                if last_ok.elapsed() >= ttl - every {
                    lost.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Until when pause `p`, read under `origin`'s key, holds; `None` when it names another
/// CA or its time does not parse (the value is untrusted: such a pause is ignored).
fn pause_until(p: &layout::Pause, origin: &str) -> Option<OffsetDateTime> {
    if p.origin != origin {
        return None;
    }
    OffsetDateTime::parse(&p.until, &time::format_description::well_known::Rfc3339).ok()
}
#[cfg(test)]
pub(crate) mod tests {
    use super::super::kv::mem::MemKv;
    use super::*;
    use time::macros::datetime;

    fn conf(node: &str) -> ClusterConf {
        super::super::config::parse(
            std::path::Path::new("conf/cluster"),
            &format!(
                "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\nnode: {node}\nlock-ttl: 2s\n"
            ),
            std::path::Path::new("conf"),
            "",
        )
        .expect("conf")
    }

    fn fleet(kv: &MemKv, node: &str, key: &str) -> Fleet<MemKv> {
        Fleet::new(
            kv.clone(),
            conf(node),
            ClusterKeys::parse(key).expect("keys"),
        )
    }

    const NOW: OffsetDateTime = datetime!(2026-12-01 04:00 UTC);

    /// A head naming node `node` (also used by the sync's tests in node.rs).
    pub(crate) fn head(node: &str) -> Vec<u8> {
        layout::encode(&Head {
            cert: "c".repeat(52),
            at: "2026-12-01T04:00:00Z".into(),
            node: node.into(),
        })
    }

    #[tokio::test]
    async fn one_node_holds_a_lock_and_a_paused_holder_cannot_overwrite_the_next() {
        let kv = MemKv::default();
        let key = ClusterKeys::new_line().expect("key");
        let (a, b) = (fleet(&kv, "a", &key), fleet(&kv, "b", &key));
        let la = kv.grant(Duration::from_secs(2)).await.expect("lease");
        let lb = kv.grant(Duration::from_secs(2)).await.expect("lease");
        let Lock::Held(ha) = a.try_lock("t", la, NOW).await.expect("lock") else {
            panic!("a should hold the free lock");
        };
        match b.try_lock("t", lb, NOW).await.expect("lock") {
            Lock::Elsewhere(info) => assert_eq!(info.node, "a"),
            Lock::Held(_) => panic!("b took a held lock"),
        }
        // Taking it again with the same lease (a retried transaction) finds it ours.
        assert!(matches!(
            a.try_lock("t", la, NOW).await.expect("again"),
            Lock::Held(h) if h.token == ha.token
        ));
        assert!(
            a.fenced(&ha, vec![Op::put("/acmekeep/d/heads/t", head("a"))])
                .await
                .expect("fenced")
        );
        // a is paused past its lease; b takes over and records.
        kv.expire(la);
        let Lock::Held(hb) = b.try_lock("t", lb, NOW).await.expect("lock") else {
            panic!("b should take the lock after a's lease ended");
        };
        assert!(hb.token > ha.token);
        assert_eq!(hb.head.as_ref().map(|h| h.node.as_str()), Some("a"));
        assert!(
            b.fenced(&hb, vec![Op::put("/acmekeep/d/heads/t", head("b"))])
                .await
                .expect("fenced")
        );
        // a resumes: its fenced write is refused, b's value stands.
        assert!(
            !a.fenced(&ha, vec![Op::put("/acmekeep/d/heads/t", head("a"))])
                .await
                .expect("fenced")
        );
        assert_eq!(
            kv.get("/acmekeep/d/heads/t").expect("head").value,
            head("b")
        );
        let e = a
            .fenced_or_lost(&ha, vec![], "certificate X")
            .await
            .expect_err("lost");
        assert!(
            e.to_string()
                .contains("lost the lock on desired/t before recording certificate X")
        );
        // b releases: the lock is free again at once.
        b.release(&hb).await;
        assert!(kv.get("/acmekeep/x/locks/t").is_none());
    }

    #[tokio::test]
    async fn a_pause_one_node_was_told_holds_for_every_node_until_its_time() {
        let kv = MemKv::default();
        let key = ClusterKeys::new_line().expect("key");
        let (a, b) = (fleet(&kv, "a", &key), fleet(&kv, "b", &key));
        let ca = "https://ca.example";
        let hour = time::Duration::hours(1);
        assert_eq!(b.ca_pause(ca, NOW).await.expect("read"), None);
        a.pause_ca(ca, NOW + hour, NOW).await.expect("pause");
        let p = b.ca_pause(ca, NOW).await.expect("read").expect("paused");
        assert_eq!(
            (p.node.as_str(), p.until.as_str()),
            ("a", "2026-12-01T05:00:00Z")
        );
        // Another CA is not paused; past its time the pause no longer holds.
        assert_eq!(
            b.ca_pause("https://other.example", NOW)
                .await
                .expect("read"),
            None
        );
        assert_eq!(b.ca_pause(ca, NOW + hour).await.expect("read"), None);
        // A shorter pause told to b later keeps the longer one.
        b.pause_ca(ca, NOW + time::Duration::minutes(5), NOW)
            .await
            .expect("pause");
        let p = a.ca_pause(ca, NOW).await.expect("read").expect("paused");
        assert_eq!(p.node, "a");
        // Bound to a lease: it goes by itself.
        let e = kv.get(&a.layout().pause(ca)).expect("recorded");
        kv.expire(e.lease);
        assert_eq!(b.ca_pause(ca, NOW).await.expect("read"), None);
        // A value naming another CA under this CA's key is not believed.
        let forged = layout::Pause {
            origin: "https://other.example".into(),
            until: "2026-12-01T05:00:00Z".into(),
            node: "x".into(),
        };
        kv.txn(
            vec![],
            vec![Op::put(a.layout().pause(ca), layout::encode(&forged))],
            vec![],
        )
        .await
        .expect("put");
        assert_eq!(b.ca_pause(ca, NOW).await.expect("read"), None);
    }

    #[tokio::test]
    async fn the_lock_transaction_returns_what_the_target_looks_like() {
        let kv = MemKv::default();
        let key = ClusterKeys::new_line().expect("key");
        let a = fleet(&kv, "a", &key);
        let head = Head {
            cert: "c".repeat(52),
            at: "2026-11-30T00:00:00Z".into(),
            node: "b".into(),
        };
        let run = TargetRecord {
            failures: 2,
            next_attempt: Some(time::macros::datetime!(2026-12-01 05:00 UTC)),
            ..TargetRecord::default()
        };
        kv.txn(
            vec![],
            vec![
                Op::put("/acmekeep/d/heads/t", layout::encode(&head)),
                Op::put("/acmekeep/d/runs/t", layout::encode(&run)),
            ],
            vec![],
        )
        .await
        .expect("put");
        let lease = kv.grant(Duration::from_secs(2)).await.expect("lease");
        let Lock::Held(h) = a.try_lock("t", lease, NOW).await.expect("lock") else {
            panic!("free lock");
        };
        assert_eq!(h.head, Some(head));
        assert_eq!(h.run, Some(run));
        assert_eq!(h.order, None);
    }

    #[tokio::test]
    async fn sealed_keys_round_trip_through_the_fleet_and_a_node_without_the_key_says_which() {
        let kv = MemKv::default();
        let (k1, k2) = (
            ClusterKeys::new_line().expect("k1"),
            ClusterKeys::new_line().expect("k2"),
        );
        let a = fleet(&kv, "a", &k1);
        let id = "k".repeat(52);
        let pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let sealed = a.seal_key(&id, pem).expect("seal");
        kv.txn(
            vec![],
            vec![Op::put(a.layout().private_key(&id), sealed)],
            vec![],
        )
        .await
        .expect("put");
        assert_eq!(
            a.private_key(&id)
                .await
                .expect("opens")
                .as_deref()
                .map(|s| s.as_str()),
            Some(pem)
        );
        let b = fleet(&kv, "b", &k2);
        let e = b.private_key(&id).await.expect_err("other key");
        assert!(
            e.to_string().contains(&format!(
                "sealed under cluster key {}",
                a.keys().sealing_id()
            )),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_lease_lost_is_noticed_by_the_keep_alive_task() {
        let kv = Arc::new(MemKv::default());
        let lease = RunLease::grant(&kv, Duration::from_millis(300))
            .await
            .expect("lease");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!lease.lost());
        kv.expire(lease.id());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(lease.lost());
    }
}
