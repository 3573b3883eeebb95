//! `dead_letter`: events from the disk dead-letter queue, for replay.
//!
//! Reads the segments of the chosen sinks' DLQs (`data_dir/dead_letter/<sink>/`) as they are
//! when the source starts, sends each stored event with its original body, and finishes. The
//! failure travels in the event's metadata (`%dead_letter.reason`, `.message`, `.status`,
//! `.sink_id`, `.sink_type`, `.attempts`, `.first_failure`, `.last_failure`,
//! `.dead_lettered_at`, `.source_id`) and in its dead-letter history, so a second failure at
//! the same sink goes back to the disk DLQ, never round a loop.
//!
//! Every event carries its own acknowledgement, whatever `acknowledgements` says: a record
//! whose outcome is delivered, stored again (a disk DLQ, later a disk buffer) or discarded by
//! an explicit rule is *confirmed*: written to the segment's progress file (fsynced) at once,
//! then moved to `archive/` when the segment is done. A record that fails stays in the DLQ.
//! A replay killed at any point and run again never re-sends a confirmed record
//! (`sluice_buffers::dlq::replay`). Segments a running sluice holds open are skipped.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sluice_buffers::dlq::replay::{self, PendingRecord, SegmentReplay};
use sluice_buffers::dlq::{self, store};
use sluice_core::ack::{BatchNotifier, EventFinalizer, Outcome};
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, SourceConfig, SourceContext, SourceTask};
use sluice_core::event::{DeadLetterRecord, EventMetadata};
use sluice_core::shutdown::ShutdownSignal;
use sluice_core::{Chunk, LogEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;
use vrl::value::{ObjectMap, Value};

/// Events per chunk when not rate-limited.
const CHUNK: usize = 500;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSourceConfig {
    /// Sinks whose DLQ to read. Default: every sink that has one.
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Only records with these reasons (`permanent`, `retries_exhausted`, ...). Default: all.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// The data directory holding `dead_letter/`. Default: the global `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// At most this many events per second. Default: as fast as the pipeline takes them.
    pub max_events_per_sec: Option<f64>,
    /// Read only: confirm nothing, move nothing, take no locks (`sluice dlq replay --dry-run`).
    #[serde(default)]
    pub dry_run: bool,
}

/// One stored envelope, as much of it as a replay needs.
#[derive(Deserialize)]
struct Envelope {
    sink_id: String,
    #[serde(default)]
    sink_type: String,
    reason: String,
    #[serde(default)]
    message: String,
    status: Option<u16>,
    #[serde(default)]
    attempts: u32,
    first_failure: Option<DateTime<Utc>>,
    last_failure: Option<DateTime<Utc>>,
    dead_lettered_at: Option<DateTime<Utc>>,
    #[serde(default)]
    source_id: String,
    event: Value,
    #[serde(default)]
    history: Vec<DeadLetterRecord>,
}

impl SourceConfig for DeadLetterSourceConfig {
    fn can_acknowledge(&self) -> bool {
        true
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        match self.max_events_per_sec {
            Some(rate) if !(rate > 0.0 && rate.is_finite()) => {
                vec![ConfigIssue::new("max_events_per_sec", "must be a positive number of events per second")]
            }
            _ => Vec::new(),
        }
    }

    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError> {
        let config = self.clone();
        let data_dir = config.data_dir.clone().unwrap_or_else(|| cx.globals.data_dir.clone());
        let SourceContext { id, mut out, mut shutdown, .. } = cx;
        Ok(Box::pin(async move {
            let sinks = if config.sinks.is_empty() {
                store::sinks(&data_dir).map_err(|err| {
                    tracing::error!(component_id = &*id, dir = %data_dir.display(), error = %err, "Cannot read the DLQ.");
                })?
            } else {
                config.sinks.clone()
            };
            let mut pacer = Pacer::new(config.max_events_per_sec);
            let mut totals = Totals::default();
            let mut recorders = Vec::new();
            'sinks: for sink in &sinks {
                let segments = match store::segments(&data_dir, sink) {
                    Ok(segments) => segments,
                    Err(err) => {
                        tracing::error!(component_id = &*id, sink, error = %err, "Cannot list DLQ segments.");
                        out.ledger().error("read_failed", "receiving");
                        continue;
                    }
                };
                if !config.dry_run {
                    let _ = replay::remove_orphans(&dlq::sink_dir(&data_dir, sink));
                }
                for segment in segments {
                    if shutdown.is_triggered() {
                        break 'sinks;
                    }
                    let (bookkeeping, pending) = match open(&segment, config.dry_run).await {
                        Ok(Some(opened)) => opened,
                        Ok(None) => {
                            totals.locked += 1;
                            tracing::warn!(component_id = &*id, segment = %segment.display(), "Skipping a DLQ segment a running sluice still holds; replay it later.");
                            continue;
                        }
                        Err(err) => {
                            out.ledger().error("read_failed", "receiving");
                            tracing::error!(component_id = &*id, segment = %segment.display(), error = %err, "Cannot read a DLQ segment.");
                            continue;
                        }
                    };
                    let (tx, rx) = mpsc::unbounded_channel();
                    if let Some(bookkeeping) = bookkeeping {
                        totals.earlier += bookkeeping.already_confirmed();
                        let archive = dlq::archive_dir(&data_dir, sink);
                        recorders.push(tokio::task::spawn_blocking(move || record(bookkeeping, rx, &archive)));
                    }
                    let stopped =
                        send_segment(&config, &id, pending, &tx, &mut out, &mut pacer, &mut shutdown, &mut totals)
                            .await;
                    if stopped {
                        break 'sinks;
                    }
                }
            }
            // Let the sinks finish, so every outcome arrives.
            drop(out);
            for recorder in recorders {
                match recorder.await {
                    Ok(Ok(done)) => totals.add(done),
                    Ok(Err(err)) => {
                        totals.bookkeeping_errors += 1;
                        tracing::error!(component_id = &*id, error = %err, "Cannot record replay progress; unconfirmed records stay in the DLQ and may be sent again.");
                    }
                    Err(err) => tracing::error!(component_id = &*id, error = %err, "Replay bookkeeping task failed."),
                }
            }
            tracing::info!(
                component_id = &*id,
                sent = totals.sent,
                confirmed = totals.confirmed,
                failed = totals.failed,
                remaining_in_dlq = totals.remaining,
                confirmed_by_earlier_run = totals.earlier,
                filtered_out = totals.filtered,
                unreadable = totals.unreadable,
                segments_in_use = totals.locked,
                dry_run = config.dry_run,
                "DLQ replay finished."
            );
            if totals.unreadable > 0 || totals.bookkeeping_errors > 0 { Err(()) } else { Ok(()) }
        }))
    }
}

