//! A transform's task: chunks in, each through the transform, outputs to the fan-outs.
//!
//! A transform whose config says it is [`concurrent`](sluice_core::component::TransformConfig::concurrent)
//! (`remap`, `filter`, `route`: nothing carries over from one event to the next) runs as
//! several copies, one per runtime worker by default, each on its own task and its own chunk.
//! Outputs still leave in the order the chunks came in, so the events of each source keep
//! their order through the transform (Vector's concurrent transforms give that up):
//!
//! ```text
//! input ─► coordinator ─► spawn(copy 1, chunk a) ─┐
//!              │      └─► spawn(copy 2, chunk b) ─┤  (in order of arrival)
//!              ◄──────────────── a, then b ◄──────┘ ─► accounting ─► fan-outs
//! ```
//!
//! A copy takes a new chunk only once its previous one was handed on, so at most one chunk
//! per copy is in the transform. A reload's replacement (see [`Swap`]) applies from the next
//! chunk taken; copies still busy with the old program finish their chunk and are dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use sluice_buffers::MemoryReceiver;
use sluice_core::Chunk;
use sluice_core::ack::Outcome;
use sluice_core::component::{FunctionTransform, TransformOutputs};
use sluice_core::event::resolve_all;
use sluice_core::ledger::ComponentLedger;

use super::fanout::Fanout;

/// The copies of one transform (one unless it is concurrent).
pub(crate) type Copies = Vec<Box<dyn FunctionTransform>>;

/// Where a reload hands a running transform its replacement (same outputs): taken before the
/// next chunk.
#[derive(Default)]
pub(crate) struct Swap {
    pending: AtomicBool,
    next: Mutex<Option<Copies>>,
}

impl Swap {
    pub(crate) fn put(&self, copies: Copies) {
        if let Ok(mut next) = self.next.lock() {
            *next = Some(copies);
            self.pending.store(true, Ordering::Release);
        }
    }

    #[inline]
    fn take(&self) -> Option<Copies> {
        if !self.pending.load(Ordering::Acquire) {
            return None;
        }
        self.pending.store(false, Ordering::Relaxed);
        self.next.lock().ok().and_then(|mut next| next.take())
    }
}

/// The fan-outs of a transform's outputs and its ledger: where each chunk's outputs go.
pub(crate) struct Outputs {
    pub default: Option<Fanout>,
    pub named: Vec<Fanout>,
    pub ledger: Arc<ComponentLedger>,
}

impl Outputs {
    /// Accounts for one input chunk of `n` events and sends its outputs on (emptying `out`).
    async fn emit(&mut self, n: usize, out: &mut TransformOutputs) {
        let ledger = &self.ledger;
        let mut discarded = 0;
        for (reason, intentional, count) in out.take_discards() {
            ledger.discarded(count, reason, intentional);
            discarded += count;
        }
        let copies = out.default.len() + out.named.iter().map(Vec::len).sum::<usize>();
        let passed = n.saturating_sub(discarded);
        if copies > passed {
            // Events sent to several outputs (route): each extra copy counts as received.
            ledger.accept(copies - passed);
        } else if copies < passed {
            ledger.errored(passed - copies);
            ledger.error("events_lost", "processing");
            tracing::error!(
                component_id = ledger.id(),
                events = passed - copies,
                "Transform lost events without an outcome; counted as failed. This is a bug in sluice."
            );
        }
        let default_chunk = std::mem::take(&mut out.default);
        let ports = std::iter::once((self.default.as_mut(), default_chunk))
            .chain(self.named.iter_mut().zip(out.named.iter_mut()).map(|(f, c)| (Some(f), std::mem::take(c))));
        for (fanout, chunk) in ports {
            if chunk.is_empty() {
                continue;
            }
            let n = chunk.len();
            let unsent = match fanout {
                Some(fanout) => fanout.send_all(chunk).await.err(),
                None => Some(chunk),
            };
            match unsent {
                None => ledger.sent(n),
                Some(chunk) => {
                    ledger.discarded(n, "unconsumed_output", false);
                    resolve_all(chunk, Outcome::Failed);
                }
            }
        }
    }
}

/// Runs the transform until its input closes. Errors when a copy panicked (its chunk's events
/// resolve as failed as their finalizers drop).
pub(crate) async fn run(
    mut rx: MemoryReceiver<Chunk>,
    copies: Copies,
    mut outputs: Outputs,
    swap: Arc<Swap>,
) -> Result<(), ()> {
    let named = outputs.named.len();
    if copies.len() <= 1 {
        let Some(mut transform) = copies.into_iter().next() else { return Err(()) };
        let mut out = TransformOutputs::with_named(named);
        while let Some(chunk) = rx.recv().await {
            if let Some(next) = swap.take().and_then(|copies| copies.into_iter().next()) {
                transform = next;
            }
            let n = chunk.len();
            transform.transform(chunk, &mut out);
            outputs.emit(n, &mut out).await;
        }
        return Ok(());
    }

    // (copy, its outputs buffer, the reload generation it belongs to)
    type Idle = (Box<dyn FunctionTransform>, TransformOutputs, u64);
    let with_outputs = |copies: Copies, generation: u64| -> Vec<Idle> {
        copies.into_iter().map(|t| (t, TransformOutputs::with_named(named), generation)).collect()
    };
    let mut generation = 0;
    let mut idle = with_outputs(copies, generation);
    let mut running = FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(done) = running.next(), if !running.is_empty() => {
                let Ok((transform, mut out, n, of)): Result<(Box<dyn FunctionTransform>, TransformOutputs, usize, u64), _> = done else {
                    return Err(());
                };
                outputs.emit(n, &mut out).await;
                if of == generation {
                    idle.push((transform, out, of));
                }
            }
            chunk = rx.recv(), if open && !idle.is_empty() => {
                let Some(chunk) = chunk else {
                    open = false;
                    continue;
                };
                if let Some(next) = swap.take().filter(|next| !next.is_empty()) {
                    generation += 1;
                    idle = with_outputs(next, generation);
                }
                // Never empty here: the branch runs only with a copy idle, and a swap brings one
                // at least.
                let Some((mut transform, mut out, of)) = idle.pop() else { return Err(()) };
                running.push_back(tokio::spawn(async move {
                    let n = chunk.len();
                    transform.transform(chunk, &mut out);
                    (transform, out, n, of)
                }));
            }
            else => break,
        }
    }
    Ok(())
}
