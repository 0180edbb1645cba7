//! Scheduling the daily `reconcile`: a systemd timer, a cron.d file, or a line in the user's
//! crontab (acmetool §3.3, and Debian's units in §3.4).
//!
//! Deciding is separate from doing. [`Job`] validates the command once, at the edge, so every text
//! made from it is safe to hand to cron, sh and systemd. [`detect`] and [`find_existing`] only
//! look. The unit files, the cron.d file and the crontab line come from pure functions, and the
//! unit files are rendered from the templates in `contrib/systemd/`, their one source. [`install`]
//! is the only function that writes, and it writes only under a [`Root`]: `/` in production, a
//! temp dir in tests. Only the production root runs `systemctl` and finds a real `crontab`.
//!
//! The rules that keep a machine from ending up with two renewal jobs, or with none:
//! - Nothing is installed when an acmekeep job already exists in any form.
//! - An acmetool job is replaced only when the caller asks, and only in the two forms that
//!   acmetool's own quickstart writes: `/etc/cron.d/acmetool` and lines in the user's crontab.
//!   Anything else (Debian's packaged `acmetool.timer`, `/etc/cron.daily/acmetool`, ...) is
//!   reported and left to the administrator.
//! - Ours is installed before theirs is removed. If the removal fails, the machine has both jobs
//!   and the error says so; it never has neither.
//! - `/etc/cron.d/acmekeep` is created with `O_EXCL`, like acmetool's file, so an existing file is
//!   never overwritten. The units are written atomically only while our timer does not exist, so
//!   an administrator's edits survive every later quickstart.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};

use crate::settings::DEFAULT_STATE_DIR;
use crate::store::fs::{AtomicFs, create_dir_all_mode};

/// The unit templates; see the `#@` notes at the top of each.
const SERVICE_TEMPLATE: &str = include_str!("../contrib/systemd/acmekeep.service");
const TIMER_TEMPLATE: &str = include_str!("../contrib/systemd/acmekeep.timer");

/// Name of the service unit that runs one reconcile.
pub const SERVICE_UNIT: &str = "acmekeep.service";
/// Name of the timer unit that starts [`SERVICE_UNIT`] daily.
pub const TIMER_UNIT: &str = "acmekeep.timer";

// System paths, relative to the root.
/// sd_booted(3): this directory exists only when systemd is PID 1.
const SD_BOOTED_DIR: &str = "run/systemd/system";
/// Where an administrator's units live (packaged ones live in /usr/lib and are never touched).
const UNIT_DIR: &str = "etc/systemd/system";
const TIMERS_WANTS_DIR: &str = "etc/systemd/system/timers.target.wants";
const ETC_DIR: &str = "etc";
const CRON_D_DIR: &str = "etc/cron.d";
const CRON_D_FILE: &str = "acmekeep";
/// The file acmetool's quickstart writes; the only acmetool file we ever remove.
const ACMETOOL_CRON_D_FILE: &str = "acmetool";
/// Debian's packaged timer, enabled through this link.
const ACMETOOL_TIMER: &str = "acmetool.timer";

/// Every file we write is world-readable, like acmetool's cron file.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;
/// The environment lines of the cron.d file, as acmetool writes them.
const CRON_PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin";
/// Vixie cron truncates commands at 1000 bytes; stay well below it.
const MAX_COMMAND_LINE: usize = 900;
/// Always writable: Debian's default webroot is `/var/run/acme/acme-challenge`, and /var/run is
/// a link to /run.
const RUN_ACME: &str = "/run/acme";

/// The file system the job is installed into, and the programs that act on it.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
    /// crontab(1) and the arguments that go before `-l` or `-`, if there is one.
    crontab: Option<(PathBuf, Vec<OsString>)>,
    /// Whether this is the running system, so `systemctl` may be told about new units.
    live: bool,
}

impl Root {
    /// The running system: `/`, the `crontab` program found in `path_var` (the value of `PATH`,
    /// passed in so that nothing here reads the environment), and `systemctl` after units are
    /// written.
    pub fn system(path_var: Option<&OsStr>) -> Root {
        Root {
            dir: PathBuf::from("/"),
            crontab: path_var
                .and_then(|p| find_program(p, "crontab"))
                .map(|program| (program, Vec::new())),
            live: true,
        }
    }

    /// A tree under `dir` (tests, image builds). Every system path is joined under it, there is no
    /// crontab program unless [`Root::with_crontab`] names one, and `systemctl` is never run.
    pub fn under(dir: impl Into<PathBuf>) -> Root {
        Root {
            dir: dir.into(),
            crontab: None,
            live: false,
        }
    }

    /// Uses `program` with `leading_args` as crontab(1). Tests pass `/bin/sh` and a fake script,
    /// which avoids executing a file that was just written (ETXTBSY under parallel tests).
    pub fn with_crontab(
        mut self,
        program: impl Into<PathBuf>,
        leading_args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Root {
        let args = leading_args.into_iter().map(Into::into).collect();
        self.crontab = Some((program.into(), args));
        self
    }

    /// The directory every system path is joined under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `rel` (a system path without its leading `/`) under this root.
    fn join(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

/// The first executable regular file `name` in an absolute directory of `path_var`. Relative
/// entries (including the empty one, which means the current directory) are skipped.
fn find_program(path_var: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Why a [`Job`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Cron and systemd run the job from another directory.
    #[error("{} is not an absolute path", .0.display())]
    NotAbsolute(PathBuf),
    /// systemd units must be UTF-8.
    #[error("{} is not valid UTF-8", .0.display())]
    NotUtf8(PathBuf),
    /// A character that cron, sh or systemd would interpret.
    #[error(
        "{} contains {ch:?}, which cron, sh or systemd would interpret; use a path without it (a symlink will do)",
        path.display()
    )]
    UnsafeChar { path: PathBuf, ch: char },
    /// Longer than cron accepts.
    #[error("the command line is {0} bytes long; the limit is {MAX_COMMAND_LINE}")]
    TooLong(usize),
    /// Not a time of day.
    #[error("{hour:02}:{minute:02} is not a time of day")]
    BadTime { hour: u8, minute: u8 },
}

/// An absolute UTF-8 path made only of characters that mean nothing to cron, sh or systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SafePath(String);

impl SafePath {
    fn new(path: &Path) -> Result<SafePath, JobError> {
        let s = path
            .to_str()
            .ok_or_else(|| JobError::NotUtf8(path.to_owned()))?;
        if let Some(ch) = s.chars().find(|&c| !is_inert(c)) {
            return Err(JobError::UnsafeChar {
                path: path.to_owned(),
                ch,
            });
        }
        if !path.is_absolute() {
            return Err(JobError::NotAbsolute(path.to_owned()));
        }
        Ok(SafePath(s.to_owned()))
    }

    /// `prefix` and the path as one word of a command line, double-quoted if it has a space.
    /// sh and systemd both take `"--state=/a b"` as the single argument `--state=/a b`, and inside
    /// the quotes nothing else can be special because [`is_inert`] let nothing else in.
    fn word(&self, prefix: &str) -> String {
        word(prefix, &self.0)
    }
}

fn word(prefix: &str, path: &str) -> String {
    if path.contains(' ') {
        format!("\"{prefix}{path}\"")
    } else {
        format!("{prefix}{path}")
    }
}

/// Characters that are literal everywhere the command line goes: in a cron line (where `%` is a
/// newline), to sh inside and outside double quotes (`$`, backquote, `\`, quotes, globs, `~`,
/// `;`, `&`, `|`, `<`, `>`, `#`, parentheses), and to systemd's command-line and list parsing
/// (`%` specifiers, `$` variables, quotes and `\` escapes). A space is allowed because
/// [`SafePath::word`] quotes it; `=` is harmless, and every `--state=` word has one anyway.
/// Anything else is refused rather than escaped: the three escaping
/// schemes disagree, and a path that needs escaping is rare enough to be worth a symlink.
fn is_inert(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ',' | '=' | '@' | ':' | ' ')
}

/// The daily reconcile: when it runs and what it runs. Paths are validated once, here, so every
/// text made from a `Job` is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    minute: u8,
    hour: u8,
    exe: SafePath,
    state_dir: Option<SafePath>,
    hook_dirs: Vec<SafePath>,
    webroots: Vec<SafePath>,
}

