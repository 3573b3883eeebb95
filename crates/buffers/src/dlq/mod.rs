//! The disk dead-letter queue's files: one directory per sink under `data_dir/dead_letter/`,
//! append-only JSON-lines segments, and the replay bookkeeping (progress files and the archive).
//!
//! Format and rules: `docs/design/dead-letter.md`. The runtime appends through [`DiskDlq`];
//! the `dead_letter` source replays through [`replay`]; `sluice dlq` reads and purges through
//! [`store`].

pub mod replay;
pub mod segment;
pub mod store;
pub mod writer;

use std::path::{Path, PathBuf};

pub use writer::DiskDlq;

/// Current envelope version.
pub const ENVELOPE_VERSION: u32 = 1;

/// `data_dir/dead_letter`.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("dead_letter")
}

/// The directory of one sink's disk DLQ.
pub fn sink_dir(data_dir: &Path, sink_id: &str) -> PathBuf {
    root(data_dir).join(sink_id)
}

/// Where replayed records of one sink are kept.
pub fn archive_dir(data_dir: &Path, sink_id: &str) -> PathBuf {
    sink_dir(data_dir, sink_id).join("archive")
}
