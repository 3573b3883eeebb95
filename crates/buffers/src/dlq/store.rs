//! Reading and purging the disk dead-letter queue, for `sluice dlq`.
//!
//! Layout and format: `docs/design/dead-letter.md`. Readers skip lines that do not parse (a
//! torn tail after a crash) and count them, and leave out records a replay already confirmed.
//! Purging rewrites a segment atomically (temp file, fsync, rename, fsync of the directory)
//! and never touches a segment a running sluice holds open (its `flock`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::replay::{self, SegmentReplay};
use super::root;
use super::segment::{self, Format};

/// One sink's disk DLQ at a glance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkSummary {
    pub sink_id: String,
    pub events: u64,
    pub bytes: u64,
    pub segments: usize,
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
    pub by_reason: BTreeMap<String, u64>,
    /// Lines that could not be read (a torn tail).
    pub unreadable: u64,
}

/// One dead-lettered event as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub segment: PathBuf,
    /// Its index in the segment (see `segment`).
    pub index: u32,
    pub envelope: serde_json::Value,
}

impl StoredEvent {
    pub fn sink_id(&self) -> &str {
        self.envelope["sink_id"].as_str().unwrap_or_default()
    }
    pub fn reason(&self) -> &str {
        self.envelope["reason"].as_str().unwrap_or_default()
    }
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.envelope["dead_lettered_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc())
    }
}

/// Sink ids that have a DLQ directory, sorted.
pub fn sinks(data_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut ids = Vec::new();
    match std::fs::read_dir(root(data_dir)) {
        Ok(entries) => {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    ids.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    ids.sort();
    Ok(ids)
}

/// A sink's segment files (both forms), oldest first.
pub fn segments(data_dir: &Path, sink_id: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(root(data_dir).join(sink_id)) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    }
    .flatten()
    .map(|e| e.path())
    .filter(|p| Format::of(p).is_some())
    .collect();
    files.sort();
    Ok(files)
}

/// Reads one segment: the events not yet confirmed by a replay, and how many records could
/// not be read (lines that do not parse, damaged binary batches, a torn tail).
pub fn read_segment(path: &Path) -> std::io::Result<(Vec<StoredEvent>, u64)> {
    let format = Format::of(path).unwrap_or(Format::Lines);
    let confirmed = replay::confirmed(path)?;
    let data = std::fs::read(path)?;
    let contents = segment::read(format, &data);
    let mut events = Vec::new();
    let mut unreadable = contents.damaged + u64::from(contents.torn_tail);
    for (index, line) in contents.records {
        if confirmed.contains(&index) {
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(envelope) if envelope.is_object() => {
                events.push(StoredEvent { segment: path.to_path_buf(), index, envelope })
            }
            _ => unreadable += 1,
        }
    }
    Ok((events, unreadable))
}

/// A summary per sink.
pub fn summarize(data_dir: &Path) -> std::io::Result<Vec<SinkSummary>> {
    let mut out = Vec::new();
    for sink_id in sinks(data_dir)? {
        let mut summary = SinkSummary { sink_id: sink_id.clone(), ..SinkSummary::default() };
        for segment in segments(data_dir, &sink_id)? {
            summary.segments += 1;
            summary.bytes += std::fs::metadata(&segment)?.len();
            let (events, unreadable) = read_segment(&segment)?;
            summary.unreadable += unreadable;
            for event in events {
                summary.events += 1;
                *summary.by_reason.entry(event.reason().to_owned()).or_insert(0) += 1;
                if let Some(t) = event.time() {
                    summary.oldest = Some(summary.oldest.map_or(t, |o| o.min(t)));
                    summary.newest = Some(summary.newest.map_or(t, |n| n.max(t)));
                }
            }
        }
        out.push(summary);
    }
    Ok(out)
}

/// Measures one sink's DLQ (events not yet confirmed by a replay, and bytes on disk) for the
/// size gauges, recounting only segments whose length changed or that a replay is working on.
#[derive(Debug, Default)]
pub struct SizeCache {
    counted: BTreeMap<PathBuf, (u64, u64)>,
}

impl SizeCache {
    pub fn measure(&mut self, sink_dir: &Path) -> std::io::Result<(u64, u64)> {
        let (mut events, mut bytes) = (0, 0);
        let mut seen = BTreeMap::new();
        let entries = match std::fs::read_dir(sink_dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(err) => return Err(err),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(format) = Format::of(&path) else {
                continue;
            };
            let len = entry.metadata()?.len();
            let in_replay = replay::progress_path(&path).exists();
            let count = match self.counted.get(&path) {
                Some((l, n)) if *l == len && !in_replay => *n,
                _ => {
                    let records = segment::count(format, &std::fs::read(&path)?);
                    let confirmed = if in_replay { replay::confirmed(&path)?.len() as u64 } else { 0 };
                    records.saturating_sub(confirmed)
                }
            };
            seen.insert(path, (len, count));
            events += count;
            bytes += len;
        }
        self.counted = seen;
        Ok((events, bytes))
    }
}

/// What a purge did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PurgeReport {
    pub removed: u64,
    pub kept: u64,
    /// Segments left alone because a running sluice holds them open.
    pub skipped_active: usize,
}

