//! `import-key`, `import-pem-account`, `import-jwk-account`, `import-le` and
//! `account-thumbprint`: other tools' keys, accounts and certificates taken over.
//!
//! - `import_le_from_real_certbot` lets the real certbot (`/usr/bin/certbot`, Debian's 2.1)
//!   obtain a certificate from Pebble, imports its directory, and then uses the imported
//!   account at Pebble without registering again. It is skipped (with a message) only if
//!   certbot is missing.
//! - The other `import_le_*` tests build certbot's layout by hand (accounts/, renewal/,
//!   archive/, live/ with certbot's relative links) around certificates from a throw-away CA,
//!   so they need neither certbot nor Pebble.
//! - Where `/usr/bin/acmetool` is installed, acmetool must accept what was imported and print
//!   the same thumbprints.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aws_lc_rs::encoding::{AsBigEndian, AsDer, EcPrivateKeyBin};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use serde_json::{Value, json};

use super::support::{
    Pebble, PebbleOpts, Run, StateDir, acmekeep, acmetool_id, cert_spki_der, is_acmetool_id,
    pem_certs, private_key_spki_der, standard_conf_target,
};

const CERTBOT: &str = "/usr/bin/certbot";
const ACMETOOL: &str = "/usr/bin/acmetool";

// ---------------------------------------------------------------------------------------------
// Keys and JWKs

/// Reads one DER TLV: (tag, contents, rest).
fn tlv(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let (len, header) = if der[1] < 0x80 {
        (usize::from(der[1]), 2)
    } else {
        let n = usize::from(der[1] & 0x7f);
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, 2 + n)
    };
    (der[0], &der[header..header + len], &der[header + len..])
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A test RSA key: its PKCS#8 DER, its PKCS#1 DER, and the private JWK certbot would write
/// (josepy: unsigned big-endian values without leading zeros).
struct RsaTestKey {
    pkcs8: Vec<u8>,
    pkcs1: Vec<u8>,
    jwk: Value,
}

fn rsa_key() -> RsaTestKey {
    let pair = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("generate RSA");
    let pkcs8 = pair.serialize_der();
    // PrivateKeyInfo: SEQUENCE { version, algorithm, OCTET STRING RSAPrivateKey }.
    let (_, info, _) = tlv(&pkcs8);
    let (_, _, rest) = tlv(info);
    let (_, _, rest) = tlv(rest);
    let (_, pkcs1, _) = tlv(rest);
    let (_, mut seq, _) = tlv(pkcs1);
    let mut jwk = json!({"kty": "RSA"});
    for name in ["version", "n", "e", "d", "p", "q", "dp", "dq", "qi"] {
        let (tag, value, rest) = tlv(seq);
        assert_eq!(tag, 2, "RSAPrivateKey holds INTEGERs");
        let start = value.iter().position(|&b| b != 0).unwrap_or(value.len());
        if name != "version" {
            jwk[name] = Value::String(BASE64URL_NOPAD.encode(&value[start..]));
        }
        seq = rest;
    }
    RsaTestKey {
        pkcs8: pkcs8.clone(),
        pkcs1: pkcs1.to_vec(),
        jwk,
    }
}

/// A test ECDSA key on `crv` (`P-256` or `P-384`): PKCS#8 DER, SEC1 DER and private JWK.
struct EcTestKey {
    pkcs8: Vec<u8>,
    sec1: Vec<u8>,
    jwk: Value,
}

fn ec_key(crv: &str) -> EcTestKey {
    let alg = match crv {
        "P-256" => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        _ => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
    };
    let doc = EcdsaKeyPair::generate_pkcs8(alg, &aws_lc_rs::rand::SystemRandom::new())
        .expect("generate EC");
    let pair = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).expect("parse EC");
    let point = pair.public_key().as_ref();
    let (x, y) = point[1..].split_at((point.len() - 1) / 2);
    let d: EcPrivateKeyBin<'static> = pair.private_key().as_be_bytes().expect("d");
    let sec1 = pair.private_key().as_der().expect("SEC1");
    EcTestKey {
        pkcs8: doc.as_ref().to_vec(),
        sec1: sec1.as_ref().to_vec(),
        jwk: json!({
            "kty": "EC",
            "crv": crv,
            "x": BASE64URL_NOPAD.encode(x),
            "y": BASE64URL_NOPAD.encode(y),
            "d": BASE64URL_NOPAD.encode(d.as_ref()),
        }),
    }
}

