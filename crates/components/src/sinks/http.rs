//! `http`: batches of events to an HTTP endpoint, on the shared sink driver.
//!
//! A 2xx response delivers the batch. Timeouts, connection errors and the statuses that
//! `retry_strategy` names (default: 408, 429, 5xx except 501) are retried within the retry
//! budget, honouring `Retry-After`; other statuses are permanent: the batch is split until the
//! rejected events are alone, and those go to the dead-letter queue with the status.
//!
//! `https://` URIs use the `tls` block (system roots plus `ca_file`); a failed handshake is
//! retriable and counted with `error_type="tls"`, its reason (unknown CA, expired, name
//! mismatch) logged.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_net::http::HttpClient;
use sluice_net::{ProxyConfig, TlsConfig};

use super::driver::{
    self, BatchConfig, CallResult, DriverSettings, EncodedBatch, PartitionKey, RequestConfig, RetryStrategy, Service,
};
use super::http_api;
use super::template::Template;
use crate::codecs::encoding::{Codec, SinkFramingMethod};
use crate::codecs::{Encoder, EncodingConfig, SinkFraming};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Required: `http://` or `https://host:port/path`.
    pub uri: String,
    /// Default `post`.
    #[serde(default)]
    pub method: HttpSinkMethod,
    /// Required.
    pub encoding: EncodingConfig,
    /// Default: a JSON array for `json`, newline-delimited otherwise.
    pub framing: Option<SinkFraming>,
    /// `none` (default) or `gzip`.
    #[serde(default)]
    pub compression: super::file::Compression,
    /// Written before the batch. Default empty.
    #[serde(default)]
    pub payload_prefix: String,
    /// Written after the batch. Default empty.
    #[serde(default)]
    pub payload_suffix: String,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub request: RequestConfig,
    /// Which statuses are retried. Default `{ type = "default" }`.
    #[serde(default)]
    pub retry_strategy: RetryStrategy,
    pub auth: Option<HttpAuth>,
    /// TLS for `https://` URIs. Default: the system's roots, full verification.
    pub tls: Option<TlsConfig>,
    /// HTTP proxies. Default: `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`.
    #[serde(default)]
    pub proxy: ProxyConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpSinkMethod {
    Get,
    Head,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Trace,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    Basic { user: String, password: String },
    Bearer { token: String },
}

impl HttpAuth {
    /// The `Authorization` value.
    pub fn header_value(&self) -> Result<http::HeaderValue, String> {
        match self {
            Self::Basic { user, password } => http_api::basic_auth(user, password),
            Self::Bearer { token } => http::HeaderValue::try_from(format!("Bearer {token}")).map_err(|e| e.to_string()),
        }
    }
}

impl HttpSinkConfig {
    fn framing(&self) -> Result<Framing, ConfigIssue> {
        match &self.framing {
            None if self.encoding.codec == Codec::Json => Ok(Framing::JsonArray),
            None => Ok(Framing::Delimited(Some(b'\n'))),
            Some(f) if f.method.is_none() && self.encoding.codec == Codec::Json => Ok(Framing::JsonArray),
            Some(f) => f.delimiter().map(Framing::Delimited),
        }
    }

    fn parsed_uri(&self) -> Result<http::Uri, ConfigIssue> {
        let uri: http::Uri = self.uri.parse().map_err(|e| ConfigIssue::new("uri", format!("not a valid URI: {e}")))?;
        match uri.scheme_str() {
            Some("http" | "https") => Ok(uri),
            _ => Err(ConfigIssue::new("uri", "must start with http:// or https://")),
        }
    }

    /// Headers whose value is a template (`{{ field }}`, `{{ secret.NAME }}`): rendered per
    /// event, and batches are partitioned by their values.
    fn templated_headers(&self) -> Result<Vec<(http::HeaderName, Template)>, ConfigIssue> {
        let mut out = Vec::new();
        for (name, value) in self.request.headers.iter().filter(|(_, v)| v.contains("{{")) {
            let bad = |m: String| ConfigIssue::new(format!("request.headers.{name}"), m);
            let name = http::HeaderName::try_from(name.as_str()).map_err(|e| bad(e.to_string()))?;
            out.push((name, Template::parse(value).map_err(bad)?));
        }
        Ok(out)
    }

