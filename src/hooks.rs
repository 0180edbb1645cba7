//! Runs hook programs the way acmetool does, so existing hook scripts keep working.
//!
//! A hook is an executable file in a hook directory. For every event we run each hook, one
//! after the other, with the event name as `argv[1]`, the event's arguments after it and its
//! data on stdin (acmetool §4). This module is run-parts with acmetool's rules:
//!
//! - Directories are taken in the order given, and the files of each directory sorted by name
//!   (bytewise). There is no global sort. A directory that does not exist is skipped; one that
//!   exists and that someone other than root could change refuses the whole event (below).
//! - A file is skipped if its name starts with `.`, if it is not a regular file after following
//!   symlinks, if someone other than root could change it (logged as an error), or if it has
//!   no x bit at all.
//! - Every hook runs, whatever the earlier ones returned, with working directory `/` and our
//!   environment plus `ACME_STATE_DIR` (absolute) and, for challenge events only, the target's
//!   `request.challenge.env`.
//! - Exit 0 is success, exit 42 means "this hook does not handle this event" and is not an
//!   error, anything else is a failure. Callers decide what a failure means: for
//!   `challenge-dns-start` at least one hook must succeed, for most events it is only logged.
//! - A setuid-root script (`#!`) is run through `sudo -n --` when we are not root and sudo is
//!   in PATH, as acmetool does.
//!
//! What acmekeep adds, on purpose:
//!
//! - Who may have written a hook ([`trust`]): acmetool refused only world-writable hooks and
//!   hook directories. A hook runs only if it and every directory on the way to it (every
//!   symlink followed) are owned by root or the running user and writable by nobody else, so
//!   a hook another user, or a group, could change never runs as root.
//! - A per-hook timeout (5 minutes by default), and for a challenge event one deadline for
//!   all its hooks ([`HookRunner::run_until`]). A hook runs in its own process group, and on
//!   timeout the whole group is killed, so a `sleep & wait` cannot outlive it. A side effect is
//!   that a Ctrl-C at the terminal reaches acmekeep but not a running hook.
//! - When acmekeep itself ends while a hook runs (a signal, `kill -9`), the hook's process
//!   group is killed too: with [`HookRunner::supervised`] each hook runs under a small
//!   supervisor process that watches acmekeep ([`supervisor`]).
//! - Output is captured instead of passed through: stdout and stderr share one pipe (so their
//!   order is kept), the capture is bounded, control characters are removed, and the output of
//!   a failed hook is logged. If a hook leaves a background process holding the pipe (a daemon
//!   started without redirecting its output), we stop waiting for the output shortly after the
//!   hook itself exits; a thread keeps draining the pipe so the daemon never blocks on it.
//! - An empty hook file is skipped. acmetool's managed hooks are disabled by emptying them
//!   (§4.3); acmetool then logs an exec error on every event, and with some libcs an empty file
//!   would run as an empty shell script and count as success, which would make a dns-01 event
//!   look handled when nothing was done.
//! - `ACME_HOOKS_DIR` is removed from the hooks' environment even when it is in ours, so hooks
//!   see the same environment whichever way the hook dirs were chosen.
//! - A hook dir that is reached twice (the same directory under two paths) is searched once.
//! - One extra event, `reconcile-failed`, with the failed names on stdin. acmetool's shipped
//!   hooks exit 42 for events they do not know.
//! - Arguments and stdin lines are checked: a NUL byte or a newline in any of them refuses the
//!   event, because a hook could not tell where one value ends.
//!
//! Hooks are executed directly with [`Command`], never through a shell, so no value of ours is
//! ever parsed as shell syntax.

pub mod supervisor;
pub mod trust;

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Hook directories used when neither `--hooks` nor `ACME_HOOKS_DIR` is given: Debian's
/// acmetool directory first, then upstream's two. Missing ones are skipped.
pub const DEFAULT_HOOK_DIRS: [&str; 3] = [
    "/etc/acme/hooks",
    "/usr/lib/acme/hooks",
    "/usr/libexec/acme/hooks",
];

/// How long one hook may run before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The exit code with which a hook says it does not handle an event.
pub const NOT_HANDLED_EXIT_CODE: i32 = 42;

/// The environment variable with the absolute state directory, set for every hook.
pub const STATE_DIR_ENV: &str = "ACME_STATE_DIR";

/// The environment variable that may name the hook dirs; never passed on to hooks.
pub const HOOKS_DIR_ENV: &str = "ACME_HOOKS_DIR";

/// How much of a hook's combined output is kept: the first [`OUTPUT_HEAD`] bytes and the last
/// [`OUTPUT_TAIL`] bytes, because a script's error usually comes last.
const OUTPUT_HEAD: usize = 48 * 1024;
const OUTPUT_TAIL: usize = 16 * 1024;

/// How much of a failed hook's output goes into the log message (its end).
const LOG_EXCERPT: usize = 2 * 1024;

/// How long to wait for the output pipe to close after the hook itself has exited. Longer means
/// a background process that inherited the pipe delays the next hook.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// The first and the longest sleep between checks whether a hook has exited.
const FIRST_POLL: Duration = Duration::from_millis(1);
const MAX_POLL: Duration = Duration::from_millis(20);

/// How often to retry a spawn that fails with ETXTBSY. That happens when another thread forks
/// while a file descriptor open for writing on the hook exists (a hook that was just written).
const BUSY_RETRIES: u32 = 5;

