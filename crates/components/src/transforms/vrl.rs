//! VRL glue: the function set (VRL's stdlib plus sluice's secret functions), compiling with
//! VRL's own diagnostics, running a program on an event, and conditions.

use serde::Deserialize;
use sluice_core::LogEvent;
use vrl::compiler::prelude::*;
use vrl::compiler::runtime::{Runtime, Terminate};
use vrl::compiler::{CompilationResult, Program, TargetValueRef, TimeZone};

/// VRL's stdlib plus `get_secret`, `set_secret` and `remove_secret`, with VRL's `parse_json`
/// replaced by one that gives the same values without copying their strings.
pub fn functions() -> Vec<Box<dyn Function>> {
    let mut functions = vrl::stdlib::all();
    for function in &mut functions {
        if function.identifier() == "parse_json" {
            *function = Box::new(super::parse_json::ParseJson);
        }
    }
    functions.push(Box::new(GetSecret));
    functions.push(Box::new(SetSecret));
    functions.push(Box::new(RemoveSecret));
    functions
}

/// Compiles `source`; on failure returns VRL's diagnostics rendered as text.
pub fn compile(source: &str) -> Result<CompilationResult, String> {
    vrl::compiler::compile(source, &functions())
        .map_err(|diagnostics| vrl::diagnostic::Formatter::new(source, diagnostics).to_string())
}

/// Runs `program` on `event` in place.
pub fn run(runtime: &mut Runtime, program: &Program, tz: &TimeZone, event: &mut LogEvent) -> Result<Value, Terminate> {
    let result = event.with_vrl_parts(|value, metadata, secrets| {
        let mut target = TargetValueRef { value, metadata, secrets };
        runtime.resolve(&mut target, program, tz)
    });
    runtime.clear();
    result
}

/// A program run on events one by one outside a pipeline (`sluice vrl`).
pub struct Standalone {
    program: Program,
    runtime: Runtime,
    tz: TimeZone,
    /// VRL's warnings about the program, rendered; empty when there are none.
    pub warnings: String,
}

/// What running a program on one event came to.
pub enum Ran {
    /// The value of the program's last expression.
    Value(Value),
    /// The program called `abort` (a `--fix` program's way to drop the event).
    Aborted(String),
    /// A runtime error (the event would go to the dropped output, or stay in the DLQ).
    Failed(String),
}

impl Standalone {
    pub fn compile(source: &str) -> Result<Self, String> {
        let compiled = compile(source)?;
        let warnings = if compiled.warnings.is_empty() {
            String::new()
        } else {
            vrl::diagnostic::Formatter::new(source, compiled.warnings).to_string()
        };
        Ok(Self { program: compiled.program, runtime: Runtime::default(), tz: TimeZone::default(), warnings })
    }

    pub fn run(&mut self, event: &mut LogEvent) -> Ran {
        match run(&mut self.runtime, &self.program, &self.tz, event) {
            Ok(value) => Ran::Value(value),
            Err(Terminate::Abort(e)) => Ran::Aborted(e.to_string()),
            Err(e) => Ran::Failed(e.to_string()),
        }
    }
}

/// The event `source` makes when run on an empty one (the `type = "vrl"` inputs of unit tests).
pub fn event_from(source: &str) -> Result<LogEvent, String> {
    let mut event = LogEvent::from_value(
        Value::Object(Default::default()),
        sluice_core::event::EventMetadata::new("unit_test", chrono::Utc::now()),
    );
    match Standalone::compile(source)?.run(&mut event) {
        Ran::Value(_) => Ok(event),
        Ran::Aborted(e) | Ran::Failed(e) => Err(e),
    }
}

/// A condition as Vector writes it: a VRL string, `{ type = "vrl", source = "…" }`, or one of
/// `is_log`, `is_metric`, `is_trace` (`{ type = "is_log" }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ConditionConfig {
    Source(String),
    Typed(TypedCondition),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedCondition {
    #[serde(rename = "type")]
    pub condition_type: ConditionType,
    /// The VRL program; required for `vrl`, refused for the others.
    pub source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionType {
    Vrl,
    IsLog,
    IsMetric,
    IsTrace,
}

impl ConditionConfig {
    pub fn build(&self) -> Result<Condition, String> {
        let (kind, source) = match self {
            Self::Source(source) => (ConditionType::Vrl, Some(source)),
            Self::Typed(TypedCondition { condition_type, source }) => (*condition_type, source.as_ref()),
        };
        let check = match (kind, source) {
            (ConditionType::Vrl, Some(source)) => {
                let compiled = compile(source)?;
                Check::Vrl(Box::new(VrlCheck {
                    program: compiled.program,
                    runtime: Runtime::default(),
                    tz: TimeZone::default(),
                }))
            }
            (ConditionType::Vrl, None) => return Err("a `vrl` condition needs `source`".into()),
            (_, Some(_)) => return Err("only `vrl` conditions take a `source`".into()),
            (ConditionType::IsLog, None) => Check::IsLog,
            (ConditionType::IsMetric, None) => Check::IsMetric,
            (ConditionType::IsTrace, None) => Check::IsTrace,
        };
        Ok(Condition { check })
    }
}

/// A compiled condition.
pub struct Condition {
    check: Check,
}

enum Check {
    Vrl(Box<VrlCheck>),
    IsLog,
    IsMetric,
    /// sluice carries no traces yet: never true.
    IsTrace,
}

struct VrlCheck {
    program: Program,
    runtime: Runtime,
    tz: TimeZone,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Condition")
    }
}

