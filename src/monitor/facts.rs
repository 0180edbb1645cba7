//! The facts every report is made of: for each target its state, its certificate in use, when
//! that is due for renewal and what its last attempts came to; and what the last run did.
//!
//! This is the one place monitoring learns about the state directory, and it learns it as
//! `status` does: one [`World`] (loaded once, read-only: no lock, no network, any user who can
//! read `live/`; or the world the run that just ended decided from) and the verdicts of
//! [`plan::plan`] on it, so that `check`, the metrics and `status` can never disagree about
//! what is due, waiting or expiring, nor with what the next run will do. Every run record
//! is read into the world through the store's one-file cache when it is current (ten
//! thousand small files cost more than the rest of the report); after a run, those it wrote
//! are taken as it wrote them. Facts come either from the run that just ended
//! ([`Facts::after_run`], nothing loaded twice) or from the state directory alone
//! ([`Facts::load`]). Each target's facts are made when asked for ([`Facts::targets`]).

use std::collections::BTreeMap;

use anyhow::Result;
use time::OffsetDateTime;

use crate::cert::CertSummary;
use crate::plan::{self, Policy, TargetPlan};
use crate::store::run::RunRecord;
use crate::store::{Store, TargetError, TargetRecord};
use crate::target::Target;
use crate::world::{Scope, World};

/// Where a target stands, in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetState {
    /// Its certificate is valid and not due for renewal.
    Valid,
    /// Its certificate is due for renewal, and no attempt has failed yet.
    Due,
    /// It needs a certificate and its last attempt failed.
    Failing,
    /// It needs a certificate and the CA put it off for its rate (a rate limit): not failing.
    Deferred,
    /// It has never had a certificate, and no attempt has failed yet.
    Missing,
    /// Its file under `desired/` cannot be used.
    Invalid,
}

impl TargetState {
    /// Every state, in the order reports list them.
    pub const ALL: [TargetState; 6] = [
        TargetState::Valid,
        TargetState::Due,
        TargetState::Failing,
        TargetState::Deferred,
        TargetState::Missing,
        TargetState::Invalid,
    ];

    /// The word `status`, `check` and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Valid => "valid",
            TargetState::Due => "due",
            TargetState::Failing => "failing",
            TargetState::Deferred => "deferred",
            TargetState::Missing => "missing",
            TargetState::Invalid => "invalid",
        }
    }
}

/// The state of a loadable target, from the planner's verdict `p` on it (whether it has a
/// certificate, whether it needs a new one now, whether it waits and why) and its run record.
/// An old failure of a target that needs nothing now (a window moved, another certificate
/// satisfies it) is not failing; a target that waits is failing or deferred as the planner's
/// wait says (its backoff, or the CA's rate), whether or not its wait has passed.
pub fn target_state(p: &plan::TargetPlan, record: &TargetRecord) -> TargetState {
    let has_cert = p.best.is_some();
    let rate_limited = p
        .waiting
        .as_ref()
        .map_or(record.rate_limited, |w| w.rate_limited);
    let failed = p.waiting.is_some() || record.failures > 0;
    match (p.needs_request, failed, rate_limited) {
        (false, _, _) if has_cert => TargetState::Valid,
        (_, true, true) => TargetState::Deferred,
        (_, true, false) => TargetState::Failing,
        _ if has_cert => TargetState::Due,
        _ => TargetState::Missing,
    }
}

/// Counts of targets by state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts(BTreeMap<TargetState, u64>);

impl Counts {
    /// Counts one more target in `state`.
    pub fn add(&mut self, state: TargetState) {
        *self.0.entry(state).or_default() += 1;
    }

    /// Targets in `state`.
    pub fn get(&self, state: TargetState) -> u64 {
        self.0.get(&state).copied().unwrap_or(0)
    }

    /// Targets in all.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `(state, count)` for every state, in [`TargetState::ALL`] order, zeros included.
    pub fn all(&self) -> impl Iterator<Item = (TargetState, u64)> + '_ {
        TargetState::ALL.into_iter().map(|s| (s, self.get(s)))
    }
}

/// One target as reports see it.
#[derive(Debug)]
pub struct TargetFacts<'a> {
    /// File name under `desired/`.
    pub file: &'a str,
    /// The target, `None` when its file cannot be used.
    pub target: Option<&'a Target>,
    /// Why the file cannot be used.
    pub error: Option<String>,
    /// The certificate in use (the best satisfying one), if any.
    pub cert: Option<&'a CertSummary>,
    /// When that certificate becomes due for renewal.
    pub renew_at: Option<OffsetDateTime>,
    /// Where the target stands.
    pub state: TargetState,
    /// What its attempts came to.
    pub record: TargetRecord,
}

