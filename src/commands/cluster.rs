//! The fleet commands (`cluster-status`, `cluster-key new`, `cluster-init`) and the fleet's
//! side of `reconcile`, `want` and `unwant` on a node (doc/cluster.md).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::{ClusterKeyAction, ClusterKeyArgs, ClusterStatusArgs};
use crate::cluster::report::{self, FleetReport};
use crate::cluster::{self, ClusterConf};
use crate::exit;
use crate::settings::Settings;

/// `conf/cluster` of this state directory; a configuration error when there is none.
pub fn required_conf(settings: &Settings) -> Result<ClusterConf> {
    let conf_dir = settings.state_dir.join("conf");
    cluster::load_conf(&settings.cluster_conf, &conf_dir)?.ok_or_else(|| {
        exit::config_error(anyhow!(
            "{} does not exist: this state directory is not a fleet node (doc/cluster.md says how to make one)",
            settings.cluster_conf.display()
        ))
    })
}

/// `cluster-key new`: prints a new cluster secret key, as a line for the secret key file.
pub fn key(args: &ClusterKeyArgs) -> Result<ExitCode> {
    match args.action {
        ClusterKeyAction::New => {
            println!("{}", cluster::seal::ClusterKeys::new_line()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `cluster-status [--json]`: read-only, takes no lock. Exit 69 when no member can be
/// used.
pub fn status(settings: &Settings, args: &ClusterStatusArgs) -> Result<ExitCode> {
    let conf = required_conf(settings)?;
    let rt = super::runtime()?;
    let (probes, members, fleet) = rt.block_on(cluster::survey(conf.clone()))?;
    let mut doc = FleetReport {
        prefix: conf.prefix.clone(),
        node: conf.node.clone(),
        endpoints: report::endpoints(&probes, &members),
        ..FleetReport::default()
    };
    let available = match &fleet {
        Some(f) => match rt.block_on(report::gather(f, &mut doc)) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("acmekeep: cluster unavailable while reading it: {e}");
                false
            }
        },
        None => false,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &doc)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        print_text(&mut out, &doc, available, settings.clock.now_utc())
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(ExitCode::from(if available {
        exit::OK
    } else {
        exit::UNAVAILABLE
    }))
}

fn ago(then: &str, now: OffsetDateTime) -> String {
    match OffsetDateTime::parse(then, &Rfc3339) {
        Ok(t) => {
            let s = (now - t).whole_seconds().max(0);
            match s {
                0..120 => format!("{s} s ago"),
                120..7200 => format!("{} min ago", s / 60),
                7200..172_800 => format!("{} h ago", s / 3600),
                _ => format!("{} days ago", s / 86400),
            }
        }
        Err(_) => then.to_owned(),
    }
}

fn print_text(
    out: &mut impl Write,
    doc: &FleetReport,
    available: bool,
    now: OffsetDateTime,
) -> std::io::Result<()> {
    print_endpoints(out, doc, available)?;
    if !available {
        return Ok(());
    }
    if !doc.initialised {
        writeln!(
            out,
            "no fleet under {} yet: run `acmekeep cluster-init` on the first node",
            doc.prefix
        )?;
        return Ok(());
    }
    print_nodes(out, doc, now)?;
    print_targets(out, doc, now)?;
    print_secrets(out, doc)
}

/// The cluster's line and one line per endpoint.
fn print_endpoints(
    out: &mut impl Write,
    doc: &FleetReport,
    available: bool,
) -> std::io::Result<()> {
    let version = doc
        .endpoints
        .iter()
        .find_map(|e| e.version.clone())
        .map(|v| format!(" (etcd {v})"))
        .unwrap_or_default();
    let leader = doc
        .endpoints
        .iter()
        .find(|e| e.leader)
        .and_then(|e| e.name.clone())
        .map(|n| format!(", leader {n}"))
        .unwrap_or_default();
    writeln!(
        out,
        "cluster {} on {} etcd endpoint(s){version}{leader}{}",
        doc.prefix,
        doc.endpoints.len(),
        if available {
            format!(", revision {}", doc.revision)
        } else {
            ": UNAVAILABLE (nothing is ordered until a quorum answers)".to_owned()
        }
    )?;
    for e in &doc.endpoints {
        let name = e.name.as_deref().unwrap_or("-");
        match &e.error {
            None => writeln!(
                out,
                "  {name:<8} {}  ok{}{}",
                e.endpoint,
                if e.leader { ", leader" } else { "" },
                e.db_size
                    .map(|b| format!(", database {} kB", b / 1000))
                    .unwrap_or_default()
            )?,
            Some(why) => writeln!(out, "  {name:<8} {}  unusable: {why}", e.endpoint)?,
        }
    }
    Ok(())
}

/// One line per node: its last sync and run, its agent, its sealing key.
fn print_nodes(
    out: &mut impl Write,
    doc: &FleetReport,
    now: OffsetDateTime,
) -> std::io::Result<()> {
    writeln!(out, "nodes")?;
    if doc.nodes.is_empty() {
        writeln!(out, "  (none has run yet)")?;
    }
    for n in &doc.nodes {
        let me = if n.name == doc.node {
            " (this node)"
        } else {
            ""
        };
        let (synced, last, keys) = match &n.info {
            Some(i) => (
                format!(
                    "synced {} (revision {})",
                    ago(&i.synced_at, now),
                    i.synced_revision
                ),
                match (&i.last_run, &i.last_outcome) {
                    (Some(t), Some(o)) => format!("last run {} {o}", ago(t, now)),
                    _ => "no run yet".to_owned(),
                },
                i.key_ids
                    .first()
                    .map(|k| format!("keys {k}"))
                    .unwrap_or_default(),
            ),
            None => ("never synced".to_owned(), String::new(), String::new()),
        };
        writeln!(
            out,
            "  {}{me}  {synced}  {last}  agent {}  {keys}",
            n.name,
            if n.agent { "up" } else { "down" }
        )?;
    }
    Ok(())
}

/// The targets: how many, the locks held now, those that keep failing.
fn print_targets(
    out: &mut impl Write,
    doc: &FleetReport,
    now: OffsetDateTime,
) -> std::io::Result<()> {
    writeln!(
        out,
        "targets: {} ({} with a certificate)",
        doc.targets, doc.with_certificate
    )?;
    for l in &doc.locks {
        writeln!(
            out,
            "  held now: {} holds desired/{} (since {}, pid {})",
            l.holder.node,
            l.file,
            ago(&l.holder.since, now),
            l.holder.pid
        )?;
    }
    for f in &doc.failing {
        writeln!(
            out,
            "  failing: desired/{} ({} failure(s), next attempt {}): {}",
            f.file,
            f.record.failures,
            f.record
                .next_attempt
                .and_then(|t| t.format(&Rfc3339).ok())
                .as_deref()
                .unwrap_or("at the next run"),
            f.record.last_error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// The sealed secrets by key id, and whether this node holds each key.
fn print_secrets(out: &mut impl Write, doc: &FleetReport) -> std::io::Result<()> {
    let mine = doc.key_ids.first().cloned().unwrap_or_default();
    let secrets: Vec<String> = doc
        .secrets
        .iter()
        .map(|(id, n)| {
            let whose = if *id == mine {
                " (this node's sealing key)"
            } else if doc.key_ids.contains(id) {
                " (this node can open)"
            } else {
                " (this node LACKS this key)"
            };
            format!("{n} sealed under {id}{whose}")
        })
        .collect();
    writeln!(
        out,
        "secrets: {}",
        if secrets.is_empty() {
            "none yet".to_owned()
        } else {
            secrets.join(", ")
        }
    )
}

/// The runtime of a run on a fleet node: this thread carries the run, a thread of its own the
/// tasks it spawns, among them the keep-alive of the run's lease. On one thread, a long
/// stretch of file work (a new node's first sync writing 10,000 certificates, linking them
/// into live/) held the keep-alive up past the lease's TTL, and etcd ended the lease.
///
/// A single-threaded runtime driven by that second thread rather than tokio's multi-threaded
/// scheduler: the same two threads, without the work-stealing scheduler's code in the binary
/// (and the maths library it loads into every run, fleet or not).
struct FleetRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    driver: Option<std::thread::JoinHandle<()>>,
}

impl FleetRuntime {
    /// Runs `future` on this thread; what it spawns runs on the driver thread.
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }
}

impl Drop for FleetRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(driver) = self.driver.take() {
            let _ = driver.join();
        }
    }
}

fn fleet_runtime() -> Result<FleetRuntime> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let handle = rt.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (driving, started) = std::sync::mpsc::channel::<()>();
    let driver = std::thread::Builder::new()
        .name("acmekeep-tasks".to_owned())
        .spawn(move || {
            rt.block_on(async move {
                let _ = driving.send(());
                let _ = stopped.await;
            });
        })
        .context("starting the runtime's thread")?;
    // The driver holds the runtime before this thread enters it, so spawned tasks, timers and
    // sockets are served there even while this thread is busy with files.
    started
        .recv()
        .map_err(|_| anyhow!("the runtime's thread ended at start"))?;
    Ok(FleetRuntime {
        handle,
        stop: Some(stop),
        driver: Some(driver),
    })
}

