//! A strict local stand-in for Loki's push API (Loki cannot be installed here). It follows
//! the published API and the ingester's behaviour:
//! - `POST /loki/api/v1/push` with `application/json` (`{"streams":[{"stream":{…},
//!   "values":[["<ns>","<line>"(,{metadata})]]}]}`, optionally gzip) or
//!   `application/x-protobuf` (a snappy-compressed `logproto.PushRequest`); other types 415.
//! - A multi-tenant server needs `X-Scope-OrgID` (else 401 `no org id`).
//! - A stream needs at least one label, with valid names (else 400).
//! - Ordering, as the ingester does per stream: in ordered mode an entry older than the
//!   stream's newest is refused `entry out of order`; in unordered mode (Loki's default since
//!   2.4) one older than the newest minus one hour is refused `entry too far behind`. An entry
//!   with the time and line of one already stored is ignored (not stored twice).
//! - Refused entries do not stop the others: they are stored, and the answer is a 400 whose
//!   body lists the refused entries of the last stream that had any (at most 10), then
//!   `user '<tenant>', total ignored: N out of M for stream: {labels}`. All stored: 204.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::api_server::{ApiServer, Reply, Request};

mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub time: i64,
    pub line: String,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct LokiState {
    /// Streams by (tenant, labels).
    pub streams: BTreeMap<(String, BTreeMap<String, String>), Vec<Stored>>,
    /// Pushes: (content type, status).
    pub pushes: Vec<(String, u16)>,
    /// Values of an `X-Note` header, as sent.
    pub notes: Vec<String>,
}

pub struct Loki {
    pub server: ApiServer,
    pub state: Arc<Mutex<LokiState>>,
}

pub struct LokiOptions {
    pub ordered: bool,
    pub multi_tenant: bool,
}

type Labels = BTreeMap<String, String>;
type PushedStream = (Labels, Vec<Stored>);

