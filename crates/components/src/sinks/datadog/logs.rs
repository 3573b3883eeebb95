//! `datadog_logs`: events to Datadog's logs intake (`POST /api/v2/logs`), a JSON array a
//! request, on the shared sink driver.
//!
//! - Batches are partitioned by API key (see [`super`]); the key goes in `DD-API-KEY`.
//! - Datadog's limits: at most 1,000 logs and 5 MB (uncompressed) a request, 1 MB a log. A
//!   log over 1 MB is dead-lettered (`encode_error`) rather than truncated by Datadog.
//! - Each event is written as Datadog reads it: `host` becomes `hostname`, a `timestamp`
//!   becomes milliseconds since the epoch; reserved attributes (`ddsource`, `ddtags`,
//!   `service`, `status`) and every other field are kept as they are.
//! - Answers: 2xx delivered; 401/403 (a bad key) dead-letter the batch whole; 408, 429 and
//!   5xx are retried; 400 and 413 split the batch.

use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_net::http::HttpClient;
use sluice_net::{ProxyConfig, TlsConfig};
use vrl::value::Value;

use super::DatadogCommon;
use crate::codecs::Transformer;
use crate::sinks::driver::{
    self, BatchConfig, CallResult, DriverSettings, EncodedBatch, PartitionKey, RequestConfig, Service,
};
use crate::sinks::http_api::{self, Compression};
use sluice_core::json::{Field, write_object};

/// Datadog's limits for one request and one log.
const MAX_EVENTS: usize = 1_000;
const MAX_PAYLOAD_BYTES: usize = 5_000_000;
const MAX_LOG_BYTES: usize = 1_000_000;
/// Vector's default, under the 5 MB limit with room for the array's commas.
const DEFAULT_BATCH_BYTES: usize = 4_250_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatadogLogsConfig {
    /// The key for events without a `datadog_api_key` secret.
    pub default_api_key: Option<String>,
    /// Default: `DD_SITE`, else `datadoghq.com`.
    pub site: Option<String>,
    /// A base URL replacing `https://http-intake.logs.<site>`.
    pub endpoint: Option<String>,
    /// `zstd` (default), `gzip`, `zlib` or `none`.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Accepted; logs are written in the shape described above.
    #[serde(default)]
    pub conforms_as_agent: bool,
    #[serde(default)]
    pub encoding: Transformer,
    /// At most 1,000 events and 5,000,000 bytes. Default 1,000, 4,250,000 and 5 s.
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub request: RequestConfig,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub proxy: ProxyConfig,
}

fn default_compression() -> Compression {
    Compression::Zstd
}

impl DatadogLogsConfig {
    fn common(&self) -> DatadogCommon {
        DatadogCommon {
            default_api_key: self.default_api_key.clone(),
            site: self.site.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
}

impl SinkConfig for DatadogLogsConfig {
    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(5.0))
    }

    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(DEFAULT_BATCH_BYTES) as u64)
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        issues.extend(self.common().check("http-intake.logs"));
        if self.batch.max_events.is_some_and(|n| n == 0 || n > MAX_EVENTS) {
            issues.push(ConfigIssue::new(
                "batch.max_events",
                "from 1 to 1000 (Datadog takes at most 1,000 logs a request)",
            ));
        }
        if self.batch.max_bytes.is_some_and(|n| n > MAX_PAYLOAD_BYTES - MAX_EVENTS - 2) {
            issues.push(ConfigIssue::new(
                "batch.max_bytes",
                "at most 4998998 (Datadog takes at most 5 MB a request, uncompressed)",
            ));
        }
        issues.extend(http_api::transport_issues(self.tls.as_ref(), &self.proxy, &self.request));
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let base =
            self.common().base_url("http-intake.logs").map_err(|i| BuildError(format!("{}: {}", i.path, i.message)))?;
        let uri: http::Uri = format!("{base}/api/v2/logs").parse().map_err(|e| BuildError(format!("endpoint: {e}")))?;
        let http = http_api::client(self.tls.as_ref(), &self.proxy, &cx)?;
        let headers = http_api::configured_headers(&self.request)
            .map_err(|i| BuildError(format!("{}: {}", i.path, i.message)))?;
        // `GET /api/v1/validate` with the default key, as Vector's (nothing to check without
        // one: keys then come with the events).
        let health = match (&self.common().default_api_key, self.common().base_url("api")) {
            (Some(key), Ok(api)) => http::HeaderValue::try_from(key.as_str()).ok().map(|key| http_api::HealthTarget {
                http: http.clone(),
                uri: format!("{api}/api/v1/validate"),
                headers: vec![(http::HeaderName::from_static("dd-api-key"), key)],
            }),
            _ => None,
        };
        let service = LogsService {
            http,
            uri,
            headers,
            common: self.common(),
            transformer: self.encoding.clone(),
            compression: self.compression,
        };
        Ok(Box::new(DatadogLogsSink { config: self.clone(), service, cx, health }))
    }
}

