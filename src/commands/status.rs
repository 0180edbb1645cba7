//! `acmekeep status [--json|--wide] [--expiring DURATION]`: read-only, takes no lock, makes no
//! network request. The JSON schema is documented in doc/status-json.md and held to it by
//! tests. A target's state is [`facts::target_state`]'s, the word `check` and the metrics use,
//! decided from the same [`plan::plan`] verdict a run carries out; a target the plan defers
//! (its backoff, or the CA's rate) says until when in its row and in `waiting_until`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::StatusArgs;
use crate::exit::config_error;
use crate::monitor::facts::{self, Counts, TargetState};
use crate::plan::{Policy, TargetPlan};
use crate::settings::Settings;
use crate::{cert, plan};

use crate::store::{CertState, Inventory, Store, TargetError, TargetRecord};
use crate::target::Target;
use crate::world::{Scope, World};

/// Version of the JSON document; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Serialize)]
struct StatusDoc<'a> {
    schema_version: u32,
    state_dir: String,
    generated_at: String,
    accounts: Vec<AccountDoc<'a>>,
    /// The private directories (`accounts`, `keys`) this user may not read; absent when
    /// there are none.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    unreadable: &'a [&'static str],
    /// Made one at a time while being written.
    targets: TargetDocs<'a>,
    uncached_certificates: Vec<&'a str>,
    warnings: Vec<String>,
    /// Targets listed, by state.
    summary: Summary,
}

/// Counts of the listed targets by state, every state present.
struct Summary(Counts);

impl Serialize for Summary {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            std::iter::once(("targets", self.0.total()))
                .chain(self.0.all().map(|(s, n)| (s.as_str(), n))),
        )
    }
}

impl Summary {
    /// The text form: `Summary: 3 targets: 2 valid, 0 due, 1 failing, …`.
    fn line(&self) -> String {
        let each: Vec<String> = self
            .0
            .all()
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        format!("Summary: {} targets: {}", self.0.total(), each.join(", "))
    }
}

#[derive(Serialize)]
struct AccountDoc<'a> {
    id: &'a str,
    directory_url: &'a str,
}

#[derive(Serialize)]
struct TargetDoc<'a> {
    file: &'a str,
    names: Vec<String>,
    provider: Option<&'a str>,
    priority: i64,
    label: &'a str,
    live: Vec<String>,
    certificate: Option<CertDoc<'a>>,
    renew_at: Option<String>,
    state: &'static str,
    failures: u32,
    /// When the current run of failures began.
    failing_since: Option<String>,
    last_attempt: Option<String>,
    last_success: Option<String>,
    last_error: Option<String>,
    next_attempt: Option<String>,
    /// The CA refused the last attempt for its rate: deferred until `next_attempt`.
    rate_limited: bool,
    /// When a run next does something for it, as the planner decides for `reconcile`: its
    /// renewal time while its certificate is good; else now, or the end of its backoff.
    next_due: Option<String>,
    /// A run would not ask the CA for it before this time (its backoff after failures, or
    /// the CA's rate), as the planner decides it; `None` when the next run asks (or it needs
    /// nothing).
    waiting_until: Option<String>,
}

#[derive(Serialize)]
struct CertDoc<'a> {
    id: &'a str,
    names: &'a [String],
    not_before: String,
    not_after: String,
    key_type: Option<crate::keys::KeyFamily>,
    /// The directory URL of the CA it was ordered from (that of the account it was ordered
    /// with); none when unknown (imported without its account).
    provider: Option<String>,
    /// Its names validated by dns-account-01 or a standing dns-persist-01 record, as the
    /// issuing run recorded (status asks no DNS server).
    validations: Vec<ValidationDoc>,
}

#[derive(Serialize)]
struct ValidationDoc {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    /// The TXT record's owner name.
    record: String,
    /// dns-account-01: the account's label (the record's first label).
    label: Option<String>,
    /// dns-persist-01: the record's `persistUntil`, as read before the order.
    persist_until: Option<String>,
    /// dns-persist-01: the record stops being accepted within [`PERSIST_WARN_DAYS`] days, or
    /// has stopped (also one of the document's `warnings`).
    warning: Option<String>,
}

/// How long before a standing record's `persistUntil` status warns.
const PERSIST_WARN_DAYS: i64 = 30;

/// The document of one recorded validation, warning about a `persistUntil` within
/// [`PERSIST_WARN_DAYS`] of `now` or past.
fn validation_doc(v: crate::challenge::Validation, now: OffsetDateTime) -> ValidationDoc {
    let label = (v.kind == "dns-account-01")
        .then(|| v.record.split('.').next().unwrap_or_default().to_owned());
    let until = v
        .persist_until
        .and_then(|u| OffsetDateTime::from_unix_timestamp(u).ok());
    let warning = until.and_then(|u| {
        let hint = format!(
            "`acmekeep persist-record {}` prints the record to publish",
            v.name
        );
        let date = rfc3339(u);
        if u <= now {
            Some(format!(
                "{}: the dns-persist-01 record {} stopped being accepted at {} (persistUntil); renewals will fail until it is replaced: {hint}",
                v.name,
                v.record,
                short_date(&date)
            ))
        } else if u - now < time::Duration::days(PERSIST_WARN_DAYS) {
            Some(format!(
                "{}: the dns-persist-01 record {} stops being accepted at {} (persistUntil, in {}): {hint}",
                v.name,
                v.record,
                short_date(&date),
                time_left(&date, now)
            ))
        } else {
            None
        }
    });
    ValidationDoc {
        name: v.name,
        kind: v.kind,
        record: v.record,
        label,
        persist_until: until.map(rfc3339),
        warning,
    }
}

