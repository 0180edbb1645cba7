//! Finding the renewal jobs already on a machine, which state directory each one serves, and
//! whether ours is still exactly as quickstart wrote it. Only looks; nothing here writes.
//!
//! Looked at (every path under the [`Root`]):
//! - every file in `/etc/cron.d` and the line table `/etc/crontab`: job lines whose command
//!   names acmekeep or acmetool (a line naming both runs acmekeep, say with
//!   `--state=/srv/acmetool`); a file named after either with no such line is reported too;
//! - files named after either in the run-parts directories (`/etc/cron.daily`, ...);
//! - timers named after either enabled in `timers.target.wants`, and our own
//!   `/etc/systemd/system/acmekeep.timer` even when disabled;
//! - job lines of the user's crontab, when the caller has it (`crontab -l`).
//!
//! Backups that cron skips too (see `cron_skips`) are not jobs. acmetool also searches
//! `/var/spool/cron`; we do not, because the only crontab there that can reconcile the same
//! (root-owned) state directory is root's, and root's is the crontab we are given when root
//! runs quickstart.
//!
//! A job serves the directory its `--state` flag names (the last one, as kingpin and clap take
//! it), else `ACME_STATE_DIR` set in its command, its cron table or its unit's environment,
//! else acmetool's default `/var/lib/acme`. A value that only a shell could work out (`$HOME`,
//! `~`, a relative path) makes it [`Serves::Unknown`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{
    ETC_DIR, JOB_NAME, Job, LEGACY_DAILY_TIMER_TEMPLATES, LEGACY_SERVICE_TEMPLATES, cron_d_text,
    crontab_text, render, service_unit,
};
use crate::settings::DEFAULT_STATE_DIR;
use crate::system::Root;
use crate::system::units::{SERVICE_TEMPLATE, TIMER_TEMPLATE, TIMERS_WANTS_DIR, UNIT_DIR};

/// Largest cron file, script or unit we read; larger ones are not ours and are not read.
const MAX_FILE: u64 = 256 * 1024;
/// Where systemd looks for units, most important first (systemd.unit(5), system units).
const UNIT_PATH: &[&str] = &[
    "etc/systemd/system",
    "run/systemd/system",
    "usr/local/lib/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
];

/// Which program a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// acmekeep.
    Acmekeep,
    /// acmetool.
    Acmetool,
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tool::Acmekeep => "acmekeep",
            Tool::Acmetool => "acmetool",
        })
    }
}

/// The state directory a job reconciles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serves {
    /// This directory.
    Dir(PathBuf),
    /// It cannot be told without running a shell (or the job's command could not be read).
    Unknown,
}

impl Serves {
    /// Whether this is `dir` (compared after resolving links, when both exist).
    pub fn is(&self, dir: &Path) -> bool {
        match self {
            Serves::Dir(d) => same_dir(d, dir),
            Serves::Unknown => false,
        }
    }
}

impl fmt::Display for Serves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Serves::Dir(d) => write!(f, "{}", d.display()),
            Serves::Unknown => f.write_str("a state directory that cannot be told"),
        }
    }
}

/// Whether two state directory paths name the same directory.
pub fn same_dir(a: &Path, b: &Path) -> bool {
    let lexical = |p: &Path| p.components().collect::<PathBuf>();
    if lexical(a) == lexical(b) {
        return true;
    }
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A line of a crontab-format file: one in /etc/cron.d, or /etc/crontab.
    Table(PathBuf),
    /// A script run-parts runs from /etc/cron.daily and the like.
    Script(PathBuf),
    /// A line of the crontab of the user running quickstart.
    Crontab,
    /// A timer unit. `link` is its enablement link in timers.target.wants (none: disabled),
    /// `unit` the file that defines it.
    Timer {
        name: String,
        link: Option<PathBuf>,
        unit: Option<PathBuf>,
    },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Table(path) | Place::Script(path) => write!(f, "{}", path.display()),
            Place::Crontab => f.write_str("your crontab"),
            Place::Timer {
                name,
                unit: Some(unit),
                ..
            } => write!(f, "{name} ({})", unit.display()),
            Place::Timer { name, .. } => f.write_str(name),
        }
    }
}

/// A unit file of ours as quickstart wrote it, with what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsWritten {
    /// The job it was written for (for a timer, only the time counts).
    pub job: Job,
    /// Written by an earlier version that ran the job once a day.
    pub daily: bool,
    /// Written from a template that is not the current one.
    pub old: bool,
}

/// Whether a job of ours is still as quickstart wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Not ours, or changed since.
    No,
    /// /etc/cron.d/acmekeep as a whole, or one crontab line.
    Cron(AsWritten),
    /// Our units in /etc/systemd/system, each as written (`Some`) or changed (`None`).
    Units {
        timer: Option<AsWritten>,
        service: Option<AsWritten>,
    },
}

