//! The request path, independent of the proxy-wasm host: attributes in, decision out, actions
//! taken through [`Host`]. `host.rs` implements [`Host`] with proxy-wasm host calls; the tests
//! implement it with a fake.
//!
//! Four stages share one VM (same `vm_id`, distinct `root_id`):
//!
//! | root id | filter | does |
//! |---|---|---|
//! | `meshauthz_http` | HTTP | decides (AUDIT, DENY, ALLOW, STRICT), writes filter state, continues |
//! | `meshauthz_http_enforce` | HTTP | reads the decision, answers a deny with 403 |
//! | `meshauthz_net` | network | STRICT transport check, hands the peer address to L7, decides TCP ports |
//! | `meshauthz_net_enforce` | network | reads the L4 decision, closes a denied connection |
//!
//! Between a decide and its enforce stage sits Envoy's RBAC filter with `action: LOG`, matching
//! the audit flag the decide stage wrote: it is what sets `envoy.common.access_log_hint`
//! (a proxy-wasm module cannot write dynamic metadata in Envoy 1.40).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

use log::Level;
use policy_engine::{
    Attributes, Cause, Decision, Engine, HttpAttributes, MtlsMode, Protocol, Requirements, RuleId,
    ShadowResult,
};

use crate::attrs::{decode_bool, decode_pairs, decode_port, decode_str, decode_u64, parse_ip};
use crate::config::{self, Compiled, NodeWorkload};
use crate::metrics::{self, bump, Metrics};

pub const ROOT_HTTP: &str = "meshauthz_http";
pub const ROOT_HTTP_ENFORCE: &str = "meshauthz_http_enforce";
pub const ROOT_NET: &str = "meshauthz_net";
pub const ROOT_NET_ENFORCE: &str = "meshauthz_net_enforce";

/// Filter-state keys (Envoy prefixes them with `wasm.`). HTTP keys live on the request, network
/// keys on the connection; they differ because connection filter state is visible from the
/// requests of that connection, and an L4 decision must never stand in for an L7 one.
pub const HTTP_DECISION: &str = "meshauthz_decision";
pub const HTTP_AUDIT: &str = "meshauthz_audit";
pub const HTTP_SHADOW: &str = "meshauthz_shadow";
pub const NET_DECISION: &str = "meshauthz_net_decision";
pub const NET_AUDIT: &str = "meshauthz_net_audit";
pub const NET_SHADOW: &str = "meshauthz_net_shadow";
/// The direct peer IP, written by `meshauthz_net` for `ipBlocks` / `source.ip` at L7.
pub const PEER_IP: &str = "meshauthz_peer_ip";

/// The same keys as Envoy names them (`filter_state` lookups).
const FS_HTTP_DECISION: &str = "wasm.meshauthz_decision";
const FS_NET_DECISION: &str = "wasm.meshauthz_net_decision";
const FS_PEER_IP: &str = "wasm.meshauthz_peer_ip";

/// Where Envoy's RBAC LOG filter writes its verdict.
const ACCESS_LOG_HINT: [&str; 4] = [
    "metadata",
    "filter_metadata",
    "envoy.common",
    "access_log_hint",
];

/// The dynamic-metadata namespace Envoy's JWT filter writes (`payload_in_metadata: payload`).
const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";

/// How often each root context hands its counts to Envoy (`on_tick`): `/stats` lags by up to this.
pub const METRICS_FLUSH_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// The body Istio's (Envoy RBAC's) 403 carries.
pub const DENY_BODY: &[u8] = b"RBAC: access denied";

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
    fn mtls_mode(&self, port: u16) -> MtlsMode;
    /// Whether some port has its own mode (`portLevelMtls`): only then is the port fetched for
    /// the transport check.
    fn port_specific_mtls(&self) -> bool;
    fn requirements(&self) -> &Requirements;
    fn rule_name(&self, id: RuleId) -> String;
}

