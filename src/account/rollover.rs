//! Key rollover and deactivation: the account's key replaced at the CA, or the account ended
//! there, with the state directory following (`acmekeep account-rollover`,
//! `account-deactivate`).
//!
//! Key rollover (RFC 8555 §7.3.5) keeps the account (its URL, its orders, its certificates)
//! and changes the key the CA knows it by. The new key is always ECDSA P-256, whatever the old
//! one was (RSA and P-384 acmetool accounts included: the old key signs through the re-signing
//! HTTP layer). Crash safety comes from the order of the steps:
//!
//! 1. the new key is written to `accounts/<urlpart>/<new key id>/privkey` (0600) *before* the
//!    CA hears of it, so an account the CA knows by the new key never lacks it;
//! 2. the CA is asked to switch; if that fails, the CA is asked which key it knows (a lost
//!    response may hide a switch that happened): the new key is deleted only when the CA does
//!    not know it, and both are kept when the CA cannot tell;
//! 3. every `certs/*/account` link to the old account id is renamed over by one to the new id;
//! 4. the old key directory is removed.
//!
//! Between 1 and 4 there are two keys for the provider; the account lookup uses the one the CA
//! knows ([`super::look_up_account`]), so any run after an interruption works. Only the
//! `account` links of step 3 can be left pointing at the old key, which then fails for the two
//! things those links serve (finishing an interrupted order, `revoke`).
//!
//! Deactivation (RFC 8555 §7.3.6) cannot be undone, so it needs `--yes`. The key is kept, not
//! deleted, but moved to `accounts/.deactivated/<urlpart>/<key id>` (hidden: neither acmekeep
//! nor acmetool uses it again) *before* the CA is asked: an interruption then leaves at worst
//! an account the CA still considers active that nothing uses, never a key every run tries
//! and the CA refuses. If the CA refuses, the key is moved back. Afterwards the `account`
//! links to it are removed (a link must not point into a hidden directory, and a dangling one
//! would only fail), and the next registration at that CA makes a new account.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};

use super::{AccountLookup, look_up_account};
use crate::acme::{AcmeError, Ca};
use crate::exit::config_error;
use crate::keys::{KeySpec, PrivateKey};
use crate::store::{Inventory, Store};

/// The registered account of `provider`: its id and key. No account, or none the CA knows, is
/// an error naming the provider.
async fn registered_account<C: Ca>(
    ca: &C,
    provider: &str,
    inv: &Inventory,
) -> Result<(String, String)> {
    match look_up_account(ca, provider, inv).await? {
        AccountLookup::Registered { record, pem, .. } => Ok((record.id, pem)),
        AccountLookup::Unregistered { record, .. } => bail!(
            "account {} is not registered at {provider} (the CA does not know its key)",
            record.id
        ),
        AccountLookup::Missing => Err(config_error(anyhow!(
            "there is no account for {provider} in accounts/ (--provider names another CA)"
        ))),
    }
}

/// What a key rollover did.
#[derive(Debug)]
pub struct Rollover {
    /// The account URL at the CA (unchanged).
    pub account_url: String,
    /// The account id of the old key (its directory is gone).
    pub old_id: String,
    /// The account id of the new key.
    pub new_id: String,
    /// Certificates whose `account` link now points at the new id.
    pub relinked: Vec<String>,
}

