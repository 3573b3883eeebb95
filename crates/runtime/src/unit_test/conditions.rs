//! The conditions a test output checks: VRL (through the caller's [`Vrl`]), the legacy
//! `check_fields` predicates, and `is_log` / `is_metric` / `is_trace`. Each check says why it
//! failed, in Vector's words where Vector has them.

use std::net::IpAddr;

use serde_json::Value as Json;
use sluice_core::LogEvent;
use sluice_core::metric_event::Metric;
use vrl::value::Value;

use super::{Check, Vrl};

/// One built condition.
pub(super) enum Condition {
    Vrl(Box<dyn Check>),
    Fields(Vec<Predicate>),
    IsLog,
    IsMetric,
    IsTrace,
}

impl Condition {
    /// Reads a condition as Vector writes it: a VRL string, `{type = "vrl", source}`,
    /// `{type = "check_fields", "<field>.<predicate>" = arg, ...}` (also without `type`), or
    /// `{type = "is_log"}` and its kin.
    pub fn build(json: &Json, vrl: &dyn Vrl) -> Result<Self, String> {
        let map = match json {
            Json::String(source) => return vrl.condition(source).map(Self::Vrl),
            Json::Object(map) => map,
            other => return Err(format!("a condition is a VRL string or a table, not {other}")),
        };
        let kind = match map.get("type") {
            None => "check_fields",
            Some(Json::String(kind)) => kind.as_str(),
            Some(other) => return Err(format!("`type` must be a string, not {other}")),
        };
        let only_type = || match map.keys().find(|k| *k != "type") {
            Some(extra) => Err(format!("unknown field `{extra}` in an `{kind}` condition")),
            None => Ok(()),
        };
        match kind {
            "vrl" => {
                if let Some(extra) = map.keys().find(|k| *k != "type" && *k != "source") {
                    return Err(format!("unknown field `{extra}` in a `vrl` condition, expected `source`"));
                }
                match map.get("source") {
                    Some(Json::String(source)) => vrl.condition(source).map(Self::Vrl),
                    _ => Err("a `vrl` condition needs `source` (a VRL program)".into()),
                }
            }
            "check_fields" => {
                let mut predicates = Vec::new();
                let mut errors = Vec::new();
                for (key, arg) in map.iter().filter(|(k, _)| *k != "type") {
                    match Predicate::build(key, arg) {
                        Ok(p) => predicates.push(p),
                        Err(e) => errors.push(e),
                    }
                }
                if errors.is_empty() { Ok(Self::Fields(predicates)) } else { Err(errors.join("; ")) }
            }
            "is_log" => only_type().map(|()| Self::IsLog),
            "is_metric" => only_type().map(|()| Self::IsMetric),
            "is_trace" => only_type().map(|()| Self::IsTrace),
            "datadog_search" => Err("`datadog_search` conditions are not supported; write the condition in VRL".into()),
            other => Err(format!(
                "unknown condition type `{other}`; expected `vrl`, `check_fields`, `is_log`, `is_metric` or `is_trace`"
            )),
        }
    }

    /// Ok when `event` satisfies the condition; otherwise why not.
    pub fn check(&mut self, event: &LogEvent) -> Result<(), String> {
        match self {
            Self::Vrl(check) => {
                let mut event = event.clone();
                match check.check(&mut event) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("source execution resolved to false".into()),
                    Err(e) => Err(format!("source execution failed: {e}")),
                }
            }
            Self::Fields(predicates) => {
                let failed: Vec<&str> =
                    predicates.iter().filter(|p| !p.check(event)).map(|p| p.described.as_str()).collect();
                if failed.is_empty() { Ok(()) } else { Err(format!("predicates failed: [ {} ]", failed.join(", "))) }
            }
            Self::IsLog if !Metric::is_metric(event.value()) => Ok(()),
            Self::IsLog => Err("event is not a log".into()),
            Self::IsMetric if Metric::is_metric(event.value()) => Ok(()),
            Self::IsMetric => Err("event is not a metric".into()),
            Self::IsTrace => Err("event is not a trace".into()),
        }
    }
}

/// One `check_fields` predicate: `<field>.<predicate> = arg`.
pub(super) struct Predicate {
    field: String,
    test: Test,
    negate: bool,
    /// `message.equals: "x"`, as failures print it.
    described: String,
}

