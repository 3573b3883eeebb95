//! JSON and VRL values, both ways, on the hot path.
//!
//! Writing: a direct writer producing the same bytes `serde_json::to_writer` produces for a
//! `vrl::value::Value` (checked by a test), without going through serde's data model. JSON
//! encoding is the largest cost in most sinks, so it is worth the hundred lines.
//!
//! Reading ([`parse`]): the value `serde_json` deserializes into a `Value`, but with every
//! string that needs no unescaping a slice of the input instead of a copy.

mod parse;

pub use parse::{parse, parse_text};
use vrl::value::Value;

/// serde_json's escape classes: 0 = as is, b'u' = \u00XX, anything else = backslash + that byte.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The bytes of `word` (little-endian) that need escaping (< 0x20, `"` or `\\`), each marked
/// by its high bit. The lowest marked byte is always exact (a borrow only runs upwards from a
/// marked byte), which is all [`next_escape`] reads.
#[inline]
fn escape_mask(word: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let control = word.wrapping_sub(LO * 0x20) & !word & HI;
    let q = word ^ (LO * u64::from(b'"'));
    let quote = q.wrapping_sub(LO) & !q & HI;
    let b = word ^ (LO * u64::from(b'\\'));
    let backslash = b.wrapping_sub(LO) & !b & HI;
    control | quote | backslash
}

/// The position of the first byte from `i` on that needs escaping, or the length.
#[inline]
fn next_escape(bytes: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = bytes.get(i..i + 8)
        && let Ok(word) = <[u8; 8]>::try_from(chunk)
    {
        let mask = escape_mask(u64::from_le_bytes(word));
        if mask != 0 {
            return i + (mask.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && ESCAPE[bytes[i] as usize] == 0 {
        i += 1;
    }
    i
}

/// Appends `s` as a JSON string: clean runs found 8 bytes at a time, each escape written in
/// place. Text full of quotes (JSON carried in a string, as raw JSON log lines are) costs
/// about half what a byte-by-byte pass over each word holding a quote did.
pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    buf.reserve(bytes.len() + 2);
    buf.push(b'"');
    let mut start = 0;
    loop {
        let at = next_escape(bytes, start);
        copy_run(buf, bytes, start, at);
        let Some(&b) = bytes.get(at) else { break };
        match ESCAPE[b as usize] {
            b'u' => buf.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]),
            escape => buf.extend_from_slice(&[b'\\', escape]),
        }
        start = at + 1;
    }
    buf.push(b'"');
}

/// Copies the clean run `bytes[start..end]`. A short one (the few bytes between two quotes)
/// as one 8-byte store cut back to its length, where a `memcpy` call would cost more than the
/// copy; a long one in one copy.
#[inline]
fn copy_run(buf: &mut Vec<u8>, bytes: &[u8], start: usize, end: usize) {
    let len = end - start;
    if len <= 8
        && let Some(Ok(word)) = bytes.get(start..start + 8).map(<[u8; 8]>::try_from)
    {
        buf.extend_from_slice(&word);
        buf.truncate(buf.len() - (8 - len));
    } else {
        buf.extend_from_slice(&bytes[start..end]);
    }
}

/// Appends `value` as compact JSON.
pub fn write_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bytes(bytes) => match simdutf8::basic::from_utf8(bytes) {
            Ok(s) => write_str(buf, s),
            Err(_) => write_str(buf, &String::from_utf8_lossy(bytes)),
        },
        Value::Integer(i) => buf.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float(f) => {
            let f = f.into_inner();
            if f.is_finite() {
                buf.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
            } else {
                buf.extend_from_slice(b"null");
            }
        }
        Value::Boolean(true) => buf.extend_from_slice(b"true"),
        Value::Boolean(false) => buf.extend_from_slice(b"false"),
        Value::Null => buf.extend_from_slice(b"null"),
        Value::Timestamp(ts) => write_str(buf, &ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        Value::Regex(regex) => write_str(buf, regex.as_str()),
        Value::Object(map) => {
            buf.push(b'{');
            for (i, (key, value)) in map.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_str(buf, key.as_str());
                buf.push(b':');
                write_value(buf, value);
            }
            buf.push(b'}');
        }
        Value::Array(items) => {
            buf.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_value(buf, item);
            }
            buf.push(b']');
        }
        other => match other.to_str_lossy() {
            Some(text) => write_str(buf, &text),
            None => buf.extend_from_slice(b"null"),
        },
    }
}

