//! The dead-letter queue of each sink.
//!
//! Events a sink cannot deliver arrive with their [`Failure`]. Each event gets a
//! [`DeadLetterRecord`] appended to its history; then:
//! - if something reads `<sink_id>.dead_letter` and the events have not already been
//!   dead-lettered by this same sink (no loops), they go there, carrying their finalizers, and
//!   the consumer resolves them;
//! - otherwise they are appended to the disk DLQ, `data_dir/dead_letter/<sink_id>/`, in segment
//!   files of mode 0600, and fsynced before they resolve as `Stored`. If that write fails they
//!   resolve as `Failed` (the sender is told).
//!
//! On disk, each event is a JSON envelope (version 1), one object per line:
//! `{"version":1,"sink_id","sink_type","reason","message","status","attempts","first_failure",
//! "last_failure","dead_lettered_at","source_id","event":{…},"history":[…]}`. A stalled sink's
//! diversion (its whole stream, flat out) writes binary segments instead: the shared fields
//! once per submission, the events in the disk buffer's codec (`sluice_buffers::dlq::segment`);
//! readers turn them into the same envelopes.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use sluice_buffers::dlq::segment::{self, Format};
use sluice_buffers::dlq::{self, DiskDlq, ENVELOPE_VERSION};
use sluice_core::LogEvent;
use sluice_core::ack::Outcome;
use sluice_core::dead_letter::{DeadLetterQueue, DeadLetterReason, Encoded, Failure};
use sluice_core::event::{DeadLetterRecord, resolve_all};
use sluice_core::ledger::ComponentLedger;
use sluice_core::log_limit::LogLimit;

use crate::topology::fanout::Fanout;

/// The fields an envelope shares with every other event of its submission: serialized once
/// per submission, then each event's own fields follow (see [`SinkDeadLetter::records`]).
#[derive(Serialize)]
struct Head<'a> {
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
}

/// One sink's dead-letter queue.
pub struct SinkDeadLetter {
    sink_id: String,
    sink_type: String,
    ledger: Arc<ComponentLedger>,
    output: tokio::sync::Mutex<Fanout>,
    disk: Arc<DiskDlq>,
    log_limit: LogLimit,
    /// The envelope buffer of the last disk write, reused (a stalled sink's whole stream can
    /// pass through here; fresh multi-megabyte buffers cost page faults).
    spare: std::sync::Mutex<Vec<u8>>,
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
            spare: std::sync::Mutex::new(Vec::new()),
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

    /// The fields every envelope of one submission shares, as a JSON object.
    fn head(&self, record: &DeadLetterRecord) -> Vec<u8> {
        let head = Head {
            version: ENVELOPE_VERSION,
            sink_id: &self.sink_id,
            sink_type: &self.sink_type,
            reason: &record.reason,
            message: &record.message,
            status: record.status,
            attempts: record.attempts,
            first_failure: record.first_failure,
            last_failure: record.last_failure,
            dead_lettered_at: Utc::now(),
        };
        serde_json::to_vec(&head).unwrap_or_default()
    }

    /// The buffer of the last disk write, emptied.
    fn buffer(&self) -> Vec<u8> {
        let mut out = self.spare.lock().map(|mut spare| std::mem::take(&mut *spare)).unwrap_or_default();
        out.clear();
        out
    }

    /// The records of one submission in `format`: one envelope line per event, or one binary
    /// batch. The shared head is serialized once; each event's body is written by the direct
    /// JSON writer or the codec (a stalled sink's whole stream can pass through here).
    fn records(&self, format: Format, events: &[LogEvent], record: &DeadLetterRecord) -> Vec<u8> {
        let mut out = self.buffer();
        let head = self.head(record);
        match format {
            Format::Lines => {
                out.reserve(events.len() * (head.len() + 512));
                events.iter().for_each(|event| segment::write_envelope(&mut out, &head, event));
            }
            Format::Binary => segment::write_batch(&mut out, &head, events),
        }
        out
    }

