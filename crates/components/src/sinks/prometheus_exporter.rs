//! `prometheus_exporter`: metric events served over Prometheus's pull protocol at
//! `http://<address>/metrics`. It accepts metric events only (the graph check rejects logs).
//!
//! Each series (full name and tags) keeps its latest value: an `absolute` event sets it, an
//! `incremental` counter adds to it. A series not updated for `flush_period_secs` is dropped
//! from the output. An event is delivered once it is in the table. Metric types other than
//! counters and gauges, and events that are not metrics, go to the sink's dead-letter queue
//! (`encode_error`) with the reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::component::{BuildError, DataType, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_core::dead_letter::{DeadLetterReason, Failure};
use sluice_core::metric::write_sample;
use tokio::time::Instant;
use vrl::value::Value;

use super::Pending;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusExporterConfig {
    /// Default `0.0.0.0:9598`.
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// Namespace for metrics that have none.
    pub default_namespace: Option<String>,
    /// Accepted (histograms are not supported yet).
    pub buckets: Option<Vec<f64>>,
    /// Accepted (summaries are not supported yet).
    pub quantiles: Option<Vec<f64>>,
    #[serde(default)]
    pub distributions_as_summaries: bool,
    /// Seconds a series stays without an update. Default 60.
    pub flush_period_secs: Option<u64>,
    /// Leave timestamps out of the output. Default false.
    #[serde(default)]
    pub suppress_timestamp: bool,
}

fn default_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9598))
}

impl SinkConfig for PrometheusExporterConfig {
    fn input_type(&self) -> DataType {
        DataType::METRIC
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let listener = std::net::TcpListener::bind(self.address)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| BuildError(format!("cannot listen on {}: {e}", self.address)))?;
        Ok(Box::new(Exporter { config: self.clone(), listener, cx }))
    }
}

struct Exporter {
    config: PrometheusExporterConfig,
    listener: std::net::TcpListener,
    cx: SinkContext,
}

/// One series: (full name, sorted tags).
type SeriesKey = (String, Vec<(String, String)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug)]
struct Series {
    kind: Kind,
    value: f64,
    timestamp_ms: Option<i64>,
    updated: Instant,
}

#[derive(Debug, Default)]
struct Table {
    series: BTreeMap<SeriesKey, Series>,
}

/// A metric event, read.
struct Metric {
    key: SeriesKey,
    kind: Kind,
    incremental: bool,
    value: f64,
    timestamp_ms: Option<i64>,
}

fn read_metric(event: &LogEvent, default_namespace: Option<&str>) -> Result<Metric, String> {
    let Value::Object(fields) = event.value() else {
        return Err("not a metric event (not an object)".into());
    };
    let text = |key: &str| fields.get(key).and_then(Value::to_str_lossy).map(|s| s.into_owned());
    let name = text("name").ok_or("a metric event needs a `name`")?;
    let namespace = text("namespace").filter(|n| !n.is_empty()).or_else(|| default_namespace.map(str::to_owned));
    let full = match namespace {
        Some(ns) => format!("{ns}_{name}"),
        None => name,
    };
    if !full
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    {
        return Err(format!("`{full}` is not a valid Prometheus metric name"));
    }
    let mut tags: Vec<(String, String)> = match fields.get("tags") {
        Some(Value::Object(tags)) => tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str_lossy().map(|s| s.into_owned()).unwrap_or_else(|| v.to_string())))
            .collect(),
        _ => Vec::new(),
    };
    tags.sort();
    let incremental = text("kind").as_deref() == Some("incremental");
    let number = |v: Option<&Value>| match v {
        Some(Value::Object(o)) => match o.get("value") {
            Some(Value::Float(f)) => Some(f.into_inner()),
            Some(Value::Integer(i)) => Some(*i as f64),
            _ => None,
        },
        _ => None,
    };
    let (kind, value) = if let Some(v) = number(fields.get("counter")) {
        (Kind::Counter, v)
    } else if let Some(v) = number(fields.get("gauge")) {
        (Kind::Gauge, v)
    } else {
        let other = ["histogram", "aggregated_histogram", "summary", "aggregated_summary", "distribution", "set"]
            .into_iter()
            .find(|k| fields.contains_key(*k));
        return Err(match other {
            Some(k) => format!("`{k}` metrics are not supported yet (counters and gauges are)"),
            None => "a metric event needs `counter.value` or `gauge.value`".into(),
        });
    };
    let timestamp_ms = match fields.get("timestamp") {
        Some(Value::Timestamp(t)) => Some(t.timestamp_millis()),
        _ => None,
    };
    Ok(Metric { key: (full, tags), kind, incremental, value, timestamp_ms })
}

