//! The account's life cycle at the CA, against Pebble (doc/accounts.md).
//!
//! External Account Binding (RFC 8555 §7.3.4) against a Pebble that requires it: credentials
//! from conf/target, the command line, the response file and quickstart; a clear error naming
//! every place to add them when they are missing; the CA's own error when they are wrong;
//! HS384/HS512 bindings for RSA and P-384 account keys (re-signed at the HTTP layer).
//!
//! `account-rollover` (RFC 8555 §7.3.5): a new key, the same account, certificates relinked,
//! for acmekeep's P-256 and acmetool's RSA accounts. `account-deactivate` (§7.3.6): only with
//! `--yes`; the CA refuses the key afterwards, the key is kept aside, the next run registers a
//! new account.

use std::path::Path;

use crate::support::*;

/// A random 64-byte MAC key, base64url without padding (as CAs hand them out).
pub(crate) fn mac_key() -> String {
    let mut key = [0u8; 64];
    aws_lc_rs::rand::fill(&mut key).expect("randomness");
    data_encoding::BASE64URL_NOPAD.encode(&key)
}

/// Pebble with `kid-1` → `key`; `required` sets `externalAccountBindingRequired`.
fn pebble_with_eab(required: bool, key: &str) -> Pebble {
    Pebble::start(PebbleOpts {
        eab_required: required,
        eab_mac_keys: vec![("kid-1".to_owned(), key.to_owned())],
        ..PebbleOpts::fast()
    })
}

/// The standard conf/target plus `request.eab`.
fn conf_target_with_eab(pebble: &Pebble, kid: &str, key: &str, algorithm: Option<&str>) -> String {
    let mut eab = format!("  eab:\n    kid: {kid}\n    hmac-key: {key}\n");
    if let Some(a) = algorithm {
        eab.push_str(&format!("    algorithm: {a}\n"));
    }
    // The standard conf/target is `request:` and its members: the eab block joins them.
    format!("{}{eab}", standard_conf_target(pebble))
}

/// How often Pebble accepted a binding for `kid` (its log line for each).
pub(crate) fn bindings_accepted(pebble: &Pebble, kid: &str) -> usize {
    pebble
        .logs()
        .matches(&format!(
            "Successful newAccount Binding with CA using kid \"{kid}\""
        ))
        .count()
}

fn assert_one_account_0600(state: &StateDir) -> String {
    let ids = state.account_ids();
    assert_eq!(ids.len(), 1, "{}", state.tree());
    let dir = Path::new("accounts").join(&ids[0]);
    assert_eq!(state.mode(&dir), 0o700, "{}", state.tree());
    assert_eq!(state.mode(dir.join("privkey")), 0o600, "{}", state.tree());
    ids[0].clone()
}

#[test]
fn want_registers_with_the_eab_of_conf_target_and_obtains_a_certificate() {
    let key = mac_key();
    let pebble = pebble_with_eab(true, &key);
    assert_eq!(
        pebble.directory()["meta"]["externalAccountRequired"],
        serde_json::Value::Bool(true)
    );
    let state = StateDir::new();
    state.write_conf_target(&conf_target_with_eab(&pebble, "kid-1", &key, None));
    state.write_standard_responses();

    acmekeep(&state, &["want", "eab.example.org"]).assert_success();
    assert_eq!(state.live_names(), ["eab.example.org"]);
    assert_one_account_0600(&state);
    assert_eq!(bindings_accepted(&pebble, "kid-1"), 1, "{}", pebble.logs());

    // The account exists now: later runs log in and never bind again.
    acmekeep(&state, &["want", "eab2.example.org"]).assert_success();
    assert_eq!(bindings_accepted(&pebble, "kid-1"), 1);
}

#[test]
fn missing_eab_names_every_place_to_give_it_and_the_flags_then_work() {
    let key = mac_key();
    let pebble = pebble_with_eab(true, &key);
    let state = StateDir::standard(&pebble);
    let url = pebble.directory_url();

    // want/reconcile: the target fails (exit 1, as for any account-level answer missing).
    let run = acmekeep(&state, &["want", "noeab.example.org"]);
    run.assert_code(1);
    for needle in [
        "requires External Account Binding".to_owned(),
        "--eab-kid".to_owned(),
        "--eab-hmac-key".to_owned(),
        "request.eab.kid".to_owned(),
        format!("acme-eab-kid:{url}"),
        format!("acme-eab-hmac-key:{url}"),
    ] {
        run.assert_stderr_contains(&needle);
    }
    assert!(state.account_ids().is_empty(), "{}", state.tree());

    // A command that only sets the account up: a configuration error, exit 2.
    acmekeep(&state, &["account-url"])
        .assert_code(2)
        .assert_stderr_contains(&format!("acme-eab-kid:{url}"));
    assert!(state.account_ids().is_empty(), "{}", state.tree());

    // Half the credentials are a configuration error naming the missing half.
    acmekeep(&state, &["--eab-kid", "kid-1", "reconcile"])
        .assert_code(1)
        .assert_stderr_contains("no MAC key");
    assert!(state.account_ids().is_empty(), "{}", state.tree());

    // The flags, after the subcommand as well as before it.
    acmekeep(
        &state,
        &["reconcile", "--eab-kid", "kid-1", "--eab-hmac-key", &key],
    )
    .assert_success();
    assert_eq!(state.live_names(), ["noeab.example.org"]);
    assert_one_account_0600(&state);
    assert_eq!(bindings_accepted(&pebble, "kid-1"), 1, "{}", pebble.logs());
}