/// How many sync-and-reconcile passes a run makes at most: the first, then one after each
/// wait for targets other nodes held.
const MAX_PASSES: usize = 4;

/// `reconcile` on a fleet node (doc/cluster.md): sync the mirror, reconcile with the fleet's
/// gate on every order, wait for the targets other nodes hold and link what they obtained.
/// When the cluster cannot be used: nothing ordered, live certificates kept, one line on
/// stderr, exit 69 (1 if a target failed as well).
pub fn reconcile(
    settings: &Settings,
    args: &crate::cli::ReconcileArgs,
    lock: &crate::store::lock::StateLock,
    conf: ClusterConf,
) -> Result<ExitCode> {
    use crate::cluster::node::{self, NodeGate};
    let interaction = super::interaction(settings)?;
    let connector = crate::acme::connect::InstantConnector::with_timeout(settings.ca_timeout)
        .with_rate_limit_wait(settings.rate_limit_wait);
    let rt = fleet_runtime()?;
    rt.block_on(async {
        let unavailable = |why: &str| {
            eprintln!(
                "acmekeep: cluster unavailable ({why}): nothing ordered, live certificates kept"
            );
        };
        let connected = async {
            let f = cluster::connect(conf).await?;
            f.check_initialised().await?;
            Ok::<_, anyhow::Error>(f)
        };
        let fleet = match connected.await {
            Ok(f) => std::sync::Arc::new(f),
            Err(e) if cluster::is_unavailable(&e) => {
                unavailable(&why_unavailable(&e));
                return Ok(ExitCode::from(exit::UNAVAILABLE));
            }
            Err(e) => return Err(e),
        };
        let gate = std::sync::Arc::new(NodeGate::new(
            fleet.clone(),
            settings.clock.clone(),
            args.force,
        ));
        let mut opts = super::reconcile::options(settings, args);
        opts.gate = Some(gate.clone());
        opts.share = Some(gate.clone());
        let p = passes(
            (&fleet, &gate),
            (settings, lock),
            (&connector, &interaction, &opts),
        )
        .await?;
        let (all_ok, revision, lost) = (p.all_ok, p.revision, p.lost);
        gate.end().await;
        let lost = lost.or_else(|| gate.unavailable());
        if lost.is_none() {
            collect_daily(&fleet, settings.clock.now_utc()).await;
        }
        let outcome = match (&lost, all_ok) {
            (_, false) => "failed",
            (Some(_), true) => "cluster unavailable",
            (None, true) => "ok",
        };
        if lost.is_none()
            && let Err(e) =
                node::record_node(&fleet, revision, outcome, settings.clock.now_utc()).await
        {
            tracing::debug!("recording this node's run in the fleet: {e:#}");
        }
        if let Some(why) = &lost {
            unavailable(why);
        }
        Ok(ExitCode::from(match (all_ok, lost) {
            (false, _) => exit::FAILED,
            (true, Some(_)) => exit::UNAVAILABLE,
            (true, None) => exit::OK,
        }))
    })
}

