//! `acmekeep check [TARGET|NAME…]`: a monitoring plugin with the Nagios/Icinga conventions
//! (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; one status line with performance data, then
//! one line per target that needs a person), or the same as JSON. It reads the state
//! directory only (no lock, no CA), through the facts `status` and the metrics use; the
//! verdict is [`crate::monitor::check`]'s. Targets named on the command line are each
//! reported, OK or not (the `notify` hook mails that report: the cause and the retry).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::CheckArgs;
use crate::monitor::check::{self, Level, Subject, Thresholds};
use crate::monitor::facts::{Counts, Facts, TargetFacts};
use crate::settings::Settings;
use crate::store::Store;

/// Version of the `--json` document; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// A target that is reported (or the runs).
#[derive(Serialize)]
struct Problem {
    level: &'static str,
    /// File under `desired/`; `None` for a finding about the runs.
    file: Option<String>,
    name: Option<String>,
    message: String,
    last_error: Option<String>,
    /// The command that retries it now.
    retry: Option<String>,
}

#[derive(Serialize)]
struct CheckDoc {
    schema_version: u32,
    status: &'static str,
    exit_code: u8,
    summary: String,
    generated_at: String,
    thresholds: ThresholdDoc,
    counts: std::collections::BTreeMap<&'static str, u64>,
    /// The soonest end of validity among the certificates checked, in seconds from now.
    min_time_left_seconds: Option<i64>,
    /// The targets that are not OK, or every target named, worst first.
    targets: Vec<Problem>,
}

#[derive(Serialize)]
struct ThresholdDoc {
    warning: String,
    critical: String,
}

/// Runs the check; every failure to read is UNKNOWN (exit 3), as plugins must.
pub fn execute(settings: &Settings, args: &CheckArgs) -> Result<ExitCode> {
    let now = settings.clock.now_utc();
    let code = match report(settings, args, now) {
        Ok(code) => code,
        Err(e) => {
            let text = crate::cause::render(&e).replace('\n', " ");
            if args.json {
                let doc = serde_json::json!({
                    "schema_version": SCHEMA_VERSION,
                    "status": Level::Unknown.as_str(),
                    "exit_code": Level::Unknown.exit_code(),
                    "summary": text,
                });
                println!("{doc}");
            } else {
                println!("ACMEKEEP UNKNOWN - {text}");
            }
            Level::Unknown.exit_code()
        }
    };
    Ok(ExitCode::from(code))
}

/// The command that retries `file` now, with the state directory when it is not the default.
pub fn retry_command(settings: &Settings, file: &str) -> String {
    let state = if settings.state_dir == std::path::Path::new(crate::settings::DEFAULT_STATE_DIR) {
        String::new()
    } else {
        format!("--state {} ", settings.state_dir.display())
    };
    format!("acmekeep {state}reconcile --force {file}")
}

fn report(settings: &Settings, args: &CheckArgs, now: OffsetDateTime) -> Result<u8> {
    let threshold = |given: &Option<String>, default| {
        given.as_deref().map_or(Ok(default), |t| {
            check::Threshold::parse(t).map_err(anyhow::Error::msg)
        })
    };
    let th = Thresholds {
        warning: threshold(&args.warning, check::Threshold::WARNING)?,
        critical: threshold(&args.critical, check::Threshold::CRITICAL)?,
    };
    let store = Store::open_read_only(&settings.state_dir)?;
    let facts = Facts::load(&store, now)?;
    let mut verdicts = Verdicts::of_targets(settings, args, &facts, now, &th)?;
    // The runs matter only for the whole state directory.
    if args.targets.is_empty()
        && let Some(message) =
            check::judge_last_run(facts.last_run.as_ref().and_then(|r| r.started_at), now)
    {
        verdicts.level = verdicts.level.worst(Level::Warning);
        verdicts.problems.push((
            Level::Warning,
            Problem {
                level: Level::Warning.as_str(),
                file: None,
                name: None,
                message,
                last_error: None,
                retry: None,
            },
        ));
    }
    // Worst first, then by name.
    verdicts
        .problems
        .sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let code = verdicts.level.exit_code();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        verdicts.write_json(&mut out, now, &th)?;
    } else {
        verdicts.write_text(&mut out, now)?;
    }
    out.flush()?;
    Ok(code)
}

/// The check's findings: the worst level, the targets counted by state, what is reported,
/// and the soonest end of validity (with the target's name).
struct Verdicts {
    level: Level,
    counts: Counts,
    problems: Vec<(Level, Problem)>,
    soonest: Option<(OffsetDateTime, String)>,
}

