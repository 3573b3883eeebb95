//! `datadog_metrics`: metric events to Datadog, aggregated per series over each batch.
//!
//! - A batch's metrics are aggregated per series (name, tags, type): incremental counters are
//!   summed; absolute counters become the change since the last value sent for the series
//!   (the first value is the baseline: its events are discarded, counted as
//!   `counter_baseline`); gauges keep their latest value; sets are merged and
//!   sent as a gauge of their size; distributions (histograms, summaries) are merged.
//! - Counters and gauges go to `POST /api/v2/series` (types count and gauge); distributions
//!   go to `POST /api/v1/distribution_points` with every sample, so Datadog computes their
//!   percentiles from the raw values (no sketch is approximated here).
//! - A `host` tag becomes the series' host resource. Keys come from the events (see
//!   [`super`]). An event that is not a metric is dead-lettered (`encode_error`).
//! - Each event's outcome is its request's: when one of the two requests fails, only the
//!   events aggregated into it are retried or dead-lettered.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sluice_core::LogEvent;
use sluice_core::component::{
    BuildError, ConfigIssue, DataType, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput,
};
use sluice_core::metric_event::{Metric, MetricKind, MetricValue};
use sluice_net::http::HttpClient;
use sluice_net::{ProxyConfig, TlsConfig};

use super::DatadogCommon;
use crate::sinks::driver::{
    self, BatchConfig, CallResult, DriverSettings, EncodedBatch, ItemResult, PartitionKey, RequestConfig, Service,
};
use crate::sinks::http_api::{self, Compression};

/// Vector's defaults: 100,000 events, 2 s.
const DEFAULT_BATCH_EVENTS: usize = 100_000;
const DEFAULT_BATCH_BYTES: usize = 3_200_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatadogMetricsConfig {
    pub default_api_key: Option<String>,
    /// Default: `DD_SITE`, else `datadoghq.com`.
    pub site: Option<String>,
    /// A base URL replacing `https://api.<site>`.
    pub endpoint: Option<String>,
    /// Prefix of metrics without a namespace.
    pub default_namespace: Option<String>,
    /// Accepted: series go to the v2 API.
    pub series_api_version: Option<String>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub request: RequestConfig,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub proxy: ProxyConfig,
}

impl DatadogMetricsConfig {
    fn common(&self) -> DatadogCommon {
        DatadogCommon {
            default_api_key: self.default_api_key.clone(),
            site: self.site.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
}

impl SinkConfig for DatadogMetricsConfig {
    fn input_type(&self) -> DataType {
        DataType::METRIC
    }

    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(2.0))
    }

    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(DEFAULT_BATCH_BYTES) as u64)
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.common().check("api");
        issues.extend(http_api::transport_issues(self.tls.as_ref(), &self.proxy, &self.request));
        if self.series_api_version.as_deref().is_some_and(|v| v != "v1" && v != "v2") {
            issues.push(ConfigIssue::new("series_api_version", "`v1` or `v2`"));
        }
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let base = self.common().base_url("api").map_err(|i| BuildError(format!("{}: {}", i.path, i.message)))?;
        let parse =
            |path: &str| format!("{base}{path}").parse::<http::Uri>().map_err(|e| BuildError(format!("endpoint: {e}")));
        let http = http_api::client(self.tls.as_ref(), &self.proxy, &cx)?;
        let headers = http_api::configured_headers(&self.request)
            .map_err(|i| BuildError(format!("{}: {}", i.path, i.message)))?;
        let service = MetricsService {
            http,
            headers,
            series_uri: parse("/api/v2/series")?,
            distribution_uri: parse("/api/v1/distribution_points")?,
            common: self.common(),
            default_namespace: self.default_namespace.clone(),
            previous: Mutex::new(HashMap::new()),
        };
        Ok(Box::new(DatadogMetricsSink { config: self.clone(), service, cx }))
    }
}

struct DatadogMetricsSink {
    config: DatadogMetricsConfig,
    service: MetricsService,
    cx: SinkContext,
}

impl Sink for DatadogMetricsSink {
    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let DatadogMetricsSink { config, service, cx } = *self;
            let defaults = (Some(DEFAULT_BATCH_EVENTS), DEFAULT_BATCH_BYTES, 2.0);
            let settings = DriverSettings::new(&config.batch, &config.request, defaults);
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}

