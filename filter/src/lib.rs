//! meshauthz: Istio AuthorizationPolicy and PeerAuthentication enforced by a proxy-wasm module in
//! stock Envoy. See `filter/README.md` for the configuration, the filter order and the
//! fail-closed behaviour.
//!
//! `core` holds the request path and is host-independent; `host` is the thin proxy-wasm adapter.

pub mod attrs;
pub mod config;
pub mod core;
pub mod exports;
pub mod host;
pub mod metrics;
pub mod proto;

proxy_wasm::main! {{
    host::start();
}}
