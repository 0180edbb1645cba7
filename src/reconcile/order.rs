//! The order phase: the plan's orders ([`crate::plan::work::Order`]) carried out, grouped by
//! CA (one account session each, in the plan's CA order), at most `jobs` in flight, the
//! challenge servers started once for all of them. A target whose CA cannot issue in this run
//! ([`failover`]) is ordered from its next fallback provider in the next round. Each outcome
//! is recorded ([`record`]) and reported; one failing target never stops the others.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;

use super::ari::first_window;
use super::issue::{finish_one, issue_one};
use super::record::{Failure, failure, kind_of, names_of, record, whole_seconds_up};
use super::{Claim, Issued, Options, Outcome, Report, Sessions, TargetOutcome, run_bounded};
use crate::account::{AccountLookup, STOPPED_ANSWERING, account_session, look_up_account};
use crate::acme::{Ca, ChallengeKind, Connector, Issuer, failover};
use crate::cert::{self, CertSummary};
use crate::challenge::TargetResponder;
use crate::challenge::listener::{Listeners, TokenMap};
use crate::challenge::tlsalpn::{AlpnCerts, AlpnListeners};
use crate::interact::Interaction;
use crate::plan::backoff::Backoff;
use crate::plan::work::{self, CaKey, Order};
use crate::store::Store;
use crate::target::Target;
use crate::world::World;

/// acmetool's `listen` addresses: port 80 everywhere.
const LISTEN_HTTP: [&str; 2] = ["0.0.0.0:80", "[::]:80"];
/// acmetool's `proxy` addresses: 402 and 4402 on loopback.
const LISTEN_PROXY: [&str; 4] = ["127.0.0.1:402", "[::1]:402", "127.0.0.1:4402", "[::1]:4402"];

/// One target's order as it goes from CA to CA.
#[derive(Clone)]
struct Job {
    t: Target,
    order: Order,
}

/// Jobs by the CA they are ordered from in a round.
type Groups = BTreeMap<CaKey, Vec<Job>>;

/// One order task's result: the job, the CA asked, and the certificate (none: the fleet's
/// gate kept the order to another node) or how the attempt failed (and why the target's next
/// CA is to be asked, if it is).
type TaskResult = (
    Job,
    Arc<String>,
    Result<Option<CertSummary>, (Failure, Option<failover::FallOver>)>,
);

/// Carries out `orders` (targets of `world`); returns the new certificates' summaries.
pub(super) async fn obtain<C: Connector>(
    store: &Arc<Store>,
    (connector, interaction, sessions): (&C, &Interaction, &Sessions<<C::Ca as Ca>::Session>),
    opts: &Options,
    now: OffsetDateTime,
    orders: &[Order],
    world: &World,
    report: &mut Report,
) -> Vec<CertSummary> {
    let jobs: Vec<Job> = orders
        .iter()
        .map(|o| Job {
            t: world.targets[o.target].clone(),
            order: o.clone(),
        })
        .collect();
    let servers = Servers::start(&jobs).await;
    let mut groups: Groups = BTreeMap::new();
    for job in jobs {
        groups.entry(job.order.ca.clone()).or_default().push(job);
    }
    let mut settle = Settle::new((store, world), now, report);
    // Round 0 orders every target from its provider; round n asks the n-th fallback of the
    // targets whose CA could not issue in the round before.
    while !groups.is_empty() {
        let mut work = Vec::new();
        for (ca, group) in std::mem::take(&mut groups) {
            // A CA the fleet holds back: this node logs in to finish orders recorded as
            // finalizing, but registers no account there before the CA's time.
            let paused = match &opts.gate {
                Some(g) => fleet_paused(&**g, &ca.provider).await,
                None => None,
            };
            let conn = (connector, interaction, sessions);
            let opened = open_session(store, conn, &ca, world, paused.is_some());
            match opened.await {
                Err(e) if e.is::<NotRegistering>() => {
                    // Paused with no account there: on to a fallback CA, as a paused CA's
                    // order would.
                    let (failed, why) = paused.unwrap_or_else(|| (Failure::of(&e), None));
                    settle.fail_or_fall_over(&ca, group, &failed, why.map(|w| w.says()));
                }
                Ok((session, account_id)) => {
                    let account_id = Arc::new(account_id);
                    let provider = Arc::new(ca.provider.clone());
                    work.extend(
                        group.into_iter().map(|job| {
                            (job, (session.clone(), account_id.clone(), provider.clone()))
                        }),
                    );
                }
                Err(e) => {
                    if let Some(g) = &opts.gate
                        && let Some(until) =
                            crate::acme::pace::ca_wide_until(&e, &[], opts.clock.now_utc())
                    {
                        // E.g. too many registrations from this address: no node of the
                        // fleet registers there until the CA's time.
                        g.slowed(&ca.provider, until).await;
                    }
                    settle.account_failed(&ca, group, e)
                }
            }
        }
        // Each task is created when a slot frees up, so memory stays flat.
        let round = settle.round;
        let tasks = work.into_iter().map(|(job, shared)| {
            order_task(job, shared, (store.clone(), servers.clone(), round), opts)
        });
        run_bounded(tasks, opts.jobs, |joined| settle.task_done(joined)).await;
        groups = std::mem::take(&mut settle.next);
        settle.round += 1;
    }
    drop(servers);
    settle.report.targets.sort_by(|a, b| a.file.cmp(&b.file));
    settle.new_certs
}