    fn headers(&self) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, ConfigIssue> {
        let mut headers = Vec::new();
        for (name, value) in self.request.headers.iter().filter(|(_, v)| !v.contains("{{")) {
            let bad = |m: String| ConfigIssue::new(format!("request.headers.{name}"), m);
            let name = http::HeaderName::try_from(name.as_str()).map_err(|e| bad(e.to_string()))?;
            let value = http::HeaderValue::try_from(value.as_str()).map_err(|e| bad(e.to_string()))?;
            headers.push((name, value));
        }
        if let Some(auth) = &self.auth {
            let value = auth.header_value().map_err(|e| ConfigIssue::new("auth", e))?;
            headers.push((http::header::AUTHORIZATION, value));
        }
        let content_type = match self.encoding.codec {
            Codec::Json if self.framing()? == Framing::JsonArray => "application/json",
            Codec::Json => "application/x-ndjson",
            _ => "text/plain",
        };
        if !headers.iter().any(|(n, _)| n == http::header::CONTENT_TYPE) {
            headers.push((http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type)));
        }
        if self.compression == super::file::Compression::Gzip {
            headers.push((http::header::CONTENT_ENCODING, http::HeaderValue::from_static("gzip")));
        }
        Ok(headers)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    JsonArray,
    Delimited(Option<u8>),
}

/// Vector's http sink default for `batch.max_bytes`.
const DEFAULT_BATCH_BYTES: usize = 10_000_000;

impl SinkConfig for HttpSinkConfig {
    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(1.0))
    }

    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(DEFAULT_BATCH_BYTES) as u64)
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        issues.extend(self.framing().err());
        issues.extend(self.parsed_uri().err());
        issues.extend(http_api::tls_proxy_issues(self.tls.as_ref(), &self.proxy));
        issues.extend(self.headers().err());
        issues.extend(self.templated_headers().err());
        if self.batch.max_events == Some(0) {
            issues.push(ConfigIssue::new("batch.max_events", "must be at least 1"));
        }
        if let Some(framing) = &self.framing
            && framing.method == Some(SinkFramingMethod::Bytes)
            && self.encoding.codec == Codec::Json
        {
            issues.push(ConfigIssue::new("framing.method", "`bytes` would run JSON documents together"));
        }
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let uri = self.parsed_uri().map_err(|i| BuildError(i.message))?;
        let headers = self.headers().map_err(|i| BuildError(i.message))?;
        let templated = self.templated_headers().map_err(|i| BuildError(i.message))?;
        let framing = self.framing().map_err(|i| BuildError(i.message))?;
        let method = match self.method {
            HttpSinkMethod::Get => http::Method::GET,
            HttpSinkMethod::Head => http::Method::HEAD,
            HttpSinkMethod::Post => http::Method::POST,
            HttpSinkMethod::Put => http::Method::PUT,
            HttpSinkMethod::Patch => http::Method::PATCH,
            HttpSinkMethod::Delete => http::Method::DELETE,
            HttpSinkMethod::Options => http::Method::OPTIONS,
            HttpSinkMethod::Trace => http::Method::TRACE,
        };
        let client = http_api::client(self.tls.as_ref(), &self.proxy, &cx)?;
        Ok(Box::new(HttpSink { config: self.clone(), client, uri, method, headers, templated, framing, cx }))
    }
}

struct HttpSink {
    config: HttpSinkConfig,
    client: HttpClient,
    uri: http::Uri,
    method: http::Method,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    templated: Vec<(http::HeaderName, Template)>,
    framing: Framing,
    cx: SinkContext,
}

