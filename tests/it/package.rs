//! The Debian package end to end, on this machine, as an operator installs it: `dpkg -i`
//! beside Debian's acmetool package, then acmetool's steps with the installed program and the
//! real default state directory (`cp responses conf/; acmekeep quickstart --batch; acmekeep
//! want NAME1 NAME2`) against a Pebble on loopback, the man page, the units, lintian, and then
//! `dpkg --remove` and `dpkg --purge`, which must leave /var/lib/acme, edited hooks and hooks
//! the package did not install alone, and take quickstart's cron job away with the package.
//!
//! It changes the machine (/usr/bin, /var/lib/acme, /var/lib/acmekeep, /etc/acme/hooks,
//! /etc/cron.d or the systemd units), so `cargo test` skips it. scripts/test-package runs it
//! alone, as root, after building the package (its path comes in `ACMEKEEP_DEB`); scripts/test
//! runs that in CI. Whatever was at those paths is moved aside first and put back afterwards,
//! also when the test fails; a run that was killed is put back by the next one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const BIN: &str = "/usr/bin/acmekeep";
const STATE: &str = "/var/lib/acme";
const HOOKS: &str = "/etc/acme/hooks";
const SHIPPED_HOOKS: &str = "/usr/share/acmekeep/hooks";
const UNITS: [&str; 4] = [
    "/lib/systemd/system/acmekeep.service",
    "/lib/systemd/system/acmekeep.timer",
    "/lib/systemd/system/acmekeep-redirector.service",
    "/lib/systemd/system/acmekeep-cluster-agent.service",
];
const COMPLETIONS: [&str; 3] = [
    "/usr/share/bash-completion/completions/acmekeep",
    "/usr/share/zsh/vendor-completions/_acmekeep",
    "/usr/share/fish/vendor_completions.d/acmekeep.fish",
];
/// The paths the test may change; what is there is moved aside (suffix [`SAVED`]) and back.
const TOUCHED: [&str; 7] = [
    STATE,
    HOOKS,
    "/var/lib/acmekeep",
    "/etc/cron.d/acmekeep",
    "/etc/systemd/system/acmekeep.service",
    "/etc/systemd/system/acmekeep.timer",
    "/etc/systemd/system/timers.target.wants/acmekeep.timer",
];
const SAVED: &str = ".acmekeep-package-test-saved";
/// Directories the test creates if missing, and then removes again.
const MADE_IF_MISSING: [&str; 2] = ["/etc/cron.d", "/etc/acme"];
/// A managed reload hook as acmetool's quickstart leaves it (marker, no acmekeep).
const ACMETOOLS_RELOAD_HOOK: &str = "#!/bin/sh\n\
    ## This file was installed by acmetool. Any updates to this script will\n\
    ## overwrite changes you make.\n\
    ##!acmetool-managed!##\n\
    [ \"$1\" = \"live-updated\" ] || exit 42\n";

/// Puts the machine back as it was when dropped.
struct Machine {
    made: Vec<PathBuf>,
}

impl Machine {
    /// Moves whatever is at [`TOUCHED`] aside, after putting back what a killed run left.
    fn take() -> Machine {
        for path in TOUCHED {
            let backup = saved(path);
            if exists(Path::new(&backup)) {
                remove_any(Path::new(path));
                fs::rename(&backup, path).unwrap_or_else(|e| panic!("restoring {path}: {e}"));
            }
        }
        for path in TOUCHED {
            if exists(Path::new(path)) {
                fs::rename(path, saved(path))
                    .unwrap_or_else(|e| panic!("moving {path} aside: {e}"));
            }
        }
        let made = MADE_IF_MISSING
            .iter()
            .filter(|dir| !exists(Path::new(dir)))
            .map(PathBuf::from)
            .collect();
        fs::create_dir_all("/etc/cron.d").expect("mkdir /etc/cron.d");
        Machine { made }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if installed() {
            let _ = run("dpkg", &["--purge", "acmekeep"]);
        }
        // What the test made goes; what was there comes back.
        for path in TOUCHED {
            remove_any(Path::new(path));
            let backup = saved(path);
            if exists(Path::new(&backup))
                && let Err(e) = fs::rename(&backup, path)
            {
                eprintln!("could not restore {path} from {backup}: {e}");
            }
        }
        for dir in self.made.iter().rev() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Undoes the README's diversion of /usr/bin/acmetool when dropped.
struct Undivert;

impl Drop for Undivert {
    fn drop(&mut self) {
        if fs::symlink_metadata("/usr/bin/acmetool").is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = fs::remove_file("/usr/bin/acmetool");
        }
        let _ = run(
            "dpkg-divert",
            &["--local", "--rename", "--remove", "/usr/bin/acmetool"],
        );
    }
}

fn saved(path: &str) -> String {
    format!("{path}{SAVED}")
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn remove_any(p: &Path) {
    let removed = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(_) => Ok(()),
    };
    if let Err(e) = removed {
        eprintln!("could not remove {}: {e}", p.display());
    }
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["--show", "--showformat=${db:Status-Status}", "acmekeep"])
        .output()
        .is_ok_and(|o| o.stdout == b"installed" || o.stdout == b"config-files")
}

