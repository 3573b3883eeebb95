//! `splunk_hec_logs`: events to Splunk's HTTP Event Collector, on the shared sink driver.
//!
//! - `endpoint_target = "event"` (default) sends HEC event objects (`time`, `host`, `index`,
//!   `source`, `sourcetype`, `event`, `fields`) to `/services/collector/event`; `"raw"` sends
//!   the encoded lines to `/services/collector/raw`, with the metadata in the query.
//! - The token is the event's `splunk_hec_token` secret, else `default_token`; batches are
//!   partitioned by token (and, for `raw`, by metadata).
//! - Indexer acknowledgements (`acknowledgements.indexer_acknowledgements_enabled`, default
//!   true): an accepted request's `ackId` is polled on the sink's channel every
//!   `query_interval` seconds, at most `retry_limit` times. Its events count as delivered
//!   only once Splunk says they are indexed; an id never confirmed makes the request
//!   retriable, and after the retry budget its events are dead-lettered. A HEC token without
//!   indexer acknowledgement answers without an `ackId`: delivered on the 200.
//! - Answers: 401/403 (token) and channel errors dead-letter the batch whole; 429 and 5xx
//!   are retried; other 4xx (invalid data, incorrect index, too large) split the batch.

mod acks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_core::json::{write_str, write_value};
use sluice_net::http::HttpClient;
use sluice_net::{ProxyConfig, TlsConfig};
use vrl::value::Value;

use super::driver::{
    self, BatchConfig, CallResult, DriverSettings, EncodedBatch, PartitionKey, RequestConfig, Service,
};
use super::http_api::{self, Compression};
use super::template::{Template, lookup};
use crate::codecs::encoding::Codec;
use crate::codecs::{Encoder, EncodingConfig};
use acks::{AckPoller, AckQuery};

/// The event secret holding a per-event HEC token (Vector's name).
const TOKEN_SECRET: &str = "splunk_hec_token";
/// Vector's defaults: 1 MB, 1 s.
const DEFAULT_BATCH_BYTES: usize = 1_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkHecLogsConfig {
    /// Required: the HEC base URL, e.g. `https://splunk:8088`.
    pub endpoint: String,
    /// Required: the token for events without a `splunk_hec_token` secret.
    pub default_token: String,
    /// `event` (default) or `raw`.
    #[serde(default)]
    pub endpoint_target: EndpointTarget,
    /// Required: `json` or `text` (the `event` of each HEC event, or each raw line).
    pub encoding: EncodingConfig,
    /// The index (a template). Default: the token's.
    pub index: Option<String>,
    /// The sourcetype (a template).
    pub sourcetype: Option<String>,
    /// The source (a template).
    pub source: Option<String>,
    /// The field holding the host. Default `host`.
    #[serde(default = "default_host_key")]
    pub host_key: String,
    /// Fields sent as indexed fields (`fields`).
    #[serde(default)]
    pub indexed_fields: Vec<String>,
    /// The field holding the event time. Default `timestamp`; it is left out of `event`.
    #[serde(default = "default_timestamp_key")]
    pub timestamp_key: String,
    /// Let Splunk take the time from the event (event target only). Default false.
    #[serde(default)]
    pub auto_extract_timestamp: bool,
    /// `none` (default) or `gzip`.
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub acknowledgements: IndexerAcks,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub request: RequestConfig,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub proxy: ProxyConfig,
}

fn default_host_key() -> String {
    sluice_core::event::fields::host().to_owned()
}

fn default_timestamp_key() -> String {
    sluice_core::event::fields::timestamp().to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointTarget {
    #[default]
    Event,
    Raw,
}

/// The sink's own `acknowledgements` keys (`enabled` is the runtime's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexerAcks {
    /// Wait for Splunk to say events are indexed. Default true.
    #[serde(default = "yes")]
    pub indexer_acknowledgements_enabled: bool,
    /// Seconds between queries. Default 10.
    #[serde(default = "default_query_interval")]
    pub query_interval: f64,
    /// Queries for one id before its request is retried. Default 30.
    #[serde(default = "default_retry_limit")]
    pub retry_limit: u32,
    /// Accepted; in-flight requests are bounded by `request.concurrency`.
    pub max_pending_acks: Option<u64>,
}

