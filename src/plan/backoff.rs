//! Backoff: what a target's run record becomes after an attempt, and whether the target may
//! be tried again now, as pure functions of the record and `now`.
//!
//! The store only reads and writes the typed [`TargetRecord`]; the executors (reconcile, the
//! fleet's order gate) ask here what to write and whether to ask the CA, so the rule — about
//! 1 minute, 10 minutes, 100 minutes, then daily, never before the CA's own retry time, and no
//! wait at all after a local mistake — lives in one place and is table-tested below.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::store::TargetRecord;

/// Whether a failed attempt makes the target wait before the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
    /// No: a local mistake, which can be fixed and retried at once.
    No,
    /// Yes: the CA answered (see [`next_attempt`]).
    Yes,
    /// Yes, and the CA refused for its rate: the target is deferred, not failing.
    RateLimited,
}

/// How an attempt to obtain a certificate for a target ended.
#[derive(Clone, Copy, Debug)]
pub enum Attempt<'a> {
    /// A certificate was obtained.
    Obtained,
    /// It failed with `error`, backing off as `backoff`, never before `retry_at` (the CA's
    /// Retry-After or "retry after" time, if it gave one).
    Failed {
        /// The rendered error, kept in the record for `status` and the next deferral.
        error: &'a str,
        /// Whether and how the target waits.
        backoff: Backoff,
        /// The CA's own retry time.
        retry_at: Option<OffsetDateTime>,
    },
}

/// How long to wait after `failures` consecutive failed attempts before the next one: about
/// 1 minute, 10 minutes, 100 minutes, then once a day (Let's Encrypt's integration guide).
pub fn delay(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        1 => Duration::minutes(1),
        2 => Duration::minutes(10),
        3 => Duration::minutes(100),
        _ => Duration::days(1),
    }
}

/// Longest a CA's "retry after" time defers a target (the CA is untrusted input: a time
/// years ahead would stop renewals for good; Let's Encrypt's limits refill within a week).
pub const MAX_CA_DEFERRAL: Duration = Duration::days(7);

/// When a target that failed `failures` times in a row, last at `last`, may be tried again:
/// after the backoff, and never before a time the CA asked for (Retry-After, rate limits),
/// unless that time is more than [`MAX_CA_DEFERRAL`] away.
pub fn next_attempt(
    last: OffsetDateTime,
    failures: u32,
    ca_retry_after: Option<OffsetDateTime>,
) -> OffsetDateTime {
    let ours = last + delay(failures);
    ca_retry_after.map_or(ours, |ca| ca.min(last + MAX_CA_DEFERRAL).max(ours))
}

/// The run record of a target after `attempt` ended at `now`, `rec` being the record before.
/// A failure counts, remembers when the failures began and, when the CA answered, sets the
/// next attempt ([`next_attempt`]); a success clears the failures.
pub fn after_attempt(
    mut rec: TargetRecord,
    attempt: Attempt<'_>,
    now: OffsetDateTime,
) -> TargetRecord {
    rec.last_attempt = Some(now);
    match attempt {
        Attempt::Failed {
            error,
            backoff,
            retry_at,
        } => {
            if rec.failures == 0 || rec.failing_since.is_none() {
                rec.failing_since = rec.last_attempt;
            }
            rec.failures = rec.failures.saturating_add(1);
            // Back off only when the CA answered (failed validation, rate limits): a local
            // mistake can be fixed and retried at once.
            rec.rate_limited = backoff == Backoff::RateLimited;
            rec.next_attempt =
                (backoff != Backoff::No).then(|| next_attempt(now, rec.failures, retry_at));
            rec.last_error = Some(error.to_owned());
        }
        Attempt::Obtained => {
            rec.failures = 0;
            rec.failing_since = None;
            rec.last_success = rec.last_attempt;
            rec.last_error = None;
            rec.next_attempt = None;
            rec.rate_limited = false;
        }
    }
    rec
}

/// A due target the CA is not asked for in this run: it waits after failures.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    /// Not asked before this time.
    pub until: OffsetDateTime,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The CA refused for its rate: the target is deferred, not failing.
    pub rate_limited: bool,
}