/// The host of a directory URL (what the CA column shows), or the URL itself.
fn ca_host(directory_url: &str) -> String {
    url::Url::parse(directory_url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| directory_url.to_owned())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// What `status` reports, loaded once; the per-target documents are made from it one at a
/// time, so that with thousands of targets they are never all held at once.
struct Loaded {
    /// Read from for each shown certificate's CA and validations.
    store: Store,
    targets: Vec<Target>,
    /// The run record of each target, in the same order.
    records: Vec<TargetRecord>,
    broken: Vec<TargetError>,
    inv: Inventory,
    summaries: cert::CertSet,
    /// The planner's verdict on each target, in the same order ([`plan::plan`], as a run
    /// decides it).
    plans: Vec<TargetPlan>,
    now: OffsetDateTime,
    /// `--expiring`: only targets whose certificate ends before this (or that have none).
    until: Option<OffsetDateTime>,
}

impl Loaded {
    fn load(
        settings: &Settings,
        now: OffsetDateTime,
        until: Option<OffsetDateTime>,
    ) -> Result<Loaded> {
        let store = Store::open_read_only(&settings.state_dir).map_err(config_error)?;
        let world = World::load(&store, Scope::STATUS)?;
        let plans = plan::plan(&world, now, &Policy::default()).targets;
        let World {
            targets,
            broken,
            inv,
            certs: summaries,
            records,
            ..
        } = world;
        // Every record was read (Scope::STATUS); a missing file reads as the empty record.
        let records = records.into_iter().map(Option::unwrap_or_default).collect();
        Ok(Loaded {
            store,
            records,
            targets,
            broken,
            inv,
            summaries,
            plans,
            now,
            until,
        })
    }

    /// Whether `--expiring` lists a target whose certificate in use is `cert`.
    fn listed(&self, cert: Option<&cert::CertSummary>) -> bool {
        match (self.until, cert) {
            (Some(until), Some(c)) => c.not_after <= until,
            _ => true,
        }
    }

    fn target_doc<'a>(
        &'a self,
        t: &'a Target,
        rec: &TargetRecord,
        p: &TargetPlan,
    ) -> TargetDoc<'a> {
        let rec = rec.clone();
        let live: Vec<String> = t
            .live_names()
            .filter(|n| self.inv.live.contains_key(n))
            .collect();
        let best = p.best_in(&self.summaries);
        let state = facts::target_state(p, &rec);
        let certificate = best.map(|s| CertDoc {
            id: &s.id,
            names: &s.names,
            not_before: rfc3339(s.not_before),
            not_after: rfc3339(s.not_after),
            key_type: s.key_family,
            provider: self.store.cert_provider(&s.id),
            validations: self
                .store
                .cert_validations(&s.id)
                .into_iter()
                .map(|v| validation_doc(v, self.now))
                .collect(),
        });
        TargetDoc {
            names: t.satisfy_names.iter().map(|n| n.to_string()).collect(),
            file: &t.file,
            provider: Some(&t.provider),
            priority: t.priority,
            label: &t.label,
            live,
            certificate,
            renew_at: p.renew_at.map(rfc3339),
            state: state.as_str(),
            failures: rec.failures,
            failing_since: rec.failing_since.map(rfc3339),
            last_attempt: rec.last_attempt.map(rfc3339),
            last_success: rec.last_success.map(rfc3339),
            last_error: rec.last_error,
            next_attempt: rec.next_attempt.map(rfc3339),
            rate_limited: rec.rate_limited,
            next_due: p.next_due.map(rfc3339),
            waiting_until: p.waiting.as_ref().map(|w| rfc3339(w.until)),
        }
    }

    fn broken_doc(b: &TargetError) -> TargetDoc<'_> {
        TargetDoc {
            file: &b.file,
            names: Vec::new(),
            provider: None,
            priority: 0,
            label: "",
            live: Vec::new(),
            certificate: None,
            renew_at: None,
            state: TargetState::Invalid.as_str(),
            failures: 0,
            failing_since: None,
            last_attempt: None,
            last_success: None,
            last_error: Some(format!("{:#}", b.error)),
            next_attempt: None,
            rate_limited: false,
            next_due: None,
            waiting_until: None,
        }
    }

    /// Every listed target's document, by file name: the loadable and the broken ones, each
    /// list already in that order, merged.
    fn target_docs(&self) -> impl Iterator<Item = TargetDoc<'_>> {
        let mut good = self
            .targets
            .iter()
            .zip(&self.records)
            .zip(&self.plans)
            .filter(|(_, p)| self.listed(self.best(p)))
            .peekable();
        let mut bad = self.broken.iter().peekable();
        std::iter::from_fn(move || match (good.peek(), bad.peek()) {
            (Some(((t, _), _)), Some(b)) if b.file < t.file => bad.next().map(Self::broken_doc),
            (Some(_), _) => good.next().map(|((t, r), p)| self.target_doc(t, r, p)),
            (None, _) => bad.next().map(Self::broken_doc),
        })
    }

    /// The certificate a target whose verdict is `p` uses, if any.
    fn best(&self, p: &TargetPlan) -> Option<&cert::CertSummary> {
        p.best_in(&self.summaries)
    }

    /// The warnings of the standing dns-persist-01 records the listed targets' certificates
    /// rely on, about to stop being accepted or stopped ([`validation_doc`]), by target file.
    fn persist_warnings(&self) -> Vec<String> {
        self.plans
            .iter()
            .filter_map(|p| self.best(p))
            .filter(|c| self.listed(Some(c)))
            .flat_map(|c| self.store.cert_validations(&c.id))
            .filter(|v| v.kind == "dns-persist-01")
            .filter_map(|v| validation_doc(v, self.now).warning)
            .collect()
    }

    /// The listed targets by state.
    fn summary(&self) -> Summary {
        let mut counts = Counts::default();
        for (rec, p) in self.records.iter().zip(&self.plans) {
            let best = self.best(p);
            if self.listed(best) {
                counts.add(facts::target_state(p, rec));
            }
        }
        for _ in &self.broken {
            counts.add(TargetState::Invalid);
        }
        Summary(counts)
    }

    fn doc(&self, settings: &Settings) -> StatusDoc<'_> {
        let mut warnings = self.inv.warnings.clone();
        for c in &self.inv.certs {
            if let CertState::Broken(e) = &c.state {
                warnings.push(format!("certs/{}: {e}", c.id));
            }
        }
        warnings.extend(self.persist_warnings());
        StatusDoc {
            schema_version: SCHEMA_VERSION,
            state_dir: settings.state_dir.display().to_string(),
            generated_at: rfc3339(self.now),
            accounts: self
                .inv
                .accounts
                .iter()
                .map(|a| AccountDoc {
                    id: &a.id,
                    directory_url: &a.directory_url,
                })
                .collect(),
            unreadable: &self.inv.unreadable,
            targets: TargetDocs(self),
            uncached_certificates: self
                .inv
                .certs
                .iter()
                .filter(|c| matches!(c.state, CertState::Uncached))
                .map(|c| c.id.as_str())
                .collect(),
            warnings,
            summary: self.summary(),
        }
    }
}

