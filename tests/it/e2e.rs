//! End-to-end tests: the `acmekeep` binary against a private Pebble, per
//! `doc/CONTRACT-draft.md`. Every test has its own Pebble and state directory, listens only
//! on free loopback ports (never :80) and never touches `/var`.

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// Every test asserts the complete on-disk result for each name it obtains.
/// Returns the certificate ID `live/<name>` points at.
fn assert_live_cert(state: &StateDir, pebble: &Pebble, name: &str) -> String {
    // live/<name> -> ../certs/<id> (a relative symlink).
    let id = state.live_cert_id(name);
    assert!(is_acmetool_id(&id), "live/{name} -> ../certs/{id}: bad ID");
    let cert_dir = Path::new("certs").join(&id);

    // certs/<id>/url: the order URL, whose SHA-256 is the ID.
    let url = state.read_string(cert_dir.join("url"));
    let url = url.trim();
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{}/", pebble.acme_port())),
        "certs/{id}/url = {url:?}"
    );
    assert_eq!(
        acmetool_id(url.as_bytes()),
        id,
        "certificate ID != ID of its url"
    );

    // cert, chain, fullchain, privkey through the live link.
    let cert_pem = state.read_live(name, "cert");
    let chain_pem = state.read_live(name, "chain");
    let fullchain_pem = state.read_live(name, "fullchain");
    let privkey_pem = state.read_live(name, "privkey");
    let certs = pem_certs(&cert_pem);
    assert_eq!(certs.len(), 1, "live/{name}/cert holds exactly the leaf");
    let chain = pem_certs(&chain_pem);
    assert!(!chain.is_empty(), "live/{name}/chain is empty");
    assert_eq!(
        fullchain_pem,
        [cert_pem.as_slice(), chain_pem.as_slice()].concat(),
        "fullchain != cert ++ chain"
    );
    let leaf = &certs[0];
    let leaf_parsed = parse_cert(leaf);
    assert_eq!(
        leaf_parsed.issuer(),
        parse_cert(&chain[0]).subject(),
        "chain[0] did not issue the leaf"
    );
    let sans = cert_dns_names(leaf);
    assert!(
        sans.iter().any(|s| s == name),
        "leaf SANs {sans:?} lack {name}"
    );

    // The private key belongs to the certificate and lives in keys/<keyID>/ (0700/0600),
    // with certs/<id>/privkey -> ../../keys/<keyID>/privkey.
    assert_eq!(
        private_key_public_raw(&privkey_pem),
        cert_public_key_raw(leaf),
        "live/{name}/privkey does not match the certificate's public key"
    );
    let key_id = acmetool_id(&cert_spki_der(leaf));
    let key_dir = Path::new("keys").join(&key_id);
    assert_eq!(
        state.read(key_dir.join("privkey")),
        privkey_pem,
        "keys/{key_id}/privkey"
    );
    assert_eq!(state.mode(&key_dir), 0o700, "mode of keys/{key_id}");
    assert_eq!(
        state.mode(key_dir.join("privkey")),
        0o600,
        "mode of keys/{key_id}/privkey"
    );
    assert_eq!(
        fs::read_link(state.join(cert_dir.join("privkey"))).ok(),
        Some(Path::new("../../keys").join(&key_id).join("privkey")),
        "certs/{id}/privkey link"
    );

    // The account: accounts/<urlpart>/<accountKeyID>/privkey (0600), and
    // certs/<id>/account -> ../../accounts/<urlpart>/<accountKeyID>.
    let urlpart = account_urlpart(&pebble.directory_url());
    let accounts = state.list(Path::new("accounts").join(&urlpart));
    assert_eq!(accounts.len(), 1, "accounts/{urlpart}: {accounts:?}");
    let account_id = &accounts[0];
    let account_dir = Path::new("accounts").join(&urlpart).join(account_id);
    let account_key = state.read(account_dir.join("privkey"));
    assert_eq!(
        &acmetool_id(&private_key_spki_der(&account_key)),
        account_id,
        "account directory name is not the ID of its key"
    );
    assert_eq!(
        state.mode(account_dir.join("privkey")),
        0o600,
        "mode of the account key"
    );
    assert_eq!(
        fs::read_link(state.join(cert_dir.join("account"))).ok(),
        Some(Path::new("../..").join(&account_dir)),
        "certs/{id}/account link"
    );
    id
}

