//! Envoy process management: free loopback ports, template rendering by placeholder
//! substitution, start with bounded readiness wait, admin readers, kill on drop.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{envoy_binary, err, workspace_root, Error, Result};

/// How long Envoy may take to become ready (V8 compiles the module at start-up: about 2 s of CPU
/// on an idle core, but ten times longer when the machine's cores are shared by other builds).
/// Still a bound: a start that never becomes ready fails the test with Envoy's log.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback TCP port nothing listens on right now, never handed out before by this process.
/// (Another process may still take it before Envoy binds it; [`Envoy::start_with_retry`] retries.)
pub fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut guard = HANDED_OUT
            .lock()
            .map_err(|_| Error("port registry poisoned".into()))?;
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    err("no free loopback port after 50 tries")
}

/// The text of a template under `envoy-config/envoy/` (the files the sandbox and compose use).
pub fn template(name: &str) -> Result<String> {
    let path = workspace_root().join("envoy-config/envoy").join(name);
    std::fs::read_to_string(&path).map_err(|e| {
        Error(format!(
            "cannot read Envoy template {}: {e}",
            path.display()
        ))
    })
}

/// Replace every `{{KEY}}` by its value; fail if a placeholder is left or a key is unused.
pub fn render(template: &str, vars: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = template.to_string();
    for (key, value) in vars {
        let ph = format!("{{{{{key}}}}}");
        if !out.contains(&ph) {
            return err(format!("template has no placeholder {ph}"));
        }
        out = out.replace(&ph, value);
    }
    if let Some(pos) = out.find("{{") {
        let rest: String = out.chars().skip(pos).take(40).collect();
        // Only flag things that look like our placeholders ({{UPPER_CASE}}).
        let looks = rest
            .trim_start_matches("{{")
            .chars()
            .take_while(|c| *c != '}')
            .all(|c| c.is_ascii_uppercase() || c == '_');
        if looks && rest.contains("}}") {
            return err(format!("unrendered placeholder at {rest:?}"));
        }
    }
    Ok(out)
}

/// A running Envoy. Killed (and its log dumped if the test is failing) on drop.
pub struct Envoy {
    child: Child,
    /// Admin port.
    pub admin_port: u16,
    /// The rendered configuration file.
    pub config_path: PathBuf,
    /// Envoy's own log (`--log-path`).
    pub log_path: PathBuf,
    name: String,
}

impl Envoy {
    /// Write `config` to `<dir>/<name>.yaml` and start Envoy on it; wait until the admin `/ready`
    /// answers 200 (bounded by [`READY_TIMEOUT`]). On failure the error carries Envoy's log.
    pub fn start(dir: &Path, name: &str, config: &str, admin_port: u16) -> Result<Envoy> {
        Envoy::start_via(dir, name, config, admin_port, &[], READY_TIMEOUT)
    }

