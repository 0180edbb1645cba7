//! Scheduling `reconcile` twice a day: a systemd timer, a cron.d file, or a line in the user's
//! crontab (acmetool §3.3, and Debian's units in §3.4). Twice, because Let's Encrypt asks
//! clients to look at ARI at least twice a day; at a random minute and hour (and that hour + 12)
//! so machines do not all call the CA at once.
//!
//! Deciding is separate from doing. [`Job`] validates the command once, at the edge, so every
//! text made from it is safe to hand to cron, sh and systemd. [`survey`] only looks: it finds
//! every acmekeep and acmetool job, which state directory each one serves, and whether ours is
//! still exactly as quickstart wrote it. [`decide::decide`] is pure: from that survey and the
//! answers it makes a [`decide::Plan`]. [`decide::apply`] is the only code that writes, and only
//! under a [`Root`]: `/` in production, a temp dir in tests. Only the production root runs
//! `systemctl`. [`program`] finds the path the job should run.
//!
//! The rules that keep a machine from ending up with two renewal jobs for one state directory,
//! or with none:
//! - A job serves the state directory named by its `--state` flag, else by `ACME_STATE_DIR` in
//!   its command, cron table or unit environment, else acmetool's default `/var/lib/acme`. Jobs
//!   for other state directories are never touched, only named.
//! - Nothing is installed when an acmekeep job for this state directory exists. If that job is
//!   still exactly as some acmekeep quickstart wrote it (the file or line is recognised by
//!   rendering it again), it is upgraded in place (twice a day, the installed program); once
//!   an administrator has changed it, it is left exactly as it is.
//! - An acmetool job for this state directory is replaced (unless the answer says not to) when
//!   it is a cron.d line, a crontab line or an enabled timer whose command runs acmetool and
//!   nothing else; a run-parts script, a line in /etc/crontab, a command that does more, or
//!   anything quickstart lacks the rights to change is named and kept, and then acmekeep's job
//!   is not installed, so the directory is never renewed by both.
//! - Ours is installed before theirs is removed. If the removal fails, the machine has both jobs
//!   and the error says so; it never has neither.
//! - A new job is named `acmekeep` (`/etc/cron.d/acmekeep`, `acmekeep.timer`) unless a job of
//!   ours for another state directory has that name; then it is named after its state
//!   directory. The cron.d file is created with `O_EXCL`, like acmetool's, and the timer only
//!   where none is, so nothing that appeared meanwhile is overwritten; upgrades replace files
//!   atomically.

pub mod decide;
pub mod program;
pub mod survey;

use std::path::{Path, PathBuf};

use super::Root;
use super::units::{SERVICE_TEMPLATE, TIMER_TEMPLATE, render as render_unit, systemd_booted};
use crate::settings::DEFAULT_STATE_DIR;

/// What quickstart wrote before (before renewal ran twice a day; before the service named its
/// documentation), for recognising (and upgrading) units nobody has changed since.
const LEGACY_SERVICE_TEMPLATES: &[&str] = &[
    include_str!("legacy/v1.service"),
    include_str!("legacy/v2.service"),
];
const LEGACY_DAILY_TIMER_TEMPLATES: &[&str] = &[include_str!("legacy/v1-daily.timer")];

/// Name of the service unit that runs one reconcile.
pub const SERVICE_UNIT: &str = "acmekeep.service";
/// Name of the timer unit that starts [`SERVICE_UNIT`] twice a day.
pub const TIMER_UNIT: &str = "acmekeep.timer";

const ETC_DIR: &str = "etc";
const CRON_D_DIR: &str = "etc/cron.d";
/// The name of our cron.d file and the stem of our units; a second state directory's job gets
/// [`job_name`] when this one is taken.
const JOB_NAME: &str = "acmekeep";

/// The environment lines of the cron.d file, as acmetool writes them.
const CRON_PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin";
/// First line of /etc/cron.d/acmekeep; the daily one is what quickstart wrote before.
const CRON_D_HEADER: &str =
    "# acmekeep: certificate renewal twice a day, written by `acmekeep quickstart`.";
const LEGACY_DAILY_CRON_D_HEADER: &str =
    "# acmekeep: daily certificate renewal, written by `acmekeep quickstart`.";
