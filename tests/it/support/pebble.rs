//! A private Pebble (Debian's `/usr/bin/pebble`, 2.4) with `pebble-challtestsrv` as its DNS.
//!
//! Debian ships neither certificates nor a config, so each instance generates a throw-away CA
//! and an HTTPS certificate for `localhost`, `127.0.0.1` and `::1`, and writes its own JSON
//! config into a temporary directory, next to the two processes' logs.
//!
//! challtestsrv answers every A query with 127.0.0.1 and no AAAA query at all
//! (`-defaultIPv6 ""`): Pebble 2.4's VA asks for AAAA first and dials only the first address,
//! so a `::1` default would make it ignore listeners on 127.0.0.1. Its own http-01,
//! https-01 and tls-alpn-01 responders are disabled: the client under test answers.

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::{HttpResponse, http_post, https_get};
use super::{free_port, free_port_with, random_u64};

const PEBBLE_BIN: &str = "/usr/bin/pebble";
const CHALLTESTSRV_BIN: &str = "/usr/bin/pebble-challtestsrv";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 4;

/// DNS record types used by [`Pebble::dns_query`].
pub const DNS_A: u16 = 1;
pub const DNS_AAAA: u16 = 28;

/// Knobs for a Pebble instance. The default is Pebble's own behaviour ("realism"): random
/// validation sleeps of 0–4 s and 5 % of good nonces rejected as `badNonce`.
#[derive(Debug, Clone, Default)]
pub struct PebbleOpts {
    /// `PEBBLE_VA_NOSLEEP=1`: validate immediately.
    pub no_sleep: bool,
    /// `PEBBLE_WFE_NONCEREJECT=<pct>`: share of good nonces rejected (Pebble's default is 5).
    pub nonce_reject_percent: Option<u8>,
    /// `PEBBLE_VA_ALWAYS_VALID=1`: every challenge is valid without any request.
    pub always_valid: bool,
    /// `PEBBLE_AUTHZREUSE=<pct>`: share of valid authorizations reused (Pebble's default is 50).
    pub authz_reuse_percent: Option<u8>,
    /// Config `certificateValidityPeriod` in seconds (Pebble's default is about 5 years).
    pub cert_validity_secs: Option<u64>,
    /// Any further environment variables for the pebble process.
    pub env: Vec<(String, String)>,
    /// Pebble's DNS server (`-dnsserver`) instead of challtestsrv, e.g. a Knot instance.
    pub dns_server: Option<std::net::SocketAddr>,
    /// Config `externalAccountBindingRequired`: newAccount without a binding is refused, and
    /// the directory says `meta.externalAccountRequired: true`.
    pub eab_required: bool,
    /// Config `externalAccountMACKeys`: key identifier → base64url (unpadded) MAC key.
    pub eab_mac_keys: Vec<(String, String)>,
}

impl PebbleOpts {
    /// Realistic defaults except that validation does not sleep.
    pub fn fast() -> Self {
        Self {
            no_sleep: true,
            ..Self::default()
        }
    }
}

/// A child process that is killed and reaped on drop (never left as a zombie).
struct Proc {
    child: Child,
}

impl Proc {
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running Pebble + challtestsrv pair. Dropping it kills both; if the current thread is
/// panicking (a failed test), their logs are printed to stderr first.
pub struct Pebble {
    pebble: Option<Proc>,
    challtestsrv: Option<Proc>,
    listen_port: u16,
    management_port: u16,
    http_port: u16,
    tls_port: u16,
    dns_port: u16,
    chall_management_port: u16,
    ca_pem_path: PathBuf,
    ca_der: Vec<u8>,
    pebble_log: PathBuf,
    challtestsrv_log: PathBuf,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Pebble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pebble")
            .field("directory_url", &self.directory_url())
            .field("management_port", &self.management_port)
            .field("http_port", &self.http_port)
            .field("dns_port", &self.dns_port)
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn binary(path: &str) -> String {
    if Path::new(path).exists() {
        path.to_owned()
    } else {
        // Fall back to $PATH (e.g. a locally built Pebble).
        Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(path)
            .to_owned()
    }
}

/// Writes a CA and a `localhost`/`127.0.0.1`/`::1` server certificate signed by it.
/// Returns (CA PEM path, CA DER, server cert path, server key path).
fn write_tls_material(dir: &Path) -> io::Result<(PathBuf, Vec<u8>, PathBuf, PathBuf)> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let err = |e: rcgen::Error| io::Error::other(e.to_string());

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "acmekeep tests: Pebble HTTPS CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?).map_err(err)?;

