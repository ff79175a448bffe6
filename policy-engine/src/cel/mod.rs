//! CEL conditions: the meshauthz extension for what Istio cannot express.
//!
//! A `when` condition with key [`CEL_CONDITION_KEY`] holds CEL expressions in `values` (the
//! condition matches when any of them is true) or `notValues` (it matches when none is). They are
//! compiled when the policies load and evaluated with Envoy's attribute names (see `CEL.md` for
//! the user documentation).
//!
//! Compile once (`compile.rs`): the expression is parsed, every identifier is checked against the
//! attribute vocabulary (`vars.rs`) and every call against the function list, known types are
//! checked (a non-bool result is refused), and the tree is rewritten so that each attribute path
//! is one flat variable. Evaluate many: only those variables are built from [`Attributes`], on a
//! scope layered over a function registry built once per expression.
//!
//! Without the crate's `cel` feature (the module `meshauthz-nocel.wasm`) nothing of this is
//! built: [`CelExpression::compile`] refuses every expression with [`WITHOUT_CEL`], so a policy
//! with a CEL condition is refused when it loads, with its field, and never half-enforced.

#[cfg(feature = "cel")]
mod compile;
#[cfg(feature = "cel")]
mod cost;
#[cfg(feature = "cel")]
mod functions;
#[cfg(feature = "cel")]
mod parse;
#[cfg(feature = "cel")]
mod vars;

#[cfg(test)]
#[cfg(feature = "cel")]
mod cost_tests;
#[cfg(test)]
#[cfg(feature = "cel")]
mod tests;

#[cfg(not(feature = "cel"))]
mod without;
#[cfg(not(feature = "cel"))]
pub use without::CelExpression;

#[cfg(feature = "cel")]
use std::fmt;
#[cfg(feature = "cel")]
use std::sync::Arc;

#[cfg(feature = "cel")]
use cel_interpreter::extractors::This;
#[cfg(feature = "cel")]
use cel_interpreter::{Context, ExecutionError, Value};
#[cfg(feature = "cel")]
use cel_parser::ast::IdedExpr;

#[cfg(feature = "cel")]
use crate::attributes::{Attributes, Requirements};
#[cfg(feature = "cel")]
use compile::Special;
#[cfg(feature = "cel")]
use cost::Shape;
#[cfg(feature = "cel")]
use vars::VarKind;

#[cfg(feature = "cel")]
pub use cost::{
    EXPRESSION_BUDGET, MAX_CLAIMS_WEIGHT, MAX_CLAIM_ITEMS, MAX_CLAIM_STRING_BYTES, MAX_HEADERS,
    MAX_HEADER_NAME_BYTES, MAX_STRING_BYTES,
};
/// The most the CEL expressions of one rule may cost together, in `cost.rs`'s units (a request
/// can evaluate each of them once per rule). In both builds: validation names it.
pub const RULE_BUDGET: u64 = 40_000;

/// The `when.key` that marks a CEL condition.
pub const CEL_CONDITION_KEY: &str = "meshauthz.io/cel";

/// Whether this build has CEL conditions (the crate's `cel` feature).
pub const AVAILABLE: bool = cfg!(feature = "cel");

/// Why every CEL expression is refused by a build without the `cel` feature.
pub const WITHOUT_CEL: &str = "this meshauthz module is built without CEL conditions (meshauthz-nocel.wasm); deploy meshauthz.wasm for policies with meshauthz.io/cel";

/// A compiled CEL expression.
#[cfg(feature = "cel")]
pub struct CelExpression {
    source: String,
    expr: IdedExpr,
    vars: Vec<(String, VarKind)>,
    /// The limit each of `vars` is checked against before an evaluation.
    limits: Vec<Shape>,
    requirements: Requirements,
    cost: u64,
    http_only: bool,
    /// Standard functions, ours, and this expression's compiled constants (regexes, CIDRs).
    functions: Context<'static>,
}

#[cfg(feature = "cel")]
impl fmt::Debug for CelExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CelExpression")
            .field("source", &self.source)
            .field(
                "reads",
                &self.vars.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("http_only", &self.http_only)
            .finish_non_exhaustive()
    }
}

/// Checks the rule budget: the CEL expressions (`sources`) of one rule together may cost at most
/// [`RULE_BUDGET`]. Expressions that do not compile are left to their own error.
pub fn check_rule_budget<'s>(sources: impl IntoIterator<Item = &'s str>) -> Result<(), String> {
    let total = sources
        .into_iter()
        .filter_map(|s| CelExpression::compile(s).ok())
        .fold(0u64, |acc, e| acc.saturating_add(e.cost()));
    rule_budget(total)
}