/// Chooses the hook directories: the `--hooks` flags if any, else `ACME_HOOKS_DIR` split on
/// `:` (empty parts ignored), else [`DEFAULT_HOOK_DIRS`].
pub fn hook_dirs(flag: &[PathBuf], env: Option<&OsStr>) -> Vec<PathBuf> {
    if !flag.is_empty() {
        return flag.to_vec();
    }
    let from_env: Vec<PathBuf> = env
        .map(|value| {
            std::env::split_paths(value)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !from_env.is_empty() {
        return from_env;
    }
    DEFAULT_HOOK_DIRS.iter().map(PathBuf::from).collect()
}

/// Something that happened, as told to the hooks.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// `live-updated`: these `live/` links changed (`host` or `host:label`). No arguments;
    /// stdin is each name followed by `\n`. Not fired without names.
    LiveUpdated { names: &'a [String] },
    /// `challenge-http-start <hostname> <target file> <token>`; stdin is the key
    /// authorization, without a newline.
    ChallengeHttpStart {
        hostname: &'a str,
        target_file: &'a str,
        token: &'a str,
        key_authorization: &'a str,
        env: &'a BTreeMap<String, String>,
    },
    /// `challenge-http-stop`, with the same arguments and stdin as the start.
    ChallengeHttpStop {
        hostname: &'a str,
        target_file: &'a str,
        token: &'a str,
        key_authorization: &'a str,
        env: &'a BTreeMap<String, String>,
    },
    /// `challenge-dns-start <hostname> <target file> <txt value> <wildcard flag>`; stdin is
    /// empty. `hostname` is the bare authorization identifier; the flag is `wildcard` or empty.
    /// At least one hook must succeed for the challenge to go ahead.
    ///
    /// With `record_name` (dns-account-01) the event is `challenge-dns-account-start`, and the
    /// record name `_<account label>._acme-challenge.<hostname>` is a fifth argument: a new
    /// event rather than an extra argument, because an existing hook would publish the value
    /// at `_acme-challenge.<hostname>` and fail the authorization; an acmetool-style hook
    /// exits 42 for an event it does not know.
    ChallengeDnsStart {
        hostname: &'a str,
        target_file: &'a str,
        txt_value: &'a str,
        wildcard: bool,
        record_name: Option<&'a str>,
        env: &'a BTreeMap<String, String>,
    },
    /// `challenge-dns-stop`, with the same arguments as the start.
    ChallengeDnsStop {
        hostname: &'a str,
        target_file: &'a str,
        txt_value: &'a str,
        wildcard: bool,
        record_name: Option<&'a str>,
        env: &'a BTreeMap<String, String>,
    },
    /// `reconcile-failed` (acmekeep only): these targets could not be satisfied. No arguments;
    /// stdin is each name followed by `\n`. Not fired without names.
    ReconcileFailed { names: &'a [String] },
    /// `certificate-expiring` (acmekeep only): the certificates these names use will expire
    /// before the next attempt may renew them. No arguments; stdin is each name followed by
    /// `\n`. Not fired without names.
    CertificateExpiring { names: &'a [String] },
}

impl Event<'_> {
    /// The event name, passed as `argv[1]`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::LiveUpdated { .. } => "live-updated",
            Event::ChallengeHttpStart { .. } => "challenge-http-start",
            Event::ChallengeHttpStop { .. } => "challenge-http-stop",
            Event::ChallengeDnsStart {
                record_name: None, ..
            } => "challenge-dns-start",
            Event::ChallengeDnsStop {
                record_name: None, ..
            } => "challenge-dns-stop",
            Event::ChallengeDnsStart { .. } => "challenge-dns-account-start",
            Event::ChallengeDnsStop { .. } => "challenge-dns-account-stop",
            Event::ReconcileFailed { .. } => "reconcile-failed",
            Event::CertificateExpiring { .. } => "certificate-expiring",
        }
    }

    /// The arguments after the event name.
    fn args(&self) -> Vec<&str> {
        match *self {
            Event::LiveUpdated { .. }
            | Event::ReconcileFailed { .. }
            | Event::CertificateExpiring { .. } => Vec::new(),
            Event::ChallengeHttpStart {
                hostname,
                target_file,
                token,
                ..
            }
            | Event::ChallengeHttpStop {
                hostname,
                target_file,
                token,
                ..
            } => vec![hostname, target_file, token],
            Event::ChallengeDnsStart {
                hostname,
                target_file,
                txt_value,
                wildcard,
                record_name,
                ..
            }
            | Event::ChallengeDnsStop {
                hostname,
                target_file,
                txt_value,
                wildcard,
                record_name,
                ..
            } => {
                // acmetool takes a `*.` off the hostname and sets the flag instead.
                let (hostname, wildcard) = match hostname.strip_prefix("*.") {
                    Some(base) => (base, true),
                    None => (hostname, wildcard),
                };
                let flag = if wildcard { "wildcard" } else { "" };
                let mut args = vec![hostname, target_file, txt_value, flag];
                args.extend(record_name);
                args
            }
        }
    }

    /// The names of a list event, which go on stdin one per line.
    fn names(&self) -> Option<&[String]> {
        match *self {
            Event::LiveUpdated { names }
            | Event::ReconcileFailed { names }
            | Event::CertificateExpiring { names } => Some(names),
            _ => None,
        }
    }

    /// What the hook reads on stdin.
    fn stdin(&self) -> Vec<u8> {
        if let Some(names) = self.names() {
            let mut data = Vec::new();
            for name in names {
                data.extend_from_slice(name.as_bytes());
                data.push(b'\n');
            }
            return data;
        }
        match *self {
            Event::ChallengeHttpStart {
                key_authorization, ..
            }
            | Event::ChallengeHttpStop {
                key_authorization, ..
            } => key_authorization.as_bytes().to_vec(),
            _ => Vec::new(),
        }
    }

    /// The target's extra environment, for challenge events.
    fn challenge_env(&self) -> Option<&BTreeMap<String, String>> {
        match *self {
            Event::ChallengeHttpStart { env, .. }
            | Event::ChallengeHttpStop { env, .. }
            | Event::ChallengeDnsStart { env, .. }
            | Event::ChallengeDnsStop { env, .. } => Some(env),
            Event::LiveUpdated { .. }
            | Event::ReconcileFailed { .. }
            | Event::CertificateExpiring { .. } => None,
        }
    }

    /// Refuses values a hook could not read back unambiguously.
    fn validate(&self) -> Result<(), HookError> {
        let event = self.name();
        for arg in self.args() {
            check_value(event, "argument", arg)?;
        }
        if let Some(names) = self.names() {
            for name in names {
                if name.is_empty() {
                    return Err(invalid(event, "name", name, "is empty"));
                }
                check_value(event, "name", name)?;
            }
        }
        if let Event::ChallengeHttpStart {
            key_authorization, ..
        }
        | Event::ChallengeHttpStop {
            key_authorization, ..
        } = *self
        {
            check_value(event, "key authorization", key_authorization)?;
        }
        if let Some(env) = self.challenge_env() {
            for (key, value) in env {
                check_env(event, key, value)?;
                if let Some(reason) = refused_env_name(key) {
                    return Err(invalid(event, "environment variable", key, reason));
                }
            }
        }
        Ok(())
    }
}

/// Why a target's `request.challenge.env` may not set `name` for the hooks, if it may not.
///
/// Hooks run as root, and the environment reaches every program they start: a variable that
/// makes the dynamic loader, libc, a shell or an interpreter load or run something else
/// (`LD_PRELOAD`, `BASH_ENV`, `PATH`, `PYTHONPATH`, ...) would let whoever writes a target
/// file run code as root. Names must also be portable (letters, digits and `_`, not starting
/// with a digit), which rules out bash's exported functions (`BASH_FUNC_x%%`).
pub fn refused_env_name(name: &str) -> Option<&'static str> {
    let portable = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !portable {
        return Some(
            "it is not a portable variable name (letters, digits and _, not starting with a digit)",
        );
    }
    let upper = name.to_ascii_uppercase();
    REFUSED_ENV
        .iter()
        .find(|(prefixes, names, _)| {
            prefixes.iter().any(|p| upper.starts_with(p)) || names.contains(&upper.as_str())
        })
        .map(|(_, _, why)| *why)
}

/// The variables [`refused_env_name`] refuses (case-insensitively), by why: the prefixes,
/// the whole names, and the reason given.
const REFUSED_ENV: &[(&[&str], &[&str], &str)] = &[
    (
        &["LD_", "MALLOC_"],
        &[
            "GCONV_PATH",
            "GETCONF_DIR",
            "GLIBC_TUNABLES",
            "HOSTALIASES",
            "LOCALDOMAIN",
            "LOCPATH",
            "NLSPATH",
            "RES_OPTIONS",
            "RESOLV_HOST_CONF",
        ],
        "it changes what the dynamic loader or libc loads into every program a hook starts",
    ),
    (
        &["BASH_FUNC_"],
        &[
            "PATH",
            "IFS",
            "ENV",
            "BASH_ENV",
            "BASHOPTS",
            "SHELLOPTS",
            "CDPATH",
            "GLOBIGNORE",
            "PS4",
            "PROMPT_COMMAND",
            "SHELL",
        ],
        "it changes what the shell running a hook script executes",
    ),
    (
        &["PYTHON", "PERL", "RUBY", "NODE_", "LUA_", "GEM_", "PHP"],
        &[
            "CLASSPATH",
            "JAVA_TOOL_OPTIONS",
            "_JAVA_OPTIONS",
            "JDK_JAVA_OPTIONS",
            "TCLLIBPATH",
        ],
        "it makes an interpreter a hook starts load or run other code",
    ),
    (
        &[],
        &[
            "HOME",
            "XDG_CONFIG_HOME",
            "XDG_CONFIG_DIRS",
            "CURL_HOME",
            "WGETRC",
            "OPENSSL_CONF",
            "OPENSSL_ENGINES",
            "OPENSSL_MODULES",
            "GIT_CONFIG_GLOBAL",
            "GIT_CONFIG_SYSTEM",
            "GIT_EXEC_PATH",
            "GIT_SSH_COMMAND",
        ],
        "it makes the programs a hook starts read their configuration from elsewhere",
    ),
];

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Fails if `value` holds a NUL byte or a newline.
fn check_value(event: &'static str, what: &'static str, value: &str) -> Result<(), HookError> {
    if value.contains('\0') {
        return Err(invalid(event, what, value, "contains a NUL byte"));
    }
    if value.contains('\n') {
        return Err(invalid(event, what, value, "contains a newline"));
    }
    Ok(())
}

