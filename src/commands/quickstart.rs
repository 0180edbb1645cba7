//! `acmekeep quickstart [--expert]`: acmetool's set-up wizard, with its prompt ids, so a
//! response file written for acmetool drives it unchanged (doc/quickstart.md lists every
//! prompt id and value). Steps: CA, key, challenge method (conf/target is saved after each),
//! account, default hooks, scheduled renewal. Safe to run again: answers already in
//! conf/target become the defaults, hooks follow the managed-marker rules, and an existing
//! renewal job is never duplicated.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use crate::cli::QuickstartArgs;
use crate::default_hooks::{self, HookName, InstallResult};
use crate::exit::config_error;
use crate::interact::{Interaction, Kind, Question};
use crate::reconcile::{Connector, InstantConnector, account_session};
use crate::schedule::{self, Existing, Outcome, Root};
use crate::settings::{DEFAULT_STATE_DIR, Settings};
use crate::store::Store;
use crate::target::{
    DEFAULT_PROVIDER, RawChallenge, RawKey, RawRequest, RawTarget, Target, validate_provider,
};

/// Let's Encrypt's staging directory.
pub const STAGING_PROVIDER: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// The webroot path suggested by default.
const DEFAULT_WEBROOT_PATH: &str = "/var/www/.well-known/acme-challenge";

