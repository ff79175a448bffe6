//! The static cost bound: how much work one evaluation of an expression can do at most.
//!
//! Envoy runs the module on its worker threads with no time limit per call, so an expression
//! whose evaluation does not finish stops that worker. As CEL's own cost model does, the compiler
//! bounds the size of every value an expression can see or build ([`Shape`]) and from it the
//! number of steps of any evaluation: a macro costs its body times the size of its range, so
//! nested macros multiply; string operations cost in proportion to the (bounded) length of their
//! operands. An expression whose bound is over [`EXPRESSION_BUDGET`] is refused when the
//! policies load, and the rule's expressions together must stay under [`super::RULE_BUDGET`].
//!
//! The bound holds only if the inputs stay within the limits the shapes assume: attributes come
//! from the caller (headers, path, JWT claims), so each one is checked against its limit before
//! an evaluation ([`fits`]) and one over its limit makes the evaluation fail (which never widens
//! access: see "Errors never widen access" in the README).
//!
//! Units: one cost unit is one step of the interpreter (resolving one node of the tree), copying
//! one list or map entry, or copying, comparing or scanning 100 bytes of a string; a regex costs
//! its input's units times half its pattern's length. Measured (`examples/cel_cost.rs`), each is
//! at most about 100-300 ns natively.

use cel_interpreter::objects::Key;
use cel_interpreter::Value;
use cel_parser::ast::{operators, ComprehensionExpr, EntryExpr, Expr, IdedExpr};
use cel_parser::reference::Val;

use super::functions::{BOOL, INDEX, IP_IN_CIDR, ITERABLE, NEGATE};
use super::vars::{Attr, VarKind};

/// The most one expression may cost, in cost units.
pub const EXPRESSION_BUDGET: u64 = 20_000;

/// Longest string attribute, in bytes: `request.path`, `request.host`, `request.method`, one
/// header value (repeated headers joined with `,`), `source.principal` and the parts taken from
/// it, `connection.requested_server_name`, `request.auth.principal`.
pub const MAX_STRING_BYTES: u64 = 16 * 1024;
/// Most distinct headers in `request.headers` (Envoy's default `max_headers_count` is 100).
pub const MAX_HEADERS: u64 = 128;
/// Longest header name in `request.headers`, in bytes.
pub const MAX_HEADER_NAME_BYTES: u64 = 256;
/// Longest string anywhere in the JWT claims, in bytes.
pub const MAX_CLAIM_STRING_BYTES: u64 = 1024;
/// Most entries of any list or object in the JWT claims.
pub const MAX_CLAIM_ITEMS: u64 = 256;
/// Largest JWT payload, as its deep weight (see `value_weight`: one unit per value and per 100
/// bytes of string).
pub const MAX_CLAIMS_WEIGHT: u64 = 4096;
/// Longest address attribute (IPv6 text is at most 45 bytes).
const MAX_ADDRESS_BYTES: u64 = 64;
/// Longest result of `string()` on a number or a bool.
const MAX_NUMBER_TEXT: u64 = 40;

/// What the compiler knows of the size of a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Shape {
    /// No value: the element of an empty list.
    Empty,
    /// A bool, a number or null.
    Scalar,
    /// A string or bytes of at most this many bytes.
    Str(u64),
    /// A list of at most this many elements.
    List(u64, Box<Shape>),
    /// A map of at most this many entries (keys, values).
    Map(u64, Box<Shape>, Box<Shape>),
    /// A value of unknown type (a JWT claim, or a mix of types): every string in it has at most
    /// `str` bytes, every list or map at most `items` entries, and its deep weight is at most
    /// `weight`.
    Any { str: u64, items: u64, weight: u64 },
}

/// Bytes of string one cost unit covers for copying, comparing and scanning (measured: about
/// as long as one interpreter step).
const STRING_UNIT_BYTES: u64 = 100;

fn str_units(bytes: u64) -> u64 {
    bytes.div_ceil(STRING_UNIT_BYTES)
}

impl Shape {
    fn claims() -> Shape {
        Shape::Any {
            str: MAX_CLAIM_STRING_BYTES,
            items: MAX_CLAIM_ITEMS,
            weight: MAX_CLAIMS_WEIGHT,
        }
    }

