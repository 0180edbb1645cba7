//! Monitoring end to end: the Prometheus textfile a run leaves (checked by promtool, values
//! against the certificates Pebble issued), `acmekeep metrics`, and a write interrupted by
//! the kernel.

use std::path::Path;
use std::process::Command;

use time::OffsetDateTime;

use crate::support::*;

/// The value of the series `name` whose labels include every pair of `labels`, if exactly
/// one matches.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let ok = n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse().expect("a number"))
        })
        .collect();
    match found[..] {
        [v] => Some(v),
        [] => None,
        _ => panic!("{name} {labels:?} matches {} series", found.len()),
    }
}

/// `promtool check metrics` on `text`: its complaints, empty when there are none.
fn promtool_check(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/install-deps installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said
    } else {
        format!("promtool failed ({}): {said}", out.status)
    }
}

fn unix(t: OffsetDateTime) -> f64 {
    t.unix_timestamp() as f64
}

/// (not_before, not_after) of `live/<name>/cert`.
fn live_validity(state: &StateDir, name: &str) -> (OffsetDateTime, OffsetDateTime) {
    let der = pem_certs(&state.read_live(name, "cert")).remove(0);
    let v = parse_cert(&der).validity().clone();
    (v.not_before.to_datetime(), v.not_after.to_datetime())
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn the_metrics_file_describes_pebble_certificates_and_passes_promtool() {
    const OK: &str = "ok.metrics.example.org";
    const BAD: &str = "bad.metrics.example.org";
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    let node = state.scratch_dir("node-exporter");
    let prom = node.join("acmekeep.prom");
    let flag = format!("--metrics-file={}", prom.display());
    acmekeep(&state, &[&flag, "want", OK]).assert_success();
    let ok_file = state.desired_file_for(OK);
    // A target the CA refuses (its DNS answers SERVFAIL to Pebble), and one that cannot be read.
    pebble.dns_set_servfail(BAD);
    acmekeep(&state, &["want", "--no-reconcile", BAD]).assert_success();
    let bad_file = state.desired_file_for(BAD);
    state.write_desired("broken", "satisfy: [unclosed\n");
    let run = acmekeep(&state, &[&flag, "reconcile"]);
    run.assert_code(1);

    let text = std::fs::read_to_string(&prom).expect("the metrics file");
    assert_eq!(promtool_check(&text), "", "{text}");
    assert_eq!(mode(&prom), 0o644);
    let left: Vec<_> = std::fs::read_dir(&node)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["acmekeep.prom"], "nothing but the file");

    // The certificate Pebble issued, as it is on disk.
    let (not_before, not_after) = live_validity(&state, OK);
    // The numeric series carry the target alone; its info series every label.
    let ok = [("target", ok_file.as_str())];
    let m = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    assert_eq!(
        m("acmekeep_certificate_not_after_timestamp_seconds", &ok),
        Some(unix(not_after))
    );
    assert_eq!(
        m("acmekeep_certificate_not_before_timestamp_seconds", &ok),
        Some(unix(not_before))
    );
    let renewal = m("acmekeep_certificate_renewal_timestamp_seconds", &ok).expect("renewal");
    let third = unix(not_after) - (unix(not_after) - unix(not_before)) / 3.0;
    assert!(
        (renewal - third).abs() <= 1.0 + (unix(not_after) - unix(not_before)) / 3.0,
        "renewal {renewal}, a third before the end {third}"
    );
    assert_eq!(
        m(
            "acmekeep_target_info",
            &[
                ("target", ok_file.as_str()),
                ("name", OK),
                ("state", "valid"),
                ("ca", pebble.directory_url().as_str()),
                ("profile", ""),
                ("key_type", "rsa"),
            ]
        ),
        Some(1.0)
    );
    let state_of =
        |file: &str, s: &str| m("acmekeep_target_info", &[("target", file), ("state", s)]);
    assert_eq!(state_of(&ok_file, "valid"), Some(1.0));
    assert_eq!(state_of(&bad_file, "failing"), Some(1.0));
    assert_eq!(state_of("broken", "invalid"), Some(1.0));
    assert_eq!(state_of(&ok_file, "failing"), None, "one series per target");
    // Labels once per target: every other per-target series has `target` alone.
    for line in text.lines().filter(|l| l.contains("{target=")) {
        let labels = line.split_once('{').expect("labels").1;
        assert!(
            line.starts_with("acmekeep_target_info{") || !labels.contains(','),
            "{line}"
        );
    }
    let bad = [("target", bad_file.as_str())];
    assert_eq!(m("acmekeep_target_consecutive_failures", &bad), Some(1.0));
    assert_eq!(
        m("acmekeep_target_consecutive_failures", &ok),
        None,
        "failing and deferred targets only"
    );
    let record = run_record(&state, &bad_file);
    let attempt = OffsetDateTime::parse(
        record["last_attempt"].as_str().expect("last attempt"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert_eq!(
        m("acmekeep_target_failing_since_timestamp_seconds", &bad),
        Some(unix(attempt))
    );
    assert_eq!(
        m("acmekeep_target_last_attempt_timestamp_seconds", &bad),
        Some(unix(attempt))
    );
    assert!(
        m("acmekeep_target_next_attempt_timestamp_seconds", &bad).expect("next") > unix(attempt)
    );
    assert!(m("acmekeep_target_last_success_timestamp_seconds", &ok).is_some());
    assert_eq!(
        m("acmekeep_target_last_success_timestamp_seconds", &bad),
        None
    );
    for (s, n) in [
        ("valid", 1.0),
        ("failing", 1.0),
        ("invalid", 1.0),
        ("due", 0.0),
    ] {
        assert_eq!(m("acmekeep_targets", &[("state", s)]), Some(n), "{s}");
    }

    // The run: two so far (want's and this one); this one ordered once and failed.
    assert_eq!(m("acmekeep_runs_total", &[]), Some(2.0));
    assert_eq!(m("acmekeep_last_run_success", &[]), Some(0.0));
    assert_eq!(m("acmekeep_last_run_orders", &[]), Some(1.0));
    assert_eq!(m("acmekeep_orders_total", &[]), Some(2.0));
    assert_eq!(m("acmekeep_last_run_certificates", &[]), Some(0.0));
    assert_eq!(m("acmekeep_certificates_obtained_total", &[]), Some(1.0));
    assert!(m("acmekeep_last_run_ca_requests", &[]).expect("requests") >= 3.0);
    assert_eq!(m("acmekeep_last_run_errors", &[("kind", "ca")]), Some(1.0));
    assert_eq!(
        m("acmekeep_last_run_errors", &[("kind", "invalid_target")]),
        Some(1.0)
    );
    assert_eq!(
        m("acmekeep_last_run_errors", &[("kind", "other")]),
        Some(0.0)
    );
    let start = m("acmekeep_last_run_start_timestamp_seconds", &[]).expect("start");
    assert!((unix(OffsetDateTime::now_utc()) - start).abs() < 300.0);

    // `acmekeep metrics` prints the same text, from the state directory alone.
    let printed = acmekeep(&state, &["metrics"]);
    printed.assert_success();
    assert_eq!(printed.stdout, text);
    assert_eq!(printed.stderr, "");
}

#[test]
fn a_metrics_write_killed_half_way_leaves_the_old_file_whole() {
    // Many targets at a CA that refuses connections: every run fails at once and the metrics
    // file is far larger than anything else a run writes.
    let state = StateDir::new();
    let port = free_port();
    state.write_conf_target(&format!(
        "request:\n  provider: http://127.0.0.1:{port}/directory\n"
    ));
    state.write_standard_responses();
    for i in 0..300 {
        state.write_desired(
            &format!("t{i:03}"),
            &format!("satisfy:\n  names: [t{i:03}.killed.example.org]\n"),
        );
    }
    let prom = state.scratch_dir("node-exporter").join("acmekeep.prom");
    let flag = format!("--metrics-file={}", prom.display());
    acmekeep(&state, &[&flag, "reconcile"]).assert_code(1);
    let whole = std::fs::read_to_string(&prom).expect("the metrics file");
    assert_eq!(promtool_check(&whole), "", "{whole}");
    assert!(whole.len() > 100_000, "{} bytes", whole.len());

    // The kernel kills the next run half-way through writing it (SIGXFSZ): at a size above
    // every other file the run writes (the run records' one-file cache, rewritten when the
    // metrics read the records: about half the metrics file here).
    let cache =
        std::fs::metadata(state.path().join(".acmekeep/target-records")).map_or(0, |m| m.len());
    let limit = (cache + whole.len() as u64) / 2;
    assert!(cache + 10_000 < limit, "cache {cache} bytes, limit {limit}");
    let fsize = format!("--fsize={limit}");
    let killed = acmekeep_with(
        &state,
        &[&flag, "reconcile"],
        &RunOpts {
            wrapper: vec!["prlimit".into(), fsize],
            ..RunOpts::default()
        },
    );
    assert_eq!(
        killed.code,
        None,
        "killed by a signal: {}",
        killed.describe()
    );
    assert_eq!(
        std::fs::read_to_string(&prom).expect("the metrics file"),
        whole,
        "the old file, whole"
    );
    let dir = prom.parent().expect("dir");
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "acmekeep.prom")
            .collect()
    };
    let left = leftovers();
    assert!(
        left.len() == 1 && left[0].starts_with(".acmekeep.prom.") && left[0].ends_with(".tmp"),
        "the killed write's hidden temp file: {left:?}"
    );

    // The next run writes it anew and removes what the killed one left.
    acmekeep(&state, &[&flag, "reconcile"]).assert_code(1);
    let again = std::fs::read_to_string(&prom).expect("the metrics file");
    assert_eq!(promtool_check(&again), "");
    // The killed run was recorded before its metrics were written.
    assert!(again.contains("\nacmekeep_runs_total 3\n"), "{again}");
    assert_eq!(leftovers(), Vec::<String>::new());
}

