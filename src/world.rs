//! The world: everything a command decides from, read from the state directory once.
//!
//! A command opens the store (under the state lock when it writes), loads one [`World`] with
//! the [`Scope`] it needs, and from then on decides from that value: the planner reads a
//! world and never the disk, so what `status` shows and what `cull` or `reconcile` does are
//! decided from the same inputs, and nothing is loaded twice in one command (`want` adds its
//! new target to the world it checked coverage in, then reconciles that world).
//!
//! Loading is I/O; everything that reads a World is pure. Summaries of the complete
//! certificates are moved out of the inventory into [`World::certs`], never copied: at ten
//! thousand targets the world is the command's largest value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use time::OffsetDateTime;

use crate::cert::CertSet;
use crate::exit::config_error;
use crate::store::renewal_cache::AriRecord;
use crate::store::{CertState, Inventory, Store, TargetError, TargetRecord};
use crate::target::{RawTarget, Target};

/// What a command needs loaded besides `conf/target` and the targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// `conf/target` and the targets resolved over it ([`World::targets`], [`World::broken`]).
    pub targets: bool,
    /// The target files as written, unresolved, each read or why not
    /// ([`World::raw_targets`]).
    pub raw_targets: bool,
    /// Certificates, keys, accounts and live links ([`World::inv`], [`World::certs`]).
    pub inventory: bool,
    /// The cached renewal information of every complete certificate ([`World::ari`]).
    pub ari: bool,
    /// Every target's run record ([`World::records`]).
    pub records: bool,
    /// The key each incomplete certificate directory links to ([`World::privkey_links`]).
    pub privkey_links: bool,
}

impl Scope {
    /// `want --no-reconcile`: the targets alone (is a name covered already?).
    pub const TARGETS: Scope = Scope {
        targets: true,
        raw_targets: false,
        inventory: false,
        ari: false,
        records: false,
        privkey_links: false,
    };
    /// `reconcile` (and `want` before it): targets, inventory and the cached renewal
    /// information; the run records of the few targets that are due are read when the plan
    /// asks for them ([`World::load_needs`]).
    pub const RECONCILE: Scope = Scope {
        inventory: true,
        ari: true,
        ..Scope::TARGETS
    };
    /// `status`: all of it but the key links (no lock, no network).
    pub const STATUS: Scope = Scope {
        inventory: true,
        ari: true,
        records: true,
        ..Scope::TARGETS
    };
    /// `check` and the metrics: what `status` reads; the run records are read after
    /// ([`World::load_records`], through the store's one-file cache).
    pub const MONITOR: Scope = Scope {
        inventory: true,
        ari: true,
        ..Scope::TARGETS
    };
    /// `cull`: what deciding which directories to delete needs.
    pub const CULL: Scope = Scope {
        inventory: true,
        privkey_links: true,
        ..Scope::TARGETS
    };
    /// `unwant`: the target files alone, as written (a broken `conf/target` must not keep a
    /// name from being unwanted).
    pub const UNWANT: Scope = Scope {
        targets: false,
        raw_targets: true,
        ..Scope::TARGETS
    };
}

/// Everything a command decides from.
#[derive(Debug, Default)]
pub struct World {
    /// `conf/target` with acmetool's legacy fallbacks.
    pub defaults: RawTarget,
    /// The loadable `desired/` files, by file name.
    pub targets: Vec<Target>,
    /// The unloadable ones, by file name, with why.
    pub broken: Vec<TargetError>,
    /// Certificate directories that are not complete (waiting for their download, or
    /// unreadable), keys, accounts, live links and the warnings of loading.
    pub inv: Inventory,
    /// The complete certificates (moved out of the inventory).
    pub certs: CertSet,
    /// Cached renewal information by certificate id (with [`Scope::ari`]).
    pub ari: BTreeMap<String, AriRecord>,
    /// Backoffs after renewal-information answers that could not be used, by certificate id
    /// (with [`Scope::ari`]).
    pub ari_backoff: BTreeMap<String, crate::store::renewal_cache::AriBackoff>,
    /// The run record of each target, in the order of `targets`: all of them with
    /// [`Scope::records`], else those the plan asked for ([`World::load_needs`]); `None`:
    /// not read. Empty when none was read.
    pub records: Vec<Option<TargetRecord>>,
    /// The CA that issued each certificate, by its position in `certs` ([`CertSet::at`]),
    /// read for the certificates the plan asked about ([`Needs::issuers`]): see
    /// [`World::issuer`]. The CAs are few and shared ([`World::note_issuer`] interns them):
    /// one copy of each URL, not one per certificate, and no copy of the certificate ids.
    pub issuers: Vec<Option<Option<Arc<str>>>>,
    /// CA → whether its directory lately offered no `renewalInfo` (a stamp younger than a
    /// day), read for the CAs the plan asked about.
    pub no_ari: BTreeMap<String, bool>,
    /// Incomplete certificate directory id → the key id its `privkey` link names (with
    /// [`Scope::privkey_links`]).
    pub privkey_links: BTreeMap<String, String>,
    /// With [`Scope::raw_targets`]: every `desired/` file by name, parsed as written or why
    /// it could not be.
    pub raw_targets: Vec<(String, Result<RawTarget>)>,
    /// What was loaded.
    pub scope: Scope,
}

