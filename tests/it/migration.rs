//! Taking over an acmetool 0.0.x-era state directory without manual edits: legacy settings
//! files and target fields, an ACMEv1-era account directory, and an "uncached" certificate
//! directory acmetool 0.2 could never get past; and acmetool's own command line.

use std::process::Command;

use crate::support::*;

fn openssl_rsa_pkcs1(bits: u32) -> Vec<u8> {
    // `openssl genrsa -traditional` writes PKCS#1 ("RSA PRIVATE KEY"), as acmetool did.
    let out = Command::new("openssl")
        .args(["genrsa", "-traditional", &bits.to_string()])
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn acmetool_0_0_x_state_dir_is_taken_over() {
    const NAME: &str = "legacy.example.org";
    let pebble = Pebble::start(PebbleOpts::default());
    let state = StateDir::new();
    let webroot = state.scratch_dir("webroot");
    // conf/target as a 0.0.x user edited it to the new CA (Debian's NEWS), no webroot-paths:
    // the legacy conf/webroot-path and conf/rsa-key-size files are used.
    state.write_conf_target(&format!(
        "request:\n  provider: {}\n  provider-ca-bundle: {}\n  challenge:\n    default-listeners: false\n    default-webroot: \"\"\n    http-self-test: false\n",
        pebble.directory_url(),
        pebble.ca_bundle_path().display()
    ));
    state.write("conf/webroot-path", format!("{}\n", webroot.display()));
    state.write("conf/rsa-key-size", "3072\n");
    state.write_standard_responses();
    // A target with the legacy top-level names field.
    state.write("desired/legacy", format!("names:\n- {NAME}\n"));
    // An account key directory as 0.0.x left it (PKCS#1 RSA, cached authorizations), not
    // registered at this CA: it is registered with the same key.
    let part = account_urlpart(&pebble.directory_url());
    let key = openssl_rsa_pkcs1(2048);
    let key_id = acmetool_id(&private_key_spki_der(&key));
    state.write(format!("accounts/{part}/{key_id}/privkey"), &key);
    state.write(
        format!("accounts/{part}/{key_id}/authorizations/{NAME}/url"),
        "https://acme-v01.api.letsencrypt.org/acme/authz/xyz",
    );
    // An "uncached" 0.0.x certificate directory: a v1 certificate URL and nothing else.
    let v1_url = "https://acme-v01.api.letsencrypt.org/acme/cert/03abcdef";
    let uncached = acmetool_id(v1_url.as_bytes());
    state.write(format!("certs/{uncached}/url"), v1_url);

    let server = ChallengeServer::start(pebble.http_port(), &webroot).expect("web server");
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_success();
    // The old directory is named, but blocks nothing.
    run.assert_stderr_contains(&uncached);
    let id = state.live_cert_id(NAME);
    assert!(
        server.requests().iter().any(|r| r.ends_with("200")),
        "webroot unused"
    );
    // The legacy key size, and the same account directory (no second account).
    let cert = pem_certs(&state.read_live(NAME, "cert")).remove(0);
    let spki_len = parse_cert(&cert).public_key().subject_public_key.data.len();
    assert!(
        (380..420).contains(&spki_len),
        "expected an RSA-3072 key, SPKI {spki_len} bytes"
    );
    assert_eq!(state.account_ids(), vec![format!("{part}/{key_id}")]);
    assert!(state.path().join(format!("certs/{id}/account")).exists());

    // status reports the old directory; cull removes it and nothing else.
    let status = acmekeep(&state, &["status", "--json"]);
    status.assert_success();
    assert!(status.stdout.contains(&uncached), "{}", status.stdout);
    acmekeep(&state, &["cull"]).assert_success();
    assert_eq!(state.cert_ids(), vec![id.clone()]);

    // acmetool's command line, through a symlink named acmetool, as old cron lines run it.
    let bin = state.scratch_dir("bin");
    let link = bin.join("acmetool");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_acmekeep"), &link).expect("symlink");
    let out = Command::new(&link)
        .args([
            "--state",
            &state.path().to_string_lossy(),
            "--hooks",
            &state.hooks_dir().to_string_lossy(),
            "--batch",
            "--xlog.severity=debug",
            "--service.uid=nobody",
            "--stdio",
            "reconcile",
        ])
        .env_remove("ACME_STATE_DIR")
        .output()
        .expect("run as acmetool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state.live_cert_id(NAME), id);
}