    /// The cost of creating the value at the top level: copying its bytes or its entries.
    pub(super) fn shallow(&self) -> u64 {
        match self {
            Shape::Empty | Shape::Scalar => 0,
            Shape::Str(n) => str_units(*n),
            Shape::List(n, _) | Shape::Map(n, ..) => *n,
            Shape::Any { str, items, .. } => str_units(*str).max(*items),
        }
    }

    /// The cost of walking the whole value (comparing, hashing it).
    pub(super) fn deep(&self) -> u64 {
        match self {
            Shape::Empty => 0,
            Shape::Scalar => 1,
            Shape::Str(n) => 1 + str_units(*n),
            Shape::List(n, e) => n.saturating_mul(e.deep()).saturating_add(1),
            Shape::Map(n, k, v) => n
                .saturating_mul(k.deep().saturating_add(v.deep()))
                .saturating_add(1),
            Shape::Any { weight, .. } => *weight,
        }
    }

    /// How many times a macro over this value iterates at most.
    fn iterations(&self) -> u64 {
        match self {
            Shape::List(n, _) | Shape::Map(n, ..) => *n,
            Shape::Any { items, .. } => *items,
            Shape::Empty | Shape::Scalar | Shape::Str(_) => 0,
        }
    }

    /// The macro variable over this value: a list's element, a map's key.
    fn element(&self) -> Shape {
        match self {
            Shape::List(_, e) | Shape::Map(_, e, _) => (**e).clone(),
            Shape::Any { .. } => self.clone(),
            Shape::Empty => Shape::Empty,
            Shape::Scalar | Shape::Str(_) => Shape::Scalar,
        }
    }

    /// `x[k]` or `x.k`: a list's element, a map's value.
    fn member(&self) -> Shape {
        match self {
            Shape::List(_, e) | Shape::Map(_, _, e) => (**e).clone(),
            Shape::Any { .. } => self.clone(),
            Shape::Empty => Shape::Empty,
            Shape::Scalar | Shape::Str(_) => Shape::Scalar,
        }
    }

    fn max_str(&self) -> u64 {
        match self {
            Shape::Empty | Shape::Scalar => 0,
            Shape::Str(n) => *n,
            Shape::List(_, e) => e.max_str(),
            Shape::Map(_, k, v) => k.max_str().max(v.max_str()),
            Shape::Any { str, .. } => *str,
        }
    }

    fn max_items(&self) -> u64 {
        match self {
            Shape::Empty | Shape::Scalar | Shape::Str(_) => 0,
            Shape::List(n, e) => (*n).max(e.max_items()),
            Shape::Map(n, k, v) => (*n).max(k.max_items()).max(v.max_items()),
            Shape::Any { items, .. } => *items,
        }
    }

    fn to_any(&self) -> (u64, u64, u64) {
        (self.max_str(), self.max_items(), self.deep())
    }

    /// A bound for a value of either shape.
    fn join(&self, other: &Shape) -> Shape {
        match (self, other) {
            (Shape::Empty, x) | (x, Shape::Empty) => x.clone(),
            (Shape::Scalar, Shape::Scalar) => Shape::Scalar,
            (Shape::Str(a), Shape::Str(b)) => Shape::Str((*a).max(*b)),
            (Shape::List(a, x), Shape::List(b, y)) => {
                Shape::List((*a).max(*b), Box::new(x.join(y)))
            }
            (Shape::Map(a, k1, v1), Shape::Map(b, k2, v2)) => {
                Shape::Map((*a).max(*b), Box::new(k1.join(k2)), Box::new(v1.join(v2)))
            }
            (a, b) => {
                let (s1, i1, w1) = a.to_any();
                let (s2, i2, w2) = b.to_any();
                Shape::Any {
                    str: s1.max(s2),
                    items: i1.max(i2),
                    weight: w1.max(w2),
                }
            }
        }
    }

    /// `a + b`.
    fn concat(&self, other: &Shape) -> Shape {
        match (self, other) {
            (Shape::Empty, x) | (x, Shape::Empty) => x.clone(),
            (Shape::Scalar, Shape::Scalar) => Shape::Scalar,
            (Shape::Str(a), Shape::Str(b)) => Shape::Str(a.saturating_add(*b)),
            (Shape::List(a, x), Shape::List(b, y)) => {
                Shape::List(a.saturating_add(*b), Box::new(x.join(y)))
            }
            (a, b) => {
                let (s1, i1, w1) = a.to_any();
                let (s2, i2, w2) = b.to_any();
                Shape::Any {
                    str: s1.saturating_add(s2),
                    items: i1.saturating_add(i2),
                    weight: w1.saturating_add(w2),
                }
            }
        }
    }
}