impl Sink for HttpSink {
    /// `healthcheck.uri`, with the sink's headers and auth; nothing to check without one (as
    /// Vector's).
    fn healthcheck(&self) -> Option<sluice_core::component::Healthcheck> {
        let uri = self.cx.healthcheck_uri.clone()?;
        let headers = self.headers.iter().filter(|(n, _)| n != http::header::CONTENT_ENCODING).cloned().collect();
        Some(http_api::get_healthcheck(self.client.clone(), uri, headers))
    }

    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let HttpSink { config, client, uri, method, headers, templated, framing, cx } = *self;
            let settings = DriverSettings::new(&config.batch, &config.request, (None, DEFAULT_BATCH_BYTES, 1.0));
            let service = HttpService {
                client,
                encoder: config.encoding.build(),
                uri,
                method,
                headers,
                templated,
                framing,
                compression: config.compression,
                prefix: config.payload_prefix.clone(),
                suffix: config.payload_suffix.clone(),
                strategy: config.retry_strategy.clone(),
            };
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}

struct HttpService {
    client: HttpClient,
    encoder: Encoder,
    uri: http::Uri,
    method: http::Method,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    templated: Vec<(http::HeaderName, Template)>,
    framing: Framing,
    compression: super::file::Compression,
    prefix: String,
    suffix: String,
    strategy: RetryStrategy,
}

impl HttpService {
    fn payload(&self, batch: &EncodedBatch) -> std::io::Result<Bytes> {
        let mut body = Vec::with_capacity(batch.bytes() + batch.len() + self.prefix.len() + self.suffix.len() + 2);
        body.extend_from_slice(self.prefix.as_bytes());
        match self.framing {
            Framing::JsonArray => {
                body.push(b'[');
                for (i, item) in batch.items().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(item);
                }
                body.push(b']');
            }
            Framing::Delimited(delimiter) => {
                for item in batch.items() {
                    body.extend_from_slice(item);
                    body.extend(delimiter);
                }
            }
        }
        body.extend_from_slice(self.suffix.as_bytes());
        if self.compression == super::file::Compression::Gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&body)?;
            body = gz.finish()?;
        }
        Ok(Bytes::from(body))
    }

    fn classify(&self, status: http::StatusCode, retry_after: Option<Duration>, body: &[u8]) -> CallResult {
        if status.is_success() {
            return CallResult::Delivered;
        }
        let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned();
        let message = format!("HTTP {status}: {snippet}");
        let code = status.as_u16();
        if self.strategy.retries_status(code) {
            CallResult::Retriable { status: Some(code), message, retry_after, error_type: "http_status" }
        } else {
            CallResult::Permanent { status: Some(code), message }
        }
    }
}

impl Service for HttpService {
    fn retries_timeouts(&self) -> bool {
        self.strategy.retries_transport()
    }

    fn encode(&self, event: &sluice_core::LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        self.encoder.encode(event, buf).map_err(|e| e.to_string())
    }

    fn partition(&self, event: &sluice_core::LogEvent) -> Result<PartitionKey, String> {
        self.templated
            .iter()
            .map(|(name, template)| template.render(event).map_err(|e| format!("header `{name}`: {e}")))
            .collect()
    }

    fn call<'a>(&'a self, key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let payload = match self.payload(batch) {
                Ok(payload) => payload,
                Err(err) => return CallResult::Permanent { status: None, message: format!("cannot compress: {err}") },
            };
            let mut request = http::Request::builder().method(self.method.clone()).uri(self.uri.clone());
            for (name, value) in &self.headers {
                request = request.header(name, value);
            }
            for ((name, _), value) in self.templated.iter().zip(key) {
                match http::HeaderValue::try_from(value.as_str()) {
                    Ok(value) => request = request.header(name, value),
                    Err(err) => {
                        let message = format!("header `{name}` rendered to an invalid value: {err}");
                        return CallResult::Permanent { status: None, message };
                    }
                }
            }
            let request = match request.body(Full::new(payload)) {
                Ok(request) => request,
                Err(err) => {
                    return CallResult::Permanent { status: None, message: format!("cannot build request: {err}") };
                }
            };
            match self.client.send(request).await {
                Ok(response) => {
                    let status = response.status();
                    let hint = http_api::retry_after(response.headers());
                    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    self.classify(status, hint, &body)
                }
                Err(err) if self.strategy.retries_transport() => CallResult::no_answer(&err, err.error_type()),
                Err(err) => CallResult::Permanent { status: None, message: err.to_string() },
            }
        })
    }
}
