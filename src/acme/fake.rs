//! A scripted CA inside the test process, so that the orchestration above the protocol
//! (reconcile's grouping of targets by CA, its concurrency limit, deferral, backoff, ARI
//! replacement, partial failure) has table tests that run in milliseconds, without Pebble.
//!
//! It implements the same traits as the instant-acme adapter ([`Connector`], [`Ca`],
//! [`Issuer`]) and keeps the adapter's contract where the executor can tell: an order asks
//! the responder to present one challenge per name (the first type of `responder.kinds()` it
//! offers) and always cleans up, `on_finalized` is called with the order URL before the
//! download, and a valid order returns a real chain — a leaf for the CSR's own public key
//! and names, with an Authority Key Identifier (so it has an ARI id), signed by a CA
//! certificate made when the fake is — which `cert::validate_issued` checks as it checks a
//! real CA's. A script says, per order (by its first name), what the CA answers: issue,
//! invalid challenge, rate-limited with a retry time, a server error, unreachable, timed out,
//! or slow; and per certificate, the renewal window. Every call is recorded, in order, for
//! the tests to compare.
//!
//! What it cannot stand in for: the protocol itself (JWS, nonces and badNonce retries,
//! polling, HTTP, Retry-After headers and the pauses measured on the wall clock), validation
//! (nothing is fetched or resolved: the responder is only asked to present and clean up), and
//! the adapter's classification of the CA's answers: the fake builds the [`AcmeError`] values
//! the adapter (`acme/instant.rs`) builds for those answers. All of that stays covered by the
//! end-to-end tests against Pebble in tests/it/.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    AcmeError, Ca, Chains, Challenge, ChallengeKind, Connector, DirectoryMeta, Issued, Issuer,
    OrderOptions, Registration, Responder, Window,
};
use crate::clock::Clock;
use crate::name::Hostname;

/// Every order and certificate made by any fake in the process gets its own number, so that
/// order URLs (and so certificate ids) never repeat, even across fakes at the same URL.
static SERIAL: AtomicU64 = AtomicU64::new(1);

/// The lifetime of a certificate when the script does not say.
pub const LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// What the CA answers to one order (or to a registration).
#[derive(Clone, Debug)]
pub enum Answer {
    /// Validates and issues a certificate valid from a minute ago for `lifetime`.
    Issue {
        /// How long the certificate is valid.
        lifetime: Duration,
    },
    /// The challenge fails: the order becomes invalid with this detail for its first name.
    Invalid(String),
    /// Validates and finalizes (the order is recorded through `on_finalized`), then the
    /// download fails: what an interrupted run leaves, a certificate directory without its
    /// certificate, which a later `fetch_order_certificate` gets.
    DownloadFails,
    /// Refuses the new order for its rate, saying to retry after `retry_at`.
    RateLimited {
        /// When the CA says to come back.
        retry_at: OffsetDateTime,
    },
    /// Answers 500 serverInternal.
    ServerError,
    /// Cannot be connected to.
    Unreachable,
    /// Does not answer in time; from then on the CA counts as having stopped answering in
    /// this run, as the adapter counts it after repeated timeouts.
    TimedOut,
    /// Holds the order until `in_flight` orders are in progress at this CA, or `orders`
    /// orders have been made there (so the last ones of a row are not held for company
    /// that never comes), then keeps it in progress 20 ms more before issuing. The orders of
    /// a run that allows `in_flight` at a time are seen exactly that many at once, whatever
    /// the machine's load; a run that starts more at once is seen with more, as they pile
    /// up during the 20 ms. (At most five seconds are waited.)
    Hold {
        /// Orders in progress together that release the held ones.
        in_flight: usize,
        /// Orders made at this CA that release them all.
        orders: usize,
    },
    /// Offers this token in the challenge for the order's first name, then validates and
    /// issues as [`Answer::issue`] does (a token beginning with '-' is what an honest CA
    /// sends for 1 name in 64).
    Token(String),
    /// Takes `delay` before answering `then`.
    Slow {
        /// How long the CA takes.
        delay: Duration,
        /// What it answers then.
        then: Box<Answer>,
    },
}

impl Answer {
    /// Issues a certificate of the default lifetime.
    pub fn issue() -> Self {
        Answer::Issue { lifetime: LIFETIME }
    }

