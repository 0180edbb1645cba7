//! `import-key`, `import-pem-account`, `import-jwk-account` and `import-le`: keys, accounts and
//! certificates made by other tools, brought into the state directory.
//!
//! Everything here is local (no network request) and every input is untrusted: files are read
//! with a size bound, keys must parse and be RSA or ECDSA P-256/P-384, a JWK's private and
//! public halves must belong together, certificate names pass through [`Hostname`], and
//! nothing is read through a symlink that leaves the certbot directory. All writes go through
//! the store under the state lock, so they are atomic and keys are 0600 in 0700 directories
//! from their first byte. Keys are stored as PKCS#8 whatever their input encoding (as every
//! key acmekeep writes, doc/state-directory.md); acmetool and TLS servers read that.
//!
//! `import-le` relies on these facts about certbot's configuration directory (certbot 2.x,
//! `certbot/_internal/{account,storage}.py` and `configuration.py`):
//! - `accounts/<netloc><path>/<account id>/private_key.json` holds the account key as a
//!   private JWK (RSA with `n e d p q dp dq qi`, or EC with `crv x y d`), next to `regr.json`
//!   (the account URL) and `meta.json`. `<netloc><path>` is the directory URL without its
//!   scheme, so `https://acme-v02.api.letsencrypt.org/directory` becomes
//!   `acme-v02.api.letsencrypt.org/directory`. certbot reuses ACMEv1 Let's Encrypt accounts
//!   for ACMEv2 through a symlink (`LE_REUSE_SERVERS`); we read real directories only and map
//!   the v01 URLs to v02, which is the same reuse.
//! - `renewal/<lineage>.conf` is ConfigObj text; its `[renewalparams]` section names the
//!   `server` (directory URL) and `account` (the id above), the `authenticator`, the key
//!   settings (`key_type`, `rsa_key_size`, `elliptic_curve`) and, for webroot, a
//!   `[[webroot_map]]` of name = document root.
//! - `live/<lineage>/{cert,chain,privkey}.pem` are relative symlinks into
//!   `archive/<lineage>/`: the lineage's current certificate, the rest of its chain and its key.
//!
//! Not imported: older certificates in `archive/`, certbot's legacy `keys/` and `csr/` copies,
//! and its hooks (`renewal-hooks/`, `--deploy-hook`), which have no acmetool equivalent to map to.
//!
//! An imported certificate gets a complete `certs/<id>/` directory. certbot does not keep the
//! order URL, so `url` holds a made-up one that still hashes to the directory id:
//! `https://acmekeep.invalid/imported/certbot/<SHA-256 of the leaf, hex>`. It must be an
//! https URL because acmetool refuses a state directory whose `certs/*/url` is not one
//! (`acmeapi.ValidURL`), and `.invalid` (RFC 6761) can never be fetched by mistake.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPairComponents, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use serde_json::Value;
use time::OffsetDateTime;

use crate::acme::jws::{PublicJwk, b64url_member, curve_len};
use crate::cert::{self, CertFiles};
use crate::cli::{ImportAccountArgs, ImportKeyArgs, ImportLeArgs};
use crate::exit::{self, config_error};
use crate::files;
use crate::keys::ids;
use crate::keys::{KeyFamily, MAX_KEY_FILE, PrivateKey, first_private_key_der, pem_encode};
use crate::name::Hostname;
use crate::settings::Settings;
use crate::store::{Store, layout};
use crate::target::{
    DEFAULT_PROVIDER, RawChallenge, RawKey, RawRequest, RawSatisfy, RawTarget, new_target_filename,
    validate_provider,
};

/// Largest JSON file (JWK, renewal configuration) we read.
const MAX_TEXT_FILE: u64 = 64 * 1024;
/// Most entries we look at in any one certbot directory.
const MAX_ENTRIES: usize = 10_000;
/// Deepest `accounts/` nesting we follow (`<netloc>/<path...>/<id>`).
const MAX_ACCOUNT_DEPTH: usize = 8;
/// certbot's default directory when a renewal file names none.
const CERTBOT_DEFAULT_SERVER: &str = DEFAULT_PROVIDER;
/// Prefix of the made-up order URL of an imported certificate (see the module docs).
pub const IMPORTED_URL_PREFIX: &str = "https://acmekeep.invalid/imported/certbot/";

// ---------------------------------------------------------------------------------------------
// Keys

/// Re-encodes a parsed private key as PKCS#8 (RSA, or ECDSA P-256/P-384).
fn to_pkcs8(der: &PrivateKeyDer<'_>) -> Result<Vec<u8>> {
    match der {
        PrivateKeyDer::Pkcs8(p) => Ok(p.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Pkcs1(p) => {
            let pair = RsaKeyPair::from_der(p.secret_pkcs1_der())
                .map_err(|e| anyhow!("not a usable RSA private key: {e}"))?;
            let pkcs8: Pkcs8V1Der<'static> = pair
                .as_der()
                .map_err(|_| anyhow!("cannot re-encode the RSA key"))?;
            Ok(pkcs8.as_ref().to_vec())
        }
        PrivateKeyDer::Sec1(p) => {
            for alg in [
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            ] {
                if let Ok(pair) = EcdsaKeyPair::from_private_key_der(alg, p.secret_sec1_der()) {
                    let doc = pair
                        .to_pkcs8v1()
                        .map_err(|_| anyhow!("cannot re-encode the EC key"))?;
                    return Ok(doc.as_ref().to_vec());
                }
            }
            bail!("unsupported EC key (use P-256 or P-384)")
        }
        _ => bail!("unsupported private key encoding"),
    }
}

/// Parses the first `* PRIVATE KEY` block of `pem` (PKCS#1, SEC1 or PKCS#8).
fn parse_pem_key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    let der = first_private_key_der(pem)?;
    PrivateKeyDer::try_from(der).map_err(|e| anyhow!("unrecognised private key encoding: {e}"))
}

