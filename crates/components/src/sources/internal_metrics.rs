//! `internal_metrics`: sluice's own counters and gauges as metric events, every
//! `scrape_interval_secs`. The same samples as the `/metrics` endpoint (the ledger), with
//! Vector's names and tags.
//!
//! A metric event is an object shaped like Vector's JSON for metrics:
//! `{"name", "namespace", "tags": {…}, "kind": "absolute", "counter"|"gauge": {"value"}, "timestamp"}`.
//! Does not acknowledge (nobody to tell).

use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;
use sluice_core::component::{
    BuildError, ConfigIssue, DataType, GlobalOptions, SourceConfig, SourceContext, SourceTask,
};
use sluice_core::event::EventMetadata;
use sluice_core::metric::{MetricKind, Sample};
use sluice_core::{Chunk, LogEvent};
use vrl::value::{ObjectMap, Value};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalMetricsConfig {
    /// Seconds between scrapes. Default 1.
    #[serde(default = "default_interval")]
    pub scrape_interval_secs: f64,
    /// Namespace of every metric. Default `vector`, as in Vector, so dashboards built on
    /// `vector_component_received_events_total` keep working; set `""` for none.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub tags: TagsConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsConfig {
    /// Tag that receives the host name. Default: none.
    pub host_key: Option<String>,
    /// Tag that receives sluice's process id. Default: none.
    pub pid_key: Option<String>,
}

fn default_interval() -> f64 {
    1.0
}

fn default_namespace() -> String {
    "vector".to_owned()
}

impl SourceConfig for InternalMetricsConfig {
    fn output_type(&self) -> DataType {
        DataType::METRIC
    }

    fn can_acknowledge(&self) -> bool {
        false
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        if self.scrape_interval_secs > 0.0 && self.scrape_interval_secs.is_finite() {
            Vec::new()
        } else {
            vec![ConfigIssue::new("scrape_interval_secs", "must be a positive number of seconds")]
        }
    }

    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError> {
        let config = self.clone();
        let SourceContext { id, mut out, mut shutdown, globals, pipeline, .. } = cx;
        let mut extra = Vec::new();
        if let Some(key) = &config.tags.host_key {
            extra.push((key.clone(), String::from_utf8_lossy(&globals.hostname).into_owned()));
        }
        if let Some(key) = &config.tags.pid_key {
            extra.push((key.clone(), std::process::id().to_string()));
        }
        Ok(Box::pin(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(config.scrape_interval_secs));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.wait() => break,
                    _ = tick.tick() => {}
                }
                let samples = pipeline.snapshot().samples();
                let chunk = events(&id, &config.namespace, &extra, &samples);
                if out.send(chunk).await.is_err() {
                    break;
                }
            }
            Ok(())
        }))
    }
}

/// One metric event per sample.
fn events(id: &str, namespace: &str, extra: &[(String, String)], samples: &[Sample]) -> Chunk {
    let now = Utc::now();
    let metadata = EventMetadata::new(id, now);
    samples
        .iter()
        .map(|sample| {
            let mut tags = ObjectMap::new();
            for (k, v) in &sample.tags {
                tags.insert((*k).into(), Value::from(v.as_str()));
            }
            for (k, v) in extra {
                tags.insert(k.as_str().into(), Value::from(v.as_str()));
            }
            let mut value = ObjectMap::new();
            value.insert("value".into(), Value::from_f64_or_zero(sample.value));
            let mut metric = ObjectMap::new();
            metric.insert("name".into(), Value::from(sample.name.as_str()));
            if !namespace.is_empty() {
                metric.insert("namespace".into(), Value::from(namespace));
            }
            metric.insert("tags".into(), Value::Object(tags));
            metric.insert("kind".into(), Value::from("absolute"));
            let kind = match sample.name.kind() {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
            };
            metric.insert(kind.into(), Value::Object(value));
            metric.insert("timestamp".into(), Value::Timestamp(now));
            LogEvent::from_value(Value::Object(metric), metadata.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::metric::MetricName;

    #[test]
    fn samples_become_vector_shaped_metric_events() {
        let samples = vec![Sample {
            name: MetricName::ComponentSentEventsTotal,
            tags: vec![("component_id", "out".to_owned())],
            value: 42.0,
        }];
        let chunk = events("metrics", "vector", &[("host".to_owned(), "h1".to_owned())], &samples);
        assert_eq!(chunk.len(), 1);
        let json = serde_json::to_value(chunk[0].value()).unwrap_or_default();
        assert_eq!(json["name"], "component_sent_events_total");
        assert_eq!(json["namespace"], "vector");
        assert_eq!(json["kind"], "absolute");
        assert_eq!(json["counter"]["value"], 42.0);
        assert_eq!(json["tags"]["component_id"], "out");
        assert_eq!(json["tags"]["host"], "h1");
    }
}
