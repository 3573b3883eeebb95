//! The `_bulk` request of the `elasticsearch` sink: action lines, documents, and how an answer
//! is read item by item.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::component::SinkContext;
use sluice_core::event::EventMetadata;
use sluice_core::json::{Field, write_object, write_str, write_value};
use sluice_net::aws::AwsClient;
use sluice_net::http::HttpClient;
use vrl::value::Value;

use super::{ApiVersion, ElasticAuth, ElasticsearchConfig, OpenSearchServiceType, VersionType};
use crate::codecs::Transformer;
use crate::sinks::driver::{CallResult, EncodedBatch, ItemResult, PartitionKey, Service};
use crate::sinks::http_api::{self, Compression};
use crate::sinks::template::{Template, lookup};

/// Where each event goes.
#[derive(Debug, Clone)]
pub enum IndexTarget {
    Bulk {
        action: Action,
        index: Template,
        fallback: Option<String>,
        version: Option<Template>,
        version_type: Option<VersionType>,
    },
    DataStream {
        kind: Template,
        dataset: Template,
        namespace: Template,
        auto_routing: bool,
        sync_fields: bool,
    },
}

#[derive(Debug, Clone)]
pub enum Action {
    Index,
    Create,
    Template(Template),
}

/// How requests are authenticated.
enum Auth {
    None,
    Basic(http::HeaderValue),
    /// `hash_header`: send the payload's hash as `x-amz-content-sha256` (OpenSearch
    /// Serverless requires it).
    Aws {
        client: Box<AwsClient>,
        hash_header: bool,
    },
}

pub struct ElasticService {
    http: HttpClient,
    auth: Auth,
    /// `<endpoint>/_bulk?<query>` of each endpoint, taken in turn.
    bulk_urls: Vec<http::Uri>,
    next: AtomicUsize,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    target: IndexTarget,
    /// `_type` of action lines (Elasticsearch 6 only).
    doc_type: Option<String>,
    /// The action line, when it is the same for every event (a fixed action and index, no
    /// `_id` or version): written once, copied for each event.
    fixed_action: Option<Vec<u8>>,
    id_key: Option<String>,
    transformer: Transformer,
    compression: Compression,
    retry_partial: bool,
}

impl ElasticService {
    /// Sets up authentication and, with `api_version = "auto"`, asks the cluster its version.
    pub async fn start(
        config: &ElasticsearchConfig,
        endpoints: Vec<String>,
        target: IndexTarget,
        http: HttpClient,
        cx: &SinkContext,
    ) -> Self {
        let auth = match &config.auth {
            None => Auth::None,
            Some(ElasticAuth::Basic { user, password }) => match http_api::basic_auth(user, password) {
                Ok(value) => Auth::Basic(value),
                Err(_) => Auth::None,
            },
            Some(ElasticAuth::Aws(aws)) => {
                let region_config = config.aws.as_ref().and_then(|a| a.region.as_deref());
                let region = sluice_net::aws::region(region_config, aws.profile.as_deref(), true)
                    .await
                    .unwrap_or_else(|_| "us-east-1".to_owned());
                let service = match config.opensearch_service_type {
                    OpenSearchServiceType::Managed => "es",
                    OpenSearchServiceType::Serverless => "aoss",
                };
                let client = AwsClient::new(http.clone(), aws, region, service).await;
                if let Err(err) = client.check_credentials().await {
                    tracing::error!(component_id = &*cx.id, error = %err, "No AWS credentials; every batch will fail until some are found.");
                }
                let hash_header = config.opensearch_service_type == OpenSearchServiceType::Serverless;
                Auth::Aws { client: Box::new(client), hash_header }
            }
        };
        let query = config.query_string();
        let bulk_urls = endpoints
            .iter()
            .filter_map(|base| {
                let url = if query.is_empty() { format!("{base}/_bulk") } else { format!("{base}/_bulk?{query}") };
                url.parse().ok()
            })
            .collect();
        let headers = http_api::configured_headers(&config.request).unwrap_or_default();
        let mut service = Self {
            http,
            auth,
            bulk_urls,
            next: AtomicUsize::new(0),
            headers,
            target,
            doc_type: None,
            fixed_action: None,
            id_key: config.id_key.clone(),
            transformer: config.encoding.clone(),
            compression: config.compression,
            retry_partial: config.request_retry_partial,
        };
        let version = match config.api_version {
            ApiVersion::Auto => match service.cluster_version(&endpoints[0]).await {
                Ok(version) => version,
                Err(err) => {
                    tracing::warn!(
                        component_id = &*cx.id,
                        error = err.as_str(),
                        "Cannot read the cluster's version; writing Elasticsearch 8's format (no document type). Set `api_version` to choose."
                    );
                    ApiVersion::V8
                }
            },
            other => other,
        };
        if version == ApiVersion::V6 {
            service.doc_type = Some(config.doc_type.clone().unwrap_or_else(|| "_doc".to_owned()));
        }
        if let IndexTarget::Bulk { action: Action::Index | Action::Create, index, version: None, .. } = &service.target
            && !index.is_dynamic()
            && service.id_key.is_none()
        {
            let mut line = Vec::new();
            let probe = LogEvent::from_value(Value::Null, EventMetadata::new("", chrono::Utc::now()));
            if service.action_line(&probe, &mut line).is_ok() {
                service.fixed_action = Some(line);
            }
        }
        service
    }

