//! meshauthz: Istio AuthorizationPolicy and PeerAuthentication enforced by a proxy-wasm module in
//! stock Envoy. See `filter/README.md` for the configuration, the filter order and the
//! fail-closed behaviour.
//!
//! This crate is the request path, independent of the host: it does not depend on proxy-wasm.
//! The module is the thin cdylib in `module/` (`module/src/host.rs`: `ProxyHost` implements
//! [`traits::Host`] with proxy-wasm host calls and forwards each callback to its stage here); the
//! tests drive the same path with a fake host.
//!
//! One file per step of the data path; each imports only the ones listed below it, so that the
//! arrows point down and every file reads alone (`tests/layout.rs` checks the order):
//!
//! | file | step |
//! |---|---|
//! | [`http`] | HTTP stages: decide per request, enforce (`403`) |
//! | [`net`] | network stages: transport check, connection facts, TCP decisions, enforce (close) |
//! | [`enforce`] | the one enforce step both share: the verdict from filter state, the AUDIT companion check |
//! | [`fetch`] | the attributes the policies need, fetched from the host; the engine asked |
//! | [`plugin`] | one configured filter: `on_configure`, last-good configuration, counters |
//! | [`vm`] | what the stages of one VM share: stage kinds, configured stages, connection facts |
//! | [`config`] | the plugin configuration: parse, compile |
//! | [`verdict`] | a decision turned into labels, counts and filter state |
//! | [`metrics`] | counters, summed in VM memory and flushed per tick |
//! | [`attrs`], [`proto`] | decoding Envoy's property values and dynamic metadata |
//! | [`traits`] | what the path needs from the proxy (`Host`) and the policies (`Authorizer`) |
//! | [`names`] | root ids, filter-state keys, the deny body |

pub mod attrs;
pub mod config;
pub mod enforce;
pub mod fetch;
pub mod http;
pub mod metrics;
pub mod names;
pub mod net;
pub mod plugin;
pub mod proto;
pub mod traits;
pub mod verdict;
pub mod vm;
