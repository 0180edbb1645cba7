//! Signing with account keys instant-acme cannot use (RSA and P-384).
//!
//! acmetool creates its account key with the default target's key type, so most acmetool
//! state directories hold an RSA account key, some a P-384 one. instant-acme 0.8 signs only
//! with P-256. Rather than fork the protocol crate, the HTTP layer (its documented plug-in
//! point) re-signs each JWS body it sends: the protected header gets our `alg` (and our `jwk`
//! where the header carries a key), and the signature is made with the real key. The
//! placeholder P-256 key instant-acme holds never signs anything the CA sees.

use anyhow::{Context, Result, anyhow, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use data_encoding::BASE64URL_NOPAD;
use rustls_pki_types::PrivateKeyDer;
use serde_json::{Map, Value, json};

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
        let mut jws: Map<String, Value> =
            serde_json::from_slice(body).context("JWS body is not a JSON object")?;
        let protected_b64 = jws
            .get("protected")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("JWS body has no protected header"))?;
        let protected = BASE64URL_NOPAD
            .decode(protected_b64.as_bytes())
            .context("JWS protected header is not base64url")?;
        let mut header: Map<String, Value> =
            serde_json::from_slice(&protected).context("JWS protected header is not JSON")?;
        header.insert("alg".into(), Value::String(self.alg().into()));
        if header.contains_key("jwk") {
            header.insert("jwk".into(), self.jwk());
        }
        let new_protected = BASE64URL_NOPAD.encode(&serde_json::to_vec(&header)?);
        let payload = jws
            .get("payload")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let signature = self.sign(format!("{new_protected}.{payload}").as_bytes())?;
        jws.insert("protected".into(), Value::String(new_protected));
        jws.insert(
            "signature".into(),
            Value::String(BASE64URL_NOPAD.encode(&signature)),
        );
        Ok(serde_json::to_vec(&jws)?)
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
}
