//! Embeds the table-driven test cases (`tests/cases/*.yaml`) and the CEL conformance cases
//! (`tests/cel_conformance/*.yaml`) so that the same files run natively and in wasm32 under node,
//! where the tests have no file system: writes `$OUT_DIR/case_files.rs` with
//! `CASE_FILES: &[(file name, contents)]` and `$OUT_DIR/cel_conformance_files.rs` with
//! `CEL_CONFORMANCE_FILES`, each sorted by name.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for (folder, constant, file) in [
        ("cases", "CASE_FILES", "case_files.rs"),
        (
            "cel_conformance",
            "CEL_CONFORMANCE_FILES",
            "cel_conformance_files.rs",
        ),
    ] {
        let dir = manifest_dir.join("tests").join(folder);
        std::fs::write(out_dir.join(file), embed(&dir, constant)?)?;
    }
    Ok(())
}

/// `pub const <constant>: &[(&str, &str)]`: every `*.yaml` file of `dir`, name and contents.
fn embed(dir: &Path, constant: &str) -> Result<String, Box<dyn std::error::Error>> {
    // A directory: Cargo reruns the script when any file under it changes, is added or removed.
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut out = format!("pub const {constant}: &[(&str, &str)] = &[\n");
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )?;
    }
    out.push_str("];\n");
    Ok(out)
}
