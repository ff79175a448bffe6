//! What a golden's policies name, attribute by attribute ([`PolicyValues`]), read through the
//! one walk over the rules ([`super::rules`]); and what cannot be exercised on the wire, with the
//! reason ([`PolicyValues::skipped`]).

use std::collections::BTreeSet;

use serde_json::Value;

use super::rules::{self, Part};
use super::variants::KNOWN_METHODS;

/// A policy value, with whether it came from a positive list (`principals`, `values`) or a
/// negative one (`notPrincipals`, `notValues`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Named {
    pub value: String,
    pub positive: bool,
    /// `principals`, `when source.namespace`, ...
    pub field: String,
}

/// Everything the policies name, by attribute.
#[derive(Clone, Debug, Default)]
pub struct PolicyValues {
    pub principals: Vec<Named>,
    pub namespaces: Vec<Named>,
    /// (namespace, service account): `sa` alone means the policy's namespace.
    pub service_accounts: Vec<(String, String, Named)>,
    pub trust_domains: Vec<Named>,
    pub hosts: Vec<Named>,
    pub methods: Vec<Named>,
    pub paths: Vec<Named>,
    /// (header name, value).
    pub headers: Vec<(String, Named)>,
    pub remote_ips: Vec<Named>,
    pub snis: Vec<Named>,
    /// Values that are not exercised, with the reason.
    pub skipped: BTreeSet<String>,
}

fn strings(v: Option<&Value>, field: &str) -> Vec<String> {
    rules::strings(v, field).map(str::to_string).collect()
}

fn push_all(out: &mut Vec<Named>, obj: Option<&Value>, pos: &str, neg: &str, label: &str) {
    for (field, positive) in [(pos, true), (neg, false)] {
        for value in strings(obj, field) {
            let n = Named {
                value,
                positive,
                field: format!("{label}{field}"),
            };
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
}

const SKIP_SOURCE_IP: &str =
    "ipBlocks / notIpBlocks / source.ip: the direct peer is always 127.0.0.1 (loopback only)";
const SKIP_DESTINATION_IP: &str =
    "destination.ip: the listener's address is always 127.0.0.1 (loopback only)";
const SKIP_JWT: &str = "requestPrincipals / request.auth.*: no jwt_authn filter here; requests carry no JWT on both sides";
const SKIP_METADATA: &str = "experimental.envoy.filters.*: no filter writes that dynamic metadata here; absent on both sides";
const SKIP_LOWER_METHOD: &str = "methods other than GET POST PUT DELETE OPTIONS TRACE PATCH (e.g. lower-case ones): Envoy's HTTP/1 codec answers 400 before any filter runs; the known methods are sent instead";
pub(super) const SKIP_RELATIVE_PATH: &str =
    "paths not starting with '/' or '*': an HTTP/1.1 origin-form path starts with '/' (only '/'+value is sent)";

impl PolicyValues {
    /// Everything the policy documents name.
    pub fn collect(docs: &[Value]) -> PolicyValues {
        let mut pv = PolicyValues::default();
        for doc in docs {
            let ns = rules::namespace(doc);
            for site in rules::sites(doc) {
                let Some(at) = doc.pointer(&site.pointer) else {
                    continue;
                };
                match site.part {
                    Part::Source => pv.collect_source(Some(at), ns),
                    Part::Operation => {
                        let op = Some(at);
                        push_all(&mut pv.hosts, op, "hosts", "notHosts", "");
                        push_all(&mut pv.methods, op, "methods", "notMethods", "");
                        push_all(&mut pv.paths, op, "paths", "notPaths", "");
                    }
                    Part::Condition => pv.collect_condition(at, ns),
                }
            }
        }
        if pv.methods.iter().any(|m| {
            let bare = m.value.trim_matches('*');
            !bare.is_empty() && !KNOWN_METHODS.iter().any(|k| k.contains(bare))
        }) {
            pv.skipped.insert(SKIP_LOWER_METHOD.into());
        }
        pv
    }

    fn collect_source(&mut self, src: Option<&Value>, ns: &str) {
        push_all(&mut self.principals, src, "principals", "notPrincipals", "");
        push_all(&mut self.namespaces, src, "namespaces", "notNamespaces", "");
        push_all(
            &mut self.trust_domains,
            src,
            "trustDomains",
            "notTrustDomains",
            "",
        );
        push_all(
            &mut self.remote_ips,
            src,
            "remoteIpBlocks",
            "notRemoteIpBlocks",
            "",
        );
        for (field, positive) in [("serviceAccounts", true), ("notServiceAccounts", false)] {
            for v in strings(src, field) {
                self.push_service_account(v, ns, positive, field.to_string());
            }
        }
        let has = |f: &str| src.and_then(|s| s.get(f)).is_some();
        if has("ipBlocks") || has("notIpBlocks") {
            self.skipped.insert(SKIP_SOURCE_IP.into());
        }
        if has("requestPrincipals") || has("notRequestPrincipals") {
            self.skipped.insert(SKIP_JWT.into());
        }
    }

    /// A service account value `v` (`ns/sa`, or `sa` in the policy's namespace `ns`) named at
    /// `field`.
    fn push_service_account(&mut self, v: String, ns: &str, positive: bool, field: String) {
        let (sa_ns, sa) = match v.split_once('/') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (ns.to_string(), v.clone()),
        };
        self.service_accounts.push((
            sa_ns,
            sa,
            Named {
                value: v,
                positive,
                field,
            },
        ));
    }

    fn collect_condition(&mut self, c: &Value, ns: &str) {
        let key = c.get("key").and_then(Value::as_str).unwrap_or_default();
        let label = format!("when {key} ");
        let target: Option<&mut Vec<Named>> = match key {
            "source.principal" => Some(&mut self.principals),
            "source.namespace" => Some(&mut self.namespaces),
            "source.trustDomain" => Some(&mut self.trust_domains),
            "remote.ip" => Some(&mut self.remote_ips),
            "connection.sni" => Some(&mut self.snis),
            "request.headers[:method]" => Some(&mut self.methods),
            "request.headers[:authority]" => Some(&mut self.hosts),
            "request.headers[:path]" => Some(&mut self.paths),
            _ => None,
        };
        if let Some(list) = target {
            push_all(list, Some(c), "values", "notValues", &label);
            return;
        }
        if key == "source.serviceAccount" {
            for (field, positive) in [("values", true), ("notValues", false)] {
                for v in strings(Some(c), field) {
                    self.push_service_account(v, ns, positive, format!("{label}{field}"));
                }
            }
        } else if let Some(name) = key
            .strip_prefix("request.headers[")
            .and_then(|r| r.strip_suffix(']'))
        {
            let mut list = Vec::new();
            push_all(&mut list, Some(c), "values", "notValues", &label);
            for n in list {
                self.headers.push((name.to_string(), n));
            }
        } else if key == "source.ip" {
            self.skipped.insert(SKIP_SOURCE_IP.into());
        } else if key == "destination.ip" {
            self.skipped.insert(SKIP_DESTINATION_IP.into());
        } else if key.starts_with("request.auth.") {
            self.skipped.insert(SKIP_JWT.into());
        } else if key.starts_with("experimental.envoy.filters.") {
            self.skipped.insert(SKIP_METADATA.into());
        }
        // destination.port: a listener per port (super::ports).
    }
}
