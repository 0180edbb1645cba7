//! Settings mistakes are named: unknown or misplaced keys in conf/target, desired/* and
//! conf/responses are warnings with the file, the line and the key probably meant (and every
//! key acmetool knows is accepted silently); malformed YAML names its line; a wildcard name
//! without a dns-01 method is refused by `want`, naming the right TXT record.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[track_caller]
fn assert_output(run: &Run, code: i32, stdout: &str, stderr: &str) {
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (Some(code), stdout, stderr),
        "{}",
        run.describe()
    );
}

#[test]
fn unknown_and_misplaced_keys_are_warnings_naming_file_line_and_the_key_meant() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    // `http-self-test` placed under `key:` (line 8 of conf/target).
    let conf = standard_conf_target(&pebble);
    state.write_conf_target(&format!(
        "{conf}  key:\n    type: ecdsa\n    http-self-test: false\n"
    ));
    let line = conf.lines().count() + 3;
    state.write_desired(
        "a.settings.example.org",
        "satisfy:\n  names: [a.settings.example.org]\n  margn: 20\n",
    );
    let responses = state.read_string("conf/responses");
    state.write_responses(&format!(
        "{responses}acmetool-quickstart-choose-sever: url\n"
    ));
    let responses_line = responses.lines().count() + 1;

    let run = acmekeep(&state, &["reconcile"]);
    let responses_path = state.join("conf/responses");
    assert!(
        run.stdout
            .starts_with("obtained a certificate for a.settings.example.org")
    );
    assert_output(
        &run,
        0,
        &run.stdout,
        &format!(
            "acmekeep: warning: {}: line {responses_line}: unknown prompt id `acmetool-quickstart-choose-sever` (ignored); did you mean `acmetool-quickstart-choose-server`?\n\
             acmekeep: warning: conf/target: line {line}: unknown setting `request.key.http-self-test` (ignored); did you mean `request.challenge.http-self-test`?\n\
             acmekeep: warning: desired/a.settings.example.org: line 3: unknown setting `satisfy.margn` (ignored); did you mean `satisfy.margin`?\n",
            responses_path.display()
        ),
    );
    // They need a person, so an idle run says them again (and nothing else).
    let idle = acmekeep(&state, &["reconcile"]);
    assert_output(&idle, 0, "", &run.stderr);
}

#[test]
fn every_key_and_prompt_id_acmetool_knows_is_accepted_silently() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    let webroot = state.scratch_dir("webroot");
    // acmetool 0.2.2's whole target schema (request.key.id aside: it names an existing key).
    let conf = standard_conf_target(&pebble).replace(
        "  challenge:\n",
        &format!(
            "  key:\n    type: ecdsa\n    rsa-size: 2048\n    ecdsa-curve: nistp256\n  ocsp-must-staple: false\n  challenge:\n    webroot-paths: [{}]\n    env: {{SOME: thing}}\n",
            webroot.display()
        ),
    );
    state.write_conf_target(&format!(
        "{conf}satisfy:\n  margin: 30\n  key:\n    type: ecdsa\npriority: 0\n"
    ));
    state.write_desired(
        "legacy",
        "names: [legacy.settings.example.org]\nsatisfy:\n  names: [b.settings.example.org]\nrequest:\n  names: [b.settings.example.org]\n  challenge:\n    http-self-test: false\nlabel: \"\"\npriority: 1\n",
    );
    // Every prompt id acmetool 0.2.2 asks (its UniqueIDs), as its example response file has
    // them, and the terms-of-service answer Pebble needs.
    let responses = state.read_string("conf/responses");
    state.write_responses(&format!(
        "{responses}\
         acmetool-quickstart-choose-server: https://acme-staging-v02.api.letsencrypt.org/directory\n\
         acmetool-quickstart-enter-directory-url: https://ca.example/dir\n\
         acmetool-quickstart-invalid-directory-url: true\n\
         acmetool-quickstart-key-type: ecdsa\n\
         acmetool-quickstart-rsa-key-size: 4096\n\
         acmetool-quickstart-invalid-rsa-key-size: true\n\
         acmetool-quickstart-ecdsa-curve: nistp256\n\
         acmetool-quickstart-choose-method: redirector\n\
         acmetool-quickstart-webroot-path: /var/www/.well-known/acme-challenge\n\
         acmetool-quickstart-webroot-path-invalid: true\n\
         acmetool-quickstart-webroot-path-unlikely: true\n\
         acmetool-quickstart-install-redirector-systemd: false\n\
         acmetool-quickstart-complete: true\n\
         acmetool-quickstart-install-haproxy-script: false\n\
         acmetool-quickstart-install-cronjob: false\n\
         \"acme-agreement:https://letsencrypt.org/documents/LE-SA-v1.2-November-15-2017.pdf\": true\n"
    ));
    let run = acmekeep(&state, &["reconcile"]);
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (Some(0), ""),
        "{}",
        run.describe()
    );
    assert!(
        run.stdout
            .starts_with("obtained a certificate for b.settings.example.org")
    );
}

