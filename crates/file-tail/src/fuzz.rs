//! Fuzz targets (property tests, see `sluice-fuzz`) of what reads files and their state:
//! multiline joining, UTF-16 lines, gzip files, the checkpoint store and Vector's checkpoints.
//! Whatever the input, nothing panics or hangs, and what comes out accounts for every byte
//! (lines tile the file) or is refused with a reason.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use regex::bytes::Regex;
use sluice_fuzz::{config, mutated, pieces};

use crate::checkpoint::Store;
use crate::fingerprint::{Fingerprint, Strategy as FingerprintStrategy, fingerprint};
use crate::lines::{Piece, Splitter};
use crate::multiline::{Aggregator, Message, Mode, Rules};

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::ContinueThrough), Just(Mode::ContinuePast), Just(Mode::HaltBefore), Just(Mode::HaltWith)]
}

fn pattern() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("^a"), Just("^b"), Just("a"), Just("^$"), Just("^[ \t]"), Just(".")]
}

/// Lines of a file: their texts (no delimiter) and where each starts.
fn lines_of(texts: &[String]) -> Vec<Message> {
    let mut at = 0;
    texts
        .iter()
        .map(|t| {
            let line = Message { start: at, end: at + t.len() as u64 + 1, text: Bytes::from(t.clone()) };
            at = line.end;
            line
        })
        .collect()
}

/// A string in UTF-16 (`le`: little-endian).
fn utf16(text: &str, le: bool) -> Vec<u8> {
    text.encode_utf16().flat_map(|u| if le { u.to_le_bytes() } else { u.to_be_bytes() }).collect()
}

/// A checkpoint store as sluice writes it, with `n` entries.
fn real_store(n: u64) -> Vec<u8> {
    let dir = ok(tempfile::tempdir());
    let mut store = ok(Store::open(dir.path()));
    for i in 0..n {
        let fingerprint = if i % 2 == 0 { Fingerprint::Checksum(i * 7_919) } else { Fingerprint::DevInode(2049, i) };
        store.set(fingerprint, i * 100, Path::new(&format!("/var/log/app-{i}.log")), "files");
    }
    ok(store.flush());
    ok(std::fs::read(dir.path().join("checkpoints.json")))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    ok(e.write_all(data));
    ok(e.finish())
}