    /// [`Envoy::start`] with Envoy run under `launcher` (a command and its arguments that end
    /// with the program to run, e.g. `valgrind --tool=callgrind`; empty: Envoy itself) and
    /// another readiness bound (a launcher such as valgrind starts Envoy many times slower).
    /// The Envoy binary and its arguments follow the launcher's; [`Envoy::pid`] is then the
    /// launcher's process (valgrind runs Envoy inside its own process).
    pub fn start_via(
        dir: &Path,
        name: &str,
        config: &str,
        admin_port: u16,
        launcher: &[String],
        ready_timeout: Duration,
    ) -> Result<Envoy> {
        let config_path = dir.join(format!("{name}.yaml"));
        let log_path = dir.join(format!("{name}.log"));
        std::fs::write(&config_path, config)?;
        let envoy = envoy_binary()?;
        let mut command = match launcher.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&envoy);
                c
            }
            None => Command::new(&envoy),
        };
        let child = command
            .arg("-c")
            .arg(&config_path)
            // Several Envoys run at once (test threads, other suites): let Envoy pick an
            // unused base id for its shared memory instead of guessing one.
            .arg("--use-dynamic-base-id")
            .args(["--concurrency", "1", "-l", "warning"])
            // Access-log lines reach the file within 100 ms (default 10 s).
            .args(["--file-flush-interval-msec", "100"])
            .arg("--log-path")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error(format!("cannot start Envoy: {e}")))?;
        let mut envoy = Envoy {
            child,
            admin_port,
            config_path,
            log_path,
            name: name.to_string(),
        };
        envoy.wait_ready(ready_timeout)?;
        Ok(envoy)
    }

    /// Start Envoy on a configuration built from freshly allocated ports; if Envoy exits before
    /// ready because a port got taken meanwhile ("Address already in use"), allocate again (3 tries).
    /// `build` gets a port allocator and returns `(config, admin_port)`.
    pub fn start_with_retry(
        dir: &Path,
        name: &str,
        mut build: impl FnMut() -> Result<(String, u16)>,
    ) -> Result<Envoy> {
        let mut last = Error("not started".into());
        for _ in 0..3 {
            let (config, admin) = build()?;
            match Envoy::start(dir, name, &config, admin) {
                Ok(e) => return Ok(e),
                Err(e) if e.0.contains("ddress already in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return err(format!(
                    "Envoy {} exited before ready ({status}); log:\n{}",
                    self.name,
                    self.log()
                ));
            }
            if let Ok((200, _)) = self.admin_request("GET", "/ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return err(format!(
                    "Envoy {} not ready after {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The configuration Envoy runs (as written to disk).
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap_or_default()
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Wait (bounded) until Envoy's log contains `needle` (Envoy writes its log file in the
    /// background); returns the log.
    pub fn wait_log_contains(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(log);
            }
            if Instant::now() > deadline {
                return err(format!(
                    "after {timeout:?}, Envoy {}'s log does not contain {needle:?}; it has:\n{log}",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id (for reading its CPU time from `/proc/<pid>/stat`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// One admin request (HTTP/1.0, bounded); returns (status, body).
    pub fn admin_request(&self, method: &str, path: &str) -> Result<(u16, String)> {
        http10(self.admin_port, method, path)
    }

    /// `GET` an admin path, require 200, return the body.
    pub fn admin_get(&self, path: &str) -> Result<String> {
        match self.admin_request("GET", path)? {
            (200, body) => Ok(body),
            (code, body) => err(format!("admin {path}: {code} {body}")),
        }
    }

    /// Every counter and gauge from `/stats` (`name: value` lines; histograms skipped).
    pub fn stats(&self) -> Result<BTreeMap<String, u64>> {
        let body = self.admin_get("/stats")?;
        Ok(body
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse::<u64>().ok()?))
            })
            .collect())
    }

    /// One stat from `/stats`, `None` if Envoy does not show it.
    pub fn stat(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.stats()?.get(name).copied())
    }

    /// One stat, 0 if absent.
    pub fn stat_or_zero(&self, name: &str) -> Result<u64> {
        Ok(self.stat(name)?.unwrap_or(0))
    }

    /// Wait (bounded) until `name` reaches at least `want`; returns the last value seen.
    pub fn wait_stat_at_least(&self, name: &str, want: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.stat_or_zero(name)?;
            if v >= want || Instant::now() > deadline {
                return Ok(v);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sample lines of `/stats/prometheus` whose metric name is `name` (`name{labels} value`).
    pub fn prometheus(&self, name: &str) -> Result<Vec<(String, f64)>> {
        let body = self.admin_get("/stats/prometheus")?;
        Ok(body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let metric = series.split('{').next()?;
                (metric == name).then(|| Some((series.to_string(), value.parse::<f64>().ok()?)))?
            })
            .collect())
    }

    /// Stop Envoy: SIGTERM (it flushes its logs and exits), SIGKILL after 3 s; wait for it.
    pub fn stop(&mut self) {
        if self.is_running() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- Envoy {} log ({}) -----\n{}\n----- end of Envoy {} log; config: {} -----",
                self.name,
                self.log_path.display(),
                self.log(),
                self.name,
                self.config_path.display()
            );
        }
    }
}

/// A tiny HTTP/1.0 client for the admin interface (bounded by 5 s).
pub fn http10(port: u16, method: &str, path: &str) -> Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut buf = Vec::new();
    s.take(64 * 1024 * 1024).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| Error(format!("bad admin response head {head:?}")))?;
    Ok((code, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        let Some(chunk) = after.get(..n) else {
            out.push_str(after);
            break;
        };
        out.push_str(chunk);
        rest = after.get(n..).unwrap_or("").trim_start_matches("\r\n");
    }
    out
}

/// The release of the Envoy binary the tests run (`envoy --version`: `<sha>/1.40.0/Clean/...`),
/// as `(major, minor, patch)`.
pub fn version() -> Result<(u32, u32, u32)> {
    static VERSION: std::sync::OnceLock<std::result::Result<(u32, u32, u32), String>> =
        std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| read_version().map_err(|e| e.0))
        .clone()
        .map_err(Error)
}

fn read_version() -> Result<(u32, u32, u32)> {
    let out = Command::new(envoy_binary()?).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split('/')
        .find_map(|part| {
            let mut nums = part.trim().split('.').map(|n| n.parse::<u32>().ok());
            match (nums.next(), nums.next(), nums.next(), nums.next()) {
                (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Some((a, b, c)),
                _ => None,
            }
        })
        .ok_or_else(|| Error(format!("cannot read the Envoy release from {text:?}")))
}

/// How this Envoy's RBAC header matcher reads a header sent several times (README, "Envoy
/// versions"): the comma-joined value up to 1.37, any one value from 1.38.2 on.
pub fn repeated_headers() -> Result<policy_engine::RepeatedHeaders> {
    Ok(if version()? < (1, 38, 0) {
        policy_engine::RepeatedHeaders::Joined
    } else {
        policy_engine::RepeatedHeaders::AnyValue
    })
}
