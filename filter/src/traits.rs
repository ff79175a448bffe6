//! What the request path needs from the proxy ([`Host`]) and from the compiled policies
//! ([`Authorizer`]), and what a callback answers ([`Flow`]). Everything above depends on these
//! traits, never on proxy-wasm: `host.rs` implements [`Host`] with host calls, the tests with a
//! fake.

use log::Level;
use policy_engine::{Attributes, Decision, Engine, PortMtls, Protocol, Requirements, RuleId};

/// Everything the request path needs from the proxy. Implementations never panic.
pub trait Host {
    /// `get_property`; `None` when absent or when the host call failed.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// One request header (lower-case name, pseudo-headers such as `:path` included).
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    /// All request headers.
    fn request_headers(&self) -> Vec<(String, String)>;
    /// `set_property`: writes filter state `wasm.<key>`. False if the host refused.
    fn set_filter_state(&self, key: &str, value: &[u8]) -> bool;
    /// Answers the request with `403` and body `RBAC: access denied`.
    fn send_forbidden(&self) -> bool;
    /// Closes the downstream connection.
    fn close_downstream(&self) -> bool;
    fn define_counter(&self, name: &str) -> Option<u32>;
    fn increment(&self, id: u32, by: i64);
    fn log(&self, level: Level, message: &str);
}

/// What the request path asks of the compiled policies. Implemented by the engine; the tests also
/// use a scripted one to drive every action path.
pub trait Authorizer {
    fn check(&self, protocol: Protocol, attrs: &Attributes<'_>) -> Decision;
    /// The mTLS mode at `port` and whether its STRICT is report-only; at an unknown port
    /// (`None`) the engine's answer, which never admits more than any port would.
    fn mtls_mode_at(&self, port: Option<u16>) -> PortMtls;
    /// Whether some port has its own mode (`portLevelMtls`): only then is the port fetched for
    /// the transport check.
    fn has_port_level_mtls(&self) -> bool;
    fn requirements(&self) -> &Requirements;
    fn rule_name(&self, id: RuleId) -> String;
}

impl Authorizer for Engine {
    fn check(&self, protocol: Protocol, attrs: &Attributes<'_>) -> Decision {
        Engine::check(self, protocol, attrs)
    }
    fn mtls_mode_at(&self, port: Option<u16>) -> PortMtls {
        Engine::mtls_mode_at(self, port)
    }
    fn has_port_level_mtls(&self) -> bool {
        Engine::has_port_level_mtls(self)
    }
    fn requirements(&self) -> &Requirements {
        Engine::requirements(self)
    }
    fn rule_name(&self, id: RuleId) -> String {
        Engine::rule_name(self, id)
    }
}

/// What a filter callback tells the host to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The request was answered or the connection closed: stop the chain.
    Stop,
}
