//! Reconcile: carry out the plan, for every target, as concurrently as the configured limit
//! allows, and report each target's outcome.
//!
//! A run is phases over one [`World`] (acmetool §6.3, with its failure modes fixed): plan
//! ([`plan::plan`], reading into the world only what the plan asks for); finish the downloads
//! an interrupted run left ([`download`]) and plan again; ask the CAs' renewal information
//! the plan lists ([`ari`]) and plan again with the answers; then the plan's deferrals are
//! reported and its orders carried out ([`order`], [`issue`]), each outcome recorded
//! ([`record`]); then one relink pass over all targets and the hooks. Nothing here decides
//! *whether* to renew, order, ask or wait — the planner does — and nothing reads the clock
//! but through [`Options::clock`]: `now` is passed in.

mod ari;
mod download;
mod issue;
mod order;
mod record;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use time::OffsetDateTime;
use tokio::task::JoinSet;

use crate::acme::{Ca, Connector};
use crate::clock::Clock;
use crate::hooks::{Event, HookRunner};
use crate::interact::Interaction;
use crate::plan::work::CaKey;
use crate::plan::work::{Why, Work};
use crate::plan::{self, Plan, Policy};
use crate::store::run::ErrorKind;
use crate::store::{CertState, Store};
use crate::world::{Scope, World};

pub use record::Failure;
use record::{deferral, expiring, lapsing, names_of};

/// Settings of one reconcile run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Maximum number of orders in flight.
    pub jobs: usize,
    /// Restrict the request phase to these targets, by file name or by one of their names
    /// (empty = all).
    pub only: Vec<String>,
    /// Try the selected targets now even if they are backing off after failures.
    pub force: bool,
    /// Runs the hooks (`live-updated`, `reconcile-failed`, `challenge-http-*`).
    pub hooks: Arc<HookRunner>,
    /// The time when a step happens rather than when the run began: a certificate the CA
    /// just issued is checked for being valid at the time it arrives, and the relink pass
    /// at the end plans with the time it runs at (a CA may date a certificate from the
    /// moment it issues it, after the run began).
    pub clock: Arc<dyn Clock>,
    /// On a fleet node (doc/cluster.md), the fleet's say over each order; `None` on a
    /// machine of its own.
    pub gate: Option<Arc<dyn OrderGate>>,
    /// On a fleet node, where http-01 tokens are published for the other nodes.
    pub share: Option<Arc<dyn crate::challenge::TokenShare>>,
}

/// The fleet's say over this node's orders (doc/cluster.md), asked before each order and
/// told after it, so the executor knows nothing of etcd.
pub trait OrderGate: Send + Sync + std::fmt::Debug {
    /// Whether this node may order for target `file` now. [`Claim::No`] leaves the target
    /// unchanged in this run: another node has it (or just obtained its certificate), or
    /// the fleet cannot be used; the gate keeps why. `finish_only` (the CA of the target is
    /// paused for the fleet): only an order recorded as finalizing is claimed, to be finished
    /// (a download, not a new order); anything else is [`Claim::No`].
    fn claim<'a>(
        &'a self,
        file: &'a str,
        finish_only: bool,
    ) -> futures_util::future::BoxFuture<'a, Claim>;
    /// The order for `file` at `order_url`, for certificate key `key_id` of account
    /// `account`, its names validated as `validations` says, is about to be finalized. An
    /// error abandons the order before finalize.
    fn finalizing<'a>(
        &'a self,
        file: &'a str,
        order_url: &'a str,
        key_id: &'a str,
        account: &'a str,
        validations: Vec<crate::challenge::Validation>,
    ) -> futures_util::future::BoxFuture<'a, Result<()>>;
    /// The claimed attempt for `file` ended: `Ok(id)` with certificate `id` stored in the
    /// state directory, or how it failed. An error: the fleet did not take the certificate,
    /// and the target fails with it.
    fn finish<'a>(
        &'a self,
        file: &'a str,
        result: Result<&'a str, &'a Failure>,
    ) -> futures_util::future::BoxFuture<'a, Result<()>>;
    /// Whether the fleet holds back every order from the CA at `provider` now, because the
    /// CA told some node to slow down: until when, and which node it told.
    fn ca_paused<'a>(
        &'a self,
        provider: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Option<(OffsetDateTime, String)>>;
    /// The CA at `provider` told this node to slow down until `until`, for every order there
    /// ([`crate::acme::pace::ca_wide_until`]): the fleet holds its orders back until then.
    fn slowed<'a>(
        &'a self,
        provider: &'a str,
        until: OffsetDateTime,
    ) -> futures_util::future::BoxFuture<'a, ()>;
}

