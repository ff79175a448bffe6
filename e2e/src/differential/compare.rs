//! Both sides of the comparison: what the engine decides for a probe ([`Expected`]) and what
//! Envoy's RBAC filters did ([`Observed`], from the client and the access log), and the
//! disagreements between them.

use std::net::{IpAddr, Ipv4Addr};

use policy_engine::path::ListenerNormalization;
use policy_engine::{Attributes, Cause, Decision, Engine, HttpAttributes, Protocol};
use serde_json::Value;

use super::bootstrap::SHADOW_PREFIXES;
use super::golden::Chain;
use super::probe::{Peer, Probe};
use super::wire::TcpSeen;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A dry-run outcome as Envoy writes it: `allowed`/`denied` and the matching rule, if any.
pub type Shadow = Option<(String, Option<String>)>;

/// The engine's answer for one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub allowed: bool,
    /// Denied by an enforced DENY rule (Envoy: `rbac_access_denied_matched_policy[<rule>]`) rather
    /// than by no ALLOW rule matching (`...[none]`).
    pub denied_by_rule: bool,
    /// How the engine explains it.
    pub cause: String,
    /// `access_log_hint`, when an AUDIT policy applies.
    pub hint: Option<bool>,
    /// Dry-run ALLOW, dry-run DENY.
    pub shadow: [Shadow; 2],
}

/// What Envoy did for one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `None` when the outcome was neither an RBAC allow nor an RBAC deny.
    pub allowed: Option<bool>,
    /// `None` when Envoy does not say (allowed, or no details).
    pub denied_by_rule: Option<bool>,
    /// Status / outcome and details, for messages.
    pub what: String,
    pub hint: Option<bool>,
    pub shadow: [Shadow; 2],
}

/// The remote address Envoy derives: the last `X-Forwarded-For` entry when it is an IP address
/// (HCM `use_remote_address: false`, no trusted hops), else the direct peer.
pub fn remote_ip(probe: &Probe) -> IpAddr {
    probe
        .http
        .as_ref()
        .and_then(|h| {
            h.headers
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        })
        .and_then(|(_, v)| v.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok())
        .unwrap_or(LOOPBACK)
}

/// Evaluate `probe` with the engine, on a listener at `port`.
pub fn expect(engine: &Engine, chain: Chain, probe: &Probe, port: u16) -> (Expected, Decision) {
    let (principal, sni) = match &probe.peer {
        Peer::Plaintext => (None, None),
        Peer::Mtls { identity, sni } => (
            Some(identity.as_str()),
            Some(sni.as_str()).filter(|s| !s.is_empty()),
        ),
    };
    // Request headers as the engine takes them: pseudo-headers, then the sent ones, lower-case
    // names, a repeated header as several pairs (Envoy RBAC matches any one of its values).
    // The module receives `:path` after the connection manager normalized it (the bootstrap's
    // `normalize_path` and `merge_slashes`), the path Envoy's RBAC matches too.
    let forwarded = probe.http.as_ref().map(|h| {
        ListenerNormalization::MergeSlashes
            .apply(&h.path)
            .into_owned()
    });
    let mut headers: Vec<(String, String)> = Vec::new();
    if let (Some(h), Some(path)) = (&probe.http, &forwarded) {
        let scheme = if principal.is_some() { "https" } else { "http" };
        headers.push((":method".into(), h.method.clone()));
        headers.push((":path".into(), path.clone()));
        headers.push((":authority".into(), h.host.clone()));
        headers.push((":scheme".into(), scheme.into()));
        headers.push(("x-diff-id".into(), probe.id.to_string()));
        for (k, v) in &h.headers {
            headers.push((k.to_ascii_lowercase(), v.clone()));
        }
    }
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let http = probe.http.as_ref().map(|h| HttpAttributes {
        host: Some(h.host.as_str()),
        method: Some(h.method.as_str()),
        path: forwarded.as_deref(),
        headers: &refs,
        jwt: None,
    });
    let attrs = Attributes {
        principal,
        mtls: principal.is_some(),
        source_ip: Some(LOOPBACK),
        remote_ip: Some(remote_ip(probe)),
        destination_ip: Some(LOOPBACK),
        destination_port: Some(port),
        sni,
        dynamic_metadata: None,
        http,
    };
    let protocol = match chain {
        Chain::Http => Protocol::Http,
        Chain::Tcp => Protocol::Tcp,
    };
    let d = engine.check(protocol, &attrs);
    let shadow = |s: Option<policy_engine::ShadowResult>| {
        s.map(|s| {
            (
                if s.allowed { "allowed" } else { "denied" }.to_string(),
                s.rule.map(|r| engine.rule_name(r)),
            )
        })
    };
    let cause = match d.cause {
        Cause::NoAllowPolicy => "no enforced ALLOW policy".to_string(),
        Cause::NoAllowRuleMatched => "no ALLOW rule matched".to_string(),
        Cause::AllowRule(r) => format!("ALLOW {}", engine.rule_name(r)),
        Cause::DenyRule(r) => format!("DENY {}", engine.rule_name(r)),
    };
    (
        Expected {
            allowed: d.allowed(),
            denied_by_rule: matches!(d.cause, Cause::DenyRule(_)),
            cause,
            hint: d.audit_policy_applies.then(|| d.access_log_hint()),
            shadow: [shadow(d.shadow_allow), shadow(d.shadow_deny)],
        },
        d,
    )
}

