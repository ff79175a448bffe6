//! The plugin configuration: one JSON document (Envoy `configuration` as a
//! `google.protobuf.StringValue`, or Istio `WasmPlugin.spec.pluginConfig`).
//!
//! The type, the decoder and the writer are the policy engine's
//! ([`policy_engine::plugin_config`]): the CLI (`meshauthz plugin-config`, `render`), the e2e
//! suite and the sandbox write it with the same code this module reads it with, so the module
//! and `meshauthz check` always see the same policies. This file only turns the decoded
//! configuration into what the request path uses (the workload from node metadata when the
//! configuration names none, the compiled engine, the ports named for metrics).

use std::collections::BTreeMap;

use policy_engine::{
    plugin_config, Action, Attributes, Decision, EnforceMode, Engine, PortMtls, Protocol,
    Requirements, RuleId, Workload,
};

/// The decoded document, with the warnings found while decoding its policies (logged once, when
/// it is compiled).
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConfig {
    pub config: policy_engine::PluginConfig,
    pub warnings: Vec<String>,
}

impl std::ops::Deref for PluginConfig {
    type Target = policy_engine::PluginConfig;
    fn deref(&self) -> &Self::Target {
        &self.config
    }
}

/// Parses the document with the engine's decoder. Every problem is reported, one line each,
/// naming its object and field path.
pub fn parse(bytes: &[u8]) -> Result<PluginConfig, Vec<String>> {
    match plugin_config::decode(bytes) {
        Ok((config, warnings)) => Ok(PluginConfig {
            config,
            warnings: warnings.0.iter().map(ToString::to_string).collect(),
        }),
        Err(diagnostics) => {
            let mut lines: Vec<String> = diagnostics
                .0
                .iter()
                .filter(|d| d.is_error())
                .map(ToString::to_string)
                .collect();
            if lines.is_empty() {
                lines.push("refused by the decoder (no detail given)".to_string());
            }
            Err(lines)
        }
    }
}

/// What Envoy's node metadata says about the workload (Istio sidecars set `NAMESPACE` and
/// `LABELS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeWorkload {
    pub namespace: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    /// `LABELS` is present but could not be read as a map of strings. Refused: guessing "no
    /// labels" would silently drop every policy with a selector.
    pub labels_unreadable: bool,
}

/// A compiled configuration: what the request path uses.
pub struct Compiled {
    pub authz: Box<dyn crate::traits::Authorizer>,
    pub plaintext_filter_chains: Vec<String>,
    pub http_ports: Vec<u16>,
    /// Ports that policies or PeerAuthentication name (for per-port plaintext metrics).
    pub named_ports: Vec<u16>,
    /// `enforce`: `Decide` when the decide stages answer denials themselves (no companion, no
    /// enforce stage in the chain).
    pub enforce: EnforceMode,
    /// Warnings of loading/compiling (logged once).
    pub warnings: Vec<String>,
    /// The access-log labels of this configuration's rules, built on first use. They live and
    /// die with the configuration, so a label never outlives the rules it names.
    pub labels: crate::verdict::Labels,
}

/// Compiles the decoded policies for the workload. Errors are one line each.
/// Consumes the decoded configuration: its policies are dropped as they are compiled
/// ([`Engine::compile_owned`]), which lowers the peak of a load (the VM's linear memory never
/// shrinks).
pub fn compile(cfg: PluginConfig, node: &NodeWorkload) -> Result<Compiled, Vec<String>> {
    let PluginConfig {
        config:
            policy_engine::PluginConfig {
                policies,
                workload,
                mesh,
                plaintext_filter_chains,
                http_ports,
                enforce,
            },
        warnings: decode_warnings,
    } = cfg;
    let workload = match workload {
        Some(w) => w,
        None if node.labels_unreadable => {
            return Err(vec![
                "workload: not set, and Envoy node metadata LABELS is not a map of strings: set `workload.labels`".to_string(),
            ])
        }
        None => match &node.namespace {
            Some(ns) if !ns.is_empty() => Workload {
                namespace: ns.clone(),
                labels: node.labels.clone().unwrap_or_default(),
            },
            _ => {
                return Err(vec![
                    "workload: not set, and Envoy node metadata has no NAMESPACE: set `workload.namespace` (and `workload.labels`)".to_string(),
                ])
            }
        },
    };
    let (engine, compile_warnings) =
        Engine::compile_owned(policies, &workload, &mesh).map_err(|d| {
            let mut lines: Vec<String> = d.0.iter().map(|d| format!("policies: {d}")).collect();
            if lines.is_empty() {
                lines.push("policies: refused by the policy engine (no detail given)".to_string());
            }
            lines
        })?;
    let warnings = decode_warnings
        .into_iter()
        .chain(compile_warnings.0.iter().map(|d| format!("policies: {d}")))
        .collect();
    if enforce == EnforceMode::Decide {
        // Only Envoy's RBAC LOG filter, between the stages, can mark a request audited: a chain
        // without it would drop the audit trail silently. Refused (the last valid configuration
        // stays; with none, everything is denied).
        let audits = audit_policies(&engine);
        if !audits.is_empty() {
            return Err(vec![format!(
                "enforce: \"decide\" (decide stage alone) but AUDIT policies apply to this workload ({}): the audit trail needs the RBAC LOG companion and meshauthz_http_enforce; write \"enforce\": \"separate\" and deploy the full chain",
                audits.join(", ")
            )]);
        }
    }
    if enforce == EnforceMode::Connection {
        connection_level(&engine)?;
    }
    let named_ports = engine.named_ports().to_vec();
    Ok(Compiled {
        authz: Box::new(Cached::new(engine)),
        plaintext_filter_chains,
        http_ports,
        named_ports,
        enforce,
        warnings,
        labels: crate::verdict::Labels::default(),
    })
}

