//! acmetool's permission table (`conf/perm`, reference §2.3 and §7): which mode and owner
//! every file and directory in the state directory should have, and the "conform" pass that
//! brings an existing tree in line with it.
//!
//! A rule pairs a path glob, relative to the state directory (`.` is the root), with a file
//! mode, a directory mode and an optional owner. The rule for a path is the longest glob that
//! matches the path itself; if none does, its parent is tried, and so on up to `.`. Globs use
//! Go's `filepath.Match` syntax (`*` and `?` never match `/`), reimplemented here so that an
//! acmetool `conf/perm` means exactly what it meant before.
//!
//! We keep acmetool's format and lookup, and change it on purpose where it hurt users:
//! - A final line without a trailing newline is honoured; acmetool silently dropped it.
//! - A rule may name a single file (`conf/responses 0600 0700`). acmetool `mkdir -p`'d every
//!   non-wildcard glob, so such a rule made it fail with "not a directory" (#313).
//!   [`PermTable::dirs_to_create`] lists only the built-in directories; see there.
//! - With an owner of `root -`, the uid is enforced and the gid left alone. acmetool enforced
//!   nothing unless both were given.
//! - Only the permission bits (0777) are managed. acmetool dropped the fourth octal digit of a
//!   mode without saying so; we drop it with a warning, and conform leaves setuid, setgid and
//!   sticky bits as it finds them, so a `chmod g+s` on a shared directory survives.
//! - `. inherit` is an error (the root has nothing to inherit from), and so is a malformed
//!   glob; acmetool accepted both and then left paths without any rule.
//! - [`conform`] never deletes anything and never fails: broken or escaping symlinks and odd
//!   file types (acmetool deleted the former and aborted on the latter) are only reported.
//!
//! User and group names are resolved once, at parse time, through the system's user database
//! (getpwnam/getgrnam, as `chown` does: `/etc/passwd` and `/etc/group`, and LDAP, SSSD or
//! systemd-userdb where `/etc/nsswitch.conf` names them), so a lookup can take as long as the
//! directory service does; one that fails is a line error naming the cause, never "unknown".
//! `$r` is the running process's effective uid/gid.
//!
//! This module decides and applies modes; it does not write files (see [`crate::files`]).

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, Metadata, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::files::{Links, read_state_file};

/// Largest `conf/perm` we accept, in bytes.
pub const MAX_PERM_FILE: u64 = 64 * 1024;
/// Most lines `conf/perm` may have.
pub const MAX_PERM_LINES: usize = 1000;
/// The mode bits a rule manages; setuid, setgid and sticky are left as found.
const PERM_BITS: u32 = 0o777;
const SPECIAL_BITS: u32 = 0o7000;

/// acmetool's built-in table (glob, file mode, dir mode), in acmetool's order. `.` must stay
/// first: ties between globs of the same length go to the earlier rule.
const BUILTIN: [(&str, u32, u32); 9] = [
    (".", 0o644, 0o755),
    ("accounts", 0o600, 0o700),
    ("desired", 0o644, 0o755),
    ("live", 0o644, 0o755),
    ("certs", 0o644, 0o755),
    ("certs/*/haproxy", 0o600, 0o700),
    ("keys", 0o600, 0o700),
    ("conf", 0o644, 0o755),
    ("tmp", 0o600, 0o700),
];

/// The directories of the layout, parents first.
const BUILTIN_DIRS: [&str; 8] = [
    ".", "accounts", "desired", "live", "certs", "keys", "conf", "tmp",
];

/// Used only if no rule matches even `.`, which the table's invariants rule out.
const ROOT_FALLBACK: Rule = Rule {
    file_mode: 0o644,
    dir_mode: 0o755,
    uid: None,
    gid: None,
};

/// One rule: file mode, dir mode, optional owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Mode of regular files (permission bits only).
    pub file_mode: u32,
    /// Mode of directories (permission bits only).
    pub dir_mode: u32,
    /// Owner to enforce, if any.
    pub uid: Option<u32>,
    /// Group to enforce, if any.
    pub gid: Option<u32>,
}

impl Rule {
    /// The mode for a directory or for a file.
    pub fn mode_for(&self, is_dir: bool) -> u32 {
        if is_dir {
            self.dir_mode
        } else {
            self.file_mode
        }
    }
}

/// The effective permission table: the built-in rules with `conf/perm` applied.
#[derive(Clone, Debug)]
pub struct PermTable {
    /// (glob, rule); globs are cleaned, relative to the state dir, `.` for the root, valid
    /// `filepath.Match` patterns, and unique. `.` is always present.
    rules: Vec<(String, Rule)>,
}

/// Why `conf/perm` was refused. A malformed file is fatal, as in acmetool: guessing at an
/// owner or mode could expose a private key.
#[derive(Debug, thiserror::Error)]
pub enum PermError {
    /// One line is wrong.
    #[error("{file}:{line}: {problem}: {text:?}")]
    Line {
        /// The file, as named by the caller.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The offending line, trimmed.
        text: String,
        /// What is wrong with it.
        problem: LineProblem,
    },
    /// The file is larger than [`MAX_PERM_FILE`].
    #[error("{file} is larger than {MAX_PERM_FILE} bytes")]
    TooLarge {
        /// The file.
        file: String,
    },
    /// The file has more than [`MAX_PERM_LINES`] lines.
    #[error("{file} has more than {MAX_PERM_LINES} lines")]
    TooManyLines {
        /// The file.
        file: String,
    },
    /// The file exists but could not be read.
    #[error("reading {file}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        error: io::Error,
    },
    /// The file is not UTF-8.
    #[error("{file} is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        file: String,
    },
}

/// What is wrong with a `conf/perm` line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// Wrong number of fields, or `inherit` misplaced.
    #[error("expected `<path-glob> <file-mode> <dir-mode> [<uid> <gid>]` or `<path-glob> inherit`")]
    Format,
    /// A mode that is not 3 or 4 octal digits.
    #[error("{which} mode {value:?} is not 3 or 4 octal digits")]
    Mode {
        /// `file` or `dir`.
        which: &'static str,
        /// As written.
        value: String,
    },
    /// A uid without a gid.
    #[error("uid and gid come as a pair (write `-` for the one not to enforce)")]
    UnpairedOwner,
    /// An absolute path, or one that leaves the state directory once cleaned.
    #[error("path {0:?} must stay inside the state directory")]
    Escapes(String),
    /// Not a valid `filepath.Match` pattern.
    #[error("malformed glob {0:?}")]
    BadGlob(String),
    /// The same cleaned glob twice.
    #[error("duplicate path {glob:?} (first given on line {first_line})")]
    Duplicate {
        /// The cleaned glob.
        glob: String,
        /// Where it was first given.
        first_line: usize,
    },
    /// `. inherit`.
    #[error("the root `.` has nothing to inherit from; give it modes instead")]
    RootInherit,
    /// A user name the user database does not know.
    #[error("unknown user {0:?} (not in the user database; give the uid as a number)")]
    UnknownUser(String),
    /// A group name the group database does not know.
    #[error("unknown group {0:?} (not in the group database; give the gid as a number)")]
    UnknownGroup(String),
    /// The user or group database could not answer (a directory service down, say).
    #[error("cannot look up {what} {name:?}: {error}")]
    Lookup {
        /// `user` or `group`.
        what: &'static str,
        /// The name.
        name: String,
        /// Why.
        error: String,
    },
    /// A numeric id out of range.
    #[error("id {0:?} is out of range")]
    BadId(String),
    /// `$r`, but the running process's ids could not be found.
    #[error("cannot find the running process's uid/gid for `$r`: {0}")]
    RunningIds(String),
}

