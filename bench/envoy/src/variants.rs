//! The variants a run measures: which filters the server Envoy runs, and on which policies.

use std::path::PathBuf;

use crate::mix::Mix;
use crate::options::{Mode, Opts};

/// Which filters a variant's listener runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// HTTP connection manager with the router only.
    NoFilter,
    /// Envoy's RBAC filters with the policies as istiod writes them, then the router.
    Rbac,
    /// The meshauthz stages kept from the template: the network filter, the HTTP decide stage,
    /// the RBAC LOG companion, the HTTP enforce stage.
    Meshauthz {
        net: bool,
        decide: bool,
        log: bool,
        enforce: bool,
    },
    /// `"enforce": "native"` (template `server-http-native.yaml`): the network filter, the decide
    /// stage, the RBAC LOG companion, then Envoy's RBAC filter in DENY mode on the decision.
    Native,
    /// `"enforce": "connection"` (template `server-http-conn.yaml`): the network filter decides
    /// each connection once and Envoy's RBAC filter answers each request from its verdict.
    Connection,
    /// `filters` copies of the no-op proxy-wasm filter (`bench/noop-filter`, one VM), each making
    /// `calls` host calls of kind `call` (see the module) per request: the floor of any proxy-wasm
    /// filter in this Envoy, and what a host call costs. With `stripped`, the module as
    /// `meshauthz-strip-exports` leaves it (as `make build` leaves meshauthz's), else with every
    /// callback the SDK exports.
    Noop {
        filters: usize,
        calls: u32,
        call: &'static str,
        stripped: bool,
    },
}

pub const FULL: Chain = Chain::Meshauthz {
    net: true,
    decide: true,
    log: true,
    enforce: true,
};

#[derive(Clone)]
pub struct Variant {
    pub key: String,
    pub what: String,
    pub chain: Chain,
    /// The mix's size N (see [`Mix`]; [`Variant::policies`] is the number of policies).
    pub size: usize,
    pub mix: Mix,
    /// Another build of the meshauthz module (`--baseline-module`); `None`: the current one.
    pub module: Option<PathBuf>,
}

impl Variant {
    /// How many policies the workload has.
    pub fn policies(&self) -> usize {
        self.mix.policies(self.size)
    }

    /// Does the variant authorize (so a principal no policy names must get 403)?
    pub fn authorizes(&self) -> bool {
        self.size > 0
            && matches!(
                self.chain,
                Chain::Rbac
                    | Chain::Native
                    | Chain::Connection
                    | Chain::Meshauthz { decide: true, .. }
            )
    }
}

/// The one-Wasm-call chain when no AUDIT policy applies (`"enforce": "decide"`): the network
/// filter and the decide stage, no RBAC LOG companion, no enforce stage.
pub const DECIDE_ONLY: Chain = Chain::Meshauthz {
    net: true,
    decide: true,
    log: false,
    enforce: false,
};

const UNIFORM: Mix = Mix::Uniform { audit: false };
const UNIFORM_AUDIT: Mix = Mix::Uniform { audit: true };

fn realistic(audit: bool, first: bool) -> Mix {
    Mix::Realistic { audit, first }
}

fn v(key: &str, what: &str, chain: Chain, size: usize, mix: Mix) -> Variant {
    Variant {
        key: key.to_string(),
        what: what.to_string(),
        chain,
        size,
        mix,
        module: None,
    }
}

/// The module built without CEL (`meshauthz-nocel.wasm`, when `make build` wrote it) on the
/// realistic mix, which has no CEL condition: the same per-request work, a faster start-up
/// (`*-nocel`; README, "The module without CEL").
fn nocel_variants() -> Vec<Variant> {
    let Ok(nocel) = meshauthz_harness::module_nocel_path() else {
        eprintln!("bench: no meshauthz-nocel.wasm (`make build`): its variants are left out");
        return Vec::new();
    };
    [
        ("rc-10-nocel", "meshauthz without CEL (meshauthz-nocel.wasm), full chain, realistic mix, last ALLOW", FULL, realistic(true, false)),
        ("rf-10-noaudit-nocel", "meshauthz without CEL (meshauthz-nocel.wasm), decide stage alone, realistic mix without AUDIT, last ALLOW", DECIDE_ONLY, realistic(false, false)),
    ]
    .into_iter()
    .map(|(key, what, chain, mix)| {
        let mut b = v(key, what, chain, 10, mix);
        b.module = Some(nocel.clone());
        b
    })
    .collect()
}

/// Policies that read only the connection ([`Mix::Principals`]): native RBAC (`pb-`), the one
/// Wasm stage (`pf-`, `"enforce": "decide"`) and the connection shape (`pk-`, `"enforce":
/// "connection"`), at 10 and 1,000 policies. Picked with `--only`.
fn connection_variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for n in [10, 1000] {
        for (prefix, what, chain) in [
            ("pb", "Envoy RBAC (istiod style)", Chain::Rbac),
            (
                "pf",
                "meshauthz, decide stage alone (enforce: decide)",
                DECIDE_ONLY,
            ),
            (
                "pk",
                "meshauthz, decided once per connection (enforce: connection)",
                Chain::Connection,
            ),
        ] {
            out.push(v(
                &format!("{prefix}-{n}"),
                &format!("{what}, principals only"),
                chain,
                n,
                Mix::Principals,
            ));
        }
    }
    out
}

