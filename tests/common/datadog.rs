//! A strict local stand-in for Datadog's intake (Datadog cannot be run here). It follows the
//! published API:
//! - `POST /api/v2/logs` (Logs API v2): `DD-API-KEY` must be a valid key, else 403
//!   `{"errors":["Forbidden"]}`; `Content-Type` `application/json`, `text/plain` or
//!   `application/logplex-1`, else 415; `Content-Encoding` gzip, deflate or zstd; at most
//!   5 MB uncompressed (413) and 1,000 logs (400) a request; a JSON array of objects (or one
//!   object), else 400. Accepted requests get 202 `{}`. Logs over 1 MB are accepted and
//!   truncated, as Datadog does; they are counted.
//! - `POST /api/v2/series` (Metrics API v2): `DD-API-KEY` as above; a JSON body
//!   `{"series":[{"metric","type","points":[{"timestamp","value"}],"tags","resources",
//!   "interval"}]}` with `type` 0–3 (unspecified, count, rate, gauge), timestamps in seconds
//!   and not more than 10 minutes ahead, else 400; 202 `{"errors":[]}`.
//! - `POST /api/v1/distribution_points`: `{"series":[{"metric","points":[[ts,[values…]]],
//!   "tags":["k:v"],"host"}]}`, each value a number, else 400; 202 `{"status":"ok"}`.
//! - Metric bodies may be deflate (zlib) or gzip compressed.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::api_server::{ApiServer, Reply, Request};

#[derive(Default)]
pub struct DdState {
    /// Accepted logs by API key.
    pub logs: BTreeMap<String, Vec<Value>>,
    /// Accepted series by API key.
    pub series: BTreeMap<String, Vec<Value>>,
    /// Accepted distribution series by API key.
    pub distributions: BTreeMap<String, Vec<Value>>,
    /// Requests answered 403, by key.
    pub forbidden: BTreeMap<String, usize>,
    /// Logs over 1 MB that were truncated.
    pub truncated: usize,
    /// Every request: (path, key, status, logs in it).
    pub requests: Vec<(String, String, u16, usize)>,
}

pub struct Datadog {
    pub server: ApiServer,
    pub state: Arc<Mutex<DdState>>,
    pub keys: Arc<Mutex<HashSet<String>>>,
}

impl Datadog {
    /// A server accepting `keys`.
    pub fn start(keys: &[&str]) -> Self {
        let state = Arc::new(Mutex::new(DdState::default()));
        let keys = Arc::new(Mutex::new(keys.iter().map(|k| (*k).to_owned()).collect::<HashSet<_>>()));
        let (s, k) = (state.clone(), keys.clone());
        let server = ApiServer::start(move |request| {
            let key = request.header("dd-api-key").unwrap_or_default().to_owned();
            let valid = k.lock().map(|keys| keys.contains(&key)).unwrap_or(false);
            let mut state = s.lock().unwrap_or_else(|e| e.into_inner());
            let (reply, logs) = handle(&mut state, request, &key, valid);
            state.requests.push((request.path.clone(), key, reply.status, logs));
            reply
        });
        Self { server, state, keys }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Accepted logs of `key`.
    pub fn logs(&self, key: &str) -> Vec<Value> {
        self.state.lock().map(|s| s.logs.get(key).cloned().unwrap_or_default()).unwrap_or_default()
    }

    pub fn allow(&self, key: &str) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(key.to_owned());
        }
    }
}

fn bad_request(detail: &str) -> Reply {
    Reply::json(400, &json!({ "errors": [{ "status": "400", "title": "Bad Request", "detail": detail }] }))
}

