//! The ARI cache: `.acmekeep/ari/<cert id>.json`, one [`AriRecord`] per certificate
//! directory, so a run that may not ask the CA yet (Retry-After) still knows the window; and
//! `.acmekeep/ari/<cert id>.backoff`, an [`AriBackoff`] while the CA's answers cannot be used.
//!
//! A missing, unreadable or foreign record reads as "none": the CA is asked again and the
//! local rule applies meanwhile, so a damaged cache can never stop a renewal.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::{DIR_MODE, FILE_MODE, RUN_DIR, Store, optional_text};
use crate::acme::Window;
use crate::files;
use crate::keys::ids;

/// What the CA last said about one certificate, kept in `.acmekeep/ari/<cert id>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AriRecord {
    /// The certificate's ARI identifier (`<AKI>.<serial>`), so a record copied next to the
    /// wrong certificate is recognised and ignored.
    pub ari_id: String,
    /// The suggested window.
    pub window: Window,
    /// Not to be asked again before this time (the clamped Retry-After).
    #[serde(with = "time::serde::rfc3339")]
    pub retry_after_until: OffsetDateTime,
    /// When the window was fetched.
    #[serde(with = "time::serde::rfc3339")]
    pub fetched_at: OffsetDateTime,
}

/// Answers about one certificate that could not be used, in a row (RFC 9773 §4.3.3: an
/// error, a body that is not renewal information, an inverted or impossible window), kept in
/// `.acmekeep/ari/<cert id>.backoff`: the CA is not asked again before `next_ask`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AriBackoff {
    /// The certificate's ARI identifier, as in [`AriRecord`].
    pub ari_id: String,
    /// How many answers in a row could not be used.
    pub failures: u32,
    /// Not to be asked again before this time.
    #[serde(with = "time::serde::rfc3339")]
    pub next_ask: OffsetDateTime,
}

/// Largest record read back (a record is a few hundred bytes).
const MAX_RECORD: u64 = 64 * 1024;

/// How long a directory seen without `renewalInfo` is believed to stay so.
pub const NO_ARI_RECHECK: Duration = Duration::days(1);

impl Store {
    fn ari_dir(&self) -> PathBuf {
        self.root.join(RUN_DIR).join("ari")
    }

    /// The cached ARI record of certificate `cert_id`, if any and well-formed.
    pub fn ari_record(&self, cert_id: &str) -> Option<AriRecord> {
        if !ids::is_well_formed_id(cert_id) {
            return None;
        }
        let path = self.ari_dir().join(format!("{cert_id}.json"));
        if !self.listings.may_exist(&path) {
            return None;
        }
        optional_text(&path, MAX_RECORD)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok())
    }

    /// The ids of the certificates with a cached ARI record and of those with a backoff,
    /// from one listing of the cache directory (looking for each certificate's files costs
    /// an idle run at 10,000 certificates two path lookups each); `None` when it cannot be
    /// listed.
    pub fn ari_cached_ids(&self) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
        let dir = match std::fs::read_dir(self.ari_dir()) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Default::default()),
            Err(_) => return None,
        };
        let (mut records, mut backoffs) = (BTreeSet::new(), BTreeSet::new());
        for entry in dir {
            let name = entry.ok()?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(".json") {
                records.insert(id.to_owned());
            } else if let Some(id) = name.strip_suffix(".backoff") {
                backoffs.insert(id.to_owned());
            }
        }
        Some((records, backoffs))
    }

    fn ari_backoff_path(&self, cert_id: &str) -> PathBuf {
        self.ari_dir().join(format!("{cert_id}.backoff"))
    }

    /// The backoff after unusable answers about certificate `cert_id`, if any and
    /// well-formed (a damaged one reads as none: the CA is asked).
    pub fn ari_backoff(&self, cert_id: &str) -> Option<AriBackoff> {
        if !ids::is_well_formed_id(cert_id) {
            return None;
        }
        let path = self.ari_backoff_path(cert_id);
        if !self.listings.may_exist(&path) {
            return None;
        }
        optional_text(&path, MAX_RECORD)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok())
    }

    /// Stores the backoff of certificate `cert_id` (atomically), or removes it (`None`).
    pub fn save_ari_backoff(&self, cert_id: &str, backoff: Option<&AriBackoff>) -> Result<()> {
        if !ids::is_well_formed_id(cert_id) {
            bail!("{cert_id:?} is not a certificate id");
        }
        let path = self.ari_backoff_path(cert_id);
        let Some(backoff) = backoff else {
            if self.listings.may_exist(&path) {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("removing {}", path.display()));
                    }
                }
            }
            return Ok(());
        };
        let dir = self.ari_dir();
        files::create_dir_all_mode(&dir, DIR_MODE)
            .with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_vec_pretty(backoff)?;
        self.fs
            .write_file(&path, &json, FILE_MODE)
            .with_context(|| format!("writing {}", path.display()))?;
        self.listings.written(&path);
        Ok(())
    }

    /// The file remembering that the directory at `provider` offered no `renewalInfo`.
    fn no_ari_path(&self, provider: &str) -> PathBuf {
        self.ari_dir()
            .join(format!("no-ari-{}", ids::cert_id(provider)))
    }

    /// Whether the directory at `provider` was seen without `renewalInfo` less than
    /// [`NO_ARI_RECHECK`] before `now` (so it need not be fetched again yet).
    pub fn provider_lacks_ari(&self, provider: &str, now: OffsetDateTime) -> bool {
        optional_text(&self.no_ari_path(provider), 256)
            .ok()
            .flatten()
            .and_then(|t| OffsetDateTime::parse(t.trim(), &Rfc3339).ok())
            .is_some_and(|seen| seen <= now && now < seen + NO_ARI_RECHECK)
    }

    /// Remembers that the directory at `provider` offered no `renewalInfo` at `now`.
    pub fn note_provider_lacks_ari(&self, provider: &str, now: OffsetDateTime) -> Result<()> {
        let dir = self.ari_dir();
        files::create_dir_all_mode(&dir, DIR_MODE)
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = self.no_ari_path(provider);
        let text = now.format(&Rfc3339)?;
        self.fs
            .write_file(&path, text.as_bytes(), FILE_MODE)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Stores the ARI record of certificate `cert_id` (atomically).
    pub fn save_ari_record(&self, cert_id: &str, rec: &AriRecord) -> Result<()> {
        if !ids::is_well_formed_id(cert_id) {
            bail!("{cert_id:?} is not a certificate id");
        }
        let dir = self.ari_dir();
        files::create_dir_all_mode(&dir, DIR_MODE)
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{cert_id}.json"));
        let json = serde_json::to_vec_pretty(rec)?;
        self.fs
            .write_file(&path, &json, FILE_MODE)
            .with_context(|| format!("writing {}", path.display()))?;
        self.listings.written(&path);
        Ok(())
    }
}
