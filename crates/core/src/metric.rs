//! Metrics: names in one place, the ledger as samples, and the Prometheus text format.
//!
//! Names and labels follow Vector's (`component_id`, `component_kind`, `component_type`) so
//! dashboards carry over. The same samples feed the built-in `/metrics` endpoint and the
//! `internal_metrics` source, so both always agree.

use std::fmt::Write;

use crate::ledger::{ComponentSnapshot, LedgerSnapshot};

/// Every metric sluice emits about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetricName {
    ComponentReceivedEventsTotal,
    ComponentSentEventsTotal,
    ComponentDiscardedEventsTotal,
    ComponentDeadLetteredEventsTotal,
    ComponentErroredEventsTotal,
    ComponentErrorsTotal,
    ComponentInFlightEvents,
    ComponentReceivedBytesTotal,
    ComponentSentBytesTotal,
    BufferSizeEvents,
    BufferMaxSizeEvents,
    BufferSizeBytes,
    BufferMaxSizeBytes,
    DeadLetterQueueEvents,
    DeadLetterQueueBytes,
    ComponentStalled,
    UnresolvedEventDropsTotal,
}

/// Counter (only grows) or gauge (a level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

impl MetricName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ComponentReceivedEventsTotal => "component_received_events_total",
            Self::ComponentSentEventsTotal => "component_sent_events_total",
            Self::ComponentDiscardedEventsTotal => "component_discarded_events_total",
            Self::ComponentDeadLetteredEventsTotal => "component_dead_lettered_events_total",
            Self::ComponentErroredEventsTotal => "component_errored_events_total",
            Self::ComponentErrorsTotal => "component_errors_total",
            Self::ComponentInFlightEvents => "component_in_flight_events",
            Self::ComponentReceivedBytesTotal => "component_received_bytes_total",
            Self::ComponentSentBytesTotal => "component_sent_bytes_total",
            Self::BufferSizeEvents => "buffer_size_events",
            Self::BufferMaxSizeEvents => "buffer_max_size_events",
            Self::BufferSizeBytes => "buffer_size_bytes",
            Self::BufferMaxSizeBytes => "buffer_max_size_bytes",
            Self::DeadLetterQueueEvents => "component_dead_letter_queue_events",
            Self::DeadLetterQueueBytes => "component_dead_letter_queue_bytes",
            Self::ComponentStalled => "component_stalled",
            Self::UnresolvedEventDropsTotal => "sluice_unresolved_event_drops_total",
        }
    }

    pub fn kind(self) -> MetricKind {
        match self {
            Self::ComponentInFlightEvents
            | Self::BufferSizeEvents
            | Self::BufferMaxSizeEvents
            | Self::BufferSizeBytes
            | Self::BufferMaxSizeBytes
            | Self::DeadLetterQueueEvents
            | Self::DeadLetterQueueBytes
            | Self::ComponentStalled => MetricKind::Gauge,
            _ => MetricKind::Counter,
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Self::ComponentReceivedEventsTotal => "Events that entered the component.",
            Self::ComponentSentEventsTotal => "Events the component passed on or delivered.",
            Self::ComponentDiscardedEventsTotal => {
                "Events discarded, by reason; intentional=\"true\" for a user's rule."
            }
            Self::ComponentDeadLetteredEventsTotal => "Events handed to the dead-letter queue, by reason.",
            Self::ComponentErroredEventsTotal => "Events that failed for good with nowhere durable to go.",
            Self::ComponentErrorsTotal => "Errors, by type and stage.",
            Self::ComponentInFlightEvents => "Events inside the component now (buffered, batched or being sent).",
            Self::ComponentReceivedBytesTotal => "Sources: bytes read from outside (bodies, lines, messages).",
            Self::ComponentSentBytesTotal => "Sinks: bytes delivered to the destination (before compression).",
            Self::BufferSizeEvents => "Events in the sink's buffer now (memory and disk stages).",
            Self::BufferMaxSizeEvents => "Capacity of the sink's input buffer, in events.",
            Self::BufferSizeBytes => {
                "Bytes in the sink's buffer now: its disk records, or the estimated size of a memory buffer limited in bytes."
            }
            Self::BufferMaxSizeBytes => "Capacity of the sink's buffer in bytes (`max_size`).",
            Self::DeadLetterQueueEvents => {
                "Events stored in the sink's disk dead-letter queue (measured every 30 s, grown on each write)."
            }
            Self::DeadLetterQueueBytes => "Bytes of the sink's disk dead-letter queue segments.",
            Self::ComponentStalled => {
                "1 while the component is stalled: holding events without progress, or diverted to its dead-letter queue."
            }
            Self::UnresolvedEventDropsTotal => "Event copies dropped without an outcome (a bug; counted as failed).",
        }
    }
}

