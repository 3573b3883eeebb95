//! The disk buffer: a segmented write-ahead log of event chunks under
//! `data_dir/buffer/<id>/`, with records removed only when acknowledged. Format and rules:
//! `docs/design/disk-buffer.md`.

pub mod channel;
pub mod inspect;
pub mod record;
pub mod repair;
pub mod storage;
pub mod wal;

#[cfg(test)]
mod full_tests;
#[cfg(test)]
mod tests;

pub use channel::{ChannelOptions, DiskAcker, DiskReceiver, DiskSender, Done, KEEP_RECORDS, Level, Received, Task};
pub use storage::{Fs, Storage};
pub use wal::{AppendError, Item, Placement, Wal, WalOptions, WalStats};
