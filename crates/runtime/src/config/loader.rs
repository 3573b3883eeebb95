//! Phase one: files → interpolated text → values → merged → parsed component configs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use sluice_core::component::{AnyConfig, ComponentSpec, GlobalOptions};
use sluice_core::ledger::ComponentKind;

use super::diagnostic::{Diagnostic, closest, suggestion_from_serde};
use super::interpolate::interpolate;
use super::schema::{self, BufferConfig, BufferType, GlobalRaw, HealthcheckRaw, WhenFull, WildcardMatching};
use super::{Format, Globals, LoadOptions, SinkHealthcheck};

/// A component after phase one. `config` is `None` when it failed to parse (already reported).
pub(super) struct RawComponent {
    pub id: String,
    pub kind: ComponentKind,
    pub file: PathBuf,
    pub type_name: &'static str,
    pub inputs: Vec<String>,
    pub config: Option<AnyConfig>,
    pub buffer: BufferConfig,
    pub acknowledgements: Option<bool>,
    /// The component's table without `inputs`: equal fingerprints, same component.
    pub fingerprint: String,
    pub healthcheck: SinkHealthcheck,
}

pub(super) struct RawConfig {
    pub globals: Option<(Globals, WildcardMatching)>,
    pub components: Vec<RawComponent>,
    pub diagnostics: Vec<Diagnostic>,
    /// The kinds of component the files declare (parsed or not), when every file could be
    /// read; `None` when one could not (what it declares is unknown).
    pub declared: Option<BTreeSet<ComponentKind>>,
}

const TABLES: [(&str, ComponentKind); 3] =
    [("sources", ComponentKind::Source), ("transforms", ComponentKind::Transform), ("sinks", ComponentKind::Sink)];

