//! A sink's disk buffer in the topology:
//!
//! ```text
//! fan-out ─► memory channel ─► writer task ─► DiskSender ─► WAL ─► DiskReceiver ─► DiskInput ─► sink
//!            (back-pressure)   encodes chunks,                       decodes records, one
//!                              resolves them Stored                  notifier per record;
//!                              after the fsync                       acknowledged when safe
//! ```
//!
//! While the sink keeps up, the writer's chunks (finalizers taken out) come back to it as they
//! were, instead of being read back and decoded: every record is written and fsynced all the
//! same, and the log is read only after a restart or when the sink falls behind.
//!
//! Events count as *stored* for their sources only after the fsync that covers them. A record
//! leaves the disk only when the sink delivered or dead-lettered every event in it. Records
//! stored by an earlier run are counted as received when they are read. Damaged bytes go to
//! the sink's dead-letter queue (reason `buffer_corrupt`), raw (base64), and reading goes on.
//!
//! Reading and decoding run on their own task, a little ahead of the sink; `DiskInput::recv`
//! only takes a decoded record and gives it its notifier, and is cancel safe (the sink driver
//! uses it in `select!`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use sluice_buffers::MemoryReceiver;
use sluice_buffers::disk::{ChannelOptions, DiskReceiver, DiskSender, Fs, Item, Level, Received, WalOptions, channel};
use sluice_core::ack::{BatchFinalizers, BatchNotifier, EventFinalizer, Outcome};
use sluice_core::component::ChunkReceiver;
use sluice_core::dead_letter::{DeadLetterQueue, DeadLetterReason, Failure};
use sluice_core::event::EventMetadata;
use sluice_core::ledger::{BufferLevel, BufferProbe, ComponentLedger};
use sluice_core::shutdown::ShutdownSignal;
use sluice_core::{Chunk, LogEvent, codec};
use tokio::sync::mpsc;
use vrl::value::{ObjectMap, Value};

use crate::config::BufferConfig;

/// Most events in one record (the record header counts them in 16 bits).
const MAX_RECORD_EVENTS: usize = u16::MAX as usize;

/// `data_dir/buffer/<buffer.id or sink id>`.
pub fn buffer_dir(data_dir: &Path, sink_id: &str, config: &BufferConfig) -> std::path::PathBuf {
    data_dir.join("buffer").join(config.id.as_deref().unwrap_or(sink_id))
}

/// Opens a sink's disk buffer; returns the sink's input and the writer to run (it moves what
/// reaches `input` into the log and ends when `input` closes).
///
/// `backlog_counted`: the events already in the log are counted in `ledger` (the sink was
/// replaced by a reload in this process); otherwise they are new to it and counted as they
/// are read.
pub fn start(
    dir: &Path,
    config: &BufferConfig,
    input: MemoryReceiver<Chunk>,
    ledger: Arc<ComponentLedger>,
    dead_letter: Arc<dyn DeadLetterQueue>,
    interrupt: ShutdownSignal,
    backlog_counted: bool,
) -> std::io::Result<(DiskInput, BoxFuture<'static, ()>)> {
    let max_size = config.max_size.unwrap_or(256 * 1024 * 1024);
    let options = ChannelOptions {
        wal: WalOptions { max_size, segment_bytes: (max_size / 8).clamp(64 * 1024, 32 * 1024 * 1024) },
        sync_interval: Duration::from_millis(config.sync_interval_ms),
    };
    let (tx, rx, task) = channel::open(dir, Arc::new(Fs), options)?;
    let writer_ledger = ledger.clone();
    let writer = Box::pin(async move {
        // The log's task ends after the writer and the sink's input are gone and the last
        // acknowledgements are on disk; the drain waits for both.
        let log = tokio::spawn(task);
        write(input, tx, writer_ledger).await;
        let _ = log.await;
    });
    let (acks, mut outcomes) = mpsc::unbounded_channel::<(u64, Outcome)>();
    let acker = rx.acker();
    tokio::spawn(async move {
        while let Some((tag, outcome)) = outcomes.recv().await {
            // A failed record stays on disk and is read again after a restart.
            if outcome.is_safe() {
                let (id, events) = untag(tag);
                acker.ack(id, events);
            }
        }
    });
    let level = rx.level.clone();
    let (ready_tx, ready) = mpsc::channel(READ_AHEAD);
    let first_new_id = if backlog_counted { 0 } else { rx.first_new_id };
    let reader = Reader { first_new_id, rx, acks: acks.clone(), ledger: ledger.clone(), dead_letter };
    tokio::spawn(reader.run(ready_tx));
    Ok((DiskInput { ready, acks, ledger, level, interrupt }, writer))
}

/// A record's acknowledgement tag: its id and its event count (at most `u16::MAX`, so ids
/// have 48 bits: 2.8e14 records).
fn tag(id: u64, events: usize) -> u64 {
    (id << 16) | (events.min(MAX_RECORD_EVENTS) as u64)
}

fn untag(tag: u64) -> (u64, u16) {
    (tag >> 16, (tag & 0xffff) as u16)
}

