//! Differential testing of the policy engine against an independent model: Envoy's own RBAC
//! filters as istiod configures them.
//!
//! For each of Istio's builder goldens ([`golden`]): a real Envoy runs the golden's generated
//! RBAC filters ([`bootstrap`]); requests generated from the policies' own values ([`values`],
//! [`variants`], [`plan`]; one walk over the rules, [`rules`]) go
//! through it ([`wire`]); the engine evaluates the same requests from the golden's input
//! policies; and the two answers are compared ([`compare`]): allowed or denied, which filter
//! denied, the AUDIT `access_log_hint`, and the dry-run shadow results.
//!
//! The engine never sees Envoy's answer and Envoy never sees the engine: the only shared inputs
//! are the golden (input policies on one side, istiod's translation of them on the other) and the
//! request.

pub mod bootstrap;
pub mod compare;
pub mod golden;
pub mod plan;
pub mod ports;
pub mod probe;
pub mod projection;
pub mod rules;
pub mod values;
pub mod variants;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use policy_engine::{load_value, Engine, LoadOptions, Workload};
use serde_json::Value;

use compare::{Expected, Observed};
use golden::{Chain, Golden};
use meshauthz_harness::access_log;
use meshauthz_harness::app::TcpEcho;
use meshauthz_harness::certs::{CertFiles, Pki};
use meshauthz_harness::envoy::{free_port, Envoy};
use meshauthz_harness::{err, policy, Error, Result, WorkDir};
use probe::{Listener, Peer, Probe};
use values::PolicyValues;

/// How long the access log may take to show every probe.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// One probe, both answers and any inconsistency between the harness's model of the request and
/// what Envoy logged (which would make the comparison meaningless).
#[derive(Clone, Debug)]
pub struct Record {
    pub probe: Probe,
    /// The listener port (destination port).
    pub port: u16,
    /// The port as the golden names it, if it does.
    pub policy_port: Option<u16>,
    pub expected: Expected,
    pub observed: Observed,
    pub harness: Vec<String>,
}

impl Record {
    /// The request in words.
    pub fn describe(&self) -> String {
        let port = match self.policy_port {
            Some(p) => format!("port {p} (listener {})", self.port),
            None => format!("port {} (named by no policy)", self.port),
        };
        let peer = match &self.probe.peer {
            Peer::Plaintext => "plaintext".to_string(),
            Peer::Mtls { identity, sni } if sni.is_empty() => {
                format!("mTLS as {identity} (no SNI)")
            }
            Peer::Mtls { identity, sni } => format!("mTLS as {identity} (SNI {sni})"),
        };
        match &self.probe.http {
            Some(h) => {
                let headers: Vec<String> = h
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v:?}"))
                    .collect();
                format!(
                    "#{} {} {} Host {:?}{} on {port}, {peer} [{}]",
                    self.probe.id,
                    h.method,
                    h.path,
                    h.host,
                    if headers.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", headers.join(", "))
                    },
                    self.probe.why
                )
            }
            None => format!(
                "#{} TCP connection to {port}, {peer} [{}]",
                self.probe.id, self.probe.why
            ),
        }
    }

    /// Where the engine and Envoy differ (see [`compare::differences`]), plus harness problems.
    pub fn differences(&self) -> Vec<String> {
        let mut d = compare::differences(&self.expected, &self.observed);
        d.extend(self.harness.iter().map(|h| format!("harness: {h}")));
        d
    }
}

/// The result of one golden.
#[derive(Debug)]
pub struct Run {
    pub golden: String,
    pub records: Vec<Record>,
    /// Policy values that were not exercised, with the reason.
    pub skipped: BTreeSet<String>,
    pub listeners: Vec<Listener>,
    pub elapsed: Duration,
    /// Probes generated before sampling (see [`plan::MAX_PROBES_PER_GOLDEN`]).
    pub generated: usize,
}

impl Run {
    /// Every disagreement, one line each: golden, request, engine, Envoy.
    pub fn disagreements(&self) -> Vec<String> {
        self.records
            .iter()
            .flat_map(|r| {
                r.differences()
                    .into_iter()
                    .map(move |d| format!("{}: {}: {d}", self.golden, r.describe()))
            })
            .collect()
    }
}

