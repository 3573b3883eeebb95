//! A strict local stand-in for Splunk's HTTP Event Collector (Splunk cannot be installed
//! here). It follows the published API:
//! - `Authorization: Splunk <token>`: missing → 401 `{"text":"Token is required","code":2}`,
//!   unknown → 403 `{"text":"Invalid token","code":4}`.
//! - With indexer acknowledgement on (per token), every data request needs
//!   `X-Splunk-Request-Channel` (or `?channel=`) holding a GUID: missing → 400 code 10 "Data
//!   channel is missing", not a GUID → 400 code 11 "Invalid data channel".
//! - `POST /services/collector/event`: concatenated JSON event objects; each needs a
//!   non-blank `event` (400 code 12 "Event field is required" / 13 "Event field cannot be
//!   blank", with `invalid-event-number`); `time`, if any, a number of epoch seconds or a
//!   string of one; `index` one the token may write (400 code 7 "Incorrect index"); invalid
//!   JSON → 400 code 6 "Invalid data format". Accepted: `{"text":"Success","code":0}` plus
//!   `"ackId":N` with acknowledgement on.
//! - `POST /services/collector/raw`: lines; metadata from the query.
//! - `POST /services/collector/ack?channel=`: `{"acks":[ids]}` → `{"acks":{"id":bool}}`; with
//!   acknowledgement off, 400 code 14 "ACK is disabled".
//! - Events count as indexed when their ack id is first reported true (or at once without
//!   acknowledgement).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use super::api_server::{ApiServer, Reply, Request};

/// When an ack id is reported indexed: `Some(n)` after `n` queries that asked for it, `None`
/// never. Decided from the request's events.
pub type AckRule = dyn Fn(&[Value]) -> Option<usize> + Send + Sync;

struct Pending {
    events: Vec<Value>,
    queries_left: Option<usize>,
}

#[derive(Default)]
pub struct HecState {
    /// Indexed events, and when they were reported indexed.
    pub indexed: Vec<(Value, Instant)>,
    /// Events accepted whose ack id was never reported (yet).
    pub unconfirmed: usize,
    /// Data requests answered: (path, status).
    pub requests: Vec<(String, u16)>,
    /// Ack queries answered.
    pub ack_queries: usize,
    pending: HashMap<(String, u64), Pending>,
    next_ack: HashMap<String, u64>,
}

pub struct Splunk {
    pub server: ApiServer,
    pub state: Arc<Mutex<HecState>>,
}

pub struct HecOptions {
    pub tokens: Vec<&'static str>,
    pub indexer_ack: bool,
    pub indexes: Vec<&'static str>,
}