/// A certificate key from PEM, re-encoded as PKCS#8 so `to_pem` labels it right.
fn cert_key_from_der(der: &PrivateKeyDer<'_>) -> Result<PrivateKey> {
    PrivateKey::from_pem(&pem_encode("PRIVATE KEY", &to_pkcs8(der)?))
}

/// An account key ready to store.
#[derive(Debug)]
struct AccountKey {
    /// PKCS#8 PEM.
    pem: String,
    /// acmetool key id.
    id: String,
    /// RFC 7638 thumbprint.
    thumbprint: String,
}

fn account_key_from_der(der: &PrivateKeyDer<'_>) -> Result<AccountKey> {
    let jwk = PublicJwk::from_private_key(der)?;
    let key = cert_key_from_der(der)?;
    Ok(AccountKey {
        pem: key.to_pem(),
        id: key.id,
        thumbprint: jwk.thumbprint(),
    })
}

/// A private JWK (RFC 7518 §6.3.2 RSA, §6.2.2 EC) as a private key, after checking that its
/// private half belongs to the public half it names.
pub fn jwk_to_private_key(jwk: &Value) -> Result<PrivateKeyDer<'static>> {
    let public = PublicJwk::from_jwk(jwk)?;
    if jwk.get("d").is_none() {
        bail!("the JWK is a public key (it has no \"d\" member); the private key is needed");
    }
    match &public {
        PublicJwk::Rsa { n, e } => {
            let member = |name: &str| {
                if jwk.get(name).is_none() {
                    bail!(
                        "the RSA JWK has no {name:?} member (n, e, d, p, q, dp, dq and qi are needed)"
                    );
                }
                b64url_member(jwk, name)
            };
            let components = KeyPairComponents {
                public_key: PublicKeyComponents { n, e },
                d: member("d")?,
                p: member("p")?,
                q: member("q")?,
                dP: member("dp")?,
                dQ: member("dq")?,
                qInv: member("qi")?,
            };
            // aws-lc checks the private values against each other and the modulus.
            let pair = RsaKeyPair::from_components(&components).map_err(|e| {
                anyhow!(
                    "the JWK's RSA values (n, e, d, p, q, dp, dq, qi) do not form a valid key: {e}"
                )
            })?;
            let pkcs8: Pkcs8V1Der<'static> = pair
                .as_der()
                .map_err(|_| anyhow!("cannot encode the RSA key"))?;
            let der = PrivateKeyDer::Pkcs8(pkcs8.as_ref().to_vec().into());
            check_signs(&pair, &der, &public)?;
            Ok(der)
        }
        PublicJwk::Ec { crv, x, y } => {
            let (_, len) = curve_len(crv).ok_or_else(|| anyhow!("unsupported curve {crv}"))?;
            let d = b64url_member(jwk, "d")?;
            if d.is_empty() || d.len() > len {
                bail!("the JWK's private key \"d\" is not a {crv} scalar");
            }
            let mut scalar = vec![0u8; len - d.len()];
            scalar.extend_from_slice(&d);
            let alg = if *crv == "P-256" {
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let point = [&[4u8][..], x, y].concat();
            let pair = EcdsaKeyPair::from_private_key_and_public_key(alg, &scalar, &point)
                .map_err(|e| {
                    anyhow!("the JWK's private key \"d\" does not belong to its public key: {e}")
                })?;
            let doc = pair
                .to_pkcs8v1()
                .map_err(|_| anyhow!("cannot encode the EC key"))?;
            Ok(PrivateKeyDer::Pkcs8(doc.as_ref().to_vec().into()))
        }
    }
}

/// Signs and verifies once with an RSA key made from a JWK, and checks its public key is the
/// one the JWK names: a wrong `d` would otherwise only show at the CA.
fn check_signs(pair: &RsaKeyPair, der: &PrivateKeyDer<'_>, public: &PublicJwk) -> Result<()> {
    use aws_lc_rs::signature::KeyPair;
    if PublicJwk::from_private_key(der)? != *public {
        bail!("the JWK's private key does not belong to its public key");
    }
    let msg = b"acmekeep import-jwk-account";
    let mut sig = vec![0; pair.public_modulus_len()];
    pair.sign(
        &signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        msg,
        &mut sig,
    )
    .map_err(|_| anyhow!("the JWK's RSA key cannot sign"))?;
    signature::UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        pair.public_key().as_ref(),
    )
    .verify(msg, &sig)
    .map_err(|_| anyhow!("the JWK's private key does not belong to its public key"))
}

