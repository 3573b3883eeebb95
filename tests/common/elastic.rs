//! A strict local stand-in for Elasticsearch's `_bulk` API (Elasticsearch cannot be installed
//! from the registries these machines reach). It follows the published API:
//! - `GET /_cluster/health` answers `green` (the healthcheck).
//! - `GET /` answers the cluster info, with `version.number` (and OpenSearch's
//!   `version.distribution`).
//! - `POST /_bulk` and `POST /<index>/_bulk` take NDJSON (`application/x-ndjson` or
//!   `application/json`, else 406), which must end with a newline (else 400).
//! - Action lines: exactly one of `index`/`create`/`update`/`delete`; unknown metadata
//!   parameters are a 400 for the whole request (`_type` is unknown from 8.0 on; 6.x needs
//!   it); a missing `_index` is a 400 `action_request_validation_exception`.
//! - Items: a document that is not a JSON object is a 400 `mapper_parsing_exception`; an
//!   invalid index name a 400 `invalid_index_name_exception`; `create` of an existing `_id` a
//!   409 `version_conflict_engine_exception`; into a data stream (`logs-*-*`) only `create`
//!   is allowed and `@timestamp` is required.
//! - Basic auth, when set: a missing or wrong one is a 401 `security_exception`.
//! - Answers: `{"took","errors","items":[{"<action>":{"_index","_id","status",…,"error":{"type","reason"}}}]}`,
//!   pretty-printed (`"errors" : true`) with `?pretty` or when the server is made pretty.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{Value, json};

use super::api_server::{ApiServer, Reply, Request};

