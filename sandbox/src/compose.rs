//! The docker-compose sandbox (`envoy-config/sandbox/docker-compose.yaml`) on a real container
//! engine: Docker with `docker compose`, or podman with `podman-compose`.
//!
//! - [`Engine::detect`] finds an engine that can run containers, or says in one line why none can.
//!   With podman it selects a `containers.conf` of its own through `CONTAINERS_CONF` (`runc` as the
//!   runtime when installed, `nofile`/`nproc` limits that root may set everywhere).
//! - [`Engine::build_scratch_image`] builds the Envoy image (the very binary the e2e suite runs,
//!   `FROM scratch` with the glibc files `ldd` lists) and a small curl image, so that nothing is
//!   pulled from a registry.
//! - [`Project`] starts the compose file (`up -d`), finds its containers by the compose labels,
//!   runs commands in them, reads their logs and addresses, and always takes everything down again
//!   (`down`, then any container or network still labelled with the project), also on drop.
//!
//! Every command runs with a timeout ([`run`]).

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshauthz_harness::envoy::http10;
use meshauthz_harness::{err, Error, Result};

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Exit code 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// The last non-empty line of stderr (else stdout), for one-line reasons.
    pub fn last_line(&self) -> String {
        let last = |t: &str| {
            t.lines()
                .rfind(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        };
        last(&self.stderr)
            .or_else(|| last(&self.stdout))
            .unwrap_or_default()
    }
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `cmd` (stdin closed) and collect its output; kill it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let shown = show(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error(format!("cannot run `{shown}`: {e}")))?;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return err(format!(
                "`{shown}` did not finish within {timeout:?}; killed"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).to_string(),
        stderr: String::from_utf8_lossy(&stderr).to_string(),
    })
}

/// Run `cmd`; an error (with its last output line) unless it exits 0.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let shown = show(cmd);
    let out = run(cmd, timeout)?;
    if out.ok() {
        Ok(out)
    } else {
        err(format!(
            "`{shown}` failed ({:?}): {}",
            out.code,
            out.last_line()
        ))
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Docker or podman.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `docker` with `docker compose`.
    Docker,
    /// `podman` with `podman-compose`.
    Podman,
}

/// A container engine that runs containers here.
#[derive(Clone, Debug)]
pub struct Engine {
    /// Docker or podman.
    pub kind: Kind,
    /// `docker` / `podman`.
    pub program: String,
    /// `docker compose` / `podman-compose`.
    pub compose: Vec<String>,
    /// Environment for every engine command (`CONTAINERS_CONF` for podman).
    pub env: Vec<(String, String)>,
}

/// The `containers.conf` the sandbox gives podman (see the module documentation).
pub fn containers_conf(runc: bool) -> String {
    let mut text = String::from(
        "# Written by the meshauthz compose sandbox; selected through CONTAINERS_CONF.\n\
         [containers]\n\
         # The default limits (nofile 1048576) exceed what root may set on some machines.\n\
         default_ulimits = [\"nofile=20000:20000\", \"nproc=20000:20000\"]\n",
    );
    if runc {
        text.push_str(
            "[engine]\n\
             # crun refuses a hybrid cgroup v1/v2 set-up; runc runs there.\n\
             runtime = \"runc\"\n",
        );
    }
    text
}

