//! The ledger as Prometheus text exposition (served at `/metrics` by the API). The samples
//! and the format live in `sluice_core::metric`, shared with the `internal_metrics` source.
//!
//! Names and labels follow Vector's (`component_id`, `component_kind`, `component_type`) so
//! dashboards carry over; sluice adds `component_dead_lettered_events_total`,
//! `component_errored_events_total`, `component_in_flight_events` and the DLQ size gauges.

use sluice_core::ledger::LedgerSnapshot;

/// Renders every component's counters and gauges.
pub fn render(ledger: &LedgerSnapshot) -> String {
    sluice_core::metric::render_prometheus(ledger)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_core::ledger::{ComponentKind, ComponentLedger, Ledger};

    use super::*;

    #[test]
    fn renders_vector_names_and_labels() {
        let ledger = Ledger::default();
        let filter = Arc::new(ComponentLedger::new("keep", ComponentKind::Transform, "filter"));
        filter.accept(10);
        filter.sent(7);
        filter.discarded(3, "filter", true);
        filter.error("condition_failed", "processing");
        ledger.register(filter);
        let sink = Arc::new(ComponentLedger::new("out", ComponentKind::Sink, "http"));
        sink.accept(2);
        sink.dead_lettered(2, "permanent");
        sink.set_buffer_probe(Box::new(|| sluice_core::ledger::BufferLevel {
            events: Some(3),
            max_events: Some(500),
            ..Default::default()
        }));
        sink.set_dead_letter_queue_size(2, 900);
        sink.grow_dead_letter_queue(1, 100);
        ledger.register(sink);
        let text = render(&ledger.snapshot());
        assert!(text.contains(
            "component_dead_lettered_events_total{component_id=\"out\",component_kind=\"sink\",component_type=\"http\",reason=\"permanent\"} 2"
        ));
        assert!(text.contains(
            "component_received_events_total{component_id=\"keep\",component_kind=\"transform\",component_type=\"filter\"} 10"
        ));
        assert!(text.contains(
            "component_discarded_events_total{component_id=\"keep\",component_kind=\"transform\",component_type=\"filter\",intentional=\"true\",reason=\"filter\"} 3"
        ));
        assert!(text.contains("error_type=\"condition_failed\",stage=\"processing\"} 1"));
        assert!(text.contains("# TYPE component_in_flight_events gauge"));
        let out = "{component_id=\"out\",component_kind=\"sink\",component_type=\"http\"}";
        assert!(text.contains(&format!("buffer_size_events{out} 3\n")), "{text}");
        assert!(text.contains(&format!("buffer_max_size_events{out} 500\n")));
        assert!(text.contains(&format!("component_dead_letter_queue_events{out} 3\n")));
        assert!(text.contains(&format!("component_dead_letter_queue_bytes{out} 1000\n")));
        assert!(!text.contains("buffer_size_events{component_id=\"keep\""), "transforms have no sink buffer");
        assert!(text.contains("\nsluice_unresolved_event_drops_total 0\n"));
    }
}