/// What a command did.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    shown: String,
}

impl Out {
    fn ok(self) -> Out {
        assert_eq!(
            self.code,
            Some(0),
            "{} failed\nstdout:\n{}\nstderr:\n{}",
            self.shown,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `program args` with stdin closed, no acmekeep settings from this environment, and a
/// deadline of 3 minutes.
fn run(program: &str, args: &[&str]) -> Out {
    run_env(program, args, &[])
}

fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
    let shown = format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("ACME_STATE_DIR")
        .env_remove("ACME_HOOKS_DIR")
        .env_remove("ACMEKEEP_JOBS")
        .env("DEBIAN_FRONTEND", "noninteractive");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{shown} did not finish in 3 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect output");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        shown,
    }
}

/// The mode of `p`, or of the file it links to.
fn mode(p: &str) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

fn read(p: &str) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Every path under `dir` with its type and contents (files) or target (links), sorted: two
/// equal listings mean nothing in the tree changed.
fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            let m = fs::symlink_metadata(&path).expect("stat");
            let mode = m.permissions().mode() & 0o7777;
            let what = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).expect("readlink").display())
            } else if m.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                format!("{:?}", fs::read(&path).expect("read"))
            };
            out.push(format!("{} {mode:o} {what}", path.display()));
        }
    }
    out.sort();
    out
}

fn files_of(package: &str) -> Vec<String> {
    run("dpkg", &["--listfiles", package])
        .ok()
        .stdout
        .lines()
        .map(str::to_owned)
        // Directories (and /lib, a link to one) may be shared; files may not.
        .filter(|p| fs::metadata(p).is_ok_and(|m| !m.is_dir()))
        .collect()
}