struct DatadogLogsSink {
    config: DatadogLogsConfig,
    service: LogsService,
    cx: SinkContext,
    health: Option<http_api::HealthTarget>,
}

impl Sink for DatadogLogsSink {
    fn healthcheck(&self) -> Option<sluice_core::component::Healthcheck> {
        self.health.as_ref().map(http_api::HealthTarget::check)
    }

    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let DatadogLogsSink { config, service, cx, .. } = *self;
            let mut batch = config.batch.clone();
            batch.max_events = Some(batch.max_events.unwrap_or(MAX_EVENTS).min(MAX_EVENTS));
            let settings = DriverSettings::new(&batch, &config.request, (Some(MAX_EVENTS), DEFAULT_BATCH_BYTES, 5.0));
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}

struct LogsService {
    http: HttpClient,
    uri: http::Uri,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    common: DatadogCommon,
    transformer: Transformer,
    compression: Compression,
}

impl Service for LogsService {
    fn partition(&self, event: &LogEvent) -> Result<PartitionKey, String> {
        Ok(vec![self.common.api_key(event)?])
    }

    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        let start = buf.len();
        let value = self.transformer.apply(event.value());
        // Datadog's own names: `hostname`, and `timestamp` in milliseconds.
        let (host_key, timestamp_key) = (sluice_core::event::fields::host(), sluice_core::event::fields::timestamp());
        let each = |key: &str, value: &Value| match value {
            _ if key == host_key => Field::Rename("hostname"),
            Value::Timestamp(ts) if key == timestamp_key => {
                Field::Replace("timestamp", Value::from(ts.timestamp_millis()))
            }
            _ => Field::Keep,
        };
        write_object(buf, &value, each, &[]);
        let size = buf.len() - start;
        if size > MAX_LOG_BYTES {
            return Err(format!("the log is {size} bytes encoded; Datadog takes at most 1,000,000 bytes a log"));
        }
        Ok(())
    }

    fn call<'a>(&'a self, key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let mut body = Vec::with_capacity(batch.bytes() + batch.len() + 2);
            body.push(b'[');
            for (i, item) in batch.items().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(item);
            }
            body.push(b']');
            let body = match self.compression.compress(body) {
                Ok(body) => body,
                Err(err) => return CallResult::Permanent { status: None, message: format!("cannot compress: {err}") },
            };
            let api_key = key.first().map(String::as_str).unwrap_or_default();
            let Ok(api_key) = http::HeaderValue::try_from(api_key) else {
                let message = "the API key has characters a header cannot carry".to_owned();
                return CallResult::DestinationError { status: None, message };
            };
            let request = http::Request::post(self.uri.clone()).header("DD-API-KEY", api_key);
            let request = http_api::with_headers(request, &self.headers);
            let request = http_api::body_headers(request, "application/json", self.compression);
            let answer = match http_api::exchange(&self.http, request, body).await {
                Ok(answer) => answer,
                Err(result) => return result,
            };
            answer.result()
        })
    }
}
