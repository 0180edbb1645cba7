//! What a run prints at the default verbosity, byte for byte: cron mails all of it, so a run
//! that changed nothing and needs nobody prints nothing, a new certificate is one line, a
//! failure is one line with its whole cause, and a certificate near its end that could not be
//! renewed gets a warning.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::*;

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("format")
}

/// (not_before, not_after) of `live/<name>/cert`.
fn live_validity(state: &StateDir, name: &str) -> (OffsetDateTime, OffsetDateTime) {
    let der = pem_certs(&state.read_live(name, "cert")).remove(0);
    let cert = parse_cert(&der);
    let v = cert.validity();
    (v.not_before.to_datetime(), v.not_after.to_datetime())
}

/// Asserts stdout and stderr exactly, and the exit code.
#[track_caller]
fn assert_output(run: &Run, code: i32, stdout: &str, stderr: &str) {
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (Some(code), stdout, stderr),
        "{}",
        run.describe()
    );
}

/// The standard conf/target with the provider `url`, and Pebble's CA bundle copied beside
/// the state directory (so it outlives Pebble: these tests stop the CA).
fn point_at(state: &StateDir, pebble: &Pebble, url: &str) {
    let bundle = state.scratch_dir("ca").join("ca.pem");
    std::fs::copy(pebble.ca_bundle_path(), &bundle).expect("copy the CA bundle");
    let json = |s: &str| serde_json::to_string(s).expect("JSON");
    let conf = standard_conf_target(pebble)
        .replace(&json(&pebble.directory_url()), &json(url))
        .replace(
            &json(&pebble.ca_bundle_path().to_string_lossy()),
            &json(&bundle.to_string_lossy()),
        );
    assert!(
        conf.contains(url) && conf.contains(&*bundle.to_string_lossy()),
        "{conf}"
    );
    state.write_conf_target(&conf);
}

#[test]
fn a_new_certificate_is_one_line_and_an_idle_run_prints_nothing() {
    const NAME: &str = "quiet.example.org";
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    assert_output(
        &acmekeep(
            &state,
            &["want", "--no-reconcile", NAME, "www.quiet.example.org"],
        ),
        0,
        "",
        "",
    );
    let file = state.desired_file_for(NAME);

    let run = acmekeep(&state, &["reconcile"]);
    let (_, not_after) = live_validity(&state, NAME);
    assert_output(
        &run,
        0,
        &format!(
            "obtained a certificate for {NAME}, www.quiet.example.org (desired/{file}), valid until {}\n",
            rfc3339(not_after)
        ),
        "",
    );
    // Nothing is due: nothing to say, whether the run asks the CA anything (the first learns
    // that Pebble 2.4 has no renewalInfo) or not.
    for _ in 0..2 {
        assert_output(&acmekeep(&state, &["reconcile"]), 0, "", "");
    }
    // The same through acmetool's habits: no subcommand, and `want` of what is covered.
    assert_output(&acmekeep(&state, &[]), 0, "", "");
    assert_output(&acmekeep(&state, &["want", NAME]), 0, "", "");
    // -v says what happened.
    let verbose = acmekeep(&state, &["-v", "reconcile"]);
    verbose
        .assert_success()
        .assert_stderr_contains("nothing to do");
}

/// Pebble 2.4 behind the ARI proxy (which adds renewalInfo), the state directory using it.
fn ari_setup() -> (Pebble, AriProxy, StateDir) {
    let pebble = Pebble::start(PebbleOpts::fast());
    let proxy = AriProxy::start(&pebble);
    let now = OffsetDateTime::now_utc();
    let window = |start: i64, end: i64| AriWindow {
        start: now + time::Duration::days(start),
        end: now + time::Duration::days(end),
        retry_after: 3600,
    };
    proxy.set_default_window(Some(window(30, 31)));
    let state = StateDir::new();
    point_at(&state, &pebble, &proxy.directory_url());
    state.write_standard_responses();
    (pebble, proxy, state)
}