/// Resolves user and group names for `conf/perm`.
pub trait IdLookup {
    /// The uid of a user name; `None` when there is no such user.
    fn uid(&self, name: &str) -> io::Result<Option<u32>>;
    /// The gid of a group name; `None` when there is no such group.
    fn gid(&self, name: &str) -> io::Result<Option<u32>>;
    /// The running process's (uid, gid), for `$r`.
    fn running_ids(&self) -> io::Result<(u32, u32)> {
        Ok(running_process_ids())
    }
}

/// The running process's effective (uid, gid): the owner new files get.
pub fn running_process_ids() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

/// Name lookups in the system's user and group databases (NSS).
#[derive(Clone, Copy, Debug, Default)]
pub struct NssIds;

/// Whether `name` can be in a user or group database at all: passwd and group lines are
/// `:`-separated, and a C string ends at NUL. Others are not looked up (nothing to ask a
/// directory service about).
fn plausible_name(name: &str) -> bool {
    !name.is_empty() && !name.contains([':', '\n', '\0'])
}

impl IdLookup for NssIds {
    fn uid(&self, name: &str) -> io::Result<Option<u32>> {
        if !plausible_name(name) {
            return Ok(None);
        }
        let user = nix::unistd::User::from_name(name)?;
        Ok(user.map(|u| u.uid.as_raw()))
    }

    fn gid(&self, name: &str) -> io::Result<Option<u32>> {
        if !plausible_name(name) {
            return Ok(None);
        }
        let group = nix::unistd::Group::from_name(name)?;
        Ok(group.map(|g| g.gid.as_raw()))
    }
}

impl PermTable {
    /// acmetool's built-in table: `.` 0644/0755, accounts 0600/0700, desired 0644/0755,
    /// live 0644/0755, certs 0644/0755, certs/*/haproxy 0600/0700, keys 0600/0700,
    /// conf 0644/0755, tmp 0600/0700.
    pub fn builtin() -> PermTable {
        PermTable {
            rules: BUILTIN
                .iter()
                .map(|&(glob, file_mode, dir_mode)| {
                    let rule = Rule {
                        file_mode,
                        dir_mode,
                        uid: None,
                        gid: None,
                    };
                    (glob.to_owned(), rule)
                })
                .collect(),
        }
    }

    /// Reads `<state_dir>/conf/perm` (bounded) and applies it over the built-in table; a
    /// missing file gives the built-in table.
    pub fn load(state_dir: &Path, ids: &dyn IdLookup) -> Result<PermTable, PermError> {
        let path = state_dir.join("conf").join("perm");
        let file = path.display().to_string();
        let bytes = match read_state_file(&path, MAX_PERM_FILE, Links::Refuse) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PermTable::builtin()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(PermError::TooLarge { file });
            }
            Err(error) => return Err(PermError::Read { file, error }),
        };
        let text =
            String::from_utf8(bytes).map_err(|_| PermError::NotUtf8 { file: file.clone() })?;
        PermTable::parse(&text, &file, ids)
    }

    /// Parses `conf/perm` text over the built-in table. `source` names the file in errors.
    ///
    /// Syntax, one rule a line: `<path-glob> <filemode> <dirmode> [<uid> <gid>]` or
    /// `<path-glob> inherit`. Modes are 3–4 octal digits. The owner comes as a pair; each is
    /// a name, a number, `-` (not enforced) or `$r` (the running process). `#` lines and blank
    /// lines are ignored. Paths are cleaned like Go's `filepath.Clean` and must stay inside the
    /// state dir. A line replaces the built-in rule with the same glob or adds one; `inherit`
    /// deletes the rule for its glob, so the nearest ancestor's rule applies.
    pub fn parse(text: &str, source: &str, ids: &dyn IdLookup) -> Result<PermTable, PermError> {
        if text.len() as u64 > MAX_PERM_FILE {
            return Err(PermError::TooLarge {
                file: source.to_owned(),
            });
        }
        if text.lines().count() > MAX_PERM_LINES {
            return Err(PermError::TooManyLines {
                file: source.to_owned(),
            });
        }
        let mut table = PermTable::builtin();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut erase = Vec::new();
        let mut running = None;
        // split('\n') rather than a line reader: the last line counts even without a newline.
        for (index, raw) in text.split('\n').enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line_no = index + 1;
            let (glob, rule) =
                parse_line(line, &seen, ids, &mut running).map_err(|problem| PermError::Line {
                    file: source.to_owned(),
                    line: line_no,
                    text: line.to_owned(),
                    problem,
                })?;
            seen.insert(glob.clone(), line_no);
            let Some(mut rule) = rule else {
                erase.push(glob);
                continue;
            };
            for (which, mode) in [("file", &mut rule.file_mode), ("dir", &mut rule.dir_mode)] {
                if *mode & SPECIAL_BITS != 0 {
                    tracing::warn!(
                        "{source}:{line_no}: the setuid/setgid/sticky bits of {which} mode \
                         {:04o} are not managed (acmetool ignored them too); using {:04o}",
                        *mode,
                        *mode & PERM_BITS
                    );
                    *mode &= PERM_BITS;
                }
            }
            match table.rules.iter_mut().find(|(g, _)| *g == glob) {
                Some(existing) => existing.1 = rule,
                None => table.rules.push((glob, rule)),
            }
        }
        table.rules.retain(|(g, _)| !erase.contains(g));
        Ok(table)
    }

    /// The rule for a path relative to the state directory. Every glob is tried against the
    /// path itself and the longest matching glob wins (the first one on a tie); if none
    /// matches, the parent is tried, then its parent, up to `.`. The path is cleaned first;
    /// an absolute or escaping path gets the root's rule.
    pub fn rule_for(&self, rel: &Path) -> &Rule {
        let cleaned = clean(&rel.to_string_lossy());
        let mut path = if escapes(&cleaned) {
            "."
        } else {
            cleaned.as_str()
        };
        loop {
            let mut best: Option<&(String, Rule)> = None;
            for entry in &self.rules {
                // Globs were validated when the table was built, so an error cannot happen.
                if glob_match(&entry.0, path).unwrap_or(false)
                    && best.is_none_or(|b| entry.0.len() > b.0.len())
                {
                    best = Some(entry);
                }
            }
            if let Some((_, rule)) = best {
                return rule;
            }
            if path == "." {
                return &ROOT_FALLBACK;
            }
            path = path.rsplit_once('/').map_or(".", |(parent, _)| parent);
        }
    }

    /// The directories to create when the store is opened, parents first (`.` is the root).
    ///
    /// acmetool `mkdir -p`'d every glob without a `*`, so a rule naming a file
    /// (`conf/responses 0600 0700`, `keys/<id>/privkey ...`) created a directory in the file's
    /// place or failed (#313). A glob cannot say whether it names a file or a directory, so we
    /// treat a glob as a directory only if it is one of the built-in directory names (or
    /// already exists as a directory, which needs no mkdir): this is the layout's directories,
    /// `.`, `accounts`, `desired`, `live`, `certs`, `keys`, `conf`, `tmp`. They are listed even
    /// when `conf/perm` said `inherit` for them, because the store needs them; such a directory
    /// gets the dir mode of the rule it inherits ([`PermTable::rule_for`]). Directories of
    /// user rules are the user's to create.
    pub fn dirs_to_create(&self) -> Vec<PathBuf> {
        BUILTIN_DIRS.iter().map(PathBuf::from).collect()
    }

    /// The rules, in table order: (glob, rule).
    pub fn rules(&self) -> impl Iterator<Item = (&str, &Rule)> {
        self.rules.iter().map(|(g, r)| (g.as_str(), r))
    }
}