impl Verdicts {
    /// Each target checked (those named, or all) judged against `th` at `now`; a name that
    /// selects no target is an error.
    fn of_targets(
        settings: &Settings,
        args: &CheckArgs,
        facts: &Facts,
        now: OffsetDateTime,
        th: &Thresholds,
    ) -> Result<Verdicts> {
        let selects = |t: &TargetFacts, o: &str| {
            t.file == o
                || t.target
                    .is_some_and(|t| t.satisfy_names.iter().any(|n| n.as_str() == o))
        };
        if let Some(o) = args
            .targets
            .iter()
            .find(|o| !facts.targets().any(|t| selects(&t, o)))
        {
            anyhow::bail!("no such target in desired/: {o}");
        }
        let mut v = Verdicts {
            level: Level::Ok,
            counts: Counts::default(),
            problems: Vec::new(),
            soonest: None,
        };
        for t in facts.targets() {
            if !args.targets.is_empty() && !args.targets.iter().any(|o| selects(&t, o)) {
                continue;
            }
            v.counts.add(t.state);
            let subject = Subject {
                state: t.state,
                validity: t.cert.map(|c| (c.not_before, c.not_after)),
                failing_since: t.record.failing_since,
                next_attempt: t.record.next_attempt,
            };
            if let Some(c) = t.cert
                && v.soonest.as_ref().is_none_or(|(s, _)| c.not_after < *s)
            {
                v.soonest = Some((c.not_after, t.name()));
            }
            let (l, message) = check::judge(&subject, now, th);
            v.level = v.level.worst(l);
            if l != Level::Ok || !args.targets.is_empty() {
                let last_error = t.error.clone().or(t.record.last_error.clone());
                v.problems.push((
                    l,
                    Problem {
                        level: l.as_str(),
                        name: Some(t.name()),
                        retry: t.target.map(|_| retry_command(settings, t.file)),
                        file: Some(t.file.to_owned()),
                        message,
                        last_error,
                    },
                ));
            }
        }
        Ok(v)
    }

    /// The soonest end of validity, in seconds from `now`.
    fn min_left(&self, now: OffsetDateTime) -> Option<i64> {
        self.soonest
            .as_ref()
            .map(|(t, _)| (*t - now).whole_seconds())
    }

    /// The `--json` document.
    fn write_json(self, out: &mut dyn Write, now: OffsetDateTime, th: &Thresholds) -> Result<()> {
        let doc = CheckDoc {
            schema_version: SCHEMA_VERSION,
            status: self.level.as_str(),
            exit_code: self.level.exit_code(),
            summary: summary(&self.counts, &self.problems, self.soonest.as_ref(), now),
            generated_at: now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            thresholds: ThresholdDoc {
                warning: th.warning.to_string(),
                critical: th.critical.to_string(),
            },
            counts: std::iter::once(("targets", self.counts.total()))
                .chain(self.counts.all().map(|(s, n)| (s.as_str(), n)))
                .collect(),
            min_time_left_seconds: self.min_left(now),
            targets: self.problems.into_iter().map(|(_, p)| p).collect(),
        };
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        Ok(())
    }

    /// The plugin's status line with performance data, then one paragraph per target
    /// reported.
    fn write_text(&self, out: &mut dyn Write, now: OffsetDateTime) -> Result<()> {
        let summary = summary(&self.counts, &self.problems, self.soonest.as_ref(), now);
        // Performance data: counts by state, and the soonest expiry.
        let mut perf = format!("targets={}", self.counts.total());
        for (s, n) in self.counts.all() {
            perf.push_str(&format!(" {}={n}", s.as_str()));
        }
        if let Some(s) = self.min_left(now) {
            perf.push_str(&format!(" min_time_left={s}s"));
        }
        writeln!(out, "ACMEKEEP {} - {summary} | {perf}", self.level.as_str())?;
        for (_, p) in &self.problems {
            match (&p.name, &p.file) {
                (Some(name), Some(file)) => {
                    writeln!(out, "{}: {name} (desired/{file}): {}", p.level, p.message)?
                }
                _ => writeln!(out, "{}: {}", p.level, p.message)?,
            }
            if let Some(e) = &p.last_error {
                writeln!(out, "  last error: {}", e.replace('\n', " "))?;
            }
            if let Some(r) = &p.retry {
                writeln!(out, "  retry: {r}")?;
            }
        }
        Ok(())
    }
}

/// The status line's text: how many targets need a person, the worst few by name.
fn summary(
    counts: &Counts,
    problems: &[(Level, Problem)],
    soonest: Option<&(OffsetDateTime, String)>,
    now: OffsetDateTime,
) -> String {
    let total = counts.total();
    if problems.iter().all(|(l, _)| *l == Level::Ok) {
        let next = soonest.map_or_else(String::new, |(t, name)| {
            format!("; soonest expiry in {} ({name})", check::human(*t - now))
        });
        return format!("{total} target(s), none needs attention{next}");
    }
    let crit = problems
        .iter()
        .filter(|(l, _)| *l == Level::Critical)
        .count();
    let warn = problems
        .iter()
        .filter(|(l, _)| *l == Level::Warning)
        .count();
    let mut parts = Vec::new();
    if crit > 0 {
        parts.push(format!("{crit} critical"));
    }
    if warn > 0 {
        parts.push(format!("{warn} warning"));
    }
    const SHOWN: usize = 3;
    let not_ok = problems.iter().filter(|(l, _)| *l != Level::Ok);
    let worst: Vec<String> = not_ok
        .clone()
        .take(SHOWN)
        .map(|(_, p)| match &p.name {
            Some(n) => format!("{n} {}", p.message),
            None => p.message.clone(),
        })
        .collect();
    let more = not_ok.count().saturating_sub(SHOWN);
    format!(
        "{} of {total} target(s): {}{}",
        parts.join(", "),
        worst.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    )
}
