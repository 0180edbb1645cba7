//! CA failover (`request.fallback-providers`): two Pebbles, the preferred one behind the ARI
//! proxy so it can be made to fail (answer new orders with 503, `serverInternal` or
//! `rateLimited`), or stopped; the fallback behind a proxy of its own, for its renewal windows
//! and its terms of service, and started requiring External Account Binding where a test
//! says so.

use crate::support::*;

/// `s` as a YAML double-quoted string.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("JSON string")
}

/// The two CAs and a state directory whose target prefers `a` and falls back to `b`.
struct TwoCas {
    a: Pebble,
    a_proxy: AriProxy,
    b: Pebble,
    b_proxy: AriProxy,
    state: StateDir,
}

impl TwoCas {
    fn start() -> TwoCas {
        TwoCas::start_with(PebbleOpts::fast())
    }

    /// [`TwoCas::start`] with the fallback Pebble started with `b_opts`.
    fn start_with(b_opts: PebbleOpts) -> TwoCas {
        let a = Pebble::start(PebbleOpts::fast());
        let b = Pebble::start(b_opts);
        let (a_proxy, b_proxy) = (AriProxy::start(&a), AriProxy::start(&b));
        let state = StateDir::new();
        // One bundle trusted for both CAs' HTTPS; both CAs' http-01 ports served.
        let bundle = state.scratch_dir("trust").join("cas.pem");
        let pem = |p: &Pebble| std::fs::read_to_string(p.ca_bundle_path()).expect("ca pem");
        std::fs::write(&bundle, pem(&a) + &pem(&b)).expect("bundle");
        state.write_conf_target(&format!(
            "request:\n  provider: {}\n  fallback-providers: [{}]\n  provider-ca-bundle: {}\n  challenge:\n    http-ports: [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n    default-listeners: false\n    default-webroot: \"\"\n    http-self-test: false\n",
            yaml_str(&a_proxy.directory_url()),
            yaml_str(&b_proxy.directory_url()),
            yaml_str(&bundle.to_string_lossy()),
            a.http_port(),
            b.http_port(),
        ));
        state.write_standard_responses();
        TwoCas {
            a,
            a_proxy,
            b,
            b_proxy,
            state,
        }
    }