/// Vixie cron truncates commands at 1000 bytes; stay well below it.
const MAX_COMMAND_LINE: usize = 900;
/// Always writable: Debian's default webroot is `/var/run/acme/acme-challenge`, and /var/run is
/// a link to /run.
const RUN_ACME: &str = "/run/acme";

/// The name for the job of `state_dir` when [`JOB_NAME`] is taken by another state directory's
/// job: `acmekeep-srv-acme` for `/srv/acme`. Only letters, digits, `_` and `-`, which both
/// Debian's cron (it skips cron.d files with other characters) and systemd unit names accept.
fn job_name(state_dir: &str) -> String {
    let mut name = String::from(JOB_NAME);
    for part in state_dir.split('/').filter(|p| !p.is_empty()) {
        name.push('-');
        name.extend(part.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        }));
    }
    name
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
        "{} contains {}, which cron, sh or systemd would interpret; use a path without it (a symlink will do)",
        path.display(),
        describe_char(*ch)
    )]
    UnsafeChar { path: PathBuf, ch: char },
    /// Longer than cron accepts.
    #[error("the command line is {0} bytes long; the limit is {MAX_COMMAND_LINE}")]
    TooLong(usize),
    /// Not a time of day.
    #[error("{hour:02}:{minute:02} is not a time of day")]
    BadTime { hour: u8, minute: u8 },
}

/// A character as a person reads it in a message: `'%'`, or its code point when it is a control
/// or space character that would not show.
fn describe_char(ch: char) -> String {
    if ch.is_control() || ch.is_whitespace() {
        format!("the character U+{:04X}", u32::from(ch))
    } else {
        format!("'{ch}'")
    }
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

/// The reconcile run twice a day: when it runs and what it runs. Paths are validated once,
/// here, so every text made from a `Job` is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    minute: u8,
    /// One of the two hours, 0–23; the other is twelve hours later or earlier. (Kept as given,
    /// so a daily job of an earlier version renders exactly as it was written.)
    hour: u8,
    exe: SafePath,
    state_dir: Option<SafePath>,
    hook_dirs: Vec<SafePath>,
    webroots: Vec<SafePath>,
}

