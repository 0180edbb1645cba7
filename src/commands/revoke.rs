//! `acmekeep revoke CERTID|KEYID|PATH... [--reason R]`: a real RFC 8555 revocation, signed by
//! the account that obtained the certificate (its `account` link), then the `revoked` marker
//! and a reconcile, which replaces the certificate. (acmetool 0.2 only wrote a marker and
//! never told the CA.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use crate::account::{bundle_lookup, login_account};
use crate::acme::Issuer;
use crate::acme::connect::InstantConnector;
use crate::cert;
use crate::cli::{ReconcileArgs, RevokeArgs};
use crate::exit::config_error;
use crate::keys::ids;
use crate::settings::Settings;
use crate::world::{Scope, World};

/// RFC 5280 reason codes a subscriber may give.
pub fn reason_code(reason: &str) -> Result<u8> {
    Ok(
        match reason.to_ascii_lowercase().replace('_', "-").as_str() {
            "unspecified" | "0" => 0,
            "key-compromise" | "keycompromise" | "1" => 1,
            "affiliation-changed" | "affiliationchanged" | "3" => 3,
            "superseded" | "4" => 4,
            "cessation-of-operation" | "cessationofoperation" | "5" => 5,
            other => bail!(
                "unknown revocation reason {other:?} (use unspecified, key-compromise, affiliation-changed, superseded or cessation-of-operation)"
            ),
        },
    )
}

/// The certificate ids `what` names in `world`: a certificate id, a key id (every complete
/// certificate with that key) or a path inside `certs/`.
pub fn resolve(root: &Path, world: &World, what: &str) -> Result<Vec<String>> {
    let known = |id: &str| world.certs.get(id).is_some() || world.inv.cert(id).is_some();
    if ids::is_well_formed_id(what) {
        if known(what) {
            return Ok(vec![what.to_owned()]);
        }
        if world.inv.key_ids.contains(what) {
            let certs: Vec<String> = world
                .certs
                .iter()
                .filter(|s| s.key_id == what)
                .map(|s| s.id.clone())
                .collect();
            if certs.is_empty() {
                bail!("no certificate uses key {what}");
            }
            return Ok(certs);
        }
        bail!("{what} is neither a certificate id nor a key id in this state directory");
    }
    let path = Path::new(what)
        .canonicalize()
        .with_context(|| format!("{what} is not an id and not an existing path"))?;
    let certs_dir = root
        .join("certs")
        .canonicalize()
        .context("finding certs/")?;
    let rel = path
        .strip_prefix(&certs_dir)
        .map_err(|_| anyhow!("{what} is not inside {}", certs_dir.display()))?;
    let id = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|id| ids::is_well_formed_id(id) && known(id))
        .ok_or_else(|| anyhow!("{what} is not a certificate directory"))?;
    Ok(vec![id])
}

/// Revokes what `args` names, then reconciles, in one locked session over one world: the
/// revoked certificates are marked in the world the reconcile plans from (it replaces them).
pub fn execute(settings: &Settings, args: &RevokeArgs) -> Result<ExitCode> {
    let reason = reason_code(&args.reason).map_err(config_error)?;
    let mut s = super::open_session(settings, Scope::RECONCILE)?;
    let mut ids = BTreeSet::new();
    for w in &args.what {
        ids.extend(resolve(s.store.root(), &s.world, w).map_err(config_error)?);
    }
    let default_bundle = s
        .world
        .defaults
        .request
        .as_ref()
        .and_then(|r| r.provider_ca_bundle.clone())
        .filter(|p| !p.is_empty())
        .map(Into::into);
    let bundles = bundle_lookup(&s.world.targets, default_bundle);
    let rt = super::runtime()?;
    let connector = InstantConnector::with_timeout(settings.ca_timeout);
    for id in ids {
        let account = s.store.cert_account(&id);
        let account = account.as_deref().ok_or_else(|| {
            anyhow!("certs/{id} has no account link, so the account that obtained it is unknown")
        })?;
        let pem = crate::files::read_state_file(
            &s.store.root().join("certs").join(&id).join("cert"),
            cert::MAX_CHAIN,
            crate::files::Links::Refuse,
        )
        .with_context(|| format!("reading certs/{id}/cert"))?;
        let pem = String::from_utf8(pem).map_err(|_| anyhow!("certs/{id}/cert is not PEM"))?;
        let der = cert::split_chain(&pem)?.swap_remove(0);
        rt.block_on(async {
            let session = login_account(&connector, &s.world.inv, account, &bundles).await?;
            session.revoke(&der, reason).await.map_err(|e| anyhow!(e))
        })
        .with_context(|| format!("revoking certs/{id}"))?;
        s.store.mark_revoked(&id)?;
        s.world.certs.mark_revoked(&id);
        println!("revoked certs/{id}");
    }
    drop((rt, bundles));
    super::reconcile::execute_in(settings, &ReconcileArgs::default(), s)
}

#[cfg(test)]
mod tests {
    use super::reason_code;

    #[test]
    fn reasons() {
        assert_eq!(reason_code("unspecified").ok(), Some(0));
        assert_eq!(reason_code("Key_Compromise").ok(), Some(1));
        assert_eq!(reason_code("superseded").ok(), Some(4));
        assert_eq!(reason_code("5").ok(), Some(5));
        assert!(reason_code("ca-compromise").is_err());
        assert!(reason_code("2").is_err());
    }
}
