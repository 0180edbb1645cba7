//! The CA's refusals as values: its problem document (RFC 7807, RFC 8555 §6.7) with the time it
//! asked to be left alone until, and the errors callers branch on.
//!
//! An error answer is read once, at the HTTP layer ([`Problem::from_answer`]), and from there
//! travels as a [`Problem`] — inside a [`Refusal`] through instant-acme, then in an
//! [`AcmeError`] — up to whoever decides what to do about it: the retry time is a time, the
//! kind of refusal a field, so rewording a message can change what a person reads and nothing
//! else. The text ([`Problem::describe`]) is made only for people: logs, `status`, the run
//! record's `last_error`.

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The ACME error namespace (RFC 8555 §6.7).
pub const ACME_ERROR: &str = "urn:ietf:params:acme:error:";
/// The problem type of a request sent with a stale nonce.
pub const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";
/// The problem type of a key the CA knows no account for (onlyReturnExisting).
pub const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";
/// The problem type of a revocation of a certificate that is revoked already.
pub const ALREADY_REVOKED: &str = "urn:ietf:params:acme:error:alreadyRevoked";

/// Most characters of a problem document's text kept for errors and logs.
pub const MAX_PROBLEM_TEXT: usize = 1000;

/// A problem document as acmekeep keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problem {
    /// Its `type` (an ACME URN, or whatever the CA wrote).
    pub kind: Option<String>,
    /// Its `detail`, as the CA wrote it.
    pub detail: Option<String>,
    /// Its `status`, else the HTTP status of the answer.
    pub status: Option<u16>,
    /// The details of its subproblems (RFC 8555 §6.7.1), in order.
    pub subproblems: Vec<Option<String>>,
    /// When the CA said to come back, in whole seconds rounded up (never earlier than the CA's
    /// time), for an answer that asks to slow down (429, 503, rateLimited): the "retry after
    /// \<time\>" of its detail, else its `Retry-After`.
    pub retry_at: Option<OffsetDateTime>,
}

impl Problem {
    /// Whether its type is `kind` (a full URN).
    pub fn is(&self, kind: &str) -> bool {
        self.kind.as_deref() == Some(kind)
    }

    /// Whether it asks the client to slow down: a `rateLimited` problem, HTTP 429 or 503.
    pub fn asks_to_slow_down(&self) -> bool {
        super::pace::asks_to_slow_down(self.status, self.kind.as_deref())
    }

    /// The error answer with `status` and `body`, asking (or not) to come back at `retry_at`.
    /// The CA's problem document is kept (gaining the status if it lacks it); anything else —
    /// an empty body, an HTML error page, an object with fields of the wrong type — becomes a
    /// problem naming the status, so that an error is never reported as "cannot parse JSON"
    /// and callers can tell a 404 from a failure.
    pub fn from_answer(
        status: http::StatusCode,
        body: &[u8],
        retry_at: Option<std::time::SystemTime>,
    ) -> Self {
        let mut problem = match serde_json::from_slice::<instant_acme::Problem>(body) {
            Ok(p) => Self::of(&p),
            Err(_) => {
                let text: String = String::from_utf8_lossy(body)
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect();
                let detail = match text.trim() {
                    "" => format!("HTTP {status}"),
                    t => format!("HTTP {status}: {t}"),
                };
                Self {
                    detail: Some(detail),
                    ..Self::default()
                }
            }
        };
        problem.status.get_or_insert(status.as_u16());
        // The CA's own "retry after" in its detail wins over the header: it is the time the
        // limit refills (Let's Encrypt), the header only when to ask at the earliest.
        problem.retry_at = retry_at.map(|at| {
            problem
                .detail
                .as_deref()
                .and_then(super::pace::retry_after_in)
                .unwrap_or_else(|| whole_seconds_up(at))
        });
        problem
    }

    /// instant-acme's problem: one inside an answer that succeeded (an order's or a
    /// challenge's `error`), or a badNonce rejection it gave up retrying. Its retry time, if
    /// any, is the "retry after" its detail gives when it asks to slow down.
    pub fn of(p: &instant_acme::Problem) -> Self {
        let mut problem = Self {
            kind: p.r#type.clone(),
            detail: p.detail.clone(),
            status: p.status,
            subproblems: p.subproblems.iter().map(|s| s.detail.clone()).collect(),
            retry_at: None,
        };
        if problem.asks_to_slow_down() {
            problem.retry_at = problem
                .detail
                .as_deref()
                .and_then(super::pace::retry_after_in);
        }
        problem
    }

