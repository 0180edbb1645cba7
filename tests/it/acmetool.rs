//! Compatibility with the real acmetool 0.2.2 (`/usr/bin/acmetool`, Debian package `acmetool`).
//!
//! The real acmetool fills a state directory against the test Pebble, acmekeep takes it over,
//! and then acmetool must still accept what acmekeep wrote. The tests are skipped (with a
//! message on stderr) only if `/usr/bin/acmetool` is missing; CI installs it.
//!
//! How acmetool is run (see doc/acmetool-observed.md):
//! - `--state <tmp state> --hooks <empty tmp dir> --batch --xlog.severity=debug`;
//! - `SSL_CERT_FILE=<Pebble's HTTPS CA>`: acmetool ignores the acmekeep-only conf/target keys
//!   (`provider-ca-bundle`, `default-listeners`, `default-webroot`) without a warning, so Go
//!   needs the CA this way;
//! - besides the `http-ports` entry (Pebble's http-01 port) acmetool always tries `[::]:80`,
//!   `402` and `4402` (bind failures are ignored) and always writes the challenge file into
//!   `/var/run/acme/acme-challenge/` (an error there is ignored too, so root is not needed).
//!   Neither can be turned off in acmetool 0.2.2.
//! - Pebble 2.4 issues 5-year certificates, so nothing is due right after issuance.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::support::{
    Pebble, PebbleOpts, StateDir, acmekeep, acmetool_id, cert_dns_names, is_acmetool_id,
    pem_blocks, pem_certs, standard_conf_target,
};

const ACMETOOL: &str = "/usr/bin/acmetool";
/// Bound for one acmetool run (each issuance takes about 10 s: acmetool polls slowly).
const ACMETOOL_TIMEOUT: Duration = Duration::from_secs(240);
/// DER of the OID prime256v1 (1.2.840.10045.3.1.7), as found in a SEC1 P-256 key.
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Whether the real acmetool is installed; prints why the test is skipped if not.
fn acmetool_installed(test: &str) -> bool {
    if Path::new(ACMETOOL).exists() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: {ACMETOOL} is missing (install the Debian package `acmetool`, 0.2.2)"
    );
    false
}

/// The result of one acmetool run.
struct AcmetoolRun {
    args: Vec<String>,
    code: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

impl AcmetoolRun {
    fn describe(&self) -> String {
        format!(
            "acmetool {}\n  exit code: {:?}{}\n----- stdout -----\n{}\n----- stderr -----\n{}\n------------------",
            self.args.join(" "),
            self.code,
            if self.timed_out {
                " (KILLED: timed out)"
            } else {
                ""
            },
            self.stdout,
            self.stderr
        )
    }

    #[track_caller]
    fn assert_success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "acmetool failed\n{}", self.describe());
        self
    }
}

