//! A node's side of the fleet: the mirror (fleet → state directory and back), and the gate
//! the executor asks before each order.
//!
//! **Sync.** The mirror is an ordinary state directory in acmetool's layout. Before a run
//! plans anything, the fleet's data is copied into it: targets into `desired/`, account keys
//! and the private keys of certificates (opened from their sealed form, written 0600 the
//! usual atomic way), certificates into `certs/<id>/`. What changed locally since the last
//! sync goes the other way: `want`/`unwant` (or a hand edit) change `desired/`, and the sync
//! tells them apart from changes made by other nodes by the revision each target file had
//! at the last sync (`.acmekeep/cluster/mirror.json`): a local change to a file the fleet
//! did not change since is pushed (the push compares that revision, so a concurrent change
//! by another node wins); a file the fleet changed replaces the local one; a file the fleet
//! removed is removed. Certificates, keys and accounts are only ever added.
//!
//! **Gate.** The executor asks [`NodeGate`] before ordering a target
//! ([`crate::reconcile::OrderGate`]): the gate takes the target's lock in the fleet (bound to
//! the run's lease) and, in the same transaction, looks at the target's head and run record.
//! A head that moved since the sync means another node just obtained a certificate: no
//! order; the run syncs again and links it. A run record that says to wait (another node
//! failed it a moment ago) is obeyed fleet-wide. Before the order is finalized (the moment
//! a certificate can come to exist) it is recorded as finalizing, fenced: a node that takes
//! the lock later and finds that record finishes that order ([`Claim::Finish`]) and never
//! orders the same certificate again. After the attempt the certificate, its sealed key and
//! the new head are recorded in one transaction fenced by the lock, or the failure in the
//! shared run record; then the lock is released. A CA that tells a node to slow down for
//! every order ([`crate::acme::pace::ca_wide_until`]) is paused for the whole fleet until its
//! time (`x/pauses/`): every node's gate answers [`crate::reconcile::OrderGate::ca_paused`]
//! before it claims a target there; while paused, a node registers no account there, and
//! claims only an order recorded as finalizing, to finish it (no new order).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::fleet::{Fleet, Held, Lock, RunLease};
use super::kv::{Cmp, Entry, Kv, Op, Range, range_all};
use super::layout::{self, CertEntry, DataKey, Head, NodeInfo, OrderRecord, OrderState};
use crate::clock::Clock;
use crate::keys::PrivateKey;
use crate::plan::backoff::{self, Backoff};
use crate::reconcile::{Claim, Failure, Finishing};
use crate::store::renewal_cache::AriRecord;
use crate::store::{Store, TargetRecord};

/// Where the mirror remembers what it last synced.
const MIRROR_FILE: &str = ".acmekeep/cluster/mirror.json";
/// Largest target file, certificate or key file read for the fleet.
const MAX_FILE: u64 = 64 * 1024;
/// Largest `mirror.json` read (it holds every target's head: about 100 bytes a target).
const MAX_MIRROR_FILE: u64 = 64 * 1024 * 1024;
/// The fleet is read whole at least this often, whatever the incremental reads found: a
/// certificate that could not be mirrored once (its key was missing, a disk was full) is
/// tried again, and what a hand edit of the mirror broke is repaired.
const FULL_READ_EVERY: time::Duration = time::Duration::days(1);
/// An incremental read takes at most this many changed keys; more, and the full read (in
/// pages, without etcd's filtering over the whole range for each page) is cheaper.
const CHANGED_LIMIT: i64 = 1024;

/// What the mirror remembers between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct MirrorState {
    /// Target files as last synced, with the fleet revision of each.
    targets: BTreeMap<String, i64>,
    /// The fleet revision of its conf/target as last synced.
    #[serde(default)]
    conf_target: Option<i64>,
    /// What the next sync needs to read only what changed since this one (none: a mirror
    /// of a version without incremental syncs; its next sync reads everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<Since>,
}

/// The fleet as the last sync left it, beyond the target files: what lets the next sync ask
/// etcd only for the keys modified after `revision` (an idle run of a node of 10,000
/// targets then reads a few keys, not the whole fleet).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Since {
    /// The fleet's revision read: every change under `d/` up to it is in the mirror.
    revision: i64,
    /// When the fleet was last read whole (RFC 3339).
    full_read: String,
    /// The prefix and the subscription it was read with (another: a full read).
    prefix: String,
    subscribe: Option<Vec<String>>,
    /// Target files in the fleet at `revision`, kept here or not: fewer now than this plus
    /// the files created since means some were removed (unwanted on another node).
    fleet_targets: i64,
    /// The same for heads (`d/heads/`: an unwanted target's head is collected).
    #[serde(default)]
    fleet_heads: i64,
    /// A digest of each file of [`MirrorState::targets`] as synced, to tell a change made
    /// here since from none without the fleet's copy.
    digests: BTreeMap<String, String>,
    /// Each target's certificate in the fleet (`d/heads/`).
    heads: BTreeMap<String, String>,
    /// The fleet's accounts (`<urlpart>/<key id>`).
    accounts: BTreeSet<String>,
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct Synced {
    /// The fleet's revision it read.
    pub revision: i64,
    /// Whether it read the whole fleet (else only what changed since the last sync).
    pub full: bool,
    /// Each target's certificate in the fleet (`d/heads/`).
    pub heads: BTreeMap<String, String>,
    /// Target files this node pushed to the fleet.
    pub pushed: Vec<String>,
    /// Target files removed from the fleet (unwanted here).
    pub withdrawn: Vec<String>,
    /// Target files written into `desired/` from the fleet.
    pub pulled: Vec<String>,
    /// Target files removed from `desired/` (unwanted elsewhere).
    pub removed: Vec<String>,
    /// Target files removed from (or kept out of) `desired/`: none of this node's labels.
    pub unsubscribed: Vec<String>,
    /// conf/target's shared settings: `Some(true)` this node's went to the fleet,
    /// `Some(false)` the fleet's were written here.
    pub defaults: Option<bool>,
    /// Certificates copied into `certs/`.
    pub certificates: Vec<String>,
    /// When the fleet's renewal window of each certificate read was fetched (`d/ari/`;
    /// an incremental sync reads only those changed since the last: any other is older
    /// than this run).
    pub ari: BTreeMap<String, OffsetDateTime>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn read_local(root: &Path, rel: &Path) -> Option<Vec<u8>> {
    crate::files::read_bounded(&root.join(rel), MAX_FILE).ok()
}

/// The mirror's memory and the bytes it was read from (a sync that changed nothing does
/// not write it again).
fn load_mirror(root: &Path) -> (MirrorState, Vec<u8>) {
    let bytes =
        crate::files::read_bounded(&root.join(MIRROR_FILE), MAX_MIRROR_FILE).unwrap_or_default();
    let state = serde_json::from_slice(&bytes).unwrap_or_default();
    (state, bytes)
}

fn save_mirror(root: &Path, state: &MirrorState, was: &[u8]) -> Result<()> {
    let json = serde_json::to_vec(state)?;
    if json == was {
        return Ok(());
    }
    let dir = root.join(".acmekeep/cluster");
    crate::files::create_dir_all_mode(&dir, 0o700)
        .with_context(|| format!("creating {}", dir.display()))?;
    let path = root.join(MIRROR_FILE);
    crate::files::AtomicFs::new(root.join("tmp"))
        .write_file(&path, &json, 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

/// The digest [`Since::digests`] keeps of a target file (128 bits of SHA-256, hex).
fn digest(yaml: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, yaml);
    data_encoding::HEXLOWER.encode(&d.as_ref()[..16])
}

/// What the fleet holds under `d/` (a full read), or what changed there since the last
/// sync (an incremental read: `removed` is then set).
#[derive(Default)]
struct FleetData {
    revision: i64,
    conf_target: Option<Entry>,
    targets: BTreeMap<String, Entry>,
    heads: BTreeMap<String, String>,
    accounts: Vec<(String, Entry)>,
    keys: BTreeMap<String, Entry>,
    certs: Vec<(String, Entry)>,
    ari: Vec<(String, Entry)>,
    /// Target files in the fleet.
    fleet_targets: i64,
    /// Heads in the fleet.
    fleet_heads: i64,
    /// Incremental: the files of the mirror's memory that the fleet removed since.
    removed: Option<BTreeSet<String>>,
    /// Incremental: the heads of the mirror's memory that the fleet removed since.
    heads_removed: BTreeSet<String>,
}

impl FleetData {
    fn new(l: &layout::Layout, revision: i64, entries: Vec<Entry>) -> FleetData {
        let mut out = FleetData {
            revision,
            // Every key under `d/targets/`, as etcd counts them (a malformed one too).
            fleet_targets: under(l.targets(), &entries).count() as i64,
            fleet_heads: under(l.heads(), &entries).count() as i64,
            ..FleetData::default()
        };
        for e in entries {
            match l.parse_data(&e.key) {
                Some(DataKey::Target(f)) => {
                    out.targets.insert(f, e);
                }
                Some(DataKey::ConfTarget) => out.conf_target = Some(e),
                Some(DataKey::Head(f)) => {
                    if let Ok(h) = layout::decode::<Head>(&e.key, &e.value) {
                        out.heads.insert(f, h.cert);
                    }
                }
                Some(DataKey::Account(a)) => out.accounts.push((a, e)),
                Some(DataKey::Key(id)) => {
                    out.keys.insert(id, e);
                }
                Some(DataKey::Cert(id)) => out.certs.push((id, e)),
                Some(DataKey::Ari(id)) => out.ari.push((id, e)),
                _ => {}
            }
        }
        out
    }
}

impl FleetData {
    /// Whether this incremental read found nothing under `d/` changed since `base` (its
    /// revision then stays the base, and the mirror's memory is not written again).
    fn changes_nothing(&self, base: &Since) -> bool {
        self.targets.is_empty()
            && self.certs.is_empty()
            && self.accounts.is_empty()
            && self.heads.is_empty()
            && self.ari.is_empty()
            && self.keys.is_empty()
            && self
                .conf_target
                .as_ref()
                .is_none_or(|e| e.mod_revision <= base.revision)
            && self.fleet_targets == base.fleet_targets
            && self.fleet_heads == base.fleet_heads
    }
}

/// The entries whose keys begin with `prefix`.
fn under(prefix: String, entries: &[Entry]) -> impl Iterator<Item = &Entry> {
    entries.iter().filter(move |e| e.key.starts_with(&prefix))
}

/// The mirror's memory, if the next sync may read only what changed since it.
fn incremental_base<'a, K: Kv + 'static>(
    fleet: &Fleet<K>,
    mirror: &'a MirrorState,
    now: OffsetDateTime,
) -> Option<&'a Since> {
    let s = mirror.since.as_ref()?;
    let read = OffsetDateTime::parse(&s.full_read, &Rfc3339).ok()?;
    let fresh = read <= now && now - read < FULL_READ_EVERY;
    (fresh
        && s.revision > 0
        && s.prefix == fleet.layout().prefix()
        && s.subscribe == fleet.conf().subscribe)
        .then_some(s)
}

/// Reads the fleet: only what changed since the mirror's memory when it can, else whole.
async fn read_fleet<K: Kv + 'static>(
    fleet: &Fleet<K>,
    mirror: &MirrorState,
    now: OffsetDateTime,
) -> Result<FleetData> {
    if let Some(since) = incremental_base(fleet, mirror, now)
        && let Some(data) = read_changes(fleet, since, &mirror.targets).await?
    {
        return Ok(data);
    }
    let l = fleet.layout();
    let data = range_all(fleet.kv().as_ref(), Range::prefix(l.data()), 256).await?;
    Ok(FleetData::new(l, data.revision, data.entries))
}

