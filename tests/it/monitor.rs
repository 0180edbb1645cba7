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
    let ok = [("target", ok_file.as_str()), ("name", OK)];
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
    let cert_id = state.live_cert_id(OK);
    assert_eq!(
        m(
            "acmekeep_certificate_info",
            &[
                ("target", ok_file.as_str()),
                ("certificate", cert_id.as_str()),
                ("ca", pebble.directory_url().as_str()),
                ("profile", ""),
            ]
        ),
        Some(1.0)
    );
    let state_of =
        |file: &str, s: &str| m("acmekeep_target_state", &[("target", file), ("state", s)]);
    assert_eq!(state_of(&ok_file, "valid"), Some(1.0));
    assert_eq!(state_of(&bad_file, "failing"), Some(1.0));
    assert_eq!(state_of("broken", "invalid"), Some(1.0));
    assert_eq!(state_of(&ok_file, "failing"), None, "one series per target");
    let bad = [("target", bad_file.as_str()), ("name", BAD)];
    assert_eq!(m("acmekeep_target_consecutive_failures", &bad), Some(1.0));
    assert_eq!(m("acmekeep_target_consecutive_failures", &ok), Some(0.0));
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

    // The kernel kills the next run half-way through writing it (SIGXFSZ at 40 kB).
    let killed = acmekeep_with(
        &state,
        &[&flag, "reconcile"],
        &RunOpts {
            wrapper: vec!["prlimit".into(), "--fsize=40000".into()],
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
