//! dns-01 through RFC 2136 against real Knot DNS servers started by the tests: updates
//! signed with TSIG, CNAME delegation, the propagation wait, and cleanup.

use std::collections::BTreeMap;
use std::time::Duration;

use acmekeep::challenge::dns::{
    Dns01, Dns01Error, KeySource, ResolverConfig, Rfc2136Config, TsigAlgorithm, TsigKey, publish,
    unpublish, wait_propagated,
};
use acmekeep::name::Hostname;

use crate::support::{Knot, KnotKey};

const EXAMPLE_ZONE: &str = "$ORIGIN example.test.
$TTL 60
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
@ NS ns2
ns1 A 127.0.0.1
ns2 A 127.0.0.1
_acme-challenge.keep TXT \"keep-me\"
_acme-challenge.a CNAME _acme-challenge.a.delegated.test.
_acme-challenge.b CNAME hop.example.test.
hop CNAME _acme-challenge.b.delegated.test.
_acme-challenge.loop CNAME loop2.example.test.
loop2 CNAME _acme-challenge.loop.example.test.
";

const DELEGATED_ZONE: &str = "$ORIGIN delegated.test.
$TTL 60
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
ns1 A 127.0.0.1
";

/// A dns-01 TXT value (base64url SHA-256) derived from `seed`.
fn value(seed: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
    data_encoding::BASE64URL_NOPAD.encode(d.as_ref())
}

fn key_of(k: &KnotKey) -> TsigKey {
    TsigKey::new(
        &k.name,
        TsigAlgorithm::parse(&k.algorithm).expect("algorithm"),
        &k.secret,
    )
    .expect("valid key")
}

/// Updates to `knot`, which also answers every lookup; NS found by lookup are asked on its
/// port.
fn config(knot: &Knot, key: &KnotKey) -> Rfc2136Config {
    let mut resolver = ResolverConfig::with_server(knot.addr());
    resolver.authoritative_port = knot.port();
    resolver.timeout = Duration::from_secs(3);
    let mut c = Rfc2136Config::new(knot.addr(), KeySource::Inline(key_of(key)), resolver);
    c.timeout = Duration::from_secs(5);
    c
}

fn both_zones(key: &KnotKey) -> Knot {
    Knot::start(
        key,
        &[
            ("example.test", EXAMPLE_ZONE),
            ("delegated.test", DELEGATED_ZONE),
        ],
    )
}

#[tokio::test]
async fn rfc2136_publish_adds_the_txt_and_unpublish_removes_only_that_value() {
    let key = KnotKey::random("acme-update.");
    let knot = both_zones(&key);
    let cfg = config(&knot, &key);
    let name = "_acme-challenge.keep.example.test";
    let (v1, v2) = (value("one"), value("two"));

    let p1 = publish(&cfg, name, &v1).await.expect("publish v1");
    assert_eq!(p1.zone.as_str(), "example.test");
    assert_eq!(p1.name.as_str(), name);
    assert!(p1.cnames.is_empty());
    // A wildcard and its base name share the record name: both values must be there.
    let p2 = publish(&cfg, name, &v2).await.expect("publish v2");
    let mut want = vec!["keep-me".to_owned(), v1.clone(), v2.clone()];
    want.sort();
    assert_eq!(knot.txt(name), want);
    let ttl = knot
        .query(name, hickory_proto::rr::RecordType::TXT)
        .expect("answer")
        .answers
        .iter()
        .find(|r| matches!(&r.data, hickory_proto::rr::RData::TXT(t) if t.txt_data.concat() == v1.as_bytes()))
        .map(|r| r.ttl);
    assert_eq!(ttl, Some(60), "short TTL");

    unpublish(&cfg, &p1).await.expect("unpublish v1");
    let mut want = vec!["keep-me".to_owned(), v2.clone()];
    want.sort();
    assert_eq!(knot.txt(name), want, "only v1 is removed");
    unpublish(&cfg, &p2).await.expect("unpublish v2");
    assert_eq!(knot.txt(name), vec!["keep-me".to_owned()]);
    unpublish(&cfg, &p2)
        .await
        .expect("removing a record that is gone is fine");

    // A fresh name (NXDOMAIN before) works too, and leaves nothing behind.
    let fresh = "_acme-challenge.new.example.test";
    let p = publish(&cfg, fresh, &v1)
        .await
        .expect("publish at a new name");
    assert_eq!(knot.txt(fresh), vec![v1.clone()]);
    unpublish(&cfg, &p).await.expect("unpublish");
    assert!(knot.txt(fresh).is_empty());
}

