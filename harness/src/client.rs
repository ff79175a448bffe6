//! Real clients: `curl` for HTTP(S), a raw std TCP client, `openssl s_client` for mTLS TCP.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::certs::{CertFiles, Pki};
use crate::{Error, Result};

/// curl's exit code for "Failure with receiving network data" (e.g. "Connection reset by peer").
pub const CURL_RECV_ERROR: i32 = 56;
/// curl's exit code for "Empty reply from server".
pub const CURL_EMPTY_REPLY: i32 = 52;
/// curl's exit code for a TLS handshake failure.
pub const CURL_SSL_CONNECT_ERROR: i32 = 35;

/// How the client talks to Envoy.
#[derive(Clone, Debug)]
pub enum Transport {
    /// `http://127.0.0.1:<port>`.
    Plaintext,
    /// `https://localhost:<port>` (resolved to 127.0.0.1), verifying the server with `ca`,
    /// presenting `client` (or no certificate).
    Tls {
        /// CA to verify the server with.
        ca: PathBuf,
        /// Client certificate and key, if any.
        client: Option<CertFiles>,
    },
}

impl Transport {
    /// mTLS with `client`, verifying the server against the mesh CA of `pki`.
    pub fn mtls(pki: &Pki, client: &CertFiles) -> Transport {
        Transport::Tls {
            ca: pki.ca_cert.clone(),
            client: Some(client.clone()),
        }
    }
}

/// An HTTP request sent with curl.
#[derive(Clone, Debug)]
pub struct Request {
    port: u16,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    transport: Transport,
    follow: bool,
    http1: bool,
}

/// What curl saw.
#[derive(Clone, Debug)]
pub struct Response {
    /// curl's exit code (0 = a complete HTTP response was received).
    pub exit: i32,
    /// HTTP status (0 when none was received).
    pub status: u16,
    /// Response body.
    pub body: String,
    /// The HTTP version curl used (`1.1`, `2`; `0` when no response).
    pub http_version: String,
    /// Where a redirect (3xx) points, as an absolute URL (empty when none).
    pub redirect: String,
    /// curl's stderr (its error message, e.g. "Recv failure: Connection reset by peer").
    pub stderr: String,
}

impl Response {
    /// The echo app's JSON body, parsed.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .map_err(|e| Error(format!("body is not JSON ({e}): {:?}", self.body)))
    }

    /// A request header as the echo app received it (lower-case name).
    pub fn app_header(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .json()?
            .get("headers")
            .and_then(|h| h.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string))
    }
}

impl Request {
    /// `GET <path>` to Envoy's listener on `port`.
    pub fn get(port: u16, path: &str, transport: Transport) -> Request {
        Request {
            port,
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            transport,
            follow: false,
            http1: false,
        }
    }

    /// Change the method.
    pub fn method(mut self, method: &str) -> Request {
        self.method = method.into();
        self
    }

    /// Add a request header (`Host` replaces curl's own).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Follow redirects (at most 3), as a browser would.
    pub fn follow_redirects(mut self) -> Request {
        self.follow = true;
        self
    }

    /// Force HTTP/1.1 (over TLS curl otherwise negotiates HTTP/2 through ALPN).
    pub fn http1(mut self) -> Request {
        self.http1 = true;
        self
    }