/// Parses one non-blank, non-comment line into its cleaned glob and its rule (`None` for
/// `inherit`). Modes are returned as written, special bits included.
fn parse_line(
    line: &str,
    seen: &HashMap<String, usize>,
    ids: &dyn IdLookup,
    running: &mut Option<(u32, u32)>,
) -> Result<(String, Option<Rule>), LineProblem> {
    // acmetool's regex separates fields by ASCII whitespace (RE2's \s).
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let inherit = match fields.as_slice() {
        [_, "inherit"] => true,
        [_, "inherit", ..] => return Err(LineProblem::Format),
        [_, _, _] | [_, _, _, _, _] => false,
        [_, _, _, _] => return Err(LineProblem::UnpairedOwner),
        _ => return Err(LineProblem::Format),
    };
    let written = fields[0];
    let glob = clean(written);
    if escapes(&glob) {
        return Err(LineProblem::Escapes(written.to_owned()));
    }
    if validate_glob(&glob).is_err() {
        return Err(LineProblem::BadGlob(written.to_owned()));
    }
    if let Some(&first_line) = seen.get(&glob) {
        return Err(LineProblem::Duplicate { glob, first_line });
    }
    if inherit {
        if glob == "." {
            return Err(LineProblem::RootInherit);
        }
        return Ok((glob, None));
    }
    let file_mode = parse_mode("file", fields[1])?;
    let dir_mode = parse_mode("dir", fields[2])?;
    let (uid, gid) = match fields.as_slice() {
        [_, _, _, u, g] => (
            parse_owner(u, Kind::User, ids, running)?,
            parse_owner(g, Kind::Group, ids, running)?,
        ),
        _ => (None, None),
    };
    Ok((
        glob,
        Some(Rule {
            file_mode,
            dir_mode,
            uid,
            gid,
        }),
    ))
}

fn parse_mode(which: &'static str, value: &str) -> Result<u32, LineProblem> {
    let bad = || LineProblem::Mode {
        which,
        value: value.to_owned(),
    };
    if !(3..=4).contains(&value.len()) || !value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    u32::from_str_radix(value, 8).map_err(|_| bad())
}

#[derive(Clone, Copy)]
enum Kind {
    User,
    Group,
}

/// One owner field: `-` is not enforced, `$r` is the running process, digits are an id,
/// anything else a name.
fn parse_owner(
    field: &str,
    kind: Kind,
    ids: &dyn IdLookup,
    running: &mut Option<(u32, u32)>,
) -> Result<Option<u32>, LineProblem> {
    match field {
        "-" => Ok(None),
        "$r" => {
            let (uid, gid) = match *running {
                Some(r) => r,
                None => {
                    let r = ids
                        .running_ids()
                        .map_err(|e| LineProblem::RunningIds(e.to_string()))?;
                    *running = Some(r);
                    r
                }
            };
            Ok(Some(match kind {
                Kind::User => uid,
                Kind::Group => gid,
            }))
        }
        _ if field.bytes().all(|b| b.is_ascii_digit()) => match field.parse::<u32>() {
            // u32::MAX is chown's "leave unchanged", never a real id.
            Ok(id) if id != u32::MAX => Ok(Some(id)),
            _ => Err(LineProblem::BadId(field.to_owned())),
        },
        _ => {
            let (found, what) = match kind {
                Kind::User => (ids.uid(field), "user"),
                Kind::Group => (ids.gid(field), "group"),
            };
            match found {
                Ok(Some(id)) => Ok(Some(id)),
                Ok(None) => Err(match kind {
                    Kind::User => LineProblem::UnknownUser(field.to_owned()),
                    Kind::Group => LineProblem::UnknownGroup(field.to_owned()),
                }),
                Err(e) => Err(LineProblem::Lookup {
                    what,
                    name: field.to_owned(),
                    error: e.to_string(),
                }),
            }
        }
    }
}

/// Go's `filepath.Clean` on Unix: drops empty and `.` elements, resolves `..` lexically,
/// and gives `.` for an empty result. Glob characters are ordinary characters here.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Whether a cleaned path is absolute or leaves the directory it is relative to.
fn escapes(cleaned: &str) -> bool {
    cleaned.starts_with('/') || cleaned == ".." || cleaned.starts_with("../")
}

/// A malformed glob (Go's `filepath.ErrBadPattern`).
#[derive(Debug, PartialEq, Eq)]
struct BadGlob;

/// Checks the whole pattern, as Go's `filepath.Match` does before it returns false.
fn validate_glob(mut pattern: &str) -> Result<(), BadGlob> {
    while !pattern.is_empty() {
        let (_, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        match_chunk(chunk, "")?;
    }
    Ok(())
}

/// Go's `path/filepath.Match` on Unix: `*` matches any run of non-`/` characters, `?` one
/// non-`/` character, `[...]` one character from a class (`^` negates, `a-z` ranges; as in
/// Go, a class may match `/`), `\` escapes. The whole name must match.
fn glob_match(mut pattern: &str, mut name: &str) -> Result<bool, BadGlob> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing * matches the rest unless it has a /.
            return Ok(!name.contains('/'));
        }
        // Match at the current position; the last chunk must use up the name.
        let (t, ok) = match_chunk(chunk, name)?;
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if star {
            // Let the star eat one more character at a time, but never a /.
            let mut skipped = name;
            while let Some(c) = skipped.chars().next().filter(|&c| c != '/') {
                skipped = &skipped[c.len_utf8()..];
                let (t, ok) = match_chunk(chunk, skipped)?;
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
            }
        }
        validate_glob(pattern)?;
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off the leading stars and the chunk up to the next star outside a class.
fn scan_chunk(pattern: &str) -> (bool, &str, &str) {
    let rest = pattern.trim_start_matches('*');
    let star = rest.len() != pattern.len();
    let bytes = rest.as_bytes();
    let mut in_range = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    // Only ever splits at an ASCII `*` or the end, so the index is a char boundary; a `\`
    // before a multi-byte character skips its first byte, and the rest are never ASCII.
    let (chunk, rest) = rest.split_at(i);
    (star, chunk, rest)
}

/// Matches a star-free chunk at the start of `s`; returns the rest of `s` and whether it
/// matched. The chunk is checked to its end even after a mismatch, so a malformed pattern
/// is always reported.
fn match_chunk<'a>(mut chunk: &str, mut s: &'a str) -> Result<(&'a str, bool), BadGlob> {
    let mut failed = false;
    while let Some(c) = chunk.chars().next() {
        let next = s.chars().next();
        if next.is_none() {
            failed = true;
        }
        match c {
            '[' => {
                let mut r = '\0';
                if let (false, Some(n)) = (failed, next) {
                    r = n;
                    s = &s[n.len_utf8()..];
                }
                chunk = &chunk[1..];
                let negated = chunk.starts_with('^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if ranges > 0 && chunk.starts_with(']') {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = class_char(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let Some(after_dash) = chunk.strip_prefix('-') {
                        let (h, rest) = class_char(after_dash)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if let (false, Some(n)) = (failed, next) {
                    if n == '/' {
                        failed = true;
                    }
                    s = &s[n.len_utf8()..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let literal = if c == '\\' {
                    chunk = &chunk[1..];
                    chunk.chars().next().ok_or(BadGlob)?
                } else {
                    c
                };
                if let (false, Some(n)) = (failed, next) {
                    if n != literal {
                        failed = true;
                    }
                    s = &s[n.len_utf8()..];
                }
                chunk = &chunk[literal.len_utf8()..];
            }
        }
    }
    Ok(if failed { ("", false) } else { (s, true) })
}

/// One (possibly escaped) character of a class; something must follow it (at least `]`).
fn class_char(chunk: &str) -> Result<(char, &str), BadGlob> {
    let chunk = match chunk.chars().next() {
        None | Some('-' | ']') => return Err(BadGlob),
        Some('\\') => &chunk[1..],
        Some(_) => chunk,
    };
    let c = chunk.chars().next().ok_or(BadGlob)?;
    let rest = &chunk[c.len_utf8()..];
    if rest.is_empty() {
        return Err(BadGlob);
    }
    Ok((c, rest))
}

/// What [`conform`] did and what it found.
#[derive(Debug, Default)]
pub struct ConformReport {
    /// Changes made.
    pub changes: Vec<Change>,
    /// Things it could not fix or will not touch; none of them stopped the walk.
    pub problems: Vec<Problem>,
}

impl ConformReport {
    /// Logs every change and problem as a warning (acmetool warned about each mode it fixed).
    pub fn log(&self) {
        for change in &self.changes {
            tracing::warn!("{change}");
        }
        for problem in &self.problems {
            tracing::warn!("{problem}");
        }
    }
}

/// A change made by [`conform`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The mode was changed (full mode bits, special bits kept).
    Mode {
        /// The path changed.
        path: PathBuf,
        /// Before.
        from: u32,
        /// After.
        to: u32,
    },
    /// The owner was changed.
    Owner {
        /// The path changed.
        path: PathBuf,
        /// (uid, gid) before.
        from: (u32, u32),
        /// (uid, gid) after.
        to: (u32, u32),
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Mode { path, from, to } => {
                write!(
                    f,
                    "{}: mode was {from:04o}, changed to {to:04o}",
                    path.display()
                )
            }
            Change::Owner { path, from, to } => write!(
                f,
                "{}: owner was {}:{}, changed to {}:{}",
                path.display(),
                from.0,
                from.1,
                to.0,
                to.1
            ),
        }
    }
}

