//! Short certificate lifetimes end to end (issue 17): Let's Encrypt's 6-day `shortlived`
//! (160 hours), 45-day (`tlsserver`, and the default from 2028), 64-day (the default from
//! 2027) and 90-day certificates, each from a Pebble issuing exactly that lifetime
//! (`certificateValidityPeriod`), followed through two renewal cycles on acmekeep's clock.
//!
//! Without ARI the renewal comes at the certificate's own share of its life — a third left,
//! half for certificates under 10 days — however large `satisfy.margin` is; with ARI (the
//! proxy in front of the same Pebble) inside the CA's window, earlier than that rule. Either
//! way exactly once per cycle: not an hour before its time, at the first run an hour after,
//! and `status` names the time beforehand. Never a fixed day count.
//!
//! acmekeep's clock is moved with `ACMEKEEP_TEST_CLOCK_SKEW` (debug builds only). Pebble dates
//! each certificate from the real time it issues it, so a run "at age X" of a certificate is
//! the real time moved to its notBefore + X: after a renewal the clock is set from the
//! replacement's own notBefore, as if that renewal had happened at the real time.
//!
//! That real time must have moved on, though: a certificate's notBefore is in whole seconds,
//! and a replacement Pebble issues within the same second as the certificate it replaces has
//! exactly the same validity. The two are then equally new, the tie goes to the smaller id
//! (`acmekeep::cert::best_cert`), and half the time `live/` keeps the old one. A real
//! renewal comes a third of a lifetime after its certificate; these cycles come within a
//! second of each other on an idle machine, so each renewal first waits for the next second
//! ([`wait_past_second_of`]).
//!
//! The clock also steps back for real, when a clock that jumped ahead is put right: a failure
//! recorded under the wrong time must not hold its target back until that time comes round.

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::support::*;

/// (not_before, not_after) of `live/<name>/cert`.
fn live_validity(state: &StateDir, name: &str) -> (OffsetDateTime, OffsetDateTime) {
    let der = pem_certs(&state.read_live(name, "cert")).remove(0);
    let cert = parse_cert(&der);
    let v = cert.validity();
    (v.not_before.to_datetime(), v.not_after.to_datetime())
}

/// acmekeep `args` with its clock showing `at`.
fn run_at(state: &StateDir, args: &[&str], at: OffsetDateTime) -> Run {
    let skew = (at - OffsetDateTime::now_utc()).whole_seconds();
    let opts = RunOpts {
        env: vec![("ACMEKEEP_TEST_CLOCK_SKEW".to_owned(), skew.to_string())],
        ..RunOpts::default()
    };
    acmekeep_with(state, args, &opts)
}

/// `status --json` at `at`: the target of `name`'s (state, renew_at).
fn status_at(state: &StateDir, name: &str, at: OffsetDateTime) -> (String, OffsetDateTime) {
    let run = run_at(state, &["status", "--json"], at);
    run.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("status JSON");
    let t = target_status(&doc, &state.desired_file_for(name));
    let renew_at = t["renew_at"].as_str().expect("renew_at");
    (
        t["state"].as_str().expect("state").to_owned(),
        OffsetDateTime::parse(renew_at, &Rfc3339).expect("RFC 3339"),
    )
}

#[track_caller]
fn assert_near(got: OffsetDateTime, want: OffsetDateTime, what: &str) {
    assert!(
        (got - want).abs() <= Duration::seconds(1),
        "{what}: {got}, want {want}"
    );
}

const HOUR: Duration = Duration::hours(1);

/// Sleeps until the real time is at least a second past `not_before`, so that a certificate
/// Pebble issues now starts later than one that starts at `not_before` (see the preamble).
fn wait_past_second_of(not_before: OffsetDateTime) {
    let until = not_before + Duration::seconds(1);
    let left = until - OffsetDateTime::now_utc();
    if left.is_positive() {
        std::thread::sleep(left.unsigned_abs());
    }
}

