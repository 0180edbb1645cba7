//! quickstart driven only by a response file in `--batch` mode, as an operator would copy
//! one in: the account, conf/target, the default hooks and the renewal job (under a test
//! root instead of /etc), then `want`, and the scheduled command itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::*;

struct Setup {
    pebble: Pebble,
    state: StateDir,
    root: PathBuf,
    webroot: PathBuf,
}

fn setup() -> Setup {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::new();
    // What only tests need (trusting Pebble, its http-01 port): quickstart must keep it.
    state.write_conf_target(&standard_conf_target(&pebble));
    let base = state.path().parent().expect("parent").to_path_buf();
    let root = base.join("sysroot");
    let webroot = base.join("www/.well-known/acme-challenge");
    Setup {
        pebble,
        state,
        root,
        webroot,
    }
}

fn responses(s: &Setup, extra: &str) -> String {
    format!(
        "acmetool-quickstart-choose-server: url\n\
         acmetool-quickstart-enter-directory-url: {}\n\
         acmetool-quickstart-key-type: ecdsa\n\
         acmetool-quickstart-choose-method: webroot\n\
         acmetool-quickstart-webroot-path: {}/\n\
         \"acme-agreement:{PEBBLE_TOS}\": true\n\
         acme-enter-email: ops@example.org\n\
         acmetool-quickstart-install-cronjob: true\n{extra}",
        s.pebble.directory_url(),
        s.webroot.display()
    )
}