impl Engine {
    /// The engine to use, or why none can run: Docker when its daemon answers and `docker
    /// compose` exists, else podman with `podman-compose`. `work` holds podman's
    /// `containers.conf`.
    pub fn detect(work: &Path) -> std::result::Result<Engine, String> {
        let short = Duration::from_secs(30);
        let mut reasons = Vec::new();
        if on_path("docker").is_some() {
            match run(Command::new("docker").args(["info"]), short) {
                Ok(o) if o.ok() => {
                    match run(Command::new("docker").args(["compose", "version"]), short) {
                        Ok(o) if o.ok() => {
                            return Ok(Engine {
                                kind: Kind::Docker,
                                program: "docker".into(),
                                compose: vec!["docker".into(), "compose".into()],
                                env: Vec::new(),
                            })
                        }
                        _ => reasons.push("docker has no `docker compose`".to_string()),
                    }
                }
                Ok(o) => reasons.push(format!("docker: no daemon ({})", o.last_line())),
                Err(e) => reasons.push(format!("docker: {e}")),
            }
        } else {
            reasons.push("no docker".into());
        }
        match (on_path("podman"), on_path("podman-compose")) {
            (Some(_), Some(_)) => {
                let conf = work.join("containers.conf");
                if let Err(e) = fs::create_dir_all(work)
                    .and_then(|()| fs::write(&conf, containers_conf(on_path("runc").is_some())))
                {
                    return Err(format!("cannot write {}: {e}", conf.display()));
                }
                let engine = Engine {
                    kind: Kind::Podman,
                    program: "podman".into(),
                    compose: vec!["podman-compose".into()],
                    env: vec![("CONTAINERS_CONF".into(), conf.display().to_string())],
                };
                match run(&mut engine.cmd(["info"]), short) {
                    Ok(o) if o.ok() => return Ok(engine),
                    Ok(o) => reasons.push(format!("podman info failed: {}", o.last_line())),
                    Err(e) => reasons.push(format!("podman: {e}")),
                }
            }
            (Some(_), None) => reasons.push("podman without podman-compose".into()),
            _ => reasons.push("no podman".into()),
        }
        Err(reasons.join("; "))
    }

    /// `docker` / `podman` with `args` and the engine's environment.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(&self.program);
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// The name users type for the compose command (`docker compose`, `podman-compose`).
    pub fn compose_name(&self) -> String {
        self.compose.join(" ")
    }

    fn image_exists(&self, tag: &str) -> bool {
        run(
            &mut self.cmd(["image", "inspect", "--format", "{{.Id}}", tag]),
            Duration::from_secs(30),
        )
        .is_ok_and(|o| o.ok())
    }

    /// Build `tag` `FROM scratch` holding `files` (each at its own path, with the shared
    /// libraries `ldd` lists for it), `extra` (path -> content) and `entrypoint`. Skipped when
    /// the image exists and was built from the same files (a stamp in `work`).
    pub fn build_scratch_image(
        &self,
        work: &Path,
        tag: &str,
        files: &[(PathBuf, &str)],
        extra: &[(&str, &str)],
        entrypoint: &[&str],
    ) -> Result<bool> {
        let mut all: BTreeSet<(PathBuf, String)> = BTreeSet::new();
        for (src, dest) in files {
            all.insert((src.clone(), dest.to_string()));
            for lib in shared_libraries(src)? {
                let dest = lib.display().to_string();
                all.insert((lib, dest));
            }
        }
        let mut stamp = format!("{tag}\n{entrypoint:?}\n{extra:?}\n");
        for (src, dest) in &all {
            let meta = fs::metadata(src)?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            stamp.push_str(&format!(
                "{} {} {} {mtime}\n",
                src.display(),
                dest,
                meta.len()
            ));
        }
        let safe: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let stamp_file = work.join(format!("{safe}.stamp"));
        if self.image_exists(tag) && fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp)
        {
            return Ok(false);
        }
        let ctx = work.join(format!("{safe}.context"));
        let _ = fs::remove_dir_all(&ctx);
        let rootfs = ctx.join("rootfs");
        for (src, dest) in &all {
            let target = rootfs.join(dest.trim_start_matches('/'));
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::copy(src, &target)
                .map_err(|e| Error(format!("copy {} into the image: {e}", src.display())))?;
        }
        for (dest, content) in extra {
            let target = rootfs.join(dest.trim_start_matches('/'));
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&target, content)?;
        }
        let entry = serde_json::to_string(entrypoint)?;
        fs::write(
            ctx.join("Containerfile"),
            format!(
                "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/bin:/usr/bin:/bin\nENTRYPOINT {entry}\n"
            ),
        )?;
        run_ok(
            self.cmd(["build", "-q", "-t", tag, "-f"])
                .arg(ctx.join("Containerfile"))
                .arg(&ctx),
            Duration::from_secs(600),
        )?;
        let _ = fs::remove_dir_all(&ctx);
        fs::write(&stamp_file, stamp)?;
        Ok(true)
    }
}

