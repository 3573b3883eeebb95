//! Config unit tests (`[[tests]]`, `tests:`), run as Vector runs them.
//!
//! A test puts events at transforms (`inputs`, each `insert_at` a transform), runs them
//! through the real transforms of the config (built fresh for every test, sources and sinks
//! left out), and checks what comes out of the outputs it names (`outputs`: every condition
//! of a check must hold for at least one event that left one of its `extract_from` outputs)
//! and that named outputs stay empty (`no_outputs_from`).
//!
//! Contracts:
//! - A test that cannot be built (unknown transform or output, bad condition, no path from an
//!   input to what it checks) is a build error, reported with its name; no test runs then, as
//!   in Vector.
//! - Failures say which check and condition failed, and print every event the checked
//!   outputs received, as JSON.
//! - Transforms run synchronously, chunk by chunk, in the order events reach them; a config
//!   whose transforms feed each other in a loop is refused before any test runs.

mod conditions;
mod definition;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use sluice_core::component::{FunctionTransform, TransformContext, TransformOutputs};
use sluice_core::{Chunk, LogEvent};

use crate::config::{TestConfig, glob_match};
use conditions::Condition;
pub use definition::Definition;

/// A compiled VRL condition.
pub trait Check {
    /// `Ok(true)` passes; `Err` says why the program failed.
    fn check(&mut self, event: &mut LogEvent) -> Result<bool, String>;
}

/// The VRL the tests need. Components own VRL's function set, so the caller provides it.
pub trait Vrl {
    fn condition(&self, source: &str) -> Result<Box<dyn Check>, String>;
    /// The event a `type = "vrl"` input makes: the program run on an empty event.
    fn event(&self, source: &str) -> Result<LogEvent, String>;
}

/// One test's outcome.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    /// Empty when the test passed.
    pub errors: Vec<String>,
}

/// A test ready to run.
struct Test {
    name: String,
    inputs: Vec<(usize, LogEvent)>,
    checks: Vec<OutputCheck>,
    silent: Vec<String>,
}

/// One `outputs` entry: the outputs it reads and its conditions.
struct OutputCheck {
    extract_from: Vec<String>,
    conditions: Vec<Condition>,
}