/// Removes stored events dead-lettered before `older_than` (all when `None`), for one sink or
/// all of them.
pub fn purge(data_dir: &Path, sink: Option<&str>, older_than: Option<DateTime<Utc>>) -> std::io::Result<PurgeReport> {
    let mut report = PurgeReport::default();
    let ids = match sink {
        Some(id) => vec![id.to_owned()],
        None => sinks(data_dir)?,
    };
    for id in ids {
        replay::remove_orphans(&root(data_dir).join(&id))?;
        for segment in segments(data_dir, &id)? {
            // Holding the lock keeps a replay away while the segment is rewritten.
            let Some(held) = SegmentReplay::open(&segment)? else {
                report.skipped_active += 1;
                continue;
            };
            let (events, unreadable) = read_segment(&segment)?;
            let (keep, remove): (Vec<_>, Vec<_>) =
                events.into_iter().partition(|e| older_than.is_some_and(|cutoff| e.time().is_none_or(|t| t >= cutoff)));
            report.removed += remove.len() as u64;
            report.kept += keep.len() as u64;
            if remove.is_empty() && unreadable == 0 {
                continue;
            }
            if keep.is_empty() {
                std::fs::remove_file(&segment)?;
            } else {
                let keep: BTreeSet<u32> = keep.iter().map(|e| e.index).collect();
                let format = Format::of(&segment).unwrap_or(Format::Lines);
                let data = std::fs::read(&segment)?;
                replay::write_atomic(&segment, &segment::retain(format, &data, |i| keep.contains(&i)))?;
            }
            // Confirmed records were dropped too; their progress file is stale now.
            let _ = std::fs::remove_file(replay::progress_path(&segment));
            if let Some(dir) = segment.parent() {
                File::open(dir)?.sync_all()?;
            }
            drop(held);
        }
    }
    Ok(report)
}

/// Parses `30s`, `15m`, `24h`, `7d` (or plain seconds).
pub fn parse_age(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_segment(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap_or_default();
        let path = dir.join(name);
        std::fs::write(&path, lines.join("\n")).unwrap_or_default();
        path
    }

    #[test]
    fn summary_counts_reasons_and_skips_a_torn_tail() {
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write_segment(
            &data.path().join("dead_letter/out"),
            "segment-1.jsonl",
            &[
                r#"{"sink_id":"out","reason":"permanent","dead_lettered_at":"2026-01-01T00:00:00Z"}"#,
                r#"{"sink_id":"out","reason":"retries_exhausted","dead_lettered_at":"2026-01-02T00:00:00Z"}"#,
                r#"{"sink_id":"out","reas"#,
            ],
        );
        let summary = summarize(data.path()).unwrap_or_default();
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].events, 2);
        assert_eq!(summary[0].unreadable, 1);
        assert_eq!(summary[0].by_reason.get("permanent"), Some(&1));
        assert_eq!(summary[0].oldest.map(|t| t.to_rfc3339()), Some("2026-01-01T00:00:00+00:00".into()));
    }

    #[test]
    fn purge_older_than_keeps_newer_records() {
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let segment = write_segment(
            &data.path().join("dead_letter/out"),
            "segment-1.jsonl",
            &[
                r#"{"sink_id":"out","reason":"permanent","dead_lettered_at":"2026-01-01T00:00:00Z"}"#,
                r#"{"sink_id":"out","reason":"permanent","dead_lettered_at":"2026-03-01T00:00:00Z"}"#,
                "",
            ],
        );
        let cutoff = DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z").map(|t| t.to_utc()).ok();
        let report = purge(data.path(), None, cutoff).unwrap_or_default();
        assert_eq!((report.removed, report.kept), (1, 1));
        assert_eq!(summarize(data.path()).unwrap_or_default()[0].events, 1);
        let writer = File::open(&segment).unwrap_or_else(|e| panic!("{e}"));
        writer.try_lock().unwrap_or_else(|e| panic!("{e}"));
        let report = purge(data.path(), Some("out"), None).unwrap_or_default();
        assert_eq!(report.skipped_active, 1, "a running sluice holds it");
        drop(writer);
        let report = purge(data.path(), Some("out"), None).unwrap_or_default();
        assert_eq!(report.removed, 1);
        assert!(summarize(data.path()).unwrap_or_default()[0].events == 0);
    }

    #[test]
    fn records_confirmed_by_an_interrupted_replay_are_not_counted() {
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let segment = write_segment(
            &data.path().join("dead_letter/out"),
            "segment-1.jsonl",
            &[r#"{"sink_id":"out","reason":"permanent"}"#, r#"{"sink_id":"out","reason":"permanent"}"#, ""],
        );
        let (mut replay, _) = SegmentReplay::open(&segment).ok().flatten().unwrap_or_else(|| panic!("open"));
        replay.confirm(&[1]).unwrap_or_else(|e| panic!("{e}"));
        drop(replay);
        assert_eq!(summarize(data.path()).unwrap_or_default()[0].events, 1);
    }

    #[test]
    fn size_cache_counts_records_and_bytes() {
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = data.path().join("dead_letter/out");
        let segment = write_segment(&dir, "segment-1.jsonl", &["{}", "{}", "{}", "{\"torn"]);
        let mut cache = SizeCache::default();
        let size = std::fs::metadata(&segment).map(|m| m.len()).unwrap_or_default();
        assert_eq!(cache.measure(&dir).unwrap_or_default(), (3, size));
        let (mut replay, _) = SegmentReplay::open(&segment).ok().flatten().unwrap_or_else(|| panic!("open"));
        replay.confirm(&[0]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cache.measure(&dir).unwrap_or_default(), (2, size), "confirmed records do not count");
        assert_eq!(SizeCache::default().measure(&data.path().join("none")).unwrap_or_default(), (0, 0));
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_age("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_age("3w"), None);
    }
}
