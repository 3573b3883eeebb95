//! The dead-letter contract between sinks and the runtime.
//!
//! A sink that cannot deliver events hands them to its [`DeadLetterQueue`] with the
//! [`Failure`]. The queue takes over: it records the failure on each event, passes the events
//! to whatever reads `<sink_id>.dead_letter`, or else appends them to the disk DLQ under
//! `data_dir` and fsyncs. It resolves every event (`Stored` once durable, `Failed` if even that
//! fails) and counts it in the sink's ledger, so a sink never settles dead-lettered events
//! itself.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::LogEvent;
use crate::ack::{BatchFinalizers, Outcome};

/// Why events went to the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The destination rejected them for good (e.g. HTTP 400/401/403/422).
    Permanent,
    /// Still failing when the retry budget ran out.
    RetriesExhausted,
    /// They could not be encoded for this sink.
    EncodeError,
    /// The sink made no progress for `stall_timeout` while its siblings did.
    Stalled,
    /// A disk buffer record failed its checksum.
    BufferCorrupt,
    /// A source's input longer than its limit (a file line over `max_line_bytes`).
    Oversized,
    /// A source's input that is not in the format the source reads.
    ParseError,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::RetriesExhausted => "retries_exhausted",
            Self::EncodeError => "encode_error",
            Self::Stalled => "stalled",
            Self::BufferCorrupt => "buffer_corrupt",
            Self::Oversized => "oversized_line",
            Self::ParseError => "parse_error",
        }
    }
}

/// What went wrong, as recorded on each dead-lettered event.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: DeadLetterReason,
    pub message: String,
    /// The HTTP status, where there is one.
    pub status: Option<u16>,
    pub attempts: u32,
    pub first_failure: DateTime<Utc>,
    pub last_failure: DateTime<Utc>,
}

impl Failure {
    /// A failure that happened once, now.
    pub fn now(reason: DeadLetterReason, message: impl Into<String>, status: Option<u16>) -> Self {
        let now = Utc::now();
        Self { reason, message: message.into(), status, attempts: 1, first_failure: now, last_failure: now }
    }
}

/// Where a sink's undeliverable events go. Implemented by the runtime.
pub trait DeadLetterQueue: Send + Sync {
    /// Takes `events`, resolves them and counts them in the sink's ledger (see module docs).
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled call may leave events unresolved.
    fn submit(&self, events: Vec<LogEvent>, failure: Failure) -> BoxFuture<'_, ()>;

    /// Whether [`DeadLetterQueue::submit_encoded`] can take events now: they would go to
    /// the disk DLQ's binary form (nothing reads `<sink_id>.dead_letter`).
    fn takes_encoded(&self) -> bool {
        false
    }

    /// Takes events already encoded for the disk DLQ's binary form (a stalled sink's
    /// diversion, encoded by the fan-out from the events it shares, so the sink's own copy is
    /// never made): stores them, resolves their finalizers and counts them like `submit`.
    /// Only called when [`DeadLetterQueue::takes_encoded`] said so; a queue that cannot
    /// store them fails them (counted by the caller's ledger as errored).
    fn submit_encoded(&self, diverted: Encoded, failure: Failure) -> BoxFuture<'_, ()> {
        let _ = failure;
        diverted.finalizers.resolve(Outcome::Failed);
        Box::pin(std::future::ready(()))
    }
}

/// Events encoded for the disk DLQ's binary form, with their finalizers.
#[derive(Debug, Default)]
pub struct Encoded {
    pub count: usize,
    /// The events one after the other (`sluice_buffers::dlq::segment::encode_events`).
    pub bytes: Vec<u8>,
    pub finalizers: BatchFinalizers,
}

impl Encoded {
    /// Appends `other` (the same failure: one batch on disk).
    pub fn extend(&mut self, other: Encoded) {
        self.count += other.count;
        self.bytes.extend_from_slice(&other.bytes);
        self.finalizers.merge(other.finalizers);
    }
}
