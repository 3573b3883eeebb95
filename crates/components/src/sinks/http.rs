//! `http`: batches of events to an HTTP endpoint.
//!
//! Batching: a batch is sent when it reaches `batch.max_events` or `batch.max_bytes`, or
//! `batch.timeout_secs` after its first event. A 2xx response resolves the batch as delivered.
//! Any other outcome (status, timeout, connection error) resolves it as failed: counted,
//! logged at error, and the sender told. Bounded retries, batch splitting and the dead-letter
//! queue arrive with the shared sink driver.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use sluice_core::ack::Outcome;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};

use super::{Pending, reject};
use crate::codecs::encoding::{Codec, SinkFramingMethod};
use crate::codecs::{EncodingConfig, SinkFraming};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Required: `http://host:port/path`.
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
    pub auth: Option<HttpAuth>,
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

/// `batch` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events per batch. Default: no limit (bytes and time bound it).
    pub max_events: Option<usize>,
    /// Most bytes (before compression) per batch. Default 10000000.
    pub max_bytes: Option<usize>,
    /// Seconds from a batch's first event until it is sent. Default 1.
    pub timeout_secs: Option<f64>,
}

/// `request` block (Vector's fields). Retry fields are accepted; retries arrive with the
/// shared sink driver.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// `adaptive` (default), `none`, or a number. Requests are sent one at a time for now.
    pub concurrency: Option<serde_json::Value>,
    /// Seconds before a request is abandoned. Default 60.
    pub timeout_secs: Option<f64>,
    pub rate_limit_duration_secs: Option<f64>,
    pub rate_limit_num: Option<u64>,
    pub retry_attempts: Option<u64>,
    pub retry_initial_backoff_secs: Option<f64>,
    pub retry_max_duration_secs: Option<f64>,
    pub retry_jitter_mode: Option<JitterMode>,
    pub adaptive_concurrency: Option<AdaptiveConcurrency>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub enum JitterMode {
    Full,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConcurrency {
    pub initial_concurrency: Option<usize>,
    pub max_concurrency_limit: Option<usize>,
    pub decrease_ratio: Option<f64>,
    pub ewma_alpha: Option<f64>,
    pub rtt_deviation_scale: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    Basic { user: String, password: String },
    Bearer { token: String },
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
            Some("http") => Ok(uri),
            Some("https") => Err(ConfigIssue::new("uri", "https is not supported yet; use http or a local TLS proxy")),
            _ => Err(ConfigIssue::new("uri", "must start with http://")),
        }
    }

    fn headers(&self) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, ConfigIssue> {
        let mut headers = Vec::new();
        for (name, value) in &self.request.headers {
            let bad = |m: String| ConfigIssue::new(format!("request.headers.{name}"), m);
            let name = http::HeaderName::try_from(name.as_str()).map_err(|e| bad(e.to_string()))?;
            let value = http::HeaderValue::try_from(value.as_str()).map_err(|e| bad(e.to_string()))?;
            headers.push((name, value));
        }
        if let Some(auth) = &self.auth {
            let value = match auth {
                HttpAuth::Basic { user, password } => {
                    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
                }
                HttpAuth::Bearer { token } => format!("Bearer {token}"),
            };
            let value = http::HeaderValue::try_from(value).map_err(|e| ConfigIssue::new("auth", e.to_string()))?;
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

impl SinkConfig for HttpSinkConfig {
    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        issues.extend(self.framing().err());
        issues.extend(self.parsed_uri().err());
        issues.extend(self.headers().err());
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
        Ok(Box::new(HttpSink { config: self.clone(), uri, method, headers, framing, cx }))
    }
}

struct HttpSink {
    config: HttpSinkConfig,
    uri: http::Uri,
    method: http::Method,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    framing: Framing,
    cx: SinkContext,
}

/// A batch being filled.
#[derive(Default)]
struct Batch {
    body: Vec<u8>,
    pending: Pending,
}

impl HttpSink {
    fn append(&self, batch: &mut Batch, encoded: &[u8]) {
        match self.framing {
            Framing::JsonArray => {
                batch.body.push(if batch.pending.events == 0 { b'[' } else { b',' });
                batch.body.extend_from_slice(encoded);
            }
            Framing::Delimited(delimiter) => {
                batch.body.extend_from_slice(encoded);
                batch.body.extend(delimiter);
            }
        }
    }

    fn payload(&self, events: &[u8]) -> std::io::Result<Bytes> {
        let mut body = Vec::with_capacity(events.len() + 2);
        body.extend_from_slice(self.config.payload_prefix.as_bytes());
        body.extend_from_slice(events);
        if self.framing == Framing::JsonArray {
            body.push(b']');
        }
        body.extend_from_slice(self.config.payload_suffix.as_bytes());
        if self.config.compression == super::file::Compression::Gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&body)?;
            body = gz.finish()?;
        }
        Ok(Bytes::from(body))
    }

    async fn send(&self, client: &Client<HttpConnector, Full<Bytes>>, batch: Batch) {
        let Batch { body, pending } = batch;
        let events = pending.events;
        let payload = match self.payload(&body) {
            Ok(payload) => payload,
            Err(err) => {
                self.cx.ledger.error("encode_error", "processing");
                tracing::error!(component_id = &*self.cx.id, error = %err, events, "Cannot compress the batch; events counted as failed.");
                pending.settle(&self.cx.ledger, Outcome::Failed);
                return;
            }
        };
        let mut request = http::Request::builder().method(self.method.clone()).uri(self.uri.clone());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = match request.body(Full::new(payload)) {
            Ok(request) => request,
            Err(err) => {
                self.cx.ledger.error("request_build", "sending");
                tracing::error!(component_id = &*self.cx.id, error = %err, events, "Cannot build the request; events counted as failed.");
                pending.settle(&self.cx.ledger, Outcome::Failed);
                return;
            }
        };
        let timeout = Duration::from_secs_f64(self.config.request.timeout_secs.unwrap_or(60.0).max(0.001));
        let result = tokio::time::timeout(timeout, async {
            let response = client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Ok::<_, String>((status, body))
        })
        .await;
        match result {
            Ok(Ok((status, _))) if status.is_success() => pending.settle(&self.cx.ledger, Outcome::Delivered),
            Ok(Ok((status, body))) => {
                self.cx.ledger.error("http_status", "sending");
                let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                tracing::error!(
                    component_id = &*self.cx.id,
                    status = status.as_u16(),
                    body = snippet,
                    events,
                    "Request rejected; events counted as failed."
                );
                pending.settle(&self.cx.ledger, Outcome::Failed);
            }
            Ok(Err(err)) => {
                self.cx.ledger.error("connection_failed", "sending");
                tracing::error!(
                    component_id = &*self.cx.id,
                    error = err,
                    events,
                    "Request failed; events counted as failed."
                );
                pending.settle(&self.cx.ledger, Outcome::Failed);
            }
            Err(_) => {
                self.cx.ledger.error("timed_out", "sending");
                tracing::error!(
                    component_id = &*self.cx.id,
                    timeout_secs = timeout.as_secs_f64(),
                    events,
                    "Request timed out; events counted as failed."
                );
                pending.settle(&self.cx.ledger, Outcome::Failed);
            }
        }
    }
}

