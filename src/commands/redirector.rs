//! `acmekeep redirector`: the port-80 daemon of acmetool's redirector method (see
//! `crate::challenge::redirector`). Resolves the flags (the challenge directory from
//! `conf/target` when `--path` is not given), binds, drops root, serves until SIGTERM/SIGINT.
//!
//! The order matters: everything that can be a configuration error (exit 2) is checked before
//! any socket is bound; the sockets are bound before privileges are dropped (port 80 needs
//! them); `--challenge-gid` is applied while still root; and the async runtime, with its
//! threads, only starts once the process runs as the unprivileged user.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};

use crate::challenge::config::DEFAULT_WEBROOT;
use crate::challenge::redirector::{self, BindSpec, Config};
use crate::cli::RedirectorArgs;
use crate::exit::config_error;
use crate::settings::Settings;
use crate::system::privileges;

/// One of two spellings of the same setting; both given and different is an error.
fn either<'a>(
    ours: Option<&'a str>,
    acmetool: Option<&'a str>,
    what: &str,
) -> Result<Option<&'a str>> {
    match (ours, acmetool) {
        (Some(a), Some(b)) if a != b => Err(config_error(anyhow!(
            "--{what} {a:?} and --service.{} {b:?} disagree",
            if what == "user" { "uid" } else { "gid" }
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

/// Runs the redirector in the foreground until SIGTERM or SIGINT.
pub fn execute(settings: &Settings, args: &RedirectorArgs) -> Result<ExitCode> {
    let identity = identity_after_binding(args)?;
    let challenge_gid = args
        .challenge_gid
        .as_deref()
        .map(privileges::resolve_group)
        .transpose()
        .map_err(config_error)?;
    let challenge_dir = match &args.path {
        Some(p) => p.clone(),
        None => default_challenge_dir(&settings.state_dir).map_err(config_error)?,
    };
    let binds = args
        .bind
        .iter()
        .map(|b| BindSpec::parse(b))
        .collect::<Result<Vec<_>>>()
        .map_err(config_error)?;

    let listeners = redirector::bind(&binds)?;
    if let Some(gid) = challenge_gid {
        if privileges::share_challenge_dir(&challenge_dir, gid)? {
            tracing::info!("{} now belongs to group {gid}", challenge_dir.display());
        } else {
            tracing::info!(
                "{} does not exist yet: --challenge-gid not applied",
                challenge_dir.display()
            );
        }
    }
    if let Some(id) = &identity {
        privileges::drop_privileges(id)?;
        tracing::debug!("running as {} (uid {}, gid {})", id.name, id.uid, id.gid);
    }
    if !challenge_dir.is_dir() {
        tracing::warn!(
            "challenge directory {} does not exist (yet); challenge requests get 404 until reconcile creates it",
            challenge_dir.display()
        );
    }
    let addrs: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    tracing::info!(
        "redirector on {}: serving {} and redirecting everything else with {}",
        addrs.join(", "),
        challenge_dir.display(),
        args.status_code
    );
    let config = Config {
        challenge_dir,
        status: args.status_code,
        read_timeout: args.read_timeout,
        write_timeout: args.write_timeout,
        max_connections: redirector::MAX_CONNECTIONS,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Challenge files are tiny; a few threads for reading them are plenty.
        .max_blocking_threads(8)
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let shutdown = redirector::shutdown_signal().await?;
        redirector::serve(listeners, config, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Who the redirector runs as once its ports are bound: started as root, the unprivileged
/// user (and group) named, which must be; otherwise whoever started it.
fn identity_after_binding(args: &RedirectorArgs) -> Result<Option<privileges::Identity>> {
    let user = either(args.user.as_deref(), args.service_uid.as_deref(), "user")?;
    let group = either(args.group.as_deref(), args.service_gid.as_deref(), "group")?;
    if !privileges::running_as_root() {
        if let Some(user) = user {
            tracing::warn!("not running as root: --user {user} ignored");
        }
        return Ok(None);
    }
    let Some(user) = user else {
        return Err(config_error(anyhow!(
            "refusing to run the redirector as root: name an unprivileged user to switch to \
             after binding with --user (acmetool: --service.uid), or start it as a non-root \
             user that may bind the port (systemd: DynamicUser=yes with \
             AmbientCapabilities=CAP_NET_BIND_SERVICE, as in the shipped unit)"
        )));
    };
    Ok(Some(
        privileges::resolve_identity(user, group).map_err(config_error)?,
    ))
}

/// The challenge directory when `--path` is not given: the first `webroot-paths` entry of
/// `conf/target`, else its `default-webroot` (acmekeep's replacement for the fixed directory),
/// else `/var/run/acme/acme-challenge`. A missing state directory gives the default. Only
/// `conf/target` (and acmetool's legacy `conf/webroot-path`) is read: no lock, no keys.
pub fn default_challenge_dir(state_dir: &Path) -> Result<PathBuf> {
    if !state_dir.is_dir() {
        return Ok(PathBuf::from(DEFAULT_WEBROOT));
    }
    let store = crate::store::Store::open_read_only(state_dir)?;
    let defaults = store
        .load_defaults()
        .with_context(|| format!("reading {}", state_dir.join("conf/target").display()))?;
    let challenge = defaults.request.and_then(|r| r.challenge);
    let webroot = challenge.as_ref().and_then(|c| {
        c.webroot_paths
            .iter()
            .flatten()
            .find(|p| !p.trim().is_empty())
            .cloned()
            .or_else(|| c.default_webroot.clone().filter(|p| !p.is_empty()))
    });
    Ok(match webroot {
        Some(p) => {
            let trimmed = p.trim_end_matches('/');
            PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed })
        }
        None => PathBuf::from(DEFAULT_WEBROOT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_challenge_dir_follows_conf_target() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            default_challenge_dir(&d.path().join("no-state")).expect("ok"),
            Path::new(DEFAULT_WEBROOT)
        );
        std::fs::create_dir(d.path().join("conf")).expect("mkdir");
        assert_eq!(
            default_challenge_dir(d.path()).expect("ok"),
            Path::new(DEFAULT_WEBROOT)
        );
        let write = |yaml: &str| std::fs::write(d.path().join("conf/target"), yaml).expect("write");
        write("request:\n  challenge:\n    webroot-paths: [/srv/www/acme/, /b]\n");
        assert_eq!(
            default_challenge_dir(d.path()).expect("ok"),
            Path::new("/srv/www/acme")
        );
        write("request:\n  challenge:\n    default-webroot: /run/x\n");
        assert_eq!(
            default_challenge_dir(d.path()).expect("ok"),
            Path::new("/run/x")
        );
        write("request: [not, a, map\n");
        assert!(default_challenge_dir(d.path()).is_err());
    }
}