impl World {
    /// Loads what `scope` asks for from `store`. A broken `conf/target` is a configuration
    /// error; broken target files and certificate directories are part of the world.
    pub fn load(store: &Store, scope: Scope) -> Result<World> {
        let started = std::time::Instant::now();
        let defaults = if scope.targets {
            store.load_defaults().map_err(config_error)?
        } else {
            RawTarget::default()
        };
        let (targets, broken, mut inv) = match (scope.targets, scope.inventory) {
            (true, true) => store.load_all(&defaults)?,
            (true, false) => {
                let (targets, broken) = store.load_targets(&defaults)?;
                (targets, broken, Inventory::default())
            }
            (false, true) => (Vec::new(), Vec::new(), store.load_inventory()?),
            (false, false) => Default::default(),
        };
        let certs = inv.take_summaries();
        tracing::debug!(
            "loaded {} target(s) and {} certificate(s) in {:.0?}",
            targets.len(),
            certs.iter().count() + inv.certs.len(),
            started.elapsed()
        );
        let mut world = World {
            defaults,
            targets,
            broken,
            inv,
            certs,
            scope,
            ..World::default()
        };
        if scope.raw_targets {
            world.raw_targets = store
                .target_files()?
                .into_iter()
                .map(|file| {
                    let raw = store.raw_target(&file);
                    (file, raw)
                })
                .collect();
        }
        if scope.ari {
            world.load_ari(store);
        }
        if scope.records {
            world.records = read_records(store, &world.targets)
                .into_iter()
                .map(Some)
                .collect();
        }
        if scope.privkey_links {
            world.privkey_links = world
                .inv
                .certs
                .iter()
                .filter(|c| !matches!(c.state, CertState::Complete(_)))
                .filter_map(|c| store.privkey_link_id(&c.id).map(|k| (c.id.clone(), k)))
                .collect();
        }
        if scope.ari || scope.records {
            tracing::debug!(
                "renewal windows and run records read at {:.0?}",
                started.elapsed()
            );
        }
        Ok(world)
    }

    /// Reads the cached renewal information and the backoffs of the complete certificates
    /// (cached windows only: loading never asks the CA). The cache is listed once and only
    /// the files there are read (not two lookups per certificate).
    fn load_ari(&mut self, store: &Store) {
        let (records, backoffs) = store.ari_cached_ids().unwrap_or_else(|| {
            let all: BTreeSet<String> = self.certs.iter().map(|s| s.id.clone()).collect();
            (all.clone(), all)
        });
        let ours = |id: &String| self.certs.position(id).is_some();
        self.ari = records
            .into_iter()
            .filter(ours)
            .filter_map(|id| store.ari_record(&id).map(|r| (id, r)))
            .collect();
        self.ari_backoff = backoffs
            .into_iter()
            .filter(ours)
            .filter_map(|id| store.ari_backoff(&id).map(|b| (id, b)))
            .collect();
    }

