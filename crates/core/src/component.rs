//! The contract between the runtime and components.
//!
//! A component type is a config struct (strict serde) implementing [`SourceConfig`],
//! [`TransformConfig`] or [`SinkConfig`], listed once in the components crate's registry as a
//! [`ComponentSpec`]. The runtime parses, checks and builds configs through these traits only;
//! it never names a concrete component. What every component MUST do is written down in
//! `docs/specs/component.md`.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::ack::Outcome;
use crate::event::{Chunk, LogEvent};
use crate::ledger::{ComponentKind, ComponentLedger};
use crate::shutdown::ShutdownSignal;

/// The kinds of events a port carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataType(u8);

impl DataType {
    pub const LOG: Self = Self(1);
    pub const METRIC: Self = Self(2);
    pub const TRACE: Self = Self(4);
    pub const ANY: Self = Self(7);

    pub fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    pub fn describe(self) -> String {
        let mut parts = Vec::new();
        for (flag, name) in [(Self::LOG, "logs"), (Self::METRIC, "metrics"), (Self::TRACE, "traces")] {
            if self.0 & flag.0 != 0 {
                parts.push(name);
            }
        }
        parts.join(" and ")
    }
}

/// A named output of a source or transform (`<id>.<name>`); `None` is the default output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub name: Option<String>,
    pub data_type: DataType,
}

impl OutputSpec {
    pub fn default_logs() -> Self {
        Self { name: None, data_type: DataType::LOG }
    }
    pub fn named_logs(name: impl Into<String>) -> Self {
        Self { name: Some(name.into()), data_type: DataType::LOG }
    }
}

/// A problem in one component's config, found by parsing or by the component's own check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted field path inside the component (`batch.max_events`); empty for the whole component.
    pub path: String,
    pub message: String,
    /// About this machine rather than the config (a file the config names is missing):
    /// `validate --no-environment` leaves such issues out, as Vector's does.
    pub environment: bool,
}

impl ConfigIssue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into(), environment: false }
    }

    /// Marks the issue as about this machine (see [`ConfigIssue::environment`]).
    pub fn of_environment(mut self) -> Self {
        self.environment = true;
        self
    }
}

/// A component that could not be built (a port in use, a file that cannot be opened...).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// Process-wide settings every component may read.
#[derive(Debug, Clone)]
pub struct GlobalOptions {
    pub data_dir: PathBuf,
    /// The value of the legacy `host` field.
    pub hostname: Bytes,
    /// Directory of the config file, for relative paths (remap `file`).
    pub config_dir: Option<PathBuf>,
    /// The top-level `proxy` block; components merge their own over it.
    pub proxy: crate::proxy::ProxyConfig,
}

impl Default for GlobalOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/sluice"),
            hostname: Bytes::from_static(b"localhost"),
            config_dir: None,
            proxy: crate::proxy::ProxyConfig::default(),
        }
    }
}

/// Where a source's chunks go. Implemented by the runtime's fan-out.
pub trait ChunkSender: Send {
    /// Sends one chunk to every consumer; gives the chunk back if every consumer is gone.
    fn send(&mut self, chunk: Chunk) -> BoxFuture<'_, Result<(), Chunk>>;
    /// False when nothing reads this output (validate warns about it).
    fn has_consumers(&self) -> bool;
}

/// Where a sink's chunks come from. Implemented by the runtime's buffer receiver.
pub trait ChunkReceiver: Send {
    /// The next chunk; `None` once every upstream has finished and the buffer is empty.
    fn recv(&mut self) -> BoxFuture<'_, Option<Chunk>>;
}

/// The downstream was shut down before it could take the events.
#[derive(Debug, thiserror::Error)]
#[error("downstream closed")]
pub struct ClosedError;

/// A source's handle on its output. Counts the source's ledger; events that cannot be handed on
/// are resolved as failed and counted, never dropped silently.
pub struct SourceSender {
    downstream: Box<dyn ChunkSender>,
    ledger: Arc<ComponentLedger>,
}

