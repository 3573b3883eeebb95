//! Acknowledgements: notifiers, finalizers and the outcome lattice.
//!
//! A source creates one [`BatchNotifier`] per unit it can acknowledge (an HTTP request, a run of
//! lines). Every event of that unit carries an [`EventFinalizer`] pointing at it; a fan-out clone
//! shares the notifier. Each destination resolves its copy with an explicit [`Outcome`]. When the
//! last copy is resolved the notifier reports the weakest outcome to the source.
//!
//! Invariant: a finalizer dropped without [`EventFinalizer::resolve`] is a bug. It counts as
//! [`Outcome::Failed`] (never as delivered), increments [`unresolved_drops`], and end-to-end tests
//! assert that counter is zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use tokio::sync::oneshot;

/// What happened to one copy of an event. Ordered from weakest to strongest: the notifier keeps
/// the minimum over all copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Outcome {
    /// Delivery failed and the event is nowhere durable: the sender must be told to send again.
    Failed = 0,
    /// Stored durably (disk buffer, dead-letter queue): safe, replayable, not delivered yet.
    Stored = 1,
    /// Accepted by the destination.
    Delivered = 2,
    /// Discarded by an explicit rule of the user (a filter, a `drop_newest` policy).
    Discarded = 3,
}

impl Outcome {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Failed,
            1 => Self::Stored,
            2 => Self::Delivered,
            _ => Self::Discarded,
        }
    }

    /// True when the sender may consider its data safe.
    pub fn is_safe(self) -> bool {
        self != Self::Failed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Stored => "stored",
            Self::Delivered => "delivered",
            Self::Discarded => "discarded",
        }
    }
}

static UNRESOLVED_DROPS: AtomicU64 = AtomicU64::new(0);
static ABORTING: AtomicBool = AtomicBool::new(false);

/// Called when the runtime aborts components at the graceful-shutdown limit: the events they
/// held are dropped on purpose. They still count as failed (their senders are told), but not
/// as unresolved drops, which are reserved for bugs.
pub fn mark_aborting() {
    ABORTING.store(true, Ordering::Relaxed);
}

fn count_unresolved(n: u64) -> bool {
    if ABORTING.load(Ordering::Relaxed) {
        return false;
    }
    UNRESOLVED_DROPS.fetch_add(n, Ordering::Relaxed) == 0
}

/// How many event copies were dropped without an explicit outcome since the process started.
/// Always zero in a correct build; the ledger report and the exit code include it.
pub fn unresolved_drops() -> u64 {
    UNRESOLVED_DROPS.load(Ordering::Relaxed)
}

/// Where a notifier reports its final outcome.
enum Report {
    /// A source that waits for this unit (an HTTP request).
    Oneshot(oneshot::Sender<Outcome>),
    /// A source that only tallies outcomes (stdin: it reports failures at exit).
    Tally(Arc<AckTally>),
    /// A source that tracks many units at once (a replay): the tag names the unit.
    Channel(tokio::sync::mpsc::UnboundedSender<(u64, Outcome)>, u64),
}

/// Outcome counts for sources that do not wait per unit.
#[derive(Debug, Default)]
pub struct AckTally {
    safe: AtomicU64,
    failed: AtomicU64,
}

impl AckTally {
    pub fn safe(&self) -> u64 {
        self.safe.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// One acknowledgeable unit of a source. Reports the weakest outcome of all copies of all its
/// events when the last reference goes away.
pub struct BatchNotifier {
    status: AtomicU8,
    report: Option<Report>,
}

impl std::fmt::Debug for BatchNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchNotifier").field("status", &Outcome::from_u8(self.status.load(Ordering::Relaxed))).finish()
    }
}

impl BatchNotifier {
    /// A notifier whose outcome the source awaits through the returned receiver.
    pub fn with_receiver() -> (Arc<Self>, BatchStatusReceiver) {
        let (tx, rx) = oneshot::channel();
        let notifier =
            Arc::new(Self { status: AtomicU8::new(Outcome::Discarded as u8), report: Some(Report::Oneshot(tx)) });
        (notifier, BatchStatusReceiver(rx))
    }

    /// A notifier that adds its outcome to `tally`.
    pub fn with_tally(tally: Arc<AckTally>) -> Arc<Self> {
        Arc::new(Self { status: AtomicU8::new(Outcome::Discarded as u8), report: Some(Report::Tally(tally)) })
    }

    /// A notifier that sends `(tag, outcome)` to `tx` when its unit is resolved.
    pub fn with_channel(tx: tokio::sync::mpsc::UnboundedSender<(u64, Outcome)>, tag: u64) -> Arc<Self> {
        Arc::new(Self { status: AtomicU8::new(Outcome::Discarded as u8), report: Some(Report::Channel(tx, tag)) })
    }

    fn update(&self, outcome: Outcome) {
        self.status.fetch_min(outcome as u8, Ordering::AcqRel);
    }
}

