//! acmekeep keeps a machine's TLS certificates valid forever, in an acmetool-compatible
//! state directory.
//!
//! Design overview: parse the command line into [`settings::Settings`]; the [`commands`] glue opens the
//! [`store`] (under its crash-proof lock), loads [`target`]s and the inventory once, asks the
//! pure [`plan`]ner what to do at `now`, and [`reconcile`] carries it out through the
//! [`acme::Issuer`] and [`acme::Responder`] seams. Nothing below `commands` reads the
//! clock or the environment or prints to stdout.

pub mod account;
pub mod acme;
pub mod cause;
pub mod cert;
pub mod chain;
pub mod challenge;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod exit;
pub mod files;
#[doc(hidden)]
pub mod fuzz;
pub mod hooks;
pub mod interact;
pub mod keys;
pub mod logging;
pub mod manual;
pub mod monitor;
pub mod name;
pub mod plan;
pub mod reconcile;
pub mod settings;
pub mod store;
pub mod system;
pub mod target;
pub mod unknown_keys;
pub mod world;

#[cfg(test)]
mod architecture;

use std::process::ExitCode;

/// Runs the parsed command line; the caller prints errors and exits with the code.
pub fn run(cli: &cli::Cli) -> anyhow::Result<ExitCode> {
    let settings = settings::Settings::resolve(cli)?;
    match &cli.command {
        Some(cli::Command::Quickstart(a)) => commands::quickstart::execute(&settings, a),
        Some(cli::Command::Want(a)) => commands::want::execute(&settings, a),
        Some(cli::Command::Status(a)) => commands::status::execute(&settings, a),
        Some(cli::Command::Metrics) => commands::metrics::execute(&settings),
        Some(cli::Command::Check(a)) => commands::check::execute(&settings, a),
        Some(cli::Command::Reconcile(a)) => commands::reconcile::execute(&settings, a),
        Some(cli::Command::Unwant(a)) => commands::unwant::execute(&settings, a),
        Some(cli::Command::Cull(a)) => commands::cull::execute(&settings, a),
        Some(cli::Command::Revoke(a)) => commands::revoke::execute(&settings, a),
        Some(cli::Command::AccountThumbprint) => commands::account::execute_thumbprint(&settings),
        Some(cli::Command::ImportKey(a)) => commands::import::execute_key(&settings, a),
        Some(cli::Command::ImportPemAccount(a)) => {
            commands::import::execute_pem_account(&settings, a)
        }
        Some(cli::Command::ImportJwkAccount(a)) => {
            commands::import::execute_jwk_account(&settings, a)
        }
        Some(cli::Command::ImportLe(a)) => commands::import::execute_le(&settings, a),
        Some(cli::Command::AccountUrl) => commands::account_url::execute(&settings),
        Some(cli::Command::PersistRecord(a)) => commands::persist_record::execute(&settings, a),
        Some(cli::Command::AccountRollover(a)) => {
            commands::account_ops::execute_rollover(&settings, a)
        }
        Some(cli::Command::AccountDeactivate(a)) => {
            commands::account_ops::execute_deactivate(&settings, a)
        }
        Some(cli::Command::TestNotify(a)) => commands::notify::execute(&settings, a),
        Some(cli::Command::Redirector(a)) => commands::redirector::execute(
            &settings,
            &a.clone().with_service_ids(
                cli.acmetool.service_uid.as_deref(),
                cli.acmetool.service_gid.as_deref(),
            ),
        ),
        Some(cli::Command::ClusterStatus(a)) => commands::cluster::status(&settings, a),
        Some(cli::Command::ClusterKey(a)) => commands::cluster::key(a),
        Some(cli::Command::ClusterInit) => commands::cluster::init(&settings),
        Some(cli::Command::ClusterAgent) => commands::cluster::agent(&settings),
        Some(cli::Command::ClusterRekey) => commands::cluster::rekey(&settings),
        Some(cli::Command::Completions(a)) => commands::docs::completions(a),
        Some(cli::Command::Manpage) => commands::docs::manpage(),
        None => commands::reconcile::execute(&settings, &cli::ReconcileArgs::default()),
    }
}

/// The exit code for a failed command.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    if err
        .downcast_ref::<store::lock::LockError>()
        .is_some_and(|e| {
            matches!(
                e,
                store::lock::LockError::Busy { .. } | store::lock::LockError::Timeout { .. }
            )
        })
    {
        ExitCode::from(exit::LOCKED)
    } else if err.downcast_ref::<exit::ConfigError>().is_some() {
        ExitCode::from(exit::CONFIG)
    } else if err.downcast_ref::<exit::Unavailable>().is_some()
        || err.chain().any(|c| c.is::<exit::Unavailable>())
    {
        ExitCode::from(exit::UNAVAILABLE)
    } else {
        ExitCode::from(exit::FAILED)
    }
}
