//! Signing with account keys instant-acme cannot use (RSA and P-384), and the requests it
//! cannot make (External Account Binding with HS384/HS512 or with a foreign key, key rollover
//! to a key we chose).
//!
//! acmetool creates its account key with the default target's key type, so most acmetool
//! state directories hold an RSA account key, some a P-384 one. instant-acme 0.8 signs only
//! with P-256. Rather than fork the protocol crate, the HTTP layer (its documented plug-in
//! point) re-signs each JWS body it sends: the protected header gets our `alg` (and our `jwk`
//! where the header carries a key), and the signature is made with the real key. The
//! placeholder P-256 key instant-acme holds never signs anything the CA sees.
//!
//! The same plug-in point rewrites payloads before they are (re-)signed:
//! [`bind_external_account`] adds the `externalAccountBinding` of RFC 8555 §7.3.4 to the
//! newAccount request. instant-acme's own binding MACs only with HS256, over the JWK of the key
//! it holds (the placeholder, for a foreign key), and only for a key it generates itself, which
//! could then be saved only after the CA had bound it; here the key is ours and saved first.
//! [`replace_key_change`] replaces the inner JWS of a keyChange request (RFC 8555 §7.3.5) by one
//! made with the new key acmekeep generated and saved beforehand: instant-acme generates the
//! new key itself and hands it out only after the CA has switched to it, and puts its
//! placeholder's JWK in `oldKey` for a foreign key.

use anyhow::{Context, Result, anyhow, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use data_encoding::BASE64URL_NOPAD;
use rustls_pki_types::PrivateKeyDer;
use serde_json::{Map, Value, json};

use super::{EabCredentials, MacAlgorithm};

/// An account key that is not ECDSA P-256.
pub enum ForeignKey {
    /// RSA, signing RS256.
    Rsa(RsaKeyPair),
    /// ECDSA P-384, signing ES384.
    P384(EcdsaKeyPair),
}

impl std::fmt::Debug for ForeignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ForeignKey::Rsa(_) => "ForeignKey::Rsa",
            ForeignKey::P384(_) => "ForeignKey::P384",
        })
    }
}

impl ForeignKey {
    /// Parses a key that needs re-signing; `Ok(None)` for P-256 (instant-acme signs those).
    pub fn from_der(der: &PrivateKeyDer<'_>) -> Result<Option<Self>> {
        let bytes = der.secret_der();
        let p256 = match der {
            PrivateKeyDer::Pkcs8(_) | PrivateKeyDer::Sec1(_) => EcdsaKeyPair::from_private_key_der(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                bytes,
            )
            .is_ok(),
            _ => false,
        };
        if p256 {
            return Ok(None);
        }
        if let Ok(k) =
            EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, bytes)
        {
            return Ok(Some(ForeignKey::P384(k)));
        }
        let rsa = match der {
            PrivateKeyDer::Pkcs1(_) => RsaKeyPair::from_der(bytes),
            PrivateKeyDer::Pkcs8(_) => RsaKeyPair::from_pkcs8(bytes),
            _ => bail!("unsupported account key type (use RSA, ECDSA P-256 or P-384)"),
        };
        match rsa {
            Ok(k) => Ok(Some(ForeignKey::Rsa(k))),
            Err(e) => bail!("unsupported account key (use RSA, ECDSA P-256 or P-384): {e}"),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            ForeignKey::Rsa(_) => "RS256",
            ForeignKey::P384(_) => "ES384",
        }
    }

    /// The public key as a JWK with its members in RFC 7638 (thumbprint) order.
    pub fn jwk(&self) -> Value {
        let b64 = |b: &[u8]| BASE64URL_NOPAD.encode(b);
        match self {
            ForeignKey::Rsa(k) => {
                let public = k.public_key();
                json!({
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                })
            }
            ForeignKey::P384(k) => {
                let point = k.public_key().as_ref();
                // Uncompressed point: 0x04 || x || y.
                let (x, y) = point[1..].split_at(48);
                json!({ "crv": "P-384", "kty": "EC", "x": b64(x), "y": b64(y) })
            }
        }
    }

    /// RFC 7638 thumbprint (base64url SHA-256 of the canonical JWK), used in key
    /// authorizations.
    pub fn thumbprint(&self) -> String {
        // serde_json's map is ordered by key, which is the canonical order here.
        let canonical = serde_json::to_vec(&self.jwk()).unwrap_or_default();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical);
        BASE64URL_NOPAD.encode(digest.as_ref())
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let rng = SystemRandom::new();
        match self {
            ForeignKey::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(|_| anyhow!("RSA signing failed"))?;
                Ok(sig)
            }
            ForeignKey::P384(k) => Ok(k
                .sign(&rng, msg)
                .map_err(|_| anyhow!("ECDSA signing failed"))?
                .as_ref()
                .to_vec()),
        }
    }

    /// Re-signs a flattened JWS JSON body (RFC 7515 §7.2.2) with this key.
    pub fn resign(&self, body: &[u8]) -> Result<Vec<u8>> {
        resign_with(body, self.alg(), &self.jwk(), |m| self.sign(m))
    }
}

