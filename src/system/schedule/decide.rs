//! What quickstart does about renewal jobs: [`classify`] sorts the jobs [`survey`] found by the
//! state directory they serve and by what may be done to them, [`decide`] turns that and the
//! answers into a [`Plan`] (both pure), and [`apply`] carries the plan out.
//!
//! [`survey`]: super::survey::survey

use std::fmt::Write as _;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, anyhow, bail};

use super::survey::{AsWritten, Found, Place, Serves, Tool, Written, is_job_line};
use super::{
    CRON_D_DIR, JOB_NAME, Job, Scheduler, cron_d_file, crontab_line, job_name, systemd_units,
};
use crate::files::{AtomicFs, create_dir_all_mode};
use crate::system::units::{TIMERS_WANTS_DIR, UNIT_DIR, systemctl};
use crate::system::{DIR_MODE, FILE_MODE, Root};

/// What the user running quickstart may change.
#[derive(Debug, Clone, Copy)]
pub struct Rights {
    /// Root may change files in /etc.
    pub is_root: bool,
    /// There is a crontab(1) to change the user's crontab with.
    pub has_crontab: bool,
}

/// Why an acmetool job for this state directory cannot be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// A run-parts script may do more than renew; quickstart does not edit scripts.
    Script,
    /// /etc/crontab is the administrator's own table.
    SystemCrontab,
    /// It is in /etc, and quickstart is not running as root.
    NeedsRoot,
    /// Its command runs more than the tool (other commands, a wrapper), so removing it could
    /// remove more than renewal.
    Complex,
}

impl Keep {
    fn reason(self) -> &'static str {
        match self {
            Keep::Script => "quickstart does not edit scripts",
            Keep::SystemCrontab => "quickstart does not edit /etc/crontab",
            Keep::NeedsRoot => "only root can change it",
            Keep::Complex => {
                "its command does more than run acmetool, so quickstart does not remove it"
            }
        }
    }
}

/// The jobs found, sorted by what they mean for this state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Situation {
    /// Our jobs for this state directory; the first is the one that counts.
    pub ours: Vec<Found>,
    /// acmetool's jobs for this state directory that quickstart can replace.
    pub replaceable: Vec<Found>,
    /// acmetool's jobs for this state directory that it cannot, and why.
    pub kept: Vec<(Found, Keep)>,
    /// Jobs for other state directories (or for one that cannot be told): never touched.
    pub elsewhere: Vec<Found>,
}

/// Sorts `found` for the state directory `state_dir`.
pub fn classify(found: Vec<Found>, state_dir: &Path, rights: Rights) -> Situation {
    let mut s = Situation::default();
    for f in found {
        if !f.serves.is(state_dir) {
            s.elsewhere.push(f);
        } else if f.tool == Tool::Acmekeep {
            s.ours.push(f);
        } else {
            match keep_reason(&f, rights) {
                Some(why) => s.kept.push((f, why)),
                None => s.replaceable.push(f),
            }
        }
    }
    s
}

fn keep_reason(f: &Found, rights: Rights) -> Option<Keep> {
    match &f.place {
        Place::Script(_) => Some(Keep::Script),
        Place::Table(path) if !path.parent().is_some_and(|d| d.ends_with(CRON_D_DIR)) => {
            Some(Keep::SystemCrontab)
        }
        Place::Table(_) | Place::Timer { .. } if !rights.is_root => Some(Keep::NeedsRoot),
        Place::Crontab if !rights.has_crontab => Some(Keep::NeedsRoot),
        Place::Table(_) | Place::Crontab if !f.plain => Some(Keep::Complex),
        _ => None,
    }
}

/// The answers and facts [`decide`] needs besides the [`Situation`].
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The state directory quickstart sets up.
    pub state_dir: PathBuf,
    /// How a new job would be scheduled.
    pub scheduler: Scheduler,
    /// A new job: a random time, the program to run, the flags.
    pub job: Job,
    /// Whether the job's program is an installed copy. An upgrade keeps the program of the job
    /// it upgrades unless this is true.
    pub program_installed: bool,
    /// Whether the hook directories were given on this command line; an upgrade keeps the
    /// old job's otherwise.
    pub hooks_explicit: bool,
    /// The answer to `acmetool-quickstart-install-cronjob` (asked only when there is no job of
    /// ours for this state directory).
    pub install: bool,
    /// The answer to `acmekeep-quickstart-replace-acmetool-job`.
    pub replace_acmetool: bool,
}

/// What to do about our job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ours {
    /// Nothing to install (the answer was no).
    Nothing,
    /// Install `job` with the scheduler, under this name (the cron.d file, the units' stem).
    Install(Scheduler, Job, String),
    /// There is no scheduler: show this crontab line.
    Print(String),
    /// Ours is there as quickstart wrote it; rewrite these files or lines.
    Upgrade {
        found: Found,
        job: Job,
        changes: Vec<Change>,
        /// The service was changed by hand and is left as it is (the timer is upgraded).
        service_edited: bool,
    },
    /// Ours is there and up to date.
    Current(Found),
    /// Ours is there, changed by hand: left as it is.
    Edited(Found),
    /// Not installed, because an acmetool job for this state directory stays.
    Blocked,
}

/// One rewrite of a job of ours that is as quickstart wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Replace this file (the cron.d file, a unit) with `text`.
    File { path: PathBuf, text: String },
    /// Replace this line of the user's crontab.
    CrontabLine { old: String, new: String },
}

/// What [`apply`] will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Our job.
    pub ours: Ours,
    /// acmetool's jobs for this state directory to remove once ours is in place.
    pub remove: Vec<Found>,
    /// acmetool's jobs for this state directory that stay, and why.
    pub kept: Vec<(Found, Keep)>,
    /// acmetool's jobs for this state directory kept because the answer said so.
    pub declined: Vec<Found>,
    /// Jobs for other state directories, named and left alone.
    pub elsewhere: Vec<Found>,
    /// Further jobs of ours for this state directory, left alone.
    pub more_ours: Vec<Found>,
    /// The state directory.
    pub state_dir: PathBuf,
}

impl Plan {
    /// Whether a new job will run the program of [`Wanted::job`] (so its path matters).
    pub fn installs_new_job(&self) -> bool {
        matches!(self.ours, Ours::Install(..))
    }
}

