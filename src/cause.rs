//! Errors as one line an operator can act on: the whole chain of causes, each part said once,
//! in words.
//!
//! The network stack nests errors several deep, and its outer layers say little:
//! hyper-util's client reports every failed connection as "client error (Connect)", its
//! connector adds "dns error" or "tcp connect error", and the part that matters — the name
//! did not resolve, the CA's certificate expired — sits at the bottom, inside an
//! `io::Error`. [`render`] walks `source()` to the bottom, drops the wrappers that only
//! repeat what a deeper error says, names DNS and TLS failures plainly, and leaves out any
//! part the line already contains.

use std::error::Error;

use time::OffsetDateTime;

/// Renders `e` with its causes, outermost first, joined by `": "`.
pub fn render(e: &anyhow::Error) -> String {
    render_dyn(e.as_ref())
}

/// [`render`] for any error.
pub fn render_dyn(e: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        next = err.source();
        let part = match describe(err, next.is_some()) {
            Part::Text(t) => t,
            Part::Skip => continue,
            Part::Last(t) => {
                push(&mut parts, t);
                break;
            }
        };
        push(&mut parts, part);
    }
    if parts.is_empty() {
        // Every part was a wrapper: say what there is rather than nothing.
        return e.to_string();
    }
    parts.join(": ")
}

/// Adds `part` unless the line already says it.
fn push(parts: &mut Vec<String>, part: String) {
    let part = without_os_error(part.trim());
    if part.is_empty() {
        return;
    }
    let said = parts.join(": ").to_lowercase();
    // "GET <url>" adds nothing after a part that named the URL.
    let bare = ["GET ", "HEAD ", "POST "]
        .iter()
        .find_map(|m| part.strip_prefix(m))
        .unwrap_or(&part);
    if said.contains(&part.to_lowercase()) || (bare != part && said.contains(&bare.to_lowercase()))
    {
        return;
    }
    parts.push(part);
}

/// What one error of the chain contributes.
enum Part {
    /// This text, then its cause.
    Text(String),
    /// Nothing: a deeper error says it better.
    Skip,
    /// This text, and nothing deeper (it already says what its causes would).
    Last(String),
}

/// Wrappers of the HTTP client that only say "something below failed".
const WRAPPERS: [&str; 4] = [
    "client error (Connect)",
    "dns error",
    "tcp connect error",
    "tcp open error",
];

fn describe(err: &(dyn Error + 'static), has_source: bool) -> Part {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Part::Last(tls_error(tls));
    }
    if let Some(mut io) = err.downcast_ref::<std::io::Error>() {
        // A TLS failure comes as an io::Error holding one (sometimes two deep) that holds
        // the rustls error, which `source()` skips.
        while let Some(inner) = io.get_ref() {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Part::Last(tls_error(tls));
            }
            match inner.downcast_ref::<std::io::Error>() {
                Some(deeper) => io = deeper,
                None => break,
            }
        }
        return Part::Text(io_error(io));
    }
    let text = err.to_string();
    if has_source && WRAPPERS.contains(&text.as_str()) {
        return Part::Skip;
    }
    if let Some(rest) = text.strip_prefix("failed to lookup address information: ") {
        return Part::Text(dns_failure(rest));
    }
    Part::Text(text)
}

/// `text` without the `(os error N)` an I/O error's message ends with.
fn without_os_error(text: &str) -> String {
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text.to_owned(),
    }
}

/// An I/O error without its `(os error N)`, starting in lower case like the rest of the line.
fn io_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    if let Some(rest) = text.strip_prefix("failed to lookup address information: ") {
        return dns_failure(rest);
    }
    let text = without_os_error(&text);
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(text.chars().skip(1)).collect()
        }
        _ => text,
    }
}

/// getaddrinfo's message, as an operator reads it.
fn dns_failure(detail: &str) -> String {
    let plain = match detail {
        "Name or service not known" | "nodename nor servname provided, or not known" => {
            "no such host"
        }
        "No address associated with hostname" => "the name has no address",
        "Temporary failure in name resolution" => "no answer from the DNS resolver",
        other => other,
    };
    format!("DNS lookup failed: {plain}")
}

fn tls_error(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let when = |t: &rustls::pki_types::UnixTime| {
        i64::try_from(t.as_secs())
            .ok()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "?".to_owned())
    };
    let text = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired => "certificate expired".to_owned(),
            C::ExpiredContext { time, not_after } => format!(
                "certificate expired (valid until {}, now {})",
                when(not_after),
                when(time)
            ),
            C::NotValidYet => "certificate not valid yet (is the clock right?)".to_owned(),
            C::NotValidYetContext { time, not_before } => format!(
                "certificate not valid yet (valid from {}, now {}: is the clock right?)",
                when(not_before),
                when(time)
            ),
            C::UnknownIssuer => {
                "certificate issued by an unknown CA (not in the system's trust store or request.provider-ca-bundle)"
                    .to_owned()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "certificate not valid for this host name".to_owned()
            }
            C::Revoked => "certificate revoked".to_owned(),
            C::BadSignature => "certificate with a bad signature".to_owned(),
            _ => e.to_string(),
        },
        rustls::Error::AlertReceived(alert) => format!("the server refused the handshake ({alert:?})"),
        _ => e.to_string(),
    };
    format!("TLS: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{Context, anyhow};

    #[test]
    fn wrappers_go_and_the_cause_stays_once() {
        let dns = std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        );
        let err = anyhow::Error::new(dns)
            .context("dns error")
            .context("client error (Connect)")
            .context("connecting to a.example.org")
            .context("self-test of http://a.example.org/x");
        assert_eq!(
            render(&err),
            "self-test of http://a.example.org/x: connecting to a.example.org: DNS lookup failed: no such host"
        );
    }

    #[test]
    fn tls_failures_are_named() {
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                1_800_000_000,
            )),
            not_after: rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(1_700_000_000),
            ),
        });
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, expired);
        let err = anyhow::Error::new(io)
            .context("client error (Connect)")
            .context("GET https://ca.example/dir")
            .context("CA https://ca.example/dir");
        assert_eq!(
            render(&err),
            "CA https://ca.example/dir: TLS: certificate expired (valid until 2023-11-14T22:13:20Z, now 2027-01-15T08:00:00Z)"
        );
    }

    #[test]
    fn os_error_numbers_and_repeats_are_dropped() {
        let refused = std::io::Error::from_raw_os_error(111);
        let err = anyhow::Error::new(refused)
            .context("tcp connect error")
            .context("client error (Connect)")
            .context("POST https://ca.example/new-order");
        assert_eq!(
            render(&err),
            "POST https://ca.example/new-order: connection refused"
        );
        let err = anyhow!("the CA said no").context("the CA said no");
        assert_eq!(render(&err), "the CA said no");
        // A wrapper with nothing below is still said.
        assert_eq!(
            render(&anyhow!("client error (Connect)")),
            "client error (Connect)"
        );
        let r: Result<(), _> = Err(anyhow!("inner")).context("outer");
        assert_eq!(render(&r.expect_err("error")), "outer: inner");
    }
}
