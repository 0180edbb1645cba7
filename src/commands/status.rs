//! `acmekeep status [--json]`: read-only, takes no lock, makes no network request.
//! The JSON schema is documented in doc/status-json.md and held to it by tests.

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::StatusArgs;
use crate::exit::config_error;
use crate::plan;
use crate::settings::Settings;
use crate::store::{CertState, Store};

/// Version of the JSON document; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct StatusDoc {
    schema_version: u32,
    state_dir: String,
    generated_at: String,
    accounts: Vec<AccountDoc>,
    targets: Vec<TargetDoc>,
    uncached_certificates: Vec<String>,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct AccountDoc {
    id: String,
    directory_url: String,
}

#[derive(Serialize)]
struct TargetDoc {
    file: String,
    names: Vec<String>,
    provider: Option<String>,
    priority: i64,
    label: String,
    live: Vec<String>,
    certificate: Option<CertDoc>,
    renew_at: Option<String>,
    state: &'static str,
    failures: u32,
    last_attempt: Option<String>,
    last_error: Option<String>,
    next_attempt: Option<String>,
}

#[derive(Serialize)]
struct CertDoc {
    id: String,
    names: Vec<String>,
    not_before: String,
    not_after: String,
    key_type: Option<crate::keys::KeyFamily>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn build(settings: &Settings, now: OffsetDateTime) -> Result<StatusDoc> {
    let store = Store::open_read_only(&settings.state_dir).map_err(config_error)?;
    let defaults = store.load_defaults().map_err(config_error)?;
    let (targets, broken) = store.load_targets(&defaults)?;
    let mut inv = store.load_inventory()?;
    let summaries = inv.take_summaries();
    // Cached ARI windows only: status never asks the CA.
    let ari: std::collections::BTreeMap<_, _> = summaries
        .iter()
        .filter_map(|s| store.ari_record(&s.id).map(|r| (s.id.clone(), r)))
        .collect();
    let mut docs = Vec::new();
    // Each target is dropped once its document is made, so both are not held in full.
    for t in targets {
        let p = plan::plan_target_ari(&t, &summaries, now, &ari);
        let rec = store.target_record(&t.file);
        let live: Vec<String> = t
            .live_names()
            .filter(|n| inv.live.contains_key(n))
            .collect();
        let certificate = p
            .best
            .as_deref()
            .and_then(|id| summaries.get(id))
            .map(|s| CertDoc {
                id: s.id.clone(),
                names: s.names.clone(),
                not_before: rfc3339(s.not_before),
                not_after: rfc3339(s.not_after),
                key_type: s.key_family,
            });
        let state = match (&certificate, p.needs_request) {
            (None, _) => "missing",
            (Some(_), true) => "due",
            (Some(_), false) => "valid",
        };
        docs.push(TargetDoc {
            names: t.satisfy_names.iter().map(|n| n.to_string()).collect(),
            file: t.file,
            provider: Some(t.provider),
            priority: t.priority,
            label: t.label,
            live,
            certificate,
            renew_at: p.renew_at.map(rfc3339),
            state,
            failures: rec.failures,
            last_attempt: rec.last_attempt,
            last_error: rec.last_error,
            next_attempt: rec.next_attempt,
        });
    }
    for b in broken {
        docs.push(TargetDoc {
            file: b.file,
            names: Vec::new(),
            provider: None,
            priority: 0,
            label: String::new(),
            live: Vec::new(),
            certificate: None,
            renew_at: None,
            state: "invalid",
            failures: 0,
            last_attempt: None,
            last_error: Some(format!("{:#}", b.error)),
            next_attempt: None,
        });
    }
    docs.sort_by(|a, b| a.file.cmp(&b.file));
    let mut warnings = inv.warnings.clone();
    for c in &inv.certs {
        if let CertState::Broken(e) = &c.state {
            warnings.push(format!("certs/{}: {e}", c.id));
        }
    }
    Ok(StatusDoc {
        schema_version: SCHEMA_VERSION,
        state_dir: settings.state_dir.display().to_string(),
        generated_at: rfc3339(now),
        accounts: inv
            .accounts
            .iter()
            .map(|a| AccountDoc {
                id: a.id.clone(),
                directory_url: a.directory_url.clone(),
            })
            .collect(),
        targets: docs,
        uncached_certificates: inv
            .certs
            .iter()
            .filter(|c| matches!(c.state, CertState::Uncached))
            .map(|c| c.id.clone())
            .collect(),
        warnings,
    })
}

fn short_date(s: &str) -> String {
    // "2026-02-21T10:00:00Z" → "2026-02-21 10:00"
    s.get(..16)
        .map(|d| d.replace('T', " "))
        .unwrap_or_else(|| s.to_owned())
}

fn days_left(not_after: &str, now: OffsetDateTime) -> String {
    OffsetDateTime::parse(not_after, &Rfc3339)
        .map(|t| {
            let d = (t - now).whole_days();
            if t <= now {
                "expired".to_owned()
            } else {
                format!("{d}d")
            }
        })
        .unwrap_or_default()
}

/// Prints the status.
pub fn execute(settings: &Settings, args: &StatusArgs) -> Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    let doc = build(settings, now)?;
    if args.json {
        // Streamed: with thousands of targets the document is megabytes of text.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let written = serde_json::to_writer_pretty(&mut out, &doc)
            .map_err(std::io::Error::from)
            .and_then(|()| std::io::Write::write_all(&mut out, b"\n"))
            .and_then(|()| std::io::Write::flush(&mut out));
        return match written {
            // A reader that stopped early (`| head`) is not an error of ours.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
            other => other.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        };
    }
    println!("State directory: {}", doc.state_dir);
    for a in &doc.accounts {
        println!("Account: {} ({})", a.id, a.directory_url);
    }
    if doc.targets.is_empty() {
        println!("No targets: add one with `acmekeep want NAME`.");
    }
    let header = [
        "TARGET",
        "NAMES",
        "STATE",
        "CERTIFICATE",
        "EXPIRES",
        "RENEWS",
    ];
    let rows: Vec<[String; 6]> = doc
        .targets
        .iter()
        .map(|t| {
            let (id, expires) = match &t.certificate {
                Some(c) => (
                    c.id.clone(),
                    format!(
                        "{} ({})",
                        short_date(&c.not_after),
                        days_left(&c.not_after, now)
                    ),
                ),
                None => ("-".to_owned(), "-".to_owned()),
            };
            [
                t.file.clone(),
                if t.names.is_empty() {
                    "-".to_owned()
                } else {
                    t.names.join(",")
                },
                t.state.to_owned(),
                id,
                expires,
                t.renew_at
                    .as_deref()
                    .map(short_date)
                    .unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    if !rows.is_empty() {
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        println!();
        println!("{}", line(&header.map(str::to_owned)));
        for r in &rows {
            println!("{}", line(r));
        }
    }
    for t in &doc.targets {
        if let Some(e) = &t.last_error {
            println!();
            println!(
                "Last error of {} ({} failed attempt(s)){}:\n  {e}",
                t.file,
                t.failures.max(1),
                t.next_attempt
                    .as_deref()
                    .map(|n| format!(", next attempt after {}", short_date(n)))
                    .unwrap_or_default()
            );
        }
    }
    if !doc.uncached_certificates.is_empty() {
        println!(
            "\nThere are uncached certificates (finished orders not downloaded yet): {}",
            doc.uncached_certificates.join(", ")
        );
    }
    for w in &doc.warnings {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}
