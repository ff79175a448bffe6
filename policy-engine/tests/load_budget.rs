//! Loading budget (issue 12), pinned on byte counts, not on time: a global allocator counts what
//! the compiled engine keeps, which is deterministic for a given policy set.
//!
//! * Policies for other workloads (another namespace, a selector that does not select the
//!   workload) are never compiled: 10,000 of them leave an engine as small as an empty one.
//! * A compiled heavy policy (issue 12's: up to 4 rules, 5 principals, namespaces with
//!   `notIpBlocks`, 3 paths, ports, hosts with wildcards, two `when` keys, one in five with a CEL
//!   condition; `benches/support/heavy.rs`) keeps at most [`BYTES_PER_HEAVY_POLICY`].
//!
//! Times and peaks are measured by `cargo bench -p meshauthz-policy-engine --bench load`
//! (BENCHMARKS.md, "Loading").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use peak_alloc::PeakAlloc;
use policy_engine::{plugin_config, Engine, PluginConfig};

#[path = "../benches/support/heavy.rs"]
mod heavy;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Bytes one compiled heavy policy may keep (measured: see BENCHMARKS.md "Loading"; the budget
/// leaves about 20 % for changes that add a field).
const BYTES_PER_HEAVY_POLICY: usize = 9_000;

/// Bytes an engine with no applicable policy may keep (a few empty tables).
const EMPTY_ENGINE: usize = 2_048;

fn decode(text: &str) -> PluginConfig {
    plugin_config::decode(text.as_bytes())
        .unwrap_or_else(|d| panic!("{d}"))
        .0
}

/// Compiles `cfg` for its workload; returns the engine and the bytes it keeps.
fn compile(cfg: &PluginConfig) -> (Engine, usize) {
    let workload = cfg.workload.clone().unwrap();
    let before = ALLOC.current_usage();
    let (engine, warnings) =
        Engine::compile(&cfg.policies, &workload, &cfg.mesh).unwrap_or_else(|d| panic!("{d}"));
    drop(warnings);
    let kept = ALLOC.current_usage().saturating_sub(before);
    (engine, kept)
}

/// One test: the allocator counts every thread of this process, so nothing else may run beside it.
#[test]
fn loading_keeps_only_what_applies_and_within_budget() {
    let (_, empty) = compile(&decode(&heavy::plugin_config(0, 0)));
    assert!(empty <= EMPTY_ENGINE, "an empty engine keeps {empty} bytes");

    // 10,000 heavy policies for other workloads: nothing compiled, nothing kept.
    let others = decode(&heavy::plugin_config(0, 10_000));
    assert_eq!(others.policies.authorization_policies.len(), 10_000);
    let (engine, kept) = compile(&others);
    assert!(engine.policies().is_empty());
    assert!(
        engine.named_ports().is_empty(),
        "ports of policies that do not apply: {:?}",
        engine.named_ports()
    );
    assert!(
        kept <= EMPTY_ENGINE,
        "10,000 policies of other workloads left {kept} bytes in the engine"
    );
    drop((engine, others));

    // 1,000 applicable heavy policies, with the 10,000 others beside them.
    let cfg = decode(&heavy::plugin_config(1_000, 10_000));
    let (engine, kept) = compile(&cfg);
    assert_eq!(engine.policies().len(), 1_000);
    assert_eq!(engine.named_ports(), [8080, 8443]);
    let per_policy = kept / 1_000;
    assert!(
        per_policy <= BYTES_PER_HEAVY_POLICY,
        "a compiled heavy policy keeps {per_policy} bytes, over the budget of {BYTES_PER_HEAVY_POLICY}"
    );
    drop((engine, cfg));

    // As the module loads (`Engine::compile_owned`): each decoded policy is freed once compiled,
    // so compiling never holds the whole decoded set and the whole engine at once (the VM's
    // linear memory never shrinks: its peak is what it keeps). Measured: the usage rises about
    // 1.4 MB above the decoded set while the engine grows to 4.8 MB; compiling from a borrowed
    // set rises by the whole engine.
    let cfg = decode(&heavy::plugin_config(1_000, 0));
    let workload = cfg.workload.clone().unwrap();
    let before = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let (engine, warnings) =
        Engine::compile_owned(cfg.policies, &workload, &cfg.mesh).unwrap_or_else(|d| panic!("{d}"));
    drop(warnings);
    let rise = ALLOC.peak_usage().saturating_sub(before);
    assert_eq!(engine.policies().len(), 1_000);
    let engine_bytes = per_policy * 1_000;
    assert!(
        rise <= engine_bytes / 2,
        "compiling 1,000 heavy policies rose {rise} bytes above the decoded set (the engine keeps about {engine_bytes}): the decoded policies are not freed as they are compiled"
    );
    // Printed for the record (`cargo test -- --nocapture`).
    println!(
        "empty engine: {empty} B; per compiled heavy policy: {per_policy} B; \
         compile_owned rose {rise} B above the decoded set"
    );
}
