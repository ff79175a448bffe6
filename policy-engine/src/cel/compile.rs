//! Compile time: parse, check every name against the attribute vocabulary and the function list,
//! infer types where they are known, and rewrite the tree so that evaluation reads flat variables
//! and never reaches the parts of cel-interpreter that depart from CEL (see [`super::functions`]).

use std::fmt;

use cel_parser::ast::{operators, CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr};
use cel_parser::reference::Val;
use regex_lite::Regex;

use super::cost::{Estimator, SpecialCost, EXPRESSION_BUDGET};
use super::functions::{self, BOOL, INDEX, IP_IN_CIDR, ITERABLE, NEGATE, USER_FUNCTIONS};
use super::vars::{known_attributes, Attr, VarKind, ATTRIBUTES};
use crate::attributes::Requirements;

/// Longest expression accepted, in bytes.
pub(super) const MAX_SOURCE_LEN: usize = 4096;
/// Deepest syntax tree accepted (macros expand into a few levels more than the source shows):
/// evaluation recurses once per level, and the Wasm stack is small.
pub(super) const MAX_DEPTH: usize = 128;

/// What the compiler knows of a value's type; `Dyn` when only the run time knows (JWT claims,
/// macro variables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    Bool,
    Int,
    UInt,
    Double,
    String,
    Bytes,
    Null,
    List,
    Map,
    Dyn,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::UInt => "uint",
            Ty::Double => "double",
            Ty::String => "string",
            Ty::Bytes => "bytes",
            Ty::Null => "null",
            Ty::List => "list",
            Ty::Map => "map",
            Ty::Dyn => "dyn",
        })
    }
}

/// A function made at compile time for one expression (its argument is a constant).
pub(super) enum Special {
    /// `x.matches("<constant>")`, the regex compiled once.
    Regex(Regex),
    /// `ip_in_cidr(x, "<constant>")`, the CIDR parsed once.
    Cidr(ipnet::IpNet),
}

/// The compiled form of one expression.
pub(super) struct Compiled {
    pub(super) expr: IdedExpr,
    /// The flat variables the rewritten expression reads, each with its name.
    pub(super) vars: Vec<(String, VarKind)>,
    /// Functions named `@special<i>`, `i` the index here.
    pub(super) specials: Vec<Special>,
    pub(super) requirements: Requirements,
    pub(super) http_only: bool,
    /// The most one evaluation can cost (see [`super::cost`]).
    pub(super) cost: u64,
}

pub(super) fn special_name(i: usize) -> String {
    format!("@special{i}")
}

pub(super) fn compile(source: &str) -> Result<Compiled, String> {
    if source.trim().is_empty() {
        return Err("empty expression".to_string());
    }
    if source.len() > MAX_SOURCE_LEN {
        return Err(format!(
            "expression is {} bytes long, the limit is {MAX_SOURCE_LEN}",
            source.len()
        ));
    }
    let mut expr = super::parse::parse(source)?;
    let mut c = Compiler::default();
    let mut scope = Vec::new();
    let ty = c.walk(&mut expr, &mut scope, 0)?;
    if !matches!(ty, Ty::Bool | Ty::Dyn) {
        return Err(format!(
            "expression must evaluate to a bool, but it evaluates to {ty}"
        ));
    }
    let special_costs: Vec<SpecialCost> = c
        .specials
        .iter()
        .map(|s| match s {
            Special::Regex(re) => SpecialCost::Regex(re.as_str().len() as u64),
            Special::Cidr(_) => SpecialCost::Cidr,
        })
        .collect();
    let (cost, _) = Estimator::new(&c.vars, &special_costs).estimate(&expr)?;
    if cost > EXPRESSION_BUDGET {
        return Err(format!(
            "the expression may cost up to {cost} units per evaluation, over the budget of \
             {EXPRESSION_BUDGET} (a macro costs its body times the size of its list, so nested \
             macros multiply; see the README's CEL cost section)"
        ));
    }
    Ok(Compiled {
        expr,
        vars: c.vars,
        specials: c.specials,
        requirements: c.requirements,
        http_only: c.http_only,
        cost,
    })
}

#[derive(Default)]
struct Compiler {
    vars: Vec<(String, VarKind)>,
    specials: Vec<Special>,
    requirements: Requirements,
    http_only: bool,
}

