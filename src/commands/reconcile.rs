//! `acmekeep reconcile [TARGET...]`.

use std::process::ExitCode;

use anyhow::Result;
use time::OffsetDateTime;

use crate::cli::ReconcileArgs;
use crate::exit;
use crate::reconcile::{InstantConnector, Options, Outcome, Report, run};
use crate::settings::Settings;

/// Runs a reconcile and reports failures on stderr, one line per failed or deferred target.
pub fn execute(settings: &Settings, args: &ReconcileArgs) -> Result<ExitCode> {
    let (_lock, store) = super::lock_and_open(settings)?;
    let interaction = super::interaction(settings)?;
    let opts = Options {
        jobs: settings.jobs,
        only: args.targets.clone(),
        force: args.force,
        hooks: std::sync::Arc::new(super::hook_runner(settings)),
    };
    let connector = InstantConnector::with_timeout(settings.ca_timeout)
        .with_rate_limit_wait(settings.rate_limit_wait);
    let report = super::runtime()?.block_on(run(
        store,
        &connector,
        &interaction,
        &opts,
        OffsetDateTime::now_utc(),
    ))?;
    tracing::debug!("{} request(s) sent to the CA", connector.requests());
    Ok(summarise(&report))
}

/// Prints the outcome and chooses the exit code.
pub fn summarise(report: &Report) -> ExitCode {
    for t in &report.targets {
        let names = || {
            if t.names.is_empty() {
                "unreadable".to_owned()
            } else {
                t.names.join(", ")
            }
        };
        match &t.result {
            Outcome::Issued(id) => tracing::info!("desired/{}: new certificate {id}", t.file),
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
