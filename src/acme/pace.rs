//! Slowing down when the CA asks to: `Retry-After` on rate-limit and overload answers.
//!
//! A CA that is asked too often answers `429 Too Many Requests` with a `rateLimited` problem
//! (RFC 8555 §6.6), or `503` when it is overloaded, and says in `Retry-After` (RFC 9110
//! §10.2.3) when to come back; Let's Encrypt also writes "retry after \<time\>" in the problem's
//! detail. A short pause is waited out within the run by every request to that CA, so
//! parallel orders slow down together instead of each being refused in turn; the request
//! that was refused is then sent again. A long pause is not waited out: the refused target
//! is left to a later run, not before the CA's time, while the other orders go on (a long
//! pause is usually a limit on some names, not on the account). The time spent waiting per
//! CA in one run is bounded, so a run that keeps being slowed down ends and the next run
//! carries on.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

/// Longest pause waited out within a run (Let's Encrypt's new-order limit refills one order
/// every 36 seconds).
pub const MAX_IN_RUN_WAIT: Duration = Duration::from_secs(60);
/// Most time one run spends paused for one CA by default (`--rate-limit-wait`); beyond it,
/// refused requests are left to a later run.
pub const RUN_WAIT_BUDGET: Duration = Duration::from_secs(10 * 60);
/// Longest `Retry-After` believed (the CA is untrusted input; Let's Encrypt's longest
/// limits refill within a week).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often one request refused for its rate is sent again after waiting.
pub const RATE_LIMIT_RETRIES: u32 = 5;

/// The ACME problem type of a rate-limit answer.
pub const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";

/// Whether an error answer asks the client to slow down: a `rateLimited` problem, HTTP 429,
/// or HTTP 503 (overloaded).
pub fn asks_to_slow_down(status: Option<u16>, problem_type: Option<&str>) -> bool {
    problem_type == Some(RATE_LIMITED) || matches!(status, Some(429 | 503))
}

/// The delay a `Retry-After` value asks for at `now`: delay-seconds or an HTTP-date (a date
/// in the past is no delay), at most [`MAX_RETRY_AFTER`]; `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time".
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Until when an error answer asks the client to wait, or `None` when it does not: only a
/// 429, a 503 or a `rateLimited` problem counts, and the time comes from its `Retry-After`
/// header, else from the "retry after" time in its detail.
pub fn slow_down_until(
    status: http::StatusCode,
    retry_after: Option<&str>,
    problem: &serde_json::Value,
    now: SystemTime,
) -> Option<SystemTime> {
    let problem_type = problem.get("type").and_then(|t| t.as_str());
    if !asks_to_slow_down(Some(status.as_u16()), problem_type) {
        return None;
    }
    let delay = retry_after
        .and_then(|v| parse_retry_after(v, now))
        .or_else(|| {
            let detail = problem.get("detail")?.as_str()?;
            let at = retry_after_in(detail)?;
            Some(
                SystemTime::from(at)
                    .duration_since(now)
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_RETRY_AFTER),
            )
        })?;
    Some(now + delay)
}

/// One CA's pause: no request before `until`; `covered` is how much time its pauses have
/// covered in this run.
#[derive(Clone, Copy, Debug)]
struct Pause {
    until: SystemTime,
    covered: Duration,
}

/// The pauses CAs asked for in this run, by origin (`scheme://host:port`).
#[derive(Debug)]
pub struct Pauses {
    by_origin: HashMap<String, Pause>,
    /// Most time waited per CA in this run.
    budget: Duration,
}

impl Default for Pauses {
    fn default() -> Self {
        Self::with_budget(RUN_WAIT_BUDGET)
    }
}

impl Pauses {
    /// No pauses yet; at most `budget` waited per CA (zero: refusals are never waited out).
    pub fn with_budget(budget: Duration) -> Self {
        Self {
            by_origin: HashMap::new(),
            budget,
        }
    }

    /// Records that `origin` asked at `now` not to be sent anything before `until`. Only a
    /// pause short enough to be waited out within the run is kept (see the module docs);
    /// returns whether it was.
    pub fn record(&mut self, origin: &str, until: SystemTime, now: SystemTime) -> bool {
        let Ok(rest) = until.duration_since(now) else {
            return false;
        };
        if rest.is_zero() || rest > MAX_IN_RUN_WAIT {
            return false;
        }
        let p = self.by_origin.entry(origin.to_owned()).or_insert(Pause {
            until: now,
            covered: Duration::ZERO,
        });
        let from = p.until.max(now);
        if let Ok(more) = until.duration_since(from) {
            p.covered += more;
            p.until = until;
        }
        true
    }

    /// How long a request to `origin` made at `now` waits first: the rest of the CA's pause,
    /// unless its pauses have already covered the run's budget.
    pub fn wait(&self, origin: &str, now: SystemTime) -> Option<Duration> {
        let p = self.by_origin.get(origin)?;
        let rest = p.until.duration_since(now).ok().filter(|d| !d.is_zero())?;
        (p.covered <= self.budget).then_some(rest)
    }