enum Test {
    Equals(Json),
    NotEquals(Vec<String>),
    Contains(Vec<String>),
    StartsWith(Vec<String>),
    EndsWith(Vec<String>),
    Exists(bool),
    Regex(regex::Regex),
    IpCidr(Vec<(IpAddr, u8)>),
    LengthEq(usize),
}

impl Predicate {
    fn build(key: &str, arg: &Json) -> Result<Self, String> {
        let Some((field, name)) = key.rsplit_once('.').filter(|(f, p)| !f.is_empty() && !p.is_empty()) else {
            return Err(format!(
                "predicate not found in check_fields value '{key}', format must be <target>.<predicate>"
            ));
        };
        let (negate, name) = match name.strip_prefix("not_") {
            Some(rest) if rest != "equals" => (true, rest),
            _ => (false, name),
        };
        let strings = |what: &str| -> Result<Vec<String>, String> {
            match arg {
                Json::String(s) => Ok(vec![s.clone()]),
                Json::Array(items) if items.iter().all(Json::is_string) => {
                    Ok(items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
                }
                _ => Err(format!("{what} predicate requires a string or list of string argument")),
            }
        };
        let test = match name {
            "eq" | "equals" => Test::Equals(arg.clone()),
            "neq" | "not_equals" => Test::NotEquals(match arg {
                Json::Array(items) => items.iter().map(text).collect(),
                other => vec![text(other)],
            }),
            "contains" => Test::Contains(strings("contains")?),
            "prefix" | "starts_with" => Test::StartsWith(strings("starts_with")?),
            "ends_with" => Test::EndsWith(strings("ends_with")?),
            "exists" => Test::Exists(arg.as_bool().ok_or("exists predicate requires a boolean argument")?),
            "regex" => {
                let pattern = arg.as_str().ok_or("regex predicate requires a string argument")?;
                Test::Regex(regex::Regex::new(pattern).map_err(|e| format!("Invalid regex \"{pattern}\": {e}"))?)
            }
            "ip_cidr_contains" => {
                Test::IpCidr(strings("ip_cidr_contains")?.iter().map(|c| cidr(c)).collect::<Result<_, _>>()?)
            }
            "length_eq" => Test::LengthEq(
                arg.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or("length_eq predicate requires a non-negative integer argument")?,
            ),
            other => return Err(format!("predicate type '{other}' not recognized")),
        };
        Ok(Self { field: field.to_owned(), test, negate, described: format!("{key}: {arg}") })
    }

    fn check(&self, event: &LogEvent) -> bool {
        let value = lookup(event, &self.field);
        self.test.check(value.as_ref()) != self.negate
    }
}

impl Test {
    fn check(&self, value: Option<&Value>) -> bool {
        match self {
            Self::Exists(expected) => value.is_some() == *expected,
            _ => value.is_some_and(|v| self.check_present(v)),
        }
    }

    fn check_present(&self, value: &Value) -> bool {
        let lossy = || match value {
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            other => other.to_string_lossy().into_owned(),
        };
        match self {
            Self::Equals(arg) => match arg {
                Json::String(s) => lossy() == *s,
                Json::Array(items) => items.iter().any(|i| i.as_str() == Some(lossy().as_str())),
                Json::Bool(b) => matches!(value, Value::Boolean(v) if v == b),
                Json::Number(n) => match value {
                    Value::Integer(i) => n.as_i64() == Some(*i) || n.as_f64() == Some(*i as f64),
                    Value::Float(f) => n.as_f64() == Some(f.into_inner()),
                    _ => false,
                },
                _ => false,
            },
            Self::NotEquals(args) => !args.contains(&lossy()),
            Self::Contains(args) => args.iter().any(|a| lossy().contains(a.as_str())),
            Self::StartsWith(args) => args.iter().any(|a| lossy().starts_with(a.as_str())),
            Self::EndsWith(args) => args.iter().any(|a| lossy().ends_with(a.as_str())),
            Self::Exists(_) => true,
            Self::Regex(re) => re.is_match(&lossy()),
            Self::IpCidr(cidrs) => {
                lossy().parse::<IpAddr>().is_ok_and(|ip| cidrs.iter().any(|(net, bits)| in_cidr(ip, *net, *bits)))
            }
            Self::LengthEq(n) => {
                let len = match value {
                    Value::Bytes(b) => b.len(),
                    Value::Array(a) => a.len(),
                    Value::Object(o) => o.len(),
                    Value::Null => 0,
                    _ => lossy().len(),
                };
                len == *n
            }
        }
    }
}

/// A field of a log, by path (`a.b`, `a[0]`); for a metric, one of its tags, as Vector reads
/// `check_fields` on metrics.
fn lookup(event: &LogEvent, field: &str) -> Option<Value> {
    if Metric::is_metric(event.value()) {
        return match event.get("tags") {
            Some(Value::Object(tags)) => tags.get(field).cloned(),
            _ => None,
        };
    }
    let path = vrl::path::parse_value_path(field).ok()?;
    event.value().get(&path).cloned()
}

fn text(json: &Json) -> String {
    match json {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let invalid = || format!("Invalid IP CIDR: {text}");
    let (addr, bits) = text.split_once('/').ok_or_else(invalid)?;
    let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
    let bits: u8 = bits.parse().map_err(|_| invalid())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return Err(invalid());
    }
    Ok((addr, bits))
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let mask = |width: u32| if bits == 0 { 0 } else { u128::MAX << (width - u32::from(bits)) };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let m = mask(32);
            (u128::from(u32::from(a)) & m) == (u128::from(u32::from(b)) & m)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let m = mask(128);
            (u128::from(a) & m) == (u128::from(b) & m)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: serde_json::Value) -> LogEvent {
        LogEvent::from_value(Value::from(json), sluice_core::event::EventMetadata::new("t", chrono::Utc::now()))
    }

