//! Fleets: several machines sharing one set of certificates through etcd v3, with one order
//! per target for the whole fleet (doc/cluster.md).
//!
//! A `conf/cluster` file turns a state directory into a fleet node; without it nothing here
//! runs (a run pays one `stat`). What is shared lives in etcd under a prefix (targets, the
//! fleet's conf/target without its `request.challenge` and `monitor` sections
//! ([`defaults`]), accounts and private keys sealed under the cluster secret key,
//! certificates, which certificate each target has, the targets' run records); each node
//! keeps a mirror of it in its own state directory, in
//! acmetool's layout, so hooks, `live/` and the services reading them work as on one
//! machine. Before ordering, a node locks the target with an etcd lease that dies with it,
//! re-checks the target in the same transaction, and records every step in transactions
//! fenced by the lock's revision ([`fleet`]): a paused or cut-off node can never overwrite
//! what the next holder recorded, and an order that reached finalize is finished, never
//! repeated. http-01 tokens are published for every node's `cluster-agent`.
//! When etcd is unreachable or has lost quorum, a node keeps its certificates, orders
//! nothing, says so once and exits 69.
//!
//! Layers: [`config`] (the file), [`layout`] (keys and values), [`seal`] (keys at rest),
//! [`kv`] (the seam: the etcd calls we make; [`etcd`] is the real one), [`fleet`] (locks,
//! fencing, leases, tokens), [`node`] (the mirror's sync, the executor's gate, the account
//! lock), [`agent`] (http-01 on every node), [`gc`] (removing what the fleet no longer
//! needs), [`rekey`] (key rotation), [`report`] (`cluster-status`).

pub mod agent;
pub mod config;
pub mod defaults;
#[cfg(feature = "cluster")]
pub mod etcd;
pub mod fleet;
pub mod gc;
pub mod kv;
pub mod layout;
pub mod node;
pub mod rekey;
pub mod report;
pub mod seal;

use std::path::Path;

use anyhow::{Context, Result};

pub use config::ClusterConf;

/// The etcd client of this build.
#[cfg(feature = "cluster")]
pub type ActiveKv = etcd::EtcdKv;
/// The etcd client of this build (none: built without the `cluster` feature).
#[cfg(not(feature = "cluster"))]
pub type ActiveKv = disabled::NoKv;

/// The fleet of this build's client.
pub type Node = fleet::Fleet<ActiveKv>;

/// The cluster is unavailable (no endpoint answers, or none has a leader): nothing is
/// ordered, live certificates are kept, and the run exits 69 (EX_UNAVAILABLE).
pub use crate::exit::Unavailable;

/// How one endpoint answered the probe.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The endpoint URL.
    pub endpoint: String,
    /// Its status, or why it could not be used.
    pub result: Result<MemberStatus, String>,
}

/// A member's status, as its endpoint reports it.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    /// etcd version.
    pub version: String,
    /// Its member id.
    pub member: u64,
    /// The leader's member id.
    pub leader: u64,
    /// Database size in bytes.
    pub db_size: i64,
    /// The store's revision.
    pub revision: i64,
}

/// Reads `conf/cluster` at `path` if it exists (the only cost of a run outside a fleet is
/// this one open). Relative paths in it are relative to `conf_dir`. Errors are
/// configuration errors naming the file and line.
pub fn load_conf(path: &Path, conf_dir: &Path) -> Result<Option<ClusterConf>> {
    let bytes = match crate::files::read_bounded(path, config::MAX_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(crate::exit::config_error(
                anyhow::Error::new(e).context(format!("reading {}", path.display())),
            ));
        }
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        crate::exit::config_error(anyhow::anyhow!("{} is not UTF-8", path.display()))
    })?;
    config::parse(path, text, conf_dir, &config::host_name())
        .map(Some)
        .map_err(crate::exit::config_error)
}

/// Connects to the fleet of `conf`: reads the secret keys and credentials (configuration
/// errors) and chooses an etcd endpoint. [`Unavailable`] when the cluster cannot be used.
pub async fn connect(conf: ClusterConf) -> Result<Node> {
    let keys = seal::ClusterKeys::load(&conf.secret_key_file)
        .with_context(|| format!("secret-key-file of {}", conf.path.display()))
        .map_err(crate::exit::config_error)?;
    let kv = new_kv(&conf)?;
    match kv.connect().await {
        Ok(()) => Ok(fleet::Fleet::new(kv, conf, keys)),
        Err(kv::KvError::Unavailable(why)) => Err(anyhow::Error::new(Unavailable(why))),
        Err(e) => Err(crate::exit::config_error(anyhow::Error::new(e).context(
            format!("connecting to the etcd cluster of {}", conf.path.display()),
        ))),
    }
}

