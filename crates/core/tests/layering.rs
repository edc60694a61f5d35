//! hearth-core's modules form no import cycle, and its groups depend on each other in one
//! direction only: `error` ← `model` ← `device` ← `learning`, with `privacy` beside `device`
//! (it needs only `model`'s bounds). Read from the sources, so a new `use` that closes a cycle
//! fails here rather than in a reviewer's head.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each group and the groups it may use.
const ALLOWED: [(&str, &[&str]); 6] = [
    ("error", &[]),
    ("model", &["error"]),
    ("device", &["error", "model"]),
    ("privacy", &["error", "model"]),
    ("learning", &["error", "model", "device", "privacy"]),
    // Measurement reads the event text bound (device) and the noise and accountant (privacy).
    ("measure", &["error", "device", "privacy"]),
];

/// Module path (`model::pack`) -> the module paths its source names through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src").with_extension("");
            let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            // lib.rs and the groups' mod.rs only declare modules.
            if matches!(parts.last().map(String::as_str), Some("lib" | "mod")) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read module");
            out.insert(parts.join("::"), named_modules(&text, &out_names(&src)));
        }
    }
    out
}

/// Every module path that exists, `group::module` or a top-level `module`.
fn out_names(src: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(src).expect("read src") {
        let path = entry.expect("dir entry").path();
        let stem = path.file_stem().expect("stem").to_string_lossy().into_owned();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).expect("read group") {
                let inner = inner.expect("dir entry").path();
                let module = inner.file_stem().expect("stem").to_string_lossy().into_owned();
                if module != "mod" {
                    names.insert(format!("{stem}::{module}"));
                }
            }
        } else if stem != "lib" {
            names.insert(stem);
        }
    }
    names
}

/// The modules `text` names as `crate::group::module` or `crate::module` (a re-export at the
/// root, such as `crate::Result`, counts as `error`).
fn named_modules(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut paths = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + 7..];
        match rest.strip_prefix('{') {
            // `crate::{a, b::c}`: each name in the braces is a path of its own.
            Some(list) => paths.extend(list[..list.find('}').expect("closing brace")].split(',').map(str::trim)),
            None => {
                paths.push(&rest[..rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len())])
            }
        }
    }
    for path in paths {
        let segments: Vec<&str> = path.split("::").collect();
        let two = segments.iter().take(2).copied().collect::<Vec<_>>().join("::");
        if modules.contains(&two) {
            found.insert(two);
        } else if modules.contains(segments[0]) {
            found.insert(segments[0].to_string());
        } else if matches!(segments[0], "Result" | "HearthError" | "UpdateError") {
            found.insert("error".to_string());
        } else {
            panic!("`crate::{path}` names no module of hearth-core");
        }
    }
    found
}

fn group(module: &str) -> &str {
    module.split("::").next().expect("non-empty")
}

/// A path of modules that leads back to its start, if the graph has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first search: a module reached again while still on the stack closes a cycle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == m) {
            return Some([&stack[at..], &[m.to_string()]].concat());
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for next in graph.get(m).into_iter().flatten().filter(|n| *n != m) {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|m| visit(m, graph, &mut done, &mut Vec::new()))
}

#[test]
fn modules_form_no_cycle() {
    let graph = imports();
    assert!(graph.len() >= 20, "found only {} modules: is the source walk broken?", graph.len());
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn a_cycle_is_found() {
    let edge = |a: &str, b: &str| (a.to_string(), BTreeSet::from([b.to_string()]));
    let graph = BTreeMap::from([edge("a", "b"), edge("b", "c"), edge("c", "b")]);
    assert_eq!(find_cycle(&graph), Some(vec!["b".to_string(), "c".to_string(), "b".to_string()]));
    let graph = BTreeMap::from([edge("a", "b"), edge("b", "c")]);
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn groups_depend_one_way() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.into_iter().collect();
    for (module, uses) in imports() {
        let from = group(&module);
        let may = allowed.get(from).unwrap_or_else(|| panic!("{module}: group `{from}` is not in ALLOWED"));
        for used in uses {
            let to = group(&used);
            assert!(to == from || may.contains(&to), "{module} uses {used}: `{from}` may use only {may:?}");
        }
    }
}

#[test]
fn the_checker_reads_plain_and_braced_paths() {
    let modules: BTreeSet<String> = ["device::engine", "learning::train"].map(String::from).into();
    let uses = named_modules("use crate::learning::train::Example; use crate::{HearthError, device::engine};", &modules);
    assert_eq!(uses, ["device::engine", "error", "learning::train"].map(String::from).into());
}