    /// One bounded line for people: `<type>: <detail>; <subproblem detail>…`, the type without
    /// the ACME namespace; a retry time the detail does not already give is added as
    /// "(retry after <RFC 3339>)".
    pub fn describe(&self) -> String {
        let kind = self
            .kind
            .as_deref()
            .map(|t| t.trim_start_matches(ACME_ERROR))
            .unwrap_or("error");
        let detail = self.detail.as_deref();
        let detail = match self.retry_at {
            Some(at) if super::pace::retry_after_in(detail.unwrap_or("")).is_none() => {
                let at = at.format(&Rfc3339).unwrap_or_default();
                match detail.unwrap_or("").trim() {
                    "" => format!("retry after {at}"),
                    d => format!("{d} (retry after {at})"),
                }
            }
            _ => detail.unwrap_or("(no detail)").to_owned(),
        };
        let mut s = format!("{kind}: {detail}");
        for sub in &self.subproblems {
            s.push_str(&format!("; {}", sub.as_deref().unwrap_or("")));
        }
        // The CA's text goes to logs and status: keep it one bounded line.
        s.retain(|c| !c.is_control());
        if let Some((end, _)) = s.char_indices().nth(MAX_PROBLEM_TEXT) {
            s.truncate(end);
        }
        s
    }
}

/// `at` rounded up to the whole second.
fn whole_seconds_up(at: std::time::SystemTime) -> OffsetDateTime {
    let at = OffsetDateTime::from(at);
    match at.replace_nanosecond(0) {
        Ok(whole) if whole < at => whole + time::Duration::SECOND,
        _ => at,
    }
}

/// An error answer from the CA, as the HTTP client hands it to instant-acme (which passes its
/// client's errors up untouched): the problem travels as a value, not as a rewritten body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub Problem);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.describe())
    }
}

impl std::error::Error for Refusal {}

/// The CA's problem in an instant-acme error: an error answer ([`Refusal`]) or a problem
/// instant-acme read itself ([`Problem::of`]).
pub fn problem_of(e: &instant_acme::Error) -> Option<Problem> {
    match e {
        instant_acme::Error::Api(p) => Some(Problem::of(p)),
        instant_acme::Error::Other(inner) => inner.downcast_ref::<Refusal>().map(|r| r.0.clone()),
        _ => None,
    }
}

/// Errors that callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The account key is not registered at this CA (onlyReturnExisting said so).
    #[error("no account exists at the CA for this key")]
    AccountDoesNotExist,
    /// The CA refused or failed the request `context` names.
    #[error("{context}: {}", problem.describe())]
    Ca {
        /// What was asked.
        context: String,
        /// The CA's answer.
        problem: Problem,
    },
    /// The CA refused for its rate (rate limit, or overload with a time to come back) beyond
    /// what this run waits out.
    #[error("{context}: {}", problem.describe())]
    RateLimited {
        /// What was asked.
        context: String,
        /// The CA's answer; its `retry_at` is when to ask again.
        problem: Problem,
    },
    /// The CA answered that what was asked for is gone or not this account's (HTTP 403, 404
    /// or 410): asking again will not help.
    #[error("{context}: {}", problem.describe())]
    Gone {
        /// What was asked.
        context: String,
        /// The CA's answer.
        problem: Problem,
    },
    /// The CA tried the order's challenges and the order went invalid: each challenge it
    /// failed, with its problem (none when the CA gave no reason). Backs off as
    /// [`AcmeError::Refused`] does; the problems are for people and logs.
    #[error("{}", describe_failed(failed))]
    Validation {
        /// The failed challenges, in the order of the order's authorizations.
        failed: Vec<FailedChallenge>,
    },
    /// What the CA answered makes the order fail, said in our words: an authorization that is
    /// neither pending nor valid, no challenge acmekeep may use, a malformed token.
    #[error("{0}")]
    Refused(String),
    /// Anything else (network, local I/O, validation of the CA's answer).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A challenge the CA found wanting: the identifier it was for (as the authorization names
/// it) and the problem the challenge carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedChallenge {
    /// The authorization's identifier.
    pub identifier: String,
    /// The challenge's `error`.
    pub problem: Problem,
}

/// `validation failed: <identifier>: <problem>; …`, or that the CA gave no reason.
fn describe_failed(failed: &[FailedChallenge]) -> String {
    if failed.is_empty() {
        return "the order became invalid (the CA gave no reason)".to_owned();
    }
    let reasons: Vec<String> = failed
        .iter()
        .map(|f| format!("{}: {}", f.identifier, f.problem.describe()))
        .collect();
    format!("validation failed: {}", reasons.join("; "))
}

