//! Fuzz targets (property tests, see `sluice-fuzz`) of what reads the disk buffer and the
//! dead-letter queue back: damaged segments, damaged DLQ segments and replay progress files. The reader never fails on its own data and never hangs; every
//! damaged byte comes out as damage (for the DLQ) or an unreadable count, never as an event
//! that was not written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use sluice_fuzz::{config, mutated};

use crate::disk::storage::mem::Mem;
use crate::disk::{Item, Storage, Wal, WalOptions};

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

const OPTIONS: WalOptions = WalOptions { max_size: 1 << 20, segment_bytes: 1 << 20 };

fn dir() -> PathBuf {
    PathBuf::from("/buf")
}

/// A segment as sluice writes it: three records of encoded chunks, and their payloads by id.
fn real_segment() -> (Vec<u8>, BTreeMap<u64, Vec<u8>>) {
    let mem = Mem::default();
    let mut wal = ok(Wal::open(&dir(), Arc::new(mem.clone()), OPTIONS));
    let mut payloads = BTreeMap::new();
    for n in 1..4u8 {
        let payload: Vec<u8> = (0..n * 20).map(|i| i.wrapping_mul(n)).collect();
        let id = ok(wal.append(u16::from(n), &payload));
        payloads.insert(id, payload);
    }
    ok(wal.sync());
    let segment = ok(mem.list(&dir(), ".wal")).into_iter().next().and_then(|p| mem.file(&p)).unwrap_or_default();
    (segment, payloads)
}

/// A DLQ segment as sluice writes it: one envelope per line.
const DLQ_SEGMENT: &str = concat!(
    r#"{"envelope_version":1,"sink_id":"out","sink_type":"http","reason":"permanent","message":"403","status":403,"attempts":1,"dead_lettered_at":"2026-12-01T10:00:00Z","event":{"message":"a","id":1}}"#,
    "\n",
    r#"{"envelope_version":1,"sink_id":"out","sink_type":"http","reason":"retries_exhausted","message":"503","attempts":5,"dead_lettered_at":"2026-12-01T10:00:01Z","event":{"message":"b","id":2}}"#,
    "\n",
);

/// A binary DLQ segment as a stalled sink's diversion writes it: two batches, four events
/// with ids 1 to 4.
fn binary_dlq_segment() -> Vec<u8> {
    let event = |id: i64| {
        let body = vrl::value::Value::Object(
            [("message".into(), vrl::value::Value::from("inference done")), ("id".into(), vrl::value::Value::from(id))]
                .into_iter()
                .collect(),
        );
        sluice_core::LogEvent::from_value(body, sluice_core::event::EventMetadata::new("in", chrono::Utc::now()))
    };
    let head = br#"{"version":1,"sink_id":"out","sink_type":"http","reason":"stalled","dead_lettered_at":"2026-12-01T10:00:00Z"}"#;
    let mut data = Vec::new();
    crate::dlq::segment::write_batch(&mut data, head, &[event(1), event(2), event(3)]);
    crate::dlq::segment::write_batch(&mut data, head, &[event(4)]);
    data
}

