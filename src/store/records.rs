//! Per-target run records: `.acmekeep/targets/<file>.json`, what the last attempts to obtain a
//! certificate for one `desired/` file came to.
//!
//! The store only reads and writes them, typed: what a record becomes after an attempt, and
//! whether a target waits, is the planner's decision (`plan::backoff`). The bytes on disk are
//! acmetool-free JSON with RFC 3339 times; a time that does not parse (a hand edit) reads as
//! absent rather than making the whole record unreadable, and a missing or damaged record reads
//! as "no attempt yet".
//!
//! Reports want every target's record, and ten thousand small files cost an idle run more
//! than everything else it reads (measured: about 0.12 of the 0.19 s the metrics took). So
//! the records are also kept in one file, `.acmekeep/target-records` ([`Store::records`]):
//! every record with the identity of `.acmekeep/targets` when they were read. Every record
//! is written by rename and never changed in place, so a record written or removed since
//! changes that directory's times, and the cache is then not used (as the live-link cache
//! trusts `live/`). Only a locked run writes records, and the run that does keeps the cache
//! up to date itself: from the cache and the records it wrote, when the cache was current
//! before them ([`Written`]); else by reading every record once. So, unlike the other caches,
//! it may record a directory identity however recent: no other writer can change a record
//! within the same clock tick without the directory showing it. Like them it is an
//! optimisation only: missing, damaged or out of date, it reads as "nothing cached" and every
//! record is read from its file. Only reports read it (the planner reads each due target's
//! own file), and only a run that reads every record anyway (one that writes the metrics
//! file) writes it, so a run that needs no record pays nothing for it.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::cache::{Lines, Stamp};
use super::{DIR_MODE, FILE_MODE, RUN_DIR, Store, optional_text, read_dir_sorted};
use crate::files;

/// Largest record read back (a record is a few hundred bytes).
const MAX_RECORD: u64 = 64 * 1024;
/// The record cache's file name under `.acmekeep/`.
const CACHE_FILE: &str = "target-records";
/// First line of the record cache: the format; a file with any other first line is ignored.
const CACHE_HEADER: &str = "acmekeep target-records 1";
/// Longest line of the record cache read back (a record, its file name and some quoting).
const MAX_CACHE_LINE: u64 = 2 * MAX_RECORD + 1024;

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
    fn records_dir(&self) -> PathBuf {
        self.root.join(RUN_DIR).join("targets")
    }

    fn record_path(&self, file: &str) -> PathBuf {
        self.records_dir().join(format!("{file}.json"))
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

    /// The run records this process wrote, by target file (what a run's world takes in at
    /// its end: [`crate::world::World::take_written`]).
    pub fn written_records(&self) -> BTreeMap<String, TargetRecord> {
        self.written.lock().records.clone()
    }

    /// Stores the run record of a target (atomically), as the planner made it
    /// (`plan::backoff::after_attempt`), and remembers it for the record cache.
    pub fn write_target_record(&self, file: &str, rec: &TargetRecord) -> Result<()> {
        let dir = self.records_dir();
        files::create_dir_all_mode(&dir, DIR_MODE)
            .with_context(|| format!("creating {}", dir.display()))?;
        self.written
            .before_writing(&dir, &self.root.join(RUN_DIR).join(CACHE_FILE));
        let json = serde_json::to_vec_pretty(rec)?;
        let path = self.record_path(file);
        let written = self.fs.write_file(&path, &json, FILE_MODE);
        self.written.after_writing(file, rec, written.is_ok());
        written.with_context(|| format!("writing {}", path.display()))?;
        self.listings.written(&path);
        Ok(())
    }
}

/// The run records this process wrote, so that the run that writes them can bring the
/// record cache up to date without reading every record again (only a locked run writes
/// records; every record a run writes goes through here).
#[derive(Debug, Default)]
pub(super) struct Written(std::sync::Mutex<WrittenSoFar>);

#[derive(Debug, Default)]
struct WrittenSoFar {
    /// The identity of `.acmekeep/targets` before the first record was written (`Some(None)`:
    /// it had none to take).
    before: Option<Option<Stamp>>,
    /// Every record written, by file.
    records: BTreeMap<String, TargetRecord>,
    /// A write failed: whether it changed the directory is not known.
    unsure: bool,
    /// This process wrote the cache: a record written after that must remove it first.
    cached: bool,
}