/// The keys under `d/` modified after `since.revision`, with conf/target (changed or not)
/// and the target files of `mirrored` the fleet removed since. No history is read (every
/// key carries the revision of its last change, and etcd filters on it), so etcd's
/// compaction of old revisions cannot make a change go unseen. `None`: the full read is
/// needed (too many changes, or a fleet whose revisions do not follow on from the
/// mirror's: etcd restored from an older backup).
async fn read_changes<K: Kv + 'static>(
    fleet: &Fleet<K>,
    since: &Since,
    mirrored: &BTreeMap<String, i64>,
) -> Result<Option<FleetData>> {
    let l = fleet.layout();
    let kv = fleet.kv().as_ref();
    let changed = kv
        .range(Range {
            min_mod_revision: since.revision + 1,
            limit: CHANGED_LIMIT,
            ..Range::prefix(l.data())
        })
        .await?;
    if changed.more || changed.revision < since.revision {
        return Ok(None);
    }
    let at = changed.revision;
    let count = |prefix: String| {
        kv.range(Range {
            revision: at,
            count_only: true,
            ..Range::prefix(prefix)
        })
    };
    let conf = kv.range(Range {
        revision: at,
        ..Range::prefix(l.conf_target())
    });
    let (targets, heads, conf) =
        futures_util::future::try_join3(count(l.targets()), count(l.heads()), conf).await?;
    let created = |prefix: String| {
        under(prefix, &changed.entries)
            .filter(|e| e.create_revision > since.revision)
            .count() as i64
    };
    let expected = (
        since.fleet_targets + created(l.targets()),
        since.fleet_heads + created(l.heads()),
    );
    if targets.count > expected.0 || heads.count > expected.1 {
        // Does not add up (the memory is not this fleet's): read it whole.
        return Ok(None);
    }
    let mut data = FleetData::new(l, at, changed.entries);
    if data.conf_target.is_none() {
        data.conf_target = conf.entries.into_iter().find(|e| e.key == l.conf_target());
    }
    (data.fleet_targets, data.fleet_heads) = (targets.count, heads.count);
    // Fewer than expected: some were removed since (a target unwanted elsewhere, the head of
    // an unwanted target collected); which, their names tell.
    let mut removed = BTreeSet::new();
    if targets.count < expected.0 {
        removed = gone(fleet, l.targets(), at, mirrored.keys()).await?;
    }
    if heads.count < expected.1 {
        data.heads_removed = gone(fleet, l.heads(), at, since.heads.keys()).await?;
    }
    removed.retain(|f| !data.targets.contains_key(f));
    data.heads_removed.retain(|f| !data.heads.contains_key(f));
    data.removed = Some(removed);
    Ok(Some(data))
}

/// The names among `names` that have no key under `dir` at revision `at` (a listing of
/// the keys only).
async fn gone<'a, K: Kv + 'static>(
    fleet: &Fleet<K>,
    dir: String,
    at: i64,
    names: impl Iterator<Item = &'a String>,
) -> Result<BTreeSet<String>> {
    let keys = Range {
        revision: at,
        keys_only: true,
        ..Range::prefix(dir.clone())
    };
    let listed = range_all(fleet.kv().as_ref(), keys, 4096).await?;
    let present: BTreeSet<&str> = listed
        .entries
        .iter()
        .filter_map(|e| fleet.layout().name_under(&dir, &e.key))
        .collect();
    Ok(names
        .filter(|n| !present.contains(n.as_str()))
        .cloned()
        .collect())
}

/// Copies the fleet into the mirror and this node's target changes into the fleet. A node
/// that subscribes to labels (`subscribe:` in conf/cluster) keeps only the targets with one
/// of its labels or with none, and the certificates of those. Reads only what changed since
/// the last sync (the mirror's memory), and the whole fleet when there is no usable memory
/// or once a day.
pub async fn sync<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    now: OffsetDateTime,
) -> Result<Synced> {
    let (mut mirror, was) = load_mirror(store.root());
    let mut data = read_fleet(fleet, &mirror, now).await?;
    let full = data.removed.is_none();
    tracing::debug!(
        "fleet read at revision {}: {}",
        data.revision,
        if full {
            "whole"
        } else {
            "what changed since the last sync"
        }
    );
    let mut base = match mirror.since.take() {
        Some(s) if !full => s,
        _ => Since {
            full_read: rfc3339(now),
            ..Since::default()
        },
    };
    let unchanged = !full && data.changes_nothing(&base);
    let mut out = Synced {
        revision: data.revision,
        full,
        ..Synced::default()
    };
    // Accounts first (a certificate's account link points at one), then keys with their
    // certificates, then targets.
    sync_accounts(fleet, store, &data.accounts, &mut base.accounts).await?;
    sync_certs(fleet, store, &mut data, &mirror.targets, now, &mut out).await?;
    out.ari = sync_ari(store, &data.ari);
    sync_defaults(
        fleet,
        store,
        data.conf_target.as_ref(),
        &mut mirror,
        &mut out,
    )
    .await?;
    let before: BTreeSet<String> = mirror.targets.keys().cloned().collect();
    sync_targets(
        fleet,
        store,
        &data,
        &mut mirror,
        &mut base.digests,
        &mut out,
    )
    .await?;
    settle_heads(
        fleet,
        store,
        (&mirror.targets, &before),
        &mut base,
        &mut data,
        now,
        &mut out,
    )
    .await?;
    if !unchanged {
        base.revision = data.revision;
    }
    (base.fleet_targets, base.fleet_heads) = (data.fleet_targets, data.fleet_heads);
    base.prefix = fleet.layout().prefix().to_owned();
    base.subscribe = fleet.conf().subscribe.clone();
    mirror.since = Some(base);
    save_mirror(store.root(), &mirror, &was)?;
    Ok(out)
}

/// The fleet's heads after this sync (`base.heads`, and `out.heads`): those removed and
/// those read applied, the certificates of targets this node keeps from now on mirrored (an
/// incremental read), and a next full read asked for when one of them is not in the mirror.
async fn settle_heads<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    (kept, before): (&BTreeMap<String, i64>, &BTreeSet<String>),
    base: &mut Since,
    data: &mut FleetData,
    now: OffsetDateTime,
    out: &mut Synced,
) -> Result<()> {
    let full = data.removed.is_none();
    for f in &data.heads_removed {
        base.heads.remove(f);
    }
    let moved: Vec<String> = data.heads.keys().cloned().collect();
    base.heads.extend(std::mem::take(&mut data.heads));
    let mut newly: Vec<&String> = Vec::new();
    if !full {
        // A target this node keeps from now on (its labels changed) whose certificate is
        // older than the last sync: that certificate too.
        newly = kept.keys().filter(|f| !before.contains(*f)).collect();
        mirror_heads(fleet, store, &newly, &base.heads, now, out).await?;
    }
    let missed = not_mirrored(store, kept, &base.heads, moved.iter().chain(newly));
    if missed > 0 {
        tracing::debug!(
            "{missed} certificate(s) of the fleet not mirrored: the next sync reads it whole"
        );
        base.full_read = String::new();
    }
    out.heads = base.heads.clone();
    Ok(())
}

/// How many of the heads of target files `files` that this node keeps point at a
/// certificate the mirror does not hold (its key not readable yet, not valid yet by this
/// clock, a disk error). The sync that leaves one out has the next one read the fleet whole
/// and try again, as every sync did before syncs were incremental: moving past its revision
/// would leave it out until the daily full read, and meanwhile this node would see the target
/// as due and could order it again.
fn not_mirrored<'a>(
    store: &Store,
    kept: &BTreeMap<String, i64>,
    heads: &BTreeMap<String, String>,
    files: impl Iterator<Item = &'a String>,
) -> usize {
    files
        .filter(|f| kept.contains_key(*f))
        .filter_map(|f| heads.get(f))
        .filter(|cert| !has_cert(store, cert))
        .count()
}

/// The fleet's certificates read into the mirror, for the targets this node keeps: those
/// `data` has, and (an incremental read) those the mirror holds (`mirrored`).
async fn sync_certs<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    data: &mut FleetData,
    mirrored: &BTreeMap<String, i64>,
    now: OffsetDateTime,
    out: &mut Synced,
) -> Result<()> {
    let subscribe = fleet.conf().subscribe.as_deref();
    let mut kept: BTreeSet<&str> = data
        .targets
        .iter()
        .filter(|(_, e)| keeps(subscribe, &e.value))
        .map(|(f, _)| f.as_str())
        .collect();
    if data.removed.is_some() {
        kept.extend(mirrored.keys().map(String::as_str));
        fetch_keys(fleet, store, &data.certs, &mut data.keys).await?;
    }
    let wanted = |target: &str| subscribe.is_none() || kept.contains(target);
    mirror_certs(fleet, store, (&data.certs, &data.keys), wanted, now, out);
    Ok(())
}

