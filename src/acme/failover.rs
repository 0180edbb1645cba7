//! When a target may be ordered from its next CA (`request.fallback-providers`) in the same
//! run: only when the preferred CA cannot issue now, for reasons of its own — it cannot be
//! reached or stopped answering, it failed (HTTP 5xx, `serverInternal`), or it refused for its
//! rate beyond what this run waits out. Never when the CA answered about the request itself:
//! a failed validation (`unauthorized`, `dns`, `connection`, `incorrectResponse`, `caa`), a
//! refused identifier or CSR, or anything local would fail the same way at the next CA and
//! only spend its limits too.
//!
//! [`decide`] is the rule, pure, over what an error says ([`Failure`]); [`failure_of`] reads
//! that from an error as the executor has it.

use super::AcmeError;
use super::error::ACME_ERROR;
use super::http::ExchangeError;

/// What a failed attempt says, as far as trying another CA is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Failure<'a> {
    /// No answer: the connection failed, timed out, or the CA already stopped answering in
    /// this run.
    pub unreachable: bool,
    /// The HTTP status of the CA's error answer (or its problem document's `status`).
    pub status: Option<u16>,
    /// The problem document's `type`.
    pub problem: Option<&'a str>,
    /// Refused for its rate (429, 503 or `rateLimited`) beyond what this run waits.
    pub rate_limited: bool,
}

/// Why the next CA is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FallOver {
    /// The CA could not be reached, or stopped answering.
    Unreachable,
    /// The CA failed (HTTP 5xx or `serverInternal`).
    Failed,
    /// The CA refused for its rate beyond what this run waits.
    RateLimited,
}

impl FallOver {
    /// The words for the line printed when falling over.
    pub fn says(self) -> &'static str {
        match self {
            FallOver::Unreachable => "could not be reached",
            FallOver::Failed => "failed",
            FallOver::RateLimited => "asked to slow down for longer than this run waits",
        }
    }
}

/// Whether a failure at one CA sends the target to its next CA, and why.
pub fn decide(f: Failure<'_>) -> Option<FallOver> {
    let kind = f.problem.and_then(|p| p.strip_prefix(ACME_ERROR));
    if f.rate_limited || kind == Some("rateLimited") {
        return Some(FallOver::RateLimited);
    }
    if f.unreachable {
        return Some(FallOver::Unreachable);
    }
    if kind == Some("serverInternal") {
        return Some(FallOver::Failed);
    }
    // Another problem type says what the CA thought of the request, whatever the status.
    if kind.is_some() {
        return None;
    }
    match f.status {
        Some(s) if (500..600).contains(&s) => Some(FallOver::Failed),
        _ => None,
    }
}

/// A CA that stopped answering earlier in this run (its requests timed out), and is not
/// asked again in it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoppedAnswering(pub &'static str);

/// What `e`, an order's or an account step's error with its causes, says.
pub fn failure_of(e: &anyhow::Error) -> Failure<'_> {
    let mut f = Failure::default();
    for c in e.chain() {
        if let Some(a) = c.downcast_ref::<AcmeError>() {
            f.rate_limited |= matches!(a, AcmeError::RateLimited { .. });
            // Transparent: the chain goes on from the inner error's cause, past the error.
            if let AcmeError::Other(inner) = a {
                f.unreachable |= inner.chain().any(unanswered);
            }
            if let Some(p) = a.problem() {
                f.status = f.status.or(p.status);
                f.problem = f.problem.or(p.kind.as_deref());
            }
        }
        f.unreachable |= unanswered(c);
    }
    f
}

