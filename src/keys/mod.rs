//! Private keys: generation, parsing of every encoding acmetool accepts, and key ids.
//!
//! acmetool writes PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) and reads those plus
//! PKCS#8. acmekeep reads all three and writes PKCS#8 (`PRIVATE KEY`), which acmetool and
//! every TLS server read too (doc/state-directory.md records this choice). Parsing and
//! generation go through rcgen on aws-lc-rs, which is also what signs the CSR.

use anyhow::{Context, Result, anyhow, bail};
use rcgen::{KeyPair, PublicKeyData};

pub mod ids;

/// Largest key file we read (a 4096-bit PKCS#1 key is ~3.3 KiB of PEM).
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// What kind of key a target asks for (acmetool's `request.key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// RSA with this many bits (2048, 3072 or 4096).
    Rsa(u32),
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
}

impl KeySpec {
    /// acmetool's name for the family, as used by `satisfy.key.type`.
    pub fn family(self) -> KeyFamily {
        match self {
            KeySpec::Rsa(_) => KeyFamily::Rsa,
            KeySpec::EcdsaP256 | KeySpec::EcdsaP384 => KeyFamily::Ecdsa,
        }
    }

    /// Human description such as `rsa-2048` or `ecdsa-nistp256` (acmetool's status words).
    pub fn describe(self) -> String {
        match self {
            KeySpec::Rsa(bits) => format!("rsa-{bits}"),
            KeySpec::EcdsaP256 => "ecdsa-nistp256".to_owned(),
            KeySpec::EcdsaP384 => "ecdsa-nistp384".to_owned(),
        }
    }
}

/// Key family, the granularity of `satisfy.key.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyFamily {
    /// RSA.
    Rsa,
    /// ECDSA.
    Ecdsa,
}

/// A loaded or generated private key with its id.
pub struct PrivateKey {
    /// The parsed key, able to sign.
    pub pair: KeyPair,
    /// acmetool key id of its public key.
    pub id: String,
    /// Family of the key.
    pub family: KeyFamily,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("id", &self.id)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

fn family_of(pair: &KeyPair) -> Result<KeyFamily> {
    let alg = pair.algorithm();
    if alg == &rcgen::PKCS_RSA_SHA256
        || alg == &rcgen::PKCS_RSA_SHA384
        || alg == &rcgen::PKCS_RSA_SHA512
    {
        Ok(KeyFamily::Rsa)
    } else if alg == &rcgen::PKCS_ECDSA_P256_SHA256 || alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        Ok(KeyFamily::Ecdsa)
    } else {
        bail!(
            "unsupported key algorithm (only RSA and ECDSA P-256/P-384 are used for certificates)"
        )
    }
}

impl PrivateKey {
    /// Generates a new key. RSA generation takes a while: call it off the async threads.
    pub fn generate(spec: KeySpec) -> Result<Self> {
        let pair = match spec {
            KeySpec::Rsa(bits) => {
                let size = match bits {
                    ..=2048 => rcgen::RsaKeySize::_2048,
                    2049..=3072 => rcgen::RsaKeySize::_3072,
                    _ => rcgen::RsaKeySize::_4096,
                };
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
            }
            KeySpec::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeySpec::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        }
        .context("generating a private key")?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: KeyPair) -> Result<Self> {
        let family = family_of(&pair)?;
        let id = ids::key_id(&pair.subject_public_key_info());
        Ok(Self { pair, id, family })
    }

    /// Parses the first `* PRIVATE KEY` PEM block (PKCS#1, SEC1 or PKCS#8).
    pub fn from_pem(pem: &str) -> Result<Self> {
        let der = first_private_key_der(pem)?;
        let key_der = rustls_pki_types::PrivateKeyDer::try_from(der.as_slice())
            .map_err(|e| anyhow!("unrecognised private key encoding: {e}"))?;
        let pair =
            KeyPair::try_from(&key_der).map_err(|e| anyhow!("cannot parse private key: {e}"))?;
        Self::from_pair(pair)
    }

    /// PEM text to store: PKCS#8 for keys we generated.
    pub fn to_pem(&self) -> String {
        self.pair.serialize_pem()
    }
}

/// Extracts the DER of the first PEM block whose label is `PRIVATE KEY` or ends in
/// ` PRIVATE KEY` (acmetool's rule).
pub fn first_private_key_der(pem: &str) -> Result<Vec<u8>> {
    for item in pem_blocks(pem) {
        let (label, der) = item?;
        if label == "PRIVATE KEY" || label.ends_with(" PRIVATE KEY") {
            return Ok(der);
        }
    }
    bail!("no PRIVATE KEY block found")
}

/// Iterates over `(label, der)` of PEM blocks. Malformed base64 is an error.
pub fn pem_blocks(text: &str) -> impl Iterator<Item = Result<(String, Vec<u8>)>> + '_ {
    let mut lines = text.lines();
    std::iter::from_fn(move || {
        let label = loop {
            let line = lines.next()?.trim();
            if let Some(rest) = line.strip_prefix("-----BEGIN ")
                && let Some(label) = rest.strip_suffix("-----")
            {
                break label.to_owned();
            }
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        for line in lines.by_ref() {
            let line = line.trim();
            if line == end {
                return Some(
                    data_encoding::BASE64
                        .decode(b64.as_bytes())
                        .map(|der| (label.clone(), der))
                        .map_err(|e| anyhow!("bad base64 in PEM block {label}: {e}")),
                );
            }
            if line.contains(':') {
                continue; // RFC 1421 headers; encrypted keys fail later
            }
            b64.push_str(line);
        }
        Some(Err(anyhow!("PEM block {label} has no END line")))
    })
}

/// Encodes DER as a PEM block with 64-column lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_with_stable_ids() {
        for spec in [KeySpec::EcdsaP256, KeySpec::EcdsaP384, KeySpec::Rsa(2048)] {
            let key = PrivateKey::generate(spec).expect("generate");
            assert_eq!(key.family, spec.family());
            assert!(ids::is_well_formed_id(&key.id));
            let again = PrivateKey::from_pem(&key.to_pem()).expect("parse back");
            assert_eq!(again.id, key.id, "{spec:?}");
        }
    }

    #[test]
    fn sec1_ec_key_as_acmetool_writes_it() {
        // A SEC1 "EC PRIVATE KEY" block must parse to the same id as its PKCS#8 form.
        let key = PrivateKey::generate(KeySpec::EcdsaP256).expect("generate");
        let pkcs8 = key.pair.serialize_der();
        let ec = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &pkcs8,
        )
        .expect("aws-lc parses");
        use aws_lc_rs::encoding::AsDer;
        let sec1: aws_lc_rs::encoding::EcPrivateKeyRfc5915Der<'_> =
            ec.private_key().as_der().expect("sec1");
        let pem = pem_encode("EC PRIVATE KEY", sec1.as_ref());
        let parsed = PrivateKey::from_pem(&pem).expect("parse sec1");
        assert_eq!(parsed.id, key.id);
    }

    #[test]
    fn pem_without_key_is_an_error() {
        assert!(PrivateKey::from_pem("").is_err());
        assert!(
            PrivateKey::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_err()
        );
        assert!(
            PrivateKey::from_pem("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }
}
