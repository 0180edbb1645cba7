//! dns-account-01 (draft-ietf-acme-dns-account-label): dns-01 with a per-account label, so
//! several accounts (several machines) can validate one name at the same time without
//! removing each other's TXT records.
//!
//! The record is `_<label>._acme-challenge.<name>`, where the label is the first 10 octets of
//! SHA-256(account URL) in base32 (RFC 4648, standard alphabet), lower-cased: 16 characters,
//! no padding. The value is dns-01's (base64url of SHA-256 of the key authorization).

/// `_<label>` for the account at `account_url` (17 characters: `_` and 16 of `[a-z2-7]`).
pub fn account_label(account_url: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, account_url.as_bytes());
    let label = data_encoding::BASE32.encode(&digest.as_ref()[..10]);
    format!("_{}", label.to_ascii_lowercase())
}

/// `_<label>._acme-challenge.<base>` for an identifier (`*.` of a wildcard removed).
pub fn record_name(account_url: &str, identifier: &str) -> String {
    let base = identifier.strip_prefix("*.").unwrap_or(identifier);
    format!("{}._acme-challenge.{base}", account_label(account_url))
}

/// Whether `label` is an account label as [`account_label`] makes them.
pub fn is_account_label(label: &str) -> bool {
    label.len() == 17
        && label.starts_with('_')
        && label[1..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_the_draft_and_the_cas() {
        // The draft's own example, Boulder's test and a Pebble 2.10 account.
        for (url, label) in [
            (
                "https://example.com/acme/acct/ExampleAccount",
                "_ujmmovf2vn55tgye",
            ),
            ("http://localhost:4000/acme/acct/1", "_vkbgbqfhr6yv2asd"),
            (
                "https://127.0.0.1:14400/my-account/454a292520429d7f",
                "_fhbzhk6nlfirwwqw",
            ),
        ] {
            assert_eq!(account_label(url), label, "{url}");
            assert!(is_account_label(label));
        }
        assert_eq!(
            record_name("http://localhost:4000/acme/acct/1", "*.a.example"),
            "_vkbgbqfhr6yv2asd._acme-challenge.a.example"
        );
        for bad in [
            "_short",
            "_VKBGBQFHR6YV2ASD",
            "_vkbgbqfhr6yv2as1",
            "vkbgbqfhr6yv2asdx",
        ] {
            assert!(!is_account_label(bad), "{bad}");
        }
    }
}
