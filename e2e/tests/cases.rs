//! The engine's decision cases (`policy-engine/tests/cases/*.yaml`) marked `e2e: true`, played
//! through a real Envoy running the built module: what the engine decides in `cargo test`, a caller
//! sees on the wire (200 from the application, or Istio's 403 `RBAC: access denied`).
//!
//! One Envoy per distinct (policies, mesh, workload); the plugin configuration is written by the
//! engine's writer for the case's workload and mesh, with the listener in `httpPorts`. The request:
//! mTLS with a client certificate whose only URI SAN is the case's `principal` (plaintext without
//! one), the case's method, path, `Host` and headers (a list is sent as repeated headers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

#[allow(
    dead_code,
    unreachable_pub,
    reason = "the engine's case runner, shared by #[path]: only the case-file format is used here"
)]
#[path = "../../policy-engine/tests/support/cases.rs"]
mod support;

use std::collections::BTreeMap;

use meshauthz_harness::assert::DENIED_BODY;
use meshauthz_harness::client::Transport;
use meshauthz_harness::envoy::free_port;
use meshauthz_harness::sidecar::Sidecar;
use meshauthz_harness::workspace_root;
use policy_engine::{load_str, LoadOptions, MeshConfig, PluginConfig, Workload};
use support::{Case, CaseFile, HeaderValue, ListenerSpec, MeshSpec, ProtocolSpec, WorkloadSpec};

/// The cases one Envoy plays: policies, mesh, workload, and each case with its file name.
type Group = (String, MeshSpec, WorkloadSpec, Vec<(String, Case)>);

/// Why a tagged case cannot be played on the wire, if it cannot.
fn unplayable(case: &Case) -> Option<&'static str> {
    let r = &case.request;
    if case.protocol != ProtocolSpec::Http {
        return Some("protocol tcp (the runner sends HTTP requests)");
    }
    if case.expect.is_none() {
        return Some("no `expect` (load errors, warnings and mTLS modes are not decisions)");
    }
    if r.port.is_some() {
        return Some("`port`: the destination port is the listener's free loopback port");
    }
    if r.source_ip.is_some() || r.remote_ip.is_some() || r.destination_ip.is_some() {
        return Some("IPs: every address is 127.0.0.1 here");
    }
    if r.sni.is_some() || r.dynamic_metadata.is_some() || r.jwt.is_some() {
        return Some("`sni`, `dynamicMetadata` or `jwt`: not produced by this runner");
    }
    if r.listener != ListenerSpec::None {
        return Some("`listener`: the template's normalization is fixed");
    }
    if r.mtls == Some(false) && r.principal.is_some() {
        return Some("`mtls: false` with a principal: an unverified certificate is refused");
    }
    if r.path.as_deref().is_some_and(|p| p.contains('#')) {
        return Some("a fragment: curl does not send it");
    }
    None
}

fn plugin_config(
    policies: &str,
    mesh: &MeshSpec,
    wl: &WorkloadSpec,
    port: u16,
) -> serde_json::Value {
    let (set, _warnings) = load_str(policies, &LoadOptions::default())
        .unwrap_or_else(|d| panic!("the case's policies do not load:\n{d}"));
    PluginConfig {
        workload: Some(Workload {
            namespace: wl.namespace.clone(),
            labels: wl.labels.clone(),
        }),
        mesh: MeshConfig {
            root_namespace: mesh.root_namespace.clone(),
            trust_domain: mesh.trust_domain.clone(),
            trust_domain_aliases: mesh.trust_domain_aliases.clone(),
        },
        http_ports: vec![port],
        ..PluginConfig::new(set)
    }
    .write()
    .unwrap_or_else(|d| panic!("the plugin configuration writer refused:\n{d}"))
}