/// What the fleet lets this node do for a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nothing in this run.
    No,
    /// Order a certificate.
    Order,
    /// Finish an order that was finalized (or about to be) by a process that no longer holds
    /// the target: never order anew for it, it may already have a certificate.
    Finish(Finishing),
}

/// An order recorded as finalizing, with what it takes to finish it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finishing {
    /// The order URL.
    pub url: String,
    /// The certificate key's id (the gate put the key in `keys/`).
    pub key_id: String,
    /// The account that placed the order.
    pub account: String,
    /// The node that placed it.
    pub node: String,
    /// How its names were validated (the certificate's `.validations`).
    pub validations: Vec<crate::challenge::Validation>,
}

/// Outcome for one target.
#[derive(Debug)]
pub struct TargetOutcome {
    /// File name under `desired/`.
    pub file: String,
    /// Names of the target.
    pub names: Vec<String>,
    /// What became of it.
    pub result: Outcome,
}

/// What became of one target in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do.
    Unchanged,
    /// A new certificate.
    Issued(Issued),
    /// Left to a later run because the CA refused for its rate (rate limit, overload): not a
    /// failure of the run. The text says why and until when.
    Deferred(String),
    /// Failed; the text says why.
    Failed(String),
}

/// A certificate obtained in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// Its id (directory under `certs/`).
    pub id: String,
    /// Its end of validity.
    pub not_after: OffsetDateTime,
    /// Whether it replaces a certificate the target had (a renewal), rather than being its
    /// first.
    pub renewed: bool,
}

impl Outcome {
    /// Whether the target failed (a deferral is not a failure).
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Per-target outcomes (targets that needed no work included).
    pub targets: Vec<TargetOutcome>,
    /// `live/` names that now point somewhere new.
    pub relinked: Vec<String>,
    /// Errors not tied to one target (relinking, uncached downloads).
    pub other_errors: Vec<String>,
    /// Targets that failed or were deferred while their certificate is in the last sixth of
    /// its life ([`plan::in_last_sixth`]), by file, with that certificate's end of validity.
    pub expiring: Vec<(String, OffsetDateTime)>,
    /// Certificates of orders an interrupted run left, downloaded in this run: (id, names,
    /// end of validity).
    pub downloaded: Vec<(String, Vec<String>, OffsetDateTime)>,
    /// Errors of this run by kind, for the run record and metrics.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The world the run decided from, as it ended (the certificates it obtained and the
    /// renewal windows it learnt included; its inventory dropped), moved out at its end, never
    /// copied: what reports on the state afterwards (metrics) decides from the same world
    /// without loading it again, conf/target's `monitor` section included.
    pub world: World,
}

