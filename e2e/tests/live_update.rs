//! Live policy updates under load (issue 11): a running Envoy gets a new policy set through
//! file-based LDS (the listener, module configuration included, served from a file Envoy
//! watches; `sidecar::to_dynamic_listeners`), about once a second for ~30 s, valid, invalid and
//! empty sets mixed, while several clients send requests continuously over keep-alive and
//! short connections. Every request must get a complete answer (no 5xx, no reset, no
//! connection closed without `connection: close`), decided by a set that was in force: the
//! one before or after the updates that landed while it was in flight (short connections), or
//! an earlier one on a keep-alive connection still on its draining listener chain. Invalid sets
//! are refused (logged with object/field, `meshauthz.config_refused`), the last good set stays;
//! an empty set allows everything (Istio: no policy, allow). The same load with the updates
//! delivered in place (ECDS, as Istio delivers a `WasmPlugin`): no chain drains, and no request
//! is decided by a set older than the one in force when it was sent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshauthz_harness::load::HttpClient;
use meshauthz_harness::sidecar::Sidecar;

/// How long updates land.
const UPDATE_FOR: Duration = Duration::from_secs(30);
/// Requests per client, at most (the test is bounded in requests as well as in time).
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;

/// What generation `g` of the policy set is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Allows `/common` and `/gen/<g>`, denies `/deny`.
    Valid,
    /// Names a port by name (refused by the module): the previous set stays.
    Invalid,
    /// No policy at all: everything allowed.
    Empty,
}

fn kind(g: usize) -> Kind {
    match g % 5 {
        _ if g == 0 => Kind::Valid,
        2 => Kind::Invalid,
        4 if g % 10 == 4 => Kind::Empty,
        _ => Kind::Valid,
    }
}

fn policies(g: usize) -> String {
    match kind(g) {
        Kind::Valid => format!(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-gen, namespace: foo}}
spec:
  rules:
  - to: [{{operation: {{paths: ["/common", "/gen/{g}", "/deny"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-path, namespace: foo}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/deny"]}}}}]
"#
        ),
        Kind::Invalid => format!(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: bad-port-{g}, namespace: foo}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{ports: ["http"]}}}}]
"#
        ),
        Kind::Empty => String::new(),
    }
}

/// The set in force after generation `g` was applied: the last valid or empty one.
fn effective(g: usize) -> usize {
    (0..=g)
        .rev()
        .find(|&i| kind(i) != Kind::Invalid)
        .unwrap_or(0)
}

/// The status set `e` (an effective generation) gives `path`.
fn predict(e: usize, path: &str) -> u16 {
    if kind(e) == Kind::Empty {
        return 200;
    }
    match path {
        "/common" => 200,
        "/deny" => 403,
        p if p == format!("/gen/{e}") => 200,
        _ => 403,
    }
}

struct Record {
    path: String,
    status: u16,
    /// Generations confirmed applied before the request was sent / written when it completed.
    applied_before: usize,
    written_after: usize,
    keep_alive: bool,
}

#[test]
fn policy_updates_land_under_load_without_failed_requests() {
    updates_under_load(Delivery::Lds, UPDATE_FOR);
}

/// The same load, the updates delivered in place as Istio delivers a `WasmPlugin` (ECDS): the
/// listener stays, so no connection drains on an old chain, and every request, keep-alive ones
/// included, is decided by a set in force while it was in flight.
#[test]
fn policy_updates_delivered_in_place_land_under_load_without_stale_decisions() {
    updates_under_load(Delivery::Ecds, UPDATE_FOR / 2);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The listener from a file (LDS): replaced on each update, old connections drain.
    Lds,
    /// The Wasm filters' configurations from files (ECDS), changed in place.
    Ecds,
}

