//! Power loss, simulated. `kill -9` keeps the page cache, so it cannot tell "acknowledged after
//! fsync" from "acknowledged after write". These tests run the real writers (the DLQ writer,
//! replay progress, the checkpoint store) on real files, keep what each fsync made durable,
//! and build the files a power loss would leave at every point in between: what was synced,
//! plus what was written after it dropped or torn at every byte, and renames not yet made
//! durable done or not. The real readers must then find everything that was acknowledged, and
//! nothing that was not written. (The disk buffer's log has its own model test with the same
//! faults: `crates/buffers/src/disk/tests.rs`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sluice_buffers::dlq::segment::{self, Format};
use sluice_buffers::dlq::{DiskDlq, replay, store};
use sluice_file_tail::checkpoint::Store;
use sluice_file_tail::fingerprint::Fingerprint;

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = ok(std::fs::read_dir(dir)).flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn envelope(id: &str) -> String {
    format!(
        r#"{{"envelope_version":1,"sink_id":"out","sink_type":"http","reason":"permanent","message":"HTTP 403","status":403,"attempts":1,"dead_lettered_at":"2026-12-02T10:00:00Z","event":{{"id":"{id}","message":"inference done"}}}}"#
    ) + "\n"
}

/// The records of one append in `format`: envelope lines, or one binary batch.
fn records(format: Format, ids: &[String]) -> Vec<u8> {
    match format {
        Format::Lines => ids.iter().map(|id| envelope(id)).collect::<String>().into_bytes(),
        Format::Binary => {
            let events: Vec<sluice_core::LogEvent> = ids
                .iter()
                .map(|id| {
                    let body = serde_json::json!({"id": id, "message": "inference done"});
                    let body: vrl::value::Value = ok(serde_json::from_value(body));
                    sluice_core::LogEvent::from_value(
                        body,
                        sluice_core::event::EventMetadata::new("in", chrono::Utc::now()),
                    )
                })
                .collect();
            let mut out = Vec::new();
            let head = br#"{"version":1,"sink_id":"out","sink_type":"http","reason":"stalled","dead_lettered_at":"2026-12-02T10:00:00Z"}"#;
            segment::write_batch(&mut out, head, &events);
            out
        }
    }
}

/// Each append is acknowledged (the events count as dead-lettered) once it returns: a power
/// loss during a later append, torn at any byte, keeps every acknowledged event readable,
/// reads no event that was not written whole, and counts the torn line as unreadable.
#[test]
fn every_dead_lettered_event_survives_a_power_loss_at_any_byte() {
    survives_a_power_loss_at_any_byte(Format::Lines);
}

/// The same for the binary segments of a stalled sink's diversion (a torn batch).
#[test]
fn every_diverted_event_survives_a_power_loss_at_any_byte() {
    survives_a_power_loss_at_any_byte(Format::Binary);
}

fn survives_a_power_loss_at_any_byte(format: Format) {
    let tmp = ok(tempfile::tempdir());
    let dir = tmp.path().join("dead_letter/out");
    let dlq = DiskDlq::new(dir.clone());
    // What was durable after each acknowledged append (nothing before the first).
    let mut durable = vec![Vec::new()];
    let mut batches: Vec<Vec<String>> = Vec::new();
    for k in 0..6 {
        let ids: Vec<String> = (0..k + 1).map(|j| format!("b{k}-e{j}")).collect();
        ok(dlq.append(format, &records(format, &ids)));
        durable.push(ok(std::fs::read(only_file(&dir))));
        batches.push(ids);
    }
    let name = only_file(&dir).file_name().map(|n| n.to_owned()).unwrap_or_default();
    let mut images = 0;
    for k in 1..durable.len() {
        let (before, after) = (&durable[k - 1], &durable[k]);
        let acknowledged: BTreeSet<&str> = batches[..k - 1].iter().flatten().map(String::as_str).collect();
        let written: BTreeSet<&str> = batches[..k].iter().flatten().map(String::as_str).collect();
        for torn in 0..=after.len() - before.len() {
            let image = ok(tempfile::tempdir());
            let segment = image.path().join(&name);
            let mut data = before.clone();
            data.extend_from_slice(&after[before.len()..before.len() + torn]);
            ok(std::fs::write(&segment, &data));
            let (events, unreadable) = ok(store::read_segment(&segment));
            let read: BTreeSet<String> =
                events.iter().filter_map(|e| e.envelope["event"]["id"].as_str().map(str::to_owned)).collect();
            for id in &acknowledged {
                assert!(read.contains(*id), "append {k} torn at {torn}: acknowledged {id} lost");
            }
            for id in &read {
                assert!(written.contains(id.as_str()), "append {k} torn at {torn}: {id} was never written");
            }
            assert!(unreadable <= 1, "only the torn line or batch is unreadable");
            assert_eq!(events.len(), read.len(), "no event is read twice");
            images += 1;
        }
    }
    let least = match format {
        Format::Lines => 4_000,
        Format::Binary => 1_500,
    };
    assert!(images > least, "every byte of every append: {images}");
}