impl Written {
    fn lock(&self) -> std::sync::MutexGuard<'_, WrittenSoFar> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn before_writing(&self, dir: &Path, cache: &Path) {
        let mut w = self.lock();
        if w.before.is_none() {
            w.before = Some(Stamp::of(dir).ok());
        }
        if w.cached {
            // Gone before the record changes (a cache that cannot be removed, with a record
            // written within the same clock tick, could hide it).
            if std::fs::remove_file(cache).is_err() {
                w.unsure = true;
            }
            w.cached = false;
        }
    }

    fn after_writing(&self, file: &str, rec: &TargetRecord, ok: bool) {
        let mut w = self.lock();
        if ok {
            w.records.insert(file.to_owned(), rec.clone());
        } else {
            w.unsure = true;
        }
    }
}

/// The run records of the targets, asked for in file-name order ([`Records::get`]), as
/// [`Store::records`] found them.
pub struct Records<'s> {
    store: &'s Store,
    from: Source,
    /// The records this process wrote (over whatever `from` says of them).
    ours: BTreeMap<String, TargetRecord>,
}

enum Source {
    /// The cache is current: read along with the requests.
    Cache(Box<CacheReader>),
    /// Every record, read from the directory just now (by file name).
    Read(Vec<(String, TargetRecord)>),
    /// Each record from its own file.
    Files,
}

impl Records<'_> {
    /// The run record of target `file` (missing or unreadable: the default, as
    /// [`Store::target_record`] reads it). Asked in increasing file-name order, each is
    /// read from the cache while it is current; asked otherwise, from its file.
    pub fn get(&mut self, file: &str) -> TargetRecord {
        if let Some(rec) = self.ours.get(file) {
            return rec.clone();
        }
        let cached = match &mut self.from {
            Source::Cache(reader) => reader.take(file),
            Source::Read(all) => Some(
                all.binary_search_by(|(f, _)| f.as_str().cmp(file))
                    .map_or_else(|_| TargetRecord::default(), |i| all[i].1.clone()),
            ),
            Source::Files => None,
        };
        cached.unwrap_or_else(|| self.store.target_record(file))
    }

    /// Whether the records come from the cache or were read at once (not one file each).
    pub fn cached(&self) -> bool {
        !matches!(self.from, Source::Files)
    }
}

impl Store {
    /// Every target's run record, for a report over all targets: from the record cache while
    /// `.acmekeep/targets` is as it was when the cache was written. A locked run brings an
    /// out-of-date cache up to date: with the records it wrote itself when the cache was
    /// current before them, else by reading every record at once. Otherwise (no lock, no
    /// usable cache) each record is read from its file as it is asked for.
    pub fn records(&self) -> Records<'_> {
        let dir = self.records_dir();
        let cache_path = self.root.join(RUN_DIR).join(CACHE_FILE);
        let (before, ours, unsure) = {
            let w = self.written.lock();
            (w.before, w.records.clone(), w.unsure)
        };
        // Not through a link: what is not a directory of the state directory is read (and
        // then replaced) as before.
        let real_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        // Taken before reading, so a change made while reading shows as a mismatch next time.
        let from = match Stamp::of(&dir) {
            _ if !real_dir => Source::Files,
            // No directory: no record (the listing answers without reading).
            Err(_) => Source::Files,
            Ok(now) => match CacheReader::open(&cache_path) {
                Some((stamp, reader)) if stamp == now => Source::Cache(Box::new(reader)),
                _ if !self.writable => Source::Files,
                Some((stamp, reader)) if !unsure && before == Some(Some(stamp)) => {
                    match reader.all() {
                        Some(mut all) => {
                            all.extend(ours.iter().map(|(f, r)| (f.clone(), r.clone())));
                            self.save_record_cache(now, all, &cache_path)
                        }
                        None => self.rebuild_record_cache(&dir, now, &cache_path),
                    }
                }
                _ => self.rebuild_record_cache(&dir, now, &cache_path),
            },
        };
        Records {
            store: self,
            from,
            ours,
        }
    }

    /// Reads every record in `dir` (identity `now`) and caches them.
    fn rebuild_record_cache(&self, dir: &Path, now: Stamp, cache_path: &Path) -> Source {
        let started = std::time::Instant::now();
        let entries = match read_dir_sorted(dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::debug!("cannot list {}: {e}", dir.display());
                return Source::Files;
            }
        };
        let all: Vec<(String, TargetRecord)> = entries
            .iter()
            .filter_map(|e| {
                let name = e.file_name();
                let file = name.to_str()?.strip_suffix(".json")?;
                Some((file.to_owned(), self.target_record(file)))
            })
            .collect();
        let n = all.len();
        let from = self.save_record_cache(now, all, cache_path);
        tracing::debug!(
            "{n} run record(s) read and cached in {:.0?}",
            started.elapsed()
        );
        from
    }

    /// Writes the cache of `all` (one entry per file; a later entry for the same file wins)
    /// for `.acmekeep/targets` with the identity `now` (never fatal: without it the records
    /// are read one by one), and answers from them.
    fn save_record_cache(
        &self,
        now: Stamp,
        all: Vec<(String, TargetRecord)>,
        cache_path: &Path,
    ) -> Source {
        // By file (`a-b.json` sorts before `a.json`, but `a` before `a-b`), one each.
        let all: Vec<(String, TargetRecord)> = all
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        if all.iter().all(|(f, _)| writable_name(f)) {
            let mut w = self.written.lock();
            let saved = self.fs.write_file_with(cache_path, FILE_MODE, |file| {
                write_cache(now, &all, io::BufWriter::with_capacity(64 * 1024, file))
            });
            match saved {
                Ok(()) => w.cached = true,
                Err(e) => tracing::warn!("cannot write {}: {e}", cache_path.display()),
            }
        }
        Source::Read(all)
    }
}