impl Authorizer for Engine {
    fn check(&self, protocol: Protocol, attrs: &Attributes<'_>) -> Decision {
        Engine::check(self, protocol, attrs)
    }
    fn mtls_mode(&self, port: u16) -> MtlsMode {
        Engine::mtls_mode(self, port)
    }
    fn port_specific_mtls(&self) -> bool {
        !self.mtls().ports.is_empty()
    }
    fn requirements(&self) -> &Requirements {
        Engine::requirements(self)
    }
    fn rule_name(&self, id: RuleId) -> String {
        Engine::rule_name(self, id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    HttpDecide,
    HttpEnforce,
    NetDecide,
    NetEnforce,
}

impl Stage {
    pub fn from_root_id(root_id: &str) -> Option<Stage> {
        match root_id {
            ROOT_HTTP => Some(Stage::HttpDecide),
            ROOT_HTTP_ENFORCE => Some(Stage::HttpEnforce),
            ROOT_NET => Some(Stage::NetDecide),
            ROOT_NET_ENFORCE => Some(Stage::NetEnforce),
            _ => None,
        }
    }

    pub fn is_network(self) -> bool {
        matches!(self, Stage::NetDecide | Stage::NetEnforce)
    }
}

/// State shared by every root context of one VM (one per worker thread).
#[derive(Default)]
pub struct VmState {
    /// A `meshauthz_http_enforce` root was configured in this VM.
    pub http_enforce: Cell<bool>,
    /// A `meshauthz_net_enforce` root was configured in this VM.
    pub net_enforce: Cell<bool>,
    /// A `meshauthz_net` root was configured in this VM: only then can connection facts exist,
    /// and only then does the HTTP decide stage ask for `connection.id`.
    pub net_decide: Cell<bool>,
    /// What the host said about each open downstream connection of this VM's worker, recorded by
    /// `meshauthz_net` and keyed by Envoy's `connection.id` (unique in the process, never reused).
    conns: RefCell<HashMap<u64, Rc<ConnFacts>>>,
    /// The last valid configuration of each decide filter (plugin name and root id). An update (new plugin
    /// configuration from LDS/ECDS or a WasmPlugin change) gets a new root context in the same
    /// VM; when the update is refused, it starts from the previous valid one, not from nothing.
    last_good: RefCell<Vec<(String, Rc<Compiled>)>>,
}

impl VmState {
    fn last_good(&self, root_id: &str) -> Option<Rc<Compiled>> {
        self.last_good
            .borrow()
            .iter()
            .find(|(id, _)| id == root_id)
            .map(|(_, c)| Rc::clone(c))
    }

    /// Records the facts of connection `id` (its network stage saw its first data).
    pub fn record_conn(&self, id: u64, facts: ConnFacts) {
        let mut conns = self.conns.borrow_mut();
        if conns.len() >= MAX_CONNS && !conns.contains_key(&id) {
            // Records are only ever lost to a fallback that asks the host again; this bounds the
            // map should the host ever skip deleting contexts.
            conns.clear();
        }
        conns.insert(id, Rc::new(facts));
    }

    /// Forgets connection `id` (its network context is deleted).
    pub fn forget_conn(&self, id: u64) {
        self.conns.borrow_mut().remove(&id);
    }

    pub fn conn(&self, id: u64) -> Option<Rc<ConnFacts>> {
        self.conns.borrow().get(&id).cloned()
    }

    /// How many connections have recorded facts.
    pub fn open_conns(&self) -> usize {
        self.conns.borrow().len()
    }

    fn remember(&self, root_id: &str, compiled: &Rc<Compiled>) {
        let mut all = self.last_good.borrow_mut();
        all.retain(|(id, _)| id != root_id);
        all.push((root_id.to_string(), Rc::clone(compiled)));
    }
}

/// Bound of [`VmState`]'s connection map (a worker's open connections are far fewer).
const MAX_CONNS: usize = 1 << 16;

/// The transport facts of one downstream connection, exactly as the host reported them when
/// `meshauthz_net` saw the connection's first data (TLS handshake done). Policy-independent: the
/// HTTP stage applies its own mTLS mode to them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnFacts {
    /// `connection.mtls`.
    pub mtls: bool,
    /// The peer identity ([`peer_identity`]); read only on an mTLS connection.
    pub identity: Option<String>,
    /// `destination.port`.
    pub port: Option<u16>,
    /// The socket peer (`source.address` in `on_new_connection`).
    pub peer_ip: Option<IpAddr>,
}

/// What a filter callback tells the host to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The request was answered or the connection closed: stop the chain.
    Stop,
}

/// One configured plugin (root context) and what its streams share.
pub struct Plugin {
    pub stage: Cell<Option<Stage>>,
    compiled: RefCell<Option<Rc<Compiled>>>,
    metrics: RefCell<Metrics>,
    pub vm: Rc<VmState>,
    errors_logged: Cell<u32>,
}

impl Plugin {
    pub fn new(vm: Rc<VmState>) -> Plugin {
        Plugin {
            stage: Cell::new(None),
            compiled: RefCell::new(None),
            metrics: RefCell::new(Metrics::default()),
            vm,
            errors_logged: Cell::new(0),
        }
    }

    pub fn compiled(&self) -> Option<Rc<Compiled>> {
        self.compiled.borrow().clone()
    }

    /// Installs a compiled configuration (what a successful `configure` does).
    pub fn install(&self, host: &dyn Host, compiled: Compiled) {
        if self.metrics.borrow().allowed.is_none() {
            *self.metrics.borrow_mut() = Metrics::define(host);
        }
        self.metrics
            .borrow_mut()
            .define_ports(host, &compiled.named_ports);
        *self.compiled.borrow_mut() = Some(Rc::new(compiled));
    }

    /// Counts one of `which` (see [`Metrics::add`]).
    fn count(&self, which: impl FnOnce(&Metrics) -> Option<u32>) {
        let m = self.metrics.borrow();
        m.add(which(&m), 1);
    }

    /// `on_tick`: hands the counts of this root's streams to the host.
    pub fn flush_metrics(&self, host: &dyn Host) {
        self.metrics.borrow().flush(host);
    }

