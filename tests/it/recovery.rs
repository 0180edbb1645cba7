//! End-to-end tests of renewal and recovery: due certificates are renewed and relinked, a
//! failed renewal keeps the working certificate, a `kill -9` never leaves an incomplete
//! certificate linked, interrupted downloads are finished without a new order, targets are
//! selected by file name, and a broken target file does not stop the others.
//!
//! Every test has its own Pebble and state directory (see `support`), and every wait is
//! bounded.

use std::collections::BTreeMap;
use std::fs;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;

/// A Pebble with the given options and a state directory with the standard configuration.
fn setup(opts: PebbleOpts) -> (Pebble, StateDir) {
    let pebble = Pebble::start(opts);
    let state = StateDir::standard(&pebble);
    (pebble, state)
}

/// The `desired/` file `want` wrote for a target whose first name is `name`
/// (acmetool's naming: `<name>-<26 chars>`).
fn target_file(state: &StateDir, name: &str) -> String {
    let prefix = format!("{name}-");
    let files: Vec<String> = state
        .desired_files()
        .into_iter()
        .filter(|f| f.strip_prefix(&prefix).is_some_and(|rest| rest.len() == 26))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "expected one desired/{prefix}<id> file\n{}",
        state.tree()
    );
    files.into_iter().next().unwrap_or_default()
}

