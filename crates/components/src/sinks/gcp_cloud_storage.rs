//! `gcp_cloud_storage`: batches of events as objects in a Cloud Storage bucket, written with
//! the XML API's PUT Object, on the shared sink driver and the object path
//! (`sinks/object.rs`), like `aws_s3` and `azure_blob`.
//!
//! - One object per batch and per rendered `key_prefix`. An event is delivered only once
//!   Cloud Storage has answered 2xx for the object that holds it.
//! - Authentication by `sluice_net::gcp`: a service account's OAuth2 token, or an API key.
//! - Errors: 5xx, 408, 429 and failures to get a token are retriable; 413 splits the batch;
//!   any other 4xx (a missing bucket, denied access) is about the destination and
//!   dead-letters the batch in one step.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use serde::Deserialize;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_net::gcp::GcpAuth;
use sluice_net::http::HttpClient;
use sluice_net::{ProxyConfig, TlsConfig};

use super::driver::{
    self, BatchConfig, CallResult, DriverSettings, EncodedBatch, PartitionKey, RequestConfig, Service,
};
use super::http_api;
use super::object::{ObjectCompression, ObjectNaming, compress, upload_result};
use crate::codecs::{Encoder, EncodingConfig, SinkFraming};

/// Vector's `gcp_cloud_storage` defaults: 10 MB batches, sent after 300 s at the latest.
const DEFAULT_BATCH_BYTES: usize = 10_000_000;
const DEFAULT_BATCH_TIMEOUT_SECS: f64 = 300.0;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsSinkConfig {
    /// Required: the bucket's name.
    pub bucket: String,
    /// Object key prefix, a template. Default `date=%F/`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// strftime format of the time in object names. Default `%s`.
    #[serde(default = "default_time_format")]
    pub filename_time_format: String,
    /// Default true.
    #[serde(default = "crate::default_true")]
    pub filename_append_uuid: bool,
    /// Default: `log`, `log.gz` or `log.zst` by compression.
    pub filename_extension: Option<String>,
    /// `none` (default, as Vector's), `gzip` or `zstd`.
    #[serde(default = "default_compression")]
    pub compression: ObjectCompression,
    /// Required.
    pub encoding: EncodingConfig,
    /// Default: newline-delimited.
    pub framing: Option<SinkFraming>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub request: RequestConfig,
    /// A predefined ACL (`x-goog-acl`): `authenticated-read`, `bucket-owner-full-control`,
    /// `bucket-owner-read`, `private`, `project-private`, `public-read`, `public-read-write`.
    pub acl: Option<String>,
    /// `STANDARD`, `NEARLINE`, `COLDLINE` or `ARCHIVE`. Default: the bucket's.
    pub storage_class: Option<String>,
    /// Custom metadata set on every object (`x-goog-meta-*`).
    pub metadata: Option<BTreeMap<String, String>>,
    /// A service account key file. Default: `GOOGLE_APPLICATION_CREDENTIALS`.
    pub credentials_path: Option<String>,
    /// An API key, instead of a service account.
    pub api_key: Option<String>,
    /// Another endpoint. Default `https://storage.googleapis.com`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub proxy: ProxyConfig,
}

fn default_key_prefix() -> String {
    "date=%F/".into()
}
fn default_time_format() -> String {
    "%s".into()
}
fn default_compression() -> ObjectCompression {
    ObjectCompression::None
}
fn default_endpoint() -> String {
    "https://storage.googleapis.com".into()
}

const ACLS: [&str; 7] = [
    "authenticated-read",
    "bucket-owner-full-control",
    "bucket-owner-read",
    "private",
    "project-private",
    "public-read",
    "public-read-write",
];
const STORAGE_CLASSES: [&str; 4] = ["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"];

impl GcsSinkConfig {
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

    fn endpoint(&self) -> Result<String, ConfigIssue> {
        match self.endpoint.parse::<http::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
                Ok(self.endpoint.trim_end_matches('/').to_owned())
            }
            _ => Err(ConfigIssue::new("endpoint", format!("`{}` is not an http(s) URL", self.endpoint))),
        }
    }

    fn auth(&self) -> Result<GcpAuth, ConfigIssue> {
        let field = if self.api_key.is_some() { "api_key" } else { "credentials_path" };
        GcpAuth::new(self.credentials_path.as_deref(), self.api_key.as_deref())
            .map_err(|e| ConfigIssue::new(field, e.to_string()))
    }

    /// Headers every object gets.
    fn object_headers(&self) -> Result<Vec<(String, http::HeaderValue)>, ConfigIssue> {
        let mut headers = Vec::new();
        let mut add = |name: String, field: &str, value: &str| -> Result<(), ConfigIssue> {
            let value = http::HeaderValue::try_from(value).map_err(|e| ConfigIssue::new(field, e.to_string()))?;
            headers.push((name, value));
            Ok(())
        };
        let content_type = if self.encoding.codec == crate::codecs::encoding::Codec::Json {
            "application/x-ndjson"
        } else {
            "text/plain"
        };
        add("content-type".into(), "encoding", content_type)?;
        if let Some(encoding) = self.compression.content_encoding() {
            add("content-encoding".into(), "compression", encoding)?;
        }
        if let Some(acl) = &self.acl {
            if !ACLS.contains(&acl.as_str()) {
                return Err(ConfigIssue::new("acl", format!("one of {}", ACLS.join(", "))));
            }
            add("x-goog-acl".into(), "acl", acl)?;
        }
        if let Some(class) = &self.storage_class {
            if !STORAGE_CLASSES.contains(&class.as_str()) {
                return Err(ConfigIssue::new("storage_class", format!("one of {}", STORAGE_CLASSES.join(", "))));
            }
            add("x-goog-storage-class".into(), "storage_class", class)?;
        }
        for (key, value) in self.metadata.iter().flatten() {
            add(format!("x-goog-meta-{key}"), &format!("metadata.{key}"), value)?;
        }
        Ok(headers)
    }
}

