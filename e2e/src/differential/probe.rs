//! What a probe is: one request (HTTP) or connection (TCP) on one of a golden's listeners, as one
//! peer. The probes themselves come from [`super::plan`].

/// A listener: one per port the golden names (`policy_port`), plus one the golden does not name.
#[derive(Clone, Copy, Debug)]
pub struct Listener {
    /// The port as the golden wrote it; `None` for the unnamed listener.
    pub policy_port: Option<u16>,
    /// The loopback port Envoy listens on (and the policies and filters were rewritten to).
    pub port: u16,
}

/// How the client reaches Envoy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// No TLS: no principal, no SNI.
    Plaintext,
    /// mTLS with a client certificate whose only URI SAN is `identity`, requesting `sni` (none
    /// when empty).
    Mtls { identity: String, sni: String },
}

/// The HTTP part of a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// As sent on the wire (curl `--path-as-is`), query string included.
    pub path: String,
    /// The `Host` header (`:authority`).
    pub host: String,
    /// Extra headers as sent (name as written; an empty value is sent as `Name;`).
    pub headers: Vec<(String, String)>,
}

/// One request (HTTP) or connection (TCP).
#[derive(Clone, Debug)]
pub struct Probe {
    /// Unique within a golden; sent as `x-diff-id` on HTTP.
    pub id: u32,
    /// Index into the golden's listeners.
    pub listener: usize,
    pub peer: Peer,
    /// `None` for a TCP probe.
    pub http: Option<HttpRequest>,
    /// Which policy value this probe exercises, and how.
    pub why: String,
}