/// The buffer gauges of a sink with a disk stage: events in its memory stage (or hand-off)
/// and on disk, bytes on disk, and the capacities that apply.
pub fn probe(
    level: Arc<Level>,
    stage: &BufferConfig,
    memory: impl Fn() -> (u64, u64) + Send + Sync + 'static,
    overflow: bool,
    memory_counts_events: bool,
) -> BufferProbe {
    let max_bytes = stage.max_size;
    Box::new(move || {
        let (queued, max) = memory();
        let in_memory = if memory_counts_events { queued } else { 0 };
        BufferLevel {
            events: Some(in_memory + level.events()),
            max_events: (overflow && memory_counts_events).then_some(max),
            bytes: Some(level.bytes()),
            max_bytes,
            on_disk: Some(level.events()),
        }
    })
}

/// Moves chunks from the memory channel into the log.
async fn write(mut input: MemoryReceiver<Chunk>, tx: DiskSender<Chunk>, ledger: Arc<ComponentLedger>) {
    // Each payload is sized from the last one's bytes per event (and a little more), so a
    // record is encoded without growing (a copy of all of it) and without doubling its size.
    let mut bytes_per_event = 256;
    while let Some(mut chunk) = input.recv().await {
        while !chunk.is_empty() {
            let rest = if chunk.len() > MAX_RECORD_EVENTS { chunk.split_off(MAX_RECORD_EVENTS) } else { Vec::new() };
            let n = chunk.len();
            let mut finalizers = BatchFinalizers::default();
            for event in &mut chunk {
                finalizers.push(event.take_finalizer());
            }
            let mut payload = Vec::with_capacity(n * bytes_per_event + 16);
            codec::encode_chunk(&chunk, &mut payload);
            bytes_per_event = payload.len() / n.max(1) + 32;
            let kept = std::mem::replace(&mut chunk, rest);
            let ledger = ledger.clone();
            let done = Box::new(move |stored: bool| {
                if stored {
                    finalizers.resolve(Outcome::Stored);
                } else {
                    ledger.errored(n);
                    ledger.error("buffer_write_failed", "receiving");
                    finalizers.resolve(Outcome::Failed);
                    tracing::error!(
                        component_id = ledger.id(),
                        events = n,
                        "Cannot store events in the disk buffer; counted as failed."
                    );
                }
            });
            if let Err(done) = tx.send(n as u16, std::mem::take(&mut payload), Some(kept), done).await {
                done(false);
            }
        }
    }
}

/// A record made ready for the sink: decoded, not yet counted or tracked.
struct Ready {
    id: u64,
    chunk: Chunk,
    /// Stored by an earlier run: new to this one's ledger.
    earlier_run: bool,
}

/// How many decoded records wait for the sink: decoding runs ahead of it, on another task.
const READ_AHEAD: usize = 8;

/// Reads and decodes records ahead of the sink, and quarantines damage. Ends when the log is
/// read to its end or the sink's input is gone.
struct Reader {
    rx: DiskReceiver<Chunk>,
    acks: mpsc::UnboundedSender<(u64, Outcome)>,
    first_new_id: u64,
    ledger: Arc<ComponentLedger>,
    dead_letter: Arc<dyn DeadLetterQueue>,
}

impl Reader {
    async fn run(mut self, out: mpsc::Sender<Ready>) {
        loop {
            let received = tokio::select! {
                received = self.rx.recv() => received,
                () = out.closed() => return,
            };
            let ready = match received {
                None => return,
                Some(Received::Kept { id, value }) => Ready { id, chunk: value, earlier_run: false },
                Some(Received::Read(Item::Record { id, payload, events })) => {
                    let payload = bytes::Bytes::from(payload);
                    match codec::decode_chunk(&payload) {
                        Ok(chunk) => Ready { id, chunk, earlier_run: id < self.first_new_id },
                        Err(err) => {
                            // Written by this run: its events were counted when they arrived.
                            let this_run = if id < self.first_new_id { 0 } else { events };
                            let where_ = format!("record {id}");
                            self.quarantine(&payload, where_, &err.to_string(), id..id + 1, u64::from(this_run)).await;
                            continue;
                        }
                    }
                }
                Some(Received::Read(Item::Corrupt { segment, offset, bytes, reason, lost, lost_events_this_run })) => {
                    let where_ = format!("{} offset {offset}", segment.display());
                    self.quarantine(&bytes, where_, reason, lost, lost_events_this_run).await;
                    continue;
                }
            };
            // A record not handed out (the sink stopped) was never acknowledged: it stays on
            // disk for the next start.
            if out.send(ready).await.is_err() {
                return;
            }
        }
    }