/// Plays one case on `s`; the problem, if the caller saw something else.
fn play(s: &Sidecar, n: usize, file: &str, case: &Case) -> Option<String> {
    let r = &case.request;
    let transport = match &r.principal {
        Some(uri) => {
            let cert = s.pki.client_with_uri(&format!("case-{n}"), uri).unwrap();
            Transport::mtls(&s.pki, &cert)
        }
        None => Transport::Plaintext,
    };
    let path = r.path.as_deref().unwrap_or(support::DEFAULT_PATH);
    let mut req = s
        .get(path, transport)
        .method(r.method.as_deref().unwrap_or(support::DEFAULT_METHOD))
        .header("Host", r.host.as_deref().unwrap_or(support::DEFAULT_HOST));
    for (name, value) in &r.headers {
        let values = match value {
            HeaderValue::One(v) => vec![v.clone()],
            HeaderValue::Many(vs) => vs.clone(),
        };
        for v in values {
            req = req.header(name, &v);
        }
    }
    let got = req.send().unwrap();
    let allowed = case.expect.as_ref().map(|e| e.allowed);
    let seen = match (got.exit, got.status, got.body.as_str()) {
        (0, 200, _) => Some(true),
        (_, 403, DENIED_BODY) => Some(false),
        _ => None,
    };
    (seen != allowed).then(|| {
        format!(
            "{file}: case {:?}: expected allowed = {allowed:?}, the caller saw {got:#?}",
            case.name
        )
    })
}

#[test]
fn tagged_decision_cases_hold_through_envoy() {
    play_tagged(None);
}

/// The module built without CEL (`meshauthz-nocel.wasm`) plays every tagged case without a CEL
/// condition the same way: one semantics, less code.
#[test]
fn tagged_decision_cases_hold_through_envoy_without_cel() {
    play_tagged(Some(meshauthz_harness::module_nocel_path().unwrap()));
}

/// Plays the tagged cases on Envoys running `module` (default: the module with CEL; with another
/// module, the cases with a CEL condition are left out).
fn play_tagged(module: Option<std::path::PathBuf>) {
    let without_cel = module.is_some();
    let dir = workspace_root().join("policy-engine/tests/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    // (policies, mesh, workload) -> the cases to play on one Envoy.
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut problems = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let parsed: CaseFile = serde_yaml_ng::from_str(&text).unwrap();
        for case in parsed.cases.into_iter().filter(|c| c.e2e) {
            if let Some(why) = unplayable(&case) {
                problems.push(format!(
                    "{name}: case {:?} is tagged e2e but {why}",
                    case.name
                ));
                continue;
            }
            let policies = case.policies.clone().unwrap_or(parsed.policies.clone());
            if without_cel && policies.contains(policy_engine::cel::CEL_CONDITION_KEY) {
                continue;
            }
            let mesh = case.mesh.clone().unwrap_or(parsed.mesh.clone());
            let wl = case.workload.clone().unwrap_or(parsed.workload.clone());
            let key = format!("{policies}\u{0}{mesh:?}\u{0}{wl:?}");
            groups
                .entry(key)
                .or_insert_with(|| (policies, mesh, wl, Vec::new()))
                .3
                .push((name.clone(), case));
        }
    }
    let mut played = 0;
    for (g, (policies, mesh, wl, cases)) in groups.values().enumerate() {
        let port = free_port().unwrap();
        let mut b = Sidecar::builder(&format!(
            "cases-{g}{}",
            if without_cel { "-nocel" } else { "" }
        ))
        .inbound_port(port)
        .plugin_config(plugin_config(policies, mesh, wl, port));
        if let Some(m) = &module {
            b = b.module(m.clone());
        }
        let s = b.start().unwrap();
        for (file, case) in cases {
            played += 1;
            problems.extend(play(&s, played, file, case));
        }
    }
    println!(
        "{played} tagged cases played through Envoy in {} configurations{}",
        groups.len(),
        if without_cel {
            " (module without CEL)"
        } else {
            ""
        }
    );
    assert!(played >= 30, "only {played} cases are tagged e2e: true");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