fn workload() -> Workload {
    Workload {
        namespace: golden::WORKLOAD_NAMESPACE.to_string(),
        labels: golden::WORKLOAD_LABELS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Compile the engine for the builder test's proxy from (port-rewritten) policy documents.
pub fn compile(docs: &[Value], golden: &Golden) -> Result<Engine> {
    let (set, _warnings) = load_value(&Value::Array(docs.to_vec()), &LoadOptions::default())
        .map_err(|d| {
            Error(format!(
                "{}: the engine refuses the input:\n{d}",
                golden.name
            ))
        })?;
    let (engine, _warnings) = Engine::compile(&set, &workload(), &golden.mesh)
        .map_err(|d| Error(format!("{}: the engine cannot compile:\n{d}", golden.name)))?;
    // The module reads a repeated header the stricter way for every Envoy release
    // (`RepeatedHeaders::Strict`, checked by the engine's cases); here the engine reads it as the
    // Envoy under test does, so each release's own reading is checked against its RBAC.
    Ok(engine.with_repeated_headers(meshauthz_harness::envoy::repeated_headers()?))
}

struct Prepared {
    listeners: Vec<Listener>,
    policies: Vec<Value>,
    engine_docs: Vec<Value>,
}

/// Run one golden through Envoy and the engine. `engine_input` replaces the policies the engine
/// evaluates (the self-check feeds it deliberately different ones); Envoy always runs the golden.
pub fn run(golden: &Golden, engine_input: Option<&str>) -> Result<Run> {
    let started = Instant::now();
    let policies = policy::from_yaml(&golden.input)?;
    let engine_policies = match engine_input {
        Some(text) => policy::from_yaml(text)?,
        None => policies.clone(),
    };
    let named = ports::named_ports(&policies, &golden.filters);
    let work = WorkDir::new(&format!("diff-{}", golden.name))?;
    let pki = Pki::generate(&work.path().join("certs"))?;
    let echo = match golden.chain {
        Chain::Tcp => Some(TcpEcho::start()?),
        Chain::Http => None,
    };
    let log_path = work.path().join("access.log");
    let mut prepared: Option<Prepared> = None;
    let envoy = Envoy::start_with_retry(work.path(), "envoy", || {
        let mut listeners = Vec::new();
        let mut map = BTreeMap::new();
        for p in named.iter().copied().map(Some).chain(std::iter::once(None)) {
            let mut port = free_port()?;
            while named.contains(&port) {
                port = free_port()?;
            }
            if let Some(p) = p {
                map.insert(p, port);
            }
            listeners.push(Listener {
                policy_port: p,
                port,
            });
        }
        let mut filters = golden.filters.clone();
        ports::rewrite_filters(&mut filters, &map);
        let mut rewritten = policies.clone();
        ports::rewrite_policies(&mut rewritten, &map);
        let mut engine_docs = engine_policies.clone();
        ports::rewrite_policies(&mut engine_docs, &map);
        let admin = free_port()?;
        let config = bootstrap::config(
            golden.chain,
            &filters,
            &listeners,
            admin,
            pki.dir(),
            &log_path,
            echo.as_ref().map(TcpEcho::port),
        );
        prepared = Some(Prepared {
            listeners,
            policies: rewritten,
            engine_docs,
        });
        Ok((serde_json::to_string_pretty(&config)?, admin))
    })?;
    let Some(prepared) = prepared else {
        return err("Envoy started without a configuration");
    };
    let engine = compile(&prepared.engine_docs, golden)?;
    // The values come from the golden's policies as written (ports are listeners).
    let mut values = PolicyValues::collect(&policies);
    let _ = &prepared.policies;
    let plan = plan::plan(
        &mut values,
        &golden.mesh,
        &prepared.listeners,
        golden.chain == Chain::Http,
    );
    let mut certs: BTreeMap<String, CertFiles> = BTreeMap::new();
    for (i, id) in plan.identities.iter().enumerate() {
        certs.insert(id.clone(), pki.client_with_uri(&format!("id{i}"), id)?);
    }
    let listeners = prepared.listeners;
    let port_of = |p: &Probe| listeners.get(p.listener).copied();
    // Both answers for a probe and Envoy's observed one, with the harness's own check.
    let record = |p: &Probe, l: Listener, observed: Observed, log: Option<&Value>| {
        let (expected, _) = compare::expect(&engine, golden.chain, p, l.port);
        let harness = check_model(p, l.port, log, golden.chain == Chain::Http);
        Record {
            probe: p.clone(),
            port: l.port,
            policy_port: l.policy_port,
            expected,
            observed,
            harness,
        }
    };

    let mut records = Vec::new();
    match golden.chain {
        Chain::Http => {
            let seen = wire::send_http(&plan.probes, &listeners, &certs)?;
            let want = plan.probes.len();
            // Bounded wait for every entry; a missing one is reported per probe below.
            let _ = access_log::wait_for_lines(&log_path, want, LOG_WAIT, |l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
                    .is_some()
            });
            let entries = access_log::lines(&log_path);
            let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
            for l in entries {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    if let Some(id) = v.get("id").and_then(Value::as_str) {
                        by_id.insert(id.to_string(), v);
                    }
                }
            }
            for p in &plan.probes {
                let Some(l) = port_of(p) else { continue };
                let log = by_id.get(&p.id.to_string());
                let status = seen.get(&p.id).map_or(0, |s| s.status);
                records.push(record(p, l, compare::observe_http(status, log), log));
            }
        }
        Chain::Tcp => {
            let mut sent = Vec::new();
            for p in &plan.probes {
                let (seen, local) = wire::send_tcp(p, &listeners, &certs)?;
                sent.push((p, seen, local));
            }
            let _ = access_log::wait_for_lines(&log_path, sent.len(), LOG_WAIT, |l| {
                serde_json::from_str::<Value>(l).is_ok()
            });
            let entries = access_log::json_lines(&log_path);
            for (p, seen, local) in sent {
                let Some(l) = port_of(p) else { continue };
                let log = entries
                    .iter()
                    .find(|e| tcp_entry_matches(e, p, l.port, local));
                records.push(record(p, l, compare::observe_tcp(&seen, log), log));
            }
        }
    }
    drop(envoy);
    drop(echo);
    Ok(Run {
        golden: golden.name.clone(),
        records,
        skipped: values.skipped,
        listeners,
        elapsed: started.elapsed(),
        generated: plan.generated,
    })
}