/// Fails if an environment variable cannot be passed on as given.
fn check_env(event: &'static str, key: &str, value: &str) -> Result<(), HookError> {
    if key.is_empty() || key.contains(['=', '\0']) {
        return Err(invalid(
            event,
            "environment variable name",
            key,
            "is empty or contains '=' or a NUL byte",
        ));
    }
    if value.contains('\0') {
        return Err(invalid(
            event,
            "environment variable value",
            value,
            "contains a NUL byte",
        ));
    }
    Ok(())
}

fn invalid(
    event: &'static str,
    what: &'static str,
    value: &str,
    reason: &'static str,
) -> HookError {
    HookError::InvalidArgument {
        event,
        what,
        value: value.to_owned(),
        reason,
    }
}

/// How one hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookStatus {
    /// Exit status 0.
    Success,
    /// Exit status 42: the hook does not handle this event. Not an error.
    NotHandled,
    /// Any other exit status, or killed by a signal (not by us).
    Failed(ExitStatus),
    /// Still running when the timeout expired; its process group was killed.
    TimedOut,
    /// The hook could not be started (for example a script without `#!`).
    SpawnError(String),
    /// Not started: the event's deadline had passed when its turn came.
    DeadlinePassed,
}

impl HookStatus {
    /// Whether this counts as a failure: not a success and not "not handled".
    pub fn is_failure(&self) -> bool {
        !matches!(self, HookStatus::Success | HookStatus::NotHandled)
    }
}

impl fmt::Display for HookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookStatus::Success => f.write_str("succeeded"),
            HookStatus::NotHandled => f.write_str("did not handle the event (exit status 42)"),
            HookStatus::Failed(status) => write!(f, "failed ({status})"),
            HookStatus::TimedOut => f.write_str("timed out and was killed"),
            HookStatus::SpawnError(e) => write!(f, "could not be started: {e}"),
            HookStatus::DeadlinePassed => {
                f.write_str("was not started: the event's deadline had passed")
            }
        }
    }
}

/// The result of one hook for one event.
#[derive(Clone, Debug)]
pub struct HookOutcome {
    /// The hook file (absolute).
    pub path: PathBuf,
    /// How it ended.
    pub status: HookStatus,
    /// Its stdout and stderr, interleaved as written, decoded lossily as UTF-8, with control
    /// characters other than `\n` and `\t` removed. At most 64 KiB are kept (the start and the
    /// end); a marker line says how much was left out.
    pub output: String,
}

/// What the hooks did with one event, in the order they ran.
#[derive(Clone, Debug, Default)]
pub struct EventReport {
    /// One per hook that was run.
    pub outcomes: Vec<HookOutcome>,
}

impl EventReport {
    /// Whether at least one hook exited 0. `challenge-dns-start` needs this (acmetool: "no
    /// hooks succeeded"); no hooks at all is not a success.
    pub fn any_succeeded(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| o.status == HookStatus::Success)
    }

    /// The hooks that failed, timed out or could not be started.
    pub fn failures(&self) -> impl Iterator<Item = &HookOutcome> {
        self.outcomes.iter().filter(|o| o.status.is_failure())
    }
}

/// Why an event was not passed to the hooks at all.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Someone other than root (or the running user) could change a hook directory, or a
    /// directory on the way to it, so anyone could have put a hook there. acmetool refused
    /// the whole event for a world-writable directory; so do we, for this wider rule.
    #[error("refusing to run hooks from {dir}: {why}")]
    UntrustedDir {
        /// The hook directory, as given.
        dir: PathBuf,
        /// What could be changed by whom.
        why: trust::Untrusted,
    },
    /// An argument, stdin line or environment variable of the event cannot be passed on.
    #[error("refusing to run {event} hooks: the {what} {value:?} {reason}")]
    InvalidArgument {
        event: &'static str,
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A hook directory could not be read, or the state directory made absolute. The cause is
    /// the `source`, left out of the message because the error chain is printed anyway.
    #[error("cannot use {path} for hooks")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether to run setuid-root scripts through sudo.
#[derive(Clone, Debug)]
enum SudoPolicy {
    /// acmetool's rule: when we are not root and `sudo` is in PATH.
    Detect,
    /// Always, with this program (tests).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only tests force a sudo program")
    )]
    Program(PathBuf),
}

/// Runs the hooks for events; see the module documentation for the protocol.
#[derive(Clone, Debug)]
pub struct HookRunner {
    dirs: Vec<PathBuf>,
    state_dir: PathBuf,
    timeout: Duration,
    base_env: Vec<(String, String)>,
    sudo: SudoPolicy,
    /// The program that supervises each hook ([`supervisor`]), if any.
    supervisor: Option<PathBuf>,
}

/// A hook found in a hook directory.
struct Hook {
    path: PathBuf,
    meta: Metadata,
}

impl HookRunner {
    /// A runner for the hooks in `dirs` (in order; see [`hook_dirs`]) that tells them about
    /// `state_dir`. Nothing is checked until an event runs.
    pub fn new(dirs: Vec<PathBuf>, state_dir: PathBuf) -> Self {
        Self {
            dirs,
            state_dir,
            timeout: DEFAULT_TIMEOUT,
            base_env: Vec::new(),
            sudo: SudoPolicy::Detect,
            supervisor: None,
        }
    }

    /// Sets how long one hook may run before its process group is killed.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long one hook may run.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs each hook under a supervisor process (this executable, started again with
    /// [`supervisor::FLAG`]), so that the hook's process group is killed when this process
    /// ends however it ends. Only the acmekeep binary can supervise: its `main` starts with
    /// [`supervisor::run_if_asked`].
    pub fn supervised(mut self) -> Self {
        self.supervisor = Some(PathBuf::from(supervisor::SELF_EXE));
        self
    }

