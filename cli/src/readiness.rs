//! `meshauthz strict-readiness`: "is it safe to switch this port to STRICT?", answered from the
//! module's counters on Envoy's admin endpoint (`wasmcustom.meshauthz.plaintext.<port>.accepted`,
//! `.rejected` and `.report_only`, `meshauthz.rbac.allowed`/`denied`, `server.uptime`) and, where
//! given, the access log (which plaintext requests, from which source addresses, which of them
//! AUDIT flagged). A plaintext connection admitted on a report-only STRICT port
//! (`meshauthz.io/strict-report-only`) is the strongest evidence: it would have been reset.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The largest admin answer read (the meshauthz stats are a few hundred bytes).
const MAX_BODY: u64 = 16 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Options<'a> {
    pub admin: &'a str,
    pub access_log: Option<&'a str>,
    pub ports: &'a [u16],
    /// Less uptime than this is "not enough data".
    pub min_uptime: u64,
    pub json: bool,
}

/// The verdict of one port.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    Ready,
    NotReady,
    NotEnoughData,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Ready => "ready",
            Verdict::NotReady => "not ready",
            Verdict::NotEnoughData => "not enough data",
        }
    }
}

/// `GET path` on an `http://host:port` admin endpoint: the body of a 200 answer.
fn get(admin: &str, path: &str) -> Result<String, String> {
    let rest = admin.strip_prefix("http://").ok_or_else(|| {
        format!("--admin {admin}: expected http://HOST:PORT (Envoy's admin address)")
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("--admin {admin}: {e}"))?
        .next()
        .ok_or_else(|| format!("--admin {admin}: no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("cannot reach Envoy's admin endpoint {admin}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        // Envoy's admin answers HTTP/1.0 with 426 Upgrade Required.
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{admin}: {e}"))?;
    let mut raw = Vec::new();
    s.take(MAX_BODY)
        .read_to_end(&mut raw)
        .map_err(|e| format!("{admin}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{admin}{path}: not an HTTP answer"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{admin}{path}: {status}"));
    }
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if chunked {
        dechunk(body).ok_or_else(|| format!("{admin}{path}: bad chunked body"))
    } else {
        Ok(body.to_string())
    }
}

/// An HTTP/1.1 chunked body, decoded.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// `name: value` lines of Envoy's `/stats` (text) into numbers.
fn parse_stats(body: &str) -> BTreeMap<String, u64> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| {
            v.trim()
                .parse::<u64>()
                .ok()
                .map(|v| (k.trim().to_string(), v))
        })
        .collect()
}

/// One port's plaintext counters (`other`: ports beyond the module's bound, or unknown).
#[derive(Default, Debug)]
struct PortCounts {
    accepted: u64,
    rejected: u64,
    /// Admitted on a report-only STRICT port: each would have been reset.
    report_only: u64,
}

/// What the access log says about plaintext and audited requests.
#[derive(Default, Debug)]
struct LogSummary {
    lines: u64,
    plaintext: u64,
    audited: u64,
    /// Caller (the source IP when the log has the source address, else `METHOD path`) to count.
    callers: BTreeMap<String, u64>,
    /// Per caller IP: up to 3 distinct `METHOD path` of its plaintext requests.
    samples: BTreeMap<String, Vec<String>>,
}

impl LogSummary {
    /// The callers, most requests first: `10.0.0.7 (3: GET /legacy, GET /x)`.
    fn callers_text(&self) -> Vec<String> {
        let mut callers: Vec<(&String, &u64)> = self.callers.iter().collect();
        callers.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        callers
            .into_iter()
            .map(|(who, n)| match self.samples.get(who) {
                Some(s) if !s.is_empty() => format!("{who} ({n}: {})", s.join(", ")),
                _ => format!("{who} ({n})"),
            })
            .collect()
    }
}

/// The IP of `ip:port` (`[v6]:port`), or the text as it is.
fn source_ip(src: &str) -> String {
    match src.parse::<std::net::SocketAddr>() {
        Ok(sa) => sa.ip().to_string(),
        Err(_) => src.to_string(),
    }
}

/// Reads the access log: the templates' JSON lines (`chain`, `peer`, `src`, `audit`, `method`,
/// `path`; `source` is read as `src`) or the `render` text format (`peer=`, `hint=`, `src=`,
/// `chain=`). A request is plaintext when its chain is `plaintext` or it has no peer identity.
fn read_log(path: &str) -> Result<LogSummary, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--access-log {path}: {e}"))?;
    let mut s = LogSummary::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        s.lines += 1;
        let fields: BTreeMap<String, String> = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => o
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect(),
            _ => line
                .split_whitespace()
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
        let peer = get("peer");
        let chain = get("chain");
        let plaintext = chain == "plaintext" || peer.is_empty() || peer == "-";
        let audited = get("audit") == "true" || get("hint") == "true";
        if audited {
            s.audited += 1;
        }
        if plaintext {
            s.plaintext += 1;
            let src = [get("src"), get("source")]
                .into_iter()
                .find(|v| !v.is_empty() && *v != "-")
                .map(source_ip);
            let (m, p) = (get("method"), get("path"));
            let request = if m.is_empty() && p.is_empty() {
                None
            } else {
                Some(format!("{m} {p}"))
            };
            let who = match (&src, &request) {
                (Some(ip), _) => ip.clone(),
                (None, Some(r)) => r.clone(),
                (None, None) => line.chars().take(80).collect(),
            };
            if let (Some(ip), Some(r)) = (&src, request) {
                let samples = s.samples.entry(ip.clone()).or_default();
                if samples.len() < 3 && !samples.contains(&r) {
                    samples.push(r);
                }
            }
            *s.callers.entry(who).or_default() += 1;
        }
    }
    Ok(s)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (the engine's timestamp writer).
fn utc(secs: u64) -> String {
    policy_engine::Timestamp {
        seconds: i64::try_from(secs).unwrap_or(i64::MAX),
        nanos: 0,
    }
    .to_string()
}

/// Runs the command; `Ok(verdict)` is the worst verdict over the ports.
pub fn run(o: &Options<'_>) -> Result<Verdict, String> {
    let stats = parse_stats(&get(o.admin, "/stats?filter=meshauthz")?);
    let server = parse_stats(&get(o.admin, "/stats?filter=server.uptime")?);
    let uptime = server.get("server.uptime").copied();
    let log = o.access_log.map(read_log).transpose()?;

    let mut ports: BTreeMap<String, PortCounts> = BTreeMap::new();
    for (name, v) in &stats {
        let Some(rest) = name.strip_prefix("wasmcustom.meshauthz.plaintext.") else {
            continue;
        };
        let Some((port, outcome)) = rest.rsplit_once('.') else {
            continue;
        };
        let entry = ports.entry(port.to_string()).or_default();
        match outcome {
            "accepted" => entry.accepted = *v,
            "rejected" => entry.rejected = *v,
            "report_only" => entry.report_only = *v,
            _ => {}
        }
    }
    if ports.is_empty() {
        return Err(format!(
            "{}: no wasmcustom.meshauthz.plaintext.* counters: is meshauthz_net configured on this Envoy?",
            o.admin
        ));
    }
    let decided = stats
        .get("wasmcustom.meshauthz.rbac.allowed")
        .copied()
        .unwrap_or(0)
        + stats
            .get("wasmcustom.meshauthz.rbac.denied")
            .copied()
            .unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let since = uptime.map(|u| utc(now.saturating_sub(u)));

    // The ports asked about, each to its own counters or to `other`.
    let selected: Vec<(String, &str)> = if o.ports.is_empty() {
        ports.keys().map(|p| (p.clone(), p.as_str())).collect()
    } else {
        o.ports
            .iter()
            .map(|p| {
                let key = p.to_string();
                let counted = if ports.contains_key(&key) {
                    ports
                        .get_key_value(&key)
                        .map_or("other", |(k, _)| k.as_str())
                } else {
                    "other"
                };
                (key, counted)
            })
            .collect()
    };

    let callers = log.as_ref().map(LogSummary::callers_text);
    let callers_clause = match &callers {
        Some(c) if c.len() > 5 => format!(
            "; callers (access log): {}, and {} more",
            c.get(..5).unwrap_or_default().join(", "),
            c.len() - 5
        ),
        Some(c) if !c.is_empty() => format!("; callers (access log): {}", c.join(", ")),
        Some(_) => "; the access log names no plaintext caller".to_string(),
        None => "; give --access-log to name the callers".to_string(),
    };
    let since_text = since
        .as_deref()
        .map_or_else(|| "Envoy started".to_string(), str::to_string);
    let mut worst = Verdict::Ready;
    let mut results = Vec::new();
    for (port, counted) in &selected {
        let zero = PortCounts::default();
        let c = ports.get(*counted).unwrap_or(&zero);
        let (accepted, rejected, report_only) = (c.accepted, c.rejected, c.report_only);
        let shared = *counted == "other";
        let scope = if shared {
            format!("port {port}: counted with the ports without counters of their own (plaintext.other)")
        } else {
            format!("port {port}")
        };
        let (verdict, reason) = if report_only > 0 {
            (
                Verdict::NotReady,
                format!(
                    "{report_only} plaintext connection(s) would have been reset since {since_text} (report-only STRICT admitted them){}{callers_clause}",
                    if accepted > 0 {
                        format!(", and {accepted} accepted on PERMISSIVE")
                    } else {
                        String::new()
                    }
                ),
            )
        } else if accepted > 0 {
            (
                Verdict::NotReady,
                format!("{accepted} plaintext connection(s)/request(s) accepted since {since_text}: these callers would be reset under STRICT{callers_clause}"),
            )
        } else if uptime.is_none_or(|u| u < o.min_uptime) {
            (
                Verdict::NotEnoughData,
                format!(
                    "Envoy has counted for {} s only (less than --min-uptime {} s)",
                    uptime.unwrap_or(0),
                    o.min_uptime
                ),
            )
        } else if decided == 0 && rejected == 0 {
            (
                Verdict::NotEnoughData,
                "no request or connection decided yet: no evidence either way".to_string(),
            )
        } else if rejected > 0 {
            (
                Verdict::Ready,
                format!("already STRICT: {rejected} plaintext connection(s) reset, none accepted"),
            )
        } else {
            (
                Verdict::Ready,
                format!("no plaintext accepted, {decided} requests/connections decided"),
            )
        };
        worst = match (worst, verdict) {
            (Verdict::NotReady, _) | (_, Verdict::NotReady) => Verdict::NotReady,
            (Verdict::NotEnoughData, _) | (_, Verdict::NotEnoughData) => Verdict::NotEnoughData,
            _ => Verdict::Ready,
        };
        results.push((
            port.clone(),
            scope,
            accepted,
            rejected,
            report_only,
            verdict,
            reason,
        ));
    }

    if o.json {
        let v = json!({
            "admin": o.admin,
            "uptimeSeconds": uptime,
            "since": since,
            "decided": decided,
            "verdict": worst.as_str(),
            "ports": results.iter().map(|(port, _, a, r, ro, v, why)| json!({
                "port": port, "plaintextAccepted": a, "plaintextRejected": r,
                "plaintextReportOnly": ro,
                "verdict": v.as_str(), "reason": why,
            })).collect::<Vec<_>>(),
            "accessLog": log.as_ref().map(|l| json!({
                "lines": l.lines, "plaintext": l.plaintext, "audited": l.audited, "callers": l.callers,
                "requests": l.samples,
            })),
        });
        println!("{v}");
        return Ok(worst);
    }
    match &since {
        Some(s) => println!(
            "counters since {s} (Envoy up {} s); {decided} requests/connections decided",
            uptime.unwrap_or(0)
        ),
        None => println!("Envoy's uptime is unknown; {decided} requests/connections decided"),
    }
    for (_, scope, accepted, rejected, report_only, verdict, reason) in &results {
        let report_only = if *report_only > 0 {
            format!(", report-only {report_only}")
        } else {
            String::new()
        };
        println!(
            "{scope}: {} (plaintext accepted {accepted}, rejected {rejected}{report_only}): {reason}",
            verdict.as_str().to_uppercase()
        );
    }
    if let (Some(l), Some(callers)) = (&log, &callers) {
        println!(
            "access log: {} request(s), {} plaintext, {} audited (access_log_hint=true)",
            l.lines, l.plaintext, l.audited
        );
        for who in callers.iter().take(20) {
            println!("  plaintext caller: {who}");
        }
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::{dechunk, utc};

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk("5\r\nhello\r\n7\r\n world\n\r\n0\r\n\r\n").as_deref(),
            Some("hello world\n")
        );
        assert_eq!(dechunk("5\r\nhel"), None);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_300_000), "2026-12-03T12:13:20Z");
    }
}
