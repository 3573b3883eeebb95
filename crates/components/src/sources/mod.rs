//! Sources, and what they share: turning frames into chunks of events, and a forwarder that
//! lets many connection tasks feed one [`SourceSender`].

pub mod dead_letter;
pub mod demo_logs;
pub mod file;
pub mod http_server;
#[cfg(test)]
mod inputs_fuzz;
pub mod internal_metrics;
pub mod kafka;
pub mod kubernetes_logs;
pub(crate) mod listen;
pub mod socket;
pub mod stdin;
pub mod syslog;
pub(crate) mod tailing;
pub mod vector;

use std::sync::Arc;

use bytes::Bytes;
use sluice_core::Chunk;
use sluice_core::ack::EventFinalizer;
use sluice_core::component::SourceSender;
use sluice_core::event::{EventMetadata, LegacyTemplate};
use sluice_core::ledger::ComponentLedger;
use tokio::sync::mpsc;
use vrl::value::{KeyString, Value};

use crate::codecs::decoding::Decoder;

/// Connections whose TLS handshake completed, as axum's listener (`http_server`, `vector`).
pub(crate) struct TlsListener(pub sluice_net::server::TlsIncoming);

impl axum::serve::Listener for TlsListener {
    type Io = sluice_net::server::TlsStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.0.next().await {
            Some(accepted) => accepted,
            // The accept task ended (the listener failed): serve what is open, accept no more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.0.local_addr())
    }
}

/// How long an HTTP server goes on serving the connections it accepted after it stopped
/// accepting (see [`Stoppable`]).
pub(crate) const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// A listener that hands out no more connections once `stop` fires. The server's graceful
/// shutdown is meant to come [`CLOSE_GRACE`] later: a connection accepted just before the
/// stop has its request answered instead of being closed as idle, and connections not yet
/// accepted stay in the socket's queue for the successor that keeps the socket (a reload).
pub(crate) struct Stoppable<L> {
    pub inner: L,
    pub stop: sluice_core::shutdown::ShutdownSignal,
}

impl<L: axum::serve::Listener> axum::serve::Listener for Stoppable<L> {
    type Io = L::Io;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        if self.stop.is_triggered() {
            return std::future::pending().await;
        }
        // Both accepts are cancel safe: a connection is never half taken.
        tokio::select! {
            accepted = self.inner.accept() => accepted,
            () = self.stop.wait() => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// What a source's reading side hands to its output: events, or events for the source's
/// dead-letter queue with their failure.
pub(crate) enum Out {
    Chunk(Chunk),
    DeadLetters(Vec<sluice_core::LogEvent>, sluice_core::dead_letter::Failure),
}

/// Builds events for one source from frames.
#[derive(Debug, Clone)]
pub(crate) struct EventBuilder {
    pub id: Arc<str>,
    pub decoder: Decoder,
    /// `host_key`: `None` when disabled (`""`).
    pub host_key: Option<KeyString>,
}

impl EventBuilder {
    pub fn new(id: Arc<str>, decoder: Decoder, host_key: Option<&str>) -> Self {
        let host_key = match host_key {
            Some("") => None,
            Some(key) => Some(KeyString::from(key.trim_start_matches('.'))),
            None => Some(KeyString::from(sluice_core::event::fields::host())),
        };
        Self { id, decoder, host_key }
    }

    /// Decodes `frames` into `out`. Every event shares `finalizer`; `host` goes under
    /// `host_key`. Returns the number of frames that failed to decode, with the last error.
    pub fn decode_all(
        &self,
        frames: impl IntoIterator<Item = Bytes>,
        finalizer: EventFinalizer,
        host: Option<&Bytes>,
        extra: &[(KeyString, Value)],
        out: &mut Chunk,
    ) -> (usize, Option<String>) {
        let mut meta = EventMetadata::new(&self.id, chrono::Utc::now());
        meta.set_finalizer(finalizer);
        let default_host = self.host_key.as_deref() == Some(sluice_core::event::fields::host());
        let host_for_legacy = if default_host { host } else { None };
        let mut template = LegacyTemplate::new(self.decoder.source_type(), host_for_legacy, meta);
        let mut failures = 0;
        let mut last_error = None;
        for frame in frames {
            let start = out.len();
            if let Err(err) = self.decoder.decode(frame, &template, out) {
                failures += 1;
                last_error = Some(err);
                continue;
            }
            if (!default_host && host.is_some()) || !extra.is_empty() {
                for event in &mut out[start..] {
                    if let (Some(key), Some(host), false) = (&self.host_key, host, default_host) {
                        event.insert(key, Value::Bytes(host.clone()));
                    }
                    for (key, value) in extra {
                        event.insert(key, value.clone());
                    }
                }
            }
        }
        // The template's own copy never became an event.
        template.set_finalizer(EventFinalizer::default());
        (failures, last_error)
    }
}

/// Counts input that never became an event (oversized or undecodable frames) in the
/// source's ledger under a named reason, and logs it.
pub(crate) fn count_rejected(ledger: &ComponentLedger, n: usize, reason: &'static str, detail: &str) {
    if n == 0 {
        return;
    }
    ledger.accept(n);
    ledger.discarded(n, reason, false);
    ledger.error(reason, "receiving");
    static LOG: sluice_core::log_limit::LogLimit =
        sluice_core::log_limit::LogLimit::new(sluice_core::log_limit::INTERVAL);
    if let Some(folded) = LOG.admit() {
        tracing::warn!(
            component_id = ledger.id(),
            frames = n,
            reason,
            detail,
            similar_since_last_line = folded,
            "Input discarded."
        );
    }
}

/// Lets many tasks (connections, requests) feed one [`SourceSender`]. The forwarder ends when
/// every handle is dropped.
pub(crate) fn forwarder(
    mut out: SourceSender,
) -> (mpsc::Sender<Chunk>, Arc<ComponentLedger>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Chunk>(64);
    let ledger = out.ledger().clone();
    let task = tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            // On error the chunk was already resolved as failed and counted.
            let _ = out.send(chunk).await;
        }
    });
    (tx, ledger, task)
}

/// Counts and logs a failed TLS handshake (`error_type="tls"`); the client is not answered.
pub(crate) fn handshake_failed(ledger: Arc<ComponentLedger>) -> sluice_net::server::OnFailure {
    let log = Arc::new(sluice_core::log_limit::LogLimit::default());
    Arc::new(move |peer, reason| {
        ledger.error("tls", "receiving");
        if let Some(folded) = log.admit() {
            tracing::warn!(
                component_id = ledger.id(),
                peer = %peer,
                reason,
                similar_since_last_line = folded,
                "TLS handshake failed; connection closed."
            );
        }
    })
}