impl Report {
    /// Counts an error of kind `kind`.
    fn count(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// True when every target and step succeeded.
    pub fn all_ok(&self) -> bool {
        self.other_errors.is_empty() && !self.targets.iter().any(|t| t.result.failed())
    }
}

/// Account sessions opened in a run, by CA, with the account's id: the renewal-information
/// phase's login is the order phase's (one login per CA per run).
type Sessions<S> = BTreeMap<CaKey, (Arc<S>, String)>;

/// Runs a reconcile over `store`, loading its world first.
pub async fn run<C: Connector>(
    store: Arc<Store>,
    connector: &C,
    interaction: &Interaction,
    opts: &Options,
    now: OffsetDateTime,
) -> Result<Report> {
    let world = World::load(&store, Scope::RECONCILE)?;
    run_world(store, world, connector, interaction, opts, now).await
}

/// Runs a reconcile over `store`, whose world (loaded under the same lock, with at least
/// [`Scope::RECONCILE`]) is `world`: the phases of the module preamble.
pub async fn run_world<C: Connector>(
    store: Arc<Store>,
    mut world: World,
    connector: &C,
    interaction: &Interaction,
    opts: &Options,
    now: OffsetDateTime,
) -> Result<Report> {
    let started = std::time::Instant::now();
    log_loaded(&world);
    let unknown = plan::work::unknown_selectors(&world, &opts.only);
    if !unknown.is_empty() {
        return Err(crate::exit::config_error(anyhow!(
            "no such target in desired/: {}",
            unknown.join(", ")
        )));
    }
    let mut report = report_broken(&world);
    let policy = Policy {
        force: opts.force,
        run: true,
        only: opts.only.clone(),
        ..Policy::default()
    };
    read_ca_stamps(&store, &mut world, now);
    let mut plan = settle(&store, &mut world, now, &policy);
    if !plan.work.downloads.is_empty() {
        let clock = (now, &*opts.clock);
        download::run(
            &store,
            connector,
            &plan.work.downloads,
            &mut world,
            clock,
            &mut report,
        )
        .await;
        // Planned again only when a certificate arrived: a failed download changes nothing
        // the plan reads.
        if !report.downloaded.is_empty() {
            drop(plan);
            plan = settle(&store, &mut world, now, &policy);
        }
    }
    let mut sessions = Sessions::new();
    if !plan.work.renewal_info.is_empty() {
        let queries = std::mem::take(&mut plan.work.renewal_info);
        let into = (&mut world, &mut sessions);
        if ari::ask(&store, connector, &queries, into, (opts.jobs, now)).await > 0 {
            drop(plan);
            plan = settle(&store, &mut world, now, &policy);
        }
    }
    tracing::debug!("planned at {:.0?}", started.elapsed());
    // Only the work is carried out: the verdicts (one per target) are dropped before the
    // per-target reports are made, and the issuers read for the plan after the orders (a
    // fallback's order asks whether it may name the replaced certificate); an idle run at
    // 10,000 targets would otherwise hold them at its peak.
    let (work, at) = (plan.work, plan.at);
    drop(plan.targets);
    let ca = (connector, interaction, &sessions);
    carry_out(&store, &mut world, (&work, at), ca, opts, &mut report).await;
    tracing::debug!("planned and obtained at {:.0?}", started.elapsed());
    drop(work);
    world.issuers = Default::default();
    finish(&store, world, opts, now, &mut report).await;
    tracing::debug!("reconciled in {:.0?}", started.elapsed());
    Ok(report)
}

/// A report with room for an outcome per target (and no more: a doubling vector would hold
/// room for 16,384 at 10,000 targets), the broken target files' failures in it.
fn report_broken(world: &World) -> Report {
    let mut report = Report {
        targets: Vec::with_capacity(world.targets.len() + world.broken.len()),
        ..Report::default()
    };
    for b in &world.broken {
        let error = crate::cause::render(&b.error);
        report.count(ErrorKind::InvalidTarget);
        report.targets.push(TargetOutcome {
            file: b.file.clone(),
            names: Vec::new(),
            result: Outcome::Failed(error),
        });
    }
    report
}

/// Reads the "no renewalInfo" stamps of the CAs renewal information could be asked at (one
/// small file per CA with an account) into `world` before the first plan: a run with
/// renewal information due needs them, and asking for them later costs a plan of every
/// target.
fn read_ca_stamps(store: &Store, world: &mut World, now: OffsetDateTime) {
    let stamps = plan::work::Needs {
        ari_stamps: plan::work::askable_cas(world)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        ..Default::default()
    };
    world.load_needs(store, &stamps, now);
}

/// Plans `world` at `now`, reading into it what the plan lacks until it lacks nothing (at
/// most the records and issuers of the due targets and the stamps of the CAs to ask: two
/// rounds).
fn settle(store: &Store, world: &mut World, now: OffsetDateTime, policy: &Policy) -> Plan {
    loop {
        let mut plan = plan::plan(world, now, policy);
        if plan.work.needs.is_empty() {
            return plan;
        }
        // The plan that lacked something is dropped before its inputs are read: at 10,000
        // targets its verdicts would otherwise be held beside every issuer read.
        let needs = std::mem::take(&mut plan.work.needs);
        drop(plan);
        world.load_needs(store, &needs, now);
    }
}

/// Logs what loading found: warnings, broken certificate directories, target remarks.
fn log_loaded(world: &World) {
    for w in &world.inv.warnings {
        tracing::warn!("{w}");
    }
    for c in &world.inv.certs {
        if let CertState::Broken(e) = &c.state {
            tracing::warn!("certs/{}: {e}", c.id);
        }
    }
    for t in &world.targets {
        for w in &t.warnings {
            tracing::warn!("desired/{}: {w}", t.file);
        }
    }
}

/// Reports every target as the plan has it (deferred, or unchanged when it is not ordered
/// for), then carries out the orders; their certificates join `world.certs`.
async fn carry_out<C: Connector>(
    store: &Arc<Store>,
    world: &mut World,
    (work, now): (&Work, OffsetDateTime),
    ca: (&C, &Interaction, &Sessions<<C::Ca as Ca>::Session>),
    opts: &Options,
    report: &mut Report,
) {
    let (mut deferred, mut ordered) = (
        work.deferred.iter().peekable(),
        work.orders
            .iter()
            .map(|o| o.target)
            .collect::<std::collections::HashSet<_>>(),
    );
    for (i, t) in world.targets.iter().enumerate() {
        let result = match deferred.next_if(|d| d.target == i) {
            Some(d) => deferral_outcome(world, i, &d.why, now, report),
            None if ordered.remove(&i) => continue,
            None => Outcome::Unchanged,
        };
        report.targets.push(TargetOutcome {
            file: t.file.clone(),
            names: names_of(t),
            result,
        });
    }
    if !work.orders.is_empty() {
        let orders = &work.orders;
        let issued = order::obtain(store, ca, opts, now, orders, world, report).await;
        for s in issued {
            // Asked for right after issuance (ari::first_window).
            if let Some(rec) = store.ari_record(&s.id) {
                world.ari.insert(s.id.clone(), rec);
            }
            world.certs.push(s);
        }
    }
}

/// The outcome of target `i`, which the plan defers for `why`: backing off after failures
/// is still a failing target; a refusal for the CA's rate only defers it, unless its
/// certificate in use expires first ([`deferral`]).
fn deferral_outcome(
    world: &World,
    i: usize,
    why: &Why,
    now: OffsetDateTime,
    report: &mut Report,
) -> Outcome {
    match why {
        Why::RateLimited(w) => {
            report.count(ErrorKind::RateLimited);
            let best = crate::cert::best_cert(&world.targets[i], &world.certs, now);
            deferral(w.to_string(), best, Some(w.until), now)
        }
        Why::BackingOff(w) => {
            report.count(ErrorKind::BackingOff);
            Outcome::Failed(w.to_string())
        }
    }
}

/// The end of a run: one relink pass over every loadable target, at the time it runs (a CA
/// may date a certificate from the moment it issues it), then the hooks: one `live-updated`
/// with every changed name (acmetool), `reconcile-failed` naming what could not be satisfied,
/// `certificate-expiring` for what lapses; the world is handed to the report.
async fn finish(
    store: &Store,
    mut world: World,
    opts: &Options,
    now: OffsetDateTime,
    report: &mut Report,
) {
    let (targets, certs) = (&world.targets, &world.certs);
    report.expiring = expiring(&report.targets, targets, certs, now);
    for r in plan::plan_relinks(targets, certs, &world.inv.live, opts.clock.now_utc()) {
        match store.relink(&r.name, &r.cert_id) {
            Ok(_) => report.relinked.push(r.name),
            Err(e) => report.other_errors.push(crate::cause::render(&e)),
        }
    }
    // What comes after decides from the targets, certificates, renewal windows and run
    // records alone: the inventory (keys, live links, accounts) goes now.
    world.inv = Default::default();
    let relinked = Event::LiveUpdated {
        names: &report.relinked,
    };
    run_hooks(&opts.hooks, relinked).await;
    let failed: Vec<String> = report
        .targets
        .iter()
        .filter(|t| t.result.failed())
        .flat_map(|t| {
            if t.names.is_empty() {
                vec![t.file.clone()]
            } else {
                t.names.clone()
            }
        })
        .collect();
    run_hooks(&opts.hooks, Event::ReconcileFailed { names: &failed }).await;
    world.take_written(store);
    let lapsing = lapsing(&report.targets, &world, now);
    run_hooks(&opts.hooks, Event::CertificateExpiring { names: &lapsing }).await;
    for _ in 0..report.other_errors.len() {
        report.count(ErrorKind::Other);
    }
    report.world = world;
}

/// Links in `live/` the certificates the state directory holds for its targets: the end of a
/// run alone, ordering and asking nothing (a fleet node's agent, when another node's
/// certificate arrives). The names relinked, for the `live-updated` hooks the caller runs
/// (the agent once it has let go of the state directory), and the errors of the names that
/// could not be.
pub fn relink_only(store: &Store, now: OffsetDateTime) -> Result<(Vec<String>, Vec<String>)> {
    let world = World::load(store, Scope::RECONCILE)?;
    let (mut relinked, mut errors) = (Vec::new(), Vec::new());
    for r in plan::plan_relinks(&world.targets, &world.certs, &world.inv.live, now) {
        match store.relink(&r.name, &r.cert_id) {
            Ok(_) => relinked.push(r.name),
            Err(e) => errors.push(crate::cause::render(&e)),
        }
    }
    Ok((relinked, errors))
}

/// Runs an event's hooks off the async threads; hook failures are logged, never fatal
/// (acmetool ignores these results too).
pub async fn run_hooks(hooks: &Arc<HookRunner>, event: Event<'_>) {
    let names: Vec<String> = match event {
        Event::LiveUpdated { names }
        | Event::ReconcileFailed { names }
        | Event::CertificateExpiring { names } => names.to_vec(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        return;
    }
    let kind = event.name();
    let hooks = hooks.clone();
    let result = tokio::task::spawn_blocking(move || {
        let event = match kind {
            "live-updated" => Event::LiveUpdated { names: &names },
            "reconcile-failed" => Event::ReconcileFailed { names: &names },
            _ => Event::CertificateExpiring { names: &names },
        };
        hooks.run(&event).map(|r| (event.name(), r))
    })
    .await;
    match result {
        Ok(Ok((name, report))) => {
            for o in report.failures() {
                tracing::warn!("{name} hook {}: {}", o.path.display(), o.status);
            }
        }
        Ok(Err(e)) => tracing::warn!("hooks not run: {e}"),
        Err(e) => tracing::warn!("hook task failed: {e}"),
    }
}

/// Runs the futures of `tasks` with at most `limit` in flight, handing each result to
/// `each` as it finishes. Tasks are created only when a slot is free, so memory stays flat
/// however many there are.
async fn run_bounded<F, T>(
    tasks: impl IntoIterator<Item = F>,
    limit: usize,
    mut each: impl FnMut(Result<T, tokio::task::JoinError>),
) where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut set = JoinSet::new();
    let mut tasks = tasks.into_iter();
    loop {
        while set.len() < limit.max(1) {
            match tasks.next() {
                Some(task) => {
                    set.spawn(task);
                }
                None => break,
            }
        }
        match set.join_next().await {
            Some(joined) => each(joined),
            None => break,
        }
    }
}

#[cfg(test)]
mod tables;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::AcmeError;
    use crate::keys::{KeySpec, PrivateKey};
    use crate::plan::backoff::Backoff;
    use crate::target::{RawTarget, Target};
    use issue::build_csr;
    use record::record;