/// The plan for `s` and `w`. Pure: reads nothing, writes nothing.
pub fn decide(s: Situation, w: &Wanted) -> Plan {
    let Situation {
        mut ours,
        replaceable,
        kept,
        elsewhere,
    } = s;
    let more_ours = if ours.len() > 1 {
        ours.split_off(1)
    } else {
        Vec::new()
    };
    let (remove, declined) = if w.replace_acmetool {
        (replaceable, Vec::new())
    } else {
        (Vec::new(), replaceable)
    };
    let ours = match ours.pop() {
        Some(found) => existing(found, w),
        None if !w.install => Ours::Nothing,
        None if !kept.is_empty() || !declined.is_empty() => Ours::Blocked,
        None if w.scheduler == Scheduler::None => Ours::Print(crontab_line(&w.job)),
        None => Ours::Install(
            w.scheduler,
            w.job.clone(),
            install_name(&elsewhere, w.scheduler, &w.state_dir),
        ),
    };
    // acmetool's jobs go only when ours will be there to take over.
    let remove = match ours {
        Ours::Nothing | Ours::Print(_) | Ours::Blocked => Vec::new(),
        _ => remove,
    };
    let declined = match ours {
        Ours::Nothing | Ours::Print(_) => Vec::new(),
        _ => declined,
    };
    Plan {
        ours,
        remove,
        kept,
        declined,
        elsewhere,
        more_ours,
        state_dir: w.state_dir.clone(),
    }
}

/// The name a new job gets: `acmekeep`, unless a job of ours for another state directory has
/// it; then one made from the state directory ([`job_name`]), so that job is never
/// overwritten. (Only files and units are named; a crontab line has no name.)
fn install_name(elsewhere: &[Found], sched: Scheduler, state_dir: &Path) -> String {
    let taken = elsewhere.iter().any(|f| match (&f.place, sched) {
        (Place::Table(path), Scheduler::CronD) => {
            path.file_name().is_some_and(|n| n == JOB_NAME)
                && path.parent().is_some_and(|d| d.ends_with(CRON_D_DIR))
        }
        (Place::Timer { name, .. }, Scheduler::Systemd) => *name == format!("{JOB_NAME}.timer"),
        _ => false,
    });
    if taken {
        job_name(&state_dir.to_string_lossy())
    } else {
        JOB_NAME.to_owned()
    }
}

/// What to do with a job of ours for this state directory.
fn existing(found: Found, w: &Wanted) -> Ours {
    match found.written.clone() {
        Written::No => Ours::Edited(found),
        Written::Cron(as_written) => existing_cron(found, &as_written, w),
        Written::Units { timer, service } => existing_units(found, timer, service, w),
    }
}

/// [`existing`] for a cron.d file or crontab line of ours, as written.
fn existing_cron(found: Found, as_written: &AsWritten, w: &Wanted) -> Ours {
    let Some(job) = upgraded(&as_written.job, w) else {
        return Ours::Edited(found);
    };
    let change = match &found.place {
        Place::Table(path) => {
            let text = cron_d_file(&job);
            let old = super::cron_d_text(&as_written.job, as_written.daily);
            (text != old).then(|| Change::File {
                path: path.clone(),
                text,
            })
        }
        Place::Crontab => {
            let new = crontab_line(&job);
            let old = found.line.clone().unwrap_or_default();
            (new != old).then_some(Change::CrontabLine { old, new })
        }
        _ => None,
    };
    match change {
        Some(change) => Ours::Upgrade {
            found,
            job,
            changes: vec![change],
            service_edited: false,
        },
        None => Ours::Current(found),
    }
}

/// [`existing`] for our systemd units: the timer as written (`None`: changed by hand), the
/// service as written or not.
fn existing_units(
    found: Found,
    timer: Option<AsWritten>,
    service: Option<AsWritten>,
    w: &Wanted,
) -> Ours {
    let (
        Place::Timer {
            unit: Some(timer_path),
            ..
        },
        Some(timer),
    ) = (&found.place, timer)
    else {
        return Ours::Edited(found);
    };
    // The time comes from the timer; the command from the service when it is ours.
    let base = match &service {
        Some(s) => Job {
            minute: timer.job.minute,
            hour: timer.job.hour,
            ..s.job.clone()
        },
        None => timer.job.clone(),
    };
    let Some(job) = upgraded(&base, w) else {
        return Ours::Edited(found);
    };
    let (service_text, timer_text) = systemd_units(&job);
    let mut changes = Vec::new();
    if timer.old {
        changes.push(Change::File {
            path: timer_path.clone(),
            text: timer_text,
        });
    }
    if let Some(s) = &service {
        // A service from an older template is rewritten whatever its job.
        let now = super::service_unit(crate::system::units::SERVICE_TEMPLATE, &s.job);
        if s.old || now != service_text {
            let path = timer_path.with_file_name(service_name(&found.place));
            changes.push(Change::File {
                path,
                text: service_text,
            });
        }
    }
    if changes.is_empty() {
        Ours::Current(found)
    } else {
        Ours::Upgrade {
            found,
            job,
            changes,
            service_edited: service.is_none(),
        }
    }
}

/// `old` upgraded: twice a day at its own time, running the new program if that is an
/// installed copy (else still its own), with the hook directories given now if any were
/// given, and every webroot either knows. `None` if that job cannot be made (a path too long).
fn upgraded(old: &Job, w: &Wanted) -> Option<Job> {
    let mut job = old.clone();
    if w.program_installed {
        job = job.with_exe(w.job.exe()).ok()?;
    }
    if w.hooks_explicit {
        job = job.with_hook_dirs(&w.job.hook_dirs).ok()?;
    }
    let webroots: Vec<PathBuf> = w.job.webroots.iter().map(|d| PathBuf::from(&d.0)).collect();
    job.with_webroots(&webroots).ok()
}