/// How many certificates are written into the mirror at once: mirroring one is mostly
/// waiting for the dozen fsyncs of its files and directories, and those of several overlap
/// (a new node's first sync of 10,000 certificates is bound by them).
const MIRROR_THREADS: usize = 4;

/// The fleet's certificates `certs` not in the mirror yet into it, with their keys from
/// `keys`, if `wanted` says their target is kept here; many at once on
/// [`MIRROR_THREADS`] threads.
fn mirror_certs<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    (certs, keys): (&[(String, Entry)], &BTreeMap<String, Entry>),
    wanted: impl Fn(&str) -> bool + Sync,
    now: OffsetDateTime,
    out: &mut Synced,
) {
    let todo: Vec<&(String, Entry)> = certs
        .iter()
        .filter(|(id, _)| !has_cert(store, id))
        .collect();
    let one =
        |(id, e): &(String, Entry)| match mirror_cert(fleet, store, (id, e), keys, &wanted, now) {
            Ok(true) => Some(id.clone()),
            Ok(false) => None,
            Err(err) => {
                tracing::warn!("certificate {id} of the fleet: {err:#}");
                None
            }
        };
    if todo.len() < 2 * MIRROR_THREADS {
        out.certificates.extend(todo.into_iter().filter_map(one));
        return;
    }
    let chunk = todo.len().div_ceil(MIRROR_THREADS);
    std::thread::scope(|s| {
        let running: Vec<_> = todo
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().copied().filter_map(one).collect::<Vec<_>>()))
            .collect();
        for r in running {
            out.certificates.extend(r.join().unwrap_or_default());
        }
    });
}

fn has_cert(store: &Store, id: &str) -> bool {
    store.root().join("certs").join(id).join("cert").is_file()
}

/// Reads from the fleet the sealed keys of the certificates among `certs` that the mirror
/// lacks and `keys` does not hold (an incremental read has the keys changed since the last
/// sync only: a key sealed again by `cluster-rekey` goes with no certificate).
async fn fetch_keys<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    certs: &[(String, Entry)],
    keys: &mut BTreeMap<String, Entry>,
) -> Result<()> {
    let missing: BTreeSet<String> = certs
        .iter()
        .filter(|(id, _)| !has_cert(store, id))
        .filter_map(|(_, e)| layout::decode::<CertEntry>(&e.key, &e.value).ok())
        .map(|c| c.key)
        .filter(|k| !keys.contains_key(k))
        .collect();
    let missing: Vec<String> = missing.into_iter().collect();
    let l = fleet.layout();
    for chunk in missing.chunks(super::fleet::MAX_TXN_OPS) {
        let ops = chunk.iter().map(|k| Op::Get(l.private_key(k))).collect();
        let r = fleet.kv().txn(vec![], ops, vec![]).await?;
        for (k, e) in chunk.iter().zip(r.got) {
            if let Some(e) = e {
                keys.insert(k.clone(), e);
            }
        }
    }
    Ok(())
}

/// The certificates `heads` gives `files` that the mirror lacks, read from the fleet with
/// their keys and mirrored.
async fn mirror_heads<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    files: &[&String],
    heads: &BTreeMap<String, String>,
    now: OffsetDateTime,
    out: &mut Synced,
) -> Result<()> {
    let ids: BTreeSet<&String> = files
        .iter()
        .filter_map(|f| heads.get(*f))
        .filter(|id| !has_cert(store, id))
        .collect();
    let ids: Vec<&String> = ids.into_iter().collect();
    let l = fleet.layout();
    let mut certs = Vec::new();
    for chunk in ids.chunks(super::fleet::MAX_TXN_OPS) {
        let ops = chunk.iter().map(|id| Op::Get(l.cert(id))).collect();
        let r = fleet.kv().txn(vec![], ops, vec![]).await?;
        for (id, e) in chunk.iter().zip(r.got) {
            if let Some(e) = e {
                certs.push(((*id).clone(), e));
            }
        }
    }
    let mut keys = BTreeMap::new();
    fetch_keys(fleet, store, &certs, &mut keys).await?;
    mirror_certs(fleet, store, (&certs, &keys), |_| true, now, out);
    Ok(())
}

/// The fleet's renewal windows (ARI) into the mirror's cache, where they are newer than
/// this node's (a node asks the CA only when no node has asked it lately); when each was
/// fetched, for [`share_ari`].
fn sync_ari(store: &Store, ari: &[(String, Entry)]) -> BTreeMap<String, OffsetDateTime> {
    let mut out = BTreeMap::new();
    for (id, e) in ari {
        let theirs: AriRecord = match layout::decode(&e.key, &e.value) {
            Ok(r) => r,
            Err(err) => {
                tracing::debug!("renewal information of certificate {id} in the fleet: {err:#}");
                continue;
            }
        };
        out.insert(id.clone(), theirs.fetched_at);
        if !store.root().join("certs").join(id).join("cert").is_file() {
            continue;
        }
        let newer = store
            .ari_record(id)
            .is_none_or(|mine| mine.fetched_at < theirs.fetched_at);
        if newer && let Err(err) = store.save_ari_record(id, &theirs) {
            tracing::warn!("{err:#}");
        }
    }
    out
}

/// Shares the renewal windows this node fetched at or after `since` (in this run) for the
/// certificates in `ids` that the fleet has older or none of (`synced`, from the sync),
/// so the other nodes do not ask the CA again.
pub async fn share_ari<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    ids: impl Iterator<Item = &String>,
    synced: &BTreeMap<String, OffsetDateTime>,
    since: OffsetDateTime,
) -> Result<usize> {
    let l = fleet.layout();
    let ops: Vec<Op> = ids
        .filter_map(|id| {
            let mine = store.ari_record(id)?;
            let fresh = mine.fetched_at >= since
                && synced
                    .get(id)
                    .is_none_or(|theirs| *theirs < mine.fetched_at);
            fresh.then(|| Op::put(l.ari(id), layout::encode(&mine)))
        })
        .collect();
    for chunk in ops.chunks(super::fleet::MAX_TXN_OPS) {
        fleet.kv().txn(vec![], chunk.to_vec(), vec![]).await?;
    }
    Ok(ops.len())
}

/// Writes this node's shared settings as the fleet's if `cmp` still holds; a refused write
/// changes nothing here (another node wrote first; the next sync brings theirs).
async fn push_defaults<K: Kv + 'static>(
    fleet: &Fleet<K>,
    cmp: Cmp,
    key: String,
    mine: String,
    mirror: &mut MirrorState,
    out: &mut Synced,
) -> Result<()> {
    let r = fleet
        .kv()
        .txn(vec![cmp], vec![Op::put(key, mine)], vec![])
        .await?;
    if r.succeeded {
        mirror.conf_target = Some(r.revision);
        out.defaults = Some(true);
    }
    Ok(())
}

/// conf/target's shared settings both ways ([`super::defaults`]).
async fn sync_defaults<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    theirs: Option<&Entry>,
    mirror: &mut MirrorState,
    out: &mut Synced,
) -> Result<()> {
    let root = store.root();
    let mine_text = read_local(root, Path::new("conf/target"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mine = match super::defaults::shared_part(&mine_text) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("conf/target is not shared with the fleet: {e:#}");
            return Ok(());
        }
    };
    let key = fleet.layout().conf_target();
    let Some(e) = theirs else {
        // A fleet made before conf/target was shared: the first node to sync gives its own.
        return push_defaults(fleet, Cmp::Created(key.clone(), 0), key, mine, mirror, out).await;
    };
    let theirs_text = String::from_utf8_lossy(&e.value).into_owned();
    let theirs = super::defaults::shared_part(&theirs_text)
        .with_context(|| format!("{} of the fleet", e.key))?;
    let unchanged = mirror.conf_target == Some(e.mod_revision);
    match target_sync(Some(mine.as_bytes()), theirs.as_bytes(), unchanged) {
        TargetSync::Same => mirror.conf_target = Some(e.mod_revision),
        TargetSync::Push => {
            let cmp = Cmp::Modified(key.clone(), e.mod_revision);
            push_defaults(fleet, cmp, key, mine, mirror, out).await?;
            // Refused: another node changed it meanwhile; the next sync brings theirs.
        }
        TargetSync::Pull | TargetSync::Withdraw => {
            let merged = super::defaults::merge(&theirs, &mine_text)?;
            let path = root.join("conf/target");
            // Checked like conf/target read from disk before it replaces this node's.
            let raw = crate::target::RawTarget::parse(&merged)
                .map_err(|e| anyhow!("{e}"))
                .and_then(|r| crate::target::check_defaults(&path, &r));
            if let Err(err) = raw {
                tracing::warn!(
                    "the fleet's conf/target does not work on this node, not taken: {err:#}"
                );
                return Ok(());
            }
            crate::files::AtomicFs::new(root.join("tmp"))
                .write_file(&path, merged.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", path.display()))?;
            mirror.conf_target = Some(e.mod_revision);
            out.defaults = Some(false);
        }
    }
    Ok(())
}

/// The fleet's accounts into the mirror; accounts only this node has (registered here
/// before it joined) into the fleet, unless another node put one in the same place.
/// `known`: the fleet's accounts as the last sync left them (none on a full read), and
/// after it as this one leaves them.
async fn sync_accounts<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    accounts: &[(String, Entry)],
    known: &mut BTreeSet<String>,
) -> Result<()> {
    let root = store.root();
    let mut local_accounts = local_accounts(root);
    for (account, e) in accounts {
        known.insert(account.clone());
        if local_accounts.remove(account) {
            continue;
        }
        let pem = fleet.open(&e.key, &layout::account_slot(account), &e.value)?;
        let (part, key_id) = account
            .split_once('/')
            .ok_or_else(|| anyhow!("{}: not an account id", e.key))?;
        let url = crate::store::layout::directory_url_from_part(part)
            .ok_or_else(|| anyhow!("{}: not an escaped directory URL", e.key))?;
        store.save_account_key(&url, key_id, &pem)?;
    }
    for account in local_accounts {
        if known.contains(&account) {
            continue;
        }
        let rel = Path::new("accounts").join(&account).join("privkey");
        let Some(pem) = read_local(root, &rel) else {
            continue;
        };
        let pem = zeroize::Zeroizing::new(String::from_utf8_lossy(&pem).into_owned());
        let sealed = fleet.seal_account(&account, &pem)?;
        let key = fleet.layout().account(&account);
        fleet
            .kv()
            .txn(
                vec![Cmp::Created(key.clone(), 0)],
                vec![Op::put(key, sealed)],
                vec![],
            )
            .await?;
        // Put there now, by this node or (the write refused) by another.
        known.insert(account);
    }
    Ok(())
}

