//! Identifiers as acmetool normalises them: validated once, at the edge.
//!
//! Every hostname that reaches the rest of the program (from `want`, a target file, or
//! anything else untrusted) has passed through [`Hostname::parse`], so later code can join it
//! into a `live/` path, put it in a CSR or hand it to a hook as an argument without
//! re-checking. The rules are acmetool's (lowercase, drop a trailing dot, IDNA to ASCII, keep
//! a leading `*.`, labels of `[a-z0-9_-]`) plus what acmetool forgot and CAs refuse anyway:
//! the DNS length limits; no label beginning or ending with `-` (RFC 1123 §2.1 — and a name
//! beginning with `-` would reach a hook as an option); no reserved label with `--` in third
//! and fourth place other than a valid `xn--` A-label (RFC 5890 §2.3.1); and nothing an
//! address parser would read as an IPv4 address: a name whose last label is all digits
//! (RFC 1123 §2.1, RFC 3696 §2: no TLD is), or one made of one to four numbers in any form
//! `inet_aton` accepts (`127.1`, `0x7f.0.0.1`, `017700000001`). Let's Encrypt refuses all of
//! these too. (Underscores stay allowed, as acmetool allows them, for private CAs.)

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
        if let Some(reason) = ascii.split('.').find_map(label_error) {
            return Err(err(reason));
        }
        if ascii
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(err(
                "the last label is all digits (no top-level domain is; an IPv4 address?)",
            ));
        }
        if inet_aton_form(&ascii) {
            return Err(err(
                "it reads as an IPv4 address in the forms inet_aton accepts",
            ));
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

/// What is wrong with `label`, one label of an ASCII name (RFC 1035 with `_`, and RFC 5891's
/// rules for `--`), if anything.
fn label_error(label: &str) -> Option<&'static str> {
    if label.is_empty() {
        return Some("empty label (two dots in a row, or a leading dot)");
    }
    if label.len() > MAX_LABEL_LEN {
        return Some("a label is longer than 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Some("labels may only contain a-z, 0-9, '-' and '_'");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some("a label may not begin or end with '-'");
    }
    if label.get(2..4) == Some("--") {
        if !label.starts_with("xn--") {
            return Some(
                "labels with '--' in third and fourth place are reserved (only xn-- is used)",
            );
        }
        if !valid_a_label(label) {
            return Some("an xn-- label that is not valid punycode");
        }
    }
    None
}

/// Whether an `xn--` label is a valid A-label: it decodes, and encodes back to itself.
fn valid_a_label(label: &str) -> bool {
    let (unicode, result) = idna::domain_to_unicode(label);
    result.is_ok()
        && unicode != label
        && idna::domain_to_ascii(&unicode).is_ok_and(|back| back == label)
}

/// Whether `name` is one to four dot-separated numbers as C's `inet_aton` reads them
/// (decimal, octal with a leading 0, hex with 0x): such a name is an address to much
/// software, whatever DNS says.
fn inet_aton_form(name: &str) -> bool {
    let number = |part: &str| {
        if let Some(hex) = part.strip_prefix("0x") {
            hex.bytes().all(|b| b.is_ascii_hexdigit())
        } else {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())
        }
    };
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 4 && parts.iter().all(|p| number(p))
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
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b--c.example", "a-b--c.example"),
            ("0x7f.example", "0x7f.example"),
            ("1.2.3.example", "1.2.3.example"),
            ("123.example.com4", "123.example.com4"),
            ("_acme-challenge.a1.example", "_acme-challenge.a1.example"),
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
            // Option-like, or not a host name (RFC 1123).
            "-rf.example.org",
            "a.-b.org",
            "example-.org",
            "example.org-",
            "*.-x.example",
            // Read as IPv4 addresses by inet_aton, or an all-numeric TLD.
            "127.1",
            "0x7f.0.0.1",
            "0x7f000001",
            "017700000001",
            "1.2.3.4.5",
            "300.1.1.1",
            "example.123",
            "10.0.0.0x1",
            // Reserved LDH labels; xn-- labels must be valid punycode.
            "ab--cd.example",
            "xn--.example",
            "xn--zz-.example",
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
            Hostname::parse("300.1.1.1").is_err(),
            "not an IP, but no DNS name either"
        );
    }

    #[test]
    fn wildcard_flag() {
        assert!(Hostname::parse("*.a.b").expect("valid").is_wildcard());
        assert!(!Hostname::parse("a.b").expect("valid").is_wildcard());
    }
}
