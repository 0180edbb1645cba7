//! The state directory: acmetool's layout, read once into an [`Inventory`], written only
//! through atomic operations.
//!
//! Layout (acmetool §1.2): `desired/` targets, `certs/<id>/{url,account,cert,chain,fullchain,
//! privkey}`, `keys/<id>/privkey`, `accounts/<urlpart>/<key id>/privkey`, `live/<name>` links,
//! `conf/`, `tmp/`. acmekeep adds only hidden entries (which acmetool skips): the `.lock` file
//! and `.acmekeep/` for per-target run records. Nothing here decides anything; the planner
//! does, from the inventory this module loads.

mod cache;
pub mod layout;
pub mod lock;
pub mod perm;
mod records;
pub mod renewal_cache;
pub mod run;

pub use records::{Records, TargetRecord};

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};
use time::OffsetDateTime;

use crate::cert;
use crate::cert::{CertSet, CertSummary};
use crate::files::{self, AtomicFs};
use crate::keys::ids;
use crate::keys::{MAX_KEY_FILE, PrivateKey};
use crate::target::{MAX_TARGET_FILE, RawTarget, Target};

/// In a certificate directory: the ACME profile it was ordered with.
const PROFILE_FILE: &str = ".profile";
/// How the certificate's names were validated, where `status` shows it (dns-account-01,
/// dns-persist-01): JSON, hidden (acmetool skips dot names).
const VALIDATIONS_FILE: &str = ".validations";
/// Largest validations file read back (a certificate has at most 100 names).
const MAX_VALIDATIONS_FILE: u64 = 256 * 1024;
/// In a certificate directory whose order was given up: why.
const ABANDONED_FILE: &str = ".abandoned";
/// Mode of files acmekeep keeps for itself under `.acmekeep/` (not subject to conf/perm).
pub const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;
const RUN_DIR: &str = ".acmekeep";

/// An open state directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    fs: AtomicFs,
    perm: perm::PermTable,
    listings: Listings,
    /// The run records this process wrote (for the record cache).
    written: records::Written,
    /// Opened with the lock, so caches may be written.
    writable: bool,
    /// The wall clock cache stamps are compared with.
    clock: Arc<dyn Clock>,
}

/// The names in the run-record directories (`.acmekeep/targets`, `.acmekeep/ari`), listed
/// once per run, so that asking for the record of each of thousands of targets that has none
/// costs no system call. Names written during the run are added.
#[derive(Debug, Default)]
struct Listings(
    std::sync::Mutex<std::collections::HashMap<PathBuf, Option<BTreeSet<std::ffi::OsString>>>>,
);

impl Listings {
    /// Whether `path` may exist: false only if its directory was listed and lacks it.
    fn may_exist(&self, path: &Path) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return true;
        };
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let names = all
            .entry(dir.to_owned())
            .or_insert_with(|| match std::fs::read_dir(dir) {
                Ok(rd) => rd
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<io::Result<_>>()
                    .ok(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Some(BTreeSet::new()),
                Err(_) => None,
            });
        names.as_ref().is_none_or(|n| n.contains(name))
    }

    /// Notes that `path` now exists.
    fn written(&self, path: &Path) {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(names)) = all.get_mut(dir) {
            names.insert(name.to_owned());
        }
    }
}

/// A certificate directory as found on disk.
#[derive(Clone, Debug)]
pub struct CertRecord {
    /// Certificate id (directory name).
    pub id: String,
    /// Content of `url` (order URL), read only when the directory holds no certificate yet
    /// (it is what the certificate is downloaded from).
    pub url: Option<String>,
    /// Target of the `account` link relative to `accounts/`, e.g. `<urlpart>/<keyid>`; read
    /// only when the directory holds no certificate yet (else see [`Store::cert_account`]).
    pub account: Option<String>,
    /// What the directory holds.
    pub state: CertState,
}

/// Whether a certificate directory is usable.
#[derive(Clone, Debug)]
pub enum CertState {
    /// Downloaded and parsed (the planner's view of it).
    Complete(CertSummary),
    /// Only `url` (and `account`): the order finished but the download did not happen.
    Uncached,
    /// Unreadable or unparseable; never linked.
    Broken(String),
}

/// An account key directory.
#[derive(Clone, Debug)]
pub struct AccountRecord {
    /// ACME directory URL decoded from the directory name.
    pub directory_url: String,
    /// `<urlpart>/<key id>`, acmetool's account id.
    pub id: String,
    /// Path of the `privkey` file.
    pub key_path: PathBuf,
}

impl AccountRecord {
    /// The account key's PEM text (a regular file of at most [`MAX_KEY_FILE`] bytes).
    pub fn read_key(&self) -> Result<String> {
        read_text(&self.key_path, MAX_KEY_FILE)
    }
}

/// A `certs/<id>/privkey` that is not the link acmetool makes, found while loading.
#[derive(Debug)]
struct PrivkeyLink {
    /// The certificate id.
    cert: String,
    /// Its key's id.
    key: String,
    /// What is there instead of the link, `None` for nothing.
    found: Option<String>,
}

/// Everything the planner and `status` need, loaded in one pass.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Certificate directories.
    pub certs: Vec<CertRecord>,
    /// Key ids present under `keys/`.
    pub key_ids: BTreeSet<String>,
    /// `live/` link name → certificate id.
    pub live: BTreeMap<String, String>,
    /// Account keys.
    pub accounts: Vec<AccountRecord>,
    /// Problems found while loading (logged, never fatal).
    pub warnings: Vec<String>,
    /// The private directories (`accounts`, `keys`) this user may not list: a read-only
    /// load by a user who can read `live/` but not root's 0700 directories. `accounts` is
    /// then empty, and without `keys/` a certificate counts as having its key when its
    /// `privkey` link names it (the next locked run looks at the keys themselves). A locked
    /// load fails instead.
    pub unreadable: Vec<&'static str>,
}

impl Inventory {
    /// Planner summaries of the complete certificates.
    pub fn summaries(&self) -> CertSet {
        CertSet::new(
            self.certs
                .iter()
                .filter_map(|c| match &c.state {
                    CertState::Complete(summary) => Some(summary.clone()),
                    _ => None,
                })
                .collect(),
        )
    }

    /// Moves the planner summaries of the complete certificates out (their records leave
    /// `certs`; the others stay), without copying them: with thousands of certificates the
    /// copy would double what a run holds.
    pub fn take_summaries(&mut self) -> CertSet {
        let mut set = CertSet::with_capacity(self.certs.len());
        let mut rest = Vec::new();
        for c in std::mem::take(&mut self.certs) {
            match c.state {
                CertState::Complete(summary) => set.push(summary),
                _ => rest.push(c),
            }
        }
        self.certs = rest;
        set
    }

    /// Records which keys exist (from [`Store::load_keys`]; `None`: `keys/` could not be
    /// listed, and `linked(cert id, key id)` tells whether a certificate's `privkey` link
    /// names its key): sets each certificate's `has_private_key`, and puts the warnings about
    /// `keys/` first.
    fn add_keys(
        &mut self,
        (key_ids, mut warnings): KeysFound,
        linked: impl Fn(&str, &str) -> bool,
    ) {
        for c in &mut self.certs {
            if let CertState::Complete(s) = &mut c.state {
                s.has_private_key = match &key_ids {
                    Some(ids) => ids.contains(&s.key_id),
                    None => linked(&c.id, &s.key_id),
                };
            }
        }
        match key_ids {
            Some(ids) => self.key_ids = ids,
            None => self.unreadable.push("keys"),
        }
        warnings.append(&mut self.warnings);
        self.warnings = warnings;
    }

    /// The complete certificate with this id.
    pub fn cert(&self, id: &str) -> Option<&CertRecord> {
        self.certs.iter().find(|c| c.id == id)
    }
}

/// What [`Store::load_keys`] found: the ids under `keys/` that hold a `privkey` (`None` when
/// a read-only store may not list `keys/`), and warnings about anything else there.
type KeysFound = (Option<BTreeSet<String>>, Vec<String>);

/// Which kind of id-named directory [`Store::remove_entry`] removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// `certs/<id>`.
    Cert,
    /// `keys/<id>`.
    Key,
}

impl EntryKind {
    fn dir(self) -> &'static str {
        match self {
            EntryKind::Cert => "certs",
            EntryKind::Key => "keys",
        }
    }
}

/// A target file that could not be used, with the reason.
#[derive(Debug)]
pub struct TargetError {
    /// File name under `desired/`.
    pub file: String,
    /// What went wrong (names the file and, for YAML errors, the line).
    pub error: anyhow::Error,
}