/// A scheduled job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// What it runs.
    pub tool: Tool,
    /// Where it is.
    pub place: Place,
    /// The job line, for tables and crontabs.
    pub line: Option<String>,
    /// The state directory it reconciles.
    pub serves: Serves,
    /// For ours: whether it is as quickstart wrote it.
    pub written: Written,
    /// Whether it visibly runs only once a day (a cron line with one hour, or `@daily`).
    pub once_a_day: bool,
    /// Whether its command runs the tool and nothing else (always so for timers).
    pub plain: bool,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}'s job in {}", self.tool, self.place)
    }
}

/// Every acmekeep and acmetool job under `root`, and in `crontab` (the text of `crontab -l`)
/// when given: cron files first (sorted), then timers, then the crontab.
pub fn survey(root: &Root, crontab: Option<&str>) -> Vec<Found> {
    let mut found = Vec::new();
    for dir in cron_dirs(root) {
        let is_table = dir.file_name().is_some_and(|n| n == "cron.d");
        for path in list(&dir) {
            let name = file_name(&path);
            if cron_skips(&name) || !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let named = tool_in(&name);
            if is_table {
                found.extend(table_file(&path, named));
            } else if let Some(tool) = named {
                found.push(script(&path, tool));
            }
        }
    }
    let etc_crontab = root.join("etc/crontab");
    if let Some(text) = read_text(&etc_crontab) {
        found.extend(table_jobs(&text, true, |line| {
            Place::Table(etc_crontab.clone()).at(line)
        }));
    }
    found.extend(timers(root));
    if let Some(text) = crontab {
        found.extend(table_jobs(text, false, |line| Place::Crontab.at(line)));
        for f in found.iter_mut().filter(|f| f.place == Place::Crontab) {
            if f.tool == Tool::Acmekeep
                && let Some(line) = &f.line
                && let Some(w) = crontab_as_written(line)
            {
                f.written = Written::Cron(w);
            }
        }
    }
    found
}

impl Place {
    /// A job here running `tool` on `serves`, not (yet) known to be as written.
    fn at(self, line: TableLine) -> Found {
        Found {
            tool: line.tool,
            place: self,
            line: Some(line.text),
            serves: line.serves,
            written: Written::No,
            once_a_day: line.once_a_day,
            plain: line.plain,
        }
    }
}

/// The `/etc/cron.*` directories, sorted.
fn cron_dirs(root: &Root) -> Vec<PathBuf> {
    list(&root.join(ETC_DIR))
        .into_iter()
        .filter(|d| file_name(d).starts_with("cron.") && d.is_dir())
        .collect()
}

/// The entries of `dir`, sorted. An unreadable directory has none: this is a best-effort
/// search, as acmetool's is.
fn list(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            paths.sort();
            paths
        }
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!("cannot list {}: {e}", dir.display());
            }
            Vec::new()
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The tool a name or a command mentions; acmekeep wins when both are named.
fn tool_in(text: &str) -> Option<Tool> {
    if text.contains("acmekeep") {
        Some(Tool::Acmekeep)
    } else if text.contains("acmetool") {
        Some(Tool::Acmetool)
    } else {
        None
    }
}

/// Programs that run the command that follows them (with their own options first), so that
/// `nice -n 10 acmetool ...` and `sh -c 'acmetool ...'` are seen to run acmetool.
const WRAPPERS: &[&str] = &[
    "env",
    "exec",
    "nice",
    "ionice",
    "nohup",
    "chronic",
    "cronic",
    "sudo",
    "doas",
    "runuser",
    "setpriv",
    "timeout",
    "flock",
    "systemd-cat",
    "time",
    "command",
    "sh",
    "bash",
    "dash",
];

/// The tool a command runs, and whether the command is nothing but that tool (one simple
/// command whose program is the tool: the only kind quickstart removes). A tool counts only
/// where a program goes: first in a simple command (after `NAME=value` assignments), or after
/// one of the [`WRAPPERS`]; so neither `acmetool --state=/srv/acmekeep-old` nor
/// `backup --to /srv/acmetool` is decided by a path in its arguments.
fn command_tool(command: &str) -> Option<(Tool, bool)> {
    let simple = split_commands(command);
    let alone = simple.len() == 1;
    simple.into_iter().find_map(|c| {
        let words = shlex::split(c)?;
        let mut words = words
            .iter()
            .skip_while(|w| w.contains('=') && !w.starts_with('-'));
        let program = words.next()?;
        let base = program.rsplit('/').next().unwrap_or(program);
        if let Some(tool) = tool_in(base) {
            return Some((tool, alone));
        }
        if !WRAPPERS.contains(&base) {
            return None;
        }
        words.find_map(|w| {
            if w.contains(char::is_whitespace) {
                command_tool(w).map(|(tool, _)| (tool, false))
            } else {
                let base = w.rsplit('/').next().unwrap_or(w);
                tool_in(base)
                    .filter(|_| !w.starts_with('-'))
                    .map(|t| (t, false))
            }
        })
    })
}