    fn csr_for(yaml: &str) -> Vec<u8> {
        let raw = RawTarget::parse(yaml).expect("yaml");
        let t = Target::resolve("t", &raw, &RawTarget::default()).expect("target");
        let key = PrivateKey::generate(KeySpec::EcdsaP256).expect("key");
        build_csr(&t, &key).expect("csr")
    }

    fn common_names(der: &[u8]) -> Vec<String> {
        use x509_parser::prelude::FromDer;
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
            .expect("parses");
        csr.certification_request_info
            .subject
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect()
    }

    /// Regression: how a target backs off, and until when, were read back out of the error's
    /// text (the store parsed "retry after" from the rendered error), so a reworded message
    /// (ours or the CA's) could change them. They follow the typed error only, wherever in
    /// the chain of context it is.
    #[test]
    fn rewording_a_message_cannot_change_backoff() {
        use crate::acme::Problem;
        let at = time::macros::datetime!(2027-03-02 00:00 UTC);
        let problem = |kind: &str, status: u16, detail: &str, retry_at| Problem {
            kind: Some(format!("urn:ietf:params:acme:error:{kind}")),
            detail: Some(detail.to_owned()),
            status: Some(status),
            subproblems: Vec::new(),
            retry_at,
        };
        let words = [
            "rateLimited: too many orders, retry after 2030-01-01T00:00:00Z",
            "unauthorized: validation failed (retry after 2031-01-01T00:00:00Z)",
            "",
        ];
        for w in words {
            for context in ["CA https://ca.example/dir", w] {
                let limited = AcmeError::RateLimited {
                    context: w.to_owned(),
                    problem: problem("rateLimited", 429, w, Some(at)),
                };
                let refused = AcmeError::Ca {
                    context: w.to_owned(),
                    problem: problem("unauthorized", 403, w, None),
                };
                let gone = AcmeError::Gone {
                    context: w.to_owned(),
                    problem: problem("malformed", 404, w, None),
                };
                for (e, backoff, retry_at) in [
                    (anyhow::Error::new(limited), Backoff::RateLimited, Some(at)),
                    (anyhow::Error::new(refused), Backoff::Yes, None),
                    (anyhow::Error::new(gone), Backoff::Yes, None),
                    (
                        anyhow::Error::new(AcmeError::Refused(w.to_owned())),
                        Backoff::Yes,
                        None,
                    ),
                    (
                        anyhow::Error::new(AcmeError::Other(anyhow!("{w}"))),
                        Backoff::No,
                        None,
                    ),
                    (anyhow!("{w}"), Backoff::No, None),
                ] {
                    let e = e.context(context.to_owned());
                    let failed = Failure::of(&e);
                    assert_eq!(
                        (failed.backoff, failed.retry_at),
                        (backoff, retry_at),
                        "{e:#}"
                    );
                    assert_eq!(failed.error, crate::cause::render(&e));
                }
            }
        }
    }

