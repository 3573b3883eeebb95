//! Splunk's indexer acknowledgements: a request's `ackId` is confirmed by polling
//! `/services/collector/ack` on the sink's channel. One poller asks for every pending id in
//! one query each `query_interval`; each request waits for its id's answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use sluice_net::http::HttpClient;
use tokio::sync::oneshot;

use crate::sinks::http_api;

pub struct AckPoller {
    pending: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

#[derive(Deserialize)]
struct AckAnswer {
    acks: HashMap<String, bool>,
}

/// Where and how to ask.
pub struct AckQuery {
    pub http: HttpClient,
    pub uri: http::Uri,
    pub channel: String,
    pub token: http::HeaderValue,
    pub interval: Duration,
}

impl AckPoller {
    /// Starts the poller; it stops when the last handle is dropped.
    pub fn start(query: AckQuery) -> Arc<Self> {
        let poller = Arc::new(Self { pending: Mutex::new(HashMap::new()) });
        let weak = Arc::downgrade(&poller);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(query.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(poller) = weak.upgrade() else { return };
                let ids: Vec<u64> = poller.pending.lock().map(|p| p.keys().copied().collect()).unwrap_or_default();
                if ids.is_empty() {
                    continue;
                }
                match ask(&query, &ids).await {
                    Ok(acked) => {
                        if let Ok(mut pending) = poller.pending.lock() {
                            for id in acked {
                                if let Some(done) = pending.remove(&id) {
                                    let _ = done.send(());
                                }
                            }
                        }
                    }
                    Err(error) => tracing::warn!(
                        error = error.as_str(),
                        "Cannot query Splunk's indexer acknowledgements; asking again."
                    ),
                }
            }
        });
        poller
    }

    /// Waits until `id` is confirmed, at most `limit`. False when it was not.
    pub async fn wait(&self, id: u64, limit: Duration) -> bool {
        let (done, confirmed) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, done);
        }
        let confirmed = tokio::time::timeout(limit, confirmed).await.is_ok_and(|r| r.is_ok());
        if !confirmed && let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
        confirmed
    }
}

/// One query: the ids Splunk says are indexed.
async fn ask(query: &AckQuery, ids: &[u64]) -> Result<Vec<u64>, String> {
    let body = serde_json::json!({ "acks": ids }).to_string();
    let request = http::Request::post(query.uri.clone())
        .header(http::header::AUTHORIZATION, query.token.clone())
        .header("X-Splunk-Request-Channel", query.channel.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = query.http.send(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = http_api::read_body(response).await?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", http_api::snippet(&body)));
    }
    let answer: AckAnswer = serde_json::from_slice(&body).map_err(|e| format!("unreadable answer: {e}"))?;
    Ok(answer.acks.into_iter().filter(|(_, ok)| *ok).filter_map(|(id, _)| id.parse().ok()).collect())
}
