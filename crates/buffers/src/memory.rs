//! A bounded, multi-producer, single-consumer channel weighted by event count.
//!
//! Invariants:
//! - at most `max_events` events are queued, except that one chunk larger than the capacity
//!   may occupy the whole of it;
//! - an item sent before the receiver is dropped is either received or handed back to the
//!   sender as an error, never lost silently;
//! - the channel ends (`recv` returns `None`) once every sender is dropped and it is empty.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

type Slot<T> = (T, OwnedSemaphorePermit);

/// The sending half; clone it for each upstream.
#[derive(Debug)]
pub struct MemorySender<T> {
    tx: mpsc::UnboundedSender<Slot<T>>,
    permits: Arc<Semaphore>,
    max_events: u32,
}

impl<T> Clone for MemorySender<T> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), permits: self.permits.clone(), max_events: self.max_events }
    }
}

/// The receiving half.
#[derive(Debug)]
pub struct MemoryReceiver<T> {
    rx: mpsc::UnboundedReceiver<Slot<T>>,
    permits: Arc<Semaphore>,
}

/// Why a non-waiting send failed; the item comes back.
#[derive(Debug)]
pub enum TrySendError<T> {
    Full(T),
    Closed(T),
}

/// A channel holding at most `max_events` events (at least 1).
pub fn memory<T>(max_events: usize) -> (MemorySender<T>, MemoryReceiver<T>) {
    let max_events = max_events.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
    let permits = Arc::new(Semaphore::new(max_events as usize));
    let (tx, rx) = mpsc::unbounded_channel();
    (MemorySender { tx, permits: permits.clone(), max_events }, MemoryReceiver { rx, permits })
}

impl<T> MemorySender<T> {
    fn weight(&self, events: usize) -> u32 {
        (events.max(1) as u64).min(self.max_events as u64) as u32
    }

    /// Sends `item` weighing `events`, waiting for room.
    ///
    /// # Cancel safety
    /// Cancel safe: if cancelled while waiting for room, the item was not sent (it is dropped
    /// with the future, so callers that must not lose it should not cancel).
    pub async fn send(&self, item: T, events: usize) -> Result<(), T> {
        let permit = match self.permits.clone().acquire_many_owned(self.weight(events)).await {
            Ok(permit) => permit,
            Err(_) => return Err(item),
        };
        self.tx.send((item, permit)).map_err(|err| err.0.0)
    }

    /// Sends `item`, waiting for room until `deadline`; on timeout the item comes back.
    ///
    /// # Cancel safety
    /// Not cancel safe (the item would be dropped with the future).
    pub async fn send_until(
        &self,
        item: T,
        events: usize,
        deadline: tokio::time::Instant,
    ) -> Result<(), TrySendError<T>> {
        let acquire = self.permits.clone().acquire_many_owned(self.weight(events));
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(permit)) => self.tx.send((item, permit)).map_err(|err| TrySendError::Closed(err.0.0)),
            Ok(Err(_)) => Err(TrySendError::Closed(item)),
            Err(_) => Err(TrySendError::Full(item)),
        }
    }

    /// Sends without waiting.
    pub fn try_send(&self, item: T, events: usize) -> Result<(), TrySendError<T>> {
        if self.tx.is_closed() {
            return Err(TrySendError::Closed(item));
        }
        match self.permits.clone().try_acquire_many_owned(self.weight(events)) {
            Ok(permit) => self.tx.send((item, permit)).map_err(|err| TrySendError::Closed(err.0.0)),
            Err(tokio::sync::TryAcquireError::Closed) => Err(TrySendError::Closed(item)),
            Err(tokio::sync::TryAcquireError::NoPermits) => Err(TrySendError::Full(item)),
        }
    }

    /// Whether `events` would be taken now (a `try_send` would not find it full).
    pub fn has_room(&self, events: usize) -> bool {
        !self.tx.is_closed() && self.permits.available_permits() >= self.weight(events) as usize
    }

    /// Events currently queued.
    pub fn queued_events(&self) -> usize {
        self.max_events as usize - self.permits.available_permits().min(self.max_events as usize)
    }

    pub fn max_events(&self) -> usize {
        self.max_events as usize
    }

    /// A reader of (events queued, capacity) that does not keep the channel open.
    pub fn gauge(&self) -> impl Fn() -> (u64, u64) + Send + Sync + 'static {
        let (permits, max) = (self.permits.clone(), self.max_events as usize);
        move || ((max - permits.available_permits().min(max)) as u64, max as u64)
    }
}

impl<T> MemoryReceiver<T> {
    /// The next item, or `None` when every sender is gone and the channel is empty.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<T> {
        self.rx.recv().await.map(|(item, _permit)| item)
    }
}

impl<T> Drop for MemoryReceiver<T> {
    fn drop(&mut self) {
        // Wake senders waiting for room: their items come back to them as errors.
        self.permits.close();
        self.rx.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn capacity_is_counted_in_events() {
        let (tx, mut rx) = memory::<u32>(10);
        tx.send(1, 6).await.ok();
        assert_eq!(tx.queued_events(), 6);
        assert!(matches!(tx.try_send(2, 5), Err(TrySendError::Full(2))));
        tx.try_send(3, 4).ok();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(tx.queued_events(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn send_until_gives_the_item_back_at_the_deadline() {
        let (tx, mut rx) = memory::<u32>(1);
        tx.send(1, 1).await.ok();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        assert!(matches!(tx.send_until(2, 1, deadline).await, Err(TrySendError::Full(2))));
        assert_eq!(tokio::time::Instant::now(), deadline);
        assert_eq!(rx.recv().await, Some(1));
        assert!(tx.send_until(3, 1, deadline + std::time::Duration::from_secs(1)).await.is_ok());
    }

    #[tokio::test]
    async fn oversized_chunk_still_passes() {
        let (tx, mut rx) = memory::<u32>(4);
        tx.send(7, 100).await.ok();
        assert_eq!(rx.recv().await, Some(7));
    }

    #[tokio::test]
    async fn ends_after_senders_drop_and_drains_first() {
        let (tx, mut rx) = memory::<u32>(4);
        let tx2 = tx.clone();
        tx.send(1, 1).await.ok();
        tx2.send(2, 1).await.ok();
        drop((tx, tx2));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn waiting_sender_gets_item_back_when_receiver_drops() {
        let (tx, rx) = memory::<u32>(1);
        tx.send(1, 1).await.ok();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(2, 1).await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(waiting.await.ok(), Some(Err(2)));
    }
}