/// The attribute path an expression spells: `a.b.c`, with constant string indexes
/// (`a["b"]`) counted as fields. `None` when it is anything else.
fn path_of(e: &IdedExpr) -> Option<Vec<String>> {
    match &e.expr {
        Expr::Ident(name) => Some(vec![name.clone()]),
        Expr::Select(s) if !s.test => {
            let mut p = path_of(&s.operand)?;
            p.push(s.field.clone());
            Some(p)
        }
        Expr::Call(call) if call.func_name == operators::INDEX && call.target.is_none() => {
            let [container, key] = call.args.as_slice() else {
                return None;
            };
            let Expr::Literal(Val::String(key)) = &key.expr else {
                return None;
            };
            let mut p = path_of(container)?;
            p.push(key.clone());
            Some(p)
        }
        _ => None,
    }
}

/// The variable an attribute path names.
fn resolve_path(path: &[String]) -> Result<(VarKind, Ty), String> {
    let matched = ATTRIBUTES.iter().find_map(|(name, attr)| {
        let segments: Vec<&str> = name.split('.').collect();
        let is_prefix = path.len() >= segments.len()
            && segments.iter().zip(path).all(|(a, b)| *a == b.as_str());
        is_prefix.then_some((*attr, segments.len()))
    });
    let Some((attr, consumed)) = matched else {
        // Name the path up to its first segment that no attribute continues with.
        let mut shown = Vec::new();
        for segment in path {
            shown.push(segment.as_str());
            let prefix = shown.join(".");
            let continues = ATTRIBUTES
                .iter()
                .any(|(name, _)| name.starts_with(&format!("{prefix}.")));
            if !continues {
                break;
            }
        }
        return Err(format!(
            "unknown attribute `{}`; known: {}",
            shown.join("."),
            known_attributes()
        ));
    };
    let rest = path.get(consumed..).unwrap_or_default();
    match (attr, rest) {
        (_, []) => Ok((VarKind::Attr(attr), attr.ty())),
        (Attr::RequestHeaders, [name]) => {
            Ok((VarKind::Header(name.to_ascii_lowercase()), Ty::String))
        }
        (Attr::RequestAuthClaims, claims) => Ok((VarKind::Claim(claims.to_vec()), Ty::Dyn)),
        (Attr::RequestHeaders, [name, field, ..]) => Err(format!(
            "`request.headers[{name:?}]` is a string: it has no field `{field}`"
        )),
        (_, [field, ..]) => Err(format!(
            "`{}` is a {}: it has no field `{field}`",
            attr.name(),
            attr.ty()
        )),
    }
}

fn bad_cidr(cidr: &str) -> String {
    format!("`{cidr}` is not a CIDR (`10.0.0.0/8`) or an IP address")
}

/// The type of a macro variable, `None` when `name` is not one.
fn lookup(scope: &[(String, Ty)], name: &str) -> Option<Ty> {
    scope
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, ty)| *ty)
}

/// A literal as the expression spells it (for messages).
fn show(v: &Val) -> String {
    match v {
        Val::String(s) => format!("{s:?}"),
        Val::Boolean(b) => b.to_string(),
        Val::Int(i) => i.to_string(),
        Val::UInt(u) => format!("{u}u"),
        Val::Double(d) => format!("{d:?}"),
        Val::Bytes(b) => format!("b{:?}", String::from_utf8_lossy(b)),
        Val::Null => "null".to_string(),
    }
}

fn literal_ty(v: &Val) -> Ty {
    match v {
        Val::String(_) => Ty::String,
        Val::Boolean(_) => Ty::Bool,
        Val::Int(_) => Ty::Int,
        Val::UInt(_) => Ty::UInt,
        Val::Double(_) => Ty::Double,
        Val::Bytes(_) => Ty::Bytes,
        Val::Null => Ty::Null,
    }
}

/// Replaces `e` by `func(e)`.
fn wrap(e: &mut IdedExpr, func: &str) {
    let inner = std::mem::take(e);
    *e = IdedExpr {
        id: inner.id,
        expr: Expr::Call(CallExpr {
            func_name: func.to_string(),
            target: None,
            args: vec![inner],
        }),
    };
}

/// How an operator reads in an error message.
fn operator_symbol(func: &str) -> &str {
    match func {
        operators::LOGICAL_AND => "&&",
        operators::LOGICAL_OR => "||",
        operators::LOGICAL_NOT => "!",
        operators::CONDITIONAL => "?:",
        operators::ADD => "+",
        operators::SUBSTRACT => "-",
        operators::MULTIPLY => "*",
        operators::DIVIDE => "/",
        operators::MODULO => "%",
        operators::NEGATE => "-",
        other => other,
    }
}

fn is_comparison(func: &str) -> bool {
    matches!(
        func,
        operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS
            | operators::IN
            | operators::NOT_STRICTLY_FALSE
    )
}