/// Something [`conform`] met and left as it was.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct Problem {
    /// Where.
    pub path: PathBuf,
    /// What.
    pub kind: ProblemKind,
}

/// What kind of [`Problem`].
#[derive(Debug, thiserror::Error)]
pub enum ProblemKind {
    /// lstat, readlink or stat failed.
    #[error("cannot inspect: {0}")]
    Inspect(io::Error),
    /// A directory could not be listed; nothing below it was checked.
    #[error("cannot list, so nothing below it was checked: {0}")]
    List(io::Error),
    /// chmod failed.
    #[error("cannot change mode {from:04o} to {to:04o}: {error}")]
    Chmod {
        /// Current mode.
        from: u32,
        /// Wanted mode.
        to: u32,
        /// Why.
        error: io::Error,
    },
    /// lchown failed (normal when not running as root).
    #[error("cannot change owner {}:{} to {}:{}: {error}", from.0, from.1, to.0, to.1)]
    Chown {
        /// Current (uid, gid).
        from: (u32, u32),
        /// Wanted (uid, gid).
        to: (u32, u32),
        /// Why.
        error: io::Error,
    },
    /// A symlink whose target does not exist. acmetool deleted these; we leave them.
    #[error("broken symlink to {}; left in place", .0.display())]
    BrokenLink(PathBuf),
    /// A symlink with an absolute target (acmetool refused to open such a state dir).
    #[error("symlink has an absolute target {}", .0.display())]
    AbsoluteLink(PathBuf),
    /// A symlink that points outside the state directory.
    #[error("symlink points outside the state directory: {}", .0.display())]
    EscapingLink(PathBuf),
    /// A FIFO, socket or device (acmetool refused to open such a state dir).
    #[error("unexpected {0} in the state directory; left alone")]
    OddType(&'static str),
}

/// Brings existing files under `root` in line with `table` ("conform"). Directories get
/// their rule's dir mode and regular files its file mode, then the rule's owner if it sets
/// one (lchown). Names starting with `.` are skipped at every depth, with everything below
/// them. Symlinks are never followed: a link is only lchown'd, and reported if it is broken,
/// absolute or points outside `root`. Nothing is ever deleted and no error stops the walk;
/// everything is in the report. `root` itself may be a symlink (the caller chose it).
///
/// Only permission bits are compared and set; setuid, setgid and sticky bits are kept.
/// std has no fchmodat, so the mode is set by path after an lstat: someone who can rename
/// entries inside the state directory could race that, but by default only its owner can.
pub fn conform(root: &Path, table: &PermTable) -> ConformReport {
    let mut report = ConformReport::default();
    let meta = match fs::metadata(root) {
        Ok(meta) => meta,
        Err(e) => {
            report.problems.push(Problem {
                path: root.to_owned(),
                kind: ProblemKind::Inspect(e),
            });
            return report;
        }
    };
    // Depth-first, each directory before its entries (so a directory we cannot yet read is
    // fixed before it is listed), entries in name order for a stable report.
    let mut stack = vec![(root.to_owned(), PathBuf::from("."), meta)];
    while let Some((path, rel, meta)) = stack.pop() {
        let rule = table.rule_for(&rel);
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            check_link(&path, &rel, &mut report);
            set_owner(&path, &meta, rule, false, &mut report);
            continue;
        }
        if !file_type.is_dir() && !file_type.is_file() {
            let kind = odd_type_name(&meta);
            report.problems.push(Problem {
                path,
                kind: ProblemKind::OddType(kind),
            });
            continue;
        }
        set_mode(&path, &meta, rule.mode_for(file_type.is_dir()), &mut report);
        // Only the root may be a link (to the real state dir), and its owner is the dir's.
        let is_root = rel == Path::new(".");
        set_owner(&path, &meta, rule, is_root, &mut report);
        if file_type.is_dir() {
            let mut children = list_dir(&path, &rel, &mut report);
            children.reverse();
            stack.extend(children);
        }
    }
    report
}

/// The visible entries of a directory with their lstat metadata, sorted by name.
fn list_dir(
    dir: &Path,
    rel: &Path,
    report: &mut ConformReport,
) -> Vec<(PathBuf, PathBuf, Metadata)> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            report.problems.push(Problem {
                path: dir.to_owned(),
                kind: ProblemKind::List(e),
            });
            return Vec::new();
        }
    };
    let mut children = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                report.problems.push(Problem {
                    path: dir.to_owned(),
                    kind: ProblemKind::List(e),
                });
                break;
            }
        };
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        let child_rel = if rel == Path::new(".") {
            PathBuf::from(&name)
        } else {
            rel.join(&name)
        };
        match fs::symlink_metadata(&path) {
            Ok(meta) => children.push((path, child_rel, meta)),
            // Removed while we looked: nothing to conform.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => report.problems.push(Problem {
                path,
                kind: ProblemKind::Inspect(e),
            }),
        }
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    children
}

fn set_mode(path: &Path, meta: &Metadata, want: u32, report: &mut ConformReport) {
    let current = meta.mode() & (SPECIAL_BITS | PERM_BITS);
    if current & PERM_BITS == want {
        return;
    }
    let to = (current & SPECIAL_BITS) | want;
    match fs::set_permissions(path, Permissions::from_mode(to)) {
        Ok(()) => report.changes.push(Change::Mode {
            path: path.to_owned(),
            from: current,
            to,
        }),
        Err(error) => report.problems.push(Problem {
            path: path.to_owned(),
            kind: ProblemKind::Chmod {
                from: current,
                to,
                error,
            },
        }),
    }
}

/// chowns `path` to the rule's owner where it differs; `follow` only for the root.
fn set_owner(path: &Path, meta: &Metadata, rule: &Rule, follow: bool, report: &mut ConformReport) {
    let from = (meta.uid(), meta.gid());
    let uid = rule.uid.filter(|&u| u != from.0);
    let gid = rule.gid.filter(|&g| g != from.1);
    if uid.is_none() && gid.is_none() {
        return;
    }
    let to = (uid.unwrap_or(from.0), gid.unwrap_or(from.1));
    let changed = if follow {
        std::os::unix::fs::chown(path, uid, gid)
    } else {
        std::os::unix::fs::lchown(path, uid, gid)
    };
    match changed {
        Ok(()) => report.changes.push(Change::Owner {
            path: path.to_owned(),
            from,
            to,
        }),
        Err(error) => report.problems.push(Problem {
            path: path.to_owned(),
            kind: ProblemKind::Chown { from, to, error },
        }),
    }
}

