//! The request path with a fake host: every action the module can take (continue, 403, close),
//! what it writes for the companions and the access log, and what it counts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

/// The test encoders the unit tests share (`#[path]` from `src/attrs.rs` and `src/proto.rs`).
mod support {
    pub mod pairs;
    pub mod proto;
}

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use log::Level;
use meshauthz_filter::config::Compiled;
use meshauthz_filter::net::Conn;
use meshauthz_filter::plugin::Plugin;
use meshauthz_filter::traits::{Authorizer, Flow, Host};
use meshauthz_filter::vm::VmState;
use meshauthz_filter::{http, metrics, names, net};
use policy_engine::{
    Attributes, Cause, Decision, EnforceMode, MtlsMode, PortMtls, Protocol, ReportOnly,
    Requirements, RuleId, ShadowResult,
};
use support::pairs::encode_pairs;

// ---- fake host ------------------------------------------------------------------------------

#[derive(Default)]
struct FakeHost {
    props: HashMap<Vec<String>, Vec<u8>>,
    headers: Vec<(String, String)>,
    state: RefCell<BTreeMap<String, Vec<u8>>>,
    fetched: RefCell<Vec<String>>,
    forbidden: RefCell<u32>,
    closed: RefCell<u32>,
    metric_names: RefCell<Vec<String>>,
    counts: RefCell<HashMap<u32, i64>>,
    logs: RefCell<Vec<(Level, String)>>,
    /// Every host call, in order: `get <path>`, `header <name>`, `headers`, `set <key>`,
    /// `forbid`, `close`, `define <name>`, `metric <name>`, `log`.
    calls: RefCell<Vec<String>>,
}

impl FakeHost {
    fn with(mut self, path: &[&str], value: &[u8]) -> Self {
        self.props
            .insert(path.iter().map(|s| s.to_string()).collect(), value.to_vec());
        self
    }
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    fn mtls(self, on: bool) -> Self {
        self.with(&["connection", "mtls"], &[u8::from(on)])
    }
    fn port(self, port: i64) -> Self {
        self.with(&["destination", "port"], &port.to_le_bytes())
    }
    fn chain(self, name: &str) -> Self {
        self.with(&["xds", "filter_chain_name"], name.as_bytes())
    }
    /// A peer certificate with this one URI SAN, as the host and the `set_filter_state`
    /// companion report it.
    fn uri_san(self, san: &str) -> Self {
        self.with(&["connection", "uri_san_peer_certificate"], san.as_bytes())
            .sans(&format!("{san} "))
    }
    /// The companion's SAN list: `<uri,uri> <dns,dns>`.
    fn sans(self, list: &str) -> Self {
        self.with(&["filter_state", names::PEER_SANS], list.as_bytes())
    }
    fn state(&self, key: &str) -> Option<String> {
        self.state
            .borrow()
            .get(key)
            .map(|v| String::from_utf8(v.clone()).unwrap())
    }
    fn count(&self, name: &str) -> i64 {
        let names = self.metric_names.borrow();
        let Some(id) = names.iter().position(|n| n == name) else {
            return 0;
        };
        *self.counts.borrow().get(&(id as u32)).unwrap_or(&0)
    }
    fn errors(&self) -> Vec<String> {
        self.logged(Level::Error)
    }
    fn infos(&self) -> Vec<String> {
        self.logged(Level::Info)
    }
    fn logged(&self, level: Level) -> Vec<String> {
        self.logs
            .borrow()
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, m)| m.clone())
            .collect()
    }
    fn forbidden(&self) -> u32 {
        *self.forbidden.borrow()
    }
    fn closed(&self) -> u32 {
        *self.closed.borrow()
    }
    /// The host calls made so far, in order; and forget them.
    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }
    fn call(&self, what: String) {
        self.calls.borrow_mut().push(what);
    }
    /// The properties and headers read so far, in order.
    fn fetched(&self) -> Vec<String> {
        self.fetched.borrow().clone()
    }
}

impl Host for FakeHost {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.call(format!("get {}", path.join(".")));
        self.fetched.borrow_mut().push(path.join("."));
        if let ["filter_state", key] = path {
            if let Some(key) = key.strip_prefix("wasm.") {
                return self.state.borrow().get(key).cloned();
            }
        }
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.props.get(&key).cloned()
    }
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.call(format!("header {name}"));
        self.fetched.borrow_mut().push(format!("header:{name}"));
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_bytes().to_vec())
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.call("headers".to_string());
        self.fetched.borrow_mut().push("headers".to_string());
        self.headers.clone()
    }
    fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        self.call(format!("set {key}"));
        self.state
            .borrow_mut()
            .insert(key.to_string(), value.to_vec());
        true
    }
    fn send_forbidden(&self) -> bool {
        self.call("forbid".to_string());
        *self.forbidden.borrow_mut() += 1;
        true
    }
    fn close_downstream(&self) -> bool {
        self.call("close".to_string());
        *self.closed.borrow_mut() += 1;
        true
    }
    fn define_counter(&self, name: &str) -> Option<u32> {
        self.call(format!("define {name}"));
        let mut names = self.metric_names.borrow_mut();
        if let Some(i) = names.iter().position(|n| n == name) {
            return Some(i as u32);
        }
        names.push(name.to_string());
        Some(names.len() as u32 - 1)
    }
    fn increment(&self, id: u32, by: i64) {
        let name = self.metric_names.borrow().get(id as usize).cloned();
        self.call(format!("metric {}", name.unwrap_or_default()));
        *self.counts.borrow_mut().entry(id).or_default() += by;
    }
    fn log(&self, level: Level, message: &str) {
        self.call("log".to_string());
        self.logs.borrow_mut().push((level, message.to_string()));
    }
}

// ---- scripted authorizer --------------------------------------------------------------------

/// What the authorizer saw of one check.
#[derive(Clone, Debug, Default, PartialEq)]
struct Seen {
    protocol: Option<Protocol>,
    principal: Option<String>,
    mtls: bool,
    source_ip: Option<String>,
    port: Option<u16>,
    path: Option<String>,
    method: Option<String>,
    headers: Vec<(String, String)>,
}

struct Scripted {
    decision: Decision,
    default_mode: MtlsMode,
    ports: Vec<(u16, MtlsMode)>,
    /// Which STRICT ports are report-only.
    report_only: Option<ReportOnly>,
    req: Requirements,
    seen: Rc<RefCell<Vec<Seen>>>,
}

impl Authorizer for Scripted {
    fn check(&self, protocol: Protocol, a: &Attributes<'_>) -> Decision {
        self.seen.borrow_mut().push(Seen {
            protocol: Some(protocol),
            principal: a.principal.map(str::to_string),
            mtls: a.mtls,
            source_ip: a.source_ip.map(|ip| ip.to_string()),
            port: a.destination_port,
            path: a.http.as_ref().and_then(|h| h.path).map(str::to_string),
            method: a.http.as_ref().and_then(|h| h.method).map(str::to_string),
            headers: a
                .http
                .as_ref()
                .map(|h| {
                    h.headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        });
        self.decision
    }
    /// As the engine answers it: at an unknown port enforced STRICT when ports differ.
    fn mtls_mode_at(&self, port: Option<u16>) -> PortMtls {
        let mode = match port {
            Some(port) => self
                .ports
                .iter()
                .find(|(p, _)| *p == port)
                .map(|(_, m)| *m)
                .unwrap_or(self.default_mode),
            None if self.has_port_level_mtls() => return PortMtls::enforced(MtlsMode::Strict),
            None => self.default_mode,
        };
        let report_only = mode == MtlsMode::Strict
            && match (&self.report_only, port) {
                (Some(ReportOnly::All), _) => true,
                (Some(r), Some(p)) => r.covers(p),
                _ => false,
            };
        PortMtls { mode, report_only }
    }
    fn has_port_level_mtls(&self) -> bool {
        !self.ports.is_empty() || matches!(self.report_only, Some(ReportOnly::Ports(_)))
    }
    fn requirements(&self) -> &Requirements {
        &self.req
    }
    fn rule_name(&self, id: RuleId) -> String {
        format!("ns[foo]-policy[p{}]-rule[{}]", id.policy, id.rule)
    }
}

const R0: RuleId = RuleId { policy: 0, rule: 0 };
const R1: RuleId = RuleId { policy: 1, rule: 2 };

/// A decision whose cause allows (the engine derives `allowed` from the cause).
fn allow(cause: Cause) -> Decision {
    assert!(cause.allows(), "{cause:?} denies");
    decision(cause)
}

/// A decision whose cause denies.
fn deny(cause: Cause) -> Decision {
    assert!(!cause.allows(), "{cause:?} allows");
    decision(cause)
}

fn decision(cause: Cause) -> Decision {
    Decision {
        cause,
        audit_policy_applies: false,
        audit_rule: None,
        shadow_allow: None,
        shadow_deny: None,
        cel_errors: 0,
    }
}

struct Setup {
    decision: Decision,
    default_mode: MtlsMode,
    ports: Vec<(u16, MtlsMode)>,
    report_only: Option<ReportOnly>,
    req: Requirements,
    http_ports: Vec<u16>,
    enforce: bool,
    enforce_mode: EnforceMode,
}

impl Setup {
    fn new(decision: Decision) -> Self {
        Setup {
            decision,
            default_mode: MtlsMode::Permissive,
            ports: Vec::new(),
            report_only: None,
            req: Requirements {
                mtls: true,
                ..Requirements::default()
            },
            http_ports: Vec::new(),
            enforce: true,
            enforce_mode: EnforceMode::Separate,
        }
    }

    /// A decide plugin with this authorizer installed, an enforce plugin (if `enforce`) in the
    /// same VM, the host, and the record of checks.
    fn build(self, host: &FakeHost) -> (Plugin, Plugin, Rc<RefCell<Vec<Seen>>>) {
        let vm = Rc::new(VmState::default());
        let decide = Plugin::new(Rc::clone(&vm));
        let enforce = Plugin::new(Rc::clone(&vm));
        let seen = Rc::new(RefCell::new(Vec::new()));
        // Installed as a valid configuration would be.
        decide.install(
            host,
            Rc::new(Compiled {
                authz: Box::new(Scripted {
                    decision: self.decision,
                    default_mode: self.default_mode,
                    ports: self.ports,
                    report_only: self.report_only,
                    req: self.req,
                    seen: Rc::clone(&seen),
                }),
                plaintext_filter_chains: vec!["plaintext".to_string()],
                http_ports: self.http_ports,
                named_ports: vec![8080],
                enforce: self.enforce_mode,
                warnings: Vec::new(),
                labels: Default::default(),
            }),
        );
        if self.enforce {
            enforce.configure(host, names::ROOT_HTTP_ENFORCE, None);
            enforce.configure(host, names::ROOT_NET_ENFORCE, None);
        }
        (decide, enforce, seen)
    }
}

/// Runs decide -> (RBAC LOG, simulated by `hint`) -> enforce for one request.
fn request(host: &FakeHost, decide: &Plugin, enforce: &Plugin) -> (Flow, Flow) {
    let d = http::decide(host, decide);
    if d == Flow::Stop {
        return (d, Flow::Stop);
    }
    (d, http::enforce(host, enforce))
}

// ---- HTTP -----------------------------------------------------------------------------------

#[test]
fn allowed_request_continues_and_is_labelled() {
    let host = FakeHost::default().mtls(true);
    let (decide, enforce, seen) = Setup::new(allow(Cause::AllowRule(R0))).build(&host);
    assert_eq!(
        request(&host, &decide, &enforce),
        (Flow::Continue, Flow::Continue)
    );
    assert_eq!(host.forbidden(), 0);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("allow ns[foo]-policy[p0]-rule[0]")
    );
    assert_eq!(
        host.state(names::HTTP_AUDIT),
        None,
        "no AUDIT policy applies"
    );
    // Counted in VM memory; Envoy sees the counts at the next tick.
    assert_eq!(host.count("meshauthz.rbac.allowed"), 0);
    decide.flush_metrics(&host);
    enforce.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.rbac.allowed"), 1);
    assert_eq!(host.count("meshauthz.rbac.denied"), 0);
    assert_eq!(seen.borrow()[0].protocol, Some(Protocol::Http));
}

#[test]
fn no_allow_policy_is_allowed_and_labelled() {
    let host = FakeHost::default().mtls(false);
    let (decide, enforce, _) = Setup::new(allow(Cause::NoAllowPolicy)).build(&host);
    assert_eq!(
        request(&host, &decide, &enforce),
        (Flow::Continue, Flow::Continue)
    );
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("allow no-allow-policy")
    );
}

#[test]
fn denied_request_gets_403_from_the_enforce_stage() {
    let host = FakeHost::default().mtls(true);
    let (decide, enforce, _) = Setup::new(deny(Cause::DenyRule(R1))).build(&host);
    let (d, e) = request(&host, &decide, &enforce);
    // The decide stage lets the RBAC LOG companion run; the enforce stage answers.
    assert_eq!(d, Flow::Continue);
    assert_eq!(e, Flow::Stop);
    assert_eq!(host.forbidden(), 1);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("deny ns[foo]-policy[p1]-rule[2]")
    );
    decide.flush_metrics(&host);
    enforce.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.rbac.denied"), 1);
    assert_eq!(names::DENY_BODY, b"RBAC: access denied");
}

