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

use sluice_core::component::{AnyConfig, ComponentSpec, GlobalOptions, OutputSpec, TransformConfig};
use sluice_core::ledger::ComponentKind;

pub use diagnostic::{Diagnostic, Severity, closest};
pub use graph::glob_match;
pub use schema::{BufferConfig, BufferType, WhenFull};

/// Where to read config from.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Files whose format is told by their extension (`.toml`, `.json`, else YAML).
    pub config_paths: Vec<PathBuf>,
    /// Files of a given format, whatever their name (`--config-toml` and kin).
    pub typed_paths: Vec<(PathBuf, Format)>,
    /// Directories: their config files, and the namespaced subfolders `sources/`,
    /// `transforms/`, `sinks/` and `tests/`, whose files are one component each (the file
    /// name is its id) or tests.
    pub config_dirs: Vec<PathBuf>,
    /// Documents built in memory (already interpolated), each with the name diagnostics give
    /// it. Used by commands that derive a pipeline from the user's config (`dlq replay`).
    pub documents: Vec<(PathBuf, serde_json::Value)>,
}

/// A config file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
    Json,
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
    /// The component's table without `inputs` (after interpolation): a reload keeps a
    /// component whose fingerprint did not change.
    pub fingerprint: String,
    /// Sinks only: the `healthcheck` block.
    pub healthcheck: SinkHealthcheck,
}

/// A sink's `healthcheck` block.
#[derive(Debug, Clone)]
pub struct SinkHealthcheck {
    /// Default true.
    pub enabled: bool,
    /// Where the `http` sink checks (it checks nothing without one, as Vector's).
    pub uri: Option<String>,
    /// Seconds a check may take. Default 10.
    pub timeout_secs: f64,
}

impl Default for SinkHealthcheck {
    fn default() -> Self {
        Self { enabled: true, uri: None, timeout_secs: 10.0 }
    }
}

/// Settings outside the component tables.
#[derive(Debug, Clone)]
pub struct Globals {
    pub options: Arc<GlobalOptions>,
    pub acknowledgements: bool,
    pub api_address: Option<String>,
    /// Every option outside the component tables: a reload that changes them is refused.
    pub fingerprint: String,
    /// `healthchecks.enabled` (default true): sinks' healthchecks run at start.
    pub healthchecks: bool,
    /// `healthchecks.require_healthy`: a failed healthcheck stops start-up.
    pub require_healthy: bool,
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
    for (kind, table) in [(ComponentKind::Source, "sources"), (ComponentKind::Sink, "sinks")] {
        if raw.declared.as_ref().is_some_and(|declared| !declared.contains(&kind)) {
            diagnostics.push(
                Diagnostic::error(format!("no {table}: a pipeline needs at least one"))
                    .suggest(Some(format!("add a `[{table}.<id>]` table (see `sluice list` for the types)"))),
            );
        }
    }
    let graph = graph::check(raw.globals, raw.components, &mut diagnostics);
    diagnostics.sort_by_key(|d| d.severity);
    let has_errors = diagnostics.iter().any(Diagnostic::is_error);
    match graph {
        Some(graph) if !has_errors => Ok((graph, diagnostics)),
        _ => Err(diagnostics),
    }
}

/// What `sluice test` runs on: the transforms (sources and sinks are parsed and checked, then
/// left out: the tests stand in for them) and every file's `tests`, in file order.
pub struct TestConfig {
    pub globals: Globals,
    pub transforms: Vec<TestTransform>,
    pub tests: Vec<(PathBuf, serde_json::Value)>,
    pub warnings: Vec<Diagnostic>,
}

/// One transform as the tests see it: its inputs as written (sources among them are ignored).
pub struct TestTransform {
    pub id: String,
    pub file: PathBuf,
    pub config: Box<dyn TransformConfig>,
    pub inputs: Vec<String>,
    pub outputs: Vec<OutputSpec>,
}

/// Loads the config for its unit tests. Every component is parsed and checked as `load`
/// does, but the graph need not be whole (no sources or sinks is fine); `tests` may be in
/// several files and are concatenated.
pub fn load_for_tests(options: &LoadOptions, registry: &[ComponentSpec]) -> Result<TestConfig, Vec<Diagnostic>> {
    let env = |name: &str| std::env::var(name).ok();
    let mut documents = loader::read_documents(options, &env)?;
    documents.extend(options.documents.iter().cloned());
    let mut tests = Vec::new();
    for (file, doc) in &mut documents {
        if let serde_json::Value::Object(map) = doc
            && let Some(found) = map.remove("tests")
        {
            tests.push((file.clone(), found));
        }
    }
    let raw = loader::load_raw(&LoadOptions { documents, ..LoadOptions::default() }, registry, &env);
    let mut diagnostics = raw.diagnostics;
    let Some((globals, _)) = raw.globals else { return Err(diagnostics) };
    let mut transforms = Vec::new();
    for c in raw.components {
        let Some(config) = c.config else { continue };
        let issues = match &config {
            AnyConfig::Source(s) => s.check(&globals.options),
            AnyConfig::Transform(t) => t.check(&globals.options),
            AnyConfig::Sink(s) => s.check(&globals.options),
        };
        for issue in issues {
            diagnostics.push(
                Diagnostic::error(issue.message)
                    .in_file(Some(c.file.clone()))
                    .component(c.kind, &c.id)
                    .field(issue.path)
                    .of_environment(issue.environment),
            );
        }
        if let AnyConfig::Transform(config) = config {
            let outputs = config.outputs();
            transforms.push(TestTransform { id: c.id, file: c.file, config, inputs: c.inputs, outputs });
        }
    }
    diagnostics.sort_by_key(|d| d.severity);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(diagnostics);
    }
    Ok(TestConfig { globals, transforms, tests, warnings: diagnostics })
}
