//! The planner: every renewal and relinking decision, as pure functions of their inputs.
//!
//! Nothing here touches the disk, the network or the clock: `now` is passed in, so the rules
//! (acmetool's "satisfies", its renewal span, its relink disjunction) are table-tested below
//! and the reconciler only carries out what these functions return. [`plan`] decides all of
//! it for one [`World`] at once, so every command that shows or does something (status,
//! cull) shows or does what the same decision said.

pub mod ari;
pub mod backoff;
pub mod cull;
pub mod edit;
pub mod work;

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

use crate::cert::{CertSet, CertSummary, best_cert, best_position};
use crate::target::Target;
use crate::world::World;

/// What a command asks of the planner besides the world and the time.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `reconcile --force`: a target backing off after failures is due anyway.
    pub force: bool,
    /// Decide what `cull` deletes ([`Plan::cull`]).
    pub cull: bool,
    /// Decide the work of a run (`reconcile`): downloads, renewal information, orders,
    /// deferrals ([`work::Work`]).
    pub run: bool,
    /// `reconcile --only`: order only for these targets, by file name or one of their
    /// names (empty: all).
    pub only: Vec<String>,
    /// The targets' verdicts alone (`check` and the metrics): no relinks decided.
    pub verdicts_only: bool,
}

/// Everything decided from one world at one time.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The time it was decided for.
    pub at: OffsetDateTime,
    /// One verdict per target of the world, in the same order.
    pub targets: Vec<TargetPlan>,
    /// The `live/` links to change, on the world as it is (not with [`Policy::run`]: a run
    /// relinks after its orders, with [`plan_relinks`] on the certificates it ends with).
    pub relinks: Vec<Relink>,
    /// With [`Policy::cull`]: what to delete once the relinks are made.
    pub cull: Option<cull::CullPlan>,
    /// With [`Policy::run`]: the downloads, renewal information, orders and deferrals of a
    /// run, and what the planner lacked to decide them.
    pub work: work::Work,
}

/// Decides, for `world` at `now`, each target's certificate, renewal time and next due time,
/// the relinks, (if asked) the cull and (if asked) the work of a run. One pass over the
/// targets; pure.
pub fn plan(world: &World, now: OffsetDateTime, policy: &Policy) -> Plan {
    let targets: Vec<TargetPlan> = world
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut p = plan_target_ari(t, &world.certs, now, &world.ari);
            if p.needs_request {
                // Due: asked as soon as its backoff allows (known when its record is read).
                p.waiting = world
                    .record(i)
                    .and_then(|r| backoff::gate(r, now, policy.force));
                p.next_due = Some(p.waiting.as_ref().map_or(now, |w| w.until));
            }
            p
        })
        .collect();
    let work = if policy.run {
        work::work(world, &targets, now, &policy.only)
    } else {
        work::Work::default()
    };
    // A run relinks after its orders, on the certificates it ends with: deciding them now
    // would be a pass over every target for nothing.
    let relinks = if policy.run || policy.verdicts_only {
        Vec::new()
    } else {
        plan_relinks(&world.targets, &world.certs, &world.inv.live, now)
    };
    let cull = policy.cull.then(|| {
        let mut live = world.inv.live.clone();
        for r in &relinks {
            live.insert(r.name.clone(), r.cert_id.clone());
        }
        cull::plan_cull(world, &live, now)
    });
    Plan {
        at: now,
        targets,
        relinks,
        cull,
        work,
    }
}

/// The planner's verdict for one target.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetPlan {
    /// Best satisfying certificate, if any: its position in the world's certificates
    /// ([`TargetPlan::best_in`]), not a copy of its id.
    pub best: Option<usize>,
    /// When `best` becomes due for renewal.
    pub renew_at: Option<OffsetDateTime>,
    /// A new certificate must be requested now.
    pub needs_request: bool,
    /// When the target is next due: `renew_at` while its certificate is good, else when a
    /// request may be made (now, or when its backoff ends; see [`plan`]).
    pub next_due: Option<OffsetDateTime>,
    /// A due target whose run record says it waits (backoff, or the CA's rate): until when
    /// and why ([`backoff::gate`]). `None` also while its record is not read.
    pub waiting: Option<backoff::Waiting>,
}

