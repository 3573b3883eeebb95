//! Fan-out: one output port to every consumer's input buffer.
//!
//! Invariants: each consumer gets its own copy of every chunk (the last consumer gets the
//! original); each copy is counted as received by that consumer's ledger at enqueue, so events
//! waiting in a buffer are in that consumer's `in_flight`; a copy that cannot be enqueued is
//! resolved and counted (failed when the consumer is gone, discarded under `buffer_full` when
//! the consumer chose `drop_newest`), never dropped silently.

use sluice_core::log_limit::LogLimit;
use std::sync::Arc;

use futures::future::BoxFuture;
use sluice_buffers::{MemorySender, TrySendError};
use sluice_core::Chunk;
use sluice_core::ack::Outcome;
use sluice_core::component::ChunkSender;
use sluice_core::event::resolve_all;
use sluice_core::ledger::ComponentLedger;

use crate::config::WhenFull;

pub struct Consumer {
    pub tx: MemorySender<Chunk>,
    pub ledger: Arc<ComponentLedger>,
    pub when_full: WhenFull,
}

#[derive(Default)]
pub struct Fanout {
    consumers: Vec<Consumer>,
    full_warned: bool,
}

impl Fanout {
    pub fn new(consumers: Vec<Consumer>) -> Self {
        Self { consumers, full_warned: false }
    }

    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
    }

    /// Sends `chunk` to every consumer, waiting on those that block.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn send_all(&mut self, chunk: Chunk) {
        let n = chunk.len();
        if n == 0 || self.consumers.is_empty() {
            return;
        }
        let last = self.consumers.len() - 1;
        let mut original = Some(chunk);
        let mut closed = Vec::new();
        for (i, consumer) in self.consumers.iter().enumerate() {
            let copy =
                if i == last { original.take().unwrap_or_default() } else { original.clone().unwrap_or_default() };
            consumer.ledger.accept(n);
            let rejected = match consumer.when_full {
                WhenFull::Block => consumer.tx.send(copy, n).await.err(),
                WhenFull::DropNewest => match consumer.tx.try_send(copy, n) {
                    Ok(()) => None,
                    Err(TrySendError::Closed(copy)) => Some(copy),
                    Err(TrySendError::Full(copy)) => {
                        resolve_all(copy, Outcome::Discarded);
                        consumer.ledger.discarded(n, "buffer_full", true);
                        if !self.full_warned {
                            self.full_warned = true;
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
            self.consumers.remove(i);
        }
    }
}

impl ChunkSender for Fanout {
    fn send(&mut self, chunk: Chunk) -> BoxFuture<'_, Result<(), Chunk>> {
        Box::pin(async move {
            if self.consumers.is_empty() {
                return Err(chunk);
            }
            self.send_all(chunk).await;
            Ok(())
        })
    }

    fn has_consumers(&self) -> bool {
        !self.consumers.is_empty()
    }
}