fn quickstart(s: &Setup) -> Run {
    acmekeep(
        &s.state,
        &["--system-root", &s.root.to_string_lossy(), "quickstart"],
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn batch_quickstart_sets_up_account_hooks_cron_and_then_want_works() {
    let s = setup();
    std::fs::create_dir_all(s.root.join("etc/cron.d")).expect("mkdir cron.d");
    s.state.write("conf/responses", responses(&s, ""));
    quickstart(&s).assert_success();

    // conf/target: the answers, and the test's own settings kept.
    let conf = s.state.read_string("conf/target");
    assert!(conf.contains(&s.pebble.directory_url()), "{conf}");
    assert!(conf.contains("type: ecdsa"), "{conf}");
    assert!(
        conf.contains(&s.webroot.to_string_lossy().into_owned()),
        "{conf}"
    );
    assert!(
        !conf.contains("acme-challenge/\n"),
        "trailing slash trimmed: {conf}"
    );
    assert!(conf.contains("provider-ca-bundle"), "{conf}");
    assert!(s.webroot.is_dir());
    // The account.
    assert_eq!(s.state.account_ids().len(), 1, "{}", s.state.tree());
    // Default hooks, managed, executable.
    for hook in ["reload", "haproxy"] {
        let p = s.state.hooks_dir().join(hook);
        assert_eq!(mode(&p), 0o755, "{}", p.display());
        assert!(
            std::fs::read_to_string(&p)
                .expect("read")
                .contains("#!acmetool-managed!#")
        );
    }
    // The cron job: acmetool's format, the absolute binary, --state (not the default) and
    // --hooks (given explicitly).
    let cron = std::fs::read_to_string(s.root.join("etc/cron.d/acmekeep")).expect("cron file");
    let line = cron
        .lines()
        .find(|l| l.contains(" root "))
        .unwrap_or_else(|| panic!("{cron}"));
    let fields: Vec<&str> = line.splitn(7, ' ').collect();
    let minute: u8 = fields[0].parse().expect("minute");
    let hour: u8 = fields[1].parse().expect("hour");
    assert!(minute < 60 && hour < 24, "{line}");
    assert_eq!(&fields[2..6], ["*", "*", "*", "root"]);
    let command = fields[6];
    assert!(
        command.starts_with(env!("CARGO_BIN_EXE_acmekeep")),
        "{line}"
    );
    assert!(
        command.contains("--batch") && command.ends_with("reconcile"),
        "{line}"
    );
    assert!(
        command.contains(&s.state.path().to_string_lossy().into_owned()),
        "{line}"
    );
    assert!(command.contains("--hooks"), "{line}");

    // Running quickstart again changes nothing and schedules nothing twice.
    let conf_before = s.state.read_string("conf/target");
    quickstart(&s).assert_success();
    assert_eq!(s.state.read_string("conf/target"), conf_before);
    assert_eq!(
        std::fs::read_dir(s.root.join("etc/cron.d"))
            .expect("ls")
            .count(),
        1
    );
    assert_eq!(s.state.account_ids().len(), 1);

    // want works with what quickstart set up (listener on Pebble's port from the test conf).
    acmekeep(&s.state, &["want", "qs.example.org"]).assert_success();
    assert!(s.state.live_names().contains(&"qs.example.org".to_owned()));

    // The scheduled command line runs as cron would run it (sh -c), and is a no-op now.
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_remove("ACME_STATE_DIR")
        .env_remove("ACME_HOOKS_DIR")
        .output()
        .expect("run the cron command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn quickstart_installs_a_systemd_timer_and_replaces_acmetools_cron_job() {
    let s = setup();
    std::fs::create_dir_all(s.root.join("run/systemd/system")).expect("mkdir");
    std::fs::create_dir_all(s.root.join("etc/cron.d")).expect("mkdir");
    std::fs::write(
        s.root.join("etc/cron.d/acmetool"),
        "SHELL=/bin/sh\n12 3 * * * root /usr/bin/acmetool --batch reconcile\n",
    )
    .expect("acmetool cron");
    s.state.write(
        "conf/responses",
        responses(&s, "acmekeep-quickstart-replace-acmetool-job: true\n"),
    );
    quickstart(&s).assert_success();
    assert!(
        !s.root.join("etc/cron.d/acmetool").exists(),
        "acmetool's job replaced"
    );
    let unit_dir = s.root.join("etc/systemd/system");
    let timer = std::fs::read_to_string(unit_dir.join("acmekeep.timer")).expect("timer");
    let service = std::fs::read_to_string(unit_dir.join("acmekeep.service")).expect("service");
    assert!(timer.contains("OnCalendar=*-*-* "), "{timer}");
    assert!(
        timer.contains("Persistent=true") || timer.contains("Persistent=yes"),
        "{timer}"
    );
    assert!(timer.contains("RandomizedDelaySec="), "{timer}");
    assert!(service.contains("Type=oneshot"), "{service}");
    assert!(
        service.contains(env!("CARGO_BIN_EXE_acmekeep")),
        "{service}"
    );
    let wants = unit_dir.join("timers.target.wants/acmekeep.timer");
    assert!(
        std::fs::symlink_metadata(&wants).is_ok(),
        "timer not enabled"
    );
}

#[test]
fn batch_quickstart_names_the_missing_answer() {
    let s = setup();
    let full = responses(&s, "");
    let without: String = full
        .lines()
        .filter(|l| !l.starts_with("acmetool-quickstart-choose-method"))
        .map(|l| format!("{l}\n"))
        .collect();
    s.state.write("conf/responses", without);
    let run = quickstart(&s);
    run.assert_code(2);
    run.assert_stderr_contains("acmetool-quickstart-choose-method");
    // Nothing was scheduled, no account was made.
    assert!(!s.root.join("etc/cron.d/acmekeep").exists());
    assert!(s.state.account_ids().is_empty());
}

#[test]
fn quickstart_installs_the_redirector_unit_for_the_redirector_method() {
    let s = setup();
    std::fs::create_dir_all(s.root.join("run/systemd/system")).expect("mkdir");
    let answers = responses(&s, "acmetool-quickstart-install-redirector-systemd: true\n").replace(
        "acmetool-quickstart-choose-method: webroot\n",
        "acmetool-quickstart-choose-method: redirector\n",
    );
    s.state.write("conf/responses", answers);
    quickstart(&s).assert_success();
    let unit_dir = s.root.join("etc/systemd/system");
    let unit = std::fs::read_to_string(unit_dir.join("acmekeep-redirector.service")).expect("unit");
    assert!(unit.contains(env!("CARGO_BIN_EXE_acmekeep")), "{unit}");
    assert!(unit.contains("redirector"), "{unit}");
    assert!(
        std::fs::symlink_metadata(
            unit_dir.join("multi-user.target.wants/acmekeep-redirector.service")
        )
        .is_ok(),
        "redirector not enabled"
    );
    // The webroot question is not asked for this method; conf/target has no webroot-paths.
    assert!(!s.state.read_string("conf/target").contains("webroot-paths"));
}
