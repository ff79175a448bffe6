//! The meshauthz proxy-wasm module (`make build` → `target/wasm32-wasip1/release/meshauthz.wasm`):
//! the thin adapter between Envoy's proxy-wasm ABI and the host-independent request path in the
//! `meshauthz-filter` crate (`filter/`). This crate is the only one that depends on proxy-wasm;
//! see `filter/README.md` for what the module does and how it is configured.

mod host;
