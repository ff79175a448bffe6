//! `meshauthz-strip-exports <module.wasm> [--features LIST]`: rewrites the module in place so that
//! it exports only the proxy-wasm callbacks meshauthz implements (see `meshauthz_tools::exports`),
//! then empties the functions nothing can call any more (`meshauthz_tools::dead_code`); with
//! `--features`, records the build's features (`cel`, or none) in the custom section
//! `meshauthz.features` (`meshauthz_tools::wasm::FEATURES_SECTION`), which `meshauthz render`
//! reads. `make build` runs it on both modules.

use std::process::ExitCode;

use meshauthz_tools::dead_code::empty_unreachable;
use meshauthz_tools::exports::rewrite;
use meshauthz_tools::wasm::{with_custom_section, FEATURES_SECTION};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, features) = match args.as_slice() {
        [path] => (path.clone(), None),
        [path, flag, features] if flag == "--features" => (path.clone(), Some(features.clone())),
        _ => {
            eprintln!("usage: meshauthz-strip-exports <module.wasm> [--features LIST]");
            return ExitCode::from(2);
        }
    };
    let wasm = match std::fs::read(&path) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some((out, dropped)) = rewrite(&wasm) else {
        eprintln!("{path}: not a well-formed wasm module");
        return ExitCode::FAILURE;
    };
    let (out, emptied) = match empty_unreachable(&out) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = match &features {
        None => out,
        Some(f) => match with_custom_section(&out, FEATURES_SECTION, f.as_bytes()) {
            Some(marked) => marked,
            None => {
                eprintln!("{path}: not a well-formed wasm module");
                return ExitCode::FAILURE;
            }
        },
    };
    if let Err(e) = std::fs::write(&path, &out) {
        eprintln!("{path}: {e}");
        return ExitCode::FAILURE;
    }
    if !dropped.is_empty() {
        eprintln!(
            "{path}: {} unused callback exports removed ({})",
            dropped.len(),
            dropped.join(", ")
        );
    }
    if emptied.functions > 0 {
        eprintln!(
            "{path}: {} functions nothing calls emptied ({} bytes)",
            emptied.functions, emptied.bytes
        );
    }
    ExitCode::SUCCESS
}
