//! Fan-out: one output port to every consumer's input buffer.
//!
//! Invariants: each consumer gets its own copy of every chunk (the last consumer gets the
//! original); each copy is counted as received by that consumer's ledger at enqueue, so events
//! waiting in a buffer are in that consumer's `in_flight`; a copy that cannot be enqueued is
//! resolved and counted (failed when the consumer is gone, discarded under `buffer_full` when
//! the consumer chose `drop_newest`), never dropped silently.
//!
//! Isolation (G4): a sink whose buffer stays full for `stall_timeout` while a sibling accepts
//! is diverted: its copies go to a task that writes them to its dead-letter queue. While it
//! stays full and its DLQ stores on disk, no copy is made at all: the chunk is encoded for the
//! DLQ's binary form from the events the siblings get, and only the finalizers are shared.
//!
//! Reload: the consumers sit behind an async lock that the owner takes once per chunk
//! (uncontended: one atomic operation). A reload takes it through a [`FanoutHandle`] to add or
//! remove consumers; while it holds the lock, the owner waits at its next chunk (lossless
//! back-pressure), so a consumer can be replaced without a chunk going to neither.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_buffers::{MemorySender, TrySendError};
use sluice_core::Chunk;
use sluice_core::ack::BatchFinalizers;
use sluice_core::ack::Outcome;
use sluice_core::component::ChunkSender;
use sluice_core::dead_letter::{DeadLetterQueue, DeadLetterReason, Encoded, Failure};
use sluice_core::event::resolve_all;
use sluice_core::ledger::ComponentLedger;
use sluice_core::log_limit::LogLimit;

use crate::config::WhenFull;
use crate::tap::TapPoint;

/// Where a sink's events go when it stalls; set once the sink is built.
pub type DeadLetterSlot = Arc<OnceLock<Arc<dyn DeadLetterQueue>>>;

/// The tasks writing stalled sinks' copies to their dead-letter queues; the topology awaits
/// them in its drain.
#[derive(Clone, Default)]
pub struct Diversions(Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Diversions {
    fn push(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut tasks) = self.0.lock() {
            tasks.push(task);
        }
    }

    /// Waits for every diversion task (they end once their fan-outs are gone).
    pub async fn join(&self) {
        loop {
            let next = self.0.lock().ok().and_then(|mut tasks| tasks.pop());
            match next {
                Some(task) => {
                    let _ = task.await;
                }
                None => return,
            }
        }
    }

    pub fn abort(&self) {
        if let Ok(tasks) = self.0.lock() {
            tasks.iter().for_each(|t| t.abort());
        }
    }
}

/// Chunks queued for one stalled sink's dead-letter queue.
const DIVERSION_QUEUE_CHUNKS: usize = 32;
/// Most events written (and fsynced) at once by a diversion task.
const DIVERSION_BATCH_EVENTS: usize = 16_384;

/// What a fan-out hands a stalled sink's diversion task: a copy of the events, or (when the
/// sink's DLQ stores them on disk) the events already encoded, which spares the copy.
enum Diverted {
    Events(Chunk),
    Encoded(Encoded),
}

impl Diverted {
    fn len(&self) -> usize {
        match self {
            Self::Events(events) => events.len(),
            Self::Encoded(encoded) => encoded.count,
        }
    }

    /// Adds `other` to this write if it is of the same kind; gives it back otherwise.
    fn absorb(&mut self, other: Diverted) -> Option<Diverted> {
        match (self, other) {
            (Self::Events(events), Self::Events(more)) => events.extend(more),
            (Self::Encoded(encoded), Self::Encoded(more)) => encoded.extend(more),
            (_, other) => return Some(other),
        }
        None
    }
}

/// Writes a stalled sink's copies to its dead-letter queue, several chunks per write (and
/// fsync), so the fan-out hands them over and goes on with the siblings.
async fn divert(mut rx: tokio::sync::mpsc::Receiver<Diverted>, dead_letter: Arc<dyn DeadLetterQueue>, message: String) {
    let mut next = rx.recv().await;
    while let Some(mut write) = next.take() {
        while write.len() < DIVERSION_BATCH_EVENTS
            && let Ok(more) = rx.try_recv()
        {
            next = write.absorb(more);
            if next.is_some() {
                break;
            }
        }
        let failure = Failure::now(DeadLetterReason::Stalled, message.clone(), None);
        match write {
            Diverted::Events(events) => dead_letter.submit(events, failure).await,
            Diverted::Encoded(encoded) => dead_letter.submit_encoded(encoded, failure).await,
        }
        if next.is_none() {
            next = rx.recv().await;
        }
    }
}

