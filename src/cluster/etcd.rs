//! [`Kv`] on a real etcd v3 cluster, through etcd-client: the only module that names it.
//!
//! etcd-client balances requests over its endpoints without skipping dead members (a request
//! routed to a stopped member fails), so acmekeep chooses the endpoint itself: every
//! endpoint is probed at once (Status, with gRPC's `hasleader` requirement, so a member
//! without quorum answers "no leader" at once instead of timing out), the first with a
//! leader is used, and the reason of every other is kept. When a call fails as unavailable
//! mid-run, the endpoints are probed again and the call is retried once on the new choice:
//! safe for reads and for compare-guarded transactions (the guard makes a repeated write a
//! no-op or a refusal that the caller recognises); a lease survives the switch.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};

use super::config::ClusterConf;
use super::kv::{Cmp, Entry, Kv, KvError, LeaseId, Op, Range, RangeResult, TxnOutcome};
use super::kv::{Watch, WatchEvent};
use super::{MemberStatus, Probe};

/// The etcd cluster of a `conf/cluster`.
pub struct EtcdKv {
    endpoints: Vec<String>,
    options: ConnectOptions,
    timeout: Duration,
    current: Mutex<Option<(String, Client)>>,
    /// Whether conf/cluster gives a client certificate.
    identity: bool,
}