impl Job {
    /// A job at `hour:minute` and twelve hours later or earlier. `exe` is the absolute path of acmekeep. `state_dir` and
    /// `hook_dirs` are given only when they differ from the defaults, which the command line
    /// then leaves to acmekeep, as acmetool does.
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
        job.check_length()?;
        Ok(job)
    }

    fn check_length(&self) -> Result<(), JobError> {
        let len = self.command_line().len();
        if len > MAX_COMMAND_LINE {
            return Err(JobError::TooLong(len));
        }
        Ok(())
    }

    /// Like [`Job::new`] at a random time, chosen as acmetool chooses its one time of day: the
    /// minute is the first random byte mod 60, and the hour the second mod 12 (its twin is 12
    /// hours later). A random time spreads the load on the CA; the slight bias of the modulo
    /// does not matter for that.
    pub fn random(
        exe: &Path,
        state_dir: Option<&Path>,
        hook_dirs: &[PathBuf],
        rng_bytes: [u8; 2],
    ) -> Result<Job, JobError> {
        let [m, h] = rng_bytes;
        Job::new(m % 60, h % 12, exe, state_dir, hook_dirs)
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

    /// The two hours of the day it runs at, the earlier first.
    pub fn hours(&self) -> [u8; 2] {
        let h = self.hour % 12;
        [h, h + 12]
    }

    /// `03:07 and 15:07`, for messages.
    pub fn times(&self) -> String {
        let [a, b] = self.hours();
        format!("{a:02}:{m:02} and {b:02}:{m:02}", m = self.minute)
    }

    /// The program it runs.
    pub fn exe(&self) -> &Path {
        Path::new(&self.exe.0)
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

    /// The job whose [`Job::command_line`] is exactly `command`, at `minute` and `hour`; `None`
    /// for any other command (one quickstart did not write).
    fn from_command_line(command: &str, minute: u8, hour: u8) -> Option<Job> {
        let words = shlex::split(command)?;
        let (exe, rest) = words.split_first()?;
        let rest = rest.strip_prefix(&["--batch".to_owned()])?;
        let (last, flags) = rest.split_last()?;
        if last != "reconcile" {
            return None;
        }
        let mut state = None;
        let mut hooks = Vec::new();
        for (i, flag) in flags.iter().enumerate() {
            if let Some(dir) = flag.strip_prefix("--state=")
                && i == 0
            {
                state = Some(PathBuf::from(dir));
            } else if let Some(dir) = flag.strip_prefix("--hooks=") {
                hooks.push(PathBuf::from(dir));
            } else {
                return None;
            }
        }
        let job = Job::new(minute, hour, Path::new(exe), state.as_deref(), &hooks).ok()?;
        (job.command_line() == command).then_some(job)
    }

    /// The same job at another program path, if that path is valid.
    fn with_exe(&self, exe: &Path) -> Result<Job, JobError> {
        let job = Job {
            exe: SafePath::new(exe)?,
            ..self.clone()
        };
        job.check_length()?;
        Ok(job)
    }

    /// The same job with other hook directories.
    fn with_hook_dirs(&self, hook_dirs: &[SafePath]) -> Result<Job, JobError> {
        let job = Job {
            hook_dirs: hook_dirs.to_vec(),
            ..self.clone()
        };
        job.check_length()?;
        Ok(job)
    }

    /// The state directory this job reconciles.
    fn serves(&self) -> &str {
        self.state_dir.as_ref().map_or(DEFAULT_STATE_DIR, |d| &d.0)
    }

    /// The `ReadWritePaths=` value: the state directory, /run/acme and the webroots, each with
    /// systemd's `-` prefix, so a missing one is skipped rather than failing the whole unit; a
    /// missing state directory is then reported by acmekeep itself, which is clearer.
    fn read_write_paths(&self) -> String {
        let mut paths = vec![self.serves(), RUN_ACME];
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
    (
        service_unit(SERVICE_TEMPLATE, job),
        render(TIMER_TEMPLATE, &[("HOURS", &timer_hours(job))], job),
    )
}

/// Fills in a unit template for `job`: `vars`, and `@MINUTE@` and (for old templates) `@HOUR@`.
fn render(template: &str, vars: &[(&str, &str)], job: &Job) -> String {
    let minute = format!("{:02}", job.minute);
    let hour = format!("{:02}", job.hour);
    let mut all: Vec<(&str, &str)> = vars.to_vec();
    all.extend([("MINUTE", minute.as_str()), ("HOUR", hour.as_str())]);
    render_unit(template, &all)
}

fn service_unit(template: &str, job: &Job) -> String {
    render(
        template,
        &[
            ("COMMAND", &job.command_line()),
            ("READ_WRITE_PATHS", &job.read_write_paths()),
        ],
        job,
    )
}

/// The hour part of `OnCalendar=`: `03,15`.
fn timer_hours(job: &Job) -> String {
    let [a, b] = job.hours();
    format!("{a:02},{b:02}")
}

/// `/etc/cron.d/acmekeep` as acmetool writes its own file, plus a comment naming its origin.
pub fn cron_d_file(job: &Job) -> String {
    cron_d_text(job, false)
}

/// The cron.d file, or the daily one earlier versions wrote.
fn cron_d_text(job: &Job, daily: bool) -> String {
    let header = if daily {
        LEGACY_DAILY_CRON_D_HEADER
    } else {
        CRON_D_HEADER
    };
    format!(
        "{header}\n\
         SHELL=/bin/sh\n\
         PATH={CRON_PATH}\n\
         MAILTO=root\n\
         {} {} * * * root {}\n",
        job.minute,
        cron_hours(job, daily),
        job.command_line()
    )
}

/// The hour field: `3,15`, or `3` for the daily jobs of old.
fn cron_hours(job: &Job, daily: bool) -> String {
    let [a, b] = job.hours();
    if daily {
        job.hour.to_string()
    } else {
        format!("{a},{b}")
    }
}

/// The line for a user's crontab (no user field), without a trailing newline.
pub fn crontab_line(job: &Job) -> String {
    crontab_text(job, false)
}

fn crontab_text(job: &Job, daily: bool) -> String {
    format!(
        "{} {} * * * {}",
        job.minute,
        cron_hours(job, daily),
        job.command_line()
    )
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
    if is_root && systemd_booted(root) {
        Scheduler::Systemd
    } else if is_root && root.join(CRON_D_DIR).is_dir() {
        Scheduler::CronD
    } else if root.crontab.is_some() {
        Scheduler::UserCrontab
    } else {
        Scheduler::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::units::SD_BOOTED_DIR;
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::process::Command;

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

    /// The value of the first `key=` line.
    fn ini_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
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

    #[test]
    fn random_time_is_twice_a_day_twelve_hours_apart_for_every_byte_pair() {
        let mut minutes = [false; 60];
        let mut hours = [false; 24];
        for a in 0..=u8::MAX {
            for b in 0..=u8::MAX {
                let job = Job::random(Path::new(EXE), None, &[], [a, b]).expect("valid");
                let [first, second] = job.hours();
                assert_eq!((job.minute(), first), (a % 60, b % 12), "{a} {b}");
                assert_eq!(second, first + 12);
                minutes[usize::from(job.minute())] = true;
                hours[usize::from(first)] = true;
                hours[usize::from(second)] = true;
            }
        }
        assert!(minutes.iter().all(|&m| m) && hours.iter().all(|&h| h));
        assert_eq!(job().times(), "03:07 and 15:07");
        let late = Job::new(5, 17, Path::new(EXE), None, &[]).expect("valid");
        assert_eq!(
            late.hours(),
            [5, 17],
            "an afternoon hour gives the same pair"
        );
    }

    #[test]
    fn cron_texts_run_twice_a_day_in_acmetools_shape() {
        assert_eq!(
            cron_d_file(&job()),
            "# acmekeep: certificate renewal twice a day, written by `acmekeep quickstart`.\n\
             SHELL=/bin/sh\n\
             PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin\n\
             MAILTO=root\n\
             7 3,15 * * * root /usr/bin/acmekeep --batch reconcile\n"
        );
        assert_eq!(
            crontab_line(&job()),
            "7 3,15 * * * /usr/bin/acmekeep --batch reconcile"
        );
        // What versions before this one wrote, byte for byte (recognised for upgrades).
        assert_eq!(
            cron_d_text(&job(), true),
            "# acmekeep: daily certificate renewal, written by `acmekeep quickstart`.\n\
             SHELL=/bin/sh\n\
             PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin\n\
             MAILTO=root\n\
             7 3 * * * root /usr/bin/acmekeep --batch reconcile\n"
        );
    }

    #[test]
    fn from_command_line_takes_back_only_what_command_line_makes() {
        let hooks = [PathBuf::from("/etc/acme/hooks"), PathBuf::from("/my hooks")];
        let job = Job::new(
            7,
            3,
            Path::new("/opt/a b/acmekeep"),
            Some(Path::new("/srv/x")),
            &hooks,
        )
        .expect("valid");
        let back = Job::from_command_line(&job.command_line(), 7, 3).expect("ours");
        assert_eq!(back, job);
        for other in [
            "/usr/bin/acmekeep --batch reconcile >/dev/null",
            "/usr/bin/acmekeep reconcile",
            "/usr/bin/acmekeep --batch --hooks=/h --state=/s reconcile",
            "/usr/bin/acmekeep  --batch reconcile",
            "'/usr/bin/acmekeep' --batch reconcile",
            "acmekeep --batch reconcile",
        ] {
            assert_eq!(Job::from_command_line(other, 0, 0), None, "{other}");
        }
    }

    #[test]
    fn job_names_for_other_state_dirs_are_plain() {
        assert_eq!(job_name("/srv/acme"), "acmekeep-srv-acme");
        assert_eq!(job_name("/srv/my acme.d/"), "acmekeep-srv-my_acme_d");
        assert_eq!(job_name("/srv/ö"), "acmekeep-srv-_");
    }

    #[test]
    fn templates_leave_no_placeholders() {
        // '@' is allowed in paths; use one that looks like a placeholder.
        let job = Job::new(0, 9, Path::new("/opt/@MINUTE@/acmekeep"), None, &[]).expect("ok");
        let (service, timer) = systemd_units(&job);
        for text in [&service, &timer] {
            assert!(!text.contains("#@"), "{text}");
            let placeholders = [
                "@COMMAND@",
                "@READ_WRITE_PATHS@",
                "@HOURS@",
                "@HOUR@",
                "@MINUTE@",
            ];
            let stray = placeholders.iter().filter(|p| text.contains(*p)).count();
            assert_eq!(stray, usize::from(text == &service), "{text}");
        }
        assert_eq!(
            ini_value(&service, "ExecStart"),
            Some("/opt/@MINUTE@/acmekeep --batch reconcile")
        );
        assert_eq!(ini_value(&timer, "OnCalendar"), Some("*-*-* 09,21:00:00"));
        for key in ["ProtectSystem", "PrivateTmp", "CapabilityBoundingSet"] {
            assert!(ini_value(&service, key).is_some(), "{key}");
        }
        assert_eq!(ini_value(&service, "TimeoutStartSec"), Some("30min"));
        assert_eq!(ini_value(&timer, "Persistent"), Some("true"));
        assert_eq!(ini_value(&timer, "RandomizedDelaySec"), Some("1h"));
        // The legacy daily timer still renders as it was.
        let legacy = render(LEGACY_DAILY_TIMER_TEMPLATES[0], &[], &job);
        assert_eq!(ini_value(&legacy, "OnCalendar"), Some("*-*-* 09:00:00"));
    }

    /// systemd reads the twice-a-day calendar as two times twelve hours apart.
    #[test]
    fn systemd_analyze_reads_the_calendar_as_two_times() {
        let (_, timer) = systemd_units(&job());
        let spec = ini_value(&timer, "OnCalendar").expect("OnCalendar");
        let Ok(out) = Command::new("systemd-analyze")
            .args(["calendar", "--iterations=3", spec])
            .output()
        else {
            eprintln!("systemd-analyze is not installed; skipping");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let times: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("elapse:") || l.contains("Iter."))
            .filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.len() == 8 && w.as_bytes()[2] == b':' && w.as_bytes()[5] == b':')
            })
            .collect();
        assert_eq!(times.len(), 3, "{text}");
        let mut sorted: Vec<&str> = times.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, ["03:07:00", "15:07:00"], "{text}");
    }

    /// The package's postrm removes on purge the cron jobs quickstart wrote for
    /// /usr/bin/acmekeep (they would fail twice a day from then on), recognising them by the
    /// text [`cron_d_text`] writes: its function is run here by sh on files rendered now.
    #[test]
    fn the_package_purge_removes_the_cron_jobs_quickstart_wrote_and_nothing_else() {
        let postrm = include_str!("../../../debian/postrm");
        let start = postrm.find("remove_cron_job() {").expect("the function");
        let end = start + postrm[start..].find("\n}\n").expect("its end") + 3;
        let dir = tempfile::tempdir().expect("tempdir");
        let job = |exe: &str, state: Option<&str>| {
            Job::new(7, 3, Path::new(exe), state.map(Path::new), &[]).expect("valid")
        };
        let now = cron_d_text(&job("/usr/bin/acmekeep", None), false);
        let files = [
            ("now", now.clone(), false),
            (
                "daily-other-state",
                cron_d_text(&job("/usr/bin/acmekeep", Some("/srv/acme")), true),
                false,
            ),
            ("edited", format!("{now}0 1 * * * root backup\n"), true),
            (
                "another-program",
                cron_d_text(&job("/usr/local/bin/acmekeep", None), false),
                true,
            ),
        ];
        for (name, text, _) in &files {
            fs::write(dir.path().join(name), text).expect("write");
        }
        let out = Command::new("sh")
            .arg("-ec")
            .arg(format!(
                "{}for f in \"$@\"; do remove_cron_job \"$f\"; done",
                &postrm[start..end]
            ))
            .arg("sh")
            .args(files.iter().map(|(name, ..)| dir.path().join(name)))
            .output()
            .expect("sh");
        assert!(out.status.success(), "{out:?}");
        for (name, text, kept) in &files {
            assert_eq!(dir.path().join(name).exists(), *kept, "{name}:\n{text}");
        }
    }
}