/// The simple commands of a command line: split at `;`, `|`, `||`, `&`, `&&` outside quotes
/// (a `&` of a redirection such as `2>&1` or `&>` does not split).
fn split_commands(command: &str) -> Vec<&str> {
    let bytes = command.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    let (mut single, mut double, mut escaped) = (false, false, false);
    while i < bytes.len() {
        let c = bytes[i];
        if escaped {
            escaped = false;
        } else if c == b'\\' && !single {
            escaped = true;
        } else if c == b'\'' && !double {
            single = !single;
        } else if c == b'"' && !single {
            double = !double;
        } else if !single && !double && matches!(c, b';' | b'|' | b'&') {
            let redirection = c == b'&'
                && (i > 0 && matches!(bytes[i - 1], b'>' | b'<')
                    || bytes.get(i + 1) == Some(&b'>'));
            if !redirection {
                out.push(&command[start..i]);
                while i + 1 < bytes.len() && matches!(bytes[i + 1], b';' | b'|' | b'&') {
                    i += 1;
                }
                start = i + 1;
            }
        }
        i += 1;
    }
    out.push(&command[start..]);
    out.into_iter().filter(|c| !c.trim().is_empty()).collect()
}

/// Names that Debian's cron (in /etc/cron.d) and run-parts (in /etc/cron.daily and the like)
/// skip: any with a character other than letters, digits, `_` and `-`, so hidden files and
/// the backups editors, package managers and administrators leave (`acmetool.dpkg-old`,
/// `acmekeep~`, `acmekeep.bak`). Counting `/etc/cron.d/acmetool.dpkg-old` as a job would block
/// replacement forever, and `/etc/cron.d/acmekeep.bak` as acmekeep's job would leave renewal
/// unscheduled.
pub(super) fn cron_skips(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A file's text, if it is a readable UTF-8 file of a sane size.
fn read_text(path: &Path) -> Option<String> {
    match crate::files::read_bounded(path, MAX_FILE) {
        Ok(bytes) => String::from_utf8(bytes).ok(),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!("cannot read {}: {e}", path.display());
            }
            None
        }
    }
}

/// The jobs of a file in /etc/cron.d. Our own file, as quickstart wrote it, is one job; a file
/// named after a tool that has no job line of it is reported with an unknown directory, so
/// that it is at least named.
fn table_file(path: &Path, named: Option<Tool>) -> Vec<Found> {
    let Some(text) = read_text(path) else {
        return named
            .map(|tool| unreadable(tool, Place::Table(path.to_owned())))
            .into_iter()
            .collect();
    };
    if file_name(path).starts_with(JOB_NAME)
        && let Some(w) = cron_d_as_written(&text)
    {
        return vec![Found {
            tool: Tool::Acmekeep,
            place: Place::Table(path.to_owned()),
            line: text.lines().last().map(str::to_owned),
            serves: Serves::Dir(PathBuf::from(w.job.serves())),
            once_a_day: w.daily,
            written: Written::Cron(w),
            plain: true,
        }];
    }
    let jobs = table_jobs(&text, true, |line| Place::Table(path.to_owned()).at(line));
    match named {
        Some(tool) if jobs.is_empty() => vec![unreadable(tool, Place::Table(path.to_owned()))],
        _ => jobs,
    }
}

/// A job whose command could not be read.
fn unreadable(tool: Tool, place: Place) -> Found {
    Found {
        tool,
        place,
        line: None,
        serves: Serves::Unknown,
        written: Written::No,
        once_a_day: false,
        plain: false,
    }
}

/// A run-parts script: whatever state directory its lines that run the tool name.
fn script(path: &Path, tool: Tool) -> Found {
    let serves = read_text(path).map_or(Serves::Unknown, |text| {
        let mut env = None;
        let mut serves = None;
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            let assignment = line.strip_prefix("export ").unwrap_or(line);
            if let Some(value) = assignment.strip_prefix("ACME_STATE_DIR=") {
                env = shlex::split(value).and_then(|w| w.into_iter().next());
            } else if command_tool(line).is_some() {
                let this = command_serves(line, env.as_deref());
                if serves.as_ref().is_some_and(|s| *s != this) {
                    return Serves::Unknown;
                }
                serves = Some(this);
            }
        }
        serves.unwrap_or(Serves::Unknown)
    });
    Found {
        tool,
        place: Place::Script(path.to_owned()),
        line: None,
        serves,
        written: Written::No,
        once_a_day: false,
        plain: false,
    }
}

