//! A hostile CA: Pebble behind [`AriProxy`], which answers chosen exchanges slowly,
//! endlessly, malformed, or with hostile URLs, tokens, chains and `Retry-After`s (see
//! `support/hostile.rs`). One table per class of attack; every case runs against a fresh
//! state directory whose default provider is the proxy, next to a target at Pebble itself
//! (a healthy CA), which must get its certificate in the same run: a CA that misbehaves
//! costs at most its own targets, and never a panic.

use std::time::Duration;

use crate::support::*;

/// The short deadline the slow cases use (the least `--ca-timeout` accepts).
const CA_TIMEOUT: &str = "1s";

/// Pebble, the proxy in front of it, and a fresh state directory per case.
struct Ca {
    pebble: Pebble,
    proxy: AriProxy,
}

impl Ca {
    fn start(opts: PebbleOpts) -> Ca {
        let pebble = Pebble::start(opts);
        let proxy = AriProxy::start(&pebble);
        Ca { pebble, proxy }
    }

    /// A state directory whose default provider is the proxy, with one target at the proxy
    /// (`hostile.example.org`) and one at Pebble itself (`healthy.example.org`).
    fn state(&self) -> StateDir {
        let state = StateDir::new();
        let conf = standard_conf_target(&self.pebble).replace(
            &serde_json::to_string(&self.pebble.directory_url()).expect("JSON"),
            &serde_json::to_string(&self.proxy.directory_url()).expect("JSON"),
        );
        state.write_conf_target(&conf);
        state.write_standard_responses();
        state.write_desired("hostile", "satisfy:\n  names: [hostile.example.org]\n");
        state.write_desired(
            "healthy",
            &format!(
                "satisfy:\n  names: [healthy.example.org]\nrequest:\n  provider: {}\n",
                serde_json::to_string(&self.pebble.directory_url()).expect("JSON")
            ),
        );
        state
    }
}

/// A reconcile bounded well below the harness's default, so a hang shows as a failure.
fn reconcile(state: &StateDir, extra: &[&str]) -> Run {
    let mut args = vec!["reconcile", "--ca-timeout", CA_TIMEOUT];
    args.extend_from_slice(extra);
    acmekeep_with(
        state,
        &args,
        &RunOpts {
            timeout: Duration::from_secs(60),
            ..RunOpts::default()
        },
    )
}

/// What every hostile case must show: the run ended on its own, quickly, without a panic,
/// failed only the hostile target (with `why` in its line), and the healthy CA's target got
/// its certificate.
#[track_caller]
fn assert_contained(case: &str, run: &Run, state: &StateDir, why: &str) {
    let ctx = || format!("case {case}\n{}\n{}", run.describe(), state.tree());
    assert!(!run.timed_out, "the run hung: {}", ctx());
    assert!(
        run.elapsed < Duration::from_secs(25),
        "took {:?}: {}",
        run.elapsed,
        ctx()
    );
    assert!(!run.stderr.contains("panicked"), "{}", ctx());
    assert_eq!(run.code, Some(1), "{}", ctx());
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("desired/hostile") && l.contains("failed"))
        .unwrap_or_else(|| panic!("no failure line for the hostile target: {}", ctx()));
    assert!(
        line.contains(why),
        "expected {why:?} in {line:?}: {}",
        ctx()
    );
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.contains("desired/healthy")
                && (l.contains("failed") || l.contains("deferred"))),
        "the healthy target was affected: {}",
        ctx()
    );
    assert!(
        state.live_link("healthy.example.org").is_some(),
        "the healthy CA's target got no certificate: {}",
        ctx()
    );
    assert!(
        state.live_link("hostile.example.org").is_none(),
        "{}",
        ctx()
    );
}

