//! sluice-components: every source, transform and sink, and [`registry::registry`], the one
//! list of them. Each component is a folder or file under `sources/`, `transforms/` or
//! `sinks/` with its config struct (strict, Vector's field names and defaults) and its run loop.

pub mod codecs;
pub mod kafka;
pub mod registry;
pub mod sinks;
pub mod sources;
pub mod transforms;
pub mod vector_protocol;

pub use registry::registry;

pub(crate) fn default_true() -> bool {
    true
}
