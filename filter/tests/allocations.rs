//! Allocations per request on the decide stage's path, issue 12's realistic mix: a budget, like
//! the host-call budgets in `request_path.rs`. Inside Envoy every allocation is the VM's own
//! `malloc` (the host's copies too: Envoy calls back into the VM to allocate them), and each one
//! with its `free` costs a few hundred instructions per request; a regression that copies the
//! request's facts again shows here before it shows in `make bench-instructions`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::cell::Cell;
use std::rc::Rc;

use log::Level;
use meshauthz_filter::net::Conn;
use meshauthz_filter::plugin::Plugin;
use meshauthz_filter::traits::{Flow, Host};
use meshauthz_filter::vm::VmState;
use meshauthz_filter::{http, names, net};

/// Issue 12's realistic mix without AUDIT for workload `foo`/`app=httpbin` (its four ALLOW shapes
/// and its DENY), as `meshauthz plugin-config --enforce decide --http-port 8080` writes it.
const MIX: &str = r#"{"enforce": "decide", "httpPorts": [8080], "plaintextFilterChains": ["plaintext"],
  "workload": {"namespace": "foo", "labels": {"app": "httpbin"}},
  "policies": [
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "deny-admin", "namespace": "foo"},
     "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "action": "DENY", "rules": [
       {"from": [{"source": {"notPrincipals": ["cluster.local/ns/ops/sa/admin"]}}],
        "to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}]}},
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "allow-0", "namespace": "foo"},
     "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "action": "ALLOW", "rules": [
       {"from": [{"source": {"principals": ["cluster.local/ns/team-0/sa/client"]}}],
        "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}]}]}},
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "allow-1", "namespace": "foo"},
     "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "action": "ALLOW", "rules": [
       {"from": [{"source": {"namespaces": ["team-1"]}}],
        "to": [{"operation": {"methods": ["GET", "POST"], "paths": ["/api/*", "/v2/team-1/*"]}}]}]}},
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "allow-2", "namespace": "foo"},
     "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "action": "ALLOW", "rules": [
       {"from": [{"source": {"principals": ["cluster.local/ns/team-2/sa/client", "cluster.local/ns/team-2/sa/worker"]}}],
        "to": [{"operation": {"methods": ["GET", "HEAD"], "paths": ["/api/*", "/healthz"]}}]},
       {"from": [{"source": {"namespaces": ["team-2"]}}],
        "to": [{"operation": {"methods": ["POST", "PUT"], "paths": ["/api/team-2/*"]}}]}]}},
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "allow-3", "namespace": "foo"},
     "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "action": "ALLOW", "rules": [
       {"from": [{"source": {"principals": ["cluster.local/ns/team-3/sa/*"]}}],
        "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"], "notPaths": ["/api/internal/*"]}}]}]}}
  ]}"#;

/// Answers like Envoy for one mTLS connection from `team-3/sa/client` to port 8080, with the
/// templates' companions. Every value it returns is a fresh buffer, as Envoy's copies into the VM
/// are; it allocates nothing else.
struct Envoyish {
    path: &'static str,
    decisions: Cell<u32>,
}

impl Host for Envoyish {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let value: &[u8] = match path {
            ["connection_id"] => &[7, 0, 0, 0, 0, 0, 0, 0],
            ["connection", "mtls"] => &[1],
            ["destination", "port"] => &[0x90, 0x1f, 0, 0, 0, 0, 0, 0],
            ["source", "address"] => b"127.0.0.1:40000",
            ["xds", "filter_chain_name"] => b"mtls",
            ["filter_state", "meshauthz.peer_sans"] => {
                b"spiffe://cluster.local/ns/team-3/sa/client "
            }
            ["filter_state", "meshauthz.request"] => {
                return Some(format!("7\nGET\nshop:8080\n{}", self.path).into_bytes());
            }
            _ => return None,
        };
        Some(value.to_vec())
    }
    fn request_header(&self, _name: &str) -> Option<Vec<u8>> {
        panic!("the request companion gives the pseudo-headers: no header read expected")
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        panic!("no policy names a header: no header list expected")
    }
    fn set_filter_state(&self, _key: &str, _value: &[u8]) -> bool {
        self.decisions.set(self.decisions.get() + 1);
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

/// The decide stage's allocations per request, with the connection recorded by `meshauthz_net`
/// (as in the shipped chains) and after a first request (which fills the per-VM caches).
fn allocations_per_request(path: &'static str, expected: Flow) -> u64 {
    let host = Envoyish {
        path,
        decisions: Cell::new(0),
    };
    let vm = Rc::new(VmState::default());
    let netp = Plugin::new(Rc::clone(&vm));
    let decide = Plugin::new(Rc::clone(&vm));
    netp.configure(&host, names::ROOT_NET, Some(MIX.as_bytes()));
    decide.configure(&host, names::ROOT_HTTP, Some(MIX.as_bytes()));
    let mut conn = Conn::default();
    assert_eq!(net::new_connection(&host, &netp, &mut conn), Flow::Continue);
    assert_eq!(net::decide(&host, &netp, &mut conn), Flow::Continue);
    assert_eq!(http::decide(&host, &decide), expected);
    host.decisions.set(0);
    const N: u64 = 50;
    let info = allocation_counter::measure(|| {
        for _ in 0..N {
            assert_eq!(http::decide(&host, &decide), expected);
        }
    });
    assert_eq!(
        host.decisions.get(),
        N as u32,
        "one decision published per request"
    );
    assert_eq!(info.count_current, 0, "nothing kept per request");
    info.count_total / N
}

/// An allowed request: the companion's value (the one host copy) and nothing else.
#[test]
fn an_allowed_request_allocates_only_the_hosts_copy() {
    assert_eq!(allocations_per_request("/api/orders/42", Flow::Continue), 1);
}

/// A denied request (the DENY on `/admin/*`): the same, the 403 included.
#[test]
fn a_denied_request_allocates_only_the_hosts_copy() {
    assert_eq!(allocations_per_request("/admin/users", Flow::Stop), 1);
}
