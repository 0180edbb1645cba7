//! ACME Renewal Information (RFC 9773): when to renew, as pure functions of their inputs.
//!
//! The CA may suggest a renewal window per certificate; it moves that window into the past
//! when it is about to revoke (Let's Encrypt drills this yearly), so the window outranks
//! every local rule. Without a window the local rule is Let's Encrypt's backstop — renew at
//! 1/3 of the lifetime remaining, 1/2 for certificates shorter than 10 days — capped by
//! `satisfy.margin` as in acmetool. Nothing here touches the disk, the network or the clock;
//! the fetch is [`crate::acme::renewal`], the cache file is [`crate::store::renewal_cache`].

use time::{Duration, OffsetDateTime};

use crate::acme::Window;
use crate::cert::CertSummary;
pub use crate::store::renewal_cache::{AriBackoff, AriRecord};

/// Shortest and longest wait before asking the CA again, whatever its Retry-After says
/// (RFC 9773 §4.3.3 lets clients clamp: a CA saying "0" must not make us poll in a loop, and
/// a CA saying "a month" must not keep us from noticing a revocation drill).
pub const MIN_RECHECK: Duration = Duration::minutes(1);
/// See [`MIN_RECHECK`]. Let's Encrypt asks clients to look at least twice a day.
pub const MAX_RECHECK: Duration = Duration::hours(12);

/// The clamping of the CA's Retry-After is the planner's rule, so the constructor lives here.
impl AriRecord {
    /// A record for a window fetched at `now` with the CA's `retry_after` delay.
    pub fn new(
        ari_id: &str,
        window: Window,
        retry_after: std::time::Duration,
        now: OffsetDateTime,
    ) -> Self {
        let wait = Duration::try_from(retry_after)
            .unwrap_or(MAX_RECHECK)
            .clamp(MIN_RECHECK, MAX_RECHECK);
        Self {
            ari_id: ari_id.to_owned(),
            window,
            retry_after_until: now + wait,
            fetched_at: now,
        }
    }
}

/// Whether the CA should be asked for the window now: never asked, or its Retry-After
/// has passed.
pub fn fetch_due(rec: Option<&AriRecord>, now: OffsetDateTime) -> bool {
    rec.is_none_or(|r| now >= r.retry_after_until)
}

/// The wait before asking again after the first answer that could not be used; it doubles
/// with each further one, up to [`UNUSABLE_MAX_WAIT`] (RFC 9773 §4.3.3: the client keeps its
/// own schedule meanwhile and backs off exponentially).
pub const UNUSABLE_FIRST_WAIT: Duration = Duration::hours(1);
/// See [`UNUSABLE_FIRST_WAIT`]: a day, as for a directory without `renewalInfo`.
pub const UNUSABLE_MAX_WAIT: Duration = Duration::days(1);

/// The rule is the planner's, so the constructor lives here.
impl AriBackoff {
    /// The backoff after an answer about the certificate with ARI id `ari_id` that could not
    /// be used, at `now`, following `prev` (the same certificate's, if any).
    pub fn after(prev: Option<&AriBackoff>, ari_id: &str, now: OffsetDateTime) -> Self {
        let failures = prev
            .filter(|p| p.ari_id == ari_id)
            .map_or(0, |p| p.failures)
            .saturating_add(1);
        let doublings = failures.saturating_sub(1).min(16);
        let wait = (UNUSABLE_FIRST_WAIT * 2_i32.pow(doublings)).min(UNUSABLE_MAX_WAIT);
        Self {
            ari_id: ari_id.to_owned(),
            failures,
            next_ask: now + wait,
        }
    }
}

/// Whether `backoff` (unusable answers in a row, if any) lets the CA be asked at `now`.
pub fn backoff_passed(backoff: Option<&AriBackoff>, now: OffsetDateTime) -> bool {
    backoff.is_none_or(|b| now >= b.next_ask)
}

/// Why a window the CA suggested for a certificate that expires at `not_after` cannot be
/// used, if it cannot: inverted, or ending after the certificate does (renewing after
/// expiry is never right). A window in the past is usable: it means "now".
pub fn unusable(window: &Window, not_after: OffsetDateTime) -> Option<&'static str> {
    if window.end < window.start {
        Some("the suggested window ends before it starts")
    } else if window.end > not_after {
        Some("the suggested window ends after the certificate expires")
    } else {
        None
    }
}

