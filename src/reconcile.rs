//! Reconcile: carry out what the planner decided, for every target, as concurrently as the
//! configured limit allows, and report each target's outcome.
//!
//! Order of work (acmetool §6.3, with its failure modes fixed): load everything once; finish
//! "uncached" certificate directories left by an interrupted run; obtain certificates for the
//! targets the planner says need one (one failing target never stops the others); record
//! each attempt; then one relink pass over all targets. Nothing here decides *whether* to
//! renew — `plan` does — and nothing reads the clock: `now` is passed in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use time::OffsetDateTime;
use tokio::task::JoinSet;

use crate::account::{STOPPED_ANSWERING, account_session, bundle_lookup, login_account};
use crate::acme::ChallengeKind;
use crate::acme::Responder;
use crate::acme::{AcmeError, Ca, Chains, Connector, ErrorClass, Issuer, OrderOptions, failover};
use crate::cert::{self, CertSummary};
use crate::challenge::TargetResponder;
use crate::challenge::listener::{Listeners, TokenMap};
use crate::hooks::{Event, HookRunner};
use crate::interact::Interaction;
use crate::keys::PrivateKey;
use crate::plan;
use crate::plan::ari::{self, AriRecord};
use crate::plan::backoff::{self, Attempt, Backoff};
use crate::store::run::ErrorKind;
use crate::store::{CertState, Inventory, Store};
use crate::target::Target;
use crate::world::{Scope, World};

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
    pub clock: fn() -> OffsetDateTime,
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
    /// the fleet cannot be used; the gate keeps why.
    fn claim<'a>(&'a self, file: &'a str) -> futures_util::future::BoxFuture<'a, Claim>;
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
    /// What the run loaded and ended with (moved out at its end, never copied), for what
    /// reports on the state afterwards (metrics) without loading it again.
    pub loaded: Loaded,
}

/// What a run loaded, as it stands at the end of the run.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The usable targets, by file name.
    pub targets: Vec<Target>,
    /// The target files that cannot be used, by file name, with why.
    pub broken: Vec<(String, String)>,
    /// Every complete certificate, those obtained in the run included.
    pub summaries: crate::cert::CertSet,
    /// The CA's renewal windows by certificate id.
    pub ari: BTreeMap<String, AriRecord>,
    /// conf/target's `monitor` section, as the run read it (so that what comes after the
    /// run does not read conf/target again).
    pub monitor: Option<crate::target::RawMonitor>,
}