/// What becomes of one top-level field when a document is written.
pub enum Field<'a> {
    Keep,
    Skip,
    Rename(&'a str),
    Replace(&'a str, Value),
}

/// Writes `value` as a JSON object, each top-level field as `each` says, then `extra` fields
/// (which replace any field of the same name). A value that is not an object is written as
/// it is.
pub fn write_object(
    buf: &mut Vec<u8>,
    value: &Value,
    mut each: impl FnMut(&str, &Value) -> Field<'static>,
    extra: &[(&str, Value)],
) {
    let Value::Object(map) = value else {
        write_value(buf, value);
        return;
    };
    buf.push(b'{');
    let mut first = true;
    let mut field = |buf: &mut Vec<u8>, key: &str, value: &Value| {
        if !first {
            buf.push(b',');
        }
        first = false;
        write_str(buf, key);
        buf.push(b':');
        write_value(buf, value);
    };
    for (key, value) in map {
        let key = key.as_str();
        if extra.iter().any(|(k, _)| *k == key) {
            continue;
        }
        match each(key, value) {
            Field::Keep => field(buf, key, value),
            Field::Skip => {}
            Field::Rename(to) => field(buf, to, value),
            Field::Replace(to, new) => field(buf, to, &new),
        }
    }
    for (key, value) in extra {
        field(buf, key, value);
    }
    buf.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}", "é"] {
                    let mut s: String = "a".repeat(len);
                    s.replace_range(at..at + 1, special);
                    let mut ours = Vec::new();
                    write_str(&mut ours, &s);
                    assert_eq!(ours, serde_json::to_vec(&s).unwrap_or_default(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn matches_serde_json_byte_for_byte() {
        let source = serde_json::json!({
            "plain": "hello",
            "escapes": "q\"b\\s/\u{1}\u{8}\t\n\u{c}\r\u{1f}\u{7f}é✓",
            "int": -42,
            "big": i64::MAX,
            "float": 1.5,
            "whole": 3.0,
            "tiny": 1e-7,
            "t": true,
            "f": false,
            "n": null,
            "nested": {"a": [1, "x", {"b": []}], "": {}},
        });
        let mut value: Value = serde_json::from_value(source).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("bytes".into(), Value::Bytes(bytes::Bytes::from_static(b"a\xffb")));
            let ts = chrono::DateTime::parse_from_rfc3339("2026-11-22T01:02:03.120Z").map(|t| t.to_utc());
            map.insert("ts".into(), Value::Timestamp(ts.unwrap_or_default()));
        }
        let mut ours = Vec::new();
        write_value(&mut ours, &value);
        let theirs = serde_json::to_vec(&value).unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
    }

    proptest::proptest! {
        #![proptest_config(sluice_fuzz::config(1000))]

        /// Any text, dense with characters to escape or not, is written as serde_json writes it.
        #[test]
        fn any_text_is_escaped_as_serde_json_escapes_it(text in proptest::collection::vec(
            proptest::prop_oneof![
                4 => proptest::char::range('a', 'z'),
                2 => proptest::prop_oneof![proptest::strategy::Just('"'), proptest::strategy::Just('\\')],
                1 => proptest::char::range('\u{0}', '\u{1f}'),
                1 => proptest::prelude::any::<char>(),
            ],
            0..100,
        )) {
            let text: String = text.into_iter().collect();
            let mut ours = Vec::new();
            write_str(&mut ours, &text);
            proptest::prop_assert_eq!(ours, serde_json::to_vec(&text).unwrap_or_default());
        }
    }
}
