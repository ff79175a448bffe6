//! `make soak`: many requests through Envoy with the module while the policy set changes every
//! few seconds (issue 11, BENCHMARKS.md "Soak"). Loopback only, bounded by a request count and a
//! time limit; stops everything it started.
//!
//! Three sidecars from the project's templates (`--concurrency 1` each):
//! - `http`: HTTP, PERMISSIVE, policies served by file-based LDS and replaced every
//!   `--update-every` seconds (each set distinct; every fifth one invalid, refused by the
//!   module, the last good set staying); ALLOW `/allow/*`, `/audit/*`; DENY `/deny/*`; AUDIT
//!   `/audit/*`; anything else matches no ALLOW rule.
//! - `strict`: HTTP, PeerAuthentication STRICT: plaintext is reset.
//! - `tcp`: TCP echo, ALLOW from 127.0.0.1.
//!
//! Clients (plaintext, the std client of `meshauthz_harness::load`): two keep-alive and one
//! short-connection client on `http` (allowed, denied, audited, unmatched in turn), one on
//! `strict` (new connection each time), one TCP client (new connection each time).
//! Every outcome is checked against the policies; a 5xx, an unexpected status, a failed
//! request, a VM restart (`wasm.*` stats) or an exited Envoy fails the run.
//! Envoy's RSS (`/proc/<pid>/status`) is sampled every second into `<out>/rss.csv`.
//!
//! Usage: `soak [--requests 1000000] [--max-seconds 1800] [--update-every 3] [--out target/soak]`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshauthz_harness::load::{tcp_exchange, HttpClient, TcpResult};
use meshauthz_harness::sidecar::{Sidecar, TCP_TEMPLATE};
use meshauthz_harness::{Error, Result};

struct Args {
    requests: u64,
    max_seconds: u64,
    update_every: u64,
    out: PathBuf,
}

fn args() -> Result<Args> {
    let mut a = Args {
        requests: 1_000_000,
        max_seconds: 1800,
        update_every: 3,
        out: PathBuf::from("target/soak"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| Error(format!("{k} needs a value")))?;
        let num = || {
            v.parse::<u64>()
                .map_err(|_| Error(format!("{k}: not a number: {v}")))
        };
        match k.as_str() {
            "--requests" => a.requests = num()?,
            "--max-seconds" => a.max_seconds = num()?,
            "--update-every" => a.update_every = num()?.max(1),
            "--out" => a.out = PathBuf::from(&v),
            _ => return Err(Error(format!("unknown argument {k}"))),
        }
    }
    Ok(a)
}

/// Policy set number `g`: the same decisions every time, but a distinct configuration (an
/// ALLOW rule for `/gen/<g>`), so that every update is a real change; every fifth one adds a
/// policy the module refuses (a port by name), so the whole set is refused and the last good
/// one stays.
fn policies(g: u64) -> String {
    let mut s = format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow, namespace: foo}}
