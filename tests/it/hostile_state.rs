//! A tampered state directory (issue 15): links, FIFOs and wide modes where acmetool's layout
//! has directories and regular files. Each test is named after what went wrong before: a
//! `tmp` link emptied what it pointed at, a FIFO held the lock forever, a world-readable key
//! stayed so, `conf/responses` was read through a link into our messages, and wrong
//! `certs/<id>/privkey` links were never put right.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use crate::support::*;

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
}

/// Bounded well below a hang: a blocked open would hold the run until this kills it.
fn bounded() -> RunOpts {
    RunOpts {
        timeout: Duration::from_secs(30),
        ..RunOpts::default()
    }
}

#[test]
fn tmp_symlink_no_longer_empties_what_it_points_at() {
    let state = StateDir::new();
    let precious = state.scratch_dir("precious");
    fs::write(precious.join("keep-me"), "data").expect("write");
    symlink(&precious, state.join("tmp")).expect("symlink tmp");

    // An idle locked run (nothing wanted) used to clear tmp/ through the link.
    let run = acmekeep_with(&state, &["reconcile"], &bounded());
    run.assert_success();
    run.assert_stderr_contains("tmp was a symbolic link");
    assert_eq!(
        fs::read_to_string(precious.join("keep-me")).expect("still there"),
        "data"
    );
    assert!(
        fs::symlink_metadata(state.join("tmp"))
            .expect("lstat tmp")
            .is_dir(),
        "tmp/ is a real directory again"
    );
    // Repaired once, quiet after.
    let again = acmekeep_with(&state, &["reconcile"], &bounded());
    again.assert_success();
    assert!(again.stderr.is_empty(), "{}", again.describe());
}

#[test]
fn fifo_as_target_or_conf_target_no_longer_blocks_the_locked_run() {
    let state = StateDir::new();
    fs::create_dir_all(state.join("desired")).expect("mkdir desired");
    mkfifo(&state.join("desired/fifo.example"));

    // The FIFO is a broken target: named, skipped, the run ends (exit 1, as for any target
    // file that cannot be used).
    let run = acmekeep_with(&state, &["reconcile"], &bounded());
    assert!(!run.timed_out, "{}", run.describe());
    run.assert_code(1);
    run.assert_stderr_contains("desired/fifo.example");
    run.assert_stderr_contains("it is a FIFO, not a regular file");
    // `status` (no lock) does not block either.
    let status = acmekeep_with(&state, &["status"], &bounded());
    assert!(!status.timed_out, "{}", status.describe());

    fs::remove_file(state.join("desired/fifo.example")).expect("rm fifo");
    mkfifo(&state.join("conf/target"));
    let run = acmekeep_with(&state, &["reconcile"], &bounded());
    assert!(!run.timed_out, "{}", run.describe());
    run.assert_code(2);
    run.assert_stderr_contains("conf/target");
    run.assert_stderr_contains("FIFO");
}

#[test]
fn target_file_symlink_is_not_followed_into_another_file() {
    let state = StateDir::new();
    let secret = state.scratch_dir("secret").join("secret.yaml");
    fs::write(&secret, "satisfy:\n  names: [secret-name.example]\n").expect("write");
    fs::create_dir_all(state.join("desired")).expect("mkdir desired");
    symlink(&secret, state.join("desired/linked")).expect("symlink");

    let run = acmekeep_with(&state, &["reconcile"], &bounded());
    run.assert_code(1);
    run.assert_stderr_contains("desired/linked");
    run.assert_stderr_contains("symbolic link");
    assert!(!run.stderr.contains("secret-name"), "{}", run.describe());
}

#[test]
fn world_readable_private_key_is_narrowed_and_reported_once() {
    let state = StateDir::new();
    let id = "k".repeat(52);
    let key = format!("keys/{id}/privkey");
    state.write(&key, "-----BEGIN EC PRIVATE KEY-----\n");
    fs::set_permissions(state.join(&key), fs::Permissions::from_mode(0o644)).expect("chmod");

    let run = acmekeep_with(&state, &["reconcile"], &bounded());
    run.assert_success();
    run.assert_stderr_contains(&format!("{key} was readable by more than it should be"));
    run.assert_stderr_contains("changed to 0600");
    assert_eq!(state.mode(&key), 0o600);

    let again = acmekeep_with(&state, &["reconcile"], &bounded());
    again.assert_success();
    assert!(again.stderr.is_empty(), "{}", again.describe());
}

#[test]
fn conf_responses_symlink_is_never_followed_into_warnings() {
    let state = StateDir::new();
    let secret = state.scratch_dir("secret").join("credentials");
    fs::write(
        &secret,
        "SECRET-LINE-ONE: [hunter2]\nSECRET-LINE-TWO: {a: b}\n",
    )
    .expect("w");
    symlink(&secret, state.join("conf/responses")).expect("symlink");

    let run = acmekeep_with(&state, &["reconcile"], &bounded());
    run.assert_success();
    run.assert_stderr_contains("conf/responses");
    run.assert_stderr_contains("symbolic link");
    assert!(!run.stderr.contains("SECRET"), "{}", run.describe());
}

#[test]
fn keys_directory_symlink_is_refused_naming_it() {
    let state = StateDir::new();
    let elsewhere = state.scratch_dir("elsewhere");
    symlink(&elsewhere, state.join("keys")).expect("symlink keys");
    let run = acmekeep_with(&state, &["reconcile"], &bounded());
    run.assert_code(2);
    run.assert_stderr_contains("keys is a symbolic link");
    assert_eq!(fs::read_dir(&elsewhere).expect("ls").count(), 0);
}

#[test]
fn privkey_and_live_links_pointing_elsewhere_are_repaired_and_reported() {
    const NAME: &str = "links.example.org";
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    acmekeep(&state, &["want", NAME]).assert_success();
    let id = state.live_cert_id(NAME);
    let key_link = fs::read_link(state.join(format!("certs/{id}/privkey"))).expect("link");

    // Someone points certs/<id>/privkey at a key of theirs, and live/<name> at a directory
    // outside the state directory.
    let outside = state.scratch_dir("outside");
    fs::write(outside.join("privkey"), "attacker's key").expect("write");
    let privkey = state.join(format!("certs/{id}/privkey"));
    fs::remove_file(&privkey).expect("rm");
    symlink(outside.join("privkey"), &privkey).expect("symlink");
    let live = state.join(format!("live/{NAME}"));
    fs::remove_file(&live).expect("rm");
    symlink(&outside, &live).expect("symlink");

    let run = acmekeep(&state, &["reconcile"]);
    run.assert_success();
    run.assert_stderr_contains(&format!("certs/{id}/privkey was a link to"));
    run.assert_stderr_contains(&format!("live/{NAME} points at"));
    assert_eq!(fs::read_link(&privkey).expect("link"), key_link);
    assert_eq!(state.live_cert_id(NAME), id);
    assert_eq!(
        state.read_live(NAME, "privkey"),
        state.read(format!("certs/{id}/privkey"))
    );

    let again = acmekeep(&state, &["reconcile"]);
    again.assert_success();
    assert!(again.stderr.is_empty(), "{}", again.describe());
}