/// The renewal time inside `window` for a random `fraction` in `[0, 1)`: uniform over the
/// window (RFC 9773 §4.2). A window wholly in the past yields its start, i.e. "at once".
pub fn time_in_window(window: &Window, fraction: f64) -> OffsetDateTime {
    let span = window.end - window.start;
    if span <= Duration::ZERO {
        return window.start;
    }
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    window.start + span * fraction
}

/// The local rule (no ARI): `not_after - min(margin, lifetime / 3)`, with `lifetime / 2`
/// instead of a third for certificates shorter than 10 days.
pub fn fallback_due(cert: &CertSummary, margin_days: u32) -> OffsetDateTime {
    let lifetime = cert.not_after - cert.not_before;
    let share = if lifetime < Duration::days(10) {
        lifetime / 2_i32
    } else {
        lifetime / 3_i32
    };
    let span = share.min(Duration::days(i64::from(margin_days)));
    cert.not_after - span.max(Duration::ZERO)
}

/// When `cert` becomes due: inside the CA's window when there is a usable one, else by the
/// local rule. `jitter` is a fraction in `[0, 1)` that must stay the same from run to run
/// for the same certificate (see [`stable_jitter`]): a fresh random number every run would
/// make renewals drift to the start of the window.
///
/// A window ending after the certificate expires is not usable (a CA bug; renewing after
/// expiry is never right), nor is an inverted one.
pub fn due_at(
    cert: &CertSummary,
    margin_days: u32,
    ari: Option<&AriRecord>,
    jitter: f64,
) -> OffsetDateTime {
    match ari {
        Some(rec) if rec.window.start <= rec.window.end && rec.window.end <= cert.not_after => {
            time_in_window(&rec.window, jitter)
        }
        _ => fallback_due(cert, margin_days),
    }
}