/// Splits a flattened JWS JSON body into the object and its decoded protected header.
fn parse_jws(body: &[u8]) -> Result<(Map<String, Value>, Map<String, Value>)> {
    let jws: Map<String, Value> =
        serde_json::from_slice(body).context("JWS body is not a JSON object")?;
    let protected_b64 = jws
        .get("protected")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("JWS body has no protected header"))?;
    let protected = BASE64URL_NOPAD
        .decode(protected_b64.as_bytes())
        .context("JWS protected header is not base64url")?;
    let header: Map<String, Value> =
        serde_json::from_slice(&protected).context("JWS protected header is not JSON")?;
    Ok((jws, header))
}

/// The `url` of a JWS body's protected header: the request the body is for.
pub fn jws_url(body: &[u8]) -> Option<String> {
    let (_, header) = parse_jws(body).ok()?;
    header.get("url").and_then(Value::as_str).map(str::to_owned)
}

/// The decoded payload of a JWS body, as a JSON object.
fn jws_payload(jws: &Map<String, Value>) -> Result<Map<String, Value>> {
    let b64 = jws.get("payload").and_then(Value::as_str).unwrap_or("");
    let bytes = BASE64URL_NOPAD
        .decode(b64.as_bytes())
        .context("JWS payload is not base64url")?;
    serde_json::from_slice(&bytes).context("JWS payload is not a JSON object")
}

/// Replaces a JWS body's payload; the signature is stale until the body is re-signed.
fn set_payload(jws: &mut Map<String, Value>, payload: &Value) -> Result<()> {
    let b64 = BASE64URL_NOPAD.encode(&serde_json::to_vec(payload)?);
    jws.insert("payload".into(), Value::String(b64));
    Ok(())
}

/// Re-signs a flattened JWS body: `alg` set, `jwk` replaced where the header carries one,
/// the signature made by `sign` over the new header and the payload.
fn resign_with(
    body: &[u8],
    alg: &str,
    jwk: &Value,
    sign: impl Fn(&[u8]) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let (mut jws, mut header) = parse_jws(body)?;
    header.insert("alg".into(), Value::String(alg.into()));
    if header.contains_key("jwk") {
        header.insert("jwk".into(), jwk.clone());
    }
    let new_protected = BASE64URL_NOPAD.encode(&serde_json::to_vec(&header)?);
    let payload = jws
        .get("payload")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let signature = sign(format!("{new_protected}.{payload}").as_bytes())?;
    jws.insert("protected".into(), Value::String(new_protected));
    jws.insert(
        "signature".into(),
        Value::String(BASE64URL_NOPAD.encode(&signature)),
    );
    Ok(serde_json::to_vec(&jws)?)
}

/// Any account key acmekeep can hold (ECDSA P-256 or P-384, RSA), for the requests acmekeep
/// signs or re-signs itself.
pub enum AccountSigner {
    /// ECDSA P-256, signing ES256.
    P256(EcdsaKeyPair),
    /// RSA or P-384.
    Foreign(ForeignKey),
}