/// What an error says about the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Ours or the network's: nothing the CA decided, so a fix can be tried at once.
    Local,
    /// The CA answered no; `retry_at` is a time it gave to come back, if any.
    Ca {
        /// When the CA said to come back.
        retry_at: Option<OffsetDateTime>,
    },
    /// The CA refused for its rate, until `retry_at` if it said.
    RateLimited {
        /// When the CA said to come back.
        retry_at: Option<OffsetDateTime>,
    },
}

impl AcmeError {
    /// What this error says about the next attempt, from its values only.
    pub fn class(&self) -> ErrorClass {
        match self {
            AcmeError::RateLimited { problem, .. } => ErrorClass::RateLimited {
                retry_at: problem.retry_at,
            },
            AcmeError::Ca { problem, .. } | AcmeError::Gone { problem, .. } => ErrorClass::Ca {
                retry_at: problem.retry_at,
            },
            // A failed challenge's problem gives no time to come back: none is read from it.
            AcmeError::Validation { .. } | AcmeError::Refused(_) => {
                ErrorClass::Ca { retry_at: None }
            }
            AcmeError::AccountDoesNotExist | AcmeError::Other(_) => ErrorClass::Local,
        }
    }

    /// The CA's problem, when the CA answered a request with one (a failed validation is an
    /// answer about challenges, not a refused request: none).
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            AcmeError::Ca { problem, .. }
            | AcmeError::RateLimited { problem, .. }
            | AcmeError::Gone { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn answer(status: u16, body: &str, retry_at: Option<OffsetDateTime>) -> Problem {
        Problem::from_answer(
            http::StatusCode::from_u16(status).expect("status"),
            body.as_bytes(),
            retry_at.map(std::time::SystemTime::from),
        )
    }

    /// The texts people saw when the retry time was written into the detail, byte for byte:
    /// `describe` now makes them from the values.
    #[test]
    fn descriptions_are_the_texts_of_the_rewritten_documents() {
        let at = datetime!(2026-11-23 12:00:30.25 UTC);
        let limited =
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders"}"#;
        let le = r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"limited, retry after 2026-11-23 13:00:00 UTC: see the docs"}"#;
        for (status, body, retry_at, text) in [
            (
                429,
                limited,
                Some(at),
                "rateLimited: too many new orders (retry after 2026-11-23T12:00:31Z)",
            ),
            (
                429,
                le,
                Some(datetime!(2026-11-23 13:00 UTC)),
                "rateLimited: limited, retry after 2026-11-23 13:00:00 UTC: see the docs",
            ),
            (503, "", None, "error: HTTP 503 Service Unavailable"),
            (
                429,
                "",
                Some(at),
                "error: HTTP 429 Too Many Requests (retry after 2026-11-23T12:00:31Z)",
            ),
            (
                502,
                "<html>\n<h1>Bad gateway</h1></html>",
                None,
                "error: HTTP 502 Bad Gateway: <html><h1>Bad gateway</h1></html>",
            ),
            (500, "", None, "error: HTTP 500 Internal Server Error"),
            (
                400,
                r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"no","subproblems":[{"type":"urn:ietf:params:acme:error:caa","detail":"a.example: CAA"}]}"#,
                None,
                "rejectedIdentifier: no; a.example: CAA",
            ),
            (
                400,
                r#"{"type":"urn:ietf:params:acme:error:malformed"}"#,
                None,
                "malformed: (no detail)",
            ),
        ] {
            assert_eq!(answer(status, body, retry_at).describe(), text, "{body}");
        }
    }

    #[test]
    fn error_answers_keep_the_cas_document_and_name_the_status() {
        let p = answer(404, "", None);
        assert_eq!(
            (p.status, p.detail.as_deref()),
            (Some(404), Some("HTTP 404 Not Found"))
        );
        let p = answer(
            400,
            r#"{"type":"urn:ietf:params:acme:error:malformed","detail":"bad"}"#,
            None,
        );
        assert!(p.is("urn:ietf:params:acme:error:malformed"));
        assert_eq!((p.status, p.detail.as_deref()), (Some(400), Some("bad")));
        assert_eq!(
            answer(429, r#"{"type":"x","status":503}"#, None).status,
            Some(503),
            "the CA's own status is kept"
        );
        assert!(
            answer(500, &"x".repeat(10_000), None)
                .detail
                .is_some_and(|d| d.len() < 300)
        );
        // Found by the problem fuzz target: fields of the wrong type are no problem document.
        for body in [
            r#"{"type": 7, "detail": ["x"]}"#,
            r#"{"type":"urn:ietf:params:acme:error:malformed","status":"400"}"#,
            r#"{"detail":"bad","subproblems":{"a":1}}"#,
        ] {
            let p = answer(400, body, None);
            assert_eq!(p.status, Some(400), "{body}");
            assert!(
                p.detail.is_some_and(|d| d.starts_with("HTTP 400")),
                "{body}"
            );
        }
    }

    /// Regression: the class of an error and its retry time were read back out of its text,
    /// so rewording a detail (or a context) could change backoff. They come from the values.
    #[test]
    fn rewording_a_message_cannot_change_the_class_or_the_retry_time() {
        let at = datetime!(2030-01-01 00:00 UTC);
        let problem = |kind: &str, status: u16, detail: &str, retry_at| Problem {
            kind: Some(kind.to_owned()),
            detail: Some(detail.to_owned()),
            status: Some(status),
            subproblems: Vec::new(),
            retry_at,
        };
        let limited = "urn:ietf:params:acme:error:rateLimited";
        let unauthorized = "urn:ietf:params:acme:error:unauthorized";
        for detail in [
            "too many orders",
            "retry after 2099-01-01T00:00:00Z",
            "rate limited; retry after never",
            "",
        ] {
            for context in ["new order", "retry after 2001-01-01T00:00:00Z"] {
                let context = context.to_owned();
                let e = AcmeError::RateLimited {
                    context: context.clone(),
                    problem: problem(limited, 429, detail, Some(at)),
                };
                assert_eq!(
                    e.class(),
                    ErrorClass::RateLimited { retry_at: Some(at) },
                    "{e}"
                );
                let e = AcmeError::Ca {
                    context: context.clone(),
                    problem: problem(unauthorized, 403, detail, None),
                };
                assert_eq!(e.class(), ErrorClass::Ca { retry_at: None }, "{e}");
                let e = AcmeError::Other(anyhow::anyhow!("{context}: rateLimited: {detail}"));
                assert_eq!(e.class(), ErrorClass::Local, "{e}");
                let e = AcmeError::Validation {
                    failed: vec![FailedChallenge {
                        identifier: context.clone(),
                        problem: problem(limited, 429, detail, Some(at)),
                    }],
                };
                assert_eq!(e.class(), ErrorClass::Ca { retry_at: None }, "{e}");
                assert!(e.problem().is_none(), "{e}");
            }
        }
    }

    /// A failed validation became a value (it was `Refused(text)`): its message is the text
    /// the adapter wrote before, byte for byte, and it backs off as that did.
    #[test]
    fn a_failed_validation_reads_as_the_text_it_replaced() {
        let challenge = |identifier: &str, kind: &str, detail: &str, subproblems| FailedChallenge {
            identifier: identifier.to_owned(),
            problem: Problem {
                kind: Some(format!("{ACME_ERROR}{kind}")),
                detail: Some(detail.to_owned()),
                status: Some(403),
                subproblems,
                retry_at: None,
            },
        };
        for (failed, text) in [
            (
                vec![],
                "the order became invalid (the CA gave no reason)".to_owned(),
            ),
            (
                vec![challenge(
                    "a.example",
                    "unauthorized",
                    "no token at /x",
                    vec![],
                )],
                "validation failed: a.example: unauthorized: no token at /x".to_owned(),
            ),
            (
                vec![
                    challenge("a.example", "dns", "NXDOMAIN", vec![]),
                    challenge(
                        "*.b.example",
                        "caa",
                        "CAA forbids",
                        vec![Some("b.example: CAA".to_owned()), None],
                    ),
                ],
                "validation failed: a.example: dns: NXDOMAIN; \
                 *.b.example: caa: CAA forbids; b.example: CAA; "
                    .to_owned(),
            ),
            (
                vec![challenge(
                    "c.example",
                    "connection",
                    &"é".repeat(2000),
                    vec![],
                )],
                format!(
                    "validation failed: c.example: connection: {}",
                    "é".repeat(MAX_PROBLEM_TEXT - "connection: ".len())
                ),
            ),
        ] {
            let e = AcmeError::Validation { failed };
            assert_eq!(e.to_string(), text);
            assert_eq!(e.class(), AcmeError::Refused(text).class());
        }
    }

    #[test]
    fn refusals_are_found_in_instant_acme_errors() {
        let p = answer(
            429,
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"x"}"#,
            Some(datetime!(2030-01-01 00:00 UTC)),
        );
        let e = instant_acme::Error::Other(Box::new(Refusal(p.clone())));
        assert_eq!(problem_of(&e), Some(p));
        assert_eq!(problem_of(&instant_acme::Error::Str("x")), None);
        let api: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many certificates: retry after 2026-11-23T07:00:00Z",
            "status": 429,
        }))
        .expect("problem");
        assert_eq!(
            problem_of(&instant_acme::Error::Api(api)).and_then(|p| p.retry_at),
            Some(datetime!(2026-11-23 07:00 UTC)),
            "an order's rateLimited error gives its time in the detail only"
        );
    }
}
