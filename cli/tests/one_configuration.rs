//! Issue 7 §1: the CLI and the module read ONE policy set. Every decision case
//! (`policy-engine/tests/cases/*.yaml`) and every Istio builder golden input
//! (`../shared/istio-testdata`, when present) goes through both paths and must decide alike:
//!
//! * the CLI's path: `load_str` with the CLI's namespace rule, `Engine::compile`, `check` (what
//!   `meshauthz check` and `mode` run);
//! * the module's path: the real `meshauthz plugin-config` binary (policies on standard input),
//!   then the module's decoder `plugin_config::decode` (what `filter/src/config.rs` calls),
//!   `Engine::compile` for the workload the configuration names, `check`.
//!
//! The requests are generated from the policies' own values (principals, namespaces, paths,
//! methods, hosts, ports, IP blocks, header conditions, request principals), one dimension at a
//! time and principal x path, over HTTP and TCP; the mTLS mode is compared on every named port.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use common::{root, run_stdin, shared};
use policy_engine::{
    load_str, plugin_config, Attributes, Engine, HttpAttributes, LoadOptions, MeshConfig,
    PolicySet, Protocol, Workload,
};
use serde_json::{json, Value};

/// One policy input with the workload and mesh it is checked for.
struct Input {
    name: String,
    text: String,
    workload: Workload,
    mesh: MeshConfig,
}

/// The CLI's path. `None` when the CLI refuses the input.
fn cli_path(input: &Input) -> Option<(PolicySet, Engine)> {
    let opts = LoadOptions {
        default_namespace: input.workload.namespace.clone(),
    };
    let (set, _) = load_str(&input.text, &opts).ok()?;
    let (engine, _) = Engine::compile(&set, &input.workload, &input.mesh).ok()?;
    Some((set, engine))
}

/// `meshauthz plugin-config ... -` with the policies on standard input: the writer's output, or
/// its standard error when it refuses.
fn plugin_config_binary(input: &Input) -> Result<String, String> {
    let mut args: Vec<String> = vec![
        "plugin-config".into(),
        "--namespace".into(),
        input.workload.namespace.clone(),
        "--root-namespace".into(),
        input.mesh.root_namespace.clone(),
        "--trust-domain".into(),
        input.mesh.trust_domain.clone(),
    ];
    for (k, v) in &input.workload.labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    for a in &input.mesh.trust_domain_aliases {
        args.push("--trust-domain-alias".into());
        args.push(a.clone());
    }
    args.push("-".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_stdin(&args, &input.text);
    if out.code == 0 {
        Ok(out.stdout)
    } else {
        Err(out.stderr)
    }
}

/// The module's path, fed the writer's output.
fn module_path(written: &str) -> Result<Engine, String> {
    let (cfg, _) = plugin_config::decode(written.as_bytes()).map_err(|d| d.to_string())?;
    let workload = cfg.workload.ok_or("plugin-config wrote no workload")?;
    let (engine, _) =
        Engine::compile(&cfg.policies, &workload, &cfg.mesh).map_err(|d| d.to_string())?;
    Ok(engine)
}

/// A request to compare.
#[derive(Clone, Debug)]
struct Req {
    principal: Option<String>,
    source_ip: IpAddr,
    port: u16,
    host: String,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    jwt: Option<Value>,
    sni: Option<String>,
}

impl Default for Req {
    fn default() -> Self {
        Req {
            principal: None,
            source_ip: "10.1.0.1".parse().unwrap(),
            port: 8080,
            host: "b.ns1.svc.cluster.local".into(),
            method: "GET".into(),
            path: "/".into(),
            headers: Vec::new(),
            jwt: None,
            sni: None,
        }
    }
}

/// A concrete value that a wildcard or template pattern matches.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{**}", "x/y")
        .replace("{*}", "x")
        .replace('*', "x")
}

/// The values the policies name, by dimension.
#[derive(Default)]
struct Values {
    principals: BTreeSet<String>,
    paths: BTreeSet<String>,
    methods: BTreeSet<String>,
    hosts: BTreeSet<String>,
    ports: BTreeSet<u16>,
    ips: BTreeSet<IpAddr>,
    headers: BTreeSet<(String, String)>,
    request_principals: BTreeSet<String>,
    snis: BTreeSet<String>,
}