/// Follows certificates of `lifetime` through two cycles without ARI (a target with the
/// default margin and one whose margin is longer than the lifetime) and two with ARI; the
/// local rule must make them due `due_after` their notBefore.
fn follow(lifetime: Duration, due_after: Duration) {
    let pebble = Pebble::start(PebbleOpts {
        cert_validity_secs: Some(lifetime.whole_seconds() as u64),
        ..PebbleOpts::fast()
    });
    without_ari(&pebble, lifetime, due_after);
    with_ari(&pebble, lifetime, due_after);
}

/// The local rule: `due_after` the notBefore of each certificate, for both margins.
fn without_ari(pebble: &Pebble, lifetime: Duration, due_after: Duration) {
    let state = StateDir::standard(pebble);
    let names = ["default.life.example.org", "margin.life.example.org"];
    state.write_desired(
        &format!("{}-default", names[0]),
        &format!("satisfy:\n  names: [{}]\n", names[0]),
    );
    // acmetool's margin is in days; 400 is longer than any of these certificates lives.
    state.write_desired(
        &format!("{}-margin", names[1]),
        &format!("satisfy:\n  names: [{}]\n  margin: 400\n", names[1]),
    );
    acmekeep(&state, &["reconcile"]).assert_success();
    for cycle in 0..2 {
        let ctx = format!("lifetime {lifetime}, cycle {cycle}");
        let ids: Vec<String> = names.iter().map(|n| state.live_cert_id(n)).collect();
        let mut dues = Vec::new();
        let mut newest = OffsetDateTime::UNIX_EPOCH;
        for n in names {
            let (nb, na) = live_validity(&state, n);
            newest = newest.max(nb);
            // Pebble 2.4: notAfter = notBefore + period - 1 s.
            assert_near(na, nb + lifetime - Duration::seconds(1), &ctx);
            let due = nb + due_after;
            let (word, renew_at) = status_at(&state, n, nb + due_after / 2);
            assert_eq!(word, "valid", "{ctx} {n}");
            assert_near(renew_at, due, &format!("{ctx} {n}: status renew_at"));
            dues.push(due);
        }
        let (first, last) = (dues[0].min(dues[1]), dues[0].max(dues[1]));

        // An hour before: nothing is due, nothing is ordered, nothing is printed.
        let run = run_at(&state, &["reconcile"], first - HOUR);
        run.assert_success();
        assert_eq!(run.stdout, "", "{ctx}\n{}", run.describe());
        let now: Vec<String> = names.iter().map(|n| state.live_cert_id(n)).collect();
        assert_eq!(now, ids, "{ctx}: renewed before its time");
        let (word, _) = status_at(&state, names[0], last + HOUR);
        assert_eq!(word, "due", "{ctx}");

        // An hour after: each renewed once.
        wait_past_second_of(newest);
        let certs = state.cert_ids().len();
        let run = run_at(&state, &["reconcile"], last + HOUR);
        run.assert_success();
        for (n, old) in names.iter().zip(&ids) {
            assert_ne!(
                &state.live_cert_id(n),
                old,
                "{ctx}: {n} not renewed\n{}",
                run.describe()
            );
            assert!(
                run.stdout
                    .contains(&format!("renewed the certificate for {n} ")),
                "{ctx}\n{}",
                run.describe()
            );
        }
        assert_eq!(state.cert_ids().len(), certs + 2, "{ctx}: one each");
    }
}