impl std::fmt::Debug for AccountSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountSigner::P256(_) => f.write_str("AccountSigner::P256"),
            AccountSigner::Foreign(k) => write!(f, "AccountSigner::{k:?}"),
        }
    }
}

impl AccountSigner {
    /// Parses an account private key (PKCS#1, SEC1 or PKCS#8).
    pub fn from_der(der: &PrivateKeyDer<'_>) -> Result<Self> {
        if let Some(foreign) = ForeignKey::from_der(der)? {
            return Ok(AccountSigner::Foreign(foreign));
        }
        let pair = EcdsaKeyPair::from_private_key_der(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_der(),
        )
        .map_err(|_| anyhow!("cannot read the P-256 account key"))?;
        Ok(AccountSigner::P256(pair))
    }

    /// The JWS `alg` this key signs with.
    pub fn alg(&self) -> &'static str {
        match self {
            AccountSigner::P256(_) => "ES256",
            AccountSigner::Foreign(k) => k.alg(),
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        match self {
            AccountSigner::P256(k) => {
                let point = k.public_key().as_ref();
                // Uncompressed point: 0x04 || x || y.
                let (x, y) = point[1..].split_at(32);
                let b64 = |b: &[u8]| BASE64URL_NOPAD.encode(b);
                json!({ "crv": "P-256", "kty": "EC", "x": b64(x), "y": b64(y) })
            }
            AccountSigner::Foreign(k) => k.jwk(),
        }
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        match self {
            AccountSigner::P256(k) => Ok(k
                .sign(&SystemRandom::new(), msg)
                .map_err(|_| anyhow!("ECDSA signing failed"))?
                .as_ref()
                .to_vec()),
            AccountSigner::Foreign(k) => k.sign(msg),
        }
    }

    /// Re-signs a flattened JWS JSON body with this key.
    pub fn resign(&self, body: &[u8]) -> Result<Vec<u8>> {
        resign_with(body, self.alg(), &self.jwk(), |m| self.sign(m))
    }
}

/// A POST-as-GET request body (RFC 8555 §6.3): a flattened JWS with the account URL as
/// `kid`, a fresh `nonce`, the target `url` and an empty payload, signed by the account key.
/// acmekeep sends these itself for what instant-acme cannot fetch (alternate chains).
pub fn post_as_get(signer: &AccountSigner, kid: &str, nonce: &str, url: &str) -> Result<Vec<u8>> {
    let header = json!({ "alg": signer.alg(), "kid": kid, "nonce": nonce, "url": url });
    let protected = BASE64URL_NOPAD.encode(&serde_json::to_vec(&header)?);
    let signature = signer.sign(format!("{protected}.").as_bytes())?;
    Ok(serde_json::to_vec(&json!({
        "protected": protected,
        "payload": "",
        "signature": BASE64URL_NOPAD.encode(&signature),
    }))?)
}

/// The External Account Binding JWS of RFC 8555 §7.3.4: the account key's JWK as payload,
/// `alg`/`kid`/`url` (and no nonce) in the protected header, MACed with the CA's key.
pub fn eab_jws(eab: &EabCredentials, url: &str, account_jwk: &Value) -> Result<Value> {
    let header = json!({ "alg": eab.algorithm.name(), "kid": eab.kid, "url": url });
    let protected = BASE64URL_NOPAD.encode(&serde_json::to_vec(&header)?);
    let payload = BASE64URL_NOPAD.encode(&serde_json::to_vec(account_jwk)?);
    let algorithm = match eab.algorithm {
        MacAlgorithm::Hs256 => aws_lc_rs::hmac::HMAC_SHA256,
        MacAlgorithm::Hs384 => aws_lc_rs::hmac::HMAC_SHA384,
        MacAlgorithm::Hs512 => aws_lc_rs::hmac::HMAC_SHA512,
    };
    let key = aws_lc_rs::hmac::Key::new(algorithm, &eab.hmac_key);
    let tag = aws_lc_rs::hmac::sign(&key, format!("{protected}.{payload}").as_bytes());
    Ok(json!({
        "protected": protected,
        "payload": payload,
        "signature": BASE64URL_NOPAD.encode(tag.as_ref()),
    }))
}