    /// Adds environment variables for every hook and every event (after ours, before the
    /// challenge env and `ACME_STATE_DIR`).
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.base_env.extend(vars);
        self
    }

    /// The hooks an event would run, in order.
    pub fn hooks(&self) -> Result<Vec<PathBuf>, HookError> {
        Ok(self.discover()?.into_iter().map(|h| h.path).collect())
    }

    /// Runs every hook for `event`, one after the other, and reports how each ended.
    ///
    /// A failing hook never stops the others; what a failure means is for the caller to
    /// decide (see [`EventReport::any_succeeded`]). An error means no hook was run.
    pub fn run(&self, event: &Event<'_>) -> Result<EventReport, HookError> {
        self.run_until(event, None)
    }

    /// [`HookRunner::run`], with every hook also stopped at `deadline` (and a hook whose turn
    /// comes after it not started): several events running at once share one deadline.
    pub fn run_until(
        &self,
        event: &Event<'_>,
        deadline: Option<Instant>,
    ) -> Result<EventReport, HookError> {
        event.validate()?;
        for (key, value) in &self.base_env {
            check_env(event.name(), key, value)?;
        }
        if event.names().is_some_and(<[String]>::is_empty) {
            // acmetool fires list events only when there is something to tell.
            return Ok(EventReport::default());
        }
        let hooks = self.discover()?;
        if hooks.is_empty() {
            tracing::debug!("no hooks for {event}");
            return Ok(EventReport::default());
        }
        let state_dir = std::path::absolute(&self.state_dir).map_err(|source| HookError::Io {
            path: self.state_dir.clone(),
            source,
        })?;
        let invocation = Invocation {
            event: event.name(),
            args: event.args(),
            stdin: Arc::from(event.stdin()),
            env: self.hook_env(event, &state_dir),
            timeout: self.timeout,
            deadline,
            supervisor: self.supervisor.as_deref(),
        };
        let sudo = OnceCell::new();
        let outcomes = hooks
            .iter()
            .map(|hook| {
                let via = if needs_sudo(hook) {
                    sudo.get_or_init(|| self.sudo_program()).as_deref()
                } else {
                    None
                };
                let outcome = invocation.run(&hook.path, via);
                log_outcome(event.name(), &outcome);
                outcome
            })
            .collect();
        Ok(EventReport { outcomes })
    }

    /// The variables set for a hook, in order; later ones win.
    fn hook_env(&self, event: &Event<'_>, state_dir: &Path) -> Vec<(String, String)> {
        let mut env = self.base_env.clone();
        if let Some(challenge_env) = event.challenge_env() {
            env.extend(challenge_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        env.push((
            STATE_DIR_ENV.to_owned(),
            state_dir.to_string_lossy().into_owned(),
        ));
        env
    }

    /// Finds the hooks: every directory is checked before any hook is listed, so a
    /// world-writable one refuses the event before anything runs.
    fn discover(&self) -> Result<Vec<Hook>, HookError> {
        let me = nix::unistd::geteuid().as_raw();
        let mut dirs = Vec::new();
        let mut seen = HashSet::new();
        for dir in &self.dirs {
            let io_err = |source| HookError::Io {
                path: dir.clone(),
                source,
            };
            let meta = match fs::metadata(dir) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(e)),
            };
            trust::check(dir, me).map_err(|why| HookError::UntrustedDir {
                dir: dir.clone(),
                why,
            })?;
            if seen.insert((meta.dev(), meta.ino())) {
                // Hooks run with working directory `/`, so their paths must be absolute.
                dirs.push(std::path::absolute(dir).map_err(io_err)?);
            }
        }

        let mut hooks = Vec::new();
        for dir in dirs {
            let io_err = |source| HookError::Io {
                path: dir.clone(),
                source,
            };
            let mut names = fs::read_dir(&dir)
                .and_then(|entries| {
                    entries
                        .map(|entry| entry.map(|e| e.file_name()))
                        .collect::<io::Result<Vec<_>>>()
                })
                .map_err(io_err)?;
            names.sort();
            for name in names {
                if name.as_encoded_bytes().starts_with(b".") {
                    continue;
                }
                let path = dir.join(&name);
                let shown = path.display();
                let meta = match fs::metadata(&path) {
                    Ok(meta) => meta,
                    Err(e) => {
                        tracing::warn!("skipping hook {shown}: {e}");
                        continue;
                    }
                };
                if !meta.is_file() {
                    tracing::debug!("skipping hook {shown}: not a regular file");
                } else if meta.mode() & 0o111 == 0 {
                    tracing::debug!("skipping hook {shown}: not executable");
                } else if meta.len() == 0 {
                    tracing::debug!("skipping hook {shown}: empty (disabled)");
                } else if let Err(why) = trust::check(&path, me) {
                    tracing::error!("refusing to run hook {shown}: {why}");
                } else {
                    hooks.push(Hook { path, meta });
                }
            }
        }
        Ok(hooks)
    }

    /// The sudo to run setuid-root scripts with, if any.
    fn sudo_program(&self) -> Option<PathBuf> {
        match &self.sudo {
            SudoPolicy::Program(program) => Some(program.clone()),
            SudoPolicy::Detect if running_as_root() => None,
            SudoPolicy::Detect => find_in_path("sudo"),
        }
    }
}

/// Whether acmetool would run this hook through sudo (leaving out who we are and whether sudo
/// exists): it is setuid, owned by root, and a script. Racy, but sudo enforces the security.
fn needs_sudo(hook: &Hook) -> bool {
    const SETUID: u32 = 0o4000;
    if hook.meta.mode() & SETUID == 0 || hook.meta.uid() != 0 {
        return false;
    }
    let mut magic = [0u8; 2];
    File::open(&hook.path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"#!")
}

/// Whether this process runs as root (its effective uid). `hooks` sits below `system`, so it
/// asks nix itself rather than `system::privileges`.
fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Looks `program` up in PATH like a shell would, ignoring relative PATH entries.
fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

/// Everything that is the same for each hook of one event.
struct Invocation<'a> {
    event: &'static str,
    args: Vec<&'a str>,
    stdin: Arc<[u8]>,
    env: Vec<(String, String)>,
    timeout: Duration,
    deadline: Option<Instant>,
    supervisor: Option<&'a Path>,
}

impl Invocation<'_> {
    /// Runs one hook (through `sudo` if given) to the end or to the timeout.
    fn run(&self, hook: &Path, sudo: Option<&Path>) -> HookOutcome {
        let outcome = |status, output| HookOutcome {
            path: hook.to_path_buf(),
            status,
            output,
        };
        let limit = match self.deadline {
            Some(deadline) => self
                .timeout
                .min(deadline.saturating_duration_since(Instant::now())),
            None => self.timeout,
        };
        if limit.is_zero() {
            return outcome(HookStatus::DeadlinePassed, String::new());
        }
        match self.spawn(hook, sudo) {
            Ok(running) => {
                let (status, output) = running.finish(limit);
                outcome(status, output)
            }
            Err(e) => outcome(HookStatus::SpawnError(e.to_string()), String::new()),
        }
    }

    /// Starts the hook with its stdin writer and output reader.
    fn spawn(&self, hook: &Path, sudo: Option<&Path>) -> io::Result<Running> {
        // The program and its arguments: the hook, or sudo running it.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        let program = match sudo {
            Some(sudo) => {
                tracing::debug!(
                    "running hook {} (with sudo) for {}",
                    hook.display(),
                    self.event
                );
                argv.extend(["-n".into(), "--".into(), hook.into()]);
                sudo.as_os_str().to_owned()
            }
            None => {
                tracing::debug!("running hook {} for {}", hook.display(), self.event);
                hook.as_os_str().to_owned()
            }
        };
        argv.push(self.event.into());
        argv.extend(self.args.iter().map(|a| a.into()));
        let supervisor = self.supervisor.filter(|s| {
            // Without /proc (some containers) the hook runs unsupervised.
            let there = s.exists();
            if !there {
                tracing::debug!("{} is missing; hooks run without a supervisor", s.display());
            }
            there
        });
        let mut cmd = match supervisor {
            Some(supervisor) => {
                let mut cmd = Command::new(supervisor);
                cmd.arg0("acmekeep")
                    .args(supervisor::command_line(&program, &argv));
                cmd
            }
            None => {
                let mut cmd = Command::new(&program);
                cmd.args(&argv);
                cmd
            }
        };
        cmd.current_dir("/")
            .env_remove(HOOKS_DIR_ENV)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .process_group(0);

        // Both pipes get their own thread before the hook starts, so a hook that never reads its
        // stdin or writes a lot cannot block us. If the spawn fails, dropping `cmd` closes our
        // copies of the child's ends and both threads finish.
        let (stdin_reader, stdin_writer) = io::pipe()?;
        let (output_reader, output_writer) = io::pipe()?;
        cmd.stdin(stdin_reader)
            .stdout(output_writer.try_clone()?)
            .stderr(output_writer);
        let capture = Arc::new(Mutex::new(Capture::default()));
        let output_done = read_output(output_reader, Arc::clone(&capture))?;
        write_stdin(stdin_writer, Arc::clone(&self.stdin))?;

        let mut retries = 0;
        let child = loop {
            match cmd.spawn() {
                Err(e)
                    if e.kind() == io::ErrorKind::ExecutableFileBusy && retries < BUSY_RETRIES =>
                {
                    retries += 1;
                    thread::sleep(Duration::from_millis(10 << retries));
                }
                result => break result?,
            }
        };
        // Our copies of the child's pipe ends must close, or the output never reaches EOF.
        drop(cmd);
        Ok(Running {
            child,
            capture,
            output_done,
        })
    }
}

