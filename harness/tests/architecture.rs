//! The one-way pipeline, checked on the source: `lib.rs` declares the modules in the order a run goes through
//! them, and a module may use (`crate::x`, in code or in a `use`) only modules declared before it. The back-edges
//! that are still there are listed below with what they use; the list may only shrink: a new back-edge fails, and so
//! does a listed one that is gone (take it off the list).
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Back-edges still in the tree (issue 11, item 1), each with what it reaches for.
const KNOWN_BACK_EDGES: &[(&str, &str, &str)] = &[
    ("bundle", "shim", "shim::launch::clip for the log tail (stdio.rs, apart from bundle.rs, is to take the log)"),
    ("cases", "select", "select::explain_runtime_for: the plan is to compute the explanation once (plan module)"),
    ("run", "report", "report::unix_now and the streamed report writer"),
];

fn source_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `pub mod x;` lines of lib.rs, in order.
fn declared_order(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    lib.lines().filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';').map(str::to_string)).collect()
}

fn rust_files(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The code of a file without its comments (doc comments mention modules freely).
fn code_of(text: &str) -> String {
    text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every `crate::x` a module's files name, `use crate::{x, y}` included: module -> (used module -> a file using it).
fn edges(src: &Path, modules: &[String]) -> BTreeMap<String, BTreeMap<String, String>> {
    let known: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    let mut found: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for module in modules {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        let file = src.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        for file in files {
            let code = code_of(&std::fs::read_to_string(&file).expect("source file"));
            let mut named = Vec::new();
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    named.extend(group.split(',').filter_map(|p| p.trim().split("::").next().map(str::to_string)));
                } else {
                    named.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
                }
            }
            let shown = file.strip_prefix(src).unwrap_or(&file).display().to_string();
            for target in named {
                if target != *module && known.contains(target.as_str()) {
                    found.entry(module.clone()).or_default().entry(target).or_insert_with(|| shown.clone());
                }
            }
        }
    }
    found
}

/// Edges to modules declared later that are not in `known` (with the file), and listed ones not found.
fn check(src: &Path, known_edges: &[(&str, &str, &str)]) -> (Vec<String>, Vec<String>) {
    let order = declared_order(src);
    let position: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let known: BTreeSet<(&str, &str)> = known_edges.iter().map(|(from, to, _)| (*from, *to)).collect();
    let mut new = Vec::new();
    let mut seen = BTreeSet::new();
    for (from, targets) in edges(src, &order) {
        for (to, file) in targets {
            if position[to.as_str()] > position[from.as_str()] {
                if known.contains(&(from.as_str(), to.as_str())) {
                    seen.insert((from.clone(), to.clone()));
                } else {
                    new.push(format!("{from} -> {to} (in {file}): {to} is declared after {from} in lib.rs"));
                }
            }
        }
    }
    let gone = known_edges
        .iter()
        .filter(|(from, to, _)| !seen.contains(&(from.to_string(), to.to_string())))
        .map(|(from, to, _)| format!("{from} -> {to}"))
        .collect();
    (new, gone)
}

#[test]
fn modules_use_only_modules_declared_before_them() {
    let src = source_dir();
    let order = declared_order(&src);
    assert!(order.len() >= 10, "lib.rs declares too few modules to be read right: {order:?}");
    for module in &order {
        assert!(src.join(module).is_dir() || src.join(format!("{module}.rs")).is_file(), "no source for {module}");
    }
    let (new, gone) = check(&src, KNOWN_BACK_EDGES);
    assert!(new.is_empty(), "modules reaching back up the pipeline:\n  {}", new.join("\n  "));
    assert!(gone.is_empty(), "listed back-edges no longer in the tree (take them off KNOWN_BACK_EDGES): {gone:?}");
}

/// The check fails on a tree that reaches back (through a `use` group and through a path in code, not through a
/// comment), and on a listed edge that is not there.
#[test]
fn the_check_catches_a_back_edge() {
    let src = std::env::temp_dir().join(format!("shimcompat-architecture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(src.join("low")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod low;\npub mod mid;\npub mod high;\n").unwrap();
    std::fs::write(src.join("low/mod.rs"), "use crate::{mid::f, x};\n// crate::high::g\n").unwrap();
    std::fs::write(src.join("mid.rs"), "fn f() { crate::low::h(); crate::high::g(); }\n").unwrap();
    std::fs::write(src.join("high.rs"), "fn g() { crate::low::h(); }\n").unwrap();
    let (new, gone) = check(&src, &[("high", "mid", "listed, absent")]);
    let _ = std::fs::remove_dir_all(&src);
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new[0].starts_with("low -> mid (in low/mod.rs)"), "{new:?}");
    assert!(new[1].starts_with("mid -> high (in mid.rs)"), "{new:?}");
    assert_eq!(gone, vec!["high -> mid".to_string()]);
}
