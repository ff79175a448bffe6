//! Link the module with compressed relocations.
//!
//! wasm-ld writes every function index and memory address in the code section as a 5-byte LEB128
//! (so that a relocation can be patched in place); `--compress-relocations` rewrites them at their
//! shortest once the final values are known. Same instructions, a smaller module for V8 to read in
//! every sidecar (BENCHMARKS.md, "Start-up and module size"). wasm-ld accepts it only without
//! debug information, hence only for builds without it (`make build`: the release profile strips).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "wasm32");
    let debug = std::env::var("DEBUG").is_ok_and(|d| d != "false" && d != "0");
    if wasm && !debug {
        // `--strip-debug` first: the Rust standard library carries debug information, and a build
        // that keeps the name section for size analysis (`CARGO_PROFILE_RELEASE_STRIP=none`) must
        // still link.
        println!("cargo::rustc-link-arg-cdylib=--strip-debug");
        println!("cargo::rustc-link-arg-cdylib=--compress-relocations");
    }
}
