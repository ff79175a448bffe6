//! The module's request path behind a fake host: a plugin configuration (the policies of a
//! decision case, or a fixed set), arbitrary bytes for every host property the module reads
//! (addresses, ports, certificate SANs, filter state, the protobuf `metadata`), arbitrary request
//! headers; then configure, the HTTP decide and enforce stages, and the network stages.
#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use log::Level;
use meshauthz_filter::net::Conn;
use meshauthz_filter::plugin::Plugin;
use meshauthz_filter::traits::Host;
use meshauthz_filter::vm::VmState;
use meshauthz_filter::{http, names, net};

/// A fixed configuration for the structured mode: several actions, CEL, JWT, paths, ports.
const CONFIG: &str = r#"{"policies": [
 {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
  "metadata": {"name": "default", "namespace": "ns1"},
  "spec": {"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8081": {"mode": "PERMISSIVE"}}}},
 {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
  "metadata": {"name": "deny", "namespace": "ns1"},
  "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]},
    {"when": [{"key": "meshauthz.io/cel", "values": ["request.headers['x-tenant'] != source.namespace"]}]}]}},
 {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
  "metadata": {"name": "audit", "namespace": "ns1"},
  "spec": {"action": "AUDIT", "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]}},
 {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
  "metadata": {"name": "allow", "namespace": "ns1"},
  "spec": {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/ns2/sa/a"],
      "requestPrincipals": ["https://idp/*"]}}],
    "when": [{"key": "request.auth.claims[groups]", "values": ["admins"]}]}]}}
], "workload": {"namespace": "ns1", "labels": {"app": "b"}}}"#;

/// Every property path the module reads, and the filter state it reads back.
const PATHS: &[&str] = &[
    "plugin_root_id",
    "plugin_name",
    "connection_id",
    "connection.mtls",
    "connection.requested_server_name",
    "connection.uri_san_peer_certificate",
    "connection.dns_san_peer_certificate",
    "connection.subject_peer_certificate",
    "source.address",
    "destination.address",
    "destination.port",
    "xds.filter_chain_name",
    "metadata",
    "filter_state.meshauthz.peer_sans",
    "filter_state.envoy.common.access_log_hint",
    "xds.node.metadata.NAMESPACE",
    "xds.node.metadata.LABELS",
];

#[derive(Default)]
struct FakeHost {
    props: BTreeMap<String, Vec<u8>>,
    headers: Vec<(String, String)>,
    state: RefCell<BTreeMap<String, Vec<u8>>>,
}

impl Host for FakeHost {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        if let ["filter_state", key] = path {
            if let Some(key) = key.strip_prefix("wasm.") {
                return self.state.borrow().get(key).cloned();
            }
        }
        self.props.get(&path.join(".")).cloned()
    }
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_bytes().to_vec())
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }
    fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        self.state
            .borrow_mut()
            .insert(key.to_string(), value.to_vec());
        true
    }
    fn send_forbidden(&self) -> bool {
        true
    }
    fn close_downstream(&self) -> bool {
        true
    }
    fn define_counter(&self, _name: &str) -> Option<u32> {
        Some(1)
    }
    fn increment(&self, _id: u32, _by: i64) {}
    fn log(&self, _level: Level, _message: &str) {}
}

fn host(u: &mut Unstructured<'_>) -> Result<FakeHost> {
    let mut host = FakeHost::default();
    for path in PATHS {
        if u.arbitrary()? {
            let value: Vec<u8> = match (*path, u.int_in_range(0..=2u8)?) {
                ("connection.mtls", 0) => vec![1],
                ("destination.port", 0) => 8080i64.to_le_bytes().to_vec(),
                ("source.address", 0) => b"10.1.0.1:4000".to_vec(),
                ("xds.filter_chain_name", 0) => b"mtls".to_vec(),
                ("connection.uri_san_peer_certificate", 0) => {
                    b"spiffe://cluster.local/ns/ns2/sa/a".to_vec()
                }
                _ => u.arbitrary()?,
            };
            host.props.insert((*path).to_string(), value);
        }
    }
    for _ in 0..u.int_in_range(0..=6u8)? {
        let name = *u.choose(&[
            ":path",
            ":method",
            ":authority",
            "x-tenant",
            "x-forwarded-for",
            "cookie",
        ])?;
        let value = if u.arbitrary()? {
            (*u.choose(&[
                "/admin/x",
                "/",
                "GET",
                "ns1",
                "10.9.9.9",
                "/a/../admin/x%2F",
            ])?)
            .to_string()
        } else {
            u.arbitrary()?
        };
        host.headers.push((name.to_string(), value));
    }
    Ok(host)
}

fn run(config: &[u8], host: &FakeHost) {
    let vm = Rc::new(VmState::default());
    let decide = Plugin::new(Rc::clone(&vm));
    let enforce = Plugin::new(Rc::clone(&vm));
    decide.configure(host, names::ROOT_HTTP, Some(config));
    enforce.configure(host, names::ROOT_HTTP_ENFORCE, None);
    let _ = http::decide(host, &decide);
    let _ = http::enforce(host, &enforce);
    decide.flush_metrics(host);

    let net_vm = Rc::new(VmState::default());
    let net_decide = Plugin::new(Rc::clone(&net_vm));
    let net_enforce = Plugin::new(Rc::clone(&net_vm));
    net_decide.configure(host, names::ROOT_NET, Some(config));
    net_enforce.configure(host, names::ROOT_NET_ENFORCE, None);
    let mut conn = Conn::default();
    let _ = net::new_connection(host, &net_decide, &mut conn);
    let _ = net::decide(host, &net_decide, &mut conn);
    let _ = net::enforce(host, &net_enforce, &mut conn);
    net::done(&net_decide, &mut conn);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        // `<plugin configuration>\n#host\n<host bytes>`: a configuration from the seeds.
        let marker = b"\n#host\n";
        let split = rest.windows(marker.len()).position(|w| w == marker);
        let (config, tail) = match split {
            Some(i) => (
                rest.get(..i).unwrap_or_default(),
                rest.get(i + marker.len()..).unwrap_or_default(),
            ),
            None => (rest, &[][..]),
        };
        let Ok(host) = host(&mut Unstructured::new(tail)) else {
            return;
        };
        run(config, &host);
        return;
    }
    let Ok(host) = host(&mut Unstructured::new(rest)) else {
        return;
    };
    run(CONFIG.as_bytes(), &host);
});