impl Default for IndexerAcks {
    fn default() -> Self {
        Self {
            indexer_acknowledgements_enabled: true,
            query_interval: default_query_interval(),
            retry_limit: default_retry_limit(),
            max_pending_acks: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_query_interval() -> f64 {
    10.0
}
fn default_retry_limit() -> u32 {
    30
}

impl SplunkHecLogsConfig {
    fn templates(&self) -> Result<[Option<Template>; 3], ConfigIssue> {
        let parse = |field: &str, text: &Option<String>| {
            text.as_deref().map(Template::parse).transpose().map_err(|m| ConfigIssue::new(field, m))
        };
        Ok([parse("index", &self.index)?, parse("sourcetype", &self.sourcetype)?, parse("source", &self.source)?])
    }

    /// How long one request may take: the request timeout plus the acknowledgement wait.
    fn ack_wait(&self) -> Option<Duration> {
        let acks = &self.acknowledgements;
        acks.indexer_acknowledgements_enabled
            .then(|| Duration::from_secs_f64(acks.query_interval.max(0.01) * f64::from(acks.retry_limit.max(1))))
    }
}

impl SinkConfig for SplunkHecLogsConfig {
    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(1.0))
    }

    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(DEFAULT_BATCH_BYTES) as u64)
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        issues.extend(http_api::base_url("endpoint", &self.endpoint).err());
        issues.extend(self.templates().err());
        if !matches!(self.encoding.codec, Codec::Json | Codec::Text | Codec::RawMessage) {
            issues.push(ConfigIssue::new("encoding.codec", "splunk_hec_logs takes `json` or `text`"));
        }
        if http::HeaderValue::try_from(format!("Splunk {}", self.default_token)).is_err() {
            issues.push(ConfigIssue::new("default_token", "has characters a header cannot carry"));
        }
        if self.acknowledgements.query_interval <= 0.0 {
            issues.push(ConfigIssue::new("acknowledgements.query_interval", "must be more than 0"));
        }
        issues.extend(http_api::transport_issues(self.tls.as_ref(), &self.proxy, &self.request));
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let issue = |i: ConfigIssue| BuildError(format!("{}: {}", i.path, i.message));
        let base = http_api::base_url("endpoint", &self.endpoint).map_err(issue)?;
        let [index, sourcetype, source] = self.templates().map_err(issue)?;
        let headers = http_api::configured_headers(&self.request).map_err(issue)?;
        let http = http_api::client(self.tls.as_ref(), &self.proxy, &cx)?;
        // `GET /services/collector/health/1.0` with the default token, as Vector's.
        let mut health_headers = headers.clone();
        if let Ok(token) = http::HeaderValue::try_from(format!("Splunk {}", self.default_token)) {
            health_headers.push((http::header::AUTHORIZATION, token));
        }
        let health = http_api::HealthTarget {
            http: http.clone(),
            uri: format!("{base}/services/collector/health/1.0"),
            headers: health_headers,
        };
        let service = HecService {
            http,
            base,
            target: self.endpoint_target,
            encoder: self.encoding.build(),
            codec: self.encoding.codec,
            index,
            sourcetype,
            source,
            host_key: self.host_key.clone(),
            timestamp_key: self.timestamp_key.clone(),
            indexed_fields: self.indexed_fields.clone(),
            auto_extract_timestamp: self.auto_extract_timestamp,
            default_token: self.default_token.clone(),
            headers,
            compression: self.compression,
            channel: uuid::Uuid::new_v4().to_string(),
            ack_wait: self.ack_wait(),
            query_interval: Duration::from_secs_f64(self.acknowledgements.query_interval.max(0.01)),
            pollers: Mutex::new(HashMap::new()),
        };
        Ok(Box::new(HecSink { config: self.clone(), service, cx, health }))
    }
}

struct HecSink {
    config: SplunkHecLogsConfig,
    service: HecService,
    cx: SinkContext,
    health: http_api::HealthTarget,
}