    /// `GET /`: the major version of Elasticsearch (OpenSearch writes as v8 does: no types).
    async fn cluster_version(&self, base: &str) -> Result<ApiVersion, String> {
        #[derive(Deserialize)]
        struct Root {
            version: RootVersion,
        }
        #[derive(Deserialize)]
        struct RootVersion {
            number: String,
            distribution: Option<String>,
        }
        let uri: http::Uri = format!("{base}/").parse().map_err(|e| format!("{e}"))?;
        let request = http::Request::get(uri);
        let response = self.send(request, Bytes::new()).await.map_err(|(_, message)| message)?;
        let status = response.status();
        let body = http_api::read_body(response).await?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", http_api::snippet(&body)));
        }
        let root: Root = serde_json::from_slice(&body).map_err(|e| format!("unexpected answer to GET /: {e}"))?;
        if root.version.distribution.as_deref() == Some("opensearch") {
            return Ok(ApiVersion::V8);
        }
        match root.version.number.split('.').next().and_then(|m| m.parse::<u32>().ok()) {
            Some(..=6) => Ok(ApiVersion::V6),
            Some(7) => Ok(ApiVersion::V7),
            Some(_) => Ok(ApiVersion::V8),
            None => Err(format!("unreadable version `{}`", root.version.number)),
        }
    }

    /// Adds authentication and sends; an error is `(error_type, message)`.
    async fn send(
        &self,
        mut request: http::request::Builder,
        body: Bytes,
    ) -> Result<sluice_net::http::Response, (&'static str, String)> {
        request = http_api::with_headers(request, &self.headers);
        match &self.auth {
            Auth::Aws { client, hash_header } => {
                client.send(request, body, *hash_header).await.map_err(|e| (e.error_type(), e.to_string()))
            }
            auth => {
                if let Auth::Basic(value) = auth {
                    request = request.header(http::header::AUTHORIZATION, value);
                }
                let request = request
                    .body(http_body_util::Full::new(body))
                    .map_err(|e| ("request_failed", format!("cannot build the request: {e}")))?;
                self.http.send(request).await.map_err(|e| (e.error_type(), e.to_string()))
            }
        }
    }

    /// The action line's `_index`, `_id` and version parts, and the document's extra fields.
    fn action_line(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<Vec<(&'static str, Value)>, String> {
        let mut extra = Vec::new();
        let (action, index, version) = match &self.target {
            IndexTarget::Bulk { action, index, fallback, version, version_type } => {
                let action = match action {
                    Action::Index => "index",
                    Action::Create => "create",
                    Action::Template(t) => match t.render(event).map_err(|e| format!("bulk.action: {e}"))?.as_str() {
                        "index" => "index",
                        "create" => "create",
                        other => return Err(format!("bulk.action rendered to `{other}`, not `index` or `create`")),
                    },
                };
                let index = match (index.render(event), fallback) {
                    (Ok(index), _) => index,
                    (Err(_), Some(fallback)) => fallback.clone(),
                    (Err(err), None) => return Err(format!("bulk.index: {err}")),
                };
                let version = match version {
                    Some(t) => Some((t.render(event).map_err(|e| format!("bulk.version: {e}"))?, *version_type)),
                    None => None,
                };
                (action, index, version)
            }
            IndexTarget::DataStream { kind, dataset, namespace, auto_routing, sync_fields } => {
                let routed = |name: &str, template: &Template| -> Result<String, String> {
                    if *auto_routing
                        && let Some(Value::Object(ds)) = event.get("data_stream")
                        && let Some(v) = ds.get(name).and_then(Value::to_str_lossy)
                    {
                        return Ok(v.into_owned());
                    }
                    template.render(event).map_err(|e| format!("data_stream.{name}: {e}"))
                };
                let (kind, dataset, namespace) =
                    (routed("type", kind)?, routed("dataset", dataset)?, routed("namespace", namespace)?);
                let index = format!("{kind}-{dataset}-{namespace}");
                if *sync_fields {
                    let mut ds = vrl::value::ObjectMap::new();
                    ds.insert("type".into(), Value::from(kind));
                    ds.insert("dataset".into(), Value::from(dataset));
                    ds.insert("namespace".into(), Value::from(namespace));
                    extra.push(("data_stream", Value::Object(ds)));
                }
                ("create", index, None)
            }
        };
        buf.extend_from_slice(b"{\"");
        buf.extend_from_slice(action.as_bytes());
        buf.extend_from_slice(b"\":{\"_index\":");
        write_str(buf, &index);
        if let Some(doc_type) = &self.doc_type {
            buf.extend_from_slice(b",\"_type\":");
            write_str(buf, doc_type);
        }
        if let Some(key) = &self.id_key
            && let Some(id) = lookup(event.value(), key).filter(|v| !matches!(v, Value::Null))
        {
            buf.extend_from_slice(b",\"_id\":");
            write_str(buf, &id.to_string_lossy());
        }
        if let Some((version, kind)) = version {
            let number: u64 =
                version.trim().parse().map_err(|_| format!("bulk.version `{version}` is not a number"))?;
            buf.extend_from_slice(b",\"version\":");
            buf.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
            buf.extend_from_slice(b",\"version_type\":");
            write_str(
                buf,
                match kind {
                    Some(VersionType::External) => "external",
                    Some(VersionType::ExternalGte) => "external_gte",
                    Some(VersionType::Internal) | None => "internal",
                },
            );
        }
        buf.extend_from_slice(b"}}\n");
        Ok(extra)
    }
}

