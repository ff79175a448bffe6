//! Embeds the table-driven test cases (`tests/cases/*.yaml`) so that the same files run natively and
//! in wasm32 under node, where the tests have no file system: writes
//! `$OUT_DIR/case_files.rs` with `CASE_FILES: &[(file name, contents)]`, sorted by name.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let cases_dir = manifest_dir.join("tests").join("cases");
    // A directory: Cargo reruns the script when any file under it changes, is added or removed.
    println!("cargo::rerun-if-changed={}", cases_dir.display());

    let mut files = Vec::new();
    if cases_dir.is_dir() {
        for entry in std::fs::read_dir(&cases_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();

    let mut out = String::from("pub const CASE_FILES: &[(&str, &str)] = &[\n");
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
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("case_files.rs"), out)?;
    Ok(())
}
