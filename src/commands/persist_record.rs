//! `acmekeep persist-record NAME...`: the standing dns-persist-01 record each name needs at
//! its target's CA, printed as a zone-file line, a tinydns-data line and the plain value, and
//! with `--publish` put into DNS once by RFC 2136 (the target's `request.challenge.dns-01`
//! settings). For djbdns sites, which have no dynamic updates, the one static tinydns line
//! per name replaces the per-order hook.
//!
//! The record names an account, so there must be one: it is registered at the CA if there is
//! none yet, under the usual rules (terms of service and EAB from the response file).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};

use crate::account::account_session;
use crate::acme::Connector;
use crate::acme::connect::InstantConnector;
use crate::acme::persist::{self, Record};
use crate::acme::{Ca, Issuer};
use crate::challenge::dns::persist::{replace, tinydns_line, zone_line};
use crate::cli::PersistRecordArgs;
use crate::exit::config_error;
use crate::name::Hostname;
use crate::settings::Settings;
use crate::target::{RawTarget, Target};

/// One name's record, worked out.
struct Planned {
    /// The name the record is for (without `*.`).
    base: Hostname,
    /// The target whose CA and settings apply.
    target: Target,
    wildcard: bool,
}

/// Prints (and with `--publish` publishes) the records.
pub fn execute(settings: &Settings, args: &PersistRecordArgs) -> Result<ExitCode> {
    let (_lock, store) = super::lock_and_open(settings)?;
    let interaction = super::interaction(settings)?;
    let defaults = store.load_defaults().map_err(config_error)?;
    let (targets, _) = store.load_targets(&defaults).map_err(config_error)?;
    let fallback =
        Target::resolve("default", &RawTarget::default(), &defaults).map_err(config_error)?;
    let until = match args.until.as_deref() {
        None | Some("none") => None,
        Some(text) => Some(parse_until(text).map_err(config_error)?),
    };
    let now = settings.clock.now_utc().unix_timestamp();
    if let Some(u) = until
        && u <= now
    {
        return Err(config_error(anyhow!("--until {u} is in the past")));
    }
    let planned = plan(&args.names, args.wildcard, &targets, &fallback)?;
    let inv = store.load_inventory()?;
    let connector = InstantConnector::with_timeout(settings.ca_timeout);
    let rt = super::runtime()?;
    let mut out = String::new();
    let mut failed = 0;
    // One account look-up per CA.
    let mut sessions: BTreeMap<String, (String, String, persist::PersistMeta)> = BTreeMap::new();
    for p in &planned {
        let provider = p.target.provider.clone();
        if !sessions.contains_key(&provider) {
            let ca = connector.connect(&provider, p.target.provider_ca_bundle.as_ref())?;
            let got = rt.block_on(async {
                let meta = ca.directory_meta().await?;
                let (session, _) =
                    account_session(&store, &ca, &provider, &inv, &interaction).await?;
                Ok::<_, anyhow::Error>((session.account_url(), session.thumbprint(), meta.persist))
            })?;
            sessions.insert(provider.clone(), got);
        }
        let (account_url, thumbprint, meta) = &sessions[&provider];
        let issuer = match args
            .issuer
            .clone()
            .or_else(|| meta.default_issuer().map(str::to_owned))
        {
            Some(i) => i,
            None => bail!(
                "the CA at {provider} names no issuer in its directory (no issuerDomainNames or caaIdentities): give --issuer, the issuer domain name the CA documents for dns-persist-01"
            ),
        };
        let form = meta.form();
        let record = Record {
            issuer,
            account_uri: form.account_uri(p.base.as_str(), thumbprint, account_url, false),
            wildcard: p.wildcard,
            persist_until: until,
        };
        let value = record.value().map_err(|e| anyhow!("{}: {e}", p.base))?;
        let owner = persist::record_name(p.base.as_str());
        let about = format!(
            "{owner} for {provider} (account {account_url}, {})",
            form.draft()
        );
        out.push_str(&comment(&args.format, &about));
        let ttl = args.ttl;
        out.push_str(&lines(&args.format, &owner, ttl, &value));
        if args.publish && !rt.block_on(publish(p, &owner, &value, &record, ttl)) {
            failed += 1;
        }
    }
    let mut stdout = std::io::stdout();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| anyhow!("writing to stdout: {e}"))?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One [`Planned`] record per base name of `names` (`*.x` and `x` share
/// `_validation-persist.x`), each at the CA of the first target requesting it, else
/// conf/target's (`fallback`); `wildcard` (`--wildcard`) asks for the wildcard policy on all.
fn plan(
    names: &[String],
    wildcard: bool,
    targets: &[Target],
    fallback: &Target,
) -> Result<Vec<Planned>> {
    let mut planned: Vec<Planned> = Vec::new();
    for raw in names {
        let name = Hostname::parse(raw).map_err(config_error)?;
        let wildcard = wildcard || name.is_wildcard();
        let base = Hostname::parse(name.as_str().trim_start_matches("*.")).map_err(config_error)?;
        let target = targets
            .iter()
            .find(|t| {
                t.request_names
                    .iter()
                    .any(|n| n.as_str().trim_start_matches("*.") == base.as_str())
            })
            .unwrap_or(fallback)
            .clone();
        // A wildcard wanted by the target needs the policy too.
        let wanted_wildcard = target
            .request_names
            .iter()
            .any(|n| n.as_str() == format!("*.{base}"));
        match planned.iter_mut().find(|p| p.base == base) {
            Some(p) => p.wildcard |= wildcard || wanted_wildcard,
            None => planned.push(Planned {
                base,
                target,
                wildcard: wildcard || wanted_wildcard,
            }),
        }
    }
    Ok(planned)
}

/// The line saying which record follows, as a comment of the format's own: `#` in a
/// tinydns-data file (which refuses a line beginning with `;`), none in `plain`, which is
/// for scripts.
fn comment(format: &str, about: &str) -> String {
    match format {
        "plain" => String::new(),
        "tinydns" => format!("# {about}\n"),
        _ => format!("; {about}\n"),
    }
}

/// The record `value` at `owner` in `--format` `format`: a zone-file line, a tinydns-data
/// line, the plain value, or (any other format) all three.
fn lines(format: &str, owner: &str, ttl: u32, value: &str) -> String {
    match format {
        "zone" => format!("{}\n", zone_line(owner, ttl, value)),
        "tinydns" => format!("{}\n", tinydns_line(owner, ttl, value)),
        "plain" => format!("{value}\n"),
        _ => format!(
            "{}\n{}\n{value}\n",
            zone_line(owner, ttl, value),
            tinydns_line(owner, ttl, value)
        ),
    }
}

/// `--publish`: puts `value` at `owner` by RFC 2136 (the target's dns-01 server), replacing
/// older records of ours (same issuer and account), and says what it did on stderr. False
/// when it could not.
async fn publish(p: &Planned, owner: &str, value: &str, record: &Record, ttl: u32) -> bool {
    let Some(dns) = p.target.challenge.dns.rfc2136.as_ref() else {
        eprintln!(
            "{}: cannot publish: no RFC 2136 server is configured (request.challenge.dns-01.server)",
            p.base
        );
        return false;
    };
    let mut cfg = dns.rfc2136.clone();
    cfg.ttl = ttl;
    let ours = |v: &str| {
        persist::parse_value(v).is_ok_and(|iv| {
            iv.issuer == record.issuer && iv.account_uri.as_deref() == Some(&record.account_uri)
        })
    };
    match replace(&cfg, owner, value, &ours).await {
        Ok(r) if r.unchanged => {
            eprintln!("{owner}: the record is published already");
            true
        }
        Ok(r) => {
            eprintln!(
                "{owner}: published in zone {}{}",
                r.published.zone,
                if r.removed.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (replacing {} older record{} of ours)",
                        r.removed.len(),
                        if r.removed.len() == 1 { "" } else { "s" }
                    )
                }
            );
            true
        }
        Err(e) => {
            eprintln!("{owner}: publishing failed: {e:#}");
            false
        }
    }
}

/// `--until`: a date (`2027-12-31`, midnight UTC), an RFC 3339 time, or Unix seconds.
fn parse_until(text: &str) -> Result<i64> {
    use time::format_description::well_known::Rfc3339;
    let t = text.trim();
    if let Ok(secs) = t.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(dt) = time::OffsetDateTime::parse(t, &Rfc3339) {
        return Ok(dt.unix_timestamp());
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(t, &fmt) {
        return Ok(d.midnight().assume_utc().unix_timestamp());
    }
    bail!("--until {t:?} is not a date (2027-12-31), an RFC 3339 time or Unix seconds")
}

#[cfg(test)]
mod tests {
    use super::parse_until;

    #[test]
    fn until_reads_dates_times_and_seconds() {
        assert_eq!(parse_until("2027-01-01").expect("date"), 1_798_761_600);
        assert_eq!(
            parse_until("2027-01-01T00:00:10Z").expect("time"),
            1_798_761_610
        );
        assert_eq!(parse_until("1798761600").expect("secs"), 1_798_761_600);
        assert!(parse_until("next year").is_err());
    }
}