/// How far after `now` a record's last attempt may lie before [`gate`] takes the clock to
/// have stepped back: more than the few seconds by which the clocks of a fleet's nodes differ.
pub const CLOCK_STEPPED_BACK: Duration = Duration::hours(1);

/// The backoff gate: whether a due target with run record `rec` waits at `now` instead of
/// asking the CA (`force`, `reconcile --force`, asks anyway). `None`: ask.
///
/// A record whose last attempt lies more than [`CLOCK_STEPPED_BACK`] after `now` was written
/// while the clock was ahead (it jumped forward and was put right): its wait is not kept, or
/// the target would be held back for as long as the clock was wrong, past its certificate's
/// end. The CA is asked, and the attempt rewrites the record under the clock as it is now.
pub fn gate(rec: &TargetRecord, now: OffsetDateTime, force: bool) -> Option<Waiting> {
    if rec
        .last_attempt
        .is_some_and(|last| last - now > CLOCK_STEPPED_BACK)
    {
        return None;
    }
    let until = rec.next_attempt.filter(|next| *next > now && !force)?;
    Some(Waiting {
        until,
        failures: rec.failures,
        last_error: rec.last_error.clone(),
        rate_limited: rec.rate_limited,
    })
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not retried before {} after {} failed attempt(s) (use `reconcile --force` to retry now); last error: {}",
            self.until.format(&Rfc3339).unwrap_or_default(),
            self.failures,
            self.last_error.as_deref().unwrap_or("unknown")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2027-03-01 12:00 UTC);

    #[test]
    fn backoff_table() {
        assert_eq!(delay(0), Duration::ZERO);
        assert_eq!(delay(1), Duration::minutes(1));
        assert_eq!(delay(2), Duration::minutes(10));
        assert_eq!(delay(3), Duration::minutes(100));
        assert_eq!(delay(4), Duration::days(1));
        assert_eq!(delay(400), Duration::days(1));
        let later = T0 + Duration::hours(5);
        assert_eq!(next_attempt(T0, 2, None), T0 + Duration::minutes(10));
        assert_eq!(
            next_attempt(T0, 2, Some(later)),
            later,
            "the CA's time wins when later"
        );
        assert_eq!(next_attempt(T0, 4, Some(later)), T0 + Duration::days(1));
        assert_eq!(
            next_attempt(T0, 1, Some(T0 + Duration::days(3650))),
            T0 + MAX_CA_DEFERRAL,
            "a CA's time years ahead is not believed"
        );
    }

    fn failed(backoff: Backoff, retry_at: Option<OffsetDateTime>) -> Attempt<'static> {
        Attempt::Failed {
            error: "boom",
            backoff,
            retry_at,
        }
    }

    /// failures, next_attempt, rate_limited, failing_since.
    type Expected = (u32, Option<OffsetDateTime>, bool, Option<OffsetDateTime>);

    /// The arithmetic `Store::record_attempt` did before the planner decided it, row by row.
    #[test]
    fn record_after_attempt_table() {
        let t1 = T0 + Duration::minutes(5);
        let ca = T0 + Duration::hours(3);
        let fresh = TargetRecord::default();
        let once = after_attempt(fresh.clone(), failed(Backoff::Yes, None), T0);
        let rows: Vec<(&str, TargetRecord, Attempt<'_>, Expected)> = vec![
            (
                "first CA failure: one minute",
                fresh.clone(),
                failed(Backoff::Yes, None),
                (1, Some(t1 + Duration::minutes(1)), false, Some(t1)),
            ),
            (
                "second: ten minutes, failing since the first",
                once.clone(),
                failed(Backoff::Yes, None),
                (2, Some(t1 + Duration::minutes(10)), false, Some(T0)),
            ),
            (
                "a local mistake counts but does not wait",
                once.clone(),
                failed(Backoff::No, Some(ca)),
                (2, None, false, Some(T0)),
            ),
            (
                "a rate limit waits for the CA's time and is marked",
                fresh.clone(),
                failed(Backoff::RateLimited, Some(ca)),
                (1, Some(ca), true, Some(t1)),
            ),
            (
                "a CA time sooner than the backoff does not shorten it",
                once.clone(),
                failed(Backoff::Yes, Some(t1)),
                (2, Some(t1 + Duration::minutes(10)), false, Some(T0)),
            ),
            (
                "success clears everything",
                once.clone(),
                Attempt::Obtained,
                (0, None, false, None),
            ),
        ];
        for (why, before, attempt, (failures, next, limited, since)) in rows {
            let rec = after_attempt(before, attempt, t1);
            assert_eq!(
                (
                    rec.failures,
                    rec.next_attempt,
                    rec.rate_limited,
                    rec.failing_since
                ),
                (failures, next, limited, since),
                "{why}"
            );
            assert_eq!(rec.last_attempt, Some(t1), "{why}");
            match attempt {
                Attempt::Obtained => {
                    assert_eq!(
                        (rec.last_success, rec.last_error),
                        (Some(t1), None),
                        "{why}"
                    )
                }
                Attempt::Failed { .. } => {
                    assert_eq!(rec.last_error.as_deref(), Some("boom"), "{why}")
                }
            }
        }
        // A record whose failures began before failing_since was kept (an old record) starts
        // counting the span now.
        let old = TargetRecord {
            failures: 3,
            ..TargetRecord::default()
        };
        let rec = after_attempt(old, failed(Backoff::Yes, None), t1);
        assert_eq!((rec.failures, rec.failing_since), (4, Some(t1)));
        assert_eq!(rec.next_attempt, Some(t1 + Duration::days(1)));
    }

    #[test]
    fn the_gate_waits_until_the_next_attempt_unless_forced() {
        let rec = after_attempt(
            TargetRecord::default(),
            failed(Backoff::RateLimited, Some(T0 + Duration::hours(1))),
            T0,
        );
        let w = gate(&rec, T0 + Duration::minutes(30), false).expect("waits");
        assert_eq!(w.until, T0 + Duration::hours(1));
        assert!(w.rate_limited);
        assert_eq!(
            w.to_string(),
            "not retried before 2027-03-01T13:00:00Z after 1 failed attempt(s) (use `reconcile --force` to retry now); last error: boom"
        );
        assert_eq!(
            gate(&rec, T0 + Duration::minutes(30), true),
            None,
            "--force"
        );
        assert_eq!(
            gate(&rec, T0 + Duration::hours(1), false),
            None,
            "time is up"
        );
        assert_eq!(gate(&TargetRecord::default(), T0, false), None, "no record");
    }

    #[test]
    fn a_wait_recorded_under_a_clock_that_was_ahead_is_not_kept_once_it_is_put_right() {
        // Failed at T0 + 60 days (the clock had jumped), to be retried 100 minutes later;
        // then the clock is put right.
        let ahead = T0 + Duration::days(60);
        let rec = after_attempt(
            after_attempt(
                after_attempt(TargetRecord::default(), failed(Backoff::Yes, None), ahead),
                failed(Backoff::Yes, None),
                ahead,
            ),
            failed(Backoff::Yes, None),
            ahead,
        );
        assert_eq!(rec.next_attempt, Some(ahead + Duration::minutes(100)));
        assert_eq!(
            gate(&rec, T0, false),
            None,
            "the clock was put right: asked at once"
        );
        // A clock a few seconds behind the one that wrote the record (another node of a
        // fleet) keeps the wait.
        let w = gate(&rec, ahead - Duration::seconds(5), false).expect("waits");
        assert_eq!(w.until, ahead + Duration::minutes(100));
        let w = gate(&rec, ahead - CLOCK_STEPPED_BACK, false).expect("waits");
        assert_eq!(w.until, ahead + Duration::minutes(100));
        // A clock that only moved forward: unchanged.
        let w = gate(&rec, ahead + Duration::minutes(1), false).expect("waits");
        assert_eq!(w.until, ahead + Duration::minutes(100));
    }
}
