//! The checkpoint store: one per `data_dir`, shared by every file-reading source of the
//! process, keyed by fingerprint (never by source name). Format and rules:
//! `docs/design/checkpoints.md`.
//!
//! Invariants:
//! - a position is where the next read starts: just past the delimiter of the last line that
//!   was acknowledged (delivered, stored durably, or discarded by a rule); positions only move
//!   for acknowledged lines (the tailer decides; the store only keeps them);
//! - the store is replaced atomically: `checkpoints.json.tmp` is written and fsynced, the
//!   current file is renamed to `checkpoints.json.prev`, the temp file to
//!   `checkpoints.json`, and the directory is fsynced. A crash at any step leaves a complete
//!   copy (the temp file, the current one, or the previous one) that [`Store::open`] finds;
//! - a damaged store never resets positions: the last good copy is used, the damaged file is
//!   moved aside (`checkpoints.json.corrupt-<time>`) and a warning names it; a damaged entry
//!   costs that entry only;
//! - one process at a time: the directory's `lock` is held while the store is open.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;

/// The format this code writes.
pub const VERSION: u32 = 1;
const FILE: &str = "checkpoints.json";

/// Where one file's reading stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub fingerprint: Fingerprint,
    /// Byte offset where the next read starts (decompressed bytes for gzip files).
    pub position: u64,
    /// Where the file was last seen ("" when adopted from Vector, which does not store it).
    #[serde(default)]
    pub path: String,
    /// When this entry last changed.
    pub modified: DateTime<Utc>,
    /// The source that last read the file (`vector:<id>` when adopted from Vector).
    #[serde(default)]
    pub source: String,
}

/// A Vector checkpoints file adopted into the store, so it is adopted once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Import {
    pub file: String,
    pub len: u64,
    pub modified: DateTime<Utc>,
}

#[derive(Serialize)]
struct OnDisk<'a> {
    version: u32,
    checkpoints: Vec<&'a Checkpoint>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    imports: &'a [Import],
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the checkpoint store: {0}")]
    InUse(std::io::Error),
    #[error("cannot use the checkpoint store in {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// The checkpoint store of one `data_dir`.
pub struct Store {
    dir: PathBuf,
    entries: BTreeMap<Fingerprint, Checkpoint>,
    imports: Vec<Import>,
    dirty: bool,
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).field("entries", &self.entries.len()).finish()
    }
}

/// `data_dir/checkpoints`.
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoints")
}

/// What a file held, if it parsed: its entries (bad entries left out) and imports.
struct Parsed {
    entries: BTreeMap<Fingerprint, Checkpoint>,
    imports: Vec<Import>,
    bad_entries: Vec<serde_json::Value>,
}

