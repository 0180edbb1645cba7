//! What a run writes down and reports about each target: how an attempt failed (a typed
//! [`Failure`], never re-parsed from its text), the run record after it (the planner's
//! [`backoff::after_attempt`]), whether a deferral by the CA is still silent, and which
//! unsatisfied targets a person must hear about (expiring, lapsing).

use time::OffsetDateTime;

use super::{Outcome, TargetOutcome};
use crate::acme::{AcmeError, ErrorClass};
use crate::cert::{self, CertSummary};
use crate::plan;
use crate::plan::backoff::{self, Attempt, Backoff};
use crate::store::Store;
use crate::store::run::ErrorKind;
use crate::target::Target;
use crate::world::World;

/// The kind of error, as counted in the run record, of a failed attempt that backs off as `how`.
pub(super) fn kind_of(how: Backoff) -> ErrorKind {
    match how {
        Backoff::No => ErrorKind::Other,
        Backoff::Yes => ErrorKind::Ca,
        Backoff::RateLimited => ErrorKind::RateLimited,
    }
}

/// The targets of `outcomes` that were not satisfied in this run (failed, or deferred by the
/// CA) while their current certificate is in the last sixth of its life, with its end.
pub(super) fn expiring(
    outcomes: &[TargetOutcome],
    targets: &[Target],
    summaries: &cert::CertSet,
    now: OffsetDateTime,
) -> Vec<(String, OffsetDateTime)> {
    let unsatisfied: Vec<&TargetOutcome> = outcomes
        .iter()
        .filter(|o| matches!(o.result, Outcome::Failed(_) | Outcome::Deferred(_)))
        .collect();
    if unsatisfied.is_empty() {
        return Vec::new();
    }
    let by_file: std::collections::HashMap<&str, &Target> =
        targets.iter().map(|t| (t.file.as_str(), t)).collect();
    unsatisfied
        .into_iter()
        .filter_map(|o| {
            let best = cert::best_cert(by_file.get(o.file.as_str())?, summaries, now)?;
            plan::in_last_sixth(best, now).then(|| (o.file.clone(), best.not_after))
        })
        .collect()
}

/// The names of the targets of `outcomes` not satisfied in this run (failed, or deferred by
/// the CA) whose certificate in use ends before the next attempt may renew it
/// ([`plan::deferral_outlives`] at the time their run record in `world` allows, or now): the
/// `certificate-expiring` event. `world` is the run's, with the records it wrote taken in
/// ([`World::take_written`]).
pub(super) fn lapsing(
    outcomes: &[TargetOutcome],
    world: &World,
    now: OffsetDateTime,
) -> Vec<String> {
    let by_file: std::collections::HashMap<&str, usize> = world
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.file.as_str(), i))
        .collect();
    outcomes
        .iter()
        .filter(|o| matches!(o.result, Outcome::Failed(_) | Outcome::Deferred(_)))
        .filter_map(|o| {
            let i = *by_file.get(o.file.as_str())?;
            let t = &world.targets[i];
            let best = crate::cert::best_cert(t, &world.certs, now);
            let next = world
                .record(i)
                .and_then(|r| r.next_attempt)
                .map_or(now, |n| n.max(now));
            plan::deferral_outlives(best, next, now).map(|_| names_of(t))
        })
        .flatten()
        .collect()
}

pub(super) fn names_of(t: &Target) -> Vec<String> {
    t.satisfy_names.iter().map(|n| n.to_string()).collect()
}

/// How an attempt to obtain a certificate failed, as it is recorded, reported and told to the
/// fleet: the text people read, whether and how the target backs off, and the CA's retry
/// time — a value taken from the CA's answer, never read back out of the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The error, rendered with its causes.
    pub error: String,
    /// Whether and how the target waits.
    pub backoff: Backoff,
    /// When the CA said to come back, if it did.
    pub retry_at: Option<OffsetDateTime>,
}

