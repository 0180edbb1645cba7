//! The architecture test: which top-level module may import which, checked on the source.
//!
//! The layers, bottom to top (doc/architecture.md draws them): leaves (names, keys, hooks,
//! exit codes, logging) → the protocol layer `acme` → `challenge` → `target` → certificates
//! (`cert`, `chain`) → the state directory `store` → the `world` loaded from it → the pure
//! planner → the executors (`reconcile`, `account`) → the command glue and what installs into
//! the OS. A module may import from its own layer or below; an import cycle is refused even
//! inside one layer. The test reads `crate::`/`super::` paths in production code (a file's
//! first inline `#[cfg(test)] mod` ends it; `#[cfg(test)]` modules in files of their own are
//! skipped), so an upward import fails CI instead of waiting for a reader to notice.
//!
//! There are no exceptions: the last upward edge (the store computing backoff with the
//! planner's arithmetic) went when the planner took that decision (issue 16 C1), so every
//! edge must follow the rules.
//!
//! The same reading keeps functions short: none over [`MAX_FUNCTION_LINES`] but those named
//! in [`LONG_FUNCTIONS`], a list that only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A new module must be placed here.
const LAYERS: &[&[&str]] = &[
    &[
        "name",
        "clock",
        "cause",
        "logging",
        "unknown_keys",
        "exit",
        "files",
    ],
    &["keys", "hooks"],
    &["acme"],
    &["challenge"],
    &["target"],
    &["cert", "chain"],
    &["store"],
    &["world", "interact"],
    &["plan"],
    &["reconcile", "account", "monitor", "cluster"],
    &["settings", "cli", "manual", "commands", "system"],
    &["fuzz"],
];

/// (from, to) top-level module edges of production code, with one place each for messages.
fn edges() -> BTreeMap<(String, String), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let test_only = test_only_files(&files);
    let mut edges = BTreeMap::new();
    for file in &files {
        if test_only.contains(file) {
            continue;
        }
        let module = module_path(&src, file);
        let Some(top) = module.first() else { continue };
        if top == "architecture" || module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("source file");
        for (line_no, target) in imports(&text, &module) {
            if &target != top && known_module(&src, &target) {
                let rel = file.strip_prefix(&src).unwrap_or(file);
                let place = format!("src/{}:{line_no}", rel.display());
                edges.entry((top.clone(), target)).or_insert(place);
            }
        }
    }
    edges
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` → ["a", "b"]; lib.rs and main.rs → [].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

fn known_module(src: &Path, name: &str) -> bool {
    src.join(format!("{name}.rs")).exists() || src.join(name).join("mod.rs").exists()
}

/// Files of modules declared `#[cfg(test)] mod x;` (fakes and test suites in files).
fn test_only_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("source file");
        let dir = if file.ends_with("mod.rs") || file.ends_with("lib.rs") {
            file.parent().expect("dir").to_path_buf()
        } else {
            file.with_extension("")
        };
        let mut after_cfg_test = false;
        for line in text.lines().map(str::trim) {
            if line == "#[cfg(test)]" {
                after_cfg_test = true;
                continue;
            }
            if after_cfg_test && let Some(name) = declared_file_module(line) {
                out.insert(dir.join(format!("{name}.rs")));
                out.insert(dir.join(name).join("mod.rs"));
            }
            after_cfg_test = false;
        }
    }
    out
}

/// `mod x;` / `pub(crate) mod x;` → x.
fn declared_file_module(line: &str) -> Option<&str> {
    let rest = line.strip_suffix(';')?;
    let rest = rest.rsplit_once("mod ")?.1;
    rest.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then_some(rest)
}

/// The top-level modules named by `crate::`/`super::` paths in production code, with lines.
fn imports(text: &str, module: &[String]) -> Vec<(usize, String)> {
    // `super` of a::b is a, whether a::b lives in a/b.rs or a/b/mod.rs.
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    let mut out = Vec::new();
    let mut skip_next_use = false;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        let line = raw.trim();
        if line.starts_with("//") {
            continue;
        }
        if line == "#[cfg(test)]" {
            match lines.peek().map(|(_, l)| l.trim()) {
                Some(next) if next.contains("mod ") && next.ends_with('{') => break,
                Some(next) if next.starts_with("use ") => skip_next_use = true,
                _ => {}
            }
            continue;
        }
        if skip_next_use {
            skip_next_use = false;
            continue;
        }
        let code = line.split(" //").next().unwrap_or(line);
        // A `use crate::{...}` group may span lines: join until the braces close.
        let mut joined = code.to_string();
        while joined.matches('{').count() > joined.matches('}').count()
            && (joined.contains("crate::{") || joined.contains("super::{"))
        {
            match lines.next() {
                Some((_, more)) => joined.push_str(more.trim()),
                None => break,
            }
        }
        for target in paths_in(&joined, &parent) {
            out.push((i + 1, target));
        }
    }
    out
}