    /// Takes `delay`, then issues.
    pub fn slow(delay: Duration) -> Self {
        Answer::Slow {
            delay,
            then: Box::new(Answer::issue()),
        }
    }
}

/// One call the executor made, in the order made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `Connector::connect`.
    Connect {
        /// Directory URL.
        url: String,
    },
    /// `Ca::directory_meta`.
    Directory {
        /// Directory URL.
        url: String,
    },
    /// `Ca::login`; `known` when the CA knew the key.
    Login {
        /// Directory URL.
        url: String,
        /// Whether the key is a registered account.
        known: bool,
    },
    /// `Ca::register`.
    Register {
        /// Directory URL.
        url: String,
        /// The contact address given.
        email: Option<String>,
        /// Whether an External Account Binding was given.
        eab: bool,
    },
    /// `Issuer::issue`: a new order.
    Order {
        /// Directory URL.
        url: String,
        /// The identifiers ordered.
        names: Vec<String>,
        /// The ARI id of the certificate it replaces.
        replaces: Option<String>,
        /// The profile asked for.
        profile: Option<String>,
    },
    /// An authorization deactivated: its challenge was refused as the CA sent it
    /// ([`Responder::usable`]), so the next order brings a fresh one.
    Deactivate {
        /// Directory URL.
        url: String,
        /// The authorization's identifier.
        name: String,
    },
    /// `Issuer::renewal_info`.
    RenewalInfo {
        /// Directory URL.
        url: String,
        /// The certificate's ARI id.
        ari_id: String,
    },
    /// `Issuer::fetch_order_certificate`.
    Fetch {
        /// Directory URL.
        url: String,
        /// The order's URL.
        order_url: String,
    },
    /// `Issuer::revoke`.
    Revoke {
        /// Directory URL.
        url: String,
    },
}

/// What the CA is told to answer.
#[derive(Debug, Default)]
struct Script {
    /// Answers to orders by the order's first name, each used once, in turn.
    orders: BTreeMap<String, VecDeque<Answer>>,
    /// The answer to orders the script says nothing about (`None`: issue).
    default: Option<Answer>,
    /// Answers to registrations, each used once (then: registered).
    registrations: VecDeque<Answer>,
    /// Renewal windows by ARI id, with the Retry-After to send. A certificate the fake
    /// issued and the script says nothing about has the window of [`default_window`].
    windows: BTreeMap<String, (Window, Duration)>,
    /// Whether the directory lacks `renewalInfo`.
    no_ari: bool,
}

/// The connector to the fake CAs of one test, by directory URL; it keeps the calls made to
/// any of them in one list, so their order across CAs can be compared too.
#[derive(Debug)]
pub struct FakeConnector {
    cas: Mutex<BTreeMap<String, Arc<FakeCa>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    clock: Arc<dyn Clock>,
}

impl FakeConnector {
    /// A connector with no CA yet; certificates are dated by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            cas: Mutex::new(BTreeMap::new()),
            calls: Arc::new(Mutex::new(Vec::new())),
            clock,
        }
    }

    /// The fake CA at `url`, made on first use (a directory URL with no CA behind it is
    /// unreachable).
    pub fn ca(&self, url: &str) -> Arc<FakeCa> {
        lock(&self.cas)
            .entry(url.to_owned())
            .or_insert_with(|| Arc::new(FakeCa::new(url, self.calls.clone(), self.clock.clone())))
            .clone()
    }

    /// Every call made so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The orders made so far: (names, replaces), in the order they were made.
    pub fn orders(&self) -> Vec<(Vec<String>, Option<String>)> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Order {
                    names, replaces, ..
                } => Some((names, replaces)),
                _ => None,
            })
            .collect()
    }

    /// Ends what the adapter keeps for one run only (its connector lives as long as the
    /// command): a CA that stopped answering is asked again by the next run.
    pub fn next_run(&self) {
        for ca in lock(&self.cas).values() {
            ca.unresponsive.store(false, Ordering::SeqCst);
        }
    }

    /// Forgets the calls made so far (between two runs of a test).
    pub fn clear_calls(&self) {
        lock(&self.calls).clear();
    }
}