    let server_key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &ca).map_err(err)?;

    let ca_pem_path = dir.join("ca.pem");
    let cert_path = dir.join("server-cert.pem");
    let key_path = dir.join("server-key.pem");
    fs::write(&ca_pem_path, ca.pem())?;
    fs::write(&cert_path, server_cert.pem())?;
    fs::write(&key_path, server_key.serialize_pem())?;
    Ok((ca_pem_path, ca.der().to_vec(), cert_path, key_path))
}

fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> io::Result<Proc> {
    let out = File::create(log)?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()?;
    Ok(Proc { child })
}

fn tcp_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// Encodes a DNS query for `name`/`qtype` with message id `id`.
fn dns_message(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; QDCOUNT=1
    for label in name.trim_end_matches('.').split('.') {
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes()); // IN
    msg
}

/// Skips a (possibly compressed) domain name in `msg` starting at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        if len & 0xC0 == 0xC0 {
            return Some(pos + 2);
        }
        if len == 0 {
            return Some(pos + 1);
        }
        pos += 1 + usize::from(len);
    }
}

fn be16(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// Parses a DNS response: (RCODE, RDATA of the answers of type `qtype`).
fn parse_dns_response(msg: &[u8], id: u16, qtype: u16) -> Option<(u8, Vec<Vec<u8>>)> {
    if be16(msg, 0)? != id {
        return None;
    }
    let rcode = msg.get(3)? & 0x0F;
    let qdcount = be16(msg, 4)?;
    let ancount = be16(msg, 6)?;
    let mut pos = 12;
    for _ in 0..qdcount {
        pos = skip_name(msg, pos)? + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..ancount {
        pos = skip_name(msg, pos)?;
        let rtype = be16(msg, pos)?;
        let rdlen = usize::from(be16(msg, pos + 8)?);
        let rdata = msg.get(pos + 10..pos + 10 + rdlen)?;
        if rtype == qtype {
            answers.push(rdata.to_vec());
        }
        pos += 10 + rdlen;
    }
    Some((rcode, answers))
}

impl Pebble {
    /// Starts Pebble and challtestsrv on free loopback ports and waits until both answer.
    /// Retries with other ports if a port was taken in the meantime. Panics (with the logs)
    /// if Pebble cannot be started.
    pub fn start(opts: PebbleOpts) -> Pebble {
        let mut errors = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(&opts) {
                Ok(p) => return p,
                Err(e) => {
                    eprintln!("Pebble start attempt {attempt} failed: {e}");
                    errors.push(e);
                }
            }
        }
        panic!(
            "Pebble did not start after {START_ATTEMPTS} attempts:\n{}",
            errors.join("\n---\n")
        );
    }

    /// One attempt at [`Pebble::start`]; the error carries the processes' logs.
    pub fn try_start(opts: &PebbleOpts) -> Result<Pebble, String> {
        let dir = tempfile::Builder::new()
            .prefix("acmekeep-pebble-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let (ca_pem_path, ca_der, cert_path, key_path) =
            write_tls_material(dir.path()).map_err(|e| format!("TLS material: {e}"))?;

        let listen_port = free_port();
        let management_port = free_port();
        let http_port = free_port();
        let tls_port = free_port();
        let dns_port = free_port_with(true);
        let chall_management_port = free_port();

        let mut pebble_cfg = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{listen_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": cert_path,
            "privateKey": key_path,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": opts.eab_required,
        });
        if !opts.eab_mac_keys.is_empty() {
            let keys: serde_json::Map<String, serde_json::Value> = opts
                .eab_mac_keys
                .iter()
                .map(|(kid, key)| (kid.clone(), key.clone().into()))
                .collect();
            pebble_cfg["externalAccountMACKeys"] = keys.into();
        }
        if let Some(secs) = opts.cert_validity_secs {
            pebble_cfg["certificateValidityPeriod"] = secs.into();
        }
        let config_path = dir.path().join("pebble-config.json");
        let config = serde_json::json!({ "pebble": pebble_cfg });
        fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("write config: {e}"))?;

        let challtestsrv_log = dir.path().join("challtestsrv.log");
        let pebble_log = dir.path().join("pebble.log");

        let challtestsrv = spawn_logged(
            Command::new(binary(CHALLTESTSRV_BIN))
                .arg(format!("-dns01=127.0.0.1:{dns_port}"))
                .arg("-http01=")
                .arg("-https01=")
                .arg("-tlsalpn01=")
                .arg(format!("-management=127.0.0.1:{chall_management_port}"))
                .arg("-defaultIPv4=127.0.0.1")
                .arg("-defaultIPv6=")
                .current_dir(dir.path()),
            &challtestsrv_log,
        )
        .map_err(|e| format!("spawn {CHALLTESTSRV_BIN}: {e}"))?;

        let mut pebble_cmd = Command::new(binary(PEBBLE_BIN));
        pebble_cmd
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(
                opts.dns_server
                    .map_or_else(|| format!("127.0.0.1:{dns_port}"), |a| a.to_string()),
            )
            .current_dir(dir.path());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PEBBLE_") {
                pebble_cmd.env_remove(key);
            }
        }
        if opts.no_sleep {
            pebble_cmd.env("PEBBLE_VA_NOSLEEP", "1");
        }
        if let Some(pct) = opts.nonce_reject_percent {
            pebble_cmd.env("PEBBLE_WFE_NONCEREJECT", pct.to_string());
        }
        if opts.always_valid {
            pebble_cmd.env("PEBBLE_VA_ALWAYS_VALID", "1");
        }
        if let Some(pct) = opts.authz_reuse_percent {
            pebble_cmd.env("PEBBLE_AUTHZREUSE", pct.to_string());
        }
        for (k, v) in &opts.env {
            pebble_cmd.env(k, v);
        }

        let mut pebble = Pebble {
            pebble: None,
            challtestsrv: Some(challtestsrv),
            listen_port,
            management_port,
            http_port,
            tls_port,
            dns_port,
            chall_management_port,
            ca_pem_path,
            ca_der,
            pebble_log,
            challtestsrv_log,
            dir,
        };

        // challtestsrv first: Pebble's VA needs its DNS.
        pebble.wait_ready("challtestsrv", |p| {
            tcp_accepts(p.chall_management_port)
                && p.dns_query("ready.acmekeep.test", DNS_A).is_ok()
        })?;

        pebble.pebble = Some(
            spawn_logged(&mut pebble_cmd, &pebble.pebble_log)
                .map_err(|e| format!("spawn {PEBBLE_BIN}: {e}"))?,
        );
        pebble.wait_ready("pebble", |p| {
            https_get(&p.directory_url(), &p.ca_der).is_ok_and(|r| r.status == 200)
                && https_get(&format!("{}/roots/0", p.management_url()), &p.ca_der)
                    .is_ok_and(|r| r.status == 200)
        })?;
        Ok(pebble)
    }

    fn wait_ready(&mut self, what: &str, ready: impl Fn(&Self) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = [
                ("pebble", self.pebble.as_mut().and_then(Proc::exited)),
                (
                    "challtestsrv",
                    self.challtestsrv.as_mut().and_then(Proc::exited),
                ),
            ];
            if let Some((name, Some(status))) = exited.into_iter().find(|(_, s)| s.is_some()) {
                return Err(format!(
                    "{name} exited early ({status}) while waiting for {what}\n{}",
                    self.logs()
                ));
            }
            if ready(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what} not ready after {START_TIMEOUT:?}\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ACME directory URL, `https://127.0.0.1:<port>/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen_port)
    }

    /// PEM file of the CA that signed Pebble's HTTPS certificate (for `provider-ca-bundle`
    /// or `SSL_CERT_FILE`). Not the CA that issues ACME certificates: see [`Pebble::roots_pem`].
    pub fn ca_bundle_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// DER of the CA in [`Pebble::ca_bundle_path`].
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// Port Pebble's VA connects to for http-01 (on the address challtestsrv resolves, 127.0.0.1).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Port Pebble's VA connects to for tls-alpn-01 (nobody listens there by default).
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// Port of the ACME (WFE) listener.
    pub fn acme_port(&self) -> u16 {
        self.listen_port
    }

    /// Port of Pebble's management interface (HTTPS, same certificate as the ACME listener).
    pub fn management_port(&self) -> u16 {
        self.management_port
    }

    /// `https://127.0.0.1:<management port>`.
    pub fn management_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.management_port)
    }

    /// Port of challtestsrv's DNS server (UDP and TCP), which Pebble uses as its resolver.
    pub fn dns_port(&self) -> u16 {
        self.dns_port
    }

    /// `http://127.0.0.1:<port>` of challtestsrv's management API (mock DNS data).
    pub fn challtestsrv_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.chall_management_port)
    }

    /// The temporary directory holding Pebble's config, certificates and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET` on Pebble (ACME or management URL) over HTTPS, trusting the test CA.
    pub fn get(&self, url: &str) -> HttpResponse {
        https_get(url, &self.ca_der).unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// The ACME directory object.
    pub fn directory(&self) -> serde_json::Value {
        let resp = self.get(&self.directory_url());
        assert_eq!(resp.status, 200, "GET directory: {}", resp.text());
        serde_json::from_slice(&resp.body).expect("directory is JSON")
    }

    /// The directory's `meta.termsOfService`.
    pub fn terms_of_service(&self) -> String {
        self.directory()["meta"]["termsOfService"]
            .as_str()
            .expect("directory has meta.termsOfService")
            .to_owned()
    }

    /// PEM of Pebble's (per-process, random) issuing root: `GET <mgmt>/roots/0`.
    pub fn roots_pem(&self) -> String {
        let resp = self.get(&format!("{}/roots/0", self.management_url()));
        assert_eq!(resp.status, 200, "GET roots/0: {}", resp.text());
        resp.text()
    }

    /// PEM of Pebble's intermediate: `GET <mgmt>/intermediates/0`.
    pub fn intermediates_pem(&self) -> String {
        let resp = self.get(&format!("{}/intermediates/0", self.management_url()));
        assert_eq!(resp.status, 200, "GET intermediates/0: {}", resp.text());
        resp.text()
    }

    fn challtestsrv_post(&self, endpoint: &str, body: serde_json::Value) {
        let url = format!("{}/{endpoint}", self.challtestsrv_url());
        let resp = http_post(&url, &body.to_string()).unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert_eq!(resp.status, 200, "POST {url}: {}", resp.text());
    }

    /// Makes the mock DNS answer SERVFAIL for every query about `host`: validation of that
    /// name then fails at Pebble's VA, whatever the client does.
    pub fn dns_set_servfail(&self, host: &str) {
        self.challtestsrv_post("set-servfail", serde_json::json!({ "host": host }));
    }

    /// Undoes [`Pebble::dns_set_servfail`].
    pub fn dns_clear_servfail(&self, host: &str) {
        self.challtestsrv_post("clear-servfail", serde_json::json!({ "host": host }));
    }

    /// Mock A records for `host` (instead of the default 127.0.0.1).
    pub fn dns_add_a(&self, host: &str, addresses: &[&str]) {
        self.challtestsrv_post(
            "add-a",
            serde_json::json!({ "host": host, "addresses": addresses }),
        );
    }

    /// Sends one query to challtestsrv's DNS over UDP: (RCODE, RDATA of the matching answers).
    pub fn dns_query(&self, name: &str, qtype: u16) -> io::Result<(u8, Vec<Vec<u8>>)> {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        sock.connect((Ipv4Addr::LOCALHOST, self.dns_port))?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        let id = random_u64() as u16;
        sock.send(&dns_message(id, name, qtype))?;
        let mut buf = [0u8; 1500];
        let n = sock.recv(&mut buf)?;
        parse_dns_response(&buf[..n], id, qtype)
            .ok_or_else(|| io::Error::other("malformed DNS response"))
    }

    /// Pebble's own log so far (one line per handled request, among others).
    pub fn pebble_log(&self) -> String {
        read_log(&self.pebble_log)
    }

    /// Both processes' output so far.
    pub fn logs(&self) -> String {
        format!(
            "===== pebble log ({}) =====\n{}\n===== pebble-challtestsrv log ({}) =====\n{}\n===== end of Pebble logs =====",
            self.pebble_log.display(),
            read_log(&self.pebble_log),
            self.challtestsrv_log.display(),
            read_log(&self.challtestsrv_log),
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        // Kill (and reap) before the temporary directory goes away.
        self.pebble.take();
        self.challtestsrv.take();
        if std::thread::panicking() {
            eprintln!("{self:?}\n{}", self.logs());
        }
    }
}
