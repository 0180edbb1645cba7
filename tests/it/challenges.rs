//! Challenge types end to end against Pebble: dns-01 through acmetool's challenge-dns hooks
//! (the hook publishes the TXT record in Pebble's mock DNS), wildcard certificates, and the
//! per-target choice of challenge type and http-01 method.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

/// A challenge-dns hook that publishes/removes TXT records in challtestsrv, recording its
/// arguments. It validates its untrusted arguments like a careful hook should.
fn dns_hook(state: &StateDir, pebble: &Pebble) -> std::path::PathBuf {
    let dir = state.hooks_dir();
    std::fs::create_dir_all(&dir).expect("mkdir hooks");
    let log = dir.with_file_name("dns-hook.log");
    let script = format!(
        r#"#!/bin/sh
set -eu
case "$1" in
  challenge-dns-start) endpoint=set-txt ;;
  challenge-dns-stop) endpoint=clear-txt ;;
  *) exit 42 ;;
esac
printf '%s\n' "$*" >> '{log}'
host="$2"; value="$4"
case "$host" in *[!a-z0-9.-]*) exit 1 ;; esac
case "$value" in *[!A-Za-z0-9_-]*) exit 1 ;; esac
if [ "$endpoint" = set-txt ]; then
  body="{{\"host\":\"_acme-challenge.$host.\",\"value\":\"$value\"}}"
else
  body="{{\"host\":\"_acme-challenge.$host.\"}}"
fi
curl -fsS -X POST -d "$body" '{url}/'"$endpoint" >/dev/null
"#,
        log = log.display(),
        url = pebble.challtestsrv_url()
    );
    let path = dir.join("dns");
    std::fs::write(&path, script).expect("write hook");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    log
}

fn conf_with(pebble: &Pebble, challenge_extra: &str) -> String {
    standard_conf_target(pebble).replace(
        "    http-self-test: false\n",
        &format!("    http-self-test: false\n{challenge_extra}"),
    )
}

#[test]
fn wildcard_certificate_via_dns_01_hooks() {
    let pebble = Pebble::start(PebbleOpts::default());
    let state = StateDir::standard(&pebble);
    let log = dns_hook(&state, &pebble);
    acmekeep(&state, &["want", "*.wild.example.org", "wild.example.org"]).assert_success();
    // acmetool names the link after the wildcard, literally.
    let id = state.live_cert_id("*.wild.example.org");
    assert_eq!(state.live_cert_id("wild.example.org"), id);
    let cert = pem_certs(&state.read_live("*.wild.example.org", "cert")).remove(0);
    let names = cert_dns_names(&cert);
    assert!(
        names.contains(&"*.wild.example.org".to_owned()),
        "{names:?}"
    );
    // The wildcard authorization went through dns-01 with the flag set; the start and stop
    // were both run for it (acmetool's 4-argument protocol).
    let text = std::fs::read_to_string(&log).expect("hook log");
    let desired = state.desired_files().remove(0);
    assert!(
        text.lines().any(|l| l
            .starts_with(&format!("challenge-dns-start wild.example.org {desired} "))
            && l.ends_with(" wildcard")),
        "{text}"
    );
    assert!(
        text.contains("challenge-dns-stop wild.example.org"),
        "{text}"
    );
}

#[test]
fn target_chooses_dns_01_over_http_01() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    state.write_conf_target(&conf_with(&pebble, "    types: [dns-01]\n"));
    let log = dns_hook(&state, &pebble);
    acmekeep(&state, &["want", "dnsonly.example.org"]).assert_success();
    let text = std::fs::read_to_string(&log).expect("hook log");
    assert!(
        text.contains("challenge-dns-start dnsonly.example.org"),
        "{text}"
    );
    // Not a wildcard: the 4th argument is empty.
    assert!(
        text.lines()
            .any(|l| l.starts_with("challenge-dns-start dnsonly.example.org")
                && !l.ends_with("wildcard")),
        "{text}"
    );
}

#[test]
fn dns_01_without_a_working_method_fails_clearly_and_http_methods_can_be_narrowed() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    // dns-01 only, no hook: the failure says what is missing.
    state.write_conf_target(&conf_with(&pebble, "    types: [dns-01]\n"));
    let run = acmekeep(&state, &["want", "nodns.example.org"]);
    run.assert_code(1);
    run.assert_stderr_contains("challenge-dns-start");

    // http-01 restricted to webroot (no listener) and no webroot: a clear failure, even
    // though http-ports is configured.
    let state = StateDir::standard(&pebble);
    state.write_conf_target(&conf_with(&pebble, "    http-methods: [hook]\n"));
    let run = acmekeep(&state, &["want", "nomethod.example.org"]);
    run.assert_code(1);
    run.assert_stderr_contains("no http-01 method");
}

#[test]
fn bad_challenge_settings_are_configuration_errors() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    state.write_conf_target(&conf_with(&pebble, "    types: [smoke-signals]\n"));
    let run = acmekeep(&state, &["want", "bad.example.org"]);
    run.assert_code(2);
    run.assert_stderr_contains("smoke-signals");
}

#[test]
fn tls_alpn_01_through_the_built_in_responder() {
    let pebble = Pebble::start(PebbleOpts::default());
    let state = StateDir::standard(&pebble);
    state.write_conf_target(&conf_with(
        &pebble,
        &format!(
            "    types: [tls-alpn-01]\n    tls-alpn-ports: [\"127.0.0.1:{}\"]\n",
            pebble.tls_port()
        ),
    ));
    acmekeep(&state, &["want", "alpn.example.org"]).assert_success();
    assert!(state.live_names().contains(&"alpn.example.org".to_owned()));
    // Nothing answers on the port any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", pebble.tls_port())).is_err());
}

