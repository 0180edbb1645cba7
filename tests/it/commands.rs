//! The maintenance commands end to end: unwant, cull, revoke, account-url, completions and
//! the man page, driven from the built binary against Pebble.

use std::time::{Duration, Instant};

use crate::support::*;

fn setup(opts: PebbleOpts) -> (Pebble, StateDir) {
    let pebble = Pebble::start(opts);
    let state = StateDir::standard(&pebble);
    (pebble, state)
}

fn desired_text(state: &StateDir) -> Vec<String> {
    state
        .desired_files()
        .iter()
        .map(|f| state.read_string(format!("desired/{f}")))
        .collect()
}

#[test]
fn unwant_removes_names_and_deletes_emptied_targets() {
    let (_pebble, state) = setup(PebbleOpts::fast());
    acmekeep(&state, &["want", "a.unwant.test", "b.unwant.test"]).assert_success();
    acmekeep(&state, &["want", "c.unwant.test"]).assert_success();
    let live_before = state.live_names();
    assert_eq!(live_before.len(), 3, "{}", state.tree());
    assert_eq!(state.desired_files().len(), 2);

    acmekeep(&state, &["unwant", "B.unwant.test."]).assert_success();
    let texts = desired_text(&state);
    assert_eq!(texts.len(), 2);
    assert!(
        texts.iter().all(|t| !t.contains("b.unwant.test")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("a.unwant.test")),
        "{texts:?}"
    );

    acmekeep(&state, &["unwant", "c.unwant.test"]).assert_success();
    assert_eq!(state.desired_files().len(), 1, "{}", state.tree());
    // Certificates and links stay until cull (acmetool semantics).
    assert_eq!(state.live_names(), live_before);

    acmekeep(&state, &["unwant", "not a name"]).assert_code(2);
}

#[test]
fn cull_deletes_only_dead_unlinked_certificates_and_unused_keys() {
    const NAME: &str = "cull.example.org";
    const VALIDITY: u64 = 9;
    let (pebble, state) = setup(PebbleOpts {
        cert_validity_secs: Some(VALIDITY),
        ..PebbleOpts::fast()
    });
    acmekeep(&state, &["want", NAME]).assert_success();
    let first = state.live_cert_id(NAME);

    // A target that cannot validate leaves the key it generated before ordering.
    pebble.dns_set_servfail("broken.cull.example.org");
    acmekeep(&state, &["want", "broken.cull.example.org"]).assert_code(1);
    assert_eq!(state.key_ids().len(), 2, "{}", state.tree());

    // Renew once the first certificate is due, so it is no longer linked; then let it expire.
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        acmekeep(&state, &["reconcile", &target_of(&state, NAME)]).assert_success();
        let now = state.live_cert_id(NAME);
        if now != first {
            break now;
        }
        assert!(Instant::now() < deadline, "never renewed\n{}", state.tree());
        std::thread::sleep(Duration::from_millis(500));
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cert_expired(&state, &first) {
        assert!(Instant::now() < deadline, "first certificate never expired");
        std::thread::sleep(Duration::from_millis(300));
    }

    let sim = acmekeep(&state, &["cull", "--simulate"]);
    sim.assert_success();
    assert!(
        sim.stdout.contains(&format!("would delete certs/{first}")),
        "{}",
        sim.describe()
    );
    assert!(
        state.cert_ids().contains(&first),
        "simulate deleted something"
    );

    let run = acmekeep(&state, &["cull"]);
    run.assert_success();
    let certs = state.cert_ids();
    assert!(!certs.contains(&first), "{}", run.describe());
    assert!(certs.contains(&second));
    assert_eq!(state.live_cert_id(NAME), second);
    // Left: only the live certificate's key.
    let keys = state.key_ids();
    assert_eq!(keys.len(), 1, "{}\n{}", run.describe(), state.tree());
    let live_key = state.read_live(NAME, "privkey");
    assert_eq!(state.read(format!("keys/{}/privkey", keys[0])), live_key);
    // Nothing left to cull.
    let again = acmekeep(&state, &["cull"]);
    again.assert_success();
    assert!(again.stdout.trim().is_empty(), "{}", again.describe());
}

