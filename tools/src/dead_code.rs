//! Emptying the functions nothing can call (run by `meshauthz-strip-exports` after the exports are
//! stripped). The SDK's callbacks whose exports [`crate::exports`] removed (`proxy_on_grpc_*`,
//! `proxy_on_http_call_response`, ...) and what only they call stay in the code section, and V8
//! compiles every function of a module with TurboFan when Envoy loads it (BENCHMARKS.md,
//! "Start-up and module size"). A function is reachable from an export, the start function, a
//! table element (every `call_indirect` target) or a `ref.func`, through `call`, `return_call` and
//! `ref.func`; every other body becomes `unreachable`. Function indices do not change, so nothing
//! else in the module is touched.

use std::collections::VecDeque;

use wasmparser::{ElementItems, ExternalKind, Operator, Parser, Payload, TypeRef};

/// `locals: 0; unreachable; end`, with its size first.
const EMPTY_BODY: [u8; 4] = [3, 0x00, 0x00, 0x0b];

/// What [`empty_unreachable`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Emptied {
    pub functions: usize,
    pub bytes: usize,
}

fn funcs_of_const_expr(expr: &wasmparser::ConstExpr<'_>, out: &mut Vec<u32>) -> Result<(), String> {
    let mut ops = expr.get_operators_reader();
    while !ops.eof() {
        if let Operator::RefFunc { function_index } = ops.read().map_err(|e| e.to_string())? {
            out.push(function_index);
        }
    }
    Ok(())
}