proptest! {
    #![proptest_config(config(500))]

    /// Any damage to a segment: reading ends (no hang, no error), ids handed out increase,
    /// and a record handed out whole is one that was written, byte for byte.
    #[test]
    fn a_damaged_segment_reads_to_its_end_as_records_and_damage(
        data in mutated(vec![real_segment().0], 8),
        floor in prop_oneof![Just(None), (0u64..4).prop_map(Some)],
    ) {
        let written = real_segment().1;
        let mem = Mem::default();
        mem.put(&dir().join("segment-00000000000000000000.wal"), &data);
        if let Some(floor) = floor {
            mem.put(&dir().join("acked"), format!("sluice-buffer-acked v1 {floor}\n").as_bytes());
        }
        let mut wal = ok(Wal::open(&dir(), Arc::new(mem), OPTIONS));
        let mut last = None;
        let mut reads = 0;
        loop {
            reads += 1;
            prop_assert!(reads <= data.len() + 2, "the reader keeps moving");
            let item = wal.read_next();
            prop_assert!(item.is_ok(), "the reader never fails on the buffer's data: {:?}", item.err());
            match item.ok().flatten() {
                None => break,
                Some(Item::Record { id, payload, .. }) => {
                    prop_assert!(last.is_none_or(|l| id > l), "ids increase");
                    last = Some(id);
                    prop_assert_eq!(Some(&payload), written.get(&id), "record {} is as written", id);
                }
                Some(Item::Corrupt { bytes, .. }) => prop_assert!(bytes.len() <= data.len()),
            }
        }
    }

    /// A damaged DLQ segment and progress file: every line is an event or counted
    /// unreadable; listing, summing up and opening for replay never panic.
    #[test]
    fn a_damaged_dead_letter_segment_is_read_line_by_line(
        data in mutated(vec![DLQ_SEGMENT.as_bytes().to_vec()], 8),
        confirmed in proptest::option::of(mutated(vec![b"0\n1\n".to_vec()], 4)),
    ) {
        let tmp = ok(tempfile::tempdir());
        let sink = crate::dlq::sink_dir(tmp.path(), "out");
        ok(std::fs::create_dir_all(&sink));
        let segment = sink.join("segment-20261201T100000.000000Z.jsonl");
        ok(std::fs::write(&segment, &data));
        if let Some(confirmed) = confirmed {
            // A progress file of this very segment, with damaged confirmations.
            use std::os::unix::fs::MetadataExt;
            let meta = ok(std::fs::metadata(&segment));
            let mut progress = format!("sluice-dlq-progress v1 ino={} len={} gen=0\n", meta.ino(), meta.len()).into_bytes();
            progress.extend_from_slice(&confirmed);
            ok(std::fs::write(crate::dlq::replay::progress_path(&segment), progress));
        }
        let lines = data.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64;
        let read = crate::dlq::store::read_segment(&segment);
        prop_assert!(read.is_ok());
        if let Ok((events, unreadable)) = read {
            prop_assert!(events.len() as u64 + unreadable <= lines);
        }
        prop_assert!(crate::dlq::store::summarize(tmp.path()).is_ok());
        prop_assert!(crate::dlq::replay::read_pending(&segment).is_ok());
        prop_assert!(crate::dlq::replay::SegmentReplay::open(&segment).is_ok());
    }

    /// A damaged binary DLQ segment: reading ends; every event read is one that was written
    /// (an id from 1 to 4, at most once); keeping every record rewrites a segment that reads
    /// the same; listing, summing up and a replay's open and finish never panic.
    #[test]
    fn a_damaged_binary_dead_letter_segment_reads_as_written_events_and_damage(
        data in mutated(vec![binary_dlq_segment()], 8),
    ) {
        use crate::dlq::segment::{self, Format};
        let tmp = ok(tempfile::tempdir());
        let sink = crate::dlq::sink_dir(tmp.path(), "out");
        ok(std::fs::create_dir_all(&sink));
        let path = sink.join("segment-20261201T100000.000000Z.bin");
        ok(std::fs::write(&path, &data));
        let read = crate::dlq::store::read_segment(&path);
        prop_assert!(read.is_ok());
        if let Ok((events, _)) = read {
            let mut ids: Vec<i64> = events.iter().filter_map(|e| e.envelope["event"]["id"].as_i64()).collect();
            prop_assert_eq!(ids.len(), events.len());
            ids.sort_unstable();
            ids.dedup();
            prop_assert_eq!(ids.len(), events.len(), "no event read twice");
            prop_assert!(ids.iter().all(|id| (1..=4).contains(id)));
        }
        let contents = segment::read(Format::Binary, &data);
        let again = segment::retain(Format::Binary, &data, |_| true);
        let reread = segment::read(Format::Binary, &again);
        let lines = |c: &segment::Contents| c.records.iter().map(|(_, l)| l.to_vec()).collect::<Vec<_>>();
        prop_assert_eq!(lines(&reread), lines(&contents));
        prop_assert_eq!(segment::count(Format::Binary, &data), contents.records.len() as u64);
        prop_assert!(crate::dlq::store::summarize(tmp.path()).is_ok());
        prop_assert!(crate::dlq::replay::read_pending(&path).is_ok());
        if let Ok(Some((mut replay, pending))) = crate::dlq::replay::SegmentReplay::open(&path) {
            let first: Vec<u32> = pending.iter().map(|(i, _)| *i).take(1).collect();
            prop_assert!(replay.confirm(&first).is_ok());
            prop_assert!(replay.finish(&sink.join("archive")).is_ok());
        }
    }
}