/// The shape of a flat variable: the limits the attribute is checked against before each
/// evaluation.
pub(super) fn var_shape(kind: &VarKind) -> Shape {
    match kind {
        VarKind::Attr(attr) => match attr {
            Attr::DestinationPort | Attr::ConnectionMtls => Shape::Scalar,
            a if a.is_address() => Shape::Str(MAX_ADDRESS_BYTES),
            Attr::RequestHeaders => Shape::Map(
                MAX_HEADERS,
                Box::new(Shape::Str(MAX_HEADER_NAME_BYTES)),
                Box::new(Shape::Str(MAX_STRING_BYTES)),
            ),
            Attr::RequestAuthClaims => Shape::claims(),
            _ => Shape::Str(MAX_STRING_BYTES),
        },
        VarKind::Header(_) => Shape::Str(MAX_STRING_BYTES),
        VarKind::Claim(_) => Shape::claims(),
        VarKind::Has(_) | VarKind::InCidr(..) => Shape::Scalar,
    }
}

/// The deep weight of a value, as [`Shape::deep`] bounds it.
pub(super) fn value_weight(v: &Value) -> u64 {
    match v {
        Value::String(s) => 1 + str_units(s.len() as u64),
        Value::Bytes(b) => 1 + str_units(b.len() as u64),
        Value::List(items) => items
            .iter()
            .fold(1u64, |acc, x| acc.saturating_add(value_weight(x))),
        Value::Map(m) => m.map.iter().fold(1u64, |acc, (k, v)| {
            acc.saturating_add(value_weight(&key_value(k)))
                .saturating_add(value_weight(v))
        }),
        _ => 1,
    }
}

fn key_value(k: &Key) -> Value {
    match k {
        Key::String(s) => Value::String(s.clone()),
        Key::Int(i) => Value::Int(*i),
        Key::Uint(u) => Value::UInt(*u),
        Key::Bool(b) => Value::Bool(*b),
    }
}

/// The shallow weight of a value, as [`Shape::shallow`] bounds it.
pub(super) fn value_shallow(v: &Value) -> u64 {
    match v {
        Value::String(s) => str_units(s.len() as u64),
        Value::Bytes(b) => str_units(b.len() as u64),
        Value::List(items) => items.len() as u64,
        Value::Map(m) => m.map.len() as u64,
        _ => 0,
    }
}

/// Whether `v` stays within `shape`; `Err` says which limit it exceeds.
pub(super) fn fits(v: &Value, shape: &Shape) -> Result<(), String> {
    match (shape, v) {
        (Shape::Scalar, _) => Ok(()),
        (Shape::Str(n), Value::String(s)) if s.len() as u64 > *n => {
            Err(format!("it is {} bytes long, the limit is {n}", s.len()))
        }
        (Shape::Str(n), Value::Bytes(s)) if s.len() as u64 > *n => {
            Err(format!("it is {} bytes long, the limit is {n}", s.len()))
        }
        (Shape::List(n, _) | Shape::Map(n, ..), Value::List(_) | Value::Map(_))
            if value_shallow(v) > *n =>
        {
            Err(format!(
                "it has {} entries, the limit is {n}",
                value_shallow(v)
            ))
        }
        (Shape::List(_, e), Value::List(items)) => items.iter().try_for_each(|x| fits(x, e)),
        (Shape::Map(_, k, e), Value::Map(m)) => m.map.iter().try_for_each(|(key, x)| {
            fits(&key_value(key), k)?;
            fits(x, e)
        }),
        (Shape::Any { weight, .. }, _) if value_weight(v) > *weight => Err(format!(
            "its size is {} units, the limit is {weight}",
            value_weight(v)
        )),
        (Shape::Any { str, items, .. }, _) => fits_any(v, *str, *items),
        _ => Ok(()),
    }
}

fn fits_any(v: &Value, str: u64, items: u64) -> Result<(), String> {
    match v {
        Value::String(s) if s.len() as u64 > str => Err(format!(
            "it holds a string of {} bytes, the limit is {str}",
            s.len()
        )),
        Value::List(_) | Value::Map(_) if value_shallow(v) > items => Err(format!(
            "it holds a list or map of {} entries, the limit is {items}",
            value_shallow(v)
        )),
        Value::List(xs) => xs.iter().try_for_each(|x| fits_any(x, str, items)),
        Value::Map(m) => m.map.iter().try_for_each(|(k, x)| {
            fits_any(&key_value(k), str, items)?;
            fits_any(x, str, items)
        }),
        _ => Ok(()),
    }
}