impl Connector for FakeConnector {
    type Ca = FakeCaHandle;
    fn connect(
        &self,
        directory_url: &str,
        _extra_roots: Option<&std::path::PathBuf>,
    ) -> anyhow::Result<FakeCaHandle> {
        lock(&self.calls).push(Call::Connect {
            url: directory_url.to_owned(),
        });
        match lock(&self.cas).get(directory_url) {
            Some(ca) => Ok(FakeCaHandle(ca.clone())),
            None => Err(anyhow!("connection refused: no CA at {directory_url}")),
        }
    }
}

/// One scripted CA.
#[derive(Debug)]
pub struct FakeCa {
    url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    clock: Arc<dyn Clock>,
    issuer: IssuerCert,
    script: Mutex<Script>,
    /// Registered account keys (PEM).
    accounts: Mutex<Vec<String>>,
    /// Chains issued, by order URL.
    issued: Mutex<BTreeMap<String, String>>,
    /// The validity of the certificates issued, by ARI id.
    validity: Mutex<BTreeMap<String, (OffsetDateTime, OffsetDateTime)>>,
    /// Orders made here.
    orders: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    unresponsive: AtomicBool,
    paused_until: Mutex<Option<SystemTime>>,
}

/// The CA certificate and its key.
struct IssuerCert {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for IssuerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerCert").finish_non_exhaustive()
    }
}

impl FakeCa {
    fn new(url: &str, calls: Arc<Mutex<Vec<Call>>>, clock: Arc<dyn Clock>) -> Self {
        let now = OffsetDateTime::from(clock.now());
        Self {
            url: url.to_owned(),
            calls,
            issuer: issuer_cert(url, now).expect("the fake CA's certificate"),
            clock,
            script: Mutex::new(Script::default()),
            accounts: Mutex::new(Vec::new()),
            issued: Mutex::new(BTreeMap::new()),
            validity: Mutex::new(BTreeMap::new()),
            orders: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            unresponsive: AtomicBool::new(false),
            paused_until: Mutex::new(None),
        }
    }

    /// The next order whose first name is `first_name` is answered with `answer` (answers
    /// given for the same name are used in turn; then the default).
    pub fn answer(&self, first_name: &str, answer: Answer) -> &Self {
        lock(&self.script)
            .orders
            .entry(first_name.to_owned())
            .or_default()
            .push_back(answer);
        self
    }

    /// Orders the script says nothing about are answered with `answer` (default: issue).
    pub fn answer_all(&self, answer: Answer) -> &Self {
        lock(&self.script).default = Some(answer);
        self
    }

    /// The next registration is answered with `answer` (an `Issue` registers).
    pub fn answer_registration(&self, answer: Answer) -> &Self {
        lock(&self.script).registrations.push_back(answer);
        self
    }

    /// The renewal window of the certificate with ARI id `ari_id`, asked about again after
    /// `retry_after`.
    pub fn window(&self, ari_id: &str, window: Window, retry_after: Duration) -> &Self {
        lock(&self.script)
            .windows
            .insert(ari_id.to_owned(), (window, retry_after));
        self
    }

    /// The directory offers no `renewalInfo`.
    pub fn without_ari(&self) -> &Self {
        lock(&self.script).no_ari = true;
        self
    }

    /// From now on the CA has asked to slow down until `until`, longer than a run waits.
    pub fn pause_until(&self, until: SystemTime) -> &Self {
        *lock(&self.paused_until) = Some(until);
        self
    }

    /// Forgets every order it finished (as a CA does after a while): downloading their
    /// certificates is answered 404.
    pub fn forget_orders(&self) -> &Self {
        lock(&self.issued).clear();
        self
    }