#[test]
fn yaml_errors_name_the_line() {
    let state = StateDir::new();
    state.write_responses("acme-enter-email: \"\"\n  nested: [\n");
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(2)
        .assert_stderr_contains(&format!(
            "cannot parse {}",
            state.join("conf/responses").display()
        ))
        .assert_stderr_contains("at line 2");
    // An error at the very start says "line 1" too (the YAML library leaves it out).
    state.write_responses("just some text\n");
    acmekeep(&state, &["reconcile"])
        .assert_code(2)
        .assert_stderr_contains("conf/responses: line 1: invalid type");
    state.write_responses("acme-enter-email: \"\"\n");
    state.write_conf_target("request:\n  provider: [\n");
    acmekeep(&state, &["reconcile"])
        .assert_code(2)
        .assert_stderr_contains("conf/target: request.provider: invalid type")
        .assert_stderr_contains("at line 2");
    state.write_conf_target("");
    state.write_desired("x.example.org", "satisfy:\n  margin: thirty\n");
    acmekeep(&state, &["reconcile"])
        .assert_code(1)
        .assert_stderr_contains("desired/x.example.org: satisfy.margin: invalid type")
        .assert_stderr_contains("at line 2");
}

#[test]
fn a_wildcard_without_a_dns01_method_is_refused_and_nothing_is_saved() {
    let state = StateDir::new();
    let run = acmekeep(&state, &["want", "*.wild.example.com", "wild.example.com"]);
    assert_output(
        &run,
        2,
        "",
        &format!(
            "acmekeep: *.wild.example.com is a wildcard name: the CA accepts only a dns-01 answer for it, a TXT record at _acme-challenge.wild.example.com, and no dns-01 method is configured (request.challenge.dns-01 has no server, and no hook handles challenge-dns-start). Nothing was saved. Set request.challenge.dns-01.server (RFC 2136 updates) in conf/target, or install a challenge-dns-start hook (contrib/hooks/nsupdate, contrib/hooks/tinydns) in {}; see doc/challenges.md\n",
            state.hooks_dir().display()
        ),
    );
    assert!(state.desired_files().is_empty(), "{}", state.tree());
    // dns-01 taken out of the challenge types: refused for that reason.
    state.write_conf_target("request:\n  challenge:\n    types: [http-01]\n");
    acmekeep(&state, &["want", "--no-reconcile", "*.wild.example.com"])
        .assert_code(2)
        .assert_stderr_contains("request.challenge.types is [http-01], without dns-01");
    assert!(state.desired_files().is_empty(), "{}", state.tree());
    // A hook that handles challenge-dns-start is a method: the target is saved.
    state.write_conf_target("");
    let hooks = state.hooks_dir();
    std::fs::create_dir_all(&hooks).expect("hooks");
    let hook = hooks.join("dns");
    std::fs::write(
        &hook,
        "#!/bin/sh\ncase \"$1\" in challenge-dns-start|challenge-dns-stop) exit 1 ;; esac\nexit 42\n",
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_output(
        &acmekeep(&state, &["want", "--no-reconcile", "*.wild.example.com"]),
        0,
        "",
        "",
    );
    assert_eq!(state.desired_files().len(), 1, "{}", state.tree());
}

#[test]
fn a_failed_wildcard_names_the_record_without_the_star() {
    // Saved by hand (not through `want`), with no way to publish the record: the run fails
    // naming the record the CA looks at.
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    state.write_desired("wild", "satisfy:\n  names: ['*.wild.example.org']\n");
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(1)
        .assert_stderr_contains("no dns-01 method published _acme-challenge.wild.example.org:");
    assert!(
        !run.stderr.contains("_acme-challenge.*"),
        "{}",
        run.describe()
    );
}
