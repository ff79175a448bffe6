//! The proxy-wasm module (see issue 3).
