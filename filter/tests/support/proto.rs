//! Test encoder: JSON as protobuf encodes `google.protobuf.Struct` / `Value`, and
//! `envoy.config.core.v3.Metadata` (what Envoy returns for `get_property(["metadata"])`), the
//! format `proto` decodes. One copy for the unit tests (`src/proto.rs`) and the integration tests
//! (`tests/request_path.rs`), included by `#[path]`.

use serde_json::{Map, Value};

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn bytes_field(n: u64, b: &[u8], out: &mut Vec<u8>) {
    varint(n << 3 | 2, out);
    varint(b.len() as u64, out);
    out.extend(b);
}

fn entry(k: &str, v: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    bytes_field(1, k.as_bytes(), &mut e);
    bytes_field(2, v, &mut e);
    e
}

/// A `google.protobuf.Value`.
pub fn value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Value::Null => {
            varint(1 << 3, &mut out);
            varint(0, &mut out);
        }
        Value::Number(n) => {
            varint(2 << 3 | 1, &mut out);
            out.extend(n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
        }
        Value::String(s) => bytes_field(3, s.as_bytes(), &mut out),
        Value::Bool(b) => {
            varint(4 << 3, &mut out);
            varint(u64::from(*b), &mut out);
        }
        Value::Object(m) => bytes_field(5, &strukt(m), &mut out),
        Value::Array(items) => {
            let mut l = Vec::new();
            for i in items {
                bytes_field(1, &value(i), &mut l);
            }
            bytes_field(6, &l, &mut out);
        }
    }
    out
}

/// A `google.protobuf.Struct`.
pub fn strukt(m: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in m {
        bytes_field(1, &entry(k, &value(v)), &mut out);
    }
    out
}

/// An `envoy.config.core.v3.Metadata`: `{filter name: {Struct}}` (non-object members are skipped).
pub fn metadata(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, s) in v.as_object().into_iter().flatten() {
        if let Some(s) = s.as_object() {
            bytes_field(1, &entry(k, &strukt(s)), &mut out);
        }
    }
    out
}
