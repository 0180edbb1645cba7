//! `acmekeep want [--no-reconcile] NAME...` (acmetool semantics: nothing is written when a
//! target already covers every name).

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::acme::ChallengeKind;
use crate::challenge::config::ChallengeConfig;
use crate::cli::{ReconcileArgs, WantArgs};
use crate::exit::config_error;
use crate::name::Hostname;
use crate::settings::Settings;
use crate::target::{new_target_filename, new_target_yaml};
use crate::world::Scope;

/// Adds a target for `names` unless one covers them, then reconciles.
pub fn execute(settings: &Settings, args: &WantArgs) -> Result<ExitCode> {
    let names = wanted_names(args)?;
    let yaml = |names: &[Hostname]| -> Result<String> {
        let mut y = new_target_yaml(names)?;
        if !args.cluster_labels.is_empty() {
            y.push_str(&format!(
                "cluster-labels: [{}]\n",
                args.cluster_labels.join(", ")
            ));
        }
        Ok(y)
    };
    // One lock and one load for the whole command: the reconcile that follows runs on the
    // world the coverage was checked in, with the new target added.
    let scope = if args.no_reconcile {
        Scope::TARGETS
    } else {
        Scope::RECONCILE
    };
    let mut session = super::open_session(settings, scope)?;
    let (store, world) = (&session.store, &mut session.world);
    for b in &world.broken {
        tracing::warn!("skipping desired/{}: {:#}", b.file, b.error);
    }
    let covered = world
        .targets
        .iter()
        .any(|t| names.iter().all(|n| t.satisfy_names.contains(n)));
    if covered {
        tracing::info!("a target already covers {}", join(&names));
        if !args.cluster_labels.is_empty() {
            tracing::warn!(
                "a target already covers {}: its cluster labels are not changed (edit its file in desired/)",
                join(&names)
            );
        }
    } else {
        if let Some(wild) = names.iter().find(|n| n.is_wildcard()) {
            // The target as it would be saved: its names over conf/target's settings.
            let probe = crate::target::RawTarget::parse(&yaml(&names)?)?;
            let t = crate::target::Target::resolve("new", &probe, &world.defaults)
                .map_err(config_error)?;
            let hooks = super::hook_runner(settings);
            if let Some(why) = no_dns01(&t.challenge, || dns_hook_found(&hooks)) {
                return Err(config_error(wildcard_refused(
                    wild,
                    &why,
                    &settings.hook_dirs,
                )));
            }
        }
        let file = random_file_name(&names[0])?;
        store
            .write_target(&file, &yaml(&names)?)
            .context("saving the new target")?;
        world.add_target(store, &file);
        tracing::info!("added target desired/{file} for {}", join(&names));
    }
    if args.no_reconcile {
        // On a fleet node, the fleet learns it now.
        drop(session);
        return super::cluster::share_edits(settings);
    }
    super::reconcile::execute_in(settings, &ReconcileArgs::default(), session)
}