/// Removes from etcd what the fleet no longer needs, if no node did today
/// ([`crate::cluster::gc`]); says what with `-v`. A failure only delays it.
async fn collect_daily(fleet: &cluster::Node, now: time::OffsetDateTime) {
    match crate::cluster::gc::collect_daily(fleet, now).await {
        Ok(Some(c)) if c.any() => tracing::info!(
            "removed from the fleet what no target uses any more: {} expired certificates, {} private keys, {} renewal windows, {} heads of unwanted targets",
            c.certs,
            c.keys,
            c.ari,
            c.heads
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(
            "removing what the fleet no longer needs: {}",
            crate::cause::render(&e)
        ),
    }
}

/// What the passes of a run on a fleet node came to.
struct Passes {
    /// No target failed.
    all_ok: bool,
    /// The fleet's revision at the last sync.
    revision: i64,
    /// Why the cluster became unusable midway, if it did.
    lost: Option<String>,
}

/// The passes of a run on a fleet node: sync, reconcile with the fleet's gate, and again
/// after waiting for the targets other nodes held (at most `wait`, [`MAX_PASSES`]).
async fn passes(
    (fleet, gate): (
        &std::sync::Arc<cluster::Node>,
        &std::sync::Arc<crate::cluster::node::NodeGate<cluster::ActiveKv>>,
    ),
    (settings, lock): (&Settings, &crate::store::lock::StateLock),
    (connector, interaction, opts): (
        &crate::acme::connect::InstantConnector,
        &crate::interact::Interaction,
        &crate::reconcile::Options,
    ),
) -> Result<Passes> {
    use crate::cluster::node;
    let deadline = tokio::time::Instant::now() + fleet.conf().wait;
    let mut p = Passes {
        all_ok: true,
        revision: 0,
        lost: None,
    };
    for _ in 0..MAX_PASSES {
        let store = std::sync::Arc::new(crate::store::Store::open(&settings.state_dir, lock)?);
        let now = settings.clock.now_utc();
        let synced = match node::sync(fleet, &store, now).await {
            Ok(s) => s,
            Err(e) if cluster::is_unavailable(&e) => {
                p.lost = Some(why_unavailable(&e));
                break;
            }
            Err(e) => return Err(e),
        };
        p.revision = synced.revision;
        log_sync(&synced);
        gate.begin_pass(synced.heads, store.clone());
        if let Err(e) = gate.prepare_accounts(&store).await {
            if cluster::is_unavailable(&e) {
                p.lost = Some(why_unavailable(&e));
                break;
            }
            // Said, and the run goes on: a node that cannot agree on an account with the
            // fleet registers its own, as on one machine (and shares it at the next sync).
            tracing::warn!("{}", crate::cause::render(&e));
        }
        let report =
            crate::reconcile::run(store.clone(), connector, interaction, opts, now).await?;
        super::reconcile::summarise(&report, now);
        p.all_ok &= report.all_ok();
        if let Err(why) = share_windows((fleet, gate), &store, &synced.ari, now).await {
            p.lost = Some(why);
            break;
        }
        if gate.unavailable().is_some() {
            break;
        }
        let elsewhere = gate.take_elsewhere();
        if elsewhere.is_empty() {
            break;
        }
        match node::wait_released(fleet, &elsewhere, deadline).await {
            Ok(still) if still.is_empty() => {}
            Ok(still) => {
                for (f, n) in still {
                    tracing::info!(
                        "desired/{f}: node {n} still holds it; its certificate arrives with a later run"
                    );
                }
                break;
            }
            Err(e) if cluster::is_unavailable(&e) => {
                p.lost = Some(why_unavailable(&e));
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(p)
}

/// Shares the renewal windows this pass asked the CA for (for a certificate it just
/// obtained too), so that no other node asks again. `Err`: why the fleet became unusable;
/// any other failure is said and the run goes on.
async fn share_windows(
    (fleet, gate): (
        &cluster::Node,
        &crate::cluster::node::NodeGate<cluster::ActiveKv>,
    ),
    store: &crate::store::Store,
    synced: &std::collections::BTreeMap<String, OffsetDateTime>,
    now: OffsetDateTime,
) -> std::result::Result<(), String> {
    let certs = gate.head_certs();
    match crate::cluster::node::share_ari(fleet, store, certs.iter(), synced, now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("renewal information of {n} certificates shared with the fleet"),
        Err(e) if cluster::is_unavailable(&e) => return Err(why_unavailable(&e)),
        Err(e) => tracing::warn!(
            "sharing renewal information with the fleet: {}",
            crate::cause::render(&e)
        ),
    }
    Ok(())
}

/// What a sync changed, at -v.
fn log_sync(synced: &crate::cluster::node::Synced) {
    for f in &synced.pushed {
        tracing::info!("desired/{f}: shared with the fleet");
    }
    for f in &synced.pulled {
        tracing::info!("desired/{f}: from the fleet");
    }
    for f in &synced.removed {
        tracing::info!("desired/{f}: removed, the fleet no longer wants it");
    }
    match synced.defaults {
        Some(true) => tracing::info!("conf/target: its shared settings went to the fleet"),
        Some(false) => tracing::info!("conf/target: the fleet's settings taken"),
        None => {}
    }
    for f in &synced.unsubscribed {
        tracing::info!(
            "desired/{f}: left to the nodes subscribed to its cluster-labels (not this node's)"
        );
    }
}

/// `cluster-init`: makes the prefix of conf/cluster a fleet and shares this node's targets,
/// accounts and certificates.
pub fn init(settings: &Settings) -> Result<ExitCode> {
    let conf = required_conf(settings)?;
    let (lock, store) = super::lock_and_open(settings)?;
    let _lock = lock;
    let rt = super::runtime()?;
    rt.block_on(async {
        let fleet = cluster::connect(conf).await?;
        let now = settings.clock.now_utc();
        let (synced, heads) = crate::cluster::node::init(&fleet, &store, now)
            .await
            .map_err(cluster::mark_unavailable)?;
        crate::cluster::node::record_node(&fleet, synced.revision, "init", now).await?;
        println!(
            "fleet {} created by node {}: {} target(s), {} certificate(s) shared; every node with the same conf/cluster endpoints and secret key file joins it at its next run",
            fleet.layout().prefix(),
            fleet.node(),
            synced.pushed.len(),
            heads
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `cluster-rekey`: seals every secret of the fleet again under the first key of the secret
/// key file. Exit 1 when some secret could not be opened here (each is named).
pub fn rekey(settings: &Settings) -> Result<ExitCode> {
    let conf = required_conf(settings)?;
    let rt = super::runtime()?;
    rt.block_on(async {
        let fleet = cluster::connect(conf).await?;
        fleet.check_initialised().await?;
        let done = crate::cluster::rekey::rekey(&fleet)
            .await
            .map_err(cluster::mark_unavailable)?;
        println!(
            "{} secret(s) sealed again under cluster key {} ({} already were)",
            done.resealed, done.key, done.already
        );
        if done.failed.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        for why in &done.failed {
            eprintln!("acmekeep: not sealed again: {why}");
        }
        eprintln!(
            "acmekeep: {} secret(s) still need their old key: keep it in the secret key file",
            done.failed.len()
        );
        Ok(ExitCode::from(exit::FAILED))
    })
}

/// `conf/cluster` if this state directory is a fleet node.
pub fn node_conf(settings: &Settings) -> Result<Option<ClusterConf>> {
    cluster::load_conf(&settings.cluster_conf, &settings.state_dir.join("conf"))
}

/// After `want --no-reconcile` or `unwant` on a fleet node: the fleet learns of the change
/// now (a sync). When the cluster cannot be used the change stays here, is shared by the
/// next run that reaches it, and the command exits 69 saying so.
pub fn share_edits(settings: &Settings) -> Result<ExitCode> {
    let Some(conf) = node_conf(settings)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let (_lock, store) = super::lock_and_open(settings)?;
    let rt = super::runtime()?;
    rt.block_on(async {
        let shared = async {
            let fleet = cluster::connect(conf).await?;
            fleet.check_initialised().await?;
            crate::cluster::node::sync(&fleet, &store, settings.clock.now_utc()).await
        };
        match shared.await {
            Ok(_) => Ok(ExitCode::SUCCESS),
            Err(e) if cluster::is_unavailable(&e) => {
                eprintln!(
                    "acmekeep: cluster unavailable ({}): the change is kept here and shared with the fleet by the next run that reaches it",
                    why_unavailable(&e)
                );
                Ok(ExitCode::from(exit::UNAVAILABLE))
            }
            Err(e) => Err(e),
        }
    })
}

/// The reason inside an unavailability error.
fn why_unavailable(e: &anyhow::Error) -> String {
    e.downcast_ref::<cluster::Unavailable>()
        .map(|u| u.0.clone())
        .unwrap_or_else(|| crate::cause::render(e))
}

/// `cluster-agent`: serves the fleet's http-01 tokens on this node until stopped (SIGTERM).
/// What it serves comes from this node's conf/target: its webroots and its http-ports (and
/// port 80 when the default listeners are on and the port is free).
pub fn agent(settings: &Settings) -> Result<ExitCode> {
    let conf = required_conf(settings)?;
    let store = crate::store::Store::open_read_only(&settings.state_dir)?;
    let defaults = store.load_defaults().map_err(exit::config_error)?;
    // conf/target's settings as a target would get them.
    let probe = crate::target::RawTarget::parse("names: [cluster-agent.invalid]\n")?;
    let t = crate::target::Target::resolve("cluster-agent", &probe, &defaults)
        .map_err(exit::config_error)?;
    let mut listen = t.challenge.http_ports.clone();
    if t.challenge.listen_http {
        listen.extend(["0.0.0.0:80".to_owned(), "[::]:80".to_owned()]);
    }
    let serves = crate::cluster::agent::Serves {
        webroots: t.challenge.webroot_paths.clone(),
        listen,
    };
    // As a run's: the agent's first link is a whole sync (file work on this thread), which
    // must not hold up its lease's keep-alive or the http-01 responders it serves.
    let rt = fleet_runtime()?;
    rt.block_on(async {
        let fleet = cluster::connect(conf).await?;
        fleet.check_initialised().await?;
        let linker = crate::cluster::agent::Linker {
            state_dir: settings.state_dir.clone(),
            hooks: std::sync::Arc::new(super::hook_runner(settings)),
            clock: settings.clock.clone(),
        };
        let since = settings.clock.now_utc();
        crate::cluster::agent::run(std::sync::Arc::new(fleet), serves, Some(linker), since).await?;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// The lease's keep-alive is a spawned task: it must go on while the run's own thread is
    /// busy with files (here: sleeping without yielding), and the run's own timers work.
    #[test]
    fn the_fleet_runtime_runs_spawned_tasks_while_the_calling_thread_is_busy() {
        let rt = super::fleet_runtime().expect("runtime");
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = ticks.clone();
        rt.block_on(async move {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            });
            std::thread::sleep(Duration::from_millis(300));
            let during = ticks.load(Ordering::SeqCst);
            assert!(during >= 10, "{during} ticks while this thread was busy");
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(ticks.load(Ordering::SeqCst) > during);
        });
        drop(rt);
    }
}