/// Serializes as the list of target documents, made while being written.
struct TargetDocs<'a>(&'a Loaded);

impl Serialize for TargetDocs<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.target_docs())
    }
}

fn short_date(s: &str) -> String {
    // "2026-02-21T10:00:00Z" → "2026-02-21 10:00"
    s.get(..16)
        .map(|d| d.replace('T', " "))
        .unwrap_or_else(|| s.to_owned())
}

/// "89d" left, "5h" on the last day, or "expired".
fn time_left(not_after: &str, now: OffsetDateTime) -> String {
    OffsetDateTime::parse(not_after, &Rfc3339)
        .map(|t| {
            let left = t - now;
            if t <= now {
                "expired".to_owned()
            } else if left.whole_days() >= 1 {
                format!("{}d", left.whole_days())
            } else {
                format!("{}h", left.whole_hours())
            }
        })
        .unwrap_or_default()
}

/// Prints the status.
pub fn execute(settings: &Settings, args: &StatusArgs) -> Result<ExitCode> {
    let now = settings.clock.now_utc();
    let until = match &args.expiring {
        Some(d) => {
            let d =
                crate::cli::parse_duration(d).map_err(|e| config_error(e.context("--expiring")))?;
            let d = time::Duration::try_from(d).unwrap_or(time::Duration::MAX);
            Some(
                now.checked_add(d)
                    .unwrap_or(now.replace_year(9999).unwrap_or(now)),
            )
        }
        None => None,
    };
    let loaded = Loaded::load(settings, now, until)?;
    let doc = loaded.doc(settings);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if args.json {
        // Streamed: with thousands of targets the document is megabytes of text.
        serde_json::to_writer_pretty(&mut out, &doc)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        print_text(&mut out, &doc, loaded.now, args.wide)
    };
    tracing::debug!("written");
    match written.and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) is not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => other.map(|()| ExitCode::SUCCESS).map_err(Into::into),
    }
}

/// The width `status` keeps to unless `--wide`.
const WIDTH: usize = 100;

/// The table's columns; the certificate id only with `--wide`.
const HEADER: [&str; 7] = [
    "TARGET",
    "NAMES",
    "STATE",
    "EXPIRES",
    "RENEWS",
    "CA",
    "CERTIFICATE",
];

/// One row of the table: its cells, the names as a list (they are shortened by name).
fn row(t: &TargetDoc, now: OffsetDateTime, wide: bool) -> [String; 7] {
    let ca = t
        .certificate
        .as_ref()
        .and_then(|c| c.provider.as_deref())
        .map_or_else(|| "-".to_owned(), ca_host);
    let (id, expires) = match &t.certificate {
        Some(c) => {
            let date = if wide {
                short_date(&c.not_after)
            } else {
                c.not_after.get(..10).unwrap_or(&c.not_after).to_owned()
            };
            (
                c.id.to_owned(),
                format!("{date} ({})", time_left(&c.not_after, now)),
            )
        }
        None => ("-".to_owned(), "-".to_owned()),
    };
    let names = if t.names.is_empty() {
        "-".to_owned()
    } else {
        t.names.join(",")
    };
    [
        t.file.to_owned(),
        names,
        state_cell(t.state, t.waiting_until.as_deref(), wide),
        expires,
        t.renew_at
            .as_deref()
            .map_or_else(|| "-".to_owned(), short_date),
        ca,
        id,
    ]
}

/// The STATE cell: the target's state, and when it waits (the planner's deferral: its backoff,
/// or the CA's rate) until when the next attempt is: `failing, next 03-01 12:30`. A wait is
/// at most a week (the CA's retry time is believed that far), so the month and day say
/// which; `wide` gives the year too.
fn state_cell(state: &str, waiting_until: Option<&str>, wide: bool) -> String {
    match waiting_until {
        Some(until) => {
            let at = short_date(until);
            let at = if wide {
                &at[..]
            } else {
                at.get(5..).unwrap_or(&at)
            };
            format!("{state}, next {at}")
        }
        None => state.to_owned(),
    }
}

/// A row of the table kept until the widths are known: its cells joined by NUL, which no
/// cell holds (file and host names, dates, ids). One allocation a row instead of seven, and
/// without the certificate id unless `--wide`: at 10,000 targets the rows were 4 MB of
/// status's peak memory.
struct Row(Box<str>);

impl Row {
    /// The row of `cells`, the last (the certificate id) kept only when `wide`.
    fn new(mut cells: [String; 7], wide: bool) -> Row {
        if !wide {
            cells[6].clear();
        }
        Row(cells.join("\0").into_boxed_str())
    }

    /// Its `i`th cell.
    fn cell(&self, i: usize) -> &str {
        self.0.split('\0').nth(i).unwrap_or("")
    }
}

/// `s` cut to `width` characters, ending in "…" when cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Comma-separated names in at most `width` characters: as many whole names as fit, then
/// how many more (`a.example,+3`); the first name cut if even it does not fit.
fn fit_names(joined: &str, width: usize) -> String {
    if joined.chars().count() <= width {
        return joined.to_owned();
    }
    let names: Vec<&str> = joined.split(',').collect();
    for shown in (1..names.len()).rev() {
        let s = format!("{},+{}", names[..shown].join(","), names.len() - shown);
        if s.chars().count() <= width {
            return s;
        }
    }
    let more = if names.len() > 1 {
        format!(",+{}", names.len() - 1)
    } else {
        String::new()
    };
    format!("{}{more}", cut(names[0], width.saturating_sub(more.len())))
}

