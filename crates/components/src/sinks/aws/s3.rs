//! `aws_s3`: batches of events as objects in an S3 bucket (AWS, or any S3-compatible store
//! through `endpoint`), on the shared sink driver and the object path (`sinks/object.rs`).
//!
//! - One object per batch and per rendered `key_prefix`. An event is delivered only once S3
//!   has answered 2xx for the object that holds it. Objects over 16 MiB (compressed) are
//!   multipart uploads (`s3/multipart.rs`).
//! - Requests are built here, signed by the AWS layer (`sluice_net::aws`), and sent on the
//!   shared HTTP client (TLS, `tls` block).
//! - Errors, from S3's XML error code: 5xx, `SlowDown`, throttling, `RequestTimeout`, an
//!   expired token, connection resets and responses cut short are retriable;
//!   `EntityTooLarge` is permanent for the events (the batch is split); every other 4xx
//!   (`NoSuchBucket`, `AccessDenied`, `InvalidAccessKeyId`, ...) is about the destination
//!   and dead-letters the batch in one step.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_net::aws::{AwsAuth, AwsClient};
use sluice_net::http::HttpClient;
use sluice_net::{ProxyConfig, TlsConfig};

use crate::codecs::{Encoder, EncodingConfig, SinkFraming};
use crate::sinks::driver::{
    self, BatchConfig, CallResult, DriverSettings, EncodedBatch, PartitionKey, RequestConfig, RetryStrategy, Service,
};
use crate::sinks::http_api;
use crate::sinks::object::{ObjectCompression, ObjectNaming, compress, upload_result};

mod multipart;

/// Vector's `aws_s3` defaults: 10 MB batches, sent after 300 s at the latest.
const DEFAULT_BATCH_BYTES: usize = 10_000_000;
const DEFAULT_BATCH_TIMEOUT_SECS: f64 = 300.0;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SinkConfig {
    /// Required: the bucket's name.
    pub bucket: String,
    /// The bucket's region. Default: `AWS_REGION`, then the profile's; `us-east-1` with an
    /// `endpoint`.
    pub region: Option<String>,
    /// Another S3 endpoint (`http://127.0.0.1:9000`). Default `https://s3.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
    /// Object key prefix, a template (`{{ field }}`, strftime). Default `date=%F/`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// strftime format of the time in object names. Default `%s`.
    #[serde(default = "default_time_format")]
    pub filename_time_format: String,
    /// Append a UUID to object names. Default true.
    #[serde(default = "crate::default_true")]
    pub filename_append_uuid: bool,
    /// Default: `log`, `log.gz` or `log.zst` by compression.
    pub filename_extension: Option<String>,
    /// `gzip` (default), `zstd` or `none`.
    #[serde(default)]
    pub compression: ObjectCompression,
    /// Required.
    pub encoding: EncodingConfig,
    /// Default: newline-delimited.
    pub framing: Option<SinkFraming>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub request: RequestConfig,
    /// Which statuses without a known S3 error code are retried. Default `{ type = "default" }`.
    #[serde(default)]
    pub retry_strategy: RetryStrategy,
    #[serde(default)]
    pub auth: AwsAuth,
    pub tls: Option<TlsConfig>,
    /// HTTP proxies. Default: `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Path-style requests (`endpoint/bucket/key`). Default true; false uses virtual hosts.
    #[serde(default = "crate::default_true")]
    pub force_path_style: bool,
    /// `Content-Type` of objects. Default `text/x-log`.
    pub content_type: Option<String>,
    /// `Content-Encoding` of objects. Default: from `compression`.
    pub content_encoding: Option<String>,
    /// Canned ACL (`private`, `bucket-owner-full-control`, ...). Default: the bucket's.
    pub acl: Option<String>,
    pub grant_full_control: Option<String>,
    pub grant_read: Option<String>,
    pub grant_read_acp: Option<String>,
    pub grant_write_acp: Option<String>,
    /// `STANDARD`, `STANDARD_IA`, `GLACIER`... Default: the bucket's (`STANDARD`).
    pub storage_class: Option<String>,
    /// `AES256` or `aws:kms`.
    pub server_side_encryption: Option<String>,
    /// KMS key for `server_side_encryption = "aws:kms"`.
    pub ssekms_key_id: Option<String>,
    /// Tags set on every object.
    pub tags: Option<BTreeMap<String, String>>,
}

fn default_key_prefix() -> String {
    "date=%F/".into()
}
fn default_time_format() -> String {
    "%s".into()
}

