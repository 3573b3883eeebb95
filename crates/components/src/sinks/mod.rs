//! Sinks, and what they share: settling a batch (resolving its finalizers with one outcome
//! and counting the ledger).

pub mod aws;
pub mod azure_blob;
pub mod blackhole;
pub mod clickhouse;
pub mod console;
pub mod datadog;
pub mod driver;
pub mod elasticsearch;
pub mod file;
pub mod gcp_cloud_storage;
pub mod http;
pub mod http_api;
pub mod kafka;
pub mod loki;
pub mod object;
pub mod prometheus_exporter;
pub mod socket;
pub mod splunk_hec;
pub mod template;
pub mod vector;

#[cfg(test)]
mod answers_fuzz;

use sluice_core::ack::{BatchFinalizers, Outcome};
use sluice_core::ledger::ComponentLedger;
use sluice_core::log_limit::{self, LogLimit};
use sluice_core::{Chunk, LogEvent};

/// The finalizers and size of events a sink has taken but not yet settled.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub finalizers: BatchFinalizers,
    pub events: usize,
}

impl Pending {
    pub fn add(&mut self, event: &mut LogEvent) {
        self.finalizers.push(event.take_finalizer());
        self.events += 1;
    }

    pub fn add_chunk(&mut self, chunk: &mut Chunk) {
        for event in chunk.iter_mut() {
            self.add(event);
        }
    }

    /// Resolves every event with `outcome` and counts it in the ledger.
    pub fn settle(self, ledger: &ComponentLedger, outcome: Outcome) {
        let n = self.events;
        // Counted before the sources hear of it: a sender answered must find it in /metrics.
        match outcome {
            Outcome::Delivered => ledger.sent(n),
            Outcome::Stored => ledger.dead_lettered(n, "stored"),
            Outcome::Failed => ledger.errored(n),
            Outcome::Discarded => ledger.discarded(n, "sink", true),
        }
        self.finalizers.resolve(outcome);
    }
}

/// An event the sink cannot encode: resolved as failed and counted.
pub(crate) fn reject(ledger: &ComponentLedger, mut event: LogEvent, reason: &'static str, error: &str) {
    ledger.errored(1);
    ledger.error(reason, "processing");
    event.take_finalizer().resolve(Outcome::Failed);
    static LOG: LogLimit = LogLimit::new(log_limit::INTERVAL);
    if let Some(folded) = LOG.admit() {
        tracing::error!(
            component_id = ledger.id(),
            reason,
            error,
            similar_since_last_line = folded,
            "Event could not be written; counted as failed."
        );
    }
}
