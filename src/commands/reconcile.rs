//! `acmekeep reconcile [TARGET...]`.

use std::process::ExitCode;

use anyhow::Result;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::acme::connect::InstantConnector;
use crate::cli::ReconcileArgs;
use crate::exit;
use std::sync::Arc;

use crate::reconcile::{Options, Outcome, Report, run_world};
use crate::store::Store;
use crate::store::lock::StateLock;
use crate::world::{Scope, World};

use super::Session;
use crate::settings::Settings;
use crate::store::run::ErrorKind;
use crate::store::run::RunCounts;

/// Runs a reconcile and reports what needs saying: one line on stdout per certificate
/// obtained or renewed, and on stderr one line per target that failed or was deferred, with a
/// warning for those whose certificate is close to its end. A run that changed nothing and
/// needs nobody prints nothing (everything else is behind `-v`).
pub fn execute(settings: &Settings, args: &ReconcileArgs) -> Result<ExitCode> {
    let (lock, store) = super::lock_and_open(settings)?;
    execute_locked(settings, args, lock, store, None)
}

/// [`execute`] in a command's session: under its lock, over the world it loaded (with at least
/// [`Scope::RECONCILE`]) and changed (`want` adds its target).
pub fn execute_in(settings: &Settings, args: &ReconcileArgs, s: Session) -> Result<ExitCode> {
    execute_locked(settings, args, s.lock, s.store, Some(s.world))
}

/// [`execute`] with the lock taken and the store open; the world is loaded here unless given.
fn execute_locked(
    settings: &Settings,
    args: &ReconcileArgs,
    lock: StateLock,
    store: Arc<Store>,
    world: Option<World>,
) -> Result<ExitCode> {
    if let Some(conf) = super::cluster::node_conf(settings)? {
        // A fleet node (doc/cluster.md): the fleet is synced into the state directory first,
        // so the run loads its own world.
        drop((world, store));
        return super::cluster::reconcile(settings, args, &lock, conf);
    }
    let interaction = super::interaction(settings)?;
    let opts = options(settings, args);
    let connector = InstantConnector::with_timeout(settings.ca_timeout)
        .with_rate_limit_wait(settings.rate_limit_wait);
    let now = settings.clock.now_utc();
    let started = std::time::Instant::now();
    let world = match world {
        Some(w) => Ok(w),
        None => World::load(&store, Scope::RECONCILE),
    };
    let result = match world {
        Ok(world) => super::runtime()?.block_on(run_world(
            store.clone(),
            world,
            &connector,
            &interaction,
            &opts,
            now,
        )),
        Err(e) => Err(e),
    };
    tracing::debug!("{} request(s) sent to the CA", connector.requests());
    let mut counts = RunCounts {
        orders: connector.orders(),
        ca_requests: connector.requests(),
        ..RunCounts::default()
    };
    let (code, world) = match result {
        Ok(mut report) => {
            counts.certificates = report
                .targets
                .iter()
                .filter(|t| matches!(t.result, Outcome::Issued(_)))
                .count() as u64;
            for (kind, n) in &report.errors {
                counts.errors.insert(kind.as_str().to_owned(), *n);
            }
            (
                Ok(summarise(&report, now)),
                Some(std::mem::take(&mut report.world)),
            )
        }
        Err(e) => {
            counts
                .errors
                .insert(ErrorKind::Other.as_str().to_owned(), 1);
            (Err(e), None)
        }
    };
    let success = matches!(&code, Ok(c) if *c == ExitCode::from(exit::OK));
    let end = super::metrics::RunEnd {
        started_at: now,
        duration: started.elapsed(),
        success,
        counts,
        world,
    };
    super::metrics::after_run(settings, &store, end);
    code
}

/// The executor's options for `args`.
pub fn options(settings: &Settings, args: &ReconcileArgs) -> Options {
    Options {
        jobs: settings.jobs,
        only: args.targets.clone(),
        force: args.force,
        hooks: std::sync::Arc::new(super::hook_runner(settings)),
        clock: settings.clock.clone(),
        gate: None,
        share: None,
    }
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

/// One line of a run's summary, and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    /// stdout: what changed.
    Out(String),
    /// stderr: what needs a person.
    Err(String),
    /// A debug log line (`-v`).
    Debug(String),
    /// An info log line.
    Info(String),
}

/// Prints the outcome and chooses the exit code.
pub fn summarise(report: &Report, now: OffsetDateTime) -> ExitCode {
    for line in lines(report, now) {
        match line {
            Line::Out(l) => println!("{l}"),
            Line::Err(l) => eprintln!("{l}"),
            Line::Debug(l) => tracing::debug!("{l}"),
            Line::Info(l) => tracing::info!("{l}"),
        }
    }
    if report.all_ok() {
        ExitCode::from(exit::OK)
    } else {
        ExitCode::from(exit::FAILED)
    }
}