async fn open(
    segment: &std::path::Path,
    dry_run: bool,
) -> std::io::Result<Option<(Option<SegmentReplay>, Vec<PendingRecord>)>> {
    let segment = segment.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || {
        if dry_run {
            return Ok(Some((None, replay::read_pending(&segment)?)));
        }
        Ok(SegmentReplay::open(&segment)?.map(|(bookkeeping, pending)| (Some(bookkeeping), pending)))
    })
    .await;
    opened.map_err(std::io::Error::other)?
}

/// Sends one segment's records. Returns true when shutdown stopped it.
#[allow(clippy::too_many_arguments)]
async fn send_segment(
    config: &DeadLetterSourceConfig,
    id: &str,
    pending: Vec<PendingRecord>,
    tx: &mpsc::UnboundedSender<(u64, Outcome)>,
    out: &mut sluice_core::component::SourceSender,
    pacer: &mut Pacer,
    shutdown: &mut ShutdownSignal,
    totals: &mut Totals,
) -> bool {
    let mut chunk: Chunk = Vec::with_capacity(pacer.chunk);
    let mut records = pending.into_iter().peekable();
    while records.peek().is_some() {
        for (index, line) in records.by_ref() {
            match serde_json::from_slice::<Envelope>(&line) {
                Ok(envelope) if config.reasons.is_empty() || config.reasons.contains(&envelope.reason) => {
                    let finalizer = if config.dry_run {
                        EventFinalizer::default()
                    } else {
                        EventFinalizer::new(BatchNotifier::with_channel(tx.clone(), u64::from(index)))
                    };
                    chunk.push(event(id, envelope, finalizer));
                }
                Ok(_) => totals.filtered += 1,
                Err(err) => {
                    totals.unreadable += 1;
                    out.ledger().error("unreadable_record", "receiving");
                    static LOG: sluice_core::log_limit::LogLimit =
                        sluice_core::log_limit::LogLimit::new(sluice_core::log_limit::INTERVAL);
                    if let Some(folded) = LOG.admit() {
                        tracing::warn!(
                            component_id = id,
                            record = index,
                            error = %err,
                            similar_since_last_line = folded,
                            "A DLQ record cannot be read; it stays in the DLQ."
                        );
                    }
                }
            }
            if chunk.len() >= pacer.chunk {
                break;
            }
        }
        if chunk.is_empty() {
            continue;
        }
        if !pacer.wait(chunk.len(), shutdown).await {
            sluice_core::event::resolve_all(chunk, Outcome::Failed);
            return true;
        }
        totals.sent += chunk.len();
        let next = Vec::with_capacity(pacer.chunk);
        if out.send(std::mem::replace(&mut chunk, next)).await.is_err() || shutdown.is_triggered() {
            return true;
        }
    }
    false
}

