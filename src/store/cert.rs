//! Reading certificates: just enough X.509 to decide (names, validity, public key).
//!
//! Certificates come from the CA or from a state directory someone copied in, so both are
//! untrusted: sizes are bounded by the caller, every PEM block must parse, and a chain from
//! the CA is checked against the key and names we asked for before it is written.

use ::time::OffsetDateTime;
use anyhow::{Context, Result, bail};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::keys::{KeyFamily, pem_blocks, pem_encode};
use crate::plan::CertSummary;
use crate::store::ids;

/// Largest certificate chain we accept or read.
pub const MAX_CHAIN: u64 = 1024 * 1024;

/// What we know about a leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafInfo {
    /// dNSName SANs (lowercased) and iPAddress SANs (canonical text), in certificate order.
    pub names: Vec<String>,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
    /// Key id of the certificate's public key.
    pub key_id: String,
    /// Key family.
    pub key_family: Option<KeyFamily>,
    /// ARI identifier (`<AKI>.<serial>`, RFC 9773 §4.1), when the certificate has an AKI.
    pub ari_id: Option<String>,
}

impl LeafInfo {
    /// The planner's summary of certificate directory `id` holding this leaf.
    pub fn into_summary(
        self,
        id: &str,
        has_private_key: bool,
        revoked: bool,
        profile: Option<String>,
    ) -> CertSummary {
        CertSummary {
            id: id.to_owned(),
            names: self.names,
            not_before: self.not_before,
            not_after: self.not_after,
            key_family: self.key_family,
            has_private_key,
            key_id: self.key_id,
            revoked,
            profile,
            ari_id: self.ari_id,
        }
    }
}

/// Parses one DER certificate.
pub fn leaf_info(der: &[u8]) -> Result<LeafInfo> {
    let (_, cert) = X509Certificate::from_der(der).context("not a valid X.509 certificate")?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            match gn {
                GeneralName::DNSName(n) => names.push(n.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    let key_family = match oid.as_str() {
        "1.2.840.113549.1.1.1" => Some(KeyFamily::Rsa),
        "1.2.840.10045.2.1" => Some(KeyFamily::Ecdsa),
        _ => None,
    };
    Ok(LeafInfo {
        names,
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        key_id: ids::key_id(spki.raw),
        key_family,
        ari_id: crate::ari::cert_id_of(&cert).ok(),
    })
}

/// Splits a PEM chain into DER certificates, refusing anything that is not a certificate.
pub fn split_chain(pem: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for block in pem_blocks(pem) {
        let (label, der) = block?;
        if label != "CERTIFICATE" {
            bail!("unexpected PEM block {label:?} in a certificate chain");
        }
        out.push(der);
    }
    if out.is_empty() {
        bail!("no certificate in the chain");
    }
    Ok(out)
}

/// The files of a certificate directory, as acmetool writes them.
#[derive(Debug)]
pub struct CertFiles {
    /// Leaf certificate PEM.
    pub cert: String,
    /// Every certificate after the leaf, PEM.
    pub chain: String,
    /// `cert` followed by `chain`.
    pub fullchain: String,
    /// The leaf's details.
    pub leaf: LeafInfo,
}

/// Validates a chain from the CA: it parses, the leaf carries our key and every requested
/// name, and it is within its validity at `now`. Returns the files to write.
pub fn validate_issued(
    pem: &str,
    expected_key_id: &str,
    names: &[String],
    now: OffsetDateTime,
) -> Result<CertFiles> {
    let ders = split_chain(pem)?;
    let leaf = leaf_info(&ders[0]).context("the CA's leaf certificate")?;
    for (i, der) in ders.iter().enumerate().skip(1) {
        X509Certificate::from_der(der)
            .with_context(|| format!("certificate {} of the CA's chain does not parse", i + 1))?;
    }
    if leaf.key_id != expected_key_id {
        bail!("the CA returned a certificate for a different public key");
    }
    for n in names {
        if !leaf.names.iter().any(|l| l == n) {
            bail!("the CA returned a certificate that does not cover {n}");
        }
    }
    if leaf.not_after <= now {
        bail!("the CA returned a certificate that has already expired");
    }
    let cert = pem_encode("CERTIFICATE", &ders[0]);
    let chain: String = ders[1..]
        .iter()
        .map(|d| pem_encode("CERTIFICATE", d))
        .collect();
    let fullchain = format!("{cert}{chain}");
    Ok(CertFiles {
        cert,
        chain,
        fullchain,
        leaf,
    })
}