/// Runs the real acmetool on `state` against `pebble`, with an empty hooks directory.
fn acmetool(state: &StateDir, pebble: &Pebble, args: &[&str]) -> AcmetoolRun {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    // Empty, and not world-writable whatever the umask (acmetool refuses such hook dirs).
    let hooks = state.scratch_dir("acmetool-hooks");
    fs::set_permissions(&hooks, fs::Permissions::from_mode(0o755)).expect("chmod hooks dir");
    let logs = state.scratch_dir("acmetool-logs");
    let out_path = logs.join(format!("{n}.stdout"));
    let err_path = logs.join(format!("{n}.stderr"));
    let out = File::create(&out_path).expect("create acmetool stdout file");
    let err = File::create(&err_path).expect("create acmetool stderr file");

    let mut cmd = Command::new(ACMETOOL);
    cmd.arg("--state")
        .arg(state.path())
        .arg("--hooks")
        .arg(&hooks)
        .arg("--batch")
        .arg("--xlog.severity=debug")
        .args(args)
        .env("SSL_CERT_FILE", pebble.ca_bundle_path())
        .env_remove("ACME_STATE_DIR")
        .env_remove("ACME_HOOKS_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let mut child = cmd.spawn().expect("spawn acmetool");
    let deadline = Instant::now() + ACMETOOL_TIMEOUT;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
        }
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    AcmetoolRun {
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        code: status.and_then(|s| s.code()),
        timed_out,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// conf/target for both tools: [`standard_conf_target`] (which has the acmekeep-only keys
/// `provider-ca-bundle`, `default-listeners: false`, `default-webroot: ""`), optionally with
/// key settings (acmetool creates its account key with them: `None` gives RSA-2048).
fn conf_target(pebble: &Pebble, key: Option<&str>) -> String {
    let base = standard_conf_target(pebble);
    assert!(
        base.starts_with("request:\n"),
        "unexpected conf/target:\n{base}"
    );
    let conf = match key {
        Some(key) => base.replacen("request:\n", &format!("request:\n  key:\n{key}"), 1),
        None => base,
    };
    // Guard the keys acmetool must ignore (it does, silently: doc/acmetool-observed.md).
    for key in [
        "provider-ca-bundle:",
        "default-listeners: false",
        "default-webroot:",
    ] {
        assert!(conf.contains(key), "conf/target lacks {key}:\n{conf}");
    }
    conf
}

/// A state directory with the given conf/target and the standard responses.
fn state_with(conf_target: &str) -> StateDir {
    let state = StateDir::new();
    state.write_conf_target(conf_target);
    state.write_standard_responses();
    state
}

/// Everything in the state directory except hidden names (acmekeep's `.lock`; acmetool skips
/// them too): relative path -> type, mode and link target or content digest.
fn snapshot(state: &StateDir) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.expect("read_dir entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = e.path();
            let rel = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .display()
                .to_string();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let mode = meta.permissions().mode() & 0o7777;
            let desc = if meta.file_type().is_symlink() {
                format!(
                    "link -> {}",
                    fs::read_link(&path).expect("readlink").display()
                )
            } else if meta.is_dir() {
                walk(base, &path, out);
                format!("dir {mode:o}")
            } else {
                let data = fs::read(&path).expect("read file");
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data);
                format!(
                    "file {mode:o} {} bytes sha256:{}",
                    data.len(),
                    data_encoding::HEXLOWER.encode(digest.as_ref())
                )
            };
            out.insert(rel, desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(state.path(), state.path(), &mut out);
    out
}

/// The differences between two snapshots, one line each (empty if equal).
fn snapshot_diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    let mut diff = String::new();
    for (path, b) in before {
        match after.get(path) {
            None => diff.push_str(&format!("  removed: {path} ({b})\n")),
            Some(a) if a != b => diff.push_str(&format!("  changed: {path}: {b} => {a}\n")),
            Some(_) => {}
        }
    }
    for (path, a) in after {
        if !before.contains_key(path) {
            diff.push_str(&format!("  added:   {path} ({a})\n"));
        }
    }
    diff
}

/// `live/` name -> link target.
fn live_links(state: &StateDir) -> BTreeMap<String, PathBuf> {
    state
        .live_names()
        .into_iter()
        .map(|n| {
            let target = state
                .live_link(&n)
                .unwrap_or_else(|| panic!("live/{n} is not a symlink\n{}", state.tree()));
            (n, target)
        })
        .collect()
}

/// The PEM label of the first `* PRIVATE KEY` block of the single account key.
fn account_key(state: &StateDir) -> (String, String, Vec<u8>) {
    let accounts = state.account_ids();
    assert_eq!(accounts.len(), 1, "expected one account\n{}", state.tree());
    let pem = state.read(Path::new("accounts").join(&accounts[0]).join("privkey"));
    let label = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .map(|p| p.expect("valid PEM").label)
        .find(|l| l.ends_with("PRIVATE KEY"))
        .expect("account key has a PRIVATE KEY block");
    let der = pem_blocks(&pem, |l| l.ends_with("PRIVATE KEY")).remove(0);
    (accounts[0].clone(), label, der)
}

/// `acmekeep status --json` (schema_version 2, see src/commands/status.rs) succeeds and
/// shows what acmetool left: the account, one entry per `desired/` file, each `valid` with
/// the certificate its `live/` links point at, every `live/` name, and no warnings.
#[track_caller]
fn assert_acmekeep_status_lists(state: &StateDir, account_id: &str) {
    let run = acmekeep(state, &["status", "--json"]);
    run.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("status --json: stdout is not JSON: {e}\n{}", run.describe()));
    let ctx = || format!("{}\n{}", run.describe(), state.tree());
    assert_eq!(doc["schema_version"], 2, "{}", ctx());
    let accounts: Vec<&str> = doc["accounts"]
        .as_array()
        .unwrap_or_else(|| panic!("no accounts array\n{}", ctx()))
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(accounts, [account_id], "accounts\n{}", ctx());
    assert_eq!(
        doc["warnings"].as_array().map(Vec::len),
        Some(0),
        "warnings about a directory acmetool wrote\n{}",
        ctx()
    );
    let targets = doc["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("no targets array\n{}", ctx()));
    let files: Vec<&str> = targets.iter().filter_map(|t| t["file"].as_str()).collect();
    assert_eq!(files, state.desired_files(), "targets\n{}", ctx());
    let mut live_seen = Vec::new();
    for t in targets {
        let file = t["file"].as_str().unwrap_or_default();
        assert_eq!(t["state"], "valid", "target {file}\n{}", ctx());
        let cert_id = t["certificate"]["id"].as_str().unwrap_or_default();
        for live in t["live"].as_array().into_iter().flatten() {
            let live = live.as_str().unwrap_or_default();
            assert_eq!(
                cert_id,
                state.live_cert_id(live),
                "target {file}: certificate vs live/{live}\n{}",
                ctx()
            );
            live_seen.push(live.to_owned());
        }
    }
    live_seen.sort();
    assert_eq!(live_seen, state.live_names(), "live names\n{}", ctx());
}

/// Checks `certs/<id>` as acmetool requires it: the ID is the hash of the exact `url` bytes
/// (acmetool refuses to run at all if a well-formed ID does not verify), the `account` link
/// points at `account_id`, the leaf covers `names`, and `privkey` links to a key in `keys/`.
#[track_caller]
fn assert_cert_dir(state: &StateDir, pebble: &Pebble, id: &str, account_id: &str, names: &[&str]) {
    let dir = Path::new("certs").join(id);
    assert!(is_acmetool_id(id), "malformed cert ID {id}");
    let url = state.read(dir.join("url"));
    assert_eq!(
        acmetool_id(&url),
        id,
        "certs/{id}/url does not hash to its ID: {url:?}"
    );
    let url = String::from_utf8(url).expect("UTF-8 url");
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{}/", pebble.acme_port())),
        "certs/{id}/url: {url:?}"
    );
    assert_eq!(
        fs::read_link(state.join(dir.join("account"))).ok(),
        Some(Path::new("../../accounts").join(account_id)),
        "certs/{id}/account\n{}",
        state.tree()
    );
    let key_link = fs::read_link(state.join(dir.join("privkey")))
        .unwrap_or_else(|e| panic!("certs/{id}/privkey: {e}\n{}", state.tree()));
    let key_id = key_link
        .strip_prefix("../../keys")
        .ok()
        .and_then(|p| p.parent())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| panic!("certs/{id}/privkey -> {}", key_link.display()));
    assert!(
        state.key_ids().contains(&key_id),
        "certs/{id}/privkey -> missing key {key_id}"
    );
    let leaf = pem_certs(&state.read(dir.join("cert")));
    assert_eq!(leaf.len(), 1, "certs/{id}/cert holds one certificate");
    let sans = cert_dns_names(&leaf[0]);
    for name in names {
        assert!(
            sans.iter().any(|s| s == name),
            "certs/{id}: {name} not in {sans:?}"
        );
    }
    let mut full = state.read(dir.join("cert"));
    full.extend(state.read(dir.join("chain")));
    assert_eq!(
        full,
        state.read(dir.join("fullchain")),
        "certs/{id}: fullchain != cert+chain"
    );
}

