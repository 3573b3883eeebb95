//! Offline inspection of a disk buffer (`sluice buffer check`): reads the files, changes
//! nothing.

use std::path::Path;

use serde::Serialize;

use super::record::{self, Parsed};
use super::storage::{Fs, Storage};

/// A damaged range.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub bytes: u64,
    pub reason: &'static str,
}

/// One segment file.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SegmentReport {
    pub file: String,
    pub bytes: u64,
    pub records: u64,
    pub events: u64,
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
    pub damaged: Vec<Damage>,
    /// Bytes after the last whole record (a write cut by a crash).
    pub torn_tail_bytes: u64,
}

/// A whole buffer directory.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BufferReport {
    pub dir: String,
    /// Every record id below it is acknowledged.
    pub acked_floor: Option<u64>,
    pub segments: Vec<SegmentReport>,
    /// Records and events not acknowledged yet (waiting for delivery).
    pub pending_records: u64,
    pub pending_events: u64,
    pub bytes: u64,
    /// A running sluice holds the buffer (its last segment may be mid-write).
    pub in_use: bool,
}

impl BufferReport {
    pub fn is_healthy(&self) -> bool {
        self.segments.iter().all(|s| s.damaged.is_empty())
    }
}

/// Reads every segment of the buffer in `dir`.
pub fn inspect(dir: &Path) -> std::io::Result<BufferReport> {
    let fs = Fs;
    let acked_floor = fs.read(&dir.join("acked"))?.and_then(|d| {
        String::from_utf8_lossy(&d).strip_prefix("sluice-buffer-acked v1").and_then(|r| r.trim().parse().ok())
    });
    let floor = acked_floor.unwrap_or(0);
    let in_use = crate::dir_lock::in_use(dir);
    let mut report = BufferReport { dir: dir.display().to_string(), acked_floor, in_use, ..BufferReport::default() };
    for path in fs.list(dir, ".wal")? {
        let mut data = Vec::new();
        fs.read_at(&path, 0, &mut data, usize::MAX)?;
        let mut seg = SegmentReport {
            file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            bytes: data.len() as u64,
            ..SegmentReport::default()
        };
        let mut at = 0;
        while at < data.len() {
            match record::parse(&data[at..]) {
                Parsed::Record(r, len) if seg.last_id.is_some_and(|last| r.id <= last) => {
                    seg.damaged.push(Damage { offset: at as u64, bytes: len as u64, reason: record::ID_OUT_OF_ORDER });
                    at += len;
                }
                Parsed::Record(r, len) => {
                    seg.records += 1;
                    seg.events += u64::from(r.events);
                    seg.first_id.get_or_insert(r.id);
                    seg.last_id = Some(r.id);
                    if r.id >= floor {
                        report.pending_records += 1;
                        report.pending_events += u64::from(r.events);
                    }
                    at += len;
                }
                Parsed::Incomplete => {
                    seg.torn_tail_bytes = (data.len() - at) as u64;
                    break;
                }
                Parsed::Invalid(reason) => {
                    let min = seg.last_id.map_or(0, |l| l + 1);
                    let skip = record::resync(&data[at..], min).unwrap_or(data.len() - at);
                    seg.damaged.push(Damage { offset: at as u64, bytes: skip as u64, reason });
                    at += skip;
                }
            }
        }
        report.bytes += seg.bytes;
        report.segments.push(seg);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v1_fixture_shows_its_damage() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/disk-buffer-v1");
        let report = inspect(&fixture).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.acked_floor, Some(1));
        assert_eq!(report.segments.len(), 1);
        let seg = &report.segments[0];
        assert_eq!((seg.records, seg.first_id, seg.last_id), (4, Some(0), Some(4)));
        assert_eq!(seg.damaged.len(), 1);
        assert_eq!(seg.damaged[0].reason, "checksum mismatch");
        assert!(seg.torn_tail_bytes > 0);
        assert_eq!(report.pending_records, 3);
        assert!(!report.is_healthy());
    }
}
