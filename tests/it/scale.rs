//! Cost and scale guards that do not depend on timing: the requests one order costs, that a
//! run with nothing to do sends nothing and reads each state file at most once, and that a
//! thousand certificates in one run, interrupted and resumed, finish without duplicate
//! orders. Speed itself is measured by `bench/run`, never here.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// Requests Pebble has handled, by method and first path segment ("POST /order-plz"),
/// counted from its log (it logs each handler call), from log line `from` on.
fn pebble_requests(pebble: &Pebble, from: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in pebble.pebble_log().lines().skip(from) {
        let Some(call) = line.strip_suffix(" -> calling handler()") else {
            continue;
        };
        let mut words = call.split_whitespace().rev();
        let (Some(path), Some(method)) = (words.next(), words.next()) else {
            continue;
        };
        let segment = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        *out.entry(format!("{method} /{segment}")).or_default() += 1;
    }
    out
}

/// Lines in Pebble's log so far (a mark for [`pebble_requests`]).
fn pebble_mark(pebble: &Pebble) -> usize {
    pebble.pebble_log().lines().count()
}

/// The count acmekeep logs at `-v` ("N request(s) sent to the CA").
fn requests_sent(run: &Run) -> u64 {
    run.stderr
        .lines()
        .find_map(|l| {
            let head = l.strip_suffix(" request(s) sent to the CA")?;
            head.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no request count in the output:\n{}", run.describe()))
}

fn count(map: &BTreeMap<String, usize>, key: &str) -> usize {
    map.get(key).copied().unwrap_or(0)
}

/// Writes `n` one-name targets `<prefix><i>.example.org` straight into `desired/` (the
/// target files are the interface; `want` would do the same one process at a time).
fn want_many(state: &StateDir, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}.example.org");
            state.write_desired(&name, &format!("satisfy:\n  names:\n  - {name}\n"));
            name
        })
        .collect()
}

#[test]
fn an_order_costs_the_protocol_minimum_of_requests() {
    // Exact counts need a CA that does not reject nonces at random (each rejection is one
    // more request, by design); authorizations are never reused, so each order has one.
    let mut opts = PebbleOpts::fast();
    opts.nonce_reject_percent = Some(0);
    opts.authz_reuse_percent = Some(0);
    let pebble = Pebble::start(opts);
    let state = StateDir::standard(&pebble);

    // The account is made with the first certificate.
    acmekeep(&state, &["want", "first.example.org"]).assert_success();

    const N: usize = 5;
    want_many(&state, "n", N);
    let mark = pebble_mark(&pebble);
    let run = acmekeep(&state, &["-v", "--jobs", "1", "reconcile"]);
    run.assert_success();
    let seen = pebble_requests(&pebble, mark);
    eprintln!("requests by route: {seen:?}");

    // Per order: newOrder, one authorization, one challenge, finalize, one download.
    for route in [
        "POST /order-plz",
        "POST /authZ",
        "POST /chalZ",
        "POST /finalize-order",
        "POST /certZ",
    ] {
        assert_eq!(count(&seen, route), N, "{route}: {seen:?}");
    }
    // Per run: the directory once, the account looked up once, and a fresh nonce for the
    // lookup and the first order only: later orders start with the nonce the previous
    // download left unused.
    assert_eq!(count(&seen, "GET /dir"), 1, "{seen:?}");
    assert_eq!(count(&seen, "POST /sign-me-up"), 1, "{seen:?}");
    assert_eq!(count(&seen, "HEAD /nonce-plz"), 2, "{seen:?}");
    // Polling the order (until ready, then until valid) depends on how fast Pebble's VA
    // and CA goroutines run; bound it loosely so a polling regression still shows.
    let polls = count(&seen, "POST /my-order");
    assert!(
        (2 * N..=6 * N).contains(&polls),
        "{polls} order polls for {N} orders: {seen:?}"
    );
    // acmekeep's own count agrees with what Pebble saw.
    let total: usize = seen.values().sum();
    assert_eq!(requests_sent(&run), total as u64, "{seen:?}");
}

/// Runs acmekeep under strace (file opens and socket connects of every thread).
fn traced_run(state: &StateDir, args: &[&str], trace: &Path) -> Run {
    let strace = std::process::Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|o| o.status.success()),
        "strace is needed (scripts/install-deps installs it)"
    );
    let opts = RunOpts {
        wrapper: [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=openat,open,connect",
            "-o",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([trace.to_string_lossy().into_owned()])
        .collect(),
        ..RunOpts::default()
    };
    acmekeep_with(state, args, &opts)
}

