//! `acmekeep test-notify [NAME...]`: run the `live-updated` hooks as a renewal would, to
//! check a hook setup. Without names nothing happens (acmetool).

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::TestNotifyArgs;
use crate::exit;
use crate::hooks::Event;
use crate::settings::Settings;

/// Runs the hooks and reports each one's outcome on stderr, with what it printed (a hook that
/// succeeded too: checking what a hook does is what this command is for).
pub fn execute(settings: &Settings, args: &TestNotifyArgs) -> Result<ExitCode> {
    for n in &args.names {
        if n.is_empty() || n.contains(['\n', '/', '\0']) {
            return Err(exit::config_error(anyhow::anyhow!(
                "{n:?} is not a live name"
            )));
        }
    }
    let runner = super::hook_runner(settings);
    let report = runner.run(&Event::LiveUpdated { names: &args.names })?;
    for o in &report.outcomes {
        eprintln!("{}: {}", o.path.display(), o.status);
        if !o.output.is_empty() {
            for line in o.output.lines().take(20) {
                eprintln!("  | {line}");
            }
        }
    }
    Ok(ExitCode::from(if report.failures().next().is_some() {
        exit::FAILED
    } else {
        exit::OK
    }))
}
