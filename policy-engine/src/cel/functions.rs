//! Functions meshauthz adds to cel-interpreter's standard ones.
//!
//! - `ip_in_cidr(ip, cidr)`: the user-facing CIDR test.
//! - `@bool`, `@index`, `@iterable`, `@negate`: internal (a user cannot write a name starting with `@`). The
//!   compiler inserts them where cel-interpreter departs from the CEL specification in a way that
//!   could widen access or trap the VM: `&&`, `||`, `!` and `?:` treat any value as truthy, `m[k]`
//!   gives `null` for a missing key, a macro over a value that is neither a list nor a map
//!   panics, and `-x` does not check for overflow.
//! - `size`, replacing cel-interpreter's, which counts a string's UTF-8 bytes where CEL counts its
//!   code points (`size("πέντε")` is 5): a length limit on a header or claim with non-ASCII
//!   characters would otherwise be tighter than written.
//! - `int`, `uint`, `string`, `bytes`, replacing cel-interpreter's where it departs from CEL: a
//!   double out of range (or NaN) converted to an integer is an error (cel-interpreter saturated
//!   `int(9223372036854775807.0)` and turned NaN into 0), `string()` of bytes that are not UTF-8
//!   is an error (not a lossy text), and `bytes()` of bytes is the identity.

use std::net::IpAddr;
use std::sync::Arc;

use cel_interpreter::extractors::This;
use cel_interpreter::objects::Key;
use cel_interpreter::{Context, ExecutionError, FunctionContext, ResolveResult, Value};
use ipnet::IpNet;

pub(super) const IP_IN_CIDR: &str = "ip_in_cidr";
pub(super) const BOOL: &str = "@bool";
pub(super) const INDEX: &str = "@index";
pub(super) const ITERABLE: &str = "@iterable";
pub(super) const NEGATE: &str = "@negate";

/// The functions a user may call, with how many operands each takes (the receiver of a method call
/// counts as one): `(name, min, max)`.
pub(super) const USER_FUNCTIONS: &[(&str, usize, usize)] = &[
    ("size", 1, 1),
    ("contains", 2, 2),
    ("startsWith", 2, 2),
    ("endsWith", 2, 2),
    ("matches", 2, 2),
    ("string", 1, 1),
    ("bytes", 1, 1),
    ("int", 1, 1),
    ("uint", 1, 1),
    ("double", 1, 1),
    ("max", 1, usize::MAX),
    ("min", 1, usize::MAX),
    (IP_IN_CIDR, 2, 2),
];

/// cel-interpreter's standard functions plus ours.
pub(super) fn root_context() -> Context<'static> {
    let mut ctx = Context::default();
    ctx.add_function("size", size);
    ctx.add_function("int", int);
    ctx.add_function("uint", uint);
    ctx.add_function("string", string);
    ctx.add_function("bytes", bytes);
    ctx.add_function(IP_IN_CIDR, ip_in_cidr);
    ctx.add_function(BOOL, strict_bool);
    ctx.add_function(INDEX, strict_index);
    ctx.add_function(ITERABLE, iterable);
    ctx.add_function(NEGATE, negate);
    ctx
}

/// A CIDR (`10.0.0.0/8`) or a single address (`10.0.0.1`, as a /32 or /128).
pub(super) fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Whether the address `ip` is in `net`; an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is
/// compared as the IPv4 address it carries.
pub(super) fn contains(net: &IpNet, ip: &str) -> Result<bool, ExecutionError> {
    let addr: IpAddr = ip.parse().map_err(|_| {
        ExecutionError::function_error(IP_IN_CIDR, format!("`{ip}` is not an IP address"))
    })?;
    Ok(contains_addr(net, addr))
}

pub(super) fn contains_addr(net: &IpNet, addr: IpAddr) -> bool {
    let addr = match addr {
        IpAddr::V6(v6) if net.network().is_ipv4() => {
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        other => other,
    };
    net.contains(&addr)
}

fn ip_in_cidr(This(ip): This<Arc<String>>, cidr: Arc<String>) -> Result<bool, ExecutionError> {
    let net = parse_cidr(&cidr).ok_or_else(|| {
        ExecutionError::function_error(IP_IN_CIDR, format!("`{cidr}` is not a CIDR"))
    })?;
    contains(&net, &ip)
}

/// CEL's `size`: code points of a string, bytes of bytes, elements of a list or map. Linear in a
/// string's length, which the cost estimate already charges (`cost.rs`, `"size"`).
fn size(This(this): This<Value>) -> ResolveResult {
    let n = match &this {
        Value::String(s) => s.chars().count(),
        Value::Bytes(b) => b.len(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.map.len(),
        other => {
            return Err(ExecutionError::function_error(
                "size",
                format!("cannot determine the size of a {}", other.type_of()),
            ))
        }
    };
    i64::try_from(n)
        .map(Value::Int)
        .map_err(|_| ExecutionError::function_error("size", "size out of range"))
}

/// 2^63 and 2^64 as doubles: CEL's integer ranges, open at both ends for a double (cel-go's
/// `doubleToInt64Checked` and `doubleToUint64Checked`).
const TWO_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_64: f64 = 18_446_744_073_709_551_616.0;

fn conversion_error(function: &str, what: impl std::fmt::Display) -> ExecutionError {
    ExecutionError::function_error(function, what.to_string())
}

/// CEL's `int`: of an int, a uint in range, a double in (-2^63, 2^63) truncated toward zero, or
/// a decimal string.
fn int(This(this): This<Value>) -> ResolveResult {
    match this {
        Value::Int(i) => Ok(Value::Int(i)),
        Value::UInt(u) => i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| conversion_error("int", "integer overflow")),
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the range is checked first: the cast only drops the fraction"
        )]
        Value::Float(f) if f > -TWO_63 && f < TWO_63 => Ok(Value::Int(f as i64)),
        Value::Float(f) => Err(conversion_error(
            "int",
            format!("{f} is out of the int range"),
        )),
        Value::String(s) => s
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|e| conversion_error("int", format!("string parse error: {e}"))),
        other => Err(conversion_error(
            "int",
            format!("cannot convert a {} to int", other.type_of()),
        )),
    }
}