    /// The accounts the state directory has, by directory URL.
    fn account_urls(&self) -> Vec<String> {
        let json: serde_json::Value =
            serde_json::from_str(&acmekeep(&self.state, &["status", "--json"]).stdout)
                .expect("status json");
        json["accounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["directory_url"].as_str().map(str::to_owned))
            .collect()
    }

    /// The CA (`provider`) of the certificate `status --json` shows for the target of `name`.
    fn cert_provider(&self, name: &str) -> String {
        let json: serde_json::Value =
            serde_json::from_str(&acmekeep(&self.state, &["status", "--json"]).stdout)
                .expect("status json");
        json["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["names"][0] == name)
            .and_then(|t| t["certificate"]["provider"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

/// The preferred CA answers new orders with an outage: the certificate comes from the
/// fallback in the same run (exit 0), with one line saying so; the fallback's account is
/// made only then. When the fallback's certificate is due, the preferred CA is asked first
/// again, and without `replaces` (that id names another CA's certificate).
#[test]
fn an_outage_at_the_preferred_ca_is_ordered_from_the_fallback_and_renewed_at_the_preferred() {
    let cas = TwoCas::start();
    let names = ["unavailable.example.org", "internal.example.org"];
    for ((name, says), failing) in names
        .into_iter()
        .zip([
            "asked to slow down for longer than this run waits",
            "failed",
        ])
        .zip([
            // Overloaded until two hours from now: longer than the run waits.
            Failing {
                status: 503,
                problem: None,
                retry_after: Some("7200".to_owned()),
            },
            Failing {
                status: 500,
                problem: Some("urn:ietf:params:acme:error:serverInternal".to_owned()),
                retry_after: None,
            },
        ])
    {
        cas.a_proxy.fail_new_orders(Some(failing.clone()));
        let run = acmekeep(&cas.state, &["want", name]);
        run.assert_success();
        let line = format!("{name}: {} {says} (", cas.a_proxy.directory_url());
        assert!(
            run.stderr.contains(&line)
                && run.stderr.contains(&format!(
                    "); ordering from {} instead",
                    cas.b_proxy.directory_url()
                )),
            "{failing:?}\n{}",
            run.describe()
        );
        assert_eq!(
            run.stderr.matches("ordering from").count(),
            1,
            "{}",
            run.describe()
        );
        assert_eq!(
            cas.cert_provider(name),
            cas.b_proxy.directory_url(),
            "{failing:?}"
        );
    }
    let accounts = cas.account_urls();
    assert!(
        accounts.contains(&cas.b_proxy.directory_url()),
        "{accounts:?}"
    );
    let status = acmekeep(&cas.state, &["status"]);
    let host = |u: &str| {
        let u = url::Url::parse(u).expect("url");
        format!(
            "{}:{}",
            u.host_str().expect("host"),
            u.port().expect("port")
        )
    };
    assert!(
        status.stdout.contains(&host(&cas.b_proxy.directory_url())),
        "{}",
        status.stdout
    );

    // The outage ends; the fallback's certificates become due (their CA says so, through
    // its renewal window): they are renewed at the preferred CA, which gets no `replaces`.
    cas.a_proxy.fail_new_orders(None);
    let past = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    cas.b_proxy.set_default_window(Some(AriWindow {
        start: past - time::Duration::hours(1),
        end: past,
        retry_after: 60,
    }));
    for name in names {
        // Asked right after issuance, when the proxy had no window for them (a 404, backed
        // off): the backoff is over.
        cas.state.retry_after_passed(&cas.state.live_cert_id(name));
    }
    let orders_before = cas.a_proxy.orders().len();
    acmekeep(&cas.state, &["reconcile"]).assert_success();
    for name in names {
        assert_eq!(
            cas.cert_provider(name),
            cas.a_proxy.directory_url(),
            "{name}"
        );
    }
    let orders = cas.a_proxy.orders();
    assert_eq!(orders.len(), orders_before + 2, "{orders:?}");
    assert!(
        orders[orders_before..].iter().all(|o| o.replaces.is_none()),
        "{orders:?}"
    );
    drop(cas.b);
    drop(cas.a);
}

/// The preferred CA cannot be reached at all (stopped): the fallback issues in the same run.
#[test]
fn an_unreachable_preferred_ca_is_ordered_from_the_fallback() {
    let cas = TwoCas::start();
    let TwoCas {
        a,
        a_proxy,
        b: _b,
        b_proxy,
        state,
    } = cas;
    let preferred = a_proxy.directory_url();
    drop(a_proxy);
    drop(a);
    const NAME: &str = "down.example.org";
    let run = acmekeep(&state, &["want", NAME]);
    run.assert_success();
    assert!(
        run.stderr
            .contains(&format!("{NAME}: {preferred} could not be reached (")),
        "{}",
        run.describe()
    );
    assert!(state.live_names().contains(&NAME.to_owned()));
    let json: serde_json::Value =
        serde_json::from_str(&acmekeep(&state, &["status", "--json"]).stdout).expect("json");
    assert_eq!(
        json["targets"][0]["certificate"]["provider"],
        b_proxy.directory_url().as_str()
    );
}

/// A validation failure at the preferred CA is the target's, not the CA's: the fallback is
/// not asked (it would fail the same way and spend its limits), and no account is made there.
#[test]
fn a_failed_validation_does_not_fall_over() {
    let cas = TwoCas::start();
    // The preferred CA's http-01 port is served by nobody.
    let conf = std::fs::read_to_string(cas.state.join("conf/target")).expect("conf");
    cas.state
        .write_conf_target(&conf.replace(&format!("\"127.0.0.1:{}\", ", cas.a.http_port()), ""));
    let run = acmekeep(&cas.state, &["want", "nobody-serves.example.org"]);
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(!run.stderr.contains("ordering from"), "{}", run.describe());
    assert!(
        !cas.account_urls().contains(&cas.b_proxy.directory_url()),
        "no account at the fallback"
    );
    assert!(cas.b_proxy.orders().is_empty());
}

/// A `rateLimited` refusal (429) of a new order.
fn rate_limited(retry_after: &str, times: Option<usize>) -> Option<RateLimit> {
    Some(RateLimit {
        names_containing: None,
        times,
        retry_after: Some(retry_after.to_owned()),
        detail: "too many new orders recently (failover test)".to_owned(),
    })
}

/// The preferred CA refuses new orders for their rate (429 `rateLimited`) with a
/// `Retry-After` beyond `--rate-limit-wait`: the run does not wait, the certificate comes
/// from the fallback in the same run (exit 0, nothing deferred), and once the preferred CA
/// answers again the fallback's certificate is renewed there, without `replaces`.
#[test]
fn a_rate_limit_beyond_the_wait_is_ordered_from_the_fallback_and_renewed_at_the_preferred() {
    let cas = TwoCas::start();
    const NAME: &str = "limited.example.org";
    // 30 s is a pause the run would wait out (up to a minute), but not with 5 s to wait.
    cas.a_proxy.rate_limit_new_orders(rate_limited("30", None));
    let run = acmekeep(&cas.state, &["want", "--rate-limit-wait", "5s", NAME]);
    run.assert_success();
    assert!(
        run.stderr.contains(&format!(
            "{NAME}: {} asked to slow down for longer than this run waits (",
            cas.a_proxy.directory_url()
        )) && run.stderr.contains(&format!(
            "); ordering from {} instead",
            cas.b_proxy.directory_url()
        )),
        "{}",
        run.describe()
    );
    assert!(!run.stderr.contains("deferred"), "{}", run.describe());
    let attempts = cas.a_proxy.order_attempts();
    assert_eq!(
        attempts.len(),
        1,
        "asked once, not waited for: {attempts:#?}"
    );
    assert!(attempts[0].rate_limited);
    assert_eq!(cas.cert_provider(NAME), cas.b_proxy.directory_url());
    let rec = run_record(&cas.state, &cas.state.desired_file_for(NAME));
    assert_eq!(rec["failures"], 0, "{rec:#}");
    assert!(rec.get("rate_limited").is_none(), "{rec:#}");

    // The limit lifts; the fallback's certificate becomes due (its CA's window): renewed at
    // the preferred CA.
    cas.a_proxy.rate_limit_new_orders(None);
    let past = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    cas.b_proxy.set_default_window(Some(AriWindow {
        start: past - time::Duration::hours(1),
        end: past,
        retry_after: 60,
    }));
    cas.state.retry_after_passed(&cas.state.live_cert_id(NAME));
    acmekeep(&cas.state, &["reconcile"]).assert_success();
    assert_eq!(cas.cert_provider(NAME), cas.a_proxy.directory_url());
    let orders = cas.a_proxy.orders();
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert!(orders[0].replaces.is_none(), "{orders:?}");
}

/// A 429 whose `Retry-After` the run may wait out (within `--rate-limit-wait`, and a
/// minute): the run waits, the preferred CA issues, and the fallback is never asked.
#[test]
fn a_short_rate_limit_at_the_preferred_ca_is_waited_out_there() {
    let cas = TwoCas::start();
    const NAME: &str = "waited.example.org";
    cas.a_proxy
        .rate_limit_new_orders(rate_limited("2", Some(1)));
    let run = acmekeep(&cas.state, &["want", NAME]);
    run.assert_success();
    assert!(!run.stderr.contains("ordering from"), "{}", run.describe());
    // One refusal, then the order sent again; a new order Pebble refuses for a stale nonce
    // (its realism) or one placed afresh for a token beginning with '-' may follow it.
    let attempts = cas.a_proxy.order_attempts();
    assert!(attempts.len() >= 2, "{attempts:#?}");
    assert!(attempts[0].rate_limited, "{attempts:#?}");
    assert!(
        attempts[1..].iter().all(|a| !a.rate_limited),
        "{attempts:#?}"
    );
    assert!(
        attempts[1].at >= attempts[0].at + std::time::Duration::from_secs(2),
        "sent again only after the CA's Retry-After: {attempts:#?}"
    );
    assert_eq!(cas.cert_provider(NAME), cas.a_proxy.directory_url());
    assert!(cas.b_proxy.orders().is_empty());
    assert!(
        !cas.account_urls().contains(&cas.b_proxy.directory_url()),
        "no account at the fallback"
    );
}

/// A fallback CA that requires External Account Binding: no account there while the
/// preferred CA issues; when it fails, the fallback's account needs that CA's own binding
/// (the response file's `acme-eab-*:<its URL>`). Without it the target fails naming where
/// to give it, and nothing is lost; with it the account is registered, bound once, and the
/// certificate comes from the fallback.
#[test]
fn a_fallback_that_requires_eab_is_registered_with_its_own_binding_only_when_needed() {
    let key = crate::eab::mac_key();
    let cas = TwoCas::start_with(PebbleOpts {
        eab_required: true,
        eab_mac_keys: vec![("kid-1".to_owned(), key.clone())],
        ..PebbleOpts::fast()
    });
    let b_url = cas.b_proxy.directory_url();
    acmekeep(&cas.state, &["want", "first.example.org"]).assert_success();
    assert_eq!(
        cas.cert_provider("first.example.org"),
        cas.a_proxy.directory_url()
    );
    assert!(
        !cas.account_urls().contains(&b_url),
        "no account at the fallback yet"
    );
    let first = cas.state.live_cert_id("first.example.org");

    cas.a_proxy.fail_new_orders(Some(Failing {
        status: 503,
        problem: None,
        retry_after: Some("7200".to_owned()),
    }));
    const NAME: &str = "second.example.org";
    let run = acmekeep(&cas.state, &["want", NAME]);
    run.assert_code(1);
    for needle in [
        "requires External Account Binding".to_owned(),
        format!("acme-eab-kid:{b_url}"),
        format!("acme-eab-hmac-key:{b_url}"),
    ] {
        run.assert_stderr_contains(&needle);
    }
    assert!(!cas.account_urls().contains(&b_url), "{}", run.describe());
    assert!(cas.state.live_link(NAME).is_none());
    assert_eq!(cas.state.live_cert_id("first.example.org"), first);

    cas.state.write_responses(&format!(
        "{}\"acme-eab-kid:{b_url}\": kid-1\n\"acme-eab-hmac-key:{b_url}\": \"{key}\"\n",
        responses_yaml(PEBBLE_TOS)
    ));
    let run = acmekeep(&cas.state, &["reconcile"]);
    run.assert_success();
    assert_eq!(cas.cert_provider(NAME), b_url, "{}", run.describe());
    assert!(cas.account_urls().contains(&b_url));
    assert_eq!(crate::eab::bindings_accepted(&cas.b, "kid-1"), 1);
    // The account is there now: the next fall over uses it, binding nothing again.
    acmekeep(&cas.state, &["want", "third.example.org"]).assert_success();
    assert_eq!(cas.cert_provider("third.example.org"), b_url);
    assert_eq!(crate::eab::bindings_accepted(&cas.b, "kid-1"), 1);
    assert_eq!(cas.state.live_cert_id("first.example.org"), first);
}

/// A fallback CA with terms of service of its own: the answer for the preferred CA's terms
/// does not agree to them. Without `acme-agreement:<its terms URL>` the target fails naming
/// them, no account is made there and nothing is lost; with it, the account is registered
/// and the certificate comes from the fallback.
#[test]
fn a_fallback_with_terms_not_agreed_to_fails_naming_them_and_registers_once_they_are() {
    let cas = TwoCas::start();
    const TERMS: &str = "https://fallback.example/terms-2027.pdf";
    cas.b_proxy.tamper(Tamper::json(Exchange::Directory, |d| {
        d["meta"]["termsOfService"] = TERMS.into();
    }));
    let b_url = cas.b_proxy.directory_url();
    acmekeep(&cas.state, &["want", "kept.example.org"]).assert_success();
    let kept = cas.state.live_cert_id("kept.example.org");

    cas.a_proxy.fail_new_orders(Some(Failing {
        status: 500,
        problem: Some("urn:ietf:params:acme:error:serverInternal".to_owned()),
        retry_after: None,
    }));
    const NAME: &str = "terms.example.org";
    let run = acmekeep(&cas.state, &["want", NAME]);
    run.assert_code(1);
    run.assert_stderr_contains(&format!("acme-agreement:{TERMS}"))
        .assert_stderr_contains(&b_url);
    assert!(!cas.account_urls().contains(&b_url), "{}", run.describe());
    assert!(cas.state.live_link(NAME).is_none());
    assert_eq!(cas.state.live_cert_id("kept.example.org"), kept);

    cas.state.write_responses(&format!(
        "{}\"acme-agreement:{TERMS}\": true\n",
        responses_yaml(PEBBLE_TOS)
    ));
    let run = acmekeep(&cas.state, &["reconcile"]);
    run.assert_success();
    assert_eq!(cas.cert_provider(NAME), b_url, "{}", run.describe());
    assert!(cas.account_urls().contains(&b_url));
    assert_eq!(cas.state.live_cert_id("kept.example.org"), kept);
}