/// Carries `plan` out under `root`: our job first (installed or upgraded), then acmetool's
/// jobs for this state directory are removed. Returns what happened, one sentence a line,
/// for the caller to print.
pub fn apply(root: &Root, plan: &Plan) -> Result<Vec<String>> {
    let dir = plan.state_dir.display();
    let mut said: Vec<String> = plan
        .elsewhere
        .iter()
        .map(|f| match &f.serves {
            Serves::Dir(d) => format!(
                "Left {f} alone: it renews {}, not {dir}.",
                d.display()
            ),
            Serves::Unknown => format!(
                "Left {f} alone: which state directory it renews cannot be told, so check that it is not {dir}."
            ),
        })
        .collect();
    // One write of the user's crontab does everything that concerns it.
    let mut crontab_edit = CrontabEdit::default();
    for f in plan.remove.iter().filter(|f| f.place == Place::Crontab) {
        crontab_edit.remove.extend(f.line.clone());
    }
    said.extend(apply_ours(root, &plan.ours, &mut crontab_edit)?);
    if !crontab_edit.is_empty() {
        crontab_edit.apply(root)?;
    }
    for f in &plan.remove {
        if f.place != Place::Crontab {
            remove(root, f).with_context(|| {
                format!(
                    "acmekeep's job is in place, but {f} is still there; remove it by hand so {dir} is not renewed twice"
                )
            })?;
        }
        said.push(format!("Replaced {f}, which renewed {dir}."));
    }
    said.extend(left_in_place(plan));
    Ok(said)
}

/// Carries out what `ours` says of our own job (what concerns the user's crontab goes into
/// `crontab_edit`, written by the caller); what happened, if anything is to be said.
fn apply_ours(root: &Root, ours: &Ours, crontab_edit: &mut CrontabEdit) -> Result<Option<String>> {
    Ok(Some(match ours {
        Ours::Nothing | Ours::Blocked => return Ok(None),
        Ours::Print(line) => format!(
            "No way to schedule renewal was found (no systemd, no /etc/cron.d, no crontab program). \
             Add this line to a crontab to renew twice a day:\n{line}"
        ),
        Ours::Install(Scheduler::UserCrontab, job, _) => {
            crontab_edit.append = Some(crontab_line(job));
            format!(
                "Renewal scheduled twice a day at {}: a line in your crontab.",
                job.times()
            )
        }
        Ours::Install(sched, job, name) => {
            let what = install(root, *sched, job, name)?;
            format!("Renewal scheduled twice a day at {}: {what}.", job.times())
        }
        Ours::Upgrade {
            found,
            job,
            changes,
            service_edited,
        } => {
            for change in changes {
                match change {
                    Change::File { path, text } => rewrite(root, path, text)?,
                    Change::CrontabLine { old, new } => {
                        crontab_edit.replace = Some((old.clone(), new.clone()));
                    }
                }
            }
            if let Place::Timer { name, .. } = &found.place
                && root.live
            {
                systemctl(&["daemon-reload"]);
                systemctl(&["try-restart", name]);
            }
            let mut line = format!(
                "Upgraded {found}, as an earlier quickstart wrote it: renewal runs twice a day at {}, with {}.",
                job.times(),
                job.exe().display()
            );
            if *service_edited {
                let _ = write!(
                    line,
                    " Its {} is not as quickstart wrote it, so it is left as it is.",
                    service_name(&found.place)
                );
            }
            line
        }
        Ours::Current(found) => format!("Renewal is already scheduled: {found}."),
        Ours::Edited(found) => {
            let mut line = format!(
                "Renewal is already scheduled: {found}, which was changed by hand, so quickstart leaves it as it is."
            );
            if found.once_a_day {
                line.push_str(
                    " It runs once a day; Let's Encrypt asks clients to check for renewal at least twice a day.",
                );
            }
            line
        }
    }))
}

/// What is said of the jobs left in place: kept for a reason, kept as answered, and other
/// jobs of ours.
fn left_in_place(plan: &Plan) -> Vec<String> {
    let dir = plan.state_dir.display();
    let blocked = plan.ours == Ours::Blocked;
    let mut said = Vec::new();
    for (f, why) in &plan.kept {
        said.push(if blocked {
            format!(
                "{f} renews {dir}, and {}; acmekeep's job was not installed, so the directory is not renewed twice. Remove it, then run quickstart again.",
                why.reason()
            )
        } else {
            format!(
                "{f} also renews {dir}, and {}; remove it by hand so the directory is not renewed twice.",
                why.reason()
            )
        });
    }
    for f in &plan.declined {
        said.push(if blocked {
            format!("Kept {f}, as answered; acmekeep's job was not installed.")
        } else {
            format!("Kept {f}, as answered; it also renews {dir}.")
        });
    }
    for f in &plan.more_ours {
        said.push(format!("Also found {f}; it was left as it is."));
    }
    said
}

/// The service a timer of ours starts: the one of the same name.
fn service_name(place: &Place) -> String {
    match place {
        Place::Timer { name, .. } => format!("{}.service", name.trim_end_matches(".timer")),
        _ => format!("{JOB_NAME}.service"),
    }
}

