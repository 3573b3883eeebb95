//! What the HTTP-speaking sinks share: the client built from a sink's `tls` and `proxy`
//! blocks and their checks (every such sink); and for the API sinks (elasticsearch,
//! datadog_*, loki, splunk_hec_logs, clickhouse) base URLs, basic auth, `request.headers`,
//! request body compression, one request/answer exchange, and how a whole answer's status is
//! classified.

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use sluice_core::component::ConfigIssue;

use super::driver::CallResult;

/// A base URL (`http://host:port[/path]`), checked: `field` names it in errors.
pub fn base_url(field: &str, text: &str) -> Result<String, ConfigIssue> {
    let uri: http::Uri = text.parse().map_err(|e| ConfigIssue::new(field, format!("not a valid URL: {e}")))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(text.trim_end_matches('/').to_owned()),
        _ => Err(ConfigIssue::new(field, "must be an `http://` or `https://` URL with a host")),
    }
}

/// A sink's HTTP client: its `tls` block, and its `proxy` block over the global one.
pub fn client(
    tls: Option<&sluice_net::TlsConfig>,
    proxy: &sluice_net::ProxyConfig,
    cx: &sluice_core::component::SinkContext,
) -> Result<sluice_net::http::HttpClient, sluice_core::component::BuildError> {
    sluice_net::http::HttpClient::with_proxy(tls, &proxy.over(&cx.globals.proxy))
        .map_err(|e| sluice_core::component::BuildError(format!("tls.{e}")))
}

/// What `validate` checks of a sink's `tls` and `proxy` blocks.
pub fn tls_proxy_issues(tls: Option<&sluice_net::TlsConfig>, proxy: &sluice_net::ProxyConfig) -> Vec<ConfigIssue> {
    let mut issues = tls.map(|tls| tls.check("tls", false)).unwrap_or_default();
    issues.extend(proxy.check("proxy"));
    issues
}

/// What `validate` checks of an API sink's `tls`, `proxy` and `request.headers`.
pub fn transport_issues(
    tls: Option<&sluice_net::TlsConfig>,
    proxy: &sluice_net::ProxyConfig,
    request: &super::driver::RequestConfig,
) -> Vec<ConfigIssue> {
    let mut issues = tls_proxy_issues(tls, proxy);
    issues.extend(configured_headers(request).err());
    issues
}

/// `request.headers`: extra headers of every request; `request.headers.<name>` in errors.
pub fn configured_headers(
    request: &super::driver::RequestConfig,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, ConfigIssue> {
    request
        .headers
        .iter()
        .map(|(name, value)| {
            let bad = |e: String| ConfigIssue::new(format!("request.headers.{name}"), e);
            Ok((
                http::HeaderName::try_from(name.as_str()).map_err(|e| bad(e.to_string()))?,
                http::HeaderValue::try_from(value.as_str()).map_err(|e| bad(e.to_string()))?,
            ))
        })
        .collect()
}

/// Adds `headers` to `request`.
pub fn with_headers(
    mut request: http::request::Builder,
    headers: &[(http::HeaderName, http::HeaderValue)],
) -> http::request::Builder {
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

/// `Authorization: Basic …`.
pub fn basic_auth(user: &str, password: &str) -> Result<http::HeaderValue, String> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    http::HeaderValue::try_from(format!("Basic {token}")).map_err(|e| e.to_string())
}

/// An answer, read whole.
pub struct Answer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// `HTTP <status>: <the start of the body>`.
    pub fn message(&self) -> String {
        format!("HTTP {}: {}", self.status, snippet(&self.body))
    }

    /// The status read as [`status_result`] does.
    pub fn result(&self) -> CallResult {
        status_result(self.status, retry_after(&self.headers), self.message())
    }
}

/// Sends `request` with `body` and reads the whole answer. A request that cannot be built
/// (permanent) or gets no answer (retriable) is the error, ready to return.
pub async fn exchange(
    http: &sluice_net::http::HttpClient,
    request: http::request::Builder,
    body: Bytes,
) -> Result<Answer, CallResult> {
    let request = request
        .body(http_body_util::Full::new(body))
        .map_err(|err| CallResult::Permanent { status: None, message: format!("cannot build request: {err}") })?;
    let response = http.send(request).await.map_err(|err| CallResult::no_answer(&err, err.error_type()))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_body(response).await.unwrap_or_default();
    Ok(Answer { status, headers, body })
}