impl Job {
    /// A job at `hour:minute` every day. `exe` is the absolute path of acmekeep. `state_dir` and
    /// `hook_dirs` are given only when they differ from the defaults, which the command line then
    /// leaves to acmekeep, as acmetool does.
    pub fn new(
        minute: u8,
        hour: u8,
        exe: &Path,
        state_dir: Option<&Path>,
        hook_dirs: &[PathBuf],
    ) -> Result<Job, JobError> {
        if minute > 59 || hour > 23 {
            return Err(JobError::BadTime { hour, minute });
        }
        let job = Job {
            minute,
            hour,
            exe: SafePath::new(exe)?,
            state_dir: state_dir.map(SafePath::new).transpose()?,
            hook_dirs: hook_dirs
                .iter()
                .map(|d| SafePath::new(d))
                .collect::<Result<_, _>>()?,
            webroots: Vec::new(),
        };
        let len = job.command_line().len();
        if len > MAX_COMMAND_LINE {
            return Err(JobError::TooLong(len));
        }
        Ok(job)
    }

    /// Like [`Job::new`] at a random time of day, chosen as acmetool does: the minute is the first
    /// random byte mod 60 and the hour the second mod 24. A random time spreads the load on the
    /// CA; the slight bias of the modulo does not matter for that.
    pub fn random(
        exe: &Path,
        state_dir: Option<&Path>,
        hook_dirs: &[PathBuf],
        rng_bytes: [u8; 2],
    ) -> Result<Job, JobError> {
        let [m, h] = rng_bytes;
        Job::new(m % 60, h % 24, exe, state_dir, hook_dirs)
    }

    /// Adds the webroot directories known at install time to the systemd unit's
    /// `ReadWritePaths=`, which `ProtectSystem=strict` needs. Pass each directory the webroot
    /// responder writes into; if one may not exist yet, pass the nearest existing ancestor,
    /// because a read-only parent cannot get a new directory. Cron jobs ignore this.
    pub fn with_webroots(mut self, webroots: &[PathBuf]) -> Result<Job, JobError> {
        for dir in webroots {
            let dir = SafePath::new(dir)?;
            if !self.webroots.contains(&dir) {
                self.webroots.push(dir);
            }
        }
        Ok(self)
    }

    /// The minute past the hour, 0–59.
    pub fn minute(&self) -> u8 {
        self.minute
    }

    /// The hour of the day, 0–23.
    pub fn hour(&self) -> u8 {
        self.hour
    }

    /// `<exe> --batch [--state=<dir>] [--hooks=<dir>]... reconcile`, valid unchanged as a cron
    /// command (run by sh) and as a systemd `ExecStart=`.
    pub fn command_line(&self) -> String {
        let mut words = vec![self.exe.word(""), "--batch".to_owned()];
        words.extend(self.state_dir.iter().map(|d| d.word("--state=")));
        words.extend(self.hook_dirs.iter().map(|d| d.word("--hooks=")));
        words.push("reconcile".to_owned());
        words.join(" ")
    }

    /// The `ReadWritePaths=` value: the state directory, /run/acme and the webroots, each with
    /// systemd's `-` prefix, so a missing one is skipped rather than failing the whole unit; a
    /// missing state directory is then reported by acmekeep itself, which is clearer.
    fn read_write_paths(&self) -> String {
        let state = self.state_dir.as_ref().map_or(DEFAULT_STATE_DIR, |d| &d.0);
        let mut paths = vec![state, RUN_ACME];
        for dir in &self.webroots {
            if !paths.contains(&dir.0.as_str()) {
                paths.push(&dir.0);
            }
        }
        paths
            .iter()
            .map(|p| word("-", p))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Renders `acmekeep.service` and `acmekeep.timer` for `job`, from `contrib/systemd/`.
pub fn systemd_units(job: &Job) -> (String, String) {
    let service = render(
        SERVICE_TEMPLATE,
        &[
            ("COMMAND", &job.command_line()),
            ("READ_WRITE_PATHS", &job.read_write_paths()),
        ],
    );
    let timer = render(
        TIMER_TEMPLATE,
        &[
            ("HOUR", &format!("{:02}", job.hour)),
            ("MINUTE", &format!("{:02}", job.minute)),
        ],
    );
    (service, timer)
}

/// Fills in a template: drops the `#@` note lines and replaces each `@NAME@` with its value in a
/// single pass, so a value (a path may contain `@`) is never itself searched for placeholders.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    for line in template.split_inclusive('\n') {
        if line.starts_with("#@") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find('@') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let var = vars.iter().find_map(|&(name, value)| {
                let tail = after.strip_prefix(name)?.strip_prefix('@')?;
                Some((value, tail))
            });
            match var {
                Some((value, tail)) => {
                    out.push_str(value);
                    rest = tail;
                }
                None => {
                    out.push('@');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
    }
    out
}

/// `/etc/cron.d/acmekeep` as acmetool writes its own file, plus a comment naming its origin.
pub fn cron_d_file(job: &Job) -> String {
    format!(
        "# acmekeep: daily certificate renewal, written by `acmekeep quickstart`.\n\
         SHELL=/bin/sh\n\
         PATH={CRON_PATH}\n\
         MAILTO=root\n\
         {} {} * * * root {}\n",
        job.minute,
        job.hour,
        job.command_line()
    )
}

/// The line for a user's crontab (no user field), without a trailing newline.
pub fn crontab_line(job: &Job) -> String {
    format!("{} {} * * * {}", job.minute, job.hour, job.command_line())
}

/// How the job can be scheduled on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// A timer in /etc/systemd/system.
    Systemd,
    /// A file in /etc/cron.d.
    CronD,
    /// A line in the crontab of the user running quickstart.
    UserCrontab,
    /// Nothing; the caller shows the crontab line instead.
    None,
}

/// Picks the scheduler: systemd when it is PID 1 (the sd_booted(3) test) and we are root, else
/// /etc/cron.d when we are root and it exists, else the user's crontab when there is a crontab
/// program, else none.
pub fn detect(root: &Root, is_root: bool) -> Scheduler {
    let is_dir = |rel| fs::symlink_metadata(root.join(rel)).is_ok_and(|m| m.is_dir());
    if is_root && is_dir(SD_BOOTED_DIR) {
        Scheduler::Systemd
    } else if is_root && root.join(CRON_D_DIR).is_dir() {
        Scheduler::CronD
    } else if root.crontab.is_some() {
        Scheduler::UserCrontab
    } else {
        Scheduler::None
    }
}

/// Where a scheduled job was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A unit, an enablement link or a cron file.
    File(PathBuf),
    /// A line in the crontab of the user running quickstart.
    UserCrontab,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::UserCrontab => f.write_str("the user's crontab"),
        }
    }
}

/// A renewal job that is already scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// None found.
    None,
    /// Ours. It takes precedence when both are found.
    Acmekeep(Location),
    /// acmetool's, which reconciles the same state directory.
    Acmetool(Location),
}

