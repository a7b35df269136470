//! No import circle among farm-core's source files: the coordinator and
//! the participant both stand on the node's shared state and neither
//! imports the other, and nothing below imports what stands on it.
//! (Regression: `node.rs` and `txn.rs` imported each other, and a plain
//! split of them into coordinator and participant files made a four-file
//! circle.) The crate root (`lib.rs`) declares the modules and is left out;
//! code comments are left out; every `crate::…`, `super::…` and `self::…`
//! path in code counts, test modules included.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, as a module path (`node::send`).
fn modules(src: &Path, dir: &Path, found: &mut BTreeMap<String, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            modules(src, &path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        let name = parts.join("::");
        if name != "lib" {
            found.insert(name, path);
        }
    }
}

/// The code of a file without its comments.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths that follow `prefix` in `code` (one per `prefix::a::b`, and
/// one per item of a `prefix::{a, b::c}` group).
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                paths.push(item.trim().split("::").map(str::to_string).collect());
            }
            continue;
        }
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(
            path.split("::")
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        );
    }
    paths
}

/// The longest module of `known` that `path` starts with.
fn resolve(path: &[String], known: &BTreeMap<String, PathBuf>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|name| known.contains_key(name))
}

#[test]
fn no_import_circle_among_source_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut known = BTreeMap::new();
    modules(&src, &src, &mut known);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &known {
        let code = code(&std::fs::read_to_string(path).unwrap());
        let parent: Vec<String> = {
            let mut parts: Vec<String> = module.split("::").map(str::to_string).collect();
            parts.pop();
            parts
        };
        let is_dir_module = path.ends_with("mod.rs");
        let own: Vec<String> = module.split("::").map(str::to_string).collect();
        let mut targets = BTreeSet::new();
        for path in paths_after(&code, "crate::") {
            targets.extend(resolve(&path, &known));
        }
        for path in paths_after(&code, "super::") {
            // `super` of a file module is its parent; of `a/mod.rs`, a's
            // parent.
            let base = if is_dir_module {
                own[..own.len().saturating_sub(1)].to_vec()
            } else {
                parent.clone()
            };
            let full: Vec<String> = base.into_iter().chain(path).collect();
            targets.extend(resolve(&full, &known));
        }
        for path in paths_after(&code, "self::") {
            let base = if is_dir_module {
                own.clone()
            } else {
                Vec::new()
            };
            if base.is_empty() {
                continue;
            }
            let full: Vec<String> = base.into_iter().chain(path).collect();
            targets.extend(resolve(&full, &known));
        }
        targets.remove(module);
        edges.insert(module.clone(), targets);
    }
    // Depth-first search for a cycle; report it as a path.
    fn visit(
        module: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(module) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|m| m == module).unwrap();
                let mut cycle = stack[start..].to_vec();
                cycle.push(module.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(module.to_string(), 1);
        stack.push(module.to_string());
        for next in &edges[module] {
            if let Some(cycle) = visit(next, edges, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(module.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for module in edges.keys() {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(module, &edges, &mut state, &mut stack) {
            panic!(
                "import circle among farm-core's files: {}",
                cycle.join(" -> ")
            );
        }
    }
    // The two sides of the protocol do not know each other.
    assert!(!edges["coordinator"].contains("participant"));
    assert!(!edges["participant"].contains("coordinator"));
    assert!(edges.len() > 20, "found only {} modules", edges.len());
}