#[test]
fn a_wrong_mac_key_shows_the_cas_error_and_the_response_file_then_registers_the_same_key() {
    let key = mac_key();
    let pebble = pebble_with_eab(true, &key);
    let state = StateDir::standard(&pebble);
    let url = pebble.directory_url();

    state.write_conf_target(&conf_target_with_eab(&pebble, "kid-1", &mac_key(), None));
    let run = acmekeep(&state, &["want", "wrong.example.org"]);
    run.assert_code(1);
    run.assert_stderr_contains("external account binding JWS verification error");
    // The key was saved before the CA was asked; it is not registered.
    let first = assert_one_account_0600(&state);

    state.write_conf_target(&conf_target_with_eab(&pebble, "kid-9", &key, None));
    acmekeep(&state, &["reconcile", "--force"])
        .assert_code(1)
        .assert_stderr_contains("'kid' references a key that is not known");

    // The response file (conf/target has none now) gives the right credentials: the same
    // key is registered, no second one is made.
    state.write_conf_target(&standard_conf_target(&pebble));
    state.write_responses(&format!(
        "{}\"acme-eab-kid:{url}\": kid-1\n\"acme-eab-hmac-key:{url}\": \"{key}\"\n",
        responses_yaml(PEBBLE_TOS)
    ));
    acmekeep(&state, &["reconcile", "--force"]).assert_success();
    assert_eq!(state.live_names(), ["wrong.example.org"]);
    assert_eq!(assert_one_account_0600(&state), first);
    assert_eq!(bindings_accepted(&pebble, "kid-1"), 1, "{}", pebble.logs());
}

/// An account key of another type than P-256, imported for `url`.
fn import_account(state: &StateDir, url: &str, pair: &rcgen::KeyPair) -> String {
    let path = state.scratch_dir("keys").join("account.pem");
    std::fs::write(&path, pair.serialize_pem()).expect("write key");
    let run = acmekeep(state, &["import-pem-account", url, &path.to_string_lossy()]);
    run.assert_success();
    run.stdout.trim().to_owned()
}

/// HS384 and HS512 (instant-acme alone MACs only with HS256), over the JWK of an RSA and a
/// P-384 account key (instant-acme alone would MAC its placeholder key's JWK). The CA does not
/// require a binding here: configured credentials are used anyway.
#[test]
fn hs384_and_hs512_bindings_for_rsa_and_p384_account_keys() {
    let key = mac_key();
    let pebble = pebble_with_eab(false, &key);
    assert_ne!(
        pebble.directory()["meta"]["externalAccountRequired"],
        serde_json::Value::Bool(true)
    );
    let url = pebble.directory_url();

    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("rsa");
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
    for (n, (pair, algorithm)) in [(rsa, "hs512"), (p384, "HS384")].into_iter().enumerate() {
        let state = StateDir::standard(&pebble);
        let id = import_account(&state, &url, &pair);
        let name = format!("mac{n}.example.org");
        acmekeep(
            &state,
            &[
                "--eab-kid",
                "kid-1",
                "--eab-hmac-key",
                &key,
                "--eab-algorithm",
                algorithm,
                "want",
                &name,
            ],
        )
        .assert_success();
        assert_eq!(state.account_ids(), [id]);
        assert_eq!(state.live_names(), [name]);
        assert_eq!(
            bindings_accepted(&pebble, "kid-1"),
            n + 1,
            "{}",
            pebble.logs()
        );
    }

    // An algorithm that is not a MAC is refused before anything is sent.
    let state = StateDir::standard(&pebble);
    acmekeep(
        &state,
        &[
            "--eab-kid",
            "kid-1",
            "--eab-hmac-key",
            &key,
            "--eab-algorithm",
            "RS256",
            "account-url",
        ],
    )
    .assert_code(2)
    .assert_stderr_contains("HS256, HS384, HS512");
    assert!(state.account_ids().is_empty(), "{}", state.tree());
}

