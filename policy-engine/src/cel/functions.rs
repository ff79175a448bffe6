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