#[tokio::test]
async fn rfc2136_cname_on_acme_challenge_updates_the_delegated_zone() {
    let key = KnotKey::random("acme-update.");
    let knot = both_zones(&key);
    let cfg = config(&knot, &key);
    let v = value("delegated");

    let p = publish(&cfg, "_acme-challenge.a.example.test", &v)
        .await
        .expect("publish through the CNAME");
    assert_eq!(p.requested.as_str(), "_acme-challenge.a.example.test");
    assert_eq!(p.name.as_str(), "_acme-challenge.a.delegated.test");
    assert_eq!(p.zone.as_str(), "delegated.test");
    assert_eq!(
        knot.txt("_acme-challenge.a.delegated.test"),
        vec![v.clone()]
    );
    // The CNAME itself is untouched.
    let m = knot
        .query(
            "_acme-challenge.a.example.test",
            hickory_proto::rr::RecordType::CNAME,
        )
        .expect("answer");
    assert_eq!(m.answers.len(), 1, "{m:?}");

    // The wait follows the CNAME too, and finds delegated.test's NS by address lookup.
    wait_propagated(
        &cfg.resolver,
        "_acme-challenge.a.example.test",
        &v,
        Duration::from_secs(10),
    )
    .await
    .expect("served by the delegated zone's only NS");

    unpublish(&cfg, &p).await.expect("unpublish");
    assert!(knot.txt("_acme-challenge.a.delegated.test").is_empty());

    // Two hops: _acme-challenge.b.example.test -> hop.example.test -> delegated.test.
    let p = publish(&cfg, "_acme-challenge.b.example.test", &v)
        .await
        .expect("publish through two CNAMEs");
    assert_eq!(p.name.as_str(), "_acme-challenge.b.delegated.test");
    assert_eq!(
        p.cnames.iter().map(Hostname::as_str).collect::<Vec<_>>(),
        ["hop.example.test", "_acme-challenge.b.delegated.test"]
    );
    assert_eq!(
        knot.txt("_acme-challenge.b.delegated.test"),
        vec![v.clone()]
    );
    unpublish(&cfg, &p).await.expect("unpublish");

    let e = publish(&cfg, "_acme-challenge.loop.example.test", &v)
        .await
        .expect_err("a CNAME loop");
    assert!(format!("{e:#}").contains("CNAME loop"), "{e:#}");

    // A configured zone that does not hold the CNAME target is refused before any update.
    let mut wrong = cfg.clone();
    wrong.zone = Some(Hostname::parse("example.test").expect("name"));
    let e = publish(&wrong, "_acme-challenge.a.example.test", &v)
        .await
        .expect_err("target outside the configured zone");
    assert!(
        format!("{e:#}").contains("is not in zone example.test"),
        "{e:#}"
    );
}

