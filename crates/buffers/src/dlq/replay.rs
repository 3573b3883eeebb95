//! Replay bookkeeping for one segment: which records were confirmed, kept durably so a replay
//! killed half-way and run again never re-sends them, then the move of confirmed records to
//! the archive.
//!
//! A replay takes the segment's `flock` (a segment still open in a running sluice is skipped),
//! reads its complete lines, and skips those listed in the segment's progress file. Each record
//! confirmed by the pipeline (delivered, stored again, or discarded by an explicit rule) is
//! appended to the progress file `<segment>.progress` and fsynced before the next batch of
//! confirmations. [`SegmentReplay::finish`] then writes the confirmed records to
//! `archive/<segment stem>.<generation>.jsonl`, rewrites the segment with what is left (or
//! removes it) and removes the progress file, each step atomic, each safe to redo after a crash:
//!
//! - the progress file's header names the segment's inode and length; a progress file that
//!   does not match its segment (the segment was rewritten just before a crash) is stale and
//!   removed, never applied to the wrong lines;
//! - the archive file's name carries the progress file's generation, so redoing a compaction
//!   writes the same file again instead of a second copy.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::segment::{self, Format};

const HEADER: &str = "sluice-dlq-progress v1";

/// The progress file of a segment.
pub fn progress_path(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_owned();
    name.push(".progress");
    PathBuf::from(name)
}

struct Progress {
    generation: String,
    confirmed: BTreeSet<u32>,
}

/// Reads a segment's progress file if it belongs to this version of the segment.
/// Returns `None` when there is none or it is stale (and then removes it).
fn load_progress(segment: &Path, meta: &std::fs::Metadata) -> std::io::Result<Option<Progress>> {
    let path = progress_path(segment);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut lines = BufReader::new(file).split(b'\n');
    let header = match lines.next() {
        Some(line) => String::from_utf8_lossy(&line?).into_owned(),
        None => String::new(),
    };
    let mut fields = header.strip_prefix(HEADER).unwrap_or_default().split_whitespace();
    let (ino, len, generation) = (fields.next(), fields.next(), fields.next());
    let matches = ino == Some(&format!("ino={}", meta.ino()))
        && len == Some(&format!("len={}", meta.len()))
        && generation.is_some();
    if !matches {
        tracing::info!(progress = %path.display(), "Removing a replay progress file that no longer matches its segment.");
        std::fs::remove_file(&path)?;
        return Ok(None);
    }
    let generation = generation.unwrap_or_default().trim_start_matches("gen=").to_owned();
    let mut confirmed = BTreeSet::new();
    let mut pending = None;
    for line in lines {
        let line = line?;
        // Only whole lines count: the one after the last `\n` may be torn. `split` cannot tell,
        // so hold each parsed value until the next line proves it ended.
        if let Some(index) = pending.take() {
            confirmed.insert(index);
        }
        pending = std::str::from_utf8(&line).ok().and_then(|s| s.parse::<u32>().ok());
    }
    if let Some(index) = pending {
        // The last value is whole only if the file ends with `\n`.
        if std::fs::read(&path)?.ends_with(b"\n") {
            confirmed.insert(index);
        }
    }
    Ok(Some(Progress { generation, confirmed }))
}

/// The record indices already confirmed for `segment` (empty if none).
pub fn confirmed(segment: &Path) -> std::io::Result<BTreeSet<u32>> {
    let meta = std::fs::metadata(segment)?;
    Ok(load_progress(segment, &meta)?.map(|p| p.confirmed).unwrap_or_default())
}

