//! `acmekeep reconcile [TARGET...]`.

use std::process::ExitCode;

use anyhow::Result;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::ReconcileArgs;
use crate::exit;
use crate::reconcile::{InstantConnector, Options, Outcome, Report, run};
use crate::settings::Settings;

/// Runs a reconcile and reports what needs saying: one line on stdout per certificate
/// obtained or renewed, and on stderr one line per target that failed or was deferred, with a
/// warning for those whose certificate is close to its end. A run that changed nothing and
/// needs nobody prints nothing (everything else is behind `-v`).
pub fn execute(settings: &Settings, args: &ReconcileArgs) -> Result<ExitCode> {
    let (_lock, store) = super::lock_and_open(settings)?;
    let interaction = super::interaction(settings)?;
    let opts = Options {
        jobs: settings.jobs,
        only: args.targets.clone(),
        force: args.force,
        hooks: std::sync::Arc::new(super::hook_runner(settings)),
        clock: OffsetDateTime::now_utc,
    };
    let connector = InstantConnector::with_timeout(settings.ca_timeout)
        .with_rate_limit_wait(settings.rate_limit_wait);
    let now = OffsetDateTime::now_utc();
    let report = super::runtime()?.block_on(run(store, &connector, &interaction, &opts, now))?;
    tracing::debug!("{} request(s) sent to the CA", connector.requests());
    Ok(summarise(&report, now))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// "in 3 days", "in 5 hours", "2 days ago": how far `then` is from `now`, roughly.
fn how_far(then: OffsetDateTime, now: OffsetDateTime) -> String {
    let d = then - now;
    let (n, unit) = if d.whole_days().abs() >= 2 {
        (d.whole_days().abs(), "days")
    } else if d.whole_hours().abs() >= 2 {
        (d.whole_hours().abs(), "hours")
    } else if d.whole_minutes().abs() >= 2 {
        (d.whole_minutes().abs(), "minutes")
    } else {
        (d.whole_seconds().abs(), "seconds")
    };
    if d.is_negative() {
        format!("{n} {unit} ago")
    } else {
        format!("in {n} {unit}")
    }
}

/// Prints the outcome and chooses the exit code.
pub fn summarise(report: &Report, now: OffsetDateTime) -> ExitCode {
    for (id, names, not_after) in &report.downloaded {
        println!(
            "obtained the certificate of an interrupted earlier order for {} (certs/{id}), valid until {}",
            names.join(", "),
            rfc3339(*not_after)
        );
    }
    for t in &report.targets {
        let names = || {
            if t.names.is_empty() {
                "unreadable".to_owned()
            } else {
                t.names.join(", ")
            }
        };
        match &t.result {
            Outcome::Issued(i) => println!(
                "{} for {} (desired/{}), valid until {}",
                if i.renewed {
                    "renewed the certificate"
                } else {
                    "obtained a certificate"
                },
                names(),
                t.file,
                rfc3339(i.not_after)
            ),
            Outcome::Unchanged => tracing::debug!("desired/{}: nothing to do", t.file),
            Outcome::Deferred(e) => eprintln!(
                "acmekeep: target desired/{} ({}) deferred, the CA asked to slow down: {e}",
                t.file,
                names()
            ),
            Outcome::Failed(e) => eprintln!(
                "acmekeep: target desired/{} ({}) failed: {e}",
                t.file,
                names()
            ),
        }
    }
    for (file, not_after) in &report.expiring {
        let names = report
            .targets
            .iter()
            .find(|t| &t.file == file)
            .map(|t| t.names.join(", "))
            .unwrap_or_default();
        eprintln!(
            "acmekeep: warning: the certificate for {names} (desired/{file}) {} {} ({}) and could not be renewed",
            if *not_after > now {
                "expires at"
            } else {
                "expired at"
            },
            rfc3339(*not_after),
            how_far(*not_after, now)
        );
    }
    for e in &report.other_errors {
        eprintln!("acmekeep: {e}");
    }
    for name in &report.relinked {
        tracing::info!("live/{name} updated");
    }
    if report.all_ok() {
        ExitCode::from(exit::OK)
    } else {
        ExitCode::from(exit::FAILED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn distances_read_naturally() {
        let now = datetime!(2026-01-10 12:00 UTC);
        assert_eq!(how_far(datetime!(2026-01-13 13:00 UTC), now), "in 3 days");
        assert_eq!(how_far(datetime!(2026-01-10 17:30 UTC), now), "in 5 hours");
        assert_eq!(
            how_far(datetime!(2026-01-10 12:40 UTC), now),
            "in 40 minutes"
        );
        assert_eq!(how_far(datetime!(2026-01-08 11:00 UTC), now), "2 days ago");
        assert_eq!(
            how_far(datetime!(2026-01-10 12:00:07 UTC), now),
            "in 7 seconds"
        );
    }
}