/// Reads and resolves the target file at `path` (named `file` in `desired/`) over `defaults`,
/// as every load does: the settings nobody reads come first among its warnings, and an error
/// names the file (and those settings, which may explain it).
fn resolve_target_file(path: &Path, file: &str, defaults: &RawTarget) -> Result<Target> {
    read_text(path, MAX_TARGET_FILE)
        .and_then(|text| crate::target::parse_file_checked(path, text.as_bytes()))
        .and_then(
            |(raw, unknown)| match Target::resolve(file, &raw, defaults) {
                Ok(mut t) => {
                    // Settings nobody reads first: they may explain the rest.
                    t.warnings.splice(0..0, unknown);
                    Ok(t)
                }
                Err(e) if unknown.is_empty() => Err(e.context(format!("in {}", path.display()))),
                Err(e) => Err(e.context(format!(
                    "in {} (which also has {})",
                    path.display(),
                    unknown.join("; ")
                ))),
            },
        )
}

fn read_dir_sorted(dir: &Path) -> io::Result<Vec<std::fs::DirEntry>> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd.collect::<io::Result<Vec<_>>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    entries.retain(|e| !e.file_name().as_encoded_bytes().starts_with(b"."));
    // Each name fetched once (`file_name` allocates).
    entries.sort_by_cached_key(|e| e.file_name());
    Ok(entries)
}

/// Target files claimed at a time by a thread in [`Store::parse_targets`].
const TARGET_CHUNK: usize = 64;

/// The slots of the targets not yet claimed by a thread, a chunk at a time, with each
/// chunk's number.
type TargetSlots<'a> = Mutex<std::iter::Enumerate<std::slice::ChunksMut<'a, Option<Target>>>>;

/// One empty slot per target file.
fn empty_slots(n: usize) -> Vec<Option<Target>> {
    let mut slots = Vec::with_capacity(n);
    slots.resize_with(n, || None);
    slots
}

// The slots are collected into the targets in place only if they are the same size.
const _: () = assert!(size_of::<Option<Target>>() == size_of::<Target>());

/// The targets parsed into `slots` (one per file; `None` where the file is broken) and the
/// broken files with their index, as [`Store::parse_targets`] left them on one or more
/// threads, in file-name order. Reuses the slots' memory: a resolved target is large, and
/// ten thousand of them should be held once.
fn assemble_targets(
    slots: Vec<Option<Target>>,
    mut broken: Vec<(usize, TargetError)>,
) -> (Vec<Target>, Vec<TargetError>) {
    broken.sort_unstable_by_key(|(i, _)| *i);
    // `filter_map`, not `flatten`: only the former is collected in place (a `flatten` grew
    // a second vector by doubling, to room for 16,384 targets at 10,000: 5.8 MB, held
    // through the whole run).
    #[allow(clippy::filter_map_identity)]
    let targets = slots.into_iter().filter_map(|t| t).collect();
    (targets, broken.into_iter().map(|(_, e)| e).collect())
}

/// Reads a file of the state directory as text: a regular file (never a symlink, FIFO or
/// device), at most `limit` bytes.
fn read_text(path: &Path, limit: u64) -> Result<String> {
    let bytes = files::read_state_file(path, limit, files::Links::Refuse)
        .with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow!("{} is not UTF-8 text", path.display()))
}