impl Splunk {
    pub fn start(options: HecOptions, rule: impl Fn(&[Value]) -> Option<usize> + Send + Sync + 'static) -> Self {
        let state = Arc::new(Mutex::new(HecState::default()));
        let s = state.clone();
        let rule: Arc<AckRule> = Arc::new(rule);
        let server = ApiServer::start(move |request| {
            let mut state = s.lock().unwrap_or_else(|e| e.into_inner());
            let reply = handle(&options, &mut state, &*rule, request);
            if !request.path.ends_with("/ack") {
                state.requests.push((request.path.clone(), reply.status));
            }
            reply
        });
        Self { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn indexed(&self) -> Vec<(Value, Instant)> {
        self.state.lock().map(|s| s.indexed.clone()).unwrap_or_default()
    }
}

fn error(status: u16, code: u64, text: &str) -> Reply {
    Reply::json(status, &json!({ "text": text, "code": code }))
}

fn is_guid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn handle(options: &HecOptions, state: &mut HecState, rule: &AckRule, request: &Request) -> Reply {
    // The health endpoint: with a token, the token must be valid.
    if request.method == "GET" && request.path.trim_end_matches('/') == "/services/collector/health/1.0" {
        return match request.header("authorization").and_then(|a| a.strip_prefix("Splunk ")) {
            Some(token) if !options.tokens.contains(&token) => error(403, 4, "Invalid token"),
            _ => Reply::json(200, &json!({ "text": "HEC is healthy", "code": 17 })),
        };
    }
    if request.method != "POST" {
        return error(405, 0, "Method Not Allowed");
    }
    let Some(token) = request.header("authorization").and_then(|a| a.strip_prefix("Splunk ")) else {
        return error(401, 2, "Token is required");
    };
    if !options.tokens.contains(&token) {
        return error(403, 4, "Invalid token");
    }
    let channel = request.header("x-splunk-request-channel").or(request.param("channel")).map(str::to_owned);
    let path = request.path.trim_end_matches('/');
    if path == "/services/collector/ack" {
        if !options.indexer_ack {
            return error(400, 14, "ACK is disabled");
        }
        let Some(channel) = channel else { return error(400, 10, "Data channel is missing") };
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let Some(ids) = body["acks"].as_array() else { return error(400, 6, "Invalid data format") };
        state.ack_queries += 1;
        let mut acks = BTreeMap::new();
        for id in ids.iter().filter_map(Value::as_u64) {
            let key = (channel.clone(), id);
            let done = match state.pending.get_mut(&key) {
                Some(pending) => match &mut pending.queries_left {
                    Some(0) => true,
                    Some(n) => {
                        *n -= 1;
                        *n == 0
                    }
                    None => false,
                },
                None => false,
            };
            if done && let Some(pending) = state.pending.remove(&key) {
                let now = Instant::now();
                state.unconfirmed -= pending.events.len();
                state.indexed.extend(pending.events.into_iter().map(|e| (e, now)));
            }
            acks.insert(id.to_string(), done);
        }
        return Reply::json(200, &json!({ "acks": acks }));
    }
    if options.indexer_ack {
        match &channel {
            None => return error(400, 10, "Data channel is missing"),
            Some(c) if !is_guid(c) => return error(400, 11, "Invalid data channel"),
            _ => {}
        }
    }
    let events = match path {
        "/services/collector/event" | "/services/collector" | "/services/collector/event/1.0" => {
            match parse_events(options, &request.body) {
                Ok(events) => events,
                Err(reply) => return reply,
            }
        }
        "/services/collector/raw" | "/services/collector/raw/1.0" => String::from_utf8_lossy(&request.body)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                let meta = |k: &str| request.param(k).map(str::to_owned);
                json!({ "event": line, "index": meta("index"), "sourcetype": meta("sourcetype"), "source": meta("source"), "host": meta("host") })
            })
            .collect(),
        _ => return error(404, 404, "The requested URL was not found on this server."),
    };
    if !options.indexer_ack {
        let now = Instant::now();
        state.indexed.extend(events.into_iter().map(|e| (e, now)));
        return Reply::json(200, &json!({ "text": "Success", "code": 0 }));
    }
    let channel = channel.unwrap_or_default();
    let id = state.next_ack.entry(channel.clone()).or_insert(0);
    let ack = *id;
    *id += 1;
    state.unconfirmed += events.len();
    let queries_left = rule(&events);
    state.pending.insert((channel, ack), Pending { events, queries_left });
    Reply::json(200, &json!({ "text": "Success", "code": 0, "ackId": ack }))
}

fn parse_events(options: &HecOptions, body: &[u8]) -> Result<Vec<Value>, Reply> {
    let mut events = Vec::new();
    for (n, item) in serde_json::Deserializer::from_slice(body).into_iter::<Value>().enumerate() {
        let invalid =
            |code: u64, text: &str| Reply::json(400, &json!({ "text": text, "code": code, "invalid-event-number": n }));
        let Ok(event) = item else { return Err(invalid(6, "Invalid data format")) };
        match event.get("event") {
            None => return Err(invalid(12, "Event field is required")),
            Some(Value::String(s)) if s.trim().is_empty() => return Err(invalid(13, "Event field cannot be blank")),
            Some(Value::Null) => return Err(invalid(13, "Event field cannot be blank")),
            _ => {}
        }
        match event.get("time") {
            None | Some(Value::Number(_)) => {}
            Some(Value::String(s)) if s.parse::<f64>().is_ok() => {}
            Some(_) => return Err(invalid(6, "Invalid data format")),
        }
        if let Some(index) = event.get("index").and_then(Value::as_str)
            && !options.indexes.contains(&index)
        {
            return Err(invalid(7, "Incorrect index"));
        }
        events.push(event);
    }
    if events.is_empty() {
        return Err(error(400, 5, "No data"));
    }
    Ok(events)
}
