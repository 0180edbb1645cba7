//! Accounts: which account key acmekeep uses at a CA, logging in with it, and registering one
//! when there is none (terms of service, e-mail, External Account Binding).
//!
//! Several commands need an account — `reconcile` to order, `revoke`, `account-url`,
//! `quickstart`, `persist-record`, the key rollover and deactivation — so this lives beside the
//! executors rather than inside one of them. The rules are acmetool's: an account is a key under
//! `accounts/<directory URL part>/<key id>/`, chosen by the exact directory URL (an ACMEv1 Let's
//! Encrypt key is reused for its v2 directory); when there are several keys for a CA (an
//! interrupted rollover or registration), the one the CA knows wins. A new key is saved before
//! the CA hears of it, so a registered account never lacks its key.
//!
//! Boundaries: the CA is reached only through the [`Ca`] trait (commands pick the connector);
//! the questions go through [`Interaction`], so a run without a terminal never waits.
//! [`eab`] finds the binding credentials; [`rollover`] changes or ends an account.

pub mod eab;
pub mod rollover;

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};

use crate::acme::{AcmeError, Ca, Connector, Registration};
use crate::interact::{Interaction, plausible_email};
use crate::keys::{KeySpec, PrivateKey};
use crate::store::{AccountRecord, Inventory, Store};
use crate::target::Target;

/// Why work at a CA that stopped answering in this run is left to the next run (the executors
/// say it of every target at that CA).
pub const STOPPED_ANSWERING: &str = "not attempted in this run: the CA stopped answering (requests to it timed out); the next run tries again";

/// Finds the extra CA bundle for a provider: from a target using it, else the default.
pub fn bundle_lookup(
    targets: &[Target],
    default: Option<PathBuf>,
) -> impl Fn(&str) -> Option<PathBuf> + '_ {
    move |provider| {
        targets
            .iter()
            .find(|t| t.provider == provider)
            .and_then(|t| t.provider_ca_bundle.clone())
            .or_else(|| default.clone())
    }
}

/// Logs in with the account `account_id` (`<urlpart>/<key id>`) at its own CA.
pub async fn login_account<C: Connector>(
    connector: &C,
    inv: &Inventory,
    account_id: &str,
    bundle_for: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<<C::Ca as Ca>::Session> {
    let acct = inv
        .accounts
        .iter()
        .find(|a| a.id == account_id)
        .ok_or_else(|| anyhow!("account {account_id} is not in accounts/"))?;
    let ca = connector.connect(
        &acct.directory_url,
        bundle_for(&acct.directory_url).as_ref(),
    )?;
    if ca.unresponsive() {
        bail!(STOPPED_ANSWERING);
    }
    let pem = acct.read_key()?;
    ca.login(&pem)
        .await
        .map_err(|e| anyhow!(e).context(format!("logging in as {account_id}")))
}

/// The account keys that may belong to `provider`, in the order they are tried: those of the
/// exact directory URL (acmetool), then, for Let's Encrypt's v2 directory, an ACMEv1 Let's
/// Encrypt account (acmetool 0.2 reuses it: Let's Encrypt knows the same key there).
pub fn accounts_for<'a>(inv: &'a Inventory, provider: &str) -> Vec<&'a AccountRecord> {
    let mut out: Vec<&AccountRecord> = inv
        .accounts
        .iter()
        .filter(|a| a.directory_url == provider)
        .collect();
    out.extend(inv.accounts.iter().filter(|a| {
        a.directory_url != provider
            && crate::target::directories_served(&a.directory_url).any(|d| d == provider)
    }));
    out
}

/// What [`look_up_account`] found.
#[derive(Debug)]
pub enum AccountLookup<S> {
    /// An account key the CA knows, logged in.
    Registered {
        /// Its directory in `accounts/`.
        record: AccountRecord,
        /// Its PEM.
        pem: String,
        /// The session.
        session: S,
    },
    /// Account keys exist, but the CA knows none of them; this is the first.
    Unregistered {
        /// Its directory in `accounts/`.
        record: AccountRecord,
        /// Its PEM.
        pem: String,
    },
    /// No account key for the provider.
    Missing,
}

