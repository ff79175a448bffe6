//! One evaluation of a request or connection, as `check` prints it and `test` compares it: the
//! transport first (the engine's PeerAuthentication mode of the port: plaintext on a STRICT port,
//! or TLS on a DISABLE port, is reset as the module resets it), then the engine's [`Decision`].
//! Nothing here decides: every answer is the engine's, this only names it.

use std::net::IpAddr;

use policy_engine::cel::CelExpression;
use policy_engine::{
    Action, Attributes, Cause, Decision, Engine, HttpAttributes, MtlsMode, PolicySet, PortMtls,
    Protocol, RuleId, ShadowResult,
};
use serde_json::{json, Value};

/// A request (HTTP chain) or connection (TCP chain), owned.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    pub tcp: bool,
    pub port: Option<u16>,
    /// The verified peer identity; `None` is a plaintext connection.
    pub principal: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub sni: Option<String>,
    pub host: Option<String>,
    pub method: String,
    pub path: String,
    /// Names in lower case; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub jwt: Option<Value>,
}

/// What the client sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
    /// The connection is reset before authorization (transport refused by the port's mode).
    Reset,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Reset => "reset",
        }
    }

    pub fn upper(self) -> &'static str {
        match self {
            Outcome::Allow => "ALLOW",
            Outcome::Deny => "DENY",
            Outcome::Reset => "RESET",
        }
    }
}

/// The evaluation: the transport, then (when not reset) the engine's decision.
pub struct Evaluation {
    pub outcome: Outcome,
    pub protocol: Protocol,
    pub port: Option<u16>,
    pub mtls: bool,
    pub mode: MtlsMode,
    /// `mode` is STRICT made report-only (`meshauthz.io/strict-report-only`).
    pub report_only: bool,
    /// `namespace/name` of the PeerAuthentication that set `mode`; `None`: Istio's default.
    pub mode_source: Option<String>,
    /// `None` when the transport was refused (nothing is authorized on a reset connection).
    pub decision: Option<Decision>,
    /// Every AUDIT rule that matched (the decision's `audit_rule` is the first).
    pub audit_rules: Vec<RuleId>,
}

/// The engine's answer for `t`.
pub fn evaluate(engine: &Engine, t: &Traffic) -> Evaluation {
    let mtls = t.principal.is_some();
    // The module's rule (filter/src/net.rs): the mode of the port, or at an unknown port the
    // engine's answer for it.
    let answer = engine.mtls_mode_at(t.port);
    let (mode, report_only) = (answer.mode, answer.report_only);
    let mode_source = match t.port {
        Some(_) => engine.mtls().source(t.port),
        None if engine.has_port_level_mtls() => None,
        None => engine.mtls().source(None),
    }
    .map(str::to_string);
    let protocol = if t.tcp { Protocol::Tcp } else { Protocol::Http };
    let refused = (answer.resets_plaintext() && !mtls) || (mode == MtlsMode::Disable && mtls);
    // A refused connection is not authorized: no decision, no AUDIT rule.
    let (outcome, decision, audit_rules) = if refused {
        (Outcome::Reset, None, Vec::new())
    } else {
        let (d, audit_rules) = with_attributes(t, |attrs| {
            (
                engine.check(protocol, attrs),
                engine.audit_rules_matched(protocol, attrs),
            )
        });
        let outcome = if d.allowed() {
            Outcome::Allow
        } else {
            Outcome::Deny
        };
        (outcome, Some(d), audit_rules)
    };
    Evaluation {
        outcome,
        protocol,
        port: t.port,
        mtls,
        mode,
        report_only,
        mode_source,
        decision,
        audit_rules,
    }
}

