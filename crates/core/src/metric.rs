//! Metric names, in one place. Names follow Vector's so dashboards carry over.

/// Every metric sluice emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricName {
    ComponentReceivedEventsTotal,
    ComponentSentEventsTotal,
    ComponentDiscardedEventsTotal,
    ComponentErrorsTotal,
    ComponentDeadLetteredEventsTotal,
    ComponentErroredEventsTotal,
    ComponentInFlightEvents,
    BufferSizeEvents,
    BufferMaxSizeEvents,
    DeadLetterQueueEvents,
    DeadLetterQueueBytes,
    UnresolvedEventDropsTotal,
}

impl MetricName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ComponentReceivedEventsTotal => "component_received_events_total",
            Self::ComponentSentEventsTotal => "component_sent_events_total",
            Self::ComponentDiscardedEventsTotal => "component_discarded_events_total",
            Self::ComponentErrorsTotal => "component_errors_total",
            Self::ComponentDeadLetteredEventsTotal => "component_dead_lettered_events_total",
            Self::ComponentErroredEventsTotal => "component_errored_events_total",
            Self::ComponentInFlightEvents => "component_in_flight_events",
            Self::BufferSizeEvents => "buffer_size_events",
            Self::BufferMaxSizeEvents => "buffer_max_size_events",
            Self::DeadLetterQueueEvents => "component_dead_letter_queue_events",
            Self::DeadLetterQueueBytes => "component_dead_letter_queue_bytes",
            Self::UnresolvedEventDropsTotal => "sluice_unresolved_event_drops_total",
        }
    }
}