/// Runs the wizard.
pub fn execute(settings: &Settings, args: &QuickstartArgs) -> Result<ExitCode> {
    let (_lock, store) = super::lock_and_open(settings)?;
    let io = super::interaction(settings)?;
    let expert = args.expert;
    let mut conf = store.raw_conf_target().map_err(config_error)?;

    choose_server(&io, expert, &mut conf)?;
    store.write_conf_target(&conf)?;
    choose_key(&io, expert, &mut conf)?;
    choose_profile(&io, expert, &mut conf)?;
    store.write_conf_target(&conf)?;
    let method = choose_method(&io, expert, &mut conf)?;
    store.write_conf_target(&conf)?;

    // The account: found or registered (terms of service and e-mail from the same answers).
    let defaults = store.load_defaults().map_err(config_error)?;
    let resolved =
        Target::resolve("quickstart", &RawTarget::default(), &defaults).map_err(config_error)?;
    let inv = store.load_inventory()?;
    let ca = InstantConnector::with_timeout(settings.ca_timeout)
        .connect(&resolved.provider, resolved.provider_ca_bundle.as_ref())?;
    let (_, account) =
        super::runtime()?.block_on(account_session(&store, &ca, &resolved.provider, &inv, &io))?;
    eprintln!("Account: {account} at {}", resolved.provider);

    if method == "redirector" {
        offer_redirector_unit(settings, &io, expert, &resolved)?;
    }
    install_hooks(settings, &store, &io, expert)?;
    install_schedule(settings, &io, expert, &resolved)?;

    if !settings.batch {
        eprintln!(
            "\nQuickstart complete. Now ask for certificates with `acmekeep want NAME...`; they will appear under {}/live/.",
            settings.state_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A yes/no question whose default is yes; `Ok(true)` for yes.
fn confirm(
    io: &Interaction,
    expert: bool,
    id: &str,
    title: &str,
    body: &str,
    implicit: bool,
) -> Result<bool> {
    Ok(io
        .ask(
            &Question {
                id,
                title,
                body,
                kind: Kind::YesNo { default: true },
                implicit,
            },
            expert,
        )?
        .is_yes())
}

/// The ACME profile (empty: the CA's default). Implicit: asked only with `--expert`.
fn choose_profile(io: &Interaction, expert: bool, conf: &mut RawTarget) -> Result<()> {
    let current = conf
        .request
        .as_ref()
        .and_then(|r| r.profile.clone())
        .unwrap_or_default();
    let answer = io.ask(
        &Question {
            id: "acmekeep-quickstart-profile",
            title: "ACME profile to order with (e.g. shortlived; empty for the CA's default)",
            body: "",
            kind: Kind::Text { default: &current },
            implicit: true,
        },
        expert,
    )?;
    let profile = answer.text().trim().to_owned();
    request(conf).profile = (!profile.is_empty()).then_some(profile);
    Ok(())
}

fn request(conf: &mut RawTarget) -> &mut RawRequest {
    conf.request.get_or_insert_with(Default::default)
}

fn choose_server(io: &Interaction, expert: bool, conf: &mut RawTarget) -> Result<()> {
    let current = conf.request.as_ref().and_then(|r| r.provider.clone());
    let options = [
        (DEFAULT_PROVIDER, "Let's Encrypt (live certificates)"),
        (
            STAGING_PROVIDER,
            "Let's Encrypt staging (test certificates, not trusted)",
        ),
        ("url", "Another ACME CA: enter its directory URL"),
    ];
    let default = match current.as_deref() {
        None => 0,
        Some(DEFAULT_PROVIDER) => 0,
        Some(STAGING_PROVIDER) => 1,
        Some(_) => 2,
    };
    let choice = io.ask(
        &Question {
            id: "acmetool-quickstart-choose-server",
            title: "Which certificate authority (ACME server) should issue your certificates?",
            body: "Certificates are obtained from an ACME server. Use Let's Encrypt's staging server to try things out.",
            kind: Kind::Choice { options: &options, default },
            implicit: false,
        },
        expert,
    )?;
    let url = if choice.text() == "url" {
        let mut url = None;
        for _ in 0..5 {
            let entered = io.ask(
                &Question {
                    id: "acmetool-quickstart-enter-directory-url",
                    title: "ACME directory URL (https://…)",
                    body: "",
                    kind: Kind::Text {
                        default: current.as_deref().unwrap_or(""),
                    },
                    implicit: false,
                },
                expert,
            )?;
            let text = entered.text().trim().to_owned();
            match validate_provider(&text) {
                Ok(()) => {
                    url = Some(text);
                    break;
                }
                Err(e) => {
                    confirm(
                        io,
                        expert,
                        "acmetool-quickstart-invalid-directory-url",
                        &format!("That is not a valid directory URL: {e:#}"),
                        "",
                        false,
                    )
                    .map_err(|_| config_error(anyhow!("invalid directory URL {text:?}: {e:#}")))?;
                }
            }
        }
        url.ok_or_else(|| config_error(anyhow!("no valid directory URL was given")))?
    } else {
        choice.text().to_owned()
    };
    request(conf).provider = Some(url);
    Ok(())
}

fn choose_key(io: &Interaction, expert: bool, conf: &mut RawTarget) -> Result<()> {
    let current = conf
        .request
        .as_ref()
        .and_then(|r| r.key.clone())
        .unwrap_or_default();
    let options = [
        ("rsa", "RSA (compatible with everything)"),
        ("ecdsa", "ECDSA (smaller and faster)"),
    ];
    let kind = io.ask(
        &Question {
            id: "acmetool-quickstart-key-type",
            title: "Which type of key should certificates use?",
            body: "",
            kind: Kind::Choice {
                options: &options,
                default: usize::from(current.kind.as_deref() == Some("ecdsa")),
            },
            implicit: true,
        },
        expert,
    )?;
    let mut key = RawKey {
        kind: Some(kind.text().to_owned()),
        id: current.id.clone(),
        ..RawKey::default()
    };
    if kind.text() == "rsa" {
        let default = current.rsa_size.map(|s| s.to_string()).unwrap_or_default();
        let size = io.ask(
            &Question {
                id: "acmetool-quickstart-rsa-key-size",
                title: "RSA key size in bits (2048, 3072 or 4096; empty for 2048)",
                body: "",
                kind: Kind::Text { default: &default },
                implicit: true,
            },
            expert,
        )?;
        let text = size.text().trim();
        if !text.is_empty() {
            match text.parse::<i64>() {
                Ok(n @ (2048 | 3072 | 4096)) => key.rsa_size = Some(n),
                _ => {
                    confirm(
                        io,
                        expert,
                        "acmetool-quickstart-invalid-rsa-key-size",
                        &format!("{text:?} is not a supported RSA key size; using 2048"),
                        "",
                        true,
                    )?;
                }
            }
        }
    } else {
        let options = [
            ("nistp256", "P-256 (recommended)"),
            ("nistp384", "P-384"),
            (
                "nistp521",
                "P-521 (public CAs refuse it: P-384 is used instead)",
            ),
        ];
        let default = usize::from(current.ecdsa_curve.as_deref() == Some("nistp384"));
        let curve = io.ask(
            &Question {
                id: "acmetool-quickstart-ecdsa-curve",
                title: "Which elliptic curve?",
                body: "",
                kind: Kind::Choice {
                    options: &options,
                    default,
                },
                implicit: true,
            },
            expert,
        )?;
        // acmetool offered nistp521, which public CAs refuse: it becomes P-384.
        let curve = match curve.text() {
            "nistp521" => "nistp384",
            other => other,
        };
        key.ecdsa_curve = Some(curve.to_owned());
    }
    request(conf).key = Some(key);
    Ok(())
}

fn system_root(settings: &Settings) -> Root {
    match &settings.system_root {
        Some(dir) => Root::under(dir),
        None => Root::system(std::env::var_os("PATH").as_deref()),
    }
}

/// With the redirector method on a systemd machine, offers to install and start
/// `acmekeep-redirector.service`, serving the default webroot reconcile writes to.
fn offer_redirector_unit(
    settings: &Settings,
    io: &Interaction,
    expert: bool,
    resolved: &Target,
) -> Result<()> {
    let root = system_root(settings);
    if !is_root() || !schedule::systemd_booted(&root) {
        eprintln!(
            "Start `acmekeep redirector --user=<unprivileged user>` at boot to answer challenges on port 80."
        );
        return Ok(());
    }
    let want = confirm(
        io,
        expert,
        "acmetool-quickstart-install-redirector-systemd",
        "Install and start the redirector as a systemd service (it owns port 80)?",
        "The redirector answers challenges from the webroot and redirects every other request to https.",
        false,
    )?;
    if !want {
        return Ok(());
    }
    let exe = std::env::current_exe().context("finding acmekeep's own path")?;
    let path = resolved
        .challenge
        .webroot_paths
        .first()
        .map(PathBuf::as_path);
    let unit = crate::redirector::unit_text(&exe, path);
    let installed = schedule::install_service(&root, crate::redirector::UNIT_NAME, &unit)?;
    eprintln!("Installed {}.", installed.display());
    confirm(
        io,
        expert,
        "acmetool-quickstart-complete",
        "The redirector is installed; continue",
        "",
        true,
    )?;
    Ok(())
}

fn choose_method(io: &Interaction, expert: bool, conf: &mut RawTarget) -> Result<String> {
    let options = [
        (
            "webroot",
            "Webroot: a web server serves /.well-known/acme-challenge/ from a directory",
        ),
        (
            "proxy",
            "Proxy: a web server forwards /.well-known/acme-challenge/ to 127.0.0.1:402",
        ),
        (
            "listen",
            "Listen: nothing uses port 80, acmekeep answers on it itself",
        ),
        (
            "redirector",
            "Redirector: acmekeep's port-80 daemon (arrives in a later version; works like listen meanwhile)",
        ),
        (
            "stateless",
            "Stateless: the web server answers challenges from the account thumbprint",
        ),
        (
            "hook",
            "Hooks: your challenge-http/dns hook scripts answer challenges",
        ),
    ];
    let method = io.ask(
        &Question {
            id: "acmetool-quickstart-choose-method",
            title: "How can this machine prove it controls its names (http-01)?",
            body: "acmekeep tries every method at once (webroot files, its own listeners on :80 and 127.0.0.1:402, hooks); this answer decides which questions follow.",
            kind: Kind::Choice { options: &options, default: 0 },
            implicit: false,
        },
        expert,
    )?;
    if method.text() != "webroot" {
        return Ok(method.text().to_owned());
    }
    let current = conf
        .request
        .as_ref()
        .and_then(|r| r.challenge.as_ref())
        .and_then(|c| c.webroot_paths.as_ref())
        .and_then(|p| p.first().cloned())
        .unwrap_or_else(|| DEFAULT_WEBROOT_PATH.to_owned());
    let mut chosen = None;
    for _ in 0..5 {
        let path = io.ask(
            &Question {
                id: "acmetool-quickstart-webroot-path",
                title: "Webroot directory (served as /.well-known/acme-challenge/)",
                body: "",
                kind: Kind::Text { default: &current },
                implicit: false,
            },
            expert,
        )?;
        let trimmed = path.text().trim().trim_end_matches('/').to_owned();
        if !Path::new(&trimmed).is_absolute() || trimmed.contains('\n') {
            confirm(
                io,
                expert,
                "acmetool-quickstart-webroot-path-invalid",
                "The webroot path must be an absolute path.",
                "",
                false,
            )
            .map_err(|_| config_error(anyhow!("webroot path {:?} is not absolute", path.text())))?;
            continue;
        }
        if !trimmed.ends_with("/.well-known/acme-challenge") {
            let ok = io.ask(
                &Question {
                    id: "acmetool-quickstart-webroot-path-unlikely",
                    title: &format!(
                        "{trimmed} does not end in /.well-known/acme-challenge; use it anyway?"
                    ),
                    body: "",
                    kind: Kind::YesNo { default: true },
                    implicit: !io.is_interactive(),
                },
                expert,
            )?;
            if !ok.is_yes() {
                continue;
            }
        }
        chosen = Some(trimmed);
        break;
    }
    let path = chosen.ok_or_else(|| config_error(anyhow!("no usable webroot path was given")))?;
    crate::store::fs::create_dir_all_mode(Path::new(&path), 0o755)
        .with_context(|| format!("creating webroot {path}"))?;
    let challenge = request(conf)
        .challenge
        .get_or_insert_with(RawChallenge::default);
    challenge.webroot_paths = Some(vec![path]);
    Ok("webroot".to_owned())
}

fn install_hooks(settings: &Settings, store: &Store, io: &Interaction, expert: bool) -> Result<()> {
    let dir = default_hooks::preferred_hook_dir(&settings.hook_dirs)
        .ok_or_else(|| anyhow!("no hook directory configured"))?;
    let tmp = store.root().join("tmp");
    let report = |hook: HookName, r: InstallResult| {
        eprintln!("Hook {}: {r:?}", dir.join(hook.file_name()).display());
    };
    let r = default_hooks::install(&dir, &tmp, HookName::Reload, store.root())?;
    report(HookName::Reload, r);
    if !dir.join(HookName::Haproxy.file_name()).exists() {
        let want = confirm(
            io,
            expert,
            "acmetool-quickstart-install-haproxy-script",
            "Install the haproxy hook (key + certificate in one file, for haproxy, hitch and others)?",
            "",
            true,
        )?;
        if want {
            let r = default_hooks::install(&dir, &tmp, HookName::Haproxy, store.root())?;
            report(HookName::Haproxy, r);
        }
    }
    Ok(())
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn install_schedule(
    settings: &Settings,
    io: &Interaction,
    expert: bool,
    resolved: &Target,
) -> Result<()> {
    let root = system_root(settings);
    let existing = schedule::find_existing(&root, None);
    if let Existing::Acmekeep(at) = &existing {
        eprintln!("Renewal is already scheduled ({at}).");
        return Ok(());
    }
    let want = confirm(
        io,
        expert,
        "acmetool-quickstart-install-cronjob",
        "Schedule automatic renewal (a systemd timer or cron job at a random time of day)?",
        "",
        false,
    )?;
    if !want {
        return Ok(());
    }
    let mut replace = false;
    if let Existing::Acmetool(at) = &existing {
        replace = confirm(
            io,
            expert,
            "acmekeep-quickstart-replace-acmetool-job",
            &format!("acmetool's renewal job was found ({at}); replace it with acmekeep's?"),
            "acmetool and acmekeep must not both reconcile the same state directory on a schedule.",
            false,
        )?;
    }
    let exe = std::env::current_exe().context("finding acmekeep's own path")?;
    let state = (settings.state_dir != Path::new(DEFAULT_STATE_DIR))
        .then_some(settings.state_dir.as_path());
    let hooks: &[PathBuf] = if settings.hook_dirs_explicit {
        &settings.hook_dirs
    } else {
        &[]
    };
    let mut random = [0u8; 2];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow!("no randomness"))?;
    let job = schedule::Job::random(&exe, state, hooks, random)?
        .with_webroots(&resolved.challenge.webroot_paths)?;
    let sched = schedule::detect(&root, is_root());
    match schedule::install(&root, sched, &job, replace)? {
        Outcome::Installed {
            installed,
            replaced,
        } => {
            eprintln!(
                "Renewal scheduled daily at {:02}:{:02}: {installed:?}",
                job.hour(),
                job.minute()
            );
            for r in replaced {
                eprintln!("Replaced acmetool's job at {r}.");
            }
        }
        Outcome::AlreadyScheduled(at) => eprintln!("Renewal is already scheduled ({at})."),
        Outcome::AcmetoolKept { at, replaceable } => {
            if replaceable {
                eprintln!("Kept acmetool's renewal job at {at}; acmekeep's was not installed.");
            } else {
                bail!(
                    "acmetool's renewal job at {at} must be removed first (e.g. `systemctl disable --now acmetool.timer`)"
                );
            }
        }
        Outcome::PrintedOnly(line) => {
            eprintln!(
                "No scheduler found. Add this line to a crontab to renew automatically:\n{line}"
            );
        }
    }
    Ok(())
}
