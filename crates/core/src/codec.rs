//! A compact binary encoding of events, for what sluice stores itself (the disk buffer).
//!
//! Unlike JSON it keeps every VRL type (timestamps stay timestamps, bytes stay bytes) and every
//! part of an event that must survive a restart: body, source id, ingest time, `%` metadata,
//! secrets and dead-letter history. Finalizers are not stored (a stored event was already
//! acknowledged as stored). Format version 1, all integers little-endian:
//!
//! ```text
//! chunk  := varint(count) event*
//! event  := value(body) str(source_id) i64(ingest secs) u32(ingest nanos)
//!           value(% metadata, or null) varint(n) (str str)*  /* secrets */
//!           str(dead-letter history as JSON, "" when none)
//! value  := 0 null | 1 false | 2 true | 3 i64 | 4 f64 | 5 str(bytes) | 6 i64 secs u32 nanos
//!         | 7 str(regex) | 8 varint(n) value* | 9 varint(n) (str value)*
//! str    := varint(len) bytes
//! ```

use std::ops::Range;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use vrl::value::{KeyString, Value};

use crate::event::{DeadLetterRecord, EventMetadata, LogEvent};

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("undecodable event data at byte {at}: {what}")]
pub struct DecodeError {
    pub at: usize,
    pub what: &'static str,
}

/// Appends `n` as a LEB128 varint (the length and count prefix of this format).
pub fn varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    out.extend_from_slice(&t.timestamp().to_le_bytes());
    out.extend_from_slice(&t.timestamp_subsec_nanos().to_le_bytes());
}

fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0),
        Value::Boolean(false) => out.push(1),
        Value::Boolean(true) => out.push(2),
        Value::Integer(i) => {
            out.push(3);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Float(f) => {
            out.push(4);
            out.extend_from_slice(&f.into_inner().to_le_bytes());
        }
        Value::Bytes(b) => {
            out.push(5);
            string(out, b);
        }
        Value::Timestamp(t) => {
            out.push(6);
            timestamp(out, t);
        }
        Value::Regex(r) => {
            out.push(7);
            string(out, r.as_str().as_bytes());
        }
        Value::Array(items) => {
            out.push(8);
            varint(out, items.len() as u64);
            for item in items {
                value(out, item);
            }
        }
        Value::Object(map) => {
            out.push(9);
            varint(out, map.len() as u64);
            for (k, v) in map {
                string(out, k.as_bytes());
                value(out, v);
            }
        }
        other => {
            // Any other kind (VRL's string variant) is stored as bytes.
            out.push(5);
            string(out, other.to_str_lossy().unwrap_or_default().as_bytes());
        }
    }
}

/// Appends `events` to `out`.
pub fn encode_chunk(events: &[LogEvent], out: &mut Vec<u8>) {
    varint(out, events.len() as u64);
    for event in events {
        encode_event(event, out, Secrets::Keep);
    }
}

/// Whether an encoded event carries its secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// The disk buffer: the event goes on as it was.
    Keep,
    /// The dead-letter queue: secrets are never written there (a replay sets them again).
    Leave,
}

/// Appends one event, as one of a chunk's `event`s (the caller writes the count).
pub fn encode_event(event: &LogEvent, out: &mut Vec<u8>, secrets: Secrets) {
    value(out, event.value());
    string(out, event.source_id().as_bytes());
    timestamp(out, &event.ingest_time());
    value(out, event.metadata_value().unwrap_or(&Value::Null));
    let secrets = match secrets {
        Secrets::Keep => event.secrets(),
        Secrets::Leave => Default::default(),
    };
    varint(out, secrets.len() as u64);
    for (k, v) in &secrets {
        string(out, k.as_bytes());
        string(out, v.as_bytes());
    }
    let history = event.dead_letters();
    if history.is_empty() {
        string(out, b"");
    } else {
        string(out, serde_json::to_string(history).unwrap_or_default().as_bytes());
    }
}