impl TargetPlan {
    /// The best satisfying certificate, out of `certs` (those the verdict was decided on).
    pub fn best_in<'a>(&self, certs: &'a CertSet) -> Option<&'a CertSummary> {
        self.best.and_then(|i| certs.at(i))
    }
}

/// Decides whether `target` needs a new certificate at `now`, by the local rule alone.
pub fn plan_target(target: &Target, certs: &CertSet, now: OffsetDateTime) -> TargetPlan {
    plan_target_ari(target, certs, now, &BTreeMap::new())
}

/// Decides whether `target` needs a new certificate at `now`; `ari` holds the CA's renewal
/// windows by certificate id, which outrank the local rule ([`ari::due_at`]).
pub fn plan_target_ari(
    target: &Target,
    certs: &CertSet,
    now: OffsetDateTime,
    ari: &BTreeMap<String, ari::AriRecord>,
) -> TargetPlan {
    match best_position(target, certs, now).and_then(|i| Some((i, certs.at(i)?))) {
        Some((position, best)) => {
            let renew_at = ari::due_at(
                best,
                target.margin_days,
                ari.get(&best.id),
                ari::stable_jitter(&best.id),
            );
            // A certificate from another profile than the target asks for is due now.
            let wrong_profile = target.profile.is_some() && best.profile != target.profile;
            let renew_at = if wrong_profile {
                renew_at.min(now)
            } else {
                renew_at
            };
            let needs_request = now >= renew_at;
            TargetPlan {
                best: Some(position),
                renew_at: Some(renew_at),
                needs_request,
                next_due: Some(if needs_request { now } else { renew_at }),
                waiting: None,
            }
        }
        None => TargetPlan {
            best: None,
            renew_at: None,
            needs_request: true,
            next_due: Some(now),
            waiting: None,
        },
    }
}

/// Whether `cert` is in the last sixth of its lifetime at `now` (or past its end): renewal
/// was due long before (at a third, or the CA's window), so if renewing it fails now a person
/// has to look, however transient the cause seems.
pub fn in_last_sixth(cert: &CertSummary, now: OffsetDateTime) -> bool {
    let lifetime = cert.not_after - cert.not_before;
    now >= cert.not_after - lifetime / 6
}

/// How long an order whose certificate cannot be downloaded is retried before it is given up
/// (CAs let unfinished orders expire after about a week).
pub const ORDER_GIVE_UP: Duration = Duration::days(7);

/// Why an earlier order's certificate could not be downloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownloadFailure {
    /// The CA refused for good: no such order or account, or the request is not allowed.
    Refused,
    /// Anything that may pass: network, timeouts, the CA's own errors, rate limits.
    Transient,
}

/// Whether to give up on an order recorded at `recorded` whose download just failed: at
/// once when the CA refused for good, else once it is older than [`ORDER_GIVE_UP`].
pub fn give_up_order(
    failure: DownloadFailure,
    recorded: OffsetDateTime,
    now: OffsetDateTime,
) -> bool {
    failure == DownloadFailure::Refused || now - recorded > ORDER_GIVE_UP
}

/// How long before a certificate expires its target's next attempt must be allowed for a
/// deferral to be silent: runs come daily (a cron job at a random time), so the run that may
/// make the attempt can come up to a day after the time the CA allows.
pub const DEFERRAL_HEADROOM: Duration = Duration::days(1);

/// Whether a target whose next attempt the CA put off until `next_attempt` (a rate limit, an
/// overload) fails the run instead of being deferred: its certificate `best` (the one in use)
/// expires before that attempt can renew it ([`DEFERRAL_HEADROOM`]), or has expired at `now`.
/// A deferral is silent by design; one that outlives the certificate in use must reach a
/// person, whatever the CA asked. A target without any certificate is not covered here:
/// nothing it serves can lapse.
pub fn deferral_outlives(
    best: Option<&CertSummary>,
    next_attempt: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let best = best?;
    (best.not_after <= now || best.not_after <= next_attempt + DEFERRAL_HEADROOM)
        .then_some(best.not_after)
}

