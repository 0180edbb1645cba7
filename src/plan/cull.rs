//! What `cull` deletes, decided from the world: certificate directories no `live/` link uses
//! that are expired, revoked or unreadable, and keys nothing uses any more. Nothing a live
//! link uses is ever chosen.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use crate::store::CertState;
use crate::world::World;

/// What cull deletes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CullPlan {
    /// Certificate ids.
    pub certs: Vec<String>,
    /// Key ids.
    pub keys: Vec<String>,
}

/// Decides what to delete: certificate directories that no link of `live` points at and
/// that are revoked, expired at `now` or unreadable (directories still waiting for their
/// download are kept); then keys that no remaining certificate or target (`request.key.id`)
/// refers to (an incomplete directory's key is the one its `privkey` link names). Both lists
/// in id order.
pub fn plan_cull(world: &World, live: &BTreeMap<String, String>, now: OffsetDateTime) -> CullPlan {
    let live: BTreeSet<&str> = live.values().map(String::as_str).collect();
    // Every directory with whether it is dead and the key it uses.
    let complete = world.certs.iter().map(|s| {
        (
            s.id.as_str(),
            s.revoked || s.not_after <= now,
            Some(&s.key_id),
        )
    });
    let incomplete = world.inv.certs.iter().map(|c| {
        let dead = match &c.state {
            CertState::Complete(s) => s.revoked || s.not_after <= now,
            CertState::Broken(_) => true,
            CertState::Uncached => false,
        };
        (c.id.as_str(), dead, world.privkey_links.get(&c.id))
    });
    let mut dirs: Vec<_> = complete.chain(incomplete).collect();
    dirs.sort_unstable_by_key(|(id, ..)| *id);
    let mut certs = Vec::new();
    let mut used: BTreeSet<&String> = world
        .targets
        .iter()
        .filter_map(|t| t.key_id.as_ref())
        .collect();
    for (id, dead, key) in dirs {
        if dead && !live.contains(id) {
            certs.push(id.to_owned());
        } else {
            used.extend(key);
        }
    }
    let keys = world
        .inv
        .key_ids
        .iter()
        .filter(|k| !used.contains(k))
        .cloned()
        .collect();
    CullPlan { certs, keys }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::CertSummary;
    use crate::store::{CertRecord, Inventory};
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
        let mut world = World {
            certs: inv.take_summaries(),
            inv,
            ..World::default()
        };
        // The uncached directory links key 'o'; 'p' is nobody's.
        world.privkey_links.insert(id('e'), id('o'));
        let plan = plan_cull(&world, &world.inv.live, NOW);
        assert_eq!(plan.certs, vec![id('b'), id('c'), id('f')]);
        assert_eq!(plan.keys, vec![id('l'), id('m'), id('p'), id('q')]);
    }
}
