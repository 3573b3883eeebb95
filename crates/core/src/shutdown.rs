//! Shutdown signalling: the runtime triggers, components observe.

use tokio::sync::watch;

/// Held by the runtime; dropping it also triggers shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Held by components; cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

pub fn shutdown_pair() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), ShutdownSignal(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl ShutdownSignal {
    /// Resolves once shutdown has been triggered.
    ///
    /// # Cancel safety
    /// Cancel safe; meant for `select!`.
    pub async fn wait(&mut self) {
        // An error means the trigger was dropped: that is a shutdown too.
        let _ = self.0.wait_for(|triggered| *triggered).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// A signal that never fires (tests, offline tools).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        Self(rx)
    }
}
