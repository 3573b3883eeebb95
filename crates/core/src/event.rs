//! Log events: a VRL value plus metadata.
//!
//! The event body is a `vrl::value::Value` object so the remap transform runs without
//! conversion. Metadata carries what travels with the event but is not part of it: the source
//! id, the ingest time, the finalizer, per-event secrets (VRL's `set_secret`), VRL's `%`
//! metadata object and the dead-letter history.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use vrl::value::{KeyString, ObjectMap, Secrets, Value};

use crate::ack::{EventFinalizer, Outcome};

/// Events move between tasks in chunks, never one at a time.
pub type Chunk = Vec<LogEvent>;

/// The field names of the log schema (Vector's `log_schema`, legacy namespace): where sources
/// put the message, the time, the host and the source type, and where sinks look for them.
/// Set once per process, before any component is built (a reload cannot change them); the
/// defaults are Vector's.
pub mod fields {

    use std::sync::OnceLock;

    /// `log_schema.message_key`, `timestamp_key`, `host_key`, `source_type_key`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LogSchema {
        pub message: &'static str,
        pub timestamp: &'static str,
        pub host: &'static str,
        pub source_type: &'static str,
    }

    impl Default for LogSchema {
        fn default() -> Self {
            Self { message: "message", timestamp: "timestamp", host: "host", source_type: "source_type" }
        }
    }

    static SCHEMA: OnceLock<LogSchema> = OnceLock::new();

    /// Sets the process's log schema. `false` when another one was set before (the first
    /// stays).
    pub fn set(schema: LogSchema) -> bool {
        SCHEMA.get_or_init(|| schema.clone()) == &schema
    }

    fn schema() -> &'static LogSchema {
        SCHEMA.get_or_init(LogSchema::default)
    }

    pub fn message() -> &'static str {
        schema().message
    }

    pub fn timestamp() -> &'static str {
        schema().timestamp
    }

    pub fn host() -> &'static str {
        schema().host
    }

    pub fn source_type() -> &'static str {
        schema().source_type
    }
}

/// Interns a component id: every event carries its source's id, and a `&'static str` costs
/// nothing to copy or drop (an `Arc` would bounce one refcount between threads per event).
/// Ids are few and live as long as the process.
pub fn intern(id: &str) -> &'static str {
    static IDS: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    let mut ids = match IDS.get_or_init(Default::default).lock() {
        Ok(ids) => ids,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(existing) = ids.get(id) {
        return existing;
    }
    let leaked: &'static str = Box::leak(id.to_owned().into_boxed_str());
    ids.insert(leaked);
    leaked
}

/// An estimate of the memory `value` takes, for buffers limited in bytes: the bytes of its
/// strings and keys plus a fixed overhead per value.
fn estimated_bytes(value: &Value) -> usize {
    const OVERHEAD: usize = 32;
    let inner: usize = match value {
        Value::Bytes(bytes) => bytes.len(),
        Value::String(text) => text.len(),
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + estimated_bytes(v)).sum(),
        Value::Array(items) => items.iter().map(estimated_bytes).sum(),
        _ => 0,
    };
    OVERHEAD + inner
}

/// The estimated memory of a chunk's events (see [`estimated_bytes`]).
pub fn chunk_bytes(events: &[LogEvent]) -> usize {
    events.iter().map(|e| estimated_bytes(e.value())).sum()
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
    source_id: &'static str,
    ingest_time: DateTime<Utc>,
    finalizer: EventFinalizer,
    /// Secrets, VRL's `%` metadata and dead-letter history; `None` while all are empty, which
    /// keeps the common event small and free of extra allocations.
    extras: Option<Box<Extras>>,
}

#[derive(Debug, Clone)]
struct Extras {
    secrets: Secrets,
    /// VRL's `%` metadata object (remap's `reroute_dropped` annotates it).
    value: Value,
    dead_letters: Vec<DeadLetterRecord>,
}

impl Default for Extras {
    fn default() -> Self {
        Self { secrets: Secrets::new(), value: Value::Object(ObjectMap::new()), dead_letters: Vec::new() }
    }
}

impl Extras {
    fn is_empty(&self) -> bool {
        self.secrets == Secrets::new()
            && self.dead_letters.is_empty()
            && matches!(&self.value, Value::Object(map) if map.is_empty())
    }
}

impl EventMetadata {
    pub fn new(source_id: &str, ingest_time: DateTime<Utc>) -> Self {
        Self { source_id: intern(source_id), ingest_time, finalizer: EventFinalizer::default(), extras: None }
    }

    pub fn ingest_time(&self) -> DateTime<Utc> {
        self.ingest_time
    }

    /// Attaches the finalizer of an acknowledgeable unit (every event cloned from this
    /// metadata shares it).
    pub fn set_finalizer(&mut self, finalizer: EventFinalizer) {
        std::mem::replace(&mut self.finalizer, finalizer).release_unused();
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Default::default)
    }
}