/// Looks for a scheduled acmekeep or acmetool job. `crontab_text` is the output of `crontab -l`,
/// if the caller has it. Looked at:
/// - our timer in /etc/systemd/system, or its enablement link (also made for a packaged timer);
/// - every file in an `/etc/cron.*` directory whose name contains `acmekeep` or `acmetool`
///   (acmetool's rule), except backups that cron skips too (see [`cron_skips`]);
/// - Debian's `acmetool.timer`, when enabled;
/// - job lines in `crontab_text` that mention either name (comments and variables are ignored).
///
/// A lone `acmekeep.service` is not a job: nothing starts it. acmetool also searches
/// `/var/spool/cron`; we do not, because the only crontab there that can reconcile the same
/// (root-owned) state directory is root's, and root's is `crontab_text` when root runs this.
pub fn find_existing(root: &Root, crontab_text: Option<&str>) -> Existing {
    let found = scan(root, crontab_text);
    if let Some(at) = found.acmekeep.into_iter().next() {
        Existing::Acmekeep(at)
    } else if let Some(at) = found.acmetool.into_iter().next() {
        Existing::Acmetool(at)
    } else {
        Existing::None
    }
}

/// Every job [`find_existing`] would report, in its order.
#[derive(Debug, Default)]
struct Found {
    acmekeep: Vec<Location>,
    acmetool: Vec<Location>,
}

fn scan(root: &Root, crontab_text: Option<&str>) -> Found {
    let mut found = Found::default();
    let present = |p: &Path| fs::symlink_metadata(p).is_ok();
    let unit_dir = root.join(UNIT_DIR);
    let wants_dir = root.join(TIMERS_WANTS_DIR);
    for path in [unit_dir.join(TIMER_UNIT), wants_dir.join(TIMER_UNIT)] {
        if present(&path) {
            found.acmekeep.push(Location::File(path));
        }
    }
    for path in cron_files(root) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains("acmekeep") {
            found.acmekeep.push(Location::File(path));
        } else if name.contains("acmetool") {
            found.acmetool.push(Location::File(path));
        }
    }
    let debian_timer = wants_dir.join(ACMETOOL_TIMER);
    if present(&debian_timer) {
        found.acmetool.push(Location::File(debian_timer));
    }
    if let Some(text) = crontab_text {
        if text.lines().any(is_acmekeep_line) {
            found.acmekeep.push(Location::UserCrontab);
        } else if text.lines().any(is_acmetool_line) {
            found.acmetool.push(Location::UserCrontab);
        }
    }
    found
}

/// The files in `/etc/cron.*` directories, sorted. Unreadable directories are skipped: this is a
/// best-effort search, as acmetool's is.
fn cron_files(root: &Root) -> Vec<PathBuf> {
    let read = |dir: &Path| match fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!("cannot list {}: {e}", dir.display());
            }
            Vec::new()
        }
    };
    let mut files: Vec<PathBuf> = read(&root.join(ETC_DIR))
        .into_iter()
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("cron."))
                && d.is_dir()
        })
        .flat_map(|d| read(&d))
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| !cron_skips(&n.to_string_lossy()))
        })
        .collect();
    files.sort();
    files
}

/// Names that cron and run-parts skip: hidden files and the backups editors and package managers
/// leave. Counting `/etc/cron.d/acmetool.dpkg-old` as a job would block replacement forever.
fn cron_skips(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [".dpkg-", ".rpm", ".ucf-"].iter().any(|s| name.contains(s))
}

/// A crontab line that runs something: not blank, not a comment, not a `NAME=value` setting. Job
/// lines start with a time field (a digit, `*`) or an `@` nickname, optionally after Debian's `-`
/// (no syslog) prefix.
fn is_job_line(line: &str) -> bool {
    let line = line.trim_start();
    let line = line.strip_prefix('-').unwrap_or(line);
    line.starts_with(|c: char| c.is_ascii_digit() || c == '*' || c == '@')
}

fn is_acmekeep_line(line: &str) -> bool {
    is_job_line(line) && line.contains("acmekeep")
}

/// An acmetool job line. A line naming both runs acmekeep (say, with `--state=/srv/acmetool`).
fn is_acmetool_line(line: &str) -> bool {
    is_job_line(line) && line.contains("acmetool") && !line.contains("acmekeep")
}

/// What [`install`] put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// Both units, with the timer enabled.
    Systemd { service: PathBuf, timer: PathBuf },
    /// The cron.d file.
    CronD(PathBuf),
    /// A line appended to the user's crontab.
    UserCrontab,
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Our job is in place. `replaced` lists the acmetool jobs removed in its favour.
    Installed {
        installed: Installed,
        replaced: Vec<Location>,
    },
    /// An acmekeep job was there already; nothing was changed.
    AlreadyScheduled(Location),
    /// acmetool's job was found and left alone, and nothing was installed, so that the state
    /// directory is not reconciled twice. With `replaceable`, calling [`install`] with
    /// `replace_acmetool` replaces it; without, the administrator has to remove it (for Debian's
    /// timer: `systemctl disable --now acmetool.timer`) or acmekeep cannot be scheduled here.
    AcmetoolKept { at: Location, replaceable: bool },
    /// There is no scheduler. The caller should show this crontab line, as acmetool does.
    PrintedOnly(String),
}

/// Schedules `job` with `sched` unless a job is already scheduled; see the module rules.
///
/// - systemd: writes both units atomically (mode 0644) to /etc/systemd/system, enables the timer
///   by linking `timers.target.wants/acmekeep.timer` to `../acmekeep.timer` (what
///   `systemctl enable` does, and it works under a test root), and on the running system runs
///   `systemctl daemon-reload` and `systemctl start acmekeep.timer`. Their failures are only
///   logged as warnings: the timer is enabled and starts at the next boot anyway.
/// - cron.d: creates /etc/cron.d/acmekeep (0644) and never overwrites it.
/// - user crontab: `crontab -l`, append the line, `crontab -`. A crontab that cannot be read is
///   an error, never an empty crontab, so a user's jobs are never lost.
///
/// When root runs this with the systemd or cron.d scheduler, root's crontab is read too, if there
/// is a crontab program, to find an acmetool line there; a read failure is then only a warning.
pub fn install(
    root: &Root,
    sched: Scheduler,
    job: &Job,
    replace_acmetool: bool,
) -> Result<Outcome> {
    let crontab = current_crontab(root, sched)?;
    let found = scan(root, crontab.as_deref());
    if let Some(at) = found.acmekeep.into_iter().next() {
        return Ok(Outcome::AlreadyScheduled(at));
    }
    if let Some(first) = found.acmetool.first() {
        let blocker = found.acmetool.iter().find(|at| !removable(root, at));
        let replaceable = blocker.is_none() && sched != Scheduler::None;
        if !(replace_acmetool && replaceable) {
            return Ok(Outcome::AcmetoolKept {
                at: blocker.unwrap_or(first).clone(),
                replaceable,
            });
        }
    }
    let installed = match sched {
        Scheduler::None => return Ok(Outcome::PrintedOnly(crontab_line(job))),
        Scheduler::Systemd => install_systemd(root, job)?,
        Scheduler::CronD => match install_cron_d(root, job)? {
            Some(path) => Installed::CronD(path),
            // Created by someone else since the scan.
            None => {
                let path = root.join(CRON_D_DIR).join(CRON_D_FILE);
                return Ok(Outcome::AlreadyScheduled(Location::File(path)));
            }
        },
        Scheduler::UserCrontab => {
            // One write both removes acmetool's lines (when replacing) and adds ours.
            let text = crontab.as_deref().unwrap_or_default();
            let kept = without_acmetool(text);
            write_crontab(root, &with_line(&kept, &crontab_line(job)))?;
            Installed::UserCrontab
        }
    };
    for at in &found.acmetool {
        remove_acmetool(root, at, sched, crontab.as_deref()).with_context(|| {
            format!(
                "acmekeep's job is installed, but acmetool's job in {at} is still there; \
                 remove it by hand so the state directory is not reconciled twice"
            )
        })?;
    }
    Ok(Outcome::Installed {
        installed,
        replaced: found.acmetool,
    })
}