/// Whether a node subscribed to `subscribe` keeps the target file `yaml` (its
/// `cluster-labels`; a file that does not parse is kept, and refused where it is written).
fn keeps(subscribe: Option<&[String]>, yaml: &[u8]) -> bool {
    let labels = std::str::from_utf8(yaml)
        .ok()
        .and_then(|t| crate::target::RawTarget::parse(t).ok())
        .and_then(|r| r.cluster_labels)
        .unwrap_or_default();
    layout::subscribed(subscribe, &labels)
}

/// What the sync does with a target file the fleet has.
#[derive(Debug, PartialEq, Eq)]
enum TargetSync {
    /// The mirror has the fleet's version.
    Same,
    /// Changed here since the last sync, not in the fleet: the fleet takes this version
    /// (unless another node changed it meanwhile).
    Push,
    /// Removed here since the last sync: the fleet drops it too (the same proviso).
    Withdraw,
    /// The mirror takes the fleet's version.
    Pull,
}

/// The 3-way decision for one target file: `mine` (the mirror's `desired/` file),
/// `fleet` (the fleet's version) and whether the fleet's version is the one the last
/// sync saw (then a difference was made here).
fn target_sync(mine: Option<&[u8]>, fleet: &[u8], unchanged_since_sync: bool) -> TargetSync {
    match mine {
        Some(b) if b == fleet => TargetSync::Same,
        Some(_) if unchanged_since_sync => TargetSync::Push,
        None if unchanged_since_sync => TargetSync::Withdraw,
        _ => TargetSync::Pull,
    }
}

/// A target file's version after the sync's exchange with the fleet: its YAML and fleet
/// revision (`None`: gone from the fleet), and whether it is to be written here (removed
/// here, when gone).
type Settled = (String, Option<(Vec<u8>, i64)>, bool);

/// Targets both ways (see the module's preamble), then the mirror's memory of them
/// (`digests`: what each file held when synced). On an incremental read `data` has the
/// files changed in the fleet since the last sync: the others are as the mirror remembers
/// them, so a file of the mirror's memory that differs from its digest was changed here.
async fn sync_targets<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    data: &FleetData,
    mirror: &mut MirrorState,
    digests: &mut BTreeMap<String, String>,
    out: &mut Synced,
) -> Result<()> {
    let root = store.root();
    let local = |file: &str| read_local(root, &Path::new("desired").join(file));
    let mut settled: Vec<Settled> = Vec::new();
    for (file, e) in &data.targets {
        let mine = local(file);
        let unchanged = mirror.targets.get(file) == Some(&e.mod_revision);
        let decision = target_sync(mine.as_deref(), &e.value, unchanged);
        let fleets = (e.value.as_slice(), e.mod_revision);
        let (version, write) = exchange(fleet, file, fleets, decision, mine, out).await?;
        settled.push((file.clone(), version, write));
    }
    if let Some(removed) = &data.removed {
        for (file, rev) in &mirror.targets {
            if data.targets.contains_key(file) || removed.contains(file) {
                continue;
            }
            let mine = local(file);
            let decision = match &mine {
                None => TargetSync::Withdraw,
                Some(b) if digests.get(file).is_some_and(|d| *d != digest(b)) => TargetSync::Push,
                Some(_) => continue,
            };
            let (version, write) = exchange(fleet, file, (&[], *rev), decision, mine, out).await?;
            settled.push((file.clone(), version, write));
        }
    }
    for file in store.target_files().unwrap_or_default() {
        if data.targets.contains_key(&file) || !layout::valid_target_file(&file) {
            continue;
        }
        if mirror.targets.contains_key(&file) {
            if data.removed.as_ref().is_none_or(|r| r.contains(&file)) {
                // The fleet dropped it (unwanted on another node).
                store.remove_target(&file)?;
                out.removed.push(file);
            }
            continue;
        }
        if let Some(s) = push_new(fleet, root, file, out).await? {
            settled.push(s);
        }
    }
    match &data.removed {
        // A full read: the memory is made anew.
        None => {
            mirror.targets.clear();
            digests.clear();
        }
        Some(removed) => {
            for f in removed {
                mirror.targets.remove(f);
                digests.remove(f);
            }
        }
    }
    let subscribe = fleet.conf().subscribe.as_deref();
    settle(
        store,
        subscribe,
        settled,
        (&mut mirror.targets, digests),
        out,
    )
}

/// Carries out the decision for a target file the fleet has (`fleets`: its value, read
/// by this sync or as the last left it, and its revision). A push or withdrawal is refused
/// when another node changed the file meanwhile: the fleet's version then wins.
async fn exchange<K: Kv + 'static>(
    fleet: &Fleet<K>,
    file: &str,
    (value, revision): (&[u8], i64),
    decision: TargetSync,
    mine: Option<Vec<u8>>,
    out: &mut Synced,
) -> Result<(Option<(Vec<u8>, i64)>, bool)> {
    let key = fleet.layout().target(file);
    let cmp = vec![Cmp::Modified(key.clone(), revision)];
    let theirs = |got: Vec<Option<Entry>>| {
        let now = got.into_iter().next().flatten();
        (now.map(|e| (e.value, e.mod_revision)), true)
    };
    Ok(match decision {
        TargetSync::Same => (Some((value.to_vec(), revision)), false),
        TargetSync::Pull => (Some((value.to_vec(), revision)), true),
        TargetSync::Push => {
            let b = mine.unwrap_or_default();
            let put = vec![Op::put(key.clone(), b.clone())];
            let r = fleet.kv().txn(cmp, put, vec![Op::Get(key)]).await?;
            if r.succeeded {
                out.pushed.push(file.to_owned());
                (Some((b, r.revision)), false)
            } else {
                theirs(r.got)
            }
        }
        TargetSync::Withdraw => {
            let delete = vec![Op::Delete(key.clone())];
            let r = fleet.kv().txn(cmp, delete, vec![Op::Get(key)]).await?;
            if r.succeeded {
                out.withdrawn.push(file.to_owned());
                (None, false)
            } else {
                theirs(r.got)
            }
        }
    })
}

/// A target file only this node has (wanted here): the fleet gets it, unless another node
/// created the same file a moment ago (then that one wins).
async fn push_new<K: Kv + 'static>(
    fleet: &Fleet<K>,
    root: &Path,
    file: String,
    out: &mut Synced,
) -> Result<Option<Settled>> {
    let Some(b) = read_local(root, &Path::new("desired").join(&file)) else {
        return Ok(None);
    };
    let key = fleet.layout().target(&file);
    let r = fleet
        .kv()
        .txn(
            vec![Cmp::Created(key.clone(), 0)],
            vec![Op::put(key.clone(), b.clone())],
            vec![Op::Get(key)],
        )
        .await?;
    if r.succeeded {
        out.pushed.push(file.clone());
        return Ok(Some((file, Some((b, r.revision)), false)));
    }
    Ok(r.got
        .into_iter()
        .next()
        .flatten()
        .map(|e| (file, Some((e.value, e.mod_revision)), true)))
}

/// Writes what the exchange settled into `desired/`, keeping only this node's labels, and
/// remembers the files it holds (`targets`, `digests`).
fn settle(
    store: &Store,
    subscribe: Option<&[String]>,
    settled: Vec<Settled>,
    (targets, digests): (&mut BTreeMap<String, i64>, &mut BTreeMap<String, String>),
    out: &mut Synced,
) -> Result<()> {
    for (file, version, write) in settled {
        targets.remove(&file);
        digests.remove(&file);
        let Some((yaml, revision)) = version else {
            // Gone from the fleet: another node removed it as this one pushed a change.
            if write && store.root().join("desired").join(&file).exists() {
                store.remove_target(&file)?;
                out.removed.push(file);
            }
            continue;
        };
        if !keeps(subscribe, &yaml) {
            // Not this node's labels: the fleet keeps it, this node neither holds nor
            // orders it.
            if store.root().join("desired").join(&file).exists() {
                store.remove_target(&file)?;
                out.unsubscribed.push(file);
            }
            continue;
        }
        // A file not written here (it does not parse) is not remembered either: were it
        // remembered, its absence would read as an unwant at the next sync.
        if !write || write_target(store, &file, &yaml, out)? {
            digests.insert(file.clone(), digest(&yaml));
            targets.insert(file, revision);
        }
    }
    Ok(())
}

/// Writes the fleet's version of a target file into `desired/`; `false` if it is not a
/// valid target file (then it is not written).
fn write_target(store: &Store, file: &str, yaml: &[u8], out: &mut Synced) -> Result<bool> {
    let path = store.root().join("desired").join(file);
    // A target another node wrote is checked like a file read from disk before it is
    // written here.
    if let Err(e) = crate::target::parse_file(&path, yaml) {
        tracing::warn!("desired/{file} of the fleet is not a valid target, not mirrored: {e:#}");
        return Ok(false);
    }
    let text = std::str::from_utf8(yaml).map_err(|_| anyhow!("desired/{file}: not UTF-8"))?;
    store.write_target(file, text)?;
    out.pulled.push(file.to_owned());
    Ok(true)
}

