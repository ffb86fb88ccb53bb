//! The architecture as a test: the crate's top-level modules import each other without a cycle
//! (one direction of data flow), and the pure modules stay pure (no async, no I/O crates).
//!
//! Read from the source text: every `crate::<module>` a file names outside comments and test
//! code is an arrow from the file's top-level module to that one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that do no I/O: no `async fn`, and none of the crates that talk to the world.
const PURE: &[&str] = &["event", "celery", "tlog", "prov", "records", "url", "cause"];
const IO_CRATES: &[&str] = &[
    "tokio::",
    "axum::",
    "rusqlite::",
    "tokio_postgres::",
    "deadpool_postgres::",
    "redis::",
    "lapin::",
    "reqwest::",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code before its unit tests, without comment lines.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    let text = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `module -> modules it names`, for every top-level module of the library.
fn import_graph() -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, String>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut code: BTreeMap<String, String> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" || module == "main" || rel.ends_with("tests.rs") {
            continue;
        }
        let text = code_of(&file);
        let targets = graph.entry(module.clone()).or_default();
        for piece in text.split("crate::").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                targets.insert(name);
            }
        }
        code.entry(module)
            .or_default()
            .push_str(&format!("\n// {}\n{text}", rel.display()));
    }
    (graph, code)
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let (graph, _) = import_graph();
    assert!(graph.len() > 10, "read the modules: {graph:?}");
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, state, path) {
                        return Some(cycle);
                    }
                }
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node) {
            let cycle = visit(node, &graph, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import cycle: {}",
                cycle.unwrap().join(" -> ")
            );
        }
    }
}

#[test]
fn pure_modules_do_no_io() {
    let (graph, code) = import_graph();
    for module in PURE {
        let text = code
            .get(*module)
            .unwrap_or_else(|| panic!("no module {module}"));
        assert!(!text.contains("async fn"), "{module} has an async fn");
        for io in IO_CRATES {
            assert!(!text.contains(io), "{module} uses {io}");
        }
        // And they import only other pure modules.
        for target in graph.get(*module).into_iter().flatten() {
            assert!(
                PURE.contains(&target.as_str()),
                "pure module {module} imports {target}"
            );
        }
    }
}