impl SourceSender {
    pub fn new(downstream: Box<dyn ChunkSender>, ledger: Arc<ComponentLedger>) -> Self {
        Self { downstream, ledger }
    }

    /// Hands a chunk downstream, waiting while the consumers are full (back-pressure).
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled send loses track of the chunk. Do not use in `select!`.
    pub async fn send(&mut self, chunk: Chunk) -> Result<(), ClosedError> {
        let n = chunk.len();
        if n == 0 {
            return Ok(());
        }
        self.ledger.accept(n);
        if !self.downstream.has_consumers() {
            crate::event::resolve_all(chunk, Outcome::Failed);
            self.ledger.discarded(n, "unconsumed_output", false);
            return Ok(());
        }
        match self.downstream.send(chunk).await {
            Ok(()) => {
                self.ledger.sent(n);
                Ok(())
            }
            Err(chunk) => {
                crate::event::resolve_all(chunk, Outcome::Failed);
                self.ledger.errored(n);
                self.ledger.error("downstream_closed", "sending");
                tracing::error!(
                    component_id = self.ledger.id(),
                    events = n,
                    "Events could not be handed on because the pipeline is shutting down; counted as failed."
                );
                Err(ClosedError)
            }
        }
    }

    pub fn ledger(&self) -> &Arc<ComponentLedger> {
        &self.ledger
    }
}

/// Everything a source gets at build time.
pub struct SourceContext {
    pub id: Arc<str>,
    pub out: SourceSender,
    pub shutdown: ShutdownSignal,
    /// Whether the source must wait for its events' outcomes before acknowledging.
    pub acknowledgements: bool,
    pub globals: Arc<GlobalOptions>,
    /// Every component's counters, read-only (`internal_metrics` reports them).
    pub pipeline: crate::ledger::Ledger,
    /// Becomes `true` once every component of the topology is built (see [`wait_ready`]).
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// Where events the source cannot turn into good events go (oversized lines), with
    /// their reason: the disk DLQ under `data_dir/dead_letter/<source id>/`.
    pub dead_letter: Arc<dyn crate::dead_letter::DeadLetterQueue>,
}

/// Waits until the whole topology is built: sources that share work between them (several
/// file sources reading one set of files) start together.
///
/// # Cancel safety
/// Cancel safe.
pub async fn wait_ready(ready: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = ready.wait_for(|r| *r).await;
}

/// A running source: finishes when its input ends or shutdown is signalled.
pub type SourceTask = BoxFuture<'static, Result<(), ()>>;

pub trait SourceConfig: Send + Sync + Debug {
    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError>;
    fn output_type(&self) -> DataType {
        DataType::LOG
    }
    /// Whether this source can tell its sender about outcomes (HTTP status, checkpoints).
    fn can_acknowledge(&self) -> bool;
    /// Checks beyond what parsing finds; run by `validate` and before start.
    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        Vec::new()
    }
    /// Settings that are accepted but risky or not applied: warnings at `validate` and at
    /// start.
    fn warnings(&self) -> Vec<ConfigIssue> {
        Vec::new()
    }
    /// Sources whose senders wait for acknowledgements: how long they wait before they are
    /// told to send again. Used by `validate`.
    fn ack_timeout_secs(&self) -> Option<f64> {
        None
    }
    /// A directory of its own for state (checkpoints), instead of the global `data_dir`.
    /// Used by the commands that read that state (`sluice checkpoints`).
    fn data_dir(&self) -> Option<&std::path::Path> {
        None
    }
}

/// Everything a transform gets at build time.
pub struct TransformContext {
    pub id: Arc<str>,
    pub globals: Arc<GlobalOptions>,
}

