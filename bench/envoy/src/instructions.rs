//! `make bench-instructions`: instructions per request under callgrind, a figure that does not
//! move with the machine's load (repeatable to about 0.2 % run to run here), unlike time.
//!
//! Each variant's Envoy runs under `valgrind --tool=callgrind --instr-atstart=no` (start-up
//! uninstrumented: about 40 s to ready with the module instead of 6-10 minutes instrumented).
//! After the checks (200 for the benchmark client, 403 for a principal no policy names) and
//! `--warmup` requests, `callgrind_control -i on` opens the window, `--requests` requests go over
//! `--connections` keep-alive HTTP/1.1 connections (one `curl` each, mTLS with the client's
//! certificate, 127.0.0.1 only), `callgrind_control -i off` closes it and `-d` dumps the counts.
//! Instructions of the whole Envoy process (every thread) in the window, divided by the
//! requests Envoy completed in it (`/stats`, read outside the window; all 2xx, on exactly
//! `--connections` new connections). V8's generated code is counted like any other code:
//! valgrind's default `--smc-check=all-non-file` on x86-64 retranslates code written at run time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshauthz_harness::certs::{CertFiles, Pki};
use meshauthz_harness::{Error, Result};

use crate::options::Opts;
use crate::report::Counted;
use crate::server::{url, Server};

/// How long an Envoy under valgrind may take to become ready (10,000 policies: minutes).
pub const READY_TIMEOUT: Duration = Duration::from_secs(1200);

/// The command prefix that runs a variant's Envoy under callgrind, writing its counts and its
/// log into `dir`.
pub fn launcher(dir: &Path, key: &str) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--instr-atstart=no".into(),
        format!("--callgrind-out-file={}", out_file(dir, key).display()),
        format!(
            "--log-file={}",
            dir.join(format!("{key}.valgrind.log")).display()
        ),
    ]
}

fn out_file(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.callgrind"))
}

/// `callgrind_control ARGS PID`.
fn control(args: &[&str], pid: u32) -> Result<()> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not detected") {
        return Err(Error(format!(
            "callgrind_control {args:?} {pid} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// `total` requests for `s`'s URL over `connections` curl processes (each one keep-alive
/// HTTP/1.1 connection), bounded by `limit`; returns every response's status code.
fn curl(
    dir: &Path,
    pki: &Pki,
    s: &Server,
    client: &CertFiles,
    total: u64,
    connections: u32,
    limit: Duration,
) -> Result<Vec<String>> {
    let connections = u64::from(connections).min(total.max(1));
    let mut children: Vec<Child> = Vec::new();
    let mut spawn = || -> Result<()> {
        for c in 0..connections {
            let n = total / connections + u64::from(c < total % connections);
            let file = dir.join(format!("{}-curl-{c}.conf", s.variant.key));
            let line = format!(
                "url = \"{}\"\noutput = \"/dev/null\"\nwrite-out = \"%{{http_code}}\\n\"\n",
                url(s)
            );
            std::fs::write(&file, line.repeat(usize::try_from(n).unwrap_or(0)))?;
            children.push(
                Command::new("curl")
                    .args(["--silent", "--http1.1", "--max-time", "120"])
                    .arg("--cacert")
                    .arg(&pki.ca_cert)
                    .arg("--cert")
                    .arg(&client.cert)
                    .arg("--key")
                    .arg(&client.key)
                    .arg("--config")
                    .arg(&file)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
        Ok(())
    };
    let spawned = spawn();
    let deadline = Instant::now() + limit;
    let mut codes = Vec::new();
    let mut failure = spawned.err();
    for mut child in children {
        while failure.is_none() && child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                failure = Some(Error(format!("curl overran {limit:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if failure.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            continue;
        }
        let out = child.wait_with_output()?;
        codes.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(codes),
    }
}

fn all(codes: &[String], want: &str) -> bool {
    !codes.is_empty() && codes.iter().all(|c| c == want)
}

const COMPLETED: &str = "http.inbound_http.downstream_rq_completed";
const OK_2XX: &str = "http.inbound_http.downstream_rq_2xx";
const CONNECTIONS: &str = "http.inbound_http.downstream_cx_total";

/// Check, warm up and count one started server.
pub fn count(o: &Opts, dir: &Path, pki: &Pki, s: &Server) -> Result<Counted> {
    let key = &s.variant.key;
    let slow = Duration::from_secs(900);
    let ok = curl(dir, pki, s, &s.client, 4, 1, slow)?;
    if !all(&ok, "200") {
        return Err(Error(format!(
            "{key}: the benchmark request got {ok:?}, want only 200; Envoy log:\n{}",
            s.envoy.log()
        )));
    }
    if s.variant.authorizes() {
        let denied = curl(dir, pki, s, &s.outsider, 2, 1, slow)?;
        if !all(&denied, "403") {
            return Err(Error(format!(
                "{key}: a principal no policy names got {denied:?}, want 403"
            )));
        }
    }
    curl(dir, pki, s, &s.client, o.warmup, o.connections, slow)?;
    let pid = s.envoy.pid();
    let (c0, ok0, cx0) = (
        s.envoy.stat_or_zero(COMPLETED)?,
        s.envoy.stat_or_zero(OK_2XX)?,
        s.envoy.stat_or_zero(CONNECTIONS)?,
    );
    control(&["-i", "on"], pid)?;
    let window = curl(dir, pki, s, &s.client, o.requests, o.connections, slow);
    control(&["-i", "off"], pid)?;
    control(&["-d"], pid)?;
    let window = window?;
    let (c1, ok1, cx1) = (
        s.envoy.stat_or_zero(COMPLETED)?,
        s.envoy.stat_or_zero(OK_2XX)?,
        s.envoy.stat_or_zero(CONNECTIONS)?,
    );
    let requests = c1.saturating_sub(c0);
    let connections = cx1.saturating_sub(cx0);
    if requests != o.requests
        || ok1.saturating_sub(ok0) != requests
        || !all(&window, "200")
        || connections != u64::from(o.connections)
    {
        return Err(Error(format!(
            "{key}: in the window Envoy completed {requests} requests ({} 2xx) on {connections} connections; want {} 2xx on {}",
            ok1.saturating_sub(ok0),
            o.requests,
            o.connections
        )));
    }
    let instructions = dumped_instructions(&out_file(dir, key))?;
    Ok(Counted {
        requests,
        instructions,
        ready_s: s.started.ready_s,
    })
}

/// The instruction total of the newest dump `<base>.<n>` (callgrind numbers its dumps).
fn dumped_instructions(base: &Path) -> Result<u64> {
    let dir = base.parent().unwrap_or(Path::new("."));
    let stem = base
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    // The dump may reach the disk a moment after callgrind_control returns.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut dumps: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let n = name.strip_prefix(&format!("{stem}."))?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        dumps.sort();
        if let Some((_, path)) = dumps.last() {
            let text = std::fs::read_to_string(path)?;
            if let Some(total) = totals(&text) {
                return Ok(total);
            }
        }
        if Instant::now() > deadline {
            return Err(Error(format!(
                "no callgrind dump with totals next to {}",
                base.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `totals:` line of a callgrind dump (one event: Ir).
fn totals(dump: &str) -> Option<u64> {
    dump.lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_come_from_the_dump_trailer() {
        let dump = "# callgrind format\nversion: 1\nevents: Ir\nfl=(1)\n0x1 3\nsummary: 0\n\ntotals: 212275640\n";
        assert_eq!(totals(dump), Some(212_275_640));
        assert_eq!(totals("events: Ir\n"), None);
    }
}