    /// curl with everything but the output options and the URL; returns the URL prefix
    /// (`scheme://host:port`).
    fn command(&self) -> (Command, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--path-as-is",
            "--max-time",
            "10",
            "--connect-timeout",
            "5",
        ])
        .args(["-X", &self.method]);
        if self.http1 {
            cmd.arg("--http1.1");
        }
        if self.follow {
            cmd.args(["-L", "--max-redirs", "3"]);
        }
        for (k, v) in &self.headers {
            cmd.arg("-H").arg(format!("{k}: {v}"));
        }
        let base = match &self.transport {
            Transport::Plaintext => format!("http://127.0.0.1:{}", self.port),
            Transport::Tls { ca, client } => {
                cmd.arg("--resolve")
                    .arg(format!("localhost:{}:127.0.0.1", self.port))
                    .arg("--cacert")
                    .arg(ca);
                if let Some(c) = client {
                    cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
                }
                format!("https://localhost:{}", self.port)
            }
        };
        cmd.stdin(Stdio::null());
        (cmd, base)
    }

    /// This request's options for each of `paths` in turn, in ONE curl run: curl reuses its
    /// connection (HTTP/1.1 keep-alive, or one HTTP/2 connection), so each request is decided
    /// on a connection that already carried the previous ones. Returns, per path, the status and
    /// how many new connections curl opened for it (0 = reused).
    pub fn send_sequence(&self, paths: &[&str]) -> Result<Vec<(u16, u32)>> {
        let (mut cmd, base) = self.command();
        for p in paths {
            cmd.args(["-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n"])
                .arg(format!("{base}{p}"));
        }
        let out = cmd
            .output()
            .map_err(|e| Error(format!("cannot run curl: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let got: Vec<(u16, u32)> = stdout
            .lines()
            .filter_map(|l| {
                let (c, n) = l.split_once(' ')?;
                Some((c.parse().ok()?, n.parse().ok()?))
            })
            .collect();
        if got.len() != paths.len() {
            return Err(Error(format!(
                "curl answered {} of {} requests: {stdout} {}",
                got.len(),
                paths.len(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(got)
    }

    /// Run curl (bounded: 10 s per request) and capture what it saw. The path is sent as is
    /// (`--path-as-is`), so `/./admin` reaches Envoy unnormalized.
    pub fn send(&self) -> Result<Response> {
        let (mut cmd, base) = self.command();
        cmd.args([
            "-o",
            "-",
            "-w",
            "\n%{http_version}\n%{redirect_url}\n%{http_code}",
        ]);
        let url = format!("{base}{}", self.path);
        cmd.arg(&url);
        let out = cmd
            .output()
            .map_err(|e| Error(format!("cannot run curl: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let (rest, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        let (rest, redirect) = rest.rsplit_once('\n').unwrap_or(("", rest));
        let (body, version) = rest.rsplit_once('\n').unwrap_or(("", rest));
        Ok(Response {
            exit: out.status.code().unwrap_or(-1),
            status: code.trim().parse().unwrap_or(0),
            redirect: redirect.to_string(),
            http_version: version.to_string(),
            body: body.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        })
    }
}

/// What a TCP client saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpOutcome {
    /// The payload came back (the echo app answered through Envoy).
    Echoed,
    /// The connection was reset (RST).
    Reset,
    /// The connection was closed (FIN) or the handshake failed without the payload coming back.
    Closed(String),
    /// Nothing happened within the timeout.
    Timeout,
}

/// Plaintext TCP: connect to 127.0.0.1:`port`, send `payload`, wait (bounded) for it to come back.
pub fn tcp_echo(port: u16, payload: &[u8], timeout: Duration) -> Result<TcpOutcome> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    if let Err(e) = s.write_all(payload) {
        return Ok(classify_io(&e));
    }
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Ok(TcpOutcome::Closed(String::from_utf8_lossy(&got).into())),
            Ok(n) => {
                got.extend_from_slice(buf.get(..n).unwrap_or_default());
                if got.windows(payload.len()).any(|w| w == payload) {
                    return Ok(TcpOutcome::Echoed);
                }
            }
            Err(e) => return Ok(classify_io(&e)),
        }
    }
    Ok(TcpOutcome::Timeout)
}

fn classify_io(e: &std::io::Error) -> TcpOutcome {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => TcpOutcome::Reset,
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => TcpOutcome::Timeout,
        _ => TcpOutcome::Closed(e.to_string()),
    }
}

/// mTLS TCP with `openssl s_client`: connect to 127.0.0.1:`port` presenting `client`, verify the
/// server with `pki`'s CA, send `payload`, wait (bounded) for it to come back, then kill s_client.
pub fn tls_tcp_echo(
    port: u16,
    pki: &Pki,
    client: &CertFiles,
    payload: &[u8],
    timeout: Duration,
) -> Result<(TcpOutcome, String)> {
    let args: [&OsStr; 5] = [
        "-verify_return_error".as_ref(),
        "-servername".as_ref(),
        "localhost".as_ref(),
        "-CAfile".as_ref(),
        pki.ca_cert.as_os_str(),
    ];
    s_client_echo(port, args, client, payload, timeout)
}

/// One `openssl s_client -quiet <args> -connect 127.0.0.1:<port>` exchange presenting `client`'s
/// certificate: send `payload`, wait (at most `timeout`) until it comes back, then kill s_client.
/// `args` carries the caller's extra options (`-servername`/`-noservername`, `-CAfile`,
/// `-verify_return_error`, ...). Returns how the exchange ended ([`TcpOutcome::Echoed`],
/// [`TcpOutcome::Closed`] with the bytes read so far, or [`TcpOutcome::Timeout`]) and s_client's
/// stderr.
pub fn s_client_echo<I, S>(
    port: u16,
    args: I,
    client: &CertFiles,
    payload: &[u8],
    timeout: Duration,
) -> Result<(TcpOutcome, String)>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let SClient {
        mut child,
        rx,
        reader,
    } = spawn_s_client(port, args, client, Stdio::piped())?;
    // Keep stdin open until the end (closing it would make s_client close its side).
    let mut stdin = child.stdin.take();
    if let Some(s) = stdin.as_mut() {
        let _ = s.write_all(payload);
        let _ = s.flush();
    }
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut outcome = TcpOutcome::Timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(chunk) => {
                got.extend_from_slice(&chunk);
                if got.windows(payload.len()).any(|w| w == payload) {
                    outcome = TcpOutcome::Echoed;
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                outcome = TcpOutcome::Closed(String::from_utf8_lossy(&got).into());
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    if let Some(r) = reader {
        let _ = r.join();
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    Ok((outcome, stderr))
}

/// A running `openssl s_client -quiet <args> -connect 127.0.0.1:<port>` presenting `client`'s
/// certificate, and what it reads, chunk by chunk, from a thread (the channel closes when the
/// connection does).
struct SClient {
    child: std::process::Child,
    rx: mpsc::Receiver<Vec<u8>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn spawn_s_client<I, A>(port: u16, args: I, client: &CertFiles, stderr: Stdio) -> Result<SClient>
where
    I: IntoIterator<Item = A>,
    A: AsRef<OsStr>,
{
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet"])
        .args(args)
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&client.cert)
        .arg("-key")
        .arg(&client.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| Error(format!("cannot run openssl: {e}")))?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf.get(..n).unwrap_or_default().to_vec()).is_err() {
                    break;
                }
            }
        })
    });
    Ok(SClient { child, rx, reader })
}

/// One mTLS connection kept open by `openssl s_client` (presenting a client certificate,
/// verifying the server with the sidecar's CA): bytes are sent and read on it over time, so a
/// test can change the configuration between two exchanges on the same connection. Killed on drop.
pub struct TlsSession {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    rx: mpsc::Receiver<Vec<u8>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Bytes read and not yet consumed.
    buffered: Vec<u8>,
    closed: bool,
}

/// What one exchange on a [`TlsSession`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// An HTTP response with this status (for [`TlsSession::http_get`]), or the echoed payload
    /// (status 0, for [`TlsSession::echo`]).
    Answered(u16),
    /// The server closed the connection first.
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

impl TlsSession {
    /// Opens `127.0.0.1:port` presenting `client`.
    pub fn open(port: u16, pki: &Pki, client: &CertFiles) -> Result<TlsSession> {
        let args: [&OsStr; 5] = [
            "-verify_return_error".as_ref(),
            "-servername".as_ref(),
            "localhost".as_ref(),
            "-CAfile".as_ref(),
            pki.ca_cert.as_os_str(),
        ];
        // Its stderr is not read over the session's life: not piped, so it cannot fill up.
        let SClient {
            mut child,
            rx,
            reader,
        } = spawn_s_client(port, args, client, Stdio::null())?;
        Ok(TlsSession {
            stdin: child.stdin.take(),
            child,
            rx,
            reader,
            buffered: Vec::new(),
            closed: false,
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(Error("the session is closed".into()));
        };
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    /// Reads until `complete` says how many buffered bytes make one answer, the connection
    /// closes, or `timeout` passes.
    fn read_until(
        &mut self,
        timeout: Duration,
        complete: impl Fn(&[u8]) -> Option<(usize, u16)>,
    ) -> Exchange {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((len, status)) = complete(&self.buffered) {
                self.buffered.drain(..len.min(self.buffered.len()));
                return Exchange::Answered(status);
            }
            if self.closed {
                return Exchange::Closed;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Exchange::Timeout;
            }
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.buffered.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => self.closed = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// `GET path` (HTTP/1.1, keep-alive) on this connection; waits (at most `timeout`) for the
    /// whole response.
    pub fn http_get(&mut self, path: &str, timeout: Duration) -> Result<Exchange> {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())?;
        Ok(self.read_until(timeout, http_response_len))
    }

    /// Sends `payload` and waits (at most `timeout`) for it to come back.
    pub fn echo(&mut self, payload: &[u8], timeout: Duration) -> Result<Exchange> {
        self.send(payload)?;
        Ok(self.read_until(timeout, |got| {
            got.windows(payload.len())
                .position(|w| w == payload)
                .map(|at| (at + payload.len(), 0))
        }))
    }
}

impl Drop for TlsSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin = None;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The length and status of the complete HTTP/1.1 response at the start of `got` (content-length
/// or chunked body), if it is all there.
fn http_response_len(got: &[u8]) -> Option<(usize, u16)> {
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(got.get(..head_end)?).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    if let Some(len) = header("content-length:") {
        let len: usize = len.parse().ok()?;
        return (got.len() >= head_end + len).then_some((head_end + len, status));
    }
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        let body = got.get(head_end..)?;
        let end = body.windows(5).position(|w| w == b"0\r\n\r\n")? + 5;
        return Some((head_end + end, status));
    }
    Some((head_end, status))
}
