//! What `cluster-status` shows: the members as each endpoint sees them, the nodes and what
//! each holds, the targets, backoff, and which cluster key sealed how many secrets.
//!
//! Read-only, no state lock. Ranges are paged and mostly keys-only, so a fleet of 10,000
//! targets is summed up in a few small answers.

use std::collections::BTreeMap;

use serde::Serialize;

use super::fleet::Fleet;
use super::kv::{Kv, KvError, Range, range_all};
use super::layout::{self, LockInfo, NodeInfo};
use super::seal::ClusterKeys;
use super::{MemberStatus, Probe};
use crate::store::TargetRecord;

/// `cluster-status`'s document (also its `--json` form).
#[derive(Debug, Default, Serialize)]
pub struct FleetReport {
    /// The key prefix.
    pub prefix: String,
    /// This node's name.
    pub node: String,
    /// The ids of this node's cluster keys, the sealing one first.
    pub key_ids: Vec<String>,
    /// Every endpoint, as it answered.
    pub endpoints: Vec<EndpointDoc>,
    /// Whether the prefix holds a fleet (`cluster-init` ran).
    pub initialised: bool,
    /// The store's revision.
    pub revision: i64,
    /// The nodes that ever ran, and the agents running now.
    pub nodes: Vec<NodeDoc>,
    /// Number of targets.
    pub targets: usize,
    /// Number of targets with a certificate.
    pub with_certificate: usize,
    /// Locks held now.
    pub locks: Vec<LockDoc>,
    /// Targets with failed attempts.
    pub failing: Vec<FailingDoc>,
    /// Sealed secrets (private keys and account keys) by the id of the key that sealed them.
    pub secrets: BTreeMap<String, usize>,
}

/// One endpoint.
#[derive(Debug, Serialize)]
pub struct EndpointDoc {
    /// URL.
    pub endpoint: String,
    /// Member name, if known.
    pub name: Option<String>,
    /// Whether it answered with a leader.
    pub ok: bool,
    /// Whether it is the leader.
    pub leader: bool,
    /// etcd version.
    pub version: Option<String>,
    /// Database size in bytes.
    pub db_size: Option<i64>,
    /// Why it could not be used.
    pub error: Option<String>,
}

/// One node.
#[derive(Debug, Serialize)]
pub struct NodeDoc {
    /// Name.
    pub name: String,
    /// What it last recorded (none for an agent that never ran a reconcile).
    pub info: Option<NodeInfo>,
    /// Its agent runs now.
    pub agent: bool,
}

/// One lock.
#[derive(Debug, Serialize)]
pub struct LockDoc {
    /// Target file.
    pub file: String,
    /// Holder.
    #[serde(flatten)]
    pub holder: LockInfo,
}

/// A target with failed attempts.
#[derive(Debug, Serialize)]
pub struct FailingDoc {
    /// Target file.
    pub file: String,
    /// Its record.
    #[serde(flatten)]
    pub record: TargetRecord,
}

/// The endpoints' part of the report, from the probes and the member list.
pub fn endpoints(probes: &[Probe], members: &[(u64, String)]) -> Vec<EndpointDoc> {
    probes
        .iter()
        .map(|p| match &p.result {
            Ok(MemberStatus {
                version,
                member,
                leader,
                db_size,
                ..
            }) => EndpointDoc {
                endpoint: p.endpoint.clone(),
                name: members
                    .iter()
                    .find(|(id, _)| id == member)
                    .map(|(_, n)| n.clone()),
                ok: true,
                leader: member == leader,
                version: Some(version.clone()),
                db_size: Some(*db_size),
                error: None,
            },
            Err(e) => EndpointDoc {
                endpoint: p.endpoint.clone(),
                name: None,
                ok: false,
                leader: false,
                version: None,
                db_size: None,
                error: Some(e.clone()),
            },
        })
        .collect()
}

/// Every node that ran or whose agent runs, by name.
async fn nodes<K: Kv + 'static>(fleet: &Fleet<K>) -> Result<Vec<NodeDoc>, KvError> {
    let l = fleet.layout();
    let kv = fleet.kv().as_ref();
    let nodes = range_all(kv, Range::prefix(l.nodes()), 1000).await?;
    let agents = range_all(
        kv,
        Range {
            keys_only: true,
            ..Range::prefix(l.agents())
        },
        1000,
    )
    .await?;
    let mut by_name: BTreeMap<String, NodeDoc> = BTreeMap::new();
    for e in &nodes.entries {
        if let Some(name) = l.name_under(&l.nodes(), &e.key) {
            by_name.insert(
                name.to_owned(),
                NodeDoc {
                    name: name.to_owned(),
                    info: layout::decode(&e.key, &e.value).ok(),
                    agent: false,
                },
            );
        }
    }
    for e in &agents.entries {
        if let Some(name) = l.name_under(&l.agents(), &e.key) {
            by_name
                .entry(name.to_owned())
                .or_insert_with(|| NodeDoc {
                    name: name.to_owned(),
                    info: None,
                    agent: false,
                })
                .agent = true;
        }
    }
    Ok(by_name.into_values().collect())
}

/// Reads the fleet's side of the report.
pub async fn gather<K: Kv + 'static>(
    fleet: &Fleet<K>,
    report: &mut FleetReport,
) -> Result<(), KvError> {
    let l = fleet.layout();
    report.prefix = l.prefix().to_owned();
    report.node = fleet.node().to_owned();
    report.key_ids = fleet.keys().ids();
    report.initialised = fleet.version().await?.is_some();
    let keys_only = |prefix: String| Range {
        keys_only: true,
        ..Range::prefix(prefix)
    };
    let kv = fleet.kv().as_ref();
    let targets = range_all(kv, keys_only(l.targets()), 10_000).await?;
    report.revision = targets.revision;
    report.targets = targets.entries.len();
    report.with_certificate = range_all(kv, keys_only(l.heads()), 10_000)
        .await?
        .entries
        .len();
    report.nodes = nodes(fleet).await?;
    let locks = range_all(kv, Range::prefix(l.locks()), 1000).await?;
    report.locks = locks
        .entries
        .iter()
        .filter_map(|e| {
            let file = l.name_under(&l.locks(), &e.key)?;
            Some(LockDoc {
                file: file.to_owned(),
                holder: layout::decode(&e.key, &e.value).ok()?,
            })
        })
        .collect();
    let runs_dir = format!("{}d/runs/", l.prefix());
    let runs = range_all(kv, Range::prefix(runs_dir.clone()), 1000).await?;
    report.failing = runs
        .entries
        .iter()
        .filter_map(|e| {
            let file = l.name_under(&runs_dir, &e.key)?;
            let record: TargetRecord = layout::decode(&e.key, &e.value).ok()?;
            (record.failures > 0).then(|| FailingDoc {
                file: file.to_owned(),
                record,
            })
        })
        .collect();
    for dir in ["d/keys/", "d/accounts/"] {
        let all = range_all(kv, Range::prefix(format!("{}{dir}", l.prefix())), 1000).await?;
        for e in &all.entries {
            let id = ClusterKeys::sealed_by(&e.value).unwrap_or_else(|| "unsealed".to_owned());
            *report.secrets.entry(id).or_default() += 1;
        }
    }
    Ok(())
}