/// The AUDIT policies that apply (`namespace/name`): the modes without the RBAC LOG companion
/// refuse them.
fn audit_policies(engine: &Engine) -> Vec<String> {
    engine
        .policies()
        .iter()
        .filter(|p| p.action == Action::Audit)
        .map(|p| p.qualified_name())
        .collect()
}

/// `"enforce": "connection"` decides each connection once, before any request: refused when a
/// policy that applies reads a request attribute (the verdict could not depend on it) or when
/// AUDIT policies apply (the access-log hint is written per request by the RBAC LOG companion,
/// which this chain does not have). Refused, the last valid configuration stays; with none,
/// every connection is closed.
fn connection_level(engine: &Engine) -> Result<(), Vec<String>> {
    let reads = engine.request_attributes_read();
    if !reads.is_empty() {
        return Err(vec![format!(
            "enforce: \"connection\" (each connection decided once, before its requests) but the policies that apply read request attributes ({}); write \"decide\" (one Wasm stage) or \"separate\"",
            reads.join(", ")
        )]);
    }
    let audits = audit_policies(engine);
    if !audits.is_empty() {
        return Err(vec![format!(
            "enforce: \"connection\" but AUDIT policies apply to this workload ({}): the audit trail is written per request by the RBAC LOG companion; write \"separate\" or \"native\" and deploy their chain",
            audits.join(", ")
        )]);
    }
    Ok(())
}

/// The engine with the port-independent answers it gives every request computed once per
/// configuration: whether some port has its own mTLS mode, and the mode when the port is not
/// fetched (the engine derives both from its PeerAuthentication table, building a port list,
/// on each call).
struct Cached {
    engine: Engine,
    port_level: bool,
    no_port: PortMtls,
}

impl Cached {
    fn new(engine: Engine) -> Cached {
        Cached {
            port_level: engine.has_port_level_mtls(),
            no_port: engine.mtls_mode_at(None),
            engine,
        }
    }
}

