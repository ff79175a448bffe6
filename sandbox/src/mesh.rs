//! The sandbox behind `make sandbox`: a small mesh on loopback that outlives the command.
//!
//! - an HTTP echo application (the harness's [`meshauthz_harness::app::HttpEcho`], run detached by the `sandbox
//!   echo` subcommand),
//! - the server sidecar: Envoy on `envoy-config/envoy/server-http.yaml` (the template the e2e suite
//!   runs) with meshauthz and the sample policies of `envoy-config/policies/`, its listeners
//!   served from a file (file-based LDS) so that a new policy set lands live ([`crate::live`]),
//! - the in-mesh client sidecar: Envoy on `envoy-config/envoy/client-sidecar.yaml`, originating
//!   mTLS as `spiffe://cluster.local/ns/istioinaction/sa/sleep`,
//! - the legacy client: plain `curl` to the server port.
//!
//! Every process is started in its own process group, its pid recorded in `<dir>/state.json`, its
//! output in `<dir>/*.log`; [`Sandbox::down`] stops exactly those processes (it checks that a
//! recorded pid still runs a command line naming the sandbox folder before signalling it).
//! Everything listens on 127.0.0.1 and every wait is bounded.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use meshauthz_harness::certs::{Pki, SERVER_SPIFFE};
pub use meshauthz_harness::default_cli;
use meshauthz_harness::envoy::{http10, render, template, READY_TIMEOUT};
use meshauthz_harness::sidecar::{
    plugin_config_placeholder, to_dynamic_listeners, HTTP_TEMPLATE, TCP_TEMPLATE,
};
use meshauthz_harness::{envoy_binary, err, module_path, workspace_root, Error, Result};

/// The in-mesh client's namespace and service account (its SPIFFE certificate).
pub const CLIENT_NS: &str = "istioinaction";
/// See [`CLIENT_NS`].
pub const CLIENT_SA: &str = "sleep";
/// The client sidecar template.
pub const CLIENT_TEMPLATE: &str = "client-sidecar.yaml";
/// The policy file applied only in the STRICT step.
pub const STRICT_POLICY: &str = "90-strict.yaml";
/// The report-only step's PeerAuthentication (STRICT with `meshauthz.io/strict-report-only:
/// "true"`), under the workspace: it replaces [`STRICT_POLICY`] between AUDIT and STRICT.
pub const REPORT_ONLY_POLICY: &str = "envoy-config/sandbox/policies/90-strict-report-only.yaml";
/// The SNI the client sidecar sends (the server does not route on it).
pub const UPSTREAM_SNI: &str = "echo.foo.svc.cluster.local";
/// The workload the sample policies select.
pub const WORKLOAD_NAMESPACE: &str = "foo";
/// See [`WORKLOAD_NAMESPACE`].
pub const WORKLOAD_LABEL: &str = "app=echo";
/// The port the sample DENY policy names (`20-deny-admin.yaml`).
pub const SAMPLE_DENY_PORT: u16 = 8080;

/// The subcommand of the `sandbox` binary that runs a program as its child and waits for it.
pub const SUPERVISE: &str = "supervise";

/// The fixed loopback ports of the sandbox.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ports {
    /// Server sidecar inbound listener (mTLS and plaintext chains).
    pub inbound: u16,
    /// Server sidecar admin (`/stats`).
    pub admin: u16,
    /// The echo application behind the server sidecar.
    pub app: u16,
    /// Client sidecar outbound listener (what the in-mesh app calls, plaintext HTTP).
    pub client: u16,
    /// Client sidecar admin.
    pub client_admin: u16,
    /// TCP echo application (compose only, behind `server-tcp.yaml`).
    #[serde(default = "default_tcp_app")]
    pub tcp_app: u16,
    /// TCP server sidecar inbound (compose only).
    #[serde(default = "default_tcp_inbound")]
    pub tcp_inbound: u16,
    /// TCP server sidecar admin (compose only).
    #[serde(default = "default_tcp_admin")]
    pub tcp_admin: u16,
}

fn default_tcp_app() -> u16 {
    9090
}
fn default_tcp_inbound() -> u16 {
    9000
}
fn default_tcp_admin() -> u16 {
    9903
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            inbound: 8080,
            admin: 9901,
            app: 8090,
            client: 8000,
            client_admin: 9902,
            tcp_app: default_tcp_app(),
            tcp_inbound: default_tcp_inbound(),
            tcp_admin: default_tcp_admin(),
        }
    }
}