fn handle(state: &mut DdState, request: &Request, key: &str, valid: bool) -> (Reply, usize) {
    // The API key check (the healthcheck's call).
    if request.method == "GET" && request.path == "/api/v1/validate" {
        return match valid {
            true => (Reply::json(200, &json!({ "valid": true })), 0),
            false => (Reply::json(403, &json!({ "errors": ["Forbidden"] })), 0),
        };
    }
    if request.method != "POST" {
        return (Reply::json(405, &json!({ "errors": ["Method Not Allowed"] })), 0);
    }
    if !valid {
        *state.forbidden.entry(key.to_owned()).or_default() += 1;
        return (Reply::json(403, &json!({ "errors": ["Forbidden"] })), 0);
    }
    let media = request.header("content-type").unwrap_or_default().split(';').next().unwrap_or_default().trim();
    match request.path.as_str() {
        "/api/v2/logs" => {
            if !matches!(media, "application/json" | "text/plain" | "application/logplex-1") {
                return (Reply::json(415, &json!({ "errors": ["Unsupported Media Type"] })), 0);
            }
            if request.body.len() > 5_000_000 {
                let reply = Reply::json(
                    413,
                    &json!({ "errors": [{ "status": "413", "title": "Request Entity Too Large", "detail": "payload exceeds 5MB" }] }),
                );
                return (reply, 0);
            }
            let logs = match serde_json::from_slice::<Value>(&request.body) {
                Ok(Value::Array(items)) => items,
                Ok(Value::Object(map)) => vec![Value::Object(map)],
                Ok(_) => return (bad_request("the payload must be a JSON array of log objects"), 0),
                Err(err) => return (bad_request(&format!("invalid JSON: {err}")), 0),
            };
            if logs.len() > 1000 {
                return (bad_request("maximum array size is 1000 entries"), logs.len());
            }
            if logs.iter().any(|l| !l.is_object()) {
                return (bad_request("each log must be a JSON object"), logs.len());
            }
            state.truncated += logs.iter().filter(|l| l.to_string().len() > 1_000_000).count();
            let n = logs.len();
            state.logs.entry(key.to_owned()).or_default().extend(logs);
            (Reply::json(202, &json!({})), n)
        }
        "/api/v2/series" => {
            if media != "application/json" {
                return (Reply::json(415, &json!({ "errors": ["Unsupported Media Type"] })), 0);
            }
            let body: Value = match serde_json::from_slice(&request.body) {
                Ok(body) => body,
                Err(err) => return (bad_request(&format!("invalid JSON: {err}")), 0),
            };
            let Some(series) = body.get("series").and_then(Value::as_array) else {
                return (bad_request("missing `series`"), 0);
            };
            let now = chrono::Utc::now().timestamp();
            for s in series {
                if !s.get("metric").is_some_and(Value::is_string) {
                    return (bad_request("each series needs a `metric` name"), 0);
                }
                if s.get("type").and_then(Value::as_u64).is_none_or(|t| t > 3) {
                    return (bad_request("`type` must be 0 (unspecified), 1 (count), 2 (rate) or 3 (gauge)"), 0);
                }
                let Some(points) = s.get("points").and_then(Value::as_array).filter(|p| !p.is_empty()) else {
                    return (bad_request("each series needs `points`"), 0);
                };
                for p in points {
                    let (Some(ts), Some(_)) =
                        (p.get("timestamp").and_then(Value::as_i64), p.get("value").and_then(Value::as_f64))
                    else {
                        return (
                            bad_request("each point needs an integer `timestamp` (seconds) and a numeric `value`"),
                            0,
                        );
                    };
                    if ts > now + 600 {
                        return (bad_request("points must not be more than ten minutes in the future"), 0);
                    }
                }
            }
            let n = series.len();
            state.series.entry(key.to_owned()).or_default().extend(series.iter().cloned());
            (Reply::json(202, &json!({ "errors": [] })), n)
        }
        "/api/v1/distribution_points" => {
            if media != "application/json" {
                return (Reply::json(415, &json!({ "errors": ["Unsupported Media Type"] })), 0);
            }
            let body: Value = match serde_json::from_slice(&request.body) {
                Ok(body) => body,
                Err(err) => return (bad_request(&format!("invalid JSON: {err}")), 0),
            };
            let Some(series) = body.get("series").and_then(Value::as_array) else {
                return (bad_request("missing `series`"), 0);
            };
            for s in series {
                if !s.get("metric").is_some_and(Value::is_string) {
                    return (bad_request("each series needs a `metric` name"), 0);
                }
                if s.get("tags").is_some_and(|t| !t.as_array().is_some_and(|t| t.iter().all(Value::is_string))) {
                    return (bad_request("`tags` must be a list of strings"), 0);
                }
                let Some(points) = s.get("points").and_then(Value::as_array).filter(|p| !p.is_empty()) else {
                    return (bad_request("each series needs `points`"), 0);
                };
                for p in points {
                    let valid = p.as_array().is_some_and(|p| {
                        p.len() == 2
                            && p[0].is_i64()
                            && p[1].as_array().is_some_and(|v| !v.is_empty() && v.iter().all(Value::is_number))
                    });
                    if !valid {
                        return (bad_request("each point is [timestamp, [values…]]"), 0);
                    }
                }
            }
            let n = series.len();
            state.distributions.entry(key.to_owned()).or_default().extend(series.iter().cloned());
            (Reply::json(202, &json!({ "status": "ok" })), n)
        }
        _ => (Reply::json(404, &json!({ "errors": ["Not Found"] })), 0),
    }
}