fn target_of(state: &StateDir, name: &str) -> String {
    state
        .desired_files()
        .into_iter()
        .find(|f| f.starts_with(&format!("{name}-")))
        .unwrap_or_else(|| panic!("no target for {name}\n{}", state.tree()))
}

fn cert_expired(state: &StateDir, id: &str) -> bool {
    let pem = state.read_string(format!("certs/{id}/cert"));
    let der = pem_certs(pem.as_bytes()).remove(0);
    let cert = parse_cert(&der);
    cert.validity().not_after.timestamp()
        < std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
}

fn serial_hex(state: &StateDir, id: &str) -> String {
    let pem = state.read_string(format!("certs/{id}/cert"));
    let der = pem_certs(pem.as_bytes()).remove(0);
    parse_cert(&der).raw_serial_as_string().replace(':', "")
}

#[test]
fn revoke_tells_the_ca_and_the_next_certificate_replaces_it() {
    const NAME: &str = "revoke.example.org";
    let (pebble, state) = setup(PebbleOpts::default());
    acmekeep(&state, &["want", NAME]).assert_success();
    let first = state.live_cert_id(NAME);
    let serial = serial_hex(&state, &first);

    let run = acmekeep(&state, &["revoke", &first, "--reason", "superseded"]);
    run.assert_success();
    assert!(state.path().join(format!("certs/{first}/revoked")).exists());
    let second = state.live_cert_id(NAME);
    assert_ne!(second, first, "no replacement\n{}", run.describe());

    // The CA knows: Pebble's management API reports the serial as revoked.
    let status = pebble.get(&format!(
        "{}/cert-status-by-serial/{}",
        pebble.management_url(),
        serial.trim_start_matches('0')
    ));
    let body = String::from_utf8_lossy(&status.body).to_string();
    assert!(body.contains("Revoked"), "status {}: {body}", status.status);

    // By path, through the live link.
    let path = state.path().join(format!("live/{NAME}/cert"));
    acmekeep(&state, &["revoke", &path.to_string_lossy()]).assert_success();
    assert_ne!(state.live_cert_id(NAME), second);

    // Nonsense is refused with exit 2, naming it.
    let bad = acmekeep(&state, &["revoke", "/etc/passwd"]);
    bad.assert_code(2);
    bad.assert_stderr_contains("/etc/passwd");
}

#[test]
fn account_url_prints_the_url_without_newline() {
    let (pebble, state) = setup(PebbleOpts::fast());
    let run = acmekeep(&state, &["account-url"]);
    run.assert_success();
    let base = pebble.directory_url().trim_end_matches("/dir").to_owned();
    assert!(run.stdout.starts_with(&base), "{}", run.describe());
    assert!(!run.stdout.ends_with('\n'), "{:?}", run.stdout);
    assert_eq!(state.account_ids().len(), 1);
    // Same account the second time.
    let again = acmekeep(&state, &["account-url"]);
    assert_eq!(again.stdout, run.stdout);
}

#[test]
fn completions_and_man_page_come_from_the_cli() {
    let state = StateDir::new();
    let bash = acmekeep(&state, &["completions", "bash"]);
    bash.assert_success();
    assert!(bash.stdout.contains("acmekeep") && bash.stdout.contains("reconcile"));
    let man = acmekeep(&state, &["manpage"]);
    man.assert_success();
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH"),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
    assert!(man.stdout.contains("want"));
    // A well-formed page: groff reports nothing with every warning on. (groff-base is part of
    // every Debian system that has man-db; scripts/install-deps installs it otherwise.)
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("acmekeep.1");
    std::fs::write(&page, &man.stdout).expect("write page");
    let groff = std::process::Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(&page)
        .output()
        .expect("run groff (Debian package groff-base)");
    assert!(
        groff.status.success() && groff.stderr.is_empty(),
        "groff: {}",
        String::from_utf8_lossy(&groff.stderr)
    );
}
