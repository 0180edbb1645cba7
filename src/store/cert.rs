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

/// Validates a chain from the CA before it may go live: it parses and holds the end-entity
/// certificate and at least one issuer (at most [`crate::chain::MAX_CHAIN_CERTS`]
/// certificates); each certificate is signed by the next one, which names it as its issuer
/// and is a CA; the leaf carries our key and every requested name, and is valid at `now`
/// (neither expired nor not valid yet). Anything else is refused, so a working certificate
/// is never replaced by one clients would reject. Returns the files to write.
///
/// Trust stops at the topmost certificate the CA sent: whether it chains to a root the
/// clients trust is theirs to decide (the CA could issue anything for the names anyway);
/// what is checked is that the answer is one coherent, usable chain.
pub fn validate_issued(
    pem: &str,
    expected_key_id: &str,
    names: &[String],
    now: OffsetDateTime,
) -> Result<CertFiles> {
    let ders = split_chain(pem)?;
    if ders.len() > crate::chain::MAX_CHAIN_CERTS {
        bail!(
            "the CA's chain holds {} certificates (at most {} are accepted)",
            ders.len(),
            crate::chain::MAX_CHAIN_CERTS
        );
    }
    let leaf = leaf_info(&ders[0]).context("the CA's leaf certificate")?;
    let mut certs = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        let (_, c) = X509Certificate::from_der(der)
            .with_context(|| format!("certificate {} of the CA's chain does not parse", i + 1))?;
        certs.push(c);
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
    if leaf.not_before > now {
        bail!(
            "the CA returned a certificate that is not valid until {} (it is {} now)",
            rfc3339(leaf.not_before),
            rfc3339(now)
        );
    }
    if certs.len() < 2 {
        bail!(
            "the CA returned the certificate without its issuer (no chain to verify it by and none to serve)"
        );
    }
    for (i, pair) in certs.windows(2).enumerate() {
        let (child, issuer) = (&pair[0], &pair[1]);
        let which = |n: usize| match n {
            0 => "the certificate".to_owned(),
            n => format!("certificate {} of the chain", n + 1),
        };
        if child.issuer().as_raw() != issuer.subject().as_raw() {
            bail!(
                "{} names another issuer than the next certificate of the chain ({:?} is not {:?})",
                which(i),
                loggable(&child.issuer().to_string()),
                loggable(&issuer.subject().to_string())
            );
        }
        if !issuer.is_ca() {
            bail!("{} is signed by a certificate that is not a CA", which(i));
        }
        child
            .verify_signature(Some(issuer.public_key()))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{} is not signed by the next certificate of the chain ({e})",
                    which(i)
                )
            })?;
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

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&::time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A name from a certificate made safe for one line of an error.
fn loggable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::time::Duration;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    const NAME: &str = "a.example";

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        p
    }

    /// A root, an intermediate it signed, and leaves the intermediate signs for one key.
    struct Pki {
        int_pem: String,
        root_pem: String,
        int: Issuer<'static, KeyPair>,
        stranger_pem: String,
        leaf_key: KeyPair,
    }

    fn pki() -> Pki {
        let root_key = KeyPair::generate().expect("key");
        let root_params = ca_params("Root");
        let root_pem = root_params.self_signed(&root_key).expect("root").pem();
        let root = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate().expect("key");
        let int_params = ca_params("Int");
        let int_pem = int_params
            .signed_by(&int_key, &root)
            .expect("intermediate")
            .pem();
        // Same name as the intermediate, another key: its signature cannot verify.
        let stranger_key = KeyPair::generate().expect("key");
        let stranger_pem = ca_params("Int")
            .self_signed(&stranger_key)
            .expect("stranger")
            .pem();
        Pki {
            int_pem,
            root_pem,
            int: Issuer::new(int_params, int_key),
            stranger_pem,
            leaf_key: KeyPair::generate().expect("key"),
        }
    }

    impl Pki {
        fn leaf(&self, not_before: OffsetDateTime) -> String {
            let mut p = CertificateParams::new(vec![NAME.to_owned()]).expect("params");
            p.not_before = not_before;
            p.not_after = not_before + Duration::days(90);
            p.signed_by(&self.leaf_key, &self.int).expect("leaf").pem()
        }

        fn key_id(&self) -> String {
            use rcgen::PublicKeyData;
            ids::key_id(&self.leaf_key.subject_public_key_info())
        }
    }

    #[test]
    fn only_a_coherent_chain_valid_now_goes_live() {
        let p = pki();
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
        let leaf = p.leaf(now - Duration::hours(1));
        let names = [NAME.to_owned()];
        let check = |pem: &str, at: OffsetDateTime| validate_issued(pem, &p.key_id(), &names, at);

        let good = format!("{leaf}{}", p.int_pem);
        let files = check(&good, now).expect("leaf and intermediate");
        assert_eq!(split_chain(&files.chain).expect("chain").len(), 1);
        check(&format!("{good}{}", p.root_pem), now).expect("up to the root");

        // (chain, when, why it is refused)
        let soon = p.leaf(now + Duration::days(1));
        let table = [
            (leaf.clone(), now, "without its issuer"),
            (format!("{soon}{}", p.int_pem), now, "not valid until"),
            (good.clone(), now + Duration::days(91), "already expired"),
            (format!("{leaf}{}", p.stranger_pem), now, "not signed by"),
            (format!("{leaf}{}", p.root_pem), now, "another issuer"),
            (format!("{}{leaf}", p.int_pem), now, "different public key"),
            (
                format!("{leaf}{}{}", p.int_pem, p.int_pem),
                now,
                "another issuer",
            ),
            (format!("{leaf}{}", p.int_pem.repeat(10)), now, "at most 10"),
        ];
        for (pem, at, why) in table {
            let err = format!("{:#}", check(&pem, at).expect_err(why));
            assert!(err.contains(why), "expected {why:?}: {err}");
        }
        // A leaf whose issuer is not a CA.
        let not_ca_key = KeyPair::generate().expect("key");
        let mut not_ca = CertificateParams::new(vec!["issuer.example".to_owned()]).expect("p");
        not_ca.distinguished_name.push(DnType::CommonName, "Int2");
        let not_ca_pem = not_ca.self_signed(&not_ca_key).expect("cert").pem();
        let mut lp = CertificateParams::new(vec![NAME.to_owned()]).expect("params");
        lp.not_before = now - Duration::hours(1);
        let by_leaf = lp
            .signed_by(&p.leaf_key, &Issuer::new(not_ca, not_ca_key))
            .expect("leaf")
            .pem();
        let err = format!(
            "{:#}",
            check(&format!("{by_leaf}{not_ca_pem}"), now).expect_err("ca")
        );
        assert!(err.contains("not a CA"), "{err}");
        // Names and key still matter.
        let err = validate_issued(&good, &p.key_id(), &["b.example".to_owned()], now);
        assert!(format!("{:#}", err.expect_err("name")).contains("does not cover b.example"));
    }
}
