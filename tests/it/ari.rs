//! ARI (RFC 9773) end to end: Pebble 2.4 behind [`AriProxy`], which adds `renewalInfo`,
//! serves the windows each test sets and records what new-order requests carried.

use time::{Duration, OffsetDateTime};

use crate::support::*;

const NAME: &str = "ari.example.org";

/// Pebble without validation delays, the proxy in front of it, and a state directory whose
/// provider is the proxy.
fn setup() -> (Pebble, AriProxy, StateDir) {
    setup_with(PebbleOpts::fast())
}

/// [`setup`] with Pebble started as `opts` say.
fn setup_with(opts: PebbleOpts) -> (Pebble, AriProxy, StateDir) {
    let pebble = Pebble::start(opts);
    let proxy = AriProxy::start(&pebble);
    // Unless a test says otherwise, every certificate is fine for a month.
    proxy.set_default_window(Some(window(30, 31, 3600)));
    let state = StateDir::new();
    let conf = standard_conf_target(&pebble).replace(
        &serde_json::to_string(&pebble.directory_url()).expect("JSON"),
        &serde_json::to_string(&proxy.directory_url()).expect("JSON"),
    );
    assert!(conf.contains(&proxy.directory_url()), "{conf}");
    state.write_conf_target(&conf);
    state.write_standard_responses();
    (pebble, proxy, state)
}

/// A window from `start` to `end` days from now.
fn window(start: i64, end: i64, retry_after: u64) -> AriWindow {
    let now = OffsetDateTime::now_utc();
    AriWindow {
        start: now + Duration::days(start),
        end: now + Duration::days(end),
        retry_after,
    }
}

/// The RFC 9773 §4.1 identifier of `live/<name>/cert`, computed here independently.
fn ari_id(state: &StateDir, name: &str) -> String {
    let der = pem_certs(&state.read_live(name, "cert")).remove(0);
    let cert = parse_cert(&der);
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("Pebble's leaf has an AKI");
    let b64 = data_encoding::BASE64URL_NOPAD;
    format!(
        "{}.{}",
        b64.encode(&aki),
        b64.encode(cert.tbs_certificate.raw_serial())
    )
}

/// `want NAME` through the proxy; returns the certificate id and its ARI id.
fn first_certificate(proxy: &AriProxy, state: &StateDir) -> (String, String) {
    acmekeep(state, &["want", NAME]).assert_success();
    let orders = proxy.orders();
    assert_eq!(
        orders,
        [SeenOrder {
            replaces: None,
            profile: None,
            rejected: false
        }],
        "a first order replaces nothing"
    );
    // Its window is asked for at once (RFC 9773 §4.2), in the run that obtained it.
    let (id, ari) = (state.live_cert_id(NAME), ari_id(state, NAME));
    assert_eq!(proxy.fetches(), std::slice::from_ref(&ari));
    assert!(state.join(format!(".acmekeep/ari/{id}.json")).exists());
    (id, ari)
}