proptest! {
    #![proptest_config(config(500))]

    /// Any lines, any mode and patterns, any timeouts: every line ends in exactly one
    /// message, in order; messages tile the file (each starts where the last ended), and a
    /// message's text is its lines joined with `\n`. An open message holds the position at
    /// its start.
    #[test]
    fn multiline_messages_tile_the_lines(
        texts in proptest::collection::vec("[ab \t]{0,5}", 0..40),
        start in pattern(),
        condition in pattern(),
        mode in mode(),
        expire_at in proptest::collection::vec(any::<bool>(), 0..40),
    ) {
        let rules = Rules { start: ok(Regex::new(start)), condition: ok(Regex::new(condition)), mode, timeout: Duration::from_millis(10) };
        let lines = lines_of(&texts);
        let (mut aggregator, mut out) = (Aggregator::default(), Vec::new());
        let mut now = Instant::now();
        for (i, line) in lines.iter().enumerate() {
            aggregator.push(&rules, line.clone(), now, &mut out);
            prop_assert!(aggregator.held_from().is_none_or(|s| s <= line.start), "an open message holds its start");
            if expire_at.get(i).copied().unwrap_or(false) {
                now += Duration::from_millis(20);
                out.extend(aggregator.expire(&rules, now));
            }
        }
        out.extend(aggregator.take());
        let mut at = 0;
        let mut next_line = 0;
        for message in &out {
            prop_assert_eq!(message.start, at, "messages tile the file");
            let mut joined = Vec::new();
            while next_line < lines.len() && lines[next_line].end <= message.end {
                if !joined.is_empty() || lines[next_line].start > message.start {
                    joined.push(b'\n');
                }
                joined.extend_from_slice(&lines[next_line].text);
                next_line += 1;
            }
            prop_assert_eq!(&message.text[..], &joined[..]);
            at = message.end;
        }
        prop_assert_eq!(next_line, lines.len(), "every line is in a message");
    }

    /// UTF-16 text (either byte order, characters outside the BMP, characters whose bytes
    /// hold 0x0A) cut at any points: the lines decode to exactly the text's lines.
    #[test]
    fn utf16_lines_come_out_whole_wherever_the_reads_end(
        text in proptest::collection::vec(prop_oneof![
            3 => proptest::char::range('a', 'z'),
            2 => Just('\n'),
            1 => Just('\u{0a41}'),
            1 => Just('\u{410a}'),
            1 => Just('é'),
            1 => Just('\u{1f600}'),
        ], 0..120).prop_map(|c| c.into_iter().collect::<String>()),
        le in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let bytes = utf16(&text, le);
        let delimiter = utf16("\n", le);
        let mut splitter = Splitter::new(&delimiter, 2, 1 << 20, 0);
        let mut lines = Vec::new();
        for piece in pieces(&bytes, &cuts) {
            splitter.push(&piece);
            while let Some(p) = splitter.next_piece() {
                lines.push(p);
            }
        }
        lines.extend(splitter.finish());
        let charset = if le { encoding_rs::UTF_16LE } else { encoding_rs::UTF_16BE };
        let decoded: Vec<String> = lines
            .iter()
            .map(|p| match p {
                Piece::Line { text, .. } => charset.decode_without_bom_handling(text).0.into_owned(),
                Piece::Oversized { .. } => "<oversized>".to_owned(),
            })
            .collect();
        let mut expected: Vec<String> = text.split('\n').map(str::to_owned).collect();
        if text.is_empty() || text.ends_with('\n') {
            expected.pop();
        }
        prop_assert_eq!(decoded, expected);
    }

    /// A damaged or cut gzip file gets a fingerprint, none yet (a file still being written),
    /// or an error: never a panic.
    #[test]
    fn any_gzip_file_is_fingerprinted_or_refused(
        data in mutated(vec![gzip(b"first line\nsecond line\nthird\n"), gzip(&[b'x'; 3000])], 6),
    ) {
        let dir = ok(tempfile::tempdir());
        let path = dir.path().join("app.log.gz");
        ok(std::fs::write(&path, &data));
        let file = ok(std::fs::File::open(&path));
        let _ = fingerprint(&file, FingerprintStrategy::Checksum { lines: 1, ignored_header_bytes: 0 }, 256);
    }

    /// A damaged checkpoint store (the current copy, or a temp file left by a crash) opens:
    /// the good entries are kept and the rest set aside, never a panic. An entry that reads
    /// back is one that was written.
    #[test]
    fn a_damaged_checkpoint_store_opens_with_its_good_entries(
        data in mutated(vec![real_store(1), real_store(5)], 6),
        as_temp in any::<bool>(),
    ) {
        let dir = ok(tempfile::tempdir());
        let name = if as_temp { "checkpoints.json.tmp" } else { "checkpoints.json" };
        ok(std::fs::write(dir.path().join(name), &data));
        let store = Store::open(dir.path());
        prop_assert!(store.is_ok(), "the store opens: {:?}", store.err().map(|e| e.to_string()));
        let read_only = crate::checkpoint::read_only(dir.path());
        prop_assert!(read_only.is_ok());
    }

    /// Vector's checkpoints files, damaged: adopted, or refused with a reason.
    #[test]
    fn a_damaged_vector_checkpoints_file_is_adopted_or_refused(
        data in mutated(vec![br#"{"version":"1","checkpoints":[{"fingerprint":{"first_lines_checksum":123456789},"position":42,"modified":"2026-12-01T10:00:00Z"},{"fingerprint":{"dev_inode":[2049,77]},"position":7,"modified":"2026-12-01T10:00:00Z"}]}"#.to_vec()], 6),
    ) {
        let dir = ok(tempfile::tempdir());
        let source = dir.path().join("files");
        ok(std::fs::create_dir_all(&source));
        ok(std::fs::write(source.join("checkpoints.json"), &data));
        let _ = crate::vector::read_source(&source, "files");
        let _ = crate::vector::read_all(dir.path());
    }
}
