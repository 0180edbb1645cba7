//! dns-account-01 and dns-persist-01 end to end: Pebble 2.4 behind the ARI proxy, whose
//! challenge double offers both types and validates them against the Knot acmekeep updates
//! (see `support/challenge_double.rs`); Pebble's own dns-01 validation decides.

use crate::support::*;

const ZONE: &str = "$ORIGIN example.test.\n$TTL 60\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 127.0.0.1\n";

/// Knot for acmekeep's updates and Pebble's lookups, Pebble behind the proxy, which offers
/// what `offer` says and reads records from that Knot.
fn setup(offer: ChallengeOffer) -> (Knot, KnotKey, Pebble, AriProxy) {
    let key = KnotKey::random("acme-update");
    let knot = Knot::start(&key, &[("example.test", ZONE)]);
    // Knot is Pebble's DNS too: the double copies validated values to `_acme-challenge`
    // there, where several can stand at once.
    let pebble = Pebble::start(PebbleOpts {
        dns_server: Some(knot.addr()),
        ..PebbleOpts::fast()
    });
    let proxy = AriProxy::start(&pebble);
    proxy.offer_challenges(ChallengeOffer {
        client_dns: Some(knot.addr()),
        pebble_dns_key: Some(key.clone()),
        ..offer
    });
    (knot, key, pebble, proxy)
}

/// A state directory at the proxy with RFC 2136 updates to `knot` and these `types`.
fn state_for(
    pebble: &Pebble,
    proxy: &AriProxy,
    knot: &Knot,
    key: &KnotKey,
    types: &str,
) -> StateDir {
    let state = StateDir::new();
    let addr = knot.addr().to_string();
    let conf = standard_conf_target(pebble)
        .replace(
            &serde_json::to_string(&pebble.directory_url()).expect("JSON"),
            &serde_json::to_string(&proxy.directory_url()).expect("JSON"),
        )
        .replace(
            "    http-self-test: false\n",
            &format!(
                "    http-self-test: false\n    types: {types}\n    dns-01:\n      hooks: false\n      server: \"{addr}\"\n      key-name: {}\n      algorithm: {}\n      secret: \"{}\"\n      resolvers: [\"{addr}\"]\n      nameservers: {{ns1.example.test: [\"{addr}\"]}}\n      propagation-timeout: 30\n",
                key.name, key.algorithm, key.secret
            ),
        );
    assert!(conf.contains(&proxy.directory_url()), "{conf}");
    state.write_conf_target(&conf);
    state.write_standard_responses();
    state
}

/// The label of the state directory's account (its URL from `account-url`).
fn label_of(state: &StateDir) -> String {
    let run = acmekeep(state, &["account-url"]);
    run.assert_success();
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, run.stdout.as_bytes());
    format!(
        "_{}",
        data_encoding::BASE32
            .encode(&d.as_ref()[..10])
            .to_ascii_lowercase()
    )
}

/// dns-01 listed first, dns-account-01 second, both offered: dns-account-01 is used (it is
/// preferred), the value goes to `_<account label>._acme-challenge.<name>` by RFC 2136, the
/// CA validates it there, and it is removed afterwards.
#[test]
fn dns_account_01_is_preferred_published_at_the_account_label_and_removed() {
    let (knot, key, pebble, proxy) = setup(ChallengeOffer {
        dns_account: true,
        ..ChallengeOffer::default()
    });
    let state = state_for(&pebble, &proxy, &knot, &key, "[dns-01, dns-account-01]");
    let label = label_of(&state);
    const NAME: &str = "acct.example.test";
    acmekeep(&state, &["want", NAME]).assert_success();
    assert!(state.live_names().contains(&NAME.to_owned()));
    let v = proxy.validations();
    let record = format!("{label}._acme-challenge.{NAME}");
    assert!(
        !v.is_empty()
            && v.iter()
                .all(|v| v.kind == "dns-account-01" && v.record == record),
        "{v:?}"
    );
    assert!(knot.txt(&record).is_empty(), "cleaned up");
    // status names the label and the CA, from what the run recorded.
    let status = acmekeep(&state, &["status"]);
    status.assert_success();
    assert!(
        status
            .stdout
            .contains(&format!("dns-account-01 label {label}")),
        "{}",
        status.stdout
    );
    let host = url::Url::parse(&proxy.directory_url())
        .expect("url")
        .port()
        .map(|p| format!("127.0.0.1:{p}"))
        .expect("port");
    assert!(status.stdout.contains(&host), "{}", status.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&acmekeep(&state, &["status", "--json"]).stdout).expect("json");
    let cert = &json["targets"][0]["certificate"];
    assert_eq!(cert["provider"], proxy.directory_url().as_str(), "{cert}");
    assert_eq!(cert["validations"][0]["label"], label.as_str(), "{cert}");
    assert_eq!(cert["validations"][0]["record"], record.as_str(), "{cert}");
}

