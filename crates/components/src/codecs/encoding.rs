//! Sink side: `encoding` (event → bytes) and `framing` (how encoded events are joined).

use std::io::Write;

use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::component::ConfigIssue;
use sluice_core::json::Field;
use vrl::value::{ObjectMap, Value};

/// `encoding` block (Vector's field names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodingConfig {
    /// Required: `json`, `text`, `logfmt`, `csv` or `raw_message`.
    pub codec: Codec,
    /// Keep only these top-level fields.
    pub only_fields: Option<Vec<String>>,
    /// Remove these top-level fields.
    pub except_fields: Option<Vec<String>>,
    /// How timestamps are written. Default `rfc3339`.
    pub timestamp_format: Option<TimestampFormat>,
    pub json: Option<JsonOptions>,
    pub csv: Option<CsvOptions>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    Json,
    Text,
    Logfmt,
    Csv,
    RawMessage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    Rfc3339,
    Unix,
    UnixMs,
    UnixUs,
    UnixNs,
    UnixFloat,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonOptions {
    /// Pretty-print. Default false.
    #[serde(default)]
    pub pretty: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Required: the fields to write, in order.
    pub fields: Vec<String>,
    /// One ASCII character. Default `,`.
    #[serde(default = "default_csv_delimiter")]
    pub delimiter: char,
}

fn default_csv_delimiter() -> char {
    ','
}

/// `framing` block of sinks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkFraming {
    pub method: Option<SinkFramingMethod>,
    pub character_delimited: Option<SinkDelimiter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkFramingMethod {
    Bytes,
    NewlineDelimited,
    CharacterDelimited,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkDelimiter {
    pub delimiter: char,
}

impl SinkFraming {
    /// The bytes written after each event; `None` for `bytes`. Defaults to newline.
    pub fn delimiter(&self) -> Result<Option<u8>, ConfigIssue> {
        match self.method.unwrap_or(SinkFramingMethod::NewlineDelimited) {
            SinkFramingMethod::Bytes => Ok(None),
            SinkFramingMethod::NewlineDelimited => Ok(Some(b'\n')),
            SinkFramingMethod::CharacterDelimited => match &self.character_delimited {
                Some(d) if d.delimiter.is_ascii() => Ok(Some(d.delimiter as u8)),
                _ => Err(ConfigIssue::new(
                    "framing.character_delimited.delimiter",
                    "one ASCII character is required for this method",
                )),
            },
        }
    }
}

/// An event could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode event: {0}")]
pub struct EncodeError(pub String);

/// Encodes events; built once per sink from an [`EncodingConfig`].
#[derive(Debug, Clone)]
pub struct Encoder {
    config: EncodingConfig,
    transformer: Transformer,
    csv_delimiter: u8,
}

/// `encoding` of sinks whose wire format is fixed (elasticsearch, datadog_logs, clickhouse):
/// no codec, only how each event is reshaped first (Vector's "transformer" fields).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transformer {
    /// Keep only these top-level fields.
    pub only_fields: Option<Vec<String>>,
    /// Remove these top-level fields.
    pub except_fields: Option<Vec<String>>,
    /// How timestamps are written. Default `rfc3339`.
    pub timestamp_format: Option<TimestampFormat>,
}

impl Transformer {
    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.only_fields.is_some() && self.except_fields.is_some() {
            issues.push(ConfigIssue::new("encoding", "`only_fields` and `except_fields` cannot both be set"));
        }
        issues
    }

    /// True when events are written as they are.
    pub fn is_identity(&self) -> bool {
        self.only_fields.is_none()
            && self.except_fields.is_none()
            && self.timestamp_format.is_none_or(|f| f == TimestampFormat::Rfc3339)
    }

    /// `value` reshaped: borrowed as it is when nothing is configured.
    pub fn apply<'a>(&self, value: &'a Value) -> std::borrow::Cow<'a, Value> {
        if self.is_identity() {
            return std::borrow::Cow::Borrowed(value);
        }
        let keep = |k: &str| {
            self.only_fields.as_ref().is_none_or(|only| only.iter().any(|f| f == k))
                && self.except_fields.as_ref().is_none_or(|except| !except.iter().any(|f| f == k))
        };
        let mut value = match value {
            Value::Object(map) => {
                Value::Object(map.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            other => other.clone(),
        };
        if let Some(format) = self.timestamp_format {
            convert_timestamps(&mut value, format);
        }
        std::borrow::Cow::Owned(value)
    }
}