/// One job line of a cron table.
#[derive(Debug)]
struct TableLine {
    text: String,
    tool: Tool,
    /// The command runs the tool and nothing else.
    plain: bool,
    serves: Serves,
    once_a_day: bool,
}

/// The acmekeep and acmetool job lines of a cron table (crontab(5)); `system` tables have a
/// user field. `ACME_STATE_DIR` set on an earlier line applies, as cron puts it in the
/// environment of every later job.
fn table_jobs(text: &str, system: bool, place: impl Fn(TableLine) -> Found) -> Vec<Found> {
    let mut env: Option<String> = None;
    let mut out = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !is_job_line(line) {
            if let Some((name, value)) = env_setting(line)
                && name == "ACME_STATE_DIR"
            {
                env = Some(value);
            }
            continue;
        }
        let Some((schedule, command)) = split_job(line, system) else {
            continue;
        };
        let command = strip_percent(command);
        let Some((tool, plain)) = command_tool(command) else {
            continue;
        };
        out.push(place(TableLine {
            text: raw.to_owned(),
            tool,
            plain,
            serves: command_serves(command, env.as_deref()),
            once_a_day: is_daily(&schedule),
        }));
    }
    out
}

/// A crontab line that runs something: not blank, not a comment, not a `NAME=value` setting. Job
/// lines start with a time field (a digit, `*`) or an `@` nickname, optionally after Debian's `-`
/// (no syslog) prefix.
pub(super) fn is_job_line(line: &str) -> bool {
    let line = line.trim_start();
    let line = line.strip_prefix('-').unwrap_or(line);
    line.starts_with(|c: char| c.is_ascii_digit() || c == '*' || c == '@')
}

/// `NAME = value` (cron(5)): the value without surrounding whitespace or matching quotes.
fn env_setting(line: &str) -> Option<(&str, String)> {
    let (name, value) = line.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let value = value.trim();
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|&q| value.strip_prefix(q)?.strip_suffix(q))
        .unwrap_or(value);
    Some((name, unquoted.to_owned()))
}

/// The schedule fields and the command of a job line (after the user field of a system table).
fn split_job(line: &str, system: bool) -> Option<(Vec<&str>, &str)> {
    let line = line.strip_prefix('-').unwrap_or(line);
    let fields = if line.starts_with('@') { 1 } else { 5 } + usize::from(system);
    let mut rest = line;
    let mut schedule = Vec::new();
    for _ in 0..fields {
        rest = rest.trim_start();
        let end = rest.find([' ', '\t'])?;
        schedule.push(&rest[..end]);
        rest = &rest[end..];
    }
    if system {
        schedule.pop();
    }
    Some((schedule, rest.trim()))
}

