//! Waiting until every authoritative server of the zone serves the TXT value, before the CA is
//! asked to look.
//!
//! The CA may ask any of the zone's NS, so all of them must answer; each is asked directly,
//! without recursion, so no cache answers for it. Servers are polled together, those that
//! already answered right are not asked again, and the pause between rounds doubles up to
//! [`MAX_PAUSE`]. When the time is up the error lists every lagging server with what it said.
//!
//! An address we cannot send to at all (an IPv6 address on a host without IPv6) is skipped
//! when another address of the same NS answered right: the CA will not be in our position, but
//! we cannot check it, and failing every order for it would be worse.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::lookup::{find_zone, follow_cname, nameservers};
use super::wire::{self, to_name};
use super::{Dns01Error, Lagging, ResolverConfig};
use crate::name::Hostname;

/// First pause between rounds.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// Longest pause between rounds.
const MAX_PAUSE: Duration = Duration::from_secs(10);
/// TXT values quoted in an error before the rest are counted.
const SHOWN_VALUES: usize = 4;

/// What one server said about the name.
#[derive(Debug)]
pub(super) enum Outcome {
    Serves,
    /// Cannot send to this address from here (no route): skippable, see the module docs.
    Unreachable(String),
    Lags(String),
}

/// Waits until every authoritative server of the zone holding `name` (CNAMEs followed) answers
/// `value` in a TXT record, for at most `bound`. The error is [`Dns01Error::NotPropagated`]
/// when servers lag, naming each and its answer.
pub async fn wait_propagated(
    resolver: &ResolverConfig,
    name: &str,
    value: &str,
    bound: Duration,
) -> Result<()> {
    // Only compared with what servers answer; but it goes into messages, so it is checked.
    if value.is_empty()
        || value.len() > crate::acme::persist::MAX_VALUE
        || !value.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        anyhow::bail!(
            "the TXT value to wait for is not printable ASCII of at most {} octets",
            crate::acme::persist::MAX_VALUE
        );
    }
    let start = Instant::now();
    let deadline = start + bound;
    let requested = Hostname::parse(name)?;
    let (owner, zone, servers) = tokio::time::timeout_at(deadline, async {
        let (owner, _) = follow_cname(resolver, &requested).await?;
        let zone = find_zone(resolver, &owner).await?;
        let servers = nameservers(resolver, &zone).await?;
        anyhow::Ok((owner, zone, servers))
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "finding the authoritative servers for {requested} took longer than {bound:?}"
        )
    })??;
    let qname = to_name(&owner)?;

    let lag = |i: usize, address: Option<SocketAddr>, answer: String| Lagging {
        nameserver: servers[i].name.clone(),
        address,
        answer,
    };
    // Addresses still to be confirmed, and what each said last.
    let mut pending: Vec<(usize, SocketAddr, String)> = Vec::new();
    for (i, ns) in servers.iter().enumerate() {
        pending.extend(ns.addresses.iter().map(|a| (i, *a, String::new())));
    }
    let mut served = vec![false; servers.len()];
    let mut unreachable: Vec<(usize, SocketAddr, String)> = Vec::new();
    let mut pause = FIRST_PAUSE;
    loop {
        let timeout = resolver
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(200));
        let mut round = JoinSet::new();
        for (i, addr, _) in pending.drain(..) {
            let (qname, value) = (qname.clone(), value.to_owned());
            round.spawn(async move { (i, addr, ask(addr, &qname, &value, timeout).await) });
        }
        while let Some(joined) = round.join_next().await {
            let Ok((i, addr, outcome)) = joined else {
                continue;
            };
            match outcome {
                Outcome::Serves => served[i] = true,
                Outcome::Unreachable(why) => unreachable.push((i, addr, why)),
                Outcome::Lags(why) => pending.push((i, addr, why)),
            }
        }
        pending.sort_by_key(|(i, addr, _)| (*i, *addr));

        // NS that cannot be confirmed however long we wait: no address, or none reachable.
        let blocked: Vec<Lagging> = servers
            .iter()
            .enumerate()
            .filter(|(i, _)| !served[*i] && !pending.iter().any(|(j, _, _)| j == i))
            .flat_map(|(i, ns)| match &ns.problem {
                Some(p) => vec![lag(i, None, p.clone())],
                None => unreachable
                    .iter()
                    .filter(|(j, _, _)| *j == i)
                    .map(|(_, a, why)| lag(i, Some(*a), why.clone()))
                    .collect(),
            })
            .collect();
        let now = Instant::now();
        if pending.is_empty() && blocked.is_empty() {
            for (i, addr, why) in &unreachable {
                tracing::warn!(
                    "propagation check skipped {} ({addr}): {why}",
                    servers[*i].name
                );
            }
            tracing::debug!(
                "TXT at {owner} served by all {} nameservers of {zone} after {:?}",
                servers.len(),
                now - start
            );
            return Ok(());
        }
        if pending.is_empty() || now >= deadline {
            let mut lagging: Vec<Lagging> = pending
                .into_iter()
                .map(|(i, addr, why)| lag(i, Some(addr), why))
                .collect();
            lagging.extend(blocked);
            return Err(Dns01Error::NotPropagated {
                name: owner,
                zone,
                value: value.to_owned(),
                waited: now - start,
                lagging,
            }
            .into());
        }
        tracing::debug!(
            "waiting for {} nameserver addresses of {zone}",
            pending.len()
        );
        tokio::time::sleep_until((now + pause).min(deadline)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Asks one authoritative server for the TXT records at `qname`.
async fn ask(addr: SocketAddr, qname: &Name, value: &str, timeout: Duration) -> Outcome {
    match wire::query(addr, qname, RecordType::TXT, false, timeout).await {
        Ok(m) => judge(&m, qname, value),
        Err(e) if e.downcast_ref::<wire::NoRoute>().is_some() => {
            Outcome::Unreachable(format!("{e:#}"))
        }
        Err(e) => Outcome::Lags(format!("gave no answer: {e:#}")),
    }
}

/// Whether an authoritative answer contains `value`, and if not, what it said instead.
pub(super) fn judge(m: &Message, qname: &Name, value: &str) -> Outcome {
    let rcode = m.metadata.response_code;
    if rcode != ResponseCode::NoError {
        let hint = match rcode {
            ResponseCode::Refused => " (does it serve this zone?)",
            ResponseCode::NXDomain => " (no such name yet)",
            _ => "",
        };
        return Outcome::Lags(format!("answered {}{hint}", wire::rcode_name(rcode)));
    }
    if !m.metadata.authoritative {
        return Outcome::Lags("answered without authority (not serving this zone?)".to_owned());
    }
    let values: Vec<String> = m
        .answers
        .iter()
        .filter(|r| &r.name == qname)
        .filter_map(|r| txt_value(&r.data))
        .collect();
    if values.iter().any(|v| v == value) {
        return Outcome::Serves;
    }
    if values.is_empty() {
        return Outcome::Lags("has no TXT record there".to_owned());
    }
    let mut shown: Vec<String> = values
        .iter()
        .take(SHOWN_VALUES)
        .map(|v| format!("{:?}", v.chars().take(64).collect::<String>()))
        .collect();
    if values.len() > SHOWN_VALUES {
        shown.push(format!("and {} more", values.len() - SHOWN_VALUES));
    }
    Outcome::Lags(format!("serves other TXT values: {}", shown.join(", ")))
}

/// A TXT record's value as the CA reads it: its character-strings joined, bytes that are not
/// UTF-8 replaced. `None` for any other record type.
pub(super) fn txt_value(data: &RData) -> Option<String> {
    match data {
        RData::TXT(t) => Some(
            t.txt_data
                .iter()
                .map(|s| String::from_utf8_lossy(s))
                .collect::<String>(),
        ),
        _ => None,
    }
}