/// One file to read: its format (given, else by extension) and, for a file of a namespaced
/// config directory (`sources/`, `transforms/`, `sinks/`, `tests/`), where its content goes.
struct ConfigFile {
    path: PathBuf,
    format: Option<Format>,
    /// `("sources", "my_source")`: the file is that component's body. `("tests", "")`: one
    /// test, or a list of tests.
    namespace: Option<(&'static str, String)>,
}

/// The subfolders of a config directory whose files are one component each (named by the
/// file), as Vector reads them.
const NAMESPACES: [&str; 5] = ["sources", "transforms", "sinks", "enrichment_tables", "tests"];

fn is_config(path: &Path) -> bool {
    path.is_file() && matches!(path.extension().and_then(|e| e.to_str()), Some("toml" | "yaml" | "yml" | "json"))
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    found.sort();
    Ok(found)
}

fn config_files(options: &LoadOptions, diagnostics: &mut Vec<Diagnostic>) -> Vec<ConfigFile> {
    let mut files: Vec<ConfigFile> =
        options.config_paths.iter().map(|p| ConfigFile { path: p.clone(), format: None, namespace: None }).collect();
    files.extend(options.typed_paths.iter().map(|(p, f)| ConfigFile {
        path: p.clone(),
        format: Some(*f),
        namespace: None,
    }));
    for dir in &options.config_dirs {
        let entries = match sorted_entries(dir) {
            Ok(entries) => entries,
            Err(err) => {
                diagnostics
                    .push(Diagnostic::error(format!("cannot read config directory: {err}")).in_file(Some(dir.clone())));
                continue;
            }
        };
        for path in entries {
            if is_config(&path) {
                files.push(ConfigFile { path, format: None, namespace: None });
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let Some(table) = NAMESPACES.iter().find(|t| **t == name) else { continue };
            let inner = match sorted_entries(&path) {
                Ok(inner) => inner,
                Err(err) => {
                    diagnostics.push(
                        Diagnostic::error(format!("cannot read config directory: {err}")).in_file(Some(path.clone())),
                    );
                    continue;
                }
            };
            for file in inner.into_iter().filter(|p| is_config(p)) {
                let id = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
                files.push(ConfigFile { path: file, format: None, namespace: Some((table, id)) });
            }
        }
    }
    if files.is_empty() && options.documents.is_empty() {
        diagnostics.push(Diagnostic::error("no config given: use --config FILE or --config-dir DIR"));
    }
    files
}

pub(super) fn read_documents(
    options: &LoadOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(PathBuf, Value)>, Vec<Diagnostic>> {
    let mut diagnostics = Vec::new();
    let mut documents = Vec::new();
    for file in config_files(options, &mut diagnostics) {
        match parse_file(&file, env) {
            Ok(doc) => documents.push((file.path, doc)),
            Err(errors) => diagnostics.extend(errors),
        }
    }
    if diagnostics.is_empty() { Ok(documents) } else { Err(diagnostics) }
}

fn parse_file(file: &ConfigFile, env: &dyn Fn(&str) -> Option<String>) -> Result<Value, Vec<Diagnostic>> {
    let path = &file.path;
    let at = |message: String| Diagnostic::error(message).in_file(Some(path.clone()));
    let text = std::fs::read_to_string(path).map_err(|err| vec![at(format!("cannot read file: {err}"))])?;
    let text = interpolate(&text, env)
        .map_err(|errors| errors.into_iter().map(|(line, m)| at(format!("line {line}: {m}"))).collect::<Vec<_>>())?;
    let format = file.format.unwrap_or(match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => Format::Toml,
        Some("json") => Format::Json,
        _ => Format::Yaml,
    });
    let value = match format {
        Format::Toml => toml::from_str::<Value>(&text).map_err(|e| e.to_string()),
        Format::Json => serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml::from_str::<Value>(&text).map_err(|e| e.to_string()),
    };
    let value = value.map_err(|err| vec![at(format!("syntax error: {}", err.trim_end()))])?;
    let value = match value {
        Value::Object(_) => value,
        Value::Null => Value::Object(Map::new()),
        Value::Array(_) if matches!(file.namespace, Some(("tests", _))) => value,
        _ => return Err(vec![at("the top level must be a table of settings".into())]),
    };
    Ok(match &file.namespace {
        None => value,
        Some(("tests", _)) => {
            let tests = match value {
                Value::Object(mut map) if map.contains_key("tests") => map.remove("tests").unwrap_or_default(),
                Value::Array(tests) => Value::Array(tests),
                one => Value::Array(vec![one]),
            };
            serde_json::json!({ "tests": tests })
        }
        Some((table, id)) => serde_json::json!({ *table: { id.as_str(): value } }),
    })
}

/// The `log_schema` keys a field name may be given for; `metadata_key` stays Vector's default.
const SCHEMA_KEYS: [&str; 4] = ["message_key", "timestamp_key", "host_key", "source_type_key"];

/// A `log_schema` key's field name: a top-level field (a leading `.` is allowed).
fn schema_field(value: &str) -> Result<&str, String> {
    let name = value.trim_start_matches('.');
    if name.is_empty() || name.contains(['.', '[', ']', '"']) {
        return Err(format!("`{value}`: only a top-level field name is supported"));
    }
    Ok(name)
}

/// Sets the process's log schema from the first `log_schema` table of the documents
/// (conflicts between files are reported with the other globals).
fn set_log_schema(documents: &[(PathBuf, Result<Value, Vec<Diagnostic>>)], diagnostics: &mut Vec<Diagnostic>) {
    let Some((file, table)) = documents.iter().find_map(|(file, doc)| match doc {
        Ok(Value::Object(doc)) => doc.get("log_schema").and_then(Value::as_object).map(|t| (file, t)),
        _ => None,
    }) else {
        return;
    };
    let mut schema = sluice_core::event::fields::LogSchema::default();
    for key in SCHEMA_KEYS {
        let Some(value) = table.get(key).and_then(Value::as_str) else { continue };
        let Ok(name) = schema_field(value) else { continue };
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        match key {
            "message_key" => schema.message = name,
            "timestamp_key" => schema.timestamp = name,
            "host_key" => schema.host = name,
            _ => schema.source_type = name,
        }
    }
    if !sluice_core::event::fields::set(schema) {
        diagnostics.push(
            Diagnostic::error("the log schema cannot change while sluice runs; restart to change it")
                .in_file(Some(file.clone()))
                .field("log_schema"),
        );
    }
}

pub(super) fn load_raw(
    options: &LoadOptions,
    registry: &[ComponentSpec],
    env: &dyn Fn(&str) -> Option<String>,
) -> RawConfig {
    let mut diagnostics = Vec::new();
    let mut global_values: Map<String, Value> = Map::new();
    let mut global_files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut components = Vec::new();
    let mut seen_ids: BTreeMap<String, (ComponentKind, PathBuf)> = BTreeMap::new();
    let mut config_dir = None;
    let mut unreadable = false;

    let files = config_files(options, &mut diagnostics);
    let parsed: Vec<_> = files
        .into_iter()
        .map(|file| {
            let doc = parse_file(&file, env);
            (file.path, doc)
        })
        .chain(options.documents.iter().map(|(name, doc)| (name.clone(), Ok(doc.clone()))))
        .collect();
    // Components take their field names from the log schema as they are parsed.
    set_log_schema(&parsed, &mut diagnostics);
    for (file, doc) in parsed {
        config_dir.get_or_insert_with(|| file.parent().map(Path::to_path_buf).unwrap_or_default());
        let doc = match doc {
            Ok(Value::Object(doc)) => doc,
            Ok(_) => continue,
            Err(errors) => {
                diagnostics.extend(errors);
                unreadable = true;
                continue;
            }
        };
        for (key, value) in doc {
            if let Some((_, kind)) = TABLES.iter().find(|(name, _)| *name == key) {
                let Value::Object(table) = value else {
                    diagnostics.push(
                        Diagnostic::error(format!("`{key}` must be a table of components")).in_file(Some(file.clone())),
                    );
                    continue;
                };
                for (id, body) in table {
                    if let Some((first_kind, first_file)) = seen_ids.get(&id) {
                        diagnostics.push(
                            Diagnostic::error(format!(
                                "duplicate component id: a {} in {} already uses it",
                                first_kind.as_str(),
                                first_file.display()
                            ))
                            .in_file(Some(file.clone()))
                            .component(*kind, &id),
                        );
                        continue;
                    }
                    seen_ids.insert(id.clone(), (*kind, file.clone()));
                    if let Some(c) = parse_component(&id, *kind, body, &file, registry, &mut diagnostics) {
                        components.push(c);
                    }
                }
            } else if key == "tests" {
                // Tests may be spread over files (and `tests/` of a config directory).
                let tests = global_values.entry(key).or_insert_with(|| Value::Array(Vec::new()));
                if let (Value::Array(all), Value::Array(more)) = (tests, value) {
                    all.extend(more);
                }
            } else {
                match global_values.get(&key) {
                    Some(existing) if existing != &value => diagnostics.push(
                        Diagnostic::error(format!(
                            "conflicting values for `{key}`; also set in {}",
                            global_files.get(&key).map(|p| p.display().to_string()).unwrap_or_default()
                        ))
                        .in_file(Some(file.clone())),
                    ),
                    _ => {
                        global_files.insert(key.clone(), file.clone());
                        global_values.insert(key, value);
                    }
                }
            }
        }
    }
    let globals = parse_globals(global_values, &global_files, config_dir, &mut diagnostics);
    let declared = (!unreadable).then(|| seen_ids.values().map(|(kind, _)| *kind).collect());
    RawConfig { globals, components, diagnostics, declared }
}

fn parse_globals(
    values: Map<String, Value>,
    files: &BTreeMap<String, PathBuf>,
    config_dir: Option<PathBuf>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(Globals, WildcardMatching)> {
    let fingerprint = {
        // Tests are not part of a running pipeline: changing them needs no restart.
        let mut options = values.clone();
        options.remove("tests");
        serde_json::to_string(&options).unwrap_or_default()
    };
    let raw: GlobalRaw = match serde_path_to_error::deserialize(Value::Object(values)) {
        Ok(raw) => raw,
        Err(err) => {
            let path = err.path().to_string();
            let top = path.split('.').next().unwrap_or_default().to_owned();
            let message = err.into_inner().to_string();
            let suggestion = suggestion_from_serde(&message).or_else(|| {
                message.starts_with("unknown field").then(|| {
                    "top-level keys are `sources`, `transforms`, `sinks` and global options such as `data_dir`, `acknowledgements`, `api`".to_owned()
                })
            });
            diagnostics.push(
                Diagnostic::error(message)
                    .in_file(files.get(&top).cloned())
                    .field(if path == "." { String::new() } else { path })
                    .suggest(suggestion),
            );
            return None;
        }
    };
    let file_of = |key: &str| files.get(key).cloned();
    let mut acknowledgements = true;
    if let Some(value) = &raw.acknowledgements {
        match schema::parse_enabled(value) {
            Ok(enabled) => acknowledgements = enabled,
            Err(message) => diagnostics
                .push(Diagnostic::error(message).in_file(file_of("acknowledgements")).field("acknowledgements")),
        }
        if !acknowledgements {
            diagnostics.push(
                Diagnostic::warning(
                    "acknowledgements are off for every source: senders are answered before their events are safe",
                )
                .in_file(file_of("acknowledgements"))
                .field("acknowledgements"),
            );
        }
    }
    if let Some(schema) = &raw.log_schema {
        let keys = [
            ("message_key", &schema.message_key),
            ("timestamp_key", &schema.timestamp_key),
            ("host_key", &schema.host_key),
            ("source_type_key", &schema.source_type_key),
        ];
        for (field, value) in keys {
            if let Some(Err(message)) = value.as_deref().map(schema_field) {
                diagnostics.push(
                    Diagnostic::error(message).in_file(file_of("log_schema")).field(format!("log_schema.{field}")),
                );
            }
        }
        if let Some(value) = &schema.metadata_key
            && value.trim_start_matches('.') != "metadata"
        {
            diagnostics.push(
                Diagnostic::error(format!("only the default `metadata` is supported, not `{value}`"))
                    .in_file(file_of("log_schema"))
                    .field("log_schema.metadata_key"),
            );
        }
    }
    if raw.schema.as_ref().and_then(|s| s.log_namespace) == Some(true) {
        diagnostics.push(
            Diagnostic::error("the Vector log namespace is not supported yet; sluice uses the legacy namespace")
                .in_file(file_of("schema"))
                .field("schema.log_namespace"),
        );
    }
    let api_address = raw
        .api
        .as_ref()
        .filter(|api| api.enabled.unwrap_or(false))
        .map(|api| api.address.clone().unwrap_or_else(|| "127.0.0.1:8686".to_owned()));
    let hostname = std::env::var("SLUICE_HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let options = GlobalOptions {
        data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("/var/lib/sluice")),
        // Static: events clone it without touching a shared refcount.
        hostname: bytes::Bytes::from_static(Box::leak(hostname.into_boxed_str()).as_bytes()),
        config_dir,
        proxy: raw.proxy.unwrap_or_default(),
    };
    Some((
        Globals {
            options: Arc::new(options),
            acknowledgements,
            api_address,
            fingerprint,
            healthchecks: raw.healthchecks.as_ref().and_then(|h| h.enabled).unwrap_or(true),
            require_healthy: raw.healthchecks.as_ref().and_then(|h| h.require_healthy).unwrap_or(false),
        },
        raw.wildcard_matching.unwrap_or_default(),
    ))
}

fn take_string_list(body: &mut Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, String> {
    match body.remove(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(format!("invalid type: {}, expected a component id", schema::describe(&other))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(format!("invalid type: {}, expected a list of component ids", schema::describe(&other))),
    }
}

fn parse_component(
    id: &str,
    kind: ComponentKind,
    body: Value,
    file: &Path,
    registry: &[ComponentSpec],
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<RawComponent> {
    let here = |d: Diagnostic| d.in_file(Some(file.to_path_buf())).component(kind, id);
    let start = diagnostics.len();
    if id.is_empty() || id.contains(['.', '*', ' ']) {
        diagnostics.push(here(Diagnostic::error(
            "component ids cannot be empty or contain `.`, `*` or spaces (`.` names an output)",
        )));
    }
    let Value::Object(mut body) = body else {
        diagnostics.push(here(Diagnostic::error("a component must be a table")));
        return None;
    };
    let fingerprint = {
        let mut table = body.clone();
        table.remove("inputs");
        serde_json::to_string(&table).unwrap_or_default()
    };
    let type_name = match body.remove("type") {
        Some(Value::String(t)) => t,
        Some(other) => {
            diagnostics.push(here(
                Diagnostic::error(format!(
                    "invalid type: {}, expected a component type name",
                    schema::describe(&other)
                ))
                .field("type"),
            ));
            return None;
        }
        None => {
            diagnostics.push(here(Diagnostic::error("missing field `type`").field("type")));
            return None;
        }
    };
    let of_kind: Vec<&ComponentSpec> = registry.iter().filter(|s| s.kind == kind).collect();
    let spec = of_kind.iter().find(|s| s.type_name == type_name || s.aliases.contains(&type_name.as_str()));
    if spec.is_none() {
        let names: Vec<&str> = of_kind.iter().map(|s| s.type_name).collect();
        let elsewhere = registry.iter().find(|s| s.type_name == type_name).map(|s| s.kind.as_str());
        let message = match elsewhere {
            Some(other) => format!("`{type_name}` is a {other} type, not a {} type", kind.as_str()),
            None => format!("unknown {} type `{type_name}`", kind.as_str()),
        };
        let suggestion = closest(&type_name, names.iter().copied())
            .map(|c| format!("did you mean `{c}`? {} types: {}", kind.as_str(), names.join(", ")))
            .or_else(|| Some(format!("{} types: {}", kind.as_str(), names.join(", "))));
        diagnostics.push(here(Diagnostic::error(message).field("type").suggest(suggestion)));
    }
    let inputs = match (kind, take_string_list(&mut body, "inputs")) {
        (ComponentKind::Source, Ok(None)) => Vec::new(),
        (ComponentKind::Source, _) => {
            diagnostics.push(here(Diagnostic::error("sources do not take `inputs`").field("inputs")));
            Vec::new()
        }
        // An empty list is the graph check's to refuse: unit tests feed such transforms.
        (_, Ok(Some(inputs))) => inputs,
        (_, Ok(None)) => {
            diagnostics.push(here(Diagnostic::error("`inputs` must list at least one component").field("inputs")));
            Vec::new()
        }
        (_, Err(message)) => {
            diagnostics.push(here(Diagnostic::error(message).field("inputs")));
            Vec::new()
        }
    };
    // A component of an unknown type still reads its inputs: the graph check then neither
    // calls its upstreams unread nor misses errors elsewhere.
    let Some(spec) = spec else {
        return Some(RawComponent {
            id: id.to_owned(),
            kind,
            file: file.to_path_buf(),
            type_name: "unknown",
            inputs,
            config: None,
            buffer: BufferConfig::default(),
            acknowledgements: None,
            fingerprint,
            healthcheck: SinkHealthcheck::default(),
        });
    };
    let mut acknowledgements = None;
    // Keys of a sink's `acknowledgements` table besides `enabled` (splunk_hec_logs' indexer
    // acknowledgements) are the sink's own: they stay in its config.
    let mut own_ack_keys = None;
    if kind != ComponentKind::Transform
        && let Some(mut value) = body.remove("acknowledgements")
    {
        if kind == ComponentKind::Sink
            && let Value::Object(map) = &mut value
            && map.keys().any(|k| k != "enabled")
        {
            let own: serde_json::Map<String, Value> =
                map.iter().filter(|(k, _)| *k != "enabled").map(|(k, v)| (k.clone(), v.clone())).collect();
            map.retain(|k, _| k == "enabled");
            own_ack_keys = own.keys().next().cloned();
            body.insert("acknowledgements".to_owned(), Value::Object(own));
        }
        match schema::parse_enabled(&value) {
            Ok(enabled) => acknowledgements = Some(enabled),
            Err(message) => diagnostics.push(here(Diagnostic::error(message).field("acknowledgements"))),
        }
    }
    let mut buffer = BufferConfig::default();
    let mut healthcheck = SinkHealthcheck::default();
    if kind == ComponentKind::Sink {
        if let Some(value) = body.remove("buffer") {
            match parse_buffer(id, value) {
                Ok(parsed) => buffer = parsed,
                Err(diagnostic) => diagnostics.push(here(*diagnostic)),
            }
        }
        match body.remove("healthcheck") {
            None => {}
            // Vector's shorthand `healthcheck = false`.
            Some(Value::Bool(enabled)) => healthcheck.enabled = enabled,
            Some(value) => match serde_path_to_error::deserialize::<_, HealthcheckRaw>(value) {
                Ok(raw) => {
                    healthcheck.enabled = raw.enabled.unwrap_or(true);
                    healthcheck.uri = raw.uri;
                    if let Some(timeout) = raw.timeout {
                        healthcheck.timeout_secs = timeout;
                    }
                }
                Err(err) => {
                    let path = format!("healthcheck.{}", err.path());
                    let message = err.into_inner().to_string();
                    let suggestion = suggestion_from_serde(&message);
                    diagnostics.push(here(Diagnostic::error(message).field(path).suggest(suggestion)));
                }
            },
        }
    }
    let config = match (spec.parse)(Value::Object(body)) {
        Ok(config) => Some(config),
        Err(issues) => {
            for mut issue in issues {
                if let Some(key) = &own_ack_keys
                    && issue.message.starts_with("unknown field `acknowledgements`")
                {
                    issue.path = "acknowledgements".to_owned();
                    issue.message = format!("unknown field `{key}`, expected `enabled`");
                }
                let suggestion = suggestion_from_serde(&issue.message);
                diagnostics.push(here(Diagnostic::error(issue.message).field(issue.path).suggest(suggestion)));
            }
            None
        }
    };
    let failed = diagnostics[start..].iter().any(Diagnostic::is_error);
    Some(RawComponent {
        id: id.to_owned(),
        kind,
        file: file.to_path_buf(),
        type_name: spec.type_name,
        inputs,
        config: if failed { None } else { config },
        buffer,
        acknowledgements,
        fingerprint,
        healthcheck,
    })
}

/// A `buffer` table, or Vector's list of stages (`[[sinks.x.buffer]]`): memory, then the
/// disk stage it overflows to.
fn parse_buffer(id: &str, value: Value) -> Result<BufferConfig, Box<Diagnostic>> {
    let stages = match value {
        Value::Array(stages) => stages,
        table => vec![table],
    };
    let count = stages.len();
    let mut parsed = Vec::with_capacity(count);
    for (i, stage) in stages.into_iter().enumerate() {
        let prefix = if count > 1 { format!("buffer[{i}]") } else { "buffer".to_owned() };
        match serde_path_to_error::deserialize::<_, BufferConfig>(stage) {
            Ok(config) => parsed.push(config),
            Err(err) => {
                let path = format!("{prefix}.{}", err.path()).trim_end_matches(".").to_owned();
                let message = err.into_inner().to_string();
                let suggestion = suggestion_from_serde(&message);
                return Err(Box::new(Diagnostic::error(message).field(path).suggest(suggestion)));
            }
        }
    }
    let mut stages = parsed.into_iter();
    let Some(mut first) = stages.next() else {
        return Err(Box::new(Diagnostic::error("an empty list of buffer stages").field("buffer")));
    };
    let second = stages.next();
    if stages.next().is_some() {
        return Err(Box::new(
            Diagnostic::error("at most two buffer stages: memory, then the disk buffer it overflows to")
                .field("buffer"),
        ));
    }
    match (first.when_full, second) {
        (WhenFull::Overflow, None) => {
            Err(Box::new(Diagnostic::error("`when_full = \"overflow\"` needs a second buffer stage to overflow to")
                .field("buffer.when_full")
                .suggest(Some(format!(
                    "write the buffer as two `[[sinks.{id}.buffer]]` stages: this one, then one with `type = \"disk\"` and `max_size`"
                )))))
        }
        (WhenFull::Overflow, Some(second))
            if first.buffer_type != BufferType::Memory || second.buffer_type != BufferType::Disk =>
        {
            Err(Box::new(Diagnostic::error("sluice overflows from a memory stage to a disk stage only")
                .field("buffer[1].type")
                .suggest(Some("make the first stage `type = \"memory\"` and the second `type = \"disk\"`".to_owned()))))
        }
        (WhenFull::Overflow, Some(second)) if second.when_full == WhenFull::Overflow => {
            Err(Box::new(Diagnostic::error("the last buffer stage has nothing to overflow to").field("buffer[1].when_full")))
        }
        (WhenFull::Overflow, Some(second)) => {
            first.overflow = Some(Box::new(second));
            Ok(first)
        }
        (_, Some(_)) => Err(Box::new(Diagnostic::error("a second buffer stage is used only with `when_full = \"overflow\"`")
            .field("buffer[0].when_full")
            .suggest(Some("set `when_full = \"overflow\"` on the first stage".to_owned())))),
        (_, None) => Ok(first),
    }
}