    /// Request-path errors that mean a broken deployment are logged at error level, but not for
    /// every request: the first 16, then one in 1024.
    fn log_error(&self, host: &dyn Host, message: &str) {
        let n = self.errors_logged.get();
        self.errors_logged.set(n.wrapping_add(1));
        if n < 16 || n % 1024 == 0 {
            host.log(Level::Error, message);
        }
    }

    /// `on_configure`. Always returns true: returning false would make Envoy reject the whole
    /// listener (at startup Envoy would not start at all). An invalid configuration is refused
    /// instead: every problem is logged, `meshauthz.config_refused` counts it, and the last good
    /// configuration stays in force; with none ever, everything is denied.
    pub fn configure(&self, host: &dyn Host, root_id: &str, configuration: Option<&[u8]>) -> bool {
        let stage = Stage::from_root_id(root_id);
        self.stage.set(stage);
        if self.metrics.borrow().allowed.is_none() {
            *self.metrics.borrow_mut() = Metrics::define(host);
        }
        let Some(stage) = stage else {
            host.log(
                Level::Error,
                &format!(
                    "unknown root_id {root_id:?} (expected {ROOT_HTTP}, {ROOT_HTTP_ENFORCE}, {ROOT_NET} or {ROOT_NET_ENFORCE}): this filter denies everything"
                ),
            );
            return true;
        };
        match stage {
            Stage::HttpEnforce | Stage::NetEnforce => {
                if stage == Stage::HttpEnforce {
                    self.vm.http_enforce.set(true);
                } else {
                    self.vm.net_enforce.set(true);
                }
                // The enforce stages act on the decide stage's verdict only; a configuration given
                // to them is checked so that mistakes show, and otherwise unused.
                if let Some(bytes) =
                    configuration.filter(|b| !b.iter().all(u8::is_ascii_whitespace))
                {
                    if let Err(errors) = config::parse(bytes) {
                        for e in errors {
                            host.log(
                                Level::Warn,
                                &format!(
                                    "{root_id}: configuration (unused by the enforce stage): {e}"
                                ),
                            );
                        }
                    }
                }
                true
            }
            Stage::HttpDecide | Stage::NetDecide => {
                if stage == Stage::NetDecide {
                    self.vm.net_decide.set(true);
                }
                let result = config::parse(configuration.unwrap_or_default()).and_then(|cfg| {
                    let node = if cfg.workload.is_none() {
                        node_workload(host)
                    } else {
                        NodeWorkload::default()
                    };
                    config::compile(&cfg, &node)
                });
                match result {
                    Ok(compiled) => {
                        for w in &compiled.warnings {
                            host.log(Level::Warn, &format!("{root_id}: {w}"));
                        }
                        let n = compiled.authz.requirements();
                        host.log(
                            Level::Info,
                            &format!("{root_id}: configuration accepted (fetches: {n:?})"),
                        );
                        self.install(host, compiled);
                        if let Some(c) = self.compiled() {
                            self.vm.remember(&last_good_key(host, root_id), &c);
                        }
                    }
                    Err(errors) => {
                        for e in &errors {
                            host.log(
                                Level::Error,
                                &format!("{root_id}: configuration refused: {e}"),
                            );
                        }
                        bump(host, self.metrics.borrow().config_refused);
                        if self.compiled.borrow().is_none() {
                            if let Some(previous) = self.vm.last_good(&last_good_key(host, root_id))
                            {
                                self.metrics
                                    .borrow_mut()
                                    .define_ports(host, &previous.named_ports);
                                *self.compiled.borrow_mut() = Some(previous);
                            }
                        }
                        let what = if self.compiled.borrow().is_some() {
                            "the previous valid configuration stays in force"
                        } else {
                            "no valid configuration yet: every request and connection is denied"
                        };
                        host.log(Level::Error, &format!("{root_id}: {what}"));
                    }
                }
                true
            }
        }
    }

    /// Which proxy-wasm context type streams of this root get. An unknown root id gets HTTP
    /// contexts that deny every request (on a network filter that makes the VM fail, which
    /// Envoy's failure policy turns into closed connections).
    pub fn is_network(&self) -> bool {
        self.stage.get().is_some_and(Stage::is_network)
    }
}

/// Which earlier configuration a refused one may fall back to: the same filter (Envoy plugin
/// `name`; Istio: `<namespace>.<WasmPlugin name>`) and stage. Two differently named filters in one
/// VM never inherit each other's policies.
fn last_good_key(host: &dyn Host, root_id: &str) -> String {
    let name = host
        .property(&["plugin_name"])
        .and_then(decode_str)
        .unwrap_or_default();
    format!("{name}\u{0}{root_id}")
}

fn node_workload(host: &dyn Host) -> NodeWorkload {
    // Envoy 1.40 exposes the node as `xds.node` (verified); older releases as `node`.
    let meta = |key: &str| {
        host.property(&["xds", "node", "metadata", key])
            .or_else(|| host.property(&["node", "metadata", key]))
    };
    let namespace = meta("NAMESPACE").and_then(decode_str);
    let raw_labels = meta("LABELS");
    let labels = raw_labels
        .as_deref()
        .and_then(decode_pairs)
        .map(|pairs| pairs.into_iter().collect());
    NodeWorkload {
        namespace,
        labels_unreadable: raw_labels.is_some() && labels.is_none(),
        labels,
    }
}

