//! The standing dns-persist-01 record in DNS: writing it down for people (a zone-file line,
//! a tinydns-data line), publishing it once by RFC 2136 ([`replace`]), and reading it back
//! before an order ([`txt_authoritative`], [`txt_recursive`]) so that a record the CA would
//! refuse is named before anything is asked of the CA.
//!
//! Publishing replaces only our own record: the TXT records at the name that the caller
//! says are ours (same issuer, same account: an older `persistUntil` or policy) are deleted
//! and the new one added in one UPDATE, so records for other CAs and other accounts stay.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use hickory_proto::op::{Message, ResponseCode, UpdateMessage as _, update_message};
use hickory_proto::rr::{RData, RecordSet, RecordType};

use super::lookup::{find_zone, follow_cname, nameservers, resolve};
use super::settings::PersistCheck;
use super::update::{locate, rrset, send};
use super::wire::{self, to_name};
use super::{Published, ResolverConfig, Rfc2136Config, txt_strings};
use crate::name::Hostname;

/// TXT values read from one answer, at most this many (a name holding more is no record of
/// ours, and the judge looks at no more).
const MAX_VALUES: usize = crate::acme::persist::MAX_RECORDS;

/// A zone-file (RFC 1035 master file) line for a TXT record: owner with its trailing dot,
/// TTL, class, type and the value as quoted character-strings of at most 255 octets, `"`
/// and `\` escaped.
pub fn zone_line(owner: &str, ttl: u32, value: &str) -> String {
    let strings: Vec<String> = txt_strings(value)
        .iter()
        .map(|s| {
            let mut q = String::with_capacity(s.len() + 2);
            q.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    q.push('\\');
                }
                q.push(c);
            }
            q.push('"');
            q
        })
        .collect();
    let rdata = if strings.len() == 1 {
        strings.concat()
    } else {
        format!("( {} )", strings.join(" "))
    };
    format!("{}. {ttl} IN TXT {rdata}", owner.trim_end_matches('.'))
}

/// A tinydns-data line for a TXT record (`'fqdn:text:ttl`): `:`, `\` and every octet outside
/// printable ASCII written as `\ooo` octal, as tinydns-data reads it. tinydns-data splits the
/// text into character-strings itself; CAs join them again.
pub fn tinydns_line(owner: &str, ttl: u32, value: &str) -> String {
    let escape = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b == b':' || b == b'\\' || !(0x20..0x7f).contains(&b) {
                out.push_str(&format!("\\{b:03o}"));
            } else {
                out.push(char::from(b));
            }
        }
        out
    };
    format!(
        "'{}:{}:{ttl}",
        escape(owner.trim_end_matches('.')),
        escape(value)
    )
}

/// What one server said about the TXT records at a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxtAnswer {
    /// Who answered: `ns1.example.org (192.0.2.1:53)` or the resolver's address.
    pub server: String,
    /// The records found, or why the question could not be answered.
    pub outcome: std::result::Result<TxtFound, String>,
}

/// TXT records found at a name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxtFound {
    /// The name does not exist (NXDOMAIN).
    pub nxdomain: bool,
    /// Each record's character-strings joined, in the server's order.
    pub values: Vec<String>,
}

/// The TXT records at `name` as every authoritative server of its zone serves them (CNAMEs
/// followed through the resolvers, then each server asked directly, as the propagation check
/// does). An error means the servers could not even be found.
pub async fn txt_authoritative(
    resolver: &ResolverConfig,
    name: &Hostname,
) -> Result<(Hostname, Vec<TxtAnswer>)> {
    let (owner, _) = follow_cname(resolver, name)
        .await
        .with_context(|| format!("following CNAMEs from {name}"))?;
    let zone = find_zone(resolver, &owner)
        .await
        .with_context(|| format!("finding the zone of {owner}"))?;
    let servers = nameservers(resolver, &zone)
        .await
        .with_context(|| format!("finding the nameservers of {zone}"))?;
    let qname = to_name(&owner)?;
    let mut answers = Vec::new();
    for ns in servers {
        if let Some(p) = &ns.problem {
            answers.push(TxtAnswer {
                server: ns.name.to_string(),
                outcome: Err(p.clone()),
            });
        }
        for addr in &ns.addresses {
            let outcome =
                match wire::query(*addr, &qname, RecordType::TXT, false, resolver.timeout).await {
                    Ok(m) => read_txt(&m, &qname, true),
                    Err(e) => Err(format!("gave no answer: {e:#}")),
                };
            answers.push(TxtAnswer {
                server: format!("{} ({addr})", ns.name),
                outcome,
            });
        }
    }
    Ok((owner, answers))
}