/// A `_bulk` answer: `errors` first, items only when it is true.
#[derive(Deserialize)]
struct BulkHead {
    errors: bool,
}

#[derive(Deserialize)]
struct BulkItems {
    items: Vec<HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// `type: reason` of an Elasticsearch error object (or its text).
fn describe_error(error: Option<&serde_json::Value>) -> String {
    match error {
        Some(serde_json::Value::Object(map)) => {
            let text = |key: &str| map.get(key).and_then(|v| v.as_str()).unwrap_or_default();
            let mut message = format!("{}: {}", text("type"), text("reason"));
            if let Some(cause) = map.get("caused_by").and_then(|c| c.get("reason")).and_then(|r| r.as_str()) {
                message.push_str(&format!(" (caused by: {cause})"));
            }
            message
        }
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => "no error given".to_owned(),
    }
}

/// Reads a 2xx `_bulk` answer.
pub(crate) fn read_bulk(body: &[u8], retry_partial: bool) -> CallResult {
    let invalid = |err: serde_json::Error| CallResult::Retriable {
        status: None,
        message: format!("unreadable bulk answer ({err}): {}", http_api::snippet(body)),
        retry_after: None,
        error_type: "invalid_response",
    };
    let head: BulkHead = match serde_json::from_slice(body) {
        Ok(head) => head,
        Err(err) => return invalid(err),
    };
    if !head.errors {
        return CallResult::Delivered;
    }
    let items: BulkItems = match serde_json::from_slice(body) {
        Ok(items) => items,
        Err(err) => return invalid(err),
    };
    let results = items
        .items
        .iter()
        .map(|item| {
            let Some((action, item)) = item.iter().next() else {
                return ItemResult::Retriable { status: None, message: "empty bulk item".to_owned() };
            };
            let status = Some(item.status);
            match item.status {
                200..=299 => ItemResult::Delivered,
                // `create` of a document that exists: an earlier attempt wrote it.
                409 if action == "create" => ItemResult::Delivered,
                429 | 500..=599 if retry_partial => {
                    ItemResult::Retriable { status, message: describe_error(item.error.as_ref()) }
                }
                429 | 500..=599 => ItemResult::Permanent {
                    status,
                    message: format!(
                        "{} (not retried: request_retry_partial is false)",
                        describe_error(item.error.as_ref())
                    ),
                },
                _ => ItemResult::Permanent { status, message: describe_error(item.error.as_ref()) },
            }
        })
        .collect();
    CallResult::PerItem(results)
}

/// Reads a non-2xx answer to a whole request.
fn read_failure(status: http::StatusCode, retry_after: Option<std::time::Duration>, body: &[u8]) -> CallResult {
    #[derive(Deserialize)]
    struct Failure {
        error: serde_json::Value,
    }
    let detail = match serde_json::from_slice::<Failure>(body) {
        Ok(failure) => describe_error(Some(&failure.error)),
        Err(_) => http_api::snippet(body),
    };
    http_api::status_result(status, retry_after, format!("HTTP {status}: {detail}"))
}

impl Service for ElasticService {
    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        let extra = match &self.fixed_action {
            Some(line) => {
                buf.extend_from_slice(line);
                Vec::new()
            }
            None => self.action_line(event, buf)?,
        };
        let value = self.transformer.apply(event.value());
        let data_stream = matches!(self.target, IndexTarget::DataStream { .. });
        if self.id_key.is_none() && !data_stream {
            write_value(buf, &value);
        } else {
            let rename = data_stream && value.as_object().is_some_and(|m| !m.contains_key("@timestamp"));
            let id_key = self.id_key.as_deref();
            let timestamp_key = sluice_core::event::fields::timestamp();
            let each = |key: &str, _: &Value| match key {
                key if rename && key == timestamp_key => Field::Rename("@timestamp"),
                key if Some(key) == id_key => Field::Skip,
                _ => Field::Keep,
            };
            write_object(buf, &value, each, &extra);
        }
        buf.push(b'\n');
        Ok(())
    }