/// [`check_rule_budget`] on the costs already known (validation compiles each expression once).
pub(crate) fn rule_budget(total: u64) -> Result<(), String> {
    if total > RULE_BUDGET {
        return Err(format!(
            "the CEL expressions of this rule may cost up to {total} units together per \
             request, over the rule budget of {RULE_BUDGET}"
        ));
    }
    Ok(())
}

/// Why an expression failed at run time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("CEL evaluation failed: {0}")]
pub struct CelError(pub String);

#[cfg(feature = "cel")]
impl CelExpression {
    /// Compiles `source`; the error says what is wrong (syntax, unknown attribute, ...).
    pub fn compile(source: &str) -> Result<CelExpression, String> {
        let compiled = compile::compile(source)?;
        let mut functions = functions::root_context();
        for (i, special) in compiled.specials.into_iter().enumerate() {
            let name = compile::special_name(i);
            match special {
                Special::Regex(re) => functions
                    .add_function(&name, move |This(s): This<Arc<String>>| -> bool {
                        re.is_match(&s)
                    }),
                Special::Cidr(net) => functions.add_function(
                    &name,
                    move |This(ip): This<Arc<String>>| -> Result<bool, ExecutionError> {
                        functions::contains(&net, &ip)
                    },
                ),
            }
        }
        let limits = compiled
            .vars
            .iter()
            .map(|(_, kind)| cost::var_shape(kind))
            .collect();
        Ok(CelExpression {
            source: source.to_string(),
            expr: compiled.expr,
            limits,
            cost: compiled.cost,
            vars: compiled.vars,
            requirements: compiled.requirements,
            http_only: compiled.http_only,
            functions,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The most one evaluation can cost, in cost units (at most [`EXPRESSION_BUDGET`]).
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// The expression reads request-level attributes (`request.*`), so on a TCP chain it behaves
    /// like an HTTP-only field.
    pub fn is_http_only(&self) -> bool {
        self.http_only
    }

    /// Adds the attributes the expression reads.
    pub fn add_requirements(&self, req: &mut Requirements) {
        let mine = &self.requirements;
        req.principal |= mine.principal;
        req.mtls |= mine.mtls;
        req.source_ip |= mine.source_ip;
        req.remote_ip |= mine.remote_ip;
        req.destination_ip |= mine.destination_ip;
        req.destination_port |= mine.destination_port;
        req.sni |= mine.sni;
        req.host |= mine.host;
        req.method |= mine.method;
        req.path |= mine.path;
        req.jwt |= mine.jwt;
        req.all_headers |= mine.all_headers;
        for header in &mine.headers {
            req.add_header(header);
        }
    }

    /// Evaluates to a boolean; a non-boolean result is an error.
    pub fn evaluate(&self, attrs: &Attributes<'_>) -> Result<bool, CelError> {
        let mut scope = self.functions.new_inner_scope();
        for ((name, kind), limit) in self.vars.iter().zip(&self.limits) {
            if let Some(value) = kind.value(attrs) {
                // The cost bound holds only for inputs within the limits: a caller who sends
                // more gets an error, which never widens access.
                if let Err(why) = cost::fits(&value, limit) {
                    return Err(CelError(format!(
                        "`{}`: attribute `{}` is over its limit: {why}",
                        self.source,
                        kind.display()
                    )));
                }
                scope.add_variable_from_value(name.as_str(), value);
            }
        }
        match scope.resolve(&self.expr) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(CelError(format!(
                "`{}` evaluated to a {}, not a bool",
                self.source,
                other.type_of()
            ))),
            Err(err) => Err(CelError(format!(
                "`{}`: {}",
                self.source,
                self.describe(&err)
            ))),
        }
    }

    fn describe(&self, err: &ExecutionError) -> String {
        if let ExecutionError::UndeclaredReference(name) = err {
            if let Some((_, kind)) = self.vars.iter().find(|(n, _)| n == name.as_str()) {
                return match kind {
                    VarKind::Has(inner) => {
                        format!("cannot test `{}`: its parent is absent", inner.display())
                    }
                    other => format!("attribute `{}` is absent", other.display()),
                };
            }
        }
        err.to_string()
    }
}
