//! Prometheus metrics in the text exposition format, for node_exporter's textfile collector
//! (written after every run, atomically: [`write_textfile`]) and `acmekeep metrics`.
//!
//! Names follow Prometheus's conventions: `acmekeep_` prefix, base units (`_seconds`),
//! `_timestamp_seconds` for points in time, `_total` for counters, `_info` for labels carried
//! by a constant 1; every family has HELP and TYPE. Per target, one info series carries every
//! label (its file under `desired/` as `target`, its first name, its state, its CA, its
//! certificate's profile and key type) and the few numeric series carry `target` alone (a
//! query joins them to the info series `on(target)`), never one series per name or per error
//! message: ten thousand targets stay ten thousand series per family, and each label set is
//! written once (the file is read by node_exporter on every scrape; with every label on
//! every series it was about 1 KB per target, measured). Label values are escaped as the
//! format asks (`\\`, `\"`, `\n`).
//!
//! The text is streamed: a family's series must be contiguous, so each target is first
//! reduced to a small `Row` of numbers and borrowed names (no run record text is kept), and
//! each family is then written from the rows (made on one thread: on two, the run records
//! read at once cost more than they saved, measured), through one buffer, integers without the
//! formatting machinery. Nothing here reads a certificate: the facts come from the summaries
//! the run already holds.

use std::io::{self, Write};
use std::path::Path;

use crate::monitor::facts::{Facts, TargetFacts, TargetState};
use crate::store::run::{RunRecord, RunTotals};

/// Mode of the textfile: node_exporter runs as another user.
pub const TEXTFILE_MODE: u32 = 0o644;

/// What the metrics say of one target: numbers and borrowed names only.
struct Row<'a> {
    file: &'a str,
    name: &'a str,
    state: TargetState,
    /// The CA the target orders from (`""` for a file that cannot be used).
    ca: &'a str,
    /// The certificate in use: its profile and key type, validity and renewal time.
    profile: &'a str,
    key_type: &'static str,
    not_before: Option<i64>,
    not_after: Option<i64>,
    renew_at: Option<i64>,
    /// Failing and deferred targets only.
    failures: Option<i64>,
    failing_since: Option<i64>,
    next_attempt: Option<i64>,
    last_attempt: Option<i64>,
    last_success: Option<i64>,
}

impl<'a> Row<'a> {
    fn of(t: TargetFacts<'a>) -> Self {
        let at = |f: &Option<time::OffsetDateTime>| f.map(|t| t.unix_timestamp());
        let r = &t.record;
        let needs = matches!(t.state, TargetState::Failing | TargetState::Deferred);
        let name = t
            .target
            .and_then(|t| t.satisfy_names.first())
            .map_or(t.file, |n| n.as_str());
        Row {
            file: t.file,
            name,
            state: t.state,
            ca: t.target.map_or("", |t| t.provider.as_str()),
            profile: t.cert.and_then(|c| c.profile.as_deref()).unwrap_or(""),
            key_type: match t.cert.and_then(|c| c.key_family) {
                Some(crate::keys::KeyFamily::Rsa) => "rsa",
                Some(crate::keys::KeyFamily::Ecdsa) => "ecdsa",
                None => "",
            },
            not_before: t.cert.map(|c| c.not_before.unix_timestamp()),
            not_after: t.cert.map(|c| c.not_after.unix_timestamp()),
            renew_at: t.renew_at.map(|t| t.unix_timestamp()),
            failures: needs.then_some(i64::from(r.failures)),
            failing_since: if needs { at(&r.failing_since) } else { None },
            next_attempt: if needs { at(&r.next_attempt) } else { None },
            last_attempt: at(&r.last_attempt),
            last_success: at(&r.last_success),
        }
    }
}

