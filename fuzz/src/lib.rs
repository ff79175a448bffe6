//! Shared pieces of the fuzz targets: structure-aware generators of Istio objects, CEL
//! expressions and requests, and the one path every target drives (load, compile, check).
//!
//! Every target must never panic (a panic traps the Wasm VM: with fail-closed every later request
//! on that worker is a 503) and never hang: libFuzzer's `-timeout=1` makes an input that takes more
//! than one second a finding.

use std::collections::BTreeMap;
use std::net::IpAddr;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use policy_engine::cel::{CelExpression, EXPRESSION_BUDGET};
use policy_engine::{
    load_str, load_value, Attributes, Engine, HttpAttributes, LoadOptions, MeshConfig, Protocol,
    Workload,
};
use serde_json::{json, Map, Value};

/// Separates the policies from the request in the `check` target's text form.
pub const REQUEST_MARKER: &str = "\n#request\n";

const NAMES: &[&str] = &["a", "deny-admin", "x", "", "-bad-", "a.b", "UPPER"];
const NAMESPACES: &[&str] = &["ns1", "ns2", "istio-system", "default", "", "foo"];
const ACTIONS: &[&str] = &["ALLOW", "DENY", "AUDIT", "CUSTOM", "allow", "", "REJECT"];
const STRINGS: &[&str] = &[
    "*",
    "",
    "/admin",
    "/admin/*",
    "*/admin",
    "/a*b",
    "/{*}/x",
    "/{**}",
    "GET",
    "cluster.local/ns/ns1/sa/a",
    "spiffe://cluster.local/ns/ns1/sa/a",
    "*.example.com",
    "example.com:8080",
    "ns1",
    "10.0.0.0/8",
    "10.0.0.1",
    "::1/128",
    "10.0.0.0/33",
    "8080",
    "65536",
    "-1",
    "a\u{0}b",
    "%2e%2e/admin",
    "/admin%2Fx",
    "https://idp/alice",
    "\u{1F600}",
];
const KEYS: &[&str] = &[
    "request.headers[x-tenant]",
    "request.headers[]",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims[groups]",
    "request.auth.claims[a][b]",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "experimental.envoy.filters.a[b]",
    "meshauthz.io/cel",
    "unknown",
];
const SOURCE_FIELDS: &[&str] = &[
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "serviceAccounts",
    "notServiceAccounts",
    "trustDomains",
    "bogus",
];
const OPERATION_FIELDS: &[&str] = &[
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
    "bogus",
];

/// CEL fragments the expression generator combines.
const CEL_ATOMS: &[&str] = &[
    "request.path",
    "request.url_path",
    "request.host",
    "request.method",
    "request.headers[\"x-tenant\"]",
    "request.headers.x_a",
    "request.headers",
    "request.auth.claims",
    "request.auth.claims.groups",
    "request.auth.claims[\"org\"][\"id\"]",
    "request.auth.principal",
    "source.address",
    "source.remote_address",
    "source.principal",
    "source.namespace",
    "source.service_account",
    "source.trust_domain",
    "destination.address",
    "destination.port",
    "connection.mtls",
    "connection.requested_server_name",
    "'tenant-a'",
    "\"/api/\"",
    "b'\\x00'",
    "1",
    "-9223372036854775808",
    "18446744073709551615u",
    "1.5e300",
    "true",
    "null",
    "[1, 2, 3]",
    "['a', 'b']",
    "{'a': 1}",
    "x",
    "y",
];
const CEL_UNARY: &[&str] = &[
    "!{}",
    "-{}",
    "size({})",
    "string({})",
    "int({})",
    "uint({})",
    "double({})",
    "bytes({})",
    "has({}.x)",
    "({})",
    "[{}]",
    "{}[0]",
    "{}['k']",
    "{}.matches('^/a(b|c)*$')",
    "ip_in_cidr({}, '10.0.0.0/8')",
    "{}.all(x, x == 1)",
    "{}.exists(x, x != '')",
    "{}.exists_one(x, true)",
    "{}.map(x, x + x)",
    "{}.filter(x, x > 0)",
    "max({})",
];
const CEL_BINARY: &[&str] = &[
    "{} == {}",
    "{} != {}",
    "{} < {}",
    "{} >= {}",
    "{} && {}",
    "{} || {}",
    "{} + {}",
    "{} - {}",
    "{} * {}",
    "{} / {}",
    "{} % {}",
    "{} in {}",
    "{}.contains({})",
    "{}.startsWith({})",
    "{}.endsWith({})",
    "{}.matches({})",
    "ip_in_cidr({}, {})",
    "{} ? {} : true",
    "{}[{}]",
    "{}.all(x, {})",
    "{}.map(y, {})",
    "min({}, {})",
];

