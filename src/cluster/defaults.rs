//! The fleet's `conf/target`: the defaults every node orders with (CA, key type, renewal
//! margin, profile, …) are shared, so nodes cannot disagree on them; what differs between
//! machines stays each node's own: `request.challenge` (webroots, ports, hook environment)
//! and `monitor` (the metrics file).
//!
//! The fleet holds the shared part (`P/d/conf/target`, YAML, canonical form). A node's
//! `conf/target` is the fleet's shared part plus its own local sections. The sync compares
//! shared parts, not bytes, so comments and layout in a node's file stay as they are until
//! the shared settings actually change; then the file is rewritten (comments are lost: the
//! file says so in a header comment). A change made here since the last sync (the fleet's
//! revision is the one the sync remembers) goes to the fleet, as target files do; a change
//! made elsewhere comes here.

use anyhow::{Context, Result, anyhow};
use serde_yaml_ng::{Mapping, Value};

/// The sections of conf/target that stay each node's own, as (section, key) paths.
const LOCAL: &[&[&str]] = &[&["request", "challenge"], &["monitor"]];

/// The header of a conf/target the sync wrote.
pub const HEADER: &str = "# acmekeep fleet node: everything but request.challenge and monitor comes from the\n# fleet (doc/cluster.md); edits to it are shared with every node at the next run.\n";

fn parse(text: &str) -> Result<Mapping> {
    if text.trim().is_empty() {
        return Ok(Mapping::new());
    }
    match serde_yaml_ng::from_str::<Value>(text)? {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        _ => Err(anyhow!("not a YAML mapping")),
    }
}

/// Splits conf/target `text` into its shared part and its local sections.
fn split(text: &str) -> Result<(Mapping, Mapping)> {
    let mut shared = parse(text)?;
    let mut local = Mapping::new();
    for path in LOCAL {
        if let Some(v) = take(&mut shared, path) {
            put(&mut local, path, v);
        }
    }
    Ok((shared, local))
}

fn take(m: &mut Mapping, path: &[&str]) -> Option<Value> {
    match path {
        [] => None,
        [last] => m.remove(*last),
        [first, rest @ ..] => {
            let Some(Value::Mapping(inner)) = m.get_mut(*first) else {
                return None;
            };
            let v = take(inner, rest);
            if inner.is_empty() {
                m.remove(*first);
            }
            v
        }
    }
}

fn put(m: &mut Mapping, path: &[&str], v: Value) {
    match path {
        [] => {}
        [last] => {
            m.insert(Value::from(*last), v);
        }
        [first, rest @ ..] => {
            let entry = m
                .entry(Value::from(*first))
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if !entry.is_mapping() {
                *entry = Value::Mapping(Mapping::new());
            }
            if let Value::Mapping(inner) = entry {
                put(inner, rest, v);
            }
        }
    }
}

/// `v` with the keys of every mapping in order, so that the same settings render the same.
fn canonical(v: Value) -> Value {
    match v {
        Value::Mapping(m) => {
            let mut entries: Vec<(Value, Value)> = m.into_iter().collect();
            entries.sort_by_key(|(k, _)| serde_yaml_ng::to_string(k).unwrap_or_default());
            Value::Mapping(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(canonical).collect()),
        other => other,
    }
}

fn render(m: &Mapping) -> Result<String> {
    if m.is_empty() {
        return Ok(String::new());
    }
    Ok(serde_yaml_ng::to_string(&canonical(Value::Mapping(
        m.clone(),
    )))?)
}

/// The shared part of conf/target `text`, in canonical form (what the fleet stores).
pub fn shared_part(text: &str) -> Result<String> {
    render(&split(text).context("conf/target")?.0)
}

/// conf/target for this node: the fleet's shared part `fleet` with the local sections of
/// `mine` (this node's conf/target now).
pub fn merge(fleet: &str, mine: &str) -> Result<String> {
    let (_, local) = split(mine).context("conf/target")?;
    let (mut shared, _) = split(fleet).context("the fleet's conf/target")?;
    for path in LOCAL {
        let mut l = local.clone();
        if let Some(v) = take(&mut l, path) {
            put(&mut shared, path, v);
        }
    }
    Ok(format!("{HEADER}{}", render(&shared)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINE: &str = "# my comment\nrequest:\n  provider: https://ca.example/dir\n  key:\n    type: ecdsa\n  challenge:\n    webroot-paths: [/var/www/a]\n    http-ports: ['127.0.0.1:402']\nmonitor:\n  metrics-file: /var/lib/node/acmekeep.prom\nsatisfy:\n  margin: 20\n";

    #[test]
    fn the_shared_part_leaves_out_each_nodes_challenge_and_monitor_sections() {
        let shared = shared_part(MINE).expect("shared");
        assert!(!shared.contains("challenge") && !shared.contains("webroot"));
        assert!(!shared.contains("monitor"));
        assert!(shared.contains("provider: https://ca.example/dir"));
        assert!(shared.contains("margin: 20"));
        // Only local sections: nothing shared, not even an empty `request`.
        assert_eq!(
            shared_part("request:\n  challenge:\n    http-ports: [':80']\n").expect("shared"),
            ""
        );
        // Canonical: the same settings written differently share the same text.
        assert_eq!(
            shared_part("satisfy: {margin: 20}\nrequest: {provider: 'https://ca.example/dir', key: {type: ecdsa}}\n").expect("shared"),
            shared_part(MINE).expect("shared")
        );
    }

    #[test]
    fn a_node_takes_the_fleets_settings_and_keeps_its_own_challenge_and_monitor() {
        let fleet = "request:\n  provider: https://other.example/dir\n  challenge:\n    http-ports: [':9']\nsatisfy:\n  margin: 30\n";
        let merged = merge(fleet, MINE).expect("merge");
        assert!(merged.starts_with(HEADER));
        let raw = crate::target::RawTarget::parse(&merged).expect("parses as conf/target");
        let request = raw.request.expect("request");
        assert_eq!(
            request.provider.as_deref(),
            Some("https://other.example/dir")
        );
        let challenge = request.challenge.expect("challenge");
        assert_eq!(challenge.webroot_paths, Some(vec!["/var/www/a".to_owned()]));
        assert_eq!(challenge.http_ports.map(|p| p.len()), Some(1));
        assert!(merged.contains("127.0.0.1:402"));
        assert!(raw.monitor.is_some());
        assert_eq!(raw.satisfy.and_then(|s| s.margin), Some(30));
        // The key type was the node's, and the fleet has none: it goes.
        assert_eq!(request.key.and_then(|k| k.kind), None);
        assert_eq!(
            shared_part(&merged).expect("shared"),
            shared_part(fleet).expect("shared")
        );
    }

    #[test]
    fn a_conf_target_that_is_not_a_mapping_is_refused() {
        assert!(shared_part("- a\n- b\n").is_err());
        assert_eq!(shared_part("").expect("empty"), "");
    }
}