/// A site that publishes DNS records only through hooks, whose hook predates dns-account-01
/// (the contrib nsupdate hook exits 42 for its events): with both types allowed and offered,
/// the name is validated with dns-01 through the hook, quietly, instead of the target failing.
#[test]
fn hooks_only_site_without_a_dns_account_01_hook_falls_back_to_dns_01() {
    let (knot, key, pebble, proxy) = setup(ChallengeOffer {
        dns_account: true,
        ..ChallengeOffer::default()
    });
    let state = StateDir::new();
    let dir = state.scratch_dir("nsupdate");
    let key_file = dir.join("tsig.key");
    std::fs::write(&key_file, key.bind_format()).expect("key file");
    let port = knot.port();
    let config = dir.join("acme-dns");
    std::fs::write(
        &config,
        format!(
            "NSUPDATE_SERVER=127.0.0.1\nNSUPDATE_PORT={port}\nNSUPDATE_KEY='{}'\nDNS_SYNC_TIMEOUT=20\nDNS_SYNC_SERVERS='127.0.0.1#{port}'\n",
            key_file.display()
        ),
    )
    .expect("hook config");
    let hooks = state.hooks_dir();
    std::fs::create_dir_all(&hooks).expect("hooks dir");
    let hook = hooks.join("nsupdate");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/hooks/nsupdate"),
        &hook,
    )
    .expect("copy hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let conf = standard_conf_target(&pebble)
        .replace(
            &serde_json::to_string(&pebble.directory_url()).expect("JSON"),
            &serde_json::to_string(&proxy.directory_url()).expect("JSON"),
        )
        .replace(
            "    http-self-test: false\n",
            &format!(
                "    http-self-test: false\n    types: [dns-account-01, dns-01]\n    env:\n      ACME_DNS_CONFIG: \"{}\"\n",
                config.display()
            ),
        );
    state.write_conf_target(&conf);
    state.write_standard_responses();
    const NAME: &str = "hooked.example.test";
    let run = acmekeep(&state, &["want", NAME]);
    run.assert_success();
    assert!(
        !run.stderr.contains("dns-account"),
        "no warning: {}",
        run.stderr
    );
    assert!(state.live_names().contains(&NAME.to_owned()));
    assert!(
        proxy
            .validations()
            .iter()
            .all(|v| v.kind != "dns-account-01"),
        "{:?}",
        proxy.validations()
    );
    assert!(
        knot.txt(&format!("_acme-challenge.{NAME}")).is_empty(),
        "the hook removed its record"
    );
}

/// Two machines (two state directories, two accounts) renew one name at the same time with
/// dns-account-01 against one DNS server: each publishes at its own label, neither removes
/// the other's record, both get a certificate.
#[test]
fn two_accounts_validate_one_name_at_once_with_dns_account_01() {
    let (knot, key, pebble, proxy) = setup(ChallengeOffer {
        dns_account: true,
        only_added: true,
        ..ChallengeOffer::default()
    });
    let a = state_for(&pebble, &proxy, &knot, &key, "[dns-account-01]");
    let b = state_for(&pebble, &proxy, &knot, &key, "[dns-account-01]");
    let (la, lb) = (label_of(&a), label_of(&b));
    assert_ne!(la, lb);
    const NAME: &str = "shared.example.test";
    let opts = RunOpts::default();
    let ra = spawn_acmekeep(&a, &["want", NAME], &opts);
    let rb = spawn_acmekeep(&b, &["want", NAME], &opts);
    ra.wait().assert_success();
    rb.wait().assert_success();
    // The double reads the record on every POST to the challenge URL, and a POST Pebble
    // rejects as badNonce (5 % of nonces, its realism kept on) is sent again by acmekeep: an
    // account's record can be looked up more than once (3 lookups for 2 accounts were seen;
    // with 50 % of nonces rejected, 6). What must hold: each account's own label was looked
    // up, nothing else was, and every lookup found that account's one value, the same each
    // time (neither clobbered nor joined by the other's).
    let validations: Vec<_> = proxy
        .validations()
        .into_iter()
        .filter(|v| v.kind == "dns-account-01")
        .collect();
    let mut found: std::collections::BTreeMap<String, Vec<Vec<String>>> = Default::default();
    for v in &validations {
        assert!(v.usable, "{validations:#?}");
        found
            .entry(v.record.clone())
            .or_default()
            .push(v.found.clone());
    }
    let mut want = vec![
        format!("{la}._acme-challenge.{NAME}"),
        format!("{lb}._acme-challenge.{NAME}"),
    ];
    want.sort();
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        want,
        "{validations:#?}"
    );
    let values: Vec<&Vec<String>> = found.values().map(|seen| &seen[0]).collect();
    for seen in found.values() {
        assert!(
            seen[0].len() == 1 && seen.iter().all(|f| f == &seen[0]),
            "{validations:#?}"
        );
    }
    assert_ne!(values[0], values[1], "{validations:#?}");
    for s in [&a, &b] {
        assert!(s.live_names().contains(&NAME.to_owned()));
    }
    for l in [&la, &lb] {
        let left = knot.txt(&format!("{l}._acme-challenge.{NAME}"));
        assert!(left.is_empty(), "{l}: {left:?}\n{}", knot.logs());
    }
}