/// Builds every test of `config`; `Err` holds one message per test that cannot be built.
pub fn run_all(config: &TestConfig, vrl: &dyn Vrl) -> Result<Vec<Outcome>, Vec<String>> {
    let graph = Wiring::new(config)?;
    let mut tests = Vec::new();
    let mut errors = Vec::new();
    for (file, value) in &config.tests {
        for definition in definition::parse(value).map_err(|e| vec![format!("{}: {e}", file.display())])? {
            match build(&definition, &graph, vrl) {
                Ok(test) => tests.push(test),
                Err(e) => errors.push(format!("Failed to build test '{}':\n  {}", definition.name, e.join("\n  "))),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    tests.into_iter().map(|t| run(t, config, &graph)).collect()
}

/// Who reads what: every transform's outputs and, for each output, the transforms that read it.
struct Wiring {
    ids: Vec<String>,
    /// `id` or `id.port`, with the transform and the output's index (0 = default).
    outputs: BTreeMap<String, (usize, usize)>,
    consumers: BTreeMap<String, Vec<usize>>,
}

impl Wiring {
    fn new(config: &TestConfig) -> Result<Self, Vec<String>> {
        let ids: Vec<String> = config.transforms.iter().map(|t| t.id.clone()).collect();
        let mut outputs = BTreeMap::new();
        for (i, t) in config.transforms.iter().enumerate() {
            let mut named = 0;
            for spec in &t.outputs {
                match &spec.name {
                    None => outputs.insert(t.id.clone(), (i, 0)),
                    Some(name) => {
                        named += 1;
                        outputs.insert(format!("{}.{name}", t.id), (i, named))
                    }
                };
            }
        }
        let mut consumers: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, t) in config.transforms.iter().enumerate() {
            for input in &t.inputs {
                // `id` reads the default output; a port is named (`id.port`, or a glob with a dot).
                let matching =
                    outputs.keys().filter(|o| (input.contains('.') || !o.contains('.')) && glob_match(input, o));
                for output in matching {
                    consumers.entry(output.clone()).or_default().push(i);
                }
            }
        }
        let wiring = Self { ids, outputs, consumers };
        wiring.check_cycles()?;
        Ok(wiring)
    }

    fn downstream(&self, transform: usize) -> impl Iterator<Item = usize> + '_ {
        self.outputs
            .iter()
            .filter(move |(_, (t, _))| *t == transform)
            .flat_map(|(name, _)| self.consumers.get(name).into_iter().flatten().copied())
    }

    fn check_cycles(&self) -> Result<(), Vec<String>> {
        // 0 unseen, 1 on the path, 2 done.
        fn visit(w: &Wiring, t: usize, state: &mut [u8]) -> Result<(), String> {
            state[t] = 1;
            for next in w.downstream(t) {
                match state[next] {
                    1 => {
                        return Err(format!(
                            "transforms `{}` and `{}` feed each other in a loop",
                            w.ids[t], w.ids[next]
                        ));
                    }
                    0 => visit(w, next, state)?,
                    _ => {}
                }
            }
            state[t] = 2;
            Ok(())
        }
        let mut state = vec![0u8; self.ids.len()];
        for t in 0..self.ids.len() {
            if state[t] == 0 {
                visit(self, t, &mut state).map_err(|e| vec![e])?;
            }
        }
        Ok(())
    }

    /// Every transform reachable from `start`, itself included.
    fn reachable(&self, start: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::from([start]);
        let mut queue = vec![start];
        while let Some(t) = queue.pop() {
            for next in self.downstream(t) {
                if seen.insert(next) {
                    queue.push(next);
                }
            }
        }
        seen
    }
}

fn build(definition: &Definition, graph: &Wiring, vrl: &dyn Vrl) -> Result<Test, Vec<String>> {
    let mut errors = Vec::new();
    if definition.outputs.is_empty() && definition.no_outputs_from.is_empty() {
        errors.push("unit test must contain at least one of `outputs` or `no_outputs_from`.".to_owned());
    }
    let all_inputs: Vec<_> = definition.input.iter().chain(&definition.inputs).collect();
    if all_inputs.is_empty() {
        errors.push("must specify at least one input.".to_owned());
    }
    let mut inputs = Vec::new();
    for (index, input) in all_inputs.iter().enumerate() {
        let Some(at) = graph.ids.iter().position(|id| *id == input.insert_at) else {
            errors.push(format!("inputs[{index}]: unable to locate target transform '{}'", input.insert_at));
            continue;
        };
        match input.event(vrl) {
            Ok(event) => inputs.push((at, event)),
            Err(e) => errors.push(format!("inputs[{index}]: {e}")),
        }
    }
    let known = |output: &str, errors: &mut Vec<String>| {
        if !graph.outputs.contains_key(output) {
            errors.push(format!("unable to locate output '{output}': no transform has it"));
        }
    };
    let mut checks = Vec::new();
    for (index, output) in definition.outputs.iter().enumerate() {
        let extract_from = output.extract_from.to_vec();
        for id in &extract_from {
            known(id, &mut errors);
        }
        let mut conditions = Vec::new();
        for (c, json) in output.conditions.iter().flatten().enumerate() {
            match Condition::build(json, vrl) {
                Ok(condition) => conditions.push(condition),
                Err(e) => errors.push(format!("outputs[{index}]: failed to create test condition '{c}': {e}")),
            }
        }
        checks.push(OutputCheck { extract_from, conditions });
    }
    for id in &definition.no_outputs_from {
        known(id, &mut errors);
    }
    // Every input must reach something the test looks at.
    let targets: BTreeSet<usize> = checks
        .iter()
        .flat_map(|c| c.extract_from.iter())
        .chain(&definition.no_outputs_from)
        .filter_map(|o| graph.outputs.get(o).map(|(t, _)| *t))
        .collect();
    if errors.is_empty() {
        for (at, _) in &inputs {
            if graph.reachable(*at).is_disjoint(&targets) {
                errors.push(format!(
                    "Unable to complete topology between input target '{}' and output target(s)",
                    graph.ids[*at]
                ));
            }
        }
        errors.dedup();
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Test { name: definition.name.clone(), inputs, checks, silent: definition.no_outputs_from.clone() })
}

/// The most chunks one test may pass between transforms: a guard, as the wiring has no loops.
const MAX_STEPS: usize = 100_000;

fn run(mut test: Test, config: &TestConfig, graph: &Wiring) -> Result<Outcome, Vec<String>> {
    let mut transforms: BTreeMap<usize, Box<dyn FunctionTransform>> = BTreeMap::new();
    let mut seen: BTreeMap<String, Vec<LogEvent>> = BTreeMap::new();
    let watched: BTreeSet<&str> =
        test.checks.iter().flat_map(|c| c.extract_from.iter()).chain(&test.silent).map(String::as_str).collect();
    // Inputs go in together per transform, in the order written.
    let mut queue: VecDeque<(usize, Chunk)> = VecDeque::new();
    for (at, event) in std::mem::take(&mut test.inputs) {
        match queue.iter_mut().find(|(t, _)| *t == at) {
            Some((_, chunk)) => chunk.push(event),
            None => queue.push_back((at, vec![event])),
        }
    }
    let mut steps = 0;
    while let Some((t, chunk)) = queue.pop_front() {
        steps += 1;
        if steps > MAX_STEPS {
            return Err(vec![format!("test '{}' passed more than {MAX_STEPS} chunks between transforms", test.name)]);
        }
        let spec = &config.transforms[t];
        let transform = match transforms.entry(t) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let cx = TransformContext { id: Arc::from(spec.id.as_str()), globals: config.globals.options.clone() };
                let built = spec.config.build(&cx).map_err(|e| vec![format!("transform '{}': {e}", spec.id)])?;
                e.insert(built)
            }
        };
        let named = spec.outputs.iter().filter(|o| o.name.is_some()).count();
        let mut out = TransformOutputs::with_named(named);
        transform.transform(chunk, &mut out);
        let mut default = Some(std::mem::take(&mut out.default));
        let mut named_ports = std::mem::take(&mut out.named).into_iter();
        let ports: Vec<(String, Chunk)> = spec
            .outputs
            .iter()
            .map(|o| match &o.name {
                None => (spec.id.clone(), default.take().unwrap_or_default()),
                Some(name) => (format!("{}.{name}", spec.id), named_ports.next().unwrap_or_default()),
            })
            .collect();
        for (name, events) in ports {
            if events.is_empty() {
                continue;
            }
            if watched.contains(name.as_str()) {
                seen.entry(name.clone()).or_default().extend(events.iter().cloned());
            }
            for consumer in graph.consumers.get(&name).into_iter().flatten() {
                queue.push_back((*consumer, events.clone()));
            }
        }
    }
    let mut errors = Vec::new();
    for (i, check) in test.checks.iter_mut().enumerate() {
        let events: Vec<&LogEvent> =
            check.extract_from.iter().flat_map(|o| seen.get(o).into_iter().flatten()).collect();
        if events.is_empty() {
            errors.push(format!(
                "checks for transforms {:?} failed: no events received. Topology may be disconnected or transform is missing inputs.",
                check.extract_from
            ));
            continue;
        }
        let mut failed = Vec::new();
        for (j, condition) in check.conditions.iter_mut().enumerate() {
            let mut reasons = Vec::new();
            for event in &events {
                match condition.check(event) {
                    Ok(()) => {
                        reasons.clear();
                        break;
                    }
                    Err(reason) => reasons.push(format!("  condition[{j}]: {reason}")),
                }
            }
            failed.extend(reasons);
        }
        if !failed.is_empty() {
            errors.push(format!("check[{i}] for transforms {:?} failed conditions:", check.extract_from));
            errors.extend(failed);
            let printed: Vec<String> = events.iter().map(|e| to_json(e)).collect();
            errors.push(format!(
                "output payloads from {:?} (events encoded as JSON):\n  {}",
                check.extract_from,
                printed.join("\n  ")
            ));
        }
    }
    for id in &test.silent {
        if seen.get(id).is_some_and(|e| !e.is_empty()) {
            errors.push(format!("check for transforms [{id:?}] failed: expected no outputs"));
        }
    }
    Ok(Outcome { name: test.name, errors })
}

fn to_json(event: &LogEvent) -> String {
    let mut buf = Vec::new();
    sluice_core::json::write_value(&mut buf, event.value());
    String::from_utf8_lossy(&buf).into_owned()
}
