//! Shared harness for the integration tests.
//!
//! - [`Pebble`]: a private Pebble ACME server plus `pebble-challtestsrv` as its DNS server,
//!   on free loopback ports, killed on drop (its logs are printed if the test is panicking).
//! - [`StateDir`]: a temporary acmekeep state directory with helpers for `conf/` and `live/`.
//! - [`acmekeep`] / [`Run`]: run the binary under test with a timeout and assert on the result.
//! - [`ChallengeServer`]: a tiny HTTP server serving `/.well-known/acme-challenge/<token>`
//!   from a directory (the "web server" of the webroot method).
//!
//! Nothing here needs root, listens on a privileged port or touches `/var`.

// Not every helper is used by every test module.
#![allow(dead_code)]

mod ari_proxy;
mod challenge_double;
mod cli;
mod etcd;
pub mod hostile;
mod http;
mod knot;
mod pebble;
mod selftest;
mod state;
mod webserver;

// Re-exports for the test modules; not every module uses every item.
#[allow(unused_imports)]
pub use ari_proxy::{AriProxy, AriWindow, Failing, OrderAttempt, RateLimit, Release, SeenOrder};
pub use challenge_double::ChallengeOffer;
#[allow(unused_imports)]
pub use cli::{Run, RunOpts, Running, acmekeep, acmekeep_with, spawn_acmekeep};
#[allow(unused_imports)]
pub use etcd::{Etcd, EtcdPki};
#[allow(unused_imports)]
pub use hostile::{Answer, Exchange, RogueCa, Tamper};
#[allow(unused_imports)]
pub use http::{HttpResponse, http_get, http_post, https_get};
#[allow(unused_imports)]
pub use knot::{Knot, KnotKey};
#[allow(unused_imports)]
pub use pebble::{DNS_A, DNS_AAAA, Pebble, PebbleOpts};
#[allow(unused_imports)]
pub use state::{
    PEBBLE_TOS, StateDir, responses_yaml, run_record, standard_conf_target, status_json,
    target_status, webroot_conf_target,
};
#[allow(unused_imports)]
pub use webserver::ChallengeServer;

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ports handed out by this test process, so parallel tests never get the same one.
static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Lowest port of the kernel's ephemeral range (outgoing connections take ports from there).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768)
}

fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn port_is_free(port: u16, udp_too: bool) -> bool {
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
    tcp && (!udp_too || UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
}

fn claim(port: u16, udp_too: bool) -> bool {
    let mut used = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    if used.contains(&port) || !port_is_free(port, udp_too) {
        return false;
    }
    used.push(port);
    true
}

/// A loopback port that is free right now (TCP, and UDP too if `udp_too`).
///
/// Ports are picked below the kernel's ephemeral range when possible: several of them
/// (Pebble's http-01 port in particular) are only bound later by another process, and a
/// port from the ephemeral range could meanwhile be taken by some outgoing connection.
/// Falls back to binding `127.0.0.1:0`. A port is never handed out twice per process.
pub fn free_port_with(udp_too: bool) -> u16 {
    let low = 20000u16;
    let high = ephemeral_low();
    if high > low + 1000 {
        for _ in 0..200 {
            let port = low + (random_u64() % u64::from(high - low)) as u16;
            if claim(port, udp_too) {
                return port;
            }
        }
    }
    for _ in 0..200 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if claim(port, udp_too) {
            return port;
        }
    }
    panic!("could not find a free loopback port");
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    free_port_with(false)
}

/// Polls `f` every `every` until it returns `Some` or `timeout` has passed.
pub fn poll_until<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// acmetool's identifier encoding: SHA-256, RFC 4648 base32, lowercase, no padding (52 chars).
pub fn acmetool_id(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    data_encoding::BASE32_NOPAD
        .encode(digest.as_ref())
        .to_ascii_lowercase()
}

