//! Disk buffer tests on the in-memory storage: faults, crashes, corruption, and a model-based
//! property test against a plain queue.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;

use super::storage::mem::{Faults, Mem};
use super::*;

const OPTIONS: WalOptions = WalOptions { max_size: 1 << 20, segment_bytes: 256 };

fn dir() -> PathBuf {
    PathBuf::from("/buf")
}

fn open(mem: &Mem) -> Wal {
    Wal::open(&dir(), Arc::new(mem.clone()), OPTIONS).unwrap_or_else(|e| panic!("open: {e}"))
}

fn drain(wal: &mut Wal) -> Vec<Item> {
    let mut out = Vec::new();
    while let Some(item) = wal.read_next().unwrap_or_else(|e| panic!("read: {e}")) {
        out.push(item);
    }
    out
}

fn payloads(items: &[Item]) -> Vec<Vec<u8>> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Record { payload, .. } => Some(payload.clone()),
            Item::Corrupt { .. } => None,
        })
        .collect()
}

fn append(wal: &mut Wal, payload: &[u8]) -> u64 {
    wal.append(1, payload).unwrap_or_else(|e| panic!("append: {e}"))
}

#[test]
fn records_survive_a_restart_until_acknowledged() {
    let mem = Mem::default();
    let mut wal = open(&mem);
    for i in 0..20u8 {
        append(&mut wal, &[i; 30]);
    }
    wal.sync().unwrap_or_else(|e| panic!("{e}"));
    let items = drain(&mut wal);
    assert_eq!(items.len(), 20);
    for id in 0..10 {
        wal.ack(id).unwrap_or_else(|e| panic!("{e}"));
    }
    wal.persist_acks().unwrap_or_else(|e| panic!("{e}"));
    mem.crash(0);
    let mut wal = open(&mem);
    let again = payloads(&drain(&mut wal));
    assert_eq!(again, (10..20u8).map(|i| vec![i; 30]).collect::<Vec<_>>(), "exactly the unacknowledged ones");
    for id in 10..20 {
        wal.ack(id).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(mem.file(&dir().join("segment-00000000000000000000.wal")).is_none(), "acknowledged segments are deleted");
    assert_eq!(wal.unacknowledged(), 0);
}

#[test]
fn a_torn_tail_is_skipped_and_new_records_follow() {
    let mem = Mem::default();
    let mut wal = open(&mem);
    append(&mut wal, b"synced");
    wal.sync().unwrap_or_else(|e| panic!("{e}"));
    append(&mut wal, b"never synced, torn by the crash");
    mem.crash(7);
    let mut wal = open(&mem);
    append(&mut wal, b"after restart");
    let items = drain(&mut wal);
    assert_eq!(payloads(&items), vec![b"synced".to_vec(), b"after restart".to_vec()]);
    assert_eq!(wal.stats().torn_tails, 1);
}

#[test]
fn a_corrupt_record_is_handed_out_raw_and_reading_continues() {
    let mem = Mem::default();
    let mut wal = open(&mem);
    let ids: Vec<u64> = (0..5u8).map(|i| append(&mut wal, &[b'a' + i; 10])).collect();
    wal.sync().unwrap_or_else(|e| panic!("{e}"));
    let segment = dir().join("segment-00000000000000000000.wal");
    // Record 2 starts at 2 * (20 + 10) bytes; damage its payload.
    mem.corrupt(&segment, 2 * 30 + 25);
    drop(wal);
    let mut wal = open(&mem);
    let items = drain(&mut wal);
    assert_eq!(payloads(&items), vec![vec![b'a'; 10], vec![b'b'; 10], vec![b'd'; 10], vec![b'e'; 10]]);
    let corrupt: Vec<_> = items.iter().filter(|i| matches!(i, Item::Corrupt { .. })).collect();
    assert_eq!(corrupt.len(), 1);
    let Item::Corrupt { bytes, reason, lost, offset, .. } = corrupt[0] else { panic!("corrupt") };
    assert_eq!((bytes.len(), *reason, lost.clone(), *offset), (30, "checksum mismatch", ids[2]..ids[3], 60));
    for id in ids {
        wal.ack(id).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(wal.unacknowledged(), 0, "the lost id, once acknowledged, lets the floor pass");
}

/// Found by the long fuzz run: a segment in which a record's bytes appear twice (here record
/// 1 again after record 2, checksum and all) handed record 1 out twice. A record whose id does
/// not follow the one before it is damage: quarantined, not delivered again.
#[test]
fn a_record_repeated_further_on_is_damage_not_a_second_delivery() {
    let mem = Mem::default();
    let mut wal = open(&mem);
    let ids: Vec<u64> = (0..4u8).map(|i| append(&mut wal, &[b'a' + i; 10])).collect();
    wal.sync().unwrap_or_else(|e| panic!("{e}"));
    drop(wal);
    let segment = dir().join("segment-00000000000000000000.wal");
    let bytes = mem.file(&segment).unwrap_or_else(|| panic!("segment"));
    // Records are 30 bytes: 0, 1, 2, then record 1's bytes again, then 3.
    let damaged = [&bytes[..90], &bytes[30..60], &bytes[90..]].concat();
    mem.put(&segment, &damaged);
    // `sluice buffer check --repair` sees the same damage.
    let copy = Mem::default();
    copy.put(&segment, &damaged);
    let mut reasons = Vec::new();
    let report = crate::disk::repair::repair(&dir(), &copy, &mut |damaged| {
        reasons.extend(damaged.iter().map(|d| (d.offset, d.reason)));
        Ok(())
    })
    .unwrap_or_else(|e| panic!("repair: {e}"));
    assert_eq!((report.records_kept, reasons), (4, vec![(90, record::ID_OUT_OF_ORDER)]));
    let mut wal = open(&mem);
    let items = drain(&mut wal);
    assert_eq!(payloads(&items), vec![vec![b'a'; 10], vec![b'b'; 10], vec![b'c'; 10], vec![b'd'; 10]]);
    let Some(Item::Corrupt { bytes, lost, offset, .. }) = items.get(3) else { panic!("{items:?}") };
    assert_eq!((bytes.as_slice(), lost.is_empty(), *offset), (&damaged[90..120], true, 90));
    for id in ids {
        wal.ack(id).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(wal.unacknowledged(), 0);
}

#[test]
fn a_failed_fsync_stops_the_buffer_accepting() {
    let mem = Mem::default();
    let mut wal = open(&mem);
    append(&mut wal, b"x");
    mem.inject(Faults { fail_sync: true, ..Faults::default() });
    assert!(wal.sync().is_err());
    assert!(matches!(wal.append(1, b"y"), Err(AppendError::Failed(_))));
    assert!(wal.sync().is_err(), "never reports success after a failed fsync");
}

#[test]
fn no_space_is_back_pressure_not_a_failure() {
    let mem = Mem::default();
    let mut wal = open(&mem);
    append(&mut wal, b"first");
    mem.inject(Faults { no_space: true, ..Faults::default() });
    assert!(matches!(wal.append(1, b"refused"), Err(AppendError::NoSpace)));
    append(&mut wal, b"later");
    wal.sync().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(payloads(&drain(&mut wal)), vec![b"first".to_vec(), b"later".to_vec()]);
}

#[test]
fn short_writes_still_make_whole_records() {
    let mem = Mem::default();
    let mut wal = open(&mem);
    mem.inject(Faults { short_write: Some(3), ..Faults::default() });
    append(&mut wal, b"written in pieces");
    wal.sync().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(payloads(&drain(&mut wal)), vec![b"written in pieces".to_vec()]);
}

#[test]
fn a_full_buffer_refuses_until_acknowledgements_free_space() {
    let mem = Mem::default();
    let options = WalOptions { max_size: 200, segment_bytes: 60 };
    let mut wal = Wal::open(&dir(), Arc::new(mem.clone()), options).unwrap_or_else(|e| panic!("{e}"));
    let mut ids = Vec::new();
    loop {
        match wal.append(1, &[0; 30]) {
            Ok(id) => ids.push(id),
            Err(AppendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(wal.size() <= 200);
    drain(&mut wal);
    for id in &ids {
        wal.ack(*id).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(wal.append(1, &[0; 30]).is_ok(), "space came back");
}

/// Committed files of each format version must stay readable.
#[test]
fn format_version_1_fixture_is_readable() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/disk-buffer-v1");
    let mem = Mem::default();
    let fs = Fs;
    for path in fs.list(&fixture, ".wal").unwrap_or_default() {
        let data = fs.read(&path).ok().flatten().unwrap_or_default();
        mem.put(&dir().join(path.file_name().unwrap_or_default()), &data);
    }
    if let Some(acked) = fs.read(&fixture.join("acked")).ok().flatten() {
        mem.put(&dir().join("acked"), &acked);
    }
    let mut wal = open(&mem);
    let items = drain(&mut wal);
    // The fixture: records 0..=4 ("record 0".."record 4"), floor 1, a corrupt record 3, a
    // torn tail.
    assert_eq!(payloads(&items), vec![b"record 1".to_vec(), b"record 2".to_vec(), b"record 4".to_vec()]);
    assert_eq!(items.iter().filter(|i| matches!(i, Item::Corrupt { .. })).count(), 1);
    assert_eq!(wal.stats().torn_tails, 1);
}

/// Writes the fixture (run once with `SLUICE_BLESS=1`; the files are committed).
#[test]
fn bless_format_version_1_fixture() {
    if std::env::var_os("SLUICE_BLESS").is_none() {
        return;
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/disk-buffer-v1");
    let _ = std::fs::create_dir_all(&fixture);
    let mut data = Vec::new();
    for id in 0..5u64 {
        record::encode(&mut data, id, 1, format!("record {id}").as_bytes());
    }
    let third = (record::HEADER + 8) * 3;
    data[third + record::HEADER + 2] ^= 0xff;
    let mut torn = Vec::new();
    record::encode(&mut torn, 5, 1, b"record 5, torn");
    data.extend_from_slice(&torn[..torn.len() / 2]);
    let _ = std::fs::write(fixture.join("segment-00000000000000000000.wal"), &data);
    let _ = std::fs::write(fixture.join("acked"), b"sluice-buffer-acked v1 1\n");
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Sync,
    ReadAck(u8),
    Persist,
    Crash(u8),
    ShortWrite(u8),
    NoSpace,
    FailSync,
    /// Flips a byte inside a synced, unacknowledged record (picked by the number).
    Corrupt(u8),
    /// Stops, runs `sluice buffer check --repair`'s repair, and opens again.
    Repair,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..60).prop_map(Op::Append),
        3 => Just(Op::Sync),
        3 => (1u8..6).prop_map(Op::ReadAck),
        2 => Just(Op::Persist),
        1 => (0u8..40).prop_map(Op::Crash),
        1 => (1u8..10).prop_map(Op::ShortWrite),
        1 => Just(Op::NoSpace),
        1 => Just(Op::FailSync),
        1 => any::<u8>().prop_map(Op::Corrupt),
        1 => Just(Op::Repair),
    ]
}

proptest! {
    #![proptest_config(sluice_fuzz::config(300))]

    /// Against a model: every record that was synced, never acknowledged and never damaged is
    /// read back after any sequence of appends, reads, acknowledgements, crashes, faults,
    /// damage and repairs, with its exact bytes, in id order; nothing is read that was never
    /// appended; damage is handed out only for records that were damaged.
    #[test]
    fn the_buffer_matches_a_queue_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mem = Mem::default();
        let mut wal = open(&mem);
        // id -> (payload, synced)
        let mut model: BTreeMap<u64, (Vec<u8>, bool)> = BTreeMap::new();
        // Acknowledged at some point: such a record may be gone for good, or come back after a
        // crash if the floor covering it was not persisted yet.
        let mut acked: BTreeSet<u64> = BTreeSet::new();
        // Unsynced records from before a crash: they may or may not have survived it.
        let mut maybe: BTreeSet<u64> = BTreeSet::new();
        // Where this run's appends went: reads pass over them when they are next, as the channel
        // does with kept values.
        let mut placements: BTreeMap<u64, Placement> = BTreeMap::new();
        // Records whose bytes were damaged on disk (not yet quarantined by a read or a repair).
        let mut damaged: BTreeSet<u64> = BTreeSet::new();
        let mut counter = 0u32;
        for op in ops {
            match op {
                Op::Append(len) => {
                    counter += 1;
                    let mut payload = counter.to_le_bytes().to_vec();
                    payload.resize(4 + len as usize, len);
                    if let Ok(id) = wal.append(1, &payload) {
                        model.insert(id, (payload, false));
                        maybe.remove(&id);
                        // A damaged last record's id is given again after a restart: the new
                        // record is whole; the old bytes are quarantined without ids.
                        damaged.remove(&id);
                        if let Some(at) = wal.last_placement().filter(|_| !counter.is_multiple_of(3)) {
                            placements.insert(id, at);
                        }
                    }
                }
                Op::Sync => {
                    if wal.sync().is_ok() {
                        model.values_mut().for_each(|r| r.1 = true);
                    }
                }
                Op::ReadAck(n) => {
                    let mut last = None;
                    for _ in 0..n {
                        let next = placements.range(wal.read_up_to().map_or(0, |r| r + 1)..).next().map(|(_, at)| *at);
                        let passed = next.filter(|at| wal.pass_over(*at)).and_then(|at| {
                            let payload = model.get(&at.id).map(|r| r.0.clone())?;
                            Some(Item::Record { id: at.id, events: 1, payload })
                        });
                        let item = match passed {
                            Some(item) => Ok(Some(item)),
                            None => wal.read_next_before(next),
                        };
                        match item {
                            Ok(Some(Item::Record { id, payload, .. })) => {
                                if !maybe.contains(&id) {
                                    let expected = model.get(&id).map(|r| &r.0);
                                    prop_assert_eq!(Some(&payload), expected, "record {} has its bytes", id);
                                }
                                prop_assert!(last.is_none_or(|l| id > l), "ids increase");
                                last = Some(id);
                                let _ = wal.ack(id);
                                acked.insert(id);
                            }
                            Ok(Some(Item::Corrupt { lost, .. })) => {
                                for id in lost {
                                    // Acknowledged records may come back after a crash (floor not
                                    // persisted), damaged if their bytes were.
                                    let known = damaged.remove(&id)
                                        || maybe.contains(&id)
                                        || acked.contains(&id)
                                        || !model.contains_key(&id);
                                    prop_assert!(known, "undamaged record {} handed out as damage", id);
                                    // Stored in the DLQ, then acknowledged (as the runtime does).
                                    model.remove(&id);
                                    let _ = wal.ack(id);
                                    acked.insert(id);
                                }
                            }
                            Ok(None) => break,
                            Err(e) => prop_assert!(false, "read failed: {}", e),
                        }
                    }
                }
                Op::Persist => {
                    let _ = wal.persist_acks();
                }
                Op::Crash(keep) => {
                    mem.crash(keep as usize);
                    wal = open(&mem);
                    placements.clear();
                    // Records that were never synced may have survived the crash whole, or not.
                    maybe.extend(model.iter().filter(|(_, r)| !r.1).map(|(id, _)| *id));
                    model.retain(|_, r| r.1);
                }
                Op::Corrupt(n) => {
                    let mut candidates = Vec::new();
                    for path in mem.list(&dir(), ".wal").unwrap_or_default() {
                        let data = mem.file(&path).unwrap_or_default();
                        let mut at = 0;
                        while let record::Parsed::Record(r, len) = record::parse(&data[at..]) {
                            if model.get(&r.id).is_some_and(|m| m.1) && !acked.contains(&r.id) && !maybe.contains(&r.id) {
                                candidates.push((path.clone(), at, r.id));
                            }
                            at += len;
                        }
                    }
                    if !candidates.is_empty() {
                        let (path, at, id) = candidates[n as usize % candidates.len()].clone();
                        mem.corrupt(&path, at + record::HEADER);
                        damaged.insert(id);
                    }
                }
                Op::Repair => {
                    drop(wal);
                    let repaired = crate::disk::repair::repair(&dir(), &mem, &mut |_| Ok(()));
                    // An injected fault may fail the repair; then nothing was rewritten and the
                    // damage is still there for the reader.
                    if repaired.is_ok() {
                        for path in mem.list(&dir(), ".wal").unwrap_or_default() {
                            let data = mem.file(&path).unwrap_or_default();
                            let mut at = 0;
                            while let record::Parsed::Record(_, len) = record::parse(&data[at..]) {
                                at += len;
                            }
                            prop_assert_eq!(at, data.len(), "a repaired segment holds only whole, valid records");
                        }
                        for id in std::mem::take(&mut damaged) {
                            model.remove(&id);
                        }
                    }
                    wal = open(&mem);
                    placements.clear();
                    // The stopped process never synced these: a later crash may lose them.
                    maybe.extend(model.iter().filter(|(_, r)| !r.1).map(|(id, _)| *id));
                    model.retain(|_, r| r.1);
                }
                Op::ShortWrite(n) => mem.inject(Faults { short_write: Some(n as usize), ..Faults::default() }),
                Op::NoSpace => mem.inject(Faults { no_space: true, ..Faults::default() }),
                Op::FailSync => {
                    mem.inject(Faults { fail_sync: true, ..Faults::default() });
                    if wal.sync().is_err() {
                        // A failed buffer is replaced by reopening (what sluice does on restart).
                        mem.crash(0);
                        wal = open(&mem);
                        placements.clear();
                        // A roll syncs the segment it leaves: unsynced here means "maybe".
                        maybe.extend(model.iter().filter(|(_, r)| !r.1).map(|(id, _)| *id));
                        model.retain(|_, r| r.1);
                    }
                }
            }
        }
        // Everything synced and not acknowledged must still be there.
        let mut seen = BTreeSet::new();
        while let Ok(Some(item)) = wal.read_next() {
            if let Item::Record { id, payload, .. } = item {
                if !maybe.contains(&id) {
                    prop_assert_eq!(Some(&payload), model.get(&id).map(|r| &r.0));
                }
                seen.insert(id);
            }
        }
        for (id, (_, synced)) in &model {
            if *synced && !acked.contains(id) && !damaged.contains(id) {
                prop_assert!(seen.contains(id), "synced record {} was lost", id);
            }
        }
    }
}

mod channel {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::super::channel::{self, ChannelOptions, KEEP_RECORDS, Received};
    use super::*;

    /// A record's id and first byte, and whether it came back kept (not read from disk).
    fn unpack(received: Option<Received<u8>>) -> (u64, u8, bool) {
        match received {
            Some(Received::Read(Item::Record { id, payload, .. })) => (id, payload[0], false),
            Some(Received::Kept { id, value }) => (id, value, true),
            other => panic!("{other:?}"),
        }
    }

    fn options(sync_ms: u64) -> ChannelOptions {
        ChannelOptions { wal: OPTIONS, sync_interval: Duration::from_millis(sync_ms) }
    }

    fn record(done: &Arc<Mutex<Vec<(u8, bool)>>>, tag: u8) -> Box<dyn FnOnce(bool) + Send> {
        let done = done.clone();
        Box::new(move |ok| {
            if let Ok(mut d) = done.lock() {
                d.push((tag, ok));
            }
        })
    }

    #[tokio::test]
    async fn records_flow_through_in_order_and_are_reported_stored() {
        let mem = Mem::default();
        let (tx, mut rx, task) =
            channel::open::<u8>(&dir(), Arc::new(mem.clone()), options(20)).unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(task);
        let done = Arc::new(Mutex::new(Vec::new()));
        for i in 0..10u8 {
            assert!(tx.send(1, vec![i; 8], None, record(&done, i)).await.is_ok());
        }
        let mut got = Vec::new();
        for _ in 0..10 {
            let (id, byte, kept) = unpack(rx.recv().await);
            assert!(!kept);
            got.push(byte);
            rx.acker().ack(id, 1);
        }
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
        drop(tx);
        assert_eq!(rx.recv().await, None, "the end once every sender is gone");
        let done = done.lock().map(|d| d.clone()).unwrap_or_default();
        assert_eq!(done.len(), 10);
        assert!(done.iter().all(|(_, ok)| *ok));
        drop(rx);
        let _ = task.await;
        assert!(mem.list(&dir(), ".wal").unwrap_or_default().is_empty(), "a drained buffer leaves no segment");
    }

    #[tokio::test]
    async fn a_failed_fsync_reports_the_records_as_not_stored() {
        let mem = Mem::default();
        let (tx, _rx, task) =
            channel::open::<u8>(&dir(), Arc::new(mem.clone()), options(0)).unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(task);
        let done = Arc::new(Mutex::new(Vec::new()));
        mem.inject(Faults { fail_sync: true, ..Faults::default() });
        assert!(tx.send(1, vec![1], None, record(&done, 1)).await.is_ok());
        assert!(tx.send(1, vec![2], None, record(&done, 2)).await.is_ok());
        drop(tx);
        for _ in 0..100 {
            if done.lock().map(|d| d.len()).unwrap_or(0) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let done = done.lock().map(|d| d.clone()).unwrap_or_default();
        assert_eq!(done, vec![(1, false), (2, false)]);
    }

    #[tokio::test]
    async fn a_full_buffer_waits_for_acknowledgements() {
        let mem = Mem::default();
        let opts =
            ChannelOptions { wal: WalOptions { max_size: 100, segment_bytes: 40 }, sync_interval: Duration::ZERO };
        let (tx, mut rx, task) = channel::open(&dir(), Arc::new(mem.clone()), opts).unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(task);
        let done = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let done = done.clone();
            tokio::spawn(async move {
                for i in 0..20u8 {
                    let _ = tx.send(1, vec![i; 20], Some(i), record(&done, i)).await;
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < 20 {
            let (id, byte, _) = unpack(rx.recv().await);
            got.push(byte);
            rx.acker().ack(id, 1);
        }
        let _ = writer.await;
        assert_eq!(got, (0..20).collect::<Vec<u8>>(), "every record, in order, through a buffer of ~2 records");
        assert!(done.lock().map(|d| d.iter().all(|(_, ok)| *ok)).unwrap_or(false));
    }

    #[tokio::test]
    async fn kept_values_replace_reading_back_while_the_reader_keeps_up_and_the_log_still_has_them() {
        let mem = Mem::default();
        let (tx, mut rx, task) =
            channel::open::<u8>(&dir(), Arc::new(mem.clone()), options(0)).unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(task);
        let done = Arc::new(Mutex::new(Vec::new()));
        // Odd records are sent without a value: they are read from disk, the others are not.
        let count = KEEP_RECORDS as u8 + 20;
        for i in 0..count {
            assert!(tx.send(1, vec![i; 8], (i % 2 == 0).then_some(i), record(&done, i)).await.is_ok());
        }
        let mut got = Vec::new();
        for _ in 0..count {
            let (id, byte, kept) = unpack(rx.recv().await);
            assert_eq!(id, u64::from(byte), "ids follow the order of appends");
            got.push((byte, kept));
        }
        assert_eq!(got.iter().map(|(b, _)| *b).collect::<Vec<_>>(), (0..count).collect::<Vec<_>>());
        let kept = got.iter().filter(|(_, kept)| *kept).count();
        assert!(kept > 0 && got.iter().all(|(b, kept)| !kept || b % 2 == 0), "{got:?}");
        // Nothing was acknowledged: after a restart, every record is read from disk.
        drop((tx, rx));
        let _ = task.await;
        let (tx, mut rx, task) =
            channel::open::<u8>(&dir(), Arc::new(mem.clone()), options(0)).unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(task);
        drop(tx);
        for i in 0..count {
            assert_eq!(unpack(rx.recv().await), (u64::from(i), i, false));
            rx.acker().ack(u64::from(i), 1);
        }
        assert!(rx.recv().await.is_none());
        drop(rx);
        let _ = task.await;
    }

    #[tokio::test(start_paused = true)]
    async fn acknowledgements_are_persisted_soon_after_the_last_one_even_when_idle() {
        let mem = Mem::default();
        let (tx, mut rx, task) =
            channel::open::<u8>(&dir(), Arc::new(mem.clone()), options(0)).unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(task);
        let done = Arc::new(Mutex::new(Vec::new()));
        for i in 0..3u8 {
            assert!(tx.send(1, vec![i; 8], None, record(&done, i)).await.is_ok());
        }
        for _ in 0..3 {
            let (id, _, _) = unpack(rx.recv().await);
            rx.acker().ack(id, 1);
        }
        let floor = || mem.file(&dir().join("acked")).map(|d| String::from_utf8_lossy(&d).into_owned());
        tokio::time::sleep(channel::PERSIST_ACKS_EVERY * 3).await;
        assert_eq!(floor().as_deref(), Some("sluice-buffer-acked v1 3\n"), "persisted with nothing else happening");
        drop((tx, rx));
    }
}

mod repair {
    use super::super::repair::{Damaged, repair};
    use super::*;

    fn quarantined(mem: &Mem) -> std::io::Result<(super::super::repair::RepairReport, Vec<Damaged>)> {
        let mut taken = Vec::new();
        let report = repair(&dir(), mem, &mut |damaged| {
            taken.extend_from_slice(damaged);
            Ok(())
        })?;
        Ok((report, taken))
    }

    #[test]
    fn a_repaired_buffer_delivers_its_good_records_and_the_floor_passes_the_removed_ids() {
        let mem = Mem::default();
        let mut wal = open(&mem);
        let ids: Vec<u64> = (0..5u8).map(|i| append(&mut wal, &[b'a' + i; 10])).collect();
        wal.sync().unwrap_or_else(|e| panic!("{e}"));
        drop(wal);
        let segment = dir().join("segment-00000000000000000000.wal");
        mem.corrupt(&segment, 2 * 30 + 25);
        let (report, damaged) = quarantined(&mem).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(damaged.len(), 1);
        assert_eq!((damaged[0].offset, damaged[0].bytes.len(), damaged[0].reason), (60, 30, "checksum mismatch"));
        assert_eq!((report.segments_rewritten, report.records_kept, report.quarantined_bytes), (1, 4, 30));
        let mut wal = open(&mem);
        let items = drain(&mut wal);
        assert!(items.iter().all(|i| matches!(i, Item::Record { .. })), "nothing damaged is left");
        assert_eq!(payloads(&items), vec![vec![b'a'; 10], vec![b'b'; 10], vec![b'd'; 10], vec![b'e'; 10]]);
        for item in &items {
            if let Item::Record { id, .. } = item {
                wal.ack(*id).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        assert_eq!(wal.unacknowledged(), 0, "the removed id {} does not hold the floor back", ids[2]);
        wal.close().unwrap_or_else(|e| panic!("{e}"));
        drop(wal);
        let (again, _) = quarantined(&mem).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.quarantined_ranges, 0, "a second repair finds nothing");
    }

    #[test]
    fn a_segment_left_with_no_valid_record_is_removed_and_its_ids_are_passed() {
        let mem = Mem::default();
        let mut wal = open(&mem);
        // 120-byte records in 256-byte segments: three per segment.
        let ids: Vec<u64> = (0..6u8).map(|i| append(&mut wal, &[b'a' + i; 100])).collect();
        wal.sync().unwrap_or_else(|e| panic!("{e}"));
        drop(wal);
        let first = dir().join("segment-00000000000000000000.wal");
        for record in 0..3 {
            mem.corrupt(&first, record * 120 + 30);
        }
        let (report, damaged) = quarantined(&mem).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.segments_removed, damaged.len(), report.records_kept), (1, 1, 3));
        assert!(mem.file(&first).is_none());
        let mut wal = open(&mem);
        let items = drain(&mut wal);
        assert_eq!(payloads(&items), vec![vec![b'd'; 100], vec![b'e'; 100], vec![b'f'; 100]]);
        for id in &ids[3..] {
            wal.ack(*id).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(wal.unacknowledged(), 0);
    }

    #[test]
    fn a_buffer_in_use_is_not_repaired() {
        let mem = Mem::default();
        let mut wal = open(&mem);
        append(&mut wal, b"x");
        let err = quarantined(&mem).err().map(|e| e.kind());
        assert_eq!(err, Some(std::io::ErrorKind::WouldBlock));
        let second = Wal::open(&dir(), Arc::new(mem.clone()), OPTIONS).err().map(|e| e.kind());
        assert_eq!(second, Some(std::io::ErrorKind::WouldBlock), "nor opened by a second process");
        drop(wal);
        assert!(quarantined(&mem).is_ok());
    }

    #[test]
    fn nothing_is_rewritten_unless_the_quarantine_stored_the_damage() {
        let mem = Mem::default();
        let mut wal = open(&mem);
        (0..3u8).for_each(|i| {
            append(&mut wal, &[i; 10]);
        });
        wal.sync().unwrap_or_else(|e| panic!("{e}"));
        drop(wal);
        let segment = dir().join("segment-00000000000000000000.wal");
        mem.corrupt(&segment, 25);
        let before = mem.file(&segment);
        let failed = repair(&dir(), &mem, &mut |_| Err(std::io::Error::other("DLQ disk full")));
        assert!(failed.is_err());
        assert_eq!(mem.file(&segment), before, "the damaged segment is left as it was");
    }
}

/// A crash that leaves a record's header whole and its body torn: that record was never
/// stored, so it counts nothing (before, its events showed as waiting in every later start).
#[test]
fn a_torn_record_counts_no_events_at_open() {
    let mem = Mem::default();
    let mut wal = open(&mem);
    wal.append(5, b"synced").unwrap_or_else(|e| panic!("{e}"));
    wal.sync().unwrap_or_else(|e| panic!("{e}"));
    wal.append(100, &[b'x'; 120]).unwrap_or_else(|e| panic!("{e}"));
    mem.crash(super::record::HEADER + 3);
    let wal = open(&mem);
    assert_eq!(wal.events_at_open(), 5, "only the synced record's events wait");
}

#[test]
fn events_waiting_are_counted_from_headers_at_open() {
    let mem = Mem::default();
    let mut wal = open(&mem);
    let first = wal.append(2, b"aa").unwrap_or_else(|e| panic!("{e}"));
    wal.append(3, b"bbb").unwrap_or_else(|e| panic!("{e}"));
    wal.append(4, b"cccc").unwrap_or_else(|e| panic!("{e}"));
    wal.sync().unwrap_or_else(|e| panic!("{e}"));
    wal.ack(first).unwrap_or_else(|e| panic!("{e}"));
    wal.persist_acks().unwrap_or_else(|e| panic!("{e}"));
    drop(wal);
    assert_eq!(open(&mem).events_at_open(), 7, "records below the floor do not count");
}
