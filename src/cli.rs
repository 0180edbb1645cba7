//! Command-line definition (clap types only; resolving them is `settings`'s job).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::challenge::redirector::RedirectStatus;

/// Shown under each command's `--help`, where the global options are not repeated.
const GLOBAL_OPTIONS_POINTER: &str = "Global options (--state, --batch, --hooks, -v, -q, --wait, ...) \
     may also be given before or after the command: `acmekeep --help` lists them.";

/// The command line as it is parsed and shown: [`Cli`]'s definition, with the global options
/// listed once, in `acmekeep --help`. They still work after a command (`acmekeep reconcile
/// --batch`, as acmetool's cron lines have it), but each command's `--help` lists only its own
/// options, and a line pointing to the global ones. (Completions use [`Cli::command`], so the
/// global options complete after a command too.)
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    // clap copies each global option into every subcommand when it builds the command, unless
    // the subcommand already has it: give each subcommand hidden copies first.
    cmd.mut_subcommands(|sub| {
        globals
            .iter()
            .fold(sub, |sub, a| sub.arg(a.clone().hide(true)))
            .after_help(GLOBAL_OPTIONS_POINTER)
    })
}

/// Parses the process's arguments with [`command`]; a usage error exits (status 2), as
/// `Cli::parse` would, except under `check` (see [`usage_error_code`]).
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // No copy of the command is kept for the error path: the command is the largest thing a
    // run allocates before its work, and a usage error can build it again.
    let parsed = command()
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    parsed.unwrap_or_else(|e| {
        if e.use_stderr() {
            let _ = e.print();
            std::process::exit(usage_error_code(&command(), &args));
        }
        // --help, --version: printed on stdout, exit 0.
        e.exit()
    })
}

/// The exit status of a usage error in `args` (the program name first): 2, as for any
/// configuration error, but 3 under `check`, a monitoring plugin, to which 2 means CRITICAL
/// and 3 UNKNOWN (a check that could not run says nothing about the certificates).
pub fn usage_error_code(cmd: &clap::Command, args: &[std::ffi::OsString]) -> i32 {
    /// Nagios's UNKNOWN.
    const UNKNOWN: i32 = 3;
    let mut words = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            // A global option before the command; its value may be the next word.
            let takes_next = !long.contains('=')
                && cmd.get_arguments().any(|a| {
                    a.get_long() == Some(long)
                        && a.get_action().takes_values()
                        && !a.is_require_equals_set()
                });
            if takes_next {
                words.next();
            }
            continue;
        }
        if word.starts_with('-') && word.len() > 1 {
            // -v, -q: the global short options take no value.
            continue;
        }
        return match cmd.find_subcommand(&*word) {
            Some(sub) if sub.get_name() == "check" => UNKNOWN,
            _ => i32::from(crate::exit::CONFIG),
        };
    }
    i32::from(crate::exit::CONFIG)
}

