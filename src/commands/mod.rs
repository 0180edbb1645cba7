//! One module per subcommand: glue from settings to the core modules, nothing more.

pub mod account;
pub mod account_ops;
pub mod account_url;
pub mod check;
pub mod cluster;
pub mod cull;
pub mod docs;
pub mod import;
pub mod metrics;
pub mod notify;
pub mod persist_record;
pub mod quickstart;
pub mod reconcile;
pub mod redirector;
pub mod revoke;
pub mod status;
pub mod unwant;
pub mod want;

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::interact::{Answer, Interaction};
use crate::settings::Settings;
use crate::store::Store;
use crate::store::lock::StateLock;
use crate::world::{Scope, World};

/// A command's hold on the state directory: the lock, the store opened under it, and the
/// world loaded under it once, which the command decides from (and hands on: `want` to the
/// reconcile that follows).
pub struct Session {
    /// The state lock, held until the session is dropped.
    pub lock: StateLock,
    /// The store, opened for writing.
    pub store: Arc<Store>,
    /// What was loaded, with `scope`.
    pub world: World,
}

/// Takes the state lock, opens the store and loads the world with `scope`.
pub fn open_session(settings: &Settings, scope: Scope) -> Result<Session> {
    let (lock, store) = lock_and_open(settings)?;
    let world = World::load(&store, scope)?;
    Ok(Session { lock, store, world })
}

/// Takes the state lock (fail fast, or wait as configured) and opens the store for writing.
pub fn lock_and_open(settings: &Settings) -> Result<(StateLock, Arc<Store>)> {
    Store::prepare_root(&settings.state_dir)?;
    let lock = match settings.lock_wait {
        None => StateLock::acquire(&settings.state_dir)?,
        Some(d) => StateLock::acquire_wait(&settings.state_dir, d)?,
    };
    let store = Store::open(&settings.state_dir, &lock)?;
    Ok((lock, Arc::new(store)))
}

/// The response file and terminal policy, with the answers the command line gives: the
/// `--eab-*` flags are the URL-less `acme-eab-*` keys (see `account::eab`).
pub fn interaction(settings: &Settings) -> Result<Interaction> {
    use crate::account::eab::{EAB_ALGORITHM, EAB_HMAC_KEY, EAB_KID};
    let eab = &settings.eab;
    let flags = [
        (EAB_KID, &eab.kid),
        (EAB_HMAC_KEY, &eab.hmac_key),
        (EAB_ALGORITHM, &eab.algorithm),
    ]
    .into_iter()
    .filter_map(|(id, v)| v.clone().map(|v| (id.to_owned(), Answer::Text(v))));
    let interactive = Interaction::terminal_allowed(settings.batch);
    let loaded = if settings.response_file_explicit {
        Interaction::load(Some(&settings.response_file), interactive)
    } else {
        Interaction::load_state_file(&settings.response_file, interactive)
    };
    Ok(loaded
        .map_err(crate::exit::config_error)?
        .with_answers(flags))
}

/// The hook runner for this state directory and the configured hook directories.
pub fn hook_runner(settings: &Settings) -> crate::hooks::HookRunner {
    crate::hooks::HookRunner::new(settings.hook_dirs.clone(), settings.state_dir.clone())
        .supervised()
}

/// A single-threaded runtime: orders are I/O-bound, and key generation runs on the
/// blocking pool.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