/// Installs a new job of ours as `name` (the cron.d file, the units' stem) and says where, in
/// words. An existing timer or cron.d file of that name is never overwritten: it appeared
/// since the survey.
fn install(root: &Root, sched: Scheduler, job: &Job, name: &str) -> Result<String> {
    match sched {
        Scheduler::Systemd => {
            let timer = root.join(UNIT_DIR).join(format!("{name}.timer"));
            let link = root.join(TIMERS_WANTS_DIR).join(format!("{name}.timer"));
            if let Some(there) = [&timer, &link]
                .into_iter()
                .find(|p| fs::symlink_metadata(p).is_ok())
            {
                bail!(
                    "{} appeared while quickstart ran; it was left as it is, run quickstart again",
                    there.display()
                );
            }
            let timer = install_systemd(root, job, name)?;
            Ok(format!("systemd timer {}", timer.display()))
        }
        Scheduler::CronD => {
            let path = root.join(CRON_D_DIR).join(name);
            match write_new_file(&path, cron_d_file(job).as_bytes(), FILE_MODE) {
                Ok(()) => Ok(path.display().to_string()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => bail!(
                    "{} appeared while quickstart ran; it was left as it is, run quickstart again",
                    path.display()
                ),
                Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        Scheduler::UserCrontab | Scheduler::None => Err(anyhow!(
            "internal error: a crontab line or a printed line is not installed as a file"
        )),
    }
}

fn install_systemd(root: &Root, job: &Job, stem: &str) -> Result<PathBuf> {
    let unit_dir = root.join(UNIT_DIR);
    let wants_dir = root.join(TIMERS_WANTS_DIR);
    create_dir_all_mode(&unit_dir, DIR_MODE)
        .with_context(|| format!("creating {}", unit_dir.display()))?;
    let (service_text, timer_text) = systemd_units(job);
    let timer_name = format!("{stem}.timer");
    let service = unit_dir.join(format!("{stem}.service"));
    let timer = unit_dir.join(&timer_name);
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
    let link = wants_dir.join(&timer_name);
    AtomicFs::new(&wants_dir)
        .symlink(&Path::new("..").join(&timer_name), &link)
        .with_context(|| format!("enabling {timer_name} ({})", link.display()))?;
    if root.live {
        systemctl(&["daemon-reload"]);
        systemctl(&["start", &timer_name]);
    }
    Ok(timer)
}

/// Replaces a file of ours atomically (its temp file in the same directory, which cron and
/// systemd ignore for the moment it exists: the name has a dot and no unit suffix).
fn rewrite(root: &Root, path: &Path, text: &str) -> Result<()> {
    let _ = root;
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", path.display()))?;
    AtomicFs::new(dir)
        .write_file(path, text.as_bytes(), FILE_MODE)
        .with_context(|| format!("writing {}", path.display()))
}

/// Removes an acmetool job that is not in the user's crontab.
fn remove(root: &Root, f: &Found) -> Result<()> {
    match &f.place {
        Place::Table(path) => remove_table_line(path, f.line.as_deref().unwrap_or_default()),
        Place::Timer {
            name,
            link: Some(link),
            ..
        } => {
            match fs::remove_file(link) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", link.display()));
                }
                _ => {}
            }
            if root.live {
                systemctl(&["daemon-reload"]);
                systemctl(&["stop", name]);
            }
            Ok(())
        }
        Place::Timer { .. } => Ok(()),
        Place::Script(path) => bail!("internal: {} is never removed", path.display()),
        Place::Crontab => bail!("internal: crontab lines are removed with one write"),
    }
}

/// Removes `line` from the cron table `path`; the file goes when no job line is left in it.
/// Read again now, so a line changed meanwhile is left alone.
fn remove_table_line(path: &Path, line: &str) -> Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let kept: String = text
        .lines()
        .filter(|l| *l != line)
        .map(|l| format!("{l}\n"))
        .collect();
    if kept.lines().any(is_job_line) {
        let mode = fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(FILE_MODE);
        let dir = path
            .parent()
            .ok_or_else(|| anyhow!("{} has no directory", path.display()))?;
        AtomicFs::new(dir)
            .write_file(path, kept.as_bytes(), mode)
            .with_context(|| format!("writing {}", path.display()))
    } else {
        fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
    }
}

/// The changes to make to the user's crontab in one write.
#[derive(Debug, Default)]
struct CrontabEdit {
    remove: Vec<String>,
    replace: Option<(String, String)>,
    append: Option<String>,
}

