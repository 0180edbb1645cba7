//! The built-in tls-alpn-01 responder (RFC 8737, and RFC 8738 for IP identifiers).
//!
//! One set of sockets per run answers every order's challenges from a shared map, like the
//! http-01 [`listener`](super::listener). A handshake is completed only for a client that
//! offers the `acme-tls/1` protocol and names an identifier being validated (by SNI, or for
//! an IP identifier by the reverse-DNS name or by connecting to that address without SNI);
//! it then gets the challenge's self-signed certificate and the connection is closed. Every
//! other ClientHello fails. Nothing here is a web server: no ordinary client is ever served.
//!
//! Slow or numerous clients cannot pin it (Traefik's GHSA-cwjm-3f7h-9hwq was a ClientHello
//! trickled forever): each connection, handshake and close included, has a deadline, and
//! the number of connections is capped. Over the cap, the oldest connection that has not sent
//! its ClientHello yet is closed to make room, and only when every connection is handshaking
//! is a new one closed at once (the accept loop shared with the other servers,
//! [`super::accept`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::ServerConfig;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::accept::{self, Running};
use super::slots::{Slot, Slots};
use crate::name::Hostname;

/// The ALPN protocol name of RFC 8737 §6.2.
pub const ACME_TLS_1: &[u8] = b"acme-tls/1";

/// How long a connection may take, and how many may be open at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deadline for the whole connection: ClientHello, handshake and close.
    pub handshake_timeout: Duration,
    /// Connections open at once, over all addresses; more are closed immediately.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// What a ClientHello can ask for: a DNS name by SNI, or an IP address by reverse-DNS SNI
/// or by the local address it connected to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Dns(String),
    Ip(IpAddr),
}

impl Key {
    /// The key for an SNI value; `None` if it names nothing we could have a certificate for.
    fn from_sni(sni: &str) -> Option<Key> {
        match reverse_name_ip(sni) {
            Some(ip) => Some(Key::Ip(ip)),
            None => Hostname::parse(sni)
                .ok()
                .filter(|h| !h.is_wildcard())
                .map(|h| Key::Dns(h.as_str().to_owned())),
        }
    }
}

/// Certificates being answered: identifier (DNS name, or IP address per RFC 8738) → the
/// RFC 8737 self-signed certificate and its key. Shared with the issuer, like
/// [`TokenMap`](super::listener::TokenMap).
#[derive(Debug, Default)]
pub struct AlpnCerts(RwLock<HashMap<Key, Arc<CertifiedKey>>>);

impl AlpnCerts {
    /// Starts answering `identifier` with a fresh certificate for `key_authorization`: its
    /// only SAN is the identifier, and its critical id-pe-acmeIdentifier extension holds
    /// SHA-256 of the key authorization. Replaces any earlier certificate for it.
    pub fn insert(&self, identifier: &str, key_authorization: &str) -> Result<()> {
        let (key, san) = identifier_key(identifier)?;
        let cert = challenge_cert(&san, key_authorization)
            .with_context(|| format!("tls-alpn-01 certificate for {identifier}"))?;
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Arc::new(cert));
        Ok(())
    }

    /// Stops answering `identifier`.
    pub fn remove(&self, identifier: &str) {
        if let Ok((key, _)) = identifier_key(identifier) {
            self.0
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }

    fn get(&self, key: &Key) -> Option<Arc<CertifiedKey>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}

/// The map key and the SAN text for an identifier, validated.
fn identifier_key(identifier: &str) -> Result<(Key, String)> {
    if let Ok(ip) = identifier.parse::<IpAddr>() {
        return Ok((Key::Ip(ip), ip.to_string()));
    }
    let name = Hostname::parse(identifier)?;
    if name.is_wildcard() {
        // RFC 8737 §3: tls-alpn-01 cannot validate a wildcard.
        bail!("tls-alpn-01 cannot answer for the wildcard {identifier}");
    }
    Ok((Key::Dns(name.as_str().to_owned()), name.as_str().to_owned()))
}