/// The command without what cron feeds it on stdin: everything after the first `%` that is
/// not escaped with `\`.
fn strip_percent(command: &str) -> &str {
    let mut escaped = false;
    for (i, c) in command.char_indices() {
        match c {
            '%' if !escaped => return &command[..i],
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
    }
    command
}

/// Whether a schedule runs once a day: `@daily`/`@midnight`, or one minute and one hour every
/// day.
fn is_daily(schedule: &[&str]) -> bool {
    match schedule {
        [nick] => matches!(*nick, "@daily" | "@midnight"),
        [minute, hour, "*", "*", "*"] => {
            let single = |f: &str| f.parse::<u8>().is_ok();
            single(minute) && single(hour)
        }
        _ => false,
    }
}

/// The state directory a command runs on, given `ACME_STATE_DIR` from its surroundings.
/// `sh -c '...'` and similar: words that are themselves commands are looked into.
fn command_serves(command: &str, env: Option<&str>) -> Serves {
    let Some(words) = shlex::split(command) else {
        return Serves::Unknown;
    };
    let mut words: Vec<String> = words
        .into_iter()
        .flat_map(|w| {
            if w.contains(char::is_whitespace) && command_tool(&w).is_some() {
                shlex::split(&w).unwrap_or_else(|| vec![w])
            } else {
                vec![w]
            }
        })
        .collect();
    let mut flag = None;
    let mut inline_env = None;
    let mut iter = words.drain(..);
    while let Some(word) = iter.next() {
        if let Some(dir) = word.strip_prefix("--state=") {
            flag = Some(dir.to_owned());
        } else if word == "--state" {
            flag = iter.next();
        } else if let Some(dir) = word.strip_prefix("ACME_STATE_DIR=") {
            inline_env = Some(dir.to_owned());
        }
    }
    let chosen = flag.or(inline_env).or(env.map(str::to_owned));
    dir_value(chosen.as_deref())
}

/// A state directory value as acmekeep or acmetool would take it; empty or absent means the
/// default.
fn dir_value(value: Option<&str>) -> Serves {
    match value {
        None | Some("") => Serves::Dir(PathBuf::from(DEFAULT_STATE_DIR)),
        Some(v) if v.starts_with('/') && !v.contains('$') && !v.contains('`') => {
            Serves::Dir(PathBuf::from(v))
        }
        Some(_) => Serves::Unknown,
    }
}

/// `/etc/cron.d/acmekeep` recognised as quickstart writes it now or wrote it before.
fn cron_d_as_written(text: &str) -> Option<AsWritten> {
    let line = text.lines().last()?;
    let (schedule, command) = split_job(line, true)?;
    cron_as_written(&schedule, command, |job, daily| {
        cron_d_text(job, daily) == text
    })
}

/// A crontab line recognised as quickstart writes it now or wrote it before.
fn crontab_as_written(line: &str) -> Option<AsWritten> {
    let (schedule, command) = split_job(line, false)?;
    cron_as_written(&schedule, command, |job, daily| {
        crontab_text(job, daily) == line
    })
}

/// The job of a cron schedule and command, if `matches` confirms that quickstart renders it
/// into exactly the text it came from.
fn cron_as_written(
    schedule: &[&str],
    command: &str,
    matches: impl Fn(&Job, bool) -> bool,
) -> Option<AsWritten> {
    let [minute, hours, "*", "*", "*"] = schedule else {
        return None;
    };
    let minute: u8 = minute.parse().ok()?;
    let (hour, daily) = match hours.split_once(',') {
        Some((a, _)) => (a.parse().ok()?, false),
        None => (hours.parse().ok()?, true),
    };
    let job = Job::from_command_line(command, minute, hour)?;
    matches(&job, daily).then_some(AsWritten {
        job,
        daily,
        old: daily,
    })
}

/// Our timer `acmekeep.timer` recognised as quickstart writes it now or wrote it before.
fn timer_as_written(text: &str) -> Option<AsWritten> {
    let calendar = ini_values(text, "Timer", "OnCalendar").pop()?;
    let time = calendar.strip_prefix("*-*-* ")?.strip_suffix(":00")?;
    let (hours, minute) = time.split_once(':')?;
    let minute: u8 = minute.parse().ok()?;
    let (hour, daily) = match hours.split_once(',') {
        Some((a, _)) => (a.parse().ok()?, false),
        None => (hours.parse().ok()?, true),
    };
    let job = Job::new(minute, hour, Path::new("/"), None, &[]).ok()?;
    let templates: &[&str] = if daily {
        LEGACY_DAILY_TIMER_TEMPLATES
    } else {
        &[TIMER_TEMPLATE]
    };
    templates.iter().find_map(|template| {
        let hours = super::timer_hours(&job);
        (render(template, &[("HOURS", &hours)], &job) == text).then(|| AsWritten {
            job: job.clone(),
            daily,
            old: daily,
        })
    })
}

/// Our `acmekeep.service` recognised as quickstart writes it now or wrote it before.
fn service_as_written(text: &str) -> Option<AsWritten> {
    let command = ini_values(text, "Service", "ExecStart").pop()?;
    let paths = ini_values(text, "Service", "ReadWritePaths").pop()?;
    let job = Job::from_command_line(&command, 0, 0)?;
    let webroots: Vec<PathBuf> = shlex::split(&paths)?
        .into_iter()
        .skip(2)
        .map(|p| PathBuf::from(p.strip_prefix('-').unwrap_or(&p)))
        .collect();
    let job = job.with_webroots(&webroots).ok()?;
    let current = std::iter::once((SERVICE_TEMPLATE, false));
    let legacy = LEGACY_SERVICE_TEMPLATES.iter().map(|t| (*t, true));
    current.chain(legacy).find_map(|(template, old)| {
        (service_unit(template, &job) == text).then(|| AsWritten {
            job: job.clone(),
            daily: false,
            old,
        })
    })
}

/// The values of `key` in `[section]` of a unit file, in order, with continuation lines
/// joined. (An empty value, which resets a list in systemd, is kept as an empty string.)
fn ini_values(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut logical = String::new();
    for raw in text.lines() {
        if let Some(stripped) = raw.strip_suffix('\\') {
            logical.push_str(stripped);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical);
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        if current == section
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            out.push(v.trim().to_owned());
        }
    }
    out
}