impl Sink for HecSink {
    fn healthcheck(&self) -> Option<sluice_core::component::Healthcheck> {
        Some(self.health.check())
    }

    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let HecSink { config, service, cx, .. } = *self;
            let mut settings = DriverSettings::new(&config.batch, &config.request, (None, DEFAULT_BATCH_BYTES, 1.0));
            if let Some(wait) = config.ack_wait() {
                settings.request_timeout += wait;
            }
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}

struct HecService {
    http: HttpClient,
    base: String,
    target: EndpointTarget,
    encoder: Encoder,
    codec: Codec,
    index: Option<Template>,
    sourcetype: Option<Template>,
    source: Option<Template>,
    host_key: String,
    timestamp_key: String,
    indexed_fields: Vec<String>,
    auto_extract_timestamp: bool,
    default_token: String,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    compression: Compression,
    /// This sink's channel (`X-Splunk-Request-Channel`), which its ack ids belong to.
    channel: String,
    ack_wait: Option<Duration>,
    query_interval: Duration,
    /// One poller per token.
    pollers: Mutex<HashMap<String, Arc<AckPoller>>>,
}

/// The answer to an accepted request.
#[derive(Deserialize)]
struct HecAnswer {
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
}

/// HEC's error `code` of an answer, if it has one.
fn hec_code(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(body).ok()?.get("code")?.as_u64()
}

impl HecService {
    fn render(template: &Option<Template>, event: &LogEvent, field: &str) -> Result<Option<String>, String> {
        template.as_ref().map(|t| t.render(event).map_err(|e| format!("{field}: {e}"))).transpose()
    }

    fn time(&self, event: &LogEvent) -> Option<f64> {
        match lookup(event.value(), &self.timestamp_key) {
            Some(Value::Timestamp(ts)) => Some(ts.timestamp_millis() as f64 / 1000.0),
            _ => None,
        }
    }

    fn poller(&self, token: &str, header: &http::HeaderValue) -> Option<Arc<AckPoller>> {
        let mut pollers = self.pollers.lock().ok()?;
        let uri = format!("{}/services/collector/ack?channel={}", self.base, self.channel).parse().ok()?;
        Some(
            pollers
                .entry(token.to_owned())
                .or_insert_with(|| {
                    AckPoller::start(AckQuery {
                        http: self.http.clone(),
                        uri,
                        channel: self.channel.clone(),
                        token: header.clone(),
                        interval: self.query_interval,
                    })
                })
                .clone(),
        )
    }
}

