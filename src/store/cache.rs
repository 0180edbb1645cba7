//! Caches that let a run over ten thousand unchanged certificates skip reading them. Both
//! live in `.acmekeep/`, and both are optimisations only: a missing, damaged, foreign or
//! out-of-date file reads as "nothing cached" and is rewritten, so a cache can never hide a
//! certificate or keep a stale one.
//!
//! - `cert-summaries`: what the planner needs of each downloaded certificate. One line per
//!   certificate directory, sorted by id, records the identity of the directory and of its
//!   `cert` file when they were read (inode, size, modification and change times) and the
//!   summary read from them. A line is used only while both identities still match. Every
//!   other file the summary depends on (`revoked`, `.profile`) is created or replaced by
//!   rename, which changes the directory's times; an in-place edit of `cert` changes the
//!   file's.
//! - `live-links`: where each `live/` link points, with the identity of `live/`. A symlink
//!   cannot be changed in place: it is replaced or removed, which changes the directory.
//!
//! Like git's index, a cache never records a time that is too close to the moment it is
//! written ([`RACY`]): a change within the same clock tick could leave the times equal. What
//! changed that recently is simply read again next run.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::cert::CertSummary;
use crate::keys::KeyFamily;
use crate::keys::ids;

/// The summary cache's file name under `.acmekeep/`.
pub const SUMMARIES_FILE: &str = "cert-summaries";
/// First line: the format; a file with any other first line is ignored.
const HEADER: &str = "acmekeep cert-summaries 1";
/// The live-link cache's file name under `.acmekeep/`.
pub const LIVE_FILE: &str = "live-links";
const LIVE_HEADER: &str = "acmekeep live-links 1";
/// Largest live-link cache read back.
const MAX_LIVE_FILE: u64 = 64 * 1024 * 1024;
/// Longest line read back (a line is a few hundred bytes; a certificate may carry many names).
const MAX_LINE: u64 = 256 * 1024;
/// Times closer than this to the moment the cache is written are not recorded.
pub const RACY: Duration = Duration::from_secs(2);

/// Identity of a file or directory as `stat(2)` gives it: inode, size, modification and
/// change times (seconds, nanoseconds). Written as a JSON array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp(u64, u64, i64, i64, i64, i64);

impl Stamp {
    /// The stamp of `path`, following symlinks as reading it does.
    pub fn of(path: &Path) -> io::Result<Stamp> {
        let m = std::fs::metadata(path)?;
        Ok(Stamp(
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ))
    }

    /// Whether both times lie at least [`RACY`] before `written` (so that any later change
    /// gets a different time).
    pub fn settled(&self, written: SystemTime) -> bool {
        // Checked: a file system may hold any 64-bit time (`touch -d @9223372036854775807`
        // on btrfs), and SystemTime arithmetic panics on overflow.
        let at = |s: i64, ns: i64| {
            UNIX_EPOCH
                .checked_add(Duration::from_secs(u64::try_from(s).ok()?))?
                .checked_add(Duration::from_nanos(u64::try_from(ns).ok()?))
        };
        match (at(self.2, self.3), at(self.4, self.5)) {
            (Some(m), Some(c)) => m.max(c).checked_add(RACY).is_some_and(|t| t <= written),
            // Before 1970: nothing to compare with.
            _ => false,
        }
    }
}

/// The identities a summary was read under: the certificate directory and its `cert` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamps {
    /// `certs/<id>`.
    pub dir: Stamp,
    /// `certs/<id>/cert`.
    pub cert: Stamp,
}

impl Stamps {
    /// Both stamps of certificate directory `dir`.
    pub fn of(dir: &Path) -> io::Result<Stamps> {
        Ok(Stamps {
            dir: Stamp::of(dir)?,
            cert: Stamp::of(&dir.join("cert"))?,
        })
    }

    /// Whether both are settled at `written` (see [`Stamp::settled`]).
    pub fn settled(&self, written: SystemTime) -> bool {
        self.dir.settled(written) && self.cert.settled(written)
    }
}

