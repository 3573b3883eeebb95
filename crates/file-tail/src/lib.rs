//! sluice-file-tail: files as streams of lines, for the `file` and `kubernetes_logs` sources.
//!
//! - [`fingerprint`]: file identity by content (Vector-compatible CRC-64) or inode;
//! - [`discovery`]: include/exclude globs;
//! - [`lines`]: lines with their file offsets, oversized lines kept for the DLQ;
//! - [`multiline`]: Vector's multiline modes;
//! - [`checkpoint`]: the one checkpoint store per `data_dir`, keyed by fingerprint;
//! - [`vector`]: adopting Vector's `checkpoints.json`;
//! - [`tail`]: the service that reads every file once for all sources and moves positions
//!   only for acknowledged lines.
//!
//! Formats and rules: `docs/design/checkpoints.md`.

pub mod checkpoint;
pub mod discovery;
pub mod fingerprint;
#[cfg(test)]
mod fuzz;
pub mod lines;
pub mod multiline;
pub mod tail;
pub mod vector;
