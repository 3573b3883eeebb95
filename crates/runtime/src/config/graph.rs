//! Phase two: resolve inputs and check the graph.
//!
//! Errors: dangling inputs, a sink used as an input, unknown named outputs, cycles, event-type
//! mismatches on an edge, component checks (e.g. VRL that does not compile), unsupported
//! buffer types. Warnings: outputs nobody reads, acknowledgements turned off, `drop_newest`.

use std::collections::{BTreeMap, BTreeSet};

use sluice_core::component::{AnyConfig, DataType, OutputSpec};
use sluice_core::ledger::ComponentKind;

use super::diagnostic::{Diagnostic, closest};
use super::loader::RawComponent;
use super::schema::{BufferType, WhenFull, WildcardMatching};
use super::{Component, Globals, Graph, OutputRef};

fn outputs_of(config: &AnyConfig) -> Vec<OutputSpec> {
    match config {
        AnyConfig::Source(c) => vec![OutputSpec { name: None, data_type: c.output_type() }],
        AnyConfig::Transform(c) => c.outputs(),
        // Every sink's undeliverable events; unread, they go to the disk DLQ.
        AnyConfig::Sink(_) => vec![OutputSpec::named_logs("dead_letter")],
    }
}

fn input_type(config: &AnyConfig) -> DataType {
    match config {
        AnyConfig::Source(_) => DataType::ANY,
        AnyConfig::Transform(c) => c.input_type(),
        AnyConfig::Sink(c) => c.input_type(),
    }
}

/// Shell-style match of `*` against `text` (component ids in `inputs`, tap patterns, `top`'s
/// filter).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