#[tokio::test]
async fn rfc2136_propagation_wait_names_the_lagging_server_then_succeeds() {
    let key = KnotKey::random("acme-update.");
    let primary = Knot::start(&key, &[("example.test", EXAMPLE_ZONE)]);
    // A second authoritative server with the same zone, which we update ourselves (late).
    let lagging = Knot::start(&key, &[("example.test", EXAMPLE_ZONE)]);
    let cfg = config(&primary, &key);
    let mut resolver = cfg.resolver.clone();
    resolver.nameserver_addresses = BTreeMap::from([
        (
            Hostname::parse("ns1.example.test").expect("name"),
            vec![primary.addr()],
        ),
        (
            Hostname::parse("ns2.example.test").expect("name"),
            vec![lagging.addr()],
        ),
    ]);
    let name = "_acme-challenge.prop.example.test";
    let v = value("propagation");
    publish(&cfg, name, &v)
        .await
        .expect("publish on the primary");

    let e = wait_propagated(&resolver, name, &v, Duration::from_secs(2))
        .await
        .expect_err("ns2 does not have it");
    let text = format!("{e:#}");
    assert!(
        text.contains(&format!(
            "ns2.example.test ({}) answered NXDOMAIN",
            lagging.addr()
        )),
        "{text}"
    );
    assert!(!text.contains("ns1.example.test"), "{text}");
    match e.downcast_ref::<Dns01Error>() {
        Some(Dns01Error::NotPropagated { lagging: l, .. }) => {
            assert_eq!(l.len(), 1, "{l:?}");
            assert_eq!(l[0].nameserver.as_str(), "ns2.example.test");
            assert_eq!(l[0].address, Some(lagging.addr()));
        }
        other => panic!("not NotPropagated: {other:?}"),
    }

    // Another value at the name on ns2: the error says what it serves instead.
    let mut to_lagging = cfg.clone();
    to_lagging.server = lagging.addr();
    let other = value("other");
    publish(&to_lagging, name, &other)
        .await
        .expect("other value");
    let e = wait_propagated(&resolver, name, &v, Duration::from_millis(1500))
        .await
        .expect_err("still lagging");
    assert!(
        format!("{e:#}").contains(&format!("serves other TXT values: {other:?}")),
        "{e:#}"
    );

    // The wait succeeds once the second server catches up while it polls.
    let late = tokio::spawn({
        let (cfg, v) = (to_lagging.clone(), v.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            publish(&cfg, name, &v).await
        }
    });
    let started = std::time::Instant::now();
    wait_propagated(&resolver, name, &v, Duration::from_secs(20))
        .await
        .expect("both serve it");
    assert!(started.elapsed() >= Duration::from_secs(1));
    late.await.expect("task").expect("late publish");
}

#[tokio::test]
async fn rfc2136_bad_tsig_secret_is_a_clear_error() {
    let key = KnotKey::random("acme-update.");
    let knot = both_zones(&key);
    let name = "_acme-challenge.keep.example.test";
    let v = value("bad key");

    let mut wrong_secret = key.clone();
    wrong_secret.secret = KnotKey::random("x").secret;
    let cfg = config(&knot, &wrong_secret);
    let e = publish(&cfg, name, &v).await.expect_err("wrong secret");
    let text = format!("{e:#}");
    assert!(
        text.contains(&format!(
            "{} rejected TSIG key acme-update: BADSIG",
            knot.addr()
        )),
        "{text}"
    );
    assert!(
        matches!(
            e.downcast_ref::<Dns01Error>(),
            Some(Dns01Error::TsigRejected { .. })
        ),
        "{e:?}"
    );

    let mut unknown = key.clone();
    unknown.name = "someone-else.".to_owned();
    let e = publish(&config(&knot, &unknown), name, &v)
        .await
        .expect_err("unknown key");
    assert!(format!("{e:#}").contains("BADKEY"), "{e:#}");

    let mut other_alg = key.clone();
    other_alg.algorithm = "hmac-sha512".to_owned();
    let e = publish(&config(&knot, &other_alg), name, &v)
        .await
        .expect_err("wrong algorithm");
    assert!(format!("{e:#}").contains("rejected TSIG key"), "{e:#}");

    assert_eq!(
        knot.txt(name),
        vec!["keep-me".to_owned()],
        "nothing changed"
    );
}