/// The summary of `report`, in the order it is printed.
fn lines(report: &Report, now: OffsetDateTime) -> Vec<Line> {
    let mut out = Vec::new();
    for (id, names, not_after) in &report.downloaded {
        out.push(Line::Out(format!(
            "obtained the certificate of an interrupted earlier order for {} (certs/{id}), valid until {}",
            names.join(", "),
            rfc3339(*not_after)
        )));
    }
    for t in &report.targets {
        let names = || {
            if t.names.is_empty() {
                "unreadable".to_owned()
            } else {
                t.names.join(", ")
            }
        };
        out.push(match &t.result {
            Outcome::Issued(i) => Line::Out(format!(
                "{} for {} (desired/{}), valid until {}",
                if i.renewed {
                    "renewed the certificate"
                } else {
                    "obtained a certificate"
                },
                names(),
                t.file,
                rfc3339(i.not_after)
            )),
            Outcome::Unchanged => Line::Debug(format!("desired/{}: nothing to do", t.file)),
            Outcome::Deferred(e) => Line::Err(format!(
                "acmekeep: target desired/{} ({}) deferred, the CA asked to slow down: {e}",
                t.file,
                names()
            )),
            Outcome::Failed(e) => Line::Err(format!(
                "acmekeep: target desired/{} ({}) failed: {e}",
                t.file,
                names()
            )),
        });
    }
    for (file, not_after) in &report.expiring {
        let names = report
            .targets
            .iter()
            .find(|t| &t.file == file)
            .map(|t| t.names.join(", "))
            .unwrap_or_default();
        out.push(Line::Err(format!(
            "acmekeep: warning: the certificate for {names} (desired/{file}) {} {} ({}) and could not be renewed",
            if *not_after > now {
                "expires at"
            } else {
                "expired at"
            },
            rfc3339(*not_after),
            how_far(*not_after, now)
        )));
    }
    for e in &report.other_errors {
        out.push(Line::Err(format!("acmekeep: {e}")));
    }
    for name in &report.relinked {
        out.push(Line::Info(format!("live/{name} updated")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Issued, TargetOutcome};
    use time::macros::datetime;

    /// Every line a run can print, exactly, in the order printed (issue 16 refactors how the
    /// report is made; not a byte of what it says may change).
    #[test]
    fn the_summary_lines_are_pinned() {
        let now = datetime!(2027-03-01 12:00 UTC);
        let target = |file: &str, names: &[&str], result| TargetOutcome {
            file: file.to_owned(),
            names: names.iter().map(|n| n.to_string()).collect(),
            result,
        };
        let report = Report {
            targets: vec![
                target(
                    "broken",
                    &[],
                    Outcome::Failed("cannot parse desired/broken".into()),
                ),
                target(
                    "a.example",
                    &["a.example", "www.a.example"],
                    Outcome::Issued(Issued {
                        id: "x".into(),
                        not_after: datetime!(2027-05-30 12:00 UTC),
                        renewed: false,
                    }),
                ),
                target(
                    "b.example",
                    &["b.example"],
                    Outcome::Issued(Issued {
                        id: "y".into(),
                        not_after: datetime!(2027-05-30 12:00:01 UTC),
                        renewed: true,
                    }),
                ),
                target("c.example", &["c.example"], Outcome::Unchanged),
                target(
                    "d.example",
                    &["d.example"],
                    Outcome::Deferred("too many (retry after 2027-03-02T00:00:00Z)".into()),
                ),
                target(
                    "e.example",
                    &["e.example"],
                    Outcome::Failed("refused".into()),
                ),
            ],
            relinked: vec!["a.example".into(), "b.example".into()],
            other_errors: vec!["certs/z: cannot download".into()],
            expiring: vec![
                ("e.example".into(), datetime!(2027-03-04 12:00 UTC)),
                ("d.example".into(), datetime!(2027-02-28 11:00 UTC)),
            ],
            downloaded: vec![(
                "w".into(),
                vec!["f.example".into(), "www.f.example".into()],
                datetime!(2027-05-01 00:00 UTC),
            )],
            ..Report::default()
        };
        let expected = [
            Line::Out("obtained the certificate of an interrupted earlier order for f.example, www.f.example (certs/w), valid until 2027-05-01T00:00:00Z".into()),
            Line::Err("acmekeep: target desired/broken (unreadable) failed: cannot parse desired/broken".into()),
            Line::Out("obtained a certificate for a.example, www.a.example (desired/a.example), valid until 2027-05-30T12:00:00Z".into()),
            Line::Out("renewed the certificate for b.example (desired/b.example), valid until 2027-05-30T12:00:01Z".into()),
            Line::Debug("desired/c.example: nothing to do".into()),
            Line::Err("acmekeep: target desired/d.example (d.example) deferred, the CA asked to slow down: too many (retry after 2027-03-02T00:00:00Z)".into()),
            Line::Err("acmekeep: target desired/e.example (e.example) failed: refused".into()),
            Line::Err("acmekeep: warning: the certificate for e.example (desired/e.example) expires at 2027-03-04T12:00:00Z (in 3 days) and could not be renewed".into()),
            Line::Err("acmekeep: warning: the certificate for d.example (desired/d.example) expired at 2027-02-28T11:00:00Z (25 hours ago) and could not be renewed".into()),
            Line::Err("acmekeep: certs/z: cannot download".into()),
            Line::Info("live/a.example updated".into()),
            Line::Info("live/b.example updated".into()),
        ];
        assert_eq!(lines(&report, now), expected);
        assert_eq!(summarise(&report, now), ExitCode::from(exit::FAILED));
    }

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