/// `uncached_certificates` of `status --json`.
fn uncached(doc: &serde_json::Value) -> Vec<String> {
    doc["uncached_certificates"]
        .as_array()
        .unwrap_or_else(|| panic!("status --json has no uncached_certificates array: {doc:#}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// (notBefore, notAfter) of a DER certificate, in seconds since the epoch.
fn validity_secs(der: &[u8]) -> (i64, i64) {
    let cert = parse_cert(der);
    (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Checks that `certs/<id>` is a complete certificate directory: `cert` (exactly one
/// certificate, which parses), `chain` (parses, issued the leaf), `fullchain` = cert ++ chain,
/// and a `privkey` link to the key of the certificate. Returns the leaf's DER.
fn assert_complete_cert_dir(state: &StateDir, id: &str) -> Vec<u8> {
    let dir = Path::new("certs").join(id);
    for f in ["cert", "chain", "fullchain", "privkey"] {
        assert!(
            state.join(dir.join(f)).is_file(),
            "certs/{id}/{f} is missing (or a dangling link)\n{}",
            state.tree()
        );
    }
    let cert_pem = state.read(dir.join("cert"));
    let chain_pem = state.read(dir.join("chain"));
    let certs = pem_certs(&cert_pem);
    assert_eq!(certs.len(), 1, "certs/{id}/cert holds exactly the leaf");
    let chain = pem_certs(&chain_pem);
    assert!(!chain.is_empty(), "certs/{id}/chain is empty");
    assert_eq!(
        parse_cert(&certs[0]).issuer(),
        parse_cert(&chain[0]).subject(),
        "certs/{id}: chain[0] did not issue the leaf"
    );
    assert_eq!(
        state.read(dir.join("fullchain")),
        [cert_pem.as_slice(), chain_pem.as_slice()].concat(),
        "certs/{id}: fullchain != cert ++ chain"
    );
    assert_eq!(
        private_key_public_raw(&state.read(dir.join("privkey"))),
        cert_public_key_raw(&certs[0]),
        "certs/{id}/privkey does not match the certificate's public key"
    );
    certs.into_iter().next().unwrap_or_default()
}

/// Checks that `live/<name>` points at a complete certificate directory whose leaf names
/// `name`; returns the certificate ID.
fn assert_complete_live(state: &StateDir, name: &str) -> String {
    let id = state.live_cert_id(name);
    assert!(is_acmetool_id(&id), "live/{name} -> ../certs/{id}: bad ID");
    let leaf = assert_complete_cert_dir(state, &id);
    let sans = cert_dns_names(&leaf);
    assert!(
        sans.iter().any(|s| s == name),
        "live/{name} -> certs/{id}, whose SANs {sans:?} lack {name}"
    );
    id
}

/// Every file and link under `<state>/<rel>`, recursively, as paths relative to the state
/// directory (symlinks are not followed).
fn walk(state: &StateDir, rel: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = fs::read_dir(state.join(rel)) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let path = rel.join(e.file_name());
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        out.push(path.clone());
        if is_dir {
            walk(state, &path, out);
        }
    }
}

/// The invariants a run must keep whenever it stops, even by SIGKILL:
/// - every `live/*` link resolves to a complete certificate directory naming it;
/// - every `certs/<id>` that has a `cert` file is complete (`cert` is written last);
/// - no temp file (`tmp.*`, `symlink.*`) outside `tmp/`;
/// - every private key (certificate and account) is mode 0600 in a 0700 directory.
///
/// Returns the `certs/` directories that record an order only in part (no `url` or no
/// `account` link), which no later run can finish; the caller decides how to report them.
fn assert_consistent(state: &StateDir, context: &str) -> Vec<String> {
    let mut partial = Vec::new();
    for name in state.live_names() {
        let link = state.join("live").join(&name);
        assert!(
            fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()),
            "{context}: live/{name} is not a symlink\n{}",
            state.tree()
        );
        assert_complete_live(state, &name);
    }
    for id in state.cert_ids() {
        let dir = Path::new("certs").join(&id);
        if state.join(dir.join("cert")).exists() {
            assert_complete_cert_dir(state, &id);
        }
        // An order must be recorded completely (url and account link) or not at all.
        let has_url = state.join(dir.join("url")).is_file();
        let has_account = fs::symlink_metadata(state.join(dir.join("account")))
            .is_ok_and(|m| m.file_type().is_symlink());
        if !(has_url && has_account) {
            partial.push(format!(
                "certs/{id} (url: {has_url}, account link: {has_account})"
            ));
        }
    }
    let mut entries = Vec::new();
    for top in state.list("") {
        if top == "tmp" {
            continue;
        }
        let top = Path::new(&top).to_path_buf();
        entries.push(top.clone());
        walk(state, &top, &mut entries);
    }
    walk(state, Path::new(".acmekeep"), &mut entries);
    for e in &entries {
        let file_name = e
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            !file_name.starts_with("tmp.") && !file_name.starts_with("symlink."),
            "{context}: temp file {} left outside tmp/\n{}",
            e.display(),
            state.tree()
        );
        let is_key = file_name == "privkey"
            && (e.starts_with("keys") || e.starts_with("accounts"))
            && fs::symlink_metadata(state.join(e)).is_ok_and(|m| m.is_file());
        if is_key {
            assert_eq!(
                state.mode(e),
                0o600,
                "{context}: mode of {}\n{}",
                e.display(),
                state.tree()
            );
            let parent = e.parent().unwrap_or(Path::new(""));
            assert_eq!(
                state.mode(parent),
                0o700,
                "{context}: mode of {}\n{}",
                parent.display(),
                state.tree()
            );
        }
    }
    partial
}

#[test]
fn due_certificate_is_renewed_and_relinked() {
    const NAME: &str = "renew.example.org";
    // Pebble 2.4 issues notBefore = now (no backdating), notAfter = notBefore + period - 1 s.
    // With 16 s the certificate is due (lifetime / 2 for certificates under 10 days, less
    // than the 30-day default margin) about 7.5 s after issuance: long enough for the
    // "not yet due" run, short enough to wait for.
    const VALIDITY_SECS: u64 = 16;
    let (pebble, state) = setup(PebbleOpts {
        cert_validity_secs: Some(VALIDITY_SECS),
        ..PebbleOpts::default()
    });

    acmekeep(&state, &["want", NAME]).assert_success();
    let issued_seen_at = unix_now();
    let a = assert_complete_live(&state, NAME);
    let file = target_file(&state, NAME);
    let leaf_a = pem_certs(&state.read_live(NAME, "cert")).remove(0);
    let (nb, na) = validity_secs(&leaf_a);
    let lifetime = na - nb;
    eprintln!(
        "certificate A: notBefore {nb}, notAfter {na}; `want` returned at {issued_seen_at:.1}"
    );
    assert!(
        lifetime > 0 && lifetime <= VALIDITY_SECS as i64,
        "Pebble issued a certificate valid {nb}..{na} ({lifetime} s) for a {VALIDITY_SECS} s period"
    );
    // acmekeep's rule without ARI: due at notAfter - min(margin, lifetime / 2) for a
    // certificate under 10 days; the margin is 30 days.
    let renew_at = na as f64 - lifetime as f64 / 2.0;
    assert!(
        issued_seen_at < renew_at - 1.0,
        "the test is too slow: certificate A was already (almost) due when `want` returned \
         (now {issued_seen_at:.1}, due at {renew_at:.1}); raise VALIDITY_SECS"
    );
    let rec = run_record(&state, &file);
    assert_eq!(rec["failures"], 0, "run record after want: {rec:#}");

    // Not due yet: reconcile does nothing.
    let certs_before = state.cert_ids();
    assert_eq!(certs_before, vec![a.clone()], "{}", state.tree());
    acmekeep(&state, &["reconcile"]).assert_success();
    assert!(
        unix_now() < renew_at,
        "the test is too slow: the \"not yet due\" reconcile ended after the renewal point; \
         raise VALIDITY_SECS"
    );
    assert_eq!(
        state.cert_ids(),
        certs_before,
        "a reconcile before the renewal point made a new certificate\n{}",
        state.tree()
    );
    assert_eq!(state.live_cert_id(NAME), a);
    let doc = status_json(&state);
    let t = target_status(&doc, &file);
    assert_eq!(t["state"], "valid", "{doc:#}");
    assert_eq!(t["certificate"]["id"], a.as_str(), "{doc:#}");

    // Wait (polling status, bounded) until status says the certificate is due.
    let wait = Duration::from_secs_f64((renew_at - unix_now()).max(0.0)) + Duration::from_secs(10);
    let due_seen_at = poll_until(wait, Duration::from_millis(200), || {
        let doc = status_json(&state);
        (target_status(&doc, &file)["state"] == "due").then(unix_now)
    })
    .unwrap_or_else(|| {
        panic!(
            "status never reported the certificate as due (renewal point {renew_at:.1}, now {:.1})",
            unix_now()
        )
    });
    assert!(
        due_seen_at >= renew_at - 1.0,
        "status reported the certificate due at {due_seen_at:.1}, before the renewal point \
         {renew_at:.1} (notBefore {nb}, notAfter {na})"
    );

    // Due: reconcile obtains B and relinks.
    acmekeep(&state, &["reconcile"]).assert_success();
    let b = assert_complete_live(&state, NAME);
    assert_ne!(b, a, "live/{NAME} still points at the due certificate");
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(
        state.cert_ids(),
        expected,
        "expected exactly A and B in certs/\n{}",
        state.tree()
    );
    assert_complete_cert_dir(&state, &a);
    let leaf_b = pem_certs(&state.read_live(NAME, "cert")).remove(0);
    assert!(
        validity_secs(&leaf_b).1 > na,
        "the new certificate does not expire later than the old one"
    );

    let doc = status_json(&state);
    let t = target_status(&doc, &file);
    assert_eq!(t["certificate"]["id"], b.as_str(), "{doc:#}");
    assert_eq!(t["state"], "valid", "{doc:#}");
    assert_eq!(t["failures"], 0, "{doc:#}");
    assert!(t["last_error"].is_null(), "{doc:#}");
    assert!(
        t["live"]
            .as_array()
            .is_some_and(|l| l.iter().any(|n| n == NAME)),
        "{doc:#}"
    );
    let rec = run_record(&state, &file);
    assert_eq!(rec["failures"], 0, "run record after the renewal: {rec:#}");
    assert!(
        rec["last_error"].is_null(),
        "run record after the renewal: {rec:#}"
    );
    drop(pebble);
}

#[test]
fn failed_renewal_keeps_the_working_live_certificate() {
    const X: &str = "works.example.org";
    const Y: &str = "broken.example.org";
    let (pebble, state) = setup(PebbleOpts::default());

    acmekeep(&state, &["want", X]).assert_success();
    let old = assert_complete_live(&state, X);
    let file = target_file(&state, X);
    let link_before = state.live_link(X);
    let files_before: Vec<Vec<u8>> = ["cert", "chain", "fullchain", "privkey"]
        .iter()
        .map(|f| state.read_live(X, f))
        .collect();
    let check_unchanged = |when: &str| {
        assert_eq!(
            state.live_link(X),
            link_before,
            "{when}: live/{X} was relinked\n{}",
            state.tree()
        );
        assert_complete_cert_dir(&state, &old);
        for (f, before) in ["cert", "chain", "fullchain", "privkey"]
            .iter()
            .zip(&files_before)
        {
            assert_eq!(
                &state.read_live(X, f),
                before,
                "{when}: live/{X}/{f} changed"
            );
        }
        assert!(
            state.live_link(Y).is_none(),
            "{when}: live/{Y} exists\n{}",
            state.tree()
        );
    };

    // The target now also wants Y, which cannot validate (Pebble's DNS fails for it):
    // the old certificate no longer satisfies it, and no new one can be had.
    pebble.dns_set_servfail(Y);
    state.write_desired(&file, &format!("satisfy:\n  names:\n  - {X}\n  - {Y}\n"));

    for attempt in 1..=2u64 {
        // The second attempt comes within the backoff: it needs --force.
        let args: &[&str] = if attempt == 1 {
            &["reconcile"]
        } else {
            &["reconcile", "--force"]
        };
        let run = acmekeep(&state, args);
        run.assert_code(1)
            .assert_stderr_contains(&file)
            .assert_stderr_contains(Y);
        check_unchanged(&format!("after failed attempt {attempt}"));
        assert_eq!(state.cert_ids(), vec![old.clone()], "{}", state.tree());

        let doc = status_json(&state);
        let t = target_status(&doc, &file);
        assert_eq!(
            t["state"], "failing",
            "no certificate satisfies the target: {doc:#}"
        );
        assert!(t["certificate"].is_null(), "{doc:#}");
        assert!(
            t["live"]
                .as_array()
                .is_some_and(|l| l.iter().any(|n| n == X)),
            "status should still list live/{X}: {doc:#}"
        );
        assert_eq!(t["failures"], attempt, "{doc:#}");
        assert!(t["last_attempt"].is_string(), "{doc:#}");
        let err = t["last_error"].as_str().unwrap_or_default();
        assert!(err.contains(Y), "last_error should name {Y}: {doc:#}");
        let rec = run_record(&state, &file);
        assert_eq!(rec["failures"], attempt, "run record: {rec:#}");
        assert!(t["next_attempt"].is_string(), "backoff recorded: {doc:#}");
    }

    // Within the backoff (10 minutes after the 2nd failure) a plain run does not ask the CA
    // again: the target still fails, the message says until when, the count is unchanged.
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(1)
        .assert_stderr_contains("not retried before");
    assert_eq!(run_record(&state, &file)["failures"], 2);

    // Once Y validates, a forced run (by hostname) succeeds, relinks and resets the count.
    pebble.dns_clear_servfail(Y);
    acmekeep(&state, &["reconcile", "--force", X]).assert_success();
    let new = assert_complete_live(&state, X);
    assert_ne!(new, old);
    assert_eq!(assert_complete_live(&state, Y), new);
    let doc = status_json(&state);
    let t = target_status(&doc, &file);
    assert_eq!(t["state"], "valid", "{doc:#}");
    assert_eq!(t["failures"], 0, "{doc:#}");
    assert!(t["last_error"].is_null(), "{doc:#}");
    assert_eq!(run_record(&state, &file)["failures"], 0);
}

/// Some randomness for kill delays (printed, so a failure can be reproduced).
fn jitter_ms(max: u64) -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() % (max + 1)
}

/// Whether process `pid` (a child not yet reaped) has exited.
fn has_exited(pid: u32) -> bool {
    // /proc/<pid>/stat: "<pid> (<comm>) <state> ..."; a zombie is 'Z'.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_none_or(|c| c == 'Z' || c == 'X')
        })
        .unwrap_or(true)
}