/// Builds the event a stored envelope describes.
fn event(id: &str, envelope: Envelope, finalizer: EventFinalizer) -> LogEvent {
    let mut metadata = EventMetadata::new(id, Utc::now());
    metadata.set_finalizer(finalizer);
    let mut body = envelope.event;
    // JSON has no timestamp type: give `timestamp` its type back.
    let timestamp_key = sluice_core::event::fields::timestamp();
    if let Value::Object(fields) = &mut body
        && let Some(text) = fields.get(timestamp_key).and_then(Value::to_str_lossy)
        && let Ok(t) = DateTime::parse_from_rfc3339(&text)
    {
        fields.insert(timestamp_key.into(), Value::Timestamp(t.to_utc()));
    }
    let mut event = LogEvent::from_value(body, metadata);
    let now = Utc::now();
    let record = DeadLetterRecord {
        reason: envelope.reason,
        message: envelope.message,
        status: envelope.status,
        sink_id: envelope.sink_id,
        sink_type: envelope.sink_type,
        attempts: envelope.attempts,
        first_failure: envelope.first_failure.unwrap_or(now),
        last_failure: envelope.last_failure.unwrap_or(now),
    };
    let mut failure = ObjectMap::new();
    failure.insert("reason".into(), Value::from(record.reason.as_str()));
    failure.insert("message".into(), Value::from(record.message.as_str()));
    failure.insert("status".into(), record.status.map_or(Value::Null, |s| Value::from(i64::from(s))));
    failure.insert("sink_id".into(), Value::from(record.sink_id.as_str()));
    failure.insert("sink_type".into(), Value::from(record.sink_type.as_str()));
    failure.insert("attempts".into(), Value::from(i64::from(record.attempts)));
    failure.insert("first_failure".into(), Value::Timestamp(record.first_failure));
    failure.insert("last_failure".into(), Value::Timestamp(record.last_failure));
    failure.insert("dead_lettered_at".into(), envelope.dead_lettered_at.map_or(Value::Null, Value::Timestamp));
    failure.insert("source_id".into(), Value::from(envelope.source_id));
    if let Value::Object(meta) = event.metadata_value_mut() {
        meta.insert("dead_letter".into(), Value::Object(failure));
    }
    for earlier in envelope.history {
        event.push_dead_letter(earlier);
    }
    event.push_dead_letter(record);
    event
}