#[test]
#[ignore = "installs the package into / as root: scripts/test-package runs it (CI)"]
fn debian_package_installs_beside_acmetool_sets_up_like_acmetool_and_purges_cleanly() {
    let deb = std::env::var("ACMEKEEP_DEB")
        .expect("ACMEKEEP_DEB names the package to test (scripts/test-package builds it)");
    assert!(
        nix::unistd::geteuid().is_root(),
        "the package test installs into / and must run as root"
    );
    assert!(
        !installed(),
        "an acmekeep package is installed on this machine; the test would replace it"
    );

    // lintian: no errors (warnings are shown).
    let lint = run("lintian", &["--fail-on", "error", &deb]);
    println!("lintian:\n{}{}", lint.stdout, lint.stderr);
    lint.ok();

    let pebble = Pebble::start(PebbleOpts::default());
    let _machine = Machine::take();

    // A machine that ran acmetool's quickstart has its managed reload hook: installing the
    // package must neither ask about it (stdin is closed) nor replace it.
    fs::create_dir_all(HOOKS).expect("mkdir hooks");
    fs::write(format!("{HOOKS}/reload"), ACMETOOLS_RELOAD_HOOK).expect("write hook");
    fs::set_permissions(format!("{HOOKS}/reload"), fs::Permissions::from_mode(0o755))
        .expect("chmod");

    let install = run("dpkg", &["--install", &deb]).ok();
    println!("{}{}", install.stdout, install.stderr);

    // What the package installed.
    let version = run(BIN, &["--version"]).ok();
    assert!(
        version.stdout.starts_with("acmekeep "),
        "{}",
        version.stdout
    );
    assert_eq!(mode(BIN), 0o755);
    assert_eq!(mode(STATE), 0o755, "the state directory");
    assert_eq!(read(&format!("{HOOKS}/reload")), ACMETOOLS_RELOAD_HOOK);
    assert_eq!(
        read(&format!("{HOOKS}/haproxy")),
        read(&format!("{SHIPPED_HOOKS}/haproxy"))
    );
    assert_eq!(mode(&format!("{HOOKS}/haproxy")), 0o755);
    for path in COMPLETIONS {
        assert!(read(path).contains("acmekeep"), "{path}");
    }
    run("bash", &["-n", COMPLETIONS[0]]).ok();
    // Units: installed, not enabled, and valid for systemd.
    for unit in UNITS {
        assert!(read(unit).contains("/usr/bin/acmekeep") || unit.ends_with(".timer"));
    }
    for wants in [
        "/etc/systemd/system/timers.target.wants/acmekeep.timer",
        "/etc/systemd/system/multi-user.target.wants/acmekeep-redirector.service",
        "/etc/systemd/system/multi-user.target.wants/acmekeep-cluster-agent.service",
    ] {
        assert!(
            !exists(Path::new(wants)),
            "{wants}: the package enabled a unit"
        );
    }
    let mut verify = vec!["verify", "--man=no"];
    verify.extend(UNITS);
    let verified = run("systemd-analyze", &verify);
    assert!(
        verified.code == Some(0) && !verified.stderr.contains("acmekeep"),
        "systemd-analyze verify:\n{}{}",
        verified.stdout,
        verified.stderr
    );
    // The man page: man renders it, groff has no warning.
    let man = run("man", &["-l", "/usr/share/man/man1/acmekeep.1.gz"]).ok();
    for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "COMMANDS"] {
        assert!(man.stdout.contains(section), "{section}:\n{}", man.stdout);
    }
    let groff = run(
        "sh",
        &[
            "-c",
            "zcat /usr/share/man/man1/acmekeep.1.gz | groff -man -ww -z",
        ],
    )
    .ok();
    assert!(groff.stderr.is_empty(), "groff:\n{}", groff.stderr);
    // Beside Debian's acmetool: no file both packages install.
    let ours = files_of("acmekeep");
    assert!(ours.contains(&BIN.to_owned()), "{ours:?}");
    let theirs = files_of("acmetool");
    let shared: Vec<&String> = ours.iter().filter(|p| theirs.contains(p)).collect();
    assert!(shared.is_empty(), "files in both packages: {shared:?}");

    // acmetool's steps, with the installed program and the real /var/lib/acme. The test's own
    // conf/target only makes Pebble trusted and reachable (its CA, its http-01 port).
    fs::create_dir_all(format!("{STATE}/conf")).expect("mkdir conf");
    fs::write(
        format!("{STATE}/conf/target"),
        standard_conf_target(&pebble),
    )
    .expect("conf/target");
    let responses = format!(
        "acmetool-quickstart-choose-server: url\n\
         acmetool-quickstart-enter-directory-url: {}\n\
         acmetool-quickstart-key-type: ecdsa\n\
         acmetool-quickstart-choose-method: listen\n\
         \"acme-agreement:{PEBBLE_TOS}\": true\n\
         acme-enter-email: ops@example.org\n\
         acmetool-quickstart-install-cronjob: true\n",
        pebble.directory_url()
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    let responses_file = scratch.path().join("responses");
    fs::write(&responses_file, responses).expect("responses");
    run(
        "cp",
        &[
            responses_file.to_str().expect("utf-8"),
            &format!("{STATE}/conf/"),
        ],
    )
    .ok();
    let quickstart = run(BIN, &["quickstart", "--batch"]).ok();
    println!("quickstart:\n{}{}", quickstart.stdout, quickstart.stderr);
    // The job runs the installed program, with the defaults left out.
    let job = if exists(Path::new("/run/systemd/system")) {
        let unit = read("/etc/systemd/system/acmekeep.service");
        unit.lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("no ExecStart=:\n{unit}"))
            .to_owned()
    } else {
        let cron = read("/etc/cron.d/acmekeep");
        let line = cron
            .lines()
            .find(|l| l.contains(" root "))
            .unwrap_or_else(|| panic!("no job line:\n{cron}"));
        line.split_once(" root ")
            .map(|(_, command)| command.to_owned())
            .unwrap_or_default()
    };
    assert_eq!(job, "/usr/bin/acmekeep --batch reconcile");
    // quickstart replaced acmetool's managed reload hook with the one the package ships.
    let reload_from_quickstart = read(&format!("{HOOKS}/reload"));
    assert_eq!(
        reload_from_quickstart,
        read(&format!("{SHIPPED_HOOKS}/reload"))
    );

    run(BIN, &["want", "pkg.example.org", "www.pkg.example.org"]).ok();
    let cert = format!("{STATE}/live/pkg.example.org/cert");
    assert!(read(&cert).contains("BEGIN CERTIFICATE"));
    assert_eq!(
        mode(&format!("{STATE}/live/pkg.example.org/privkey")),
        0o600
    );
    // The scheduled command, run as cron runs it, has nothing to do.
    run("sh", &["-c", &job]).ok();
    let cron_job = Path::new("/etc/cron.d/acmekeep");
    let cron = exists(cron_job);

    // An `acmetool` command that runs acmekeep (README, "Install"), in a PATH of its own so the
    // machine's acmetool stays as it is.
    let bin_dir = scratch.path().join("bin");
    fs::create_dir(&bin_dir).expect("mkdir");
    std::os::unix::fs::symlink(BIN, bin_dir.join("acmetool")).expect("symlink");
    let path = format!("{}:/usr/bin:/bin", bin_dir.display());
    let via = run_env("acmetool", &["--version"], &[("PATH", &path)]).ok();
    assert!(via.stdout.starts_with("acmekeep "), "{}", via.stdout);
    let status = run_env("acmetool", &["status"], &[("PATH", &path)]).ok();
    assert!(
        status.stdout.contains("pkg.example.org"),
        "{}",
        status.stdout
    );

    // The README's diversion, which makes /usr/bin/acmetool itself run acmekeep while Debian's
    // acmetool package stays installed. Only in CI, where nothing else runs: every other
    // acmetool test uses that file.
    if std::env::var_os("CI").is_some() && exists(Path::new("/usr/bin/acmetool")) {
        let undo = Undivert;
        run(
            "dpkg-divert",
            &[
                "--local",
                "--rename",
                "--divert",
                "/usr/bin/acmetool.real",
                "--add",
                "/usr/bin/acmetool",
            ],
        )
        .ok();
        std::os::unix::fs::symlink("acmekeep", "/usr/bin/acmetool").expect("link acmetool");
        let via = run("/usr/bin/acmetool", &["--version"]).ok();
        assert!(via.stdout.starts_with("acmekeep "), "{}", via.stdout);
        drop(undo);
        let back = run("/usr/bin/acmetool", &["--version"]);
        assert!(!back.stdout.starts_with("acmekeep"), "{}", back.stdout);
    }

    // Removing keeps the state and the hooks; purging keeps the state and edited hooks.
    let state_before = snapshot(Path::new(STATE));
    let mut edited = fs::OpenOptions::new()
        .append(true)
        .open(format!("{HOOKS}/haproxy"))
        .expect("open hook");
    writeln!(edited, "# edited by the administrator").expect("edit hook");
    drop(edited);
    let edited_hook = read(&format!("{HOOKS}/haproxy"));

    run("dpkg", &["--remove", "acmekeep"]).ok();
    assert!(!exists(Path::new(BIN)));
    assert_eq!(
        snapshot(Path::new(STATE)),
        state_before,
        "remove changed {STATE}"
    );
    assert!(exists(Path::new(&format!("{HOOKS}/reload"))));
    assert_eq!(exists(cron_job), cron, "remove keeps quickstart's cron job");

    // Purge: the reload hook was there before the package (acmetool's; quickstart replaced it
    // with acmekeep's): it is not the package's, and acmetool, still installed, runs it. The
    // haproxy hook the package installed was edited: it stays. quickstart's cron job for
    // /usr/bin/acmekeep would fail from now on: it goes.
    let purge = run("dpkg", &["--purge", "acmekeep"]).ok();
    println!("{}{}", purge.stdout, purge.stderr);
    assert!(!installed());
    assert_eq!(
        snapshot(Path::new(STATE)),
        state_before,
        "purge changed {STATE}"
    );
    assert_eq!(
        read(&format!("{HOOKS}/reload")),
        reload_from_quickstart,
        "purge removed a reload hook the package had not installed"
    );
    assert_eq!(read(&format!("{HOOKS}/haproxy")), edited_hook);
    assert!(
        !exists(cron_job),
        "quickstart's cron job stayed after purge"
    );

    // Installed where there were no hooks, unedited: purge takes both away again.
    for hook in ["reload", "haproxy"] {
        fs::remove_file(format!("{HOOKS}/{hook}")).expect("rm hook");
    }
    run("dpkg", &["--install", &deb]).ok();
    for hook in ["reload", "haproxy"] {
        assert_eq!(
            read(&format!("{HOOKS}/{hook}")),
            read(&format!("{SHIPPED_HOOKS}/{hook}"))
        );
    }
    run("dpkg", &["--purge", "acmekeep"]).ok();
    assert!(!installed());
    for hook in ["reload", "haproxy"] {
        assert!(
            !exists(Path::new(&format!("{HOOKS}/{hook}"))),
            "the unedited {hook} hook the package installed stayed after purge"
        );
    }
    assert!(!exists(Path::new("/var/lib/acmekeep")));
}
