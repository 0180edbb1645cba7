//! The ARI cache: `.acmekeep/ari/<cert id>.json`, one [`AriRecord`] per certificate
//! directory, so a run that may not ask the CA yet (Retry-After) still knows the window.
//!
//! A missing, unreadable or foreign record reads as "none": the CA is asked again and the
//! local rule applies meanwhile, so a damaged cache can never stop a renewal.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::{DIR_MODE, FILE_MODE, RUN_DIR, Store, fs, ids, optional_text};
use crate::ari::AriRecord;

/// Largest record read back (a record is a few hundred bytes).
const MAX_RECORD: u64 = 64 * 1024;

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
        optional_text(&path, MAX_RECORD)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok())
    }

    /// Stores the ARI record of certificate `cert_id` (atomically).
    pub fn save_ari_record(&self, cert_id: &str, rec: &AriRecord) -> Result<()> {
        if !ids::is_well_formed_id(cert_id) {
            bail!("{cert_id:?} is not a certificate id");
        }
        let dir = self.ari_dir();
        fs::create_dir_all_mode(&dir, DIR_MODE)
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{cert_id}.json"));
        let json = serde_json::to_vec_pretty(rec)?;
        self.fs
            .write_file(&path, &json, FILE_MODE)
            .with_context(|| format!("writing {}", path.display()))
    }
}