/// A fraction in `[0, 1)` derived from `key` (the certificate's ARI id or cert id): the same
/// every run, spread evenly across certificates and machines.
pub fn stable_jitter(key: &str) -> f64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    // 53 bits: exactly representable, strictly below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyFamily;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    fn cert(days: i64) -> CertSummary {
        CertSummary {
            id: "c".to_owned(),
            names: vec!["a.b".to_owned()],
            not_before: T0,
            not_after: T0 + Duration::days(days),
            key_family: Some(KeyFamily::Ecdsa),
            has_private_key: true,
            key_id: "k".to_owned(),
            revoked: false,
            profile: None,
            ari_id: None,
        }
    }

    fn record(start: OffsetDateTime, end: OffsetDateTime) -> AriRecord {
        AriRecord::new(
            "x.y",
            Window { start, end },
            std::time::Duration::from_secs(3600),
            T0,
        )
    }

    #[test]
    fn fallback_rule_table() {
        // (lifetime days, margin days, due this many days after issuance)
        let table = [
            (90.0, 30, 60.0),                // 1/3 = 30 = margin
            (90.0, 10, 80.0),                // margin caps the span
            (90.0, 60, 60.0),                // margin can't exceed 1/3
            (45.0, 30, 30.0),                // 45 days: 15 left
            (64.0, 30, 64.0 * 2.0 / 3.0),    // 64 days: a third left, under the margin
            (160.0 / 24.0, 30, 80.0 / 24.0), // 160 hours: half
            (6.0, 400, 3.0),                 // a margin longer than the lifetime changes nothing
            (6.0, 30, 3.0),                  // under 10 days: half
            (9.0, 30, 4.5),
            (10.0, 30, 10.0 - 10.0 / 3.0), // exactly 10 days: a third
            (90.0, 0, 90.0),               // margin 0: only at expiry
        ];
        for (life, margin, due) in table {
            let c = CertSummary {
                not_after: T0 + Duration::seconds_f64(life * 86400.0),
                ..cert(0)
            };
            let got = fallback_due(&c, margin);
            let want = T0 + Duration::seconds_f64(due * 86400.0);
            assert!(
                (got - want).abs() < Duration::seconds(1),
                "life={life} margin={margin}: {got} != {want}"
            );
            assert_eq!(due_at(&c, margin, None, 0.5), got);
        }
    }

    /// The lifetimes CAs issue or have announced: 6-day (160 h, `shortlived`), 45-day
    /// (`tlsserver`, and the default from 2028), 64-day (the default from 2027), 90-day.
    /// Simulated runs twice a day for a year, with the default margin and one far larger than
    /// the lifetime (the loop lego and NginxProxyManager users hit with fixed day counts): each
    /// certificate is renewed exactly once, at its share of its own lifetime (to within one
    /// run), never after it expired, and its replacement is never due at once.
    #[test]
    fn each_lifetime_renews_once_per_cycle_at_its_own_share() {
        let hours = Duration::hours;
        // (lifetime, margin days, due this long after issuance)
        let table = [
            (hours(160), 30, hours(80)),
            (hours(160), 400, hours(80)),
            (Duration::days(45), 30, Duration::days(30)),
            (Duration::days(45), 400, Duration::days(30)),
            (Duration::days(64), 30, Duration::days(64) * 2_i32 / 3_i32),
            (Duration::days(64), 400, Duration::days(64) * 2_i32 / 3_i32),
            (Duration::days(64), 10, Duration::days(54)),
            (Duration::days(90), 30, Duration::days(60)),
            (Duration::days(90), 400, Duration::days(60)),
        ];
        let step = hours(12);
        for (life, margin, due_after) in table {
            let mut issued = T0;
            let mut renewals = 0;
            let mut t = T0;
            while t < T0 + Duration::days(365) {
                let c = CertSummary {
                    not_before: issued,
                    not_after: issued + life,
                    ..cert(0)
                };
                assert!(
                    t < c.not_after,
                    "life={life} margin={margin}: expired at {t}"
                );
                if due_at(&c, margin, None, 0.5) <= t {
                    let age = t - issued;
                    assert!(
                        age >= due_after && age < due_after + step,
                        "life={life} margin={margin}: renewed at age {age}, want {due_after}"
                    );
                    issued = t;
                    renewals += 1;
                    let next = CertSummary {
                        not_before: t,
                        not_after: t + life,
                        ..cert(0)
                    };
                    assert!(due_at(&next, margin, None, 0.5) > t, "renewal loop");
                }
                t += step;
            }
            // Runs fall on a 12-hour grid from the first issuance: the renewal comes at the
            // first run at or after the due time.
            let runs =
                (due_after.whole_seconds() + step.whole_seconds() - 1) / step.whole_seconds();
            let cycles = Duration::days(365).whole_seconds() / (runs * step.whole_seconds());
            assert!(
                (cycles - 1..=cycles).contains(&renewals),
                "life={life} margin={margin}: {renewals} renewals, want about {cycles}"
            );
        }
    }

    #[test]
    fn window_decides_when_present() {
        let c = cert(90);
        let (s, e) = (T0 + Duration::days(70), T0 + Duration::days(72));
        let rec = record(s, e);
        assert_eq!(due_at(&c, 30, Some(&rec), 0.0), s);
        assert_eq!(due_at(&c, 30, Some(&rec), 0.5), s + Duration::days(1));
        assert!(due_at(&c, 30, Some(&rec), 0.999_999) < e);
        // Out-of-range or nonsense fractions stay inside the window.
        assert_eq!(due_at(&c, 30, Some(&rec), -3.0), s);
        assert_eq!(due_at(&c, 30, Some(&rec), 7.0), e);
        assert_eq!(due_at(&c, 30, Some(&rec), f64::NAN), s);
        // A window in the past (revocation): due before any `now` after it.
        let past = record(T0 + Duration::days(1), T0 + Duration::days(2));
        assert!(due_at(&c, 30, Some(&past), 0.9) <= T0 + Duration::days(2));
        // A window later than the local rule still wins (the CA may ask for patience)...
        let late = record(T0 + Duration::days(80), T0 + Duration::days(85));
        assert!(due_at(&c, 30, Some(&late), 0.0) > fallback_due(&c, 30));
        // ...but never one past expiry, nor an inverted one.
        let bogus = record(T0 + Duration::days(80), T0 + Duration::days(95));
        assert_eq!(due_at(&c, 30, Some(&bogus), 0.5), fallback_due(&c, 30));
        let inverted = record(T0 + Duration::days(72), T0 + Duration::days(70));
        assert_eq!(due_at(&c, 30, Some(&inverted), 0.5), fallback_due(&c, 30));
    }

    #[test]
    fn retry_after_is_clamped_and_respected() {
        let w = Window { start: T0, end: T0 };
        let secs = std::time::Duration::from_secs;
        let r = AriRecord::new("i", w, secs(6 * 3600), T0);
        assert_eq!(r.retry_after_until, T0 + Duration::hours(6));
        assert!(!fetch_due(Some(&r), T0 + Duration::hours(5)));
        assert!(fetch_due(Some(&r), T0 + Duration::hours(6)));
        assert!(fetch_due(None, T0));
        let r = AriRecord::new("i", w, secs(0), T0);
        assert_eq!(r.retry_after_until, T0 + MIN_RECHECK);
        let r = AriRecord::new("i", w, secs(30 * 86400), T0);
        assert_eq!(r.retry_after_until, T0 + MAX_RECHECK);
    }

    #[test]
    fn unusable_answers_back_off_doubling_up_to_a_day() {
        // (failures so far, wait before the next question)
        let mut prev: Option<AriBackoff> = None;
        for (n, hours) in [
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (5, 16),
            (6, 24),
            (7, 24),
            (40, 24),
        ] {
            while prev.as_ref().map_or(0, |p| p.failures) + 1 < n {
                prev = Some(AriBackoff::after(prev.as_ref(), "a.b", T0));
            }
            let b = AriBackoff::after(prev.as_ref(), "a.b", T0);
            assert_eq!(b.failures, n);
            assert_eq!(b.next_ask, T0 + Duration::hours(hours), "after {n}");
            assert!(!backoff_passed(Some(&b), b.next_ask - Duration::seconds(1)));
            assert!(backoff_passed(Some(&b), b.next_ask));
            prev = Some(b);
        }
        assert!(backoff_passed(None, T0));
        // Another certificate's backoff (a record copied next to the wrong one) starts over.
        let other = AriBackoff::after(prev.as_ref(), "c.d", T0);
        assert_eq!(other.failures, 1);
    }

    #[test]
    fn which_windows_are_unusable() {
        let c = cert(90);
        let w = |s: i64, e: i64| Window {
            start: T0 + Duration::days(s),
            end: T0 + Duration::days(e),
        };
        assert_eq!(unusable(&w(60, 62), c.not_after), None);
        assert_eq!(unusable(&w(-3, -2), c.not_after), None, "in the past: now");
        assert_eq!(unusable(&w(60, 60), c.not_after), None, "a point");
        assert_eq!(unusable(&w(90, 90), c.not_after), None, "at expiry");
        assert!(
            unusable(&w(62, 60), c.not_after).is_some_and(|why| why.contains("before it starts"))
        );
        assert!(unusable(&w(80, 91), c.not_after).is_some_and(|why| why.contains("expires")));
        assert!(unusable(&w(3000, 9000), c.not_after).is_some());
    }

    #[test]
    fn record_json_shape() {
        let r = record(
            datetime!(2026-03-01 00:00 UTC),
            datetime!(2026-03-02 12:00 UTC),
        );
        let json = serde_json::to_value(&r).expect("serialize");
        assert_eq!(json["window"]["start"], "2026-03-01T00:00:00Z");
        assert_eq!(json["window"]["end"], "2026-03-02T12:00:00Z");
        assert_eq!(json["retry_after_until"], "2026-01-01T01:00:00Z");
        assert_eq!(json["fetched_at"], "2026-01-01T00:00:00Z");
        let back: AriRecord = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, r);
    }

    #[test]
    fn stable_jitter_is_stable_and_in_range() {
        assert_eq!(stable_jitter("a"), stable_jitter("a"));
        assert_ne!(stable_jitter("a"), stable_jitter("b"));
        let mean = (0..1000)
            .map(|i| stable_jitter(&i.to_string()))
            .inspect(|j| assert!((0.0..1.0).contains(j)))
            .sum::<f64>()
            / 1000.0;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
    }
}