/// Builds the RFC 8737 §3 certificate. No subject (the SAN is then critical, RFC 5280
/// §4.2.1.6) and rcgen's fixed validity, so that building it reads no clock.
fn challenge_cert(san: &str, key_authorization: &str) -> Result<CertifiedKey> {
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![san.to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let cert = params.self_signed(&key)?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
        key.serialize_der().into(),
    ))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

/// The IP address named by an RFC 8738 §6 reverse-DNS name (`4.3.2.1.in-addr.arpa`,
/// 32 nibbles `.ip6.arpa`), if `name` is one.
fn reverse_name_ip(name: &str) -> Option<IpAddr> {
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some(rest) = lower.strip_suffix(".in-addr.arpa") {
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 4 {
            return None;
        }
        let mut octets = [0u8; 4];
        for (octet, label) in octets.iter_mut().zip(labels.iter().rev()) {
            let canonical = !label.is_empty()
                && label.len() <= 3
                && label.bytes().all(|b| b.is_ascii_digit())
                && (label.len() == 1 || !label.starts_with('0'));
            if !canonical {
                return None;
            }
            *octet = label.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Some(rest) = lower.strip_suffix(".ip6.arpa") {
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 32 {
            return None;
        }
        let mut bits = 0u128;
        for label in labels.iter().rev() {
            let &[c] = label.as_bytes() else {
                return None;
            };
            bits = (bits << 4) | u128::from(char::from(c).to_digit(16)?);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(bits)));
    }
    None
}

/// Picks the certificate for one connection. Knows the local address the connection came
/// in on, for RFC 8738 clients that send no SNI.
#[derive(Debug)]
struct Resolver {
    certs: Arc<AlpnCerts>,
    local: Option<IpAddr>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls already refuses a client whose ALPN list lacks acme-tls/1 (we offer nothing
        // else); a client that sends no ALPN at all gets here and must get nothing.
        if !hello.alpn()?.any(|p| p == ACME_TLS_1) {
            return None;
        }
        let key = match hello.server_name() {
            Some(sni) => Key::from_sni(sni)?,
            None => Key::Ip(self.local?),
        };
        let found = self.certs.get(&key);
        if found.is_none() {
            tracing::debug!("tls-alpn-01: no challenge for {key:?}");
        }
        found
    }
}

/// The configuration every connection starts from: acme-tls/1 only, no resumption (a
/// resumed session would skip choosing the certificate).
fn base_config(certs: Arc<AlpnCerts>) -> Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver { certs, local: None }));
    config.alpn_protocols = vec![ACME_TLS_1.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// Running tls-alpn-01 listeners; they stop when this is dropped.
#[derive(Debug)]
pub struct AlpnListeners(Running);

impl AlpnListeners {
    /// Binds every address it can, with the default [`Limits`]. Failures are logged: port 443
    /// is usually taken by a web server, and then this method is simply not available.
    pub async fn start(addrs: &[(String, bool)], certs: Arc<AlpnCerts>) -> AlpnListeners {
        Self::start_with(addrs, certs, Limits::default()).await
    }

    /// [`start`](Self::start) with explicit limits.
    pub async fn start_with(
        addrs: &[(String, bool)],
        certs: Arc<AlpnCerts>,
        limits: Limits,
    ) -> AlpnListeners {
        let config = match base_config(certs.clone()) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::warn!("tls-alpn-01 listener not started: {e:#}");
                return AlpnListeners(Running::default());
            }
        };
        let listeners = accept::bind_all(addrs, "tls-alpn-01").await;
        let handle = move |stream: TcpStream, peer: SocketAddr, slot: Arc<Slot>| {
            let (certs, config) = (certs.clone(), config.clone());
            async move {
                match answer(stream, certs, &config, &slot).await {
                    Ok(()) => tracing::debug!("tls-alpn-01: answered {peer}"),
                    Err(e) => tracing::debug!("tls-alpn-01: {peer}: {e}"),
                }
            }
        };
        let slots = Slots::new(limits.max_connections);
        AlpnListeners(Running::spawn(
            listeners,
            &slots,
            limits.handshake_timeout,
            "tls-alpn-01",
            handle,
        ))
    }

    /// Addresses actually listening.
    pub fn bound(&self) -> &[SocketAddr] {
        self.0.bound()
    }
}