/// The TXT records at `name` as the recursive resolvers answer (CNAMEs followed by them).
pub async fn txt_recursive(resolver: &ResolverConfig, name: &Hostname) -> TxtAnswer {
    let outcome = match to_name(name) {
        Ok(qname) => match resolve(resolver, &qname, RecordType::TXT).await {
            Ok(m) => read_txt(&m, &qname, false),
            Err(e) => Err(format!("{e:#}")),
        },
        Err(e) => Err(format!("{e:#}")),
    };
    TxtAnswer {
        server: if resolver.servers.is_empty() {
            "the system's resolvers".to_owned()
        } else {
            resolver
                .servers
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
        outcome,
    }
}

/// The TXT values of an answer about `qname`. From an authoritative server only records
/// owned by `qname` count and the answer must carry authority; through a resolver, TXT
/// records at the end of a CNAME chain count too (the CA reads them so).
fn read_txt(
    m: &Message,
    qname: &hickory_proto::rr::Name,
    authoritative: bool,
) -> std::result::Result<TxtFound, String> {
    match m.metadata.response_code {
        ResponseCode::NXDomain => {
            return Ok(TxtFound {
                nxdomain: true,
                values: Vec::new(),
            });
        }
        ResponseCode::NoError => {}
        other => return Err(format!("answered {}", wire::rcode_name(other))),
    }
    if authoritative && !m.metadata.authoritative {
        return Err("answered without authority (not serving this zone?)".to_owned());
    }
    let values = m
        .answers
        .iter()
        .filter(|r| !authoritative || &r.name == qname)
        .filter_map(|r| super::propagation::txt_value(&r.data))
        .take(MAX_VALUES)
        .collect();
    Ok(TxtFound {
        nxdomain: false,
        values,
    })
}

/// How long before the CA looks a record must still be good (the CA may validate a little
/// after we ask).
const VALIDATION_SLACK: i64 = 600;
/// A `persistUntil` closer than this is warned about when the record is used.
pub const WARN_BEFORE: i64 = 30 * 86_400;

/// Reads the standing record for `ch` (a dns-persist-01 challenge) as `via` says — from
/// every authoritative server of its zone, or through the resolvers, or not at all — and
/// judges it as the CA will, at `now` (Unix seconds). `Err` is one
/// line naming a definite problem (no record, another issuer or account, no
/// `policy=wildcard`, `persistUntil` past, malformed) as a server serves it, and how to fix
/// it. A lookup that cannot be made at all is logged as a warning and is no reason to hold
/// the order back: the CA may see what we cannot. `Ok` carries the earliest `persistUntil`
/// the servers serve (none: no limit, or the record could not be read), which `status`
/// shows later from the certificate's record (it asks no DNS server itself).
pub async fn precheck(
    resolver: &ResolverConfig,
    via: PersistCheck,
    ch: &crate::acme::Challenge,
    wanted: &crate::acme::PersistWanted,
    now: i64,
) -> std::result::Result<Option<i64>, String> {
    use crate::acme::persist::Wanted;
    let which = format!("{}{}", if ch.wildcard { "*." } else { "" }, ch.identifier);
    let hint = format!("'acmekeep persist-record {which}' prints the record to publish",);
    let name = match Hostname::parse(&ch.record_name) {
        Ok(n) => n,
        Err(e) => return Err(format!("{which}: {} is no DNS name: {e}", ch.record_name)),
    };
    let answers = match via {
        PersistCheck::Off => return Ok(None),
        PersistCheck::Resolvers => vec![txt_recursive(resolver, &name).await],
        PersistCheck::Authoritative => match txt_authoritative(resolver, &name).await {
            Ok((_, a)) => a,
            Err(e) => {
                tracing::warn!(
                    "{which}: the dns-persist-01 record {name} could not be looked up ({e:#}); asking the CA anyway"
                );
                return Ok(None);
            }
        },
    };
    let w = Wanted {
        issuers: &wanted.issuers,
        account_uris: &wanted.account_uris,
        wildcard: ch.wildcard,
        at: now + VALIDATION_SLACK,
    };
    let Judged {
        problems,
        silent,
        until,
    } = judge_answers(&answers, w);
    if let Some((server, p)) = problems.first() {
        let more = match problems.len() {
            1 => String::new(),
            n => format!(" and {} more server{}", n - 1, if n > 2 { "s" } else { "" }),
        };
        return Err(format!(
            "{which}: the dns-persist-01 record {name} is not usable: {p} (as {server}{more} serve{} it); {hint}",
            if more.is_empty() { "s" } else { "" }
        ));
    }
    if until.is_none() {
        tracing::warn!(
            "{which}: the dns-persist-01 record {name} could not be read {} ({}); asking the CA anyway",
            match via {
                PersistCheck::Resolvers => "through the resolvers",
                _ => "from any authoritative server",
            },
            silent.join("; ")
        );
        return Ok(None);
    }
    if !silent.is_empty() {
        tracing::warn!(
            "{which}: some authoritative servers did not answer about {name} ({})",
            silent.join("; ")
        );
    }
    if let Some(Some(u)) = until
        && u - now < WARN_BEFORE
    {
        let days = (u - now).max(0) / 86_400;
        tracing::warn!(
            "{which}: the dns-persist-01 record {name} stops being accepted in {days} day{} (persistUntil {u}); {hint}",
            if days == 1 { "" } else { "s" }
        );
    }
    Ok(until.flatten())
}

/// What the servers' answers about a dns-persist-01 record came to.
struct Judged {
    /// The servers serving a record the CA would not accept, and why.
    problems: Vec<(String, crate::acme::persist::PersistProblem)>,
    /// The servers that did not answer, each with why.
    silent: Vec<String>,
    /// The earliest `persistUntil` of the usable records (`Some(None)`: no limit); `None`
    /// when no server answered.
    until: Option<Option<i64>>,
}

/// Judges each server's answer with [`crate::acme::persist::judge`].
fn judge_answers(answers: &[TxtAnswer], w: crate::acme::persist::Wanted<'_>) -> Judged {
    let mut j = Judged {
        problems: Vec::new(),
        silent: Vec::new(),
        until: None,
    };
    for a in answers {
        match &a.outcome {
            Err(e) => j.silent.push(format!("{} {e}", a.server)),
            Ok(found) => match crate::acme::persist::judge(&found.values, found.nxdomain, w) {
                Ok(u) => {
                    j.until = Some(match (j.until, u) {
                        (Some(Some(a)), Some(b)) => Some(a.min(b)),
                        (Some(Some(a)), None) => Some(a),
                        (_, u) => u,
                    });
                }
                Err(p) => j.problems.push((a.server.clone(), p)),
            },
        }
    }
    j
}

/// What [`replace`] did.
#[derive(Clone, Debug)]
pub struct Replaced {
    /// Where the record went.
    pub published: Published,
    /// Our older records it removed.
    pub removed: Vec<String>,
    /// The value was there already: nothing was sent.
    pub unchanged: bool,
}

/// Publishes the dns-persist-01 record `value` at `name` (`_validation-persist.<name>`,
/// CNAMEs followed) in one UPDATE that also deletes the records at that name for which
/// `ours` is true (our earlier values); every other record stays. Sends nothing when the
/// value is there already and nothing of ours needs removing.
pub async fn replace(
    cfg: &Rfc2136Config,
    name: &str,
    value: &str,
    ours: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Replaced> {
    let p = locate(cfg, name, value).await?;
    let qname = to_name(&p.name)?;
    // What the primary itself holds now (it is the one the update changes).
    let current = wire::query(cfg.server, &qname, RecordType::TXT, false, cfg.timeout)
        .await
        .with_context(|| format!("asking {} for the TXT records at {}", cfg.server, p.name))?;
    let found = read_txt(&current, &qname, false)
        .map_err(|e| anyhow::anyhow!("{} about the TXT records at {}: {e}", cfg.server, p.name))?;
    let removed: Vec<String> = found
        .values
        .iter()
        .filter(|v| v.as_str() != value && ours(v))
        .cloned()
        .collect();
    if removed.is_empty() && found.values.iter().any(|v| v == value) {
        return Ok(Replaced {
            published: p,
            removed,
            unchanged: true,
        });
    }
    let (new, zone) = rrset(&p, p.ttl)?;
    let msg = if removed.is_empty() {
        update_message::append(new, zone, false, true)
    } else {
        let mut old = RecordSet::with_ttl(qname.clone(), RecordType::TXT, 0);
        for v in &removed {
            old.add_rdata(RData::TXT(hickory_proto::rr::rdata::TXT::new(txt_strings(
                v,
            ))));
        }
        let mut msg = update_message::delete_by_rdata(old, zone, true);
        msg.add_updates(new);
        msg
    };
    send(cfg, &p, msg, "replacing").await?;
    Ok(Replaced {
        published: p,
        removed,
        unchanged: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/123; policy=wildcard";

    #[test]
    fn zone_lines_quote_and_split() {
        assert_eq!(
            zone_line("_validation-persist.example.org", 3600, V),
            format!("_validation-persist.example.org. 3600 IN TXT \"{V}\"")
        );
        let long = format!(
            "ca.example; accounturi=https://ca.example/{}",
            "a".repeat(300)
        );
        let line = zone_line("_validation-persist.example.org.", 60, &long);
        assert!(
            line.starts_with("_validation-persist.example.org. 60 IN TXT ( \""),
            "{line}"
        );
        assert!(line.ends_with("\" )"), "{line}");
        assert_eq!(line.matches('"').count(), 4, "two strings: {line}");
        assert_eq!(
            zone_line("x.example", 1, "a\"b\\c"),
            "x.example. 1 IN TXT \"a\\\"b\\\\c\""
        );
    }

    #[test]
    fn tinydns_lines_escape_colons_as_octal() {
        assert_eq!(
            tinydns_line("_validation-persist.example.org", 3600, V),
            "'_validation-persist.example.org:letsencrypt.org; accounturi=https\\072//acme-v02.api.letsencrypt.org/acme/acct/123; policy=wildcard:3600"
        );
        assert_eq!(tinydns_line("x.", 5, "a\\b\n"), "'x:a\\134b\\012:5");
    }
}
