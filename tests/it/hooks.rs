//! Hooks end to end: acmetool's protocol as hook scripts see it (argv, stdin, environment,
//! working directory), fired by real runs against Pebble.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::*;

/// Installs a hook that appends what it saw to `log`, in one write: the challenge hooks of
/// an order run at the same time.
fn recording_hook(state: &StateDir, name: &str, log: &Path, exit: i32) -> PathBuf {
    let dir = state.hooks_dir();
    std::fs::create_dir_all(&dir).expect("mkdir hooks");
    let path = dir.join(name);
    let script = format!(
        "#!/bin/sh\nrecord=$(\n  echo \"ARGS $*\"\n  echo \"STATE ${{ACME_STATE_DIR-unset}}\"\n  echo \"PWD $(pwd)\"\n  echo \"HOOKSDIR ${{ACME_HOOKS_DIR-unset}}\"\n  echo \"CUSTOM ${{X_CUSTOM-unset}}\"\n  printf 'STDIN<'; cat; printf '>'\n)\nprintf '%s\\n' \"$record\" >> '{}'\nexit {exit}\n",
        log.display()
    );
    std::fs::write(&path, script).expect("write hook");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[test]
fn live_updated_and_challenge_hooks_follow_acmetool_protocol() {
    const NAME: &str = "hooks.example.org";
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    // Challenge hooks get the target's request.challenge.env; live-updated does not.
    let conf = standard_conf_target(&pebble).replace(
        "    http-self-test: false\n",
        "    http-self-test: false\n    env:\n      X_CUSTOM: custom-value\n",
    );
    state.write_conf_target(&conf);
    let log = state.path().parent().expect("parent").join("hook.log");
    recording_hook(&state, "10-record", &log, 0);
    recording_hook(&state, "20-not-mine", &log.with_extension("42"), 42);

    acmekeep(&state, &["want", NAME, &format!("www.{NAME}")]).assert_success();
    let text = read_log(&log);
    let file = state.desired_files().remove(0);
    let state_dir = state.path().to_string_lossy().into_owned();

    // challenge-http-start and -stop for each authorization, with the key authorization on
    // stdin (no newline) and the target's env.
    for name in [NAME.to_owned(), format!("www.{NAME}")] {
        let starts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("ARGS challenge-http-start {name} {file} ")))
            .collect();
        assert_eq!(starts.len(), 1, "{text}");
        let token = starts[0].rsplit(' ').next().expect("token");
        assert!(
            text.contains(&format!("ARGS challenge-http-stop {name} {file} {token}")),
            "{text}"
        );
        assert!(text.contains(&format!("STDIN<{token}.")), "{text}");
    }
    assert!(text.contains("CUSTOM custom-value"), "{text}");

    // One live-updated with every changed name on stdin, one per line.
    let live: Vec<&str> = text.lines().filter(|l| *l == "ARGS live-updated").collect();
    assert_eq!(live.len(), 1, "{text}");
    assert!(
        text.contains(&format!("STDIN<{NAME}\nwww.{NAME}\n>")),
        "{text}"
    );
    assert!(text.contains(&format!("STATE {state_dir}")), "{text}");
    assert!(text.contains("PWD /\n"), "{text}");
    assert!(text.contains("HOOKSDIR unset"), "{text}");
    // The live-updated block has no challenge env.
    let live_block = text.split("ARGS live-updated").nth(1).expect("block");
    assert!(live_block.contains("CUSTOM unset"), "{text}");

    // Nothing changes: no live-updated.
    std::fs::remove_file(&log).expect("rm log");
    acmekeep(&state, &["reconcile"]).assert_success();
    assert!(
        !read_log(&log).contains("live-updated"),
        "{}",
        read_log(&log)
    );

    // A forced renewal (revoke, then the replacement) fires live-updated again for both
    // names.
    let _ = std::fs::remove_file(&log);
    let id = state.live_cert_id(NAME);
    acmekeep(&state, &["revoke", &id]).assert_success();
    assert_ne!(state.live_cert_id(NAME), id);
    let text = read_log(&log);
    assert_eq!(text.matches("ARGS live-updated").count(), 1, "{text}");
    assert!(
        text.contains(&format!("STDIN<{NAME}\nwww.{NAME}\n>")),
        "{text}"
    );
    assert!(text.contains(&format!("STATE {state_dir}")), "{text}");

    // test-notify runs live-updated with the given names.
    let run = acmekeep(&state, &["test-notify", "a.example", "b.example:ecc"]);
    run.assert_success();
    assert!(
        read_log(&log).contains("STDIN<a.example\nb.example:ecc\n>"),
        "{}",
        read_log(&log)
    );
}

#[test]
fn reconcile_failed_hook_names_what_failed_and_test_notify_reports_failures() {
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    let log = state.path().parent().expect("parent").join("hook.log");
    recording_hook(&state, "record", &log, 0);
    pebble.dns_set_servfail("fails.example.org");
    acmekeep(&state, &["want", "fails.example.org"]).assert_code(1);
    let text = read_log(&log);
    assert!(text.contains("ARGS reconcile-failed"), "{text}");
    assert!(text.contains("STDIN<fails.example.org\n>"), "{text}");
    assert!(!text.contains("live-updated"), "{text}");

    // test-notify shows what a hook printed, a hook that succeeded too; a failing hook makes
    // it exit 1 and show its output.
    let good = state.hooks_dir().join("aa-says");
    std::fs::write(&good, "#!/bin/sh\necho \"reloaded $1\"\n").expect("write");
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = acmekeep(&state, &["test-notify", "x.example"]);
    run.assert_success();
    run.assert_stderr_contains("aa-says");
    run.assert_stderr_contains("  | reloaded live-updated");
    let bad = state.hooks_dir().join("zz-broken");
    std::fs::write(&bad, "#!/bin/sh\necho 'something broke' >&2\nexit 3\n").expect("write");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = acmekeep(&state, &["test-notify", "x.example"]);
    run.assert_code(1);
    run.assert_stderr_contains("zz-broken");
    run.assert_stderr_contains("something broke");

    // A world-writable hook directory is refused (acmetool), without failing the run.
    std::fs::set_permissions(state.hooks_dir(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let run = acmekeep(&state, &["test-notify", "x.example"]);
    assert_ne!(run.code, Some(0), "{}", run.describe());
    run.assert_stderr_contains("writable");
}