/// An injected item failure: status, error type, reason.
pub type Failure = (u16, &'static str, String);
/// Decides an item's failure from its document and how many times the same document was
/// received before.
pub type Rule = dyn Fn(&Value, usize) -> Option<Failure> + Send + Sync;

pub struct EsOptions {
    pub version: &'static str,
    pub distribution: Option<&'static str>,
    pub basic_auth: Option<(&'static str, &'static str)>,
    /// Amazon OpenSearch Service: requests must be SigV4-signed for this region and `es`
    /// (the signature's form is checked, not its value).
    pub sigv4_region: Option<&'static str>,
    pub pretty: bool,
}

impl Default for EsOptions {
    fn default() -> Self {
        Self { version: "8.15.0", distribution: None, basic_auth: None, sigv4_region: None, pretty: false }
    }
}

/// A request head: method, path, query, `Content-Encoding`.
pub type Seen = (String, String, Vec<(String, String)>, Option<String>);

#[derive(Default)]
pub struct EsState {
    /// Indexed documents: index → id → document.
    pub indices: HashMap<String, HashMap<String, Value>>,
    /// Every document received, as (action, index, document text), retries included.
    pub received: Vec<(String, String, String)>,
    /// Bulk requests answered.
    pub bulk_requests: usize,
    /// Request heads seen: (method, path, query, content-encoding).
    pub requests: Vec<Seen>,
    next_id: u64,
}

pub struct Elastic {
    pub server: ApiServer,
    pub state: Arc<Mutex<EsState>>,
}

impl Elastic {
    pub fn start(options: EsOptions, rule: impl Fn(&Value, usize) -> Option<Failure> + Send + Sync + 'static) -> Self {
        let state = Arc::new(Mutex::new(EsState::default()));
        let s = state.clone();
        let rule: Arc<Rule> = Arc::new(rule);
        let server = ApiServer::start(move |request| {
            let mut state = s.lock().unwrap_or_else(|e| e.into_inner());
            state.requests.push((
                request.method.clone(),
                request.path.clone(),
                request.query.clone(),
                request.header("content-encoding").map(str::to_owned),
            ));
            handle(&options, &mut state, &*rule, request)
        });
        Self { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Documents indexed in `index`.
    pub fn count(&self, index: &str) -> usize {
        self.state.lock().map(|s| s.indices.get(index).map_or(0, HashMap::len)).unwrap_or_default()
    }

    /// Every indexed document, all indices.
    pub fn documents(&self) -> Vec<Value> {
        self.state.lock().map(|s| s.indices.values().flat_map(|m| m.values().cloned()).collect()).unwrap_or_default()
    }
}

fn error_body(status: u16, kind: &str, reason: &str) -> Value {
    json!({
        "error": {
            "root_cause": [{ "type": kind, "reason": reason }],
            "type": kind,
            "reason": reason
        },
        "status": status
    })
}

fn reply(options: &EsOptions, request: &Request, status: u16, body: &Value) -> Reply {
    if options.pretty || request.param("pretty").is_some() {
        // Elasticsearch's pretty printer puts a space on both sides of the colon.
        let text = serde_json::to_string_pretty(body).unwrap_or_default().replace("\": ", "\" : ");
        let mut r = Reply::json(status, body);
        r.body = text.into_bytes();
        return r;
    }
    Reply::json(status, body)
}

fn handle(options: &EsOptions, state: &mut EsState, rule: &Rule, request: &Request) -> Reply {
    if let Some((user, password)) = options.basic_auth {
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        if request.header("authorization") != Some(expected.as_str()) {
            let reason = format!("unable to authenticate user for REST request [{}]", request.path);
            return reply(options, request, 401, &error_body(401, "security_exception", &reason))
                .with_header("WWW-Authenticate", "Basic realm=\"security\" charset=\"UTF-8\"");
        }
    }
    if let Some(region) = options.sigv4_region {
        let scope = format!("/{region}/es/aws4_request, SignedHeaders=");
        let signed = request
            .header("authorization")
            .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential=") && a.contains(&scope))
            && request.header("x-amz-date").is_some();
        if !signed {
            let reason = "The request signature we calculated does not match the signature you provided.";
            return reply(options, request, 403, &json!({ "message": reason }));
        }
    }
    let path = request.path.trim_end_matches('/');
    match (request.method.as_str(), path) {
        ("GET", "") => {
            let mut version = json!({ "number": options.version, "build_flavor": "default" });
            if let Some(d) = options.distribution {
                version["distribution"] = json!(d);
            }
            reply(
                options,
                request,
                200,
                &json!({ "name": "local", "cluster_name": "sluice-test", "version": version, "tagline": "You Know, for Search" }),
            )
        }
        // The healthcheck's call.
        ("GET", "/_cluster/health") => reply(
            options,
            request,
            200,
            &json!({ "cluster_name": "sluice-test", "status": "green", "number_of_nodes": 1 }),
        ),
        ("POST" | "PUT", p) if p == "/_bulk" || p.ends_with("/_bulk") => {
            let default_index = p.strip_suffix("/_bulk").map(|i| i.trim_start_matches('/')).filter(|i| !i.is_empty());
            bulk(options, state, rule, request, default_index)
        }
        (method, _) => {
            let reason = format!("no handler found for uri [{}] and method [{method}]", request.path);
            reply(options, request, 400, &json!({ "error": reason, "status": 400 }))
        }
    }
}

fn bulk(
    options: &EsOptions,
    state: &mut EsState,
    rule: &Rule,
    request: &Request,
    default_index: Option<&str>,
) -> Reply {
    let content_type = request.header("content-type").unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if !matches!(media, "application/x-ndjson" | "application/json") {
        let reason = format!("Content-Type header [{content_type}] is not supported");
        return reply(options, request, 406, &json!({ "error": reason, "status": 406 }));
    }
    let bad = |reason: String| reply(options, request, 400, &error_body(400, "illegal_argument_exception", &reason));
    if request.body.is_empty() {
        return reply(
            options,
            request,
            400,
            &error_body(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;"),
        );
    }
    if request.body.last() != Some(&b'\n') {
        return bad("The bulk request must be terminated by a newline [\\n]".to_owned());
    }
    // OpenSearch (1.x, 2.x) has no document types, as Elasticsearch 8.
    let major: u32 = match options.distribution {
        Some("opensearch") => 8,
        _ => options.version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(8),
    };
    let text = String::from_utf8_lossy(&request.body);
    let lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty()).collect();
    // First validate every action line, as Elasticsearch does before running any item.
    let mut ops = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let n = i + 1;
        let Ok(Value::Object(action)) = serde_json::from_str::<Value>(lines[i]) else {
            return bad(format!("Malformed action/metadata line [{n}], expected START_OBJECT or END_OBJECT"));
        };
        if action.len() != 1 {
            return bad(format!(
                "Malformed action/metadata line [{n}], expected a simple value for field [{}]",
                action.len()
            ));
        }
        let Some((name, meta)) = action.into_iter().next() else { return bad("empty action".to_owned()) };
        if !matches!(name.as_str(), "index" | "create" | "update" | "delete") {
            return bad(format!(
                "Malformed action/metadata line [{n}], expected one of [create, delete, index, update] but found [{name}]"
            ));
        }
        let Value::Object(meta) = meta else {
            return bad(format!("Malformed action/metadata line [{n}], expected START_OBJECT"));
        };
        for key in meta.keys() {
            let known = matches!(
                key.as_str(),
                "_index"
                    | "_id"
                    | "routing"
                    | "pipeline"
                    | "version"
                    | "version_type"
                    | "if_seq_no"
                    | "if_primary_term"
                    | "require_alias"
            ) || (key == "_type" && major < 8);
            if !known {
                return bad(format!("Action/metadata line [{n}] contains an unknown parameter [{key}]"));
            }
        }
        if major <= 6 && !meta.contains_key("_type") {
            return reply(
                options,
                request,
                400,
                &error_body(400, "action_request_validation_exception", "Validation Failed: 1: type is missing;"),
            );
        }
        let index = meta.get("_index").and_then(Value::as_str).or(default_index).map(str::to_owned);
        let Some(index) = index else {
            return reply(
                options,
                request,
                400,
                &error_body(400, "action_request_validation_exception", "Validation Failed: 1: index is missing;"),
            );
        };
        let id = meta.get("_id").and_then(Value::as_str).map(str::to_owned);
        let doc = if name == "delete" {
            None
        } else {
            i += 1;
            match lines.get(i) {
                Some(doc) => Some(*doc),
                None => {
                    return bad(format!(
                        "The bulk request must be terminated by a newline [\\n]; no document after line [{n}]"
                    ));
                }
            }
        };
        ops.push((name, index, id, doc));
        i += 1;
    }
    state.bulk_requests += 1;
    let mut errors = false;
    let mut items = Vec::new();
    for (action, index, id, doc) in ops {
        let doc_text = doc.unwrap_or_default();
        state.received.push((action.clone(), index.clone(), doc_text.to_owned()));
        let seen = state.received.iter().filter(|(_, _, d)| d == doc_text).count() - 1;
        let item = item(state, rule, &action, &index, id, doc_text, seen);
        errors |= item.get("error").is_some();
        items.push(json!({ action: item }));
    }
    reply(options, request, 200, &json!({ "took": 3, "errors": errors, "items": items }))
}

fn item(
    state: &mut EsState,
    rule: &Rule,
    action: &str,
    index: &str,
    id: Option<String>,
    doc: &str,
    seen: usize,
) -> Value {
    let fail = |status: u16, kind: &str, reason: String, id: Option<&String>| json!({ "_index": index, "_id": id, "status": status, "error": { "type": kind, "reason": reason, "index": index } });
    let invalid_name = index.is_empty()
        || index.starts_with(['_', '-', '+'])
        || index.chars().any(|c| c.is_ascii_uppercase() || "\\/*?\"<>| ,#:".contains(c));
    if invalid_name {
        let reason = format!(
            "Invalid index name [{index}], must be lowercase and not contain \\, /, *, ?, \", <, >, |, ` ` (space character), ,, #"
        );
        return fail(400, "invalid_index_name_exception", reason, id.as_ref());
    }
    let parsed: Value = match serde_json::from_str(doc) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => {
            let reason = "failed to parse: compressor detection can only be called on some xcontent bytes".to_owned();
            return fail(400, "mapper_parsing_exception", reason, id.as_ref());
        }
    };
    let data_stream = index.starts_with("logs-") && index.split('-').count() >= 3;
    if data_stream && action != "create" {
        let reason = "only write ops with an op_type of create are allowed in data streams".to_owned();
        return fail(400, "illegal_argument_exception", reason, id.as_ref());
    }
    if data_stream && parsed.get("@timestamp").is_none() {
        let reason = "data stream timestamp field [@timestamp] is missing".to_owned();
        return fail(400, "document_parsing_exception", reason, id.as_ref());
    }
    if let Some((status, kind, reason)) = rule(&parsed, seen) {
        return fail(status, kind, reason, id.as_ref());
    }
    let id = id.unwrap_or_else(|| {
        state.next_id += 1;
        format!("gen-{}", state.next_id)
    });
    let docs = state.indices.entry(index.to_owned()).or_default();
    if action == "create" && docs.contains_key(&id) {
        let reason = format!("[{id}]: version conflict, document already exists (current version [1])");
        return fail(409, "version_conflict_engine_exception", reason, Some(&id));
    }
    let created = docs.insert(id.clone(), parsed).is_none();
    json!({
        "_index": index, "_id": id, "_version": 1,
        "result": if created { "created" } else { "updated" },
        "_shards": { "total": 2, "successful": 1, "failed": 0 },
        "_seq_no": 0, "_primary_term": 1,
        "status": if created { 201 } else { 200 }
    })
}