impl Service for HecService {
    fn partition(&self, event: &LogEvent) -> Result<PartitionKey, String> {
        let token = event.secret(TOKEN_SECRET).unwrap_or(&self.default_token).to_owned();
        if self.target == EndpointTarget::Event {
            return Ok(vec![token]);
        }
        let host = lookup(event.value(), &self.host_key).map(|v| v.to_string_lossy().into_owned());
        Ok(vec![
            token,
            Self::render(&self.index, event, "index")?.unwrap_or_default(),
            Self::render(&self.sourcetype, event, "sourcetype")?.unwrap_or_default(),
            Self::render(&self.source, event, "source")?.unwrap_or_default(),
            host.unwrap_or_default(),
        ])
    }

    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        let skip = [self.timestamp_key.as_str()];
        if self.target == EndpointTarget::Raw {
            self.encoder.encode_without(event, &skip, buf).map_err(|e| e.to_string())?;
            buf.push(b'\n');
            return Ok(());
        }
        buf.push(b'{');
        if let Some(time) = self.time(event).filter(|_| !self.auto_extract_timestamp) {
            buf.extend_from_slice(b"\"time\":");
            buf.extend_from_slice(ryu::Buffer::new().format(time).as_bytes());
            buf.push(b',');
        }
        if let Some(host) = lookup(event.value(), &self.host_key) {
            buf.extend_from_slice(b"\"host\":");
            write_str(buf, &host.to_string_lossy());
            buf.push(b',');
        }
        for (name, template) in [("index", &self.index), ("sourcetype", &self.sourcetype), ("source", &self.source)] {
            if let Some(value) = Self::render(template, event, name)? {
                buf.push(b'"');
                buf.extend_from_slice(name.as_bytes());
                buf.extend_from_slice(b"\":");
                write_str(buf, &value);
                buf.push(b',');
            }
        }
        let present: Vec<(&str, &Value)> =
            self.indexed_fields.iter().filter_map(|f| Some((f.as_str(), lookup(event.value(), f)?))).collect();
        if !present.is_empty() {
            buf.extend_from_slice(b"\"fields\":{");
            for (i, (name, value)) in present.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_str(buf, name);
                buf.push(b':');
                write_value(buf, value);
            }
            buf.extend_from_slice(b"},");
        }
        buf.extend_from_slice(b"\"event\":");
        if self.codec == Codec::Json {
            self.encoder.encode_without(event, &skip, buf).map_err(|e| e.to_string())?;
        } else {
            let mut line = Vec::new();
            self.encoder.encode(event, &mut line).map_err(|e| e.to_string())?;
            write_str(buf, &String::from_utf8_lossy(&line));
        }
        buf.push(b'}');
        Ok(())
    }

    fn call<'a>(&'a self, key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let token = key.first().map(String::as_str).unwrap_or_default();
            let Ok(auth) = http::HeaderValue::try_from(format!("Splunk {token}")) else {
                let message = "the HEC token has characters a header cannot carry".to_owned();
                return CallResult::DestinationError { status: None, message };
            };
            let mut uri = match self.target {
                EndpointTarget::Event => format!("{}/services/collector/event", self.base),
                EndpointTarget::Raw => format!("{}/services/collector/raw?channel={}", self.base, self.channel),
            };
            if self.target == EndpointTarget::Raw {
                const SET: &percent_encoding::AsciiSet =
                    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');
                for (name, value) in ["index", "sourcetype", "source", "host"].iter().zip(key.iter().skip(1)) {
                    if !value.is_empty() {
                        uri.push_str(&format!("&{name}={}", percent_encoding::utf8_percent_encode(value, SET)));
                    }
                }
            } else if self.auto_extract_timestamp {
                uri.push_str("?auto_extract_timestamp=true");
            }
            let Ok(uri) = uri.parse::<http::Uri>() else {
                return CallResult::DestinationError { status: None, message: format!("invalid HEC URL `{uri}`") };
            };
            let body = batch.as_bytes().to_vec();
            let body = match self.compression.compress(body) {
                Ok(body) => body,
                Err(err) => return CallResult::Permanent { status: None, message: format!("cannot compress: {err}") },
            };
            let content_type = if self.target == EndpointTarget::Raw { "text/plain" } else { "application/json" };
            let request = http_api::with_headers(http::Request::post(uri), &self.headers);
            let request = http_api::body_headers(request, content_type, self.compression)
                .header(http::header::AUTHORIZATION, auth.clone())
                .header("X-Splunk-Request-Channel", self.channel.as_str());
            let answer = match http_api::exchange(&self.http, request, body).await {
                Ok(answer) => answer,
                Err(result) => return result,
            };
            if !answer.status.is_success() {
                // Codes 10 and 11: the data channel is missing or invalid; 1-4: the token.
                return match hec_code(&answer.body) {
                    Some(1..=4 | 10 | 11) => {
                        CallResult::DestinationError { status: Some(answer.status.as_u16()), message: answer.message() }
                    }
                    _ => answer.result(),
                };
            }
            let ack_id = serde_json::from_slice::<HecAnswer>(&answer.body).ok().and_then(|a| a.ack_id);
            let (Some(wait), Some(id)) = (self.ack_wait, ack_id) else { return CallResult::Delivered };
            let Some(poller) = self.poller(token, &auth) else {
                return CallResult::no_answer(&"cannot start the acknowledgement poller", "indexer_ack");
            };
            if poller.wait(id, wait).await {
                CallResult::Delivered
            } else {
                let message = format!("Splunk did not confirm ack id {id} as indexed within {wait:?}");
                CallResult::Retriable { status: None, message, retry_after: None, error_type: "indexer_ack_timeout" }
            }
        })
    }
}