#[test]
fn the_shipped_alerting_rules_pass_promtool() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus");
    for args in [
        &["check", "rules", "acmekeep.rules.yml"][..],
        &["test", "rules", "acmekeep.rules.test.yml"][..],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian package prometheus; scripts/install-deps installs it)");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Reports read every target's run record from `.acmekeep/target-records` once a run has
/// cached them (ten thousand small files were most of what the metrics cost an idle run):
/// byte for byte what the record files give, and a record a run writes is in its metrics and
/// in the cache it leaves.
#[test]
fn metrics_from_the_run_record_cache_are_the_records_and_see_a_new_attempt() {
    const OK: &str = "ok.records.example.org";
    const BAD: &str = "bad.records.example.org";
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    let prom = state.scratch_dir("node-exporter").join("acmekeep.prom");
    let flag = format!("--metrics-file={}", prom.display());
    acmekeep(&state, &["want", OK]).assert_success();
    pebble.dns_set_servfail(BAD);
    acmekeep(&state, &["want", "--no-reconcile", BAD]).assert_success();
    acmekeep(&state, &["reconcile"]).assert_code(1);
    let bad = state.desired_file_for(BAD);
    let failures = |text: &str| {
        sample(
            text,
            "acmekeep_target_consecutive_failures",
            &[("target", bad.as_str())],
        )
    };
    let cache = state.join(".acmekeep/target-records");
    // An idle run (the failed target backs off) that writes the metrics caches the records.
    acmekeep(&state, &[&flag, "reconcile"]);
    assert!(cache.exists(), "{}", state.tree());
    let text = std::fs::read_to_string(&prom).expect("the metrics file");
    assert_eq!(failures(&text), Some(1.0), "{text}");
    let cached = acmekeep(&state, &["metrics"]);
    cached.assert_success();
    assert_eq!(cached.stdout, text);
    std::fs::remove_file(&cache).expect("rm cache");
    let read = acmekeep(&state, &["metrics"]);
    assert_eq!(read.stdout, text, "the same from the record files");
    assert!(!cache.exists(), "`metrics` writes nothing");

    // Cached again, then a new attempt's record: in that run's file, and in the cache that
    // run brought up to date.
    acmekeep(&state, &[&flag, "reconcile"]);
    assert!(cache.exists());
    acmekeep(&state, &[&flag, "reconcile", "--force", &bad]).assert_code(1);
    let text = std::fs::read_to_string(&prom).expect("the metrics file");
    assert_eq!(failures(&text), Some(2.0), "{text}");
    assert!(
        std::fs::read_to_string(&cache)
            .expect("the cache")
            .contains("\"failures\":2"),
        "written by the run that wrote the record"
    );
    assert_eq!(acmekeep(&state, &["metrics"]).stdout, text);
}