impl Ports {
    /// (port, what it is, the make variable that overrides it) for the native sandbox.
    pub fn native(&self) -> [(u16, &'static str, &'static str); 5] {
        [
            (self.inbound, "server sidecar inbound", "SANDBOX_PORT"),
            (self.admin, "server sidecar admin", "SANDBOX_ADMIN_PORT"),
            (self.app, "echo application", "SANDBOX_APP_PORT"),
            (
                self.client,
                "client sidecar outbound",
                "SANDBOX_CLIENT_PORT",
            ),
            (
                self.client_admin,
                "client sidecar admin",
                "SANDBOX_CLIENT_ADMIN_PORT",
            ),
        ]
    }
}

/// PeerAuthentication step of the story.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The sample policies without `90-strict.yaml`.
    Permissive,
    /// The sample policies without `90-strict.yaml`, plus [`REPORT_ONLY_POLICY`]: STRICT,
    /// report-only (`meshauthz.io/strict-report-only: "true"`).
    ReportOnly,
    /// The sample policies with `90-strict.yaml`.
    Strict,
}

impl Mode {
    /// `permissive` / `report-only` / `strict`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Permissive => "permissive",
            Mode::ReportOnly => "report-only",
            Mode::Strict => "strict",
        }
    }

    /// The mode a policy file list is in: STRICT with `90-strict.yaml`, report-only with
    /// [`REPORT_ONLY_POLICY`]'s file, else PERMISSIVE.
    pub fn of(files: &[PathBuf]) -> Mode {
        let report_only = Path::new(REPORT_ONLY_POLICY).file_name();
        if files
            .iter()
            .any(|f| f.file_name() == Some(STRICT_POLICY.as_ref()))
        {
            Mode::Strict
        } else if files.iter().any(|f| f.file_name() == report_only) {
            Mode::ReportOnly
        } else {
            Mode::Permissive
        }
    }
}

/// A process the sandbox started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Proc {
    /// `echo`, `server`, `client`.
    pub name: String,
    /// Its pid (leader of its own process group).
    pub pid: u32,
}

/// What `<dir>/state.json` records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// The ports in use.
    pub ports: Ports,
    /// The current PeerAuthentication step (STRICT when the policy files in force include
    /// `90-strict.yaml`).
    pub mode: Mode,
    /// Processes started, in start order.
    pub processes: Vec<Proc>,
    /// The policy files in force on the server sidecar: the last set the CLI accepted and Envoy
    /// applied (`sandbox apply`).
    #[serde(default)]
    pub policies: Vec<PathBuf>,
}

/// The sandbox folder (`.sandbox/` by default) and the tools it uses.
pub struct Sandbox {
    /// Absolute path of the folder holding state, certificates, rendered configs and logs.
    pub dir: PathBuf,
    /// The sample policies (`envoy-config/policies/`).
    pub policies: PathBuf,
    /// The `meshauthz` CLI binary (renders the plugin configuration).
    pub cli: PathBuf,
}

/// How long the server sidecar's Envoy drains connections on a listener chain that a live update
/// replaced (`--drain-time-s`; Envoy's default is 600 s): after it, every connection runs on the
/// new chain and so on the new policy set.
pub const SERVER_DRAIN_TIME: Duration = Duration::from_secs(2);