impl EncodingConfig {
    pub fn check(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.codec == Codec::Csv {
            match &self.csv {
                None => issues.push(ConfigIssue::new("encoding.csv.fields", "required when `codec = \"csv\"`")),
                Some(csv) if !csv.delimiter.is_ascii() => {
                    issues.push(ConfigIssue::new("encoding.csv.delimiter", "must be one ASCII character"))
                }
                _ => {}
            }
        }
        issues.extend(self.transformer().check());
        issues
    }

    fn transformer(&self) -> Transformer {
        Transformer {
            only_fields: self.only_fields.clone(),
            except_fields: self.except_fields.clone(),
            timestamp_format: self.timestamp_format,
        }
    }

    pub fn build(&self) -> Encoder {
        let csv_delimiter = self.csv.as_ref().map_or(b',', |c| c.delimiter as u8);
        Encoder { config: self.clone(), transformer: self.transformer(), csv_delimiter }
    }
}

fn write_scalar(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bytes(b) => buf.extend_from_slice(b),
        Value::Null => {}
        Value::Object(_) | Value::Array(_) => super::json::write_value(buf, value),
        other => {
            let _ = write!(buf, "{}", other.to_string_lossy());
        }
    }
}

fn convert_timestamps(value: &mut Value, format: TimestampFormat) {
    match value {
        Value::Timestamp(ts) => {
            *value = match format {
                TimestampFormat::Rfc3339 => return,
                TimestampFormat::Unix => Value::from(ts.timestamp()),
                TimestampFormat::UnixMs => Value::from(ts.timestamp_millis()),
                TimestampFormat::UnixUs => Value::from(ts.timestamp_micros()),
                TimestampFormat::UnixNs => Value::from(ts.timestamp_nanos_opt().unwrap_or_default()),
                TimestampFormat::UnixFloat => Value::from_f64_or_zero(ts.timestamp_micros() as f64 / 1e6),
            }
        }
        Value::Object(map) => map.values_mut().for_each(|v| convert_timestamps(v, format)),
        Value::Array(items) => items.iter_mut().for_each(|v| convert_timestamps(v, format)),
        _ => {}
    }
}

impl Encoder {
    /// Appends the encoding of `event` to `buf` (no framing).
    pub fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let value = self.transformer.apply(event.value());
        self.encode_value(&value, buf)
    }

    /// Appends the encoding of `event` without its top-level fields `skip` (loki's removed
    /// label and timestamp fields). JSON is written skipping them; other codecs encode a copy.
    pub fn encode_without(&self, event: &LogEvent, skip: &[&str], buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let Value::Object(map) = event.value() else { return self.encode(event, buf) };
        if !skip.iter().any(|k| map.contains_key(*k)) {
            return self.encode(event, buf);
        }
        let value = self.transformer.apply(event.value());
        let pretty = self.config.json.as_ref().is_some_and(|j| j.pretty);
        match self.config.codec {
            Codec::Json if !pretty => {
                let each = |key: &str, _: &Value| if skip.contains(&key) { Field::Skip } else { Field::Keep };
                sluice_core::json::write_object(buf, &value, each, &[]);
                Ok(())
            }
            Codec::Text | Codec::RawMessage if !skip.contains(&sluice_core::event::fields::message()) => {
                self.encode_value(&value, buf)
            }
            _ => {
                let mut value = value.into_owned();
                if let Value::Object(map) = &mut value {
                    for key in skip {
                        map.remove(*key);
                    }
                }
                self.encode_value(&value, buf)
            }
        }
    }

    fn encode_value(&self, value: &Value, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let field = |name: &str| match value {
            Value::Object(map) => map.get(name),
            _ => None,
        };
        match self.config.codec {
            Codec::Json => {
                let pretty = self.config.json.as_ref().is_some_and(|j| j.pretty);
                if pretty {
                    serde_json::to_writer_pretty(&mut *buf, value).map_err(|e| EncodeError(e.to_string()))
                } else {
                    super::json::write_value(buf, value);
                    Ok(())
                }
            }
            Codec::Text | Codec::RawMessage => {
                match value {
                    Value::Object(_) => {
                        if let Some(message) = field(sluice_core::event::fields::message()) {
                            write_scalar(buf, message);
                        }
                    }
                    other => write_scalar(buf, other),
                }
                Ok(())
            }
            Codec::Logfmt => {
                let Value::Object(map) = value else {
                    return Err(EncodeError("logfmt needs an object".into()));
                };
                let mut first = true;
                let mut scratch = Vec::new();
                logfmt_object(buf, &mut scratch, "", map, &mut first);
                Ok(())
            }
            Codec::Csv => {
                let fields = self.config.csv.as_ref().map(|c| c.fields.as_slice()).unwrap_or_default();
                let mut scratch = Vec::new();
                for (i, name) in fields.iter().enumerate() {
                    if i > 0 {
                        buf.push(self.csv_delimiter);
                    }
                    scratch.clear();
                    if let Some(v) = field(name) {
                        write_scalar(&mut scratch, v);
                    }
                    let quote =
                        scratch.iter().any(|&b| b == self.csv_delimiter || b == b'"' || b == b'\n' || b == b'\r');
                    if quote {
                        buf.push(b'"');
                        for &b in &scratch {
                            if b == b'"' {
                                buf.push(b'"');
                            }
                            buf.push(b);
                        }
                        buf.push(b'"');
                    } else {
                        buf.extend_from_slice(&scratch);
                    }
                }
                Ok(())
            }
        }
    }
}