    /// The failure as recorded on each event; counts and logs it (rate-limited).
    fn record(&self, failure: &Failure, n: usize) -> DeadLetterRecord {
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
        DeadLetterRecord {
            reason: failure.reason.as_str().to_owned(),
            message: failure.message.clone(),
            status: failure.status,
            sink_id: self.sink_id.clone(),
            sink_type: self.sink_type.clone(),
            attempts: failure.attempts,
            first_failure: failure.first_failure,
            last_failure: failure.last_failure,
        }
    }

    /// Appends `records` of `n` events to the disk DLQ and fsyncs (off the runtime). Counts
    /// the events as dead-lettered, or as errored when the write fails; the caller resolves
    /// them by the result (`Stored` when true).
    async fn store(&self, format: Format, records: Vec<u8>, n: usize, reason: DeadLetterReason) -> bool {
        let disk = self.disk.clone();
        let bytes = records.len() as u64;
        let written = tokio::task::spawn_blocking(move || {
            let result = disk.append(format, &records);
            (result, records)
        })
        .await;
        let written = written.map(|(result, records)| {
            // Keep the buffer for the next write unless one event made it huge.
            if records.capacity() <= 64 << 20
                && let Ok(mut spare) = self.spare.lock()
            {
                *spare = records;
            }
            result
        });
        let error = match written {
            Ok(Ok(())) => {
                self.ledger.dead_lettered(n, reason.as_str());
                self.ledger.grow_dead_letter_queue(n as u64, bytes);
                return true;
            }
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        self.ledger.errored(n);
        self.ledger.error("dead_letter_write_failed", "sending");
        tracing::error!(
            component_id = self.sink_id.as_str(),
            events = n,
            dir = %self.disk.dir().display(),
            error,
            "Cannot store dead-lettered events on disk; counted as failed."
        );
        false
    }
}

fn outcome(stored: bool) -> Outcome {
    if stored { Outcome::Stored } else { Outcome::Failed }
}

impl DeadLetterQueue for SinkDeadLetter {
    fn submit(&self, mut events: Vec<LogEvent>, failure: Failure) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let n = events.len();
            if n == 0 {
                return;
            }
            let record = self.record(&failure, n);
            let looped = events.iter().any(|e| e.dead_letters().iter().any(|r| r.sink_id == self.sink_id));
            let mut output = self.output.lock().await;
            if !output.is_empty() && !looped {
                // Downstream, the failure travels in each event's history.
                for event in &mut events {
                    event.push_dead_letter(record.clone());
                }
                match output.send_all(events).await {
                    Ok(()) => {
                        self.ledger.dead_lettered(n, failure.reason.as_str());
                        return;
                    }
                    // Its readers were removed by a reload meanwhile: to disk after all.
                    Err(back) => {
                        events = back;
                        events.iter_mut().for_each(|e| drop(e.pop_dead_letter()));
                    }
                }
            }
            drop(output);
            // On disk, the envelope carries the failure and the earlier history.
            let format = match failure.reason {
                DeadLetterReason::Stalled => Format::Binary,
                _ => Format::Lines,
            };
            let records = self.records(format, &events, &record);
            let stored = self.store(format, records, n, failure.reason).await;
            resolve_all(events, outcome(stored));
        })
    }

    fn takes_encoded(&self) -> bool {
        // Busy (another submission holds it) counts as no: the caller sends events instead.
        self.output.try_lock().is_ok_and(|output| output.is_empty())
    }

    fn submit_encoded(&self, encoded: Encoded, failure: Failure) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let n = encoded.count;
            if n == 0 {
                return;
            }
            // A `.dead_letter` reader added by a reload since `takes_encoded`: these events
            // were encoded for the disk already, and are as safe there.
            let record = self.record(&failure, n);
            let mut out = self.buffer();
            segment::write_encoded_batch(&mut out, &self.head(&record), n, &encoded.bytes);
            let stored = self.store(Format::Binary, out, n, failure.reason).await;
            encoded.finalizers.resolve(outcome(stored));
        })
    }
}