fn updates_under_load(delivery: Delivery, update_for: Duration) {
    let builder = Sidecar::builder(match delivery {
        Delivery::Lds => "live-update",
        Delivery::Ecds => "live-update-ecds",
    });
    let builder = match delivery {
        Delivery::Lds => builder.dynamic_listener(),
        Delivery::Ecds => builder.ecds(),
    };
    let mut s = builder.policies(&policies(0)).start().unwrap();
    let port = s.port;
    let applied = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::<Record>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (applied, written, stop) = (applied.clone(), written.clone(), stop.clone());
            let (records, failures) = (records.clone(), failures.clone());
            std::thread::spawn(move || {
                let keep_alive = i % 2 == 0;
                let mut c = HttpClient::new(port, keep_alive);
                let mut mine = Vec::new();
                for n in 0..MAX_REQUESTS_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let a = applied.load(Ordering::SeqCst);
                    let w = written.load(Ordering::SeqCst);
                    let path = match n % 4 {
                        0 => "/common".to_string(),
                        1 => "/deny".to_string(),
                        2 => format!("/gen/{}", effective(w)),
                        _ => format!("/gen/{}", effective(a.saturating_sub(1))),
                    };
                    match c.get(&path, &[]) {
                        Ok(out) => mine.push(Record {
                            path,
                            status: out.status,
                            applied_before: a,
                            written_after: written.load(Ordering::SeqCst),
                            keep_alive,
                        }),
                        Err(f) => failures.lock().unwrap().push(format!(
                            "client {i} {path}: {} (reused connection: {})",
                            f.error, f.reused
                        )),
                    }
                }
                let n = mine.len();
                records.lock().unwrap().extend(mine);
                (n, c.connections)
            })
        })
        .collect();

    // Updates about once a second; each waits until Envoy applied it (LDS update_success).
    let started = Instant::now();
    let mut g = 0;
    let mut refused = 0;
    while started.elapsed() < update_for {
        std::thread::sleep(Duration::from_millis(1000));
        g += 1;
        written.store(g, Ordering::SeqCst);
        s.update_policies(&policies(g)).unwrap();
        applied.store(g, Ordering::SeqCst);
        if kind(g) == Kind::Invalid {
            refused += 1;
        }
    }
    // Let requests run on the last set for a moment, then stop the clients.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let mut connections = 0;
    for c in clients {
        let (_, conns) = c.join().unwrap();
        connections += conns;
    }

    let records = records.lock().unwrap();
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let (mut new, mut old, mut stale_keep_alive, mut max_lag) = (0, 0, 0, 0);
    let mut wrong = Vec::new();
    for r in records.iter() {
        assert!(r.status < 500, "{} -> {}", r.path, r.status);
        // Newest first: the set of the last written generation, back to the one applied before
        // sending (short connections) or any earlier one (keep-alive, draining chain).
        let newest = effective(r.written_after);
        let window: Vec<usize> = (r.applied_before..=r.written_after)
            .map(effective)
            .collect();
        if predict(newest, &r.path) == r.status {
            new += 1;
        } else if window.iter().any(|&e| predict(e, &r.path) == r.status) {
            old += 1;
        } else if r.keep_alive {
            match (0..r.applied_before)
                .rev()
                .find(|&e| predict(effective(e), &r.path) == r.status)
            {
                Some(e) => {
                    stale_keep_alive += 1;
                    max_lag = max_lag.max(r.applied_before - e);
                }
                None => wrong.push(r),
            }
        } else {
            wrong.push(r);
        }
    }
    eprintln!(
        "live update: {g} updates ({refused} invalid) in {:.1} s; {} requests over {connections} \
         connections: {new} decided by the newest set, {old} by the set before it, \
         {stale_keep_alive} on keep-alive connections by an older set (draining listener chain, \
         up to {max_lag} generations back)",
        started.elapsed().as_secs_f64(),
        records.len(),
    );
    assert!(
        wrong.is_empty(),
        "{} requests decided by no set in force, e.g. {:?}",
        wrong.len(),
        wrong
            .iter()
            .take(5)
            .map(|r| (
                &r.path,
                r.status,
                r.applied_before,
                r.written_after,
                r.keep_alive
            ))
            .collect::<Vec<_>>()
    );
    assert!(records.len() > 100, "only {} requests", records.len());
    if delivery == Delivery::Ecds {
        assert_eq!(
            stale_keep_alive, 0,
            "in place, no request may be decided by a set older than the one applied before it \
             was sent"
        );
    }
    // Every invalid update refused, counted and named in the log; the VM never restarted.
    let counted = s
        .envoy
        .stat_or_zero("wasmcustom.meshauthz.config_refused")
        .unwrap();
    assert!(
        counted >= refused,
        "config_refused {counted} < {refused} invalid updates"
    );
    let log = s.envoy.log();
    assert!(
        log.contains("AuthorizationPolicy foo/bad-port-2")
            && log.contains("spec.rules[0].to[0].operation.ports[0]"),
        "the refusal names the object and the field:\n{log}"
    );
    // The last set: after generation g, on a new connection.
    let mut fresh = HttpClient::new(port, false);
    let last = effective(g);
    for path in ["/common", "/deny", &format!("/gen/{last}"), "/gen/999"] {
        let got = fresh.get(path, &[]).unwrap().status;
        assert_eq!(got, predict(last, path), "{path} after the last update");
    }
}

/// An update that removes every policy allows everything (Istio: no policy, allow); an invalid
/// one after it keeps that (empty) set, it never turns into deny-all.
#[test]
fn removing_every_policy_allows_and_a_later_invalid_update_keeps_it() {
    let mut s = Sidecar::builder("live-empty")
        .dynamic_listener()
        .policies(&policies(1))
        .start()
        .unwrap();
    let mut c = HttpClient::new(s.port, false);
    assert_eq!(c.get("/deny", &[]).unwrap().status, 403);
    assert_eq!(c.get("/other", &[]).unwrap().status, 403);
    assert_eq!(c.get("/gen/1", &[]).unwrap().status, 200);
    s.update_policies("").unwrap();
    assert_eq!(c.get("/deny", &[]).unwrap().status, 200);
    assert_eq!(c.get("/other", &[]).unwrap().status, 200);
    s.update_policies(&policies(2)).unwrap();
    assert_eq!(kind(2), Kind::Invalid);
    s.envoy
        .wait_log_contains(
            "AuthorizationPolicy foo/bad-port-2",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(c.get("/deny", &[]).unwrap().status, 200);
    assert_eq!(c.get("/other", &[]).unwrap().status, 200);
    s.update_policies(&policies(3)).unwrap();
    assert_eq!(c.get("/deny", &[]).unwrap().status, 403);
    assert_eq!(c.get("/gen/3", &[]).unwrap().status, 200);
}