/// When a round of the interrupted-run test kills acmekeep.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// After a fixed delay.
    Delay(Duration),
    /// As soon as `<state>/<dir>` has an entry it did not have before the run started, plus
    /// a small extra delay: `keys` (an order is starting), `certs` (an order was finalized and
    /// recorded; the download is under way), `live` (the relink pass has begun).
    NewEntryIn(&'static str, Duration),
}

#[test]
fn interrupted_run_never_links_an_incomplete_certificate() {
    // One state directory for every round: each round adds three new targets, and its
    // reconcile also has to cope with whatever the previous kills left (keys without
    // certificates, finished orders not downloaded, a half-made account, the lock file).
    // Fixed delays alone mostly hit the validation wait (Pebble's VA sleeps up to seconds),
    // so some rounds kill on an event instead: that reliably lands a kill between "order
    // finalized and recorded" and "certificate written", and inside the relink pass.
    let rounds = [
        KillAt::Delay(Duration::from_millis(100 + jitter_ms(100))),
        KillAt::NewEntryIn("keys", Duration::from_millis(jitter_ms(50))),
        KillAt::NewEntryIn("certs", Duration::ZERO),
        KillAt::NewEntryIn("certs", Duration::from_millis(jitter_ms(40))),
        KillAt::NewEntryIn("live", Duration::ZERO),
        KillAt::Delay(Duration::from_millis(1500 + jitter_ms(500))),
    ];
    let (pebble, state) = setup(PebbleOpts::default());
    let mut all_names: Vec<String> = Vec::new();
    // Partly recorded orders, each with the round that first left it.
    let mut partial_orders: BTreeMap<String, String> = BTreeMap::new();

    for (round, kill_at) in rounds.iter().enumerate() {
        let names: Vec<String> = (0..3)
            .map(|i| format!("kill{round}-{i}.example.org"))
            .collect();
        for n in &names {
            acmekeep(&state, &["want", "--no-reconcile", n]).assert_success();
        }
        all_names.extend(names);

        let before: Vec<Vec<String>> = ["keys", "certs", "live"]
            .iter()
            .map(|d| state.list(d))
            .collect();
        let started = std::time::Instant::now();
        let running = spawn_acmekeep(&state, &["reconcile"], &RunOpts::default());
        let pid = running.id();
        match *kill_at {
            KillAt::Delay(d) => std::thread::sleep(d),
            KillAt::NewEntryIn(dir, extra) => {
                let idx = ["keys", "certs", "live"]
                    .iter()
                    .position(|d| *d == dir)
                    .unwrap_or_default();
                let seen = poll_until(Duration::from_secs(60), Duration::from_micros(200), || {
                    if has_exited(pid) {
                        return Some(false);
                    }
                    let now = state.list(dir);
                    now.iter().any(|e| !before[idx].contains(e)).then_some(true)
                });
                assert!(seen.is_some(), "round {round}: acmekeep ran for 60 s");
                std::thread::sleep(extra);
            }
        }
        let context = format!("round {round} ({kill_at:?})");
        if has_exited(pid) {
            // It finished by itself before the kill: it must have succeeded (a lock left
            // by the previous kill would give 75).
            let run = running.wait();
            assert!(
                run.success(),
                "{context}: the run ended by itself, but not successfully\n{}",
                run.describe()
            );
        } else {
            // Dropping a running acmekeep sends SIGKILL at once (no `kill` process to
            // start, so the event-triggered kills land within microseconds) and reaps it.
            drop(running);
        }
        let context = format!("{context}, stopped after {:.2?}", started.elapsed());
        let doc = status_json(&state);
        eprintln!(
            "{context}: now {} cert dirs ({} uncached), {} keys, {} live links",
            state.cert_ids().len(),
            uncached(&doc).len(),
            state.key_ids().len(),
            state.live_names().len()
        );
        for p in assert_consistent(&state, &context) {
            partial_orders.entry(p).or_insert_with(|| context.clone());
        }
    }

    // A normal run after all that finishes everything; the lock died with the processes.
    let run = acmekeep(&state, &["reconcile"]);
    assert_ne!(
        run.code,
        Some(75),
        "a killed run left the lock held\n{}",
        run.describe()
    );
    assert_consistent(&state, "after the final reconcile");
    for n in &all_names {
        assert_complete_live(&state, n);
    }
    // Checked before the exit code, because it is what makes the final run fail.
    assert!(
        partial_orders.is_empty(),
        "BUG: a kill -9 left certificate directories that record an order only in part \
         (Store::begin_cert creates certs/<id> first, then the account link, then url, each \
         step fsynced; it is not atomic). No later run can download them, and every later \
         reconcile reports them and exits 1:\n  {}\n{}\n{}",
        partial_orders
            .iter()
            .map(|(p, round)| format!("{p}, left by {round}"))
            .collect::<Vec<_>>()
            .join("\n  "),
        run.describe(),
        state.tree()
    );
    run.assert_success();
    let doc = status_json(&state);
    assert!(uncached(&doc).is_empty(), "{doc:#}");
    for t in doc["targets"].as_array().into_iter().flatten() {
        assert_eq!(t["state"], "valid", "{doc:#}");
    }
    drop(pebble);
}

