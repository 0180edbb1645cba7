//! The renewal-information phase (ARI, RFC 9773): the questions the plan lists
//! ([`crate::plan::work::RenewalQuery`]), asked with one login per CA and at most `jobs` in
//! flight; the answers are cached in the state directory and put into the world, which is
//! then planned again. A CA whose directory has no `renewalInfo` is remembered as such for a
//! day, so runs with nothing to do send nothing. Best effort: a CA that cannot be asked, or
//! whose answer cannot be used, leaves the cached window, or the local rule, in force, is not
//! asked about those certificates again before a backoff, and never fails the run.

use std::sync::Arc;

use anyhow::{Result, bail};
use time::OffsetDateTime;

use super::{Sessions, run_bounded};
use crate::account::{AccountLookup, STOPPED_ANSWERING, look_up_account};
use crate::acme::{AcmeError, Ca, Connector, Issuer, failover};
use crate::cert::CertSummary;
use crate::plan::ari::{self, AriRecord};
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
        // Each certificate's end, against which its window is judged.
        let certs: Vec<(String, String, OffsetDateTime)> = q
            .certs
            .iter()
            .filter_map(|(id, ari_id)| {
                let c = world.certs.get(id)?;
                Some((id.clone(), ari_id.clone(), c.not_after))
            })
            .collect();
        let asked = fetch_windows(
            store,
            connector,
            (q, &certs),
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
            Err(e) => {
                let why = crate::cause::render(&e);
                tracing::info!("renewal information from {}: {why}", q.ca.provider);
                // No answer at all: not asked about these certificates again before the
                // backoff, as for an answer that cannot be used (said above, once).
                if failover::failure_of(&e).unreachable {
                    for (cert_id, ari_id, _) in &certs {
                        let why = Unusable::NoAnswer(&why);
                        back_off(store, (cert_id, ari_id), why, (now, false));
                    }
                }
            }
        }
    }
    fresh
}

/// Asks the CA of `q` for the windows of its certificates; `None`: its directory offers no
/// `renewalInfo` (remembered for a day).
async fn fetch_windows<C: Connector>(
    store: &Store,
    connector: &C,
    (q, certs): (&RenewalQuery, &[(String, String, OffsetDateTime)]),
    (inv, sessions): (&Inventory, &mut Sessions<<C::Ca as Ca>::Session>),
    (jobs, now): (usize, OffsetDateTime),
) -> Result<Option<Vec<(String, AriRecord)>>> {
    let provider = q.ca.provider.as_str();
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
    let tasks = certs.iter().cloned().map(|(cert_id, ari_id, not_after)| {
        let session = session.clone();
        async move {
            let res = session.renewal_info(&ari_id).await;
            (cert_id, ari_id, not_after, res)
        }
    });
    run_bounded(tasks, jobs, |joined| {
        let (cert_id, ari_id, not_after, res) = match joined {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("a renewal information task failed: {e}");
                return;
            }
        };
        if let Some(rec) = keep_window(store, (&cert_id, &ari_id, not_after), res, now) {
            out.push((cert_id, rec));
        }
    })
    .await;
    Ok(Some(out))
}

/// The CA's answer `res` about certificate `cert_id` (ARI id `ari_id`, expiring at
/// `not_after`), asked at `now`: a usable window is cached and returned. No ARI leaves the
/// local rule in force. So does an answer that cannot be used (an error, a body that is not
/// renewal information or too large, an inverted or impossible window) or no answer at all
/// (unreachable, timed out), and the CA is not asked about that certificate again before a
/// backoff ([`back_off`]).
fn keep_window(
    store: &Store,
    (cert_id, ari_id, not_after): (&str, &str, OffsetDateTime),
    res: Result<Option<(crate::acme::Window, std::time::Duration)>, AcmeError>,
    now: OffsetDateTime,
) -> Option<AriRecord> {
    let why = match res {
        Ok(Some((window, retry_after))) => match ari::unusable(&window, not_after) {
            None => {
                let rec = AriRecord::new(ari_id, window, retry_after, now);
                tracing::info!(
                    "certs/{cert_id}: the CA suggests renewing between {} and {}",
                    window.start,
                    window.end
                );
                if let Err(e) = store.save_ari_record(cert_id, &rec) {
                    tracing::warn!("{e:#}");
                }
                if let Err(e) = store.save_ari_backoff(cert_id, None) {
                    tracing::warn!("{e:#}");
                }
                return Some(rec);
            }
            Some(why) => format!(
                "{why} ({} .. {}, the certificate expires {not_after})",
                window.start, window.end
            ),
        },
        Ok(None) => return None,
        Err(e) => {
            let e = anyhow::Error::new(e);
            let why = crate::cause::render(&e);
            if failover::failure_of(&e).unreachable {
                back_off(
                    store,
                    (cert_id, ari_id),
                    Unusable::NoAnswer(&why),
                    (now, true),
                );
                return None;
            }
            why
        }
    };
    back_off(
        store,
        (cert_id, ari_id),
        Unusable::Answer(&why),
        (now, true),
    );
    None
}

/// Why a question about renewal information left the certificate on its own schedule.
#[derive(Clone, Copy)]
enum Unusable<'a> {
    /// The CA's answer cannot be used, because of this.
    Answer(&'a str),
    /// No answer came (the connection failed, or no answer in time), with this cause.
    NoAnswer(&'a str),
}

/// Certificate `cert_id` (ARI id `ari_id`) keeps its own schedule after a question at `now`
/// that went as `why` says: the CA is not asked about it again before a backoff
/// (`plan::ari::AriBackoff`: 1 hour, doubling, at most a day; RFC 9773 §4.3.3). -v says so
/// once, for the first in a row, when `say` (else it is said at debug).
fn back_off(
    store: &Store,
    (cert_id, ari_id): (&str, &str),
    why: Unusable<'_>,
    (now, say): (OffsetDateTime, bool),
) {
    let backoff = ari::AriBackoff::after(store.ari_backoff(cert_id).as_ref(), ari_id, now);
    let next = backoff
        .next_ask
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (what, again, why) = match why {
        Unusable::Answer(why) => (
            "the CA's renewal information cannot be used",
            "the CA's renewal information still cannot be used",
            why,
        ),
        Unusable::NoAnswer(why) => (
            "the CA gave no answer about renewal information",
            "the CA still gives no answer about renewal information",
            why,
        ),
    };
    if backoff.failures == 1 && say {
        tracing::info!(
            "certs/{cert_id}: {what} ({why}); the renewal keeps its own schedule, and the CA is not asked again before {next}"
        );
    } else {
        tracing::debug!(
            "certs/{cert_id}: {again} ({why}, {} in a row); not asking again before {next}",
            backoff.failures
        );
    }
    if let Err(e) = store.save_ari_backoff(cert_id, Some(&backoff)) {
        tracing::warn!("{e:#}");
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
    keep_window(store, (&cert.id, ari_id, cert.not_after), res, now);
}
