//! Metric events. A metric travels as an event whose body has Vector's JSON shape for
//! metrics, so VRL, the DLQ and disk buffers handle it like any event:
//!
//! ```json
//! {"name": "requests", "namespace": "app", "tags": {"host": "h1"}, "kind": "incremental",
//!  "counter": {"value": 1.0}, "timestamp": "2026-12-02T08:00:00Z"}
//! ```
//!
//! The value is one of `counter {value}`, `gauge {value}`, `set {values: [..]}` or
//! `distribution {samples: [{value, rate}], statistic: "histogram"|"summary"}`. [`Metric`]
//! reads and writes that shape.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use vrl::value::{ObjectMap, Value};

/// Whether a value is a change since the last one or the whole value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Incremental,
    Absolute,
}

/// What a distribution's samples are meant to be shown as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    Histogram,
    Summary,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Counter(f64),
    Gauge(f64),
    Set(Vec<String>),
    /// Samples as (value, rate): `rate` is how many times the value was seen.
    Distribution {
        samples: Vec<(f64, u32)>,
        statistic: Statistic,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub namespace: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub kind: MetricKind,
    pub value: MetricValue,
    pub timestamp: Option<DateTime<Utc>>,
}

fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(f.into_inner()),
        _ => None,
    }
}

fn text(value: &Value) -> String {
    value.to_string_lossy().into_owned()
}

/// A string field (VRL strings are `Bytes` or `String`), if not empty.
fn string(value: Option<&Value>) -> Option<String> {
    value?.to_str_lossy().filter(|s| !s.is_empty()).map(|s| s.into_owned())
}

impl Metric {
    /// The event body of this metric.
    pub fn to_value(&self) -> Value {
        let mut map = ObjectMap::new();
        map.insert("name".into(), Value::from(self.name.as_str()));
        if let Some(namespace) = &self.namespace {
            map.insert("namespace".into(), Value::from(namespace.as_str()));
        }
        if !self.tags.is_empty() {
            let tags: ObjectMap = self.tags.iter().map(|(k, v)| (k.as_str().into(), Value::from(v.as_str()))).collect();
            map.insert("tags".into(), Value::Object(tags));
        }
        let kind = match self.kind {
            MetricKind::Incremental => "incremental",
            MetricKind::Absolute => "absolute",
        };
        map.insert("kind".into(), Value::from(kind));
        let one = |name: &str, value: Value| {
            let mut inner = ObjectMap::new();
            inner.insert(name.into(), value);
            Value::Object(inner)
        };
        let (key, value) = match &self.value {
            MetricValue::Counter(v) => ("counter", one("value", Value::from_f64_or_zero(*v))),
            MetricValue::Gauge(v) => ("gauge", one("value", Value::from_f64_or_zero(*v))),
            MetricValue::Set(values) => {
                ("set", one("values", Value::Array(values.iter().map(|v| Value::from(v.as_str())).collect())))
            }
            MetricValue::Distribution { samples, statistic } => {
                let samples = samples
                    .iter()
                    .map(|(value, rate)| {
                        let mut s = ObjectMap::new();
                        s.insert("value".into(), Value::from_f64_or_zero(*value));
                        s.insert("rate".into(), Value::from(i64::from(*rate)));
                        Value::Object(s)
                    })
                    .collect();
                let mut inner = ObjectMap::new();
                inner.insert("samples".into(), Value::Array(samples));
                let statistic = match statistic {
                    Statistic::Histogram => "histogram",
                    Statistic::Summary => "summary",
                };
                inner.insert("statistic".into(), Value::from(statistic));
                ("distribution", Value::Object(inner))
            }
        };
        map.insert(key.into(), value);
        if let Some(ts) = self.timestamp {
            map.insert("timestamp".into(), Value::Timestamp(ts));
        }
        Value::Object(map)
    }