/// The user's crontab if it matters: required for the user-crontab scheduler, a best-effort
/// search otherwise.
fn current_crontab(root: &Root, sched: Scheduler) -> Result<Option<String>> {
    if root.crontab.is_none() {
        if sched == Scheduler::UserCrontab {
            bail!("there is no crontab program to install the job with");
        }
        return Ok(None);
    }
    match read_crontab(root) {
        Ok(text) => Ok(Some(text)),
        Err(e) if sched != Scheduler::UserCrontab => {
            tracing::warn!("cannot read the crontab to look for an acmetool job there: {e:#}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether `install` may remove this acmetool job: only the forms acmetool's quickstart writes.
fn removable(root: &Root, at: &Location) -> bool {
    match at {
        Location::File(path) => {
            *path == root.join(CRON_D_DIR).join(ACMETOOL_CRON_D_FILE)
                && fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        }
        Location::UserCrontab => root.crontab.is_some(),
    }
}

fn remove_acmetool(
    root: &Root,
    at: &Location,
    sched: Scheduler,
    crontab: Option<&str>,
) -> Result<()> {
    match at {
        Location::File(path) => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        },
        // Already done by the same write that added our line.
        Location::UserCrontab if sched == Scheduler::UserCrontab => Ok(()),
        Location::UserCrontab => {
            let text = crontab.ok_or_else(|| anyhow!("the crontab was not read"))?;
            write_crontab(root, &without_acmetool(text))
        }
    }
}

fn install_systemd(root: &Root, job: &Job) -> Result<Installed> {
    let unit_dir = root.join(UNIT_DIR);
    let wants_dir = root.join(TIMERS_WANTS_DIR);
    create_dir_all_mode(&unit_dir, DIR_MODE)
        .with_context(|| format!("creating {}", unit_dir.display()))?;
    let (service_text, timer_text) = systemd_units(job);
    let service = unit_dir.join(SERVICE_UNIT);
    let timer = unit_dir.join(TIMER_UNIT);
    // The temp files go in the unit directory itself, which is the only place sure to be on the
    // same file system; systemd ignores their names (`tmp.*` has no unit suffix). The timer comes
    // last, because its presence is what marks the job as installed.
    let afs = AtomicFs::new(&unit_dir);
    for (path, text) in [(&service, &service_text), (&timer, &timer_text)] {
        afs.write_file(path, text.as_bytes(), FILE_MODE)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    create_dir_all_mode(&wants_dir, DIR_MODE)
        .with_context(|| format!("creating {}", wants_dir.display()))?;
    let link = wants_dir.join(TIMER_UNIT);
    AtomicFs::new(&wants_dir)
        .symlink(&Path::new("..").join(TIMER_UNIT), &link)
        .with_context(|| format!("enabling {TIMER_UNIT} ({})", link.display()))?;
    if root.live {
        systemctl(&["daemon-reload"]);
        systemctl(&["start", TIMER_UNIT]);
    }
    Ok(Installed::Systemd { service, timer })
}

/// Installs a service unit that runs all the time (the redirector): written atomically to
/// /etc/systemd/system (mode 0644), enabled for `multi-user.target` with a link as
/// `systemctl enable` makes, and on the running system reloaded and started. An existing unit
/// of that name is replaced only if its content differs.
pub fn install_service(root: &Root, name: &str, text: &str) -> Result<PathBuf> {
    if name.contains('/') || !name.ends_with(".service") {
        bail!("{name:?} is not a service unit name");
    }
    let unit_dir = root.join(UNIT_DIR);
    create_dir_all_mode(&unit_dir, DIR_MODE)
        .with_context(|| format!("creating {}", unit_dir.display()))?;
    let path = unit_dir.join(name);
    if fs::read_to_string(&path).ok().as_deref() != Some(text) {
        AtomicFs::new(&unit_dir)
            .write_file(&path, text.as_bytes(), FILE_MODE)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let wants_dir = unit_dir.join("multi-user.target.wants");
    create_dir_all_mode(&wants_dir, DIR_MODE)
        .with_context(|| format!("creating {}", wants_dir.display()))?;
    AtomicFs::new(&wants_dir)
        .symlink(&Path::new("..").join(name), &wants_dir.join(name))
        .with_context(|| format!("enabling {name}"))?;
    if root.live {
        systemctl(&["daemon-reload"]);
        systemctl(&["restart", name]);
    }
    Ok(path)
}

/// Whether systemd runs this system (the sd_booted(3) test), under `root`.
pub fn systemd_booted(root: &Root) -> bool {
    fs::symlink_metadata(root.join(SD_BOOTED_DIR)).is_ok_and(|m| m.is_dir())
}

/// Runs `systemctl <args>`, without a shell; a failure is a warning.
fn systemctl(args: &[&str]) {
    let shown = format!("systemctl {}", args.join(" "));
    match Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => tracing::warn!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => tracing::warn!("cannot run `{shown}`: {e}"),
    }
}

/// Creates /etc/cron.d/acmekeep; `None` if it exists already.
fn install_cron_d(root: &Root, job: &Job) -> Result<Option<PathBuf>> {
    let path = root.join(CRON_D_DIR).join(CRON_D_FILE);
    match write_new_file(&path, cron_d_file(job).as_bytes(), FILE_MODE) {
        Ok(()) => Ok(Some(path)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Creates `path` with exactly `mode` and `data`, failing with `AlreadyExists` instead of
/// replacing anything (`O_EXCL`, as acmetool). A rename cannot give that, so unlike
/// [`AtomicFs::write_file`] the file is written in place; the data is one small write, and a
/// failure removes the file we created, so cron never keeps a partial job.
fn write_new_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The umask may have narrowed the mode; cron reads the file as root either way, but the mode
    // should be what we say it is.
    let written = file
        .set_permissions(Permissions::from_mode(mode))
        .and_then(|()| file.write_all(data))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// A `crontab` command with the root's program and leading arguments, in the C locale so its
/// messages can be recognised.
fn crontab_command(root: &Root, arg: &str) -> Result<Command> {
    let (program, leading) = root
        .crontab
        .as_ref()
        .ok_or_else(|| anyhow!("there is no crontab program"))?;
    let mut cmd = Command::new(program);
    cmd.args(leading).arg(arg).env("LC_ALL", "C");
    Ok(cmd)
}

/// `crontab -l`. A missing crontab is an empty one; any other failure is an error.
fn read_crontab(root: &Root) -> Result<String> {
    let out = crontab_command(root, "-l")?
        .stdin(Stdio::null())
        .output()
        .context("running crontab -l")?;
    if out.status.success() {
        return String::from_utf8(out.stdout)
            .map_err(|_| anyhow!("the crontab is not valid UTF-8, so it is left alone"));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Vixie cron, cronie and Debian: "no crontab for <user>"; BusyBox: "can't open '<user>': No
    // such file or directory".
    if stderr.contains("no crontab for") || stderr.contains("No such file or directory") {
        return Ok(String::new());
    }
    bail!("crontab -l failed ({}): {}", out.status, stderr.trim())
}

/// `crontab -` with `text` on stdin, replacing the user's crontab.
fn write_crontab(root: &Root, text: &str) -> Result<()> {
    let mut child = crontab_command(root, "-")?
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running crontab -")?;
    let fed = match child.stdin.take() {
        // Dropping stdin at the end of the block closes it, so crontab sees the end of input.
        Some(mut stdin) => stdin.write_all(text.as_bytes()),
        None => Err(io::Error::other("no stdin pipe")),
    };
    let out = child.wait_with_output().context("waiting for crontab -")?;
    if !out.status.success() {
        bail!(
            "crontab - failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fed.context("writing the new crontab to crontab -")
}

/// `text` without acmetool's job lines.
fn without_acmetool(text: &str) -> String {
    text.lines()
        .filter(|l| !is_acmetool_line(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `text` with `line` appended; cron needs every line, the last included, to end in a newline.
fn with_line(text: &str, line: &str) -> String {
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    const EXE: &str = "/usr/bin/acmekeep";

    fn job() -> Job {
        Job::new(7, 3, Path::new(EXE), None, &[]).expect("valid job")
    }

    fn temp_root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = Root::under(dir.path());
        (dir, root)
    }

    fn mkdir(root: &Root, rel: &str) -> PathBuf {
        let path = root.join(rel);
        fs::create_dir_all(&path).expect("mkdir");
        path
    }

    fn write(root: &Root, rel: &str, text: &str) -> PathBuf {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        fs::write(&path, text).expect("write");
        path
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").mode() & 0o7777
    }

    /// The value of the first `key=` line.
    fn ini_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    /// A fake crontab(1) run through /bin/sh, keeping its crontab in `<dir>/spool` and counting
    /// writes in `<dir>/writes`. `-l` without a crontab fails like cronie's.
    fn fake_crontab(dir: &Path, root: Root, initial: Option<&str>) -> Root {
        let spool = dir.join("spool");
        if let Some(text) = initial {
            fs::write(&spool, text).expect("write crontab");
        }
        let script = dir.join("crontab.sh");
        let body = format!(
            "case \"$1\" in\n\
             -l) if [ -f '{spool}' ]; then cat '{spool}'; else echo 'no crontab for tester' >&2; exit 1; fi ;;\n\
             -) cat > '{spool}.new' && mv '{spool}.new' '{spool}' && echo write >> '{dir}/writes' ;;\n\
             *) exit 2 ;;\n\
             esac\n",
            spool = spool.display(),
            dir = dir.display(),
        );
        fs::write(&script, body).expect("write script");
        root.with_crontab("/bin/sh", [script])
    }

    fn spool(dir: &Path) -> String {
        fs::read_to_string(dir.join("spool")).expect("read crontab")
    }

    fn writes(dir: &Path) -> usize {
        fs::read_to_string(dir.join("writes")).map_or(0, |s| s.lines().count())
    }

    #[test]
    fn command_line_leaves_defaults_out() {
        assert_eq!(job().command_line(), "/usr/bin/acmekeep --batch reconcile");
    }

    #[test]
    fn command_line_includes_non_defaults_in_order() {
        let hooks = [
            PathBuf::from("/etc/acme/hooks"),
            PathBuf::from("/opt/hooks"),
        ];
        let job =
            Job::new(0, 0, Path::new(EXE), Some(Path::new("/srv/acme")), &hooks).expect("valid");
        assert_eq!(
            job.command_line(),
            "/usr/bin/acmekeep --batch --state=/srv/acme --hooks=/etc/acme/hooks \
             --hooks=/opt/hooks reconcile"
        );
    }

    #[test]
    fn command_line_quotes_words_with_spaces() {
        let job = Job::new(
            0,
            0,
            Path::new("/opt/my tools/acmekeep"),
            Some(Path::new("/srv/acme state")),
            &[PathBuf::from("/srv/my hooks")],
        )
        .expect("spaces are allowed");
        assert_eq!(
            job.command_line(),
            "\"/opt/my tools/acmekeep\" --batch \"--state=/srv/acme state\" \
             \"--hooks=/srv/my hooks\" reconcile"
        );
        let (service, _) = systemd_units(&job);
        assert_eq!(
            ini_value(&service, "ReadWritePaths"),
            Some("\"-/srv/acme state\" -/run/acme")
        );
    }

    #[test]
    fn command_line_words_split_by_sh_as_intended() {
        // sh is the cron side's parser; systemd's quoting agrees for the characters we allow.
        let job = Job::new(
            0,
            0,
            Path::new("/opt/a b/acmekeep"),
            Some(Path::new("/srv/x y")),
            &[PathBuf::from("/h/ö@1:2,3+4=5")],
        )
        .expect("valid");
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "for w in {}; do echo \"$w\"; done",
                job.command_line()
            ))
            .output()
            .expect("run sh");
        let words = String::from_utf8(out.stdout).expect("utf-8");
        assert_eq!(
            words.lines().collect::<Vec<_>>(),
            [
                "/opt/a b/acmekeep",
                "--batch",
                "--state=/srv/x y",
                "--hooks=/h/ö@1:2,3+4=5",
                "reconcile"
            ]
        );
    }

    #[test]
    fn unsafe_paths_are_refused_everywhere() {
        let bad = [
            "/srv/a\nb",
            "/srv/100%",
            "/srv/\"q\"",
            "/srv/$HOME",
            "/srv/`id`",
            "/srv/a\\b",
            "/srv/it's",
            "/srv/a;b",
            "/srv/*",
            "/srv/~x",
            "/srv/a\tb",
            "/srv/a&b",
            "/srv/a|b",
            "/srv/a#b",
            "/srv/(x)",
            "/srv/<x>",
            "/srv/a\u{2028}b",
        ];
        for path in bad {
            let p = Path::new(path);
            let expect_unsafe = |r: Result<Job, JobError>, what: &str| match r {
                Err(JobError::UnsafeChar { path: got, .. }) => assert_eq!(got, p, "{what}"),
                other => panic!("{what} {path:?}: {other:?}"),
            };
            expect_unsafe(Job::new(0, 0, p, None, &[]), "exe");
            expect_unsafe(Job::new(0, 0, Path::new(EXE), Some(p), &[]), "state");
            expect_unsafe(
                Job::new(0, 0, Path::new(EXE), None, &[p.to_owned()]),
                "hooks",
            );
            expect_unsafe(job().with_webroots(&[p.to_owned()]), "webroot");
        }
        let err = Job::new(0, 0, Path::new("/srv/100%"), None, &[]).expect_err("refused");
        assert!(err.to_string().contains("'%'"), "{err}");
    }

    #[test]
    fn relative_non_utf8_and_overlong_paths_are_refused() {
        assert!(matches!(
            Job::new(0, 0, Path::new("acmekeep"), None, &[]),
            Err(JobError::NotAbsolute(_))
        ));
        assert!(matches!(
            Job::new(0, 0, Path::new(EXE), Some(Path::new("state")), &[]),
            Err(JobError::NotAbsolute(_))
        ));
        let latin1 = Path::new(OsStr::from_bytes(b"/srv/caf\xe9"));
        assert!(matches!(
            Job::new(0, 0, latin1, None, &[]),
            Err(JobError::NotUtf8(_))
        ));
        let long = PathBuf::from(format!("/{}", "a".repeat(MAX_COMMAND_LINE)));
        assert!(matches!(
            Job::new(0, 0, Path::new(EXE), Some(&long), &[]),
            Err(JobError::TooLong(_))
        ));
    }

    #[test]
    fn time_of_day_is_checked() {
        assert!(matches!(
            Job::new(60, 0, Path::new(EXE), None, &[]),
            Err(JobError::BadTime { .. })
        ));
        assert!(matches!(
            Job::new(0, 24, Path::new(EXE), None, &[]),
            Err(JobError::BadTime { .. })
        ));
        Job::new(59, 23, Path::new(EXE), None, &[]).expect("23:59 is a time");
    }

    #[test]
    fn random_time_is_in_range_for_every_byte_pair() {
        let mut minutes = [false; 60];
        let mut hours = [false; 24];
        for a in 0..=u8::MAX {
            for b in 0..=u8::MAX {
                let job = Job::random(Path::new(EXE), None, &[], [a, b]).expect("valid");
                assert!(job.minute() < 60 && job.hour() < 24, "{a} {b}");
                assert_eq!((job.minute(), job.hour()), (a % 60, b % 24));
                minutes[usize::from(job.minute())] = true;
                hours[usize::from(job.hour())] = true;
            }
        }
        assert!(minutes.iter().all(|&m| m) && hours.iter().all(|&h| h));
    }

    #[test]
    fn detect_picks_by_root_and_what_exists() {
        let (dir, root) = temp_root();
        assert_eq!(detect(&root, true), Scheduler::None);
        let with_crontab = root.clone().with_crontab("/bin/false", [] as [&str; 0]);
        assert_eq!(detect(&with_crontab, true), Scheduler::UserCrontab);
        assert_eq!(detect(&with_crontab, false), Scheduler::UserCrontab);

        mkdir(&root, CRON_D_DIR);
        assert_eq!(detect(&root, true), Scheduler::CronD);
        assert_eq!(detect(&root, false), Scheduler::None);
        assert_eq!(detect(&with_crontab, false), Scheduler::UserCrontab);

        mkdir(&root, SD_BOOTED_DIR);
        assert_eq!(detect(&root, true), Scheduler::Systemd);
        assert_eq!(detect(&with_crontab, true), Scheduler::Systemd);
        // Not as a user: a system timer needs root.
        assert_eq!(detect(&with_crontab, false), Scheduler::UserCrontab);
        assert_eq!(detect(&root, false), Scheduler::None);
        drop(dir);
    }

    #[test]
    fn detect_requires_a_real_run_systemd_system_dir() {
        let (_dir, root) = temp_root();
        write(&root, SD_BOOTED_DIR, "not a directory");
        assert_eq!(detect(&root, true), Scheduler::None);
    }

    #[test]
    fn find_program_searches_absolute_path_entries_for_executables() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (plain, exec) = (dir.path().join("plain"), dir.path().join("exec"));
        for d in [&plain, &exec] {
            fs::create_dir(d).expect("mkdir");
            fs::write(d.join("crontab"), "").expect("write");
        }
        fs::set_permissions(exec.join("crontab"), Permissions::from_mode(0o755)).expect("chmod");
        let path = std::env::join_paths([Path::new("rel"), &plain, &exec]).expect("join");
        assert_eq!(find_program(&path, "crontab"), Some(exec.join("crontab")));
        assert_eq!(find_program(OsStr::new("rel:"), "crontab"), None);
    }

    #[test]
    fn find_existing_sees_acmetool_cron_files() {
        let (_dir, root) = temp_root();
        assert_eq!(find_existing(&root, None), Existing::None);
        write(&root, "etc/cron.d/acmetool.dpkg-old", "");
        write(&root, "etc/cron.d/.acmetool.swp", "");
        write(&root, "etc/cron.allow", "root\n");
        assert_eq!(
            find_existing(&root, None),
            Existing::None,
            "backups are skipped"
        );
        let daily = write(&root, "etc/cron.daily/acmetool-renew", "#!/bin/sh\n");
        assert_eq!(
            find_existing(&root, None),
            Existing::Acmetool(Location::File(daily))
        );
        let cron_d = write(&root, "etc/cron.d/acmetool", "");
        assert_eq!(
            find_existing(&root, None),
            Existing::Acmetool(Location::File(cron_d)),
            "sorted: cron.d before cron.daily"
        );
        let ours = write(&root, "etc/cron.d/acmekeep", "");
        assert_eq!(
            find_existing(&root, None),
            Existing::Acmekeep(Location::File(ours)),
            "ours takes precedence"
        );
    }

    #[test]
    fn find_existing_sees_debians_enabled_acmetool_timer() {
        let (_dir, root) = temp_root();
        let wants = mkdir(&root, TIMERS_WANTS_DIR);
        // Disabled (only the packaged unit): not a job.
        write(&root, "lib/systemd/system/acmetool.timer", "[Timer]\n");
        assert_eq!(find_existing(&root, None), Existing::None);
        let link = wants.join(ACMETOOL_TIMER);
        std::os::unix::fs::symlink("/lib/systemd/system/acmetool.timer", &link).expect("link");
        assert_eq!(
            find_existing(&root, None),
            Existing::Acmetool(Location::File(link))
        );
    }

    #[test]
    fn find_existing_sees_our_timer_but_not_a_lone_service() {
        let (_dir, root) = temp_root();
        write(&root, "etc/systemd/system/acmekeep.service", "");
        assert_eq!(find_existing(&root, None), Existing::None);
        let timer = write(&root, "etc/systemd/system/acmekeep.timer", "");
        assert_eq!(
            find_existing(&root, None),
            Existing::Acmekeep(Location::File(timer))
        );
    }

    #[test]
    fn find_existing_reads_job_lines_of_the_crontab() {
        let (_dir, root) = temp_root();
        let table: &[(&str, Existing)] = &[
            ("", Existing::None),
            ("# 0 3 * * * acmetool --batch\n", Existing::None),
            ("ACME_STATE_DIR=/var/lib/acmetool\n", Existing::None),
            (
                "MAILTO=me\n12 4 * * * /usr/local/bin/acmetool --batch reconcile\n",
                Existing::Acmetool(Location::UserCrontab),
            ),
            (
                "@daily acmetool --batch\n",
                Existing::Acmetool(Location::UserCrontab),
            ),
            (
                "  -5 1 * * * /usr/bin/acmetool\n",
                Existing::Acmetool(Location::UserCrontab),
            ),
            (
                "5 1 * * * /usr/bin/acmekeep --batch --state=/srv/acmetool reconcile\n",
                Existing::Acmekeep(Location::UserCrontab),
            ),
            (
                "1 1 * * * acmetool\n2 2 * * * acmekeep --batch reconcile\n",
                Existing::Acmekeep(Location::UserCrontab),
            ),
        ];
        for (text, want) in table {
            assert_eq!(&find_existing(&root, Some(text)), want, "{text:?}");
        }
    }

    #[test]
    fn cron_d_file_has_acmetools_shape() {
        assert_eq!(
            cron_d_file(&job()),
            "# acmekeep: daily certificate renewal, written by `acmekeep quickstart`.\n\
             SHELL=/bin/sh\n\
             PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin\n\
             MAILTO=root\n\
             7 3 * * * root /usr/bin/acmekeep --batch reconcile\n"
        );
        assert_eq!(
            crontab_line(&job()),
            "7 3 * * * /usr/bin/acmekeep --batch reconcile"
        );
    }

    #[test]
    fn install_cron_d_once_and_never_again() {
        let (_dir, root) = temp_root();
        mkdir(&root, CRON_D_DIR);
        let path = root.join("etc/cron.d/acmekeep");
        let first = install(&root, Scheduler::CronD, &job(), false).expect("install");
        assert_eq!(
            first,
            Outcome::Installed {
                installed: Installed::CronD(path.clone()),
                replaced: vec![]
            }
        );
        let other = Job::new(1, 2, Path::new("/other/acmekeep"), None, &[]).expect("valid");
        let second = install(&root, Scheduler::CronD, &other, true).expect("install again");
        assert_eq!(
            second,
            Outcome::AlreadyScheduled(Location::File(path.clone()))
        );
        assert_eq!(fs::read_dir(root.join(CRON_D_DIR)).expect("ls").count(), 1);
        assert_eq!(mode_of(&path), FILE_MODE);

        let text = fs::read_to_string(&path).expect("read");
        let jobs: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| is_job_line(l))
            .map(|l| l.splitn(7, ' ').collect())
            .collect();
        assert_eq!(
            jobs,
            [[
                "7",
                "3",
                "*",
                "*",
                "*",
                "root",
                "/usr/bin/acmekeep --batch reconcile"
            ]]
        );
        assert!(text.lines().any(|l| l == "SHELL=/bin/sh"));
        assert!(text.lines().any(|l| l == "MAILTO=root"));
    }

    #[test]
    fn install_cron_d_never_overwrites_a_file_that_appears() {
        let (_dir, root) = temp_root();
        mkdir(&root, CRON_D_DIR);
        let path = write(&root, "etc/cron.d/acmekeep", "admin's\n");
        assert_eq!(
            install_cron_d(&root, &job()).expect("no error"),
            None,
            "exists already"
        );
        assert_eq!(fs::read_to_string(&path).expect("read"), "admin's\n");
    }

    #[test]
    fn install_cron_d_without_the_directory_fails() {
        let (_dir, root) = temp_root();
        let err = install(&root, Scheduler::CronD, &job(), false).expect_err("no /etc/cron.d");
        assert!(format!("{err:#}").contains("cron.d/acmekeep"), "{err:#}");
    }

    #[test]
    fn install_systemd_writes_units_and_enables_the_timer() {
        let (_dir, root) = temp_root();
        let job = Job::new(5, 17, Path::new(EXE), Some(Path::new("/srv/acme")), &[])
            .expect("valid")
            .with_webroots(&[PathBuf::from("/var/www/html/.well-known/acme-challenge")])
            .expect("valid");
        let outcome = install(&root, Scheduler::Systemd, &job, false).expect("install");
        let unit_dir = root.join(UNIT_DIR);
        let (service, timer) = (unit_dir.join(SERVICE_UNIT), unit_dir.join(TIMER_UNIT));
        assert_eq!(
            outcome,
            Outcome::Installed {
                installed: Installed::Systemd {
                    service: service.clone(),
                    timer: timer.clone()
                },
                replaced: vec![]
            }
        );
        let timer_text = fs::read_to_string(&timer).expect("read timer");
        assert_eq!(ini_value(&timer_text, "OnCalendar"), Some("*-*-* 17:05:00"));
        assert_eq!(ini_value(&timer_text, "WantedBy"), Some("timers.target"));
        let service_text = fs::read_to_string(&service).expect("read service");
        assert_eq!(
            ini_value(&service_text, "ExecStart"),
            Some("/usr/bin/acmekeep --batch --state=/srv/acme reconcile")
        );
        assert_eq!(
            ini_value(&service_text, "ReadWritePaths"),
            Some("-/srv/acme -/run/acme -/var/www/html/.well-known/acme-challenge")
        );
        assert_eq!(ini_value(&service_text, "Type"), Some("oneshot"));
        for path in [&service, &timer] {
            assert_eq!(mode_of(path), FILE_MODE, "{}", path.display());
        }
        let link = root.join(TIMERS_WANTS_DIR).join(TIMER_UNIT);
        assert_eq!(
            fs::read_link(&link).expect("readlink"),
            Path::new("../acmekeep.timer")
        );
        assert_eq!(fs::read_to_string(&link).expect("follow"), timer_text);
        // No temp files were left next to the units.
        let mut names: Vec<_> = fs::read_dir(&unit_dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["acmekeep.service", "acmekeep.timer", "timers.target.wants"]
        );

        // Edits survive a second quickstart.
        fs::write(&service, "edited\n").expect("edit");
        assert_eq!(
            install(&root, Scheduler::Systemd, &job, true).expect("again"),
            Outcome::AlreadyScheduled(Location::File(timer))
        );
        assert_eq!(fs::read_to_string(&service).expect("read"), "edited\n");
    }

    #[test]
    fn install_systemd_replaces_acmetools_cron_file_when_asked() {
        let (_dir, root) = temp_root();
        let acmetool = write(
            &root,
            "etc/cron.d/acmetool",
            "SHELL=/bin/sh\n3 4 * * * root /usr/bin/acmetool --batch reconcile\n",
        );
        let kept = install(&root, Scheduler::Systemd, &job(), false).expect("install");
        assert_eq!(
            kept,
            Outcome::AcmetoolKept {
                at: Location::File(acmetool.clone()),
                replaceable: true
            }
        );
        assert!(acmetool.exists());
        assert!(!root.join(UNIT_DIR).exists(), "nothing installed");

        let replaced = install(&root, Scheduler::Systemd, &job(), true).expect("install");
        let Outcome::Installed {
            installed: Installed::Systemd { .. },
            replaced,
        } = replaced
        else {
            panic!("not installed: {replaced:?}");
        };
        assert_eq!(replaced, [Location::File(acmetool.clone())]);
        assert!(!acmetool.exists());
        assert!(root.join(UNIT_DIR).join(TIMER_UNIT).exists());
    }

    #[test]
    fn install_cron_d_replaces_acmetools_cron_file_when_asked() {
        let (_dir, root) = temp_root();
        let acmetool = write(&root, "etc/cron.d/acmetool", "3 4 * * * root acmetool\n");
        let outcome = install(&root, Scheduler::CronD, &job(), true).expect("install");
        let ours = root.join("etc/cron.d/acmekeep");
        assert_eq!(
            outcome,
            Outcome::Installed {
                installed: Installed::CronD(ours.clone()),
                replaced: vec![Location::File(acmetool.clone())]
            }
        );
        assert!(!acmetool.exists() && ours.exists());
    }

    #[test]
    fn install_never_removes_acmetool_jobs_it_did_not_write() {
        let (_dir, root) = temp_root();
        mkdir(&root, CRON_D_DIR);
        let wants = mkdir(&root, TIMERS_WANTS_DIR);
        let debian = wants.join(ACMETOOL_TIMER);
        std::os::unix::fs::symlink("/lib/systemd/system/acmetool.timer", &debian).expect("link");
        let cron_file = write(&root, "etc/cron.d/acmetool", "");
        for sched in [Scheduler::Systemd, Scheduler::CronD] {
            let outcome = install(&root, sched, &job(), true).expect("install");
            assert_eq!(
                outcome,
                Outcome::AcmetoolKept {
                    at: Location::File(debian.clone()),
                    replaceable: false
                },
                "{sched:?}"
            );
        }
        assert!(cron_file.exists(), "nothing removed when one job cannot be");
        assert!(fs::symlink_metadata(&debian).is_ok());
        assert!(!root.join("etc/cron.d/acmekeep").exists());
    }

    #[test]
    fn install_without_a_scheduler_only_prints() {
        let (_dir, root) = temp_root();
        assert_eq!(
            install(&root, Scheduler::None, &job(), true).expect("no error"),
            Outcome::PrintedOnly("7 3 * * * /usr/bin/acmekeep --batch reconcile".to_owned())
        );
        let acmetool = write(&root, "etc/cron.d/acmetool", "");
        assert_eq!(
            install(&root, Scheduler::None, &job(), true).expect("no error"),
            Outcome::AcmetoolKept {
                at: Location::File(acmetool.clone()),
                replaceable: false
            },
            "acmetool's job is not removed when ours cannot be installed"
        );
        assert!(acmetool.exists());
    }

    #[test]
    fn install_user_crontab_appends_through_crontab_stdin() {
        let (dir, root) = temp_root();
        let root = fake_crontab(dir.path(), root, Some("MAILTO=me\n0 0 * * * backup"));
        assert_eq!(
            install(&root, Scheduler::UserCrontab, &job(), false).expect("install"),
            Outcome::Installed {
                installed: Installed::UserCrontab,
                replaced: vec![]
            }
        );
        assert_eq!(
            spool(dir.path()),
            "MAILTO=me\n0 0 * * * backup\n7 3 * * * /usr/bin/acmekeep --batch reconcile\n"
        );
        assert_eq!(
            install(&root, Scheduler::UserCrontab, &job(), false).expect("again"),
            Outcome::AlreadyScheduled(Location::UserCrontab)
        );
        assert_eq!(writes(dir.path()), 1, "no second write");
    }

    #[test]
    fn install_user_crontab_starts_one_when_there_is_none() {
        let (dir, root) = temp_root();
        let root = fake_crontab(dir.path(), root, None);
        install(&root, Scheduler::UserCrontab, &job(), false).expect("install");
        assert_eq!(
            spool(dir.path()),
            "7 3 * * * /usr/bin/acmekeep --batch reconcile\n"
        );
    }

    #[test]
    fn install_user_crontab_replaces_acmetool_lines_in_one_write() {
        let (dir, root) = temp_root();
        let before = "# renewals\n4 5 * * * /usr/local/bin/acmetool --batch reconcile\n\
                      0 0 * * * backup\n";
        let root = fake_crontab(dir.path(), root, Some(before));
        assert_eq!(
            install(&root, Scheduler::UserCrontab, &job(), false).expect("install"),
            Outcome::AcmetoolKept {
                at: Location::UserCrontab,
                replaceable: true
            }
        );
        assert_eq!(spool(dir.path()), before);
        assert_eq!(
            install(&root, Scheduler::UserCrontab, &job(), true).expect("install"),
            Outcome::Installed {
                installed: Installed::UserCrontab,
                replaced: vec![Location::UserCrontab]
            }
        );
        assert_eq!(
            spool(dir.path()),
            "# renewals\n0 0 * * * backup\n7 3 * * * /usr/bin/acmekeep --batch reconcile\n"
        );
        assert_eq!(writes(dir.path()), 1);
    }

    #[test]
    fn install_cron_d_as_root_removes_acmetool_from_roots_crontab() {
        let (dir, root) = temp_root();
        mkdir(&root, CRON_D_DIR);
        let root = fake_crontab(dir.path(), root, Some("1 2 * * * acmetool --batch\n"));
        let outcome = install(&root, Scheduler::CronD, &job(), true).expect("install");
        assert_eq!(
            outcome,
            Outcome::Installed {
                installed: Installed::CronD(root.join("etc/cron.d/acmekeep")),
                replaced: vec![Location::UserCrontab]
            }
        );
        assert_eq!(spool(dir.path()), "");
    }

    #[test]
    fn install_user_crontab_refuses_an_unreadable_crontab() {
        let (dir, root) = temp_root();
        let script = dir.path().join("broken.sh");
        fs::write(
            &script,
            "[ \"$1\" = -l ] && { echo 'permission denied' >&2; exit 1; }\n\
             echo wrote > \"$(dirname \"$0\")/wrote\"\n",
        )
        .expect("write");
        let root = root.with_crontab("/bin/sh", [&script]);
        let err = install(&root, Scheduler::UserCrontab, &job(), false).expect_err("fails");
        assert!(format!("{err:#}").contains("permission denied"), "{err:#}");
        assert!(!dir.path().join("wrote").exists(), "crontab never replaced");

        // For the other schedulers it is only a warning.
        mkdir(&root, CRON_D_DIR);
        install(&root, Scheduler::CronD, &job(), false).expect("installs anyway");
        assert!(!dir.path().join("wrote").exists());
    }

    #[test]
    fn install_user_crontab_without_a_program_fails() {
        let (_dir, root) = temp_root();
        assert!(install(&root, Scheduler::UserCrontab, &job(), false).is_err());
    }

    #[test]
    fn render_replaces_in_one_pass_and_drops_notes() {
        let out = render(
            "#@ a note with @A@\nx=@A@ @B@ @C@ a@b\n",
            &[("A", "@B@"), ("B", "b")],
        );
        assert_eq!(out, "x=@B@ b @C@ a@b\n");
    }

    #[test]
    fn templates_leave_no_placeholders() {
        // '@' is allowed in paths; use one that looks like a placeholder.
        let job = Job::new(0, 9, Path::new("/opt/@MINUTE@/acmekeep"), None, &[]).expect("ok");
        let (service, timer) = systemd_units(&job);
        for text in [&service, &timer] {
            assert!(!text.contains("#@"), "{text}");
            let placeholders = ["@COMMAND@", "@READ_WRITE_PATHS@", "@HOUR@", "@MINUTE@"];
            let stray = placeholders.iter().filter(|p| text.contains(*p)).count();
            assert_eq!(stray, usize::from(text == &service), "{text}");
        }
        assert_eq!(
            ini_value(&service, "ExecStart"),
            Some("/opt/@MINUTE@/acmekeep --batch reconcile")
        );
        assert_eq!(ini_value(&timer, "OnCalendar"), Some("*-*-* 09:00:00"));
        for key in ["ProtectSystem", "PrivateTmp", "CapabilityBoundingSet"] {
            assert!(ini_value(&service, key).is_some(), "{key}");
        }
        assert_eq!(ini_value(&service, "TimeoutStartSec"), Some("30min"));
        assert_eq!(ini_value(&timer, "Persistent"), Some("true"));
        assert_eq!(ini_value(&timer, "RandomizedDelaySec"), Some("1h"));
    }

    /// systemd itself counts our relative `timers.target.wants` link as enabled, when
    /// `systemctl` is installed (`--root` works offline, on the temp tree only).
    #[test]
    fn systemctl_sees_the_timer_enabled() {
        if Command::new("systemctl").arg("--version").output().is_err() {
            eprintln!("systemctl is not installed; skipping");
            return;
        }
        let (dir, root) = temp_root();
        install(&root, Scheduler::Systemd, &job(), false).expect("install");
        let out = Command::new("systemctl")
            .arg(format!("--root={}", dir.path().display()))
            .args(["is-enabled", TIMER_UNIT])
            .output()
            .expect("run systemctl");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "enabled");
    }

    /// `systemd-analyze verify` on the rendered units, when it is installed.
    #[test]
    fn systemd_analyze_accepts_the_units() {
        let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
            eprintln!("systemd-analyze is not installed; skipping");
            return;
        };
        assert!(version.status.success());
        let dir = tempfile::tempdir().expect("temp dir");
        // ExecStart must name an existing executable; the spaces exercise the quoting.
        let exe_dir = dir.path().join("my bin");
        fs::create_dir(&exe_dir).expect("mkdir");
        std::os::unix::fs::symlink("/bin/true", exe_dir.join("acmekeep")).expect("link");
        let job = Job::new(
            5,
            17,
            &exe_dir.join("acmekeep"),
            Some(Path::new("/srv/acme state")),
            &[PathBuf::from("/etc/acme/hooks")],
        )
        .expect("valid");
        let (service, timer) = systemd_units(&job);
        let units = dir.path().join("units");
        fs::create_dir(&units).expect("mkdir");
        fs::write(units.join(SERVICE_UNIT), &service).expect("write");
        fs::write(units.join(TIMER_UNIT), &timer).expect("write");
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(units.join(SERVICE_UNIT))
            .arg(units.join(TIMER_UNIT))
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .expect("run systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Lines about other units on the host, or about the test machine, are not ours.
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("acmekeep")).collect();
        assert!(out.status.success() && ours.is_empty(), "{stderr}");
    }
}