/// Column widths: each column's widest cell; unless `wide`, the certificate column is left
/// out and the target and names columns give way, the wider first, until the table fits
/// [`WIDTH`].
fn widths(rows: &[Row], wide: bool) -> Vec<usize> {
    let columns = if wide { 7 } else { 6 };
    let mut w = vec![0; columns];
    for r in rows {
        for (w, cell) in w.iter_mut().zip(r.0.split('\0')) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if !wide {
        let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * (w.len() - 1);
        // The file name's random part says least, so the target column gives way first; then
        // both, the wider first.
        while total(&w) > WIDTH && w[0] > 24 {
            w[0] -= 1;
        }
        while total(&w) > WIDTH {
            let i = if w[0] >= w[1] { 0 } else { 1 };
            if w[i] <= 16 {
                break;
            }
            w[i] -= 1;
        }
        // Then the CA's host, whose end says most (see `cut_left`).
        while total(&w) > WIDTH && w[5] > 12 {
            w[5] -= 1;
        }
    }
    w
}

/// `s` cut to its last `width` characters, starting with "…" when cut (a host's end names
/// the CA: `…letsencrypt.org`).
fn cut_left(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_owned();
    }
    let mut out = "…".to_owned();
    out.extend(s.chars().skip(n + 1 - width.max(1)));
    out
}

/// `text` wrapped at word boundaries to lines of at most `width` characters (longer words
/// stay whole), each line starting with `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty()
            && indent.len() + line.chars().count() + 1 + word.chars().count() > width
        {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(indent);
    out.push_str(&line);
    out
}

/// The human-readable status: accounts, a table of targets, then last errors and warnings;
/// at most [`WIDTH`] columns wide (long target file names and name lists shortened, the
/// certificate id and account key left out) unless `wide`.
fn print_text(
    out: &mut dyn Write,
    doc: &StatusDoc,
    now: OffsetDateTime,
    wide: bool,
) -> std::io::Result<()> {
    print_accounts(out, doc, wide)?;
    // One compact row per target (the widths are known only at the end), and the last
    // errors, which follow the table.
    let mut rows = vec![Row::new(HEADER.map(str::to_owned), wide)];
    let mut errors = Vec::new();
    // How names were validated where it matters later (a label, a standing record), and
    // standing records about to stop being accepted.
    let mut dns = DnsValidation::default();
    for t in doc.targets.0.target_docs() {
        rows.push(Row::new(row(&t, now, wide), wide));
        dns.add(&t);
        errors.extend(last_error_text(t, wide));
    }
    if rows.len() == 1 && doc.summary.0.total() == 0 && doc.targets.0.until.is_none() {
        writeln!(out, "No targets: add one with `acmekeep want NAME`.")?;
    } else if rows.len() == 1 {
        writeln!(out, "No target's certificate expires that soon.")?;
    } else {
        print_table(out, rows, wide)?;
    }
    if !dns.validated.is_empty() {
        writeln!(out, "\nDNS validation:")?;
        for v in &dns.validated {
            writeln!(out, "{}", if wide { v.clone() } else { cut(v, WIDTH) })?;
        }
    }
    for e in errors {
        writeln!(out, "\n{e}")?;
    }
    if !doc.uncached_certificates.is_empty() {
        writeln!(
            out,
            "\nThere are uncached certificates (finished orders not downloaded yet): {}",
            doc.uncached_certificates.join(", ")
        )?;
    }
    for w in &doc.warnings {
        writeln!(out, "warning: {w}")?;
    }
    writeln!(out, "\n{}", doc.summary.line())?;
    Ok(())
}

/// The accounts, one line each (with their ids when `wide`).
fn print_accounts(out: &mut dyn Write, doc: &StatusDoc, wide: bool) -> std::io::Result<()> {
    writeln!(out, "State directory: {}", doc.state_dir)?;
    for a in &doc.accounts {
        if wide {
            writeln!(out, "Account: {} ({})", a.id, a.directory_url)?;
        } else {
            // The id is the escaped directory URL and the key id: the URL says it.
            writeln!(out, "Account: {}", a.directory_url)?;
        }
    }
    if doc.unreadable.contains(&"accounts") {
        writeln!(
            out,
            "Accounts: not readable as this user (accounts/ is root's)"
        )?;
    }
    Ok(())
}

/// The "DNS validation" lines of the targets seen so far (their standing records' warnings
/// are the document's).
#[derive(Default)]
struct DnsValidation {
    validated: Vec<String>,
}

impl DnsValidation {
    /// Adds how `t`'s certificate's names were validated, where it matters later: a
    /// dns-account-01 label, each standing dns-persist-01 record once.
    fn add(&mut self, t: &TargetDoc) {
        let vs = t
            .certificate
            .as_ref()
            .map_or(&[][..], |c| &c.validations[..]);
        if let Some(label) = vs.iter().find_map(|v| v.label.as_deref()) {
            let names = fit_names(&t.names.join(","), 40);
            self.validated
                .push(format!("  {names}: dns-account-01 label {label}"));
        }
        let mut records: Vec<&str> = Vec::new();
        for v in vs.iter().filter(|v| v.kind == "dns-persist-01") {
            // A base name and its wildcard rely on one record.
            if records.contains(&v.record.as_str()) {
                continue;
            }
            records.push(&v.record);
            let until = v
                .persist_until
                .as_deref()
                .map(|u| format!(", until {}", short_date(u)))
                .unwrap_or_default();
            self.validated.push(format!(
                "  {}: dns-persist-01 standing record{until}",
                v.record
            ));
        }
    }
}

/// The "Last error of" paragraph of `t`, if its last attempt failed.
fn last_error_text(t: TargetDoc, wide: bool) -> Option<String> {
    let e = t.last_error?;
    let mut about = vec![format!("{} failed attempt(s)", t.failures.max(1))];
    if t.rate_limited {
        about.push("deferred: the CA asked to slow down".to_owned());
    }
    // What the next run does, as the planner decides it (the record's time alone would say
    // "after" a time long past).
    match t.waiting_until.as_deref() {
        Some(n) => about.push(format!("next attempt after {}", short_date(n))),
        None if t.state != TargetState::Invalid.as_str()
            && t.state != TargetState::Valid.as_str() =>
        {
            about.push("next attempt at the next run".to_owned());
        }
        None => {}
    }
    let (head, body) = if wide {
        (
            format!("Last error of {} ({}):", t.file, about.join(", ")),
            format!("  {e}"),
        )
    } else {
        // One clause per line part, so that none is broken: the header, what the
        // attempts came to, then the error wrapped at words.
        let file = cut(t.file, WIDTH - "Last error of :".len());
        (
            format!("Last error of {file}:\n  {}", about.join("; ")),
            wrap(&e, "  ", WIDTH),
        )
    };
    Some(format!("{head}\n{body}"))
}

