//! `acmekeep want [--no-reconcile] NAME...` (acmetool semantics: nothing is written when a
//! target already covers every name).

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::{ReconcileArgs, WantArgs};
use crate::exit::config_error;
use crate::name::Hostname;
use crate::settings::Settings;
use crate::target::{new_target_filename, new_target_yaml};

/// Adds a target for `names` unless one covers them, then reconciles.
pub fn execute(settings: &Settings, args: &WantArgs) -> Result<ExitCode> {
    let mut names: Vec<Hostname> = Vec::new();
    for n in &args.names {
        let h = Hostname::parse(n).map_err(config_error)?;
        if !names.contains(&h) {
            names.push(h);
        }
    }
    {
        let (_lock, store) = super::lock_and_open(settings)?;
        let defaults = store.load_defaults().map_err(config_error)?;
        let (targets, broken) = store.load_targets(&defaults)?;
        for b in &broken {
            tracing::warn!("skipping desired/{}: {:#}", b.file, b.error);
        }
        let covered = targets
            .iter()
            .any(|t| names.iter().all(|n| t.satisfy_names.contains(n)));
        if covered {
            tracing::info!("a target already covers {}", join(&names));
        } else {
            // The file name's random part needs no crypto library: seeding aws-lc's generator
            // costs tens of milliseconds of CPU (jitter entropy) in every `want`.
            let mut random = [0u8; 16];
            std::io::Read::read_exact(
                &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
                &mut random,
            )
            .context("reading /dev/urandom")?;
            let file = new_target_filename(&names[0], random);
            store
                .write_target(&file, &new_target_yaml(&names)?)
                .context("saving the new target")?;
            tracing::info!("added target desired/{file} for {}", join(&names));
        }
    }
    if args.no_reconcile {
        return Ok(ExitCode::SUCCESS);
    }
    super::reconcile::execute(settings, &ReconcileArgs::default())
}

fn join(names: &[Hostname]) -> String {
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