pub(super) fn check(
    globals: Option<(Globals, WildcardMatching)>,
    raw: Vec<RawComponent>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Graph> {
    let (globals, wildcard) = globals?;
    let here = |c: &RawComponent, d: Diagnostic| d.in_file(Some(c.file.clone())).component(c.kind, &c.id);

    // Every output port, with its type; components that failed to parse have unknown ports.
    let mut ports: BTreeMap<String, DataType> = BTreeMap::new();
    let mut unknown_ports: BTreeSet<&str> = BTreeSet::new();
    let kinds: BTreeMap<&str, ComponentKind> = raw.iter().map(|c| (c.id.as_str(), c.kind)).collect();
    for c in &raw {
        match &c.config {
            Some(config) => {
                for out in outputs_of(config) {
                    let key = OutputRef { component: c.id.clone(), port: out.name.clone() }.to_string();
                    ports.insert(key, out.data_type);
                }
            }
            None if c.kind != ComponentKind::Sink => {
                unknown_ports.insert(&c.id);
            }
            None => {}
        }
    }

    let mut resolved: Vec<Vec<OutputRef>> = Vec::with_capacity(raw.len());
    for c in &raw {
        if c.kind != ComponentKind::Source && c.inputs.is_empty() && c.config.is_some() {
            diagnostics.push(here(c, Diagnostic::error("`inputs` must list at least one component").field("inputs")));
        }
        let mut inputs: Vec<OutputRef> = Vec::new();
        for input in &c.inputs {
            let to_ref = |s: &str| match s.split_once('.') {
                Some((id, port)) => OutputRef { component: id.to_owned(), port: Some(port.to_owned()) },
                None => OutputRef { component: s.to_owned(), port: None },
            };
            if input.contains('*') {
                let matched: Vec<&String> = ports
                    .keys()
                    .filter(|p| (input.contains('.') || !p.contains('.')) && glob_match(input, p))
                    .filter(|p| to_ref(p).component != c.id)
                    .collect();
                let maybe_unknown =
                    unknown_ports.iter().any(|id| glob_match(input.split('.').next().unwrap_or(input), id));
                if matched.is_empty() && !maybe_unknown {
                    let d = Diagnostic::error(format!("input `{input}` matches no component"));
                    let d = if wildcard == WildcardMatching::Relaxed {
                        Diagnostic { severity: super::Severity::Warning, ..d }
                    } else {
                        d
                    };
                    diagnostics.push(here(c, d.field("inputs")));
                }
                inputs.extend(matched.into_iter().map(|p| to_ref(p)));
                continue;
            }
            let target = to_ref(input);
            if ports.contains_key(input.as_str()) {
                inputs.push(target);
            } else if unknown_ports.contains(target.component.as_str()) {
                // Already reported where that component failed to parse.
            } else if kinds.get(target.component.as_str()) == Some(&ComponentKind::Sink) {
                diagnostics.push(here(
                    c,
                    Diagnostic::error(format!(
                        "input `{input}` is a sink; a sink's only output is its dead-letter queue"
                    ))
                    .field("inputs")
                    .suggest(Some(format!(
                        "to read what `{}` could not deliver, use `{}.dead_letter`",
                        target.component, target.component
                    ))),
                ));
            } else if kinds.contains_key(target.component.as_str()) {
                let names: Vec<String> =
                    ports.keys().filter(|p| to_ref(p).component == target.component).cloned().collect();
                diagnostics.push(here(
                    c,
                    Diagnostic::error(format!("input `{input}` names an output that does not exist"))
                        .field("inputs")
                        .suggest(Some(format!("outputs of `{}`: {}", target.component, names.join(", ")))),
                ));
            } else {
                let suggestion =
                    closest(input, ports.keys().map(String::as_str)).map(|s| format!("did you mean `{s}`?"));
                diagnostics.push(here(
                    c,
                    Diagnostic::error(format!("input `{input}` does not match any source or transform"))
                        .field("inputs")
                        .suggest(suggestion),
                ));
            }
        }
        inputs.sort();
        inputs.dedup();
        if inputs.iter().any(|i| i.component == c.id) {
            diagnostics.push(here(c, Diagnostic::error("a component cannot read its own output").field("inputs")));
            inputs.retain(|i| i.component != c.id);
        }
        // Event types on each edge.
        if let Some(config) = &c.config {
            let accepts = input_type(config);
            for input in &inputs {
                if let Some(produces) = ports.get(&input.to_string())
                    && !produces.intersects(accepts)
                {
                    diagnostics.push(here(
                        c,
                        Diagnostic::error(format!(
                            "input `{input}` produces {} but this {} accepts only {}",
                            produces.describe(),
                            c.kind.as_str(),
                            accepts.describe()
                        ))
                        .field("inputs"),
                    ));
                }
            }
        }
        resolved.push(inputs);
    }

    check_cycles(&raw, &resolved, diagnostics);

    // Outputs nobody reads.
    let read: BTreeSet<String> = resolved.iter().flatten().map(ToString::to_string).collect();
    for c in &raw {
        if let Some(config) = &c.config {
            for out in outputs_of(config) {
                let port = OutputRef { component: c.id.clone(), port: out.name.clone() };
                if !read.contains(&port.to_string()) && c.kind != ComponentKind::Sink {
                    let message = match &out.name {
                        None => "nothing reads this component's output; its events are discarded (counted as `unconsumed_output`)".to_owned(),
                        Some(name) => format!(
                            "nothing reads output `{port}`; events sent to `{name}` are discarded (counted as `unconsumed_output`)"
                        ),
                    };
                    diagnostics.push(here(c, Diagnostic::warning(message)));
                }
            }
            let issues = match config {
                AnyConfig::Source(s) => s.check(&globals.options),
                AnyConfig::Transform(t) => t.check(&globals.options),
                AnyConfig::Sink(s) => s.check(&globals.options),
            };
            for issue in issues {
                diagnostics.push(here(
                    c,
                    Diagnostic::error(issue.message).field(issue.path).of_environment(issue.environment),
                ));
            }
        }
        lint(c, &globals, diagnostics);
    }
    check_buffer_dirs(&raw, &globals, diagnostics);
    lint_drop_newest_in_fan_outs(&raw, &resolved, diagnostics);
    lint_remote_sinks(&raw, &resolved, diagnostics);
    lint_batch_longer_than_ack_wait(&raw, &resolved, diagnostics);

    if diagnostics.iter().any(Diagnostic::is_error) {
        return None;
    }
    let components = raw
        .into_iter()
        .zip(resolved)
        .filter_map(|(c, inputs)| {
            let config = c.config?;
            let outputs = outputs_of(&config);
            Some(Component {
                acknowledgements: c.acknowledgements.unwrap_or(globals.acknowledgements),
                id: c.id,
                kind: c.kind,
                type_name: c.type_name,
                file: c.file,
                config,
                inputs,
                outputs,
                buffer: c.buffer,
                fingerprint: c.fingerprint,
                healthcheck: c.healthcheck,
            })
        })
        .collect();
    Some(Graph { globals, components })
}

fn lint(c: &RawComponent, globals: &Globals, diagnostics: &mut Vec<Diagnostic>) {
    let here = |d: Diagnostic| d.in_file(Some(c.file.clone())).component(c.kind, &c.id);
    match c.kind {
        ComponentKind::Source => {
            if let Some(AnyConfig::Source(config)) = &c.config {
                for issue in config.warnings() {
                    diagnostics.push(here(Diagnostic::warning(issue.message).field(&issue.path)));
                }
            }
            if c.acknowledgements == Some(false) && globals.acknowledgements {
                diagnostics.push(here(
                    Diagnostic::warning(
                        "acknowledgements are off for this source: its senders are answered before their events are safe",
                    )
                    .field("acknowledgements"),
                ));
            }
        }
        ComponentKind::Sink => {
            if c.acknowledgements == Some(false) {
                diagnostics.push(here(
                    Diagnostic::warning(
                        "acknowledgements are off for this sink: events count as delivered as soon as they reach its buffer",
                    )
                    .field("acknowledgements"),
                ));
            }
            if let Some(disk) = c.buffer.disk_stage()
                && disk.max_size.is_none_or(|s| s == 0)
            {
                let field = if c.buffer.overflow.is_some() { "buffer[1].max_size" } else { "buffer.max_size" };
                diagnostics.push(here(
                    Diagnostic::error("a disk buffer needs `max_size`, in bytes")
                        .field(field)
                        .suggest(Some("for example `max_size = 268435488` (256 MiB, Vector's minimum)".to_owned())),
                ));
            }
            if c.buffer.buffer_type == BufferType::Memory && (c.buffer.id.is_some()) {
                diagnostics.push(here(
                    Diagnostic::warning("`buffer.id` names a disk buffer's directory; a memory buffer ignores it")
                        .field("buffer.id"),
                ));
            }
            if c.buffer.max_events == 0 {
                diagnostics.push(here(Diagnostic::error("must be at least 1").field("buffer.max_events")));
            }
        }
        ComponentKind::Transform => {}
    }
}

/// `drop_newest` on a branch of a fan-out drops what its siblings get; `block` isolates a
/// stuck branch after `stall_timeout_secs` without losing anything.
fn lint_drop_newest_in_fan_outs(raw: &[RawComponent], inputs: &[Vec<OutputRef>], diagnostics: &mut Vec<Diagnostic>) {
    let mut readers: BTreeMap<&OutputRef, usize> = BTreeMap::new();
    for port in inputs.iter().flatten() {
        *readers.entry(port).or_insert(0) += 1;
    }
    for (c, ports) in raw.iter().zip(inputs) {
        if c.kind != ComponentKind::Sink || c.buffer.when_full != WhenFull::DropNewest {
            continue;
        }
        let shared = ports.iter().any(|p| readers.get(p).is_some_and(|n| *n > 1));
        let warning = if shared {
            Diagnostic::warning(
                "`drop_newest` on a branch of a fan-out drops events its siblings receive whenever this sink falls behind (counted as `buffer_full`)",
            )
            .suggest(Some(
                "keep `block` (the default): a stuck branch is diverted to its dead-letter queue after `buffer.stall_timeout_secs`, replayable".to_owned(),
            ))
        } else {
            Diagnostic::warning("`drop_newest` discards events when this sink falls behind (counted as `buffer_full`)")
        };
        diagnostics.push(warning.in_file(Some(c.file.clone())).component(c.kind, &c.id).field("buffer.when_full"));
    }
}

/// Sinks that deliver over the network: one that keeps its queue only in memory and whose
/// `.dead_letter` output nobody reads is worth a second look; a disk buffer smaller than one
/// batch never lets a batch fill.
fn lint_remote_sinks(raw: &[RawComponent], inputs: &[Vec<OutputRef>], diagnostics: &mut Vec<Diagnostic>) {
    for c in raw.iter().filter(|c| c.kind == ComponentKind::Sink) {
        let Some(AnyConfig::Sink(config)) = &c.config else { continue };
        let Some(batch_bytes) = config.remote_batch_bytes() else { continue };
        let here = |d: Diagnostic| d.in_file(Some(c.file.clone())).component(c.kind, &c.id);
        match c.buffer.disk_stage() {
            None => {
                let dead_letter = OutputRef { component: c.id.clone(), port: Some("dead_letter".to_owned()) };
                if !inputs.iter().flatten().any(|p| *p == dead_letter) {
                    diagnostics.push(here(
                        Diagnostic::warning(format!(
                            "this sink sends to another system and queues only in memory: after a crash, what it held comes back only from sources that re-send unacknowledged events; and nothing reads `{}.dead_letter`, so rejected events wait in `data_dir/dead_letter/` for `sluice dlq replay`",
                            c.id
                        ))
                        .field("buffer.type")
                        .suggest(Some(
                            "use `buffer.type = \"disk\"` (or a disk overflow stage), or read its `.dead_letter` output in a sink".to_owned(),
                        )),
                    ));
                }
            }
            Some(disk) => {
                if let Some(max_size) = disk.max_size.filter(|m| *m > 0 && *m < batch_bytes) {
                    let field = if c.buffer.overflow.is_some() { "buffer[1].max_size" } else { "buffer.max_size" };
                    diagnostics.push(here(
                        Diagnostic::warning(format!(
                            "the disk buffer holds {max_size} bytes, less than one batch ({batch_bytes} bytes of `batch.max_bytes`): batches leave on their timeout, never full"
                        ))
                        .field(field)
                        .suggest(Some(format!("make `max_size` at least {batch_bytes}, or lower `batch.max_bytes`"))),
                    ));
                }
            }
        }
    }
}

/// A sink that holds a batch longer than an upstream source waits for its acknowledgement,
/// with only memory between them: the sender times out (503) and sends again while the events
/// still wait in the batch, so every batch is received twice or more.
fn lint_batch_longer_than_ack_wait(raw: &[RawComponent], inputs: &[Vec<OutputRef>], diagnostics: &mut Vec<Diagnostic>) {
    let index: BTreeMap<&str, usize> = raw.iter().enumerate().map(|(i, c)| (c.id.as_str(), i)).collect();
    for (c, ports) in raw.iter().zip(inputs).filter(|(c, _)| c.kind == ComponentKind::Sink) {
        let Some(AnyConfig::Sink(config)) = &c.config else { continue };
        let Some(batch_secs) = config.batch_timeout_secs() else { continue };
        if c.buffer.disk_stage().is_some() {
            continue;
        }
        // Every source upstream of this sink, through transforms.
        let mut stack: Vec<usize> = ports.iter().filter_map(|p| index.get(p.component.as_str()).copied()).collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut shortest: Option<(f64, &str)> = None;
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            let upstream = &raw[i];
            match (&upstream.config, upstream.kind) {
                (Some(AnyConfig::Source(source)), _) if upstream.acknowledgements != Some(false) => {
                    if let Some(ack) = source.ack_timeout_secs()
                        && shortest.is_none_or(|(s, _)| ack < s)
                    {
                        shortest = Some((ack, upstream.id.as_str()));
                    }
                }
                (_, ComponentKind::Transform) => {
                    stack.extend(inputs[i].iter().filter_map(|p| index.get(p.component.as_str()).copied()));
                }
                _ => {}
            }
        }
        if let Some((ack, source)) = shortest.filter(|(ack, _)| batch_secs > *ack) {
            diagnostics.push(
                Diagnostic::warning(format!(
                    "a batch may wait {batch_secs} s here, longer than source `{source}` waits for its acknowledgement ({ack} s), with only memory in between: senders get 503 and send again while their events are still batching"
                ))
                .suggest(Some(format!(
                    "add a disk buffer (`buffer.type = \"disk\"`: events are acknowledged once fsynced), or lower `batch.timeout_secs` below {ack}"
                )))
                .in_file(Some(c.file.clone()))
                .component(c.kind, &c.id)
                .field("batch.timeout_secs"),
            );
        }
    }
}