#[test]
fn no_allow_rule_matched_is_denied() {
    let host = FakeHost::default().mtls(true);
    let (decide, enforce, _) = Setup::new(deny(Cause::NoAllowRuleMatched)).build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("deny no-allow-rule-matched")
    );
}

#[test]
fn audit_flag_is_written_for_the_log_companion() {
    // An AUDIT rule matched: "1" (the RBAC LOG principal matches exactly "1").
    let host = FakeHost::default().mtls(true).with(
        &[
            "metadata",
            "filter_metadata",
            "envoy.common",
            "access_log_hint",
        ],
        &[1],
    );
    let mut d = allow(Cause::NoAllowPolicy);
    d.audit_policy_applies = true;
    d.audit_rule = Some(R0);
    let (decide, enforce, _) = Setup::new(d).build(&host);
    assert_eq!(
        request(&host, &decide, &enforce),
        (Flow::Continue, Flow::Continue)
    );
    assert_eq!(host.state(names::HTTP_AUDIT).as_deref(), Some("1"));
    decide.flush_metrics(&host);
    enforce.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.audited"), 1);

    // AUDIT policies apply, none matched: "0".
    let host = FakeHost::default().mtls(true).with(
        &[
            "metadata",
            "filter_metadata",
            "envoy.common",
            "access_log_hint",
        ],
        &[0],
    );
    let mut d = allow(Cause::NoAllowPolicy);
    d.audit_policy_applies = true;
    let (decide, enforce, _) = Setup::new(d).build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Continue);
    assert_eq!(host.state(names::HTTP_AUDIT).as_deref(), Some("0"));
    decide.flush_metrics(&host);
    enforce.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.audited"), 0);
}

#[test]
fn missing_log_companion_is_denied_when_audit_policies_apply() {
    let host = FakeHost::default().mtls(true); // no access_log_hint: RBAC LOG did not run
    let mut d = allow(Cause::AllowRule(R0));
    d.audit_policy_applies = true;
    d.audit_rule = Some(R0);
    let (decide, enforce, _) = Setup::new(d).build(&host);
    assert_eq!(
        request(&host, &decide, &enforce),
        (Flow::Continue, Flow::Stop)
    );
    assert_eq!(host.forbidden(), 1);
    assert!(
        host.errors()
            .iter()
            .any(|e| e.contains("access_log_hint is absent")),
        "{:?}",
        host.errors()
    );
    decide.flush_metrics(&host);
    enforce.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.fail_closed"), 1);
}

#[test]
fn missing_log_companion_does_not_matter_without_audit_policies() {
    let host = FakeHost::default().mtls(true);
    let (decide, enforce, _) = Setup::new(allow(Cause::AllowRule(R0))).build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Continue);
    assert!(
        !host.fetched().iter().any(|p| p.contains("access_log_hint")),
        "the hint is read only when AUDIT policies apply"
    );
}

#[test]
fn missing_decision_is_denied_by_the_enforce_stage() {
    // meshauthz_http absent, or placed after the enforce stage.
    let host = FakeHost::default().mtls(true);
    let (_, enforce, _) = Setup::new(allow(Cause::NoAllowPolicy)).build(&host);
    assert_eq!(http::enforce(&host, &enforce), Flow::Stop);
    assert_eq!(host.forbidden(), 1);
    assert!(host
        .errors()
        .iter()
        .any(|e| e.contains("no decision in filter state")));
}

#[test]
fn an_unparsable_decision_is_a_deny() {
    let host = FakeHost::default();
    let (_, enforce, _) = Setup::new(allow(Cause::NoAllowPolicy)).build(&host);
    for label in ["allowed", "ALLOW x", "", "deny x", "allowx"] {
        host.set_filter_state(names::HTTP_DECISION, label.as_bytes());
        assert_eq!(http::enforce(&host, &enforce), Flow::Stop, "{label:?}");
    }
    host.set_filter_state(names::HTTP_DECISION, b"allow");
    assert_eq!(http::enforce(&host, &enforce), Flow::Continue);
}

#[test]
fn decide_stage_denies_by_itself_without_an_enforce_root() {
    let host = FakeHost::default().mtls(true);
    let mut s = Setup::new(deny(Cause::DenyRule(R0)));
    s.enforce = false;
    let (decide, _, _) = s.build(&host);
    assert_eq!(http::decide(&host, &decide), Flow::Stop);
    assert_eq!(host.forbidden(), 1);

    // Allowed requests still pass.
    let host = FakeHost::default().mtls(true);
    let mut s = Setup::new(allow(Cause::AllowRule(R0)));
    s.enforce = false;
    let (decide, _, _) = s.build(&host);
    assert_eq!(http::decide(&host, &decide), Flow::Continue);
    assert_eq!(host.forbidden(), 0);
}

#[test]
fn decide_mode_answers_denials_itself_even_with_an_enforce_root() {
    // `"enforce": "decide"`: the decide stage is the whole chain; an enforce root configured in
    // the VM (another listener) does not make it wait for a stage that is not there.
    let host = FakeHost::default().mtls(true);
    let mut s = Setup::new(deny(Cause::DenyRule(R0)));
    s.enforce_mode = EnforceMode::Decide;
    let (decide, _, _) = s.build(&host);
    assert_eq!(http::decide(&host, &decide), Flow::Stop);
    assert_eq!(host.forbidden(), 1);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("deny ns[foo]-policy[p0]-rule[0]")
    );
    // The same denial in "separate" mode waits for the enforce stage.
    let host = FakeHost::default().mtls(true);
    let (decide, _, _) = Setup::new(deny(Cause::DenyRule(R0))).build(&host);
    assert_eq!(http::decide(&host, &decide), Flow::Continue);
    assert_eq!(host.forbidden(), 0);
}

#[test]
fn native_mode_leaves_audited_denials_to_envoys_rbac_filter() {
    // `"enforce": "native"`: Envoy's RBAC filter in DENY mode follows the RBAC LOG companion, and
    // no Wasm enforce root is in the VM.
    // A denial no AUDIT policy concerns: answered here (one Wasm call, no companion needed).
    let host = FakeHost::default().mtls(true);
    let mut s = Setup::new(deny(Cause::DenyRule(R0)));
    s.enforce = false;
    s.enforce_mode = EnforceMode::Native;
    let (decide, _, _) = s.build(&host);
    assert_eq!(http::decide(&host, &decide), Flow::Stop);
    assert_eq!(host.forbidden(), 1);
    // A denial AUDIT policies concern, matched or not: published and left to the native filter,
    // so that the companion marks it first.
    for audit_rule in [Some(R0), None] {
        let host = FakeHost::default().mtls(true);
        let mut d = deny(Cause::DenyRule(R0));
        d.audit_policy_applies = true;
        d.audit_rule = audit_rule;
        let mut s = Setup::new(d);
        s.enforce = false;
        s.enforce_mode = EnforceMode::Native;
        let (decide, _, _) = s.build(&host);
        assert_eq!(
            http::decide(&host, &decide),
            Flow::Continue,
            "{audit_rule:?}"
        );
        assert_eq!(host.forbidden(), 0);
        assert_eq!(
            host.state(names::HTTP_DECISION).as_deref(),
            Some("deny ns[foo]-policy[p0]-rule[0]")
        );
        let flag = if audit_rule.is_some() { "1" } else { "0" };
        assert_eq!(host.state(names::HTTP_AUDIT).as_deref(), Some(flag));
    }
    // An audited, allowed request passes on: the native filter checks the companion's mark.
    let host = FakeHost::default().mtls(true);
    let mut d = allow(Cause::AllowRule(R0));
    d.audit_policy_applies = true;
    d.audit_rule = Some(R0);
    let mut s = Setup::new(d);
    s.enforce = false;
    s.enforce_mode = EnforceMode::Native;
    let (decide, _, _) = s.build(&host);
    assert_eq!(http::decide(&host, &decide), Flow::Continue);
    assert_eq!(host.forbidden(), 0);
    assert!(host.errors().is_empty(), "{:?}", host.errors());
}

#[test]
fn audit_without_an_enforce_stage_fails_closed() {
    // An audited, allowed request with nothing after the decide stage to check the RBAC LOG
    // companion: the audit trail would be lost, so it is denied.
    for (enforce_root, mode) in [
        (false, EnforceMode::Separate),
        (true, EnforceMode::Decide),
        (false, EnforceMode::Decide),
    ] {
        let host = FakeHost::default().mtls(true);
        let mut d = allow(Cause::AllowRule(R0));
        d.audit_policy_applies = true;
        d.audit_rule = Some(R0);
        let mut s = Setup::new(d);
        s.enforce = enforce_root;
        s.enforce_mode = mode;
        let (decide, _, _) = s.build(&host);
        assert_eq!(
            http::decide(&host, &decide),
            Flow::Stop,
            "{enforce_root} {mode:?}"
        );
        assert_eq!(host.forbidden(), 1);
        assert_eq!(
            host.state(names::HTTP_DECISION).as_deref(),
            Some("deny audit-companion-missing")
        );
        assert!(
            host.errors()
                .iter()
                .any(|e| e.contains("no meshauthz_http_enforce stage follows")),
            "{:?}",
            host.errors()
        );
        decide.flush_metrics(&host);
        assert_eq!(host.count("meshauthz.fail_closed"), 1);
    }
    // AUDIT policies apply but none matched, and the request is allowed: still denied (the
    // companion's absence cannot be told from its correct work without the enforce stage).
    let host = FakeHost::default().mtls(true);
    let mut d = allow(Cause::AllowRule(R0));
    d.audit_policy_applies = true;
    let mut s = Setup::new(d);
    s.enforce = false;
    let (decide, _, _) = s.build(&host);
    assert_eq!(http::decide(&host, &decide), Flow::Stop);
}

#[test]
fn decide_mode_with_audit_policies_is_refused_and_denies() {
    let doc = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "audit-api", "namespace": "foo"},
         "spec": {"action": "AUDIT", "rules": [{"to": [{"operation": {"paths": ["/api/*"]}}]}]}}],
        "workload": {"namespace": "foo"}, "enforce": "decide"}"#;
    let host = FakeHost::default().mtls(true).header(":path", "/hello");
    let vm = Rc::new(VmState::default());
    let decide = Plugin::new(Rc::clone(&vm));
    decide.configure(&host, names::ROOT_HTTP, Some(doc));
    assert!(
        host.errors().iter().any(|e| e.contains(
            "enforce: \"decide\" (decide stage alone) but AUDIT policies apply to this workload (foo/audit-api)"
        )),
        "{:?}",
        host.errors()
    );
    assert_eq!(http::decide(&host, &decide), Flow::Stop);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("deny no-valid-configuration")
    );
}

#[test]
fn strict_port_without_mtls_is_never_forwarded() {
    let host = FakeHost::default().mtls(false).port(8080);
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.default_mode = MtlsMode::Strict;
    let (decide, enforce, seen) = s.build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
    assert_eq!(host.forbidden(), 1);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("deny mtls-strict-plaintext")
    );
    assert!(seen.borrow().is_empty(), "policies are not even evaluated");

    // The same request over mTLS is evaluated and allowed.
    let host = FakeHost::default().mtls(true).port(8080);
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.default_mode = MtlsMode::Strict;
    let (decide, enforce, _) = s.build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Continue);
}

#[test]
fn port_level_strict_applies_to_that_port_only() {
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.ports = vec![(9000, MtlsMode::Strict)];
    let host = FakeHost::default().mtls(false).port(8080);
    let (decide, enforce, _) = s.build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Continue);

    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.ports = vec![(9000, MtlsMode::Strict)];
    let host = FakeHost::default().mtls(false).port(9000);
    let (decide, enforce, _) = s.build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
}

fn principal_req() -> Requirements {
    Requirements {
        mtls: true,
        principal: true,
        ..Requirements::default()
    }
}

#[test]
fn identity_comes_only_from_the_verified_certificate() {
    // Plaintext caller sending a forged XFCC: no identity.
    let host = FakeHost::default()
        .mtls(false)
        .header(
            "x-forwarded-client-cert",
            "By=spiffe://cluster.local/ns/foo/sa/server;URI=spiffe://cluster.local/ns/foo/sa/admin",
        )
        // Even if the host reported a SAN, without mTLS it is not used.
        .uri_san("spiffe://cluster.local/ns/foo/sa/admin");
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req = principal_req();
    s.req.add_header("x-forwarded-client-cert");
    let (decide, _, seen) = s.build(&host);
    http::decide(&host, &decide);
    let seen = seen.borrow();
    assert_eq!(seen[0].principal, None);
    assert!(!seen[0].mtls);
    // The header is visible as a header (a `when` condition may name it), never as identity.
    assert_eq!(seen[0].headers.len(), 1);

    // mTLS: the URI SAN.
    let host = FakeHost::default()
        .mtls(true)
        .uri_san("spiffe://cluster.local/ns/foo/sa/bar");
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req = principal_req();
    let (decide, _, seen) = s.build(&host);
    http::decide(&host, &decide);
    assert_eq!(
        seen.borrow()[0].principal.as_deref(),
        Some("spiffe://cluster.local/ns/foo/sa/bar")
    );
    assert!(seen.borrow()[0].mtls);
}