impl Sink for HttpSink {
    fn run(self: Box<Self>, mut input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let sink = *self;
            let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let encoder = sink.config.encoding.build();
            let max_events = sink.config.batch.max_events.unwrap_or(usize::MAX);
            let max_bytes = sink.config.batch.max_bytes.unwrap_or(10_000_000);
            let timeout = Duration::from_secs_f64(sink.config.batch.timeout_secs.unwrap_or(1.0).max(0.0));
            let mut batch = Batch::default();
            let mut deadline: Option<tokio::time::Instant> = None;
            let mut scratch = Vec::new();
            loop {
                let chunk = tokio::select! {
                    chunk = input.next() => chunk,
                    () = async {
                        match deadline {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => {
                        deadline = None;
                        sink.send(&client, std::mem::take(&mut batch)).await;
                        continue;
                    }
                };
                let Some(chunk) = chunk else { break };
                for mut event in chunk {
                    scratch.clear();
                    if let Err(err) = encoder.encode(&event, &mut scratch) {
                        reject(&sink.cx.ledger, event, "encode_error", &err.to_string());
                        continue;
                    }
                    if batch.pending.events > 0 && batch.body.len() + scratch.len() > max_bytes {
                        deadline = None;
                        sink.send(&client, std::mem::take(&mut batch)).await;
                    }
                    sink.append(&mut batch, &scratch);
                    batch.pending.add(&mut event);
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
                    if batch.pending.events >= max_events || batch.body.len() >= max_bytes {
                        deadline = None;
                        sink.send(&client, std::mem::take(&mut batch)).await;
                    }
                }
            }
            if batch.pending.events > 0 {
                sink.send(&client, batch).await;
            }
            Ok(())
        })
    }
}
