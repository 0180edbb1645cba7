//! Preferred chains (RFC 8555 §7.4.2, `request.preferred-chain`) end to end. Pebble 2.4 with
//! `PEBBLE_ALTERNATE_ROOTS=2` issues every certificate under three roots: the download
//! carries the chain up to root 0 and names the other two with `Link: rel="alternate"`; its
//! management interface serves each root at `/roots/<i>`, which is how the tests learn their
//! (random) names.

use std::fs;
use std::path::Path;

use crate::support::*;

/// Alternate roots Pebble is started with.
const ALTERNATES: usize = 2;

/// Pebble with alternate roots, without validation sleeps, rejecting `nonce_reject_percent`
/// of good nonces; and a standard state directory.
fn setup(nonce_reject_percent: u8) -> (Pebble, StateDir) {
    let mut opts = PebbleOpts::fast();
    opts.nonce_reject_percent = Some(nonce_reject_percent);
    opts.env
        .push(("PEBBLE_ALTERNATE_ROOTS".into(), ALTERNATES.to_string()));
    let pebble = Pebble::start(opts);
    let state = StateDir::standard(&pebble);
    (pebble, state)
}

fn common_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The common name of Pebble's root `i` (0 is the default chain's).
fn root_name(pebble: &Pebble, i: usize) -> String {
    let rsp = pebble.get(&format!("{}/roots/{i}", pebble.management_url()));
    assert_eq!(rsp.status, 200, "GET /roots/{i}: {}", rsp.text());
    let der = pem_certs(&rsp.body).remove(0);
    common_name(parse_cert(&der).subject())
}

/// The issuer of the topmost certificate of `live/<name>/chain`, after checking that the
/// files hang together: cert is the leaf, each chain certificate issued the one before,
/// fullchain = cert ++ chain.
fn top_issuer(state: &StateDir, name: &str) -> String {
    let cert = state.read_live(name, "cert");
    let chain = state.read_live(name, "chain");
    assert_eq!(
        state.read_live(name, "fullchain"),
        [cert.as_slice(), chain.as_slice()].concat(),
        "live/{name}: fullchain != cert ++ chain"
    );
    let all: Vec<Vec<u8>> = pem_certs(&cert)
        .into_iter()
        .chain(pem_certs(&chain))
        .collect();
    assert!(all.len() >= 2, "live/{name}: a leaf and its chain");
    for pair in all.windows(2) {
        assert_eq!(
            parse_cert(&pair[0]).issuer(),
            parse_cert(&pair[1]).subject(),
            "live/{name}: the chain is not in order"
        );
    }
    common_name(parse_cert(all.last().expect("certificates")).issuer())
}

/// Certificate downloads Pebble has served (it logs each handler call by route).
fn cert_downloads(pebble: &Pebble) -> usize {
    pebble
        .logs()
        .matches("POST /certZ/ -> calling handler()")
        .count()
}

#[test]
fn preferred_chain_picks_alternate_roots_by_issuer_name() {
    // Nonces rejected often: the alternates' own POST-as-GET requests must retry too.
    let (pebble, state) = setup(50);
    let roots: Vec<String> = (0..=ALTERNATES).map(|i| root_name(&pebble, i)).collect();
    assert!(
        roots.iter().all(|r| r.starts_with("Pebble Root CA ")),
        "{roots:?}"
    );
    state.write_desired(
        "second",
        &format!(
            "satisfy:\n  names: [second.example.org]\nrequest:\n  preferred-chain: {:?}\n",
            roots[2]
        ),
    );
    // A list is tried in order: names nobody offers are skipped.
    state.write_desired(
        "first",
        &format!(
            "satisfy:\n  names: [first.example.org]\nrequest:\n  preferred-chain: [\"No Such Root\", {:?}, {:?}]\n",
            roots[1], roots[2]
        ),
    );

    let run = acmekeep(&state, &["-v", "reconcile"]);
    run.assert_success();
    assert_eq!(top_issuer(&state, "second.example.org"), roots[2]);
    assert_eq!(top_issuer(&state, "first.example.org"), roots[1]);
    run.assert_stderr_contains("kept alternate chain 2");
    run.assert_stderr_contains("kept alternate chain 1");
    assert!(!run.stderr.contains("not downloaded"), "{}", run.describe());
}

#[test]
fn without_a_match_the_default_chain_is_kept_and_no_preference_costs_nothing() {
    // No nonce rejections, so Pebble's count of certificate downloads is exact.
    let (pebble, state) = setup(0);
    let roots: Vec<String> = (0..=ALTERNATES).map(|i| root_name(&pebble, i)).collect();

    // No preference: the default chain, one download, no alternate fetched.
    state.write_desired("plain", "satisfy:\n  names: [plain.example.org]\n");
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(top_issuer(&state, "plain.example.org"), roots[0]);
    assert_eq!(cert_downloads(&pebble), 1, "{}", pebble.logs());

    // A preference nobody offers: every chain is looked at, the default kept, and the run
    // succeeds.
    state.write_desired(
        "picky",
        "satisfy:\n  names: [picky.example.org]\nrequest:\n  preferred-chain: ISRG Root X1\n",
    );
    let run = acmekeep(&state, &["-v", "reconcile"]);
    run.assert_success();
    assert_eq!(top_issuer(&state, "picky.example.org"), roots[0]);
    assert_eq!(cert_downloads(&pebble), 2 + ALTERNATES, "{}", pebble.logs());
    run.assert_stderr_contains("kept the default chain (no preferred issuer offered)");
    for root in &roots {
        run.assert_stderr_contains(root);
    }

    // A changed preference does not reissue, but applies to the next download: here that
    // of an interrupted one (an "uncached" certificate directory).
    let id = state.live_cert_id("picky.example.org");
    let cert = state.read_live("picky.example.org", "cert");
    state.write_desired(
        "picky",
        &format!(
            "satisfy:\n  names: [picky.example.org]\nrequest:\n  preferred-chain: {:?}\n",
            roots[1]
        ),
    );
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(top_issuer(&state, "picky.example.org"), roots[0]);
    for f in ["cert", "chain", "fullchain"] {
        fs::remove_file(state.join(Path::new("certs").join(&id).join(f))).expect("remove");
    }
    let run = acmekeep(&state, &["-v", "reconcile"]);
    run.assert_success();
    assert_eq!(state.live_cert_id("picky.example.org"), id, "no new order");
    assert_eq!(state.read_live("picky.example.org", "cert"), cert);
    assert_eq!(top_issuer(&state, "picky.example.org"), roots[1]);
    run.assert_stderr_contains(&format!("certs/{id}: kept alternate chain"));
    // The certificate without a preference was left alone all along.
    assert_eq!(top_issuer(&state, "plain.example.org"), roots[0]);
}
