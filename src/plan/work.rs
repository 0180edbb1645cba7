//! The work of a run: what `reconcile` will do for one world at one time — downloads to
//! finish, renewal information to ask, orders to place, due targets left for later and why —
//! decided here so that the executor only carries it out and `status` can show the same
//! decision.
//!
//! A few inputs are read only when a decision needs them (the run records of due targets,
//! the CA that issued a certificate, a CA's "no renewalInfo" stamp): at ten thousand targets
//! reading them all would cost an idle run more than everything else. The planner lists what
//! it lacked in [`Needs`]; the executor reads exactly that into the world and plans again, so
//! every decision is still a pure function of a world.

use std::fmt;
use std::path::PathBuf;

use time::OffsetDateTime;

use crate::acme::ChallengeKind;
use crate::cert::CertSummary;
use crate::keys::KeySpec;
use crate::plan::ari;
use crate::plan::backoff::Waiting;
use crate::store::CertState;
use crate::target::Target;
pub use crate::world::Needs;
use crate::world::World;

/// Where a group of requests goes: one HTTP client (trusted roots) and one account session
/// each. Orders run in this key's order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CaKey {
    /// The ACME directory URL.
    pub provider: String,
    /// Extra roots trusted for its TLS (`request.provider-ca-bundle`).
    pub roots: Option<PathBuf>,
}

/// An earlier order whose certificate was never downloaded (an "uncached" directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// The certificate directory.
    pub cert_id: String,
    /// The order URL, if it was recorded.
    pub order_url: Option<String>,
    /// The account that placed it (`<urlpart>/<keyid>` under `accounts/`), if recorded.
    pub account: Option<String>,
    /// Ask for the CA's alternate chains: a target at the account's CA prefers one.
    pub alternates: bool,
}

/// Renewal information (RFC 9773) to ask one CA for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalQuery {
    /// The CA that issued the certificates (a fallback's certificate is known only there).
    pub ca: CaKey,
    /// (certificate id, ARI id), by first target in file order.
    pub certs: Vec<(String, String)>,
}

/// Which key a new certificate gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChoice {
    /// The key `keys/<id>` (`request.key.id`).
    Reuse(String),
    /// A new key of this kind.
    Generate(KeySpec),
}

/// A certificate to order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// Index into [`World::targets`].
    pub target: usize,
    /// The CA asked first (a fallback is asked only if it cannot issue in this run).
    pub ca: CaKey,
    /// The ARI id of the certificate this one replaces: only when that CA gave it a window,
    /// so it knows the certificate ([`replaces`]).
    pub replaces: Option<String>,
    /// The key.
    pub key: KeyChoice,
    /// The ACME profile to order with.
    pub profile: Option<String>,
    /// Issuer names of the preferred chain (empty: the default chain, no alternates asked).
    pub preferred_chain: Vec<String>,
    /// The challenge types allowed, in preference order.
    pub methods: Vec<ChallengeKind>,
    /// The target has a certificate already: what it gets is a renewal.
    pub renewal: bool,
}

/// Why a due target is not ordered for in this run.
#[derive(Clone, Debug, PartialEq)]
pub enum Why {
    /// Backing off after failed attempts (a failure of the run).
    BackingOff(Waiting),
    /// The CA refused for its rate until then (not a failure of the run).
    RateLimited(Waiting),
}

impl Why {
    /// Until when the target waits.
    pub fn until(&self) -> OffsetDateTime {
        match self {
            Why::BackingOff(w) | Why::RateLimited(w) => w.until,
        }
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::BackingOff(w) | Why::RateLimited(w) => w.fmt(f),
        }
    }
}

/// A due target left for a later run.
#[derive(Clone, Debug, PartialEq)]
pub struct Deferral {
    /// Index into [`World::targets`].
    pub target: usize,
    /// Why, and until when.
    pub why: Why,
}

