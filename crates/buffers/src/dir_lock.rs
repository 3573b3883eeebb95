//! One process per directory: an exclusive `flock` on `<dir>/lock`, which also holds the
//! holder's pid for the message another process gets. The lock goes with the file handle (a
//! `kill -9` releases it too). Disk buffers and the file checkpoint store use it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The lock file's name in a locked directory.
pub const LOCK_FILE: &str = "lock";

/// Takes `dir`'s lock for this process; keep the returned file as long as it is needed.
/// Fails with `WouldBlock`, naming the holder's pid, while another process holds it.
pub fn lock_dir(dir: &Path) -> std::io::Result<File> {
    let mut file =
        OpenOptions::new().create(true).truncate(false).read(true).write(true).mode(0o600).open(dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("{} is in use by another process{holder}", dir.display()),
            ));
        }
        Err(std::fs::TryLockError::Error(err)) => return Err(err),
    }
    // Who holds it, for the message above (the lock itself is the flock).
    file.set_len(0)?;
    file.write_all(std::process::id().to_string().as_bytes())?;
    Ok(file)
}

/// Whether a process holds `dir`'s lock now (checked without keeping it or writing).
pub fn in_use(dir: &Path) -> bool {
    match File::open(dir.join(LOCK_FILE)) {
        Ok(file) => matches!(file.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = lock_dir(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(in_use(tmp.path()));
        let err = lock_dir(tmp.path()).err().unwrap_or_else(|| panic!("second lock"));
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        assert!(err.to_string().contains(&format!("(pid {})", std::process::id())), "{err}");
        drop(first);
        assert!(!in_use(tmp.path()));
        assert!(lock_dir(tmp.path()).is_ok());
    }
}
