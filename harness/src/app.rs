//! Upstream applications behind Envoy, on 127.0.0.1 ephemeral ports, a thread per connection.
//!
//! - [`HttpEcho`]: HTTP/1.1 (keep-alive) answering every request with 200 and a JSON body
//!   `{"method", "path", "headers": {lower-case name: value}}` so tests can see what Envoy forwarded
//!   (e.g. `x-forwarded-client-cert`).
//! - [`TcpEcho`]: writes back every byte it reads.
//!
//! Both count what reached them, so a test can assert a denied request never got to the app.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{err, Result};

/// Idle time after which a connection thread gives up.
const IDLE: Duration = Duration::from_secs(20);

struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: fn(TcpStream, &AtomicU64)) -> Result<Server> {
        Server::serve(TcpListener::bind("127.0.0.1:0")?, handler)
    }

    fn serve(listener: TcpListener, handler: fn(TcpStream, &AtomicU64)) -> Result<Server> {
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let (stop2, hits2) = (stop.clone(), hits.clone());
        let accept = std::thread::Builder::new()
            .name(format!("app-{port}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let hits = hits2.clone();
                    let _ = std::thread::Builder::new()
                        .name(format!("app-{port}-conn"))
                        .spawn(move || {
                            let _ = conn.set_read_timeout(Some(IDLE));
                            let _ = conn.set_write_timeout(Some(IDLE));
                            handler(conn, &hits);
                        });
                }
            })?;
        Ok(Server {
            port,
            stop,
            hits,
            accept: Some(accept),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// The HTTP echo application.
pub struct HttpEcho(Server);

impl HttpEcho {
    /// Listen on `127.0.0.1:<ephemeral>`.
    pub fn start() -> Result<HttpEcho> {
        Ok(HttpEcho(Server::start(serve_http)?))
    }

    /// Listen on 127.0.0.1:`port` (the sandbox's fixed application port).
    pub fn start_on(port: u16) -> Result<HttpEcho> {
        Ok(HttpEcho(Server::serve(
            TcpListener::bind(("127.0.0.1", port))?,
            serve_http,
        )?))
    }

    /// The port it listens on (Envoy's `{{APP_PORT}}`).
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// How many HTTP requests reached the application.
    pub fn requests(&self) -> u64 {
        self.0.hits.load(Ordering::SeqCst)
    }
}

/// The TCP echo application.
pub struct TcpEcho(Server);

impl TcpEcho {
    /// Listen on `127.0.0.1:<ephemeral>`.
    pub fn start() -> Result<TcpEcho> {
        Ok(TcpEcho(Server::start(serve_tcp)?))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// How many connections reached the application.
    pub fn connections(&self) -> u64 {
        self.0.hits.load(Ordering::SeqCst)
    }
}

fn serve_tcp(mut conn: TcpStream, hits: &AtomicU64) {
    hits.fetch_add(1, Ordering::SeqCst);
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let Some(chunk) = buf.get(..n) else { break };
                if conn.write_all(chunk).is_err() {
                    break;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Both);
}

fn serve_http(conn: TcpStream, hits: &AtomicU64) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Ok(Some(req)) = read_request(&mut reader) {
        hits.fetch_add(1, Ordering::SeqCst);
        let close = req
            .headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let body = serde_json::json!({
            "method": req.method,
            "path": req.path,
            "headers": req.headers,
        })
        .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{}",
            body.len(),
            if close { "connection: close\r\n" } else { "" },
            body
        );
        if writer.write_all(resp.as_bytes()).is_err() || close {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
}

fn read_line(r: &mut BufReader<TcpStream>) -> Result<Option<String>> {
    let mut line = String::new();
    let n = r.by_ref().take(16 * 1024).read_line(&mut line)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

fn read_request(r: &mut BufReader<TcpStream>) -> Result<Option<Request>> {
    let Some(start) = read_line(r)? else {
        return Ok(None);
    };
    let mut parts = start.split(' ');
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return err(format!("bad request line {start:?}"));
    };
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..200 {
        let Some(line) = read_line(r)? else {
            return err("connection closed inside headers");
        };
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return err(format!("bad header line {line:?}"));
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        headers
            .entry(name)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    // Bodies: content-length or chunked; read and drop.
    if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::io::copy(&mut r.by_ref().take(len), &mut std::io::sink())?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let Some(size_line) = read_line(r)? else {
                return err("connection closed inside a chunked body");
            };
            let size = u64::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|e| crate::Error(format!("bad chunk size {size_line:?}: {e}")))?;
            std::io::copy(&mut r.by_ref().take(size), &mut std::io::sink())?;
            let _ = read_line(r)?; // CRLF after the chunk (or the end of trailers)
            if size == 0 {
                break;
            }
        }
    }
    Ok(Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        headers,
    }))
}