/// The enabled timers named after either tool, and our own timer in /etc/systemd/system even
/// when it is not enabled (an administrator who disabled it has decided).
fn timers(root: &Root) -> Vec<Found> {
    let wants = root.join(TIMERS_WANTS_DIR);
    let mut names: BTreeMap<String, Option<PathBuf>> = BTreeMap::new();
    for link in list(&wants) {
        let name = file_name(&link);
        if name.ends_with(".timer") && tool_in(&name).is_some() {
            names.insert(name, Some(link));
        }
    }
    // Ours in /etc/systemd/system, enabled or not.
    for unit in list(&root.join(UNIT_DIR)) {
        let name = file_name(&unit);
        if name.starts_with(JOB_NAME) && name.ends_with(".timer") && unit.is_file() {
            names.entry(name).or_insert(None);
        }
    }
    names
        .into_iter()
        .filter_map(|(name, link)| {
            let tool = tool_in(&name)?;
            let unit = unit_file(root, &name);
            let timer_text = unit.as_deref().and_then(read_text);
            let service = timer_text
                .as_deref()
                .and_then(|t| ini_values(t, "Timer", "Unit").pop())
                .unwrap_or_else(|| format!("{}.service", name.trim_end_matches(".timer")));
            let serves = unit_serves(root, &service);
            let written = if tool == Tool::Acmekeep && name.starts_with(JOB_NAME) {
                ours_written(root, unit.as_deref(), timer_text.as_deref(), &service)
            } else {
                Written::No
            };
            Some(Found {
                tool,
                place: Place::Timer { name, link, unit },
                line: None,
                serves,
                written,
                once_a_day: false,
                plain: true,
            })
        })
        .collect()
}

/// Whether our units are as quickstart wrote them: only files in /etc/systemd/system count (a
/// packaged unit is never ours to change).
fn ours_written(
    root: &Root,
    timer: Option<&Path>,
    timer_text: Option<&str>,
    service: &str,
) -> Written {
    let unit_dir = root.join(UNIT_DIR);
    let timer = match (timer, timer_text) {
        (Some(path), Some(text)) if path.parent() == Some(unit_dir.as_path()) => {
            timer_as_written(text)
        }
        _ => None,
    };
    let service_path = unit_dir.join(service);
    let service = read_text(&service_path).and_then(|t| service_as_written(&t));
    Written::Units { timer, service }
}

/// The file that defines unit `name`: the first in systemd's search path.
fn unit_file(root: &Root, name: &str) -> Option<PathBuf> {
    UNIT_PATH
        .iter()
        .map(|dir| root.join(dir).join(name))
        .find(|p| p.is_file())
}

/// The drop-ins of unit `name` (`name.d/*.conf`), in the order systemd applies them: by file
/// name, a file in a more important directory hiding one of the same name.
fn drop_ins(root: &Root, name: &str) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in UNIT_PATH.iter().rev() {
        for path in list(&root.join(dir).join(format!("{name}.d"))) {
            let file = file_name(&path);
            if file.ends_with(".conf") {
                by_name.insert(file, path);
            }
        }
    }
    by_name.into_values().collect()
}

