//! A minimal protobuf reader for the one message the filter reads whole: Envoy's dynamic metadata
//! (`envoy.config.core.v3.Metadata`, what `get_property(["metadata"])` returns), turned into
//! JSON: `{ "<filter>": { ...Struct as JSON... } }`. Used for the JWT payload that Envoy's
//! `jwt_authn` filter verified (`envoy.filters.http.jwt_authn`) and for
//! `experimental.envoy.filters.*` conditions. Anything malformed yields `None`, never a partial
//! value.

use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused (the VM stack is small).
const MAX_DEPTH: usize = 32;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// The next field: (number, value).
    fn field(&mut self) -> Option<(u64, Field<'a>)> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                let arr: [u8; 8] = self.take(8)?.try_into().ok()?;
                Field::Fixed64(u64::from_le_bytes(arr))
            }
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            _ => return None,
        };
        Some((key >> 3, value))
    }
}

/// A map entry message `{1: key (string), 2: value (message)}`.
fn map_entry(b: &[u8]) -> Option<(String, &[u8])> {
    let mut r = Reader::new(b);
    let (mut key, mut value): (String, &[u8]) = (String::new(), &[]);
    while !r.done() {
        match r.field()? {
            (1, Field::Bytes(k)) => key = std::str::from_utf8(k).ok()?.to_string(),
            (2, Field::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Some((key, value))
}

/// `google.protobuf.Struct`.
fn decode_struct(b: &[u8], depth: usize) -> Option<Map<String, Value>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut r = Reader::new(b);
    let mut out = Map::new();
    while !r.done() {
        if let (1, Field::Bytes(entry)) = r.field()? {
            let (k, v) = map_entry(entry)?;
            out.insert(k, decode_value(v, depth + 1)?);
        }
    }
    Some(out)
}

/// `google.protobuf.Value`. An empty message is `null` (no kind set).
fn decode_value(b: &[u8], depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut r = Reader::new(b);
    let mut out = Value::Null;
    while !r.done() {
        out = match r.field()? {
            (1, Field::Varint(_)) => Value::Null,
            (2, Field::Fixed64(bits)) => {
                let f = f64::from_bits(bits);
                // Integral values (JWT `exp`, `iat`, ...) come back as integers, as in the token.
                if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                    // Integral and within 2^53: exact.
                    Value::Number(Number::from(f as i64))
                } else {
                    Number::from_f64(f).map_or(Value::Null, Value::Number)
                }
            }
            (3, Field::Bytes(s)) => Value::String(std::str::from_utf8(s).ok()?.to_string()),
            (4, Field::Varint(v)) => Value::Bool(v != 0),
            (5, Field::Bytes(s)) => Value::Object(decode_struct(s, depth + 1)?),
            (6, Field::Bytes(list)) => {
                let mut lr = Reader::new(list);
                let mut items = Vec::new();
                while !lr.done() {
                    if let (1, Field::Bytes(v)) = lr.field()? {
                        items.push(decode_value(v, depth + 1)?);
                    }
                }
                Value::Array(items)
            }
            _ => out,
        };
    }
    Some(out)
}

/// `envoy.config.core.v3.Metadata.filter_metadata` (field 1, `map<string, Struct>`) as a JSON
/// object; `typed_filter_metadata` is ignored.
pub fn decode_metadata(b: &[u8]) -> Option<Value> {
    let mut r = Reader::new(b);
    let mut out = Map::new();
    while !r.done() {
        if let (1, Field::Bytes(entry)) = r.field()? {
            let (k, v) = map_entry(entry)?;
            out.insert(k, Value::Object(decode_struct(v, 1)?));
        }
    }
    Some(Value::Object(out))
}

#[cfg(test)]
#[path = "../tests/support/proto.rs"]
mod encode;

#[cfg(test)]
mod tests {
    use super::encode::metadata;
    use super::*;
    use serde_json::json;

    #[test]
    fn jwt_payload_round_trips() {
        let md = json!({
            "envoy.filters.http.jwt_authn": {"payload": {
                "iss": "https://issuer.example", "sub": "alice", "aud": ["a", "b"],
                "exp": 1_700_000_000, "ratio": 0.5, "admin": true, "nested": {"groups": ["g1"]}, "none": null
            }},
            "envoy.common": {"access_log_hint": true}
        });
        assert_eq!(decode_metadata(&metadata(&md)).unwrap(), md);
    }

    #[test]
    fn empty_and_malformed() {
        assert_eq!(decode_metadata(&[]).unwrap(), json!({}));
        let enc = metadata(&json!({"f": {"k": "v"}}));
        for cut in 1..enc.len() {
            assert_eq!(decode_metadata(&enc[..cut]), None, "cut at {cut}");
        }
        // Wire type 3 (group) is not used by these messages.
        assert_eq!(decode_metadata(&[0x0b]), None);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut v = json!("leaf");
        for _ in 0..40 {
            v = json!({ "k": v });
        }
        let md = json!({ "f": { "deep": v } });
        assert_eq!(decode_metadata(&metadata(&md)), None);
    }
}
