//! End-to-end tests: a real Envoy (1.40) running the built meshauthz module, real certificates, a
//! real upstream application and real clients. The tests are `tests/*.rs`; the pieces they share
//! with the sandbox and the Envoy benchmark (Envoy guard, certificates, clients, sidecars) are the
//! harness crate, `harness/` (`meshauthz-harness`); the tools themselves live in `sandbox/`
//! (`sandbox`, `soak`) and `bench/envoy/`.
//!
//! This library holds what only the tests use:
//! - [`differential`]: the differential test against Envoy's own RBAC fed Istio's goldens
//!   (`tests/differential.rs`).

pub mod differential;