#[cfg(test)]
mod tests {
    use sluice_core::event::EventMetadata;
    use sluice_core::ledger::ComponentKind;

    use super::*;

    #[test]
    fn envelopes_are_one_json_object_per_event_with_every_field() {
        let ledger = Arc::new(ComponentLedger::new("out".to_owned(), ComponentKind::Sink, "http"));
        let dlq = SinkDeadLetter::new("out", "http", ledger, Fanout::default(), Path::new("/nonexistent"));
        let body: vrl::value::Value =
            serde_json::from_str(r#"{"message":"quote \" and \\ and \n","n":7,"nested":{"a":[1,2.5,null,true]}}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        let mut earlier = LogEvent::from_value(body.clone(), EventMetadata::new("in", Utc::now()));
        let record = DeadLetterRecord {
            reason: "permanent".into(),
            message: "403 \"forbidden\"".into(),
            status: Some(403),
            sink_id: "out".into(),
            sink_type: "http".into(),
            attempts: 2,
            first_failure: Utc::now(),
            last_failure: Utc::now(),
        };
        earlier.push_dead_letter(record.clone());
        let plain = LogEvent::from_value(body.clone(), EventMetadata::new("in", Utc::now()));
        let lines = dlq.records(Format::Lines, &[plain, earlier], &record);
        let parsed: Vec<serde_json::Value> = String::from_utf8_lossy(&lines)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(parsed.len(), 2);
        for envelope in &parsed {
            assert_eq!(envelope["version"], ENVELOPE_VERSION);
            assert_eq!(envelope["sink_id"], "out");
            assert_eq!(envelope["reason"], "permanent");
            assert_eq!(envelope["message"], "403 \"forbidden\"");
            assert_eq!(envelope["status"], 403);
            assert_eq!(envelope["attempts"], 2);
            assert_eq!(envelope["source_id"], "in");
            assert_eq!(envelope["event"], serde_json::to_value(&body).unwrap_or_default());
        }
        assert!(parsed[0].get("history").is_none(), "no history, no field");
        assert_eq!(parsed[1]["history"][0]["reason"], "permanent");
    }

    #[test]
    fn a_binary_batch_reads_back_as_the_same_envelopes() {
        let ledger = Arc::new(ComponentLedger::new("out".to_owned(), ComponentKind::Sink, "http"));
        let dlq = SinkDeadLetter::new("out", "http", ledger, Fanout::default(), Path::new("/nonexistent"));
        let body: vrl::value::Value =
            serde_json::from_str(r#"{"message":"quote \" and \\","n":7}"#).unwrap_or_else(|e| panic!("{e}"));
        let record = DeadLetterRecord {
            reason: "stalled".into(),
            message: "no progress".into(),
            status: None,
            sink_id: "out".into(),
            sink_type: "http".into(),
            attempts: 1,
            first_failure: Utc::now(),
            last_failure: Utc::now(),
        };
        let mut earlier = LogEvent::from_value(body.clone(), EventMetadata::new("in", Utc::now()));
        earlier.push_dead_letter(record.clone());
        let events = [LogEvent::from_value(body, EventMetadata::new("in", Utc::now())), earlier];
        let parse = |line: &[u8]| -> serde_json::Value {
            let mut envelope: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| panic!("{e}"));
            envelope["dead_lettered_at"] = serde_json::Value::Null;
            envelope
        };
        let lines = dlq.records(Format::Lines, &events, &record);
        let lines: Vec<_> = lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(parse).collect();
        let binary = dlq.records(Format::Binary, &events, &record);
        let read = segment::read(Format::Binary, &binary);
        let read: Vec<_> = read.records.iter().map(|(_, line)| parse(line)).collect();
        assert_eq!(read, lines);
        assert!(binary.len() < lines.iter().map(|l| l.to_string().len()).sum::<usize>());
    }
}