#[test]
fn the_metrics_file_is_a_conf_target_setting() {
    let state = StateDir::new();
    let port = free_port();
    let prom = state.scratch_dir("node-exporter").join("acmekeep.prom");
    let conf = |path: &str| {
        format!(
            "request:\n  provider: http://127.0.0.1:{port}/directory\nmonitor:\n  metrics-file: {path}\n"
        )
    };
    state.write_conf_target(&conf(&prom.to_string_lossy()));
    state.write_desired("t", "satisfy:\n  names: [t.example.org]\n");
    acmekeep(&state, &["reconcile"]).assert_code(1);
    let text = std::fs::read_to_string(&prom).expect("the metrics file");
    assert_eq!(promtool_check(&text), "");
    assert!(
        text.contains("acmekeep_last_run_errors{kind=\"other\"} 1\n"),
        "{text}"
    );

    // A relative path is refused with a warning; the run's outcome stands.
    state.write_conf_target(&conf("acmekeep.prom"));
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(1).assert_stderr_contains(
        "acmekeep: warning: no metrics written: monitor.metrics-file in conf/target must be an absolute path, not \"acmekeep.prom\"",
    );
    // `monitor` belongs in conf/target: in a target file it is named and ignored.
    state.write_desired(
        "t",
        "satisfy:\n  names: [t.example.org]\nmonitor:\n  metrics-file: /x\n",
    );
    acmekeep(&state, &["-v", "reconcile"]).assert_stderr_contains(
        "desired/t: `monitor` is read from conf/target only (ignored here)",
    );
    // A directory that cannot be written: one warning, the outcome unchanged.
    state.write_conf_target(&conf("/proc/acmekeep.prom"));
    acmekeep(&state, &["reconcile"])
        .assert_code(1)
        .assert_stderr_contains(
            "acmekeep: warning: cannot write the metrics file /proc/acmekeep.prom: ",
        );
}