/// A CA the fleet holds back, where this node has no registered account: it registers none
/// before the CA's time ([`open_session`]).
#[derive(Debug, thiserror::Error)]
#[error("no account registered at {0}, and the fleet registers none there now")]
struct NotRegistering(String);

/// A session at the CA `ca` with the account the state directory has (or registers) there:
/// the one the renewal-information phase opened, if it did. `no_registering`: only an account
/// the CA knows is used ([`NotRegistering`] otherwise).
async fn open_session<C: Connector>(
    store: &Store,
    (connector, interaction, sessions): (&C, &Interaction, &Sessions<<C::Ca as Ca>::Session>),
    ca: &CaKey,
    world: &World,
    no_registering: bool,
) -> anyhow::Result<(Arc<<C::Ca as Ca>::Session>, String)> {
    let c = connector.connect(&ca.provider, ca.roots.as_ref())?;
    if c.unresponsive() {
        // Its requests already went unanswered in this run (renewal information, downloads):
        // asking again would only hold the other CAs' orders up.
        return Err(anyhow::Error::new(failover::StoppedAnswering(
            STOPPED_ANSWERING,
        )));
    }
    if let Some((session, id)) = sessions.get(ca) {
        return Ok((session.clone(), id.clone()));
    }
    if no_registering {
        return match look_up_account(&c, &ca.provider, &world.inv).await? {
            AccountLookup::Registered {
                record, session, ..
            } => Ok((Arc::new(session), record.id)),
            _ => Err(anyhow::Error::new(NotRegistering(ca.provider.clone()))),
        };
    }
    let (session, id) = account_session(store, &c, &ca.provider, &world.inv, interaction).await?;
    Ok((Arc::new(session), id))
}

/// The challenge servers of a run's orders: http-01 listeners on the union of every target's
/// addresses, tls-alpn-01 listeners for the targets that allow that type; started once.
#[derive(Clone)]
struct Servers {
    tokens: Arc<TokenMap>,
    listening: bool,
    alpn_certs: Arc<AlpnCerts>,
    alpn_listening: bool,
    /// Held until the orders are done (dropping the last clone stops them).
    _running: Arc<(Option<Listeners>, Option<AlpnListeners>)>,
}