/// Builds legacy-namespace events that share everything but `message`: the object is built
/// once per chunk and cloned per event (no key searches), the metadata likewise.
#[derive(Debug, Clone)]
pub struct LegacyTemplate {
    object: ObjectMap,
    message_index: usize,
    metadata: EventMetadata,
    host: Option<Bytes>,
}

impl LegacyTemplate {
    pub fn new(source_type: &'static str, host: Option<&Bytes>, metadata: EventMetadata) -> Self {
        let mut object = ObjectMap::new();
        object.insert(KeyString::from(fields::message()), Value::Null);
        object.insert(KeyString::from(fields::timestamp()), Value::Timestamp(metadata.ingest_time));
        if let Some(host) = host {
            object.insert(KeyString::from(fields::host()), Value::Bytes(host.clone()));
        }
        object.insert(KeyString::from(fields::source_type()), Value::Bytes(Bytes::from_static(source_type.as_bytes())));
        let message_index = object.keys().position(|k| k.as_str() == fields::message()).unwrap_or(0);
        Self { object, message_index, metadata, host: host.cloned() }
    }

    /// Sets a field every event made from now on carries (`file`, `kubernetes.*`...).
    pub fn set_field(&mut self, key: &str, value: Value) {
        self.object.insert(KeyString::from(key), value);
        self.message_index = self.object.keys().position(|k| k.as_str() == fields::message()).unwrap_or(0);
    }

    /// An event whose `message` is `message`.
    pub fn event(&self, message: Bytes) -> LogEvent {
        let mut object = self.object.clone();
        if let Some(slot) = object.values_mut().nth(self.message_index) {
            *slot = Value::Bytes(message);
        }
        LogEvent { value: Value::Object(object), metadata: self.metadata.clone() }
    }

    pub fn metadata(&self) -> &EventMetadata {
        &self.metadata
    }

    pub fn host(&self) -> Option<&Bytes> {
        self.host.as_ref()
    }