fn pick<'a>(u: &mut Unstructured<'_>, items: &[&'a str]) -> Result<&'a str> {
    u.choose(items).copied()
}

/// A string from the pools, a random one, or a long one.
fn string(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=9u8)? {
        0..=5 => pick(u, STRINGS)?.to_string(),
        6 | 7 => u.arbitrary::<String>()?,
        8 => pick(u, STRINGS)?.repeat(usize::from(u.int_in_range(2..=200u8)?)),
        _ => cel(u, 3)?,
    })
}

/// A CEL expression from the fragments, up to `depth` levels of operators.
pub fn cel(u: &mut Unstructured<'_>, depth: u32) -> Result<String> {
    if depth == 0 || u.ratio(1, 3)? {
        return Ok(match u.int_in_range(0..=9u8)? {
            0 => u.arbitrary::<String>()?,
            _ => pick(u, CEL_ATOMS)?.to_string(),
        });
    }
    if u.arbitrary()? {
        let inner = cel(u, depth - 1)?;
        Ok(pick(u, CEL_UNARY)?.replacen("{}", &inner, 1))
    } else {
        let (a, b) = (cel(u, depth - 1)?, cel(u, depth - 1)?);
        Ok(pick(u, CEL_BINARY)?
            .replacen("{}", &a, 1)
            .replacen("{}", &b, 1))
    }
}

/// A JSON value of the wrong type, now and then.
fn odd_value(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => Value::Null,
        1 => json!(u.arbitrary::<i64>()?),
        2 => json!(u.arbitrary::<bool>()?),
        3 => json!({}),
        _ => json!([u.arbitrary::<f64>()?]),
    })
}

fn string_list(u: &mut Unstructured<'_>) -> Result<Value> {
    if u.ratio(1, 20)? {
        return odd_value(u);
    }
    let n = u.int_in_range(0..=4u8)?;
    let mut items = Vec::new();
    for _ in 0..n {
        items.push(if u.ratio(1, 20)? {
            odd_value(u)?
        } else {
            Value::String(string(u)?)
        });
    }
    Ok(Value::Array(items))
}

fn fields(u: &mut Unstructured<'_>, names: &[&str]) -> Result<Value> {
    let mut m = Map::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        m.insert(pick(u, names)?.to_string(), string_list(u)?);
    }
    Ok(Value::Object(m))
}

fn condition(u: &mut Unstructured<'_>) -> Result<Value> {
    let key = pick(u, KEYS)?;
    let mut values = Vec::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        values.push(Value::String(if key == "meshauthz.io/cel" {
            cel(u, 4)?
        } else {
            string(u)?
        }));
    }
    let list = if u.arbitrary()? {
        "values"
    } else {
        "notValues"
    };
    Ok(json!({"key": key, list: values}))
}

fn rule(u: &mut Unstructured<'_>) -> Result<Value> {
    let mut rule = Map::new();
    if u.arbitrary()? {
        let mut from = Vec::new();
        for _ in 0..u.int_in_range(0..=2u8)? {
            from.push(json!({"source": fields(u, SOURCE_FIELDS)?}));
        }
        rule.insert("from".into(), Value::Array(from));
    }
    if u.arbitrary()? {
        let mut to = Vec::new();
        for _ in 0..u.int_in_range(0..=2u8)? {
            to.push(json!({"operation": fields(u, OPERATION_FIELDS)?}));
        }
        rule.insert("to".into(), Value::Array(to));
    }
    if u.arbitrary()? {
        let mut when = Vec::new();
        for _ in 0..u.int_in_range(0..=3u8)? {
            when.push(condition(u)?);
        }
        rule.insert("when".into(), Value::Array(when));
    }
    Ok(Value::Object(rule))
}

fn labels(u: &mut Unstructured<'_>) -> Result<Value> {
    let mut m = Map::new();
    for _ in 0..u.int_in_range(0..=2u8)? {
        let k = if u.arbitrary()? {
            "app".to_string()
        } else {
            string(u)?
        };
        m.insert(
            k,
            Value::String(if u.arbitrary()? {
                "b".into()
            } else {
                string(u)?
            }),
        );
    }
    Ok(Value::Object(m))
}