#[test]
fn identity_falls_back_to_dns_san_then_subject() {
    let host = FakeHost::default()
        .mtls(true)
        .sans(" client.foo.svc")
        .with(
            &["connection", "dns_san_peer_certificate"],
            b"client.foo.svc",
        )
        .with(
            &["connection", "subject_peer_certificate"],
            b"CN=client,O=acme",
        );
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req = principal_req();
    let (decide, _, seen) = s.build(&host);
    http::decide(&host, &decide);
    assert_eq!(
        seen.borrow()[0].principal.as_deref(),
        Some("client.foo.svc")
    );

    let host = FakeHost::default().mtls(true).sans(" ").with(
        &["connection", "subject_peer_certificate"],
        b"CN=client,O=acme",
    );
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req = principal_req();
    let (decide, _, seen) = s.build(&host);
    http::decide(&host, &decide);
    assert_eq!(
        seen.borrow()[0].principal.as_deref(),
        Some("CN=client,O=acme")
    );
}

/// Issue 7 §5: Istio has only plaintext chains on a DISABLE port, so a TLS client fails there.
/// meshauthz resets a connection on a non-plaintext chain in `on_new_connection`; the later
/// stages refuse TLS on a DISABLE port too (were the port known only then).
#[test]
fn tls_on_a_disable_port_is_refused() {
    // Workload-level DISABLE, HTTP decide stage (no network stage): 403, counted.
    let host = FakeHost::default()
        .mtls(true)
        .uri_san("spiffe://cluster.local/ns/foo/sa/bar");
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req = principal_req();
    s.default_mode = MtlsMode::Disable;
    let (decide, enforce, seen) = s.build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
    assert!(seen.borrow().is_empty(), "not evaluated");
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("deny mtls-disable-tls")
    );
    assert_eq!(
        host.count("meshauthz.disable_tls_rejected"),
        0,
        "not flushed yet"
    );
    decide.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.disable_tls_rejected"), 1);

    // Plaintext on the same port: served, no identity.
    let host = FakeHost::default().mtls(false);
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req = principal_req();
    s.default_mode = MtlsMode::Disable;
    let (decide, enforce, seen) = s.build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Continue);
    assert_eq!(seen.borrow()[0].principal, None);

    // Network stage, port-level DISABLE on 9000: the TLS chain is reset before the handshake;
    // the plaintext chain and other ports are not.
    for (chain, port, reset) in [
        ("mtls", 9000, true),
        ("plaintext", 9000, false),
        ("mtls", 9001, false),
    ] {
        let host = FakeHost::default().chain(chain).port(port);
        let mut s = Setup::new(allow(Cause::NoAllowPolicy));
        s.ports = vec![(9000, MtlsMode::Disable)];
        let (net, _, _) = s.build(&host);
        net.stage.set(Some(meshauthz_filter::vm::Stage::NetDecide));
        let mut conn = Conn::default();
        let flow = net::new_connection(&host, &net, &mut conn);
        assert_eq!(flow == Flow::Stop, reset, "{chain} {port}");
        assert_eq!(host.closed(), u32::from(reset), "{chain} {port}");
    }

    // Workload-level DISABLE, TCP port: reset in on_new_connection; a TLS connection the network
    // stage sees only at first data is closed there.
    let host = FakeHost::default().chain("mtls").mtls(true).port(9000);
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.default_mode = MtlsMode::Disable;
    let (net, _, _) = s.build(&host);
    let mut conn = Conn::default();
    assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Stop);
    let mut conn = Conn::default();
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Stop);
    assert_eq!(host.closed(), 2);
}

#[test]
fn only_required_attributes_are_fetched() {
    let host = FakeHost::default()
        .mtls(true)
        .uri_san("spiffe://cluster.local/ns/foo/sa/bar")
        .header(":path", "/a")
        .header(":method", "GET");
    let (decide, _, seen) = Setup::new(allow(Cause::NoAllowPolicy)).build(&host);
    host.fetched.borrow_mut().clear();
    http::decide(&host, &decide);
    assert_eq!(host.fetched(), vec!["connection.mtls"]);
    assert_eq!(seen.borrow()[0].path, None);

    let host = FakeHost::default()
        .mtls(true)
        .header(":path", "/a/../b%2F?x=1")
        .header(":method", "GET");
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req.path = true;
    s.req.method = true;
    let (decide, _, seen) = s.build(&host);
    host.fetched.borrow_mut().clear();
    http::decide(&host, &decide);
    // No `set_filter_state` companion on this chain: looked for, then each read.
    assert_eq!(
        host.fetched(),
        vec![
            "filter_state.meshauthz.request",
            "connection.mtls",
            "header::method",
            "header::path"
        ]
    );
    // The path is passed raw; the engine normalizes.
    assert_eq!(seen.borrow()[0].path.as_deref(), Some("/a/../b%2F?x=1"));
    assert_eq!(seen.borrow()[0].method.as_deref(), Some("GET"));
}

#[test]
fn source_ip_is_the_direct_peer_handed_over_by_the_network_filter() {
    // L4: the network filter records the socket peer on the connection.
    let host = FakeHost::default()
        .with(&["source", "address"], b"10.1.2.3:45000")
        .chain("mtls");
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req.source_ip = true;
    let (decide, enforce, seen) = s.build(&host);
    let mut conn = Conn::default();
    assert_eq!(
        net::new_connection(&host, &decide, &mut conn),
        Flow::Continue
    );
    assert_eq!(host.state(names::PEER_IP).as_deref(), Some("10.1.2.3"));

    // L7 (same connection): `source.address` now says what X-Forwarded-For claimed; the policy
    // sees the direct peer.
    let host7 = FakeHost::default()
        .mtls(true)
        .with(&["source", "address"], b"192.168.0.1:1")
        .header("x-forwarded-for", "192.168.0.1");
    host7.set_filter_state(names::PEER_IP, b"10.1.2.3");
    assert_eq!(
        request(&host7, &decide, &enforce),
        (Flow::Continue, Flow::Continue)
    );
    assert_eq!(seen.borrow()[0].source_ip.as_deref(), Some("10.1.2.3"));
}

#[test]
fn without_the_network_filter_source_address_is_used_only_without_xff() {
    let host = FakeHost::default()
        .mtls(true)
        .with(&["source", "address"], b"10.9.8.7:1234");
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req.source_ip = true;
    let (decide, enforce, seen) = s.build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Continue);
    assert_eq!(seen.borrow()[0].source_ip.as_deref(), Some("10.9.8.7"));
}

#[test]
fn unknown_peer_address_is_denied_when_a_policy_needs_it() {
    // X-Forwarded-For present, no handoff from the network filter: `source.address` may be the
    // client's claim.
    let host = FakeHost::default()
        .mtls(true)
        .with(&["source", "address"], b"10.9.8.7:1234")
        .header("x-forwarded-for", "10.9.8.7");
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req.source_ip = true;
    let (decide, enforce, seen) = s.build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("deny peer-address-unknown")
    );
    assert!(seen.borrow().is_empty());
    assert!(!host.errors().is_empty());
}

#[test]
fn dry_run_results_are_labelled_and_counted() {
    let host = FakeHost::default().mtls(true);
    let mut d = allow(Cause::NoAllowPolicy);
    d.shadow_allow = Some(ShadowResult {
        allowed: false,
        rule: None,
    });
    d.shadow_deny = Some(ShadowResult {
        allowed: false,
        rule: Some(R1),
    });
    d.cel_errors = 2;
    let (decide, enforce, _) = Setup::new(d).build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Continue);
    assert_eq!(
        host.state(names::HTTP_SHADOW).as_deref(),
        Some("dry-run-allow=denied dry-run-deny=denied(ns[foo]-policy[p1]-rule[2])")
    );
    decide.flush_metrics(&host);
    enforce.flush_metrics(&host);
    assert_eq!(
        host.count("meshauthz.rbac.istio_dry_run_allow_shadow_denied"),
        1
    );
    assert_eq!(
        host.count("meshauthz.rbac.istio_dry_run_deny_shadow_denied"),
        1
    );
    assert_eq!(
        host.count("meshauthz.rbac.istio_dry_run_allow_shadow_allowed"),
        0
    );
    assert_eq!(host.count("meshauthz.cel_errors"), 2);
}

// ---- configuration --------------------------------------------------------------------------

#[test]
fn no_configuration_ever_denies_everything() {
    let host = FakeHost::default().mtls(true);
    let vm = Rc::new(VmState::default());
    let decide = Plugin::new(Rc::clone(&vm));
    let enforce = Plugin::new(Rc::clone(&vm));
    assert!(decide.configure(&host, names::ROOT_HTTP, Some(b"not json")));
    assert!(enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None));
    assert_eq!(host.count("meshauthz.config_refused"), 1);
    assert!(host.errors().iter().any(|e| e.contains("not valid JSON")));
    assert!(host
        .errors()
        .iter()
        .any(|e| e.contains("every request and connection is denied")));

    assert_eq!(
        request(&host, &decide, &enforce),
        (Flow::Continue, Flow::Stop)
    );
    assert_eq!(host.forbidden(), 1);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("deny no-valid-configuration")
    );

    // Network: the connection is closed at once.
    let net = Plugin::new(Rc::clone(&vm));
    assert!(net.configure(&host, names::ROOT_NET, None));
    let mut conn = Conn::default();
    assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Stop);
    assert_eq!(host.closed(), 1);
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Stop);
    assert_eq!(host.closed(), 1, "closed once");
}

#[test]
fn refused_update_keeps_the_last_good_configuration() {
    let host = FakeHost::default().mtls(true);
    let (decide, enforce, _) = Setup::new(allow(Cause::AllowRule(R0))).build(&host);
    let refused_before = host.count("meshauthz.config_refused");
    assert!(decide.configure(
        &host,
        names::ROOT_HTTP,
        Some(br#"{"policies": [], "bogus": 1}"#)
    ));
    assert_eq!(host.count("meshauthz.config_refused"), refused_before + 1);
    assert!(host
        .errors()
        .iter()
        .any(|e| e.contains("bogus: unknown field")));
    assert!(host
        .errors()
        .iter()
        .any(|e| e.contains("previous valid configuration stays in force")));
    assert_eq!(
        request(&host, &decide, &enforce),
        (Flow::Continue, Flow::Continue)
    );
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("allow ns[foo]-policy[p0]-rule[0]")
    );
}