/// Whether evaluating the node creates its value (a literal, a list, an operation) rather than
/// reading one that exists (a variable, a field, an index): a created value costs its size.
pub(super) fn creates(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Literal(_) | Expr::List(_) | Expr::Map(_) => true,
        Expr::Call(call) => !matches!(
            call.func_name.as_str(),
            INDEX | ITERABLE | BOOL | operators::CONDITIONAL | "max" | "min"
        ),
        _ => false,
    }
}

/// Whether cel-interpreter evaluates the call itself (operators), rather than by looking the
/// function up.
fn inline(name: &str, args: usize) -> bool {
    match args {
        3 => name == operators::CONDITIONAL,
        2 => matches!(
            name,
            operators::ADD
                | operators::SUBSTRACT
                | operators::DIVIDE
                | operators::MULTIPLY
                | operators::MODULO
                | operators::EQUALS
                | operators::NOT_EQUALS
                | operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS
                | operators::IN
                | operators::LOGICAL_OR
                | operators::LOGICAL_AND
                | operators::INDEX
        ),
        1 => matches!(
            name,
            operators::LOGICAL_NOT | operators::NEGATE | operators::NOT_STRICTLY_FALSE
        ),
        _ => false,
    }
}

/// The number of nodes of a tree.
fn tree_size(e: &IdedExpr) -> u64 {
    let sum =
        |xs: &mut dyn Iterator<Item = &IdedExpr>| xs.map(tree_size).fold(0u64, u64::saturating_add);
    1 + match &e.expr {
        Expr::Select(s) => tree_size(&s.operand),
        Expr::List(l) => sum(&mut l.elements.iter()),
        Expr::Map(m) => sum(&mut m
            .entries
            .iter()
            .filter_map(|x| match &x.expr {
                EntryExpr::MapEntry(entry) => Some([&entry.key, &entry.value]),
                EntryExpr::StructField(_) => None,
            })
            .flatten()),
        Expr::Call(c) => sum(&mut c.target.iter().map(|t| &**t).chain(&c.args)),
        Expr::Comprehension(c) => sum(&mut [
            &*c.iter_range,
            &*c.accu_init,
            &*c.loop_cond,
            &*c.loop_step,
            &*c.result,
        ]
        .into_iter()),
        _ => 0,
    }
}

/// The specials' costs: for a regex, its pattern's length.
pub(super) enum SpecialCost {
    Regex(u64),
    Cidr,
}

pub(super) struct Estimator<'a> {
    pub(super) vars: &'a [(String, VarKind)],
    pub(super) specials: &'a [SpecialCost],
    scope: Vec<(String, Shape)>,
}

fn sat(parts: &[u64]) -> u64 {
    parts.iter().fold(0u64, |a, b| a.saturating_add(*b))
}

impl<'a> Estimator<'a> {
    pub(super) fn new(vars: &'a [(String, VarKind)], specials: &'a [SpecialCost]) -> Self {
        Estimator {
            vars,
            specials,
            scope: Vec::new(),
        }
    }

