//! `remap`: run a VRL program on every event.
//!
//! On a runtime error the original event goes on unchanged (`drop_on_error = false`, the
//! default), or is discarded (`drop_on_error = true`), or goes to `<id>.dropped` with the error
//! in its metadata (`reroute_dropped = true`). `abort` discards (`drop_on_abort = true`, the
//! default) the same way. A program that sets the root to an array emits one event per item.

use std::path::PathBuf;

use serde::Deserialize;
use sluice_core::component::{
    BuildError, ConfigIssue, FunctionTransform, GlobalOptions, OutputSpec, TransformConfig, TransformContext,
    TransformOutputs,
};
use sluice_core::{Chunk, LogEvent};
use vrl::compiler::runtime::{Runtime, Terminate};
use vrl::compiler::{Program, TimeZone};
use vrl::value::{ObjectMap, Value};

use super::vrl::{compile, run};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemapConfig {
    /// The VRL program. Exactly one of `source`, `file`, `files`.
    pub source: Option<String>,
    /// A file holding the program (relative to the config file's directory).
    pub file: Option<PathBuf>,
    /// Files concatenated with newlines.
    pub files: Option<Vec<PathBuf>>,
    /// Discard events whose program fails. Default false (the original event goes on).
    #[serde(default)]
    pub drop_on_error: bool,
    /// Discard events whose program calls `abort`. Default true.
    #[serde(default = "crate::default_true")]
    pub drop_on_abort: bool,
    /// Send discarded events to `<id>.dropped` instead. Default false.
    #[serde(default)]
    pub reroute_dropped: bool,
    /// Accepted for compatibility (metrics only).
    pub metric_tag_values: Option<MetricTagValues>,
    /// Time zone for VRL's time functions. Default: local.
    pub timezone: Option<TimeZone>,
    /// Only `ast`.
    pub runtime: Option<VrlRuntime>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricTagValues {
    Single,
    Full,
    Auto,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VrlRuntime {
    Ast,
}

impl RemapConfig {
    fn program_source(&self, globals: &GlobalOptions) -> Result<String, ConfigIssue> {
        let resolve = |p: &PathBuf| match &globals.config_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.clone(),
        };
        let read = |field: &str, p: &PathBuf| {
            std::fs::read_to_string(resolve(p))
                .map_err(|e| ConfigIssue::new(field, format!("cannot read {}: {e}", resolve(p).display())))
        };
        match (&self.source, &self.file, &self.files) {
            (Some(source), None, None) => Ok(source.clone()),
            (None, Some(file), None) => read("file", file),
            (None, None, Some(files)) if !files.is_empty() => {
                Ok(files.iter().map(|f| read("files", f)).collect::<Result<Vec<_>, _>>()?.join("\n"))
            }
            (None, None, _) => Err(ConfigIssue::new("source", "one of `source`, `file` or `files` is required")),
            _ => Err(ConfigIssue::new("source", "only one of `source`, `file` and `files` may be set")),
        }
    }

    fn compiled(&self, globals: &GlobalOptions) -> Result<Program, ConfigIssue> {
        let source = self.program_source(globals)?;
        compile(&source)
            .map(|c| c.program)
            .map_err(|diagnostics| ConfigIssue::new("source", format!("VRL does not compile:\n{diagnostics}")))
    }
}

impl TransformConfig for RemapConfig {
    fn concurrent(&self) -> bool {
        true
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        let mut outputs = vec![OutputSpec::default_logs()];
        if self.reroute_dropped {
            outputs.push(OutputSpec::named_logs("dropped"));
        }
        outputs
    }

    fn check(&self, globals: &GlobalOptions) -> Vec<ConfigIssue> {
        self.compiled(globals).err().into_iter().collect()
    }

    fn build(&self, cx: &TransformContext) -> Result<Box<dyn FunctionTransform>, BuildError> {
        let program = self.compiled(&cx.globals).map_err(|issue| BuildError(issue.message))?;
        let info = program.info();
        Ok(Box::new(Remap {
            // The original is needed only when a failure can send it on (unchanged, or to
            // `dropped`); a failure that discards the event needs no copy of it.
            keep_original: (info.fallible && (!self.drop_on_error || self.reroute_dropped))
                || (info.abortable && (!self.drop_on_abort || self.reroute_dropped)),
            program,
            runtime: Runtime::default(),
            tz: self.timezone.unwrap_or_default(),
            drop_on_error: self.drop_on_error,
            drop_on_abort: self.drop_on_abort,
            reroute_dropped: self.reroute_dropped,
            component_id: cx.id.to_string(),
            log_limit: Default::default(),
        }))
    }
}

struct Remap {
    program: Program,
    runtime: Runtime,
    tz: TimeZone,
    keep_original: bool,
    drop_on_error: bool,
    drop_on_abort: bool,
    reroute_dropped: bool,
    component_id: String,
    log_limit: sluice_core::log_limit::LogLimit,
}

impl Remap {
    fn annotate(&self, event: &mut LogEvent, reason: &str, message: String) {
        let mut dropped = ObjectMap::new();
        dropped.insert("reason".into(), Value::from(reason));
        dropped.insert("message".into(), Value::from(message));
        dropped.insert("component_id".into(), Value::from(self.component_id.as_str()));
        dropped.insert("component_type".into(), Value::from("remap"));
        dropped.insert("component_kind".into(), Value::from("transform"));
        if let Value::Object(meta) = event.metadata_value_mut() {
            meta.insert("dropped".into(), Value::Object(dropped));
        }
    }

    fn emit(event: LogEvent, out: &mut TransformOutputs) {
        if matches!(event.value(), Value::Array(_)) {
            let (value, mut meta) = event.into_parts();
            if let Value::Array(items) = value {
                for item in items {
                    out.default.push(LogEvent::from_value(item, meta.clone()));
                }
            }
            // The template's own finalizer copy never became an event.
            meta.set_finalizer(sluice_core::ack::EventFinalizer::default());
        } else {
            out.default.push(event);
        }
    }
}

impl FunctionTransform for Remap {
    fn transform(&mut self, chunk: Chunk, out: &mut TransformOutputs) {
        let mut errors = 0usize;
        let mut last_error = None;
        for mut event in chunk {
            let original = self.keep_original.then(|| event.clone());
            match run(&mut self.runtime, &self.program, &self.tz, &mut event) {
                Ok(_) => {
                    if let Some(mut original) = original {
                        original.take_finalizer().release_unused();
                    }
                    Self::emit(event, out);
                }
                Err(terminate) => {
                    let (reason, drop) = match &terminate {
                        Terminate::Abort(_) => ("abort", self.drop_on_abort),
                        _ => {
                            errors += 1;
                            last_error = Some(terminate.to_string());
                            ("error", self.drop_on_error)
                        }
                    };
                    // The failed run's partial changes are thrown away.
                    let mut original = match original {
                        Some(original) => {
                            event.take_finalizer().release_unused();
                            original
                        }
                        None => event,
                    };
                    if !drop {
                        out.default.push(original);
                    } else if self.reroute_dropped {
                        self.annotate(&mut original, reason, terminate.to_string());
                        out.named[0].push(original);
                    } else {
                        let reason = if reason == "abort" { "remap_abort" } else { "remap_error" };
                        out.discard(original, reason, true);
                    }
                }
            }
        }
        if errors > 0
            && let Some(folded) = self.log_limit.admit()
        {
            tracing::warn!(
                component_id = self.component_id.as_str(),
                similar_since_last_line = folded,
                errors,
                error = last_error.as_deref().unwrap_or_default(),
                "VRL program failed on some events."
            );
        }
    }
}