/// A Pebble with the given options and a state directory with the standard configuration.
fn setup(opts: PebbleOpts) -> (Pebble, StateDir) {
    let pebble = Pebble::start(opts);
    let state = StateDir::standard(&pebble);
    (pebble, state)
}

/// `live/` entries, certificate IDs and key IDs, for "nothing changed" comparisons.
fn snapshot(state: &StateDir) -> (Vec<(String, String)>, Vec<String>, Vec<String>) {
    let live = state
        .live_names()
        .into_iter()
        .map(|n| {
            let target = state
                .live_link(&n)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            (n, target)
        })
        .collect();
    (live, state.cert_ids(), state.key_ids())
}

/// A process holding an exclusive flock on a file; killed with SIGKILL (and reaped) on drop.
struct LockHolder {
    child: Child,
}

impl LockHolder {
    /// Takes the lock on `path` in a separate process (`sh` + util-linux `flock` on an
    /// inherited descriptor, then `exec sleep`: one process holds it), replaces the file's
    /// contents with that process's PID like acmekeep does, and waits until the lock is really held.
    fn hold(path: &Path) -> LockHolder {
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 9>>"$1" && flock -x 9 && : >"$1" && echo $$ >&9 && exec sleep 120"#)
            .arg("sh")
            .arg(path)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sh/flock lock holder");
        let mut holder = LockHolder { child };
        let locked = poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
            if let Ok(Some(status)) = holder.child.try_wait() {
                panic!("lock holder exited: {status}");
            }
            let f = OpenOptions::new().read(true).open(path).ok()?;
            match f.try_lock() {
                Err(fs::TryLockError::WouldBlock) => {
                    let pid = fs::read_to_string(path).ok()?;
                    (pid.trim() == holder.child.id().to_string()).then_some(())
                }
                Ok(()) => {
                    let _ = f.unlock();
                    None
                }
                Err(_) => None,
            }
        });
        assert!(
            locked.is_some(),
            "lock holder did not take {}",
            path.display()
        );
        holder
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` the holder, as if it had crashed.
    fn kill(mut self) {
        self.child.kill().expect("kill lock holder");
        self.child.wait().expect("reap lock holder");
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn want_one_name_via_builtin_listener() {
    const NAME: &str = "listener.example.org";
    let (pebble, state) = setup(PebbleOpts::default());

    acmekeep(&state, &["want", NAME]).assert_success();

    let id = assert_live_cert(&state, &pebble, NAME);
    assert_eq!(state.cert_ids(), vec![id], "{}", state.tree());
    assert_eq!(state.key_ids().len(), 1, "{}", state.tree());
    assert_eq!(state.live_names(), vec![NAME.to_owned()]);

    // want wrote one target file, named like acmetool's: <name>-<26 chars of base32>.
    let desired = state.desired_files();
    assert_eq!(desired.len(), 1, "desired/: {desired:?}");
    let suffix = desired[0]
        .strip_prefix(&format!("{NAME}-"))
        .unwrap_or_else(|| panic!("desired/{}: expected {NAME}-<id>", desired[0]));
    assert_eq!(suffix.len(), 26, "desired/{}", desired[0]);
    let target: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(&state.read(Path::new("desired").join(&desired[0])))
            .expect("target file is YAML");
    assert_eq!(
        target["satisfy"]["names"][0].as_str(),
        Some(NAME),
        "target file: {target:?}"
    );
}

#[test]
fn webroot_method_obtains_certificate() {
    const NAME: &str = "webroot.example.org";
    let pebble = Pebble::start(PebbleOpts::default());
    let state = StateDir::new();
    let webroot = state.scratch_dir("webroot");
    state.write_conf_target(&webroot_conf_target(&pebble, &webroot));
    state.write_standard_responses();
    // The "web server": serves the webroot on Pebble's http-01 port. acmekeep itself must
    // not listen anywhere (no http-ports, no default listeners), or this bind would clash.
    let server =
        ChallengeServer::start(pebble.http_port(), &webroot).expect("start test web server");

    acmekeep(&state, &["want", NAME]).assert_success();

    assert_live_cert(&state, &pebble, NAME);
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/.well-known/acme-challenge/") && r.ends_with("200")),
        "Pebble never fetched a challenge file from the webroot: {requests:?}"
    );
    let leftovers: Vec<_> = fs::read_dir(&webroot)
        .expect("read webroot")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "challenge files left in the webroot: {leftovers:?}"
    );
}

#[test]
fn second_reconcile_is_a_noop() {
    const NAME: &str = "noop.example.org";
    let (pebble, state) = setup(PebbleOpts::default());
    acmekeep(&state, &["want", NAME]).assert_success();
    let id = assert_live_cert(&state, &pebble, NAME);
    let before = snapshot(&state);

    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(snapshot(&state), before, "reconcile changed the state");
    assert_eq!(state.live_cert_id(NAME), id);

    // No subcommand means reconcile.
    acmekeep(&state, &[]).assert_success();
    assert_eq!(
        snapshot(&state),
        before,
        "default command changed the state"
    );
}

#[test]
fn want_of_covered_name_writes_no_new_target() {
    const NAME: &str = "covered.example.org";
    let (pebble, state) = setup(PebbleOpts::default());
    acmekeep(&state, &["want", NAME]).assert_success();
    assert_live_cert(&state, &pebble, NAME);
    let desired = state.desired_files();
    assert_eq!(desired.len(), 1, "{desired:?}");
    let before = snapshot(&state);

    acmekeep(&state, &["want", NAME]).assert_success();
    assert_eq!(
        state.desired_files(),
        desired,
        "want of a covered name added a target"
    );
    assert_eq!(snapshot(&state), before);

    // Names are normalised before the check (case, trailing dot).
    acmekeep(&state, &["want", "--no-reconcile", "Covered.Example.ORG."]).assert_success();
    assert_eq!(
        state.desired_files(),
        desired,
        "normalised name added a target"
    );
}

#[test]
fn one_reconcile_obtains_two_wanted_targets() {
    const A: &str = "first.example.org";
    const B: &str = "second.example.org";
    let (pebble, state) = setup(PebbleOpts::default());

    acmekeep(&state, &["want", "--no-reconcile", A]).assert_success();
    acmekeep(&state, &["want", "--no-reconcile", B]).assert_success();
    assert_eq!(state.desired_files().len(), 2, "{}", state.tree());
    assert!(
        state.cert_ids().is_empty(),
        "--no-reconcile obtained a certificate"
    );
    assert!(state.live_names().is_empty());

    acmekeep(&state, &["reconcile"]).assert_success();

    let id_a = assert_live_cert(&state, &pebble, A);
    let id_b = assert_live_cert(&state, &pebble, B);
    assert_ne!(id_a, id_b, "two targets, two certificates");
    assert_eq!(state.cert_ids().len(), 2, "{}", state.tree());
    assert!(!cert_dns_names(&pem_certs(&state.read_live(A, "cert"))[0]).contains(&B.to_owned()));
}

#[test]
fn failing_target_does_not_block_the_others() {
    const GOOD: &str = "good.example.org";
    const BAD: &str = "bad.example.org";
    let (pebble, state) = setup(PebbleOpts::default());
    // Pebble's DNS answers SERVFAIL for BAD, so its validation fails whatever acmekeep does.
    pebble.dns_set_servfail(BAD);

    acmekeep(&state, &["want", "--no-reconcile", GOOD]).assert_success();
    acmekeep(&state, &["want", "--no-reconcile", BAD]).assert_success();

    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(1).assert_stderr_contains(BAD);

    assert_live_cert(&state, &pebble, GOOD);
    assert!(state.live_link(BAD).is_none(), "{}", state.tree());
    assert_eq!(state.cert_ids().len(), 1, "{}", state.tree());
}

#[test]
fn survives_heavy_nonce_rejection() {
    const NAMES: [&str; 2] = ["nonce.example.org", "www.nonce.example.org"];
    let (pebble, state) = setup(PebbleOpts {
        nonce_reject_percent: Some(50),
        ..PebbleOpts::default()
    });

    acmekeep(&state, &["want", NAMES[0], NAMES[1]]).assert_success();

    // One target with both names: one certificate, linked under both names.
    let id0 = assert_live_cert(&state, &pebble, NAMES[0]);
    let id1 = assert_live_cert(&state, &pebble, NAMES[1]);
    assert_eq!(id0, id1);
    assert_eq!(state.desired_files().len(), 1);
}

#[test]
fn status_fits_100_columns_and_wide_shows_everything() {
    const LONG: &str = "a-rather-long-host-name.some-department.example.org";
    let (_pebble, state) = setup(PebbleOpts::fast());
    let names = [
        LONG.to_owned(),
        format!("www.{LONG}"),
        format!("mail.{LONG}"),
    ];
    let mut args = vec!["want"];
    args.extend(names.iter().map(String::as_str));
    acmekeep(&state, &args).assert_success();
    // A target that failed, so that its last error is shown too.
    state.write_desired(
        "failing-target-with-a-long-file-name.example.org",
        "satisfy:\n  names: [failing-target-with-a-long-file-name.example.org]\nrequest:\n  provider: https://127.0.0.1:1/dir\n",
    );
    acmekeep(&state, &["reconcile"]).assert_code(1);
    let file = state.desired_file_for(LONG);
    let id = state.live_cert_id(LONG);

    let text = acmekeep(&state, &["status"]);
    text.assert_success();
    for line in text.stdout.lines() {
        assert!(line.chars().count() <= 100, "{line:?}\n{}", text.describe());
    }
    // Long names are cut and the rest counted: "a-rather-long-host-nam…,+2".
    assert!(text.stdout.contains("…,+2"), "{}", text.describe());
    assert!(
        text.stdout.contains("connection refused"),
        "{}",
        text.describe()
    );
    assert!(!text.stdout.contains(&id) && !text.stdout.contains(&file));

    let wide = acmekeep(&state, &["status", "--wide"]);
    wide.assert_success();
    for needle in [&file, &id, &names.join(",")] {
        assert!(
            wide.stdout.contains(needle.as_str()),
            "{needle}\n{}",
            wide.describe()
        );
    }
    assert!(wide.stdout.lines().any(|l| l.chars().count() > 100));
}

#[test]
fn status_reports_names_and_certificate() {
    const NAME: &str = "status.example.org";
    let (pebble, state) = setup(PebbleOpts::fast());
    acmekeep(&state, &["want", NAME]).assert_success();
    let id = assert_live_cert(&state, &pebble, NAME);

    let text = acmekeep(&state, &["status"]);
    text.assert_success();
    assert!(text.stdout.contains(NAME), "{}", text.describe());
    let wide = acmekeep(&state, &["status", "--wide"]);
    assert!(wide.stdout.contains(&id), "{}", wide.describe());

    let json = acmekeep(&state, &["status", "--json"]);
    json.assert_success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON: {e}\n{}", json.describe()));
    let target = &v["targets"][0];
    let names: Vec<&str> = target["names"]
        .as_array()
        .unwrap_or_else(|| panic!("targets[0].names is not an array: {v:#}"))
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(names.contains(&NAME), "targets[0].names = {names:?}");
    let not_after = &target["certificate"]["not_after"];
    assert!(
        not_after.is_string() || not_after.is_number(),
        "targets[0].certificate.not_after missing: {v:#}"
    );
}

#[test]
fn locked_state_dir_exits_75_until_holder_dies() {
    const NAME: &str = "lock.example.org";
    let (pebble, state) = setup(PebbleOpts::fast());
    acmekeep(&state, &["want", "--no-reconcile", NAME]).assert_success();

    let holder = LockHolder::hold(&state.join(".lock"));

    let busy = acmekeep(&state, &["reconcile"]);
    busy.assert_code(75).assert_stderr_contains("lock");
    assert!(
        busy.stderr.contains(&holder.pid().to_string()),
        "the busy message should name the holder's PID {}\n{}",
        holder.pid(),
        busy.describe()
    );
    assert!(
        busy.elapsed < Duration::from_secs(30),
        "without --wait, a locked state dir must fail fast\n{}",
        busy.describe()
    );
    assert!(
        state.cert_ids().is_empty(),
        "a locked-out run changed the state"
    );

    // --wait gives up after its duration with the same exit code.
    let waited = acmekeep(&state, &["--wait=2s", "reconcile"]);
    waited.assert_code(75);
    assert!(
        waited.elapsed >= Duration::from_secs(2),
        "--wait=2s returned early\n{}",
        waited.describe()
    );

    // status takes no lock.
    acmekeep(&state, &["status"]).assert_success();

    // A crashed holder leaves no stale lock: the next run proceeds at once.
    holder.kill();
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_live_cert(&state, &pebble, NAME);
}

#[test]
fn concurrent_reconciles_are_serialised() {
    const NAME: &str = "concurrent.example.org";
    let (pebble, state) = setup(PebbleOpts::default());
    acmekeep(&state, &["want", "--no-reconcile", NAME]).assert_success();

    let opts = RunOpts::default();
    let first = spawn_acmekeep(&state, &["reconcile"], &opts);
    let second = spawn_acmekeep(&state, &["reconcile"], &opts);
    let pids = [first.id(), second.id()];
    let runs = [first.wait(), second.wait()];

    for (i, run) in runs.iter().enumerate() {
        assert!(
            matches!(run.code, Some(0 | 75)),
            "each concurrent run exits 0 or 75\n{}",
            run.describe()
        );
        if run.code == Some(75) {
            let other = pids[1 - i].to_string();
            assert!(
                run.stderr.contains(&other),
                "the busy message should name the holder's PID {other}\n{}",
                run.describe()
            );
        }
    }
    assert!(
        runs.iter().any(Run::success),
        "no run succeeded\n{}\n{}",
        runs[0].describe(),
        runs[1].describe()
    );

    assert_live_cert(&state, &pebble, NAME);
    assert_eq!(state.cert_ids().len(), 1, "{}", state.tree());
    let before = snapshot(&state);
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(snapshot(&state), before);
}

#[test]
fn concurrent_reconciles_with_wait_both_succeed() {
    const NAME: &str = "waiting.example.org";
    let (pebble, state) = setup(PebbleOpts::default());
    acmekeep(&state, &["want", "--no-reconcile", NAME]).assert_success();

    let opts = RunOpts::default();
    let first = spawn_acmekeep(&state, &["--wait=100s", "reconcile"], &opts);
    let second = spawn_acmekeep(&state, &["--wait=100s", "reconcile"], &opts);
    first.wait().assert_success();
    second.wait().assert_success();

    // The later run found the target satisfied: one certificate in total.
    assert_live_cert(&state, &pebble, NAME);
    assert_eq!(state.cert_ids().len(), 1, "{}", state.tree());
}

#[test]
fn malformed_conf_target_exits_2_and_names_the_file() {
    let state = StateDir::new();
    state.write_conf_target("request:\n  provider: [unclosed\n  challenge: {\n");
    state.write_standard_responses();

    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(2).assert_stderr_contains("conf/target");
    assert!(state.cert_ids().is_empty());

    // The same for want, which must not have written a target either.
    let run = acmekeep(&state, &["want", "malformed.example.org"]);
    run.assert_code(2).assert_stderr_contains("conf/target");
    assert!(state.desired_files().is_empty(), "{}", state.tree());
}

/// The CA's TLS certificate is verified: without a bundle naming Pebble's test CA the run
/// fails naming the certificate problem, and `SSL_CERT_FILE` (the OpenSSL/Go convention)
/// works as well as `request.provider-ca-bundle`.
#[test]
fn ca_tls_is_verified_and_ssl_cert_file_is_honoured() {
    const NAME: &str = "tls.example.org";
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::new();
    state.write_standard_responses();
    let bundle_line = format!(
        "  provider-ca-bundle: {}\n",
        serde_json::to_string(&pebble.ca_bundle_path().to_string_lossy()).expect("json string")
    );
    let conf = standard_conf_target(&pebble);
    assert!(conf.contains(&bundle_line), "{conf}");
    state.write_conf_target(&conf.replace(&bundle_line, ""));

    let untrusted = acmekeep(&state, &["want", NAME]);
    untrusted.assert_code(1);
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "the failure should name the certificate problem\n{}",
        untrusted.describe()
    );
    assert!(state.live_names().is_empty(), "{}", state.tree());

    let opts = RunOpts {
        env: vec![(
            "SSL_CERT_FILE".to_owned(),
            pebble.ca_bundle_path().to_string_lossy().into_owned(),
        )],
        ..RunOpts::default()
    };
    acmekeep_with(&state, &["reconcile"], &opts).assert_success();
    assert_live_cert(&state, &pebble, NAME);
}

/// A new account needs the CA's terms agreed to; without an answer and without a terminal the
/// run fails at once, naming the exact response-file key, and registers nothing.
#[test]
fn missing_terms_answer_names_the_response_key() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::new();
    state.write_conf_target(&standard_conf_target(&pebble));
    let run = acmekeep(&state, &["want", "tos.example.org"]);
    run.assert_code(1);
    run.assert_stderr_contains(&format!("acme-agreement:{PEBBLE_TOS}"));
    run.assert_stderr_contains("conf/responses");
    assert!(state.account_ids().is_empty(), "{}", state.tree());
    assert!(state.live_names().is_empty(), "{}", state.tree());

    // The e-mail answer is needed too, and named the same way.
    state.write(
        "conf/responses",
        format!("\"acme-agreement:{PEBBLE_TOS}\": true\n"),
    );
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(1);
    run.assert_stderr_contains("acme-enter-email");

    state.write_standard_responses();
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(state.live_names(), vec!["tos.example.org".to_owned()]);
}
