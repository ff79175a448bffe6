//! The timed run: `oha` (HTTP/1.1 keep-alive over mTLS with a client certificate, loopback
//! only, bounded by time) against each server, and Envoy's own counts: requests completed
//! (`/stats`) and CPU time (`/proc/<pid>/stat`, all threads) before and after.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use meshauthz_harness::certs::{CertFiles, Pki};
use meshauthz_harness::{Error, Result};
use serde_json::Value;

use crate::options::{number, Opts};
use crate::server::{url, Server};

/// One measured run of one variant.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub rps: f64,
    pub cpu_us_per_request: f64,
}

/// What one oha run reported.
struct Load {
    rps: f64,
    statuses: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

#[derive(Clone, Copy)]
enum OhaLoad {
    Requests(u64),
    Seconds(u64),
}

/// One bounded oha run against `s` with `client`'s certificate: `-z seconds` (or `-n`
/// requests on one connection), killed if it overruns by 20 s.
fn oha(o: &Opts, pki: &Pki, s: &Server, client: &CertFiles, load: OhaLoad) -> Result<Load> {
    let mut cmd = Command::new(&o.oha);
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "--http-version",
        "1.1",
    ])
    .arg("--cacert")
    .arg(&pki.ca_cert)
    .arg("--cert")
    .arg(&client.cert)
    .arg("--key")
    .arg(&client.key);
    let limit = match load {
        OhaLoad::Requests(n) => {
            cmd.args(["-n", &n.to_string(), "-c", "1"]);
            Duration::from_secs(20)
        }
        OhaLoad::Seconds(secs) => {
            cmd.args(["-z", &format!("{secs}s"), "-c", &o.connections.to_string()]);
            Duration::from_secs(secs + 20)
        }
    };
    cmd.arg(url(s))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error(format!("oha overran {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(Error(format!(
            "oha failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let counts = |key: &str| -> BTreeMap<String, u64> {
        v.get(key)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Load {
        rps: v
            .pointer("/summary/requestsPerSec")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        statuses: counts("statusCodeDistribution"),
        errors: counts("errorDistribution"),
    })
}

/// utime + stime of every thread of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| Error(format!("unexpected /proc/{pid}/stat: {stat}")))?;
    // Fields 14 and 15 (utime, stime); after the comm field, field 3 (state) is the first.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| Error(format!("unexpected /proc/{pid}/stat: {stat}")))
    };
    Ok(tick(11)? + tick(12)?)
}

fn clock_ticks_per_second() -> Result<u64> {
    static TCK: OnceLock<u64> = OnceLock::new();
    if let Some(t) = TCK.get() {
        return Ok(*t);
    }
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    let t = number(
        "getconf CLK_TCK",
        String::from_utf8_lossy(&out.stdout).trim(),
    )?;
    Ok(*TCK.get_or_init(|| t))
}

/// CPU seconds (user + system, all threads) `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    Ok(cpu_ticks(pid)? as f64 / clock_ticks_per_second()? as f64)
}

const COMPLETED: &str = "http.inbound_http.downstream_rq_completed";
const OK_2XX: &str = "http.inbound_http.downstream_rq_2xx";

/// Checks a server answers the benchmark's client 200 and a principal no policy names 403
/// (so the policies really are evaluated), then warms it up.
pub fn check_and_warm(o: &Opts, pki: &Pki, s: &Server) -> Result<()> {
    let ok = oha(o, pki, s, &s.client, OhaLoad::Requests(20))?;
    if ok.statuses.keys().ne(["200"].iter()) || !ok.errors.is_empty() {
        return Err(Error(format!(
            "{}: the benchmark request got {:?} (errors {:?}), want only 200; Envoy log:\n{}",
            s.variant.key,
            ok.statuses,
            ok.errors,
            s.envoy.log()
        )));
    }
    if s.variant.authorizes() {
        let out = oha(o, pki, s, &s.outsider, OhaLoad::Requests(2))?;
        if out.statuses.keys().ne(["403"].iter()) {
            return Err(Error(format!(
                "{}: a principal no policy names got {:?}, want 403",
                s.variant.key, out.statuses
            )));
        }
    }
    oha(o, pki, s, &s.client, OhaLoad::Seconds(1))?;
    Ok(())
}

/// One measured run: oha for `--seconds`, Envoy's completed requests and CPU around it.
pub fn measure(o: &Opts, pki: &Pki, s: &Server) -> Result<Sample> {
    let pid = s.envoy.pid();
    let (c0, ok0) = (
        s.envoy.stat_or_zero(COMPLETED)?,
        s.envoy.stat_or_zero(OK_2XX)?,
    );
    let t0 = cpu_seconds(pid)?;
    let load = oha(o, pki, s, &s.client, OhaLoad::Seconds(o.seconds))?;
    let t1 = cpu_seconds(pid)?;
    let (c1, ok1) = (
        s.envoy.stat_or_zero(COMPLETED)?,
        s.envoy.stat_or_zero(OK_2XX)?,
    );
    let requests = c1.saturating_sub(c0);
    let ok = ok1.saturating_sub(ok0);
    // The two counters are read one after the other while the requests oha abandoned at its
    // deadline (at most one per connection) may still complete: they may differ by that much,
    // in either direction, and no more (a non-2xx answer in the window fails the run).
    let in_flight = u64::from(o.connections);
    if requests == 0
        || ok.abs_diff(requests) > in_flight
        || !load.statuses.keys().all(|k| k == "200")
    {
        return Err(Error(format!(
            "{}: {requests} requests completed, {} with 2xx (oha: {:?}, errors {:?})",
            s.variant.key, ok, load.statuses, load.errors
        )));
    }
    Ok(Sample {
        rps: load.rps,
        cpu_us_per_request: (t1 - t0) * 1e6 / requests as f64,
    })
}