    /// The most orders that were in progress at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    fn log(&self, call: Call) {
        lock(&self.calls).push(call);
    }

    fn next_order_answer(&self, first_name: &str) -> Answer {
        let mut script = lock(&self.script);
        if let Some(a) = script
            .orders
            .get_mut(first_name)
            .and_then(VecDeque::pop_front)
        {
            return a;
        }
        script.default.clone().unwrap_or_else(Answer::issue)
    }

    /// The error the adapter makes of a refusal `answer` to `context`, as it renders it.
    fn error(&self, context: &str, answer: &Answer) -> AcmeError {
        match answer {
            Answer::RateLimited { retry_at } => rate_limited(context, *retry_at),
            Answer::ServerError => problem(
                context,
                "serverInternal",
                "the CA had an internal error",
                500,
            ),
            Answer::Invalid(detail) => problem(context, "unauthorized", detail, 403),
            Answer::TimedOut => {
                self.unresponsive.store(true, Ordering::SeqCst);
                AcmeError::Other(anyhow!("request timed out").context(context.to_owned()))
            }
            Answer::Unreachable
            | Answer::DownloadFails
            | Answer::Issue { .. }
            | Answer::Token(_)
            | Answer::Hold { .. }
            | Answer::Slow { .. } => {
                AcmeError::Other(anyhow!("connection refused").context(context.to_owned()))
            }
        }
    }

    fn session(self: &Arc<Self>, pem: &str) -> FakeSession {
        let n = lock(&self.accounts)
            .iter()
            .position(|k| k == pem)
            .unwrap_or_default();
        FakeSession {
            ca: self.clone(),
            account_url: format!("{}/acct/{n}", self.url),
        }
    }

    /// A leaf for the CSR's names and key, dated by the clock, and the CA certificate.
    fn sign(&self, csr_der: &[u8], lifetime: Duration) -> anyhow::Result<(Vec<String>, String)> {
        use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension};
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
                .map_err(|e| anyhow!("badCSR: {e}"))?;
        let info = &csr.certification_request_info;
        let mut names = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => names.push((*d).to_owned()),
                        GeneralName::IPAddress(b) => names.push(ip_text(b)?),
                        _ => {}
                    }
                }
            }
        }
        let key = CsrKey::of(
            info.subject_pki.raw,
            &info.subject_pki.subject_public_key.data,
        )?;
        let now = OffsetDateTime::from(self.clock.now());
        let mut params = rcgen::CertificateParams::new(names.clone())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + lifetime;
        params.serial_number = Some(rcgen::SerialNumber::from(
            SERIAL.fetch_add(1, Ordering::SeqCst),
        ));
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(&key, &self.issuer.issuer)
            .context("signing the certificate")?;
        let ari_id = crate::cert::ari_id(leaf.der())?;
        lock(&self.validity).insert(ari_id, (params.not_before, params.not_after));
        Ok((names, format!("{}{}", leaf.pem(), self.issuer.pem)))
    }
}

/// A self-signed CA certificate for the fake at `url`, valid around `now`.
fn issuer_cert(url: &str, now: OffsetDateTime) -> anyhow::Result<IssuerCert> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("Fake CA {url}"));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key)?;
    Ok(IssuerCert {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    })
}

fn ip_text(bytes: &[u8]) -> anyhow::Result<String> {
    Ok(match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes)?).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes)?).to_string(),
        _ => anyhow::bail!("badCSR: an IP address SAN of {} bytes", bytes.len()),
    })
}

/// The CSR's public key as rcgen signs it: rcgen writes the SubjectPublicKeyInfo itself
/// from the algorithm and the key bits.
struct CsrKey {
    bits: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
}

impl CsrKey {
    /// The key whose SubjectPublicKeyInfo is `spki` (the types acmekeep makes keys of).
    fn of(spki: &[u8], bits: &[u8]) -> anyhow::Result<Self> {
        [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_RSA_SHA256,
            &rcgen::PKCS_ED25519,
        ]
        .into_iter()
        .map(|algorithm| Self {
            bits: bits.to_vec(),
            algorithm,
        })
        .find(|k| rcgen::PublicKeyData::subject_public_key_info(k) == spki)
        .ok_or_else(|| anyhow!("badCSR: a key of a type the fake CA does not sign"))
    }
}

impl rcgen::PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

/// [`Ca`] for one fake.
#[derive(Debug, Clone)]
pub struct FakeCaHandle(Arc<FakeCa>);

impl Ca for FakeCaHandle {
    type Session = FakeSession;

    async fn directory_meta(&self) -> Result<DirectoryMeta, AcmeError> {
        let ca = &self.0;
        ca.log(Call::Directory {
            url: ca.url.clone(),
        });
        Ok(DirectoryMeta {
            renewal_info: (!lock(&ca.script).no_ari).then(|| format!("{}/renewal-info", ca.url)),
            ..DirectoryMeta::default()
        })
    }

