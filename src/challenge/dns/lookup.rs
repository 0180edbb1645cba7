//! Lookups through the recursive resolvers: CNAME chains, the zone a name is in, and the
//! authoritative servers of a zone with their addresses.
//!
//! Every name read from an answer passes through [`Hostname`] before we act on it, and only
//! records whose owner is the name we asked about are believed.

use std::net::SocketAddr;

use anyhow::{Result, anyhow, bail};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::wire::{self, to_hostname, to_name};
use super::{MAX_CNAME_HOPS, ResolverConfig, parse_resolv_conf};
use crate::name::Hostname;

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The resolvers to ask: the configured ones, or the system's.
async fn resolvers(cfg: &ResolverConfig) -> Result<Vec<SocketAddr>> {
    if !cfg.servers.is_empty() {
        return Ok(cfg.servers.clone());
    }
    let text = tokio::fs::read_to_string(RESOLV_CONF)
        .await
        .map_err(|e| anyhow!("no DNS resolver configured and {RESOLV_CONF}: {e}"))?;
    let servers = parse_resolv_conf(&text);
    if servers.is_empty() {
        bail!("no DNS resolver configured and {RESOLV_CONF} names none");
    }
    Ok(servers)
}

/// Asks the resolvers in turn until one gives a usable answer (NOERROR or NXDOMAIN).
pub(super) async fn resolve(
    cfg: &ResolverConfig,
    name: &Name,
    rtype: RecordType,
) -> Result<Message> {
    let mut failures = Vec::new();
    for server in resolvers(cfg).await? {
        match wire::query(server, name, rtype, true, cfg.timeout).await {
            Ok(m)
                if matches!(
                    m.metadata.response_code,
                    ResponseCode::NoError | ResponseCode::NXDomain
                ) =>
            {
                return Ok(m);
            }
            Ok(m) => failures.push(format!(
                "{server}: {}",
                wire::rcode_name(m.metadata.response_code)
            )),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    bail!("cannot look up {rtype} {name}: {}", failures.join("; "))
}

/// The records of type `rtype` owned by `owner` in the answer section.
fn answers<'m>(m: &'m Message, owner: &Name, rtype: RecordType) -> impl Iterator<Item = &'m RData> {
    m.answers
        .iter()
        .filter(move |r| r.record_type() == rtype && &r.name == owner)
        .map(|r| &r.data)
}

/// Follows CNAMEs from `name`: the final name and the targets on the way.
pub(super) async fn follow_cname(
    cfg: &ResolverConfig,
    name: &Hostname,
) -> Result<(Hostname, Vec<Hostname>)> {
    let mut current = name.clone();
    let mut chain: Vec<Hostname> = Vec::new();
    loop {
        let m = resolve(cfg, &to_name(&current)?, RecordType::CNAME).await?;
        let Some(target) = cname_target(&m, &current)? else {
            return Ok((current, chain));
        };
        if target == *name || chain.contains(&target) {
            bail!("CNAME loop at {current} -> {target} (starting from {name})");
        }
        if chain.len() >= MAX_CNAME_HOPS {
            bail!("more than {MAX_CNAME_HOPS} CNAMEs from {name}; giving up at {current}");
        }
        tracing::debug!("{current} is a CNAME to {target}");
        chain.push(target.clone());
        current = target;
    }
}

/// The target of the CNAME at `owner` in the answer `m`, if it has one.
pub(super) fn cname_target(m: &Message, owner: &Hostname) -> Result<Option<Hostname>> {
    let target = answers(m, &to_name(owner)?, RecordType::CNAME).find_map(|d| match d {
        RData::CNAME(c) => Some(c.0.clone()),
        _ => None,
    });
    target
        .map(|t| {
            to_hostname(&t).map_err(|e| anyhow!("{owner} is a CNAME to an unusable name: {e}"))
        })
        .transpose()
}

/// The zone `name` is in, by SOA lookups from `name` up (the SOA in the answer, or the one a
/// negative answer carries in its authority section).
pub(super) async fn find_zone(cfg: &ResolverConfig, name: &Hostname) -> Result<Hostname> {
    let mut candidate = to_name(name)?;
    while !candidate.is_root() {
        let m = resolve(cfg, &candidate, RecordType::SOA).await?;
        if let Some(zone) = zone_in_answer(&m, &candidate) {
            return zone;
        }
        candidate = candidate.base_name();
    }
    bail!("no zone found for {name} (no SOA record above it)")
}

