//! What `unwant` does to each target file: remove the names from it, or delete it when none
//! are left. Decided on the files' own content (not resolved over `conf/target`), so inherited
//! defaults are never baked into a rewritten file.

use crate::name::Hostname;
use crate::target::RawTarget;
use crate::world::World;

/// What unwanting does to one target file.
#[derive(Debug, PartialEq)]
pub enum Edit {
    /// The file does not mention any of the names.
    Untouched,
    /// Some names were removed; the new content.
    Rewrite(Box<RawTarget>),
    /// No names are left: delete the file.
    Delete,
}

fn strip(list: &mut Option<Vec<String>>, names: &[Hostname]) -> bool {
    let Some(items) = list.as_mut() else {
        return false;
    };
    let before = items.len();
    items.retain(|n| Hostname::parse(n).map_or(true, |h| !names.contains(&h)));
    items.len() != before
}

/// Decides the edit for one target (pure). `file` is its name under `desired/`, which is
/// its only name when the file lists none.
pub fn plan_edit(file: &str, raw: &RawTarget, names: &[Hostname]) -> Edit {
    let mut new = raw.clone();
    let mut changed = false;
    if let Some(s) = new.satisfy.as_mut() {
        changed |= strip(&mut s.names, names);
    }
    if let Some(r) = new.request.as_mut() {
        changed |= strip(&mut r.names, names);
    }
    changed |= strip(&mut new.names, names);
    let left = |l: &Option<Vec<String>>| l.as_ref().is_some_and(|v| !v.is_empty());
    let has_names = new.satisfy.as_ref().is_some_and(|s| left(&s.names)) || left(&new.names);
    let had_names = raw.satisfy.as_ref().is_some_and(|s| left(&s.names)) || left(&raw.names);
    if !had_names {
        // Named after its file: unwanting that name removes the target.
        return match Hostname::parse(file) {
            Ok(h) if names.contains(&h) => Edit::Delete,
            _ if changed => Edit::Rewrite(Box::new(new)),
            _ => Edit::Untouched,
        };
    }
    match (changed, has_names) {
        (false, _) => Edit::Untouched,
        (true, false) => Edit::Delete,
        (true, true) => Edit::Rewrite(Box::new(new)),
    }
}

/// The edit of every readable target file of `world` (loaded with `Scope::UNWANT`) for
/// unwanting `names`, by file name. Unreadable files are left out (the command says so).
pub fn edits<'w>(world: &'w World, names: &[Hostname]) -> Vec<(&'w str, Edit)> {
    world
        .raw_targets
        .iter()
        .filter_map(|(file, raw)| Some((file.as_str(), plan_edit(file, raw.as_ref().ok()?, names))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str) -> Hostname {
        Hostname::parse(n).expect("valid")
    }

    fn raw(yaml: &str) -> RawTarget {
        RawTarget::parse(yaml).expect("yaml")
    }

    #[test]
    fn edits_table() {
        let t = raw("satisfy:\n  names: [a.b, c.d]\nrequest:\n  names: [a.b, c.d, e.f]\n");
        match plan_edit("x", &t, &[h("A.B")]) {
            Edit::Rewrite(n) => {
                assert_eq!(
                    n.satisfy.and_then(|s| s.names),
                    Some(vec!["c.d".to_owned()])
                );
                assert_eq!(
                    n.request.and_then(|r| r.names),
                    Some(vec!["c.d".to_owned(), "e.f".to_owned()])
                );
            }
            other => panic!("expected a rewrite, got {other:?}"),
        }
        assert_eq!(plan_edit("x", &t, &[h("a.b"), h("c.d")]), Edit::Delete);
        assert_eq!(plan_edit("x", &t, &[h("zz.top")]), Edit::Untouched);
        assert_eq!(plan_edit("a.b", &raw(""), &[h("a.b")]), Edit::Delete);
        assert_eq!(plan_edit("a.b", &raw(""), &[h("c.d")]), Edit::Untouched);
        assert_eq!(
            plan_edit("x", &raw("names: [a.b]\n"), &[h("a.b")]),
            Edit::Delete
        );
    }
}