    fn call<'a>(&'a self, _key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let body = batch.as_bytes().to_vec();
            let body = match self.compression.compress(body) {
                Ok(body) => body,
                Err(err) => return CallResult::Permanent { status: None, message: format!("cannot compress: {err}") },
            };
            let n = self.next.fetch_add(1, Ordering::Relaxed) % self.bulk_urls.len().max(1);
            let Some(uri) = self.bulk_urls.get(n) else {
                return CallResult::DestinationError { status: None, message: "no endpoint".to_owned() };
            };
            let request = http::Request::post(uri.clone());
            let request = http_api::body_headers(request, "application/x-ndjson", self.compression);
            let response = match self.send(request, body).await {
                Ok(response) => response,
                Err((error_type, message)) => return CallResult::no_answer(&message, error_type),
            };
            let status = response.status();
            let hint = http_api::retry_after(response.headers());
            let body = match http_api::read_body(response).await {
                Ok(body) => body,
                Err(message) => return CallResult::no_answer(&message, "request_failed"),
            };
            if status.is_success() { read_bulk(&body, self.retry_partial) } else { read_failure(status, hint, &body) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_printed_errors_are_read_as_errors() {
        let body = br#"{
  "took" : 3,
  "errors" : true,
  "items" : [
    { "index" : { "_index" : "logs", "status" : 201 } },
    { "index" : { "_index" : "logs", "status" : 400,
        "error" : { "type" : "mapper_parsing_exception", "reason" : "failed to parse field [n]" } } },
    { "index" : { "_index" : "logs", "status" : 429,
        "error" : { "type" : "es_rejected_execution_exception", "reason" : "rejected" } } },
    { "create" : { "_index" : "logs", "status" : 409,
        "error" : { "type" : "version_conflict_engine_exception", "reason" : "document already exists" } } }
  ]
}"#;
        let CallResult::PerItem(items) = read_bulk(body, true) else { panic!("not per item") };
        assert_eq!(items[0], ItemResult::Delivered);
        assert!(
            matches!(&items[1], ItemResult::Permanent { status: Some(400), message } if message.starts_with("mapper_parsing_exception: failed to parse field [n]"))
        );
        assert!(matches!(&items[2], ItemResult::Retriable { status: Some(429), .. }));
        assert_eq!(items[3], ItemResult::Delivered, "create of an existing document");
        let CallResult::PerItem(items) = read_bulk(body, false) else { panic!("not per item") };
        assert!(
            matches!(&items[2], ItemResult::Permanent { status: Some(429), message } if message.contains("request_retry_partial"))
        );
    }

    #[test]
    fn an_answer_that_is_not_json_is_retried() {
        assert!(matches!(read_bulk(b"<html>proxy error</html>", true), CallResult::Retriable { .. }));
        assert_eq!(read_bulk(br#"{"took":1,"errors":false,"items":[]}"#, true), CallResult::Delivered);
    }
}