/// One metric as the sink keeps it in a batch.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    name: String,
    tags: Vec<String>,
    host: Option<String>,
    kind: RecordKind,
    /// Seconds since the epoch.
    time: i64,
    value: f64,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    samples: Vec<(f64, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum RecordKind {
    Count,
    AbsoluteCount,
    Gauge,
    Set,
    Distribution,
}

/// A series being aggregated.
#[derive(Debug)]
enum Aggregate {
    Count(f64),
    Gauge(f64),
    Set(BTreeSet<String>),
    Distribution(Vec<f64>),
}

type SeriesKey = (String, Vec<String>, Option<String>, RecordKind);

/// Which request an event's metric went into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Series,
    Distribution,
    /// The first value of an absolute counter: kept as the baseline, sent with the next one.
    Baseline,
}

struct MetricsService {
    http: HttpClient,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    series_uri: http::Uri,
    distribution_uri: http::Uri,
    common: DatadogCommon,
    default_namespace: Option<String>,
    /// The last value of each absolute counter sent, to send changes.
    previous: Mutex<HashMap<SeriesKey, f64>>,
}

impl MetricsService {
    async fn post(&self, uri: &http::Uri, api_key: &str, body: Vec<u8>) -> CallResult {
        let body = match Compression::Zlib.compress(body) {
            Ok(body) => body,
            Err(err) => return CallResult::Permanent { status: None, message: format!("cannot compress: {err}") },
        };
        let Ok(key) = http::HeaderValue::try_from(api_key) else {
            return CallResult::DestinationError { status: None, message: "the API key cannot be a header".into() };
        };
        let request = http_api::with_headers(http::Request::post(uri.clone()), &self.headers);
        let request = http_api::body_headers(request, "application/json", Compression::Zlib).header("DD-API-KEY", key);
        match http_api::exchange(&self.http, request, body).await {
            Ok(answer) => answer.result(),
            Err(result) => result,
        }
    }
}

/// An item's result from its request's.
fn item_result(result: &CallResult) -> ItemResult {
    match result {
        CallResult::Delivered | CallResult::PerItem(_) => ItemResult::Delivered,
        CallResult::Retriable { status, message, .. } => {
            ItemResult::Retriable { status: *status, message: message.clone() }
        }
        CallResult::Permanent { status, message } | CallResult::DestinationError { status, message } => {
            ItemResult::Permanent { status: *status, message: message.clone() }
        }
    }
}

fn tags_json(tags: &[String]) -> serde_json::Value {
    serde_json::Value::from(tags.to_vec())
}