/// Whether `e` is a request that got no answer: the connection failed or was cut, or no
/// complete answer came in time.
fn unanswered(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<StoppedAnswering>() || e.is::<hyper_util::client::legacy::Error>() {
        return true;
    }
    if let Some(x) = e.downcast_ref::<ExchangeError>() {
        return matches!(
            x,
            ExchangeError::TimedOut { .. }
                | ExchangeError::Send { .. }
                | ExchangeError::Body { .. }
        );
    }
    // instant-acme passes its HTTP client's errors up inside `Other`, transparently (its
    // `source()` skips the error itself).
    match e.downcast_ref::<instant_acme::Error>() {
        Some(instant_acme::Error::Other(inner)) => unanswered(inner.as_ref()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cas_own_trouble_falls_over() {
        let p = |t: &'static str| Some(t);
        let none = Failure::default();
        for (case, f, want) in [
            (
                "connection refused",
                Failure {
                    unreachable: true,
                    ..none
                },
                Some(FallOver::Unreachable),
            ),
            (
                "HTTP 500 without a problem",
                Failure {
                    status: Some(500),
                    ..none
                },
                Some(FallOver::Failed),
            ),
            (
                "HTTP 502 HTML page",
                Failure {
                    status: Some(502),
                    ..none
                },
                Some(FallOver::Failed),
            ),
            (
                "serverInternal",
                Failure {
                    status: Some(500),
                    problem: p("urn:ietf:params:acme:error:serverInternal"),
                    ..none
                },
                Some(FallOver::Failed),
            ),
            (
                "503 beyond the wait",
                Failure {
                    status: Some(503),
                    rate_limited: true,
                    ..none
                },
                Some(FallOver::RateLimited),
            ),
            (
                "rateLimited beyond the wait",
                Failure {
                    status: Some(429),
                    problem: p("urn:ietf:params:acme:error:rateLimited"),
                    rate_limited: true,
                    ..none
                },
                Some(FallOver::RateLimited),
            ),
            (
                "unauthorized (validation failed)",
                Failure {
                    status: Some(403),
                    problem: p("urn:ietf:params:acme:error:unauthorized"),
                    ..none
                },
                None,
            ),
            (
                "dns",
                Failure {
                    status: Some(400),
                    problem: p("urn:ietf:params:acme:error:dns"),
                    ..none
                },
                None,
            ),
            (
                "caa",
                Failure {
                    status: Some(403),
                    problem: p("urn:ietf:params:acme:error:caa"),
                    ..none
                },
                None,
            ),
            (
                "connection (the CA could not reach us)",
                Failure {
                    status: Some(400),
                    problem: p("urn:ietf:params:acme:error:connection"),
                    ..none
                },
                None,
            ),
            (
                "incorrectResponse",
                Failure {
                    status: Some(403),
                    problem: p("urn:ietf:params:acme:error:incorrectResponse"),
                    ..none
                },
                None,
            ),
            (
                "rejectedIdentifier",
                Failure {
                    status: Some(400),
                    problem: p("urn:ietf:params:acme:error:rejectedIdentifier"),
                    ..none
                },
                None,
            ),
            (
                "badCSR",
                Failure {
                    status: Some(400),
                    problem: p("urn:ietf:params:acme:error:badCSR"),
                    ..none
                },
                None,
            ),
            (
                "a 500 that names a request problem",
                Failure {
                    status: Some(500),
                    problem: p("urn:ietf:params:acme:error:malformed"),
                    ..none
                },
                None,
            ),
            (
                "404",
                Failure {
                    status: Some(404),
                    ..none
                },
                None,
            ),
            ("local error", none, None),
        ] {
            assert_eq!(decide(f), want, "{case}");
        }
    }

    #[test]
    fn failures_are_read_from_the_errors_as_they_come() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let timed_out = ExchangeError::TimedOut {
            method: http::Method::POST,
            url: "https://ca.example/new-order".to_owned(),
            timeout: std::time::Duration::from_secs(30),
        };
        let through_instant_acme =
            anyhow::Error::new(instant_acme::Error::Other(Box::new(timed_out))).context("ordering");
        assert!(failure_of(&through_instant_acme).unreachable);
        let stopped = anyhow::Error::new(StoppedAnswering("stopped")).context("CA x");
        assert!(failure_of(&stopped).unreachable);
        // The directory fetch: our HTTP client's error inside AcmeError::Other.
        let refused_directory = anyhow::Error::new(AcmeError::Other(anyhow::Error::new(
            ExchangeError::TimedOut {
                method: http::Method::GET,
                url: "https://ca.example/dir".to_owned(),
                timeout: std::time::Duration::from_secs(30),
            },
        )))
        .context("CA https://ca.example/dir");
        assert!(failure_of(&refused_directory).unreachable);
        // A local I/O error is not the CA's.
        let local = anyhow::Error::new(refused).context("writing certs/x");
        assert_eq!(failure_of(&local), Failure::default());
        let problem = super::super::error::Problem {
            kind: Some("urn:ietf:params:acme:error:serverInternal".to_owned()),
            status: Some(500),
            ..Default::default()
        };
        let ca = anyhow::Error::new(AcmeError::Ca {
            context: "ordering".to_owned(),
            problem,
        })
        .context("a.example");
        let f = failure_of(&ca);
        assert_eq!(
            (f.status, f.problem),
            (Some(500), Some("urn:ietf:params:acme:error:serverInternal"))
        );
        assert_eq!(decide(f), Some(FallOver::Failed));
    }
}
