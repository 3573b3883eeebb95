//! A test as written: `name`, `input`/`inputs`, `outputs`, `no_outputs_from`, with Vector's
//! field names, parsed strictly.

use serde::Deserialize;
use serde_json::Value as Json;
use sluice_core::LogEvent;
use sluice_core::event::EventMetadata;
use vrl::value::{ObjectMap, Value};

use super::Vrl;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: String,
    /// One input (Vector's older form); added to `inputs`.
    pub input: Option<Input>,
    #[serde(default)]
    pub inputs: Vec<Input>,
    #[serde(default)]
    pub outputs: Vec<Output>,
    /// Outputs (`id` or `id.port`) that must receive nothing.
    #[serde(default)]
    pub no_outputs_from: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The transform the event goes into.
    pub insert_at: String,
    /// `raw` (default: `value` becomes `message`), `log` (`log_fields`), `vrl` (`source`
    /// builds the event) or `metric` (`metric`, Vector's metric shape).
    #[serde(rename = "type", default = "raw")]
    pub kind: String,
    pub value: Option<String>,
    pub source: Option<String>,
    pub log_fields: Option<serde_json::Map<String, Json>>,
    pub metric: Option<Json>,
}

fn raw() -> String {
    "raw".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub extract_from: OneOrMany,
    pub conditions: Option<Vec<Json>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one.clone()],
            Self::Many(many) => many.clone(),
        }
    }
}

/// Reads a `tests` value: an array of tests.
pub fn parse(value: &Json) -> Result<Vec<Definition>, String> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        format!("tests.{path}: {}", e.into_inner())
    })
}

impl Input {
    /// The event this input puts in. `raw` and `log` events start as Vector's do: a
    /// `message` (empty for `log`) and a `timestamp` of now.
    pub fn event(&self, vrl: &dyn Vrl) -> Result<LogEvent, String> {
        let legacy = |message: &str| {
            let mut map = ObjectMap::new();
            map.insert(sluice_core::event::fields::message().into(), Value::from(message));
            map.insert(sluice_core::event::fields::timestamp().into(), Value::Timestamp(chrono::Utc::now()));
            LogEvent::from_value(Value::Object(map), EventMetadata::new("unit_test", chrono::Utc::now()))
        };
        match self.kind.as_str() {
            "raw" => match &self.value {
                Some(value) => Ok(legacy(value)),
                None => Err("input type 'raw' requires the field 'value'".into()),
            },
            "log" => {
                let fields = self.log_fields.as_ref().ok_or("input type 'log' requires the field 'log_fields'")?;
                let mut event = legacy("");
                for (path, value) in fields {
                    let parsed = vrl::path::parse_value_path(path).map_err(|e| format!("log_fields `{path}`: {e}"))?;
                    event.value_mut().insert(&parsed, Value::from(value.clone()));
                }
                Ok(event)
            }
            "vrl" => match &self.source {
                Some(source) => vrl.event(source),
                None => Err("input type 'vrl' requires the field 'source'".into()),
            },
            "metric" => {
                let metric = self.metric.as_ref().ok_or("input type 'metric' requires the field 'metric'")?;
                let value = Value::from(metric.clone());
                sluice_core::metric_event::Metric::from_value(&value).map_err(|e| {
                    format!("{e}; a metric is written as Vector writes one, e.g. {{ name = \"n\", kind = \"absolute\", counter = {{ value = 1 }} }}")
                })?;
                Ok(LogEvent::from_value(value, EventMetadata::new("unit_test", chrono::Utc::now())))
            }
            other => {
                Err(format!("unrecognized input type '{other}', expected one of: 'raw', 'log', 'vrl' or 'metric'"))
            }
        }
    }
}