/// acmekeep: keeps a machine's TLS certificates valid forever (acmetool-compatible).
#[derive(Debug, Parser)]
#[command(
    name = "acmekeep",
    version,
    about,
    long_about = None,
    after_help = "Run `acmekeep COMMAND --help` for a command's own options, and see acmekeep(1) \
        for the files, the environment and the exit status."
)]
pub struct Cli {
    /// State directory.
    #[arg(long, global = true, env = "ACME_STATE_DIR", value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Never prompt; a missing answer is an error naming the response-file key to add.
    #[arg(long, global = true)]
    pub batch: bool,
    /// YAML file of prompt answers (default: the state directory's `conf/responses`).
    // The help is written out so that it can name `<state>`, which rustdoc would read as an
    // unclosed HTML tag.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help = "YAML file of prompt answers (default: <state>/conf/responses if it exists)"
    )]
    pub response_file: Option<PathBuf>,
    /// Wait for the state directory lock instead of failing at once (default 10m).
    #[arg(long, global = true, value_name = "DURATION", num_args = 0..=1, default_missing_value = "10m", require_equals = true)]
    pub wait: Option<String>,
    /// Maximum number of orders in flight at once.
    #[arg(long, global = true, env = "ACMEKEEP_JOBS", default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: u16,
    /// How long to wait for the CA to answer one request, its whole answer included (e.g.
    /// 30s, 2m). After two requests to a CA go unanswered, no new order is started there for
    /// the rest of the run.
    #[arg(
        long,
        global = true,
        env = "ACMEKEEP_CA_TIMEOUT",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub ca_timeout: String,
    /// Most time one run waits for a CA that asks it to slow down (rate limits, overload;
    /// only pauses of up to a minute are waited out). 0 never waits: the refused certificates
    /// are left to a later run, not before the CA's time.
    #[arg(
        long,
        global = true,
        env = "ACMEKEEP_RATE_LIMIT_WAIT",
        default_value = "10m",
        value_name = "DURATION"
    )]
    pub rate_limit_wait: String,
    /// After each run, write Prometheus metrics to this file (node_exporter's textfile
    /// collector; overrides conf/target's monitor.metrics-file).
    #[arg(
        long,
        global = true,
        env = "ACMEKEEP_METRICS_FILE",
        value_name = "FILE"
    )]
    pub metrics_file: Option<PathBuf>,
    /// More log output on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Hook directories (repeatable; default /etc/acme/hooks, /usr/lib/acme/hooks,
    /// /usr/libexec/acme/hooks).
    #[arg(long = "hooks", global = true, value_name = "DIR")]
    pub hooks: Vec<PathBuf>,
    /// Install scheduling files under this directory instead of / (for tests and image
    /// builds).
    #[arg(
        long,
        global = true,
        hide = true,
        env = "ACMEKEEP_SYSTEM_ROOT",
        value_name = "DIR"
    )]
    pub system_root: Option<PathBuf>,
    /// External Account Binding credentials, used when an account is registered.
    #[command(flatten)]
    pub eab: EabArgs,
    /// acmetool's command-line flags, accepted so existing cron lines and units keep working.
    #[command(flatten)]
    pub acmetool: AcmetoolFlags,
    /// What to do (default: reconcile).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// External Account Binding (RFC 8555 §7.3.4) credentials from the CA, for registering a new
/// account at a CA that requires them (ZeroSSL, Google Trust Services, Sectigo, …). They win
/// over `request.eab` and the response file; an existing account never needs them again.
#[derive(Debug, Args, Default, Clone)]
pub struct EabArgs {
    /// EAB key identifier from the CA (used when registering a new account).
    #[arg(
        long = "eab-kid",
        global = true,
        value_name = "KID",
        allow_hyphen_values = true,
        value_parser = eab_value
    )]
    pub kid: Option<String>,
    /// EAB MAC key from the CA, base64url (used when registering a new account).
    // A base64url key may begin with '-': it is still this option's value.
    #[arg(
        long = "eab-hmac-key",
        global = true,
        value_name = "KEY",
        allow_hyphen_values = true,
        value_parser = eab_value
    )]
    pub hmac_key: Option<String>,
    /// EAB MAC algorithm: hs256 (default), hs384 or hs512.
    #[arg(long = "eab-algorithm", global = true, value_name = "ALG")]
    pub algorithm: Option<String>,
}

