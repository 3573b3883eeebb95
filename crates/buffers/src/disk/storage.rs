//! The I/O seam of the disk buffer: every file operation goes through [`Storage`], so tests can
//! inject short writes, failed fsyncs, ENOSPC and crashes that lose what was not synced.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A file being appended to.
pub trait AppendFile: Send {
    /// Writes some of `buf`; may write less than all of it (a short write).
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> std::io::Result<()>;
}

/// Held while one process uses a buffer directory; released when dropped.
pub type DirLock = Box<dyn std::any::Any + Send + Sync>;

/// File operations of the disk buffer.
pub trait Storage: Send + Sync {
    fn create_dir(&self, dir: &Path) -> std::io::Result<()>;
    /// Takes `dir` for this process: fails with `WouldBlock`, naming the holder, while another
    /// process (a second sluice, `sluice buffer check --repair`) holds it.
    fn lock(&self, dir: &Path) -> std::io::Result<DirLock>;
    /// Creates a new file (it must not exist) for appending; its name is durable on return.
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn AppendFile>>;
    /// Appends to `buf` at most `max` bytes of `path` from `offset` (fewer only at its end);
    /// returns how many.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize>;
    /// The whole file, or `None` if it does not exist.
    fn read(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>>;
    /// The file's length in bytes.
    fn len(&self, path: &Path) -> std::io::Result<u64>;
    /// Files in `dir` whose name ends with `suffix`, sorted by name.
    fn list(&self, dir: &Path, suffix: &str) -> std::io::Result<Vec<PathBuf>>;
    fn remove(&self, path: &Path) -> std::io::Result<()>;
    /// Replaces `path` with `data` atomically and durably.
    fn write_atomic(&self, path: &Path, data: &[u8]) -> std::io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fs;

struct FsFile(File);

impl AppendFile for FsFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

impl Storage for Fs {
    fn create_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
    }

    fn lock(&self, dir: &Path) -> std::io::Result<DirLock> {
        Ok(Box::new(crate::dir_lock::lock_dir(dir)?))
    }

    fn create(&self, path: &Path) -> std::io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new().create_new(true).append(true).mode(0o600).open(path)?;
        sync_parent(path)?;
        Ok(Box::new(FsFile(file)))
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        if max == usize::MAX {
            return file.read_to_end(buf);
        }
        buf.reserve(max);
        file.take(max as u64).read_to_end(buf)
    }

    fn read(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(data) => Ok(Some(data)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn len(&self, path: &Path) -> std::io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn list(&self, dir: &Path, suffix: &str) -> std::io::Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(suffix)))
                .collect(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(err),
        };
        out.sort();
        Ok(out)
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => sync_parent(path),
        }
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut file = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
            file.write_all(data)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        sync_parent(path)
    }
}