    /// Adds `desired/<file>`, just written, resolved exactly as a load resolves it: into
    /// `targets` in file order (with its run record, if records are loaded), or into `broken`.
    pub fn add_target(&mut self, store: &Store, file: &str) {
        let with_records = !self.records.is_empty();
        if let Ok(i) = self.targets.binary_search_by(|t| t.file.as_str().cmp(file)) {
            self.targets.remove(i);
            if with_records {
                self.records.remove(i);
            }
        }
        self.broken.retain(|b| b.file != file);
        match store.load_target(file, &self.defaults) {
            Ok(t) => {
                let i = self.targets.partition_point(|x| x.file.as_str() < file);
                self.targets.insert(i, t);
                if with_records {
                    self.records.insert(i, Some(store.target_record(file)));
                }
            }
            Err(e) => {
                let i = self.broken.partition_point(|b| b.file.as_str() < file);
                self.broken.insert(i, e);
            }
        }
    }
}

/// Inputs a plan lacked, to be read into the world ([`World::load_needs`]) before planning
/// again (see `plan::work`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Targets (indexes) whose run record decides whether they are ordered for.
    pub records: Vec<usize>,
    /// Certificates (positions in [`World::certs`]) whose issuing CA decides where their
    /// renewal information is asked and whether an order may name them as replaced.
    pub issuers: Vec<usize>,
    /// CAs whose "no renewalInfo" stamp decides whether they are asked.
    pub ari_stamps: Vec<String>,
}

impl Needs {
    /// Nothing lacking: the plan is final.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.issuers.is_empty() && self.ari_stamps.is_empty()
    }
}

impl World {
    /// The run record of target `i`, if it was read.
    pub fn record(&self, i: usize) -> Option<&TargetRecord> {
        self.records.get(i).and_then(Option::as_ref)
    }

    /// Reads every target's run record into the world, in file order through the store's
    /// record cache (one file while it is current); those this process wrote (a run that just
    /// ended) as it wrote them.
    pub fn load_records(&mut self, store: &Store) {
        let mut records = store.records();
        self.records = self
            .targets
            .iter()
            .map(|t| Some(records.get(&t.file)))
            .collect();
    }

    /// Takes in the run records this process wrote since the world was loaded (a run's
    /// attempts), as it wrote them: no file is read.
    pub fn take_written(&mut self, store: &Store) {
        let written = store.written_records();
        if written.is_empty() {
            return;
        }
        if self.records.is_empty() {
            self.records = vec![None; self.targets.len()];
        }
        for (file, rec) in written {
            let i = self
                .targets
                .binary_search_by(|t| t.file.as_str().cmp(&file));
            if let (Ok(i), true) = (i, self.records.len() == self.targets.len()) {
                self.records[i] = Some(rec);
            }
        }
    }

    /// Reads what a plan at `now` lacked into the world.
    pub fn load_needs(&mut self, store: &Store, needs: &Needs, now: OffsetDateTime) {
        if !needs.records.is_empty() && self.records.is_empty() {
            self.records = vec![None; self.targets.len()];
        }
        for &i in &needs.records {
            if let (Some(slot), Some(t)) = (self.records.get_mut(i), self.targets.get(i)) {
                *slot = Some(store.target_record(&t.file));
            }
        }
        if !needs.issuers.is_empty() {
            // The CAs and accounts are few: one copy of each CA, and each account's
            // directory URL decoded once, not once per certificate ordered with it.
            let mut cas: Vec<Arc<str>> = Vec::new();
            for ca in self.issuers.iter().flatten().flatten() {
                if !cas.contains(ca) {
                    cas.push(ca.clone());
                }
            }
            let mut accounts: Vec<(String, Option<Arc<str>>)> = Vec::new();
            for &i in &needs.issuers {
                let Some(c) = self.certs.at(i) else { continue };
                if self.issuer(i).is_some() {
                    continue;
                }
                let ca = store.cert_account(&c.id).and_then(|account| {
                    if let Some((_, ca)) = accounts.iter().find(|(a, _)| *a == account) {
                        return ca.clone();
                    }
                    let ca =
                        crate::store::account_provider(&account).map(|url| intern(&mut cas, url));
                    accounts.push((account, ca.clone()));
                    ca
                });
                self.note_issuer(i, ca);
            }
        }
        for p in &needs.ari_stamps {
            self.no_ari
                .entry(p.clone())
                .or_insert_with(|| store.provider_lacks_ari(p, now));
        }
    }
}

