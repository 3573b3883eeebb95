//! `clickhouse`: events inserted into a ClickHouse table over its HTTP interface
//! (`INSERT INTO "db"."table" FORMAT JSONEachRow`), on the shared sink driver.
//!
//! - Each event is one JSON row. `skip_unknown_fields` and `date_time_best_effort` become
//!   the insert's settings (`input_format_skip_unknown_fields`, `date_time_input_format`).
//! - An insert of fewer than `max_insert_block_size` rows (1,048,576; far more than a batch
//!   of 10 MB holds) writes all its rows or none, so a rejected insert can be split and sent
//!   again without duplicates.
//! - Errors are read by ClickHouse's exception code (`X-ClickHouse-Exception-Code`, or
//!   `Code: N` in the body; older servers answer every error with 500):
//!   - rows ClickHouse cannot parse or convert (codes 6, 26, 27, 38, 41, 53, 69, 70, 72, 117,
//!     131, 349...) split the batch until the bad rows are alone, and those go to the
//!     dead-letter queue with ClickHouse's message;
//!   - a missing table or database, unknown setting, syntax error or failed authentication
//!     dead-letter the batch whole;
//!   - the rest (memory limits, too many parts, timeouts) are retried.

use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_core::json::write_value;
use sluice_net::http::HttpClient;
use sluice_net::{ProxyConfig, TlsConfig};

use super::driver::{
    self, BatchConfig, CallResult, DriverSettings, EncodedBatch, PartitionKey, RequestConfig, Service,
};
use super::http::HttpAuth;
use super::http_api::{self, Compression};
use super::template::Template;
use crate::codecs::Transformer;

/// Vector's defaults: 10 MB, 1 s.
const DEFAULT_BATCH_BYTES: usize = 10_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickhouseConfig {
    /// Required: the HTTP interface, e.g. `http://localhost:8123`.
    pub endpoint: String,
    /// Required: the table (a template).
    pub table: String,
    /// The database (a template). Default `default`.
    pub database: Option<String>,
    /// `json_each_row` (default), `json_as_object` or `json_as_string`.
    #[serde(default)]
    pub format: Format,
    /// Ignore fields the table has no column for. Default: the server's setting.
    pub skip_unknown_fields: Option<bool>,
    /// Parse date-times in any common format (RFC 3339 included). Default false.
    #[serde(default)]
    pub date_time_best_effort: bool,
    /// Insert into one random shard of a Distributed table. Default false.
    #[serde(default)]
    pub insert_random_shard: bool,
    /// `gzip` (default), `zlib`, `zstd` or `none`.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    #[serde(default)]
    pub encoding: Transformer,
    pub auth: Option<HttpAuth>,
    /// Accepted: `async_insert_settings` become insert settings.
    pub query_settings: Option<QuerySettings>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub request: RequestConfig,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub proxy: ProxyConfig,
}

fn default_compression() -> Compression {
    Compression::Gzip
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    JsonEachRow,
    JsonAsObject,
    JsonAsString,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Self::JsonEachRow => "JSONEachRow",
            Self::JsonAsObject => "JSONAsObject",
            Self::JsonAsString => "JSONAsString",
        }
    }
}

/// `query_settings` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySettings {
    #[serde(default)]
    pub async_insert_settings: AsyncInsertSettings,
}

/// `query_settings.async_insert_settings`: ClickHouse's `async_insert*` settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncInsertSettings {
    pub enabled: Option<bool>,
    pub wait_for_processing: Option<bool>,
    pub wait_for_processing_timeout: Option<u64>,
    pub deduplicate: Option<bool>,
    pub max_data_size: Option<u64>,
    pub max_query_number: Option<u64>,
}

impl ClickhouseConfig {
    fn templates(&self) -> Result<(Template, Template), ConfigIssue> {
        let table = Template::parse(&self.table).map_err(|m| ConfigIssue::new("table", m))?;
        let database = Template::parse(self.database.as_deref().unwrap_or("default"))
            .map_err(|m| ConfigIssue::new("database", m))?;
        Ok((database, table))
    }