const STORAGE_CLASSES: [&str; 9] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "INTELLIGENT_TIERING",
    "STANDARD_IA",
    "EXPRESS_ONEZONE",
    "ONEZONE_IA",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
];
const ACLS: [&str; 8] = [
    "private",
    "public-read",
    "public-read-write",
    "aws-exec-read",
    "authenticated-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
];

impl S3SinkConfig {
    fn naming(&self) -> Result<ObjectNaming, ConfigIssue> {
        ObjectNaming::new(
            &self.key_prefix,
            &self.filename_time_format,
            self.filename_append_uuid,
            self.filename_extension.as_deref(),
            self.compression,
        )
    }

    fn delimiter(&self) -> Result<Option<u8>, ConfigIssue> {
        self.framing.as_ref().map_or(Ok(Some(b'\n')), SinkFraming::delimiter)
    }

    fn endpoint(&self) -> Result<Option<http::Uri>, ConfigIssue> {
        let Some(endpoint) = &self.endpoint else { return Ok(None) };
        let uri: http::Uri =
            endpoint.parse().map_err(|e| ConfigIssue::new("endpoint", format!("not a valid URI: {e}")))?;
        match (uri.scheme_str(), uri.authority()) {
            (Some("http" | "https"), Some(_)) => Ok(Some(uri)),
            _ => Err(ConfigIssue::new("endpoint", "must be `http://host[:port]` or `https://host[:port]`")),
        }
    }

    /// Headers every object gets.
    fn object_headers(&self) -> Result<Vec<(&'static str, http::HeaderValue)>, ConfigIssue> {
        let mut headers = Vec::new();
        let mut add = |name: &'static str, field: &str, value: &str| -> Result<(), ConfigIssue> {
            let value = http::HeaderValue::try_from(value).map_err(|e| ConfigIssue::new(field, e.to_string()))?;
            headers.push((name, value));
            Ok(())
        };
        add("content-type", "content_type", self.content_type.as_deref().unwrap_or("text/x-log"))?;
        if let Some(encoding) = self.content_encoding.as_deref().or(self.compression.content_encoding()) {
            add("content-encoding", "content_encoding", encoding)?;
        }
        if let Some(class) = &self.storage_class {
            if !STORAGE_CLASSES.contains(&class.as_str()) {
                return Err(ConfigIssue::new("storage_class", format!("one of {}", STORAGE_CLASSES.join(", "))));
            }
            add("x-amz-storage-class", "storage_class", class)?;
        }
        if let Some(sse) = &self.server_side_encryption {
            if sse != "AES256" && sse != "aws:kms" {
                return Err(ConfigIssue::new("server_side_encryption", "`AES256` or `aws:kms`"));
            }
            add("x-amz-server-side-encryption", "server_side_encryption", sse)?;
        }
        if let Some(key) = &self.ssekms_key_id {
            if self.server_side_encryption.as_deref() != Some("aws:kms") {
                return Err(ConfigIssue::new("ssekms_key_id", "needs `server_side_encryption = \"aws:kms\"`"));
            }
            add("x-amz-server-side-encryption-aws-kms-key-id", "ssekms_key_id", key)?;
        }
        if let Some(acl) = &self.acl {
            if !ACLS.contains(&acl.as_str()) {
                return Err(ConfigIssue::new("acl", format!("one of {}", ACLS.join(", "))));
            }
            add("x-amz-acl", "acl", acl)?;
        }
        for (name, field, value) in [
            ("x-amz-grant-full-control", "grant_full_control", &self.grant_full_control),
            ("x-amz-grant-read", "grant_read", &self.grant_read),
            ("x-amz-grant-read-acp", "grant_read_acp", &self.grant_read_acp),
            ("x-amz-grant-write-acp", "grant_write_acp", &self.grant_write_acp),
        ] {
            if let Some(value) = value {
                add(name, field, value)?;
            }
        }
        if let Some(tags) = self.tags.as_ref().filter(|t| !t.is_empty()) {
            let encoded: Vec<String> =
                tags.iter().map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v))).collect();
            add("x-amz-tagging", "tags", &encoded.join("&"))?;
        }
        Ok(headers)
    }
}

