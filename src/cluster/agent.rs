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
//! lease) before it tells the CA to validate.
//!
//! It also links the certificates other nodes obtain as they arrive: it watches the
//! targets' heads (`P/d/heads/`), and when one changes it takes the state directory's lock
//! (waiting while a run holds it: that run may have synced before the head moved), syncs
//! the mirror as a run does and links `live/` as a run ends, running this node's
//! `live-updated` hooks with the names that changed. It orders nothing and asks the CA
//! nothing; it is quiet unless it linked something. An agent that cannot write the state
//! directory (a sandbox that allows less) says so once and leaves linking to the runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use time::OffsetDateTime;

use super::fleet::{Fleet, RunLease};
use super::kv::{Kv, Op, Range, Watch, WatchEvent, range_all};
use super::layout::{self, AgentInfo};
use crate::challenge::listener::{Listeners, TokenMap};
use crate::hooks::HookRunner;
use crate::store::lock::{LockError, StateLock};

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

/// What the agent needs to link the certificates other nodes obtain.
pub struct Linker {
    /// The state directory.
    pub state_dir: PathBuf,
    /// This node's hooks.
    pub hooks: Arc<HookRunner>,
    /// The clock.
    pub clock: Arc<dyn crate::clock::Clock>,
}

/// How long the agent waits for a run to free the state directory before it links.
const LOCK_WAIT: Duration = Duration::from_secs(30 * 60);

struct Agent<K> {
    fleet: Arc<Fleet<K>>,
    serves: Serves,
    tokens: Arc<TokenMap>,
    lease: i64,
}

/// Whether `e` says the state directory cannot be written here (a sandbox): linking is left
/// to the runs.
fn not_writable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.kind() == std::io::ErrorKind::PermissionDenied || io.raw_os_error() == Some(30) // EROFS
        })
    })
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

    /// Links what the fleet has that this node's `live/` lacks, once it holds the state
    /// directory; `false` when it cannot write it (never again then).
    async fn link(&self, linker: &Linker) -> bool {
        let started = std::time::Instant::now();
        let lock = loop {
            match StateLock::acquire(&linker.state_dir) {
                Ok(l) => break l,
                Err(LockError::Busy { .. }) if started.elapsed() < LOCK_WAIT => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    let e = anyhow::Error::new(e);
                    tracing::warn!("linking new certificates: {}", crate::cause::render(&e));
                    return !not_writable(&e);
                }
            }
        };
        match self.link_locked(linker, &lock).await {
            Ok(names) if !names.is_empty() => {
                tracing::info!("linked the fleet's new certificates: {}", names.join(", "));
                // The hooks run once the state directory is free again, so that a scheduled
                // run starting meanwhile does not find it busy for as long as they take.
                drop(lock);
                let updated = crate::hooks::Event::LiveUpdated { names: &names };
                crate::reconcile::run_hooks(&linker.hooks, updated).await;
                true
            }
            Ok(_) => true,
            Err(e) if not_writable(&e) => {
                tracing::warn!(
                    "the agent cannot write the state directory ({}): new certificates are linked at this node's runs",
                    crate::cause::render(&e)
                );
                false
            }
            Err(e) => {
                tracing::warn!("linking new certificates: {}", crate::cause::render(&e));
                true
            }
        }
    }

    async fn link_locked(&self, linker: &Linker, lock: &StateLock) -> Result<Vec<String>> {
        let store = crate::store::Store::open(&linker.state_dir, lock)?;
        let now = linker.clock.now_utc();
        super::node::sync(&self.fleet, &store, now).await?;
        let (relinked, errors) = crate::reconcile::relink_only(&store, now)?;
        for e in errors {
            tracing::warn!("{e}");
        }
        Ok(relinked)
    }

    /// Links what arrived, then again each time a target's head changes; returns when the
    /// watch ends or fails (the caller starts over), or when the state directory cannot be
    /// written (`Ok(false)`).
    async fn follow_heads(&self, linker: &Linker) -> Result<bool> {
        let dir = self.fleet.layout().heads();
        let now = self
            .fleet
            .kv()
            .range(Range {
                count_only: true,
                ..Range::prefix(dir.clone())
            })
            .await?;
        if !self.link(linker).await {
            return Ok(false);
        }
        let mut watch = self.fleet.kv().watch(&dir, now.revision + 1).await?;
        while let Some(events) = watch.next().await? {
            if events.iter().any(|e| matches!(e, WatchEvent::Put(_))) && !self.link(linker).await {
                return Ok(false);
            }
        }
        Ok(true)
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

impl<K: Kv + 'static> Agent<K> {
    /// [`Agent::follow`] as long as the agent runs, starting over after a failure (said
    /// once until it works again).
    async fn keep_following(&self) {
        let mut reported = false;
        loop {
            if let Err(e) = self.follow().await {
                if !reported {
                    tracing::warn!("cluster agent: {e:#} (retrying)");
                    reported = true;
                }
            } else {
                reported = false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Follows the heads for [`Agent::follow_heads`] as long as the agent runs (starting over
/// after a failure), unless the state directory cannot be written.
async fn keep_linking<K: Kv + 'static>(agent: &Agent<K>, linker: Option<&Linker>) {
    let Some(linker) = linker else {
        return std::future::pending().await;
    };
    let mut reported = false;
    loop {
        match agent.follow_heads(linker).await {
            Ok(false) => return std::future::pending().await,
            Ok(true) => reported = false,
            Err(e) if !reported => {
                tracing::warn!("cluster agent, following new certificates: {e:#} (retrying)");
                reported = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the agent until SIGTERM or SIGINT; `since` is when it started (for `cluster-status`).
/// With a `linker` it also links the certificates other nodes obtain as they arrive.
pub async fn run<K: Kv + 'static>(
    fleet: Arc<Fleet<K>>,
    serves: Serves,
    linker: Option<Linker>,
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
    let agent = Arc::new(Agent {
        fleet: fleet.clone(),
        serves,
        tokens,
        lease: lease.id(),
    });
    // The tokens are followed on the fleet runtime's own thread, beside the listeners and the
    // lease's keep-alive: linking (a whole sync at start, file work on this thread) must not
    // hold up a token another node publishes meanwhile.
    let follower = tokio::spawn({
        let agent = agent.clone();
        async move { agent.keep_following().await }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let linking = keep_linking(&agent, linker.as_ref());
    tokio::pin!(linking);
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let lost = loop {
        tokio::select! {
            () = &mut linking => {}
            _ = ticks.tick() => {
                if lease.lost() {
                    break true;
                }
            }
            _ = tokio::signal::ctrl_c() => break false,
            _ = term.recv() => break false,
        }
    };
    follower.abort();
    if lost {
        anyhow::bail!(
            "the agent's etcd lease expired; exiting so that the service manager starts it again"
        );
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
