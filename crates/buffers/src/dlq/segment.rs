//! The two forms of a DLQ segment, read record by record.
//!
//! - `segment-<time>.jsonl`: one JSON envelope per line. A record's index is its line number.
//! - `segment-<time>.bin`: what a stalled sink's diversion writes, batches in the binary codec
//!   of the disk buffer, with the failure written once per batch:
//!
//! ```text
//! segment := batch*
//! batch   := "SDLQ" u32(len) u32(crc32 of payload) payload      (little-endian, len bytes)
//! payload := varint(n) head[n] chunk
//! head    := the envelope fields the batch's events share, as one JSON object
//! chunk   := sluice_core::codec chunk, events without their secrets
//! ```
//!
//!   A record's index is the event's position among the segment's readable events.
//!
//! Readers see both forms the same way: each record as its JSON envelope line, so `dlq show`,
//! `dlq list`, `purge` and replay do not care which form a segment has. A binary batch that
//! fails its checksum or does not decode is one unreadable record, and reading goes on at the
//! next batch; a batch cut short at the end of the file is a torn tail (a write cut by a crash).

use std::borrow::Cow;
use std::path::Path;

use bytes::Bytes;
use sluice_core::LogEvent;
use sluice_core::codec::{self, Secrets, varint};
use sluice_core::json;

/// How a segment's records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON lines, one envelope per line.
    Lines,
    /// Binary batches (a stalled sink's diversion).
    Binary,
}

impl Format {
    /// The form of a segment file, from its name; `None` for anything else in the directory.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "jsonl" => Some(Self::Lines),
            "bin" => Some(Self::Binary),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Lines => "jsonl",
            Self::Binary => "bin",
        }
    }
}

const MAGIC: &[u8; 4] = b"SDLQ";
const BATCH_HEADER: usize = 12;

/// The envelope fields shared by a submission's events, as a JSON object (`{…}`), and the
/// events: appends one binary batch to `out`.
pub fn write_batch(out: &mut Vec<u8>, head: &[u8], events: &[LogEvent]) {
    let mut encoded = Vec::new();
    encode_events(events, &mut encoded);
    write_encoded_batch(out, head, events.len(), &encoded);
}

/// Encodes events as a batch holds them (without their secrets), for
/// [`write_encoded_batch`]: what a fan-out does for a stalled sink, so the sink's copy of the
/// events is never made.
pub fn encode_events(events: &[LogEvent], out: &mut Vec<u8>) {
    events.iter().for_each(|event| codec::encode_event(event, out, Secrets::Leave));
}