/// Runs `f` with the engine's attributes for `t`.
fn with_attributes<R>(t: &Traffic, f: impl FnOnce(&Attributes<'_>) -> R) -> R {
    let headers: Vec<(&str, &str)> = t
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let attrs = Attributes {
        principal: t.principal.as_deref(),
        mtls: t.principal.is_some(),
        source_ip: t.source_ip,
        remote_ip: t.remote_ip.or(t.source_ip),
        destination_ip: t.destination_ip,
        destination_port: t.port,
        sni: t.sni.as_deref(),
        dynamic_metadata: None,
        http: (!t.tcp).then(|| HttpAttributes {
            host: t.host.as_deref(),
            method: Some(t.method.as_str()),
            path: Some(t.path.as_str()),
            headers: &headers,
            jwt: t.jwt.as_ref(),
        }),
    };
    f(&attrs)
}

/// For a decision with CEL run-time errors: which expression failed and why (the message names
/// the attribute), each as `namespace/name spec.rules[i].when[j].values[k]: message`. The
/// expressions are the applicable policies' `meshauthz.io/cel` conditions, evaluated by the
/// engine's CEL evaluator with the same attributes.
pub fn cel_failures(set: &PolicySet, engine: &Engine, t: &Traffic) -> Vec<String> {
    let mut out = Vec::new();
    with_attributes(t, |attrs| {
        for info in engine.policies() {
            let Some(p) = set
                .authorization_policies
                .iter()
                .find(|p| p.meta.namespace == info.namespace && p.meta.name == info.name)
            else {
                continue;
            };
            for (i, rule) in p.spec.rules.iter().flatten().enumerate() {
                for (j, c) in rule
                    .iter()
                    .flat_map(|r| r.when.iter().flatten())
                    .enumerate()
                {
                    let Some(c) = c else { continue };
                    if c.key != policy_engine::cel::CEL_CONDITION_KEY {
                        continue;
                    }
                    for (field, list) in [("values", &c.values), ("notValues", &c.not_values)] {
                        for (k, source) in list.iter().enumerate() {
                            let Ok(expr) = CelExpression::compile(source) else {
                                continue;
                            };
                            if let Err(e) = expr.evaluate(attrs) {
                                out.push(format!(
                                    "{} spec.rules[{i}].when[{j}].{field}[{k}]: {}",
                                    info.qualified_name(),
                                    e.0
                                ));
                            }
                        }
                    }
                }
            }
        }
    });
    out
}

fn cause_name(c: Cause) -> &'static str {
    match c {
        Cause::NoAllowPolicy => "noAllowPolicy",
        Cause::AllowRule(_) => "allowRule",
        Cause::DenyRule(_) => "denyRule",
        Cause::NoAllowRuleMatched => "noAllowRuleMatched",
    }
}

/// `namespace/name` of the rule's policy.
pub fn policy_of(engine: &Engine, r: RuleId) -> String {
    engine
        .policy(r)
        .map(|p| p.qualified_name())
        .unwrap_or_default()
}

/// The enforced ALLOW policies that apply (what a "none matched" DENY considered).
pub fn allow_policies(engine: &Engine) -> Vec<String> {
    engine
        .policies()
        .iter()
        .filter(|p| p.action == Action::Allow && !p.dry_run)
        .map(|p| p.qualified_name())
        .collect()
}

fn port_text(port: Option<u16>) -> String {
    match port {
        Some(p) => format!("port {p}"),
        None => "an unknown port".to_string(),
    }
}

fn source_text(source: Option<&str>) -> String {
    match source {
        Some(s) => format!("set by PeerAuthentication {s}"),
        None => "no PeerAuthentication applies: Istio's default".to_string(),
    }
}

impl Evaluation {
    /// A plaintext connection admitted only because the port's STRICT is report-only: the
    /// module counts and logs it; without the annotation it would be reset.
    pub fn would_reset(&self) -> bool {
        self.report_only && self.mode == MtlsMode::Strict && !self.mtls
    }