// ---------------------------------------------------------------------------------------------
// Input files

fn read_input(path: &Path, limit: u64) -> Result<String> {
    let bytes = files::read_bounded(path, limit).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => anyhow!("{e}"),
        _ => anyhow!("cannot read {}: {e}", path.display()),
    })?;
    String::from_utf8(bytes).map_err(|_| anyhow!("{} is not a text file", path.display()))
}

/// Reads a PEM key file (`import-key`, `import-pem-account`).
fn read_pem_key_file(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read_input(path, MAX_KEY_FILE)?;
    parse_pem_key(&pem).with_context(|| format!("{}", path.display()))
}

/// Reads a JWK file (`import-jwk-account`, certbot's `private_key.json`).
fn read_jwk_file(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let text = read_input(path, MAX_TEXT_FILE)?;
    let jwk: Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("{} is not JSON: {e}", path.display()))?;
    jwk_to_private_key(&jwk).with_context(|| format!("{}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// import-key, import-pem-account, import-jwk-account

/// `import-key FILE`: adds a certificate private key to `keys/` and prints its id.
pub fn execute_key(settings: &Settings, args: &ImportKeyArgs) -> Result<ExitCode> {
    let key = read_pem_key_file(&args.file)
        .and_then(|der| cert_key_from_der(&der).with_context(|| format!("{}", args.file.display())))
        .map_err(config_error)?;
    let (_lock, store) = super::lock_and_open(settings)?;
    store.save_key(&key)?;
    println!("{}", key.id);
    Ok(ExitCode::SUCCESS)
}

/// `import-pem-account URL FILE`.
pub fn execute_pem_account(settings: &Settings, args: &ImportAccountArgs) -> Result<ExitCode> {
    import_account(settings, &args.url, &args.file, read_pem_key_file)
}

/// `import-jwk-account URL FILE`.
pub fn execute_jwk_account(settings: &Settings, args: &ImportAccountArgs) -> Result<ExitCode> {
    import_account(settings, &args.url, &args.file, read_jwk_file)
}

fn import_account(
    settings: &Settings,
    url: &str,
    file: &Path,
    read: fn(&Path) -> Result<PrivateKeyDer<'static>>,
) -> Result<ExitCode> {
    validate_provider(url).map_err(config_error)?;
    let key = read(file)
        .and_then(|der| account_key_from_der(&der).with_context(|| format!("{}", file.display())))
        .map_err(config_error)?;
    let (_lock, store) = super::lock_and_open(settings)?;
    let (id, _) = save_account(&store, url, &key)?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// Stores an account key unless that account is already there. Returns the account id and
/// whether it was new.
fn save_account(store: &Store, url: &str, key: &AccountKey) -> Result<(String, bool)> {
    let part = layout::account_url_part(url).with_context(|| format!("provider {url:?}"))?;
    let id = format!("{part}/{}", key.id);
    let existing = store
        .root()
        .join("accounts")
        .join(&part)
        .join(&key.id)
        .join("privkey");
    if existing.is_file() {
        return Ok((id, false));
    }
    Ok((store.save_account_key(url, &key.id, &key.pem)?, true))
}

// ---------------------------------------------------------------------------------------------
// import-le: reading certbot's directory (nothing is written here)

/// What a certbot directory holds, parsed and checked.
#[derive(Debug, Default)]
struct Certbot {
    accounts: Vec<CertbotAccount>,
    lineages: Vec<Lineage>,
    /// Input that could not be used (reported; the exit code becomes 1).
    problems: Vec<String>,
    /// Things the user should know (logged).
    notes: Vec<String>,
}

#[derive(Debug)]
struct CertbotAccount {
    /// `accounts/...` path, for messages.
    source: String,
    /// certbot's account id (the directory name).
    certbot_id: String,
    /// ACME directory URL.
    directory_url: String,
    key: AccountKey,
}

#[derive(Debug)]
struct Lineage {
    name: String,
    /// Names of the certificate, the lineage's own name first.
    names: Vec<Hostname>,
    /// Directory URL (already checked), if usable.
    provider: Option<String>,
    /// certbot's account id.
    account: Option<String>,
    key_request: Option<RawKey>,
    webroots: Vec<String>,
    /// The current certificate, unless it has expired.
    cert: Option<LineageCert>,
}

#[derive(Debug)]
struct LineageCert {
    key: PrivateKey,
    files: CertFiles,
    /// The made-up order URL (see the module docs).
    url: String,
}

/// A ConfigObj renewal file, reduced to what we use.
#[derive(Debug, Default, PartialEq)]
struct RenewalConf {
    /// `[renewalparams]` entries.
    params: BTreeMap<String, String>,
    /// `[[webroot_map]]` entries: name, document root.
    webroot_map: Vec<(String, String)>,
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// Parses the subset of ConfigObj certbot writes: `[section]`, `[[subsection]]`,
/// `key = value`, `#` comments.
fn parse_renewal_conf(text: &str) -> RenewalConf {
    let mut conf = RenewalConf::default();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (unquote(k).to_owned(), unquote(v).to_owned());
        match section.as_str() {
            "renewalparams" => {
                conf.params.insert(k, v);
            }
            "webroot_map" => conf.webroot_map.push((k, v)),
            _ => {}
        }
    }
    conf
}

/// certbot reuses ACMEv1 Let's Encrypt accounts for ACMEv2; so do we (acmetool §8.2 too).
fn current_le_url(url: &str) -> String {
    match url {
        "https://acme-v01.api.letsencrypt.org/directory" => {
            "https://acme-v02.api.letsencrypt.org/directory".to_owned()
        }
        "https://acme-staging.api.letsencrypt.org/directory" => {
            "https://acme-staging-v02.api.letsencrypt.org/directory".to_owned()
        }
        other => other.to_owned(),
    }
}

/// certbot's `server_path` of a directory URL (netloc + path), with empty segments dropped
/// so `a/b/` and `a/b` compare equal.
fn server_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    rest.split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// acmetool's `request.key` for certbot's key settings (or, without them, the key the
/// certificate has).
fn key_request(params: &BTreeMap<String, String>, family: Option<KeyFamily>) -> Option<RawKey> {
    let kind = match params.get("key_type").map(|s| s.to_ascii_lowercase()) {
        Some(k) => k,
        None => match family? {
            KeyFamily::Rsa => "rsa".to_owned(),
            KeyFamily::Ecdsa => "ecdsa".to_owned(),
        },
    };
    match kind.as_str() {
        "rsa" => Some(RawKey {
            kind: Some("rsa".into()),
            rsa_size: params.get("rsa_key_size").and_then(|s| s.parse().ok()),
            ..RawKey::default()
        }),
        "ecdsa" => Some(RawKey {
            kind: Some("ecdsa".into()),
            ecdsa_curve: Some(
                match params.get("elliptic_curve").map(String::as_str) {
                    // P-521 is not accepted by public CAs; acmetool uses P-384 instead too.
                    Some("secp384r1") | Some("secp521r1") => "nistp384",
                    _ => "nistp256",
                }
                .into(),
            ),
            ..RawKey::default()
        }),
        _ => None,
    }
}

/// acmetool webroot paths (the challenge directory itself) for a webroot lineage.
fn webroot_paths(conf: &RenewalConf) -> Vec<String> {
    if conf.params.get("authenticator").map(String::as_str) != Some("webroot") {
        return Vec::new();
    }
    let mut roots: Vec<String> = conf.webroot_map.iter().map(|(_, v)| v.clone()).collect();
    if roots.is_empty()
        && let Some(list) = conf.params.get("webroot_path")
    {
        roots = list.split(',').map(str::to_owned).collect();
    }
    let mut out: Vec<String> = Vec::new();
    for r in roots {
        let r = r.trim().trim_end_matches('/');
        if r.starts_with('/') {
            let p = format!("{r}/.well-known/acme-challenge");
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Reads `path` if it resolves (through any symlinks) to a place inside `root`.
fn read_confined(root: &Path, path: &Path, limit: u64) -> Result<String> {
    let real = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    if !real.starts_with(root) {
        bail!(
            "{} resolves to {}, outside {}; not reading it",
            path.display(),
            real.display(),
            root.display()
        );
    }
    read_input(&real, limit)
}

/// Sorted names of the entries of `dir`, hidden ones skipped, at most [`MAX_ENTRIES`].
fn list_dir(dir: &Path) -> Result<Vec<(String, std::fs::Metadata)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in rd {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // symlink_metadata: a symlinked directory is not descended into.
        let meta = std::fs::symlink_metadata(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        out.push((name, meta));
        if out.len() > MAX_ENTRIES {
            bail!("{} has more than {MAX_ENTRIES} entries", dir.display());
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Account directories under `accounts/`: (server path, certbot id, directory).
fn find_account_dirs(accounts: &Path) -> Result<Vec<(String, String, PathBuf)>> {
    let mut found = Vec::new();
    let mut stack: Vec<(PathBuf, Vec<String>)> = vec![(accounts.to_owned(), Vec::new())];
    let mut visited = 0usize;
    while let Some((dir, rel)) = stack.pop() {
        visited += 1;
        if visited > MAX_ENTRIES {
            bail!("{} holds too many directories", accounts.display());
        }
        for (name, meta) in list_dir(&dir)? {
            if !meta.is_dir() {
                continue;
            }
            let path = dir.join(&name);
            let key = std::fs::symlink_metadata(path.join("private_key.json"));
            if key.is_ok_and(|m| m.is_file()) {
                if !rel.is_empty() {
                    found.push((rel.join("/"), name, path));
                }
            } else if rel.len() < MAX_ACCOUNT_DEPTH {
                let mut r = rel.clone();
                r.push(name);
                stack.push((path, r));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Reads a certbot configuration directory. `Err` only when `dir` is not one at all.
fn read_certbot(dir: &Path, now: OffsetDateTime) -> Result<Certbot> {
    let root = dir
        .canonicalize()
        .with_context(|| format!("certbot directory {}", dir.display()))?;
    if !root.join("accounts").is_dir() && !root.join("renewal").is_dir() {
        bail!(
            "{} does not look like a certbot configuration directory (it has neither accounts/ nor renewal/)",
            root.display()
        );
    }
    let mut cb = Certbot::default();

    let mut confs: Vec<(String, RenewalConf)> = Vec::new();
    for (file, meta) in list_dir(&root.join("renewal"))? {
        let Some(lineage) = file.strip_suffix(".conf") else {
            continue;
        };
        let path = root.join("renewal").join(&file);
        if !meta.is_file() {
            cb.problems
                .push(format!("{}: not a regular file; skipped", path.display()));
            continue;
        }
        match read_input(&path, MAX_TEXT_FILE) {
            Ok(text) => confs.push((lineage.to_owned(), parse_renewal_conf(&text))),
            Err(e) => cb.problems.push(format!("{e:#}")),
        }
    }
    let servers: Vec<&String> = confs
        .iter()
        .filter_map(|(_, c)| c.params.get("server"))
        .collect();

    for (spath, certbot_id, path) in find_account_dirs(&root.join("accounts"))? {
        let source = format!("accounts/{spath}/{certbot_id}");
        let url = servers
            .iter()
            .find(|s| server_path(s) == spath)
            .map_or_else(|| format!("https://{spath}"), |s| (*s).clone());
        let url = current_le_url(&url);
        let read = validate_provider(&url)
            .and_then(|()| read_jwk_file(&path.join("private_key.json")))
            .and_then(|der| account_key_from_der(&der));
        match read {
            Ok(key) => cb.accounts.push(CertbotAccount {
                source,
                certbot_id,
                directory_url: url,
                key,
            }),
            Err(e) => cb.problems.push(format!("{source}: {e:#}")),
        }
    }

    for (name, conf) in confs {
        match read_lineage(&root, &name, &conf, now, &mut cb.notes) {
            Ok(l) => cb.lineages.push(l),
            Err(e) => cb.problems.push(format!("lineage {name}: {e:#}")),
        }
    }
    Ok(cb)
}

/// The certificate's names, without repeats, the lineage's own (the first name certbot was
/// given) first.
fn lineage_names(leaf_names: &[String], lineage: &str) -> Result<Vec<Hostname>> {
    let mut names: Vec<Hostname> = Vec::new();
    for n in leaf_names {
        let h = Hostname::parse(n).context("a name of the certificate")?;
        if !names.contains(&h) {
            names.push(h);
        }
    }
    if names.is_empty() {
        bail!("the certificate has no DNS names");
    }
    if let Some(pos) = names.iter().position(|n| n.as_str() == lineage) {
        let first = names.remove(pos);
        names.insert(0, first);
    }
    Ok(names)
}

/// The lineage's CA (certbot's default when its renewal file names none; an ACMEv1 Let's
/// Encrypt URL taken as its ACMEv2 one), or none, with a note, when it is no valid provider.
fn lineage_provider(conf: &RenewalConf, name: &str, notes: &mut Vec<String>) -> Option<String> {
    let server = conf
        .params
        .get("server")
        .map_or_else(|| CERTBOT_DEFAULT_SERVER.to_owned(), |s| current_le_url(s));
    match validate_provider(&server) {
        Ok(()) => Some(server),
        Err(e) => {
            notes.push(format!(
                "lineage {name}: {e:#}; its target uses the default provider"
            ));
            None
        }
    }
}

fn read_lineage(
    root: &Path,
    name: &str,
    conf: &RenewalConf,
    now: OffsetDateTime,
    notes: &mut Vec<String>,
) -> Result<Lineage> {
    let live = root.join("live").join(name);
    let cert_pem = read_confined(root, &live.join("cert.pem"), cert::MAX_CHAIN)?;
    let chain_pem = match live.join("chain.pem").symlink_metadata() {
        Ok(_) => read_confined(root, &live.join("chain.pem"), cert::MAX_CHAIN)?,
        Err(_) => String::new(),
    };
    let ders = cert::split_chain(&cert_pem).context("in cert.pem")?;
    let leaf = cert::leaf_info(&ders[0]).context("in cert.pem")?;

    let names = lineage_names(&leaf.names, name)?;
    let provider = lineage_provider(conf, name, notes);
    if let Some(auth) = conf.params.get("authenticator")
        && auth != "webroot"
    {
        notes.push(format!(
            "lineage {name} used certbot's {auth:?} authenticator: make sure conf/target sets up a challenge method before the certificate is due"
        ));
    }

    let cert = if leaf.not_after <= now {
        notes.push(format!(
            "lineage {name}: the certificate has expired; only its names are imported"
        ));
        None
    } else {
        let key_pem = read_confined(root, &live.join("privkey.pem"), MAX_KEY_FILE)?;
        let key = parse_pem_key(&key_pem)
            .and_then(|der| cert_key_from_der(&der))
            .context("in privkey.pem")?;
        let files = cert::validate_issued(&format!("{cert_pem}{chain_pem}"), &key.id, &[], now)
            .context("in cert.pem and chain.pem")?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &ders[0]);
        let url = format!(
            "{IMPORTED_URL_PREFIX}{}",
            data_encoding::HEXLOWER.encode(digest.as_ref())
        );
        Some(LineageCert { key, files, url })
    };

    Ok(Lineage {
        name: name.to_owned(),
        names,
        provider,
        account: conf.params.get("account").cloned(),
        key_request: key_request(&conf.params, leaf.key_family),
        webroots: webroot_paths(conf),
        cert,
    })
}

// ---------------------------------------------------------------------------------------------
// import-le: writing

/// How many of each thing `import-le` wrote (or found already there).
#[derive(Debug, Default)]
struct Counts {
    accounts: usize,
    keys: usize,
    certificates: usize,
    targets: usize,
}

impl Counts {
    fn total(&self) -> usize {
        self.accounts + self.keys + self.certificates + self.targets
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        write!(
            f,
            "{}, {}, {}, {}",
            plural(self.accounts, "account"),
            plural(self.keys, "key"),
            plural(self.certificates, "certificate"),
            plural(self.targets, "target")
        )
    }
}

/// What `import-le` wrote, and what was already there.
#[derive(Debug, Default)]
struct Tally {
    new: Counts,
    present: Counts,
}

fn target_yaml(l: &Lineage) -> Result<String> {
    let raw = RawTarget {
        satisfy: Some(RawSatisfy {
            names: Some(l.names.iter().map(|n| n.to_string()).collect()),
            ..RawSatisfy::default()
        }),
        request: Some(RawRequest {
            provider: l.provider.clone(),
            key: l.key_request.clone(),
            challenge: (!l.webroots.is_empty()).then(|| RawChallenge {
                webroot_paths: Some(l.webroots.clone()),
                ..RawChallenge::default()
            }),
            ..RawRequest::default()
        }),
        ..RawTarget::default()
    };
    Ok(serde_yaml_ng::to_string(&raw)?)
}

fn join(names: &[Hostname]) -> String {
    names
        .iter()
        .map(Hostname::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes what was read into the store; prints one line per new thing.
fn apply(store: &Store, cb: &Certbot, now: OffsetDateTime) -> Result<Tally> {
    let mut tally = Tally::default();
    let defaults = store.load_defaults().map_err(config_error)?;
    let (targets, _) = store.load_targets(&defaults)?;
    let mut covered: Vec<Vec<Hostname>> = targets.into_iter().map(|t| t.satisfy_names).collect();
    let key_ids = store.load_inventory()?.key_ids;

    // (certbot account id, directory URL) → acmetool account id.
    let mut accounts: BTreeMap<(String, String), String> = BTreeMap::new();
    for a in &cb.accounts {
        let (id, new) = save_account(store, &a.directory_url, &a.key)?;
        if new {
            println!("account {id} (from {})", a.source);
            tally.new.accounts += 1;
        } else {
            tally.present.accounts += 1;
        }
        tracing::info!("account {id}: thumbprint {}", a.key.thumbprint);
        accounts.insert((a.certbot_id.clone(), a.directory_url.clone()), id);
    }

    let mut saved_keys: BTreeSet<String> = BTreeSet::new();
    for l in &cb.lineages {
        if let Some(c) = &l.cert {
            if key_ids.contains(&c.key.id) || saved_keys.contains(&c.key.id) {
                tally.present.keys += 1;
            } else {
                store.save_key(&c.key)?;
                println!("key {} (from live/{}/privkey.pem)", c.key.id, l.name);
                tally.new.keys += 1;
            }
            saved_keys.insert(c.key.id.clone());

            let id = ids::cert_id(&c.url);
            if store.root().join("certs").join(&id).join("cert").is_file() {
                tally.present.certificates += 1;
            } else {
                let account = l.account.as_ref().zip(l.provider.as_ref()).and_then(
                    |(certbot_id, provider)| accounts.get(&(certbot_id.clone(), provider.clone())),
                );
                let begun = store.begin_cert(&c.url, account.map(String::as_str))?;
                store.finish_cert(&begun, Some(&c.key.id), &c.files)?;
                println!("certificate {id} ({})", join(&l.names));
                tally.new.certificates += 1;
            }
        }

        if covered
            .iter()
            .any(|c| l.names.iter().all(|n| c.contains(n)))
        {
            tally.present.targets += 1;
        } else {
            let mut random = [0u8; 16];
            aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow!("no randomness"))?;
            let file = new_target_filename(&l.names[0], random);
            store
                .write_target(&file, &target_yaml(l)?)
                .context("saving the new target")?;
            println!("target desired/{file} ({})", join(&l.names));
            covered.push(l.names.clone());
            tally.new.targets += 1;
        }
    }

    // Point live/ at the imported certificates now rather than at the next reconcile.
    let (targets, _) = store.load_targets(&defaults)?;
    let inv = store.load_inventory()?;
    for r in crate::plan::plan_relinks(&targets, &inv.summaries(), &inv.live, now) {
        store.relink(&r.name, &r.cert_id)?;
        println!("live/{} -> certs/{}", r.name, r.cert_id);
    }
    Ok(tally)
}

/// `import-le [DIR]`: certbot's accounts, current certificates with their keys, and a target
/// for each lineage's names. Running it again changes nothing.
pub fn execute_le(settings: &Settings, args: &ImportLeArgs) -> Result<ExitCode> {
    let now = settings.clock.now_utc();
    let cb = read_certbot(&args.dir, now).map_err(config_error)?;
    for n in &cb.notes {
        tracing::warn!("{n}");
    }
    let tally = {
        let (_lock, store) = super::lock_and_open(settings)?;
        apply(&store, &cb, now)?
    };
    let from = args.dir.display();
    match (tally.new.total(), tally.present.total()) {
        (0, 0) => println!("found nothing to import in {from}"),
        (0, _) => println!(
            "imported nothing new from {from} ({} already present)",
            tally.present
        ),
        (_, 0) => println!("imported {} from {from}", tally.new),
        _ => println!(
            "imported {} from {from}; already present: {}",
            tally.new, tally.present
        ),
    }
    for p in &cb.problems {
        eprintln!("acmekeep: not imported: {p}");
    }
    Ok(ExitCode::from(if cb.problems.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads one DER TLV: (tag, contents, rest).
    fn tlv(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = der[0];
        let (len, header) = if der[1] < 0x80 {
            (usize::from(der[1]), 2)
        } else {
            let n = usize::from(der[1] & 0x7f);
            let len = der[2..2 + n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, 2 + n)
        };
        (tag, &der[header..header + len], &der[header + len..])
    }

    /// A fresh RSA key: its PKCS#1 DER and the private JWK certbot would write for it.
    fn rsa_jwk() -> (Vec<u8>, Value) {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("generate");
        let pkcs8: Pkcs8V1Der<'static> = pair.as_der().expect("pkcs8");
        // PrivateKeyInfo: SEQUENCE { version, algorithm, OCTET STRING RSAPrivateKey }.
        let (_, info, _) = tlv(pkcs8.as_ref());
        let (_, _, rest) = tlv(info);
        let (_, _, rest) = tlv(rest);
        let (tag, pkcs1, _) = tlv(rest);
        assert_eq!(tag, 0x04);
        let (_, mut seq, _) = tlv(pkcs1);
        let mut ints = Vec::new();
        while !seq.is_empty() {
            let (tag, v, rest) = tlv(seq);
            assert_eq!(tag, 0x02);
            ints.push(data_encoding::BASE64URL_NOPAD.encode(v));
            seq = rest;
        }
        let mut jwk = json!({"kty": "RSA"});
        for (name, v) in ["version", "n", "e", "d", "p", "q", "dp", "dq", "qi"]
            .iter()
            .zip(ints)
        {
            jwk[*name] = Value::String(v);
        }
        (pkcs1.to_vec(), jwk)
    }

    fn ec_jwk(alg: &'static signature::EcdsaSigningAlgorithm, crv: &str) -> (Vec<u8>, Value) {
        use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
        use aws_lc_rs::signature::KeyPair;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &aws_lc_rs::rand::SystemRandom::new())
            .expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).expect("parse");
        let point = pair.public_key().as_ref();
        let (x, y) = point[1..].split_at((point.len() - 1) / 2);
        let d: EcPrivateKeyBin<'static> = pair.private_key().as_be_bytes().expect("d");
        let b64 = |b: &[u8]| data_encoding::BASE64URL_NOPAD.encode(b);
        (
            doc.as_ref().to_vec(),
            json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y), "d": b64(d.as_ref())}),
        )
    }

    fn key_id_of(der: &PrivateKeyDer<'_>) -> String {
        cert_key_from_der(der).expect("usable key").id
    }

    #[test]
    fn rsa_jwk_becomes_the_same_key_byte_for_byte() {
        let (pkcs1, jwk) = rsa_jwk();
        let der = jwk_to_private_key(&jwk).expect("converts");
        let original = PrivateKeyDer::Pkcs1(pkcs1.into());
        // The PKCS#8 the store writes is the one the original key gives, to the byte.
        let PrivateKeyDer::Pkcs8(ours) = &der else {
            panic!("expected PKCS#8")
        };
        assert_eq!(
            ours.secret_pkcs8_der(),
            to_pkcs8(&original).expect("pkcs8").as_slice()
        );
        assert_eq!(key_id_of(&der), key_id_of(&original));
        let account = account_key_from_der(&der).expect("account key");
        assert!(account.pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(
            account.thumbprint,
            PublicJwk::from_jwk(&jwk).expect("public").thumbprint()
        );
    }

    #[test]
    fn ec_jwks_become_the_same_key() {
        for (alg, crv) in [
            (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256"),
            (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384"),
        ] {
            let (pkcs8, jwk) = ec_jwk(alg, crv);
            let der = jwk_to_private_key(&jwk).expect("converts");
            let original = PrivateKeyDer::Pkcs8(pkcs8.into());
            assert_eq!(key_id_of(&der), key_id_of(&original), "{crv}");
        }
    }

    #[test]
    fn inconsistent_or_incomplete_jwks_are_refused() {
        let (_, rsa) = rsa_jwk();
        let (_, ec) = ec_jwk(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256");
        let (_, other_rsa) = rsa_jwk();
        let (_, other_ec) = ec_jwk(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256");
        let with = |base: &Value, member: &str, from: &Value| {
            let mut v = base.clone();
            v[member] = from[member].clone();
            v
        };
        let without = |base: &Value, member: &str| {
            let mut v = base.clone();
            v.as_object_mut().expect("object").remove(member);
            v
        };
        let cases = [
            (with(&rsa, "d", &other_rsa), "do not form"),
            (with(&rsa, "n", &other_rsa), "do not form"),
            (with(&rsa, "qi", &other_rsa), "do not form"),
            (without(&rsa, "p"), "no \"p\" member"),
            (without(&rsa, "d"), "is a public key"),
            (with(&ec, "d", &other_ec), "does not belong"),
            (with(&ec, "x", &other_ec), "does not belong"),
            (without(&ec, "d"), "is a public key"),
        ];
        for (jwk, why) in cases {
            let err = format!("{:#}", jwk_to_private_key(&jwk).expect_err(why));
            assert!(err.contains(why), "{err:?} should say {why:?}");
        }
    }

    #[test]
    fn pem_keys_of_every_encoding_are_stored_as_pkcs8() {
        let (pkcs1, _) = rsa_jwk();
        let (pkcs8, _) = ec_jwk(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384");
        let p384 = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8)
            .expect("parse");
        let sec1 = p384.private_key().as_der().expect("sec1");
        for (label, der) in [
            ("RSA PRIVATE KEY", pkcs1.as_slice()),
            ("EC PRIVATE KEY", sec1.as_ref()),
            ("PRIVATE KEY", pkcs8.as_slice()),
        ] {
            let pem = pem_encode(label, der);
            let key = parse_pem_key(&pem)
                .and_then(|d| cert_key_from_der(&d))
                .expect(label);
            let stored = key.to_pem();
            assert!(
                stored.starts_with("-----BEGIN PRIVATE KEY-----\n"),
                "{label}"
            );
            let again = PrivateKey::from_pem(&stored).expect("reads back");
            assert_eq!(again.id, key.id, "{label}");
            let original = PrivateKey::from_pem(&pem).expect("rcgen reads the original");
            assert_eq!(original.id, key.id, "{label}");
        }
    }

    #[test]
    fn renewal_conf_as_certbot_writes_it() {
        let text = "# renew_before_expiry = 30 days\nversion = 2.1.0\narchive_dir = /etc/letsencrypt/archive/a.example\ncert = /etc/letsencrypt/live/a.example/cert.pem\n\n# Options used in the renewal process\n[renewalparams]\naccount = 5df4403c332410bbea297c5ae00f9c65\nserver = https://acme-v02.api.letsencrypt.org/directory\nauthenticator = webroot\nwebroot_path = /var/www/a,\nkey_type = ecdsa\nelliptic_curve = secp384r1\n[[webroot_map]]\na.example = /var/www/a/\nwww.a.example = /var/www/a\n";
        let conf = parse_renewal_conf(text);
        assert_eq!(
            conf.params.get("account").map(String::as_str),
            Some("5df4403c332410bbea297c5ae00f9c65")
        );
        assert_eq!(
            conf.params.get("server").map(String::as_str),
            Some("https://acme-v02.api.letsencrypt.org/directory")
        );
        assert!(
            !conf.params.contains_key("cert"),
            "top-level keys are not params"
        );
        assert_eq!(conf.webroot_map.len(), 2);
        assert_eq!(
            webroot_paths(&conf),
            vec!["/var/www/a/.well-known/acme-challenge".to_owned()]
        );
        let key = key_request(&conf.params, None).expect("key");
        assert_eq!(key.kind.as_deref(), Some("ecdsa"));
        assert_eq!(key.ecdsa_curve.as_deref(), Some("nistp384"));
    }

    #[test]
    fn key_settings_map_to_acmetool_key_requests() {
        let params = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let rsa = key_request(
            &params(&[("key_type", "rsa"), ("rsa_key_size", "4096")]),
            None,
        )
        .expect("rsa");
        assert_eq!(
            (rsa.kind.as_deref(), rsa.rsa_size),
            (Some("rsa"), Some(4096))
        );
        let ec = key_request(&params(&[("key_type", "ecdsa")]), None).expect("ecdsa");
        assert_eq!(ec.ecdsa_curve.as_deref(), Some("nistp256"));
        // Older renewal files have no key_type: the certificate's key decides.
        let old = key_request(&params(&[]), Some(KeyFamily::Rsa)).expect("rsa");
        assert_eq!((old.kind.as_deref(), old.rsa_size), (Some("rsa"), None));
        assert!(key_request(&params(&[]), None).is_none());
    }

    #[test]
    fn server_paths_and_le_v01_urls() {
        assert_eq!(
            server_path("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org/directory"
        );
        assert_eq!(
            server_path("https://127.0.0.1:14000/dir/"),
            "127.0.0.1:14000/dir"
        );
        assert_eq!(
            current_le_url("https://acme-v01.api.letsencrypt.org/directory"),
            "https://acme-v02.api.letsencrypt.org/directory"
        );
        assert_eq!(
            current_le_url("https://acme-staging.api.letsencrypt.org/directory"),
            "https://acme-staging-v02.api.letsencrypt.org/directory"
        );
        assert_eq!(
            current_le_url("https://ca.example/dir"),
            "https://ca.example/dir"
        );
    }

    #[test]
    fn imported_certificate_urls_are_https_and_name_their_directory() {
        let url = format!("{IMPORTED_URL_PREFIX}{}", "ab".repeat(32));
        let parsed = url::Url::parse(&url).expect("URL");
        assert_eq!(parsed.scheme(), "https");
        assert!(ids::is_well_formed_id(&ids::cert_id(&url)));
    }
}