/// Appends one binary batch of `count` events encoded by [`encode_events`].
pub fn write_encoded_batch(out: &mut Vec<u8>, head: &[u8], count: usize, encoded: &[u8]) {
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 8]);
    varint(out, head.len() as u64);
    out.extend_from_slice(head);
    varint(out, count as u64);
    out.extend_from_slice(encoded);
    let len = (out.len() - start - BATCH_HEADER) as u32;
    let crc = crc32fast::hash(&out[start + BATCH_HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Appends the envelope line (with its `\n`) of `event` to `out`. `head` is the shared fields
/// as a JSON object; the event's own fields are added to it.
pub fn write_envelope(out: &mut Vec<u8>, head: &[u8], event: &LogEvent) {
    let open = head.strip_suffix(b"}").unwrap_or(head);
    out.extend_from_slice(open);
    if open.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(b"\"source_id\":");
    json::write_str(out, event.source_id());
    out.extend_from_slice(b",\"event\":");
    json::write_value(out, event.value());
    let history = event.dead_letters();
    if !history.is_empty() {
        out.extend_from_slice(b",\"history\":");
        let _ = serde_json::to_writer(&mut *out, history);
    }
    out.extend_from_slice(b"}\n");
}

/// A segment's contents, record by record.
#[derive(Debug, Default)]
pub struct Contents<'a> {
    /// Each record's index and envelope line (without `\n`).
    pub records: Vec<(u32, Cow<'a, [u8]>)>,
    /// Binary batches that could not be read (a JSON line that does not parse is a record;
    /// its reader counts it).
    pub damaged: u64,
    /// The file ends in the middle of a line or batch.
    pub torn_tail: bool,
}

/// Reads a segment's records.
pub fn read(format: Format, data: &[u8]) -> Contents<'_> {
    match format {
        Format::Lines => {
            let (lines, torn_tail) = split_lines(data);
            let records = lines
                .into_iter()
                .enumerate()
                .filter(|(_, line)| !line.is_empty())
                .map(|(i, line)| (i as u32, Cow::Borrowed(line)))
                .collect();
            Contents { records, damaged: 0, torn_tail }
        }
        Format::Binary => {
            let mut contents = Contents::default();
            let mut index = 0u32;
            for part in batches(data) {
                match part {
                    Part::Batch { head, events, .. } => {
                        for (event, _) in events {
                            let mut line = Vec::with_capacity(head.len() + 256);
                            write_envelope(&mut line, head, &event);
                            line.pop();
                            contents.records.push((index, Cow::Owned(line)));
                            index += 1;
                        }
                    }
                    Part::Damaged(_) => contents.damaged += 1,
                    Part::Torn => contents.torn_tail = true,
                }
            }
            contents
        }
    }
}

/// How many records a segment holds (without building their envelopes).
pub fn count(format: Format, data: &[u8]) -> u64 {
    match format {
        Format::Lines => split_lines(data).0.iter().filter(|l| !l.is_empty()).count() as u64,
        Format::Binary => batches(data)
            .map(|part| match part {
                Part::Batch { events, .. } => events.len() as u64,
                _ => 0,
            })
            .sum(),
    }
}

/// The segment rewritten with only the records `keep` accepts, in its own form. Damaged
/// binary batches are kept as they are (they may still be read by hand); a torn tail is not.
pub fn retain(format: Format, data: &[u8], keep: impl Fn(u32) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    match format {
        Format::Lines => {
            for (i, line) in split_lines(data).0.into_iter().enumerate() {
                if !line.is_empty() && keep(i as u32) {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
            }
        }
        Format::Binary => {
            let mut index = 0u32;
            for part in batches(data) {
                match part {
                    Part::Batch { head, chunk, events } => {
                        let mut kept = (0, Vec::new());
                        for (i, (_, span)) in events.iter().enumerate() {
                            if keep(index + i as u32) {
                                kept.0 += 1;
                                kept.1.extend_from_slice(&chunk[span.clone()]);
                            }
                        }
                        index += events.len() as u32;
                        if kept.0 > 0 {
                            write_encoded_batch(&mut out, head, kept.0, &kept.1);
                        }
                    }
                    Part::Damaged(bytes) => out.extend_from_slice(bytes),
                    Part::Torn => {}
                }
            }
        }
    }
    out
}

/// The complete lines of a segment's contents, and whether a torn tail follows them.
pub(crate) fn split_lines(data: &[u8]) -> (Vec<&[u8]>, bool) {
    let torn_tail = !data.is_empty() && !data.ends_with(b"\n");
    let mut lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    // `split` yields what follows the last `\n`: empty for a whole file, a torn tail otherwise.
    lines.pop();
    (lines, torn_tail)
}

enum Part<'a> {
    /// A readable batch: its head, its chunk and each event with its bytes in `chunk`.
    Batch { head: &'a [u8], chunk: Bytes, events: Vec<(LogEvent, std::ops::Range<usize>)> },
    /// Bytes that are not a readable batch, up to the next batch that is.
    Damaged(&'a [u8]),
    /// The last batch, cut short.
    Torn,
}

/// The batches of a binary segment, in order.
fn batches(data: &[u8]) -> impl Iterator<Item = Part<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= data.len() {
            return None;
        }
        match batch_at(data, at) {
            Ok((part, end)) => {
                at = end;
                Some(part)
            }
            Err(cut_short) => {
                // Go on at the next batch that reads, if any.
                let next = (at + 1..data.len().saturating_sub(MAGIC.len() - 1))
                    .filter(|&i| &data[i..i + MAGIC.len()] == MAGIC)
                    .find(|&i| batch_at(data, i).is_ok());
                let start = at;
                match next {
                    Some(next) => {
                        at = next;
                        Some(Part::Damaged(&data[start..next]))
                    }
                    None => {
                        at = data.len();
                        Some(if cut_short { Part::Torn } else { Part::Damaged(&data[start..]) })
                    }
                }
            }
        }
    })
}

