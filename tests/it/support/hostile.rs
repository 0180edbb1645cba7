//! Hostile answers for [`super::AriProxy`]: the proxy in front of Pebble can answer a chosen
//! kind of exchange slowly (the head at once, then the body a byte at a time), endlessly (a
//! body that never ends), malformed (a body replaced), with a JSON member edited (tokens,
//! URLs), a header set (`Retry-After`), or a certificate chain replaced (leaf only, a
//! stranger intermediate, a leaf minted by the proxy for the CSR's key).
//!
//! Pebble 2.4's resource paths tell the exchanges apart (`/nonce-plz`, `/order-plz`,
//! `/authZ/`, …); a [`Tamper`] applies to the next `times` successful answers of its kind
//! (Pebble's error answers, such as its deliberate nonce rejections, pass untouched).

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The kinds of exchange with the CA, by Pebble's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// `GET /dir`.
    Directory,
    /// `HEAD`/`GET /nonce-plz`.
    NewNonce,
    /// `POST /sign-me-up` (newAccount, also the account lookup).
    NewAccount,
    /// `POST /order-plz`.
    NewOrder,
    /// `POST /my-order/<id>` (order polls).
    Order,
    /// `POST /authZ/<id>`.
    Authz,
    /// `POST /chalZ/<id>`.
    Challenge,
    /// `POST /finalize-order/<id>`.
    Finalize,
    /// `POST /certZ/<id>` (the certificate download).
    Certificate,
    /// `GET /renewal-info/<id>` (the proxy's own ARI).
    RenewalInfo,
}

impl Exchange {
    /// The exchange a request is, from its method and path.
    pub fn of(method: &str, path: &str) -> Option<Exchange> {
        let post = method == "POST";
        Some(match path {
            "/dir" => Exchange::Directory,
            "/nonce-plz" => Exchange::NewNonce,
            "/sign-me-up" if post => Exchange::NewAccount,
            "/order-plz" if post => Exchange::NewOrder,
            p if p.starts_with("/my-order/") && post => Exchange::Order,
            p if p.starts_with("/authZ/") && post => Exchange::Authz,
            p if p.starts_with("/chalZ/") && post => Exchange::Challenge,
            p if p.starts_with("/finalize-order/") && post => Exchange::Finalize,
            p if p.starts_with("/certZ/") && post => Exchange::Certificate,
            p if p.starts_with("/renewal-info/") => Exchange::RenewalInfo,
            _ => return None,
        })
    }
}

/// Edits a JSON answer in place.
pub type JsonEdit = Arc<dyn Fn(&mut serde_json::Value) + Send + Sync>;
/// Makes the chain to send from Pebble's chain and the DER CSR of the last finalized order.
pub type ChainEdit = Arc<dyn Fn(&str, &[u8]) -> String + Send + Sync>;

/// How a tampered exchange is answered.
#[derive(Clone)]
pub enum Answer {
    /// Pebble's answer, its head at once, then its body one byte per `pause`.
    SlowBody(Duration),
    /// Pebble's head without a length, then a body that never ends (spaces, fast).
    Endless,
    /// Pebble's status and headers, this body.
    Body(Vec<u8>),
    /// Pebble's answer with its JSON body edited.
    Json(JsonEdit),
    /// Pebble's answer with this header set.
    Header(&'static str, String),
    /// Pebble's answer with its chain replaced.
    Chain(ChainEdit),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::SlowBody(d) => write!(f, "SlowBody({d:?})"),
            Answer::Endless => f.write_str("Endless"),
            Answer::Body(b) => write!(f, "Body({:?})", String::from_utf8_lossy(b)),
            Answer::Json(_) => f.write_str("Json(..)"),
            Answer::Header(k, v) => write!(f, "Header({k}: {v})"),
            Answer::Chain(_) => f.write_str("Chain(..)"),
        }
    }
}

/// A hostile answer to the next `times` exchanges of a kind (`None`: all of them).
#[derive(Debug, Clone)]
pub struct Tamper {
    pub exchange: Exchange,
    pub answer: Answer,
    pub times: Option<usize>,
}

impl Tamper {
    /// Every exchange of this kind answered so.
    pub fn always(exchange: Exchange, answer: Answer) -> Self {
        Tamper {
            exchange,
            answer,
            times: None,
        }
    }

    /// A JSON edit of every answer of this kind.
    pub fn json(
        exchange: Exchange,
        edit: impl Fn(&mut serde_json::Value) + Send + Sync + 'static,
    ) -> Self {
        Self::always(exchange, Answer::Json(Arc::new(edit)))
    }

    /// A replaced chain in every certificate download.
    pub fn chain(edit: impl Fn(&str, &[u8]) -> String + Send + Sync + 'static) -> Self {
        Self::always(Exchange::Certificate, Answer::Chain(Arc::new(edit)))
    }
}

/// The tampers set on a proxy and what they did.
#[derive(Debug, Default)]
pub struct Tampers {
    list: Vec<Tamper>,
    /// Exchanges answered by a tamper, in order.
    pub hits: Vec<Exchange>,
    /// The DER CSR of the last finalize request seen.
    pub last_csr: Option<Vec<u8>>,
}

