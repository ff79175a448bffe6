//! meshauthz policy engine: Istio's AuthorizationPolicy and PeerAuthentication semantics,
//! exactly, as a plain Rust library with no proxy dependency, plus CEL conditions.
//!
//! ```text
//! load_str / load_value   YAML/JSON -> PolicySet (validated; errors name object, field path, expectation)
//! Engine::compile         PolicySet + Workload + MeshConfig -> Engine (applicable policies, indexed)
//! Engine::compile_owned   the same, consuming the set (the module: a lower peak while loading)
//! Engine::check           Attributes -> Decision (allowed?, which rule, audit hint, dry-run shadows)
//! Engine::mtls_mode_at    port (or unknown port) -> PeerAuthentication mode
//! Engine::named_ports     the ports the configuration names
//! PluginConfig::write     PolicySet + settings -> the module's JSON configuration
//! plugin_config::decode   that JSON -> PluginConfig (the module's one and only reader)
//! ```
//!
//! Where things live (arrows point down: a module uses only those below it):
//!
//! | module | what |
//! |---|---|
//! | [`input`] | reading and validating YAML/JSON into [`model`] (Istio's messages, field paths); [`plugin_config`], the module's configuration |
//! | `engine` | [`Engine`]: compile once, then answer checks and the mode/port questions |
//! | `authz` | AuthorizationPolicy: applicability, compiled rules, `CompiledAuthz::check` |
//! | `authz/source.rs`, `operation.rs`, `condition.rs` | one type per field: `principals` is `source::Principal`, its compilation beside its match |
//! | `peer_authn` | PeerAuthentication levels and `portLevelMtls` -> [`ResolvedMtls`] |
//! | [`cel`] | `meshauthz.io/cel` conditions |
//! | [`path`] | the forwarded and the normalized path |
//! | `order` | load-time sorting with one copy of the standard sort in the module |
//! | `workload`, `attributes`, `decision`, [`model`], [`error`] | the types the others share: [`Workload`], [`MeshConfig`], [`Attributes`], [`Decision`], the Istio objects, diagnostics |

#![warn(unreachable_pub)]

mod attributes;
mod authz;
pub mod cel;
mod decision;
mod engine;
pub mod error;
pub mod input;
pub mod model;
mod order;
pub mod path;
mod peer_authn;
mod workload;

pub use attributes::{Attributes, HttpAttributes, RepeatedHeaders, Requirements};
pub use authz::PolicyInfo;
pub use decision::{Cause, Decision, Protocol, RuleId, ShadowResult};
pub use engine::Engine;
pub use error::{Diagnostic, Diagnostics, ObjectRef, Severity};
pub use input::plugin_config::{self, EnforceMode, PluginConfig};
pub use input::{load_str, load_value, LoadOptions};
pub use model::{
    Action, MtlsMode, PolicySet, ReportOnly, Timestamp, STRICT_REPORT_ONLY_ANNOTATION,
};
pub use peer_authn::{PortMtls, ResolvedMtls};
pub use workload::{MeshConfig, Workload};
