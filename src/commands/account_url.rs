//! `acmekeep account-url`: the account URL at the default provider, with no newline (as
//! acmetool prints it, for scripts). Registers the account if there is none yet.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, anyhow};

use crate::account::account_session;
use crate::acme::Connector;
use crate::acme::Issuer;
use crate::acme::connect::InstantConnector;
use crate::exit::config_error;
use crate::settings::Settings;
use crate::target::{RawTarget, Target};

/// Prints the account URL.
pub fn execute(settings: &Settings) -> Result<ExitCode> {
    let (_lock, store) = super::lock_and_open(settings)?;
    let interaction = super::interaction(settings)?;
    let defaults = store.load_defaults().map_err(config_error)?;
    // Resolve conf/target as a target named after nothing in particular, for its provider.
    let resolved =
        Target::resolve("default", &RawTarget::default(), &defaults).map_err(config_error)?;
    let inv = store.load_inventory()?;
    let ca = InstantConnector::with_timeout(settings.ca_timeout)
        .connect(&resolved.provider, resolved.provider_ca_bundle.as_ref())?;
    let url = super::runtime()?.block_on(async {
        let (session, _) =
            account_session(&store, &ca, &resolved.provider, &inv, &interaction).await?;
        Ok::<_, anyhow::Error>(session.account_url())
    })?;
    let mut out = std::io::stdout();
    out.write_all(url.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| anyhow!("writing to stdout: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