impl crate::traits::Authorizer for Cached {
    fn check(&self, protocol: Protocol, attrs: &Attributes<'_>) -> Decision {
        self.engine.check(protocol, attrs)
    }
    fn mtls_mode_at(&self, port: Option<u16>) -> PortMtls {
        match port {
            Some(p) => self.engine.mtls_mode_at(Some(p)),
            None => self.no_port,
        }
    }
    fn has_port_level_mtls(&self) -> bool {
        self.port_level
    }
    fn requirements(&self) -> &Requirements {
        self.engine.requirements()
    }
    fn rule_name(&self, id: RuleId) -> String {
        self.engine.rule_name(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_decoder_reads_the_document() {
        let cfg = parse(
            br#"{"policies": [],
                 "workload": {"namespace": "foo", "labels": {"app": "httpbin"}},
                 "rootNamespace": "mesh-root", "trustDomain": "td", "trustDomainAliases": ["old"],
                 "plaintextFilterChains": ["pt", "pt2"], "httpPorts": [8080, 9090]}"#,
        )
        .unwrap();
        let w = cfg.workload.clone().unwrap();
        assert_eq!(w.namespace, "foo");
        assert_eq!(w.labels.get("app").map(String::as_str), Some("httpbin"));
        assert_eq!(cfg.mesh.root_namespace, "mesh-root");
        assert_eq!(cfg.mesh.trust_domain, "td");
        assert_eq!(cfg.mesh.trust_domain_aliases, vec!["old"]);
        assert_eq!(cfg.plaintext_filter_chains, vec!["pt", "pt2"]);
        assert_eq!(cfg.http_ports, vec![8080, 9090]);
        let defaults = parse(br#"{"policies": []}"#).unwrap();
        assert_eq!(defaults.workload, None);
        assert_eq!(defaults.plaintext_filter_chains, vec!["plaintext"]);
    }

    /// Issue 7 §1: the module's loader used to keep the last of two duplicate keys, so
    /// `"action": "DENY", "action": "ALLOW"` became ALLOW where the CLI refused the document.
    #[test]
    fn duplicate_keys_are_refused_as_the_cli_refuses_them() {
        let errs = parse(
            br#"{"policies": [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                 "metadata": {"name": "x", "namespace": "foo"},
                 "spec": {"action": "DENY", "action": "ALLOW"}}], "workload": {"namespace": "foo"}}"#,
        )
        .unwrap_err();
        assert!(errs[0].contains("duplicate key \"action\""), "{errs:?}");
    }

    /// Issue 7 §1: an object without a namespace was placed in the workload's namespace here and
    /// in `default` by the CLI. The configuration now carries namespaces (the writer fills them
    /// in with the CLI's rule); one without is refused, never placed by a second rule.
    #[test]
    fn an_object_without_namespace_is_refused() {
        let errs = parse(
            br#"{"policies": [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                 "metadata": {"name": "strict"}, "spec": {"mtls": {"mode": "STRICT"}}}],
                 "workload": {"namespace": "foo"}}"#,
        )
        .unwrap_err();
        assert!(
            errs[0].contains("PeerAuthentication /strict: metadata.namespace: Required value"),
            "{errs:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let errs = parse(
            br#"{"policy": [], "workload": {"namespace": "", "labelz": {}},
                 "trustDomainAliases": ["a", 3], "httpPorts": [0, 70000, "80"]}"#,
        )
        .unwrap_err();
        let all = errs.join("\n");
        for want in [
            "policy: unknown field \"policy\"; known fields: \"policies\"",
            "policies: Required value",
            "workload.labelz: unknown field",
            "workload.namespace: expected a non-empty string",
            "trustDomainAliases[1]: expected a string, found number 3",
            "httpPorts[0]",
            "httpPorts[1]",
            "httpPorts[2]",
        ] {
            assert!(all.contains(want), "missing {want:?}:\n{all}");
        }
        assert!(parse(b"  \n").unwrap_err()[0].contains("empty"));
        assert!(parse(b"{policies: []}").unwrap_err()[0].contains("not valid JSON"));
    }

    /// The full example of `filter/README.md` is accepted and means what the README says.
    #[test]
    fn readme_example_compiles() {
        let readme = include_str!("../README.md");
        let start = readme.find("```json\n").unwrap() + "```json\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let cfg = parse(&readme.as_bytes()[start..end]).unwrap();
        let compiled = compile(cfg.clone(), &NodeWorkload::default()).unwrap();
        assert_eq!(compiled.http_ports, vec![8080]);
        assert_eq!(
            compiled.authz.mtls_mode_at(Some(8080)).mode,
            policy_engine::MtlsMode::Strict
        );
        assert_eq!(
            compiled.authz.mtls_mode_at(Some(9000)).mode,
            policy_engine::MtlsMode::Permissive
        );
        assert!(compiled.named_ports.contains(&9000));
    }

    #[test]
    fn invalid_policies_are_refused_with_object_and_field() {
        let errs = parse(
            br#"{"policies": [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                 "metadata": {"name": "bad", "namespace": "foo"},
                 "spec": {"action": "ALLOW", "rules": [{"to": [{"operation": {"methods": ["GET"], "pathz": ["/"]}}]}]}}],
                 "workload": {"namespace": "foo"}}"#,
        )
        .unwrap_err();
        let all = errs.join("\n");
        assert!(all.contains("foo/bad"), "{all}");
        assert!(all.contains("spec.rules[0].to[0].operation"), "{all}");
    }

    #[test]
    fn workload_comes_from_node_metadata_when_absent() {
        let cfg = parse(br#"{"policies": []}"#).unwrap();
        let err = compile(cfg.clone(), &NodeWorkload::default())
            .err()
            .unwrap();
        assert!(err[0].contains("node metadata has no NAMESPACE"), "{err:?}");
        // With node metadata, the sidecar's namespace and labels select the policies.
        let cfg = parse(
            br#"{"policies": [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                 "metadata": {"name": "p", "namespace": "foo"},
                 "spec": {"selector": {"matchLabels": {"app": "echo"}}, "mtls": {"mode": "STRICT"}}}]}"#,
        )
        .unwrap();
        let node = NodeWorkload {
            namespace: Some("foo".to_string()),
            labels: Some([("app".to_string(), "echo".to_string())].into()),
            labels_unreadable: false,
        };
        let compiled = compile(cfg.clone(), &node).unwrap();
        assert_eq!(
            compiled.authz.mtls_mode_at(Some(80)).mode,
            policy_engine::MtlsMode::Strict
        );
        let other = NodeWorkload {
            namespace: Some("foo".to_string()),
            labels: Some([("app".to_string(), "other".to_string())].into()),
            labels_unreadable: false,
        };
        let compiled = compile(cfg.clone(), &other).unwrap();
        assert_eq!(
            compiled.authz.mtls_mode_at(Some(80)).mode,
            policy_engine::MtlsMode::Permissive
        );
        // Labels present but unreadable: refused rather than read as "no labels".
        let broken = NodeWorkload {
            namespace: Some("foo".to_string()),
            labels: None,
            labels_unreadable: true,
        };
        let err = compile(cfg.clone(), &broken).err().unwrap();
        assert!(err[0].contains("LABELS is not a map of strings"), "{err:?}");
    }
}
