//! Build tools for meshauthz that run on the build host (`make build`), kept apart from the
//! module's crate (`filter/`) so that nothing here can end up in the Wasm module.
//!
//! - [`exports`]: removes the proxy-wasm callback exports the module does not implement
//!   (the `meshauthz-strip-exports` binary).
//! - [`dead_code`]: empties the functions nothing can call any more (the same binary, after).
//! - [`wasm`]: the module's sections, imports and exports (that tool's reader, and the tests').

pub mod dead_code;
pub mod exports;
pub mod wasm;
