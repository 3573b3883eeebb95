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

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use sluice_core::LogEvent;
use sluice_core::ack::Outcome;
use sluice_core::dead_letter::{DeadLetterQueue, Failure};
use sluice_core::event::{DeadLetterRecord, resolve_all};
use sluice_core::ledger::ComponentLedger;
use sluice_core::log_limit::LogLimit;
use vrl::value::Value;

use crate::topology::fanout::Fanout;

/// Segments roll over past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Current envelope version.
pub const ENVELOPE_VERSION: u32 = 1;

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

/// The directory of one sink's disk DLQ.
pub fn sink_dir(data_dir: &Path, sink_id: &str) -> PathBuf {
    data_dir.join("dead_letter").join(sink_id)
}

struct Segment {
    file: File,
    bytes: u64,
}

/// Append-only segment files for one sink.
pub struct DiskDlq {
    dir: PathBuf,
    segment: Mutex<Option<Segment>>,
}

impl DiskDlq {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, segment: Mutex::new(None) }
    }

    fn open_segment(&self) -> std::io::Result<Segment> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
        let path = self.dir.join(format!("segment-{stamp}.jsonl"));
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
        // Make the new file's name durable too.
        File::open(&self.dir)?.sync_all()?;
        Ok(Segment { file, bytes: 0 })
    }

    /// Appends `lines` and fsyncs them. Blocking.
    pub fn append(&self, lines: &[u8]) -> std::io::Result<()> {
        let mut guard = self.segment.lock().map_err(|_| std::io::Error::other("DLQ lock poisoned"))?;
        if guard.as_ref().is_none_or(|s| s.bytes >= SEGMENT_BYTES) {
            *guard = Some(self.open_segment()?);
        }
        let segment = guard.as_mut().ok_or_else(|| std::io::Error::other("no DLQ segment"))?;
        let written = segment.file.write_all(lines).and_then(|()| segment.file.sync_data());
        if written.is_err() {
            // Start a fresh segment next time; the failed tail may be torn.
            *guard = None;
        } else {
            segment.bytes += lines.len() as u64;
        }
        written
    }
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
            disk: Arc::new(DiskDlq::new(sink_dir(data_dir, sink_id))),
            log_limit: LogLimit::default(),
        }
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
            let written = tokio::task::spawn_blocking(move || disk.append(&lines)).await;
            match written {
                Ok(Ok(())) => {
                    resolve_all(events, Outcome::Stored);
                    self.ledger.dead_lettered(n, failure.reason.as_str());
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
            dir = %self.disk.dir.display(),
            error,
            "Cannot store dead-lettered events on disk; counted as failed."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_private_and_appended() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dlq = DiskDlq::new(dir.path().join("dead_letter/out"));
        dlq.append(b"{\"a\":1}\n").unwrap_or_else(|e| panic!("{e}"));
        dlq.append(b"{\"a\":2}\n").unwrap_or_else(|e| panic!("{e}"));
        let files: Vec<_> = std::fs::read_dir(dir.path().join("dead_letter/out"))
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok())
            .collect();
        assert_eq!(files.len(), 1);
        let meta = files[0].metadata().unwrap_or_else(|e| panic!("{e}"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(files[0].path()).unwrap_or_default(), "{\"a\":1}\n{\"a\":2}\n");
    }
}