    /// The end of `origin`'s pause at `now` when this run will not wait it out (the budget is
    /// spent): a new order there would only be refused again.
    pub fn spent(&self, origin: &str, now: SystemTime) -> Option<SystemTime> {
        let p = self.by_origin.get(origin)?;
        (p.covered > self.budget && p.until > now).then_some(p.until)
    }
}

/// Finds the time in a CA's "retry after \<time\>" explanation (Let's Encrypt writes
/// `retry after 2026-11-23 07:00:00 UTC`; RFC 3339 is accepted too).
pub fn retry_after_in(text: &str) -> Option<OffsetDateTime> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find("retry after ")? + "retry after ".len();
    let rest = text.get(at..)?;
    let rfc3339: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ';' | ')'))
        .collect();
    let rfc3339 = rfc3339.trim_end_matches('.');
    if let Ok(t) = OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) {
        return Some(t);
    }
    let le = rest.get(..23)?; // "2026-11-23 07:00:00 UTC"
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::PrimitiveDateTime::parse(le, &fmt)
        .ok()
        .map(|t| t.assume_utc())
}

/// The context of a refused account registration ([`super::error::AcmeError`]).
pub const REGISTERING: &str = "registering the account";

/// Until when a refusal for the CA's rate holds back every order at that CA rather than only
/// the names refused, for a fleet to share (doc/cluster.md): an overload (503), a rate limit
/// on registering an account (a limit on the caller, such as Let's Encrypt's new
/// registrations per IP address: no node of the fleet registers there until then), or a rate
/// limit on creating an order whose explanation names none of the order's `names` nor a
/// domain they are in. Let's Encrypt's limit on an account's new orders says "from this
/// account"; its limits on names quote the name (`for "example.com"`) or say "this exact
/// set of identifiers".
/// `None` when it is the names' limit, the CA gave no time, or the time has passed at `now`.
pub fn ca_wide_until(
    e: &anyhow::Error,
    names: &[String],
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let (context, problem) = e.chain().find_map(|c| match c.downcast_ref()? {
        super::error::AcmeError::RateLimited { context, problem } => Some((context, problem)),
        _ => None,
    })?;
    let until = problem.retry_at.filter(|t| *t > now)?;
    if problem.status == Some(503) || context == REGISTERING {
        return Some(until);
    }
    if !matches!(context.as_str(), "creating the order" | "new order") {
        return None;
    }
    let detail = problem
        .detail
        .as_deref()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let names_one = detail.contains("exact set")
        || names.iter().any(|n| {
            let n = n.to_ascii_lowercase();
            let n = n.trim_start_matches("*.");
            // The name and every domain it is in, down to two labels.
            let mut d = n;
            loop {
                if detail.contains(d) {
                    return true;
                }
                match d.split_once('.') {
                    Some((_, rest)) if rest.contains('.') => d = rest,
                    _ => return false,
                }
            }
        });
    (!names_one).then_some(until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn retry_after_explanations() {
        let le = "rateLimited: too many certificates (5) already issued for this exact set of domains in the last 168h0m0s, retry after 2026-11-23 07:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/";
        assert_eq!(retry_after_in(le), Some(datetime!(2026-11-23 07:00 UTC)));
        assert_eq!(
            retry_after_in("rateLimited: retry after 2026-11-23T07:00:00Z."),
            Some(datetime!(2026-11-23 07:00 UTC))
        );
        assert_eq!(retry_after_in("rateLimited: slow down"), None);
    }

    fn t0() -> SystemTime {
        // 2026-11-23T12:00:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_435_200)
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date_and_bounded() {
        let now = t0();
        let s = |v| parse_retry_after(v, now);
        assert_eq!(s("120"), Some(Duration::from_secs(120)));
        assert_eq!(s(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            s("Mon, 23 Nov 2026 12:01:30 GMT"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(s("Mon, 23 Nov 2026 11:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(s("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(s("Fri, 01 Jan 2100 00:00:00 GMT"), Some(MAX_RETRY_AFTER));
        assert_eq!(s("-5"), None);
        assert_eq!(s("soon"), None);
        assert_eq!(s(""), None);
    }

    #[test]
    fn only_rate_limits_and_overload_ask_to_slow_down() {
        let now = t0();
        let limited = serde_json::json!({"type": RATE_LIMITED, "detail": "too many new orders"});
        let other = serde_json::json!({"type": "urn:ietf:params:acme:error:malformed"});
        let until = |status: u16, header, problem: &serde_json::Value| {
            slow_down_until(
                http::StatusCode::from_u16(status).expect("status"),
                header,
                problem,
                now,
            )
        };
        let in_secs = |s| Some(now + Duration::from_secs(s));
        assert_eq!(until(429, Some("30"), &limited), in_secs(30));
        assert_eq!(until(429, Some("30"), &other), in_secs(30));
        assert_eq!(until(503, Some("5"), &other), in_secs(5));
        assert_eq!(until(400, Some("30"), &other), None);
        // The problem type is enough, whatever the status.
        assert_eq!(until(403, Some("30"), &limited), in_secs(30));
        // No header: Let's Encrypt's "retry after" in the detail.
        let le = serde_json::json!({
            "type": RATE_LIMITED,
            "detail": "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-11-23 13:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/",
        });
        assert_eq!(until(429, None, &le), in_secs(3600));
        // Neither: a slow-down answer without a time.
        assert_eq!(until(429, None, &limited), None);
    }

    #[test]
    fn short_pauses_are_waited_out_by_every_request_until_the_budget_is_spent() {
        let now = t0();
        let secs = Duration::from_secs;
        let mut p = Pauses::default();
        assert_eq!(p.wait("https://ca", now), None);
        assert!(p.record("https://ca", now + secs(30), now));
        assert_eq!(p.wait("https://ca", now), Some(secs(30)));
        assert_eq!(p.wait("https://ca", now + secs(10)), Some(secs(20)));
        assert_eq!(p.wait("https://ca", now + secs(30)), None);
        assert_eq!(p.wait("https://other", now), None, "one CA's pause only");
        // A shorter pause inside the current one changes nothing.
        assert!(p.record("https://ca", now + secs(5), now));
        assert_eq!(p.wait("https://ca", now), Some(secs(30)));
        // A long pause is not waited out here: it is left to a later run.
        assert!(!p.record("https://ca", now + MAX_IN_RUN_WAIT + secs(1), now));
        assert!(!p.record("https://ca", now, now));
        assert_eq!(p.wait("https://ca", now + secs(10)), Some(secs(20)));

        // Back-to-back pauses of a minute: waited out until ten minutes are covered.
        let mut p = Pauses::default();
        let mut t = now;
        let mut waited = Duration::ZERO;
        for _ in 0..20 {
            p.record("https://ca", t + MAX_IN_RUN_WAIT, t);
            match p.wait("https://ca", t) {
                Some(d) => {
                    waited += d;
                    t += d;
                }
                None => break,
            }
        }
        assert_eq!(waited, RUN_WAIT_BUDGET);
        assert_eq!(p.wait("https://ca", t), None);
        assert_eq!(p.spent("https://ca", t), Some(t + MAX_IN_RUN_WAIT));
        assert_eq!(
            p.spent("https://ca", t + MAX_IN_RUN_WAIT),
            None,
            "the pause is over"
        );
        assert_eq!(p.spent("https://other", t), None);

        // No budget: nothing is waited out, and the CA's pause is left to a later run.
        let mut p = Pauses::with_budget(Duration::ZERO);
        assert!(p.record("https://ca", now + secs(2), now));
        assert_eq!(p.wait("https://ca", now), None);
        assert_eq!(p.spent("https://ca", now), Some(now + secs(2)));
    }

    #[test]
    fn a_limit_on_the_account_or_an_overload_holds_for_the_ca_and_a_limit_on_names_does_not() {
        use crate::acme::error::{AcmeError, Problem};
        use time::macros::datetime;
        let now = datetime!(2026-11-23 12:00 UTC);
        let later = datetime!(2026-11-23 13:00 UTC);
        let names = vec!["www.shop.example".to_owned(), "shop.example".to_owned()];
        let err = |context: &str, status: u16, detail: &str, retry_at| {
            anyhow::Error::new(AcmeError::RateLimited {
                context: context.to_owned(),
                problem: Problem {
                    kind: Some(RATE_LIMITED.to_owned()),
                    detail: Some(detail.to_owned()),
                    status: Some(status),
                    subproblems: Vec::new(),
                    retry_at,
                },
            })
            .context("desired/shop")
        };
        for (context, status, detail, retry_at, want) in [
            (
                "creating the order",
                429,
                "too many new orders (300) from this account in the last 3h0m0s",
                Some(later),
                Some(later),
            ),
            (
                "finalizing the order",
                503,
                "the service is overloaded",
                Some(later),
                Some(later),
            ),
            // The names' own limits.
            (
                "creating the order",
                429,
                "too many certificates (5) already issued for this exact set of identifiers",
                Some(later),
                None,
            ),
            (
                "creating the order",
                429,
                "too many certificates (50) already issued for \"shop.example\" in the last 168h0m0s",
                Some(later),
                None,
            ),
            (
                "creating the order",
                429,
                "too many failed authorizations (5) for \"WWW.shop.example\"",
                Some(later),
                None,
            ),
            // A limit on registering accounts (per IP address at Let's Encrypt): no node
            // registers there until then.
            (
                "registering the account",
                429,
                "too many new registrations (10) from this IP address",
                Some(later),
                Some(later),
            ),
            (
                "finalizing the order",
                429,
                "too many new orders",
                Some(later),
                None,
            ),
            // No time, or a time past.
            ("creating the order", 429, "too many new orders", None, None),
            (
                "creating the order",
                429,
                "too many new orders",
                Some(now),
                None,
            ),
        ] {
            assert_eq!(
                ca_wide_until(&err(context, status, detail, retry_at), &names, now),
                want,
                "{context}: {detail}"
            );
        }
        let other = anyhow::anyhow!("connection refused");
        assert_eq!(ca_wide_until(&other, &names, now), None);
    }
}