#[test]
fn uncached_certificate_is_downloaded_without_a_new_order() {
    const NAME: &str = "uncached.example.org";
    let (pebble, state) = setup(PebbleOpts::default());
    acmekeep(&state, &["want", NAME]).assert_success();
    let id = assert_complete_live(&state, NAME);
    let file = target_file(&state, NAME);
    let cert_before = state.read_live(NAME, "cert");
    let keys_before = state.key_ids();

    // An interrupted download: the order is recorded (url, account, privkey link) but the
    // certificate files never arrived.
    let dir = state.join(Path::new("certs").join(&id));
    for f in ["cert", "chain", "fullchain"] {
        fs::remove_file(dir.join(f)).expect("remove a certificate file");
    }
    let doc = status_json(&state);
    assert_eq!(uncached(&doc), vec![id.clone()], "{doc:#}");

    let run = acmekeep(&state, &["reconcile"]);
    run.assert_success();
    // The certificate that arrives is one line, as a new one is.
    let not_after = {
        let der = pem_certs(&cert_before).remove(0);
        parse_cert(&der)
            .validity()
            .not_after
            .to_datetime()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("date")
    };
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        (
            format!(
                "obtained the certificate of an interrupted earlier order for {NAME} (certs/{id}), valid until {not_after}\n"
            )
            .as_str(),
            ""
        ),
        "{}",
        run.describe()
    );
    assert_eq!(
        state.cert_ids(),
        vec![id.clone()],
        "reconcile made a new order instead of downloading the finished one\n{}",
        state.tree()
    );
    assert_eq!(state.key_ids(), keys_before, "reconcile made a new key");
    assert_eq!(assert_complete_live(&state, NAME), id);
    assert_eq!(
        state.read_live(NAME, "cert"),
        cert_before,
        "the downloaded certificate is not the order's"
    );
    let doc = status_json(&state);
    assert!(uncached(&doc).is_empty(), "{doc:#}");
    let t = target_status(&doc, &file);
    assert_eq!(t["state"], "valid", "{doc:#}");
    assert_eq!(t["certificate"]["id"], id.as_str(), "{doc:#}");

    // An uncached directory whose account link is missing cannot be downloaded: it is
    // reported, and every target is still served.
    const X: &str = "orphan.example.org";
    const Z: &str = "bystander.example.org";
    let state = StateDir::standard(&pebble);
    acmekeep(&state, &["want", X]).assert_success();
    let orphan = assert_complete_live(&state, X);
    acmekeep(&state, &["want", "--no-reconcile", Z]).assert_success();
    let dir = state.join(Path::new("certs").join(&orphan));
    for f in ["cert", "chain", "fullchain", "account"] {
        fs::remove_file(dir.join(f)).expect("remove a certificate file");
    }
    // It cannot be downloaded (no account to ask with): a warning naming it, in status and
    // on every run, never a failure that would make every scheduled run exit 1.
    let doc = status_json(&state);
    assert!(uncached(&doc).is_empty(), "{doc:#}");
    assert!(doc["warnings"].to_string().contains(&orphan), "{doc:#}");

    let run = acmekeep(&state, &["reconcile"]);
    run.assert_success().assert_stderr_contains(&orphan);
    assert_complete_live(&state, Z);
    let replacement = assert_complete_live(&state, X);
    assert_ne!(
        replacement, orphan,
        "live/{X} must not point at the incomplete directory"
    );
}

