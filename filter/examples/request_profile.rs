//! The decide stage's per-request work, natively, without Envoy: `meshauthz_net` records one
//! mTLS connection, then `meshauthz_http` decides the same request `N` times on a lean host that
//! answers from a table (the host's own work is a lookup). Run under callgrind to see where the
//! in-VM instructions go, and count allocations (calls of `malloc`; `unsafe_code` is forbidden in
//! this workspace, so no counting allocator):
//!
//! ```sh
//! cargo build --release -p meshauthz-filter --example request_profile
//! valgrind --tool=callgrind target/release/examples/request_profile CONFIG.json 10000
//! ```
//!
//! `CONFIG.json`: a plugin configuration (`meshauthz plugin-config ... --http-port 8080`).
//! Not a test: it asserts nothing about time.

use std::cell::RefCell;
use std::rc::Rc;

use log::Level;
use meshauthz_filter::net::Conn;
use meshauthz_filter::plugin::Plugin;
use meshauthz_filter::traits::Host;
use meshauthz_filter::vm::VmState;
use meshauthz_filter::{http, names, net};

/// Answers like Envoy for one mTLS connection from `team-00007/sa/client` to port 8080.
struct Lean {
    sans: Vec<u8>,
    states: RefCell<Vec<(String, Vec<u8>)>>,
}

impl Host for Lean {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        Some(match path {
            ["connection_id"] => 7u64.to_le_bytes().to_vec(),
            ["connection", "mtls"] => vec![1],
            ["destination", "port"] => 8080i64.to_le_bytes().to_vec(),
            ["source", "address"] => b"127.0.0.1:40000".to_vec(),
            ["xds", "filter_chain_name"] => b"mtls".to_vec(),
            ["filter_state", "meshauthz.peer_sans"] => self.sans.clone(),
            // The request companion's value (README, "The filter in Envoy").
            ["filter_state", "meshauthz.request"] => {
                b"7\nGET\nlocalhost:8080\n/api/orders/42".to_vec()
            }
            _ => return None,
        })
    }
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        Some(match name {
            ":method" => b"GET".to_vec(),
            ":path" => b"/api/orders/42".to_vec(),
            ":authority" => b"localhost:8080".to_vec(),
            _ => return None,
        })
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/api/orders/42".into()),
            (":authority".into(), "localhost:8080".into()),
        ]
    }
    fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        let mut s = self.states.borrow_mut();
        s.clear();
        s.push((key.to_string(), value.to_vec()));
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
    fn log(&self, _level: Level, message: &str) {
        eprintln!("log: {message}");
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(file) = args.next() else {
        eprintln!("usage: request_profile CONFIG.json [REQUESTS]");
        std::process::exit(2);
    };
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let config = match std::fs::read(&file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{file}: {e}");
            std::process::exit(2);
        }
    };
    let host = Lean {
        sans: b"spiffe://cluster.local/ns/team-00007/sa/client ".to_vec(),
        states: RefCell::new(Vec::new()),
    };
    let vm = Rc::new(VmState::default());
    let netp = Plugin::new(Rc::clone(&vm));
    let decide = Plugin::new(Rc::clone(&vm));
    netp.configure(&host, names::ROOT_NET, Some(&config));
    decide.configure(&host, names::ROOT_HTTP, Some(&config));
    let mut conn = Conn::default();
    net::new_connection(&host, &netp, &mut conn);
    net::decide(&host, &netp, &mut conn);
    // Warm the label caches.
    let flow = http::decide(&host, &decide);
    for _ in 0..n {
        std::hint::black_box(http::decide(&host, &decide));
    }
    println!(
        "{n} requests, first {flow:?}, decision {:?}",
        host.states
            .borrow()
            .first()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v))),
    );
}