/// Confirms records as their outcomes arrive, then archives the segment. Blocking; ends when
/// every notifier of the segment is gone.
fn record(
    mut bookkeeping: SegmentReplay,
    mut rx: mpsc::UnboundedReceiver<(u64, Outcome)>,
    archive: &std::path::Path,
) -> std::io::Result<Done> {
    let mut done = Done::default();
    let mut batch = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some((index, outcome)) = next {
            if outcome.is_safe() {
                batch.push(index as u32);
            } else {
                done.failed += 1;
            }
            next = rx.try_recv().ok();
        }
        done.confirmed += batch.len();
        bookkeeping.confirm(&batch)?;
        batch.clear();
    }
    let compaction = bookkeeping.finish(archive)?;
    done.remaining = compaction.remaining;
    Ok(done)
}

#[derive(Debug, Default)]
struct Done {
    confirmed: usize,
    failed: usize,
    remaining: usize,
}

#[derive(Debug, Default)]
struct Totals {
    sent: usize,
    confirmed: usize,
    failed: usize,
    remaining: usize,
    earlier: usize,
    filtered: usize,
    unreadable: usize,
    locked: usize,
    bookkeeping_errors: usize,
}

impl Totals {
    fn add(&mut self, done: Done) {
        self.confirmed += done.confirmed;
        self.failed += done.failed;
        self.remaining += done.remaining;
    }
}

/// Spaces chunks out to a rate.
struct Pacer {
    rate: Option<f64>,
    chunk: usize,
    start: Instant,
    sent: f64,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Self {
        // About ten chunks a second when rate-limited.
        let chunk = rate.map_or(CHUNK, |r| ((r / 10.0).ceil() as usize).clamp(1, CHUNK));
        Self { rate, chunk, start: Instant::now(), sent: 0.0 }
    }

    /// Waits until `n` more events may go. False when shutdown came first.
    async fn wait(&mut self, n: usize, shutdown: &mut ShutdownSignal) -> bool {
        if let Some(rate) = self.rate {
            let due = self.start + Duration::from_secs_f64(self.sent / rate);
            self.sent += n as f64;
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = shutdown.wait() => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pacer_holds_the_rate() {
        let mut pacer = Pacer::new(Some(100.0));
        assert_eq!(pacer.chunk, 10);
        let mut shutdown = ShutdownSignal::never();
        let start = Instant::now();
        for _ in 0..50 {
            assert!(pacer.wait(10, &mut shutdown).await);
        }
        // 500 events at 100/s: the last chunk may start at 4.9 s.
        assert_eq!(start.elapsed(), Duration::from_millis(4900));
    }

    #[test]
    fn an_envelope_becomes_its_event_with_the_failure_in_metadata() {
        let line = r#"{"version":1,"sink_id":"out","sink_type":"http","reason":"permanent","message":"HTTP 403","status":403,"attempts":1,"first_failure":"2026-11-22T02:40:00Z","last_failure":"2026-11-22T02:40:00Z","dead_lettered_at":"2026-11-22T02:40:01Z","source_id":"in","event":{"message":"hi","timestamp":"2026-11-22T02:39:59.5Z"}}"#;
        let envelope: Envelope = serde_json::from_slice(line.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let mut event = event("replay", envelope, EventFinalizer::default());
        assert_eq!(event.get("message"), Some(&Value::from("hi")));
        assert!(matches!(event.get("timestamp"), Some(Value::Timestamp(_))), "{:?}", event.get("timestamp"));
        assert_eq!(event.source_id(), "replay");
        assert_eq!(event.dead_letters().len(), 1);
        assert_eq!(event.dead_letters()[0].status, Some(403));
        let meta = event.metadata_value_mut().clone();
        let failure = match &meta {
            Value::Object(m) => m.get("dead_letter").cloned(),
            _ => None,
        };
        let Some(Value::Object(failure)) = failure else { panic!("no %dead_letter: {meta:?}") };
        assert_eq!(failure.get("reason"), Some(&Value::from("permanent")));
        assert_eq!(failure.get("status"), Some(&Value::from(403)));
    }
}
