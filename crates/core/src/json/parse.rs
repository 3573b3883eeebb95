//! JSON text into a VRL value without copying its strings.
//!
//! The result is the one `serde_json` gives when it deserializes into `vrl::value::Value`
//! (VRL's own `Deserialize`, which VRL's `parse_json` uses): the numbers, the duplicate keys
//! (the last wins), the nesting limit and the error messages are serde_json's, because it is
//! serde_json that reads the text, and strings are `Value::String` as there. What differs is
//! where strings live: a string with no escape in the text becomes a slice of the input (a
//! reference count) instead of an allocation and a copy. A parsed line of the benchmark's LLM
//! logs holds six strings: six allocations fewer, and six frees fewer on whichever thread
//! drops the event.
//!
//! The slices keep the input alive while any of them lives. Callers pass the event's own
//! frame or message, which the event held anyway.

use std::fmt;

use bytes::Bytes;
use bytestring::ByteString;
use ordered_float::NotNan;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use vrl::value::{KeyString, ObjectMap, Value};

/// Parses all of `json`. When it is UTF-8 (one check of the whole input, after which
/// serde_json checks no string again) its unescaped strings are slices of it; when it is not,
/// serde_json reads the bytes as `from_slice` does, errors included.
pub fn parse(json: Bytes) -> Result<Value, serde_json::Error> {
    if let Ok(text) = ByteString::try_from(json.clone()) {
        return parse_text(&text);
    }
    let mut de = serde_json::Deserializer::from_slice(&json);
    let value = Seed { source: None }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Parses all of `json`, its unescaped strings slices of it (`serde_json::from_str`).
pub fn parse_text(json: &ByteString) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let value = Seed { source: Some(json) }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// `part` as a slice of `source` when it lies inside it, else a copy.
fn slice_of(source: Option<&ByteString>, part: &str) -> ByteString {
    if let Some(source) = source {
        let start = (part.as_ptr() as usize).wrapping_sub(source.as_ptr() as usize);
        if start <= source.len() && part.len() <= source.len() - start {
            return source.slice_ref(part);
        }
    }
    ByteString::from(part)
}

#[derive(Clone, Copy)]
struct Seed<'s> {
    /// The text being parsed, when strings may be sliced from it.
    source: Option<&'s ByteString>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Boolean(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Integer(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        match i64::try_from(value) {
            Ok(value) => Ok(Value::Integer(value)),
            // As VRL does: beyond i64, a float.
            #[allow(clippy::cast_precision_loss)]
            Err(_) => self.visit_f64(value as f64),
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        NotNan::new(value).map(Value::Float).map_err(|_| E::invalid_value(de::Unexpected::Float(value), &self))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Value, E> {
        Ok(Value::String(slice_of(self.source, value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(ByteString::from(value)))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(ByteString::from(value)))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut map = ObjectMap::new();
        while let Some(key) = entries.next_key_seed(Key)? {
            let value = entries.next_value_seed(self)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// An object's key (always its own allocation: `KeyString` is a `String`).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = KeyString;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<KeyString, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Key {
    type Value = KeyString;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_str<E>(self, value: &str) -> Result<KeyString, E> {
        Ok(KeyString::from(value))
    }

    fn visit_string<E>(self, value: String) -> Result<KeyString, E> {
        Ok(KeyString::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json into VRL's `Value`, what `parse` must give, as text: `Debug` tells
    /// `Value::String` from `Value::Bytes`, which `==` does not.
    fn theirs(json: &[u8]) -> String {
        format!("{:?}", serde_json::from_slice::<Value>(json).map_err(|e| e.to_string()))
    }

    fn ours(json: &[u8]) -> String {
        let parsed = format!("{:?}", parse(Bytes::copy_from_slice(json)).map_err(|e| e.to_string()));
        if let Ok(text) = std::str::from_utf8(json) {
            let by_text = format!("{:?}", parse_text(&ByteString::from(text)).map_err(|e| e.to_string()));
            assert_eq!(parsed, by_text, "{text}");
        }
        parsed
    }

    #[test]
    fn parses_what_serde_json_parses_and_fails_where_it_fails() {
        let cases: &[&[u8]] = &[
            br#"{"log_id":"1c80","prompt_tokens":3042,"latency":4.5,"ok":false,"n":null,"tags":["a",1,{"b":[]}]}"#,
            br#"{"a":1,"a":2,"":"empty key","\u00e9":"\u00e9\n\"q\"","big":18446744073709551615,"neg":-9223372036854775808}"#,
            br#"  "just a string"  "#,
            b"[1, 2.5e10, -0.0, true]",
            b"42",
            b"{\"raw\":\"caf\xc3\xa9 \xe2\x9c\x93\"}",
            b"{\"bad\":\"\xff\"}",
            b"\xff{}",
            b"{ INVALID }",
            b"{\"a\":1} trailing",
            b"{\"a\":1e400}",
            b"{\"a\":",
            b"",
            &[b'['; 200],
        ];
        for &json in cases {
            assert_eq!(ours(json), theirs(json), "{}", String::from_utf8_lossy(json));
        }
    }

    #[test]
    fn unescaped_strings_are_slices_of_the_input_and_escaped_ones_copies() {
        let source = Bytes::from_static(br#"{"plain":"hello","escaped":"a\nb","list":["x"]}"#);
        let value = parse(source.clone()).unwrap_or(Value::Null);
        let inside = |v: Option<&Value>| match v {
            Some(Value::String(s)) => source.as_ptr_range().contains(&s.as_ptr()),
            _ => panic!("not a string: {v:?}"),
        };
        let Value::Object(map) = &value else { panic!("not an object: {value:?}") };
        assert!(inside(map.get("plain")));
        assert!(!inside(map.get("escaped")));
        let Some(Value::Array(list)) = map.get("list") else { panic!("no list") };
        assert!(inside(list.first()));
        assert_eq!(map.get("escaped"), Some(&Value::from("a\nb")));
    }

    proptest::proptest! {
        #![proptest_config(sluice_fuzz::config(1000))]

        /// Fuzz target: any input, JSON with a few edits or random bytes, parses as serde_json
        /// parses it into VRL's `Value`, errors included.
        #[test]
        fn any_input_parses_as_serde_json_parses_it(json in proptest::prop_oneof![
            3 => sluice_fuzz::mutated(vec![
                br#"{"a":"x","b":[1,-2.5e3,{"c":null}],"d":true,"e":"q\"\u00e9\ud83d\ude00","f":18446744073709551615}"#.to_vec(),
                b"[\"caf\xc3\xa9\",{},[],\"\"]".to_vec(),
            ], 6),
            1 => proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60),
        ]) {
            proptest::prop_assert_eq!(ours(&json), theirs(&json));
        }
    }
}
