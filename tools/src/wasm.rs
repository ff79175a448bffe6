//! Reading a Wasm module's binary format: its sections, and the imports and exports they hold.
//! The one reader of the build tool ([`crate::exports`]) and of the tests that check what the
//! built module imports and exports (`filter/tests/imports.rs`, `e2e/tests/versions.rs`).

use std::ops::Range;

/// An unsigned LEB128 number at `*pos` (advanced past it); `None` when cut short or too long.
pub(crate) fn leb(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// `v` as an unsigned LEB128 number, appended to `out`.
pub(crate) fn put_leb(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let low = u8::try_from(v & 0x7f).unwrap_or(0);
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn byte(b: &[u8], pos: &mut usize) -> Option<u8> {
    let v = *b.get(*pos)?;
    *pos += 1;
    Some(v)
}

/// A name (its LEB128 length, then UTF-8) at `*pos`.
pub(crate) fn name(b: &[u8], pos: &mut usize) -> Option<String> {
    let len = usize::try_from(leb(b, pos)?).ok()?;
    let end = pos.checked_add(len)?;
    let s = std::str::from_utf8(b.get(*pos..end)?).ok()?;
    *pos = end;
    Some(s.to_string())
}

/// Limits (a flag, the minimum, the maximum when the flag says so) at `*pos`.
fn limits(b: &[u8], pos: &mut usize) -> Option<()> {
    let flags = byte(b, pos)?;
    leb(b, pos)?;
    if flags & 1 != 0 {
        leb(b, pos)?;
    }
    Some(())
}

/// One section of a module.
pub(crate) struct Section {
    /// The section id (2 imports, 7 exports, ...).
    pub(crate) id: u8,
    /// Where the section starts (its id byte).
    pub(crate) start: usize,
    /// Its contents, after the id and the size.
    pub(crate) body: Range<usize>,
}

/// The sections of `wasm`, in order; `None` if it is not a well-formed module (no `\0asm`
/// header, or a section cut short).
pub(crate) fn sections(wasm: &[u8]) -> Option<Vec<Section>> {
    if wasm.get(0..4)? != b"\0asm" {
        return None;
    }
    let mut pos = wasm.get(0..8).map(<[u8]>::len)?;
    let mut out = Vec::new();
    while pos < wasm.len() {
        let id = *wasm.get(pos)?;
        let mut p = pos + 1;
        let size = usize::try_from(leb(wasm, &mut p)?).ok()?;
        let end = p.checked_add(size)?;
        wasm.get(p..end)?;
        out.push(Section {
            id,
            start: pos,
            body: p..end,
        });
        pos = end;
    }
    Some(out)
}

/// One import of a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// The module it is imported from (`env`, `wasi_snapshot_preview1`).
    pub module: String,
    pub name: String,
    /// 0 a function, 1 a table, 2 a memory, 3 a global.
    pub kind: u8,
}

/// Every import and the name of every export of `wasm`; `None` if it is not a well-formed
/// module (or imports something other than a function, table, memory or global).
pub fn imports_exports(wasm: &[u8]) -> Option<(Vec<Import>, Vec<String>)> {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    for section in sections(wasm)? {
        let b = wasm.get(section.body)?;
        let pos = &mut 0;
        match section.id {
            2 => {
                for _ in 0..leb(b, pos)? {
                    let (module, name) = (name(b, pos)?, name(b, pos)?);
                    let kind = byte(b, pos)?;
                    match kind {
                        0 => {
                            leb(b, pos)?; // type index
                        }
                        1 => {
                            byte(b, pos)?; // element type
                            limits(b, pos)?;
                        }
                        2 => limits(b, pos)?,
                        3 => {
                            byte(b, pos)?; // value type
                            byte(b, pos)?; // mutability
                        }
                        _ => return None,
                    }
                    imports.push(Import { module, name, kind });
                }
            }
            7 => {
                for _ in 0..leb(b, pos)? {
                    exports.push(name(b, pos)?);
                    byte(b, pos)?; // kind
                    leb(b, pos)?; // index
                }
            }
            _ => {}
        }
    }
    Some((imports, exports))
}

/// The custom section in which `make build` records the module's build features
/// (`meshauthz-strip-exports --features`): space-separated names, `cel` when CEL conditions are
/// built in. `meshauthz render` reads it from a `file://` module.
pub const FEATURES_SECTION: &str = "meshauthz.features";

/// The payload of the custom section `wanted`, if the module has one.
pub fn custom_section<'a>(wasm: &'a [u8], wanted: &str) -> Option<&'a [u8]> {
    sections(wasm)?
        .into_iter()
        .filter(|s| s.id == 0)
        .find_map(|s| {
            let mut p = s.body.start;
            (name(wasm, &mut p)? == wanted).then(|| wasm.get(p..s.body.end))?
        })
}

/// `wasm` with the custom section `section` holding `payload`, last (an earlier section of that
/// name is dropped); `None` if `wasm` is not a well-formed module.
pub fn with_custom_section(wasm: &[u8], section: &str, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = wasm.get(..8)?.to_vec();
    for s in sections(wasm)? {
        if s.id == 0 {
            let mut p = s.body.start;
            if name(wasm, &mut p)? == section {
                continue;
            }
        }
        out.extend_from_slice(wasm.get(s.start..s.body.end)?);
    }
    let mut body = Vec::new();
    put_leb(u64::try_from(section.len()).ok()?, &mut body);
    body.extend_from_slice(section.as_bytes());
    body.extend_from_slice(payload);
    out.push(0);
    put_leb(u64::try_from(body.len()).ok()?, &mut out);
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod custom_tests {
    use super::*;

    #[test]
    fn a_custom_section_is_written_once_and_read_back() {
        let empty = b"\0asm\x01\0\0\0".to_vec();
        assert_eq!(custom_section(&empty, FEATURES_SECTION), None);
        let one = with_custom_section(&empty, FEATURES_SECTION, b"cel").unwrap();
        assert_eq!(custom_section(&one, FEATURES_SECTION), Some(&b"cel"[..]));
        let again = with_custom_section(&one, FEATURES_SECTION, b"").unwrap();
        assert_eq!(custom_section(&again, FEATURES_SECTION), Some(&b""[..]));
        assert_eq!(again.len(), one.len() - 3, "replaced, not added");
        assert_eq!(sections(&again).map(|s| s.len()), Some(1));
    }
}