#[test]
fn unknown_root_id_denies() {
    let host = FakeHost::default();
    let p = Plugin::new(Rc::new(VmState::default()));
    assert!(p.configure(&host, "meshauthz_htp", Some(br#"{"policies": []}"#)));
    assert!(host.errors().iter().any(|e| e.contains("unknown root_id")));
    assert!(!p.is_network());
    assert_eq!(http::unknown_root(&host), Flow::Stop);
    assert_eq!(host.forbidden(), 1);
}

#[test]
fn enforce_roots_mark_the_vm() {
    let host = FakeHost::default();
    let vm = Rc::new(VmState::default());
    let p = Plugin::new(Rc::clone(&vm));
    assert!(!vm.http_enforce.get() && !vm.net_enforce.get());
    p.configure(&host, names::ROOT_NET_ENFORCE, None);
    assert!(vm.net_enforce.get() && !vm.http_enforce.get());
    assert!(p.is_network());
    let q = Plugin::new(Rc::clone(&vm));
    q.configure(&host, names::ROOT_HTTP_ENFORCE, Some(b"  "));
    assert!(vm.http_enforce.get());
}

#[test]
fn metrics_are_defined_with_envoy_rbac_names() {
    let host = FakeHost::default();
    let (_, _, _) = Setup::new(allow(Cause::NoAllowPolicy)).build(&host);
    let names = host.metric_names.borrow();
    for n in metrics::base_metric_names() {
        assert!(names.iter().any(|m| m == n), "{n} missing from {names:?}");
    }
    for n in [
        "meshauthz.plaintext.8080.accepted",
        "meshauthz.plaintext.8080.rejected",
        "meshauthz.plaintext.other.accepted",
        "meshauthz.plaintext.other.rejected",
    ] {
        assert!(names.iter().any(|m| m == n), "{n} missing from {names:?}");
    }
}

// ---- network --------------------------------------------------------------------------------

#[test]
fn strict_plaintext_chain_is_reset_on_new_connection() {
    let host = FakeHost::default().chain("plaintext").port(8080);
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.default_mode = MtlsMode::Strict;
    let (net, _, seen) = s.build(&host);
    let mut conn = Conn::default();
    assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Stop);
    assert_eq!(host.closed(), 1);
    net.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.plaintext.8080.rejected"), 1);
    // Later callbacks of the closed connection do nothing more.
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Stop);
    assert_eq!(host.closed(), 1);
    assert!(seen.borrow().is_empty());
    // `connection.mtls` is not ready in on_new_connection and must not be what decided.
    assert!(!host.fetched().iter().any(|p| p == "connection.mtls"));
}

#[test]
fn permissive_plaintext_is_accepted_and_counted_per_port() {
    // 9999 is a port no policy names: it gets counters of its own on first sight.
    let host = FakeHost::default()
        .chain("plaintext")
        .port(9999)
        .mtls(false);
    let (net, _, _) = Setup::new(allow(Cause::NoAllowPolicy)).build(&host);
    assert!(!host
        .metric_names
        .borrow()
        .iter()
        .any(|n| n.starts_with("meshauthz.plaintext.9999.")));
    let mut conn = Conn::default();
    assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(host.closed(), 0);
    net.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.plaintext.9999.accepted"), 1);
    assert_eq!(host.count("meshauthz.plaintext.other.accepted"), 0);
    for outcome in ["rejected", "report_only"] {
        let name = format!("meshauthz.plaintext.9999.{outcome}");
        assert!(host.metric_names.borrow().contains(&name), "{name}");
    }
}

#[test]
fn per_port_counters_are_bounded_then_other() {
    use meshauthz_filter::metrics::{Metrics, Plaintext, MAX_PORT_METRICS};
    let host = FakeHost::default();
    let m = Metrics::define(&host);
    let ports: Vec<u16> = (1..=u16::try_from(MAX_PORT_METRICS).unwrap() + 5).collect();
    for &p in &ports {
        m.add(m.plaintext_id(&host, Some(p), Plaintext::Accepted), 1);
    }
    m.flush(&host);
    assert_eq!(m.counted_ports().len(), MAX_PORT_METRICS);
    for &p in &ports[..MAX_PORT_METRICS] {
        assert_eq!(host.count(&format!("meshauthz.plaintext.{p}.accepted")), 1);
    }
    // The ports beyond the bound have no counters of their own: `other` counts them.
    let beyond = &ports[MAX_PORT_METRICS..];
    for p in beyond {
        let name = format!("meshauthz.plaintext.{p}.accepted");
        assert!(!host.metric_names.borrow().contains(&name), "{name}");
    }
    assert_eq!(
        host.count("meshauthz.plaintext.other.accepted"),
        beyond.len() as i64
    );
    // A port the host did not report is `other` too.
    m.add(m.plaintext_id(&host, None, Plaintext::Rejected), 1);
    m.flush(&host);
    assert_eq!(host.count("meshauthz.plaintext.other.rejected"), 1);
}

// ---- report-only STRICT ---------------------------------------------------------------------

/// The warnings logged so far.
fn warnings(host: &FakeHost) -> Vec<String> {
    host.logged(Level::Warn)
}

#[test]
fn report_only_strict_admits_plaintext_counts_logs_and_authorizes() {
    let host = FakeHost::default()
        .chain("plaintext")
        .port(8080)
        .mtls(false)
        .with(&["source", "address"], b"10.1.2.3:45678")
        .with(&["connection_id"], &7u64.to_le_bytes());
    let mut s = Setup::new(deny(Cause::NoAllowRuleMatched));
    s.default_mode = MtlsMode::Strict;
    s.report_only = Some(ReportOnly::All);
    s.http_ports = vec![8080];
    let (net, enforce, seen) = s.build(&host);
    net.vm.net_decide.set(true);
    let mut conn = Conn::default();
    assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(host.closed(), 0, "report-only: nothing is reset");
    // Logged once for the connection, naming the caller and the port.
    let logged = warnings(&host);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("report-only STRICT"), "{}", logged[0]);
    assert!(
        logged[0].contains("from 10.1.2.3:45678 to port 8080"),
        "{}",
        logged[0]
    );
    // Two requests on the connection: authorized as on PERMISSIVE (here the ALLOW policies do
    // not match: 403), not counted or logged again.
    for _ in 0..2 {
        assert_eq!(request(&host, &net, &enforce).1, Flow::Stop);
    }
    assert_eq!(host.forbidden(), 2);
    assert_eq!(seen.borrow().len(), 2);
    assert!(!seen.borrow()[0].mtls);
    assert_eq!(seen.borrow()[0].principal, None);
    assert_eq!(warnings(&host).len(), 1);
    net.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.plaintext.8080.report_only"), 1);
    assert_eq!(host.count("meshauthz.plaintext.8080.rejected"), 0);
    assert_eq!(host.count("meshauthz.plaintext.8080.accepted"), 0);
}

#[test]
fn report_only_strict_allowed_request_goes_through() {
    let host = FakeHost::default()
        .chain("plaintext")
        .port(8080)
        .mtls(false)
        .with(&["source", "address"], b"127.0.0.1:5000");
    let mut s = Setup::new(allow(Cause::AllowRule(R0)));
    s.default_mode = MtlsMode::Strict;
    s.report_only = Some(ReportOnly::Ports([8080].into()));
    let (net, enforce, _) = s.build(&host);
    let mut conn = Conn::default();
    assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(
        request(&host, &net, &enforce),
        (Flow::Continue, Flow::Continue)
    );
    assert_eq!(host.forbidden(), 0);
    assert_eq!(host.closed(), 0);
}

#[test]
fn strict_next_to_a_report_only_port_is_still_reset() {
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.default_mode = MtlsMode::Strict;
    s.report_only = Some(ReportOnly::Ports([8080].into()));
    let host = FakeHost::default().chain("plaintext").port(9000);
    let (net, _, _) = s.build(&host);
    assert_eq!(
        net::new_connection(&host, &net, &mut Conn::default()),
        Flow::Stop
    );
    assert_eq!(host.closed(), 1);
    net.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.plaintext.9000.rejected"), 1);
    assert!(warnings(&host).is_empty());
}

#[test]
fn report_only_on_a_chain_not_listed_as_plaintext_is_reported_at_first_data() {
    let host = FakeHost::default()
        .chain("odd")
        .port(8080)
        .mtls(false)
        .with(&["source", "address"], b"10.0.0.9:1234");
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.default_mode = MtlsMode::Strict;
    s.report_only = Some(ReportOnly::All);
    let (net, _, _) = s.build(&host);
    let mut conn = Conn::default();
    assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(host.closed(), 0);
    net.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.plaintext.8080.report_only"), 1);
    let logged = warnings(&host);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("10.0.0.9:1234"));
}

#[test]
fn report_only_without_a_network_stage_counts_each_request() {
    let host = FakeHost::default()
        .port(8080)
        .mtls(false)
        .with(&["source", "address"], b"10.0.0.5:999");
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.default_mode = MtlsMode::Strict;
    s.report_only = Some(ReportOnly::All);
    s.req.destination_port = true;
    let (decide, enforce, _) = s.build(&host);
    for _ in 0..2 {
        assert_eq!(
            request(&host, &decide, &enforce),
            (Flow::Continue, Flow::Continue)
        );
    }
    decide.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.plaintext.8080.report_only"), 2);
    assert_eq!(warnings(&host).len(), 2);
    assert!(warnings(&host)[0].contains("plaintext request from 10.0.0.5:999 to port 8080"));
}

#[test]
fn mtls_chain_on_strict_port_passes_new_connection() {
    // connection.mtls reads false in on_new_connection even on the mTLS chain (TLS handshake not
    // done); the decision there uses the chain name only.
    let host = FakeHost::default().chain("mtls").port(8080).mtls(false);
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.default_mode = MtlsMode::Strict;
    let (net, _, _) = s.build(&host);
    let mut conn = Conn::default();
    assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(host.closed(), 0);
}

#[test]
fn strict_is_rechecked_on_first_data() {
    // A plaintext connection on a chain not listed as plaintext.
    let host = FakeHost::default().chain("odd").port(8080).mtls(false);
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.default_mode = MtlsMode::Strict;
    let (net, _, seen) = s.build(&host);
    let mut conn = Conn::default();
    assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Stop);
    assert_eq!(host.closed(), 1);
    assert!(seen.borrow().is_empty());
}

#[test]
fn tcp_port_is_authorized_with_tcp_semantics_and_closed_on_deny() {
    let host = FakeHost::default()
        .chain("mtls")
        .port(5432)
        .mtls(true)
        .uri_san("spiffe://cluster.local/ns/other/sa/evil");
    let mut s = Setup::new(deny(Cause::DenyRule(R0)));
    s.req = principal_req();
    let (net, enforce, seen) = s.build(&host);
    let mut conn = Conn::default();
    let mut econn = Conn::default();
    assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(
        host.state(names::NET_DECISION).as_deref(),
        Some("deny ns[foo]-policy[p0]-rule[0]")
    );
    assert_eq!(
        host.state(names::HTTP_DECISION),
        None,
        "L4 never writes the L7 key"
    );
    assert_eq!(net::enforce(&host, &enforce, &mut econn), Flow::Stop);
    assert_eq!(host.closed(), 1);
    let seen = seen.borrow();
    assert_eq!(seen[0].protocol, Some(Protocol::Tcp));
    assert_eq!(
        seen[0].principal.as_deref(),
        Some("spiffe://cluster.local/ns/other/sa/evil")
    );
    assert_eq!(seen[0].port, Some(5432));
    // Decided once per connection.
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(seen.len(), 1);
}

#[test]
fn tcp_allow_passes_the_enforce_stage() {
    let host = FakeHost::default().chain("mtls").port(5432).mtls(true);
    let (net, enforce, _) = Setup::new(allow(Cause::AllowRule(R0))).build(&host);
    let mut conn = Conn::default();
    let mut econn = Conn::default();
    net::new_connection(&host, &net, &mut conn);
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(net::enforce(&host, &enforce, &mut econn), Flow::Continue);
    assert_eq!(host.closed(), 0);
    net.flush_metrics(&host);
    enforce.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.rbac.allowed"), 1);
}

#[test]
fn tcp_deny_without_enforce_root_closes_in_the_decide_stage() {
    let host = FakeHost::default().chain("mtls").port(5432).mtls(true);
    let mut s = Setup::new(deny(Cause::NoAllowRuleMatched));
    s.enforce = false;
    let (net, _, _) = s.build(&host);
    let mut conn = Conn::default();
    net::new_connection(&host, &net, &mut conn);
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Stop);
    assert_eq!(host.closed(), 1);
}

#[test]
fn net_enforce_without_decision_closes() {
    let host = FakeHost::default();
    let (_, enforce, _) = Setup::new(allow(Cause::NoAllowPolicy)).build(&host);
    let mut conn = Conn::default();
    assert_eq!(net::enforce(&host, &enforce, &mut conn), Flow::Stop);
    assert_eq!(host.closed(), 1);
    assert!(host
        .errors()
        .iter()
        .any(|e| e.contains("no decision in filter state")));
}

#[test]
fn net_enforce_requires_the_log_companion_when_audit_applies() {
    let host = FakeHost::default().chain("mtls").port(5432).mtls(true);
    let mut d = allow(Cause::NoAllowPolicy);
    d.audit_policy_applies = true;
    let (net, enforce, _) = Setup::new(d).build(&host);
    let mut conn = Conn::default();
    let mut econn = Conn::default();
    net::decide(&host, &net, &mut conn);
    assert_eq!(host.state(names::NET_AUDIT).as_deref(), Some("0"));
    assert_eq!(net::enforce(&host, &enforce, &mut econn), Flow::Stop);
    assert_eq!(host.closed(), 1);
}

#[test]
fn http_ports_are_left_to_the_http_filter() {
    let host = FakeHost::default().chain("mtls").port(8080).mtls(true);
    let mut s = Setup::new(deny(Cause::NoAllowRuleMatched));
    s.http_ports = vec![8080];
    let (net, _, seen) = s.build(&host);
    let mut conn = Conn::default();
    net::new_connection(&host, &net, &mut conn);
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Continue);
    assert!(
        seen.borrow().is_empty(),
        "no L4 authorization on HTTP ports"
    );
    assert_eq!(
        host.state(names::NET_DECISION).as_deref(),
        Some("allow http-port")
    );
    assert_eq!(host.closed(), 0);
}

/// Issue 7 §3: a TCP port listed in `httpPorts` by mistake. The network stage leaves it to the
/// HTTP stage, but the traffic runs on a TCP chain (the only place meshauthz_net_enforce sits):
/// the enforce stage refuses the HTTP-port verdict, counts and logs it. Before: allowed.
#[test]
fn a_tcp_chain_on_a_port_declared_http_is_closed() {
    let host = FakeHost::default().chain("mtls").port(5432).mtls(true);
    let mut s = Setup::new(deny(Cause::NoAllowRuleMatched));
    s.http_ports = vec![5432];
    let (net, enforce, _) = s.build(&host);
    let mut conn = Conn::default();
    let mut econn = Conn::default();
    net::new_connection(&host, &net, &mut conn);
    assert_eq!(net::decide(&host, &net, &mut conn), Flow::Continue);
    assert_eq!(net::enforce(&host, &enforce, &mut econn), Flow::Stop);
    assert_eq!(host.closed(), 1);
    assert!(host
        .errors()
        .iter()
        .any(|e| e.contains("listed in httpPorts, but its traffic runs on a TCP chain")));
    enforce.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.protocol_mismatch"), 1);
    assert_eq!(host.count("meshauthz.fail_closed"), 1);
}

