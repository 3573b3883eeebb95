//! sluice-runtime: from config files to running tasks.
//!
//! `config` turns files into a checked [`config::Graph`] (two phases: raw values, then a
//! checked graph, every problem reported at once). `topology` turns a graph into one task per
//! component joined by bounded channels, runs it, drains it on shutdown and reports the ledger.
//! `unit_test` runs the config's own `[[tests]]` through its transforms.
//! The runtime never names a concrete component: it takes the registry as an argument.

pub mod config;
pub mod dead_letter;
pub mod metrics;
pub mod tap;
pub mod topology;
pub mod unit_test;

pub use config::{Diagnostic, Graph, LoadOptions, Severity, load};
pub use topology::{Reload, ReloadSummary, RunOptions, RunReport, StartError, run};