/// One line of the file.
#[derive(Serialize, Deserialize)]
struct Line<'a> {
    id: Cow<'a, str>,
    dir: Stamp,
    cert: Stamp,
    names: Cow<'a, [String]>,
    not_before: i64,
    not_after: i64,
    key_id: Cow<'a, str>,
    key_family: Option<KeyFamily>,
    #[serde(default)]
    ari_id: Option<Cow<'a, str>>,
    #[serde(default)]
    revoked: bool,
    #[serde(default)]
    profile: Option<Cow<'a, str>>,
}

impl Line<'_> {
    /// The summary this line records; `None` if a field is not what acmekeep would write.
    fn into_summary(self) -> Option<(Stamps, CertSummary)> {
        let ok = ids::is_well_formed_id(&self.id)
            && ids::is_well_formed_id(&self.key_id)
            && self.names.iter().all(|n| !n.is_empty() && n.len() <= 253);
        if !ok {
            return None;
        }
        let summary = CertSummary {
            id: self.id.into_owned(),
            names: self.names.into_owned(),
            not_before: OffsetDateTime::from_unix_timestamp(self.not_before).ok()?,
            not_after: OffsetDateTime::from_unix_timestamp(self.not_after).ok()?,
            key_family: self.key_family,
            has_private_key: false,
            key_id: self.key_id.into_owned(),
            revoked: self.revoked,
            profile: self.profile.map(Cow::into_owned),
            ari_id: self.ari_id.map(Cow::into_owned),
        };
        Some((
            Stamps {
                dir: self.dir,
                cert: self.cert,
            },
            summary,
        ))
    }
}

/// A cache file read line by line, each line at most `max` bytes: a line too long, cut
/// short (no newline at its end) or unreadable ends the reading, and so does a line the
/// caller could not use ([`Lines::reject`]): nothing after it is trusted. Both caches of
/// `.acmekeep/` (this module's and the run records') read through it.
pub struct Lines<R = BufReader<File>> {
    /// `None` once the end is reached or a line could not be used.
    src: Option<R>,
    buf: Vec<u8>,
    max: u64,
    damaged: bool,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `src` (none when there is no file) of at most `max` bytes.
    pub fn new(src: Option<R>, max: u64) -> Self {
        Lines {
            src,
            buf: Vec::new(),
            max,
            damaged: false,
        }
    }

    /// The next line, without its newline; `None` at the end or once the reading stopped.
    pub fn next_line(&mut self) -> Option<&[u8]> {
        let src = self.src.as_mut()?;
        self.buf.clear();
        let read = src
            .by_ref()
            .take(self.max + 1)
            .read_until(b'\n', &mut self.buf);
        match read {
            Ok(0) => {
                self.src = None;
                None
            }
            Ok(_) if self.buf.last() == Some(&b'\n') => {
                self.buf.pop();
                Some(&self.buf)
            }
            // Too long, cut short or unreadable: nothing after it is trusted.
            _ => {
                self.reject();
                None
            }
        }
    }

    /// The last line could not be used (damaged, out of order, foreign): the reading stops
    /// and the file counts as damaged.
    pub fn reject(&mut self) {
        self.src = None;
        self.damaged = true;
    }

    /// Whether a line was rejected, or could not be read whole.
    pub fn damaged(&self) -> bool {
        self.damaged
    }
}

/// Reads the cache in id order, alongside the sorted listing of `certs/`.
pub struct Reader {
    lines: Lines,
    /// The next entry, read but not asked for yet.
    pending: Option<(Stamps, CertSummary)>,
    /// Id of the last entry read (each must be greater).
    last_id: String,
    /// An entry was passed over: its directory is gone.
    passed_over: bool,
}

impl Reader {
    /// Opens the cache at `path`; a missing or foreign file reads as empty.
    pub fn open(path: &Path) -> Reader {
        let file = crate::files::open_regular(path, crate::files::Links::Refuse).ok();
        let mut lines = Lines::new(file.map(BufReader::new), MAX_LINE);
        if lines.next_line() != Some(HEADER.as_bytes()) {
            lines.reject();
        }
        Reader {
            lines,
            pending: None,
            last_id: String::new(),
            passed_over: false,
        }
    }