/// RFC 7638 thumbprint of a JWK, computed here independently of acmekeep.
fn thumbprint(jwk: &Value) -> String {
    let s = |k: &str| jwk[k].as_str().expect("JWK member").to_owned();
    let canonical = match jwk["kty"].as_str() {
        Some("RSA") => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e"), s("n")),
        _ => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv"),
            s("x"),
            s("y")
        ),
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    BASE64URL_NOPAD.encode(digest.as_ref())
}

/// acmetool key id of a PEM private key.
fn key_id_of_pem(pem: &str) -> String {
    acmetool_id(&private_key_spki_der(pem.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Running things

#[track_caller]
fn ok(state: &StateDir, args: &[&str]) -> Run {
    let run = acmekeep(state, args);
    run.assert_success();
    run
}

/// `account-thumbprint` as a map account id → thumbprint (asserting the line format).
fn thumbprints(state: &StateDir) -> BTreeMap<String, String> {
    let run = ok(state, &["account-thumbprint"]);
    run.stdout
        .lines()
        .map(|line| {
            let (thumb, id) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("no tab in {line:?}\n{}", run.describe()));
            assert_eq!(thumb.len(), 43, "thumbprint {thumb:?}");
            assert!(
                thumb
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "thumbprint {thumb:?} is not base64url"
            );
            let (part, key) = id.rsplit_once('/').expect("account id has a slash");
            assert!(!part.is_empty() && is_acmetool_id(key), "account id {id:?}");
            (id.to_owned(), thumb.to_owned())
        })
        .collect()
}

/// Runs the real acmetool on `state` (no network: `status`, `account-thumbprint`).
fn acmetool(state: &StateDir, args: &[&str]) -> (Option<i32>, String, String) {
    let hooks = state.scratch_dir("acmetool-hooks");
    let out = Command::new(ACMETOOL)
        .arg("--state")
        .arg(state.path())
        .arg("--hooks")
        .arg(&hooks)
        .arg("--batch")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run acmetool");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// acmetool must load the state directory and agree on every thumbprint.
fn assert_acmetool_agrees(state: &StateDir, ours: &BTreeMap<String, String>) {
    if !Path::new(ACMETOOL).exists() {
        eprintln!("acmetool cross-check skipped: {ACMETOOL} is missing");
        return;
    }
    let (code, stdout, stderr) = acmetool(state, &["account-thumbprint"]);
    assert_eq!(
        code,
        Some(0),
        "acmetool account-thumbprint\n{stdout}\n{stderr}"
    );
    let theirs: BTreeMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, id)| (id.to_owned(), t.to_owned()))
        .collect();
    assert_eq!(&theirs, ours, "acmetool's thumbprints differ");
}

/// Every path under the state directory (hidden ones and tmp/ aside) with its type, mode,
/// mtime, link target and content digest: equal snapshots mean nothing was touched.
fn snapshot(state: &StateDir) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(base).expect("under base").to_owned();
            let name = rel.to_string_lossy().into_owned();
            if name.starts_with('.') || name == "tmp" {
                continue;
            }
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).expect("readlink").display())
            } else if meta.is_dir() {
                "dir".to_owned()
            } else {
                let digest = aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    &fs::read(&path).expect("read"),
                );
                HEXLOWER.encode(digest.as_ref())
            };
            out.push(format!(
                "{name} {:o} {}.{} {what}",
                meta.mode() & 0o7777,
                meta.mtime(),
                meta.mtime_nsec()
            ));
            if meta.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(state.path(), state.path(), &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// A certbot directory, laid out as certbot 2.x does

struct CertbotDir {
    root: PathBuf,
}

impl CertbotDir {
    fn new(root: PathBuf) -> Self {
        for d in ["accounts", "archive", "live", "renewal"] {
            fs::create_dir_all(root.join(d)).expect("create certbot dir");
        }
        CertbotDir { root }
    }

    /// `accounts/<server path>/<id>/{private_key.json,regr.json,meta.json}`.
    fn add_account(&self, server_path: &str, id: &str, jwk: &Value) -> PathBuf {
        let dir = self.root.join("accounts").join(server_path).join(id);
        fs::create_dir_all(&dir).expect("create account dir");
        fs::write(dir.join("private_key.json"), jwk.to_string()).expect("write key");
        fs::write(
            dir.join("regr.json"),
            json!({"body": {}, "uri": format!("https://{server_path}/acct/1")}).to_string(),
        )
        .expect("write regr");
        fs::write(
            dir.join("meta.json"),
            r#"{"creation_dt": "2024-01-01T00:00:00Z", "creation_host": "test"}"#,
        )
        .expect("write meta");
        dir
    }

    /// `archive/<name>/{cert1,chain1,fullchain1,privkey1}.pem`, `live/<name>/*.pem` relative
    /// links to them, and `renewal/<name>.conf` with these `[renewalparams]`.
    fn add_lineage(&self, name: &str, cert: &str, chain: &str, key: &str, params: &str) {
        let archive = self.root.join("archive").join(name);
        let live = self.root.join("live").join(name);
        fs::create_dir_all(&archive).expect("archive dir");
        fs::create_dir_all(&live).expect("live dir");
        for (kind, content) in [
            ("cert", cert.to_owned()),
            ("chain", chain.to_owned()),
            ("fullchain", format!("{cert}{chain}")),
            ("privkey", key.to_owned()),
        ] {
            fs::write(archive.join(format!("{kind}1.pem")), content).expect("archive file");
            symlink(
                format!("../../archive/{name}/{kind}1.pem"),
                live.join(format!("{kind}.pem")),
            )
            .expect("live link");
        }
        let root = self.root.display();
        fs::write(
            self.root.join("renewal").join(format!("{name}.conf")),
            format!(
                "# renew_before_expiry = 30 days\nversion = 2.1.0\narchive_dir = {root}/archive/{name}\ncert = {root}/live/{name}/cert.pem\nprivkey = {root}/live/{name}/privkey.pem\nchain = {root}/live/{name}/chain.pem\nfullchain = {root}/live/{name}/fullchain.pem\n\n# Options used in the renewal process\n[renewalparams]\n{params}"
            ),
        )
        .expect("renewal conf");
    }
}

/// A throw-away CA issuing certificates like a real one would.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "acmekeep tests: import CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("CA key");
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    fn chain_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names`, for the public key of `key_pem`, valid for `days` (negative: expired).
    fn issue(&self, names: &[&str], key: &rcgen::KeyPair, days: i64) -> String {
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(90);
        params.not_after = now + time::Duration::days(days);
        params.signed_by(key, &self.issuer).expect("sign").pem()
    }
}

// ---------------------------------------------------------------------------------------------
// import-le

#[test]
fn import_le_synthetic_layout() {
    let state = StateDir::new();
    let cb = CertbotDir::new(state.scratch_dir("letsencrypt"));
    let ca = TestCa::new();

    // An RSA account at a private CA (two-level directory path), certbot's usual kind.
    let acct = rsa_key();
    cb.add_account(
        "ca.example/acme/directory",
        "0123456789abcdef0123456789abcdef",
        &acct.jwk,
    );
    // An ACMEv1 Let's Encrypt account, with certbot's v02 -> v01 symlink (absolute, as certbot
    // makes it): imported once, under the v02 URL.
    let le_acct = ec_key("P-256");
    let v01 = cb.add_account(
        "acme-v01.api.letsencrypt.org/directory",
        "fedcba9876543210fedcba9876543210",
        &le_acct.jwk,
    );
    fs::create_dir_all(cb.root.join("accounts/acme-v02.api.letsencrypt.org")).expect("mkdir");
    symlink(
        v01.parent().expect("parent"),
        cb.root
            .join("accounts/acme-v02.api.letsencrypt.org/directory"),
    )
    .expect("v02 link");

    // Lineage 1: ECDSA key (PKCS#8, as certbot 2 writes it), webroot, private CA account.
    let k1 = rcgen::KeyPair::generate().expect("key");
    let c1 = ca.issue(&["www.one.example", "one.example"], &k1, 60);
    cb.add_lineage(
        "one.example",
        &c1,
        &ca.chain_pem(),
        &k1.serialize_pem(),
        "account = 0123456789abcdef0123456789abcdef\nserver = https://ca.example/acme/directory\nauthenticator = webroot\nwebroot_path = /srv/one,\nkey_type = ecdsa\n[[webroot_map]]\none.example = /srv/one\nwww.one.example = /srv/one\n",
    );
    // Lineage 2: an old-style RSA key (PKCS#1 "RSA PRIVATE KEY"), Let's Encrypt v02.
    let k2 = rsa_key();
    let k2_pem = pem("RSA PRIVATE KEY", &k2.pkcs1);
    let k2_pair = rcgen::KeyPair::try_from(k2.pkcs8.as_slice()).expect("rcgen RSA");
    let c2 = ca.issue(&["two.example"], &k2_pair, 80);
    cb.add_lineage(
        "two.example",
        &c2,
        &ca.chain_pem(),
        &k2_pem,
        "account = fedcba9876543210fedcba9876543210\nserver = https://acme-v02.api.letsencrypt.org/directory\nauthenticator = standalone\nkey_type = rsa\nrsa_key_size = 2048\n",
    );
    // Lineage 3: expired: only its names are imported.
    let k3 = rcgen::KeyPair::generate().expect("key");
    let c3 = ca.issue(&["old.example"], &k3, -1);
    cb.add_lineage(
        "old.example",
        &c3,
        &ca.chain_pem(),
        &k3.serialize_pem(),
        "server = https://acme-v02.api.letsencrypt.org/directory\nauthenticator = standalone\n",
    );

    let dir = cb.root.to_string_lossy().into_owned();
    let run = ok(&state, &["import-le", &dir]);
    assert!(
        run.stdout
            .contains("imported 2 accounts, 2 keys, 2 certificates, 3 targets"),
        "{}",
        run.describe()
    );
    run.assert_stderr_contains("old.example: the certificate has expired");

    // Accounts: one per directory URL, thumbprints as RFC 7638 says.
    let thumbs = thumbprints(&state);
    let private_ca = format!(
        "ca.example%2facme%2fdirectory/{}",
        key_id_of_pem(&pem("PRIVATE KEY", &acct.pkcs8))
    );
    let le = format!(
        "acme-v02.api.letsencrypt.org%2fdirectory/{}",
        key_id_of_pem(&pem("PRIVATE KEY", &le_acct.pkcs8))
    );
    let expected: BTreeMap<String, String> = [
        (private_ca.clone(), thumbprint(&acct.jwk)),
        (le.clone(), thumbprint(&le_acct.jwk)),
    ]
    .into_iter()
    .collect();
    assert_eq!(thumbs, expected, "{}", state.tree());
    for id in expected.keys() {
        let dir = Path::new("accounts").join(id);
        assert_eq!(state.mode(&dir), 0o700, "{id}");
        assert_eq!(state.mode(dir.join("privkey")), 0o600, "{id}");
        assert!(
            state
                .read_string(dir.join("privkey"))
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
    }

    // Certificates: complete directories whose url hashes to the id, linked from live/.
    let status: Value =
        serde_json::from_str(&ok(&state, &["status", "--json"]).stdout).expect("status JSON");
    let targets = status["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 3, "{status:#}");
    for (name, names, cert_pem, key_pem, account) in [
        (
            "one.example",
            vec!["one.example", "www.one.example"],
            &c1,
            k1.serialize_pem(),
            &private_ca,
        ),
        ("two.example", vec!["two.example"], &c2, k2_pem.clone(), &le),
    ] {
        let t = targets
            .iter()
            .find(|t| t["names"][0] == name)
            .unwrap_or_else(|| panic!("no target for {name}: {status:#}"));
        assert_eq!(t["names"], json!(names), "lineage name first");
        assert_eq!(t["state"], "valid", "{t:#}");
        let id = t["certificate"]["id"].as_str().expect("certificate id");
        for n in &names {
            assert_eq!(state.live_cert_id(n), id, "live/{n}");
        }
        let url = state.read_string(Path::new("certs").join(id).join("url"));
        assert!(
            url.starts_with("https://acmekeep.invalid/imported/certbot/"),
            "{url}"
        );
        assert_eq!(acmetool_id(url.as_bytes()), id, "url hashes to the id");
        assert_eq!(
            fs::read_link(state.join(Path::new("certs").join(id).join("account"))).ok(),
            Some(Path::new("../../accounts").join(account)),
            "certs/{id}/account"
        );
        let live_cert = state.read_live(name, "cert");
        assert_eq!(pem_certs(&live_cert), pem_certs(cert_pem.as_bytes()));
        assert_eq!(
            state.read_live(name, "fullchain"),
            [live_cert, state.read_live(name, "chain")].concat()
        );
        let key_id = key_id_of_pem(&key_pem);
        assert_eq!(
            key_id,
            acmetool_id(&cert_spki_der(&pem_certs(cert_pem.as_bytes())[0]))
        );
        assert_eq!(state.mode(Path::new("keys").join(&key_id)), 0o700);
        assert_eq!(
            state.mode(Path::new("keys").join(&key_id).join("privkey")),
            0o600
        );
        assert_eq!(
            key_id_of_pem(&String::from_utf8(state.read_live(name, "privkey")).expect("UTF-8")),
            key_id
        );
    }
    let old = targets
        .iter()
        .find(|t| t["names"][0] == "old.example")
        .expect("old target");
    assert_eq!(old["state"], "missing");
    assert!(state.live_link("old.example").is_none());

    // Target files: provider, key type and webroot carried over.
    let one = state
        .desired_files()
        .into_iter()
        .find(|f| f.starts_with("one.example-"))
        .expect("one.example target file");
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&state.read_string(Path::new("desired").join(one)))
            .expect("target YAML");
    assert_eq!(
        yaml["request"]["provider"],
        "https://ca.example/acme/directory"
    );
    assert_eq!(yaml["request"]["key"]["type"], "ecdsa");
    assert_eq!(
        yaml["request"]["challenge"]["webroot-paths"][0],
        "/srv/one/.well-known/acme-challenge"
    );

    // Idempotent: a second run touches nothing.
    let before = snapshot(&state);
    let again = ok(&state, &["import-le", &dir]);
    assert!(
        again.stdout.contains("imported nothing new"),
        "{}",
        again.describe()
    );
    assert_eq!(
        snapshot(&state),
        before,
        "the second import-le changed something"
    );

    if Path::new(ACMETOOL).exists() {
        let (code, stdout, stderr) = acmetool(&state, &["status"]);
        assert_eq!(code, Some(0), "acmetool status\n{stdout}\n{stderr}");
        assert_eq!(stdout.matches("best: Certificate(").count(), 2, "{stdout}");
    }
    assert_acmetool_agrees(&state, &thumbs);
}

#[test]
fn import_le_refuses_links_leaving_the_directory() {
    let state = StateDir::new();
    let cb = CertbotDir::new(state.scratch_dir("letsencrypt"));
    let ca = TestCa::new();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = ca.issue(&["good.example"], &key, 60);
    let params = "server = https://ca.example/dir\n";
    cb.add_lineage(
        "good.example",
        &cert,
        &ca.chain_pem(),
        &key.serialize_pem(),
        params,
    );

    // A lineage whose live/ links lead out of the certbot directory (a copy of a good one).
    let outside = state.scratch_dir("elsewhere");
    let evil_key = rcgen::KeyPair::generate().expect("key");
    let evil_cert = ca.issue(&["evil.example"], &evil_key, 60);
    cb.add_lineage(
        "evil.example",
        &evil_cert,
        "",
        &evil_key.serialize_pem(),
        params,
    );
    fs::write(outside.join("privkey.pem"), evil_key.serialize_pem()).expect("write");
    let link = cb.root.join("live/evil.example/privkey.pem");
    fs::remove_file(&link).expect("rm");
    symlink(outside.join("privkey.pem"), &link).expect("link out");

    let run = acmekeep(&state, &["import-le", &cb.root.to_string_lossy()]);
    run.assert_code(1)
        .assert_stderr_contains("lineage evil.example")
        .assert_stderr_contains("outside");
    assert_eq!(state.live_names(), vec!["good.example".to_owned()]);
    assert_eq!(state.key_ids(), vec![key_id_of_pem(&key.serialize_pem())]);
}

#[test]
fn import_le_needs_a_certbot_directory() {
    let state = StateDir::new();
    let missing = state.scratch_dir("x").join("no-such-dir");
    acmekeep(&state, &["import-le", &missing.to_string_lossy()])
        .assert_code(2)
        .assert_stderr_contains(&missing.to_string_lossy());
    let empty = state.scratch_dir("empty");
    acmekeep(&state, &["import-le", &empty.to_string_lossy()])
        .assert_code(2)
        .assert_stderr_contains("does not look like a certbot");
}

/// certbot must exist for this one; prints why it is skipped otherwise.
fn certbot_installed(test: &str) -> bool {
    if Path::new(CERTBOT).exists() {
        return true;
    }
    eprintln!("SKIPPED {test}: {CERTBOT} is missing (install the Debian package `certbot`)");
    false
}

#[test]
fn import_le_from_real_certbot() {
    if !certbot_installed("import_le_from_real_certbot") {
        return;
    }
    const NAME: &str = "certbot.example.org";
    const WWW: &str = "www.certbot.example.org";
    let pebble = Pebble::start(PebbleOpts {
        // certbot retries a bad nonce only once; keep Pebble from making that flaky.
        nonce_reject_percent: Some(0),
        ..PebbleOpts::fast()
    });
    // No conf/responses: registering a new account in --batch would fail, so a later order
    // that works proves the imported account is the one Pebble knows.
    let state = StateDir::new();
    state.write_conf_target(&standard_conf_target(&pebble));
    let le = state.scratch_dir("certbot");
    let out = Command::new(CERTBOT)
        .args([
            "certonly",
            "--non-interactive",
            "--agree-tos",
            "--no-eff-email",
        ])
        .args([
            "-m",
            "test@example.org",
            "--server",
            &pebble.directory_url(),
        ])
        .args(["--standalone", "--http-01-address", "127.0.0.1"])
        .args(["--http-01-port", &pebble.http_port().to_string()])
        .arg("--config-dir")
        .arg(le.join("config"))
        .arg("--work-dir")
        .arg(le.join("work"))
        .arg("--logs-dir")
        .arg(le.join("logs"))
        .args(["-d", NAME, "-d", WWW])
        .env("REQUESTS_CA_BUNDLE", pebble.ca_bundle_path())
        .stdin(Stdio::null())
        .output()
        .expect("run certbot");
    assert!(
        out.status.success(),
        "certbot failed\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = le.join("config");

    let run = ok(&state, &["import-le", &config.to_string_lossy()]);
    assert!(
        run.stdout
            .contains("imported 1 account, 1 key, 1 certificate, 1 target"),
        "{}",
        run.describe()
    );

    // The account: certbot's private_key.json, same thumbprint, filed under Pebble's URL.
    let jwk_files: Vec<PathBuf> = glob_files(&config.join("accounts"), "private_key.json");
    assert_eq!(jwk_files.len(), 1, "{jwk_files:?}");
    let jwk: Value =
        serde_json::from_slice(&fs::read(&jwk_files[0]).expect("read JWK")).expect("JSON");
    let thumbs = thumbprints(&state);
    assert_eq!(thumbs.len(), 1, "{thumbs:?}");
    let (account_id, thumb) = thumbs.iter().next().expect("one account");
    assert_eq!(thumb, &thumbprint(&jwk));
    assert!(account_id.starts_with(&format!("127.0.0.1%3a{}%2fdir/", pebble.acme_port())));

    // The certificate, its key and the target.
    let status: Value =
        serde_json::from_str(&ok(&state, &["status", "--json"]).stdout).expect("status JSON");
    let t = &status["targets"][0];
    assert_eq!(t["names"], json!([NAME, WWW]), "{status:#}");
    assert_eq!(t["state"], "valid", "{status:#}");
    assert_eq!(t["provider"], pebble.directory_url());
    let id = t["certificate"]["id"].as_str().expect("id");
    assert_eq!(state.live_cert_id(NAME), id);
    assert_eq!(state.live_cert_id(WWW), id);
    let certbot_cert = fs::read(config.join("live").join(NAME).join("cert.pem")).expect("cert");
    assert_eq!(
        pem_certs(&state.read_live(NAME, "cert")),
        pem_certs(&certbot_cert)
    );
    let certbot_key = fs::read(config.join("live").join(NAME).join("privkey.pem")).expect("key");
    assert_eq!(
        private_key_spki_der(&state.read_live(NAME, "privkey")),
        private_key_spki_der(&certbot_key)
    );
    assert_eq!(
        fs::read_link(state.join(Path::new("certs").join(id).join("account"))).ok(),
        Some(Path::new("../../accounts").join(account_id))
    );

    // A second import changes nothing.
    let before = snapshot(&state);
    ok(&state, &["import-le", &config.to_string_lossy()]);
    assert_eq!(
        snapshot(&state),
        before,
        "the second import-le changed something"
    );

    if Path::new(ACMETOOL).exists() {
        let (code, stdout, stderr) = acmetool(&state, &["status"]);
        assert_eq!(code, Some(0), "acmetool status\n{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("best: Certificate({id})")),
            "{stdout}"
        );
    }
    assert_acmetool_agrees(&state, &thumbs);

    // The imported account works at Pebble: an order for a new name logs in with it
    // (registering anew would need the terms-of-service answer, which is missing).
    let want = acmekeep(&state, &["want", "more.certbot.example.org"]);
    want.assert_success();
    assert_eq!(
        state.account_ids(),
        vec![account_id.clone()],
        "a new account appeared"
    );
    assert!(state.live_link("more.certbot.example.org").is_some());
}

/// Files called `name` anywhere under `dir` (not following symlinks).
fn glob_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let meta = fs::symlink_metadata(&p).expect("lstat");
            if meta.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == name) {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// import-key

#[test]
fn import_key_takes_every_pem_encoding() {
    let state = StateDir::new();
    let files = state.scratch_dir("keys");
    let rsa = rsa_key();
    let p256 = ec_key("P-256");
    let p384 = ec_key("P-384");
    for (file, text, spki_from) in [
        (
            "rsa-pkcs1.pem",
            pem("RSA PRIVATE KEY", &rsa.pkcs1),
            pem("PRIVATE KEY", &rsa.pkcs8),
        ),
        (
            "p256-sec1.pem",
            pem("EC PRIVATE KEY", &p256.sec1),
            pem("PRIVATE KEY", &p256.pkcs8),
        ),
        (
            "p384-pkcs8.pem",
            pem("PRIVATE KEY", &p384.pkcs8),
            pem("PRIVATE KEY", &p384.pkcs8),
        ),
    ] {
        let path = files.join(file);
        // Text around the block, as in a combined PEM file, is ignored.
        fs::write(&path, format!("some comment\n{text}")).expect("write");
        let run = ok(&state, &["import-key", &path.to_string_lossy()]);
        let id = run.stdout.trim().to_owned();
        assert_eq!(id, key_id_of_pem(&spki_from), "{file}");
        let dir = Path::new("keys").join(&id);
        assert_eq!(state.mode(&dir), 0o700, "{file}");
        assert_eq!(state.mode(dir.join("privkey")), 0o600, "{file}");
        let stored = state.read_string(dir.join("privkey"));
        assert!(
            stored.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{file}: {stored}"
        );
        assert_eq!(key_id_of_pem(&stored), id, "{file}");
        // Again: the same id, nothing rewritten.
        let before = snapshot(&state);
        assert_eq!(
            ok(&state, &["import-key", &path.to_string_lossy()])
                .stdout
                .trim(),
            id
        );
        assert_eq!(snapshot(&state), before, "{file} imported twice");
    }
    assert_eq!(state.key_ids().len(), 3);
}

#[test]
fn import_key_refuses_bad_files_naming_them() {
    let state = StateDir::new();
    let files = state.scratch_dir("keys");
    let ed25519 =
        aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .expect("ed25519");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage.pem", b"not a key\n".to_vec()),
        ("cert-only.pem", TestCa::new().chain_pem().into_bytes()),
        (
            "bad-base64.pem",
            b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n".to_vec(),
        ),
        (
            "ed25519.pem",
            pem("PRIVATE KEY", ed25519.as_ref()).into_bytes(),
        ),
        ("huge.pem", vec![b'A'; 65 * 1024]),
    ];
    for (file, content) in cases {
        let path = files.join(file);
        fs::write(&path, content).expect("write");
        acmekeep(&state, &["import-key", &path.to_string_lossy()])
            .assert_code(2)
            .assert_stderr_contains(&path.to_string_lossy());
    }
    let missing = files.join("missing.pem");
    acmekeep(&state, &["import-key", &missing.to_string_lossy()])
        .assert_code(2)
        .assert_stderr_contains(&missing.to_string_lossy());
    assert!(state.key_ids().is_empty());
}

// ---------------------------------------------------------------------------------------------
// import-pem-account, import-jwk-account, account-thumbprint

#[test]
fn imported_accounts_have_rfc7638_thumbprints() {
    const URL: &str = "https://ca.example/acme/directory";
    const PART: &str = "ca.example%2facme%2fdirectory";
    let state = StateDir::new();
    let files = state.scratch_dir("accounts");
    let mut expected = BTreeMap::new();

    // PEM accounts: RSA (PKCS#1), P-256 (SEC1, acmetool's encoding), P-384 (PKCS#8).
    let rsa = rsa_key();
    let p256 = ec_key("P-256");
    let p384 = ec_key("P-384");
    for (file, text, pkcs8, jwk) in [
        (
            "rsa.pem",
            pem("RSA PRIVATE KEY", &rsa.pkcs1),
            &rsa.pkcs8,
            &rsa.jwk,
        ),
        (
            "p256.pem",
            pem("EC PRIVATE KEY", &p256.sec1),
            &p256.pkcs8,
            &p256.jwk,
        ),
        (
            "p384.pem",
            pem("PRIVATE KEY", &p384.pkcs8),
            &p384.pkcs8,
            &p384.jwk,
        ),
    ] {
        let path = files.join(file);
        fs::write(&path, text).expect("write");
        let run = ok(
            &state,
            &["import-pem-account", URL, &path.to_string_lossy()],
        );
        let id = format!("{PART}/{}", key_id_of_pem(&pem("PRIVATE KEY", pkcs8)));
        assert_eq!(run.stdout.trim(), id, "{file}");
        assert_eq!(
            state.mode(Path::new("accounts").join(&id).join("privkey")),
            0o600
        );
        assert_eq!(state.mode(Path::new("accounts").join(&id)), 0o700);
        expected.insert(id, thumbprint(jwk));
    }

    // JWK accounts (certbot's private_key.json), at another CA.
    let jrsa = rsa_key();
    let jec = ec_key("P-256");
    for (file, key) in [
        ("rsa.json", (&jrsa.jwk, &jrsa.pkcs8)),
        ("ec.json", (&jec.jwk, &jec.pkcs8)),
    ] {
        let path = files.join(file);
        fs::write(&path, key.0.to_string()).expect("write");
        let run = ok(
            &state,
            &[
                "import-jwk-account",
                "https://127.0.0.1:14000/dir",
                &path.to_string_lossy(),
            ],
        );
        let id = format!(
            "127.0.0.1%3a14000%2fdir/{}",
            key_id_of_pem(&pem("PRIVATE KEY", key.1))
        );
        assert_eq!(run.stdout.trim(), id, "{file}");
        expected.insert(id, thumbprint(key.0));
    }

    let thumbs = thumbprints(&state);
    assert_eq!(thumbs, expected);
    assert_acmetool_agrees(&state, &thumbs);

    // Importing again changes nothing.
    let before = snapshot(&state);
    let again = files.join("ec.json");
    ok(
        &state,
        &[
            "import-jwk-account",
            "https://127.0.0.1:14000/dir",
            &again.to_string_lossy(),
        ],
    );
    assert_eq!(snapshot(&state), before);
}

#[test]
fn import_account_refuses_bad_input() {
    let state = StateDir::new();
    let files = state.scratch_dir("accounts");
    let good_pem = files.join("good.pem");
    fs::write(&good_pem, pem("PRIVATE KEY", &ec_key("P-256").pkcs8)).expect("write");
    let url = "https://ca.example/dir";

    // Directory URLs: plain http to a public host, or no URL at all.
    for bad in ["http://ca.example/dir", "not a url"] {
        acmekeep(
            &state,
            &["import-pem-account", bad, &good_pem.to_string_lossy()],
        )
        .assert_code(2)
        .assert_stderr_contains(bad);
    }

    let a = ec_key("P-256");
    let b = ec_key("P-256");
    let mut mismatched = a.jwk.clone();
    mismatched["d"] = b.jwk["d"].clone();
    let mut public_only = rsa_key().jwk;
    public_only.as_object_mut().expect("object").remove("d");
    let cases: [(&str, &str, String); 5] = [
        (
            "import-jwk-account",
            "mismatched.json",
            mismatched.to_string(),
        ),
        ("import-jwk-account", "public.json", public_only.to_string()),
        ("import-jwk-account", "not-json.json", "{".to_owned()),
        (
            "import-jwk-account",
            "pem.json",
            pem("PRIVATE KEY", &a.pkcs8),
        ),
        ("import-pem-account", "garbage.pem", "garbage".to_owned()),
    ];
    for (cmd, file, content) in cases {
        let path = files.join(file);
        fs::write(&path, content).expect("write");
        acmekeep(&state, &[cmd, url, &path.to_string_lossy()])
            .assert_code(2)
            .assert_stderr_contains(&path.to_string_lossy());
    }
    assert!(state.account_ids().is_empty(), "{}", state.tree());
}

#[test]
fn account_thumbprint_with_no_accounts_prints_nothing() {
    let state = StateDir::new();
    assert_eq!(ok(&state, &["account-thumbprint"]).stdout, "");
}