impl Failure {
    /// The failure of an attempt that ended with `e`. How the target backs off follows the
    /// typed error in its chain only ([`AcmeError::class`]): not at all after a local mistake
    /// or a network error (a fix can be retried at once), after the CA's answer (validation
    /// failed, refused), and as deferred, not failed, when the CA refused for its rate beyond
    /// what the run waits out.
    pub fn of(e: &anyhow::Error) -> Self {
        let (mut backoff, mut retry_at) = (Backoff::No, None);
        for c in e.chain() {
            match c.downcast_ref::<AcmeError>().map(AcmeError::class) {
                Some(ErrorClass::RateLimited { retry_at: at }) => {
                    (backoff, retry_at) = (Backoff::RateLimited, at);
                    break;
                }
                Some(ErrorClass::Ca { retry_at: at }) if backoff == Backoff::No => {
                    (backoff, retry_at) = (Backoff::Yes, at);
                }
                _ => {}
            }
        }
        Self {
            error: crate::cause::render(e),
            backoff,
            retry_at,
        }
    }

    /// A failure that is nobody's answer: no backoff.
    pub fn local(error: String) -> Self {
        Self {
            error,
            backoff: Backoff::No,
            retry_at: None,
        }
    }

    /// Not attempted because the CA asked for a pause that lasts until `until` (`why` says
    /// who was told): deferred, not failed, until then.
    pub fn rate_limited(why: &str, until: OffsetDateTime) -> Self {
        let at = until
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            error: format!("{why}; retry after {at}"),
            backoff: Backoff::RateLimited,
            retry_at: Some(until),
        }
    }

    /// The attempt, as the planner takes it ([`backoff::after_attempt`]).
    pub fn attempt(&self) -> Attempt<'_> {
        Attempt::Failed {
            error: &self.error,
            backoff: self.backoff,
            retry_at: self.retry_at,
        }
    }
}

/// `at` rounded up to the whole second (never earlier than the CA's time).
pub(super) fn whole_seconds_up(at: OffsetDateTime) -> OffsetDateTime {
    match at.replace_nanosecond(0) {
        Ok(whole) if whole < at => whole + time::Duration::SECOND,
        _ => at,
    }
}

/// The outcome of a target that `failed`, waiting until `next`, its certificate in use being
/// `best`: a refusal for the CA's rate defers it ([`deferral`]).
pub(super) fn failure(
    failed: &Failure,
    best: Option<&CertSummary>,
    next: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Outcome {
    match failed.backoff {
        Backoff::RateLimited => deferral(failed.error.clone(), best, next, now),
        Backoff::No | Backoff::Yes => Outcome::Failed(failed.error.clone()),
    }
}

/// Records an attempt's outcome for `file` (`failed`: how it failed); returns when the next
/// attempt may be made, if the target now waits.
pub(super) fn record(
    store: &Store,
    file: &str,
    now: OffsetDateTime,
    failed: Option<&Failure>,
) -> Option<OffsetDateTime> {
    let attempt = failed.map_or(Attempt::Obtained, Failure::attempt);
    let rec = backoff::after_attempt(store.target_record(file), attempt, now);
    match store.write_target_record(file, &rec) {
        Ok(()) => rec.next_attempt,
        Err(e) => {
            tracing::warn!("cannot record the outcome for desired/{file}: {e:#}");
            None
        }
    }
}

/// A target deferred by the CA until `next` ([`Outcome::Deferred`] with `text`), unless its
/// certificate in use expires before then ([`plan::deferral_outlives`]): then it fails the
/// run, whatever the CA asked, so that the `reconcile-failed` hook tells a person in time.
pub(super) fn deferral(
    text: String,
    best: Option<&CertSummary>,
    next: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Outcome {
    let rfc3339 = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    match next.and_then(|next| plan::deferral_outlives(best, next, now).map(|exp| (exp, next))) {
        Some((expires, next)) => Outcome::Failed(format!(
            "{text}; its certificate {} {}, and the CA allows no new attempt before {}",
            if expires <= now {
                "expired at"
            } else {
                "expires at"
            },
            rfc3339(expires),
            rfc3339(next)
        )),
        None => Outcome::Deferred(text),
    }
}
