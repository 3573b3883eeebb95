//! The ledger as Prometheus text exposition (served at `/metrics` by the API).
//!
//! Names and labels follow Vector's (`component_id`, `component_kind`, `component_type`) so
//! dashboards carry over; sluice adds `component_dead_lettered_events_total`,
//! `component_errored_events_total` and `component_in_flight_events`.

use std::fmt::Write;

use sluice_core::ledger::LedgerSnapshot;
use sluice_core::metric::MetricName;

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders every component's counters.
pub fn render(ledger: &LedgerSnapshot) -> String {
    let mut out = String::new();
    let labels = |c: &sluice_core::ledger::ComponentSnapshot| {
        format!(
            "component_id=\"{}\",component_kind=\"{}\",component_type=\"{}\"",
            escape(&c.id),
            c.kind.as_str(),
            escape(&c.component_type)
        )
    };
    let mut family = |name: MetricName, kind: &str, help: &str, rows: Vec<(String, String)>| {
        let name = name.as_str();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    let cs = &ledger.components;
    family(
        MetricName::ComponentReceivedEventsTotal,
        "counter",
        "Events that entered the component.",
        cs.iter().map(|c| (labels(c), c.received.to_string())).collect(),
    );
    family(
        MetricName::ComponentSentEventsTotal,
        "counter",
        "Events the component passed on or delivered.",
        cs.iter().map(|c| (labels(c), c.sent.to_string())).collect(),
    );
    family(
        MetricName::ComponentDiscardedEventsTotal,
        "counter",
        "Events discarded, by reason; intentional=\"true\" for a user's rule.",
        cs.iter()
            .flat_map(|c| {
                c.discarded.iter().map(move |(reason, n)| {
                    let intentional = c.discarded_intentional.get(reason).copied().unwrap_or(false);
                    (
                        format!("{},intentional=\"{intentional}\",reason=\"{}\"", labels(c), escape(reason)),
                        n.to_string(),
                    )
                })
            })
            .collect(),
    );
    family(
        MetricName::ComponentDeadLetteredEventsTotal,
        "counter",
        "Events handed to the dead-letter queue, by reason.",
        cs.iter()
            .flat_map(|c| {
                c.dead_lettered_by_reason
                    .iter()
                    .map(move |(reason, n)| (format!("{},reason=\"{}\"", labels(c), escape(reason)), n.to_string()))
            })
            .collect(),
    );
    family(
        MetricName::ComponentErroredEventsTotal,
        "counter",
        "Events that failed for good with nowhere durable to go.",
        cs.iter().map(|c| (labels(c), c.errored.to_string())).collect(),
    );
    family(
        MetricName::ComponentErrorsTotal,
        "counter",
        "Errors, by type and stage.",
        cs.iter()
            .flat_map(|c| {
                c.errors.iter().map(move |(key, n)| {
                    let (error_type, stage) = key.split_once('/').unwrap_or((key, ""));
                    (
                        format!("{},error_type=\"{}\",stage=\"{}\"", labels(c), escape(error_type), escape(stage)),
                        n.to_string(),
                    )
                })
            })
            .collect(),
    );
    family(
        MetricName::ComponentInFlightEvents,
        "gauge",
        "Events inside the component now (buffered, batched or being sent).",
        cs.iter().map(|c| (labels(c), c.in_flight.to_string())).collect(),
    );
    let gauge = |pick: fn(&sluice_core::ledger::ComponentSnapshot) -> Option<u64>| -> Vec<(String, String)> {
        cs.iter().filter_map(|c| pick(c).map(|v| (labels(c), v.to_string()))).collect()
    };
    family(MetricName::BufferSizeEvents, "gauge", "Events in the sink's input buffer now.", gauge(|c| c.buffer_events));
    family(
        MetricName::BufferMaxSizeEvents,
        "gauge",
        "Capacity of the sink's input buffer, in events.",
        gauge(|c| c.buffer_max_events),
    );
    family(
        MetricName::DeadLetterQueueEvents,
        "gauge",
        "Events stored in the sink's disk dead-letter queue (measured every 30 s, grown on each write).",
        gauge(|c| c.dead_letter_queue_events),
    );
    family(
        MetricName::DeadLetterQueueBytes,
        "gauge",
        "Bytes of the sink's disk dead-letter queue segments.",
        gauge(|c| c.dead_letter_queue_bytes),
    );
    family(
        MetricName::UnresolvedEventDropsTotal,
        "counter",
        "Event copies dropped without an outcome (a bug; counted as failed).",
        vec![(String::new(), ledger.unresolved_drops.to_string())],
    );
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_core::ledger::{ComponentKind, ComponentLedger, Ledger};

    use super::*;

    #[test]
    fn renders_vector_names_and_labels() {
        let mut ledger = Ledger::default();
        let filter = Arc::new(ComponentLedger::new("keep", ComponentKind::Transform, "filter"));
        filter.accept(10);
        filter.sent(7);
        filter.discarded(3, "filter", true);
        filter.error("condition_failed", "processing");
        ledger.register(filter);
        let sink = Arc::new(ComponentLedger::new("out", ComponentKind::Sink, "http"));
        sink.accept(2);
        sink.dead_lettered(2, "permanent");
        sink.set_buffer_probe(Box::new(|| (3, 500)));
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