#[test]
fn a_renewal_is_one_line_and_an_unreachable_ca_with_nothing_due_prints_nothing() {
    const NAME: &str = "renew.quiet.example.org";
    let (pebble, proxy, state) = ari_setup();
    acmekeep(&state, &["want", NAME]).assert_success();
    let file = state.desired_file_for(NAME);
    let first = state.live_cert_id(NAME);

    // The CA's window says "renew now".
    let der = pem_certs(&state.read_live(NAME, "cert")).remove(0);
    let cert = parse_cert(&der);
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("AKI");
    let b64 = data_encoding::BASE64URL_NOPAD;
    let ari_id = format!(
        "{}.{}",
        b64.encode(&aki),
        b64.encode(cert.tbs_certificate.raw_serial())
    );
    let now = OffsetDateTime::now_utc();
    proxy.set_window(
        &ari_id,
        AriWindow {
            start: now - time::Duration::days(2),
            end: now - time::Duration::days(1),
            retry_after: 3600,
        },
    );
    state.retry_after_passed(&first);
    wait_past_second_of_live(&state, NAME);
    let run = acmekeep(&state, &["reconcile"]);
    assert_ne!(state.live_cert_id(NAME), first, "renewed");
    let (_, not_after) = live_validity(&state, NAME);
    assert_output(
        &run,
        0,
        &format!(
            "renewed the certificate for {NAME} (desired/{file}), valid until {}\n",
            rfc3339(not_after)
        ),
        "",
    );

    // The CA goes away while the new certificate has most of its life left: once the
    // Retry-After of the window asked for at its issuance has passed, the run asks for it
    // again and cannot, which is nobody's problem (and not asked again before a backoff).
    drop(proxy);
    drop(pebble);
    let id = state.live_cert_id(NAME);
    state.retry_after_passed(&id);
    assert_output(&acmekeep(&state, &["reconcile"]), 0, "", "");
    assert_output(&acmekeep(&state, &["reconcile"]), 0, "", "");
    // It did ask: -v says so, with the cause (asked again once the backoff is over).
    state.retry_after_passed(&id);
    let verbose = acmekeep(&state, &["-v", "reconcile"]);
    verbose
        .assert_success()
        .assert_stderr_contains("renewal information from https://127.0.0.1:")
        .assert_stderr_contains("connection refused");
}

#[test]
fn a_self_test_dns_failure_names_the_lookup() {
    // `.invalid` never resolves (RFC 6761), so the self-test cannot connect.
    const NAME: &str = "selftest.quiet.invalid";
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    state.write_desired(
        NAME,
        "satisfy:\n  names: [selftest.quiet.invalid]\nrequest:\n  challenge:\n    http-self-test: true\n",
    );
    let run = acmekeep(&state, &["reconcile"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(1), ""),
        "{}",
        run.describe()
    );
    let prefix = format!(
        "acmekeep: target desired/{NAME} ({NAME}) failed: answering the http-01 challenge for {NAME}: self-test of http://{NAME}/.well-known/acme-challenge/"
    );
    let line = run
        .stderr
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}...\n{}", run.describe()));
    let (token, rest) = line.split_once(':').expect("token, then the cause");
    assert!(
        token.len() >= 22
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{}",
        run.describe()
    );
    // A resolver that answers says there is no such host; one that cannot be reached says so.
    let expected = [
        "no such host",
        "no answer from the DNS resolver",
    ]
    .map(|why| {
        format!(
            " connecting to {NAME}: DNS lookup failed: {why} (set http-self-test: false if the CA reaches this host differently)\n"
        )
    });
    assert!(expected.contains(&rest.to_owned()), "{}", run.describe());
}