impl Service for MetricsService {
    fn partition(&self, event: &LogEvent) -> Result<PartitionKey, String> {
        Ok(vec![self.common.api_key(event)?])
    }

    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        let metric = Metric::from_value(event.value())?;
        let namespace = metric.namespace.as_ref().or(self.default_namespace.as_ref());
        let name = match namespace {
            Some(ns) => format!("{ns}.{}", metric.name),
            None => metric.name.clone(),
        };
        let host = metric.tags.get("host").cloned();
        let tags = metric.tags.iter().filter(|(k, _)| *k != "host").map(|(k, v)| format!("{k}:{v}")).collect();
        let time = metric.timestamp.map_or_else(|| chrono::Utc::now().timestamp(), |t| t.timestamp());
        let mut record = Record {
            name,
            tags,
            host,
            kind: RecordKind::Count,
            time,
            value: 0.0,
            members: Vec::new(),
            samples: Vec::new(),
        };
        match metric.value {
            MetricValue::Counter(v) if metric.kind == MetricKind::Absolute => {
                (record.kind, record.value) = (RecordKind::AbsoluteCount, v)
            }
            MetricValue::Counter(v) => record.value = v,
            MetricValue::Gauge(v) => (record.kind, record.value) = (RecordKind::Gauge, v),
            MetricValue::Set(members) => (record.kind, record.members) = (RecordKind::Set, members),
            MetricValue::Distribution { samples, .. } => {
                (record.kind, record.samples) = (RecordKind::Distribution, samples)
            }
        }
        serde_json::to_writer(buf, &record).map_err(|e| e.to_string())
    }

    fn call<'a>(&'a self, key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let Some(records) =
                batch.items().map(|i| serde_json::from_slice::<Record>(i).ok()).collect::<Option<Vec<_>>>()
            else {
                return CallResult::Permanent { status: None, message: "unreadable metric record".into() };
            };
            // Aggregate: series key → (aggregate, latest time); each record remembers its series.
            let mut series: BTreeMap<SeriesKey, (Aggregate, i64)> = BTreeMap::new();
            // Absolute counters: series → (latest value, its time, the records).
            let mut absolute: BTreeMap<SeriesKey, (f64, i64, Vec<usize>)> = BTreeMap::new();
            let mut routes = vec![Route::Series; records.len()];
            for (i, r) in records.into_iter().enumerate() {
                let key: SeriesKey = (r.name, r.tags, r.host, r.kind);
                if r.kind == RecordKind::AbsoluteCount {
                    let entry = absolute.entry(key).or_insert((r.value, r.time, Vec::new()));
                    if r.time >= entry.1 {
                        (entry.0, entry.1) = (r.value, r.time);
                    }
                    entry.2.push(i);
                    continue;
                }
                if r.kind == RecordKind::Distribution {
                    routes[i] = Route::Distribution;
                }
                let fresh = || match r.kind {
                    RecordKind::Gauge => Aggregate::Gauge(0.0),
                    RecordKind::Set => Aggregate::Set(BTreeSet::new()),
                    RecordKind::Distribution => Aggregate::Distribution(Vec::new()),
                    RecordKind::Count | RecordKind::AbsoluteCount => Aggregate::Count(0.0),
                };
                let (aggregate, time) = series.entry(key).or_insert_with(|| (fresh(), i64::MIN));
                match aggregate {
                    Aggregate::Count(sum) => *sum += r.value,
                    Aggregate::Gauge(value) if r.time >= *time => *value = r.value,
                    Aggregate::Gauge(_) => {}
                    Aggregate::Set(members) => members.extend(r.members),
                    Aggregate::Distribution(values) => {
                        for (value, rate) in r.samples {
                            values.extend(std::iter::repeat_n(value, rate as usize));
                        }
                    }
                }
                *time = (*time).max(r.time);
            }
            if let Ok(mut previous) = self.previous.lock() {
                for (key, (value, time, items)) in absolute {
                    let delta = match previous.insert(key.clone(), value) {
                        Some(before) if value >= before => value - before,
                        Some(_) => value,
                        None => {
                            // The first value of the series: the baseline of the next change.
                            items.iter().for_each(|&i| routes[i] = Route::Baseline);
                            continue;
                        }
                    };
                    let entry =
                        series.entry((key.0, key.1, key.2, RecordKind::Count)).or_insert((Aggregate::Count(0.0), time));
                    if let Aggregate::Count(sum) = &mut entry.0 {
                        *sum += delta;
                    }
                }
            }
            let mut plain = Vec::new();
            let mut distributions = Vec::new();
            for ((name, tags, host, _), (aggregate, time)) in series {
                let resources = host.as_ref().map(|h| serde_json::json!([{ "name": h, "type": "host" }]));
                let (kind, value) = match aggregate {
                    Aggregate::Count(sum) => (1, sum),
                    Aggregate::Gauge(value) => (3, value),
                    Aggregate::Set(members) => (3, members.len() as f64),
                    Aggregate::Distribution(values) => {
                        distributions.push(serde_json::json!({
                            "metric": name, "points": [[time, values]], "tags": tags_json(&tags),
                            "host": host, "type": "distribution"
                        }));
                        continue;
                    }
                };
                let mut one = serde_json::json!({
                    "metric": name, "type": kind, "points": [{ "timestamp": time, "value": value }], "tags": tags_json(&tags)
                });
                if let Some(resources) = resources {
                    one["resources"] = resources;
                }
                plain.push(one);
            }
            let api_key = key.first().map(String::as_str).unwrap_or_default();
            let series_result = if plain.is_empty() {
                CallResult::Delivered
            } else {
                let body = serde_json::to_vec(&serde_json::json!({ "series": plain })).unwrap_or_default();
                self.post(&self.series_uri, api_key, body).await
            };
            let distribution_result = if distributions.is_empty() {
                CallResult::Delivered
            } else {
                let body = serde_json::to_vec(&serde_json::json!({ "series": distributions })).unwrap_or_default();
                self.post(&self.distribution_uri, api_key, body).await
            };
            let only = |route: Route| routes.iter().all(|r| *r == route);
            match (&series_result, &distribution_result) {
                (CallResult::Delivered, CallResult::Delivered) if !routes.contains(&Route::Baseline) => {
                    CallResult::Delivered
                }
                _ if only(Route::Series) => series_result,
                _ if only(Route::Distribution) => distribution_result,
                _ => CallResult::PerItem(
                    routes
                        .iter()
                        .map(|route| match route {
                            Route::Series => item_result(&series_result),
                            Route::Distribution => item_result(&distribution_result),
                            Route::Baseline => ItemResult::Discarded { reason: "counter_baseline" },
                        })
                        .collect(),
                ),
            }
        })
    }
}
