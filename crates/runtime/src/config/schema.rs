//! Top-level (global) options and the shared per-component blocks (`buffer`,
//! `acknowledgements`, `healthcheck`), parsed strictly.

use std::path::PathBuf;

use serde::Deserialize;

/// Top-level keys other than the component tables. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRaw {
    /// Where sluice keeps state (DLQ, buffers, checkpoints). Default `/var/lib/sluice`.
    pub data_dir: Option<PathBuf>,
    /// `true`/`false` or `{ enabled = … }`. Default: on.
    pub acknowledgements: Option<serde_json::Value>,
    pub api: Option<ApiRaw>,
    pub healthchecks: Option<HealthchecksRaw>,
    pub log_schema: Option<LogSchemaRaw>,
    pub schema: Option<SchemaRaw>,
    /// Accepted for compatibility; sluice formats timestamps in UTC.
    pub timezone: Option<String>,
    pub wildcard_matching: Option<WildcardMatching>,
    pub expire_metrics_secs: Option<f64>,
    /// HTTP proxies for every component (`enabled`, `http`, `https`, `no_proxy`).
    pub proxy: Option<sluice_core::proxy::ProxyConfig>,
    /// Config unit tests (`sluice test`); accepted and not run by `run`.
    pub tests: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiRaw {
    /// Default false.
    pub enabled: Option<bool>,
    /// Default `127.0.0.1:8686`.
    pub address: Option<String>,
    pub playground: Option<bool>,
    pub graphql: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthchecksRaw {
    pub enabled: Option<bool>,
    pub require_healthy: Option<bool>,
}

/// Field names of the log schema (top-level fields); `metadata_key` only takes its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSchemaRaw {
    pub message_key: Option<String>,
    pub timestamp_key: Option<String>,
    pub host_key: Option<String>,
    pub source_type_key: Option<String>,
    pub metadata_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRaw {
    pub log_namespace: Option<bool>,
    pub enabled: Option<bool>,
    pub validation: Option<bool>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WildcardMatching {
    /// A glob input that matches nothing is an error.
    #[default]
    Strict,
    /// A glob input that matches nothing is a warning.
    Relaxed,
}

/// What a sink does when its buffer is full.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait (back-pressure). Default.
    #[default]
    Block,
    /// Drop the incoming events, counted as discarded (`buffer_full`).
    DropNewest,
    /// Memory first, then the next stage (a disk buffer), Vector's `[[sinks.x.buffer]]` list.
    Overflow,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferType {
    #[default]
    Memory,
    Disk,
}

/// A sink's `buffer` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// `memory` (default) or `disk`.
    #[serde(default, rename = "type")]
    pub buffer_type: BufferType,
    /// Events the memory buffer holds. Default 500.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Bytes a disk buffer holds (required for `type = "disk"`). On a memory buffer, a limit in
    /// (estimated) bytes of events instead of `max_events`.
    pub max_size: Option<u64>,
    /// Default `block`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Disk: the directory name under `data_dir/buffer/` (default: the sink's id), so a
    /// renamed sink keeps its buffer.
    pub id: Option<String>,
    /// Disk: longest wait in milliseconds before an fsync; 0 syncs after every write. Events
    /// count as stored for their sources only after the fsync. Default 10.
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// Seconds this sink's buffer may stay full while a sibling in the same fan-out accepts;
    /// then its events go to its dead-letter queue (reason `stalled`) until it takes events
    /// again. Default 30.
    #[serde(default = "default_stall_timeout_secs")]
    pub stall_timeout_secs: f64,
    /// The stage events go to when this one is full and `when_full = "overflow"` (the second
    /// table of Vector's `[[sinks.x.buffer]]` list).
    #[serde(skip)]
    pub overflow: Option<Box<BufferConfig>>,
}

impl BufferConfig {
    /// A memory buffer limited in bytes (`max_size`) rather than in events.
    pub fn memory_bytes(&self) -> Option<u64> {
        (self.buffer_type == BufferType::Memory).then_some(self.max_size).flatten().filter(|b| *b > 0)
    }

    /// The stage kept on disk, if any: this one, or its overflow.
    pub fn disk_stage(&self) -> Option<&BufferConfig> {
        match self.buffer_type {
            BufferType::Disk => Some(self),
            BufferType::Memory => self.overflow.as_deref().filter(|o| o.buffer_type == BufferType::Disk),
        }
    }
}

pub const fn default_stall_timeout_secs() -> f64 {
    30.0
}

pub const fn default_sync_interval_ms() -> u64 {
    10
}

pub const fn default_max_events() -> usize {
    500
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            buffer_type: BufferType::Memory,
            max_events: default_max_events(),
            max_size: None,
            when_full: WhenFull::Block,
            id: None,
            sync_interval_ms: default_sync_interval_ms(),
            stall_timeout_secs: default_stall_timeout_secs(),
            overflow: None,
        }
    }
}

/// A sink's `healthcheck` block (`enabled`, `uri` for the http sink, `timeout` in seconds).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckRaw {
    pub enabled: Option<bool>,
    pub uri: Option<String>,
    pub timeout: Option<f64>,
}

/// Parses Vector's "bool or `{enabled}`" form.
pub fn parse_enabled(value: &serde_json::Value) -> Result<bool, String> {
    match value {
        serde_json::Value::Bool(b) => Ok(*b),
        serde_json::Value::Object(map) => {
            if let Some(key) = map.keys().find(|k| k.as_str() != "enabled") {
                return Err(format!("unknown field `{key}`, expected `enabled`"));
            }
            match map.get("enabled") {
                Some(serde_json::Value::Bool(b)) => Ok(*b),
                Some(other) => Err(format!("invalid type: {}, expected a boolean", describe(other))),
                None => Ok(true),
            }
        }
        other => Err(format!("invalid type: {}, expected a boolean or a table with `enabled`", describe(other))),
    }
}

/// How serde describes a JSON value in "invalid type" messages.
pub fn describe(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(b) => format!("boolean `{b}`"),
        serde_json::Value::Number(n) => format!("number `{n}`"),
        serde_json::Value::String(s) => format!("string {s:?}"),
        serde_json::Value::Array(_) => "sequence".into(),
        serde_json::Value::Object(_) => "map".into(),
    }
}