/// Flags acmetool accepted. `--xlog.severity` sets the log level and `--service.uid`/`.gid`
/// name the redirector's user and group; the rest are accepted and ignored (logging goes to
/// stderr).
#[derive(Debug, Args, Default)]
pub struct AcmetoolFlags {
    /// acmetool: log level (debug, info, notice, warn, error, or a syslog number).
    #[arg(
        long = "xlog.severity",
        global = true,
        hide = true,
        value_name = "LEVEL"
    )]
    pub xlog_severity: Option<String>,
    #[arg(long = "xlog.stderrseverity", global = true, hide = true)]
    xlog_stderrseverity: Option<String>,
    #[arg(long = "xlog.file", global = true, hide = true)]
    xlog_file: Option<String>,
    #[arg(long = "xlog.fileseverity", global = true, hide = true)]
    xlog_fileseverity: Option<String>,
    #[arg(long = "xlog.syslogseverity", global = true, hide = true)]
    xlog_syslogseverity: Option<String>,
    #[arg(long = "xlog.journalseverity", global = true, hide = true)]
    xlog_journalseverity: Option<String>,
    #[arg(long = "xlog.facility", global = true, hide = true)]
    xlog_facility: Option<String>,
    #[arg(long = "xlog.stderr", global = true, hide = true)]
    xlog_stderr: bool,
    #[arg(long = "xlog.syslog", global = true, hide = true)]
    xlog_syslog: bool,
    #[arg(long = "xlog.journal", global = true, hide = true)]
    xlog_journal: bool,
    /// acmetool: the user the redirector drops to (acmekeep: `redirector --user`).
    #[arg(long = "service.uid", global = true, hide = true)]
    pub service_uid: Option<String>,
    /// acmetool: the group the redirector drops to (acmekeep: `redirector --group`).
    #[arg(long = "service.gid", global = true, hide = true)]
    pub service_gid: Option<String>,
    #[arg(long = "service.chroot", global = true, hide = true)]
    service_chroot: Option<String>,
    #[arg(long = "service.pidfile", global = true, hide = true)]
    service_pidfile: Option<String>,
    #[arg(long = "service.cpuprofile", global = true, hide = true)]
    service_cpuprofile: Option<String>,
    #[arg(long = "service.debugserveraddr", global = true, hide = true)]
    service_debugserveraddr: Option<String>,
    #[arg(long = "service.daemon", global = true, hide = true)]
    service_daemon: bool,
    #[arg(long = "service.fork", global = true, hide = true)]
    service_fork: bool,
    #[arg(long = "service.stderr", global = true, hide = true)]
    service_stderr: bool,
    /// acmetool: do not use dialog(1) (acmekeep never does).
    #[arg(long = "stdio", global = true, hide = true)]
    stdio: bool,
}