/// Adds an `externalAccountBinding` for `account` to a newAccount request body and re-signs
/// it with `account`.
pub fn bind_external_account(
    body: &[u8],
    eab: &EabCredentials,
    account: &AccountSigner,
) -> Result<Vec<u8>> {
    let (mut jws, header) = parse_jws(body)?;
    let url = header
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the newAccount request has no url"))?;
    let mut payload = jws_payload(&jws)?;
    payload.insert(
        "externalAccountBinding".into(),
        eab_jws(eab, url, &account.jwk())?,
    );
    set_payload(&mut jws, &Value::Object(payload))?;
    account.resign(&serde_json::to_vec(&jws)?)
}

/// Replaces the payload of a keyChange request body (signed by the account's current key,
/// `old`) by an inner JWS signed with `new` (RFC 8555 §7.3.5: `account` from the outer `kid`,
/// `oldKey` the current key's JWK, the same `url`, no nonce), and re-signs it with `old`.
pub fn replace_key_change(
    body: &[u8],
    old: &AccountSigner,
    new: &AccountSigner,
) -> Result<Vec<u8>> {
    let (mut jws, header) = parse_jws(body)?;
    let text = |name: &str| {
        header
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the keyChange request has no {name:?} header"))
    };
    let (url, account) = (text("url")?, text("kid")?);
    let inner_header = json!({ "alg": new.alg(), "jwk": new.jwk(), "url": url });
    let inner_protected = BASE64URL_NOPAD.encode(&serde_json::to_vec(&inner_header)?);
    let inner_payload = BASE64URL_NOPAD.encode(&serde_json::to_vec(
        &json!({ "account": account, "oldKey": old.jwk() }),
    )?);
    let signature = new.sign(format!("{inner_protected}.{inner_payload}").as_bytes())?;
    let inner = json!({
        "protected": inner_protected,
        "payload": inner_payload,
        "signature": BASE64URL_NOPAD.encode(&signature),
    });
    set_payload(&mut jws, &inner)?;
    old.resign(&serde_json::to_vec(&jws)?)
}

/// The public part of an account key as an RFC 7517 JWK: what an RFC 7638 thumbprint is made
/// of. Covers every account key acmekeep can hold (ECDSA P-256 and P-384, RSA); byte strings
/// are kept unencoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicJwk {
    /// `kty: RSA`: modulus and public exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// `kty: EC`: curve name (`P-256` or `P-384`) and the point's coordinates, each exactly as
    /// long as the curve's field.
    Ec {
        /// `P-256` or `P-384`.
        crv: &'static str,
        /// x coordinate.
        x: Vec<u8>,
        /// y coordinate.
        y: Vec<u8>,
    },
}

/// Coordinate length of a supported curve, by JWK name.
pub fn curve_len(crv: &str) -> Option<(&'static str, usize)> {
    match crv {
        "P-256" => Some(("P-256", 32)),
        "P-384" => Some(("P-384", 48)),
        _ => None,
    }
}

fn strip_leading_zeros(b: &[u8]) -> Vec<u8> {
    let start = b
        .iter()
        .position(|&x| x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    b[start..].to_vec()
}

/// Decodes a base64url JWK member (RFC 7515 §2: no padding; stray `=` are tolerated).
pub fn b64url_member(jwk: &Value, name: &str) -> Result<Vec<u8>> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the JWK has no {name:?} member"))?;
    BASE64URL_NOPAD
        .decode(text.trim_end_matches('=').as_bytes())
        .map_err(|e| anyhow!("the JWK member {name:?} is not base64url: {e}"))
}

impl PublicJwk {
    /// The public key of an ECDSA key pair on `crv`.
    fn from_ec_point(crv: &'static str, point: &[u8]) -> Result<Self> {
        let (_, len) = curve_len(crv).ok_or_else(|| anyhow!("unsupported curve {crv}"))?;
        match point.split_first() {
            Some((4, xy)) if xy.len() == 2 * len => {
                let (x, y) = xy.split_at(len);
                Ok(PublicJwk::Ec {
                    crv,
                    x: x.to_vec(),
                    y: y.to_vec(),
                })
            }
            _ => bail!("not an uncompressed {crv} point"),
        }
    }