struct Reader<'a> {
    data: &'a [u8],
    /// The same bytes, shared: byte values are slices of it, not copies.
    shared: &'a Bytes,
    at: usize,
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, what: &'static str) -> Result<T, DecodeError> {
        Err(DecodeError { at: self.at, what })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() - self.at < n {
            return self.fail("truncated");
        }
        let out = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        self.fail("varint too long")
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > (self.data.len() - self.at) as u64 * 8 + 8 {
            return self.fail("length beyond the data");
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        match std::str::from_utf8(self.bytes()?) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.fail("invalid UTF-8"),
        }
    }

    fn timestamp(&mut self) -> Result<DateTime<Utc>, DecodeError> {
        let secs = i64::from_le_bytes(self.array()?);
        let nanos = u32::from_le_bytes(self.array()?);
        match DateTime::from_timestamp(secs, nanos) {
            Some(t) => Ok(t),
            None => self.fail("timestamp out of range"),
        }
    }

    fn value(&mut self, depth: u32) -> Result<Value, DecodeError> {
        if depth > 128 {
            return self.fail("nested too deep");
        }
        let tag = self.take(1)?[0];
        Ok(match tag {
            0 => Value::Null,
            1 => Value::Boolean(false),
            2 => Value::Boolean(true),
            3 => Value::Integer(i64::from_le_bytes(self.array()?)),
            4 => Value::from_f64_or_zero(f64::from_le_bytes(self.array()?)),
            5 => {
                let n = self.len()?;
                let start = self.at;
                self.take(n)?;
                Value::Bytes(self.shared.slice(start..start + n))
            }
            6 => Value::Timestamp(self.timestamp()?),
            7 => {
                let text = self.text()?;
                match regex::Regex::new(&text) {
                    Ok(r) => Value::Regex(r.into()),
                    Err(_) => return self.fail("invalid regex"),
                }
            }
            8 => {
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            9 => {
                // Keys were written in order: building the map from them in one go is cheaper
                // than inserting one by one.
                let n = self.len()?;
                let mut entries = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let key = KeyString::from(self.text()?);
                    entries.push((key, self.value(depth + 1)?));
                }
                Value::Object(entries.into_iter().collect())
            }
            _ => return self.fail("unknown value tag"),
        })
    }
}

/// Decodes a chunk written by [`encode_chunk`]. The events have no finalizer; their byte
/// values share `data`.
pub fn decode_chunk(data: &Bytes) -> Result<Vec<LogEvent>, DecodeError> {
    let mut events = Vec::new();
    decode_with(data, &mut events, |event, _| event)?;
    Ok(events)
}

/// [`decode_chunk`], with the bytes of `data` each event was decoded from.
pub fn decode_chunk_spans(data: &Bytes) -> Result<Vec<(LogEvent, Range<usize>)>, DecodeError> {
    let mut events = Vec::new();
    decode_with(data, &mut events, |event, span| (event, span))?;
    Ok(events)
}