spec:
  rules:
  - to: [{{operation: {{paths: ["/allow/*", "/audit/*", "/deny/*", "/gen/{g}"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny, namespace: foo}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/deny/*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: audit, namespace: foo}}
spec:
  action: AUDIT
  rules:
  - to: [{{operation: {{paths: ["/audit/*"]}}}}]
"#
    );
    if g % 5 == 4 {
        let _ = write!(
            s,
            r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: bad-port-{g}, namespace: foo}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{ports: ["http"]}}}}]
"#
        );
    }
    s
}

/// (path, expected status) on `http`, in turn.
const HTTP_MIX: &[(&str, u16)] = &[
    ("/allow/a", 200),
    ("/deny/a", 403),
    ("/audit/a", 200),
    ("/allow/b", 200),
    ("/other", 403),
];

#[derive(Default)]
struct Counts {
    by_outcome: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<Vec<String>>,
    total: AtomicU64,
}

impl Counts {
    fn ok(&self, what: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.by_outcome.lock() {
            *m.entry(what.to_string()).or_default() += 1;
        }
    }
    fn fail(&self, what: String) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failures.lock() {
            if f.len() < 1000 {
                f.push(what);
            }
        }
        if let Ok(mut m) = self.by_outcome.lock() {
            *m.entry("FAILED".into()).or_default() += 1;
        }
    }
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn wasm_stats(s: &Sidecar) -> Result<BTreeMap<String, u64>> {
    Ok(s.envoy
        .stats()?
        .into_iter()
        .filter(|(k, _)| k.starts_with("wasm.") || k.starts_with("wasmcustom."))
        .collect())
}

fn run() -> Result<bool> {
    let a = args()?;
    std::fs::create_dir_all(&a.out)?;
    let mut http = Sidecar::builder("soak-http")
        .dynamic_listener()
        .policies(&policies(0))
        .start()?;
    let strict = Sidecar::builder("soak-strict")
        .policies(
            r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec:
  mtls: {mode: STRICT}
"#,
        )
        .start()?;
    let tcp = Sidecar::builder("soak-tcp")
        .template(TCP_TEMPLATE)
        .tcp_app()
        .policies(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-local, namespace: foo}
spec:
  rules:
  - from: [{source: {ipBlocks: ["127.0.0.1"]}}]
"#,
        )
        .start()?;
    let stats_before = [wasm_stats(&http)?, wasm_stats(&strict)?, wasm_stats(&tcp)?];
    let pids = [http.envoy.pid(), strict.envoy.pid(), tcp.envoy.pid()];
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.max_seconds);
    let mut threads = Vec::new();

    // HTTP clients on the PERMISSIVE sidecar: two keep-alive, one short-connection.
    for (i, reuse) in [(0, true), (1, true), (2, false)] {
        let (counts, stop, port, limit) = (counts.clone(), stop.clone(), http.port, a.requests);
        threads.push(std::thread::spawn(move || {
            let mut c = HttpClient::new(port, reuse);
            let mut mix = HTTP_MIX.iter().cycle().skip(i);
            while !stop.load(Ordering::Relaxed) && counts.total.load(Ordering::Relaxed) < limit {
                let Some(&(path, want)) = mix.next() else {
                    break;
                };
                let kind = if reuse { "keep-alive" } else { "short" };
                match c.get(path, &[]) {
                    Ok(o) if o.status == want => counts.ok(&format!("http {kind} {path} {want}")),
                    Ok(o) => counts.fail(format!("http {kind} {path}: {} (want {want})", o.status)),
                    Err(f) => counts.fail(format!(
                        "http {kind} {path}: {} (reused connection: {})",
                        f.error, f.reused
                    )),
                }
            }
        }));
    }
    // Plaintext to the STRICT sidecar: refused (reset) every time, never answered.
    {
        let (counts, stop, port, limit) = (counts.clone(), stop.clone(), strict.port, a.requests);
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && counts.total.load(Ordering::Relaxed) < limit {
                let mut c = HttpClient::new(port, false);
                match c.get("/allow/a", &[]) {
                    Err(f) if !f.reused => counts.ok("strict plaintext refused"),
                    Err(f) => counts.fail(format!("strict: {}", f.error)),
                    Ok(o) => counts.fail(format!("strict plaintext answered {}", o.status)),
                }
            }
        }));
    }
    // TCP: allowed from 127.0.0.1, echoed.
    {
        let (counts, stop, port, limit) = (counts.clone(), stop.clone(), tcp.port, a.requests);
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && counts.total.load(Ordering::Relaxed) < limit {
                match tcp_exchange(port, b"meshauthz soak\n") {
                    Ok(TcpResult::Echoed) => counts.ok("tcp echoed"),
                    Ok(TcpResult::Closed) => counts.fail("tcp closed".into()),
                    Err(e) => counts.fail(format!("tcp: {e}")),
                }
            }
        }));
    }
    // RSS every second.
    let rss = {
        let (counts, stop, path) = (counts.clone(), stop.clone(), a.out.join("rss.csv"));
        std::thread::spawn(move || -> Result<()> {
            let mut csv = String::from("seconds,requests,http_kb,strict_kb,tcp_kb\n");
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{}",
                    t0.elapsed().as_secs(),
                    counts.total.load(Ordering::Relaxed),
                    rss_kb(pids[0]),
                    rss_kb(pids[1]),
                    rss_kb(pids[2])
                );
                std::fs::write(&path, &csv)?;
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(())
        })
    };

    // Policy updates on `http` until the request count or the time limit is reached.
    let (mut g, mut refused, mut last_print) = (0u64, 0u64, Instant::now());
    let mut next = Instant::now() + Duration::from_secs(a.update_every);
    while counts.total.load(Ordering::Relaxed) < a.requests && Instant::now() < deadline {
        if !threads.iter().any(|t| !t.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if Instant::now() >= next {
            g += 1;
            http.update_policies(&policies(g))?;
            if g % 5 == 4 {
                refused += 1;
            }
            next = Instant::now() + Duration::from_secs(a.update_every);
        }
        if last_print.elapsed() >= Duration::from_secs(30) {
            last_print = Instant::now();
            eprintln!(
                "soak: {:>4} s: {} requests, {g} updates, http RSS {} kB",
                started.elapsed().as_secs(),
                counts.total.load(Ordering::Relaxed),
                rss_kb(pids[0])
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join()
            .map_err(|_| Error("a client thread panicked".into()))?;
    }
    rss.join()
        .map_err(|_| Error("the sampler panicked".into()))??;
    let elapsed = started.elapsed().as_secs_f64();

    let mut report = String::new();
    let mut ok = true;
    let total = counts.total.load(Ordering::Relaxed);
    let _ = writeln!(
        report,
        "soak: {total} requests in {elapsed:.0} s ({:.0}/s), {g} policy updates every {} s ({refused} invalid, refused)",
        total as f64 / elapsed,
        a.update_every
    );
    if let Ok(m) = counts.by_outcome.lock() {
        for (k, v) in m.iter() {
            let _ = writeln!(report, "  {k}: {v}");
        }
    }
    let failures = counts
        .failures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    if !failures.is_empty() {
        ok = false;
        let _ = writeln!(report, "FAILURES (first {}):", failures.len().min(20));
        for f in failures.iter().take(20) {
            let _ = writeln!(report, "  {f}");
        }
    }
    // A changed listener brings new filter configurations: Envoy creates Wasm handles for them
    // (2 per update here, `created`) and frees the old ones (`active` stays). A VM that failed
    // (and was reloaded, FAIL_RELOAD) logs "Wasm VM failed"; any other creation is a restart.
    for (name, s, before, updates) in [
        ("http", &http, &stats_before[0], g),
        ("strict", &strict, &stats_before[1], 0),
        ("tcp", &tcp, &stats_before[2], 0),
    ] {
        let after = wasm_stats(s)?;
        let sum = |m: &BTreeMap<String, u64>, suffix: &str| {
            m.iter()
                .filter(|(k, _)| k.starts_with("wasm.") && k.ends_with(suffix))
                .map(|(_, v)| *v)
                .sum::<u64>()
        };
        let created = sum(&after, ".created").saturating_sub(sum(before, ".created"));
        let (active_before, active_after) = (sum(before, ".active"), sum(&after, ".active"));
        let failed = s.envoy.log().matches("Wasm VM failed").count();
        let _ = writeln!(
            report,
            "  {name}: Wasm VMs created during the run {created} ({updates} listener updates), active {active_before} -> {active_after}, \"Wasm VM failed\" in the log: {failed}; config_refused {}, fail_closed {}",
            s.envoy.stat_or_zero("wasmcustom.meshauthz.config_refused")?,
            s.envoy.stat_or_zero("wasmcustom.meshauthz.fail_closed")?,
        );
        if failed > 0
            || created > 2 * updates
            || active_after != active_before
            || rss_kb(s.envoy.pid()) == 0
        {
            ok = false;
            let _ = writeln!(
                report,
                "FAILURE: {name}: a Wasm VM restarted or leaked, or Envoy exited"
            );
        }
    }
    let refused_counted = http
        .envoy
        .stat_or_zero("wasmcustom.meshauthz.config_refused")?;
    if refused_counted < refused {
        ok = false;
        let _ = writeln!(
            report,
            "FAILURE: config_refused {refused_counted} < {refused} invalid updates"
        );
    }
    // RSS: after warm-up (the first tenth of the samples) the last quarter against the second.
    let csv = std::fs::read_to_string(a.out.join("rss.csv"))?;
    let rows: Vec<Vec<u64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').filter_map(|x| x.parse().ok()).collect())
        .filter(|r: &Vec<u64>| r.len() == 5)
        .collect();
    if rows.len() >= 8 {
        for (col, name) in [(2, "http"), (3, "strict"), (4, "tcp")] {
            let series: Vec<u64> = rows.iter().filter_map(|r| r.get(col).copied()).collect();
            let q = series.len() / 4;
            let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64 / 1024.0;
            let (w, early, late) = (
                series.get(series.len() / 10).copied().unwrap_or(0) as f64 / 1024.0,
                mean(series.get(q..2 * q).unwrap_or_default()),
                mean(series.get(3 * q..).unwrap_or_default()),
            );
            let max = series.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
            let _ = writeln!(
                report,
                "  {name} RSS: {w:.1} MiB after warm-up, mean {early:.1} MiB (2nd quarter) -> {late:.1} MiB (last quarter), max {max:.1} MiB"
            );
        }
    }
    let _ = writeln!(report, "  samples: {}", a.out.join("rss.csv").display());
    let _ = writeln!(report, "result: {}", if ok { "PASS" } else { "FAIL" });
    std::fs::write(a.out.join("summary.txt"), &report)?;
    print!("{report}");
    Ok(ok)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
