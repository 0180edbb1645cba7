//! conf/perm end to end: acmetool's syntax, group-readable keys for non-root services, and
//! acmetool's two flaws fixed (a rule naming a single file; a last line without a newline).

use std::os::unix::fs::MetadataExt;

use crate::support::*;

fn meta(state: &StateDir, rel: &str) -> std::fs::Metadata {
    std::fs::metadata(state.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn conf_perm_makes_keys_group_readable_and_applies_single_file_rules() {
    const GID: u32 = 4242;
    let pebble = Pebble::start(PebbleOpts::fast());
    let state = StateDir::standard(&pebble);
    acmekeep(&state, &["want", "a.perm.test"]).assert_success();
    let first_key = state.key_ids().remove(0);
    assert_eq!(
        meta(&state, &format!("keys/{first_key}/privkey")).mode() & 0o777,
        0o600
    );

    // Group-readable keys (the ssl-cert pattern, with a numeric group), and a single-file
    // rule on the last line, without a trailing newline.
    state.write(
        "conf/perm",
        format!("# keys for a non-root daemon\nkeys 0640 0750 - {GID}\nconf/responses 0600 0700"),
    );
    acmekeep(&state, &["reconcile"]).assert_success();
    let key = meta(&state, &format!("keys/{first_key}/privkey"));
    assert_eq!(key.mode() & 0o777, 0o640, "existing key conformed");
    assert_eq!(key.gid(), GID);
    assert_eq!(
        meta(&state, &format!("keys/{first_key}")).mode() & 0o777,
        0o750
    );
    assert_eq!(meta(&state, "conf/responses").mode() & 0o777, 0o600);
    assert!(
        meta(&state, "conf/responses").is_file(),
        "a file rule must not become a directory"
    );
    assert_eq!(
        meta(&state, "conf/target").mode() & 0o777,
        0o644,
        "others untouched"
    );

    // A new key gets the rule from its first byte.
    acmekeep(&state, &["want", "b.perm.test"]).assert_success();
    let new_key = state
        .key_ids()
        .into_iter()
        .find(|k| *k != first_key)
        .expect("a second key");
    let m = meta(&state, &format!("keys/{new_key}/privkey"));
    assert_eq!((m.mode() & 0o777, m.gid()), (0o640, GID));

    // A malformed file is a configuration error naming the file and line; nothing changes.
    state.write("conf/perm", "keys 0640 0750\nlive 999 0755\n");
    let run = acmekeep(&state, &["reconcile"]);
    run.assert_code(2);
    run.assert_stderr_contains("conf/perm:2");
}