/// Where an API sink's healthcheck asks, kept from its build.
pub struct HealthTarget {
    pub http: sluice_net::http::HttpClient,
    pub uri: String,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl HealthTarget {
    pub fn check(&self) -> sluice_core::component::Healthcheck {
        get_healthcheck(self.http.clone(), self.uri.clone(), self.headers.clone())
    }
}

/// A healthcheck: GET `uri` with `headers`; healthy when the answer is 2xx.
pub fn get_healthcheck(
    http: sluice_net::http::HttpClient,
    uri: String,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
) -> sluice_core::component::Healthcheck {
    Box::pin(async move {
        let request = with_headers(http::Request::get(uri.as_str()), &headers);
        match exchange(&http, request, Bytes::new()).await {
            Ok(answer) if answer.status.is_success() => Ok(()),
            Ok(answer) => Err(format!("GET {uri}: {}", answer.message())),
            Err(
                CallResult::Retriable { message, .. }
                | CallResult::Permanent { message, .. }
                | CallResult::DestinationError { message, .. },
            ) => Err(format!("GET {uri}: {message}")),
            Err(other) => Err(format!("GET {uri}: {other:?}")),
        }
    })
}

/// Request body compression of the API sinks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zlib,
    Zstd,
}

impl Compression {
    /// The `Content-Encoding` value, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => Some("gzip"),
            Self::Zlib => Some("deflate"),
            Self::Zstd => Some("zstd"),
        }
    }

    /// `body` compressed (as it is with `none`).
    pub fn compress(self, body: Vec<u8>) -> std::io::Result<Bytes> {
        let level = flate2::Compression::default();
        Ok(Bytes::from(match self {
            Self::None => body,
            Self::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), level);
                encoder.write_all(&body)?;
                encoder.finish()?
            }
            Self::Zlib => {
                let mut encoder = flate2::write::ZlibEncoder::new(Vec::with_capacity(body.len() / 4), level);
                encoder.write_all(&body)?;
                encoder.finish()?
            }
            Self::Zstd => zstd::bulk::compress(&body, 3)?,
        }))
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by intakes in practice).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A response body, read whole; a body cut short reads as what arrived.
pub async fn read_body(response: sluice_net::http::Response) -> Result<Bytes, String> {
    response.into_body().collect().await.map(|b| b.to_bytes()).map_err(|e| format!("response cut short: {e}"))
}

/// The start of a body, for messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A non-2xx status of a whole request, the way every API sink reads it unless it knows
/// better: 401, 403 and 404 are about the destination (bad key, no such index or path), so
/// the batch is dead-lettered whole; 408, 429 and 5xx (but 501) are retried; other 4xx (400,
/// 413, 422) can come from the events, so the batch is split.
pub fn status_result(status: http::StatusCode, retry_after: Option<Duration>, message: String) -> CallResult {
    let code = status.as_u16();
    match code {
        200..=299 => CallResult::Delivered,
        401 | 403 | 404 => CallResult::DestinationError { status: Some(code), message },
        408 | 429 => CallResult::Retriable { status: Some(code), message, retry_after, error_type: "http_status" },
        501 => CallResult::Permanent { status: Some(code), message },
        500..=599 => CallResult::Retriable { status: Some(code), message, retry_after, error_type: "http_status" },
        _ => CallResult::Permanent { status: Some(code), message },
    }
}

/// `Content-Type` and `Content-Encoding` for a body compressed with `compression`.
pub fn body_headers(
    mut request: http::request::Builder,
    content_type: &'static str,
    compression: Compression,
) -> http::request::Builder {
    request = request.header(http::header::CONTENT_TYPE, content_type);
    if let Some(encoding) = compression.content_encoding() {
        request = request.header(http::header::CONTENT_ENCODING, encoding);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted_by_what_they_say_about_the_batch() {
        let sort = |code: u16| status_result(http::StatusCode::from_u16(code).unwrap_or_default(), None, String::new());
        assert!(matches!(sort(403), CallResult::DestinationError { .. }));
        assert!(matches!(sort(429), CallResult::Retriable { .. }));
        assert!(matches!(sort(503), CallResult::Retriable { .. }));
        assert!(matches!(sort(400), CallResult::Permanent { .. }));
        assert!(matches!(sort(413), CallResult::Permanent { .. }));
        assert!(matches!(sort(501), CallResult::Permanent { .. }));
        assert_eq!(sort(202), CallResult::Delivered);
    }

    #[test]
    fn base_urls_need_a_scheme_and_host() {
        assert_eq!(base_url("endpoint", "http://127.0.0.1:9200/").ok().as_deref(), Some("http://127.0.0.1:9200"));
        assert!(base_url("endpoint", "127.0.0.1:9200").is_err());
        assert!(base_url("endpoint", "ftp://x").is_err());
    }
}