    /// The settings every insert carries, as query parameters.
    fn settings(&self) -> Vec<(&'static str, String)> {
        let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
        let mut settings = vec![("input_format_import_nested_json", "1".to_owned())];
        if let Some(skip) = self.skip_unknown_fields {
            settings.push(("input_format_skip_unknown_fields", flag(skip)));
        }
        if self.date_time_best_effort {
            settings.push(("date_time_input_format", "best_effort".to_owned()));
        }
        if self.insert_random_shard {
            settings.push(("insert_distributed_one_random_shard", "1".to_owned()));
        }
        if let Some(q) = &self.query_settings {
            let a = &q.async_insert_settings;
            let pairs: [(&'static str, Option<String>); 6] = [
                ("async_insert", a.enabled.map(flag)),
                ("wait_for_async_insert", a.wait_for_processing.map(flag)),
                ("wait_for_async_insert_timeout", a.wait_for_processing_timeout.map(|v| v.to_string())),
                ("async_insert_deduplicate", a.deduplicate.map(flag)),
                ("async_insert_max_data_size", a.max_data_size.map(|v| v.to_string())),
                ("async_insert_max_query_number", a.max_query_number.map(|v| v.to_string())),
            ];
            settings.extend(pairs.into_iter().filter_map(|(k, v)| Some((k, v?))));
        }
        settings
    }

    fn auth_header(&self) -> Result<Option<http::HeaderValue>, ConfigIssue> {
        self.auth.as_ref().map(HttpAuth::header_value).transpose().map_err(|e| ConfigIssue::new("auth", e))
    }
}

impl SinkConfig for ClickhouseConfig {
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
        issues.extend(self.auth_header().err());
        issues.extend(http_api::transport_issues(self.tls.as_ref(), &self.proxy, &self.request));
        if self.batch.max_events.is_some_and(|n| n == 0 || n > 1_048_576) {
            issues.push(ConfigIssue::new(
                "batch.max_events",
                "from 1 to 1048576 (ClickHouse's max_insert_block_size: a larger insert may be written in part)",
            ));
        }
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let issue = |i: ConfigIssue| BuildError(format!("{}: {}", i.path, i.message));
        let base = http_api::base_url("endpoint", &self.endpoint).map_err(issue)?;
        let (database, table) = self.templates().map_err(issue)?;
        let auth = self.auth_header().map_err(issue)?;
        let headers = http_api::configured_headers(&self.request).map_err(issue)?;
        let http = http_api::client(self.tls.as_ref(), &self.proxy, &cx)?;
        // `SELECT 1`, as Vector's.
        let mut health_headers = headers.clone();
        health_headers.extend(auth.clone().map(|a| (http::header::AUTHORIZATION, a)));
        let health = http_api::HealthTarget {
            http: http.clone(),
            uri: format!("{base}/?query=SELECT%201"),
            headers: health_headers,
        };
        let service = ClickhouseService {
            http,
            base,
            settings: self.settings(),
            format: self.format,
            database,
            table,
            auth,
            headers,
            transformer: self.encoding.clone(),
            compression: self.compression,
        };
        Ok(Box::new(ClickhouseSink { config: self.clone(), service, cx, health }))
    }
}

struct ClickhouseSink {
    config: ClickhouseConfig,
    service: ClickhouseService,
    cx: SinkContext,
    health: http_api::HealthTarget,
}

impl Sink for ClickhouseSink {
    fn healthcheck(&self) -> Option<sluice_core::component::Healthcheck> {
        Some(self.health.check())
    }

    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let ClickhouseSink { config, service, cx, .. } = *self;
            let settings = DriverSettings::new(&config.batch, &config.request, (None, DEFAULT_BATCH_BYTES, 1.0));
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}

