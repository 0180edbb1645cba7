//! `acmekeep quickstart [--expert]`: acmetool's set-up wizard, with its prompt ids, so a
//! response file written for acmetool drives it unchanged (doc/quickstart.md lists every
//! prompt id and value). Steps: CA, key, challenge method, account, default hooks, scheduled
//! renewal. Safe to run again: answers already in conf/target become the defaults, hooks
//! follow the managed-marker rules, and an existing renewal job is never duplicated.
//!
//! Every question is answered before anything is changed, so a missing answer under `--batch`
//! (exit 2) leaves the machine exactly as it was, state directory included: the questions
//! read conf/target and the accounts without the lock; then, when no account of the state
//! directory can log in at the CA, the CA's own questions (terms of service, e-mail, EAB) are
//! asked; only then is the state directory locked (which makes its layout), the account
//! registered with those answers, and conf/target, the webroot, the redirector unit, the
//! hooks and the renewal job written, in that order.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};

use crate::account::{AccountLookup, account_session_consented, consent, look_up_account};
use crate::acme::Connector;
use crate::acme::connect::InstantConnector;
use crate::cli::QuickstartArgs;
use crate::exit::config_error;
use crate::interact::{Answer, Interaction, Kind, Question};
use crate::settings::{DEFAULT_STATE_DIR, Settings};
use crate::store::{Inventory, Store};
use crate::system::default_hooks::{self, HookName, InstallResult};
use crate::system::schedule::decide::{self, Ours, Plan, Rights, Wanted};
use crate::system::schedule::program::{self, Program};
use crate::system::schedule::{self, Scheduler};
use crate::system::{Root, units};
use crate::target::{
    DEFAULT_PROVIDER, RawChallenge, RawKey, RawRequest, RawTarget, Target, validate_provider,
};

/// Let's Encrypt's staging directory.
pub const STAGING_PROVIDER: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// The webroot path suggested by default.
const DEFAULT_WEBROOT_PATH: &str = "/var/www/.well-known/acme-challenge";
/// The response-file key that accepts a program path that is not an installed copy (the
/// `--accept-program-path` option is the same answer).
pub const ACCEPT_PROGRAM_PATH: &str = "acmekeep-quickstart-accept-program-path";
/// The response-file key that says whether acmetool's job for this state directory goes.
pub const REPLACE_ACMETOOL_JOB: &str = "acmekeep-quickstart-replace-acmetool-job";
/// The choice of CA: one of the offered directory URLs, `url`, or (as acmetool 0.2.2 takes it)
/// any directory URL.
const CHOOSE_SERVER: &str = "acmetool-quickstart-choose-server";

