//! What the `file` and `kubernetes_logs` sources share: the hand-off from the tail service's
//! thread to the source's task, and the task that forwards events and dead letters.
//!
//! ```text
//! tail thread: Reader::pieces ─► Outbox (≤ CHUNK lines or events) ─► bounded queue ─► forward task ─► SourceSender
//!                                        └─ oversized lines ────────────────────────────────► the source's DLQ
//! ```
//!
//! Every line leaves the thread with a finalizer from [`Acks::finalizer`], so the file's
//! position moves only once it is acknowledged. A line that cannot be handed over (the source
//! is stopping) is resolved as failed: it stays before the checkpoint and is read again after
//! a restart.
//!
//! Readers hand over lines ([`Lines`]), not events: the source's task builds the events
//! ([`BuildEvents`]), so they are allocated on a runtime worker like the sinks that free
//! them (built on the tail thread and freed on a worker, every event paid for a cross-thread
//! free: half the CPU of `file → blackhole`).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use sluice_core::Chunk;
use sluice_core::ack::{EventFinalizer, Outcome};
use sluice_core::component::{SourceContext, wait_ready};
use sluice_core::dead_letter::{DeadLetterReason, Failure};
use sluice_core::event::{EventMetadata, LogEvent, resolve_all};
use sluice_file_tail::lines::Piece;
use sluice_file_tail::multiline::Message;
use sluice_file_tail::tail::{Acks, Subscription};
use tokio::sync::mpsc;
use vrl::value::{ObjectMap, Value};

/// Most events per chunk handed to the pipeline.
pub const CHUNK: usize = 512;
/// Chunks queued between the tail thread and the source's task.
const QUEUE: usize = 8;

/// What the tail thread hands to the source's task.
pub enum Out {
    /// Lines of files, for [`BuildEvents`].
    Lines(Vec<Lines>),
    /// Lines that cannot be events (too long, unparsable), for the DLQ, with why.
    DeadLetters(Chunk, Failure),
}

/// Messages of one file that share a finalizer.
pub struct Lines {
    /// The file's path (shared by the events made of these lines).
    pub path: Bytes,
    pub messages: Vec<Message>,
    /// One per message when the reader parsed them (container logs); empty otherwise.
    pub meta: Vec<Meta>,
    pub finalizer: EventFinalizer,
}

/// What a container log line says besides its message.
pub struct Meta {
    pub stream: Bytes,
    pub time: Option<chrono::DateTime<chrono::Utc>>,
}

/// Turns [`Lines`] into events, in the source's task.
pub trait BuildEvents: Send + 'static {
    /// Appends an event per message to `out`; each carries a clone of the finalizer.
    fn build(&mut self, lines: Lines, out: &mut Chunk);
}

/// The tail thread's end of the hand-off.
pub struct Outbox {
    tx: mpsc::Sender<Out>,
    lines: Vec<Lines>,
    pending_lines: usize,
    source_id: Arc<str>,
}

