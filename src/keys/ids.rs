//! acmetool's key and certificate ids, computed exactly as acmetool 0.2.2 does (reference
//! §1.3): lowercase, unpadded RFC 4648 base32 of a SHA-256, 52 characters of `[a-z2-7]`.

use aws_lc_rs::digest;

/// Length of a key or certificate id.
pub const ID_LEN: usize = 52;

fn base32_sha256(data: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, data);
    data_encoding::BASE32_NOPAD
        .encode(hash.as_ref())
        .to_ascii_lowercase()
}

/// Key id: base32(SHA-256(DER SubjectPublicKeyInfo)).
pub fn key_id(spki_der: &[u8]) -> String {
    base32_sha256(spki_der)
}

/// Certificate id: base32(SHA-256(the exact `url` string)).
pub fn cert_id(url: &str) -> String {
    base32_sha256(url.as_bytes())
}

/// acmetool's "well-formed id" check: `^[a-z0-9]{52}$`.
pub fn is_well_formed_id(s: &str) -> bool {
    s.len() == ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_52_lowercase_base32() {
        let id = cert_id("https://127.0.0.1:14000/my-order/abc");
        assert_eq!(id.len(), ID_LEN);
        assert!(is_well_formed_id(&id));
        assert!(id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')));
    }

    #[test]
    fn cert_id_known_value() {
        // base32(sha256("")) — a fixed point to catch encoding changes.
        assert_eq!(
            cert_id(""),
            "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq"
        );
    }

    #[test]
    fn well_formed_check() {
        assert!(!is_well_formed_id("short"));
        assert!(!is_well_formed_id(&"A".repeat(52)));
        assert!(is_well_formed_id(&"a".repeat(52)));
    }
}