/// Rolls the key of `provider`'s account over to a new P-256 key (steps in the module docs).
pub async fn roll_over<C: Ca>(
    store: &Store,
    ca: &C,
    provider: &str,
    inv: &Inventory,
) -> Result<Rollover> {
    let (old_id, old_pem) = registered_account(ca, provider, inv).await?;
    let key = tokio::task::spawn_blocking(|| PrivateKey::generate(KeySpec::EcdsaP256))
        .await
        .context("key generation task")??;
    let new_pem = key.to_pem();
    let new_id = store.save_account_key(provider, &key.id, &new_pem)?;
    tracing::info!("saved the new account key {new_id}; asking {provider} to switch to it");

    let account_url = match ca.change_key(&old_pem, &new_pem).await {
        Ok(url) => url,
        Err(e) => {
            let e = anyhow!(e).context(format!("rolling the key of account {old_id} over"));
            // A failed request may still have been carried out (a lost response): only the CA
            // can say which key it knows now.
            match ca.login(&new_pem).await {
                Ok(session) => {
                    tracing::warn!("{e:#}; but the CA knows the new key, so the rollover happened");
                    crate::acme::Issuer::account_url(&session)
                }
                Err(AcmeError::AccountDoesNotExist) => {
                    store
                        .remove_account(&new_id)
                        .with_context(|| format!("{e:#}; removing the unused new key"))?;
                    return Err(e);
                }
                Err(unknown) => {
                    return Err(e.context(format!(
                        "whether the CA switched is unknown ({unknown}); both keys are kept in accounts/ and the next run uses the one the CA knows"
                    )));
                }
            }
        }
    };

    let mut relinked = Vec::new();
    for c in inv
        .certs
        .iter()
        .filter(|c| store.cert_account(&c.id).as_deref() == Some(old_id.as_str()))
    {
        store.relink_cert_account(&c.id, &new_id)?;
        relinked.push(c.id.clone());
    }
    store.remove_account(&old_id)?;
    tracing::info!(
        "account {account_url}: key {old_id} replaced by {new_id}; {} certificate(s) relinked",
        relinked.len()
    );
    Ok(Rollover {
        account_url,
        old_id,
        new_id,
        relinked,
    })
}

/// What a deactivation did.
#[derive(Debug)]
pub struct Deactivation {
    /// The account URL at the CA.
    pub account_url: String,
    /// Its account id (its directory is no longer under `accounts/<urlpart>/`).
    pub id: String,
    /// Where the key is now, relative to the state directory.
    pub retired: PathBuf,
    /// Certificates whose `account` link was removed.
    pub unlinked: Vec<String>,
}