impl CrontabEdit {
    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.replace.is_none() && self.append.is_none()
    }

    /// Reads the crontab again, edits it, and writes it back if it changed. A crontab that
    /// cannot be read is an error, never an empty crontab, so a user's jobs are never lost.
    fn apply(&self, root: &Root) -> Result<()> {
        let before = read_crontab(root)?;
        let mut out = String::with_capacity(before.len() + 200);
        let mut replaced = false;
        for line in before.lines() {
            if self.remove.iter().any(|r| r == line) {
                continue;
            }
            match &self.replace {
                Some((old, new)) if old == line && !replaced => {
                    replaced = true;
                    out.push_str(new);
                }
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        if let Some((old, _)) = &self.replace
            && !replaced
        {
            bail!("the crontab line {old} changed while quickstart ran; run quickstart again");
        }
        if let Some(line) = &self.append {
            out.push_str(line);
            out.push('\n');
        }
        if out != before {
            write_crontab(root, &out)?;
        }
        Ok(())
    }
}

/// Reads the user's crontab for the survey: `None` when there is no crontab program. For the
/// user-crontab scheduler an unreadable crontab is an error; otherwise it is only looked at,
/// and failing to read it is a warning.
pub fn current_crontab(root: &Root, required: bool) -> Result<Option<String>> {
    if root.crontab.is_none() {
        if required {
            bail!("there is no crontab program to install the job with");
        }
        return Ok(None);
    }
    match read_crontab(root) {
        Ok(text) => Ok(Some(text)),
        Err(e) if !required => {
            tracing::warn!("cannot read the crontab to look for an acmetool job there: {e:#}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A `crontab` command with the root's program and leading arguments, in the C locale so its
/// messages can be recognised.
fn crontab_command(root: &Root, arg: &str) -> Result<std::process::Command> {
    let (program, leading) = root
        .crontab
        .as_ref()
        .ok_or_else(|| anyhow!("there is no crontab program"))?;
    let mut cmd = std::process::Command::new(program);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::schedule::survey::survey;
    use crate::system::schedule::{SERVICE_UNIT, TIMER_UNIT};
    use std::os::unix::fs::MetadataExt;

    const EXE: &str = "/usr/bin/acmekeep";
    const OLD_EXE: &str = "/root/src/acmekeep/target/release/acmekeep";
    const DEFAULT: &str = "/var/lib/acme";

    fn temp_root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().expect("create temp dir");
        let root = Root::under(dir.path().join("root"));
        fs::create_dir_all(root.dir()).expect("mkdir root");
        (dir, root)
    }

    fn write(root: &Root, rel: &str, text: &str) -> PathBuf {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        fs::write(&path, text).expect("write");
        path
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn job_at(minute: u8, hour: u8, exe: &str, state: Option<&str>) -> Job {
        Job::new(minute, hour, Path::new(exe), state.map(Path::new), &[]).expect("valid job")
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
        read(&dir.join("spool"))
    }

    fn writes(dir: &Path) -> usize {
        fs::read_to_string(dir.join("writes")).map_or(0, |s| s.lines().count())
    }

    /// One quickstart's worth of deciding and doing.
    struct Run<'a> {
        root: &'a Root,
        state: &'a str,
        sched: Scheduler,
        is_root: bool,
        job: Job,
        installed: bool,
        replace: bool,
    }

    impl<'a> Run<'a> {
        fn new(root: &'a Root, sched: Scheduler) -> Self {
            Run {
                root,
                state: DEFAULT,
                sched,
                is_root: true,
                job: job_at(7, 3, EXE, None),
                installed: true,
                replace: true,
            }
        }

        fn plan(&self) -> Plan {
            let crontab =
                current_crontab(self.root, self.sched == Scheduler::UserCrontab).expect("crontab");
            let rights = Rights {
                is_root: self.is_root,
                has_crontab: crontab.is_some(),
            };
            let found = survey(self.root, crontab.as_deref());
            decide(
                classify(found, Path::new(self.state), rights),
                &Wanted {
                    state_dir: PathBuf::from(self.state),
                    scheduler: self.sched,
                    job: self.job.clone(),
                    program_installed: self.installed,
                    hooks_explicit: false,
                    install: true,
                    replace_acmetool: self.replace,
                },
            )
        }

        /// Plans and applies; the plan and what was said.
        fn go(&self) -> (Plan, String) {
            let plan = self.plan();
            let said = apply(self.root, &plan).expect("apply").join("\n");
            (plan, said)
        }
    }

    #[test]
    fn a_new_cron_d_job_runs_twice_a_day_and_a_second_run_changes_nothing() {
        let (_d, root) = temp_root();
        fs::create_dir_all(root.join(CRON_D_DIR)).expect("mkdir");
        let (plan, said) = Run::new(&root, Scheduler::CronD).go();
        assert!(
            matches!(plan.ours, Ours::Install(Scheduler::CronD, ..)),
            "{plan:?}"
        );
        let path = root.join("etc/cron.d/acmekeep");
        assert_eq!(read(&path), cron_d_file(&job_at(7, 3, EXE, None)));
        assert!(read(&path).contains("\n7 3,15 * * * root /usr/bin/acmekeep --batch reconcile\n"));
        assert_eq!(
            fs::metadata(&path).expect("stat").mode() & 0o7777,
            FILE_MODE
        );
        assert_eq!(
            said,
            format!(
                "Renewal scheduled twice a day at 03:07 and 15:07: {}.",
                path.display()
            )
        );

        let mut again = Run::new(&root, Scheduler::CronD);
        again.job = job_at(1, 2, EXE, None);
        let (plan, said) = again.go();
        assert!(matches!(plan.ours, Ours::Current(_)), "{plan:?}");
        assert!(
            said.starts_with("Renewal is already scheduled: acmekeep's job in"),
            "{said}"
        );
        assert_eq!(
            read(&path),
            cron_d_file(&job_at(7, 3, EXE, None)),
            "unchanged"
        );
    }

    #[test]
    fn a_second_state_dir_gets_its_own_job_beside_the_first() {
        let (_d, cron_root) = temp_root();
        let (_e, systemd_root) = temp_root();
        fs::create_dir_all(cron_root.join(CRON_D_DIR)).expect("mkdir");
        for (root, sched) in [
            (&cron_root, Scheduler::CronD),
            (&systemd_root, Scheduler::Systemd),
        ] {
            let first = Run::new(root, sched);
            first.go();
            let mut second = Run::new(root, sched);
            second.state = "/srv/acme 2";
            second.job = job_at(9, 1, EXE, Some("/srv/acme 2"));
            let (plan, said) = second.go();
            assert!(matches!(plan.ours, Ours::Install(..)), "{plan:?}");
            assert_eq!(plan.elsewhere.len(), 1, "the first is named: {plan:?}");
            assert!(
                said.contains("alone: it renews /var/lib/acme, not /srv/acme 2."),
                "{said}"
            );
            let (plan, _) = second.go();
            assert!(matches!(plan.ours, Ours::Current(_)), "{sched:?}: {plan:?}");
            let (plan, _) = first.go();
            assert!(matches!(plan.ours, Ours::Current(_)), "{sched:?}: {plan:?}");
        }
        let cron_d = cron_root.join(CRON_D_DIR);
        assert_eq!(
            read(&cron_d.join("acmekeep")),
            cron_d_file(&job_at(7, 3, EXE, None))
        );
        assert_eq!(
            read(&cron_d.join("acmekeep-srv-acme_2")),
            cron_d_file(&job_at(9, 1, EXE, Some("/srv/acme 2")))
        );
        let units = systemd_root.join(UNIT_DIR);
        assert!(
            read(&units.join("acmekeep.service"))
                .contains("ExecStart=/usr/bin/acmekeep --batch reconcile\n")
        );
        assert!(
            read(&units.join("acmekeep-srv-acme_2.service")).contains(
                "ExecStart=/usr/bin/acmekeep --batch \"--state=/srv/acme 2\" reconcile\n"
            )
        );
        assert!(
            fs::symlink_metadata(
                systemd_root
                    .join(TIMERS_WANTS_DIR)
                    .join("acmekeep-srv-acme_2.timer")
            )
            .is_ok()
        );
    }

    #[test]
    fn a_cron_d_file_that_appears_meanwhile_is_not_overwritten() {
        let (_d, root) = temp_root();
        fs::create_dir_all(root.join(CRON_D_DIR)).expect("mkdir");
        let plan = Run::new(&root, Scheduler::CronD).plan();
        let path = write(&root, "etc/cron.d/acmekeep", "admin's\n");
        let err = apply(&root, &plan).expect_err("appeared");
        assert!(format!("{err:#}").contains("appeared"), "{err:#}");
        assert_eq!(read(&path), "admin's\n");
    }

    #[test]
    fn new_systemd_units_are_enabled_and_a_changed_timer_is_left_alone() {
        let (d, root) = temp_root();
        let mut run = Run::new(&root, Scheduler::Systemd);
        run.state = "/srv/acme";
        run.job = job_at(5, 17, EXE, Some("/srv/acme"))
            .with_webroots(&[PathBuf::from("/var/www/html/.well-known/acme-challenge")])
            .expect("valid");
        let (_, said) = run.go();
        let unit_dir = root.join(UNIT_DIR);
        let timer = unit_dir.join(TIMER_UNIT);
        assert!(
            said.contains("twice a day at 05:05 and 17:05: systemd timer"),
            "{said}"
        );
        let timer_text = read(&timer);
        assert!(
            timer_text.contains("\nOnCalendar=*-*-* 05,17:05:00\n"),
            "{timer_text}"
        );
        let service_text = read(&unit_dir.join(SERVICE_UNIT));
        assert!(
            service_text
                .contains("\nExecStart=/usr/bin/acmekeep --batch --state=/srv/acme reconcile\n"),
            "{service_text}"
        );
        assert!(service_text.contains(
            "\nReadWritePaths=-/srv/acme -/run/acme -/var/www/html/.well-known/acme-challenge\n"
        ));
        let link = root.join(TIMERS_WANTS_DIR).join(TIMER_UNIT);
        assert_eq!(
            fs::read_link(&link).expect("readlink"),
            Path::new("../acmekeep.timer")
        );
        let mut names: Vec<_> = fs::read_dir(&unit_dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["acmekeep.service", "acmekeep.timer", "timers.target.wants"]
        );

        // Recognised as written: a second run changes nothing.
        let (plan, _) = run.go();
        assert!(matches!(plan.ours, Ours::Current(_)), "{plan:?}");
        // An administrator's change to the timer is respected.
        let edited = timer_text.replace("05,17:05", "*-*-* 00/4:00");
        fs::write(&timer, &edited).expect("edit");
        let (plan, said) = run.go();
        assert!(matches!(plan.ours, Ours::Edited(_)), "{plan:?}");
        assert!(said.contains("changed by hand"), "{said}");
        assert_eq!(read(&timer), edited);
        drop(d);
    }

    #[test]
    fn a_daily_cron_d_file_of_an_earlier_version_is_upgraded_in_place() {
        let (_d, root) = temp_root();
        let old = job_at(5, 17, OLD_EXE, None);
        let path = write(
            &root,
            "etc/cron.d/acmekeep",
            &super::super::cron_d_text(&old, true),
        );
        // Run from a build tree: the schedule is upgraded, the program it runs is kept.
        let mut run = Run::new(&root, Scheduler::Systemd);
        run.job = job_at(1, 1, "/home/me/acmekeep", None);
        run.installed = false;
        let (plan, said) = run.go();
        assert!(matches!(plan.ours, Ours::Upgrade { .. }), "{plan:?}");
        assert_eq!(read(&path), cron_d_file(&job_at(5, 17, OLD_EXE, None)));
        assert!(
            said.contains("renewal runs twice a day at 05:05 and 17:05"),
            "{said}"
        );
        // The installed program takes over the job.
        let (_, said) = Run::new(&root, Scheduler::Systemd).go();
        assert_eq!(read(&path), cron_d_file(&job_at(5, 17, EXE, None)));
        assert!(said.contains(&format!("with {EXE}")), "{said}");
        assert!(read(&path).contains("\n5 5,17 * * * root /usr/bin/acmekeep --batch reconcile\n"));
        assert!(!root.join(UNIT_DIR).exists(), "no second job");
        let (plan, _) = Run::new(&root, Scheduler::Systemd).go();
        assert!(matches!(plan.ours, Ours::Current(_)), "{plan:?}");
    }

    #[test]
    fn legacy_units_are_upgraded_and_a_changed_service_is_kept() {
        let (_d, root) = temp_root();
        let old = job_at(5, 17, OLD_EXE, Some("/srv/acme"))
            .with_webroots(&[PathBuf::from("/var/www/acme")])
            .expect("valid");
        let legacy_timer =
            super::super::render(super::super::LEGACY_DAILY_TIMER_TEMPLATES[0], &[], &old);
        let legacy_service = super::super::service_unit(LEGACY_SERVICE, &old);
        let timer = write(&root, "etc/systemd/system/acmekeep.timer", &legacy_timer);
        let service = write(
            &root,
            "etc/systemd/system/acmekeep.service",
            &legacy_service,
        );
        fs::create_dir_all(root.join(TIMERS_WANTS_DIR)).expect("mkdir");
        std::os::unix::fs::symlink(
            "../acmekeep.timer",
            root.join(TIMERS_WANTS_DIR).join(TIMER_UNIT),
        )
        .expect("link");
        let mut run = Run::new(&root, Scheduler::Systemd);
        run.state = "/srv/acme";
        let (plan, _) = run.go();
        let Ours::Upgrade { changes, .. } = &plan.ours else {
            panic!("{plan:?}");
        };
        assert_eq!(changes.len(), 2);
        let want = job_at(5, 17, EXE, Some("/srv/acme"))
            .with_webroots(&[PathBuf::from("/var/www/acme")])
            .expect("valid");
        let (want_service, want_timer) = systemd_units(&want);
        assert_eq!(read(&timer), want_timer);
        assert_eq!(read(&service), want_service);
        assert!(read(&timer).contains("OnCalendar=*-*-* 05,17:05:00"));

        // Again from the legacy timer, with a service an administrator changed.
        fs::write(&timer, &legacy_timer).expect("write");
        let changed = legacy_service.replace("TimeoutStartSec=30min", "TimeoutStartSec=2h");
        fs::write(&service, &changed).expect("write");
        let (plan, said) = run.go();
        assert!(
            matches!(&plan.ours, Ours::Upgrade { service_edited: true, changes, .. } if changes.len() == 1),
            "{plan:?}"
        );
        assert_eq!(read(&timer), want_timer);
        assert_eq!(read(&service), changed);
        assert!(said.contains("is left as it is"), "{said}");
    }

    const LEGACY_SERVICE: &str = include_str!("legacy/v1.service");

    /// acmekeep.service gained `Documentation=`: a service quickstart wrote the line before
    /// (with the current twice-a-day timer) is rewritten; the timer is left alone.
    #[test]
    fn a_service_written_before_it_named_its_documentation_is_upgraded() {
        let (_d, root) = temp_root();
        let job = job_at(5, 17, EXE, None);
        let (want_service, want_timer) = systemd_units(&job);
        let before = super::super::service_unit(include_str!("legacy/v2.service"), &job);
        assert!(!before.contains("Documentation=") && want_service.contains("Documentation="));
        let timer = write(&root, "etc/systemd/system/acmekeep.timer", &want_timer);
        let service = write(&root, "etc/systemd/system/acmekeep.service", &before);
        fs::create_dir_all(root.join(TIMERS_WANTS_DIR)).expect("mkdir");
        std::os::unix::fs::symlink(
            "../acmekeep.timer",
            root.join(TIMERS_WANTS_DIR).join(TIMER_UNIT),
        )
        .expect("link");
        let (plan, _) = Run::new(&root, Scheduler::Systemd).go();
        assert!(
            matches!(&plan.ours, Ours::Upgrade { changes, .. } if changes.len() == 1),
            "{plan:?}"
        );
        assert_eq!(read(&service), want_service);
        assert_eq!(read(&timer), want_timer);
        let (plan, _) = Run::new(&root, Scheduler::Systemd).go();
        assert!(matches!(plan.ours, Ours::Current(_)), "{plan:?}");
    }

    #[test]
    fn a_daily_crontab_line_is_upgraded_in_place_in_one_write() {
        let (d, root) = temp_root();
        let old_line = "5 17 * * * /root/src/acmekeep/target/release/acmekeep --batch --state=/home/me/acme reconcile";
        let before = format!("MAILTO=me\n{old_line}\n0 0 * * * backup\n");
        let root = fake_crontab(d.path(), root, Some(&before));
        let mut run = Run::new(&root, Scheduler::UserCrontab);
        run.state = "/home/me/acme";
        run.is_root = false;
        let (plan, said) = run.go();
        assert!(matches!(plan.ours, Ours::Upgrade { .. }), "{plan:?}");
        assert_eq!(
            spool(d.path()),
            "MAILTO=me\n5 5,17 * * * /usr/bin/acmekeep --batch --state=/home/me/acme reconcile\n0 0 * * * backup\n"
        );
        assert_eq!(writes(d.path()), 1);
        assert!(
            said.contains("Upgraded acmekeep's job in your crontab"),
            "{said}"
        );
        let (plan, _) = run.go();
        assert!(matches!(plan.ours, Ours::Current(_)), "{plan:?}");
        assert_eq!(writes(d.path()), 1, "no second write");
    }

    #[test]
    fn a_changed_job_of_ours_is_left_as_it_is_and_said_to_run_once_a_day() {
        let (_d, root) = temp_root();
        let text = "MAILTO=ops\n5 17 * * * root /usr/bin/acmekeep --batch reconcile >/dev/null\n";
        let path = write(&root, "etc/cron.d/acmekeep", text);
        let (plan, said) = Run::new(&root, Scheduler::CronD).go();
        assert!(matches!(plan.ours, Ours::Edited(_)), "{plan:?}");
        assert!(said.contains("changed by hand"), "{said}");
        assert!(said.contains("It runs once a day"), "{said}");
        assert_eq!(read(&path), text);
    }

    #[test]
    fn acmetools_cron_d_line_for_this_state_dir_goes_and_one_for_another_stays() {
        let (_d, root) = temp_root();
        let acmetool = write(
            &root,
            "etc/cron.d/acmetool",
            "SHELL=/bin/sh\nPATH=/usr/bin:/bin\n\
             12 3 * * * root /usr/bin/acmetool --batch reconcile\n\
             13 4 * * * root /usr/bin/acmetool --batch --state=\"/srv/other\" reconcile\n",
        );
        let (plan, said) = Run::new(&root, Scheduler::CronD).go();
        assert_eq!(plan.remove.len(), 1, "{plan:?}");
        assert_eq!(plan.elsewhere.len(), 1, "{plan:?}");
        assert!(root.join("etc/cron.d/acmekeep").exists());
        assert_eq!(
            read(&acmetool),
            "SHELL=/bin/sh\nPATH=/usr/bin:/bin\n\
             13 4 * * * root /usr/bin/acmetool --batch --state=\"/srv/other\" reconcile\n"
        );
        let where_ = acmetool.display();
        assert!(
            said.contains(&format!(
                "Left acmetool's job in {where_} alone: it renews /srv/other, not /var/lib/acme."
            )),
            "{said}"
        );
        assert!(
            said.contains(&format!(
                "Replaced acmetool's job in {where_}, which renewed /var/lib/acme."
            )),
            "{said}"
        );
    }

    #[test]
    fn acmetools_own_cron_d_file_is_removed_when_its_job_is_replaced() {
        let (_d, root) = temp_root();
        let acmetool = write(
            &root,
            "etc/cron.d/acmetool",
            "SHELL=/bin/sh\nPATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin\nMAILTO=root\n\
             12 3 * * * root /usr/bin/acmetool --batch reconcile\n",
        );
        let (plan, _) = Run::new(&root, Scheduler::Systemd).go();
        assert!(
            matches!(plan.ours, Ours::Install(Scheduler::Systemd, ..)),
            "{plan:?}"
        );
        assert!(!acmetool.exists());
        assert!(root.join(UNIT_DIR).join(TIMER_UNIT).exists());
    }

    #[test]
    fn acmetools_crontab_line_goes_in_the_same_write_that_adds_ours() {
        let (d, root) = temp_root();
        let before = "# renewals\n4 5 * * * /usr/local/bin/acmetool --batch --state=/home/me/acme reconcile\n\
                      6 7 * * * /usr/local/bin/acmetool --batch reconcile\n0 0 * * * backup\n";
        let root = fake_crontab(d.path(), root, Some(before));
        let mut run = Run::new(&root, Scheduler::UserCrontab);
        run.is_root = false;
        run.state = "/home/me/acme";
        run.job = job_at(7, 3, EXE, Some("/home/me/acme"));
        let (_, said) = run.go();
        assert_eq!(
            spool(d.path()),
            "# renewals\n6 7 * * * /usr/local/bin/acmetool --batch reconcile\n0 0 * * * backup\n\
             7 3,15 * * * /usr/bin/acmekeep --batch --state=/home/me/acme reconcile\n"
        );
        assert_eq!(writes(d.path()), 1);
        assert!(
            said.contains("Left acmetool's job in your crontab alone: it renews /var/lib/acme"),
            "{said}"
        );
        assert!(
            said.contains("Replaced acmetool's job in your crontab"),
            "{said}"
        );
    }

    #[test]
    fn root_with_cron_d_removes_acmetool_from_roots_crontab() {
        let (d, root) = temp_root();
        fs::create_dir_all(root.join(CRON_D_DIR)).expect("mkdir");
        let root = fake_crontab(d.path(), root, Some("1 2 * * * acmetool --batch\n"));
        let (plan, _) = Run::new(&root, Scheduler::CronD).go();
        assert!(
            matches!(plan.ours, Ours::Install(Scheduler::CronD, ..)),
            "{plan:?}"
        );
        assert_eq!(spool(d.path()), "");
        assert!(root.join("etc/cron.d/acmekeep").exists());
    }

    #[test]
    fn debians_acmetool_timer_is_disabled_for_this_state_dir_and_kept_for_another() {
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
        let wants = root.join(TIMERS_WANTS_DIR);
        fs::create_dir_all(&wants).expect("mkdir");
        let link = wants.join("acmetool.timer");
        std::os::unix::fs::symlink("/lib/systemd/system/acmetool.timer", &link).expect("link");

        let mut other = Run::new(&root, Scheduler::Systemd);
        other.state = "/srv/mine";
        other.job = job_at(7, 3, EXE, Some("/srv/mine"));
        let plan = other.plan();
        assert!(
            plan.remove.is_empty() && plan.elsewhere.len() == 1,
            "{plan:?}"
        );

        let (plan, said) = Run::new(&root, Scheduler::Systemd).go();
        assert_eq!(plan.remove.len(), 1, "{plan:?}");
        assert!(fs::symlink_metadata(&link).is_err(), "disabled");
        assert!(
            root.join("lib/systemd/system/acmetool.timer").exists(),
            "packaged file kept"
        );
        assert!(
            said.contains("Replaced acmetool's job in acmetool.timer"),
            "{said}"
        );
    }

    #[test]
    fn jobs_quickstart_may_not_change_keep_ours_from_being_installed() {
        let (d, root) = temp_root();
        // A run-parts script, even as root.
        let script = write(
            &root,
            "etc/cron.daily/acmetool",
            "#!/bin/sh\nacmetool --batch reconcile\n",
        );
        fs::create_dir_all(root.join(CRON_D_DIR)).expect("mkdir");
        let (plan, said) = Run::new(&root, Scheduler::CronD).go();
        assert_eq!(plan.ours, Ours::Blocked);
        assert!(said.contains("quickstart does not edit scripts"), "{said}");
        assert!(said.contains("acmekeep's job was not installed"), "{said}");
        assert!(!root.join("etc/cron.d/acmekeep").exists() && script.exists());
        fs::remove_file(&script).expect("rm");

        // acmetool's cron.d file, for a user who is not root.
        let root = fake_crontab(d.path(), root, None);
        let cron_file = write(
            &root,
            "etc/cron.d/acmetool",
            "3 4 * * * root acmetool --batch reconcile\n",
        );
        let mut user = Run::new(&root, Scheduler::UserCrontab);
        user.is_root = false;
        let (plan, said) = user.go();
        assert_eq!(plan.ours, Ours::Blocked);
        assert!(said.contains("only root can change it"), "{said}");
        assert!(cron_file.exists());
        assert_eq!(writes(d.path()), 0, "nothing added to the crontab");

        // The same file for another state directory does not stop the user's own job.
        user.state = "/home/me/acme";
        user.job = job_at(7, 3, EXE, Some("/home/me/acme"));
        let (plan, said) = user.go();
        assert!(
            matches!(plan.ours, Ours::Install(Scheduler::UserCrontab, ..)),
            "{plan:?}"
        );
        assert!(
            said.contains("alone: it renews /var/lib/acme, not /home/me/acme"),
            "{said}"
        );
        assert!(
            spool(d.path()).contains("/usr/bin/acmekeep --batch --state=/home/me/acme reconcile")
        );
    }

    #[test]
    fn a_command_that_does_more_than_run_acmetool_is_never_removed() {
        let (_d, root) = temp_root();
        let text =
            "3 4 * * * root test -x /usr/bin/acmetool && /usr/bin/acmetool --batch reconcile\n";
        let acmetool = write(&root, "etc/cron.d/acmetool", text);
        let (plan, said) = Run::new(&root, Scheduler::CronD).go();
        assert_eq!(plan.ours, Ours::Blocked);
        assert!(said.contains("does more than run acmetool"), "{said}");
        assert_eq!(read(&acmetool), text);
        assert!(!root.join("etc/cron.d/acmekeep").exists());
    }

    #[test]
    fn a_declined_replacement_keeps_theirs_and_installs_nothing() {
        let (_d, root) = temp_root();
        let acmetool = write(
            &root,
            "etc/cron.d/acmetool",
            "3 4 * * * root acmetool --batch reconcile\n",
        );
        let mut run = Run::new(&root, Scheduler::CronD);
        run.replace = false;
        let (plan, said) = run.go();
        assert_eq!(plan.ours, Ours::Blocked);
        assert!(
            said.contains("as answered; acmekeep's job was not installed"),
            "{said}"
        );
        assert!(acmetool.exists() && !root.join("etc/cron.d/acmekeep").exists());
    }

    #[test]
    fn without_a_scheduler_the_line_is_printed_and_nothing_removed() {
        let (_d, root) = temp_root();
        let (plan, said) = Run::new(&root, Scheduler::None).go();
        assert_eq!(
            plan.ours,
            Ours::Print("7 3,15 * * * /usr/bin/acmekeep --batch reconcile".to_owned())
        );
        assert!(
            said.ends_with("\n7 3,15 * * * /usr/bin/acmekeep --batch reconcile"),
            "{said}"
        );
        let acmetool = write(
            &root,
            "etc/cron.d/acmetool",
            "3 4 * * * root acmetool --batch reconcile\n",
        );
        let (plan, _) = Run::new(&root, Scheduler::None).go();
        assert!(plan.remove.is_empty(), "{plan:?}");
        assert!(acmetool.exists());
    }

    #[test]
    fn an_unreadable_crontab_is_an_error_only_when_the_job_goes_there() {
        let (dir, root) = temp_root();
        let script = dir.path().join("broken.sh");
        fs::write(
            &script,
            "[ \"$1\" = -l ] && { echo 'permission denied' >&2; exit 1; }\n\
             echo wrote > \"$(dirname \"$0\")/wrote\"\n",
        )
        .expect("write");
        let root = root.with_crontab("/bin/sh", [&script]);
        let err = current_crontab(&root, true).expect_err("fails");
        assert!(format!("{err:#}").contains("permission denied"), "{err:#}");
        assert_eq!(current_crontab(&root, false).expect("a warning only"), None);
        let (_, root_without) = temp_root();
        assert!(current_crontab(&root_without, true).is_err());
        assert_eq!(current_crontab(&root_without, false).expect("none"), None);
        assert!(!dir.path().join("wrote").exists(), "crontab never replaced");
    }

    /// systemd itself counts our relative `timers.target.wants` link as enabled, when
    /// `systemctl` is installed (`--root` works offline, on the temp tree only).
    #[test]
    fn systemctl_sees_the_timer_enabled() {
        if std::process::Command::new("systemctl")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("systemctl is not installed; skipping");
            return;
        }
        let (_d, root) = temp_root();
        Run::new(&root, Scheduler::Systemd).go();
        let out = std::process::Command::new("systemctl")
            .arg(format!("--root={}", root.dir().display()))
            .args(["is-enabled", TIMER_UNIT])
            .output()
            .expect("run systemctl");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "enabled");
    }
}