/// [`read_text`], with a missing file as `None`.
fn optional_text(path: &Path, limit: u64) -> Result<Option<String>> {
    match files::read_state_file(path, limit, files::Links::Refuse) {
        Ok(bytes) => {
            Ok(Some(String::from_utf8(bytes).map_err(|_| {
                anyhow!("{} is not UTF-8 text", path.display())
            })?))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl Store {
    /// Opens the state directory for writing: creates the layout with acmetool's modes and
    /// empties `tmp/`. The caller must hold the state lock (the argument proves it).
    pub fn open(root: &Path, _lock: &lock::StateLock) -> Result<Store> {
        check_layout(root, true)?;
        let table = perm::PermTable::load(root, &perm::NssIds)
            .map_err(|e| crate::exit::config_error(anyhow!(e)))?;
        for rel in table.dirs_to_create() {
            let p = root.join(&rel);
            let mode = table.rule_for(&rel).dir_mode;
            files::create_dir_all_mode(&p, mode)
                .with_context(|| format!("creating {}", p.display()))?;
        }
        let tmp = root.join("tmp");
        files::clear_dir(&tmp).with_context(|| format!("clearing {}", tmp.display()))?;
        let store = Store {
            root: root.to_owned(),
            fs: AtomicFs::new(tmp),
            perm: table,
            listings: Listings::default(),
            written: records::Written::default(),
            writable: true,
            clock: Arc::new(SystemClock),
        };
        store.conform_if_perm_changed()?;
        Ok(store)
    }

    /// Applies `conf/perm` to existing files when it changed since it was last applied (a
    /// fingerprint is kept in `.acmekeep/perm-applied`). New files get their rule's mode from
    /// the first byte anyway, so the whole tree is walked only when the rules change.
    fn conform_if_perm_changed(&self) -> Result<()> {
        let text =
            optional_text(&self.root.join("conf/perm"), perm::MAX_PERM_FILE)?.unwrap_or_default();
        let fingerprint = ids::cert_id(&text);
        let stamp = self.root.join(RUN_DIR).join("perm-applied");
        let applied = optional_text(&stamp, 1024)?.unwrap_or_default();
        let never = applied.is_empty();
        if applied.trim() == fingerprint || (never && text.is_empty()) {
            return Ok(());
        }
        let report = perm::conform(&self.root, &self.perm);
        for c in &report.changes {
            tracing::info!("conf/perm: {c}");
        }
        report.log();
        let dir = self.root.join(RUN_DIR);
        files::create_dir_all_mode(&dir, DIR_MODE)
            .with_context(|| format!("creating {}", dir.display()))?;
        self.fs
            .write_file(&stamp, fingerprint.as_bytes(), FILE_MODE)
            .with_context(|| format!("writing {}", stamp.display()))
    }

    /// Writes `path` atomically with the mode (and owner) `conf/perm` gives `final_rel`, the
    /// path relative to the state directory where the file ends up.
    fn write(&self, path: &Path, final_rel: &Path, data: &[u8]) -> Result<()> {
        let rule = self.perm.rule_for(final_rel);
        self.fs
            .write_file(path, data, rule.file_mode)
            .with_context(|| format!("writing {}", path.display()))?;
        self.own(path, rule.uid, rule.gid);
        Ok(())
    }

    /// Creates the directory `rel` (relative to the state dir) with its rule's mode.
    /// `Ok(false)` if it existed.
    fn mkdir(&self, rel: &Path) -> Result<bool> {
        let rule = self.perm.rule_for(rel);
        let path = self.root.join(rel);
        match files::create_dir_mode(&path, rule.dir_mode) {
            Ok(()) => {
                self.own(&path, rule.uid, rule.gid);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Never a symlink: what is written below must stay in the state directory.
                let file_type = std::fs::symlink_metadata(&path)
                    .with_context(|| format!("inspecting {}", path.display()))?
                    .file_type();
                if !file_type.is_dir() {
                    bail!(
                        "{} is a {}, not a directory; refusing to write below it",
                        path.display(),
                        files::kind_name(file_type)
                    );
                }
                Ok(false)
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }

    fn own(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) {
        if (uid.is_some() || gid.is_some())
            && let Err(e) = std::os::unix::fs::lchown(path, uid, gid)
        {
            tracing::warn!("cannot change the owner of {}: {e}", path.display());
        }
    }

    /// Opens the state directory for reading only (no lock, no writes).
    pub fn open_read_only(root: &Path) -> Result<Store> {
        if !root.is_dir() {
            bail!("state directory {} does not exist", root.display());
        }
        check_layout(root, false)?;
        // For the modes that loading checks (private keys); a broken conf/perm is the next
        // locked run's error to report.
        let perm = perm::PermTable::load(root, &perm::NssIds)
            .unwrap_or_else(|_| perm::PermTable::builtin());
        Ok(Store {
            root: root.to_owned(),
            fs: AtomicFs::new(root.join("tmp")),
            perm,
            listings: Listings::default(),
            written: records::Written::default(),
            writable: false,
            clock: Arc::new(SystemClock),
        })
    }

    /// Creates the state directory itself (with the lock file's parent) before locking.
    pub fn prepare_root(root: &Path) -> Result<()> {
        files::create_dir_all_mode(root, DIR_MODE)
            .with_context(|| format!("creating state directory {}", root.display()))
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The same store, reading the time from `clock` (tests set it).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// `conf/target` with acmetool's legacy fallbacks applied.
    pub fn load_defaults(&self) -> Result<RawTarget> {
        self.defaults_from(self.raw_conf_target()?)
    }

    /// `raw`, a `conf/target` not yet saved (quickstart's answers), with acmetool's legacy
    /// fallbacks applied and checked as [`Store::load_defaults`] checks the saved one.
    pub fn defaults_from(&self, mut raw: RawTarget) -> Result<RawTarget> {
        let path = self.root.join("conf/target");
        // Legacy conf/webroot-path and conf/rsa-key-size (acmetool §8.3).
        let req = raw.request.get_or_insert_with(Default::default);
        let ch = req.challenge.get_or_insert_with(Default::default);
        if ch.webroot_paths.as_ref().is_none_or(|w| w.is_empty())
            && let Some(text) = optional_text(&self.root.join("conf/webroot-path"), 64 * 1024)?
        {
            let paths: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            if !paths.is_empty() {
                ch.webroot_paths = Some(paths);
            }
        }
        let key = req.key.get_or_insert_with(Default::default);
        if key.rsa_size.is_none()
            && let Some(text) = optional_text(&self.root.join("conf/rsa-key-size"), 1024)?
        {
            key.rsa_size = text.trim().parse().ok();
        }
        crate::target::check_defaults(&path, &raw)?;
        Ok(raw)
    }

    /// `conf/target` exactly as written (no legacy fallbacks), for commands that edit it.
    pub fn raw_conf_target(&self) -> Result<RawTarget> {
        let path = self.root.join("conf/target");
        match optional_text(&path, MAX_TARGET_FILE)? {
            Some(text) => {
                let (raw, warnings) = crate::target::parse_file_checked(&path, text.as_bytes())?;
                for w in warnings {
                    crate::logging::warn_once(format!("conf/target: {w}"));
                }
                Ok(raw)
            }
            None => Ok(RawTarget::default()),
        }
    }

    /// Saves `conf/target`.
    pub fn write_conf_target(&self, raw: &RawTarget) -> Result<()> {
        let path = self.root.join("conf/target");
        let yaml = serde_yaml_ng::to_string(raw).context("serialising conf/target")?;
        self.write(&path, Path::new("conf/target"), yaml.as_bytes())
    }

    /// Loads and resolves every target in `desired/`. Broken files are returned separately
    /// so one bad file never hides the others.
    pub fn load_targets(&self, defaults: &RawTarget) -> Result<(Vec<Target>, Vec<TargetError>)> {
        let entries = self.list_targets()?;
        let mut slots = empty_slots(entries.len());
        let chunks = Mutex::new(slots.chunks_mut(TARGET_CHUNK).enumerate());
        let broken = self.parse_targets(&entries, &chunks, defaults);
        Ok(assemble_targets(slots, broken))
    }

    /// The entries of `desired/`, sorted by name.
    fn list_targets(&self) -> Result<Vec<std::fs::DirEntry>> {
        let dir = self.root.join("desired");
        read_dir_sorted(&dir).with_context(|| format!("listing {}", dir.display()))
    }

    /// Reads and resolves the target files of `entries` into the slot of the same index,
    /// claiming a chunk of slots at a time, so that several threads can share the work.
    /// Returns the broken files with their index.
    fn parse_targets(
        &self,
        entries: &[std::fs::DirEntry],
        chunks: &TargetSlots<'_>,
        defaults: &RawTarget,
    ) -> Vec<(usize, TargetError)> {
        let mut broken = Vec::new();
        // Targets nearly always inherit the same challenge settings: share one copy
        // instead of holding ten thousand equal ones.
        let mut challenge: Option<std::sync::Arc<crate::challenge::config::ChallengeConfig>> = None;
        loop {
            let claimed = chunks.lock().unwrap_or_else(|p| p.into_inner()).next();
            let Some((n, chunk)) = claimed else {
                return broken;
            };
            let start = n * TARGET_CHUNK;
            for (i, slot) in (start..).zip(chunk.iter_mut()) {
                let entry = &entries[i];
                let file = entry.file_name().to_string_lossy().into_owned();
                let loaded = resolve_target_file(&entry.path(), &file, defaults);
                match loaded {
                    Ok(mut t) => {
                        match &challenge {
                            Some(prev) if *prev == t.challenge => t.challenge = prev.clone(),
                            _ => challenge = Some(t.challenge.clone()),
                        }
                        *slot = Some(t);
                    }
                    Err(error) => broken.push((i, TargetError { file, error })),
                }
            }
        }
    }

    /// The target file `desired/<file>` (just written, say), read and resolved over
    /// `defaults` exactly as [`Store::load_targets`] resolves each file.
    pub fn load_target(&self, file: &str, defaults: &RawTarget) -> Result<Target, TargetError> {
        let path = self.root.join("desired").join(file);
        resolve_target_file(&path, file, defaults).map_err(|error| TargetError {
            file: file.to_owned(),
            error,
        })
    }

    /// [`Store::load_targets`] and [`Store::load_inventory`] at once, on two threads: one
    /// loads the certificates and links, the other the keys, and both then share the target
    /// files (the larger part with thousands of targets).
    pub fn load_all(
        &self,
        defaults: &RawTarget,
    ) -> Result<(Vec<Target>, Vec<TargetError>, Inventory)> {
        let entries = self.list_targets()?;
        let mut slots = empty_slots(entries.len());
        let chunks = Mutex::new(slots.chunks_mut(TARGET_CHUNK).enumerate());
        let (inventory, keys, broken) = std::thread::scope(|scope| {
            let started = std::time::Instant::now();
            let (entries, chunks) = (&entries, &chunks);
            let helper = scope.spawn(move || {
                let inv = self.load_certs_and_links();
                tracing::debug!("certificates loaded in {:.0?}", started.elapsed());
                (inv, self.parse_targets(entries, chunks, defaults))
            });
            let keys = self.load_keys();
            let mut broken = self.parse_targets(entries, chunks, defaults);
            let (inventory, theirs) = helper
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            tracing::debug!("keys and targets loaded in {:.0?}", started.elapsed());
            broken.extend(theirs);
            (inventory, keys, broken)
        });
        let (targets, broken) = assemble_targets(slots, broken);
        let (mut inventory, links) = inventory?;
        self.add_keys(&mut inventory, keys?, links);
        Ok((targets, broken, inventory))
    }

    /// Loads certificates, keys, accounts and live links.
    pub fn load_inventory(&self) -> Result<Inventory> {
        let keys = self.load_keys()?;
        let (mut inv, links) = self.load_certs_and_links()?;
        self.add_keys(&mut inv, keys, links);
        Ok(inv)
    }

    /// Adds what [`Store::load_keys`] found to `inv`, then checks the `privkey` links found
    /// wrong (not when `keys/` could not be listed: the next locked run does).
    fn add_keys(&self, inv: &mut Inventory, keys: KeysFound, links: Vec<PrivkeyLink>) {
        let listed = keys.0.is_some();
        inv.add_keys(keys, |id, key_id| {
            self.privkey_link_problem(id, key_id).is_none()
        });
        if listed {
            self.check_privkey_links(inv, links);
        }
    }

    /// Lists `accounts/` or `keys/`, root's alone (mode 0700): `None` when a read-only store
    /// may not (a user who can read `live/`, running `status`, `check` or `metrics`); a
    /// locked store must read them.
    fn list_private(&self, name: &'static str) -> Result<Option<Vec<std::fs::DirEntry>>> {
        let dir = self.root.join(name);
        match read_dir_sorted(&dir) {
            Ok(entries) => Ok(Some(entries)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !self.writable => {
                tracing::info!(
                    "not reading {}: {e} (root's alone; what it holds is left out)",
                    dir.display()
                );
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("listing {}", dir.display())),
        }
    }

    /// The ids under `keys/` that hold a `privkey` (`None` when a read-only store may not
    /// list `keys/`), and warnings about anything else there.
    fn load_keys(&self) -> Result<KeysFound> {
        let (mut key_ids, mut warnings) = (BTreeSet::new(), Vec::new());
        let Some(entries) = self.list_private("keys")? else {
            return Ok((None, warnings));
        };
        for e in entries {
            let id = e.file_name().to_string_lossy().into_owned();
            // The directory entry's type (no stat): a symlink to a directory is not followed.
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if !ids::is_well_formed_id(&id) || !is_dir {
                warnings.push(format!(
                    "ignoring {}: not a key directory",
                    e.path().display()
                ));
                continue;
            }
            let rel = Path::new("keys").join(&id).join("privkey");
            if self.check_private_key(&rel, &mut warnings) {
                key_ids.insert(id);
            }
        }
        Ok((Some(key_ids), warnings))
    }

    /// Whether `rel` (relative to the state directory) is a private key file: a regular file,
    /// not a symlink. One readable by more than `conf/perm` allows (0600 by default) is
    /// narrowed to that mode when the store is writable, and reported either way.
    fn check_private_key(&self, rel: &Path, warnings: &mut Vec<String>) -> bool {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let path = self.root.join(rel);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                warnings.push(format!(
                    "ignoring {}: it holds no privkey",
                    path.parent().unwrap_or(&path).display()
                ));
                return false;
            }
            Err(e) => {
                warnings.push(format!("ignoring {}: {e}", path.display()));
                return false;
            }
        };
        if !meta.file_type().is_file() {
            warnings.push(format!(
                "ignoring {}: it is a {}, not a regular file",
                path.display(),
                files::kind_name(meta.file_type())
            ));
            return false;
        }
        let mode = meta.mode() & 0o777;
        let want = self.perm.rule_for(rel).file_mode;
        if mode & !want == 0 {
            return true;
        }
        if !self.writable {
            warnings.push(format!(
                "{} is readable by more than it should be (mode {mode:04o}, conf/perm asks for {want:04o}); the next `acmekeep reconcile` fixes it",
                path.display()
            ));
            return true;
        }
        // fchmod on the file opened without following links: never the mode of something
        // a link swapped in meanwhile points at.
        let narrowed = files::open_regular(&path, files::Links::Refuse).and_then(|f| {
            f.set_permissions(std::fs::Permissions::from_mode(
                (meta.mode() & 0o7000) | want,
            ))
        });
        warnings.push(match narrowed {
            Ok(()) => format!(
                "{} was readable by more than it should be (mode {mode:04o}); changed to {want:04o} as conf/perm asks",
                path.display()
            ),
            Err(e) => format!(
                "{} is readable by more than it should be (mode {mode:04o}, conf/perm asks for {want:04o}), and changing it failed: {e}",
                path.display()
            ),
        });
        true
    }

    /// Checks the `certs/<id>/privkey` links found wrong while loading, now that the keys
    /// are known: a link to a key that is in `keys/` is (re)made as acmetool makes it (when
    /// the store is writable); anything else is reported.
    fn check_privkey_links(&self, inv: &mut Inventory, links: Vec<PrivkeyLink>) {
        for PrivkeyLink { cert, key, found } in links {
            let link = self.root.join("certs").join(&cert).join("privkey");
            let key_known = inv.key_ids.contains(&key);
            match (&found, key_known, self.writable) {
                (None, false, _) => {}
                (Some(found), false, _) => inv.warnings.push(format!(
                    "{} is {found}, not a link to its key keys/{key}/privkey (which is not in keys/); left alone",
                    link.display()
                )),
                (found, true, false) => inv.warnings.push(format!(
                    "{} is {}, not a link to its key keys/{key}/privkey; the next `acmekeep reconcile` repairs it",
                    link.display(),
                    found.as_deref().unwrap_or("missing")
                )),
                (found, true, true) => {
                    let target = Path::new("../../keys").join(&key).join("privkey");
                    match self.fs.symlink(&target, &link) {
                        Ok(_) if found.is_none() => {
                            tracing::debug!("linked {} to its key", link.display());
                        }
                        Ok(_) => inv.warnings.push(format!(
                            "{} was {}; it points at its key keys/{key}/privkey again",
                            link.display(),
                            found.as_deref().unwrap_or("missing")
                        )),
                        Err(e) => inv.warnings.push(format!(
                            "{} is {}, and linking it to keys/{key}/privkey failed: {e}",
                            link.display(),
                            found.as_deref().unwrap_or("missing")
                        )),
                    }
                }
            }
        }
    }

    /// `certs/<id>/privkey` of a certificate whose key is `key_id`, if it is not the link
    /// acmetool makes: `Some(None)` if there is nothing, `Some(Some(what it is))` if it is
    /// something else.
    fn privkey_link_problem(&self, id: &str, key_id: &str) -> Option<Option<String>> {
        let link = self.root.join("certs").join(id).join("privkey");
        match std::fs::read_link(&link) {
            Ok(target) if target == Path::new("../../keys").join(key_id).join("privkey") => None,
            Ok(target) => Some(Some(format!("a link to {}", target.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some(None),
            Err(_) => Some(Some(match std::fs::symlink_metadata(&link) {
                Ok(meta) => format!("a {}", files::kind_name(meta.file_type())),
                Err(e) => format!("unreadable ({e})"),
            })),
        }
    }

    /// Loads certificates, accounts and live links; which keys exist is added by
    /// [`Inventory::add_keys`], and the `privkey` links found wrong are returned for
    /// [`Store::check_privkey_links`].
    fn load_certs_and_links(&self) -> Result<(Inventory, Vec<PrivkeyLink>)> {
        let mut inv = Inventory::default();
        let mut links = Vec::new();
        let certs_dir = self.root.join("certs");
        let entries = read_dir_sorted(&certs_dir)
            .with_context(|| format!("listing {}", certs_dir.display()))?;
        inv.certs.reserve_exact(entries.len());
        let cache_path = self.root.join(RUN_DIR).join(cache::SUMMARIES_FILE);
        let mut cache = cache::Reader::open(&cache_path);
        let mut stamps = Vec::with_capacity(entries.len());
        let mut newly_read = Vec::new();
        for e in entries {
            let id = e.file_name().to_string_lossy().into_owned();
            // The directory entry's type (no stat): a symlink to a directory is not followed.
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if !ids::is_well_formed_id(&id) || !is_dir {
                inv.warnings.push(format!(
                    "ignoring {}: not a certificate directory",
                    e.path().display()
                ));
                continue;
            }
            let (record, mut stamp, from_disk) = self.load_cert(&id, &mut cache);
            if from_disk
                && let CertState::Complete(summary) = &record.state
                && let Some(found) = self.privkey_link_problem(&id, &summary.key_id)
            {
                // Not cached while wrong, so it is looked at (and reported) again next run.
                if found.is_some() {
                    stamp = None;
                }
                links.push(PrivkeyLink {
                    cert: id.clone(),
                    key: summary.key_id.clone(),
                    found,
                });
            }
            if from_disk && let Some(s) = stamp {
                newly_read.push(s);
            }
            inv.certs.push(record);
            stamps.push(stamp);
        }
        if self.writable {
            let written = self.clock.now();
            if cache.stale() || newly_read.iter().any(|s| s.settled(written)) {
                self.save_summaries(&cache_path, &inv.certs, &stamps, written);
            }
        }
        self.load_live(&mut inv)?;
        self.load_accounts(&mut inv)?;
        Ok((inv, links))
    }

    /// Adds the accounts under `accounts/` (`<escaped directory URL>/<key id>/privkey`) to
    /// `inv`, with a warning for each entry that is not one.
    fn load_accounts(&self, inv: &mut Inventory) -> Result<()> {
        let accounts = self.list_private("accounts")?;
        if accounts.is_none() {
            inv.unreadable.push("accounts");
        }
        for e in accounts.into_iter().flatten() {
            let part = e.file_name().to_string_lossy().into_owned();
            let Some(url) = layout::directory_url_from_part(&part) else {
                inv.warnings.push(format!(
                    "ignoring accounts/{part}: not an escaped directory URL"
                ));
                continue;
            };
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                inv.warnings
                    .push(format!("ignoring accounts/{part}: not a directory"));
                continue;
            }
            for k in read_dir_sorted(&e.path()).unwrap_or_default() {
                let kid = k.file_name().to_string_lossy().into_owned();
                if !ids::is_well_formed_id(&kid) {
                    continue;
                }
                if !k.file_type().is_ok_and(|t| t.is_dir()) {
                    inv.warnings
                        .push(format!("ignoring accounts/{part}/{kid}: not a directory"));
                    continue;
                }
                let rel = Path::new("accounts").join(&part).join(&kid).join("privkey");
                if self.check_private_key(&rel, &mut inv.warnings) {
                    inv.accounts.push(AccountRecord {
                        directory_url: url.clone(),
                        id: format!("{part}/{kid}"),
                        key_path: self.root.join(rel),
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads where the `live/` links point, from the live-link cache while `live/` is
    /// unchanged. A directory holding anything but links into `certs/` is always read (and
    /// never cached), so its warnings are never lost.
    fn load_live(&self, inv: &mut Inventory) -> Result<()> {
        let live_dir = self.root.join("live");
        let cache_path = self.root.join(RUN_DIR).join(cache::LIVE_FILE);
        // Taken before reading, so a change made while reading shows as a mismatch next run.
        let stamp = cache::Stamp::of(&live_dir).ok();
        if let Some(live) = stamp.and_then(|s| cache::read_live(&cache_path, s)) {
            inv.live = live;
            return Ok(());
        }
        let warnings_before = inv.warnings.len();
        for e in
            read_dir_sorted(&live_dir).with_context(|| format!("listing {}", live_dir.display()))?
        {
            let name = e.file_name().to_string_lossy().into_owned();
            match std::fs::read_link(e.path()) {
                Ok(target) => match target.strip_prefix("../certs") {
                    Ok(rest) if ids::is_well_formed_id(&rest.to_string_lossy()) => {
                        inv.live.insert(name, rest.to_string_lossy().into_owned());
                    }
                    _ => inv.warnings.push(format!(
                        "live/{name} points at {}, not at a certificate directory",
                        target.display()
                    )),
                },
                Err(_) => inv
                    .warnings
                    .push(format!("live/{name} is not a symlink; leaving it alone")),
            }
        }
        let clean = inv.warnings.len() == warnings_before;
        if let (true, true, Some(stamp)) = (self.writable, clean, stamp)
            && let Some(data) = cache::render_live(stamp, &inv.live, self.clock.now())
        {
            self.save_cache(&cache_path, |file| io::Write::write_all(file, &data));
        }
        Ok(())
    }

    /// Writes the summary cache (never fatal: without it the next run reads every
    /// certificate again).
    fn save_summaries(
        &self,
        path: &Path,
        certs: &[CertRecord],
        stamps: &[Option<cache::Stamps>],
        written: std::time::SystemTime,
    ) {
        let entries = certs
            .iter()
            .zip(stamps)
            .filter_map(|(c, s)| match &c.state {
                CertState::Complete(summary) => Some((s.as_ref()?, summary)),
                _ => None,
            });
        self.save_cache(path, |file| {
            cache::write(
                entries,
                written,
                io::BufWriter::with_capacity(64 * 1024, file),
            )
        });
    }

    /// Writes a cache file under `.acmekeep/` by way of `fill`; a failure is only logged.
    fn save_cache(&self, path: &Path, fill: impl FnOnce(&mut std::fs::File) -> io::Result<()>) {
        let saved = files::create_dir_all_mode(&self.root.join(RUN_DIR), DIR_MODE)
            .and_then(|()| self.fs.write_file_with(path, FILE_MODE, fill));
        if let Err(e) = saved {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }

    /// Loads certificate directory `id`: its summary from the cache when the directory and
    /// its `cert` file are unchanged, else from the files. Also returns the stamps the summary
    /// holds for (complete certificates only) and whether it was read from the files.
    fn load_cert(
        &self,
        id: &str,
        cache: &mut cache::Reader,
    ) -> (CertRecord, Option<cache::Stamps>, bool) {
        let dir = self.root.join("certs").join(id);
        let cached = cache.take(id);
        // Taken before reading, so a change made while reading shows as a mismatch next run.
        let stamps = cache::Stamps::of(&dir).ok();
        if let (Some((was, summary)), Some(now)) = (cached, stamps)
            && was == now
        {
            let record = CertRecord {
                id: id.to_owned(),
                url: None,
                account: None,
                state: CertState::Complete(summary),
            };
            return (record, stamps, false);
        }
        let record = self.read_cert(&dir, id);
        let stamps = stamps.filter(|_| matches!(record.state, CertState::Complete(_)));
        (record, stamps, true)
    }

    fn read_cert(&self, dir: &Path, id: &str) -> CertRecord {
        let cert_text = optional_text(&dir.join("cert"), cert::MAX_CHAIN);
        // The order URL and the account matter only while the certificate is still to be
        // downloaded; otherwise they are read when asked for ([`Store::cert_account`]).
        let (url, account) = match cert_text {
            Ok(Some(_)) => (None, None),
            _ => (
                optional_text(&dir.join("url"), 4096)
                    .ok()
                    .flatten()
                    .map(|u| u.trim().to_owned()),
                self.cert_account(id),
            ),
        };
        let abandoned = match cert_text {
            Ok(None) => optional_text(&dir.join(ABANDONED_FILE), 4096)
                .ok()
                .flatten()
                .map(|r| r.trim().to_owned()),
            _ => None,
        };
        let state = match cert_text {
            Ok(None) if abandoned.is_some() => CertState::Broken(format!(
                "{} holds an order whose certificate could not be downloaded and was given up ({}); `acmekeep cull` removes it",
                dir.display(),
                abandoned.unwrap_or_default()
            )),
            Ok(None) if url.is_some() && account.is_some() => CertState::Uncached,
            Ok(None) => CertState::Broken(format!(
                "{} holds no certificate and cannot be downloaded (no {}); `acmekeep cull` removes it",
                dir.display(),
                if url.is_none() { "url" } else { "account link" }
            )),
            Ok(Some(pem)) => match cert::split_chain(&pem).and_then(|d| cert::leaf_info(&d[0])) {
                Ok(leaf) => {
                    let profile = optional_text(&dir.join(PROFILE_FILE), 256)
                        .ok()
                        .flatten()
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty());
                    let revoked = dir.join("revoked").exists();
                    CertState::Complete(leaf.into_summary(id, false, revoked, profile))
                }
                Err(e) => CertState::Broken(format!("{}: {e:#}", dir.join("cert").display())),
            },
            Err(e) => CertState::Broken(format!("{e:#}")),
        };
        CertRecord {
            id: id.to_owned(),
            url,
            account,
            state,
        }
    }

    /// The account certificate `id` was obtained with: the target of its `account` link
    /// relative to `accounts/` (`<urlpart>/<keyid>`), if it has one in acmetool's form (a
    /// link that leads anywhere else names no account).
    pub fn cert_account(&self, id: &str) -> Option<String> {
        let link = self.root.join("certs").join(id).join("account");
        std::fs::read_link(link).ok().and_then(|t| {
            t.strip_prefix("../../accounts")
                .ok()
                .map(|r| r.to_string_lossy().into_owned())
                .filter(|account| check_account_id(account).is_ok())
        })
    }

    /// The directory URL of the CA certificate `id` was ordered from: that of the account it
    /// was ordered with ([`Store::cert_account`]), when it has one.
    pub fn cert_provider(&self, id: &str) -> Option<String> {
        account_provider(&self.cert_account(id)?)
    }

    /// Writes a new target file under `desired/`.
    pub fn write_target(&self, file: &str, yaml: &str) -> Result<()> {
        let path = self.desired_path(file)?;
        self.write(&path, &Path::new("desired").join(file), yaml.as_bytes())
    }

    /// Saves a certificate private key as `keys/<id>/privkey`, with its `conf/perm` mode
    /// (0600 in a 0700 directory by default) from the first byte. An existing key with the
    /// same id is left as it is.
    pub fn save_key(&self, key: &PrivateKey) -> Result<()> {
        let rel = Path::new("keys").join(&key.id);
        // Refuses a `keys/<id>` that is not a directory of its own (a link).
        self.mkdir(&rel)?;
        let rel = rel.join("privkey");
        let path = self.root.join(&rel);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return Ok(());
        }
        self.write(&path, &rel, key.to_pem().as_bytes())
    }

    /// Loads `keys/<id>/privkey`.
    pub fn load_key(&self, id: &str) -> Result<PrivateKey> {
        if !ids::is_well_formed_id(id) {
            bail!("{id:?} is not a key id");
        }
        let path = self.root.join("keys").join(id).join("privkey");
        let key = PrivateKey::from_pem(&read_text(&path, MAX_KEY_FILE)?)
            .with_context(|| format!("in {}", path.display()))?;
        if key.id != id {
            bail!(
                "{} holds a key whose id is {}, not {id}",
                path.display(),
                key.id
            );
        }
        Ok(key)
    }

    /// Saves an account key for `directory_url`; returns the account id `<urlpart>/<key id>`.
    pub fn save_account_key(&self, directory_url: &str, key_id: &str, pem: &str) -> Result<String> {
        let part = layout::account_url_part(directory_url)
            .with_context(|| format!("provider {directory_url:?}"))?;
        if !ids::is_well_formed_id(key_id) || part.starts_with('.') {
            bail!("refusing account directory {part}/{key_id}");
        }
        let parent = Path::new("accounts").join(&part);
        self.mkdir(&parent)?;
        let dir = parent.join(key_id);
        self.mkdir(&dir)?;
        let rel = dir.join("privkey");
        self.write(&self.root.join(&rel), &rel, pem.as_bytes())?;
        Ok(format!("{part}/{key_id}"))
    }

    /// Records a finished order: `certs/<id>/url` and the `account` link (none for a
    /// certificate imported without its account). From here on the order can be downloaded
    /// by a later run even if this one stops.
    pub fn begin_cert(&self, order_url: &str, account_id: Option<&str>) -> Result<String> {
        let id = ids::cert_id(order_url);
        let rel = Path::new("certs").join(&id);
        let dir = self.root.join(&rel);
        let account_target = account_id.map(|a| Path::new("../../accounts").join(a));
        if dir.exists() {
            // Recorded before (the same order again): make sure both entries are there.
            if let Some(target) = &account_target {
                self.fs
                    .symlink(target, &dir.join("account"))
                    .with_context(|| format!("linking {}/account", dir.display()))?;
            }
            self.write(&dir.join("url"), &rel.join("url"), order_url.as_bytes())?;
            return Ok(id);
        }
        // Build the directory in tmp/ and rename it into certs/ in one step, so a crash
        // never leaves a certificate directory without its url or account link.
        let staging = self.root.join("tmp").join(format!("order.{id}"));
        let _ = std::fs::remove_dir_all(&staging);
        files::create_dir_mode(&staging, self.perm.rule_for(&rel).dir_mode)
            .with_context(|| format!("creating {}", staging.display()))?;
        if let Some(target) = &account_target {
            self.fs
                .symlink(target, &staging.join("account"))
                .with_context(|| format!("linking {}/account", staging.display()))?;
        }
        self.write(&staging.join("url"), &rel.join("url"), order_url.as_bytes())?;
        std::fs::rename(&staging, &dir)
            .with_context(|| format!("moving {} to {}", staging.display(), dir.display()))?;
        files::sync_dir(&self.root.join("certs"))
            .with_context(|| format!("syncing {}", self.root.join("certs").display()))?;
        Ok(id)
    }

    /// Writes the downloaded certificate into `certs/<id>/`. `cert` is written last, so a
    /// directory with a `cert` file is always complete.
    /// The `privkey` link is made only when the key is known to be in `keys/`.
    pub fn finish_cert(
        &self,
        id: &str,
        key_id: Option<&str>,
        files: &cert::CertFiles,
    ) -> Result<()> {
        let rel = Path::new("certs").join(id);
        let dir = self.root.join(&rel);
        let ctx = |f: &str| format!("writing {}/{f}", dir.display());
        let put = |f: &str, data: &str| self.write(&dir.join(f), &rel.join(f), data.as_bytes());
        put("chain", &files.chain)?;
        put("fullchain", &files.fullchain)?;
        if let Some(key_id) = key_id {
            self.fs
                .symlink(
                    &Path::new("../../keys").join(key_id).join("privkey"),
                    &dir.join("privkey"),
                )
                .with_context(|| ctx("privkey"))?;
        }
        put("cert", &files.cert)
    }

    /// Points `live/<name>` at `certs/<cert_id>` by renaming a new link over the old one.
    pub fn relink(&self, name: &str, cert_id: &str) -> Result<bool> {
        if name.contains('/') || name.starts_with('.') || name.is_empty() {
            bail!("refusing live link name {name:?}");
        }
        if !ids::is_well_formed_id(cert_id) {
            bail!("refusing to link to {cert_id:?}");
        }
        let link = self.root.join("live").join(name);
        self.fs
            .symlink(&Path::new("../certs").join(cert_id), &link)
            .with_context(|| format!("linking {}", link.display()))
    }

    /// Reads a target file as written (no defaults applied), for commands that edit targets.
    pub fn raw_target(&self, file: &str) -> Result<RawTarget> {
        let path = self.desired_path(file)?;
        let text = read_text(&path, MAX_TARGET_FILE)?;
        crate::target::parse_file(&path, text.as_bytes())
    }

    /// Names of the files under `desired/` (hidden files skipped), sorted.
    pub fn target_files(&self) -> Result<Vec<String>> {
        let dir = self.root.join("desired");
        Ok(read_dir_sorted(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .into_iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }

    fn desired_path(&self, file: &str) -> Result<PathBuf> {
        if file.is_empty() || file.contains('/') || file.starts_with('.') {
            bail!("target file name {file:?} is not a plain file name");
        }
        Ok(self.root.join("desired").join(file))
    }

    /// Deletes a target file.
    pub fn remove_target(&self, file: &str) -> Result<()> {
        let path = self.desired_path(file)?;
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    /// The key id `certs/<id>/privkey` links to, if the link is there.
    pub fn privkey_link_id(&self, id: &str) -> Option<String> {
        let target = std::fs::read_link(self.root.join("certs").join(id).join("privkey")).ok()?;
        let kid = target
            .strip_prefix("../../keys")
            .ok()?
            .parent()?
            .to_string_lossy()
            .into_owned();
        ids::is_well_formed_id(&kid).then_some(kid)
    }

    /// Records the ACME profile a certificate was ordered with (a hidden file acmetool skips).
    pub fn write_cert_profile(&self, id: &str, profile: &str) -> Result<()> {
        if !ids::is_well_formed_id(id) {
            bail!("{id:?} is not a certificate id");
        }
        let rel = Path::new("certs").join(id).join(PROFILE_FILE);
        self.write(&self.root.join(&rel), &rel, profile.as_bytes())
    }

    /// Records how the certificate's names were validated (only what `status` shows; nothing
    /// written when that is nothing).
    pub fn write_cert_validations(
        &self,
        id: &str,
        validations: &[crate::challenge::Validation],
    ) -> Result<()> {
        if validations.is_empty() {
            return Ok(());
        }
        if !ids::is_well_formed_id(id) {
            bail!("{id:?} is not a certificate id");
        }
        let rel = Path::new("certs").join(id).join(VALIDATIONS_FILE);
        let json = serde_json::to_vec_pretty(validations).context("encoding validations")?;
        self.write(&self.root.join(&rel), &rel, &json)
    }

    /// What [`Store::write_cert_validations`] recorded for certificate `id`; nothing when
    /// there is no such record or it cannot be read (it only informs).
    pub fn cert_validations(&self, id: &str) -> Vec<crate::challenge::Validation> {
        if !ids::is_well_formed_id(id) {
            return Vec::new();
        }
        let path = self.root.join("certs").join(id).join(VALIDATIONS_FILE);
        match optional_text(&path, MAX_VALIDATIONS_FILE) {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::debug!("{}: {e}", path.display());
                Vec::new()
            }),
            _ => Vec::new(),
        }
    }

    /// Gives up on downloading the certificate of the order recorded in `certs/<id>`: an
    /// `.abandoned` file with the reason makes the directory broken (never linked, removed by
    /// `cull`) instead of retried on every run.
    pub fn abandon_order(&self, id: &str, reason: &str) -> Result<()> {
        if !ids::is_well_formed_id(id) {
            bail!("{id:?} is not a certificate id");
        }
        let rel = Path::new("certs").join(id).join(ABANDONED_FILE);
        self.write(
            &self.root.join(&rel),
            &rel,
            format!("{reason}\n").as_bytes(),
        )
    }

    /// When the order in `certs/<id>` was recorded (its `url` file's modification time).
    pub fn order_recorded(&self, id: &str) -> Option<OffsetDateTime> {
        let url = self.root.join("certs").join(id).join("url");
        let modified = std::fs::metadata(url).and_then(|m| m.modified()).ok()?;
        Some(OffsetDateTime::from(modified))
    }

    /// Marks a certificate as revoked (acmetool's empty `revoked` file): it no longer
    /// satisfies any target.
    pub fn mark_revoked(&self, id: &str) -> Result<()> {
        if !ids::is_well_formed_id(id) {
            bail!("{id:?} is not a certificate id");
        }
        let rel = Path::new("certs").join(id).join("revoked");
        self.write(&self.root.join(&rel), &rel, b"")
    }

    /// Removes `certs/<id>` or `keys/<id>`: first renamed into `tmp/` (one atomic step, so
    /// no reader ever sees half a directory), then deleted.
    pub fn remove_entry(&self, kind: EntryKind, id: &str) -> Result<()> {
        if !ids::is_well_formed_id(id) {
            bail!("{id:?} is not an id");
        }
        let from = self.root.join(kind.dir()).join(id);
        let to = self
            .root
            .join("tmp")
            .join(format!("cull.{}.{id}", kind.dir()));
        std::fs::rename(&from, &to).with_context(|| format!("moving {} aside", from.display()))?;
        std::fs::remove_dir_all(&to).with_context(|| format!("removing {}", to.display()))
    }

    /// Points `certs/<cert_id>/account` at `accounts/<account_id>` (a new link renamed over
    /// the old one, so a reader sees one or the other). `Ok(false)` if it pointed there.
    pub fn relink_cert_account(&self, cert_id: &str, account_id: &str) -> Result<bool> {
        if !ids::is_well_formed_id(cert_id) {
            bail!("{cert_id:?} is not a certificate id");
        }
        check_account_id(account_id)?;
        let link = self.root.join("certs").join(cert_id).join("account");
        self.fs
            .symlink(&Path::new("../../accounts").join(account_id), &link)
            .with_context(|| format!("linking {}", link.display()))
    }

    /// Removes `accounts/<account_id>`: first renamed into `tmp/` (one atomic step), then
    /// deleted.
    pub fn remove_account(&self, account_id: &str) -> Result<()> {
        check_account_id(account_id)?;
        let from = self.root.join("accounts").join(account_id);
        let to = self
            .root
            .join("tmp")
            .join(format!("account.{}", account_id.replace('/', ".")));
        std::fs::rename(&from, &to).with_context(|| format!("moving {} aside", from.display()))?;
        std::fs::remove_dir_all(&to).with_context(|| format!("removing {}", to.display()))
    }

    /// Moves `accounts/<account_id>` to `accounts/.deactivated/<account_id>` in one rename
    /// (hidden, so neither acmekeep nor acmetool uses it again); returns the new path relative
    /// to the state directory.
    pub fn retire_account(&self, account_id: &str) -> Result<PathBuf> {
        check_account_id(account_id)?;
        let (part, _) = account_id.split_once('/').unwrap_or_default();
        let retired = Path::new("accounts").join(DEACTIVATED);
        self.mkdir(&retired)?;
        self.mkdir(&retired.join(part))?;
        let rel = retired.join(account_id);
        let from = self.root.join("accounts").join(account_id);
        let to = self.root.join(&rel);
        if to.exists() {
            bail!("{} exists already", to.display());
        }
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        files::sync_dir(&self.root.join("accounts").join(part))
            .with_context(|| format!("syncing accounts/{part}"))?;
        Ok(rel)
    }

    /// Undoes [`Store::retire_account`].
    pub fn restore_account(&self, account_id: &str) -> Result<()> {
        check_account_id(account_id)?;
        let from = self
            .root
            .join("accounts")
            .join(DEACTIVATED)
            .join(account_id);
        let to = self.root.join("accounts").join(account_id);
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} back to {}", from.display(), to.display()))
    }

    /// Removes the `account` link of `certs/<cert_id>`, if there is one.
    pub fn unlink_cert_account(&self, cert_id: &str) -> Result<()> {
        if !ids::is_well_formed_id(cert_id) {
            bail!("{cert_id:?} is not a certificate id");
        }
        let dir = self.root.join("certs").join(cert_id);
        match std::fs::remove_file(dir.join("account")) {
            Ok(()) => files::sync_dir(&dir).with_context(|| format!("syncing {}", dir.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}/account", dir.display())),
        }
    }
}

/// The directories of acmetool's layout below the state directory, then acmekeep's own
/// (scratch space and run records, which nobody else has a reason to replace).
const LAYOUT_DIRS: [&str; 10] = [
    "accounts",
    "certs",
    "conf",
    "desired",
    "keys",
    "live",
    "tmp",
    RUN_DIR,
    ".acmekeep/targets",
    ".acmekeep/ari",
];

/// Whether a layout directory is acmekeep's alone (see [`check_layout`]).
fn is_ours(dir: &str) -> bool {
    dir == "tmp" || dir.starts_with(RUN_DIR)
}

/// Checks that each directory of the layout that exists is a directory, not a symlink or
/// anything else: everything acmekeep reads and writes sits below them, and a link would take
/// the reads, the writes (private keys) and the clearing of `tmp/` somewhere else. The state
/// directory itself may be a link: the caller chose it.
///
/// `tmp/` and `.acmekeep/` are acmekeep's alone: with `repair` (the store opened with the
/// lock) whatever is there instead of a directory is removed (a link is unlinked, never
/// followed) and a directory is made in its place when one is needed. Anything else is a
/// configuration error that names it.
fn check_layout(root: &Path, repair: bool) -> Result<()> {
    for name in LAYOUT_DIRS {
        let path = root.join(name);
        let file_type = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta.file_type(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
        };
        if file_type.is_dir() {
            continue;
        }
        let what = match std::fs::read_link(&path) {
            Ok(target) => format!("a symbolic link to {}", target.display()),
            Err(_) => format!("a {}", files::kind_name(file_type)),
        };
        if is_ours(name) {
            if repair {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {} ({what})", path.display()))?;
                tracing::warn!(
                    "{} was {what}; removed it (what it pointed at is untouched) to make a directory there",
                    path.display()
                );
            }
            continue;
        }
        return Err(crate::exit::config_error(anyhow!(
            "{} is {what}, not a directory: acmetool's layout has a directory there, and acmekeep does not follow links out of it (move the directory itself there)",
            path.display()
        )));
    }
    Ok(())
}

/// Where deactivated account keys are kept, under `accounts/`.
pub const DEACTIVATED: &str = ".deactivated";

/// Checks an account id, `<urlpart>/<key id>`, before it becomes part of a path.
/// The directory URL of the CA of `account` (`<escaped directory URL>/<key id>`, as
/// [`Store::cert_account`] gives it).
pub fn account_provider(account: &str) -> Option<String> {
    let (part, _key) = account.rsplit_once('/')?;
    layout::directory_url_from_part(part)
}

fn check_account_id(account_id: &str) -> Result<()> {
    let ok = match account_id.split_once('/') {
        Some((part, kid)) => {
            !part.starts_with('.')
                && layout::directory_url_from_part(part).is_some()
                && ids::is_well_formed_id(kid)
        }
        None => false,
    };
    if !ok {
        bail!("{account_id:?} is not an account id (<escaped directory URL>/<key id>)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the loaded targets were collected out of their slots into a second
    /// vector grown by doubling (room for 16,384 targets at 10,000: 5.8 MB more at the
    /// peak of loading and through the whole run) instead of in the slots' own memory.
    #[test]
    fn the_targets_are_collected_in_the_memory_of_their_slots() {
        let raw = crate::target::RawTarget::parse("satisfy: {names: [a.example]}\n").expect("yaml");
        let t = Target::resolve("a", &raw, &crate::target::RawTarget::default()).expect("target");
        let mut slots = empty_slots(1000);
        for (i, slot) in slots.iter_mut().enumerate() {
            if i % 3 != 0 {
                *slot = Some(t.clone());
            }
        }
        let memory = slots.as_ptr() as usize;
        let (targets, _) = assemble_targets(slots, Vec::new());
        assert_eq!(targets.len(), 666);
        assert_eq!(targets.as_ptr() as usize, memory);
        assert_eq!(targets.capacity(), 1000);
    }

    /// Enough target files for both threads to claim several chunks, with broken ones
    /// spread among them: both ways of loading give every target and every broken file
    /// once, in file-name order.
    #[test]
    fn targets_load_in_file_order_on_one_or_two_threads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for d in ["conf", "desired", "certs", "keys"] {
            std::fs::create_dir(root.join(d)).expect("mkdir");
        }
        std::fs::write(
            root.join("conf/target"),
            "request:\n  provider: https://ca.example/dir\n",
        )
        .expect("write conf/target");
        let count = 5 * TARGET_CHUNK + 7;
        let mut want_good = Vec::new();
        let mut want_broken = Vec::new();
        for i in 0..count {
            let file = format!("t{i:04}");
            let yaml = if i % 37 == 5 {
                want_broken.push(file.clone());
                "satisfy: [unclosed\n".to_owned()
            } else {
                want_good.push(file.clone());
                format!("satisfy:\n  names: [n{i}.example.com]\n")
            };
            std::fs::write(root.join("desired").join(&file), yaml).expect("write target");
        }
        let store = Store::open_read_only(root).expect("open");
        let defaults = store.load_defaults().expect("defaults");
        let files = |(targets, broken): (Vec<Target>, Vec<TargetError>)| {
            for t in &targets {
                assert_eq!(
                    t.satisfy_names[0].to_string(),
                    format!(
                        "n{}.example.com",
                        t.file[1..].parse::<usize>().expect("numbered file")
                    ),
                    "{} holds its own names",
                    t.file
                );
            }
            let good: Vec<String> = targets.into_iter().map(|t| t.file).collect();
            let bad: Vec<String> = broken.into_iter().map(|b| b.file).collect();
            (good, bad)
        };
        let serial = files(store.load_targets(&defaults).expect("load_targets"));
        let (targets, broken, _) = store.load_all(&defaults).expect("load_all");
        let parallel = files((targets, broken));
        assert_eq!(serial, (want_good.clone(), want_broken.clone()));
        assert_eq!(parallel, (want_good, want_broken));
    }
}

/// The state directory as something hostile left it: links, FIFOs and wide modes where
/// acmetool's layout has directories and regular files.
#[cfg(test)]
mod hostile_tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::time::{Duration, Instant};

    fn state() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("state");
        for d in [
            "conf", "desired", "certs", "keys", "live", "accounts", "tmp",
        ] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        (dir, root)
    }

    fn open(root: &Path) -> (lock::StateLock, Store) {
        let lock = lock::StateLock::acquire(root).expect("lock");
        let store = Store::open(root, &lock).expect("open");
        (lock, store)
    }

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path).expect("lstat").mode() & 0o777
    }

    #[test]
    fn tmp_symlink_empties_nothing_and_becomes_a_directory() {
        let (dir, root) = state();
        let precious = dir.path().join("precious");
        std::fs::create_dir(&precious).expect("mkdir");
        std::fs::write(precious.join("file"), "keep").expect("write");
        std::fs::remove_dir(root.join("tmp")).expect("rmdir");
        symlink(&precious, root.join("tmp")).expect("symlink");

        let (_lock, store) = open(&root);
        assert_eq!(
            std::fs::read_to_string(precious.join("file")).expect("still there"),
            "keep"
        );
        assert!(
            std::fs::symlink_metadata(root.join("tmp"))
                .expect("lstat")
                .is_dir()
        );
        // And writes go through the real tmp/.
        store
            .write_target("t", "satisfy: {names: [a.example]}\n")
            .expect("write");
        assert_eq!(std::fs::read_dir(&precious).expect("ls").count(), 1);
    }

    #[test]
    fn run_records_dir_symlink_is_replaced_not_written_through() {
        let (dir, root) = state();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        symlink(&elsewhere, root.join(RUN_DIR)).expect("symlink");
        let (_lock, store) = open(&root);
        store
            .write_target_record("t", &TargetRecord::default())
            .expect("record");
        assert_eq!(std::fs::read_dir(&elsewhere).expect("ls").count(), 0);
        assert!(root.join(RUN_DIR).join("targets/t.json").is_file());
    }

    #[test]
    fn layout_dir_symlinks_are_refused_naming_them() {
        for name in ["keys", "accounts", "desired", "certs", "live", "conf"] {
            let (dir, root) = state();
            let elsewhere = dir.path().join("elsewhere");
            std::fs::create_dir(&elsewhere).expect("mkdir");
            std::fs::remove_dir(root.join(name)).expect("rmdir");
            symlink(&elsewhere, root.join(name)).expect("symlink");
            let lock = lock::StateLock::acquire(&root).expect("lock");
            let err = Store::open(&root, &lock).expect_err(name);
            let text = format!("{err:#}");
            assert!(
                text.contains(&format!("{name} is a symbolic link")),
                "{text}"
            );
            assert!(err.downcast_ref::<crate::exit::ConfigError>().is_some());
            assert!(Store::open_read_only(&root).is_err(), "{name}");
        }
    }

    #[test]
    fn fifo_as_conf_target_or_target_file_never_blocks() {
        let (_dir, root) = state();
        mkfifo(&root.join("conf/target"));
        mkfifo(&root.join("desired/fifo"));
        std::fs::write(
            root.join("desired/good"),
            "satisfy:\n  names: [good.example]\n",
        )
        .expect("write");
        let started = Instant::now();
        let store = Store::open_read_only(&root).expect("open");
        let err = store.load_defaults().expect_err("a FIFO is not read");
        assert!(format!("{err:#}").contains("it is a FIFO"), "{err:#}");

        std::fs::remove_file(root.join("conf/target")).expect("rm");
        let defaults = store.load_defaults().expect("defaults");
        let (targets, broken) = store.load_targets(&defaults).expect("load");
        assert_eq!(targets.len(), 1);
        assert_eq!(broken.len(), 1);
        assert_eq!(broken[0].file, "fifo");
        assert!(
            format!("{:#}", broken[0].error).contains("it is a FIFO"),
            "{:#}",
            broken[0].error
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn target_file_symlink_is_not_followed() {
        let (dir, root) = state();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "satisfy:\n  names: [secret-content.example]\n").expect("w");
        symlink(&secret, root.join("desired/link")).expect("symlink");
        let store = Store::open_read_only(&root).expect("open");
        let (targets, broken) = store.load_targets(&RawTarget::default()).expect("load");
        assert!(targets.is_empty());
        let text = format!("{:#}", broken[0].error);
        assert!(text.contains("symbolic link"), "{text}");
        assert!(!text.contains("secret-content"), "{text}");
    }

    #[test]
    fn world_readable_private_keys_are_narrowed_and_reported_once() {
        let (_dir, root) = state();
        let id = "a".repeat(52);
        let key = root.join("keys").join(&id).join("privkey");
        std::fs::create_dir(key.parent().expect("parent")).expect("mkdir");
        std::fs::write(&key, "not parsed here").expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let account = root
            .join("accounts")
            .join("ca.example%2fdir")
            .join(&id)
            .join("privkey");
        std::fs::create_dir_all(account.parent().expect("parent")).expect("mkdir");
        std::fs::write(&account, "x").expect("write");
        std::fs::set_permissions(&account, std::fs::Permissions::from_mode(0o640)).expect("chmod");

        // Read-only: reported, left alone.
        let inv = Store::open_read_only(&root)
            .expect("open")
            .load_inventory()
            .expect("load");
        assert_eq!(mode(&key), 0o644);
        assert_eq!(
            inv.warnings
                .iter()
                .filter(|w| w.contains("the next `acmekeep reconcile` fixes it"))
                .count(),
            2,
            "{:?}",
            inv.warnings
        );

        let (lock, store) = open(&root);
        let inv = store.load_inventory().expect("load");
        assert_eq!((mode(&key), mode(&account)), (0o600, 0o600));
        assert!(inv.key_ids.contains(&id));
        assert_eq!(inv.accounts.len(), 1);
        let changed: Vec<_> = inv
            .warnings
            .iter()
            .filter(|w| w.contains("changed to 0600"))
            .collect();
        assert_eq!(changed.len(), 2, "{:?}", inv.warnings);
        assert!(changed[0].contains("mode 0644"), "{changed:?}");
        drop((store, lock));

        let (_lock, store) = open(&root);
        let inv = store.load_inventory().expect("load");
        assert!(inv.warnings.is_empty(), "reported once: {:?}", inv.warnings);
    }

    #[test]
    fn account_links_name_an_account_only_in_acmetools_form() {
        let (_dir, root) = state();
        let cert = "c".repeat(52);
        let kid = "k".repeat(52);
        std::fs::create_dir(root.join("certs").join(&cert)).expect("mkdir");
        let link = root.join("certs").join(&cert).join("account");
        let store = Store::open_read_only(&root).expect("open");
        for (target, want) in [
            (
                format!("../../accounts/ca.example%2fdir/{kid}"),
                Some(format!("ca.example%2fdir/{kid}")),
            ),
            ("../../accounts/../../../etc".to_owned(), None),
            (format!("../../accounts/.deactivated/{kid}"), None),
            ("/etc/passwd".to_owned(), None),
        ] {
            let _ = std::fs::remove_file(&link);
            symlink(&target, &link).expect("symlink");
            assert_eq!(store.cert_account(&cert), want, "{target}");
        }
    }

    #[test]
    fn key_entries_that_are_links_are_skipped_and_never_written_through() {
        let (dir, root) = state();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        std::fs::write(elsewhere.join("privkey"), "x").expect("write");
        let key = PrivateKey::generate(crate::keys::KeySpec::EcdsaP256).expect("key");
        symlink(&elsewhere, root.join("keys").join(&key.id)).expect("symlink");
        let real = "b".repeat(52);
        std::fs::create_dir(root.join("keys").join(&real)).expect("mkdir");
        symlink(
            elsewhere.join("privkey"),
            root.join("keys").join(&real).join("privkey"),
        )
        .expect("symlink");

        let (_lock, store) = open(&root);
        let inv = store.load_inventory().expect("load");
        assert!(inv.key_ids.is_empty(), "{:?}", inv.key_ids);
        assert_eq!(inv.warnings.len(), 2, "{:?}", inv.warnings);
        let err = store.save_key(&key).expect_err("not through a link");
        assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(elsewhere.join("privkey")).expect("read"),
            "x"
        );
    }
}
