//! Adopting Vector's file checkpoints, so a switch from Vector re-reads nothing.
//!
//! Vector keeps `<data_dir>/<source_id>/checkpoints.json` (and, while writing,
//! `checkpoints.new.json`, which wins when it parses):
//! `{"version":"1","checkpoints":[{"fingerprint":{"first_lines_checksum":N},"position":P,
//! "modified":"RFC 3339"}, {"fingerprint":{"dev_inode":[dev,ino]}, ...}]}`. Checksums use the
//! whole u64 range (above 2^53) and are read as integers, never as floats; the legacy key
//! `first_line_checksum` is accepted. Vector does not store paths, so adopted entries have
//! none until the file is seen.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::checkpoint::{Checkpoint, Import};
use crate::fingerprint::Fingerprint;

#[derive(Deserialize)]
struct VectorState {
    version: String,
    checkpoints: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct VectorEntry {
    fingerprint: VectorFingerprint,
    position: u64,
    /// Required by Vector; an entry without it is still adopted, dated by the file.
    modified: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum VectorFingerprint {
    #[serde(alias = "first_line_checksum")]
    FirstLinesChecksum(u64),
    DevInode(u64, u64),
}

/// One source's checkpoints, read from a Vector data directory.
#[derive(Debug)]
pub struct VectorCheckpoints {
    pub source_id: String,
    pub file: PathBuf,
    pub checkpoints: Vec<Checkpoint>,
    /// Entries that could not be read (kept out; every other one is adopted).
    pub skipped: usize,
    pub import: Import,
}

/// Reads `dir/checkpoints.json` (or `checkpoints.new.json` when it parses) of one Vector
/// source; `Ok(None)` when there is none.
pub fn read_source(dir: &Path, source_id: &str) -> Result<Option<VectorCheckpoints>, String> {
    let mut last_error = None;
    for name in ["checkpoints.new.json", "checkpoints.json"] {
        let path = dir.join(name);
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
        };
        let state: VectorState = match serde_json::from_slice(&data) {
            Ok(state) => state,
            Err(err) => {
                last_error = Some(format!("{} is not a Vector checkpoints file: {err}", path.display()));
                continue;
            }
        };
        if state.version != "1" {
            last_error = Some(format!("{}: unknown version {:?}", path.display(), state.version));
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(|e| e.to_string())?;
        let file_time = meta.modified().map(DateTime::<Utc>::from).unwrap_or_else(|_| Utc::now());
        let mut checkpoints = Vec::new();
        let mut skipped = 0;
        for value in state.checkpoints {
            match serde_json::from_value::<VectorEntry>(value) {
                Ok(entry) => checkpoints.push(Checkpoint {
                    fingerprint: match entry.fingerprint {
                        VectorFingerprint::FirstLinesChecksum(sum) => Fingerprint::Checksum(sum),
                        VectorFingerprint::DevInode(dev, ino) => Fingerprint::DevInode(dev, ino),
                    },
                    position: entry.position,
                    path: String::new(),
                    modified: entry.modified.unwrap_or(file_time),
                    source: format!("vector:{source_id}"),
                }),
                Err(_) => skipped += 1,
            }
        }
        let import = Import { file: path.display().to_string(), len: meta.len(), modified: file_time };
        return Ok(Some(VectorCheckpoints {
            source_id: source_id.to_owned(),
            file: path,
            checkpoints,
            skipped,
            import,
        }));
    }
    match last_error {
        Some(err) => Err(err),
        None => Ok(None),
    }
}

/// Every source's checkpoints under a Vector data directory (`<dir>/<source_id>/`).
pub fn read_all(data_dir: &Path) -> Result<Vec<VectorCheckpoints>, String> {
    let entries = std::fs::read_dir(data_dir).map_err(|e| format!("cannot read {}: {e}", data_dir.display()))?;
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        let id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(found) = read_source(&dir, &id)? {
            out.push(found);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_format_is_read_exactly() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().join("app_logs");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.join("checkpoints.json"),
            r#"{"version":"1","checkpoints":[{"fingerprint":{"first_lines_checksum":11908805321237624401},"position":1234,"modified":"2026-08-21T10:00:00.123456Z"},{"fingerprint":{"dev_inode":[2049,1312356]},"position":98,"modified":"2026-08-21T10:00:00Z"},{"fingerprint":{"first_line_checksum":18446744073709551615},"position":5,"modified":"2021-07-12T18:19:11.769003Z"},{"fingerprint":{"checksum":[1,2]},"position":1,"modified":"2021-07-12T18:19:11Z"},{"fingerprint":{"first_lines_checksum":9},"position":3,"modified":"2021-07-12T18:19:11+02:00"},{"fingerprint":{"first_lines_checksum":10},"position":4}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let all = read_all(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 1);
        let found = &all[0];
        assert_eq!(found.source_id, "app_logs");
        assert_eq!(found.skipped, 1, "the pre-0.15 `checksum` kind is left out, the rest kept");
        let got: Vec<(Fingerprint, u64)> = found.checkpoints.iter().map(|c| (c.fingerprint, c.position)).collect();
        assert_eq!(
            got,
            vec![
                (Fingerprint::Checksum(11_908_805_321_237_624_401), 1234),
                (Fingerprint::DevInode(2049, 1_312_356), 98),
                (Fingerprint::Checksum(u64::MAX), 5),
                (Fingerprint::Checksum(9), 3),
                (Fingerprint::Checksum(10), 4),
            ]
        );
    }

    #[test]
    fn an_interrupted_vector_write_wins_when_it_parses() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let entry = |p: u64| {
            format!(
                r#"{{"version":"1","checkpoints":[{{"fingerprint":{{"first_lines_checksum":7}},"position":{p},"modified":"2026-08-21T10:00:00Z"}}]}}"#
            )
        };
        std::fs::write(tmp.path().join("checkpoints.json"), entry(10)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(tmp.path().join("checkpoints.new.json"), entry(20)).unwrap_or_else(|e| panic!("{e}"));
        let found = read_source(tmp.path(), "x").unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("none"));
        assert_eq!(found.checkpoints[0].position, 20);
        std::fs::write(tmp.path().join("checkpoints.new.json"), b"{\"vers").unwrap_or_else(|e| panic!("{e}"));
        let found = read_source(tmp.path(), "x").unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("none"));
        assert_eq!(found.checkpoints[0].position, 10);
    }
}