fn decode_with<T>(
    data: &Bytes,
    events: &mut Vec<T>,
    each: impl Fn(LogEvent, Range<usize>) -> T,
) -> Result<(), DecodeError> {
    let mut r = Reader { data, shared: data, at: 0 };
    let count = r.len()?;
    events.reserve(count.min(65_536));
    // Events of a chunk mostly come from one source: intern its id once.
    let mut last_source: (&[u8], &'static str) = (b"", "");
    for _ in 0..count {
        let start = r.at;
        let body = r.value(0)?;
        let source = r.bytes()?;
        if source != last_source.0 || last_source.1.is_empty() {
            match std::str::from_utf8(source) {
                Ok(id) => last_source = (source, crate::event::intern(id)),
                Err(_) => return r.fail("invalid UTF-8"),
            }
        }
        let ingest = r.timestamp()?;
        let metadata_value = r.value(0)?;
        let mut event = LogEvent::from_value(body, EventMetadata::new(last_source.1, ingest));
        if let Value::Object(map) = metadata_value
            && !map.is_empty()
        {
            *event.metadata_value_mut() = Value::Object(map);
        }
        let secrets = r.len()?;
        for _ in 0..secrets {
            let (k, v) = (r.text()?, r.text()?);
            event.set_secret(&k, &v);
        }
        let history = r.bytes()?;
        if !history.is_empty() {
            match serde_json::from_slice::<Vec<DeadLetterRecord>>(history) {
                Ok(records) => records.into_iter().for_each(|record| event.push_dead_letter(record)),
                Err(_) => return r.fail("invalid dead-letter history"),
            }
        }
        events.push(each(event, start..r.at));
    }
    if r.at != data.len() {
        return r.fail("trailing bytes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LogEvent {
        let json = serde_json::json!({
            "message": "héllo", "n": -42, "f": 1.5, "ok": true, "none": null,
            "list": [1, "two", {"three": 3}], "nested": {"a": {"b": []}},
        });
        let mut body: Value = serde_json::from_value(json).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut body {
            map.insert("timestamp".into(), Value::Timestamp(Utc::now()));
            map.insert("raw".into(), Value::Bytes(Bytes::from_static(b"\xff\x00bin")));
        }
        let mut event = LogEvent::from_value(body, EventMetadata::new("in", Utc::now()));
        event.set_secret("api_key", "k-1");
        if let Value::Object(meta) = event.metadata_value_mut() {
            meta.insert("dropped".into(), Value::from("why"));
        }
        event.push_dead_letter(DeadLetterRecord {
            reason: "permanent".into(),
            message: "403".into(),
            status: Some(403),
            sink_id: "out".into(),
            sink_type: "http".into(),
            attempts: 1,
            first_failure: Utc::now(),
            last_failure: Utc::now(),
        });
        event
    }

    #[test]
    fn every_part_of_an_event_round_trips() {
        let events = vec![sample(), LogEvent::from_value(Value::from("plain"), EventMetadata::new("b", Utc::now()))];
        let mut buf = Vec::new();
        encode_chunk(&events, &mut buf);
        let back = decode_chunk(&Bytes::from(buf)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.len(), 2);
        for (a, b) in events.iter().zip(&back) {
            let string_as_bytes = |v: &Value| serde_json::to_string(v).unwrap_or_default();
            assert_eq!(string_as_bytes(a.value()), string_as_bytes(b.value()));
            assert_eq!(a.source_id(), b.source_id());
            assert_eq!(a.ingest_time(), b.ingest_time());
            assert_eq!(a.secrets(), b.secrets());
            assert_eq!(a.dead_letters().len(), b.dead_letters().len());
            assert_eq!(a.metadata_value().map(string_as_bytes), b.metadata_value().map(string_as_bytes));
        }
        assert!(matches!(back[0].get("timestamp"), Some(Value::Timestamp(_))), "timestamps keep their type");
        assert_eq!(back[0].get("raw"), Some(&Value::Bytes(Bytes::from_static(b"\xff\x00bin"))));
    }

    #[test]
    fn damaged_data_is_an_error_never_a_panic() {
        let mut buf = Vec::new();
        encode_chunk(&[sample()], &mut buf);
        for cut in 0..buf.len() {
            assert!(decode_chunk(&Bytes::copy_from_slice(&buf[..cut])).is_err(), "truncated at {cut}");
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0xff;
            let _ = decode_chunk(&Bytes::from(bad));
        }
    }

    fn encoded(events: &[LogEvent]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_chunk(events, &mut out);
        out
    }

    proptest::proptest! {
        #![proptest_config(sluice_fuzz::config(1000))]

        /// A chunk damaged anywhere, in several places, cut or with ranges repeated (a disk
        /// buffer record whose checksum still matched, or a wire frame): it decodes to events
        /// or is refused, never a panic or a hang.
        #[test]
        fn a_damaged_chunk_decodes_or_is_refused(
            data in sluice_fuzz::mutated(vec![encoded(&[sample()]), encoded(&[sample(), sample(), sample()])], 8),
        ) {
            let _ = decode_chunk(&Bytes::from(data));
        }
    }
}