impl Condition {
    /// True when the program returns `true`. Errors and non-boolean results are `Err` (and
    /// callers treat them as false, as Vector does).
    pub fn check(&mut self, event: &mut LogEvent) -> Result<bool, String> {
        match &mut self.check {
            Check::Vrl(vrl) => match run(&mut vrl.runtime, &vrl.program, &vrl.tz, event) {
                Ok(Value::Boolean(b)) => Ok(b),
                Ok(other) => Err(format!("condition returned {}, not a boolean", other.kind())),
                Err(err) => Err(err.to_string()),
            },
            Check::IsLog => Ok(!sluice_core::metric_event::Metric::is_metric(event.value())),
            Check::IsMetric => Ok(sluice_core::metric_event::Metric::is_metric(event.value())),
            Check::IsTrace => Ok(false),
        }
    }
}

fn key_arg(ctx: &mut Context, expr: &dyn Expression) -> Result<String, ExpressionError> {
    Ok(expr.resolve(ctx)?.try_bytes_utf8_lossy()?.into_owned())
}

macro_rules! secret_function {
    ($name:ident, $id:literal, $usage:literal, $params:expr, $ret:expr) => {
        #[derive(Clone, Copy, Debug)]
        pub struct $name;

        impl Function for $name {
            fn identifier(&self) -> &'static str {
                $id
            }
            fn usage(&self) -> &'static str {
                $usage
            }
            fn category(&self) -> &'static str {
                Category::System.as_ref()
            }
            fn return_kind(&self) -> u16 {
                $ret
            }
            fn parameters(&self) -> &'static [Parameter] {
                $params
            }
            fn examples(&self) -> &'static [Example] {
                &[]
            }
            fn compile(
                &self,
                _state: &state::TypeState,
                _ctx: &mut FunctionCompileContext,
                arguments: ArgumentList,
            ) -> Compiled {
                Ok(SecretFn { op: $id, key: arguments.required("key"), secret: arguments.optional("secret") }.as_expr())
            }
        }
    };
}

const KEY: Parameter = Parameter::required("key", kind::BYTES, "The name of the secret.");
const SET_SECRET_PARAMS: &[Parameter] = &[KEY, Parameter::required("secret", kind::BYTES, "The value of the secret.")];
secret_function!(
    GetSecret,
    "get_secret",
    "Returns the value of the event's secret `key`, or null.",
    &[KEY],
    kind::BYTES | kind::NULL
);
secret_function!(
    SetSecret,
    "set_secret",
    "Sets the event's secret `key` to `secret`. Secrets travel with the event but are never encoded.",
    SET_SECRET_PARAMS,
    kind::NULL
);
secret_function!(RemoveSecret, "remove_secret", "Removes the event's secret `key`.", &[KEY], kind::NULL);

#[derive(Debug, Clone)]
struct SecretFn {
    op: &'static str,
    key: Box<dyn Expression>,
    secret: Option<Box<dyn Expression>>,
}

impl FunctionExpression for SecretFn {
    fn resolve(&self, ctx: &mut Context) -> Resolved {
        let key = key_arg(ctx, self.key.as_ref())?;
        match self.op {
            "get_secret" => Ok(ctx.target().get_secret(&key).map_or(Value::Null, Value::from)),
            "set_secret" => {
                let secret = match &self.secret {
                    Some(expr) => key_arg(ctx, expr.as_ref())?,
                    None => return Err("set_secret needs a secret".into()),
                };
                ctx.target_mut().insert_secret(&key, &secret);
                Ok(Value::Null)
            }
            _ => {
                ctx.target_mut().remove_secret(&key);
                Ok(Value::Null)
            }
        }
    }

    fn type_def(&self, _: &state::TypeState) -> TypeDef {
        match self.op {
            "get_secret" => TypeDef::bytes().add_null().infallible(),
            _ => TypeDef::null().infallible(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_core::event::EventMetadata;

    #[test]
    fn secrets_round_trip_and_stay_out_of_the_body() {
        let compiled = compile(r#"set_secret("api_key", "k-123"); .seen = get_secret("api_key")"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut event =
            LogEvent::from_value(Value::Object(Default::default()), EventMetadata::new("s", chrono::Utc::now()));
        let mut runtime = Runtime::default();
        run(&mut runtime, &compiled.program, &TimeZone::default(), &mut event).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(event.secret("api_key"), Some("k-123"));
        assert_eq!(event.get("seen"), Some(&Value::from("k-123")));
        assert!(event.get("api_key").is_none());
    }

    #[test]
    fn compile_errors_use_vrl_diagnostics() {
        let err = compile(".x = parse_json(.message)").err().unwrap_or_default();
        assert!(err.contains("error[E103]"), "{err}");
    }
}