const ISSUER: &str = "pebble.letsencrypt.org";

/// dns-persist-01 from the first step: `persist-record --publish` puts the standing record
/// into DNS (a record of another CA at the name stays), an order then needs no DNS change,
/// one record with policy=wildcard serves a name and its wildcard, and a second run of
/// `persist-record --until` replaces only our record.
#[test]
fn dns_persist_01_record_published_once_then_orders_need_no_dns_change() {
    let zone = format!(
        "{ZONE}_validation-persist.p TXT \"other-ca.example; accounturi=https://other-ca.example/acct/1\"\n"
    );
    let key = KnotKey::random("acme-update");
    let knot = Knot::start(&key, &[("example.test", &zone)]);
    let pebble = Pebble::start(PebbleOpts::fast());
    let proxy = AriProxy::start(&pebble);
    proxy.offer_challenges(ChallengeOffer {
        client_dns: Some(knot.addr()),
        persist_issuers: vec![ISSUER.to_owned(), "ca.pebble.example".to_owned()],
        ..ChallengeOffer::default()
    });
    let state = state_for(&pebble, &proxy, &knot, &key, "[dns-persist-01]");
    let account = {
        let run = acmekeep(&state, &["account-url"]);
        run.assert_success();
        run.stdout.clone()
    };
    const NAME: &str = "p.example.test";
    let run = acmekeep(&state, &["persist-record", "*.p.example.test", "--publish"]);
    run.assert_success();
    let value = format!("{ISSUER}; accounturi={account}; policy=wildcard");
    assert_eq!(
        run.stdout,
        format!(
            "; _validation-persist.{NAME} for {} (account {account}, draft -01)\n_validation-persist.{NAME}. 3600 IN TXT \"{value}\"\n'_validation-persist.{NAME}:{}:3600\n{value}\n",
            proxy.directory_url(),
            value.replace(':', "\\072")
        )
    );
    // For a tinydns-data file the comment is tinydns's own (`#`; it refuses `;`).
    let run = acmekeep(
        &state,
        &["persist-record", "*.p.example.test", "--format", "tinydns"],
    );
    run.assert_success();
    assert_eq!(
        run.stdout,
        format!(
            "# _validation-persist.{NAME} for {} (account {account}, draft -01)\n'_validation-persist.{NAME}:{}:3600\n",
            proxy.directory_url(),
            value.replace(':', "\\072")
        )
    );
    let record = format!("_validation-persist.{NAME}");
    assert_eq!(knot.txt(&record).len(), 2, "{:?}", knot.txt(&record));
    assert!(knot.txt(&record).contains(&value));

    acmekeep(&state, &["want", "*.p.example.test", NAME]).assert_success();
    let v = proxy.validations();
    assert!(
        !v.is_empty() && v.iter().all(|v| v.kind == "dns-persist-01" && v.usable),
        "{v:?}"
    );
    assert!(state.live_names().contains(&NAME.to_owned()));
    assert_eq!(
        knot.txt(&record).len(),
        2,
        "nothing added or removed by the order"
    );

    // A newer record of ours replaces the older one; the other CA's stays.
    let run = acmekeep(
        &state,
        &[
            "persist-record",
            NAME,
            "--wildcard",
            "--until",
            "2099-01-01",
            "--publish",
            "--format",
            "plain",
        ],
    );
    run.assert_success();
    let newer = format!("{value}; persistUntil=4070908800");
    assert_eq!(run.stdout, format!("{newer}\n"), "plain is the value alone");
    let now = knot.txt(&record);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.contains(&newer) && now.iter().any(|v| v.starts_with("other-ca.example;")));
}