fn logfmt_object(buf: &mut Vec<u8>, scratch: &mut Vec<u8>, prefix: &str, map: &ObjectMap, first: &mut bool) {
    for (key, value) in map {
        let name = if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") };
        if let Value::Object(inner) = value {
            logfmt_object(buf, scratch, &name, inner, first);
            continue;
        }
        if !*first {
            buf.push(b' ');
        }
        *first = false;
        buf.extend_from_slice(name.as_bytes());
        buf.push(b'=');
        scratch.clear();
        write_scalar(scratch, value);
        let quote = scratch.is_empty() || scratch.iter().any(|&b| b == b' ' || b == b'"' || b == b'=' || b < 0x20);
        if quote {
            buf.push(b'"');
            for &b in scratch.iter() {
                match b {
                    b'"' => buf.extend_from_slice(b"\\\""),
                    b'\\' => buf.extend_from_slice(b"\\\\"),
                    b'\n' => buf.extend_from_slice(b"\\n"),
                    _ => buf.push(b),
                }
            }
            buf.push(b'"');
        } else {
            buf.extend_from_slice(scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_core::event::EventMetadata;

    fn event() -> LogEvent {
        let mut map = ObjectMap::new();
        map.insert("message".into(), Value::from("hello, \"world\""));
        map.insert("n".into(), Value::from(3));
        let mut inner = ObjectMap::new();
        inner.insert("k".into(), Value::from("a b"));
        map.insert("o".into(), Value::Object(inner));
        LogEvent::from_value(Value::Object(map), EventMetadata::new("t", chrono::Utc::now()))
    }

    fn encode(toml_codec: serde_json::Value) -> String {
        let config: EncodingConfig = serde_json::from_value(toml_codec).unwrap_or_else(|e| panic!("{e}"));
        let mut buf = Vec::new();
        config.build().encode(&event(), &mut buf).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[test]
    fn codecs() {
        assert_eq!(encode(serde_json::json!({"codec": "text"})), "hello, \"world\"");
        assert_eq!(encode(serde_json::json!({"codec": "json", "only_fields": ["n"]})), r#"{"n":3}"#);
        assert_eq!(encode(serde_json::json!({"codec": "logfmt", "except_fields": ["message"]})), r#"n=3 o.k="a b""#);
        assert_eq!(
            encode(serde_json::json!({"codec": "csv", "csv": {"fields": ["n", "message", "missing"]}})),
            "3,\"hello, \"\"world\"\"\","
        );
    }
}
