//! Hooks against someone who is not root (issue 15): hooks another user or a group could
//! change ran as root, a target's `request.challenge.env` could set `LD_PRELOAD` for them, an
//! order's challenge hooks ran one name after the other, and a hook outlived an acmekeep that
//! was killed. Each test is named after what went wrong before.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

fn write_hook(dir: &Path, name: &str, body: &str) -> PathBuf {
    fs::create_dir_all(dir).expect("mkdir hooks");
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write hook");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether a process is gone (or a zombie nobody reaped yet, as happens in containers).
fn is_dead(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[test]
fn hooks_another_user_or_a_group_could_change_no_longer_run_as_root() {
    let state = StateDir::new();
    let dir = state.hooks_dir();
    let log = state.scratch_dir("out").join("log");
    let record = format!("echo \"${{0##*/}}\" >> '{}'", log.display());
    write_hook(&dir, "10-good", &record);
    let shared = write_hook(&dir, "20-group-writable", &record);
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o775)).expect("chmod");
    // A link into a directory a group can write to (anyone there can swap the target).
    let open = state.scratch_dir("open");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o775)).expect("chmod");
    let planted = write_hook(&open, "planted", &record);
    symlink(&planted, dir.join("30-link-into-group-dir")).expect("symlink");
    if is_root() {
        // Owned by another user, and reached through a directory another user owns.
        let theirs = write_hook(&dir, "40-owned-by-nobody", &record);
        chown(&theirs, Some(65534), None).expect("chown");
        let home = state.scratch_dir("nobody-home");
        let in_home = write_hook(&home, "hook", &record);
        chown(&home, Some(65534), None).expect("chown");
        symlink(&in_home, dir.join("50-link-into-nobodys-dir")).expect("symlink");
    }

    let run = acmekeep(&state, &["test-notify", "x.example"]);
    run.assert_success();
    assert_eq!(fs::read_to_string(&log).expect("log"), "10-good\n");
    run.assert_stderr_contains("refusing to run hook");
    run.assert_stderr_contains("20-group-writable");
    run.assert_stderr_contains("is writable by its group");
    run.assert_stderr_contains("30-link-into-group-dir");
    if is_root() {
        run.assert_stderr_contains("is owned by uid 65534");
        run.assert_stderr_contains("50-link-into-nobodys-dir");
    }

    // A group-writable hook directory refuses the event, and nothing runs.
    fs::remove_file(&log).expect("rm log");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o775)).expect("chmod");
    let run = acmekeep(&state, &["test-notify", "x.example"]);
    assert_ne!(run.code, Some(0), "{}", run.describe());
    run.assert_stderr_contains("refusing to run hooks from");
    assert!(!log.exists());
}

#[test]
fn dangerous_challenge_env_is_refused_naming_the_file_and_key() {
    let state = StateDir::new();
    state.write_desired(
        "preload.example",
        "satisfy:\n  names: [preload.example]\nrequest:\n  challenge:\n    env:\n      LD_PRELOAD: /tmp/evil.so\n",
    );
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(1);
    run.assert_stderr_contains("desired/preload.example");
    run.assert_stderr_contains("request.challenge.env: \"LD_PRELOAD\" may not be set");

    fs::remove_file(state.join("desired/preload.example")).expect("rm");
    state.write_conf_target("request:\n  challenge:\n    env:\n      BASH_ENV: /tmp/evil.sh\n");
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(2);
    run.assert_stderr_contains("conf/target");
    run.assert_stderr_contains("\"BASH_ENV\" may not be set");
}

#[test]
fn challenge_hooks_of_one_order_no_longer_run_one_after_the_other() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    let started = state.scratch_dir("started");
    let log = state.scratch_dir("out").join("log");
    // Each start hook waits (up to 15 s) until the hooks of all three names have started:
    // run one after the other, each would see only itself and the ones before it.
    write_hook(
        &state.hooks_dir(),
        "wait-for-all",
        &format!(
            "[ \"$1\" = challenge-http-start ] || exit 42\ntouch '{s}'/\"$2\"\ni=0\nwhile [ \"$(ls '{s}' | wc -l)\" -lt 3 ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done\necho \"$2 saw $(ls '{s}' | wc -l)\" >> '{l}'",
            s = started.display(),
            l = log.display()
        ),
    );
    let names = [
        "a.parallel.example.org",
        "b.parallel.example.org",
        "c.parallel.example.org",
    ];
    let mut args = vec!["want"];
    args.extend(names);
    acmekeep(&state, &args).assert_success();
    let mut seen: Vec<String> = fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(str::to_owned)
        .collect();
    seen.sort();
    let want: Vec<String> = names.iter().map(|n| format!("{n} saw 3")).collect();
    assert_eq!(seen, want);
}

#[test]
fn killed_acmekeep_no_longer_leaves_its_hook_running() {
    for signal in [
        nix::sys::signal::Signal::SIGKILL,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let state = StateDir::new();
        let pids = state.scratch_dir("pids");
        write_hook(
            &state.hooks_dir(),
            "slow",
            &format!(
                "sleep 300 &\necho $! > '{p}/child'\necho $$ > '{p}/hook'\nwait",
                p = pids.display()
            ),
        );
        let running = spawn_acmekeep(&state, &["test-notify", "x.example"], &RunOpts::default());
        let read = |name: &str| {
            fs::read_to_string(pids.join(name))
                .ok()
                .filter(|s| s.ends_with('\n'))
                .map(|s| s.trim().to_owned())
        };
        let (hook, child) = poll_until(Duration::from_secs(20), Duration::from_millis(20), || {
            Some((read("hook")?, read("child")?))
        })
        .unwrap_or_else(|| panic!("the hook did not start ({signal})"));
        let acmekeep = nix::unistd::Pid::from_raw(i32::try_from(running.id()).expect("pid"));
        nix::sys::signal::kill(acmekeep, signal).expect("kill acmekeep");
        let run = running.wait();
        assert_eq!(run.code, None, "{}", run.describe());
        let gone = poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
            (is_dead(&hook) && is_dead(&child)).then_some(())
        });
        // Clean up before asserting, so a failure leaves nothing behind.
        for pid in [&hook, &child] {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        assert!(
            gone.is_some(),
            "after {signal} of acmekeep, hook {hook} or its child {child} still runs"
        );
    }
}