/// CEL's `uint`: of a uint, a non-negative int, a double in [0, 2^64) truncated, or a decimal
/// string.
fn uint(This(this): This<Value>) -> ResolveResult {
    match this {
        Value::UInt(u) => Ok(Value::UInt(u)),
        Value::Int(i) => u64::try_from(i)
            .map(Value::UInt)
            .map_err(|_| conversion_error("uint", "unsigned integer overflow")),
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "the range is checked first: the cast only drops the fraction"
        )]
        Value::Float(f) if (0.0..TWO_64).contains(&f) => Ok(Value::UInt(f as u64)),
        Value::Float(f) => Err(conversion_error(
            "uint",
            format!("{f} is out of the uint range"),
        )),
        Value::String(s) => s
            .parse::<u64>()
            .map(Value::UInt)
            .map_err(|e| conversion_error("uint", format!("string parse error: {e}"))),
        other => Err(conversion_error(
            "uint",
            format!("cannot convert a {} to uint", other.type_of()),
        )),
    }
}

/// CEL's `string`: bytes must be UTF-8; numbers as cel-interpreter writes them.
fn string(This(this): This<Value>) -> ResolveResult {
    match this {
        Value::String(s) => Ok(Value::String(s)),
        Value::Bytes(b) => String::from_utf8(b.to_vec())
            .map(|s| Value::String(Arc::new(s)))
            .map_err(|_| conversion_error("string", "the bytes are not valid UTF-8")),
        Value::Int(i) => Ok(Value::String(Arc::new(i.to_string()))),
        Value::UInt(u) => Ok(Value::String(Arc::new(u.to_string()))),
        Value::Float(f) => Ok(Value::String(Arc::new(f.to_string()))),
        other => Err(conversion_error(
            "string",
            format!("cannot convert a {} to string", other.type_of()),
        )),
    }
}

/// CEL's `bytes`: a string's UTF-8, or bytes unchanged.
fn bytes(This(this): This<Value>) -> ResolveResult {
    match this {
        Value::String(s) => Ok(Value::Bytes(Arc::new(s.as_bytes().to_vec()))),
        Value::Bytes(b) => Ok(Value::Bytes(b)),
        other => Err(conversion_error(
            "bytes",
            format!("cannot convert a {} to bytes", other.type_of()),
        )),
    }
}

fn strict_bool(value: Value) -> ResolveResult {
    match value {
        Value::Bool(_) => Ok(value),
        other => Err(other.error_expected_type(cel_interpreter::objects::ValueType::Bool)),
    }
}

/// `container[key]` as CEL defines it: a missing key or an index out of range is an error.
fn strict_index(_ftx: &FunctionContext, container: Value, key: Value) -> ResolveResult {
    match (&container, &key) {
        (Value::List(items), Value::Int(_) | Value::UInt(_)) => {
            let i = match key {
                Value::Int(i) => usize::try_from(i).ok(),
                Value::UInt(u) => usize::try_from(u).ok(),
                _ => None,
            };
            i.and_then(|i| items.get(i)).cloned().ok_or_else(|| {
                ExecutionError::function_error(
                    "index",
                    format!("index {key:?} out of range for a list of {}", items.len()),
                )
            })
        }
        (Value::Map(map), Value::Int(_) | Value::UInt(_) | Value::Bool(_) | Value::String(_)) => {
            let k: Key = match key.clone().try_into() {
                Ok(k) => k,
                Err(v) => return Err(ExecutionError::UnsupportedKeyType(v)),
            };
            map.get(&k)
                .cloned()
                .ok_or_else(|| ExecutionError::NoSuchKey(Arc::new(k.to_string())))
        }
        _ => Err(ExecutionError::UnsupportedIndex(container, key)),
    }
}

fn iterable(value: Value) -> ResolveResult {
    match value {
        Value::List(_) | Value::Map(_) => Ok(value),
        other => Err(ExecutionError::UnexpectedType {
            got: other.type_of().to_string(),
            want: "list or map".to_string(),
        }),
    }
}

fn negate(value: Value) -> ResolveResult {
    match value {
        Value::Int(i) => i.checked_neg().map(Value::Int).ok_or_else(|| {
            ExecutionError::function_error("-", format!("integer overflow negating {i}"))
        }),
        Value::Float(f) => Ok(Value::Float(-f)),
        other => Err(ExecutionError::UnsupportedUnaryOperator("minus", other)),
    }
}