/// Issue 12's realistic mix, one cell per (policy count, first or last ALLOW, with or without
/// AUDIT) and per chain: native RBAC as istiod writes it (`rb-`), meshauthz's full chain
/// (`rc-`), with AUDIT its chain with the native enforce stage (`rn-`, `"enforce": "native"`)
/// and, without AUDIT, its one-stage chain (`rf-`, `"enforce": "decide"`). Keys:
/// `<chain>-<N>[-first][-noaudit]`. At 10 policies only the last ALLOW (first and last are
/// nearly the same request). Native RBAC at 10,000 matched last costs about 10 ms a request:
/// timed runs include it, instruction runs (callgrind, 2,000 requests) leave it out.
fn realistic_variants(mode: Mode) -> Vec<Variant> {
    let mut out = Vec::new();
    for n in [10, 1000, 10_000] {
        let places: &[bool] = if n == 10 { &[false] } else { &[false, true] };
        for &first in places {
            for audit in [true, false] {
                let at = if first { "first" } else { "last" };
                let key = |chain: &str| {
                    format!(
                        "{chain}-{n}{}{}",
                        if first { "-first" } else { "" },
                        if audit { "" } else { "-noaudit" }
                    )
                };
                let mix = if audit {
                    "realistic mix"
                } else {
                    "realistic mix without AUDIT"
                };
                let what = |chain: &str| format!("{chain}, {mix}, {at} ALLOW");
                let slow_native = n >= 10_000 && !first && mode != Mode::Timed;
                if !slow_native {
                    let w = what("Envoy RBAC (istiod style)");
                    out.push(v(&key("rb"), &w, Chain::Rbac, n, realistic(audit, first)));
                }
                let w = what("meshauthz, full chain");
                out.push(v(&key("rc"), &w, FULL, n, realistic(audit, first)));
                if audit {
                    let w = what("meshauthz, native enforce stage (enforce: native)");
                    out.push(v(&key("rn"), &w, Chain::Native, n, realistic(audit, first)));
                } else {
                    let w = what("meshauthz, decide stage alone (enforce: decide)");
                    out.push(v(&key("rf"), &w, DECIDE_ONLY, n, realistic(audit, first)));
                }
            }
        }
    }
    out
}

pub fn variants(o: &Opts) -> Vec<Variant> {
    let mut out = vec![
        v("a", "no authz filter", Chain::NoFilter, 0, UNIFORM),
        v(
            "b-10",
            "Envoy RBAC (istiod style)",
            Chain::Rbac,
            10,
            UNIFORM,
        ),
        v(
            "b-1000",
            "Envoy RBAC (istiod style)",
            Chain::Rbac,
            1000,
            UNIFORM,
        ),
        v("c-10", "meshauthz, full chain", FULL, 10, UNIFORM),
        v("c-1000", "meshauthz, full chain", FULL, 1000, UNIFORM),
        v("c-10000", "meshauthz, full chain", FULL, 10_000, UNIFORM),
        v(
            "d-10",
            "meshauthz, full chain, + AUDIT policy (migration)",
            FULL,
            10,
            UNIFORM_AUDIT,
        ),
    ];
    for (k, base) in o.baseline_modules.iter().enumerate() {
        let n = if k == 0 {
            String::new()
        } else {
            (k + 1).to_string()
        };
        let file = base
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        for (key, mix, chain) in [
            ("c-10", UNIFORM, FULL),
            ("d-10", UNIFORM_AUDIT, FULL),
            ("rc-10", realistic(true, false), FULL),
            ("rc-1000", realistic(true, false), FULL),
            ("rf-10-noaudit", realistic(false, false), DECIDE_ONLY),
        ] {
            let size = if key == "rc-1000" { 1000 } else { 10 };
            let mut b = v(
                &format!("{key}-base{n}"),
                &format!("{key} with {file}"),
                chain,
                size,
                mix,
            );
            b.module = Some(base.clone());
            out.push(b);
        }
    }
    out.extend(realistic_variants(o.mode));
    out.extend(nocel_variants());
    out.extend(connection_variants());
    // Start-up runs may pick them too (`--only m-decide0,w-noop`): what one stage, one VM cost.
    // Under callgrind only when named (`--only w-noop,w-get8,...`), but for the floor rows: each
    // is one more Envoy start.
    if o.breakdown {
        let all = o.mode != Mode::Instructions || !o.only.is_empty();
        out.extend(
            breakdown()
                .into_iter()
                .filter(|v| all || FLOOR.contains(&v.key.as_str())),
        );
    }
    out.retain(|v| v.size <= o.max_policies);
    if (o.mode != Mode::Timed || o.realistic_only) && o.only.is_empty() {
        // Under callgrind each Envoy starts 5-10 times slower: the realistic mix only, and the
        // floor rows it is read against.
        out.retain(|v| {
            v.chain == Chain::NoFilter
                || matches!(v.mix, Mix::Realistic { .. })
                || FLOOR.contains(&v.key.as_str())
        });
    }
    if !o.only.is_empty() {
        out.retain(|v| v.chain == Chain::NoFilter || o.only.contains(&v.key));
    }
    out
}