    /// The run record takes the retry time from the failure, whatever its text says.
    #[test]
    fn the_record_takes_the_retry_time_from_the_value() {
        let dir = tempfile::tempdir().expect("tmp");
        let lock = crate::store::lock::StateLock::acquire(dir.path()).expect("lock");
        let store = Store::open(dir.path(), &lock).expect("store");
        let now = time::macros::datetime!(2027-03-01 00:00 UTC);
        let at = time::macros::datetime!(2027-03-02 00:00 UTC);
        let failed = Failure {
            error: "too many orders (retry after 2027-03-05T00:00:00Z)".to_owned(),
            backoff: Backoff::RateLimited,
            retry_at: Some(at),
        };
        assert_eq!(record(&store, "a.example", now, Some(&failed)), Some(at));
        let failed = Failure {
            retry_at: None,
            ..failed
        };
        // Without a time from the CA, the backoff's own: 10 minutes after a second failure.
        assert_eq!(
            record(&store, "a.example", now, Some(&failed)),
            Some(now + time::Duration::minutes(10))
        );
        assert_eq!(record(&store, "a.example", now, None), None);
    }

    /// Regression: `lapsing` read each unsatisfied target's run record back from the store
    /// at the end of a run. It decides from the run's world, which takes in the records the
    /// run wrote (no file read): a deferral by the CA past the end of the certificate in use
    /// is `certificate-expiring`.
    #[test]
    fn lapsing_takes_the_wait_the_run_wrote_from_its_world() {
        let dir = tempfile::tempdir().expect("tempdir");
        Store::prepare_root(dir.path()).expect("root");
        let lock = crate::store::lock::StateLock::acquire(dir.path()).expect("lock");
        let store = Store::open(dir.path(), &lock).expect("store");
        store
            .write_target("a.example", "satisfy: {names: [a.example]}\n")
            .expect("target");
        let mut world = World::load(&store, Scope::RECONCILE).expect("load");
        let now = time::macros::datetime!(2027-03-01 00:00 UTC);
        world.certs.push(crate::cert::CertSummary {
            id: "cert".to_owned(),
            names: vec!["a.example".to_owned()],
            not_before: now - time::Duration::days(60),
            not_after: now + time::Duration::days(3),
            key_family: None,
            has_private_key: true,
            key_id: "key".to_owned(),
            revoked: false,
            profile: None,
            ari_id: None,
        });
        let failed = Failure {
            error: "too many orders".to_owned(),
            backoff: Backoff::RateLimited,
            retry_at: Some(now + time::Duration::days(5)),
        };
        record(&store, "a.example", now, Some(&failed));
        let outcomes = [TargetOutcome {
            file: "a.example".to_owned(),
            names: vec!["a.example".to_owned()],
            result: Outcome::Deferred("too many orders".to_owned()),
        }];
        // Without the record, the next attempt would be now: in time.
        assert!(lapsing(&outcomes, &world, now).is_empty());
        world.take_written(&store);
        assert_eq!(
            world.record(0).and_then(|r| r.next_attempt),
            failed.retry_at
        );
        assert_eq!(lapsing(&outcomes, &world, now), ["a.example"]);
    }

    #[test]
    fn csr_common_name_is_the_first_dns_name_never_an_ip() {
        assert!(common_names(&csr_for("satisfy:\n  names: ['192.0.2.1']\n")).is_empty());
        assert_eq!(
            common_names(&csr_for("satisfy:\n  names: ['192.0.2.1', a.example]\n")),
            ["a.example"]
        );
        let long = format!("{}.example", "a".repeat(60));
        assert!(common_names(&csr_for(&format!("satisfy:\n  names: [{long}]\n"))).is_empty());
    }
}
