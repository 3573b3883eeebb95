//! `loki`: events as log lines in Loki streams (`POST /loki/api/v1/push`), on the shared sink
//! driver.
//!
//! - Each event's stream is its `labels`, rendered; a label key with `*` (`"pod_labels_*" =
//!   "{{ kubernetes.pod_labels }}"`) expands an object field into one label per key. A label
//!   whose template cannot be rendered is left out; an event left with no label gets
//!   `agent="vector"`, as in Vector. `structured_metadata` works the same way.
//! - `compression = "snappy"` (default) pushes protobuf compressed with snappy; `none` and
//!   `gzip` push JSON.
//! - Loki answers a push with some refused entries ("entry out of order", "entry too far
//!   behind") with a 400 listing them, having stored the rest. sluice reads that list: the
//!   refused entries go to the dead-letter queue one by one with Loki's reason, the rest are
//!   delivered. An answer it cannot match entry by entry splits the batch instead (Loki
//!   ignores an entry it already has, so entries sent again are not stored twice).
//! - `out_of_order_action`: `accept` (default) sends entries as they come; `drop` discards
//!   (counted as `out_of_order`) entries older than the last one sent on their stream;
//!   `rewrite_timestamp` moves them to that time.

mod push;

#[cfg(test)]
pub(crate) use push::refused_in_one_stream;

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_net::{ProxyConfig, TlsConfig};

use super::driver::{self, BatchConfig, DriverSettings, RequestConfig};
use super::http::HttpAuth;
use super::http_api;
use super::template::Template;
use crate::codecs::EncodingConfig;
use push::{LabelRule, LokiService, Transport};

/// Vector's defaults: 100,000 events, 1 MB, 1 s.
const DEFAULT_BATCH_EVENTS: usize = 100_000;
const DEFAULT_BATCH_BYTES: usize = 1_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    /// Required: Loki's base URL.
    pub endpoint: String,
    /// Default `/loki/api/v1/push`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Required: how each event becomes a line.
    pub encoding: EncodingConfig,
    /// Stream labels: name → template.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Structured metadata of each entry: name → template.
    #[serde(default)]
    pub structured_metadata: BTreeMap<String, String>,
    /// The tenant (a template), sent as `X-Scope-OrgID`.
    pub tenant_id: Option<String>,
    /// `snappy` (protobuf, default), `gzip` or `none` (JSON).
    #[serde(default)]
    pub compression: LokiCompression,
    #[serde(default)]
    pub out_of_order_action: OutOfOrderAction,
    /// Remove the fields labels are made from from the line. Default false.
    #[serde(default)]
    pub remove_label_fields: bool,
    /// Remove the fields structured metadata is made from from the line. Default false.
    #[serde(default)]
    pub remove_structured_metadata_fields: bool,
    /// Remove `timestamp` from the line (it is the entry's time). Default true.
    #[serde(default = "yes")]
    pub remove_timestamp: bool,
    pub auth: Option<HttpAuth>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub request: RequestConfig,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub proxy: ProxyConfig,
}