impl TargetFacts<'_> {
    /// The target's first name (its file name when it has none: an invalid file).
    pub fn name(&self) -> String {
        self.target
            .and_then(|t| t.satisfy_names.first())
            .map_or_else(|| self.file.to_owned(), |n| n.to_string())
    }

    /// Its names, comma-separated.
    pub fn names(&self) -> String {
        self.target.map_or_else(String::new, |t| {
            t.satisfy_names
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

/// Everything reports are made of.
pub struct Facts {
    /// The time the facts are for.
    pub now: OffsetDateTime,
    /// The world they are decided from, every run record read.
    world: World,
    /// The planner's verdict on each target of `world`, in the same order.
    verdicts: Vec<TargetPlan>,
    /// The record of the last run, if any.
    pub last_run: Option<RunRecord>,
}

impl Facts {
    /// The facts at `now` from `world`, the world the run that just ended decided from (as
    /// it ended: with the certificates it obtained); its run records are read, or taken as
    /// the run wrote them.
    pub fn after_run(store: &Store, world: World, now: OffsetDateTime) -> Facts {
        Facts::of(store, world, now)
    }

    /// The facts at `now` from the state directory alone: the world `status` reads (no
    /// lock, no network; cached renewal windows only).
    pub fn load(store: &Store, now: OffsetDateTime) -> Result<Facts> {
        Ok(Facts::of(store, World::load(store, Scope::MONITOR)?, now))
    }

    fn of(store: &Store, mut world: World, now: OffsetDateTime) -> Facts {
        world.load_records(store);
        let policy = Policy {
            verdicts_only: true,
            ..Policy::default()
        };
        let verdicts = plan::plan(&world, now, &policy).targets;
        Facts {
            now,
            world,
            verdicts,
            last_run: store.last_run(),
        }
    }

    /// Every target, loadable or not, in file-name order, made one at a time.
    pub fn targets(&self) -> impl Iterator<Item = TargetFacts<'_>> + '_ {
        let mut good = self.world.targets.iter().enumerate().peekable();
        let mut bad = self.world.broken.iter().peekable();
        std::iter::from_fn(move || match (good.peek(), bad.peek()) {
            (Some((_, t)), Some(b)) if b.file < t.file => bad.next().map(broken),
            (Some(_), _) => good.next().map(|(i, t)| self.target(i, t)),
            (None, _) => bad.next().map(broken),
        })
    }

    /// Targets in all.
    pub fn target_count(&self) -> usize {
        self.world.targets.len() + self.world.broken.len()
    }

    fn target<'a>(&'a self, i: usize, t: &'a Target) -> TargetFacts<'a> {
        let p = &self.verdicts[i];
        let cert = p.best_in(&self.world.certs);
        let record = self.world.record(i).cloned().unwrap_or_default();
        TargetFacts {
            file: &t.file,
            target: Some(t),
            error: None,
            cert,
            renew_at: p.renew_at,
            state: target_state(p, &record),
            record,
        }
    }
}

fn broken(b: &TargetError) -> TargetFacts<'_> {
    TargetFacts {
        file: &b.file,
        target: None,
        error: Some(crate::cause::render(&b.error)),
        cert: None,
        renew_at: None,
        state: TargetState::Invalid,
        record: TargetRecord::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_of_a_target() {
        let rec = |failures: u32, rate_limited: bool| TargetRecord {
            failures,
            rate_limited,
            ..TargetRecord::default()
        };
        let until = time::macros::datetime!(2027-03-02 00:00 UTC);
        let wait = |rate_limited: bool| plan::backoff::Waiting {
            until,
            failures: 1,
            last_error: None,
            rate_limited,
        };
        use TargetState::*;
        // (has a certificate, needs a request, the planner's wait (rate limited), failures,
        // rate limited by the record) -> state
        let table = [
            (true, false, None, 0, false, Valid),
            // An old failure of a target that needs nothing now is history.
            (true, false, None, 3, false, Valid),
            (true, false, None, 1, true, Valid),
            (true, true, None, 0, false, Due),
            // Its wait has passed: the next run asks the CA, but the last attempt failed.
            (true, true, None, 2, false, Failing),
            (true, true, None, 1, true, Deferred),
            (false, true, None, 0, false, Missing),
            (false, true, None, 1, false, Failing),
            (false, true, None, 1, true, Deferred),
            // Waiting: as the planner's wait says.
            (true, true, Some(false), 1, false, Failing),
            (false, true, Some(false), 1, false, Failing),
            (true, true, Some(true), 1, true, Deferred),
            (false, true, Some(true), 1, true, Deferred),
        ];
        for (has_cert, needs, waiting, failures, limited, want) in table {
            let p = plan::TargetPlan {
                best: has_cert.then_some(0),
                renew_at: None,
                needs_request: needs,
                next_due: waiting.map(|_| until),
                waiting: waiting.map(wait),
            };
            assert_eq!(
                target_state(&p, &rec(failures, limited)),
                want,
                "{has_cert} {needs} {waiting:?} {failures} {limited}"
            );
        }
    }

    #[test]
    fn counts_list_every_state_in_order() {
        let mut c = Counts::default();
        c.add(TargetState::Failing);
        c.add(TargetState::Valid);
        c.add(TargetState::Valid);
        let all: Vec<_> = c.all().map(|(s, n)| (s.as_str(), n)).collect();
        assert_eq!(
            all,
            [
                ("valid", 2),
                ("due", 0),
                ("failing", 1),
                ("deferred", 0),
                ("missing", 0),
                ("invalid", 0)
            ]
        );
        assert_eq!(c.total(), 3);
    }
}