struct ClickhouseService {
    http: HttpClient,
    base: String,
    settings: Vec<(&'static str, String)>,
    format: Format,
    database: Template,
    table: Template,
    auth: Option<http::HeaderValue>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    transformer: Transformer,
    compression: Compression,
}

/// `"name"` with `"` and `\` escaped, as ClickHouse reads quoted identifiers.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

impl ClickhouseService {
    fn uri(&self, database: &str, table: &str) -> Result<http::Uri, String> {
        const SET: &percent_encoding::AsciiSet =
            &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
        let query = format!("INSERT INTO {}.{} FORMAT {}", quote(database), quote(table), self.format.name());
        let mut url = format!("{}/?", self.base);
        for (name, value) in &self.settings {
            url.push_str(&format!("{name}={}&", percent_encoding::utf8_percent_encode(value, SET)));
        }
        url.push_str(&format!("query={}", percent_encoding::utf8_percent_encode(&query, SET)));
        url.parse().map_err(|e| format!("cannot build the insert URL: {e}"))
    }
}

/// How an exception code reads.
enum CodeClass {
    /// The rows: split until the bad ones are alone.
    Data,
    /// The table, database, settings or credentials: no row can succeed.
    Destination,
    /// The server's state: try again.
    Transient,
}

fn classify_code(code: u32) -> CodeClass {
    match code {
        // CANNOT_PARSE_*, TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE,
        // INCORRECT_DATA, TOO_LARGE_STRING_SIZE, CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN,
        // CANNOT_READ_ARRAY_FROM_TEXT, INCORRECT_NUMBER_OF_COLUMNS, VALUE_IS_OUT_OF_RANGE...
        6
        | 25..=27
        | 32
        | 33
        | 38
        | 41
        | 53
        | 69
        | 70
        | 72
        | 117
        | 130
        | 131
        | 321
        | 349
        | 354
        | 377
        | 395
        | 441
        | 459
        | 691 => CodeClass::Data,
        // NO_SUCH_COLUMN_IN_TABLE, UNKNOWN_TABLE, SYNTAX_ERROR, UNKNOWN_DATABASE,
        // UNKNOWN_SETTING, READONLY, UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD,
        // ACCESS_DENIED, AUTHENTICATION_FAILED, UNKNOWN_FORMAT.
        16 | 60 | 62 | 73 | 81 | 115 | 164 | 192..=194 | 497 | 516 => CodeClass::Destination,
        _ => CodeClass::Transient,
    }
}

/// ClickHouse's exception code: the header of newer servers, else `Code: N` in the body.
fn exception_code(headers: &http::HeaderMap, body: &[u8]) -> Option<u32> {
    if let Some(code) = headers.get("x-clickhouse-exception-code").and_then(|v| v.to_str().ok()) {
        return code.trim().parse().ok();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let rest = &text[text.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

pub(crate) fn read_answer(status: http::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> CallResult {
    if status.is_success() {
        return CallResult::Delivered;
    }
    let message = format!("HTTP {status}: {}", http_api::snippet(body));
    let code = status.as_u16();
    match exception_code(headers, body).map(classify_code) {
        Some(CodeClass::Data) => CallResult::Permanent { status: Some(code), message },
        Some(CodeClass::Destination) => CallResult::DestinationError { status: Some(code), message },
        Some(CodeClass::Transient) => {
            CallResult::Retriable { status: Some(code), message, retry_after: None, error_type: "http_status" }
        }
        None => http_api::status_result(status, http_api::retry_after(headers), message),
    }
}

impl Service for ClickhouseService {
    fn partition(&self, event: &LogEvent) -> Result<PartitionKey, String> {
        if !self.database.is_dynamic() && !self.table.is_dynamic() {
            return Ok(PartitionKey::new());
        }
        Ok(vec![
            self.database.render(event).map_err(|e| format!("database: {e}"))?,
            self.table.render(event).map_err(|e| format!("table: {e}"))?,
        ])
    }

    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        write_value(buf, &self.transformer.apply(event.value()));
        buf.push(b'\n');
        Ok(())
    }

    fn call<'a>(&'a self, key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let (database, table) = match key.as_slice() {
                [database, table] => (database.clone(), table.clone()),
                // Neither is a template (see `partition`): their text is all literal.
                _ => (self.database.static_prefix(), self.table.static_prefix()),
            };
            let uri = match self.uri(&database, &table) {
                Ok(uri) => uri,
                Err(message) => return CallResult::DestinationError { status: None, message },
            };
            let body = batch.as_bytes().to_vec();
            let body = match self.compression.compress(body) {
                Ok(body) => body,
                Err(err) => return CallResult::Permanent { status: None, message: format!("cannot compress: {err}") },
            };
            let request = http_api::with_headers(http::Request::post(uri), &self.headers);
            let mut request = http_api::body_headers(request, "application/x-ndjson", self.compression);
            if let Some(auth) = &self.auth {
                request = request.header(http::header::AUTHORIZATION, auth);
            }
            let answer = match http_api::exchange(&self.http, request, body).await {
                Ok(answer) => answer,
                Err(result) => return result,
            };
            read_answer(answer.status, &answer.headers, &answer.body)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_codes_decide_between_split_dead_letter_and_retry() {
        let none = http::HeaderMap::new();
        let error = http::StatusCode::INTERNAL_SERVER_ERROR;
        let parse = b"Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: ...";
        assert!(matches!(read_answer(error, &none, parse), CallResult::Permanent { .. }));
        let table = b"Code: 60, e.displayText() = DB::Exception: Table default.nope doesn't exist.";
        assert!(matches!(read_answer(error, &none, table), CallResult::DestinationError { .. }));
        let memory = b"Code: 241, e.displayText() = DB::Exception: Memory limit (total) exceeded";
        assert!(matches!(read_answer(error, &none, memory), CallResult::Retriable { .. }));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-clickhouse-exception-code", http::HeaderValue::from_static("516"));
        let denied = http::StatusCode::UNAUTHORIZED;
        assert!(matches!(read_answer(denied, &headers, b"authentication failed"), CallResult::DestinationError { .. }));
        assert_eq!(quote("we\"ird"), "\"we\\\"ird\"");
    }
}
