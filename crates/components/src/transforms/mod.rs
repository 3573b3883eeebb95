//! Transforms: `remap`, `filter`, `route`, and the VRL glue they share.

pub mod filter;
pub mod log_to_metric;
mod parse_json;
pub mod remap;
pub mod route;
pub mod vrl;