fn values(set: &PolicySet, mesh: &MeshConfig) -> Values {
    let mut v = Values::default();
    let td = &mesh.trust_domain;
    for ap in &set.authorization_policies {
        for rule in ap.spec.rules.iter().flatten().flatten() {
            for from in rule.from.iter().flatten().flatten() {
                let Some(s) = &from.source else { continue };
                for p in s.principals.iter().chain(&s.not_principals) {
                    v.principals.insert(format!("spiffe://{}", concrete(p)));
                }
                for ns in s.namespaces.iter().chain(&s.not_namespaces) {
                    v.principals
                        .insert(format!("spiffe://{td}/ns/{}/sa/x", concrete(ns)));
                }
                for sa in s.service_accounts.iter().chain(&s.not_service_accounts) {
                    let sa = concrete(sa);
                    let (ns, name) = sa.split_once('/').unwrap_or(("ns1", sa.as_str()));
                    v.principals
                        .insert(format!("spiffe://{td}/ns/{ns}/sa/{name}"));
                }
                for t in s.trust_domains.iter().chain(&s.not_trust_domains) {
                    v.principals
                        .insert(format!("spiffe://{}/ns/ns1/sa/x", concrete(t)));
                }
                for b in s
                    .ip_blocks
                    .iter()
                    .chain(&s.not_ip_blocks)
                    .chain(&s.remote_ip_blocks)
                    .chain(&s.not_remote_ip_blocks)
                {
                    if let Ok(ip) = b.split('/').next().unwrap_or("").parse() {
                        v.ips.insert(ip);
                    }
                }
                for r in s.request_principals.iter().chain(&s.not_request_principals) {
                    v.request_principals.insert(concrete(r));
                }
            }
            for to in rule.to.iter().flatten().flatten() {
                let Some(o) = &to.operation else { continue };
                for p in o.paths.iter().chain(&o.not_paths) {
                    v.paths.insert(concrete(p));
                }
                for m in o.methods.iter().chain(&o.not_methods) {
                    v.methods.insert(concrete(m));
                }
                for h in o.hosts.iter().chain(&o.not_hosts) {
                    v.hosts.insert(concrete(h));
                }
                for p in o.ports.iter().chain(&o.not_ports) {
                    if let Ok(p) = p.parse() {
                        v.ports.insert(p);
                    }
                }
            }
            for c in rule.when.iter().flatten().flatten() {
                for value in c.values.iter().chain(&c.not_values) {
                    let value = concrete(value);
                    if let Some(name) = c
                        .key
                        .strip_prefix("request.headers[")
                        .and_then(|k| k.strip_suffix(']'))
                    {
                        v.headers.insert((name.to_ascii_lowercase(), value.clone()));
                    }
                    match c.key.as_str() {
                        "source.principal" => {
                            v.principals.insert(format!("spiffe://{value}"));
                        }
                        "source.namespace" => {
                            v.principals
                                .insert(format!("spiffe://{td}/ns/{value}/sa/x"));
                        }
                        "destination.port" => {
                            if let Ok(p) = value.parse() {
                                v.ports.insert(p);
                            }
                        }
                        "connection.sni" => {
                            v.snis.insert(value.clone());
                        }
                        "source.ip" | "remote.ip" | "destination.ip" => {
                            if let Ok(ip) = value.split('/').next().unwrap_or("").parse() {
                                v.ips.insert(ip);
                            }
                        }
                        "request.auth.principal" => {
                            v.request_principals.insert(value.clone());
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for pa in &set.peer_authentications {
        for port in pa.spec.port_level_mtls.iter().flat_map(|m| m.keys()) {
            if let Ok(p) = u16::try_from(*port) {
                v.ports.insert(p);
            }
        }
    }
    v
}

fn requests(v: &Values) -> Vec<Req> {
    let base = Req::default();
    let mut out = vec![base.clone()];
    let principals: Vec<Option<String>> = std::iter::once(None)
        .chain(v.principals.iter().cloned().map(Some))
        .collect();
    for p in &principals {
        out.push(Req {
            principal: p.clone(),
            ..base.clone()
        });
        for path in &v.paths {
            out.push(Req {
                principal: p.clone(),
                path: path.clone(),
                ..base.clone()
            });
        }
        for port in &v.ports {
            out.push(Req {
                principal: p.clone(),
                port: *port,
                ..base.clone()
            });
        }
    }
    for m in &v.methods {
        out.push(Req {
            method: m.clone(),
            ..base.clone()
        });
    }
    for h in &v.hosts {
        out.push(Req {
            host: h.clone(),
            ..base.clone()
        });
    }
    for ip in &v.ips {
        out.push(Req {
            source_ip: *ip,
            ..base.clone()
        });
    }
    for (name, value) in &v.headers {
        out.push(Req {
            headers: vec![(name.clone(), value.clone())],
            ..base.clone()
        });
    }
    for rp in &v.request_principals {
        let (iss, sub) = rp.split_once('/').unwrap_or((rp.as_str(), "x"));
        out.push(Req {
            jwt: Some(json!({"iss": iss, "sub": sub})),
            ..base.clone()
        });
    }
    for sni in &v.snis {
        out.push(Req {
            sni: Some(sni.clone()),
            ..base.clone()
        });
    }
    out
}

fn decide(engine: &Engine, protocol: Protocol, r: &Req) -> policy_engine::Decision {
    let headers: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let attrs = Attributes {
        principal: r.principal.as_deref(),
        mtls: r.principal.is_some(),
        source_ip: Some(r.source_ip),
        remote_ip: Some(r.source_ip),
        destination_ip: Some("10.2.0.1".parse().unwrap()),
        destination_port: Some(r.port),
        sni: r.sni.as_deref(),
        dynamic_metadata: None,
        http: (protocol == Protocol::Http).then_some(HttpAttributes {
            host: Some(r.host.as_str()),
            method: Some(r.method.as_str()),
            path: Some(r.path.as_str()),
            headers: &headers,
            jwt: r.jwt.as_ref(),
        }),
    };
    engine.check(protocol, &attrs)
}

/// Runs one input through both paths; returns the disagreements and the number of checks.
fn compare(input: &Input) -> (Vec<String>, usize) {
    let name = &input.name;
    let cli = cli_path(input);
    let written = plugin_config_binary(input);
    let (set, cli_engine, written) = match (cli, written) {
        (None, Err(_)) => return (Vec::new(), 1),
        (None, Ok(_)) => {
            return (
                vec![format!(
                    "{name}: the CLI refuses the input, plugin-config wrote it"
                )],
                1,
            )
        }
        (Some(_), Err(e)) => {
            return (
                vec![format!(
                    "{name}: the CLI accepts the input, plugin-config refused it:\n{e}"
                )],
                1,
            )
        }
        (Some((set, engine)), Ok(w)) => (set, engine, w),
    };
    let module = match module_path(&written) {
        Ok(m) => m,
        Err(e) => {
            return (
                vec![format!(
                    "{name}: the module refuses what plugin-config wrote:\n{e}"
                )],
                1,
            )
        }
    };
    let v = values(&set, &input.mesh);
    let mut problems = Vec::new();
    let mut checks = 0;
    for port in v.ports.iter().copied().chain([8080, 1]) {
        checks += 1;
        let (a, b) = (cli_engine.mtls_mode(port), module.mtls_mode(port));
        if a != b {
            problems.push(format!(
                "{name}: mTLS mode of port {port}: CLI {a:?}, module {b:?}"
            ));
        }
    }
    for r in requests(&v) {
        for protocol in [Protocol::Http, Protocol::Tcp] {
            checks += 1;
            let (a, b) = (
                decide(&cli_engine, protocol, &r),
                decide(&module, protocol, &r),
            );
            if a != b {
                problems.push(format!(
                    "{name}: {protocol:?} {r:?}:\n  CLI    {a:?}\n  module {b:?}"
                ));
            }
        }
    }
    (problems, checks)
}

fn workload_of(v: Option<&Value>, default: &Workload) -> Workload {
    let Some(v) = v else { return default.clone() };
    Workload {
        namespace: v["namespace"].as_str().unwrap_or("ns1").to_string(),
        labels: match v.get("labels") {
            Some(l) => serde_json::from_value(l.clone()).unwrap(),
            None => BTreeMap::from([("app".to_string(), "b".to_string())]),
        },
    }
}

fn mesh_of(v: Option<&Value>, default: &MeshConfig) -> MeshConfig {
    let Some(v) = v else { return default.clone() };
    let d = MeshConfig::default();
    MeshConfig {
        root_namespace: v["rootNamespace"]
            .as_str()
            .unwrap_or(&d.root_namespace)
            .to_string(),
        trust_domain: v["trustDomain"]
            .as_str()
            .unwrap_or(&d.trust_domain)
            .to_string(),
        trust_domain_aliases: v
            .get("trustDomainAliases")
            .map(|a| serde_json::from_value(a.clone()).unwrap())
            .unwrap_or_default(),
    }
}

fn case_inputs() -> Vec<Input> {
    let dir = root().join("policy-engine/tests/cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "case files not found in {}",
        dir.display()
    );
    let mut out = Vec::new();
    for f in files {
        let file: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let default_workload = Workload {
            namespace: "ns1".into(),
            labels: BTreeMap::from([("app".to_string(), "b".to_string())]),
        };
        let file_workload = workload_of(file.get("workload"), &default_workload);
        let file_mesh = mesh_of(file.get("mesh"), &MeshConfig::default());
        let file_policies = file["policies"].as_str().unwrap_or("").to_string();
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        for case in file["cases"].as_array().unwrap() {
            out.push(Input {
                name: format!("{stem}: {}", case["name"].as_str().unwrap_or("?")),
                text: case["policies"]
                    .as_str()
                    .map_or(file_policies.clone(), str::to_string),
                workload: workload_of(case.get("workload"), &file_workload),
                mesh: mesh_of(case.get("mesh"), &file_mesh),
            });
        }
    }
    out
}

/// `shared/istio-testdata` (see [`shared`]), if present.
fn istio_testdata() -> Option<PathBuf> {
    shared("istio-testdata", |d| {
        d.join("pilot/pkg/security/authz/builder/testdata").is_dir()
    })
}

/// The mesh `builder_test.go` uses for a golden (as `e2e/src/differential/golden.rs`).
fn golden_mesh(base: &str) -> MeshConfig {
    let bundle: Option<(&str, &[&str])> = match base {
        "simple-policy-td-aliases" => Some(("td1", &["cluster.local"])),
        "simple-policy-multiple-td-aliases" => Some(("td1", &["cluster.local", "some-td"])),
        "simple-policy-principal-with-wildcard" => Some(("td1", &["foobar"])),
        "td-aliases-source-principal" => Some(("new-td", &["old-td", "some-trustdomain"])),
        _ => None,
    };
    let mut mesh = MeshConfig::default();
    if let Some((td, aliases)) = bundle {
        mesh.trust_domain = td.to_string();
        mesh.trust_domain_aliases = aliases.iter().map(|a| a.to_string()).collect();
    }
    mesh
}

/// The inputs of Istio's builder goldens (`builder/testdata/{http,tcp}/*-in.yaml`, for the builder
/// test's proxy `foo`, `app=httpbin, version=v1`) and of the ambient RBAC goldens
/// (`ambient/testdata/*-in.yaml`, AuthorizationPolicies and PeerAuthentications; checked for a
/// workload `foo`, `app=a`, the label their selectors use).
fn golden_inputs(testdata: &Path) -> Vec<Input> {
    let builder = testdata.join("pilot/pkg/security/authz/builder/testdata");
    let ambient = testdata.join("pilot/pkg/serviceregistry/ambient/testdata");
    let mut out = Vec::new();
    for (label, dir, labels) in [
        (
            "http",
            builder.join("http"),
            &[("app", "httpbin"), ("version", "v1")][..],
        ),
        (
            "tcp",
            builder.join("tcp"),
            &[("app", "httpbin"), ("version", "v1")][..],
        ),
        ("ambient", ambient, &[("app", "a")][..]),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with("-in.yaml"))
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let base = name.trim_end_matches("-in.yaml").to_string();
            out.push(Input {
                name: format!("istio {label}/{base}"),
                text: std::fs::read_to_string(&f).unwrap(),
                workload: Workload {
                    namespace: "foo".into(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                },
                mesh: golden_mesh(&base),
            });
        }
    }
    out
}

fn run_all(inputs: &[Input]) -> usize {
    let mut problems = Vec::new();
    let mut checks = 0;
    for input in inputs {
        let (p, n) = compare(input);
        problems.extend(p);
        checks += n;
    }
    assert!(
        problems.is_empty(),
        "{} disagreement(s) between the CLI and the module:\n{}",
        problems.len(),
        problems.join("\n")
    );
    checks
}

#[test]
fn every_decision_case_decides_alike_through_the_cli_and_the_module() {
    let inputs = case_inputs();
    let checks = run_all(&inputs);
    println!(
        "{} case inputs, {checks} checks, CLI and module agree",
        inputs.len()
    );
    assert!(
        inputs.len() >= 150 && checks > 5000,
        "{} inputs, {checks} checks",
        inputs.len()
    );
}

#[test]
fn every_istio_golden_input_decides_alike_through_the_cli_and_the_module() {
    let Some(dir) = istio_testdata() else {
        println!("shared/istio-testdata not found (set MESHAUTHZ_SHARED_DIR): the Istio golden inputs are not compared");
        return;
    };
    let inputs = golden_inputs(&dir);
    assert!(
        inputs.len() >= 40,
        "only {} golden inputs in {}",
        inputs.len(),
        dir.display()
    );
    let checks = run_all(&inputs);
    println!(
        "{} Istio golden inputs, {checks} checks, CLI and module agree",
        inputs.len()
    );
}