impl World {
    /// The CA that issued the certificate at position `cert` of [`World::certs`]: `None`
    /// while not read ([`Needs::issuers`]), `Some(None)` when it was not recorded.
    pub fn issuer(&self, cert: usize) -> Option<Option<&str>> {
        self.issuers
            .get(cert)
            .and_then(Option::as_ref)
            .map(Option::as_deref)
    }

    /// Records that the certificate at position `cert` was issued by `ca` (`None`: not
    /// recorded).
    pub fn note_issuer(&mut self, cert: usize, ca: Option<Arc<str>>) {
        if self.issuers.len() <= cert {
            self.issuers.resize(self.certs.len().max(cert + 1), None);
        }
        self.issuers[cert] = Some(ca);
    }
}

/// The shared copy of `s` in `pool`, added when it is new (`pool` holds a few CAs).
fn intern(pool: &mut Vec<Arc<str>>, s: String) -> Arc<str> {
    match pool.iter().find(|p| ***p == *s) {
        Some(p) => p.clone(),
        None => {
            let p: Arc<str> = Arc::from(s);
            pool.push(p.clone());
            p
        }
    }
}

/// Each target's run record, read on two threads (ten thousand small files).
fn read_records(store: &Store, targets: &[Target]) -> Vec<TargetRecord> {
    let read = |ts: &[Target]| -> Vec<TargetRecord> {
        ts.iter().map(|t| store.target_record(&t.file)).collect()
    };
    let (first, second) = targets.split_at(targets.len() / 2);
    std::thread::scope(|scope| {
        let second = scope.spawn(|| read(second));
        let mut records = read(first);
        records.extend(
            second
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        );
        records
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::lock::StateLock;

    #[test]
    fn a_target_added_after_loading_is_resolved_and_placed_as_a_load_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        Store::prepare_root(dir.path()).expect("root");
        let lock = StateLock::acquire(dir.path()).expect("lock");
        let store = Store::open(dir.path(), &lock).expect("open");
        store
            .write_target("b.example", "satisfy: {names: [b.example]}\n")
            .expect("write");
        store
            .write_target("d.example", "satisfy: {names: [d.example]}\n")
            .expect("write");
        let mut world = World::load(&store, Scope::STATUS).expect("load");
        assert_eq!(world.records.len(), 2);
        store
            .write_target("c.example", "satisfy: {names: [c.example]}\n")
            .expect("write");
        world.add_target(&store, "c.example");
        store
            .write_target("a.example", "satisfy: [\n")
            .expect("write");
        world.add_target(&store, "a.example");
        let files: Vec<&str> = world.targets.iter().map(|t| t.file.as_str()).collect();
        assert_eq!(files, ["b.example", "c.example", "d.example"]);
        assert_eq!(world.records.len(), 3);
        let broken: Vec<&str> = world.broken.iter().map(|b| b.file.as_str()).collect();
        assert_eq!(broken, ["a.example"]);
        // The same as loading again.
        let again = World::load(&store, Scope::STATUS).expect("reload");
        let files_again: Vec<&str> = again.targets.iter().map(|t| t.file.as_str()).collect();
        assert_eq!(files, files_again);
        assert_eq!(
            format!("{:#}", world.broken[0].error),
            format!("{:#}", again.broken[0].error)
        );
    }

    #[test]
    fn unwant_reads_the_files_as_written_even_with_a_broken_conf_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        Store::prepare_root(dir.path()).expect("root");
        let lock = StateLock::acquire(dir.path()).expect("lock");
        let store = Store::open(dir.path(), &lock).expect("open");
        std::fs::write(dir.path().join("conf/target"), "satisfy: [\n").expect("conf");
        store
            .write_target("a.example", "satisfy: {names: [a.example]}\n")
            .expect("write");
        store
            .write_target("b.example", "names: [\n")
            .expect("write");
        assert!(World::load(&store, Scope::TARGETS).is_err());
        let world = World::load(&store, Scope::UNWANT).expect("load");
        assert!(world.targets.is_empty());
        let read: Vec<(&str, bool)> = world
            .raw_targets
            .iter()
            .map(|(f, r)| (f.as_str(), r.is_ok()))
            .collect();
        assert_eq!(read, [("a.example", true), ("b.example", false)]);
    }
}