/// quickstart registers the account with the EAB answers of its response file; without them
/// it stops with exit 2 naming the keys.
#[test]
fn quickstart_takes_eab_from_the_response_file() {
    let key = mac_key();
    let pebble = pebble_with_eab(true, &key);
    let state = StateDir::new();
    state.write_conf_target(&standard_conf_target(&pebble));
    let url = pebble.directory_url();
    let root = state.scratch_dir("sysroot");
    let responses = format!(
        "acmetool-quickstart-choose-server: url\n\
         acmetool-quickstart-enter-directory-url: {url}\n\
         acmetool-quickstart-key-type: ecdsa\n\
         acmetool-quickstart-choose-method: listen\n\
         \"acme-agreement:{PEBBLE_TOS}\": true\n\
         acme-enter-email: ops@example.org\n\
         acmetool-quickstart-install-cronjob: false\n"
    );
    state.write_responses(&responses);
    let quickstart = || {
        acmekeep(
            &state,
            &["--system-root", &root.to_string_lossy(), "quickstart"],
        )
    };
    quickstart()
        .assert_code(2)
        .assert_stderr_contains(&format!("acme-eab-hmac-key:{url}"));
    assert!(state.account_ids().is_empty(), "{}", state.tree());

    state.write_responses(&format!(
        "{responses}\"acme-eab-kid:{url}\": kid-1\n\"acme-eab-hmac-key:{url}\": {key}\n"
    ));
    quickstart().assert_success();
    assert_one_account_0600(&state);
    assert_eq!(bindings_accepted(&pebble, "kid-1"), 1, "{}", pebble.logs());
}

// ---------------------------------------------------------------------------------------------
// account-rollover

/// `account-thumbprint`'s lines as (thumbprint, account id).
fn thumbprints(state: &StateDir) -> Vec<(String, String)> {
    let run = acmekeep(state, &["account-thumbprint"]);
    run.assert_success();
    run.stdout
        .lines()
        .map(|l| {
            let (t, id) = l.split_once('\t').unwrap_or_else(|| panic!("{l:?}"));
            (t.to_owned(), id.to_owned())
        })
        .collect()
}

fn account_url(state: &StateDir) -> String {
    let run = acmekeep(state, &["account-url"]);
    run.assert_success();
    run.stdout.clone()
}

/// Rolls the key over and checks the state directory followed: one account, the new id,
/// 0600 in 0700, the old directory gone, every certificate linking to the new id, a new
/// thumbprint, and the same account at the CA.
fn roll_over_and_check(state: &StateDir, old_id: &str, certs: &[String]) -> String {
    let (old_thumb, _) = thumbprints(state).remove(0);
    let url_before = account_url(state);
    let run = acmekeep(state, &["account-rollover"]);
    run.assert_success();
    let new_id = run.stdout.trim().to_owned();
    assert_ne!(new_id, old_id);
    assert_eq!(assert_one_account_0600(state), new_id);
    assert!(
        !state.join("accounts").join(old_id).exists(),
        "{}",
        state.tree()
    );
    for id in certs {
        assert_eq!(
            std::fs::read_link(state.join("certs").join(id).join("account")).expect("link"),
            Path::new("../../accounts").join(&new_id),
            "certs/{id}/account"
        );
    }
    let now = thumbprints(state);
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].1, new_id);
    assert_ne!(now[0].0, old_thumb);
    assert_eq!(account_url(state), url_before, "the same account");
    new_id
}

#[test]
fn account_rollover_replaces_the_key_and_the_account_keeps_working() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    acmekeep(&state, &["want", "before.example.org"]).assert_success();
    let old_id = assert_one_account_0600(&state);
    let cert = state.live_cert_id("before.example.org");
    assert_eq!(
        std::fs::read_link(state.join("certs").join(&cert).join("account")).expect("link"),
        Path::new("../../accounts").join(&old_id)
    );

    let new_id = roll_over_and_check(&state, &old_id, std::slice::from_ref(&cert));

    // The new key orders, and the relinked certificate's account (the new key) can revoke it.
    acmekeep(&state, &["want", "after.example.org"]).assert_success();
    assert_eq!(
        state.live_names(),
        ["after.example.org", "before.example.org"]
    );
    acmekeep(&state, &["revoke", &cert]).assert_success();
    assert!(state.join("certs").join(&cert).join("revoked").exists());
    assert_eq!(state.account_ids(), [new_id]);

    // A second rollover works the same way (the account's certificates all follow).
    let certs = state.cert_ids();
    roll_over_and_check(&state, &state.account_ids()[0], &certs);
}