impl Servers {
    async fn start(jobs: &[Job]) -> Servers {
        let mut addrs: Vec<(String, bool)> = Vec::new();
        let http = || {
            jobs.iter()
                .map(|j| &j.t.challenge)
                .filter(|c| c.types.contains(&ChallengeKind::Http01))
        };
        if http().any(|c| c.listen_http) {
            addrs.extend(LISTEN_HTTP.iter().map(|a| ((*a).to_owned(), false)));
        }
        if http().any(|c| c.listen_proxy) {
            addrs.extend(LISTEN_PROXY.iter().map(|a| ((*a).to_owned(), false)));
        }
        let ports = jobs.iter().flat_map(|j| &j.t.challenge.http_ports);
        add_unique(&mut addrs, ports);
        let tokens = Arc::new(TokenMap::default());
        let listeners = if jobs.is_empty() {
            None
        } else {
            Some(Listeners::start(&addrs, tokens.clone()).await)
        };
        let mut alpn_addrs: Vec<(String, bool)> = Vec::new();
        let alpn = jobs
            .iter()
            .map(|j| &j.t.challenge)
            .filter(|c| c.types.contains(&ChallengeKind::TlsAlpn01))
            .flat_map(|c| &c.tls_alpn_addrs);
        add_unique(&mut alpn_addrs, alpn);
        let alpn_certs = Arc::new(AlpnCerts::default());
        let alpn_listeners = if alpn_addrs.is_empty() {
            None
        } else {
            Some(AlpnListeners::start(&alpn_addrs, alpn_certs.clone()).await)
        };
        Servers {
            tokens,
            listening: listeners.as_ref().is_some_and(|l| !l.bound().is_empty()),
            alpn_certs,
            alpn_listening: alpn_listeners
                .as_ref()
                .is_some_and(|l| !l.bound().is_empty()),
            _running: Arc::new((listeners, alpn_listeners)),
        }
    }

    /// The responder of target `t`'s order.
    fn responder(&self, t: &Target, opts: &Options) -> TargetResponder {
        let c = &t.challenge;
        let listens =
            self.listening && (c.listen_http || c.listen_proxy || !c.http_ports.is_empty());
        let tokens = self.tokens.clone();
        let mut r = TargetResponder::new(&t.file, c, tokens, listens, opts.hooks.clone());
        if self.alpn_listening {
            r = r.with_tls_alpn(self.alpn_certs.clone());
        }
        if let Some(share) = &opts.share {
            r = r.with_share(share.clone());
        }
        r
    }
}

/// Adds each of `more` not in `addrs` yet, as an explicitly configured address.
fn add_unique<'a>(addrs: &mut Vec<(String, bool)>, more: impl Iterator<Item = &'a String>) {
    for a in more {
        if !addrs.iter().any(|(x, _)| x == a) {
            addrs.push((a.clone(), true));
        }
    }
}

/// One order: skipped when its CA stopped answering or asked to pause, left to another node
/// when the fleet says so, else issued (or an order another process finalized, finished).
fn order_task<S: Issuer + 'static>(
    job: Job,
    (session, account_id, provider): (Arc<S>, Arc<String>, Arc<String>),
    (store, servers, round): (Arc<Store>, Servers, usize),
    opts: &Options,
) -> impl Future<Output = TaskResult> + Send + 'static {
    let (gate, clock) = (opts.gate.clone(), opts.clock.clone());
    let responder = servers.responder(&job.t, opts);
    async move {
        if let Some(skipped) = skipped(&*session) {
            return (job, provider, Err(skipped));
        }
        let paused = match &gate {
            Some(g) => fleet_paused(&**g, &provider).await,
            None => None,
        };
        let claim = match &gate {
            // While the fleet holds the CA's orders back, an order recorded as finalizing is
            // still finished: its certificate may exist, fetching it is no new order.
            Some(gate) => gate.claim(&job.t.file, paused.is_some()).await,
            None => Claim::Order,
        };
        let finishes = matches!(&claim, Claim::Finish(f) if f.account == *account_id);
        if let Some(paused) = paused.filter(|_| !finishes) {
            if let (Some(g), Claim::Finish(_)) = (&gate, &claim) {
                // Another account's order: not finished at this one; the lock goes.
                let _ = g.finish(&job.t.file, Err(&paused.0)).await;
            }
            return (job, provider, Err(paused));
        }
        if claim == Claim::No {
            // The fleet's: another node orders it, or already has.
            return (job, provider, Ok(None));
        }
        let target = (&job.t, &job.order);
        let res = match claim {
            Claim::Finish(f) if f.account == *account_id => {
                finish_one(&store, &*session, &account_id, target, &f, &*clock).await
            }
            _ => {
                let with = (&responder, gate.as_deref());
                issue_one(&store, &*session, &account_id, target, with, &*clock).await
            }
        }
        .map_err(|e| {
            let pause = crate::acme::pace::ca_wide_until(&e, &names_of(&job.t), clock.now_utc());
            (
                Failure::of(&e),
                failover::decide(failover::failure_of(&e)),
                pause,
            )
        });
        let res = match (res, &gate) {
            (Err((failed, why, Some(until))), Some(g)) => {
                g.slowed(&provider, until).await;
                Err((failed, why))
            }
            (res, _) => res.map_err(|(failed, why, _)| (failed, why)),
        };
        if let Ok(s) = &res {
            first_window(&store, &*session, s, clock.now_utc()).await;
        }
        let res = tell_fleet(gate.as_deref(), &job, round, res).await;
        (job, provider, res)
    }
}

