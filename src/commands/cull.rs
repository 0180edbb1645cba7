//! `acmekeep cull [--simulate]`: relink, then delete certificate directories no `live/` link
//! uses that are expired, revoked or unreadable, and keys nothing uses any more (acmetool
//! never culled keys, so the keys of failed orders piled up). Nothing a live link uses is
//! ever deleted.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;
use time::OffsetDateTime;

use crate::cli::CullArgs;
use crate::exit::config_error;
use crate::plan;
use crate::settings::Settings;
use crate::store::{CertState, EntryKind, Inventory};
use crate::target::Target;

/// What cull deletes.
#[derive(Debug, Default, PartialEq)]
pub struct CullPlan {
    /// Certificate ids.
    pub certs: Vec<String>,
    /// Key ids.
    pub keys: Vec<String>,
}

/// Decides what to delete (pure): certificate directories that no live link points at and
/// that are revoked, expired at `now` or unreadable (directories still waiting for their
/// download are kept); then keys that no remaining certificate or target (`request.key.id`)
/// refers to. `key_of_cert` gives the key an incomplete certificate directory links to.
pub fn plan_cull(
    inv: &Inventory,
    key_of_cert: &dyn Fn(&str) -> Option<String>,
    targets: &[Target],
    now: OffsetDateTime,
) -> CullPlan {
    let live: BTreeSet<&str> = inv.live.values().map(String::as_str).collect();
    let mut certs = Vec::new();
    for c in &inv.certs {
        if live.contains(c.id.as_str()) {
            continue;
        }
        let dead = match &c.state {
            CertState::Complete(s) => s.revoked || s.not_after <= now,
            CertState::Broken(_) => true,
            CertState::Uncached => false,
        };
        if dead {
            certs.push(c.id.clone());
        }
    }
    let mut used: BTreeSet<String> = targets.iter().filter_map(|t| t.key_id.clone()).collect();
    for c in inv.certs.iter().filter(|c| !certs.contains(&c.id)) {
        let key = match &c.state {
            CertState::Complete(s) => Some(s.key_id.clone()),
            _ => key_of_cert(&c.id),
        };
        used.extend(key);
    }
    let keys = inv
        .key_ids
        .iter()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    CullPlan { certs, keys }
}

/// Runs cull.
pub fn execute(settings: &Settings, args: &CullArgs) -> Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    let (_lock, store) = super::lock_and_open(settings)?;
    let defaults = store.load_defaults().map_err(config_error)?;
    let (targets, _) = store.load_targets(&defaults)?;
    let mut inv = store.load_inventory()?;
    // Relink first (acmetool): a better certificate may free an old one.
    for r in plan::plan_relinks(&targets, &inv.summaries(), &inv.live, now) {
        if args.simulate {
            println!("would relink live/{} -> certs/{}", r.name, r.cert_id);
        } else {
            store.relink(&r.name, &r.cert_id)?;
        }
        inv.live.insert(r.name, r.cert_id);
    }
    let key_of = |id: &str| store.privkey_link_id(id);
    let plan = plan_cull(&inv, &key_of, &targets, now);
    let verb = if args.simulate {
        "would delete"
    } else {
        "deleted"
    };
    for id in &plan.certs {
        if !args.simulate {
            store.remove_entry(EntryKind::Cert, id)?;
        }
        println!("{verb} certs/{id}");
    }
    for id in &plan.keys {
        if !args.simulate {
            store.remove_entry(EntryKind::Key, id)?;
        }
        println!("{verb} keys/{id}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::CertSummary;
    use crate::store::CertRecord;
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-06-01 00:00 UTC);

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 52).collect()
    }

    fn complete(c: char, key: char, days_left: i64, revoked: bool) -> CertRecord {
        CertRecord {
            id: id(c),
            url: None,
            account: None,
            state: CertState::Complete(CertSummary {
                id: id(c),
                names: vec!["a.b".into()],
                not_before: NOW - Duration::days(60),
                not_after: NOW + Duration::days(days_left),
                key_family: None,
                has_private_key: true,
                revoked,
                key_id: id(key),
                profile: None,
                ari_id: None,
            }),
        }
    }

    #[test]
    fn culls_dead_unlinked_certs_and_unused_keys_only() {
        let mut inv = Inventory {
            certs: vec![
                complete('a', 'k', -1, false), // expired, linked: kept
                complete('b', 'l', -1, false), // expired, unlinked: culled
                complete('c', 'm', 30, true),  // revoked, unlinked: culled
                complete('d', 'n', 30, false), // valid, unlinked: kept
                CertRecord {
                    id: id('e'),
                    url: None,
                    account: None,
                    state: CertState::Uncached,
                },
                CertRecord {
                    id: id('f'),
                    url: None,
                    account: None,
                    state: CertState::Broken("x".into()),
                },
            ],
            key_ids: ['k', 'l', 'm', 'n', 'o', 'p', 'q']
                .into_iter()
                .map(id)
                .collect(),
            ..Inventory::default()
        };
        inv.live.insert("a.b".into(), id('a'));
        // The uncached directory links key 'o'; 'p' is nobody's.
        let key_of = |c: &str| (c == id('e')).then(|| id('o'));
        let plan = plan_cull(&inv, &key_of, &[], NOW);
        assert_eq!(plan.certs, vec![id('b'), id('c'), id('f')]);
        assert_eq!(plan.keys, vec![id('l'), id('m'), id('p'), id('q')]);
    }
}