/// The `accounts/` directory name acmetool uses for a directory URL like
/// `https://127.0.0.1:14000/dir`: `127.0.0.1%3a14000%2fdir`.
pub fn account_urlpart(directory_url: &str) -> String {
    let rest = directory_url
        .strip_prefix("https://")
        .expect("directory URL is https");
    // A path of exactly "/" is dropped.
    let rest = match rest.split_once('/') {
        Some((host, "")) => host,
        _ => rest,
    };
    // Go's url.QueryEscape, with the percent-hex lowercased.
    let mut out = String::new();
    for b in rest.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

/// The DER contents of every PEM block in `pem` whose label satisfies `want_label`.
pub fn pem_blocks(pem: &[u8], want_label: impl Fn(&str) -> bool) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map(|p| p.expect("valid PEM"))
        .filter(|p| want_label(&p.label))
        .map(|p| p.contents)
        .collect()
}

/// Sleeps until the real time is at least a second past the notBefore of `live/<name>/cert`.
/// A certificate's validity is in whole seconds: one Pebble issues within the same second as
/// the certificate it replaces has the same validity, and the tie keeps the one with the
/// smaller id linked (`cert::newer`), so a test that renews right after issuance waits for
/// the next second first (the CA dates certificates by its own clock: no skew helps).
pub fn wait_past_second_of_live(state: &StateDir, name: &str) {
    let der = pem_certs(&state.read_live(name, "cert")).remove(0);
    let not_before = parse_cert(&der).validity().not_before.to_datetime();
    let left = not_before + time::Duration::seconds(1) - time::OffsetDateTime::now_utc();
    if left.is_positive() {
        std::thread::sleep(left.unsigned_abs());
    }
}

/// The DER of every `CERTIFICATE` block in `pem`.
pub fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    pem_blocks(pem, |l| l == "CERTIFICATE")
}

/// Parses one DER certificate (panics with a clear message if it is not one).
pub fn parse_cert(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).expect("parse X.509 certificate");
    assert!(rest.is_empty(), "trailing bytes after certificate");
    cert
}

/// The dNSName SANs of a DER certificate.
pub fn cert_dns_names(der: &[u8]) -> Vec<String> {
    let cert = parse_cert(der);
    let Some(san) = cert
        .subject_alternative_name()
        .expect("well-formed SAN extension")
    else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(s) => Some((*s).to_owned()),
            _ => None,
        })
        .collect()
}

/// The raw subject public key (the BIT STRING contents of the SPKI) of a DER certificate.
pub fn cert_public_key_raw(der: &[u8]) -> Vec<u8> {
    parse_cert(der)
        .tbs_certificate
        .subject_pki
        .subject_public_key
        .data
        .to_vec()
}

/// The full DER SubjectPublicKeyInfo of a DER certificate (what acmetool's key ID hashes).
pub fn cert_spki_der(der: &[u8]) -> Vec<u8> {
    parse_cert(der).tbs_certificate.subject_pki.raw.to_vec()
}

/// The raw public key of a PEM private key (PKCS#1, SEC1 or PKCS#8; first `* PRIVATE KEY` block).
pub fn private_key_public_raw(pem: &[u8]) -> Vec<u8> {
    let der = pem_blocks(pem, |l| l.ends_with("PRIVATE KEY"))
        .into_iter()
        .next()
        .expect("a PRIVATE KEY PEM block");
    let kp = rcgen::KeyPair::try_from(der.as_slice()).expect("parse private key");
    kp.public_key_raw().to_vec()
}

/// The DER SubjectPublicKeyInfo of a PEM private key (what acmetool's key IDs hash).
pub fn private_key_spki_der(pem: &[u8]) -> Vec<u8> {
    use rcgen::PublicKeyData;
    let der = pem_blocks(pem, |l| l.ends_with("PRIVATE KEY"))
        .into_iter()
        .next()
        .expect("a PRIVATE KEY PEM block");
    let kp = rcgen::KeyPair::try_from(der.as_slice()).expect("parse private key");
    kp.subject_public_key_info()
}

/// Whether `s` looks like an acmetool ID (52 characters of lowercase base32).
pub fn is_acmetool_id(s: &str) -> bool {
    s.len() == 52
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}