/// The rows every run keeps beside the realistic mix (`make bench`, `make bench-instructions`):
/// an empty proxy-wasm filter, and one that makes only the host calls any authorization filter
/// needs (read what it decides on, publish the verdict). What a Wasm stage costs before it decides
/// anything, in the same run (BENCHMARKS.md, "Session 7").
const FLOOR: [&str; 2] = ["w-noop", "w-floor"];

/// meshauthz's chain taken apart at N = 10, and the floor of any proxy-wasm filter.
fn breakdown() -> Vec<Variant> {
    let m = |net, decide, log, enforce| Chain::Meshauthz {
        net,
        decide,
        log,
        enforce,
    };
    let mut out = Vec::new();
    for (key, what, chain) in [
        (
            "m-net",
            "meshauthz_net only (network filter)",
            m(true, false, false, false),
        ),
        (
            "m-decide",
            "meshauthz_http (decide) only",
            m(false, true, false, false),
        ),
        ("m-enforce", "decide + enforce", m(false, true, false, true)),
        (
            "m-log",
            "decide + RBAC LOG + enforce",
            m(false, true, true, true),
        ),
        (
            "m-rbaclog",
            "RBAC LOG companion only",
            m(false, false, true, false),
        ),
    ] {
        out.push(v(key, what, chain, 10, UNIFORM));
    }
    out.push(v(
        "m-decide0",
        "meshauthz_http (decide) only, no policy",
        m(false, true, false, false),
        0,
        UNIFORM,
    ));
    let noop = |filters, calls, call, stripped| Chain::Noop {
        filters,
        calls,
        call,
        stripped,
    };
    for (key, what, chain) in [
        (
            "w-noop-sdk",
            "1 no-op proxy-wasm filter, all SDK exports",
            noop(1, 0, "get", false),
        ),
        (
            "w-noop",
            "1 no-op proxy-wasm filter, stripped exports",
            noop(1, 0, "get", true),
        ),
        (
            "w-noop2",
            "2 no-op filters (one VM), stripped",
            noop(2, 0, "get", true),
        ),
        (
            "w-get8",
            "w-noop + 8 get_property(connection.mtls)",
            noop(1, 8, "get", true),
        ),
        (
            "w-header8",
            "w-noop + 8 get_http_request_header(:path)",
            noop(1, 8, "header", true),
        ),
        (
            "w-headers8",
            "w-noop + 8 get_http_request_headers (all)",
            noop(1, 8, "headers", true),
        ),
        (
            "w-set8",
            "w-noop + 8 set_property (filter state)",
            noop(1, 8, "set", true),
        ),
        (
            "w-floor",
            "w-noop + 1 get_property + 1 set_property (an authz filter's least)",
            noop(1, 1, "floor", true),
        ),
        (
            "w-count8",
            "w-noop + 8 increment_metric",
            noop(1, 8, "count", true),
        ),
    ] {
        out.push(v(key, what, chain, 0, UNIFORM));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse;

    /// The variants a run with `args` measures (`--cli` and `--oha` given as existing files).
    fn keys(args: &[&str]) -> Vec<String> {
        let exe = std::env::current_exe().unwrap().display().to_string();
        let all = ["--cli", &exe, "--oha", &exe]
            .into_iter()
            .chain(args.iter().copied());
        let o = parse(all.map(str::to_string)).unwrap_or_else(|e| panic!("{e}"));
        variants(&o).into_iter().map(|v| v.key).collect()
    }

    /// `make bench` and `make bench-instructions` carry the floor rows beside the realistic mix
    /// (and no other breakdown row); `--only` still picks exactly what it names.
    #[test]
    fn realistic_runs_keep_the_floor_rows() {
        for args in [&["--realistic"][..], &["--instructions"][..]] {
            let k = keys(args);
            for floor in FLOOR {
                assert!(
                    k.iter().any(|key| key == floor),
                    "{args:?}: {floor} in {k:?}"
                );
            }
            assert!(
                k.iter().any(|key| key == "rf-10-noaudit"),
                "{args:?}: {k:?}"
            );
            assert!(
                !k.iter().any(|key| key == "w-get8" || key == "m-net"),
                "{args:?}: {k:?}"
            );
        }
        assert_eq!(
            keys(&["--realistic", "--no-breakdown"])
                .iter()
                .filter(|k| FLOOR.contains(&k.as_str()))
                .count(),
            0
        );
        assert_eq!(keys(&["--only", "w-floor"]), ["a", "w-floor"]);
    }
}
