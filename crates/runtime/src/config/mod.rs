//! Config: files → raw values → a checked [`Graph`].
//!
//! Phase one reads every file (TOML, YAML or JSON by extension), interpolates the environment,
//! merges the files, and parses each component strictly through the registry. Phase two checks
//! the graph (inputs, cycles, event types, unused outputs) and applies lints. Both phases keep
//! going after an error, so one run reports every problem, each with its file, component and
//! field. `validate` and `run` share this path.

mod diagnostic;
mod graph;
mod interpolate;
mod loader;
pub mod schema;

use std::path::PathBuf;
use std::sync::Arc;

use sluice_core::component::{AnyConfig, ComponentSpec, GlobalOptions, OutputSpec};
use sluice_core::ledger::ComponentKind;

pub use diagnostic::{Diagnostic, Severity, closest};
pub use schema::{BufferConfig, BufferType, WhenFull};

/// Where to read config from.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub config_paths: Vec<PathBuf>,
    pub config_dirs: Vec<PathBuf>,
    /// Documents built in memory (already interpolated), each with the name diagnostics give
    /// it. Used by commands that derive a pipeline from the user's config (`dlq replay`).
    pub documents: Vec<(PathBuf, serde_json::Value)>,
}

/// Reads every config file of `options` (interpolated, not yet checked): the raw documents a
/// command can derive another pipeline from.
pub fn read_documents(options: &LoadOptions) -> Result<Vec<(PathBuf, serde_json::Value)>, Vec<Diagnostic>> {
    let env = |name: &str| std::env::var(name).ok();
    loader::read_documents(options, &env)
}

/// A reference to one output port: `id` (default output) or `id.name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutputRef {
    pub component: String,
    pub port: Option<String>,
}

impl std::fmt::Display for OutputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.port {
            Some(port) => write!(f, "{}.{port}", self.component),
            None => write!(f, "{}", self.component),
        }
    }
}

/// One checked component.
#[derive(Debug)]
pub struct Component {
    pub id: String,
    pub kind: ComponentKind,
    pub type_name: &'static str,
    pub file: PathBuf,
    pub config: AnyConfig,
    pub inputs: Vec<OutputRef>,
    pub outputs: Vec<OutputSpec>,
    /// Sinks only.
    pub buffer: BufferConfig,
    /// Sources: whether to wait for outcomes. Sinks: `false` acknowledges on arrival.
    pub acknowledgements: bool,
}

/// Settings outside the component tables.
#[derive(Debug, Clone)]
pub struct Globals {
    pub options: Arc<GlobalOptions>,
    pub acknowledgements: bool,
    pub api_address: Option<String>,
}

/// A config that passed every check: ready to build.
#[derive(Debug)]
pub struct Graph {
    pub globals: Globals,
    pub components: Vec<Component>,
}

impl Graph {
    /// The components that read `output`.
    pub fn consumers_of<'a>(&'a self, output: &'a OutputRef) -> impl Iterator<Item = &'a Component> + 'a {
        self.components.iter().filter(move |c| c.inputs.contains(output))
    }
}

/// Loads, parses and checks the config. On success returns the graph and its warnings; on
/// failure every diagnostic found (errors and warnings).
pub fn load(options: &LoadOptions, registry: &[ComponentSpec]) -> Result<(Graph, Vec<Diagnostic>), Vec<Diagnostic>> {
    let env = |name: &str| std::env::var(name).ok();
    let raw = loader::load_raw(options, registry, &env);
    let mut diagnostics = raw.diagnostics;
    let graph = graph::check(raw.globals, raw.components, &mut diagnostics);
    diagnostics.sort_by_key(|d| d.severity);
    let has_errors = diagnostics.iter().any(Diagnostic::is_error);
    match graph {
        Some(graph) if !has_errors => Ok((graph, diagnostics)),
        _ => Err(diagnostics),
    }
}