/// A transform's outputs for one input chunk, and what it discarded.
///
/// Transforms must account for every input event: passed to an output (possibly several, which
/// clones it), or discarded with a reason through [`TransformOutputs::discard`].
#[derive(Debug, Default)]
pub struct TransformOutputs {
    pub default: Chunk,
    /// One chunk per named output, in the order of [`TransformConfig::outputs`] (default excluded).
    pub named: Vec<Chunk>,
    discards: Vec<(&'static str, bool, usize)>,
}

impl TransformOutputs {
    pub fn with_named(named: usize) -> Self {
        Self { default: Vec::new(), named: (0..named).map(|_| Vec::new()).collect(), discards: Vec::new() }
    }

    /// Discards an event under a named reason. `intentional` discards (a user's rule) resolve as
    /// discarded; unintentional ones resolve as failed so the sender learns of them.
    pub fn discard(&mut self, event: LogEvent, reason: &'static str, intentional: bool) {
        event.resolve(if intentional { Outcome::Discarded } else { Outcome::Failed });
        match self.discards.iter_mut().find(|(r, _, _)| *r == reason) {
            Some(entry) => entry.2 += 1,
            None => self.discards.push((reason, intentional, 1)),
        }
    }

    /// Takes the discard counts (reason, intentional, count) recorded since the last call.
    pub fn take_discards(&mut self) -> Vec<(&'static str, bool, usize)> {
        std::mem::take(&mut self.discards)
    }
}

/// A transform that maps each chunk synchronously.
pub trait FunctionTransform: Send {
    fn transform(&mut self, chunk: Chunk, out: &mut TransformOutputs);
}

pub trait TransformConfig: Send + Sync + Debug {
    fn build(&self, cx: &TransformContext) -> Result<Box<dyn FunctionTransform>, BuildError>;
    fn input_type(&self) -> DataType {
        DataType::LOG
    }
    /// Every output, default first if there is one.
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec::default_logs()]
    }
    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        Vec::new()
    }
    /// Whether several copies (one per [`build`](Self::build)) may each take chunks at once:
    /// true when nothing carries over from one event to the next. The runtime then runs one
    /// copy per worker and keeps the outputs in input order.
    fn concurrent(&self) -> bool {
        false
    }
}

/// Everything a sink gets at build time.
pub struct SinkContext {
    pub id: Arc<str>,
    pub ledger: Arc<ComponentLedger>,
    pub globals: Arc<GlobalOptions>,
    /// Where undeliverable events go (`<id>.dead_letter`, else the disk DLQ).
    pub dead_letter: Arc<dyn crate::dead_letter::DeadLetterQueue>,
    /// Fires when shutdown starts; the sink then has `drain_limit` to settle everything.
    pub shutdown: ShutdownSignal,
    pub drain_limit: std::time::Duration,
    /// The sink's every event comes from its disk buffer. Events the shutdown cuts short
    /// (the drain time ran out, whether a signal or the sources' end started it) then go back
    /// to the buffer (resolved as failed, so their records stay on disk for the next start)
    /// rather than to the dead-letter queue: they were never undeliverable.
    pub disk_backed: bool,
    /// `healthcheck.uri`: where a sink that takes one (`http`) checks, when set.
    pub healthcheck_uri: Option<String>,
}

/// A sink's input: chunks from its buffer.
pub struct SinkInput {
    inner: Box<dyn ChunkReceiver>,
}

impl SinkInput {
    pub fn new(inner: Box<dyn ChunkReceiver>) -> Self {
        Self { inner }
    }

    /// The next chunk, or `None` once the input has ended.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn next(&mut self) -> Option<Chunk> {
        self.inner.recv().await
    }
}

/// A running sink. It must resolve every event it takes with an explicit outcome and settle its
/// ledger, then return once its input has ended and everything it holds is settled.
/// A sink's check that the system it delivers to answers: `Err` says why not.
pub type Healthcheck = BoxFuture<'static, Result<(), String>>;

pub trait Sink: Send {
    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>>;
    /// The healthcheck run at start (Vector's): `None` when the sink has nothing to check
    /// (local sinks). It does not hold up delivery unless `--require-healthy` asks for it.
    fn healthcheck(&self) -> Option<Healthcheck> {
        None
    }
}