/// Disk buffers: two sinks may not share a directory, and a directory under
/// `data_dir/buffer/` that no sink owns (a renamed sink) is reported, since its events would
/// never be delivered.
fn check_buffer_dirs(raw: &[RawComponent], globals: &Globals, diagnostics: &mut Vec<Diagnostic>) {
    let mut owners: BTreeMap<&str, &RawComponent> = BTreeMap::new();
    for c in raw.iter().filter(|c| c.kind == ComponentKind::Sink) {
        let Some(disk) = c.buffer.disk_stage() else { continue };
        let id = disk.id.as_deref().unwrap_or(&c.id);
        if let Some(first) = owners.insert(id, c) {
            diagnostics.push(
                Diagnostic::error(format!("the disk buffer `{id}` is also the buffer of sink `{}`", first.id))
                    .in_file(Some(c.file.clone()))
                    .component(c.kind, &c.id)
                    .field("buffer.id")
                    .suggest(Some("give each sink its own `buffer.id`".to_owned())),
            );
        }
    }
    let root = globals.options.data_dir.join("buffer");
    let Ok(entries) = std::fs::read_dir(&root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if owners.contains_key(name.as_str()) || !entry.path().is_dir() {
            continue;
        }
        let bytes: u64 = std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|f| f.file_name().to_string_lossy().ends_with(".wal"))
            .filter_map(|f| f.metadata().ok().map(|m| m.len()))
            .sum();
        if bytes > 0 {
            diagnostics.push(
                Diagnostic::warning(format!(
                    "{} holds {bytes} bytes of buffered events that no sink owns (a renamed or removed sink?)",
                    entry.path().display()
                ))
                .suggest(Some(format!(
                    "set `buffer.id = \"{name}\"` on the disk-buffered sink that should deliver them"
                ))),
            );
        }
    }
}