impl SinkConfig for S3SinkConfig {
    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(DEFAULT_BATCH_TIMEOUT_SECS))
    }

    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(DEFAULT_BATCH_BYTES) as u64)
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        if self.bucket.is_empty() {
            issues.push(ConfigIssue::new("bucket", "must not be empty"));
        }
        issues.extend(self.naming().err());
        issues.extend(self.delimiter().err());
        issues.extend(self.endpoint().err());
        issues.extend(self.object_headers().err());
        issues.extend(self.auth.check("auth"));
        issues.extend(http_api::tls_proxy_issues(self.tls.as_ref(), &self.proxy));
        if self.batch.max_events == Some(0) {
            issues.push(ConfigIssue::new("batch.max_events", "must be at least 1"));
        }
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let issue = |i: ConfigIssue| BuildError(format!("{}: {}", i.path, i.message));
        let naming = self.naming().map_err(issue)?;
        let delimiter = self.delimiter().map_err(issue)?;
        let endpoint = self.endpoint().map_err(issue)?;
        let headers = self.object_headers().map_err(issue)?;
        let http = http_api::client(self.tls.as_ref(), &self.proxy, &cx)?;
        let id = cx.id.clone();
        let parts = Parts { config: self.clone(), naming, delimiter, endpoint, headers, http, id };
        Ok(Box::new(S3Sink { parts: Arc::new(parts), cx }))
    }
}

/// What the sink's service is made of (shared with its healthcheck).
struct Parts {
    config: S3SinkConfig,
    naming: ObjectNaming,
    delimiter: Option<u8>,
    endpoint: Option<http::Uri>,
    headers: Vec<(&'static str, http::HeaderValue)>,
    http: HttpClient,
    id: Arc<str>,
}

struct S3Sink {
    parts: Arc<Parts>,
    cx: SinkContext,
}

impl Parts {
    /// The service that talks to the bucket: the region resolved (the config's, the
    /// environment's, the profile's) and the credentials found.
    async fn service(&self) -> S3Service {
        let Parts { config, naming, delimiter, endpoint, headers, http, id } = self;
        let region =
            match sluice_net::aws::region(config.region.as_deref(), config.auth.profile.as_deref(), endpoint.is_some())
                .await
            {
                Ok(region) => region,
                Err(err) => {
                    // Nothing can be signed: every batch waits out its retries, then the DLQ.
                    tracing::error!(component_id = &**id, error = %err, "Cannot send to S3.");
                    "us-east-1".to_owned()
                }
            };
        let base = match endpoint {
            Some(uri) => uri.to_string().trim_end_matches('/').to_owned(),
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        let client = AwsClient::new(http.clone(), &config.auth, region, "s3").await;
        S3Service {
            client,
            base,
            bucket: config.bucket.clone(),
            path_style: config.force_path_style,
            naming: naming.clone(),
            delimiter: *delimiter,
            compression: config.compression,
            headers: headers.clone(),
            encoder: config.encoding.build(),
            strategy: config.retry_strategy.clone(),
        }
    }
}

impl Sink for S3Sink {
    /// `HEAD` the bucket with the sink's credentials, as Vector's.
    fn healthcheck(&self) -> Option<sluice_core::component::Healthcheck> {
        let parts = self.parts.clone();
        Some(Box::pin(async move { parts.service().await.healthcheck().await }))
    }

    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let S3Sink { parts, cx } = *self;
            let service = parts.service().await;
            let config = &parts.config;
            let settings = DriverSettings::new(
                &config.batch,
                &config.request,
                (None, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_TIMEOUT_SECS),
            )
            .objects(&config.batch);
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}

struct S3Service {
    client: AwsClient,
    /// `scheme://host[:port]` of the endpoint.
    base: String,
    bucket: String,
    path_style: bool,
    naming: ObjectNaming,
    delimiter: Option<u8>,
    compression: ObjectCompression,
    headers: Vec<(&'static str, http::HeaderValue)>,
    encoder: Encoder,
    strategy: RetryStrategy,
}

/// Characters escaped in object keys: all but unreserved ones and `/`.
const KEY: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');
/// Characters escaped in query values (tags).
const QUERY: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn encode_query(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, QUERY).to_string()
}

/// S3's error document: `<Error><Code>…</Code><Message>…</Message></Error>`.
#[derive(Debug, Default, Deserialize)]
struct S3ErrorBody {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

/// Error codes worth another try.
const RETRIABLE_CODES: [&str; 11] = [
    "SlowDown",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "TokenRefreshRequired",
    "OperationAborted",
];

impl S3Service {
    /// The URL of `key` (path style, or virtual-hosted).
    fn url(&self, key: &str) -> String {
        let key = percent_encoding::utf8_percent_encode(key, KEY);
        if self.path_style {
            format!("{}/{}/{key}", self.base, self.bucket)
        } else {
            match self.base.split_once("://") {
                Some((scheme, host)) => format!("{scheme}://{}.{host}/{key}", self.bucket),
                None => format!("{}/{}/{key}", self.base, self.bucket),
            }
        }
    }

