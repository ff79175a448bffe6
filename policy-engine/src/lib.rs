//! meshauthz policy engine: Istio's AuthorizationPolicy and PeerAuthentication semantics,
//! exactly, as a plain Rust library with no proxy dependency, plus CEL conditions.
//!
//! ```text
//! load_str / load_value   YAML/JSON -> PolicySet (validated; errors name object, field path, expectation)
//! Engine::compile         PolicySet + Workload + MeshConfig -> Engine (applicable policies, indexed)
//! Engine::check           Attributes -> Decision (allowed?, which rule, audit hint, dry-run shadows)
//! Engine::mtls_mode       port -> PeerAuthentication mode
//! PluginConfig::write     PolicySet + settings -> the module's JSON configuration
//! plugin_config::decode   that JSON -> PluginConfig (the module's one and only reader)
//! ```
//!
//! Where each AuthorizationPolicy field is matched: `source.*` in [`authz::source`],
//! `operation.*` in [`authz::operation`], `when` keys in [`authz::condition`], the wildcard forms
//! in [`authz::string_match`], path templates in [`authz::path_template`].

#![warn(unreachable_pub)]

mod attributes;
mod authz;
pub mod cel;
mod decision;
mod engine;
pub mod error;
pub mod input;
pub mod model;
pub mod path;
mod peer_authn;
mod workload;

pub use attributes::{Attributes, HttpAttributes, Requirements};
pub use authz::PolicyInfo;
pub use decision::{Cause, Decision, Protocol, RuleId, ShadowResult};
pub use engine::Engine;
pub use error::{Diagnostic, Diagnostics, ObjectRef, Severity};
pub use input::plugin_config::{self, PluginConfig};
pub use input::{load_str, load_value, LoadOptions};
pub use model::{Action, MtlsMode, PolicySet};
pub use peer_authn::ResolvedMtls;
pub use workload::{MeshConfig, Workload};