/// The work of a run ([`super::Plan`]'s part that only `reconcile` carries out).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Work {
    /// Earlier orders whose certificate to download, by certificate id.
    pub downloads: Vec<Download>,
    /// Renewal information to ask, by CA.
    pub renewal_info: Vec<RenewalQuery>,
    /// Certificates to order, by CA (in [`CaKey`] order), then by target file.
    pub orders: Vec<Order>,
    /// Due targets not ordered for in this run, by target file.
    pub deferred: Vec<Deferral>,
    /// What the planner lacked; while not empty, `orders`, `deferred` and `renewal_info` are
    /// not final.
    pub needs: Needs,
}

/// Whether the target `t` is selected by `only` (empty: all): by file name or one of its names.
pub fn selected(t: &Target, only: &[String]) -> bool {
    only.is_empty()
        || only
            .iter()
            .any(|o| &t.file == o || t.satisfy_names.iter().any(|n| n.as_str() == o))
}

/// The selectors of `only` that name no target of `world`, loadable or broken.
pub fn unknown_selectors<'a>(world: &World, only: &'a [String]) -> Vec<&'a str> {
    only.iter()
        .filter(|o| {
            !world
                .targets
                .iter()
                .any(|t| selected(t, std::slice::from_ref(o)))
                && !world.broken.iter().any(|b| &b.file == *o)
        })
        .map(String::as_str)
        .collect()
}

/// The ARI id an order at `provider` names as replaced for the certificate `best` (its
/// position in [`World::certs`]): only when that CA issued it (or its issuer is unknown) and
/// gave it a window (RFC 9773 §5), so the CA knows it. `None` also while the issuer is not
/// read yet (see [`Needs::issuers`]).
pub fn replaces(world: &World, best: usize, provider: &str) -> Option<String> {
    let issuer = world.issuer(best)?;
    let id = &world.certs.at(best)?.id;
    issuer
        .is_none_or(|p| p == provider)
        .then(|| world.ari.get(id).map(|r| r.ari_id.clone()))
        .flatten()
}

/// The CAs whose renewal information can be asked: those this machine has an account at
/// (the questions go through its login, see `account::accounts_for`: an account at
/// Let's Encrypt's old v1 directory serves its current one).
pub fn askable_cas(world: &World) -> Vec<&str> {
    let mut cas: Vec<&str> = Vec::new();
    for a in &world.inv.accounts {
        for ca in crate::target::directories_served(&a.directory_url) {
            if !cas.contains(&ca) {
                cas.push(ca);
            }
        }
    }
    cas
}

/// Decides the work of a run over `world` at `now`, given each target's verdict `verdicts`
/// (the renewal rule and the backoff gate, [`super::plan`]); `only` as `reconcile --only`.
pub(super) fn work(
    world: &World,
    verdicts: &[super::TargetPlan],
    now: OffsetDateTime,
    only: &[String],
) -> Work {
    let mut w = Work {
        downloads: downloads(world),
        ..Work::default()
    };
    renewal_queries(world, verdicts, now, &mut w);
    for (i, (t, v)) in world.targets.iter().zip(verdicts).enumerate() {
        if !(v.needs_request && selected(t, only)) {
            continue;
        }
        if world.record(i).is_none() {
            w.needs.records.push(i);
            continue;
        }
        if let Some(waiting) = v.waiting.clone() {
            let why = if waiting.rate_limited {
                Why::RateLimited(waiting)
            } else {
                Why::BackingOff(waiting)
            };
            w.deferred.push(Deferral { target: i, why });
            continue;
        }
        if let Some(b) = v.best
            && world.issuer(b).is_none()
        {
            w.needs.issuers.push(b);
        }
        w.orders.push(order(world, i, v.best));
    }
    // Stable: targets keep their file order within a CA.
    w.orders.sort_by(|a, b| a.ca.cmp(&b.ca));
    w
}

/// The order for target `i`, whose certificate in use is `best` (a position in
/// [`World::certs`]).
fn order(world: &World, i: usize, best: Option<usize>) -> Order {
    let t = &world.targets[i];
    Order {
        target: i,
        ca: CaKey {
            provider: t.provider.clone(),
            roots: t.provider_ca_bundle.clone(),
        },
        replaces: best.and_then(|b| replaces(world, b, &t.provider)),
        key: match &t.key_id {
            Some(id) => KeyChoice::Reuse(id.clone()),
            None => KeyChoice::Generate(t.key),
        },
        profile: t.profile.clone(),
        preferred_chain: t.preferred_chain.clone(),
        methods: t.challenge.types.clone(),
        renewal: best.is_some(),
    }
}