/// A decision label: a constant, or a rule's label shared from [`Labels`]. Neither allocates on
/// the request path.
#[derive(Clone, Debug)]
enum Label {
    Static(&'static str),
    Shared(Rc<str>),
}

impl Label {
    fn as_str(&self) -> &str {
        match self {
            Label::Static(s) => s,
            Label::Shared(s) => s,
        }
    }
}

/// One dry-run outcome as the label shows it: allowed, and the matching rule.
type ShadowKey = Option<(bool, Option<RuleId>)>;

/// Bound of the dry-run label cache. Its key is a pair of outcomes, so in theory it grows with the
/// square of the dry-run rules; past this many entries a label is built per request instead.
const MAX_SHADOW_LABELS: usize = 4096;

/// The access-log labels of one compiled configuration (`allow ns[foo]-policy[bar]-rule[0]`,
/// `dry-run-allow=allowed(...)`), each built the first time a request needs it and shared after.
/// Owned by [`Compiled`]: a new configuration starts with an empty cache, so no label of a
/// previous configuration is ever shown.
#[derive(Debug, Default)]
pub struct Labels {
    /// Keyed by (allowed, rule).
    decisions: RefCell<BTreeMap<(bool, RuleId), Rc<str>>>,
    /// Keyed by the (ALLOW, DENY) dry-run outcomes.
    shadows: RefCell<BTreeMap<(ShadowKey, ShadowKey), Rc<str>>>,
}

impl Labels {
    fn decision(&self, allowed: bool, rule: RuleId, authz: &dyn Authorizer) -> Rc<str> {
        let key = (allowed, rule);
        if let Some(l) = self.decisions.borrow().get(&key) {
            return Rc::clone(l);
        }
        let verb = if allowed { "allow " } else { "deny " };
        let label: Rc<str> = Rc::from(format!("{verb}{}", authz.rule_name(rule)));
        // Bounded by twice the number of rules of this configuration.
        self.decisions.borrow_mut().insert(key, Rc::clone(&label));
        label
    }

    /// `None` when the decision has no dry-run outcome.
    fn shadow(&self, d: &Decision, authz: &dyn Authorizer) -> Option<Rc<str>> {
        let of = |s: &Option<ShadowResult>| s.map(|s| (s.allowed, s.rule));
        let key = (of(&d.shadow_allow), of(&d.shadow_deny));
        if key == (None, None) {
            return None;
        }
        if let Some(l) = self.shadows.borrow().get(&key) {
            return Some(Rc::clone(l));
        }
        let mut out = String::new();
        if let Some(s) = &d.shadow_allow {
            shadow_label("dry-run-allow", s, authz, &mut out);
        }
        if let Some(s) = &d.shadow_deny {
            shadow_label("dry-run-deny", s, authz, &mut out);
        }
        let label: Rc<str> = Rc::from(out);
        let mut shadows = self.shadows.borrow_mut();
        if shadows.len() < MAX_SHADOW_LABELS {
            shadows.insert(key, Rc::clone(&label));
        }
        Some(label)
    }
}

/// The outcome of a decide stage.
struct Verdict {
    allowed: bool,
    /// For the access log: `allow ns[foo]-policy[bar]-rule[0]`, `deny no-allow-rule-matched`, ...
    label: Label,
    /// `None`: no AUDIT policy applies (nothing written); else whether an AUDIT rule matched.
    audit: Option<bool>,
    shadow: Option<Rc<str>>,
    fail_closed: bool,
}

impl Verdict {
    fn deny(label: &'static str, fail_closed: bool) -> Verdict {
        Verdict {
            allowed: false,
            label: Label::Static(label),
            audit: None,
            shadow: None,
            fail_closed,
        }
    }
}

fn shadow_label(kind: &str, s: &ShadowResult, authz: &dyn Authorizer, out: &mut String) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(kind);
    out.push_str(if s.allowed { "=allowed" } else { "=denied" });
    if let Some(r) = s.rule {
        out.push('(');
        out.push_str(&authz.rule_name(r));
        out.push(')');
    }
}

fn verdict_of(d: &Decision, c: &Compiled, metrics: &Metrics) -> Verdict {
    let authz = c.authz.as_ref();
    let label = match d.cause {
        Cause::AllowRule(r) | Cause::DenyRule(r) => {
            Label::Shared(c.labels.decision(d.allowed(), r, authz))
        }
        Cause::NoAllowPolicy => Label::Static("allow no-allow-policy"),
        Cause::NoAllowRuleMatched => Label::Static("deny no-allow-rule-matched"),
    };
    if let Some(s) = &d.shadow_allow {
        metrics.add(
            if s.allowed {
                metrics.shadow_allow_allowed
            } else {
                metrics.shadow_allow_denied
            },
            1,
        );
    }
    if let Some(s) = &d.shadow_deny {
        metrics.add(
            if s.allowed {
                metrics.shadow_deny_allowed
            } else {
                metrics.shadow_deny_denied
            },
            1,
        );
    }
    if d.audit_rule.is_some() {
        metrics.add(metrics.audited, 1);
    }
    if d.cel_errors > 0 {
        metrics.add(metrics.cel_errors, i64::from(d.cel_errors));
    }
    Verdict {
        allowed: d.allowed(),
        label,
        audit: d.audit_policy_applies.then_some(d.audit_rule.is_some()),
        shadow: c.labels.shadow(d, authz),
        fail_closed: false,
    }
}