/// The table of targets: `rows` (the header first) in columns as wide as they need, within
/// [`WIDTH`] unless `wide`.
fn print_table(out: &mut dyn Write, rows: Vec<Row>, wide: bool) -> std::io::Result<()> {
    let mut widths = widths(&rows, wide);
    // Shortened name lists may be narrower than their column: the target column takes
    // what they leave.
    let names = rows
        .iter()
        .enumerate()
        .map(|(i, r)| match i {
            0 => r.cell(1).chars().count(),
            _ => fit_names(r.cell(1), widths[1]).chars().count(),
        })
        .max()
        .unwrap_or(0);
    let natural = rows
        .iter()
        .map(|r| r.cell(0).chars().count())
        .max()
        .unwrap_or(0);
    let names_width = widths[1];
    widths[0] = natural.min(widths[0] + widths[1].saturating_sub(names));
    widths[1] = names;
    writeln!(out)?;
    for (n, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for ((i, w), cell) in widths.iter().enumerate().zip(r.0.split('\0')) {
            if i > 0 {
                line.push_str("  ");
            }
            let cell = match i {
                1 if n > 0 => cut(&fit_names(cell, names_width), *w),
                5 => cut_left(cell, *w),
                _ => cut(cell, *w),
            };
            line.push_str(&format!("{cell:<w$}"));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::backoff::{Attempt, Backoff, after_attempt};
    use crate::store::lock::StateLock;
    use clap::Parser;
    use time::macros::datetime;

    /// A certificate for `names` valid from `from` to `until`, signed by a CA whose key
    /// identifier is fixed (so the ARI id is too), with its key saved in `keys/`; the order
    /// URL makes the certificate id. Returns the id.
    fn add_cert(
        store: &Store,
        order: &str,
        names: &[&str],
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> String {
        use rcgen::{
            BasicConstraints, CertificateParams, IsCa, Issuer, KeyIdMethod, KeyPair, SerialNumber,
        };
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_identifier_method = KeyIdMethod::PreSpecified(vec![7; 20]);
        let ca = Issuer::new(ca, KeyPair::generate().expect("ca key"));
        let key = crate::keys::PrivateKey::generate(crate::keys::KeySpec::EcdsaP256).expect("key");
        let mut leaf =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        leaf.not_before = from;
        leaf.not_after = until;
        leaf.serial_number = Some(SerialNumber::from_slice(&[1, names.len() as u8]));
        leaf.use_authority_key_identifier_extension = true;
        let leaf = leaf.signed_by(&key.pair, &ca).expect("sign");
        store.save_key(&key).expect("save key");
        let id = store.begin_cert(order, None).expect("begin");
        let pem = leaf.pem();
        let files = crate::cert::CertFiles {
            leaf: crate::cert::leaf_info(leaf.der()).expect("leaf"),
            chain: String::new(),
            fullchain: pem.clone(),
            cert: pem,
        };
        store
            .finish_cert(&id, Some(&key.id), &files)
            .expect("finish");
        id
    }

    /// Everything `status` and `status --json` print, byte for byte, for a state directory
    /// with one target of each kind: valid and linked, with a cached ARI window, broken,
    /// failed with its backoff passed, deferred by a rate limit, never obtained, backing off
    /// after two failures; plus an order
    /// not downloaded yet and a broken certificate directory. Refactoring how status is
    /// loaded or planned (issue 16) must not change a byte of it. (Issue 18 changed it on
    /// purpose: schema 2, the failing and deferred states, failing_since, last_success and
    /// the summary; issue 17: the CA of each certificate, its dns-account-01 label and
    /// standing dns-persist-01 record, the warning before persistUntil; issue 16: a target that
    /// waits says until when in its STATE cell and in `waiting_until`, g.example.)
    #[test]
    fn status_text_and_json_are_byte_identical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("state");
        Store::prepare_root(&root).expect("prepare");
        let lock = StateLock::acquire(&root).expect("lock");
        let store = Store::open(&root, &lock).expect("open");
        std::fs::write(
            root.join("conf/target"),
            "request:\n  provider: https://ca.example/dir\n",
        )
        .expect("conf/target");
        let target = |file: &str, yaml: &str| store.write_target(file, yaml).expect("target");
        target(
            "a.example",
            "satisfy:\n  names: [a.example, www.a.example]\n",
        );
        target("b.example", "satisfy: [unclosed\n");
        target("c.example", "satisfy:\n  names: [c.example]\n");
        target("d.example", "satisfy:\n  names: [d.example]\n");
        target("e.example", "satisfy:\n  names: [e.example]\n");
        target("f.example", "satisfy:\n  names: [f.example]\n");
        target("g.example", "satisfy:\n  names: [g.example]\n");
        let now = datetime!(2027-03-01 12:00 UTC);
        let a = add_cert(
            &store,
            "https://ca.example/order/a",
            &["a.example", "www.a.example"],
            datetime!(2027-02-01 00:00 UTC),
            datetime!(2027-05-02 00:00 UTC),
        );
        store.relink("a.example", &a).expect("relink");
        // Ordered with an account at ca.example, validated by dns-account-01.
        let account_key =
            crate::keys::PrivateKey::generate(crate::keys::KeySpec::EcdsaP256).expect("key");
        let account = store
            .save_account_key(
                "https://ca.example/dir",
                &account_key.id,
                &account_key.to_pem(),
            )
            .expect("account");
        store
            .begin_cert("https://ca.example/order/a", Some(&account))
            .expect("account link");
        let validation = |name: &str, kind: &str, record: &str, until: Option<i64>| {
            crate::challenge::Validation {
                name: name.to_owned(),
                kind: kind.to_owned(),
                record: record.to_owned(),
                persist_until: until,
            }
        };
        store
            .write_cert_validations(
                &a,
                &[
                    validation(
                        "a.example",
                        "dns-account-01",
                        "_k62qhz3q6bfbgyss._acme-challenge.a.example",
                        None,
                    ),
                    validation(
                        "www.a.example",
                        "dns-account-01",
                        "_k62qhz3q6bfbgyss._acme-challenge.www.a.example",
                        None,
                    ),
                ],
            )
            .expect("validations a");
        let e = add_cert(
            &store,
            "https://ca.example/order/e",
            &["e.example"],
            datetime!(2026-12-20 00:00 UTC),
            datetime!(2027-03-20 00:00 UTC),
        );
        // Validated by a standing record that stops being accepted in 12 days.
        store
            .write_cert_validations(
                &e,
                &[validation(
                    "e.example",
                    "dns-persist-01",
                    "_validation-persist.e.example",
                    Some((now + time::Duration::days(12)).unix_timestamp()),
                )],
            )
            .expect("validations e");
        let window = crate::acme::Window {
            start: datetime!(2027-03-05 00:00 UTC),
            end: datetime!(2027-03-07 00:00 UTC),
        };
        let ari_id = crate::cert::leaf_info(
            &crate::cert::split_chain(
                &std::fs::read_to_string(root.join("certs").join(&e).join("cert")).expect("e"),
            )
            .expect("pem")[0],
        )
        .expect("leaf")
        .ari_id
        .expect("ari id");
        let rec = crate::plan::ari::AriRecord::new(
            &ari_id,
            window,
            std::time::Duration::from_secs(6 * 3600),
            now - time::Duration::hours(1),
        );
        store.save_ari_record(&e, &rec).expect("ari");
        let record = |file: &str, at: OffsetDateTime, error: &str, backoff: Backoff| {
            // The CA's retry time, as the rate-limited failure carries it.
            let retry_at = (backoff == Backoff::RateLimited)
                .then_some(time::macros::datetime!(2027-03-02 00:00 UTC));
            let attempt = Attempt::Failed {
                error,
                backoff,
                retry_at,
            };
            let rec = after_attempt(TargetRecord::default(), attempt, at);
            store.write_target_record(file, &rec).expect("record");
        };
        record(
            "c.example",
            now - time::Duration::minutes(5),
            "ordering c.example: the CA refused: no (urn:ietf:params:acme:error:unauthorized)",
            Backoff::Yes,
        );
        record(
            "d.example",
            now - time::Duration::minutes(2),
            "ordering d.example: too many certificates (retry after 2027-03-02T00:00:00Z)",
            Backoff::RateLimited,
        );
        // Failed twice, the second time 5 minutes ago: it waits 10 minutes, until 12:05.
        let failed = || Attempt::Failed {
            error: "ordering g.example: connection refused",
            backoff: Backoff::Yes,
            retry_at: None,
        };
        let g = after_attempt(
            TargetRecord::default(),
            failed(),
            now - time::Duration::minutes(20),
        );
        let g = after_attempt(g, failed(), now - time::Duration::minutes(5));
        store
            .write_target_record("g.example", &g)
            .expect("record g");
        store
            .begin_cert("https://ca.example/order/uncached", None)
            .expect("uncached");
        let broken = store
            .begin_cert("https://ca.example/order/broken", None)
            .expect("broken");
        std::fs::write(root.join("certs").join(&broken).join("cert"), "not a cert")
            .expect("broken cert");
        drop(store);
        drop(lock);

        let cli = crate::cli::Cli::try_parse_from([
            "acmekeep",
            "--state",
            root.to_str().expect("utf-8"),
            "status",
        ])
        .expect("cli");
        let settings = Settings::resolve(&cli).expect("settings");
        let loaded = Loaded::load(&settings, now, None).expect("load");
        let doc = loaded.doc(&settings);
        // As `execute` writes it: pretty, with a final newline.
        let json = serde_json::to_string_pretty(&doc).expect("json") + "\n";
        let render = |wide| {
            let mut out = Vec::new();
            print_text(&mut out, &doc, now, wide).expect("text");
            String::from_utf8(out).expect("utf-8")
        };
        let state = root.display().to_string();
        let unroot = |s: String| {
            s.replace(&state, "STATE")
                .replace(&account_key.id, "ACCOUNT_KEY")
                .replace(&a, "CERT_A")
                .replace(&e, "CERT_E")
                .replace(&broken, "CERT_BROKEN")
        };
        let (json, text, wide) = (unroot(json), unroot(render(false)), unroot(render(true)));
        let uncached = crate::keys::ids::cert_id("https://ca.example/order/uncached");
        let (json, text, wide) = (
            json.replace(&uncached, "CERT_UNCACHED"),
            text.replace(&uncached, "CERT_UNCACHED"),
            wide.replace(&uncached, "CERT_UNCACHED"),
        );
        assert_eq!(text, EXPECTED_TEXT, "text:\n{text}");
        assert_eq!(wide, EXPECTED_WIDE, "wide:\n{wide}");
        assert_eq!(json, EXPECTED_JSON, "json:\n{json}");
    }

    const EXPECTED_TEXT: &str = r#"State directory: STATE
Account: https://ca.example/dir

TARGET     NAMES         STATE                       EXPIRES           RENEWS            CA
a.example  a.example,+1  valid                       2027-05-02 (61d)  2027-04-02 00:00  ca.example
b.example  -             invalid                     -                 -                 -
c.example  c.example     failing                     -                 -                 -
d.example  d.example     deferred, next 03-02 00:00  -                 -                 -
e.example  e.example     valid                       2027-03-20 (18d)  2027-03-06 20:15  -
f.example  f.example     missing                     -                 -                 -
g.example  g.example     failing, next 03-01 12:05   -                 -                 -

DNS validation:
  a.example,www.a.example: dns-account-01 label _k62qhz3q6bfbgyss
  _validation-persist.e.example: dns-persist-01 standing record, until 2027-03-13 12:00

Last error of b.example:
  1 failed attempt(s)
  cannot parse STATE/desired/b.example: satisfy: invalid type: sequence, expected
  struct RawSatisfy at line 1 column 10

Last error of c.example:
  1 failed attempt(s); next attempt at the next run
  ordering c.example: the CA refused: no (urn:ietf:params:acme:error:unauthorized)

Last error of d.example:
  1 failed attempt(s); deferred: the CA asked to slow down; next attempt after 2027-03-02 00:00
  ordering d.example: too many certificates (retry after 2027-03-02T00:00:00Z)

Last error of g.example:
  2 failed attempt(s); next attempt after 2027-03-01 12:05
  ordering g.example: connection refused
warning: certs/CERT_BROKEN: STATE/certs/CERT_BROKEN/cert: no certificate in the chain
warning: certs/CERT_UNCACHED: STATE/certs/CERT_UNCACHED holds no certificate and cannot be downloaded (no account link); `acmekeep cull` removes it
warning: e.example: the dns-persist-01 record _validation-persist.e.example stops being accepted at 2027-03-13 12:00 (persistUntil, in 12d): `acmekeep persist-record e.example` prints the record to publish

Summary: 7 targets: 2 valid, 0 due, 2 failing, 1 deferred, 1 missing, 1 invalid
"#;
    const EXPECTED_WIDE: &str = r#"State directory: STATE
Account: ca.example%2fdir/ACCOUNT_KEY (https://ca.example/dir)

TARGET     NAMES                    STATE                            EXPIRES                 RENEWS            CA          CERTIFICATE
a.example  a.example,www.a.example  valid                            2027-05-02 00:00 (61d)  2027-04-02 00:00  ca.example  CERT_A
b.example  -                        invalid                          -                       -                 -           -
c.example  c.example                failing                          -                       -                 -           -
d.example  d.example                deferred, next 2027-03-02 00:00  -                       -                 -           -
e.example  e.example                valid                            2027-03-20 00:00 (18d)  2027-03-06 20:15  -           CERT_E
f.example  f.example                missing                          -                       -                 -           -
g.example  g.example                failing, next 2027-03-01 12:05   -                       -                 -           -

DNS validation:
  a.example,www.a.example: dns-account-01 label _k62qhz3q6bfbgyss
  _validation-persist.e.example: dns-persist-01 standing record, until 2027-03-13 12:00

Last error of b.example (1 failed attempt(s)):
  cannot parse STATE/desired/b.example: satisfy: invalid type: sequence, expected struct RawSatisfy at line 1 column 10

Last error of c.example (1 failed attempt(s), next attempt at the next run):
  ordering c.example: the CA refused: no (urn:ietf:params:acme:error:unauthorized)

Last error of d.example (1 failed attempt(s), deferred: the CA asked to slow down, next attempt after 2027-03-02 00:00):
  ordering d.example: too many certificates (retry after 2027-03-02T00:00:00Z)

Last error of g.example (2 failed attempt(s), next attempt after 2027-03-01 12:05):
  ordering g.example: connection refused
warning: certs/CERT_BROKEN: STATE/certs/CERT_BROKEN/cert: no certificate in the chain
warning: certs/CERT_UNCACHED: STATE/certs/CERT_UNCACHED holds no certificate and cannot be downloaded (no account link); `acmekeep cull` removes it
warning: e.example: the dns-persist-01 record _validation-persist.e.example stops being accepted at 2027-03-13 12:00 (persistUntil, in 12d): `acmekeep persist-record e.example` prints the record to publish

Summary: 7 targets: 2 valid, 0 due, 2 failing, 1 deferred, 1 missing, 1 invalid
"#;
    const EXPECTED_JSON: &str = r#"{
  "schema_version": 2,
  "state_dir": "STATE",
  "generated_at": "2027-03-01T12:00:00Z",
  "accounts": [
    {
      "id": "ca.example%2fdir/ACCOUNT_KEY",
      "directory_url": "https://ca.example/dir"
    }
  ],
  "targets": [
    {
      "file": "a.example",
      "names": [
        "a.example",
        "www.a.example"
      ],
      "provider": "https://ca.example/dir",
      "priority": 0,
      "label": "",
      "live": [
        "a.example"
      ],
      "certificate": {
        "id": "CERT_A",
        "names": [
          "a.example",
          "www.a.example"
        ],
        "not_before": "2027-02-01T00:00:00Z",
        "not_after": "2027-05-02T00:00:00Z",
        "key_type": "ecdsa",
        "provider": "https://ca.example/dir",
        "validations": [
          {
            "name": "a.example",
            "type": "dns-account-01",
            "record": "_k62qhz3q6bfbgyss._acme-challenge.a.example",
            "label": "_k62qhz3q6bfbgyss",
            "persist_until": null,
            "warning": null
          },
          {
            "name": "www.a.example",
            "type": "dns-account-01",
            "record": "_k62qhz3q6bfbgyss._acme-challenge.www.a.example",
            "label": "_k62qhz3q6bfbgyss",
            "persist_until": null,
            "warning": null
          }
        ]
      },
      "renew_at": "2027-04-02T00:00:00Z",
      "state": "valid",
      "failures": 0,
      "failing_since": null,
      "last_attempt": null,
      "last_success": null,
      "last_error": null,
      "next_attempt": null,
      "rate_limited": false,
      "next_due": "2027-04-02T00:00:00Z",
      "waiting_until": null
    },
    {
      "file": "b.example",
      "names": [],
      "provider": null,
      "priority": 0,
      "label": "",
      "live": [],
      "certificate": null,
      "renew_at": null,
      "state": "invalid",
      "failures": 0,
      "failing_since": null,
      "last_attempt": null,
      "last_success": null,
      "last_error": "cannot parse STATE/desired/b.example: satisfy: invalid type: sequence, expected struct RawSatisfy at line 1 column 10",
      "next_attempt": null,
      "rate_limited": false,
      "next_due": null,
      "waiting_until": null
    },
    {
      "file": "c.example",
      "names": [
        "c.example"
      ],
      "provider": "https://ca.example/dir",
      "priority": 0,
      "label": "",
      "live": [],
      "certificate": null,
      "renew_at": null,
      "state": "failing",
      "failures": 1,
      "failing_since": "2027-03-01T11:55:00Z",
      "last_attempt": "2027-03-01T11:55:00Z",
      "last_success": null,
      "last_error": "ordering c.example: the CA refused: no (urn:ietf:params:acme:error:unauthorized)",
      "next_attempt": "2027-03-01T11:56:00Z",
      "rate_limited": false,
      "next_due": "2027-03-01T12:00:00Z",
      "waiting_until": null
    },
    {
      "file": "d.example",
      "names": [
        "d.example"
      ],
      "provider": "https://ca.example/dir",
      "priority": 0,
      "label": "",
      "live": [],
      "certificate": null,
      "renew_at": null,
      "state": "deferred",
      "failures": 1,
      "failing_since": "2027-03-01T11:58:00Z",
      "last_attempt": "2027-03-01T11:58:00Z",
      "last_success": null,
      "last_error": "ordering d.example: too many certificates (retry after 2027-03-02T00:00:00Z)",
      "next_attempt": "2027-03-02T00:00:00Z",
      "rate_limited": true,
      "next_due": "2027-03-02T00:00:00Z",
      "waiting_until": "2027-03-02T00:00:00Z"
    },
    {
      "file": "e.example",
      "names": [
        "e.example"
      ],
      "provider": "https://ca.example/dir",
      "priority": 0,
      "label": "",
      "live": [],
      "certificate": {
        "id": "CERT_E",
        "names": [
          "e.example"
        ],
        "not_before": "2026-12-20T00:00:00Z",
        "not_after": "2027-03-20T00:00:00Z",
        "key_type": "ecdsa",
        "provider": null,
        "validations": [
          {
            "name": "e.example",
            "type": "dns-persist-01",
            "record": "_validation-persist.e.example",
            "label": null,
            "persist_until": "2027-03-13T12:00:00Z",
            "warning": "e.example: the dns-persist-01 record _validation-persist.e.example stops being accepted at 2027-03-13 12:00 (persistUntil, in 12d): `acmekeep persist-record e.example` prints the record to publish"
          }
        ]
      },
      "renew_at": "2027-03-06T20:15:22.320786865Z",
      "state": "valid",
      "failures": 0,
      "failing_since": null,
      "last_attempt": null,
      "last_success": null,
      "last_error": null,
      "next_attempt": null,
      "rate_limited": false,
      "next_due": "2027-03-06T20:15:22.320786865Z",
      "waiting_until": null
    },
    {
      "file": "f.example",
      "names": [
        "f.example"
      ],
      "provider": "https://ca.example/dir",
      "priority": 0,
      "label": "",
      "live": [],
      "certificate": null,
      "renew_at": null,
      "state": "missing",
      "failures": 0,
      "failing_since": null,
      "last_attempt": null,
      "last_success": null,
      "last_error": null,
      "next_attempt": null,
      "rate_limited": false,
      "next_due": "2027-03-01T12:00:00Z",
      "waiting_until": null
    },
    {
      "file": "g.example",
      "names": [
        "g.example"
      ],
      "provider": "https://ca.example/dir",
      "priority": 0,
      "label": "",
      "live": [],
      "certificate": null,
      "renew_at": null,
      "state": "failing",
      "failures": 2,
      "failing_since": "2027-03-01T11:40:00Z",
      "last_attempt": "2027-03-01T11:55:00Z",
      "last_success": null,
      "last_error": "ordering g.example: connection refused",
      "next_attempt": "2027-03-01T12:05:00Z",
      "rate_limited": false,
      "next_due": "2027-03-01T12:05:00Z",
      "waiting_until": "2027-03-01T12:05:00Z"
    }
  ],
  "uncached_certificates": [],
  "warnings": [
    "certs/CERT_BROKEN: STATE/certs/CERT_BROKEN/cert: no certificate in the chain",
    "certs/CERT_UNCACHED: STATE/certs/CERT_UNCACHED holds no certificate and cannot be downloaded (no account link); `acmekeep cull` removes it",
    "e.example: the dns-persist-01 record _validation-persist.e.example stops being accepted at 2027-03-13 12:00 (persistUntil, in 12d): `acmekeep persist-record e.example` prints the record to publish"
  ],
  "summary": {
    "targets": 7,
    "valid": 2,
    "due": 0,
    "failing": 2,
    "deferred": 1,
    "missing": 1,
    "invalid": 1
  }
}
"#;

    #[test]
    fn long_cells_are_shortened_to_fit() {
        assert_eq!(
            cut("a.example.org-t7qnaypn5vh3hnv2lmmnk4fdrm", 16),
            "a.example.org-t…"
        );
        assert_eq!(cut("short", 16), "short");
        assert_eq!(
            fit_names("a.example.org,www.a.example.org,b.example.org", 20),
            "a.example.org,+2"
        );
        assert_eq!(
            fit_names("a.example.org,www.a.example.org", 40),
            "a.example.org,www.a.example.org"
        );
        assert_eq!(
            fit_names("very-long-name.example.org,b.c", 16),
            "very-long-na…,+1"
        );
        assert_eq!(
            fit_names("very-long-name.example.org", 16),
            "very-long-name.…"
        );
    }

    #[test]
    fn the_table_fits_unless_wide() {
        let long = |s: &str| format!("{s}-{}", "x".repeat(26));
        let mut rows = vec![HEADER.map(str::to_owned)];
        for i in 0..3 {
            rows.push([
                long(&format!("host{i}.department.example.org")),
                format!("host{i}.department.example.org,www.host{i}.department.example.org"),
                "valid".to_owned(),
                "2026-03-01 (89d)".to_owned(),
                "2026-01-30 10:00".to_owned(),
                "acme-v02.api.letsencrypt.org".to_owned(),
                "a".repeat(52),
            ]);
        }
        let w = widths(
            &rows
                .iter()
                .map(|r| Row::new(r.clone(), false))
                .collect::<Vec<_>>(),
            false,
        );
        assert_eq!(w.len(), 6, "no certificate id");
        assert!(w.iter().sum::<usize>() + 2 * 5 <= WIDTH, "{w:?}");
        assert_eq!(
            cut_left("acme-v02.api.letsencrypt.org", 16),
            "…letsencrypt.org"
        );
        assert_eq!(cut_left("ca.example", 16), "ca.example");
        let rows: Vec<Row> = rows.into_iter().map(|r| Row::new(r, true)).collect();
        let w = widths(&rows, true);
        assert_eq!(w[6], 52);
        assert!(w.iter().sum::<usize>() > WIDTH);
    }

    #[test]
    fn errors_wrap_at_words() {
        let text = "self-test of http://a.example.org/.well-known/acme-challenge/token: connecting to a.example.org: DNS lookup failed: no such host";
        let wrapped = wrap(text, "  ", 60);
        assert!(
            wrapped
                .lines()
                .all(|l| l.chars().count() <= 60 || !l.trim().contains(' ')),
            "{wrapped}"
        );
        assert_eq!(wrapped.replace("\n  ", " ").trim_start(), text);
    }
}
