//! What acmekeep accepts from a CA before instant-acme or hyper sees it.
//!
//! The CA is untrusted input, and instant-acme trusts it in two places that would cost the
//! whole run: it builds requests from the directory's URLs with `expect` (a `newNonce` that
//! is not a URI panics, and release builds abort on a panic), and it adds a `Retry-After` of
//! delay-seconds to the clock unchecked (a large one overflows, another panic: bounded in
//! [`super::http`]). So every URL the CA hands out — the directory's resources, the order,
//! authorization, challenge, finalize and certificate URLs, alternate links, `renewalInfo` —
//! is vetted here first.
//!
//! A URL from the CA must be an absolute http(s) URL without user information, on the same
//! origin (scheme, host, port) as the directory: acmekeep signs a request to each, and a CA
//! is no reason to send one elsewhere — to another server, or to a service on this machine's
//! loopback. Every CA we know of serves all its resources from its directory's origin.

/// Longest URL accepted from the CA (real ones are well under 200 bytes).
pub const MAX_URL: usize = 4096;

/// Why a URL from the CA is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the CA's URL {shown:?} is refused: {reason}")]
pub struct UrlRefused {
    /// The URL, made safe for one log line (control characters dropped, bounded).
    pub shown: String,
    /// What is wrong with it.
    pub reason: String,
}

fn refused(url: &str, reason: impl Into<String>) -> UrlRefused {
    UrlRefused {
        shown: loggable(url),
        reason: reason.into(),
    }
}

/// Text from the CA made safe for one log line: no control characters, at most 200 of them.
pub fn loggable(text: &str) -> String {
    let mut s: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if text.chars().filter(|c| !c.is_control()).nth(200).is_some() {
        s.push('…');
    }
    s
}

/// The directory URL, parsed: what every other URL of the CA is compared with.
pub fn directory_url(url: &str) -> Result<url::Url, UrlRefused> {
    let parsed = absolute(url)?;
    Ok(parsed)
}