/// Writes `value` as a label value: `\`, `"` and newlines escaped.
fn escaped(out: &mut impl Write, value: &str) -> io::Result<()> {
    let mut rest = value;
    while let Some(i) = rest.bytes().position(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.write_all(&rest.as_bytes()[..i])?;
        out.write_all(match rest.as_bytes()[i] {
            b'\\' => b"\\\\",
            b'"' => b"\\\"",
            _ => b"\\n",
        })?;
        rest = &rest[i + 1..];
    }
    out.write_all(rest.as_bytes())
}

/// Writes an integer in decimal, without the formatting machinery (ten thousand targets
/// make tens of thousands of them).
fn int(out: &mut impl Write, value: i64) -> io::Result<()> {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = value.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        out.write_all(b"-")?;
    }
    out.write_all(&digits[at..])
}

/// Writes one series: `name{k="v",…} value`.
fn series(
    out: &mut impl Write,
    name: &str,
    labels: &[(&str, &str)],
    value: impl std::fmt::Display,
) -> io::Result<()> {
    out.write_all(name.as_bytes())?;
    if !labels.is_empty() {
        out.write_all(b"{")?;
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(k.as_bytes())?;
            out.write_all(b"=\"")?;
            escaped(out, v)?;
            out.write_all(b"\"")?;
        }
        out.write_all(b"}")?;
    }
    writeln!(out, " {value}")
}

/// Writes a family's HELP and TYPE lines.
fn family(out: &mut impl Write, name: &str, kind: &str, help: &str) -> io::Result<()> {
    writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}")
}

/// The per-target gauges after the info series: name, help, and the value of a row (no
/// series where there is none). Each has the one label `target`, which joins it to
/// `acmekeep_target_info`.
type PerTarget = (&'static str, &'static str, fn(&Row) -> Option<i64>);
const PER_TARGET: [PerTarget; 8] = [
    (
        "acmekeep_certificate_not_before_timestamp_seconds",
        "Start of validity of the certificate each target uses.",
        |r| r.not_before,
    ),
    (
        "acmekeep_certificate_not_after_timestamp_seconds",
        "End of validity of the certificate each target uses.",
        |r| r.not_after,
    ),
    (
        "acmekeep_certificate_renewal_timestamp_seconds",
        "When the certificate each target uses is due for renewal (the CA's renewal window, else a third of its lifetime before its end).",
        |r| r.renew_at,
    ),
    (
        "acmekeep_target_consecutive_failures",
        "Failed attempts in a row of each failing or deferred target.",
        |r| r.failures,
    ),
    (
        "acmekeep_target_failing_since_timestamp_seconds",
        "When the failures of each failing or deferred target began.",
        |r| r.failing_since,
    ),
    (
        "acmekeep_target_next_attempt_timestamp_seconds",
        "Not tried again before this time: each failing or deferred target backing off.",
        |r| r.next_attempt,
    ),
    (
        "acmekeep_target_last_attempt_timestamp_seconds",
        "When each target's last attempt to obtain a certificate ended.",
        |r| r.last_attempt,
    ),
    (
        "acmekeep_target_last_success_timestamp_seconds",
        "When each target last obtained a certificate.",
        |r| r.last_success,
    ),
];

/// Writes the metrics of `facts`: per target one info series with every label, and a few
/// numeric series labelled with the target alone.
pub fn write(out: &mut impl Write, facts: &Facts) -> io::Result<()> {
    let rows: Vec<Row> = facts.targets().map(Row::of).collect();
    let info = "acmekeep_target_info";
    family(
        out,
        info,
        "gauge",
        "Each target (1): its first name, its state (valid, due, failing, deferred: the CA asked to wait, missing: never obtained, invalid: its file cannot be used), the CA it orders from, and the ACME profile and key type of the certificate it uses.",
    )?;
    for r in &rows {
        series(
            out,
            info,
            &[
                ("target", r.file),
                ("name", r.name),
                ("state", r.state.as_str()),
                ("ca", r.ca),
                ("profile", r.profile),
                ("key_type", r.key_type),
            ],
            1,
        )?;
    }
    for (name, help, value) in PER_TARGET {
        family(out, name, "gauge", help)?;
        for r in &rows {
            if let Some(v) = value(r) {
                out.write_all(name.as_bytes())?;
                out.write_all(b"{target=\"")?;
                escaped(out, r.file)?;
                out.write_all(b"\"} ")?;
                int(out, v)?;
                out.write_all(b"\n")?;
            }
        }
    }
    let mut counts = crate::monitor::facts::Counts::default();
    for r in &rows {
        counts.add(r.state);
    }
    drop(rows);
    let targets = "acmekeep_targets";
    family(out, targets, "gauge", "Targets in each state.")?;
    for (s, n) in counts.all() {
        series(out, targets, &[("state", s.as_str())], n)?;
    }
    write_run(out, facts)
}

