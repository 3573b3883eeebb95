//! `azure_blob`: batches of events as block blobs in an Azure Storage container, on the shared
//! sink driver and the object path (`sinks/object.rs`), like `aws_s3`.
//!
//! - One blob per batch and per rendered `blob_prefix`, written with Put Blob. An event is
//!   delivered only once Azure has answered 201 for the blob that holds it.
//! - Authentication: the account key of `connection_string` (Shared Key, HMAC-SHA256 over
//!   the request as Azure specifies it), or the connection string's SAS token.
//! - Errors, from Azure's error code: 5xx, `ServerBusy`, `OperationTimedOut`, 408 and 429 are
//!   retriable; `RequestBodyTooLarge` splits the batch; every other 4xx
//!   (`ContainerNotFound`, `AuthenticationFailed`, `AuthorizationFailure`...) is about the
//!   destination and dead-letters the batch in one step.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use hmac::Mac;
use serde::Deserialize;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_net::http::HttpClient;
use sluice_net::{ProxyConfig, TlsConfig};

use super::driver::{
    self, BatchConfig, CallResult, DriverSettings, EncodedBatch, PartitionKey, RequestConfig, Service,
};
use super::http_api;
use super::object::{ObjectCompression, ObjectNaming, compress, upload_result};
use crate::codecs::{Encoder, EncodingConfig, SinkFraming};

/// Vector's `azure_blob` defaults: 10 MiB batches, sent after 300 s at the latest.
const DEFAULT_BATCH_BYTES: usize = 10 * 1024 * 1024;
const DEFAULT_BATCH_TIMEOUT_SECS: f64 = 300.0;
/// The storage service version requests are made for.
const API_VERSION: &str = "2021-12-02";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureBlobConfig {
    /// Required: the container's name.
    pub container_name: String,
    /// `DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…;EndpointSuffix=…`, or with
    /// `BlobEndpoint=` and `SharedAccessSignature=`. Required (Azure AD is not supported yet).
    pub connection_string: Option<String>,
    /// Accepted for compatibility: authenticating with Azure AD needs `connection_string`
    /// until it is supported.
    pub storage_account: Option<String>,
    /// The blob endpoint, overriding the connection string's.
    pub endpoint: Option<String>,
    /// Blob name prefix, a template. Default `blob/%F/`.
    #[serde(default = "default_prefix")]
    pub blob_prefix: String,
    /// strftime format of the time in blob names. Default `%s`.
    #[serde(default = "default_time_format")]
    pub blob_time_format: String,
    /// Append a UUID to blob names. Default true.
    #[serde(default = "crate::default_true")]
    pub blob_append_uuid: bool,
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
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub proxy: ProxyConfig,
}

fn default_prefix() -> String {
    "blob/%F/".into()
}
fn default_time_format() -> String {
    "%s".into()
}

/// What a connection string gives: where the blobs are and how to sign for them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    name: String,
    /// `scheme://host[:port][/path]` of the blob service, without a trailing slash.
    endpoint: String,
    auth: Auth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    SharedKey(Vec<u8>),
    /// A SAS token, without its leading `?`.
    Sas(String),
}

fn parse_connection_string(text: &str) -> Result<Account, String> {
    let mut fields = std::collections::BTreeMap::new();
    for part in text.split(';').filter(|p| !p.trim().is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| format!("`{part}` is not `Key=Value`"))?;
        fields.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let name = fields.get("accountname").cloned().unwrap_or_default();
    let endpoint = match fields.get("blobendpoint") {
        Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
        None if !name.is_empty() => {
            let protocol = fields.get("defaultendpointsprotocol").map_or("https", String::as_str);
            let suffix = fields.get("endpointsuffix").map_or("core.windows.net", String::as_str);
            format!("{protocol}://{name}.blob.{suffix}")
        }
        None => return Err("needs `AccountName` or `BlobEndpoint`".into()),
    };
    let auth = match (fields.get("accountkey"), fields.get("sharedaccesssignature")) {
        (Some(key), _) => {
            if name.is_empty() {
                return Err("`AccountKey` needs `AccountName`".into());
            }
            let key = base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_err(|_| "`AccountKey` is not base64".to_owned())?;
            Auth::SharedKey(key)
        }
        (None, Some(sas)) => Auth::Sas(sas.trim_start_matches('?').to_owned()),
        (None, None) => return Err("needs `AccountKey` or `SharedAccessSignature`".into()),
    };
    Ok(Account { name, endpoint, auth })
}

