//! The controller's folders as a rule the tests check: each part imports only
//! from itself and the parts below it, and no two modules import each other,
//! directly or round a circle. Test code may reach upward (a test of the CrowdSec
//! section parses a whole config file).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The parts, lowest first (docs/architecture.md).
const PARTS: [&str; 8] = [
    "base", "kernel", "detect", "enforce", "export", "config", "cli", "runner",
];

/// `src/export/events.rs` -> `export::events`; `src/export/crowdsec/mod.rs` ->
/// `export::crowdsec`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut segs: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    if segs == ["lib"] || segs == ["main"] || segs == ["layering"] || segs.is_empty() {
        return None;
    }
    Some(segs.join("::"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::` path of the non-test code, grouped imports expanded.
fn crate_paths(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if rest.starts_with('{') {
            let end = matching_brace(rest);
            expand("", &rest[1..end], &mut out);
            rest = &rest[end..];
        } else {
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path.trim_end_matches(':').to_owned());
        }
    }
    out
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// `a::{b, c::{d}}` inside one group, each with `prefix` in front.
fn expand(prefix: &str, group: &str, out: &mut Vec<String>) {
    let mut depth = 0;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    for item in items.into_iter().map(str::trim).filter(|s| !s.is_empty()) {
        match item.find('{') {
            Some(b) => {
                let head = item[..b].trim_end_matches("::");
                let inner = &item[b + 1..item.rfind('}').unwrap_or(item.len())];
                expand(&join(prefix, head), inner, out);
            }
            None => {
                let path = item.split(" as ").next().unwrap_or(item).trim();
                out.push(join(prefix, path));
            }
        }
    }
}

fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_owned()
    } else {
        format!("{prefix}::{path}")
    }
}

/// The longest known module a path starts with.
fn resolve<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    modules
        .iter()
        .filter(|m| path == m.as_str() || path.starts_with(&format!("{m}::")))
        .max_by_key(|m| m.len())
}

/// Module -> the modules it imports.
fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut g = BTreeMap::new();
    for f in &files {
        let Some(m) = module_of(&src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let deps: BTreeSet<String> = crate_paths(&text)
            .iter()
            .filter_map(|p| resolve(p, &modules))
            .filter(|d| **d != m && !m.starts_with(&format!("{d}::")))
            .cloned()
            .collect();
        g.insert(m, deps);
    }
    g
}

fn part_rank(module: &str) -> Option<usize> {
    let head = module.split("::").next()?;
    PARTS.iter().position(|p| *p == head)
}

#[test]
fn every_module_belongs_to_a_part() {
    for m in graph().keys() {
        assert!(
            part_rank(m).is_some(),
            "{m} is in no part of {PARTS:?}: put it in one of the folders"
        );
    }
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every import `a -> b` where `b`'s part is above `a`'s.
fn upward_imports(g: &Graph) -> Vec<String> {
    let mut wrong = Vec::new();
    for (m, deps) in g {
        for d in deps {
            if let (Some(a), Some(b)) = (part_rank(m), part_rank(d))
                && b > a
            {
                wrong.push(format!("{m} -> {d}"));
            }
        }
    }
    wrong
}

/// One import circle, if there is any (depth-first search: reaching a module
/// still on the stack closes a circle).
fn find_circle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        g: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut circle = stack[i..].to_vec();
            circle.push(m.to_owned());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_owned());
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(m, g, &mut Vec::new(), &mut done))
}

#[test]
fn no_part_imports_from_a_higher_one() {
    let wrong = upward_imports(&graph());
    assert!(wrong.is_empty(), "imports upward: {wrong:#?}");
}

#[test]
fn no_import_circle() {
    if let Some(circle) = find_circle(&graph()) {
        panic!("import circle: {}", circle.join(" -> "));
    }
}

#[test]
fn the_checks_catch_an_upward_import_and_a_circle() {
    let g = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry((*a).to_owned())
                .or_default()
                .insert((*b).to_owned());
            g.entry((*b).to_owned()).or_default();
        }
        g
    };
    let fine = g(&[
        ("export::events", "detect::classify"),
        ("detect::classify", "base::cidr"),
    ]);
    assert!(upward_imports(&fine).is_empty());
    assert_eq!(find_circle(&fine), None);
    let upward = g(&[("kernel::maps", "enforce::enforcer")]);
    assert_eq!(
        upward_imports(&upward),
        ["kernel::maps -> enforce::enforcer"]
    );
    let circle = g(&[
        ("export::events", "export::journal"),
        ("export::journal", "export::sinks"),
        ("export::sinks", "export::events"),
    ]);
    assert!(upward_imports(&circle).is_empty());
    assert_eq!(
        find_circle(&circle).map(|c| c.len()),
        Some(4),
        "events -> journal -> sinks -> events"
    );
}

#[test]
fn grouped_imports_are_expanded() {
    let text = "use crate::{base::{cidr::Cidr, clock}, export::events::EventRecord};\n\
                fn f() { crate::kernel::maps::KernelMaps::x(); }";
    assert_eq!(
        crate_paths(text),
        [
            "base::cidr::Cidr",
            "base::clock",
            "export::events::EventRecord",
            "kernel::maps::KernelMaps::x"
        ]
    );
}