/// An absolute http(s) URL that hyper can request as it is written.
fn absolute(url: &str) -> Result<url::Url, UrlRefused> {
    if url.len() > MAX_URL {
        return Err(refused(url, format!("longer than {MAX_URL} bytes")));
    }
    let parsed = url::Url::parse(url).map_err(|e| refused(url, format!("not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(refused(url, "not an http(s) URL"));
    }
    if parsed.host().is_none() {
        return Err(refused(url, "it names no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refused(url, "it carries user information"));
    }
    // instant-acme and hyper take the text as it is, not as the url crate normalises it.
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refused(url, "not a URI an HTTP request can be made to"));
    }
    match url.parse::<http::Uri>() {
        Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => Ok(parsed),
        _ => Err(refused(url, "not a URI an HTTP request can be made to")),
    }
}

/// Checks a URL the CA handed out against its directory's URL (see the module docs).
pub fn ca_url(url: &str, directory: &url::Url) -> Result<(), UrlRefused> {
    let parsed = absolute(url)?;
    if parsed.origin() != directory.origin() {
        return Err(refused(
            url,
            format!(
                "it is not on the origin of the CA's directory ({})",
                directory.origin().ascii_serialization()
            ),
        ));
    }
    Ok(())
}

/// Why a directory document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryRefused {
    /// Not a JSON object.
    #[error("the directory at {0} is not a JSON object")]
    NotAnObject(String),
    /// A resource RFC 8555 §7.1.1 requires is missing.
    #[error("the directory at {url} has no {field}")]
    Missing {
        /// The directory URL.
        url: String,
        /// The missing field.
        field: &'static str,
    },
    /// A resource is not a string.
    #[error("the directory at {url} names {field} with a value that is not a URL")]
    NotText {
        /// The directory URL.
        url: String,
        /// The field.
        field: String,
    },
    /// A resource's URL is refused.
    #[error("the directory at {url} names {field}")]
    BadUrl {
        /// The directory URL.
        url: String,
        /// The field.
        field: String,
        /// Why its URL is refused.
        #[source]
        source: UrlRefused,
    },
}

/// Resources a directory must name (RFC 8555 §7.1.1; instant-acme needs these three).
const REQUIRED: [&str; 3] = ["newNonce", "newAccount", "newOrder"];

/// Checks a directory document fetched from `directory`: a JSON object naming at least the
/// resources instant-acme needs, and every resource (any top-level member but `meta`) a URL
/// [`ca_url`] accepts. `meta` holds no URL acmekeep requests (the terms of service and the
/// website are only shown).
pub fn directory(body: &[u8], directory: &url::Url) -> Result<(), DirectoryRefused> {
    let shown = || loggable(directory.as_str());
    let Ok(serde_json::Value::Object(doc)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return Err(DirectoryRefused::NotAnObject(shown()));
    };
    for field in REQUIRED {
        if !doc.contains_key(field) {
            return Err(DirectoryRefused::Missing {
                url: shown(),
                field,
            });
        }
    }
    for (field, value) in &doc {
        if field == "meta" {
            continue;
        }
        let Some(url) = value.as_str() else {
            return Err(DirectoryRefused::NotText {
                url: shown(),
                field: loggable(field),
            });
        };
        ca_url(url, directory).map_err(|source| DirectoryRefused::BadUrl {
            url: shown(),
            field: loggable(field),
            source,
        })?;
    }
    Ok(())
}

/// Checks the URLs an ACME object from the CA names — an order's `authorizations`,
/// `finalize` and `certificate`, an authorization's challenge `url`s, an account's `orders`
/// (RFC 8555 §7.1.2-7.1.4) — and a `Location` header, before instant-acme follows any of
/// them. A body that is not such an object names none; instant-acme reports what it cannot
/// parse.
pub fn answer_urls(
    body: &[u8],
    location: Option<&str>,
    directory: &url::Url,
) -> Result<(), UrlRefused> {
    if let Some(l) = location {
        ca_url(l, directory)?;
    }
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Ok(());
    }
    let Ok(serde_json::Value::Object(doc)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return Ok(());
    };
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let mut urls: Vec<String> = Vec::new();
    for field in ["finalize", "certificate", "orders"] {
        urls.extend(doc.get(field).and_then(text));
    }
    if let Some(list) = doc.get("authorizations").and_then(|a| a.as_array()) {
        urls.extend(list.iter().filter_map(text));
    }
    if let Some(list) = doc.get("challenges").and_then(|a| a.as_array()) {
        urls.extend(list.iter().filter_map(|c| c.get("url").and_then(text)));
    }
    urls.iter().try_for_each(|u| ca_url(u, directory))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> url::Url {
        directory_url("https://ca.example/dir").expect("directory")
    }

    #[test]
    fn ca_urls_must_be_http_on_the_directory_origin() {
        let d = dir();
        for ok in [
            "https://ca.example/acme/order/1",
            "https://CA.example:443/acme/authz/2",
            "https://ca.example/cert/abc?x=1",
        ] {
            assert_eq!(ca_url(ok, &d), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "not a URL"),
            ("/relative/path", "not a URL"),
            ("ftp://ca.example/x", "not an http(s) URL"),
            ("file:///etc/passwd", "not an http(s) URL"),
            ("data:text/plain,x", "not an http(s) URL"),
            ("http://ca.example/x", "origin"),
            ("https://ca.example:8443/x", "origin"),
            ("https://elsewhere.example/x", "origin"),
            ("https://127.0.0.1:2379/v3/kv/deleterange", "origin"),
            ("https://user:pw@ca.example/x", "user information"),
            ("https://ca.example/a b", "not a URI"),
            ("https://ca.example/\u{e9}", "not a URI"),
            ("https://ca.example/x\n", "not a URI"),
        ] {
            let e = ca_url(bad, &d).expect_err(bad);
            assert!(e.reason.contains(why), "{bad:?}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let long = format!("https://ca.example/{}", "a".repeat(MAX_URL));
        assert!(
            ca_url(&long, &d)
                .expect_err("long")
                .reason
                .contains("longer")
        );
        assert!(loggable(&long).chars().count() <= 201);
    }

    #[test]
    fn directories_with_hostile_urls_are_refused() {
        let d = dir();
        let good = r#"{"newNonce":"https://ca.example/nonce","newAccount":"https://ca.example/acct","newOrder":"https://ca.example/order","revokeCert":"https://ca.example/revoke","keyChange":"https://ca.example/kc","renewalInfo":"https://ca.example/ari","meta":{"termsOfService":"https://elsewhere.example/tos.pdf","website":"not even a url"}}"#;
        assert_eq!(directory(good.as_bytes(), &d), Ok(()));
        let with = |field: &str, value: serde_json::Value| {
            let mut doc: serde_json::Value = serde_json::from_str(good).expect("json");
            doc[field] = value;
            directory(doc.to_string().as_bytes(), &d)
        };
        for (field, value) in [
            ("newNonce", "not a url"),
            ("newNonce", "ftp://ca.example/nonce"),
            ("newNonce", "https://ca.example/a b"),
            ("newAccount", "https://other.example/acct"),
            ("renewalInfo", "http://127.0.0.1/ari"),
            ("newAuthz", "gopher://ca.example/"),
        ] {
            let e = with(field, value.into()).expect_err(value);
            assert!(
                matches!(&e, DirectoryRefused::BadUrl { field: f, .. } if f == field),
                "{field}: {e}"
            );
        }
        assert!(matches!(
            with("newOrder", 7.into()),
            Err(DirectoryRefused::NotText { .. })
        ));
        let mut doc: serde_json::Value = serde_json::from_str(good).expect("json");
        doc.as_object_mut().expect("object").remove("newNonce");
        assert!(matches!(
            directory(doc.to_string().as_bytes(), &d),
            Err(DirectoryRefused::Missing {
                field: "newNonce",
                ..
            })
        ));
        for body in ["", "[]", "null", "{", "\"x\""] {
            assert!(
                matches!(
                    directory(body.as_bytes(), &d),
                    Err(DirectoryRefused::NotAnObject(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn urls_in_acme_objects_are_vetted() {
        let d = dir();
        let order = serde_json::json!({
            "status": "pending",
            "authorizations": ["https://ca.example/authz/1", "https://ca.example/authz/2"],
            "finalize": "https://ca.example/finalize/1",
            "certificate": "https://ca.example/cert/1",
        });
        let authz = serde_json::json!({
            "challenges": [{"type": "http-01", "url": "https://ca.example/chal/1", "token": "x"}],
        });
        for good in [&order, &authz] {
            assert_eq!(answer_urls(good.to_string().as_bytes(), None, &d), Ok(()));
        }
        assert_eq!(
            answer_urls(b"", Some("https://ca.example/order/1"), &d),
            Ok(())
        );
        let bad = |v: serde_json::Value| answer_urls(v.to_string().as_bytes(), None, &d);
        let mut o = order.clone();
        o["authorizations"][1] = "file:///etc/passwd".into();
        assert!(bad(o).is_err());
        for field in ["finalize", "certificate"] {
            let mut o = order.clone();
            o[field] = "https://elsewhere.example/x".into();
            assert!(bad(o).is_err(), "{field}");
        }
        let mut a = authz.clone();
        a["challenges"][0]["url"] = "http://127.0.0.1:9/".into();
        assert!(bad(a).is_err());
        assert!(answer_urls(b"", Some("gopher://x"), &d).is_err());
        // Not an object, or not JSON: nothing to vet here.
        for body in ["-----BEGIN CERTIFICATE-----", "[1]", "{", ""] {
            assert_eq!(answer_urls(body.as_bytes(), None, &d), Ok(()), "{body}");
        }
    }
}