    /// Sends damaged bytes to the dead-letter queue; once they are stored there, the ids they
    /// swallowed are acknowledged.
    ///
    /// Ledger: damage left by an earlier run is one new event (the raw bytes), received and
    /// dead-lettered. Damage to `this_run` events (already received, in flight) settles them:
    /// the raw event stands for them, so it is not received again, and the rest of them are
    /// counted with it.
    async fn quarantine(&self, bytes: &[u8], where_: String, reason: &str, lost: std::ops::Range<u64>, this_run: u64) {
        let (notifier, mut outcome) = BatchNotifier::with_receiver();
        let (event, failure) = corrupt_event(self.ledger.id(), bytes, &where_, reason);
        let event = event.with_finalizer(EventFinalizer::new(notifier));
        if this_run == 0 {
            self.ledger.accept(1);
        }
        self.ledger.error("buffer_corrupt", "receiving");
        tracing::error!(
            component_id = self.ledger.id(),
            location = where_.as_str(),
            error = reason,
            bytes = bytes.len(),
            "Damaged bytes in the disk buffer; moved to the dead-letter queue, reading goes on."
        );
        self.dead_letter.submit(vec![event], failure).await;
        let stored = outcome.wait().await.is_safe();
        let rest = this_run.saturating_sub(1) as usize;
        if stored {
            self.ledger.dead_lettered(rest, DeadLetterReason::BufferCorrupt.as_str());
            // This run's events in the range leave the gauge with the first id.
            let mut events = this_run as usize;
            for id in lost {
                let _ = self.acks.send((tag(id, events), Outcome::Stored));
                events = 0;
            }
        } else {
            self.ledger.errored(rest);
        }
    }
}

/// Damaged bytes of a disk buffer as a dead-letter event (reason `buffer_corrupt`): the raw
/// bytes in `message` (base64), with `buffer_corrupt.location`, `.error` and `.bytes`. The
/// reader and `sluice buffer check --repair` both quarantine damage this way.
pub fn corrupt_event(sink_id: &str, bytes: &[u8], location: &str, reason: &str) -> (LogEvent, Failure) {
    let mut detail = ObjectMap::new();
    detail.insert("location".into(), Value::from(location));
    detail.insert("error".into(), Value::from(reason));
    detail.insert("bytes".into(), Value::from(bytes.len() as i64));
    let mut body = ObjectMap::new();
    body.insert(
        sluice_core::event::fields::message().into(),
        Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
    );
    body.insert("buffer_corrupt".into(), Value::Object(detail));
    let event = LogEvent::from_value(Value::Object(body), EventMetadata::new(sink_id, chrono::Utc::now()));
    let failure = Failure::now(DeadLetterReason::BufferCorrupt, format!("{reason} at {location}"), None);
    (event, failure)
}

/// The sink's input when its buffer is on disk.
pub struct DiskInput {
    ready: mpsc::Receiver<Ready>,
    acks: mpsc::UnboundedSender<(u64, Outcome)>,
    ledger: Arc<ComponentLedger>,
    level: Arc<Level>,
    /// Shutdown was asked for: records not handed out yet stay on disk for the next start.
    interrupt: ShutdownSignal,
}

impl DiskInput {
    /// What the disk buffer holds now.
    pub fn level(&self) -> Arc<Level> {
        self.level.clone()
    }
}

impl ChunkReceiver for DiskInput {
    fn recv(&mut self) -> BoxFuture<'_, Option<Chunk>> {
        Box::pin(async move {
            let next = tokio::select! {
                biased;
                () = self.interrupt.wait() => None,
                next = self.ready.recv() => next,
            };
            let Ready { id, mut chunk, earlier_run } = next?;
            if earlier_run {
                self.ledger.accept(chunk.len());
            }
            // One notifier per record: it is acknowledged once all its events are safe.
            let notifier = BatchNotifier::with_channel(self.acks.clone(), tag(id, chunk.len()));
            for event in &mut chunk {
                event.set_finalizer(EventFinalizer::new(notifier.clone()));
            }
            Some(chunk)
        })
    }
}

/// A sink's input with `when_full = "overflow"`: its memory stage and the disk stage that took
/// what memory had no room for, read side by side (order across the two is not kept).
pub struct Overflowing {
    memory: Option<Box<dyn ChunkReceiver>>,
    disk: Option<DiskInput>,
}

impl Overflowing {
    pub fn new(memory: Box<dyn ChunkReceiver>, disk: DiskInput) -> Self {
        Self { memory: Some(memory), disk: Some(disk) }
    }
}

impl ChunkReceiver for Overflowing {
    /// Cancel safe: both stages' `recv` are.
    fn recv(&mut self) -> BoxFuture<'_, Option<Chunk>> {
        Box::pin(async move {
            loop {
                let (from_memory, chunk) = match (self.memory.as_mut(), self.disk.as_mut()) {
                    (None, None) => return None,
                    (Some(memory), None) => (true, memory.recv().await),
                    (None, Some(disk)) => (false, disk.recv().await),
                    (Some(memory), Some(disk)) => tokio::select! {
                        chunk = memory.recv() => (true, chunk),
                        chunk = disk.recv() => (false, chunk),
                    },
                };
                match chunk {
                    Some(chunk) => return Some(chunk),
                    // That stage is finished; the other goes on.
                    None if from_memory => self.memory = None,
                    None => self.disk = None,
                }
            }
        })
    }
}