impl AcmetoolFlags {
    /// The log level `--xlog.severity` asks for: `Some(true)` for debug, `Some(false)` for
    /// error-only levels, `None` when not given or ordinary.
    pub fn debug_requested(&self) -> Option<bool> {
        let level = self.xlog_severity.as_deref()?.to_ascii_lowercase();
        match level.as_str() {
            "debug" | "trace" | "7" => Some(true),
            "emerg" | "emergency" | "alert" | "crit" | "critical" | "error" | "err" | "0" | "1"
            | "2" | "3" => Some(false),
            _ => None,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set the machine up interactively (or from a response file): CA, key type, challenge
    /// method, account, hooks, scheduled renewal. Safe to run again.
    Quickstart(QuickstartArgs),
    /// Declare names you want certificates for, then reconcile.
    Want(WantArgs),
    /// Obtain and renew certificates so every target is satisfied (the default command).
    Reconcile(ReconcileArgs),
    /// Show targets, their live certificates, expiry, renewal time and last error.
    Status(StatusArgs),
    /// Print Prometheus metrics from the state directory (what each run writes to
    /// --metrics-file; doc/monitoring.md).
    Metrics,
    /// Monitoring plugin (Nagios/Icinga): exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, one
    /// status line with performance data (doc/monitoring.md).
    Check(CheckArgs),
    /// Remove names from every target (targets left without names are deleted).
    Unwant(UnwantArgs),
    /// Delete certificates no live link uses that are expired, revoked or unreadable, and keys
    /// nothing uses any more.
    Cull(CullArgs),
    /// Revoke a certificate (by certificate id, key id or path) at the CA; the next reconcile
    /// replaces it.
    Revoke(RevokeArgs),
    /// Print each account's key thumbprint and id (for stateless http-01 configurations).
    AccountThumbprint,
    /// Print the account URL at the default provider (registering the account if needed).
    AccountUrl,
    /// Print the standing dns-persist-01 TXT record each name needs at its CA (zone-file
    /// line, tinydns-data line, plain value); --publish puts it into DNS by RFC 2136.
    PersistRecord(PersistRecordArgs),
    /// Replace the account's key at the CA with a new ECDSA P-256 key (RFC 8555 key
    /// rollover); certificates stay with the account and the old key is deleted.
    AccountRollover(AccountRolloverArgs),
    /// Deactivate the account at the CA, for good (needs --yes), and move its key aside to
    /// accounts/.deactivated/; the next registration at that CA makes a new account.
    AccountDeactivate(AccountDeactivateArgs),
    /// Add a PEM private key to keys/.
    ImportKey(ImportKeyArgs),
    /// Add a PEM account key for an ACME directory URL.
    ImportPemAccount(ImportAccountArgs),
    /// Add a JWK (JSON) account key for an ACME directory URL.
    ImportJwkAccount(ImportAccountArgs),
    /// Bring a certbot directory over: accounts, keys, current certificates and their names.
    ImportLe(ImportLeArgs),
    /// Run the live-updated hooks with these names, as after a renewal.
    TestNotify(TestNotifyArgs),
    /// Serve ACME http-01 challenge files on port 80 and redirect everything else to HTTPS
    /// (acmetool's redirector; runs in the foreground, drops root after binding).
    Redirector(RedirectorArgs),
    /// Show the fleet (conf/cluster): etcd members, nodes, locks held, failing targets,
    /// sealed secrets. Read-only; exit 69 when the cluster is unavailable.
    ClusterStatus(ClusterStatusArgs),
    /// Make this node's state the first of a fleet (conf/cluster): its targets, account and
    /// certificates go to etcd (private keys sealed). Other nodes join with their
    /// conf/cluster alone.
    ClusterInit,
    /// Serve the fleet's http-01 challenges on this node (a daemon: its listener on
    /// conf/target's http-ports, and files in its webroots) so the CA may reach any node.
    ClusterAgent,
    /// Make a new cluster secret key (`cluster-key new` prints a line for the secret key
    /// file).
    ClusterKey(ClusterKeyArgs),
    /// Seal every secret of the fleet (private keys, account keys) again under the first key
    /// of the secret key file: the step of a key rotation that lets the old key go.
    ClusterRekey,
    /// Print shell completions for SHELL (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    Manpage,
}

/// `quickstart`.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Also ask the questions that otherwise take their defaults (key type and size, haproxy
    /// hook).
    #[arg(long)]
    pub expert: bool,
    /// Schedule this program even from a build tree, /tmp or a home directory (the
    /// response-file key acmekeep-quickstart-accept-program-path: true).
    #[arg(long)]
    pub accept_program_path: bool,
}

/// `unwant`.
#[derive(Debug, Args)]
pub struct UnwantArgs {
    /// Hostnames to stop wanting.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// `cull`.
#[derive(Debug, Args)]
pub struct CullArgs {
    /// Only print what would be deleted.
    #[arg(short = 'n', long)]
    pub simulate: bool,
}

/// `revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Certificate id, key id, or path of a certificate file or directory.
    #[arg(required = true, value_name = "CERTID|KEYID|PATH")]
    pub what: Vec<String>,
    /// RFC 5280 reason: unspecified, key-compromise, superseded, cessation-of-operation.
    #[arg(long, default_value = "unspecified")]
    pub reason: String,
}

/// `persist-record`.
#[derive(Debug, Args)]
pub struct PersistRecordArgs {
    /// Names the records are for (`*.NAME` means NAME with --wildcard).
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Add policy=wildcard: the record then also covers *.NAME (and subdomains, where the CA
    /// allows it). Implied when the target covering NAME asks for *.NAME.
    #[arg(long)]
    pub wildcard: bool,
    /// persistUntil: the CA stops accepting the record after this date (2027-12-31, midnight
    /// UTC), RFC 3339 time or Unix seconds; `none` for no end (the default).
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
    /// Issuer domain name to write (default: the CA's first listed issuer).
    #[arg(long, value_name = "DOMAIN")]
    pub issuer: Option<String>,
    /// TTL of the printed and published record.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub ttl: u32,
    /// What to print: all (zone-file line, tinydns-data line, value), zone, tinydns or plain.
    #[arg(long, default_value = "all", value_parser = ["all", "zone", "tinydns", "plain"])]
    pub format: String,
    /// Publish the record by RFC 2136 (request.challenge.dns-01 settings), replacing an older
    /// record of this account for this CA; other records at the name stay.
    #[arg(long)]
    pub publish: bool,
}

/// `account-rollover`.
#[derive(Debug, Args)]
pub struct AccountRolloverArgs {
    /// ACME directory URL of the account (default: the provider of conf/target).
    #[arg(long, value_name = "URL")]
    pub provider: Option<String>,
}

/// `account-deactivate`.
#[derive(Debug, Args)]
pub struct AccountDeactivateArgs {
    /// ACME directory URL of the account (default: the provider of conf/target).
    #[arg(long, value_name = "URL")]
    pub provider: Option<String>,
    /// Confirm: deactivation cannot be undone.
    #[arg(long)]
    pub yes: bool,
}

/// `import-key`.
#[derive(Debug, Args)]
pub struct ImportKeyArgs {
    /// PEM file holding the private key.
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
}

/// `import-pem-account` and `import-jwk-account`.
#[derive(Debug, Args)]
pub struct ImportAccountArgs {
    /// ACME directory URL the account belongs to.
    #[arg(value_name = "URL")]
    pub url: String,
    /// Key file.
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
}

/// `import-le`.
#[derive(Debug, Args)]
pub struct ImportLeArgs {
    /// certbot's configuration directory.
    #[arg(value_name = "DIR", default_value = "/etc/letsencrypt")]
    pub dir: std::path::PathBuf,
}

/// `test-notify`.
#[derive(Debug, Args)]
pub struct TestNotifyArgs {
    /// Live names to announce (nothing happens without names, as in acmetool).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// `cluster-status`.
#[derive(Debug, Args)]
pub struct ClusterStatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `cluster-key`.
#[derive(Debug, Args)]
pub struct ClusterKeyArgs {
    /// What to do: `new` prints a new key.
    #[arg(value_enum)]
    pub action: ClusterKeyAction,
}

/// What `cluster-key` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ClusterKeyAction {
    /// Print a new random key (base64 of 32 bytes), a line for the secret key file.
    New,
}

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate completions for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `want`.
#[derive(Debug, Args)]
pub struct WantArgs {
    /// Only write the target; do not reconcile.
    #[arg(long)]
    pub no_reconcile: bool,
    /// On a fleet node (doc/cluster.md): a cluster label of the new target (repeatable);
    /// only nodes subscribed to one of its labels keep and order it.
    #[arg(long = "cluster-label", value_name = "LABEL")]
    pub cluster_labels: Vec<String>,
    /// Hostnames (the first is the target's file-name stem).
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// `reconcile`.
#[derive(Debug, Args, Default)]
pub struct ReconcileArgs {
    /// Try now even targets that are backing off after failures.
    #[arg(long)]
    pub force: bool,
    /// Restrict the request phase to these targets: file names under desired/ or hostnames.
    #[arg(value_name = "TARGET|NAME")]
    pub targets: Vec<String>,
}

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Machine-readable output (schema: doc/monitoring.md).
    #[arg(long)]
    pub json: bool,
    /// WARNING below this much of a certificate's lifetime left (1/4, 0.25, 25%) or this much
    /// time left (20d, 36h).
    #[arg(short, long, value_name = "LEFT")]
    pub warning: Option<String>,
    /// CRITICAL below this (default 1/6).
    #[arg(short, long, value_name = "LEFT")]
    pub critical: Option<String>,
    /// Check only these targets: file names under desired/ or hostnames (default: all, and
    /// whether runs happen).
    #[arg(value_name = "TARGET|NAME")]
    pub targets: Vec<String>,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output (schema: doc/status-json.md).
    #[arg(long)]
    pub json: bool,
    /// Everything in full: target file names, all names, certificate ids and account keys
    /// (the table otherwise keeps to 100 columns).
    #[arg(long)]
    pub wide: bool,
    /// Only the targets whose certificate expires within DURATION (30d, 12h), or that have
    /// none.
    #[arg(long, value_name = "DURATION")]
    pub expiring: Option<String>,
}

/// `redirector` (acmetool's flags, plus `--user`/`--group` for its `--service.uid`/`.gid`).
#[derive(Debug, Clone, Args)]
pub struct RedirectorArgs {
    /// Challenge directory to serve [default: the first webroot-paths entry of conf/target,
    /// else /var/run/acme/acme-challenge].
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// Address to listen on: `:PORT` (every address, IPv6 and IPv4), `IP:PORT` or
    /// `[IPV6]:PORT`. Repeatable.
    #[arg(long, value_name = "ADDR", default_value = ":80")]
    pub bind: Vec<String>,
    /// Redirect status: 301, 302, 303, 307 or 308.
    #[arg(long, value_name = "CODE", default_value = "308")]
    pub status_code: RedirectStatus,
    /// Deadline for a request's headers (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub read_timeout: Duration,
    /// Deadline for a whole connection, response included (e.g. 20s).
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_timeout)]
    pub write_timeout: Duration,
    /// When started as root, switch to this user (name or uid) after binding. Required as root.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Group to switch to with --user (name or gid) [default: the user's primary group].
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Give this group (name or gid) the challenge directory and make it group-writable, so a
    /// non-root process in the group can write challenge files. Needs root.
    #[arg(long, value_name = "GROUP")]
    pub challenge_gid: Option<String>,
    /// acmetool's global `--service.uid` (filled in by the dispatcher).
    #[arg(skip)]
    pub service_uid: Option<String>,
    /// acmetool's global `--service.gid` (filled in by the dispatcher).
    #[arg(skip)]
    pub service_gid: Option<String>,
}