impl Drop for BatchNotifier {
    fn drop(&mut self) {
        let outcome = Outcome::from_u8(*self.status.get_mut());
        match self.report.take() {
            Some(Report::Oneshot(tx)) => {
                // The source may have given up waiting (timeout, shutdown); nothing to tell then.
                let _ = tx.send(outcome);
            }
            Some(Report::Tally(tally)) => {
                let counter = if outcome.is_safe() { &tally.safe } else { &tally.failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Some(Report::Channel(tx, tag)) => {
                // The source may have stopped listening (aborted at shutdown).
                let _ = tx.send((tag, outcome));
            }
            None => {}
        }
    }
}

/// The receiving half of a [`BatchNotifier::with_receiver`].
#[derive(Debug)]
pub struct BatchStatusReceiver(oneshot::Receiver<Outcome>);

impl BatchStatusReceiver {
    /// Waits for the final outcome of the unit.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses nothing but the answer.
    pub async fn wait(&mut self) -> Outcome {
        (&mut self.0).await.unwrap_or(Outcome::Failed)
    }
}

/// The per-event handle on a [`BatchNotifier`]. Cloning shares the notifier (fan-out).
#[derive(Debug, Default)]
pub struct EventFinalizer {
    notifier: Option<Arc<BatchNotifier>>,
}

impl Clone for EventFinalizer {
    fn clone(&self) -> Self {
        Self { notifier: self.notifier.clone() }
    }
}

impl EventFinalizer {
    pub fn new(notifier: Arc<BatchNotifier>) -> Self {
        Self { notifier: Some(notifier) }
    }

    /// True when the event came from an acknowledging source.
    pub fn is_tracked(&self) -> bool {
        self.notifier.is_some()
    }

    /// Resolves this copy with an explicit outcome.
    pub fn resolve(mut self, outcome: Outcome) {
        if let Some(notifier) = self.notifier.take() {
            notifier.update(outcome);
        }
    }

    /// Drops a copy that never became an event (a template cloned into events), without
    /// affecting the outcome.
    pub fn release_unused(mut self) {
        self.notifier.take();
    }

    /// Moves the notifier out, leaving an untracked finalizer behind (used to batch finalizers).
    fn take(&mut self) -> Option<Arc<BatchNotifier>> {
        self.notifier.take()
    }
}

impl Drop for EventFinalizer {
    fn drop(&mut self) {
        if let Some(notifier) = self.notifier.take() {
            notifier.update(Outcome::Failed);
            if count_unresolved(1) {
                tracing::error!(
                    "An event copy was dropped without an outcome; counting it as failed. This is a bug in sluice."
                );
            }
        }
    }
}

/// The finalizers of a batch, taken off its events so the events can be encoded and freed
/// before the request completes. Consecutive events of one notifier share one entry, so a
/// batch costs one entry per acknowledgeable unit, not one per event.
#[derive(Debug, Default)]
pub struct BatchFinalizers {
    entries: Vec<Arc<BatchNotifier>>,
}

impl BatchFinalizers {
    pub fn push(&mut self, mut finalizer: EventFinalizer) {
        if let Some(notifier) = finalizer.take() {
            match self.entries.last() {
                Some(last) if Arc::ptr_eq(last, &notifier) => {}
                _ => self.entries.push(notifier),
            }
        }
    }

    pub fn merge(&mut self, mut other: BatchFinalizers) {
        for notifier in other.entries.drain(..) {
            match self.entries.last() {
                Some(last) if Arc::ptr_eq(last, &notifier) => {}
                _ => self.entries.push(notifier),
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Resolves every event of the batch with one outcome.
    pub fn resolve(mut self, outcome: Outcome) {
        for notifier in self.entries.drain(..) {
            notifier.update(outcome);
        }
    }
}

impl Drop for BatchFinalizers {
    fn drop(&mut self) {
        if !self.entries.is_empty() {
            if count_unresolved(self.entries.len() as u64) {
                tracing::error!(
                    units = self.entries.len(),
                    "A batch was dropped without an outcome; counting it as failed. This is a bug in sluice."
                );
            }
            for notifier in self.entries.drain(..) {
                notifier.update(Outcome::Failed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_copies(outcomes: &[Outcome]) -> Outcome {
        let (notifier, mut rx) = BatchNotifier::with_receiver();
        let copies: Vec<_> = outcomes.iter().map(|_| EventFinalizer::new(notifier.clone())).collect();
        drop(notifier);
        for (copy, outcome) in copies.into_iter().zip(outcomes) {
            copy.resolve(*outcome);
        }
        futures::executor::block_on(rx.wait())
    }

    #[test]
    fn weakest_outcome_wins_across_copies() {
        assert_eq!(run_copies(&[Outcome::Delivered, Outcome::Delivered]), Outcome::Delivered);
        assert_eq!(run_copies(&[Outcome::Delivered, Outcome::Stored]), Outcome::Stored);
        assert_eq!(run_copies(&[Outcome::Stored, Outcome::Failed]), Outcome::Failed);
        assert_eq!(run_copies(&[Outcome::Discarded, Outcome::Delivered]), Outcome::Delivered);
        assert_eq!(run_copies(&[Outcome::Discarded]), Outcome::Discarded);
    }

    #[test]
    fn dropped_copy_counts_as_failed_and_is_reported() {
        let before = unresolved_drops();
        let (notifier, mut rx) = BatchNotifier::with_receiver();
        let a = EventFinalizer::new(notifier);
        let b = a.clone();
        a.resolve(Outcome::Delivered);
        drop(b);
        assert_eq!(futures::executor::block_on(rx.wait()), Outcome::Failed);
        assert!(unresolved_drops() > before);
    }

    #[test]
    fn batch_finalizers_share_entries_per_notifier() {
        let tally = Arc::new(AckTally::default());
        let n1 = BatchNotifier::with_tally(tally.clone());
        let n2 = BatchNotifier::with_tally(tally.clone());
        let mut batch = BatchFinalizers::default();
        for _ in 0..100 {
            batch.push(EventFinalizer::new(n1.clone()));
        }
        batch.push(EventFinalizer::new(n2.clone()));
        assert_eq!(batch.entries.len(), 2);
        drop((n1, n2));
        batch.resolve(Outcome::Delivered);
        assert_eq!((tally.safe(), tally.failed()), (2, 0));
    }
}