/// Headers within the deadline, then a body that trickles (or never ends): every exchange
/// has one deadline for its head and body, so each costs at most `--ca-timeout`.
#[test]
fn a_ca_that_sends_its_body_slowly_or_endlessly_costs_only_its_own_targets() {
    let ca = Ca::start(PebbleOpts::fast());
    let slow = Answer::SlowBody(Duration::from_millis(700));
    let cases = [
        (
            "slow directory",
            Exchange::Directory,
            slow.clone(),
            "timed out",
        ),
        (
            "slow account",
            Exchange::NewAccount,
            slow.clone(),
            "timed out",
        ),
        (
            "slow new order",
            Exchange::NewOrder,
            slow.clone(),
            "timed out",
        ),
        (
            "slow authorization",
            Exchange::Authz,
            slow.clone(),
            "timed out",
        ),
        (
            "slow challenge",
            Exchange::Challenge,
            slow.clone(),
            "timed out",
        ),
        (
            "slow order poll",
            Exchange::Order,
            slow.clone(),
            "timed out",
        ),
        (
            "slow certificate",
            Exchange::Certificate,
            slow.clone(),
            "timed out",
        ),
        (
            "endless directory",
            Exchange::Directory,
            Answer::Endless,
            "larger than",
        ),
        (
            "endless authorization",
            Exchange::Authz,
            Answer::Endless,
            "larger than",
        ),
        (
            "endless certificate",
            Exchange::Certificate,
            Answer::Endless,
            "larger than",
        ),
    ];
    for (case, exchange, answer, why) in cases {
        ca.proxy.clear_tampers();
        ca.proxy.tamper(Tamper::always(exchange, answer));
        let state = ca.state();
        let run = reconcile(&state, &[]);
        assert!(
            ca.proxy.tampered().contains(&exchange),
            "case {case}: the exchange was never made\n{}",
            run.describe()
        );
        assert_contained(case, &run, &state, why);
    }
}

/// URLs no request may be made to, anywhere the CA hands one out: refused with a clear
/// error before instant-acme (which panics on some) or hyper sees them.
#[test]
fn a_ca_handing_out_hostile_urls_is_refused_without_a_panic() {
    let ca = Ca::start(PebbleOpts::fast());
    let set = |field: &'static str, value: &'static str| {
        move |v: &mut serde_json::Value| v[field] = value.into()
    };
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "newNonce not a URL",
            Tamper::json(Exchange::Directory, set("newNonce", "not a url")),
            "newNonce",
        ),
        (
            "newNonce not http",
            Tamper::json(
                Exchange::Directory,
                set("newNonce", "ftp://127.0.0.1/nonce"),
            ),
            "not an http(s) URL",
        ),
        (
            "newNonce with a space",
            Tamper::json(
                Exchange::Directory,
                set("newNonce", "https://127.0.0.1/a b"),
            ),
            "newNonce",
        ),
        (
            "newAccount elsewhere",
            Tamper::json(
                Exchange::Directory,
                set("newAccount", "https://127.0.0.2:2379/v3/kv/deleterange"),
            ),
            "not on the origin",
        ),
        (
            "renewalInfo not a URL",
            Tamper::json(
                Exchange::Directory,
                set("renewalInfo", "javascript:alert(1)"),
            ),
            "renewalInfo",
        ),
        (
            "authorization a file",
            Tamper::json(Exchange::NewOrder, |v| {
                v["authorizations"] = serde_json::json!(["file:///etc/passwd"]);
            }),
            "not an http(s) URL",
        ),
        (
            "finalize elsewhere",
            Tamper::json(
                Exchange::Order,
                set("finalize", "http://127.0.0.1:9/finalize"),
            ),
            "not on the origin",
        ),
        (
            "challenge elsewhere",
            Tamper::json(Exchange::Authz, |v| {
                for c in v["challenges"].as_array_mut().into_iter().flatten() {
                    c["url"] = "https://elsewhere.example/chal".into();
                }
            }),
            "not on the origin",
        ),
        (
            "order location not a URL",
            Tamper::always(
                Exchange::NewOrder,
                Answer::Header("Location", "gopher://x".to_owned()),
            ),
            "refused",
        ),
        (
            "malformed directory",
            Tamper::always(
                Exchange::Directory,
                Answer::Body(b"{\"newNonce\":".to_vec()),
            ),
            "directory",
        ),
        (
            "malformed authorization",
            Tamper::always(Exchange::Authz, Answer::Body(b"<html>".to_vec())),
            "authorization",
        ),
    ];
    for (case, tamper, why) in cases {
        ca.proxy.clear_tampers();
        let exchange = tamper.exchange;
        ca.proxy.tamper(tamper);
        let state = ca.state();
        let run = reconcile(&state, &[]);
        assert!(
            ca.proxy.tampered().contains(&exchange),
            "case {case}: the exchange was never made\n{}",
            run.describe()
        );
        assert_contained(case, &run, &state, why);
    }
}