/// The families of the last run and of all runs.
fn write_run(out: &mut impl Write, facts: &Facts) -> io::Result<()> {
    let Some(run) = &facts.last_run else {
        return Ok(());
    };
    write_last_run(out, run)?;
    write_totals(out, &run.totals)
}

/// The last run's families: when, how long, whether it went well, what it did.
fn write_last_run(out: &mut impl Write, run: &RunRecord) -> io::Result<()> {
    let gauge = |out: &mut _, name: &str, help: &str, v: &dyn std::fmt::Display| {
        family(out, name, "gauge", help).and_then(|()| series(out, name, &[], v))
    };
    if let Some(start) = run.started_at {
        gauge(
            out,
            "acmekeep_last_run_start_timestamp_seconds",
            "When the last reconcile run started.",
            &start.unix_timestamp(),
        )?;
    }
    gauge(
        out,
        "acmekeep_last_run_duration_seconds",
        "How long the last reconcile run took.",
        &format_args!("{:.3}", run.duration_seconds),
    )?;
    gauge(
        out,
        "acmekeep_last_run_success",
        "Whether the last reconcile run left every target satisfied or deferred (1) or not (0).",
        &u8::from(run.success),
    )?;
    let c = &run.counts;
    gauge(
        out,
        "acmekeep_last_run_orders",
        "Orders the CAs accepted in the last run.",
        &c.orders,
    )?;
    gauge(
        out,
        "acmekeep_last_run_ca_requests",
        "Requests the last run sent to CAs.",
        &c.ca_requests,
    )?;
    gauge(
        out,
        "acmekeep_last_run_certificates",
        "Certificates the last run obtained.",
        &c.certificates,
    )?;
    errors(
        out,
        ("acmekeep_last_run_errors", "gauge"),
        "Errors of the last run by kind: invalid_target, backing_off (not retried yet after failures), ca (the CA refused), rate_limited, other (network, local).",
        &c.errors,
    )
}

/// The families of all runs recorded.
fn write_totals(out: &mut impl Write, t: &RunTotals) -> io::Result<()> {
    let counter = |out: &mut _, name: &str, help: &str, v: u64| {
        family(out, name, "counter", help).and_then(|()| series(out, name, &[], v))
    };
    counter(
        out,
        "acmekeep_runs_total",
        "Reconcile runs recorded.",
        t.runs,
    )?;
    counter(
        out,
        "acmekeep_orders_total",
        "Orders the CAs accepted, over all runs.",
        t.counts.orders,
    )?;
    counter(
        out,
        "acmekeep_ca_requests_total",
        "Requests sent to CAs, over all runs.",
        t.counts.ca_requests,
    )?;
    counter(
        out,
        "acmekeep_certificates_obtained_total",
        "Certificates obtained, over all runs.",
        t.counts.certificates,
    )?;
    errors(
        out,
        ("acmekeep_errors_total", "counter"),
        "Errors by kind, over all runs.",
        &t.counts.errors,
    )
}