fn prop_str(host: &dyn Host, path: &[&str]) -> Option<String> {
    host.property(path)
        .and_then(decode_str)
        .filter(|s| !s.is_empty())
}

fn prop_ip(host: &dyn Host, path: &[&str]) -> Option<IpAddr> {
    prop_str(host, path).and_then(|s| parse_ip(&s))
}

fn header(host: &dyn Host, name: &str) -> Option<String> {
    // Lossy: a value that is not UTF-8 still matches (or fails to match) as the bytes it has,
    // never disappears (an absent path would not match a DENY rule on it).
    host.request_header(name)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The peer identity as Envoy RBAC's `authenticated` principal sees it: first URI SAN, else first
/// DNS SAN, else the subject. Callers ask only on an mTLS connection.
fn peer_identity(host: &dyn Host) -> Option<String> {
    prop_str(host, &["connection", "uri_san_peer_certificate"])
        .or_else(|| prop_str(host, &["connection", "dns_san_peer_certificate"]))
        .or_else(|| prop_str(host, &["connection", "subject_peer_certificate"]))
}

/// The transport facts of a stream: whether it is mTLS and the mode of its port.
struct Transport {
    mtls: bool,
    port: Option<u16>,
    mode: MtlsMode,
}

/// `facts`: what `meshauthz_net` recorded for this connection, if anything; else the host is
/// asked.
fn transport(
    host: &dyn Host,
    authz: &dyn Authorizer,
    always_port: bool,
    facts: Option<&ConnFacts>,
) -> Transport {
    let mtls = match facts {
        Some(f) => f.mtls,
        None => host
            .property(&["connection", "mtls"])
            .and_then(|b| decode_bool(&b))
            .unwrap_or(false),
    };
    let need_port =
        always_port || authz.requirements().destination_port || authz.port_specific_mtls();
    let port = match facts {
        _ if !need_port => None,
        Some(f) => f.port,
        None => host
            .property(&["destination", "port"])
            .and_then(|b| decode_port(&b)),
    };
    let mode = match port {
        Some(p) => authz.mtls_mode(p),
        // The port is unknown although ports differ: assume the strictest.
        None if authz.port_specific_mtls() => MtlsMode::Strict,
        None => authz.mtls_mode(0),
    };
    Transport { mtls, port, mode }
}

/// Owned attribute values fetched from the host, borrowed by [`Attributes`].
#[derive(Default)]
struct Fetched {
    principal: Option<String>,
    sni: Option<String>,
    host: Option<String>,
    method: Option<String>,
    path: Option<String>,
    headers: Vec<(String, String)>,
}

/// Fetches what the policies need and asks them. `peer_ip` is the direct peer (L4: the socket
/// peer; L7: handed over by the network filter).
fn evaluate(
    host: &dyn Host,
    authz: &dyn Authorizer,
    protocol: Protocol,
    t: &Transport,
    peer_ip: Option<IpAddr>,
    facts: Option<&ConnFacts>,
) -> Decision {
    let req = authz.requirements();
    // DISABLE: the workload does not authenticate peers. A TLS connection is accepted (the
    // listener terminated it), but its certificate grants nothing: no principal, not mTLS.
    let authenticated = t.mtls && t.mode != MtlsMode::Disable;
    let mut f = Fetched::default();
    if req.principal && authenticated {
        f.principal = match facts {
            Some(facts) => facts.identity.clone(),
            None => peer_identity(host),
        };
    }
    if req.sni {
        f.sni = prop_str(host, &["connection", "requested_server_name"]);
    }
    let http = protocol == Protocol::Http;
    if http {
        // Envoy RBAC matches a header sent several times when any one of its values matches.
        // The host's single-header read returns the first value only, so a second copy could
        // hide the value a DENY names: when policies name headers, the whole list is read once
        // (one host call). The pseudo-headers are then taken from that list, not read one by
        // one (each read is a host call); one missing from the list is still read by itself.
        let all = (req.all_headers || !req.headers.is_empty()).then(|| host.request_headers());
        let pseudo = |name: &str| {
            all.as_ref()
                .and_then(|all| all.iter().find(|(n, _)| n == name))
                .map(|(_, v)| v.clone())
                .or_else(|| header(host, name))
        };
        if req.host {
            f.host = pseudo(":authority");
        }
        if req.method {
            f.method = pseudo(":method");
        }
        if req.path {
            f.path = pseudo(":path");
        }
        if let Some(all) = all {
            if req.all_headers {
                f.headers = all;
            } else {
                // Every value of the headers the policies name.
                for (n, value) in all {
                    if let Some(name) = req.headers.iter().find(|h| n.eq_ignore_ascii_case(h)) {
                        f.headers.push((name.clone(), value));
                    }
                }
            }
        }
    }
    let remote_ip = if req.remote_ip {
        prop_ip(host, &["source", "address"])
    } else {
        None
    };
    let destination_ip = if req.destination_ip {
        prop_ip(host, &["destination", "address"])
    } else {
        None
    };
    // Dynamic metadata: the JWT payload Envoy's jwt_authn filter verified, and
    // `experimental.envoy.filters.*` conditions. Never a request header.
    let metadata = if (http && req.jwt) || !req.dynamic_metadata.is_empty() {
        host.property(&["metadata"])
            .and_then(|b| crate::proto::decode_metadata(&b))
    } else {
        None
    };
    let jwt = if http && req.jwt {
        metadata
            .as_ref()
            .and_then(|m| m.get(JWT_AUTHN))
            .and_then(|f| f.get("payload"))
    } else {
        None
    };
    let pairs: Vec<(&str, &str)> = f
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let attrs = Attributes {
        principal: f.principal.as_deref(),
        mtls: authenticated,
        source_ip: peer_ip,
        remote_ip,
        destination_ip,
        destination_port: t.port,
        sni: f.sni.as_deref(),
        dynamic_metadata: metadata.as_ref(),
        http: http.then(|| HttpAttributes {
            host: f.host.as_deref(),
            method: f.method.as_deref(),
            path: f.path.as_deref(),
            headers: &pairs,
            jwt,
        }),
    };
    authz.check(protocol, &attrs)
}

/// Writes the verdict for the enforce stage and the access log, counts it, and denies by itself
/// when no enforce stage exists in this VM.
fn publish(
    host: &dyn Host,
    plugin: &Plugin,
    v: &Verdict,
    keys: (&str, &str, &str),
    enforce_present: bool,
) -> bool {
    let (decision_key, audit_key, shadow_key) = keys;
    host.set_filter_state(decision_key, v.label.as_str().as_bytes());
    if let Some(audited) = v.audit {
        host.set_filter_state(audit_key, if audited { b"1" } else { b"0" });
    }
    if let Some(s) = &v.shadow {
        host.set_filter_state(shadow_key, s.as_bytes());
    }
    let m = plugin.metrics.borrow();
    m.add(if v.allowed { m.allowed } else { m.denied }, 1);
    if v.fail_closed {
        m.add(m.fail_closed, 1);
    }
    // Deny here when nothing after us would.
    !v.allowed && !enforce_present
}

// ---- HTTP -----------------------------------------------------------------------------------

/// `meshauthz_http`, `on_http_request_headers`.
pub fn http_decide(host: &dyn Host, plugin: &Plugin) -> Flow {
    let v = match plugin.compiled() {
        None => Verdict::deny("deny no-valid-configuration", true),
        Some(c) => http_verdict(host, plugin, &c),
    };
    let enforce = plugin.vm.http_enforce.get();
    if publish(
        host,
        plugin,
        &v,
        (HTTP_DECISION, HTTP_AUDIT, HTTP_SHADOW),
        enforce,
    ) {
        host.send_forbidden();
        return Flow::Stop;
    }
    Flow::Continue
}

fn http_verdict(host: &dyn Host, plugin: &Plugin, c: &Compiled) -> Verdict {
    let authz = c.authz.as_ref();
    let facts = recorded_conn(host, plugin);
    let facts = facts.as_deref();
    let t = transport(host, authz, false, facts);
    if t.mode == MtlsMode::Strict && !t.mtls {
        // Normally the network filter has already reset such a connection; this is the HTTP
        // filter's own guarantee, whatever the filter order.
        let m = plugin.metrics.borrow();
        m.add(m.plaintext_id(t.port, false), 1);
        return Verdict::deny("deny mtls-strict-plaintext", false);
    }
    let peer_ip = if authz.requirements().source_ip {
        match facts.and_then(|f| f.peer_ip).or_else(|| l7_peer_ip(host)) {
            Some(ip) => Some(ip),
            None => {
                plugin.log_error(
                    host,
                    "a policy matches ipBlocks/source.ip but the direct peer address is unknown (X-Forwarded-For present and meshauthz_net not on the listener): request denied",
                );
                return Verdict::deny("deny peer-address-unknown", true);
            }
        }
    } else {
        None
    };
    let d = evaluate(host, authz, Protocol::Http, &t, peer_ip, facts);
    verdict_of(&d, c, &plugin.metrics.borrow())
}

/// The facts `meshauthz_net` recorded for this request's connection: one host call
/// (`connection.id`) instead of one per fact. `None` (the caller asks the host for each fact, as
/// without a network stage) when no `meshauthz_net` runs in this VM or it recorded nothing for
/// this connection id.
fn recorded_conn(host: &dyn Host, plugin: &Plugin) -> Option<Rc<ConnFacts>> {
    if !plugin.vm.net_decide.get() {
        return None;
    }
    let id = host
        .property(&["connection", "id"])
        .and_then(|b| decode_u64(&b))?;
    plugin.vm.conn(id)
}

/// The direct peer at L7. Preferred: what `meshauthz_net` recorded from the socket. Without it,
/// `source.address` is the direct peer only when the request carries no `X-Forwarded-For`
/// (otherwise the HTTP connection manager may have replaced it with an address the client
/// chose); with one, the peer is unknown.
fn l7_peer_ip(host: &dyn Host) -> Option<IpAddr> {
    if let Some(ip) = prop_ip(host, &["filter_state", FS_PEER_IP]) {
        return Some(ip);
    }
    if host.request_header("x-forwarded-for").is_some() {
        return None;
    }
    prop_ip(host, &["source", "address"])
}

fn is_allow(label: &[u8]) -> bool {
    label == b"allow" || label.starts_with(b"allow ")
}

/// `meshauthz_http_enforce`, `on_http_request_headers`.
pub fn http_enforce(host: &dyn Host, plugin: &Plugin) -> Flow {
    let allowed = match host.property(&["filter_state", FS_HTTP_DECISION]) {
        None => {
            plugin.log_error(
                host,
                "meshauthz_http_enforce: no decision in filter state: meshauthz_http is missing or placed after the enforce stage: request denied",
            );
            plugin.count(|m| m.fail_closed);
            false
        }
        Some(label) if is_allow(&label) => {
            audit_companion_ran(host, plugin, "wasm.meshauthz_audit")
        }
        Some(_) => false,
    };
    if allowed {
        Flow::Continue
    } else {
        host.send_forbidden();
        Flow::Stop
    }
}

/// When AUDIT policies apply, Envoy's RBAC LOG filter must have run between the stages (it alone
/// can set `access_log_hint`). If it did not, the request is denied: an audit trail that silently
/// disappears is a security failure too.
fn audit_companion_ran(host: &dyn Host, plugin: &Plugin, audit_key: &str) -> bool {
    let Some(audit) = host.property(&["filter_state", audit_key]) else {
        return true;
    };
    let problem = match host.property(&ACCESS_LOG_HINT).map(|b| decode_bool(&b)) {
        None => "AUDIT policies apply but envoy.common.access_log_hint is absent: the RBAC LOG companion filter is missing between the decide and enforce stages: denied",
        // An AUDIT rule matched, yet the companion did not see the flag: it ran before the
        // decide stage (or matches another key).
        Some(Some(false)) if audit == b"1" => "an AUDIT rule matched but envoy.common.access_log_hint is false: the RBAC LOG companion runs before meshauthz's decide stage or matches another key: denied",
        Some(_) => return true,
    };
    plugin.log_error(host, problem);
    plugin.count(|m| m.fail_closed);
    false
}

/// The context of a root whose id is unknown: every request is denied.
pub fn http_unknown_root(host: &dyn Host) -> Flow {
    host.send_forbidden();
    Flow::Stop
}

// ---- network --------------------------------------------------------------------------------

/// Per-connection state of a network stage.
#[derive(Debug, Default)]
pub struct Conn {
    decided: bool,
    closed: bool,
    /// The socket peer, read in `on_new_connection`.
    peer_ip: Option<IpAddr>,
    /// Set when this connection's facts were recorded in [`VmState`].
    recorded: Option<u64>,
}

impl Conn {
    fn close(&mut self, host: &dyn Host) -> Flow {
        if !self.closed {
            host.close_downstream();
        }
        self.closed = true;
        Flow::Stop
    }
}

/// `meshauthz_net`, `on_new_connection`: TLS attributes are not ready yet, the filter chain name
/// is. A plaintext chain on a STRICT port is reset here (the client sees a connection reset, as
/// with Istio's STRICT).
pub fn net_new_connection(host: &dyn Host, plugin: &Plugin, conn: &mut Conn) -> Flow {
    let Some(c) = plugin.compiled() else {
        let m = plugin.metrics.borrow();
        m.add(m.denied, 1);
        m.add(m.fail_closed, 1);
        return conn.close(host);
    };
    // Hand the direct peer to the HTTP filter: at L7 `source.address` may come from
    // X-Forwarded-For, which the client controls.
    conn.peer_ip = prop_ip(host, &["source", "address"]);
    if let Some(ip) = conn.peer_ip {
        host.set_filter_state(PEER_IP, ip.to_string().as_bytes());
    }
    let chain = prop_str(host, &["xds", "filter_chain_name"]);
    let plaintext = chain.is_some_and(|name| c.plaintext_filter_chains.contains(&name));
    if plaintext {
        let port = host
            .property(&["destination", "port"])
            .and_then(|b| decode_port(&b));
        let mode = match port {
            Some(p) => c.authz.mtls_mode(p),
            None if c.authz.port_specific_mtls() => MtlsMode::Strict,
            None => c.authz.mtls_mode(0),
        };
        let rejected = mode == MtlsMode::Strict;
        plugin.count(|m| m.plaintext_id(port, !rejected));
        if rejected {
            return conn.close(host);
        }
    }
    Flow::Continue
}

/// `meshauthz_net`, `on_downstream_data`: the first data of the connection (the TLS handshake is
/// done). Re-checks the transport, then authorizes TCP ports with Istio's TCP semantics.
pub fn net_decide(host: &dyn Host, plugin: &Plugin, conn: &mut Conn) -> Flow {
    if conn.closed {
        return Flow::Stop;
    }
    if conn.decided {
        return Flow::Continue;
    }
    conn.decided = true;
    let enforce = plugin.vm.net_enforce.get();
    let keys = (NET_DECISION, NET_AUDIT, NET_SHADOW);
    let Some(c) = plugin.compiled() else {
        publish(
            host,
            plugin,
            &Verdict::deny("deny no-valid-configuration", true),
            keys,
            enforce,
        );
        return conn.close(host);
    };
    let authz = c.authz.as_ref();
    let t = transport(host, authz, true, None);
    if t.mode == MtlsMode::Strict && !t.mtls {
        // A plaintext connection on a chain not listed in plaintextFilterChains.
        let m = plugin.metrics.borrow();
        m.add(m.plaintext_id(t.port, false), 1);
        m.add(m.denied, 1);
        return conn.close(host);
    }
    let v = if t.port.is_some_and(|p| c.http_ports.contains(&p)) {
        // HTTP port: meshauthz_http authorizes each request, with these facts.
        host.set_filter_state(NET_DECISION, b"allow http-port");
        record_conn(host, plugin, conn, &t);
        return Flow::Continue;
    } else {
        let peer_ip = prop_ip(host, &["source", "address"]);
        let d = evaluate(host, authz, Protocol::Tcp, &t, peer_ip, None);
        verdict_of(&d, &c, &plugin.metrics.borrow())
    };
    if publish(host, plugin, &v, keys, enforce) {
        return conn.close(host);
    }
    Flow::Continue
}

/// Records the connection's transport facts for the HTTP stages of this VM. Only a connection
/// whose id the host reported is recorded; `peer_ip` is only kept when `on_new_connection` read it.
fn record_conn(host: &dyn Host, plugin: &Plugin, conn: &mut Conn, t: &Transport) {
    let Some(id) = host
        .property(&["connection", "id"])
        .and_then(|b| decode_u64(&b))
    else {
        return;
    };
    let identity = if t.mtls { peer_identity(host) } else { None };
    plugin.vm.record_conn(
        id,
        ConnFacts {
            mtls: t.mtls,
            identity,
            port: t.port,
            peer_ip: conn.peer_ip,
        },
    );
    conn.recorded = Some(id);
}

/// The network context is deleted (the connection is gone): its facts are forgotten.
pub fn net_done(plugin: &Plugin, conn: &mut Conn) {
    if let Some(id) = conn.recorded.take() {
        plugin.vm.forget_conn(id);
    }
}

/// `meshauthz_net_enforce`, `on_downstream_data`.
pub fn net_enforce(host: &dyn Host, plugin: &Plugin, conn: &mut Conn) -> Flow {
    if conn.closed {
        return Flow::Stop;
    }
    if conn.decided {
        return Flow::Continue;
    }
    conn.decided = true;
    let allowed = match host.property(&["filter_state", FS_NET_DECISION]) {
        None => {
            plugin.log_error(
                host,
                "meshauthz_net_enforce: no decision in filter state: meshauthz_net is missing or placed after the enforce stage: connection closed",
            );
            plugin.count(|m| m.fail_closed);
            false
        }
        Some(label) if is_allow(&label) => {
            audit_companion_ran(host, plugin, "wasm.meshauthz_net_audit")
        }
        Some(_) => false,
    };
    if allowed {
        Flow::Continue
    } else {
        conn.close(host)
    }
}

/// Network context of an unknown root: closes.
pub fn net_unknown_root(host: &dyn Host, conn: &mut Conn) -> Flow {
    conn.close(host)
}

/// The metric names a test or an operator can expect (for documentation tests).
pub fn base_metric_names() -> [&'static str; 10] {
    [
        metrics::ALLOWED,
        metrics::DENIED,
        metrics::SHADOW_ALLOW_ALLOWED,
        metrics::SHADOW_ALLOW_DENIED,
        metrics::SHADOW_DENY_ALLOWED,
        metrics::SHADOW_DENY_DENIED,
        metrics::AUDITED,
        metrics::CONFIG_REFUSED,
        metrics::CEL_ERRORS,
        metrics::FAIL_CLOSED,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_state_names_are_the_keys_prefixed() {
        assert_eq!(FS_HTTP_DECISION, format!("wasm.{HTTP_DECISION}"));
        assert_eq!(FS_NET_DECISION, format!("wasm.{NET_DECISION}"));
        assert_eq!(FS_PEER_IP, format!("wasm.{PEER_IP}"));
        assert_eq!("wasm.meshauthz_audit", format!("wasm.{HTTP_AUDIT}"));
        assert_eq!("wasm.meshauthz_net_audit", format!("wasm.{NET_AUDIT}"));
    }
}