/// `accounts/<urlpart>/<key id>` directories holding a key.
fn local_accounts(root: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let Ok(parts) = std::fs::read_dir(root.join("accounts")) else {
        return out;
    };
    for part in parts.flatten() {
        let p = part.file_name().to_string_lossy().into_owned();
        let Ok(ids) = std::fs::read_dir(part.path()) else {
            continue;
        };
        for id in ids.flatten() {
            let id = id.file_name().to_string_lossy().into_owned();
            if crate::keys::ids::is_well_formed_id(&id)
                && root
                    .join("accounts")
                    .join(&p)
                    .join(&id)
                    .join("privkey")
                    .is_file()
            {
                out.insert(format!("{p}/{id}"));
            }
        }
    }
    out
}

/// Writes the fleet's certificate `id` (and its key) into the mirror, if it is for a target
/// file this node keeps (`wanted`). `false`: not usable or not wanted here (expired, its key
/// missing, another label's).
fn mirror_cert<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    (id, e): (&str, &Entry),
    keys: &BTreeMap<String, Entry>,
    wanted: impl Fn(&str) -> bool,
    now: OffsetDateTime,
) -> Result<bool> {
    let entry: CertEntry = layout::decode(&e.key, &e.value)?;
    if crate::keys::ids::cert_id(&entry.url) != id {
        return Err(anyhow!("{}: its order URL does not give this id", e.key));
    }
    if !wanted(&entry.target) {
        return Ok(false);
    }
    let Some(k) = keys.get(&entry.key) else {
        return Ok(false);
    };
    let files = match crate::cert::validate_issued(&entry.fullchain, &entry.key, &[], now) {
        Ok(f) => f,
        Err(err) => {
            tracing::debug!("certificate {id} of the fleet not mirrored: {err:#}");
            return Ok(false);
        }
    };
    let pem = fleet.open(&k.key, &layout::key_slot(&entry.key), &k.value)?;
    let key = PrivateKey::from_pem(&pem).with_context(|| k.key.clone())?;
    if key.id != entry.key {
        return Err(anyhow!(
            "{}: holds key {}, not {}",
            k.key,
            key.id,
            entry.key
        ));
    }
    store.save_key(&key)?;
    store.begin_cert(&entry.url, entry.account.as_deref())?;
    // Before `cert`, which makes the directory complete.
    store.write_cert_validations(id, &entry.validations)?;
    store.finish_cert(id, Some(&entry.key), &files)?;
    if let Some(p) = &entry.profile {
        store.write_cert_profile(id, p)?;
    }
    if entry.revoked {
        store.mark_revoked(id)?;
    }
    Ok(true)
}

/// The fleet's record of certificate `id`, read from the state directory it was stored in.
fn cert_entry(
    root: &Path,
    store: &Store,
    id: &str,
    file: &str,
    node: &str,
    now: OffsetDateTime,
) -> Result<(CertEntry, String)> {
    let dir = PathBuf::from("certs").join(id);
    let text = |f: &str| -> Result<String> {
        let b = read_local(root, &dir.join(f)).ok_or_else(|| anyhow!("reading certs/{id}/{f}"))?;
        String::from_utf8(b).map_err(|_| anyhow!("certs/{id}/{f} is not text"))
    };
    let key = store
        .privkey_link_id(id)
        .ok_or_else(|| anyhow!("certs/{id} has no private key link"))?;
    let key_pem = read_local(root, &Path::new("keys").join(&key).join("privkey"))
        .ok_or_else(|| anyhow!("reading keys/{key}/privkey"))?;
    let key_pem = zeroize::Zeroizing::new(
        String::from_utf8(key_pem).map_err(|_| anyhow!("keys/{key}/privkey is not text"))?,
    );
    let profile = read_local(root, &dir.join(".profile"))
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|p| !p.is_empty());
    Ok((
        CertEntry {
            url: text("url")?.trim().to_owned(),
            account: store.cert_account(id),
            key,
            target: file.to_owned(),
            node: node.to_owned(),
            issued: rfc3339(now),
            fullchain: text("fullchain")?,
            profile,
            revoked: false,
            validations: store.cert_validations(id),
        },
        key_pem.to_string(),
    ))
}

/// The ops recording certificate `id` (and its sealed key) as the head of `file`.
fn record_ops<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    file: &str,
    id: &str,
    now: OffsetDateTime,
) -> Result<Vec<Op>> {
    let l = fleet.layout();
    let (entry, key_pem) = cert_entry(store.root(), store, id, file, fleet.node(), now)?;
    let key_pem = zeroize::Zeroizing::new(key_pem);
    let sealed = fleet.seal_key(&entry.key, &key_pem)?;
    let head = Head {
        cert: id.to_owned(),
        at: rfc3339(now),
        node: fleet.node().to_owned(),
    };
    Ok(vec![
        Op::put(l.private_key(&entry.key), sealed),
        Op::put(l.cert(id), layout::encode(&entry)),
        Op::put(l.head(file), layout::encode(&head)),
        Op::Delete(l.run(file)),
        Op::Delete(l.order(file)),
    ])
}

/// The shared run record after a `failed` attempt: the planner's rule
/// ([`backoff::after_attempt`]), on the fleet's record.
pub fn after_failure(rec: TargetRecord, now: OffsetDateTime, failed: &Failure) -> TargetRecord {
    backoff::after_attempt(rec, failed.attempt(), now)
}

/// Why the gate kept this node from ordering a target.
#[derive(Debug, Default)]
struct GateState {
    /// Each target's head as the last sync saw it.
    heads: BTreeMap<String, String>,
    /// Locks this run holds.
    held: BTreeMap<String, Held>,
    /// Targets another node holds (or just finished), with that node.
    elsewhere: BTreeMap<String, String>,
    /// Targets whose order this run recorded as finalizing, or took over as such: a
    /// certificate may exist for it, so its record outlives a failure that may pass.
    finalizing: std::collections::BTreeSet<String>,
    /// The fleet could not be used (why).
    unavailable: Option<String>,
    /// CAs (by origin) the fleet holds back every order from: until when, which node.
    paused: BTreeMap<String, (OffsetDateTime, String)>,
    /// The run's store (reopened for each pass).
    store: Option<Arc<Store>>,
}

/// The gate of one run of a node: see the module's preamble.
pub struct NodeGate<K> {
    fleet: Arc<Fleet<K>>,
    clock: Arc<dyn Clock>,
    force: bool,
    lease: tokio::sync::OnceCell<RunLease>,
    state: Mutex<GateState>,
}

impl<K> std::fmt::Debug for NodeGate<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeGate").finish_non_exhaustive()
    }
}

