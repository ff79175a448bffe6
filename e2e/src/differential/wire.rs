//! Sending the probes: HTTP with one `curl` per (listener, peer) reusing its connection across
//! the requests (`--next`), TCP connections one at a time (plaintext with a socket, mTLS with
//! `openssl s_client`). Every call is bounded in time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::probe::{Listener, Peer, Probe};
use meshauthz_harness::certs::CertFiles;
use meshauthz_harness::client::{s_client_echo, TcpOutcome};
use meshauthz_harness::{Error, Result};

/// The per-request and per-connection time limit.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the HTTP client saw for one probe.
#[derive(Clone, Debug)]
pub struct HttpSeen {
    /// The HTTP status (0 when curl got no response).
    pub status: u16,
}

/// What the TCP client saw for one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpSeen {
    /// The payload came back through Envoy.
    Echoed,
    /// The connection was closed or reset before the payload came back.
    Closed(String),
    /// Nothing happened within the time limit.
    Timeout,
}

/// Send every HTTP probe. Returns the status per probe id.
pub fn send_http(
    probes: &[Probe],
    listeners: &[Listener],
    certs: &BTreeMap<String, CertFiles>,
) -> Result<BTreeMap<u32, HttpSeen>> {
    // Group by (listener, peer), keeping the first-seen order.
    let mut groups: Vec<((usize, Peer), Vec<&Probe>)> = Vec::new();
    for p in probes.iter().filter(|p| p.http.is_some()) {
        let key = (p.listener, p.peer.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(p),
            None => groups.push((key, vec![p])),
        }
    }
    let mut out = BTreeMap::new();
    for ((listener, peer), group) in groups {
        let port = listeners
            .get(listener)
            .map(|l| l.port)
            .ok_or_else(|| Error(format!("no listener {listener}")))?;
        let mut cmd = Command::new("curl");
        for (i, p) in group.iter().enumerate() {
            let Some(req) = &p.http else { continue };
            if i > 0 {
                cmd.arg("--next");
            }
            cmd.args(["-sS", "-g", "--path-as-is", "--http1.1"])
                .args(["--max-time", "5", "--connect-timeout", "3"])
                .args(["-o", "/dev/null", "-w", "%{http_code}\\n"]);
            if req.method == "HEAD" {
                cmd.arg("-I");
            } else {
                cmd.args(["-X", &req.method]);
            }
            cmd.arg("-H").arg(format!("Host: {}", req.host));
            cmd.arg("-H").arg(format!("x-diff-id: {}", p.id));
            for (k, v) in &req.headers {
                if v.is_empty() {
                    cmd.arg("-H").arg(format!("{k};"));
                } else {
                    cmd.arg("-H").arg(format!("{k}: {v}"));
                }
            }
            let url = match &peer {
                Peer::Plaintext => format!("http://127.0.0.1:{port}{}", req.path),
                Peer::Mtls { identity, sni } => {
                    let cert = certs
                        .get(identity)
                        .ok_or_else(|| Error(format!("no certificate for {identity}")))?;
                    // The server certificate is not checked (-k): what matters is the client
                    // certificate Envoy verifies and the SNI the client sends.
                    cmd.arg("-k")
                        .arg("--cert")
                        .arg(&cert.cert)
                        .arg("--key")
                        .arg(&cert.key);
                    if sni.is_empty() {
                        // An IP address in the URL: curl sends no SNI.
                        format!("https://127.0.0.1:{port}{}", req.path)
                    } else {
                        cmd.arg("--resolve").arg(format!("{sni}:{port}:127.0.0.1"));
                        format!("https://{sni}:{port}{}", req.path)
                    }
                }
            };
            cmd.arg(url);
        }
        let output = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error(format!("cannot run curl: {e}")))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let codes: Vec<u16> = stdout
            .lines()
            .map(|l| l.trim().parse::<u16>().unwrap_or(0))
            .collect();
        for (i, p) in group.iter().enumerate() {
            let status = codes.get(i).copied().unwrap_or(0);
            out.insert(p.id, HttpSeen { status });
        }
    }
    Ok(out)
}

/// Send one TCP probe; returns what the client saw and, for plaintext, the client's port (the
/// access log's `remote_port`).
pub fn send_tcp(
    probe: &Probe,
    listeners: &[Listener],
    certs: &BTreeMap<String, CertFiles>,
) -> Result<(TcpSeen, Option<u16>)> {
    let port = listeners
        .get(probe.listener)
        .map(|l| l.port)
        .ok_or_else(|| Error(format!("no listener {}", probe.listener)))?;
    let payload = format!("diff-probe-{}\n", probe.id);
    match &probe.peer {
        Peer::Plaintext => {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            let local = s.local_addr()?.port();
            s.set_read_timeout(Some(PROBE_TIMEOUT))?;
            s.set_write_timeout(Some(PROBE_TIMEOUT))?;
            if let Err(e) = s.write_all(payload.as_bytes()) {
                return Ok((TcpSeen::Closed(e.to_string()), Some(local)));
            }
            let deadline = Instant::now() + PROBE_TIMEOUT;
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while Instant::now() < deadline {
                match s.read(&mut buf) {
                    Ok(0) => return Ok((TcpSeen::Closed("EOF".into()), Some(local))),
                    Ok(n) => {
                        got.extend_from_slice(buf.get(..n).unwrap_or_default());
                        if got.ends_with(payload.as_bytes()) {
                            return Ok((TcpSeen::Echoed, Some(local)));
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Ok((TcpSeen::Timeout, Some(local)))
                    }
                    Err(e) => return Ok((TcpSeen::Closed(e.to_string()), Some(local))),
                }
            }
            Ok((TcpSeen::Timeout, Some(local)))
        }
        Peer::Mtls { identity, sni } => {
            let cert = certs
                .get(identity)
                .ok_or_else(|| Error(format!("no certificate for {identity}")))?;
            Ok((tls_echo(port, sni, cert, payload.as_bytes())?, None))
        }
    }
}

/// mTLS echo through `openssl s_client` with the given SNI (none when empty); the server certificate is not
/// verified (what matters is the client certificate Envoy verifies).
fn tls_echo(port: u16, sni: &str, cert: &CertFiles, payload: &[u8]) -> Result<TcpSeen> {
    let sni_args = if sni.is_empty() {
        vec!["-noservername"]
    } else {
        vec!["-servername", sni]
    };
    let (outcome, _stderr) = s_client_echo(port, sni_args, cert, payload, PROBE_TIMEOUT)?;
    Ok(match outcome {
        TcpOutcome::Echoed => TcpSeen::Echoed,
        TcpOutcome::Closed(read) => TcpSeen::Closed(read),
        TcpOutcome::Reset => TcpSeen::Closed("connection reset".into()),
        TcpOutcome::Timeout => TcpSeen::Timeout,
    })
}