pub struct Consumer {
    pub tx: MemorySender<Chunk>,
    /// `tx` (and `overflow`) count estimated bytes, not events (`max_size` on a memory buffer).
    pub weigh_bytes: bool,
    /// `when_full = "overflow"`: the disk stage's input, used when `tx` is full.
    pub overflow: Option<MemorySender<Chunk>>,
    pub ledger: Arc<ComponentLedger>,
    pub when_full: WhenFull,
    /// Sinks: their dead-letter queue, for isolation (G4).
    pub dead_letter: Option<DeadLetterSlot>,
    pub stall_timeout: Duration,
    /// Since when this consumer's buffer has been found full.
    full_since: Option<tokio::time::Instant>,
    /// While stalled: the queue of the task writing its copies to its dead-letter queue.
    diversion: Option<tokio::sync::mpsc::Sender<Diverted>>,
    diversions: Diversions,
    /// Diverted: its events go to its dead-letter queue until its buffer takes them again.
    stalled: bool,
}

impl Consumer {
    pub fn new(tx: MemorySender<Chunk>, ledger: Arc<ComponentLedger>, when_full: WhenFull) -> Self {
        Self {
            tx,
            weigh_bytes: false,
            overflow: None,
            ledger,
            when_full,
            dead_letter: None,
            stall_timeout: Duration::MAX,
            full_since: None,
            diversion: None,
            diversions: Diversions::default(),
            stalled: false,
        }
    }

    /// Counts what its buffer holds in estimated bytes (`max_size` on a memory buffer).
    pub fn weighed_in_bytes(mut self) -> Self {
        self.weigh_bytes = true;
        self
    }

    /// Sends what `tx` has no room for to `overflow` (`when_full = "overflow"`).
    pub fn overflowing_to(mut self, overflow: MemorySender<Chunk>) -> Self {
        self.overflow = Some(overflow);
        self
    }

    /// The stage a blocking placement waits on: the overflow stage when there is one.
    fn last_stage(&self) -> &MemorySender<Chunk> {
        self.overflow.as_ref().unwrap_or(&self.tx)
    }

    /// Lets this consumer be isolated when it stalls while a sibling accepts.
    pub fn isolated(mut self, dead_letter: DeadLetterSlot, stall_timeout: Duration, diversions: Diversions) -> Self {
        self.dead_letter = Some(dead_letter);
        self.stall_timeout = stall_timeout;
        self.diversions = diversions;
        self
    }

    /// Hands a stalled sink's copy to the task that writes it to its dead-letter queue
    /// (started on the first one).
    async fn divert(&mut self, copy: Diverted, dead_letter: &Arc<dyn DeadLetterQueue>) {
        let message = format!(
            "the sink made no progress for {}s while its siblings accepted events",
            self.stall_timeout.as_secs_f64()
        );
        let tx = self.diversion.get_or_insert_with(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(DIVERSION_QUEUE_CHUNKS);
            self.diversions.push(tokio::spawn(divert(rx, dead_letter.clone(), message.clone())));
            tx
        });
        if let Err(failed) = tx.send(copy).await {
            // The task is gone (aborted at the shutdown limit): write it here.
            self.diversion = None;
            let failure = Failure::now(DeadLetterReason::Stalled, message, None);
            match failed.0 {
                Diverted::Events(events) => dead_letter.submit(events, failure).await,
                Diverted::Encoded(encoded) => dead_letter.submit_encoded(encoded, failure).await,
            }
        }
    }

    /// Whether this consumer is diverted and still full, with a dead-letter queue that takes
    /// encoded events: its copy need not be made.
    fn diverts_encoded(&self, units: usize, isolate: bool) -> Option<Arc<dyn DeadLetterQueue>> {
        let full = !self.tx.has_room(units) && self.overflow.as_ref().is_none_or(|o| !o.has_room(units));
        if !(self.stalled && isolate && full && self.when_full != WhenFull::DropNewest) {
            return None;
        }
        self.dead_letter.as_ref().and_then(|slot| slot.get()).filter(|dlq| dlq.takes_encoded()).cloned()
    }

    fn set_stalled(&mut self, stalled: bool) {
        if self.stalled == stalled {
            return;
        }
        self.stalled = stalled;
        self.ledger.set_stalled(stalled);
        if stalled {
            tracing::error!(
                component_id = self.ledger.id(),
                stall_timeout_secs = self.stall_timeout.as_secs_f64(),
                waiting_on = "its input buffer to have room",
                "Sink stalled while its siblings accept; diverting its events to its dead-letter queue (reason `stalled`, replayable)."
            );
        } else {
            self.full_since = None;
            tracing::info!(component_id = self.ledger.id(), "Stalled sink takes events again; attached again.");
        }
    }
}