/// An errors-by-kind family: every kind, zeros included, so a rate or a comparison never
/// meets a missing series.
fn errors(
    out: &mut impl Write,
    (name, kind): (&str, &str),
    help: &str,
    counts: &std::collections::BTreeMap<String, u64>,
) -> io::Result<()> {
    family(out, name, kind, help)?;
    let known = crate::store::run::ErrorKind::ALL.map(|k| k.as_str());
    for k in known {
        series(
            out,
            name,
            &[("kind", k)],
            counts.get(k).copied().unwrap_or(0),
        )?;
    }
    // Kinds a newer version recorded.
    for (k, n) in counts.iter().filter(|(k, _)| !known.contains(&k.as_str())) {
        series(out, name, &[("kind", k)], n)?;
    }
    Ok(())
}

/// Writes the metrics to the file at `path` atomically: a hidden temp file in the same
/// directory (mode 0644 from its first byte, never through a link), fsynced, renamed over
/// `path`, the directory fsynced. node_exporter reads only `*.prom` files, so it never sees
/// the temp file; a reader sees the old text or the new, never part of one. Temp files that
/// an interrupted write left are removed first.
pub fn write_textfile(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the metrics file path names no file",
        ));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    remove_leftovers(dir, &prefix);
    let tmp = dir.join(format!("{prefix}{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(TEXTFILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(TEXTFILE_MODE))
        .and_then(|()| {
            let mut w = io::BufWriter::with_capacity(256 * 1024, &file);
            fill(&mut w)?;
            w.flush()
        })
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    crate::files::sync_dir(dir)
}

/// Removes the temp files (`.<name>.<pid>.tmp`) earlier writes were interrupted in, and
/// anything but a directory planted under such a name (unlinking never follows a link): one
/// writer at a time writes a file (the state directory's lock).
fn remove_leftovers(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let leftover = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if leftover && e.file_type().is_ok_and(|t| !t.is_dir()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(value: &str) -> String {
        let mut out = Vec::new();
        escaped(&mut out, value).expect("write");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("plain.example.org"), "plain.example.org");
        assert_eq!(label(r#"a"b"#), r#"a\"b"#);
        assert_eq!(label(r"a\b"), r"a\\b");
        assert_eq!(label("a\nb"), r"a\nb");
        assert_eq!(label("\\\"\n"), r#"\\\"\n"#);
        assert_eq!(label("ünïcode"), "ünïcode");
    }

    #[test]
    fn a_series_line() {
        let mut out = Vec::new();
        series(&mut out, "m", &[("a", "x\"y"), ("b", "")], 1.5).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "m{a=\"x\\\"y\",b=\"\"} 1.5\n"
        );
        let mut out = Vec::new();
        series(&mut out, "m", &[], 7).expect("write");
        assert_eq!(String::from_utf8(out).expect("utf-8"), "m 7\n");
    }

    #[test]
    fn integers_are_written_in_decimal_as_display_writes_them() {
        for v in [0, 7, -7, 10, 1_796_603_029, -1_000_000, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            int(&mut out, v).expect("write");
            assert_eq!(String::from_utf8(out).expect("utf-8"), v.to_string());
        }
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("acmekeep.prom");
        write_textfile(&path, |w| w.write_all(b"old 1\n")).expect("first write");
        // A write that fails half-way (a full disk, a killed writer's last act).
        let failed = write_textfile(&path, |w| {
            w.write_all(b"new 1\npartial")?;
            Err(io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "old 1\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["acmekeep.prom"], "no temp file left");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn leftovers_of_an_interrupted_write_are_removed_and_links_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("acmekeep.prom");
        // A killed writer's temp file, and a link someone planted at our temp name.
        std::fs::write(dir.path().join(".acmekeep.prom.4242.tmp"), "partial").expect("write");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").expect("write");
        let ours = dir
            .path()
            .join(format!(".acmekeep.prom.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &ours).expect("symlink");
        write_textfile(&path, |w| w.write_all(b"m 1\n")).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "m 1\n");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["acmekeep.prom", "victim"]);
    }
}