/// The zone an answer to the SOA question for `candidate` names: `candidate` itself when it
/// has an SOA, else the zone of a negative answer's SOA; `None`: ask about the parent.
pub(super) fn zone_in_answer(m: &Message, candidate: &Name) -> Option<Result<Hostname>> {
    if answers(m, candidate, RecordType::SOA).next().is_some() {
        return Some(to_hostname(candidate));
    }
    // A CNAME here means the negative answer's SOA is the target's zone, not ours.
    if answers(m, candidate, RecordType::CNAME).next().is_some() {
        return None;
    }
    m.authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(candidate))
        .map(|soa| to_hostname(&soa.name))
}

/// Asks `server` itself which of its zones holds `name` (a non-recursive SOA question).
pub(super) async fn find_zone_at(
    server: SocketAddr,
    name: &Hostname,
    timeout: std::time::Duration,
) -> Result<Hostname> {
    let qname = to_name(name)?;
    let m = wire::query(server, &qname, RecordType::SOA, false, timeout).await?;
    match zone_at(&m, &qname) {
        Some(zone) => zone,
        None => bail!(
            "{server} is not authoritative for {name} ({})",
            wire::rcode_name(m.metadata.response_code)
        ),
    }
}

/// The zone holding `qname` by a server's own (non-recursive) answer to the SOA question
/// for it; `None` when the answer is not authoritative for it.
pub(super) fn zone_at(m: &Message, qname: &Name) -> Option<Result<Hostname>> {
    if !m.metadata.authoritative {
        return None;
    }
    m.answers
        .iter()
        .chain(&m.authorities)
        .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(qname))
        .map(|soa| to_hostname(&soa.name))
}

/// One authoritative server of a zone.
#[derive(Clone, Debug)]
pub(super) struct Nameserver {
    pub name: Hostname,
    /// Empty if the name has no address (reported as lagging).
    pub addresses: Vec<SocketAddr>,
    /// Why there are no addresses, if there are none.
    pub problem: Option<String>,
}

/// The NS of `zone` with their addresses (`nameserver_addresses` first, else A and AAAA).
pub(super) async fn nameservers(cfg: &ResolverConfig, zone: &Hostname) -> Result<Vec<Nameserver>> {
    let zname = to_name(zone)?;
    let m = resolve(cfg, &zname, RecordType::NS).await?;
    let names = ns_names(&m, zone)?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if let Some(addrs) = cfg.nameserver_addresses.get(&name) {
            out.push(Nameserver {
                name,
                addresses: addrs.clone(),
                problem: None,
            });
            continue;
        }
        let mut addresses = Vec::new();
        let mut problems = Vec::new();
        let qname = to_name(&name)?;
        for rtype in [RecordType::A, RecordType::AAAA] {
            match resolve(cfg, &qname, rtype).await {
                Ok(m) => addresses.extend(addresses_in(&m, &qname, rtype, cfg.authoritative_port)),
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        let problem = addresses.is_empty().then(|| {
            if problems.is_empty() {
                "has no address (no A or AAAA record)".to_owned()
            } else {
                format!("has no address: {}", problems.join("; "))
            }
        });
        out.push(Nameserver {
            name,
            addresses,
            problem,
        });
    }
    Ok(out)
}

/// The distinct NS names of `zone` in the answer `m` (at least one).
pub(super) fn ns_names(m: &Message, zone: &Hostname) -> Result<Vec<Hostname>> {
    let mut names: Vec<Hostname> = Vec::new();
    for d in answers(m, &to_name(zone)?, RecordType::NS) {
        if let RData::NS(ns) = d {
            let h = to_hostname(&ns.0).map_err(|e| anyhow!("an NS of {zone}: {e}"))?;
            if !names.contains(&h) {
                names.push(h);
            }
        }
    }
    if names.is_empty() {
        bail!(
            "{zone} has no NS records ({})",
            wire::rcode_name(m.metadata.response_code)
        );
    }
    Ok(names)
}

/// The addresses (A or AAAA, as `rtype` says) of `qname` in the answer `m`, with `port`.
pub(super) fn addresses_in(
    m: &Message,
    qname: &Name,
    rtype: RecordType,
    port: u16,
) -> Vec<SocketAddr> {
    answers(m, qname, rtype)
        .filter_map(|d| match d {
            RData::A(a) => Some(SocketAddr::new(a.0.into(), port)),
            RData::AAAA(a) => Some(SocketAddr::new(a.0.into(), port)),
            _ => None,
        })
        .collect()
}