    fn lookup(&self, name: &str) -> Result<Shape, String> {
        if let Some((_, s)) = self.scope.iter().rev().find(|(n, _)| n == name) {
            return Ok(s.clone());
        }
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, kind)| var_shape(kind))
            .ok_or_else(|| format!("internal error: no cost bound for `{name}`"))
    }

    /// The most evaluating `e` can cost, and the shape of its value.
    pub(super) fn estimate(&mut self, e: &IdedExpr) -> Result<(u64, Shape), String> {
        let (cost, shape) = self.node(e)?;
        // Each node is one step; a node that creates its value also pays for its size.
        let own = if creates(e) { 1 + shape.shallow() } else { 1 };
        Ok((cost.saturating_add(own), shape))
    }

    fn node(&mut self, e: &IdedExpr) -> Result<(u64, Shape), String> {
        match &e.expr {
            Expr::Literal(v) => Ok((
                0,
                match v {
                    Val::String(s) => Shape::Str(s.len() as u64),
                    Val::Bytes(b) => Shape::Str(b.len() as u64),
                    _ => Shape::Scalar,
                },
            )),
            Expr::Ident(name) => Ok((0, self.lookup(name)?)),
            Expr::Select(s) => {
                let (cost, operand) = self.estimate(&s.operand)?;
                let key = str_units(s.field.len() as u64);
                if s.test {
                    Ok((cost.saturating_add(key), Shape::Scalar))
                } else {
                    Ok((cost.saturating_add(key), operand.member()))
                }
            }
            Expr::List(list) => {
                let mut cost = 0u64;
                let mut elem: Option<Shape> = None;
                for x in &list.elements {
                    let (c, s) = self.estimate(x)?;
                    cost = cost.saturating_add(c);
                    elem = Some(match elem {
                        Some(prev) => prev.join(&s),
                        None => s,
                    });
                }
                let n = list.elements.len() as u64;
                Ok((cost, Shape::List(n, Box::new(elem.unwrap_or(Shape::Empty)))))
            }
            Expr::Map(map) => {
                let mut cost = 0u64;
                let mut keys: Option<Shape> = None;
                let mut values: Option<Shape> = None;
                for entry in &map.entries {
                    let EntryExpr::MapEntry(entry) = &entry.expr else {
                        return Err("message construction is not supported".to_string());
                    };
                    let (ck, k) = self.estimate(&entry.key)?;
                    let (cv, v) = self.estimate(&entry.value)?;
                    // Inserting hashes the key.
                    cost = sat(&[cost, ck, cv, k.deep()]);
                    keys = Some(keys.map_or(k.clone(), |p| p.join(&k)));
                    values = Some(values.map_or(v.clone(), |p| p.join(&v)));
                }
                let n = map.entries.len() as u64;
                Ok((
                    cost,
                    Shape::Map(
                        n,
                        Box::new(keys.unwrap_or(Shape::Empty)),
                        Box::new(values.unwrap_or(Shape::Empty)),
                    ),
                ))
            }
            Expr::Comprehension(comp) => self.comprehension(comp),
            Expr::Call(_) => self.call(e),
            Expr::Struct(_) | Expr::Unspecified => Err("unsupported expression".to_string()),
        }
    }

    fn comprehension(&mut self, comp: &ComprehensionExpr) -> Result<(u64, Shape), String> {
        if comp.iter_var2.is_some() {
            return Err("two-variable comprehensions are not supported".to_string());
        }
        let (c_range, range) = self.estimate(&comp.iter_range)?;
        let (c_init, init) = self.estimate(&comp.accu_init)?;
        let n = range.iterations();
        let before = self.scope.len();
        self.scope.push((comp.iter_var.clone(), range.element()));
        // The accumulator: a list (`map`, `filter`) grows by at most one element per iteration;
        // anything else (`all`, `exists`, `exists_one`) must keep its shape.
        let accu = match &init {
            Shape::List(len, _) => {
                self.scope.push((comp.accu_var.clone(), init.clone()));
                let step = self.estimate(&comp.loop_step).map(|(_, s)| s);
                self.scope.truncate(before + 1);
                let elem = match step? {
                    Shape::List(_, e) => *e,
                    other => other.element(),
                };
                Shape::List(len.saturating_add(n), Box::new(elem))
            }
            other => other.clone(),
        };
        self.scope.push((comp.accu_var.clone(), accu.clone()));
        let result = (|| {
            let (c_cond, _) = self.estimate(&comp.loop_cond)?;
            let (c_step, step) = self.estimate(&comp.loop_step)?;
            let grows = match (&step, &accu) {
                (Shape::List(a, x), Shape::List(b, y)) => a > &b.saturating_add(1) || x != y,
                (a, b) => a.join(b) != *b,
            };
            if grows {
                return Err("internal error: cannot bound a macro's accumulator".to_string());
            }
            let (c_result, result) = self.estimate(&comp.result)?;
            let per_item = c_cond.saturating_add(c_step);
            Ok((
                sat(&[c_range, c_init, n.saturating_mul(per_item), c_result]),
                result,
            ))
        })();
        self.scope.truncate(before);
        result
    }

    fn call(&mut self, e: &IdedExpr) -> Result<(u64, Shape), String> {
        let Expr::Call(call) = &e.expr else {
            return Err("internal error: not a call".to_string());
        };
        let name = call.func_name.as_str();
        let mut operands = Vec::with_capacity(call.args.len() + 1);
        if let Some(target) = &call.target {
            operands.push(self.estimate(target)?);
        }
        for arg in &call.args {
            operands.push(self.estimate(arg)?);
        }
        let shapes: Vec<&Shape> = operands.iter().map(|(_, s)| s).collect();
        let costs: Vec<u64> = operands.iter().map(|(c, _)| *c).collect();
        let mut children = sat(&costs);
        if !inline(name, call.args.len()) {
            // cel-interpreter 0.10 resolves the first argument of a one- or two-argument call
            // before it looks the function up, then the function resolves it again; and it
            // copies the argument trees for each call.
            if let (1 | 2, Some(first)) = (call.args.len(), call.args.first()) {
                children = sat(&[children, self.estimate(first)?.0]);
            }
            let copied = call
                .args
                .iter()
                .map(tree_size)
                .fold(0u64, u64::saturating_add);
            children = children.saturating_add(copied);
        }
        let scalar = |work: u64| Ok((children.saturating_add(work), Shape::Scalar));
        let first = shapes.first().copied().cloned().unwrap_or(Shape::Scalar);
        let second = shapes.get(1).copied().cloned().unwrap_or(Shape::Scalar);
        match name {
            operators::CONDITIONAL => {
                // Only one branch runs.
                let [c, a, b] = costs.as_slice() else {
                    return Err("internal error: `?:` needs three operands".to_string());
                };
                let shape = second.join(&shapes.get(2).copied().cloned().unwrap_or(Shape::Scalar));
                Ok((c.saturating_add((*a).max(*b)), shape))
            }
            operators::LOGICAL_AND
            | operators::LOGICAL_OR
            | operators::LOGICAL_NOT
            | operators::NOT_STRICTLY_FALSE
            | operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO
            | operators::NEGATE
            | NEGATE => scalar(0),
            BOOL | ITERABLE => Ok((children, first)),
            operators::ADD => Ok((children, first.concat(&second))),
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS => scalar(first.deep().min(second.deep())),
            operators::IN => scalar(match &second {
                Shape::Map(..) => first.deep(),
                Shape::List(n, x) => n.saturating_mul(1 + first.deep().min(x.deep())),
                Shape::Str(_) => first.shallow().saturating_add(second.shallow()),
                // A list, a map or a string: the costliest.
                Shape::Any { items, .. } => items
                    .saturating_mul(1 + first.deep().min(second.deep()))
                    .max(first.deep())
                    .max(first.shallow().saturating_add(second.shallow())),
                Shape::Empty | Shape::Scalar => 1,
            }),
            INDEX | operators::INDEX => {
                Ok((children.saturating_add(second.deep()), first.member()))
            }
            // Strings only (anything else is an error).
            "startsWith" | "endsWith" => {
                scalar(str_units(first.max_str()).saturating_add(str_units(second.max_str())))
            }
            // A substring, or (cel-interpreter) an element of a list or a key of a map.
            "contains" => scalar(sat(&[
                str_units(first.max_str()),
                str_units(second.max_str()),
                first
                    .iterations()
                    .saturating_mul(1 + first.element().deep().min(second.deep())),
            ])),
            "size" => scalar(first.shallow()),
            "int" | "uint" | "double" => scalar(first.shallow()),
            "string" | "bytes" => Ok((
                children.saturating_add(first.shallow()),
                Shape::Str(first.max_str().max(MAX_NUMBER_TEXT)),
            )),
            "max" | "min" => {
                let mut shape = Shape::Scalar;
                let mut work = 0u64;
                for s in &shapes {
                    shape = shape.join(s).join(&s.element());
                    work = work.saturating_add(s.deep());
                }
                Ok((children.saturating_add(work), shape))
            }
            IP_IN_CIDR => scalar(first.shallow().saturating_add(second.shallow())),
            special if special.starts_with("@special") => {
                let index: Option<usize> = special
                    .strip_prefix("@special")
                    .and_then(|i| i.parse().ok());
                match index.and_then(|i| self.specials.get(i)) {
                    // A regex may scan its input once per state of its program, bounded by
                    // the pattern's length: half a unit per byte of pattern per string unit.
                    Some(SpecialCost::Regex(pattern)) => scalar(
                        str_units(first.max_str())
                            .max(1)
                            .saturating_mul(pattern.div_ceil(2).max(1)),
                    ),
                    Some(SpecialCost::Cidr) => scalar(first.shallow()),
                    None => Err(format!("internal error: unknown function `{special}`")),
                }
            }
            other => Err(format!("internal error: no cost bound for `{other}`")),
        }
    }
}