    async fn login(&self, key_pem: &str) -> Result<FakeSession, AcmeError> {
        let ca = &self.0;
        let known = lock(&ca.accounts).iter().any(|k| k == key_pem);
        ca.log(Call::Login {
            url: ca.url.clone(),
            known,
        });
        if known {
            Ok(ca.session(key_pem))
        } else {
            Err(AcmeError::AccountDoesNotExist)
        }
    }

    async fn register(&self, key_pem: &str, reg: &Registration) -> Result<FakeSession, AcmeError> {
        let ca = &self.0;
        ca.log(Call::Register {
            url: ca.url.clone(),
            email: reg.email.clone(),
            eab: reg.eab.is_some(),
        });
        let answer = lock(&ca.script).registrations.pop_front();
        match answer {
            None | Some(Answer::Issue { .. }) => {
                lock(&ca.accounts).push(key_pem.to_owned());
                Ok(ca.session(key_pem))
            }
            Some(refusal) => Err(ca.error("registering the account", &refusal)),
        }
    }

    async fn change_key(&self, old_key_pem: &str, new_key_pem: &str) -> Result<String, AcmeError> {
        let ca = &self.0;
        let mut accounts = lock(&ca.accounts);
        match accounts.iter().position(|k| k == old_key_pem) {
            Some(i) => {
                accounts[i] = new_key_pem.to_owned();
                Ok(format!("{}/acct/{i}", ca.url))
            }
            None => Err(AcmeError::AccountDoesNotExist),
        }
    }

    async fn deactivate(&self, key_pem: &str) -> Result<String, AcmeError> {
        let ca = &self.0;
        let mut accounts = lock(&ca.accounts);
        match accounts.iter().position(|k| k == key_pem) {
            Some(i) => {
                accounts[i] = String::new();
                Ok(format!("{}/acct/{i}", ca.url))
            }
            None => Err(AcmeError::AccountDoesNotExist),
        }
    }

    fn unresponsive(&self) -> bool {
        self.0.unresponsive.load(Ordering::SeqCst)
    }
}

/// [`Issuer`] for one account at a fake.
#[derive(Debug)]
pub struct FakeSession {
    ca: Arc<FakeCa>,
    account_url: String,
}

/// Counts an order as in progress while it lives.
struct InFlight<'a>(&'a FakeCa);