fn parse(data: &[u8]) -> Result<Parsed, String> {
    let value: serde_json::Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        return Err(format!("unknown version {:?}", value.get("version")));
    }
    let items = value.get("checkpoints").and_then(serde_json::Value::as_array).ok_or("no checkpoints array")?;
    let mut parsed = Parsed { entries: BTreeMap::new(), imports: Vec::new(), bad_entries: Vec::new() };
    for item in items {
        match serde_json::from_value::<Checkpoint>(item.clone()) {
            Ok(c) => {
                parsed.entries.insert(c.fingerprint, c);
            }
            Err(_) => parsed.bad_entries.push(item.clone()),
        }
    }
    if let Some(imports) = value.get("imports") {
        parsed.imports = serde_json::from_value(imports.clone()).unwrap_or_default();
    }
    Ok(parsed)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store {
    /// Opens (or creates) the store in `dir` and takes its lock.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |e| StoreError::Io(dir.to_path_buf(), e);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        let lock = sluice_buffers::dir_lock::lock_dir(dir)
            .map_err(|e| if e.kind() == std::io::ErrorKind::WouldBlock { StoreError::InUse(e) } else { io(e) })?;
        let mut store =
            Self { dir: dir.to_path_buf(), entries: BTreeMap::new(), imports: Vec::new(), dirty: false, _lock: lock };
        store.load().map_err(io)?;
        Ok(store)
    }

    /// Reads the newest complete copy: the temp file (fsynced before it was renamed, so a
    /// whole one is the newest state), the current file, then the previous one.
    fn load(&mut self) -> std::io::Result<()> {
        let current = self.dir.join(FILE);
        let candidates = [self.dir.join(format!("{FILE}.tmp")), current.clone(), self.dir.join(format!("{FILE}.prev"))];
        for (i, path) in candidates.iter().enumerate() {
            let data = match std::fs::read(path) {
                Ok(data) => data,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            match parse(&data) {
                Ok(parsed) => {
                    if !parsed.bad_entries.is_empty() {
                        self.quarantine(path, &serde_json::to_vec(&parsed.bad_entries).unwrap_or_default())?;
                        tracing::warn!(
                            file = %path.display(),
                            entries = parsed.bad_entries.len(),
                            "Damaged checkpoint entries were set aside; every other position is kept. Files of the damaged entries are read again from their start."
                        );
                        self.dirty = true;
                    }
                    self.entries = parsed.entries;
                    self.imports = parsed.imports;
                    // A temp file was the newest state: make it the current one.
                    if i == 0 {
                        self.dirty = true;
                    }
                    return Ok(());
                }
                // A torn temp file is a write that never completed: the current one is good.
                Err(_) if i == 0 => {}
                Err(reason) => {
                    let aside = self.quarantine(path, &data)?;
                    tracing::warn!(
                        file = %path.display(),
                        moved_to = %aside.display(),
                        reason,
                        "The checkpoint store is damaged; using its previous copy instead (no position is reset to the start)."
                    );
                    let _ = std::fs::remove_file(path);
                    self.dirty = true;
                }
            }
        }
        Ok(())
    }

    /// Writes damaged bytes next to the store, for inspection.
    fn quarantine(&self, path: &Path, data: &[u8]) -> std::io::Result<PathBuf> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let aside = self.dir.join(format!("{name}.corrupt-{}", Utc::now().format("%Y%m%dT%H%M%S%.6fZ")));
        std::fs::write(&aside, data)?;
        Ok(aside)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn get(&self, fingerprint: &Fingerprint) -> Option<&Checkpoint> {
        self.entries.get(fingerprint)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Checkpoint> {
        self.entries.values()
    }

    /// Records a position (written at the next [`Store::flush`]).
    pub fn set(&mut self, fingerprint: Fingerprint, position: u64, path: &Path, source: &str) {
        let path = path.to_string_lossy();
        if let Some(c) = self.entries.get(&fingerprint)
            && c.position == position
            && c.path == path
            && c.source == source
        {
            return;
        }
        self.entries.insert(
            fingerprint,
            Checkpoint {
                fingerprint,
                position,
                path: path.into_owned(),
                modified: Utc::now(),
                source: source.to_owned(),
            },
        );
        self.dirty = true;
    }

    /// Adopts a checkpoint from elsewhere (Vector) unless the store has a newer one.
    pub fn adopt(&mut self, checkpoint: Checkpoint) -> bool {
        match self.entries.get(&checkpoint.fingerprint) {
            Some(ours) if ours.modified >= checkpoint.modified => false,
            _ => {
                self.entries.insert(checkpoint.fingerprint, checkpoint);
                self.dirty = true;
                true
            }
        }
    }

    pub fn remove(&mut self, fingerprint: &Fingerprint) -> Option<Checkpoint> {
        let removed = self.entries.remove(fingerprint);
        self.dirty |= removed.is_some();
        removed
    }

    /// Whether a Vector checkpoints file was already adopted as it is now.
    pub fn imported(&self, import: &Import) -> bool {
        self.imports.contains(import)
    }

    pub fn record_import(&mut self, import: Import) {
        self.imports.retain(|i| i.file != import.file);
        self.imports.push(import);
        self.dirty = true;
    }

    /// Removes entries whose file is no longer at its path and that nobody updated for
    /// `age`. Entries without a path (adopted from Vector) are kept.
    pub fn prune_missing(&mut self, age: chrono::Duration) -> usize {
        let before = Utc::now() - age;
        let n = self.entries.len();
        self.entries.retain(|_, c| c.path.is_empty() || c.modified >= before || Path::new(&c.path).exists());
        let removed = n - self.entries.len();
        self.dirty |= removed > 0;
        removed
    }

    /// Writes the store if anything changed (see the module docs for the steps).
    pub fn flush(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let body = OnDisk { version: VERSION, checkpoints: self.entries.values().collect(), imports: &self.imports };
        let data = serde_json::to_vec(&body).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let current = self.dir.join(FILE);
        {
            let mut file = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
            file.write_all(&data)?;
            file.sync_all()?;
        }
        if current.exists() {
            std::fs::rename(&current, self.dir.join(format!("{FILE}.prev")))?;
        }
        std::fs::rename(&tmp, &current)?;
        sync_dir(&self.dir)?;
        self.dirty = false;
        Ok(())
    }
}

/// Reads the store in `dir` without taking its lock (for `sluice checkpoints list` while
/// sluice runs): the newest complete copy, or empty.
pub fn read_only(dir: &Path) -> std::io::Result<Vec<Checkpoint>> {
    for name in [format!("{FILE}.tmp"), FILE.to_owned(), format!("{FILE}.prev")] {
        match std::fs::read(dir.join(&name)) {
            Ok(data) => {
                if let Ok(parsed) = parse(&data) {
                    return Ok(parsed.entries.into_values().collect());
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Store {
        Store::open(dir).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn positions_survive_reopening_and_checksums_above_2_53_round_trip() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fp = Fingerprint::Checksum(11_908_805_321_237_624_401);
        {
            let mut s = store(tmp.path());
            s.set(fp, 1234, Path::new("/var/log/a.log"), "a");
            s.set(Fingerprint::DevInode(2049, 7), 98, Path::new("/var/log/b.log"), "a");
            s.flush().unwrap_or_else(|e| panic!("{e}"));
        }
        let s = store(tmp.path());
        assert_eq!(s.get(&fp).map(|c| c.position), Some(1234));
        let text = std::fs::read_to_string(tmp.path().join(FILE)).unwrap_or_default();
        assert!(text.contains("11908805321237624401"), "{text}");
    }

    #[test]
    fn only_long_untouched_entries_of_vanished_files_are_pruned() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let present = tmp.path().join("present.log");
        std::fs::write(&present, "x\n").unwrap_or_else(|e| panic!("{e}"));
        let mut s = store(tmp.path());
        let old = Utc::now() - chrono::Duration::days(30);
        let entry = |n: u64, path: &Path, modified| Checkpoint {
            fingerprint: Fingerprint::Checksum(n),
            position: 1,
            path: path.display().to_string(),
            modified,
            source: "a".into(),
        };
        s.adopt(entry(1, &tmp.path().join("gone.log"), old));
        s.adopt(entry(2, &present, old));
        s.adopt(entry(3, &tmp.path().join("gone-recently.log"), Utc::now()));
        s.adopt(entry(4, Path::new(""), old));
        assert_eq!(s.prune_missing(chrono::Duration::days(7)), 1);
        let left: Vec<u64> = s
            .entries()
            .map(|c| match c.fingerprint {
                Fingerprint::Checksum(n) => n,
                Fingerprint::DevInode(..) => 0,
            })
            .collect();
        assert_eq!(left, vec![2, 3, 4], "present files, recent entries and path-less (Vector) entries stay");
    }

    #[test]
    fn a_second_process_cannot_open_the_store() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let _first = store(tmp.path());
        assert!(matches!(Store::open(tmp.path()), Err(StoreError::InUse(..))));
    }

    #[test]
    fn a_damaged_store_falls_back_to_its_previous_copy_and_is_set_aside() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fp = Fingerprint::Checksum(1);
        {
            let mut s = store(tmp.path());
            s.set(fp, 10, Path::new("/a"), "a");
            s.flush().unwrap_or_else(|e| panic!("{e}"));
            s.set(fp, 20, Path::new("/a"), "a");
            s.flush().unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(tmp.path().join(FILE), b"{\"version\":1,\"checkpoints\":[{\"fing")
            .unwrap_or_else(|e| panic!("{e}"));
        let s = store(tmp.path());
        assert_eq!(s.get(&fp).map(|c| c.position), Some(10), "the previous copy, not the start");
        let aside = std::fs::read_dir(tmp.path())
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
        assert!(aside, "the damaged file is kept for inspection");
    }

    #[test]
    fn a_damaged_entry_costs_only_that_entry() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            tmp.path().join(FILE),
            br#"{"version":1,"checkpoints":[
                {"fingerprint":{"first_lines_checksum":5},"position":7,"modified":"2026-08-21T10:00:00Z"},
                {"fingerprint":{"unknown":1},"position":9,"modified":"2026-08-21T10:00:00Z"}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = store(tmp.path());
        assert_eq!(s.get(&Fingerprint::Checksum(5)).map(|c| c.position), Some(7));
        assert_eq!(s.entries().count(), 1);
    }

    #[test]
    fn a_complete_temp_file_is_the_newest_state() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        {
            let mut s = store(tmp.path());
            s.set(Fingerprint::Checksum(1), 10, Path::new("/a"), "a");
            s.flush().unwrap_or_else(|e| panic!("{e}"));
        }
        // A crash after the temp file was fsynced, before the renames.
        std::fs::write(
            tmp.path().join(format!("{FILE}.tmp")),
            br#"{"version":1,"checkpoints":[{"fingerprint":{"first_lines_checksum":1},"position":30,"modified":"2026-08-21T10:00:00Z"}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut s = store(tmp.path());
        assert_eq!(s.get(&Fingerprint::Checksum(1)).map(|c| c.position), Some(30));
        s.flush().unwrap_or_else(|e| panic!("{e}"));
        drop(s);
        // A torn temp file is ignored.
        std::fs::write(tmp.path().join(format!("{FILE}.tmp")), b"{\"vers").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store(tmp.path()).get(&Fingerprint::Checksum(1)).map(|c| c.position), Some(30));
    }
}
