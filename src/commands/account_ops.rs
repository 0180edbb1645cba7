//! `acmekeep account-rollover` and `account-deactivate`: the glue. What they do and the order
//! of their steps that makes them crash-safe are in [`crate::account::rollover`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};

use crate::account::bundle_lookup;
use crate::account::rollover::{deactivate, roll_over};
use crate::acme::Connector;
use crate::acme::connect::InstantConnector;
use crate::cli::{AccountDeactivateArgs, AccountRolloverArgs};
use crate::exit::config_error;
use crate::settings::Settings;
use crate::store::Store;
use crate::target::{DEFAULT_PROVIDER, LE_V1_PROVIDER, RawTarget, Target, validate_provider};

/// Rolls the account key of `--provider` (default: conf/target's provider) over; prints the new
/// account id on stdout.
pub fn execute_rollover(settings: &Settings, args: &AccountRolloverArgs) -> Result<ExitCode> {
    let (_lock, store) = super::lock_and_open(settings)?;
    let (provider, bundle) = provider_of(&store, args.provider.as_deref())?;
    let inv = store.load_inventory()?;
    let ca =
        InstantConnector::with_timeout(settings.ca_timeout).connect(&provider, bundle.as_ref())?;
    let rolled = super::runtime()?.block_on(roll_over(&store, &ca, &provider, &inv))?;
    eprintln!(
        "Account {}: key {} replaced by {}; {} certificate(s) relinked.",
        rolled.account_url,
        rolled.old_id,
        rolled.new_id,
        rolled.relinked.len()
    );
    println!("{}", rolled.new_id);
    Ok(ExitCode::SUCCESS)
}

/// Deactivates the account of `--provider` (default: conf/target's provider) after `--yes`.
pub fn execute_deactivate(settings: &Settings, args: &AccountDeactivateArgs) -> Result<ExitCode> {
    if !args.yes {
        return Err(config_error(anyhow!(
            "account-deactivate ends the account at the CA for good: the CA refuses every later request signed by its key (orders, renewals, revocations by this account), and this cannot be undone; certificates already issued stay valid. Give --yes to go ahead"
        )));
    }
    let (_lock, store) = super::lock_and_open(settings)?;
    let (provider, bundle) = provider_of(&store, args.provider.as_deref())?;
    let inv = store.load_inventory()?;
    let ca =
        InstantConnector::with_timeout(settings.ca_timeout).connect(&provider, bundle.as_ref())?;
    let done = super::runtime()?.block_on(deactivate(&store, &ca, &provider, &inv))?;
    eprintln!(
        "Account {} deactivated; its key is now {} and {} certificate(s) no longer link to it. The next registration at {provider} makes a new account.",
        done.account_url,
        done.retired.display(),
        done.unlinked.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The provider a command acts on (`--provider`, else conf/target's) and the extra CA bundle
/// to trust for it (that of a target using it, else conf/target's).
fn provider_of(store: &Store, given: Option<&str>) -> Result<(String, Option<PathBuf>)> {
    let defaults = store.load_defaults().map_err(config_error)?;
    let resolved =
        Target::resolve("default", &RawTarget::default(), &defaults).map_err(config_error)?;
    let provider = match given.map(str::trim) {
        None => resolved.provider.clone(),
        Some(LE_V1_PROVIDER) => DEFAULT_PROVIDER.to_owned(),
        Some(p) => {
            validate_provider(p).map_err(config_error)?;
            p.to_owned()
        }
    };
    let (targets, _) = store.load_targets(&defaults)?;
    let bundle = bundle_lookup(&targets, resolved.provider_ca_bundle.clone())(&provider);
    Ok((provider, bundle))
}