/// A TLS server presenting an expired certificate for 127.0.0.1, issued by its own CA;
/// it completes no handshake (the client refuses the certificate). Stopped on drop.
struct ExpiredTlsServer {
    port: u16,
    ca_pem: std::path::PathBuf,
    not_after: OffsetDateTime,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ExpiredTlsServer {
    fn start(dir: &std::path::Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "acmekeep tests: expired CA TLS");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
        let key = KeyPair::generate().expect("key");
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
        let not_after = now - time::Duration::days(1);
        leaf.not_before = now - time::Duration::days(90);
        leaf.not_after = not_after;
        let leaf = leaf.signed_by(&key, &ca).expect("leaf");
        let ca_pem = dir.join("expired-ca.pem");
        std::fs::write(&ca_pem, ca.pem()).expect("write CA");

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server certificate");
        let tls = Arc::new(tls);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                        if let Ok(mut conn) = rustls::ServerConnection::new(tls.clone()) {
                            while conn.is_handshaking() {
                                if conn.complete_io(&mut stream).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ExpiredTlsServer {
            port,
            ca_pem,
            not_after,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ExpiredTlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_ca_with_an_expired_certificate_is_named_as_such() {
    let state = StateDir::new();
    let server = ExpiredTlsServer::start(&state.scratch_dir("tls"));
    let url = format!("https://127.0.0.1:{}/dir", server.port);
    state.write_conf_target(&format!(
        "request:\n  provider: {url}\n  provider-ca-bundle: {}\n",
        server.ca_pem.display()
    ));
    state.write_standard_responses();
    state.write_desired("tls.example.org", "");
    let run = acmekeep(&state, &["reconcile"]);
    let prefix = format!(
        "acmekeep: target desired/tls.example.org (tls.example.org) failed: CA {url}: TLS: certificate expired (valid until {}, now ",
        rfc3339(server.not_after)
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(1), ""),
        "{}",
        run.describe()
    );
    let now = run
        .stderr
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("expected {prefix:?}...\n{}", run.describe()));
    let now = OffsetDateTime::parse(now, &Rfc3339).expect("the time of the check");
    assert!((OffsetDateTime::now_utc() - now).abs() < time::Duration::minutes(5));
}

#[test]
fn a_certificate_in_its_last_sixth_that_cannot_be_renewed_is_a_warning() {
    const NAME: &str = "sixth.quiet.example.org";
    // Certificates live 30 s: renewal is due after 15 s, the last sixth starts after 25 s.
    let pebble = Pebble::start(PebbleOpts {
        cert_validity_secs: Some(30),
        ..PebbleOpts::fast()
    });
    let state = StateDir::standard(&pebble);
    point_at(&state, &pebble, &pebble.directory_url());
    acmekeep(&state, &["want", NAME]).assert_success();
    let file = state.desired_file_for(NAME);
    let (not_before, not_after) = live_validity(&state, NAME);
    let url = pebble.directory_url();
    drop(pebble);

    // Halfway (due, but five sixths of its life are not over): the failure, no warning.
    let due = not_before + (not_after - not_before) / 2 + time::Duration::seconds(1);
    sleep_until(due);
    let account = state.account_ids().remove(0);
    let failure = format!(
        "acmekeep: target desired/{file} ({NAME}) failed: CA {url}: using account {account}: looking up the account: connection refused\n"
    );
    assert_output(&acmekeep(&state, &["reconcile"]), 1, "", &failure);

    // In the last sixth: the failure and the warning.
    let sixth = not_after - (not_after - not_before) / 6 + time::Duration::milliseconds(500);
    sleep_until(sixth);
    let run = acmekeep(&state, &["reconcile"]);
    let warning = format!(
        "acmekeep: warning: the certificate for {NAME} (desired/{file}) expires at {} (in ",
        rfc3339(not_after)
    );
    let rest = run
        .stderr
        .strip_prefix(&failure)
        .and_then(|r| r.strip_prefix(&warning))
        .unwrap_or_else(|| panic!("expected {failure:?} then {warning:?}\n{}", run.describe()));
    assert!(
        rest.ends_with(" seconds) and could not be renewed\n") && rest.lines().count() == 1,
        "{}",
        run.describe()
    );
    assert_eq!((run.code, run.stdout.as_str()), (Some(1), ""));
}

fn sleep_until(t: OffsetDateTime) {
    let wait = t - OffsetDateTime::now_utc();
    if wait.is_positive() {
        std::thread::sleep(Duration::try_from(wait).expect("positive"));
    }
}