/// Every uncached certificate directory, with what downloading it takes.
fn downloads(world: &World) -> Vec<Download> {
    world
        .inv
        .certs
        .iter()
        .filter(|c| matches!(c.state, CertState::Uncached))
        .map(|c| {
            let provider = c.account.as_ref().and_then(|a| {
                world
                    .inv
                    .accounts
                    .iter()
                    .find(|x| &x.id == a)
                    .map(|x| x.directory_url.as_str())
            });
            Download {
                cert_id: c.id.clone(),
                order_url: c.url.clone(),
                account: c.account.clone(),
                alternates: provider.is_some_and(|p| {
                    world
                        .targets
                        .iter()
                        .any(|t| t.provider == p && !t.preferred_chain.is_empty())
                }),
            }
        })
        .collect()
}

/// The renewal information to ask: each target's certificate in use (once), if it has an ARI
/// id, has not expired, its cached answer is due for a refresh ([`ari::fetch_due`]) and no
/// backoff after unusable answers holds it ([`ari::backoff_passed`]), at the CA that issued
/// it, if this machine has an account there ([`askable_cas`]) and that CA did not lately lack
/// `renewalInfo`. Every target, selected or not: the answers are cached for the next runs.
///
/// The stamps of the askable CAs (a few small files) are asked for before the issuers (a
/// read per certificate): when every askable CA lately lacked `renewalInfo`, as Pebble's
/// do, nothing can be asked and no issuer is read.
fn renewal_queries(
    world: &World,
    verdicts: &[super::TargetPlan],
    now: OffsetDateTime,
    w: &mut Work,
) {
    let mut seen = std::collections::HashSet::new();
    let mut due: Vec<(&Target, usize, &CertSummary, &String)> = Vec::new();
    for (t, v) in world.targets.iter().zip(verdicts) {
        let Some((i, best)) = v.best.and_then(|i| Some((i, world.certs.at(i)?))) else {
            continue;
        };
        let Some(ari_id) = &best.ari_id else { continue };
        if now >= best.not_after
            || !ari::fetch_due(world.ari.get(&best.id), now)
            || !ari::backoff_passed(world.ari_backoff.get(&best.id), now)
            || !seen.insert(i)
        {
            continue;
        }
        due.push((t, i, best, ari_id));
    }
    if due.is_empty() {
        return;
    }
    let askable = askable_cas(world);
    for ca in &askable {
        if !world.no_ari.contains_key(*ca) {
            w.needs.ari_stamps.push((*ca).to_owned());
        }
    }
    if !w.needs.ari_stamps.is_empty()
        || askable
            .iter()
            .all(|ca| world.no_ari.get(*ca) == Some(&true))
    {
        return;
    }
    let mut by_ca: std::collections::BTreeMap<CaKey, Vec<(String, String)>> = Default::default();
    for (t, i, best, ari_id) in due {
        let Some(issuer) = world.issuer(i) else {
            w.needs.issuers.push(i);
            continue;
        };
        let provider = issuer.unwrap_or(&t.provider);
        if world.no_ari.get(provider) != Some(&false) {
            // No account there (every askable CA's stamp is read), or no renewalInfo lately.
            continue;
        }
        let ca = CaKey {
            provider: provider.to_owned(),
            roots: t.provider_ca_bundle.clone(),
        };
        by_ca
            .entry(ca)
            .or_default()
            .push((best.id.clone(), ari_id.clone()));
    }
    w.renewal_info = by_ca
        .into_iter()
        .map(|(ca, certs)| RenewalQuery { ca, certs })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::Window;
    use crate::cert::CertSet;
    use crate::keys::KeyFamily;
    use crate::plan::backoff::{Attempt, Backoff, after_attempt};
    use crate::plan::{Plan, Policy, plan};
    use crate::store::renewal_cache::AriRecord;
    use crate::store::{AccountRecord, CertRecord, TargetRecord};
    use crate::target::RawTarget;
    use time::Duration;
    use time::macros::datetime;

    const CA: &str = "https://ca.example/directory";
    const OTHER: &str = "https://other.example/directory";
    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    fn target(file: &str, yaml: &str) -> Target {
        let conf = RawTarget::parse(&format!("request:\n  provider: {CA}\n")).expect("conf");
        let raw = RawTarget::parse(yaml).expect("yaml");
        Target::resolve(file, &raw, &conf).expect("resolves")
    }

    fn cert(id: &str, name: &str, days: i64, ari: bool) -> CertSummary {
        CertSummary {
            id: id.to_owned(),
            names: vec![name.to_owned()],
            not_before: T0,
            not_after: T0 + Duration::days(days),
            key_family: Some(KeyFamily::Ecdsa),
            has_private_key: true,
            key_id: format!("key-{id}"),
            revoked: false,
            profile: None,
            ari_id: ari.then(|| format!("ari.{id}")),
        }
    }

    fn account(directory_url: &str, id: &str) -> AccountRecord {
        AccountRecord {
            directory_url: directory_url.into(),
            id: id.into(),
            key_path: "/nonexistent".into(),
        }
    }

    fn world(targets: Vec<Target>, certs: Vec<CertSummary>) -> World {
        World {
            targets,
            certs: CertSet::new(certs),
            ..World::default()
        }
    }

    fn run_plan(w: &World, now: OffsetDateTime, only: &[&str], force: bool) -> Plan {
        let policy = Policy {
            run: true,
            force,
            only: only.iter().map(|s| (*s).to_owned()).collect(),
            ..Policy::default()
        };
        plan(w, now, &policy)
    }

    /// Reads what each plan lacks from `records`/`issuers`/`stamps` until it lacks nothing,
    /// as the executor does from the disk.
    fn settle(
        w: &mut World,
        now: OffsetDateTime,
        records: &[(usize, TargetRecord)],
        issuers: &[(&str, Option<&str>)],
        stamps: &[(&str, bool)],
    ) -> Plan {
        for _ in 0..4 {
            let p = run_plan(w, now, &[], false);
            if p.work.needs.is_empty() {
                return p;
            }
            if w.records.is_empty() {
                w.records = vec![None; w.targets.len()];
            }
            for &i in &p.work.needs.records {
                let rec = records
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, r)| r.clone());
                w.records[i] = Some(rec.unwrap_or_default());
            }
            for &i in &p.work.needs.issuers {
                let id = &w.certs.at(i).expect("a certificate").id;
                let found = issuers.iter().find(|(c, _)| c == id).and_then(|(_, p)| *p);
                w.note_issuer(i, found.map(std::sync::Arc::from));
            }
            for ca in &p.work.needs.ari_stamps {
                let lacks = stamps.iter().any(|(c, l)| c == ca && *l);
                w.no_ari.insert(ca.clone(), lacks);
            }
        }
        panic!("the plan never settled");
    }

    fn ari_rec(
        id: &str,
        start_day: i64,
        retry: std::time::Duration,
        at: OffsetDateTime,
    ) -> AriRecord {
        let window = Window {
            start: T0 + Duration::days(start_day),
            end: T0 + Duration::days(start_day + 1),
        };
        AriRecord::new(&format!("ari.{id}"), window, retry, at)
    }

    #[test]
    fn a_due_target_is_ordered_with_its_settings_once_its_record_is_read() {
        let mut w = world(
            vec![
                target(
                    "a",
                    "satisfy:\n  names: [a.b]\nrequest:\n  profile: tlsserver\n  preferred-chain: [Root X2]\n  key:\n    id: abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst\n",
                ),
                target("c", "satisfy:\n  names: [c.d]\n"),
            ],
            vec![cert("c1", "c.d", 90, false)],
        );
        let now = T0 + Duration::days(10);
        let first = run_plan(&w, now, &[], false);
        assert_eq!(
            first.work.needs.records,
            [0],
            "only the due target's record"
        );
        assert!(first.work.orders.is_empty());
        let p = settle(&mut w, now, &[], &[], &[]);
        let t = &w.targets[0];
        assert_eq!(
            p.work.orders,
            [Order {
                target: 0,
                ca: CaKey {
                    provider: CA.into(),
                    roots: None
                },
                replaces: None,
                key: KeyChoice::Reuse(
                    "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst".into()
                ),
                profile: Some("tlsserver".into()),
                preferred_chain: vec!["Root X2".into()],
                methods: t.challenge.types.clone(),
                renewal: false,
            }]
        );
        assert!(p.work.deferred.is_empty() && p.work.downloads.is_empty());
        assert!(
            w.record(1).is_none(),
            "a target that is not due needs no record"
        );
    }

    #[test]
    fn a_due_target_waiting_after_failures_is_deferred_with_why_and_force_orders_it() {
        let now = T0 + Duration::days(80);
        let refused = after_attempt(
            TargetRecord::default(),
            Attempt::Failed {
                error: "refused",
                backoff: Backoff::Yes,
                retry_at: None,
            },
            now,
        );
        let limited = after_attempt(
            TargetRecord::default(),
            Attempt::Failed {
                error: "slow down",
                backoff: Backoff::RateLimited,
                retry_at: Some(now + Duration::hours(3)),
            },
            now,
        );
        let local = after_attempt(
            TargetRecord::default(),
            Attempt::Failed {
                error: "disk full",
                backoff: Backoff::No,
                retry_at: None,
            },
            now,
        );
        let mut w = world(
            vec![
                target("a", "satisfy:\n  names: [a.b]\n"),
                target("c", "satisfy:\n  names: [c.d]\n"),
                target("e", "satisfy:\n  names: [e.f]\n"),
            ],
            vec![cert("c1", "c.d", 90, false)],
        );
        let p = settle(
            &mut w,
            now,
            &[(0, refused), (1, limited), (2, local)],
            &[],
            &[],
        );
        // (target, why, until)
        let got: Vec<(usize, &str, OffsetDateTime)> = p
            .work
            .deferred
            .iter()
            .map(|d| {
                let kind = match d.why {
                    Why::BackingOff(_) => "backing off",
                    Why::RateLimited(_) => "rate limited",
                };
                (d.target, kind, d.why.until())
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, "backing off", now + Duration::minutes(1)),
                (1, "rate limited", now + Duration::hours(3)),
            ]
        );
        assert!(
            p.work.deferred[0]
                .why
                .to_string()
                .starts_with("not retried before")
        );
        // A local mistake does not wait; the planner's verdicts say the same as the work.
        assert_eq!(
            p.work.orders.iter().map(|o| o.target).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(p.targets[0].next_due, Some(now + Duration::minutes(1)));
        assert_eq!(p.targets[2].next_due, Some(now));
        assert!(!p.work.orders[0].renewal, "e.f has no certificate");
        let forced = run_plan(&w, now, &[], true);
        assert!(forced.work.deferred.is_empty());
        assert_eq!(forced.work.orders.len(), 3);
        assert!(forced.work.orders[1].renewal, "c.d has a certificate");
    }

    #[test]
    fn an_order_names_the_replaced_certificate_only_at_the_ca_that_issued_it_and_gave_a_window() {
        let now = T0 + Duration::days(80);
        // (issuer recorded for the certificate, ARI record cached, replaces?)
        let table = [
            (None, true, true),
            (Some(CA), true, true),
            (Some(OTHER), true, false),
            (Some(CA), false, false),
        ];
        for (issuer, cached, named) in table {
            let mut w = world(
                vec![target("a", "satisfy:\n  names: [a.b]\n")],
                vec![cert("c1", "a.b", 90, true)],
            );
            if cached {
                // Asked yesterday; not asked again for a week.
                let rec = ari_rec(
                    "c1",
                    70,
                    std::time::Duration::from_secs(7 * 86400),
                    now - Duration::days(1),
                );
                w.ari.insert("c1".into(), rec);
            }
            let p = settle(
                &mut w,
                now,
                &[],
                &[("c1", issuer)],
                &[(CA, true), (OTHER, true)],
            );
            assert_eq!(p.work.orders.len(), 1, "{issuer:?} {cached}");
            assert_eq!(
                p.work.orders[0].replaces.is_some(),
                named,
                "{issuer:?} {cached}"
            );
            assert!(p.work.orders[0].renewal);
        }
    }

    #[test]
    fn renewal_information_is_asked_once_per_certificate_at_its_issuer_unless_it_lacks_ari() {
        let now = T0 + Duration::days(20);
        let mut w = world(
            vec![
                target("a", "satisfy:\n  names: [a.b]\n"),
                target("a2", "satisfy:\n  names: [a.b]\n"),
                target("c", "satisfy:\n  names: [c.d]\n"),
                target("e", "satisfy:\n  names: [e.f]\n"),
                target("g", "satisfy:\n  names: [g.h]\n"),
                target("i", "satisfy:\n  names: [i.j]\n"),
            ],
            vec![
                cert("ca", "a.b", 90, true),
                cert("cc", "c.d", 90, true),
                cert("ce", "e.f", 90, false),
                cert("cg", "g.h", 90, true),
                cert("ci", "i.j", 10, true),
            ],
        );
        w.inv.accounts = vec![account(CA, "ca/k"), account(OTHER, "other/k")];
        // g.h's window was asked an hour ago and the CA said to come back in a day.
        w.ari.insert(
            "cg".into(),
            ari_rec(
                "cg",
                60,
                std::time::Duration::from_secs(86400),
                now - Duration::hours(1),
            ),
        );
        let p = settle(
            &mut w,
            now,
            &[],
            &[("ca", Some(CA)), ("cc", Some(OTHER))],
            &[(OTHER, true)],
        );
        // Shared certificate asked once; no ARI id, a cached answer not due, and an expired
        // certificate are not asked; the CA without renewalInfo lately is not asked.
        assert_eq!(
            p.work.renewal_info,
            [RenewalQuery {
                ca: CaKey {
                    provider: CA.into(),
                    roots: None
                },
                certs: vec![("ca".into(), "ari.ca".into())],
            }]
        );
        // Only the certificates the queries depend on had their issuer read, and the expired
        // one, which is due: its order may name it as replaced.
        let read: Vec<&str> = (0..w.certs.len())
            .filter(|&i| w.issuer(i).is_some())
            .filter_map(|i| Some(w.certs.at(i)?.id.as_str()))
            .collect();
        assert_eq!(read, ["ca", "cc", "ci"]);
        assert_eq!(
            p.work.orders.iter().map(|o| o.target).collect::<Vec<_>>(),
            [5]
        );
        let stamps: Vec<&str> = w.no_ari.keys().map(String::as_str).collect();
        assert_eq!(stamps, [CA, OTHER]);
    }

    /// Regression: an idle run over 10,000 certificates from CAs without `renewalInfo`
    /// (Pebble's) read which CA issued every one of them, a file per certificate, to learn
    /// that none of those CAs could be asked. The few stamps of the CAs it has accounts at
    /// are read first; when each lately lacked `renewalInfo`, no issuer is read.
    #[test]
    fn no_issuer_is_read_when_every_ca_with_an_account_lately_lacked_renewal_information() {
        let now = T0 + Duration::days(20);
        let targets = vec![
            target("a", "satisfy:\n  names: [a.b]\n"),
            target("c", "satisfy:\n  names: [c.d]\n"),
        ];
        let certs = vec![cert("ca", "a.b", 90, true), cert("cc", "c.d", 90, true)];
        // (accounts at, CAs lately without renewalInfo, issuers read, CAs asked)
        type Cas<'a> = &'a [&'a str];
        let table: [(Cas, Cas, Cas, Cas); 5] = [
            (&[CA, OTHER], &[CA, OTHER], &[], &[]),
            (&[], &[], &[], &[]),
            (&[CA, OTHER], &[OTHER], &["ca", "cc"], &[CA]),
            (&[OTHER], &[], &["ca", "cc"], &[OTHER]),
            (&[CA, OTHER], &[], &["ca", "cc"], &[CA, OTHER]),
        ];
        for (accounts, lacking, read, asked) in table {
            let mut w = world(targets.clone(), certs.clone());
            w.inv.accounts = accounts.iter().map(|ca| account(ca, "k")).collect();
            let stamps: Vec<(&str, bool)> = lacking.iter().map(|ca| (*ca, true)).collect();
            let p = settle(
                &mut w,
                now,
                &[],
                &[("ca", Some(CA)), ("cc", Some(OTHER))],
                &stamps,
            );
            let got: Vec<&str> = (0..w.certs.len())
                .filter(|&i| w.issuer(i).is_some())
                .filter_map(|i| Some(w.certs.at(i)?.id.as_str()))
                .collect();
            assert_eq!(got, read, "{accounts:?} {lacking:?}");
            let cas: Vec<&str> = p
                .work
                .renewal_info
                .iter()
                .map(|q| q.ca.provider.as_str())
                .collect();
            assert_eq!(cas, asked, "{accounts:?} {lacking:?}");
            // Only the stamps of the CAs with an account are read.
            let stamped: Vec<&str> = w.no_ari.keys().map(String::as_str).collect();
            let mut want: Vec<&str> = accounts.to_vec();
            want.sort_unstable();
            assert_eq!(stamped, want);
        }
    }

    #[test]
    fn every_uncached_directory_is_downloaded_with_alternates_if_a_target_at_its_ca_prefers_a_chain()
     {
        let mut w = world(
            vec![
                target(
                    "a",
                    "satisfy:\n  names: [a.b]\nrequest:\n  preferred-chain: [Root X2]\n",
                ),
                target(
                    "o",
                    &format!("satisfy:\n  names: [o.p]\nrequest:\n  provider: {OTHER}\n"),
                ),
            ],
            vec![],
        );
        w.inv.accounts = vec![account(CA, "ca/k"), account(OTHER, "other/k")];
        let uncached = |id: &str, account: Option<&str>| CertRecord {
            id: id.into(),
            url: Some(format!("https://ca.example/order/{id}")),
            account: account.map(str::to_owned),
            state: CertState::Uncached,
        };
        w.inv.certs = vec![
            uncached("u1", Some("ca/k")),
            uncached("u2", Some("other/k")),
            uncached("u3", None),
            CertRecord {
                state: CertState::Broken("unreadable".into()),
                ..uncached("b1", Some("ca/k"))
            },
        ];
        let p = run_plan(&w, T0, &[], false);
        let got: Vec<(&str, bool, bool)> = p
            .work
            .downloads
            .iter()
            .map(|d| (d.cert_id.as_str(), d.account.is_some(), d.alternates))
            .collect();
        assert_eq!(
            got,
            [
                ("u1", true, true),
                ("u2", true, false),
                ("u3", false, false)
            ]
        );
    }

    #[test]
    fn only_orders_the_selected_targets_and_names_the_unknown_selectors() {
        let mut w = world(
            vec![
                target("a", "satisfy:\n  names: [a.b]\n"),
                target("c", "satisfy:\n  names: [c.d]\n"),
                target(
                    "o",
                    &format!("satisfy:\n  names: [o.p]\nrequest:\n  provider: {OTHER}\n"),
                ),
            ],
            vec![],
        );
        w.records = vec![Some(TargetRecord::default()); 3];
        let p = run_plan(&w, T0, &["c.d", "o"], false);
        let got: Vec<(usize, &str)> = p
            .work
            .orders
            .iter()
            .map(|o| (o.target, o.ca.provider.as_str()))
            .collect();
        // By CA, then by file.
        assert_eq!(got, [(1, CA), (2, OTHER)]);
        let all = run_plan(&w, T0, &[], false);
        let order: Vec<usize> = all.work.orders.iter().map(|o| o.target).collect();
        assert_eq!(order, [0, 1, 2]);
        let only = ["a".to_owned(), "x.y".to_owned(), "c.d".to_owned()];
        assert_eq!(unknown_selectors(&w, &only), ["x.y"]);
    }

    #[test]
    fn without_the_run_policy_no_work_is_decided_and_nothing_is_asked_for() {
        let w = world(vec![target("a", "satisfy:\n  names: [a.b]\n")], vec![]);
        let p = plan(&w, T0, &Policy::default());
        assert_eq!(p.work, Work::default());
    }
}