/// Write `path` the way Envoy's file watch expects: aside (`<path>.tmp`), then rename onto it.
pub fn write_replacing(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// The default sandbox folder: `<workspace>/.sandbox`.
pub fn default_dir() -> PathBuf {
    workspace_root().join(".sandbox")
}

/// The sample policy files for `mode`, sorted by name (`90-strict.yaml` only in STRICT; in
/// report-only, [`REPORT_ONLY_POLICY`] last).
pub fn policy_files(policies: &Path, mode: Mode) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(policies)
        .map_err(|e| Error(format!("cannot read {}: {e}", policies.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| mode == Mode::Strict || p.file_name().is_none_or(|n| n != STRICT_POLICY))
        .collect();
    files.sort();
    if mode == Mode::Strict && !files.iter().any(|p| p.ends_with(STRICT_POLICY)) {
        return err(format!("{} has no {STRICT_POLICY}", policies.display()));
    }
    if mode == Mode::ReportOnly {
        files.push(workspace_root().join(REPORT_ONLY_POLICY));
    }
    Ok(files)
}

/// `path` relative to the workspace root when it is under it (for commands a person can paste).
pub fn shown(path: &Path) -> String {
    let root = workspace_root();
    path.strip_prefix(&root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

/// The arguments of `meshauthz plugin-config` for the sample workload (`foo`, `app=echo`);
/// `--http-port` when the listener carries HTTP (meshauthz_net then leaves authorization to
/// meshauthz_http on it).
pub fn plugin_config_args(files: &[PathBuf], http_port: Option<u16>) -> Vec<String> {
    let mut args: Vec<String> = [
        "plugin-config",
        "--namespace",
        WORKLOAD_NAMESPACE,
        "--label",
        WORKLOAD_LABEL,
    ]
    .map(String::from)
    .to_vec();
    if let Some(port) = http_port {
        args.push("--http-port".into());
        args.push(port.to_string());
    }
    args.extend(files.iter().map(|f| f.display().to_string()));
    args
}

/// The plugin configuration the CLI renders (it validates the policies first).
pub fn plugin_config(cli: &Path, files: &[PathBuf], http_port: Option<u16>) -> Result<Value> {
    let out = Command::new(cli)
        .args(plugin_config_args(files, http_port))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error(format!(
                "cannot run the CLI {} ({e}); build it with `cargo build -p meshauthz-cli`",
                cli.display()
            ))
        })?;
    if !out.status.success() {
        return err(format!(
            "`meshauthz plugin-config` refused the policies ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let config: Value = serde_json::from_slice(&out.stdout)?;
    let want = serde_json::json!(http_port.into_iter().collect::<Vec<u16>>());
    if config.get("httpPorts") != Some(&want) {
        return err(format!(
            "`meshauthz plugin-config` wrote httpPorts {:?}, expected {want} (CLI too old? rebuild it)",
            config.get("httpPorts")
        ));
    }
    Ok(config)
}

/// Paths as the Envoy process sees them (host paths natively, container paths in compose).
#[derive(Clone, Debug)]
pub struct EnvoyPaths {
    /// `{{CERT_DIR}}`: `ca.crt`, `server.crt`, `server.key`.
    pub cert_dir: String,
    /// `{{MODULE}}`.
    pub module: String,
    /// `{{ACCESS_LOG}}` of the server sidecar.
    pub access_log: String,
    /// The client sidecar's certificate and key.
    pub client_cert: String,
    /// See [`Self::client_cert`].
    pub client_key: String,
}

/// The ports one server sidecar template is rendered with.
struct ServerPorts {
    admin: u16,
    inbound: u16,
    app: u16,
}

impl ServerPorts {
    /// The HTTP server sidecar's (`server-http.yaml`).
    fn http(p: &Ports) -> ServerPorts {
        ServerPorts {
            admin: p.admin,
            inbound: p.inbound,
            app: p.app,
        }
    }

    /// The TCP server sidecar's (`server-tcp.yaml`, a TCP echo behind it; the compose sandbox).
    fn tcp(p: &Ports) -> ServerPorts {
        ServerPorts {
            admin: p.tcp_admin,
            inbound: p.tcp_inbound,
            app: p.tcp_app,
        }
    }
}

/// `server-http.yaml` rendered for the sandbox.
pub fn render_server(ports: &Ports, paths: &EnvoyPaths, plugin: &Value) -> Result<String> {
    render_server_from(
        &template(HTTP_TEMPLATE)?,
        &ServerPorts::http(ports),
        paths,
        plugin,
    )
}

/// A server sidecar template (`text`) rendered with its ports, files and plugin configuration.
fn render_server_from(
    text: &str,
    ports: &ServerPorts,
    paths: &EnvoyPaths,
    plugin: &Value,
) -> Result<String> {
    render(
        text,
        &BTreeMap::from([
            ("ADMIN_PORT", ports.admin.to_string()),
            ("INBOUND_PORT", ports.inbound.to_string()),
            ("APP_PORT", ports.app.to_string()),
            ("CERT_DIR", paths.cert_dir.clone()),
            ("MODULE", paths.module.clone()),
            ("PLUGIN_CONFIG_JSON", plugin_config_placeholder(plugin)?),
            ("ACCESS_LOG", paths.access_log.clone()),
        ]),
    )
}

/// `client-sidecar.yaml` rendered for the sandbox.
pub fn render_client(ports: &Ports, paths: &EnvoyPaths) -> Result<String> {
    render_client_from(&template(CLIENT_TEMPLATE)?, ports, paths)
}

fn render_client_from(text: &str, ports: &Ports, paths: &EnvoyPaths) -> Result<String> {
    render(
        text,
        &BTreeMap::from([
            ("ADMIN_PORT", ports.client_admin.to_string()),
            ("OUTBOUND_PORT", ports.client.to_string()),
            ("UPSTREAM_PORT", ports.inbound.to_string()),
            ("UPSTREAM_SNI", UPSTREAM_SNI.to_string()),
            ("CLIENT_CERT", paths.client_cert.clone()),
            ("CLIENT_KEY", paths.client_key.clone()),
            ("UPSTREAM_SPIFFE_ID", SERVER_SPIFFE.to_string()),
            ("CERT_DIR", paths.cert_dir.clone()),
        ]),
    )
}

/// Fail with a clear message when a port is taken or two ports are the same.
pub fn check_ports_free(ports: &[(u16, &str, &str)]) -> Result<()> {
    for (i, (port, what, var)) in ports.iter().enumerate() {
        if let Some((_, other, _)) = ports.iter().take(i).find(|(p, _, _)| p == port) {
            return err(format!(
                "port {port} is configured for both the {other} and the {what}; choose another with `make sandbox {var}=<port>`"
            ));
        }
        if let Err(e) = TcpListener::bind(("127.0.0.1", *port)) {
            return err(format!(
                "port {port} ({what}) is already in use on 127.0.0.1 ({e}). Stop what listens there \
                 (`ss -ltnp 'sport = :{port}'`), or choose another port: `make sandbox {var}=<port>`"
            ));
        }
    }
    Ok(())
}

fn proc_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its parent) is not running.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn proc_cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a file (for error messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .get(lines.len().saturating_sub(n)..)
        .unwrap_or_default()
        .join("\n")
}

impl Sandbox {
    /// The sandbox in `dir` (made absolute), sample policies of the workspace, CLI `cli`.
    pub fn new(dir: &Path, cli: &Path) -> Result<Sandbox> {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()?.join(dir)
        };
        Ok(Sandbox {
            dir,
            policies: workspace_root().join("envoy-config/policies"),
            cli: cli.to_path_buf(),
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Certificates: `ca.crt`, `server.crt/.key`, `client-istioinaction-sleep.crt/.key`.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// The in-mesh client's certificate and key.
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        let base = format!("client-{CLIENT_NS}-{CLIENT_SA}");
        (
            self.certs_dir().join(format!("{base}.crt")),
            self.certs_dir().join(format!("{base}.key")),
        )
    }

    /// The server sidecar's access log (one JSON object per request).
    pub fn access_log(&self) -> PathBuf {
        self.dir.join("server-access.log")
    }

    /// A process's output (`echo.log`, `server.log`, `client.log`).
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// A rendered Envoy configuration (`server.yaml`, `client.yaml`).
    pub fn config(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.yaml"))
    }

    /// The recorded state, `None` when no sandbox was started from this folder.
    pub fn load_state(&self) -> Result<Option<State>> {
        match fs::read_to_string(self.state_path()) {
            Ok(text) => {
                Ok(Some(serde_json::from_str(&text).map_err(|e| {
                    Error(format!("{}: {e}", self.state_path().display()))
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The running sandbox's state, or an error telling how to start one.
    pub fn running_state(&self) -> Result<State> {
        match self.load_state()? {
            Some(s) => Ok(s),
            None => err(format!(
                "no sandbox running from {} (start it with `make sandbox`)",
                shown(&self.dir)
            )),
        }
    }

    pub(crate) fn save_state(&self, state: &State) -> Result<()> {
        fs::write(self.state_path(), serde_json::to_string_pretty(state)?)?;
        Ok(())
    }

    /// Is `p` a live process this sandbox started (its command line names the sandbox folder)?
    fn owns(&self, p: &Proc) -> bool {
        proc_alive(p.pid) && proc_cmdline(p.pid).contains(&self.dir.display().to_string())
    }

    fn spawn(&self, name: &str, program: &Path, args: &[String]) -> Result<Proc> {
        // A supervisor and its Envoy share one log.
        let log_name = name.strip_suffix("-supervisor").unwrap_or(name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(log_name))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: outlives `make`, untouched by the terminal's Ctrl-C.
            .process_group(0)
            .spawn()
            .map_err(|e| Error(format!("cannot start {}: {e}", program.display())))?;
        Ok(Proc {
            name: name.to_string(),
            pid: child.id(),
        })
    }

    fn stop(&self, p: &Proc) -> Result<bool> {
        if !self.owns(p) {
            return Ok(false);
        }
        // SIGTERM: Envoy flushes its logs and exits; SIGKILL after 5 s.
        signal(p.pid, "-TERM");
        if !wait_until(Duration::from_secs(5), || !proc_alive(p.pid)) {
            signal(p.pid, "-KILL");
            if !wait_until(Duration::from_secs(3), || !proc_alive(p.pid)) {
                return err(format!("{} (pid {}) did not stop", p.name, p.pid));
            }
        }
        Ok(true)
    }

    fn start_envoy(
        &self,
        name: &str,
        config: &str,
        admin: u16,
        extra: &[&str],
    ) -> Result<[Proc; 2]> {
        let path = self.config(name);
        fs::write(&path, config)?;
        let mut args: Vec<String> = vec![
            "-c".into(),
            path.display().to_string(),
            "--use-dynamic-base-id".into(),
            "--concurrency".into(),
            "1".into(),
            "-l".into(),
            "info".into(),
            // Access-log lines reach the file within 100 ms (default 10 s).
            "--file-flush-interval-msec".into(),
            "100".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        // Envoy exits with SIGTERM when its parent exits (observed with 1.40.0: parent-death
        // signal), so its parent is a small supervisor that lives as long as Envoy does and
        // reaps it; the supervisor writes Envoy's pid to `<name>.pid`.
        let pid_file = self.dir.join(format!("{name}.pid"));
        let _ = fs::remove_file(&pid_file);
        let mut sup_args = vec![
            SUPERVISE.to_string(),
            "--pid-file".into(),
            pid_file.display().to_string(),
            "--".into(),
            envoy_binary()?.display().to_string(),
        ];
        sup_args.extend(args);
        let sup = self.spawn(
            &format!("{name}-supervisor"),
            &std::env::current_exe()?,
            &sup_args,
        )?;
        let mut pid = None;
        wait_until(Duration::from_secs(5), || {
            pid = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            pid.is_some() || !proc_alive(sup.pid)
        });
        let Some(pid) = pid else {
            let _ = self.stop(&sup);
            return err(format!(
                "Envoy {name} did not start; last lines of {}:\n{}",
                shown(&self.log(name)),
                tail(&self.log(name), 30)
            ));
        };
        let p = Proc {
            name: name.to_string(),
            pid,
        };
        let ready = wait_until(READY_TIMEOUT, || {
            !proc_alive(p.pid) || matches!(http10(admin, "GET", "/ready"), Ok((200, _)))
        });
        if !proc_alive(p.pid) {
            return err(format!(
                "Envoy {name} exited before it was ready; last lines of {}:\n{}",
                shown(&self.log(name)),
                tail(&self.log(name), 30)
            ));
        }
        if !ready {
            let _ = self.stop(&p);
            return err(format!(
                "Envoy {name} not ready after {READY_TIMEOUT:?}; last lines of {}:\n{}",
                shown(&self.log(name)),
                tail(&self.log(name), 30)
            ));
        }
        Ok([sup, p])
    }

    pub(crate) fn envoy_paths(&self) -> EnvoyPaths {
        let (cert, key) = self.client_cert();
        EnvoyPaths {
            cert_dir: self.certs_dir().display().to_string(),
            module: module_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            access_log: self.access_log().display().to_string(),
            client_cert: cert.display().to_string(),
            client_key: key.display().to_string(),
        }
    }

    /// The plugin configuration in force (`<dir>/plugin-config.json`, as the CLI wrote it).
    pub fn plugin_config_path(&self) -> PathBuf {
        self.dir.join("plugin-config.json")
    }

    /// The listener file the server sidecar's Envoy watches (file-based LDS): its listeners,
    /// plugin configuration included. `sandbox apply` replaces it (write aside, rename).
    pub fn lds_path(&self) -> PathBuf {
        self.dir.join("server-lds.yaml")
    }

    /// The server sidecar's bootstrap (`server.yaml`: admin, clusters, `lds_config` on
    /// [`Self::lds_path`]) and its listener file, from `server-http.yaml` with `plugin`
    /// (`sidecar::to_dynamic_listeners`: the listeners move unchanged into the LDS file).
    pub fn server_configs(&self, ports: &Ports, plugin: &Value) -> Result<(String, String)> {
        let config = render_server(ports, &self.envoy_paths(), plugin)?;
        to_dynamic_listeners(&config, &self.lds_path())
    }

    /// Start the sandbox (stopping a previous one from this folder first). On failure, whatever
    /// was started is stopped again.
    pub fn up(&self, ports: Ports) -> Result<State> {
        if self.load_state()?.is_some() {
            println!("sandbox: stopping the previous sandbox first");
            self.down()?;
        }
        check_ports_free(&ports.native())?;
        envoy_binary()?;
        module_path()?;
        if !self.cli.is_file() {
            return err(format!(
                "the meshauthz CLI is not built at {} (run `cargo build -p meshauthz-cli`)",
                self.cli.display()
            ));
        }
        fs::create_dir_all(&self.dir)?;
        for name in ["echo", "server", "client"] {
            let _ = fs::remove_file(self.log(name));
        }
        let _ = fs::remove_file(self.access_log());
        let mut state = State {
            ports,
            mode: Mode::Permissive,
            processes: Vec::new(),
            policies: Vec::new(),
        };
        self.save_state(&state)?;
        match self.start_all(&mut state) {
            Ok(()) => Ok(state),
            Err(e) => {
                let _ = self.down();
                Err(e)
            }
        }
    }

    fn start_all(&self, state: &mut State) -> Result<()> {
        let ports = state.ports;
        let pki = Pki::generate(&self.certs_dir())?;
        pki.client(CLIENT_NS, CLIENT_SA)?;
        println!(
            "sandbox: certificates in {} (CA; server {SERVER_SPIFFE}; client spiffe://cluster.local/ns/{CLIENT_NS}/sa/{CLIENT_SA})",
            shown(&self.certs_dir())
        );

        let me = std::env::current_exe()?;
        let echo = self.spawn(
            "echo",
            &me,
            &[
                "echo".into(),
                "--port".into(),
                ports.app.to_string(),
                "--dir".into(),
                self.dir.display().to_string(),
            ],
        )?;
        state.processes.push(echo.clone());
        self.save_state(state)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], ports.app));
        if !wait_until(Duration::from_secs(5), || {
            !proc_alive(echo.pid)
                || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        }) || !proc_alive(echo.pid)
        {
            return err(format!(
                "the echo application did not listen on 127.0.0.1:{}: {}",
                ports.app,
                tail(&self.log("echo"), 10)
            ));
        }
        println!(
            "sandbox: echo application on 127.0.0.1:{} (pid {})",
            ports.app, echo.pid
        );

        let files = policy_files(&self.policies, Mode::Permissive)?;
        let plugin = plugin_config(&self.cli, &files, Some(ports.inbound))?;
        fs::write(
            self.plugin_config_path(),
            serde_json::to_string_pretty(&plugin)?,
        )?;
        let (bootstrap, listeners) = self.server_configs(&ports, &plugin)?;
        write_replacing(&self.lds_path(), &listeners)?;
        let drain = SERVER_DRAIN_TIME.as_secs().to_string();
        let [sup, server] = self.start_envoy(
            "server",
            &bootstrap,
            ports.admin,
            &["--drain-time-s", &drain],
        )?;
        state.processes.push(sup);
        state.processes.push(server.clone());
        state.policies = files;
        self.save_state(state)?;
        println!(
            "sandbox: server sidecar on 127.0.0.1:{} (admin {}, pid {}): {HTTP_TEMPLATE}, listeners served from {} (file-based LDS, live updates), policies {} without {STRICT_POLICY}",
            ports.inbound,
            ports.admin,
            server.pid,
            shown(&self.lds_path()),
            shown(&self.policies)
        );

        let [sup, client] = self.start_envoy(
            "client",
            &render_client(&ports, &self.envoy_paths())?,
            ports.client_admin,
            &[],
        )?;
        state.processes.push(sup);
        state.processes.push(client.clone());
        self.save_state(state)?;
        println!(
            "sandbox: client sidecar on 127.0.0.1:{} (admin {}, pid {}): {CLIENT_TEMPLATE}, mTLS as spiffe://cluster.local/ns/{CLIENT_NS}/sa/{CLIENT_SA}",
            ports.client, ports.client_admin, client.pid
        );
        Ok(())
    }

    /// Move the server sidecar to the sample policies of `mode` by a live update
    /// ([`Sandbox::apply`]): no restart.
    pub fn set_mode(&self, mode: Mode) -> Result<crate::live::Applied> {
        self.apply(
            &policy_files(&self.policies, mode)?,
            crate::live::Check::Cli,
        )
    }

    /// Stop exactly the processes recorded in the state file; returns what was stopped.
    pub fn down(&self) -> Result<Vec<Proc>> {
        let Some(state) = self.load_state()? else {
            return Ok(Vec::new());
        };
        let mut stopped = Vec::new();
        let mut problems = Vec::new();
        for p in state.processes.iter().rev() {
            match self.stop(p) {
                Ok(true) => stopped.push(p.clone()),
                Ok(false) => {}
                Err(e) => problems.push(e.0),
            }
        }
        if !problems.is_empty() {
            return err(problems.join("; "));
        }
        fs::remove_file(self.state_path())?;
        Ok(stopped)
    }

    /// Is every recorded process still running?
    pub fn check_running(&self, state: &State) -> Result<()> {
        let dead: Vec<String> = state
            .processes
            .iter()
            .filter(|p| !self.owns(p))
            .map(|p| {
                format!(
                    "{} (pid {}, log {})",
                    p.name,
                    p.pid,
                    shown(&self.log(&p.name))
                )
            })
            .collect();
        if dead.is_empty() {
            Ok(())
        } else {
            err(format!(
                "not running any more: {}; restart with `make sandbox`",
                dead.join(", ")
            ))
        }
    }
}

// ---- the compose sandbox ---------------------------------------------------------------------

/// Where the compose sandbox mounts the certificates inside the Envoy containers.
pub const COMPOSE_CERT_DIR: &str = "/etc/meshauthz/certs";
/// Where the compose sandbox mounts the module inside the Envoy containers.
pub const COMPOSE_MODULE: &str = "/etc/meshauthz/meshauthz.wasm";
/// The application's service name on the compose network.
pub const COMPOSE_APP_HOST: &str = "echo";
/// The server sidecar's service name on the compose network.
pub const COMPOSE_SERVER_HOST: &str = "server";
/// The sandbox-only policy allowing the known callers' addresses (`ipBlocks`), a template with
/// `{{CLIENT_ADDRESS}}` and `{{LEGACY_ADDRESS}}` filled in once the containers have addresses.
pub const COMPOSE_SOURCES_POLICY: &str = "30-allow-known-sources.yaml";

/// The paths the compose sandbox's Envoy containers see (access logs go to the container's stdout).
pub fn compose_paths() -> EnvoyPaths {
    let client = format!("{COMPOSE_CERT_DIR}/client-{CLIENT_NS}-{CLIENT_SA}");
    EnvoyPaths {
        cert_dir: COMPOSE_CERT_DIR.to_string(),
        module: COMPOSE_MODULE.to_string(),
        access_log: "/dev/stdout".to_string(),
        client_cert: format!("{client}.crt"),
        client_key: format!("{client}.key"),
    }
}

fn replace_once(text: &str, name: &str, from: &str, to: &str) -> Result<String> {
    match text.matches(from).count() {
        1 => Ok(text.replacen(from, to, 1)),
        n => err(format!(
            "envoy-config/envoy/{name}: expected `{from}` once (found {n} times); the compose rendering (e2e/src/sandbox.rs, for_containers) must follow the template"
        )),
    }
}

/// A template made fit for a container with its own address: the listeners named by `listen`
/// (port placeholders) bind 0.0.0.0 instead of 127.0.0.1, and the one upstream cluster (port
/// placeholder `upstream`) reaches `host` by name (`STRICT_DNS` instead of `STATIC`).
pub fn for_containers(
    text: &str,
    name: &str,
    listen: &[&str],
    upstream: &str,
    host: &str,
) -> Result<String> {
    let mut out = text.to_string();
    for port in listen {
        out = replace_once(
            &out,
            name,
            &format!("address: 127.0.0.1, port_value: {{{{{port}}}}}"),
            &format!("address: 0.0.0.0, port_value: {{{{{port}}}}}"),
        )?;
    }
    out = replace_once(
        &out,
        name,
        &format!("address: 127.0.0.1, port_value: {{{{{upstream}}}}}"),
        &format!("address: {host}, port_value: {{{{{upstream}}}}}"),
    )?;
    replace_once(&out, name, "type: STATIC", "type: STRICT_DNS")
}

/// `server-http.yaml` rendered for the `server` container (upstream `echo:8090`).
pub fn compose_server_http(plugin: &Value) -> Result<String> {
    compose_server(HTTP_TEMPLATE, ServerPorts::http, plugin)
}

/// `server-tcp.yaml` rendered for the `server-tcp` container (upstream `echo:9090`).
pub fn compose_server_tcp(plugin: &Value) -> Result<String> {
    compose_server(TCP_TEMPLATE, ServerPorts::tcp, plugin)
}

/// The server template `name` rendered for its container, on the default ports `ports` picks.
fn compose_server(name: &str, ports: fn(&Ports) -> ServerPorts, plugin: &Value) -> Result<String> {
    let text = for_containers(
        &template(name)?,
        name,
        &["ADMIN_PORT", "INBOUND_PORT"],
        "APP_PORT",
        COMPOSE_APP_HOST,
    )?;
    render_server_from(&text, &ports(&Ports::default()), &compose_paths(), plugin)
}

/// `client-sidecar.yaml` rendered for the `client` container (upstream `server:8080`).
pub fn compose_client() -> Result<String> {
    let text = for_containers(
        &template(CLIENT_TEMPLATE)?,
        CLIENT_TEMPLATE,
        &["ADMIN_PORT", "OUTBOUND_PORT"],
        "UPSTREAM_PORT",
        COMPOSE_SERVER_HOST,
    )?;
    render_client_from(&text, &Ports::default(), &compose_paths())
}

/// The sources policy (`envoy-config/sandbox/30-allow-known-sources.yaml`) for these addresses.
pub fn compose_sources_policy(client: &str, legacy: &str) -> Result<String> {
    let path = workspace_root()
        .join("envoy-config/sandbox")
        .join(COMPOSE_SOURCES_POLICY);
    let text = fs::read_to_string(&path)
        .map_err(|e| Error(format!("cannot read {}: {e}", path.display())))?;
    render(
        &text,
        &BTreeMap::from([
            ("CLIENT_ADDRESS", client.to_string()),
            ("LEGACY_ADDRESS", legacy.to_string()),
        ]),
    )
}

/// The policy files of the compose sandbox's server sidecars: the sample policies for `mode`,
/// then `extra` (the rendered sources policy, once the addresses are known).
pub fn compose_policy_files(mode: Mode, extra: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = policy_files(&workspace_root().join("envoy-config/policies"), mode)?;
    files.extend(extra.iter().cloned());
    Ok(files)
}

/// Write the server sidecars' configurations (`generated/envoy/server-{http,tcp}.yaml`) and
/// `generated/plugin-config.json` for these policies, rewriting the files in place (a running
/// container's bind mount keeps seeing them). Returns the files written.
pub fn render_compose_servers(out: &Path, cli: &Path, files: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let ports = Ports::default();
    let http = plugin_config(cli, files, Some(ports.inbound))?;
    let tcp = plugin_config(cli, files, None)?;
    let envoy_dir = out.join("envoy");
    fs::create_dir_all(&envoy_dir)?;
    let mut written = Vec::new();
    for (name, text) in [
        (HTTP_TEMPLATE, compose_server_http(&http)?),
        (TCP_TEMPLATE, compose_server_tcp(&tcp)?),
    ] {
        let path = envoy_dir.join(name);
        fs::write(&path, text)?;
        written.push(path);
    }
    let plugin = out.join("plugin-config.json");
    fs::write(&plugin, serde_json::to_string_pretty(&http)?)?;
    written.push(plugin);
    Ok(written)
}

/// Write the compose sandbox's inputs into `out` (`envoy-config/sandbox/generated/`):
/// `envoy/<template name>` for every template (rendered for the containers), `certs/` (kept when
/// complete), `meshauthz.wasm` (a copy of the built module), `plugin-config.json`. Returns the
/// files written.
pub fn render_compose(
    out: &Path,
    cli: &Path,
    mode: Mode,
    extra: &[PathBuf],
) -> Result<Vec<PathBuf>> {
    let envoy_dir = out.join("envoy");
    let certs = out.join("certs");
    fs::create_dir_all(&envoy_dir)?;
    // Keep the certificates of an earlier rendering: running containers trust that CA (only the
    // server sidecars restart for the STRICT step).
    let client = format!("client-{CLIENT_NS}-{CLIENT_SA}");
    let have_certs = ["ca.crt", "server.crt", "server.key"]
        .iter()
        .map(|f| f.to_string())
        .chain([format!("{client}.crt"), format!("{client}.key")])
        .all(|f| certs.join(f).is_file());
    if !have_certs {
        let pki = Pki::generate(&certs)?;
        pki.client(CLIENT_NS, CLIENT_SA)?;
    }
    let module = out.join("meshauthz.wasm");
    fs::copy(module_path()?, &module)?;
    let mut written = vec![module];
    written.extend(render_compose_servers(
        out,
        cli,
        &compose_policy_files(mode, extra)?,
    )?);
    let client = envoy_dir.join(CLIENT_TEMPLATE);
    fs::write(&client, compose_client()?)?;
    written.push(client);
    written.push(certs);
    Ok(written)
}
