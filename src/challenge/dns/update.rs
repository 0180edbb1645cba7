//! Adding and removing the TXT record with RFC 2136 UPDATE messages.
//!
//! An add appends to the RRset (other TXT records at the name stay: a wildcard and its base
//! name share `_acme-challenge.<name>`, and two orders may overlap); a removal deletes exactly
//! our value (RFC 2136 §2.5.4), so it can be repeated and never touches another record.

use anyhow::{Context, Result, bail};
use hickory_proto::op::update_message;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{RData, RecordSet, RecordType};

use super::lookup::{find_zone, find_zone_at, follow_cname};
use super::wire::{self, to_name};
use super::{CHALLENGE_LABEL, Published, Rfc2136Config, validate_txt_value};
use crate::name::Hostname;

/// Checks a record name given to us: a hostname, not a wildcard, `_acme-challenge.<name>`.
fn challenge_owner(name: &str) -> Result<Hostname> {
    let h = Hostname::parse(name)?;
    if h.is_wildcard()
        || !h
            .as_str()
            .strip_prefix(CHALLENGE_LABEL)
            .is_some_and(|rest| rest.starts_with('.'))
    {
        bail!("{h} is not a dns-01 record name ({CHALLENGE_LABEL}.<name>)");
    }
    Ok(h)
}

/// Works out where `value` for `name` (`_acme-challenge.<identifier>`) must be published:
/// follows CNAMEs, then takes the configured zone or finds it (through the resolvers, then by
/// asking the update server). Sends nothing that changes DNS.
pub async fn locate(cfg: &Rfc2136Config, name: &str, value: &str) -> Result<Published> {
    validate_txt_value(value)?;
    let requested = challenge_owner(name)?;
    let (owner, cnames) = follow_cname(&cfg.resolver, &requested)
        .await
        .with_context(|| format!("following CNAMEs from {requested}"))?;
    let zone = match &cfg.zone {
        Some(z) => z.clone(),
        None => match find_zone(&cfg.resolver, &owner).await {
            Ok(z) => z,
            Err(e) => find_zone_at(cfg.server, &owner, cfg.timeout)
                .await
                .with_context(|| format!("finding the zone of {owner}: {e:#}"))?,
        },
    };
    if !to_name(&zone)?.zone_of(&to_name(&owner)?) {
        bail!(
            "{owner}{} is not in zone {zone}",
            if cnames.is_empty() {
                String::new()
            } else {
                format!(" (the CNAME target of {requested})")
            }
        );
    }
    Ok(Published {
        requested,
        cnames,
        name: owner,
        zone,
        value: value.to_owned(),
        ttl: cfg.ttl,
    })
}

/// Sends the UPDATE that adds `p.value` to the TXT records at `p.name`.
pub async fn add(cfg: &Rfc2136Config, p: &Published) -> Result<()> {
    let (rrset, zone) = rrset(p, p.ttl)?;
    let msg = update_message::append(rrset, zone, false, true);
    send(cfg, p, msg, "adding")
        .await
        .inspect(|()| tracing::info!("published TXT {} at {} (zone {})", p.value, p.name, p.zone))
}

/// Publishes `value` at `name` (`_acme-challenge.<identifier>`, CNAMEs followed): [`locate`]
/// then [`add`].
pub async fn publish(cfg: &Rfc2136Config, name: &str, value: &str) -> Result<Published> {
    let p = locate(cfg, name, value).await?;
    add(cfg, &p).await?;
    Ok(p)
}

/// Deletes exactly the TXT record `p` describes; other TXT records at the name stay.
/// Deleting a record that is not there succeeds.
pub async fn unpublish(cfg: &Rfc2136Config, p: &Published) -> Result<()> {
    let (rrset, zone) = rrset(p, 0)?;
    let msg = update_message::delete_by_rdata(rrset, zone, true);
    send(cfg, p, msg, "removing").await
}

/// The one-record RRset for `p`, and its zone, re-checked (the update builders assert it).
fn rrset(p: &Published, ttl: u32) -> Result<(RecordSet, hickory_proto::rr::Name)> {
    validate_txt_value(&p.value)?;
    let (owner, zone) = (to_name(&p.name)?, to_name(&p.zone)?);
    if !zone.zone_of(&owner) {
        bail!("{} is not in zone {}", p.name, p.zone);
    }
    let mut rrset = RecordSet::with_ttl(owner, RecordType::TXT, ttl);
    rrset.add_rdata(RData::TXT(TXT::new(vec![p.value.clone()])));
    Ok((rrset, zone))
}

async fn send(
    cfg: &Rfc2136Config,
    p: &Published,
    msg: hickory_proto::op::Message,
    doing: &str,
) -> Result<()> {
    let key = cfg.key.load().await?;
    wire::update(cfg.server, msg, &key, &p.zone, cfg.timeout)
        .await
        .with_context(|| format!("{doing} TXT {} at {} in zone {}", p.value, p.name, p.zone))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_challenge_names_are_updated() {
        assert!(challenge_owner("_acme-challenge.example.org").is_ok());
        assert!(challenge_owner("_ACME-challenge.Example.org.").is_ok());
        for bad in [
            "example.org",
            "_acme-challengex.example.org",
            "x._acme-challenge.example.org",
            "*._acme-challenge.example.org",
            "_acme-challenge",
            "_acme-challenge..org",
            "_acme-challenge.exa mple.org",
        ] {
            assert!(challenge_owner(bad).is_err(), "{bad}");
        }
    }
}