/// Issue 7 §3, the other direction: HTTP on a port the configuration does not declare HTTP. The
/// network stage decided the connection as TCP (and, with an enforce stage elsewhere in the VM,
/// left the closing to it, which an HTTP chain does not have). The HTTP stage applies the stricter
/// reading: a TCP deny denies the request; a TCP allow still needs the HTTP policies to allow.
#[test]
fn http_on_a_port_not_declared_http_needs_both_readings() {
    for (l4, l7, expected) in [
        ("deny no-allow-rule-matched", true, Flow::Stop),
        ("allow no-allow-policy", true, Flow::Continue),
        ("allow no-allow-policy", false, Flow::Stop),
    ] {
        let host = FakeHost::default().mtls(true).header(":path", "/");
        let decision = if l7 {
            allow(Cause::NoAllowPolicy)
        } else {
            deny(Cause::NoAllowRuleMatched)
        };
        let (decide, enforce, _) = Setup::new(decision).build(&host);
        decide.vm.net_decide.set(true);
        host.set_filter_state(names::NET_DECISION, l4.as_bytes());
        assert_eq!(request(&host, &decide, &enforce).1, expected, "{l4} {l7}");
        decide.flush_metrics(&host);
        assert_eq!(host.count("meshauthz.protocol_mismatch"), 1, "{l4} {l7}");
        assert!(host
            .errors()
            .iter()
            .any(|e| e.contains("missing from httpPorts")));
    }
    // A connection on a declared HTTP port: nothing to report.
    let host = FakeHost::default().mtls(true);
    let (decide, enforce, _) = Setup::new(allow(Cause::NoAllowPolicy)).build(&host);
    decide.vm.net_decide.set(true);
    host.set_filter_state(names::NET_DECISION, b"allow http-port");
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Continue);
    decide.flush_metrics(&host);
    assert_eq!(host.count("meshauthz.protocol_mismatch"), 0);
}

#[test]
fn workload_defaults_to_the_node_metadata_istio_sets() {
    // Envoy 1.40 answers `xds.node.metadata.*` (observed); labels come pairs-encoded.
    let doc =
        br#"{"policies": [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "echo", "namespace": "foo"},
        "spec": {"selector": {"matchLabels": {"app": "echo"}}, "mtls": {"mode": "STRICT"}}}]}"#;
    let mode_for = |labels: &[(&str, &str)]| {
        let host = FakeHost::default()
            .with(&["xds", "node", "metadata", "NAMESPACE"], b"foo")
            .with(
                &["xds", "node", "metadata", "LABELS"],
                &encode_pairs(labels),
            );
        let p = Plugin::new(Rc::new(VmState::default()));
        assert!(p.configure(&host, names::ROOT_HTTP, Some(doc)));
        assert!(host.errors().is_empty(), "{:?}", host.errors());
        p.compiled().unwrap().authz.mtls_mode_at(Some(8080)).mode
    };
    assert_eq!(
        mode_for(&[("app", "echo"), ("version", "v1")]),
        MtlsMode::Strict
    );
    assert_eq!(mode_for(&[("app", "other")]), MtlsMode::Permissive);

    // No workload in the document and none in the node metadata: refused, everything denied.
    let host = FakeHost::default().mtls(true);
    let p = Plugin::new(Rc::new(VmState::default()));
    assert!(p.configure(&host, names::ROOT_HTTP, Some(doc)));
    assert!(p.compiled().is_none());
    assert!(host.errors().iter().any(|e| e.contains("NAMESPACE")));
}

#[test]
fn a_valid_configuration_is_compiled_and_enforced_end_to_end() {
    // Real engine: the document as users write it, through configure, decide and enforce.
    let doc = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "deny-admin", "namespace": "foo"},
         "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "only-bar", "namespace": "foo"},
         "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/foo/sa/bar"]}}]}]}}],
        "workload": {"namespace": "foo"}}"#;
    let run = |san: Option<&str>, path: &str| {
        let mut host = FakeHost::default()
            .mtls(san.is_some())
            .header(":path", path);
        if let Some(san) = san {
            host = host.uri_san(san);
        }
        let vm = Rc::new(VmState::default());
        let decide = Plugin::new(Rc::clone(&vm));
        let enforce = Plugin::new(Rc::clone(&vm));
        decide.configure(&host, names::ROOT_HTTP, Some(doc));
        enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None);
        let flows = request(&host, &decide, &enforce);
        (
            flows.1,
            host.state(names::HTTP_DECISION).unwrap_or_default(),
        )
    };
    let bar = Some("spiffe://cluster.local/ns/foo/sa/bar");
    assert_eq!(
        run(bar, "/hello"),
        (
            Flow::Continue,
            "allow ns[foo]-policy[only-bar]-rule[0]".to_string()
        )
    );
    assert_eq!(
        run(bar, "/x/../admin/"),
        (
            Flow::Stop,
            "deny ns[foo]-policy[deny-admin]-rule[0]".to_string()
        )
    );
    assert_eq!(
        run(Some("spiffe://cluster.local/ns/foo/sa/other"), "/hello"),
        (Flow::Stop, "deny no-allow-rule-matched".to_string())
    );
    assert_eq!(
        run(None, "/hello"),
        (Flow::Stop, "deny no-allow-rule-matched".to_string())
    );
}

/// Protobuf `envoy.config.core.v3.Metadata` with one filter namespace holding a Struct of strings
/// and nested Structs (what Envoy returns for `get_property(["metadata"])`).
fn metadata_bytes(filter: &str, fields: &[(&str, &[(&str, &str)])]) -> Vec<u8> {
    let inner = |strings: &[(&str, &str)]| -> serde_json::Map<String, serde_json::Value> {
        strings
            .iter()
            .map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v)))
            .collect()
    };
    let outer: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(name, strings)| ((*name).to_string(), inner(strings).into()))
        .collect();
    support::proto::metadata(&serde_json::json!({ filter: outer }))
}

#[test]
fn request_principal_comes_from_verified_jwt_metadata_only() {
    let doc = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "alice-only", "namespace": "foo"},
         "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"requestPrincipals": ["https://issuer.example/alice"]}}]}]}}],
        "workload": {"namespace": "foo"}}"#;
    let run = |host: FakeHost| {
        let vm = Rc::new(VmState::default());
        let decide = Plugin::new(Rc::clone(&vm));
        let enforce = Plugin::new(Rc::clone(&vm));
        decide.configure(&host, names::ROOT_HTTP, Some(doc));
        enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None);
        request(&host, &decide, &enforce).1
    };
    let verified = |sub: &str| {
        metadata_bytes(
            "envoy.filters.http.jwt_authn",
            &[(
                "payload",
                &[("iss", "https://issuer.example"), ("sub", sub)],
            )],
        )
    };
    assert_eq!(
        run(FakeHost::default().with(&["metadata"], &verified("alice"))),
        Flow::Continue
    );
    assert_eq!(
        run(FakeHost::default().with(&["metadata"], &verified("bob"))),
        Flow::Stop
    );
    // An unverified token in a header, or a payload under another filter's name: nothing.
    assert_eq!(
        run(FakeHost::default().header(
            "authorization",
            "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwic3ViIjoiYWxpY2UifQ."
        )),
        Flow::Stop
    );
    let forged = metadata_bytes(
        "some.other.filter",
        &[(
            "payload",
            &[("iss", "https://issuer.example"), ("sub", "alice")],
        )],
    );
    assert_eq!(
        run(FakeHost::default().with(&["metadata"], &forged)),
        Flow::Stop
    );
}

#[test]
fn a_refused_update_in_a_new_root_context_keeps_the_previous_configuration() {
    // Envoy gives a changed plugin configuration a new root context in the same VM.
    let doc = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "deny-admin", "namespace": "foo"},
         "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}}],
        "workload": {"namespace": "foo"}}"#;
    let vm = Rc::new(VmState::default());
    let host = FakeHost::default().mtls(true).header(":path", "/admin");
    let old = Plugin::new(Rc::clone(&vm));
    old.configure(&host, names::ROOT_HTTP, Some(doc));
    assert!(host.errors().is_empty(), "{:?}", host.errors());

    let updated = Plugin::new(Rc::clone(&vm));
    updated.configure(
        &host,
        names::ROOT_HTTP,
        Some(br#"{"policies": [{"kind": "AuthorizationPolicy", "spec": {"action": "NOPE"}}]}"#),
    );
    assert!(host
        .errors()
        .iter()
        .any(|e| e.contains("previous valid configuration stays in force")));
    let enforce = Plugin::new(Rc::clone(&vm));
    enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None);
    assert_eq!(request(&host, &updated, &enforce).1, Flow::Stop);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("deny ns[foo]-policy[deny-admin]-rule[0]")
    );

    // Another root id does not inherit it.
    let net = Plugin::new(Rc::clone(&vm));
    net.configure(&host, names::ROOT_NET, Some(b"{}"));
    assert!(net.compiled().is_none());

    // Nor does another filter (plugin name) with the same root id.
    let other_host = FakeHost::default().with(&["plugin_name"], b"bar.other-plugin");
    let other = Plugin::new(Rc::clone(&vm));
    other.configure(&other_host, names::ROOT_HTTP, Some(b"{}"));
    assert!(other.compiled().is_none());
}

#[test]
fn a_log_companion_placed_before_the_decide_stage_is_caught() {
    // The RBAC LOG filter ran first: it saw no flag and wrote `false`, although a rule matched.
    let host = FakeHost::default().mtls(true).with(
        &[
            "metadata",
            "filter_metadata",
            "envoy.common",
            "access_log_hint",
        ],
        &[0],
    );
    let mut d = allow(Cause::NoAllowPolicy);
    d.audit_policy_applies = true;
    d.audit_rule = Some(R0);
    let (decide, enforce, _) = Setup::new(d).build(&host);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
    assert!(host
        .errors()
        .iter()
        .any(|e| e.contains("runs before meshauthz's decide stage")));
}

#[test]
fn every_value_of_a_repeated_header_is_checked() {
    // Envoy RBAC denies when any value of a repeated header matches a DENY rule (observed on
    // Envoy 1.40); the host's single-header read would only see the first value.
    let doc = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "no-debug", "namespace": "foo"},
         "spec": {"action": "DENY", "rules": [{"when": [{"key": "request.headers[x-debug]", "values": ["on"]}]}]}}],
        "workload": {"namespace": "foo"}}"#;
    let run = |values: &[&str]| {
        let mut host = FakeHost::default().mtls(true).header(":path", "/");
        for v in values {
            host = host.header("x-debug", v);
        }
        let vm = Rc::new(VmState::default());
        let decide = Plugin::new(Rc::clone(&vm));
        let enforce = Plugin::new(Rc::clone(&vm));
        decide.configure(&host, names::ROOT_HTTP, Some(doc));
        enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None);
        request(&host, &decide, &enforce).1
    };
    assert_eq!(run(&["off"]), Flow::Continue);
    assert_eq!(run(&["on"]), Flow::Stop);
    assert_eq!(run(&["off", "on"]), Flow::Stop);
    assert_eq!(run(&["on", "off"]), Flow::Stop);
    // One value that merely contains the word, as Envoy: not split on commas.
    assert_eq!(run(&["off,on"]), Flow::Continue);
}

// ---- host-call budget -----------------------------------------------------------------------

/// One ALLOW policy on principals, as users write it.
const PRINCIPAL_ALLOW: &[u8] = br#"{"policies": [
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "only-bar", "namespace": "foo"},
     "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/foo/sa/bar"]}}]}]}}],
    "workload": {"namespace": "foo"}}"#;

/// Each host call costs about 1 µs of Envoy CPU (BENCHMARKS.md), ten times the policy evaluation:
/// this is the budget of a typical allowed request, and fails when a change adds a call.
#[test]
fn host_call_budget_of_an_allowed_request() {
    let host = FakeHost::default()
        .mtls(true)
        .uri_san("spiffe://cluster.local/ns/foo/sa/bar")
        .header(":path", "/hello");
    let vm = Rc::new(VmState::default());
    let decide = Plugin::new(Rc::clone(&vm));
    let enforce = Plugin::new(Rc::clone(&vm));
    decide.configure(&host, names::ROOT_HTTP, Some(PRINCIPAL_ALLOW));
    enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None);
    host.take_calls();

    assert_eq!(http::decide(&host, &decide), Flow::Continue);
    assert_eq!(
        host.take_calls(),
        [
            "get connection.mtls",
            "get filter_state.meshauthz.peer_sans",
            "set meshauthz_decision",
        ]
    );
    // No AUDIT flag was ever published by this VM's decide stage: the enforce stage reads the
    // decision only.
    assert_eq!(http::enforce(&host, &enforce), Flow::Continue);
    assert_eq!(
        host.take_calls(),
        ["get filter_state.wasm.meshauthz_decision"]
    );
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("allow ns[foo]-policy[only-bar]-rule[0]")
    );

    // The counts reach the host once per tick, one call per counter that changed.
    for _ in 0..9 {
        http::decide(&host, &decide);
        http::enforce(&host, &enforce);
    }
    host.take_calls();
    decide.flush_metrics(&host);
    enforce.flush_metrics(&host);
    assert_eq!(host.take_calls(), ["metric meshauthz.rbac.allowed"]);
    assert_eq!(host.count("meshauthz.rbac.allowed"), 10);
    decide.flush_metrics(&host);
    assert_eq!(
        host.take_calls(),
        Vec::<String>::new(),
        "nothing new to flush"
    );
}

