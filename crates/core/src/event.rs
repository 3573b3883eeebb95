//! Log events: a VRL value plus metadata.
//!
//! The event body is a `vrl::value::Value` object so the remap transform runs without
//! conversion. Metadata carries what travels with the event but is not part of it: the source
//! id, the ingest time, the finalizer, per-event secrets (VRL's `set_secret`), VRL's `%`
//! metadata object and the dead-letter history.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use vrl::value::{KeyString, ObjectMap, Secrets, Value};

use crate::ack::{EventFinalizer, Outcome};

/// Events move between tasks in chunks, never one at a time.
pub type Chunk = Vec<LogEvent>;

/// Vector's legacy-namespace field names.
pub mod fields {
    pub const MESSAGE: &str = "message";
    pub const TIMESTAMP: &str = "timestamp";
    pub const HOST: &str = "host";
    pub const SOURCE_TYPE: &str = "source_type";
}

/// One failure recorded on an event that went to a dead-letter destination.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeadLetterRecord {
    pub reason: String,
    pub message: String,
    pub status: Option<u16>,
    pub sink_id: String,
    pub sink_type: String,
    pub attempts: u32,
    pub first_failure: DateTime<Utc>,
    pub last_failure: DateTime<Utc>,
}

/// What travels with an event but is not part of its body.
#[derive(Debug, Clone)]
pub struct EventMetadata {
    source_id: Arc<str>,
    ingest_time: DateTime<Utc>,
    finalizer: EventFinalizer,
    secrets: Secrets,
    /// VRL's `%` metadata object (remap's `reroute_dropped` annotates it).
    value: Value,
    dead_letters: Vec<DeadLetterRecord>,
}

impl EventMetadata {
    pub fn new(source_id: Arc<str>, ingest_time: DateTime<Utc>) -> Self {
        Self {
            source_id,
            ingest_time,
            finalizer: EventFinalizer::default(),
            secrets: Secrets::new(),
            value: Value::Object(ObjectMap::new()),
            dead_letters: Vec::new(),
        }
    }

    pub fn ingest_time(&self) -> DateTime<Utc> {
        self.ingest_time
    }

    /// Attaches the finalizer of an acknowledgeable unit (every event cloned from this
    /// metadata shares it).
    pub fn set_finalizer(&mut self, finalizer: EventFinalizer) {
        std::mem::replace(&mut self.finalizer, finalizer).release_unused();
    }
}

/// A log event.
#[derive(Debug, Clone)]
pub struct LogEvent {
    value: Value,
    metadata: EventMetadata,
}

impl LogEvent {
    /// An event with the given body (normally an object).
    pub fn from_value(value: Value, metadata: EventMetadata) -> Self {
        Self { value, metadata }
    }

    /// An event in Vector's legacy namespace: `message`, `timestamp`, `host` (when known) and
    /// `source_type`.
    pub fn legacy(message: Bytes, source_type: &'static str, host: Option<&Bytes>, metadata: EventMetadata) -> Self {
        let mut object = ObjectMap::new();
        object.insert(KeyString::from(fields::MESSAGE), Value::Bytes(message));
        object.insert(KeyString::from(fields::TIMESTAMP), Value::Timestamp(metadata.ingest_time));
        if let Some(host) = host {
            object.insert(KeyString::from(fields::HOST), Value::Bytes(host.clone()));
        }
        object.insert(KeyString::from(fields::SOURCE_TYPE), Value::Bytes(Bytes::from_static(source_type.as_bytes())));
        Self { value: Value::Object(object), metadata }
    }

    pub fn value(&self) -> &Value {
        &self.value
    }
    pub fn value_mut(&mut self) -> &mut Value {
        &mut self.value
    }
    pub fn into_parts(self) -> (Value, EventMetadata) {
        (self.value, self.metadata)
    }

    /// Looks up a top-level field.
    pub fn get(&self, field: &str) -> Option<&Value> {
        match &self.value {
            Value::Object(map) => map.get(field),
            _ => None,
        }
    }

    /// Sets a top-level field; a non-object body is first wrapped as `message`.
    pub fn insert(&mut self, field: &str, value: Value) {
        if !matches!(self.value, Value::Object(_)) {
            let old = std::mem::replace(&mut self.value, Value::Object(ObjectMap::new()));
            if let Value::Object(map) = &mut self.value {
                map.insert(KeyString::from(fields::MESSAGE), old);
            }
        }
        if let Value::Object(map) = &mut self.value {
            map.insert(KeyString::from(field), value);
        }
    }

    pub fn source_id(&self) -> &Arc<str> {
        &self.metadata.source_id
    }
    pub fn ingest_time(&self) -> DateTime<Utc> {
        self.metadata.ingest_time
    }
    pub fn secrets(&self) -> &Secrets {
        &self.metadata.secrets
    }
    pub fn secrets_mut(&mut self) -> &mut Secrets {
        &mut self.metadata.secrets
    }
    pub fn metadata_value(&self) -> &Value {
        &self.metadata.value
    }
    pub fn metadata_value_mut(&mut self) -> &mut Value {
        &mut self.metadata.value
    }
    pub fn dead_letters(&self) -> &[DeadLetterRecord] {
        &self.metadata.dead_letters
    }
    pub fn push_dead_letter(&mut self, record: DeadLetterRecord) {
        self.metadata.dead_letters.push(record);
    }

    /// Body, `%` metadata and secrets at once, as VRL's target needs them.
    pub fn vrl_parts_mut(&mut self) -> (&mut Value, &mut Value, &mut Secrets) {
        (&mut self.value, &mut self.metadata.value, &mut self.metadata.secrets)
    }

    /// Attaches the finalizer of an acknowledgeable unit.
    pub fn with_finalizer(mut self, finalizer: EventFinalizer) -> Self {
        self.metadata.finalizer = finalizer;
        self
    }

    /// Takes the finalizer off, leaving the event untracked.
    pub fn take_finalizer(&mut self) -> EventFinalizer {
        std::mem::take(&mut self.metadata.finalizer)
    }

    /// Resolves this copy with an explicit outcome and frees it.
    pub fn resolve(mut self, outcome: Outcome) {
        self.take_finalizer().resolve(outcome);
    }
}

/// Resolves every event of a chunk with one outcome.
pub fn resolve_all(events: impl IntoIterator<Item = LogEvent>, outcome: Outcome) {
    for event in events {
        event.resolve(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_event_has_vector_fields() {
        let host = Bytes::from_static(b"node-1");
        let meta = EventMetadata::new(Arc::from("in"), Utc::now());
        let event = LogEvent::legacy(Bytes::from_static(b"hi"), "stdin", Some(&host), meta);
        assert_eq!(event.get("message"), Some(&Value::from("hi")));
        assert_eq!(event.get("host"), Some(&Value::from("node-1")));
        assert_eq!(event.get("source_type"), Some(&Value::from("stdin")));
        assert!(matches!(event.get("timestamp"), Some(Value::Timestamp(_))));
    }

    #[test]
    fn insert_on_non_object_wraps_message() {
        let meta = EventMetadata::new(Arc::from("in"), Utc::now());
        let mut event = LogEvent::from_value(Value::from("raw"), meta);
        event.insert("k", Value::from(1));
        assert_eq!(event.get("message"), Some(&Value::from("raw")));
        assert_eq!(event.get("k"), Some(&Value::from(1)));
    }
}