/// Orders targets for the disjunction: priority (high first), then number of names (more
/// first), then file name, so equal targets are resolved the same way every run.
pub fn disjunction_order(targets: &[Target]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..targets.len()).collect();
    idx.sort_by(|&a, &b| {
        let (ta, tb) = (&targets[a], &targets[b]);
        tb.priority
            .cmp(&ta.priority)
            .then_with(|| tb.satisfy_names.len().cmp(&ta.satisfy_names.len()))
            .then_with(|| ta.file.cmp(&tb.file))
    });
    idx
}

/// One `live/` link that must be (re)pointed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relink {
    /// Link name under `live/` (`host` or `host:label`).
    pub name: String,
    /// Certificate id it must point at.
    pub cert_id: String,
}

/// The relink pass at `now`: map each live name to the first target claiming it, and return
/// the links whose best certificate differs from what `current` points at. Targets without a
/// satisfying certificate keep their old link (no entry).
pub fn plan_relinks(
    targets: &[Target],
    certs: &CertSet,
    current: &BTreeMap<String, String>,
    now: OffsetDateTime,
) -> Vec<Relink> {
    let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
    for i in disjunction_order(targets) {
        for name in targets[i].live_names() {
            claimed.entry(name).or_insert(i);
        }
    }
    let mut best_of: BTreeMap<usize, Option<&CertSummary>> = BTreeMap::new();
    let mut out = Vec::new();
    for (name, i) in claimed {
        let best = *best_of
            .entry(i)
            .or_insert_with(|| best_cert(&targets[i], certs, now));
        if let Some(best) = best
            && current.get(&name) != Some(&best.id)
        {
            out.push(Relink {
                name,
                cert_id: best.id.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{newer, satisfies};
    use crate::keys::KeyFamily;
    use crate::target::RawTarget;
    use time::macros::datetime;

    fn target(file: &str, yaml: &str) -> Target {
        let raw = RawTarget::parse(yaml).expect("yaml");
        Target::resolve(file, &raw, &RawTarget::default()).expect("resolves")
    }

    fn cert(id: &str, names: &[&str], nb: OffsetDateTime, days: i64) -> CertSummary {
        CertSummary {
            id: id.to_owned(),
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            not_before: nb,
            not_after: nb + Duration::days(days),
            key_family: Some(KeyFamily::Ecdsa),
            has_private_key: true,
            key_id: format!("key-{id}"),
            revoked: false,
            profile: None,
            ari_id: None,
        }
    }

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn the_last_sixth_of_a_lifetime() {
        // 90 days: the last sixth is the last 15 days; 6 days: the last 24 hours.
        let c = cert("a", &["a.b"], T0, 90);
        for (day, inside) in [
            (0, false),
            (60, false),
            (74, false),
            (75, true),
            (89, true),
            (95, true),
        ] {
            assert_eq!(
                in_last_sixth(&c, T0 + Duration::days(day)),
                inside,
                "day {day}"
            );
        }
        let c = cert("b", &["a.b"], T0, 6);
        assert!(!in_last_sixth(&c, T0 + Duration::hours(119)));
        assert!(in_last_sixth(&c, T0 + Duration::hours(120)));
    }

    #[test]
    fn renewal_rule_table() {
        // (lifetime days, margin days, days after issuance, due?)
        let table = [
            (90, 30, 59, false),
            (90, 30, 60, true),  // 30 days left = min(30, 30)
            (90, 10, 79, false), // margin 10 < 30: renew at 10 left
            (90, 10, 80, true),
            (90, 60, 60, true), // margin can't exceed 1/3 of lifetime
            (90, 60, 59, false),
            (6, 30, 2, false), // 6-day cert: renew at half its lifetime
            (6, 30, 3, true),
            (45, 30, 30, true), // 45-day cert: 15 left
            (45, 30, 29, false),
            (90, 0, 89, false), // margin 0: only at expiry
            (90, 0, 90, true),
        ];
        for (life, margin, after, due) in table {
            let mut t = target("t", "satisfy:\n  names: [a.b]\n");
            t.margin_days = margin;
            let c = cert("c", &["a.b"], T0, life);
            let set = CertSet::from(vec![c]);
            let p = plan_target(&t, &set, T0 + Duration::days(after));
            assert_eq!(
                p.needs_request, due,
                "life={life} margin={margin} after={after}"
            );
            assert_eq!(p.best_in(&set).map(|c| c.id.as_str()), Some("c"));
        }
    }

    #[test]
    fn ari_window_outranks_local_rule() {
        let t = target("t", "satisfy:\n  names: [a.b]\n");
        let c = cert("c", &["a.b"], T0, 90);
        let window = |s: i64, e: i64| crate::acme::Window {
            start: T0 + Duration::days(s),
            end: T0 + Duration::days(e),
        };
        let rec = |w| ari::AriRecord::new("x.y", w, std::time::Duration::ZERO, T0);
        // (window, day of the run, due?)
        let table = [
            (window(1, 2), 10, true),    // window in the past (revocation): at once
            (window(70, 75), 65, false), // before the window, though past the local rule
            (window(70, 75), 75, true),  // window over: due whatever the jitter
            (window(20, 21), 21, true),  // earlier than the local rule
            (window(20, 21), 19, false),
        ];
        for (w, day, due) in table {
            let mut ari = BTreeMap::new();
            ari.insert("c".to_owned(), rec(w));
            let p = plan_target_ari(
                &t,
                &CertSet::from(vec![c.clone()]),
                T0 + Duration::days(day),
                &ari,
            );
            assert_eq!(p.needs_request, due, "{w:?} day {day}");
        }
        // A record for another certificate changes nothing.
        let mut ari = BTreeMap::new();
        ari.insert("other".to_owned(), rec(window(1, 2)));
        assert!(
            !plan_target_ari(&t, &CertSet::from(vec![c]), T0 + Duration::days(10), &ari)
                .needs_request
        );
    }

    #[test]
    fn no_cert_means_request() {
        let t = target("t", "satisfy:\n  names: [a.b]\n");
        let p = plan_target(&t, &CertSet::default(), T0);
        assert_eq!(
            p,
            TargetPlan {
                best: None,
                renew_at: None,
                needs_request: true,
                next_due: Some(T0),
                waiting: None,
            }
        );
    }

    #[test]
    fn satisfies_table() {
        let t = target(
            "t",
            "satisfy:\n  names: [a.b, c.d]\n  key:\n    type: ecdsa\n",
        );
        let good = cert("g", &["c.d", "a.b", "x.y"], T0, 90);
        assert!(satisfies(&good, &t));
        let mut c = good.clone();
        c.names.pop();
        c.names.retain(|n| n != "c.d");
        assert!(!satisfies(&c, &t), "missing a name");
        let mut c = good.clone();
        c.revoked = true;
        assert!(!satisfies(&c, &t), "revoked");
        let mut c = good.clone();
        c.has_private_key = false;
        assert!(!satisfies(&c, &t), "no key");
        let mut c = good.clone();
        c.key_family = Some(KeyFamily::Rsa);
        assert!(!satisfies(&c, &t), "wrong key type");
        // Expired certificates still satisfy (acmetool); expiry only triggers renewal.
        let old = cert("o", &["a.b", "c.d"], T0 - Duration::days(400), 90);
        assert!(satisfies(&old, &t));
    }

    #[test]
    fn indexed_best_agrees_with_a_linear_scan() {
        // Certificates over a small name space (shared names, repeats, revoked, keyless);
        // every target's indexed best must be what scanning all certificates finds.
        let pool = ["a.b", "c.d", "e.f", "g.h", "*.a.b"];
        let mut certs = Vec::new();
        for i in 0..60_usize {
            let names: Vec<&str> = (0..(1 + i % 3))
                .map(|k| pool[(i * 7 + k * 3) % pool.len()])
                .collect();
            let mut c = cert(
                &format!("c{i:02}"),
                &names,
                T0 + Duration::days((i % 5) as i64),
                90,
            );
            c.revoked = i % 11 == 0;
            c.has_private_key = i % 13 != 0;
            certs.push(c);
        }
        let set = CertSet::from(certs.clone());
        for (i, a) in pool.iter().enumerate() {
            for b in pool.iter().skip(i) {
                let t = target("t", &format!("satisfy:\n  names: [\"{a}\", \"{b}\"]\n"));
                let linear = certs
                    .iter()
                    .filter(|c| satisfies(c, &t))
                    .max_by(|x, y| newer(x, y))
                    .map(|c| c.id.clone());
                let now = T0 + Duration::days(100);
                assert_eq!(
                    best_cert(&t, &set, now).map(|c| c.id.clone()),
                    linear,
                    "{a} {b}"
                );
            }
        }
        assert_eq!(set.get("c07").map(|c| c.id.as_str()), Some("c07"));
        assert!(set.get("nope").is_none());
    }

    #[test]
    fn a_shorter_lived_replacement_is_the_best_and_is_not_replaced_again() {
        // A 90-day certificate, then a 6-day one from the short-lived profile (or after the
        // CA asked for a replacement): the newer one is used and is not due yet.
        let mut t = target(
            "t",
            "satisfy:\n  names: [a.b]\nrequest:\n  profile: shortlived\n",
        );
        t.margin_days = 30;
        let old = cert("old", &["a.b"], T0, 90);
        let mut new = cert("new", &["a.b"], T0 + Duration::days(10), 6);
        new.profile = Some("shortlived".into());
        let set = CertSet::from(vec![old, new]);
        let now = T0 + Duration::days(11);
        assert_eq!(best_cert(&t, &set, now).map(|c| c.id.as_str()), Some("new"));
        let p = plan_target(&t, &set, T0 + Duration::days(11));
        assert_eq!(p.best_in(&set).map(|c| c.id.as_str()), Some("new"));
        assert!(!p.needs_request, "{p:?}");
        let relinks = plan_relinks(std::slice::from_ref(&t), &set, &BTreeMap::new(), now);
        assert_eq!(relinks[0].cert_id, "new");
    }

    /// `plan` says per target what `plan_target_ari` says, with the backoff in `next_due`;
    /// its relinks are `plan_relinks`'s and its cull is decided on the links after them.
    #[test]
    fn one_plan_agrees_with_the_rules_it_is_made_of() {
        use crate::plan::backoff::{Attempt, Backoff, after_attempt};
        use crate::store::TargetRecord;
        let now = T0 + Duration::days(80);
        let mut world = World {
            targets: vec![
                target("a", "satisfy:\n  names: [a.b]\n"),
                target("c", "satisfy:\n  names: [c.d]\n"),
                target("e", "satisfy:\n  names: [e.f]\n"),
            ],
            certs: CertSet::new(vec![
                cert("old-a", &["a.b"], T0 - Duration::days(100), 90),
                cert("new-a", &["a.b"], T0 + Duration::days(60), 90),
                cert("c1", &["c.d"], T0, 90),
            ]),
            ..World::default()
        };
        world.inv.live.insert("a.b".into(), "old-a".into());
        world.inv.live.insert("c.d".into(), "c1".into());
        let failed = Attempt::Failed {
            error: "refused",
            backoff: Backoff::Yes,
            retry_at: None,
        };
        let backing_off = after_attempt(TargetRecord::default(), failed, now);
        world.records = vec![
            Some(TargetRecord::default()),
            Some(TargetRecord::default()),
            Some(backing_off),
        ];
        let p = plan(&world, now, &Policy::default());
        for (t, got) in world.targets.iter().zip(&p.targets) {
            let rule = plan_target_ari(t, &world.certs, now, &world.ari);
            assert_eq!(got.best, rule.best, "{}", t.file);
            assert_eq!(got.needs_request, rule.needs_request, "{}", t.file);
        }
        // a: renews in the future; c: 80 days into 90, due now; e: no certificate, waits
        // for its backoff (one minute after its failure).
        assert_eq!(p.targets[0].next_due, p.targets[0].renew_at);
        assert_eq!(p.targets[1].next_due, Some(now));
        assert_eq!(p.targets[2].next_due, Some(now + Duration::minutes(1)));
        let forced = plan(
            &world,
            now,
            &Policy {
                force: true,
                ..Policy::default()
            },
        );
        assert_eq!(forced.targets[2].next_due, Some(now));
        assert_eq!(
            p.relinks,
            plan_relinks(&world.targets, &world.certs, &world.inv.live, now)
        );
        assert_eq!(p.cull, None);
        // The cull sees a.b already on new-a: the expired old-a is no longer linked.
        let culled = plan(
            &world,
            now,
            &Policy {
                cull: true,
                ..Policy::default()
            },
        );
        let cull = culled.cull.expect("asked for");
        assert_eq!(cull.certs, ["old-a"]);
    }

    #[test]
    fn a_certificate_of_another_profile_is_due_now() {
        let t = target(
            "t",
            "satisfy:\n  names: [a.b]\nrequest:\n  profile: shortlived\n",
        );
        let set = CertSet::from(vec![cert("c", &["a.b"], T0, 90)]);
        let now = T0 + Duration::days(1);
        let p = plan_target(&t, &set, now);
        assert!(p.needs_request, "{p:?}");
        // Not a renewal time weeks ahead next to "due" (status shows it).
        assert_eq!(p.renew_at, Some(now), "{p:?}");
    }

    #[test]
    fn a_certificate_not_valid_yet_is_never_the_best() {
        // The working certificate, and a newer one whose validity starts tomorrow (a CA's
        // clock, or a hostile CA): the working one stays the best and stays linked.
        let t = target("t", "satisfy:\n  names: [a.b]\n");
        let now = T0 + Duration::days(10);
        let working = cert("working", &["a.b"], T0, 90);
        let future = cert("future", &["a.b"], now + Duration::days(1), 90);
        let set = CertSet::from(vec![working, future.clone()]);
        assert_eq!(
            best_cert(&t, &set, now).map(|c| c.id.as_str()),
            Some("working")
        );
        let p = plan_target(&t, &set, now);
        assert_eq!(p.best_in(&set).map(|c| c.id.as_str()), Some("working"));
        let mut current = BTreeMap::new();
        current.insert("a.b".to_owned(), "future".to_owned());
        assert_eq!(
            plan_relinks(std::slice::from_ref(&t), &set, &current, now),
            [Relink {
                name: "a.b".into(),
                cert_id: "working".into()
            }],
            "a link to a certificate not valid yet goes back to the working one"
        );
        // Alone, it is no certificate at all (a new one is requested), until it is valid.
        let alone = CertSet::from(vec![future]);
        assert_eq!(plan_target(&t, &alone, now).best, None);
        assert!(plan_target(&t, &alone, now).needs_request);
        let later = now + Duration::days(2);
        assert_eq!(
            best_cert(&t, &alone, later).map(|c| c.id.as_str()),
            Some("future")
        );
    }

    #[test]
    fn a_deferral_that_outlives_the_certificate_fails() {
        let now = T0 + Duration::days(80);
        // Expires on day 90.
        let c = cert("c", &["a.b"], T0, 90);
        let day = |d: i64| T0 + Duration::days(d);
        // (next attempt the CA allows, fails?)
        let table = [
            (day(81), false),
            (day(88), false),
            // A day before expiry: the daily run that makes the attempt may come too late.
            (day(89), true),
            (day(95), true),
            (day(87) + Duration::hours(1), false),
        ];
        for (next, fails) in table {
            assert_eq!(
                deferral_outlives(Some(&c), next, now).is_some(),
                fails,
                "next attempt {next}"
            );
        }
        assert_eq!(deferral_outlives(Some(&c), day(95), now), Some(day(90)));
        // Already expired: fails whatever the CA's time.
        assert!(deferral_outlives(Some(&c), day(91), day(91)).is_some());
        assert!(deferral_outlives(Some(&c), now, day(100)).is_some());
        // No certificate: nothing can lapse, the deferral stays one.
        assert_eq!(deferral_outlives(None, day(95), now), None);
    }

    #[test]
    fn best_is_latest_not_after_with_id_tie_break() {
        let t = target("t", "satisfy:\n  names: [a.b]\n");
        let certs = [
            cert("b", &["a.b"], T0, 90),
            cert("a", &["a.b"], T0, 90),
            cert("z", &["a.b"], T0 - Duration::days(1), 90),
        ];
        assert_eq!(
            best_cert(&t, &CertSet::from(certs.to_vec()), T0 + Duration::days(1))
                .map(|c| c.id.as_str()),
            Some("a")
        );
    }

    #[test]
    fn relink_disjunction_priority_then_names_then_file() {
        let targets = vec![
            target("small", "satisfy:\n  names: [a.b]\n"),
            target("big", "satisfy:\n  names: [a.b, c.d]\n"),
            target("prio", "satisfy:\n  names: [c.d]\npriority: 10\n"),
            target("tie2", "satisfy:\n  names: [e.f]\n"),
            target("tie1", "satisfy:\n  names: [e.f]\n"),
            target("nocert", "satisfy:\n  names: [g.h]\n"),
            target("lab", "satisfy:\n  names: [a.b]\nlabel: ecc\n"),
        ];
        let certs = vec![
            cert("c-small", &["a.b"], T0, 90),
            cert("c-big", &["a.b", "c.d"], T0 - Duration::days(1), 90),
            cert("c-prio", &["c.d"], T0 - Duration::days(2), 90),
            cert("c-e1", &["e.f"], T0 - Duration::days(3), 90),
        ];
        let mut current = BTreeMap::new();
        current.insert("g.h".to_owned(), "old".to_owned());
        current.insert("a.b:ecc".to_owned(), "c-small".to_owned());
        let relinks = plan_relinks(
            &targets,
            &CertSet::from(certs),
            &current,
            T0 + Duration::days(1),
        );
        let got: Vec<_> = relinks
            .iter()
            .map(|r| (r.name.as_str(), r.cert_id.as_str()))
            .collect();
        // a.b -> "big" (more names) whose best is c-small? No: c-small lacks c.d, so c-big.
        // c.d -> "prio" (priority 10): its best is the latest cert with c.d, c-big.
        // e.f -> tie1 (file-name order); both have the same best cert anyway.
        // g.h keeps its old link (no satisfying cert); a.b:ecc already correct.
        assert_eq!(got, [("a.b", "c-big"), ("c.d", "c-big"), ("e.f", "c-e1")]);
    }

    #[test]
    fn disjunction_order_is_deterministic() {
        let targets = vec![
            target("b", "satisfy:\n  names: [x.y]\n"),
            target("a", "satisfy:\n  names: [x.y]\n"),
        ];
        assert_eq!(disjunction_order(&targets), vec![1, 0]);
    }

    #[test]
    fn orders_are_given_up_when_refused_or_a_week_old() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let refused = DownloadFailure::Refused;
        let transient = DownloadFailure::Transient;
        assert!(give_up_order(refused, now, now));
        assert!(!give_up_order(transient, now, now));
        assert!(!give_up_order(transient, now - Duration::days(7), now));
        assert!(give_up_order(
            transient,
            now - Duration::days(7) - Duration::seconds(1),
            now
        ));
        // A recorded time in the future (clock moved back) is retried, not given up.
        assert!(!give_up_order(transient, now + Duration::days(30), now));
    }
}