/// The full chain with an AUDIT policy, the decide and enforce stages configured in one VM (as
/// the templates do). Once the decide stage has published an audit flag, the enforce stage reads
/// `access_log_hint` first: an audited request costs it two reads (decision, hint), a request
/// the AUDIT rules did not match three (the hint is `false`, so the flag tells whether the
/// companion should have matched). The trail is still checked: a missing companion, or one that
/// did not see a matched flag, denies.
#[test]
fn host_call_budget_of_the_enforce_stage_with_audit_policies() {
    const HINT: [&str; 4] = [
        "metadata",
        "filter_metadata",
        "envoy.common",
        "access_log_hint",
    ];
    let doc = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "audit-bar", "namespace": "foo"},
         "spec": {"action": "AUDIT", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/foo/sa/bar"]}}]}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "allow-foo", "namespace": "foo"},
         "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": ["foo"]}}]}]}}],
        "workload": {"namespace": "foo"}}"#;
    let chain = |peer: &str, hint: Option<u8>| {
        let mut host = FakeHost::default().mtls(true).uri_san(peer);
        if let Some(h) = hint {
            host = host.with(&HINT, &[h]);
        }
        let vm = Rc::new(VmState::default());
        let decide = Plugin::new(Rc::clone(&vm));
        let enforce = Plugin::new(Rc::clone(&vm));
        decide.configure(&host, names::ROOT_HTTP, Some(doc));
        enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None);
        host.take_calls();
        (host, decide, enforce)
    };
    let bar = "spiffe://cluster.local/ns/foo/sa/bar";
    let baz = "spiffe://cluster.local/ns/foo/sa/baz";

    // Audited, companion ran: decision and hint.
    let (host, decide, enforce) = chain(bar, Some(1));
    assert_eq!(http::decide(&host, &decide), Flow::Continue);
    assert_eq!(host.state(names::HTTP_AUDIT).as_deref(), Some("1"));
    host.take_calls();
    assert_eq!(http::enforce(&host, &enforce), Flow::Continue);
    assert_eq!(
        host.take_calls(),
        [
            "get filter_state.wasm.meshauthz_decision",
            "get metadata.filter_metadata.envoy.common.access_log_hint",
        ]
    );

    // AUDIT applies, not matched (hint false): the flag is read too.
    let (host, decide, enforce) = chain(baz, Some(0));
    assert_eq!(http::decide(&host, &decide), Flow::Continue);
    assert_eq!(host.state(names::HTTP_AUDIT).as_deref(), Some("0"));
    host.take_calls();
    assert_eq!(http::enforce(&host, &enforce), Flow::Continue);
    assert_eq!(
        host.take_calls(),
        [
            "get filter_state.wasm.meshauthz_decision",
            "get metadata.filter_metadata.envoy.common.access_log_hint",
            "get filter_state.wasm.meshauthz_audit",
        ]
    );

    // The companion is missing: denied, whatever was audited.
    for peer in [bar, baz] {
        let (host, decide, enforce) = chain(peer, None);
        assert_eq!(http::decide(&host, &decide), Flow::Continue);
        assert_eq!(http::enforce(&host, &enforce), Flow::Stop, "{peer}");
        assert!(
            host.errors()
                .iter()
                .any(|e| e.contains("access_log_hint is absent")),
            "{:?}",
            host.errors()
        );
    }
    // The companion ran before the decide stage (did not see the matched flag): denied; for a
    // request no AUDIT rule matched, `false` is right: allowed.
    let (host, decide, enforce) = chain(bar, Some(0));
    assert_eq!(http::decide(&host, &decide), Flow::Continue);
    assert_eq!(http::enforce(&host, &enforce), Flow::Stop);
    assert!(host
        .errors()
        .iter()
        .any(|e| e.contains("access_log_hint is false")));
}

/// Without AUDIT policies the enforce stage reads only the decision (its VM's decide stage never
/// published an audit flag); an enforce stage in a VM without a decide stage cannot know that,
/// and reads the flag (absent: allowed).
#[test]
fn enforce_stage_reads_the_audit_flag_only_where_it_can_be_set() {
    let host = FakeHost::default()
        .mtls(true)
        .uri_san("spiffe://cluster.local/ns/foo/sa/bar");
    let vm = Rc::new(VmState::default());
    let decide = Plugin::new(Rc::clone(&vm));
    let enforce = Plugin::new(Rc::clone(&vm));
    decide.configure(&host, names::ROOT_HTTP, Some(PRINCIPAL_ALLOW));
    enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None);
    assert_eq!(http::decide(&host, &decide), Flow::Continue);
    host.take_calls();
    assert_eq!(http::enforce(&host, &enforce), Flow::Continue);
    assert_eq!(
        host.take_calls(),
        ["get filter_state.wasm.meshauthz_decision"]
    );

    // The decision came from a decide stage in another VM (this one has none).
    let other_vm = Plugin::new(Rc::new(VmState::default()));
    other_vm.configure(&host, names::ROOT_HTTP_ENFORCE, None);
    host.take_calls();
    assert_eq!(http::enforce(&host, &other_vm), Flow::Continue);
    assert_eq!(
        host.take_calls(),
        [
            "get filter_state.wasm.meshauthz_decision",
            "get filter_state.wasm.meshauthz_audit",
        ]
    );
    // ... and with an audit flag there and no companion, it denies.
    host.set_filter_state("meshauthz_audit", b"1");
    assert_eq!(http::enforce(&host, &other_vm), Flow::Stop);
}

/// With `"enforce": "decide"` (no AUDIT policy) the whole HTTP chain is one Wasm filter: the
/// request costs the decide stage's calls and nothing else (no enforce stage, no RBAC LOG filter).
#[test]
fn host_call_budget_of_the_decide_stage_alone() {
    let doc = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "only-bar", "namespace": "foo"},
         "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/foo/sa/bar"]}}]}]}}],
        "workload": {"namespace": "foo"}, "enforce": "decide"}"#;
    let host = FakeHost::default()
        .mtls(true)
        .uri_san("spiffe://cluster.local/ns/foo/sa/bar")
        .header(":path", "/hello");
    let vm = Rc::new(VmState::default());
    let decide = Plugin::new(Rc::clone(&vm));
    decide.configure(&host, names::ROOT_HTTP, Some(doc));
    host.take_calls();
    assert_eq!(http::decide(&host, &decide), Flow::Continue);
    assert_eq!(
        host.take_calls(),
        [
            "get connection.mtls",
            "get filter_state.meshauthz.peer_sans",
            "set meshauthz_decision",
        ]
    );
    // A denied request: answered here, one more call (the local reply).
    let host = FakeHost::default()
        .mtls(true)
        .uri_san("spiffe://cluster.local/ns/foo/sa/other")
        .header(":path", "/hello");
    host.take_calls();
    assert_eq!(http::decide(&host, &decide), Flow::Stop);
    assert_eq!(
        host.take_calls(),
        [
            "get connection.mtls",
            "get filter_state.meshauthz.peer_sans",
            "set meshauthz_decision",
            "forbid",
        ]
    );
}

/// With `"enforce": "native"` the HTTP chain is one Wasm filter with AUDIT policies too: the decide
/// stage publishes the decision and the audit flag, Envoy's RBAC filters (LOG, then DENY) do the
/// rest; a denial no AUDIT policy concerns is answered here.
#[test]
fn host_call_budget_of_the_native_chain() {
    let doc = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "only-bar", "namespace": "foo"},
         "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/foo/sa/bar"]}}]}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "audit-api", "namespace": "foo"},
         "spec": {"action": "AUDIT", "rules": [{"to": [{"operation": {"paths": ["/api/*"]}}]}]}}],
        "workload": {"namespace": "foo"}, "enforce": "native"}"#;
    let vm = Rc::new(VmState::default());
    let decide = Plugin::new(Rc::clone(&vm));
    let setup = FakeHost::default();
    decide.configure(&setup, names::ROOT_HTTP, Some(doc));
    for (principal, path, flow, calls) in [
        // Allowed and audited: decision and flag published, nothing else.
        ("bar", "/api/x", Flow::Continue, CALLS_NATIVE),
        // Denied and audited: left to the native filter (after the companion).
        ("other", "/api/x", Flow::Continue, CALLS_NATIVE),
    ] {
        let host = FakeHost::default()
            .mtls(true)
            .uri_san(&format!("spiffe://cluster.local/ns/foo/sa/{principal}"))
            .header(":path", path);
        assert_eq!(http::decide(&host, &decide), flow, "{principal} {path}");
        assert_eq!(host.take_calls(), calls, "{principal} {path}");
        assert_eq!(host.forbidden(), 0);
    }
}

const CALLS_NATIVE: &[&str] = &[
    "get filter_state.meshauthz.request",
    "get connection.mtls",
    "get filter_state.meshauthz.peer_sans",
    "header :path",
    "set meshauthz_decision",
    "set meshauthz_audit",
];

// ---- connection facts recorded by meshauthz_net -----------------------------------------------

/// [`PRINCIPAL_ALLOW`] for the network stage: port 8080 is HTTP.
const PRINCIPAL_ALLOW_NET: &[u8] = br#"{"policies": [
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "only-bar", "namespace": "foo"},
     "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/foo/sa/bar"]}}]}]}}],
    "workload": {"namespace": "foo"}, "httpPorts": [8080]}"#;

/// `"enforce": "connection"`: the network stage decides the HTTP connection once and publishes
/// the verdict under its own key (the connection stays open on a deny: Envoy's RBAC filter
/// answers each request), reading the peer's identity once for the verdict and the record.
#[test]
fn connection_mode_publishes_one_verdict_per_connection_from_one_identity_read() {
    let doc = std::str::from_utf8(PRINCIPAL_ALLOW_NET)
        .unwrap()
        .replace(r#""httpPorts""#, r#""enforce": "connection", "httpPorts""#);
    for (san, allowed) in [
        (BAR, true),
        ("spiffe://cluster.local/ns/foo/sa/other", false),
    ] {
        let host = conn_host(7, Some(san));
        let net = Plugin::new(Rc::new(VmState::default()));
        net.configure(&host, names::ROOT_NET, Some(doc.as_bytes()));
        let mut conn = Conn::default();
        assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Continue);
        host.take_calls();
        assert_eq!(net::decide(&host, &net, &mut conn), Flow::Continue);
        let calls = host.take_calls();
        assert_eq!(
            calls
                .iter()
                .filter(|c| *c == "get filter_state.meshauthz.peer_sans")
                .count(),
            1,
            "{calls:?}"
        );
        assert!(
            !calls.iter().any(|c| c == "get source.address"),
            "the socket peer was read in on_new_connection: {calls:?}"
        );
        let verdict = host.state("meshauthz_conn_decision").unwrap();
        assert_eq!(verdict.starts_with("allow"), allowed, "{verdict}");
        assert_eq!(host.closed(), 0);
        assert_eq!(host.state("meshauthz_decision"), None);
    }
    // Without "connection" the key is never written: the connection template then denies.
    let host = conn_host(8, Some(BAR));
    let (net, _, _) = net_chain(&host);
    open(&net, &host);
    assert_eq!(host.state("meshauthz_conn_decision"), None);
}

/// `meshauthz_net`, `meshauthz_http` and `meshauthz_http_enforce` in one VM.
fn net_chain(host: &FakeHost) -> (Plugin, Plugin, Plugin) {
    let vm = Rc::new(VmState::default());
    let net = Plugin::new(Rc::clone(&vm));
    let decide = Plugin::new(Rc::clone(&vm));
    let enforce = Plugin::new(Rc::clone(&vm));
    net.configure(host, names::ROOT_NET, Some(PRINCIPAL_ALLOW_NET));
    decide.configure(host, names::ROOT_HTTP, Some(PRINCIPAL_ALLOW));
    enforce.configure(host, names::ROOT_HTTP_ENFORCE, None);
    (net, decide, enforce)
}

/// The host as the network stage of connection `id` sees it on port 8080.
fn conn_host(id: u64, san: Option<&str>) -> FakeHost {
    let host = FakeHost::default()
        .chain("mtls")
        .port(8080)
        .mtls(san.is_some())
        .with(&["source", "address"], b"10.1.2.3:40000")
        .with(&["connection_id"], &id.to_le_bytes());
    match san {
        Some(san) => host.uri_san(san),
        None => host,
    }
}

/// Opens connection `id` through the network stage; returns its per-connection state.
fn open(net: &Plugin, host: &FakeHost) -> Conn {
    let mut conn = Conn::default();
    assert_eq!(net::new_connection(host, net, &mut conn), Flow::Continue);
    assert_eq!(net::decide(host, net, &mut conn), Flow::Continue);
    conn
}