impl Loki {
    pub fn start(options: LokiOptions) -> Self {
        let state = Arc::new(Mutex::new(LokiState::default()));
        let s = state.clone();
        let server = ApiServer::start(move |request| {
            let mut state = s.lock().unwrap_or_else(|e| e.into_inner());
            let reply = push(&options, &mut state, request);
            let kind = request.header("content-type").unwrap_or_default().to_owned();
            if let Some(note) = request.header("x-note") {
                state.notes.push(note.to_owned());
            }
            if request.method == "POST" {
                state.pushes.push((kind, reply.status));
            }
            reply
        });
        Self { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every stored entry, with its tenant and labels.
    pub fn entries(&self) -> Vec<(String, Labels, Stored)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .streams
            .iter()
            .flat_map(|((tenant, labels), entries)| entries.iter().map(|e| (tenant.clone(), labels.clone(), e.clone())))
            .collect()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `{a="x", b="y"}` (Prometheus' label syntax).
fn parse_labels(text: &str) -> Result<Labels, String> {
    let inner = text.trim().strip_prefix('{').and_then(|t| t.strip_suffix('}')).ok_or("expected {…}")?;
    let mut labels = Labels::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or("expected name=\"value\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated escape".into()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated value".into()),
            }
        };
        labels.insert(name.trim().to_owned(), value);
        rest = after[end + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    Ok(labels)
}

/// Prometheus' `{a="x", b="y"}`.
fn labels_string(labels: &Labels) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// Go's `time.Time.String()` in UTC.
fn go_time(nanos: i64) -> String {
    let time = chrono::DateTime::from_timestamp_nanos(nanos);
    let mut text = time.format("%Y-%m-%d %H:%M:%S%.9f").to_string();
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    format!("{text} +0000 UTC")
}

fn decode(request: &Request) -> Result<Vec<PushedStream>, Reply> {
    let kind = request.header("content-type").unwrap_or_default();
    let bad = |m: String| Reply::text(400, &m);
    if kind.starts_with("application/x-protobuf") {
        use prost::Message;
        let raw = snap::raw::Decoder::new().decompress_vec(&request.body).map_err(|e| bad(format!("snappy: {e}")))?;
        let push = proto::PushRequest::decode(&raw[..]).map_err(|e| bad(format!("protobuf: {e}")))?;
        push.streams
            .into_iter()
            .map(|s| {
                let labels =
                    parse_labels(&s.labels).map_err(|e| bad(format!("error parsing labels {}: {e}", s.labels)))?;
                let entries = s
                    .entries
                    .into_iter()
                    .map(|e| {
                        let ts = e.timestamp.unwrap_or_default();
                        let metadata = e.structured_metadata.into_iter().map(|p| (p.name, p.value)).collect();
                        Stored { time: ts.seconds * 1_000_000_000 + i64::from(ts.nanos), line: e.line, metadata }
                    })
                    .collect();
                Ok((labels, entries))
            })
            .collect()
    } else if kind.starts_with("application/json") {
        let body: Value = serde_json::from_slice(&request.body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let streams = body["streams"].as_array().ok_or_else(|| bad("missing streams".into()))?;
        streams
            .iter()
            .map(|s| {
                let labels: Labels = s["stream"]
                    .as_object()
                    .ok_or_else(|| bad("stream must be an object".into()))?
                    .iter()
                    .map(|(k, v)| {
                        Ok((k.clone(), v.as_str().ok_or_else(|| bad("label values are strings".into()))?.to_owned()))
                    })
                    .collect::<Result<_, Reply>>()?;
                let values = s["values"].as_array().ok_or_else(|| bad("values must be an array".into()))?;
                let entries = values
                    .iter()
                    .map(|v| {
                        let time = v[0].as_str().and_then(|t| t.parse::<i64>().ok());
                        let time = time.ok_or_else(|| bad("timestamps are strings of nanoseconds".into()))?;
                        let line = v[1].as_str().ok_or_else(|| bad("lines are strings".into()))?.to_owned();
                        let metadata = v.get(2).and_then(Value::as_object).map_or_else(BTreeMap::new, |m| {
                            m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect()
                        });
                        Ok(Stored { time, line, metadata })
                    })
                    .collect::<Result<_, Reply>>()?;
                Ok((labels, entries))
            })
            .collect()
    } else {
        Err(Reply::text(415, &format!("unsupported Content-Type {kind:?}")))
    }
}

fn push(options: &LokiOptions, state: &mut LokiState, request: &Request) -> Reply {
    if request.method == "GET" && request.path == "/ready" {
        return Reply::text(200, "ready");
    }
    if request.method != "POST" || request.path != "/loki/api/v1/push" {
        return Reply::text(404, "404 page not found");
    }
    let tenant = match request.header("x-scope-orgid") {
        Some(t) => t.to_owned(),
        None if options.multi_tenant => return Reply::text(401, "no org id"),
        None => "fake".to_owned(),
    };
    let streams = match decode(request) {
        Ok(streams) => streams,
        Err(reply) => return reply,
    };
    for (labels, _) in &streams {
        if labels.is_empty() {
            return Reply::text(400, "error at least one label pair is required per stream");
        }
        if let Some(name) = labels.keys().find(|n| !valid_name(n)) {
            return Reply::text(400, &format!("error parsing labels: invalid label name {name:?}"));
        }
    }
    let mut last_error = None;
    for (labels, entries) in streams {
        let name = labels_string(&labels);
        let stored = state.streams.entry((tenant.clone(), labels)).or_default();
        let total = entries.len();
        let mut refused = Vec::new();
        for entry in entries {
            let newest = stored.iter().map(|e| e.time).max().unwrap_or(i64::MIN);
            if stored.iter().any(|e| e.time == entry.time && e.line == entry.line) {
                continue;
            }
            let reason = if options.ordered && entry.time < newest {
                Some("entry out of order".to_owned())
            } else if !options.ordered && entry.time < newest.saturating_sub(3_600_000_000_000) {
                Some(format!(
                    "entry too far behind, entry timestamp is: {}, oldest acceptable timestamp is: {}",
                    go_time(entry.time),
                    go_time(newest - 3_600_000_000_000)
                ))
            } else {
                None
            };
            match reason {
                Some(reason) => refused.push((entry.time, reason)),
                None => stored.push(entry),
            }
        }
        if !refused.is_empty() {
            let mut text = String::new();
            for (time, reason) in refused.iter().take(10) {
                text.push_str(&format!("entry with timestamp {} ignored, reason: '{reason}',\n", go_time(*time)));
            }
            text.push_str(&format!(
                "user '{tenant}', total ignored: {} out of {total} for stream: {name}",
                refused.len()
            ));
            last_error = Some(text);
        }
    }
    match last_error {
        Some(text) => Reply::text(400, &text),
        None => Reply { status: 204, content_type: "text/plain", headers: Vec::new(), body: Vec::new() },
    }
}
