//! Names in the state directory's layout that acmetool derives from other values: account
//! directories are named after the directory URL, query-escaped the way Go's
//! `url.QueryEscape` does it, so that a state directory copied from acmetool is found by the
//! same names (reference §1.3).

/// Go's `url.QueryEscape` with lowercase hex, as acmetool applies it.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The `accounts/<urlpart>` directory name for an ACME directory URL.
pub fn account_url_part(directory_url: &str) -> Result<String, url::ParseError> {
    let u = url::Url::parse(directory_url)?;
    let serialised = u.as_str();
    let without_scheme = serialised
        .split_once("://")
        .map_or(serialised, |(_, rest)| rest);
    // acmetool drops the path when it is exactly "/".
    let trimmed = if u.path() == "/" && u.query().is_none() && u.fragment().is_none() {
        without_scheme.strip_suffix('/').unwrap_or(without_scheme)
    } else {
        without_scheme
    };
    let escaped = query_escape(trimmed);
    Ok(if u.scheme() == "http" {
        format!("http:{escaped}")
    } else {
        escaped
    })
}

/// Decodes an `accounts/<urlpart>` name back to its directory URL.
pub fn directory_url_from_part(part: &str) -> Option<String> {
    let (scheme, rest) = match part.strip_prefix("http:") {
        Some(rest) => ("http", rest),
        None => ("https", part),
    };
    let decoded = query_unescape(rest)?;
    if decoded.is_empty() {
        return None;
    }
    let url = format!("{scheme}://{decoded}");
    let parsed = url::Url::parse(&url).ok()?;
    // Re-serialise so a bare host gains its "/" path, as acmetool does.
    Some(if decoded.contains('/') {
        url
    } else {
        parsed.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_parts_match_acmetool() {
        let table = [
            (
                "https://acme-v02.api.letsencrypt.org/directory",
                "acme-v02.api.letsencrypt.org%2fdirectory",
            ),
            ("https://127.0.0.1:14000/dir", "127.0.0.1%3a14000%2fdir"),
            ("https://example.org/", "example.org"),
            (
                "http://127.0.0.1:4001/directory",
                "http:127.0.0.1%3a4001%2fdirectory",
            ),
        ];
        for (url, part) in table {
            assert_eq!(account_url_part(url).as_deref(), Ok(part), "{url}");
        }
    }

    #[test]
    fn account_parts_round_trip() {
        for url in [
            "https://acme-v02.api.letsencrypt.org/directory",
            "https://127.0.0.1:14000/dir",
            "http://127.0.0.1:4001/directory",
        ] {
            let part = account_url_part(url).expect("valid URL");
            assert_eq!(directory_url_from_part(&part).as_deref(), Some(url));
        }
        assert_eq!(
            directory_url_from_part("example.org").as_deref(),
            Some("https://example.org/")
        );
        assert_eq!(directory_url_from_part("%zz"), None);
    }
}
