//! The request path's source layout (issue 10 §1) as a test: each file imports only the files
//! below it in [`LAYERS`], so the arrows point down and every file reads alone; and proxy-wasm is
//! not used here (the crate does not depend on it: `module/src/host.rs` is the adapter). The
//! crate doc comment in `src/lib.rs` and `filter/README.md` ("Source layout") list the same
//! order.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed expectation is a test failure"
)]

use std::path::Path;

/// Top to bottom: a file may import (`crate::<name>`) only names after its own.
const LAYERS: &[&str] = &[
    "lib", "http", "net", "enforce", "fetch", "plugin", "vm", "config", "verdict", "metrics",
    "attrs", "proto", "traits", "names",
];

fn sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The `crate::<module>` names a source mentions (in `use` lines and paths alike).
fn crate_refs(text: &str) -> Vec<String> {
    let mut refs = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.push(name);
            }
        }
        // `use crate::{a, b}` groups.
        if let Some(i) = code.find("crate::{") {
            let group = &code[i + "crate::{".len()..];
            let group = group.split('}').next().unwrap_or_default();
            for name in group.split(',').map(str::trim) {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    refs.push(name);
                }
            }
        }
    }
    refs
}

#[test]
fn every_source_file_has_a_layer() {
    for (name, _) in sources() {
        assert!(
            LAYERS.contains(&name.as_str()),
            "src/{name}.rs is not in LAYERS (tests/layout.rs): place it in the order"
        );
    }
}

#[test]
fn proxy_wasm_is_not_used_in_the_request_path() {
    for (name, text) in sources() {
        let uses: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .filter(|l| l.contains("proxy_wasm"))
            .collect();
        assert!(
            uses.is_empty(),
            "src/{name}.rs uses proxy-wasm (only module/src/host.rs may): {uses:?}"
        );
    }
}

#[test]
fn imports_point_down() {
    let rank = |n: &str| LAYERS.iter().position(|l| *l == n);
    for (name, text) in sources() {
        let Some(own) = rank(&name) else { continue };
        for r in crate_refs(&text) {
            let Some(theirs) = rank(&r) else { continue };
            assert!(
                theirs > own || r == name,
                "src/{name}.rs refers to crate::{r}, which is above it in LAYERS: the arrow points up"
            );
        }
    }
}

/// The checker itself sees grouped and nested paths, and skips comments.
#[test]
fn crate_refs_sees_every_form() {
    let mut refs = crate_refs(
        "use crate::{http, net::Conn};\nuse crate::vm::ConnFacts; // crate::lib\nlet x = crate::fetch::f();",
    );
    refs.sort();
    assert_eq!(refs, ["fetch", "http", "net", "vm"]);
}
