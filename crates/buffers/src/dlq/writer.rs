//! Appending to one sink's disk DLQ.
//!
//! A writer creates its own segment files (never appends to one it did not create) and holds an
//! exclusive `flock` on the segment it is appending to. Readers that change segments (`replay`,
//! `purge`) skip a locked segment: it belongs to a running sluice. A segment idle for
//! [`IDLE_CLOSE`] is closed, which releases the lock, so a running pipeline's older
//! dead-lettered events can be replayed without stopping it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::segment::Format;

/// Segments roll over past this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// A segment not written to for this long is closed (and unlocked).
pub const IDLE_CLOSE: Duration = Duration::from_secs(5);

struct Segment {
    file: File,
    bytes: u64,
    last_write: Instant,
}

/// Append-only segment files for one sink: one open segment per [`Format`].
pub struct DiskDlq {
    dir: PathBuf,
    lines: Mutex<Option<Segment>>,
    binary: Mutex<Option<Segment>>,
}

impl DiskDlq {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, lines: Mutex::new(None), binary: Mutex::new(None) }
    }

    fn segment(&self, format: Format) -> &Mutex<Option<Segment>> {
        match format {
            Format::Lines => &self.lines,
            Format::Binary => &self.binary,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_segment(&self, format: Format) -> std::io::Result<Segment> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
        let mut attempt = 0u32;
        let (file, path) = loop {
            let name = match attempt {
                0 => format!("segment-{stamp}.{}", format.extension()),
                n => format!("segment-{stamp}-{n}.{}", format.extension()),
            };
            let path = self.dir.join(name);
            match OpenOptions::new().create_new(true).append(true).mode(0o600).open(&path) {
                Ok(file) => break (file, path),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(err) => return Err(err),
            }
        };
        if let Err(err) = file.try_lock() {
            return Err(std::io::Error::other(format!("cannot lock new segment {}: {err}", path.display())));
        }
        // Make the new file's name durable too.
        File::open(&self.dir)?.sync_all()?;
        Ok(Segment { file, bytes: 0, last_write: Instant::now() })
    }

    /// Appends `records` (whole lines each ending in `\n`, or whole binary batches) to the
    /// segment of their `format` and fsyncs them. Blocking.
    pub fn append(&self, format: Format, records: &[u8]) -> std::io::Result<()> {
        let mut guard = self.segment(format).lock().map_err(|_| std::io::Error::other("DLQ lock poisoned"))?;
        if guard.as_ref().is_none_or(|s| s.bytes >= SEGMENT_BYTES) {
            *guard = Some(self.open_segment(format)?);
        }
        let segment = guard.as_mut().ok_or_else(|| std::io::Error::other("no DLQ segment"))?;
        let written = segment.file.write_all(records).and_then(|()| segment.file.sync_data());
        if written.is_err() {
            // Start a fresh segment next time; the failed tail may be torn.
            *guard = None;
        } else {
            segment.bytes += records.len() as u64;
            segment.last_write = Instant::now();
        }
        written
    }

    /// Closes the current segments if nothing was appended to them for `idle`. Returns true
    /// if it closed one.
    pub fn close_if_idle(&self, idle: Duration) -> bool {
        let mut closed = false;
        for segment in [&self.lines, &self.binary] {
            if let Ok(mut guard) = segment.lock()
                && guard.as_ref().is_some_and(|s| s.last_write.elapsed() >= idle)
            {
                *guard = None;
                closed = true;
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_private_appended_and_locked_while_open() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dlq = DiskDlq::new(dir.path().join("dead_letter/out"));
        dlq.append(Format::Lines, b"{\"a\":1}\n").unwrap_or_else(|e| panic!("{e}"));
        dlq.append(Format::Lines, b"{\"a\":2}\n").unwrap_or_else(|e| panic!("{e}"));
        let files: Vec<_> = std::fs::read_dir(dir.path().join("dead_letter/out"))
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok())
            .collect();
        assert_eq!(files.len(), 1);
        let meta = files[0].metadata().unwrap_or_else(|e| panic!("{e}"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(files[0].path()).unwrap_or_default(), "{\"a\":1}\n{\"a\":2}\n");

        let other = File::open(files[0].path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(other.try_lock().is_err(), "the writer holds the lock");
        assert!(!dlq.close_if_idle(Duration::from_secs(3600)));
        assert!(dlq.close_if_idle(Duration::ZERO));
        assert!(other.try_lock().is_ok(), "closing released the lock");
    }
}