/// The first line of `acmekeep check`'s output and the rest.
fn check_lines(run: &Run) -> (String, String) {
    let (first, rest) = run.stdout.split_once('\n').unwrap_or((&run.stdout, ""));
    (first.to_owned(), rest.to_owned())
}

#[test]
fn check_follows_the_plugin_conventions_on_a_real_state_directory() {
    const OK: &str = "ok.check.example.org";
    const BAD: &str = "bad.check.example.org";
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    acmekeep(&state, &["want", OK]).assert_success();

    // OK: one status line with performance data; nothing else.
    let ok = acmekeep(&state, &["check"]);
    ok.assert_code(0);
    let (line, rest) = check_lines(&ok);
    assert!(
        line.starts_with("ACMEKEEP OK - 1 target(s), none needs attention; soonest expiry in "),
        "{line}"
    );
    assert!(
        line.contains(
            " | targets=1 valid=1 due=0 failing=0 deferred=0 missing=0 invalid=0 min_time_left="
        ),
        "{line}"
    );
    assert_eq!(rest, "");
    // Thresholds: a fraction of the lifetime (the whole of it: a warning at once), or a time
    // left.
    acmekeep(&state, &["check", "--warning", "1"]).assert_code(1);
    acmekeep(&state, &["check", "--warning", "100%", "--critical", "99%"]).assert_code(1);
    let crit = acmekeep(&state, &["check", "--critical", "100000d"]);
    crit.assert_code(2);
    let (line, rest) = check_lines(&crit);
    assert!(
        line.starts_with(
            "ACMEKEEP CRITICAL - 1 critical of 1 target(s): ok.check.example.org expires in "
        ),
        "{line}"
    );
    assert!(
        rest.starts_with(&format!(
            "CRITICAL: {OK} (desired/{})",
            state.desired_file_for(OK)
        )),
        "{rest}"
    );

    // A target the CA refuses, which has never had a certificate: CRITICAL, with the cause
    // and the command that retries it.
    pebble.dns_set_servfail(BAD);
    acmekeep(&state, &["want", "--no-reconcile", BAD]).assert_success();
    let bad_file = state.desired_file_for(BAD);
    acmekeep(&state, &["reconcile"]).assert_code(1);
    let bad = acmekeep(&state, &["check"]);
    bad.assert_code(2);
    let (line, rest) = check_lines(&bad);
    assert!(
        line.starts_with(&format!(
            "ACMEKEEP CRITICAL - 1 critical of 2 target(s): {BAD} no certificate, failing for "
        )),
        "{line}"
    );
    assert!(
        line.contains(" | targets=2 valid=1 due=0 failing=1 "),
        "{line}"
    );
    let lines: Vec<&str> = rest.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "CRITICAL: {BAD} (desired/{bad_file}): no certificate, failing for "
        )),
        "{rest}"
    );
    assert!(
        lines[1].starts_with("  last error: ") && lines[1].contains("could not resolve"),
        "{rest}"
    );
    assert_eq!(
        lines[2],
        format!(
            "  retry: acmekeep --state {} reconcile --force {bad_file}",
            state.path().display()
        )
    );
    // Only some targets, by name or file, each reported.
    let one = acmekeep(&state, &["check", OK]);
    one.assert_code(0);
    let (line, rest) = check_lines(&one);
    assert!(
        line.starts_with("ACMEKEEP OK - 1 target(s), none needs attention"),
        "{line}"
    );
    assert!(
        rest.starts_with(&format!(
            "OK: {OK} (desired/{}): expires in ",
            state.desired_file_for(OK)
        )),
        "{rest}"
    );
    acmekeep(&state, &["check", &bad_file]).assert_code(2);
    // The same as JSON.
    let json = acmekeep(&state, &["check", "--json"]);
    json.assert_code(2);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["status"], "CRITICAL");
    assert_eq!(doc["exit_code"], 2);
    assert_eq!(doc["counts"]["failing"], 1);
    assert_eq!(doc["counts"]["targets"], 2);
    assert_eq!(doc["targets"][0]["file"], bad_file.as_str());
    assert_eq!(doc["targets"][0]["level"], "CRITICAL");
    assert!(doc["targets"][1].is_null(), "{doc}");

    // UNKNOWN: what cannot be told.
    let unknown = acmekeep(&state, &["check", "nosuch.example.org"]);
    unknown.assert_code(3);
    assert_eq!(
        unknown.stdout,
        "ACMEKEEP UNKNOWN - no such target in desired/: nosuch.example.org\n"
    );
    acmekeep(&state, &["check", "--warning", "soon"]).assert_code(3);
    // A usage error too (clap's own exit code, 2, is CRITICAL to Nagios), wherever the
    // global options are.
    let usage = acmekeep(&state, &["check", "--no-such-option"]);
    usage.assert_code(3);
    usage.assert_stderr_contains("unexpected argument '--no-such-option'");
    acmekeep(&state, &["-v", "check", "--warning"]).assert_code(3);
    acmekeep(&state, &["status", "--no-such-option"]).assert_code(2);
    let gone = StateDir::new();
    std::fs::remove_dir_all(gone.path()).expect("remove");
    let unreadable = acmekeep(&gone, &["check"]);
    unreadable.assert_code(3);
    assert!(
        unreadable.stdout.starts_with("ACMEKEEP UNKNOWN - "),
        "{}",
        unreadable.describe()
    );

    // `status`: the same states, a summary line scripts can rely on, and --expiring.
    let status = acmekeep(&state, &["status"]);
    status.assert_success();
    assert!(
        status.stdout.ends_with(
            "\nSummary: 2 targets: 1 valid, 0 due, 1 failing, 0 deferred, 0 missing, 0 invalid\n"
        ),
        "{}",
        status.stdout
    );
    let soon = acmekeep(&state, &["status", "--expiring", "30d"]);
    soon.assert_success();
    assert!(soon.stdout.contains(&bad_file), "no certificate: listed");
    assert!(!soon.stdout.contains(OK), "{}", soon.stdout);
    assert!(
        soon.stdout.ends_with(
            "\nSummary: 1 targets: 0 valid, 0 due, 1 failing, 0 deferred, 0 missing, 0 invalid\n"
        ),
        "{}",
        soon.stdout
    );
    let all = acmekeep(&state, &["status", "--expiring", "100000d", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&all.stdout).expect("JSON");
    assert_eq!(doc["schema_version"], 2);
    assert_eq!(doc["summary"]["targets"], 2);
    assert_eq!(doc["summary"]["valid"], 1);
    assert_eq!(doc["summary"]["failing"], 1);
    assert_eq!(target_status(&doc, &bad_file)["state"], "failing");
    assert!(target_status(&doc, &bad_file)["failing_since"].is_string());
    assert!(target_status(&doc, &state.desired_file_for(OK))["last_success"].is_string());
    acmekeep(&state, &["status", "--expiring", "soon"]).assert_code(2);
}