impl AzureBlobConfig {
    fn naming(&self) -> Result<ObjectNaming, ConfigIssue> {
        ObjectNaming::new(&self.blob_prefix, &self.blob_time_format, self.blob_append_uuid, None, self.compression)
            .map_err(|i| ConfigIssue::new("blob_prefix", i.message))
    }

    fn account(&self) -> Result<Account, ConfigIssue> {
        let Some(text) = &self.connection_string else {
            return Err(ConfigIssue::new(
                "connection_string",
                "required: authenticating with Azure AD (`storage_account` alone) is not supported yet",
            ));
        };
        let mut account = parse_connection_string(text).map_err(|m| ConfigIssue::new("connection_string", m))?;
        if let Some(endpoint) = &self.endpoint {
            account.endpoint = endpoint.trim_end_matches('/').to_owned();
        }
        match account.endpoint.parse::<http::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => Ok(account),
            _ => Err(ConfigIssue::new("endpoint", format!("`{}` is not an http(s) URL", account.endpoint))),
        }
    }

    fn delimiter(&self) -> Result<Option<u8>, ConfigIssue> {
        self.framing.as_ref().map_or(Ok(Some(b'\n')), SinkFraming::delimiter)
    }
}

impl SinkConfig for AzureBlobConfig {
    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(DEFAULT_BATCH_BYTES) as u64)
    }

    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(DEFAULT_BATCH_TIMEOUT_SECS))
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        if self.container_name.is_empty() {
            issues.push(ConfigIssue::new("container_name", "must not be empty"));
        }
        issues.extend(self.naming().err());
        issues.extend(self.account().err());
        issues.extend(self.delimiter().err());
        issues.extend(http_api::tls_proxy_issues(self.tls.as_ref(), &self.proxy));
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let issue = |i: ConfigIssue| BuildError(format!("{}: {}", i.path, i.message));
        let http = http_api::client(self.tls.as_ref(), &self.proxy, &cx)?;
        let service = || -> Result<BlobService, BuildError> {
            Ok(BlobService {
                http: http.clone(),
                account: self.account().map_err(issue)?,
                container: self.container_name.clone(),
                naming: self.naming().map_err(issue)?,
                delimiter: self.delimiter().map_err(issue)?,
                compression: self.compression,
                encoder: self.encoding.build(),
            })
        };
        // The healthcheck asks with a service of its own (the driver owns the other).
        let health = Arc::new(service()?);
        Ok(Box::new(AzureBlobSink { config: self.clone(), service: service()?, health, cx }))
    }
}

struct AzureBlobSink {
    config: AzureBlobConfig,
    service: BlobService,
    health: Arc<BlobService>,
    cx: SinkContext,
}