    /// The public JWK of an account private key: P-256 or P-384 (SEC1 or PKCS#8) or RSA
    /// (PKCS#1 or PKCS#8). Anything else is refused, naming what is supported.
    pub fn from_private_key(der: &PrivateKeyDer<'_>) -> Result<Self> {
        if let PrivateKeyDer::Pkcs8(_) | PrivateKeyDer::Sec1(_) = der {
            let bytes = der.secret_der();
            if let Ok(k) = EcdsaKeyPair::from_private_key_der(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                bytes,
            ) {
                return Self::from_ec_point("P-256", k.public_key().as_ref());
            }
        }
        match ForeignKey::from_der(der)? {
            Some(ForeignKey::P384(k)) => Self::from_ec_point("P-384", k.public_key().as_ref()),
            Some(ForeignKey::Rsa(k)) => {
                let public = k.public_key();
                Ok(PublicJwk::Rsa {
                    n: public.modulus().big_endian_without_leading_zero().to_vec(),
                    e: public.exponent().big_endian_without_leading_zero().to_vec(),
                })
            }
            None => bail!("unsupported account key (use RSA, ECDSA P-256 or P-384)"),
        }
    }

    /// Reads the public members of a JWK (public or private; other members are ignored).
    pub fn from_jwk(jwk: &Value) -> Result<Self> {
        match jwk.get("kty").and_then(Value::as_str) {
            Some("RSA") => {
                let n = strip_leading_zeros(&b64url_member(jwk, "n")?);
                let e = strip_leading_zeros(&b64url_member(jwk, "e")?);
                if n.len() < 2 || e.is_empty() || e == [0] {
                    bail!("the JWK's RSA modulus or exponent is empty");
                }
                Ok(PublicJwk::Rsa { n, e })
            }
            Some("EC") => {
                let name = jwk.get("crv").and_then(Value::as_str).unwrap_or("");
                let (crv, len) = curve_len(name).ok_or_else(|| {
                    anyhow!("unsupported JWK curve {name:?} (use P-256 or P-384)")
                })?;
                let (x, y) = (b64url_member(jwk, "x")?, b64url_member(jwk, "y")?);
                if x.len() != len || y.len() != len {
                    bail!("the JWK's {crv} coordinates must be {len} bytes each");
                }
                Ok(PublicJwk::Ec { crv, x, y })
            }
            Some(other) => bail!("unsupported JWK key type {other:?} (use RSA or EC)"),
            None => bail!("the JWK has no \"kty\" member"),
        }
    }

