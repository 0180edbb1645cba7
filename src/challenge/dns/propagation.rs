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

use super::lookup::{Nameserver, find_zone, follow_cname, nameservers};
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
    check_value(value)?;
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

    let mut state = Rounds::new(&servers);
    let mut pause = FIRST_PAUSE;
    loop {
        let timeout = resolver
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(200));
        state.ask_all(&qname, value, timeout).await;
        let blocked = state.blocked(&servers);
        let now = Instant::now();
        if state.pending.is_empty() && blocked.is_empty() {
            for (i, addr, why) in &state.unreachable {
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
        if state.pending.is_empty() || now >= deadline {
            let mut lagging: Vec<Lagging> = state
                .pending
                .into_iter()
                .map(|(i, addr, why)| lag(&servers[i], Some(addr), why))
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
            state.pending.len()
        );
        tokio::time::sleep_until((now + pause).min(deadline)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// The TXT value to wait for: only compared with what servers answer, but it goes into
/// messages, so it must be printable ASCII of bounded length.
fn check_value(value: &str) -> Result<()> {
    if value.is_empty()
        || value.len() > crate::acme::persist::MAX_VALUE
        || !value.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        anyhow::bail!(
            "the TXT value to wait for is not printable ASCII of at most {} octets",
            crate::acme::persist::MAX_VALUE
        );
    }
    Ok(())
}

/// A lagging server as reported.
fn lag(ns: &Nameserver, address: Option<SocketAddr>, answer: String) -> Lagging {
    Lagging {
        nameserver: ns.name.clone(),
        address,
        answer,
    }
}

/// Where the check stands, by server index (into the zone's [`Nameserver`]s).
struct Rounds {
    /// Addresses still to be confirmed, and what each said last.
    pending: Vec<(usize, SocketAddr, String)>,
    /// Servers one of whose addresses served the value.
    served: Vec<bool>,
    /// Addresses that cannot be reached from here, and why.
    unreachable: Vec<(usize, SocketAddr, String)>,
}

impl Rounds {
    /// Every address of every server still to be confirmed.
    fn new(servers: &[Nameserver]) -> Self {
        Rounds {
            pending: servers
                .iter()
                .enumerate()
                .flat_map(|(i, ns)| ns.addresses.iter().map(move |a| (i, *a, String::new())))
                .collect(),
            served: vec![false; servers.len()],
            unreachable: Vec::new(),
        }
    }

    /// Asks every pending address at once (each for at most `timeout`); those that still
    /// lag stay pending, in a stable order.
    async fn ask_all(&mut self, qname: &Name, value: &str, timeout: Duration) {
        let mut round = JoinSet::new();
        for (i, addr, _) in self.pending.drain(..) {
            let (qname, value) = (qname.clone(), value.to_owned());
            round.spawn(async move { (i, addr, ask(addr, &qname, &value, timeout).await) });
        }
        while let Some(joined) = round.join_next().await {
            let Ok((i, addr, outcome)) = joined else {
                continue;
            };
            match outcome {
                Outcome::Serves => self.served[i] = true,
                Outcome::Unreachable(why) => self.unreachable.push((i, addr, why)),
                Outcome::Lags(why) => self.pending.push((i, addr, why)),
            }
        }
        self.pending.sort_by_key(|(i, addr, _)| (*i, *addr));
    }

    /// The servers that cannot be confirmed however long we wait: no address, or none
    /// reachable.
    fn blocked(&self, servers: &[Nameserver]) -> Vec<Lagging> {
        servers
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.served[*i] && !self.pending.iter().any(|(j, _, _)| j == i))
            .flat_map(|(i, ns)| match &ns.problem {
                Some(p) => vec![lag(ns, None, p.clone())],
                None => self
                    .unreachable
                    .iter()
                    .filter(|(j, _, _)| *j == i)
                    .map(|(_, a, why)| lag(ns, Some(*a), why.clone()))
                    .collect(),
            })
            .collect()
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