impl<K: Kv + 'static> NodeGate<K> {
    /// A gate for one run; `force` ignores the fleet's backoff as `reconcile --force` does.
    pub fn new(fleet: Arc<Fleet<K>>, clock: Arc<dyn Clock>, force: bool) -> Self {
        NodeGate {
            fleet,
            clock,
            force,
            lease: tokio::sync::OnceCell::new(),
            state: Mutex::new(GateState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before a pass: the heads the sync saw and the pass's store.
    pub fn begin_pass(&self, heads: BTreeMap<String, String>, store: Arc<Store>) {
        let mut s = self.state();
        s.heads = heads;
        s.store = Some(store);
    }

    /// Targets other nodes held in the pass (taken: the next pass starts empty).
    pub fn take_elsewhere(&self) -> BTreeMap<String, String> {
        std::mem::take(&mut self.state().elsewhere)
    }

    /// Each target's certificate as this pass knows it: the sync's heads and the
    /// certificates this run recorded since.
    pub fn head_certs(&self) -> Vec<String> {
        self.state().heads.values().cloned().collect()
    }

    /// Why the fleet could not be used in this run, if it could not.
    pub fn unavailable(&self) -> Option<String> {
        self.state().unavailable.clone()
    }

    /// Marks the fleet unavailable, if `e` says so; logs anything else.
    fn note(&self, what: &str, e: &anyhow::Error) {
        if super::is_unavailable(e) {
            let mut s = self.state();
            if s.unavailable.is_none() {
                s.unavailable = Some(crate::cause::render(e));
            }
        } else {
            tracing::warn!("{what}: {}", crate::cause::render(e));
        }
    }

    /// Ends the run's lease (every lock still held goes with it).
    pub async fn end(&self) {
        if let Some(lease) = self.lease.get()
            && let Err(e) = self.fleet.kv().revoke(lease.id()).await
        {
            tracing::debug!("revoking the run's lease: {e} (it runs out by itself)");
        }
    }

    /// The run's lease, granted the first time something needs it.
    async fn lease(&self) -> Result<&RunLease> {
        let ttl = self.fleet.conf().lock_ttl;
        let lease = self
            .lease
            .get_or_try_init(|| RunLease::grant(self.fleet.kv(), ttl))
            .await?;
        if lease.lost() {
            return Err(anyhow::Error::new(super::Unavailable(
                "the run's lease expired: etcd did not answer its keep-alives".into(),
            )));
        }
        Ok(lease)
    }

    /// Before a pass orders anything: every CA that a target uses and this node has no
    /// account for gets one account key for the whole fleet, chosen under a fleet lock
    /// (`x/locks/.account/<escaped URL>`): the first node generates it and shares it (sealed,
    /// fenced) before the CA hears of it; a node that comes second, or finds one in the
    /// fleet, takes that key. Every node then registers or logs in with the same key, which
    /// the CA knows as one account: two nodes never register two accounts.
    pub async fn prepare_accounts(&self, store: &Store) -> Result<()> {
        let defaults = store.load_defaults()?;
        let (targets, _) = store.load_targets(&defaults)?;
        let local = local_accounts(store.root());
        // The fallback CAs too: a target may be ordered there in this run.
        let providers = targets.iter().flat_map(|t| {
            std::iter::once(t.provider.as_str())
                .chain(t.fallback_providers.iter().map(String::as_str))
        });
        for provider in without_account(providers, &local) {
            self.account_key_for(store, &provider)
                .await
                .with_context(|| format!("choosing the fleet's account at {provider}"))?;
        }
        Ok(())
    }

    async fn account_key_for(&self, store: &Store, provider: &str) -> Result<()> {
        let part = crate::store::layout::account_url_part(provider)?;
        let lock = format!(".account/{part}");
        let lease = self.lease().await?.id();
        let deadline = tokio::time::Instant::now() + self.fleet.conf().wait;
        let held = loop {
            match self
                .fleet
                .try_lock(&lock, lease, self.clock.now_utc())
                .await?
            {
                Lock::Held(h) => break *h,
                Lock::Elsewhere(info) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("node {} is choosing the account at {provider}", info.node);
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Lock::Elsewhere(info) => {
                    return Err(anyhow!(
                        "node {} held the fleet's account lock longer than `wait`",
                        info.node
                    ));
                }
            }
        };
        let r = self.account_key_locked(store, provider, &part, &held).await;
        self.fleet.release(&held).await;
        r
    }

    async fn account_key_locked(
        &self,
        store: &Store,
        provider: &str,
        part: &str,
        held: &Held,
    ) -> Result<()> {
        let l = self.fleet.layout();
        let shared = self
            .fleet
            .kv()
            .range(Range::prefix(l.account(&format!("{part}/"))))
            .await?;
        if let Some(e) = shared.entries.first() {
            // Another node chose it a moment ago.
            let account = e
                .key
                .strip_prefix(&l.account(""))
                .ok_or_else(|| anyhow!("{}: not an account key", e.key))?;
            let key_id = account
                .rsplit_once('/')
                .map(|(_, id)| id)
                .ok_or_else(|| anyhow!("{}: not an account key", e.key))?;
            let pem = self
                .fleet
                .open(&e.key, &layout::account_slot(account), &e.value)?;
            store.save_account_key(provider, key_id, &pem)?;
            return Ok(());
        }
        let key =
            tokio::task::spawn_blocking(|| PrivateKey::generate(crate::keys::KeySpec::EcdsaP256))
                .await
                .context("key generation task")??;
        let pem = zeroize::Zeroizing::new(key.to_pem());
        let id = store.save_account_key(provider, &key.id, &pem)?;
        let sealed = self.fleet.seal_account(&id, &pem)?;
        self.fleet
            .fenced_or_lost(
                held,
                vec![Op::put(l.account(&id), sealed)],
                "a new account key",
            )
            .await?;
        tracing::info!("account key {id} chosen for the fleet at {provider}");
        Ok(())
    }

    async fn claim_inner(&self, file: &str, finish_only: bool) -> Result<Claim> {
        let lease = self.lease().await?;
        let now = self.clock.now_utc();
        let held = match self.fleet.try_lock(file, lease.id(), now).await? {
            Lock::Elsewhere(info) => {
                tracing::debug!("desired/{file}: node {} is on it", info.node);
                self.state().elsewhere.insert(file.to_owned(), info.node);
                return Ok(Claim::No);
            }
            Lock::Held(h) => *h,
        };
        let synced = self.state().heads.get(file).cloned();
        let locked = on_lock(&held, synced.as_ref(), now, self.force, finish_only);
        match locked {
            Locked::Moved(by) => {
                // Another node obtained a certificate since the sync: sync again, link it.
                self.fleet.release(&held).await;
                tracing::debug!("desired/{file}: node {by} obtained a certificate meanwhile");
                self.state().elsewhere.insert(file.to_owned(), by);
                Ok(Claim::No)
            }
            Locked::Finish(f) => {
                // A holder that died or lost the lock may have finalized this order: it is
                // finished, never ordered again.
                if let Err(e) = self.take_order_key(&f.key_id).await {
                    self.fleet.release(&held).await;
                    return Err(e.context(format!(
                        "desired/{file}: the key of order {} placed by node {}",
                        f.url, f.node
                    )));
                }
                let mut s = self.state();
                s.finalizing.insert(file.to_owned());
                s.held.insert(file.to_owned(), held);
                Ok(Claim::Finish(f))
            }
            Locked::Wait(next) => {
                tracing::debug!(
                    "desired/{file}: the fleet waits until {} after a failed attempt",
                    rfc3339(next)
                );
                self.fleet.release(&held).await;
                Ok(Claim::No)
            }
            Locked::Paused => {
                self.fleet.release(&held).await;
                Ok(Claim::No)
            }
            Locked::Order => {
                self.state().held.insert(file.to_owned(), held);
                Ok(Claim::Order)
            }
        }
    }

    /// Puts the fleet's private key `id` into the mirror's `keys/` (an order's key that only
    /// the node that placed it had).
    async fn take_order_key(&self, id: &str) -> Result<()> {
        let store = self
            .state()
            .store
            .clone()
            .ok_or_else(|| anyhow!("no state directory for the fleet"))?;
        let pem = self
            .fleet
            .private_key(id)
            .await?
            .ok_or_else(|| anyhow!("{} is missing", self.fleet.layout().private_key(id)))?;
        let key = PrivateKey::from_pem(&pem)?;
        if key.id != id {
            return Err(anyhow!("the fleet's key {id} holds key {}", key.id));
        }
        store.save_key(&key)
    }

    async fn finalizing_inner(
        &self,
        file: &str,
        order_url: &str,
        key_id: &str,
        account: &str,
        validations: Vec<crate::challenge::Validation>,
    ) -> Result<()> {
        let (held, store) = {
            let s = self.state();
            (s.held.get(file).cloned(), s.store.clone())
        };
        let held = held.ok_or_else(|| anyhow!("desired/{file}: not locked in the fleet"))?;
        let store = store.ok_or_else(|| anyhow!("no state directory for the fleet"))?;
        let key = store.load_key(key_id)?;
        let pem = zeroize::Zeroizing::new(key.to_pem());
        let l = self.fleet.layout();
        let record = OrderRecord {
            state: OrderState::Finalizing,
            url: Some(order_url.to_owned()),
            account: account.to_owned(),
            key: key_id.to_owned(),
            node: self.fleet.node().to_owned(),
            since: rfc3339(self.clock.now_utc()),
            validations,
        };
        let ops = vec![
            Op::put(l.private_key(key_id), self.fleet.seal_key(key_id, &pem)?),
            Op::put(l.order(file), layout::encode(&record)),
        ];
        self.fleet
            .fenced_or_lost(
                &held,
                ops,
                &format!("order {order_url} before finalizing it"),
            )
            .await?;
        self.state().finalizing.insert(file.to_owned());
        Ok(())
    }

    async fn finish_inner(&self, file: &str, result: Result<&str, &Failure>) -> Result<()> {
        let (held, store, finalizing) = {
            let mut s = self.state();
            let finalizing = s.finalizing.remove(file);
            (s.held.remove(file), s.store.clone(), finalizing)
        };
        let Some(held) = held else {
            return Ok(());
        };
        let now = self.clock.now_utc();
        let outcome = match result {
            Ok(id) => {
                let store = store.ok_or_else(|| anyhow!("no state directory for the fleet"))?;
                match record_ops(&self.fleet, &store, file, id, now) {
                    Ok(mut ops) => {
                        // The renewal window of the certificate this one replaces goes
                        // with it (fenced by the same lock).
                        if let Some(old) = held.head.as_ref().filter(|h| h.cert != id) {
                            ops.push(Op::Delete(self.fleet.layout().ari(&old.cert)));
                        }
                        let r = self
                            .fleet
                            .fenced_or_lost(&held, ops, &format!("certificate {id}"))
                            .await;
                        if r.is_ok() {
                            self.state().heads.insert(file.to_owned(), id.to_owned());
                        }
                        r
                    }
                    Err(e) => Err(e),
                }
            }
            Err(failed) => {
                let rec = after_failure(held.run.clone().unwrap_or_default(), now, failed);
                let mut ops = vec![Op::put(self.fleet.layout().run(file), layout::encode(&rec))];
                if finalizing && !keeps_order_record(failed.backoff) {
                    tracing::info!(
                        "desired/{file}: the CA refused the order recorded as finalizing; the next attempt orders anew"
                    );
                    ops.push(Op::Delete(self.fleet.layout().order(file)));
                }
                if let Err(e) = self.fleet.fenced(&held, ops).await {
                    tracing::debug!("desired/{file}: recording the failure in the fleet: {e}");
                }
                Ok(())
            }
        };
        self.fleet.release(&held).await;
        outcome
    }
}

/// The CAs among `providers` that none of `local` (`<escaped URL>/<key id>` of the
/// accounts this node has) is an account at, each once. acmetool's Let's Encrypt v1
/// accounts count for the default provider, as the account lookup has it.
fn without_account<'a>(
    providers: impl Iterator<Item = &'a str>,
    local: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    let has = |provider: &str| {
        crate::store::layout::account_url_part(provider).is_ok_and(|part| {
            local
                .iter()
                .any(|a| a.split_once('/').is_some_and(|(p, _)| p == part))
        })
    };
    providers
        .filter(|p| {
            let v1 = *p == crate::target::DEFAULT_PROVIDER && has(crate::target::LE_V1_PROVIDER);
            !(has(p) || v1)
        })
        .map(str::to_owned)
        .collect()
}

/// The order a previous holder of the lock left recorded as finalizing, if any: a
/// certificate may exist for it.
fn finishing(order: Option<&OrderRecord>) -> Option<Finishing> {
    let o = order.filter(|o| o.state == OrderState::Finalizing)?;
    Some(Finishing {
        url: o.url.clone()?,
        key_id: o.key.clone(),
        account: o.account.clone(),
        node: o.node.clone(),
        validations: o.validations.clone(),
    })
}

/// What a node that just locked a target does with it.
#[derive(Debug, PartialEq, Eq)]
enum Locked {
    /// The target's head moved since the sync (to a certificate of this node): link it.
    Moved(String),
    /// Finish the order a previous holder recorded as finalizing.
    Finish(Finishing),
    /// The fleet's record of failed attempts says to wait until then.
    Wait(OffsetDateTime),
    /// The CA is paused for the fleet and there is no order to finish: nothing now.
    Paused,
    /// Order a certificate.
    Order,
}

/// The decision for a target this node locked (`held`), whose head the sync saw as
/// `synced`: an order recorded as finalizing is finished even while the CA is paused for
/// the fleet (`finish_only`: the certificate may exist, fetching it is no new order) and
/// whatever the backoff says; nothing else is ordered while paused.
fn on_lock(
    held: &Held,
    synced: Option<&String>,
    now: OffsetDateTime,
    force: bool,
    finish_only: bool,
) -> Locked {
    if held.head.as_ref().map(|h| &h.cert) != synced {
        let by = held.head.as_ref().map(|h| h.node.clone());
        return Locked::Moved(by.unwrap_or_default());
    }
    if let Some(f) = finishing(held.order.as_ref()) {
        return Locked::Finish(f);
    }
    if finish_only {
        return Locked::Paused;
    }
    let waiting = held.run.as_ref().and_then(|r| backoff::gate(r, now, force));
    match waiting {
        Some(w) => Locked::Wait(w.until),
        None => Locked::Order,
    }
}

/// Whether an order recorded as finalizing stays recorded after an attempt that failed so:
/// unless the CA answered (it refused the order, or says it is invalid or gone), the
/// certificate may exist or come, and the next holder must finish that order rather than
/// order anew.
fn keeps_order_record(backoff: Backoff) -> bool {
    backoff != Backoff::Yes
}

impl<K: Kv + 'static> crate::reconcile::OrderGate for NodeGate<K> {
    fn claim<'a>(&'a self, file: &'a str, finish_only: bool) -> BoxFuture<'a, Claim> {
        Box::pin(async move {
            if self.unavailable().is_some() {
                return Claim::No;
            }
            match self.claim_inner(file, finish_only).await {
                Ok(claim) => claim,
                Err(e) => {
                    self.note(&format!("locking desired/{file} in the fleet"), &e);
                    Claim::No
                }
            }
        })
    }

    fn finalizing<'a>(
        &'a self,
        file: &'a str,
        order_url: &'a str,
        key_id: &'a str,
        account: &'a str,
        validations: Vec<crate::challenge::Validation>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let r = self
                .finalizing_inner(file, order_url, key_id, account, validations)
                .await;
            if let Err(e) = &r
                && super::is_unavailable(e)
            {
                self.note("recording an order in the fleet", e);
            }
            r
        })
    }

    fn finish<'a>(
        &'a self,
        file: &'a str,
        result: Result<&'a str, &'a Failure>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let r = self.finish_inner(file, result).await;
            if let Err(e) = &r
                && super::is_unavailable(e)
            {
                self.note("recording in the fleet", e);
            }
            r
        })
    }

    fn ca_paused<'a>(
        &'a self,
        provider: &'a str,
    ) -> BoxFuture<'a, Option<(OffsetDateTime, String)>> {
        Box::pin(async move {
            let origin = crate::acme::nonces::origin(provider)?;
            let now = self.clock.now_utc();
            if let Some(p) = self.state().paused.get(&origin).filter(|p| p.0 > now) {
                return Some(p.clone());
            }
            match self.fleet.ca_pause(&origin, now).await {
                Ok(p) => {
                    let p = p.and_then(|p| {
                        Some((OffsetDateTime::parse(&p.until, &Rfc3339).ok()?, p.node))
                    })?;
                    self.state().paused.insert(origin, p.clone());
                    Some(p)
                }
                Err(e) => {
                    self.note(&format!("reading the fleet's pause for {origin}"), &e);
                    None
                }
            }
        })
    }

    fn slowed<'a>(&'a self, provider: &'a str, until: OffsetDateTime) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(origin) = crate::acme::nonces::origin(provider) else {
                return;
            };
            let now = self.clock.now_utc();
            match self.fleet.pause_ca(&origin, until, now).await {
                Ok(()) => tracing::info!(
                    "{origin} asked to slow down until {}: the fleet orders nothing from it until then",
                    rfc3339(until)
                ),
                Err(e) => self.note(
                    &format!("telling the fleet {origin} asked to slow down"),
                    &e,
                ),
            }
        })
    }
}

