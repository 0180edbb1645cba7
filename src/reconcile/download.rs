//! The download phase: the certificates of orders an earlier, interrupted run finished but
//! never downloaded (acmetool's "uncached" directories), as the plan lists them
//! ([`crate::plan::work::Download`]). Failures are warnings, never fatal: the directory stays
//! and the next run tries again, until the order is given up ([`plan::give_up_order`]).

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::Report;
use super::issue::keep_chain;
use crate::account::{bundle_lookup, login_account};
use crate::acme::{AcmeError, Ca, Connector, Issuer};
use crate::cert::{self, CertSummary};
use crate::clock::Clock;
use crate::plan::{self, DownloadFailure, work::Download};
use crate::store::Store;
use crate::world::World;

/// A login to an account, or why there is none (and whether that is for good).
type Login<S> = Result<S, (String, DownloadFailure)>;

/// Downloads `downloads` into `world` (each certificate becomes one of `world.certs`),
/// logging in once per account.
pub(super) async fn run<C: Connector>(
    store: &Store,
    connector: &C,
    downloads: &[Download],
    world: &mut World,
    (now, clock): (OffsetDateTime, &dyn Clock),
    report: &mut Report,
) {
    let mut sessions: BTreeMap<String, Login<<C::Ca as Ca>::Session>> = BTreeMap::new();
    for d in downloads {
        let (Some(url), Some(account_id)) = (&d.order_url, &d.account) else {
            report.other_errors.push(format!(
                "certs/{}: order was not recorded completely (no url or account link); it is ignored",
                d.cert_id
            ));
            continue;
        };
        if !sessions.contains_key(account_id) {
            let session = login(connector, world, account_id).await;
            sessions.insert(account_id.clone(), session);
        }
        let session = match sessions.get(account_id) {
            Some(Ok(s)) => s,
            Some(Err((e, failure))) => {
                download_failed(store, &d.cert_id, e, *failure, now);
                continue;
            }
            None => continue,
        };
        if let Some(summary) = fetch(store, session, d, url, world, (now, clock)).await {
            tracing::info!(
                "certs/{}: downloaded the certificate of an earlier order",
                d.cert_id
            );
            report
                .downloaded
                .push((d.cert_id.clone(), summary.names.clone(), summary.not_after));
            world.inv.certs.retain(|r| r.id != d.cert_id);
            world.certs.push(summary);
        }
    }
}

/// Logs in to `account_id`; an account the CA or the state directory no longer has is a
/// refusal for good.
async fn login<C: Connector>(
    connector: &C,
    world: &World,
    account_id: &str,
) -> Login<<C::Ca as Ca>::Session> {
    let bundles = bundle_lookup(&world.targets, None);
    login_account(connector, &world.inv, account_id, &bundles)
        .await
        .map_err(|e| {
            let gone = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<AcmeError>(),
                    Some(AcmeError::AccountDoesNotExist)
                )
            }) || !world.inv.accounts.iter().any(|a| a.id == account_id);
            let failure = if gone {
                DownloadFailure::Refused
            } else {
                DownloadFailure::Transient
            };
            (crate::cause::render(&e), failure)
        })
}

/// Fetches and stores the certificate of download `d` (order `url`); `None` when there is
/// none yet or it failed (logged, and given up when that is due).
async fn fetch<S: Issuer>(
    store: &Store,
    session: &S,
    d: &Download,
    url: &str,
    world: &World,
    (now, clock): (OffsetDateTime, &dyn Clock),
) -> Option<CertSummary> {
    let id = &d.cert_id;
    let chains = match session.fetch_order_certificate(url, d.alternates).await {
        Ok(None) => {
            tracing::info!("certs/{id}: the CA is still processing the order; trying next run");
            return None;
        }
        Ok(Some(chains)) => chains,
        Err(e @ AcmeError::Gone { .. }) => {
            download_failed(store, id, &e.to_string(), DownloadFailure::Refused, now);
            return None;
        }
        Err(e) => {
            let e = crate::cause::render_dyn(&e);
            download_failed(store, id, &e, DownloadFailure::Transient, now);
            return None;
        }
    };
    let stored = cert::split_chain(&chains.default)
        .and_then(|ders| cert::leaf_info(&ders[0]))
        .and_then(|leaf| {
            let preferred = preferred_chain(world, d, &leaf.names);
            let pem = keep_chain(&format!("certs/{id}"), &chains, preferred);
            let files = cert::validate_issued(pem, &leaf.key_id, &leaf.names, clock.now_utc())?;
            let has_key = world.inv.key_ids.contains(&leaf.key_id);
            store.finish_cert(id, has_key.then_some(leaf.key_id.as_str()), &files)?;
            Ok(files.leaf.into_summary(id, has_key, false, None))
        });
    match stored {
        Ok(summary) => Some(summary),
        Err(e) => {
            let e = crate::cause::render(&e);
            download_failed(store, id, &e, DownloadFailure::Transient, now);
            None
        }
    }
}

/// The chain preference for a downloaded certificate whose leaf names `names`: that of the
/// first target at the account's CA it satisfies that prefers a chain (known only once the
/// certificate is here).
fn preferred_chain<'w>(world: &'w World, d: &Download, names: &[String]) -> &'w [String] {
    if !d.alternates {
        return &[];
    }
    let provider = world
        .inv
        .accounts
        .iter()
        .find(|a| Some(&a.id) == d.account.as_ref())
        .map(|a| a.directory_url.as_str());
    world
        .targets
        .iter()
        .filter(|t| Some(t.provider.as_str()) == provider && !t.preferred_chain.is_empty())
        .find(|t| {
            t.satisfy_names
                .iter()
                .all(|n| names.iter().any(|l| l == n.as_str()))
        })
        .map(|t| t.preferred_chain.as_slice())
        .unwrap_or_default()
}

/// An earlier order's certificate could not be downloaded. It is a warning, never a failure
/// of the run: a target that needs the certificate is not satisfied and gets a new order
/// (whose outcome counts). The order is given up once that is certain or it is too old
/// ([`plan::give_up_order`]).
fn download_failed(
    store: &Store,
    id: &str,
    error: &str,
    failure: DownloadFailure,
    now: OffsetDateTime,
) {
    let recorded = store.order_recorded(id).unwrap_or(now);
    if plan::give_up_order(failure, recorded, now) {
        tracing::warn!("certs/{id}: cannot download, giving the order up: {error}");
        if let Err(e) = store.abandon_order(id, error) {
            tracing::warn!("{e:#}");
        }
    } else {
        // Tried again next run, and a target that needs it gets a new order meanwhile.
        tracing::info!("certs/{id}: cannot download (tried again next run): {error}");
    }
}