fn log_str(log: &Value, key: &str) -> Option<String> {
    match log.get(key) {
        Some(Value::String(s)) if s != "-" && !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn tcp_entry_matches(e: &Value, p: &Probe, port: u16, local: Option<u16>) -> bool {
    if log_str(e, "port") != Some(port.to_string()) {
        return false;
    }
    match &p.peer {
        Peer::Plaintext => {
            log_str(e, "peer").is_none()
                && local.is_some_and(|l| log_str(e, "remote_port") == Some(l.to_string()))
        }
        Peer::Mtls { identity, sni } => {
            log_str(e, "peer").as_deref() == Some(identity.as_str())
                && log_str(e, "sni") == Some(sni.clone()).filter(|s| !s.is_empty())
        }
    }
}

/// Check that Envoy saw the request the engine was asked about: port, filter chain, peer
/// identity, SNI, remote address (and on HTTP, method).
fn check_model(p: &Probe, port: u16, log: Option<&Value>, http: bool) -> Vec<String> {
    let Some(log) = log else {
        return vec!["no access-log entry for this probe".to_string()];
    };
    let mut out = Vec::new();
    let mut want = |key: &str, expected: Option<String>| {
        let got = log_str(log, key);
        if got != expected {
            out.push(format!(
                "Envoy logged {key} {got:?}, the engine was given {expected:?}"
            ));
        }
    };
    want("port", Some(port.to_string()));
    match &p.peer {
        Peer::Plaintext => {
            want("chain", Some("plaintext".into()));
            want("peer", None);
        }
        Peer::Mtls { identity, sni } => {
            want("chain", Some("mtls".into()));
            want("peer", Some(identity.clone()));
            want("sni", Some(sni.clone()).filter(|s| !s.is_empty()));
        }
    }
    if http {
        want("remote", Some(compare::remote_ip(p).to_string()));
        if let Some(h) = &p.http {
            want("method", Some(h.method.clone()));
        }
    }
    out
}
