//! sluice-buffers: what sits between components.
//!
//! Today: the bounded in-memory channel ([`memory`]). Capacity is counted in events, not chunks,
//! so `buffer.max_events` means what it says whatever the chunk sizes. A chunk larger than the
//! whole capacity still passes (it takes every permit), so no chunk can wait forever.
//! The disk buffer comes later and will live here too.

pub mod memory;

pub use memory::{MemoryReceiver, MemorySender, TrySendError, memory};