/// The shared libraries (and the loader) `ldd` lists for `binary`, as absolute paths.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = run(Command::new("ldd").arg(binary), Duration::from_secs(30))?;
    if !out.ok() {
        // A static binary: `ldd` says "not a dynamic executable" and exits 1.
        if out.stdout.contains("not a dynamic") || out.stderr.contains("not a dynamic") {
            return Ok(Vec::new());
        }
        return err(format!("ldd {}: {}", binary.display(), out.last_line()));
    }
    let mut libs = Vec::new();
    for line in out.stdout.lines() {
        if line.contains("not found") {
            return err(format!("ldd {}: {}", binary.display(), line.trim()));
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// A compose project: the compose file in `dir`, started under `name`.
pub struct Project {
    /// The engine.
    pub engine: Engine,
    /// Project name (`-p`).
    pub name: String,
    /// The folder holding `docker-compose.yaml` (and `generated/`).
    pub dir: PathBuf,
    /// Variables for the compose file (images, published ports).
    pub vars: Vec<(String, String)>,
    started: bool,
}

/// How long `up`, `down` and image builds may take.
pub const COMPOSE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one command in a container may take.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(20);

impl Project {
    /// A project (nothing started yet).
    pub fn new(engine: Engine, name: &str, dir: &Path, vars: Vec<(String, String)>) -> Project {
        Project {
            engine,
            name: name.to_string(),
            dir: dir.to_path_buf(),
            vars,
            started: false,
        }
    }

    fn compose_cmd(&self, args: &[&str]) -> Command {
        let (program, first) = self
            .engine
            .compose
            .split_first()
            .map(|(p, rest)| (p.as_str(), rest))
            .unwrap_or(("docker", &[]));
        let mut c = Command::new(program);
        c.args(first)
            .args(["-p", &self.name, "-f"])
            .arg(self.dir.join("docker-compose.yaml"))
            .args(args)
            .current_dir(&self.dir);
        for (k, v) in self.engine.env.iter().chain(&self.vars) {
            c.env(k, v);
        }
        c
    }

    /// `compose up -d` (stopping leftovers of the same project first).
    pub fn up(&mut self) -> Result<()> {
        self.down()?;
        self.started = true;
        run_ok(&mut self.compose_cmd(&["up", "-d"]), COMPOSE_TIMEOUT)?;
        Ok(())
    }

    fn labelled(&self, what: &str) -> Result<Vec<String>> {
        let filter = format!("label=com.docker.compose.project={}", self.name);
        let args: Vec<&str> = match what {
            "container" => vec!["ps", "-a", "-q", "--filter", &filter],
            _ => vec!["network", "ls", "-q", "--filter", &filter],
        };
        let out = run_ok(&mut self.engine.cmd(args), Duration::from_secs(60))?;
        Ok(out.stdout.split_whitespace().map(str::to_string).collect())
    }

    /// Containers and networks of this project still present.
    pub fn leftovers(&self) -> Result<(Vec<String>, Vec<String>)> {
        Ok((self.labelled("container")?, self.labelled("network")?))
    }

    /// `compose down`, then remove any container or network still labelled with the project
    /// (podman-compose leaves its network behind). Errors if something remains.
    pub fn down(&mut self) -> Result<()> {
        let composed = run(&mut self.compose_cmd(&["down"]), COMPOSE_TIMEOUT);
        let (containers, networks) = self.leftovers()?;
        if !containers.is_empty() {
            let mut args = vec!["rm".to_string(), "-f".into()];
            args.extend(containers);
            let _ = run(&mut self.engine.cmd(args), COMPOSE_TIMEOUT);
        }
        if !networks.is_empty() {
            let mut args = vec!["network".to_string(), "rm".into()];
            args.extend(networks);
            let _ = run(&mut self.engine.cmd(args), Duration::from_secs(60));
        }
        let (containers, networks) = self.leftovers()?;
        self.started = false;
        if containers.is_empty() && networks.is_empty() {
            Ok(())
        } else {
            err(format!(
                "project {} not removed: containers {containers:?}, networks {networks:?} ({} down: {})",
                self.name,
                self.engine.compose_name(),
                composed.map(|o| o.last_line()).unwrap_or_else(|e| e.0)
            ))
        }
    }

    /// The container of `service`.
    pub fn container(&self, service: &str) -> Result<String> {
        let out = run_ok(
            &mut self.engine.cmd([
                "ps",
                "-a",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.name),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
                "--format",
                "{{.Names}}",
            ]),
            Duration::from_secs(30),
        )?;
        match out.stdout.split_whitespace().next() {
            Some(name) => Ok(name.to_string()),
            None => err(format!(
                "no container for service {service} in project {}",
                self.name
            )),
        }
    }

    /// Run `args` in the container of `service` (bounded by [`EXEC_TIMEOUT`]).
    pub fn exec(&self, service: &str, args: &[&str]) -> Result<Output> {
        let name = self.container(service)?;
        let mut all = vec!["exec", name.as_str()];
        all.extend_from_slice(args);
        run(&mut self.engine.cmd(all), EXEC_TIMEOUT)
    }

    /// The service container's standard output (its own log lines on stderr are left out).
    pub fn stdout(&self, service: &str) -> Result<String> {
        let name = self.container(service)?;
        Ok(run_ok(
            &mut self.engine.cmd(["logs", name.as_str()]),
            Duration::from_secs(30),
        )?
        .stdout)
    }

    /// The service container's output, both streams, last `n` lines (for failure messages).
    pub fn log_tail(&self, service: &str, n: usize) -> String {
        let Ok(name) = self.container(service) else {
            return String::new();
        };
        run(
            &mut self
                .engine
                .cmd(["logs", "--tail", &n.to_string(), name.as_str()]),
            Duration::from_secs(30),
        )
        .map(|o| o.stdout + &o.stderr)
        .unwrap_or_default()
    }

    /// The service container's address on the compose network.
    pub fn address(&self, service: &str) -> Result<String> {
        let name = self.container(service)?;
        let out = run_ok(
            &mut self.engine.cmd([
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                name.as_str(),
            ]),
            Duration::from_secs(30),
        )?;
        match out.stdout.split_whitespace().next() {
            Some(a) if a.parse::<std::net::IpAddr>().is_ok() => Ok(a.to_string()),
            _ => err(format!(
                "{service}: no address on the compose network ({:?})",
                out.stdout
            )),
        }
    }

    /// Restart the container of `service`.
    pub fn restart(&self, service: &str) -> Result<()> {
        let name = self.container(service)?;
        run_ok(
            &mut self.engine.cmd(["restart", "-t", "2", name.as_str()]),
            Duration::from_secs(120),
        )?;
        Ok(())
    }

    /// Is the service container running?
    pub fn running(&self, service: &str) -> bool {
        self.container(service)
            .and_then(|name| {
                run(
                    &mut self.engine.cmd([
                        "inspect",
                        "--format",
                        "{{.State.Running}}",
                        name.as_str(),
                    ]),
                    Duration::from_secs(30),
                )
            })
            .is_ok_and(|o| o.stdout.trim() == "true")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if self.started {
            if let Err(e) = self.down() {
                eprintln!("sandbox compose: {e}");
            }
        }
    }
}

/// Wait (bounded) until the Envoy admin published on 127.0.0.1:`port` answers `/ready` with 200.
pub fn wait_ready(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if matches!(http10(port, "GET", "/ready"), Ok((200, _))) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