#[tokio::test]
async fn rfc2136_key_file_in_bind_format() {
    let key = KnotKey::random("acme-update.");
    let knot = both_zones(&key);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tsig.key");
    let other = KnotKey::random("unrelated.");
    std::fs::write(
        &path,
        format!(
            "# from tsig-keygen\n{}{}",
            other.bind_format(),
            key.bind_format()
        ),
    )
    .expect("write key file");
    let mut cfg = config(&knot, &key);
    cfg.key = KeySource::File {
        path: path.clone(),
        name: Some("acme-update".to_owned()),
    };
    let name = "_acme-challenge.file.example.test";
    let v = value("key file");
    let p = publish(&cfg, name, &v).await.expect("publish");
    assert_eq!(knot.txt(name), vec![v.clone()]);
    unpublish(&cfg, &p).await.expect("unpublish");

    cfg.key = KeySource::File { path, name: None };
    let e = publish(&cfg, name, &v)
        .await
        .expect_err("two keys, no name");
    assert!(format!("{e:#}").contains("several keys"), "{e:#}");
}

#[tokio::test]
async fn rfc2136_responder_cleanup_removes_records_even_after_a_failure() {
    let key = KnotKey::random("acme-update.");
    let knot = both_zones(&key);
    let cfg = config(&knot, &key);
    let responder = Dns01::new(cfg.clone(), Some(Duration::from_secs(10)));
    let (v1, v2) = (value("base"), value("wildcard"));
    let base = Hostname::parse("c.example.test").expect("name");
    let wildcard = Hostname::parse("*.c.example.test").expect("name");
    responder.present(&base, &v1).await.expect("base name");
    responder.present(&wildcard, &v2).await.expect("wildcard");
    let mut want = vec![v1.clone(), v2.clone()];
    want.sort();
    assert_eq!(knot.txt("_acme-challenge.c.example.test"), want);

    // The third one fails after its update went out (an NS that never answers): the order
    // fails, and cleanup must still remove all three.
    let mut broken = cfg.clone();
    let dead = crate::support::free_port_with(true);
    broken.resolver.nameserver_addresses = BTreeMap::from([(
        Hostname::parse("ns2.example.test").expect("name"),
        vec![([127, 0, 0, 1], dead).into()],
    )]);
    broken.resolver.timeout = Duration::from_millis(300);
    let failing = Dns01::new(broken, Some(Duration::from_secs(1)));
    let v3 = value("third");
    let d = Hostname::parse("d.example.test").expect("name");
    let e = failing
        .present(&d, &v3)
        .await
        .expect_err("ns2 never answers");
    assert!(
        format!("{e:#}").contains(&format!("ns2.example.test (127.0.0.1:{dead})")),
        "{e:#}"
    );
    assert_eq!(knot.txt("_acme-challenge.d.example.test"), vec![v3.clone()]);

    responder.cleanup().await;
    failing.cleanup().await;
    assert!(knot.txt("_acme-challenge.c.example.test").is_empty());
    assert!(knot.txt("_acme-challenge.d.example.test").is_empty());
    // A second cleanup has nothing left to do.
    responder.cleanup().await;
}

/// dns-account-01's record name (`_<account label>._acme-challenge.<name>`) is updated like
/// dns-01's, CNAME delegation of that exact name included; other names under
/// `_acme-challenge` are still refused.
#[tokio::test]
async fn rfc2136_publishes_at_an_account_label() {
    let key = KnotKey::random("acme-update.");
    let zone = format!(
        "{EXAMPLE_ZONE}_vkbgbqfhr6yv2asd._acme-challenge.del CNAME _acme-challenge.del.delegated.test.\n"
    );
    let knot = Knot::start(
        &key,
        &[("example.test", &zone), ("delegated.test", DELEGATED_ZONE)],
    );
    let cfg = config(&knot, &key);
    let label = acmekeep::acme::dns_account::account_label("http://localhost:4000/acme/acct/1");
    assert_eq!(label, "_vkbgbqfhr6yv2asd");
    let v = value("account");
    let name = format!("{label}._acme-challenge.acct.example.test");
    let p = publish(&cfg, &name, &v)
        .await
        .expect("publish at the label");
    assert_eq!(knot.txt(&name), vec![v.clone()]);
    assert!(knot.txt("_acme-challenge.acct.example.test").is_empty());
    unpublish(&cfg, &p).await.expect("unpublish");
    assert!(knot.txt(&name).is_empty());

    let p = publish(
        &cfg,
        &format!("{label}._acme-challenge.del.example.test"),
        &v,
    )
    .await
    .expect("through the CNAME");
    assert_eq!(p.name.as_str(), "_acme-challenge.del.delegated.test");
    assert_eq!(
        knot.txt("_acme-challenge.del.delegated.test"),
        vec![v.clone()]
    );
    unpublish(&cfg, &p).await.expect("unpublish");

    let e = publish(&cfg, "_other._acme-challenge.acct.example.test", &v)
        .await
        .expect_err("not an account label");
    assert!(format!("{e:#}").contains("not a record name"), "{e:#}");
}

