//! The harness the end-to-end tests, the sandbox and the Envoy benchmark share: a real Envoy
//! (1.40) running the built meshauthz module, real certificates, a real upstream application and
//! real clients (`curl`, `openssl s_client`, raw sockets).
//!
//! Everything listens on 127.0.0.1 only, every wait is bounded, and every process or thread this
//! crate starts is stopped by a guard's `Drop`.
//!
//! Layout (the users: `e2e/` tests, `sandbox/` the `sandbox` and `soak` tools, `bench/envoy/`):
//! - [`certs`]: a CA, a server certificate and SPIFFE client certificates (rcgen), per run.
//! - [`app`]: the upstream applications (HTTP echo returning the received headers as JSON, TCP echo).
//! - [`envoy`]: free ports, template rendering, the Envoy process guard, admin readers.
//! - [`sidecar`]: one Envoy + application + certificates on a shipped template ([`sidecar::Sidecar`]).
//! - [`client`]: `curl` for HTTP(S), raw TCP and `openssl s_client` for TCP ports.
//! - [`load`]: a small std HTTP/1.1 client and TCP exchange for continuous load (the soak, live updates).
//! - [`mod@assert`]: assertions on what a caller saw (200, Istio's 403, reset, refused).
//! - [`access_log`]: waiting for access-log lines.
//! - [`policy`]: Istio YAML to the module's plugin configuration JSON.
//! - this file: the error type, where Envoy, the module and the CLI are, per-run work folders.

pub mod access_log;
pub mod app;
pub mod assert;
pub mod certs;
pub mod client;
pub mod envoy;
pub mod load;
pub mod policy;
pub mod sidecar;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// What went wrong in the harness, in words a test failure can print.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(format!("I/O error: {e}"))
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error(format!("certificate generation: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("JSON: {e}"))
    }
}

impl From<serde_yaml_ng::Error> for Error {
    fn from(e: serde_yaml_ng::Error) -> Self {
        Error(format!("YAML: {e}"))
    }
}

/// Harness result.
pub type Result<T> = std::result::Result<T, Error>;

/// `Err(Error(msg))`, for the harness's users too.
pub fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error(msg.into()))
}

/// The workspace root (the folder holding the workspace `Cargo.toml` and `Makefile`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `$VAR` when set and not empty, else `default` under the workspace root: where a built tool is.
pub fn from_env_or(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join(default),
    }
}

/// [`from_env_or`], when that file exists; else an error saying where it was looked for and how
/// to get it (`what not found at PATH (HOW, or set VAR)`).
fn existing_file(var: &str, default: &str, what: &str, how: &str) -> Result<PathBuf> {
    let path = from_env_or(var, default);
    if path.is_file() {
        Ok(path)
    } else {
        err(format!(
            "{what} not found at {} ({how}, or set {var})",
            path.display()
        ))
    }
}

/// The Envoy binary: `$MESHAUTHZ_ENVOY`, else `.tools/envoy-1.40.0/envoy/_bin/envoy` (what `make envoy` installs).
pub fn envoy_binary() -> Result<PathBuf> {
    existing_file(
        "MESHAUTHZ_ENVOY",
        ".tools/envoy-1.40.0/envoy/_bin/envoy",
        "Envoy",
        "run `make envoy`",
    )
}

/// The built module: `$MESHAUTHZ_MODULE`, else `target/wasm32-wasip1/release/meshauthz.wasm` (what `make build` writes).
pub fn module_path() -> Result<PathBuf> {
    existing_file(
        "MESHAUTHZ_MODULE",
        "target/wasm32-wasip1/release/meshauthz.wasm",
        "module",
        "run `make build`",
    )
}

/// The module built without CEL conditions: `$MESHAUTHZ_MODULE_NOCEL`, else
/// `target/wasm32-wasip1/release/meshauthz-nocel.wasm` (`make build`).
pub fn module_nocel_path() -> Result<PathBuf> {
    existing_file(
        "MESHAUTHZ_MODULE_NOCEL",
        "target/wasm32-wasip1/release/meshauthz-nocel.wasm",
        "module without CEL",
        "run `make build`",
    )
}

/// The `meshauthz` CLI: `$MESHAUTHZ_CLI`, else `target/debug/meshauthz` (`make sandbox-bin`,
/// `cargo build -p meshauthz-cli`).
pub fn default_cli() -> PathBuf {
    from_env_or("MESHAUTHZ_CLI", "target/debug/meshauthz")
}

/// A per-test scratch folder under `harness/.work/` (gitignored). Removed on drop when the test
/// passed; kept (and its path printed) when it failed, so the rendered config, logs and
/// certificates can be inspected.
pub struct WorkDir {
    path: PathBuf,
}

static WORKDIR_SEQ: AtomicU32 = AtomicU32::new(0);

impl WorkDir {
    /// Create `harness/.work/<name>-<pid>-<n>`, empty.
    pub fn new(name: &str) -> Result<WorkDir> {
        let n = WORKDIR_SEQ.fetch_add(1, Ordering::Relaxed);
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".work")
            .join(format!("{safe}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(WorkDir { path })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("harness: kept work dir {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
