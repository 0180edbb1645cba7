//! Per-target run records: `.acmekeep/targets/<file>.json`, what the last attempts to obtain a
//! certificate for one `desired/` file came to.
//!
//! The store only reads and writes them, typed: what a record becomes after an attempt, and
//! whether a target waits, is the planner's decision (`plan::backoff`). The bytes on disk are
//! acmetool-free JSON with RFC 3339 times; a time that does not parse (a hand edit) reads as
//! absent rather than making the whole record unreadable, and a missing or damaged record reads
//! as "no attempt yet".

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{DIR_MODE, FILE_MODE, RUN_DIR, Store, optional_text};
use crate::files;

/// Largest record read back (a record is a few hundred bytes).
const MAX_RECORD: u64 = 64 * 1024;

/// Per-target record of the last run, kept in `.acmekeep/targets/<file>.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetRecord {
    /// When the last attempt to obtain a certificate ended.
    #[serde(default, with = "lenient_time")]
    pub last_attempt: Option<OffsetDateTime>,
    /// Error of the last attempt, if it failed.
    pub last_error: Option<String>,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// Not to be tried again before this time, after a failure.
    #[serde(
        default,
        with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_attempt: Option<OffsetDateTime>,
    /// The last failure was the CA refusing for its rate: the target is deferred until
    /// `next_attempt`, not failing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rate_limited: bool,
    /// When the failures counted in `failures` began: the first failed attempt after a
    /// success.
    #[serde(
        default,
        with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub failing_since: Option<OffsetDateTime>,
    /// When an attempt last succeeded.
    #[serde(
        default,
        with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_success: Option<OffsetDateTime>,
}

/// RFC 3339 times written as acmekeep always wrote them; read back leniently (a string that
/// is not a time is `None`, as the text was ignored when these fields were strings).
mod lenient_time {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        t: &Option<OffsetDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::option::serialize(t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        Ok(text.and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok()))
    }
}

impl Store {
    fn record_path(&self, file: &str) -> PathBuf {
        self.root
            .join(RUN_DIR)
            .join("targets")
            .join(format!("{file}.json"))
    }

    /// Reads the run record of a target (missing or unreadable → default).
    pub fn target_record(&self, file: &str) -> TargetRecord {
        let path = self.record_path(file);
        if !self.listings.may_exist(&path) {
            return TargetRecord::default();
        }
        optional_text(&path, MAX_RECORD)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Stores the run record of a target (atomically), as the planner made it
    /// (`plan::backoff::after_attempt`).
    pub fn write_target_record(&self, file: &str, rec: &TargetRecord) -> Result<()> {
        let dir = self.root.join(RUN_DIR).join("targets");
        files::create_dir_all_mode(&dir, DIR_MODE)
            .with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_vec_pretty(rec)?;
        let path = self.record_path(file);
        self.fs
            .write_file(&path, &json, FILE_MODE)
            .with_context(|| format!("writing {}", path.display()))?;
        self.listings.written(&path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn records_keep_their_bytes_and_a_bad_time_reads_as_absent() {
        let text = r#"{
  "last_attempt": "2027-03-01T11:58:00Z",
  "last_error": "validation failed",
  "failures": 2,
  "next_attempt": "2027-03-01T12:08:00Z",
  "failing_since": "2027-03-01T11:55:00Z"
}"#;
        let rec: TargetRecord = serde_json::from_str(text).expect("parse");
        assert_eq!(rec.last_attempt, Some(datetime!(2027-03-01 11:58 UTC)));
        assert_eq!(rec.next_attempt, Some(datetime!(2027-03-01 12:08 UTC)));
        assert_eq!(rec.failures, 2);
        assert!(!rec.rate_limited);
        assert_eq!(
            String::from_utf8(serde_json::to_vec_pretty(&rec).expect("json")).expect("utf-8"),
            text
        );
        let hand_edited = r#"{"last_attempt": "yesterday", "last_error": null, "failures": 1,
            "next_attempt": "soon", "rate_limited": true}"#;
        let rec: TargetRecord = serde_json::from_str(hand_edited).expect("parse");
        assert_eq!((rec.last_attempt, rec.next_attempt), (None, None));
        assert_eq!((rec.failures, rec.rate_limited), (1, true));
        let empty = serde_json::to_string(&TargetRecord::default()).expect("json");
        assert_eq!(
            empty,
            r#"{"last_attempt":null,"last_error":null,"failures":0}"#
        );
    }
}