    fn next_entry(&mut self) -> Option<(Stamps, CertSummary)> {
        let line = self.lines.next_line()?;
        let entry = serde_json::from_slice::<Line>(line)
            .ok()
            .and_then(Line::into_summary);
        match entry {
            Some(e) if e.1.id > self.last_id => {
                self.last_id.clone_from(&e.1.id);
                Some(e)
            }
            _ => {
                // Damaged or out of order: nothing from here on is used.
                self.lines.reject();
                None
            }
        }
    }

    /// The cached summary of certificate directory `id`, if there is one. Ids must be asked
    /// for in increasing order; an entry passed over (its directory is gone) makes the cache
    /// stale.
    pub fn take(&mut self, id: &str) -> Option<(Stamps, CertSummary)> {
        loop {
            let entry = match self.pending.take() {
                Some(e) => e,
                None => self.next_entry()?,
            };
            match entry.1.id.as_str().cmp(id) {
                // Its directory is gone.
                std::cmp::Ordering::Less => self.passed_over = true,
                std::cmp::Ordering::Equal => return Some(entry),
                std::cmp::Ordering::Greater => {
                    self.pending = Some(entry);
                    return None;
                }
            }
        }
    }

    /// Whether the file should be rewritten: missing, damaged, or holding entries for
    /// directories that are gone.
    pub fn stale(&mut self) -> bool {
        let more = self.pending.is_some() || self.lines.next_line().is_some();
        more || self.passed_over || self.lines.damaged()
    }
}

