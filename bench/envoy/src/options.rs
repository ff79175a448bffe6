//! Command-line options.

use std::path::PathBuf;

use meshauthz_harness::{Error, Result};

pub const USAGE: &str = "usage: bench-envoy --cli PATH [--oha PATH] [--instructions] [--rounds 7] [--seconds 2] \
[--connections 4] [--warmup 500] [--requests 2000] [--max-policies 10000] [--no-breakdown] [--only KEY,KEY] \
[--out FILE] [--csv FILE] [--realistic] [--baseline-module FILE]... [--startup REPEATS]";

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Throughput (oha) and Envoy's CPU time, interleaved rounds (`make bench-envoy`).
    Timed,
    /// Instructions per request under callgrind (`make bench-instructions`).
    Instructions,
    /// Start-up only: each variant's Envoy started `repeats` times, time to ready and CPU.
    Startup { repeats: usize },
}

pub struct Opts {
    pub mode: Mode,
    /// The load generator (timed mode).
    pub oha: PathBuf,
    /// `meshauthz` (its `plugin-config` turns the Istio YAML into the plugin configuration).
    pub cli: PathBuf,
    pub rounds: usize,
    pub seconds: u64,
    pub connections: u32,
    /// Instruction mode: requests before the measured window, and in it.
    pub warmup: u64,
    pub requests: u64,
    pub max_policies: usize,
    pub breakdown: bool,
    pub only: Vec<String>,
    pub out: Option<PathBuf>,
    /// Timed mode: one row per variant as CSV (what `bench/envoy/plot.py` draws).
    pub csv: Option<PathBuf>,
    /// Only the no-filter variant and issue 12's realistic mix (every policy count and chain).
    pub realistic_only: bool,
    /// Other builds of the module, each run as extra variants (`c-10-base`, `rc-10-base2`, ...).
    pub baseline_modules: Vec<PathBuf>,
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Opts> {
    let mut o = Opts {
        mode: Mode::Timed,
        oha: PathBuf::new(),
        cli: PathBuf::new(),
        rounds: 7,
        seconds: 2,
        connections: 4,
        warmup: 500,
        requests: 2000,
        max_policies: 10_000,
        breakdown: true,
        only: Vec::new(),
        out: None,
        csv: None,
        realistic_only: false,
        baseline_modules: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| Error(format!("{a} needs a value\n{USAGE}")))
        };
        match a.as_str() {
            "--instructions" => o.mode = Mode::Instructions,
            "--startup" => {
                o.mode = Mode::Startup {
                    repeats: number(&a, &value()?)?,
                }
            }
            "--oha" => o.oha = PathBuf::from(value()?),
            "--cli" => o.cli = PathBuf::from(value()?),
            "--rounds" => o.rounds = number(&a, &value()?)?,
            "--seconds" => o.seconds = number(&a, &value()?)?,
            "--connections" => o.connections = number(&a, &value()?)?,
            "--warmup" => o.warmup = number(&a, &value()?)?,
            "--requests" => o.requests = number(&a, &value()?)?,
            "--max-policies" => o.max_policies = number(&a, &value()?)?,
            "--no-breakdown" => o.breakdown = false,
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--csv" => o.csv = Some(PathBuf::from(value()?)),
            "--realistic" => o.realistic_only = true,
            "--only" => o.only = value()?.split(',').map(str::to_string).collect(),
            "--baseline-module" => o.baseline_modules.push(PathBuf::from(value()?)),
            other => return Err(Error(format!("unknown argument {other:?}\n{USAGE}"))),
        }
    }
    let mut required = vec![("--cli", &o.cli)];
    if o.mode == Mode::Timed {
        required.push(("--oha", &o.oha));
    }
    for (flag, path) in required {
        if !path.is_file() {
            return Err(Error(format!(
                "{flag}: {} is not a file (run `make bench-envoy`, which installs oha and builds the CLI)",
                path.display()
            )));
        }
    }
    if let Some(path) = o.baseline_modules.iter().find(|p| !p.is_file()) {
        return Err(Error(format!(
            "--baseline-module: {} is not a file",
            path.display()
        )));
    }
    if o.rounds == 0 || o.seconds == 0 || o.connections == 0 || o.requests == 0 {
        return Err(Error(
            "--rounds, --seconds, --connections and --requests must be positive".into(),
        ));
    }
    Ok(o)
}

pub fn number<T: std::str::FromStr>(flag: &str, s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| Error(format!("{flag}: {s:?} is not a number")))
}
