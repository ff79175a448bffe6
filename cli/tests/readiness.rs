//! `meshauthz strict-readiness` against an admin endpoint on loopback that answers as Envoy's
//! `/stats` does (the counter names of filter/README.md), bounded in requests and time.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Serves exactly `n` requests: `/stats?filter=meshauthz` gets `meshauthz`,
/// `/stats?filter=server.uptime` gets `server.uptime: <uptime>`. Returns the URL and the thread.
fn admin(meshauthz: &'static str, uptime: u64, n: usize) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Bounded in requests and in time: the thread ends after `n` answers or 10 s.
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let t = std::thread::spawn(move || {
        let mut served = 0;
        while served < n && Instant::now() < deadline {
            let mut s = match listener.accept() {
                Ok((s, _)) => s,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            served += 1;
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // Read the whole request (closing with unread bytes would reset the connection).
            let mut reader = BufReader::new(&s);
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            if first.trim_end().ends_with("HTTP/1.0") {
                // As Envoy's admin does.
                write!(
                    s,
                    "HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n"
                )
                .unwrap();
                continue;
            }
            let body = if first.contains("filter=server.uptime") {
                format!("server.uptime: {uptime}\n")
            } else if first.contains("filter=meshauthz") {
                meshauthz.to_string()
            } else {
                String::new()
            };
            // Chunked, as Envoy's admin answers HTTP/1.1.
            let (a, b) = body.split_at(body.len() / 2);
            write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                a.len(),
                b.len()
            )
            .unwrap();
        }
    });
    (url, t)
}

/// `meshauthz strict-readiness ARGS`: its exit status, standard output and standard error.
fn run(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["strict-readiness"];
    all.extend_from_slice(args);
    let out = common::run(&all);
    (out.code, out.stdout, out.stderr)
}

const LEGACY: &str = "wasmcustom.meshauthz.audited: 1
wasmcustom.meshauthz.plaintext.8080.accepted: 3
wasmcustom.meshauthz.plaintext.8080.rejected: 0
wasmcustom.meshauthz.plaintext.other.accepted: 0
wasmcustom.meshauthz.plaintext.other.rejected: 0
wasmcustom.meshauthz.rbac.allowed: 10
wasmcustom.meshauthz.rbac.denied: 2
";

const CLEAN: &str = "wasmcustom.meshauthz.plaintext.8080.accepted: 0
wasmcustom.meshauthz.plaintext.8080.rejected: 0
wasmcustom.meshauthz.plaintext.other.accepted: 0
wasmcustom.meshauthz.plaintext.other.rejected: 0
wasmcustom.meshauthz.rbac.allowed: 40
wasmcustom.meshauthz.rbac.denied: 0
";

#[test]
fn plaintext_accepted_is_not_ready_and_names_the_callers() {
    let (url, t) = admin(LEGACY, 7200, 2);
    let log = common::file(
        "access.log",
        concat!(
            r#"{"listener":"inbound_http","method":"GET","path":"/legacy","code":"200","chain":"plaintext","peer":null,"audit":"true"}"#,
            "\n",
            r#"{"listener":"inbound_http","method":"GET","path":"/hello","code":"200","chain":"mtls","peer":"spiffe://cluster.local/ns/istioinaction/sa/sleep","audit":"false"}"#,
            "\n",
            "[2026-12-03T10:00:00.000Z] GET /old 200 peer=- hint=true decision=allow src=10.0.0.7:5555 chain=plaintext\n",
        ),
    );
    let (code, out, err) = run(&["--admin", &url, "--access-log", &log, "--port", "8080"]);
    t.join().unwrap();
    assert_eq!(code, 5, "{out}{err}");
    assert!(
        out.contains("port 8080: NOT READY (plaintext accepted 3, rejected 0)"),
        "{out}"
    );
    assert!(out.contains("Envoy up 7200 s"), "{out}");
    assert!(
        out.contains("access log: 3 request(s), 2 plaintext, 2 audited"),
        "{out}"
    );
    // A caller is named by its source IP (the source port changes with each connection).
    assert!(out.contains("plaintext caller: 10.0.0.7 (1)"), "{out}");
    assert!(out.contains("plaintext caller: GET /legacy (1)"), "{out}");
}