/// Runs the wizard.
pub fn execute(settings: &Settings, args: &QuickstartArgs) -> Result<ExitCode> {
    let accept = args
        .accept_program_path
        .then(|| (ACCEPT_PROGRAM_PATH.to_owned(), Answer::Bool(true)));
    let io = super::interaction(settings)?.with_answers(accept);
    let expert = args.expert;
    let root = system_root(settings);

    // 1. The questions. Nothing below writes until the account step.
    let reader = Store::open_read_only(&settings.state_dir).ok();
    let answers = ask(settings, &io, expert, &root, reader.as_ref())?;
    let resolved = &answers.resolved;

    // 2. The CA's own questions (terms of service, e-mail, EAB), when no account of this
    // state directory can log in there: still before anything is written.
    let ca = InstantConnector::with_timeout(settings.ca_timeout)
        .connect(&resolved.provider, resolved.provider_ca_bundle.as_ref())?;
    let runtime = super::runtime()?;
    let known = match &reader {
        // Unreadable here: the locked run below reports it, and asks then.
        Some(store) => store.load_inventory().ok(),
        None => Some(Inventory::default()),
    };
    let consented = match known {
        Some(inv) => match runtime.block_on(look_up_account(&ca, &resolved.provider, &inv))? {
            AccountLookup::Registered { .. } => None,
            _ => Some(runtime.block_on(consent(reader.as_ref(), &ca, &resolved.provider, &io))?),
        },
        None => None,
    };

    // 3. The account: found, or registered with those answers.
    let (_lock, store) = super::lock_and_open(settings)?;
    let inv = store.load_inventory()?;
    let (_, account) = runtime.block_on(account_session_consented(
        &store,
        &ca,
        &resolved.provider,
        &inv,
        &io,
        consented,
    ))?;
    eprintln!("Account: {account} at {}", resolved.provider);

    // 4. Everything else, as answered.
    carry_out(&store, &root, &io, expert, answers)?;
    if !settings.batch {
        eprintln!(
            "\nQuickstart complete. Now ask for certificates with `acmekeep want NAME...`; they will appear under {}/live/.",
            settings.state_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every answer of the wizard's first step, before anything is written.
struct Answers {
    /// conf/target as answered.
    conf: RawTarget,
    /// The challenge method chosen (`redirector`, `webroot`, …).
    method: String,
    /// The defaults as a target resolves them.
    resolved: Target,
    /// This program, as jobs and units would name it.
    program: Program,
    /// Whether to install the redirector's unit.
    redirector_unit: bool,
    hooks: HooksPlan,
    /// Where every run writes its metrics, if anywhere.
    metrics_dir: Option<PathBuf>,
    /// The renewal job to install, replace or print, if any.
    schedule: Option<Plan>,
    /// What to tell the person after the account step, in order.
    notes: Vec<String>,
}

/// Asks every question of the first step (reading conf/target and the accounts through
/// `reader`, without the lock).
fn ask(
    settings: &Settings,
    io: &Interaction,
    expert: bool,
    root: &Root,
    reader: Option<&Store>,
) -> Result<Answers> {
    let is_root = nix::unistd::geteuid().is_root();
    let mut conf = match reader {
        Some(store) => store.raw_conf_target().map_err(config_error)?,
        None => RawTarget::default(),
    };
    choose_server(io, expert, &mut conf)?;
    choose_key(io, expert, &mut conf)?;
    choose_profile(io, expert, &mut conf)?;
    let method = choose_method(io, expert, &mut conf)?;
    let metrics_dir = choose_metrics(io, expert, root, &mut conf)?;
    let defaults = match reader {
        Some(store) => store.defaults_from(conf.clone()),
        None => crate::target::check_defaults(&settings.state_dir.join("conf/target"), &conf)
            .map(|()| conf.clone()),
    }
    .map_err(config_error)?;
    let resolved =
        Target::resolve("quickstart", &RawTarget::default(), &defaults).map_err(config_error)?;
    let exe = std::env::current_exe().context("finding acmekeep's own path")?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let temp = std::env::var_os("TMPDIR").map(PathBuf::from);
    let program = program::locate(root, &exe, home.as_deref(), temp.as_deref());
    let redirector_unit = method == "redirector" && ask_redirector_unit(io, expert, root, is_root)?;
    let hooks = plan_hooks(settings, io, expert, is_root)?;
    let ScheduleStep {
        plan: schedule,
        notes: schedule_notes,
    } = plan_schedule(
        settings,
        io,
        expert,
        root,
        is_root,
        &resolved,
        &program,
        metrics_dir.as_deref(),
    )?;
    let mut answers = Answers {
        conf,
        method,
        resolved,
        program,
        redirector_unit,
        hooks,
        metrics_dir,
        schedule,
        notes: Vec::new(),
    };
    let note = gate_on_program(io, expert, &mut answers)?;
    answers.notes.extend(note);
    answers.notes.extend(schedule_notes);
    Ok(answers)
}

/// A renewal job or redirector unit names this program: when its path is not accepted,
/// neither is installed. The note to show about its path, if any.
fn gate_on_program(io: &Interaction, expert: bool, a: &mut Answers) -> Result<Option<String>> {
    let new_job = a.schedule.as_ref().is_some_and(Plan::installs_new_job);
    if (new_job || a.redirector_unit) && !accept_program(io, expert, &a.program)? {
        let what = match (new_job, a.redirector_unit) {
            (true, true) => "the renewal job and the redirector unit were not installed",
            (true, false) => "renewal was not scheduled",
            _ => "the redirector unit was not installed",
        };
        let note = a.program.problem().map(|p| {
            format!("{p} As answered, {what}: install acmekeep, then run the installed copy's quickstart.")
        });
        a.redirector_unit = false;
        if let Some(p) = a.schedule.as_mut().filter(|p| p.installs_new_job()) {
            p.ours = Ours::Nothing;
            p.remove.clear();
        }
        Ok(note)
    } else if a
        .schedule
        .as_ref()
        .is_some_and(|p| matches!(p.ours, Ours::Print(_)))
    {
        // The line to add by hand names this program: say what is wrong with its path.
        Ok(a.program.problem())
    } else {
        Ok(None)
    }
}

/// The last step, under the lock: conf/target, the webroot, the redirector unit, the hooks
/// and the renewal job, in that order, with what to tell the person.
fn carry_out(
    store: &Store,
    root: &Root,
    io: &Interaction,
    expert: bool,
    answers: Answers,
) -> Result<()> {
    let Answers {
        conf,
        method,
        resolved,
        program,
        redirector_unit,
        hooks,
        metrics_dir,
        schedule,
        notes,
    } = answers;
    store.write_conf_target(&conf)?;
    if method == "webroot"
        && let Some(path) = resolved.challenge.webroot_paths.first()
    {
        crate::files::create_dir_all_mode(path, 0o755)
            .with_context(|| format!("creating the webroot {}", path.display()))?;
    }
    if redirector_unit {
        install_redirector_unit(root, &program, &resolved, io, expert)?;
    } else if method == "redirector" {
        eprintln!(
            "Start `acmekeep redirector --user=<unprivileged user>` at boot to answer challenges on port 80."
        );
    }
    install_hooks(store, hooks)?;
    if let Some(dir) = &metrics_dir {
        eprintln!(
            "Prometheus metrics: every run writes {}/acmekeep.prom (monitor.metrics-file in conf/target).",
            dir.display()
        );
    }
    for note in notes {
        eprintln!("{note}");
    }
    if let Some(schedule) = schedule {
        for line in decide::apply(root, &schedule)? {
            eprintln!("{line}");
        }
    }
    Ok(())
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
    // acmetool 0.2.2 takes any answer from the response file as the provider, so a file that
    // gives the directory URL here directly (skipping `url`) must keep working.
    if let Some(Answer::Text(answer)) = io.answer(CHOOSE_SERVER) {
        let answer = answer.trim();
        if !options.iter().any(|(value, _)| *value == answer) {
            validate_provider(answer).map_err(|e| {
                config_error(anyhow!(
                    "the answer to {CHOOSE_SERVER} in the response file is neither one of {}, {} or url, nor a directory URL: {e:#}",
                    DEFAULT_PROVIDER,
                    STAGING_PROVIDER
                ))
            })?;
            request(conf).provider = Some(answer.to_owned());
            return Ok(());
        }
    }
    let default = match current.as_deref() {
        None => 0,
        Some(DEFAULT_PROVIDER) => 0,
        Some(STAGING_PROVIDER) => 1,
        Some(_) => 2,
    };
    let choice = io.ask(
        &Question {
            id: CHOOSE_SERVER,
            title: "Which certificate authority (ACME server) should issue your certificates?",
            body: "Certificates are obtained from an ACME server. Use Let's Encrypt's staging server to try things out.",
            kind: Kind::Choice { options: &options, default },
            implicit: false,
        },
        expert,
    )?;
    let url = if choice.text() == "url" {
        enter_directory_url(io, expert, current.as_deref())?
    } else {
        choice.text().to_owned()
    };
    request(conf).provider = Some(url);
    Ok(())
}

/// Asks for a directory URL until one is valid (at most five times).
fn enter_directory_url(io: &Interaction, expert: bool, current: Option<&str>) -> Result<String> {
    for _ in 0..5 {
        let entered = io.ask(
            &Question {
                id: "acmetool-quickstart-enter-directory-url",
                title: "ACME directory URL (https://…)",
                body: "",
                kind: Kind::Text {
                    default: current.unwrap_or(""),
                },
                implicit: false,
            },
            expert,
        )?;
        let text = entered.text().trim().to_owned();
        match validate_provider(&text) {
            Ok(()) => return Ok(text),
            Err(e) => {
                confirm(
                    io,
                    expert,
                    "acmetool-quickstart-invalid-directory-url",
                    &format!("That is not a valid directory URL: {e:#}"),
                    "",
                    false,
                )
                .map_err(|_| config_error(anyhow!("invalid directory URL {text}: {e:#}")))?;
            }
        }
    }
    Err(config_error(anyhow!("no valid directory URL was given")))
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
        key.rsa_size = ask_rsa_size(io, expert, current.rsa_size)?;
    } else {
        key.ecdsa_curve = Some(ask_curve(io, expert, current.ecdsa_curve.as_deref())?);
    }
    request(conf).key = Some(key);
    Ok(())
}

/// The RSA key size asked for; `None` for the default (2048), also after an unsupported
/// answer the person confirmed.
fn ask_rsa_size(io: &Interaction, expert: bool, current: Option<i64>) -> Result<Option<i64>> {
    let default = current.map(|s| s.to_string()).unwrap_or_default();
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
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<i64>() {
        Ok(n @ (2048 | 3072 | 4096)) => Ok(Some(n)),
        _ => {
            confirm(
                io,
                expert,
                "acmetool-quickstart-invalid-rsa-key-size",
                &format!("{text} is not a supported RSA key size; using 2048"),
                "",
                true,
            )?;
            Ok(None)
        }
    }
}

/// The ECDSA curve asked for (acmetool's nistp521, which public CAs refuse, is P-384).
fn ask_curve(io: &Interaction, expert: bool, current: Option<&str>) -> Result<String> {
    let options = [
        ("nistp256", "P-256 (recommended)"),
        ("nistp384", "P-384"),
        (
            "nistp521",
            "P-521 (public CAs refuse it: P-384 is used instead)",
        ),
    ];
    let default = usize::from(current == Some("nistp384"));
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
    Ok(curve.to_owned())
}

fn system_root(settings: &Settings) -> Root {
    match &settings.system_root {
        Some(dir) => Root::under(dir),
        None => Root::system(std::env::var_os("PATH").as_deref()),
    }
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
            "Redirector: acmekeep's own port-80 daemon (`acmekeep redirector`) answers challenges and redirects every other request to https",
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
    // Created once every question has an answer (see `execute`).
    let path = ask_webroot_path(io, expert, &current)?;
    let challenge = request(conf)
        .challenge
        .get_or_insert_with(RawChallenge::default);
    challenge.webroot_paths = Some(vec![path]);
    Ok("webroot".to_owned())
}

/// Asks for the webroot directory until an absolute path is given that ends in
/// `/.well-known/acme-challenge` or that the person confirms (at most five times).
fn ask_webroot_path(io: &Interaction, expert: bool, current: &str) -> Result<String> {
    for _ in 0..5 {
        let path = io.ask(
            &Question {
                id: "acmetool-quickstart-webroot-path",
                title: "Webroot directory (served as /.well-known/acme-challenge/)",
                body: "",
                kind: Kind::Text { default: current },
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
            .map_err(|_| {
                config_error(anyhow!("the webroot path {} is not absolute", path.text()))
            })?;
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
        return Ok(trimmed);
    }
    Err(config_error(anyhow!("no usable webroot path was given")))
}

/// With the redirector method, as root on a systemd machine, whether to install and start
/// `acmekeep-redirector.service` (serving the default webroot reconcile writes to).
fn ask_redirector_unit(io: &Interaction, expert: bool, root: &Root, is_root: bool) -> Result<bool> {
    if !is_root || !units::systemd_booted(root) {
        return Ok(false);
    }
    confirm(
        io,
        expert,
        "acmetool-quickstart-install-redirector-systemd",
        "Install and start the redirector as a systemd service (it owns port 80)?",
        "The redirector answers challenges from the webroot and redirects every other request to https.",
        false,
    )
}

fn install_redirector_unit(
    root: &Root,
    program: &Program,
    resolved: &Target,
    io: &Interaction,
    expert: bool,
) -> Result<()> {
    let path = resolved
        .challenge
        .webroot_paths
        .first()
        .map(PathBuf::as_path);
    let unit = units::redirector_unit(&program.path, path);
    let installed = units::install_service(root, units::REDIRECTOR_UNIT, &unit)?;
    eprintln!(
        "Installed and started the redirector: {}.",
        installed.display()
    );
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

/// Whether a job or unit may run `program`. An installed copy needs no answer; any other path
/// is said to be one, and needs `--accept-program-path` or its response-file key (a terminal
/// asks, default no). Without an answer and a terminal this stops quickstart with exit 2
/// before anything is changed.
fn accept_program(io: &Interaction, expert: bool, program: &Program) -> Result<bool> {
    let Some(problem) = program.problem() else {
        return Ok(true);
    };
    if io.answer(ACCEPT_PROGRAM_PATH).is_none() && !io.is_interactive() {
        return Err(config_error(anyhow!(
            "{problem} Install acmekeep (README.md, \"Install\") and run the installed copy's quickstart, \
             or accept this path with `acmekeep quickstart --accept-program-path` (response-file key \
             {ACCEPT_PROGRAM_PATH}: true). Nothing was changed."
        )));
    }
    Ok(io
        .ask(
            &Question {
                id: ACCEPT_PROGRAM_PATH,
                title: "Schedule renewal with this path anyway?",
                body: &problem,
                kind: Kind::YesNo { default: false },
                implicit: false,
            },
            expert,
        )?
        .is_yes())
}

/// What quickstart does about the default hooks.
enum HooksPlan {
    /// Install `reload`, and `haproxy` too if asked, in `dir`.
    Install { dir: PathBuf, haproxy: bool },
    /// Not root, and `dir` is not writable: skipped, with a note.
    Skip { dir: PathBuf },
}

fn plan_hooks(
    settings: &Settings,
    io: &Interaction,
    expert: bool,
    is_root: bool,
) -> Result<HooksPlan> {
    let dir = default_hooks::preferred_hook_dir(&settings.hook_dirs)
        .ok_or_else(|| anyhow!("no hook directory configured"))?;
    if !is_root && !writable(&dir) {
        return Ok(HooksPlan::Skip { dir });
    }
    // A haproxy hook that exists is kept up to date like the reload hook (replaced when it
    // carries the managed marker, acmetool's own included); the question is for a new one.
    let haproxy = dir.join(HookName::Haproxy.file_name()).exists()
        || confirm(
            io,
            expert,
            "acmetool-quickstart-install-haproxy-script",
            "Install the haproxy hook (key + certificate in one file, for haproxy, hitch and others)?",
            "",
            true,
        )?;
    Ok(HooksPlan::Install { dir, haproxy })
}

/// Whether this process may create `dir`: write access to it, or to its nearest existing
/// ancestor.
fn writable(dir: &Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    dir.ancestors()
        .find(|d| d.exists())
        .is_some_and(|d| access(d, AccessFlags::W_OK | AccessFlags::X_OK).is_ok())
}

fn install_hooks(store: &Store, plan: HooksPlan) -> Result<()> {
    let (dir, haproxy) = match plan {
        HooksPlan::Install { dir, haproxy } => (dir, haproxy),
        HooksPlan::Skip { dir } => {
            eprintln!(
                "Not running as root: the default hooks (reload, haproxy) were not installed, because only root can write {}. \
                 Run quickstart as root to install them, or give --hooks with a directory of yours.",
                dir.display()
            );
            return Ok(());
        }
    };
    let tmp = store.root().join("tmp");
    let hooks = std::iter::once(HookName::Reload).chain(haproxy.then_some(HookName::Haproxy));
    for hook in hooks {
        let result = default_hooks::install(&dir, &tmp, hook, store.root())?;
        let path = dir.join(hook.file_name());
        let name = hook.file_name();
        match result {
            InstallResult::Installed => eprintln!("Installed the {name} hook: {}.", path.display()),
            InstallResult::Updated => {
                eprintln!(
                    "Updated the {name} hook to this version: {}.",
                    path.display()
                );
            }
            InstallResult::Unchanged => {}
            InstallResult::KeptUserFile => eprintln!(
                "Kept {}: it is not a hook quickstart manages (it lacks the acmetool-managed marker).",
                path.display()
            ),
            InstallResult::KeptDisabled => eprintln!(
                "Kept {}: it is empty, which is how the {name} hook is turned off.",
                path.display()
            ),
        }
    }
    Ok(())
}

/// Where node_exporter's textfile collector reads (Debian's prometheus-node-exporter).
const NODE_EXPORTER_DIR: &str = "var/lib/prometheus/node-exporter";

/// Offers the Prometheus metrics file when node_exporter's textfile directory exists and
/// conf/target names none yet; returns the directory the renewal unit must be able to write.
/// Implicit (asked with `--expert`): yes by default, as the metrics cost a run little.
fn choose_metrics(
    io: &Interaction,
    expert: bool,
    root: &Root,
    conf: &mut RawTarget,
) -> Result<Option<PathBuf>> {
    let dir = root.dir().join(NODE_EXPORTER_DIR);
    let configured = conf
        .monitor
        .as_ref()
        .and_then(|m| m.metrics_file.as_deref())
        .is_some_and(|p| !p.trim().is_empty());
    if configured || !dir.is_dir() {
        return Ok(None);
    }
    let file = dir.join("acmekeep.prom");
    let yes = confirm(
        io,
        expert,
        "acmekeep-quickstart-metrics",
        &format!(
            "Write Prometheus metrics for node_exporter after each run ({})?",
            file.display()
        ),
        "node_exporter's textfile collector exports them; doc/monitoring.md has alerting rules.",
        true,
    )?;
    if !yes {
        return Ok(None);
    }
    conf.monitor
        .get_or_insert_with(Default::default)
        .metrics_file = Some(file.to_string_lossy().into_owned());
    Ok(Some(dir))
}

/// Looks at the renewal jobs already there, asks what to do about them, and plans.
#[expect(
    clippy::too_many_arguments,
    reason = "the answers so far, each used once; a struct would only rename them"
)]
fn plan_schedule(
    settings: &Settings,
    io: &Interaction,
    expert: bool,
    root: &Root,
    is_root: bool,
    resolved: &Target,
    program: &Program,
    metrics_dir: Option<&Path>,
) -> Result<ScheduleStep> {
    let mut scheduler = schedule::detect(root, is_root);
    let mut notes = Vec::new();
    if scheduler == Scheduler::UserCrontab && schedule::detect(root, true) != scheduler {
        notes.push(
            "Not running as root: renewal goes in your own crontab, not in /etc/cron.d or a systemd timer."
                .to_owned(),
        );
    }
    let crontab = match decide::current_crontab(root, scheduler == Scheduler::UserCrontab) {
        Ok(text) => text,
        Err(e) => {
            notes.push(format!("Cannot use your crontab: {e:#}."));
            scheduler = Scheduler::None;
            None
        }
    };
    let found = schedule::survey::survey(root, crontab.as_deref());
    let rights = Rights {
        is_root,
        has_crontab: crontab.is_some(),
    };
    let situation = decide::classify(found, &settings.state_dir, rights);
    let install = !situation.ours.is_empty()
        || scheduler == Scheduler::None
        || confirm(
            io,
            expert,
            "acmetool-quickstart-install-cronjob",
            "Schedule automatic renewal (twice a day, at a random time)?",
            "",
            false,
        )?;
    if !install && situation.ours.is_empty() {
        return Ok(ScheduleStep { plan: None, notes });
    }
    let replace_acmetool = ask_replace_acmetool(io, expert, situation.replaceable.first())?;
    let job = renewal_job(settings, resolved, program, metrics_dir)?;
    let plan = decide::decide(
        situation,
        &Wanted {
            state_dir: settings.state_dir.clone(),
            scheduler,
            job,
            program_installed: program.is_installed(),
            hooks_explicit: settings.hook_dirs_explicit,
            install,
            replace_acmetool,
        },
    );
    Ok(ScheduleStep {
        plan: Some(plan),
        notes,
    })
}

/// Whether acmetool's job `theirs` (renewing this state directory) is to be replaced; yes
/// when there is none.
fn ask_replace_acmetool(
    io: &Interaction,
    expert: bool,
    theirs: Option<&impl std::fmt::Display>,
) -> Result<bool> {
    let Some(theirs) = theirs else {
        return Ok(true);
    };
    Ok(io
        .ask(
            &Question {
                id: REPLACE_ACMETOOL_JOB,
                title: &format!(
                    "{theirs} renews this state directory too; replace it with acmekeep's?"
                ),
                body: "acmetool and acmekeep must not both renew the same state directory on a schedule.",
                kind: Kind::YesNo { default: true },
                // Under --batch acmetool's job is replaced unless the file says no.
                implicit: !io.is_interactive(),
            },
            expert,
        )?
        .is_yes())
}

/// The renewal job to schedule: this program with the state directory and hook directories
/// when not the defaults, at a random time, allowed to write the webroots and the metrics
/// directory.
fn renewal_job(
    settings: &Settings,
    resolved: &Target,
    program: &Program,
    metrics_dir: Option<&Path>,
) -> Result<schedule::Job> {
    let state = (settings.state_dir != Path::new(DEFAULT_STATE_DIR))
        .then_some(settings.state_dir.as_path());
    let hooks: &[PathBuf] = if settings.hook_dirs_explicit {
        &settings.hook_dirs
    } else {
        &[]
    };
    let mut random = [0u8; 2];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow!("no randomness"))?;
    schedule::Job::random(&program.path, state, hooks, random)
        .map_err(config_error)?
        .with_webroots(&resolved.challenge.webroot_paths)
        .and_then(|job| job.with_webroots(metrics_dir.map(Path::to_path_buf).as_slice()))
        .map_err(config_error)
}

/// What [`plan_schedule`] decided, and what to say before doing it.
struct ScheduleStep {
    /// `None`: nothing to do (the answer to scheduling was no, and there is no job of ours).
    plan: Option<Plan>,
    notes: Vec<String>,
}