#[test]
fn a_run_with_nothing_to_do_sends_nothing_and_reads_each_state_file_once() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    want_many(&state, "idle", 3);
    acmekeep(&state, &["reconcile"]).assert_success();
    // The caches under .acmekeep/ never record a file changed less than 2 s before they are
    // written (src/store/cache.rs, RACY). Runs quicker than that found every certificate
    // uncached, read it and wrote no cache; runs slowed by load found some settled, read
    // them and wrote the cache, opening .acmekeep again to sync it. So the state is left
    // to settle first: the first idle run caches all of it, and the traced run is an idle
    // run as cron sees it, hours after the last change.
    std::thread::sleep(Duration::from_millis(2_500));
    // The first idle run learns that this CA has no renewalInfo (one directory GET)...
    let first = acmekeep(&state, &["-v", "reconcile"]);
    first.assert_success();
    assert!(requests_sent(&first) <= 1, "{}", first.describe());

    // ...after which a run with nothing to do sends nothing at all.
    let trace = state.scratch_dir("trace").join("strace.log");
    let run = traced_run(&state, &["-v", "reconcile"], &trace);
    run.assert_success();
    assert_eq!(requests_sent(&run), 0, "{}", run.describe());
    let log = fs::read_to_string(&trace).expect("strace log");
    let connects: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connect(") && (l.contains("AF_INET") || l.contains("AF_INET6")))
        .collect();
    assert!(connects.is_empty(), "network connections: {connects:#?}");

    let root = state.path().to_string_lossy().into_owned();
    let mut opens: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("open")) {
        // 123 openat(AT_FDCWD, "/path", O_RDONLY|O_CLOEXEC) = 3
        let Some(path) = line.split('"').nth(1) else {
            continue;
        };
        if path.starts_with(&root) && !line.contains("= -1") {
            *opens.entry(path.to_owned()).or_default() += 1;
        }
    }
    // The trace saw the run's reads, and the settled certificates came from the cache.
    assert!(
        opens
            .keys()
            .any(|p| p.ends_with("/.acmekeep/cert-summaries")),
        "the trace saw no cache read: {opens:#?}"
    );
    let certs: Vec<_> = opens.keys().filter(|p| p.contains("/certs/")).collect();
    assert!(
        certs.is_empty(),
        "certificates read though cached: {certs:#?}"
    );
    let repeated: Vec<_> = opens.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "state files opened more than once: {repeated:#?}"
    );
}

#[test]
fn a_thousand_certificates_in_one_run_interrupted_and_resumed_without_duplicates() {
    // Validation itself is not what this is about: Pebble marks every challenge valid.
    // Nonces are still rejected at random (Pebble's default 5 %).
    let mut opts = PebbleOpts::fast();
    opts.always_valid = true;
    opts.authz_reuse_percent = Some(0);
    let pebble = Pebble::start(opts);
    let state = StateDir::standard(&pebble);
    const N: usize = 1000;
    // Four orders in flight, not the default eight: Debian's Pebble 2.4 can deadlock when
    // new orders and authorization fetches overlap (its authz handler holds the
    // authorization's lock while taking the database lock; newOrder takes them the other way
    // round), and it does so more often the more orders overlap.
    const JOBS: usize = 4;
    let names = want_many(&state, "bulk", N);

    // Interrupt the first run (SIGKILL) once a good part of the certificates is there.
    let long = RunOpts {
        timeout: Duration::from_secs(600),
        ..RunOpts::default()
    };
    let jobs = JOBS.to_string();
    let running = spawn_acmekeep(&state, &["--jobs", &jobs, "reconcile"], &long);
    let deadline = Instant::now() + Duration::from_secs(300);
    let certs_dir = state.join("certs");
    let certs_now = || fs::read_dir(&certs_dir).map(|d| d.count()).unwrap_or(0);
    while certs_now() < N / 3 {
        assert!(Instant::now() < deadline, "no progress: {}", pebble.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Dropping a running acmekeep kills it with SIGKILL and reaps it.
    drop(running);
    let had = certs_now();
    assert!(had < N, "the first run finished before it was interrupted");

    // The next run finishes the job.
    let run = acmekeep_with(&state, &["-v", "--jobs", &jobs, "reconcile"], &long);
    run.assert_success();
    for name in &names {
        let id = state.live_cert_id(name);
        assert!(is_acmetool_id(&id), "live/{name} -> {id}");
    }
    // No duplicate orders: besides one per certificate, only the orders that were in flight
    // and not yet finalized when the first run died were placed again. (Pebble logs every
    // newOrder request, also those it rejects for a bad nonce; it logs each order it makes.)
    let orders = pebble
        .pebble_log()
        .lines()
        .filter(|l| l.contains("Added order"))
        .count();
    assert!(
        (N..=N + JOBS).contains(&orders),
        "{orders} orders for {N} certificates ({had} certificate directories when interrupted)"
    );
    let complete = fs::read_dir(&certs_dir)
        .expect("certs/")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().join("cert").is_file()))
        .count();
    assert_eq!(
        complete, N,
        "every finalized order's certificate is kept, once"
    );

    // And the run after that has nothing to do and sends nothing.
    let idle = acmekeep(&state, &["-v", "reconcile"]);
    idle.assert_success();
    assert!(requests_sent(&idle) <= 1, "{}", idle.describe());
}