/// Removes progress files whose segment is gone (the segment was fully replayed and removed
/// just before a crash).
pub fn remove_orphans(sink_dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(sink_dir) {
        Ok(e) => e,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "progress") && !path.with_extension("").exists() {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// One segment being replayed. Holds the segment's lock until dropped.
pub struct SegmentReplay {
    path: PathBuf,
    _lock: File,
    ino: u64,
    len: u64,
    progress: Option<(File, String)>,
    confirmed: BTreeSet<u32>,
}

/// A record to replay: its index in the segment and its line (without `\n`).
pub type PendingRecord = (u32, Vec<u8>);

/// What [`SegmentReplay::finish`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    pub archived: usize,
    pub remaining: usize,
}

/// The records of `segment` not confirmed yet, without taking its lock or changing anything
/// (a dry run).
pub fn read_pending(segment: &Path) -> std::io::Result<Vec<PendingRecord>> {
    let confirmed = confirmed(segment)?;
    let data = std::fs::read(segment)?;
    Ok(pending_of(segment, &data, &confirmed))
}

fn pending_of(path: &Path, data: &[u8], confirmed: &BTreeSet<u32>) -> Vec<PendingRecord> {
    segment::read(format_of(path), data)
        .records
        .into_iter()
        .filter(|(i, _)| !confirmed.contains(i))
        .map(|(i, line)| (i, line.into_owned()))
        .collect()
}

fn format_of(path: &Path) -> Format {
    Format::of(path).unwrap_or(Format::Lines)
}

impl SegmentReplay {
    /// Opens a segment for replay: the bookkeeping, and the records not confirmed yet (blank
    /// lines and a torn tail are not records). `Ok(None)` when a running sluice still holds it.
    pub fn open(path: &Path) -> std::io::Result<Option<(Self, Vec<PendingRecord>)>> {
        let lock = File::open(path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(err)) => return Err(err),
        }
        let meta = lock.metadata()?;
        let data = std::fs::read(path)?;
        let (progress, confirmed) = match load_progress(path, &meta)? {
            Some(p) => {
                let file = OpenOptions::new().append(true).open(progress_path(path))?;
                (Some((file, p.generation)), p.confirmed)
            }
            None => (None, BTreeSet::new()),
        };
        let pending = pending_of(path, &data, &confirmed);
        let replay =
            Self { path: path.to_path_buf(), _lock: lock, ino: meta.ino(), len: meta.len(), progress, confirmed };
        Ok(Some((replay, pending)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many records were confirmed by an earlier, interrupted replay.
    pub fn already_confirmed(&self) -> usize {
        self.confirmed.len()
    }

    /// Makes the confirmation of `indices` durable (append and fsync the progress file).
    pub fn confirm(&mut self, indices: &[u32]) -> std::io::Result<()> {
        if indices.is_empty() {
            return Ok(());
        }
        if self.progress.is_none() {
            let generation = Utc::now().format("%Y%m%dT%H%M%S%.6fZ").to_string();
            let path = progress_path(&self.path);
            let mut file = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&path)?;
            writeln!(file, "{HEADER} ino={} len={} gen={generation}", self.ino, self.len)?;
            file.sync_all()?;
            sync_dir(&self.path)?;
            self.progress = Some((file, generation));
        }
        let Some((file, _)) = self.progress.as_mut() else {
            return Ok(());
        };
        let mut text = String::with_capacity(indices.len() * 8);
        for index in indices {
            text.push_str(&index.to_string());
            text.push('\n');
        }
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        self.confirmed.extend(indices);
        Ok(())
    }

    /// Moves the confirmed records to the archive and leaves only the others in the segment.
    pub fn finish(self, archive_dir: &Path) -> std::io::Result<Compaction> {
        // The lock kept every writer away: the file is as `open` read it.
        let data = std::fs::read(&self.path)?;
        let format = format_of(&self.path);
        let contents = segment::read(format, &data);
        let mut archived = Vec::new();
        let mut counts = Compaction::default();
        for (i, line) in &contents.records {
            if self.confirmed.contains(i) {
                counts.archived += 1;
                archived.extend_from_slice(line);
                archived.push(b'\n');
            } else {
                counts.remaining += 1;
            }
        }
        let Some((_, generation)) = &self.progress else {
            return Ok(counts);
        };
        let stem = self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = match format {
            Format::Lines => stem,
            Format::Binary => format!("{stem}-bin"),
        };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(archive_dir)?;
        // The archive is always JSON lines: it is read by people and tools, not replayed.
        write_atomic(&archive_dir.join(format!("{stem}.{generation}.jsonl")), &archived)?;
        let kept = segment::retain(format, &data, |i| !self.confirmed.contains(&i));
        if kept.is_empty() {
            std::fs::remove_file(&self.path)?;
        } else if counts.archived > 0 || contents.torn_tail {
            write_atomic(&self.path, &kept)?;
        }
        sync_dir(&self.path)?;
        std::fs::remove_file(progress_path(&self.path))?;
        sync_dir(&self.path)?;
        Ok(counts)
    }
}

fn sync_dir(file_in_dir: &Path) -> std::io::Result<()> {
    match file_in_dir.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Writes `data` to `path` through a temp file, fsync and rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(dir: &Path, lines: &str) -> PathBuf {
        let path = dir.join("segment-1.jsonl");
        std::fs::write(&path, lines).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn open(path: &Path) -> (SegmentReplay, Vec<PendingRecord>) {
        SegmentReplay::open(path).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("locked"))
    }

    #[test]
    fn confirmed_records_survive_a_crash_and_are_not_pending_again() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = segment(dir.path(), "a\nb\nc\nd\n");
        let (mut replay, pending) = open(&path);
        assert_eq!(pending.len(), 4);
        replay.confirm(&[0, 2]).unwrap_or_else(|e| panic!("{e}"));
        drop(replay); // a crash: no finish
        let (replay, pending) = open(&path);
        assert_eq!(replay.already_confirmed(), 2);
        assert_eq!(pending, vec![(1, b"b".to_vec()), (3, b"d".to_vec())]);
    }

    #[test]
    fn finish_archives_confirmed_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = segment(dir.path(), "a\nb\nc\ntorn");
        let (mut replay, pending) = open(&path);
        assert_eq!(pending.len(), 3, "the torn tail is not a record");
        replay.confirm(&[0, 2]).unwrap_or_else(|e| panic!("{e}"));
        let done = replay.finish(&dir.path().join("archive")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(done, Compaction { archived: 2, remaining: 1 });
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), "b\n");
        assert!(!progress_path(&path).exists());
        let archived: Vec<_> =
            std::fs::read_dir(dir.path().join("archive")).unwrap_or_else(|e| panic!("{e}")).flatten().collect();
        assert_eq!(archived.len(), 1);
        assert_eq!(std::fs::read_to_string(archived[0].path()).unwrap_or_default(), "a\nc\n");

        let (mut replay, _) = open(&path);
        replay.confirm(&[0]).unwrap_or_else(|e| panic!("{e}"));
        let done = replay.finish(&dir.path().join("archive")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(done, Compaction { archived: 1, remaining: 0 });
        assert!(!path.exists(), "an empty segment is removed");
    }

    #[test]
    fn a_stale_progress_file_is_never_applied() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = segment(dir.path(), "a\nb\n");
        let (mut replay, _) = open(&path);
        replay.confirm(&[0]).unwrap_or_else(|e| panic!("{e}"));
        drop(replay);
        // The segment was rewritten (a compaction that crashed before removing the progress file).
        let _ = std::fs::remove_file(&path);
        segment(dir.path(), "b\n");
        let (replay, pending) = open(&path);
        assert_eq!(replay.already_confirmed(), 0);
        assert_eq!(pending.len(), 1);
        assert!(!progress_path(&path).exists());
    }

    #[test]
    fn a_torn_progress_entry_is_ignored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = segment(dir.path(), "a\nb\nc\n");
        let (mut replay, _) = open(&path);
        replay.confirm(&[0]).unwrap_or_else(|e| panic!("{e}"));
        drop(replay);
        let mut f = OpenOptions::new().append(true).open(progress_path(&path)).unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(confirmed(&path).unwrap_or_default(), BTreeSet::from([0]));
    }

    #[test]
    fn a_locked_segment_is_skipped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = segment(dir.path(), "a\n");
        let writer = File::open(&path).unwrap_or_else(|e| panic!("{e}"));
        writer.try_lock().unwrap_or_else(|e| panic!("{e}"));
        assert!(SegmentReplay::open(&path).unwrap_or_else(|e| panic!("{e}")).is_none());
    }
}