impl Compiler {
    /// The flat variable for `kind`, declared once.
    fn var(&mut self, kind: VarKind) -> String {
        let name = kind.name();
        if !self.vars.iter().any(|(n, _)| *n == name) {
            kind.require(&mut self.requirements);
            self.http_only |= kind.is_http();
            self.vars.push((name.clone(), kind));
        }
        name
    }

    /// `e` must be a bool: a known other type is an error, an unknown one is checked at run time.
    fn want_bool(&self, e: &mut IdedExpr, ty: Ty, op: &str) -> Result<(), String> {
        match ty {
            Ty::Bool => Ok(()),
            Ty::Dyn => {
                wrap(e, BOOL);
                Ok(())
            }
            other => Err(format!(
                "`{}` needs bool operands, got {other}",
                operator_symbol(op)
            )),
        }
    }

    fn walk(
        &mut self,
        e: &mut IdedExpr,
        scope: &mut Vec<(String, Ty)>,
        depth: usize,
    ) -> Result<Ty, String> {
        if depth > MAX_DEPTH {
            return Err(format!("expression nests deeper than {MAX_DEPTH} levels"));
        }
        // An attribute path becomes one variable.
        if let Some(path) = path_of(e) {
            if let Some(root) = path.first() {
                if lookup(scope, root).is_none() {
                    let (kind, ty) = resolve_path(&path)?;
                    e.expr = Expr::Ident(self.var(kind));
                    return Ok(ty);
                }
            }
        }
        match &mut e.expr {
            Expr::Ident(name) => Ok(lookup(scope, name).unwrap_or(Ty::Dyn)),
            Expr::Literal(v) => Ok(literal_ty(v)),
            Expr::Select(select) => {
                if select.test {
                    // has(<attribute path>.field)
                    if let Some(mut path) = path_of(&select.operand) {
                        if path.first().is_some_and(|r| lookup(scope, r).is_none()) {
                            path.push(select.field.clone());
                            let (kind, _) = resolve_path(&path)?;
                            e.expr = Expr::Ident(self.var(VarKind::Has(Box::new(kind))));
                            return Ok(Ty::Bool);
                        }
                    }
                    self.walk(&mut select.operand, scope, depth + 1)?;
                    Ok(Ty::Bool)
                } else {
                    self.walk(&mut select.operand, scope, depth + 1)?;
                    Ok(Ty::Dyn)
                }
            }
            Expr::List(list) => {
                for element in &mut list.elements {
                    self.walk(element, scope, depth + 1)?;
                }
                Ok(Ty::List)
            }
            Expr::Map(map) => {
                // CEL refuses a map literal that repeats a key; a constant one is refused here,
                // when the policy loads.
                let constant_keys: Vec<&Val> = map
                    .entries
                    .iter()
                    .filter_map(|e| match &e.expr {
                        EntryExpr::MapEntry(me) => match &me.key.expr {
                            Expr::Literal(v) => Some(v),
                            _ => None,
                        },
                        EntryExpr::StructField(_) => None,
                    })
                    .collect();
                for (i, key) in constant_keys.iter().enumerate() {
                    if constant_keys.iter().skip(i + 1).any(|k| k == key) {
                        return Err(format!("map literal with a repeated key `{}`", show(key)));
                    }
                }
                for entry in &mut map.entries {
                    let EntryExpr::MapEntry(entry) = &mut entry.expr else {
                        return Err("message construction is not supported".to_string());
                    };
                    if entry.optional {
                        return Err("optional map entries (`?key: value`) are not supported".into());
                    }
                    self.walk(&mut entry.key, scope, depth + 1)?;
                    self.walk(&mut entry.value, scope, depth + 1)?;
                }
                Ok(Ty::Map)
            }
            Expr::Struct(s) => Err(format!(
                "message construction `{}{{...}}` is not supported",
                s.type_name
            )),
            Expr::Unspecified => Err("unsupported expression".to_string()),
            Expr::Comprehension(comp) => self.walk_comprehension(comp, scope, depth),
            Expr::Call(_) => self.walk_call(e, scope, depth),
        }
    }