/// The kind of error, as counted in the run record, of a failed attempt that backs off as `how`.
fn kind_of(how: Backoff) -> ErrorKind {
    match how {
        Backoff::No => ErrorKind::Other,
        Backoff::Yes => ErrorKind::Ca,
        Backoff::RateLimited => ErrorKind::RateLimited,
    }
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

/// acmetool's `listen` addresses: port 80 everywhere.
const LISTEN_HTTP: [&str; 2] = ["0.0.0.0:80", "[::]:80"];
/// acmetool's `proxy` addresses: 402 and 4402 on loopback.
const LISTEN_PROXY: [&str; 4] = ["127.0.0.1:402", "[::1]:402", "127.0.0.1:4402", "[::1]:4402"];

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
/// [`Scope::RECONCILE`]) is `world`.
pub async fn run_world<C: Connector>(
    store: Arc<Store>,
    world: World,
    connector: &C,
    interaction: &Interaction,
    opts: &Options,
    now: OffsetDateTime,
) -> Result<Report> {
    let World {
        defaults,
        targets,
        broken,
        mut inv,
        certs: mut summaries,
        ..
    } = world;
    let started = std::time::Instant::now();
    let mut report = Report::default();
    report.loaded.monitor = defaults.monitor.clone();
    for w in &inv.warnings {
        tracing::warn!("{w}");
    }
    for c in &inv.certs {
        if let CertState::Broken(e) = &c.state {
            tracing::warn!("certs/{}: {e}", c.id);
        }
    }
    for t in &targets {
        for w in &t.warnings {
            tracing::warn!("desired/{}: {w}", t.file);
        }
    }
    for b in broken {
        let error = crate::cause::render(&b.error);
        report.loaded.broken.push((b.file.clone(), error.clone()));
        report.count(ErrorKind::InvalidTarget);
        report.targets.push(TargetOutcome {
            file: b.file,
            names: Vec::new(),
            result: Outcome::Failed(error),
        });
    }

    let selects =
        |t: &Target, o: &String| &t.file == o || t.satisfy_names.iter().any(|n| n.as_str() == o);
    let unknown: Vec<_> = opts
        .only
        .iter()
        .filter(|o| {
            !targets.iter().any(|t| selects(t, o)) && !report.targets.iter().any(|t| &t.file == *o)
        })
        .collect();
    if !unknown.is_empty() {
        return Err(crate::exit::config_error(anyhow!(
            "no such target in desired/: {}",
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }

    // Finish what an interrupted run left: orders whose certificate was never downloaded.
    let uncached: Vec<_> = inv
        .certs
        .iter()
        .filter(|c| matches!(c.state, CertState::Uncached))
        .cloned()
        .collect();
    if !uncached.is_empty() {
        download_uncached(
            &store,
            connector,
            &uncached,
            &targets,
            (&mut inv, &mut summaries),
            (now, opts.clock),
            &mut report,
        )
        .await;
    }

    // The CA's renewal windows (ARI), refreshed where its Retry-After has passed.
    let mut ari = renewal_windows(
        &store,
        connector,
        &targets,
        (&summaries, &inv),
        opts.jobs,
        now,
    )
    .await;

    tracing::debug!("renewal windows known at {:.0?}", started.elapsed());
    // Plan.
    let mut todo: Vec<Target> = Vec::new();
    for t in &targets {
        let selected = opts.only.is_empty() || opts.only.iter().any(|o| selects(t, o));
        let p = plan::plan_target_ari(t, &summaries, now, &ari);
        // The run record matters only for a target that needs a certificate (backoff).
        let record = if selected && p.needs_request {
            store.target_record(&t.file)
        } else {
            Default::default()
        };
        if selected
            && p.needs_request
            && let Some(waiting) = backoff::gate(&record, now, opts.force)
        {
            // Backing off after failures (1 min, 10 min, 100 min, then daily; never before
            // the CA's retry time): the CA is not asked again. Still a failing target, unless
            // the CA refused it for its rate: then it is only deferred.
            report.count(if waiting.rate_limited {
                ErrorKind::RateLimited
            } else {
                ErrorKind::BackingOff
            });
            report.targets.push(TargetOutcome {
                file: t.file.clone(),
                names: names_of(t),
                result: if waiting.rate_limited {
                    let best = p.best.as_deref().and_then(|id| summaries.get(id));
                    deferral(waiting.to_string(), best, Some(waiting.until), now)
                } else {
                    Outcome::Failed(waiting.to_string())
                },
            });
        } else if selected && p.needs_request {
            todo.push(t.clone());
        } else {
            report.targets.push(TargetOutcome {
                file: t.file.clone(),
                names: names_of(t),
                result: Outcome::Unchanged,
            });
        }
    }

    if !todo.is_empty() {
        let issued = obtain(
            &store,
            connector,
            interaction,
            opts,
            now,
            &todo,
            (&inv, &summaries),
            &ari,
            &mut report,
        )
        .await;
        for s in issued {
            // Asked for right after issuance (see `first_window`).
            if let Some(rec) = store.ari_record(&s.id) {
                ari.insert(s.id.clone(), rec);
            }
            summaries.push(s);
        }
    }

    report.expiring = expiring(&report.targets, &targets, &summaries, now);

    // One relink pass over every loadable target.
    tracing::debug!("planned and obtained at {:.0?}", started.elapsed());
    let relinks = plan::plan_relinks(&targets, &summaries, &inv.live, (opts.clock)());
    for r in relinks {
        match store.relink(&r.name, &r.cert_id) {
            Ok(_) => report.relinked.push(r.name),
            Err(e) => report.other_errors.push(crate::cause::render(&e)),
        }
    }
    // One live-updated event per run, with every changed name (acmetool), and a
    // reconcile-failed event naming what could not be satisfied.
    run_hooks(
        &opts.hooks,
        Event::LiveUpdated {
            names: &report.relinked,
        },
    )
    .await;
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
    let lapsing = lapsing(&store, &report.targets, &targets, &summaries, now);
    run_hooks(&opts.hooks, Event::CertificateExpiring { names: &lapsing }).await;
    for _ in 0..report.other_errors.len() {
        report.count(ErrorKind::Other);
    }
    tracing::debug!("reconciled in {:.0?}", started.elapsed());
    report.loaded.targets = targets;
    report.loaded.summaries = summaries;
    report.loaded.ari = ari;
    Ok(report)
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

/// The targets of `outcomes` that were not satisfied in this run (failed, or deferred by the
/// CA) while their current certificate is in the last sixth of its life, with its end.
fn expiring(
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
/// ([`plan::deferral_outlives`] at the time their run record allows, or now): the
/// `certificate-expiring` event.
fn lapsing(
    store: &Store,
    outcomes: &[TargetOutcome],
    targets: &[Target],
    summaries: &crate::cert::CertSet,
    now: OffsetDateTime,
) -> Vec<String> {
    let by_file: std::collections::HashMap<&str, &Target> =
        targets.iter().map(|t| (t.file.as_str(), t)).collect();
    outcomes
        .iter()
        .filter(|o| matches!(o.result, Outcome::Failed(_) | Outcome::Deferred(_)))
        .filter_map(|o| {
            let t = by_file.get(o.file.as_str())?;
            let best = crate::cert::best_cert(t, summaries, now);
            let next = store
                .target_record(&o.file)
                .next_attempt
                .map_or(now, |n| n.max(now));
            plan::deferral_outlives(best, next, now).map(|_| names_of(t))
        })
        .flatten()
        .collect()
}

fn names_of(t: &Target) -> Vec<String> {
    t.satisfy_names.iter().map(|n| n.to_string()).collect()
}

/// Downloads the certificates of finished orders recorded by an earlier, interrupted run
/// (acmetool's "uncached" certificate directories). Failures are reported, never fatal: the
/// directory stays and the next run tries again.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the pieces are independent inputs"
)]
async fn download_uncached<C: Connector>(
    store: &Store,
    connector: &C,
    uncached: &[crate::store::CertRecord],
    targets: &[Target],
    (inv, summaries): (&mut Inventory, &mut crate::cert::CertSet),
    (now, clock): (OffsetDateTime, fn() -> OffsetDateTime),
    report: &mut Report,
) {
    type Login<S> = Result<S, (String, plan::DownloadFailure)>;
    let mut sessions: BTreeMap<String, Login<<C::Ca as Ca>::Session>> = BTreeMap::new();
    for c in uncached {
        let (Some(url), Some(account_id)) = (&c.url, &c.account) else {
            report.other_errors.push(format!(
                "certs/{}: order was not recorded completely (no url or account link); it is ignored",
                c.id
            ));
            continue;
        };
        if !sessions.contains_key(account_id) {
            let session = login_account(connector, inv, account_id, &bundle_lookup(targets, None))
                .await
                .map_err(|e| {
                    let gone = e.chain().any(|c| {
                        matches!(
                            c.downcast_ref::<AcmeError>(),
                            Some(AcmeError::AccountDoesNotExist)
                        )
                    }) || !inv.accounts.iter().any(|a| &a.id == account_id);
                    let failure = if gone {
                        plan::DownloadFailure::Refused
                    } else {
                        plan::DownloadFailure::Transient
                    };
                    (crate::cause::render(&e), failure)
                });
            sessions.insert(account_id.clone(), session);
        }
        let session = match sessions.get(account_id) {
            Some(Ok(s)) => s,
            Some(Err((e, failure))) => {
                let failure = *failure;
                download_failed(store, &c.id, e, failure, now);
                continue;
            }
            None => continue,
        };
        // Which targets could want this certificate in another chain is known only once it
        // is downloaded: alternates are asked for if any target at this CA prefers a chain.
        let provider = inv
            .accounts
            .iter()
            .find(|a| &a.id == account_id)
            .map(|a| a.directory_url.clone());
        let preferring: Vec<&Target> = targets
            .iter()
            .filter(|t| Some(&t.provider) == provider.as_ref() && !t.preferred_chain.is_empty())
            .collect();
        let fetched = session
            .fetch_order_certificate(url, !preferring.is_empty())
            .await;
        let result = match fetched {
            Ok(None) => {
                tracing::info!(
                    "certs/{}: the CA is still processing the order; trying next run",
                    c.id
                );
                continue;
            }
            Ok(Some(chains)) => cert::split_chain(&chains.default)
                .and_then(|ders| cert::leaf_info(&ders[0]))
                .and_then(|leaf| {
                    // The preference of the first target this certificate satisfies.
                    let preferred = preferring
                        .iter()
                        .find(|t| {
                            t.satisfy_names
                                .iter()
                                .all(|n| leaf.names.iter().any(|l| l == n.as_str()))
                        })
                        .map(|t| t.preferred_chain.as_slice())
                        .unwrap_or_default();
                    let pem = keep_chain(&format!("certs/{}", c.id), &chains, preferred);
                    let files = cert::validate_issued(pem, &leaf.key_id, &leaf.names, clock())?;
                    let has_key = inv.key_ids.contains(&leaf.key_id);
                    store.finish_cert(&c.id, has_key.then_some(leaf.key_id.as_str()), &files)?;
                    Ok(files.leaf.into_summary(&c.id, has_key, false, None))
                }),
            Err(e @ AcmeError::Gone { .. }) => {
                let e = e.to_string();
                download_failed(store, &c.id, &e, plan::DownloadFailure::Refused, now);
                continue;
            }
            Err(e) => {
                let e = crate::cause::render_dyn(&e);
                download_failed(store, &c.id, &e, plan::DownloadFailure::Transient, now);
                continue;
            }
        };
        match result {
            Ok(summary) => {
                tracing::info!(
                    "certs/{}: downloaded the certificate of an earlier order",
                    c.id
                );
                report
                    .downloaded
                    .push((c.id.clone(), summary.names.clone(), summary.not_after));
                inv.certs.retain(|r| r.id != c.id);
                summaries.push(summary);
            }
            Err(e) => download_failed(
                store,
                &c.id,
                &crate::cause::render(&e),
                plan::DownloadFailure::Transient,
                now,
            ),
        }
    }
}

/// An earlier order's certificate could not be downloaded. It is a warning, never a failure
/// of the run: a target that needs the certificate is not satisfied and gets a new order
/// (whose outcome counts). The order is given up once that is certain or it is too old
/// ([`plan::give_up_order`]).
fn download_failed(
    store: &Store,
    id: &str,
    error: &str,
    failure: plan::DownloadFailure,
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

/// ARI (RFC 9773): the CA's renewal window of each target's best certificate, by
/// certificate id. Cached windows are used as they are until their Retry-After passes; then
/// the CA is asked again (one login per provider, only if its directory offers
/// `renewalInfo`, at most `jobs` questions in flight). A CA whose directory has no
/// `renewalInfo` is remembered as such for a day, so runs with nothing to do send nothing.
/// Best effort: a CA that cannot be asked leaves the cached window, or the local rule, in
/// force, and never fails the run.
async fn renewal_windows<C: Connector>(
    store: &Store,
    connector: &C,
    targets: &[Target],
    (summaries, inv): (&cert::CertSet, &Inventory),
    jobs: usize,
    now: OffsetDateTime,
) -> BTreeMap<String, AriRecord> {
    let mut out = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    // (provider, extra roots) -> [(certificate id, ARI id)]
    type Due = BTreeMap<(String, Option<PathBuf>), Vec<(String, String)>>;
    let mut due = Due::new();
    for t in targets {
        let Some(best) = cert::best_cert(t, summaries, now) else {
            continue;
        };
        if !seen.insert(best.id.as_str()) {
            continue;
        }
        let cached = store.ari_record(&best.id);
        if let Some(ari_id) = &best.ari_id
            && now < best.not_after
            && ari::fetch_due(cached.as_ref(), now)
        {
            // Asked of the CA that issued it (a fallback's certificate is known only there).
            let provider = store
                .cert_provider(&best.id)
                .unwrap_or_else(|| t.provider.clone());
            due.entry((provider, t.provider_ca_bundle.clone()))
                .or_default()
                .push((best.id.clone(), ari_id.clone()));
        }
        if let Some(rec) = cached {
            out.insert(best.id.clone(), rec);
        }
    }
    for ((provider, roots), certs) in due {
        if store.provider_lacks_ari(&provider, now) {
            continue;
        }
        match fetch_windows(
            store,
            connector,
            &provider,
            roots.as_ref(),
            inv,
            &certs,
            jobs,
            now,
        )
        .await
        {
            Ok(fresh) => out.extend(fresh),
            // Not a problem for anyone yet: the local rule renews in time without it, and a
            // certificate that is due is ordered, whose failure is reported.
            Err(e) => tracing::info!(
                "renewal information from {provider}: {}",
                crate::cause::render(&e)
            ),
        }
    }
    out
}

/// Asks the CA at `provider` for the windows of `certs` (certificate id, ARI id); see
/// [`renewal_windows`].
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the pieces are independent inputs"
)]
async fn fetch_windows<C: Connector>(
    store: &Store,
    connector: &C,
    provider: &str,
    roots: Option<&PathBuf>,
    inv: &Inventory,
    certs: &[(String, String)],
    jobs: usize,
    now: OffsetDateTime,
) -> Result<Vec<(String, AriRecord)>> {
    let ca = connector.connect(provider, roots)?;
    if ca.unresponsive() {
        bail!(STOPPED_ANSWERING);
    }
    if ca.directory_meta().await?.renewal_info.is_none() {
        if let Err(e) = store.note_provider_lacks_ari(provider, now) {
            tracing::warn!("{e:#}");
        }
        return Ok(Vec::new());
    }
    let Some(acct) = inv.accounts.iter().find(|a| a.directory_url == provider) else {
        return Ok(Vec::new());
    };
    let pem = acct.read_key()?;
    let session = Arc::new(ca.login(&pem).await?);
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
    Ok(out)
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
/// Best effort, as in [`renewal_windows`]: a CA without ARI is sent nothing, and one that
/// stopped answering is not asked.
async fn first_window<I: Issuer>(
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

/// Obtains certificates for `todo`; returns the new certificates' summaries.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the pieces are independent inputs"
)]
async fn obtain<C: Connector>(
    store: &Arc<Store>,
    connector: &C,
    interaction: &Interaction,
    opts: &Options,
    now: OffsetDateTime,
    todo: &[Target],
    (inv, summaries): (&Inventory, &cert::CertSet),
    ari: &BTreeMap<String, AriRecord>,
    report: &mut Report,
) -> Vec<CertSummary> {
    let mut new_certs = Vec::new();
    // Group targets by (provider, extra roots): one account session each.
    let mut groups: Groups = BTreeMap::new();
    for t in todo {
        groups
            .entry((t.provider.clone(), t.provider_ca_bundle.clone()))
            .or_default()
            .push(t.clone());
    }

    // Listeners: the union of every target's addresses, started once.
    let mut addrs: Vec<(String, bool)> = Vec::new();
    let http_todo = || {
        todo.iter()
            .filter(|t| t.challenge.types.contains(&ChallengeKind::Http01))
    };
    if http_todo().any(|t| t.challenge.listen_http) {
        addrs.extend(LISTEN_HTTP.iter().map(|a| ((*a).to_owned(), false)));
    }
    if http_todo().any(|t| t.challenge.listen_proxy) {
        addrs.extend(LISTEN_PROXY.iter().map(|a| ((*a).to_owned(), false)));
    }
    for t in todo {
        for a in &t.challenge.http_ports {
            if !addrs.iter().any(|(x, _)| x == a) {
                addrs.push((a.clone(), true));
            }
        }
    }
    let tokens = Arc::new(TokenMap::default());
    let listeners = if todo.is_empty() {
        None
    } else {
        Some(Listeners::start(&addrs, tokens.clone()).await)
    };
    let listening = listeners.as_ref().is_some_and(|l| !l.bound().is_empty());
    // tls-alpn-01 listeners, for the targets that allow that type.
    let mut alpn_addrs: Vec<(String, bool)> = Vec::new();
    for t in todo
        .iter()
        .filter(|t| t.challenge.types.contains(&ChallengeKind::TlsAlpn01))
    {
        for a in &t.challenge.tls_alpn_addrs {
            if !alpn_addrs.iter().any(|(x, _)| x == a) {
                alpn_addrs.push((a.clone(), true));
            }
        }
    }
    let alpn_certs = Arc::new(crate::challenge::tlsalpn::AlpnCerts::default());
    let alpn_listeners = if alpn_addrs.is_empty() {
        None
    } else {
        Some(crate::challenge::tlsalpn::AlpnListeners::start(&alpn_addrs, alpn_certs.clone()).await)
    };
    let alpn_listening = alpn_listeners
        .as_ref()
        .is_some_and(|l| !l.bound().is_empty());

    // Targets that have a certificate already: what they get now is a renewal.
    let renewing: std::collections::HashSet<&str> = todo
        .iter()
        .filter(|t| cert::best_cert(t, summaries, now).is_some())
        .map(|t| t.file.as_str())
        .collect();
    let by_file: std::collections::HashMap<&str, &Target> =
        todo.iter().map(|t| (t.file.as_str(), t)).collect();
    // Round 0 orders every target from its provider; a target whose CA cannot issue in this
    // run (acme::failover) goes on to its next fallback provider in the next round (round n
    // asks the n-th). A fleet node does not fall over: the fleet's lock is per order.
    let fall_overs = opts.gate.is_none();
    let mut round = 0;
    while !groups.is_empty() {
        let mut next: Groups = BTreeMap::new();
        let mut work = Vec::new();
        for ((provider, roots), group) in std::mem::take(&mut groups) {
            let session = match connector.connect(&provider, roots.as_ref()) {
                // Its requests already went unanswered in this run (renewal information,
                // downloads): asking again would only hold the other CAs' orders up.
                Ok(ca) if ca.unresponsive() => Err(anyhow::Error::new(failover::StoppedAnswering(
                    STOPPED_ANSWERING,
                ))),
                Ok(ca) => account_session(store, &ca, &provider, inv, interaction).await,
                Err(e) => Err(e),
            };
            let (session, account_id) = match session {
                Ok(s) => s,
                Err(e) => {
                    // At a fallback, an account that cannot be had (terms not agreed to, no
                    // EAB) is a reason to ask the next one too.
                    let why = failover::decide(failover::failure_of(&e))
                        .map(failover::FallOver::says)
                        .or((round > 0).then_some("could not be used"));
                    let mut failed = Failure::of(&e.context(format!("CA {provider}")));
                    // Only a rate limit backs off here: the account step is not the target's.
                    if failed.backoff == Backoff::Yes {
                        failed.backoff = Backoff::No;
                    }
                    for t in group {
                        if let Some(why) = why.filter(|_| fall_overs)
                            && let Some(to) = fall_over(&t, round, &provider, why, &failed.error)
                        {
                            next.entry((to, roots.clone())).or_default().push(t);
                            continue;
                        }
                        report.count(kind_of(failed.backoff));
                        let next = record(store, &t.file, now, Some(&failed));
                        let best = cert::best_cert(&t, summaries, now);
                        report.targets.push(TargetOutcome {
                            file: t.file.clone(),
                            names: names_of(&t),
                            result: failure(&failed, best, next, now),
                        });
                    }
                    continue;
                }
            };
            let session = Arc::new(session);
            let account_id = Arc::new(account_id);
            let provider = Arc::new(provider);
            for t in group {
                // The certificate this order replaces, named by its ARI id (RFC 9773 §5): only
                // when this CA gave it a window, so it knows the certificate (never one from
                // another CA).
                let replaces = cert::best_cert(&t, summaries, now)
                    .filter(|b| store.cert_provider(&b.id).is_none_or(|p| p == *provider))
                    .and_then(|b| ari.get(&b.id))
                    .map(|r| r.ari_id.clone());
                work.push((
                    t,
                    session.clone(),
                    account_id.clone(),
                    replaces,
                    provider.clone(),
                ));
            }
        }
        // At most `jobs` orders in flight; each task is created when a slot frees up.
        let clock = opts.clock;
        let tasks = work.into_iter().map(|(t, session, account_id, replaces, provider)| {
            let (store, tokens, hooks, alpn_certs, gate, share) = (
                store.clone(),
                tokens.clone(),
                opts.hooks.clone(),
                alpn_certs.clone(),
                opts.gate.clone(),
                opts.share.clone(),
            );
            async move {
                if session.ca_unresponsive() {
                    // A CA that stopped answering would hold every remaining order for the full
                    // request timeout; leave them to the next run (no backoff: not its answer).
                    let e = Failure::local(STOPPED_ANSWERING.to_owned());
                    let why = Some(failover::FallOver::Unreachable);
                    return (t.file.clone(), names_of(&t), provider, Err((e, why)));
                }
                if let Some(until) = session.ca_paused_until() {
                    // Asked to slow down for longer than this run waits: an order would only be
                    // refused. Deferred until the CA's time, like a refused order.
                    let until = whole_seconds_up(OffsetDateTime::from(until));
                    let e = Failure {
                        error: format!(
                            "not attempted in this run: the CA asked to slow down for longer than this run waits (--rate-limit-wait); retry after {}",
                            until
                                .format(&time::format_description::well_known::Rfc3339)
                                .unwrap_or_default()
                        ),
                        backoff: Backoff::RateLimited,
                        retry_at: Some(until),
                    };
                    let why = Some(failover::FallOver::RateLimited);
                    return (t.file.clone(), names_of(&t), provider, Err((e, why)));
                }
                if let Some(g) = &gate
                    && let Some((until, node)) = g.ca_paused(&provider).await
                {
                    // The CA told another node (or this one) to slow down for every order:
                    // deferred until its time on every node, as if it had told this one.
                    let e = Failure {
                        error: format!(
                            "not attempted: the CA told node {node} of the fleet to slow down; retry after {}",
                            until
                                .format(&time::format_description::well_known::Rfc3339)
                                .unwrap_or_default()
                        ),
                        backoff: Backoff::RateLimited,
                        retry_at: Some(until),
                    };
                    let why = Some(failover::FallOver::RateLimited);
                    return (t.file.clone(), names_of(&t), provider, Err((e, why)));
                }
                let claim = match &gate {
                    Some(gate) => gate.claim(&t.file).await,
                    None => Claim::Order,
                };
                if claim == Claim::No {
                    // The fleet's: another node orders it, or already has.
                    return (t.file.clone(), names_of(&t), provider, Ok(None));
                }
                let listens = listening
                    && (t.challenge.listen_http
                        || t.challenge.listen_proxy
                        || !t.challenge.http_ports.is_empty());
                let mut responder = TargetResponder::new(&t.file, &t.challenge, tokens, listens, hooks);
                if alpn_listening {
                    responder = responder.with_tls_alpn(alpn_certs);
                }
                if let Some(share) = share {
                    responder = responder.with_share(share);
                }
                let res = match claim {
                    Claim::Finish(f) if f.account == *account_id => {
                        finish_one(&store, &*session, &account_id, &t, &f, clock).await
                    }
                    _ => {
                        issue_one(
                            &store,
                            &*session,
                            &account_id,
                            &t,
                            replaces.as_deref(),
                            (&responder, gate.as_deref()),
                            clock,
                        )
                        .await
                    }
                }
                .map_err(|e| {
                    let pause = crate::acme::pace::ca_wide_until(&e, &names_of(&t), clock());
                    (Failure::of(&e), failover::decide(failover::failure_of(&e)), pause)
                });
                let res = match (res, &gate) {
                    (Err((failed, why, Some(until))), Some(g)) => {
                        g.slowed(&provider, until).await;
                        Err((failed, why))
                    }
                    (res, _) => res.map_err(|(failed, why, _)| (failed, why)),
                };
                if let Ok(s) = &res {
                    first_window(&store, &*session, s, clock()).await;
                }
                let res = match (&gate, res) {
                    (None, res) => res.map(Some),
                    (Some(g), Ok(s)) => match g.finish(&t.file, Ok(&s.id)).await {
                        Ok(()) => Ok(Some(s)),
                        Err(e) => Err((Failure::local(crate::cause::render(&e)), None)),
                    },
                    (Some(g), Err((failed, why))) => {
                        // The failure is the target's either way; the fleet's record is best effort.
                        let _ = g.finish(&t.file, Err(&failed)).await;
                        Err((failed, why))
                    }
                };
                (t.file.clone(), names_of(&t), provider, res)
            }
        });
        run_bounded(tasks, opts.jobs, |joined: Result<OrderOutcome, _>| {
            let (file, names, provider, res) = match joined {
                Ok(v) => v,
                Err(e) => {
                    report
                        .other_errors
                        .push(format!("an order task failed: {e}"));
                    return;
                }
            };
            let result = match res {
                Ok(None) => Outcome::Unchanged,
                Ok(Some(summary)) => {
                    record(store, &file, now, None);
                    let issued = Issued {
                        id: summary.id.clone(),
                        not_after: summary.not_after,
                        renewed: renewing.contains(file.as_str()),
                    };
                    new_certs.push(summary);
                    Outcome::Issued(issued)
                }
                Err((failed, why)) => {
                    let t = by_file.get(file.as_str());
                    if let (Some(why), Some(t)) = (why.filter(|_| fall_overs), t)
                        && let Some(to) = fall_over(t, round, &provider, why.says(), &failed.error)
                    {
                        next.entry((to, t.provider_ca_bundle.clone()))
                            .or_default()
                            .push((*t).clone());
                        return;
                    }
                    let next = record(store, &file, now, Some(&failed));
                    report.count(kind_of(failed.backoff));
                    let best = t.and_then(|t| cert::best_cert(t, summaries, now));
                    failure(&failed, best, next, now)
                }
            };
            report.targets.push(TargetOutcome {
                file,
                names,
                result,
            });
        })
        .await;
        groups = next;
        round += 1;
    }
    drop(listeners);
    drop(alpn_listeners);
    report.targets.sort_by(|a, b| a.file.cmp(&b.file));
    new_certs
}

/// One order task's result: target file, names, the CA asked, and the certificate (none:
/// the fleet's gate kept the order to another node) or how the attempt failed (and why the
/// target's next CA is to be asked, if it is).
type OrderOutcome = (
    String,
    Vec<String>,
    Arc<String>,
    Result<Option<CertSummary>, (Failure, Option<failover::FallOver>)>,
);

/// Targets to order, by (provider, extra roots): one account session each.
type Groups = BTreeMap<(String, Option<PathBuf>), Vec<Target>>;

/// The CA `t` is ordered from after `provider`, which `says` (e.g. "failed") with `error` in
/// round `round` (0: its preferred provider), with the one line that says so; none when it
/// has no further fallback provider.
fn fall_over(t: &Target, round: usize, provider: &str, says: &str, error: &str) -> Option<String> {
    let to = t.fallback_providers.get(round)?.clone();
    tracing::warn!(
        "{}: {provider} {says} ({error}); ordering from {to} instead",
        names_of(t).join(", ")
    );
    Some(to)
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
fn whole_seconds_up(at: OffsetDateTime) -> OffsetDateTime {
    match at.replace_nanosecond(0) {
        Ok(whole) if whole < at => whole + time::Duration::SECOND,
        _ => at,
    }
}

/// The outcome of a target that `failed`, waiting until `next`, its certificate in use being
/// `best`: a refusal for the CA's rate defers it ([`deferral`]).
fn failure(
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
fn record(
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
fn deferral(
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

/// Everything for one target: key, CSR, order, validation of the result, cert directory.
/// On a fleet node the order is recorded with the `gate` before it is finalized.
async fn issue_one<I: Issuer>(
    store: &Store,
    session: &I,
    account_id: &str,
    t: &Target,
    replaces: Option<&str>,
    (responder, gate): (&TargetResponder, Option<&dyn OrderGate>),
    clock: fn() -> OffsetDateTime,
) -> Result<CertSummary> {
    let key = match &t.key_id {
        Some(id) => store
            .load_key(id)
            .with_context(|| format!("request.key.id {id}"))?,
        None => {
            let spec = t.key;
            tokio::task::spawn_blocking(move || PrivateKey::generate(spec))
                .await
                .context("key generation task")??
        }
    };
    // Saved before ordering (acmetool): a finished order must never lack its key.
    store.save_key(&key)?;
    let csr = build_csr(t, &key)?;
    let names: Vec<String> = t.request_names.iter().map(|n| n.to_string()).collect();
    let on_finalized = |order_url: &str| -> Result<()> {
        store.begin_cert(order_url, Some(account_id))?;
        Ok(())
    };
    let options = OrderOptions {
        replaces,
        profile: t.profile.as_deref(),
        alternate_chains: !t.preferred_chain.is_empty(),
    };
    let recorded;
    let ordering: &dyn Responder = match gate {
        Some(gate) => {
            recorded = Recorded {
                inner: responder,
                gate,
                file: &t.file,
                key_id: &key.id,
                account: account_id,
            };
            &recorded
        }
        None => responder,
    };
    let issued = session
        .issue(&t.request_names, &csr, options, ordering, &on_finalized)
        .await
        .map_err(|e| anyhow!(e))?;
    let id = crate::keys::ids::cert_id(&issued.order_url);
    let pem = keep_chain(&format!("certs/{id}"), &issued.chains, &t.preferred_chain);
    // Valid at the time it arrives: the CA may date it from the moment it issued it.
    let files = cert::validate_issued(pem, &key.id, &names, clock())?;
    // Before `cert`, which makes the directory complete.
    store.write_cert_validations(&id, &responder.validations())?;
    store.finish_cert(&id, Some(&key.id), &files)?;
    if let Some(p) = &t.profile {
        store.write_cert_profile(&id, p)?;
    }
    tracing::info!("obtained certificate {id} for {}", names.join(", "));
    Ok(files.leaf.into_summary(&id, true, false, t.profile.clone()))
}

/// Finishes the order `f` that a process which no longer holds the target recorded as
/// finalizing (a fleet node, doc/cluster.md): its certificate is downloaded (the order
/// finalized first if the CA still waits for that), never a second one ordered.
async fn finish_one<I: Issuer>(
    store: &Store,
    session: &I,
    account_id: &str,
    t: &Target,
    f: &Finishing,
    clock: fn() -> OffsetDateTime,
) -> Result<CertSummary> {
    let key = store
        .load_key(&f.key_id)
        .with_context(|| format!("the key of order {} (placed by node {})", f.url, f.node))?;
    let csr = build_csr(t, &key)?;
    let names: Vec<String> = t.request_names.iter().map(|n| n.to_string()).collect();
    let chains = session
        .finish_order(&f.url, &csr, !t.preferred_chain.is_empty())
        .await
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("finishing order {} placed by node {}", f.url, f.node))?
        .ok_or_else(|| {
            anyhow!(
                "the CA is still processing order {} (placed by node {}); trying next run",
                f.url,
                f.node
            )
        })?;
    store.begin_cert(&f.url, Some(account_id))?;
    let id = crate::keys::ids::cert_id(&f.url);
    let pem = keep_chain(&format!("certs/{id}"), &chains, &t.preferred_chain);
    let files = cert::validate_issued(pem, &key.id, &names, clock())?;
    // As the node that placed the order recorded them; before `cert`, as in `issue_one`.
    store.write_cert_validations(&id, &f.validations)?;
    store.finish_cert(&id, Some(&key.id), &files)?;
    if let Some(p) = &t.profile {
        store.write_cert_profile(&id, p)?;
    }
    tracing::info!(
        "obtained certificate {id} for {} from the order node {} finalized",
        names.join(", "),
        f.node
    );
    Ok(files.leaf.into_summary(&id, true, false, t.profile.clone()))
}

/// A target's responder that also records the order with the fleet's gate before it is
/// finalized ([`Responder::finalizing`]).
struct Recorded<'a> {
    inner: &'a TargetResponder,
    gate: &'a dyn OrderGate,
    file: &'a str,
    key_id: &'a str,
    account: &'a str,
}

impl Responder for Recorded<'_> {
    fn kinds(&self) -> &[crate::acme::ChallengeKind] {
        self.inner.kinds()
    }
    fn usable(&self, ch: &crate::acme::Challenge) -> Result<(), crate::acme::UnusableChallenge> {
        self.inner.usable(ch)
    }
    fn precheck<'a>(
        &'a self,
        ch: &'a crate::acme::Challenge,
        now: i64,
    ) -> crate::acme::BoxFuture<'a, Result<(), crate::acme::UnusableChallenge>> {
        self.inner.precheck(ch, now)
    }
    fn present_all<'a>(
        &'a self,
        chs: &'a [crate::acme::Challenge],
    ) -> crate::acme::BoxFuture<'a, Result<()>> {
        self.inner.present_all(chs)
    }
    fn cleanup_all<'a>(
        &'a self,
        chs: &'a [crate::acme::Challenge],
    ) -> crate::acme::BoxFuture<'a, ()> {
        self.inner.cleanup_all(chs)
    }
    fn finalizing<'a>(&'a self, order_url: &'a str) -> crate::acme::BoxFuture<'a, Result<()>> {
        self.gate.finalizing(
            self.file,
            order_url,
            self.key_id,
            self.account,
            self.inner.validations(),
        )
    }
}