/// On a fleet node (`gate`), the fleet told how the attempt at `job` in round `round` ended;
/// the outcome as the task reports it.
async fn tell_fleet(
    gate: Option<&dyn super::OrderGate>,
    job: &Job,
    round: usize,
    res: Result<CertSummary, (Failure, Option<failover::FallOver>)>,
) -> Result<Option<CertSummary>, (Failure, Option<failover::FallOver>)> {
    match (gate, res) {
        (None, res) => res.map(Some),
        (Some(g), Ok(s)) => match g.finish(&job.t.file, Ok(&s.id)).await {
            Ok(()) => Ok(Some(s)),
            Err(e) => Err((Failure::local(crate::cause::render(&e)), None)),
        },
        (Some(g), Err((failed, why))) => {
            // The failure is the target's either way; the fleet's record is best effort.
            // A target that goes on to its next CA now is not backing off: the fleet's
            // record must not keep the next CA's attempt (or another node's) waiting.
            let falls_over = why.is_some() && job.t.fallback_providers.len() > round;
            let shared = match falls_over {
                true => Failure {
                    backoff: Backoff::No,
                    retry_at: None,
                    ..failed.clone()
                },
                false => failed.clone(),
            };
            let _ = g.finish(&job.t.file, Err(&shared)).await;
            Err((failed, why))
        }
    }
}

/// Why an order is not attempted at a CA that, in this run, stopped answering (it would hold
/// every remaining order for the full request timeout; no backoff: not its answer) or asked to
/// slow down for longer than the run waits (an order would only be refused: deferred until
/// the CA's time, like a refused order).
fn skipped<S: Issuer>(session: &S) -> Option<(Failure, Option<failover::FallOver>)> {
    if session.ca_unresponsive() {
        let e = Failure::local(STOPPED_ANSWERING.to_owned());
        return Some((e, Some(failover::FallOver::Unreachable)));
    }
    let until = whole_seconds_up(OffsetDateTime::from(session.ca_paused_until()?));
    let e = Failure::rate_limited(
        "not attempted in this run: the CA asked to slow down for longer than this run waits (--rate-limit-wait)",
        until,
    );
    Some((e, Some(failover::FallOver::RateLimited)))
}

/// Why an order is not attempted while the fleet holds back every order from the CA at
/// `provider`: the CA told another node (or this one) to slow down for every order, so it is
/// deferred until its time on every node, as if it had told this one.
async fn fleet_paused(
    gate: &dyn super::OrderGate,
    provider: &str,
) -> Option<(Failure, Option<failover::FallOver>)> {
    let (until, node) = gate.ca_paused(provider).await?;
    let e = Failure::rate_limited(
        &format!("not attempted: the CA told node {node} of the fleet to slow down"),
        until,
    );
    Some((e, Some(failover::FallOver::RateLimited)))
}

/// Where the order phase's outcomes go.
struct Settle<'a> {
    store: &'a Store,
    world: &'a World,
    now: OffsetDateTime,
    /// 0: the targets' own providers; n: their n-th fallback.
    round: usize,
    fall_overs: bool,
    report: &'a mut Report,
    /// The jobs that go on to another CA in the next round.
    next: Groups,
    new_certs: Vec<CertSummary>,
}

impl<'a> Settle<'a> {
    /// Outcomes of round 0 (the targets' own providers) of a run at `now`.
    fn new(
        (store, world): (&'a Store, &'a World),
        now: OffsetDateTime,
        report: &'a mut Report,
    ) -> Self {
        Settle {
            store,
            world,
            now,
            round: 0,
            // A fleet node too: the fleet's lock is per target and attempt, and the next CA's
            // attempt claims it again (see order_task).
            fall_overs: true,
            report,
            next: Groups::new(),
            new_certs: Vec::new(),
        }
    }