    /// The canonical JSON of RFC 7638 §3: only the required members, in lexicographic order,
    /// no whitespace. Built by hand so no JSON map ordering can change it.
    pub fn canonical_json(&self) -> String {
        let b64 = |b: &[u8]| BASE64URL_NOPAD.encode(b);
        match self {
            PublicJwk::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n))
            }
            PublicJwk::Ec { crv, x, y } => format!(
                r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(x),
                b64(y)
            ),
        }
    }

    /// RFC 7638 thumbprint: base64url (unpadded) SHA-256 of [`PublicJwk::canonical_json`].
    pub fn thumbprint(&self) -> String {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.canonical_json().as_bytes());
        BASE64URL_NOPAD.encode(digest.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::UnparsedPublicKey;

    fn rsa_key() -> ForeignKey {
        let pair =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .expect("rsa");
        let der = PrivateKeyDer::try_from(pair.serialize_der()).expect("der");
        ForeignKey::from_der(&der).expect("parse").expect("foreign")
    }

    #[test]
    fn p256_is_native_and_p384_is_foreign() {
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
        let der = PrivateKeyDer::try_from(p256.serialize_der()).expect("der");
        assert!(ForeignKey::from_der(&der).expect("parse").is_none());
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
        let der = PrivateKeyDer::try_from(p384.serialize_der()).expect("der");
        let k = ForeignKey::from_der(&der).expect("parse").expect("foreign");
        assert_eq!(k.alg(), "ES384");
        assert_eq!(k.jwk()["crv"], "P-384");
    }

    #[test]
    fn resigned_jws_verifies_with_the_real_key() {
        let key = rsa_key();
        let header =
            BASE64URL_NOPAD.encode(br#"{"alg":"ES256","jwk":{"kty":"EC"},"nonce":"n","url":"u"}"#);
        let payload = BASE64URL_NOPAD.encode(b"{}");
        let body = serde_json::to_vec(
            &json!({"protected": header, "payload": payload, "signature": "xx"}),
        )
        .expect("json");
        let out: Map<String, Value> =
            serde_json::from_slice(&key.resign(&body).expect("resign")).expect("json");
        let prot = out["protected"].as_str().expect("str");
        let hdr: Value =
            serde_json::from_slice(&BASE64URL_NOPAD.decode(prot.as_bytes()).expect("b64"))
                .expect("json");
        assert_eq!(hdr["alg"], "RS256");
        assert_eq!(hdr["jwk"]["kty"], "RSA");
        assert_eq!(hdr["nonce"], "n");
        let sig = BASE64URL_NOPAD
            .decode(out["signature"].as_str().expect("str").as_bytes())
            .expect("b64");
        let ForeignKey::Rsa(pair) = &key else {
            unreachable!("rsa")
        };
        let public = UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            pair.public_key().as_ref(),
        );
        public
            .verify(format!("{prot}.{payload}").as_bytes(), &sig)
            .expect("signature verifies");
    }

    #[test]
    fn thumbprint_is_43_chars_of_base64url() {
        let t = rsa_key().thumbprint();
        assert_eq!(t.len(), 43);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    /// RFC 7638 §3.1: the example RSA key and its thumbprint; `alg` and `kid` do not count.
    #[test]
    fn thumbprint_matches_rfc7638_example() {
        let jwk = json!({
            "kty": "RSA",
            "n": concat!(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAt",
                "VT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn6",
                "4tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2",
                "QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbI",
                "SD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqb",
                "w0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
            ),
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29",
        });
        let public = PublicJwk::from_jwk(&jwk).expect("valid JWK");
        assert_eq!(
            public.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn private_key_jwk_agrees_with_foreign_key_for_every_key_type() {
        // RSA and P-384: the same thumbprint as the re-signing path uses.
        let rsa =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .expect("rsa");
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
        for pair in [rsa, p384] {
            let der = PrivateKeyDer::try_from(pair.serialize_der()).expect("der");
            let foreign = ForeignKey::from_der(&der).expect("parse").expect("foreign");
            let public = PublicJwk::from_private_key(&der).expect("jwk");
            assert_eq!(public.thumbprint(), foreign.thumbprint());
            assert_eq!(PublicJwk::from_jwk(&foreign.jwk()).expect("jwk"), public);
        }
        // P-256, in PKCS#8 and in SEC1 (acmetool's encoding): the same JWK.
        let (_, pkcs8) = instant_acme::Key::generate_pkcs8().expect("p256");
        let der = PrivateKeyDer::Pkcs8(pkcs8.clone_key());
        let public = PublicJwk::from_private_key(&der).expect("jwk");
        assert!(matches!(public, PublicJwk::Ec { crv: "P-256", .. }));
        assert!(
            public
                .canonical_json()
                .starts_with(r#"{"crv":"P-256","kty":"EC","x":""#)
        );
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.secret_pkcs8_der(),
        )
        .expect("pkcs8");
        use aws_lc_rs::encoding::AsDer;
        let sec1 = pair.private_key().as_der().expect("sec1");
        let sec1 = PrivateKeyDer::Sec1(sec1.as_ref().to_vec().into());
        assert_eq!(PublicJwk::from_private_key(&sec1).expect("jwk"), public);
    }

    fn decode_json(b64: &Value) -> Value {
        let bytes = BASE64URL_NOPAD
            .decode(b64.as_str().expect("string").as_bytes())
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn eab_jws_is_a_mac_over_its_header_and_the_account_jwk() {
        let jwk = json!({"crv": "P-256", "kty": "EC", "x": "eA", "y": "eQ"});
        for (alg, hmac) in [
            ("hs256", aws_lc_rs::hmac::HMAC_SHA256),
            ("hs384", aws_lc_rs::hmac::HMAC_SHA384),
            ("hs512", aws_lc_rs::hmac::HMAC_SHA512),
        ] {
            let eab = EabCredentials::parse("kid-1", "c2VjcmV0LWtleQ", Some(alg)).expect("eab");
            let jws = eab_jws(&eab, "https://ca.example/new-acct", &jwk).expect("jws");
            let header = decode_json(&jws["protected"]);
            assert_eq!(
                header,
                json!({"alg": alg.to_ascii_uppercase(), "kid": "kid-1", "url": "https://ca.example/new-acct"}),
                "no nonce (RFC 8555 §7.3.4)"
            );
            assert_eq!(decode_json(&jws["payload"]), jwk);
            let signed = format!(
                "{}.{}",
                jws["protected"].as_str().expect("str"),
                jws["payload"].as_str().expect("str")
            );
            let tag = BASE64URL_NOPAD
                .decode(jws["signature"].as_str().expect("str").as_bytes())
                .expect("b64");
            aws_lc_rs::hmac::verify(
                &aws_lc_rs::hmac::Key::new(hmac, b"secret-key"),
                signed.as_bytes(),
                &tag,
            )
            .expect("the MAC verifies with the CA's key");
        }
    }

    #[test]
    fn bound_new_account_request_carries_the_binding_and_verifies_with_the_account_key() {
        let (_, pkcs8) = instant_acme::Key::generate_pkcs8().expect("p256");
        let signer =
            AccountSigner::from_der(&PrivateKeyDer::Pkcs8(pkcs8.clone_key())).expect("signer");
        let url = "https://ca.example/new-acct";
        let header = BASE64URL_NOPAD.encode(
            &serde_json::to_vec(
                &json!({"alg": "ES256", "jwk": signer.jwk(), "nonce": "n", "url": url}),
            )
            .expect("json"),
        );
        let payload = BASE64URL_NOPAD.encode(br#"{"termsOfServiceAgreed":true}"#);
        let body = serde_json::to_vec(
            &json!({"protected": header, "payload": payload, "signature": "stale"}),
        )
        .expect("json");
        let eab = EabCredentials::parse("kid-1", "c2VjcmV0LWtleQ", None).expect("eab");

        let out: Value =
            serde_json::from_slice(&bind_external_account(&body, &eab, &signer).expect("bind"))
                .expect("json");
        assert_eq!(out["protected"], Value::String(header.clone()));
        let payload = decode_json(&out["payload"]);
        assert_eq!(payload["termsOfServiceAgreed"], true);
        let binding = &payload["externalAccountBinding"];
        assert_eq!(decode_json(&binding["protected"])["url"], url);
        assert_eq!(decode_json(&binding["payload"]), signer.jwk());

        let signed = format!("{header}.{}", out["payload"].as_str().expect("str"));
        let sig = BASE64URL_NOPAD
            .decode(out["signature"].as_str().expect("str").as_bytes())
            .expect("b64");
        let AccountSigner::P256(pair) = &signer else {
            unreachable!("p256")
        };
        UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            pair.public_key().as_ref(),
        )
        .verify(signed.as_bytes(), &sig)
        .expect("the outer JWS verifies with the account key");
        // The binding names the same key the outer JWS is signed with.
        assert_eq!(
            PublicJwk::from_jwk(&signer.jwk())
                .expect("jwk")
                .thumbprint(),
            PublicJwk::from_private_key(&PrivateKeyDer::Pkcs8(pkcs8))
                .expect("jwk")
                .thumbprint()
        );
    }

    fn verifies(signer: &AccountSigner, jws: &Value) -> bool {
        let signed = format!(
            "{}.{}",
            jws["protected"].as_str().expect("str"),
            jws["payload"].as_str().expect("str")
        );
        let sig = BASE64URL_NOPAD
            .decode(jws["signature"].as_str().expect("str").as_bytes())
            .expect("b64");
        match signer {
            AccountSigner::P256(k) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, k.public_key().as_ref())
                    .verify(signed.as_bytes(), &sig)
                    .is_ok()
            }
            AccountSigner::Foreign(ForeignKey::Rsa(k)) => UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                k.public_key().as_ref(),
            )
            .verify(signed.as_bytes(), &sig)
            .is_ok(),
            AccountSigner::Foreign(ForeignKey::P384(_)) => unreachable!("not used here"),
        }
    }

    #[test]
    fn post_as_get_is_signed_by_the_account_with_an_empty_payload() {
        let (_, pkcs8) = instant_acme::Key::generate_pkcs8().expect("p256");
        let p256 = AccountSigner::from_der(&PrivateKeyDer::Pkcs8(pkcs8)).expect("signer");
        let rsa = AccountSigner::Foreign(rsa_key());
        let (kid, url) = (
            "https://ca.example/acct/1",
            "https://ca.example/cert/1/alt/1",
        );
        for (signer, alg) in [(&p256, "ES256"), (&rsa, "RS256")] {
            let body = post_as_get(signer, kid, "nonce-1", url).expect("jws");
            let jws: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(
                decode_json(&jws["protected"]),
                json!({"alg": alg, "kid": kid, "nonce": "nonce-1", "url": url}),
                "kid, never jwk, for an existing account"
            );
            assert_eq!(jws["payload"], "", "POST-as-GET has an empty payload");
            assert!(verifies(signer, &jws), "{alg} signature verifies");
            assert_eq!(jws_url(&body).as_deref(), Some(url));
        }
    }

    #[test]
    fn key_change_inner_jws_is_made_with_the_new_key_and_names_the_real_old_one() {
        let old = AccountSigner::Foreign(rsa_key());
        let (_, pkcs8) = instant_acme::Key::generate_pkcs8().expect("p256");
        let new = AccountSigner::from_der(&PrivateKeyDer::Pkcs8(pkcs8)).expect("signer");
        let url = "https://ca.example/key-change";
        let kid = "https://ca.example/acct/1";
        // What instant-acme sends: its own inner JWS (another key) signed by its placeholder.
        let header = BASE64URL_NOPAD.encode(
            &serde_json::to_vec(&json!({"alg": "ES256", "kid": kid, "nonce": "n", "url": url}))
                .expect("json"),
        );
        let body = serde_json::to_vec(&json!({
            "protected": header,
            "payload": BASE64URL_NOPAD.encode(br#"{"protected":"x","payload":"y","signature":"z"}"#),
            "signature": "stale",
        }))
        .expect("json");

        let out: Value =
            serde_json::from_slice(&replace_key_change(&body, &old, &new).expect("replace"))
                .expect("json");
        let outer_header = decode_json(&out["protected"]);
        assert_eq!(outer_header["alg"], "RS256");
        assert_eq!(outer_header["kid"], kid);
        assert_eq!(outer_header["nonce"], "n");
        assert!(verifies(&old, &out), "the outer JWS is the old key's");

        let inner = decode_json(&out["payload"]);
        let inner_header = decode_json(&inner["protected"]);
        assert_eq!(
            inner_header,
            json!({"alg": "ES256", "jwk": new.jwk(), "url": url})
        );
        assert_eq!(
            decode_json(&inner["payload"]),
            json!({"account": kid, "oldKey": old.jwk()})
        );
        assert!(verifies(&new, &inner), "the inner JWS is the new key's");
    }

    #[test]
    fn bad_jwks_are_refused() {
        for (jwk, why) in [
            (json!({"n": "AQAB", "e": "AQAB"}), "kty"),
            (json!({"kty": "oct", "k": "AAAA"}), "oct"),
            (json!({"kty": "RSA", "e": "AQAB"}), "\"n\""),
            (json!({"kty": "RSA", "n": "!!", "e": "AQAB"}), "base64url"),
            (
                json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
                "P-521",
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}),
                "32 bytes",
            ),
        ] {
            let err = format!("{:#}", PublicJwk::from_jwk(&jwk).expect_err(why));
            assert!(err.contains(why), "{err} should mention {why}");
        }
    }
}
