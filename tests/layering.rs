//! The module graph stays what `docs/architecture.md` says: the library's top-level modules
//! and the binary's modules import each other without a cycle, and the dependency list in
//! the document is the one the code has (read from every `crate::` path outside tests and
//! comments), so the document cannot fall behind the tree unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The text of a source file as the build sees it: unit tests and comments left out.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Every `crate::name` in `code` (and `$crate::name`, in macros).
fn crate_paths(code: &str) -> impl Iterator<Item = String> + '_ {
    code.match_indices("crate::").filter_map(|(i, _)| {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let rest = &code[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        (!name.is_empty()).then_some(name)
    })
}

/// The imports between the modules directly under `root` (a file `a.rs` or a folder `a/`).
fn graph(root: &Path, skip: &[&str]) -> Graph {
    let mut graph = Graph::new();
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    for file in files {
        let relative = file.strip_prefix(root).unwrap();
        let top =
            relative.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
        if skip.contains(&top.as_str()) {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let deps = graph.entry(top.clone()).or_default();
        deps.extend(crate_paths(&code).filter(|d| *d != top));
    }
    graph
}

/// A cycle in `graph`, if it has one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(node: &str, graph: &Graph, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].iter().cloned().chain([node.to_owned()]).collect());
        }
        if !done.insert(node.to_owned()) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The document's dependency list: `a → b, c` lines in the block after its heading.
fn documented(doc: &str) -> Graph {
    let section = doc.split("## The dependency list").nth(1).expect("docs/architecture.md has a dependency list");
    let block = section.split("```").nth(1).expect("the list is a fenced block");
    block
        .lines()
        .filter_map(|line| line.split_once('→'))
        .map(|(module, deps)| {
            let deps = deps.split(',').map(|d| d.trim().to_owned()).filter(|d| !d.is_empty() && d != "-").collect();
            (module.trim().to_owned(), deps)
        })
        .collect()
}

fn listing(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, deps)| {
            let deps =
                if deps.is_empty() { "-".to_owned() } else { deps.iter().cloned().collect::<Vec<_>>().join(", ") };
            format!("{m} → {deps}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_library_and_the_binary_have_no_import_cycle_and_the_document_lists_the_real_graph() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let library = graph(&root.join("src"), &["bin", "lib"]);
    assert_eq!(cycle(&library), None, "the library's modules import each other in a circle");
    let binary = graph(&root.join("src/bin/dbmirror"), &["main"]);
    assert_eq!(cycle(&binary), None, "the binary's modules import each other in a circle");
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let listed = documented(&doc);
    assert!(
        listed == library,
        "docs/architecture.md's dependency list is not the code's; the code's is:\n{}",
        listing(&library)
    );
}

#[test]
fn a_cycle_is_found() {
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(m, d)| (m.to_owned(), BTreeSet::from([d.to_owned()])))
        .collect();
    assert_eq!(cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    let code = code_of("use crate::a::B; // crate::ignored\n$crate::c; x_crate::d; crate::e\n#[cfg(test)] crate::f");
    assert_eq!(crate_paths(&code).collect::<Vec<_>>(), ["a", "c", "e"]);
}
