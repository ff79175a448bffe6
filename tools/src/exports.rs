//! Removing the callback exports the module does not implement (used by the
//! `meshauthz-strip-exports` build tool that `make build` runs). The Rust SDK exports every
//! proxy-wasm callback, and Envoy calls each exported one for every request, body chunk or
//! upstream data chunk, per filter: a VM entry that only runs the SDK's default. Without the
//! export, Envoy skips the call.

use crate::wasm::{leb, name, put_leb, sections};

/// The exports Envoy needs: memory, the entry point, the ABI marker, the allocator, and the
/// callbacks meshauthz implements (`proxy_on_tick` flushes the counters), plus context creation
/// and deletion (deletion also forgets a connection's recorded facts). `proxy_on_done` is not
/// among them: without it Envoy takes "done" as true and goes straight to `proxy_on_delete`,
/// which is all the SDK's default `on_done` would answer.
pub const KEEP: &[&str] = &[
    "memory",
    "_initialize",
    "proxy_abi_version_0_2_1",
    "proxy_on_memory_allocate",
    "proxy_on_context_create",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_request_headers",
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_delete",
];

/// The new export section body, and the names dropped.
fn filter_exports(body: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
    let mut pos = 0;
    let n = leb(body, &mut pos)?;
    let mut kept = Vec::new();
    let mut count = 0u64;
    let mut dropped = Vec::new();
    for _ in 0..n {
        let start = pos;
        let name = name(body, &mut pos)?;
        pos += 1; // kind
        leb(body, &mut pos)?; // index
        if KEEP.contains(&name.as_str()) {
            kept.extend_from_slice(body.get(start..pos)?);
            count += 1;
        } else {
            dropped.push(name);
        }
    }
    let mut out = Vec::new();
    put_leb(count, &mut out);
    out.extend(kept);
    Some((out, dropped))
}

/// The module with only [`KEEP`] exported, and the names dropped; `None` if `wasm` is not a
/// well-formed module.
pub fn rewrite(wasm: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
    let sections = sections(wasm)?;
    let mut out = wasm.get(0..8)?.to_vec();
    let mut dropped = Vec::new();
    for s in sections {
        if s.id == 7 {
            let (new_body, d) = filter_exports(wasm.get(s.body)?)?;
            dropped = d;
            out.push(7);
            put_leb(u64::try_from(new_body.len()).ok()?, &mut out);
            out.extend(new_body);
        } else {
            out.extend_from_slice(wasm.get(s.start..s.body.end)?);
        }
    }
    Some((out, dropped))
}

/// The module with the contents of section `id` replaced by `contents`; `None` if `wasm` is not a
/// well-formed module.
pub(crate) fn replace_section(wasm: &[u8], id: u8, contents: &[u8]) -> Option<Vec<u8>> {
    if wasm.get(0..4)? != b"\0asm" {
        return None;
    }
    let mut out = wasm.get(0..8)?.to_vec();
    let mut pos = 8;
    while pos < wasm.len() {
        let this = *wasm.get(pos)?;
        let mut p = pos + 1;
        let size = usize::try_from(leb(wasm, &mut p)?).ok()?;
        let end = p.checked_add(size)?;
        wasm.get(p..end)?;
        if this == id {
            out.push(id);
            put_leb(u64::try_from(contents.len()).ok()?, &mut out);
            out.extend_from_slice(contents);
        } else {
            out.extend_from_slice(wasm.get(pos..end)?);
        }
        pos = end;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with a type section, an export section and a custom section.
    fn module(exports: &[(&str, u64)]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend([1, 4, 1, 0x60, 0, 0]); // type section: one `() -> ()`
        let mut body = Vec::new();
        put_leb(exports.len() as u64, &mut body);
        for (e, index) in exports {
            put_leb(e.len() as u64, &mut body);
            body.extend(e.as_bytes());
            body.push(0); // func
            put_leb(*index, &mut body);
        }
        m.push(7);
        put_leb(body.len() as u64, &mut m);
        m.extend(body);
        m.extend([0, 3, 1, b'x', 9]); // custom section "x"
        m
    }

    #[test]
    fn keeps_only_the_implemented_callbacks() {
        let (out, dropped) = rewrite(&module(&[
            ("memory", 0),
            ("proxy_on_log", 1),
            ("proxy_on_request_headers", 2),
            ("proxy_on_response_body", 300),
        ]))
        .unwrap();
        assert_eq!(
            out,
            module(&[("memory", 0), ("proxy_on_request_headers", 2)])
        );
        assert_eq!(dropped, vec!["proxy_on_log", "proxy_on_response_body"]);
        // Idempotent.
        let (again, dropped) = rewrite(&out).unwrap();
        assert_eq!(again, out);
        assert!(dropped.is_empty());
    }

    #[test]
    fn malformed_modules_are_refused() {
        let m = module(&[("memory", 0), ("proxy_on_log", 1)]);
        assert!(rewrite(b"not wasm").is_none());
        // Section boundaries: after the type section (14) and after the export section.
        let boundaries = [14, m.len() - 5];
        for cut in 9..m.len() {
            assert_eq!(
                rewrite(&m[..cut]).is_some(),
                boundaries.contains(&cut),
                "cut at {cut}"
            );
        }
    }
}