impl Sink for AzureBlobSink {
    /// `HEAD` the container (`restype=container`), signed as the sink's requests are.
    fn healthcheck(&self) -> Option<sluice_core::component::Healthcheck> {
        let health = self.health.clone();
        Some(Box::pin(async move { health.healthcheck().await }))
    }

    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let AzureBlobSink { config, service, cx, .. } = *self;
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

struct BlobService {
    http: HttpClient,
    account: Account,
    container: String,
    naming: ObjectNaming,
    delimiter: Option<u8>,
    compression: ObjectCompression,
    encoder: Encoder,
}

/// Characters escaped in blob names: all but unreserved ones and `/`.
const NAME: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// Azure's error document: `<Error><Code>…</Code><Message>…</Message></Error>`.
#[derive(Debug, Default, Deserialize)]
struct AzureError {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

/// Sorts a non-2xx answer by Azure's error code (in the body, or `x-ms-error-code`).
fn classify(status: http::StatusCode, header_code: Option<&str>, body: &[u8]) -> CallResult {
    let error: AzureError = quick_xml::de::from_str(&String::from_utf8_lossy(body)).unwrap_or_default();
    let code = error.code.as_deref().or(header_code).unwrap_or("");
    let first_line = error.message.as_deref().and_then(|m| m.lines().next()).unwrap_or("");
    let message = format!("Azure answered {status} {code}: {first_line}");
    let status_code = Some(status.as_u16());
    let retriable = matches!(code, "ServerBusy" | "OperationTimedOut" | "InternalError")
        || status.is_server_error()
        || matches!(status.as_u16(), 408 | 429);
    if retriable {
        return CallResult::Retriable { status: status_code, message, retry_after: None, error_type: "http_status" };
    }
    if code == "RequestBodyTooLarge" || status == http::StatusCode::PAYLOAD_TOO_LARGE {
        return CallResult::Permanent { status: status_code, message };
    }
    CallResult::DestinationError { status: status_code, message }
}

impl BlobService {
    /// The URL of a blob (or of the container, for `name = None`), with the SAS token.
    fn url(&self, name: Option<&str>, query: &str) -> String {
        let mut url = format!("{}/{}", self.account.endpoint, self.container);
        if let Some(name) = name {
            url.push('/');
            url.push_str(&percent_encoding::utf8_percent_encode(name, NAME).to_string());
        }
        let sas = match &self.account.auth {
            Auth::Sas(token) => token.as_str(),
            Auth::SharedKey(_) => "",
        };
        let query: Vec<&str> = [query, sas].into_iter().filter(|q| !q.is_empty()).collect();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }

    /// Adds `x-ms-date`, `x-ms-version` and, with an account key, the Shared Key signature.
    fn sign(&self, request: &mut http::Request<sluice_net::http::Body>, content_length: usize) -> Result<(), String> {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let headers = request.headers_mut();
        headers.insert("x-ms-date", http::HeaderValue::try_from(date).map_err(|e| e.to_string())?);
        headers.insert("x-ms-version", http::HeaderValue::from_static(API_VERSION));
        let Auth::SharedKey(key) = &self.account.auth else { return Ok(()) };
        let value =
            shared_key(request.method(), request.uri(), request.headers(), content_length, &self.account.name, key)?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, http::HeaderValue::try_from(value).map_err(|e| e.to_string())?);
        Ok(())
    }

    async fn send(
        &self,
        request: http::request::Builder,
        body: Bytes,
    ) -> Result<sluice_net::http::Response, CallResult> {
        let length = body.len();
        let mut request = request
            .header(http::header::CONTENT_LENGTH, length)
            .body(http_body_util::Full::new(body))
            .map_err(|e| CallResult::Permanent { status: None, message: format!("cannot build the request: {e}") })?;
        self.sign(&mut request, length)
            .map_err(|e| CallResult::Permanent { status: None, message: format!("cannot sign the request: {e}") })?;
        self.http.send(request).await.map_err(|e| CallResult::no_answer(&e, e.error_type()))
    }

