//! Tests of the harness itself (they need no acmekeep binary).

use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use super::http::http_get;
use super::pebble::{DNS_A, DNS_AAAA};
use super::state::PEBBLE_TOS;
use super::*;

#[test]
fn pebble_starts_and_serves_directory() {
    let pebble = Pebble::start(PebbleOpts::default());

    // The ACME directory over HTTPS, trusting only our generated CA.
    let dir = pebble.directory();
    for key in [
        "newAccount",
        "newNonce",
        "newOrder",
        "revokeCert",
        "keyChange",
    ] {
        let url = dir[key]
            .as_str()
            .unwrap_or_else(|| panic!("directory lacks {key}: {dir}"));
        assert!(url.starts_with("https://127.0.0.1:"), "{key}: {url}");
    }
    assert_eq!(pebble.terms_of_service(), PEBBLE_TOS, "directory: {dir}");

    // Management interface: Pebble's issuing root and intermediate.
    for pem in [pebble.roots_pem(), pebble.intermediates_pem()] {
        let certs = pem_certs(pem.as_bytes());
        assert_eq!(certs.len(), 1, "{pem}");
        parse_cert(&certs[0]);
    }

    // challtestsrv's DNS: A is 127.0.0.1 for any name, AAAA is empty (-defaultIPv6 "").
    let (rcode, a) = pebble.dns_query("www.example.org", DNS_A).expect("A query");
    assert_eq!((rcode, a), (0, vec![vec![127, 0, 0, 1]]));
    let (rcode, aaaa) = pebble
        .dns_query("www.example.org", DNS_AAAA)
        .expect("AAAA query");
    assert_eq!((rcode, aaaa.len()), (0, 0));
    pebble.dns_set_servfail("broken.example.org");
    let (rcode, a) = pebble
        .dns_query("broken.example.org", DNS_A)
        .expect("A query");
    assert_eq!((rcode, a.len()), (2, 0), "SERVFAIL expected");

    // The challenge web server on Pebble's http-01 port.
    let state = StateDir::new();
    let webroot = state.scratch_dir("webroot");
    std::fs::write(webroot.join("tok_en-1"), "tok_en-1.thumbprint").expect("write token");
    let server = ChallengeServer::start(pebble.http_port(), &webroot).expect("start web server");
    let base = format!("http://127.0.0.1:{}", pebble.http_port());
    let ok = http_get(&format!("{base}/.well-known/acme-challenge/tok_en-1")).expect("GET token");
    assert_eq!(
        (ok.status, ok.text().as_str()),
        (200, "tok_en-1.thumbprint")
    );
    let missing = http_get(&format!("{base}/.well-known/acme-challenge/nope")).expect("GET");
    assert_eq!(missing.status, 404);
    let escape = http_get(&format!("{base}/.well-known/acme-challenge/..%2fx")).expect("GET");
    assert_eq!(escape.status, 404);
    assert_eq!(server.requests().len(), 3, "{:?}", server.requests());
    drop(server);

    // The standard configuration is valid YAML with the intended shape.
    let target: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&standard_conf_target(&pebble)).expect("conf/target YAML");
    assert_eq!(
        target["request"]["provider"].as_str(),
        Some(pebble.directory_url().as_str())
    );
    assert_eq!(
        target["request"]["challenge"]["http-ports"][0].as_str(),
        Some(format!("127.0.0.1:{}", pebble.http_port()).as_str())
    );
    assert_eq!(
        target["request"]["challenge"]["default-listeners"].as_bool(),
        Some(false)
    );
    assert_eq!(
        target["request"]["challenge"]["default-webroot"].as_str(),
        Some("")
    );
    let responses: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&responses_yaml(PEBBLE_TOS)).expect("responses YAML");
    assert_eq!(
        responses[format!("acme-agreement:{PEBBLE_TOS}").as_str()].as_bool(),
        Some(true)
    );
    assert_eq!(
        responses["acme-enter-email"].as_str(),
        Some("test@example.org")
    );

    // Identifier helpers.
    assert_eq!(
        account_urlpart(&pebble.directory_url()),
        format!("127.0.0.1%3a{}%2fdir", pebble.acme_port())
    );
    assert_eq!(
        account_urlpart("https://acme-v02.api.letsencrypt.org/directory"),
        "acme-v02.api.letsencrypt.org%2fdirectory"
    );
    assert_eq!(account_urlpart("https://example.com/"), "example.com");
    let id = acmetool_id(b"https://example.com/order/1");
    assert_eq!(id.len(), 52);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    );

    // Dropping kills both processes.
    let ports = [pebble.acme_port(), pebble.management_port()];
    drop(pebble);
    for port in ports {
        assert!(
            TcpStream::connect_timeout(
                &(Ipv4Addr::LOCALHOST, port).into(),
                Duration::from_millis(500)
            )
            .is_err(),
            "port {port} still accepts after drop"
        );
    }
}

#[test]
fn acmekeep_runner_bounds_and_captures() {
    // Works whatever state the binary is in: only checks that the harness runs it.
    let state = StateDir::new();
    let run = acmekeep_with(
        &state,
        &["--help"],
        &RunOpts {
            timeout: Duration::from_secs(30),
            ..RunOpts::default()
        },
    );
    assert!(!run.timed_out, "{}", run.describe());
    assert!(run.status.is_some(), "{}", run.describe());
}