    /// Attaches the finalizer that every event made from now on shares.
    pub fn set_finalizer(&mut self, finalizer: EventFinalizer) {
        self.metadata.set_finalizer(finalizer);
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
        object.insert(KeyString::from(fields::message()), Value::Bytes(message));
        object.insert(KeyString::from(fields::timestamp()), Value::Timestamp(metadata.ingest_time));
        if let Some(host) = host {
            object.insert(KeyString::from(fields::host()), Value::Bytes(host.clone()));
        }
        object.insert(KeyString::from(fields::source_type()), Value::Bytes(Bytes::from_static(source_type.as_bytes())));
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
                map.insert(KeyString::from(fields::message()), old);
            }
        }
        if let Value::Object(map) = &mut self.value {
            map.insert(KeyString::from(field), value);
        }
    }

    pub fn source_id(&self) -> &'static str {
        self.metadata.source_id
    }
    pub fn ingest_time(&self) -> DateTime<Utc> {
        self.metadata.ingest_time
    }
    /// The value of secret `key`, if the event has one.
    pub fn secret(&self, key: &str) -> Option<&str> {
        self.metadata.extras.as_ref()?.secrets.get(key).map(|s| s.as_ref())
    }
    pub fn set_secret(&mut self, key: &str, value: &str) {
        self.metadata.extras_mut().secrets.insert(key, value);
    }
    /// Every secret, as (key, value). VRL's `Secrets` cannot be iterated, but its `Debug`
    /// lists the keys (values redacted); each key read back is checked with `get`.
    pub fn secrets(&self) -> Vec<(String, String)> {
        let Some(extras) = self.metadata.extras.as_ref() else { return Vec::new() };
        if extras.secrets == Secrets::new() {
            return Vec::new();
        }
        debug_keys(&format!("{:?}", extras.secrets))
            .into_iter()
            .filter_map(|key| extras.secrets.get(&key).map(|value| (key, value.to_string())))
            .collect()
    }
    /// VRL's `%` metadata object, if the event has any.
    pub fn metadata_value(&self) -> Option<&Value> {
        self.metadata.extras.as_ref().map(|e| &e.value)
    }
    pub fn metadata_value_mut(&mut self) -> &mut Value {
        &mut self.metadata.extras_mut().value
    }
    pub fn dead_letters(&self) -> &[DeadLetterRecord] {
        self.metadata.extras.as_ref().map_or(&[], |e| &e.dead_letters)
    }
    pub fn push_dead_letter(&mut self, record: DeadLetterRecord) {
        self.metadata.extras_mut().dead_letters.push(record);
    }

    /// Takes back the record pushed last (an event that could not travel on after all).
    pub fn pop_dead_letter(&mut self) -> Option<DeadLetterRecord> {
        self.metadata.extras.as_mut().and_then(|e| e.dead_letters.pop())
    }

    /// Runs `f` on the body, `%` metadata and secrets at once, as VRL's target needs them.
    /// Allocates nothing for events without metadata unless `f` adds some.
    pub fn with_vrl_parts<R>(&mut self, f: impl FnOnce(&mut Value, &mut Value, &mut Secrets) -> R) -> R {
        let mut extras = self.metadata.extras.take().map(|b| *b).unwrap_or_default();
        let result = f(&mut self.value, &mut extras.value, &mut extras.secrets);
        if !extras.is_empty() {
            self.metadata.extras = Some(Box::new(extras));
        }
        result
    }

    /// Attaches the finalizer of an acknowledgeable unit.
    pub fn with_finalizer(mut self, finalizer: EventFinalizer) -> Self {
        self.metadata.finalizer = finalizer;
        self
    }

    /// Attaches a finalizer to an event that has none (events read back from storage).
    pub fn set_finalizer(&mut self, finalizer: EventFinalizer) {
        std::mem::replace(&mut self.metadata.finalizer, finalizer).release_unused();
    }

    /// The finalizer of this event (cloned for a copy that outlives the event elsewhere).
    pub fn finalizer(&self) -> &EventFinalizer {
        &self.metadata.finalizer
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

/// The keys of a `Debug`-printed map of strings: `{"a": …, "b\"c": …}`.
fn debug_keys(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut chars = text.chars().peekable();
    // At the start of each entry, a key in quotes; values are skipped up to the next `, "` or `}`.
    let mut expect_key = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if expect_key => {
                let mut key = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some('n') => key.push('\n'),
                            Some('t') => key.push('\t'),
                            Some('r') => key.push('\r'),
                            Some('0') => key.push('\0'),
                            Some('u') => {
                                let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                                if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                                    key.push(c);
                                }
                            }
                            Some(other) => key.push(other),
                            None => break,
                        },
                        '"' => break,
                        other => key.push(other),
                    }
                }
                keys.push(key);
                expect_key = false;
            }
            '"' => {
                // A value string: skip it.
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            ',' => expect_key = true,
            _ => {}
        }
    }
    keys
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
        let meta = EventMetadata::new("in", Utc::now());
        let event = LogEvent::legacy(Bytes::from_static(b"hi"), "stdin", Some(&host), meta);
        assert_eq!(event.get("message"), Some(&Value::from("hi")));
        assert_eq!(event.get("host"), Some(&Value::from("node-1")));
        assert_eq!(event.get("source_type"), Some(&Value::from("stdin")));
        assert!(matches!(event.get("timestamp"), Some(Value::Timestamp(_))));
    }

    #[test]
    fn template_events_match_legacy_events() {
        let host = Bytes::from_static(b"node-1");
        let meta = EventMetadata::new("in", Utc::now());
        let template = LegacyTemplate::new("stdin", Some(&host), meta.clone());
        let a = template.event(Bytes::from_static(b"hi"));
        let b = LogEvent::legacy(Bytes::from_static(b"hi"), "stdin", Some(&host), meta);
        assert_eq!(a.value(), b.value());
        assert_eq!(a.source_id(), "in");
    }

    #[test]
    fn secrets_can_be_listed() {
        let mut event = LogEvent::from_value(Value::from("x"), EventMetadata::new("in", Utc::now()));
        assert!(event.secrets().is_empty());
        event.set_secret("api_key", "k1");
        event.set_secret("we\"ird, key", "v\"2");
        let mut secrets = event.secrets();
        secrets.sort();
        assert_eq!(
            secrets,
            vec![("api_key".to_owned(), "k1".to_owned()), ("we\"ird, key".to_owned(), "v\"2".to_owned())]
        );
    }

    #[test]
    fn insert_on_non_object_wraps_message() {
        let meta = EventMetadata::new("in", Utc::now());
        let mut event = LogEvent::from_value(Value::from("raw"), meta);
        event.insert("k", Value::from(1));
        assert_eq!(event.get("message"), Some(&Value::from("raw")));
        assert_eq!(event.get("k"), Some(&Value::from(1)));
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn estimated_bytes_count_strings_keys_and_an_overhead_per_value() {
        let event = LogEvent::from_value(Value::from("x".repeat(100)), EventMetadata::new("in", Utc::now()));
        assert_eq!(chunk_bytes(&[event]), 132);
        let object: Value = serde_json::from_str(r#"{"ab":"xyz","n":[1,2]}"#).unwrap_or(Value::Null);
        let event = LogEvent::from_value(object, EventMetadata::new("in", Utc::now()));
        // object 32 + "ab" 2 + (32 + 3) + "n" 1 + (32 + 32 + 32)
        assert_eq!(chunk_bytes(&[event]), 166);
    }
}