/// A started hook.
struct Running {
    child: Child,
    capture: Arc<Mutex<Capture>>,
    output_done: mpsc::Receiver<()>,
}

impl Running {
    /// Waits for the hook to exit, killing its process group at the timeout, then collects
    /// its output.
    fn finish(mut self, timeout: Duration) -> (HookStatus, String) {
        let deadline = Instant::now() + timeout;
        let mut poll = FIRST_POLL;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break exit_status(status),
                Ok(None) => {}
                Err(e) => {
                    kill_process_group(&mut self.child);
                    break HookStatus::SpawnError(format!("cannot wait for the hook: {e}"));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                kill_process_group(&mut self.child);
                break HookStatus::TimedOut;
            }
            thread::sleep(poll.min(deadline - now));
            poll = (poll * 2).min(MAX_POLL);
        };
        if self.output_done.recv_timeout(OUTPUT_GRACE).is_err() {
            tracing::debug!(
                "hook process {} has ended, but a process it started still holds its output",
                self.child.id()
            );
        }
        let output = lock(&self.capture).render();
        (status, output)
    }
}

/// Maps an exit status to acmetool's meaning.
fn exit_status(status: ExitStatus) -> HookStatus {
    match status.code() {
        Some(0) => HookStatus::Success,
        Some(NOT_HANDLED_EXIT_CODE) => HookStatus::NotHandled,
        _ => HookStatus::Failed(status),
    }
}

/// Kills the hook and everything in its process group, and reaps the hook.
///
/// The hook (or its supervisor) was started with `process_group(0)`, so its pid is the group
/// id. It is not reaped yet, so neither id can have been reused.
fn kill_process_group(child: &mut Child) {
    let group = i32::try_from(child.id()).map(nix::unistd::Pid::from_raw);
    if let Ok(group) = group
        && let Err(e) = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL)
    {
        tracing::debug!("could not kill process group {group}: {e}; killing the hook only");
    }
    // Harmless when the group kill already got it.
    let _ = child.kill();
    if let Err(e) = child.wait() {
        tracing::warn!("cannot reap hook process {}: {e}", child.id());
    }
}

/// Feeds `data` to the hook's stdin and closes it. A hook that does not read its stdin makes
/// the write fail with EPIPE (Rust ignores SIGPIPE), which is fine.
fn write_stdin(mut pipe: io::PipeWriter, data: Arc<[u8]>) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    thread::Builder::new()
        .name("hook-stdin".into())
        .spawn(move || {
            let _ = pipe.write_all(&data);
        })
        .map(drop)
}

/// Reads the hook's output into `capture` until EOF, then says so on the returned channel.
fn read_output(
    mut pipe: io::PipeReader,
    capture: Arc<Mutex<Capture>>,
) -> io::Result<mpsc::Receiver<()>> {
    let (done, done_rx) = mpsc::channel();
    thread::Builder::new()
        .name("hook-output".into())
        .spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => lock(&capture).push(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            // Nobody listens any more if the hook's grace period ran out.
            let _ = done.send(());
        })?;
    Ok(done_rx)
}

/// A poisoned capture is still a valid capture.
fn lock(capture: &Mutex<Capture>) -> std::sync::MutexGuard<'_, Capture> {
    capture.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A hook's output, bounded: its start and its end.
#[derive(Debug, Default)]
struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl Capture {
    fn push(&mut self, data: &[u8]) {
        self.total = self.total.saturating_add(data.len() as u64);
        let room = OUTPUT_HEAD.saturating_sub(self.head.len()).min(data.len());
        let (head, rest) = data.split_at(room);
        self.head.extend_from_slice(head);
        let rest = &rest[rest.len().saturating_sub(OUTPUT_TAIL)..];
        let excess = (self.tail.len() + rest.len()).saturating_sub(OUTPUT_TAIL);
        self.tail.drain(..excess);
        self.tail.extend(rest);
    }

    fn render(&self) -> String {
        let mut out = sanitize(&String::from_utf8_lossy(&self.head));
        let kept = (self.head.len() + self.tail.len()) as u64;
        let left_out = self.total.saturating_sub(kept);
        if left_out > 0 {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!(
                "[acmekeep: {left_out} bytes of hook output left out]\n"
            ));
        }
        let (a, b) = self.tail.as_slices();
        out.push_str(&sanitize(&String::from_utf8_lossy(&[a, b].concat())));
        out
    }
}

/// Removes control characters other than newline and tab: hook output is untrusted and must
/// not drive the terminal that shows our log.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|&c| !c.is_control() || c == '\n' || c == '\t')
        .collect()
}