/// Top-level module names of every `crate::`/`super::` path in one (joined) line.
fn paths_in(code: &str, parent: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (root, base) in [("crate::", Vec::new()), ("super::", parent.to_vec())] {
        let mut rest = code;
        while let Some(at) = rest.find(root) {
            let before = rest[..at].chars().last();
            rest = &rest[at + root.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let mut base = base.clone();
            let mut tail = rest;
            while let Some(t) = tail.strip_prefix("super::") {
                base.pop();
                tail = t;
            }
            rest = tail;
            let heads: Vec<&str> = match tail.strip_prefix('{') {
                Some(group) => split_group(group),
                None => vec![tail],
            };
            for head in heads {
                let ident: String = head
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let top = base.first().cloned().unwrap_or(ident);
                if !top.is_empty() {
                    out.push(top);
                }
            }
        }
    }
    out
}

/// The items of a `{a::b, c, d::{e, f}}` group (the text after `{`), first level only.
fn split_group(group: &str) -> Vec<&str> {
    let mut depth = 0usize;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn every_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let unplaced: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(&src, f).first().cloned())
        .filter(|m| m != "architecture" && layer_of(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "place these modules in architecture::LAYERS: {unplaced:?}"
    );
}

#[test]
fn imports_point_down_the_layers_and_make_no_cycle() {
    let edges = edges();
    let mut broken = Vec::new();
    for ((from, to), place) in &edges {
        let (Some(lf), Some(lt)) = (layer_of(from), layer_of(to)) else {
            continue;
        };
        if lt > lf {
            broken.push(format!("{from} -> {to} points up the layers ({place})"));
        }
    }
    // Cycles (same-layer edges included).
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
    }
    if let Some(cycle) = find_cycle(&graph) {
        let places: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                let key = (w[0].to_string(), w[1].to_string());
                format!("{} -> {} ({})", w[0], w[1], edges[&key])
            })
            .collect();
        broken.push(format!("import cycle: {}", places.join(", ")));
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// A cycle as a closed walk [a, b, …, a], if the graph has one.
fn find_cycle<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        done: &mut BTreeSet<&'a str>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// The ways to ask the system the time of day.
const WALL_CLOCK_READS: &[&str] = &[
    "SystemTime::now()",
    "OffsetDateTime::now_utc()",
    "OffsetDateTime::now_local()",
    "UtcDateTime::now()",
];

/// Production files that read the wall clock directly, and why that is right for them.
const CLOCK_READERS: &[(&str, &str)] = &[
    ("clock.rs", "the clock itself"),
    (
        "files.rs",
        "temp-file names: the time only makes names unique, nothing is decided from it",
    ),
    (
        "challenge/dns/wire.rs",
        "TSIG time-signed: the DNS server checks it against its own clock",
    ),
];