/// Deactivates `provider`'s account at the CA, the key moved aside first (module docs).
pub async fn deactivate<C: Ca>(
    store: &Store,
    ca: &C,
    provider: &str,
    inv: &Inventory,
) -> Result<Deactivation> {
    let (id, pem) = registered_account(ca, provider, inv).await?;
    let retired = store.retire_account(&id)?;
    let account_url = match ca.deactivate(&pem).await {
        Ok(url) => url,
        Err(e) => {
            let e = anyhow!(e).context(format!("deactivating account {id}"));
            // A lost answer may hide a deactivation: a key that still logs in was not.
            return match ca.login(&pem).await {
                Ok(_) => {
                    store
                        .restore_account(&id)
                        .with_context(|| format!("{e:#}; moving the key back"))?;
                    Err(e)
                }
                Err(unknown) => Err(e.context(format!(
                    "the key no longer logs in ({unknown}); it stays in {}",
                    retired.display()
                ))),
            };
        }
    };
    let mut unlinked = Vec::new();
    for c in inv
        .certs
        .iter()
        .filter(|c| store.cert_account(&c.id).as_deref() == Some(id.as_str()))
    {
        store.unlink_cert_account(&c.id)?;
        unlinked.push(c.id.clone());
    }
    tracing::info!("account {account_url} ({id}) deactivated");
    Ok(Deactivation {
        account_url,
        id,
        retired,
        unlinked,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::acme::Responder;
    use crate::acme::{Chains, DirectoryMeta, Issued, Issuer, OrderOptions, Registration};
    use crate::name::Hostname;
    use crate::store::lock::StateLock;

    const URL: &str = "https://ca.example/dir";

    /// How the fake CA answers the keyChange or deactivation request.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Switch {
        /// Does it and says so.
        Yes,
        /// Refuses.
        No,
        /// Does it, but the answer is lost.
        LostAnswer,
        /// Refuses, and then cannot be reached at all.
        Unreachable,
    }

    /// A CA knowing one account, by the PEM of its current key.
    struct FakeCa {
        key: Mutex<String>,
        switch: Switch,
        down: Mutex<bool>,
        deactivated: Mutex<bool>,
    }

    impl FakeCa {
        fn new(pem: String, switch: Switch) -> Self {
            Self {
                key: Mutex::new(pem),
                switch,
                down: Mutex::new(false),
                deactivated: Mutex::new(false),
            }
        }

        /// The answer for `switch`, after doing what it says with `act`.
        fn answer(&self, act: impl FnOnce()) -> Result<String, AcmeError> {
            if matches!(self.switch, Switch::Yes | Switch::LostAnswer) {
                act();
            }
            match self.switch {
                Switch::Yes => Ok(format!("{URL}/acct/1")),
                Switch::No => Err(AcmeError::Refused("malformed: no".into())),
                Switch::LostAnswer => Err(AcmeError::Other(anyhow!("connection reset"))),
                Switch::Unreachable => {
                    *self.down.lock().expect("lock") = true;
                    Err(AcmeError::Other(anyhow!("connection reset")))
                }
            }
        }
    }

    #[derive(Debug)]
    struct Session;

    impl Issuer for Session {
        async fn issue(
            &self,
            _: &[Hostname],
            _: &[u8],
            _: OrderOptions<'_>,
            _: &dyn Responder,
            _: &(dyn Fn(&str) -> anyhow::Result<()> + Sync),
        ) -> Result<Issued, AcmeError> {
            unreachable!("no orders here")
        }
        async fn renewal_info(
            &self,
            _: &str,
        ) -> Result<Option<(crate::acme::Window, std::time::Duration)>, AcmeError> {
            Ok(None)
        }
        async fn fetch_order_certificate(
            &self,
            _: &str,
            _: bool,
        ) -> Result<Option<Chains>, AcmeError> {
            unreachable!("no orders here")
        }
        fn thumbprint(&self) -> String {
            String::new()
        }
        fn account_url(&self) -> String {
            format!("{URL}/acct/1")
        }
        async fn revoke(&self, _: &[u8], _: u8) -> Result<(), AcmeError> {
            unreachable!("no revocation here")
        }
    }

    impl Ca for FakeCa {
        type Session = Session;
        async fn directory_meta(&self) -> Result<DirectoryMeta, AcmeError> {
            Ok(DirectoryMeta::default())
        }
        async fn login(&self, pem: &str) -> Result<Session, AcmeError> {
            if *self.down.lock().expect("lock") {
                return Err(AcmeError::Other(anyhow!("connection refused")));
            }
            if *self.key.lock().expect("lock") == pem {
                if *self.deactivated.lock().expect("lock") {
                    return Err(AcmeError::Refused("unauthorized: deactivated".into()));
                }
                Ok(Session)
            } else {
                Err(AcmeError::AccountDoesNotExist)
            }
        }
        async fn register(&self, _: &str, _: &Registration) -> Result<Session, AcmeError> {
            unreachable!("rollover never registers")
        }
        async fn change_key(&self, old: &str, new: &str) -> Result<String, AcmeError> {
            assert_eq!(*self.key.lock().expect("lock"), old);
            self.answer(|| *self.key.lock().expect("lock") = new.into())
        }
        async fn deactivate(&self, pem: &str) -> Result<String, AcmeError> {
            assert_eq!(*self.key.lock().expect("lock"), pem);
            self.answer(|| *self.deactivated.lock().expect("lock") = true)
        }
    }

    /// A state directory with one P-256 account for [`URL`] and a certificate directory
    /// linking to it.
    fn setup(dir: &std::path::Path) -> (StateLock, Store, String, String, String) {
        Store::prepare_root(dir).expect("root");
        let lock = StateLock::acquire(dir).expect("lock");
        let store = Store::open(dir, &lock).expect("store");
        let key = PrivateKey::generate(KeySpec::EcdsaP256).expect("key");
        let pem = key.to_pem();
        let id = store.save_account_key(URL, &key.id, &pem).expect("save");
        let cert = store
            .begin_cert(&format!("{URL}/order/1"), Some(&id))
            .expect("cert");
        (lock, store, id, pem, cert)
    }

    fn run(switch: Switch) -> (tempfile::TempDir, Store, String, String, Result<Rollover>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_lock, store, old_id, pem, cert) = setup(dir.path());
        let ca = FakeCa::new(pem, switch);
        let inv = store.load_inventory().expect("inventory");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let result = rt.block_on(roll_over(&store, &ca, URL, &inv));
        (dir, store, old_id, cert, result)
    }

    fn account_ids(store: &Store) -> Vec<String> {
        let inv = store.load_inventory().expect("inventory");
        inv.accounts.into_iter().map(|a| a.id).collect()
    }

    fn cert_account(store: &Store, cert: &str) -> Option<String> {
        let inv = store.load_inventory().expect("inventory");
        inv.cert(cert).and_then(|c| store.cert_account(&c.id))
    }

    #[test]
    fn rollover_switches_relinks_and_removes_the_old_key() {
        let (_dir, store, old_id, cert, result) = run(Switch::Yes);
        let rolled = result.expect("rolled over");
        assert_eq!(rolled.old_id, old_id);
        assert_eq!(rolled.relinked, std::slice::from_ref(&cert));
        assert_eq!(account_ids(&store), std::slice::from_ref(&rolled.new_id));
        assert_eq!(cert_account(&store, &cert), Some(rolled.new_id));
    }

    #[test]
    fn refused_rollover_deletes_the_new_key_and_keeps_everything_else() {
        let (_dir, store, old_id, cert, result) = run(Switch::No);
        let err = format!("{:#}", result.expect_err("refused"));
        assert!(err.contains("malformed: no"), "{err}");
        assert_eq!(account_ids(&store), std::slice::from_ref(&old_id));
        assert_eq!(cert_account(&store, &cert), Some(old_id));
    }

    #[test]
    fn regression_a_lost_answer_is_not_taken_for_a_refusal() {
        // Deleting the new key here would lose the account: the CA knows only that key now.
        let (_dir, store, _, cert, result) = run(Switch::LostAnswer);
        let rolled = result.expect("the CA knows the new key");
        assert_eq!(account_ids(&store), std::slice::from_ref(&rolled.new_id));
        assert_eq!(cert_account(&store, &cert), Some(rolled.new_id));
    }

    #[test]
    fn an_unreachable_ca_keeps_both_keys() {
        let (_dir, store, old_id, cert, result) = run(Switch::Unreachable);
        let err = format!("{:#}", result.expect_err("unknown outcome"));
        assert!(err.contains("both keys are kept"), "{err}");
        let ids = account_ids(&store);
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.contains(&old_id));
        assert_eq!(cert_account(&store, &cert), Some(old_id));
    }

    fn run_deactivate(
        switch: Switch,
    ) -> (
        tempfile::TempDir,
        Store,
        String,
        String,
        Result<Deactivation>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_lock, store, id, pem, cert) = setup(dir.path());
        let ca = FakeCa::new(pem, switch);
        let inv = store.load_inventory().expect("inventory");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let result = rt.block_on(deactivate(&store, &ca, URL, &inv));
        (dir, store, id, cert, result)
    }

    fn retired(dir: &std::path::Path, id: &str) -> bool {
        dir.join("accounts/.deactivated")
            .join(id)
            .join("privkey")
            .is_file()
    }

    #[test]
    fn deactivation_moves_the_key_aside_and_unlinks_certificates() {
        let (dir, store, id, cert, result) = run_deactivate(Switch::Yes);
        let done = result.expect("deactivated");
        assert_eq!(done.id, id);
        assert_eq!(done.unlinked, std::slice::from_ref(&cert));
        assert!(account_ids(&store).is_empty());
        assert!(retired(dir.path(), &id));
        assert_eq!(cert_account(&store, &cert), None);
    }

    #[test]
    fn refused_deactivation_moves_the_key_back() {
        let (dir, store, id, cert, result) = run_deactivate(Switch::No);
        let err = format!("{:#}", result.expect_err("refused"));
        assert!(err.contains("malformed: no"), "{err}");
        assert_eq!(account_ids(&store), std::slice::from_ref(&id));
        assert!(!retired(dir.path(), &id));
        assert_eq!(cert_account(&store, &cert), Some(id));
    }

    #[test]
    fn deactivation_with_a_lost_answer_or_no_ca_leaves_the_key_aside() {
        for switch in [Switch::LostAnswer, Switch::Unreachable] {
            let (dir, store, id, _, result) = run_deactivate(switch);
            let err = format!("{:#}", result.expect_err("unclear"));
            assert!(err.contains("stays in accounts/.deactivated"), "{err}");
            assert!(account_ids(&store).is_empty(), "{switch:?}");
            assert!(retired(dir.path(), &id), "{switch:?}");
        }
    }
}