/// A replay confirms records in batches, each made durable (appended to the progress file and
/// fsynced) before the next batch is sent. A power loss at any byte of a later confirmation
/// keeps every confirmed record confirmed (it is not sent again) and never confirms one that
/// was not: a torn `13` must not read as `1`.
#[test]
fn replay_confirmations_survive_a_power_loss_and_a_torn_one_is_never_applied() {
    let tmp = ok(tempfile::tempdir());
    let segment = tmp.path().join("segment-20261202T100000.000000Z.jsonl");
    let lines: String = (0..40).map(|i| envelope(&format!("r{i}"))).collect();
    ok(std::fs::write(&segment, lines));
    // Two-digit indices whose first digit is not confirmed yet: a torn `13` read as `1` shows.
    let batches: Vec<Vec<u32>> = vec![vec![0, 5], vec![13, 20, 6], vec![34, 1, 7, 8], vec![2], vec![39, 38, 3]];
    let progress = replay::progress_path(&segment);
    let mut durable = vec![Vec::new()];
    {
        let Some((mut replay, pending)) = ok(replay::SegmentReplay::open(&segment)) else { panic!("not locked") };
        assert_eq!(pending.len(), 40);
        for batch in &batches {
            ok(replay.confirm(batch));
            durable.push(ok(std::fs::read(&progress)));
        }
    }
    for k in 1..durable.len() {
        let (before, after) = (&durable[k - 1], &durable[k]);
        let acknowledged: BTreeSet<u32> = batches[..k - 1].iter().flatten().copied().collect();
        let written: BTreeSet<u32> = batches[..k].iter().flatten().copied().collect();
        for torn in 0..=after.len() - before.len() {
            let mut data = before.clone();
            data.extend_from_slice(&after[before.len()..before.len() + torn]);
            if data.is_empty() {
                let _ = std::fs::remove_file(&progress);
            } else {
                ok(std::fs::write(&progress, &data));
            }
            let confirmed = ok(replay::confirmed(&segment));
            assert!(acknowledged.is_subset(&confirmed), "batch {k} torn at {torn}: a confirmation was lost");
            assert!(confirmed.is_subset(&written), "batch {k} torn at {torn}: {confirmed:?} confirms what was not");
            assert_eq!(
                ok(replay::read_pending(&segment)).len(),
                40 - confirmed.len(),
                "what is confirmed is not pending"
            );
        }
    }
}

/// The store is written as: temp file, fsync, rename the current file to `.prev`, rename the
/// temp file to the current one, fsync the directory. At every point a power loss can stop it
/// (the temp file torn at any byte; either rename made durable or not) the positions read back
/// are the old ones or the new ones, never none (a file read again from its start).
#[test]
fn checkpoint_positions_survive_a_power_loss_at_every_step_of_a_store_write() {
    let tmp = ok(tempfile::tempdir());
    let fingerprints = [Fingerprint::Checksum(11_908_805_321_237_624_401), Fingerprint::DevInode(2049, 77)];
    let write = |positions: [u64; 2]| {
        let mut store = ok(Store::open(tmp.path()));
        for (fp, position) in fingerprints.iter().zip(positions) {
            store.set(*fp, position, Path::new("/var/log/app.log"), "files");
        }
        ok(store.flush());
        ok(std::fs::read(tmp.path().join("checkpoints.json")))
    };
    let older = write([10, 1]);
    let old = write([100, 2]);
    let new = write([200, 3]);
    let read = |files: &[(&str, &[u8])]| -> Vec<Option<u64>> {
        let image = ok(tempfile::tempdir());
        for (name, data) in files {
            ok(std::fs::write(image.path().join(name), data));
        }
        let store = ok(Store::open(image.path()));
        fingerprints.iter().map(|fp| store.get(fp).map(|c| c.position)).collect()
    };
    let (was, now) = (vec![Some(100), Some(2)], vec![Some(200), Some(3)]);
    // The temp file written up to any byte, not synced: the old positions.
    for torn in 0..new.len() {
        let got = read(&[
            ("checkpoints.json", &old),
            ("checkpoints.json.prev", &older),
            ("checkpoints.json.tmp", &new[..torn]),
        ]);
        assert_eq!(got, was, "temp file torn at {torn}");
    }
    // Synced, then each rename durable or not (in either order).
    let images: [&[(&str, &[u8])]; 4] = [
        &[("checkpoints.json", &old), ("checkpoints.json.prev", &older), ("checkpoints.json.tmp", &new)],
        &[("checkpoints.json.prev", &old), ("checkpoints.json.tmp", &new)],
        &[("checkpoints.json", &new), ("checkpoints.json.prev", &older)],
        &[("checkpoints.json", &new), ("checkpoints.json.prev", &old)],
    ];
    for (i, files) in images.iter().enumerate() {
        assert_eq!(read(files), now, "after the temp file was synced, image {i}");
    }
}
