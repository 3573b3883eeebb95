//! The stall watchdog: a component that holds events and settles none of them for
//! [`THRESHOLD`] is logged at error, by name and with what it waits on, and reported by the
//! `component_stalled` gauge until it makes progress again. "Why did my pipeline stop?" has
//! its answer in one place.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_core::ledger::{ComponentKind, Ledger};
use tokio::time::Instant;

/// How long without progress, while holding events, counts as stalled.
pub const THRESHOLD: Duration = Duration::from_secs(60);

/// How often the watchdog looks.
pub const EVERY: Duration = Duration::from_secs(5);

struct Watch {
    settled: u64,
    since: Instant,
    reported: bool,
}

/// Runs until aborted.
pub async fn run(ledger: Ledger, every: Duration, threshold: Duration) {
    let mut watches: BTreeMap<String, Watch> = BTreeMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for component in ledger.components() {
            let c = component.snapshot();
            let settled = c.sent + c.discarded_total + c.dead_lettered + c.errored;
            let watch = watches.entry(c.id.clone()).or_insert(Watch { settled, since: now, reported: false });
            if settled != watch.settled || c.in_flight <= 0 {
                if watch.reported {
                    tracing::info!(component_id = c.id.as_str(), "Component makes progress again.");
                    component.set_no_progress(false);
                }
                *watch = Watch { settled, since: now, reported: false };
                continue;
            }
            if !watch.reported && now.duration_since(watch.since) >= threshold {
                watch.reported = true;
                component.set_no_progress(true);
                let waiting_on = match c.kind {
                    ComponentKind::Sink => "its destination (requests in flight or waiting to retry)",
                    ComponentKind::Transform => "the buffers of the components it feeds",
                    ComponentKind::Source => "the buffers of the components it feeds",
                };
                tracing::error!(
                    component_id = c.id.as_str(),
                    kind = c.kind.as_str(),
                    pending_events = c.in_flight,
                    no_progress_secs = now.duration_since(watch.since).as_secs(),
                    waiting_on,
                    "Component holds events and has settled none for a while: stalled."
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_core::ledger::ComponentLedger;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_component_without_progress_is_reported_and_cleared_when_it_moves() {
        let ledger = Ledger::default();
        let sink = Arc::new(ComponentLedger::new("out", ComponentKind::Sink, "http"));
        ledger.register(sink.clone());
        sink.accept(10);
        let task = tokio::spawn(run(ledger.clone(), Duration::from_secs(5), Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_secs(50)).await;
        assert!(!sink.snapshot().stalled, "not yet");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(sink.snapshot().stalled, "no progress for 60 s while holding events");
        sink.sent(1);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(!sink.snapshot().stalled, "progress clears it");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_component_is_not_stalled() {
        let ledger = Ledger::default();
        let sink = Arc::new(ComponentLedger::new("out", ComponentKind::Sink, "http"));
        ledger.register(sink.clone());
        let task = tokio::spawn(run(ledger.clone(), Duration::from_secs(5), Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!sink.snapshot().stalled);
        task.abort();
    }
}