/// Finds the account key of `provider` that the CA knows (newAccount with onlyReturnExisting)
/// among [`accounts_for`]. Usually there is one key; when there are several (an interrupted
/// key rollover leaves the new key next to the old one, an interrupted registration an
/// unregistered key), the one the CA knows wins.
pub async fn look_up_account<C: Ca>(
    ca: &C,
    provider: &str,
    inv: &Inventory,
) -> Result<AccountLookup<C::Session>> {
    let mut unregistered = None;
    for acct in accounts_for(inv, provider) {
        let pem = acct.read_key()?;
        match ca.login(&pem).await {
            Ok(session) => {
                return Ok(AccountLookup::Registered {
                    record: acct.clone(),
                    pem,
                    session,
                });
            }
            Err(AcmeError::AccountDoesNotExist) => {
                unregistered.get_or_insert((acct, pem));
            }
            Err(e) => return Err(anyhow!(e).context(format!("using account {}", acct.id))),
        }
    }
    Ok(match unregistered {
        Some((record, pem)) => AccountLookup::Unregistered {
            record: record.clone(),
            pem,
        },
        None => AccountLookup::Missing,
    })
}

/// Finds the account for `provider` (by exact directory URL, as acmetool does) and logs in;
/// registers a new one when there is none, after the terms of service are agreed to (and
/// with External Account Binding where the CA requires it or it is configured).
pub async fn account_session<C: Ca>(
    store: &Store,
    ca: &C,
    provider: &str,
    inv: &Inventory,
    interaction: &Interaction,
) -> Result<(C::Session, String)> {
    account_session_consented(store, ca, provider, inv, interaction, None).await
}

/// [`account_session`], with the answers to the registration questions already collected
/// when `consented` is given ([`consent`]): quickstart asks them before it changes anything.
pub async fn account_session_consented<C: Ca>(
    store: &Store,
    ca: &C,
    provider: &str,
    inv: &Inventory,
    interaction: &Interaction,
    consented: Option<Registration>,
) -> Result<(C::Session, String)> {
    let agreed = async || match consented {
        Some(reg) => Ok(reg),
        None => consent(Some(store), ca, provider, interaction).await,
    };
    match look_up_account(ca, provider, inv).await? {
        AccountLookup::Registered {
            record, session, ..
        } => Ok((session, record.id)),
        AccountLookup::Unregistered { record, pem } => {
            tracing::info!(
                "account {} is not registered at {provider}; registering it",
                record.id
            );
            let reg = agreed().await?;
            let s = ca.register(&pem, &reg).await.map_err(|e| anyhow!(e))?;
            Ok((s, record.id))
        }
        AccountLookup::Missing => {
            let reg = agreed().await?;
            let key = tokio::task::spawn_blocking(|| PrivateKey::generate(KeySpec::EcdsaP256))
                .await
                .context("key generation task")??;
            let pem = key.to_pem();
            // Saved before the CA hears of it, so a registered account never lacks its key.
            let id = store.save_account_key(provider, &key.id, &pem)?;
            tracing::info!("registering a new account {id} at {provider}");
            let s = ca.register(&pem, &reg).await.map_err(|e| anyhow!(e))?;
            Ok((s, id))
        }
    }
}

/// The registration questions at `provider`: its terms of service, the e-mail address, and
/// External Account Binding (from the settings of `store`, when there is one, or the answers).
pub async fn consent<C: Ca>(
    store: Option<&Store>,
    ca: &C,
    provider: &str,
    interaction: &Interaction,
) -> Result<Registration> {
    let meta = ca.directory_meta().await.map_err(|e| anyhow!(e))?;
    if let Some(tos) = meta.terms_of_service.as_deref() {
        let id = format!("acme-agreement:{tos}");
        if !interaction.yes_no(
            &id,
            &format!("Do you agree to the CA's terms of service at {tos}?"),
        )? {
            bail!("the terms of service at {tos} were not agreed to ({id:?} is not true)");
        }
    }
    let email = interaction.text(
        "acme-enter-email",
        "E-mail address for the CA's notices (empty for none):",
    )?;
    let email = email.trim().to_owned();
    let email = if email.is_empty() {
        None
    } else if plausible_email(&email) {
        Some(email)
    } else {
        tracing::warn!(
            "ignoring implausible e-mail address {email:?}; registering without contact"
        );
        None
    };
    let eab = eab::external_account(store, provider, meta.external_account_required, interaction)?;
    Ok(Registration { email, eab })
}