impl SinkConfig for GcsSinkConfig {
    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(DEFAULT_BATCH_BYTES) as u64)
    }

    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(DEFAULT_BATCH_TIMEOUT_SECS))
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
        // Credentials are this machine's (a key file, GOOGLE_APPLICATION_CREDENTIALS): left out
        // by `validate --no-environment`.
        issues.extend(self.auth().err().map(ConfigIssue::of_environment));
        issues.extend(http_api::tls_proxy_issues(self.tls.as_ref(), &self.proxy));
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let issue = |i: ConfigIssue| BuildError(format!("{}: {}", i.path, i.message));
        let service = GcsService {
            http: http_api::client(self.tls.as_ref(), &self.proxy, &cx)?,
            auth: self.auth().map_err(issue)?,
            endpoint: self.endpoint().map_err(issue)?,
            bucket: self.bucket.clone(),
            naming: self.naming().map_err(issue)?,
            delimiter: self.delimiter().map_err(issue)?,
            compression: self.compression,
            headers: self.object_headers().map_err(issue)?,
            encoder: self.encoding.build(),
        };
        Ok(Box::new(GcsSink { config: self.clone(), service, cx }))
    }
}

struct GcsSink {
    config: GcsSinkConfig,
    service: GcsService,
    cx: SinkContext,
}

impl Sink for GcsSink {
    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let GcsSink { config, service, cx } = *self;
            if let Err(err) = service.auth.authorization(&service.http).await {
                tracing::error!(component_id = &*cx.id, error = %err, "No Google Cloud token; every batch will fail until one is had.");
            }
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

struct GcsService {
    http: HttpClient,
    auth: GcpAuth,
    endpoint: String,
    bucket: String,
    naming: ObjectNaming,
    delimiter: Option<u8>,
    compression: ObjectCompression,
    headers: Vec<(String, http::HeaderValue)>,
    encoder: Encoder,
}

/// Characters escaped in object names: all but unreserved ones and `/`.
const NAME: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// The XML API's error document: `<Error><Code>…</Code><Message>…</Message></Error>`.
#[derive(Debug, Default, Deserialize)]
struct GcsError {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

/// Sorts a non-2xx answer.
fn classify(status: http::StatusCode, body: &[u8]) -> CallResult {
    let error: GcsError = quick_xml::de::from_str(&String::from_utf8_lossy(body)).unwrap_or_default();
    let code = error.code.unwrap_or_default();
    let message = format!("Cloud Storage answered {status} {code}: {}", error.message.unwrap_or_default());
    let status_code = Some(status.as_u16());
    if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
        return CallResult::Retriable { status: status_code, message, retry_after: None, error_type: "http_status" };
    }
    if status == http::StatusCode::PAYLOAD_TOO_LARGE || code == "EntityTooLarge" {
        return CallResult::Permanent { status: status_code, message };
    }
    CallResult::DestinationError { status: status_code, message }
}

impl GcsService {
    async fn put(&self, key: &PartitionKey, batch: &EncodedBatch) -> CallResult {
        let name = self.naming.name(key);
        let body = match compress(batch, self.delimiter, self.compression) {
            Ok(body) => Bytes::from(body),
            Err(err) => return CallResult::Permanent { status: None, message: format!("cannot compress: {err}") },
        };
        let authorization = match self.auth.authorization(&self.http).await {
            Ok(value) => value,
            Err(err) => return CallResult::no_answer(&err, "credentials"),
        };
        let mut url =
            format!("{}/{}/{}", self.endpoint, self.bucket, percent_encoding::utf8_percent_encode(&name, NAME));
        if let Some(key) = self.auth.api_key() {
            url.push_str("?key=");
            url.push_str(&percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC).to_string());
        }
        let mut request = http::Request::put(url).header(http::header::CONTENT_LENGTH, body.len());
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value);
        }
        if let Some(value) = authorization {
            request = request.header(http::header::AUTHORIZATION, value);
        }
        let request = match request.body(Full::new(body)) {
            Ok(request) => request,
            Err(err) => {
                return CallResult::Permanent { status: None, message: format!("cannot build the request: {err}") };
            }
        };
        let sent = self.http.send(request).await.map_err(|e| CallResult::no_answer(&e, e.error_type()));
        upload_result(sent, |status, _, body| classify(status, body)).await
    }
}

impl Service for GcsService {
    fn encode(&self, event: &sluice_core::LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        self.encoder.encode(event, buf).map_err(|e| e.to_string())
    }

    fn partition(&self, event: &sluice_core::LogEvent) -> Result<PartitionKey, String> {
        self.naming.partition(event)
    }

    fn call<'a>(&'a self, key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(self.put(key, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decide_retry_split_or_dead_letter() {
        let status = |s: u16| http::StatusCode::from_u16(s).unwrap_or_default();
        assert!(matches!(classify(status(503), b""), CallResult::Retriable { .. }));
        assert!(matches!(classify(status(429), b""), CallResult::Retriable { .. }));
        assert!(matches!(classify(status(413), b""), CallResult::Permanent { .. }));
        let missing = b"<?xml version='1.0'?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist.</Message></Error>";
        match classify(status(404), missing) {
            CallResult::DestinationError { message, .. } => assert!(message.contains("NoSuchBucket"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify(status(403), b""), CallResult::DestinationError { .. }));
    }
}
