//! Resolved settings: raw CLI arguments and environment become one value, with the
//! precedence (flag, then environment, then default) written once, here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::{Cli, parse_duration};
use crate::clock::{Clock, CommandClock};
use crate::exit::config_error;

/// acmetool's default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/acme";
/// Names another `conf/cluster` (tests, containers).
pub const CLUSTER_CONF_ENV: &str = "ACMEKEEP_CLUSTER_CONF";

/// Everything a command needs to know about how it was invoked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Absolute state directory.
    pub state_dir: PathBuf,
    /// Never prompt.
    pub batch: bool,
    /// Response file path (may not exist).
    pub response_file: PathBuf,
    /// Whether the response file was named explicitly (then it must exist).
    pub response_file_explicit: bool,
    /// `None`: fail fast on a held lock; `Some(d)`: wait up to `d`.
    pub lock_wait: Option<Duration>,
    /// Maximum concurrent orders.
    pub jobs: usize,
    /// How long one request to a CA may go unanswered.
    pub ca_timeout: Duration,
    /// Most time one run waits for one CA's pauses (rate limits).
    pub rate_limit_wait: Duration,
    /// Hook directories, in order.
    pub hook_dirs: Vec<PathBuf>,
    /// Whether the hook directories were chosen (flag or environment) rather than defaults.
    pub hook_dirs_explicit: bool,
    /// Where scheduling files go (`/` unless testing).
    pub system_root: Option<PathBuf>,
    /// `--eab-*`: External Account Binding credentials given on the command line.
    pub eab: crate::cli::EabArgs,
    /// `--metrics-file`: where runs write their metrics (else conf/target says).
    pub metrics_file: Option<PathBuf>,
    /// Where a fleet node's `conf/cluster` is (`ACMEKEEP_CLUSTER_CONF`, else in the state
    /// directory); a state directory without it is no fleet node.
    pub cluster_conf: PathBuf,
    /// The clock every command tells the time by, built here once and passed down.
    pub clock: Arc<dyn Clock>,
}

/// `path` made absolute against the current directory; an empty path is none.
fn absolute(path: Option<&std::path::Path>) -> Result<Option<PathBuf>> {
    match path {
        Some(p) if p.as_os_str().is_empty() => Ok(None),
        Some(p) if p.is_absolute() => Ok(Some(p.to_owned())),
        Some(p) => Ok(Some(
            std::env::current_dir()
                .context("finding the current directory")?
                .join(p),
        )),
        None => Ok(None),
    }
}

/// The duration `value` of option `flag`, which must lie in `range` (`bounds` says so in
/// words); anything else is a configuration error naming the option and the value.
fn bounded_duration(
    flag: &str,
    value: &str,
    range: std::ops::RangeInclusive<Duration>,
    bounds: &str,
) -> Result<Duration> {
    parse_duration(value)
        .and_then(|d| {
            if range.contains(&d) {
                Ok(d)
            } else {
                bail!("{flag} {value:?} must be {bounds}")
            }
        })
        .map_err(config_error)
}

impl Settings {
    /// Resolves the CLI (environment already folded in by clap) into settings.
    pub fn resolve(cli: &Cli) -> Result<Settings> {
        let state = cli
            .state
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let state_dir = if state.is_absolute() {
            state
        } else {
            std::env::current_dir()
                .context("finding the current directory")?
                .join(state)
        };
        let lock_wait = cli
            .wait
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(config_error)?;
        let ca_timeout = bounded_duration(
            "--ca-timeout",
            &cli.ca_timeout,
            Duration::from_secs(1)..=Duration::from_secs(3600),
            "between 1s and 1h",
        )?;
        let rate_limit_wait = bounded_duration(
            "--rate-limit-wait",
            &cli.rate_limit_wait,
            Duration::ZERO..=Duration::from_secs(24 * 3600),
            "at most 24h",
        )?;
        let (response_file, response_file_explicit) = match &cli.response_file {
            Some(p) => {
                if !p.is_file() {
                    return Err(config_error(anyhow::anyhow!(
                        "response file {} does not exist",
                        p.display()
                    )));
                }
                (p.clone(), true)
            }
            None => (state_dir.join("conf/responses"), false),
        };
        let hooks_env = std::env::var_os(crate::hooks::HOOKS_DIR_ENV);
        let cluster_conf = std::env::var_os(CLUSTER_CONF_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| state_dir.join("conf").join(crate::cluster::config::FILE));
        Ok(Settings {
            state_dir,
            batch: cli.batch,
            response_file,
            response_file_explicit,
            lock_wait,
            jobs: usize::from(cli.jobs),
            ca_timeout,
            rate_limit_wait,
            hook_dirs: crate::hooks::hook_dirs(&cli.hooks, hooks_env.as_deref()),
            hook_dirs_explicit: !cli.hooks.is_empty() || hooks_env.is_some_and(|v| !v.is_empty()),
            system_root: cli.system_root.clone(),
            eab: cli.eab.clone(),
            metrics_file: absolute(cli.metrics_file.as_deref())?,
            cluster_conf,
            clock: Arc::new(CommandClock::from_env()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_timeout_is_bounded() {
        use clap::Parser;
        let resolve = |v: &str| {
            let cli = crate::cli::Cli::try_parse_from([
                "acmekeep",
                "--state",
                "/tmp/x",
                "--ca-timeout",
                v,
                "status",
            ])
            .expect("parses");
            Settings::resolve(&cli).map(|s| s.ca_timeout)
        };
        assert_eq!(resolve("90s").expect("ok"), Duration::from_secs(90));
        assert_eq!(resolve("2m").expect("ok"), Duration::from_secs(120));
        for bad in ["0s", "2h", "soon"] {
            let e = resolve(bad).expect_err(bad);
            assert!(
                format!("{e:#}").contains(bad) || format!("{e:#}").contains("duration"),
                "{e:#}"
            );
        }
    }

    #[test]
    fn rate_limit_wait_defaults_to_ten_minutes_and_is_bounded() {
        use clap::Parser;
        let resolve = |args: &[&str]| {
            let mut argv = vec!["acmekeep", "--state", "/tmp/x"];
            argv.extend_from_slice(args);
            argv.push("status");
            let cli = crate::cli::Cli::try_parse_from(argv).expect("parses");
            Settings::resolve(&cli).map(|s| s.rate_limit_wait)
        };
        assert_eq!(resolve(&[]).expect("default"), Duration::from_secs(600));
        let wait = |v: &str| resolve(&["--rate-limit-wait", v]);
        assert_eq!(wait("0").expect("never wait"), Duration::ZERO);
        assert_eq!(wait("1h").expect("ok"), Duration::from_secs(3600));
        for bad in ["25h", "later"] {
            let e = wait(bad).expect_err(bad);
            assert!(format!("{e:#}").contains(bad), "{e:#}");
        }
    }
}