fn check_cycles(raw: &[RawComponent], inputs: &[Vec<OutputRef>], diagnostics: &mut Vec<Diagnostic>) {
    let index: BTreeMap<&str, usize> = raw.iter().enumerate().map(|(i, c)| (c.id.as_str(), i)).collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; raw.len()];
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
    fn visit(
        node: usize,
        inputs: &[Vec<OutputRef>],
        index: &BTreeMap<&str, usize>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
        cycles: &mut Vec<Vec<usize>>,
    ) {
        state[node] = 1;
        stack.push(node);
        for input in &inputs[node] {
            let Some(&next) = index.get(input.component.as_str()) else {
                continue;
            };
            match state[next] {
                0 => visit(next, inputs, index, state, stack, cycles),
                1 => {
                    let from = stack.iter().position(|&n| n == next).unwrap_or(0);
                    cycles.push(stack[from..].to_vec());
                }
                _ => {}
            }
        }
        stack.pop();
        state[node] = 2;
    }
    let mut cycles = Vec::new();
    for node in 0..raw.len() {
        if state[node] == 0 {
            visit(node, inputs, &index, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    for cycle in cycles {
        let mut names: Vec<String> = cycle.iter().map(|&n| raw[n].id.clone()).collect();
        let mut key = names.clone();
        key.sort();
        if !reported.insert(key) {
            continue;
        }
        names.reverse();
        let first = &raw[cycle[0]];
        names.push(names[0].clone());
        diagnostics.push(
            Diagnostic::error(format!("cycle in the graph: {}", names.join(" -> ")))
                .in_file(Some(first.file.clone()))
                .component(first.kind, &first.id)
                .field("inputs"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("app_*", "app_1"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*b*c", "a12b34c"));
        assert!(!glob_match("app_*", "web"));
        assert!(!glob_match("a*b", "ab_"));
        assert!(glob_match("keep", "keep"));
        assert!(!glob_match("keep", "keeper"));
    }
}