    fn fields(json: serde_json::Value) -> Condition {
        let Json::Object(map) = json else { panic!("object") };
        let mut predicates = Vec::new();
        for (k, v) in &map {
            predicates.push(Predicate::build(k, v).unwrap_or_else(|e| panic!("{e}")));
        }
        Condition::Fields(predicates)
    }

    #[test]
    fn check_fields_predicates_read_as_vector_reads_them() {
        let e =
            event(serde_json::json!({"message": "test filter 2", "n": 3, "ip": "10.1.2.3", "tags": ["a"], "ok": true}));
        let cases = [
            (serde_json::json!({"message.equals": "test filter 2"}), true),
            (serde_json::json!({"message.eq": "test filter 1"}), false),
            (serde_json::json!({"message.contains": ["nope", "filter"]}), true),
            (serde_json::json!({"message.not_contains": "filter"}), false),
            (serde_json::json!({"message.starts_with": "test", "message.ends_with": "2"}), true),
            (serde_json::json!({"n.equals": 3, "ok.equals": true}), true),
            (serde_json::json!({"n.neq": "3"}), false),
            (serde_json::json!({"missing.exists": false, "message.exists": true}), true),
            (serde_json::json!({"message.regex": "^test .* \\d$"}), true),
            (serde_json::json!({"ip.ip_cidr_contains": ["10.0.0.0/8"]}), true),
            (serde_json::json!({"ip.ip_cidr_contains": "192.168.0.0/16"}), false),
            (serde_json::json!({"tags.length_eq": 1}), true),
        ];
        for (json, expected) in cases {
            assert_eq!(fields(json.clone()).check(&e).is_ok(), expected, "{json}");
        }
    }

    #[test]
    fn a_failed_predicate_is_named() {
        let e = event(serde_json::json!({"message": "x"}));
        let err = fields(serde_json::json!({"message.equals": "y"})).check(&e).err();
        assert_eq!(err.as_deref(), Some("predicates failed: [ message.equals: \"y\" ]"));
    }

    #[test]
    fn a_bad_predicate_is_refused() {
        assert!(Predicate::build("message", &Json::Bool(true)).is_err());
        assert!(Predicate::build("message.sounds_like", &Json::Bool(true)).is_err());
        assert!(Predicate::build("message.exists", &Json::from("yes")).is_err());
    }

    #[test]
    fn metrics_are_told_from_logs() {
        let metric = event(
            serde_json::json!({"name": "c", "kind": "absolute", "counter": {"value": 1.0}, "tags": {"message": "m"}}),
        );
        let log = event(serde_json::json!({"message": "m"}));
        assert!(Condition::IsMetric.check(&metric).is_ok());
        assert!(Condition::IsLog.check(&metric).is_err());
        assert!(Condition::IsLog.check(&log).is_ok());
        assert!(fields(serde_json::json!({"message.equals": "m"})).check(&metric).is_ok(), "a metric's tags");
    }
}