/// The module with every function no export, start function, table element or `ref.func` can
/// reach emptied, and what that removed.
pub fn empty_unreachable(wasm: &[u8]) -> Result<(Vec<u8>, Emptied), String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let mut imported = 0u32;
    let mut roots: Vec<u32> = Vec::new();
    // Per defined function: its body's bytes (locals and code, without the size) and its callees.
    let mut bodies: Vec<(&[u8], Vec<u32>)> = Vec::new();
    let mut has_code = false;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(err)? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if matches!(
                        import.map_err(err)?.ty,
                        TypeRef::Func(_) | TypeRef::FuncExact(_)
                    ) {
                        imported += 1;
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(err)?;
                    if export.kind == ExternalKind::Func {
                        roots.push(export.index);
                    }
                }
            }
            Payload::StartSection { func, .. } => roots.push(func),
            Payload::GlobalSection(reader) => {
                for global in reader {
                    funcs_of_const_expr(&global.map_err(err)?.init_expr, &mut roots)?;
                }
            }
            Payload::ElementSection(reader) => {
                for element in reader {
                    match element.map_err(err)?.items {
                        ElementItems::Functions(funcs) => {
                            for f in funcs {
                                roots.push(f.map_err(err)?);
                            }
                        }
                        ElementItems::Expressions(_, exprs) => {
                            for expr in exprs {
                                funcs_of_const_expr(&expr.map_err(err)?, &mut roots)?;
                            }
                        }
                    }
                }
            }
            Payload::CodeSectionStart { .. } => has_code = true,
            Payload::CodeSectionEntry(body) => {
                let mut callees = Vec::new();
                let mut ops = body.get_operators_reader().map_err(err)?;
                while !ops.eof() {
                    match ops.read().map_err(err)? {
                        Operator::Call { function_index }
                        | Operator::ReturnCall { function_index }
                        | Operator::RefFunc { function_index } => callees.push(function_index),
                        _ => {}
                    }
                }
                let bytes = wasm
                    .get(body.range())
                    .ok_or_else(|| "function body out of the module".to_string())?;
                bodies.push((bytes, callees));
            }
            _ => {}
        }
    }
    if !has_code {
        let none = Emptied {
            functions: 0,
            bytes: 0,
        };
        return Ok((wasm.to_vec(), none));
    }

    let mut reachable = vec![false; bodies.len()];
    let mut queue: VecDeque<u32> = roots.into_iter().collect();
    while let Some(f) = queue.pop_front() {
        let Some(i) = f
            .checked_sub(imported)
            .and_then(|i| usize::try_from(i).ok())
        else {
            continue; // an import
        };
        match reachable.get_mut(i) {
            Some(seen) if !*seen => *seen = true,
            _ => continue,
        }
        if let Some((_, callees)) = bodies.get(i) {
            queue.extend(callees.iter().copied());
        }
    }

    let mut code = Vec::new();
    crate::wasm::put_leb(bodies.len() as u64, &mut code);
    let mut emptied = Emptied {
        functions: 0,
        bytes: 0,
    };
    for ((bytes, _), keep) in bodies.iter().zip(&reachable) {
        if *keep {
            crate::wasm::put_leb(bytes.len() as u64, &mut code);
            code.extend_from_slice(bytes);
        } else {
            emptied.functions += 1;
            emptied.bytes += bytes.len().saturating_sub(EMPTY_BODY.len() - 1); // the size byte stays
            code.extend_from_slice(&EMPTY_BODY);
        }
    }
    if emptied.functions == 0 {
        return Ok((wasm.to_vec(), emptied));
    }
    let out = crate::exports::replace_section(wasm, 10, &code)
        .ok_or_else(|| "not a well-formed wasm module".to_string())?;
    Ok((out, emptied))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLS_1: &[u8] = &[0, 0x10, 1, 0x0b]; // call 1
    const NOP: &[u8] = &[0, 0x01, 0x0b];
    const NOP2: &[u8] = &[0, 0x01, 0x01, 0x0b];
    const EMPTY: &[u8] = &[0, 0x00, 0x0b];

    /// Functions `() -> ()` with these bodies, these exported (name `a`, `b`, ...).
    fn module(exports: &[u8], bodies: &[&[u8]]) -> Vec<u8> {
        let n = u8::try_from(bodies.len()).unwrap();
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend([1, 4, 1, 0x60, 0, 0]); // type section: one `() -> ()`
        m.extend([3, n + 1, n]); // function section
        m.extend(std::iter::repeat_n(0, bodies.len()));
        let mut export = vec![u8::try_from(exports.len()).unwrap()];
        for (k, f) in exports.iter().enumerate() {
            export.extend([1, b'a' + u8::try_from(k).unwrap(), 0, *f]);
        }
        m.push(7);
        m.push(u8::try_from(export.len()).unwrap());
        m.extend(export);
        let mut code = vec![n];
        for b in bodies {
            code.push(u8::try_from(b.len()).unwrap());
            code.extend_from_slice(b);
        }
        m.push(10);
        m.push(u8::try_from(code.len()).unwrap());
        m.extend(code);
        m.extend([0, 3, 1, b'x', 9]); // custom section "x"
        m
    }

    #[test]
    fn empties_what_nothing_calls_and_keeps_the_rest() {
        // 0 is exported and calls 1; nothing calls 2.
        let (out, emptied) = empty_unreachable(&module(&[0], &[CALLS_1, NOP, NOP2])).unwrap();
        assert_eq!(out, module(&[0], &[CALLS_1, NOP, EMPTY]));
        assert_eq!(
            emptied,
            Emptied {
                functions: 1,
                bytes: 1
            }
        );
        // Idempotent.
        assert_eq!(empty_unreachable(&out).unwrap().0, out);
        // Everything reachable: the module is left as it is.
        let all = module(&[0, 2], &[CALLS_1, NOP, NOP2]);
        let (same, emptied) = empty_unreachable(&all).unwrap();
        assert_eq!((same, emptied.functions), (all, 0));
    }

    #[test]
    fn malformed_modules_are_refused() {
        assert!(empty_unreachable(b"not wasm").is_err());
        let m = module(&[0], &[CALLS_1, NOP, NOP2]);
        assert!(empty_unreachable(&m[..m.len() - 9]).is_err());
    }
}
