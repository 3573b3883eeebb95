//! `elasticsearch`: events indexed in Elasticsearch or OpenSearch with the `_bulk` API, on the
//! shared sink driver's per-item path.
//!
//! - `mode = "bulk"` writes each event with `bulk.action` into `bulk.index` (templates);
//!   `mode = "data_stream"` creates documents in `<type>-<dataset>-<namespace>`.
//! - A bulk answer is read as JSON, item by item, never by looking for a substring:
//!   delivered items settle; items that failed with 429 or 5xx are sent again (with
//!   `request_retry_partial = true`; otherwise they go to the dead-letter queue, since
//!   Vector does not retry them); rejected items (mapping errors, 400) go to the dead-letter
//!   queue one by one, each with Elasticsearch's `error.type` and `error.reason`. A 409 on
//!   `create` means the document is there already (an earlier attempt wrote it): delivered.
//! - A whole request: 401/403/404 dead-letter the batch whole; 429 and 5xx are retried;
//!   other 4xx split the batch until the rejected events are alone.
//! - Several `endpoints` take requests in turn.
//! - `api_version = "auto"` asks the first endpoint for its version at start (`GET /`);
//!   version 6 gets a `_type` (`doc_type`) in each action line. If the version cannot be
//!   read, v8's format (no type) is used and a warning says so.

mod service;

#[cfg(test)]
pub(crate) use service::read_bulk;

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_net::aws::AwsAuth;
use sluice_net::http::HttpClient;
use sluice_net::{ProxyConfig, TlsConfig};

use super::driver::{self, BatchConfig, DriverSettings, RequestConfig};
use super::http_api::{self, Compression};
use super::template::Template;
use crate::codecs::Transformer;
use service::{Action, ElasticService, IndexTarget};

/// Vector's defaults: 10 MB a bulk request, sent after 1 s.
const DEFAULT_BATCH_BYTES: usize = 10_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Base URLs of the cluster's nodes, used in turn.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// One base URL (deprecated in Vector; use `endpoints`).
    pub endpoint: Option<String>,
    /// `bulk` (default) or `data_stream`.
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub bulk: BulkConfig,
    #[serde(default)]
    pub data_stream: DataStreamConfig,
    /// `auto` (default), `v6`, `v7` or `v8`.
    #[serde(default)]
    pub api_version: ApiVersion,
    /// The `_type` of documents for Elasticsearch 6. Default `_doc`.
    pub doc_type: Option<String>,
    /// Accepted (deprecated in Vector): the type is sent for v6 only.
    pub suppress_type_name: Option<bool>,
    /// A field whose value becomes the document's `_id` (and is removed from the document).
    pub id_key: Option<String>,
    /// An ingest pipeline to run documents through.
    pub pipeline: Option<String>,
    /// `none` (default), `gzip`, `zlib` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub encoding: Transformer,
    /// Retry bulk items that failed with 429 or 5xx. Default false (Vector's): they are
    /// dead-lettered instead.
    #[serde(default)]
    pub request_retry_partial: bool,
    pub auth: Option<ElasticAuth>,
    /// Region (and endpoint) for `auth.strategy = "aws"`.
    pub aws: Option<AwsRegion>,
    /// Extra query parameters of every bulk request.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Accepted: endpoint health probing settings (requests simply take turns here).
    pub distribution: Option<Distribution>,
    /// `managed` (default) or `serverless` (signs for `aoss` instead of `es`).
    #[serde(default)]
    pub opensearch_service_type: OpenSearchServiceType,
    /// Default: 10 MB and 1 s.
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub request: RequestConfig,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub proxy: ProxyConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Bulk,
    DataStream,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiVersion {
    #[default]
    Auto,
    V6,
    V7,
    V8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenSearchServiceType {
    #[default]
    Managed,
    Serverless,
}

/// `bulk` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkConfig {
    /// `index` (default), `create`, or a template rendering to one of them.
    pub action: Option<String>,
    /// The index, a template. Default `vector-%Y.%m.%d`.
    pub index: Option<String>,
    /// The index for events whose `index` template cannot be rendered.
    pub template_fallback_index: Option<String>,
    /// A document version (template), with `version_type`.
    pub version: Option<String>,
    /// `internal` (default), `external` or `external_gte`.
    pub version_type: Option<VersionType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionType {
    Internal,
    External,
    ExternalGte,
}

/// `data_stream` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataStreamConfig {
    /// Default `logs` (a template).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Default `generic` (a template).
    pub dataset: Option<String>,
    /// Default `default` (a template).
    pub namespace: Option<String>,
    /// Take type, dataset and namespace from the event's `data_stream` fields when it has
    /// them. Default true.
    pub auto_routing: Option<bool>,
    /// Write the `data_stream` fields used into the document. Default true.
    pub sync_fields: Option<bool>,
}

/// `auth` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case")]
pub enum ElasticAuth {
    Basic {
        user: String,
        password: String,
    },
    /// Signed with SigV4 for Amazon OpenSearch Service.
    Aws(Box<AwsAuth>),
}

/// `aws` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsRegion {
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

/// `distribution` block (accepted).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    pub retry_initial_backoff_secs: Option<u64>,
    pub retry_max_duration_secs: Option<u64>,
}