/// acmetool's RSA account keys roll over too (to P-256): the old key signs the request
/// through the re-signing layer and its real JWK is the `oldKey`.
#[test]
fn account_rollover_of_an_rsa_acmetool_account() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("rsa");
    let old_id = import_account(&state, &pebble.directory_url(), &rsa);
    acmekeep(&state, &["want", "rsa.example.org"]).assert_success();
    assert_eq!(state.account_ids(), std::slice::from_ref(&old_id));
    let cert = state.live_cert_id("rsa.example.org");

    let new_id = roll_over_and_check(&state, &old_id, &[cert]);
    let pem = state.read_string(Path::new("accounts").join(&new_id).join("privkey"));
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    acmekeep(&state, &["want", "rsa2.example.org"]).assert_success();
}

#[test]
fn account_rollover_needs_an_account() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    acmekeep(&state, &["account-rollover"])
        .assert_code(2)
        .assert_stderr_contains("no account for");
    acmekeep(&state, &["account-rollover", "--provider", "ftp://x"]).assert_code(2);
    assert!(state.account_ids().is_empty(), "{}", state.tree());
}

// ---------------------------------------------------------------------------------------------
// account-deactivate

/// The CA refuses the account key in `key_path` (tried from a state directory of its own).
fn assert_the_ca_refuses(pebble: &Pebble, key_path: &Path) {
    let other = StateDir::standard(pebble);
    let copy = other.scratch_dir("keys").join("deactivated.pem");
    std::fs::copy(key_path, &copy).expect("copy key");
    acmekeep(
        &other,
        &[
            "import-pem-account",
            &pebble.directory_url(),
            &copy.to_string_lossy(),
        ],
    )
    .assert_success();
    acmekeep(&other, &["account-url"])
        .assert_code(1)
        .assert_stderr_contains("deactivated");
}

#[test]
fn account_deactivate_needs_yes_then_ends_the_account_and_keeps_its_key_aside() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    acmekeep(&state, &["want", "old.example.org"]).assert_success();
    let id = assert_one_account_0600(&state);
    let cert = state.live_cert_id("old.example.org");
    let url = account_url(&state);

    // Without --yes: an explanation, exit 2, nothing touched.
    acmekeep(&state, &["account-deactivate"])
        .assert_code(2)
        .assert_stderr_contains("--yes");
    assert_eq!(state.account_ids(), std::slice::from_ref(&id));

    let run = acmekeep(&state, &["account-deactivate", "--yes"]);
    run.assert_success();
    run.assert_stderr_contains(&url);
    assert!(state.account_ids().is_empty(), "{}", state.tree());
    let retired = Path::new("accounts/.deactivated").join(&id);
    assert_eq!(state.mode(&retired), 0o700, "{}", state.tree());
    assert_eq!(state.mode(retired.join("privkey")), 0o600);
    let cert_dir = state.join("certs").join(&cert);
    assert!(
        std::fs::symlink_metadata(cert_dir.join("account")).is_err(),
        "no account link into a hidden directory\n{}",
        state.tree()
    );
    // The certificate itself stays in use.
    assert_eq!(state.live_cert_id("old.example.org"), cert);
    acmekeep(&state, &["reconcile"]).assert_success();

    assert_the_ca_refuses(&pebble, &state.join(retired.join("privkey")));

    // The next registration makes a new account, which works.
    acmekeep(&state, &["want", "new.example.org"]).assert_success();
    let new_id = assert_one_account_0600(&state);
    assert_ne!(new_id, id);
    assert_ne!(account_url(&state), url);

    // Nothing left to deactivate at another CA.
    acmekeep(
        &state,
        &[
            "account-deactivate",
            "--yes",
            "--provider",
            "https://127.0.0.1:1/none",
        ],
    )
    .assert_code(2)
    .assert_stderr_contains("no account for");
}

/// An RSA account (acmetool's) is deactivated through the re-signing layer too.
#[test]
fn account_deactivate_of_an_rsa_acmetool_account() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("rsa");
    let id = import_account(&state, &pebble.directory_url(), &rsa);
    account_url(&state);
    acmekeep(&state, &["account-deactivate", "--yes"]).assert_success();
    assert!(state.account_ids().is_empty(), "{}", state.tree());
    assert_the_ca_refuses(
        &pebble,
        &state
            .join("accounts/.deactivated")
            .join(&id)
            .join("privkey"),
    );
    // The key is gone from accounts/: there is nothing left to deactivate.
    acmekeep(&state, &["account-deactivate", "--yes"])
        .assert_code(2)
        .assert_stderr_contains("no account for");
}