/// An in-memory file system for tests: it remembers what was synced, can lose the rest in a
/// "crash", and injects faults on request.
#[cfg(test)]
pub mod mem {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, Default, Clone)]
    struct MemFile {
        data: Vec<u8>,
        synced: usize,
    }

    /// Faults to inject into the next operations.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Faults {
        /// The next write writes at most this many bytes.
        pub short_write: Option<usize>,
        /// The next write fails with ENOSPC.
        pub no_space: bool,
        /// The next sync fails.
        pub fail_sync: bool,
    }

    #[derive(Debug, Default)]
    struct State {
        files: BTreeMap<PathBuf, MemFile>,
        faults: Faults,
        /// Directories taken, with the generation of the lock that took each.
        locked: BTreeMap<PathBuf, u64>,
        generation: u64,
    }

    /// A directory taken by [`Storage::lock`]; released on drop (a crash releases it too).
    struct MemLock {
        dir: PathBuf,
        generation: u64,
        state: Arc<Mutex<State>>,
    }

    impl Drop for MemLock {
        fn drop(&mut self) {
            let mut state = lock(&self.state);
            if state.locked.get(&self.dir) == Some(&self.generation) {
                state.locked.remove(&self.dir);
            }
        }
    }

    #[derive(Debug, Default, Clone)]
    pub struct Mem {
        state: Arc<Mutex<State>>,
    }

    struct Handle {
        path: PathBuf,
        state: Arc<Mutex<State>>,
    }

    fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
        match state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    impl AppendFile for Handle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut state = lock(&self.state);
            if std::mem::take(&mut state.faults.no_space) {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let n = match state.faults.short_write.take() {
                Some(limit) => buf.len().min(limit),
                None => buf.len(),
            };
            let file = state.files.entry(self.path.clone()).or_default();
            file.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn sync(&mut self) -> std::io::Result<()> {
            let mut state = lock(&self.state);
            if std::mem::take(&mut state.faults.fail_sync) {
                return Err(std::io::Error::other("injected fsync failure"));
            }
            if let Some(file) = state.files.get_mut(&self.path) {
                file.synced = file.data.len();
            }
            Ok(())
        }
    }

    impl Mem {
        pub fn inject(&self, faults: Faults) {
            lock(&self.state).faults = faults;
        }

        /// A crash: every file keeps what was synced plus `keep_unsynced` bytes of the rest
        /// (a torn tail).
        pub fn crash(&self, keep_unsynced: usize) {
            let mut state = lock(&self.state);
            for file in state.files.values_mut() {
                let keep = (file.synced + keep_unsynced).min(file.data.len());
                file.data.truncate(keep);
                file.synced = keep;
            }
            state.faults = Faults::default();
            // The crashed process's locks went with it.
            state.locked.clear();
        }

        /// Flips the bits of one byte of a file.
        pub fn corrupt(&self, path: &Path, at: usize) {
            if let Some(file) = lock(&self.state).files.get_mut(path)
                && at < file.data.len()
            {
                file.data[at] ^= 0xff;
            }
        }

        pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
            lock(&self.state).files.get(path).map(|f| f.data.clone())
        }

        pub fn put(&self, path: &Path, data: &[u8]) {
            lock(&self.state).files.insert(path.to_path_buf(), MemFile { data: data.to_vec(), synced: data.len() });
        }
    }

    impl Storage for Mem {
        fn create_dir(&self, _dir: &Path) -> std::io::Result<()> {
            Ok(())
        }
        fn lock(&self, dir: &Path) -> std::io::Result<DirLock> {
            let mut state = lock(&self.state);
            if state.locked.contains_key(dir) {
                return Err(std::io::Error::new(std::io::ErrorKind::WouldBlock, "in use by another process"));
            }
            state.generation += 1;
            let generation = state.generation;
            state.locked.insert(dir.to_path_buf(), generation);
            Ok(Box::new(MemLock { dir: dir.to_path_buf(), generation, state: self.state.clone() }))
        }
        fn create(&self, path: &Path) -> std::io::Result<Box<dyn AppendFile>> {
            let mut state = lock(&self.state);
            if state.files.contains_key(path) {
                return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
            }
            state.files.insert(path.to_path_buf(), MemFile::default());
            Ok(Box::new(Handle { path: path.to_path_buf(), state: self.state.clone() }))
        }
        fn read_at(&self, path: &Path, offset: u64, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
            let state = lock(&self.state);
            let file = state.files.get(path).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
            let rest = file.data.get(offset as usize..).unwrap_or_default();
            let n = rest.len().min(max);
            buf.extend_from_slice(&rest[..n]);
            Ok(n)
        }
        fn read(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
            Ok(lock(&self.state).files.get(path).map(|f| f.data.clone()))
        }
        fn len(&self, path: &Path) -> std::io::Result<u64> {
            let state = lock(&self.state);
            let file = state.files.get(path).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
            Ok(file.data.len() as u64)
        }
        fn list(&self, dir: &Path, suffix: &str) -> std::io::Result<Vec<PathBuf>> {
            Ok(lock(&self.state)
                .files
                .keys()
                .filter(|p| p.parent() == Some(dir) && p.to_string_lossy().ends_with(suffix))
                .cloned()
                .collect())
        }
        fn remove(&self, path: &Path) -> std::io::Result<()> {
            lock(&self.state).files.remove(path);
            Ok(())
        }
        fn write_atomic(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
            let mut state = lock(&self.state);
            if std::mem::take(&mut state.faults.fail_sync) {
                return Err(std::io::Error::other("injected fsync failure"));
            }
            state.files.insert(path.to_path_buf(), MemFile { data: data.to_vec(), synced: data.len() });
            Ok(())
        }
    }
}
