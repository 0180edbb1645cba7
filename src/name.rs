//! Identifiers as acmetool normalises them: validated once, at the edge.
//!
//! Every hostname that reaches the rest of the program (from `want`, a target file, or
//! anything else untrusted) has passed through [`Hostname::parse`], so later code can join it
//! into a `live/` path or put it in a CSR without re-checking. The rules are acmetool's
//! (lowercase, drop a trailing dot, IDNA to ASCII, keep a leading `*.`, labels of
//! `[a-z0-9_-]`) plus the DNS length limits acmetool forgot: those keep a hostile name from
//! producing an over-long path or a CSR the CA will reject anyway.

use std::fmt;

/// A normalised, validated DNS identifier (possibly a `*.` wildcard).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Hostname(String);

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid hostname {input:?}: {reason}")]
pub struct NameError {
    /// The name as it was given (truncated when very long).
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

impl Hostname {
    /// Normalises and validates `input`: a DNS name, or an IP address (RFC 8738), which is
    /// kept in its canonical text form (IPv6 compressed, lowercase).
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let err = |reason| NameError {
            input: input.chars().take(300).collect(),
            reason,
        };
        let trimmed = input.trim();
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(trimmed);
        if let Ok(ip) = unbracketed.parse::<std::net::IpAddr>() {
            return Ok(Self(ip.to_string()));
        }
        if trimmed.is_empty() {
            return Err(err("empty name"));
        }
        if trimmed.len() > 1024 {
            return Err(err("name is far too long"));
        }
        let lower = trimmed.to_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        let (wildcard, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower),
        };
        if rest.contains('*') {
            return Err(err(
                "a wildcard is only allowed as the whole first label (*.example.org)",
            ));
        }
        let ascii = if rest.is_ascii() {
            rest.to_owned()
        } else {
            idna::domain_to_ascii(rest).map_err(|_| err("not a valid internationalised name"))?
        };
        if ascii.is_empty() {
            return Err(err("empty name"));
        }
        for label in ascii.split('.') {
            if label.is_empty() {
                return Err(err("empty label (two dots in a row, or a leading dot)"));
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(err("a label is longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(err("labels may only contain a-z, 0-9, '-' and '_'"));
            }
        }
        let full = if wildcard {
            format!("*.{ascii}")
        } else {
            ascii
        };
        if full.len() > MAX_NAME_LEN {
            return Err(err("name is longer than 253 characters"));
        }
        Ok(Self(full))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for `*.example.org`.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The address, for an IP identifier (RFC 8738).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.0.parse().ok()
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Hostname {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hostname::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let ok = [
            ("Example.ORG", "example.org"),
            ("example.org.", "example.org"),
            (" a.b ", "a.b"),
            ("*.Wild.example.org", "*.wild.example.org"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("_dmarc.example.org", "_dmarc.example.org"),
            ("localhost", "localhost"),
        ];
        for (input, want) in ok {
            assert_eq!(
                Hostname::parse(input).map(|h| h.0),
                Ok(want.to_owned()),
                "{input}"
            );
        }
    }

    #[test]
    fn refusals_table() {
        let long_label = format!("{}.org", "a".repeat(64));
        let long_name = format!("{}org", "abcdefghi.".repeat(26));
        let bad = [
            "",
            ".",
            "a..b",
            ".a",
            "a.*.b",
            "foo*.example.org",
            "../etc",
            "a/b",
            "a b",
            "a:b",
            "a\0b",
            long_label.as_str(),
            long_name.as_str(),
        ];
        for input in bad {
            assert!(
                Hostname::parse(input).is_err(),
                "{input:?} should be refused"
            );
        }
    }

    #[test]
    fn ip_identifiers_are_canonical() {
        let table = [
            ("192.0.2.1", "192.0.2.1"),
            (" 2001:DB8:0:0::1 ", "2001:db8::1"),
            ("[::1]", "::1"),
        ];
        for (input, want) in table {
            let h = Hostname::parse(input).expect("valid");
            assert_eq!(h.as_str(), want);
            assert!(h.ip().is_some());
        }
        assert!(
            Hostname::parse("example.org")
                .expect("valid")
                .ip()
                .is_none()
        );
        assert!(
            Hostname::parse("300.1.1.1").is_ok(),
            "not an IP: a (numeric) DNS name"
        );
    }

    #[test]
    fn wildcard_flag() {
        assert!(Hostname::parse("*.a.b").expect("valid").is_wildcard());
        assert!(!Hostname::parse("a.b").expect("valid").is_wildcard());
    }
}
