//! `acmekeep cluster-agent`: this node's share of the fleet's http-01 challenges.
//!
//! Behind a load balancer the CA may reach any machine for http-01, not the one that
//! ordered. While a node orders, it publishes each token under `P/x/challenges/http/`,
//! bound to its run's lease (a dead orderer's tokens vanish with it). The agent on every
//! node watches that prefix and serves each token: from its own listener on the node's
//! `request.challenge.http-ports`, and as a file in each of its webroots (which the
//! redirector or the web server serves). It acknowledges each token it serves
//! (`P/x/challenges/acks/<token>/<node>`), and the orderer waits (at most `ack-wait`) for
//! the acknowledgements of every running agent (`P/x/agents/<node>`, bound to the agent's
//! lease) before it tells the CA to validate. The agent never reads a private key and
//! never takes the state directory's lock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use time::OffsetDateTime;

use super::fleet::{Fleet, RunLease};
use super::kv::{Kv, Op, Range, Watch, WatchEvent, range_all};
use super::layout::{self, AgentInfo};
use crate::challenge::listener::{Listeners, TokenMap};

/// What the agent serves on this node.
#[derive(Debug, Clone)]
pub struct Serves {
    /// Webroots the token files are written into.
    pub webroots: Vec<PathBuf>,
    /// Addresses its own listener binds.
    pub listen: Vec<String>,
}

/// Whether `token` is a token as RFC 8555 makes them (base64url), safe as a file name.
fn plain_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

struct Agent<K> {
    fleet: Arc<Fleet<K>>,
    serves: Serves,
    tokens: Arc<TokenMap>,
    lease: i64,
}

impl<K: Kv + 'static> Agent<K> {
    async fn put(&self, key: &str, value: &[u8]) {
        let Some(token) = self
            .fleet
            .layout()
            .name_under(&self.fleet.layout().tokens(), key)
        else {
            return;
        };
        let Ok(key_auth) = std::str::from_utf8(value) else {
            return;
        };
        if !plain_token(token) || key_auth.len() > 512 || !key_auth.starts_with(token) {
            tracing::warn!("ignoring a malformed http-01 token in the fleet: {key}");
            return;
        }
        self.tokens.insert(token, key_auth);
        for dir in &self.serves.webroots {
            if let Err(e) = crate::challenge::webroot::write(dir, token, key_auth) {
                tracing::warn!("webroot {}: {e:#}", dir.display());
            }
        }
        let ack = self.fleet.layout().ack(token, self.fleet.node());
        if let Err(e) = self
            .fleet
            .kv()
            .txn(
                vec![],
                vec![Op::put_leased(ack, Vec::new(), self.lease)],
                vec![],
            )
            .await
        {
            tracing::warn!("acknowledging http-01 token {token}: {e}");
        }
        tracing::info!("serving http-01 token {token}");
    }

    fn delete(&self, key: &str) {
        let Some(token) = self
            .fleet
            .layout()
            .name_under(&self.fleet.layout().tokens(), key)
        else {
            return;
        };
        if !plain_token(token) {
            return;
        }
        self.tokens.remove(token);
        for dir in &self.serves.webroots {
            crate::challenge::webroot::remove(dir, token);
        }
        tracing::debug!("http-01 token {token} withdrawn");
    }

    /// Reads every published token, then follows the changes; returns when the watch ends
    /// or fails (the caller starts over).
    async fn follow(&self) -> Result<()> {
        let dir = self.fleet.layout().tokens();
        let now = range_all(self.fleet.kv().as_ref(), Range::prefix(dir.clone()), 256).await?;
        for e in &now.entries {
            self.put(&e.key, &e.value).await;
        }
        let mut watch = self.fleet.kv().watch(&dir, now.revision + 1).await?;
        while let Some(events) = watch.next().await? {
            for ev in events {
                match ev {
                    WatchEvent::Put(e) => self.put(&e.key, &e.value).await,
                    WatchEvent::Delete { key, .. } => self.delete(&key),
                }
            }
        }
        Ok(())
    }
}

/// Runs the agent until SIGTERM or SIGINT; `since` is when it started (for `cluster-status`).
pub async fn run<K: Kv + 'static>(
    fleet: Arc<Fleet<K>>,
    serves: Serves,
    since: OffsetDateTime,
) -> Result<()> {
    let tokens = Arc::new(TokenMap::default());
    let addrs: Vec<(String, bool)> = serves.listen.iter().map(|a| (a.clone(), true)).collect();
    let listeners = Listeners::start(&addrs, tokens.clone()).await;
    let ttl = fleet.conf().lock_ttl;
    let lease = RunLease::grant(fleet.kv(), ttl).await?;
    let info = AgentInfo {
        pid: std::process::id(),
        since: since
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        webroots: serves
            .webroots
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        listens: listeners.bound().iter().map(|a| a.to_string()).collect(),
    };
    fleet
        .kv()
        .txn(
            vec![],
            vec![Op::put_leased(
                fleet.layout().agent(fleet.node()),
                layout::encode(&info),
                lease.id(),
            )],
            vec![],
        )
        .await?;
    tracing::info!(
        "cluster agent of node {} serving http-01 tokens ({} webroot(s), listening on {:?})",
        fleet.node(),
        serves.webroots.len(),
        info.listens
    );
    let agent = Agent {
        fleet: fleet.clone(),
        serves,
        tokens,
        lease: lease.id(),
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut reported = false;
    loop {
        tokio::select! {
            r = agent.follow() => {
                if let Err(e) = r {
                    if !reported {
                        tracing::warn!("cluster agent: {e:#} (retrying)");
                        reported = true;
                    }
                } else {
                    reported = false;
                }
                if lease.lost() {
                    anyhow::bail!("the agent's etcd lease expired; exiting so that the service manager starts it again");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    lease.revoke(fleet.kv().as_ref()).await;
    drop(listeners);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_tokens_become_file_names() {
        assert!(plain_token("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"));
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"a".repeat(300)] {
            assert!(!plain_token(bad), "{bad}");
        }
    }
}