/// Moves the finalizers off `events` (which then resolve nothing when dropped).
fn take_finalizers(events: &mut [sluice_core::LogEvent]) -> BatchFinalizers {
    let mut finalizers = BatchFinalizers::default();
    events.iter_mut().for_each(|e| finalizers.push(e.take_finalizer()));
    finalizers
}

/// What happened to one consumer's copy.
enum Placed {
    Sent,
    Rejected(Chunk),
    Divert(Chunk),
}

#[derive(Default)]
struct Consumers {
    list: Vec<Consumer>,
    full_warned: bool,
}

#[derive(Default)]
struct Shared {
    consumers: Arc<tokio::sync::Mutex<Consumers>>,
    /// `consumers.list.len()`, readable without the lock.
    count: AtomicUsize,
}

#[derive(Default)]
pub struct Fanout {
    shared: Arc<Shared>,
    /// Where `sluice tap` samples this output.
    tap: Option<Arc<TapPoint>>,
}

/// The topology's hold on a fan-out whose owner (a source, transform or sink's dead-letter
/// queue) runs elsewhere: consumers are added and removed through it on reload.
#[derive(Clone)]
pub struct FanoutHandle(Arc<Shared>);

/// A fan-out locked by a reload: its owner waits until this is dropped.
pub struct FanoutGuard {
    consumers: tokio::sync::OwnedMutexGuard<Consumers>,
    shared: Arc<Shared>,
}

impl FanoutHandle {
    /// Waits until the owner is between chunks, then holds it there.
    pub async fn lock(&self) -> FanoutGuard {
        FanoutGuard { consumers: self.0.consumers.clone().lock_owned().await, shared: self.0.clone() }
    }
}

impl FanoutGuard {
    /// Adds a consumer (replacing one with the same component id).
    pub fn add(&mut self, consumer: Consumer) {
        let id = consumer.ledger.id().to_owned();
        self.consumers.list.retain(|c| c.ledger.id() != id);
        self.consumers.list.push(consumer);
    }

    /// The component ids of its consumers.
    pub fn ids(&self) -> Vec<String> {
        self.consumers.list.iter().map(|c| c.ledger.id().to_owned()).collect()
    }

    /// Removes the consumer of component `id` (its input sender is dropped). True if it was
    /// there.
    pub fn remove(&mut self, id: &str) -> bool {
        let before = self.consumers.list.len();
        self.consumers.list.retain(|c| c.ledger.id() != id);
        self.consumers.list.len() != before
    }
}

impl Drop for FanoutGuard {
    /// The count changes only when the lock goes: while a consumer is replaced, the owner
    /// must see an output that is read (and wait), never an empty one.
    fn drop(&mut self) {
        self.shared.count.store(self.consumers.list.len(), Ordering::Relaxed);
    }
}

impl Fanout {
    pub fn new(consumers: Vec<Consumer>) -> Self {
        let count = AtomicUsize::new(consumers.len());
        let consumers = Arc::new(tokio::sync::Mutex::new(Consumers { list: consumers, full_warned: false }));
        Self { shared: Arc::new(Shared { consumers, count }), tap: None }
    }

    /// This output can be tapped at `point`.
    pub fn tapped(mut self, point: Arc<TapPoint>) -> Self {
        self.tap = Some(point);
        self
    }