/// What `cluster-status` needs: every endpoint's answer, the member names, and the fleet
/// when some member can be used.
pub async fn survey(conf: ClusterConf) -> Result<(Vec<Probe>, Vec<(u64, String)>, Option<Node>)> {
    let keys = seal::ClusterKeys::load(&conf.secret_key_file)
        .with_context(|| format!("secret-key-file of {}", conf.path.display()))
        .map_err(crate::exit::config_error)?;
    let kv = new_kv(&conf)?;
    let probes = probe_all(&kv).await;
    match kv.connect().await {
        Ok(()) => {
            let members = members(&kv).await.unwrap_or_default();
            Ok((probes, members, Some(fleet::Fleet::new(kv, conf, keys))))
        }
        Err(kv::KvError::Refused(why)) => Err(crate::exit::config_error(anyhow::anyhow!(
            "{why} (connecting to the etcd cluster of {})",
            conf.path.display()
        ))),
        Err(_) => Ok((probes, Vec::new(), None)),
    }
}

#[cfg(feature = "cluster")]
async fn probe_all(kv: &ActiveKv) -> Vec<Probe> {
    kv.probe_all().await.into_iter().map(|(p, _)| p).collect()
}

#[cfg(feature = "cluster")]
async fn members(kv: &ActiveKv) -> Result<Vec<(u64, String)>, kv::KvError> {
    kv.members().await
}

#[cfg(not(feature = "cluster"))]
async fn probe_all(kv: &ActiveKv) -> Vec<Probe> {
    match *kv {}
}

#[cfg(not(feature = "cluster"))]
async fn members(kv: &ActiveKv) -> Result<Vec<(u64, String)>, kv::KvError> {
    match *kv {}
}

#[cfg(feature = "cluster")]
fn new_kv(conf: &ClusterConf) -> Result<ActiveKv> {
    etcd::EtcdKv::new(conf).map_err(crate::exit::config_error)
}

#[cfg(not(feature = "cluster"))]
fn new_kv(conf: &ClusterConf) -> Result<ActiveKv> {
    Err(crate::exit::config_error(anyhow::anyhow!(
        "{} asks for a fleet, but this acmekeep was built without cluster support (the `cluster` feature)",
        conf.path.display()
    )))
}

/// Whether `e` (or a cause) says the cluster is unavailable.
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Unavailable>().is_some()
        || e.chain().any(|c| {
            c.is::<Unavailable>()
                || matches!(
                    c.downcast_ref::<kv::KvError>(),
                    Some(kv::KvError::Unavailable(_))
                )
        })
}

/// `e`, marked [`Unavailable`] (exit 69) if the cluster's unavailability caused it.
pub fn mark_unavailable(e: anyhow::Error) -> anyhow::Error {
    if is_unavailable(&e) && e.downcast_ref::<Unavailable>().is_none() {
        let why = crate::cause::render(&e);
        e.context(Unavailable(why))
    } else {
        e
    }
}

#[cfg(not(feature = "cluster"))]
mod disabled {
    //! The client of a build without the `cluster` feature: never constructed.
    use std::time::Duration;

    use super::kv::*;

    /// No etcd client in this build.
    #[derive(Debug)]
    pub enum NoKv {}

    impl NoKv {
        /// Never reached: there is no value of this type.
        pub async fn connect(&self) -> Result<(), KvError> {
            match *self {}
        }
    }

    /// No watch in this build.
    #[derive(Debug)]
    pub enum NoWatch {}

    impl Watch for NoWatch {
        async fn next(&mut self) -> Result<Option<Vec<WatchEvent>>, KvError> {
            match *self {}
        }
    }

    impl Kv for NoKv {
        type Watch = NoWatch;
        async fn txn(&self, _: Vec<Cmp>, _: Vec<Op>, _: Vec<Op>) -> Result<TxnOutcome, KvError> {
            match *self {}
        }
        async fn range(&self, _: Range) -> Result<RangeResult, KvError> {
            match *self {}
        }
        async fn grant(&self, _: Duration) -> Result<LeaseId, KvError> {
            match *self {}
        }
        async fn keep_alive(&self, _: LeaseId) -> Result<(), KvError> {
            match *self {}
        }
        async fn revoke(&self, _: LeaseId) -> Result<(), KvError> {
            match *self {}
        }
        async fn watch(&self, _: &str, _: i64) -> Result<NoWatch, KvError> {
            match *self {}
        }
    }
}
