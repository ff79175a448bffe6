//! Builds the checked-in seed corpus (`fuzz/corpus/<target>/`) from the decision cases
//! (`policy-engine/tests/cases/*.yaml`): `cargo run --manifest-path fuzz/Cargo.toml --bin
//! seed-corpus -- policy-engine/tests/cases fuzz/corpus`.

use std::collections::BTreeSet;
use std::path::Path;

use meshauthz_fuzz::REQUEST_MARKER;
use serde_json::Value;

/// FNV-1a: a stable file name for a seed.
fn name(data: &[u8]) -> String {
    let hash = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn write(dir: &Path, data: &[u8]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(name(data)), data).map_err(|e| e.to_string())
}

/// Every CEL expression in the policies text (the `values` and `notValues` of `when` entries
/// with the CEL key, in every document).
fn cel_expressions(policies: &str, out: &mut BTreeSet<String>) {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if m.get("key").and_then(Value::as_str) == Some("meshauthz.io/cel") {
                    for list in ["values", "notValues"] {
                        for s in m.get(list).and_then(Value::as_array).into_iter().flatten() {
                            if let Some(s) = s.as_str() {
                                out.insert(s.to_string());
                            }
                        }
                    }
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(xs) => xs.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    for document in serde_yaml_ng::Deserializer::from_str(policies) {
        if let Ok(v) = <Value as serde::Deserialize>::deserialize(document) {
            walk(&v, out);
        }
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(cases), Some(out)) = (args.get(1), args.get(2)) else {
        return Err("usage: seed-corpus <cases dir> <corpus dir>".into());
    };
    let out = Path::new(out);
    let mut files: Vec<_> = std::fs::read_dir(cases)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut expressions = BTreeSet::new();
    let mut requests = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{file:?}: {e}"))?;
        let file_policies = doc.get("policies").and_then(Value::as_str).unwrap_or("");
        let mut seen = BTreeSet::new();
        for case in doc
            .get("cases")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let policies = case
                .get("policies")
                .and_then(Value::as_str)
                .unwrap_or(file_policies);
            if seen.insert(policies.to_string()) {
                write(&out.join("policy"), format!("\0{policies}").as_bytes())?;
                cel_expressions(policies, &mut expressions);
            }
            let mut request = case.get("request").cloned().unwrap_or(Value::Null);
            if case.get("protocol").and_then(Value::as_str) == Some("tcp") {
                if let Value::Object(m) = &mut request {
                    m.insert("protocol".into(), "tcp".into());
                }
            }
            let request = serde_json::to_string(&request).map_err(|e| e.to_string())?;
            write(
                &out.join("check"),
                format!("\0{policies}{REQUEST_MARKER}{request}").as_bytes(),
            )?;
            requests.push(request);
        }
    }
    // Each expression with a few of the requests.
    for (i, expr) in expressions.iter().enumerate() {
        for request in requests.iter().skip(i % 7).step_by(60) {
            write(&out.join("cel"), format!("\0{expr}\n{request}").as_bytes())?;
        }
    }
    println!(
        "{} expressions, {} requests",
        expressions.len(),
        requests.len()
    );
    Ok(())
}