/// Before ordering, the record is read and judged: a missing record, one for another
/// account, one without policy=wildcard for a wildcard, and one past its persistUntil are
/// each named precisely and nothing is asked of the CA (no validation); with another allowed
/// type offered, that type is used instead, with a warning.
#[test]
fn dns_persist_01_precheck_names_what_is_wrong_before_the_ca_is_asked() {
    let zone = format!(
        "{ZONE}_validation-persist.other TXT \"{ISSUER}; accounturi=https://elsewhere.example/acct/9\"\n"
    );
    let key = KnotKey::random("acme-update");
    let knot = Knot::start(&key, &[("example.test", &zone)]);
    let pebble = Pebble::start(PebbleOpts::fast());
    let proxy = AriProxy::start(&pebble);
    proxy.offer_challenges(ChallengeOffer {
        client_dns: Some(knot.addr()),
        persist_issuers: vec![ISSUER.to_owned()],
        dns_account: true,
        ..ChallengeOffer::default()
    });
    let state = state_for(&pebble, &proxy, &knot, &key, "[dns-persist-01]");

    let run = acmekeep(&state, &["want", "missing.example.test"]);
    run.assert_code(1);
    run.assert_stderr_contains(
        "missing.example.test: the dns-persist-01 record _validation-persist.missing.example.test is not usable: the name does not exist",
    );
    run.assert_stderr_contains(
        "'acmekeep persist-record missing.example.test' prints the record to publish",
    );

    let run = acmekeep(&state, &["want", "other.example.test"]);
    run.assert_code(1);
    run.assert_stderr_contains(
        "its accounturi is https://elsewhere.example/acct/9 but this account is https://",
    );

    // Ours without the policy, asked for a wildcard.
    acmekeep(
        &state,
        &["persist-record", "nopol.example.test", "--publish"],
    )
    .assert_success();
    let run = acmekeep(&state, &["want", "*.nopol.example.test"]);
    run.assert_code(1);
    run.assert_stderr_contains("it has no policy=wildcard, which a wildcard certificate needs");
    assert!(
        proxy.validations().is_empty(),
        "the CA was asked: {:?}",
        proxy.validations()
    );

    // Another allowed type offered: used instead, with a warning.
    let conf = state
        .read_string("conf/target")
        .replace("[dns-persist-01]", "[dns-persist-01, dns-account-01]");
    state.write_conf_target(&conf);
    let run = acmekeep(&state, &["want", "fallback.example.test"]);
    run.assert_success();
    run.assert_stderr_contains("the dns-persist-01 record _validation-persist.fallback.example.test is not usable: the name does not exist");
    run.assert_stderr_contains("; using dns-account-01 instead");
    // (The targets that failed before are retried by the same run, the same way.)
    let v: Vec<_> = proxy
        .validations()
        .into_iter()
        .filter(|v| v.name == "fallback.example.test")
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, "dns-account-01");
}

