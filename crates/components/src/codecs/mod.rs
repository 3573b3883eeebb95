//! Codecs: decoding and framing for sources, encoding and framing for sinks, with Vector's
//! field names. Encoders write into a caller's buffer so a batch is one allocation.

pub mod decoding;
pub mod encoding;
pub use sluice_core::json;

pub use decoding::{DecodingConfig, Framer, FramingConfig};
pub use encoding::{Encoder, EncodingConfig, SinkFraming, Transformer};