/// One value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: MetricName,
    /// Label names and values, in output order.
    pub tags: Vec<(&'static str, String)>,
    pub value: f64,
}

fn component_tags(c: &ComponentSnapshot) -> Vec<(&'static str, String)> {
    vec![
        ("component_id", c.id.clone()),
        ("component_kind", c.kind.as_str().to_owned()),
        ("component_type", c.component_type.clone()),
    ]
}

impl LedgerSnapshot {
    /// Every series, grouped by name in [`MetricName`] order.
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        let mut push = |name, tags, value: f64| out.push(Sample { name, tags, value });
        for c in &self.components {
            let tags = component_tags(c);
            push(MetricName::ComponentReceivedEventsTotal, tags.clone(), c.received as f64);
            push(MetricName::ComponentSentEventsTotal, tags.clone(), c.sent as f64);
            for (reason, n) in &c.discarded {
                let intentional = c.discarded_intentional.get(reason).copied().unwrap_or(false);
                let mut t = tags.clone();
                t.push(("intentional", intentional.to_string()));
                t.push(("reason", reason.clone()));
                push(MetricName::ComponentDiscardedEventsTotal, t, *n as f64);
            }
            for (reason, n) in &c.dead_lettered_by_reason {
                let mut t = tags.clone();
                t.push(("reason", reason.clone()));
                push(MetricName::ComponentDeadLetteredEventsTotal, t, *n as f64);
            }
            push(MetricName::ComponentErroredEventsTotal, tags.clone(), c.errored as f64);
            for (key, n) in &c.errors {
                let (error_type, stage) = key.split_once('/').unwrap_or((key, ""));
                let mut t = tags.clone();
                t.push(("error_type", error_type.to_owned()));
                t.push(("stage", stage.to_owned()));
                push(MetricName::ComponentErrorsTotal, t, *n as f64);
            }
            push(MetricName::ComponentInFlightEvents, tags.clone(), c.in_flight as f64);
            // As Vector's: bytes in for sources, bytes out for sinks.
            match c.kind {
                crate::ledger::ComponentKind::Source => {
                    push(MetricName::ComponentReceivedBytesTotal, tags.clone(), c.received_bytes as f64);
                }
                crate::ledger::ComponentKind::Sink => {
                    push(MetricName::ComponentSentBytesTotal, tags.clone(), c.sent_bytes as f64);
                }
                crate::ledger::ComponentKind::Transform => {}
            }
            let gauges = [
                (MetricName::BufferSizeEvents, c.buffer_events),
                (MetricName::BufferMaxSizeEvents, c.buffer_max_events),
                (MetricName::BufferSizeBytes, c.buffer_bytes),
                (MetricName::BufferMaxSizeBytes, c.buffer_max_bytes),
                (MetricName::DeadLetterQueueEvents, c.dead_letter_queue_events),
                (MetricName::DeadLetterQueueBytes, c.dead_letter_queue_bytes),
            ];
            for (name, value) in gauges {
                if let Some(v) = value {
                    push(name, tags.clone(), v as f64);
                }
            }
            push(MetricName::ComponentStalled, tags.clone(), if c.stalled { 1.0 } else { 0.0 });
        }
        push(MetricName::UnresolvedEventDropsTotal, Vec::new(), self.unresolved_drops as f64);
        out.sort_by_key(|s| s.name);
        out
    }
}

/// Escapes a label value for the Prometheus text format.
pub fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes a number the way Prometheus expects (`+Inf`, `NaN`, integers without a fraction).
pub fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Writes one sample line: `name{a="x",b="y"} value [timestamp_ms]`.
pub fn write_sample<'a>(
    out: &mut String,
    name: &str,
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    value: f64,
    timestamp_ms: Option<i64>,
) {
    out.push_str(name);
    let mut first = true;
    for (k, v) in tags {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    write_value(out, value);
    if let Some(ts) = timestamp_ms {
        let _ = write!(out, " {ts}");
    }
    out.push('\n');
}

/// The whole ledger in the Prometheus text format (served at `/metrics`).
pub fn render_prometheus(ledger: &LedgerSnapshot) -> String {
    let mut out = String::new();
    let mut current = None;
    for sample in ledger.samples() {
        if current != Some(sample.name) {
            current = Some(sample.name);
            let name = sample.name.as_str();
            let _ =
                writeln!(out, "# HELP {name} {}\n# TYPE {name} {}", sample.name.help(), sample.name.kind().as_str());
        }
        write_sample(
            &mut out,
            sample.name.as_str(),
            sample.tags.iter().map(|(k, v)| (*k, v.as_str())),
            sample.value,
            None,
        );
    }
    out
}