    /// No account session at `ca` for `group`: each target falls over to its next CA when
    /// that helps (at a fallback, an account that cannot be had — terms not agreed to, no EAB
    /// — is a reason to ask the next one too), else fails, backing off only for a rate limit
    /// (the account step is not the target's).
    fn account_failed(&mut self, ca: &CaKey, group: Vec<Job>, e: anyhow::Error) {
        let why = failover::decide(failover::failure_of(&e))
            .map(failover::FallOver::says)
            .or((self.round > 0).then_some("could not be used"));
        let mut failed = Failure::of(&e.context(format!("CA {}", ca.provider)));
        if failed.backoff == Backoff::Yes {
            failed.backoff = Backoff::No;
        }
        self.fail_or_fall_over(ca, group, &failed, why);
    }

    /// Each of `group`'s targets goes on to its next CA when `why` says the CA at `ca` could
    /// not issue and the target has one, else fails with `failed`.
    fn fail_or_fall_over(
        &mut self,
        ca: &CaKey,
        group: Vec<Job>,
        failed: &Failure,
        why: Option<&str>,
    ) {
        for job in group {
            if let Some(why) = why
                && let Some(job) = self.fall_over(job.clone(), &ca.provider, why, &failed.error)
            {
                self.next.entry(job.order.ca.clone()).or_default().push(job);
                continue;
            }
            self.fail(&job.t, failed);
        }
    }

    /// An order task ended.
    fn task_done(&mut self, joined: Result<TaskResult, tokio::task::JoinError>) {
        let (job, provider, res) = match joined {
            Ok(v) => v,
            Err(e) => {
                let e = format!("an order task failed: {e}");
                self.report.other_errors.push(e);
                return;
            }
        };
        let result = match res {
            Ok(None) => Outcome::Unchanged,
            Ok(Some(summary)) => {
                record(self.store, &job.t.file, self.now, None);
                let issued = Issued {
                    id: summary.id.clone(),
                    not_after: summary.not_after,
                    renewed: job.order.renewal,
                };
                self.new_certs.push(summary);
                Outcome::Issued(issued)
            }
            Err((failed, why)) => {
                if let Some(why) = why
                    && let Some(to) =
                        self.fall_over(job.clone(), &provider, why.says(), &failed.error)
                {
                    self.next.entry(to.order.ca.clone()).or_default().push(to);
                    return;
                }
                return self.fail(&job.t, &failed);
            }
        };
        self.report.targets.push(TargetOutcome {
            file: job.t.file.clone(),
            names: names_of(&job.t),
            result,
        });
    }

    /// `t` failed as `failed`: recorded, counted, reported (a refusal for the CA's rate
    /// defers it).
    fn fail(&mut self, t: &Target, failed: &Failure) {
        self.report.count(kind_of(failed.backoff));
        let next = record(self.store, &t.file, self.now, Some(failed));
        let best = cert::best_cert(t, &self.world.certs, self.now);
        self.report.targets.push(TargetOutcome {
            file: t.file.clone(),
            names: names_of(t),
            result: failure(failed, best, next, self.now),
        });
    }

    /// `job` at its next CA after `provider`, which `says` (e.g. "failed") with `error` in
    /// this round, with the one line that says so; none when falling over is off or it has
    /// no further fallback provider. The order names the replaced certificate only if that
    /// CA may know it ([`work::replaces`]).
    fn fall_over(&self, mut job: Job, provider: &str, says: &str, error: &str) -> Option<Job> {
        if !self.fall_overs {
            return None;
        }
        let to = job.t.fallback_providers.get(self.round)?.clone();
        tracing::warn!(
            "{}: {provider} {says} ({error}); ordering from {to} instead",
            names_of(&job.t).join(", ")
        );
        let best = cert::best_position(&job.t, &self.world.certs, self.now);
        job.order.replaces = best.and_then(|b| work::replaces(self.world, b, &to));
        job.order.ca = CaKey {
            provider: to,
            roots: job.t.provider_ca_bundle.clone(),
        };
        Some(job)
    }
}