/// The batch at `at` and where it ends; `Err(true)` when the file ends inside it.
fn batch_at(data: &[u8], at: usize) -> Result<(Part<'_>, usize), bool> {
    let rest = &data[at..];
    if rest.len() < BATCH_HEADER {
        return Err(MAGIC.starts_with(&rest[..rest.len().min(MAGIC.len())]));
    }
    if &rest[..4] != MAGIC {
        return Err(false);
    }
    let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
    let crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
    let Some(payload) = rest.get(BATCH_HEADER..BATCH_HEADER + len) else {
        return Err(true);
    };
    if crc32fast::hash(payload) != crc {
        return Err(false);
    }
    let (head_len, used) = read_varint(payload).ok_or(false)?;
    let head = usize::try_from(head_len)
        .ok()
        .and_then(|n| payload.get(used..used.checked_add(n)?))
        .filter(|head| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(head).is_ok())
        .ok_or(false)?;
    let chunk = Bytes::copy_from_slice(&payload[used + head.len()..]);
    let events = codec::decode_chunk_spans(&chunk).map_err(|_| false)?;
    Ok((Part::Batch { head, chunk, events }, at + BATCH_HEADER + len))
}

fn read_varint(data: &[u8]) -> Option<(u64, usize)> {
    let mut n = 0u64;
    for (i, byte) in data.iter().take(10).enumerate() {
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use sluice_core::event::EventMetadata;
    use vrl::value::Value;

    use super::*;

    fn event(message: &str) -> LogEvent {
        let mut event = LogEvent::from_value(
            Value::Object([("message".into(), Value::from(message))].into_iter().collect()),
            EventMetadata::new("in", Utc::now()),
        );
        event.set_secret("api_key", "hunter2");
        event
    }

    const HEAD: &[u8] = br#"{"version":1,"sink_id":"out","reason":"stalled"}"#;

    fn segment() -> Vec<u8> {
        let mut data = Vec::new();
        write_batch(&mut data, HEAD, &[event("a"), event("b")]);
        write_batch(&mut data, HEAD, &[event("c")]);
        data
    }

    fn messages(contents: &Contents) -> Vec<(u32, String)> {
        contents
            .records
            .iter()
            .map(|(i, line)| {
                let envelope: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(envelope["reason"], "stalled");
                assert_eq!(envelope["source_id"], "in");
                (*i, envelope["event"]["message"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }

    #[test]
    fn binary_records_read_as_the_envelopes_of_their_events_without_secrets() {
        let data = segment();
        assert!(!data.windows(7).any(|w| w == b"hunter2"), "secrets are never written to the DLQ");
        let contents = read(Format::Binary, &data);
        assert_eq!(messages(&contents), [(0, "a".into()), (1, "b".into()), (2, "c".into())]);
        assert_eq!((contents.damaged, contents.torn_tail), (0, false));
        assert_eq!(count(Format::Binary, &data), 3);
    }

    #[test]
    fn a_damaged_batch_is_skipped_and_a_cut_one_is_a_torn_tail() {
        let mut data = segment();
        data[20] ^= 0xff; // inside the first batch
        let contents = read(Format::Binary, &data);
        assert_eq!(messages(&contents), [(0, "c".into())]);
        assert_eq!((contents.damaged, contents.torn_tail), (1, false));

        let mut data = segment();
        data.truncate(data.len() - 3);
        let contents = read(Format::Binary, &data);
        assert_eq!(messages(&contents), [(0, "a".into()), (1, "b".into())]);
        assert_eq!((contents.damaged, contents.torn_tail), (0, true));
    }

    #[test]
    fn retain_keeps_the_chosen_records_and_any_damage() {
        let data = segment();
        let kept = retain(Format::Binary, &data, |i| i != 1);
        assert_eq!(messages(&read(Format::Binary, &kept)), [(0, "a".into()), (1, "c".into())]);

        let mut damaged = segment();
        damaged[20] ^= 0xff;
        let kept = retain(Format::Binary, &damaged, |_| true);
        assert_eq!(kept, damaged, "a damaged batch stays as it was");
        let mut torn = segment();
        torn.truncate(torn.len() - 3);
        let kept = retain(Format::Binary, &torn, |_| true);
        assert_eq!(messages(&read(Format::Binary, &kept)), [(0, "a".into()), (1, "b".into())]);
        assert!(!read(Format::Binary, &kept).torn_tail, "a torn tail is left out");
    }

    #[test]
    fn lines_keep_their_line_numbers() {
        let contents = read(Format::Lines, b"a\n\nb\ntorn");
        let records: Vec<_> = contents.records.iter().map(|(i, l)| (*i, l.to_vec())).collect();
        assert_eq!(records, [(0, b"a".to_vec()), (2, b"b".to_vec())]);
        assert!(contents.torn_tail);
        assert_eq!(retain(Format::Lines, b"a\n\nb\ntorn", |i| i == 2), b"b\n");
    }
}