/// One connection: the ClientHello (until it has come, the connection is idle and may make
/// room for a newer one), the handshake with this connection's resolver, then close_notify
/// and close.
async fn answer(
    stream: TcpStream,
    certs: Arc<AlpnCerts>,
    base: &ServerConfig,
    slot: &Slot,
) -> std::io::Result<()> {
    let local = stream.local_addr()?.ip().to_canonical();
    let hello =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    slot.busy();
    let mut config = base.clone();
    config.cert_resolver = Arc::new(Resolver {
        certs,
        local: Some(local),
    });
    let mut tls = hello.into_stream(Arc::new(config)).await?;
    tls.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio::io::AsyncReadExt;
    use tokio_rustls::TlsConnector;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    /// Accepts any certificate: the tests inspect it themselves, as a CA's VA does.
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

    impl AnyCert {
        /// Checks the handshake signature against the certificate's key. rustls's own
        /// helpers would parse the certificate with webpki, which refuses the unknown
        /// critical acmeIdentifier extension (as it should for any real use).
        fn verify(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let bad = || rustls::Error::General("bad handshake signature".into());
            let (_, parsed) = X509Certificate::from_der(cert).map_err(|_| bad())?;
            let public_key = &parsed.public_key().subject_public_key.data;
            let algs = &self.0.signature_verification_algorithms;
            let (_, candidates) = algs
                .mapping
                .iter()
                .find(|(scheme, _)| *scheme == dss.scheme)
                .ok_or_else(bad)?;
            candidates
                .iter()
                .any(|alg| {
                    alg.verify_signature(public_key, message, dss.signature())
                        .is_ok()
                })
                .then(HandshakeSignatureValid::assertion)
                .ok_or_else(bad)
        }
    }

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.verify(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.verify(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    const KA: &str = "tok.thumbprint";

    fn limits(handshake_timeout: Duration, max_connections: usize) -> Limits {
        Limits {
            handshake_timeout,
            max_connections,
        }
    }

    async fn start(limits: Limits) -> (AlpnListeners, Arc<AlpnCerts>, SocketAddr) {
        let certs = Arc::new(AlpnCerts::default());
        let l =
            AlpnListeners::start_with(&[("127.0.0.1:0".into(), true)], certs.clone(), limits).await;
        let addr = *l.bound().first().expect("bound");
        (l, certs, addr)
    }

    /// A handshake as a CA's VA makes it; the server's certificate on success.
    async fn handshake(
        addr: SocketAddr,
        name: &str,
        alpn: &[&[u8]],
    ) -> std::io::Result<CertificateDer<'static>> {
        handshake_with(addr, name, alpn, rustls::DEFAULT_VERSIONS).await
    }

    async fn handshake_with(
        addr: SocketAddr,
        name: &str,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::io::Result<CertificateDer<'static>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // An IP address as the server name makes rustls send no SNI at all.
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        let tcp = TcpStream::connect(addr).await?;
        let tls = tokio::time::timeout(
            Duration::from_secs(5),
            TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await??;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(ACME_TLS_1));
        let chain = conn.peer_certificates().expect("a certificate");
        assert_eq!(chain.len(), 1);
        Ok(chain[0].clone().into_owned())
    }

    /// Checks the RFC 8737 §3 shape: one SAN, the critical acmeIdentifier extension holding
    /// a DER OCTET STRING of SHA-256(key authorization).
    fn assert_challenge_cert(der: &[u8], san: GeneralName<'_>, key_authorization: &str) {
        let (_, cert) = X509Certificate::from_der(der).expect("parse");
        let sans = cert
            .subject_alternative_name()
            .expect("SAN extension")
            .expect("SAN present");
        assert_eq!(sans.value.general_names, vec![san]);
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical, "acmeIdentifier must be critical");
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
        let mut expected = vec![0x04, 32];
        expected.extend_from_slice(digest.as_ref());
        assert_eq!(ext.value, expected.as_slice());
    }

    #[tokio::test]
    async fn answers_acme_tls_1_with_the_rfc8737_certificate() {
        let (_l, certs, addr) = start(Limits::default()).await;
        certs.insert("Example.TEST", KA).expect("insert");
        let der = handshake(addr, "example.test", &[ACME_TLS_1])
            .await
            .expect("handshake");
        assert_challenge_cert(&der, GeneralName::DNSName("example.test"), KA);
        // RFC 8737 §3 allows TLS 1.2 as well.
        let der = handshake_with(
            addr,
            "example.test",
            &[ACME_TLS_1],
            &[&rustls::version::TLS12],
        )
        .await
        .expect("TLS 1.2 handshake");
        assert_challenge_cert(&der, GeneralName::DNSName("example.test"), KA);
    }

    #[tokio::test]
    async fn ip_identifiers_by_local_address_or_reverse_name() {
        let (_l, certs, addr) = start(Limits::default()).await;
        certs.insert("127.0.0.1", KA).expect("insert");
        let ip = GeneralName::IPAddress(&[127, 0, 0, 1]);
        // No SNI: the address the connection came in on.
        let der = handshake(addr, "127.0.0.1", &[ACME_TLS_1])
            .await
            .expect("no SNI");
        assert_challenge_cert(&der, ip.clone(), KA);
        let der = handshake(addr, "1.0.0.127.in-addr.arpa", &[ACME_TLS_1])
            .await
            .expect("reverse name");
        assert_challenge_cert(&der, ip, KA);
        // Another address's reverse name, or no SNI at an address without a challenge.
        assert!(
            handshake(addr, "2.0.0.127.in-addr.arpa", &[ACME_TLS_1])
                .await
                .is_err()
        );
        certs.remove("127.0.0.1");
        assert!(handshake(addr, "127.0.0.1", &[ACME_TLS_1]).await.is_err());
    }

    #[tokio::test]
    async fn other_alpn_or_none_gets_no_certificate() {
        let (_l, certs, addr) = start(Limits::default()).await;
        certs.insert("example.test", KA).expect("insert");
        assert!(handshake(addr, "example.test", &[]).await.is_err());
        assert!(
            handshake(addr, "example.test", &[b"h2", b"http/1.1"])
                .await
                .is_err()
        );
        assert!(
            handshake(addr, "example.test", &[b"acme-tls/1.1"])
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn unknown_sni_gets_no_certificate() {
        let (_l, certs, addr) = start(Limits::default()).await;
        certs.insert("example.test", KA).expect("insert");
        assert!(handshake(addr, "other.test", &[ACME_TLS_1]).await.is_err());
        assert!(
            handshake(addr, "sub.example.test", &[ACME_TLS_1])
                .await
                .is_err()
        );
        // A name without SNI-able identity (plain IP, nothing inserted for it) fails too.
        assert!(handshake(addr, "127.0.0.1", &[ACME_TLS_1]).await.is_err());
    }

    #[tokio::test]
    async fn removed_certificate_is_no_longer_served() {
        let (_l, certs, addr) = start(Limits::default()).await;
        certs.insert("example.test", KA).expect("insert");
        handshake(addr, "example.test", &[ACME_TLS_1])
            .await
            .expect("served");
        certs.insert("example.test", "tok.other").expect("replace");
        let der = handshake(addr, "example.test", &[ACME_TLS_1])
            .await
            .expect("served");
        assert_challenge_cert(&der, GeneralName::DNSName("example.test"), "tok.other");
        certs.remove("EXAMPLE.test.");
        assert!(
            handshake(addr, "example.test", &[ACME_TLS_1])
                .await
                .is_err()
        );
    }

    /// Reads until the server closes.
    async fn wait_closed(stream: &mut TcpStream) {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => continue,
                Err(_) => panic!("connection still open after 10 s"),
            }
        }
    }

    #[tokio::test]
    async fn slow_client_is_dropped_at_the_deadline() {
        let deadline = Duration::from_millis(300);
        let (_l, certs, addr) = start(limits(deadline, 256)).await;
        certs.insert("example.test", KA).expect("insert");
        let start = tokio::time::Instant::now();
        // Sends nothing at all.
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        // Trickles the start of a ClientHello (a handshake record header) and stalls.
        let mut trickle = TcpStream::connect(addr).await.expect("connect");
        trickle
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .expect("write");
        for s in [&mut silent, &mut trickle] {
            wait_closed(s).await;
            let took = start.elapsed();
            assert!(took >= deadline / 2, "closed too early: {took:?}");
        }
        // The listener is still serving.
        handshake(addr, "example.test", &[ACME_TLS_1])
            .await
            .expect("served");
    }

    #[tokio::test]
    async fn idle_connections_at_the_cap_no_longer_lock_real_clients_out() {
        let (_l, certs, addr) = start(limits(Duration::from_secs(30), 2)).await;
        certs.insert("example.test", KA).expect("insert");
        // The cap filled with connections that never send a ClientHello.
        let mut oldest = TcpStream::connect(addr).await.expect("connect");
        let _newer = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A real client is answered at once; the oldest idle connection made room.
        let started = tokio::time::Instant::now();
        handshake(addr, "example.test", &[ACME_TLS_1])
            .await
            .expect("served despite the idle connections");
        assert!(started.elapsed() < Duration::from_secs(5));
        wait_closed(&mut oldest).await;
    }

    #[tokio::test]
    async fn bind_failures_are_skipped() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_addr = taken.local_addr().expect("addr").to_string();
        let certs = Arc::new(AlpnCerts::default());
        let l =
            AlpnListeners::start(&[(taken_addr, true), ("127.0.0.1:0".into(), false)], certs).await;
        assert_eq!(l.bound().len(), 1);
    }

    #[test]
    fn insert_refuses_what_tls_alpn_01_cannot_answer() {
        let certs = AlpnCerts::default();
        assert!(certs.insert("*.example.test", KA).is_err());
        assert!(certs.insert("exa mple.test", KA).is_err());
        assert!(certs.insert("", KA).is_err());
        certs.insert("::1", KA).expect("IPv6 identifier");
        assert!(certs.get(&Key::Ip("::1".parse().expect("ip"))).is_some());
    }

    #[test]
    fn reverse_names_of_rfc8738() {
        let v4 = |s: &str| s.parse::<IpAddr>().ok();
        for (name, ip) in [
            ("1.0.0.127.in-addr.arpa", v4("127.0.0.1")),
            ("4.3.2.192.IN-ADDR.ARPA.", v4("192.2.3.4")),
            ("255.0.0.10.in-addr.arpa", v4("10.0.0.255")),
            (
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
                v4("::1"),
            ),
            (
                "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa",
                v4("4321:0:1:2:3:4:567:89ab"),
            ),
            ("0.0.127.in-addr.arpa", None),
            ("256.0.0.127.in-addr.arpa", None),
            ("01.0.0.127.in-addr.arpa", None),
            ("+1.0.0.127.in-addr.arpa", None),
            ("1..0.127.in-addr.arpa", None),
            ("1.0.0.0.ip6.arpa", None),
            ("example.test", None),
            ("in-addr.arpa", None),
        ] {
            assert_eq!(reverse_name_ip(name), ip, "{name}");
        }
    }
}
