//! Resolved settings: raw CLI arguments and environment become one value, with the
//! precedence (flag, then environment, then default) written once, here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::Cli;
use crate::exit::config_error;

/// acmetool's default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/acme";

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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
