//! `acmekeep reconcile [TARGET...]`.

use std::process::ExitCode;

use anyhow::Result;
use time::OffsetDateTime;

use crate::cli::ReconcileArgs;
use crate::exit;
use crate::reconcile::{InstantConnector, Options, Report, run};
use crate::settings::Settings;

/// Runs a reconcile and reports failures on stderr, one line per failed target.
pub fn execute(settings: &Settings, args: &ReconcileArgs) -> Result<ExitCode> {
    let (_lock, store) = super::lock_and_open(settings)?;
    let interaction = super::interaction(settings)?;
    let opts = Options {
        jobs: settings.jobs,
        only: args.targets.clone(),
        force: args.force,
        hooks: std::sync::Arc::new(super::hook_runner(settings)),
    };
    let connector = InstantConnector::with_timeout(settings.ca_timeout);
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
        match &t.result {
            Ok(Some(id)) => tracing::info!("desired/{}: new certificate {id}", t.file),
            Ok(None) => tracing::debug!("desired/{}: nothing to do", t.file),
            Err(e) => eprintln!(
                "acmekeep: target desired/{} ({}) failed: {e}",
                t.file,
                if t.names.is_empty() {
                    "unreadable".to_owned()
                } else {
                    t.names.join(", ")
                }
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