/// Whether a file name can stand in a line of the cache.
fn writable_name(file: &str) -> bool {
    !file.is_empty() && !file.contains(['\t', '\n'])
}

/// A time in the cache: seconds since the epoch, nanoseconds, UTC offset in seconds (read
/// back without parsing text).
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Time(i64, u32, i32);

impl Time {
    fn of(t: OffsetDateTime) -> Time {
        Time(
            t.unix_timestamp(),
            t.nanosecond(),
            t.offset().whole_seconds(),
        )
    }

    fn time(self) -> Option<OffsetDateTime> {
        let t = OffsetDateTime::from_unix_timestamp(self.0)
            .ok()?
            .replace_nanosecond(self.1)
            .ok()?;
        Some(t.to_offset(time::UtcOffset::from_whole_seconds(self.2).ok()?))
    }
}

/// A record in the cache (after its file name and a tab).
#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_attempt: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(default)]
    failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_attempt: Option<Time>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rate_limited: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failing_since: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_success: Option<Time>,
}

impl Line {
    fn of(r: &TargetRecord) -> Line {
        Line {
            last_attempt: r.last_attempt.map(Time::of),
            last_error: r.last_error.clone(),
            failures: r.failures,
            next_attempt: r.next_attempt.map(Time::of),
            rate_limited: r.rate_limited,
            failing_since: r.failing_since.map(Time::of),
            last_success: r.last_success.map(Time::of),
        }
    }

    /// The record; `None` if a time is not one acmekeep could have written.
    fn record(self) -> Option<TargetRecord> {
        let at = |t: Option<Time>| t.map(Time::time).map_or(Some(None), |t| t.map(Some));
        Some(TargetRecord {
            last_attempt: at(self.last_attempt)?,
            last_error: self.last_error,
            failures: self.failures,
            next_attempt: at(self.next_attempt)?,
            rate_limited: self.rate_limited,
            failing_since: at(self.failing_since)?,
            last_success: at(self.last_success)?,
        })
    }
}