/// Waits until none of `files` is locked in the fleet, at most until `deadline`; the files
/// still locked then, with their holders.
pub async fn wait_released<K: Kv + 'static>(
    fleet: &Fleet<K>,
    files: &BTreeMap<String, String>,
    deadline: tokio::time::Instant,
) -> Result<BTreeMap<String, String>> {
    let names: Vec<String> = files.keys().cloned().collect();
    loop {
        let holders = fleet.holders(&names).await?;
        let still: BTreeMap<String, String> = names
            .iter()
            .zip(holders)
            .filter_map(|(f, h)| h.map(|h| (f.clone(), h.node)))
            .collect();
        if still.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(still);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Records what this node last did (`x/nodes/<node>`), for `cluster-status`.
pub async fn record_node<K: Kv + 'static>(
    fleet: &Fleet<K>,
    revision: i64,
    outcome: &str,
    now: OffsetDateTime,
) -> Result<()> {
    let info = NodeInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        synced_revision: revision,
        synced_at: rfc3339(now),
        last_run: Some(rfc3339(now)),
        last_outcome: Some(outcome.to_owned()),
        key_ids: fleet.keys().ids(),
        subscribe: fleet.conf().subscribe.clone(),
    };
    fleet
        .kv()
        .txn(
            vec![],
            vec![Op::put(
                fleet.layout().node(fleet.node()),
                layout::encode(&info),
            )],
            vec![],
        )
        .await?;
    Ok(())
}

/// `cluster-init`: makes the prefix a fleet (`P/v`) and puts this node's state into it: its
/// targets and accounts (by the first sync), and the certificate each target uses now with
/// its sealed key, as the target's head. Refuses a prefix that already holds a fleet.
pub async fn init<K: Kv + 'static>(
    fleet: &Fleet<K>,
    store: &Store,
    now: OffsetDateTime,
) -> Result<(Synced, usize)> {
    let l = fleet.layout();
    let v = l.version();
    let r = fleet
        .kv()
        .txn(
            vec![Cmp::Created(v.clone(), 0)],
            vec![Op::put(v, layout::VERSION)],
            vec![],
        )
        .await?;
    if !r.succeeded {
        return Err(crate::exit::config_error(anyhow!(
            "{} already holds a fleet: a node joins it with its conf/cluster alone (its next run syncs)",
            l.prefix()
        )));
    }
    let defaults = store.load_defaults()?;
    let (targets, _broken, mut inv) = store.load_all(&defaults)?;
    let summaries = inv.take_summaries();
    let mut heads = 0;
    for t in &targets {
        let Some(best) = crate::cert::best_cert(t, &summaries, now) else {
            continue;
        };
        let mut ops = match record_ops(fleet, store, &t.file, &best.id, now) {
            Ok(ops) => ops,
            Err(e) => {
                tracing::warn!(
                    "desired/{}: certificate {} not shared: {e:#}",
                    t.file,
                    best.id
                );
                continue;
            }
        };
        ops.truncate(3);
        let head = l.head(&t.file);
        fleet
            .kv()
            .txn(vec![Cmp::Created(head, 0)], ops, vec![])
            .await?;
        heads += 1;
    }
    let synced = sync(fleet, store, now).await?;
    Ok((synced, heads))
}

