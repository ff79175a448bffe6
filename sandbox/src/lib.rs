//! Tools apart from the tests (as rustls keeps `rustls-bench` apart): the sandbox of
//! `make sandbox` and the soak of `make soak`, on the shared harness (`meshauthz-harness`).
//!
//! Layout:
//! - [`mesh`]: the detached loopback mesh of `make sandbox` (ports, the sample policy files per
//!   step, the rendered sidecars, the processes and their state file) and the compose inputs
//!   (the same templates rendered for containers).
//! - [`live`]: live policy updates of the running sandbox (`sandbox apply`, `make sandbox-apply`):
//!   Envoy's file-based LDS, no restart.
//! - [`compose`]: the compose sandbox on a container engine (Docker or podman).
//! - `src/bin/sandbox.rs`: the `sandbox` command (`up`, `demo`, `ci`, `mode`, `down`, `compose`,
//!   ...); its loopback story there, the compose story in `src/bin/sandbox/compose_story.rs`.
//! - `src/bin/soak.rs`: the `soak` command (`make soak`, `make soak-quick`); `soak/plot.py` draws
//!   its memory curve.

pub mod compose;
pub mod live;
pub mod mesh;

use std::path::PathBuf;

/// The `sandbox` binary, for the tests that run it (`e2e/tests/compose.rs`):
/// `$MESHAUTHZ_SANDBOX`, else `target/debug/sandbox` (`make sandbox-bin`).
pub fn sandbox_binary() -> PathBuf {
    meshauthz_harness::from_env_or("MESHAUTHZ_SANDBOX", "target/debug/sandbox")
}
