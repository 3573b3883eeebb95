//! The dead-letter queue of each sink.
//!
//! Events a sink cannot deliver arrive with their [`Failure`]. Each event gets a
//! [`DeadLetterRecord`] appended to its history; then:
//! - if something reads `<sink_id>.dead_letter` and the events have not already been
//!   dead-lettered by this same sink (no loops), they go there, carrying their finalizers, and
//!   the consumer resolves them;
//! - otherwise they are appended to the disk DLQ, `data_dir/dead_letter/<sink_id>/`, one JSON
//!   envelope per line, in segment files of mode 0600, and fsynced before they resolve as
//!   `Stored`. If that write fails they resolve as `Failed` (the sender is told).
//!
//! Envelope format (version 1), one object per line:
//! `{"version":1,"sink_id","sink_type","reason","message","status","attempts","first_failure",
//! "last_failure","dead_lettered_at","source_id","event":{…},"history":[…]}`.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use sluice_buffers::dlq::{self, DiskDlq, ENVELOPE_VERSION};
use sluice_core::LogEvent;
use sluice_core::ack::Outcome;
use sluice_core::dead_letter::{DeadLetterQueue, Failure};
use sluice_core::event::{DeadLetterRecord, resolve_all};
use sluice_core::ledger::ComponentLedger;
use sluice_core::log_limit::LogLimit;
use vrl::value::Value;

use crate::topology::fanout::Fanout;

#[derive(Serialize)]
struct Envelope<'a> {
    version: u32,
    sink_id: &'a str,
    sink_type: &'a str,
    reason: &'a str,
    message: &'a str,
    status: Option<u16>,
    attempts: u32,
    first_failure: DateTime<Utc>,
    last_failure: DateTime<Utc>,
    dead_lettered_at: DateTime<Utc>,
    source_id: &'a str,
    event: &'a Value,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    history: &'a [DeadLetterRecord],
}

/// One sink's dead-letter queue.
pub struct SinkDeadLetter {
    sink_id: String,
    sink_type: String,
    ledger: Arc<ComponentLedger>,
    output: tokio::sync::Mutex<Fanout>,
    disk: Arc<DiskDlq>,
    log_limit: LogLimit,
}

impl SinkDeadLetter {
    pub fn new(sink_id: &str, sink_type: &str, ledger: Arc<ComponentLedger>, output: Fanout, data_dir: &Path) -> Self {
        Self {
            sink_id: sink_id.to_owned(),
            sink_type: sink_type.to_owned(),
            ledger,
            output: tokio::sync::Mutex::new(output),
            disk: Arc::new(DiskDlq::new(dlq::sink_dir(data_dir, sink_id))),
            log_limit: LogLimit::default(),
        }
    }

    /// Housekeeping until the returned task is aborted: closes the disk segment once it has
    /// been idle for a while, so `sluice dlq replay` can take it while this sluice keeps
    /// running, and measures the disk DLQ for the size gauges (at start, then every 30 s, so
    /// replays and purges by other processes show).
    pub fn spawn_housekeeping(&self) -> tokio::task::JoinHandle<()> {
        let disk = self.disk.clone();
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(dlq::writer::IDLE_CLOSE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let cache = Arc::new(std::sync::Mutex::new(dlq::store::SizeCache::default()));
            for n in 0u64.. {
                tick.tick().await;
                disk.close_if_idle(dlq::writer::IDLE_CLOSE);
                if n % 6 == 0 {
                    let (disk, cache) = (disk.clone(), cache.clone());
                    let measured = tokio::task::spawn_blocking(move || {
                        let mut cache = cache.lock().map_err(|_| std::io::Error::other("poisoned"))?;
                        cache.measure(disk.dir())
                    });
                    if let Ok(Ok((events, bytes))) = measured.await {
                        ledger.set_dead_letter_queue_size(events, bytes);
                    }
                }
            }
        })
    }

    fn envelopes(&self, events: &[LogEvent], record: &DeadLetterRecord) -> Vec<u8> {
        let mut lines = Vec::with_capacity(events.len() * 512);
        let now = Utc::now();
        for event in events {
            let envelope = Envelope {
                version: ENVELOPE_VERSION,
                sink_id: &self.sink_id,
                sink_type: &self.sink_type,
                reason: &record.reason,
                message: &record.message,
                status: record.status,
                attempts: record.attempts,
                first_failure: record.first_failure,
                last_failure: record.last_failure,
                dead_lettered_at: now,
                source_id: event.source_id(),
                event: event.value(),
                history: event.dead_letters(),
            };
            if serde_json::to_writer(&mut lines, &envelope).is_ok() {
                lines.push(b'\n');
            }
        }
        lines
    }
}

impl DeadLetterQueue for SinkDeadLetter {
    fn submit(&self, mut events: Vec<LogEvent>, failure: Failure) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let n = events.len();
            if n == 0 {
                return;
            }
            let record = DeadLetterRecord {
                reason: failure.reason.as_str().to_owned(),
                message: failure.message.clone(),
                status: failure.status,
                sink_id: self.sink_id.clone(),
                sink_type: self.sink_type.clone(),
                attempts: failure.attempts,
                first_failure: failure.first_failure,
                last_failure: failure.last_failure,
            };
            self.ledger.error(failure.reason.as_str(), "sending");
            if let Some(folded) = self.log_limit.admit() {
                tracing::warn!(
                    component_id = self.sink_id.as_str(),
                    events = n,
                    reason = failure.reason.as_str(),
                    status = failure.status,
                    error = failure.message.as_str(),
                    similar_since_last_line = folded,
                    "Events dead-lettered."
                );
            }
            let looped = events.iter().any(|e| e.dead_letters().iter().any(|r| r.sink_id == self.sink_id));
            let lines = self.envelopes(&events, &record);
            for event in &mut events {
                event.push_dead_letter(record.clone());
            }
            let mut output = self.output.lock().await;
            if !output.is_empty() && !looped {
                self.ledger.dead_lettered(n, failure.reason.as_str());
                output.send_all(events).await;
                return;
            }
            drop(output);
            let disk = self.disk.clone();
            let bytes = lines.len() as u64;
            let written = tokio::task::spawn_blocking(move || disk.append(&lines)).await;
            match written {
                Ok(Ok(())) => {
                    resolve_all(events, Outcome::Stored);
                    self.ledger.dead_lettered(n, failure.reason.as_str());
                    self.ledger.grow_dead_letter_queue(n as u64, bytes);
                }
                Ok(Err(err)) => self.fail(events, &err.to_string()),
                Err(err) => self.fail(events, &err.to_string()),
            }
        })
    }
}

impl SinkDeadLetter {
    fn fail(&self, events: Vec<LogEvent>, error: &str) {
        let n = events.len();
        resolve_all(events, Outcome::Failed);
        self.ledger.errored(n);
        self.ledger.error("dead_letter_write_failed", "sending");
        tracing::error!(
            component_id = self.sink_id.as_str(),
            events = n,
            dir = %self.disk.dir().display(),
            error,
            "Cannot store dead-lettered events on disk; counted as failed."
        );
    }
}