pub trait SinkConfig: Send + Sync + Debug {
    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError>;
    fn input_type(&self) -> DataType {
        DataType::LOG
    }
    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        Vec::new()
    }
    /// Sinks that deliver to another system over the network: the most encoded bytes one
    /// batch holds. `None` for local sinks (files, the console). Used by `validate`.
    fn remote_batch_bytes(&self) -> Option<u64> {
        None
    }
    /// Sinks that batch: the longest a batch waits before it is sent (`batch.timeout_secs`
    /// with the sink's default). Used by `validate`.
    fn batch_timeout_secs(&self) -> Option<f64> {
        None
    }
}

/// A parsed component config of any kind.
#[derive(Debug)]
pub enum AnyConfig {
    Source(Box<dyn SourceConfig>),
    Transform(Box<dyn TransformConfig>),
    Sink(Box<dyn SinkConfig>),
}

/// One entry of the component registry.
#[derive(Debug, Clone, Copy)]
pub struct ComponentSpec {
    pub kind: ComponentKind,
    pub type_name: &'static str,
    /// Deprecated names still accepted (`http` for `http_server`).
    pub aliases: &'static [&'static str],
    pub summary: &'static str,
    /// Parses the component's own fields (shared keys such as `type` and `inputs` removed).
    pub parse: fn(serde_json::Value) -> Result<AnyConfig, Vec<ConfigIssue>>,
}

/// Parses strictly and reports every bad field, not just the first: after each error the
/// offending key is removed and parsing runs again (a "missing field" caused by a removal is
/// not reported twice).
fn parse_strict<T: DeserializeOwned>(mut value: serde_json::Value) -> Result<T, Vec<ConfigIssue>> {
    let mut issues: Vec<ConfigIssue> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..32 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) if issues.is_empty() => return Ok(parsed),
            Ok(_) => return Err(issues),
            Err(err) => err,
        };
        let segments: Vec<serde_path_to_error::Segment> = err.path().iter().cloned().collect();
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = err.into_inner().to_string();
        let caused_by_removal = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .is_some_and(|field| removed.iter().any(|r| r == field || r.ends_with(&format!(".{field}"))));
        if caused_by_removal && !issues.is_empty() {
            return Err(issues);
        }
        issues.push(ConfigIssue::new(path.clone(), message));
        if !remove_at(&mut value, &segments) {
            return Err(issues);
        }
        removed.push(path);
    }
    Err(issues)
}

/// Removes the value at `path` from a JSON tree; false when the path does not lead anywhere.
fn remove_at(value: &mut serde_json::Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = path.split_last() else { return false };
    let mut node = value;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, serde_json::Value::Object(map)) => match map.get_mut(key) {
                Some(next) => next,
                None => return false,
            },
            (Segment::Seq { index }, serde_json::Value::Array(items)) => match items.get_mut(*index) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, serde_json::Value::Object(map)) => map.shift_remove(key).is_some(),
        (Segment::Seq { index }, serde_json::Value::Array(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

pub fn parse_source<T: SourceConfig + DeserializeOwned + 'static>(
    value: serde_json::Value,
) -> Result<AnyConfig, Vec<ConfigIssue>> {
    parse_strict::<T>(value).map(|c| AnyConfig::Source(Box::new(c)))
}

pub fn parse_transform<T: TransformConfig + DeserializeOwned + 'static>(
    value: serde_json::Value,
) -> Result<AnyConfig, Vec<ConfigIssue>> {
    parse_strict::<T>(value).map(|c| AnyConfig::Transform(Box::new(c)))
}

pub fn parse_sink<T: SinkConfig + DeserializeOwned + 'static>(
    value: serde_json::Value,
) -> Result<AnyConfig, Vec<ConfigIssue>> {
    parse_strict::<T>(value).map(|c| AnyConfig::Sink(Box::new(c)))
}