/// A request whose host knows only the connection id (and `extra` facts): whatever else the
/// decision uses must come from the record.
fn request_on(id: u64) -> FakeHost {
    FakeHost::default()
        .with(&["connection_id"], &id.to_le_bytes())
        .header(":path", "/hello")
}

const BAR: &str = "spiffe://cluster.local/ns/foo/sa/bar";

#[test]
fn recorded_connection_facts_replace_the_per_request_reads() {
    let setup = FakeHost::default();
    let (net, decide, enforce) = net_chain(&setup);
    let _conn = open(&net, &conn_host(7, Some(BAR)));

    let host = request_on(7);
    assert_eq!(http::decide(&host, &decide), Flow::Continue);
    // One host call for all the connection's facts (and, without the request companion on
    // this chain, one that finds nothing).
    assert_eq!(
        host.take_calls(),
        [
            "get filter_state.meshauthz.request",
            "get connection_id",
            "set meshauthz_decision"
        ]
    );
    assert_eq!(http::enforce(&host, &enforce), Flow::Continue);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("allow ns[foo]-policy[only-bar]-rule[0]")
    );
}

#[test]
fn another_connections_facts_are_never_used() {
    let setup = FakeHost::default();
    let (net, decide, enforce) = net_chain(&setup);
    let _bar = open(&net, &conn_host(7, Some(BAR)));

    // Connection 8 is plaintext by the host's word; connection 7's identity must not leak into it.
    let host = request_on(8).mtls(false);
    let (_, e) = request(&host, &decide, &enforce);
    assert_eq!(e, Flow::Stop);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("deny no-allow-rule-matched")
    );
    assert!(host.fetched().contains(&"connection.mtls".to_string()));

    // Connection 9 says nothing about mTLS at all (no record, no property): not mTLS.
    let host = request_on(9).uri_san(BAR);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
    assert!(
        !host
            .fetched()
            .iter()
            .any(|f| f.contains("uri_san") || f.contains("peer_sans")),
        "no identity read without mTLS: {:?}",
        host.fetched()
    );
}

#[test]
fn without_a_record_the_host_is_asked_as_before() {
    let setup = FakeHost::default();
    let (net, decide, enforce) = net_chain(&setup);
    let _other = open(
        &net,
        &conn_host(7, Some("spiffe://cluster.local/ns/foo/sa/other")),
    );

    // No connection id from the host: the facts are read per request.
    let host = FakeHost::default()
        .mtls(true)
        .uri_san(BAR)
        .header(":path", "/hello");
    assert_eq!(
        request(&host, &decide, &enforce),
        (Flow::Continue, Flow::Continue)
    );
    assert_eq!(
        host.take_calls()[..5],
        [
            "get filter_state.meshauthz.request",
            "get connection_id",
            "get connection.mtls",
            // Whether meshauthz_net decided this connection as TCP (issue 7 §3).
            "get filter_state.wasm.meshauthz_net_decision",
            "get filter_state.meshauthz.peer_sans",
        ]
    );

    // A plaintext connection is recorded as such: its identity is never read, even where the
    // host would report one.
    let plain = conn_host(10, None).uri_san(BAR);
    let _plain = open(&net, &plain);
    assert!(!plain
        .fetched()
        .iter()
        .any(|f| f.contains("uri_san") || f.contains("peer_sans")));
    let host = request_on(10);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
    assert_eq!(host.take_calls()[1], "get connection_id");
    assert!(!host.fetched().contains(&"connection.mtls".to_string()));
}

#[test]
fn a_closed_connection_is_forgotten() {
    let setup = FakeHost::default();
    let (net, decide, enforce) = net_chain(&setup);
    let mut conn = open(&net, &conn_host(7, Some(BAR)));
    let mut tcp = Conn::default();
    // TCP ports are decided at L4: nothing recorded for them.
    let tcp_host = conn_host(11, Some(BAR)).port(5432);
    net::new_connection(&tcp_host, &net, &mut tcp);
    net::decide(&tcp_host, &net, &mut tcp);
    assert_eq!(decide.vm.open_conns(), 1);

    net::done(&net, &mut conn);
    net::done(&net, &mut tcp);
    assert_eq!(decide.vm.open_conns(), 0);

    // A late request on that id finds nothing and asks the host (here: no mTLS).
    let host = request_on(7);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
    assert!(host.fetched().contains(&"connection.mtls".to_string()));
}

#[test]
fn pseudo_headers_come_from_the_header_list_when_it_is_read_anyway() {
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req.method = true;
    s.req.path = true;
    s.req.host = true;
    s.req.add_header("x-team");
    let host = FakeHost::default()
        .mtls(true)
        .header(":authority", "echo.foo")
        .header(":method", "POST")
        .header(":path", "/admin")
        .header("x-team", "a")
        .header("x-team", "b");
    let (decide, _, seen) = s.build(&host);
    host.take_calls();
    http::decide(&host, &decide);
    assert_eq!(
        host.take_calls(),
        [
            "get filter_state.meshauthz.request",
            "get connection.mtls",
            "headers",
            "set meshauthz_decision"
        ]
    );
    let seen = seen.borrow();
    assert_eq!(seen[0].method.as_deref(), Some("POST"));
    assert_eq!(seen[0].path.as_deref(), Some("/admin"));
    assert_eq!(seen[0].headers.len(), 2);

    // A pseudo-header the list does not hold is still read by itself, never taken as absent.
    let mut s = Setup::new(allow(Cause::NoAllowPolicy));
    s.req.path = true;
    s.req.add_header("x-team");
    let host = FakeHost::default().mtls(true).header("x-team", "a");
    let (decide, _, _) = s.build(&host);
    host.take_calls();
    http::decide(&host, &decide);
    assert_eq!(
        host.take_calls(),
        [
            "get filter_state.meshauthz.request",
            "get connection.mtls",
            "headers",
            "header :path",
            "set meshauthz_decision"
        ]
    );
}

#[test]
fn a_configuration_update_relabels_the_same_rule_ids() {
    // Both documents compile to the same rule ids (one ALLOW and one dry-run DENY policy, one
    // rule each): only the names differ. The label cache must not show the first one's names.
    let doc = |allow: &str, dry: &str| {
        format!(
            r#"{{"policies": [
            {{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
             "metadata": {{"name": "{allow}", "namespace": "foo"}},
             "spec": {{"action": "ALLOW", "rules": [{{}}]}}}},
            {{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
             "metadata": {{"name": "{dry}", "namespace": "foo",
                          "annotations": {{"istio.io/dry-run": "true"}}}},
             "spec": {{"action": "DENY", "rules": [{{}}]}}}}],
            "workload": {{"namespace": "foo"}}}}"#
        )
    };
    let vm = Rc::new(VmState::default());
    let decide = Plugin::new(Rc::clone(&vm));
    let enforce = Plugin::new(Rc::clone(&vm));
    assert!(enforce.configure(&FakeHost::default(), names::ROOT_HTTP_ENFORCE, None));
    let labels = |decide: &Plugin| {
        let host = FakeHost::default().mtls(true).header(":path", "/");
        assert_eq!(
            request(&host, decide, &enforce),
            (Flow::Continue, Flow::Continue)
        );
        (
            host.state(names::HTTP_DECISION).unwrap(),
            host.state(names::HTTP_SHADOW).unwrap(),
        )
    };
    let host = FakeHost::default();
    assert!(decide.configure(
        &host,
        names::ROOT_HTTP,
        Some(doc("first", "dry-a").as_bytes())
    ));
    assert!(host.errors().is_empty(), "{:?}", host.errors());
    let first = (
        "allow ns[foo]-policy[first]-rule[0]".to_string(),
        "dry-run-deny=denied(ns[foo]-policy[dry-a]-rule[0])".to_string(),
    );
    assert_eq!(labels(&decide), first);
    assert_eq!(labels(&decide), first, "a cached label reads the same");

    assert!(decide.configure(
        &host,
        names::ROOT_HTTP,
        Some(doc("second", "dry-b").as_bytes())
    ));
    assert!(host.errors().is_empty(), "{:?}", host.errors());
    assert_eq!(
        labels(&decide),
        (
            "allow ns[foo]-policy[second]-rule[0]".to_string(),
            "dry-run-deny=denied(ns[foo]-policy[dry-b]-rule[0])".to_string(),
        )
    );
}

// ---- issue 7 §2: certificates the module cannot fully see ------------------------------------

/// A DENY on `default/blocked` for every port (HTTP 8080 declared), the workload `foo`.
const DENY_BLOCKED: &[u8] = br#"{"policies": [
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "deny-blocked", "namespace": "foo"},
     "spec": {"action": "DENY", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/blocked"]}}]}]}}],
    "workload": {"namespace": "foo"}, "httpPorts": [8080]}"#;

const ADMIN: &str = "spiffe://cluster.local/ns/foo/sa/admin";
const BLOCKED: &str = "spiffe://cluster.local/ns/default/sa/blocked";

/// Envoy RBAC matches a principal against every SAN; the module sees one identity. A certificate
/// with `[admin, blocked]` passed the DENY on `blocked` before (first URI SAN only): now it is
/// refused, HTTP (with and without recorded facts) and TCP, in both orders, and logged once per
/// connection. A one-SAN certificate is still decided by the policies.
#[test]
fn a_certificate_with_several_sans_is_refused_where_principals_matter() {
    for sans in [
        format!("{ADMIN},{BLOCKED} "),
        format!("{BLOCKED},{ADMIN} "),
        format!("{ADMIN} blocked.default.svc"),
    ] {
        // HTTP, facts read per request (no network stage).
        let host = FakeHost::default().mtls(true).sans(&sans);
        let vm = Rc::new(VmState::default());
        let decide = Plugin::new(Rc::clone(&vm));
        let enforce = Plugin::new(Rc::clone(&vm));
        decide.configure(&host, names::ROOT_HTTP, Some(DENY_BLOCKED));
        enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None);
        assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop, "{sans}");
        assert_eq!(
            host.state(names::HTTP_DECISION).as_deref(),
            Some("deny peer-certificate-unseen")
        );
        assert!(host
            .errors()
            .iter()
            .any(|e| e.contains("more than one SAN")));
        decide.flush_metrics(&host);
        assert_eq!(host.count("meshauthz.fail_closed"), 1);

        // HTTP with facts recorded by meshauthz_net: logged once for the connection, each
        // request denied.
        let vm = Rc::new(VmState::default());
        let net = Plugin::new(Rc::clone(&vm));
        let decide = Plugin::new(Rc::clone(&vm));
        let enforce = Plugin::new(Rc::clone(&vm));
        let setup = FakeHost::default();
        net.configure(&setup, names::ROOT_NET, Some(DENY_BLOCKED));
        decide.configure(&setup, names::ROOT_HTTP, Some(DENY_BLOCKED));
        enforce.configure(&setup, names::ROOT_HTTP_ENFORCE, None);
        let conn = conn_host(3, None).mtls(true).sans(&sans);
        let _c = open(&net, &conn);
        assert_eq!(conn.errors().len(), 1, "{:?}", conn.errors());
        for _ in 0..3 {
            let host = request_on(3);
            assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
            assert!(host.errors().is_empty(), "logged once per connection");
        }

        // TCP: the connection is closed.
        let host = FakeHost::default()
            .chain("mtls")
            .port(5432)
            .mtls(true)
            .sans(&sans);
        let vm = Rc::new(VmState::default());
        let net = Plugin::new(Rc::clone(&vm));
        net.configure(&host, names::ROOT_NET, Some(DENY_BLOCKED));
        let mut conn = Conn::default();
        assert_eq!(net::new_connection(&host, &net, &mut conn), Flow::Continue);
        assert_eq!(net::decide(&host, &net, &mut conn), Flow::Stop);
        assert_eq!(
            host.state(names::NET_DECISION).as_deref(),
            Some("deny peer-certificate-unseen")
        );
        assert_eq!(host.closed(), 1);
    }

    // One SAN: the policies decide (blocked is denied, admin allowed).
    for (san, expected) in [(ADMIN, Flow::Continue), (BLOCKED, Flow::Stop)] {
        let host = FakeHost::default().mtls(true).uri_san(san);
        let vm = Rc::new(VmState::default());
        let decide = Plugin::new(Rc::clone(&vm));
        let enforce = Plugin::new(Rc::clone(&vm));
        decide.configure(&host, names::ROOT_HTTP, Some(DENY_BLOCKED));
        enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None);
        assert_eq!(request(&host, &decide, &enforce).1, expected, "{san}");
    }
}

