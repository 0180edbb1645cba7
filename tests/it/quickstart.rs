//! quickstart driven only by a response file in `--batch` mode, as an operator would copy
//! one in: the account, conf/target, the default hooks and the renewal job (under a test
//! root instead of /etc), then `want`, and the scheduled command itself. Then the path the
//! job runs, the move from acmetool (its jobs for this state directory, for another one, none;
//! as root and as a user), the upgrade of the daily jobs of earlier versions, and the rule
//! that nothing changes before every question has an answer.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// `quickstart` under the test root, accepting the build tree's path for the job (tests run
/// the binary from target/).
fn quickstart(s: &Setup) -> Run {
    quickstart_with(s, &["--accept-program-path"])
}

fn quickstart_with(s: &Setup, extra: &[&str]) -> Run {
    let root = s.root.to_string_lossy().into_owned();
    let mut args = vec!["--system-root", &root, "quickstart"];
    args.extend_from_slice(extra);
    acmekeep(&s.state, &args)
}

/// The one job line of a cron.d file (the line with the user field).
fn cron_job_line(cron: &str) -> &str {
    cron.lines()
        .find(|l| l.contains(" root "))
        .unwrap_or_else(|| panic!("{cron}"))
}

/// The two hours of a cron hour field `H1,H2`, checked to be twelve hours apart.
fn twice_a_day(hours: &str) -> (u8, u8) {
    let (a, b) = hours.split_once(',').unwrap_or_else(|| panic!("{hours}"));
    let (a, b): (u8, u8) = (a.parse().expect("hour"), b.parse().expect("hour"));
    assert!(a < 12 && b == a + 12, "{hours}");
    (a, b)
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
    let line = cron_job_line(&cron);
    let fields: Vec<&str> = line.splitn(7, ' ').collect();
    let minute: u8 = fields[0].parse().expect("minute");
    assert!(minute < 60, "{line}");
    twice_a_day(fields[1]);
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
fn quickstart_installs_a_systemd_timer_and_replaces_acmetools_job_for_this_state_dir() {
    let s = setup();
    std::fs::create_dir_all(s.root.join("run/systemd/system")).expect("mkdir");
    std::fs::create_dir_all(s.root.join("etc/cron.d")).expect("mkdir");
    // As acmetool's quickstart writes it for a state directory that is not the default.
    std::fs::write(
        s.root.join("etc/cron.d/acmetool"),
        format!(
            "SHELL=/bin/sh\nPATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin\nMAILTO=root\n\
             12 3 * * * root /usr/bin/acmetool --batch --state=\"{}\" reconcile\n",
            s.state.path().display()
        ),
    )
    .expect("acmetool cron");
    // No acmekeep-only key: under --batch the job is replaced by default.
    s.state.write("conf/responses", responses(&s, ""));
    let run = quickstart(&s);
    run.assert_success();
    run.assert_stderr_contains("Replaced acmetool's job in");
    assert!(
        !s.root.join("etc/cron.d/acmetool").exists(),
        "acmetool's job replaced"
    );
    let unit_dir = s.root.join("etc/systemd/system");
    let timer = std::fs::read_to_string(unit_dir.join("acmekeep.timer")).expect("timer");
    let service = std::fs::read_to_string(unit_dir.join("acmekeep.service")).expect("service");
    let calendar = timer
        .lines()
        .find_map(|l| l.strip_prefix("OnCalendar=*-*-* "))
        .unwrap_or_else(|| panic!("{timer}"));
    twice_a_day(calendar.split(':').next().unwrap_or_default());
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

/// Everything a quickstart may change, to compare before and after a refused run.
fn snapshot(s: &Setup) -> String {
    let mut out = s.state.tree();
    for dir in [s.root.clone(), s.state.hooks_dir()] {
        let mut files: Vec<PathBuf> = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
        files.sort();
        for f in files {
            let text = std::fs::read(&f).unwrap_or_default();
            out.push_str(&format!(
                "{}\n{}\n",
                f.display(),
                String::from_utf8_lossy(&text)
            ));
        }
    }
    out.push_str(&s.state.read_string("conf/target"));
    out
}

#[test]
fn batch_quickstart_changes_nothing_until_every_question_has_an_answer() {
    let s = setup();
    std::fs::create_dir_all(s.root.join("etc/cron.d")).expect("mkdir");
    let acmetool_job = format!(
        "12 3 * * * root /usr/bin/acmetool --batch --state={} reconcile\n",
        s.state.path().display()
    );
    std::fs::write(s.root.join("etc/cron.d/acmetool"), &acmetool_job).expect("acmetool cron");
    // A managed reload hook of an older version: the one quickstart replaces.
    std::fs::create_dir_all(s.state.hooks_dir()).expect("mkdir");
    std::fs::write(
        s.state.hooks_dir().join("reload"),
        "#!/bin/sh\n##!acmetool-managed!##\n# an older version\n",
    )
    .expect("old hook");
    let full = responses(&s, "");
    s.state.write("conf/responses", &full);
    let before = snapshot(&s);
    // The CA's own questions (terms of service) are answered before the state directory is
    // locked: a missing one leaves even its layout and lock file unmade.
    for (missing, named) in [
        (
            "acmetool-quickstart-install-cronjob",
            "acmetool-quickstart-install-cronjob",
        ),
        (
            "acmetool-quickstart-webroot-path",
            "acmetool-quickstart-webroot-path",
        ),
        ("\"acme-agreement:", "acme-agreement:"),
    ] {
        let without: String = full
            .lines()
            .filter(|l| !l.starts_with(missing))
            .map(|l| format!("{l}\n"))
            .collect();
        s.state.write("conf/responses", &without);
        let run = quickstart(&s);
        run.assert_code(2);
        run.assert_stderr_contains(named);
        s.state.write("conf/responses", &full);
        assert_eq!(snapshot(&s), before, "changed without an answer to {named}");
        assert!(s.state.account_ids().is_empty());
    }
    // With every answer, the hook is replaced and acmetool's job for this directory goes.
    quickstart(&s).assert_success();
    assert!(!s.root.join("etc/cron.d/acmetool").exists());
    assert!(s.root.join("etc/cron.d/acmekeep").exists());
    let hook = std::fs::read_to_string(s.state.hooks_dir().join("reload")).expect("hook");
    assert!(!hook.contains("an older version"), "{hook}");
}

#[test]
fn quickstart_replaces_acmetools_managed_haproxy_hook_and_keeps_an_edited_one() {
    // A machine acmetool set up: its managed reload and haproxy hooks. Both are replaced (the
    // Debian package's postinst tells the administrator quickstart will), whatever the
    // haproxy question says, which is only about installing a missing hook.
    let acmetools =
        "#!/bin/sh\n## This file was installed by acmetool.\n##!acmetool-managed!##\nexit 42\n";
    for (existing, replaced) in [(acmetools, true), ("#!/bin/sh\n# mine\nexit 42\n", false)] {
        let s = setup();
        std::fs::create_dir_all(s.state.hooks_dir()).expect("mkdir");
        for hook in ["reload", "haproxy"] {
            std::fs::write(s.state.hooks_dir().join(hook), acmetools).expect("hook");
        }
        std::fs::write(s.state.hooks_dir().join("haproxy"), existing).expect("hook");
        s.state.write(
            "conf/responses",
            responses(&s, "acmetool-quickstart-install-haproxy-script: false\n"),
        );
        let run = quickstart(&s);
        run.assert_success();
        let haproxy = std::fs::read_to_string(s.state.hooks_dir().join("haproxy")).expect("hook");
        let reload = std::fs::read_to_string(s.state.hooks_dir().join("reload")).expect("hook");
        assert!(reload.contains("acmekeep"), "{reload}");
        if replaced {
            assert!(haproxy.contains("acmekeep"), "{haproxy}");
            run.assert_stderr_contains("Updated the haproxy hook");
        } else {
            assert_eq!(haproxy, existing);
            run.assert_stderr_contains("Kept");
        }
    }
}

#[test]
fn a_backup_copy_of_a_cron_job_is_not_a_job() {
    // Debian's cron skips /etc/cron.d files with a dot in their name: a copy the administrator
    // kept of acmekeep's job is not acmekeep's job (renewal would go unscheduled), and one of
    // acmetool's is not acmetool's job to replace (it is left as it is).
    let s = setup();
    let cron_d = s.root.join("etc/cron.d");
    std::fs::create_dir_all(&cron_d).expect("mkdir");
    s.state.write("conf/responses", responses(&s, ""));
    quickstart(&s).assert_success();
    std::fs::rename(cron_d.join("acmekeep"), cron_d.join("acmekeep.bak")).expect("rename");
    let acmetools = format!(
        "12 3 * * * root /usr/bin/acmetool --batch --state={} reconcile\n",
        s.state.path().display()
    );
    std::fs::write(cron_d.join("acmetool.disabled"), &acmetools).expect("write");
    let run = quickstart(&s);
    run.assert_success();
    assert!(cron_d.join("acmekeep").exists(), "{}", run.stderr);
    assert!(cron_d.join("acmekeep.bak").exists());
    assert_eq!(
        std::fs::read_to_string(cron_d.join("acmetool.disabled")).expect("read"),
        acmetools
    );
    assert!(!run.stderr.contains("acmetool.disabled"), "{}", run.stderr);
}

#[test]
fn quickstart_leaves_an_acmetool_job_for_another_state_dir_and_names_it() {
    let s = setup();
    std::fs::create_dir_all(s.root.join("etc/cron.d")).expect("mkdir");
    // acmetool's default /var/lib/acme: not the test's state directory.
    let theirs = "SHELL=/bin/sh\n12 3 * * * root /usr/bin/acmetool --batch reconcile\n";
    std::fs::write(s.root.join("etc/cron.d/acmetool"), theirs).expect("acmetool cron");
    s.state.write("conf/responses", responses(&s, ""));
    let run = quickstart(&s);
    run.assert_success();
    run.assert_stderr_contains(&format!(
        "Left acmetool's job in {} alone: it renews /var/lib/acme, not {}.",
        s.root.join("etc/cron.d/acmetool").display(),
        s.state.path().display()
    ));
    assert_eq!(
        std::fs::read_to_string(s.root.join("etc/cron.d/acmetool")).expect("kept"),
        theirs
    );
    assert!(
        s.root.join("etc/cron.d/acmekeep").exists(),
        "ours installed too"
    );
}

#[test]
fn quickstart_upgrades_the_daily_cron_job_an_earlier_version_wrote() {
    let s = setup();
    std::fs::create_dir_all(s.root.join("etc/cron.d")).expect("mkdir");
    // Byte for byte what quickstart wrote before renewal ran twice a day, from a build tree.
    let command = format!(
        "{} --batch --state={} --hooks={} reconcile",
        env!("CARGO_BIN_EXE_acmekeep"),
        s.state.path().display(),
        s.state.hooks_dir().display()
    );
    let daily = format!(
        "# acmekeep: daily certificate renewal, written by `acmekeep quickstart`.\n\
         SHELL=/bin/sh\n\
         PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin\n\
         MAILTO=root\n\
         41 19 * * * root {command}\n"
    );
    let path = s.root.join("etc/cron.d/acmekeep");
    std::fs::write(&path, &daily).expect("daily job");
    s.state.write("conf/responses", responses(&s, ""));
    let run = quickstart_with(&s, &[]);
    run.assert_success();
    run.assert_stderr_contains("renewal runs twice a day at 07:41 and 19:41");
    let cron = std::fs::read_to_string(&path).expect("cron file");
    assert_eq!(
        cron,
        daily
            .replace(
                "daily certificate renewal",
                "certificate renewal twice a day"
            )
            .replace("41 19 * * *", "41 7,19 * * *")
    );
    // A job an administrator changed is left alone, with a word about how often it runs.
    let edited = daily.replace("reconcile\n", "reconcile >>/var/log/acmekeep.log 2>&1\n");
    std::fs::write(&path, &edited).expect("edit");
    let run = quickstart_with(&s, &[]);
    run.assert_success();
    run.assert_stderr_contains("changed by hand");
    run.assert_stderr_contains("It runs once a day");
    assert_eq!(std::fs::read_to_string(&path).expect("cron file"), edited);
}

#[test]
fn batch_quickstart_refuses_a_build_tree_path_unless_accepted() {
    let s = setup();
    std::fs::create_dir_all(s.root.join("etc/cron.d")).expect("mkdir");
    s.state.write("conf/responses", responses(&s, ""));
    let before = snapshot(&s);
    let run = quickstart_with(&s, &[]);
    run.assert_code(2);
    run.assert_stderr_contains(&format!(
        "This program, {}, is in a Cargo build tree",
        env!("CARGO_BIN_EXE_acmekeep")
    ));
    run.assert_stderr_contains("--accept-program-path");
    run.assert_stderr_contains("acmekeep-quickstart-accept-program-path: true");
    run.assert_stderr_contains("Nothing was changed.");
    assert_eq!(snapshot(&s), before);
    assert!(s.state.account_ids().is_empty());

    // The response-file key accepts it, like the option.
    s.state.write(
        "conf/responses",
        responses(&s, "acmekeep-quickstart-accept-program-path: true\n"),
    );
    quickstart_with(&s, &[]).assert_success();
    let cron = std::fs::read_to_string(s.root.join("etc/cron.d/acmekeep")).expect("cron");
    assert!(
        cron_job_line(&cron).contains(&format!(" root {} --batch", env!("CARGO_BIN_EXE_acmekeep"))),
        "{cron}"
    );
}

#[test]
fn quickstart_schedules_the_installed_copy_when_it_is_this_program() {
    let s = setup();
    std::fs::create_dir_all(s.root.join("etc/cron.d")).expect("mkdir");
    std::fs::create_dir_all(s.root.join("usr/bin")).expect("mkdir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_acmekeep"),
        s.root.join("usr/bin/acmekeep"),
    )
    .expect("link");
    s.state.write("conf/responses", responses(&s, ""));
    // No acceptance needed: /usr/bin/acmekeep (under the test root) is this very program.
    quickstart_with(&s, &[]).assert_success();
    let cron = std::fs::read_to_string(s.root.join("etc/cron.d/acmekeep")).expect("cron");
    let line = cron_job_line(&cron);
    assert!(
        line.contains(&format!(
            " root /usr/bin/acmekeep --batch --state={} --hooks={} reconcile",
            s.state.path().display(),
            s.state.hooks_dir().display()
        )),
        "{cron}"
    );
}

#[test]
fn a_directory_url_answer_to_choose_server_is_the_provider() {
    let s = setup();
    std::fs::create_dir_all(s.root.join("etc/cron.d")).expect("mkdir");
    let url = s.pebble.directory_url();
    // acmetool 0.2.2 takes the URL here as the provider; no enter-directory-url answer.
    let answers: String = responses(&s, "")
        .lines()
        .filter(|l| !l.starts_with("acmetool-quickstart-enter-directory-url"))
        .map(|l| {
            if l.starts_with("acmetool-quickstart-choose-server") {
                format!("acmetool-quickstart-choose-server: {url}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    // Start from a conf/target with another provider: the answer must replace it.
    s.state
        .write_conf_target(&standard_conf_target(&s.pebble).replace(
            &url,
            "https://acme-staging-v02.api.letsencrypt.org/directory",
        ));
    s.state.write("conf/responses", &answers);
    quickstart(&s).assert_success();
    let conf = s.state.read_string("conf/target");
    assert!(conf.contains(&format!("provider: {url}")), "{conf}");
    assert_eq!(s.state.account_ids().len(), 1);

    // Neither an offered value nor a URL: exit 2, naming the key.
    s.state.write(
        "conf/responses",
        answers.replace(&format!("choose-server: {url}"), "choose-server: pebble"),
    );
    let run = quickstart(&s);
    run.assert_code(2);
    run.assert_stderr_contains("acmetool-quickstart-choose-server");
    run.assert_stderr_contains("nor a directory URL");
}

/// A user made for one test (tests run as root in CI), removed with its crontab on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    /// `None` when the test cannot switch users (not root, or no useradd/setpriv/crontab).
    fn create() -> Option<TestUser> {
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let have = |p: &str| Path::new(p).exists();
        if !is_root || !have("/usr/bin/crontab") || !have("/usr/bin/setpriv") {
            eprintln!("needs root, /usr/bin/crontab (cron) and setpriv; skipping");
            return None;
        }
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("akqs{}x{n}", std::process::id());
        // useradd locks /etc/passwd; parallel tests may collide, so try a few times.
        let mut made = false;
        for _ in 0..20 {
            let out = Command::new("useradd")
                .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
                .args(["--shell", "/usr/sbin/nologin", &name])
                .output()
                .expect("run useradd");
            if out.status.success() {
                made = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(made, "could not create the test user {name}");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().expect("id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("numeric id")
        };
        Some(TestUser {
            uid: id("-u"),
            gid: id("-g"),
            name,
        })
    }

    /// `setpriv` arguments that run a command as this user, with its own environment.
    fn wrapper(&self) -> Vec<String> {
        vec![
            "setpriv".to_owned(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--init-groups".to_owned(),
            "--reset-env".to_owned(),
        ]
    }

    fn crontab(&self) -> String {
        let out = Command::new("crontab")
            .args(["-u", &self.name, "-l"])
            .output()
            .expect("crontab -l");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn set_crontab(&self, text: &str) {
        let _ = Command::new("crontab")
            .args(["-u", &self.name, "-r"])
            .output();
        if text.is_empty() {
            return;
        }
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        let out = Command::new("crontab")
            .args(["-u", &self.name])
            .arg(file.path())
            .output()
            .expect("crontab");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn chown(&self, path: &Path) {
        let out = Command::new("chown")
            .args(["-R", &format!("{}:{}", self.uid, self.gid)])
            .arg(path)
            .output()
            .expect("chown");
        assert!(out.status.success());
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("crontab")
            .args(["-u", &self.name, "-r"])
            .output();
        for _ in 0..20 {
            match Command::new("userdel").arg(&self.name).output() {
                Ok(o) if o.status.success() => return,
                _ => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    }
}

/// quickstart as an ordinary user: the root-only parts (system hook directory, /etc/cron.d,
/// systemd units) are skipped with a note, renewal goes in the user's own crontab, and acmetool's
/// jobs are replaced, kept or named by the state directory they serve. Exit 0 every time.
#[test]
fn quickstart_as_a_user_skips_what_needs_root_and_uses_its_crontab() {
    let Some(user) = TestUser::create() else {
        return;
    };
    let pebble = Pebble::start(PebbleOpts::fast());
    let bin = env!("CARGO_BIN_EXE_acmekeep");

    // Each case: what is there before, then what the output and the crontab must show.
    struct Case {
        crontab: &'static str,
        etc_cron_d: bool,
    }
    let cases = [
        (
            "none",
            Case {
                crontab: "",
                etc_cron_d: false,
            },
        ),
        (
            "same",
            Case {
                crontab: "5 4 * * * /usr/bin/acmetool --batch --state=\"@STATE@\" reconcile\n",
                etc_cron_d: false,
            },
        ),
        (
            "other",
            Case {
                crontab: "MAILTO=me\n5 4 * * * /usr/bin/acmetool --batch reconcile\n",
                etc_cron_d: false,
            },
        ),
        (
            "root-only",
            Case {
                crontab: "",
                etc_cron_d: true,
            },
        ),
    ];
    for (label, case) in cases {
        let state = StateDir::new();
        let base = state.path().parent().expect("parent").to_path_buf();
        let root = base.join("sysroot");
        // The machine: systemd and /etc/cron.d exist, but only root may use them.
        for dir in ["run/systemd/system", "etc/cron.d", "usr/bin"] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        std::os::unix::fs::symlink("/usr/bin/crontab", root.join("usr/bin/crontab")).expect("link");
        // The CA bundle where the user can read it.
        let bundle = base.join("pebble-ca.pem");
        std::fs::copy(pebble.ca_bundle_path(), &bundle).expect("copy bundle");
        state.write_conf_target(&format!(
            "request:\n  provider: {}\n  provider-ca-bundle: {}\n",
            pebble.directory_url(),
            bundle.display()
        ));
        state.write(
            "conf/responses",
            format!(
                "acmetool-quickstart-choose-server: {}\n\
                 acmetool-quickstart-choose-method: listen\n\
                 \"acme-agreement:{PEBBLE_TOS}\": true\n\
                 acme-enter-email: ops@example.org\n\
                 acmetool-quickstart-install-cronjob: true\n",
                pebble.directory_url()
            ),
        );
        let state_path = state.path().display().to_string();
        if case.etc_cron_d {
            std::fs::write(
                root.join("etc/cron.d/acmetool"),
                format!(
                    "1 2 * * * root /usr/bin/acmetool --batch --state={state_path} reconcile\n"
                ),
            )
            .expect("acmetool cron");
        }
        user.set_crontab(&case.crontab.replace("@STATE@", &state_path));
        user.chown(&base);
        // The hook directory is root's, as /etc/acme/hooks is.
        std::fs::create_dir_all(state.hooks_dir()).expect("mkdir");
        let root_str = root.display().to_string();
        let run = acmekeep_with(
            &state,
            &[
                "--system-root",
                &root_str,
                "quickstart",
                "--accept-program-path",
            ],
            &RunOpts {
                wrapper: user.wrapper(),
                ..RunOpts::default()
            },
        );
        run.assert_success();
        run.assert_stderr_contains(
            "Not running as root: the default hooks (reload, haproxy) were not installed",
        );
        run.assert_stderr_contains("Not running as root: renewal goes in your own crontab, not in /etc/cron.d or a systemd timer.");
        assert!(
            std::fs::read_dir(state.hooks_dir())
                .expect("ls")
                .next()
                .is_none(),
            "{label}: no hook written"
        );
        assert_eq!(state.account_ids().len(), 1, "{label}");
        for path in ["etc/systemd/system", "etc/cron.d/acmekeep"] {
            assert!(!root.join(path).exists(), "{label}: {path} is root's");
        }
        let crontab = user.crontab();
        let ours = format!(
            "{bin} --batch --state={state_path} --hooks={} reconcile",
            state.hooks_dir().display()
        );
        let our_lines: Vec<&str> = crontab.lines().filter(|l| l.contains(&ours)).collect();
        match label {
            "none" | "same" | "other" => {
                assert_eq!(our_lines.len(), 1, "{label}: {crontab}");
                let fields: Vec<&str> = our_lines[0].split(' ').collect();
                twice_a_day(fields[1]);
                run.assert_stderr_contains("Renewal scheduled twice a day at");
                run.assert_stderr_contains("a line in your crontab");
            }
            _ => {
                assert!(our_lines.is_empty(), "{label}: {crontab}");
                run.assert_stderr_contains("only root can change it");
                run.assert_stderr_contains("acmekeep's job was not installed");
            }
        }
        match label {
            "same" => {
                assert!(!crontab.contains("acmetool"), "{label}: {crontab}");
                run.assert_stderr_contains("Replaced acmetool's job in your crontab");
            }
            "other" => {
                assert!(
                    crontab
                        .starts_with("MAILTO=me\n5 4 * * * /usr/bin/acmetool --batch reconcile\n"),
                    "{crontab}"
                );
                run.assert_stderr_contains(&format!(
                    "Left acmetool's job in your crontab alone: it renews /var/lib/acme, not {state_path}."
                ));
            }
            _ => {}
        }
        // Run again: nothing more is added.
        let again = acmekeep_with(
            &state,
            &[
                "--system-root",
                &root_str,
                "quickstart",
                "--accept-program-path",
            ],
            &RunOpts {
                wrapper: user.wrapper(),
                ..RunOpts::default()
            },
        );
        again.assert_success();
        assert_eq!(user.crontab(), crontab, "{label}: second run");
    }
}

#[test]
fn quickstart_offers_the_metrics_file_when_node_exporter_reads_textfiles() {
    const NAME: &str = "metrics.quickstart.example.org";
    let s = setup();
    std::fs::create_dir_all(s.root.join("run/systemd/system")).expect("mkdir");
    let node = s.root.join("var/lib/prometheus/node-exporter");
    std::fs::create_dir_all(&node).expect("mkdir");
    let prom = node.join("acmekeep.prom");
    // No answer in the file: yes by default.
    s.state.write("conf/responses", responses(&s, ""));
    let run = quickstart(&s);
    run.assert_success();
    run.assert_stderr_contains(&format!(
        "Prometheus metrics: every run writes {} (monitor.metrics-file in conf/target).",
        prom.display()
    ));
    let conf = s.state.read_string("conf/target");
    assert!(
        conf.contains(&format!("metrics-file: {}", prom.display())),
        "{conf}"
    );
    let service = std::fs::read_to_string(s.root.join("etc/systemd/system/acmekeep.service"))
        .expect("service");
    let rw = service
        .lines()
        .find(|l| l.starts_with("ReadWritePaths="))
        .unwrap_or_else(|| panic!("{service}"));
    assert!(rw.contains(&format!(" -{}", node.display())), "{rw}");
    // The next run writes the file.
    acmekeep(&s.state, &["want", NAME]).assert_success();
    let text = std::fs::read_to_string(&prom).expect("the metrics file");
    assert!(
        text.contains(&format!("name=\"{NAME}\",state=\"valid\",")),
        "{text}"
    );

    // Answered no: conf/target names no file (and a second quickstart asks again).
    let s = setup();
    std::fs::create_dir_all(s.root.join("var/lib/prometheus/node-exporter")).expect("mkdir");
    s.state.write(
        "conf/responses",
        responses(&s, "acmekeep-quickstart-metrics: false\n"),
    );
    quickstart(&s).assert_success();
    let conf = s.state.read_string("conf/target");
    assert!(!conf.contains("metrics-file"), "{conf}");
}