impl<K: Kv + 'static> crate::challenge::TokenShare for NodeGate<K> {
    fn publish<'a>(
        &'a self,
        token: &'a str,
        key_authorization: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let agents = self.fleet.agents().await?;
            if agents.is_empty() {
                // No agent runs anywhere: this node answers alone, as on one machine.
                return Ok(false);
            }
            let ttl = self.fleet.conf().lock_ttl;
            let lease = self
                .lease
                .get_or_try_init(|| RunLease::grant(self.fleet.kv(), ttl))
                .await?;
            self.fleet
                .publish_token(lease.id(), token, key_authorization)
                .await?;
            let missing = self
                .fleet
                .wait_acks(token, &agents, self.fleet.conf().ack_wait)
                .await;
            if !missing.is_empty() {
                tracing::warn!(
                    "the cluster agents of {} did not confirm http-01 token {token} within {}s: validation through those machines may fail",
                    missing.join(", "),
                    self.fleet.conf().ack_wait.as_secs()
                );
            }
            Ok(missing.len() < agents.len())
        })
    }

    fn withdraw<'a>(&'a self, token: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.fleet.withdraw_token(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::backoff::Backoff;
    use time::macros::datetime;

    #[test]
    fn a_target_changed_here_goes_to_the_fleet_and_one_changed_there_comes_here() {
        use TargetSync::*;
        let (old, new) = (b"a".as_slice(), b"b".as_slice());
        assert_eq!(target_sync(Some(old), old, true), Same);
        assert_eq!(target_sync(Some(old), old, false), Same);
        // Edited here since the sync: the fleet takes it.
        assert_eq!(target_sync(Some(new), old, true), Push);
        // Removed here since the sync: the fleet drops it.
        assert_eq!(target_sync(None, old, true), Withdraw);
        // Changed in the fleet (by another node): it wins over a local edit.
        assert_eq!(target_sync(Some(new), old, false), Pull);
        assert_eq!(target_sync(None, old, false), Pull);
    }

    use super::super::fleet::tests::head;

    #[test]
    fn a_moved_head_whose_certificate_is_not_mirrored_is_counted_so_the_next_sync_reads_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = crate::store::lock::StateLock::acquire(dir.path()).expect("lock");
        let store = Store::open(dir.path(), &lock).expect("open");
        let (held, missing) = ("h".repeat(52), "m".repeat(52));
        let cert_dir = dir.path().join("certs").join(&held);
        std::fs::create_dir_all(&cert_dir).expect("certs/");
        std::fs::write(cert_dir.join("cert"), "PEM").expect("cert");
        let kept: BTreeMap<String, i64> = [("a".to_owned(), 1), ("b".to_owned(), 1)].into();
        let heads: BTreeMap<String, String> = [
            ("a".to_owned(), held.clone()),
            ("b".to_owned(), missing.clone()),
            ("elsewhere".to_owned(), missing),
        ]
        .into();
        let files = |f: &[&str]| f.iter().map(|f| (*f).to_owned()).collect::<Vec<_>>();
        // b's certificate was not mirrored: counted.
        assert_eq!(
            not_mirrored(&store, &kept, &heads, files(&["a", "b"]).iter()),
            1
        );
        // A target this node does not keep, or a head that did not move: not.
        assert_eq!(
            not_mirrored(&store, &kept, &heads, files(&["a", "elsewhere"]).iter()),
            0
        );
        assert_eq!(not_mirrored(&store, &kept, &heads, files(&[]).iter()), 0);
    }

    #[tokio::test]
    async fn an_incremental_read_sees_what_changed_and_what_was_removed_and_nothing_else() {
        use super::super::kv::mem::MemKv;
        let kv = MemKv::default();
        let conf = super::super::config::parse(
            Path::new("conf/cluster"),
            "endpoints: [http://127.0.0.1:2379]\nsecret-key-file: k\nnode: a\n",
            Path::new("conf"),
            "",
        )
        .expect("conf");
        let keys = super::super::seal::ClusterKeys::new_line().expect("key");
        let fleet = Fleet::new(
            kv.clone(),
            conf,
            super::super::seal::ClusterKeys::parse(&keys).expect("keys"),
        );
        let put = |k: &str, v: &str| {
            let kv = kv.clone();
            let (k, v) = (format!("/acmekeep/{k}"), v.to_owned());
            async move {
                kv.txn(vec![], vec![Op::put(k, v)], vec![])
                    .await
                    .expect("put")
                    .revision
            }
        };
        for f in ["a", "b", "c"] {
            put(&format!("d/targets/{f}"), "satisfy: {names: [a.test]}\n").await;
        }
        put("d/heads/c", &String::from_utf8(head("c")).expect("UTF-8")).await;
        let at = put("d/conf/target", "request: {}\n").await;
        let mirrored: BTreeMap<String, i64> =
            ["a", "b", "c"].map(|f| (f.to_owned(), at - 1)).into();
        let since = Since {
            revision: at,
            fleet_targets: 3,
            fleet_heads: 1,
            heads: [("c".to_owned(), "c".repeat(52))].into(),
            ..Since::default()
        };
        // Only the exchange subtree moved (locks, node records): nothing to read.
        put("x/nodes/b", "{}").await;
        let data = read_changes(&fleet, &since, &mirrored)
            .await
            .expect("read")
            .expect("incremental");
        assert!(data.targets.is_empty() && data.certs.is_empty() && data.heads.is_empty());
        assert_eq!(data.removed, Some(BTreeSet::new()));
        assert_eq!(data.fleet_targets, 3);
        // conf/target is always read (a change made here is told from the fleet's copy).
        assert!(data.conf_target.is_some());
        // a changed, b unwanted, d wanted elsewhere; a run record moved.
        put("d/targets/a", "satisfy: {names: [a.test, b.test]}\n").await;
        kv.txn(
            vec![],
            vec![Op::Delete("/acmekeep/d/targets/b".into())],
            vec![],
        )
        .await
        .expect("delete");
        put("d/targets/d", "satisfy: {names: [d.test]}\n").await;
        put("d/runs/c", "{}").await;
        // c unwanted elsewhere a while ago, and its head collected.
        kv.txn(
            vec![],
            vec![Op::Delete("/acmekeep/d/heads/c".into())],
            vec![],
        )
        .await
        .expect("delete");
        let data = read_changes(&fleet, &since, &mirrored)
            .await
            .expect("read")
            .expect("incremental");
        assert_eq!(data.targets.keys().collect::<Vec<_>>(), ["a", "d"]);
        assert_eq!(data.removed, Some(["b".to_owned()].into()));
        assert_eq!(data.heads_removed, ["c".to_owned()].into());
        assert_eq!((data.fleet_targets, data.fleet_heads), (3, 0));
        // A memory that does not add up with the fleet (more files than it can explain),
        // or more changes than an incremental read takes: the full read.
        let wrong = Since {
            revision: at,
            fleet_targets: 1,
            ..Since::default()
        };
        assert!(
            read_changes(&fleet, &wrong, &mirrored)
                .await
                .expect("read")
                .is_none()
        );
        let ops: Vec<Op> = (0..=CHANGED_LIMIT)
            .map(|i| Op::put(format!("/acmekeep/d/ari/{i}"), "{}"))
            .collect();
        kv.txn(vec![], ops, vec![]).await.expect("put");
        assert!(
            read_changes(&fleet, &since, &mirrored)
                .await
                .expect("read")
                .is_none()
        );
    }

    #[test]
    fn a_node_keeps_the_targets_of_its_labels_and_those_without_labels() {
        let web = ["web".to_owned()];
        let labelled = b"satisfy:\n  names: [a.test]\ncluster-labels: [mail, web]\n";
        let mail = b"satisfy:\n  names: [a.test]\ncluster-labels: [mail]\n";
        let none = b"satisfy:\n  names: [a.test]\n";
        assert!(keeps(Some(&web), labelled));
        assert!(!keeps(Some(&web), mail));
        assert!(keeps(Some(&web), none));
        assert!(keeps(None, mail));
        // Unreadable: kept here, and refused where it is written.
        assert!(keeps(Some(&web), b"\xff: ["));
    }

    #[test]
    fn a_ca_gets_a_fleet_account_key_only_when_this_node_has_none_there() {
        let part = |u: &str| crate::store::layout::account_url_part(u).expect("url");
        let id = "a".repeat(52);
        let local: std::collections::BTreeSet<String> = [
            format!("{}/{id}", part("https://ca.example/dir")),
            format!("{}/{id}", part(crate::target::LE_V1_PROVIDER)),
        ]
        .into();
        let providers = [
            "https://ca.example/dir",
            "https://other.example/dir",
            "https://other.example/dir",
            crate::target::DEFAULT_PROVIDER,
        ];
        assert_eq!(
            without_account(providers.into_iter(), &local),
            ["https://other.example/dir".to_owned()].into()
        );
        assert_eq!(
            without_account(providers.into_iter(), &Default::default()).len(),
            3
        );
    }

    #[test]
    fn only_an_order_recorded_as_finalizing_is_finished_instead_of_ordered_again() {
        // How node a validated the names goes with the order to the node that finishes it.
        let validated = crate::challenge::Validation {
            name: "a.example".into(),
            kind: "dns-account-01".into(),
            record: "_abc._acme-challenge.a.example".into(),
            persist_until: None,
        };
        let rec = |state, url: Option<&str>| OrderRecord {
            state,
            url: url.map(str::to_owned),
            account: "acct".into(),
            key: "k".repeat(52),
            node: "a".into(),
            since: "2026-12-01T04:00:00Z".into(),
            validations: vec![validated.clone()],
        };
        assert_eq!(finishing(None), None);
        // Before finalize no certificate can exist: a fresh order is safe.
        assert_eq!(finishing(Some(&rec(OrderState::Ordering, None))), None);
        assert_eq!(
            finishing(Some(&rec(OrderState::Ordered, Some("https://ca/o/1")))),
            None
        );
        assert_eq!(
            finishing(Some(&rec(OrderState::Finalizing, Some("https://ca/o/1")))),
            Some(Finishing {
                url: "https://ca/o/1".into(),
                key_id: "k".repeat(52),
                account: "acct".into(),
                node: "a".into(),
                validations: vec![validated.clone()],
            })
        );
        // The record outlives failures that may pass (the certificate may exist), not a CA
        // that refused the order.
        assert!(keeps_order_record(Backoff::No));
        assert!(keeps_order_record(Backoff::RateLimited));
        assert!(!keeps_order_record(Backoff::Yes));
    }

    #[test]
    fn a_fleet_pause_still_finishes_an_order_recorded_as_finalizing() {
        let now = datetime!(2026-12-01 04:00 UTC);
        let order = |state| OrderRecord {
            state,
            url: Some("https://ca/o/1".into()),
            account: "acct".into(),
            key: "k".repeat(52),
            node: "a".into(),
            since: "2026-12-01T03:59:00Z".into(),
            validations: vec![],
        };
        let backing_off = TargetRecord {
            failures: 3,
            next_attempt: Some(now + time::Duration::hours(1)),
            ..TargetRecord::default()
        };
        let held = |o: Option<OrderRecord>, run: Option<TargetRecord>| Held {
            file: "a.example".into(),
            token: 7,
            head: None,
            order: o,
            run,
        };
        let finalizing = held(
            Some(order(OrderState::Finalizing)),
            Some(backing_off.clone()),
        );
        for paused in [false, true] {
            assert!(
                matches!(on_lock(&finalizing, None, now, false, paused), Locked::Finish(f) if f.url == "https://ca/o/1"),
                "paused: {paused}"
            );
        }
        // Paused: nothing new is ordered, whatever the backoff says.
        assert_eq!(
            on_lock(&held(None, None), None, now, false, true),
            Locked::Paused
        );
        let ordering = held(Some(order(OrderState::Ordering)), None);
        assert_eq!(on_lock(&ordering, None, now, false, true), Locked::Paused);
        assert_eq!(on_lock(&ordering, None, now, false, false), Locked::Order);
        assert_eq!(
            on_lock(
                &held(None, Some(backing_off.clone())),
                None,
                now,
                false,
                false
            ),
            Locked::Wait(now + time::Duration::hours(1))
        );
        // A head another node recorded since the sync wins over everything.
        let mut moved = finalizing.clone();
        moved.head = Some(Head {
            cert: "c".repeat(52),
            at: "2026-12-01T03:59:30Z".into(),
            node: "b".into(),
        });
        assert_eq!(
            on_lock(&moved, None, now, false, true),
            Locked::Moved("b".into())
        );
    }

    #[test]
    fn a_failure_the_ca_answered_backs_off_fleet_wide_and_a_local_one_does_not() {
        let now = datetime!(2026-12-01 04:00 UTC);
        let failed = |error: &str, backoff| Failure {
            error: error.to_owned(),
            backoff,
            retry_at: None,
        };
        let rec = after_failure(
            TargetRecord::default(),
            now,
            &failed("validation failed", Backoff::Yes),
        );
        assert_eq!(rec.failures, 1);
        assert_eq!(rec.last_error.as_deref(), Some("validation failed"));
        let next = rec.next_attempt.expect("next");
        assert!(next > now);
        let again = after_failure(rec, now, &failed("hook missing", Backoff::No));
        assert_eq!(again.failures, 2);
        assert_eq!(again.next_attempt, None);
        assert!(!again.rate_limited);
    }
}
