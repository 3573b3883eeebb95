//! Source side: framing (how a byte stream splits into frames) and decoding (frame → event).

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::event::{LegacyTemplate, fields};
use vrl::value::{KeyString, Value};

/// `decoding` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodingConfig {
    /// `bytes` (default): the frame is the `message`. `json`: the frame is a JSON object (or an
    /// array of objects) whose fields become the event.
    #[serde(default)]
    pub codec: DecodingCodec,
    pub json: Option<JsonDecodingOptions>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodingCodec {
    #[default]
    Bytes,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonDecodingOptions {
    /// Replace invalid UTF-8 instead of failing. Default true.
    #[serde(default = "crate::default_true")]
    pub lossy: bool,
}

/// `framing` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FramingConfig {
    pub method: Option<FramingMethod>,
    pub newline_delimited: Option<MaxLength>,
    pub character_delimited: Option<CharacterDelimited>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FramingMethod {
    Bytes,
    NewlineDelimited,
    CharacterDelimited,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxLength {
    /// Longest frame in bytes; longer frames are discarded and counted. Default: none.
    pub max_length: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharacterDelimited {
    /// One ASCII character.
    pub delimiter: char,
    pub max_length: Option<usize>,
}

/// Splits a byte stream into frames.
#[derive(Debug, Clone)]
pub struct Framer {
    /// `None` means the whole input (a datagram, a request body) is one frame.
    delimiter: Option<u8>,
    max_length: Option<usize>,
}

impl Framer {
    /// Whether the whole input is one frame, whatever its length.
    pub fn is_bytes(&self) -> bool {
        self.delimiter.is_none() && self.max_length.is_none()
    }
}

impl FramingConfig {
    /// `default_method` is used when `method` is unset (newline for streams, bytes for messages).
    pub fn framer(&self, default_method: FramingMethod, legacy_max_length: Option<usize>) -> Result<Framer, String> {
        let method = self.method.unwrap_or(default_method);
        Ok(match method {
            FramingMethod::Bytes => Framer { delimiter: None, max_length: legacy_max_length },
            FramingMethod::NewlineDelimited => Framer {
                delimiter: Some(b'\n'),
                max_length: self.newline_delimited.as_ref().and_then(|n| n.max_length).or(legacy_max_length),
            },
            FramingMethod::CharacterDelimited => {
                let c = self
                    .character_delimited
                    .as_ref()
                    .ok_or("`framing.character_delimited.delimiter` is required for this method")?;
                if !c.delimiter.is_ascii() {
                    return Err("`framing.character_delimited.delimiter` must be one ASCII character".into());
                }
                Framer { delimiter: Some(c.delimiter as u8), max_length: c.max_length.or(legacy_max_length) }
            }
        })
    }
}

/// What a framing pass found that is not a frame.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames longer than `max_length`, discarded.
    pub oversized: usize,
}

impl Framer {
    /// Splits every complete frame off the front of `buf` into `out`. The unfinished tail stays
    /// in `buf`. Frames share `buf`'s allocation (no copy). A trailing `\r` is kept, as Vector does.
    pub fn split(&self, buf: &mut BytesMut, out: &mut Vec<Bytes>, stats: &mut FrameStats) {
        let Some(delimiter) = self.delimiter else {
            if !buf.is_empty() {
                self.push(buf.split().freeze(), out, stats);
            }
            return;
        };
        let mut start = 0;
        let mut ends = Vec::new();
        for end in memchr::memchr_iter(delimiter, buf) {
            ends.push((start, end));
            start = end + 1;
        }
        if ends.is_empty() {
            return;
        }
        let whole = buf.split_to(start).freeze();
        for (s, e) in ends {
            self.push(whole.slice(s..e), out, stats);
        }
    }

    /// The last, undelimited frame at end of input.
    pub fn finish(&self, buf: &mut BytesMut, out: &mut Vec<Bytes>, stats: &mut FrameStats) {
        if !buf.is_empty() {
            self.push(buf.split().freeze(), out, stats);
        }
    }

    fn push(&self, frame: Bytes, out: &mut Vec<Bytes>, stats: &mut FrameStats) {
        match self.max_length {
            Some(max) if frame.len() > max => stats.oversized += 1,
            _ if frame.is_empty() && self.delimiter.is_some() => {}
            _ => out.push(frame),
        }
    }

    /// True when a partial frame in `buf` is already longer than allowed (skip to the next
    /// delimiter rather than buffering without bound).
    pub fn tail_oversized(&self, buf: &BytesMut) -> bool {
        self.max_length.is_some_and(|max| buf.len() > max)
    }
}

/// Turns frames into events in Vector's legacy namespace.
#[derive(Debug, Clone)]
pub struct Decoder {
    codec: DecodingCodec,
    source_type: &'static str,
}

impl DecodingConfig {
    pub fn decoder(&self, source_type: &'static str) -> Decoder {
        Decoder { codec: self.codec, source_type }
    }

    /// Whether the default framing for streams is newline (bytes and json both are).
    pub fn default_stream_framing(&self) -> FramingMethod {
        FramingMethod::NewlineDelimited
    }
}

impl Decoder {
    pub fn source_type(&self) -> &'static str {
        self.source_type
    }

    /// Decodes one frame, pushing its events to `out`.
    pub fn decode(&self, frame: Bytes, template: &LegacyTemplate, out: &mut Vec<LogEvent>) -> Result<(), String> {
        match self.codec {
            DecodingCodec::Bytes => {
                out.push(template.event(frame));
                Ok(())
            }
            DecodingCodec::Json => {
                // Strings are slices of the frame, which the event would hold anyway.
                let value = sluice_core::json::parse(frame).map_err(|e| format!("invalid JSON: {e}"))?;
                match value {
                    Value::Object(_) => {
                        out.push(self.finish_json(value, template));
                        Ok(())
                    }
                    Value::Array(items) => {
                        if items.iter().any(|i| !matches!(i, Value::Object(_))) {
                            return Err("JSON array items must be objects".into());
                        }
                        out.extend(items.into_iter().map(|v| self.finish_json(v, template)));
                        Ok(())
                    }
                    _ => Err("JSON frame must be an object or an array of objects".into()),
                }
            }
        }
    }

    fn finish_json(&self, value: Value, template: &LegacyTemplate) -> LogEvent {
        let meta = template.metadata();
        let mut event = LogEvent::from_value(value, meta.clone());
        if let Value::Object(map) = event.value_mut() {
            map.entry(KeyString::from(fields::timestamp())).or_insert_with(|| Value::Timestamp(meta.ingest_time()));
            if let Some(host) = template.host() {
                map.entry(KeyString::from(fields::host())).or_insert_with(|| Value::Bytes(host.clone()));
            }
            map.insert(
                KeyString::from(fields::source_type()),
                Value::Bytes(Bytes::from_static(self.source_type.as_bytes())),
            );
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_framing_keeps_partial_tail_and_drops_oversized() {
        let framer = Framer { delimiter: Some(b'\n'), max_length: Some(5) };
        let mut buf = BytesMut::from(&b"ab\ntoolong\r\ncd\nef"[..]);
        let (mut out, mut stats) = (Vec::new(), FrameStats::default());
        framer.split(&mut buf, &mut out, &mut stats);
        assert_eq!(out, vec![Bytes::from("ab"), Bytes::from("cd")]);
        assert_eq!(stats.oversized, 1);
        assert_eq!(&buf[..], b"ef");
        framer.finish(&mut buf, &mut out, &mut stats);
        assert_eq!(out.last(), Some(&Bytes::from("ef")));
    }

    #[test]
    fn crlf_keeps_carriage_return() {
        let framer = Framer { delimiter: Some(b'\n'), max_length: None };
        let mut buf = BytesMut::from(&b"a\r\n"[..]);
        let (mut out, mut stats) = (Vec::new(), FrameStats::default());
        framer.split(&mut buf, &mut out, &mut stats);
        assert_eq!(out, vec![Bytes::from("a\r")]);
    }
}