/// Without the `set_filter_state` companion the module cannot tell a one-SAN certificate from a
/// two-SAN one: refused where a policy reads the principal, with the fix in the log. Policies
/// that read no principal do not need it.
#[test]
fn without_the_san_companion_principal_policies_fail_closed() {
    let host = FakeHost::default().mtls(true).with(
        &["connection", "uri_san_peer_certificate"],
        ADMIN.as_bytes(),
    );
    let vm = Rc::new(VmState::default());
    let decide = Plugin::new(Rc::clone(&vm));
    let enforce = Plugin::new(Rc::clone(&vm));
    decide.configure(&host, names::ROOT_HTTP, Some(DENY_BLOCKED));
    enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
    assert!(host
        .errors()
        .iter()
        .any(|e| e.contains("envoy.filters.network.set_filter_state")));

    let host = FakeHost::default().mtls(true).with(
        &["connection", "uri_san_peer_certificate"],
        ADMIN.as_bytes(),
    );
    let vm = Rc::new(VmState::default());
    let decide = Plugin::new(Rc::clone(&vm));
    let enforce = Plugin::new(Rc::clone(&vm));
    decide.configure(
        &host,
        names::ROOT_HTTP,
        Some(br#"{"policies": [], "workload": {"namespace": "foo"}}"#),
    );
    enforce.configure(&host, names::ROOT_HTTP_ENFORCE, None);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Continue);
}

/// The stages of one VM get the same plugin configuration: the first compiles it, the others
/// share that result (a listener with HTTP and TCP chains compiled it three times per VM), and
/// a different configuration is compiled on its own.
#[test]
fn one_configuration_is_compiled_once_per_vm_and_shared_by_its_stages() {
    let allow_bar = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "allow-bar", "namespace": "foo"},
         "spec": {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/foo/sa/bar"]}}]}]}}],
        "workload": {"namespace": "foo"}}"#;
    let host = FakeHost::default().mtls(true);
    let vm = Rc::new(VmState::default());
    let http = Plugin::new(Rc::clone(&vm));
    let net = Plugin::new(Rc::clone(&vm));
    let other_chain = Plugin::new(Rc::clone(&vm));
    assert!(http.configure(&host, names::ROOT_HTTP, Some(allow_bar)));
    assert!(net.configure(&host, names::ROOT_NET, Some(allow_bar)));
    assert!(other_chain.configure(&host, names::ROOT_HTTP, Some(allow_bar)));
    let (Some(a), Some(b), Some(c)) = (http.compiled(), net.compiled(), other_chain.compiled())
    else {
        panic!("every stage has a configuration: {:?}", host.errors());
    };
    assert!(
        Rc::ptr_eq(&a, &b) && Rc::ptr_eq(&a, &c),
        "one compiled configuration"
    );
    let infos = host.infos();
    assert_eq!(
        infos
            .iter()
            .filter(|m| m.contains("compiled once in this VM, shared"))
            .count(),
        2,
        "{infos:?}"
    );

    // Another configuration (one byte more) is compiled for itself; the others keep theirs.
    let mut deny_all = allow_bar.to_vec();
    deny_all.push(b' ');
    assert!(other_chain.configure(&host, names::ROOT_HTTP, Some(&deny_all)));
    let Some(d) = other_chain.compiled() else {
        panic!("configured: {:?}", host.errors());
    };
    assert!(!Rc::ptr_eq(&a, &d));
    assert!(http.compiled().is_some_and(|x| Rc::ptr_eq(&x, &a)));

    // A refused configuration shares nothing and leaves the last good one in force.
    assert!(net.configure(
        &host,
        names::ROOT_NET,
        Some(br#"{"policies": [], "bogus": 1}"#)
    ));
    assert!(net.compiled().is_some_and(|x| Rc::ptr_eq(&x, &a)));
}

/// [`PRINCIPAL_ALLOW_NET`] with another principal and, optionally, `"enforce": "connection"`.
fn principal_net_doc(principal: &str, connection: bool, http: bool) -> String {
    let doc = std::str::from_utf8(PRINCIPAL_ALLOW_NET)
        .unwrap()
        .replace("cluster.local/ns/foo/sa/bar", principal);
    let doc = if connection {
        doc.replace(r#""httpPorts""#, r#""enforce": "connection", "httpPorts""#)
    } else {
        doc
    };
    if http {
        doc
    } else {
        doc.replace(r#""httpPorts": [8080]"#, r#""httpPorts": []"#)
    }
}

/// An update in place (Envoy keeps the old root for its open connections, e.g. ECDS): the old
/// root's connections are decided again under the new configuration at their next read, and a
/// read with no update in between costs no host call.
#[test]
fn an_update_in_place_decides_the_open_connections_again() {
    for (connection, http) in [(true, true), (false, false)] {
        let vm = Rc::new(VmState::default());
        let old = Plugin::new(Rc::clone(&vm));
        let host = conn_host(7, Some(BAR));
        let doc = principal_net_doc("cluster.local/ns/foo/sa/bar", connection, http);
        old.configure(&host, names::ROOT_NET, Some(doc.as_bytes()));
        let mut conn = open(&old, &host);
        let key = if http {
            "meshauthz_conn_decision"
        } else {
            "meshauthz_net_decision"
        };
        assert!(host.state(key).unwrap().starts_with("allow"));
        host.take_calls();
        assert_eq!(net::decide(&host, &old, &mut conn), Flow::Continue);
        assert_eq!(host.take_calls(), Vec::<String>::new(), "a later read");

        // The same policies again (another root, same bytes): nothing to decide again.
        let same = Plugin::new(Rc::clone(&vm));
        same.configure(&host, names::ROOT_NET, Some(doc.as_bytes()));
        host.take_calls();
        assert_eq!(net::decide(&host, &old, &mut conn), Flow::Continue);
        assert_eq!(host.take_calls(), Vec::<String>::new());

        // bar's access revoked.
        let new = Plugin::new(Rc::clone(&vm));
        let revoked = principal_net_doc("cluster.local/ns/foo/sa/baz", connection, http);
        new.configure(&host, names::ROOT_NET, Some(revoked.as_bytes()));
        let flow = net::decide(&host, &old, &mut conn);
        let verdict = host.state(key).unwrap();
        assert!(
            verdict.starts_with("deny"),
            "{connection} {http}: {verdict}"
        );
        if http {
            // Envoy's RBAC filter answers the connection's next requests with 403.
            assert_eq!((flow, host.closed()), (Flow::Continue, 0));
        } else {
            assert_eq!((flow, host.closed()), (Flow::Stop, 1));
        }
        assert!(host
            .infos()
            .iter()
            .any(|l| l.contains("configuration updated in place")));
    }
}

/// The network stage records no identity when its policies read none; an HTTP stage whose
/// (newer) configuration reads one asks the host instead of taking "no identity" for an answer:
/// a caller excluded by `notPrincipals` is not allowed as if it had none.
#[test]
fn an_identity_the_network_stage_did_not_read_is_read_by_the_http_stage() {
    let vm = Rc::new(VmState::default());
    let net = Plugin::new(Rc::clone(&vm));
    let decide = Plugin::new(Rc::clone(&vm));
    let enforce = Plugin::new(Rc::clone(&vm));
    let setup = FakeHost::default();
    let paths_only = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "paths", "namespace": "foo"},
         "spec": {"action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/hello"]}}]}]}}],
        "workload": {"namespace": "foo"}, "httpPorts": [8080]}"#;
    let not_bar = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "not-bar", "namespace": "foo"},
         "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"notPrincipals": ["cluster.local/ns/foo/sa/bar"]}}]}]}}],
        "workload": {"namespace": "foo"}, "httpPorts": [8080]}"#;
    net.configure(&setup, names::ROOT_NET, Some(paths_only));
    decide.configure(&setup, names::ROOT_HTTP, Some(not_bar));
    enforce.configure(&setup, names::ROOT_HTTP_ENFORCE, None);
    let conn_host = conn_host(7, Some(BAR));
    let _conn = open(&net, &conn_host);
    assert!(!conn_host.fetched().iter().any(|f| f.contains("peer_sans")));

    let host = request_on(7).uri_san(BAR);
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Stop);
    assert_eq!(
        host.state(names::HTTP_DECISION).as_deref(),
        Some("deny no-allow-rule-matched")
    );
    let host = request_on(7).uri_san("spiffe://cluster.local/ns/foo/sa/other");
    assert_eq!(request(&host, &decide, &enforce).1, Flow::Continue);
}

/// Updated in place from the connection shape to a configuration that decides per request (a
/// policy now reads the path): the connection's verdict is withdrawn, not left allowing what the
/// new policies decide per request.
#[test]
fn a_connection_verdict_is_withdrawn_when_the_update_decides_per_request() {
    let vm = Rc::new(VmState::default());
    let old = Plugin::new(Rc::clone(&vm));
    let host = conn_host(7, Some(BAR));
    let doc = principal_net_doc("cluster.local/ns/foo/sa/bar", true, true);
    old.configure(&host, names::ROOT_NET, Some(doc.as_bytes()));
    let mut conn = open(&old, &host);
    assert!(host
        .state("meshauthz_conn_decision")
        .unwrap()
        .starts_with("allow"));
    let per_request = br#"{"policies": [
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "bar-hello", "namespace": "foo"},
         "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/foo/sa/bar"]}}],
                                                "to": [{"operation": {"paths": ["/hello"]}}]}]}}],
        "workload": {"namespace": "foo"}, "httpPorts": [8080], "enforce": "decide"}"#;
    let new = Plugin::new(Rc::clone(&vm));
    new.configure(&host, names::ROOT_NET, Some(per_request));
    assert_eq!(net::decide(&host, &old, &mut conn), Flow::Continue);
    assert_eq!(
        host.state("meshauthz_conn_decision").as_deref(),
        Some("deny connection-verdict-withdrawn")
    );
    assert_eq!(
        host.closed(),
        0,
        "the HTTP connection stays: its requests get 403"
    );
}

/// With Envoy's `set_filter_state` companion before the decide stage (the shipped chains), the
/// connection id and the pseudo-headers come in one host call: a request on a recorded
/// connection costs one read and the decision's write, and the values decide as read one by one.
#[test]
fn the_request_companion_replaces_three_reads_by_one() {
    let setup = FakeHost::default();
    let (net, decide, enforce) = net_chain(&setup);
    let _conn = open(&net, &conn_host(7, Some(BAR)));
    let facts = |path: &str| format!("7\nGET\necho.foo\n{path}");
    let host = FakeHost::default().with(
        &["filter_state", "meshauthz.request"],
        facts("/hello").as_bytes(),
    );
    assert_eq!(
        request(&host, &decide, &enforce),
        (Flow::Continue, Flow::Continue)
    );
    assert_eq!(
        host.take_calls()[..2],
        [
            "get filter_state.meshauthz.request",
            "set meshauthz_decision"
        ]
    );
    // A value in another shape is not trusted: each fact is read from the host.
    let host = request_on(7).with(&["filter_state", "meshauthz.request"], b"7\n/hello\nGET");
    assert_eq!(
        request(&host, &decide, &enforce),
        (Flow::Continue, Flow::Continue)
    );
    assert!(host.take_calls().contains(&"get connection_id".to_string()));
}

/// The shipped templates place the request companion right before `meshauthz_http`, with the
/// format the decide stage parses (`render` writes it from the same constant).
#[test]
fn the_templates_write_the_request_facts_the_module_reads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../envoy-config/envoy");
    let escaped = names::REQUEST_FACTS_FORMAT.replace('\n', "\\n");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let Some(stage) = text.find("name: meshauthz_http\n") else {
            continue;
        };
        let companion = text
            .find(&format!("object_key: {}", names::REQUEST_FACTS))
            .unwrap_or_else(|| panic!("{}: no request companion", path.display()));
        assert!(companion < stage, "{}: after the stage", path.display());
        let between = &text[companion..stage];
        assert!(between.contains(&escaped), "{}: format", path.display());
        assert_eq!(
            between.matches("- name: ").count(),
            1,
            "{}: another filter between the companion and the stage",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} templates with meshauthz_http");
}

/// Two listeners whose filters share a name but carry different policies (configured before any
/// connection): each connection keeps its own filter's policies; neither takes the other's for
/// an update.
#[test]
fn two_filters_sharing_a_name_keep_their_own_policies() {
    let vm = Rc::new(VmState::default());
    let (a, b) = (Plugin::new(Rc::clone(&vm)), Plugin::new(Rc::clone(&vm)));
    let host = conn_host(7, Some(BAR));
    let only_bar = principal_net_doc("cluster.local/ns/foo/sa/bar", false, false);
    let only_baz = principal_net_doc("cluster.local/ns/foo/sa/baz", false, false);
    a.configure(&host, names::ROOT_NET, Some(only_bar.as_bytes()));
    b.configure(&host, names::ROOT_NET, Some(only_baz.as_bytes()));
    // bar on listener A (its filter allows bar): allowed, not decided under B's policies.
    let mut on_a = open(&a, &host);
    assert!(host
        .state("meshauthz_net_decision")
        .unwrap()
        .starts_with("allow"));
    assert!(host
        .logged(Level::Warn)
        .iter()
        .any(|l| l.contains("another filter with this name")));
    // bar on listener B: denied (closed).
    let host_b = conn_host(8, Some(BAR));
    let mut on_b = Conn::default();
    assert_eq!(net::new_connection(&host_b, &b, &mut on_b), Flow::Continue);
    assert_eq!(net::decide(&host_b, &b, &mut on_b), Flow::Stop);
    assert_eq!(net::decide(&host, &a, &mut on_a), Flow::Continue);
    assert_eq!(host.closed(), 0);
}