/// The mails a fake sendmail received, in order: its arguments, then the message.
fn mails(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("list mails")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| n.trim_start_matches("mail.").parse::<u32>().unwrap_or(0));
    names
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(n)).expect("read mail"))
        .collect()
}

#[test]
fn the_notify_hook_mails_the_cause_and_the_retry_at_most_once_a_day() {
    use std::os::unix::fs::PermissionsExt;
    const OK: &str = "ok.notify.example.org";
    const BAD: &str = "bad.notify.example.org";
    // Certificates live 30 s: renewal is due after 15 s.
    let pebble = Pebble::start(PebbleOpts {
        cert_validity_secs: Some(30),
        ..PebbleOpts::fast()
    });
    let state = StateDir::standard(&pebble);
    // The CA bundle outlives Pebble (the last run below finds the CA gone).
    let bundle = state.scratch_dir("ca").join("ca.pem");
    std::fs::copy(pebble.ca_bundle_path(), &bundle).expect("copy the CA bundle");
    let conf = std::fs::read_to_string(state.join("conf/target")).expect("conf/target");
    let json = |s: &str| serde_json::to_string(s).expect("JSON");
    state.write_conf_target(&conf.replace(
        &json(&pebble.ca_bundle_path().to_string_lossy()),
        &json(&bundle.to_string_lossy()),
    ));

    // The hook as shipped, configured to mail through a fake sendmail.
    let hooks = state.hooks_dir();
    std::fs::create_dir_all(&hooks).expect("hooks dir");
    let hook = hooks.join("notify");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/hooks/notify"),
        &hook,
    )
    .expect("install the hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let outbox = state.scratch_dir("outbox");
    let sendmail = state.scratch_dir("bin").join("sendmail");
    std::fs::write(
        &sendmail,
        format!(
            "#!/bin/sh\nn=$(ls {0} | wc -l)\n{{ printf '%s\\n' \"$*\"; cat; }} > {0}/mail.$n\n",
            outbox.display()
        ),
    )
    .expect("fake sendmail");
    std::fs::set_permissions(&sendmail, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let conf_dir = state.scratch_dir("default");
    std::fs::write(
        conf_dir.join("acme-notify"),
        format!(
            "NOTIFY_TO=ops@example.org\nSENDMAIL={}\n",
            sendmail.display()
        ),
    )
    .expect("acme-notify");
    let bin = Path::new(env!("CARGO_BIN_EXE_acmekeep"))
        .parent()
        .expect("bin dir");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let opts = RunOpts {
        env: vec![
            (
                "ACME_NOTIFY_CONFIG_DIRS".into(),
                conf_dir.display().to_string(),
            ),
            ("PATH".into(), path),
        ],
        ..RunOpts::default()
    };
    let run = |args: &[&str]| acmekeep_with(&state, args, &opts);

    run(&["want", OK]).assert_success();
    let ok_file = state.desired_file_for(OK);
    assert_eq!(mails(&outbox), Vec::<String>::new(), "nothing failed");

    // A target the CA refuses: one mail with the cause and the command that retries.
    pebble.dns_set_servfail(BAD);
    run(&["want", "--no-reconcile", BAD]).assert_success();
    let bad_file = state.desired_file_for(BAD);
    run(&["reconcile"]).assert_code(1);
    let sent = mails(&outbox);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let mail = &sent[0];
    assert!(
        mail.starts_with("-i -- ops@example.org\nTo: ops@example.org\nSubject: acmekeep on "),
        "{mail}"
    );
    assert!(
        mail.contains(&format!(": no certificate for {BAD}\n")),
        "{mail}"
    );
    assert!(mail.contains(&format!("\n  {BAD}\n")), "{mail}");
    assert!(
        mail.contains(&format!(
            "CRITICAL: {BAD} (desired/{bad_file}): no certificate, failing"
        )),
        "{mail}"
    );
    assert!(
        mail.contains("  last error: ") && mail.contains("could not resolve"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!(
            "  retry: acmekeep --state {} reconcile --force {bad_file}\n",
            state.path().display()
        )),
        "{mail}"
    );

    // Failing again the same day: no second mail.
    run(&["reconcile", "--force"]).assert_code(1);
    assert_eq!(mails(&outbox).len(), 1);
    // A day later: the next one.
    let stamp = state.join(format!(".acmekeep/notified/reconcile-failed:{BAD}"));
    let day_ago = std::process::Command::new("touch")
        .args(["-d", "25 hours ago"])
        .arg(&stamp)
        .status()
        .expect("touch");
    assert!(day_ago.success());
    run(&["reconcile", "--force"]).assert_code(1);
    assert_eq!(mails(&outbox).len(), 2);

    // A certificate due for renewal whose CA is gone: it expires before the next attempt may
    // renew it, the new event.
    let (not_before, not_after) = live_validity(&state, OK);
    drop(pebble);
    let due = not_before + (not_after - not_before) / 2 + time::Duration::seconds(1);
    let wait: time::Duration = due - OffsetDateTime::now_utc();
    if wait.is_positive() {
        std::thread::sleep(std::time::Duration::try_from(wait).expect("positive"));
    }
    run(&["reconcile"]).assert_code(1);
    let sent = mails(&outbox);
    assert_eq!(sent.len(), 4, "{sent:#?}");
    assert!(
        sent[2].contains(&format!(": no certificate for {OK}\n")),
        "{}",
        sent[2]
    );
    assert!(
        !sent[2].contains(&format!("\n  {BAD}\n")),
        "mailed about today: {}",
        sent[2]
    );
    let expiring = &sent[3];
    assert!(
        expiring.contains(&format!(
            ": certificate for {OK} expires before it can be renewed\n"
        )),
        "{expiring}"
    );
    assert!(
        expiring.contains(&format!("(desired/{ok_file}): expires in ")),
        "{expiring}"
    );
    assert!(
        expiring.contains(&format!(
            "  retry: acmekeep --state {} reconcile --force {ok_file}\n",
            state.path().display()
        )),
        "{expiring}"
    );

    // Not configured: no mail, no complaint.
    std::fs::remove_file(conf_dir.join("acme-notify")).expect("unconfigure");
    std::fs::remove_dir_all(state.join(".acmekeep/notified")).expect("forget");
    run(&["reconcile", "--force"]).assert_code(1);
    assert_eq!(mails(&outbox).len(), 4);
}

/// `acmekeep --state <state> --batch <args>` run as `nobody` (uid and gid 65534, no
/// supplementary groups) through `setpriv`, from a hard link (or copy) of the binary beside
/// the state directory, so that the user needs no access to the build tree. `None` when the
/// test cannot switch users (not root, or no setpriv).
fn as_nobody(state: &StateDir, args: &[&str]) -> Option<Run> {
    use std::os::unix::fs::PermissionsExt;
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("running as another user needs root and /usr/bin/setpriv; skipping");
        return None;
    }
    // The temporary directory holding the state directory is root's 0700.
    let top = state.path().parent().expect("state has a parent");
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = top.join("acmekeep");
    if !bin.exists() {
        let built = env!("CARGO_BIN_EXE_acmekeep");
        std::fs::hard_link(built, &bin)
            .or_else(|_| std::fs::copy(built, &bin).map(drop))
            .expect("the binary beside the state directory");
    }
    let started = std::time::Instant::now();
    let out = Command::new("timeout")
        .args([
            "120",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(&bin)
        .arg("--state")
        .arg(state.path())
        .arg("--batch")
        .args(args)
        .env_remove("ACME_STATE_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run setpriv");
    Some(Run {
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        status: Some(out.status),
        code: out.status.code(),
        timed_out: out.status.code() == Some(124),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// `text` with every number replaced by `N`: the time left and the time failing change
/// between two runs a second apart.
fn digits_out(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

#[test]
fn check_metrics_and_status_work_as_a_user_who_can_read_live_but_not_the_keys() {
    const OK: &str = "ok.nonroot.example.org";
    const BAD: &str = "bad.nonroot.example.org";
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    acmekeep(&state, &["want", OK]).assert_success();
    pebble.dns_set_servfail(BAD);
    acmekeep(&state, &["want", "--no-reconcile", BAD]).assert_success();
    acmekeep(&state, &["reconcile"]).assert_code(1);
    // acmetool's modes: accounts/ and keys/ are root's alone.
    assert_eq!(state.mode("accounts"), 0o700);
    assert_eq!(state.mode("keys"), 0o700);
    let root_check = acmekeep(&state, &["check"]);
    root_check.assert_code(2);
    let root_metrics = acmekeep(&state, &["metrics"]);
    root_metrics.assert_success();
    let root_status = acmekeep(&state, &["status"]);
    root_status.assert_success();
    let before = state.tree();

    // Twice: with the certificate summaries cached (what a run leaves), and without them
    // (every certificate read from its files; nothing can be cached as this user).
    for cached in [true, false] {
        if !cached {
            std::fs::remove_file(state.join(".acmekeep/cert-summaries")).expect("rm cache");
        }
        let Some(check) = as_nobody(&state, &["check"]) else {
            return;
        };
        // The same verdict as root's, and nothing on stderr about what it could not read.
        check.assert_code(2);
        assert_eq!(
            digits_out(&check.stdout),
            digits_out(&root_check.stdout),
            "cached: {cached}"
        );
        assert_eq!(check.stderr, "", "{}", check.describe());

        let metrics = as_nobody(&state, &["metrics"]).expect("as nobody");
        metrics.assert_success();
        assert_eq!(metrics.stdout, root_metrics.stdout, "cached: {cached}");
        assert_eq!(metrics.stderr, "", "{}", metrics.describe());

        let status = as_nobody(&state, &["status"]).expect("as nobody");
        status.assert_success();
        assert_eq!(status.stderr, "", "{}", status.describe());
        // The same table, without the accounts (which it says it cannot read).
        let root_body = root_status.stdout.split_once("\n\n").expect("a table").1;
        let (head, body) = status.stdout.split_once("\n\n").expect("a table");
        assert_eq!(digits_out(body), digits_out(root_body));
        assert!(
            head.ends_with("\nAccounts: not readable as this user (accounts/ is root's)"),
            "{head}"
        );
        let json = as_nobody(&state, &["status", "--json"]).expect("as nobody");
        json.assert_success();
        let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
        assert_eq!(doc["unreadable"], serde_json::json!(["accounts", "keys"]));
        assert_eq!(doc["accounts"], serde_json::json!([]));
        assert_eq!(doc["summary"]["valid"], 1);
        assert_eq!(doc["summary"]["failing"], 1);
    }
    // -v says what was left out.
    let verbose = as_nobody(&state, &["-v", "check"]).expect("as nobody");
    verbose.assert_code(2);
    assert!(
        verbose.stderr.contains("accounts: Permission denied")
            && verbose.stderr.contains("keys: Permission denied"),
        "{}",
        verbose.describe()
    );
    // Nothing written (the summary cache removed above stays removed).
    let after = state.tree();
    let without_cache = |t: &str| {
        t.lines()
            .filter(|l| !l.contains("cert-summaries"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(without_cache(&after), without_cache(&before));
    assert!(!after.contains("cert-summaries"), "{after}");
}

/// The `OnFailure=` wiring shipped in contrib/systemd (on-failure.conf, a drop-in for
/// acmekeep.service, and acmekeep-failed.service) passes `systemd-analyze verify` beside the
/// service quickstart installs (its template, rendered as quickstart renders it).
#[test]
fn the_on_failure_units_pass_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed (scripts/install-deps installs it); skipping");
        return;
    };
    assert!(version.status.success());
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let read = |name: &str| std::fs::read_to_string(contrib.join(name)).expect(name);
    let dir = tempfile::tempdir().expect("temp dir");
    let service: String = read("acmekeep.service")
        .lines()
        .filter(|l| !l.starts_with("#@"))
        .map(|l| {
            l.replace("@COMMAND@", "/bin/true --batch reconcile")
                .replace("@READ_WRITE_PATHS@", "-/var/lib/acme")
                + "\n"
        })
        .collect();
    std::fs::write(dir.path().join("acmekeep.service"), service).expect("write");
    let drop_in = dir.path().join("acmekeep.service.d");
    std::fs::create_dir(&drop_in).expect("mkdir");
    let wiring = read("on-failure.conf");
    assert!(
        wiring.contains("\nOnFailure=acmekeep-failed.service\n"),
        "{wiring}"
    );
    std::fs::write(drop_in.join("on-failure.conf"), wiring).expect("write");
    std::fs::write(
        dir.path().join("acmekeep-failed.service"),
        read("acmekeep-failed.service"),
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("acmekeep.service"))
        .arg(dir.path().join("acmekeep-failed.service"))
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about other units on the host are not ours; the drop-in's are (an unknown key
    // there is only a warning, so the exit status alone would not tell).
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("acmekeep") || l.contains("on-failure"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}