impl Tampers {
    /// Adds a tamper (the first one set for a kind of exchange wins).
    pub fn add(&mut self, t: Tamper) {
        self.list.push(t);
    }

    /// Removes every tamper and forgets what they did.
    pub fn clear(&mut self) {
        *self = Tampers::default();
    }

    /// The answer for the next exchange of kind `x`, counting it.
    pub fn take(&mut self, x: Exchange) -> Option<Answer> {
        let t = self
            .list
            .iter_mut()
            .find(|t| t.exchange == x && t.times != Some(0))?;
        if let Some(n) = &mut t.times {
            *n -= 1;
        }
        self.hits.push(x);
        Some(t.answer.clone())
    }
}

/// The DER CSR in a finalize request's JWS payload.
pub fn finalize_csr(payload: &serde_json::Value) -> Option<Vec<u8>> {
    let csr = payload["csr"].as_str()?;
    data_encoding::BASE64URL_NOPAD.decode(csr.as_bytes()).ok()
}

/// Applies a content-changing answer to `(headers, body)`; slow and endless answers change
/// how it is sent, not what ([`send`]).
pub fn edit(answer: &Answer, headers: &mut Vec<(String, String)>, body: &mut Vec<u8>, csr: &[u8]) {
    match answer {
        Answer::SlowBody(_) | Answer::Endless => {}
        Answer::Body(b) => body.clone_from(b),
        Answer::Json(f) => {
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) {
                f(&mut v);
                *body = serde_json::to_vec_pretty(&v).expect("JSON");
            }
        }
        Answer::Header(name, value) => {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            headers.push(((*name).to_owned(), value.clone()));
        }
        Answer::Chain(f) => {
            let pem = String::from_utf8_lossy(body).into_owned();
            if pem.contains("-----BEGIN CERTIFICATE-----") {
                *body = f(&pem, csr).into_bytes();
            }
        }
    }
}

/// Longest a slow or endless answer goes on when the client keeps reading.
const MAX_DRIBBLE: Duration = Duration::from_secs(40);

/// Writes an answer whose head is `head` (status line and headers, without the length and
/// the blank line) and whose body is `body`, as `answer` says.
pub fn send(
    out: &mut impl Write,
    head: &[u8],
    body: &[u8],
    head_only: bool,
    answer: Option<&Answer>,
) -> io::Result<()> {
    let mut msg = head.to_vec();
    match answer {
        Some(Answer::Endless) => {
            msg.extend_from_slice(b"Connection: close\r\n\r\n");
            out.write_all(&msg)?;
            out.flush()?;
            let started = Instant::now();
            let chunk = [b' '; 16 * 1024];
            while started.elapsed() < MAX_DRIBBLE {
                out.write_all(&chunk)?;
                out.flush()?;
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }
        Some(Answer::SlowBody(pause)) => {
            msg.extend_from_slice(
                format!(
                    "Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.write_all(&msg)?;
            out.flush()?;
            let started = Instant::now();
            for b in body {
                if head_only || started.elapsed() > MAX_DRIBBLE {
                    break;
                }
                std::thread::sleep(*pause);
                out.write_all(&[*b])?;
                out.flush()?;
            }
            Ok(())
        }
        _ => {
            msg.extend_from_slice(
                format!(
                    "Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            if !head_only {
                msg.extend_from_slice(body);
            }
            out.write_all(&msg)?;
            out.flush()
        }
    }
}

/// The public key of a DER CSR, for minting a certificate with it.
struct CsrKey {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

fn csr_key(csr_der: &[u8]) -> CsrKey {
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .expect("the client's CSR");
    let spki = &csr.certification_request_info.subject_pki;
    let oid = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let alg = match (oid.as_str(), curve.as_deref()) {
        ("1.2.840.113549.1.1.1", _) => &rcgen::PKCS_RSA_SHA256,
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => &rcgen::PKCS_ECDSA_P384_SHA384,
        ("1.2.840.10045.2.1", _) => &rcgen::PKCS_ECDSA_P256_SHA256,
        other => panic!("CSR key algorithm {other:?}"),
    };
    CsrKey {
        raw: spki.subject_public_key.data.to_vec(),
        alg,
    }
}

/// The dNSName SANs of a DER CSR.
fn csr_names(csr_der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .expect("the client's CSR");
    let mut names = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push((*d).to_owned());
                }
            }
        }
    }
    names
}

/// A CA of the proxy's own (not Pebble's): its certificate PEM and its issuer.
pub struct RogueCa {
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl RogueCa {
    /// A new intermediate-like CA named `cn`.
    pub fn new(cn: &str) -> RogueCa {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("CA certificate");
        RogueCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// A leaf for the CSR's key and names, valid from `not_before` for 90 days, followed by
    /// this CA's certificate.
    pub fn chain_for(&self, csr_der: &[u8], not_before: time::OffsetDateTime) -> String {
        let mut p = rcgen::CertificateParams::new(csr_names(csr_der)).expect("params");
        p.not_before = not_before;
        p.not_after = not_before + time::Duration::days(90);
        let leaf = p.signed_by(&csr_key(csr_der), &self.issuer).expect("leaf");
        format!("{}{}", leaf.pem(), self.cert_pem)
    }
}

/// The PEM blocks of a chain, in order.
pub fn pem_split(chain: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in chain.lines() {
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}
