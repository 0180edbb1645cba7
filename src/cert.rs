//! What a certificate is, for deciding: the planner's summary of a certificate directory,
//! acmetool's "satisfies" and "best" (§6.2) over an indexed set, and just enough X.509 to
//! fill them (names, validity, public key, ARI identifier).
//!
//! Certificates come from the CA or from a state directory someone copied in, so both are
//! untrusted: sizes are bounded by the caller, every PEM block must parse, and a chain from
//! the CA is checked against the key and names we asked for before it is written. Nothing
//! here touches the disk, the network or the clock.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::keys::ids;
use crate::keys::{KeyFamily, pem_blocks, pem_encode};
use crate::name::Hostname;
use crate::target::Target;

/// What the planner needs to know about one certificate directory.
#[derive(Clone, Debug)]
pub struct CertSummary {
    /// Certificate id (directory name under `certs/`).
    pub id: String,
    /// dNSName SANs of the leaf (lowercased).
    pub names: Vec<String>,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
    /// Family of the certificate's public key.
    pub key_family: Option<KeyFamily>,
    /// Whether `keys/<key id>/privkey` exists for its public key.
    pub has_private_key: bool,
    /// Key id of the certificate's public key.
    pub key_id: String,
    /// Marked `revoked`.
    pub revoked: bool,
    /// The ACME profile it was ordered with, when acmekeep knows it.
    pub profile: Option<String>,
    /// Its ARI identifier, when it has one (see [`ari_id`]).
    pub ari_id: Option<String>,
}

/// acmetool's "satisfies" (§6.2): not revoked, has its key, covers the names, right key type.
/// Only downloaded, parseable certificates reach the planner, so those checks are implicit.
pub fn satisfies(cert: &CertSummary, target: &Target) -> bool {
    !cert.revoked
        && cert.has_private_key
        && target.satisfy_names.iter().all(|n| covers(&cert.names, n))
        && target
            .satisfy_key
            .is_none_or(|fam| cert.key_family == Some(fam))
}

/// True when `names` contains `name` exactly (wildcards match only the same wildcard, as a
/// target naming `*.a.b` wants exactly that SAN).
fn covers(names: &[String], name: &Hostname) -> bool {
    names.iter().any(|n| n == name.as_str())
}

/// Every complete certificate the planner may choose from, indexed by SAN so that finding a
/// target's best certificate looks only at the certificates carrying its first name, not at
/// all of them (with thousands of targets a linear scan per target is quadratic).
#[derive(Clone, Debug, Default)]
pub struct CertSet {
    certs: Vec<CertSummary>,
    by_name: HashMap<String, Vec<usize>>,
    by_id: HashMap<String, usize>,
}

impl CertSet {
    /// An empty set with room for `n` certificates.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            certs: Vec::with_capacity(n),
            by_name: HashMap::with_capacity(n),
            by_id: HashMap::with_capacity(n),
        }
    }

    /// Indexes `certs`.
    pub fn new(certs: Vec<CertSummary>) -> Self {
        let mut set = Self::with_capacity(certs.len());
        for c in certs {
            set.push(c);
        }
        set
    }

    /// The certificates, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &CertSummary> {
        self.certs.iter()
    }

    /// The certificate with this id.
    pub fn get(&self, id: &str) -> Option<&CertSummary> {
        self.by_id.get(id).map(|&i| &self.certs[i])
    }

    /// Adds a certificate.
    pub fn push(&mut self, cert: CertSummary) {
        let i = self.certs.len();
        for n in &cert.names {
            let list = self.by_name.entry(n.clone()).or_default();
            // A SAN repeated in one certificate is indexed once.
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
        self.by_id.insert(cert.id.clone(), i);
        self.certs.push(cert);
    }

    /// Marks the certificate `id` revoked (it no longer satisfies any target); false when
    /// there is no such certificate.
    pub fn mark_revoked(&mut self, id: &str) -> bool {
        match self.by_id.get(id) {
            Some(&i) => {
                self.certs[i].revoked = true;
                true
            }
            None => false,
        }
    }

    /// How many certificates there are.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The certificate at position `i` ([`best_position`]); positions never change, as
    /// certificates are only added.
    pub fn at(&self, i: usize) -> Option<&CertSummary> {
        self.certs.get(i)
    }

    /// The position of the certificate `id` ([`CertSet::at`]).
    pub fn position(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Certificates that may satisfy `target`, with their positions: those carrying its
    /// first name.
    fn candidates<'a>(
        &'a self,
        target: &Target,
    ) -> Box<dyn Iterator<Item = (usize, &'a CertSummary)> + 'a> {
        match target.satisfy_names.first() {
            Some(first) => Box::new(
                self.by_name
                    .get(first.as_str())
                    .into_iter()
                    .flatten()
                    .map(|&i| (i, &self.certs[i])),
            ),
            None => Box::new(self.certs.iter().enumerate()),
        }
    }
}

impl From<Vec<CertSummary>> for CertSet {
    fn from(certs: Vec<CertSummary>) -> Self {
        Self::new(certs)
    }
}

/// The best certificate satisfying `target` at `now`: the most recently issued (latest
/// `not_before`), then the latest `not_after`, ties broken by id so runs are deterministic.
/// A certificate that is not valid yet (`not_before` after `now`) is never the best: linked,
/// it would be refused by every client until then, while the one it would replace works.
///
/// Newest first, not longest-lived first: a replacement can expire before the certificate it
/// replaces (a move to a short-lived profile, a renewal after the CA revoked or asked to
/// replace a certificate), and it was obtained precisely so that it would be used. (With
/// one CA and one profile the two orders agree, as acmetool's "latest expiry" did.)
pub fn best_cert<'a>(
    target: &Target,
    certs: &'a CertSet,
    now: OffsetDateTime,
) -> Option<&'a CertSummary> {
    best_position(target, certs, now).and_then(|i| certs.at(i))
}