    /// Get Container Properties at start: logs whether the container can be reached.
    /// Whether the container can be reached (existence, access, the key).
    async fn healthcheck(&self) -> Result<(), String> {
        let request = http::Request::head(self.url(None, "restype=container"));
        match self.send(request, Bytes::new()).await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!(
                "container `{}`: HTTP {} (missing, or access denied)",
                self.container,
                response.status().as_u16()
            )),
            Err(result) => Err(format!("container `{}`: {result:?}", self.container)),
        }
    }

    async fn put(&self, key: &PartitionKey, batch: &EncodedBatch) -> CallResult {
        let name = self.naming.name(key);
        let body = match compress(batch, self.delimiter, self.compression) {
            Ok(body) => Bytes::from(body),
            Err(err) => return CallResult::Permanent { status: None, message: format!("cannot compress: {err}") },
        };
        let mut request = http::Request::put(self.url(Some(&name), ""))
            .header("x-ms-blob-type", "BlockBlob")
            .header(http::header::CONTENT_TYPE, "text/plain");
        if let Some(encoding) = self.compression.content_encoding() {
            request = request.header(http::header::CONTENT_ENCODING, encoding);
        }
        let sent = self.send(request, body).await;
        upload_result(sent, |status, headers, body| {
            let code = headers.get("x-ms-error-code").and_then(|v| v.to_str().ok());
            classify(status, code, body)
        })
        .await
    }
}

/// The `Authorization` value of a request signed with an account key (Azure's Shared Key: an
/// HMAC-SHA256 of the string to sign below). The request must carry `x-ms-date`.
pub fn shared_key(
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    content_length: usize,
    account: &str,
    key: &[u8],
) -> Result<String, String> {
    let string_to_sign = string_to_sign(method, uri, headers, account, content_length);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    mac.update(string_to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok(format!("SharedKey {account}:{signature}"))
}

/// Azure's Shared Key string to sign: the verb, the standard headers, the `x-ms-` headers,
/// then the account, the path and the query.
fn string_to_sign(
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    account: &str,
    content_length: usize,
) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_owned();
    let length = if content_length == 0 { String::new() } else { content_length.to_string() };
    let mut out = format!(
        "{}\n{}\n{}\n{length}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n",
        method.as_str(),
        header("content-encoding"),
        header("content-language"),
        header("content-md5"),
        header("content-type"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    );
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-ms-"))
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or("").trim().to_owned()))
        .collect();
    ms.sort();
    for (name, value) in ms {
        out.push_str(&format!("{name}:{value}\n"));
    }
    out.push('/');
    out.push_str(account);
    out.push_str(uri.path());
    let mut query: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            (decode(k).to_ascii_lowercase(), decode(v))
        })
        .collect();
    query.sort();
    for (name, value) in query {
        out.push_str(&format!("\n{name}:{value}"));
    }
    out
}

impl Service for BlobService {
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
    fn connection_strings_of_azure_and_azurite() {
        let azure = parse_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=logs;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        );
        assert_eq!(
            azure,
            Ok(Account {
                name: "logs".into(),
                endpoint: "https://logs.blob.core.windows.net".into(),
                auth: Auth::SharedKey(b"key".to_vec())
            })
        );
        let sas = parse_connection_string(
            "BlobEndpoint=https://x.blob.core.windows.net/;SharedAccessSignature=?sv=1&sig=abc",
        );
        assert_eq!(sas.map(|a| a.auth), Ok(Auth::Sas("sv=1&sig=abc".into())));
        assert!(parse_connection_string("AccountName=logs").is_err(), "no key, no SAS");
    }

    #[test]
    fn azure_error_codes_decide_retry_split_or_dead_letter() {
        let answer = |status: u16, code: &str| {
            let body =
                format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m\nRequestId:1</Message></Error>");
            classify(http::StatusCode::from_u16(status).unwrap_or_default(), None, body.as_bytes())
        };
        assert!(matches!(answer(503, "ServerBusy"), CallResult::Retriable { .. }));
        assert!(matches!(answer(500, "OperationTimedOut"), CallResult::Retriable { .. }));
        assert!(matches!(answer(413, "RequestBodyTooLarge"), CallResult::Permanent { .. }));
        assert!(matches!(answer(404, "ContainerNotFound"), CallResult::DestinationError { .. }));
        assert!(matches!(answer(403, "AuthenticationFailed"), CallResult::DestinationError { .. }));
    }
}