/// With ARI: the window (40 % to 45 % of the lifetime, before the local rule) decides, the
/// replacement names the old certificate, and each new certificate's window is asked for at
/// once.
fn with_ari(pebble: &Pebble, lifetime: Duration, due_after: Duration) {
    const NAME: &str = "ari.life.example.org";
    let proxy = AriProxy::start(pebble);
    let start = OffsetDateTime::now_utc() + lifetime * 0.40;
    let end = OffsetDateTime::now_utc() + lifetime * 0.45;
    assert!(end < OffsetDateTime::now_utc() + due_after - HOUR);
    proxy.set_default_window(Some(AriWindow {
        start,
        end,
        retry_after: 3600,
    }));
    let state = StateDir::new();
    let conf = standard_conf_target(pebble).replace(
        &serde_json::to_string(&pebble.directory_url()).expect("JSON"),
        &serde_json::to_string(&proxy.directory_url()).expect("JSON"),
    );
    state.write_conf_target(&conf);
    state.write_standard_responses();
    state.write_desired(
        &format!("{NAME}-ari"),
        &format!("satisfy:\n  names: [{NAME}]\n"),
    );
    acmekeep(&state, &["reconcile"]).assert_success();
    for cycle in 0..2 {
        let ctx = format!("lifetime {lifetime}, ARI, cycle {cycle}");
        let old = state.live_cert_id(NAME);
        let fetches = proxy.fetches().len();
        let (nb, _) = live_validity(&state, NAME);
        let (word, renew_at) = status_at(&state, NAME, nb + HOUR);
        assert_eq!(word, "valid", "{ctx}");
        assert!(
            renew_at >= start - Duration::seconds(1) && renew_at <= end,
            "{ctx}: renew_at {renew_at} outside the window {start} .. {end}"
        );

        let run = run_at(&state, &["reconcile"], start - HOUR);
        run.assert_success();
        assert_eq!(
            state.live_cert_id(NAME),
            old,
            "{ctx}: renewed before the window"
        );
        assert_eq!(run.stdout, "", "{ctx}\n{}", run.describe());

        let orders = proxy.orders().len();
        wait_past_second_of(nb);
        let run = run_at(&state, &["reconcile"], end + HOUR);
        run.assert_success();
        let new = state.live_cert_id(NAME);
        assert_ne!(
            new,
            old,
            "{ctx}: not renewed after the window\n{}",
            run.describe()
        );
        let sent = proxy.orders();
        assert_eq!(sent.len(), orders + 1, "{ctx}: {sent:?}");
        assert!(
            sent.last().is_some_and(|o| o.replaces.is_some()),
            "{ctx}: {sent:?}"
        );
        // The new certificate's window was asked for in the run that obtained it.
        assert!(proxy.fetches().len() > fetches, "{ctx}");
        let rec: serde_json::Value =
            serde_json::from_slice(&state.read(format!(".acmekeep/ari/{new}.json")))
                .expect("the new certificate's window");
        let fetched = rec["fetched_at"].as_str().expect("fetched_at");
        let fetched = OffsetDateTime::parse(fetched, &Rfc3339).expect("RFC 3339");
        assert!(
            fetched >= end + HOUR - Duration::seconds(1) && fetched < end + 2 * HOUR,
            "{ctx}: {rec}"
        );
    }
}

#[test]
fn six_day_certificates_renew_at_half_their_life_or_in_the_window() {
    follow(Duration::hours(160), Duration::hours(80));
}

#[test]
fn forty_five_day_certificates_renew_with_a_third_left_or_in_the_window() {
    follow(Duration::days(45), Duration::days(30));
}

#[test]
fn sixty_four_day_certificates_renew_with_a_third_left_or_in_the_window() {
    follow(Duration::days(64), Duration::days(64) * 2 / 3);
}

#[test]
fn ninety_day_certificates_renew_with_a_third_left_or_in_the_window() {
    follow(Duration::days(90), Duration::days(60));
}

/// A clock that jumped two months ahead and was put right: the failure recorded under the
/// wrong time (next attempt a minute after it) does not hold the target back until that time
/// comes round again.
#[test]
fn a_failure_recorded_while_the_clock_was_ahead_does_not_hold_the_target_back() {
    const NAME: &str = "jump.life.example.org";
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    let file = format!("{NAME}-jump");
    state.write_desired(&file, &format!("satisfy:\n  names: [{NAME}]\n"));
    pebble.dns_set_servfail(NAME);
    let ahead = OffsetDateTime::now_utc() + Duration::days(60);
    run_at(&state, &["reconcile"], ahead).assert_code(1);
    let rec = run_record(&state, &file);
    assert_eq!(rec["failures"], 1, "{rec:#}");
    assert!(rec["next_attempt"].is_string(), "backed off: {rec:#}");

    pebble.dns_clear_servfail(NAME);
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_success();
    assert!(
        state.live_link(NAME).is_some(),
        "not obtained once the clock was right\n{}",
        run.describe()
    );
    assert_eq!(run_record(&state, &file)["failures"], 0);
}