#[test]
fn reconcile_selects_targets_by_file_name() {
    const A: &str = "chosen.example.org";
    const B: &str = "skipped.example.org";
    let (pebble, state) = setup(PebbleOpts::fast());
    acmekeep(&state, &["want", "--no-reconcile", A]).assert_success();
    acmekeep(&state, &["want", "--no-reconcile", B]).assert_success();
    let (file_a, file_b) = (target_file(&state, A), target_file(&state, B));

    // An unknown target is a usage error, even next to a good one, and nothing is done.
    let run = acmekeep(&state, &["reconcile", "no-such-target"]);
    run.assert_code(2).assert_stderr_contains("no-such-target");
    let run = acmekeep(&state, &["reconcile", &file_a, "no-such-target"]);
    run.assert_code(2).assert_stderr_contains("no-such-target");
    assert!(state.cert_ids().is_empty(), "{}", state.tree());

    acmekeep(&state, &["reconcile", &file_a]).assert_success();
    let id_a = assert_complete_live(&state, A);
    assert!(state.live_link(B).is_none(), "{}", state.tree());
    assert_eq!(state.cert_ids(), vec![id_a.clone()], "{}", state.tree());
    let doc = status_json(&state);
    let tb = target_status(&doc, &file_b);
    assert_eq!(tb["state"], "missing", "{doc:#}");
    assert!(
        tb["last_attempt"].is_null(),
        "an unselected target was attempted: {doc:#}"
    );

    // Selecting the other one obtains it and leaves the first alone.
    acmekeep(&state, &["reconcile", &file_b]).assert_success();
    assert_complete_live(&state, B);
    assert_eq!(state.live_cert_id(A), id_a);
    assert_eq!(state.cert_ids().len(), 2, "{}", state.tree());
    drop(pebble);
}