    /// HeadBucket: whether the bucket can be reached (credentials, existence, access).
    async fn healthcheck(&self) -> Result<(), String> {
        self.client
            .check_credentials()
            .await
            .map_err(|err| format!("No AWS credentials ({err}); every batch will fail until some are found"))?;
        let url = if self.path_style { format!("{}/{}", self.base, self.bucket) } else { self.url("") };
        let request = http::Request::head(url);
        match self.client.send(request, Bytes::new(), true).await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!(
                "bucket `{}`: HTTP {} (missing, or access denied)",
                self.bucket,
                response.status().as_u16()
            )),
            Err(err) => Err(format!("bucket `{}`: {err}", self.bucket)),
        }
    }

    async fn put(&self, key: &PartitionKey, batch: &EncodedBatch) -> CallResult {
        let object = self.naming.name(key);
        let body = match compress(batch, self.delimiter, self.compression) {
            Ok(body) => Bytes::from(body),
            Err(err) => return CallResult::Permanent { status: None, message: format!("cannot compress: {err}") },
        };
        let url = self.url(&object);
        if body.len() > multipart::MULTIPART_THRESHOLD {
            return multipart::upload(self, &url, body).await;
        }
        let mut request = http::Request::put(url);
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        request = request.header(http::header::CONTENT_LENGTH, body.len());
        let sent = self.client.send(request, body, true).await.map_err(|e| CallResult::no_answer(&e, e.error_type()));
        upload_result(sent, |status, _, body| classify(status, body, &self.strategy)).await
    }
}

/// Sorts a non-2xx answer by S3's error code.
fn classify(status: http::StatusCode, body: &[u8], strategy: &RetryStrategy) -> CallResult {
    let text = String::from_utf8_lossy(body);
    let error: S3ErrorBody = quick_xml::de::from_str(&text).unwrap_or_default();
    let code = error.code.as_deref().unwrap_or("");
    let message = format!(
        "S3 answered {status}{}{}",
        if code.is_empty() { String::new() } else { format!(" {code}") },
        error.message.map(|m| format!(": {m}")).unwrap_or_default()
    );
    let status_code = Some(status.as_u16());
    if RETRIABLE_CODES.contains(&code) || status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
        return CallResult::Retriable { status: status_code, message, retry_after: None, error_type: "http_status" };
    }
    if code == "EntityTooLarge" || status == http::StatusCode::PAYLOAD_TOO_LARGE {
        return CallResult::Permanent { status: status_code, message };
    }
    if code.is_empty() && strategy.retries_status(status.as_u16()) {
        return CallResult::Retriable { status: status_code, message, retry_after: None, error_type: "http_status" };
    }
    CallResult::DestinationError { status: status_code, message }
}

impl Service for S3Service {
    fn encode(&self, event: &sluice_core::LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        self.encoder.encode(event, buf).map_err(|e| e.to_string())
    }

    fn partition(&self, event: &sluice_core::LogEvent) -> Result<PartitionKey, String> {
        self.naming.partition(event)
    }

    fn call<'a>(&'a self, key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(self.put(key, batch))
    }

    fn retries_timeouts(&self) -> bool {
        self.strategy.retries_transport()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str) -> CallResult {
        let body = format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>");
        classify(http::StatusCode::from_u16(status).unwrap_or_default(), body.as_bytes(), &RetryStrategy::default())
    }

    #[test]
    fn s3_error_codes_decide_retry_split_or_dead_letter() {
        assert!(matches!(answer(503, "SlowDown"), CallResult::Retriable { .. }));
        assert!(matches!(answer(400, "RequestTimeout"), CallResult::Retriable { .. }), "a 400 worth retrying");
        assert!(matches!(answer(400, "ExpiredToken"), CallResult::Retriable { .. }));
        assert!(matches!(answer(500, "InternalError"), CallResult::Retriable { .. }));
        assert!(matches!(answer(400, "EntityTooLarge"), CallResult::Permanent { .. }), "split");
        for code in ["NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"] {
            let status = if code == "NoSuchBucket" { 404 } else { 403 };
            match answer(status, code) {
                CallResult::DestinationError { message, .. } => assert!(message.contains(code), "{message}"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }
}