impl std::fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdKv")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdKv {
    /// The cluster `conf` names, with its credentials read (key files checked as secrets);
    /// nothing is connected yet. Errors here are configuration errors.
    pub fn new(conf: &ClusterConf) -> Result<EtcdKv> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(conf.timeout)
            .with_timeout(conf.timeout)
            .with_require_leader(true)
            .with_keep_alive(Duration::from_secs(10), conf.timeout);
        if let Some(tls) = &conf.tls {
            let mut t = TlsOptions::new();
            t = match &tls.ca {
                Some(ca) => t.ca_certificate(Certificate::from_pem(
                    crate::files::read_bounded(ca, 1024 * 1024)
                        .with_context(|| format!("reading tls.ca {}", ca.display()))?,
                )),
                None => t.with_native_roots(),
            };
            if let Some((cert, key)) = &tls.identity {
                let cert_pem = crate::files::read_bounded(cert, 1024 * 1024)
                    .with_context(|| format!("reading tls.cert {}", cert.display()))?;
                let key_pem = super::seal::read_secret_file(key, 64 * 1024).context("tls.key")?;
                t = t.identity(Identity::from_pem(cert_pem, key_pem.as_bytes()));
            }
            options = options.with_tls(t);
        }
        if let Some((user, file)) = &conf.user {
            let pw = super::seal::read_secret_file(file, 4096).context("password-file")?;
            let pw = pw.lines().next().unwrap_or_default().to_owned();
            options = options.with_user(user.clone(), pw);
        }
        Ok(EtcdKv {
            endpoints: conf.endpoints.clone(),
            options,
            timeout: conf.timeout,
            current: Mutex::new(None),
            identity: conf.tls.as_ref().is_some_and(|t| t.identity.is_some()),
        })
    }

    /// Probes every endpoint at once; the answers in the configured order.
    pub async fn probe_all(&self) -> Vec<(Probe, Option<Client>)> {
        let probes = self.endpoints.iter().map(|ep| {
            let options = self.options.clone();
            let timeout = self.timeout;
            async move {
                let attempt = async {
                    let mut c = Client::connect([ep.as_str()], Some(options))
                        .await
                        .map_err(|e| describe(&e))?;
                    let s = c.status().await.map_err(|e| describe(&e))?;
                    let status = MemberStatus {
                        version: s.version().to_owned(),
                        member: s.header().map(|h| h.member_id()).unwrap_or_default(),
                        leader: s.leader(),
                        db_size: s.db_size(),
                        revision: s.header().map(|h| h.revision()).unwrap_or_default(),
                    };
                    Ok::<_, String>((status, c))
                };
                let (result, client) =
                    match tokio::time::timeout(timeout + Duration::from_secs(1), attempt).await {
                        Ok(Ok((s, c))) if s.leader != 0 => (Ok(s), Some(c)),
                        Ok(Ok(_)) => (Err("no leader".to_owned()), None),
                        Ok(Err(e)) => (Err(self.hint(ep, e)), None),
                        Err(_) => (
                            Err(format!("no answer within {}s", timeout.as_secs())),
                            None,
                        ),
                    };
                (
                    Probe {
                        endpoint: ep.clone(),
                        result,
                    },
                    client,
                )
            }
        });
        futures_util::future::join_all(probes).await
    }

    /// `why` an https endpoint failed, with a hint when the member may have hung up on a
    /// TLS handshake without a client certificate (a TLS 1.3 server's alert can arrive as a
    /// closed connection).
    fn hint(&self, ep: &str, why: String) -> String {
        let closed = ["connection closed", "broken pipe", "connection reset"]
            .iter()
            .any(|p| why.contains(p));
        if ep.starts_with("https://") && !self.identity && closed {
            format!(
                "{why} (if the members require client certificates, conf/cluster needs tls.cert and tls.key)"
            )
        } else {
            why
        }
    }

    /// Chooses an endpoint: the first (in the configured order) whose member has a leader.
    /// Unavailable, with every endpoint's reason, when none has; refused when the members
    /// refuse us (credentials, TLS).
    pub async fn connect(&self) -> Result<(), KvError> {
        let probes = self.probe_all().await;
        let mut why = Vec::new();
        let mut refused = None;
        for (p, client) in probes {
            match (p.result, client) {
                (Ok(_), Some(c)) => {
                    *self.lock() = Some((p.endpoint, c));
                    return Ok(());
                }
                (Err(e), _) => {
                    if refusal(&e) {
                        refused.get_or_insert_with(|| format!("{}: {e}", p.endpoint));
                    }
                    why.push(format!("{}: {e}", p.endpoint));
                }
                (Ok(_), None) => {}
            }
        }
        *self.lock() = None;
        match refused {
            Some(r) => Err(KvError::Refused(format!("etcd refused this node: {r}"))),
            None => Err(KvError::Unavailable(format!("etcd: {}", why.join("; ")))),
        }
    }

    /// The cluster's members: id and name.
    pub async fn members(&self) -> Result<Vec<(u64, String)>, KvError> {
        let resp = self
            .with_retry(|mut c| async move { c.member_list().await })
            .await?;
        Ok(resp
            .members()
            .iter()
            .map(|m| (m.id(), m.name().to_owned()))
            .collect())
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> Option<String> {
        self.lock().as_ref().map(|(e, _)| e.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, Client)>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn client(&self) -> Result<Client, KvError> {
        if let Some((_, c)) = self.lock().as_ref() {
            return Ok(c.clone());
        }
        self.connect().await?;
        self.lock()
            .as_ref()
            .map(|(_, c)| c.clone())
            .ok_or_else(|| KvError::Unavailable("etcd: no endpoint".into()))
    }

    /// Runs `call` on the current endpoint; after an unavailable answer, chooses again
    /// and retries, for up to twice the request timeout: a member that goes away takes the
    /// leader with it now and then, and until the others notice and elect a new one (about
    /// a second) they answer "no leader" or let a request time out. Every call we make is safe
    /// to repeat (guarded transactions, idempotent puts; a lease granted twice runs out).
    async fn with_retry<T, F, Fut>(&self, call: F) -> Result<T, KvError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout * 2;
        loop {
            let result = match self.client().await {
                Ok(c) => call(c).await.map_err(|e| classify(&e)),
                Err(e) => Err(e),
            };
            match result {
                Err(KvError::Unavailable(why)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(
                        "etcd endpoint {} failed ({why}); choosing again",
                        self.endpoint().unwrap_or_default()
                    );
                    *self.lock() = None;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }
}

/// An error's text, with its causes (tonic hides them in `source()`).
fn describe(e: &etcd_client::Error) -> String {
    let mut s = match e {
        etcd_client::Error::GRpcStatus(st) => st.message().to_owned(),
        other => other.to_string(),
    };
    // A status made from a transport failure (a TLS alert: no client certificate, an
    // unknown CA) carries that failure as its own source, not the error's.
    let mut src = match e {
        etcd_client::Error::GRpcStatus(st) => std::error::Error::source(st),
        other => std::error::Error::source(other),
    };
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// Whether an error text is the cluster refusing us rather than being unavailable.
fn refusal(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "authentication failed",
        "permission denied",
        "user name is empty",
        "invalid auth token",
        "badcertificate",
        "unknownissuer",
        "certificate required",
        "invalid peer certificate",
        "certificaterequired",
        "notvalidforname",
    ]
    .iter()
    .any(|p| t.contains(p))
}

fn classify(e: &etcd_client::Error) -> KvError {
    let text = describe(e);
    if text.contains("lease not found") {
        return KvError::LeaseGone;
    }
    if refusal(&text) {
        return KvError::Refused(text);
    }
    match e {
        etcd_client::Error::GRpcStatus(st) => {
            // gRPC status codes (a stable part of the protocol).
            let msg = st.message();
            match i32::from(st.code()) {
                // Cancelled, DeadlineExceeded, Aborted, Unavailable.
                1 | 4 | 10 | 14 => KvError::Unavailable(text),
                // Unknown: etcd's "no leader" and "leader changed" come as that, and so does
                // a connection to a member that went away mid-call ("transport error").
                2 if [
                    "no leader",
                    "leader changed",
                    "transport error",
                    "connect error",
                    "connection",
                    "broken pipe",
                ]
                .iter()
                .any(|p| msg.contains(p)) =>
                {
                    KvError::Unavailable(text)
                }
                // PermissionDenied, Unauthenticated.
                7 | 16 => KvError::Refused(text),
                // OutOfRange: a revision compacted away.
                11 if msg.contains("compacted") => KvError::Compacted(text),
                _ => KvError::Other(text),
            }
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            KvError::Unavailable(text)
        }
        _ => KvError::Other(text),
    }
}

fn compare(c: &Cmp) -> Compare {
    match c {
        Cmp::Created(k, r) => Compare::create_revision(k.as_str(), CompareOp::Equal, *r),
        Cmp::Modified(k, r) => Compare::mod_revision(k.as_str(), CompareOp::Equal, *r),
    }
}

fn txn_op(o: &Op) -> TxnOp {
    match o {
        Op::Put { key, value, lease } => TxnOp::put(
            key.as_str(),
            value.clone(),
            lease.map(|l| PutOptions::new().with_lease(l)),
        ),
        Op::Get(k) => TxnOp::get(k.as_str(), None),
        Op::Delete(k) => TxnOp::delete(k.as_str(), None),
    }
}

fn entry(kv: &etcd_client::KeyValue) -> Option<Entry> {
    Some(Entry {
        key: std::str::from_utf8(kv.key()).ok()?.to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    })
}

/// The first key after every key beginning with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Kv for EtcdKv {
    type Watch = EtcdWatch;

    async fn txn(
        &self,
        when: Vec<Cmp>,
        then: Vec<Op>,
        otherwise: Vec<Op>,
    ) -> Result<TxnOutcome, KvError> {
        let build = || {
            Txn::new()
                .when(when.iter().map(compare).collect::<Vec<_>>())
                .and_then(then.iter().map(txn_op).collect::<Vec<_>>())
                .or_else(otherwise.iter().map(txn_op).collect::<Vec<_>>())
        };
        let resp = self
            .with_retry(|mut c| {
                let txn = build();
                async move { c.txn(txn).await }
            })
            .await?;
        let got = resp
            .op_responses()
            .into_iter()
            .filter_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().and_then(entry)),
                _ => None,
            })
            .collect();
        Ok(TxnOutcome {
            succeeded: resp.succeeded(),
            revision: resp.header().map(|h| h.revision()).unwrap_or_default(),
            got,
        })
    }

    async fn range(&self, r: Range) -> Result<RangeResult, KvError> {
        let start = r.from.clone().unwrap_or_else(|| r.prefix.clone());
        let end = prefix_end(&r.prefix);
        let resp = self
            .with_retry(|mut c| {
                let mut o = GetOptions::new().with_range(end.clone());
                if r.min_mod_revision > 0 {
                    o = o.with_min_mod_revision(r.min_mod_revision);
                }
                if r.revision > 0 {
                    o = o.with_revision(r.revision);
                }
                if r.limit > 0 {
                    o = o.with_limit(r.limit);
                }
                if r.keys_only {
                    o = o.with_keys_only();
                }
                if r.count_only {
                    o = o.with_count_only();
                }
                let start = start.clone();
                async move { c.get(start, Some(o)).await }
            })
            .await?;
        Ok(RangeResult {
            entries: resp.kvs().iter().filter_map(entry).collect(),
            more: resp.more(),
            count: resp.count(),
            revision: resp.header().map(|h| h.revision()).unwrap_or_default(),
        })
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let resp = self
            .with_retry(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError> {
        // One keep-alive on a stream of its own: etcd-client sends it and reads the answer
        // (an error "lease not found" when the lease is gone). Every few seconds, not worth
        // a stream kept open per lease.
        self.with_retry(|mut c| async move { c.lease_keep_alive(lease).await.map(drop) })
            .await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), KvError> {
        match self
            .with_retry(|mut c| async move { c.lease_revoke(lease).await })
            .await
        {
            Ok(_) | Err(KvError::LeaseGone) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn watch(&self, prefix: &str, from: i64) -> Result<EtcdWatch, KvError> {
        let stream = self
            .with_retry(|mut c| {
                let mut o = WatchOptions::new().with_prefix();
                if from > 0 {
                    o = o.with_start_revision(from);
                }
                let key = prefix.to_owned();
                async move { c.watch(key, Some(o)).await }
            })
            .await?;
        Ok(EtcdWatch(stream))
    }
}

/// A watch on etcd.
pub struct EtcdWatch(etcd_client::WatchStream);

impl std::fmt::Debug for EtcdWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EtcdWatch")
    }
}

impl Watch for EtcdWatch {
    async fn next(&mut self) -> Result<Option<Vec<WatchEvent>>, KvError> {
        loop {
            let Some(resp) = self.0.message().await.map_err(|e| classify(&e))? else {
                return Ok(None);
            };
            if resp.compact_revision() > 0 {
                return Err(KvError::Compacted(format!(
                    "etcd compacted its history past revision {}",
                    resp.compact_revision()
                )));
            }
            if resp.canceled() {
                return Err(KvError::Unavailable(format!(
                    "etcd cancelled the watch: {}",
                    resp.cancel_reason()
                )));
            }
            if resp.events().is_empty() {
                continue;
            }
            let events = resp
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    match e.event_type() {
                        etcd_client::EventType::Put => entry(kv).map(WatchEvent::Put),
                        etcd_client::EventType::Delete => Some(WatchEvent::Delete {
                            key: std::str::from_utf8(kv.key()).ok()?.to_owned(),
                            revision: kv.mod_revision(),
                        }),
                    }
                })
                .collect();
            return Ok(Some(events));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end("/a/"), b"/a0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
    }

    #[test]
    fn refusals_are_told_from_outages() {
        assert!(refusal(
            "etcdserver: authentication failed, invalid user ID or password"
        ));
        assert!(refusal(
            "transport error: invalid peer certificate: UnknownIssuer"
        ));
        assert!(!refusal(
            "tcp connect error: Connection refused (os error 111)"
        ));
        assert!(!refusal("etcdserver: no leader"));
    }
}