/// An Istio object (AuthorizationPolicy or PeerAuthentication) with random fields and values.
pub fn istio_object(u: &mut Unstructured<'_>) -> Result<Value> {
    let mut spec = Map::new();
    let kind;
    if u.ratio(4, 5)? {
        kind = "AuthorizationPolicy";
        if u.arbitrary()? {
            spec.insert("action".into(), Value::String(pick(u, ACTIONS)?.into()));
        }
        if u.ratio(1, 5)? {
            spec.insert("provider".into(), json!({"name": string(u)?}));
        }
        let mut rules = Vec::new();
        for _ in 0..u.int_in_range(0..=3u8)? {
            rules.push(rule(u)?);
        }
        if u.ratio(9, 10)? {
            spec.insert("rules".into(), Value::Array(rules));
        }
    } else {
        kind = "PeerAuthentication";
        let modes = ["STRICT", "PERMISSIVE", "DISABLE", "UNSET", "bogus"];
        spec.insert("mtls".into(), json!({"mode": pick(u, &modes)?}));
        if u.arbitrary()? {
            let mut ports = Map::new();
            ports.insert(
                pick(u, &["8080", "80", "0", "70000", "x"])?.to_string(),
                json!({"mode": pick(u, &modes)?}),
            );
            spec.insert("portLevelMtls".into(), Value::Object(ports));
        }
    }
    if u.arbitrary()? {
        spec.insert("selector".into(), json!({"matchLabels": labels(u)?}));
    }
    if u.ratio(1, 10)? {
        spec.insert(
            "targetRefs".into(),
            json!([{"kind": "Gateway", "name": string(u)?}]),
        );
    }
    if u.ratio(1, 10)? {
        spec.insert(string(u)?, odd_value(u)?);
    }
    let version = pick(
        u,
        &[
            "security.istio.io/v1",
            "security.istio.io/v1beta1",
            "v1",
            "",
        ],
    )?;
    let mut metadata = json!({"name": pick(u, NAMES)?, "namespace": pick(u, NAMESPACES)?});
    if u.ratio(1, 5)? {
        if let Some(m) = metadata.as_object_mut() {
            m.insert(
                "annotations".into(),
                json!({"istio.io/dry-run": pick(u, &["true", "false", "x"])?}),
            );
        }
    }
    Ok(json!({"apiVersion": version, "kind": kind, "metadata": metadata, "spec": spec}))
}

/// The attributes of one request; owned, so [`Request::attributes`] can lend them.
#[derive(Debug, Default)]
pub struct Request {
    pub protocol_tcp: bool,
    pub principal: Option<String>,
    pub mtls: bool,
    pub source_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub sni: Option<String>,
    pub dynamic_metadata: Option<Value>,
    pub host: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub headers: Vec<(String, String)>,
    pub jwt: Option<Value>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn ip(v: &Value, key: &str) -> Option<IpAddr> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

impl Request {
    /// A request given as the decision cases write it (`principal`, `sourceIp`, `headers`, ...);
    /// fields that do not parse are left out.
    pub fn from_case(v: &Value) -> Request {
        let principal = text(v, "principal");
        let mut headers = Vec::new();
        if let Some(map) = v.get("headers").and_then(Value::as_object) {
            for (name, value) in map {
                match value {
                    Value::Array(values) => {
                        for x in values.iter().filter_map(Value::as_str) {
                            headers.push((name.to_ascii_lowercase(), x.to_string()));
                        }
                    }
                    Value::String(x) => headers.push((name.to_ascii_lowercase(), x.clone())),
                    other => headers.push((name.to_ascii_lowercase(), other.to_string())),
                }
            }
        }
        Request {
            protocol_tcp: v.get("protocol").and_then(Value::as_str) == Some("tcp"),
            mtls: v
                .get("mtls")
                .and_then(Value::as_bool)
                .unwrap_or(principal.is_some()),
            principal,
            source_ip: ip(v, "sourceIp").or_else(|| "10.1.0.1".parse().ok()),
            remote_ip: ip(v, "remoteIp"),
            destination_ip: ip(v, "destinationIp").or_else(|| "10.2.0.1".parse().ok()),
            port: v
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .or(Some(8080)),
            sni: text(v, "sni"),
            dynamic_metadata: v.get("dynamicMetadata").cloned(),
            host: text(v, "host").or_else(|| Some("b.ns1.svc.cluster.local".into())),
            method: text(v, "method").or_else(|| Some("GET".into())),
            path: text(v, "path").or_else(|| Some("/".into())),
            headers,
            jwt: v.get("jwt").cloned(),
        }
    }