#[test]
fn bad_target_file_is_reported_and_others_proceed() {
    const GOOD: &str = "fine.example.org";
    const BAD_FILE: &str = "broken-target";
    let (pebble, state) = setup(PebbleOpts::fast());
    acmekeep(&state, &["want", "--no-reconcile", GOOD]).assert_success();
    let good_file = target_file(&state, GOOD);
    // A tab cannot start a YAML token: a syntax error on line 3.
    state.write_desired(BAD_FILE, "satisfy:\n  names:\n\t- unusable.example.org\n");

    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(1)
        .assert_stderr_contains(BAD_FILE)
        .assert_stderr_contains("line 3");
    assert_complete_live(&state, GOOD);
    assert!(state.live_link("unusable.example.org").is_none());

    let doc = status_json(&state);
    let bad = target_status(&doc, BAD_FILE);
    assert_eq!(bad["state"], "invalid", "{doc:#}");
    assert!(
        bad["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("line 3")),
        "last_error of the bad target should give the line: {doc:#}"
    );
    assert_eq!(target_status(&doc, &good_file)["state"], "valid", "{doc:#}");
    drop(pebble);
}

/// Waits until what acmekeep writes now is old enough for its caches to record (they never
/// trust a time less than 2 s before they are written).
fn let_caches_settle() {
    std::thread::sleep(Duration::from_millis(2_200));
}

#[test]
fn caches_never_hide_changes_made_behind_acmekeeps_back() {
    const A: &str = "cached-a.example.org";
    const B: &str = "cached-b.example.org";
    let (_pebble, state) = setup(PebbleOpts::default());
    acmekeep(&state, &["want", A]).assert_success();
    acmekeep(&state, &["want", B]).assert_success();
    let a1 = assert_complete_live(&state, A);
    let b1 = assert_complete_live(&state, B);
    let_caches_settle();
    acmekeep(&state, &["reconcile"]).assert_success();
    let summaries = state.read_string(".acmekeep/cert-summaries");
    let live = state.read_string(".acmekeep/live-links");
    assert!(
        summaries.contains(&a1) && summaries.contains(&b1),
        "{summaries}"
    );
    assert!(live.contains(&format!("{A}\t{a1}")), "{live}");

    // An operator copies B's certificate over A's in place (same inode, as `cp` does):
    // certs/<a1> no longer covers A, and A gets a new certificate.
    let b_pem = state.read(format!("certs/{b1}/cert"));
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(state.join(format!("certs/{a1}/cert")))
            .expect("open certs/a1/cert");
        f.write_all(&b_pem).expect("overwrite");
    }
    acmekeep(&state, &["reconcile"]).assert_success();
    let a2 = assert_complete_live(&state, A);
    assert_ne!(a2, a1, "the edited certificate was still used for {A}");

    // A `revoked` marker dropped into the directory of A's certificate.
    let_caches_settle();
    acmekeep(&state, &["reconcile"]).assert_success();
    assert!(
        state.read_string(".acmekeep/cert-summaries").contains(&a2),
        "the new certificate is cached"
    );
    state.write(format!("certs/{a2}/revoked"), "");
    acmekeep(&state, &["reconcile"]).assert_success();
    let a3 = assert_complete_live(&state, A);
    assert_ne!(a3, a2, "the revoked certificate was still used");

    // The key of B's certificate removed: B is no longer satisfied.
    let_caches_settle();
    acmekeep(&state, &["reconcile"]).assert_success();
    let b_key = state
        .key_ids()
        .into_iter()
        .find(|k| {
            state.read(format!("keys/{k}/privkey")) == state.read(format!("certs/{b1}/privkey"))
        })
        .expect("B's key");
    fs::remove_dir_all(state.join(format!("keys/{b_key}"))).expect("remove key");
    acmekeep(&state, &["reconcile"]).assert_success();
    let b2 = assert_complete_live(&state, B);
    assert_ne!(b2, b1, "a certificate without its key was still used");

    // live/A removed, then pointed elsewhere by hand: both are put right.
    let_caches_settle();
    acmekeep(&state, &["reconcile"]).assert_success();
    assert!(
        state
            .read_string(".acmekeep/live-links")
            .contains(&format!("{A}\t{a3}"))
    );
    fs::remove_file(state.join(format!("live/{A}"))).expect("remove live link");
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(assert_complete_live(&state, A), a3);
    let_caches_settle();
    acmekeep(&state, &["reconcile"]).assert_success();
    fs::remove_file(state.join(format!("live/{A}"))).expect("remove live link");
    std::os::unix::fs::symlink(format!("../certs/{b2}"), state.join(format!("live/{A}")))
        .expect("symlink");
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(assert_complete_live(&state, A), a3);

    // A damaged cache is rebuilt, and nothing is lost meanwhile.
    state.write(
        ".acmekeep/cert-summaries",
        "acmekeep cert-summaries 1\n{\"id\":",
    );
    state.write(".acmekeep/live-links", "garbage");
    let run = acmekeep(&state, &["status", "--json"]);
    run.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    for (name, id) in [(A, &a3), (B, &b2)] {
        let t = doc["targets"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["names"][0] == name))
            .unwrap_or_else(|| panic!("{name} in status: {doc:#}"));
        assert_eq!(t["state"], "valid", "{doc:#}");
        assert_eq!(&t["certificate"]["id"], id.as_str(), "{doc:#}");
    }
    acmekeep(&state, &["reconcile"]).assert_success();
    let rebuilt = state.read_string(".acmekeep/cert-summaries");
    assert!(rebuilt.contains(&a3) && rebuilt.contains(&b2), "{rebuilt}");
}