impl Outbox {
    pub fn new(source_id: Arc<str>) -> (Self, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx, lines: Vec::new(), pending_lines: 0, source_id }, rx)
    }

    /// Hands over the messages of file `file` (with what the reader parsed of each, or
    /// nothing), to become events in the source's task: the file's position may pass `end`
    /// once they are acknowledged. With no message (everything held by an open multiline
    /// message or partial line) the position just moves to `end`.
    pub fn hand_over(
        &mut self,
        file: u64,
        path: &Path,
        (messages, meta): (Vec<Message>, Vec<Meta>),
        end: u64,
        acks: &mut Acks<'_>,
    ) {
        if messages.is_empty() {
            acks.settle(file, end);
            return;
        }
        self.pending_lines += messages.len();
        let path = Bytes::from(path.to_string_lossy().into_owned());
        let finalizer = acks.finalizer(file, end);
        self.lines.push(Lines { path, messages, meta, finalizer });
        if self.pending_lines >= CHUNK {
            self.flush();
        }
    }

    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 1
    }

    /// Hands what was gathered over (waits for room: the tail thread checked there was).
    pub fn flush(&mut self) {
        if !self.lines.is_empty() {
            self.pending_lines = 0;
            let lines = std::mem::take(&mut self.lines);
            self.send(Out::Lines(lines));
        }
    }

    /// An oversized line for the DLQ: its first bytes, where it was and how long it was.
    pub fn oversized(&mut self, path: &Path, piece: &Piece, finalizer: EventFinalizer) {
        let Piece::Oversized { start, head, len, .. } = piece else {
            finalizer.release_unused();
            return;
        };
        let failure = Failure::now(
            DeadLetterReason::Oversized,
            format!("line of {len} bytes, longer than max_line_bytes; its first {} bytes are kept", head.len()),
            None,
        );
        let mut event = self.line_event(path, *start, head.clone());
        event.insert("line_bytes", Value::from(*len as i64));
        self.flush();
        self.send(Out::DeadLetters(vec![event.with_finalizer(finalizer)], failure));
    }

    /// A line the source cannot make an event of, for the DLQ, as it was.
    pub fn dead_letter(&mut self, path: &Path, start: u64, line: Bytes, failure: Failure, finalizer: EventFinalizer) {
        let event = self.line_event(path, start, line).with_finalizer(finalizer);
        self.flush();
        self.send(Out::DeadLetters(vec![event], failure));
    }

    fn line_event(&self, path: &Path, start: u64, message: Bytes) -> LogEvent {
        let mut body = ObjectMap::new();
        body.insert(sluice_core::event::fields::message().into(), Value::Bytes(message));
        body.insert("file".into(), Value::from(path.to_string_lossy().as_ref()));
        body.insert("offset".into(), Value::from(start as i64));
        LogEvent::from_value(Value::Object(body), EventMetadata::new(&self.source_id, chrono::Utc::now()))
    }

    fn send(&self, out: Out) {
        if let Err(err) = self.tx.blocking_send(out) {
            // The source is stopping: these lines were not handed on; they are read again
            // after a restart (their position never passes them).
            let n = match err.0 {
                Out::DeadLetters(events, _) => {
                    let n = events.len();
                    resolve_all(events, Outcome::Failed);
                    n
                }
                Out::Lines(lines) => lines
                    .into_iter()
                    .map(|l| {
                        l.finalizer.resolve(Outcome::Failed);
                        l.messages.len()
                    })
                    .sum(),
            };
            tracing::warn!(
                component_id = &*self.source_id,
                lines = n,
                "Lines not handed on because the source is stopping; their position stays before them and they are read again after a restart."
            );
        }
    }
}

/// The source's task: starts the subscription once the topology is built, forwards chunks
/// and dead letters, and on shutdown stops it, lets the pipeline drain, and waits until the
/// last positions are written.
pub async fn forward(
    cx: SourceContext,
    mut subscription: Subscription,
    mut rx: mpsc::Receiver<Out>,
    mut builder: Box<dyn BuildEvents>,
) -> Result<(), ()> {
    let SourceContext { mut out, mut shutdown, mut ready, dead_letter, .. } = cx;
    tokio::select! {
        () = wait_ready(&mut ready) => subscription.start(),
        () = shutdown.wait() => {}
    }
    let mut stopping = false;
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.wait(), if !stopping => {
                stopping = true;
                subscription.stop();
                continue;
            }
            next = rx.recv() => next,
        };
        match next {
            Some(Out::Lines(batches)) => {
                let read: u64 = batches.iter().flat_map(|b| &b.messages).map(|m| m.end.saturating_sub(m.start)).sum();
                out.ledger().received_bytes(read as usize);
                let mut chunk = Vec::with_capacity(batches.iter().map(|b| b.messages.len()).sum());
                for lines in batches {
                    builder.build(lines, &mut chunk);
                }
                if out.send(chunk).await.is_err() && !stopping {
                    stopping = true;
                    subscription.stop();
                }
            }
            Some(Out::DeadLetters(events, failure)) => {
                out.ledger().accept(events.len());
                dead_letter.submit(events, failure).await;
            }
            None => break,
        }
    }
    // Downstream drains once this sender is gone; the positions follow the outcomes.
    drop(out);
    subscription.finished().await;
    Ok(())
}