/// dns-01 by RFC 2136: acmekeep updates a real authoritative server (Knot, TSIG), waits
/// until it serves the record, and Pebble resolves through that server. A wildcard and its
/// base name share the record name; both values are published and removed afterwards.
#[test]
fn wildcard_certificate_via_rfc2136_updates_to_knot() {
    let key = KnotKey::random("acme-update");
    let zone = "$TTL 60\n@ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n@ NS ns1.example.test.\nns1 A 127.0.0.1\n* A 127.0.0.1\n";
    let knot = Knot::start(&key, &[("example.test", zone)]);
    let pebble = Pebble::start(PebbleOpts {
        dns_server: Some(knot.addr()),
        ..PebbleOpts::default()
    });
    let state = StateDir::standard(&pebble);
    let addr = knot.addr().to_string();
    state.write_conf_target(&conf_with(
        &pebble,
        &format!(
            "    types: [dns-01]\n    dns-01:\n      hooks: false\n      server: \"{addr}\"\n      key-name: {}\n      algorithm: {}\n      secret: \"{}\"\n      resolvers: [\"{addr}\"]\n      nameservers: {{ns1.example.test: [\"{addr}\"]}}\n      propagation-timeout: 30\n",
            key.name, key.algorithm, key.secret
        ),
    ));
    acmekeep(&state, &["want", "*.rfc.example.test", "rfc.example.test"]).assert_success();
    let cert = pem_certs(&state.read_live("*.rfc.example.test", "cert")).remove(0);
    assert!(cert_dns_names(&cert).contains(&"*.rfc.example.test".to_owned()));
    // Cleaned up: no TXT left at the challenge name.
    assert!(
        knot.txt("_acme-challenge.rfc.example.test").is_empty(),
        "{}",
        knot.logs()
    );
}

/// A name whose `_acme-challenge` is a CNAME elsewhere: the update goes to the CNAME's
/// target and Pebble, resolving through Knot, follows it.
#[test]
fn cname_delegated_challenge_name_via_rfc2136() {
    let key = KnotKey::random("acme-update");
    let zone = "$TTL 60\n@ SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n@ NS ns1.example.test.\nns1 A 127.0.0.1\n* A 127.0.0.1\n_acme-challenge.cname CNAME _acme-challenge.validation\n";
    let knot = Knot::start(&key, &[("example.test", zone)]);
    let pebble = Pebble::start(PebbleOpts {
        dns_server: Some(knot.addr()),
        ..PebbleOpts::fast()
    });
    let state = StateDir::standard(&pebble);
    let addr = knot.addr().to_string();
    state.write_conf_target(&conf_with(
        &pebble,
        &format!(
            "    types: [dns-01]\n    dns-01:\n      hooks: false\n      server: \"{addr}\"\n      key-name: {}\n      algorithm: {}\n      secret: \"{}\"\n      resolvers: [\"{addr}\"]\n      nameservers: {{ns1.example.test: [\"{addr}\"]}}\n",
            key.name, key.algorithm, key.secret
        ),
    ));
    acmekeep(&state, &["want", "cname.example.test"]).assert_success();
    assert!(
        state
            .live_names()
            .contains(&"cname.example.test".to_owned())
    );
    assert!(
        knot.txt("_acme-challenge.validation.example.test")
            .is_empty(),
        "cleaned up"
    );
}

/// http-01 answered only by a challenge-http-start hook (acmetool's `hook` method): the hook
/// puts the key authorization where a web server serves it; no listener, no webroot.
#[test]
fn http_01_through_hooks_only() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    state.write_conf_target(&conf_with(&pebble, "    http-methods: [hook]\n"));
    let served = state.scratch_dir("served");
    let server = ChallengeServer::start(pebble.http_port(), &served).expect("web server");
    let dir = state.hooks_dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    let hook = dir.join("http");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -eu\ncase \"$1\" in\n  challenge-http-start) cat > '{d}/'\"$4\" ;;\n  challenge-http-stop) rm -f '{d}/'\"$4\" ;;\n  *) exit 42 ;;\nesac\n",
            d = served.display()
        ),
    )
    .expect("write hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    acmekeep(&state, &["want", "hooked.example.org"]).assert_success();
    assert!(server.requests().iter().any(|r| r.ends_with("200")));
    assert_eq!(
        std::fs::read_dir(&served).expect("ls").count(),
        0,
        "stop hook ran"
    );
}

/// RFC 8738: an IP address identifier, validated over http-01 by the built-in listener; the
/// certificate carries it as an iPAddress SAN.
#[test]
fn ip_address_certificate_via_http_01() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    acmekeep(&state, &["want", "127.0.0.1"]).assert_success();
    assert!(
        state.live_names().contains(&"127.0.0.1".to_owned()),
        "{}",
        state.tree()
    );
    let der = pem_certs(&state.read_live("127.0.0.1", "cert")).remove(0);
    let cert = parse_cert(&der);
    let san = cert
        .subject_alternative_name()
        .expect("SAN parses")
        .expect("SAN present");
    assert!(
        san.value
            .general_names
            .iter()
            .any(|g| matches!(g, x509_parser::extensions::GeneralName::IPAddress(b) if *b == [127, 0, 0, 1])),
        "{:?}",
        san.value.general_names
    );
    // (Whether the CN is empty is the CA's choice; our CSR has none: a unit test holds it.)
    // A second reconcile finds it satisfied.
    let before = state.cert_ids();
    acmekeep(&state, &["reconcile"]).assert_success();
    assert_eq!(state.cert_ids(), before);
}
