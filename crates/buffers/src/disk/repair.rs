//! Offline repair of a disk buffer (`sluice buffer check --repair`).
//!
//! sluice never needs a repair to start: its reader hands damaged bytes to the sink's
//! dead-letter queue and goes on. A repair does the same ahead of time, for an operator who
//! wants a clean buffer (or a clean `buffer check`) before starting:
//!
//! 1. take the directory's lock (refused while a sluice uses the buffer);
//! 2. per segment with damage or a torn tail: hand the damaged ranges to `quarantine` (the
//!    sink's DLQ), which must have stored them durably when it returns `Ok`;
//! 3. only then rewrite the segment with its valid records alone (temp file, fsync, rename,
//!    fsync of the directory), or remove it when none is left.
//!
//! The ids the damage swallowed are then missing from the log; the reader treats missing ids
//! as acknowledged (see [`super::wal`]), so the acknowledgement floor passes them. A repair
//! killed at any instant and run again quarantines a range at most twice, never loses a valid
//! record. A torn tail was never fsynced, so never acknowledged to a source: it is dropped and
//! counted, as the reader does.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::record::{self, Parsed};
use super::storage::Storage;
use super::wal::{SEGMENT_SUFFIX, first_id_of};

/// Bytes that are not a valid record, as found by the repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: Vec<u8>,
    pub reason: &'static str,
}

/// What a repair did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RepairReport {
    pub dir: String,
    pub segments_rewritten: u64,
    pub segments_removed: u64,
    pub quarantined_ranges: u64,
    pub quarantined_bytes: u64,
    pub torn_tail_bytes: u64,
    /// Valid records kept (in every segment, damaged or not).
    pub records_kept: u64,
}

/// One segment, split into what stays and what goes.
struct Scan {
    valid: Vec<u8>,
    records: u64,
    damaged: Vec<Damaged>,
    torn: u64,
}

fn scan(path: &Path, data: &[u8]) -> Scan {
    let mut out = Scan { valid: Vec::with_capacity(data.len()), records: 0, damaged: Vec::new(), torn: 0 };
    let mut last_id = None;
    let mut at = 0;
    while at < data.len() {
        match record::parse(&data[at..]) {
            Parsed::Record(r, len) if last_id.is_some_and(|last| r.id <= last) => {
                out.damaged.push(Damaged {
                    segment: path.to_path_buf(),
                    offset: at as u64,
                    bytes: data[at..at + len].to_vec(),
                    reason: record::ID_OUT_OF_ORDER,
                });
                at += len;
            }
            Parsed::Record(r, len) => {
                out.valid.extend_from_slice(&data[at..at + len]);
                out.records += 1;
                last_id = Some(r.id);
                at += len;
            }
            Parsed::Incomplete => {
                out.torn = (data.len() - at) as u64;
                break;
            }
            Parsed::Invalid(reason) => {
                let min = last_id.map_or_else(|| first_id_of(path).unwrap_or(0), |l: u64| l + 1);
                let skip = record::resync(&data[at..], min).unwrap_or(data.len() - at);
                out.damaged.push(Damaged {
                    segment: path.to_path_buf(),
                    offset: at as u64,
                    bytes: data[at..at + skip].to_vec(),
                    reason,
                });
                at += skip;
            }
        }
    }
    out
}

/// Repairs the buffer in `dir` (see the module docs). `quarantine` gets each damaged
/// segment's ranges before the segment is rewritten.
pub fn repair(
    dir: &Path,
    storage: &dyn Storage,
    quarantine: &mut dyn FnMut(&[Damaged]) -> std::io::Result<()>,
) -> std::io::Result<RepairReport> {
    let _lock = storage.lock(dir)?;
    let mut report = RepairReport { dir: dir.display().to_string(), ..RepairReport::default() };
    for path in storage.list(dir, SEGMENT_SUFFIX)? {
        let mut data = Vec::new();
        storage.read_at(&path, 0, &mut data, usize::MAX)?;
        let scan = scan(&path, &data);
        report.records_kept += scan.records;
        if scan.damaged.is_empty() && scan.torn == 0 {
            continue;
        }
        if !scan.damaged.is_empty() {
            quarantine(&scan.damaged)?;
        }
        report.quarantined_ranges += scan.damaged.len() as u64;
        report.quarantined_bytes += scan.damaged.iter().map(|d| d.bytes.len() as u64).sum::<u64>();
        report.torn_tail_bytes += scan.torn;
        if scan.valid.is_empty() {
            storage.remove(&path)?;
            report.segments_removed += 1;
        } else {
            storage.write_atomic(&path, &scan.valid)?;
            report.segments_rewritten += 1;
        }
    }
    Ok(report)
}