/// The state directory the service unit `name` runs on: its `ExecStart=` that runs a tool,
/// then `Environment=` and `EnvironmentFile=` (the latter win, as in systemd), then the
/// default. Drop-ins apply after the unit; an empty `ExecStart=` clears the earlier ones.
fn unit_serves(root: &Root, name: &str) -> Serves {
    let Some(unit) = unit_file(root, name) else {
        return Serves::Unknown;
    };
    let mut commands: Vec<String> = Vec::new();
    let mut env: Option<String> = None;
    let mut file_env: Option<String> = None;
    for path in std::iter::once(unit).chain(drop_ins(root, name)) {
        let Some(text) = read_text(&path) else {
            continue;
        };
        for value in ini_values(&text, "Service", "ExecStart") {
            if value.is_empty() {
                commands.clear();
            } else {
                commands.push(
                    value
                        .trim_start_matches(['-', '@', ':', '+', '!'])
                        .to_owned(),
                );
            }
        }
        for value in ini_values(&text, "Service", "Environment") {
            for assignment in shlex::split(&value).unwrap_or_default() {
                if let Some(dir) = assignment.strip_prefix("ACME_STATE_DIR=") {
                    env = Some(dir.to_owned());
                }
            }
        }
        for value in ini_values(&text, "Service", "EnvironmentFile") {
            let file = value.strip_prefix('-').unwrap_or(&value);
            let file = root.join(file.trim_start_matches('/'));
            for line in read_text(&file).unwrap_or_default().lines() {
                if let Some((k, v)) = env_setting(line.trim())
                    && k == "ACME_STATE_DIR"
                {
                    file_env = Some(v);
                }
            }
        }
    }
    let env = file_env.or(env);
    let mut serves = commands
        .iter()
        .filter(|c| command_tool(c).is_some())
        .map(|c| command_serves(c, env.as_deref()));
    match (serves.next(), serves.next()) {
        (Some(one), None) => one,
        _ => Serves::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = Root::under(dir.path());
        (dir, root)
    }

    fn write(root: &Root, rel: &str, text: &str) -> PathBuf {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        fs::write(&path, text).expect("write");
        path
    }

    fn dir(p: &str) -> Serves {
        Serves::Dir(PathBuf::from(p))
    }

    #[test]
    fn command_serves_every_form() {
        let table: &[(&str, Option<&str>, Serves)] = &[
            (
                "/usr/bin/acmetool --batch reconcile",
                None,
                dir("/var/lib/acme"),
            ),
            (
                "acmetool --batch --state=/srv/a reconcile",
                None,
                dir("/srv/a"),
            ),
            (
                "acmetool --batch --state=\"/srv/a b\" reconcile",
                None,
                dir("/srv/a b"),
            ),
            ("acmetool --state /srv/a --batch", None, dir("/srv/a")),
            (
                "acmetool --batch reconcile",
                Some("/srv/env"),
                dir("/srv/env"),
            ),
            (
                "ACME_STATE_DIR=/srv/x acmetool --batch",
                Some("/srv/env"),
                dir("/srv/x"),
            ),
            ("env ACME_STATE_DIR=/srv/x acmetool", None, dir("/srv/x")),
            (
                "acmetool --state=/srv/flag",
                Some("/srv/env"),
                dir("/srv/flag"),
            ),
            (
                "sh -c 'acmetool --batch --state=/srv/sh reconcile'",
                None,
                dir("/srv/sh"),
            ),
            ("acmetool --state=$HOME/acme", None, Serves::Unknown),
            ("acmetool --state=acme", None, Serves::Unknown),
            ("acmetool --state='/unbalanced", None, Serves::Unknown),
            ("acmetool --state=", None, dir("/var/lib/acme")),
        ];
        for (command, env, want) in table {
            assert_eq!(&command_serves(command, *env), want, "{command} {env:?}");
        }
    }

    #[test]
    fn the_program_decides_the_tool_not_a_path_in_its_arguments() {
        use Tool::{Acmekeep, Acmetool};
        let table: &[(&str, Option<(Tool, bool)>)] = &[
            (
                "/usr/bin/acmetool --batch --state=/tmp/acmekeep-test/state reconcile",
                Some((Acmetool, true)),
            ),
            (
                "acmekeep --batch --state=/srv/acmetool reconcile",
                Some((Acmekeep, true)),
            ),
            (
                "ACME_STATE_DIR=/srv/acmekeep acmetool --batch",
                Some((Acmetool, true)),
            ),
            (
                "acmetool --batch reconcile >/dev/null 2>&1",
                Some((Acmetool, true)),
            ),
            (
                "sh -c '/opt/acmetool/bin/acmetool reconcile'",
                Some((Acmetool, false)),
            ),
            (
                "nice -n 10 /usr/bin/acmetool --batch",
                Some((Acmetool, false)),
            ),
            (
                "test -x /usr/bin/acmetool && /usr/bin/acmetool --batch",
                Some((Acmetool, false)),
            ),
            ("acmetool --batch; echo 'a;b'", Some((Acmetool, false))),
            ("/usr/local/bin/backup --to /srv/acmetool", None),
            ("cd /srv/acmekeep && tar c .", None),
            ("echo 'acmetool; x'", None),
        ];
        for (command, want) in table {
            assert_eq!(command_tool(command), *want, "{command}");
        }
        assert_eq!(
            split_commands("a 'b;c' && d|e 2>&1 &>f"),
            ["a 'b;c' ", " d", "e 2>&1 &>f"]
        );
    }

    #[test]
    fn table_jobs_read_environment_lines_users_and_percent() {
        let text = "SHELL=/bin/sh\n\
                    # 1 1 * * * root acmetool --state=/commented\n\
                    3 4 * * * root /usr/bin/acmetool --batch reconcile\n\
                    ACME_STATE_DIR = \"/srv/later\"\n\
                    -5 6 * * *\troot acmetool --batch reconcile % --state=/stdin\n\
                    @daily root acmekeep --batch --state=/srv/k reconcile\n\
                    1 2 * * * root /usr/local/bin/backup\n";
        let jobs = table_jobs(text, true, |l| Place::Crontab.at(l));
        let got: Vec<(Tool, Serves, bool)> = jobs
            .iter()
            .map(|f| (f.tool, f.serves.clone(), f.once_a_day))
            .collect();
        assert_eq!(
            got,
            [
                (Tool::Acmetool, dir("/var/lib/acme"), true),
                (Tool::Acmetool, dir("/srv/later"), true),
                (Tool::Acmekeep, dir("/srv/k"), true),
            ]
        );
        // In a user crontab there is no user field, and "root" would be the command.
        let user = table_jobs("7 3,15 * * * acmetool --state=/srv/u\n", false, |l| {
            Place::Crontab.at(l)
        });
        assert_eq!(user[0].serves, dir("/srv/u"));
        assert!(!user[0].once_a_day);
    }

    #[test]
    fn survey_finds_cron_files_scripts_and_etc_crontab() {
        let (_d, root) = temp_root();
        assert!(survey(&root, None).is_empty());
        write(
            &root,
            "etc/cron.d/acmetool.dpkg-old",
            "1 1 * * * root acmetool\n",
        );
        write(&root, "etc/cron.d/.acmetool.swp", "");
        write(
            &root,
            "etc/cron.d/acmekeep.bak",
            "1 1 * * * root acmekeep\n",
        );
        write(&root, "etc/cron.d/acmetool~", "1 1 * * * root acmetool\n");
        write(
            &root,
            "etc/cron.daily/acmetool.disabled",
            "#!/bin/sh\nexec acmetool --batch reconcile\n",
        );
        write(&root, "etc/cron.allow", "root\n");
        write(&root, "etc/cron.d/backup", "1 1 * * * root tar\n");
        assert!(
            survey(&root, None).is_empty(),
            "backups and other jobs skipped"
        );
        write(
            &root,
            "etc/cron.daily/acmetool-renew",
            "#!/bin/sh\nexport ACME_STATE_DIR=/srv/daily\nexec acmetool --batch reconcile\n",
        );
        write(&root, "etc/cron.d/acmetool", "");
        write(
            &root,
            "etc/cron.d/certs",
            "0 5 * * * root acmetool --state=/srv/c\n",
        );
        write(
            &root,
            "etc/crontab",
            "17 * * * * root cd / && run-parts\n9 9 * * * root acmetool\n",
        );
        let found = survey(&root, None);
        let got: Vec<(String, Serves)> = found
            .iter()
            .map(|f| (f.place.to_string(), f.serves.clone()))
            .collect();
        let p = |rel: &str| root.join(rel).display().to_string();
        assert_eq!(
            got,
            [
                (p("etc/cron.d/acmetool"), Serves::Unknown),
                (p("etc/cron.d/certs"), dir("/srv/c")),
                (p("etc/cron.daily/acmetool-renew"), dir("/srv/daily")),
                (p("etc/crontab"), dir("/var/lib/acme")),
            ]
        );
        assert!(matches!(found[2].place, Place::Script(_)));
    }

    #[test]
    fn survey_finds_enabled_timers_and_their_state_directory() {
        let (_d, root) = temp_root();
        write(
            &root,
            "lib/systemd/system/acmetool.timer",
            "[Timer]\nOnCalendar=*-*-* 00,12:00:00\n",
        );
        write(
            &root,
            "lib/systemd/system/acmetool.service",
            "[Service]\nExecStart=/usr/bin/acmetool --batch reconcile\n",
        );
        assert!(survey(&root, None).is_empty(), "disabled: not a job");
        let wants = root.join(TIMERS_WANTS_DIR);
        fs::create_dir_all(&wants).expect("mkdir");
        std::os::unix::fs::symlink(
            "/lib/systemd/system/acmetool.timer",
            wants.join("acmetool.timer"),
        )
        .expect("link");
        let found = survey(&root, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].tool, Tool::Acmetool);
        assert_eq!(found[0].serves, dir("/var/lib/acme"));

        // A drop-in with an environment file moves it.
        write(
            &root,
            "etc/systemd/system/acmetool.service.d/state.conf",
            "[Service]\nEnvironment=\"FOO=1\" ACME_STATE_DIR=/srv/env\n",
        );
        assert_eq!(survey(&root, None)[0].serves, dir("/srv/env"));
        write(
            &root,
            "etc/systemd/system/acmetool.service.d/zz.conf",
            "[Service]\nEnvironmentFile=-/etc/default/acmetool\n",
        );
        write(
            &root,
            "etc/default/acmetool",
            "# state\nACME_STATE_DIR=\"/srv/file\"\n",
        );
        assert_eq!(survey(&root, None)[0].serves, dir("/srv/file"));
        write(
            &root,
            "etc/systemd/system/acmetool.service.d/zzz.conf",
            "[Service]\nExecStart=\nExecStart=/usr/bin/acmetool --batch --state=/srv/flag reconcile\n",
        );
        assert_eq!(survey(&root, None)[0].serves, dir("/srv/flag"));
    }

    #[test]
    fn same_dir_sees_through_trailing_slashes_and_links() {
        let d = tempfile::tempdir().expect("tempdir");
        let real = d.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("link");
        assert!(same_dir(&real, &link));
        assert!(same_dir(
            Path::new("/var/lib/acme/"),
            Path::new("/var/lib/acme")
        ));
        assert!(!same_dir(
            Path::new("/var/lib/acme"),
            Path::new("/srv/acme")
        ));
    }
}