fn default_path() -> String {
    "/loki/api/v1/push".to_owned()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LokiCompression {
    #[default]
    Snappy,
    Gzip,
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfOrderAction {
    #[default]
    Accept,
    Drop,
    RewriteTimestamp,
}

/// Loki's (Prometheus') label names.
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The label (or metadata) rules of `map`; every problem is reported.
fn rules(field: &str, map: &BTreeMap<String, String>) -> Result<Vec<LabelRule>, Vec<ConfigIssue>> {
    let mut rules = Vec::new();
    let mut issues = Vec::new();
    for (name, text) in map {
        match rule(&format!("{field}.{name}"), name, text) {
            Ok(rule) => rules.push(rule),
            Err(issue) => issues.push(issue),
        }
    }
    if issues.is_empty() { Ok(rules) } else { Err(issues) }
}

fn rule(path: &str, name: &str, text: &str) -> Result<LabelRule, ConfigIssue> {
    let template = Template::parse(text).map_err(|m| ConfigIssue::new(path, m))?;
    if name.contains('*') {
        let Some(source) = template.single_field() else {
            return Err(ConfigIssue::new(
                path,
                "a key with `*` takes one object field, e.g. `\"{{ kubernetes.pod_labels }}\"`",
            ));
        };
        if !valid_label_name(&name.replace('*', "x")) {
            return Err(ConfigIssue::new(path, "not a valid label name pattern: letters, digits and `_`, then `*`"));
        }
        return Ok(LabelRule::Expand { pattern: name.to_owned(), field: source.to_owned() });
    }
    if !valid_label_name(name) {
        return Err(ConfigIssue::new(
            path,
            format!("`{name}` is not a valid label name: letters, digits and `_`, not starting with a digit"),
        ));
    }
    Ok(LabelRule::One { name: name.to_owned(), template })
}

impl SinkConfig for LokiConfig {
    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(1.0))
    }

    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(DEFAULT_BATCH_BYTES) as u64)
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        issues.extend(http_api::base_url("endpoint", &self.endpoint).err());
        if !self.path.starts_with('/') {
            issues.push(ConfigIssue::new("path", "must start with `/`"));
        }
        issues.extend(rules("labels", &self.labels).err().into_iter().flatten());
        issues.extend(rules("structured_metadata", &self.structured_metadata).err().into_iter().flatten());
        if let Some(tenant) = &self.tenant_id {
            issues.extend(Template::parse(tenant).err().map(|m| ConfigIssue::new("tenant_id", m)));
        }
        issues.extend(http_api::transport_issues(self.tls.as_ref(), &self.proxy, &self.request));
        if self.batch.max_events == Some(0) {
            issues.push(ConfigIssue::new("batch.max_events", "must be at least 1"));
        }
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let issue = |i: ConfigIssue| BuildError(format!("{}: {}", i.path, i.message));
        let base = http_api::base_url("endpoint", &self.endpoint).map_err(issue)?;
        let uri: http::Uri = format!("{base}{}", self.path).parse().map_err(|e| BuildError(format!("path: {e}")))?;
        let first =
            |issues: Vec<ConfigIssue>| issues.into_iter().next().map_or_else(|| BuildError("labels".into()), issue);
        let labels = rules("labels", &self.labels).map_err(first)?;
        let metadata = rules("structured_metadata", &self.structured_metadata).map_err(first)?;
        let tenant = self.tenant_id.as_deref().map(Template::parse).transpose().map_err(BuildError)?;
        let auth =
            self.auth.as_ref().map(HttpAuth::header_value).transpose().map_err(|e| BuildError(format!("auth: {e}")))?;
        let http = http_api::client(self.tls.as_ref(), &self.proxy, &cx)?;
        let headers = http_api::configured_headers(&self.request).map_err(issue)?;
        // `GET /ready`, as Vector's.
        let mut health_headers = headers.clone();
        health_headers.extend(auth.clone().map(|a| (http::header::AUTHORIZATION, a)));
        let health =
            http_api::HealthTarget { http: http.clone(), uri: format!("{base}/ready"), headers: health_headers };
        let service = LokiService::new(self, Transport { http, uri, auth, headers }, labels, metadata, tenant);
        Ok(Box::new(LokiSink { config: self.clone(), service, cx, health }))
    }
}

struct LokiSink {
    config: LokiConfig,
    service: LokiService,
    cx: SinkContext,
    health: http_api::HealthTarget,
}

impl Sink for LokiSink {
    fn healthcheck(&self) -> Option<sluice_core::component::Healthcheck> {
        Some(self.health.check())
    }

    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let LokiSink { config, service, cx, .. } = *self;
            let defaults = (Some(DEFAULT_BATCH_EVENTS), DEFAULT_BATCH_BYTES, 1.0);
            let settings = DriverSettings::new(&config.batch, &config.request, defaults);
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}