fn text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if s != "-" && !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    }
}

fn hint(v: Option<&Value>) -> Option<bool> {
    match v {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
}

fn shadows(log: Option<&Value>) -> [Shadow; 2] {
    SHADOW_PREFIXES.map(|p| {
        let result = text(log.and_then(|l| l.get(format!("{p}result"))));
        let policy = text(log.and_then(|l| l.get(format!("{p}policy"))));
        result.map(|r| (r, policy))
    })
}

/// `rbac_access_denied_matched_policy[<x>]`: `Some(true)` for a rule name, `Some(false)` for
/// `none`, `None` without such details.
fn denied_by_rule(details: &str) -> Option<bool> {
    let inner = details
        .strip_prefix("rbac_access_denied_matched_policy[")?
        .strip_suffix(']')?;
    Some(inner != "none")
}

/// Envoy's outcome for an HTTP probe, from curl's status and the access-log entry.
pub fn observe_http(status: u16, log: Option<&Value>) -> Observed {
    let code = log
        .and_then(|l| l.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    let details = text(log.and_then(|l| l.get("details"))).unwrap_or_default();
    let rbac_denied = details.starts_with("rbac_access_denied");
    let allowed = match (status, code) {
        (200, Some(200)) => Some(true),
        (403, Some(403)) if rbac_denied => Some(false),
        _ => None,
    };
    let what = format!(
        "HTTP {status} (access log: {} {details})",
        code.map_or("no entry".to_string(), |c| c.to_string())
    );
    observed(allowed, &details, what, log)
}

/// What Envoy did (`allowed`, in words `what`), with the rest read from the access-log entry.
fn observed(allowed: Option<bool>, details: &str, what: String, log: Option<&Value>) -> Observed {
    Observed {
        allowed,
        denied_by_rule: if allowed == Some(false) {
            denied_by_rule(details)
        } else {
            None
        },
        what,
        hint: hint(log.and_then(|l| l.get("hint"))),
        shadow: shadows(log),
    }
}

/// Envoy's outcome for a TCP probe, from the client and the listener's access-log entry.
pub fn observe_tcp(seen: &TcpSeen, log: Option<&Value>) -> Observed {
    let details = text(log.and_then(|l| l.get("details"))).unwrap_or_default();
    let allowed = match seen {
        TcpSeen::Echoed => Some(true),
        TcpSeen::Closed(_) => Some(false),
        TcpSeen::Timeout => None,
    };
    let what = format!(
        "{} (access log: {})",
        match seen {
            TcpSeen::Echoed => "echoed".to_string(),
            TcpSeen::Closed(s) if s.is_empty() => "connection closed".to_string(),
            TcpSeen::Closed(s) => format!("connection closed ({s})"),
            TcpSeen::Timeout => "no answer".to_string(),
        },
        if log.is_some() {
            if details.is_empty() {
                "-"
            } else {
                &details
            }
        } else {
            "no entry"
        }
    );
    observed(allowed, &details, what, log)
}

/// Where the engine and Envoy differ for one probe, in words (empty when they agree).
pub fn differences(e: &Expected, o: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    let Some(allowed) = o.allowed else {
        out.push(format!(
            "not comparable: Envoy neither allowed nor denied through RBAC ({})",
            o.what
        ));
        return out;
    };
    if allowed != e.allowed {
        out.push(format!(
            "engine {} ({}), Envoy {} ({})",
            if e.allowed { "ALLOWS" } else { "DENIES" },
            e.cause,
            if allowed { "ALLOWS" } else { "DENIES" },
            o.what
        ));
    } else if !allowed {
        if let Some(by_rule) = o.denied_by_rule {
            if by_rule != e.denied_by_rule {
                out.push(format!(
                    "both deny, but the engine says {} and Envoy {}",
                    e.cause, o.what
                ));
            }
        }
    }
    if e.hint != o.hint {
        out.push(format!(
            "access_log_hint: engine {:?}, Envoy {:?}",
            e.hint, o.hint
        ));
    }
    for (i, p) in SHADOW_PREFIXES.iter().enumerate() {
        let (es, os) = (e.shadow.get(i), o.shadow.get(i));
        if es != os {
            out.push(format!(
                "{p}shadow: engine {:?}, Envoy {:?}",
                es.cloned().flatten(),
                os.cloned().flatten()
            ));
        }
    }
    out
}