/// Writes the cache of `records` (sorted by file name, no name holding a tab or newline),
/// read when `.acmekeep/targets` had the identity `dir`. Unlike the other caches it may
/// record however recent an identity: only a locked run writes records, and it keeps this
/// cache up to date itself (a record written after the cache removes it first).
fn write_cache(
    dir: Stamp,
    records: &[(String, TargetRecord)],
    mut out: impl Write,
) -> io::Result<()> {
    writeln!(out, "{CACHE_HEADER}")?;
    serde_json::to_writer(&mut out, &dir)?;
    out.write_all(b"\n")?;
    for (file, record) in records {
        out.write_all(file.as_bytes())?;
        out.write_all(b"\t")?;
        serde_json::to_writer(&mut out, &Line::of(record))?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads the record cache in file-name order, along with the requests.
struct CacheReader {
    lines: Lines,
    /// The next entry, read but not asked for yet.
    pending: Option<(String, TargetRecord)>,
    /// The last file name read (each must be greater).
    last: String,
    /// The last file name asked for (each must be greater).
    asked: String,
}

impl CacheReader {
    /// The cache at `path`, with the identity of `.acmekeep/targets` it was written for.
    fn open(path: &Path) -> Option<(Stamp, CacheReader)> {
        let file = files::open_regular(path, files::Links::Refuse).ok()?;
        let mut reader = CacheReader {
            lines: Lines::new(
                Some(BufReader::with_capacity(64 * 1024, file)),
                MAX_CACHE_LINE,
            ),
            pending: None,
            last: String::new(),
            asked: String::new(),
        };
        if reader.lines.next_line()? != CACHE_HEADER.as_bytes() {
            return None;
        }
        let written_for: Stamp = serde_json::from_slice(reader.lines.next_line()?).ok()?;
        Some((written_for, reader))
    }

    /// Every entry, if every line can be used.
    fn all(mut self) -> Option<Vec<(String, TargetRecord)>> {
        let mut all = Vec::new();
        while let Some(e) = self.next_entry() {
            all.push(e);
        }
        (!self.lines.damaged()).then_some(all)
    }

    fn next_entry(&mut self) -> Option<(String, TargetRecord)> {
        let line = self.lines.next_line()?;
        let entry = line
            .iter()
            .position(|&b| b == b'\t')
            .and_then(|tab| {
                let file = std::str::from_utf8(&line[..tab]).ok()?;
                let record = serde_json::from_slice::<Line>(&line[tab + 1..]).ok()?;
                Some((file.to_owned(), record.record()?))
            })
            .filter(|(file, _)| writable_name(file));
        match entry {
            Some(e) if e.0 > self.last => {
                self.last.clone_from(&e.0);
                Some(e)
            }
            _ => {
                // Damaged or out of order: nothing from here on is used.
                self.lines.reject();
                None
            }
        }
    }

    /// The record of target `file`, the default where the cache holds none; `None` when the
    /// cache cannot say (asked out of order, or a damaged line on the way).
    fn take(&mut self, file: &str) -> Option<TargetRecord> {
        if self.lines.damaged() || file <= self.asked.as_str() {
            return None;
        }
        self.asked.clear();
        self.asked.push_str(file);
        loop {
            let entry = match self.pending.take() {
                Some(e) => e,
                None => match self.next_entry() {
                    Some(e) => e,
                    // The end: no record for this one.
                    None => return (!self.lines.damaged()).then(TargetRecord::default),
                },
            };
            match entry.0.as_str().cmp(file) {
                // The record of a file that is not a loadable target.
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Some(entry.1),
                std::cmp::Ordering::Greater => {
                    self.pending = Some(entry);
                    return Some(TargetRecord::default());
                }
            }
        }
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

    /// A store opened as a locked run opens it (one per run: what it wrote is its own).
    fn locked_store(dir: &Path) -> Store {
        let lock = super::super::lock::StateLock::acquire(dir).expect("lock");
        Store::open(dir, &lock).expect("open")
    }

    /// Three records, one of each shape, and their files (`a-b` sorts after `a` though
    /// `a-b.json` sorts before `a.json`).
    fn three_records(store: &Store) -> Vec<(&'static str, TargetRecord)> {
        let failing = TargetRecord {
            last_attempt: Some(datetime!(2027-03-01 11:58:00.123456789 UTC)),
            last_error: Some("CA said \"no\"\n\tat once".to_owned()),
            failures: 2,
            next_attempt: Some(datetime!(2027-03-01 12:08 +02:00)),
            rate_limited: true,
            failing_since: Some(datetime!(2027-03-01 11:55 UTC)),
            last_success: None,
        };
        let fine = TargetRecord {
            last_attempt: Some(datetime!(2027-02-01 00:00 UTC)),
            last_success: Some(datetime!(2027-02-01 00:00 UTC)),
            ..TargetRecord::default()
        };
        let all = vec![
            ("a", fine.clone()),
            ("a-b", failing),
            ("d", TargetRecord::default()),
        ];
        for (file, rec) in &all {
            store.write_target_record(file, rec).expect("write");
        }
        all
    }

    fn is_cache(r: &Records) -> bool {
        matches!(r.from, Source::Cache(_))
    }

    #[test]
    fn the_record_cache_answers_only_while_the_records_directory_is_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        Store::prepare_root(dir.path()).expect("root");
        let store = locked_store(dir.path());
        let all = three_records(&store);
        let asked = ["0", "a", "a-b", "b", "d", "e"];
        let want = |file: &str| {
            all.iter()
                .find(|(f, _)| *f == file)
                .map_or_else(TargetRecord::default, |(_, r)| r.clone())
        };

        // A read-only reader (no lock) never writes the cache: each file is read.
        let reader = Store::open_read_only(dir.path()).expect("read only");
        let mut files = reader.records();
        assert!(!files.cached());
        for f in asked {
            assert_eq!(files.get(f), want(f), "{f}");
        }
        let cache_path = dir.path().join(RUN_DIR).join(CACHE_FILE);
        assert!(!cache_path.exists());

        // A locked run reads the directory once and writes the cache; the next reads it.
        let mut first = store.records();
        assert!(first.cached() && !is_cache(&first));
        for f in asked {
            assert_eq!(first.get(f), want(f), "{f}");
        }
        assert!(cache_path.exists());
        for r in [locked_store(dir.path()).records(), reader.records()] {
            let mut r = r;
            assert!(is_cache(&r));
            for f in asked {
                assert_eq!(r.get(f), want(f), "{f}");
            }
        }
        // The cache is what answers: a record edited in place is not seen.
        std::fs::write(store.record_path("a"), r#"{"failures": 9}"#).expect("edit");
        assert_eq!(reader.records().get("a"), want("a"));

        // A run that writes a record brings the cache up to date from the cache and what it
        // wrote, without reading every record (the edit in place is still not seen).
        let run = locked_store(dir.path());
        let d = TargetRecord {
            failures: 5,
            ..TargetRecord::default()
        };
        run.write_target_record("d", &d).expect("write");
        let mut after = run.records();
        assert!(after.cached() && !is_cache(&after));
        assert_eq!((after.get("a"), after.get("d")), (want("a"), d.clone()));
        let mut next = reader.records();
        assert!(is_cache(&next));
        assert_eq!((next.get("a"), next.get("d")), (want("a"), d.clone()));
        // A record written after that removes the cache first.
        run.write_target_record("a-b", &TargetRecord::default())
            .expect("write");
        assert!(!cache_path.exists());
        let edited = TargetRecord {
            failures: 9,
            ..TargetRecord::default()
        };
        let mut files = reader.records();
        assert!(!files.cached());
        assert_eq!(files.get("a"), edited);
        assert_eq!(files.get("a-b"), TargetRecord::default());

        // A record replaced by anything else (a restore, by rename) changes the directory.
        locked_store(dir.path()).records();
        assert!(is_cache(&reader.records()));
        // Past the coarsest clock tick a file system's times may have.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let restored = dir.path().join("restored.json");
        std::fs::write(&restored, r#"{"failures": 7}"#).expect("write");
        std::fs::rename(&restored, store.record_path("d")).expect("rename");
        let mut r = reader.records();
        assert!(!r.cached());
        assert_eq!(r.get("d").failures, 7);
    }

    #[test]
    fn a_damaged_or_foreign_record_cache_is_read_around() {
        let dir = tempfile::tempdir().expect("tempdir");
        Store::prepare_root(dir.path()).expect("root");
        let store = locked_store(dir.path());
        let all = three_records(&store);
        store.records();
        let cache_path = dir.path().join(RUN_DIR).join(CACHE_FILE);
        let good = std::fs::read_to_string(&cache_path).expect("the cache");
        let lines: Vec<&str> = good.lines().collect();
        assert_eq!(lines.len(), 5, "{good}");
        let joined = |l: &[&str]| l.iter().map(|l| format!("{l}\n")).collect::<String>();
        let damaged = [
            good.replace(CACHE_HEADER, "acmekeep target-records 0"),
            joined(&[lines[0], "[1,2,3,4,5,6]", lines[2], lines[3], lines[4]]),
            // Cut short, not JSON, a time no clock shows, no tab.
            good[..good.len() - 1].to_owned(),
            good.replace("\"failures\":2", "\"failures\":\"two\""),
            good.replace("[1801440000,0,0]", "[1801440000,2000000000,0]"),
            good.replace("a\t", "a "),
        ];
        for text in damaged {
            std::fs::write(&cache_path, &text).expect("damage");
            let mut r = store.records();
            for (file, rec) in &all {
                assert_eq!(&r.get(file), rec, "{file} with\n{text}");
            }
        }
        // Asked out of order, a record is read from its file.
        std::fs::write(&cache_path, &good).expect("restore");
        let mut r = store.records();
        assert!(is_cache(&r));
        assert_eq!(r.get("d"), all[2].1);
        assert_eq!(r.get("a"), all[0].1);
        assert_eq!(r.get("a-b"), all[1].1);
    }
}