/// The chain to store among those the CA offered, by `preferred` issuer names (see
/// [`crate::chain`]); the choice, and any alternate left out, is logged for `what`.
fn keep_chain<'a>(what: &str, chains: &'a Chains, preferred: &[String]) -> &'a str {
    if preferred.is_empty() {
        return &chains.default;
    }
    let choice = crate::chain::choose(&chains.default, &chains.alternates, preferred);
    for w in &choice.ignored {
        tracing::warn!("{what}: {w}");
    }
    tracing::info!("{what}: {}", choice.describe());
    match choice.index.checked_sub(1) {
        Some(i) => chains.alternates.get(i).unwrap_or(&chains.default),
        None => &chains.default,
    }
}

/// CSR: SANs = request names (IP addresses as iPAddress SANs), CN = the first DNS name when
/// it fits (64 characters); never an IP address in the CN (RFC 8738 practice).
fn build_csr(t: &Target, key: &PrivateKey) -> Result<Vec<u8>> {
    let names: Vec<String> = t.request_names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names.clone()).context("building the CSR")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let first_dns = t
        .request_names
        .iter()
        .find(|n| n.ip().is_none())
        .map(|n| n.to_string());
    if let Some(first) = first_dns.filter(|n| n.len() <= 64) {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.as_str());
    }
    if t.must_staple {
        // TLS Feature extension (RFC 7633) = status_request.
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 5, 5, 7, 1, 24],
                vec![0x30, 0x03, 0x02, 0x01, 0x05],
            ));
    }
    let csr = params
        .serialize_request(&key.pair)
        .context("signing the CSR")?;
    Ok(csr.der().to_vec())
}

#[cfg(test)]
mod tables;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeySpec;
    use crate::target::RawTarget;

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