/// `request.challenge.dns-persist-01.check`. `resolvers`: the record is read through
/// `dns-01.resolvers`, for a site whose authoritative servers cannot be reached from here
/// (here the zone's only NS points at a closed port): another account's record is named
/// before the CA is asked, as the resolver serves it. `off`: nothing is read, the CA is asked
/// and decides. A word it does not know is refused with the file and line.
#[test]
fn dns_persist_01_check_reads_through_the_resolvers_or_not_at_all() {
    let zone = format!(
        "{ZONE}_validation-persist.other TXT \"{ISSUER}; accounturi=https://elsewhere.example/acct/9\"\n"
    );
    let key = KnotKey::random("acme-update");
    let knot = Knot::start(&key, &[("example.test", &zone)]);
    let pebble = Pebble::start(PebbleOpts::fast());
    let proxy = AriProxy::start(&pebble);
    proxy.offer_challenges(ChallengeOffer {
        client_dns: Some(knot.addr()),
        persist_issuers: vec![ISSUER.to_owned()],
        ..ChallengeOffer::default()
    });
    let state = state_for(&pebble, &proxy, &knot, &key, "[dns-persist-01]");
    let closed = free_port_with(true);
    let addr = knot.addr().to_string();
    let base = state.read_string("conf/target").replace(
        &format!("nameservers: {{ns1.example.test: [\"{addr}\"]}}"),
        &format!("nameservers: {{ns1.example.test: [\"127.0.0.1:{closed}\"]}}"),
    );
    assert!(base.contains(&closed.to_string()), "{base}");
    let with_check = |check: &str| format!("{base}    dns-persist-01:\n      check: {check}\n");
    const NAME: &str = "other.example.test";

    state.write_conf_target(&with_check("resolvers"));
    let run = acmekeep(&state, &["want", NAME]);
    run.assert_code(1);
    run.assert_stderr_contains(&format!(
        "{NAME}: the dns-persist-01 record _validation-persist.{NAME} is not usable: its accounturi is https://elsewhere.example/acct/9 but this account is https://"
    ));
    run.assert_stderr_contains(&format!("(as {addr} serves it)"));
    assert!(
        proxy.validations().is_empty(),
        "the CA was asked: {:?}",
        proxy.validations()
    );

    state.write_conf_target(&with_check("off"));
    let run = acmekeep(&state, &["reconcile", "--force"]);
    run.assert_code(1);
    assert!(!run.stderr.contains("is not usable"), "{}", run.describe());
    let asked: Vec<_> = proxy
        .validations()
        .into_iter()
        .filter(|v| v.name == NAME && v.kind == "dns-persist-01")
        .collect();
    assert_eq!(
        asked.len(),
        1,
        "the CA decides: {asked:?}\n{}",
        run.describe()
    );
    assert!(state.live_link(NAME).is_none());

    state.write_conf_target(&with_check("sometimes"));
    let run = acmekeep(&state, &["reconcile"]);
    assert_ne!(run.code, Some(0), "{}", run.describe());
    let line = with_check("sometimes")
        .lines()
        .position(|l| l.contains("check: sometimes"))
        .expect("line")
        + 1;
    for needle in [
        "conf/target".to_owned(),
        "\"sometimes\" is not a dns-persist-01 check: authoritative, resolvers or off".to_owned(),
        format!("line {line}"),
    ] {
        run.assert_stderr_contains(&needle);
    }
}

/// A record whose persistUntil is near is used, with a warning naming the days left.
#[test]
fn dns_persist_01_warns_before_persist_until() {
    let (knot, key, pebble, proxy) = setup(ChallengeOffer {
        persist_issuers: vec![ISSUER.to_owned()],
        ..ChallengeOffer::default()
    });
    let state = state_for(&pebble, &proxy, &knot, &key, "[dns-persist-01]");
    let soon =
        (time::OffsetDateTime::now_utc() + time::Duration::days(20) + time::Duration::hours(1))
            .unix_timestamp()
            .to_string();
    acmekeep(
        &state,
        &[
            "persist-record",
            "soon.example.test",
            "--until",
            &soon,
            "--publish",
        ],
    )
    .assert_success();
    let run = acmekeep(&state, &["want", "soon.example.test"]);
    run.assert_success();
    run.assert_stderr_contains(&format!(
        "soon.example.test: the dns-persist-01 record _validation-persist.soon.example.test stops being accepted in 20 days (persistUntil {soon})"
    ));
    // status says so too, from what the order recorded (it asks no DNS server).
    let status = acmekeep(&state, &["status"]);
    status.assert_success();
    for needle in [
        "_validation-persist.soon.example.test: dns-persist-01 standing record, until ",
        "warning: soon.example.test: the dns-persist-01 record _validation-persist.soon.example.test stops being accepted at ",
        "(persistUntil, in 20d)",
    ] {
        assert!(
            status.stdout.contains(needle),
            "{needle}:\n{}",
            status.stdout
        );
    }
    // Once, not again for the validation's own line.
    assert_eq!(
        status.stdout.matches("warning: ").count(),
        1,
        "{}",
        status.stdout
    );
    // `status --json`: in the document's warnings, where monitoring looks, as well as in
    // the validation.
    let doc = status_json(&state);
    let warnings: Vec<&str> = doc["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str())
        .collect();
    let validation = &doc["targets"][0]["certificate"]["validations"][0]["warning"];
    assert_eq!(warnings.len(), 1, "{doc:#}");
    assert_eq!(Some(warnings[0]), validation.as_str(), "{doc:#}");
    assert!(warnings[0].contains("(persistUntil, in 20d)"), "{doc:#}");
}