/// The names asked for, without repeats, in order; the cluster labels must be valid too.
fn wanted_names(args: &WantArgs) -> Result<Vec<Hostname>> {
    let mut names: Vec<Hostname> = Vec::new();
    for n in &args.names {
        let h = Hostname::parse(n).map_err(config_error)?;
        if !names.contains(&h) {
            names.push(h);
        }
    }
    if let Some(bad) = args
        .cluster_labels
        .iter()
        .find(|l| !crate::cluster::config::valid_name(l))
    {
        return Err(config_error(anyhow::anyhow!(
            "cluster label {bad:?} must be 1-64 letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(names)
}

/// A new target file's name for `first`. Its random part needs no crypto library: seeding
/// aws-lc's generator costs tens of milliseconds of CPU (jitter entropy) in every `want`.
fn random_file_name(first: &Hostname) -> Result<String> {
    let mut random = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut random,
    )
    .context("reading /dev/urandom")?;
    Ok(new_target_filename(first, random))
}

/// Why a target with these challenge settings cannot answer dns-01, the only challenge a
/// CA offers for a wildcard name (RFC 8555 §7.1.3); `None` when it can. `hook_found` says
/// whether a `challenge-dns-start` hook is installed (asked only when it matters).
fn no_dns01(c: &ChallengeConfig, hook_found: impl FnOnce() -> bool) -> Option<String> {
    // A standing dns-persist-01 record needs no method here (it is checked before ordering);
    // dns-account-01 goes through the dns-01 back ends checked below.
    if c.types.contains(&ChallengeKind::DnsPersist01) {
        return None;
    }
    if !c.types.contains(&ChallengeKind::Dns01) && !c.types.contains(&ChallengeKind::DnsAccount01) {
        let types: Vec<&str> = c.types.iter().map(|k| k.name()).collect();
        return Some(format!(
            "request.challenge.types is [{}], without dns-01",
            types.join(", ")
        ));
    }
    if c.dns.rfc2136.is_some() {
        return None;
    }
    if !c.dns.hooks {
        return Some(
            "request.challenge.dns-01 has no server and its hooks are turned off (hooks: false)"
                .to_owned(),
        );
    }
    if hook_found() {
        return None;
    }
    Some(
        "request.challenge.dns-01 has no server, and no hook handles challenge-dns-start"
            .to_owned(),
    )
}

/// The refusal of `want` for the wildcard `name`, naming its TXT record and what to set up.
fn wildcard_refused(name: &Hostname, why: &str, hook_dirs: &[std::path::PathBuf]) -> anyhow::Error {
    let base = name.as_str().strip_prefix("*.").unwrap_or(name.as_str());
    let dirs: Vec<String> = hook_dirs.iter().map(|d| d.display().to_string()).collect();
    anyhow::anyhow!(
        "{name} is a wildcard name: the CA accepts only a dns-01 answer for it, a TXT record at _acme-challenge.{base}, and no dns-01 method is configured ({why}). Nothing was saved. Set request.challenge.dns-01.server (RFC 2136 updates) in conf/target, or install a challenge-dns-start hook (contrib/hooks/nsupdate, contrib/hooks/tinydns) in {}; see doc/challenges.md",
        dirs.join(" or ")
    )
}

/// Whether an executable hook mentions `challenge-dns-start`: a hook that publishes TXT
/// records has to recognise that event name, so it is in its text.
fn dns_hook_found(hooks: &crate::hooks::HookRunner) -> bool {
    const EVENT: &[u8] = b"challenge-dns-start";
    hooks.hooks().unwrap_or_default().iter().any(|path| {
        let mut head = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| {
                std::io::Read::read_to_end(&mut std::io::Read::take(f, 256 * 1024), &mut head)
            })
            .is_ok()
            && head.windows(EVENT.len()).any(|w| w == EVENT)
    })
}

fn join(names: &[Hostname]) -> String {
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{RawTarget, Target};

    fn challenge(conf_target: &str) -> std::sync::Arc<ChallengeConfig> {
        let defaults = RawTarget::parse(conf_target).expect("yaml");
        let raw = RawTarget::parse("satisfy:\n  names: ['*.wild.example.com']\n").expect("yaml");
        Target::resolve("t", &raw, &defaults)
            .expect("resolves")
            .challenge
    }

    #[test]
    fn a_wildcard_needs_a_dns01_method() {
        // The defaults allow dns-01 through hooks: only a hook that handles it will do.
        let c = challenge("");
        assert_eq!(no_dns01(&c, || true), None);
        let why = no_dns01(&c, || false).expect("no hook");
        assert!(why.contains("challenge-dns-start"), "{why}");
        // RFC 2136 updates need no hook.
        let c = challenge(
            "request:\n  challenge:\n    dns-01:\n      server: 192.0.2.53\n      key-name: k\n      secret: c2VjcmV0c2VjcmV0\n",
        );
        assert_eq!(no_dns01(&c, || panic!("not asked")), None);
        // dns-01 not allowed, or its hooks turned off.
        let why = no_dns01(
            &challenge("request:\n  challenge:\n    types: [http-01]\n"),
            || true,
        )
        .expect("http-01 only");
        assert!(why.contains("[http-01]"), "{why}");
        let why = no_dns01(
            &challenge("request:\n  challenge:\n    dns-01:\n      hooks: false\n"),
            || true,
        )
        .expect("hooks off");
        assert!(why.contains("hooks: false"), "{why}");
    }

    #[test]
    fn the_refusal_names_the_record_without_the_star() {
        let name = Hostname::parse("*.wild.example.com").expect("name");
        let e = format!(
            "{:#}",
            wildcard_refused(&name, "why", &[std::path::PathBuf::from("/etc/acme/hooks")])
        );
        assert!(
            e.contains("TXT record at _acme-challenge.wild.example.com,"),
            "{e}"
        );
        assert!(!e.contains("_acme-challenge.*"), "{e}");
        assert!(e.contains("/etc/acme/hooks"), "{e}");
    }
}
