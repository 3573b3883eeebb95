//! sluice-buffers: what holds events between components and outside the pipeline.
//!
//! - [`memory`]: the bounded in-memory channel. Capacity is counted in events, not chunks, so
//!   `buffer.max_events` means what it says whatever the chunk sizes. A chunk larger than the
//!   whole capacity still passes (it takes every permit), so no chunk can wait forever.
//! - [`disk`]: the disk buffer (a write-ahead log of chunks, removed when acknowledged).
//! - [`dlq`]: the disk dead-letter queue's files (writing, reading, replay bookkeeping).
//! - [`dir_lock`]: one process per directory (disk buffers, the file checkpoint store).

pub mod dir_lock;
pub mod disk;
pub mod dlq;
#[cfg(test)]
mod fuzz;
pub mod memory;

pub use memory::{MemoryReceiver, MemorySender, TrySendError, memory};