impl<'a> InFlight<'a> {
    fn start(ca: &'a FakeCa) -> Self {
        let now = ca.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        ca.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(ca)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeSession {
    /// One order, as the script answers it.
    async fn one_order(
        &self,
        names: &[Hostname],
        csr_der: &[u8],
        options: OrderOptions<'_>,
        responder: &dyn Responder,
        on_finalized: &(dyn Fn(&str) -> anyhow::Result<()> + Sync),
    ) -> Result<Issued, AcmeError> {
        let ca = &*self.ca;
        let texts: Vec<String> = names.iter().map(ToString::to_string).collect();
        ca.log(Call::Order {
            url: ca.url.clone(),
            names: texts.clone(),
            replaces: options.replaces.map(str::to_owned),
            profile: options.profile.map(str::to_owned),
        });
        let _in_flight = InFlight::start(ca);
        ca.orders.fetch_add(1, Ordering::SeqCst);
        let mut answer = ca.next_order_answer(texts.first().map_or("", String::as_str));
        loop {
            match answer {
                Answer::Slow { delay, then } => {
                    tokio::time::sleep(delay).await;
                    answer = *then;
                }
                Answer::Hold { in_flight, orders } => {
                    let until = std::time::Instant::now() + Duration::from_secs(5);
                    while ca.in_flight.load(Ordering::SeqCst) < in_flight
                        && ca.orders.load(Ordering::SeqCst) < orders
                        && std::time::Instant::now() < until
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    answer = Answer::issue();
                }
                _ => break,
            }
        }
        let lifetime = match &answer {
            Answer::Issue { lifetime } => *lifetime,
            Answer::Invalid(_) | Answer::DownloadFails | Answer::Token(_) => LIFETIME,
            refusal => return Err(ca.error("creating the order", refusal)),
        };
        let n = SERIAL.fetch_add(1, Ordering::SeqCst);
        let order_url = format!("{}/order/{n}", ca.url);
        let token = match &answer {
            Answer::Token(t) => Some(t.as_str()),
            _ => None,
        };
        let challenges = challenges(n, &texts, token, responder)?;
        // Asked before anything is set up, as the adapter asks; a refused challenge's
        // authorization is deactivated.
        for ch in &challenges {
            if let Err(e) = responder.usable(ch) {
                ca.log(Call::Deactivate {
                    url: ca.url.clone(),
                    name: ch.identifier.clone(),
                });
                return Err(AcmeError::Other(e.into()));
            }
        }
        let presented = responder.present_all(&challenges).await;
        responder.cleanup_all(&challenges).await;
        presented.map_err(AcmeError::Other)?;
        if let Answer::Invalid(detail) = &answer {
            return Err(AcmeError::Validation {
                failed: vec![crate::acme::error::FailedChallenge {
                    identifier: texts.first().cloned().unwrap_or_default(),
                    problem: ca_problem("unauthorized", detail, 403, None),
                }],
            });
        }
        let (signed, chain) = ca
            .sign(csr_der, lifetime)
            .map_err(|e| problem("finalizing the order", "badCSR", &format!("{e:#}"), 400))?;
        let (mut want, mut got) = (texts.clone(), signed);
        want.sort();
        got.sort();
        if want != got {
            return Err(problem(
                "finalizing the order",
                "badCSR",
                &format!("the CSR names {got:?}, the order {want:?}"),
                400,
            ));
        }
        on_finalized(&order_url).map_err(AcmeError::Other)?;
        lock(&ca.issued).insert(order_url.clone(), chain.clone());
        if let Answer::DownloadFails = answer {
            return Err(AcmeError::Other(
                anyhow!("connection reset by peer").context("downloading the certificate"),
            ));
        }
        Ok(Issued {
            order_url,
            chains: Chains {
                default: chain,
                alternates: Vec::new(),
            },
        })
    }
}

impl Issuer for FakeSession {
    async fn issue(
        &self,
        names: &[Hostname],
        csr_der: &[u8],
        options: OrderOptions<'_>,
        responder: &dyn Responder,
        on_finalized: &(dyn Fn(&str) -> anyhow::Result<()> + Sync),
    ) -> Result<Issued, AcmeError> {
        // As the adapter does: a challenge the responder refuses gets fresh orders.
        super::order_with_usable_challenges(|| {
            self.one_order(names, csr_der, options, responder, on_finalized)
        })
        .await
    }

    async fn fetch_order_certificate(
        &self,
        order_url: &str,
        _alternate_chains: bool,
    ) -> Result<Option<Chains>, AcmeError> {
        let ca = &*self.ca;
        ca.log(Call::Fetch {
            url: ca.url.clone(),
            order_url: order_url.to_owned(),
        });
        match lock(&ca.issued).get(order_url) {
            Some(chain) => Ok(Some(Chains {
                default: chain.clone(),
                alternates: Vec::new(),
            })),
            None => Err(gone(
                "fetching the order",
                &format!("no order at {order_url}"),
            )),
        }
    }

    async fn renewal_info(&self, ari_id: &str) -> Result<Option<(Window, Duration)>, AcmeError> {
        let ca = &*self.ca;
        // As instant-acme: without `renewalInfo` in the directory nothing is sent.
        if lock(&ca.script).no_ari {
            return Ok(None);
        }
        ca.log(Call::RenewalInfo {
            url: ca.url.clone(),
            ari_id: ari_id.to_owned(),
        });
        let script = lock(&ca.script);
        if let Some(w) = script.windows.get(ari_id) {
            return Ok(Some(*w));
        }
        match lock(&ca.validity).get(ari_id) {
            Some(&(from, to)) => Ok(Some((default_window(from, to), DEFAULT_RETRY_AFTER))),
            None => Err(problem(
                "asking for renewal information",
                "malformed",
                &format!("no certificate {ari_id}"),
                404,
            )),
        }
    }

    fn thumbprint(&self) -> String {
        "fake-thumbprint".to_owned()
    }

    fn ca_unresponsive(&self) -> bool {
        self.ca.unresponsive.load(Ordering::SeqCst)
    }

    fn ca_paused_until(&self) -> Option<SystemTime> {
        *lock(&self.ca.paused_until)
    }

    fn account_url(&self) -> String {
        self.account_url.clone()
    }

    async fn revoke(&self, _cert_der: &[u8], _reason: u8) -> Result<(), AcmeError> {
        let ca = &*self.ca;
        ca.log(Call::Revoke {
            url: ca.url.clone(),
        });
        Ok(())
    }
}

/// The error the adapter makes of the CA's problem `kind` (an ACME error type without its
/// namespace) with `detail`, answered with HTTP `status` to the request `context` names.
fn problem(context: &str, kind: &str, detail: &str, status: u16) -> AcmeError {
    AcmeError::Ca {
        context: context.to_owned(),
        problem: ca_problem(kind, detail, status, None),
    }
}

/// The CA's problem document as the adapter reads it.
fn ca_problem(
    kind: &str,
    detail: &str,
    status: u16,
    retry_at: Option<OffsetDateTime>,
) -> crate::acme::Problem {
    crate::acme::Problem {
        kind: Some(format!("urn:ietf:params:acme:error:{kind}")),
        detail: Some(detail.to_owned()),
        status: Some(status),
        subproblems: Vec::new(),
        retry_at,
    }
}

/// The error the adapter makes of a `rateLimited` answer saying to retry after `retry_at`
/// (the time as a value; the text says it too, as Let's Encrypt's does).
fn rate_limited(context: &str, retry_at: OffsetDateTime) -> AcmeError {
    let detail = format!(
        "too many new orders recently, retry after {}",
        retry_at.format(&Rfc3339).unwrap_or_default()
    );
    AcmeError::RateLimited {
        context: context.to_owned(),
        problem: ca_problem("rateLimited", &detail, 429, Some(retry_at)),
    }
}

/// The error the adapter makes of a 404 to fetching what an earlier run ordered.
fn gone(context: &str, detail: &str) -> AcmeError {
    AcmeError::Gone {
        context: context.to_owned(),
        problem: ca_problem("malformed", &format!("{detail} (HTTP 404)"), 404, None),
    }
}

/// The error the adapter makes when what the CA offered makes the order fail (no challenge
/// type allowed).
fn refused(text: String) -> AcmeError {
    AcmeError::Refused(text)
}

/// The Retry-After of a window the script does not give.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// The window of a certificate valid `from` `to` that the script says nothing about: from
/// half to two thirds of its lifetime, so that it is due no later than by the local rule.
pub fn default_window(from: OffsetDateTime, to: OffsetDateTime) -> Window {
    let life = to - from;
    Window {
        start: from + life / 2,
        end: from + life * 2 / 3,
    }
}

/// One challenge per name of order `n`: the first type the responder allows (the fake offers
/// http-01, dns-01 and tls-alpn-01, as Pebble does); the first name's token is `first_token`
/// when the script chose one.
fn challenges(
    n: u64,
    names: &[String],
    first_token: Option<&str>,
    responder: &dyn Responder,
) -> Result<Vec<Challenge>, AcmeError> {
    const OFFERED: [ChallengeKind; 3] = [
        ChallengeKind::Http01,
        ChallengeKind::Dns01,
        ChallengeKind::TlsAlpn01,
    ];
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (identifier, wildcard) = match name.strip_prefix("*.") {
            Some(base) => (base.to_owned(), true),
            None => (name.clone(), false),
        };
        let Some(kind) = responder
            .kinds()
            .iter()
            .copied()
            .find(|k| OFFERED.contains(k) && !(wildcard && *k != ChallengeKind::Dns01))
        else {
            return Err(refused(format!(
                "no allowed challenge type is offered for {name}"
            )));
        };
        let token = match first_token {
            Some(t) if i == 0 => t.to_owned(),
            _ => format!("fake-token-{n:012}-{i:04}"),
        };
        out.push(Challenge {
            kind,
            record_name: match kind {
                ChallengeKind::Dns01 => format!("_acme-challenge.{identifier}"),
                _ => String::new(),
            },
            identifier,
            wildcard,
            key_authorization: format!("{token}.fake-thumbprint"),
            token,
            persist: None,
        });
    }
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
