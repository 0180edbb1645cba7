//! What a failed request to the CA is ([`ca_error`]: its problem as a value), and whether to
//! send it again: a stale nonce, or a short pause the CA asked for.

use std::time::Duration;

use crate::acme::AcmeError;
use crate::acme::error::{ACCOUNT_DOES_NOT_EXIST, BAD_NONCE, Problem, problem_of};
use crate::acme::http::CaHttp;

/// Timed-out requests after which a CA counts as not answering for the rest of the run
/// (each has waited [`crate::acme::http::REQUEST_TIMEOUT`]); one may be a blip.
pub(super) const UNRESPONSIVE_AFTER: u64 = 2;

/// How often a request rejected for a stale nonce is sent again. instant-acme retries a
/// bad nonce only twice; a CA that rejects many nonces (Pebble does so at random, on
/// purpose) would then fail whole orders. A badNonce rejection means the CA did not act on
/// the request, so repeating any step is safe.
pub(in crate::acme) const NONCE_ATTEMPTS: u32 = 12;

pub(crate) fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    problem_of(e).is_some_and(|p| p.is(BAD_NONCE))
}

/// Whether the CA refused a request for its rate: a `rateLimited` problem, HTTP 429, or HTTP
/// 503 (overloaded).
pub(crate) fn is_rate_limited(e: &instant_acme::Error) -> bool {
    problem_of(e).is_some_and(|p| p.asks_to_slow_down())
}

/// After a failed request to the CA at `directory_url`: how long to wait before sending it
/// again because the CA asked this run to slow down for a short while (`waits` counts the
/// waits so far, at most [`crate::acme::pace::RATE_LIMIT_RETRIES`]); `None`: give up.
pub(in crate::acme) fn rate_limit_pause(
    http: &CaHttp,
    directory_url: &str,
    e: &instant_acme::Error,
    waits: &mut u32,
) -> Option<Duration> {
    if !is_rate_limited(e) || *waits >= crate::acme::pace::RATE_LIMIT_RETRIES {
        return None;
    }
    let pause = http.pause(directory_url)?;
    *waits += 1;
    if let Some(p) = problem_of(e) {
        tracing::info!(
            "the CA refused a request for its rate ({}); sending it again in {pause:.1?}",
            p.describe()
        );
    }
    Some(pause)
}

/// The error a failed request for `context` is: the CA's problem as a value
/// ([`AcmeError::RateLimited`] when it refused for its rate and said when to come back, or
/// only asked to slow down without being overloaded), or [`AcmeError::Other`] with the cause.
pub(crate) fn ca_error(context: &str, e: instant_acme::Error) -> AcmeError {
    let Some(problem) = problem_of(&e) else {
        // Kept as a cause, not flattened: the network error's own causes (DNS, TLS) are
        // what the operator needs (see crate::cause).
        return AcmeError::Other(anyhow::Error::new(e).context(context.to_owned()));
    };
    if problem.is(ACCOUNT_DOES_NOT_EXIST) {
        return AcmeError::AccountDoesNotExist;
    }
    refusal(context, problem)
}

/// The CA's refusal of the request `context` names: [`AcmeError::RateLimited`] when it
/// refused for its rate and said when to come back, or only asked to slow down without being
/// overloaded; else [`AcmeError::Ca`].
pub(super) fn refusal(context: &str, problem: Problem) -> AcmeError {
    let context = context.to_owned();
    // An overloaded CA (503) counts only when it said when to come back.
    if problem.asks_to_slow_down() && (problem.status != Some(503) || problem.retry_at.is_some()) {
        AcmeError::RateLimited { context, problem }
    } else {
        AcmeError::Ca { context, problem }
    }
}

/// Like [`ca_error`], for fetching what an earlier run ordered: a 403, 404 or 410 answer
/// is [`AcmeError::Gone`].
pub(super) fn fetch_error(context: &str, e: instant_acme::Error) -> AcmeError {
    match problem_of(&e) {
        Some(problem) if matches!(problem.status, Some(403 | 404 | 410)) => AcmeError::Gone {
            context: context.to_owned(),
            problem,
        },
        _ => ca_error(context, e),
    }
}

/// Renders a problem document (RFC 7807) with its subproblems, for error messages.
pub fn describe_problem(p: &instant_acme::Problem) -> String {
    Problem::of(p).describe()
}
