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
        let target = answers(&m, &to_name(&current)?, RecordType::CNAME).find_map(|d| match d {
            RData::CNAME(c) => Some(c.0.clone()),
            _ => None,
        });
        let Some(target) = target else {
            return Ok((current, chain));
        };
        let target = to_hostname(&target)
            .map_err(|e| anyhow!("{current} is a CNAME to an unusable name: {e}"))?;
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

/// The zone `name` is in, by SOA lookups from `name` up (the SOA in the answer, or the one a
/// negative answer carries in its authority section).
pub(super) async fn find_zone(cfg: &ResolverConfig, name: &Hostname) -> Result<Hostname> {
    let mut candidate = to_name(name)?;
    while !candidate.is_root() {
        let m = resolve(cfg, &candidate, RecordType::SOA).await?;
        if answers(&m, &candidate, RecordType::SOA).next().is_some() {
            return to_hostname(&candidate);
        }
        // A CNAME here means the negative answer's SOA is the target's zone, not ours.
        let aliased = answers(&m, &candidate, RecordType::CNAME).next().is_some();
        if !aliased
            && let Some(soa) = m
                .authorities
                .iter()
                .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(&candidate))
        {
            return to_hostname(&soa.name);
        }
        candidate = candidate.base_name();
    }
    bail!("no zone found for {name} (no SOA record above it)")
}

/// Asks `server` itself which of its zones holds `name` (a non-recursive SOA question).
pub(super) async fn find_zone_at(
    server: SocketAddr,
    name: &Hostname,
    timeout: std::time::Duration,
) -> Result<Hostname> {
    let qname = to_name(name)?;
    let m = wire::query(server, &qname, RecordType::SOA, false, timeout).await?;
    if let Some(soa) = m
        .answers
        .iter()
        .chain(&m.authorities)
        .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(&qname))
        && m.metadata.authoritative
    {
        return to_hostname(&soa.name);
    }
    bail!(
        "{server} is not authoritative for {name} ({})",
        wire::rcode_name(m.metadata.response_code)
    )
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
    let mut names: Vec<Hostname> = Vec::new();
    for d in answers(&m, &zname, RecordType::NS) {
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
                Ok(m) => addresses.extend(answers(&m, &qname, rtype).filter_map(|d| match d {
                    RData::A(a) => Some(SocketAddr::new(a.0.into(), cfg.authoritative_port)),
                    RData::AAAA(a) => Some(SocketAddr::new(a.0.into(), cfg.authoritative_port)),
                    _ => None,
                })),
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