/// The wall clock is read only through [`crate::clock::Clock`] (or the `now` a command
/// passed down), the commands included: they take the one clock the command line built, so
/// every decision about time can be tested at any time, and the debug builds' test skew
/// reaches all of them alike.
#[test]
fn the_wall_clock_is_read_only_through_clock() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let test_only = test_only_files(&files);
    let mut found = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .into_owned();
        let top = module_path(&src, file).first().cloned().unwrap_or_default();
        if test_only.contains(file)
            || top == "architecture"
            || CLOCK_READERS.iter().any(|(f, _)| *f == rel)
        {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("source file");
        let mut lines = text.lines().enumerate().peekable();
        while let Some((i, line)) = lines.next() {
            let line = line.trim();
            if line == "#[cfg(test)]"
                && lines
                    .peek()
                    .is_some_and(|(_, l)| l.contains("mod ") && l.trim_end().ends_with('{'))
            {
                break;
            }
            if line.starts_with("//") {
                continue;
            }
            if WALL_CLOCK_READS.iter().any(|r| line.contains(r)) {
                found.push(format!("src/{rel}:{}", i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the wall clock is read outside crate::clock (use a Clock, or the `now` passed in): {found:?}"
    );
}

#[test]
fn the_reader_finds_grouped_and_relative_imports() {
    let module = vec!["acme".to_string(), "instant".to_string()];
    let text = "use crate::{name::Hostname,\n    target::{A, B}};\nuse super::super::plan::x;\n\
                // crate::store is a comment\nlet a = crate::keys::f();\n#[cfg(test)]\nuse crate::hooks;\n\
                #[cfg(test)]\nmod tests {\n use crate::store;\n}\n";
    let found: Vec<String> = imports(text, &module).into_iter().map(|(_, m)| m).collect();
    assert_eq!(found, ["name", "target", "plan", "keys"]);
    assert_eq!(paths_in("super::pace::x", &module[..1]), ["acme"]);
}

/// Most lines a production function may have, its signature included: issue 16's "under
/// about 80", held since the last functions of 81-91 lines were split into named steps.
const MAX_FUNCTION_LINES: usize = 80;

/// The functions still over [`MAX_FUNCTION_LINES`], by top-level module and name. Empty since
/// issue 16 C5 split reconcile's obtain, run_world and download_uncached (319, 205 and 121
/// lines) by phase; it only shrinks: no function may join it.
const LONG_FUNCTIONS: &[(&str, &str)] = &[];

/// Each production function with its file, name and length in lines (from its `fn` line to
/// its closing brace; declarations without a body are skipped).
fn function_lengths() -> Vec<(String, String, usize)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let test_only = test_only_files(&files);
    let mut out = Vec::new();
    for file in files.iter().filter(|f| !test_only.contains(*f)) {
        let module = module_path(&src, file);
        if module.first().is_some_and(|m| m == "architecture")
            || module.last().is_some_and(|m| m == "tests")
        {
            continue;
        }
        let rel = file
            .strip_prefix(&src)
            .unwrap_or(file)
            .display()
            .to_string();
        let text = std::fs::read_to_string(file).expect("source file");
        let lines: Vec<&str> = text.lines().collect();
        // Production code ends at the first inline test module.
        let end = lines
            .windows(2)
            .position(|w| {
                w[0].trim() == "#[cfg(test)]"
                    && w[1].contains("mod ")
                    && w[1].trim_end().ends_with('{')
            })
            .unwrap_or(lines.len());
        for (i, line) in lines[..end].iter().enumerate() {
            let Some((indent, name)) = fn_start(line) else {
                continue;
            };
            // The signature ends at the body's `{`, or at `;` for a declaration.
            let Some(open) = (i..end).find(|&j| {
                let l = lines[j].trim_end();
                l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
            }) else {
                continue;
            };
            if !lines[open].trim_end().ends_with('{') {
                continue;
            }
            let close = format!("{indent}}}");
            if let Some(last) = (open..end).find(|&j| lines[j] == close) {
                out.push((rel.clone(), name.to_owned(), last - i + 1));
            }
        }
    }
    out
}

/// `    pub(crate) async fn name(` → (the indentation, `name`).
fn fn_start(line: &str) -> Option<(&str, &str)> {
    let code = line.trim_start();
    let indent = &line[..line.len() - code.len()];
    let mut rest = code;
    if let Some(r) = rest.strip_prefix("pub") {
        rest = match r.strip_prefix('(') {
            Some(r) => r.split_once(") ")?.1,
            None => r.strip_prefix(' ')?,
        };
    }
    for qualifier in ["const ", "async ", "unsafe "] {
        rest = rest.strip_prefix(qualifier).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some((indent, &rest[..end]))
}

/// Long functions hide what they decide: none may grow past [`MAX_FUNCTION_LINES`] but the
/// few listed in [`LONG_FUNCTIONS`], and an entry goes once its function is split.
#[test]
fn no_function_grows_past_the_limit() {
    let top = |file: &str| file.split(['/', '.']).next().unwrap_or_default().to_owned();
    let over: Vec<(String, String, usize)> = function_lengths()
        .into_iter()
        .filter(|(_, _, len)| *len > MAX_FUNCTION_LINES)
        .collect();
    let mut problems: Vec<String> = over
        .iter()
        .filter(|(file, name, _)| !LONG_FUNCTIONS.contains(&(top(file).as_str(), name.as_str())))
        .map(|(file, name, len)| {
            format!("src/{file}: {name} is {len} lines (at most {MAX_FUNCTION_LINES}): split it")
        })
        .collect();
    for &(m, n) in LONG_FUNCTIONS {
        if !over.iter().any(|(f, name, _)| top(f) == m && name == n) {
            problems.push(format!(
                "{m}::{n} is no longer over {MAX_FUNCTION_LINES} lines (or is gone): remove it from LONG_FUNCTIONS"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn function_lengths_are_read_from_fn_line_to_closing_brace() {
    assert_eq!(
        fn_start("    pub(crate) async fn a_b("),
        Some(("    ", "a_b"))
    );
    assert_eq!(fn_start("pub fn x<T>(t: T) {"), Some(("", "x")));
    assert_eq!(fn_start("    const fn y() -> u8 {"), Some(("    ", "y")));
    assert_eq!(fn_start("    // fn z()"), None);
    assert_eq!(fn_start("    let f = fn_name;"), None);
    let found = function_lengths();
    let print_text = found
        .iter()
        .find(|(f, n, _)| f == "commands/status.rs" && n == "print_text")
        .expect("status::print_text is found");
    assert!((20..=60).contains(&print_text.2), "{print_text:?}");
}
