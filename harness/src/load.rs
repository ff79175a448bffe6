//! A small plaintext HTTP/1.1 and TCP load client for the live-update test and the soak
//! (`curl` per request is too slow for a million requests). Loopback only; every call is bounded
//! by a read/write timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{Error, Result};

/// Per-call I/O bound.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP response as the load client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpOutcome {
    /// The status code.
    pub status: u16,
    /// The server asked to close the connection (`connection: close`), e.g. a draining listener.
    pub close: bool,
}

/// A connection sending `GET`s one after another (keep-alive), reconnecting when the server
/// closes it with `connection: close`. `reuse: false` opens a new connection for every request.
pub struct HttpClient {
    addr: SocketAddr,
    reuse: bool,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened so far.
    pub connections: u64,
}

/// Why a request failed (anything but a complete HTTP response).
#[derive(Debug)]
pub struct Failure {
    /// The connection had already carried a request (keep-alive) when it failed.
    pub reused: bool,
    /// What happened.
    pub error: Error,
}

impl HttpClient {
    /// A client for `127.0.0.1:port`.
    pub fn new(port: u16, reuse: bool) -> HttpClient {
        HttpClient {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            reuse,
            conn: None,
            connections: 0,
        }
    }

    fn connect(&mut self) -> Result<BufReader<TcpStream>> {
        let s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.set_nodelay(true)?;
        self.connections += 1;
        Ok(BufReader::new(s))
    }

    /// `GET path` with `headers`; the whole response is read.
    pub fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::result::Result<HttpOutcome, Failure> {
        let (mut conn, reused) = match self.conn.take() {
            Some(c) => (c, true),
            None => (
                self.connect().map_err(|error| Failure {
                    reused: false,
                    error,
                })?,
                false,
            ),
        };
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: meshauthz\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.reuse {
            req.push_str("connection: close\r\n");
        }
        req.push_str("\r\n");
        let res = conn
            .get_mut()
            .write_all(req.as_bytes())
            .map_err(Error::from)
            .and_then(|()| read_response(&mut conn));
        match res {
            Ok(out) => {
                if self.reuse && !out.close {
                    self.conn = Some(conn);
                }
                Ok(out)
            }
            Err(error) => Err(Failure { reused, error }),
        }
    }
}

fn read_response(r: &mut BufReader<TcpStream>) -> Result<HttpOutcome> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(Error("connection closed before a response".into()));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Error(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(Error("connection closed in the headers".into()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => length = v.parse::<u64>().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v.contains("close"),
                _ => {}
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| Error(format!("bad chunk size {line:?}")))?;
            std::io::copy(&mut r.by_ref().take(size + 2), &mut std::io::sink())?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        let got = std::io::copy(&mut r.by_ref().take(n), &mut std::io::sink())?;
        if got != n {
            return Err(Error("connection closed in the body".into()));
        }
    }
    Ok(HttpOutcome { status, close })
}

/// What a plaintext TCP exchange gave: the echo came back, or the connection was closed / reset
/// before it (a denial at L4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpResult {
    /// The payload came back.
    Echoed,
    /// Closed or reset before the echo.
    Closed,
}

/// Send `payload` on a new connection and wait for it to come back.
pub fn tcp_exchange(port: u16, payload: &[u8]) -> Result<TcpResult> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    if s.write_all(payload).is_err() {
        return Ok(TcpResult::Closed);
    }
    let mut buf = vec![0u8; payload.len()];
    let mut got = 0;
    while got < buf.len() {
        match s.read(buf.get_mut(got..).unwrap_or_default()) {
            Ok(0) => return Ok(TcpResult::Closed),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(TcpResult::Closed)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(if buf == payload {
        TcpResult::Echoed
    } else {
        TcpResult::Closed
    })
}