#[test]
fn the_first_window_is_asked_for_in_the_run_that_obtains_the_certificate() {
    let (_pebble, proxy, state) = setup();
    let (id, ari) = first_certificate(&proxy, &state);
    // status plans with it at once (the proxy's window, 30 to 31 days from now, not the
    // local rule's 30 days before the end of a five-year certificate).
    let doc = status_json(&state);
    let renew_at = doc["targets"][0]["renew_at"].as_str().expect("renew_at");
    let renew_at = OffsetDateTime::parse(renew_at, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let days = (renew_at - OffsetDateTime::now_utc()).whole_days();
    assert!((29..=31).contains(&days), "renew_at {renew_at}");
    // The next run, within the window's Retry-After, asks nothing and orders nothing.
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(proxy.fetches(), [ari]);
    assert_eq!(proxy.orders().len(), 1);
    assert_eq!(state.live_cert_id(NAME), id);
}

#[test]
fn window_in_the_past_renews_at_once_naming_the_old_certificate() {
    let (_pebble, proxy, state) = setup();
    let (old, old_ari) = first_certificate(&proxy, &state);
    proxy.set_window(&old_ari, window(-2, -1, 3600));
    state.retry_after_passed(&old);

    acmekeep(&state, &["reconcile"]).assert_success();
    let new = state.live_cert_id(NAME);
    assert_ne!(new, old, "a window in the past means: renew now");
    let new_ari = ari_id(&state, NAME);
    assert_eq!(proxy.fetches(), [old_ari.clone(), old_ari.clone(), new_ari]);
    let last = proxy.orders().pop().expect("an order");
    assert_eq!(last.replaces.as_deref(), Some(old_ari.as_str()));
    assert!(!last.rejected);
    let rec: serde_json::Value =
        serde_json::from_slice(&state.read(format!(".acmekeep/ari/{old}.json"))).expect("JSON");
    assert_eq!(rec["ari_id"], old_ari.as_str(), "{rec}");

    // The new certificate got the default (future) window: nothing more to do.
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(state.live_cert_id(NAME), new);
    assert_eq!(proxy.fetches().len(), 3);
    assert_eq!(proxy.orders().len(), 2);
}

#[test]
fn future_window_waits_and_retry_after_is_honoured() {
    let (_pebble, proxy, state) = setup();
    let (old, old_ari) = first_certificate(&proxy, &state);
    proxy.set_window(&old_ari, window(20, 21, 3600));
    state.retry_after_passed(&old);

    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(
        state.live_cert_id(NAME),
        old,
        "window in the future: no renewal"
    );
    assert_eq!(proxy.fetches().len(), 2);
    // status plans with the cached window (and asks nobody).
    let status = acmekeep(&state, &["status", "--json"]);
    status.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let renew_at = doc["targets"][0]["renew_at"]
        .as_str()
        .expect("renew_at")
        .to_owned();
    let renew_at = OffsetDateTime::parse(&renew_at, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let days = (renew_at - OffsetDateTime::now_utc()).whole_days();
    assert!(
        (19..=21).contains(&days),
        "renew_at {renew_at} is not in the window"
    );
    assert_eq!(proxy.fetches().len(), 2);

    // The CA moves the window into the past, but asked not to be asked again for an hour.
    proxy.set_window(&old_ari, window(-2, -1, 3600));
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(proxy.fetches().len(), 2, "asked again before Retry-After");
    assert_eq!(state.live_cert_id(NAME), old);

    // An hour later (the cached Retry-After moved into the past): asked, and renewed.
    state.retry_after_passed(&old);
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(
        proxy.fetches().len(),
        4,
        "the old certificate's window, then the new one's"
    );
    assert_ne!(state.live_cert_id(NAME), old);
    let last = proxy.orders().pop().expect("an order");
    assert_eq!(last.replaces.as_deref(), Some(old_ari.as_str()));
}

#[test]
fn a_retry_after_beyond_the_end_of_time_does_not_abort_the_run() {
    // instant-acme added the renewalInfo answer's Retry-After to the clock unchecked: 2^64-1
    // seconds overflowed SystemTime, a panic that aborted the run.
    let (_pebble, proxy, state) = setup();
    let (old, old_ari) = first_certificate(&proxy, &state);
    proxy.set_window(&old_ari, window(20, 21, u64::MAX));
    state.retry_after_passed(&old);
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(state.live_cert_id(NAME), old, "window in the future");
    assert_eq!(proxy.fetches().len(), 2);
}

#[test]
fn refused_replaces_is_dropped_and_the_order_sent_again() {
    let (_pebble, proxy, state) = setup();
    let (old, old_ari) = first_certificate(&proxy, &state);
    proxy.set_window(&old_ari, window(-2, -1, 3600));
    state.retry_after_passed(&old);
    proxy.reject_replaces_once();

    acmekeep(&state, &["reconcile"]).assert_success();
    assert_ne!(state.live_cert_id(NAME), old);
    let orders = proxy.orders();
    assert_eq!(
        orders[1..],
        [
            SeenOrder {
                replaces: Some(old_ari),
                profile: None,
                rejected: true
            },
            SeenOrder {
                replaces: None,
                profile: None,
                rejected: false
            },
        ]
    );
}

/// ACME profiles: the target's `request.profile` is checked against the directory's
/// `meta.profiles`, sent with the order, remembered with the certificate, and a change of
/// profile gets a new certificate once (no loop); a profile the CA does not list is ordered
/// without, once.
#[test]
fn profile_is_validated_sent_and_a_change_reissues() {
    let (_pebble, proxy, state) = setup();
    proxy.set_profiles(Some(&[("classic", "90 days"), ("shortlived", "6 days")]));
    let with_profile = |p: &str| {
        let conf = state.read_string("conf/target");
        let base: String = conf
            .lines()
            .filter(|l| !l.starts_with("  profile:"))
            .map(|l| format!("{l}\n"))
            .collect();
        state.write_conf_target(&base.replacen(
            "request:\n",
            &format!("request:\n  profile: {p}\n"),
            1,
        ));
    };
    with_profile("shortlived");
    acmekeep(&state, &["want", NAME]).assert_success();
    let first = state.live_cert_id(NAME);
    assert_eq!(
        proxy
            .orders()
            .last()
            .and_then(|o| o.profile.clone())
            .as_deref(),
        Some("shortlived")
    );

    // Same profile: nothing to do.
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(state.live_cert_id(NAME), first);

    // Another profile: one new certificate, then stable.
    with_profile("classic");
    wait_past_second_of_live(&state, NAME);
    acmekeep(&state, &["reconcile"]).assert_success();
    let second = state.live_cert_id(NAME);
    assert_ne!(second, first);
    assert_eq!(
        proxy
            .orders()
            .last()
            .and_then(|o| o.profile.clone())
            .as_deref(),
        Some("classic")
    );
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(state.live_cert_id(NAME), second);

    // A profile the CA does not offer (it dropped it, or a typo): the certificate comes
    // from the CA's default profile with a warning naming what it offers, and the next
    // run orders nothing (the certificate is remembered with the profile asked for).
    with_profile("tlsclient");
    wait_past_second_of_live(&state, NAME);
    let orders = proxy.orders().len();
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_success();
    run.assert_stderr_contains("request.profile \"tlsclient\" is not offered by");
    run.assert_stderr_contains("classic, shortlived); ordering with the CA's default profile");
    let third = state.live_cert_id(NAME);
    assert_ne!(third, second);
    assert_eq!(proxy.orders().len(), orders + 1);
    assert_eq!(proxy.orders().last().and_then(|o| o.profile.clone()), None);
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_success();
    assert_eq!(run.stderr, "", "no warning without an order");
    assert_eq!(proxy.orders().len(), orders + 1, "no renewal loop");
    assert_eq!(state.live_cert_id(NAME), third);
}

/// A CA that stops answering mid-run (the test double holds every new-order request): after
/// two requests go unanswered for `--ca-timeout`, no further order is started in that run,
/// so a dead CA costs a couple of timeouts, not one per certificate.
#[test]
fn a_ca_that_stops_answering_is_not_asked_for_every_remaining_certificate() {
    let (_pebble, proxy, state) = setup();
    acmekeep(&state, &["want", "before.example.org"]).assert_success();
    let before = state.live_cert_id("before.example.org");
    proxy.hang_new_orders();
    let names: Vec<String> = (0..8).map(|i| format!("hang{i}.example.org")).collect();
    for n in &names {
        acmekeep(&state, &["want", "--no-reconcile", n]).assert_success();
    }
    let orders_before = proxy.orders().len();
    let started = std::time::Instant::now();
    let run = acmekeep(&state, &["reconcile", "--jobs", "2", "--ca-timeout", "2s"]);
    let took = started.elapsed();
    run.assert_code(1)
        .assert_stderr_contains("the CA stopped answering");
    let asked = proxy.orders().len() - orders_before;
    assert!(
        (1..=3).contains(&asked),
        "{asked} new orders sent to an unanswering CA for 8 targets with --jobs 2\n{}",
        run.describe()
    );
    assert!(
        took < std::time::Duration::from_secs(20),
        "the run took {took:?}\n{}",
        run.describe()
    );
    // What was working still is.
    assert_eq!(state.live_cert_id("before.example.org"), before);
    for n in &names {
        assert!(state.live_link(n).is_none(), "{}", state.tree());
    }
}

/// The proxy refuses every new order whose names contain `part` for its rate, with this
/// `Retry-After`, `times` times (`None`: until lifted).
fn rate_limit(part: Option<&str>, times: Option<usize>, retry_after: &str) -> Option<RateLimit> {
    Some(RateLimit {
        names_containing: part.map(str::to_owned),
        times,
        retry_after: Some(retry_after.to_owned()),
        detail: "too many new orders recently (ari proxy)".to_owned(),
    })
}

/// A CA that refuses new orders for their rate with a short Retry-After: the run waits it
/// out (every request to that CA pauses, not only the refused one), sends the refused orders
/// again, and obtains every certificate with one order each: exit 0, nothing deferred.
#[test]
fn a_short_retry_after_slows_the_run_down_and_every_certificate_is_obtained() {
    let (_pebble, proxy, state) = setup_with(PebbleOpts::default()); // Pebble's validation delays on
    let names: Vec<String> = (0..6).map(|i| format!("slow{i}.example.org")).collect();
    for n in &names {
        acmekeep(&state, &["want", "--no-reconcile", n]).assert_success();
    }
    proxy.rate_limit_new_orders(rate_limit(None, Some(2), "2"));
    let run = acmekeep(&state, &["reconcile", "--jobs", "3"]);
    run.assert_success();
    assert!(
        !run.stderr.contains("deferred") && !run.stderr.contains("failed"),
        "{}",
        run.describe()
    );
    for n in &names {
        assert!(state.live_link(n).is_some(), "live/{n}\n{}", state.tree());
    }
    assert_eq!(
        proxy.orders().len(),
        names.len(),
        "one order per certificate"
    );
    let attempts = proxy.order_attempts();
    let refused: Vec<&OrderAttempt> = attempts.iter().filter(|a| a.rate_limited).collect();
    assert_eq!(refused.len(), 2, "{attempts:#?}");
    // Slowed down: after a refusal no new order arrives within its Retry-After, except
    // requests already on their way when it was sent (well within half a second).
    let ms = std::time::Duration::from_millis;
    for r in &refused {
        let early: Vec<&OrderAttempt> = attempts
            .iter()
            .filter(|a| a.at > r.at + ms(500) && a.at < r.at + ms(2000))
            .collect();
        assert!(
            early.is_empty(),
            "new orders within the CA's Retry-After of a refusal: {early:#?}\nrefused: {r:#?}\n{}",
            run.describe()
        );
    }
    let last = attempts.last().expect("attempts");
    assert!(last.at >= refused[0].at + ms(2000), "{attempts:#?}");
    for n in &names {
        let rec = run_record(&state, &state.desired_file_for(n));
        assert_eq!(rec["failures"], 0, "{rec:#}");
        assert!(rec.get("rate_limited").is_none(), "{rec:#}");
    }
}

/// A rate limit on some names with a Retry-After an hour away (as an HTTP-date): only those
/// targets are deferred, until the CA's time; the other orders go on; the run does not fail;
/// the next run does not ask the CA again for them; once the limit is lifted a forced run
/// obtains them, and nothing that was obtained is lost on the way.
#[test]
fn a_long_rate_limit_defers_only_its_targets_and_the_run_succeeds() {
    let (_pebble, proxy, state) = setup_with(PebbleOpts::default()); // Pebble's validation delays on
    let fine: Vec<String> = (0..3).map(|i| format!("fine{i}.example.org")).collect();
    let limited: Vec<String> = (0..2).map(|i| format!("limited{i}.example.net")).collect();
    for n in fine.iter().chain(&limited) {
        acmekeep(&state, &["want", "--no-reconcile", n]).assert_success();
    }
    let retry_at = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    proxy.rate_limit_new_orders(rate_limit(
        Some("limited"),
        None,
        &httpdate::fmt_http_date(retry_at),
    ));

    let run = acmekeep(&state, &["reconcile", "--jobs", "2"]);
    run.assert_success();
    for n in &limited {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains(n) && l.contains("deferred") && l.contains("rateLimited")),
            "{n} reported as deferred\n{}",
            run.describe()
        );
        assert!(state.live_link(n).is_none(), "{}", state.tree());
    }
    assert!(!run.stderr.contains("failed"), "{}", run.describe());
    let fine_ids: Vec<String> = fine.iter().map(|n| state.live_cert_id(n)).collect();
    assert_eq!(proxy.orders().len(), fine.len());
    let refused = |p: &AriProxy| p.order_attempts().iter().filter(|a| a.rate_limited).count();
    assert_eq!(
        refused(&proxy),
        limited.len(),
        "each asked once, not retried in the run"
    );

    // Deferred until the CA's time (not the 1-minute backoff), and `status` says so.
    let retry_at = OffsetDateTime::from(retry_at);
    let doc = status_json(&state);
    for n in &limited {
        let rec = run_record(&state, &state.desired_file_for(n));
        assert_eq!(rec["rate_limited"], true, "{rec:#}");
        assert_eq!(rec["failures"], 1, "{rec:#}");
        let next = rec["next_attempt"].as_str().expect("next_attempt");
        let next = OffsetDateTime::parse(next, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
        assert!(
            next >= retry_at - Duration::seconds(1) && next <= retry_at + Duration::seconds(5),
            "next attempt {next}, CA's time {retry_at}"
        );
        let t = target_status(&doc, &state.desired_file_for(n));
        assert_eq!(t["state"], "deferred", "{t:#}");
        assert_eq!(t["rate_limited"], true, "{t:#}");
    }
    let text = acmekeep(&state, &["status"]);
    text.assert_success();
    assert!(
        text.stdout.contains("deferred: the CA asked to slow down"),
        "{}",
        text.describe()
    );

    // The next run does not ask the CA for them before its time, and still succeeds.
    let attempts_before = proxy.order_attempts().len();
    let again = acmekeep(&state, &["reconcile"]);
    again
        .assert_success()
        .assert_stderr_contains("not retried before");
    assert_eq!(
        proxy.order_attempts().len(),
        attempts_before,
        "{}",
        again.describe()
    );

    // Lifted: a forced run obtains them; the others keep their certificates.
    proxy.rate_limit_new_orders(None);
    acmekeep(&state, &["reconcile", "--force"]).assert_success();
    for n in &limited {
        assert!(state.live_link(n).is_some(), "{}", state.tree());
        let rec = run_record(&state, &state.desired_file_for(n));
        assert_eq!(rec["failures"], 0, "{rec:#}");
        assert!(rec.get("rate_limited").is_none(), "{rec:#}");
    }
    let after: Vec<String> = fine.iter().map(|n| state.live_cert_id(n)).collect();
    assert_eq!(after, fine_ids);
    assert_eq!(proxy.orders().len(), fine.len() + limited.len());
}

/// A CA that keeps refusing for its rate longer than the run may wait (`--rate-limit-wait`):
/// once that time is spent the run stops asking it. The refused orders and the ones not yet
/// started are deferred, the run ends and succeeds, and every target is recorded as deferred
/// with the time of its next attempt.
#[test]
fn a_ca_that_keeps_refusing_is_waited_for_only_as_long_as_the_run_may_wait() {
    let (_pebble, proxy, state) = setup();
    let names: Vec<String> = (0..6).map(|i| format!("busy{i}.example.org")).collect();
    for n in &names {
        acmekeep(&state, &["want", "--no-reconcile", n]).assert_success();
    }
    proxy.rate_limit_new_orders(rate_limit(None, None, "2"));
    let run = acmekeep(
        &state,
        &["reconcile", "--jobs", "2", "--rate-limit-wait", "3s"],
    );
    run.assert_success()
        .assert_stderr_contains("not attempted in this run: the CA asked to slow down");
    let refused = proxy.order_attempts();
    assert!(
        refused.iter().all(|a| a.rate_limited),
        "the limit never lifts: {refused:#?}"
    );
    // Two orders in flight, each refused, waited for once (2 s of the 3 s), refused again;
    // the four not yet started are not sent at all.
    assert!(
        (2..=4).contains(&refused.len()),
        "{} new orders sent for 6 targets\n{}",
        refused.len(),
        run.describe()
    );
    assert!(proxy.orders().is_empty());
    for n in &names {
        assert!(state.live_link(n).is_none());
        let rec = run_record(&state, &state.desired_file_for(n));
        assert_eq!(rec["rate_limited"], true, "{n}: {rec:#}");
        assert!(rec["next_attempt"].is_string(), "{n}: {rec:#}");
        let line = run.stderr.lines().find(|l| l.contains(n.as_str()));
        assert!(
            line.is_some_and(|l| l.contains("deferred")),
            "{n}\n{}",
            run.describe()
        );
    }
}

/// acmekeep with its clock moved `secs` seconds ahead (debug builds, crate::clock).
fn acmekeep_later(state: &StateDir, args: &[&str], secs: i64) -> Run {
    let opts = RunOpts {
        env: vec![("ACMEKEEP_TEST_CLOCK_SKEW".to_owned(), secs.to_string())],
        ..RunOpts::default()
    };
    acmekeep_with(state, args, &opts)
}

/// A renewal-information question that gets no answer at all — the answer never ends (timed
/// out), or the CA cannot be reached — is backed off like an unusable answer: the next runs
/// do not ask again before the hour is over, the certificate keeps its own schedule, and
/// the runs print nothing.
#[test]
fn a_renewal_information_question_without_an_answer_is_not_asked_again_before_its_backoff() {
    // Timed out (the CA otherwise answers; the proxy holds the question unanswered): asked
    // right after issuance, then not again within the hour.
    let (pebble, proxy, state) = setup();
    proxy.hold_requests(Exchange::RenewalInfo, 10);
    let run = acmekeep(&state, &["--ca-timeout", "2s", "-v", "want", NAME]);
    run.assert_success()
        .assert_stderr_contains("the CA gave no answer about renewal information");
    assert_eq!(proxy.held().len(), 1, "{}", run.describe());
    let id = state.live_cert_id(NAME);
    for secs in [0, 30 * 60, 3660] {
        let run = acmekeep_later(&state, &["--ca-timeout", "2s", "reconcile"], secs);
        assert_eq!(
            (run.code, run.stdout.as_str(), run.stderr.as_str()),
            (Some(0), "", ""),
            "{}",
            run.describe()
        );
        // Asked again only once the hour is over.
        let asked = if secs < 3600 { 1 } else { 2 };
        assert_eq!(proxy.held().len(), asked, "at +{secs} s");
    }
    assert_eq!(proxy.fetches(), Vec::<String>::new());
    assert_eq!(state.live_cert_id(NAME), id);
    assert_eq!(proxy.orders().len(), 1);
    proxy.release_held(Release::Drop);

    // The CA cannot be reached at all (connection refused: the proxy, its address, is gone;
    // Pebble's directory keeps the trusted bundle): asked once, then not before its backoff,
    // then again.
    drop(proxy);
    state.retry_after_passed(&id);
    let asked = |run: &Run| {
        run.stderr
            .contains("renewal information from https://127.0.0.1:")
    };
    let run = acmekeep(&state, &["-v", "reconcile"]);
    run.assert_success();
    assert!(asked(&run), "{}", run.describe());
    let run = acmekeep(&state, &["-v", "reconcile"]);
    run.assert_success();
    assert!(!asked(&run), "asked again at once\n{}", run.describe());
    let run = acmekeep_later(&state, &["-v", "reconcile"], 3 * 3600);
    run.assert_success();
    assert!(
        asked(&run),
        "not asked after the backoff\n{}",
        run.describe()
    );
    run.assert_stderr_contains("connection refused");
    assert_eq!(state.live_cert_id(NAME), id);
    drop(pebble);
}

/// RFC 9773 §4.3.3: a renewal-information answer that cannot be used — not JSON, an
/// inverted window, a window ending after the certificate does, a body over the 4 MiB cap —
/// leaves the certificate on its own schedule; -v says so once; the CA is not asked again in
/// the next runs, only after the backoff (an hour, then two), and the run prints nothing.
#[test]
fn an_unusable_renewal_information_answer_is_backed_off_and_said_once_under_v() {
    let now = OffsetDateTime::now_utc();
    let inverted = AriWindow {
        start: now + Duration::days(20),
        end: now + Duration::days(19),
        retry_after: 0,
    };
    // Pebble's certificates live five years.
    let past_expiry = AriWindow {
        start: now + Duration::days(20),
        end: now + Duration::days(9000),
        retry_after: 0,
    };
    type Setup = Box<dyn Fn(&AriProxy)>;
    let cases: [(&str, Setup); 4] = [
        (
            "not JSON",
            Box::new(|p: &AriProxy| {
                p.tamper(Tamper::always(
                    Exchange::RenewalInfo,
                    Answer::Body(b"<html>renewal info</html>".to_vec()),
                ))
            }),
        ),
        (
            "inverted window",
            Box::new(move |p: &AriProxy| p.set_default_window(Some(inverted))),
        ),
        (
            "window past expiry",
            Box::new(move |p: &AriProxy| p.set_default_window(Some(past_expiry))),
        ),
        (
            "5 MiB body",
            Box::new(|p: &AriProxy| {
                p.tamper(Tamper::always(
                    Exchange::RenewalInfo,
                    Answer::Body(vec![b' '; 5 * 1024 * 1024]),
                ))
            }),
        ),
    ];
    for (what, answer) in cases {
        let (_pebble, proxy, state) = setup();
        answer(&proxy);
        let run = acmekeep(&state, &["-v", "want", NAME]);
        run.assert_success();
        let says = "the CA's renewal information cannot be used";
        assert_eq!(
            run.stderr.matches(says).count(),
            1,
            "{what}\n{}",
            run.describe()
        );
        assert_eq!(proxy.fetches().len(), 1, "{what}");
        let id = state.live_cert_id(NAME);

        // The next runs (within the hour) do not ask, and say nothing, even under -v.
        for later in [0, 30 * 60] {
            let run = acmekeep_later(&state, &["-v", "reconcile"], later);
            run.assert_success();
            assert!(!run.stderr.contains(says), "{what}\n{}", run.describe());
            assert_eq!(
                proxy.fetches().len(),
                1,
                "{what}: asked again at +{later} s"
            );
        }
        // After the hour: asked once more (still unusable: not said again under -v), then
        // not for two hours.
        let run = acmekeep_later(&state, &["-v", "reconcile"], 3660);
        run.assert_success();
        assert_eq!(proxy.fetches().len(), 2, "{what}\n{}", run.describe());
        assert!(!run.stderr.contains(says), "{what}\n{}", run.describe());
        let run = acmekeep_later(&state, &["reconcile"], 3660 + 3600);
        assert_eq!(
            (run.code, run.stdout.as_str(), run.stderr.as_str()),
            (Some(0), "", "")
        );
        assert_eq!(proxy.fetches().len(), 2, "{what}: asked before two hours");
        // Its own schedule all along: the certificate is the one from `want`.
        assert_eq!(state.live_cert_id(NAME), id, "{what}");
        assert_eq!(proxy.orders().len(), 1, "{what}");
    }
}