impl RedirectorArgs {
    /// These arguments with acmetool's `--service.uid`/`--service.gid` (global flags) attached.
    pub fn with_service_ids(mut self, uid: Option<&str>, gid: Option<&str>) -> RedirectorArgs {
        self.service_uid = uid.map(str::to_owned);
        self.service_gid = gid.map(str::to_owned);
        self
    }
}

/// A `--read-timeout`/`--write-timeout` value: a duration, never zero.
fn parse_timeout(s: &str) -> Result<Duration> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        bail!("a timeout of zero would close every connection");
    }
    Ok(d)
}

/// Parses `30s`, `5m`, `2h`, `1h30m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => bail!("bad duration {s:?}: units are s, m, h, d"),
        };
        // Checked: `213503982334602d` wrapped around to a few minutes in a release build
        // (and panicked with overflow checks on).
        total = n
            .checked_mul(unit)
            .and_then(|part| total.checked_add(part))
            .with_context(|| format!("duration {s:?} is too long"))?;
    }
    if !num.is_empty() || total == 0 && s != "0s" {
        bail!("bad duration {s:?} (examples: 30s, 5m, 1h30m)");
    }
    Ok(Duration::from_secs(total))
}

/// An `--eab-*` value: anything, even beginning with '-' (base64url), except what is plainly
/// the next option because the value was forgotten (`--eab-kid --eab-hmac-key K`).
fn eab_value(s: &str) -> Result<String, String> {
    let name = s.strip_prefix("--").unwrap_or_default();
    let option_like = !name.is_empty()
        && name.len() < 32
        && name
            .split('=')
            .next()
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
    if option_like {
        return Err(format!(
            "{s:?} looks like the next option, not a value: give the value right after the option"
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A usage error under `check` told Nagios CRITICAL (exit 2) about certificates it had
    /// not looked at: it is UNKNOWN (3); any other command's stays 2.
    #[test]
    fn usage_errors_under_check_are_unknown() {
        let cmd = command();
        let table: [(&[&str], i32); 9] = [
            (&["check", "--bogus"], 3),
            (&["check", "--warning"], 3),
            (&["--state", "/x", "check", "--bogus"], 3),
            (&["--state=/x", "-v", "check", "a", "--nope"], 3),
            (&["--wait", "check", "--bogus"], 3),
            (&["--jobs", "check"], 2),
            (&["status", "--bogus"], 2),
            (&["--bogus"], 2),
            (&["nosuchcommand", "check"], 2),
        ];
        for (argv, want) in table {
            let args: Vec<std::ffi::OsString> = std::iter::once("acmekeep")
                .chain(argv.iter().copied())
                .map(Into::into)
                .collect();
            assert!(
                cmd.clone().try_get_matches_from(&args).is_err(),
                "{argv:?} is a usage error"
            );
            assert_eq!(usage_error_code(&cmd, &args), want, "{argv:?}");
        }
    }

    fn parse_with_help_layout(argv: &[&str]) -> Cli {
        use clap::FromArgMatches;
        let matches = command().try_get_matches_from(argv).expect("parses");
        Cli::from_arg_matches(&matches).expect("matches the definition")
    }

    #[test]
    fn global_options_are_listed_once() {
        let mut cmd = command();
        cmd.build();
        let top = cmd.render_help().to_string();
        // How an option's own line in a help text begins (the pointer line names some options
        // too, followed by "," or ")").
        let listed = |help: &str, long: &str| {
            [" ", "[", "..."]
                .iter()
                .any(|end| help.contains(&format!("--{long}{end}")))
        };
        let globals: Vec<&str> = cmd
            .get_arguments()
            .filter(|a| a.is_global_set() && !a.is_hide_set())
            .filter_map(|a| a.get_long())
            .collect();
        assert!(globals.len() >= 13, "{globals:?}");
        for long in &globals {
            assert!(listed(&top, long), "acmekeep --help lacks --{long}:\n{top}");
        }
        let mut cmd = cmd.clone();
        for sub in cmd.get_subcommands_mut() {
            let name = sub.get_name().to_owned();
            let help = sub.render_help().to_string();
            for long in &globals {
                assert!(
                    !listed(&help, long),
                    "{name} --help repeats --{long}:\n{help}"
                );
            }
            if name != "help" {
                assert!(
                    help.contains("`acmekeep --help` lists them"),
                    "{name}: {help}"
                );
            }
        }
        let want = cmd
            .find_subcommand_mut("want")
            .expect("want")
            .render_help()
            .to_string();
        assert!(want.contains("--no-reconcile"), "{want}");
    }

    #[test]
    fn global_options_still_work_after_the_command() {
        // acmetool's cron lines put them there: `acmetool --batch reconcile` and
        // `acmetool reconcile --batch` both work.
        let cli = parse_with_help_layout(&[
            "acmekeep",
            "want",
            "--batch",
            "--state",
            "/srv/acme",
            "--jobs=3",
            "-vv",
            "--hooks",
            "/h",
            "a.example",
        ]);
        assert!(cli.batch);
        assert_eq!(cli.state, Some(PathBuf::from("/srv/acme")));
        assert_eq!((cli.jobs, cli.verbose), (3, 2));
        assert_eq!(cli.hooks, [PathBuf::from("/h")]);
        assert!(matches!(cli.command, Some(Command::Want(ref a)) if a.names == ["a.example"]));
        let before = parse_with_help_layout(&["acmekeep", "--batch", "--jobs=4", "reconcile"]);
        assert!(before.batch);
        assert_eq!(before.jobs, 4);
        // The acmetool flags too.
        let old = parse_with_help_layout(&["acmekeep", "reconcile", "--xlog.severity=debug"]);
        assert_eq!(old.acmetool.debug_requested(), Some(true));
    }

    #[test]
    fn eab_values_may_begin_with_a_hyphen() {
        // base64url MAC keys (and key ids) can start with '-'.
        let cli = Cli::try_parse_from([
            "acmekeep",
            "--eab-kid",
            "-kid",
            "--eab-hmac-key",
            "-ahvQxdarBfl0sxi6",
            "status",
        ])
        .expect("parses");
        assert_eq!(cli.eab.kid.as_deref(), Some("-kid"));
        assert_eq!(cli.eab.hmac_key.as_deref(), Some("-ahvQxdarBfl0sxi6"));
    }

    #[test]
    fn a_forgotten_eab_value_does_not_swallow_the_next_option() {
        for argv in [
            &["acmekeep", "--eab-hmac-key", "--state=/tmp/x", "status"][..],
            &["acmekeep", "--eab-kid", "--batch", "status"][..],
        ] {
            let e = Cli::try_parse_from(argv).expect_err("a missing value");
            assert!(e.to_string().contains("looks like the next option"), "{e}");
        }
        // (clap reads `K` as the command first here: still an error, not a swallowed option.)
        let argv = ["acmekeep", "--eab-kid", "--eab-hmac-key", "K", "status"];
        assert!(Cli::try_parse_from(argv).is_err());
        // A long base64url key that happens to begin with "--" is still a value.
        let key = "--hvQxdarBfl0sxi6AbCdEfGhIjKlMnOpQrStUvWxYz0";
        let cli =
            Cli::try_parse_from(["acmekeep", "--eab-hmac-key", key, "status"]).expect("parses");
        assert_eq!(cli.eab.hmac_key.as_deref(), Some(key));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").expect("ok"), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").expect("ok"), Duration::from_secs(30));
        assert_eq!(
            parse_duration("1h30m").expect("ok"),
            Duration::from_secs(5400)
        );
        for bad in ["", "x", "5y", "m", "10m5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_duration_too_long_for_64_bits_is_refused_instead_of_wrapping() {
        for long in [
            "213503982334602d",
            "18446744073709551615m",
            "1d18446744073709551615s",
        ] {
            let e = parse_duration(long).expect_err(long);
            assert!(format!("{e:#}").contains("too long"), "{long}: {e:#}");
        }
        assert_eq!(
            parse_duration("213503982334601d").expect("fits").as_secs(),
            213_503_982_334_601 * 86_400
        );
    }
}
