//! `log_to_metric`: metric events made from log fields (Vector's fields).
//!
//! Each entry of `metrics` reads one `field` of each log:
//! - `counter`: 1 per log, or the field's value with `increment_by_value`; `kind`
//!   `incremental` (default) or `absolute`;
//! - `gauge`: the field's value (absolute);
//! - `histogram` / `summary`: one sample of the field's value (a distribution);
//! - `set`: the field's value as a member of a set.
//!
//! `name` defaults to the field; `namespace` and each of `tags` are templates (a tag that
//! cannot be rendered is left out). A log yields one metric per entry whose field it has;
//! every metric carries the log's acknowledgement, so the log's source hears about it only
//! when all its metrics are delivered. A log that yields none is discarded, counted as
//! `no_metric_fields`; one whose fields could not be read as numbers is counted as
//! `metric_conversion_failed` (and fails, so its sender learns of it).

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_core::component::{
    BuildError, ConfigIssue, DataType, FunctionTransform, GlobalOptions, OutputSpec, TransformConfig, TransformContext,
    TransformOutputs,
};
use sluice_core::event::EventMetadata;
use sluice_core::metric_event::{Metric, MetricKind, MetricValue, Statistic};
use sluice_core::{Chunk, LogEvent};
use vrl::value::Value;

use crate::sinks::template::{Template, lookup};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogToMetricConfig {
    /// Required: the metrics to make.
    pub metrics: Vec<MetricConfig>,
    /// Vector's conversion of logs shaped as metrics; not supported.
    #[serde(default)]
    pub all_metrics: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// `counter`, `gauge`, `histogram`, `set` or `summary`.
    #[serde(rename = "type")]
    pub metric_type: MetricType,
    /// Required: the log field read.
    pub field: String,
    /// Default: `field`.
    pub name: Option<String>,
    /// A template.
    pub namespace: Option<String>,
    /// Counters: add the field's value instead of 1. Default false.
    #[serde(default)]
    pub increment_by_value: bool,
    /// Counters: `incremental` (default) or `absolute`.
    pub kind: Option<CounterKind>,
    /// Tag name → template.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Set,
    Summary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterKind {
    Incremental,
    Absolute,
}

/// One entry of `metrics`, its templates parsed.
struct Rule {
    config: MetricConfig,
    name: String,
    namespace: Option<Template>,
    tags: Vec<(String, Template)>,
}

impl LogToMetricConfig {
    fn rules(&self) -> Result<Vec<Rule>, ConfigIssue> {
        let mut rules = Vec::new();
        for (i, config) in self.metrics.iter().enumerate() {
            let at = |field: &str| format!("metrics[{i}].{field}");
            if config.field.is_empty() {
                return Err(ConfigIssue::new(at("field"), "required: the log field to read"));
            }
            if config.increment_by_value && config.metric_type != MetricType::Counter {
                return Err(ConfigIssue::new(at("increment_by_value"), "only counters take `increment_by_value`"));
            }
            let namespace = config
                .namespace
                .as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(|m| ConfigIssue::new(at("namespace"), m))?;
            let mut tags = Vec::new();
            for (name, text) in &config.tags {
                tags.push((
                    name.clone(),
                    Template::parse(text).map_err(|m| ConfigIssue::new(at(&format!("tags.{name}")), m))?,
                ));
            }
            let name = config.name.clone().unwrap_or_else(|| config.field.clone());
            rules.push(Rule { config: config.clone(), name, namespace, tags });
        }
        Ok(rules)
    }
}

impl TransformConfig for LogToMetricConfig {
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec { name: None, data_type: DataType::METRIC }]
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = self.rules().err().into_iter().collect();
        if self.metrics.is_empty() {
            issues.push(ConfigIssue::new("metrics", "required: at least one metric to make"));
        }
        if self.all_metrics {
            issues.push(ConfigIssue::new("all_metrics", "not supported: list the metrics to make in `metrics`"));
        }
        issues
    }

    fn build(&self, _cx: &TransformContext) -> Result<Box<dyn FunctionTransform>, BuildError> {
        let rules = self.rules().map_err(|i| BuildError(format!("{}: {}", i.path, i.message)))?;
        Ok(Box::new(LogToMetric { rules }))
    }
}

struct LogToMetric {
    rules: Vec<Rule>,
}

/// A field's value as a number (numbers, and strings holding one).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(f.into_inner()),
        other => other.to_str_lossy()?.trim().parse().ok().filter(|f: &f64| f.is_finite()),
    }
}

impl Rule {
    /// The metric of `event`: `Ok(None)` when it lacks the field.
    fn metric(&self, event: &LogEvent) -> Result<Option<Metric>, ()> {
        let Some(field) = lookup(event.value(), &self.config.field).filter(|v| !matches!(v, Value::Null)) else {
            return Ok(None);
        };
        let (kind, value) = match self.config.metric_type {
            MetricType::Counter => {
                let kind = match self.config.kind {
                    Some(CounterKind::Absolute) => MetricKind::Absolute,
                    Some(CounterKind::Incremental) | None => MetricKind::Incremental,
                };
                let value = if self.config.increment_by_value { number(field).ok_or(())? } else { 1.0 };
                (kind, MetricValue::Counter(value))
            }
            MetricType::Gauge => (MetricKind::Absolute, MetricValue::Gauge(number(field).ok_or(())?)),
            MetricType::Histogram | MetricType::Summary => {
                let statistic = if self.config.metric_type == MetricType::Summary {
                    Statistic::Summary
                } else {
                    Statistic::Histogram
                };
                let samples = vec![(number(field).ok_or(())?, 1)];
                (MetricKind::Incremental, MetricValue::Distribution { samples, statistic })
            }
            MetricType::Set => (MetricKind::Incremental, MetricValue::Set(vec![field.to_string_lossy().into_owned()])),
        };
        let tags = self
            .tags
            .iter()
            .filter_map(|(name, template)| Some((name.clone(), template.render(event).ok()?)))
            .collect();
        let namespace = self.namespace.as_ref().and_then(|t| t.render(event).ok()).filter(|n| !n.is_empty());
        let timestamp = match event.get(sluice_core::event::fields::timestamp()) {
            Some(Value::Timestamp(ts)) => *ts,
            _ => event.ingest_time(),
        };
        Ok(Some(Metric { name: self.name.clone(), namespace, tags, kind, value, timestamp: Some(timestamp) }))
    }
}

impl FunctionTransform for LogToMetric {
    fn transform(&mut self, chunk: Chunk, out: &mut TransformOutputs) {
        for mut event in chunk {
            let mut metrics = Vec::new();
            let mut failed = false;
            for rule in &self.rules {
                match rule.metric(&event) {
                    Ok(Some(metric)) => metrics.push(metric),
                    Ok(None) => {}
                    Err(()) => failed = true,
                }
            }
            let Some(last) = metrics.pop() else {
                if failed {
                    out.discard(event, "metric_conversion_failed", false);
                } else {
                    out.discard(event, "no_metric_fields", true);
                }
                continue;
            };
            let finalizer = event.take_finalizer();
            let metadata = || EventMetadata::new(event.source_id(), event.ingest_time());
            for metric in metrics {
                out.default.push(LogEvent::from_value(metric.to_value(), metadata()).with_finalizer(finalizer.clone()));
            }
            out.default.push(LogEvent::from_value(last.to_value(), metadata()).with_finalizer(finalizer));
        }
    }
}