    /// Whether an event's body has a metric's shape (a name, a kind and one value). How
    /// `is_metric` conditions tell metrics from logs, which travel the same way.
    pub fn is_metric(value: &Value) -> bool {
        let Value::Object(map) = value else { return false };
        map.contains_key("name")
            && map.contains_key("kind")
            && ["counter", "gauge", "set", "distribution", "aggregated_histogram", "aggregated_summary"]
                .iter()
                .any(|key| matches!(map.get(*key), Some(Value::Object(_))))
    }

    /// Reads a metric event's body; the error says what is missing.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let Value::Object(map) = value else { return Err("not a metric: the event is not an object".into()) };
        let name = string(map.get("name")).ok_or("not a metric: no `name`")?;
        let namespace = string(map.get("namespace"));
        let tags = match map.get("tags") {
            Some(Value::Object(tags)) => tags.iter().map(|(k, v)| (k.to_string(), text(v))).collect(),
            _ => BTreeMap::new(),
        };
        let kind = match string(map.get("kind")).as_deref() {
            Some("absolute") => MetricKind::Absolute,
            Some("incremental") => MetricKind::Incremental,
            _ => return Err(format!("metric `{name}`: `kind` must be `incremental` or `absolute`")),
        };
        let inner = |key: &str| match map.get(key) {
            Some(Value::Object(inner)) => Some(inner),
            _ => None,
        };
        let value = if let Some(counter) = inner("counter") {
            MetricValue::Counter(
                number(counter.get("value")).ok_or(format!("metric `{name}`: counter without a number"))?,
            )
        } else if let Some(gauge) = inner("gauge") {
            MetricValue::Gauge(number(gauge.get("value")).ok_or(format!("metric `{name}`: gauge without a number"))?)
        } else if let Some(set) = inner("set") {
            let Some(Value::Array(values)) = set.get("values") else {
                return Err(format!("metric `{name}`: set without `values`"));
            };
            MetricValue::Set(values.iter().map(text).collect())
        } else if let Some(distribution) = inner("distribution") {
            let Some(Value::Array(samples)) = distribution.get("samples") else {
                return Err(format!("metric `{name}`: distribution without `samples`"));
            };
            let samples = samples
                .iter()
                .map(|s| {
                    let Value::Object(s) = s else { return None };
                    let rate = number(s.get("rate")).unwrap_or(1.0).max(0.0) as u32;
                    Some((number(s.get("value"))?, rate))
                })
                .collect::<Option<Vec<_>>>()
                .ok_or(format!("metric `{name}`: a sample without a numeric `value`"))?;
            let statistic = match string(distribution.get("statistic")).as_deref() {
                Some("summary") => Statistic::Summary,
                _ => Statistic::Histogram,
            };
            MetricValue::Distribution { samples, statistic }
        } else {
            return Err(format!("metric `{name}`: no counter, gauge, set or distribution value"));
        };
        let timestamp = match map.get("timestamp") {
            Some(Value::Timestamp(ts)) => Some(*ts),
            other => string(other).and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc)),
        };
        Ok(Self { name, namespace, tags, kind, value, timestamp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_value_survives_the_event_shape() {
        let ts = DateTime::parse_from_rfc3339("2026-12-02T08:00:00Z").map(|t| t.to_utc()).ok();
        for value in [
            MetricValue::Counter(3.0),
            MetricValue::Gauge(-1.5),
            MetricValue::Set(vec!["a".into(), "b".into()]),
            MetricValue::Distribution { samples: vec![(0.25, 1), (4.0, 3)], statistic: Statistic::Summary },
        ] {
            let metric = Metric {
                name: "latency".into(),
                namespace: Some("app".into()),
                tags: [("host".to_owned(), "h1".to_owned())].into(),
                kind: MetricKind::Incremental,
                value,
                timestamp: ts,
            };
            assert_eq!(Metric::from_value(&metric.to_value()), Ok(metric));
        }
        assert!(Metric::from_value(&Value::from("a log line")).is_err());
    }
}
