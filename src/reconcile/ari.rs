//! The renewal-information phase (ARI, RFC 9773): the questions the plan lists
//! ([`crate::plan::work::RenewalQuery`]), asked with one login per CA and at most `jobs` in
//! flight; the answers are cached in the state directory and put into the world, which is
//! then planned again. A CA whose directory has no `renewalInfo` is remembered as such for a
//! day, so runs with nothing to do send nothing. Best effort: a CA that cannot be asked leaves
//! the cached window, or the local rule, in force, and never fails the run.

use std::sync::Arc;

use anyhow::{Result, bail};
use time::OffsetDateTime;

use super::{Sessions, run_bounded};
use crate::account::{AccountLookup, STOPPED_ANSWERING, look_up_account};
use crate::acme::{AcmeError, Ca, Connector, Issuer};
use crate::cert::CertSummary;
use crate::plan::ari::AriRecord;
use crate::plan::work::RenewalQuery;
use crate::store::{Inventory, Store};
use crate::world::World;

/// Asks `queries` and puts the answers into `world.ari`; returns how many arrived. The
/// account sessions opened go into `sessions`, for the orders of this run.
pub(super) async fn ask<C: Connector>(
    store: &Store,
    connector: &C,
    queries: &[RenewalQuery],
    (world, sessions): (&mut World, &mut Sessions<<C::Ca as Ca>::Session>),
    (jobs, now): (usize, OffsetDateTime),
) -> usize {
    let mut fresh = 0;
    for q in queries {
        let asked = fetch_windows(
            store,
            connector,
            q,
            (&world.inv, &mut *sessions),
            (jobs, now),
        );
        match asked.await {
            Ok(Some(answers)) => {
                fresh += answers.len();
                world.ari.extend(answers);
            }
            Ok(None) => {
                world.no_ari.insert(q.ca.provider.clone(), true);
            }
            // Not a problem for anyone yet: the local rule renews in time without it, and a
            // certificate that is due is ordered, whose failure is reported.
            Err(e) => tracing::info!(
                "renewal information from {}: {}",
                q.ca.provider,
                crate::cause::render(&e)
            ),
        }
    }
    fresh
}

/// Asks the CA of `q` for the windows of its certificates; `None`: its directory offers no
/// `renewalInfo` (remembered for a day).
async fn fetch_windows<C: Connector>(
    store: &Store,
    connector: &C,
    q: &RenewalQuery,
    (inv, sessions): (&Inventory, &mut Sessions<<C::Ca as Ca>::Session>),
    (jobs, now): (usize, OffsetDateTime),
) -> Result<Option<Vec<(String, AriRecord)>>> {
    let (provider, certs) = (q.ca.provider.as_str(), &q.certs);
    let ca = connector.connect(provider, q.ca.roots.as_ref())?;
    if ca.unresponsive() {
        bail!(STOPPED_ANSWERING);
    }
    if ca.directory_meta().await?.renewal_info.is_none() {
        if let Err(e) = store.note_provider_lacks_ari(provider, now) {
            tracing::warn!("{e:#}");
        }
        return Ok(None);
    }
    // The account the orders use too: its session is kept for them (one login per CA).
    let AccountLookup::Registered {
        record, session, ..
    } = look_up_account(&ca, provider, inv).await?
    else {
        return Ok(Some(Vec::new()));
    };
    let session = Arc::new(session);
    sessions.insert(q.ca.clone(), (session.clone(), record.id));
    let mut out = Vec::new();
    let tasks = certs.iter().cloned().map(|(cert_id, ari_id)| {
        let session = session.clone();
        async move {
            let res = session.renewal_info(&ari_id).await;
            (cert_id, ari_id, res)
        }
    });
    run_bounded(tasks, jobs, |joined| {
        let (cert_id, ari_id, res) = match joined {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("a renewal information task failed: {e}");
                return;
            }
        };
        if let Some(rec) = keep_window(store, &cert_id, &ari_id, res, now) {
            out.push((cert_id, rec));
        }
    })
    .await;
    Ok(Some(out))
}

/// The CA's answer `res` about certificate `cert_id` (ARI id `ari_id`), asked at `now`:
/// a window is cached and returned; no ARI or a failure leaves the local rule in force.
fn keep_window(
    store: &Store,
    cert_id: &str,
    ari_id: &str,
    res: Result<Option<(crate::acme::Window, std::time::Duration)>, AcmeError>,
    now: OffsetDateTime,
) -> Option<AriRecord> {
    match res {
        Ok(Some((window, retry_after))) => {
            let rec = AriRecord::new(ari_id, window, retry_after, now);
            tracing::info!(
                "certs/{cert_id}: the CA suggests renewing between {} and {}",
                window.start,
                window.end
            );
            if let Err(e) = store.save_ari_record(cert_id, &rec) {
                tracing::warn!("{e:#}");
            }
            Some(rec)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::info!(
                "certs/{cert_id}: renewal information: {}",
                crate::cause::render_dyn(&e)
            );
            None
        }
    }
}

/// RFC 9773 §4.2: the renewal window of `cert`, just obtained through `session`, asked of
/// its CA at once (at `now`) rather than in the next run, and cached like the others.
/// Best effort, as in [`ask`]: a CA without ARI is sent nothing, and one that stopped
/// answering is not asked.
pub(super) async fn first_window<I: Issuer>(
    store: &Store,
    session: &I,
    cert: &CertSummary,
    now: OffsetDateTime,
) {
    let Some(ari_id) = &cert.ari_id else {
        return;
    };
    if session.ca_unresponsive() {
        return;
    }
    let res = session.renewal_info(ari_id).await;
    keep_window(store, &cert.id, ari_id, res, now);
}
