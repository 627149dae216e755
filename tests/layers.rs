//! The layers point one way: a module under `src/<layer>/` may use its own layer and the
//! ones listed before it, never one after it (test modules excepted). `providers` and
//! `ingress` share a rank and do not use each other.

use std::fs;
use std::path::Path;

const LAYERS: &[&[&str]] = &[
    &["util"],
    &["model"],
    &["config"],
    &["wire"],
    &["providers", "ingress"],
    &["policy"],
    &["ledger"],
    &["admin"],
    &["edge"],
];

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|names| names.contains(&layer))
}

/// The code of a file before its first test-only module.
fn code(text: &str) -> &str {
    let end = ["", "pub(crate) ", "pub(super) "]
        .iter()
        .filter_map(|vis| text.find(&format!("#[cfg(test)]\n{vis}mod ")))
        .min();
    &text[..end.unwrap_or(text.len())]
}

/// Each `crate::<layer>` a file's code names, with its line.
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in code(text).lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            found.push((i + 1, name));
            rest = after;
        }
    }
    found
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn no_import_points_up() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let layer = first.trim_end_matches(".rs").to_string();
        if layer == "lib" {
            continue;
        }
        let Some(own) = rank(&layer) else {
            wrong.push(format!("{}: not in a known layer", relative.display()));
            continue;
        };
        for (line, used) in uses(&fs::read_to_string(file).unwrap()) {
            match rank(&used) {
                Some(r) if r < own || used == layer => {}
                Some(_) => wrong.push(format!("{}:{line}: {layer} uses {used}", relative.display())),
                None => wrong.push(format!("{}:{line}: crate::{used} is not a layer", relative.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "imports that point up or sideways:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import() {
    let text = "use crate::model::error::GatewayError;\nfn f() { crate::edge::x(); }\n#[cfg(test)]\npub(super) mod fixtures {\n    use crate::edge;\n}\n";
    let found = uses(text);
    assert_eq!(found, vec![(1, "model".to_string()), (2, "edge".to_string())]);
    assert!(rank("edge") > rank("config"));
    assert_eq!(rank("providers"), rank("ingress"));
}