    fn walk_comprehension(
        &mut self,
        comp: &mut ComprehensionExpr,
        scope: &mut Vec<(String, Ty)>,
        depth: usize,
    ) -> Result<Ty, String> {
        match self.walk(&mut comp.iter_range, scope, depth + 1)? {
            Ty::List | Ty::Map => {}
            // cel-interpreter panics on any other range: check it at run time.
            Ty::Dyn => wrap(&mut comp.iter_range, ITERABLE),
            other => return Err(format!("a macro cannot iterate over a {other}")),
        }
        let accu_ty = self.walk(&mut comp.accu_init, scope, depth + 1)?;
        let before = scope.len();
        scope.push((comp.iter_var.clone(), Ty::Dyn));
        if let Some(var2) = &comp.iter_var2 {
            scope.push((var2.clone(), Ty::Dyn));
        }
        scope.push((comp.accu_var.clone(), accu_ty));
        let result = (|| {
            self.walk(&mut comp.loop_cond, scope, depth + 1)?;
            self.walk(&mut comp.loop_step, scope, depth + 1)?;
            self.walk(&mut comp.result, scope, depth + 1)
        })();
        scope.truncate(before);
        result
    }

    fn walk_call(
        &mut self,
        e: &mut IdedExpr,
        scope: &mut Vec<(String, Ty)>,
        depth: usize,
    ) -> Result<Ty, String> {
        let Expr::Call(call) = &mut e.expr else {
            return Err("internal error: not a call".to_string());
        };
        let name = call.func_name.clone();

        // `"x-name" in request.headers` tests one header; likewise for a top-level claim.
        if name == operators::IN {
            if let [lhs, rhs] = call.args.as_slice() {
                if let (Expr::Literal(Val::String(key)), Some(mut path)) = (&lhs.expr, path_of(rhs))
                {
                    if path.first().is_some_and(|r| lookup(scope, r).is_none()) {
                        let (kind, _) = resolve_path(&path)?;
                        if matches!(
                            kind,
                            VarKind::Attr(Attr::RequestHeaders | Attr::RequestAuthClaims)
                        ) {
                            path.push(key.clone());
                            let (kind, _) = resolve_path(&path)?;
                            e.expr = Expr::Ident(self.var(VarKind::Has(Box::new(kind))));
                            return Ok(Ty::Bool);
                        }
                    }
                }
            }
        }

        // `ip_in_cidr(<address attribute>, "<constant>")` is answered from the address itself, as
        // one bool variable: no formatting of the address and parsing it back at each request.
        if name == IP_IN_CIDR {
            let operands = match (&call.target, call.args.as_slice()) {
                (Some(ip), [cidr]) => Some((&**ip, cidr)),
                (None, [ip, cidr]) => Some((ip, cidr)),
                _ => None,
            };
            if let Some((ip, cidr)) = operands {
                if let (Some(path), Expr::Literal(Val::String(cidr))) = (path_of(ip), &cidr.expr) {
                    let free = path.first().is_some_and(|r| lookup(scope, r).is_none());
                    if let (true, Ok((VarKind::Attr(attr), _))) = (free, resolve_path(&path)) {
                        if attr.is_address() {
                            let net = functions::parse_cidr(cidr).ok_or_else(|| bad_cidr(cidr))?;
                            e.expr = Expr::Ident(self.var(VarKind::InCidr(attr, net)));
                            return Ok(Ty::Bool);
                        }
                    }
                }
            }
        }

        let is_operator = name.starts_with('_')
            || name.starts_with('@')
            || name == operators::LOGICAL_NOT
            || name == operators::NEGATE;
        let operands = call.args.len() + usize::from(call.target.is_some());
        if !is_operator {
            let Some((_, min, max)) = USER_FUNCTIONS.iter().find(|(n, _, _)| *n == name) else {
                let known: Vec<&str> = USER_FUNCTIONS.iter().map(|(n, _, _)| *n).collect();
                return Err(format!(
                    "unknown function `{name}`; known: {}",
                    known.join(", ")
                ));
            };
            if operands < *min || operands > *max {
                return Err(format!(
                    "`{name}` takes {} argument(s) (counting the receiver), got {operands}",
                    if min == max {
                        min.to_string()
                    } else {
                        format!("at least {min}")
                    }
                ));
            }
        } else if ![
            operators::CONDITIONAL,
            operators::LOGICAL_AND,
            operators::LOGICAL_OR,
            operators::LOGICAL_NOT,
            operators::SUBSTRACT,
            operators::ADD,
            operators::MULTIPLY,
            operators::DIVIDE,
            operators::MODULO,
            operators::EQUALS,
            operators::NOT_EQUALS,
            operators::GREATER_EQUALS,
            operators::LESS_EQUALS,
            operators::GREATER,
            operators::LESS,
            operators::NEGATE,
            operators::INDEX,
            operators::IN,
            operators::NOT_STRICTLY_FALSE,
        ]
        .contains(&name.as_str())
        {
            return Err(format!(
                "`{}` is not supported (optional values are not)",
                operator_symbol(&name)
            ));
        }

        if let Some(target) = &mut call.target {
            self.walk(target, scope, depth + 1)?;
        }
        let mut tys = Vec::with_capacity(call.args.len());
        for arg in &mut call.args {
            tys.push(self.walk(arg, scope, depth + 1)?);
        }

        let n = name.as_str();
        match n {
            operators::LOGICAL_AND | operators::LOGICAL_OR | operators::LOGICAL_NOT => {
                for (arg, ty) in call.args.iter_mut().zip(&tys) {
                    self.want_bool(arg, *ty, n)?;
                }
                Ok(Ty::Bool)
            }
            operators::CONDITIONAL => {
                if let (Some(cond), Some(ty)) = (call.args.first_mut(), tys.first()) {
                    self.want_bool(cond, *ty, n)?;
                }
                match (tys.get(1), tys.get(2)) {
                    (Some(a), Some(b)) if a == b => Ok(*a),
                    _ => Ok(Ty::Dyn),
                }
            }
            _ if is_comparison(n) => Ok(Ty::Bool),
            operators::ADD
            | operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO => {
                let (Some(a), Some(b)) = (tys.first(), tys.get(1)) else {
                    return Ok(Ty::Dyn);
                };
                let allowed: &[Ty] = match n {
                    operators::ADD => &[
                        Ty::Int,
                        Ty::UInt,
                        Ty::Double,
                        Ty::String,
                        Ty::Bytes,
                        Ty::List,
                    ],
                    operators::MODULO => &[Ty::Int, Ty::UInt],
                    _ => &[Ty::Int, Ty::UInt, Ty::Double],
                };
                match (*a, *b) {
                    (Ty::Dyn, Ty::Dyn) => Ok(Ty::Dyn),
                    (Ty::Dyn, t) | (t, Ty::Dyn) if allowed.contains(&t) => Ok(Ty::Dyn),
                    (a, b) if a == b && allowed.contains(&a) => Ok(a),
                    (a, b) => Err(format!(
                        "`{}` is not defined for {a} and {b}",
                        operator_symbol(n)
                    )),
                }
            }
            operators::NEGATE => match tys.first() {
                Some(t @ (Ty::Int | Ty::Dyn)) => {
                    // cel-interpreter negates an int unchecked: `-x` of i64::MIN overflows.
                    call.func_name = NEGATE.to_string();
                    Ok(*t)
                }
                Some(Ty::Double) => Ok(Ty::Double),
                Some(t) => Err(format!("`-` is not defined for {t}")),
                None => Ok(Ty::Dyn),
            },
            operators::INDEX => {
                // cel-interpreter gives null for a missing key; CEL (and meshauthz) an error.
                call.func_name = INDEX.to_string();
                Ok(Ty::Dyn)
            }
            "matches" => {
                if !matches!(
                    call.args.last().map(|a| &a.expr),
                    Some(Expr::Literal(Val::String(_)))
                ) {
                    return Err(
                        "the pattern of `matches` must be a constant string: a pattern \
                                computed at run time (from a header, a claim) would be compiled \
                                at each request, at a cost the caller chooses"
                            .to_string(),
                    );
                }
                self.constant_special(call, |pattern| {
                    Regex::new(pattern)
                        .map(Special::Regex)
                        .map_err(|err| format!("invalid regular expression `{pattern}`: {err}"))
                })?;
                Ok(Ty::Bool)
            }
            IP_IN_CIDR => {
                self.constant_special(call, |cidr| {
                    functions::parse_cidr(cidr)
                        .map(Special::Cidr)
                        .ok_or_else(|| bad_cidr(cidr))
                })?;
                Ok(Ty::Bool)
            }
            "contains" | "startsWith" | "endsWith" => Ok(Ty::Bool),
            "size" | "int" => Ok(Ty::Int),
            "uint" => Ok(Ty::UInt),
            "double" => Ok(Ty::Double),
            "string" => Ok(Ty::String),
            "bytes" => Ok(Ty::Bytes),
            _ => Ok(Ty::Dyn),
        }
    }

    /// `f(x, "<constant>")` or `x.f("<constant>")`: build the special function once and call it
    /// with `x` alone.
    fn constant_special(
        &mut self,
        call: &mut CallExpr,
        build: impl FnOnce(&str) -> Result<Special, String>,
    ) -> Result<(), String> {
        let Some(Expr::Literal(Val::String(constant))) = call.args.last().map(|a| &a.expr) else {
            return Ok(());
        };
        let special = build(constant)?;
        call.args.pop();
        call.func_name = special_name(self.specials.len());
        self.specials.push(special);
        Ok(())
    }
}
