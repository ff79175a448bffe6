//! The built module (`make build`) imports only functions Envoy's proxy-wasm host provides, and
//! exports what Envoy calls. Reads `target/wasm32-wasip1/release/meshauthz.wasm`; without it the
//! test is skipped with a message, unless `CI` is set, where a missing module is a failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::path::PathBuf;

use meshauthz_tools::wasm::{imports_exports, Import};

/// proxy-wasm-cpp-host `FOR_ALL_HOST_FUNCTIONS` plus the ABI 0.2.1 specific ones
/// (`continue_stream`, `close_stream`, `get_log_level`), registered under `env` as `proxy_<name>`.
const PROXY_FUNCTIONS: &[&str] = &[
    "log",
    "get_status",
    "set_property",
    "get_property",
    "send_local_response",
    "get_shared_data",
    "set_shared_data",
    "register_shared_queue",
    "resolve_shared_queue",
    "dequeue_shared_queue",
    "enqueue_shared_queue",
    "get_header_map_value",
    "add_header_map_value",
    "replace_header_map_value",
    "remove_header_map_value",
    "get_header_map_pairs",
    "set_header_map_pairs",
    "get_header_map_size",
    "get_buffer_status",
    "get_buffer_bytes",
    "set_buffer_bytes",
    "http_call",
    "grpc_call",
    "grpc_stream",
    "grpc_close",
    "grpc_cancel",
    "grpc_send",
    "set_tick_period_milliseconds",
    "get_current_time_nanoseconds",
    "define_metric",
    "increment_metric",
    "record_metric",
    "get_metric",
    "set_effective_context",
    "done",
    "call_foreign_function",
    "continue_stream",
    "close_stream",
    "get_log_level",
];

/// The WASI functions the cpp host implements that a Rust wasip1 module may import.
const WASI_FUNCTIONS: &[&str] = &[
    "random_get",
    "environ_get",
    "environ_sizes_get",
    "clock_time_get",
    "fd_write",
    "proc_exit",
    "sched_yield",
    "poll_oneoff",
    "args_get",
    "args_sizes_get",
    "fd_close",
    "fd_seek",
    "fd_fdstat_get",
];

fn module_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target/wasm32-wasip1/release/meshauthz.wasm")
}

#[test]
fn module_imports_only_what_envoy_provides() {
    let path = module_path();
    let Ok(wasm) = std::fs::read(&path) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{} is missing (CI is set): run `make build` first",
                path.display()
            );
        }
        eprintln!(
            "SKIPPED: {} not built (run `make build`); set CI=1 to make this a failure",
            path.display()
        );
        return;
    };
    let (imports, exports) = imports_exports(&wasm).expect("a well-formed wasm module");
    eprintln!(
        "module: {} bytes ({:.0} KiB), {} imports, {} exports",
        wasm.len(),
        wasm.len() as f64 / 1024.0,
        imports.len(),
        exports.len()
    );
    let mut bad = Vec::new();
    for Import { module, name, kind } in &imports {
        let ok = *kind == 0
            && match module.as_str() {
                "env" => name
                    .strip_prefix("proxy_")
                    .is_some_and(|n| PROXY_FUNCTIONS.contains(&n)),
                "wasi_snapshot_preview1" => WASI_FUNCTIONS.contains(&name.as_str()),
                _ => false,
            };
        if !ok {
            bad.push(format!("{module}.{name} (kind {kind})"));
        }
    }
    assert!(
        bad.is_empty(),
        "imports Envoy does not provide: {bad:?}\nall: {imports:?}"
    );
    // What Envoy needs to find: the ABI marker, the allocator, the entry points used.
    for needed in [
        "proxy_abi_version_0_2_1",
        "proxy_on_memory_allocate",
        "_initialize",
        "proxy_on_context_create",
        "proxy_on_configure",
        "proxy_on_request_headers",
        "proxy_on_new_connection",
        "proxy_on_downstream_data",
        // Counters are flushed from `on_tick`; without the export they would never reach Envoy.
        "proxy_on_tick",
        // Connection facts are forgotten when the network context is deleted.
        "proxy_on_delete",
    ] {
        assert!(
            exports.iter().any(|e| e == needed),
            "export {needed} missing: {exports:?}"
        );
    }
    // `make build` removes the callback exports meshauthz does not implement: Envoy calls every
    // exported callback per request / body chunk / upstream chunk, per filter.
    let unused: Vec<&String> = exports
        .iter()
        .filter(|e| {
            [
                "proxy_on_request_body",
                "proxy_on_response_headers",
                "proxy_on_response_body",
                "proxy_on_log",
                "proxy_on_upstream_data",
                "proxy_on_downstream_connection_close",
            ]
            .contains(&e.as_str())
        })
        .collect();
    assert!(
        unused.is_empty(),
        "the module exports callbacks it does not implement: {unused:?}; build it with `make build` (it runs meshauthz-strip-exports)"
    );
    // A size budget: the module is loaded into every worker's VM.
    assert!(
        wasm.len() < 4 * 1024 * 1024,
        "module grew to {} bytes",
        wasm.len()
    );
}
