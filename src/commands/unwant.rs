//! `acmekeep unwant NAME...`: remove names from every target; a target left without names
//! is deleted. Certificates, keys and `live/` links are left alone (`cull` cleans up).
//!
//! Unlike acmetool, the file is re-saved from its own content, so defaults inherited from
//! `conf/target` are not baked into it (doc/state-directory.md).

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::cli::UnwantArgs;
use crate::exit::config_error;
use crate::name::Hostname;
use crate::plan::{self, edit::Edit};
use crate::settings::Settings;
use crate::world::Scope;

/// Removes `args.names` from every target.
pub fn execute(settings: &Settings, args: &UnwantArgs) -> Result<ExitCode> {
    let names = args
        .names
        .iter()
        .map(|n| Hostname::parse(n).map_err(config_error))
        .collect::<Result<Vec<_>>>()?;
    let session = super::open_session(settings, Scope::UNWANT)?;
    for (file, raw) in &session.world.raw_targets {
        if let Err(e) = raw {
            tracing::warn!("skipping desired/{file}: {e:#}");
        }
    }
    let store = &session.store;
    for (file, edit) in plan::edit::edits(&session.world, &names) {
        match edit {
            Edit::Untouched => {}
            Edit::Delete => {
                store.remove_target(file)?;
                tracing::info!("removed target desired/{file}");
            }
            Edit::Rewrite(new) => {
                let yaml = serde_yaml_ng::to_string(&*new).context("serialising the target")?;
                store.write_target(file, &yaml)?;
                tracing::info!("updated target desired/{file}");
            }
        }
    }
    drop(session);
    // On a fleet node, the fleet learns it now.
    super::cluster::share_edits(settings)
}