/// The standing dns-persist-01 record: published once, replaced by a newer one of ours
/// without touching another CA's or account's record at the name, and read back from every
/// authoritative server.
#[tokio::test]
async fn rfc2136_replaces_only_our_persist_record() {
    use acmekeep::challenge::dns::persist::{replace, txt_authoritative};
    let key = KnotKey::random("acme-update.");
    let zone = format!(
        "{EXAMPLE_ZONE}_validation-persist.p TXT \"other.example; accounturi=https://other.example/acct/9\"\n"
    );
    let knot = Knot::start(&key, &[("example.test", &zone)]);
    let mut cfg = config(&knot, &key);
    cfg.ttl = 3600;
    let name = "_validation-persist.p.example.test";
    let ours_prefix = "ca.example; accounturi=https://ca.example/acct/1";
    let ours = |v: &str| v.starts_with(ours_prefix);
    let first = format!("{ours_prefix}; persistUntil=1900000000");
    let r = replace(&cfg, name, &first, &ours).await.expect("first");
    assert!(r.removed.is_empty() && !r.unchanged);
    let again = replace(&cfg, name, &first, &ours).await.expect("again");
    assert!(again.unchanged, "nothing to send");
    // A long value (over 255 octets) is split into strings and joined by readers.
    let second = format!("{ours_prefix}; policy=wildcard; note={}", "n".repeat(300));
    let r = replace(&cfg, name, &second, &ours).await.expect("second");
    assert_eq!(r.removed, vec![first.clone()]);
    let mut want = vec![
        "other.example; accounturi=https://other.example/acct/9".to_owned(),
        second.clone(),
    ];
    want.sort();
    assert_eq!(knot.txt(name), want);

    let mut resolver = cfg.resolver.clone();
    resolver.nameserver_addresses = BTreeMap::from([
        (
            Hostname::parse("ns1.example.test").expect("name"),
            vec![knot.addr()],
        ),
        (
            Hostname::parse("ns2.example.test").expect("name"),
            vec![knot.addr()],
        ),
    ]);
    let (owner, answers) = txt_authoritative(&resolver, &Hostname::parse(name).expect("name"))
        .await
        .expect("lookup");
    assert_eq!(owner.as_str(), name);
    assert_eq!(answers.len(), 2, "{answers:?}");
    for a in &answers {
        let found = a.outcome.as_ref().expect("answered");
        assert!(!found.nxdomain);
        assert!(found.values.contains(&second), "{a:?}");
    }
    let (_, answers) = txt_authoritative(
        &resolver,
        &Hostname::parse("_validation-persist.none.example.test").expect("name"),
    )
    .await
    .expect("lookup");
    assert!(
        answers
            .iter()
            .all(|a| a.outcome.as_ref().is_ok_and(|f| f.nxdomain)),
        "{answers:?}"
    );

    let e = replace(&cfg, name, "not a record", &ours)
        .await
        .expect_err("not a dns-persist-01 value");
    assert!(
        format!("{e:#}").contains("not a dns-persist-01 record"),
        "{e:#}"
    );
}