/// Logs how a hook ended: failures as warnings, with the end of their output.
fn log_outcome(event: &str, outcome: &HookOutcome) {
    let path = outcome.path.display();
    let status = &outcome.status;
    if !status.is_failure() {
        tracing::debug!("hook {path} for {event}: {status}");
        return;
    }
    let output = outcome.output.trim_end();
    if output.is_empty() {
        tracing::warn!("hook {path} for {event} {status}");
    } else {
        let mut start = output.len().saturating_sub(LOG_EXCERPT);
        while !output.is_char_boundary(start) {
            start += 1;
        }
        let cut = if start > 0 { "..." } else { "" };
        tracing::warn!(
            "hook {path} for {event} {status}; output:\n{cut}{}",
            &output[start..]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// Writes an executable shell script.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write hook script");
        chmod(&path, 0o755);
        path
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn mkdir(parent: &Path, name: &str) -> PathBuf {
        let dir = parent.join(name);
        fs::create_dir(&dir).expect("create hook dir");
        chmod(&dir, 0o755);
        dir
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    fn runner(dirs: &[&Path], state: &Path) -> HookRunner {
        HookRunner::new(
            dirs.iter().map(|d| d.to_path_buf()).collect(),
            state.to_path_buf(),
        )
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).expect("read file a hook wrote")
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn statuses(report: &EventReport) -> Vec<HookStatus> {
        report.outcomes.iter().map(|o| o.status.clone()).collect()
    }

    /// A hook body that appends its own name to `log`.
    fn log_name(log: &Path) -> String {
        format!("echo \"${{0##*/}}\" >> '{}'", log.display())
    }

    #[test]
    fn hook_dirs_prefers_flag_then_env_then_defaults() {
        let flag = vec![PathBuf::from("/a"), PathBuf::from("/b")];
        assert_eq!(hook_dirs(&flag, Some(OsStr::new("/c"))), flag);
        assert_eq!(
            hook_dirs(&[], Some(OsStr::new("/c::/d"))),
            vec![PathBuf::from("/c"), PathBuf::from("/d")]
        );
        let defaults: Vec<PathBuf> = DEFAULT_HOOK_DIRS.iter().map(PathBuf::from).collect();
        assert_eq!(hook_dirs(&[], Some(OsStr::new(""))), defaults);
        assert_eq!(hook_dirs(&[], None), defaults);
    }

    #[test]
    fn hooks_run_dir_by_dir_sorted_within_each() {
        let tmp = tempdir();
        let log = tmp.path().join("log");
        let first = mkdir(tmp.path(), "first");
        let second = mkdir(tmp.path(), "second");
        for name in ["b", "a", "10"] {
            script(&first, name, &log_name(&log));
        }
        script(&second, "0", &log_name(&log));
        let missing = tmp.path().join("missing");
        let r = runner(&[&first, &missing, &second, &first], tmp.path());

        let expected = vec![
            first.join("10"),
            first.join("a"),
            first.join("b"),
            second.join("0"),
        ];
        assert_eq!(r.hooks().expect("hooks"), expected);
        let report = r
            .run(&Event::LiveUpdated {
                names: &names(&["example.com"]),
            })
            .expect("run");
        assert_eq!(read(&log), "10\na\nb\n0\n");
        let paths: Vec<_> = report.outcomes.iter().map(|o| o.path.clone()).collect();
        assert_eq!(paths, expected);
    }

    #[test]
    fn hooks_skips_what_acmetool_skips() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let good = script(&dir, "good", "exit 0");
        script(&dir, ".hidden", "exit 0");
        let plain = script(&dir, "not-executable", "exit 0");
        chmod(&plain, 0o644);
        let open = script(&dir, "world-writable", "exit 0");
        chmod(&open, 0o777);
        mkdir(&dir, "subdir");
        let empty = dir.join("empty");
        fs::write(&empty, "").expect("write empty hook");
        chmod(&empty, 0o755);
        let elsewhere = script(tmp.path(), "target", "exit 0");
        symlink(&elsewhere, dir.join("link")).expect("symlink");
        symlink(tmp.path().join("nowhere"), dir.join("dangling")).expect("symlink");

        let r = runner(&[&dir], tmp.path());
        assert_eq!(r.hooks().expect("hooks"), vec![good, dir.join("link")]);
    }

    #[test]
    fn hooks_a_group_could_change_no_longer_run() {
        let tmp = tempdir();
        let log = tmp.path().join("log");
        let dir = mkdir(tmp.path(), "hooks");
        let good = script(&dir, "good", &log_name(&log));
        let shared = script(&dir, "group-writable", &log_name(&log));
        chmod(&shared, 0o775);
        // A link from the safe directory into one a group can write to.
        let open = mkdir(tmp.path(), "open");
        chmod(&open, 0o775);
        let planted = script(&open, "planted", &log_name(&log));
        symlink(&planted, dir.join("via-link")).expect("symlink");
        let r = runner(&[&dir], tmp.path());
        assert_eq!(r.hooks().expect("hooks"), vec![good]);

        // A group-writable hook directory refuses the whole event.
        chmod(&dir, 0o775);
        let err = r
            .run(&Event::LiveUpdated {
                names: &names(&["example.com"]),
            })
            .expect_err("group-writable dir must refuse");
        assert!(
            matches!(&err, HookError::UntrustedDir { dir: d, .. } if *d == dir),
            "{err}"
        );
        assert!(err.to_string().contains("writable by its group"), "{err}");
        assert!(!log.exists(), "no hook may run");
    }

    #[test]
    fn hooks_of_one_event_share_its_deadline() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        script(&dir, "a-slow", "sleep 5");
        script(&dir, "b-slow", "sleep 5");
        let r = runner(&[&dir], tmp.path()).with_timeout(Duration::from_secs(30));
        let started = Instant::now();
        let report = r
            .run_until(
                &Event::LiveUpdated {
                    names: &names(&["x"]),
                },
                Some(started + Duration::from_millis(500)),
            )
            .expect("run");
        assert_eq!(
            statuses(&report),
            vec![HookStatus::TimedOut, HookStatus::DeadlinePassed]
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn dangerous_challenge_env_is_refused_before_any_hook_runs() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let log = tmp.path().join("log");
        script(&dir, "hook", &log_name(&log));
        let r = runner(&[&dir], tmp.path());
        let env = BTreeMap::from([("LD_PRELOAD".to_string(), "/tmp/x.so".to_string())]);
        let err = r
            .run(&Event::ChallengeDnsStart {
                hostname: "a.example",
                target_file: "t",
                txt_value: "v",
                wildcard: false,
                record_name: None,
                env: &env,
            })
            .expect_err("must refuse");
        assert!(err.to_string().contains("LD_PRELOAD"), "{err}");
        assert!(!log.exists());
    }

    #[test]
    fn world_writable_hook_dir_refuses_the_event() {
        let tmp = tempdir();
        let log = tmp.path().join("log");
        let safe = mkdir(tmp.path(), "safe");
        script(&safe, "hook", &log_name(&log));
        let open = mkdir(tmp.path(), "open");
        chmod(&open, 0o777);
        let r = runner(&[&safe, &open], tmp.path());

        let err = r
            .run(&Event::LiveUpdated {
                names: &names(&["example.com"]),
            })
            .expect_err("world-writable dir must refuse");
        assert!(
            matches!(&err, HookError::UntrustedDir { dir, .. } if *dir == open),
            "{err}"
        );
        assert!(!log.exists(), "no hook may run");
    }

    /// A hook that records its argv, stdin, working directory and some variables.
    fn recorder(dir: &Path, out: &Path) {
        let out = out.display();
        script(
            dir,
            "record",
            &format!(
                r#"for a in "$@"; do printf '[%s]\n' "$a"; done > '{out}.args'
cat > '{out}.stdin'
{{
  echo "ACME_STATE_DIR=${{ACME_STATE_DIR-unset}}"
  echo "ACME_HOOKS_DIR=${{ACME_HOOKS_DIR-unset}}"
  echo "FROM_TARGET=${{FROM_TARGET-unset}}"
  echo "FROM_RUNNER=${{FROM_RUNNER-unset}}"
  echo "PWD=$(pwd -P)"
}} > '{out}.env'"#
            ),
        );
    }

    #[test]
    fn hooks_get_acmetool_argv_stdin_and_env() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let out = tmp.path().join("out");
        recorder(&dir, &out);
        let state = tmp.path().join("state");
        let r = runner(&[&dir], &state).with_env([("FROM_RUNNER".into(), "r".into())]);
        let env = BTreeMap::from([("FROM_TARGET".to_string(), "t v".to_string())]);
        let state_line = format!("ACME_STATE_DIR={}", state.display());

        let check = |event: Event<'_>, args: &str, stdin: &str, target_env: &str| {
            let report = r.run(&event).expect("run");
            assert_eq!(statuses(&report), vec![HookStatus::Success], "{event}");
            assert_eq!(read(&out.with_extension("args")), args, "{event}");
            assert_eq!(read(&out.with_extension("stdin")), stdin, "{event}");
            let expected_env = format!(
                "{state_line}\nACME_HOOKS_DIR=unset\nFROM_TARGET={target_env}\nFROM_RUNNER=r\nPWD=/\n"
            );
            assert_eq!(read(&out.with_extension("env")), expected_env, "{event}");
        };

        let live = names(&["a.example", "b.example:label"]);
        check(
            Event::LiveUpdated { names: &live },
            "[live-updated]\n",
            "a.example\nb.example:label\n",
            "unset",
        );
        check(
            Event::ReconcileFailed { names: &live },
            "[reconcile-failed]\n",
            "a.example\nb.example:label\n",
            "unset",
        );
        check(
            Event::ChallengeHttpStart {
                hostname: "a.example",
                target_file: "a.example",
                token: "tok",
                key_authorization: "tok.thumb",
                env: &env,
            },
            "[challenge-http-start]\n[a.example]\n[a.example]\n[tok]\n",
            "tok.thumb",
            "t v",
        );
        check(
            Event::ChallengeHttpStop {
                hostname: "a.example",
                target_file: "",
                token: "tok",
                key_authorization: "tok.thumb",
                env: &env,
            },
            "[challenge-http-stop]\n[a.example]\n[]\n[tok]\n",
            "tok.thumb",
            "t v",
        );
        check(
            Event::ChallengeDnsStart {
                hostname: "a.example",
                target_file: "t",
                txt_value: "txt",
                wildcard: true,
                record_name: None,
                env: &env,
            },
            "[challenge-dns-start]\n[a.example]\n[t]\n[txt]\n[wildcard]\n",
            "",
            "t v",
        );
        check(
            Event::ChallengeDnsStop {
                hostname: "a.example",
                target_file: "t",
                txt_value: "txt",
                wildcard: false,
                record_name: None,
                env: &env,
            },
            "[challenge-dns-stop]\n[a.example]\n[t]\n[txt]\n[]\n",
            "",
            "t v",
        );
        check(
            Event::ChallengeDnsStart {
                hostname: "a.example",
                target_file: "t",
                txt_value: "txt",
                wildcard: true,
                record_name: Some("_ujmmovf2vn55tgye._acme-challenge.a.example"),
                env: &env,
            },
            "[challenge-dns-account-start]\n[a.example]\n[t]\n[txt]\n[wildcard]\n\
             [_ujmmovf2vn55tgye._acme-challenge.a.example]\n",
            "",
            "t v",
        );
        check(
            Event::ChallengeDnsStop {
                hostname: "a.example",
                target_file: "t",
                txt_value: "txt",
                wildcard: false,
                record_name: Some("_ujmmovf2vn55tgye._acme-challenge.a.example"),
                env: &env,
            },
            "[challenge-dns-account-stop]\n[a.example]\n[t]\n[txt]\n[]\n\
             [_ujmmovf2vn55tgye._acme-challenge.a.example]\n",
            "",
            "t v",
        );
    }

    #[test]
    fn acme_state_dir_is_absolute_and_hooks_dir_is_not_passed_on() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let out = tmp.path().join("out");
        recorder(&dir, &out);
        // Relative to our working directory; the hook runs in `/`.
        let r = HookRunner::new(vec![dir.clone()], PathBuf::from("relative/state"));
        r.run(&Event::LiveUpdated {
            names: &names(&["x"]),
        })
        .expect("run");
        let cwd = std::env::current_dir().expect("cwd");
        let env = read(&out.with_extension("env"));
        assert!(
            env.starts_with(&format!(
                "ACME_STATE_DIR={}\nACME_HOOKS_DIR=unset\n",
                cwd.join("relative/state").display()
            )),
            "{env}"
        );
    }

    #[test]
    fn exit_codes_map_to_statuses_and_every_hook_runs() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let log = tmp.path().join("log");
        script(&dir, "10-fail", &format!("{}\nexit 3", log_name(&log)));
        script(&dir, "20-skip", &format!("{}\nexit 42", log_name(&log)));
        script(&dir, "30-ok", &log_name(&log));
        script(
            &dir,
            "40-signal",
            &format!("{}\nkill -TERM $$", log_name(&log)),
        );
        let r = runner(&[&dir], tmp.path());

        let report = r
            .run(&Event::LiveUpdated {
                names: &names(&["x"]),
            })
            .expect("run");
        assert_eq!(read(&log), "10-fail\n20-skip\n30-ok\n40-signal\n");
        let s = statuses(&report);
        assert!(
            matches!(&s[0], HookStatus::Failed(e) if e.code() == Some(3)),
            "{s:?}"
        );
        assert_eq!(s[1], HookStatus::NotHandled);
        assert_eq!(s[2], HookStatus::Success);
        assert!(
            matches!(&s[3], HookStatus::Failed(e) if e.code().is_none()),
            "{s:?}"
        );
        assert!(report.any_succeeded());
        let failed: Vec<_> = report.failures().map(|o| o.path.clone()).collect();
        assert_eq!(failed, vec![dir.join("10-fail"), dir.join("40-signal")]);
    }

    #[test]
    fn dns_start_needs_a_hook_that_exits_zero() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let env = BTreeMap::new();
        let event = Event::ChallengeDnsStart {
            hostname: "a.example",
            target_file: "a.example",
            txt_value: "v",
            wildcard: false,
            record_name: None,
            env: &env,
        };
        let r = runner(&[&dir], tmp.path());
        assert!(!r.run(&event).expect("run").any_succeeded(), "no hooks");

        script(&dir, "a", "exit 42");
        script(&dir, "b", "exit 1");
        assert!(!r.run(&event).expect("run").any_succeeded(), "42 and 1");

        script(&dir, "c", "exit 0");
        assert!(r.run(&event).expect("run").any_succeeded(), "one exits 0");
    }

    #[test]
    fn dns_wildcard_hostname_loses_its_star_like_acmetool() {
        let env = BTreeMap::new();
        let event = Event::ChallengeDnsStart {
            hostname: "*.a.example",
            target_file: "t",
            txt_value: "v",
            wildcard: false,
            record_name: None,
            env: &env,
        };
        assert_eq!(event.args(), vec!["a.example", "t", "v", "wildcard"]);
    }

    /// Whether a process is gone (or a zombie nobody reaped yet, as happens in containers).
    fn is_dead(pid: &str) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        }
    }

    #[test]
    fn timed_out_hook_and_its_children_are_killed() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let pid_file = tmp.path().join("pid");
        script(
            &dir,
            "slow",
            &format!(
                "sleep 30 &\necho $! > '{}'\necho started\nwait",
                pid_file.display()
            ),
        );
        let r = runner(&[&dir], tmp.path()).with_timeout(Duration::from_millis(500));

        let start = Instant::now();
        let report = r
            .run(&Event::LiveUpdated {
                names: &names(&["x"]),
            })
            .expect("run");
        let took = start.elapsed();
        assert_eq!(statuses(&report), vec![HookStatus::TimedOut]);
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert_eq!(report.outcomes[0].output, "started\n");
        let grandchild = read(&pid_file);
        let grandchild = grandchild.trim();
        let gone_by = Instant::now() + Duration::from_secs(2);
        while !is_dead(grandchild) && Instant::now() < gone_by {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(
            is_dead(grandchild),
            "background sleep {grandchild} survived"
        );
    }

    #[test]
    fn background_process_holding_the_output_does_not_block() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let pid_file = tmp.path().join("pid");
        script(
            &dir,
            "daemon",
            &format!("sleep 30 &\necho $! > '{}'\necho done", pid_file.display()),
        );
        let r = runner(&[&dir], tmp.path());

        let start = Instant::now();
        let report = r
            .run(&Event::LiveUpdated {
                names: &names(&["x"]),
            })
            .expect("run");
        let took = start.elapsed();
        let daemon = read(&pid_file);
        // Clean up before asserting, so a failure leaves nothing behind.
        let _ = Command::new("kill").arg(daemon.trim()).status();
        assert_eq!(statuses(&report), vec![HookStatus::Success]);
        assert_eq!(report.outcomes[0].output, "done\n");
        assert!(
            took < OUTPUT_GRACE + Duration::from_secs(1),
            "took {took:?}"
        );
    }

    #[test]
    fn huge_output_is_bounded_and_keeps_start_and_end() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        script(
            &dir,
            "chatty",
            "echo FIRST\nhead -c 1048576 /dev/zero | tr '\\0' x\necho\necho LAST >&2\nexit 5",
        );
        let r = runner(&[&dir], tmp.path());

        let report = r
            .run(&Event::LiveUpdated {
                names: &names(&["x"]),
            })
            .expect("run");
        let outcome = &report.outcomes[0];
        assert!(matches!(&outcome.status, HookStatus::Failed(e) if e.code() == Some(5)));
        let output = &outcome.output;
        assert!(
            output.len() <= OUTPUT_HEAD + OUTPUT_TAIL + 100,
            "{}",
            output.len()
        );
        assert!(output.starts_with("FIRST\nxxx"));
        assert!(output.ends_with("xxx\nLAST\n"));
        assert!(output.contains("bytes of hook output left out]\n"));
    }

    #[test]
    fn control_characters_are_removed_from_output() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        script(&dir, "ansi", r"printf 'a\033[31mred\007\r\tb\n'");
        let r = runner(&[&dir], tmp.path());
        let report = r
            .run(&Event::LiveUpdated {
                names: &names(&["x"]),
            })
            .expect("run");
        assert_eq!(report.outcomes[0].output, "a[31mred\tb\n");
    }

    #[test]
    fn a_hook_that_does_not_read_large_stdin_does_not_block() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        script(&dir, "deaf", "exit 0");
        script(&dir, "reader", "wc -l");
        let many: Vec<String> = (0..20_000).map(|i| format!("host{i}.example")).collect();
        let r = runner(&[&dir], tmp.path()).with_timeout(Duration::from_secs(10));
        let report = r.run(&Event::LiveUpdated { names: &many }).expect("run");
        assert_eq!(
            statuses(&report),
            vec![HookStatus::Success, HookStatus::Success]
        );
        assert_eq!(report.outcomes[1].output.trim(), "20000");
    }

    #[test]
    fn newlines_and_nuls_are_refused_before_any_hook_runs() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let log = tmp.path().join("log");
        script(&dir, "hook", &log_name(&log));
        let r = runner(&[&dir], tmp.path());
        let env = BTreeMap::new();
        let http = |hostname, key_authorization| Event::ChallengeHttpStart {
            hostname,
            target_file: "t",
            token: "tok",
            key_authorization,
            env: &env,
        };

        for event in [
            http("a\nb.example", "k"),
            http("a\0b.example", "k"),
            http("a.example", "k\n"),
            Event::LiveUpdated {
                names: &names(&["a.example", "b\n.example"]),
            },
            Event::ReconcileFailed {
                names: &names(&[""]),
            },
        ] {
            let err = r.run(&event).expect_err("must refuse");
            assert!(matches!(err, HookError::InvalidArgument { .. }), "{err}");
        }
        let bad_env = BTreeMap::from([("A=B".to_string(), "v".to_string())]);
        let err = r
            .run(&Event::ChallengeDnsStop {
                hostname: "a.example",
                target_file: "t",
                txt_value: "v",
                wildcard: false,
                record_name: None,
                env: &bad_env,
            })
            .expect_err("must refuse");
        assert!(matches!(err, HookError::InvalidArgument { .. }), "{err}");
        assert!(!log.exists(), "no hook may run");
    }

    #[test]
    fn list_events_without_names_run_nothing() {
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let log = tmp.path().join("log");
        script(&dir, "hook", &log_name(&log));
        let r = runner(&[&dir], tmp.path());
        let report = r.run(&Event::LiveUpdated { names: &[] }).expect("run");
        assert!(report.outcomes.is_empty());
        assert!(!log.exists());
    }

    #[test]
    fn script_without_shebang_is_a_spawn_error_or_runs() {
        // acmetool (Go) reports ENOEXEC; some libcs fall back to /bin/sh. Either way it must
        // not hang, and a start failure must be reported as such.
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let path = dir.join("noshebang");
        fs::write(&path, "exit 7\n").expect("write hook");
        chmod(&path, 0o755);
        let report = runner(&[&dir], tmp.path())
            .run(&Event::LiveUpdated {
                names: &names(&["x"]),
            })
            .expect("run");
        let status = &report.outcomes[0].status;
        assert!(
            matches!(status, HookStatus::SpawnError(_))
                || matches!(status, HookStatus::Failed(e) if e.code() == Some(7)),
            "{status:?}"
        );
    }

    #[test]
    fn setuid_root_scripts_go_through_sudo() {
        if !running_as_root() {
            // Only root can make a root-owned setuid file.
            return;
        }
        let tmp = tempdir();
        let dir = mkdir(tmp.path(), "hooks");
        let log = tmp.path().join("sudo-args");
        // A fake sudo that records its arguments and runs the rest after `-n --`.
        let sudo = script(
            tmp.path(),
            "sudo",
            &format!(
                "printf '[%s]' \"$@\" >> '{}'\necho >> '{}'\nshift 2\nexec \"$@\"",
                log.display(),
                log.display()
            ),
        );
        let privileged = script(&dir, "a-privileged", "echo privileged");
        chmod(&privileged, 0o4755);
        script(&dir, "b-plain", "echo plain");
        let mut r = runner(&[&dir], tmp.path());
        r.sudo = SudoPolicy::Program(sudo);

        let report = r
            .run(&Event::LiveUpdated {
                names: &names(&["x"]),
            })
            .expect("run");
        assert_eq!(
            statuses(&report),
            vec![HookStatus::Success, HookStatus::Success]
        );
        assert_eq!(report.outcomes[0].output, "privileged\n");
        assert_eq!(report.outcomes[1].output, "plain\n");
        assert_eq!(
            read(&log),
            format!("[-n][--][{}][live-updated]\n", privileged.display())
        );
    }

    #[test]
    fn capture_keeps_head_and_tail() {
        let mut c = Capture::default();
        for _ in 0..100 {
            c.push(&[b'a'; 1000]);
        }
        c.push(b"END");
        assert_eq!(c.head.len(), OUTPUT_HEAD);
        assert_eq!(c.tail.len(), OUTPUT_TAIL);
        let text = c.render();
        assert!(text.ends_with("aEND"));
        let left_out = 100_003 - OUTPUT_HEAD - OUTPUT_TAIL;
        assert!(text.contains(&format!(
            "[acmekeep: {left_out} bytes of hook output left out]\n"
        )));
    }
}