/// Reports a symlink that is absolute, points outside the state directory (judged
/// lexically, as acmetool did) or is broken.
fn check_link(path: &Path, rel: &Path, report: &mut ConformReport) {
    let mut problem = |kind| {
        report.problems.push(Problem {
            path: path.to_owned(),
            kind,
        });
    };
    let target = match fs::read_link(path) {
        Ok(target) => target,
        Err(e) => return problem(ProblemKind::Inspect(e)),
    };
    if target.is_absolute() {
        return problem(ProblemKind::AbsoluteLink(target));
    }
    let from_root = rel.parent().unwrap_or(Path::new("")).join(&target);
    if escapes(&clean(&from_root.to_string_lossy())) {
        return problem(ProblemKind::EscapingLink(target));
    }
    match fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => problem(ProblemKind::BrokenLink(target)),
        Err(e) => problem(ProblemKind::Inspect(e)),
    }
}

fn odd_type_name(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "file type"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const ID: &str = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst";

    /// Names resolve from a fixed list; `$r` is 1000:1001.
    struct FakeIds;

    impl IdLookup for FakeIds {
        fn uid(&self, name: &str) -> io::Result<Option<u32>> {
            Ok(match name {
                "root" => Some(0),
                "acme" => Some(990),
                _ => None,
            })
        }
        fn gid(&self, name: &str) -> io::Result<Option<u32>> {
            Ok(match name {
                "root" => Some(0),
                "ssl-cert" => Some(111),
                _ => None,
            })
        }
        fn running_ids(&self) -> io::Result<(u32, u32)> {
            Ok((1000, 1001))
        }
    }

    fn parse(text: &str) -> PermTable {
        PermTable::parse(text, "conf/perm", &FakeIds).expect("parses")
    }

    fn parse_err(text: &str) -> (PermError, LineProblem, usize) {
        let err = PermTable::parse(text, "/state/conf/perm", &FakeIds).expect_err("must fail");
        match &err {
            PermError::Line { problem, line, .. } => {
                let (problem, line) = (problem.clone(), *line);
                (err, problem, line)
            }
            other => panic!("not a line error: {other}"),
        }
    }

    fn modes(table: &PermTable, rel: &str) -> (u32, u32) {
        let rule = table.rule_for(Path::new(rel));
        (rule.file_mode, rule.dir_mode)
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("lstat").mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn builtin_rules_for_each_dir_and_nested_paths() {
        let t = PermTable::builtin();
        let privkey = format!("keys/{ID}/privkey");
        let haproxy = format!("certs/{ID}/haproxy");
        let cert = format!("certs/{ID}/cert");
        let table: &[(&str, (u32, u32))] = &[
            (".", (0o644, 0o755)),
            ("", (0o644, 0o755)),
            ("accounts", (0o600, 0o700)),
            (
                "accounts/https%3a%2f%2fca%2fdir/kid/privkey",
                (0o600, 0o700),
            ),
            ("desired", (0o644, 0o755)),
            ("desired/example.com", (0o644, 0o755)),
            ("live", (0o644, 0o755)),
            ("live/x", (0o644, 0o755)),
            ("certs", (0o644, 0o755)),
            (&cert, (0o644, 0o755)),
            // Straight from the glob, not from `certs`.
            (&haproxy, (0o600, 0o700)),
            ("keys", (0o600, 0o700)),
            // keys/<id>/privkey, then keys/<id>, then keys.
            (&privkey, (0o600, 0o700)),
            ("conf", (0o644, 0o755)),
            ("conf/target", (0o644, 0o755)),
            ("tmp", (0o600, 0o700)),
            ("tmp/tmp.1.2.3", (0o600, 0o700)),
            ("haproxy/example.com", (0o644, 0o755)),
            ("unknown", (0o644, 0o755)),
            // Cleaned before lookup.
            ("./keys//x/", (0o600, 0o700)),
            ("conf/../keys/x", (0o600, 0o700)),
            // Outside the state dir: the root's rule.
            ("../keys/x", (0o644, 0o755)),
            ("/keys/x", (0o644, 0o755)),
        ];
        for &(rel, want) in table {
            assert_eq!(modes(&t, rel), want, "{rel:?}");
        }
        assert!(t.rules().all(|(_, r)| r.uid.is_none() && r.gid.is_none()));
        assert_eq!(t.rules().count(), 9);
        for (glob, _) in t.rules() {
            assert_eq!(validate_glob(glob), Ok(()), "{glob}");
        }
    }

    #[test]
    fn longest_glob_wins_and_ties_go_to_the_first() {
        let t = parse("*/x 0611 0711\nkeys/x 0622 0722\n?/b 0633 0733\na/? 0644 0744\n");
        assert_eq!(modes(&t, "keys/x"), (0o622, 0o722));
        assert_eq!(modes(&t, "conf/x"), (0o611, 0o711));
        assert_eq!(modes(&t, "a/b"), (0o633, 0o733));
        // `certs/*/haproxy` (15) is longer than `*/*/haproxy` (11).
        let t = parse("*/*/haproxy 0640 0750\n");
        assert_eq!(modes(&t, &format!("certs/{ID}/haproxy")), (0o600, 0o700));
        assert_eq!(modes(&t, &format!("keys/{ID}/haproxy")), (0o640, 0o750));
    }

    #[test]
    fn parent_fallback_walks_up_to_the_root() {
        let t = parse("keys/* 0640 0750\n");
        // keys/<id>/privkey: no glob matches it, keys/<id> matches keys/*.
        assert_eq!(modes(&t, &format!("keys/{ID}/privkey")), (0o640, 0o750));
        assert_eq!(modes(&t, &format!("keys/{ID}/a/b/c")), (0o640, 0o750));
        assert_eq!(modes(&t, "keys"), (0o600, 0o700));
        assert_eq!(modes(&t, "somewhere/deep/down"), (0o644, 0o755));
    }

    #[test]
    fn glob_match_follows_go_filepath_match() {
        // Go's own TestMatch table (path/filepath, Unix), plus a few of ours.
        let ok: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("[\\-x]", "-", true),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
            // As in Go, a class may match the separator.
            ("a[/]b", "a/b", true),
            (".", ".", true),
            ("*", ".", true),
            ("certs/*/haproxy", "certs/x/haproxy", true),
            ("certs/*/haproxy", "certs/x/y/haproxy", false),
            ("certs/*/haproxy", "certs/x/haproxy/z", false),
        ];
        for &(pattern, name, want) in ok {
            assert_eq!(glob_match(pattern, name), Ok(want), "{pattern:?} {name:?}");
            assert_eq!(validate_glob(pattern), Ok(()), "{pattern:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("[]a]", "]"),
            ("[-]", "-"),
            ("[x-]", "x"),
            ("[x-]", "-"),
            ("[x-]", "z"),
            ("[-x]", "x"),
            ("[-x]", "-"),
            ("[-x]", "a"),
            ("\\", "a"),
            ("[a-b-c]", "a"),
            ("[", "a"),
            ("[^", "a"),
            ("[^bc", "a"),
            ("a[", "a"),
            ("a[", "ab"),
            ("a[", "x"),
            ("a/b[", "x"),
            ("*x[", "xxx"),
        ];
        for &(pattern, name) in bad {
            assert_eq!(
                glob_match(pattern, name),
                Err(BadGlob),
                "{pattern:?} {name:?}"
            );
            assert_eq!(validate_glob(pattern), Err(BadGlob), "{pattern:?}");
        }
    }

    #[test]
    fn clean_matches_go_filepath_clean() {
        let table: &[(&str, &str)] = &[
            ("", "."),
            (".", "."),
            ("./", "."),
            ("keys/", "keys"),
            ("./keys", "keys"),
            ("keys//*/privkey", "keys/*/privkey"),
            ("keys/./x", "keys/x"),
            ("keys/../conf", "conf"),
            ("keys/..", "."),
            ("..", ".."),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/", "/"),
            ("/../a", "/a"),
            ("//a//b/", "/a/b"),
        ];
        for &(input, want) in table {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }

    #[test]
    fn parse_errors_name_the_file_line_and_text() {
        let cases: &[(&str, usize, LineProblem)] = &[
            (
                "# c\n\nkeys 0948 0700\n",
                3,
                LineProblem::Mode {
                    which: "file",
                    value: "0948".into(),
                },
            ),
            (
                "keys 0600 07000\n",
                1,
                LineProblem::Mode {
                    which: "dir",
                    value: "07000".into(),
                },
            ),
            (
                "keys 600 0x7\n",
                1,
                LineProblem::Mode {
                    which: "dir",
                    value: "0x7".into(),
                },
            ),
            (
                "conf 0644 0755\nkeys 0600 0700 root\n",
                2,
                LineProblem::UnpairedOwner,
            ),
            ("keys\n", 1, LineProblem::Format),
            ("keys 0600\n", 1, LineProblem::Format),
            ("keys inherit now\n", 1, LineProblem::Format),
            ("keys 0600 0700 root root extra\n", 1, LineProblem::Format),
            (
                "../etc 0600 0700\n",
                1,
                LineProblem::Escapes("../etc".into()),
            ),
            (
                "keys/../../x 0600 0700\n",
                1,
                LineProblem::Escapes("keys/../../x".into()),
            ),
            ("/etc 0600 0700\n", 1, LineProblem::Escapes("/etc".into())),
            (
                "keys/[ 0600 0700\n",
                1,
                LineProblem::BadGlob("keys/[".into()),
            ),
            (
                "keys 0600 0700\nconf 0644 0755\n./keys/ 0640 0750\n",
                3,
                LineProblem::Duplicate {
                    glob: "keys".into(),
                    first_line: 1,
                },
            ),
            (
                "keys inherit\nkeys 0600 0700\n",
                2,
                LineProblem::Duplicate {
                    glob: "keys".into(),
                    first_line: 1,
                },
            ),
            (". inherit\n", 1, LineProblem::RootInherit),
            ("./ inherit\n", 1, LineProblem::RootInherit),
            (
                "keys 0600 0700 nobody-here root\n",
                1,
                LineProblem::UnknownUser("nobody-here".into()),
            ),
            (
                "keys 0600 0700 root wheel\n",
                1,
                LineProblem::UnknownGroup("wheel".into()),
            ),
            // Not a user or group: acmetool has no inline comments either.
            (
                "keys 0600 0700 # comment\n",
                1,
                LineProblem::UnknownUser("#".into()),
            ),
            (
                "keys 0600 0700 4294967295 0\n",
                1,
                LineProblem::BadId("4294967295".into()),
            ),
            (
                "keys 0600 0700 0 99999999999\n",
                1,
                LineProblem::BadId("99999999999".into()),
            ),
            // The last line counts even without a newline, errors included.
            (
                "conf 0644 0755\nkeys 0999 0700",
                2,
                LineProblem::Mode {
                    which: "file",
                    value: "0999".into(),
                },
            ),
        ];
        for (text, want_line, want_problem) in cases {
            let (err, problem, line) = parse_err(text);
            assert_eq!(&problem, want_problem, "{text:?}");
            assert_eq!(line, *want_line, "{text:?}");
            let msg = err.to_string();
            let offending = text.split('\n').nth(line - 1).expect("line").trim();
            assert!(
                msg.starts_with(&format!("/state/conf/perm:{line}: ")),
                "{msg}"
            );
            assert!(msg.contains(&format!("{offending:?}")), "{msg}");
        }
    }

    #[test]
    fn oversized_input_is_refused() {
        let big = "# x\n".repeat(MAX_PERM_FILE as usize / 4 + 1);
        assert!(matches!(
            PermTable::parse(&big, "p", &FakeIds),
            Err(PermError::TooLarge { .. })
        ));
        let many = "\n".repeat(MAX_PERM_LINES + 1);
        assert!(matches!(
            PermTable::parse(&many, "p", &FakeIds),
            Err(PermError::TooManyLines { .. })
        ));
        // Exactly at the limit, newline-terminated: fine.
        let at_limit = "# x\n".repeat(MAX_PERM_LINES);
        PermTable::parse(&at_limit, "p", &FakeIds).expect("at the limit");
    }

    #[test]
    fn lines_replace_add_and_inherit_remove_rules() {
        let t = parse(
            "  # comment\n\
             \n\
             keys 0640 0750 - -\n\
             certs/*/haproxy inherit\n\
             \tconf/extra   0600\t0700  \n",
        );
        assert_eq!(modes(&t, &format!("keys/{ID}/privkey")), (0o640, 0o750));
        // With its rule gone, haproxy files fall back to `certs`.
        assert_eq!(modes(&t, &format!("certs/{ID}/haproxy")), (0o644, 0o755));
        assert_eq!(modes(&t, "conf/extra/x"), (0o600, 0o700));
        let globs: Vec<&str> = t.rules().map(|(g, _)| g).collect();
        // Replaced in place, added at the end.
        assert_eq!(
            globs,
            [
                ".",
                "accounts",
                "desired",
                "live",
                "certs",
                "keys",
                "conf",
                "tmp",
                "conf/extra"
            ]
        );
        // `inherit` of a built-in directory: the root's rule applies, the dir is still made.
        let t = parse("keys inherit\n");
        assert_eq!(modes(&t, &format!("keys/{ID}/privkey")), (0o644, 0o755));
        assert!(t.dirs_to_create().contains(&PathBuf::from("keys")));
        // `inherit` of something that has no rule is harmless.
        let t = parse("nothing/here inherit\n");
        assert_eq!(t.rules().count(), 9);
        // The root rule can be replaced.
        let t = parse(". 0640 0750\n");
        assert_eq!(modes(&t, "other"), (0o640, 0o750));
    }

    #[test]
    fn final_line_without_newline_is_honoured() {
        // acmetool dropped this line.
        let t = parse("conf 0644 0755\nkeys 0640 0750 - -");
        assert_eq!(modes(&t, &format!("keys/{ID}/privkey")), (0o640, 0o750));
        let t = parse("keys 0640 0750");
        assert_eq!(modes(&t, "keys"), (0o640, 0o750));
        // CRLF files too.
        let t = parse("conf 0600 0700\r\nkeys 0640 0750\r\n");
        assert_eq!(modes(&t, "keys/x"), (0o640, 0o750));
        assert_eq!(modes(&t, "conf/x"), (0o600, 0o700));
    }

    #[test]
    fn owners_by_name_number_running_and_dash() {
        let t = parse(
            "keys 0640 0750 root ssl-cert\n\
             accounts 0600 0700 acme -\n\
             conf 0644 0755 - ssl-cert\n\
             live 0644 0755 $r $r\n\
             desired 0644 0755 42 43\n\
             certs 0644 0755 - -\n",
        );
        let owner = |rel: &str| {
            let r = t.rule_for(Path::new(rel));
            (r.uid, r.gid)
        };
        assert_eq!(owner("keys/x/privkey"), (Some(0), Some(111)));
        assert_eq!(owner("accounts"), (Some(990), None));
        assert_eq!(owner("conf/target"), (None, Some(111)));
        assert_eq!(owner("live/x"), (Some(1000), Some(1001)));
        assert_eq!(owner("desired/x"), (Some(42), Some(43)));
        assert_eq!(owner("certs/x/cert"), (None, None));
        assert_eq!(owner("tmp"), (None, None));
    }

    #[test]
    fn running_ids_failure_is_a_line_error() {
        struct NoProc;
        impl IdLookup for NoProc {
            fn uid(&self, _: &str) -> io::Result<Option<u32>> {
                Ok(None)
            }
            fn gid(&self, _: &str) -> io::Result<Option<u32>> {
                Ok(None)
            }
            fn running_ids(&self) -> io::Result<(u32, u32)> {
                Err(io::Error::new(io::ErrorKind::NotFound, "no /proc"))
            }
        }
        let err = PermTable::parse("# x\nkeys 0600 0700 $r 0\n", "p", &NoProc).expect_err("fails");
        assert!(matches!(
            err,
            PermError::Line {
                line: 2,
                problem: LineProblem::RunningIds(_),
                ..
            }
        ));
        // Not asked for, not looked up.
        PermTable::parse("keys 0600 0700 0 0\n", "p", &NoProc).expect("numbers need no lookup");
    }

    #[test]
    fn special_mode_bits_are_dropped() {
        let t = parse("keys 0600 2750\nconf 4644 0755\n");
        assert_eq!(modes(&t, "keys"), (0o600, 0o750));
        assert_eq!(modes(&t, "conf"), (0o644, 0o755));
        let t = parse("keys 600 750\n");
        assert_eq!(modes(&t, "keys"), (0o600, 0o750));
    }

    #[test]
    fn single_file_rule_applies_to_that_file_only_and_is_not_created() {
        let privkey = format!("keys/{ID}/privkey");
        let t = parse(&format!(
            "conf/responses 0600 0700\n{privkey} 0640 0750 root ssl-cert\n"
        ));
        assert_eq!(modes(&t, "conf/responses"), (0o600, 0o700));
        assert_eq!(modes(&t, "conf/target"), (0o644, 0o755));
        let key_rule = t.rule_for(Path::new(&privkey));
        assert_eq!(
            (key_rule.file_mode, key_rule.uid, key_rule.gid),
            (0o640, Some(0), Some(111))
        );
        let other = t.rule_for(Path::new("keys/other/privkey"));
        assert_eq!((other.file_mode, other.uid), (0o600, None));
        // The key's directory keeps the `keys` rule.
        assert_eq!(modes(&t, &format!("keys/{ID}")), (0o600, 0o700));
        let dirs = t.dirs_to_create();
        let want: Vec<PathBuf> = BUILTIN_DIRS.iter().map(PathBuf::from).collect();
        assert_eq!(dirs, want);
        assert!(!dirs.contains(&PathBuf::from("conf/responses")));
        assert!(!dirs.contains(&PathBuf::from(&privkey)));
    }

    #[test]
    fn nss_resolves_root_and_its_group() {
        // root is uid 0 and group root gid 0 on every system this runs on.
        assert_eq!(NssIds.uid("root").expect("lookup"), Some(0));
        assert_eq!(NssIds.gid("root").expect("lookup"), Some(0));
        assert_eq!(NssIds.uid("acmekeep-no-such-user").expect("lookup"), None);
        assert_eq!(NssIds.gid("acmekeep-no-such-group").expect("lookup"), None);
        // Names no database can hold are not looked up.
        for name in ["", "root:x", "ro\0ot", "root\n"] {
            assert_eq!(NssIds.uid(name).expect("no lookup"), None, "{name:?}");
            assert_eq!(NssIds.gid(name).expect("no lookup"), None, "{name:?}");
        }
        let t = PermTable::parse("keys 0640 0750 root root\n", "p", &NssIds).expect("parses");
        let r = t.rule_for(Path::new("keys"));
        assert_eq!((r.uid, r.gid), (Some(0), Some(0)));
    }

    #[test]
    fn a_failing_user_database_is_a_line_error_naming_the_cause() {
        // Before, an unreadable /etc/passwd was a warning and then "unknown user".
        struct DirectoryDown;
        impl IdLookup for DirectoryDown {
            fn uid(&self, _: &str) -> io::Result<Option<u32>> {
                Err(io::Error::from_raw_os_error(nix::libc::EHOSTUNREACH))
            }
            fn gid(&self, _: &str) -> io::Result<Option<u32>> {
                Ok(Some(111))
            }
        }
        let err = PermTable::parse(
            "# x\nkeys 0600 0700 www ssl-cert\n",
            "conf/perm",
            &DirectoryDown,
        )
        .expect_err("fails");
        let PermError::Line {
            line: 2,
            problem: LineProblem::Lookup { what, name, error },
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!((*what, name.as_str()), ("user", "www"));
        assert!(error.contains("No route to host"), "{error}");
        let msg = err.to_string();
        assert!(msg.contains("cannot look up user \"www\""), "{msg}");
    }

    #[test]
    fn running_process_ids_own_new_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (uid, gid) = running_process_ids();
        let file = dir.path().join("f");
        fs::write(&file, b"").expect("write");
        let meta = fs::metadata(&file).expect("stat");
        assert_eq!(meta.uid(), uid);
        // A setgid directory would give its own group: tempdir's is not setgid.
        assert_eq!(meta.gid(), gid);
        assert_eq!(NssIds.running_ids().expect("ids"), (uid, gid));
    }

    #[test]
    fn load_reads_conf_perm_or_defaults_to_builtin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = PermTable::load(dir.path(), &FakeIds).expect("no file");
        assert_eq!(t.rules().count(), 9);
        fs::create_dir(dir.path().join("conf")).expect("mkdir");
        let perm = dir.path().join("conf/perm");
        fs::write(&perm, "keys 0640 0750 - ssl-cert").expect("write");
        let t = PermTable::load(dir.path(), &FakeIds).expect("loads");
        assert_eq!(t.rule_for(Path::new("keys")).gid, Some(111));
        fs::write(&perm, "keys 0640 0750\nkeys 0600 0700\n").expect("write");
        let msg = PermTable::load(dir.path(), &FakeIds)
            .expect_err("duplicate")
            .to_string();
        assert!(
            msg.starts_with(&format!("{}:2: duplicate", perm.display())),
            "{msg}"
        );
        fs::write(&perm, vec![b'#'; MAX_PERM_FILE as usize + 1]).expect("write");
        assert!(matches!(
            PermTable::load(dir.path(), &FakeIds),
            Err(PermError::TooLarge { .. })
        ));
        fs::write(&perm, b"keys 0600 0700 \xff \xff\n").expect("write");
        assert!(matches!(
            PermTable::load(dir.path(), &FakeIds),
            Err(PermError::NotUtf8 { .. })
        ));
    }

    /// A small state dir with wrong modes everywhere.
    fn messy_state() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("state");
        for d in ["keys", "certs", "live", "conf", "tmp", ".acmekeep"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        fs::create_dir(root.join("keys").join(ID)).expect("mkdir");
        fs::create_dir(root.join("certs").join(ID)).expect("mkdir");
        let files = [
            (format!("keys/{ID}/privkey"), 0o644),
            (format!("certs/{ID}/cert"), 0o600),
            (format!("certs/{ID}/haproxy"), 0o644),
            ("conf/target".to_owned(), 0o666),
            ("conf/responses".to_owned(), 0o644),
            (".acmekeep/record".to_owned(), 0o666),
            (".lock".to_owned(), 0o666),
            ("keys/.hidden".to_owned(), 0o666),
        ];
        for (rel, mode) in &files {
            let p = root.join(rel);
            fs::write(&p, b"x").expect("write");
            chmod(&p, *mode);
        }
        for (d, mode) in [
            (".".to_owned(), 0o700),
            ("keys".to_owned(), 0o755),
            (format!("keys/{ID}"), 0o777),
            (format!("certs/{ID}"), 0o700),
            (".acmekeep".to_owned(), 0o777),
        ] {
            chmod(&root.join(d), mode);
        }
        symlink(format!("../certs/{ID}"), root.join("live/example.com")).expect("symlink");
        symlink(
            format!("../../keys/{ID}/privkey"),
            root.join("certs").join(ID).join("privkey"),
        )
        .expect("symlink");
        (dir, root)
    }

    #[test]
    fn conform_fixes_modes_and_skips_dotfiles() {
        let (_dir, root) = messy_state();
        let link_before = fs::symlink_metadata(root.join("live/example.com")).expect("lstat");
        let report = conform(&root, &PermTable::builtin());
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let want: &[(String, u32)] = &[
            (".".into(), 0o755),
            ("keys".into(), 0o700),
            (format!("keys/{ID}"), 0o700),
            (format!("keys/{ID}/privkey"), 0o600),
            (format!("certs/{ID}"), 0o755),
            (format!("certs/{ID}/cert"), 0o644),
            (format!("certs/{ID}/haproxy"), 0o600),
            ("conf/target".into(), 0o644),
            ("conf/responses".into(), 0o644),
            // Hidden: untouched.
            (".acmekeep".into(), 0o777),
            (".acmekeep/record".into(), 0o666),
            (".lock".into(), 0o666),
            ("keys/.hidden".into(), 0o666),
        ];
        for (rel, mode) in want {
            assert_eq!(mode_of(&root.join(rel)), *mode, "{rel}");
        }
        // The link itself was not touched (same inode, same ctime) and still resolves.
        let link_after = fs::symlink_metadata(root.join("live/example.com")).expect("lstat");
        assert_eq!(link_before.ino(), link_after.ino());
        assert_eq!(link_before.ctime_nsec(), link_after.ctime_nsec());
        assert!(root.join("live/example.com/cert").is_file());
        // Changes are reported in walk order, parents first.
        let changed: Vec<PathBuf> = report
            .changes
            .iter()
            .map(|c| match c {
                Change::Mode { path, .. } | Change::Owner { path, .. } => path.clone(),
            })
            .collect();
        let rel = |p: &str| root.join(p);
        assert_eq!(
            changed,
            [
                root.clone(),
                rel(&format!("certs/{ID}")),
                rel(&format!("certs/{ID}/cert")),
                rel(&format!("certs/{ID}/haproxy")),
                rel("conf/target"),
                rel("keys"),
                rel(&format!("keys/{ID}")),
                rel(&format!("keys/{ID}/privkey")),
                rel("tmp"),
            ]
        );
        assert!(matches!(
            &report.changes[7],
            Change::Mode {
                from: 0o644,
                to: 0o600,
                ..
            }
        ));
        let line = report.changes[7].to_string();
        assert!(
            line.ends_with("privkey: mode was 0644, changed to 0600"),
            "{line}"
        );
        // A second pass finds nothing to do.
        let again = conform(&root, &PermTable::builtin());
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        assert!(again.problems.is_empty(), "{:?}", again.problems);
    }

    #[test]
    fn conform_makes_keys_group_readable_when_asked() {
        let (_dir, root) = messy_state();
        let t = parse("keys 0640 0750 - -\nconf/responses 0600 0700\n");
        let report = conform(&root, &t);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(mode_of(&root.join("keys")), 0o750);
        assert_eq!(mode_of(&root.join("keys").join(ID)), 0o750);
        assert_eq!(mode_of(&root.join(format!("keys/{ID}/privkey"))), 0o640);
        // The single-file rule: the file got it, and it is still a file.
        assert_eq!(mode_of(&root.join("conf/responses")), 0o600);
        assert!(root.join("conf/responses").is_file());
        assert_eq!(mode_of(&root.join("conf/target")), 0o644);
    }

    #[test]
    fn conform_never_deletes_and_reports_odd_entries() {
        let (_dir, root) = messy_state();
        let broken = root.join("live/gone.example");
        symlink(format!("../certs/{}", "z".repeat(52)), &broken).expect("symlink");
        let absolute = root.join("live/abs.example");
        symlink("/etc/passwd", &absolute).expect("symlink");
        let escaping = root.join("conf/escape");
        symlink("../../outside", &escaping).expect("symlink");
        let socket = root.join("tmp/sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let outside = root.parent().expect("parent").join("outside");
        fs::write(&outside, b"x").expect("write");
        chmod(&outside, 0o666);
        // A symlinked directory is not descended into.
        let linked_dir = root.parent().expect("parent").join("elsewhere");
        fs::create_dir(&linked_dir).expect("mkdir");
        fs::write(linked_dir.join("f"), b"x").expect("write");
        chmod(&linked_dir.join("f"), 0o666);
        symlink(&linked_dir, root.join("keys/linked")).expect("symlink");

        let report = conform(&root, &PermTable::builtin());
        for p in [
            &broken,
            &absolute,
            &escaping,
            &socket,
            &root.join("keys/linked"),
        ] {
            assert!(
                fs::symlink_metadata(p).is_ok(),
                "{} was deleted",
                p.display()
            );
        }
        assert_eq!(mode_of(&outside), 0o666);
        assert_eq!(mode_of(&linked_dir.join("f")), 0o666);
        let kinds: Vec<String> = report
            .problems
            .iter()
            .map(|p| match &p.kind {
                ProblemKind::BrokenLink(_) => format!("broken {}", p.path.display()),
                ProblemKind::AbsoluteLink(_) => format!("absolute {}", p.path.display()),
                ProblemKind::EscapingLink(_) => format!("escaping {}", p.path.display()),
                ProblemKind::OddType(t) => format!("{t} {}", p.path.display()),
                other => format!("unexpected {other}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                format!("escaping {}", escaping.display()),
                format!("absolute {}", root.join("keys/linked").display()),
                format!("absolute {}", absolute.display()),
                format!("broken {}", broken.display()),
                format!("socket {}", socket.display()),
            ]
        );
        let msg = report.problems[3].to_string();
        assert!(
            msg.contains("broken symlink") && msg.contains("left in place"),
            "{msg}"
        );
    }

    #[test]
    fn conform_keeps_special_bits_and_enforces_owner() {
        let (_dir, root) = messy_state();
        let keys = root.join("keys");
        chmod(&keys, 0o2755);
        let me = fs::metadata(&keys).expect("stat");
        // Owner equal to the current one: nothing to do.
        let t = PermTable::parse(
            &format!("keys 0600 0700 {} {}\n", me.uid(), me.gid()),
            "p",
            &FakeIds,
        )
        .expect("parses");
        let report = conform(&root, &t);
        assert_eq!(mode_of(&keys), 0o2700);
        assert!(
            !report
                .changes
                .iter()
                .any(|c| matches!(c, Change::Owner { .. }))
        );

        // Another group: root can change it, others get a problem; neither stops the walk.
        let other_gid = me.gid() + 4242;
        let t = PermTable::parse(&format!("keys 0640 0750 - {other_gid}\n"), "p", &FakeIds)
            .expect("parses");
        let report = conform(&root, &t);
        let privkey = root.join(format!("keys/{ID}/privkey"));
        assert_eq!(mode_of(&privkey), 0o640);
        let owner_changes = report
            .changes
            .iter()
            .filter(|c| matches!(c, Change::Owner { .. }))
            .count();
        let chown_problems = report
            .problems
            .iter()
            .filter(|p| matches!(p.kind, ProblemKind::Chown { .. }))
            .count();
        // keys, keys/<id>, keys/<id>/privkey (hidden files are skipped).
        assert_eq!(owner_changes + chown_problems, 3, "{report:?}");
        if owner_changes == 3 {
            assert_eq!(fs::metadata(&privkey).expect("stat").gid(), other_gid);
            assert_eq!(fs::metadata(&privkey).expect("stat").uid(), me.uid());
            assert_eq!(
                fs::symlink_metadata(root.join("keys/.hidden"))
                    .expect("stat")
                    .gid(),
                me.gid()
            );
        }
    }

    #[test]
    fn conform_follows_a_symlinked_root() {
        let (dir, root) = messy_state();
        let link = dir.path().join("acme");
        symlink(&root, &link).expect("symlink");
        let report = conform(&link, &PermTable::builtin());
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(mode_of(&root), 0o755);
        assert_eq!(mode_of(&root.join(format!("keys/{ID}/privkey"))), 0o600);
        assert!(fs::symlink_metadata(&link).expect("lstat").is_symlink());
    }

    #[test]
    fn conform_on_a_missing_root_reports_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = conform(&dir.path().join("missing"), &PermTable::builtin());
        assert!(report.changes.is_empty());
        assert!(matches!(
            report.problems[..],
            [Problem {
                kind: ProblemKind::Inspect(_),
                ..
            }]
        ));
    }
}
