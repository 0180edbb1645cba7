//! The run record: `.acmekeep/last-run.json`, what the last reconcile did (when it started, how
//! long it took, orders placed, requests sent to CAs, errors by kind) and the same counts
//! summed over every run, so that `acmekeep metrics` can report on runs while reading only the
//! state directory.
//!
//! Written once at the end of each locked run, atomically; a missing or damaged record reads
//! as "no run recorded" and the totals start again from zero (Prometheus counters may reset).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{DIR_MODE, FILE_MODE, RUN_DIR, Store, optional_text};
use crate::files;

/// What kind of error a target (or the run) met, as counted in the run record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The target file cannot be used.
    InvalidTarget,
    /// Not attempted: backing off after earlier failures.
    BackingOff,
    /// The CA refused (a problem document: validation failed, unauthorized, …).
    Ca,
    /// The CA refused for its rate: deferred.
    RateLimited,
    /// Anything else: the network, the CA not answering, local problems (challenge set-up,
    /// files), and errors not tied to one target.
    Other,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::InvalidTarget,
        ErrorKind::BackingOff,
        ErrorKind::Ca,
        ErrorKind::RateLimited,
        ErrorKind::Other,
    ];

    /// The name in the run record and the metrics' `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidTarget => "invalid_target",
            ErrorKind::BackingOff => "backing_off",
            ErrorKind::Ca => "ca",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Other => "other",
        }
    }
}

/// File name under `.acmekeep/`.
const FILE: &str = "last-run.json";
/// Largest record read back (a record is a few hundred bytes).
const MAX_RECORD: u64 = 64 * 1024;

/// One run, and every run so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    /// When the run started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// How long it took, in seconds.
    pub duration_seconds: f64,
    /// Whether it ended with every target satisfied or deferred (exit 0).
    pub success: bool,
    /// What it counted.
    #[serde(flatten)]
    pub counts: RunCounts,
    /// The counts of every recorded run, this one included.
    pub totals: RunTotals,
}

/// What one run counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunCounts {
    /// Orders the CAs accepted (newOrder).
    pub orders: u64,
    /// Requests sent to CAs.
    pub ca_requests: u64,
    /// Certificates obtained.
    pub certificates: u64,
    /// Errors by kind (the names of [`ErrorKind`]).
    pub errors: BTreeMap<String, u64>,
}

/// [`RunCounts`] summed over runs, with the number of runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunTotals {
    /// Runs recorded.
    pub runs: u64,
    /// Their counts, summed.
    #[serde(flatten)]
    pub counts: RunCounts,
}

impl RunTotals {
    /// These totals with `run` added.
    pub fn with_run(mut self, run: &RunCounts) -> Self {
        self.runs = self.runs.saturating_add(1);
        let c = &mut self.counts;
        c.orders = c.orders.saturating_add(run.orders);
        c.ca_requests = c.ca_requests.saturating_add(run.ca_requests);
        c.certificates = c.certificates.saturating_add(run.certificates);
        for (kind, n) in &run.errors {
            let total = c.errors.entry(kind.clone()).or_default();
            *total = total.saturating_add(*n);
        }
        self
    }
}

impl Store {
    /// The record of the last run, if one was recorded and is readable.
    pub fn last_run(&self) -> Option<RunRecord> {
        let path = self.root.join(RUN_DIR).join(FILE);
        optional_text(&path, MAX_RECORD)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok())
    }

    /// Records a run that started at `started_at`, took `duration_seconds` and counted
    /// `counts`, adding it to the totals of the runs before; returns the record written.
    pub fn record_run(
        &self,
        started_at: OffsetDateTime,
        duration_seconds: f64,
        success: bool,
        counts: RunCounts,
    ) -> Result<RunRecord> {
        let totals = self.last_run().unwrap_or_default().totals.with_run(&counts);
        let record = RunRecord {
            started_at: Some(started_at),
            duration_seconds,
            success,
            counts,
            totals,
        };
        let dir = self.root.join(RUN_DIR);
        files::create_dir_all_mode(&dir, DIR_MODE)
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(FILE);
        let json = serde_json::to_vec_pretty(&record)?;
        self.fs
            .write_file(&path, &json, FILE_MODE)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_every_run_and_survive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = super::super::lock::StateLock::acquire(dir.path()).expect("lock");
        let store = Store::open(dir.path(), &lock).expect("open");
        assert_eq!(store.last_run(), None);
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let run = |orders, kind: &str| RunCounts {
            orders,
            ca_requests: 7 * orders,
            certificates: orders,
            errors: BTreeMap::from([(kind.to_owned(), 1)]),
        };
        store
            .record_run(t0, 1.5, false, run(2, "ca"))
            .expect("first");
        let second = store
            .record_run(t0 + time::Duration::hours(12), 0.25, true, run(1, "other"))
            .expect("second");
        assert_eq!(store.last_run().as_ref(), Some(&second));
        assert_eq!(second.counts.orders, 1);
        assert_eq!(second.totals.runs, 2);
        assert_eq!(second.totals.counts.orders, 3);
        assert_eq!(second.totals.counts.ca_requests, 21);
        assert_eq!(
            second.totals.counts.errors,
            BTreeMap::from([("ca".to_owned(), 1), ("other".to_owned(), 1)])
        );
        // A damaged record starts the totals again.
        std::fs::write(dir.path().join(RUN_DIR).join(FILE), "{").expect("damage");
        assert_eq!(store.last_run(), None);
        let third = store
            .record_run(t0, 0.1, true, RunCounts::default())
            .expect("third");
        assert_eq!(third.totals.runs, 1);
    }
}