#[test]
fn an_order_that_cannot_be_downloaded_is_given_up_without_failing_runs() {
    const X: &str = "given-up.example.org";
    let (_pebble, state) = setup(PebbleOpts::default());
    acmekeep(&state, &["want", X]).assert_success();
    let first = assert_complete_live(&state, X);
    let file = target_file(&state, X);

    // The CA no longer knows the order (as after a CA reset): it answers 404.
    let dir = state.join(Path::new("certs").join(&first));
    for f in ["cert", "chain", "fullchain"] {
        fs::remove_file(dir.join(f)).expect("remove a certificate file");
    }
    let url = state.read_string(format!("certs/{first}/url"));
    let (base, _) = url.trim().rsplit_once('/').expect("order URL");
    state.write(
        format!("certs/{first}/url"),
        format!("{base}/no-such-order\n"),
    );
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_success()
        .assert_stderr_contains("giving the order up");
    assert!(
        dir.join(".abandoned").is_file(),
        "no abandoned marker\n{}",
        state.tree()
    );
    let second = assert_complete_live(&state, X);
    assert_ne!(second, first, "{X} got a new certificate");
    let doc = status_json(&state);
    assert!(uncached(&doc).is_empty(), "{doc:#}");
    assert!(doc["warnings"].to_string().contains(&first), "{doc:#}");
    assert_eq!(target_status(&doc, &file)["state"], "valid", "{doc:#}");
    // Nothing is retried: the next run is quiet and asks the CA nothing about it.
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_success();
    assert!(
        !run.stderr.contains("cannot download"),
        "{}",
        run.describe()
    );
    acmekeep(&state, &["cull"]).assert_success();
    assert!(
        !dir.exists(),
        "cull left the given-up order\n{}",
        state.tree()
    );

    // A CA that cannot be reached: a warning and another try next run, until the order is
    // a week old.
    let dir = state.join(Path::new("certs").join(&second));
    for f in ["cert", "chain", "fullchain"] {
        fs::remove_file(dir.join(f)).expect("remove a certificate file");
    }
    let dead = format!("https://127.0.0.1:{}/my-order/unreachable", free_port());
    state.write(format!("certs/{second}/url"), format!("{dead}\n"));
    let run = acmekeep(&state, &["-v", "reconcile"]);
    run.assert_success()
        .assert_stderr_contains("tried again next run");
    assert!(!dir.join(".abandoned").exists(), "{}", state.tree());
    assert_eq!(uncached(&status_json(&state)), vec![second.clone()]);
    let week_ago = SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    fs::File::options()
        .write(true)
        .open(dir.join("url"))
        .and_then(|f| f.set_modified(week_ago))
        .expect("backdate url");
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_success()
        .assert_stderr_contains("giving the order up");
    assert!(dir.join(".abandoned").is_file(), "{}", state.tree());
    assert!(uncached(&status_json(&state)).is_empty());
    assert_complete_live(&state, X);
}
