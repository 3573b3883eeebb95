//! Discovery: which files match now, which watcher each belongs to (found by path and
//! inode, by fingerprint after a rename, or new), and where a new one starts.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::watcher::Watcher;
use super::{Tail, acks};
use crate::fingerprint;

impl Tail {
    pub(super) fn discover(&mut self, now: Instant) {
        let startup = !self.discovered_once;
        self.discovered_once = true;
        let mut matches: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
        for (i, sub) in self.live_subs() {
            for path in sub.globs.discover() {
                matches.entry(path).or_default().push(i);
            }
        }
        let mut seen = HashSet::new();
        for (path, readers) in matches {
            if let Some(id) = self.find_or_open(&path, &readers, startup) {
                seen.insert(id);
                if self.readers_of.get(&id) != Some(&readers) {
                    self.warn_mismatch(&path, &readers);
                    for &r in &readers {
                        let position = self.watchers.get(&id).map_or(0, Watcher::given_up_to);
                        self.tracker.tracks.entry((id, r)).or_insert_with(|| acks::Track::new(position));
                    }
                    self.readers_of.insert(id, readers);
                }
            }
        }
        for (id, w) in &mut self.watchers {
            let found = seen.contains(id);
            if found {
                w.findable = true;
                w.lost_since = None;
            } else if w.findable {
                w.findable = false;
                w.lost_since = Some(now);
            }
        }
    }

    /// The watcher for `path`: the one already reading it, a renamed one, or a new one.
    /// `None` while the file has no fingerprint yet (or cannot be read).
    fn find_or_open(&mut self, path: &Path, readers: &[usize], startup: bool) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        let dev_ino = (meta.dev(), meta.ino());
        if let Some(&(dev, ino, id)) = self.by_path.get(path)
            && (dev, ino) == dev_ino
            && self.watchers.get(&id).is_some_and(|w| !w.done)
        {
            return Some(id);
        }
        let options = self.options_for(readers)?.clone();
        let file = match File::open(path) {
            Ok(file) => file,
            Err(err) => {
                if self.warned.insert(path.to_path_buf()) {
                    tracing::warn!(file = %path.display(), error = %err, "Cannot open a matching file; trying again at every look for files.");
                }
                return None;
            }
        };
        let fp = match fingerprint::fingerprint(&file, options.fingerprint, options.max_line_bytes) {
            Ok(Some(fp)) => fp,
            Ok(None) => return None,
            Err(err) => {
                tracing::debug!(file = %path.display(), error = %err, "Cannot fingerprint a matching file; trying again later.");
                return None;
            }
        };
        if self.finished.contains(&fp) {
            return None;
        }
        if let Some(&id) = self.by_fingerprint.get(&fp)
            && let Some(w) = self.watchers.get_mut(&id)
        {
            if w.dev_ino == dev_ino && w.path != path {
                // Renamed (rotated): follow it, position and all.
                tracing::debug!(from = %w.path.display(), to = %path.display(), "File renamed; following it.");
                self.by_path.remove(&w.path);
                w.path = path.to_path_buf();
                self.by_path.insert(path.to_path_buf(), (dev_ino.0, dev_ino.1, id));
            }
            // A gzip file with the content of one being read is its compressed copy (rotation
            // with `compress`): it takes over when the original is gone, nothing to say.
            let compressed_copy = {
                let mut magic = [0u8; 2];
                std::os::unix::fs::FileExt::read_at(&file, &mut magic, 0).is_ok_and(|n| n == 2)
                    && fingerprint::is_gzip(&magic)
            };
            if w.dev_ino != dev_ino && w.findable && !compressed_copy && self.warned.insert(path.to_path_buf()) {
                // Another live file with the same first lines: only one file can own a
                // fingerprint, and the one being read goes on.
                tracing::warn!(
                    file = %path.display(),
                    same_as = %w.path.display(),
                    fingerprint = %fp,
                    "This file starts like another one being read, so it has the same fingerprint and is not read. Set fingerprint.lines or fingerprint.ignored_header_bytes past the shared start, or use fingerprint.strategy = \"device_and_inode\"."
                );
            }
            return (w.dev_ino == dev_ino).then_some(id);
        }
        let size = meta.len();
        // The same content under another file: a copy (`copytruncate`) of a file whose
        // watcher gave up when it was truncated. Everything before its read position was
        // handed on already.
        let handed_on =
            self.watchers.values().filter(|w| w.fingerprint == fp && w.done).map(Watcher::given_up_to).max();
        let stored = if options.ignore_checkpoints { None } else { self.store.get(&fp).map(|c| c.position) };
        let stored = match (stored, handed_on) {
            (Some(s), Some(h)) => Some(s.max(h)),
            (s, h) => s.or(h),
        };
        let was_truncated = self.truncated.remove(&(path.to_path_buf(), dev_ino.1));
        let old = options.ignore_older.is_some_and(|limit| {
            meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).is_some_and(|age| age > limit)
        });
        let position = match stored {
            _ if was_truncated => 0,
            Some(p) => p,
            None if (startup && options.read_from_end) || old => size,
            None => 0,
        };
        let gzip_or_fits = position <= size || {
            let mut magic = [0u8; 2];
            std::os::unix::fs::FileExt::read_at(&file, &mut magic, 0).is_ok_and(|n| n == 2)
                && fingerprint::is_gzip(&magic)
        };
        let position = if gzip_or_fits {
            position
        } else {
            tracing::warn!(file = %path.display(), position, size, "The stored position is past the end of the file (rewritten?); reading it from the start.");
            0
        };
        self.next_watcher += 1;
        let id = self.next_watcher;
        let splitter = (&options.line_delimiter[..], options.align, options.max_line_bytes);
        let watcher = match Watcher::open(path.to_path_buf(), file, fp, position, splitter) {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "Cannot start reading a file; trying again later.");
                return None;
            }
        };
        tracing::info!(file = %path.display(), position, fingerprint = %fp, "Reading file.");
        self.by_path.insert(path.to_path_buf(), (dev_ino.0, dev_ino.1, id));
        self.by_fingerprint.insert(fp, id);
        self.watchers.insert(id, watcher);
        Some(id)
    }
}
