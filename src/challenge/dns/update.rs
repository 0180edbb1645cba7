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
use super::{CHALLENGE_LABEL, Published, Rfc2136Config, txt_strings, validate_txt_value};
use crate::acme::dns_account::is_account_label;
use crate::acme::persist;
use crate::name::Hostname;

/// Checks a record name and value given to us: a hostname, not a wildcard, and one of the
/// names acmekeep publishes with a value of its kind: `_acme-challenge.<name>` or
/// `_<account label>._acme-challenge.<name>` (dns-01, dns-account-01) with a dns-01 value,
/// `_validation-persist.<name>` with a dns-persist-01 record value.
pub(super) fn record_owner(name: &str, value: &str) -> Result<Hostname> {
    let h = Hostname::parse(name)?;
    let s = h.as_str();
    let under = |s: &str, label: &str| {
        s.strip_prefix(label)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| !rest.is_empty())
    };
    let account_label = s
        .split_once('.')
        .is_some_and(|(label, rest)| is_account_label(label) && under(rest, CHALLENGE_LABEL));
    if h.is_wildcard() {
        bail!("{h} is a wildcard, not a record name");
    }
    if under(s, CHALLENGE_LABEL) || account_label {
        validate_txt_value(value)?;
    } else if under(s, persist::RECORD_LABEL) {
        if value.len() > persist::MAX_VALUE {
            bail!(
                "the dns-persist-01 value for {h} is {} octets long",
                value.len()
            );
        }
        persist::parse_value(value)
            .map_err(|why| anyhow::anyhow!("{value:?} is not a dns-persist-01 record: {why}"))?;
    } else {
        bail!(
            "{h} is not a record name acmekeep updates ({CHALLENGE_LABEL}.<name>, _<account label>.{CHALLENGE_LABEL}.<name> or {}.<name>)",
            persist::RECORD_LABEL
        );
    }
    Ok(h)
}

/// Works out where `value` for `name` (see `record_owner`) must be published:
/// follows CNAMEs, then takes the configured zone or finds it (through the resolvers, then by
/// asking the update server). Sends nothing that changes DNS.
pub async fn locate(cfg: &Rfc2136Config, name: &str, value: &str) -> Result<Published> {
    let requested = record_owner(name, value)?;
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
pub(super) fn rrset(p: &Published, ttl: u32) -> Result<(RecordSet, hickory_proto::rr::Name)> {
    record_owner(p.requested.as_str(), &p.value)?;
    let (owner, zone) = (to_name(&p.name)?, to_name(&p.zone)?);
    if !zone.zone_of(&owner) {
        bail!("{} is not in zone {}", p.name, p.zone);
    }
    let mut rrset = RecordSet::with_ttl(owner, RecordType::TXT, ttl);
    rrset.add_rdata(RData::TXT(TXT::new(txt_strings(&p.value))));
    Ok((rrset, zone))
}

pub(super) async fn send(
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
    fn only_challenge_names_are_updated_each_with_its_kind_of_value() {
        let v = "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i_X336eUOQZo";
        let p = "ca.example; accounturi=https://ca.example/acct/1; policy=wildcard";
        for good in [
            "_acme-challenge.example.org",
            "_ACME-challenge.Example.org.",
            "_vkbgbqfhr6yv2asd._acme-challenge.example.org",
        ] {
            assert!(record_owner(good, v).is_ok(), "{good}");
            assert!(
                record_owner(good, p).is_err(),
                "{good} with a persist value"
            );
        }
        assert!(record_owner("_validation-persist.example.org", p).is_ok());
        for (name, value) in [
            ("_validation-persist.example.org", v),
            ("_validation-persist.example.org", "ca.example"),
            (
                "_validation-persist.example.org",
                "ca.example; accounturi=x; a=b; a=c",
            ),
            ("_validation-persistx.example.org", p),
            ("_validation-persist", p),
            ("x._validation-persist.example.org", p),
        ] {
            assert!(record_owner(name, value).is_err(), "{name} {value}");
        }
        for bad in [
            "example.org",
            "_acme-challengex.example.org",
            "x._acme-challenge.example.org",
            "_short._acme-challenge.example.org",
            "_vkbgbqfhr6yv2asd.example.org",
            "*._acme-challenge.example.org",
            "_acme-challenge",
            "_acme-challenge..org",
            "_acme-challenge.exa mple.org",
        ] {
            assert!(record_owner(bad, v).is_err(), "{bad}");
        }
    }
}