/// [`best_cert`]'s position in `certs` ([`CertSet::at`]): what a verdict keeps, so that ten
/// thousand verdicts do not each copy a certificate id.
pub fn best_position(target: &Target, certs: &CertSet, now: OffsetDateTime) -> Option<usize> {
    certs
        .candidates(target)
        .filter(|(_, c)| c.not_before <= now && satisfies(c, target))
        .max_by(|(_, a), (_, b)| newer(a, b))
        .map(|(i, _)| i)
}

/// The order [`best_cert`] maximises.
pub(crate) fn newer(a: &CertSummary, b: &CertSummary) -> std::cmp::Ordering {
    a.not_before
        .cmp(&b.not_before)
        .then_with(|| a.not_after.cmp(&b.not_after))
        .then_with(|| b.id.cmp(&a.id))
}

/// Largest certificate chain we accept or read.
pub const MAX_CHAIN: u64 = 1024 * 1024;

/// Most certificates a chain may hold to be considered (real chains hold 2 to 4).
pub const MAX_CHAIN_CERTS: usize = 10;

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
        ari_id: ari_id_of(&cert).ok(),
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
/// certificate and at least one issuer (at most [`MAX_CHAIN_CERTS`]
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
    if ders.len() > MAX_CHAIN_CERTS {
        bail!(
            "the CA's chain holds {} certificates (at most {} are accepted)",
            ders.len(),
            MAX_CHAIN_CERTS
        );
    }
    let leaf = leaf_info(&ders[0]).context("the CA's leaf certificate")?;
    let mut certs = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        let (_, c) = X509Certificate::from_der(der)
            .with_context(|| format!("certificate {} of the CA's chain does not parse", i + 1))?;
        certs.push(c);
    }
    check_leaf(&leaf, expected_key_id, names, now)?;
    check_chain(&certs)?;
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

/// The leaf the CA sent is for the key, covers the names and is valid at `now`.
fn check_leaf(
    leaf: &LeafInfo,
    expected_key_id: &str,
    names: &[String],
    now: OffsetDateTime,
) -> Result<()> {
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
    Ok(())
}

/// Each certificate of the chain names the next as its issuer, which is a CA and signed it;
/// there is at least one issuer.
fn check_chain(certs: &[X509Certificate<'_>]) -> Result<()> {
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
    Ok(())
}

/// The ARI certificate identifier of a DER certificate (RFC 9773 §4.1):
/// `base64url(AKI keyIdentifier) "." base64url(serial number DER contents)`, unpadded.
/// Certificates without an Authority Key Identifier cannot be named (Posh-ACME#561): the
/// caller then uses the local rule only.
pub fn ari_id(der: &[u8]) -> Result<String> {
    let (_, cert) = X509Certificate::from_der(der).context("not a valid X.509 certificate")?;
    ari_id_of(&cert)
}

/// [`ari_id`] of an already parsed certificate.
pub fn ari_id_of(cert: &X509Certificate<'_>) -> Result<String> {
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        });
    let Some(aki) = aki else {
        bail!("the certificate has no Authority Key Identifier, so it has no ARI identifier");
    };
    let b64 = data_encoding::BASE64URL_NOPAD;
    Ok(format!(
        "{}.{}",
        b64.encode(aki.0),
        b64.encode(cert.tbs_certificate.raw_serial())
    ))
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

    /// RFC 9773 §4.1's example: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:
    /// DE:01:C8:D4 and serial 00:87:65:43:21 make `aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE`.
    #[test]
    fn ari_id_matches_the_rfc_example() {
        use rcgen::{
            BasicConstraints, CertificateParams, IsCa, Issuer, KeyIdMethod, KeyPair, SerialNumber,
        };
        let aki = [
            0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0,
            0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4,
        ];
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_identifier_method = KeyIdMethod::PreSpecified(aki.to_vec());
        let ca = Issuer::new(ca, KeyPair::generate().expect("key"));
        let mut leaf = CertificateParams::new(["a.example".to_owned()]).expect("params");
        leaf.serial_number = Some(SerialNumber::from_slice(&[0x00, 0x87, 0x65, 0x43, 0x21]));
        leaf.use_authority_key_identifier_extension = true;
        let leaf = leaf
            .signed_by(&KeyPair::generate().expect("key"), &ca)
            .expect("sign");
        assert_eq!(
            ari_id(leaf.der()).expect("id"),
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
        );
    }

    #[test]
    fn a_certificate_without_aki_has_no_ari_id() {
        let key = rcgen::KeyPair::generate().expect("key");
        let c = rcgen::CertificateParams::new(["a.example".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("sign");
        let err = ari_id(c.der()).expect_err("no AKI");
        assert!(
            format!("{err}").contains("Authority Key Identifier"),
            "{err}"
        );
    }
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