    /// The handle a reload changes this fan-out's consumers through.
    pub fn handle(&self) -> FanoutHandle {
        FanoutHandle(self.shared.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.shared.count.load(Ordering::Relaxed) == 0
    }

    /// Places a copy in a blocking consumer that may be isolated: waits at most until its
    /// buffer (its last stage) has been full for `stall_timeout`, then diverts.
    async fn place_isolated(consumer: &mut Consumer, copy: Chunk, units: usize) -> Placed {
        let tried = consumer.last_stage().try_send(copy, units);
        match tried {
            Ok(()) => {
                consumer.set_stalled(false);
                consumer.full_since = None;
                Placed::Sent
            }
            Err(TrySendError::Closed(copy)) => Placed::Rejected(copy),
            Err(TrySendError::Full(copy)) if consumer.stalled => Placed::Divert(copy),
            Err(TrySendError::Full(copy)) => {
                let since = *consumer.full_since.get_or_insert_with(tokio::time::Instant::now);
                let deadline =
                    since.checked_add(consumer.stall_timeout).unwrap_or(since + Duration::from_secs(86_400 * 365));
                let sent = consumer.last_stage().send_until(copy, units, deadline).await;
                match sent {
                    Ok(()) => {
                        consumer.full_since = None;
                        Placed::Sent
                    }
                    Err(TrySendError::Closed(copy)) => Placed::Rejected(copy),
                    Err(TrySendError::Full(copy)) => {
                        consumer.set_stalled(true);
                        Placed::Divert(copy)
                    }
                }
            }
        }
    }

    /// Places a copy in a consumer that blocks when full (its last stage): isolated after
    /// `stall_timeout` when `isolate`. Returns the copy if the consumer is gone.
    async fn place_blocking(consumer: &mut Consumer, copy: Chunk, units: usize, isolate: bool) -> Option<Chunk> {
        if !isolate {
            return consumer.last_stage().send(copy, units).await.err();
        }
        match Self::place_isolated(consumer, copy, units).await {
            Placed::Sent => None,
            Placed::Rejected(copy) => Some(copy),
            Placed::Divert(copy) => match consumer.dead_letter.as_ref().and_then(|slot| slot.get()).cloned() {
                Some(dead_letter) => {
                    consumer.divert(Diverted::Events(copy), &dead_letter).await;
                    None
                }
                None => consumer.last_stage().send(copy, units).await.err(),
            },
        }
    }

    /// Sends `chunk` to every consumer, waiting on those that block. Gives the chunk back
    /// when nothing reads this output (any more).
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn send_all(&mut self, chunk: Chunk) -> Result<(), Chunk> {
        if let Some(tap) = &self.tap {
            tap.observe(&chunk);
        }
        let mut guard = self.shared.consumers.lock().await;
        let Consumers { list: consumers, full_warned } = &mut *guard;
        let n = chunk.len();
        if consumers.is_empty() {
            return Err(chunk);
        }
        if n == 0 {
            return Ok(());
        }
        let last = consumers.len() - 1;
        let mut original = Some(chunk);
        let mut closed = Vec::new();
        // Isolation needs a sibling that still accepts; with none, back-pressure is lossless.
        let healthy = consumers.iter().filter(|c| !c.stalled).count();
        // Buffers limited in bytes weigh the chunk (estimated once, only if one needs it).
        let bytes = consumers
            .iter()
            .any(|c| c.weigh_bytes)
            .then(|| original.as_deref().map_or(0, sluice_core::event::chunk_bytes));
        for (i, consumer) in consumers.iter_mut().enumerate() {
            consumer.ledger.accept(n);
            let siblings_accept = healthy - usize::from(!consumer.stalled) > 0;
            // The dead-letter queue is looked up only when a copy is diverted (no per-chunk
            // reference counting on the usual path).
            let isolate = siblings_accept && consumer.dead_letter.as_ref().is_some_and(|slot| slot.get().is_some());
            let units = match bytes {
                Some(bytes) if consumer.weigh_bytes => bytes,
                _ => n,
            };
            if let Some(dead_letter) = consumer.diverts_encoded(units, isolate) {
                // Still stalled: encode its events straight from the shared chunk.
                let mut encoded = Encoded { count: n, ..Encoded::default() };
                if i == last {
                    let mut events = original.take().unwrap_or_default();
                    encoded.finalizers = take_finalizers(&mut events);
                    sluice_buffers::dlq::segment::encode_events(&events, &mut encoded.bytes);
                } else if let Some(events) = original.as_deref() {
                    events.iter().for_each(|e| encoded.finalizers.push(e.finalizer().clone()));
                    sluice_buffers::dlq::segment::encode_events(events, &mut encoded.bytes);
                }
                consumer.divert(Diverted::Encoded(encoded), &dead_letter).await;
                continue;
            }
            let copy =
                if i == last { original.take().unwrap_or_default() } else { original.clone().unwrap_or_default() };
            let rejected = match consumer.when_full {
                WhenFull::Block => Self::place_blocking(consumer, copy, units, isolate).await,
                // Memory first; what it has no room for goes to the disk stage, which blocks
                // (and is isolated) like any buffer.
                WhenFull::Overflow => match consumer.tx.try_send(copy, units) {
                    Ok(()) => None,
                    Err(TrySendError::Closed(copy)) => Some(copy),
                    Err(TrySendError::Full(copy)) => Self::place_blocking(consumer, copy, units, isolate).await,
                },
                WhenFull::DropNewest => match consumer.tx.try_send(copy, units) {
                    Ok(()) => None,
                    Err(TrySendError::Closed(copy)) => Some(copy),
                    Err(TrySendError::Full(copy)) => {
                        resolve_all(copy, Outcome::Discarded);
                        consumer.ledger.discarded(n, "buffer_full", true);
                        if !*full_warned {
                            *full_warned = true;
                            tracing::warn!(
                                component_id = consumer.ledger.id(),
                                "Buffer full; dropping newest events as configured (counted as `buffer_full`)."
                            );
                        }
                        None
                    }
                },
            };
            if let Some(copy) = rejected {
                resolve_all(copy, Outcome::Failed);
                consumer.ledger.errored(n);
                consumer.ledger.error("consumer_stopped", "receiving");
                static LOG: LogLimit = LogLimit::new(sluice_core::log_limit::INTERVAL);
                if let Some(folded) = LOG.admit() {
                    tracing::error!(
                        component_id = consumer.ledger.id(),
                        events = n,
                        similar_since_last_line = folded,
                        "Component stopped before taking its events; counted as failed."
                    );
                }
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            consumers.remove(i);
        }
        self.shared.count.store(consumers.len(), Ordering::Relaxed);
        Ok(())
    }
}

impl ChunkSender for Fanout {
    fn send(&mut self, chunk: Chunk) -> BoxFuture<'_, Result<(), Chunk>> {
        Box::pin(self.send_all(chunk))
    }

    fn has_consumers(&self) -> bool {
        !self.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use sluice_buffers::memory;
    use sluice_core::LogEvent;
    use sluice_core::event::EventMetadata;
    use sluice_core::ledger::ComponentKind;
    use vrl::value::Value;

    use super::*;

    fn chunk(events: usize) -> Chunk {
        (0..events)
            .map(|_| LogEvent::from_value(Value::from("x".repeat(100)), EventMetadata::new("in", chrono::Utc::now())))
            .collect()
    }

    /// Chunks of 10 events of ~130 estimated bytes go into a buffer of 10,000: counted in
    /// events, all 20 chunks fit; counted in bytes, 7 fit and the rest are dropped (counted).
    #[tokio::test]
    async fn a_buffer_limited_in_bytes_holds_what_its_bytes_allow() {
        let per_chunk = sluice_core::event::chunk_bytes(&chunk(10));
        assert!((1000..2000).contains(&per_chunk), "{per_chunk}");
        for bytes in [false, true] {
            let (tx, mut rx) = memory::<Chunk>(10_000);
            let ledger = Arc::new(ComponentLedger::new("out".to_owned(), ComponentKind::Sink, "blackhole"));
            let mut consumer = Consumer::new(tx, ledger.clone(), WhenFull::DropNewest);
            if bytes {
                consumer = consumer.weighed_in_bytes();
            }
            let mut fanout = Fanout::new(vec![consumer]);
            for _ in 0..20 {
                assert!(fanout.send_all(chunk(10)).await.is_ok());
            }
            drop(fanout);
            let mut queued = 0;
            while let Some(chunk) = rx.recv().await {
                queued += chunk.len();
                resolve_all(chunk, Outcome::Delivered);
            }
            let snapshot = ledger.snapshot();
            let expected = if bytes { 10_000 / per_chunk * 10 } else { 200 };
            assert_eq!(queued, expected, "weighed in bytes: {bytes}");
            assert_eq!(snapshot.discarded.get("buffer_full").copied().unwrap_or(0), 200 - expected as u64);
        }
    }
}