/// Writes the file's contents for these certificates to `out`: the header, then one line for
/// each one whose stamps are settled at `written`, in id order. Streamed: with ten thousand
/// certificates the contents are megabytes.
pub fn write<'a>(
    entries: impl IntoIterator<Item = (&'a Stamps, &'a CertSummary)>,
    written: SystemTime,
    mut out: impl std::io::Write,
) -> std::io::Result<()> {
    let mut rows: Vec<_> = entries
        .into_iter()
        .filter(|(stamps, _)| stamps.settled(written))
        .collect();
    rows.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    out.write_all(HEADER.as_bytes())?;
    out.write_all(b"\n")?;
    for (stamps, s) in rows {
        let line = Line {
            id: Cow::Borrowed(&s.id),
            dir: stamps.dir,
            cert: stamps.cert,
            names: Cow::Borrowed(&s.names),
            not_before: s.not_before.unix_timestamp(),
            not_after: s.not_after.unix_timestamp(),
            key_id: Cow::Borrowed(&s.key_id),
            key_family: s.key_family,
            ari_id: s.ari_id.as_deref().map(Cow::Borrowed),
            revoked: s.revoked,
            profile: s.profile.as_deref().map(Cow::Borrowed),
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// The `live/` links (name → certificate id) recorded in the live-link cache at `path`, if
/// it was written when `live/` had the identity `live_dir` has now.
pub fn read_live(path: &Path, live_dir: Stamp) -> Option<BTreeMap<String, String>> {
    let data =
        crate::files::read_state_file(path, MAX_LIVE_FILE, crate::files::Links::Refuse).ok()?;
    let text = std::str::from_utf8(&data).ok()?;
    let mut lines = text.lines();
    if lines.next()? != LIVE_HEADER {
        return None;
    }
    if serde_json::from_str::<Stamp>(lines.next()?).ok()? != live_dir {
        return None;
    }
    let mut live = BTreeMap::new();
    for line in lines {
        let (name, id) = line.split_once('\t')?;
        let plausible = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\0'])
            && ids::is_well_formed_id(id);
        if !plausible {
            return None;
        }
        live.insert(name.to_owned(), id.to_owned());
    }
    Some(live)
}

/// The live-link cache's contents for `live` read under `live_dir`; `None` when that
/// identity is too recent to be trusted at `written` (see [`Stamp::settled`]).
pub fn render_live(
    live_dir: Stamp,
    live: &BTreeMap<String, String>,
    written: SystemTime,
) -> Option<Vec<u8>> {
    if !live_dir.settled(written) {
        return None;
    }
    let mut out = format!(
        "{LIVE_HEADER}\n{}\n",
        serde_json::to_string(&live_dir).ok()?
    );
    for (name, id) in live {
        if name.contains(['\t', '\n']) {
            return None;
        }
        out.push_str(name);
        out.push('\t');
        out.push_str(id);
        out.push('\n');
    }
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const ID_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const ID_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccc";
    const KEY: &str = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk";

    fn stamp(ino: u64, at: i64) -> Stamp {
        Stamp(ino, 100, at, 5, at, 7)
    }

    fn stamps(ino: u64) -> Stamps {
        Stamps {
            dir: stamp(ino, 1_000),
            cert: stamp(ino + 1, 1_000),
        }
    }

    fn summary(id: &str) -> CertSummary {
        CertSummary {
            id: id.to_owned(),
            names: vec!["example.com".to_owned(), "192.0.2.1".to_owned()],
            not_before: OffsetDateTime::from_unix_timestamp(1_000).expect("time"),
            not_after: OffsetDateTime::from_unix_timestamp(2_000_000).expect("time"),
            key_family: Some(KeyFamily::Ecdsa),
            has_private_key: true,
            key_id: KEY.to_owned(),
            revoked: id == ID_B,
            profile: Some("shortlived".to_owned()),
            ari_id: Some("aki.serial".to_owned()),
        }
    }

    fn render<'a>(
        entries: impl IntoIterator<Item = (&'a Stamps, &'a CertSummary)>,
        written: SystemTime,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        super::write(entries, written, &mut out).expect("writing to memory");
        out
    }

    fn written() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(10_000)
    }

    fn write(dir: &Path, data: &[u8]) -> std::path::PathBuf {
        let path = dir.join(SUMMARIES_FILE);
        std::fs::write(&path, data).expect("write");
        path
    }

    #[test]
    fn settled_only_well_before_writing() {
        let w = written();
        assert!(stamp(1, 9_997).settled(w));
        assert!(!stamp(1, 9_999).settled(w), "inside the racy window");
        assert!(!stamp(1, 20_000).settled(w), "a time in the future");
        assert!(!Stamp(1, 1, -5, 0, 1, 0).settled(w), "before the epoch");
        let mut mixed = stamp(1, 1_000);
        mixed.4 = 9_999;
        assert!(!mixed.settled(w), "the change time counts too");
    }

    #[test]
    fn a_file_time_at_the_end_of_time_is_not_settled_and_does_not_panic() {
        // btrfs stores any 64-bit time (`touch -d @9223372036854775807`); adding RACY to it
        // overflowed SystemTime, a panic on every run.
        let w = written();
        assert!(!Stamp(1, 1, i64::MAX, 999_999_999, 1, 0).settled(w));
        assert!(!Stamp(1, 1, 1, 0, i64::MAX, 0).settled(w));
        assert!(
            !Stamp(1, 1, 1, -1, 1, 0).settled(w),
            "a negative nanosecond count"
        );
    }

    #[test]
    fn round_trip_in_id_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sa, sb, sc) = (stamps(10), stamps(20), stamps(30));
        let (a, b, c) = (summary(ID_A), summary(ID_B), summary(ID_C));
        // Given out of order: written sorted.
        let path = write(
            dir.path(),
            &render([(&sc, &c), (&sa, &a), (&sb, &b)], written()),
        );
        let mut r = Reader::open(&path);
        let (got_stamps, got) = r.take(ID_A).expect("a cached");
        assert_eq!(got_stamps, sa);
        assert_eq!(got.names, a.names);
        assert_eq!(got.not_before, a.not_before);
        assert_eq!(got.not_after, a.not_after);
        assert_eq!(got.key_id, KEY);
        assert_eq!(got.key_family, Some(KeyFamily::Ecdsa));
        assert_eq!(got.profile.as_deref(), Some("shortlived"));
        assert_eq!(got.ari_id.as_deref(), Some("aki.serial"));
        assert!(!got.revoked);
        assert!(!got.has_private_key, "the key is looked up, not cached");
        assert!(r.take(ID_B).expect("b cached").1.revoked);
        assert!(r.take(ID_C).is_some());
        assert!(!r.stale(), "every entry was asked for");
    }

    #[test]
    fn unsettled_entries_are_not_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recent = Stamps {
            dir: stamp(10, 9_999),
            cert: stamp(11, 1_000),
        };
        let (a, b) = (summary(ID_A), summary(ID_B));
        let sb = stamps(20);
        let path = write(dir.path(), &render([(&recent, &a), (&sb, &b)], written()));
        let mut r = Reader::open(&path);
        assert!(r.take(ID_A).is_none());
        assert!(r.take(ID_B).is_some());
        assert!(!r.stale());
    }

    #[test]
    fn vanished_and_new_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sa, sc) = (stamps(10), stamps(30));
        let (a, c) = (summary(ID_A), summary(ID_C));
        let path = write(dir.path(), &render([(&sa, &a), (&sc, &c)], written()));
        // A is gone; B is new (not cached); C is still there.
        let mut r = Reader::open(&path);
        assert!(r.take(ID_B).is_none());
        assert!(
            r.take(ID_C).is_some(),
            "a skipped entry does not lose the next"
        );
        assert!(r.stale(), "the entry for the vanished directory must go");
        // Entries left unasked make it stale too.
        let mut r = Reader::open(&path);
        assert!(r.take(ID_A).is_some());
        assert!(r.stale());
    }

    #[test]
    fn damaged_foreign_or_missing_files_read_as_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sa, sb) = (stamps(10), stamps(20));
        let (a, b) = (summary(ID_A), summary(ID_B));
        let good = render([(&sa, &a), (&sb, &b)], written());
        let text = String::from_utf8(good.clone()).expect("utf-8");

        let mut r = Reader::open(&dir.path().join("missing"));
        assert!(r.take(ID_A).is_none());
        assert!(r.stale());

        let path = write(
            dir.path(),
            text.replace(HEADER, "acmekeep cert-summaries 0").as_bytes(),
        );
        let mut r = Reader::open(&path);
        assert!(r.take(ID_A).is_none(), "another format version");
        assert!(r.stale());

        // A damaged line: what precedes it is used, nothing after it.
        let lines: Vec<&str> = text.lines().collect();
        let damaged = format!("{}\n{}\n{{\"id\": 3\n{}\n", lines[0], lines[1], lines[2]);
        let path = write(dir.path(), damaged.as_bytes());
        let mut r = Reader::open(&path);
        assert!(r.take(ID_A).is_some());
        assert!(r.take(ID_B).is_none());
        assert!(r.stale());

        // Out of order: B then A.
        let swapped = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[1]);
        let path = write(dir.path(), swapped.as_bytes());
        let mut r = Reader::open(&path);
        assert!(r.take(ID_A).is_none());
        assert!(r.take(ID_B).is_some());
        assert!(r.stale(), "A came after B");

        // A last line cut short (no newline) is not used.
        let cut = &good[..good.len() - 10];
        let path = write(dir.path(), cut);
        let mut r = Reader::open(&path);
        assert!(r.take(ID_A).is_some());
        assert!(r.take(ID_B).is_none());
        assert!(r.stale());

        // Ids and key ids must be what acmekeep writes (never a path).
        let evil = text.replace(ID_A, "../../../../etc/passwd");
        let path = write(dir.path(), evil.as_bytes());
        let mut r = Reader::open(&path);
        assert!(r.take(ID_A).is_none());
        assert!(r.stale());

        // An overlong line stops the reader.
        let long = format!(
            "{HEADER}\n{}\n",
            lines[1].replace("example.com", &"x".repeat(MAX_LINE as usize))
        );
        let path = write(dir.path(), long.as_bytes());
        let mut r = Reader::open(&path);
        assert!(r.take(ID_A).is_none());
        assert!(r.stale());
    }

    #[test]
    fn lines_stop_at_a_line_too_long_cut_short_or_rejected() {
        let read = |text: &[u8], max: u64| {
            let mut lines = Lines::new(Some(text), max);
            let mut got = Vec::new();
            while let Some(l) = lines.next_line() {
                got.push(String::from_utf8(l.to_vec()).expect("utf-8"));
            }
            (got, lines.damaged())
        };
        assert_eq!(
            read(b"ab\ncd\n", 4),
            (vec!["ab".into(), "cd".into()], false)
        );
        assert_eq!(read(b"", 4), (vec![], false));
        // A line of exactly `max` bytes passes; one byte more stops the reading.
        assert_eq!(
            read(b"abcd\nx\n", 4),
            (vec!["abcd".into(), "x".into()], false)
        );
        assert_eq!(read(b"ab\nabcde\nx\n", 4), (vec!["ab".into()], true));
        // Cut short: the last line has no newline.
        assert_eq!(read(b"ab\ncd", 4), (vec!["ab".into()], true));
        // No file: nothing, and nothing damaged.
        let mut none = Lines::<&[u8]>::new(None, 4);
        assert!(none.next_line().is_none() && !none.damaged());
        // A line the caller rejects ends the reading.
        let mut lines = Lines::new(Some(&b"ab\ncd\n"[..]), 4);
        assert_eq!(lines.next_line(), Some(&b"ab"[..]));
        lines.reject();
        assert!(lines.next_line().is_none() && lines.damaged());
    }

    #[test]
    fn a_cache_cut_short_after_its_last_entry_is_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sa, sb) = (stamps(10), stamps(20));
        let (a, b) = (summary(ID_A), summary(ID_B));
        let mut text = render([(&sa, &a), (&sb, &b)], written());
        text.extend_from_slice(b"{\"id\": ");
        let path = write(dir.path(), &text);
        let mut r = Reader::open(&path);
        assert!(r.take(ID_A).is_some());
        assert!(r.take(ID_B).is_some());
        assert!(r.stale(), "the damaged tail is found by stale() itself");
    }

    #[test]
    fn stamps_follow_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert");
        std::fs::write(&cert, "one").expect("write");
        let before = Stamps::of(dir.path()).expect("stamps");
        assert_eq!(Stamps::of(dir.path()).expect("stamps"), before);
        // Rewritten in place (same inode): the size (and change time) differ.
        std::fs::write(&cert, "three").expect("write");
        let after = Stamps::of(dir.path()).expect("stamps");
        assert_eq!(after.dir.0, before.dir.0);
        assert_ne!(after.cert, before.cert);
        // A file added next to it changes the directory.
        std::fs::write(dir.path().join("revoked"), "").expect("write");
        assert_ne!(Stamps::of(dir.path()).expect("stamps").dir, after.dir);
        assert!(Stamps::of(&dir.path().join("nothing")).is_err());
    }

    #[test]
    fn live_links_round_trip_only_for_the_same_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(LIVE_FILE);
        let live: BTreeMap<String, String> = [
            ("example.com".to_owned(), ID_A.to_owned()),
            ("example.net:label".to_owned(), ID_B.to_owned()),
        ]
        .into();
        let s = stamp(5, 1_000);
        let data = render_live(s, &live, written()).expect("settled");
        std::fs::write(&path, &data).expect("write");
        assert_eq!(read_live(&path, s), Some(live.clone()));
        assert_eq!(read_live(&path, stamp(5, 1_001)), None, "live/ changed");
        assert_eq!(read_live(&path, stamp(6, 1_000)), None, "live/ replaced");
        assert!(render_live(stamp(5, 9_999), &live, written()).is_none());

        let text = String::from_utf8(data).expect("utf-8");
        for bad in [
            text.replace(ID_A, "../certs/x"),
            text.replace("example.com", "../../etc"),
            text.replace("example.com", ".hidden"),
            text.replace(LIVE_HEADER, "acmekeep live-links 0"),
            text.replace('\t', " "),
        ] {
            std::fs::write(&path, &bad).expect("write");
            assert_eq!(read_live(&path, s), None, "{bad}");
        }
    }
}
