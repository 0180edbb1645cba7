//! `acmekeep cull [--simulate]`: relink, then delete certificate directories no `live/` link
//! uses that are expired, revoked or unreadable, and keys nothing uses any more (acmetool
//! never culled keys, so the keys of failed orders piled up). Nothing a live link uses is
//! ever deleted.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::CullArgs;
use crate::plan::{self, Policy};
use crate::settings::Settings;
use crate::store::EntryKind;
use crate::world::{Scope, World};

/// Runs cull.
pub fn execute(settings: &Settings, args: &CullArgs) -> Result<ExitCode> {
    let now = settings.clock.now_utc();
    let (_lock, store) = super::lock_and_open(settings)?;
    let world = World::load(&store, Scope::CULL)?;
    let plan = plan::plan(
        &world,
        now,
        &Policy {
            cull: true,
            ..Policy::default()
        },
    );
    // Relink first (acmetool): a better certificate may free an old one (the plan's cull is
    // decided on the links as they are after these).
    for r in &plan.relinks {
        if args.simulate {
            println!("would relink live/{} -> certs/{}", r.name, r.cert_id);
        } else {
            store.relink(&r.name, &r.cert_id)?;
        }
    }
    let plan = plan.cull.unwrap_or_default();
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
