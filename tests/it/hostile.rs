//! A hostile CA: Pebble behind [`AriProxy`], which answers chosen exchanges slowly,
//! endlessly, malformed, or with hostile URLs, tokens, chains and `Retry-After`s (see
//! `support/hostile.rs`). One table per class of attack; every case runs against a fresh
//! state directory whose default provider is the proxy, next to a target at Pebble itself
//! (a healthy CA), which must get its certificate in the same run: a CA that misbehaves
//! costs at most its own targets, and never a panic.

use std::time::Duration;

use crate::support::*;

/// The short deadline the slow cases use: a slow answer must end at it, while Pebble's own
/// answers to the healthy target must come within it even on a loaded machine (at 1 s they
/// sometimes did not at a load average near 30, and the healthy target failed).
const CA_TIMEOUT: &str = "3s";
/// The deadline for the endless-body cases, which must end at the size cap.
const ENDLESS_CA_TIMEOUT: &str = "10s";

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
    reconcile_within(state, CA_TIMEOUT, extra)
}

/// [`reconcile`] with another `--ca-timeout`.
fn reconcile_within(state: &StateDir, ca_timeout: &str, extra: &[&str]) -> Run {
    let mut args = vec!["reconcile", "--ca-timeout", ca_timeout];
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
        // An endless body must be cut by the size cap, not the deadline: give it time to
        // pass 4 MiB through the proxy even on a loaded machine.
        let ca_timeout = match answer {
            Answer::Endless => ENDLESS_CA_TIMEOUT,
            _ => CA_TIMEOUT,
        };
        ca.proxy.clear_tampers();
        ca.proxy.tamper(Tamper::always(exchange, answer));
        let state = ca.state();
        let run = reconcile_within(&state, ca_timeout, &[]);
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

/// A state directory whose only target, `hostile.example.org`, is at the proxy.
fn proxied_state(ca: &Ca, challenge_extra: &str) -> StateDir {
    let state = StateDir::new();
    let conf = standard_conf_target(&ca.pebble)
        .replace(
            &serde_json::to_string(&ca.pebble.directory_url()).expect("JSON"),
            &serde_json::to_string(&ca.proxy.directory_url()).expect("JSON"),
        )
        .replace(
            "    http-self-test: false\n",
            &format!("    http-self-test: false\n{challenge_extra}"),
        );
    state.write_conf_target(&conf);
    state.write_standard_responses();
    state
}

/// Every `chain` file of a complete certificate directory holds a certificate.
#[track_caller]
fn assert_no_empty_chain(state: &StateDir) {
    for id in state.cert_ids() {
        let chain = state.join("certs").join(&id).join("chain");
        if let Ok(text) = std::fs::read(&chain) {
            assert!(!pem_certs(&text).is_empty(), "certs/{id}/chain is empty");
        }
    }
}

/// Chains the CA may answer with: only a coherent chain whose leaf is valid now and carries
/// our key goes live; anything else leaves the working certificate in place (here: the one
/// just revoked, which the run wanted to replace). Trust stops at the topmost certificate
/// the CA sent, so a rogue but coherent chain valid now is accepted (the CA could issue
/// anything for these names anyway): the last case holds that.
#[test]
fn a_certificate_that_is_not_valid_now_or_not_coherent_never_goes_live() {
    const NAME: &str = "hostile.example.org";
    let ca = Ca::start(PebbleOpts::fast());
    let rogue = std::sync::Arc::new(RogueCa::new("Rogue Intermediate"));
    let leaf = |pem: &str| hostile::pem_split(pem).remove(0);
    let (r1, r2, r3) = (rogue.clone(), rogue.clone(), rogue.clone());
    let cases: Vec<(&str, Tamper, Option<&str>)> = vec![
        (
            "leaf only",
            Tamper::chain(move |pem, _| leaf(pem)),
            Some("without its issuer"),
        ),
        (
            "an intermediate that did not sign the leaf",
            Tamper::chain(move |pem, _| format!("{}{}", leaf(pem), r1.cert_pem)),
            Some("another issuer"),
        ),
        (
            "issuer first",
            Tamper::chain(|pem, _| hostile::pem_split(pem).into_iter().rev().collect()),
            Some("different public key"),
        ),
        (
            "not valid until tomorrow",
            Tamper::chain(move |_, csr| {
                r2.chain_for(
                    csr,
                    time::OffsetDateTime::now_utc() + time::Duration::days(1),
                )
            }),
            Some("not valid until"),
        ),
        (
            "expired",
            Tamper::chain(move |_, csr| {
                r3.chain_for(
                    csr,
                    time::OffsetDateTime::now_utc() - time::Duration::days(91),
                )
            }),
            Some("already expired"),
        ),
        (
            "rogue but coherent and valid now",
            Tamper::chain(move |_, csr| {
                rogue.chain_for(
                    csr,
                    time::OffsetDateTime::now_utc() - time::Duration::hours(1),
                )
            }),
            None,
        ),
    ];
    for (case, tamper, refused) in cases {
        ca.proxy.clear_tampers();
        let state = proxied_state(&ca, "");
        acmekeep(&state, &["want", NAME]).assert_success();
        let working = state.live_cert_id(NAME);
        ca.proxy.tamper(tamper);
        // Revoking the working certificate makes the run (revoke reconciles) want another.
        let run = acmekeep(&state, &["revoke", &working]);
        let ctx = || format!("case {case}\n{}\n{}", run.describe(), state.tree());
        assert!(
            ca.proxy.tampered().contains(&Exchange::Certificate),
            "{}",
            ctx()
        );
        assert!(!run.stderr.contains("panicked"), "{}", ctx());
        match refused {
            Some(why) => {
                assert_eq!(run.code, Some(1), "{}", ctx());
                assert!(run.stderr.contains(why), "expected {why:?}: {}", ctx());
                assert_eq!(state.live_cert_id(NAME), working, "{}", ctx());
                let doc = status_json(&state);
                let t = target_status(&doc, &state.desired_file_for(NAME));
                assert_ne!(t["state"], "valid", "{t:#}\n{}", ctx());
            }
            None => {
                assert_eq!(run.code, Some(0), "{}", ctx());
                assert_ne!(state.live_cert_id(NAME), working, "{}", ctx());
            }
        }
        assert_no_empty_chain(&state);
    }
}

/// A hook that records its arguments and serves the key authorization from `served` (where
/// a web server on Pebble's http-01 port finds it): acmetool's `hook` http-01 method.
fn serving_hook(state: &StateDir, served: &std::path::Path, log: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let dir = state.hooks_dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    let hook = dir.join("http");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -eu\necho \"ARGS $*\" >> '{log}'\ncase \"$1\" in\n  challenge-http-start) cat > '{d}/'\"$4\" ;;\n  challenge-http-stop) rm -f '{d}/'\"$4\" ;;\n  *) exit 42 ;;\nesac\n",
            d = served.display(),
            log = log.display()
        ),
    )
    .expect("write hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Challenge tokens a hook must never see: one beginning with '-' is an option to many
/// commands. Such a challenge is refused before anything is set up, its authorization
/// deactivated, and another order made for a fresh token (up to six): a CA that does it once
/// (as an honest CA does 1 time in 64) costs nothing, one that keeps doing it fails clearly. A
/// token that is no base64url at all is refused as malformed.
#[test]
fn challenge_tokens_that_hooks_would_take_for_options_never_reach_them() {
    const NAME: &str = "hostile.example.org";
    let ca = Ca::start(PebbleOpts::fast());
    let token = |t: &'static str| {
        move |v: &mut serde_json::Value| {
            for c in v["challenges"].as_array_mut().into_iter().flatten() {
                c["token"] = t.into();
            }
        }
    };
    let once = |t| Tamper {
        times: Some(1),
        ..Tamper::json(Exchange::Authz, token(t))
    };
    let cases: Vec<(&str, Tamper, Option<&str>)> = vec![
        (
            "a token beginning with '-', once",
            once("-rfAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            None,
        ),
        (
            "tokens beginning with '--', always",
            Tamper::json(
                Exchange::Authz,
                token("--output_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ),
            Some("beginning with '-'"),
        ),
        (
            "a token that is a path",
            Tamper::json(Exchange::Authz, token("../../../../../../etc/passwd")),
            Some("malformed challenge token"),
        ),
    ];
    for (case, tamper, refused) in cases {
        ca.proxy.clear_tampers();
        let state = proxied_state(&ca, "    http-methods: [hook]\n");
        let served = state.scratch_dir("served");
        let log = state.scratch_dir("log").join("hook.log");
        serving_hook(&state, &served, &log);
        let server = ChallengeServer::start(ca.pebble.http_port(), &served).expect("web server");
        ca.proxy.tamper(tamper);
        let run = acmekeep(&state, &["-v", "want", NAME]);
        drop(server);
        let hooked = std::fs::read_to_string(&log).unwrap_or_default();
        let ctx = || format!("case {case}\n{}\nhook log:\n{hooked}", run.describe());
        assert!(ca.proxy.tampered().contains(&Exchange::Authz), "{}", ctx());
        assert!(!run.stderr.contains("panicked"), "{}", ctx());
        for line in hooked.lines() {
            assert!(
                !line
                    .split(' ')
                    .skip(1)
                    .any(|a| a.starts_with('-') || a.contains('/')),
                "a hook got a hostile argument: {line}\n{}",
                ctx()
            );
        }
        match refused {
            Some(why) => {
                assert_eq!(run.code, Some(1), "{}", ctx());
                assert!(run.stderr.contains(why), "expected {why:?}: {}", ctx());
                assert!(state.live_link(NAME).is_none(), "{}", ctx());
            }
            None => {
                assert_eq!(run.code, Some(0), "{}", ctx());
                assert!(state.live_link(NAME).is_some(), "{}", ctx());
                assert!(hooked.contains("challenge-http-start"), "{}", ctx());
                assert!(run.stderr.contains("ordering again"), "{}", ctx());
            }
        }
    }
}

/// `Retry-After` values instant-acme would add to the clock and overflow (a panic, which
/// release builds turn into an abort of the whole run): bounded before it sees them.
#[test]
fn a_retry_after_beyond_any_clock_is_bounded_not_a_panic() {
    const NAME: &str = "hostile.example.org";
    let ca = Ca::start(PebbleOpts::fast());
    let state = proxied_state(&ca, "");
    acmekeep(&state, &["want", NAME]).assert_success();
    let huge = "18446744073709551615".to_owned();
    // Renewal information: fetched for the certificate just obtained.
    let now = time::OffsetDateTime::now_utc();
    ca.proxy.set_default_window(Some(AriWindow {
        start: now + time::Duration::days(30),
        end: now + time::Duration::days(31),
        retry_after: 3600,
    }));
    ca.proxy.tamper(Tamper::always(
        Exchange::RenewalInfo,
        Answer::Header("Retry-After", huge.clone()),
    ));
    // (Asked right after issuance, when the proxy had no window for it: a 404, backed off.)
    state.retry_after_passed(&state.live_cert_id(NAME));
    let run = reconcile(&state, &[]);
    assert!(
        ca.proxy.tampered().contains(&Exchange::RenewalInfo),
        "{}",
        run.describe()
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    run.assert_success();
    // Order polls, on a new order.
    ca.proxy.clear_tampers();
    ca.proxy.tamper(Tamper::always(
        Exchange::Order,
        Answer::Header("Retry-After", huge),
    ));
    let run = acmekeep(&state, &["want", "second.example.org"]);
    assert!(
        ca.proxy.tampered().contains(&Exchange::Order),
        "{}",
        run.describe()
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    assert!(matches!(run.code, Some(0 | 1)), "{}", run.describe());
}

/// A rate limit whose Retry-After outlives the certificate in use: the run fails and fires
/// `reconcile-failed`, whatever the CA asked (and so does every later run while it waits);
/// one the certificate outlives is a silent deferral.
#[test]
fn a_rate_limit_deferral_that_outlives_the_certificate_fails_the_run() {
    use std::os::unix::fs::PermissionsExt;
    const NAME: &str = "hostile.example.org";
    // Three-day certificates: renewal due at once only by the CA's window (ARI).
    let ca = Ca::start(PebbleOpts {
        cert_validity_secs: Some(3 * 86400),
        ..PebbleOpts::fast()
    });
    let state = proxied_state(&ca, "");
    let log = state.scratch_dir("log").join("hook.log");
    std::fs::create_dir_all(state.hooks_dir()).expect("mkdir");
    let hook = state.hooks_dir().join("record");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n{{ echo \"ARGS $*\"; cat; }} >> '{}'\n",
            log.display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    acmekeep(&state, &["want", NAME]).assert_success();
    let now = time::OffsetDateTime::now_utc();
    ca.proxy.set_default_window(Some(AriWindow {
        start: now - time::Duration::days(2),
        end: now - time::Duration::days(1),
        retry_after: 3600,
    }));
    // (Asked right after issuance, when the proxy had no window for it: a 404, backed off.)
    state.retry_after_passed(&state.live_cert_id(NAME));
    let limit = |retry_after: &str| {
        Some(RateLimit {
            names_containing: None,
            times: None,
            retry_after: Some(retry_after.to_owned()),
            detail: "too many certificates (hostile proxy)".to_owned(),
        })
    };
    let failed_hook = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("reconcile-failed")
    };

    // An hour: the certificate has days left; deferred, silently.
    ca.proxy.rate_limit_new_orders(limit("3600"));
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_success().assert_stderr_contains("deferred");
    assert!(!failed_hook(), "{}", run.describe());

    // Two days: the certificate expires before the daily run after the CA's time.
    ca.proxy.rate_limit_new_orders(limit("172800"));
    let run = acmekeep(&state, &["reconcile", "--force"]);
    run.assert_code(1)
        .assert_stderr_contains("the CA allows no new attempt before");
    assert!(failed_hook(), "{}", run.describe());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(NAME),
        "the hook names the target"
    );
    // And so does the next run, which does not ask the CA before its time.
    std::fs::remove_file(&log).expect("rm log");
    let attempts = ca.proxy.order_attempts().len();
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(1)
        .assert_stderr_contains("the CA allows no new attempt before");
    assert!(failed_hook(), "{}", run.describe());
    assert_eq!(
        ca.proxy.order_attempts().len(),
        attempts,
        "{}",
        run.describe()
    );
}

/// Names that are no host names, or that an address parser or a hook would misread, are
/// refused where they enter (here: `want`), with the reason, and nothing is written.
#[test]
fn names_an_address_parser_or_a_hook_would_misread_are_refused() {
    let state = StateDir::new();
    for (name, why) in [
        ("-rf.example.org", "begin or end with '-'"),
        ("example-.org", "begin or end with '-'"),
        ("127.1", "all digits"),
        ("1.2.3.4.5", "all digits"),
        ("0x7f.0.0.1", "all digits"),
        ("0x7f000001", "inet_aton"),
        ("ab--cd.example.org", "reserved"),
    ] {
        let run = acmekeep(&state, &["want", "--no-reconcile", "--", name]);
        assert_ne!(run.code, Some(0), "{name}: {}", run.describe());
        assert!(
            run.stderr.contains(why),
            "{name}: expected {why:?}\n{}",
            run.describe()
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    }
    assert!(state.desired_files().is_empty(), "{}", state.tree());
}

/// A CA that stopped answering is asked no more in the rest of the run: after two requests
/// to it went unanswered (here: finishing an interrupted download, then its renewal
/// information), the order its other target needs is not attempted, so a dead CA costs two
/// `--ca-timeout`s per run, not one per phase and target.
#[test]
fn a_ca_that_stopped_answering_is_not_asked_again_in_later_steps_of_the_run() {
    let ca = Ca::start(PebbleOpts::fast());
    let state = ca.state();
    reconcile(&state, &[]).assert_success();
    // An order whose certificate download did not finish ("uncached").
    state.write_desired("second", "satisfy:\n  names: [second.example.org]\n");
    ca.proxy.tamper(Tamper::always(
        Exchange::Certificate,
        Answer::SlowBody(Duration::from_millis(700)),
    ));
    reconcile(&state, &[]).assert_code(1);
    ca.proxy.clear_tampers();
    ca.proxy.tamper(Tamper::always(
        Exchange::Directory,
        Answer::SlowBody(Duration::from_millis(700)),
    ));
    let run = reconcile(&state, &["-v"]);
    let asked = ca
        .proxy
        .tampered()
        .iter()
        .filter(|x| **x == Exchange::Directory)
        .count();
    let ctx = || format!("{}\n{}", run.describe(), state.tree());
    assert_eq!(
        asked,
        2,
        "the dead CA's directory was asked {asked} times: {}",
        ctx()
    );
    assert_eq!(run.code, Some(1), "{}", ctx());
    // The two unanswered requests are the download's login and the order's account lookup
    // (the renewal-information step asks nothing here: the first run learnt that this Pebble
    // has no renewalInfo), so `second` fails on the second timeout itself; with a
    // renewal-information question first, it fails as "not attempted" instead.
    assert!(
        run.stderr.lines().any(|l| l.contains("desired/second")
            && l.contains("failed")
            && (l.contains("the CA stopped answering") || l.contains("timed out"))),
        "{}",
        ctx()
    );
    assert!(run.elapsed < Duration::from_secs(15), "{}", ctx());
    assert!(
        state.live_link("healthy.example.org").is_some(),
        "{}",
        ctx()
    );
}
