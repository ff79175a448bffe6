//! `meshauthz-strip-exports <module.wasm>`: rewrites the module in place so that it exports only
//! the proxy-wasm callbacks meshauthz implements (see `meshauthz_tools::exports`), then empties the
//! functions nothing can call any more (`meshauthz_tools::dead_code`). `make build` runs it.

use std::process::ExitCode;

use meshauthz_tools::dead_code::empty_unreachable;
use meshauthz_tools::exports::rewrite;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: meshauthz-strip-exports <module.wasm>");
        return ExitCode::from(2);
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