impl Table {
    fn apply(&mut self, m: Metric, now: Instant) {
        let entry =
            self.series.entry(m.key).or_insert(Series { kind: m.kind, value: 0.0, timestamp_ms: None, updated: now });
        if entry.kind != m.kind {
            *entry = Series { kind: m.kind, value: 0.0, timestamp_ms: None, updated: now };
        }
        entry.value = if m.incremental && m.kind == Kind::Counter { entry.value + m.value } else { m.value };
        entry.timestamp_ms = m.timestamp_ms;
        entry.updated = now;
    }

    fn render(&mut self, expire: Duration, timestamps: bool, now: Instant) -> String {
        self.series.retain(|_, s| now.duration_since(s.updated) <= expire);
        let mut out = String::new();
        let mut current: Option<&str> = None;
        for ((name, tags), series) in &self.series {
            if current != Some(name.as_str()) {
                current = Some(name.as_str());
                let kind = match series.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                };
                out.push_str(&format!("# HELP {name} {name}\n# TYPE {name} {kind}\n"));
            }
            let timestamp = if timestamps { series.timestamp_ms } else { None };
            write_sample(&mut out, name, tags.iter().map(|(k, v)| (k.as_str(), v.as_str())), series.value, timestamp);
        }
        out
    }
}

impl Sink for Exporter {
    fn run(self: Box<Self>, mut input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let Self { config, listener, cx } = *self;
            let table = Arc::new(Mutex::new(Table::default()));
            let expire = Duration::from_secs(config.flush_period_secs.unwrap_or(60));
            let timestamps = !config.suppress_timestamp;
            let served = table.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let text =
                        served.lock().map(|mut t| t.render(expire, timestamps, Instant::now())).unwrap_or_default();
                    async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| {
                tracing::error!(component_id = &*cx.id, error = %e, "Cannot register the listener.");
            })?;
            let server = tokio::spawn(async move { axum::serve(listener, app).await });
            let default_namespace = config.default_namespace.as_deref();
            while let Some(chunk) = input.next().await {
                let mut pending = Pending::default();
                let mut rejected = Vec::new();
                let now = Instant::now();
                if let Ok(mut table) = table.lock() {
                    for mut event in chunk {
                        match read_metric(&event, default_namespace) {
                            Ok(metric) => {
                                table.apply(metric, now);
                                pending.add(&mut event);
                            }
                            Err(error) => rejected.push((event, error)),
                        }
                    }
                }
                pending.settle(&cx.ledger, sluice_core::ack::Outcome::Delivered);
                for (event, error) in rejected {
                    let failure = Failure::now(DeadLetterReason::EncodeError, error, None);
                    cx.dead_letter.submit(vec![event], failure).await;
                }
            }
            server.abort();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::event::EventMetadata;

    fn metric(json: serde_json::Value) -> LogEvent {
        let value: Value = serde_json::from_value(json).unwrap_or(Value::Null);
        LogEvent::from_value(value, EventMetadata::new("m", chrono::Utc::now()))
    }

    #[test]
    fn counters_and_gauges_render_in_the_text_format() {
        let mut table = Table::default();
        let now = Instant::now();
        let events = [
            serde_json::json!({"name":"sent_total","namespace":"vector","tags":{"component_id":"out"},"kind":"absolute","counter":{"value":5.0}}),
            serde_json::json!({"name":"sent_total","namespace":"vector","tags":{"component_id":"out"},"kind":"absolute","counter":{"value":7.0}}),
            serde_json::json!({"name":"hits","tags":{"path":"/a\"b"},"kind":"incremental","counter":{"value":2}}),
            serde_json::json!({"name":"hits","tags":{"path":"/a\"b"},"kind":"incremental","counter":{"value":3}}),
            serde_json::json!({"name":"in_flight","kind":"absolute","gauge":{"value":1.5}}),
        ];
        for e in events {
            let m = read_metric(&metric(e), Some("app")).unwrap_or_else(|e| panic!("{e}"));
            table.apply(m, now);
        }
        let text = table.render(Duration::from_secs(60), false, now);
        assert!(
            text.contains("# TYPE vector_sent_total counter\nvector_sent_total{component_id=\"out\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("app_hits{path=\"/a\\\"b\"} 5\n"), "incremental counters add: {text}");
        assert!(text.contains("# TYPE app_in_flight gauge\napp_in_flight 1.5\n"), "{text}");
        let later = now + Duration::from_secs(61);
        assert_eq!(table.render(Duration::from_secs(60), false, later), "", "series expire");
    }

    #[test]
    fn what_is_not_a_counter_or_gauge_is_refused_with_a_reason() {
        let err = |json| read_metric(&metric(json), None).err().unwrap_or_default();
        assert!(err(serde_json::json!({"name":"h","kind":"absolute","histogram":{}})).contains("not supported"));
        assert!(err(serde_json::json!({"message":"a log"})).contains("needs a `name`"));
        assert!(err(serde_json::json!({"name":"bad name","gauge":{"value":1}})).contains("not a valid"));
    }
}