    /// A random request: strings from the pools or arbitrary, sometimes very long.
    pub fn arbitrary(u: &mut Unstructured<'_>) -> Result<Request> {
        let opt = |u: &mut Unstructured<'_>| -> Result<Option<String>> {
            Ok(if u.arbitrary()? {
                Some(string(u)?)
            } else {
                None
            })
        };
        let mut headers = Vec::new();
        for _ in 0..u.int_in_range(0..=6u8)? {
            let name = pick(u, &["x-tenant", "x-a", "x-b", "cookie", "X-Upper", ""])?;
            headers.push((name.to_string(), string(u)?));
        }
        let jwt = if u.arbitrary()? {
            Some(
                json!({"iss": string(u)?, "sub": string(u)?, "groups": string_list(u)?,
                        "org": {"id": string(u)?}, "scope": string(u)?, "aud": string_list(u)?}),
            )
        } else {
            None
        };
        Ok(Request {
            protocol_tcp: u.ratio(1, 4)?,
            principal: opt(u)?,
            mtls: u.arbitrary()?,
            source_ip: Some(u.arbitrary::<IpAddr>()?),
            remote_ip: if u.arbitrary()? {
                Some(u.arbitrary()?)
            } else {
                None
            },
            destination_ip: Some(u.arbitrary::<IpAddr>()?),
            port: Some(u.arbitrary()?),
            sni: opt(u)?,
            dynamic_metadata: None,
            host: opt(u)?,
            method: opt(u)?,
            path: opt(u)?,
            headers,
            jwt,
        })
    }

    pub fn protocol(&self) -> Protocol {
        if self.protocol_tcp {
            Protocol::Tcp
        } else {
            Protocol::Http
        }
    }

    /// The attributes, with `headers` borrowed from `pairs` (see [`Request::header_pairs`]).
    pub fn attributes<'a>(&'a self, pairs: &'a [(&'a str, &'a str)]) -> Attributes<'a> {
        Attributes {
            principal: self.principal.as_deref(),
            mtls: self.mtls,
            source_ip: self.source_ip,
            remote_ip: self.remote_ip.or(self.source_ip),
            destination_ip: self.destination_ip,
            destination_port: self.port,
            sni: self.sni.as_deref(),
            dynamic_metadata: self.dynamic_metadata.as_ref(),
            http: (!self.protocol_tcp).then_some(HttpAttributes {
                host: self.host.as_deref(),
                method: self.method.as_deref(),
                path: self.path.as_deref(),
                headers: pairs,
                jwt: self.jwt.as_ref(),
            }),
        }
    }

    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

fn workloads() -> [Workload; 3] {
    let app_b = BTreeMap::from([("app".to_string(), "b".to_string())]);
    [
        Workload {
            namespace: "ns1".into(),
            labels: app_b.clone(),
        },
        Workload {
            namespace: "ns2".into(),
            labels: app_b,
        },
        Workload {
            namespace: "default".into(),
            labels: BTreeMap::new(),
        },
    ]
}

/// Compiles what loaded for a few workloads and checks `request` against each (if any): the
/// loader, the validator, the compiler and the engine, as the CLI and the module run them.
pub fn drive(
    loaded: Result<
        (policy_engine::PolicySet, policy_engine::Diagnostics),
        policy_engine::Diagnostics,
    >,
    request: Option<&Request>,
) {
    let (set, diagnostics) = match loaded {
        Ok(x) => x,
        Err(errors) => {
            // Every error names what it is about.
            let shown = errors.to_string();
            assert!(!shown.is_empty() || errors.errors().next().is_none());
            return;
        }
    };
    let _ = diagnostics.to_string();
    for workload in workloads() {
        let Ok((engine, _)) = Engine::compile(&set, &workload, &MeshConfig::default()) else {
            continue;
        };
        let _ = engine.requirements();
        for port in [80u16, 8080] {
            let _ = engine.mtls_mode(port);
        }
        if let Some(request) = request {
            let pairs = request.header_pairs();
            let decision = engine.check(request.protocol(), &request.attributes(&pairs));
            let _ = format!("{decision:?}");
        }
    }
}

/// Loads `text` (YAML or JSON, as the CLI reads files) and drives it.
pub fn drive_text(text: &str, request: Option<&Request>) {
    drive(load_str(text, &LoadOptions::default()), request);
}

/// Loads a JSON object (as the module reads its configuration) and drives it.
pub fn drive_value(value: &Value, request: Option<&Request>) {
    drive(load_value(value, &LoadOptions::default()), request);
}

/// Compiles one CEL expression; when it compiles, its cost is within the budget and it evaluates
/// (to a bool or an error) on `request`.
pub fn drive_cel(source: &str, request: &Request) {
    let Ok(expr) = CelExpression::compile(source) else {
        return;
    };
    assert!(
        expr.cost() <= EXPRESSION_BUDGET,
        "accepted over the budget: {source}"
    );
    let pairs = request.header_pairs();
    let _ = expr.evaluate(&request.attributes(&pairs));
}