const REPORT_ONLY: &str = "wasmcustom.meshauthz.plaintext.8080.accepted: 0
wasmcustom.meshauthz.plaintext.8080.rejected: 0
wasmcustom.meshauthz.plaintext.8080.report_only: 4
wasmcustom.meshauthz.plaintext.9000.accepted: 0
wasmcustom.meshauthz.plaintext.9000.rejected: 2
wasmcustom.meshauthz.plaintext.9000.report_only: 0
wasmcustom.meshauthz.plaintext.other.accepted: 0
wasmcustom.meshauthz.plaintext.other.rejected: 0
wasmcustom.meshauthz.plaintext.other.report_only: 0
wasmcustom.meshauthz.rbac.allowed: 30
wasmcustom.meshauthz.rbac.denied: 0
";

#[test]
fn report_only_plaintext_is_not_ready_and_names_the_callers_by_address() {
    let (url, t) = admin(REPORT_ONLY, 7200, 2);
    let log = common::file(
        "access-ro.log",
        concat!(
            r#"{"listener":"inbound_http","method":"GET","path":"/legacy","code":"200","chain":"plaintext","peer":null,"src":"10.1.2.3:40001","audit":"true"}"#,
            "\n",
            r#"{"listener":"inbound_http","method":"POST","path":"/orders","code":"200","chain":"plaintext","peer":null,"src":"10.1.2.3:40002","audit":"true"}"#,
            "\n",
            r#"{"listener":"inbound_http","method":"GET","path":"/x","code":"200","chain":"plaintext","peer":null,"src":"[fd00::7]:40003","audit":"true"}"#,
            "\n",
            r#"{"listener":"inbound_http","method":"GET","path":"/hello","code":"200","chain":"mtls","peer":"spiffe://cluster.local/ns/istioinaction/sa/sleep","src":"127.0.0.1:5000","audit":"false"}"#,
            "\n",
        ),
    );
    let (code, out, err) = run(&["--admin", &url, "--access-log", &log]);
    t.join().unwrap();
    std::fs::remove_file(&log).ok();
    assert_eq!(code, 5, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("port 8080:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.starts_with("port 8080: NOT READY (plaintext accepted 0, rejected 0, report-only 4): 4 plaintext connection(s) would have been reset since "),
        "{line}"
    );
    assert!(
        line.ends_with(
            "callers (access log): 10.1.2.3 (2: GET /legacy, POST /orders), fd00::7 (1: GET /x)"
        ),
        "{line}"
    );
    // The port that is already enforced is ready; the whole answer is not.
    assert!(
        out.contains("port 9000: READY (plaintext accepted 0, rejected 2): already STRICT"),
        "{out}"
    );
    assert!(out.contains("plaintext caller: 10.1.2.3 (2: GET /legacy, POST /orders)"));
}

#[test]
fn verdicts_ready_not_enough_data_and_json() {
    let (url, t) = admin(CLEAN, 7200, 2);
    let (code, out, _) = run(&["--admin", &url, "--port", "8080"]);
    t.join().unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("port 8080: READY"), "{out}");

    // Too young: not enough data, whatever the counters.
    let (url, t) = admin(CLEAN, 60, 2);
    let (code, out, _) = run(&["--admin", &url]);
    t.join().unwrap();
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("NOT ENOUGH DATA"), "{out}");

    // A port without counters of its own is judged by `other`, and says so; JSON.
    let (url, t) = admin(LEGACY, 7200, 2);
    let (code, out, _) = run(&["--admin", &url, "--port", "9000", "--output", "json"]);
    t.join().unwrap();
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "ready");
    assert_eq!(v["ports"][0]["port"], "9000");
    assert_eq!(v["uptimeSeconds"], 7200);
    assert_eq!(v["decided"], 12);

    // Report-only counts in JSON.
    let (url, t) = admin(REPORT_ONLY, 7200, 2);
    let (code, out, _) = run(&["--admin", &url, "--port", "8080", "--output", "json"]);
    t.join().unwrap();
    assert_eq!(code, 5, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "not ready");
    assert_eq!(v["ports"][0]["plaintextReportOnly"], 4);
    assert_eq!(v["ports"][0]["verdict"], "not ready");
}

#[test]
fn an_unreachable_admin_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (code, _, err) = run(&["--admin", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach Envoy's admin endpoint"), "{err}");
    let (code, _, _) = run(&["--admin", "127.0.0.1:9901"]);
    assert_eq!(code, 1);
}