    /// `STRICT`, `STRICT (report-only)`, ...
    fn mode_text(&self) -> &'static str {
        PortMtls {
            mode: self.mode,
            report_only: self.report_only,
        }
        .describe()
    }

    /// Why, in one line.
    pub fn reason(&self, engine: &Engine) -> String {
        match &self.decision {
            None => format!(
                "{} connection to {} in {} mode ({})",
                if self.mtls { "TLS" } else { "plaintext" },
                port_text(self.port),
                self.mode_text(),
                source_text(self.mode_source.as_deref())
            ),
            Some(d) => match d.cause {
                Cause::NoAllowPolicy => {
                    "no DENY rule matched and no ALLOW policy applies".to_string()
                }
                Cause::AllowRule(r) => format!("ALLOW rule {}", engine.rule_name(r)),
                Cause::DenyRule(r) => format!("DENY rule {}", engine.rule_name(r)),
                Cause::NoAllowRuleMatched => format!(
                    "ALLOW policies apply and none of their rules matched (considered: {})",
                    allow_policies(engine).join(", ")
                ),
            },
        }
    }

    /// The explanation as a person reads it: the verdict line first.
    pub fn explain(&self, engine: &Engine) -> Vec<String> {
        let verdict = if self.would_reset() {
            format!("{} (report-only STRICT: would RESET)", self.outcome.upper())
        } else {
            self.outcome.upper().to_string()
        };
        let mut lines = vec![format!("{verdict}: {}", self.reason(engine))];
        lines.push(format!(
            "mTLS: {} {} ({}), {}",
            port_text(self.port),
            self.mode_text(),
            source_text(self.mode_source.as_deref()),
            if self.mtls {
                "the connection is mTLS"
            } else if self.would_reset() {
                "the connection is plaintext: admitted, counted and logged by the module (reset once meshauthz.io/strict-report-only is removed)"
            } else {
                "the connection is plaintext"
            }
        ));
        let Some(d) = &self.decision else {
            lines.push("authorization: not evaluated (the connection is reset first)".to_string());
            return lines;
        };
        if d.audit_policy_applies {
            if self.audit_rules.is_empty() {
                lines.push(
                    "audit: access_log_hint=false (AUDIT policies apply, no rule matched)"
                        .to_string(),
                );
            } else {
                let names: Vec<String> = self
                    .audit_rules
                    .iter()
                    .map(|r| engine.rule_name(*r))
                    .collect();
                lines.push(format!(
                    "audit: access_log_hint=true (matched: {})",
                    names.join(", ")
                ));
            }
        }
        for (label, shadow) in [
            ("dry-run ALLOW", d.shadow_allow),
            ("dry-run DENY", d.shadow_deny),
        ] {
            if let Some(s) = shadow {
                let rule = s
                    .rule
                    .map(|r| format!(" by {}", engine.rule_name(r)))
                    .unwrap_or_else(|| " (no rule matched)".to_string());
                lines.push(format!(
                    "{label}: would be {}{rule}",
                    if s.allowed { "allowed" } else { "denied" }
                ));
            }
        }
        if d.cel_errors > 0 {
            lines.push(format!(
                "CEL: {} condition(s) failed to evaluate; a failure never widens access (matched in DENY/AUDIT, not matched in ALLOW)",
                d.cel_errors
            ));
        }
        lines
    }

    /// The documented JSON form (README, "Machine output").
    pub fn to_json(&self, engine: &Engine) -> Value {
        let rule_json = |r: Option<RuleId>| match r {
            Some(r) => {
                json!({"policy": policy_of(engine, r), "rule": r.rule, "name": engine.rule_name(r)})
            }
            None => Value::Null,
        };
        let shadow = |s: Option<ShadowResult>| match s {
            Some(s) => {
                json!({"result": if s.allowed {"allowed"} else {"denied"}, "rule": rule_json(s.rule)})
            }
            None => Value::Null,
        };
        let mut v = json!({
            "outcome": self.outcome.as_str(),
            "reason": self.reason(engine),
            "protocol": match self.protocol { Protocol::Http => "http", Protocol::Tcp => "tcp" },
            "port": self.port,
            "mtls": self.mtls,
            "mtlsMode": self.mode.as_str(),
            "mtlsReportOnly": self.report_only,
            "wouldReset": self.would_reset(),
            "mtlsModeSource": self.mode_source,
        });
        let decided = match &self.decision {
            None => json!({
                "cause": if self.mtls { "mtlsDisableTls" } else { "mtlsStrictPlaintext" },
                "decidingRule": null,
                "allowPoliciesConsidered": [],
                "audit": {"applies": false, "hint": false, "rules": []},
                "dryRun": {"allow": null, "deny": null},
                "celErrors": 0,
            }),
            Some(d) => json!({
                "cause": cause_name(d.cause),
                "decidingRule": rule_json(d.deciding_rule()),
                "allowPoliciesConsidered": if d.cause == Cause::NoAllowRuleMatched { allow_policies(engine) } else { Vec::new() },
                "audit": {
                    "applies": d.audit_policy_applies,
                    "hint": d.access_log_hint(),
                    "rules": self.audit_rules.iter().map(|r| rule_json(Some(*r))).collect::<Vec<_>>(),
                },
                "dryRun": {"allow": shadow(d.shadow_allow), "deny": shadow(d.shadow_deny)},
                "celErrors": d.cel_errors,
            }),
        };
        if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), decided) {
            o.extend(extra);
        }
        v
    }
}

/// Which mode applies to which ports, for a check without `--port`.
pub fn modes_by_port(engine: &Engine) -> Vec<String> {
    let m = engine.mtls();
    let mut lines = Vec::new();
    let listed = m.listed_ports();
    if listed.is_empty() {
        lines.push(format!(
            "mTLS: {} on every port ({})",
            m.default_answer().describe(),
            source_text(m.source(None))
        ));
        return lines;
    }
    let names: Vec<String> = listed.iter().map(u16::to_string).collect();
    lines.push(format!(
        "mTLS: {} on ports other than {} ({})",
        m.default_answer().describe(),
        names.join(", "),
        source_text(m.source(None))
    ));
    for port in &listed {
        lines.push(format!(
            "mTLS: port {port} {} ({})",
            m.at(*port).describe(),
            source_text(m.source(Some(*port)))
        ));
    }
    lines.push(
        "mTLS: without --port the module treats the port as unknown: STRICT (give --port to check one)"
            .to_string(),
    );
    lines
}

/// `mode` as JSON: the mode of every port (`reportOnly`: STRICT made report-only by
/// `meshauthz.io/strict-report-only`).
pub fn modes_json(engine: &Engine) -> Value {
    let m = engine.mtls();
    let ports: serde_json::Map<String, Value> = m
        .listed_ports()
        .into_iter()
        .map(|p| (p.to_string(), port_mode_json(m.at(p), m.source(Some(p)))))
        .collect();
    json!({
        "default": port_mode_json(m.default_answer(), m.source(None)),
        "ports": ports,
    })
}

/// `{mode, reportOnly, source}`.
pub fn port_mode_json(answer: PortMtls, source: Option<&str>) -> Value {
    json!({"mode": answer.mode.as_str(), "reportOnly": answer.report_only, "source": source})
}