/// `acmetool status` exits 0 and lists `account_id` and each of `cert_ids` as a best
/// certificate; with `all_satisfied`, every target file has a best certificate.
#[track_caller]
fn assert_acmetool_status(
    state: &StateDir,
    pebble: &Pebble,
    account_id: &str,
    cert_ids: &[String],
    all_satisfied: bool,
) {
    let run = acmetool(state, pebble, &["status"]);
    run.assert_success();
    assert!(
        run.stdout.contains(&format!("Account({account_id})")),
        "acmetool status does not list the account\n{}",
        run.describe()
    );
    for id in cert_ids {
        assert!(
            run.stdout.contains(&format!("best: Certificate({id})")),
            "acmetool status does not show certificate {id} as a best certificate\n{}",
            run.describe()
        );
    }
    if all_satisfied {
        assert_eq!(
            run.stdout.matches("best: Certificate(").count(),
            state.desired_files().len(),
            "every target should have a best certificate\n{}",
            run.describe()
        );
    }
}

#[test]
fn acmetool_state_dir_is_taken_over() {
    if !acmetool_installed("acmetool_state_dir_is_taken_over") {
        return;
    }
    let pebble = Pebble::start(PebbleOpts::fast());
    let conf = conf_target(&pebble, Some(P256));
    let state = state_with(&conf);

    // --- The real acmetool fills the state directory. ---
    acmetool(
        &state,
        &pebble,
        &["want", "a.acmetool.test", "b.acmetool.test"],
    )
    .assert_success();
    // A labelled target: the a+b certificate satisfies it (same key type, names a subset),
    // so acmetool links `live/a.acmetool.test:second` to it without a new order.
    state.write_desired(
        "a-labelled",
        "satisfy:\n  names:\n  - a.acmetool.test\nlabel: second\n",
    );
    acmetool(&state, &pebble, &["want", "c.acmetool.test"]).assert_success();

    let (account_id, label, der) = account_key(&state);
    assert_eq!(
        label, "EC PRIVATE KEY",
        "acmetool with key type ecdsa writes a SEC1 account key"
    );
    assert!(
        der.windows(OID_P256.len()).any(|w| w == OID_P256),
        "the account key is not P-256 (acmekeep can only sign with P-256 account keys)"
    );
    let links = live_links(&state);
    assert_eq!(
        links.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "a.acmetool.test",
            "a.acmetool.test:second",
            "b.acmetool.test",
            "c.acmetool.test"
        ],
        "{}",
        state.tree()
    );
    let certs = state.cert_ids();
    assert_eq!(certs.len(), 2, "{}", state.tree());
    assert_eq!(
        links["a.acmetool.test:second"],
        links["a.acmetool.test"],
        "{}",
        state.tree()
    );
    for id in &certs {
        let sans =
            cert_dns_names(&pem_certs(&state.read(Path::new("certs").join(id).join("cert")))[0]);
        let names: Vec<&str> = sans.iter().map(String::as_str).collect();
        assert_cert_dir(&state, &pebble, id, &account_id, &names);
    }
    assert_acmetool_status(&state, &pebble, &account_id, &certs, true);

    // --- acmekeep reads it. ---
    assert_acmekeep_status_lists(&state, &account_id);

    // Nothing is due: reconcile changes nothing that matters.
    let keys = state.key_ids();
    let desired = state.desired_files();
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(
        live_links(&state),
        links,
        "reconcile changed live/\n{}",
        state.tree()
    );
    assert_eq!(
        state.cert_ids(),
        certs,
        "reconcile created certs/ dirs\n{}",
        state.tree()
    );
    assert_eq!(
        state.key_ids(),
        keys,
        "reconcile created keys\n{}",
        state.tree()
    );
    assert_eq!(
        state.account_ids(),
        vec![account_id.clone()],
        "{}",
        state.tree()
    );
    assert_eq!(state.desired_files(), desired, "{}", state.tree());

    // A new name: ordered with acmetool's account (found on Pebble by onlyReturnExisting).
    acmekeep(&state, &["want", "d.acmetool.test"]).assert_success();
    assert_eq!(
        state.account_ids(),
        vec![account_id.clone()],
        "acmekeep created another account instead of using acmetool's\n{}",
        state.tree()
    );
    let new_certs: Vec<String> = state
        .cert_ids()
        .into_iter()
        .filter(|id| !certs.contains(id))
        .collect();
    assert_eq!(
        new_certs.len(),
        1,
        "expected one new certs/ dir\n{}",
        state.tree()
    );
    assert_eq!(state.live_cert_id("d.acmetool.test"), new_certs[0]);
    assert_cert_dir(
        &state,
        &pebble,
        &new_certs[0],
        &account_id,
        &["d.acmetool.test"],
    );
    let mut after_want = live_links(&state);
    after_want.remove("d.acmetool.test");
    assert_eq!(
        after_want,
        links,
        "want changed other live/ links\n{}",
        state.tree()
    );
    assert_eq!(
        state.desired_files().len(),
        desired.len() + 1,
        "{}",
        state.tree()
    );

    // --- The real acmetool still reads what acmekeep wrote, and has nothing to do. ---
    let all_certs = state.cert_ids();
    assert_acmetool_status(&state, &pebble, &account_id, &all_certs, true);
    let before = snapshot(&state);
    let run = acmetool(&state, &pebble, &["reconcile"]);
    run.assert_success();
    assert!(
        !run.stderr.contains("requesting certificate"),
        "acmetool requested a certificate after acmekeep's run\n{}",
        run.describe()
    );
    let diff = snapshot_diff(&before, &snapshot(&state));
    assert!(
        diff.is_empty(),
        "acmetool reconcile changed the state directory acmekeep wrote:\n{diff}\n{}",
        run.describe()
    );
    // Neither tool rewrote conf/target (acmetool ignored acmekeep's keys without a complaint).
    assert_eq!(state.read_string("conf/target"), conf);
}