impl ElasticsearchConfig {
    fn endpoints(&self) -> Result<Vec<String>, ConfigIssue> {
        let mut out = Vec::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            out.push(http_api::base_url(&format!("endpoints[{i}]"), endpoint)?);
        }
        if let Some(endpoint) = &self.endpoint {
            if !out.is_empty() {
                return Err(ConfigIssue::new("endpoint", "give `endpoints` or `endpoint`, not both"));
            }
            out.push(http_api::base_url("endpoint", endpoint)?);
        }
        if out.is_empty() {
            return Err(ConfigIssue::new(
                "endpoints",
                "required: at least one base URL, e.g. `[\"http://localhost:9200\"]`",
            ));
        }
        Ok(out)
    }

    fn target(&self) -> Result<IndexTarget, ConfigIssue> {
        let template = |field: &str, text: Option<&str>, default: &str| {
            Template::parse(text.unwrap_or(default)).map_err(|m| ConfigIssue::new(field, m))
        };
        match self.mode {
            Mode::Bulk => {
                let action = match self.bulk.action.as_deref() {
                    None | Some("index") => Action::Index,
                    Some("create") => Action::Create,
                    Some(text) if text.contains("{{") => Action::Template(template("bulk.action", Some(text), "")?),
                    Some(other) => {
                        return Err(ConfigIssue::new(
                            "bulk.action",
                            format!("`{other}` is not a bulk action sluice sends: use `index` or `create`"),
                        ));
                    }
                };
                Ok(IndexTarget::Bulk {
                    action,
                    index: template("bulk.index", self.bulk.index.as_deref(), "vector-%Y.%m.%d")?,
                    fallback: self.bulk.template_fallback_index.clone(),
                    version: self.bulk.version.as_deref().map(|v| template("bulk.version", Some(v), "")).transpose()?,
                    version_type: self.bulk.version_type,
                })
            }
            Mode::DataStream => Ok(IndexTarget::DataStream {
                kind: template("data_stream.type", self.data_stream.kind.as_deref(), "logs")?,
                dataset: template("data_stream.dataset", self.data_stream.dataset.as_deref(), "generic")?,
                namespace: template("data_stream.namespace", self.data_stream.namespace.as_deref(), "default")?,
                auto_routing: self.data_stream.auto_routing.unwrap_or(true),
                sync_fields: self.data_stream.sync_fields.unwrap_or(true),
            }),
        }
    }

    fn query_string(&self) -> String {
        let mut query = url_pairs(self.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(pipeline) = &self.pipeline {
            let pair = url_pairs([("pipeline", pipeline.as_str())]);
            query = if query.is_empty() { pair } else { format!("{query}&{pair}") };
        }
        query
    }
}

/// `k=v&k2=v2`, percent-encoded.
fn url_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    pairs
        .into_iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, SET),
                percent_encoding::utf8_percent_encode(v, SET)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl SinkConfig for ElasticsearchConfig {
    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(1.0))
    }

    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(DEFAULT_BATCH_BYTES) as u64)
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        issues.extend(self.endpoints().err());
        issues.extend(self.target().err());
        match &self.auth {
            Some(ElasticAuth::Aws(aws)) => issues.extend(aws.check("auth")),
            Some(ElasticAuth::Basic { user, password }) => {
                issues.extend(http_api::basic_auth(user, password).err().map(|e| ConfigIssue::new("auth", e)))
            }
            None => {}
        }
        if self.aws.is_some() && !matches!(self.auth, Some(ElasticAuth::Aws(_))) {
            issues.push(ConfigIssue::new("aws", "only used with `auth.strategy = \"aws\"`"));
        }
        issues.extend(http_api::transport_issues(self.tls.as_ref(), &self.proxy, &self.request));
        if self.batch.max_events == Some(0) {
            issues.push(ConfigIssue::new("batch.max_events", "must be at least 1"));
        }
        if self.mode == Mode::DataStream && self.bulk.action.as_deref().is_some_and(|a| a != "create") {
            issues.push(ConfigIssue::new("bulk.action", "data streams only take `create`"));
        }
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let issue = |i: ConfigIssue| BuildError(format!("{}: {}", i.path, i.message));
        let endpoints = self.endpoints().map_err(issue)?;
        let target = self.target().map_err(issue)?;
        let http = http_api::client(self.tls.as_ref(), &self.proxy, &cx)?;
        Ok(Box::new(ElasticSink { config: self.clone(), endpoints, target, http, cx }))
    }
}

struct ElasticSink {
    config: ElasticsearchConfig,
    endpoints: Vec<String>,
    target: IndexTarget,
    http: HttpClient,
    cx: SinkContext,
}

impl Sink for ElasticSink {
    /// `GET /_cluster/health` on the first endpoint (as Vector's). Not with AWS auth (its
    /// requests are signed by the service).
    fn healthcheck(&self) -> Option<sluice_core::component::Healthcheck> {
        let mut headers = http_api::configured_headers(&self.config.request).ok()?;
        match &self.config.auth {
            Some(ElasticAuth::Aws(_)) => return None,
            Some(ElasticAuth::Basic { user, password }) => {
                headers.push((http::header::AUTHORIZATION, http_api::basic_auth(user, password).ok()?));
            }
            None => {}
        }
        let uri = format!("{}/_cluster/health", self.endpoints.first()?);
        Some(http_api::get_healthcheck(self.http.clone(), uri, headers))
    }

    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let ElasticSink { config, endpoints, target, http, cx } = *self;
            let service = ElasticService::start(&config, endpoints, target, http, &cx).await;
            let settings = DriverSettings::new(&config.batch, &config.request, (None, DEFAULT_BATCH_BYTES, 1.0));
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}