/// acmetool's key settings for a P-256 account key.
const P256: &str = "    type: ecdsa\n";
/// The key settings acmetool's quickstart writes: a P-384 account key.
const P384: &str = "    type: ecdsa\n    ecdsa-curve: nistp384\n";

#[test]
fn acmetool_rsa_account_is_used() {
    if !acmetool_installed("acmetool_rsa_account_is_used") {
        return;
    }
    // acmetool's defaults: RSA-2048 account key and certificate keys.
    foreign_account_is_used(None, "RSA PRIVATE KEY", "rsa");
}

#[test]
fn acmetool_p384_account_is_used() {
    if !acmetool_installed("acmetool_p384_account_is_used") {
        return;
    }
    foreign_account_is_used(Some(P384), "EC PRIVATE KEY", "p384");
}

/// acmetool creates the account with a key instant-acme cannot sign with; acmekeep reads the
/// directory, and orders with that same account.
fn foreign_account_is_used(key: Option<&str>, expected_label: &str, tag: &str) {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = state_with(&conf_target(&pebble, key));
    let first = format!("a.{tag}.test");
    let second = format!("b.{tag}.test");
    acmetool(&state, &pebble, &["want", &first]).assert_success();

    let (account_id, label, _) = account_key(&state);
    assert_eq!(label, expected_label, "acmetool's account key encoding");
    let links = live_links(&state);
    assert_eq!(
        links.keys().collect::<Vec<_>>(),
        [first.as_str()],
        "{}",
        state.tree()
    );
    let certs = state.cert_ids();
    assert_eq!(certs.len(), 1, "{}", state.tree());

    // Reading an RSA-account directory and a reconcile with nothing due need no signing.
    assert_acmekeep_status_lists(&state, &account_id);
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(
        live_links(&state),
        links,
        "reconcile changed live/\n{}",
        state.tree()
    );
    assert_eq!(
        state.cert_ids(),
        certs,
        "reconcile created certs/ dirs\n{}",
        state.tree()
    );

    // An order needs the account: acmekeep signs with acmetool's key (RS256 / ES384), so
    // the same account is used and no ToS prompt is needed.
    acmekeep(&state, &["want", &second]).assert_success();
    {
        assert_eq!(
            state.account_ids(),
            vec![account_id.clone()],
            "acmekeep created another account instead of using acmetool's\n{}",
            state.tree()
        );
        let new_certs: Vec<String> = state
            .cert_ids()
            .into_iter()
            .filter(|id| !certs.contains(id))
            .collect();
        assert_eq!(
            new_certs.len(),
            1,
            "expected one new certs/ dir\n{}",
            state.tree()
        );
        assert_eq!(state.live_cert_id(&second), new_certs[0]);
        assert_eq!(state.live_link(&first), links.get(&first).cloned());
        assert_cert_dir(
            &state,
            &pebble,
            &new_certs[0],
            &account_id,
            &[second.as_str()],
        );

        // acmetool still reads the directory.
        assert_acmetool_status(&state, &pebble, &account_id, &state.cert_ids(), true);
    }
}
